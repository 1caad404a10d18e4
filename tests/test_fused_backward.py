"""The fused backward pipeline against the blocked one and the oracle.

grad_x: both pipelines run the same per-tile arithmetic and the same
product order, and add the overlapping input patches into a voxel in the
same order when there are at most ceil(alpha / m) tiles along depth and
height; being separately compiled (GCC may form FMAs in one and not the
other), they are compared to rounding.  grad_U: different summation orders
over the tiles.  Both are checked against the oracle within the rigorous
bound and within the typical error (``typical_error``).
Whatever the case, the fused results never depend on the thread count
(bit for bit).  Block size and pruning change them by rounding only: the same
sums, but GCC may contract a*b+c into an FMA in one compiled instance of a
kernel and not in another (seen with GCC 13 on an Intel Xeon, AVX-512 and
AVX2 builds alike; -ffp-contract=off made them bit-equal; GCC 12 on the AMD
development machine contracts alike everywhere).  The block size depends on
the problem only, never on the thread count.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pywino3d
from pywino3d._backends.cpu._ext import _cpu
from pywino3d._backends.cpu import backend as _cpu_backend
from pywino3d._backends.cpu import common as _cpu_common
from pywino3d._backends.cpu.pipelines.fused import backward_pass as _fused_backward
from pywino3d._core.geometry import make_geometry
from conftest import same_to_rounding
from pywino3d.testing import (check_typical, conv3d_backward_reference, conv_problems, rounding_terms, term_scale,
                               typical_error, winograd_magnitudes)

#: Values of float32 in one SIMD vector of this build (8 or 16).
LANES = _cpu.simd_lanes(np.float32)


def _tile3(t):
    return t if isinstance(t, tuple) else (t,) * 3


def _problem(x, w, tile, padding, rng):
    ksize = w.shape[2:]
    g = make_geometry(x.shape, w.shape[0], ksize, padding, tile)
    U = pywino3d.filter_transform(w, tile)
    gy = rng.standard_normal((x.shape[0], w.shape[0], *g.out)).astype(x.dtype)
    return g, U, gy


def _run(pipeline, g, gy, x, U, kept, workers, **kw):
    return _cpu_backend.backward(g, gy, x, U, kept, workers, pipeline=pipeline, **kw)


def _kept(rng, npos, sparse):
    if not sparse:
        return np.arange(npos, dtype=np.int32)
    return np.sort(rng.choice(npos, max(1, npos // 2), replace=False)).astype(np.int32)


def _check_oracle(gx, gU, gy, x, w, tile, padding):
    """grad_x and the grad_w of grad_U within the rigorous rounding bound and
    within the typical error per sample and channel."""
    ks = w.shape[2:]
    rgx, rgw = conv3d_backward_reference(gy, x, w, padding=padding)
    _, mgx, mgw = winograd_magnitudes(x, w, tile, padding=padding, grad_y=gy)
    eps = np.finfo(x.dtype).eps
    gw = pywino3d.filter_transform_backward(gU, ks, tile)
    assert np.all(np.abs(gx - rgx) <= eps * rounding_terms(tile, ks, w.shape[0]) * mgx)
    nsum = gy.size // gy.shape[1] + 2 * sum(ks)
    assert np.all(np.abs(gw - rgw) <= eps * rounding_terms(tile, ks, nsum) * mgw)
    if all(n >= r for n, r in zip(x.shape[2:], ks)):  # x spans the kernel: the typical model holds
        sgx, sgw = term_scale(x, w, padding=padding, grad_y=gy)
        check_typical(gx, rgx, sgx, typical_error(tile, ks, w.shape[0], x.dtype, adjoint=True), "grad_x")
        check_typical(gw, rgw, sgw, typical_error(tile, ks, nsum, x.dtype, adjoint=True), "grad_w")


@settings(max_examples=25)
@given(prob=conv_problems(max_batch=2), sparse=st.booleans(), workers=st.sampled_from([2, 3]),
       seed=st.integers(0, 2**16))
def test_fused_backward_matches_oracle_and_threads(prob, sparse, workers, seed):
    x, w = prob["x"], prob["w"]
    tile = _tile3(prob["tile"])
    rng = np.random.default_rng(seed)
    g, U, gy = _problem(x, w, tile, prob["padding"], rng)
    kept = _kept(rng, U.shape[0], sparse)
    gx1, gU1 = _run("fused", g, gy, x, U, kept, 1)
    gxn, gUn = _run("fused", g, gy, x, U, kept, workers)
    assert gx1.tobytes() == gxn.tobytes() and gU1.tobytes() == gUn.tobytes()
    pruned = np.setdiff1d(np.arange(U.shape[0]), kept)
    assert not gU1[pruned].any()
    Um = np.zeros_like(U)
    Um[kept] = U[kept]
    if not sparse:
        _check_oracle(gx1, gU1, gy, x, w, tile, prob["padding"])
    else:  # pruning equals zeroing U there (same chunks, same summation order)
        gxd, gUd = _run("fused", g, gy, x, Um, np.arange(U.shape[0], dtype=np.int32), 2)
        same_to_rounding(gx1, gxd)
        same_to_rounding(gU1[kept], gUd[kept])
    gxb, gUb = _run("blocked", g, gy, x, U, kept, 1)
    same_to_rounding(gx1, gxb)
    same_to_rounding(gU1[kept], gUb[kept])


@pytest.mark.parametrize("dtype,ksize,tile,C,K", [
    (np.float32, (3, 3, 3), (4, 4, 4), 13, 21),
    (np.float64, (3, 3, 3), (4, 4, 4), 32, 16),
    (np.float32, (1, 3, 3), (1, 4, 4), 1, 3),
    (np.float64, (3, 1, 1), (4, 1, 1), 13, 21),
    (np.float64, (5, 5, 5), (2, 2, 2), 5, 7),
    (np.float32, (3, 3, 3), (6, 6, 6), 32, 16),
    (np.float64, (3, 3, 3), (2, 3, 4), 5, 7),
    (np.float32, (3, 3, 3), (1, 1, 1), 4, 6),
])
def test_fused_backward_against_oracle(dtype, ksize, tile, C, K, rng):
    """Including kernels longer than m + 1 (three or more colours per axis)
    and volumes with many tiles along every axis."""
    x = rng.standard_normal((2, C, 9, 13, 10)).astype(dtype)
    w = rng.standard_normal((K, C, *ksize)).astype(dtype)
    pad = tuple(r // 2 for r in ksize)
    g, U, gy = _problem(x, w, tile, pad, rng)
    kept = np.arange(U.shape[0], dtype=np.int32)
    gx, gU = _run("fused", g, gy, x, U, kept, 2)
    assert gx.dtype == gU.dtype == dtype and gx.shape == x.shape and gU.shape == U.shape
    _check_oracle(gx, gU, gy, x, w, tile, pad)
    gx3, gU3 = _run("fused", g, gy, x, U, kept, 3)
    assert gx3.tobytes() == gx.tobytes() and gU3.tobytes() == gU.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grad_x_equal_to_blocked_when_colours_follow_tile_order(dtype, rng):
    """At most 2 tiles along d and h (alpha <= 2m): the phases add each voxel's
    contributions in the blocked pipeline's tile order (the same sums in
    separately compiled kernels: equal to rounding)."""
    x = rng.standard_normal((2, 12, 8, 5, 23)).astype(dtype)
    w = rng.standard_normal((10, 12, 3, 3, 3)).astype(dtype)
    g, U, gy = _problem(x, w, (4, 4, 4), 1, rng)
    assert g.ntiles_axis[:2] == (2, 2) and g.ntiles_axis[2] > 2
    kept = np.arange(U.shape[0], dtype=np.int32)
    gxb, _ = _run("blocked", g, gy, x, U, kept, 2)
    gxf, _ = _run("fused", g, gy, x, U, kept, 2)
    same_to_rounding(gxf, gxb)


@pytest.mark.parametrize("C", [LANES, 5])
def test_channels_last_and_strided_inputs(C, rng):
    """NDHWC x (torch.channels_last_3d) and strided grad_y give the same bits;
    grad_x follows the memory format of x where x is read in place (a whole
    number of this build's vectors of channels), else it is NCDHW."""
    base = rng.standard_normal((2, 6, 7, 9, C)).astype(np.float32)
    x_cl = base.transpose(0, 4, 1, 2, 3)
    x = np.ascontiguousarray(x_cl)
    w = rng.standard_normal((12, C, 3, 3, 3)).astype(np.float32)
    g, U, gy = _problem(x, w, (4, 4, 4), 1, rng)
    kept = np.arange(U.shape[0], dtype=np.int32)
    gx, gU = _run("fused", g, gy, x, U, kept, 2)
    assert gx.flags.c_contiguous
    gx2, gU2 = _run("fused", g, gy, x_cl, U, kept, 2)
    np.testing.assert_array_equal(gx2, gx)
    np.testing.assert_array_equal(gU2, gU)
    assert (gx2.strides[1] == gx2.itemsize) == (C % LANES == 0)  # channels-last grad_x for channels-last x
    assert gx2.flags.c_contiguous == (C % LANES != 0)
    gy_cl = np.ascontiguousarray(gy.transpose(0, 2, 3, 4, 1)).transpose(0, 4, 1, 2, 3)
    gy_big = np.zeros(gy.shape[:4] + (2 * gy.shape[4],), gy.dtype)
    gy_big[..., ::2] = gy
    for gys in (gy_cl, gy_big[..., ::2]):
        gx3, gU3 = _run("fused", g, gys, x, U, kept, 3)
        np.testing.assert_array_equal(gx3, gx)
        np.testing.assert_array_equal(gU3, gU)


def test_one_gradient_at_a_time(rng):
    x = rng.standard_normal((1, 6, 9, 9, 9))
    w = rng.standard_normal((7, 6, 3, 3, 3))
    g, U, gy = _problem(x, w, (4, 4, 4), 1, rng)
    kept = np.arange(U.shape[0], dtype=np.int32)
    gx, gU = _run("fused", g, gy, x, U, kept, 2)
    gx_only, none_U = _run("fused", g, gy, x, U, kept, 2, need_U=False)
    none_x, gU_only = _run("fused", g, gy, x, U, kept, 2, need_x=False)
    assert none_U is None and none_x is None
    np.testing.assert_array_equal(gx_only, gx)
    np.testing.assert_array_equal(gU_only, gU)


def test_worker_count_does_not_change_bits_block_size_only_rounding(rng, monkeypatch):
    x = rng.standard_normal((2, 16, 9, 11, 13)).astype(np.float32)
    w = rng.standard_normal((24, 16, 3, 3, 3)).astype(np.float32)
    g, U, gy = _problem(x, w, (4, 4, 4), 1, rng)
    kept = np.arange(U.shape[0], dtype=np.int32)
    first = None
    for tb in (1, 5, 6, 13, 64):
        monkeypatch.setattr(_fused_backward, "tiles_per_block", lambda *a, tb=tb: tb)
        gx, gU = _run("fused", g, gy, x, U, kept, 1)
        for workers in (2, 3, 4):
            gxn, gUn = _run("fused", g, gy, x, U, kept, workers)
            assert gxn.tobytes() == gx.tobytes() and gUn.tobytes() == gU.tobytes()
        if first is None:
            first = gx, gU
        same_to_rounding(gx, first[0])
        same_to_rounding(gU, first[1])


def test_chunks_depend_on_the_problem_only():
    g = make_geometry((1, 32, 64, 64, 64), 32, (3, 3, 3), 1, (4, 4, 4))
    assert _fused_backward.num_chunks(g, 4) == 8
    small = make_geometry((1, 64, 16, 16, 16), 64, (3, 3, 3), 1, (6, 6, 6))
    assert _fused_backward.num_chunks(small, 4) == 2  # >= 2 so two threads share grad_U
    one_row = make_geometry((1, 4, 4, 4, 40), 4, (3, 3, 3), 1, (4, 4, 4))
    assert _fused_backward.num_chunks(one_row, 4) == 1
    assert _fused_backward.phases(small) == (2, 2)
    assert _fused_backward.phases(make_geometry((1, 4, 20, 20, 20), 4, (5, 5, 5), 2, (2, 2, 2))) == (3, 3)


def test_auto_and_bad_pipeline(rng):
    x = rng.standard_normal((1, 4, 6, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 4, 3, 3, 3)).astype(np.float32)
    g, U, gy = _problem(x, w, (2, 2, 2), 1, rng)
    kept = np.arange(U.shape[0], dtype=np.int32)
    assert _cpu_backend.choose_pipeline(g, kept, x.dtype).NAME == "fused"
    auto = _run("auto", g, gy, x, U, kept, 2)
    fused = _run("fused", g, gy, x, U, kept, 2)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(auto, fused))
    with pytest.raises(ValueError, match="pipeline"):
        _run("fast", g, gy, x, U, kept, 2)


def test_memory_error_is_clear(rng, monkeypatch):
    x = rng.standard_normal((1, 4, 6, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 4, 3, 3, 3)).astype(np.float32)
    g, U, gy = _problem(x, w, (2, 2, 2), 1, rng)
    monkeypatch.setattr(_cpu_common, "available_memory", lambda: 1000)
    with pytest.raises(MemoryError, match="fused backward"):
        _run("fused", g, gy, x, U, np.arange(U.shape[0], dtype=np.int32), 2)


def test_fused_backward_does_not_mutate_inputs(rng):
    x = rng.standard_normal((1, 4, 6, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 4, 3, 3, 3)).astype(np.float32)
    g, U, gy = _problem(x, w, (2, 2, 2), 1, rng)
    copies = [a.copy() for a in (x, U, gy)]
    for a in (x, U, gy):
        a.flags.writeable = False
    _run("fused", g, gy, x, U, np.arange(U.shape[0], dtype=np.int32), 2)
    for a, c in zip((x, U, gy), copies):
        np.testing.assert_array_equal(a, c)
