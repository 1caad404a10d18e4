"""The functional form, :func:`conv3d` (``torch.nn.functional.conv3d``'s
semantics), its argument checks and the per-call algorithm plan."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pywino3d._core.geometry import parse_tile
from pywino3d._core.validation import as_triple
from pywino3d.torch import algorithm
from pywino3d.torch.ops import filter_transform_op, winograd_conv3d_op
from pywino3d._core.geometry import pads6
from pywino3d.torch.algorithm import TORCH, Choice

__all__ = ["conv3d"]


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
    p = algorithm.decide(x_shape, K, ksize, pads, getattr(torch, dtype_name), torch.device(device_type),
                        channels_last, grad, bias, tile, measure=False)
    return (p.algo, p.tile)


# What torch.compiler.assume_constant_result does, without importing
# torch._dynamo (seconds) when pywino3d.torch is imported: dynamo calls the
# function at trace time and bakes its result into the graph.
_traced_plan._dynamo_marked_constant = True


def _plan(x, weight, bias, pads, tile, training=True):
    """(Choice, whether it is tuned for training) for an eligible problem (x is
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
        return Choice(algo, t, {}, "traced"), grad
    return algorithm.decide(shape, K, ks, tuple(pads), x.dtype, x.device, cl, grad, bias is not None, tile), grad


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
    reason = algorithm.ineligible(x, weight, stride, dilation, groups)
    p = None if reason else _plan(x, weight, bias, pads, tile)[0]
    if p is None or p.algo == TORCH:
        return F.conv3d(input, weight, bias, stride, padding, dilation, groups)
    y = winograd_conv3d_op(x, filter_transform_op(weight, list(p.tile)), bias, list(ksize), list(p.tile),
                           list(pads), None)
    return y.squeeze(0) if unbatched else y
