"""The fused cache-resident pipeline against the blocked one and the oracle.

Both pipelines run the same per-tile arithmetic in the same order (the
product sums over input channels from zero, in order), but in separately
compiled kernels: where GCC contracts a*b+c into an FMA can differ between
them (-ffp-contract=fast), so they are compared to rounding
(``same_to_rounding``, tolerance tied to the dtype).  What one compiled
kernel computes -- any thread count, block size or layout of x -- stays
bit for bit.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pywino3d
from pywino3d._backends.cpu._ext import _cpu
from pywino3d._backends.cpu import backend as _cpu_backend
from pywino3d._backends.cpu import common as _cpu_common
from pywino3d._core.geometry import make_geometry
from pywino3d.testing import (check_typical, conv3d_reference, conv_problems, error_bound, term_scale,
                               typical_error)

from conftest import same_to_rounding

#: Values of float32 in one SIMD vector of this build (8 with AVX2, 16 with
#: AVX-512 or -DWINO_FORCE_VBYTES=64): channel counts that are whole vectors.
LANES = _cpu.simd_lanes(np.float32)


def _run(pipeline, x, U, bias, ksize, tile, padding, kept, workers):
    g = make_geometry(x.shape, U.shape[1], ksize, padding, tile)
    return _cpu_backend.forward(g, x, U, bias, kept, workers, pipeline=pipeline)


def _kept(rng, npos, sparse):
    if not sparse:
        return np.arange(npos, dtype=np.int32)
    k = max(1, npos // 2)
    return np.sort(rng.choice(npos, k, replace=False)).astype(np.int32)


@settings(max_examples=40)
@given(prob=conv_problems(max_batch=2), sparse=st.booleans(), workers=st.sampled_from([1, 2, 3]),
       seed=st.integers(0, 2**16))
def test_fused_equals_blocked_to_rounding(prob, sparse, workers, seed):
    x, w, b = prob["x"], prob["w"], prob["bias"]
    tile = prob["tile"] if isinstance(prob["tile"], tuple) else (prob["tile"],) * 3
    ksize = w.shape[2:]
    U = pywino3d.filter_transform(w, tile)
    kept = _kept(np.random.default_rng(seed), U.shape[0], sparse)
    ref = _run("blocked", x, U, b, ksize, tile, prob["padding"], kept, 1)
    y = _run("fused", x, U, b, ksize, tile, prob["padding"], kept, workers)
    same_to_rounding(y, ref)
    assert _run("fused", x, U, b, ksize, tile, prob["padding"], kept, 1).tobytes() == y.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ksize,tile", [((3, 3, 3), (4, 4, 4)), ((1, 3, 3), (1, 4, 4)),
                                        ((3, 1, 1), (4, 1, 1)), ((5, 5, 5), (2, 2, 2)),
                                        ((3, 3, 3), (6, 6, 6)), ((3, 3, 3), (2, 3, 4))])
@pytest.mark.parametrize("C,K", [(1, 3), (8, 8), (13, 21), (32, 16)])
def test_fused_against_oracle(dtype, ksize, tile, C, K, rng):
    x = rng.standard_normal((2, C, 7, 10, 9)).astype(dtype)
    w = rng.standard_normal((K, C, *ksize)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    U = pywino3d.filter_transform(w, tile)
    kept = np.arange(U.shape[0], dtype=np.int32)
    pad = tuple(r // 2 for r in ksize)
    y = _run("fused", x, U, b, ksize, tile, pad, kept, 2)
    ref = conv3d_reference(x, w, b, padding=pad)
    bound = error_bound(x, w, tile, dtype, padding=pad) + np.finfo(dtype).eps * np.abs(b).reshape(1, -1, 1, 1, 1)
    assert np.all(np.abs(y - ref) <= bound)
    check_typical(y, ref, term_scale(x, w, b, padding=pad, tile=tile), typical_error(tile, ksize, C, dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("tile", [(2, 2, 2), (4, 4, 4), (3, 5, 8)])
def test_register_transposes_at_block_edges(dtype, tile, rng):
    """The channels-last copy and the output stores transpose whole VL x VL
    blocks in registers and copy the edges one value at a time: channel and
    width counts around the vector width (full blocks plus remainders), a
    strided x, with bias, equal to the blocked pipeline to rounding."""
    x = rng.standard_normal((1, 19, 5, 6, 21)).astype(dtype)
    w = rng.standard_normal((20, 19, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(20).astype(dtype)
    U = pywino3d.filter_transform(w, tile)
    kept = np.arange(U.shape[0], dtype=np.int32)
    first = _run("fused", x, U, b, (3, 3, 3), tile, 1, kept, 2)
    for xx in (x, x[:, :, :, :, ::-1], x[:, ::-1]):
        ref = _run("blocked", xx, U, b, (3, 3, 3), tile, 1, kept, 1)
        y = _run("fused", xx, U, b, (3, 3, 3), tile, 1, kept, 2)
        same_to_rounding(y, ref)
        same_to_rounding(_run("fused", xx, U, None, (3, 3, 3), tile, 1, kept, 1),
                         _run("blocked", xx, U, None, (3, 3, 3), tile, 1, kept, 1))
    np.testing.assert_array_equal(_run("fused", x, U, b, (3, 3, 3), tile, 1, kept, 1), first)  # threads


@pytest.mark.parametrize("C", [LANES, 5])
def test_channels_last_input_is_read_in_place_and_kept(C, rng, monkeypatch):
    """NDHWC strides (torch.channels_last_3d) give the same bits as NCDHW x,
    and the output follows the input's memory format.  A whole number of
    vectors of channels (this build's lane count) is read in place, with no
    copy; 5 channels are padded, so copied."""
    base = rng.standard_normal((2, 6, 7, 9, C)).astype(np.float32)
    x_cl = base.transpose(0, 4, 1, 2, 3)  # shape (N, C, D, H, W), channels-last strides
    x = np.ascontiguousarray(x_cl)
    w = rng.standard_normal((12, C, 3, 3, 3)).astype(np.float32)
    U = pywino3d.filter_transform(w, 4)
    kept = np.arange(U.shape[0], dtype=np.int32)
    ref = _run("blocked", x, U, None, (3, 3, 3), (4, 4, 4), 1, kept, 2)
    copies = []
    real = _cpu.to_channels_last
    monkeypatch.setattr(_cpu, "to_channels_last", lambda *a: copies.append(1) or real(*a))
    y = _run("fused", x_cl, U, None, (3, 3, 3), (4, 4, 4), 1, kept, 2)
    assert bool(copies) == (C % LANES != 0)
    same_to_rounding(y, ref)
    assert y.strides[1] == y.itemsize  # channels-last output for channels-last input
    y2 = _run("fused", x, U, None, (3, 3, 3), (4, 4, 4), 1, kept, 2)
    assert y2.flags.c_contiguous
    np.testing.assert_array_equal(y, y2)  # the fused kernel, from x in place or from its copy


def test_fused_block_size_does_not_change_bits(rng, monkeypatch):
    from pywino3d._backends.cpu.pipelines import fused as _cpu_fused

    x = rng.standard_normal((1, 16, 9, 11, 13)).astype(np.float32)
    w = rng.standard_normal((24, 16, 3, 3, 3)).astype(np.float32)
    U = pywino3d.filter_transform(w, 4)
    kept = np.arange(U.shape[0], dtype=np.int32)
    outs = []
    for tb in (1, 5, 6, 13, 64):
        monkeypatch.setattr(_cpu_fused, "tiles_per_block", lambda *a, tb=tb: tb)
        outs.append(_run("fused", x, U, None, (3, 3, 3), (4, 4, 4), 1, kept, 2))
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])


@pytest.mark.parametrize("layout", ["ncdhw", "channels_last"])
def test_a_batch_larger_than_the_kept_copy_runs_in_chunks_with_the_same_bits(layout, rng, monkeypatch):
    """Where the channels-last copy of the whole batch would exceed
    KEEP_COPY_BYTES, the samples are copied and convolved a few at a time
    (here 2, then 2, then 1) into the one output: same bits, with bias."""
    from pywino3d._backends.cpu.pipelines import fused as _cpu_fused

    C, K = 5, 12  # 5 channels: padded, so channels-last x is copied too
    x = rng.standard_normal((5, C, 7, 6, 9)).astype(np.float32)
    if layout == "channels_last":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 4, 1)).transpose(0, 4, 1, 2, 3)
    U = pywino3d.filter_transform(rng.standard_normal((K, C, 3, 3, 3)).astype(np.float32), 2)
    b = rng.standard_normal(K).astype(np.float32)
    kept = np.arange(U.shape[0], dtype=np.int32)
    whole = _run("fused", x, U, b, (3, 3, 3), (2, 2, 2), 1, kept, 2)
    CP = _cpu_fused.padded_channels(C, K, np.float32)[0]
    per_sample = 7 * 6 * 9 * CP * 4
    monkeypatch.setattr(_cpu_fused, "KEEP_COPY_BYTES", 2 * per_sample + 100)
    assert _cpu_fused.samples_per_copy(5, per_sample) == 2
    copies = []
    real = _cpu.to_channels_last
    monkeypatch.setattr(_cpu, "to_channels_last", lambda geom, x, xcl, n: copies.append(xcl.shape[0]) or
                        real(geom, x, xcl, n))
    chunked = _run("fused", x, U, b, (3, 3, 3), (2, 2, 2), 1, kept, 2)
    assert copies == [2, 2, 1]
    np.testing.assert_array_equal(chunked, whole)
    assert chunked.strides == whole.strides


def test_fused_does_not_mutate_inputs(rng):
    x = rng.standard_normal((1, 4, 6, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 4, 3, 3, 3)).astype(np.float32)
    U = pywino3d.filter_transform(w, 2)
    xs, Us = x.copy(), U.copy()
    for a in (x, U):
        a.flags.writeable = False
    _run("fused", x, U, None, (3, 3, 3), (2, 2, 2), 1, np.arange(64, dtype=np.int32), 2)
    np.testing.assert_array_equal(x, xs)
    np.testing.assert_array_equal(U, Us)


@pytest.mark.parametrize("density", [0.75, 0.9, 0.5])
def test_high_density_runs_dense_with_the_same_bits(density, rng):
    """Above DENSE_ABOVE the fused pipeline computes every position with the
    pruned ones' weights zero (cheaper than the kept-position loops there);
    the result is bit-equal to the blocked pipeline's sparse one, and the
    pruned positions' values of U (here NaN) are never read.  The dense
    cubic transforms are the constant code, which sums in another order than
    the sparse plans' run-time code: equal to rounding."""
    from pywino3d._backends.cpu.pipelines import fused as _cpu_fused

    x = rng.standard_normal((1, 8, 9, 10, 11)).astype(np.float32)
    w = rng.standard_normal((16, 8, 3, 3, 3)).astype(np.float32)
    U = pywino3d.filter_transform(w, 2)
    npos = U.shape[0]
    kept = np.sort(rng.choice(npos, int(density * npos), replace=False)).astype(np.int32)
    g = make_geometry(x.shape, 16, (3, 3, 3), 1, (2, 2, 2))
    dense = _cpu_fused.run_positions(g, kept).size == npos
    assert dense == (kept.size >= _cpu_fused.DENSE_ABOVE * npos)
    Un = U.copy()
    Un[np.setdiff1d(np.arange(npos), kept)] = np.nan
    ref = _run("blocked", x, U, None, (3, 3, 3), (2, 2, 2), 1, kept, 1)
    y = _run("fused", x, Un, None, (3, 3, 3), (2, 2, 2), 1, kept, 2)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, ref, rtol=0, atol=16 * np.finfo(np.float32).eps * np.abs(ref).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("K,C", [(5, 3), (16, 16), (20, 9)])
def test_packed_weights_are_the_transposed_kept_positions(dtype, K, C, rng):
    """_cpu_fused.pack_weights (C transpose into the workspace): the kept
    positions' (c, k) blocks, zero at positions run but not kept and in the
    channel padding, whatever the workspace held before; a source position
    past U is refused."""
    from pywino3d._backends.cpu._ext import _cpu
    from pywino3d._backends.cpu.pipelines import fused as _cpu_fused

    P = 27
    U = rng.standard_normal((P, K, C)).astype(dtype)
    run = np.arange(0, P, 2, dtype=np.int32)
    kept = run[::3]
    CP, KP = _cpu_fused.padded_channels(C, K, dtype)
    for nthreads in (1, 3):
        _cpu_common.workspace("fused_Up", run.size * CP * KP, dtype)[...] = np.nan
        Up = _cpu_fused.pack_weights(U, kept, CP, KP, run, nthreads)
        ref = np.zeros((run.size, CP, KP), dtype)
        ref[np.searchsorted(run, kept), :C, :K] = U[kept].transpose(0, 2, 1)
        np.testing.assert_array_equal(Up, ref)
    with pytest.raises(ValueError, match="past U"):
        _cpu.fused_pack(U, np.array([P], dtype=np.int64), np.empty((1, CP, KP), dtype), 1)


@pytest.mark.parametrize("tile", [2, 3, 4, 5, 6])
def test_interior_tiles_read_in_place_give_the_same_bits(tile, rng):
    """Tiles inside the volume of vector-aligned channels-last x (the
    workspace copy, or caller memory) run the constant expand straight from
    x; edge tiles, misaligned x and non-cubic plans gather a patch first.
    Both give the same bits (one compiled kernel), equal to the blocked
    pipeline's to rounding."""
    C, K = 16, 8
    x = rng.standard_normal((1, C, 14, 15, 16)).astype(np.float32)
    w = rng.standard_normal((K, C, 3, 3, 3)).astype(np.float32)
    U = pywino3d.filter_transform(w, tile)
    kept = np.arange(U.shape[0], dtype=np.int32)
    same_to_rounding(_run("blocked", x, U, None, (3, 3, 3), (tile,) * 3, 1, kept, 1),
                     ref := _run("fused", x, U, None, (3, 3, 3), (tile,) * 3, 1, kept, 2))
    flat = np.empty(x.size + 32, dtype=np.float32)
    for off in range(3):  # offset 0: aligned, read in place; 1, 2: misaligned, gathered
        start = (-flat.ctypes.data // 4) % 16 + off
        cl = flat[start:start + x.size].reshape(1, 14, 15, 16, C)
        cl[...] = x.transpose(0, 2, 3, 4, 1)
        y = _run("fused", cl.transpose(0, 4, 1, 2, 3), U, None, (3, 3, 3), (tile,) * 3, 1, kept, 2)
        np.testing.assert_array_equal(y, ref)


@pytest.mark.parametrize("tile", [2, 4])
def test_one_shot_weights_are_the_packed_form(tile, rng, monkeypatch):
    """One-shot conv3d on the fused pipeline, with channel counts that need no
    padding, transforms w with K and C swapped so that U's memory is the
    packed weights: no transpose runs, and y is bit-equal to filter_transform
    followed by winograd_conv3d.  Counts that need padding still pack."""
    from pywino3d._backends.cpu._ext import _cpu
    from pywino3d._backends.cpu.pipelines import fused as _cpu_fused

    vl = _cpu_fused.lanes(np.float32)
    for C, K, packs in ((vl, 2 * vl, False), (vl, vl + 3, True)):
        x = rng.standard_normal((1, C, 9, 10, 11)).astype(np.float32)
        w = rng.standard_normal((K, C, 3, 3, 3)).astype(np.float32)
        ref = pywino3d.winograd_conv3d(x, pywino3d.filter_transform(w, tile), kernel_size=3, tile=tile,
                                       padding=1, workers=2)
        calls = []
        real = _cpu.fused_pack
        monkeypatch.setattr(_cpu, "fused_pack", lambda *a: calls.append(1) or real(*a))
        y = pywino3d.conv3d(x, w, padding=1, tile=tile, workers=2)
        monkeypatch.setattr(_cpu, "fused_pack", real)
        np.testing.assert_array_equal(y, ref)
        assert bool(calls) == packs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("C,CP,shape", [
    (16, 16, (1, 16, 32, 67)),   # a 2.2 MB copy of whole vectors
    (72, 72, (2, 3, 5, 37)),     # more channels than one transpose batch
    (12, 16, (1, 4, 5, 19)),     # partial channel vector, padding lanes
    (16, 16, (1, 2, 3, 5)),      # narrower than a vector along w
])
def test_channels_last_copy(dtype, C, CP, shape):
    """_cpu.to_channels_last against NumPy's transpose, for contiguous and
    strided x: whole blocks, the edge columns and channels, the zero padding
    lanes, and thread counts."""
    from pywino3d._backends.cpu.common import c_geometry

    N, D, H, W = shape
    rng = np.random.default_rng(C + W)
    base = rng.standard_normal((N, C, D, H, 2 * W)).astype(dtype)
    for x in (np.ascontiguousarray(base[..., :W]), base[..., ::2]):
        g = make_geometry(x.shape, 4, (3, 3, 3), 1, (2, 2, 2))
        xs, geom = c_geometry(g, x)
        for workers in (1, 3):
            xcl = np.full((N, D, H, W, CP), np.nan, dtype)
            _cpu.to_channels_last(geom, xs, xcl, workers)
            np.testing.assert_array_equal(xcl[..., :C], x.transpose(0, 2, 3, 4, 1))
            assert (xcl[..., C:] == 0).all()
