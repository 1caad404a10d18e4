"""The small 3-D CNNs of the experiments."""
from __future__ import annotations

from .data import NCLASS

CHANNELS = (1, 8, 16, 16, 32)


KINDS = ("spatial", "vanilla", "lowrank", "residual")


def make_model(kind, *, tile=2, rank=8, seed=0, nclass=NCLASS, channels=CHANNELS):
    """A 4-layer 3-D CNN (conv, batch norm, ReLU); ``kind`` picks the convolutions.

    ``channels`` are the widths (1, c1, c2, c3, c4); a (1, 2, 2) max-pool
    follows the second layer, then global average pooling and a linear layer.

    kind: "spatial" (torch nn.Conv3d), "vanilla" (WinogradConv3d, full U),
    "lowrank" (LowRankWinogradConv3d, U = P Q) or "residual" (U = U0 + P Q,
    U0 frozen at the random initialisation).

    Every kind starts from the same family: a He-normal spatial kernel
    (std sqrt(2 / fan_in)) and zero bias; the Winograd kinds transform it, the
    low-rank kinds truncate it to ``rank`` and rescale to keep its norm.

    Examples
    --------
    >>> from pywino3d.experiments.models import make_model, trainable_params
    >>> trainable_params(make_model("lowrank", rank=8)) < trainable_params(make_model("vanilla"))
    True
    """
    import torch
    from torch import nn

    from pywino3d.torch import LowRankWinogradConv3d, WinogradConv3d

    torch.manual_seed(seed)
    layers = []
    if len(channels) != 5 or channels[0] != 1:
        raise ValueError(f"channels: expected 5 widths starting with 1, got {channels!r}")
    for i, (cin, cout) in enumerate(zip(channels[:-1], channels[1:])):
        if kind == "spatial":
            conv = nn.Conv3d(cin, cout, 3, padding=1)
            nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        elif kind == "vanilla":
            conv = WinogradConv3d(cin, cout, 3, padding=1, tile=tile)
        elif kind in ("lowrank", "residual"):
            conv = LowRankWinogradConv3d(cin, cout, 3, padding=1, tile=tile, rank=rank, seed=seed + i,
                                         mode="factor" if kind == "lowrank" else "residual")
        else:
            raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
        layers += [conv, nn.BatchNorm3d(cout), nn.ReLU()]
        if i == 1:
            layers.append(nn.MaxPool3d((1, 2, 2)))
    layers += [nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(channels[-1], nclass)]
    return nn.Sequential(*layers)


def conv_layers(model):
    """The Winograd convolution layers of ``model``, in order.

    Examples
    --------
    >>> from pywino3d.experiments.models import conv_layers, make_model
    >>> len(conv_layers(make_model("vanilla"))), len(conv_layers(make_model("spatial")))
    (4, 0)
    """
    from pywino3d.torch.winograd import _WinogradBase

    return [m for m in model.modules() if isinstance(m, _WinogradBase)]


def trainable_params(model):
    """Number of trainable parameters.

    Examples
    --------
    >>> from pywino3d.experiments.models import make_model, trainable_params
    >>> trainable_params(make_model("spatial"))
    25284
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def to_vanilla(model):
    """A copy of ``model`` whose Winograd layers hold the composed U as trainable weights.

    Low-rank layers, at any depth of the module tree, become
    :class:`~pywino3d.torch.WinogradConv3d` with
    U = P Q (+ U0) and the same kept columns; everything else is copied, so
    the copy computes the same function.

    Examples
    --------
    >>> import torch
    >>> from pywino3d.experiments.models import make_model, to_vanilla
    >>> m = make_model("lowrank", rank=4).eval()
    >>> x = torch.randn(2, 1, 8, 18, 18)
    >>> bool(torch.allclose(m(x), to_vanilla(m)(x), atol=1e-5))
    True
    """
    import copy

    import torch

    from pywino3d.torch.winograd import WinogradConv3d, _WinogradBase

    model = copy.deepcopy(model)
    for name, m in list(model.named_modules()):
        if isinstance(m, _WinogradBase) and not isinstance(m, WinogradConv3d):
            v = WinogradConv3d(m.in_channels, m.out_channels, m.kernel_size, padding=m.padding, tile=m.tile,
                               bias=m.bias is not None)
            with torch.no_grad():
                v.weight_U.copy_(m.winograd_weights())
                if m.bias is not None:
                    v.bias.copy_(m.bias)
                v.columns_mask.copy_(m.columns_mask)
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, v)
    return model
