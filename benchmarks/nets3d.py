"""Video networks defined locally (nothing is downloaded), for the model
benchmark (``bench_models.py``) and the conversion tests.

* :func:`c3d` -- C3D (Tran et al. 2015): eight 3x3x3 convolutions, max
  pooling, two 4096-wide fully connected layers.
* :func:`r3d` -- an R3D-18-like residual network (torchvision's ``r3d_18``
  layout: a (3, 7, 7) stem, four stages of two basic blocks, strided first
  convolution and 1x1x1 projection where the shape changes, BatchNorm).
* :func:`r2plus1d` -- the same with every 3x3x3 convolution factorised into a
  (1, 3, 3) spatial and a (3, 1, 1) temporal convolution (R(2+1)D-18-like,
  torchvision's mid-plane count).

``width`` scales every channel count (64 is the published size), so the
tests can build the same architectures small.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["c3d", "r3d", "r2plus1d", "monai_basicunet", "monai_unet", "NETS", "build"]


def c3d(num_classes=101, width=64, fc=4096, clip=(16, 112, 112)):
    """C3D for 3-channel clips of ``clip`` frames x height x width."""
    w = [width, 2 * width, 4 * width, 8 * width]
    cfg = [(3, w[0]), "p1", (w[0], w[1]), "p", (w[1], w[2]), (w[2], w[2]), "p", (w[2], w[3]), (w[3], w[3]), "p",
           (w[3], w[3]), (w[3], w[3]), "p5"]
    layers = []
    for c in cfg:
        if c == "p1":
            layers.append(nn.MaxPool3d((1, 2, 2)))
        elif c == "p":
            layers.append(nn.MaxPool3d(2))
        elif c == "p5":
            layers.append(nn.MaxPool3d(2, padding=(0, 1, 1)))
        else:
            layers += [nn.Conv3d(*c, 3, padding=1), nn.ReLU(inplace=True)]
    d, h, ww = clip
    d, h, ww = d // 16, (h // 16 + 2) // 2, (ww // 16 + 2) // 2
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(w[3] * d * h * ww, fc), nn.ReLU(inplace=True),
                         nn.Linear(fc, fc), nn.ReLU(inplace=True), nn.Linear(fc, num_classes))


def _conv3x3x3(cin, cout, mid, stride):
    return nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _conv2plus1d(cin, cout, mid, stride):
    return nn.Sequential(
        nn.Conv3d(cin, mid, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False),
        nn.BatchNorm3d(mid), nn.ReLU(inplace=True),
        nn.Conv3d(mid, cout, (3, 1, 1), stride=(stride, 1, 1), padding=(1, 0, 0), bias=False))


class BasicBlock(nn.Module):
    def __init__(self, conv, cin, planes, stride):
        super().__init__()
        mid = (cin * planes * 27) // (cin * 9 + 3 * planes)  # torchvision's mid-planes of (2+1)D
        self.conv1 = nn.Sequential(conv(cin, planes, mid, stride), nn.BatchNorm3d(planes), nn.ReLU(inplace=True))
        mid = (planes * planes * 27) // (planes * 9 + 3 * planes)
        self.conv2 = nn.Sequential(conv(planes, planes, mid, 1), nn.BatchNorm3d(planes))
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(nn.Conv3d(cin, planes, 1, stride=stride, bias=False),
                                            nn.BatchNorm3d(planes))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        res = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv2(self.conv1(x)) + res)


class VideoResNet(nn.Module):
    def __init__(self, factorised, num_classes=400, width=64):
        super().__init__()
        conv = _conv2plus1d if factorised else _conv3x3x3
        if factorised:
            mid = max(1, (45 * width) // 64)
            self.stem = nn.Sequential(
                nn.Conv3d(3, mid, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
                nn.BatchNorm3d(mid), nn.ReLU(inplace=True),
                nn.Conv3d(mid, width, (3, 1, 1), padding=(1, 0, 0), bias=False),
                nn.BatchNorm3d(width), nn.ReLU(inplace=True))
        else:
            self.stem = nn.Sequential(nn.Conv3d(3, width, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
                                      nn.BatchNorm3d(width), nn.ReLU(inplace=True))
        blocks, cin = [], width
        for i, stride in enumerate((1, 2, 2, 2)):
            planes = width * 2 ** i
            blocks += [BasicBlock(conv, cin, planes, stride), BasicBlock(conv, planes, planes, 1)]
            cin = planes
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.layers(self.stem(x))).flatten(1))


def r3d(num_classes=400, width=64):
    """R3D-18-like network."""
    return VideoResNet(False, num_classes, width)


def r2plus1d(num_classes=400, width=64):
    """R(2+1)D-18-like network."""
    return VideoResNet(True, num_classes, width)


def monai_basicunet(features=(32, 32, 64, 128, 256, 32)):
    from monai.networks.nets import BasicUNet

    return BasicUNet(spatial_dims=3, in_channels=1, out_channels=2, features=features)


def monai_unet(channels=(16, 32, 64, 128, 256), num_res_units=2):
    from monai.networks.nets import UNet

    return UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=channels,
                strides=(2,) * (len(channels) - 1), num_res_units=num_res_units)


#: name -> (builder, input shape without the batch) at the published sizes
NETS = {
    "basicunet": (monai_basicunet, (1, 96, 96, 96)),
    "unet": (monai_unet, (1, 96, 96, 96)),
    "c3d": (c3d, (3, 16, 112, 112)),
    "r3d": (r3d, (3, 16, 112, 112)),
    "r2plus1d": (r2plus1d, (3, 16, 112, 112)),
}


def build(name, seed=0):
    """(model, input shape without batch) with seeded random weights."""
    builder, shape = NETS[name]
    torch.manual_seed(seed)
    return builder(), shape
