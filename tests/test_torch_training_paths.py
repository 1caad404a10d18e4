"""PyTorch paths that had only a shape doctest or no test at all:
``WinogradConv3dFunction`` (values and gradcheck), ``convert_model`` with
``weights="lowrank", mode="residual"``, ``prune_model`` with each method,
and ``torch.compile`` with the default (inductor) backend on a converted
model."""
import copy
import shutil

import numpy as np
import pytest

import pywino3d

torch = pytest.importorskip("torch")
F = torch.nn.functional

from pywino3d.torch import ops as _torch_ops  # noqa: E402  (private: to see that the pywino3d operators ran)
from pywino3d.torch import (  # noqa: E402
    Conv3d, LowRankWinogradConv3d, WinogradConv3dFunction, convert_model, prune_model,
)


def _spatial_problem(seed, C=2, K=3, spatial=(4, 5, 3), ksize=(3, 3, 3)):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, C, *spatial, generator=g, dtype=torch.float64)
    w = torch.randn(K, C, *ksize, generator=g, dtype=torch.float64)
    b = torch.randn(K, generator=g, dtype=torch.float64)
    return x, w, b


# ------------------------------------------------------------ WinogradConv3dFunction
def test_function_forward_matches_conv3d():
    x, w, b = _spatial_problem(0)
    U = torch.from_numpy(pywino3d.filter_transform(w.numpy(), 2))
    y = WinogradConv3dFunction.apply(x, U, b, (3, 3, 3), (2, 2, 2), 1, None)
    torch.testing.assert_close(y, F.conv3d(x, w, b, padding=1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("columns", [None, "pruned"])
def test_function_gradcheck(columns):
    """Gradients of x, U and bias against finite differences (float64); with
    pruned columns grad_U is zero there and the check still holds (the
    output does not depend on U at pruned positions)."""
    x, w, b = _spatial_problem(1, C=2, K=2, spatial=(3, 4, 3), ksize=(2, 3, 2))
    U = torch.from_numpy(pywino3d.filter_transform(w.numpy(), (2, 2, 3)))
    cols = None if columns is None else np.arange(0, U.shape[0], 3)
    args = (x.requires_grad_(), U.clone().requires_grad_(), b.requires_grad_(), (2, 3, 2), (2, 2, 3), 1, cols)
    assert torch.autograd.gradcheck(WinogradConv3dFunction.apply, args, eps=1e-6, atol=1e-8, rtol=1e-6, fast_mode=True)
    if cols is not None:
        y = WinogradConv3dFunction.apply(*args)
        (gU,) = torch.autograd.grad(y.square().sum(), args[1])
        pruned = np.setdiff1d(np.arange(U.shape[0]), cols)
        assert not gU[pruned].any() and gU[cols].abs().sum() > 0


def test_function_bias_gradient_only_when_asked():
    x, w, b = _spatial_problem(2)
    U = torch.from_numpy(pywino3d.filter_transform(w.numpy(), 2))
    bb = b.clone().requires_grad_()
    y = WinogradConv3dFunction.apply(x, U, bb, (3, 3, 3), (2, 2, 2), 1, None)
    gy = torch.randn_like(y)
    y.backward(gy)
    torch.testing.assert_close(bb.grad, gy.sum(dim=(0, 2, 3, 4)), rtol=1e-14, atol=1e-12)
    assert x.grad is None and U.grad is None


# ------------------------------------------------------------ convert_model(mode="residual")
def test_convert_model_lowrank_residual():
    """Residual mode: U = U0 + P Q with U0 the layer's exact U (a buffer,
    frozen), P random and Q zero -- the converted network starts exactly at
    the original (at any rank, unlike "factor"), only P and Q train, and a
    training step moves the output."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(3, 5, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv3d(5, 4, (1, 3, 3), padding=(0, 1, 1)),
                              torch.nn.Conv3d(4, 4, 3, stride=2)).double()
    ref = copy.deepcopy(net)
    x = torch.randn(2, 3, 6, 5, 6, dtype=torch.float64)
    factor = convert_model(copy.deepcopy(net), weights="lowrank", rank=2, tile=2, mode="factor")
    convert_model(net, weights="lowrank", rank=2, tile=2, mode="residual")
    for m in (net, factor):
        assert [type(c) for c in m] == [LowRankWinogradConv3d, torch.nn.ReLU, LowRankWinogradConv3d,
                                        torch.nn.Conv3d]  # the strided layer is not eligible
    for layer, conv in ((net[0], ref[0]), (net[2], ref[2])):
        assert layer.mode == "residual" and layer.rank == 2
        assert not layer.Q.detach().any() and layer.P.detach().abs().sum() > 0
        assert "U0" in dict(layer.named_buffers()) and "U0" not in dict(layer.named_parameters())
        np.testing.assert_allclose(layer.U0.numpy(), pywino3d.filter_transform(conv.weight.detach().numpy(), 2),
                                   rtol=0, atol=0)
    with torch.no_grad():
        y_ref, y_res, y_fac = ref(x), net(x), factor(x)
    torch.testing.assert_close(y_res, y_ref, rtol=1e-12, atol=1e-12)
    assert (y_fac - y_ref).abs().max() > 1e-3  # rank 2 of 27 in "factor" mode is not exact: the modes differ
    # one step trains P and Q only; the output moves away from U0's
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.05)
    net(x).square().mean().backward()
    assert net[0].U0.grad is None and net[0].Q.grad.abs().sum() > 0
    opt.step()
    with torch.no_grad():
        assert (net(x) - y_ref).abs().max() > 1e-6
        assert net[0].Q.abs().sum() > 0


# ------------------------------------------------------------ prune_model(method=...)
def _winograd_net(seed):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv3d(3, 4, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv3d(4, 4, 3, padding=1)).double()
    return convert_model(net, weights="winograd", tile=2)


def _crafted(net):
    """Give layer 0 positions whose l1 and l2 orders differ: position 0 one
    large entry (l2 = 3, l1 = 3), position 1 many small ones (l2 = 2, l1 =
    0.5 * 12 = 6); the other positions small."""
    U = net[0].weight_U
    with torch.no_grad():
        U.mul_(0.01)
        U[0] = 0
        U[0, 0, 0] = 3.0
        U[1] = 0.5 * (torch.arange(12, dtype=U.dtype).reshape(4, 3) % 2 * 2 - 1)  # 12 entries of +-0.5
    return net


@pytest.mark.parametrize("method, norm", [("l2", 2), ("l1", 1)])
def test_prune_model_magnitude_methods(method, norm):
    """Without refit, "l2"/"l1" keep each layer's positions of largest
    L2/L1 norm of U[p], zero the others, leave the kept ones unchanged, and
    the layer then computes with only those (forward and gradients)."""
    net = _crafted(_winograd_net(0))
    before = [net[i].weight_U.detach().clone() for i in (0, 2)]
    prune_model(net, 2 / 64, method=method, refit=False, scope="layer")
    for layer, U in zip((net[0], net[2]), before):
        scores = U.reshape(U.shape[0], -1).norm(p=norm, dim=1)
        want = np.sort(torch.topk(scores, 2).indices.numpy())
        np.testing.assert_array_equal(layer.columns(), want)
        W = layer.weight_U.detach()
        torch.testing.assert_close(W[want], U[want], rtol=0, atol=0)
        assert not W[np.setdiff1d(np.arange(64), want)].any()
    # the crafted positions: l2 keeps 0 (3 > 2), l1 keeps 1 (6 > 3); both keep the pair
    assert set(net[0].columns()) == {0, 1}
    x = torch.randn(1, 3, 4, 4, 4, dtype=torch.float64, requires_grad=True)
    y = net(x)
    y.square().sum().backward()
    assert not net[0].weight_U.grad[np.setdiff1d(np.arange(64), net[0].columns())].any()


def test_prune_model_l1_and_l2_choose_differently():
    """At one position per layer, l2 keeps position 0 and l1 position 1."""
    kept = {}
    for method in ("l1", "l2"):
        net = prune_model(_crafted(_winograd_net(0)), 1 / 64, method=method, refit=False, scope="layer")
        kept[method] = int(net[0].columns()[0])
    assert kept == {"l2": 0, "l1": 1}


def test_prune_model_obs_is_prune_columns_obs_and_beats_magnitude():
    """"obs" per layer is pywino3d.prune_columns(method="obs") with refit,
    and its output error on white noise is no larger than l2's with refit
    (the greedy choice that minimises the refitted operator error)."""
    net = _winograd_net(1)
    U0 = net[0].weight_U.detach().numpy().copy()
    ref = copy.deepcopy(net)
    obs = prune_model(copy.deepcopy(net), 0.25, method="obs", scope="layer")
    l2 = prune_model(copy.deepcopy(net), 0.25, method="l2", scope="layer")
    Up, cols = pywino3d.prune_columns(U0, 0.25, kernel_size=3, tile=2, method="obs")
    np.testing.assert_array_equal(obs[0].columns(), cols)
    np.testing.assert_allclose(obs[0].weight_U.detach().numpy(), Up, rtol=1e-12, atol=1e-12)
    assert not np.array_equal(obs[0].columns(), l2[0].columns())
    x = torch.randn(8, 3, 6, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        e_obs = (obs[0](x) - ref[0](x)).norm()
        e_l2 = (l2[0](x) - ref[0](x)).norm()
    assert e_obs <= e_l2, (float(e_obs), float(e_l2))


# ------------------------------------------------------------ torch.compile (inductor)
def _inductor_works():
    if shutil.which("g++") is None and shutil.which("c++") is None and shutil.which("cc") is None:
        return False
    try:
        f = torch.compile(lambda t: (t * 2).sin())
        return bool(torch.allclose(f(torch.ones(3)), torch.full((3,), 2.0).sin()))
    except Exception:  # noqa: BLE001 -- any failure to compile means: not here
        return False


def test_compile_inductor_converted_model(monkeypatch):
    """The default backend compiles a converted model (forward and
    backward) whose pywino3d operators run inside the compiled graph and
    give the unconverted model's values and gradients."""
    torch._dynamo.reset()
    if not _inductor_works():
        pytest.skip("torch.compile's inductor backend cannot compile here (no C++ compiler)")
    monkeypatch.setenv("PYWINO3D_AUTOTUNE", "0")
    torch.manual_seed(0)
    ref = torch.nn.Sequential(torch.nn.Conv3d(3, 4, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv3d(4, 2, 3, padding=1))
    net = convert_model(copy.deepcopy(ref), tile=2)
    assert all(type(m) is Conv3d for m in (net[0], net[2]))
    calls = []
    real_fwd, real_bwd = _torch_ops.forward_arrays, _torch_ops.backward_arrays
    monkeypatch.setattr(_torch_ops, "forward_arrays", lambda *a: calls.append("f") or real_fwd(*a))
    monkeypatch.setattr(_torch_ops, "backward_arrays", lambda *a: calls.append("b") or real_bwd(*a))
    compiled = torch.compile(net)
    x1 = torch.randn(1, 3, 6, 5, 6, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    y = compiled(x1)
    y_ref = ref(x2)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    y.square().sum().backward()
    y_ref.square().sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(net[0].weight.grad, ref[0].weight.grad, rtol=1e-4, atol=1e-4)
    assert calls.count("f") >= 2 and calls.count("b") >= 1, calls
    torch._dynamo.reset()
