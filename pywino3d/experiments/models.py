"""The small 3-D CNNs of the experiments."""
from __future__ import annotations

from .data import NCLASS

CHANNELS = (1, 8, 16, 16, 32)


def make_model(kind, *, tile=2, rank=8, seed=0):
    """A 4-layer 3-D CNN (conv, batch norm, ReLU); ``kind`` picks the convolutions.

    kind: "spatial" (torch nn.Conv3d), "vanilla" (WinogradConv3d, full U),
    "lowrank" (LowRankWinogradConv3d, U = P Q) or "residual" (U = U0 + P Q,
    U0 frozen at the random initialisation).

    Examples
    --------
    >>> from pywino3d.experiments.models import make_model, trainable_params
    >>> trainable_params(make_model("lowrank", rank=8)) < trainable_params(make_model("vanilla"))
    True
    """
    import torch
    from torch import nn

    from ..torch import LowRankWinogradConv3d, WinogradConv3d

    torch.manual_seed(seed)
    layers = []
    for i, (cin, cout) in enumerate(zip(CHANNELS[:-1], CHANNELS[1:])):
        if kind == "spatial":
            conv = nn.Conv3d(cin, cout, 3, padding=1)
        elif kind == "vanilla":
            conv = WinogradConv3d(cin, cout, 3, padding=1, tile=tile)
        elif kind in ("lowrank", "residual"):
            conv = LowRankWinogradConv3d(cin, cout, 3, padding=1, tile=tile, rank=rank, seed=seed + i,
                                         mode="factor" if kind == "lowrank" else "residual")
        else:
            raise ValueError(f"kind: unknown model kind {kind!r}")
        layers += [conv, nn.BatchNorm3d(cout), nn.ReLU()]
        if i == 1:
            layers.append(nn.MaxPool3d((1, 2, 2)))
    layers += [nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(CHANNELS[-1], NCLASS)]
    return nn.Sequential(*layers)


def conv_layers(model):
    """The Winograd convolution layers of ``model``, in order.

    Examples
    --------
    >>> from pywino3d.experiments.models import conv_layers, make_model
    >>> len(conv_layers(make_model("vanilla"))), len(conv_layers(make_model("spatial")))
    (4, 0)
    """
    from ..torch import _WinogradBase

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
