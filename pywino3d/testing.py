"""Test helpers: a float64 direct-correlation oracle and hypothesis strategies.

The oracle functions need only NumPy.  The strategies import hypothesis when
called, so ``import pywino3d`` never needs it.
"""
from __future__ import annotations

import math

import numpy as np

from pywino3d._core.geometry import parse_padding

__all__ = [
    "conv3d_reference",
    "conv3d_backward_reference",
    "error_bound",
    "typical_error",
    "term_scale",
    "check_typical",
    "winograd_magnitudes",
    "winograd_reference",
    "local_max",
    "rounding_terms",
    "conv_problems",
    "float_dtypes",
    "paddings",
    "tiles",
    "kernel_sizes",
]


def _pad(x, pads):
    return np.pad(x, ((0, 0), (0, 0), *pads))


def conv3d_reference(x, w, bias=None, *, padding=0):
    """Direct 3-D cross-correlation in float64 (the oracle).

    Parameters
    ----------
    x : array_like, shape (N, C, D, H, W)
    w : array_like, shape (K, C, rd, rh, rw)
    bias : array_like, shape (K,), optional
    padding : int, tuple of 3 ints, "same" or "valid"

    Returns
    -------
    y : ndarray of float64, shape (N, K, Do, Ho, Wo)

    Examples
    --------
    >>> import numpy as np
    >>> from pywino3d.testing import conv3d_reference
    >>> conv3d_reference(np.ones((1, 1, 3, 3, 3)), np.ones((1, 1, 3, 3, 3)))[0, 0]
    array([[[27.]]])
    """
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    K, C, rd, rh, rw = w.shape
    xp = _pad(x, parse_padding(padding, (rd, rh, rw)))
    N = x.shape[0]
    Do, Ho, Wo = (xp.shape[2 + i] - w.shape[2 + i] + 1 for i in range(3))
    y = np.zeros((N, K, Do, Ho, Wo))
    for a in range(rd):
        for b in range(rh):
            for c in range(rw):
                patch = xp[:, :, a:a + Do, b:b + Ho, c:c + Wo]
                y += np.einsum("ncdhw,kc->nkdhw", patch, w[:, :, a, b, c], optimize=True)
    if bias is not None:
        y += np.asarray(bias, dtype=np.float64).reshape(1, K, 1, 1, 1)
    return y


def conv3d_backward_reference(grad_y, x, w, *, padding=0):
    """(grad_x, grad_w) of :func:`conv3d_reference`, in float64.

    Examples
    --------
    >>> import numpy as np
    >>> from pywino3d.testing import conv3d_backward_reference
    >>> gx, gw = conv3d_backward_reference(np.ones((1, 1, 1, 1, 1)),
    ...                                    np.ones((1, 1, 3, 3, 3)), np.ones((1, 1, 3, 3, 3)))
    >>> gx.shape, float(gw.sum())
    ((1, 1, 3, 3, 3), 27.0)
    """
    gy = np.asarray(grad_y, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    K, C, rd, rh, rw = w.shape
    pads = parse_padding(padding, (rd, rh, rw))
    xp = _pad(x, pads)
    Do, Ho, Wo = gy.shape[2:]
    gxp = np.zeros_like(xp)
    gw = np.zeros_like(w)
    for a in range(rd):
        for b in range(rh):
            for c in range(rw):
                sl = (slice(None), slice(None), slice(a, a + Do), slice(b, b + Ho), slice(c, c + Wo))
                gxp[sl] += np.einsum("nkdhw,kc->ncdhw", gy, w[:, :, a, b, c], optimize=True)
                gw[:, :, a, b, c] = np.einsum("nkdhw,ncdhw->kc", gy, xp[sl], optimize=True)
    D, H, W = x.shape[2:]
    gx = gxp[:, :, pads[0][0]:pads[0][0] + D, pads[1][0]:pads[1][0] + H, pads[2][0]:pads[2][0] + W]
    return np.ascontiguousarray(gx), gw


#: Per-axis rounding-error factors of F(m, r), measured (docs/accuracy.md):
#: the cube root of max |y - y_exact| / (eps * (|x| star |w|)) for cubic tiles
#: and kernels, float32, 8 channels.  Rows r = 1..7, columns m = 1..8.  These
#: describe typical error growth; the tests use the rigorous bound below.
AXIS_ERROR = np.array([
    [1.10, 1.13, 1.22, 1.08, 1.08, 1.10, 1.14, 1.11],
    [1.00, 1.68, 1.19, 3.72, 8.22, 5.45, 6.02, 32.0],
    [1.00, 1.02, 2.23, 3.27, 5.38, 5.60, 18.6, 53.8],
    [1.00, 2.30, 3.10, 3.04, 5.54, 15.9, 35.9, 34.7],
    [1.00, 3.34, 2.95, 4.20, 20.8, 27.3, 27.6, 45.8],
    [1.00, 3.11, 3.30, 13.6, 43.5, 29.0, 40.4, 279.],
    [1.00, 3.11, 13.4, 25.9, 35.1, 38.4, 185., 666.],
])


def _abs_mats(tile, ksize):
    from pywino3d._core.transforms import winograd_matrices

    return [tuple(np.abs(M) for M in winograd_matrices(m, r)) for m, r in zip(tile, ksize)]


def _patches_to_volume(gP, x, g, nt, tile, alpha):
    """The adjoint of the tile gather: per-tile input patches gP
    (N, C, tiles_d, tiles_h, tiles_w, alpha_d, alpha_h, alpha_w) summed into
    the padded volume and cropped to x's shape (x's dtype)."""
    need = [t * m + al - m for t, m, al in zip(nt, tile, alpha)]
    gxp = np.zeros((x.shape[0], x.shape[1], *need))
    for d in range(nt[0]):
        for h in range(nt[1]):
            for q in range(nt[2]):
                o = (d * tile[0], h * tile[1], q * tile[2])
                gxp[:, :, o[0]:o[0] + alpha[0], o[1]:o[1] + alpha[1], o[2]:o[2] + alpha[2]] += gP[:, :, d, h, q]
    p0 = [p[0] for p in g.pads]
    D, H, W = x.shape[2:]
    gx = np.zeros_like(x)
    src = gxp[:, :, p0[0]:p0[0] + D, p0[1]:p0[1] + H, p0[2]:p0[2] + W]
    gx[:, :, :src.shape[2], :src.shape[3], :src.shape[4]] = src
    return gx


def winograd_magnitudes(x, w, tile, *, padding=0, grad_y=None):
    """Componentwise magnitudes of the Winograd algorithm in float64.

    Runs F(m, r) with every matrix and input replaced by its absolute value:
    ``|AT| (|G| |w| * |BT| |x|)`` per output, the quantity that bounds the
    rounding error of a bilinear algorithm (Higham, *Accuracy and Stability of
    Numerical Algorithms*, sec. 4; Barabasz et al. 2018).  With ``grad_y`` it
    also returns the magnitudes of the two adjoints, for grad_x and grad_w.

    Examples
    --------
    >>> import numpy as np
    >>> from pywino3d.testing import winograd_magnitudes, conv3d_reference
    >>> x, w = np.ones((1, 1, 4, 4, 4)), np.ones((1, 1, 3, 3, 3))
    >>> mag = winograd_magnitudes(x, w, 2)
    >>> bool((mag >= conv3d_reference(x, w)).all())
    True
    """
    from pywino3d._core.geometry import make_geometry, parse_tile, tile_patches

    x = np.abs(np.asarray(x, np.float64))
    w = np.abs(np.asarray(w, np.float64))
    ksize = w.shape[2:]
    tile = parse_tile(tile)
    g = make_geometry(x.shape, w.shape[0], ksize, padding, tile)
    nt, alpha = g.ntiles_axis, g.alpha
    (ATd, Gd, BTd), (ATh, Gh, BTh), (ATw, Gw, BTw) = _abs_mats(tile, ksize)
    patches = tile_patches(x, g.pads, tile, alpha, nt)
    V = np.einsum("ia,jb,kc,nCdhwabc->nCdhwijk", BTd, BTh, BTw, patches, optimize=True)
    U = np.einsum("ia,jb,kc,KCabc->KCijk", Gd, Gh, Gw, w, optimize=True)
    M = np.einsum("KCijk,nCdhwijk->nKdhwijk", U, V, optimize=True)
    Y = np.einsum("pi,qj,sk,nKdhwijk->nKdphqws", ATd, ATh, ATw, M, optimize=True)
    N, K = x.shape[0], w.shape[0]
    Y = Y.reshape(N, K, nt[0] * tile[0], nt[1] * tile[1], nt[2] * tile[2])
    y_mag = Y[:, :, :g.out[0], :g.out[1], :g.out[2]]
    if grad_y is None:
        return y_mag
    gy = np.abs(np.asarray(grad_y, np.float64))
    gyp = np.zeros((N, K, nt[0] * tile[0], nt[1] * tile[1], nt[2] * tile[2]))
    gyp[:, :, :g.out[0], :g.out[1], :g.out[2]] = gy
    gyt = gyp.reshape(N, K, nt[0], tile[0], nt[1], tile[1], nt[2], tile[2])
    gM = np.einsum("pi,qj,sk,nKdphqws->nKdhwijk", ATd, ATh, ATw, gyt, optimize=True)
    gV = np.einsum("KCijk,nKdhwijk->nCdhwijk", U, gM, optimize=True)
    gP = np.einsum("ia,jb,kc,nCdhwijk->nCdhwabc", BTd, BTh, BTw, gV, optimize=True)
    gx_mag = _patches_to_volume(gP, x, g, nt, tile, alpha)
    gU = np.einsum("nKdhwijk,nCdhwijk->KCijk", gM, V, optimize=True)
    gw_mag = np.einsum("ia,jb,kc,KCijk->KCabc", Gd, Gh, Gw, gU, optimize=True)
    return y_mag, gx_mag, gw_mag


def winograd_reference(x, U, ksize, tile, *, padding=0, bias=None, columns=None, grad_y=None):
    """The Winograd convolution with given ``U``, in float64 NumPy: an
    oracle for every pipeline that shares none of its code (only the
    matrices of ``_transforms``).

    Parameters
    ----------
    x : array_like, shape (N, C, D, H, W)
    U : array_like, shape (P, K, C)
        Transformed weights, positions in row-major (d, h, w) order, as
        :func:`pywino3d.filter_transform` makes them.
    ksize, tile : int or 3 ints
    padding : as for :func:`pywino3d.conv3d`
    bias : array_like, shape (K,), optional
    columns : array_like of int, optional
        Kept positions; the others count as zero (and get zero gradient).
    grad_y : array_like, optional
        With it, return ``(grad_x, grad_U)`` instead of y.

    Examples
    --------
    >>> import numpy as np, pywino3d
    >>> from pywino3d.testing import winograd_reference, conv3d_reference
    >>> rng = np.random.default_rng(0)
    >>> x, w = rng.standard_normal((1, 2, 5, 5, 5)), rng.standard_normal((3, 2, 3, 3, 3))
    >>> y = winograd_reference(x, pywino3d.filter_transform(w, 2), 3, 2, padding=1)
    >>> bool(np.allclose(y, conv3d_reference(x, w, padding=1), rtol=1e-12, atol=1e-12))
    True
    """
    from pywino3d._core.geometry import make_geometry, parse_tile, tile_patches
    from pywino3d._core.transforms import winograd_matrices

    x = np.asarray(x, np.float64)
    U = np.array(U, np.float64)
    ksize = _triple(ksize)
    tile = parse_tile(tile)
    P, K, C = U.shape
    if columns is not None:
        keep = np.zeros(P, bool)
        keep[np.asarray(columns, np.intp)] = True
        U[~keep] = 0
    g = make_geometry(x.shape, K, ksize, padding, tile)
    nt, alpha = g.ntiles_axis, g.alpha
    (ATd, _, BTd), (ATh, _, BTh), (ATw, _, BTw) = [winograd_matrices(m, r) for m, r in zip(tile, ksize)]
    Ua = U.reshape(*alpha, K, C)
    patches = tile_patches(x, g.pads, tile, alpha, nt)
    V = np.einsum("ia,jb,kc,nCdhwabc->nCdhwijk", BTd, BTh, BTw, patches, optimize=True)
    N = x.shape[0]
    if grad_y is None:
        M = np.einsum("ijkKC,nCdhwijk->nKdhwijk", Ua, V, optimize=True)
        Y = np.einsum("pi,qj,sk,nKdhwijk->nKdphqws", ATd, ATh, ATw, M, optimize=True)
        Y = Y.reshape(N, K, nt[0] * tile[0], nt[1] * tile[1], nt[2] * tile[2])
        y = np.ascontiguousarray(Y[:, :, :g.out[0], :g.out[1], :g.out[2]])
        if bias is not None:
            y += np.asarray(bias, np.float64).reshape(1, K, 1, 1, 1)
        return y
    gy = np.asarray(grad_y, np.float64)
    gyp = np.zeros((N, K, nt[0] * tile[0], nt[1] * tile[1], nt[2] * tile[2]))
    gyp[:, :, :g.out[0], :g.out[1], :g.out[2]] = gy
    gyt = gyp.reshape(N, K, nt[0], tile[0], nt[1], tile[1], nt[2], tile[2])
    gM = np.einsum("pi,qj,sk,nKdphqws->nKdhwijk", ATd, ATh, ATw, gyt, optimize=True)
    gV = np.einsum("ijkKC,nKdhwijk->nCdhwijk", Ua, gM, optimize=True)
    gP = np.einsum("ia,jb,kc,nCdhwijk->nCdhwabc", BTd, BTh, BTw, gV, optimize=True)
    gx = _patches_to_volume(gP, x, g, nt, tile, alpha)
    gU = np.einsum("nKdhwijk,nCdhwijk->ijkKC", gM, V, optimize=True).reshape(P, K, C)
    if columns is not None:
        gU[~keep] = 0
    return gx, gU


def rounding_terms(tile, ksize, nsum):
    """The k of the bound ``gamma_k ~ k * eps``: rounding steps on the longest
    path of the algorithm (three stages per transform of length alpha, the
    filter transform, a sum of ``nsum`` products, and the rounded matrix
    entries), counted generously.

    Examples
    --------
    >>> from pywino3d.testing import rounding_terms
    >>> rounding_terms((4, 4, 4), (3, 3, 3), nsum=64)
    121
    """
    from pywino3d._core.geometry import alphas

    return 2 * sum(alphas(tile, ksize)) + sum(ksize) + nsum + 12


def error_bound(x, w, tile, dtype, *, padding=0):
    """Elementwise rounding bound for ``conv3d(x, w, tile=tile)`` in ``dtype``.

    ``k * eps * |AT| (|G| |w| * |BT| |x|)`` (see :func:`winograd_magnitudes`
    and :func:`rounding_terms`): a first-order bound valid for any input,
    whatever the summation order, that scales like ``|x| star |w|`` times
    the transform growth of ``docs/accuracy.md``.

    Examples
    --------
    >>> import numpy as np, pywino3d
    >>> from pywino3d.testing import conv3d_reference, error_bound
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((1, 2, 5, 5, 5)).astype(np.float32)
    >>> w = rng.standard_normal((2, 2, 3, 3, 3)).astype(np.float32)
    >>> err = np.abs(pywino3d.conv3d(x, w, tile=4) - conv3d_reference(x, w))
    >>> bool((err <= error_bound(x, w, 4, np.float32)).all())
    True
    """
    from pywino3d._core.geometry import parse_tile

    w = np.asarray(w)
    tile = parse_tile(tile)
    mag = winograd_magnitudes(x, w, tile, padding=padding)
    k = rounding_terms(tile, w.shape[2:], w.shape[1])
    return k * np.finfo(dtype).eps * mag


#: Per-axis typical-error factors of F(m, r) in the relative measure of
#: :func:`typical_error`, rows r = 1..7, columns m = 1..8: the cube root of
#: the largest ``||y - y_exact|| / (eps * ||term_scale||)`` per output
#: channel, less the summation part ``0.5 sqrt(nsum * r^3)`` and divided by
#: ``nsum ** 0.35``, measured for cubic tiles and kernels in float32 on
#: random normal data (C = 1, 8 and 67 input channels, 2 output channels,
#: 16 problems of 1 to 2m + r + 1 voxels a side per entry, padding 0..2;
#: ``r`` = 1 or ``m`` = 1 is exact, factor 1).  Rounded up to 0.05.
TYPICAL_AXIS = np.array([
    [1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00],
    [1.00, 1.20, 1.05, 2.55, 3.40, 4.30, 4.60, 16.4],
    [1.00, 1.05, 2.50, 2.75, 4.15, 4.35, 16.7, 38.9],
    [1.00, 2.45, 3.00, 4.30, 4.35, 19.35, 27.3, 32.55],
    [1.00, 3.45, 3.95, 4.30, 16.6, 27.25, 32.15, 44.0],
    [1.00, 4.05, 4.35, 15.8, 24.9, 36.25, 41.0, 211.5],
    [1.00, 4.60, 13.85, 29.15, 29.3, 45.0, 249.1, 595.1],
])

#: Safety factor of :func:`typical_error` over the measured envelope.
TYPICAL_SAFETY = 3.0

#: Extra factor for grad_x and grad_w (``adjoint=True``): the adjoint
#: transforms of the backward pass, measured on 600 random problems (tiles
#: 2..6 per axis, kernels 1..7, 1 to 67 channels, both dtypes), reach up to
#: 1.1 times the forward envelope times ``TYPICAL_SAFETY`` (forward: 0.5).
TYPICAL_ADJOINT = 3.0


def typical_error(tile, ksize, nsum, dtype, *, adjoint=False):
    """Relative error a correct Winograd convolution stays within, typically.

    ``SAFETY * eps * (prod_i TYPICAL_AXIS[r_i - 1, m_i - 1] * nsum ** 0.35
    + 0.5 * sqrt(nsum * prod_i r_i))``: the measured per-axis growth of
    F(m_i, r_i) (:data:`TYPICAL_AXIS`, float32, odd and even channel counts
    up to 67) times the slow growth of the transform error with the number
    of summed products, plus the error of a plain sum of ``nsum * taps``
    terms; ``SAFETY`` = :data:`TYPICAL_SAFETY` = 3 over the largest of the
    measured errors.  Compare it with
    ``||y - y_exact|| / ||term_scale(..., tile=tile)||`` per output channel
    and sample (:func:`check_typical`), for inputs that span the kernel on
    every axis: a volume narrower than the kernel (a lone voxel with a 5^3
    kernel) meets few taps while the rounding of the filter transform mixes
    all of them in, which the term scale does not count (hypothesis found
    15 times this value there, within :func:`error_bound`).  It is not a
    proof, unlike :func:`error_bound`,
    but it is tens to thousands of times tighter: at C = 67, float32,
    F(2^3, 3^3) gives 9e-6, F(4^3, 3^3) 4e-5 and F(6^3, 3^3) 1.4e-4 for
    sums of 67 products, while a kernel off by 0.3 % in one output channel
    is off by 3e-3 in that channel.

    Parameters
    ----------
    tile, ksize : int or 3 ints
        The tile m and kernel r per axis.
    nsum : int
        Products summed into one Winograd-domain value: input channels for
        y, output channels for grad_x, samples times tiles for grad_w.
    dtype : numpy dtype
        float32 or float64 (the constants scale with its epsilon).
    adjoint : bool
        For grad_x or grad_w: times :data:`TYPICAL_ADJOINT`.

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> from pywino3d.testing import typical_error
    >>> bool(typical_error(4, 3, 67, np.float32) < 1e-3 < typical_error(6, 5, 67, np.float32))
    True
    """
    tile = _triple(tile)
    ksize = _triple(ksize)
    if any(not 1 <= r <= TYPICAL_AXIS.shape[0] for r in ksize) or any(
            not 1 <= m <= TYPICAL_AXIS.shape[1] for m in tile):
        raise ValueError(f"typical_error: tile {tile} / kernel {ksize} outside m = 1..8, r = 1..7")
    nsum = max(1, int(nsum))
    growth = float(np.prod([TYPICAL_AXIS[r - 1, m - 1] for m, r in zip(tile, ksize)]))
    taps = int(np.prod(ksize))
    eps = float(np.finfo(dtype).eps)
    tol = TYPICAL_SAFETY * eps * (growth * nsum ** 0.35 + 0.5 * np.sqrt(nsum * taps))
    return tol * TYPICAL_ADJOINT if adjoint else tol


def _triple(v):
    if np.ndim(v) == 0:
        return (int(v),) * 3
    v = tuple(int(a) for a in v)
    if len(v) != 3:
        raise ValueError(f"expected an int or 3 ints, got {v}")
    return v


def term_scale(x, w, bias=None, *, padding=0, tile=None, grad_y=None):
    """Root-sum-square of the terms of each result, in float64: the scale
    that random rounding errors grow with (unlike ``|y|``, it does not
    vanish where the terms cancel).

    Without ``grad_y``: ``sqrt(conv(x^2, w^2) + bias^2)``, shaped like y;
    with ``tile``, each value is the largest over the outputs of its
    Winograd tile (a tile's outputs share its rounding errors: an output
    with few terms beside ones with many gets their error).  With
    ``grad_y``: ``(scale of grad_x, scale of grad_w)``, shaped like x and w.

    Examples
    --------
    >>> import numpy as np
    >>> from pywino3d.testing import term_scale
    >>> float(term_scale(np.ones((1, 1, 3, 3, 3)), np.ones((1, 1, 3, 3, 3)))[0, 0, 0, 0, 0])
    5.196152422706632
    >>> term_scale(np.ones((1, 1, 1, 1, 4)), np.ones((1, 1, 1, 1, 2)), padding=(0, 0, 1), tile=2)[0, 0, 0, 0]
    array([1.41421356, 1.41421356, 1.41421356, 1.41421356, 1.        ])
    """
    x2 = np.square(np.asarray(x, np.float64))
    w2 = np.square(np.asarray(w, np.float64))
    if grad_y is not None:
        gx2, gw2 = conv3d_backward_reference(np.square(np.asarray(grad_y, np.float64)), x2, w2, padding=padding)
        return np.sqrt(gx2), np.sqrt(gw2)
    b2 = None if bias is None else np.square(np.asarray(bias, np.float64))
    s = np.sqrt(conv3d_reference(x2, w2, b2, padding=padding))
    if tile is None:
        return s
    tile = _triple(tile)
    lead, sh = s.shape[:2], s.shape[2:]
    nt = [-(-n // m) for n, m in zip(sh, tile)]
    p = np.zeros(lead + tuple(n * m for n, m in zip(nt, tile)))
    p[:, :, :sh[0], :sh[1], :sh[2]] = s
    blocks = p.reshape(lead + (nt[0], tile[0], nt[1], tile[1], nt[2], tile[2]))
    p = np.broadcast_to(blocks.max(axis=(3, 5, 7), keepdims=True), blocks.shape).reshape(p.shape)
    return np.ascontiguousarray(p[:, :, :sh[0], :sh[1], :sh[2]])


def check_typical(actual, ref, scale, tol, what="result", min_points=1):
    """Assert ``||actual - ref|| <= tol * ||scale||`` over the last three
    axes, for every index of the leading ones (per sample and channel).

    ``tol`` is a typical (root-mean-square) error, which needs several
    values to average: with ``min_points`` > 1, blocks of fewer values are
    not checked (random inputs of one or two outputs per channel scatter
    around the typical error; the rigorous :func:`error_bound` still covers
    them).

    Raises
    ------
    AssertionError
        Naming the worst sample and channel and its ratio to ``tol``.

    Examples
    --------
    >>> import numpy as np
    >>> from pywino3d.testing import check_typical
    >>> ref = np.ones((1, 2, 2, 2, 2))
    >>> check_typical(ref + 1e-9, ref, ref, 1e-8)
    >>> bad = ref.copy(); bad[0, 1] *= 1.003
    >>> check_typical(bad, ref, ref, 1e-4)
    Traceback (most recent call last):
    ...
    AssertionError: result: error 3e-03 of the term scale at (0, 1), 30 times the typical error 1e-04
    """
    actual = np.asarray(actual, np.float64)
    ref = np.asarray(ref, np.float64)
    scale = np.asarray(scale, np.float64)
    if actual.shape != ref.shape or scale.shape != ref.shape:
        raise ValueError(f"check_typical: shapes {actual.shape}, {ref.shape}, {scale.shape} differ")
    err = np.sqrt(np.square(actual - ref).sum(axis=(-3, -2, -1)))
    norm = np.sqrt(np.square(scale).sum(axis=(-3, -2, -1)))
    ratio = np.where(err == 0, 0.0, err / np.where(norm == 0, 1e-300, norm))
    if math.prod(ref.shape[-3:]) < min_points:
        ratio = np.zeros_like(ratio)
    if ratio.size and not ratio.max() <= tol:
        at = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        raise AssertionError(f"{what}: error {ratio[at]:.0e} of the term scale at {tuple(int(i) for i in at)}, "
                             f"{ratio[at] / tol:.3g} times the typical error {tol:.0e}")


def local_max(a, size):
    """Maximum over a centred window of ``size`` (3 ints) on the last 3 axes.

    Examples
    --------
    >>> import numpy as np
    >>> from pywino3d.testing import local_max
    >>> a = np.zeros((1, 1, 1, 1, 5)); a[..., 2] = 1
    >>> local_max(a, (1, 1, 3))[0, 0, 0, 0]
    array([0., 1., 1., 1., 0.])
    """
    from numpy.lib.stride_tricks import sliding_window_view

    pads = [(0, 0)] * (a.ndim - 3) + [((s - 1) // 2, s - 1 - (s - 1) // 2) for s in size]
    ap = np.pad(a, pads)
    win = sliding_window_view(ap, tuple(size), axis=(-3, -2, -1))
    return win.max(axis=(-3, -2, -1))


# ---------------------------------------------------------------- strategies

def float_dtypes():
    """Strategy: np.float32 or np.float64.

    Examples
    --------
    >>> from hypothesis import find
    >>> from pywino3d.testing import float_dtypes
    >>> find(float_dtypes(), lambda v: True) is not None
    True
    """
    from hypothesis import strategies as st

    return st.sampled_from([np.float32, np.float64])


def kernel_sizes(values=(1, 2, 3, 5)):
    """Strategy: a 3-tuple of kernel extents drawn from ``values``.

    Examples
    --------
    >>> from hypothesis import find
    >>> from pywino3d.testing import kernel_sizes
    >>> find(kernel_sizes(), lambda v: True) is not None
    True
    """
    from hypothesis import strategies as st

    return st.tuples(*(st.sampled_from(values),) * 3)


def tiles(values=(2, 3, 4, 5, 6)):
    """Strategy: a tile, either one int or a 3-tuple.

    Examples
    --------
    >>> from hypothesis import find
    >>> from pywino3d.testing import tiles
    >>> find(tiles(), lambda v: True) is not None
    True
    """
    from hypothesis import strategies as st

    v = st.sampled_from(values)
    return st.one_of(v, st.tuples(v, v, v))


def paddings():
    """Strategy: an int, a 3-tuple, 'same' or 'valid'.

    Examples
    --------
    >>> from hypothesis import find
    >>> from pywino3d.testing import paddings
    >>> find(paddings(), lambda v: True) is not None
    True
    """
    from hypothesis import strategies as st

    p = st.integers(0, 2)
    return st.one_of(p, st.tuples(p, p, p), st.sampled_from(["same", "valid"]))


def conv_problems(tile=None, max_channels=8, max_batch=8, max_extent=9, kernels=(1, 2, 3, 5), wide=None):
    """Strategy: dicts with x, w, bias, padding, tile for a valid convolution.

    Parameters
    ----------
    tile : int or tuple, optional
        Fix the tile; otherwise drawn from :func:`tiles`.
    max_channels, max_batch, max_extent : int
        Largest C and K, N, and spatial extent past the smallest valid one.
    kernels : sequence of int
        Kernel extents drawn per axis.
    wide : int, optional
        Also draw, one time in four, problems with ``max_channels + 1`` to
        ``wide`` input and output channels (past the fused pipeline's 64:
        the blocked GEMM), on one sample of at most 3 voxels past the
        smallest extent and kernels of at most 3, which keeps the oracle
        cheap.

    Examples
    --------
    >>> from hypothesis import given, settings
    >>> from pywino3d.testing import conv_problems
    >>> @settings(max_examples=3)
    ... @given(conv_problems(tile=2))
    ... def check(prob):
    ...     assert prob["x"].shape[1] == prob["w"].shape[1]
    >>> check()
    """
    from hypothesis import strategies as st

    @st.composite
    def build(draw):
        dtype = draw(float_dtypes())
        is_wide = wide is not None and wide > max_channels and draw(st.integers(0, 3)) == 0
        ks = draw(kernel_sizes([r for r in kernels if r <= 3] or [1] if is_wide else kernels))
        pad = draw(paddings())
        pads = parse_padding(pad, ks)
        extent = min(max_extent, 3) if is_wide else max_extent
        spatial = tuple(
            draw(st.integers(max(1, r - p0 - p1), max(1, r - p0 - p1) + extent - 1))
            for r, (p0, p1) in zip(ks, pads)
        )
        N = 1 if is_wide else draw(st.integers(1, max_batch))
        if is_wide:
            C = draw(st.integers(max_channels + 1, wide))
            K = draw(st.integers(max_channels + 1, wide))
        else:
            C = draw(st.integers(1, max_channels))
            K = draw(st.integers(1, max_channels))
        t = tile if tile is not None else draw(tiles())
        seed = draw(st.integers(0, 2**32 - 1))
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((N, C, *spatial)).astype(dtype)
        w = rng.standard_normal((K, C, *ks)).astype(dtype)
        bias = rng.standard_normal(K).astype(dtype) if draw(st.booleans()) else None
        return dict(x=x, w=w, bias=bias, padding=pad, tile=t, seed=seed)

    return build()
