"""Column importance, column selection and gradual pruning schedules.

A *column* is one Winograd tile position p: the slice U[p] of all channel
pairs.  Pruning a column removes position p from the input transform, the
product and the output transform (``columns=`` of the kernels), so the work
shrinks with the density -- unlike unstructured zeros inside U.
"""
from __future__ import annotations

import math

import numpy as np

from .lowrank import LowRankWinograd

__all__ = ["column_importance", "select_columns", "select_columns_global", "cubic_density",
           "magnitude_mask"]

METHODS = ("l1", "l2", "taylor")


def _to_host(a):
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


def column_importance(U, method="l2", *, grad=None):
    """One importance score per Winograd position.

    Parameters
    ----------
    U : array (positions, C_out, C_in) or LowRankWinograd
    method : {"l1", "l2", "taylor"}
        ``"l1"``/``"l2"``: norm of the composed column U[p];
        ``"taylor"``: ``|sum(U[p] * grad[p])|``, the first-order change of the
        loss when the column is removed (needs ``grad``, dL/dU).  For
        low-rank weights ``"l2"`` is computed from the factors.

    Returns
    -------
    scores : ndarray, shape (positions,), on the host

    Examples
    --------
    >>> import numpy as np, pywino3d
    >>> U = np.zeros((8, 2, 2)); U[3] = 1.0
    >>> float(pywino3d.column_importance(U, "l1")[3])
    4.0
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    if method == "taylor" and grad is None:
        raise ValueError("grad: the 'taylor' score needs grad (dL/dU, same shape as U)")
    if isinstance(U, LowRankWinograd):
        if method in ("l1", "l2"):
            return _to_host(U.column_norms(1 if method == "l1" else 2)).astype(np.float64)
        U = U.weights()
    if U.ndim != 3:
        raise ValueError(f"U: expected shape (positions, C_out, C_in), got {U.shape}")
    flat = U.reshape(U.shape[0], -1)
    if method == "l1":
        s = abs(flat).sum(axis=1)
    elif method == "l2":
        s = (flat.astype(flat.dtype) ** 2).sum(axis=1) ** 0.5
    else:
        if tuple(grad.shape) != tuple(U.shape):
            raise ValueError(f"grad: expected shape {tuple(U.shape)}, got {tuple(grad.shape)}")
        s = abs((flat * grad.reshape(U.shape[0], -1)).sum(axis=1))
    return _to_host(s).astype(np.float64)


def _check_density(density):
    if not isinstance(density, (int, float, np.floating, np.integer)) or isinstance(density, bool) \
            or not 0 < density <= 1:
        raise ValueError(f"density: expected a number in (0, 1], got {density!r}")
    return float(density)


def select_columns(scores, density):
    """Sorted indices of the ``ceil(density * positions)`` highest scores.

    Ties keep the lower position.  At least one column is always kept.

    Examples
    --------
    >>> import numpy as np, pywino3d
    >>> pywino3d.select_columns(np.array([0.1, 5.0, 3.0, 0.2]), 0.5)
    array([1, 2])
    """
    density = _check_density(density)
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"scores: expected a non-empty 1-D array, got shape {s.shape}")
    k = max(1, math.ceil(density * s.size - 1e-9))
    order = np.argsort(-s, kind="stable")
    return np.sort(order[:k]).astype(np.int64)


def select_columns_global(scores_list, density):
    """One threshold across layers: keep the globally best columns.

    Each layer's scores are divided by their mean first (scores of different
    layers live on different scales); every layer keeps at least one column.
    The overall kept fraction is ``density`` (rounded per layer).

    Returns
    -------
    list of sorted index arrays, one per layer

    Examples
    --------
    >>> import numpy as np, pywino3d
    >>> a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([400.0, 300.0, 200.0, 100.0])
    >>> [k.tolist() for k in pywino3d.select_columns_global([a, b], 0.5)]
    [[2, 3], [0, 1]]
    """
    density = _check_density(density)
    normed = []
    for i, s in enumerate(scores_list):
        s = np.asarray(s, dtype=np.float64)
        if s.ndim != 1 or s.size == 0:
            raise ValueError(f"scores_list[{i}]: expected a non-empty 1-D array")
        mean = s.mean()
        normed.append(s / mean if mean > 0 else np.zeros_like(s))
    allv = np.concatenate(normed)
    total = max(len(normed), math.ceil(density * allv.size - 1e-9))
    thresh = np.sort(allv)[::-1][total - 1]
    out = []
    for s in normed:
        keep = np.flatnonzero(s >= thresh)
        if keep.size == 0:
            keep = np.array([int(np.argmax(s))])
        out.append(keep.astype(np.int64))
    return out


def cubic_density(step, *, final_density, begin_step, end_step, initial_density=1.0, frequency=1):
    """Gradual pruning schedule of Zhu & Gupta (2017).

    ``d_t = d_f + (d_i - d_f) (1 - (t - t0) / (t1 - t0))^3`` for
    ``t0 <= t <= t1``, updated every ``frequency`` steps; ``d_i`` before,
    ``d_f`` after.

    Examples
    --------
    >>> from pywino3d import cubic_density
    >>> [round(cubic_density(t, final_density=0.25, begin_step=0, end_step=10), 3) for t in (0, 5, 10)]
    [1.0, 0.344, 0.25]
    """
    _check_density(final_density)
    _check_density(initial_density)
    if end_step <= begin_step:
        raise ValueError("end_step: must be greater than begin_step")
    if step <= begin_step:
        return float(initial_density)
    if step >= end_step:
        return float(final_density)
    step = begin_step + ((step - begin_step) // frequency) * frequency
    frac = (step - begin_step) / (end_step - begin_step)
    return float(final_density + (initial_density - final_density) * (1 - frac) ** 3)


def magnitude_mask(U, density):
    """Unstructured magnitude pruning of the full U: a boolean mask keeping
    the ``density`` fraction of entries with the largest ``abs(U)`` (Liu et al. 2018,
    "vanilla" granularity).  Zeros inside U do not shrink the dense kernels'
    work, which is the point of comparing it with column pruning.

    Examples
    --------
    >>> import numpy as np, pywino3d
    >>> pywino3d.magnitude_mask(np.array([[[0.1, -3.0], [2.0, 0.5]]]), 0.5).astype(int)
    array([[[0, 1],
            [1, 0]]])
    """
    density = _check_density(density)
    a = np.abs(_to_host(U)).ravel()
    k = max(1, math.ceil(density * a.size - 1e-9))
    thresh = np.partition(a, a.size - k)[a.size - k]
    return (np.abs(_to_host(U)) >= thresh)
