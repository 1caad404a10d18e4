"""pywino3d's kernels as PyTorch custom operators (``torch.library``).

Four operators live in the ``pywino3d`` namespace:

========================================  =====================================
``pywino3d::filter_transform``            w (K, C, rd, rh, rw) -> U (P, K, C)
``pywino3d::filter_transform_backward``   grad_U -> grad_w
``pywino3d::winograd_conv3d``             y = conv(x, U) + bias
``pywino3d::winograd_conv3d_backward``    (grad_x, grad_U)
========================================  =====================================

Each has a fake (meta) implementation, so ``torch.compile(fullgraph=True)``
and ``torch.export`` trace through them, and the two forward operators have
registered autograd formulas (grad_w of the filter transform through
``filter_transform_backward``; grad_x and grad_U through
``winograd_conv3d_backward``; grad_bias as a sum).  Tensors reach the public
NumPy-style API without a copy: ``Tensor.numpy()`` on the CPU (any strides,
so ``channels_last_3d`` inputs are read in place), DLPack to CuPy on CUDA.

``padding`` is passed as six ints (front, back per axis): symmetric values
become the API's 3-tuple, torch's ``"same"`` split (the extra element of an
even kernel at the back) becomes ``"same"``.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor

from pywino3d._api import filter_transform, filter_transform_backward, winograd_conv3d, winograd_conv3d_backward
from pywino3d._core.geometry import n_positions, padding_arg

__all__ = ["to_array", "to_tensor", "filter_transform_op", "winograd_conv3d_op"]


def to_array(t):
    """Zero-copy view of a tensor as a NumPy (CPU) or CuPy (CUDA) array."""
    t = t.detach()
    if t.is_cuda:
        import cupy

        return cupy.from_dlpack(t.contiguous())
    return t.resolve_conj().resolve_neg().numpy()


def to_tensor(a, like):
    """A NumPy or CuPy result as a tensor on ``like``'s device (no copy)."""
    if isinstance(a, np.ndarray):
        return torch.from_numpy(a)
    return torch.from_dlpack(a).to(like.device)


def _workers(t):
    # The layers follow torch's intra-op thread count on the CPU.
    return None if t.is_cuda else torch.get_num_threads()


def _columns(columns):
    return None if columns is None else columns.detach().cpu().numpy()


def _out_extent(x, kernel_size, padding):
    return [s + padding[2 * i] + padding[2 * i + 1] - r + 1
            for i, (s, r) in enumerate(zip(x.shape[2:], kernel_size))]


# ------------------------------------------------------------ filter transform
@torch.library.custom_op("pywino3d::filter_transform", mutates_args=())
def filter_transform_op(w: Tensor, tile: list[int]) -> Tensor:
    """U = filter_transform(w, tile) as a tensor on w's device."""
    U = filter_transform(to_array(w), tuple(tile), workers=_workers(w))
    return to_tensor(U, w)


@filter_transform_op.register_fake
def _(w, tile):
    return w.new_empty((n_positions(tile, w.shape[2:]), w.shape[0], w.shape[1]))


@torch.library.custom_op("pywino3d::filter_transform_backward", mutates_args=())
def filter_transform_backward_op(grad_U: Tensor, kernel_size: list[int], tile: list[int]) -> Tensor:
    """grad_w = filter_transform_backward(grad_U, kernel_size, tile)."""
    gw = filter_transform_backward(to_array(grad_U.contiguous()), tuple(kernel_size), tuple(tile),
                                   workers=_workers(grad_U))
    return to_tensor(gw, grad_U)


@filter_transform_backward_op.register_fake
def _(grad_U, kernel_size, tile):
    return grad_U.new_empty((grad_U.shape[1], grad_U.shape[2], *kernel_size))


def _ft_setup(ctx, inputs, output):
    w, tile = inputs
    ctx.meta = (list(w.shape[2:]), list(tile))


def _ft_backward(ctx, grad_U):
    kernel_size, tile = ctx.meta
    return filter_transform_backward_op(grad_U, kernel_size, tile), None


filter_transform_op.register_autograd(_ft_backward, setup_context=_ft_setup)


# ------------------------------------------------------------ convolution
def forward_arrays(x, U, bias, kernel_size, tile, padding, columns):
    """y as a tensor: the array-level forward shared by every layer."""
    y = winograd_conv3d(to_array(x), to_array(U), kernel_size=tuple(kernel_size), tile=tuple(tile),
                        padding=padding, bias=None if bias is None else to_array(bias),
                        columns=columns, workers=_workers(x))
    return to_tensor(y, x)


def backward_arrays(grad_y, x, U, kernel_size, tile, padding, columns):
    """(grad_x, grad_U) as tensors."""
    gx, gU = winograd_conv3d_backward(to_array(grad_y.contiguous()), to_array(x), to_array(U),
                                      kernel_size=tuple(kernel_size), tile=tuple(tile), padding=padding,
                                      columns=columns, workers=_workers(x))
    return to_tensor(gx, x), to_tensor(gU, U)


@torch.library.custom_op("pywino3d::winograd_conv3d", mutates_args=())
def winograd_conv3d_op(x: Tensor, U: Tensor, bias: Optional[Tensor], kernel_size: list[int], tile: list[int],
                       padding: list[int], columns: Optional[Tensor]) -> Tensor:
    """y = winograd_conv3d(x, U) + bias; ``padding`` is six ints (front, back per axis)."""
    return forward_arrays(x, U, bias, kernel_size, tile, padding_arg(padding, kernel_size), _columns(columns))


@winograd_conv3d_op.register_fake
def _(x, U, bias, kernel_size, tile, padding, columns):
    return x.new_empty((x.shape[0], U.shape[1], *_out_extent(x, kernel_size, padding)))


@torch.library.custom_op("pywino3d::winograd_conv3d_backward", mutates_args=())
def winograd_conv3d_backward_op(grad_y: Tensor, x: Tensor, U: Tensor, kernel_size: list[int], tile: list[int],
                                padding: list[int], columns: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """(grad_x, grad_U) of :func:`winograd_conv3d_op`."""
    return backward_arrays(grad_y, x, U, kernel_size, tile, padding_arg(padding, kernel_size),
                           _columns(columns))


@winograd_conv3d_backward_op.register_fake
def _(grad_y, x, U, kernel_size, tile, padding, columns):
    return x.new_empty(x.shape), U.new_empty(U.shape)


def _wc_setup(ctx, inputs, output):
    x, U, bias, kernel_size, tile, padding, columns = inputs
    # Only what the backward will read is kept (nothing at all when no input
    # needs a gradient: then autograd does not call this function).
    need_xU = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
    if need_xU:
        ctx.save_for_backward(x, U, columns)
    ctx.meta = (list(kernel_size), list(tile), list(padding), need_xU)


def winograd_grads(needs_input_grad, grad_y, grads_xU):
    """The gradients of (x, U, bias, kernel_size, tile, padding, columns):
    ``grads_xU()`` gives (grad_x, grad_U) where either is needed, grad_bias
    is grad_y summed over all but the channel axis.  Shared by the custom
    operator and :class:`pywino3d.torch.WinogradConv3dFunction`."""
    gx = gU = gb = None
    if needs_input_grad[0] or needs_input_grad[1]:
        gx, gU = grads_xU()
        gx = gx if needs_input_grad[0] else None
        gU = gU if needs_input_grad[1] else None
    if needs_input_grad[2]:
        gb = grad_y.sum(dim=(0, 2, 3, 4))
    return gx, gU, gb, None, None, None, None


def _wc_backward(ctx, grad_y):
    kernel_size, tile, padding, need_xU = ctx.meta

    def grads_xU():
        x, U, columns = ctx.saved_tensors
        return winograd_conv3d_backward_op(grad_y, x, U, kernel_size, tile, padding, columns)

    return winograd_grads(ctx.needs_input_grad, grad_y, grads_xU)


winograd_conv3d_op.register_autograd(_wc_backward, setup_context=_wc_setup)
