"""The product with the filter transform inside it (``src/cpu/product_w.template.h``):
one-shot ``conv3d`` on the blocked pipeline leaves U to the product, which must
give what ``filter_transform`` followed by the batched GEMM gives.  The same
sums in the same order, but in separately compiled code (GCC may contract
a*b+c into an FMA in one and not the other): equal to rounding, with a
tolerance tied to the dtype; bit for bit across thread counts."""
import numpy as np
import pytest

import pywino3d
from pywino3d._backends.cpu._ext import _cpu
from pywino3d._backends.cpu import backend as _cpu_backend
from pywino3d._backends.cpu.pipelines import blocked as _cpu_blocked
from pywino3d._backends.cpu.pipelines import fused as _cpu_fused
from pywino3d._backends.cpu.common import plan, scratch
from pywino3d._backends.cpu.filter import UnfilteredWeights
from pywino3d._core.geometry import make_geometry
from pywino3d.testing import conv3d_reference

from conftest import same_to_rounding


def _product_w(w, tile, kept, V, k0, kc, nthreads):
    K, C = w.shape[:2]
    nk, _, n = V.shape
    pl = plan("filter", tile, w.shape[2:], w.dtype, kept)
    M = np.full((nk, kc, n), np.nan, dtype=w.dtype)
    Vp = np.full(_cpu.product_w_packed_len(w.dtype, nk, C, n), np.nan, dtype=w.dtype)
    sc = np.zeros(_cpu.product_w_scratch_bytes(pl, nthreads), np.uint8)
    _cpu.product_w(w.reshape(K, C, -1), pl, V, k0, M, Vp, True, sc, nthreads)
    return M


@pytest.mark.parametrize("K, C, n, tile, dtype, kept, k0, kc, nthreads", [
    (40, 300, 37, (2, 2, 2), np.float32, None, 0, 40, 2),      # two KC slabs, ragged C and tiles
    (13, 17, 5, (3, 3, 3), np.float64, None, 0, 13, 3),         # double, rows < MR, odd threads
    (100, 260, 33, (4, 4, 4), np.float32, [0, 5, 7, 100, 124, 200, 215], 7, 50, 2),  # kept subset, a K chunk
    (9, 8, 16, (1, 2, 3), np.float32, None, 3, 6, 1),           # non-cubic tile
    (50, 24, 1, (2, 2, 2), np.float32, None, 0, 50, 4),         # one tile, more threads than row blocks
])
def test_product_w_equals_transform_then_gemm(K, C, n, tile, dtype, kept, k0, kc, nthreads):
    rng = np.random.default_rng(K * C + n)
    w = rng.standard_normal((K, C, 3, 3, 3)).astype(dtype)
    npos = int(np.prod([m + 2 for m in tile]))
    kept = np.arange(npos, dtype=np.int32) if kept is None else np.asarray(kept, np.int32)
    V = rng.standard_normal((kept.size, C, n)).astype(dtype)
    U = _cpu_backend.filter_transform(w, tile, kept, 2)
    ref = np.empty((kept.size, kc, n), dtype)
    _cpu.gemm_batched(U[:, k0:k0 + kc], V, ref, kept, None, accumulate=False,
                      scratch=scratch(_cpu.gemm_scratch_bytes(dtype, 2)), nthreads=2)
    got = _product_w(w, tile, kept, V, k0, kc, nthreads)
    same_to_rounding(got, ref)
    np.testing.assert_array_equal(_product_w(w, tile, kept, V, k0, kc, 1), got)  # any thread count


def test_product_w_checks_its_operands():
    w = np.zeros((4, 3, 27), np.float32)
    kept = np.arange(64, dtype=np.int32)
    pl = plan("filter", (2, 2, 2), (3, 3, 3), np.float32, kept)
    V = np.zeros((64, 3, 5), np.float32)
    M = np.zeros((64, 4, 5), np.float32)
    sc = np.zeros(_cpu.product_w_scratch_bytes(pl, 1), np.uint8)
    Vp = np.zeros(_cpu.product_w_packed_len(np.float32, 64, 3, 5), np.float32)
    with pytest.raises(ValueError, match="k0"):
        _cpu.product_w(w, pl, V, 1, M, Vp, True, sc, 1)
    with pytest.raises(ValueError, match="Vp"):
        _cpu.product_w(w, pl, V, 0, M, Vp[:10], True, sc, 1)
    with pytest.raises(ValueError, match="taps"):
        _cpu.product_w(np.zeros((4, 3, 8), np.float32), pl, V, 0, M, Vp, True, sc, 1)
    with pytest.raises(ValueError, match="scratch"):
        _cpu.product_w(w, pl, V, 0, M, Vp, True, sc[:8], 1)


def _in_product_fits(npos, dtype):
    """Whether a thread's slab of U (positions x KC x MR) fits
    ``IN_PRODUCT_SLAB_BYTES``, from the blocking this build compiled."""
    blk = _cpu.gemm_blocking(dtype)
    return npos * blk["kc"] * np.dtype(dtype).itemsize * blk["mr"] <= _cpu_blocked.IN_PRODUCT_SLAB_BYTES


@pytest.mark.parametrize("tile", [2, 3])
def test_one_shot_conv3d_leaves_the_filter_transform_to_the_product(tile, rng, monkeypatch):
    """A layer with more channels than the fused pipeline takes, on a small
    volume: conv_weights hands w itself to the blocked pipeline, and y is
    filter_transform + winograd_conv3d's to rounding, the same bits for any
    thread count.
    Whether F(3^3)'s slab fits depends on the build's MR (6 with 32-byte
    vectors: yes; 12 with 64-byte ones: no, and U is made first); F(2^3)'s
    fits in every build."""
    C = K = _cpu_fused.MAX_CHANNELS + 8
    x = rng.standard_normal((2, C, 5, 6, 4)).astype(np.float32)
    w = rng.standard_normal((K, C, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32)
    g = make_geometry(x.shape, K, (3, 3, 3), 1, (tile,) * 3)
    kept = np.arange(g.npos, dtype=np.int32)
    in_product = _in_product_fits(g.npos, w.dtype)
    assert in_product or tile != 2
    assert _cpu_blocked.transforms_in_product(g, kept, w.dtype) == in_product
    assert isinstance(_cpu_backend.conv_weights(w, (tile,) * 3, kept, 2, g), UnfilteredWeights) == in_product
    ref = pywino3d.winograd_conv3d(x, pywino3d.filter_transform(w, tile), bias=b, kernel_size=3, tile=tile, padding=1)
    calls = []
    real = _cpu.product_w
    monkeypatch.setattr(_cpu, "product_w", lambda *a: calls.append(1) or real(*a))
    ys = [pywino3d.conv3d(x, w, b, padding=1, tile=tile, workers=workers) for workers in (1, 2, 3)]
    same_to_rounding(ys[0], ref)
    for y in ys[1:]:
        np.testing.assert_array_equal(y, ys[0])
    assert len(calls) == (3 if in_product else 0)
    exact = conv3d_reference(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), padding=1)
    assert np.linalg.norm(ref - exact) / np.linalg.norm(exact) < 1e-5


def test_unfiltered_weights_are_transformed_for_any_other_pipeline(rng):
    """Forced onto another pipeline, the CPU backend makes U from the
    unfiltered weights first."""
    C = K = 8
    x = rng.standard_normal((1, C, 4, 4, 4)).astype(np.float32)
    w = rng.standard_normal((K, C, 3, 3, 3)).astype(np.float32)
    g = make_geometry(x.shape, K, (3, 3, 3), 1, (2, 2, 2))
    kept = np.arange(g.npos, dtype=np.int32)
    lazy = UnfilteredWeights(w, (2, 2, 2), kept)
    assert lazy.shape == (64, K, C) and lazy.dtype == np.float32
    with _cpu_backend.use_pipeline("fused"):
        y = _cpu_backend.forward(g, x, lazy, None, kept, 2)
    np.testing.assert_array_equal(y, pywino3d.winograd_conv3d(x, pywino3d.filter_transform(w, 2), kernel_size=3,
                                                              tile=2, padding=1))


def test_one_shot_u_past_the_budget_is_made_a_chunk_at_a_time(rng, monkeypatch):
    """Tiles in one block, U over the workspace budget and slabs too large
    for the product to transform: U is made one chunk of output channels at
    a time into reused memory (two chunks here), with the same bits."""
    mc = _cpu.gemm_blocking(np.float32)["mc"]  # the build's GEMM row block: 48 or 96
    C, K = _cpu_fused.MAX_CHANNELS + 8, mc + 8
    x = rng.standard_normal((1, C, 5, 6, 4)).astype(np.float32)
    w = rng.standard_normal((K, C, 3, 3, 3)).astype(np.float32)
    g = make_geometry(x.shape, K, (3, 3, 3), 1, (4, 4, 4))
    kept = np.arange(g.npos, dtype=np.int32)
    ref = pywino3d.winograd_conv3d(x, pywino3d.filter_transform(w, 4), kernel_size=3, tile=4, padding=1)
    assert not _cpu_blocked.takes_unfiltered(g, kept, w.dtype)  # U (3.5 or 6.5 MB) fits the default budget
    monkeypatch.setattr(_cpu_blocked, "workspace_budget", lambda: 2 << 20)
    assert _cpu_blocked.takes_unfiltered(g, kept, w.dtype) and not _cpu_blocked.transforms_in_product(g, kept, w.dtype)
    chunks = []
    real = _cpu.filter_expand
    monkeypatch.setattr(_cpu, "filter_expand", lambda w, KC, *a: chunks.append(KC // C) or real(w, KC, *a))
    for workers in (1, 2):
        np.testing.assert_array_equal(pywino3d.conv3d(x, w, padding=1, tile=4, workers=workers), ref)
    assert chunks == [mc, K - mc] * 2


@pytest.mark.parametrize("budget, in_product", [(None, True), (2 << 20, False)])
def test_one_shot_memory_check_counts_the_weights_buffers(rng, monkeypatch, budget, in_product):
    """The blocked pipeline's MemoryError counts what one-shot weights add
    (V packed for the in-product transform, or the chunk of U): memory that
    holds the output and the tile workspace but not those is refused before
    anything is allocated."""
    from pywino3d._backends.cpu import common as _cpu_common

    C = K = _cpu_fused.MAX_CHANNELS + 8
    x = rng.standard_normal((1, C, 5, 6, 4)).astype(np.float32)
    w = rng.standard_normal((K, C, 3, 3, 3)).astype(np.float32)
    tile = (2, 2, 2) if in_product else (4, 4, 4)
    if budget is not None:
        monkeypatch.setattr(_cpu_blocked, "workspace_budget", lambda: budget)
    g = make_geometry(x.shape, K, (3, 3, 3), 1, tile)
    kept = np.arange(g.npos, dtype=np.int32)
    assert _cpu_blocked.takes_unfiltered(g, kept, w.dtype)
    assert _cpu_blocked.transforms_in_product(g, kept, w.dtype) == in_product
    base = 4 * K * g.out[0] * g.out[1] * g.out[2] + _cpu_blocked.workspace_bytes(g, kept, w.dtype, 2)
    monkeypatch.setattr(_cpu_common, "available_memory", lambda: base + 64)
    with pytest.raises(MemoryError, match="tile workspace"):
        pywino3d.conv3d(x, w, padding=1, tile=tile[0], workers=2)
    monkeypatch.setattr(_cpu_common, "available_memory", lambda: 1 << 40)
    y = pywino3d.conv3d(x, w, padding=1, tile=tile[0], workers=2)
    ref = pywino3d.winograd_conv3d(x, pywino3d.filter_transform(w, tile[0]), kernel_size=3, tile=tile[0], padding=1)
    same_to_rounding(y, ref)
