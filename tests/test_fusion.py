"""Fused prologues and epilogues (issue 28) against the reference of
``pywino3d._core.fusion``: ``apply_epilogue(conv(apply_prologue(x)))``.

Every CPU pipeline is forced in turn (the fused one applies both maps in its
own loops, the others in a C pre-pass and post-pass); results are compared
with the float64 reference within a tolerance of the dtype, the statistics
with the moments of the values actually returned, and a call on 2 threads
with the same call on 1 thread bit for bit (statistics included).
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pywino3d
from pywino3d import Epilogue, Prologue
from pywino3d._backends.cpu import backend as _cpu_backend
from pywino3d._backends.cpu._ext import _cpu
from pywino3d._core.fusion import ACTIVATIONS, apply_epilogue, apply_prologue, moments
from pywino3d.testing import conv3d_reference

LANES = _cpu.simd_lanes(np.float32)
KINDS = sorted(ACTIVATIONS)


def _tol(dtype):
    return 2e-4 if dtype == np.float32 else 1e-10


def _close(actual, ref, dtype, scale=None):
    scale = max(1.0, float(np.abs(ref).max())) if scale is None else scale
    err = float(np.abs(actual.astype(np.float64) - ref).max()) if ref.size else 0.0
    assert err <= _tol(dtype) * scale, f"max error {err:.3g} > {_tol(dtype) * scale:.3g}"


def _check_stats(y, mean, var):
    """mean and var are the moments of the y returned (float64, accurate)."""
    rm, rv = moments(y)
    assert mean.dtype == var.dtype == np.float64 and mean.shape == var.shape == y.shape[:2]
    scale = max(1.0, float(np.abs(y).max()))
    np.testing.assert_allclose(mean, rm, rtol=0, atol=1e-11 * scale)
    np.testing.assert_allclose(var, rv, rtol=1e-9, atol=1e-11 * scale * scale)


def _maps(rng, N, C, K, out_shape, dtype, draw):
    """A random (prologue, epilogue) pair from the drawn options."""
    pro_kind, pro_act, epi_act, affine, res_mode, stats = draw
    pro = None
    if pro_kind != "none":
        shape = (N, C) if pro_kind == "per_sample" else (C,)
        alpha = rng.uniform(0.05, 0.5, C) if pro_act == "prelu" else None
        pro = Prologue(scale=rng.uniform(0.5, 1.5, shape), shift=rng.standard_normal(shape) * 0.3,
                       activation=pro_act, alpha=alpha)
    residual = rng.standard_normal(out_shape).astype(dtype) if res_mode != "none" else None
    alpha = rng.uniform(0.05, 0.5, K) if epi_act == "prelu" else None
    epi = Epilogue(scale=rng.uniform(0.5, 1.5, K) if affine else None,
                   shift=rng.standard_normal(K) * 0.3 if affine else None,
                   activation=epi_act, alpha=alpha, residual=residual, after_activation=res_mode == "after",
                   stats=stats)
    return pro, epi


def _reference(x, w, b, padding, pro, epi, kept=None, tile=None):
    xp = apply_prologue(x, pro).astype(np.float64)
    w64 = w.astype(np.float64)
    if kept is None:
        y = conv3d_reference(xp, w64, None if b is None else b.astype(np.float64), padding=padding)
    else:  # the column-sparse convolution: U zeroed at the pruned positions
        U = pywino3d.filter_transform(w64, tile)
        mask = np.ones(U.shape[0], bool)
        mask[kept] = False
        U[mask] = 0
        y = pywino3d.winograd_conv3d(xp, U, kernel_size=w.shape[2:], tile=tile, padding=padding,
                                     bias=None if b is None else b.astype(np.float64))
    epi64 = epi if epi is None or epi.residual is None else Epilogue(**{**epi.__dict__,
                                                                         "residual": epi.residual.astype(np.float64)})
    return apply_epilogue(y, epi64)


fusion_options = st.tuples(st.sampled_from(["none", "per_sample", "per_channel"]), st.sampled_from(KINDS),
                           st.sampled_from(KINDS), st.booleans(), st.sampled_from(["none", "before", "after"]),
                           st.booleans())


@settings(max_examples=30)
@given(pipeline=st.sampled_from(["fused", "blocked", "direct", "im2col"]), tile=st.integers(1, 6),
       C=st.sampled_from([1, 3, LANES, LANES + 3]), K=st.sampled_from([1, 5, 2 * LANES, 2 * LANES + 1]),
       spatial=st.tuples(st.integers(2, 9), st.integers(2, 9), st.integers(2, 9)), N=st.integers(1, 2),
       dtype=st.sampled_from([np.float32, np.float64]), bias=st.booleans(), sparse=st.booleans(),
       channels_last=st.booleans(), opts=fusion_options, seed=st.integers(0, 2**16))
def test_fused_maps_match_reference(pipeline, tile, C, K, spatial, N, dtype, bias, sparse, channels_last, opts,
                                    seed):
    rng = np.random.default_rng(seed)
    if pipeline in ("direct", "im2col"):
        tile, sparse = 1, False
    x = rng.standard_normal((N, C, *spatial)).astype(dtype)
    if channels_last:
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 4, 1)).transpose(0, 4, 1, 2, 3)
    w = (rng.standard_normal((K, C, 3, 3, 3)) / np.sqrt(27 * C)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype) if bias else None
    pro, epi = _maps(rng, N, C, K, (N, K, *spatial), dtype, opts)
    x0 = x.copy()
    res0 = None if epi.residual is None else epi.residual.copy()
    kept = None
    with _cpu_backend.use_pipeline(pipeline):
        if sparse and tile > 1:
            U = pywino3d.filter_transform(w, tile)
            kept = np.sort(rng.choice(U.shape[0], U.shape[0] // 2, replace=False))
            call = lambda workers: pywino3d.winograd_conv3d(x, U, kernel_size=3, tile=tile, padding=1, bias=b,
                                                            columns=kept, prologue=pro, epilogue=epi,
                                                            workers=workers)
        else:
            call = lambda workers: pywino3d.conv3d(x, w, b, padding=1, tile=tile, prologue=pro, epilogue=epi,
                                                   workers=workers)
        out1 = call(1)
        out2 = call(2)
    ref = _reference(x0, w, b, 1, pro, epi, kept, (tile,) * 3)
    if epi.stats:
        (y, mean, var), (y2, mean2, var2), (ry, _, _) = out1, out2, ref
        _check_stats(y, mean, var)
        assert mean.tobytes() == mean2.tobytes() and var.tobytes() == var2.tobytes()
    else:
        y, y2, ry = out1, out2, ref
    _close(y, ry, dtype)
    assert y.tobytes() == y2.tobytes() or np.array_equal(y, y2)  # layouts may differ: values bit for bit
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(x, x0)  # inputs never mutated
    if res0 is not None:
        np.testing.assert_array_equal(epi.residual, res0)


@pytest.mark.parametrize("pipeline", ["fused", "blocked"])
def test_stats_bit_identical_across_threads_many_tiles(pipeline):
    """Enough tiles that each of 1, 2 and 3 threads owns several blocks."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 8, 17, 18, 19)).astype(np.float32) + 3.0  # a mean far from 0
    w = (rng.standard_normal((16, 8, 3, 3, 3)) / 15).astype(np.float32)
    epi = Epilogue(activation="leaky_relu", stats=True)
    outs = []
    with _cpu_backend.use_pipeline(pipeline):
        for workers in (1, 2, 3):
            outs.append(pywino3d.conv3d(x, w, padding=1, tile=4, epilogue=epi, workers=workers))
    for y, m, v in outs[1:]:
        assert y.tobytes() == outs[0][0].tobytes()
        assert m.tobytes() == outs[0][1].tobytes() and v.tobytes() == outs[0][2].tobytes()
    _check_stats(*outs[0])


@settings(max_examples=20)
@given(act=st.sampled_from(KINDS), per_sample=st.booleans(), res_mode=st.sampled_from(["none", "before", "after"]),
       stats=st.booleans(), in_place=st.booleans(), dtype=st.sampled_from([np.float32, np.float64]),
       strided=st.booleans(), seed=st.integers(0, 2**16))
def test_channel_affine(act, per_sample, res_mode, stats, in_place, dtype, strided, seed):
    rng = np.random.default_rng(seed)
    N, C = 2, 3
    x = rng.standard_normal((N, C, 5, 6, 300 if seed % 5 == 0 else 7)).astype(dtype)  # rows past a chunk too
    if strided:
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 4, 1)).transpose(0, 4, 1, 2, 3)
    shape = (N, C) if per_sample else (C,)
    scale, shift = rng.uniform(0.5, 2, shape), rng.standard_normal(shape)
    alpha = rng.uniform(0.1, 0.4, C) if act == "prelu" else None
    residual = rng.standard_normal(x.shape).astype(dtype) if res_mode != "none" else None
    x0 = x.copy()
    sc = scale.reshape(N if per_sample else 1, C, 1, 1, 1)
    sh = shift.reshape(N if per_sample else 1, C, 1, 1, 1)
    t = x0.astype(np.float64) * sc.astype(dtype) + sh.astype(dtype)
    ref = apply_epilogue(t, Epilogue(activation=act, alpha=alpha, residual=residual,
                                     after_activation=res_mode == "after"))
    kw = dict(activation=act, alpha=alpha, residual=residual, after_activation=res_mode == "after", stats=stats)
    out = x if in_place else None
    r1 = pywino3d.channel_affine(x, scale, shift, out=out, workers=1, **kw)
    y = r1[0] if stats else r1
    if in_place:
        assert y is x
    else:
        np.testing.assert_array_equal(x, x0)
    _close(y, ref, dtype)
    if stats:
        _check_stats(y, r1[1], r1[2])
    r2 = pywino3d.channel_affine(x0, scale, shift, workers=2, **kw)
    y2 = r2[0] if stats else r2
    np.testing.assert_array_equal(y2, y)
    if stats:
        assert r2[1].tobytes() == r1[1].tobytes() and r2[2].tobytes() == r1[2].tobytes()


def test_prologue_forces_the_copy_of_channels_last_input(monkeypatch):
    """A channels-last x with whole vectors of channels is read in place by
    the fused pipeline; with a prologue it must go through the copy."""
    rng = np.random.default_rng(0)
    x = np.ascontiguousarray(rng.standard_normal((1, 6, 6, 6, LANES)).astype(np.float32)).transpose(0, 4, 1, 2, 3)
    w = rng.standard_normal((LANES, LANES, 3, 3, 3)).astype(np.float32)
    pro = Prologue(shift=np.ones(LANES), activation="relu")
    with _cpu_backend.use_pipeline("fused"):
        y = pywino3d.conv3d(x, w, padding=1, tile=2, prologue=pro)
    _close(y, _reference(x, w, None, 1, pro, None), np.float32)


def test_identity_maps_give_plain_bits():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 4, 7, 7, 7)).astype(np.float32)
    w = rng.standard_normal((5, 4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    for pipeline in ("fused", "blocked"):
        with _cpu_backend.use_pipeline(pipeline):
            plain = pywino3d.conv3d(x, w, b, padding=1, tile=3)
            fused = pywino3d.conv3d(x, w, b, padding=1, tile=3, prologue=Prologue(), epilogue=Epilogue())
        np.testing.assert_array_equal(plain, fused)


def test_trivial_problems_apply_the_epilogue():
    x = np.ones((1, 0, 4, 4, 4), np.float32)  # no input channel: y = bias
    w = np.ones((2, 0, 3, 3, 3), np.float32)
    b = np.array([-1.0, 2.0], np.float32)
    y, m, v = pywino3d.conv3d(x, w, b, padding=1, tile=2, epilogue=Epilogue(activation="relu", stats=True))
    np.testing.assert_array_equal(y[0, 0], 0)
    np.testing.assert_array_equal(y[0, 1], 2)
    np.testing.assert_array_equal(m, [[0, 2]])
    np.testing.assert_array_equal(v, [[0, 0]])


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(prologue=Prologue(scale=np.ones(5))), ValueError, r"prologue\.scale: expected shape \(4,\) or \(1, 4\)"),
    (dict(prologue=Prologue(shift=np.ones((2, 4)))), ValueError, r"prologue\.shift: expected shape"),
    (dict(prologue=Prologue(activation="gelu")), ValueError, r"prologue: activation must be one of"),
    (dict(prologue=Prologue(activation="leaky_relu", alpha=np.ones(4))), ValueError, r"alpha of 'leaky_relu' must"),
    (dict(prologue=Prologue(activation="prelu", alpha=np.ones(3))), ValueError, r"prologue\.alpha: expected shape"),
    (dict(prologue=Prologue(scale=np.array(["a"] * 4))), TypeError, r"prologue\.scale: expected a real numeric"),
    (dict(prologue=Prologue(activation=3)), TypeError, r"prologue\.activation: expected a str"),
    (dict(prologue="relu"), TypeError, r"prologue: expected a pywino3d\.Prologue"),
    (dict(epilogue=Epilogue(scale=np.ones((1, 3)))), ValueError, r"epilogue\.scale: expected shape \(3,\)"),
    (dict(epilogue=Epilogue(residual=np.ones((1, 3, 5, 5, 5), np.float32))), ValueError,
     r"epilogue\.residual: expected the output's shape \(1, 3, 6, 6, 6\)"),
    (dict(epilogue=Epilogue(residual=np.ones((1, 3, 6, 6, 6), np.float64))), TypeError,
     r"epilogue\.residual: dtype float64 does not match"),
    (dict(epilogue=Epilogue(stats=1)), TypeError, r"epilogue\.stats: expected a bool"),
    (dict(epilogue=Epilogue(activation="elu", alpha=float("nan"))), ValueError, r"alpha must be finite"),
    (dict(epilogue={"stats": True}), TypeError, r"epilogue: expected a pywino3d\.Epilogue"),
])
def test_bad_maps_are_named(kwargs, exc, match):
    x = np.ones((1, 4, 6, 6, 6), np.float32)
    w = np.ones((3, 4, 3, 3, 3), np.float32)
    with pytest.raises(exc, match=match):
        pywino3d.conv3d(x, w, padding=1, tile=2, **kwargs)


def test_channel_affine_bad_input():
    x = np.ones((1, 2, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"channel_affine\.scale: expected shape \(2,\) or \(1, 2\)"):
        pywino3d.channel_affine(x, np.ones(3))
    with pytest.raises(ValueError, match=r"x: expected a 5-D array"):
        pywino3d.channel_affine(x[0], np.ones(2))
    with pytest.raises(ValueError, match=r"out: expected x's shape"):
        pywino3d.channel_affine(x, out=np.empty((1, 2, 3, 3, 2), np.float32))
    with pytest.raises(TypeError, match=r"out: expected x's dtype float32"):
        pywino3d.channel_affine(x, out=np.empty(x.shape, np.float64))
    with pytest.raises(ValueError, match=r"out: overlaps x"):
        big = np.ones((1, 2, 3, 3, 4), np.float32)
        pywino3d.channel_affine(big[..., :3], out=big[..., 1:])
    with pytest.raises(TypeError, match=r"residual: dtype float64 does not match"):
        pywino3d.channel_affine(x, residual=np.ones(x.shape))
    ro = np.empty_like(x)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"out: is read-only"):
        pywino3d.channel_affine(x, out=ro)


def test_activation_codes_match_the_header():
    """The C codes (src/wino3d_fusion.h) are the table of _core.fusion."""
    from pathlib import Path
    import re
    header = (Path(__file__).resolve().parents[1] / "src" / "wino3d_fusion.h").read_text()
    codes = {m.group(1).lower(): int(m.group(2)) for m in re.finditer(r"#define WINO_ACT_(\w+) (\d+)", header)}
    codes.pop("count")
    assert codes == ACTIVATIONS


from conftest import CUDA_OK, CUDA_WHY, host, on  # noqa: E402


@pytest.mark.skipif(not CUDA_OK, reason=CUDA_WHY)
def test_cuda_backend_runs_the_reference_around_its_kernels():
    """CUDA: the maps of _core.fusion applied around the existing kernels;
    the same values as the CPU within float32 rounding."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 6, 7, 8)).astype(np.float32)
    w = (rng.standard_normal((4, 3, 3, 3, 3)) / 9).astype(np.float32)
    res = rng.standard_normal((2, 4, 6, 7, 8)).astype(np.float32)
    pro = Prologue(scale=rng.uniform(0.5, 1.5, (2, 3)), shift=rng.standard_normal(3), activation="elu")
    epi_cpu = Epilogue(scale=rng.uniform(0.5, 1.5, 4), activation="prelu", alpha=np.full(4, 0.2), residual=res,
                       stats=True)
    epi_gpu = Epilogue(**{**epi_cpu.__dict__, "residual": on("cuda", res)})
    y, m, v = pywino3d.conv3d(x, w, padding=1, tile=2, prologue=pro, epilogue=epi_cpu)
    yg, mg, vg = pywino3d.conv3d(on("cuda", x), w=on("cuda", w), padding=1, tile=2, prologue=pro, epilogue=epi_gpu)
    _close(host(yg), y.astype(np.float64), np.float32)
    np.testing.assert_allclose(host(mg), m, atol=1e-5)
    np.testing.assert_allclose(host(vg), v, rtol=1e-4)
    xg = on("cuda", x)
    out = pywino3d.channel_affine(xg, np.ones(3), np.zeros(3), activation="relu", out=xg)
    assert out is xg
    np.testing.assert_array_equal(host(xg), np.maximum(x, 0))


def test_fused_pipeline_in_sample_batches(monkeypatch):
    """A large batch is copied a few samples at a time: the per-sample
    prologue, the residual and the statistics follow the batches."""
    from pywino3d._backends.cpu.pipelines import fused as fused_pipeline

    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 5, 6, 7, 5)).astype(np.float32)
    w = (rng.standard_normal((6, 5, 3, 3, 3)) / 10).astype(np.float32)
    res = rng.standard_normal((3, 6, 6, 7, 5)).astype(np.float32)
    pro = Prologue(scale=rng.uniform(0.5, 1.5, (3, 5)), shift=rng.standard_normal((3, 5)), activation="silu")
    epi = Epilogue(shift=rng.standard_normal(6), residual=res, activation="relu", stats=True)
    with _cpu_backend.use_pipeline("fused"):
        whole = pywino3d.conv3d(x, w, padding=1, tile=3, prologue=pro, epilogue=epi)
        monkeypatch.setattr(fused_pipeline, "samples_per_copy", lambda N, per_sample: 1)
        batched = pywino3d.conv3d(x, w, padding=1, tile=3, prologue=pro, epilogue=epi)
    for a, b in zip(whole, batched):
        np.testing.assert_array_equal(a, b)
    _close(whole[0], _reference(x, w, None, 1, pro, epi)[0], np.float32)
    _check_stats(*batched)
