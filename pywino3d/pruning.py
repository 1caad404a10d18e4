"""Column importance, column selection and gradual pruning schedules.

A *column* is one Winograd tile position p: the slice U[p] of all channel
pairs.  Pruning a column removes position p from the input transform, the
product and the output transform (``columns=`` of the kernels), so the work
shrinks with the density -- unlike unstructured zeros inside U.

Transform-aware pruning (``method="output"``, ``"obs"``, :func:`prune_columns`,
:func:`refit_columns`, :func:`operator_error`) measures a position by what it
contributes to the output.  Per tile and channel pair (k, c) the layer applies
the operator ``M = A^T diag(U[:, k, c]) B^T = sum_p U[p, k, c] a_p b_p^T``
(``a_p``: column p of ``A^T``, ``b_p``: row p of ``B^T``, both Kronecker
products of the per-axis matrices).  ``||M||_F`` summed over the channel pairs
is the expected output error for white-noise input; its Gram matrix
``Kg[p, q] = (a_p . a_q)(b_p . b_q)`` is the Kronecker product of three small
per-axis Gram matrices.  ``docs/lowrank.md`` has the derivation.
"""
from __future__ import annotations

import math

import numpy as np

from functools import lru_cache

from pywino3d._core.arrays import array_module
from pywino3d._core.geometry import alphas, n_positions, parse_kernel_size, parse_tile
from pywino3d._core.transforms import kron3, winograd_matrices
from pywino3d._core import calibration as _calibration
from pywino3d.lowrank import LowRankWinograd

__all__ = ["column_importance", "select_columns", "select_columns_global", "cubic_density",
           "magnitude_mask", "prune_columns", "refit_columns", "operator_error"]

METHODS = ("l1", "l2", "taylor", "output")
#: Column choices of :func:`prune_columns`.
PRUNE_METHODS = ("l1", "l2", "output", "obs")


def _to_host(a):
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


def column_importance(U, method="l2", *, grad=None, kernel_size=None, tile=None, inputs=None, padding=0):
    """One importance score per Winograd position.

    Parameters
    ----------
    U : array (positions, C_out, C_in) or LowRankWinograd
    method : {"l1", "l2", "taylor", "output"}
        ``"l1"``/``"l2"``: norm of the composed column U[p];
        ``"taylor"``: ``|sum(U[p] * grad[p])|``, the first-order change of the
        loss when the column is removed (needs ``grad``, dL/dU);
        ``"output"``: ``||U[p]||_F ||a_p|| ||b_p||``, the Frobenius norm of
        what position p contributes to the per-tile operators
        ``A^T diag(U) B^T`` of all channel pairs -- the expected output error
        of removing p alone for white-noise input (needs ``kernel_size`` and
        ``tile``; a LowRankWinograd brings its own).  For low-rank weights
        ``"l2"`` (and the norm inside ``"output"``) is computed from the factors.
    grad : array, optional
        dL/dU for ``"taylor"``.
    kernel_size, tile : int or tuple of 3 ints, optional
        The transform of ``U``, for ``"output"``.
    inputs : array (N, C_in, D, H, W), optional
        Calibration inputs of the layer, for ``"output"``: the score is then
        the output error of removing p alone measured on these inputs (root
        mean square per tile, summed over output channels) instead of for
        white noise; see :mod:`pywino3d._core.calibration` and ``docs/lowrank.md``.
    padding : int, tuple or str
        The layer's padding, with ``inputs``.

    Returns
    -------
    scores : ndarray, shape (positions,), on the host

    Examples
    --------
    >>> import numpy as np, pywino3d
    >>> U = np.zeros((8, 2, 2)); U[3] = 1.0
    >>> float(pywino3d.column_importance(U, "l1")[3])
    4.0
    >>> U = pywino3d.filter_transform(np.ones((1, 1, 3, 3, 3)), 4)
    >>> out = pywino3d.column_importance(U, "output", kernel_size=3, tile=4)
    >>> mag = pywino3d.column_importance(U, "l2")
    >>> int(np.argmax(mag)), int(np.argmax(out))  # the largest U[p] is not what matters most
    (43, 129)
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    if method == "taylor" and grad is None:
        raise ValueError("grad: the 'taylor' score needs grad (dL/dU, same shape as U)")
    if method == "output":
        U, ks, tl = _weights_and_transform(U, kernel_size, tile)
        if inputs is not None:
            return _calibration.scores(_dense(U), _moments(inputs, ks, tl, padding))
        norms = column_importance(U, "l2")
        return norms * np.sqrt(np.diag(tile_operator_gram(ks, tl)))
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


#: Column selections of :func:`select_columns` and :func:`prune_columns`.
STRUCTURES = ("free", "lines")


def _check_structure(structure):
    if structure not in STRUCTURES:
        raise ValueError(f"structure: expected one of {STRUCTURES}, got {structure!r}")
    return structure


def _alpha_shape(size, shape):
    """The (alpha_d, alpha_h, alpha_w) of ``size`` positions: ``shape``, or a cube."""
    if shape is None:
        a = round(size ** (1 / 3))
        if a ** 3 != size:
            raise ValueError(f"shape: {size} positions are not a cube; pass shape=(alpha_d, alpha_h, alpha_w)")
        return (a, a, a)
    shp = tuple(int(v) for v in shape)
    if len(shp) != 3 or min(shp) < 1 or math.prod(shp) != size:
        raise ValueError(f"shape: expected 3 positive sizes whose product is {size}, got {shape!r}")
    return shp


def _top(values, k):
    """Indices of the k largest values, ties to the lower index."""
    return np.argsort(-values, kind="stable")[:k]


def _lines_choice(s, k, shape):
    """k positions in as few transform lines as k allows (see select_columns)."""
    ad, ah, aw = shape
    S = s.reshape(shape)
    n_w = -(-k // (ad * ah))  # the fewest w' that hold k positions
    W = np.sort(_top(S.sum(axis=(0, 1)), n_w))
    n_hw = -(-k // ad)  # the fewest (h', w') lines that hold k positions
    line_scores = S[:, :, W].sum(axis=0).ravel()  # (h, j) over the chosen w'
    hj = _top(line_scores, n_hw)
    h, j = np.divmod(hj, W.size)
    lines = h * aw + W[j]  # (h', w') line indices
    cand = (np.arange(ad)[:, None] * (ah * aw) + lines[None, :]).ravel()
    return np.sort(cand[_top(s[cand], k)]).astype(np.int64)


def select_columns(scores, density, *, structure="free", shape=None):
    """Sorted indices of ``ceil(density * positions)`` kept positions.

    Parameters
    ----------
    scores : 1-D array_like
        One score a position (e.g. :func:`column_importance`).
    density : float in (0, 1]
    structure : {"free", "lines"}
        ``"free"`` (default): the highest scores, wherever they are.
        ``"lines"``: the fewest transform lines that hold the kept count --
        ``ceil(k / (alpha_d alpha_h))`` w indices (highest total score), in
        them ``ceil(k / alpha_d)`` (h, w) lines (highest total score), in
        them the k highest scores.  The per-tile transforms compute only the
        w and (h, w) lines that some kept position uses
        (:func:`pywino3d.column_cost`), so this set costs far less transform
        work than a free one of the same size, at some cost in accuracy: the
        positions are no longer the best ones.
    shape : tuple of 3 ints, optional
        ``(alpha_d, alpha_h, alpha_w)`` for ``"lines"`` (default: a cube).

    Ties keep the lower position.  At least one column is always kept.

    Examples
    --------
    >>> import numpy as np, pywino3d
    >>> pywino3d.select_columns(np.array([0.1, 5.0, 3.0, 0.2]), 0.5)
    array([1, 2])
    >>> s = np.arange(64.0)  # F(2^3): alpha 4; higher w scores higher
    >>> cols = pywino3d.select_columns(s, 0.25, structure="lines")
    >>> cols.size, np.unique(cols % 4).tolist(), np.unique(cols % 16).size
    (16, [3], 4)
    """
    density = _check_density(density)
    _check_structure(structure)
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"scores: expected a non-empty 1-D array, got shape {s.shape}")
    k = max(1, math.ceil(density * s.size - 1e-9))
    if structure == "lines":
        return _lines_choice(s, k, _alpha_shape(s.size, shape))
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


# ---------------------------------------------------------------- transform-aware pruning
@lru_cache(maxsize=None)
def _axis_gram(m, r):
    """Kg for one axis: ``(AT^T AT) * (BT BT^T)``, entry (i, j) = (a_i . a_j)(b_i . b_j)."""
    AT, _, BT = winograd_matrices(m, r)
    return (AT.T @ AT) * (BT @ BT.T)


def tile_operator_gram(kernel_size, tile):
    """Gram matrix of the per-position operators a_p b_p^T (positions x positions).

    ``Kg[p, q] = <a_p b_p^T, a_q b_q^T>_F = (a_p . a_q)(b_p . b_q)``, the
    Kronecker product of the per-axis Gram matrices (positions in C order over
    (d, h, w), as in U).  ``||sum_p u_p a_p b_p^T||_F^2 = u^T Kg u``.

    Examples
    --------
    >>> from pywino3d.pruning import tile_operator_gram
    >>> tile_operator_gram(3, 2).shape
    (64, 64)
    """
    ks, tl = parse_kernel_size(kernel_size), parse_tile(tile)
    return kron3([_axis_gram(m, r) for m, r in zip(tl, ks)])


def _weights_and_transform(U, kernel_size, tile):
    """(U, kernel_size, tile) checked against each other; U stays a LowRankWinograd."""
    if isinstance(U, LowRankWinograd):
        ks = U.kernel_size if kernel_size is None else parse_kernel_size(kernel_size)
        tl = U.tile if tile is None else parse_tile(tile)
        if (ks, tl) != (U.kernel_size, U.tile):
            raise ValueError(f"kernel_size, tile: {ks}, {tl} differ from the LowRankWinograd's "
                             f"{U.kernel_size}, {U.tile}")
        return U, ks, tl
    if kernel_size is None or tile is None:
        raise ValueError("kernel_size, tile: the transform-aware methods need the kernel_size and tile "
                         "U was made with")
    ks, tl = parse_kernel_size(kernel_size), parse_tile(tile)
    npos = n_positions(tl, ks)
    if getattr(U, "ndim", None) != 3 or U.shape[0] != npos:
        raise ValueError(f"U: expected shape (positions={npos}, C_out, C_in) for tile {tl} and "
                         f"kernel_size {ks}, got {getattr(U, 'shape', type(U).__name__)}")
    return U, ks, tl


@lru_cache(maxsize=None)
def _scaled_axis_gram(m, r):
    """(Kg / (d d^T), d) for one axis with d = sqrt(diag Kg): Jacobi scaling,
    which brings the condition number of the F(4, 3) Gram matrix from 425 to 78
    (F(6, 3): 3.0e4 to 145)."""
    Kg = _axis_gram(m, r)
    d = np.sqrt(np.diag(Kg))
    return Kg / np.outer(d, d), d


def _scaled_gram(ks, tl, inverse=False):
    """Scaled Gram matrix (or its inverse) and the scale d, for the 3-D tile:
    both are Kronecker products of the per-axis ones."""
    parts = [_scaled_axis_gram(m, r) for m, r in zip(tl, ks)]
    mats = [np.linalg.inv(K) if inverse else K for K, _ in parts]
    d = kron3([p[1][:, None] for p in parts]).ravel()
    return kron3(mats), d


def _refit_matrix(ks, tl, keep):
    """R (len(keep) x positions) with U'[keep] = R U the least-squares refit.

    Minimises ``||sum_{p in keep} u'_p a_p b_p^T - sum_p u_p a_p b_p^T||_F``
    for every channel pair at once: ``u'_S = u_S + Kg_SS^+ Kg_{S,~S} u_~S``,
    solved in Jacobi-scaled coordinates.
    """
    Ks, d = _scaled_gram(ks, tl)
    npos = d.size
    drop = np.setdiff1d(np.arange(npos), keep)
    R = np.zeros((keep.size, npos))
    R[np.arange(keep.size), keep] = 1.0
    if drop.size and keep.size:
        corr = _psd_solve(Ks[np.ix_(keep, keep)], Ks[np.ix_(keep, drop)])
        R[:, drop] = corr
    # back from scaled coordinates: u~ = d u
    return R * d[None, :] / d[keep, None]


def _host64(a):
    return _to_host(a).astype(np.float64)


def _dense(U):
    """U as a float64 host array (a LowRankWinograd composed)."""
    return _host64(U.weights() if isinstance(U, LowRankWinograd) else U)


def _moments(inputs, ks, tl, padding, reference=None):
    """Calibration moments; ``inputs`` may already be :class:`_calibration.InputMoments`."""
    if isinstance(inputs, _calibration.InputMoments):
        return inputs
    return _calibration.input_moments(_host64(inputs), kernel_size=ks, tile=tl, padding=padding,
                                      reference=None if reference is None else _host64(reference))


def _like(U, A):
    """A (float64 host) as an array of U's type, device and dtype."""
    return array_module(U).asarray(A.astype(U.dtype))


def _obs_order(X, ks, tl, k):
    """Greedy backward elimination (Optimal Brain Surgeon with the Gram matrix
    Kg as the Hessian): drop, one at a time, the position whose removal with
    refit raises the operator error least, until ``k`` remain; returns the kept
    positions.  X: host (positions, n).

    With W the refitted weights (scaled coordinates) and H the inverse of the
    kept positions' Gram matrix, removing q costs ``||W_q||^2 / H_qq`` and
    updates ``W -= H[:, q] W_q / H_qq``, ``H -= H[:, q] H[q] / H_qq``.  Only
    ``C = W W^T`` is needed, so the loop costs positions^2 per step whatever
    the number of channel pairs.
    """
    H, d = _scaled_gram(ks, tl, inverse=True)
    npos = d.size
    Xs = X * d[:, None]
    C = Xs @ Xs.T
    alive = np.ones(npos, dtype=bool)
    for _ in range(npos - k):
        hq = np.diag(H)
        sal = np.full(npos, np.inf)
        sal[alive] = np.diag(C)[alive] / hq[alive]
        q = int(np.argmin(sal))
        h = H[:, q] / H[q, q]
        c = C[:, q].copy()
        # W' = L W with L = I - h e_q^T, so C' = L C L^T
        C += np.outer(h, h) * c[q] - np.outer(h, c) - np.outer(c, h)
        H -= np.outer(h, H[q])
        alive[q] = False
        C[q, :] = C[:, q] = 0.0
        H[q, :] = H[:, q] = 0.0
    return np.flatnonzero(alive).astype(np.int64)


def _psd_solve(A, B):
    """``A^+ B`` for a symmetric positive semi-definite A, by eigendecomposition
    (eigenvalues below ``n eps max`` treated as zero)."""
    lam, V = np.linalg.eigh(A)
    cut = lam.size * np.finfo(np.float64).eps * max(lam.max(), 0.0)
    inv = np.where(lam > cut, 1.0 / np.where(lam > cut, lam, 1.0), 0.0)
    return V @ (inv[:, None] * (V.T @ B))


def _apply_rows(R, keep, A):
    """Array like A (positions, ...) with rows ``keep`` = R @ A and zeros elsewhere."""
    xp = array_module(A)
    flat = A.reshape(A.shape[0], -1)
    out = xp.zeros(flat.shape, dtype=A.dtype)
    Rx = xp.asarray(R)
    out[xp.asarray(keep)] = (Rx @ flat.astype(xp.float64)).astype(A.dtype)
    return out.reshape(A.shape)


def _zero_rows(keep, A):
    xp = array_module(A)
    out = xp.zeros_like(A)
    idx = xp.asarray(keep)
    out[idx] = A[idx]
    return out


def refit_columns(U, columns, *, kernel_size=None, tile=None, inputs=None, padding=0, reference_inputs=None):
    """Least-squares refit of the kept columns; zero at the others.

    Returns the ``U'`` with ``U'[p] = 0`` outside ``columns`` that minimises
    the Frobenius norm of the per-tile operator difference
    ``sum_p (U'[p] - U[p]) a_p b_p^T`` for every channel pair, which is the
    expected output error for white-noise input (:func:`operator_error`).
    The operator is linear in U, so one matrix -- built from the
    pseudo-inverse of the Gram matrix of the kept positions -- serves every
    channel pair: ``U'[S] = U[S] + Kg_SS^+ Kg_{S,~S} U[~S]``.  With every
    position kept ``U' = U``.

    Parameters
    ----------
    U : array (positions, C_out, C_in) or LowRankWinograd
        For low-rank weights the refit is exact in the factors:
        ``U'[S] = R U`` with ``R`` acting on positions, so ``P' = R P`` (and
        ``U0' = R U0`` in residual mode) and ``Q`` is unchanged; the rank is
        kept.
    columns : 1-D array of int
        Kept positions.
    kernel_size, tile : int or tuple of 3 ints
        The transform of U (taken from a LowRankWinograd when omitted).
    inputs : array (N, C_in, D, H, W), optional
        Calibration inputs of the layer.  The refit then minimises the
        output error on these inputs (plus a small damping of the change,
        ``1e-6`` of the mean diagonal) instead of the white-noise operator
        norm; input channels are coupled, so the refit is a full least-squares
        solve over (kept position, input channel) per layer rather than one
        matrix on positions (see :mod:`pywino3d._core.calibration`).  Array U only.
    padding : int, tuple or str
        The layer's padding, with ``inputs``.
    reference_inputs : array like ``inputs``, optional
        The same layer's inputs in the unpruned network, when ``inputs`` come
        from a network whose earlier layers are already pruned: the target is
        then the unpruned layer on these, so the refit also compensates the
        earlier layers' error.

    Returns
    -------
    U_refit : array like U (same type, device and dtype), or LowRankWinograd

    Examples
    --------
    >>> import numpy as np, pywino3d
    >>> from pywino3d.pruning import operator_error
    >>> U = pywino3d.filter_transform(np.random.default_rng(0).standard_normal((2, 2, 3, 3, 3)), 2)
    >>> keep = np.arange(0, 64, 2)
    >>> plain = np.where(np.isin(np.arange(64), keep)[:, None, None], U, 0)
    >>> fit = pywino3d.refit_columns(U, keep, kernel_size=3, tile=2)
    >>> bool(operator_error(fit, U, kernel_size=3, tile=2) < operator_error(plain, U, kernel_size=3, tile=2))
    True
    """
    from pywino3d._core.validation import as_columns

    U, ks, tl = _weights_and_transform(U, kernel_size, tile)
    npos = n_positions(tl, ks)
    keep = as_columns(columns, npos).astype(np.int64)
    if inputs is not None:
        if isinstance(U, LowRankWinograd):
            raise ValueError("inputs: the data-aware refit couples input channels, which the factors P, Q of "
                             "a LowRankWinograd cannot express; refit it without inputs (white-noise refit, "
                             "P' = R P) or refit U.weights()")
        mom = _moments(inputs, ks, tl, padding, reference_inputs)
        return _like(U, _calibration.refit(_host64(U), keep, mom))
    if reference_inputs is not None:
        raise ValueError("reference_inputs: needs inputs (the calibration inputs of the pruned network)")
    R = _refit_matrix(ks, tl, keep)
    if isinstance(U, LowRankWinograd):
        P = _apply_rows(R, keep, U.P)
        U0 = None if U.U0 is None else _apply_rows(R, keep, U.U0)
        return LowRankWinograd(P, U.Q.copy(), kernel_size=ks, tile=tl, U0=U0)
    return _apply_rows(R, keep, U)


def operator_error(U_new, U, *, kernel_size, tile, inputs=None, padding=0):
    """Frobenius norm of the per-tile operator difference over all channel pairs.

    ``sqrt(sum_{k,c} ||A^T diag(U_new - U)[:, k, c] B^T||_F^2)``: the root
    mean square output error per tile for white-noise input of unit
    variance (the expectation of ``||M d||^2`` over ``d`` is ``||M||_F^2``).
    Divide by ``operator_error(0 * U, U, ...)`` for a relative error.
    With calibration ``inputs`` (N, C_in, D, H, W) and the layer's
    ``padding``, the root mean square output error per tile on those inputs
    instead (the norm the data-aware refit minimises).

    Examples
    --------
    >>> import numpy as np, pywino3d
    >>> from pywino3d.pruning import operator_error
    >>> U = pywino3d.filter_transform(np.ones((1, 1, 3, 3, 3)), 2)
    >>> float(operator_error(0 * U, U, kernel_size=3, tile=2) ** 2)  # 8 outputs x 27 taps of 1
    216.0...
    """
    if isinstance(U_new, LowRankWinograd):
        U_new = U_new.weights()
    U, ks, tl = _weights_and_transform(U, kernel_size, tile)
    if isinstance(U, LowRankWinograd):
        U = U.weights()
    if tuple(U_new.shape) != tuple(U.shape):
        raise ValueError(f"U_new: expected shape {tuple(U.shape)} (U's), got {tuple(U_new.shape)}")
    if inputs is not None:
        return _calibration.output_error(_host64(U_new), _host64(U), _moments(inputs, ks, tl, padding))
    D = (_host64(U_new) - _host64(U)).reshape(U.shape[0], -1)
    Kg = tile_operator_gram(ks, tl)
    return float(np.sqrt(max(np.einsum("pn,pq,qn->", D, Kg, D), 0.0)))


def _prune_scores(U, method, ks, tl):
    """Per-position scores used to rank (and, across layers, to allocate) columns."""
    if method in ("l1", "l2", "output"):
        return column_importance(U, method, kernel_size=ks, tile=tl)
    # obs: error of removing p alone with refit, ||u~_p|| / sqrt(Kg~^-1_pp)
    Hinv, d = _scaled_gram(ks, tl, inverse=True)
    return column_importance(U, "l2") * d / np.sqrt(np.diag(Hinv))


def _choose(U, k, method, ks, tl, moments=None, structure="free"):
    """The k kept positions; ``moments``: calibration statistics for "output", or None;
    ``structure``: as in :func:`select_columns`."""
    if structure == "lines" and method == "obs":
        raise ValueError("structure: 'lines' ranks positions by a score; method 'obs' has none "
                         "(use 'output', 'l2' or 'l1')")
    if method == "obs":
        if moments is not None:
            raise ValueError("method: 'obs' uses the white-noise operator; with calibration inputs use 'output'")
        X = _dense(U)
        return _obs_order(X.reshape(X.shape[0], -1), ks, tl, k)
    if moments is not None and method == "output":
        s = _calibration.scores(_dense(U), moments)
    else:
        s = _prune_scores(U, method, ks, tl)
    if structure == "lines":
        return _lines_choice(np.asarray(s, np.float64), k, tuple(alphas(tl, ks)))
    return np.sort(np.argsort(-s, kind="stable")[:k]).astype(np.int64)


def prune_columns(U, density, *, kernel_size=None, tile=None, method="output", refit=True, inputs=None, padding=0,
                  reference_inputs=None, structure="free"):
    """One-shot column pruning of Winograd-domain weights.

    Keeps ``ceil(density * positions)`` positions (at least one), chosen by
    ``method``, and with ``refit=True`` re-fits them by least squares
    (:func:`refit_columns`) so that the pruned per-tile operator is as close
    as possible, in the Frobenius norm, to the unpruned one.

    Parameters
    ----------
    U : array (positions, C_out, C_in) or LowRankWinograd
    density : float in (0, 1]
        Fraction of positions kept.
    kernel_size, tile : int or tuple of 3 ints
        The transform of U (required for an array U).
    method : {"output", "obs", "l2", "l1"}
        ``"output"``: the transform-aware score of :func:`column_importance`;
        ``"obs"``: greedy backward elimination that drops, one at a time,
        the position whose removal *with refit* raises the operator error
        least (Optimal Brain Surgeon with the Gram matrix of the per-tile
        operator as Hessian; slower, best with ``refit=True``);
        ``"l2"``/``"l1"``: magnitude of U[p].
    refit : bool
        Refit the kept columns (True) or only zero the pruned ones (False).
    inputs : array (N, C_in, D, H, W), optional
        Calibration inputs of the layer (a few dozen examples are enough):
        ``"output"`` then scores each position by the output error of
        removing it measured on these inputs, and the refit minimises the
        output error on them (:func:`refit_columns`).  Recommended for a
        trained network, whose activations are far from white noise.
        ``"obs"`` works with the white-noise operator only.
    padding : int, tuple or str
        The layer's padding, with ``inputs``.
    reference_inputs : array like ``inputs``, optional
        The unpruned network's inputs of this layer (see :func:`refit_columns`).
    structure : {"free", "lines"}
        Where the kept positions may lie (:func:`select_columns`): ``"free"``
        (default) ranks them by the score alone; ``"lines"`` keeps them in
        the fewest transform lines, so the transforms shrink with the
        density too (not with ``method="obs"``).

    Returns
    -------
    U_pruned : like U, zero at the pruned positions (LowRankWinograd: zero
        rows of P, and of U0 in residual mode)
    columns : ndarray of int64, the sorted kept positions (for ``columns=``)

    Examples
    --------
    >>> import numpy as np, pywino3d
    >>> x = np.random.default_rng(0).standard_normal((1, 3, 8, 8, 8))
    >>> w = np.random.default_rng(1).standard_normal((4, 3, 3, 3, 3))
    >>> U = pywino3d.filter_transform(w, 4)
    >>> Up, cols = pywino3d.prune_columns(U, 0.5, kernel_size=3, tile=4)
    >>> cols.size, bool(np.all(np.delete(Up, cols, axis=0) == 0))
    (108, True)
    >>> ref = pywino3d.conv3d(x, w, padding=1, tile=4)
    >>> y = pywino3d.winograd_conv3d(x, Up, kernel_size=3, tile=4, padding=1, columns=cols)
    >>> bool(np.linalg.norm(y - ref) < np.linalg.norm(ref))
    True
    """
    density = _check_density(density)
    if method not in PRUNE_METHODS:
        raise ValueError(f"method: expected one of {PRUNE_METHODS}, got {method!r}")
    _check_structure(structure)
    U, ks, tl = _weights_and_transform(U, kernel_size, tile)
    npos = n_positions(tl, ks)
    k = max(1, math.ceil(density * npos - 1e-9))
    mom = None if inputs is None else _moments(inputs, ks, tl, padding, reference_inputs)
    if mom is None and reference_inputs is not None:
        raise ValueError("reference_inputs: needs inputs (the calibration inputs of the pruned network)")
    return _prune_to(U, k, ks, tl, method, refit, mom, structure)


def _prune_to(U, k, ks, tl, method, refit, moments=None, structure="free"):
    """Prune U (checked) to exactly k kept positions; ``moments``: calibration statistics or None."""
    keep = _choose(U, k, method, ks, tl, moments, structure)
    if refit:
        return refit_columns(U, keep, kernel_size=ks, tile=tl, inputs=moments), keep
    if isinstance(U, LowRankWinograd):
        U0 = None if U.U0 is None else _zero_rows(keep, U.U0)
        return LowRankWinograd(_zero_rows(keep, U.P), U.Q.copy(), kernel_size=ks, tile=tl, U0=U0), keep
    return _zero_rows(keep, U), keep
