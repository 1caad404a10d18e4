"""What a convolution may fuse around itself: the prologue applied to each
input value as it is read, and the epilogue applied to each output value
before it is written (issue 28: whole networks, not only convolutions).

This module holds the *meaning* of a fusion -- the activation kinds, the
order of the epilogue's steps, the statistics it returns -- and a reference
implementation in array operations (NumPy or CuPy, any backend).  The CPU
kernels compute the same values in the pipelines' own loops; the tests
compare the two.

Prologue (per input value ``x[n, c, ...]`` inside the volume)::

    x' = act(x * scale[n, c] + shift[n, c])

The convolution's zero padding is applied *after* the prologue (the padded
border is zero, as when the normalized activation is padded): this is what a
network computing ``conv(act(norm(x)))`` does.

Epilogue (per output value ``t = conv(x')[n, k, ...] + bias[k]``)::

    t = t * scale[k] + shift[k]
    t = t + residual            (when residual is given and not after_activation)
    t = act(t)
    t = t + residual            (when residual is given and after_activation)
    y = t

and, with ``stats=True``, the mean and the biased variance of ``y`` over
each (sample, channel)'s voxels in float64 -- what an InstanceNorm (per
channel) or a GroupNorm (merged per group, :func:`group_moments`) that
follows needs, so it needs no separate statistics pass.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import numpy as np

from pywino3d._core.arrays import array_module

#: Activation kinds and their codes in the C kernels (``src/wino3d_fusion.h``).
ACTIVATIONS = {"identity": 0, "relu": 1, "leaky_relu": 2, "prelu": 3, "elu": 4, "silu": 5, "sigmoid": 6,
               "tanh": 7}

#: Default ``alpha`` of the kinds that take one (torch's defaults).
DEFAULT_ALPHA = {"leaky_relu": 0.01, "prelu": 0.25, "elu": 1.0}


def check_activation(name, activation, alpha):
    """(activation, alpha) validated: a kind of :data:`ACTIVATIONS` and its
    parameter (a float; for ``prelu`` a float or one slope per channel)."""
    if activation is None:
        activation = "identity"
    if activation not in ACTIVATIONS:
        raise ValueError(f"{name}: activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    if alpha is None:
        alpha = DEFAULT_ALPHA.get(activation, 0.0)
    if activation != "prelu" and np.ndim(alpha) != 0:
        raise ValueError(f"{name}: alpha of {activation!r} must be a scalar, got shape {np.shape(alpha)}")
    if np.ndim(alpha) == 0 and not math.isfinite(float(alpha)):
        raise ValueError(f"{name}: alpha must be finite, got {alpha!r}")
    return activation, alpha


def activate(xp, t, activation, alpha, channel_axis=1):
    """``act(t)`` in array operations (the reference of the kernels' code).
    A per-channel ``alpha`` (prelu) is broadcast along ``channel_axis``."""
    if activation == "identity":
        return t
    if activation == "relu":
        return xp.maximum(t, 0)
    if activation in ("leaky_relu", "prelu"):
        a = alpha
        if np.ndim(alpha):
            shape = [1] * t.ndim
            shape[channel_axis] = -1
            a = xp.asarray(alpha, dtype=t.dtype).reshape(shape)
        return xp.where(t >= 0, t, t * a)
    if activation == "elu":
        return xp.where(t > 0, t, alpha * xp.expm1(xp.minimum(t, 0)))
    if activation == "silu":
        return t / (1 + xp.exp(-t))
    if activation == "sigmoid":
        return 1 / (1 + xp.exp(-t))
    if activation == "tanh":
        return xp.tanh(t)
    raise ValueError(f"activation: unknown kind {activation!r}")


@dataclasses.dataclass(frozen=True)
class Prologue:
    """A per-(sample, channel) affine map and an activation applied to every
    input value as the convolution reads it (padding stays zero).

    Parameters
    ----------
    scale, shift : array_like, shape (N, C) or (C,), optional
        Missing means 1 and 0.
    activation : str
        One of :data:`ACTIVATIONS`.
    alpha : float or array_like of shape (C,), optional
        The activation's parameter (:data:`DEFAULT_ALPHA`).

    Examples
    --------
    An instance norm (statistics ``mean``, ``var`` of x) and a ReLU read
    into the convolution:

    >>> import numpy as np, pywino3d
    >>> x = np.random.default_rng(0).standard_normal((1, 2, 6, 6, 6)).astype(np.float32)
    >>> w = np.ones((3, 2, 3, 3, 3), np.float32)
    >>> mean, var = x.mean(axis=(2, 3, 4)), x.var(axis=(2, 3, 4))
    >>> scale = 1 / np.sqrt(var + 1e-5)
    >>> pro = pywino3d.Prologue(scale=scale, shift=-mean * scale, activation="relu")
    >>> pywino3d.conv3d(x, w, padding=1, tile=2, prologue=pro).shape
    (1, 3, 6, 6, 6)
    """
    scale: Any = None
    shift: Any = None
    activation: str = "identity"
    alpha: Any = None


@dataclasses.dataclass(frozen=True)
class Epilogue:
    """What happens to each output value before it is written (see the
    module docstring for the order).

    Parameters
    ----------
    scale, shift : array_like, shape (K,), optional
        Per output channel; missing means 1 and 0.  An eval-mode BatchNorm
        is ``scale = gamma / sqrt(var + eps)``, ``shift = beta - mean * scale``.
    activation : str
    alpha : float or array_like of shape (K,), optional
    residual : array_like of the output's shape, optional
    after_activation : bool
        Add ``residual`` after the activation instead of before.
    stats : bool
        Also return the float64 mean and biased variance of the output per
        (sample, channel), each of shape (N, K).

    Examples
    --------
    An eval-mode BatchNorm folded into scale and shift, a residual added
    before a leaky ReLU, and the statistics of the result:

    >>> import numpy as np, pywino3d
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((1, 2, 6, 6, 6)).astype(np.float32)
    >>> w = rng.standard_normal((3, 2, 3, 3, 3)).astype(np.float32)
    >>> skip = rng.standard_normal((1, 3, 6, 6, 6)).astype(np.float32)
    >>> epi = pywino3d.Epilogue(scale=np.full(3, 0.5), shift=np.zeros(3), residual=skip,
    ...                         activation="leaky_relu", stats=True)
    >>> y, mean, var = pywino3d.conv3d(x, w, padding=1, tile=2, epilogue=epi)
    >>> mean.shape, mean.dtype
    ((1, 3), dtype('float64'))
    """
    scale: Any = None
    shift: Any = None
    activation: str = "identity"
    alpha: Any = None
    residual: Any = None
    after_activation: bool = False
    stats: bool = False


def _per_channel(xp, v, n, c, dtype):
    """(N, C) or (C,) broadcast to shape (n, c, 1, 1, 1)."""
    v = xp.asarray(v, dtype=dtype)
    return xp.broadcast_to(v.reshape((-1 if v.ndim == 2 else 1, c, 1, 1, 1)), (n, c, 1, 1, 1))


def apply_prologue(x, prologue: Optional[Prologue]):
    """x with the prologue applied (a new array; the reference)."""
    if prologue is None:
        return x
    xp = array_module(x)
    n, c = x.shape[:2]
    t = x
    if prologue.scale is not None:
        t = t * _per_channel(xp, prologue.scale, n, c, x.dtype)
    if prologue.shift is not None:
        t = t + _per_channel(xp, prologue.shift, n, c, x.dtype)
    activation, alpha = check_activation("prologue", prologue.activation, prologue.alpha)
    return xp.asarray(activate(xp, t, activation, alpha), dtype=x.dtype)


def moments(y):
    """Float64 mean and biased variance of y over each (sample, channel)."""
    xp = array_module(y)
    t = y.reshape(y.shape[0], y.shape[1], -1).astype(xp.float64)
    mean = t.mean(axis=2)
    return mean, ((t - mean[:, :, None]) ** 2).mean(axis=2)


def group_moments(mean, var, groups):
    """Per-(sample, channel) moments over equal voxel counts merged into
    per-(sample, group) moments (exactly: the mean of the means; the mean of
    the variances plus the variance of the means)."""
    xp = array_module(mean)
    n, c = mean.shape
    if c % groups:
        raise ValueError(f"groups: {c} channels do not split into {groups} groups")
    m = mean.reshape(n, groups, -1)
    v = var.reshape(n, groups, -1)
    gm = m.mean(axis=2)
    return gm, v.mean(axis=2) + ((m - gm[:, :, None]) ** 2).mean(axis=2)


def apply_epilogue(y, epilogue: Optional[Epilogue]):
    """y with the epilogue applied, and (mean, var) when it asks for stats:
    ``y`` or ``(y, mean, var)`` (the reference)."""
    if epilogue is None:
        return y
    xp = array_module(y)
    k = y.shape[1]
    t = y
    if epilogue.scale is not None:
        t = t * xp.asarray(epilogue.scale, dtype=y.dtype).reshape(1, k, 1, 1, 1)
    if epilogue.shift is not None:
        t = t + xp.asarray(epilogue.shift, dtype=y.dtype).reshape(1, k, 1, 1, 1)
    if epilogue.residual is not None and not epilogue.after_activation:
        t = t + epilogue.residual
    activation, alpha = check_activation("epilogue", epilogue.activation, epilogue.alpha)
    t = activate(xp, t, activation, alpha)
    if epilogue.residual is not None and epilogue.after_activation:
        t = t + epilogue.residual
    t = xp.asarray(t, dtype=y.dtype)
    if epilogue.stats:
        return (t, *moments(t))
    return t


# ---------------------------------------------------------------------------
# Validation: what the kernels take (issue 28).  Every check names the
# argument and what was expected; nothing here mutates its inputs.

@dataclasses.dataclass(frozen=True)
class CheckedAffine:
    """A prologue, an epilogue or a ``channel_affine`` after validation, in
    the form the kernels take it.

    ``scale`` and ``shift`` are C-contiguous 1-D arrays of the data's dtype
    (or None), one value per channel (``per_sample`` False) or per (sample,
    channel) flattened; ``code`` is the activation's code; ``alpha`` its
    scalar parameter and ``alphas`` its per-channel one (prelu with an array,
    else None); ``residual`` an array of the output's shape and dtype (or
    None).
    """
    scale: Any
    shift: Any
    per_sample: bool
    activation: str
    code: int
    alpha: float
    alphas: Any
    residual: Any = None
    after_activation: bool = False
    stats: bool = False

    @property
    def is_identity(self):
        """True when the map changes no value and asks for nothing."""
        return (self.scale is None and self.shift is None and self.code == 0 and self.residual is None
                and not self.stats)


def _check_vector(name, v, shapes, dtype, xp):
    """v as a C-contiguous 1-D array of dtype, from one of ``shapes``
    (tuples, in order of preference); (array, the shape it matched)."""
    if v is None:
        return None, None
    try:
        a = xp.asarray(v)
    except Exception as exc:
        raise TypeError(f"{name}: expected a numeric array, could not convert: {exc}") from None
    if a.dtype.kind not in "iuf":
        raise TypeError(f"{name}: expected a real numeric array, got dtype {a.dtype}")
    shape = tuple(a.shape)
    if shape not in shapes:
        want = " or ".join(str(s) for s in shapes)
        raise ValueError(f"{name}: expected shape {want}, got {shape}")
    return xp.ascontiguousarray(a.reshape(-1), dtype=dtype), shape


def _check_bool(name, v):
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool, got {type(v).__name__} {v!r}")
    return bool(v)


def check_affine(name, scale, shift, activation, alpha, n, c, dtype, xp, *, per_sample=True, residual=None,
                 out_shape=None, after_activation=False, stats=False):
    """The arguments of a prologue, an epilogue or ``channel_affine`` checked
    for data of ``n`` samples and ``c`` channels of ``dtype`` on array module
    ``xp``: a :class:`CheckedAffine`.

    ``scale`` and ``shift`` may have shape (n, c) (when ``per_sample``) or
    (c,) and any real dtype (cast to ``dtype``); ``alpha`` is a scalar, or
    for prelu one value per channel; ``residual`` must have ``out_shape`` and
    ``dtype`` exactly (it is as large as the output: never copied to convert).
    """
    shapes = ((c,), (n, c)) if per_sample else ((c,),)
    scale, s1 = _check_vector(f"{name}.scale", scale, shapes, dtype, xp)
    shift, s2 = _check_vector(f"{name}.shift", shift, shapes, dtype, xp)
    sample_wise = (n, c) in (s1, s2) and (c,) != (n, c)
    if sample_wise:  # one per-sample operand makes both per sample
        if scale is not None and s1 == (c,):
            scale = xp.ascontiguousarray(xp.broadcast_to(scale, (n, c)).reshape(-1))
        if shift is not None and s2 == (c,):
            shift = xp.ascontiguousarray(xp.broadcast_to(shift, (n, c)).reshape(-1))
    if not isinstance(activation, str) and activation is not None:
        raise TypeError(f"{name}.activation: expected a str, one of {sorted(ACTIVATIONS)}, got "
                        f"{type(activation).__name__}")
    activation, alpha = check_activation(name, activation, alpha)
    alphas = None
    if np.ndim(alpha) != 0:
        alphas, _ = _check_vector(f"{name}.alpha", alpha, ((c,),), dtype, xp)
        alpha = 0.0
    else:
        try:
            alpha = float(alpha)
        except (TypeError, ValueError):
            raise TypeError(f"{name}.alpha: expected a float, got {type(alpha).__name__} {alpha!r}") from None
    after_activation = _check_bool(f"{name}.after_activation", after_activation)
    stats = _check_bool(f"{name}.stats", stats)
    if residual is not None:
        if not hasattr(residual, "shape") or not hasattr(residual, "dtype"):
            residual = xp.asarray(residual)
        if residual.dtype != np.dtype(dtype):
            raise TypeError(f"{name}.residual: dtype {residual.dtype} does not match the output's "
                            f"{np.dtype(dtype)}")
        if tuple(residual.shape) != tuple(out_shape):
            raise ValueError(f"{name}.residual: expected the output's shape {tuple(out_shape)}, got "
                             f"{tuple(residual.shape)}")
    return CheckedAffine(scale, shift, sample_wise, activation, ACTIVATIONS[activation], alpha, alphas,
                         residual, after_activation, stats)


def check_prologue(prologue, n, c, dtype, xp):
    """A :class:`Prologue` checked for x of ``n`` samples and ``c`` channels:
    a :class:`CheckedAffine`, or None when there is none or it is the
    identity."""
    if prologue is None:
        return None
    if not isinstance(prologue, Prologue):
        raise TypeError(f"prologue: expected a pywino3d.Prologue or None, got {type(prologue).__name__}")
    p = check_affine("prologue", prologue.scale, prologue.shift, prologue.activation, prologue.alpha, n, c,
                     dtype, xp)
    return None if p.is_identity else p


def check_epilogue(epilogue, out_shape, dtype, xp):
    """An :class:`Epilogue` checked for an output of ``out_shape`` (N, K,
    ...): a :class:`CheckedAffine` (per-channel scale and shift, shape
    (K,)), or None when there is none."""
    if epilogue is None:
        return None
    if not isinstance(epilogue, Epilogue):
        raise TypeError(f"epilogue: expected a pywino3d.Epilogue or None, got {type(epilogue).__name__}")
    n, k = out_shape[:2]
    return check_affine("epilogue", epilogue.scale, epilogue.shift, epilogue.activation, epilogue.alpha, n, k,
                        dtype, xp, per_sample=False, residual=epilogue.residual, out_shape=out_shape,
                        after_activation=epilogue.after_activation, stats=epilogue.stats)


def apply_checked(x, a: CheckedAffine, *, out=None):
    """The reference of a checked map on x (N, C, ...): ``y`` or ``(y, mean,
    var)`` with its stats (array operations, any backend; ``out`` receives
    y when given)."""
    xp = array_module(x)
    n, c = x.shape[:2]
    t = x
    if a.scale is not None:
        t = t * _per_channel(xp, a.scale.reshape(n, c) if a.per_sample else a.scale, n, c, x.dtype)
    if a.shift is not None:
        t = t + _per_channel(xp, a.shift.reshape(n, c) if a.per_sample else a.shift, n, c, x.dtype)
    if a.residual is not None and not a.after_activation:
        t = t + a.residual
    t = activate(xp, t, a.activation, a.alphas if a.alphas is not None else a.alpha)
    if a.residual is not None and a.after_activation:
        t = t + a.residual
    t = xp.asarray(t, dtype=x.dtype)
    if out is not None:
        out[...] = t
        t = out
    return (t, *moments(t)) if a.stats else t
