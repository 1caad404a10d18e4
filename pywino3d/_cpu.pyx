# cython: language_level=3, boundscheck=False, wraparound=False
"""Thin Cython wrappers over the C kernels in ``src/cpu/`` (declared in ``_cpu.pxd``).

These functions trust their callers (``pywino3d._cpu_backend``): arrays are
C-contiguous, of one floating dtype, and shaped as the kernels expect.  All
validation happens in Python before anything reaches this module.  Every
call releases the GIL while the kernel runs.
"""
import numpy as np
cimport numpy as cnp

cnp.import_array()

def has_openmp():
    """True when the extension was compiled with OpenMP."""
    return bool(wino_has_openmp())


def max_threads():
    """``omp_get_max_threads()`` (respects OMP_NUM_THREADS and threadpoolctl)."""
    return wino_max_threads()


def num_procs():
    """``omp_get_num_procs()``: the cores this process may use."""
    return wino_num_procs()


cdef inline void _check(int rc, str what) except *:
    if rc != 0:
        raise MemoryError(f"pywino3d: could not allocate per-thread scratch in {what}")


cdef class TilePlan:
    """The three 1-D matrices of one transform and the kept positions.

    Parameters
    ----------
    mats : sequence of 3 ndarrays
        ``X[axis]`` of shape (alpha, n), C-contiguous, float32 or float64.
    kept : ndarray of int32
        Sorted kept positions in C order over (alpha_d, alpha_h, alpha_w).
    """
    cdef wino_plan_f pf
    cdef wino_plan_d pd
    cdef readonly object mats, kept, need_w, need_hw, dtype

    def __init__(self, mats, kept):
        self.mats = tuple(np.ascontiguousarray(m) for m in mats)
        self.dtype = self.mats[0].dtype
        a = [m.shape[0] for m in self.mats]
        n = [m.shape[1] for m in self.mats]
        self.kept = np.ascontiguousarray(kept, dtype=np.int32)
        d, rem = np.divmod(self.kept, a[1] * a[2])
        h, w = np.divmod(rem, a[2])
        self.need_w = np.zeros(a[2], np.uint8)
        self.need_w[w] = 1
        self.need_hw = np.zeros(a[1] * a[2], np.uint8)
        self.need_hw[rem] = 1
        cdef int ax
        for ax in range(3):
            self.pf.a[ax] = a[ax]; self.pd.a[ax] = a[ax]
            self.pf.n[ax] = n[ax]; self.pd.n[ax] = n[ax]
            if self.dtype == np.float32:
                self.pf.X[ax] = <const float *>cnp.PyArray_DATA(self.mats[ax])
            else:
                self.pd.X[ax] = <const double *>cnp.PyArray_DATA(self.mats[ax])
        self.pf.nk = self.pd.nk = <int>self.kept.shape[0]
        self.pf.kept = self.pd.kept = <const int *>cnp.PyArray_DATA(self.kept)
        self.pf.need_w = self.pd.need_w = <const unsigned char *>cnp.PyArray_DATA(self.need_w)
        self.pf.need_hw = self.pd.need_hw = <const unsigned char *>cnp.PyArray_DATA(self.need_hw)


cdef class CGeom:
    """The C struct ``wino_geom`` filled by field name.

    Parameters
    ----------
    fields : dict
        ``pywino3d._geometry.Geometry.c_fields(x_strides)``; every field of
        the struct must be present (Cython converts the dict by name and
        raises on a missing or extra key).
    """
    cdef wino_geom g

    def __init__(self, dict fields):
        self.g = fields

    def fields(self):
        """The struct back as a dict (for tests)."""
        return self.g


def geom_layout():
    """{field: byte offset} of ``wino_geom`` as compiled, plus its size under
    the key ``"sizeof"`` (compared with ``_geometry.GEOM_DTYPE`` by a test)."""
    cdef wino_geom g
    cdef char *base = <char *>&g
    return {
        "N": <char *>&g.N - base, "C": <char *>&g.C - base, "K": <char *>&g.K - base,
        "D": <char *>&g.D - base, "H": <char *>&g.H - base, "W": <char *>&g.W - base,
        "xs": <char *>&g.xs[0] - base, "pad": <char *>&g.pad[0] - base,
        "od": <char *>&g.od[0] - base, "m": <char *>&g.m[0] - base,
        "r": <char *>&g.r[0] - base, "a": <char *>&g.a[0] - base,
        "nt": <char *>&g.nt[0] - base, "sizeof": sizeof(wino_geom),
    }


def simd_bytes():
    """Bytes of one SIMD vector the kernels were compiled for (32 or 64)."""
    return wino_simd_bytes()


def gemm_blocking(dtype):
    """The GEMM blocking compiled for ``dtype``: a dict with ``mr``, ``nr``
    (micro-tile rows and columns), ``kc`` (panel depth), ``mc`` and ``nc``
    (rows of a packed A block, columns of a packed B block)."""
    return wino_gemm_blocking(np.dtype(dtype).itemsize)


def tile_origin(CGeom geom, wino_index t):
    """(n, o_d, o_h, o_w) of tile t, from the kernels' own 64-bit helper."""
    cdef wino_index out[4]
    wino_tile_origin(&geom.g, t, out)
    return (out[0], out[1], out[2], out[3])


cdef inline void *_ptr(cnp.ndarray a):
    return cnp.PyArray_DATA(a)


def input_block(CGeom geom, cnp.ndarray x, TilePlan plan, wino_index t0, wino_index tb,
                cnp.ndarray V, int nthreads):
    """V[i, c, t] = input transform of tile t0 + t, channel c, kept position i.
    x may have any strides (given in geom)."""
    cdef int rc
    cdef void *px = _ptr(x)
    cdef void *pv = _ptr(V)
    if plan.dtype == np.float32:
        with nogil:
            rc = wino_input_block_f(&geom.g, <const float *>px, &plan.pf, t0, tb, <float *>pv, nthreads)
    else:
        with nogil:
            rc = wino_input_block_d(&geom.g, <const double *>px, &plan.pd, t0, tb, <double *>pv, nthreads)
    _check(rc, "input transform")


def output_block(CGeom geom, cnp.ndarray M, wino_index K, wino_index ky, TilePlan plan,
                 wino_index t0, wino_index tb, bias, cnp.ndarray y, int nthreads):
    """y[tiles] = output transform of M[i, k, t] (+ bias[k]) for K channels of
    y (which has ky channels; y and bias may be views starting at a chunk)."""
    cdef int rc
    cdef void *pm = _ptr(M)
    cdef void *py = _ptr(y)
    cdef void *pb = NULL
    if bias is not None:
        pb = _ptr(bias)
    if plan.dtype == np.float32:
        with nogil:
            rc = wino_output_block_f(&geom.g, <const float *>pm, K, ky, &plan.pf, t0, tb, <const float *>pb, <float *>py, nthreads)
    else:
        with nogil:
            rc = wino_output_block_d(&geom.g, <const double *>pm, K, ky, &plan.pd, t0, tb, <const double *>pb, <double *>py, nthreads)
    _check(rc, "output transform")


def output_adjoint_block(CGeom geom, cnp.ndarray gy, wino_index K, TilePlan plan, wino_index t0,
                         wino_index tb, cnp.ndarray gM, int nthreads):
    """gM[i, k, t] = adjoint of the output transform applied to grad_y."""
    cdef int rc
    cdef void *pg = _ptr(gy)
    cdef void *pm = _ptr(gM)
    if plan.dtype == np.float32:
        with nogil:
            rc = wino_output_adjoint_block_f(&geom.g, <const float *>pg, K, &plan.pf, t0, tb, <float *>pm, nthreads)
    else:
        with nogil:
            rc = wino_output_adjoint_block_d(&geom.g, <const double *>pg, K, &plan.pd, t0, tb, <double *>pm, nthreads)
    _check(rc, "output-transform adjoint")


def input_adjoint_block(CGeom geom, cnp.ndarray gV, TilePlan plan, wino_index t0, wino_index tb,
                        cnp.ndarray gx, int nthreads):
    """gx += adjoint of the input transform applied to gV (gx contiguous)."""
    cdef int rc
    cdef void *pv = _ptr(gV)
    cdef void *px = _ptr(gx)
    if plan.dtype == np.float32:
        with nogil:
            rc = wino_input_adjoint_block_f(&geom.g, <const float *>pv, &plan.pf, t0, tb, <float *>px, nthreads)
    else:
        with nogil:
            rc = wino_input_adjoint_block_d(&geom.g, <const double *>pv, &plan.pd, t0, tb, <double *>px, nthreads)
    _check(rc, "input-transform adjoint")


def filter_expand(cnp.ndarray w, wino_index KC, TilePlan plan, cnp.ndarray U, int nthreads):
    """U[i, j] = filter transform of w[j] (w contiguous (KC, rd, rh, rw))."""
    cdef int rc
    cdef void *pw = _ptr(w)
    cdef void *pu = _ptr(U)
    if plan.dtype == np.float32:
        with nogil:
            rc = wino_filter_f(<const float *>pw, KC, &plan.pf, <float *>pu, nthreads)
    else:
        with nogil:
            rc = wino_filter_d(<const double *>pw, KC, &plan.pd, <double *>pu, nthreads)
    _check(rc, "filter transform")


def filter_contract(cnp.ndarray gU, wino_index KC, TilePlan plan, cnp.ndarray gw, int nthreads):
    """gw[j] = adjoint of the filter transform applied to gU[:, j]."""
    cdef int rc
    cdef void *pu = _ptr(gU)
    cdef void *pw = _ptr(gw)
    if plan.dtype == np.float32:
        with nogil:
            rc = wino_filter_adjoint_f(<const float *>pu, KC, &plan.pf, <float *>pw, nthreads)
    else:
        with nogil:
            rc = wino_filter_adjoint_d(<const double *>pu, KC, &plan.pd, <double *>pw, nthreads)
    _check(rc, "filter-transform adjoint")


def gemm_batched(wino_index nb, wino_index M, wino_index N, wino_index K,
                 cnp.ndarray A, aidx, wino_index sa, wino_index rsa, wino_index csa,
                 cnp.ndarray B, wino_index sb, wino_index rsb, wino_index csb,
                 cnp.ndarray C, cidx, wino_index sc, wino_index rsc,
                 bint accumulate, int nthreads):
    """C[cidx[b]] (+)= A[aidx[b]] @ B[b]; strides in elements, C rows contiguous."""
    cdef int rc
    cdef const int *pai = NULL
    cdef const int *pci = NULL
    cdef void *pa = _ptr(A)
    cdef void *pb = _ptr(B)
    cdef void *pc = _ptr(C)
    if aidx is not None:
        pai = <const int *>_ptr(aidx)
    if cidx is not None:
        pci = <const int *>_ptr(cidx)
    if A.dtype == np.float32:
        with nogil:
            rc = wino_gemm_batched_f(nb, M, N, K, <const float *>pa, pai, sa, rsa, csa,
                                     <const float *>pb, sb, rsb, csb, <float *>pc, pci, sc, rsc,
                                     accumulate, nthreads)
    else:
        with nogil:
            rc = wino_gemm_batched_d(nb, M, N, K, <const double *>pa, pai, sa, rsa, csa,
                                     <const double *>pb, sb, rsb, csb, <double *>pc, pci, sc, rsc,
                                     accumulate, nthreads)
    _check(rc, "batched GEMM")
