"""Property tests: every tile size m in 2..6 against the float64 oracle.

Each result is held to two bounds: the rigorous worst-case one
(``error_bound`` and its adjoints: never flaky, but loose for large tiles)
and the typical error (``typical_error``, per sample and channel: the
measured envelope times 3, which a kernel off by 0.3 % in one output
channel exceeds).  Kernels 1..7 per axis; one problem in four draws 65 to
72 channels (the blocked GEMM) on a tiny volume."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import pywino3d
from pywino3d.testing import (
    conv3d_backward_reference,
    conv3d_reference,
    conv_problems,
    check_typical,
    error_bound,
    rounding_terms,
    term_scale,
    typical_error,
    winograd_magnitudes,
)

from conftest import BACKENDS, host, on, same_to_rounding

#: Values per (sample, channel) the typical-error check needs to average over
#: (random draws of one or two outputs scatter around it; error_bound covers them).
TYPICAL_MIN_POINTS = 8

TILES = [2, 3, 4, 5, 6]
KERNELS = (1, 2, 3, 4, 5, 6, 7)
WIDE = 72  # past the fused pipeline's 64 channels: the blocked product


def _fills_kernel(x, w):
    """Whether x spans the kernel on every axis: where the typical-error
    model holds.  A volume narrower than the kernel (a lone voxel with a
    5x5x5 kernel) meets few taps, while the rounding of the filter transform
    mixes all of them into its outputs: only the worst-case bound covers
    that (hypothesis found one: 15x the typical error, within the bound)."""
    return all(s >= r for s, r in zip(x.shape[2:], w.shape[2:]))


def _tile_with(m, drawn):
    """Tile m, or a non-cubic one with m first where the draw is a tuple."""
    return (m,) + tuple(drawn[1:]) if isinstance(drawn, tuple) else m


def _frozen(*arrays):
    """Read-only copies: a kernel that writes to its input raises."""
    out = []
    for a in arrays:
        if a is None:
            out.append(None)
            continue
        a = a.copy()
        a.flags.writeable = False
        out.append(a)
    return out


def _within(actual, ref, bound):
    err = np.abs(actual.astype(np.float64) - ref)
    assert np.all(err <= bound), f"max err/bound = {(err / np.maximum(bound, 1e-300)).max():.3g}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("m", TILES)
@given(prob=conv_problems(kernels=KERNELS, wide=WIDE))
def test_forward_matches_oracle(backend, m, prob):
    x, w, b = prob["x"], prob["w"], prob["bias"]
    tile = _tile_with(m, prob["tile"])
    xs, ws, bs = _frozen(x, w, b)
    y = host(pywino3d.conv3d(on(backend, xs), on(backend, ws), on(backend, bs),
                             padding=prob["padding"], tile=tile))
    assert y.dtype == x.dtype
    ref = conv3d_reference(x, w, b, padding=prob["padding"])
    assert y.shape == ref.shape
    bound = error_bound(x, w, tile, x.dtype, padding=prob["padding"])
    if b is not None:
        bound = bound + np.finfo(x.dtype).eps * np.abs(b).reshape(1, -1, 1, 1, 1)
    _within(y, ref, bound)
    if _fills_kernel(x, w):
        check_typical(y, ref, term_scale(x, w, b, padding=prob["padding"], tile=tile),
                      typical_error(tile, w.shape[2:], x.shape[1], x.dtype), "y", min_points=TYPICAL_MIN_POINTS)
    np.testing.assert_array_equal(xs, x)
    np.testing.assert_array_equal(ws, w)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("m", TILES)
@given(prob=conv_problems(max_extent=7, max_channels=6, kernels=KERNELS, wide=WIDE), data=st.data())
def test_backward_matches_oracle(backend, m, prob, data):
    x, w, pad = prob["x"], prob["w"], prob["padding"]
    tile = _tile_with(m, prob["tile"])
    U = host(pywino3d.filter_transform(on(backend, w), tile))
    y = host(pywino3d.winograd_conv3d(on(backend, x), on(backend, U), kernel_size=w.shape[2:],
                                      tile=tile, padding=pad))
    rng = np.random.default_rng(prob["seed"])
    gy = rng.standard_normal(y.shape).astype(x.dtype)
    xs, Us, gys = _frozen(x, U, gy)
    gx, gU = pywino3d.winograd_conv3d_backward(on(backend, gys), on(backend, xs), on(backend, Us),
                                               kernel_size=w.shape[2:], tile=tile, padding=pad)
    gw = host(pywino3d.filter_transform_backward(gU, w.shape[2:], tile))
    gx, gU = host(gx), host(gU)
    rgx, rgw = conv3d_backward_reference(gy, x, w, padding=pad)
    _, mgx, mgw = winograd_magnitudes(x, w, tile, padding=pad, grad_y=gy)
    eps = np.finfo(x.dtype).eps
    ks = w.shape[2:]
    t3 = tile if isinstance(tile, tuple) else (m,) * 3
    nsum_w = y.size // y.shape[1] + 2 * sum(ks)
    _within(gx, rgx, eps * rounding_terms(t3, ks, y.shape[1]) * mgx)
    _within(gw, rgw, eps * rounding_terms(t3, ks, nsum_w) * mgw)
    if _fills_kernel(x, w):
        sgx, sgw = term_scale(x, w, padding=pad, grad_y=gy)
        check_typical(gx, rgx, sgx, typical_error(t3, ks, y.shape[1], x.dtype, adjoint=True), "grad_x",
                      min_points=TYPICAL_MIN_POINTS)
        check_typical(gw, rgw, sgw, typical_error(t3, ks, nsum_w, x.dtype, adjoint=True), "grad_w",
                      min_points=TYPICAL_MIN_POINTS)
    for a, b in ((xs, x), (Us, U), (gys, gy)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("m", TILES)
@given(prob=conv_problems(max_extent=6, max_channels=4, kernels=KERNELS, wide=WIDE), frac=st.floats(0.0, 1.0))
def test_sparse_equals_masked_dense(backend, m, prob, frac):
    """Skipping pruned positions computes what zeroing them computes.  Equal
    to rounding, not bit for bit: the kept-position kernels sum in another
    order than the dense ones, or GCC forms FMAs in one compiled kernel and not
    the other (seen with GCC 13 on an Intel Xeon and on an H100; GCC 12 on the
    AMD development machine agrees bit for bit).  One missing or extra
    column moves the result by about 1/sqrt(positions) >= 4 %, far above the
    tolerance."""
    x, w, pad, b = prob["x"], prob["w"], prob["padding"], prob["bias"]
    ks = w.shape[2:]
    m = _tile_with(m, prob["tile"])
    U = pywino3d.filter_transform(w, m)
    rng = np.random.default_rng(prob["seed"])
    P = U.shape[0]
    cols = rng.permutation(P)[: int(round(frac * P))]  # unsorted on purpose
    Um = np.zeros_like(U)
    Um[cols] = U[cols]
    xd, bd = on(backend, x), on(backend, b)
    ys = host(pywino3d.winograd_conv3d(xd, on(backend, U), kernel_size=ks, tile=m, padding=pad,
                                       bias=bd, columns=cols))
    yd = host(pywino3d.winograd_conv3d(xd, on(backend, Um), kernel_size=ks, tile=m, padding=pad, bias=bd))
    same_to_rounding(ys, yd)
    gy = on(backend, rng.standard_normal(ys.shape).astype(x.dtype))
    gxs, gUs = map(host, pywino3d.winograd_conv3d_backward(gy, xd, on(backend, U), kernel_size=ks,
                                                           tile=m, padding=pad, columns=cols))
    gxd, gUd = map(host, pywino3d.winograd_conv3d_backward(gy, xd, on(backend, Um), kernel_size=ks,
                                                           tile=m, padding=pad))
    pruned = np.setdiff1d(np.arange(P), cols)
    assert not gUs[pruned].any()
    same_to_rounding(gUs[cols], gUd[cols])
    same_to_rounding(gxs, gxd)


@pytest.mark.parametrize("m", TILES)
@given(prob=conv_problems(max_extent=8))
def test_workers_bit_identical(m, prob):
    x, w, pad = prob["x"], prob["w"], prob["padding"]
    y1 = pywino3d.conv3d(x, w, prob["bias"], padding=pad, tile=m, workers=1)
    y2 = pywino3d.conv3d(x, w, prob["bias"], padding=pad, tile=m, workers=2)
    assert y1.tobytes() == y2.tobytes()
    U = pywino3d.filter_transform(w, m)
    gy = np.ones_like(y1)
    r1 = pywino3d.winograd_conv3d_backward(gy, x, U, kernel_size=w.shape[2:], tile=m, padding=pad, workers=1)
    r2 = pywino3d.winograd_conv3d_backward(gy, x, U, kernel_size=w.shape[2:], tile=m, padding=pad, workers=2)
    assert r1[0].tobytes() == r2[0].tobytes() and r1[1].tobytes() == r2[1].tobytes()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("m", TILES)
@given(prob=conv_problems(max_extent=5, max_channels=3, max_batch=2))
def test_backward_finite_differences(backend, m, prob):
    """The forward is linear in x and U, so central differences are exact up
    to rounding: <gy, y(x + h dx) - y(x - h dx)> / 2h == <gx, dx>."""
    x = prob["x"].astype(np.float64)
    w = prob["w"].astype(np.float64)
    pad, ks = prob["padding"], w.shape[2:]
    U = pywino3d.filter_transform(w, m)
    rng = np.random.default_rng(prob["seed"])
    f = lambda xx, UU: host(pywino3d.winograd_conv3d(  # noqa: E731
        on(backend, xx), on(backend, UU), kernel_size=ks, tile=m, padding=pad))
    gy = rng.standard_normal(f(x, U).shape)
    gx, gU = map(host, pywino3d.winograd_conv3d_backward(on(backend, gy), on(backend, x), on(backend, U),
                                                         kernel_size=ks, tile=m, padding=pad))
    dx, dU = rng.standard_normal(x.shape), rng.standard_normal(U.shape)
    h = 1e-3
    fd_x = np.vdot(gy, f(x + h * dx, U) - f(x - h * dx, U)) / (2 * h)
    fd_U = np.vdot(gy, f(x, U + h * dU) - f(x, U - h * dU)) / (2 * h)
    np.testing.assert_allclose(fd_x, np.vdot(gx, dx), rtol=1e-6, atol=1e-8 * np.abs(gx).sum() * 10)
    np.testing.assert_allclose(fd_U, np.vdot(gU, dU), rtol=1e-6, atol=1e-8 * np.abs(gU).sum() * 10)
