"""The CUDA backend: CuPy RawKernels built from ``src/cuda/wino3d_kernels.cu``.

One :class:`cupy.RawModule` per device, compiled lazily by NVRTC with every
(dtype x AMAX) instantiation listed in :func:`pywino3d._backends.cuda.sources.kernel_names`
and memoized (``_module``).  The block structure is the CPU backend's:
input transform -> column-sparse batched product -> output transform, over
blocks of tiles bounded by a workspace budget.

The product stage has two implementations, both tested:

* ``"rawkernel"``: the shared-memory tiled ``sparse_gemm`` that loops only
  over kept positions (indices into the full U);
* ``"cublas"``: ``cupy.matmul`` on the gathered kept positions ``U[kept]``.

``product="auto"`` (default) times both once per shape on first use (CUDA
events, after a warm-up) and then uses the faster one.
"""
from __future__ import annotations

import threading
from functools import lru_cache

import numpy as np

from pywino3d import autotune
from pywino3d._backends.cuda import sources as srcs
from pywino3d._core.arrays import is_cupy_array
from pywino3d._core.geometry import geom_record, n_positions
from pywino3d._core.plans import tile_plan
from pywino3d._core.validation import as_int

_lock = threading.Lock()
_BLOCK = 256
#: Workspace budget on the GPU (bytes).
GPU_WORKSPACE_BYTES = 1 << 30


def _cp():
    import cupy

    return cupy


@lru_cache(maxsize=None)
def _module(device_id):
    """The RawModule for one device (compiled on first use, then memoized)."""
    cp = _cp()
    with cp.cuda.Device(device_id):
        mod = cp.RawModule(code=srcs.kernel_source(), options=tuple(srcs.compile_options()),
                           name_expressions=srcs.kernel_names())
        mod.compile()
    return mod


def _kernel(name):
    cp = _cp()
    return _module(cp.cuda.Device().id).get_function(name)


def _ctype(dtype):
    return "float" if np.dtype(dtype) == np.float32 else "double"


def _i64(v):
    return np.int64(v)


def _i32(v):
    return np.int32(v)


class _DevicePlan:
    """Device copies of one tile plan (``pywino3d._core.plans.PlanArrays``, the
    host arrays the CPU plan points into)."""

    def __init__(self, arrays):
        cp = _cp()
        a, n = arrays.a, arrays.n
        self.amax = max(a + n)
        self.mats = [cp.asarray(m) for m in arrays.mats]
        self.dims = cp.asarray(np.array(a + n, dtype=np.int32))
        self.nk = arrays.nk
        self.kept = cp.asarray(arrays.kept if arrays.nk else np.zeros(1, np.int32))
        self.need_w = cp.asarray(arrays.need_w)
        self.need_hw = cp.asarray(arrays.need_hw)

    def args(self):
        return (*self.mats, self.dims, self.kept, _i32(self.nk), self.need_w, self.need_hw)


@lru_cache(maxsize=256)
def _plan(device_id, arrays):
    return _DevicePlan(arrays)


def plan(kind, tile, ksize, dtype, kept):
    cp = _cp()
    return _plan(cp.cuda.Device().id, tile_plan(kind, tile, ksize, dtype, kept))


def _launch(name, n, args):
    if n <= 0:
        return
    _kernel(name)(((int(n) + _BLOCK - 1) // _BLOCK,), (_BLOCK,), args)


def _tile_kernel(kernel, dtype, pl):
    return srcs.tile_kernel_name(kernel, _ctype(dtype), pl.amax)


# ----------------------------------------------------------------- product
_product_choice = {}


def _gemm_raw(nb, M, N, K, A, aidx, sa, rsa, csa, B, sb, rsb, csb, C, cidx, sc, rsc, accumulate):
    cp = _cp()
    ctype = _ctype(A.dtype)
    bm, bn, _, tm, tn = srcs.GEMM_TILES[ctype]
    if nb == 0 or M == 0 or N == 0:
        return
    # index arrays are always passed (identity when None): no null pointers
    ident = cp.arange(nb, dtype=np.int32)
    aidx = ident if aidx is None else aidx
    cidx = ident if cidx is None else cidx
    grid = ((N + bn - 1) // bn, (M + bm - 1) // bm, nb)
    _kernel(srcs.gemm_kernel_name(ctype))(
        grid, ((bm // tm) * (bn // tn),),
        (_i64(M), _i64(N), _i64(K), A, aidx, _i64(sa), _i64(rsa), _i64(csa),
         B, _i64(sb), _i64(rsb), _i64(csb), C, cidx, _i64(sc), _i64(rsc), _i32(int(accumulate))))


def product(mode, U, kept_dev, kept_host, Vb, nk, K, C, n, out):
    """out[i] (K x n) = U[kept[i]] @ Vb[i] (C x n) with the chosen implementation."""
    cp = _cp()
    if mode == "auto":
        key = (cp.cuda.Device().id, U.dtype.str, nk, K, C, n, nk == U.shape[0])
        mode = _product_choice.get(key)
        if mode is None:
            mode = _autotune(key, U, kept_dev, kept_host, Vb, nk, K, C, n, out)
    if mode == "cublas":
        Uk = U if nk == U.shape[0] else U[cp.asarray(kept_host)]
        # the workspace holds tb >= n tiles: use the leading nk*C*n elements
        cp.matmul(Uk, Vb[:nk * C * n].reshape(nk, C, n), out=out[:nk * K * n].reshape(nk, K, n))
    elif mode == "rawkernel":
        _gemm_raw(nk, K, n, C, U, kept_dev, K * C, C, 1, Vb, C * n, n, 1, out, None, K * n, n, False)
    else:
        raise ValueError(f"product: expected 'auto', 'rawkernel' or 'cublas', got {mode!r}")


def _autotune(key, U, kept_dev, kept_host, Vb, nk, K, C, n, out):
    """The product implementation for this shape, measured by the one tuner
    of the package (:func:`pywino3d.autotune.choose`: warm-up, alternating
    rounds, cached per machine and build); with tuning off, cuBLAS for a
    dense product and the raw kernel for a sparse one (no gathered copy of
    U).  Memoized in this process per device, dtype and shape."""
    cp = _cp()
    args = (U, kept_dev, kept_host, Vb, nk, K, C, n, out)

    def runner(mode):
        def run():
            product(mode, *args)
            cp.cuda.Device().synchronize()
        return run

    decision = autotune.choose("cuda.product", key, {m: runner(m) for m in ("rawkernel", "cublas")},
                               dtype=U.dtype, threads=1)
    best = decision.best if decision is not None else ("cublas" if nk == U.shape[0] else "rawkernel")
    with _lock:
        _product_choice[key] = best
    return best


# ---------------------------------------------------------------- backend
def _on_device_of_first_array(method):
    """Run a backend method on the device of its first array argument (the
    x of the call; all arrays of a call live on the same device)."""
    import functools

    @functools.wraps(method)
    def wrapper(self, *args, **kw):
        first = next((a for a in args if is_cupy_array(a)), None)
        if first is None:
            return method(self, *args, **kw)
        with first.device:
            return method(self, *args, **kw)

    return wrapper


class CudaBackend:
    name = "cuda"

    @property
    def xp(self):
        return _cp()

    @staticmethod
    def owns(a):
        return is_cupy_array(a)

    def asarray(self, name, a, coerce):
        cp = _cp()
        if is_cupy_array(a):
            return a
        if not coerce:
            raise TypeError(
                f"{name}: is a host ({type(a).__module__}.{type(a).__name__}) array but the backend is "
                "'cuda'; move it with cupy.asarray(), leave the backend on 'auto' to run on the CPU, "
                "or pass coerce=True to copy")
        return cp.asarray(np.asarray(a))

    def to_own(self, a):
        return _cp().asarray(a)

    @staticmethod
    def resolve_workers(workers):
        if workers is not None:
            as_int("workers", workers)
        return 1

    @_on_device_of_first_array
    def filter_transform(self, w, tile, kept, nthreads, out=None):
        cp = _cp()
        K, C = w.shape[:2]
        ksize = tuple(w.shape[2:])
        npos = n_positions(tile, ksize)
        U = cp.zeros((npos, K, C), dtype=w.dtype) if out is None else out
        if K * C == 0:
            U[...] = 0
            return U
        w = cp.ascontiguousarray(w)
        allk = np.arange(npos, dtype=np.int32)
        pl = plan("filter", tile, ksize, w.dtype, allk)
        _launch(_tile_kernel("filter_transform", w.dtype, pl), K * C,
                (w, _i64(K * C), *pl.args(), _i32(0), U))
        if kept.size != npos:
            mask = cp.zeros(npos, dtype=bool)
            mask[cp.asarray(kept)] = True
            U[~mask] = 0
        return U

    @_on_device_of_first_array
    def conv_weights(self, w, tile, kept, nthreads, g=None):
        """U for a one-shot conv3d: the filter transform's."""
        return self.filter_transform(w, tile, kept, nthreads)

    @_on_device_of_first_array
    def filter_transform_backward(self, gU, ksize, tile, nthreads):
        cp = _cp()
        P, K, C = gU.shape
        gw = cp.empty((K, C, *ksize), dtype=gU.dtype)
        if K * C == 0:
            return gw
        pl = plan("filter", tile, ksize, gU.dtype, np.arange(P, dtype=np.int32))
        _launch(_tile_kernel("filter_transform", gU.dtype, pl), K * C,
                (cp.ascontiguousarray(gU), _i64(K * C), *pl.args(), _i32(1), gw))
        return gw

    def _geom(self, g, x):
        cp = _cp()
        x = cp.ascontiguousarray(x)  # arrays are contiguous before launch (a no-op when they are)
        # the struct wino_geom, passed to the kernels by value
        return x, geom_record(g.c_fields(tuple(s // x.itemsize for s in x.strides)))

    @_on_device_of_first_array
    def forward(self, g, x, U, bias, kept, nthreads, product_mode="auto"):
        cp = _cp()
        dtype = x.dtype
        K, C = g.K, g.C
        y = cp.empty((g.N, K, *g.out), dtype=dtype)
        nk = int(kept.size)  # >= 1: trivial problems are answered in _api._forward
        T = g.ntiles
        tb = int(max(1, min(T, GPU_WORKSPACE_BYTES // max(1, nk * (C + K) * dtype.itemsize))))
        x, geom = self._geom(g, x)
        U = cp.ascontiguousarray(U)
        pin = plan("input", g.tile, g.ksize, dtype, kept)
        pout = plan("output", g.tile, g.ksize, dtype, kept)
        V = cp.empty(nk * C * tb, dtype=dtype)
        M = cp.empty(nk * K * tb, dtype=dtype)
        bias = cp.zeros(K, dtype=dtype) if bias is None else cp.ascontiguousarray(bias)
        for t0 in range(0, T, tb):
            n = min(tb, T - t0)
            _launch(_tile_kernel("input_transform", dtype, pin), C * n,
                    (x, geom, *pin.args(), _i64(t0), _i64(n), V))
            product(product_mode, U, pin.kept, kept, V, nk, K, C, n, M)
            _launch(_tile_kernel("output_transform", dtype, pout), K * n,
                    (M, _i64(K), geom, *pout.args(), _i64(t0), _i64(n), bias, y))
        return y

    @_on_device_of_first_array
    def backward(self, g, gy, x, U, kept, nthreads):
        cp = _cp()
        dtype = x.dtype
        K, C = g.K, g.C
        P = g.npos
        gx = cp.zeros((g.N, C, *g.spatial), dtype=dtype)
        gU = cp.zeros((P, K, C), dtype=dtype)
        nk = int(kept.size)  # >= 1, T >= 1: see _api._backward
        T = g.ntiles
        asz = P
        tb = int(max(1, min(T, GPU_WORKSPACE_BYTES // max(1, (nk * (2 * C + K) + C * asz) * dtype.itemsize))))
        x, geom = self._geom(g, x)
        gy = cp.ascontiguousarray(gy)
        U = cp.ascontiguousarray(U)
        pin = plan("input", g.tile, g.ksize, dtype, kept)
        pout = plan("output", g.tile, g.ksize, dtype, kept)
        gM = cp.empty(nk * K * tb, dtype=dtype)
        V = cp.empty(nk * C * tb, dtype=dtype)
        gV = cp.empty(nk * C * tb, dtype=dtype)
        Pp = cp.empty(C * tb * asz, dtype=dtype)
        gUk = cp.zeros((nk, K, C), dtype=dtype)
        nx = int(gx.size)
        for t0 in range(0, T, tb):
            n = min(tb, T - t0)
            _launch(_tile_kernel("output_adjoint", dtype, pout), K * n,
                    (gy, _i64(K), geom, *pout.args(), _i64(t0), _i64(n), gM))
            # gV[i] (C x n) = U[kept[i]]^T @ gM[i]
            _gemm_raw(nk, C, n, K, U, pin.kept, K * C, 1, C, gM, K * n, n, 1, gV, None, C * n, n, False)
            _launch(_tile_kernel("input_adjoint_patches", dtype, pin), C * n,
                    (gV, geom, *pin.args(), _i64(n), Pp))
            _launch(f"input_adjoint_gather<{_ctype(dtype)}>", nx, (Pp, geom, _i64(t0), _i64(n), gx))
            _launch(_tile_kernel("input_transform", dtype, pin), C * n,
                    (x, geom, *pin.args(), _i64(t0), _i64(n), V))
            # gU[i] (K x C) += gM[i] (K x n) @ V[i]^T (n x C)
            _gemm_raw(nk, K, C, n, gM, None, K * n, n, 1, V, C * n, 1, n, gUk, None, K * C, C, True)
        gU[cp.asarray(kept)] = gUk
        return gx, gU


BACKEND = CudaBackend()
