"""PyTorch layers running pywino3d's kernels (optional extra ``pywino3d[torch]``).

* :class:`Conv3d` -- a drop-in ``nn.Conv3d``: same constructor, parameters,
  state_dict and initialisation; runs pywino3d where that is measured to be
  faster, ``torch.nn.functional.conv3d`` otherwise.
* :func:`conv3d` -- the functional form, same semantics as
  ``torch.nn.functional.conv3d``.
* :func:`convert_model` -- turns the ``nn.Conv3d`` layers of a model into
  :class:`Conv3d` (or Winograd-domain layers), with per-layer tuning;
  :func:`conversion_summary` tells what each layer chose.
* :class:`WinogradConv3d` -- trains the full Winograd-domain weights U.
* :class:`LowRankWinogradConv3d` -- trains the factors P, Q (U = P Q, or
  U0 + P Q in residual mode).

Every layer calls the custom operators of :mod:`pywino3d.torch.ops`
(``torch.library``, with fake implementations and autograd formulas), so
``torch.compile(fullgraph=True)`` and ``torch.export`` trace through them.
CPU tensors reach NumPy without a copy (``Tensor.numpy()``), CUDA tensors
reach CuPy without a copy (DLPack).  The CPU kernels run with
``torch.get_num_threads()`` threads.  Pruning masks of the Winograd-domain
layers live in the ``columns_mask`` buffer (one flag per position) and reach
the kernels as ``columns``.  See ``docs/torch.md``.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pywino3d.torch import plan as plan_mod
from pywino3d._api import filter_transform
from pywino3d._core.geometry import parse_kernel_size, parse_padding, parse_tile
from pywino3d.torch.ops import backward_arrays, filter_transform_op, forward_arrays, winograd_conv3d_op
from pywino3d.torch.plan import TORCH, Plan, pads6
from pywino3d._core.transforms import MAX_KERNEL

__all__ = ["Conv3d", "conv3d", "convert_model", "conversion_summary", "WinogradConv3d",
           "LowRankWinogradConv3d", "WinogradConv3dFunction"]


def _tracing():
    return torch.compiler.is_compiling() or torch.compiler.is_exporting()


def _tensor_key(t):
    """What identifies a tensor's current values without reading them."""
    return (t._version, t.data_ptr(), t.device, t.dtype, tuple(t.shape))


# ------------------------------------------------------------ argument checks
def _check_tile(tile):
    if isinstance(tile, str):
        if tile != "auto":
            raise ValueError(f"tile: expected 'auto', an int or 3 ints, got {tile!r}")
        return tile
    return parse_tile(tile)


def _triple(name, v, lo):
    from pywino3d._core.validation import as_triple

    return as_triple(name, v, lo)


def _check_input(x, weight, bias, groups):
    """Validate the arguments of a convolution; return (5-D input, unbatched)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"input: expected a torch.Tensor, got {type(x).__name__}")
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight: expected a torch.Tensor, got {type(weight).__name__}")
    if weight.dim() != 5:
        raise ValueError(f"weight: expected a 5-D tensor (C_out, C_in/groups, kd, kh, kw), "
                         f"got shape {tuple(weight.shape)}")
    if x.dim() not in (4, 5):
        raise ValueError(f"input: expected a 5-D (N, C, D, H, W) or 4-D (C, D, H, W) tensor, "
                         f"got shape {tuple(x.shape)}")
    if not (x.is_floating_point() or x.is_complex()):
        raise TypeError(f"input: expected a floating-point tensor (float32/float64 run pywino3d, "
                        f"float16/bfloat16 run torch), got {x.dtype}")
    if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(f"input: dtype {x.dtype} does not match weight's dtype {weight.dtype}")
    if x.device != weight.device:
        raise TypeError(f"input: is on {x.device} but weight is on {weight.device}; move one with .to()")
    unbatched = x.dim() == 4
    if unbatched:
        x = x.unsqueeze(0)
    C = weight.shape[1] * groups
    if x.shape[1] != C:
        raise ValueError(f"input: expected {C} channels (dim {0 if unbatched else 1}) to match weight "
                         f"{tuple(weight.shape)} with groups={groups}, got shape {tuple(x.shape)}")
    if bias is not None:
        if not isinstance(bias, torch.Tensor):
            raise TypeError(f"bias: expected a torch.Tensor or None, got {type(bias).__name__}")
        if tuple(bias.shape) != (weight.shape[0],):
            raise ValueError(f"bias: expected shape ({weight.shape[0]},) (one value per output channel), "
                             f"got {tuple(bias.shape)}")
    return x, unbatched


def _check_extent(x, ksize, pads, dilation):
    for ax, s, r, d, p0, p1 in zip("dhw", x.shape[2:], ksize, dilation, pads[0::2], pads[1::2]):
        if s + p0 + p1 < d * (r - 1) + 1:
            raise ValueError(f"input: padded size {s + p0 + p1} along {ax} is smaller than the "
                             f"{'dilated ' if d > 1 else ''}kernel ({d * (r - 1) + 1})")


def _traced_plan(x_shape, K, ksize, pads, dtype_name, device_type, channels_last, grad, bias, tile):
    """The plan under torch.compile/export, evaluated once at trace time."""
    p = plan_mod.decide(x_shape, K, ksize, pads, getattr(torch, dtype_name), torch.device(device_type),
                        channels_last, grad, bias, tile, measure=False)
    return (p.algo, p.tile)


# What torch.compiler.assume_constant_result does, without importing
# torch._dynamo (seconds) when pywino3d.torch is imported: dynamo calls the
# function at trace time and bakes its result into the graph.
_traced_plan._dynamo_marked_constant = True


def _plan(x, weight, bias, pads, tile, training=True):
    """(Plan, whether it is tuned for training) for an eligible problem (x is
    5-D, padding already applied for non-zero padding modes).  Training
    (forward + backward timed) means: gradients are needed and the module is
    in training mode; otherwise the forward pass alone is timed."""
    grad = training and torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                                     or (bias is not None and bias.requires_grad))
    cl = x.dim() == 5 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last_3d)
    shape, K, ks = tuple(int(s) for s in x.shape), int(weight.shape[0]), tuple(int(r) for r in weight.shape[2:])
    if _tracing():
        algo, t = _traced_plan(shape, K, ks, tuple(pads), str(x.dtype).replace("torch.", ""), x.device.type,
                               cl, grad, bias is not None, tile)
        return Plan(algo, t, {}, "traced"), grad
    return plan_mod.decide(shape, K, ks, tuple(pads), x.dtype, x.device, cl, grad, bias is not None, tile), grad


# ------------------------------------------------------------ functional form
def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, tile="auto"):
    """3-D convolution with the semantics of ``torch.nn.functional.conv3d``.

    Runs pywino3d for stride 1, dilation 1, groups 1, kernel extents <= 7 and
    float32/float64 tensors on the CPU (CUDA with CuPy) outside autocast, when
    it is measured to be faster (``tile="auto"``) or always (a given tile);
    ``torch.nn.functional.conv3d`` otherwise.  Differentiable in ``input``,
    ``weight`` and ``bias`` (grad_w through
    :func:`pywino3d.filter_transform_backward`).

    Parameters
    ----------
    input : tensor, shape (N, C, D, H, W) or (C, D, H, W)
    weight : tensor, shape (K, C / groups, kd, kh, kw)
    bias : tensor, shape (K,), optional
    stride, padding, dilation, groups
        As in ``torch.nn.functional.conv3d`` (padding: int, 3 ints, "same"
        or "valid").
    tile : "auto", int or tuple of 3 ints
        ``"auto"``: measured per shape by :mod:`pywino3d.autotune` between
        torch and a few tiles (the cost model's choice when tuning is off).
        An int or 3 ints: that Winograd tile (1 = direct) wherever pywino3d
        can run.

    Returns
    -------
    tensor, shape (N, K, Do, Ho, Wo)

    Examples
    --------
    >>> import torch
    >>> from pywino3d.torch import conv3d
    >>> x = torch.randn(1, 2, 6, 6, 6, dtype=torch.float64)
    >>> w = torch.randn(3, 2, 3, 3, 3, dtype=torch.float64)
    >>> y = conv3d(x, w, padding=1, tile=2)
    >>> bool(torch.allclose(y, torch.nn.functional.conv3d(x, w, padding=1)))
    True
    """
    tile = _check_tile(tile)
    groups = int(groups)
    x, unbatched = _check_input(input, weight, bias, groups)
    stride = _triple("stride", stride, 1)
    dilation = _triple("dilation", dilation, 1)
    ksize = tuple(weight.shape[2:])
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ValueError(f"padding: expected an int, 3 ints, 'same' or 'valid', got {padding!r}")
        if padding == "same" and stride != (1, 1, 1):
            raise ValueError("padding: 'same' is not supported for strided convolutions")
        pads = pads6(padding, [d * (r - 1) + 1 for r, d in zip(ksize, dilation)])
    else:
        pads = pads6(_triple("padding", padding, 0), ksize)
    _check_extent(x, ksize, pads, dilation)
    reason = plan_mod.ineligible(x, weight, stride, dilation, groups)
    p = None if reason else _plan(x, weight, bias, pads, tile)[0]
    if p is None or p.algo == TORCH:
        return F.conv3d(input, weight, bias, stride, padding, dilation, groups)
    y = winograd_conv3d_op(x, filter_transform_op(weight, list(p.tile)), bias, list(ksize), list(p.tile),
                           list(pads), None)
    return y.squeeze(0) if unbatched else y


# ------------------------------------------------------------ the drop-in layer
class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` that runs pywino3d where it is faster.

    Same constructor, parameters (``weight``, ``bias``), state_dict keys and
    initialisation as ``torch.nn.Conv3d``; checkpoints load both ways.  The
    forward pass is :func:`conv3d` (padding modes other than ``"zeros"``
    pad first), except that the Winograd-domain weights U are cached: while
    ``weight`` is unchanged (its version counter, storage, device and dtype)
    and no gradient is needed, the filter transform is not repeated.  In
    training, U is recomputed each step and grad_w comes from
    :func:`pywino3d.filter_transform_backward`.

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode, device, dtype
        As in ``torch.nn.Conv3d``.
    tile : "auto", int or tuple of 3 ints, keyword-only
        As in :func:`conv3d`.

    Attributes
    ----------
    plans : dict
        The :class:`~pywino3d.torch.plan.Plan` used per problem (input
        shape, training or inference), for :func:`conversion_summary`.

    Examples
    --------
    >>> import torch
    >>> from pywino3d.torch import Conv3d
    >>> _ = torch.manual_seed(0); layer = Conv3d(2, 4, 3, padding=1, tile=2)
    >>> _ = torch.manual_seed(0); ref = torch.nn.Conv3d(2, 4, 3, padding=1)
    >>> list(layer.state_dict()) == list(ref.state_dict())
    True
    >>> x = torch.randn(1, 2, 5, 5, 5)
    >>> bool(torch.allclose(layer(x), ref(x), atol=1e-5))
    True
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", device=None, dtype=None, *, tile="auto"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device, dtype)
        self._init_pywino3d(tile)

    def _init_pywino3d(self, tile):
        self.tile = _check_tile(tile)
        self._u_cache = None
        self._memo = {}
        self.plans = {}

    @classmethod
    def from_conv3d(cls, conv, *, tile="auto"):
        """A :class:`Conv3d` sharing ``conv``'s parameters, buffers and hooks.

        Examples
        --------
        >>> import torch
        >>> from pywino3d.torch import Conv3d
        >>> ref = torch.nn.Conv3d(2, 3, 3)
        >>> layer = Conv3d.from_conv3d(ref)
        >>> layer.weight is ref.weight
        True
        """
        if not isinstance(conv, nn.Conv3d):
            raise TypeError(f"conv: expected a torch.nn.Conv3d, got {type(conv).__name__}")
        new = cls.__new__(cls)
        for k, v in conv.__dict__.items():
            new.__dict__[k] = v.copy() if isinstance(v, dict) else v
        new._init_pywino3d(tile)
        return new

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_u_cache"] = None  # derived from weight; never pickled or deep-copied
        state["_memo"] = {}  # holds devices; decisions are remade after loading
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self.__dict__.setdefault("tile", "auto")
        self.__dict__.setdefault("plans", {})
        self._u_cache = None
        self._memo = {}

    def _weight_U(self, tile):
        w = self.weight
        if torch.is_grad_enabled() and w.requires_grad or _tracing():
            return filter_transform_op(w, list(tile))
        key = (tuple(tile),) + _tensor_key(w)
        hit = self._u_cache
        if hit is not None and hit[0] == key:
            return hit[1]
        # A normal tensor even inside inference_mode, so that a later forward
        # with gradients (a frozen layer) may save it for backward.
        with torch.inference_mode(False), torch.no_grad():
            U = filter_transform_op(w, list(tile))
        self._u_cache = (key, U)
        return U

    def clear_cache(self):
        """Drop the cached U (needed only after changing ``weight`` through
        ``.data``, which bypasses the version counter).

        Examples
        --------
        >>> from pywino3d.torch import Conv3d
        >>> Conv3d(1, 1, 3).clear_cache()
        """
        self._u_cache = None

    def _memo_key(self, x):
        """What the algorithm choice for input ``x`` depends on, cheap to build
        (a few microseconds: parameters are read from ``_parameters``)."""
        params = self._parameters
        w, b = params["weight"], params["bias"]
        dev = x.device
        return (plan_mod.generation(), x.shape, x.stride(), x.dtype, dev, x.requires_grad,
                torch.is_grad_enabled(), self.training, w.shape, w.dtype, w.device, w.requires_grad,
                b is not None and b.requires_grad,
                dev.type in ("cpu", "cuda") and torch.is_autocast_enabled(dev.type), self.tile,
                self.padding, self.padding_mode, self.stride, self.dilation, self.groups)

    def forward(self, input):
        # The second and later calls with the same kind of input skip the
        # checks and the plan lookup (tens of microseconds, as much as a small
        # layer's convolution on a GPU): the choice is memoized per module.
        key = None
        if isinstance(input, torch.Tensor) and not _tracing():
            key = self._memo_key(input)
            hit = self._memo.get(key)
            if hit is not None:
                return self._run(input, *hit)
        x, _ = _check_input(input, self.weight, self.bias, self.groups)
        if self.padding_mode != "zeros":
            pads = (0,) * 6
            _check_extent(x, self.kernel_size, self._reversed_padding_repeated_twice[::-1], self.dilation)
        else:
            pads = pads6(self.padding, self.kernel_size)
            _check_extent(x, self.kernel_size, pads, self.dilation)
        reason = plan_mod.ineligible(x, self.weight, self.stride, self.dilation, self.groups)
        if reason is not None:
            if key is not None:
                self.plans[("ineligible", tuple(x.shape))] = Plan(TORCH, None, {}, reason)
                self._memo[key] = (TORCH, None, None)
            return super().forward(input)
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
        p, grad = _plan(x, self.weight, self.bias, pads, self.tile, self.training)
        if key is not None:
            self.plans[(tuple(x.shape), "train" if grad else "eval")] = p
            if p.source != "recording":
                self._memo[key] = (p.algo, p.tile, tuple(pads))
        return self._run(input, p.algo, p.tile, pads, x)

    def _run(self, input, algo, tile, pads, x=None):
        """Run the chosen algorithm; ``x`` is ``input`` already made 5-D and
        padded for the padding mode, where the caller has it."""
        if algo == TORCH:
            return super().forward(input)
        unbatched = input.dim() == 4
        if x is None:
            x = input.unsqueeze(0) if unbatched else input
            if self.padding_mode != "zeros":
                x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
        y = winograd_conv3d_op(x, self._weight_U(tile), self.bias, list(self.kernel_size), list(tile),
                               list(pads), None)
        return y.squeeze(0) if unbatched else y

    def extra_repr(self):
        return super().extra_repr() + f", tile={self.tile!r}"


# ------------------------------------------------------------ Winograd-domain layers
class WinogradConv3dFunction(torch.autograd.Function):
    """y = winograd_conv3d(x, U) + bias, with gradients for x, U and bias.

    ``columns`` (None or a 1-D integer array of kept positions) is a
    non-differentiable argument; grad_U is zero at pruned positions.  The
    layers use the equivalent custom operator
    ``torch.ops.pywino3d.winograd_conv3d``, which also traces under
    ``torch.compile``.

    Examples
    --------
    >>> import torch, pywino3d
    >>> from pywino3d.torch import WinogradConv3dFunction
    >>> x = torch.randn(1, 2, 4, 4, 4, requires_grad=True)
    >>> U = torch.from_numpy(pywino3d.filter_transform(torch.randn(3, 2, 3, 3, 3).numpy(), 2))
    >>> y = WinogradConv3dFunction.apply(x, U.requires_grad_(), None, (3, 3, 3), (2, 2, 2), 1, None)
    >>> y.sum().backward(); x.grad.shape, U.grad.shape
    (torch.Size([1, 2, 4, 4, 4]), torch.Size([64, 3, 2]))
    """

    @staticmethod
    def forward(ctx, x, U, bias, kernel_size, tile, padding, columns):
        ctx.save_for_backward(x, U)
        ctx.meta = (kernel_size, tile, padding, columns, bias is not None)
        return forward_arrays(x, U, bias, kernel_size, tile, padding, columns)

    @staticmethod
    def backward(ctx, grad_y):
        x, U = ctx.saved_tensors
        kernel_size, tile, padding, columns, has_bias = ctx.meta
        gx = gU = gb = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            gx, gU = backward_arrays(grad_y, x, U, kernel_size, tile, padding, columns)
            gx = gx if ctx.needs_input_grad[0] else None
            gU = gU if ctx.needs_input_grad[1] else None
        if has_bias and ctx.needs_input_grad[2]:
            gb = grad_y.sum(dim=(0, 2, 3, 4))
        return gx, gU, gb, None, None, None, None


class _WinogradBase(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, padding, tile, bias, dtype):
        super().__init__()
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = parse_kernel_size(kernel_size)
        parse_padding(padding, self.kernel_size)  # validate
        self.padding = padding if isinstance(padding, str) else \
            (tuple(padding) if isinstance(padding, (tuple, list)) else int(padding))
        self.tile = parse_tile(tile)
        a = [m + r - 1 for m, r in zip(self.tile, self.kernel_size)]
        self.positions = a[0] * a[1] * a[2]
        self.register_buffer("columns_mask", torch.ones(self.positions, dtype=torch.bool))
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_channels, dtype=dtype))
        else:
            self.register_parameter("bias", None)

    def columns(self):
        """Kept positions as an int array, or None when nothing is pruned."""
        if bool(self.columns_mask.all()):
            return None
        return self.columns_mask.nonzero().flatten().cpu().numpy().astype(np.int64)

    def set_columns(self, columns):
        """Keep only ``columns`` (1-D integer positions); None keeps all."""
        mask = torch.zeros_like(self.columns_mask)
        if columns is None:
            mask[:] = True
        else:
            mask[torch.as_tensor(np.asarray(columns, dtype=np.int64))] = True
        self.columns_mask.copy_(mask)

    @property
    def density(self):
        return float(self.columns_mask.float().mean())

    def winograd_weights(self):
        raise NotImplementedError

    def forward(self, x):
        U = self.winograd_weights()
        cols = self.columns()
        return winograd_conv3d_op(x, U, self.bias, list(self.kernel_size), list(self.tile),
                                  list(pads6(self.padding, self.kernel_size)),
                                  None if cols is None else torch.from_numpy(cols))

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"padding={self.padding}, tile={self.tile}, density={self.density:.3g}, "
                f"bias={self.bias is not None}")


class WinogradConv3d(_WinogradBase):
    """3-D convolution whose trainable weight is the full Winograd-domain U.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or tuple of 3 ints
    padding : int, tuple, "same" or "valid"
    tile : int or tuple of 3 ints
    bias : bool
    weight : tensor (C_out, C_in, rd, rh, rw), optional
        Spatial weights to start from (transformed to U); He-normal otherwise.

    Examples
    --------
    >>> import torch
    >>> from pywino3d.torch import WinogradConv3d
    >>> layer = WinogradConv3d(4, 8, kernel_size=3, padding=1, tile=2)
    >>> layer(torch.randn(1, 4, 6, 6, 6)).shape
    torch.Size([1, 8, 6, 6, 6])
    >>> layer.set_columns(range(0, 64, 2)); layer.density
    0.5
    """

    def __init__(self, in_channels, out_channels, kernel_size=3, padding=0, tile=2, bias=True,
                 weight=None, dtype=torch.float32):
        super().__init__(in_channels, out_channels, kernel_size, padding, tile, bias, dtype)
        if weight is None:
            fan_in = in_channels * math.prod(self.kernel_size)
            weight = torch.randn(out_channels, in_channels, *self.kernel_size, dtype=dtype) * math.sqrt(2 / fan_in)
        U = filter_transform(weight.detach().cpu().numpy().astype(np.dtype(str(dtype).split(".")[-1])), self.tile)
        self.weight_U = nn.Parameter(torch.from_numpy(np.ascontiguousarray(U)))

    def winograd_weights(self):
        return self.weight_U

    @property
    def num_weight_params(self):
        return self.weight_U.numel()


class LowRankWinogradConv3d(_WinogradBase):
    """3-D convolution with low-rank Winograd weights U = P Q (or U0 + P Q).

    Parameters
    ----------
    in_channels, out_channels, kernel_size, padding, tile, bias
        As in :class:`WinogradConv3d`.
    rank : int
        k, the number of columns of P; clamped to min(positions,
        C_out * C_in), beyond which U has no more rank to give.
    mode : {"factor", "residual"}
    weight : tensor (C_out, C_in, rd, rh, rw), optional
        Spatial weights to initialise from (truncated SVD of their U); a
        variance-preserving random initialisation otherwise.

    Examples
    --------
    >>> import torch
    >>> from pywino3d.torch import LowRankWinogradConv3d
    >>> layer = LowRankWinogradConv3d(4, 8, kernel_size=3, padding=1, tile=2, rank=6)
    >>> layer.P.shape, layer.Q.shape, layer.num_weight_params
    (torch.Size([64, 6]), torch.Size([6, 8, 4]), 576)
    """

    def __init__(self, in_channels, out_channels, kernel_size=3, padding=0, tile=2, rank=8, bias=True,
                 mode="factor", weight=None, dtype=torch.float32, seed=0):
        super().__init__(in_channels, out_channels, kernel_size, padding, tile, bias, dtype)
        from pywino3d.lowrank import LowRankWinograd

        npdt = np.float32 if dtype == torch.float32 else np.float64
        rank = min(int(rank), self.positions, self.out_channels * self.in_channels)
        if weight is None:
            lr = LowRankWinograd.random(out_channels, in_channels, self.kernel_size, self.tile, rank,
                                        dtype=npdt, seed=seed, mode=mode)
        else:
            lr = LowRankWinograd.from_filter(weight.detach().cpu().numpy().astype(npdt), rank, self.tile,
                                             mode=mode, seed=seed)
        self.rank = lr.rank
        self.mode = lr.mode
        self.P = nn.Parameter(torch.from_numpy(np.ascontiguousarray(lr.P, dtype=npdt)))
        self.Q = nn.Parameter(torch.from_numpy(np.ascontiguousarray(lr.Q, dtype=npdt)))
        if lr.U0 is not None:
            self.register_buffer("U0", torch.from_numpy(np.ascontiguousarray(lr.U0, dtype=npdt)))
        else:
            self.U0 = None
        self._u_cache = None

    def _compose(self):
        U = (self.P @ self.Q.reshape(self.rank, -1)).reshape(self.positions, self.out_channels,
                                                             self.in_channels)
        return U if self.U0 is None else U + self.U0

    def winograd_weights(self):
        """U = P Q (+ U0).  Composed once and reused while P, Q and U0 are
        unchanged (their version counters, storage, device and dtype) when
        no gradient is needed (eval, ``no_grad``, ``inference_mode``)."""
        factors = [t for t in (self.P, self.Q, self.U0) if t is not None]
        if torch.is_grad_enabled() and any(t.requires_grad for t in factors) or _tracing():
            return self._compose()
        key = tuple(_tensor_key(t) for t in factors)
        hit = getattr(self, "_u_cache", None)
        if hit is not None and hit[0] == key:
            return hit[1]
        with torch.inference_mode(False), torch.no_grad():
            U = self._compose()
        self._u_cache = (key, U)
        return U

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_u_cache"] = None
        return state

    @property
    def num_weight_params(self):
        return self.P.numel() + self.Q.numel()

    def extra_repr(self):
        return super().extra_repr() + f", rank={self.rank}, mode={self.mode!r}"


# ------------------------------------------------------------ converting models
WEIGHTS = ("spatial", "winograd", "lowrank")


def _winograd_eligible(conv):
    return (type(conv) in (nn.Conv3d, Conv3d) and tuple(conv.stride) == (1, 1, 1)
            and tuple(conv.dilation) == (1, 1, 1) and conv.groups == 1
            and conv.padding_mode == "zeros" and all(1 <= k <= MAX_KERNEL for k in conv.kernel_size))


def _to_winograd(child, weights, tile, rank, mode):
    tile = 2 if isinstance(tile, str) else tile  # a Winograd-domain parameterisation needs one tile
    kw = dict(kernel_size=child.kernel_size, padding=child.padding, tile=tile, bias=child.bias is not None,
              weight=child.weight, dtype=child.weight.dtype)
    if weights == "winograd":
        new = WinogradConv3d(child.in_channels, child.out_channels, **kw)
    else:
        new = LowRankWinogradConv3d(child.in_channels, child.out_channels, rank=rank, mode=mode, **kw)
    if child.bias is not None:
        with torch.no_grad():
            new.bias.copy_(child.bias)
    new.train(child.training)
    return new.to(child.weight.device)


def _replace(module, weights, tile, rank, mode):
    for name, child in list(module.named_children()):
        if type(child) is nn.Conv3d and weights == "spatial":
            setattr(module, name, Conv3d.from_conv3d(child, tile=tile))
        elif weights != "spatial" and _winograd_eligible(child):
            setattr(module, name, _to_winograd(child, weights, tile, rank, mode))
        else:
            _replace(child, weights, tile, rank, mode)


def _describe(x):
    cl = x.dim() == 5 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last_3d)
    return tuple(x.shape), x.dtype, x.device, cl


def _run_example(model, example_inputs):
    """One forward pass of the unconverted model in eval mode without
    gradients (BatchNorm statistics and the like are left untouched);
    returns {layer name: (input shape, dtype, device, channels_last)}.
    Bad example inputs fail here, before anything is converted."""
    shapes, hooks = {}, []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv3d):
            hooks.append(m.register_forward_pre_hook(
                lambda mod, args, name=name: shapes.setdefault(name, _describe(args[0])) and None))
    was = {m: m.training for m in model.modules()}
    plans_before = {m: dict(m.plans) for m in model.modules() if isinstance(m, Conv3d)}
    try:
        model.eval()
        with torch.no_grad(), plan_mod.recording():
            model(*example_inputs)
    finally:
        for h in hooks:
            h.remove()
        for m, t in was.items():
            m.training = t
        for m, p in plans_before.items():
            m.plans = p
    return shapes


def _tune(model, shapes):
    from tqdm.auto import tqdm

    layers = dict(model.named_modules())
    todo = [(name, d) for name, d in shapes.items() if isinstance(layers.get(name), Conv3d)]
    train = model.training
    with tqdm(todo, desc="pywino3d: tuning layers", unit="layer", delay=1.0, leave=False) as bar:
        for name, (shape, dtype, device, cl) in bar:
            bar.set_postfix_str(name[-30:])
            x = torch.randn(shape, dtype=dtype, device=device) if dtype.is_floating_point else \
                torch.zeros(shape, dtype=dtype, device=device)
            if cl:
                x = x.contiguous(memory_format=torch.channels_last_3d)
            with torch.set_grad_enabled(train):
                layers[name](x.requires_grad_(train and dtype.is_floating_point))


def convert_model(model, *, example_inputs=None, weights="spatial", tile="auto", rank=None, mode="factor"):
    """Convert the ``nn.Conv3d`` layers of ``model``, in place.

    Parameters
    ----------
    model : nn.Module
    example_inputs : tensor or tuple of tensors, optional
        Inputs of one forward pass.  With them, every layer's input shape is
        recorded (one pass in eval mode without gradients: BatchNorm
        statistics stay untouched) and its algorithm chosen before this
        function returns -- for training if ``model.training``, else for
        inference -- with a progress bar when that takes over a second.
        Without them each layer chooses at its first forward of a new shape.
    weights : {"spatial", "winograd", "lowrank"}
        ``"spatial"``: every ``nn.Conv3d`` becomes a :class:`Conv3d` that
        shares its parameters (the state_dict and an optimizer built before
        converting stay valid).  ``"winograd"``: each eligible layer (stride
        1, dilation 1, groups 1, zero padding, kernel extents <= 7) becomes a
        :class:`WinogradConv3d` (trains U); ``"lowrank"``: a
        :class:`LowRankWinogradConv3d` initialised by truncated SVD (needs
        ``rank``; exact when ``rank >= rd*rh*rw``).
    tile : "auto", int or tuple of 3 ints
        For ``"spatial"`` as in :class:`Conv3d`; for the Winograd-domain
        layers the tile of their parameterisation (``"auto"`` means 2).
    rank : int, optional
        For ``weights="lowrank"``.
    mode : {"factor", "residual"}
        For ``weights="lowrank"``.

    Returns
    -------
    model : the same module, converted

    See Also
    --------
    conversion_summary : what each layer chose, with the measured times.

    Examples
    --------
    >>> import torch
    >>> from pywino3d.torch import convert_model
    >>> net = torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3, padding=1), torch.nn.Conv3d(4, 4, 3, stride=2))
    >>> x = torch.randn(1, 2, 6, 6, 6)
    >>> ref = net(x)
    >>> sd = list(net.state_dict())
    >>> [type(m).__name__ for m in convert_model(net, example_inputs=x)]
    ['Conv3d', 'Conv3d']
    >>> list(net.state_dict()) == sd and bool(torch.allclose(net(x), ref, atol=1e-5))
    True
    >>> [type(m).__name__ for m in convert_model(torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3)), weights="winograd")]
    ['WinogradConv3d']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if weights not in WEIGHTS:
        raise ValueError(f"weights: expected one of {WEIGHTS}, got {weights!r}")
    if weights == "spatial":
        tile = _check_tile(tile)
    else:
        if not isinstance(tile, str):
            parse_tile(tile)
        elif tile != "auto":
            raise ValueError(f"tile: expected 'auto', an int or 3 ints, got {tile!r}")
        if example_inputs is not None:
            raise ValueError("example_inputs: only used with weights='spatial' (the Winograd-domain "
                             "layers have a fixed tile)")
    if weights == "lowrank":
        if rank is None:
            raise ValueError("rank: weights='lowrank' needs a rank (an int >= 1)")
        from pywino3d._core.validation import as_int

        as_int("rank", rank, 1)
        if mode not in ("factor", "residual"):
            raise ValueError(f"mode: expected 'factor' or 'residual', got {mode!r}")
    elif rank is not None:
        raise ValueError(f"rank: only used with weights='lowrank', got rank={rank!r} with weights={weights!r}")
    if type(model) is nn.Conv3d:
        raise TypeError("model: is a bare nn.Conv3d, which cannot be replaced in place; use "
                        "pywino3d.torch.Conv3d.from_conv3d(conv) or wrap it in a module")
    shapes = None
    if example_inputs is not None:
        items = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
        if not items or not all(isinstance(t, torch.Tensor) for t in items):
            raise TypeError("example_inputs: expected a tensor or a tuple of tensors")
        shapes = _run_example(model, items)
    _replace(model, weights, tile, rank, mode)
    if shapes is not None:
        _tune(model, shapes)
    return model


class ConversionSummary(list):
    """Rows (layer, input shape, mode, choice, ms, torch ms) printed as a table."""

    HEADER = ("layer", "input shape", "mode", "choice", "ms", "torch ms", "speed-up")

    def __str__(self):
        rows = [self.HEADER] + [tuple("" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))
                                      for v in r) for r in self]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self.HEADER))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def _repr_pretty_(self, p, cycle):  # IPython
        p.text(str(self))


def conversion_summary(model):
    """What every :class:`Conv3d` of ``model`` chose, per input shape and mode.

    Returns
    -------
    ConversionSummary
        A list of rows ``(layer, input shape, mode, choice, ms, torch ms,
        speed-up)``; ``print`` shows a table.  ``ms`` is the measured median
        of the chosen algorithm and ``torch ms`` that of
        ``torch.nn.functional.conv3d`` (blank when not measured: a decision
        from the cost model, a fixed tile, or an ineligible layer, whose
        reason is shown as its choice).

    Examples
    --------
    >>> import torch
    >>> from pywino3d.torch import convert_model, conversion_summary
    >>> net = convert_model(torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3, stride=2)))
    >>> _ = net(torch.randn(1, 2, 6, 6, 6))
    >>> print(conversion_summary(net))
    layer  input shape      mode  choice          ms  torch ms  speed-up
    -----  ---------------  ----  --------------  --  --------  --------
    0      (1, 2, 6, 6, 6)  -     torch (stride)
    """
    rows = ConversionSummary()
    for name, m in model.named_modules():
        if not isinstance(m, Conv3d):
            continue
        for (shape, mode), p in m.plans.items():
            if shape == "ineligible":
                rows.append((name, mode, "-", f"torch ({p.source})", None, None, None))
                continue
            ms = p.times.get(p.name)
            tms = p.times.get(TORCH)
            choice = p.name if p.source in ("measured", "cached") else f"{p.name} ({p.source})"
            rows.append((name, shape, mode, choice, None if ms is None else ms * 1e3,
                         None if tms is None else tms * 1e3,
                         None if ms is None or tms is None else tms / ms))
    return rows


from pywino3d.torch.pruning import prune_model  # noqa: F401,E402
