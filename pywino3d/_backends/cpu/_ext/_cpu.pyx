# cython: language_level=3, boundscheck=False, wraparound=False
"""Thin Cython wrappers over the C kernels in ``src/cpu/`` (declared in ``_cpu.pxd``).

Arguments are typed memoryviews over one floating type (``floating``: float32
or float64, one specialisation per wrapper), so dtype, dimensions and
contiguity are checked on entry; the wrappers also check the extents the
kernels will touch, so a wrong call raises instead of reading out of bounds.
Argument validation for users happens earlier, in Python.  Scratch memory is
the caller's (``scratch``: a uint8 buffer sized by the matching
``*_scratch_bytes`` query).  Every call releases the GIL while the kernel runs.
"""
from cython cimport floating
from libc.stdlib cimport free, malloc

import numpy as np

def has_openmp():
    """True when the extension was compiled with OpenMP."""
    return bool(wino_has_openmp())


def max_threads():
    """``omp_get_max_threads()`` (respects OMP_NUM_THREADS and threadpoolctl)."""
    return wino_max_threads()


def num_procs():
    """``omp_get_num_procs()``: the cores this process may use."""
    return wino_num_procs()




cdef int _check(int rc, str what) except -1:
    if rc == WINO_ESCRATCH:
        raise ValueError(f"scratch: too small for {what}; size it with the matching *_scratch_bytes query")
    if rc == WINO_EARG:
        raise ValueError(f"{what}: an operand the kernel cannot take")
    if rc != 0:
        raise RuntimeError(f"pywino3d: {what} failed (code {rc})")
    return 0


cdef int _need(str name, Py_ssize_t have, Py_ssize_t need) except -1:
    if have < need:
        raise ValueError(f"{name}: {have} elements, the kernel needs {need}")
    return 0


def simd_bytes():
    """Bytes of one SIMD vector the kernels were compiled for (32 or 64)."""
    return wino_simd_bytes()


def simd_lanes(dtype):
    """Values of ``dtype`` in one SIMD vector: tiles the transforms treat at once."""
    return wino_simd_bytes() // np.dtype(dtype).itemsize


def gemm_blocking(dtype):
    """The GEMM blocking compiled for ``dtype``: a dict with ``mr``, ``nr``
    (micro-tile rows and columns), ``kc`` (panel depth), ``mc`` and ``nc``
    (rows of a packed A block, columns of a packed B block)."""
    return wino_gemm_blocking(np.dtype(dtype).itemsize)


def blocked_chunks():
    """Chunk sizes of the blocked pipeline: ``k_chunk`` (output channels per
    product and output transform) and ``tile_multiple`` (tiles per block are
    rounded up to a multiple of it)."""
    return wino_blocked_chunks()


cdef class CGeom:
    """The C struct ``wino_geom`` filled by field name.

    Parameters
    ----------
    fields : dict
        ``pywino3d._core.geometry.Geometry.c_fields(x_strides)``; every field of
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


def tile_origin(CGeom geom, wino_index t):
    """(n, o_d, o_h, o_w) of tile t, from the kernels' own 64-bit helper."""
    cdef wino_index out[4]
    wino_tile_origin(&geom.g, t, out)
    return (out[0], out[1], out[2], out[3])


cdef class TilePlan:
    """The C plan struct over the arrays of a ``pywino3d._core.plans.PlanArrays``
    (kept alive by this object).  ``itemsize`` says which of the float and
    double structs is filled.  With ``constants`` (the default) a matrix
    equal to one of ``src/cpu/const_transforms.h``'s tables points at the
    table, so dense cubic transforms run its constant code."""
    cdef wino_plan_f pf
    cdef wino_plan_d pd
    cdef readonly object arrays
    cdef readonly int itemsize, nk

    def __init__(self, arrays, bint constants=True):
        cdef const float[:, ::1] mf
        cdef const double[:, ::1] md
        cdef const int[::1] kept = arrays.kept
        cdef const unsigned char[::1] need_w = arrays.need_w
        cdef const unsigned char[::1] need_hw = arrays.need_hw
        cdef int ax
        a, n = arrays.a, arrays.n
        if need_w.shape[0] != a[2] or need_hw.shape[0] != a[1] * a[2]:
            raise ValueError("plan: masks do not match the matrices")
        self.arrays = arrays
        self.itemsize = np.dtype(arrays.dtype).itemsize
        self.nk = kept.shape[0]
        for ax in range(3):
            self.pf.a[ax] = self.pd.a[ax] = a[ax]
            self.pf.n[ax] = self.pd.n[ax] = n[ax]
            # a matrix of const_transforms.h's tables is replaced by the table
            # (same values), which the kernels recognise by its address
            # (constants=False keeps the run-time path, for the tests)
            if self.itemsize == 4:
                mf = arrays.mats[ax]
                self.pf.X[ax] = wino_cx_match_f(&mf[0, 0], a[ax], n[ax]) if constants else &mf[0, 0]
            else:
                md = arrays.mats[ax]
                self.pd.X[ax] = wino_cx_match_d(&md[0, 0], a[ax], n[ax]) if constants else &md[0, 0]
        self.pf.nk = self.pd.nk = self.nk
        self.pf.kept = self.pd.kept = &kept[0] if self.nk else NULL
        self.pf.need_w = self.pd.need_w = &need_w[0]
        self.pf.need_hw = self.pd.need_hw = &need_hw[0]

    cdef int check(self, int itemsize) except -1:
        if itemsize != self.itemsize:
            raise TypeError(f"plan: built for itemsize {self.itemsize}, the arrays have {itemsize}")
        return 0

    @property
    def patch_size(self):
        """Elements of one dense tile (n_d n_h n_w) of this plan."""
        return self.pf.n[0] * self.pf.n[1] * self.pf.n[2]


# ------------------------------------------------------------- scratch sizes
def blocked_scratch_bytes(TilePlan plan, int nthreads):
    """Bytes of scratch the blocked stage kernels need with ``plan``."""
    return (wino_blocked_scratch_bytes_f(&plan.pf, nthreads) if plan.itemsize == 4
            else wino_blocked_scratch_bytes_d(&plan.pd, nthreads))


def filter_scratch_bytes(TilePlan plan, int nthreads):
    """Bytes of scratch the filter transform (and its adjoint) needs."""
    return (wino_filter_scratch_bytes_f(&plan.pf, nthreads) if plan.itemsize == 4
            else wino_filter_scratch_bytes_d(&plan.pd, nthreads))


def gemm_scratch_bytes(dtype, int nthreads):
    """Bytes of scratch (packing buffers) the GEMM needs."""
    return (wino_gemm_scratch_bytes_f(nthreads) if np.dtype(dtype).itemsize == 4
            else wino_gemm_scratch_bytes_d(nthreads))


# ------------------------------------------------------------ block kernels
cdef tuple _tuple(Py_ssize_t *v, int n):
    return tuple([v[i] for i in range(n)])


cdef int _check_x(wino_geom *g, Py_ssize_t *shape, Py_ssize_t *strides, size_t item) except -1:
    cdef int i
    want = (g.N, g.C, g.D, g.H, g.W)
    for i in range(5):
        if shape[i] != want[i]:
            raise ValueError(f"x: shape {_tuple(shape, 5)} does not match the geometry {want}")
        if strides[i] != g.xs[i] * <Py_ssize_t>item:
            raise ValueError(f"x: strides {_tuple(strides, 5)} do not match the geometry {g.xs}")
    return 0


cdef int _check_out(str name, tuple shape, tuple want) except -1:
    if shape != want:
        raise ValueError(f"{name}: shape {shape} does not match the geometry {want}")
    return 0


def input_block(CGeom geom, const floating[:, :, :, :, :] x, TilePlan plan, wino_index t0,
                wino_index tb, floating[::1] V, unsigned char[::1] scratch, int nthreads):
    """V[i, c, t] = input transform of tile t0 + t, channel c, kept position i
    (x: any strides, as recorded in geom)."""
    cdef int rc
    plan.check(sizeof(floating))
    _check_x(&geom.g, x.shape, x.strides, sizeof(floating))
    _need("V", V.shape[0], plan.nk * geom.g.C * tb)
    with nogil:
        if floating is float:
            rc = wino_input_block_f(&geom.g, &x[0, 0, 0, 0, 0], &plan.pf, t0, tb, &V[0],
                                    &scratch[0], scratch.shape[0], nthreads)
        else:
            rc = wino_input_block_d(&geom.g, &x[0, 0, 0, 0, 0], &plan.pd, t0, tb, &V[0],
                                    &scratch[0], scratch.shape[0], nthreads)
    _check(rc, "input transform")


def output_block(CGeom geom, const floating[::1] M, wino_index k0, wino_index kc, TilePlan plan,
                 wino_index t0, wino_index tb, const floating[::1] bias, floating[:, :, :, :, ::1] y,
                 unsigned char[::1] scratch, int nthreads):
    """y[:, k0:k0+kc] (tiles t0 .. t0+tb) = output transform of M[i, k, t]
    (+ bias[k0 + k]); y is the whole C-contiguous output."""
    cdef int rc
    cdef const floating *pb = NULL
    cdef wino_geom *g = &geom.g
    plan.check(sizeof(floating))
    _check_out("y", _tuple(y.shape, 5), (g.N, g.K, g.od[0], g.od[1], g.od[2]))
    if k0 < 0 or kc < 0 or k0 + kc > g.K:
        raise ValueError(f"k0, kc: channels {k0}..{k0 + kc} outside 0..{g.K}")
    _need("M", M.shape[0], plan.nk * kc * tb)
    if bias is not None:
        _need("bias", bias.shape[0], g.K)
        pb = &bias[k0]
    with nogil:
        if floating is float:
            rc = wino_output_block_f(g, &M[0], kc, g.K, &plan.pf, t0, tb, pb, &y[0, k0, 0, 0, 0],
                                     &scratch[0], scratch.shape[0], nthreads)
        else:
            rc = wino_output_block_d(g, &M[0], kc, g.K, &plan.pd, t0, tb, pb, &y[0, k0, 0, 0, 0],
                                     &scratch[0], scratch.shape[0], nthreads)
    _check(rc, "output transform")


def output_adjoint_block(CGeom geom, const floating[:, :, :, :, ::1] gy, TilePlan plan, wino_index t0,
                         wino_index tb, floating[::1] gM, unsigned char[::1] scratch, int nthreads):
    """gM[i, k, t] = adjoint of the output transform applied to grad_y."""
    cdef int rc
    cdef wino_geom *g = &geom.g
    plan.check(sizeof(floating))
    _check_out("grad_y", _tuple(gy.shape, 5), (g.N, g.K, g.od[0], g.od[1], g.od[2]))
    _need("grad_M", gM.shape[0], plan.nk * g.K * tb)
    with nogil:
        if floating is float:
            rc = wino_output_adjoint_block_f(g, &gy[0, 0, 0, 0, 0], g.K, &plan.pf, t0, tb, &gM[0],
                                             &scratch[0], scratch.shape[0], nthreads)
        else:
            rc = wino_output_adjoint_block_d(g, &gy[0, 0, 0, 0, 0], g.K, &plan.pd, t0, tb, &gM[0],
                                             &scratch[0], scratch.shape[0], nthreads)
    _check(rc, "output-transform adjoint")


def input_adjoint_block(CGeom geom, const floating[::1] gV, TilePlan plan, wino_index t0, wino_index tb,
                        floating[:, :, :, :, ::1] gx, unsigned char[::1] scratch, int nthreads):
    """gx += adjoint of the input transform applied to gV (gx C-contiguous)."""
    cdef int rc
    cdef wino_geom *g = &geom.g
    plan.check(sizeof(floating))
    _check_out("grad_x", _tuple(gx.shape, 5), (g.N, g.C, g.D, g.H, g.W))
    _need("grad_V", gV.shape[0], plan.nk * g.C * tb)
    with nogil:
        if floating is float:
            rc = wino_input_adjoint_block_f(g, &gV[0], &plan.pf, t0, tb, &gx[0, 0, 0, 0, 0],
                                            &scratch[0], scratch.shape[0], nthreads)
        else:
            rc = wino_input_adjoint_block_d(g, &gV[0], &plan.pd, t0, tb, &gx[0, 0, 0, 0, 0],
                                            &scratch[0], scratch.shape[0], nthreads)
    _check(rc, "input-transform adjoint")


# ------------------------------------------------------------------- filter
def filter_expand(const floating[::1] w, wino_index KC, TilePlan plan, floating[::1] U,
                  unsigned char[::1] scratch, int nthreads):
    """U[i, j] = filter transform of w[j] (w: KC kernels, flattened; U: (nk, KC) flattened)."""
    cdef int rc
    plan.check(sizeof(floating))
    _need("w", w.shape[0], KC * plan.patch_size)
    _need("U", U.shape[0], KC * plan.nk)
    with nogil:
        if floating is float:
            rc = wino_filter_f(&w[0], KC, &plan.pf, &U[0], &scratch[0], scratch.shape[0], nthreads)
        else:
            rc = wino_filter_d(&w[0], KC, &plan.pd, &U[0], &scratch[0], scratch.shape[0], nthreads)
    _check(rc, "filter transform")


def filter_contract(const floating[::1] gU, wino_index KC, TilePlan plan, floating[::1] gw,
                    unsigned char[::1] scratch, int nthreads):
    """gw[j] = adjoint of the filter transform applied to gU[:, j] (all positions kept)."""
    cdef int rc
    plan.check(sizeof(floating))
    _need("grad_U", gU.shape[0], KC * plan.nk)
    _need("grad_w", gw.shape[0], KC * plan.patch_size)
    with nogil:
        if floating is float:
            rc = wino_filter_adjoint_f(&gU[0], KC, &plan.pf, &gw[0], &scratch[0], scratch.shape[0], nthreads)
        else:
            rc = wino_filter_adjoint_d(&gU[0], KC, &plan.pd, &gw[0], &scratch[0], scratch.shape[0], nthreads)
    _check(rc, "filter-transform adjoint")


def product_w_scratch_bytes(TilePlan plan, int nthreads):
    """Bytes of scratch ``product_w`` needs with the filter plan ``plan``."""
    return (wino_product_w_scratch_bytes_f(&plan.pf, nthreads) if plan.itemsize == 4
            else wino_product_w_scratch_bytes_d(&plan.pd, nthreads))


def product_w_packed_len(dtype, wino_index nk, wino_index C, wino_index n):
    """Elements of the packed V that ``product_w`` reads (nk positions, C channels, n tiles)."""
    return (wino_product_w_packed_len_f(nk, C, n) if np.dtype(dtype).itemsize == 4
            else wino_product_w_packed_len_d(nk, C, n))


def product_w(const floating[:, :, ::1] w, TilePlan plan, const floating[:, :, ::1] V, wino_index k0,
              floating[:, :, ::1] M, floating[::1] Vp, bint pack_v, unsigned char[::1] scratch, int nthreads):
    """M[i] = U_i[k0:k0+kc] @ V[i] with U_i position ``plan.kept[i]`` of the filter
    transform of w (K, C, taps), made inside the product (``wino_product_w``).
    V (nk, C, n); M (nk, kc, n); Vp packed from V when ``pack_v``."""
    cdef wino_index K = w.shape[0], C = w.shape[1], n = V.shape[2], kc = M.shape[1]
    cdef int rc
    plan.check(sizeof(floating))
    if w.shape[2] != plan.patch_size:
        raise ValueError(f"w: {w.shape[2]} taps per kernel, the plan has {plan.patch_size}")
    if V.shape[0] != plan.nk or V.shape[1] != C or M.shape[0] != plan.nk or M.shape[2] != n:
        raise ValueError(f"product_w: V {_tuple(V.shape, 3)} and M {_tuple(M.shape, 3)} do not match "
                         f"{plan.nk} positions, {C} input channels")
    if k0 < 0 or k0 + kc > K:
        raise ValueError(f"k0: rows {k0}..{k0 + kc} outside the {K} output channels")
    _need("Vp", Vp.shape[0], product_w_packed_len(np.float32 if floating is float else np.float64, plan.nk, C, n))
    if plan.nk == 0 or kc == 0 or n == 0 or C == 0:
        return
    with nogil:
        if floating is float:
            rc = wino_product_w_f(&w[0, 0, 0], K, C, &plan.pf, &V[0, 0, 0], n, k0, kc, &M[0, 0, 0], &Vp[0],
                                  pack_v, &scratch[0], scratch.shape[0], nthreads)
        else:
            rc = wino_product_w_d(&w[0, 0, 0], K, C, &plan.pd, &V[0, 0, 0], n, k0, kc, &M[0, 0, 0], &Vp[0],
                                  pack_v, &scratch[0], scratch.shape[0], nthreads)
    _check(rc, "product with the filter transform")


# --------------------------------------------------------------------- GEMM
cdef int _index(str name, const int[::1] idx, Py_ssize_t nb, Py_ssize_t bound) except -1:
    cdef Py_ssize_t b
    if idx.shape[0] < nb:
        raise ValueError(f"{name}: {idx.shape[0]} entries for a batch of {nb}")
    for b in range(nb):
        if idx[b] < 0 or idx[b] >= bound:
            raise ValueError(f"{name}: entry {idx[b]} outside 0..{bound - 1}")
    return 0


def gemm_batched(const floating[:, :, :] A, const floating[:, :, :] B, floating[:, :, :] C,
                 const int[::1] a_index=None, const int[::1] c_index=None, *, bint accumulate=False,
                 unsigned char[::1] scratch, int nthreads):
    """C[c(b)] (+)= A[a(b)] @ B[b] for b < len(B), with x(b) = x_index[b] (or
    b without an index).  A (., M, K) and B (nb, K, N) take any strides (a
    transpose is a view); C (., M, N) needs contiguous rows."""
    cdef Py_ssize_t nb = B.shape[0], M = A.shape[1], K = A.shape[2], N = B.shape[2]
    cdef Py_ssize_t item = sizeof(floating)
    cdef wino_batch a, b, c
    cdef int rc
    if B.shape[1] != K or C.shape[1] != M or C.shape[2] != N:
        raise ValueError(f"gemm: shapes A {_tuple(A.shape, 3)} B {_tuple(B.shape, 3)} C {_tuple(C.shape, 3)} "
                         "do not chain as (., M, K) @ (nb, K, N) -> (., M, N)")
    if C.strides[2] != item and N > 1:
        raise ValueError("C: rows must be contiguous")
    if a_index is None:
        if A.shape[0] < nb:
            raise ValueError(f"A: {A.shape[0]} matrices for a batch of {nb}")
    else:
        _index("a_index", a_index, nb, A.shape[0])
    if c_index is None:
        if C.shape[0] < nb:
            raise ValueError(f"C: {C.shape[0]} matrices for a batch of {nb}")
    else:
        _index("c_index", c_index, nb, C.shape[0])
    for v in (A.strides[0], A.strides[1], A.strides[2], B.strides[0], B.strides[1], B.strides[2],
              C.strides[0], C.strides[1]):
        if v % item:
            raise ValueError("gemm: strides must be whole elements")
    if nb == 0 or M == 0 or N == 0:
        return
    a.data = <void *>&A[0, 0, 0]
    a.index = &a_index[0] if a_index is not None else NULL
    a.bstride, a.rstride, a.cstride = A.strides[0] // item, A.strides[1] // item, A.strides[2] // item
    b.data = <void *>&B[0, 0, 0]
    b.index = NULL
    b.bstride, b.rstride, b.cstride = B.strides[0] // item, B.strides[1] // item, B.strides[2] // item
    c.data = <void *>&C[0, 0, 0]
    c.index = &c_index[0] if c_index is not None else NULL
    c.bstride, c.rstride, c.cstride = C.strides[0] // item, C.strides[1] // item, 1
    with nogil:
        if floating is float:
            rc = wino_gemm_batched_f(nb, M, N, K, &a, &b, &c, accumulate, &scratch[0], scratch.shape[0], nthreads)
        else:
            rc = wino_gemm_batched_d(nb, M, N, K, &a, &b, &c, accumulate, &scratch[0], scratch.shape[0], nthreads)
    _check(rc, "batched GEMM")


def gemm_gathered_scratch_bytes(dtype):
    """Bytes of scratch the gathered GEMM needs (a buffer shared by the threads)."""
    return (wino_gemm_gathered_scratch_bytes_f() if np.dtype(dtype).itemsize == 4
            else wino_gemm_gathered_scratch_bytes_d())


def gemm_gathered(const floating[:, ::1] A, groups, const floating[::1] B, floating[:, ::1] C, *,
                  unsigned char[::1] scratch, int nthreads):
    """The gathered GEMM (``wino_gemm_gathered``): for each group
    ``(acol, brow, bcol, c0)`` -- three 1-D int64 arrays of offsets, in
    elements, and the group's first column of C --

        C[:, c0 + j] = sum_k A[:, acol[k]] * B[brow[k] + bcol[j]]

    ``acol`` increasing, the groups' columns disjoint and in increasing
    order.  The kernel checks every offset before it runs (ValueError)."""
    cdef Py_ssize_t M = A.shape[0], ng = len(groups), g
    cdef Py_ssize_t rsa = A.strides[0] // sizeof(floating), rsc = C.strides[0] // sizeof(floating)
    cdef const long long[::1] acol, brow, bcol
    cdef const floating *pa
    cdef const floating *pb
    cdef floating *pc
    cdef wino_gather_group *gs
    cdef int rc
    if C.shape[0] != M:
        raise ValueError(f"C: {C.shape[0]} rows, A has {M}")
    if M == 0 or ng == 0:
        return
    gs = <wino_gather_group *>malloc(ng * sizeof(wino_gather_group))
    if gs == NULL:
        raise MemoryError("gemm_gathered: group table")
    try:
        for g in range(ng):
            acol, brow, bcol, c0 = groups[g]
            if brow.shape[0] != acol.shape[0]:
                raise ValueError(f"groups[{g}]: acol and brow differ in length")
            gs[g].K, gs[g].N, gs[g].c0 = acol.shape[0], bcol.shape[0], c0
            gs[g].acol = <const wino_index *>&acol[0] if acol.shape[0] else NULL
            gs[g].brow = <const wino_index *>&brow[0] if brow.shape[0] else NULL
            gs[g].bcol = <const wino_index *>&bcol[0] if bcol.shape[0] else NULL
        pa = &A[0, 0] if A.shape[1] else NULL
        pb = &B[0] if B.shape[0] else NULL
        pc = &C[0, 0] if C.shape[1] else NULL
        with nogil:
            if floating is float:
                rc = wino_gemm_gathered_f(M, A.shape[1], pa, rsa, ng, gs, pb, B.shape[0], pc, rsc, C.shape[1],
                                          &scratch[0], scratch.shape[0], nthreads)
            else:
                rc = wino_gemm_gathered_d(M, A.shape[1], pa, rsa, ng, gs, pb, B.shape[0], pc, rsc, C.shape[1],
                                          &scratch[0], scratch.shape[0], nthreads)
    finally:
        free(gs)
    _check(rc, "gathered GEMM (an offset outside its array, acol not increasing, or the groups' "
               "columns overlapping or out of order)")


include "_cpu_affine.pxi"
include "_cpu_fused.pxi"
include "_cpu_fused_backward.pxi"
