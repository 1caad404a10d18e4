"""The direct convolution kernel (tile=1 on the CPU; src/cpu/direct.h)
against the float64 reference: kernel shapes, paddings, channel counts that
are not multiples of the SIMD lanes, input strides (NCDHW, channels-last,
sliced views), thread counts, slabs, pruned taps, float32 and float64."""
import contextlib

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import pywino3d
from pywino3d._backends.cpu.pipelines import direct as _cpu_direct
from pywino3d._backends.cpu._ext import _direct
from pywino3d.testing import conv3d_reference

TOL = {np.float32: 2e-5, np.float64: 1e-12}


def _layout(x, how):
    """x with the same values and other strides."""
    if how == "channels_last":
        return np.ascontiguousarray(x.transpose(0, 2, 3, 4, 1)).transpose(0, 4, 1, 2, 3)
    if how == "sliced":  # every other element along w of a wider array
        wide = np.zeros(x.shape[:4] + (2 * x.shape[4],), dtype=x.dtype)
        wide[..., ::2] = x
        return wide[..., ::2]
    return x


def _rel_err(y, ref):
    return np.abs(y - ref).max() / max(1.0, np.abs(ref).max())


@st.composite
def problems(draw):
    r = tuple(draw(st.integers(1, 5)) for _ in range(3))
    spatial = tuple(draw(st.integers(max(1, ri - 2), ri + 7)) for ri in r)
    pads = tuple(draw(st.integers(0, ri)) for ri in r)
    # keep the output non-empty
    pads = tuple(max(p, -(-(ri - s) // 2)) for p, ri, s in zip(pads, r, spatial))
    return dict(N=draw(st.integers(1, 2)), C=draw(st.integers(1, 7)), K=draw(st.integers(1, 37)),
                r=r, spatial=spatial, pads=pads,
                dtype=draw(st.sampled_from([np.float32, np.float64])),
                layout=draw(st.sampled_from(["ncdhw", "channels_last", "sliced"])),
                bias=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


@pytest.fixture(params=["channel_lanes", "position_lanes", "auto"])
def variant(request, monkeypatch):
    """Each kernel variant of src/cpu/direct.h, and the C side's choice."""
    monkeypatch.setattr(_cpu_direct, "VARIANT", request.param)
    return request.param


@contextlib.contextmanager
def pinned(variant):
    """Run the direct kernel as ``variant`` inside the block."""
    before, _cpu_direct.VARIANT = _cpu_direct.VARIANT, variant
    try:
        yield
    finally:
        _cpu_direct.VARIANT = before


@pytest.mark.parametrize("which", ["channel_lanes", "position_lanes", "auto"])
@given(p=problems())
def test_direct_matches_reference(which, p):
    with pinned(which):
        _check_direct(p)


def _check_direct(p):
    rng = np.random.default_rng(p["seed"])
    x = rng.standard_normal((p["N"], p["C"], *p["spatial"])).astype(p["dtype"])
    w = rng.standard_normal((p["K"], p["C"], *p["r"])).astype(p["dtype"])
    b = rng.standard_normal(p["K"]).astype(p["dtype"]) if p["bias"] else None
    xl = _layout(x, p["layout"])
    before = xl.copy()
    y = pywino3d.conv3d(xl, w, b, padding=p["pads"], tile=1, workers=2)
    ref = conv3d_reference(x, w, b, padding=p["pads"])
    assert y.shape == ref.shape and y.dtype == p["dtype"]
    assert _rel_err(y, ref) < TOL[p["dtype"]]
    np.testing.assert_array_equal(xl, before)  # input untouched
    # the layout changes only where values are read, not the arithmetic
    np.testing.assert_array_equal(pywino3d.conv3d(x, w, b, padding=p["pads"], tile=1, workers=1), y)


def test_variants_sum_in_the_same_order(monkeypatch):
    """Both variants sum each output over (c, i, j, l) from zero and add the
    bias last: the same bits, whichever runs (rows shorter and longer than a
    vector, K not a multiple of the channel block)."""
    rng = np.random.default_rng(11)
    for shape, K in (((1, 3, 5, 6, 29), 13), ((2, 5, 4, 3, 3), 6), ((1, 1, 9, 8, 64), 32)):
        for dtype in (np.float32, np.float64):
            x = rng.standard_normal(shape).astype(dtype)
            w = rng.standard_normal((K, shape[1], 3, 2, 3)).astype(dtype)
            b = rng.standard_normal(K).astype(dtype)
            ys = []
            for v in ("channel_lanes", "position_lanes"):
                monkeypatch.setattr(_cpu_direct, "VARIANT", v)
                ys.append(pywino3d.conv3d(x, w, b, padding=(1, 0, 2), tile=1, workers=2))
            np.testing.assert_array_equal(ys[0], ys[1])


def test_auto_variant_wastes_fewer_lanes():
    """``auto`` takes position lanes where a row padded to whole vectors is
    no longer than the flattened row with its rw - 1 padding columns."""
    vl = _direct.lanes(4)
    for Wo, rw in ((vl * 8, 3), (vl - 1, 3), (2, 3), (vl + 1, 3), (vl, 1)):
        g = pywino3d._core.geometry.make_geometry((1, 2, 3, 4, Wo + rw - 1), 4, (3, 3, rw), 0, (1, 1, 1))
        fields = g.c_fields((0, 0, 0, 0, 0))
        want = "position_lanes" if -(-Wo // vl) * vl <= Wo + rw - 1 else "channel_lanes"
        assert _direct.variant(fields, 4) == want, (Wo, rw)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("C,K", [(1, 32), (3, 17), (5, 1), (2, 48)])
def test_bit_identical_for_any_workers_and_slab(monkeypatch, variant, dtype, C, K):
    rng = np.random.default_rng(C * 100 + K)
    x = rng.standard_normal((2, C, 7, 9, 11)).astype(dtype)
    w = rng.standard_normal((K, C, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    ys = [pywino3d.conv3d(x, w, b, padding=1, tile=1, workers=n) for n in (1, 2, 3, 4)]
    # a workspace budget of a few KB splits the input into one-plane slabs
    monkeypatch.setenv("PYWINO3D_WORKSPACE_MB", "0.001")
    ys.append(pywino3d.conv3d(x, w, b, padding=1, tile=1, workers=3))
    for y in ys[1:]:
        np.testing.assert_array_equal(y, ys[0])
    assert _rel_err(ys[0], conv3d_reference(x, w, b, padding=1)) < TOL[dtype]


def test_slab_planes_and_scratch_queries():
    g = pywino3d._core.geometry.make_geometry((1, 4, 10, 6, 5), 8, (3, 3, 3), 1, (1, 1, 1))
    fields = g.c_fields((1200, 300, 30, 5, 1))
    plane = (6 + 2) * (16 + 2)  # rows padded for 16-lane vectors
    assert _direct.slab_planes(fields, 10**9) == 10  # everything fits: all output planes
    assert _direct.slab_planes(fields, 1) == 1  # never less than one plane
    nd = _direct.slab_planes(fields, 4 * plane * 6)  # room for 6 input planes: 4 output planes
    assert nd == 4
    assert _direct.scratch_len(fields, nd) == 4 * plane * (nd + 2)
    lanes = _direct.lanes(4)
    assert lanes in (4, 8, 16) and _direct.lanes(8) == lanes // 2
    assert _direct.packed_len(fields, 4) == -(-8 // lanes) * lanes * 4 * 27


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pruned_taps_equal_zeroed_weights(dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 3, 6, 7, 8)).astype(dtype)
    U = pywino3d.filter_transform(rng.standard_normal((20, 3, 3, 3, 3)).astype(dtype), 1)
    cols = np.array([0, 4, 5, 13, 26])
    y = pywino3d.winograd_conv3d(x, U, kernel_size=3, tile=1, padding=1, columns=cols)
    U0 = np.zeros_like(U)
    U0[cols] = U[cols]
    np.testing.assert_array_equal(y, pywino3d.winograd_conv3d(x, U0, kernel_size=3, tile=1, padding=1))


def test_tile_one_weights_are_the_spatial_weights():
    """F(1, r) has G = I: U[tap, k, c] = w[k, c, tap], which the direct kernel
    packs straight from U."""
    w = np.random.default_rng(4).standard_normal((5, 2, 3, 2, 4))
    U = pywino3d.filter_transform(w, 1)
    np.testing.assert_array_equal(U, w.reshape(5, 2, -1).transpose(2, 0, 1))


def test_first_layer_shape_and_tiny_volume():
    """The two regimes the kernel is for: one input channel on a volume, and
    a small volume with many channels (odd sizes, K not a lane multiple)."""
    rng = np.random.default_rng(5)
    for shape, K in (((1, 1, 12, 13, 14), 32), ((2, 40, 3, 4, 2), 45)):
        x = rng.standard_normal(shape).astype(np.float32)
        w = rng.standard_normal((K, shape[1], 3, 3, 3)).astype(np.float32)
        y = pywino3d.conv3d(x, w, padding=1, tile=1)
        assert _rel_err(y, conv3d_reference(x, w, padding=1)) < TOL[np.float32]


# ------------------------------------------------------------ im2col + GEMM
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["ncdhw", "channels_last", "sliced"])
def test_im2col_pipeline_matches_reference(dtype, layout):
    """The im2col pipeline (tile 1, the gathered GEMM of gemm.template.h
    summing each group of positions over its valid taps): an asymmetric
    kernel, a different padding per axis, two samples, bias, any input
    strides; agrees with the direct kernel to rounding and is bit-identical
    for any thread count."""
    from pywino3d._backends.cpu import backend as _cpu_backend

    rng = np.random.default_rng(21)
    x = rng.standard_normal((2, 5, 4, 6, 7)).astype(dtype)
    w = rng.standard_normal((9, 5, 3, 2, 3)).astype(dtype)
    b = rng.standard_normal(9).astype(dtype)
    pads = (1, 0, 2)
    xl = _layout(x, layout)
    with _cpu_backend.use_pipeline("im2col"):
        ys = [pywino3d.conv3d(xl, w, b, padding=pads, tile=1, workers=n) for n in (1, 2, 3)]
    ref = conv3d_reference(x, w, b, padding=pads)
    assert ys[0].shape == ref.shape
    assert _rel_err(ys[0], ref) < TOL[dtype]
    for y in ys[1:]:
        np.testing.assert_array_equal(y, ys[0])
    with _cpu_backend.use_pipeline("direct"):
        yd = pywino3d.conv3d(xl, w, b, padding=pads, tile=1)
    assert _rel_err(ys[0], yd) < TOL[dtype]


@pytest.mark.parametrize("split", list(itertools.product((False, True), repeat=3)))
def test_im2col_every_grouping_skips_padded_and_pruned_taps_exactly(split, monkeypatch):
    """Whichever axes the positions are grouped along (``_cpu_im2col.SPLIT``),
    the result is the convolution: padding wider than the kernel on one axis
    (positions with no valid tap), pruned taps (``columns``) left out of every
    group, a batch of three."""
    from pywino3d._backends.cpu import backend as _cpu_backend
    from pywino3d._backends.cpu.pipelines import im2col as _cpu_im2col

    monkeypatch.setattr(_cpu_im2col, "SPLIT", split)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4, 3, 5, 6))
    w = rng.standard_normal((6, 4, 3, 3, 2))
    pads = (3, 1, 0)
    kept = np.sort(rng.choice(18, 11, replace=False))
    U = pywino3d.filter_transform(w, 1)
    with _cpu_backend.use_pipeline("im2col"):
        y = pywino3d.winograd_conv3d(x, U, kernel_size=(3, 3, 2), tile=1, padding=pads)
        yk = pywino3d.winograd_conv3d(x, U, kernel_size=(3, 3, 2), tile=1, padding=pads, columns=kept)
    np.testing.assert_allclose(y, conv3d_reference(x, w, padding=pads), rtol=1e-12, atol=1e-12)
    wk = np.zeros_like(w).reshape(6, 4, 18)
    wk[:, :, kept] = w.reshape(6, 4, 18)[:, :, kept]
    np.testing.assert_allclose(yk, conv3d_reference(x, wk.reshape(w.shape), padding=pads), rtol=1e-12, atol=1e-12)


def test_im2col_splits_a_large_batch_to_stay_in_budget(monkeypatch):
    """A batch whose padded input and grouped output exceed the workspace
    budget runs a few samples per gathered GEMM: the same bits."""
    from pywino3d._backends.cpu import backend as _cpu_backend
    from pywino3d._backends.cpu.pipelines import im2col as _cpu_im2col
    from pywino3d._core.geometry import make_geometry

    rng = np.random.default_rng(6)
    x = rng.standard_normal((7, 16, 3, 4, 5)).astype(np.float32)
    w = rng.standard_normal((12, 16, 3, 3, 3)).astype(np.float32)
    with _cpu_backend.use_pipeline("im2col"):
        whole = pywino3d.conv3d(x, w, padding=1, tile=1)
        monkeypatch.setenv("PYWINO3D_WORKSPACE_MB", "0.1")
        g = make_geometry(x.shape, 12, (3, 3, 3), 1, (1, 1, 1))
        assert 1 < _cpu_im2col.samples_per_call(g, np.float32) < 7
        split = pywino3d.conv3d(x, w, padding=1, tile=1)
    np.testing.assert_array_equal(split, whole)
    assert _rel_err(whole, conv3d_reference(x, w, padding=1)) < TOL[np.float32]


def test_im2col_grouping_follows_the_valid_taps():
    """At 4^3 with padding 1 a corner position reads 8 of the 27 taps; the
    groups of any split cover every position once and each sums a superset
    of its positions' valid taps."""
    from pywino3d._backends.cpu.pipelines import im2col as _cpu_im2col
    from pywino3d._core.geometry import make_geometry

    g = make_geometry((1, 8, 4, 4, 4), 8, (3, 3, 3), 1, (1, 1, 1))
    kept = np.arange(27)
    cls, ranges = _cpu_im2col._axis_classes(4, 3, 4, 1)
    assert [ranges[c] for c in cls] == [(1, 3), (0, 3), (0, 3), (0, 2)]
    for split in itertools.product((False, True), repeat=3):
        seen = np.zeros((4, 4, 4), int)
        for taps, (od, oh, ow) in _cpu_im2col._grouping(g, kept, 8, split):
            seen[np.ix_(od, oh, ow)] += 1
            for d, h, w_ in itertools.product(od, oh, ow):
                valid = {(kd * 3 + kh) * 3 + kw for kd in range(3) for kh in range(3) for kw in range(3)
                         if 0 <= d + kd - 1 < 4 and 0 <= h + kh - 1 < 4 and 0 <= w_ + kw - 1 < 4}
                assert valid <= set(taps.tolist())
        assert (seen == 1).all()
    finest = _cpu_im2col._grouping(g, kept, 8, (True, True, True))
    assert sorted(len(t) for t, _ in finest)[0] == 8 and len(finest) == 27


def test_im2col_serves_large_weights_on_small_volumes_and_declines_the_rest():
    from pywino3d._backends.cpu import backend as _cpu_backend
    from pywino3d._backends.cpu.pipelines import im2col as _cpu_im2col
    from pywino3d._core.geometry import make_geometry

    g = make_geometry((1, 256, 4, 4, 4), 256, (3, 3, 3), 1, (1, 1, 1))
    all_taps = np.arange(27, dtype=np.int32)
    assert _cpu_backend.choose_pipeline(g, all_taps, np.float32).NAME == "im2col"
    assert _cpu_backend.choose_pipeline(g, all_taps[:5], np.float32).NAME == "im2col"  # pruned taps too
    g2 = make_geometry((1, 256, 4, 4, 4), 256, (3, 3, 3), 1, (2, 2, 2))
    assert "tile (1, 1, 1) only" in _cpu_im2col.supports(g2, np.arange(64, dtype=np.int32), np.float32)
    # a first layer goes to the direct kernel, which "auto" tries first
    g3 = make_geometry((1, 1, 16, 16, 16), 32, (3, 3, 3), 1, (1, 1, 1))
    assert _cpu_backend.choose_pipeline(g3, all_taps, np.float32).NAME == "direct"
    # so do many channels on a volume whose im2col terms exceed the workspace
    # budget (128 x 27 x 6272 floats: 87 MB > 48 MB)
    g4 = make_geometry((1, 128, 8, 28, 28), 128, (3, 3, 3), 1, (1, 1, 1))
    assert "workspace budget" in _cpu_im2col.supports(g4, all_taps, np.float32)
    assert _cpu_backend.choose_pipeline(g4, all_taps, np.float32).NAME == "direct"


def test_one_shot_tile_one_reads_w_through_a_read_only_view():
    """conv3d(tile=1) hands w to the kernels as a read-only view (no copy of
    the weights); the public filter_transform still returns a new array."""
    from pywino3d._backends.cpu import backend as _cpu_backend

    w = np.random.default_rng(22).standard_normal((4, 3, 3, 3, 3)).astype(np.float32)
    kept = np.arange(27, dtype=np.int32)
    U = _cpu_backend.conv_weights(w, (1, 1, 1), kept, 1)
    assert np.shares_memory(U, w) and not U.flags.writeable
    np.testing.assert_array_equal(U, pywino3d.filter_transform(w, 1))
    assert not np.shares_memory(pywino3d.filter_transform(w, 1), w)
    # other tiles are the filter transform's, written into the thread's reused
    # workspace where U fits the workspace budget
    k64 = np.arange(64, dtype=np.int32)
    U2 = _cpu_backend.conv_weights(w, (2, 2, 2), k64, 1)
    np.testing.assert_array_equal(U2, pywino3d.filter_transform(w, 2))
    assert np.shares_memory(U2, _cpu_backend.conv_weights(2 * w, (2, 2, 2), k64, 1))
    assert not np.shares_memory(pywino3d.filter_transform(w, 2), pywino3d.filter_transform(w, 2))


def test_one_shot_conv3d_reusing_its_workspace_stays_correct(monkeypatch):
    """Successive one-shot calls reuse one workspace U (different weights,
    tiles and dtypes in turn); past the workspace budget U is a fresh array."""
    rng = np.random.default_rng(23)
    x = rng.standard_normal((1, 3, 6, 7, 5))
    for tile, dtype, scale in ((2, np.float64, 1), (3, np.float64, -2), (2, np.float32, 3), (2, np.float64, 4)):
        w = scale * rng.standard_normal((4, 3, 3, 3, 3))
        y = pywino3d.conv3d(x.astype(dtype), w.astype(dtype), padding=1, tile=tile)
        assert _rel_err(y, conv3d_reference(x, w, padding=1)) < TOL[dtype]
    monkeypatch.setenv("PYWINO3D_WORKSPACE_MB", "0.001")
    from pywino3d._backends.cpu import backend as _cpu_backend

    U = _cpu_backend.conv_weights(w, (2, 2, 2), np.arange(64, dtype=np.int32), 1)
    assert not np.shares_memory(U, _cpu_backend.conv_weights(w, (2, 2, 2), np.arange(64, dtype=np.int32), 1))
