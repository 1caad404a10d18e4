# cython: language_level=3, boundscheck=False, wraparound=False
"""Thin Cython wrappers over the C kernels in ``src/wino3d_cpu.c``.

These functions trust their callers (``pywino3d._cpu_backend``): arrays are
C-contiguous, of one floating dtype, and shaped as the kernels expect.  All
validation happens in Python before anything reaches this module.  Every
call releases the GIL while the kernel runs.
"""
import numpy as np
cimport numpy as cnp
from libc.stdint cimport int64_t

cnp.import_array()

ctypedef int64_t wino_index

cdef extern from "wino3d_cpu.h" nogil:
    ctypedef struct wino_plan_f:
        const float *X[3]
        int a[3]
        int n[3]
        const int *kept
        int nk
        const unsigned char *need_w
        const unsigned char *need_hw
    ctypedef struct wino_plan_d:
        const double *X[3]
        int a[3]
        int n[3]
        const int *kept
        int nk
        const unsigned char *need_w
        const unsigned char *need_hw
    ctypedef struct wino_geom:
        wino_index N, C, D, H, W
        wino_index xs[5]
        int pad[3]
        wino_index od[3]
        int m[3]
        wino_index nt[3]

    int wino_has_openmp()
    void wino_tile_origin(const wino_geom *g, wino_index t, wino_index out[4])
    int wino_max_threads()
    int wino_num_procs()

    int wino_input_block_f(const wino_geom *g, const float *x, const wino_plan_f *pl, wino_index t0, wino_index tb, float *V, int nthreads)
    int wino_input_block_d(const wino_geom *g, const double *x, const wino_plan_d *pl, wino_index t0, wino_index tb, double *V, int nthreads)
    int wino_output_block_f(const wino_geom *g, const float *M, wino_index K, wino_index ky, const wino_plan_f *pl, wino_index t0, wino_index tb, const float *bias, float *y, int nthreads)
    int wino_output_block_d(const wino_geom *g, const double *M, wino_index K, wino_index ky, const wino_plan_d *pl, wino_index t0, wino_index tb, const double *bias, double *y, int nthreads)
    int wino_output_adjoint_block_f(const wino_geom *g, const float *gy, wino_index K, const wino_plan_f *pl, wino_index t0, wino_index tb, float *gM, int nthreads)
    int wino_output_adjoint_block_d(const wino_geom *g, const double *gy, wino_index K, const wino_plan_d *pl, wino_index t0, wino_index tb, double *gM, int nthreads)
    int wino_input_adjoint_block_f(const wino_geom *g, const float *gV, const wino_plan_f *pl, wino_index t0, wino_index tb, float *gx, int nthreads)
    int wino_input_adjoint_block_d(const wino_geom *g, const double *gV, const wino_plan_d *pl, wino_index t0, wino_index tb, double *gx, int nthreads)
    int wino_filter_f(const float *w, wino_index KC, const wino_plan_f *pl, float *U, int nthreads)
    int wino_filter_d(const double *w, wino_index KC, const wino_plan_d *pl, double *U, int nthreads)
    int wino_filter_adjoint_f(const float *gU, wino_index KC, const wino_plan_f *pl, float *gw, int nthreads)
    int wino_filter_adjoint_d(const double *gU, wino_index KC, const wino_plan_d *pl, double *gw, int nthreads)
    int wino_gemm_batched_f(wino_index nb, wino_index M, wino_index N, wino_index K,
                            const float *A, const int *aidx, wino_index sa, wino_index rsa, wino_index csa,
                            const float *B, wino_index sb, wino_index rsb, wino_index csb,
                            float *C, const int *cidx, wino_index sc, wino_index rsc,
                            int accumulate, int nthreads)
    int wino_gemm_batched_d(wino_index nb, wino_index M, wino_index N, wino_index K,
                            const double *A, const int *aidx, wino_index sa, wino_index rsa, wino_index csa,
                            const double *B, wino_index sb, wino_index rsb, wino_index csb,
                            double *C, const int *cidx, wino_index sc, wino_index rsc,
                            int accumulate, int nthreads)


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


cdef wino_geom _geom(tuple gt):
    """Unpack the geometry tuple made by pywino3d._geometry.Geometry.as_c()."""
    cdef wino_geom g
    cdef int i
    g.N, g.C, g.D, g.H, g.W = gt[0], gt[1], gt[2], gt[3], gt[4]
    for i in range(5):
        g.xs[i] = gt[5 + i]
    for i in range(3):
        g.pad[i] = gt[10 + i]
        g.od[i] = gt[13 + i]
        g.m[i] = gt[16 + i]
        g.nt[i] = gt[19 + i]
    return g


def tile_origin(tuple gt, wino_index t):
    """(n, o_d, o_h, o_w) of tile t, from the kernels' own 64-bit helper."""
    cdef wino_geom g = _geom(gt)
    cdef wino_index out[4]
    wino_tile_origin(&g, t, out)
    return (out[0], out[1], out[2], out[3])


cdef inline void *_ptr(cnp.ndarray a):
    return cnp.PyArray_DATA(a)


def input_block(tuple gt, cnp.ndarray x, TilePlan plan, wino_index t0, wino_index tb,
                cnp.ndarray V, int nthreads):
    """V[i, c, t] = input transform of tile t0 + t, channel c, kept position i.
    x may have any strides (given in gt)."""
    cdef wino_geom g = _geom(gt)
    cdef int rc
    cdef void *px = _ptr(x)
    cdef void *pv = _ptr(V)
    if plan.dtype == np.float32:
        with nogil:
            rc = wino_input_block_f(&g, <const float *>px, &plan.pf, t0, tb, <float *>pv, nthreads)
    else:
        with nogil:
            rc = wino_input_block_d(&g, <const double *>px, &plan.pd, t0, tb, <double *>pv, nthreads)
    _check(rc, "input transform")


def output_block(tuple gt, cnp.ndarray M, wino_index K, wino_index ky, TilePlan plan,
                 wino_index t0, wino_index tb, bias, cnp.ndarray y, int nthreads):
    """y[tiles] = output transform of M[i, k, t] (+ bias[k]) for K channels of
    y (which has ky channels; y and bias may be views starting at a chunk)."""
    cdef wino_geom g = _geom(gt)
    cdef int rc
    cdef void *pm = _ptr(M)
    cdef void *py = _ptr(y)
    cdef void *pb = NULL
    if bias is not None:
        pb = _ptr(bias)
    if plan.dtype == np.float32:
        with nogil:
            rc = wino_output_block_f(&g, <const float *>pm, K, ky, &plan.pf, t0, tb, <const float *>pb, <float *>py, nthreads)
    else:
        with nogil:
            rc = wino_output_block_d(&g, <const double *>pm, K, ky, &plan.pd, t0, tb, <const double *>pb, <double *>py, nthreads)
    _check(rc, "output transform")


def output_adjoint_block(tuple gt, cnp.ndarray gy, wino_index K, TilePlan plan, wino_index t0,
                         wino_index tb, cnp.ndarray gM, int nthreads):
    """gM[i, k, t] = adjoint of the output transform applied to grad_y."""
    cdef wino_geom g = _geom(gt)
    cdef int rc
    cdef void *pg = _ptr(gy)
    cdef void *pm = _ptr(gM)
    if plan.dtype == np.float32:
        with nogil:
            rc = wino_output_adjoint_block_f(&g, <const float *>pg, K, &plan.pf, t0, tb, <float *>pm, nthreads)
    else:
        with nogil:
            rc = wino_output_adjoint_block_d(&g, <const double *>pg, K, &plan.pd, t0, tb, <double *>pm, nthreads)
    _check(rc, "output-transform adjoint")


def input_adjoint_block(tuple gt, cnp.ndarray gV, TilePlan plan, wino_index t0, wino_index tb,
                        cnp.ndarray gx, int nthreads):
    """gx += adjoint of the input transform applied to gV (gx contiguous)."""
    cdef wino_geom g = _geom(gt)
    cdef int rc
    cdef void *pv = _ptr(gV)
    cdef void *px = _ptr(gx)
    if plan.dtype == np.float32:
        with nogil:
            rc = wino_input_adjoint_block_f(&g, <const float *>pv, &plan.pf, t0, tb, <float *>px, nthreads)
    else:
        with nogil:
            rc = wino_input_adjoint_block_d(&g, <const double *>pv, &plan.pd, t0, tb, <double *>px, nthreads)
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
include "_cpu_fused.pxi"
