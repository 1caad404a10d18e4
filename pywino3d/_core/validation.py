"""Argument checking shared by every public function.

Each helper raises an exception whose message starts with the argument's
name and says what was expected, so that bad input never reaches a kernel.
This module imports nothing else of the package (no import circle).
"""
from __future__ import annotations

import functools
import numbers
import operator

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def as_float_array(name, a, ndim=None, dtype=None, *, backend, coerce=False):
    """Convert ``a`` as NumPy (or CuPy) does and check it is float32/float64.

    Parameters
    ----------
    name : str
        Argument name used in error messages.
    a : array_like
    ndim : int, optional
        Required number of dimensions.
    dtype : dtype, optional
        Required dtype (for arguments that must match ``x``).
    backend : backend object
        Where the array must live (``pywino3d._backends.dispatch.Backend``); arrays of
        the other device raise TypeError unless ``coerce``.
    """
    if type(a) is np.ndarray and getattr(backend, "takes_ndarray", False):  # nothing to convert
        arr = a
    else:
        if isinstance(a, (str, bytes)) or a is None:
            raise TypeError(f"{name}: expected a numeric array, got {type(a).__name__}")
        a = backend.asarray(name, a, coerce)
        try:
            arr = backend.xp.asarray(a)
        except Exception as exc:  # ragged lists and the like
            raise TypeError(f"{name}: expected a numeric array, could not convert: {exc}") from None
    if arr.dtype not in FLOAT_DTYPES:
        kind = "not a numeric array" if arr.dtype.kind not in "biufc" else f"dtype {arr.dtype}"
        raise TypeError(
            f"{name}: expected a float32 or float64 array, got {kind}"
            + (" (convert with .astype(np.float32))" if arr.dtype.kind in "biu" else "")
        )
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {arr.shape}")
    if dtype is not None and arr.dtype != dtype:
        raise TypeError(
            f"{name}: dtype {arr.dtype} does not match x's dtype {np.dtype(dtype)}; "
            "mixed dtypes are not supported"
        )
    return arr


def as_int(name, v, lo=None, hi=None):
    """Check that ``v`` is an integer (not a bool) within [lo, hi]."""
    if type(v) is not int and (isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral)):
        raise TypeError(f"{name}: expected an int, got {type(v).__name__} {v!r}")
    v = operator.index(v)
    if lo is not None and v < lo:
        raise ValueError(f"{name}: expected an int >= {lo}, got {v}")
    if hi is not None and v > hi:
        raise ValueError(f"{name}: expected an int <= {hi}, got {v}")
    return v


def as_triple(name, v, lo=None, hi=None):
    """An int or a sequence of three ints -> tuple of three ints."""
    if type(v) is int and (lo is None or v >= lo) and (hi is None or v <= hi):
        return (v, v, v)
    if isinstance(v, (tuple, list, np.ndarray)):
        if len(v) != 3:
            raise ValueError(f"{name}: expected an int or 3 ints (d, h, w), got {v!r}")
        return tuple(as_int(f"{name}[{i}]", e, lo, hi) for i, e in enumerate(v))
    return (as_int(name, v, lo, hi),) * 3


@functools.lru_cache(maxsize=64)
def _all_columns(npos):
    """0 .. npos - 1 as a read-only int32 array, shared between calls."""
    arr = np.arange(npos, dtype=np.int32)
    arr.setflags(write=False)
    return arr


def as_columns(columns, npos):
    """Validate ``columns`` -> sorted int32 array of kept positions (or None).

    Parameters
    ----------
    columns : None or 1-D array_like of int
        Kept Winograd positions, each in ``[0, npos)``, without duplicates.
    npos : int
        Number of positions ``alpha_d * alpha_h * alpha_w``.
    """
    if columns is None:
        return _all_columns(npos)
    if hasattr(columns, "__cuda_array_interface__") and not isinstance(columns, np.ndarray):
        columns = columns.get()
    arr = np.asarray(columns)
    if arr.ndim != 1:
        raise ValueError(f"columns: expected a 1-D array of positions, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        if arr.dtype.kind == "b":
            raise TypeError("columns: expected integer positions, got a boolean array "
                            "(use np.flatnonzero(mask) to convert a mask)")
        raise TypeError(f"columns: expected integer positions, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= npos):
        raise ValueError(
            f"columns: positions must be in [0, {npos}), got min {arr.min()} max {arr.max()}"
        )
    uniq = np.unique(arr)
    if uniq.size != arr.size:
        raise ValueError("columns: positions must not repeat")
    return uniq.astype(np.int32)
