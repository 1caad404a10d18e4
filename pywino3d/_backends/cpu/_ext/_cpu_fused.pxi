# Included by _cpu.pyx: wrappers of the fused pipeline (src/cpu/fused.template.h,
# declared in _cpu.pxd).  Same conventions as the blocked wrappers: typed
# memoryviews, extents checked against the geometry, caller-owned scratch.

def fused_scratch_bytes(TilePlan pin, TilePlan pout, wino_index tb, wino_index CP, wino_index KP,
                        int nthreads):
    """Bytes of scratch ``fused_forward`` needs with these plans and blocking."""
    if pin.itemsize == 4:
        return wino_fused_scratch_bytes_f(&pin.pf, &pout.pf, tb, CP, KP, nthreads)
    return wino_fused_scratch_bytes_d(&pin.pd, &pout.pd, tb, CP, KP, nthreads)


def to_channels_last(CGeom geom, const floating[:, :, :, :, :] x, floating[:, :, :, :, ::1] xcl,
                     int nthreads, Fusion prologue=None):
    """xcl[n, d, h, w, c] = x[n, c, d, h, w] for c < C, zero for C <= c < CP
    (x: any strides, as recorded in geom; xcl: (N, D, H, W, CP) contiguous);
    with a prologue, act(x * scale[n, c] + shift[n, c]) instead of x."""
    cdef wino_geom *g = &geom.g
    cdef const wino_fusion *pro = NULL
    cdef int rc
    _check_x(g, x.shape, x.strides, sizeof(floating))
    _check_out("xcl", _tuple(xcl.shape, 4), (g.N, g.D, g.H, g.W))
    if xcl.shape[4] < g.C:
        raise ValueError(f"xcl: {xcl.shape[4]} channels, fewer than x's {g.C}")
    if prologue is not None:
        pro = prologue.check(g.N, g.C, None, np.float32 if floating is float else np.float64)
    with nogil:
        if floating is float:
            rc = wino_to_channels_last_f(g, &x[0, 0, 0, 0, 0], xcl.shape[4], &xcl[0, 0, 0, 0, 0], pro, nthreads)
        else:
            rc = wino_to_channels_last_d(g, &x[0, 0, 0, 0, 0], xcl.shape[4], &xcl[0, 0, 0, 0, 0], pro, nthreads)
    _check(rc, "channels-last copy")


def fused_pack(const floating[:, :, ::1] U, const long long[::1] src, floating[:, :, ::1] Up, int nthreads):
    """Up[i, c, k] = U[src[i], k, c] for c < C, k < K; zero past them and
    where src[i] < 0.  U: (P, K, C); Up: (len(src), CP, KP), CP >= C, KP >= K."""
    cdef int rc
    if Up.shape[0] != src.shape[0] or Up.shape[1] < U.shape[2] or Up.shape[2] < U.shape[1]:
        raise ValueError(f"Up: shape {_tuple(Up.shape, 3)} cannot hold {src.shape[0]} positions of "
                         f"U {_tuple(U.shape, 3)} transposed")
    if src.shape[0] == 0:
        return
    with nogil:
        if floating is float:
            rc = wino_fused_pack_f(&U[0, 0, 0] if U.shape[0] else NULL, U.shape[0], U.shape[1], U.shape[2],
                                   <const wino_index *>&src[0], src.shape[0], Up.shape[1], Up.shape[2],
                                   &Up[0, 0, 0], nthreads)
        else:
            rc = wino_fused_pack_d(&U[0, 0, 0] if U.shape[0] else NULL, U.shape[0], U.shape[1], U.shape[2],
                                   <const wino_index *>&src[0], src.shape[0], Up.shape[1], Up.shape[2],
                                   &Up[0, 0, 0], nthreads)
    _check(rc, "fused weight packing (a source position past U)")


def fused_forward(CGeom geom, const floating[:, :, :, :, ::1] xcl, const floating[:, :, ::1] Up,
                  TilePlan pin, TilePlan pout, const floating[::1] bias, floating[:, :, :, :, :] y,
                  wino_index t_begin, wino_index t_end, wino_index tb, unsigned char[::1] scratch,
                  int nthreads, Fusion epilogue=None, double[::1] part=None):
    """y at tiles [t_begin, t_end) = the fused forward pass (src/cpu/fused.template.h).

    xcl: the input as (N, D, H, W, CP) with unit channel stride (any other
    strides; CP a multiple of the SIMD width, channels past C zero);
    Up: packed weights (nk, CP, KP); y: (N, K, Do, Ho, Wo), any strides.
    With an epilogue, it is applied to each tile before the store; with
    ``part`` (2 * KP doubles per tile of geom), each tile's moments go there
    (``tile_moments`` merges them)."""
    cdef const wino_fusion *epi = NULL
    cdef double *pp = NULL
    cdef wino_geom *g = &geom.g
    cdef wino_index xcs[4]
    cdef wino_index ys[5]
    cdef const floating *pb = NULL
    cdef Py_ssize_t item = sizeof(floating)
    cdef int i, rc
    pin.check(item)
    pout.check(item)
    _check_out("xcl", _tuple(xcl.shape, 4), (g.N, g.D, g.H, g.W))
    _check_out("Up", _tuple(Up.shape, 2), (pin.nk, xcl.shape[4]))
    _check_out("y", _tuple(y.shape, 5), (g.N, g.K, g.od[0], g.od[1], g.od[2]))
    for i in range(4):
        xcs[i] = xcl.strides[i] // item
    for i in range(5):
        ys[i] = y.strides[i] // item
    if bias is not None:
        _need("bias", bias.shape[0], g.K)
        pb = &bias[0]
    if epilogue is not None:
        epi = epilogue.check(g.N, g.K, (g.N, g.K, g.od[0], g.od[1], g.od[2]),
                             np.float32 if floating is float else np.float64)
    if part is not None:
        if epilogue is None:
            raise ValueError("part: tile moments need an epilogue")
        _need("part", part.shape[0], 2 * Up.shape[2] * g.N * g.nt[0] * g.nt[1] * g.nt[2])
        pp = &part[0]
    with nogil:
        if floating is float:
            rc = wino_fused_forward_f(g, &xcl[0, 0, 0, 0, 0], xcs, xcl.shape[4], &Up[0, 0, 0], g.K, Up.shape[2],
                                      &pin.pf, &pout.pf, pb, &y[0, 0, 0, 0, 0], ys, t_begin, t_end, tb,
                                      epi, pp, &scratch[0], scratch.shape[0], nthreads)
        else:
            rc = wino_fused_forward_d(g, &xcl[0, 0, 0, 0, 0], xcs, xcl.shape[4], &Up[0, 0, 0], g.K, Up.shape[2],
                                      &pin.pd, &pout.pd, pb, &y[0, 0, 0, 0, 0], ys, t_begin, t_end, tb,
                                      epi, pp, &scratch[0], scratch.shape[0], nthreads)
    _check(rc, "fused forward")
