"""Test helpers: a float64 direct-correlation oracle and hypothesis strategies.

The oracle functions need only NumPy.  The strategies import hypothesis when
called, so ``import pywino3d`` never needs it.
"""
from __future__ import annotations

import numpy as np

from ._geometry import parse_padding

__all__ = [
    "conv3d_reference",
    "conv3d_backward_reference",
    "error_bound",
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
#: and kernels, float32, 8 channels.  Rows r = 1..7, columns m = 1..8.
AXIS_ERROR = np.array([
    [1.10, 1.13, 1.22, 1.08, 1.08, 1.10, 1.14, 1.11],
    [1.00, 1.68, 1.19, 3.72, 8.22, 5.45, 6.02, 32.0],
    [1.00, 1.02, 2.23, 3.27, 5.38, 5.60, 18.6, 53.8],
    [1.00, 2.30, 3.10, 3.04, 5.54, 15.9, 35.9, 34.7],
    [1.00, 3.34, 2.95, 4.20, 20.8, 27.3, 27.6, 45.8],
    [1.00, 3.11, 3.30, 13.6, 43.5, 29.0, 40.4, 279.],
    [1.00, 3.11, 13.4, 25.9, 35.1, 38.4, 185., 666.],
])

#: Safety factor of the test bound over the measured growth.
ERROR_SAFETY = 8.0


def error_bound(x, w, tile, dtype, *, padding=0):
    """Elementwise rounding bound for ``conv3d(x, w, tile=tile)`` in ``dtype``.

    ``eps * (|x| star |w|) * (2 log2(2 n) + ERROR_SAFETY * prod_axes
    AXIS_ERROR[r - 1, m - 1])`` where ``|x| star |w|`` is the correlation of
    the absolute values (computed by the oracle), ``n = C * rd * rh * rw``
    the number of terms of one output and ``AXIS_ERROR`` the calibrated
    per-axis growth of the transforms (``docs/accuracy.md``).
    """
    from ._geometry import parse_tile

    w = np.asarray(w)
    ksize = w.shape[2:]
    growth = 1.0
    for m, r in zip(parse_tile(tile), ksize):
        growth *= AXIS_ERROR[r - 1, m - 1]
    eps = np.finfo(dtype).eps
    mag = conv3d_reference(np.abs(x), np.abs(w), padding=padding)
    # A Winograd output's error scales with its whole tile, not itself alone:
    # take the largest magnitude of any output that can share its tile.
    mag = local_max(mag, [2 * m - 1 for m in parse_tile(tile)])
    nterms = w.shape[1] * int(np.prod(ksize))
    return eps * (2 * np.log2(2 * nterms) + ERROR_SAFETY * growth) * mag


def local_max(a, size):
    """Maximum over a centred window of ``size`` (3 ints) on the last 3 axes."""
    from numpy.lib.stride_tricks import sliding_window_view

    pads = [(0, 0)] * (a.ndim - 3) + [((s - 1) // 2, s - 1 - (s - 1) // 2) for s in size]
    ap = np.pad(a, pads)
    win = sliding_window_view(ap, tuple(size), axis=(-3, -2, -1))
    return win.max(axis=(-3, -2, -1))


# ---------------------------------------------------------------- strategies

def float_dtypes():
    """Strategy: np.float32 or np.float64."""
    from hypothesis import strategies as st

    return st.sampled_from([np.float32, np.float64])


def kernel_sizes(values=(1, 2, 3, 5)):
    """Strategy: a 3-tuple of kernel extents drawn from ``values``."""
    from hypothesis import strategies as st

    return st.tuples(*(st.sampled_from(values),) * 3)


def tiles(values=(2, 3, 4, 5, 6)):
    """Strategy: a tile, either one int or a 3-tuple."""
    from hypothesis import strategies as st

    v = st.sampled_from(values)
    return st.one_of(v, st.tuples(v, v, v))


def paddings():
    """Strategy: an int, a 3-tuple, 'same' or 'valid'."""
    from hypothesis import strategies as st

    p = st.integers(0, 2)
    return st.one_of(p, st.tuples(p, p, p), st.sampled_from(["same", "valid"]))


def conv_problems(tile=None, max_channels=8, max_batch=3, max_extent=9, kernels=(1, 2, 3, 5)):
    """Strategy: dicts with x, w, bias, padding, tile for a valid convolution.

    Parameters
    ----------
    tile : int or tuple, optional
        Fix the tile; otherwise drawn from :func:`tiles`.
    """
    from hypothesis import strategies as st

    @st.composite
    def build(draw):
        dtype = draw(float_dtypes())
        ks = draw(kernel_sizes(kernels))
        pad = draw(paddings())
        pads = parse_padding(pad, ks)
        spatial = tuple(
            draw(st.integers(max(1, r - p0 - p1), max(1, r - p0 - p1) + max_extent - 1))
            for r, (p0, p1) in zip(ks, pads)
        )
        N = draw(st.integers(1, max_batch))
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
