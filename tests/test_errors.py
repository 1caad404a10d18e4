"""Bad input: each call raises an exception naming the argument."""
import numpy as np
import pytest

import pywino3d

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


@pytest.mark.parametrize("fn,kw,exc,msg", CASES, ids=[f"{c[0].__name__}-{i}" for i, c in enumerate(CASES)])
def test_bad_input(fn, kw, exc, msg):
    with pytest.raises(exc, match=msg):
        fn(**kw)
