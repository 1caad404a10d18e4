"""Exact Toom-Cook construction of the 1-D Winograd matrices F(m, r).

This module is the one place where the transform matrices are made.  They
are built in exact rational arithmetic (:class:`fractions.Fraction`) and only
rounded to floating point at the end, so the only rounding error of the
algorithm comes from evaluating it, never from constructing it.

Construction
------------
Correlation of a signal ``d`` (length ``alpha = m + r - 1``) with a filter
``g`` (length ``r``) producing ``m`` outputs is the transpose of the linear
convolution of a degree ``m - 1`` polynomial with a degree ``r - 1``
polynomial.  Evaluating both factors at ``alpha - 1`` finite points and at
infinity (the leading coefficient), multiplying pointwise and interpolating
gives the convolution; transposing that bilinear algorithm gives ::

    y = AT @ ((G @ g) * (BT @ d))

with ``AT = E_m.T`` (m x alpha), ``G = E_r`` (alpha x r) and
``BT = V^{-T}`` (alpha x alpha), where ``E_n`` evaluates a polynomial with
``n`` coefficients at the points and ``V = E_alpha``.

Two choices are free and matter for float accuracy:

* the points: by default ``0, 1, -1, 2, -2, 1/2, -1/2, 3, -3, 1/3, -1/3, 4,
  -4, 1/4, -1/4, ...`` (the first ``alpha - 1`` of them, plus infinity),
  except for alpha = 6 and 7 (:data:`SEARCHED_POINTS`), whose sets were
  searched for the lowest rounding error (``benchmarks/accuracy.py --part
  5``; ``docs/accuracy.md``): F(4^3, 3^3) is 2.5 to 3.5 times more accurate
  with ``0, +-2/3, +-3/2`` than with ``0, +-1, +-2``, F(5^3, 3^3) 1.7 times
  more than with the first searched set ``0, +-5/9, +-9/8, 8/3`` (which was
  1.4 times more than the default points) with the zero-free ``+-2/7, +-6/7,
  +-7/4``.  The sets keep the +-p
  pairs that the generated C transforms share sums over, so a tile costs no
  more operations;
* a diagonal scaling ``D`` that can move between ``G`` and ``BT``
  (``G -> D G``, ``BT -> D^{-1} BT``).  ``scaling="lavin"`` (default) keeps the classic form of Lavin & Gray in
  which each row of ``BT`` is scaled to coprime integers and ``G`` holds the
  fractions; ``scaling="balanced"`` picks ``D`` so that each row of ``G`` and
  the matching row of ``BT`` have the same largest magnitude (rounded to a
  power of two).  Measured on single 3-D tiles in float32 (relative L1 error,
  r = 3): lavin 2.2e-7 / 3.3e-6 / 1.5e-5 for m = 2 / 4 / 6, balanced
  2.2e-7 / 3.6e-6 / 1.7e-5, so lavin is the default.

Trivial cases use the exact identity algorithms: ``m == 1`` is the direct
dot product (``AT = ones``, ``G = BT = I``) and ``r == 1`` is a plain scaling
(``AT = BT = I``, ``G = ones``).  ``docs/accuracy.md`` has the measured errors.
"""
from __future__ import annotations

import itertools
import math
from fractions import Fraction
from functools import lru_cache

import numpy as np

__all__ = ["winograd_matrices", "interpolation_points", "SEARCHED_POINTS", "MAX_TILE", "MAX_KERNEL"]

#: Largest tile size and kernel size for which matrices are provided.
MAX_TILE = 8
MAX_KERNEL = 7

_SCALINGS = ("lavin", "balanced")


#: The finite points of the searched sets, by their number (alpha - 1), all
#: with the point at infinity: the sets that minimise the mean over the
#: outputs of ``sum_p AT[i,p]^2 |G[p,:]|^2 |BT[p,:]|^2`` (the first-order
#: variance of the product stage's rounding, invariant to the G/BT scaling),
#: which predicted the measured end-to-end error of every set tried.  5
#: points: ``0, +-p, +-q`` with fractions of integers 1..9; 6 points: the
#: zero-free ``+-p, +-q, +-s`` with fractions of integers 1..13, within 0.1 %
#: of the optimum over all real sets (the best set with 0 scored 13.8, this
#: one 9.53, the optimum 9.52).  Other counts keep the default sequence: for 7
#: finite points (alpha 8, F(6, 3)) it is within 0.1 % of the optimum over
#: all real sets, asymmetric or without infinity, and for 3 and 4 the filter
#: transform's factored code needs G dyadic (``src/cpu/gen_const_transforms.py``).
#: ``benchmarks/accuracy.py --part 5`` runs the searches.
SEARCHED_POINTS = {
    5: (Fraction(0), Fraction(2, 3), Fraction(-2, 3), Fraction(3, 2), Fraction(-3, 2)),
    6: (Fraction(2, 7), Fraction(-2, 7), Fraction(6, 7), Fraction(-6, 7), Fraction(7, 4), Fraction(-7, 4)),
}


def interpolation_points(n):
    """Return the ``n`` finite interpolation points used for alpha = n + 1.

    For ``n`` in :data:`SEARCHED_POINTS` the searched set; otherwise the
    first ``n`` of ``0, 1, -1, 2, -2, 1/2, -1/2, 3, -3, 1/3, -1/3, ...``:
    small integers and their reciprocals, which keep the Vandermonde system
    well conditioned.

    Parameters
    ----------
    n : int
        Number of finite points, ``alpha - 1``.

    Returns
    -------
    list of Fraction
    """
    if n in SEARCHED_POINTS:
        return list(SEARCHED_POINTS[n])
    pts = [Fraction(0)]
    k = 1
    while len(pts) < n:
        pts += [Fraction(k), Fraction(-k)]
        if k > 1:
            pts += [Fraction(1, k), Fraction(-1, k)]
        k += 1
    return pts[:n]


def _eval_matrix(points, n):
    """Rows evaluate a polynomial with ``n`` coefficients at each point; the
    last row takes the leading coefficient (the point at infinity)."""
    rows = [[p ** j for j in range(n)] for p in points]
    rows.append([Fraction(0)] * (n - 1) + [Fraction(1)])
    return rows


def _inverse(mat):
    """Exact Gauss-Jordan inverse of a square Fraction matrix."""
    n = len(mat)
    aug = [list(row) + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(mat)]
    for col in range(n):
        piv = next(r for r in range(col, n) if aug[r][col] != 0)
        aug[col], aug[piv] = aug[piv], aug[col]
        inv = 1 / aug[col][col]
        aug[col] = [v * inv for v in aug[col]]
        for r in range(n):
            if r != col and aug[r][col] != 0:
                f = aug[r][col]
                aug[r] = [a - f * b for a, b in zip(aug[r], aug[col])]
    return [row[n:] for row in aug]


def _transpose(mat):
    return [list(col) for col in zip(*mat)]


def _pow2_near(x):
    """Power of two nearest to the positive Fraction ``x`` (in log scale)."""
    return Fraction(2) ** round(math.log2(float(x)))


@lru_cache(maxsize=None)
def _exact(m, r, scaling):
    alpha = m + r - 1
    one, zero = Fraction(1), Fraction(0)
    eye = [[one if i == j else zero for j in range(alpha)] for i in range(alpha)]
    if m == 1:
        return ([[one] * alpha], [row[:] for row in eye], eye)
    if r == 1:
        return (eye, [[one] for _ in range(alpha)], [row[:] for row in eye])
    pts = interpolation_points(alpha - 1)
    AT = _transpose(_eval_matrix(pts, m))
    G = _eval_matrix(pts, r)
    BT = _transpose(_inverse(_eval_matrix(pts, alpha)))
    for j in range(alpha):
        bmax = max(abs(v) for v in BT[j])
        gmax = max(abs(v) for v in G[j])
        if scaling == "lavin" and alpha - 1 in SEARCHED_POINTS:
            # the searched sets: the BT row gets as many +-1 entries as one
            # scale can give (ties: its largest entry becomes 1), each an add
            # instead of a multiply in the generated transforms.
            s = max((Fraction(1) / abs(v) for v in BT[j] if v != 0),
                    key=lambda c: (sum(abs(v * c) == 1 for v in BT[j]), -c))
        elif scaling == "lavin":
            # BT rows become integers with no common factor; G takes the rest.
            den = math.lcm(*(v.denominator for v in BT[j]))
            num = math.gcd(*(v.numerator for v in BT[j] if v != 0))
            s = Fraction(den, num)
        else:  # balanced
            s = _pow2_near((bmax / gmax) ** 0.5) if gmax != 0 else one
            s = Fraction(s)
        BT[j] = [v * s for v in BT[j]]
        G[j] = [v / s for v in G[j]]
    if scaling == "lavin" and alpha - 1 in SEARCHED_POINTS:
        _unit_columns(AT, G, pts)
    return (AT, G, BT)


def _unit_columns(AT, G, pts):
    """Scale the columns of AT (G's rows take the inverse, exactly) so that
    as many rows of AT as possible hold a +-1 entry: one scale per pair of
    points +-p (the generated transforms share their sums), chosen among
    those that make an entry of the pair's column 1.  A row with a unit term
    adds it where it would otherwise multiply.  Ties: the most unit entries,
    then the smallest largest entry."""
    groups = {}
    for j, p in enumerate(pts):
        if p != 0:
            groups.setdefault(abs(p), []).append(j)
    keys = sorted(groups)
    cands = [sorted({Fraction(1)} | {1 / abs(AT[i][groups[k][0]]) for i in range(len(AT))})
             for k in keys]

    def score(scales):
        col = {j: c for k, c in zip(keys, scales) for j in groups[k]}
        rows = [[v * col.get(j, 1) for j, v in enumerate(row)] for row in AT]
        units = [sum(abs(v) == 1 for v in row) for row in rows]
        return (sum(u > 0 for u in units), sum(units), -max(abs(v) for row in rows for v in row))

    best = max(itertools.product(*cands), key=score)
    for k, c in zip(keys, best):
        for j in groups[k]:
            for row in AT:
                row[j] *= c
            G[j] = [v / c for v in G[j]]


def winograd_matrices(m, r, *, exact=False, dtype=np.float64, scaling="lavin"):
    """Return the 1-D Winograd matrices ``(AT, G, BT)`` for F(m, r).

    Parameters
    ----------
    m : int
        Output tile size, ``1 <= m <= 8``.
    r : int
        Kernel size, ``1 <= r <= 7``.
    exact : bool, optional
        If True return object arrays of :class:`fractions.Fraction`.
    dtype : dtype, optional
        Floating dtype of the returned arrays when ``exact`` is False.
    scaling : {"lavin", "balanced"}, optional
        How the diagonal scaling is split between ``G`` and ``BT``.

    Returns
    -------
    AT : ndarray, shape (m, alpha)
    G : ndarray, shape (alpha, r)
    BT : ndarray, shape (alpha, alpha)
        With ``alpha = m + r - 1`` and, for any ``d`` of length ``alpha``
        and ``g`` of length ``r``, ``AT @ ((G @ g) * (BT @ d))`` equal to
        the correlation ``y[i] = sum_k d[i + k] * g[k]``.

    Examples
    --------
    >>> import numpy as np
    >>> from pywino3d import winograd_matrices
    >>> AT, G, BT = winograd_matrices(2, 3)
    >>> AT.shape, G.shape, BT.shape
    ((2, 4), (4, 3), (4, 4))
    >>> d, g = np.arange(4.0), np.array([1.0, 2.0, 3.0])
    >>> AT @ ((G @ g) * (BT @ d))
    array([ 8., 14.])
    """
    for name, val, hi in (("m", m, MAX_TILE), ("r", r, MAX_KERNEL)):
        if isinstance(val, (bool, np.bool_)) or not isinstance(val, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {type(val).__name__}")
        if not 1 <= val <= hi:
            raise ValueError(f"{name} must be in 1..{hi}, got {val}")
    if scaling not in _SCALINGS:
        raise ValueError(f"scaling must be one of {_SCALINGS}, got {scaling!r}")
    mats = _exact(int(m), int(r), scaling)
    if exact:
        return tuple(np.array(mat, dtype=object) for mat in mats)
    return tuple(np.array([[float(v) for v in row] for row in mat], dtype=dtype) for mat in mats)


def kron3(mats):
    """Kronecker product of the three per-axis matrices (d, h, w): the 3-D
    operator on tile positions in C order, as in U's first axis."""
    out = np.ones((1, 1))
    for m in mats:
        out = np.kron(out, m)
    return out
