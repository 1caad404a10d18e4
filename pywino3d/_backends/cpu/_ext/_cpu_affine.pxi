# Included by _cpu.pyx: prologues and epilogues (src/cpu/affine.template.h,
# src/wino3d_fusion.h; declared in _cpu.pxd).  A Fusion holds the C struct
# wino_fusion and the arrays it points into; the callers (the pipelines,
# pywino3d._backends.cpu.fusion) validate what users pass first.

cdef size_t _address(a):
    return <size_t>a.__array_interface__["data"][0]


cdef class Fusion:
    """A prologue or epilogue as the C kernels take it (``wino_fusion``).

    Parameters
    ----------
    dtype : numpy dtype
        float32 or float64: every array below has it.
    scale, shift : 1-D C-contiguous arrays, optional
        The value of (sample n, channel c) at ``[n * sn + c]``.
    sn : int
        0 (per channel) or the number of channels (per sample and channel).
    act : int
        An activation code (``pywino3d._core.fusion.ACTIVATIONS``).
    alpha : float
        The activation's parameter.
    alphas : 1-D C-contiguous array, optional
        One parameter per channel (prelu).
    residual : 5-D array, optional
        Any strides that are whole elements.
    after_activation : bool
    """
    cdef wino_fusion f
    cdef object keep
    cdef public object dtype
    cdef public Py_ssize_t scale_len, alphas_len
    cdef public tuple res_shape

    def __init__(self, dtype, scale=None, shift=None, wino_index sn=0, int act=0, double alpha=0.0,
                 alphas=None, residual=None, bint after_activation=False):
        cdef int i
        self.dtype = np.dtype(dtype)
        self.keep = (scale, shift, alphas, residual)
        self.f.scale = self.f.shift = self.f.alphas = self.f.res = NULL
        self.scale_len = self.alphas_len = -1
        for name, a in (("scale", scale), ("shift", shift), ("alphas", alphas)):
            if a is None:
                continue
            if a.dtype != self.dtype or a.ndim != 1 or not a.flags.c_contiguous:
                raise ValueError(f"{name}: expected a C-contiguous 1-D {self.dtype} array, got "
                                 f"{a.dtype} of shape {a.shape}")
        lens = [a.shape[0] for a in (scale, shift) if a is not None]
        if scale is not None:
            self.f.scale = <const void *>_address(scale)
        if shift is not None:
            self.f.shift = <const void *>_address(shift)
        self.scale_len = min(lens) if lens else -1
        if alphas is not None:
            self.f.alphas = <const void *>_address(alphas)
            self.alphas_len = alphas.shape[0]
        self.f.sn = sn
        self.f.act = act
        self.f.alpha = alpha
        self.f.res_after = after_activation
        self.res_shape = None
        for i in range(5):
            self.f.rs[i] = 0
        if residual is not None:
            if residual.dtype != self.dtype or residual.ndim != 5 or any(s % self.dtype.itemsize
                                                                          for s in residual.strides):
                raise ValueError(f"residual: expected a 5-D {self.dtype} array with whole-element strides")
            self.f.res = <const void *>_address(residual)
            for i in range(5):
                self.f.rs[i] = residual.strides[i] // self.dtype.itemsize
            self.res_shape = tuple(residual.shape)

    cdef const wino_fusion *check(self, Py_ssize_t N, Py_ssize_t C, tuple out_shape, object dtype) except NULL:
        """The struct, after checking that it fits N samples of C channels
        (and a residual of out_shape) of dtype."""
        if np.dtype(dtype) != self.dtype:
            raise ValueError(f"fusion: built for {self.dtype}, used on {np.dtype(dtype)}")
        if self.scale_len >= 0 and self.scale_len < (N - 1) * self.f.sn + C:
            raise ValueError(f"fusion: scale/shift of {self.scale_len} values, {N} samples of {C} channels need "
                             f"{(N - 1) * self.f.sn + C}")
        if self.alphas_len >= 0 and self.alphas_len < C:
            raise ValueError(f"fusion: {self.alphas_len} activation parameters for {C} channels")
        if self.res_shape is not None and self.res_shape != out_shape:
            raise ValueError(f"fusion: residual of shape {self.res_shape}, the output is {out_shape}")
        if self.f.act < 0 or self.f.act >= 8:
            raise ValueError(f"fusion: unknown activation code {self.f.act}")
        return &self.f


def channel_affine(const floating[:, :, :, :, :] x, floating[:, :, :, :, :] out, Fusion f,
                   double[::1] part, double[::1] mean, double[::1] var, int nthreads):
    """out = the map of ``f`` applied to x value by value (out may be x);
    with mean and var (N * C each) and part (2 * N * C * D), also the float64
    moments of out per (sample, channel)."""
    cdef wino_index shape[5]
    cdef wino_index xs[5]
    cdef wino_index os[5]
    cdef Py_ssize_t item = sizeof(floating)
    cdef const wino_fusion *pf
    cdef double *pp = NULL
    cdef double *pm = NULL
    cdef double *pv = NULL
    cdef int i, rc
    for i in range(5):
        shape[i] = x.shape[i]
        xs[i] = x.strides[i] // item
        os[i] = out.strides[i] // item
    _check_out("out", _tuple(out.shape, 5), _tuple(x.shape, 5))
    pf = f.check(x.shape[0], x.shape[1], _tuple(x.shape, 5), np.float32 if floating is float else np.float64)
    if mean is not None or var is not None:
        if mean is None or var is None or part is None:
            raise ValueError("channel_affine: mean, var and part go together")
        _need("mean", mean.shape[0], x.shape[0] * x.shape[1])
        _need("var", var.shape[0], x.shape[0] * x.shape[1])
        _need("part", part.shape[0], 2 * x.shape[0] * x.shape[1] * x.shape[2])
        pp, pm, pv = &part[0], &mean[0], &var[0]
    if x.shape[0] * x.shape[1] * x.shape[2] * x.shape[3] * x.shape[4] == 0:
        if pm != NULL:
            for i in range(x.shape[0] * x.shape[1]):
                pm[i] = 0
                pv[i] = 0
        return
    with nogil:
        if floating is float:
            rc = wino_channel_affine_f(shape, &x[0, 0, 0, 0, 0], xs, &out[0, 0, 0, 0, 0], os, pf, pp, pm, pv,
                                       nthreads)
        else:
            rc = wino_channel_affine_d(shape, &x[0, 0, 0, 0, 0], xs, &out[0, 0, 0, 0, 0], os, pf, pp, pm, pv,
                                       nthreads)
    _check(rc, "channel_affine")


def tile_moments(CGeom geom, const double[::1] part, wino_index KP, double[::1] mean, double[::1] var,
                 int nthreads):
    """The fused pipeline's per-tile moments (``part``: [tile][2][KP]) merged
    in tile order into mean and var (N * K each, float64)."""
    cdef wino_geom *g = &geom.g
    cdef int rc
    _need("part", part.shape[0], 2 * KP * g.N * g.nt[0] * g.nt[1] * g.nt[2])
    _need("mean", mean.shape[0], g.N * g.K)
    _need("var", var.shape[0], g.N * g.K)
    if g.N * g.K == 0:
        return
    with nogil:
        rc = wino_tile_moments(g, &part[0], KP, &mean[0], &var[0], nthreads)
    _check(rc, "tile moments")
