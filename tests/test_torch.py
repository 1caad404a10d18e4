"""PyTorch layers: gradcheck, pruning masks, state_dict, convert_model."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import pywino3d  # noqa: E402
from pywino3d.torch import LowRankWinogradConv3d, WinogradConv3d, convert_model  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny problems: one thread (the layers follow torch.get_num_threads())."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _layers():
    return [WinogradConv3d(3, 4, 3, padding=1, tile=2, dtype=torch.float64),
            LowRankWinogradConv3d(3, 4, (1, 3, 3), padding=(0, 1, 1), tile=(1, 2, 2), rank=5, dtype=torch.float64),
            LowRankWinogradConv3d(3, 4, 3, padding="same", tile=3, rank=4, mode="residual", dtype=torch.float64)]


@pytest.mark.parametrize("i", range(3))
def test_gradcheck(i):
    torch.manual_seed(i)
    layer = _layers()[i]
    with torch.no_grad():
        layer.bias.normal_()
        if getattr(layer, "mode", None) == "residual":
            layer.Q.normal_()
    x = torch.randn(2, 3, 4, 5, 3, dtype=torch.float64, requires_grad=True)
    params = [p for p in layer.parameters()]
    assert torch.autograd.gradcheck(lambda xx, *ps: layer(xx), (x, *params), fast_mode=True)
    layer.set_columns(np.arange(0, layer.positions, 2))
    assert torch.autograd.gradcheck(lambda xx, *ps: layer(xx), (x, *params), fast_mode=True)


def test_pruning_masks_in_forward_and_backward():
    torch.manual_seed(0)
    layer = WinogradConv3d(3, 4, 3, padding=1, tile=2)
    keep = np.arange(0, 64, 3)
    layer.set_columns(keep)
    assert abs(layer.density - keep.size / 64) < 1e-9
    x = torch.randn(1, 3, 6, 6, 6, requires_grad=True)
    y = layer(x)
    U = layer.weight_U.detach().numpy().copy()
    pruned = np.setdiff1d(np.arange(64), keep)
    U[pruned] = 0
    ref = pywino3d.winograd_conv3d(x.detach().numpy(), U, kernel_size=3, tile=2, padding=1,
                                   bias=layer.bias.detach().numpy())
    np.testing.assert_allclose(y.detach().numpy(), ref, rtol=1e-5, atol=1e-5)
    y.sum().backward()
    g = layer.weight_U.grad.numpy()
    assert not g[pruned].any() and g[keep].any()


def test_state_dict_roundtrip():
    torch.manual_seed(0)
    a = LowRankWinogradConv3d(3, 4, 3, padding=1, tile=2, rank=5, mode="residual")
    a.set_columns([0, 5, 9])
    b = LowRankWinogradConv3d(3, 4, 3, padding=1, tile=2, rank=5, mode="residual", seed=7)
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 3, 4, 4, 4)
    assert torch.equal(a(x), b(x)) and torch.equal(b.columns_mask, a.columns_mask)
    v = WinogradConv3d(3, 4, 3, padding=1, tile=2)
    w = WinogradConv3d(3, 4, 3, padding=1, tile=2)
    w.load_state_dict(v.state_dict())
    assert torch.equal(v(x), w(x))


@pytest.mark.parametrize("rank", [None, 27])
def test_convert_model_preserves_outputs(rank):
    torch.manual_seed(0)
    m = torch.nn.Sequential(
        torch.nn.Conv3d(3, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Sequential(torch.nn.Conv3d(8, 8, (1, 3, 3), padding=(0, 1, 1), bias=False)),
        torch.nn.Conv3d(8, 4, 3, stride=2),  # not eligible
        torch.nn.Conv3d(4, 4, 3, dilation=2),  # not eligible
    )
    x = torch.randn(1, 3, 13, 13, 13)
    ref = m(x)
    convert_model(m, weights="winograd" if rank is None else "lowrank", tile=2, rank=rank)
    kinds = [type(mod).__name__ for mod in m.modules()]
    want = "WinogradConv3d" if rank is None else "LowRankWinogradConv3d"
    assert kinds.count(want) == 2 and kinds.count("Conv3d") == 2
    np.testing.assert_allclose(m(x).detach().numpy(), ref.detach().numpy(), rtol=1e-4, atol=1e-5)
