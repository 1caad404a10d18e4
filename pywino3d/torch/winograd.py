"""Winograd-domain layers: the trainable weight is U itself
(:class:`WinogradConv3d`) or its low-rank factors
(:class:`LowRankWinogradConv3d`)."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from pywino3d._api import filter_transform
from pywino3d._core.geometry import n_positions, pads6, parse_kernel_size, parse_padding, parse_tile
from pywino3d.torch.functional import _tensor_key, _tracing
from pywino3d.torch.ops import backward_arrays, forward_arrays, winograd_conv3d_op, winograd_grads

__all__ = ["WinogradConv3d", "LowRankWinogradConv3d", "WinogradConv3dFunction"]


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
        ctx.meta = (kernel_size, tile, padding, columns)
        return forward_arrays(x, U, bias, kernel_size, tile, padding, columns)

    @staticmethod
    def backward(ctx, grad_y):
        x, U = ctx.saved_tensors
        kernel_size, tile, padding, columns = ctx.meta
        return winograd_grads(ctx.needs_input_grad, grad_y,
                              lambda: backward_arrays(grad_y, x, U, kernel_size, tile, padding, columns))


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
        self.positions = n_positions(self.tile, self.kernel_size)
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
