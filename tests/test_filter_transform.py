"""The filter transform and its adjoint, vectorized over (k, c) pairs
(src/cpu/filter.template.h).

What is checked, and why not bit-identity with the former scalar kernel:
the vector kernel runs the same per-tile template as the scalar one, lane by
lane, so each pair's result must not depend on its lane, its group or the
thread count (checked bit for bit here).  Against the former one-pair-a-job
scalar kernel the results were bit-identical for every float32 case with
3-wide kernels that was compared; elsewhere they differ by at most 2 units
in the last place of the sum of the absolute terms, because the compiler
contracts multiply-adds into FMAs differently in the scalar and the vector
instantiation of the template.  That is the bound checked against the float64
reference below (with the rounding of G to the working precision added).
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import pywino3d
from pywino3d import winograd_matrices


def _tile3(tile):
    return (tile,) * 3 if isinstance(tile, int) else tuple(tile)


def _reference(w, tile, absolute=False):
    """U in float64 (P, K, C) from float64 G; with absolute=True the sum of
    the absolute values of the terms (the scale of the rounding error)."""
    Gs = [winograd_matrices(m, r)[1] for m, r in zip(_tile3(tile), w.shape[2:])]
    a = w.astype(np.float64)
    if absolute:
        Gs, a = [np.abs(G) for G in Gs], np.abs(a)
    U = np.einsum("ai,bj,cl,xyijl->abcxy", *Gs, a)
    return U.reshape(-1, w.shape[0], w.shape[1])


@st.composite
def filters(draw):
    r = tuple(draw(st.integers(1, 5)) for _ in range(3))
    tile = tuple(draw(st.integers(1, 4)) for _ in range(3))
    K, C = draw(st.integers(1, 21)), draw(st.integers(1, 19))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    w = np.random.default_rng(draw(st.integers(0, 2**16))).standard_normal((K, C, *r)).astype(dtype)
    return w, tile


@given(filters())
def test_filter_transform_against_float64(case):
    w, tile = case
    U = pywino3d.filter_transform(w, tile, workers=2)
    err = np.abs(U - _reference(w, tile))
    scale = _reference(w, tile, absolute=True)
    # arithmetic (<= 2 ulp of the scale, see the module docstring) plus G
    # rounded to the working precision (entries like 1/6 in float32)
    eps = np.finfo(w.dtype).eps
    assert np.all(err <= 8 * eps * scale + np.finfo(w.dtype).tiny)


@given(filters())
def test_each_pair_is_independent_of_its_lane_group_and_threads(case):
    w, tile = case
    K, C = w.shape[:2]
    U = pywino3d.filter_transform(w, tile, workers=1)
    for n in (2, 3):
        np.testing.assert_array_equal(pywino3d.filter_transform(w, tile, workers=n), U)
    k, c = K // 2, C - 1
    np.testing.assert_array_equal(pywino3d.filter_transform(w[k:k + 1, c:c + 1], tile)[:, 0, 0], U[:, k, c])
    # the adjoint likewise
    gU = np.random.default_rng(K * C).standard_normal(U.shape).astype(w.dtype)
    gw = pywino3d.filter_transform_backward(gU, w.shape[2:], tile, workers=1)
    np.testing.assert_array_equal(pywino3d.filter_transform_backward(gU, w.shape[2:], tile, workers=3), gw)
    one = pywino3d.filter_transform_backward(np.ascontiguousarray(gU[:, k:k + 1, c:c + 1]), w.shape[2:], tile)
    np.testing.assert_array_equal(one[0, 0], gw[k, c])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("K,C,tile", [(64, 48, 4), (33, 70, 2), (7, 300, (1, 4, 4))])
def test_adjoint_identity_over_many_groups(dtype, K, C, tile):
    """<filter_transform(w), gU> == <w, filter_transform_backward(gU)> with
    K * C spanning many groups of pairs and a partial last group."""
    rng = np.random.default_rng(K + C)
    r = (3, 3, 3) if tile != (1, 4, 4) else (1, 3, 3)
    w = rng.standard_normal((K, C, *r)).astype(dtype)
    U = pywino3d.filter_transform(w, tile)
    gU = rng.standard_normal(U.shape).astype(dtype)
    gw = pywino3d.filter_transform_backward(gU, r, tile)
    lhs = np.vdot(U.astype(np.float64), gU.astype(np.float64))
    rhs = np.vdot(w.astype(np.float64), gw.astype(np.float64))
    tol = 1e-4 if dtype == np.float32 else 1e-12
    assert abs(lhs - rhs) <= tol * (np.abs(U).sum() * np.abs(gU).max())
    assert np.abs(U - _reference(w, tile)).max() <= 8 * np.finfo(dtype).eps * _reference(w, tile, True).max()


# ------------------------------------------------------------------ out=
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("tile", [1, 2, (2, 3, 4)])
def test_out_receives_the_same_u(dtype, tile):
    """filter_transform(w, tile, out=U) writes into U (whatever it held) and
    returns it: the same values as a fresh U, for any thread count."""
    w = np.random.default_rng(31).standard_normal((5, 3, 3, 2, 3)).astype(dtype)
    want = pywino3d.filter_transform(w, tile)
    out = np.full_like(want, np.nan)
    got = pywino3d.filter_transform(w, tile, out=out, workers=3)
    assert got is out
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_streamed_u_is_the_same_at_any_alignment(dtype):
    """A U of 2 MiB or more is written with streaming stores from the first
    16-byte boundary of each run (src/cpu/filter.template.h): the values are
    those of the small transforms of its rows, into an out= at any element
    offset (an unaligned head and tail) and for any thread count.  K * C is
    not a multiple of the vector width (a partial last group)."""
    K, C = 37, 29
    w = np.random.default_rng(5).standard_normal((K, C, 3, 3, 3)).astype(dtype)
    U = pywino3d.filter_transform(w, 6, workers=2)
    assert U.nbytes >= 2 << 20
    for k in (0, 18, K - 1):  # one row at a time: 0.1 MB, ordinary stores
        np.testing.assert_array_equal(pywino3d.filter_transform(w[k:k + 1], 6)[:, 0], U[:, k])
    for offset in range(4):
        buf = np.full(U.size + 4, np.nan, dtype)
        out = buf[offset:offset + U.size].reshape(U.shape)
        for workers in (1, 3):
            out[...] = np.nan
            assert pywino3d.filter_transform(w, 6, out=out, workers=workers) is out
            np.testing.assert_array_equal(out, U)
        assert np.isnan(buf[:offset]).all() and np.isnan(buf[offset + U.size:]).all()


def test_out_is_checked():
    w = np.ones((4, 2, 3, 3, 3), np.float32)
    U = pywino3d.filter_transform(w, 2)
    with pytest.raises(ValueError, match=r"out: expected shape \(64, 4, 2\)"):
        pywino3d.filter_transform(w, 2, out=np.empty((64, 2, 4), np.float32))
    with pytest.raises(TypeError, match="out: expected dtype float32"):
        pywino3d.filter_transform(w, 2, out=np.empty_like(U, dtype=np.float64))
    with pytest.raises(ValueError, match="out: must be C-contiguous"):
        pywino3d.filter_transform(w, 2, out=np.empty((2, 4, 64), np.float32).transpose(2, 1, 0))
    ro = np.empty_like(U)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out: is read-only"):
        pywino3d.filter_transform(w, 2, out=ro)
    with pytest.raises(TypeError, match="out: expected an array of the 'cpu' backend"):
        pywino3d.filter_transform(w, 2, out=U.tolist())
    big = np.zeros(64 * 4 * 2 + w.size, np.float32)  # w and out in one buffer
    w_in = big[:w.size].reshape(w.shape)
    w_in[...] = 1
    with pytest.raises(ValueError, match="out: overlaps w"):
        pywino3d.filter_transform(w_in, 2, out=big[w.size // 2:w.size // 2 + U.size].reshape(U.shape))
    np.testing.assert_array_equal(w_in, w)  # nothing written
