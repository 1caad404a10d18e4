# Included by _cpu.pyx: wrappers of the fused backward pipeline
# (src/cpu/fused_backward.template.h, declared in _cpu.pxd).  Same
# conventions as the other wrappers: typed memoryviews, extents checked
# against the geometry, caller-owned scratch.

def fused_backward_scratch_bytes(TilePlan pin, TilePlan pout, wino_index tb, wino_index CV, wino_index KV,
                                 int nthreads):
    """Bytes of scratch ``fused_backward`` needs with these plans and blocking."""
    if pin.itemsize == 4:
        return wino_fused_backward_scratch_bytes_f(&pin.pf, &pout.pf, tb, CV, KV, nthreads)
    return wino_fused_backward_scratch_bytes_d(&pin.pd, &pout.pd, tb, CV, KV, nthreads)


def fused_backward(CGeom geom, const floating[:, :, :, :, :] gy, wino_index KV,
                   const floating[:, :, :, :, ::1] xcl, const floating[:, :, ::1] Ut, TilePlan pin, TilePlan pout,
                   floating[:, :, :, :, ::1] gxcl, floating[::1] parts, wino_index nchunks,
                   floating[:, :, ::1] gU, wino_index tb, unsigned char[::1] scratch, int nthreads):
    """The fused backward pass (see src/cpu/fused_backward.template.h).

    gy: (N, K, Do, Ho, Wo), any strides; KV: K rounded up to the SIMD width.
    For grad_U: xcl, the input as (N, D, H, W, CV) with unit channel stride
    (channels past C zero), parts (nchunks * nk * CV * KV values) and gU
    (P, K, C), rows at the kept positions overwritten.  For grad_x: Ut
    (nk, KV, CV), U at the kept positions zero padded, and gxcl (N, D, H, W,
    CV), overwritten.  Pass None for the operands of a gradient not wanted."""
    cdef wino_geom *g = &geom.g
    cdef Py_ssize_t item = sizeof(floating)
    cdef wino_index gs[5]
    cdef wino_index xcs[4]
    cdef wino_index CV = 0
    cdef const floating *px = NULL
    cdef const floating *pu = NULL
    cdef floating *pgx = NULL
    cdef floating *pp = NULL
    cdef floating *pgu = NULL
    cdef int i, rc
    pin.check(item)
    pout.check(item)
    _check_out("gy", _tuple(gy.shape, 5), (g.N, g.K, g.od[0], g.od[1], g.od[2]))
    for i in range(5):
        gs[i] = gy.strides[i] // item
    for i in range(4):
        xcs[i] = 0
    if xcl is None and Ut is None:
        raise ValueError("fused_backward: neither gradient asked for")
    if xcl is not None:
        if parts is None or gU is None:
            raise ValueError("fused_backward: grad_U needs xcl, parts and gU")
        _check_out("xcl", _tuple(xcl.shape, 4), (g.N, g.D, g.H, g.W))
        CV = xcl.shape[4]
        for i in range(4):
            xcs[i] = xcl.strides[i] // item
        _need("parts", parts.shape[0], nchunks * pin.nk * CV * KV)
        _check_out("gU", _tuple(gU.shape, 3), (g.a[0] * g.a[1] * g.a[2], g.K, g.C))
        px, pp, pgu = &xcl[0, 0, 0, 0, 0], &parts[0], &gU[0, 0, 0]
    if Ut is not None:
        if gxcl is None:
            raise ValueError("fused_backward: grad_x needs Ut and gxcl")
        if CV == 0:
            CV = Ut.shape[2]
        _check_out("Ut", _tuple(Ut.shape, 3), (pin.nk, KV, CV))
        _check_out("gxcl", _tuple(gxcl.shape, 5), (g.N, g.D, g.H, g.W, CV))
        pu, pgx = &Ut[0, 0, 0], &gxcl[0, 0, 0, 0, 0]
    with nogil:
        if floating is float:
            rc = wino_fused_backward_f(g, &gy[0, 0, 0, 0, 0], gs, KV, px, xcs, CV, pu, &pin.pf, &pout.pf, pgx, pp,
                                       nchunks, pgu, tb, &scratch[0], scratch.shape[0], nthreads)
        else:
            rc = wino_fused_backward_d(g, &gy[0, 0, 0, 0, 0], gs, KV, px, xcs, CV, pu, &pin.pd, &pout.pd, pgx, pp,
                                       nchunks, pgu, tb, &scratch[0], scratch.shape[0], nthreads)
    _check(rc, "fused backward")


def from_channels_last(CGeom geom, const floating[:, :, :, :, ::1] src, floating[:, :, :, :, :] dst,
                       int nthreads):
    """dst[n, c, d, h, w] = src[n, d, h, w, c] for c < C (src: (N, D, H, W,
    CP) contiguous; dst: (N, C, D, H, W), any strides)."""
    cdef wino_geom *g = &geom.g
    cdef Py_ssize_t item = sizeof(floating)
    cdef wino_index ds[5]
    cdef int i
    _check_out("src", _tuple(src.shape, 4), (g.N, g.D, g.H, g.W))
    if src.shape[4] < g.C:
        raise ValueError(f"src: {src.shape[4]} channels, fewer than {g.C}")
    _check_out("dst", _tuple(dst.shape, 5), (g.N, g.C, g.D, g.H, g.W))
    for i in range(5):
        ds[i] = dst.strides[i] // item
    with nogil:
        if floating is float:
            wino_from_channels_last_f(g, &src[0, 0, 0, 0, 0], src.shape[4], &dst[0, 0, 0, 0, 0], ds, nthreads)
        else:
            wino_from_channels_last_d(g, &src[0, 0, 0, 0, 0], src.shape[4], &dst[0, 0, 0, 0, 0], ds, nthreads)
