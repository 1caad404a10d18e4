"""Environment variables read on every call.

The settings that may change while a program runs (``PYWINO3D_BACKEND``,
``PYWINO3D_WORKSPACE_MB``, ``PYWINO3D_OUTPUT_POOL_MB``, ``PYWINO3D_AUTOTUNE``)
are read at each call, not at import.  ``os.environ.get`` costs about 2 us
for a missing key (a KeyError raised and caught), a tenth of a small call's
Python, so :func:`getenv` reads CPython's mapping's dict directly, with
``os.environ.get`` as the fallback.  This module imports nothing of the
package.
"""
from __future__ import annotations

import os


def getenv(key, default=None):
    """``os.environ.get(key, default)``, without its exception for a missing key."""
    env = os.environ
    data = getattr(env, "_data", None)
    encode, decode = getattr(env, "encodekey", None), getattr(env, "decodevalue", None)
    if type(data) is not dict or encode is None or decode is None:
        return env.get(key, default)
    value = data.get(encode(key))
    return default if value is None else decode(value)
