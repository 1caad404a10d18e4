"""Kernel-level tests of the CPU extension's building blocks: the geometry
struct, the compile-time facts it exports, the GEMM against numpy.matmul,
the transforms' adjointness, the scratch-size queries against what the
kernels touch, and the agreement of every registered CPU pipeline."""
import threading
import types

import numpy as np
import pytest

from pywino3d._backends.cpu._ext import _cpu
from pywino3d._backends.cpu import backend as _cpu_backend
from pywino3d._backends.cpu import common as _cpu_common
from pywino3d._core.geometry import GEOM_DTYPE, geom_record, make_geometry, parse_tile
from pywino3d.testing import check_typical, term_scale, typical_error, winograd_reference


def _geometry():
    return make_geometry((2, 3, 5, 6, 7), 4, (3, 2, 1), (1, 0, 2), (4, 2, 3))


def test_geom_struct_layout_matches_numpy_record():
    """The C struct, the Cython wrapper and the NumPy record the CUDA kernels
    receive by value agree field by field (name, offset, size)."""
    layout = _cpu.geom_layout()
    assert layout.pop("sizeof") == GEOM_DTYPE.itemsize
    assert list(layout) == list(GEOM_DTYPE.names)
    for name, off in layout.items():
        assert GEOM_DTYPE.fields[name][1] == off, name


def test_geom_filled_by_name():
    g = _geometry()
    fields = g.c_fields((630, 210, 42, 7, 1))
    back = _cpu.CGeom(fields).fields()
    rec = geom_record(fields)
    for name in GEOM_DTYPE.names:
        want = np.atleast_1d(fields[name]).tolist()
        assert np.atleast_1d(back[name]).tolist() == want, name
        assert np.atleast_1d(rec[name]).tolist() == want, name
    assert back["K"] == 4 and back["pad"] == [1, 0, 2] and back["a"] == [6, 3, 3]
    assert back["nt"] == list(g.ntiles_axis)


def test_geom_rejects_missing_field():
    fields = _geometry().c_fields((630, 210, 42, 7, 1))
    del fields["nt"]
    with pytest.raises((KeyError, ValueError)):
        _cpu.CGeom(fields)
    with pytest.raises((KeyError, ValueError)):
        geom_record(fields)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_build_facts(dtype):
    vbytes = _cpu.simd_bytes()
    assert vbytes in (32, 64)
    b = _cpu.gemm_blocking(dtype)
    lanes = vbytes // np.dtype(dtype).itemsize
    assert b["nr"] == 2 * lanes
    assert b["mc"] % b["mr"] == 0 and b["nc"] % b["nr"] == 0 and b["kc"] > 0


# ------------------------------------------------------------------- GEMM
def _scratch_for_gemm(dtype, nthreads):
    return np.empty(_cpu.gemm_scratch_bytes(dtype, nthreads), np.uint8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("nthreads", [1, 3])
def test_gemm_matches_matmul_on_strided_and_indexed_operands(rng, dtype, nthreads):
    """C[c(b)] (+)= A[a(b)] @ B[b] with A gathered by an index and read
    through a transposed view, B a transposed slice, C indexed; shapes cross
    the micro-tile and panel edges (MR, NR, KC)."""
    blk = _cpu.gemm_blocking(dtype)
    M, N, K = blk["mr"] * 2 + 3, blk["nr"] * 2 + 5, blk["kc"] + 7
    nb, P = 4, 6
    At = rng.standard_normal((P, K, M)).astype(dtype)
    A = At.transpose(0, 2, 1)  # (P, M, K), column-major matrices
    Bt = rng.standard_normal((nb, N + 3, K)).astype(dtype)
    B = Bt[:, 2:N + 2, :].transpose(0, 2, 1)  # (nb, K, N), strided
    a_index = np.array([5, 0, 5, 2], np.int32)  # repeats are fine for A
    c_index = np.array([3, 1, 0, 4], np.int32)
    C0 = rng.standard_normal((5, M, N)).astype(dtype)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)
    for accumulate in (False, True):
        C = C0.copy()
        _cpu.gemm_batched(A, B, C, a_index, c_index, accumulate=accumulate,
                          scratch=_scratch_for_gemm(dtype, nthreads), nthreads=nthreads)
        want = C0.copy()
        prod = np.matmul(A[a_index].astype(np.float64), B.astype(np.float64))
        want[c_index] = prod + (C0[c_index] if accumulate else 0)
        np.testing.assert_allclose(C, want, **tol)
        untouched = np.setdiff1d(np.arange(5), c_index)
        np.testing.assert_array_equal(C[untouched], C0[untouched])


def test_gemm_without_indices_and_same_bits_for_any_thread_count(rng):
    A = rng.standard_normal((3, 37, 300)).astype(np.float32)
    B = rng.standard_normal((3, 300, 70)).astype(np.float32)
    outs = []
    for nthreads in (1, 2, 4):
        C = np.empty((3, 37, 70), np.float32)
        _cpu.gemm_batched(A, B, C, scratch=_scratch_for_gemm(np.float32, nthreads), nthreads=nthreads)
        outs.append(C)
    np.testing.assert_allclose(outs[0], np.matmul(A.astype(np.float64), B), rtol=1e-4, atol=1e-4)
    for C in outs[1:]:
        np.testing.assert_array_equal(C, outs[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M,N,K", [(37, 70, 300), (13, 9, 40), (130, 5, 70)])
def test_gemm_reads_a_in_place_or_packed_to_the_same_bits(rng, dtype, M, N, K):
    """A with contiguous rows is read in place when it is large or when B has
    a single column panel (gemm.h: WINO_GEMM_INPLACE_BYTES); a column-major A
    is always packed.  Both run the same FMAs in the same order: the same
    bits, edge rows (M not a multiple of MR) and edge columns included."""
    A = rng.standard_normal((2, M, K)).astype(dtype)
    A_colmajor = np.ascontiguousarray(A.transpose(0, 2, 1)).transpose(0, 2, 1)
    B = rng.standard_normal((2, K, N)).astype(dtype)
    outs = []
    for a in (A, A_colmajor):
        C = np.empty((2, M, N), dtype)
        _cpu.gemm_batched(a, B, C, scratch=_scratch_for_gemm(dtype, 2), nthreads=2)
        outs.append(C)
    np.testing.assert_array_equal(outs[0], outs[1])
    tol = 1e-4 if dtype == np.float32 else 1e-11
    np.testing.assert_allclose(outs[0], np.matmul(A.astype(np.float64), B), rtol=tol, atol=tol)


def test_gemm_rejects_bad_operands(rng):
    A = np.ones((2, 3, 4))
    B = np.ones((2, 4, 5))
    sc = _scratch_for_gemm(np.float64, 1)
    with pytest.raises(ValueError, match="chain"):
        _cpu.gemm_batched(A, np.ones((2, 3, 5)), np.empty((2, 3, 5)), scratch=sc, nthreads=1)
    with pytest.raises(ValueError, match="a_index"):
        _cpu.gemm_batched(A, B, np.empty((2, 3, 5)), np.array([0, 2], np.int32), scratch=sc, nthreads=1)
    with pytest.raises(ValueError, match="contiguous"):
        _cpu.gemm_batched(A, B, np.empty((2, 5, 3)).transpose(0, 2, 1), scratch=sc, nthreads=1)
    with pytest.raises(ValueError, match="scratch"):
        _cpu.gemm_batched(A, B, np.empty((2, 3, 5)), scratch=sc[:-1], nthreads=1)
    with pytest.raises((TypeError, ValueError)):  # mixed dtypes never reach the kernel
        _cpu.gemm_batched(A.astype(np.float32), B, np.empty((2, 3, 5)), scratch=sc, nthreads=1)


def _gathered_scratch(dtype):
    return np.empty(_cpu.gemm_gathered_scratch_bytes(dtype), np.uint8)


def _gathered_reference(A, groups, B, C):
    """What wino_gemm_gathered computes, in float64."""
    ref = C.astype(np.float64)
    for acol, brow, bcol, c0 in groups:
        if len(bcol):
            ref[:, c0:c0 + len(bcol)] = (A[:, acol].astype(np.float64) @ B[brow[:, None] + bcol[None, :]]
                                         if len(acol) else 0)
    return ref


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M,KA", [(13, 600), (40, 700), (1, 5)])
def test_gemm_gathered_matches_its_definition(rng, dtype, M, KA):
    """The gathered GEMM: random term subsets (across the KC block edges),
    random B offsets, groups of 0 to 40 columns (edge panels) and a group
    with no terms (its columns become zero); columns outside every group
    are left alone; the same bits for any thread count."""
    A = rng.standard_normal((M, KA)).astype(dtype)
    B = rng.standard_normal(5000).astype(dtype)
    groups, c0 = [], 2
    for K, N in ((min(KA, 300), 17), (0, 5), (min(KA, 3), 40), (min(KA, 280), 1), (KA, 0), (KA, 16)):
        acol = np.sort(rng.choice(KA, K, replace=False)).astype(np.int64)
        groups.append((acol, rng.integers(0, 2500, K), rng.integers(0, 2500, N), c0))
        c0 += N + 1
    C0 = np.full((M, c0 + 3), 7, dtype)
    outs = []
    for nthreads in (1, 2, 3):
        C = C0.copy()
        _cpu.gemm_gathered(A, groups, B, C, scratch=_gathered_scratch(dtype), nthreads=nthreads)
        outs.append(C)
    ref = _gathered_reference(A, groups, B, C0)
    tol = 1e-4 if dtype == np.float32 else 1e-11
    np.testing.assert_allclose(outs[0], ref, rtol=tol, atol=tol * np.abs(ref).max())
    for C in outs[1:]:
        np.testing.assert_array_equal(C, outs[0])


def test_gemm_gathered_rejects_offsets_outside_its_arrays():
    A, B, C = np.ones((4, 10)), np.ones(20), np.zeros((4, 6))
    sc = _gathered_scratch(np.float64)
    i = lambda *v: np.array(v, dtype=np.int64)  # noqa: E731
    _cpu.gemm_gathered(A, [(i(0, 9), i(0, 10), i(0, 9), 0)], B, C, scratch=sc, nthreads=1)  # B[19]: fine
    for bad in ([(i(0, 1), i(0, 10), i(0, 10), 0)],  # B[20]
                [(i(1, 0), i(0, 0), i(0), 0)],  # acol not increasing
                [(i(10), i(0), i(0), 0)],  # A's column 10 of 10
                [(i(0), i(-1), i(0), 0)],  # before B
                [(i(0), i(0), i(0, 1), 0), (i(0), i(0), i(0), 1)],  # overlapping columns
                [(i(0), i(0), i(0), 6)]):  # past C
        with pytest.raises(ValueError, match="gathered GEMM"):
            _cpu.gemm_gathered(A, bad, B, C, scratch=sc, nthreads=1)
    with pytest.raises(ValueError, match="differ in length"):
        _cpu.gemm_gathered(A, [(i(0, 1), i(0), i(0), 0)], B, C, scratch=sc, nthreads=1)
    with pytest.raises(ValueError, match="scratch"):
        _cpu.gemm_gathered(A, [(i(0), i(0), i(0), 0)], B, C, scratch=sc[:-1], nthreads=1)


# ------------------------------------------------- transforms and adjoints
def _setup(rng, dtype, tile=(4, 2, 3), ksize=(3, 3, 2), sparse=True):
    g = make_geometry((2, 3, 7, 6, 5), 4, ksize, (1, 0, 1), tile)
    P = g.npos
    kept = (np.sort(rng.choice(P, P // 3, replace=False)) if sparse else np.arange(P)).astype(np.int32)
    pin = _cpu_common.plan("input", g.tile, g.ksize, dtype, kept)
    pout = _cpu_common.plan("output", g.tile, g.ksize, dtype, kept)
    return g, kept, pin, pout


def _blocked_scratch(plan, nthreads):
    return np.empty(_cpu.blocked_scratch_bytes(plan, nthreads), np.uint8)


@pytest.mark.parametrize("sparse", [False, True])
def test_input_transform_adjointness(rng, sparse):
    """<input_block(x), gV> = <x, input_adjoint_block(gV)> over all tiles,
    padding and overhang included (x read through a strided view)."""
    g, kept, pin, _ = _setup(rng, np.float64, sparse=sparse)
    xbig = rng.standard_normal((2, 3, 7, 6, 10))
    x = xbig[..., ::2]
    x, geom = _cpu_common.c_geometry(g, x)
    T, nk = g.ntiles, kept.size
    V = np.empty(nk * g.C * T)
    _cpu.input_block(geom, x, pin, 0, T, V, _blocked_scratch(pin, 2), 2)
    gV = rng.standard_normal(V.shape)
    gx = np.zeros((2, 3, 7, 6, 5))
    gx_geom = _cpu.CGeom(g.c_fields(tuple(s // 8 for s in gx.strides)))
    _cpu.input_adjoint_block(gx_geom, gV, pin, 0, T, gx, _blocked_scratch(pin, 2), 2)
    np.testing.assert_allclose(np.vdot(V, gV), np.vdot(x, gx), rtol=1e-12)


@pytest.mark.parametrize("sparse", [False, True])
def test_output_transform_adjointness(rng, sparse):
    """<output_block(M), gy> = <M, output_adjoint_block(gy)>, in two
    channel chunks (k0 > 0 writes the right channels)."""
    g, kept, _, pout = _setup(rng, np.float64, sparse=sparse)
    geom = _cpu.CGeom(g.c_fields((630, 210, 30, 5, 1)))
    T, nk, K = g.ntiles, kept.size, g.K
    M = rng.standard_normal((nk, K, T))
    y = np.full((g.N, K, *g.out), np.nan)
    sc = _blocked_scratch(pout, 3)
    for k0, k1 in ((0, 1), (1, K)):
        Mk = np.ascontiguousarray(M[:, k0:k1]).reshape(-1)
        _cpu.output_block(geom, Mk, k0, k1 - k0, pout, 0, T, None, y, sc, 3)
    assert np.isfinite(y).all()
    gy = rng.standard_normal(y.shape)
    gM = np.empty(M.size)
    _cpu.output_adjoint_block(geom, gy, pout, 0, T, gM, sc, 3)
    np.testing.assert_allclose(np.vdot(y, gy), np.vdot(M.reshape(-1), gM), rtol=1e-12)


def test_filter_transform_adjointness(rng):
    g, _, _, _ = _setup(rng, np.float64)
    P, KC = g.npos, 12
    pf = _cpu_common.plan("filter", g.tile, g.ksize, np.float64, np.arange(P, dtype=np.int32))
    sc = np.empty(_cpu.filter_scratch_bytes(pf, 2), np.uint8)
    w = rng.standard_normal(KC * np.prod(g.ksize))
    U = np.empty(P * KC)
    _cpu.filter_expand(w, KC, pf, U, sc, 2)
    gU = rng.standard_normal(U.shape)
    gw = np.empty(w.shape)
    _cpu.filter_contract(gU, KC, pf, gw, sc, 2)
    np.testing.assert_allclose(np.vdot(U, gU), np.vdot(w, gw), rtol=1e-12)


# ----------------------------------------------------------- scratch sizes
def _guarded(nbytes, offset):
    """A buffer of nbytes starting `offset` bytes into a canary-filled array."""
    raw = np.full(nbytes + offset + 256, 0xA5, np.uint8)
    return raw, raw[offset:offset + nbytes]


@pytest.mark.parametrize("nthreads", [1, 2, 3])
@pytest.mark.parametrize("offset", [0, 1, 37])
def test_scratch_queries_cover_what_the_kernels_touch(rng, nthreads, offset):
    """Each kernel given exactly its queried scratch (at any alignment) writes
    nothing past it, and refuses one byte less before touching anything."""
    dtype = np.float32
    g, kept, pin, pout = _setup(rng, dtype, tile=(4, 4, 4), ksize=(3, 3, 3))
    x = rng.standard_normal((2, 3, 7, 6, 5)).astype(dtype)
    x, geom = _cpu_common.c_geometry(g, x)
    T, nk, K, C = g.ntiles, kept.size, g.K, g.C
    V = np.empty(nk * C * T, dtype)
    M = rng.standard_normal(nk * K * T).astype(dtype)
    y = np.empty((g.N, K, *g.out), dtype)
    gx = np.zeros(x.shape, dtype)
    pf = _cpu_common.plan("filter", g.tile, g.ksize, dtype, np.arange(g.npos, dtype=np.int32))
    w = rng.standard_normal(K * C * 27).astype(dtype)
    U = np.empty(g.npos * K * C, dtype)
    cases = [
        (_cpu.blocked_scratch_bytes(pin, nthreads), lambda s: _cpu.input_block(geom, x, pin, 0, T, V, s, nthreads)),
        (_cpu.blocked_scratch_bytes(pout, nthreads),
         lambda s: _cpu.output_block(geom, M, 0, K, pout, 0, T, None, y, s, nthreads)),
        (_cpu.blocked_scratch_bytes(pout, nthreads),
         lambda s: _cpu.output_adjoint_block(geom, y, pout, 0, T, M, s, nthreads)),
        (_cpu.blocked_scratch_bytes(pin, nthreads),
         lambda s: _cpu.input_adjoint_block(geom, V, pin, 0, T, gx, s, nthreads)),
        (_cpu.filter_scratch_bytes(pf, nthreads), lambda s: _cpu.filter_expand(w, K * C, pf, U, s, nthreads)),
        (_cpu.gemm_scratch_bytes(dtype, nthreads),
         lambda s: _cpu.gemm_batched(M.reshape(nk, K, T)[:, :, :C], V.reshape(nk, C, T),
                                     np.empty((nk, K, T), dtype), scratch=s, nthreads=nthreads)),
    ]
    for nbytes, call in cases:
        raw, buf = _guarded(nbytes, offset)
        call(buf)
        assert (raw[:offset] == 0xA5).all() and (raw[offset + nbytes:] == 0xA5).all()
        assert (buf != 0xA5).any()  # the scratch was used
        raw, buf = _guarded(nbytes - 1, offset)
        with pytest.raises(ValueError, match="scratch"):
            call(buf)
        assert (raw == 0xA5).all()


def test_scratch_reused_per_thread():
    a = _cpu_common.scratch(1000)
    b = _cpu_common.scratch(500)
    assert np.shares_memory(a, b)
    seen = []
    t = threading.Thread(target=lambda: seen.append(_cpu_common.scratch(500)))
    t.start()
    t.join()
    assert not np.shares_memory(seen[0], a)


def test_kernels_check_their_arrays(rng):
    g, kept, pin, pout = _setup(rng, np.float32)
    x = rng.standard_normal((2, 3, 7, 6, 5)).astype(np.float32)
    x, geom = _cpu_common.c_geometry(g, x)
    V = np.zeros(kept.size * g.C * g.ntiles, np.float32)  # cast below: no garbage NaNs
    sc = _blocked_scratch(pin, 1)
    with pytest.raises(ValueError, match="V"):
        _cpu.input_block(geom, x, pin, 0, g.ntiles, V[:-1], sc, 1)
    with pytest.raises(ValueError, match="x: shape"):
        _cpu.input_block(geom, x[:1], pin, 0, g.ntiles, V, sc, 1)
    with pytest.raises(ValueError, match="x: strides"):
        _cpu.input_block(geom, np.asfortranarray(x), pin, 0, g.ntiles, V, sc, 1)
    with pytest.raises(TypeError, match="plan"):
        _cpu.input_block(geom, x.astype(np.float64), pin, 0, g.ntiles, V.astype(np.float64), sc, 1)


# --------------------------------------------------------------- pipelines
def _problems(rng, dtype):
    """(x, w, bias, tile, padding, kept or None) covering tiles, pruning,
    strided input, bias and several blocks, a small tile-1 problem that
    im2col serves even under a 0.05 MB workspace, and 70 -> 67 channels
    (the blocked GEMM's forward and backward, dense and pruned)."""
    out = []
    x = rng.standard_normal((2, 5, 9, 8, 7)).astype(dtype)
    w = rng.standard_normal((6, 5, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    out.append((x, w, b, 4, 1, None))
    out.append((x[:, :, ::-1], w, None, 2, 1, "sparse"))
    out.append((x[..., 1:], w[:, :, :2], b, (4, 2, 3), (0, 1, 2), None))
    out.append((x, w, b, 1, 1, None))  # tile 1: the direct pipeline's problems
    out.append((x[..., ::-1], w[:, :, 1:], None, 1, (2, 0, 1), "sparse"))
    out.append((x[:, :3, :4, :4, :4], w[:4, :3], b[:4], 1, 1, None))  # 3 x 27 x 64 im2col terms: 41 KB in float64
    # past the fused pipeline's 64 channels: the blocked GEMM, dense and pruned
    xw = rng.standard_normal((1, 70, 4, 5, 4)).astype(dtype)
    ww = rng.standard_normal((67, 70, 3, 3, 3)).astype(dtype)
    out.append((xw, ww, rng.standard_normal(67).astype(dtype), 2, 1, None))
    out.append((xw[..., ::-1], ww, None, 3, 1, "sparse"))
    return out


def assert_pipelines_agree(name, dtype, rng):
    """Pipeline ``name`` on forward and backward against the float64 NumPy
    Winograd of the same U and kept positions (``winograd_reference``, which
    shares no code with any pipeline), per sample and channel within the
    typical error of the dtype (``typical_error``: about 1e-13 relative in
    float64, 1e-6..1e-4 in float32); the problems it turns down are skipped.
    Returns how many it ran."""
    impl = _cpu_backend.PIPELINES[name]
    ran = 0
    for x, w, b, tile, padding, kept in _problems(rng, dtype):
        g = make_geometry(x.shape, w.shape[0], w.shape[2:], padding, parse_tile(tile))
        kept = (np.sort(rng.choice(g.npos, g.npos // 2, replace=False)).astype(np.int32) if kept
                else np.arange(g.npos, dtype=np.int32))
        if impl.supports(g, kept, np.dtype(dtype)) is not None:
            continue
        ran += 1
        ks = w.shape[2:]
        U = _cpu_backend.filter_transform(w, g.tile, kept, 2)
        got = _cpu_backend.forward(g, x, U, b, kept, 2, pipeline=name)
        ref = winograd_reference(x, U, ks, g.tile, padding=padding, bias=b, columns=kept)
        scale = term_scale(x, w, b, padding=padding, tile=g.tile)
        check_typical(got, ref, scale, typical_error(g.tile, ks, g.C, dtype), f"{name} y")
        gy = rng.standard_normal(ref.shape).astype(dtype)
        ggx, ggU = _cpu_backend.backward(g, gy, x, U, kept, 2, pipeline=name)
        rgx, rgU = winograd_reference(x, U, ks, g.tile, padding=padding, columns=kept, grad_y=gy)
        sgx, _ = term_scale(x, w, padding=padding, grad_y=gy)
        check_typical(ggx, rgx, sgx, typical_error(g.tile, ks, g.K, dtype, adjoint=True), f"{name} grad_x")
        # grad_U against the same sums of magnitudes (|gM| |V|, the scale of its rounding)
        _, mgU = winograd_reference(np.abs(x), np.abs(U), ks, g.tile, padding=padding, columns=kept,
                                    grad_y=np.abs(gy))
        tol = typical_error(g.tile, ks, g.N * g.ntiles, dtype, adjoint=True)
        err = np.linalg.norm(ggU - rgU)
        assert err <= tol * np.linalg.norm(mgU), f"{name} grad_U: {err / np.linalg.norm(mgU):.2g} > {tol:.2g}"
    return ran


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(_cpu_backend.PIPELINES))
def test_every_pipeline_agrees_with_the_reference(rng, name, dtype, monkeypatch):
    """Every registered pipeline, with the default workspace and with one of
    0.05 MB (several blocks where the pipeline splits its tiles), runs at
    least one problem and matches the reference at the dtype's precision."""
    assert assert_pipelines_agree(name, dtype, rng) > 0
    monkeypatch.setenv("PYWINO3D_WORKSPACE_MB", "0.05")  # several blocks
    assert assert_pipelines_agree(name, dtype, rng) > 0


def test_pipeline_choice(rng):
    g = make_geometry((1, 2, 5, 5, 5), 3, (3, 3, 3), 1, (2, 2, 2))
    kept = np.arange(g.npos, dtype=np.int32)
    # few channels: fused; many channels: blocked
    assert _cpu_backend.choose_pipeline(g, kept, np.dtype(np.float32)) is _cpu_backend.PIPELINES["fused"]
    big = make_geometry((1, 128, 5, 5, 5), 128, (3, 3, 3), 1, (2, 2, 2))
    assert _cpu_backend.choose_pipeline(big, kept, np.dtype(np.float32)) is _cpu_backend.PIPELINES["blocked"]
    assert _cpu_backend.ORDER[-1] == "blocked"
    with _cpu_backend.use_pipeline("blocked"):
        assert _cpu_backend.choose_pipeline(g, kept, np.dtype(np.float32)).NAME == "blocked"
    with pytest.raises(ValueError, match="pipeline"):
        _cpu_backend.choose_pipeline(g, kept, np.dtype(np.float32), "nope")
    with pytest.raises(TypeError, match="lacks"):
        _cpu_backend.register_pipeline(types.SimpleNamespace(NAME="half", forward=None))
    assert "half" not in _cpu_backend.PIPELINES


def test_workspace_sizing_is_per_pipeline(rng):
    g = make_geometry((2, 8, 12, 12, 12), 16, (3, 3, 3), 1, (4, 4, 4))
    kept = np.arange(g.npos, dtype=np.int32)
    for impl in _cpu_backend.PIPELINES.values():
        fwd = _cpu_backend.workspace_bytes(impl, g, kept, np.dtype(np.float32), 2)
        bwd = _cpu_backend.workspace_bytes(impl, g, kept, np.dtype(np.float32), 2, backward=True)
        assert 0 < fwd and 0 < bwd
        owner = _cpu_backend.backward_pipeline(impl)
        assert bwd == owner.workspace_bytes(g, kept, np.dtype(np.float32), 2, backward=True)
        if owner is not impl:  # a pipeline whose backward pass is another's says so, never sizes it
            with pytest.raises(ValueError, match="backward pass"):
                impl.workspace_bytes(g, kept, np.dtype(np.float32), 2, backward=True)


def test_blocked_chunks_fit_the_build():
    ch = _cpu.blocked_chunks()
    for dtype in (np.float32, np.float64):
        assert ch["k_chunk"] % _cpu.gemm_blocking(dtype)["mc"] == 0
        assert ch["tile_multiple"] % _cpu.simd_lanes(dtype) == 0


# ------------------------------------------------- constant transform code
def test_const_transforms_header_is_generated():
    """src/cpu/const_transforms.h is what its generator writes now (the
    matrices it holds are the library's)."""
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, str(root / "src" / "cpu" / "gen_const_transforms.py")],
                         capture_output=True, text=True, check=True).stdout
    assert out == (root / "src" / "cpu" / "const_transforms.h").read_text()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pipeline", ["fused", "blocked"])
def test_const_transforms_equal_the_runtime_code(rng, dtype, pipeline, monkeypatch):
    """The constant straight-line transforms (dense cubic tiles of 3-wide
    kernels) give the run-time code's results to rounding: filter transform
    and its adjoint, forward and backward, for every tile they cover.  They
    sum in another order (shared e +- o terms, balanced trees), so the
    outputs differ by Winograd's error growth of a few ulps: measured at
    most 2 ulps of the largest value on U, 450 on F(6^3) outputs; a wrong
    coefficient would be off by orders of magnitude more."""
    import pywino3d

    x = rng.standard_normal((2, 5, 9, 10, 11)).astype(dtype)
    w = rng.standard_normal((6, 5, 3, 3, 3)).astype(dtype)
    gy = rng.standard_normal((2, 6, 9, 10, 11)).astype(dtype)

    def run():
        with _cpu_backend.use_pipeline(pipeline):
            U = pywino3d.filter_transform(w, m)
            y = pywino3d.winograd_conv3d(x, U, kernel_size=3, tile=m, padding=1, workers=2)
            gx, gU = pywino3d.winograd_conv3d_backward(gy, x, U, kernel_size=3, tile=m, padding=1, workers=2)
            gw = pywino3d.filter_transform_backward(gU, 3, m, workers=2)
        return U, y, gx, gU, gw

    for m in (2, 3, 4, 5, 6):
        fast = run()
        with monkeypatch.context() as mp:
            mp.setattr(_cpu_common, "_c_plan", lambda arrays: _cpu.TilePlan(arrays, constants=False))
            slow = run()
        for a, b in zip(fast, slow):
            np.testing.assert_allclose(a, b, rtol=0, atol=1024 * np.finfo(dtype).eps * np.abs(b).max())
        if m >= 3:  # the constant code ran (its sums round differently)
            assert not np.array_equal(fast[1], slow[1])
