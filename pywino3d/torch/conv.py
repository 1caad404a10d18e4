"""The drop-in layer: :class:`Conv3d`, an ``nn.Conv3d`` that runs pywino3d
where it is measured to be faster."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pywino3d.torch import algorithm
from pywino3d.torch.functional import _check_extent, _check_input, _check_tile, _plan, _tensor_key, _tracing
from pywino3d.torch.ops import filter_transform_op, winograd_conv3d_op
from pywino3d._core.geometry import pads6
from pywino3d.torch.algorithm import TORCH, Choice

__all__ = ["Conv3d"]


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
        The :class:`~pywino3d.torch.algorithm.Choice` (the algorithm chosen) per problem (input
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
        return (algorithm.generation(), x.shape, x.stride(), x.dtype, dev, x.requires_grad,
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
        reason = algorithm.ineligible(x, self.weight, self.stride, self.dilation, self.groups)
        if reason is not None:
            if key is not None:
                self.plans[("ineligible", tuple(x.shape))] = Choice(TORCH, None, {}, reason)
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
