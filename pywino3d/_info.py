"""``show_versions()`` and ``python -m pywino3d info``."""
from __future__ import annotations

import platform
import sys


def info_dict():
    """Versions, OpenMP status, threads and available backends."""
    import numpy as np

    from pywino3d._core.version import __version__
    from pywino3d._backends.cpu._ext import _cpu

    d = {
        "pywino3d": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": np.__version__,
        "openmp": "on" if _cpu.has_openmp() else "off (serial build)",
        "threads (default workers)": _cpu.max_threads(),
        "cores (workers=-1)": _cpu.num_procs(),
    }
    for mod in ("scipy", "hypothesis", "torch", "cupy"):
        try:
            m = __import__(mod)
            d[mod] = getattr(m, "__version__", "?")
        except Exception:
            d[mod] = "not installed"
    from pywino3d._backends.dispatch import available_backends, cuda_status, get_backend

    d["backends available"] = ", ".join(available_backends())
    d["cuda"] = cuda_status()[1]
    d["backend in force"] = get_backend()
    return d


def show_versions(file=None):
    """Print versions, OpenMP on/off, threads and the available backends.

    Examples
    --------
    >>> import pywino3d
    >>> pywino3d.show_versions()  # doctest: +ELLIPSIS
    pywino3d ...
    """
    file = file or sys.stdout
    for k, v in info_dict().items():
        print(f"{k:<26} {v}", file=file)
