"""The table of bad inputs: every public function, every kind of mistake.

Run as a script it executes each case in this process and prints one JSON
line per case (``tests/test_errors.py`` runs it in a subprocess, so that a
crash fails the test instead of killing the suite).
"""
import faulthandler
import json
import sys

import numpy as np

import pywino3d
from pywino3d import LowRankWinograd, column_importance, select_columns, select_columns_global


class FakeGpuArray(np.ndarray):
    """Looks like a CuPy array to the dispatcher."""

    def get(self):
        return np.asarray(self).view(np.ndarray)


FakeGpuArray.__module__ = "cupy.fake"

rng = np.random.default_rng(0)
X = rng.standard_normal((1, 2, 5, 5, 5)).astype(np.float32)
W = rng.standard_normal((3, 2, 3, 3, 3)).astype(np.float32)
U = pywino3d.filter_transform(W, 2)
GY = np.ones((1, 3, 3, 3, 3), np.float32)


def conv(**kw):
    args = dict(x=X, w=W, bias=None, padding=0, tile=2)
    args.update(kw)
    return pywino3d.conv3d(args.pop("x"), args.pop("w"), args.pop("bias"), **args)


def wconv(**kw):
    args = dict(x=X, U=U, kernel_size=3, tile=2, padding=0)
    args.update(kw)
    return pywino3d.winograd_conv3d(args.pop("x"), args.pop("U"), **args)


def wback(**kw):
    args = dict(grad_y=GY, x=X, U=U, kernel_size=3, tile=2, padding=0)
    args.update(kw)
    return pywino3d.winograd_conv3d_backward(args.pop("grad_y"), args.pop("x"), args.pop("U"), **args)


CASES = [
    # (callable, kwargs, exception, message regex)
    (conv, dict(x=X[0]), ValueError, r"^x: expected a 5-D array"),
    (conv, dict(w=W[0]), ValueError, r"^w: expected a 5-D array"),
    (conv, dict(w=W[:, :1]), ValueError, r"^w: expected 2 input channels"),
    (conv, dict(x=X.astype(np.int32)), TypeError, r"^x: expected a float32 or float64"),
    (conv, dict(x=X.astype(np.float16)), TypeError, r"^x: expected a float32 or float64"),
    (conv, dict(w=W.astype(np.float64)), TypeError, r"^w: dtype float64 does not match"),
    (conv, dict(x="abc"), TypeError, r"^x: expected a numeric array"),
    (conv, dict(x=None), TypeError, r"^x: expected a numeric array"),
    (conv, dict(x=np.array([{}], dtype=object)), TypeError, r"^x: expected a float32"),
    (conv, dict(padding=-1), ValueError, r"^padding: must be non-negative"),
    (conv, dict(padding=(1, 1)), ValueError, r"^padding: expected an int or 3 ints"),
    (conv, dict(padding="full"), ValueError, r"^padding: expected"),
    (conv, dict(padding=1.5), TypeError, r"^padding: expected an int"),
    (conv, dict(tile=0), ValueError, r"^tile: expected an int >= 1"),
    (conv, dict(tile=9), ValueError, r"^tile: expected an int <= 8"),
    (conv, dict(tile="fast"), ValueError, r"^tile: expected"),
    (conv, dict(tile=(2, 2)), ValueError, r"^tile: expected an int or 3 ints"),
    (conv, dict(w=np.ones((3, 2, 8, 3, 3), np.float32)), ValueError, r"^w: kernel extents must be in 1..7"),
    (conv, dict(w=np.ones((3, 2, 7, 3, 3), np.float32)), ValueError, r"^kernel_size: kernel 7 is larger than the padded input along d"),
    (conv, dict(bias=np.ones(4, np.float32)), ValueError, r"^bias: expected shape \(3,\)"),
    (conv, dict(bias=np.ones(3)), TypeError, r"^bias: dtype float64 does not match"),
    (conv, dict(workers=0), ValueError, r"^workers: must be a nonzero int"),
    (conv, dict(workers=-100), ValueError, r"^workers: -100 leaves no core"),
    (conv, dict(workers=1.0), TypeError, r"^workers: expected an int"),
    (wconv, dict(U=U[:10]), ValueError, r"^U: expected shape \(positions=64"),
    (wconv, dict(U=U[:, :, :1]), ValueError, r"^U: expected shape"),
    (wconv, dict(U=U[0]), ValueError, r"^U: expected a 3-D array"),
    (wconv, dict(U=U.astype(np.float64)), TypeError, r"^U: dtype float64 does not match"),
    (wconv, dict(tile="auto"), ValueError, r"^tile: expected an int or 3 ints here"),
    (wconv, dict(kernel_size=0), ValueError, r"^kernel_size: expected an int >= 1"),
    (wconv, dict(columns=[0, 64]), ValueError, r"^columns: positions must be in \[0, 64\)"),
    (wconv, dict(columns=[-1]), ValueError, r"^columns: positions must be in"),
    (wconv, dict(columns=[1, 1]), ValueError, r"^columns: positions must not repeat"),
    (wconv, dict(columns=[0.5]), TypeError, r"^columns: expected integer positions"),
    (wconv, dict(columns=np.ones(64, bool)), TypeError, r"^columns: expected integer positions, got a boolean"),
    (wconv, dict(columns=[[1, 2]]), ValueError, r"^columns: expected a 1-D array"),
    (wback, dict(grad_y=GY[:, :2]), ValueError, r"^grad_y: expected shape \(1, 3, 3, 3, 3\)"),
    (wback, dict(grad_y=GY.astype(np.float64)), TypeError, r"^grad_y: dtype float64"),
    (wback, dict(columns=[99]), ValueError, r"^columns:"),
    (pywino3d.filter_transform, dict(w=W, tile=0), ValueError, r"^tile:"),
    (pywino3d.filter_transform, dict(w=W[0], tile=2), ValueError, r"^w: expected a 5-D"),
    (pywino3d.filter_transform_backward, dict(grad_U=U[:3], kernel_size=3, tile=2), ValueError, r"^grad_U: expected 64 positions"),
    (pywino3d.filter_transform_backward, dict(grad_U=U, kernel_size=(3, 3), tile=2), ValueError, r"^kernel_size:"),
]



LR = LowRankWinograd.from_filter(W.astype(np.float64), 4, 2)

CASES += [
    (pywino3d.conv3d, dict(x=X.view(FakeGpuArray), w=W.view(FakeGpuArray), backend="cpu"), TypeError,
     r"^x: is a CuPy \(GPU\) array but the backend is 'cpu'"),
    (pywino3d.conv3d, dict(x=X, w=W, backend="gpu"), ValueError, r"^backend: expected one of"),
    (pywino3d.conv3d, dict(x=X, w=W, backend=1), ValueError, r"^backend: expected one of"),
    (pywino3d.set_backend, dict(name="tpu"), ValueError, r"^backend: expected one of"),
    (LowRankWinograd.from_filter, dict(w=W, rank=0, tile=2), ValueError, r"^rank: expected an int >= 1"),
    (LowRankWinograd.from_filter, dict(w=W, rank=7, tile=2), ValueError, r"^rank: expected an int <= 6"),
    (LowRankWinograd.from_filter, dict(w=W, rank=2.5, tile=2), TypeError, r"^rank: expected an int"),
    (LowRankWinograd.from_filter, dict(w=W, rank=2, tile=2, mode="lora"), ValueError, r"^mode:"),
    (LR.backward, dict(grad_U=np.ones((3, 3, 2))), ValueError, r"^grad_U: expected shape"),
    (select_columns, dict(scores=np.ones(8), density=0), ValueError, r"^density: expected a number in"),
    (select_columns, dict(scores=np.ones(8), density=1.01), ValueError, r"^density:"),
    (select_columns, dict(scores=np.ones(8), density=-1), ValueError, r"^density:"),
    (select_columns, dict(scores=np.ones(8), density=float("nan")), ValueError, r"^density:"),
    (select_columns, dict(scores=np.ones((2, 4)), density=0.5), ValueError, r"^scores:"),
    (select_columns_global, dict(scores_list=[np.ones(4), np.ones(0)], density=0.5), ValueError,
     r"^scores_list\[1\]:"),
    (column_importance, dict(U=U, method="l0"), ValueError, r"^method:"),
    (column_importance, dict(U=U, method="taylor"), ValueError, r"^grad:"),
    (column_importance, dict(U=U[0], method="l2"), ValueError, r"^U: expected shape"),
]

try:  # the PyTorch layers, where torch is installed
    from pywino3d.torch import LowRankWinogradConv3d, WinogradConv3d

    CASES += [
        (WinogradConv3d, dict(in_channels=3, out_channels=4, kernel_size=9), ValueError,
         r"^kernel_size: expected an int <= 7"),
        (WinogradConv3d, dict(in_channels=3, out_channels=4, kernel_size=3, tile=0), ValueError,
         r"^tile: expected an int >= 1"),
        (WinogradConv3d, dict(in_channels=3, out_channels=4, kernel_size=3, padding=-1), ValueError,
         r"^padding: must be non-negative"),
        (LowRankWinogradConv3d, dict(in_channels=3, out_channels=4, kernel_size=3, rank=2, mode="lora"),
         ValueError, r"^mode:"),
    ]
except ImportError:
    pass

try:  # pywino3d.torch.Conv3d, the functional conv3d and convert_model
    import torch

    from pywino3d import torch as wtorch

    _C3 = wtorch.Conv3d(3, 4, 3, padding=1, tile=2)
    _XT = torch.randn(1, 3, 5, 5, 5)
    _WT = torch.randn(4, 3, 3, 3, 3)

    def tconv(x=_XT, layer=_C3):
        return layer(x)

    def tfun(**kw):
        args = dict(input=_XT, weight=_WT, bias=None)
        args.update(kw)
        return wtorch.conv3d(**args)

    def tconvert(model=None, **kw):
        return wtorch.convert_model(torch.nn.Sequential(torch.nn.Conv3d(3, 4, 3)) if model is None else model,
                                    **kw)

    CASES += [
        (tconv, dict(x=_XT[0, 0]), ValueError, r"^input: expected a 5-D \(N, C, D, H, W\) or 4-D"),
        (tconv, dict(x=_XT[None]), ValueError, r"^input: expected a 5-D"),
        (tconv, dict(x=_XT[:, :2]), ValueError, r"^input: expected 3 channels \(dim 1\)"),
        (tconv, dict(x=_XT[0, :2]), ValueError, r"^input: expected 3 channels \(dim 0\)"),
        (tconv, dict(x=_XT.to(torch.int64)), TypeError, r"^input: expected a floating-point tensor"),
        (tconv, dict(x=_XT.to(torch.bool)), TypeError, r"^input: expected a floating-point tensor"),
        (tconv, dict(x=_XT.to(torch.complex64)), TypeError, r"^input: dtype torch.complex64 does not match"),
        (tconv, dict(x=_XT.double()), TypeError, r"^input: dtype torch.float64 does not match weight's"),
        (tconv, dict(x=_XT.numpy()), TypeError, r"^input: expected a torch.Tensor, got ndarray"),
        (tconv, dict(x=torch.empty(1, 3, 5, 5, 5, device="meta")), TypeError, r"^input: is on meta"),
        (tconv, dict(x=torch.randn(1, 3, 1, 5, 5), layer=wtorch.Conv3d(3, 4, 3)), ValueError,
         r"^input: padded size 1 along d is smaller than the kernel \(3\)"),
        (tconv, dict(x=torch.randn(1, 3, 4, 5, 5), layer=wtorch.Conv3d(3, 4, 3, dilation=2)), ValueError,
         r"^input: padded size 4 along d is smaller than the dilated kernel \(5\)"),
        (wtorch.Conv3d, dict(in_channels=3, out_channels=4, kernel_size=3, tile="fast"), ValueError,
         r"^tile: expected 'auto', an int or 3 ints"),
        (wtorch.Conv3d, dict(in_channels=3, out_channels=4, kernel_size=3, tile=0), ValueError,
         r"^tile: expected an int >= 1"),
        (wtorch.Conv3d, dict(in_channels=3, out_channels=4, kernel_size=3, tile=(2, 2)), ValueError,
         r"^tile: expected an int or 3 ints"),
        (wtorch.Conv3d.from_conv3d, dict(conv=torch.nn.Conv2d(3, 4, 3)), TypeError, r"^conv: expected a torch.nn.Conv3d"),
        (tfun, dict(weight=_WT[0]), ValueError, r"^weight: expected a 5-D tensor"),
        (tfun, dict(weight=_WT.numpy()), TypeError, r"^weight: expected a torch.Tensor"),
        (tfun, dict(weight=_WT[:, :2]), ValueError, r"^input: expected 2 channels"),
        (tfun, dict(bias=torch.ones(3)), ValueError, r"^bias: expected shape \(4,\)"),
        (tfun, dict(bias=[1.0] * 4), TypeError, r"^bias: expected a torch.Tensor or None"),
        (tfun, dict(stride=0), ValueError, r"^stride: expected an int >= 1"),
        (tfun, dict(stride=(1, 1)), ValueError, r"^stride: expected an int or 3 ints"),
        (tfun, dict(dilation=1.5), TypeError, r"^dilation: expected an int"),
        (tfun, dict(padding=-1), ValueError, r"^padding: expected an int >= 0"),
        (tfun, dict(padding="full"), ValueError, r"^padding: expected an int, 3 ints, 'same' or 'valid'"),
        (tfun, dict(padding="same", stride=2), ValueError, r"^padding: 'same' is not supported for strided"),
        (tfun, dict(tile="fast"), ValueError, r"^tile: expected 'auto'"),
        (tfun, dict(tile=9), ValueError, r"^tile: expected an int <= 8"),
        (tconvert, dict(model="net"), TypeError, r"^model: expected a torch.nn.Module"),
        (tconvert, dict(model=torch.nn.Conv3d(3, 4, 3)), TypeError, r"^model: is a bare nn.Conv3d"),
        (tconvert, dict(weights="fp16"), ValueError, r"^weights: expected one of"),
        (tconvert, dict(weights="lowrank"), ValueError, r"^rank: weights='lowrank' needs a rank"),
        (tconvert, dict(weights="lowrank", rank=0), ValueError, r"^rank: expected an int >= 1"),
        (tconvert, dict(weights="lowrank", rank=4, mode="lora"), ValueError, r"^mode: expected"),
        (tconvert, dict(rank=4), ValueError, r"^rank: only used with weights='lowrank'"),
        (tconvert, dict(tile="fast"), ValueError, r"^tile: expected 'auto'"),
        (tconvert, dict(weights="winograd", tile=0), ValueError, r"^tile: expected an int >= 1"),
        (tconvert, dict(weights="winograd", example_inputs=_XT), ValueError,
         r"^example_inputs: only used with weights='spatial'"),
        (tconvert, dict(example_inputs="x"), TypeError, r"^example_inputs: expected a tensor or a tuple"),
        (tconvert, dict(example_inputs=()), TypeError, r"^example_inputs: expected a tensor or a tuple"),
    ]
except ImportError:
    pass

IDS = [f"{getattr(c[0], '__qualname__', c[0])}-{i}" for i, c in enumerate(CASES)]


def run_all():
    faulthandler.enable()
    for i, (fn, kw, exc, msg) in enumerate(CASES):
        print(json.dumps({"case": i, "start": True}), flush=True)
        try:
            fn(**kw)
        except Exception as e:  # noqa: BLE001 - we record every kind
            out = {"case": i, "type": type(e).__name__, "msg": str(e)}
        else:
            out = {"case": i, "type": None, "msg": "no exception"}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    sys.path.insert(0, "")
    run_all()
