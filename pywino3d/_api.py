"""The public NumPy-style API of pywino3d.

Besides the public functions, the package's own integrations
(:mod:`pywino3d.dask`) use this module's argument checks so that they raise
the same errors: :class:`_Call` (backend selection and array placement),
``_check_w``, ``_check_bias``, ``_check_U`` and ``_tile_for_filter``.  They
are internal -- no compatibility promise outside the package -- but kept
stable for those callers and documented here.
"""
from __future__ import annotations

import dataclasses

from pywino3d._backends import dispatch as _backend
from pywino3d._core.arrays import is_cupy_array
from pywino3d._core.geometry import make_geometry, n_positions, parse_kernel_size, parse_tile
from pywino3d import autotune
from pywino3d._choice import candidates_to_time, conv3d_candidates, has_direct_kernel, model_tile
from pywino3d._core.fusion import Epilogue, apply_checked, check_affine, check_epilogue, check_prologue
from pywino3d._core.transforms import MAX_KERNEL
from pywino3d._core.validation import as_columns, as_float_array

__all__ = [
    "channel_affine",
    "conv3d",
    "filter_transform",
    "filter_transform_backward",
    "winograd_conv3d",
    "winograd_conv3d_backward",
]


class _Call:
    """Backend selection and array placement for one public call.

    The backend comes from ``backend=``, the context, the global setting,
    ``PYWINO3D_BACKEND`` or ``x``'s array type; every array argument must live
    where that backend runs (``coerce=True`` copies instead), and results are
    returned in ``x``'s array type.
    """

    __slots__ = ("name", "impl", "coerce", "x_is_device")

    def __init__(self, x, backend, coerce):
        if backend is not None and not isinstance(backend, str):
            raise ValueError(f"backend: expected one of {_backend.NAMES}, got {backend!r}")
        self.name = _backend.resolve(backend, x)
        self.impl = _backend.get_impl(self.name)
        self.coerce = bool(coerce)
        self.x_is_device = is_cupy_array(x)

    def array(self, name, a, ndim=None, dtype=None):
        return as_float_array(name, a, ndim=ndim, dtype=dtype, backend=self.impl, coerce=self.coerce)

    def columns(self, columns, npos):
        if columns is not None and is_cupy_array(columns):
            columns = columns.get()  # small index arrays follow x without ceremony
        return as_columns(columns, npos)

    def workers(self, workers):
        return self.impl.resolve_workers(workers)

    def result(self, out):
        """Return results in x's array type (only differs with coerce=True)."""
        if not self.coerce:
            return out
        home = _backend.get_impl("cuda" if self.x_is_device else "cpu")
        if home is self.impl:
            return out
        return tuple(home.to_own(o) for o in out) if isinstance(out, tuple) else home.to_own(out)


def _forward(call, g, x, U, bias, kept, nthreads, prologue=None, epilogue=None):
    """Run the forward pass.  Outputs that need no kernel -- an empty output,
    no kept position, no input channel (y = bias) -- are made here, once for
    every backend; the backends see only non-trivial problems.

    ``prologue`` and ``epilogue`` are checked maps (:func:`_check_fusion`) or
    None.  A backend that fuses them has ``forward_fused`` (the CPU); on the
    others (CUDA) the reference of :mod:`pywino3d._core.fusion` runs around
    the plain forward pass.  Returns y, or (y, mean, var) when the epilogue
    asks for stats."""
    if g.N * g.K * g.out[0] * g.out[1] * g.out[2] == 0 or kept.size == 0 or g.C == 0:
        y = call.impl.xp.zeros((g.N, g.K, *g.out), dtype=x.dtype)
        if bias is not None and y.size:
            y[...] = bias.reshape(1, g.K, 1, 1, 1)
        return y if epilogue is None else apply_checked(y, epilogue)
    if prologue is None and epilogue is None:
        return call.impl.forward(g, x, U, bias, kept, nthreads)
    fused = getattr(call.impl, "forward_fused", None)
    if fused is not None:
        return fused(g, x, U, bias, kept, nthreads, prologue, epilogue)
    if prologue is not None:
        x = apply_checked(x, prologue)
    y = call.impl.forward(g, x, U, bias, kept, nthreads)
    return y if epilogue is None else apply_checked(y, epilogue)


def _check_fusion(call, x, g, prologue, epilogue):
    """(prologue, epilogue) checked for input x and geometry g (None where
    absent or, for a prologue, the identity)."""
    xp = call.impl.xp
    epi = epilogue
    if epilogue is not None and isinstance(epilogue, Epilogue) and epilogue.residual is not None:
        epi = dataclasses.replace(epilogue, residual=call.array("epilogue.residual", epilogue.residual, ndim=5,
                                                                dtype=x.dtype))
    return (check_prologue(prologue, g.N, g.C, x.dtype, xp),
            check_epilogue(epi, (g.N, g.K, *g.out), x.dtype, xp))


def _backward(call, g, gy, x, U, kept, nthreads):
    """Run the backward pass; all-zero gradients (nothing kept, no tile, no
    channel) are made here, once for every backend."""
    if kept.size == 0 or g.ntiles == 0 or g.C == 0 or g.K == 0:
        xp = call.impl.xp
        return xp.zeros(x.shape, dtype=x.dtype), xp.zeros((g.npos, g.K, g.C), dtype=x.dtype)
    return call.impl.backward(g, gy, x, U, kept, nthreads)


def _check_bias(call, bias, K, dtype):
    if bias is None:
        return None
    b = call.array("bias", bias, ndim=1, dtype=dtype)
    if b.shape[0] != K:
        raise ValueError(f"bias: expected shape ({K},) (one value per output channel), got {b.shape}")
    return call.impl.xp.ascontiguousarray(b)


def _check_w(call, w, x):
    w = call.array("w", w, ndim=5, dtype=x.dtype)
    if w.shape[1] != x.shape[1]:
        raise ValueError(
            f"w: expected {x.shape[1]} input channels (w.shape[1] == x.shape[1]), got w.shape {w.shape}"
        )
    return _check_kernel_extent(w)


def _check_kernel_extent(w):
    extents = w.shape[2:]
    if min(extents) < 1 or max(extents) > MAX_KERNEL:
        raise ValueError(f"w: kernel extents must be in 1..{MAX_KERNEL}, got shape {w.shape}")
    return w


def _tile_for_filter(tile, name="tile"):
    if isinstance(tile, str):
        raise ValueError(f"{name}: expected an int or 3 ints here, got {tile!r} "
                         "('auto' is only meaningful in conv3d)")
    return parse_tile(tile)


def _check_U(U, g, name="U"):
    if U.shape[0] != g.npos or U.shape[2] != g.C:
        raise ValueError(
            f"{name}: expected shape (positions={g.npos}, K, C={g.C}) for tile {g.tile} and "
            f"kernel_size {g.ksize}, got {U.shape}"
        )
    return U


def _layout(x):
    """Memory layout of ``x`` (part of the autotune key)."""
    if x.flags.c_contiguous:
        return "ncdhw"
    if x.transpose(0, 2, 3, 4, 1).flags.c_contiguous:
        return "ndhwc"
    return "strided"


def _auto_tile(call, g, x, w, bias, padding, nthreads):
    """``tile="auto"``: the cost model's tile, or -- where the model is unsure
    and tuning is on (CPU backend) -- the fastest measured candidate, filter
    transform included (``docs/autotune.md``)."""
    ksize = g.ksize
    cands = conv3d_candidates(g.out, ksize, g.N, g.C, g.K, x.dtype.itemsize, direct=has_direct_kernel(call.name))
    timed = candidates_to_time(cands) if call.name == "cpu" else []
    if not timed or not autotune.enabled():
        return model_tile(g.out, ksize, g.N, g.C, g.K, x.dtype.itemsize, call.name)
    key = ("cpu", g.N, g.C, g.K, *g.spatial, *ksize, *(p for ab in g.pads for p in ab),
           bias is not None, _layout(x))

    def runner(tile):
        def run():  # the geometry is built only when this candidate is timed
            gt = make_geometry(x.shape, g.K, ksize, padding, tile)
            kept = as_columns(None, gt.npos)
            U = call.impl.conv_weights(w, tile, kept, nthreads, gt)
            _forward(call, gt, x, U, bias, kept, nthreads)
        return run

    decision = autotune.choose("conv3d", key, {c.name: runner(c.tile) for c in timed},
                               dtype=x.dtype, threads=nthreads)
    return next(c.tile for c in timed if c.name == decision.best)


def conv3d(x, w, bias=None, *, padding=0, tile="auto", workers=None, backend=None, coerce=False, prologue=None,
           epilogue=None):
    """3-D cross-correlation (stride 1) computed with Winograd F(m^3, r^3).

    Matches ``torch.nn.functional.conv3d`` with stride 1, dilation 1 and
    groups 1.

    Parameters
    ----------
    x : array_like, shape (N, C, D, H, W)
        Input, float32 or float64.
    w : array_like, shape (K, C, rd, rh, rw)
        Filters, same dtype as ``x``; each kernel extent in 1..7.
    bias : array_like, shape (K,), optional
    padding : int, tuple of 3 ints, "same" or "valid"
        Zero padding on both sides of each axis; ``"same"`` keeps the
        spatial size (the extra element of an even kernel goes at the end).
    tile : int, tuple of 3 ints or "auto"
        Output tile size m per axis (1..8).  ``1`` is direct convolution.
        ``"auto"`` picks a tile with the cost model of ``pywino3d._choice.cost``
        and, where the model is unsure, by timing the plausible tiles on this
        problem once per machine (:mod:`pywino3d.autotune`; first call
        slower, see ``docs/autotune.md``; ``PYWINO3D_AUTOTUNE=0`` turns it
        off).  Only tiles with float32 relative error below 3e-5 qualify.
    workers : int, optional
        Threads, as in :func:`scipy.fft.fft`: None follows OMP_NUM_THREADS
        and threadpoolctl limits, -1 uses all cores.  The result does not
        depend on it, bit for bit.  Ignored on the GPU.
    backend : {"cpu", "cuda", "auto"}, optional
        Overrides the backend in force (see :func:`pywino3d.use_backend`).
    coerce : bool, optional
        Copy arrays between host and device when they do not live where the
        backend runs, instead of raising TypeError.
    prologue : pywino3d.Prologue, optional
        A per-(sample, channel) scale and shift and an activation applied to
        every value of x as the convolution reads it (the zero padding stays
        zero): ``conv(act(x * scale + shift))`` -- a norm and activation
        before the convolution, without writing the normalized x.
    epilogue : pywino3d.Epilogue, optional
        Per-channel scale and shift, residual, activation and statistics
        applied to each output value before it is stored (order:
        :mod:`pywino3d._core.fusion`).

    Returns
    -------
    y : ndarray, shape (N, K, Do, Ho, Wo)
        With ``Do = D + 2 * pad_d - rd + 1`` and so on; x's dtype.
    mean, var : ndarray, shape (N, K), float64
        Only with ``epilogue.stats``: the mean and biased variance of y per
        (sample, channel); the result is then ``(y, mean, var)``.

    Examples
    --------
    >>> import numpy as np
    >>> import pywino3d
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((1, 2, 6, 6, 6)).astype(np.float32)
    >>> w = rng.standard_normal((3, 2, 3, 3, 3)).astype(np.float32)
    >>> y = pywino3d.conv3d(x, w, padding=1, tile=2)
    >>> y.shape
    (1, 3, 6, 6, 6)
    >>> ref = pywino3d.testing.conv3d_reference(x, w, padding=1)
    >>> bool(np.allclose(y, ref, atol=1e-4))
    True

    An instance norm's statistics and a leaky ReLU fused into the
    convolutions: the first returns the moments of its output, the second
    normalizes and activates its input as it reads it.

    >>> w2 = rng.standard_normal((2, 3, 3, 3, 3)).astype(np.float32)
    >>> y1, mean, var = pywino3d.conv3d(x, w, padding=1, tile=2,
    ...                                 epilogue=pywino3d.Epilogue(stats=True))
    >>> scale = 1 / np.sqrt(var + 1e-5)
    >>> pro = pywino3d.Prologue(scale=scale, shift=-mean * scale, activation="leaky_relu")
    >>> y2 = pywino3d.conv3d(y1, w2, padding=1, tile=2, prologue=pro)
    >>> normed = ((y1 - mean[:, :, None, None, None]) * scale[:, :, None, None, None]).astype(np.float32)
    >>> act = np.where(normed >= 0, normed, np.float32(0.01) * normed)
    >>> bool(np.allclose(y2, pywino3d.conv3d(act, w2, padding=1, tile=2), atol=1e-4))
    True
    """
    call, x, w, bias, nthreads, g = _conv3d_setup(x, w, bias, padding, workers, backend, coerce)
    K, ksize = w.shape[0], w.shape[2:]
    if isinstance(tile, str):
        if tile != "auto":
            raise ValueError(f"tile: expected an int, 3 ints or 'auto', got {tile!r}")
        tile = _auto_tile(call, g, x, w, bias, padding, nthreads)
    tile = parse_tile(tile)
    g = make_geometry(x.shape, K, ksize, padding, tile)
    pro, epi = _check_fusion(call, x, g, prologue, epilogue)
    kept = as_columns(None, g.npos)
    U = call.impl.conv_weights(w, tile, kept, nthreads, g)
    return call.result(_forward(call, g, x, U, bias, kept, nthreads, pro, epi))


def _conv3d_setup(x, w, bias, padding, workers, backend, coerce):
    """conv3d's checked arguments: (call, x, w, bias, threads, tile-1 geometry)."""
    call = _Call(x, backend, coerce)
    x = call.array("x", x, ndim=5)
    w = _check_w(call, w, x)
    bias = _check_bias(call, bias, w.shape[0], x.dtype)
    nthreads = call.workers(workers)
    g = make_geometry(x.shape, w.shape[0], w.shape[2:], padding, (1, 1, 1))
    return call, x, w, bias, nthreads, g


def auto_tile(x, w, bias=None, *, padding=0, workers=None, backend=None):
    """The tile ``conv3d(x, w, bias, padding=..., tile="auto")`` runs, tuning
    first where it would (internal: the benchmarks report it)."""
    call, x, w, bias, nthreads, g = _conv3d_setup(x, w, bias, padding, workers, backend, False)
    return parse_tile(_auto_tile(call, g, x, w, bias, padding, nthreads))


def filter_transform(w, tile, *, out=None, workers=None, backend=None, coerce=False):
    """Winograd-domain weights U = (G_d x G_h x G_w) w for every filter.

    Parameters
    ----------
    w : array_like, shape (K, C, rd, rh, rw)
    tile : int or tuple of 3 ints
        Output tile size per axis.
    out : ndarray, shape (P, K, C), optional
        Where to write U: C-contiguous, writeable, of w's dtype, on the
        backend's device, not overlapping w.  Re-transforming weights into
        the same array skips the page faults of a fresh U, which cost more
        than the transform itself on large layers (``docs/benchmarks_layers.md``).

    Returns
    -------
    U : ndarray, shape (P, K, C)
        ``P = alpha_d * alpha_h * alpha_w`` positions in C order over
        (d, h, w), ``alpha = m + r - 1``; ``out`` when given.

    Examples
    --------
    >>> import numpy as np, pywino3d
    >>> w = np.ones((4, 2, 3, 3, 3))
    >>> pywino3d.filter_transform(w, 2).shape
    (64, 4, 2)
    """
    call = _Call(w, backend, coerce)
    w = _check_kernel_extent(call.array("w", w, ndim=5))
    tile = _tile_for_filter(tile)
    kept = as_columns(None, n_positions(tile, w.shape[2:]))
    nthreads = call.workers(workers)
    if out is None:
        return call.result(call.impl.filter_transform(w, tile, kept, nthreads))
    _check_out(call, out, (kept.size, *w.shape[:2]), w)
    call.impl.filter_transform(w, tile, kept, nthreads, out=out)
    return out


def _check_out(call, out, shape, w):
    """``out=`` of filter_transform: the exact array U is written to."""
    if not call.impl.owns(out):
        raise TypeError(f"out: expected an array of the {call.name!r} backend "
                        f"({call.impl.xp.__name__}.ndarray), got {type(out).__name__}")
    if tuple(out.shape) != shape:
        raise ValueError(f"out: expected shape {shape} (positions, K, C), got {tuple(out.shape)}")
    if out.dtype != w.dtype:
        raise TypeError(f"out: expected dtype {w.dtype} (w's), got {out.dtype}")
    flags = out.flags
    if not flags.c_contiguous:
        raise ValueError("out: must be C-contiguous")
    if not flags.writeable:
        raise ValueError("out: is read-only")
    if getattr(out, "device", None) != getattr(w, "device", None):
        raise ValueError(f"out: is on device {out.device}, w on {w.device}")
    xp = call.impl.xp
    if xp.may_share_memory(out, w) and xp.shares_memory(out, w):  # the bounds first: cheap
        raise ValueError("out: overlaps w")


def filter_transform_backward(grad_U, kernel_size, tile, *, workers=None, backend=None, coerce=False):
    """Gradient with respect to ``w`` of :func:`filter_transform`.

    Parameters
    ----------
    grad_U : array_like, shape (P, K, C)
    kernel_size : int or tuple of 3 ints
    tile : int or tuple of 3 ints

    Returns
    -------
    grad_w : ndarray, shape (K, C, rd, rh, rw)

    Examples
    --------
    >>> import numpy as np, pywino3d
    >>> gU = np.ones((64, 4, 2))
    >>> pywino3d.filter_transform_backward(gU, 3, 2).shape
    (4, 2, 3, 3, 3)
    """
    call = _Call(grad_U, backend, coerce)
    ksize = parse_kernel_size(kernel_size)
    tile = _tile_for_filter(tile)
    gU = call.array("grad_U", grad_U, ndim=3)
    P = n_positions(tile, ksize)
    if gU.shape[0] != P:
        raise ValueError(f"grad_U: expected {P} positions for tile {tile} and kernel_size {ksize}, "
                         f"got shape {gU.shape}")
    return call.result(call.impl.filter_transform_backward(gU, ksize, tile, call.workers(workers)))


def _prepare(call, x, U, kernel_size, tile, padding, columns):
    x = call.array("x", x, ndim=5)
    ksize = parse_kernel_size(kernel_size)
    tile = _tile_for_filter(tile)
    U = call.array("U", U, ndim=3, dtype=x.dtype)
    g = make_geometry(x.shape, U.shape[1], ksize, padding, tile)
    _check_U(U, g)
    kept = call.columns(columns, g.npos)
    return x, U, g, kept


def winograd_conv3d(x, U, *, kernel_size, tile, padding=0, bias=None, columns=None, workers=None,
                    backend=None, coerce=False, prologue=None, epilogue=None):
    """Convolution with Winograd-domain weights, optionally column-sparse.

    Parameters
    ----------
    x : array_like, shape (N, C, D, H, W)
    U : array_like, shape (P, K, C)
        Winograd-domain weights, e.g. from :func:`filter_transform`.
    kernel_size : int or tuple of 3 ints
    tile : int or tuple of 3 ints
    padding : int, tuple of 3 ints, "same" or "valid"
    bias : array_like, shape (K,), optional
    columns : 1-D array of int, optional
        Kept positions (columns).  Pruned positions are skipped in the input
        transform, the product and the output transform; the result equals
        the dense result with ``U`` zeroed at the pruned positions.
    workers : int, optional
    backend, coerce, prologue, epilogue
        As in :func:`conv3d`.

    Returns
    -------
    y : ndarray, shape (N, K, Do, Ho, Wo)
    mean, var : ndarray, shape (N, K), float64
        Only with ``epilogue.stats`` (the result is then ``(y, mean, var)``).

    Examples
    --------
    >>> import numpy as np, pywino3d
    >>> rng = np.random.default_rng(1)
    >>> x = rng.standard_normal((1, 2, 5, 5, 5))
    >>> U = pywino3d.filter_transform(rng.standard_normal((3, 2, 3, 3, 3)), 2)
    >>> y = pywino3d.winograd_conv3d(x, U, kernel_size=3, tile=2, padding=1,
    ...                              columns=np.arange(0, 64, 2))
    >>> U2 = U.copy(); U2[1::2] = 0
    >>> dense = pywino3d.winograd_conv3d(x, U2, kernel_size=3, tile=2, padding=1)
    >>> bool(np.allclose(y, dense))
    True
    """
    call = _Call(x, backend, coerce)
    x, U, g, kept = _prepare(call, x, U, kernel_size, tile, padding, columns)
    bias = _check_bias(call, bias, g.K, x.dtype)
    pro, epi = _check_fusion(call, x, g, prologue, epilogue)
    return call.result(_forward(call, g, x, U, bias, kept, call.workers(workers), pro, epi))


def channel_affine(x, scale=None, shift=None, *, activation="identity", alpha=None, residual=None,
                   after_activation=False, stats=False, out=None, workers=None, backend=None, coerce=False):
    """A per-(sample, channel) affine map, residual and activation in one
    pass over x, with the statistics of the result.

    The maths of an :class:`~pywino3d.Epilogue` applied to x itself: what a
    normalization and activation become when their consumer is not a
    convolution (pooling, concatenation, the network's output)::

        t = x * scale[n, c] + shift[n, c]
        t = t + residual        (unless after_activation)
        t = act(t)
        t = t + residual        (if after_activation)

    Parameters
    ----------
    x : array_like, shape (N, C, D, H, W)
        float32 or float64, any strides.
    scale, shift : array_like, shape (N, C) or (C,), optional
        Missing means 1 and 0; cast to x's dtype.
    activation : str
        One of ``pywino3d._core.fusion.ACTIVATIONS``: "identity", "relu",
        "leaky_relu", "prelu", "elu", "silu", "sigmoid", "tanh".
    alpha : float or array_like of shape (C,), optional
        The activation's parameter (slope of leaky_relu and prelu -- prelu
        also one per channel --, scale of elu); torch's defaults.
    residual : array_like, shape (N, C, D, H, W), optional
        Same dtype as x.
    after_activation : bool
        Add the residual after the activation instead of before.
    stats : bool
        Also return the float64 mean and biased variance of the result per
        (sample, channel), the same bits for any ``workers``.
    out : ndarray, optional
        Where to write the result: x's shape and dtype, writeable; may be x
        itself (in place) but must not otherwise overlap x or residual.
    workers, backend, coerce
        As in :func:`conv3d`.  On the CUDA backend the map runs as CuPy
        array operations (the reference of ``pywino3d._core.fusion``).

    Returns
    -------
    y : ndarray, shape (N, C, D, H, W)
        ``out`` when given.  With ``stats``, ``(y, mean, var)``, mean and
        var of shape (N, C).

    Examples
    --------
    Instance norm and leaky ReLU in one pass, from statistics the previous
    convolution returned (here computed with NumPy):

    >>> import numpy as np, pywino3d
    >>> x = np.random.default_rng(0).standard_normal((1, 4, 8, 8, 8)).astype(np.float32)
    >>> mean, var = x.mean(axis=(2, 3, 4)), x.var(axis=(2, 3, 4))
    >>> scale = 1 / np.sqrt(var + 1e-5)
    >>> y, m2, v2 = pywino3d.channel_affine(x, scale, -mean * scale, activation="leaky_relu",
    ...                                     stats=True)
    >>> bool(np.allclose(y.min(axis=(2, 3, 4)) < 0, True))
    True
    >>> pywino3d.channel_affine(x, 2.0 * np.ones(4), out=x) is x   # in place
    True
    """
    call = _Call(x, backend, coerce)
    x = call.array("x", x, ndim=5)
    N, C = x.shape[:2]
    if residual is not None:
        residual = call.array("residual", residual, ndim=5, dtype=x.dtype)
    checked = check_affine("channel_affine", scale, shift, activation, alpha, N, C, x.dtype, call.impl.xp,
                           residual=residual, out_shape=x.shape, after_activation=after_activation, stats=stats)
    nthreads = call.workers(workers)
    if out is not None:
        _check_affine_out(call, out, x, residual)
    impl = getattr(call.impl, "channel_affine", None)
    if impl is None:
        return call.result(apply_checked(x, checked, out=out))
    return call.result(impl(x, checked, out, nthreads))  # out=None: the backend allocates


def _check_affine_out(call, out, x, residual):
    """``out=`` of channel_affine: x's shape and dtype, writeable, x itself
    or apart from x and residual."""
    if not call.impl.owns(out):
        raise TypeError(f"out: expected an array of the {call.name!r} backend "
                        f"({call.impl.xp.__name__}.ndarray), got {type(out).__name__}")
    if tuple(out.shape) != tuple(x.shape):
        raise ValueError(f"out: expected x's shape {tuple(x.shape)}, got {tuple(out.shape)}")
    if out.dtype != x.dtype:
        raise TypeError(f"out: expected x's dtype {x.dtype}, got {out.dtype}")
    if not getattr(out.flags, "writeable", True):  # CuPy arrays have no such flag
        raise ValueError("out: is read-only")
    if any(s % out.itemsize for s in out.strides):
        raise ValueError("out: strides must be whole elements")
    xp = call.impl.xp
    for name, a in (("x", x), ("residual", residual)):
        if a is None or not xp.may_share_memory(out, a):
            continue
        same = a.strides == out.strides and _data_address(a) == _data_address(out)
        if not same and xp.shares_memory(out, a):
            raise ValueError(f"out: overlaps {name} without being the same array (in place needs out "
                             f"to be {name} itself)")


def _data_address(a):
    return a.__array_interface__["data"][0] if hasattr(a, "__array_interface__") else a.data.ptr


def winograd_conv3d_backward(grad_y, x, U, *, kernel_size, tile, padding=0, columns=None,
                             workers=None, backend=None, coerce=False):
    """Gradients of :func:`winograd_conv3d` with respect to ``x`` and ``U``.

    Parameters
    ----------
    grad_y : array_like, shape (N, K, Do, Ho, Wo)
    x, U, kernel_size, tile, padding, columns, workers
        As in :func:`winograd_conv3d`.

    Returns
    -------
    grad_x : ndarray, shape (N, C, D, H, W)
    grad_U : ndarray, shape (P, K, C)
        Zero at pruned positions.  ``filter_transform_backward(grad_U, ...)``
        turns it into the gradient of spatial weights.

    Examples
    --------
    >>> import numpy as np, pywino3d
    >>> rng = np.random.default_rng(2)
    >>> x = rng.standard_normal((1, 2, 4, 4, 4))
    >>> U = pywino3d.filter_transform(rng.standard_normal((3, 2, 3, 3, 3)), 2)
    >>> gy = np.ones((1, 3, 2, 2, 2))
    >>> gx, gU = pywino3d.winograd_conv3d_backward(gy, x, U, kernel_size=3, tile=2)
    >>> gx.shape, gU.shape
    ((1, 2, 4, 4, 4), (64, 3, 2))
    """
    call = _Call(x, backend, coerce)
    x, U, g, kept = _prepare(call, x, U, kernel_size, tile, padding, columns)
    gy = call.array("grad_y", grad_y, ndim=5, dtype=x.dtype)
    want = (g.N, g.K, *g.out)
    if tuple(gy.shape) != want:
        raise ValueError(f"grad_y: expected shape {want} (the output's shape), got {gy.shape}")
    return call.result(_backward(call, g, gy, x, U, kept, call.workers(workers)))
