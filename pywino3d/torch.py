"""PyTorch layers running pywino3d's kernels (optional extra ``pywino3d[torch]``).

* :class:`WinogradConv3d` -- trains the full Winograd-domain weights U.
* :class:`LowRankWinogradConv3d` -- trains the factors P, Q (U = P Q, or
  U0 + P Q in residual mode).
* :func:`convert_model` -- replaces eligible ``nn.Conv3d`` layers.

Forward and backward call :func:`pywino3d.winograd_conv3d` and
:func:`pywino3d.winograd_conv3d_backward` through a
``torch.autograd.Function``: CPU tensors reach NumPy without a copy
(``Tensor.numpy()``), CUDA tensors reach CuPy without a copy (DLPack).
Pruning masks live in the ``columns_mask`` buffer (one flag per position)
and reach the kernels as ``columns``.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ._api import filter_transform, winograd_conv3d, winograd_conv3d_backward
from ._geometry import parse_kernel_size, parse_padding, parse_tile
from ._transforms import MAX_KERNEL

__all__ = ["WinogradConv3d", "LowRankWinogradConv3d", "WinogradConv3dFunction", "convert_model"]


def _to_array(t):
    """Zero-copy view of a tensor as a NumPy (CPU) or CuPy (CUDA) array."""
    t = t.detach()
    if t.is_cuda:
        import cupy

        return cupy.from_dlpack(t.contiguous())
    return t.numpy()


def _to_tensor(a, like):
    if isinstance(a, np.ndarray):
        return torch.from_numpy(a)
    return torch.from_dlpack(a).to(like.device)


class WinogradConv3dFunction(torch.autograd.Function):
    """y = winograd_conv3d(x, U) + bias, with gradients for x, U and bias.

    ``columns`` (None or a 1-D integer array of kept positions) is a
    non-differentiable argument; grad_U is zero at pruned positions.

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
        xa, Ua = _to_array(x), _to_array(U)
        ba = None if bias is None else _to_array(bias)
        y = winograd_conv3d(xa, Ua, kernel_size=kernel_size, tile=tile, padding=padding,
                            bias=ba, columns=columns)
        ctx.save_for_backward(x, U)
        ctx.meta = (kernel_size, tile, padding, columns, bias is not None)
        return _to_tensor(y, x)

    @staticmethod
    def backward(ctx, grad_y):
        x, U = ctx.saved_tensors
        kernel_size, tile, padding, columns, has_bias = ctx.meta
        gx = gU = gb = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            gxa, gUa = winograd_conv3d_backward(_to_array(grad_y.contiguous()), _to_array(x), _to_array(U),
                                                kernel_size=kernel_size, tile=tile, padding=padding,
                                                columns=columns)
            gx = _to_tensor(gxa, x) if ctx.needs_input_grad[0] else None
            gU = _to_tensor(gUa, U) if ctx.needs_input_grad[1] else None
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
        return WinogradConv3dFunction.apply(x, U, self.bias, self.kernel_size, self.tile, self.padding,
                                            self.columns())

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
        from .lowrank import LowRankWinograd

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

    def winograd_weights(self):
        U = (self.P @ self.Q.reshape(self.rank, -1)).reshape(self.positions, self.out_channels,
                                                             self.in_channels)
        return U if self.U0 is None else U + self.U0

    @property
    def num_weight_params(self):
        return self.P.numel() + self.Q.numel()

    def extra_repr(self):
        return super().extra_repr() + f", rank={self.rank}, mode={self.mode!r}"


def _eligible(conv):
    return (isinstance(conv, nn.Conv3d) and tuple(conv.stride) == (1, 1, 1)
            and tuple(conv.dilation) == (1, 1, 1) and conv.groups == 1
            and conv.padding_mode == "zeros" and all(1 <= k <= MAX_KERNEL for k in conv.kernel_size))


def convert_model(model, tile=2, rank=None, mode="factor"):
    """Replace every eligible ``nn.Conv3d`` by a Winograd layer, in place.

    Eligible: stride 1, dilation 1, groups 1, zero padding, kernel extents
    <= 7.  Others are left alone.  With ``rank=None`` the layer is a
    :class:`WinogradConv3d` (outputs unchanged up to rounding); with a rank a
    :class:`LowRankWinogradConv3d` initialised by truncated SVD (exact when
    ``rank >= rd*rh*rw``).

    Returns
    -------
    model : the same module, converted

    Examples
    --------
    >>> import torch
    >>> from pywino3d.torch import convert_model
    >>> net = torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3, padding=1), torch.nn.Conv3d(4, 4, 3, stride=2))
    >>> x = torch.randn(1, 2, 6, 6, 6)
    >>> ref = net(x)
    >>> [type(m).__name__ for m in convert_model(net, tile=2)]
    ['WinogradConv3d', 'Conv3d']
    >>> bool(torch.allclose(net(x), ref, atol=1e-5))
    True
    """
    for name, child in list(model.named_children()):
        if _eligible(child):
            dtype = child.weight.dtype
            kw = dict(kernel_size=child.kernel_size, padding=child.padding if not isinstance(child.padding, str)
                      else child.padding, tile=tile, bias=child.bias is not None, weight=child.weight,
                      dtype=dtype)
            if rank is None:
                new = WinogradConv3d(child.in_channels, child.out_channels, **kw)
            else:
                new = LowRankWinogradConv3d(child.in_channels, child.out_channels, rank=rank, mode=mode, **kw)
            if child.bias is not None:
                with torch.no_grad():
                    new.bias.copy_(child.bias)
            new.to(child.weight.device)
            setattr(model, name, new)
        else:
            convert_model(child, tile=tile, rank=rank, mode=mode)
    return model


from ._torch_pruning import prune_model  # noqa: F401,E402
