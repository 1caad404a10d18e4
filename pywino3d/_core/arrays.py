"""Array-type helpers every layer may use: which array library holds an
array, told without importing CuPy for NumPy inputs."""
from __future__ import annotations

import numpy as np


def is_cupy_array(a):
    """True for CuPy arrays, checked without importing CuPy."""
    if type(a) is np.ndarray:  # the common case, without the module lookup
        return False
    mod = type(a).__module__ or ""
    return mod.split(".", 1)[0] == "cupy"


def array_module(a):
    """The array module of ``a``: ``cupy`` for CuPy arrays, else ``numpy``."""
    if is_cupy_array(a):
        import cupy

        return cupy
    return np
