"""The CPU backend: block loop over tiles around the C kernels.

For a block of ``tb`` tiles the forward pass runs

    V = input_transform(x)          # (nk, C, tb)   kept positions only
    M[i] = U[kept[i]] @ V[i]        # (nk, K, tb)   batched GEMM
    y   <- output_transform(M)      # written straight into y

so the workspace is ``(C + K) * nk * tb`` elements whatever the volume.  The
block size is chosen from a workspace budget (``PYWINO3D_WORKSPACE_MB``,
default 48) and is a multiple of the GEMM micro-tile width where possible.
"""
from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from functools import lru_cache

import numpy as np

from . import _cpu
from ._geometry import axis_matrices

#: GEMM micro-tile width in floats (columns); blocks are multiples of it.
_NR = 32


#: When a dict, stage times (seconds) are accumulated into it (benchmarks).
_stage_times = None


@contextmanager
def stage_timer():
    """Collect per-stage wall time of the calls made inside the block.

    Yields a dict {stage: seconds}.  Used by the benchmarks only.
    """
    global _stage_times
    prev, _stage_times = _stage_times, {}
    try:
        yield _stage_times
    finally:
        _stage_times = prev


def _run(stage, fn, *args):
    if _stage_times is None:
        return fn(*args)
    t0 = time.perf_counter()
    fn(*args)
    _stage_times[stage] = _stage_times.get(stage, 0.0) + time.perf_counter() - t0


_tls = threading.local()


def workspace(slot, n, dtype):
    """A reusable 1-D scratch array of ``n`` elements, one per thread and slot.

    Reusing the tile workspace between calls avoids faulting in fresh pages
    on every call (tens of MB).  The memory kept is bounded by the workspace
    budget per slot and thread; ``release_workspace()`` frees it.
    """
    dtype = np.dtype(dtype)
    cache = getattr(_tls, "buffers", None)
    if cache is None:
        cache = _tls.buffers = {}
    buf = cache.get(slot)
    need = n * dtype.itemsize
    if buf is None or buf.nbytes < need:
        cache[slot] = buf = np.empty(max(need, 64), dtype=np.uint8)
    return buf[:need].view(dtype)


def release_workspace():
    """Free this thread's cached tile workspace."""
    _tls.buffers = {}


def workspace_budget():
    """Bytes of workspace one call may use (``PYWINO3D_WORKSPACE_MB``)."""
    return int(float(os.environ.get("PYWINO3D_WORKSPACE_MB", "48")) * 2**20)


def available_memory():
    """Bytes of memory available to this process (best effort)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def block_size(ntiles, per_tile_elems, itemsize):
    """Tiles per block for a workspace of ``per_tile_elems`` elements a tile.

    The blocks are balanced (a 98-tile layer with room for 64 runs as 2 x 49,
    not 64 + 34) and rounded up to the SIMD width where that stays in budget.
    """
    per_tile = max(1, per_tile_elems) * itemsize
    tbmax = int(max(1, workspace_budget() // per_tile))
    ntiles = max(1, ntiles)
    if tbmax >= ntiles:
        return ntiles
    nblocks = -(-ntiles // tbmax)
    tb = -(-ntiles // nblocks)
    rounded = -(-tb // 16) * 16
    return int(rounded if rounded <= tbmax else tb)


#: Output channels per product + output-transform chunk (a multiple of the
#: GEMM's 96-row block): bounds M's share of the workspace.  Measured medians
#: (ms, F(4^3)) for chunks 96 / 288: conv3b batch 8 159.5 / 144.7, conv4b
#: batch 8 81.1 / 73.9, conv2a batch 1 31.3 / 30.4, conv3b batch 1 18.3 / 17.6:
#: smaller chunks re-pack the GEMM's B panels (V) once per chunk.
K_CHUNK = 288


def check_memory(what, nbytes):
    """Raise MemoryError if ``nbytes`` cannot fit in the available memory."""
    avail = available_memory()
    if nbytes > avail:
        raise MemoryError(
            f"pywino3d: {what} needs {nbytes / 2**30:.2f} GiB but only "
            f"{avail / 2**30:.2f} GiB is available; reduce the batch or the volume, "
            "or lower PYWINO3D_WORKSPACE_MB"
        )


@lru_cache(maxsize=256)
def _plan(kind, tile, ksize, dtype_str, kept_bytes):
    """TilePlan for 'input' (BT), 'output' (A = AT^T) or 'filter' (G)."""
    which = {"input": 0, "output": 1, "filter": 2}[kind]
    mats = [axis_matrices(m, r, dtype_str)[which] for m, r in zip(tile, ksize)]
    kept = np.frombuffer(kept_bytes, dtype=np.int32)
    return _cpu.TilePlan(mats, kept)


def plan(kind, geom_or_tile, ksize, dtype, kept):
    tile = geom_or_tile if isinstance(geom_or_tile, tuple) else geom_or_tile.tile
    return _plan(kind, tuple(tile), tuple(ksize), np.dtype(dtype).str, kept.tobytes())


def _x_geometry(g, x):
    item = x.itemsize
    if any(s % item for s in x.strides):
        x = np.ascontiguousarray(x)
    return x, _cpu.CGeom(g.c_fields(tuple(s // item for s in x.strides)))


def filter_transform(w, tile, kept, nthreads):
    """U (npos, K, C) with rows at ``kept`` filled, others zero."""
    K, C = w.shape[:2]
    ksize = w.shape[2:]
    a = [m + r - 1 for m, r in zip(tile, ksize)]
    npos = a[0] * a[1] * a[2]
    U = np.zeros((npos, K, C), dtype=w.dtype)
    if K * C == 0 or kept.size == 0:
        return U
    w = np.ascontiguousarray(w)
    pl = plan("filter", tuple(tile), ksize, w.dtype, kept)
    if kept.size == npos:
        _cpu.filter_expand(w, K * C, pl, U, nthreads)
    else:
        Uk = np.empty((kept.size, K, C), dtype=w.dtype)
        _cpu.filter_expand(w, K * C, pl, Uk, nthreads)
        U[kept] = Uk
    return U


def filter_transform_backward(gU, ksize, tile, nthreads):
    P, K, C = gU.shape
    gw = np.empty((K, C, *ksize), dtype=gU.dtype)
    if K * C == 0:
        return gw
    kept = np.arange(P, dtype=np.int32)
    pl = plan("filter", tuple(tile), ksize, gU.dtype, kept)
    _cpu.filter_contract(np.ascontiguousarray(gU), K * C, pl, gw, nthreads)
    return gw


def forward(g, x, U, bias, kept, nthreads):
    """y = Winograd convolution of x with U at the kept positions (a
    non-empty problem with at least one kept position and channel; the
    trivial ones are answered in ``_api._forward``)."""
    dtype = x.dtype
    K, C = g.K, g.C
    y = np.empty((g.N, K, *g.out), dtype=dtype)
    nk = int(kept.size)
    T = g.ntiles
    kc = min(K, K_CHUNK)
    tb = block_size(T, nk * (C + kc), dtype.itemsize)
    check_memory("the output and the tile workspace", y.nbytes + tb * nk * (C + kc) * dtype.itemsize)
    x, gt = _x_geometry(g, x)
    U = np.ascontiguousarray(U)
    pin = plan("input", g, g.ksize, dtype, kept)
    pout = plan("output", g, g.ksize, dtype, kept)
    V = workspace("V", nk * C * tb, dtype)
    M = workspace("M", nk * kc * tb, dtype)
    for t0 in range(0, T, tb):
        n = min(tb, T - t0)
        _run("input", _cpu.input_block, gt, x, pin, t0, n, V, nthreads)
        for k0 in range(0, K, kc):
            k1 = min(K, k0 + kc)
            # M[i] (kc x n) = U[kept[i], k0:k1] (kc x C) @ V[i] (C x n)
            _run("product", _cpu.gemm_batched, nk, k1 - k0, n, C, U[:, k0:k1], kept, K * C, C, 1,
                 V, C * n, n, 1, M, None, (k1 - k0) * n, n, False, nthreads)
            _run("output", _cpu.output_block, gt, M, k1 - k0, K, pout, t0, n,
                 None if bias is None else bias[k0:k1], y[:, k0:k1], nthreads)
    return y


def backward(g, gy, x, U, kept, nthreads, need_x=True, need_U=True):
    """(grad_x, grad_U) of the Winograd convolution (non-trivial problems;
    see ``_api._backward``)."""
    dtype = x.dtype
    K, C = g.K, g.C
    P = g.npos
    gx = np.zeros((g.N, C, *g.spatial), dtype=dtype) if need_x else None
    gU = np.zeros((P, K, C), dtype=dtype) if need_U else None
    nk = int(kept.size)
    T = g.ntiles
    tb = block_size(T, nk * (2 * C + K), dtype.itemsize)
    check_memory("the gradients and the tile workspace",
                 (gx.nbytes if need_x else 0) + tb * nk * (2 * C + K) * dtype.itemsize)
    x, gt = _x_geometry(g, x)
    gy = np.ascontiguousarray(gy)
    U = np.ascontiguousarray(U)
    pin = plan("input", g, g.ksize, dtype, kept)
    pout = plan("output", g, g.ksize, dtype, kept)
    gM = workspace("M", nk * K * tb, dtype)
    V = workspace("V", nk * C * tb, dtype) if need_U else None
    gV = workspace("gV", nk * C * tb, dtype) if need_x else None
    gUk = np.zeros((nk, K, C), dtype=dtype) if need_U else None
    for t0 in range(0, T, tb):
        n = min(tb, T - t0)
        _run("output_adjoint", _cpu.output_adjoint_block, gt, gy, K, pout, t0, n, gM, nthreads)
        if need_x:
            # gV[i] (C x n) = U[kept[i]]^T (C x K) @ gM[i] (K x n)
            _run("product_x", _cpu.gemm_batched, nk, C, n, K, U, kept, K * C, 1, C, gM, K * n, n, 1,
                 gV, None, C * n, n, False, nthreads)
            _run("input_adjoint", _cpu.input_adjoint_block, gt, gV, pin, t0, n, gx, nthreads)
        if need_U:
            _run("input", _cpu.input_block, gt, x, pin, t0, n, V, nthreads)
            # gU[i] (K x C) += gM[i] (K x n) @ V[i]^T (n x C)
            _run("product_U", _cpu.gemm_batched, nk, K, C, n, gM, None, K * n, n, 1, V, C * n, 1, n,
                 gUk, None, K * C, C, True, nthreads)
    if need_U:
        gU[kept] = gUk
    return gx, gU


class CpuBackend:
    """The CPU backend object used by the dispatcher (see _backend.py)."""

    name = "cpu"
    xp = np

    @staticmethod
    def owns(a):
        return isinstance(a, np.ndarray)

    @staticmethod
    def asarray(name, a, coerce):
        from ._backend import is_cupy_array

        if is_cupy_array(a):
            if not coerce:
                raise TypeError(
                    f"{name}: is a CuPy (GPU) array but the backend is 'cpu'; use backend='cuda' "
                    "(or leave the backend on 'auto'), move it with cupy.asnumpy(), or pass "
                    "coerce=True to copy")
            return a.get()
        return a

    @staticmethod
    def to_own(a):
        from ._backend import is_cupy_array

        return a.get() if is_cupy_array(a) else np.asarray(a)

    @staticmethod
    def resolve_workers(workers):
        from ._validation import resolve_workers

        return resolve_workers(workers)

    filter_transform = staticmethod(filter_transform)
    filter_transform_backward = staticmethod(filter_transform_backward)
    forward = staticmethod(forward)
    backward = staticmethod(backward)


BACKEND = CpuBackend()
