# Included by _cpu.pyx: wrappers of the fused backward pipeline
# (src/cpu/fused_backward.template.h).

cdef extern from "wino3d_cpu.h" nogil:
    int wino_fused_backward_f(const wino_geom *g, const float *gy, const wino_index gs[5], wino_index KV,
                              const float *xcl, const wino_index xcs[4], wino_index CV, const float *Ut,
                              const wino_plan_f *pin, const wino_plan_f *pout, float *gxcl, float *parts,
                              wino_index nchunks, float *gU, wino_index tb, char *scratch, size_t stride,
                              int nthreads)
    int wino_fused_backward_d(const wino_geom *g, const double *gy, const wino_index gs[5], wino_index KV,
                              const double *xcl, const wino_index xcs[4], wino_index CV, const double *Ut,
                              const wino_plan_d *pin, const wino_plan_d *pout, double *gxcl, double *parts,
                              wino_index nchunks, double *gU, wino_index tb, char *scratch, size_t stride,
                              int nthreads)
    int wino_from_channels_last_f(const wino_geom *g, const float *src, wino_index CP, float *dst,
                                  const wino_index ds[5], int nthreads)
    int wino_from_channels_last_d(const wino_geom *g, const double *src, wino_index CP, double *dst,
                                  const wino_index ds[5], int nthreads)


cdef inline void *_ptr_or_null(a):
    return NULL if a is None else _ptr(a)


def fused_backward(CGeom geom, cnp.ndarray gy, tuple gs, wino_index KV, xcl, xcs, wino_index CV, Ut,
                   TilePlan pin, TilePlan pout, gxcl, parts, wino_index nchunks, gU, wino_index tb,
                   cnp.ndarray scratch, size_t stride, int nthreads):
    """The fused backward pipeline (see src/cpu/fused_backward.template.h).
    ``xcl``/``xcs``, ``parts`` and ``gU`` are None without grad_U; ``Ut`` and
    ``gxcl`` are None without grad_x."""
    cdef wino_index cgs[5]
    cdef wino_index cxs[4]
    cdef int i, rc
    for i in range(5):
        cgs[i] = gs[i]
    for i in range(4):
        cxs[i] = xcs[i] if xcs is not None else 0
    cdef void *pg = _ptr(gy)
    cdef void *px = _ptr_or_null(xcl)
    cdef void *pu = _ptr_or_null(Ut)
    cdef void *pgx = _ptr_or_null(gxcl)
    cdef void *pp = _ptr_or_null(parts)
    cdef void *pgu = _ptr_or_null(gU)
    cdef char *ps = <char *>_ptr(scratch)
    if pin.dtype == np.float32:
        with nogil:
            rc = wino_fused_backward_f(&geom.g, <const float *>pg, cgs, KV, <const float *>px, cxs, CV,
                                       <const float *>pu, &pin.pf, &pout.pf, <float *>pgx, <float *>pp,
                                       nchunks, <float *>pgu, tb, ps, stride, nthreads)
    else:
        with nogil:
            rc = wino_fused_backward_d(&geom.g, <const double *>pg, cgs, KV, <const double *>px, cxs, CV,
                                       <const double *>pu, &pin.pd, &pout.pd, <double *>pgx, <double *>pp,
                                       nchunks, <double *>pgu, tb, ps, stride, nthreads)
    if rc != 0:
        raise ValueError(f"pywino3d: fused backward refused its arguments (tb={tb}, nchunks={nchunks})")


def from_channels_last(CGeom geom, cnp.ndarray src, wino_index CP, cnp.ndarray dst, tuple ds, int nthreads):
    """dst[n, c, d, h, w] = src[n, d, h, w, c] for c < C (dst with element strides ds)."""
    cdef wino_index cds[5]
    cdef int i
    for i in range(5):
        cds[i] = ds[i]
    cdef void *ps = _ptr(src)
    cdef void *pd = _ptr(dst)
    if src.dtype == np.float32:
        with nogil:
            wino_from_channels_last_f(&geom.g, <const float *>ps, CP, <float *>pd, cds, nthreads)
    else:
        with nogil:
            wino_from_channels_last_d(&geom.g, <const double *>ps, CP, <double *>pd, cds, nthreads)
