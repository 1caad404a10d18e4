# Included by _cpu.pyx: wrappers of the fused cache-resident pipeline
# (src/cpu/fused.template.h).

cdef extern from "wino3d_cpu.h" nogil:
    size_t wino_fused_scratch_bytes_f(const wino_plan_f *pin, const wino_plan_f *pout, wino_index tb, wino_index CP, wino_index KP)
    size_t wino_fused_scratch_bytes_d(const wino_plan_d *pin, const wino_plan_d *pout, wino_index tb, wino_index CP, wino_index KP)
    int wino_to_channels_last_f(const wino_geom *g, const float *x, wino_index CP, float *xcl, int nthreads)
    int wino_to_channels_last_d(const wino_geom *g, const double *x, wino_index CP, double *xcl, int nthreads)
    int wino_fused_forward_f(const wino_geom *g, const float *xcl, const wino_index xcs[4], wino_index CP,
                             const float *Up, wino_index K, wino_index KP, const wino_plan_f *pin,
                             const wino_plan_f *pout, const float *bias, float *y, const wino_index ys[5],
                             wino_index tb, char *scratch, size_t stride, int nthreads)
    int wino_fused_forward_d(const wino_geom *g, const double *xcl, const wino_index xcs[4], wino_index CP,
                             const double *Up, wino_index K, wino_index KP, const wino_plan_d *pin,
                             const wino_plan_d *pout, const double *bias, double *y, const wino_index ys[5],
                             wino_index tb, char *scratch, size_t stride, int nthreads)


def fused_scratch_bytes(TilePlan pin, TilePlan pout, wino_index tb, wino_index CP, wino_index KP):
    """Bytes of scratch one thread of the fused pipeline needs."""
    if pin.dtype == np.float32:
        return wino_fused_scratch_bytes_f(&pin.pf, &pout.pf, tb, CP, KP)
    return wino_fused_scratch_bytes_d(&pin.pd, &pout.pd, tb, CP, KP)


def to_channels_last(CGeom geom, cnp.ndarray x, wino_index CP, cnp.ndarray xcl, int nthreads):
    """xcl[n, d, h, w, c] = x[n, c, d, h, w] for c < C, zero for C <= c < CP."""
    cdef void *px = _ptr(x)
    cdef void *pc = _ptr(xcl)
    if x.dtype == np.float32:
        with nogil:
            wino_to_channels_last_f(&geom.g, <const float *>px, CP, <float *>pc, nthreads)
    else:
        with nogil:
            wino_to_channels_last_d(&geom.g, <const double *>px, CP, <double *>pc, nthreads)


def fused_forward(CGeom geom, cnp.ndarray xcl, tuple xcs, wino_index CP, cnp.ndarray Up,
                  wino_index K, wino_index KP, TilePlan pin, TilePlan pout, bias,
                  cnp.ndarray y, tuple ys, wino_index tb, cnp.ndarray scratch, size_t stride,
                  int nthreads):
    """The fused forward pipeline (see src/cpu/fused.template.h)."""
    cdef wino_index cxs[4]
    cdef wino_index cys[5]
    cdef int i, rc
    for i in range(4):
        cxs[i] = xcs[i]
    for i in range(5):
        cys[i] = ys[i]
    cdef void *px = _ptr(xcl)
    cdef void *pu = _ptr(Up)
    cdef void *py = _ptr(y)
    cdef char *ps = <char *>_ptr(scratch)
    cdef void *pb = NULL
    if bias is not None:
        pb = _ptr(bias)
    if pin.dtype == np.float32:
        with nogil:
            rc = wino_fused_forward_f(&geom.g, <const float *>px, cxs, CP, <const float *>pu, K, KP, &pin.pf,
                                      &pout.pf, <const float *>pb, <float *>py, cys, tb, ps, stride, nthreads)
    else:
        with nogil:
            rc = wino_fused_forward_d(&geom.g, <const double *>px, cxs, CP, <const double *>pu, K, KP, &pin.pd,
                                      &pout.pd, <const double *>pb, <double *>py, cys, tb, ps, stride, nthreads)
    _check(rc, "fused forward")

