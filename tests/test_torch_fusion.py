"""The "pywino3d" torch.compile backend: normalizations, activations and
residual adds fused into the convolutions (pywino3d.torch.fusion)."""
import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from hypothesis import given, settings, strategies as st  # noqa: E402

from pywino3d.torch import convert_model, fusion, optimize  # noqa: E402

torch.set_num_threads(2)


def rel(a, b):
    return float((a - b).detach().norm() / b.detach().norm())


def compiled(model, x, tile=2):
    """model converted with a fixed tile (every eligible layer runs pywino3d)
    and compiled with the backend; (compiled, the report of its first graph)."""
    torch._dynamo.reset()
    convert_model(model, tile=tile)
    fusion.reports.clear()
    n0 = 0
    f = torch.compile(model, backend="pywino3d")
    with torch.no_grad():
        f(x)
    return f, fusion.reports[n0] if len(fusion.reports) > n0 else None


class Act(nn.Module):
    def __init__(self, kind, channels):
        super().__init__()
        self.kind = kind
        if kind == "prelu":
            self.prelu = nn.PReLU(channels)
            with torch.no_grad():
                self.prelu.weight.uniform_(0.05, 0.5)

    def forward(self, t):
        if self.kind == "relu":
            return F.relu(t)
        if self.kind == "leaky_relu":
            return F.leaky_relu(t, 0.1)
        if self.kind == "prelu":
            return self.prelu(t)
        if self.kind == "elu":
            return F.elu(t, 0.7)
        if self.kind == "silu":
            return F.silu(t)
        if self.kind == "sigmoid":
            return torch.sigmoid(t)
        if self.kind == "tanh":
            return torch.tanh(t)
        return t


def make_norm(kind, c, affine):
    if kind == "instance":
        return nn.InstanceNorm3d(c, affine=affine)
    if kind == "group":
        return nn.GroupNorm(2 if c % 2 == 0 else 1, c, affine=affine)
    if kind == "group1":
        return nn.GroupNorm(1, c, affine=affine)
    bn = nn.BatchNorm3d(c, affine=affine)
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    return bn


class Block(nn.Module):
    """conv -> norm -> act (-> + residual) -> conv -> norm -> act -> pool."""

    def __init__(self, c, norm, act, affine, residual):
        super().__init__()
        self.conv1 = nn.Conv3d(c, c, 3, padding=1)
        self.n1 = make_norm(norm, c, affine)
        self.a1 = Act(act, c)
        self.conv2 = nn.Conv3d(c, c, 3, padding=1)
        self.n2 = make_norm(norm, c, affine)
        self.a2 = Act(act, c)
        self.residual = residual
        if affine:
            for n in (self.n1, self.n2):
                with torch.no_grad():
                    n.weight.uniform_(0.5, 1.5)
                    n.bias.uniform_(-0.3, 0.3)

    def forward(self, x):
        t = self.a1(self.n1(self.conv1(x)))
        u = self.conv2(t)
        if self.residual:
            u = u + x
        u = self.a2(self.n2(u))
        return F.max_pool3d(u, 2) if u.shape[-1] % 2 == 0 else u


@settings(max_examples=6, deadline=None)
@given(norm=st.sampled_from(["instance", "group", "group1", "batch"]),
       act=st.sampled_from(["identity", "relu", "leaky_relu", "prelu", "elu", "silu", "sigmoid", "tanh"]),
       affine=st.booleans(), residual=st.booleans(), c=st.sampled_from([2, 4, 6]),
       size=st.sampled_from([(6, 6, 6), (5, 7, 6), (8, 4, 5)]), tile=st.sampled_from([2, 3, 4]),
       seed=st.integers(0, 2**16))
def test_fused_matches_unfused(norm, act, affine, residual, c, size, tile, seed):
    torch.manual_seed(seed)
    model = Block(c, norm, act, affine, residual).eval()
    x = torch.randn(2, c, *size)
    with torch.no_grad():
        ref = model(x)
    f, report = compiled(copy.deepcopy(model), x, tile)
    with torch.no_grad():
        y = f(x)
    assert report is not None and report.convolutions == 2
    if norm == "batch":  # (a BatchNorm after the residual add stays torch's: scale/shift precede the residual)
        assert report.batchnorm_epilogues == (1 if residual else 2)
    else:
        assert report.stats_epilogues >= 1 and report.prologues == 1
    assert rel(y, ref) < 1e-4


def test_changed_parameters_give_new_result():
    torch.manual_seed(0)
    model = Block(4, "instance", "leaky_relu", True, True).eval()
    x = torch.randn(1, 4, 8, 8, 8)
    f, report = compiled(model, x)
    assert report.prologues == 1
    with torch.no_grad():
        model.n1.weight.mul_(2.0)  # in place
        model.conv2.weight.add_(0.1)  # the cached filter transform must follow
        sd = copy.deepcopy(model.state_dict())
        sd["n2.bias"] += 0.5
        model.load_state_dict(sd)
        y = f(x)
        fusion_off = copy.deepcopy(model)
    ref_model = Block(4, "instance", "leaky_relu", True, True).eval()
    ref_model.load_state_dict(fusion_off.state_dict())
    with torch.no_grad():
        assert rel(y, ref_model(x)) < 1e-4


def test_second_shape_channels_last_and_inference_mode():
    torch.manual_seed(1)
    model = Block(4, "group", "relu", True, False).eval()
    ref_model = copy.deepcopy(model)
    x = torch.randn(1, 4, 8, 8, 8)
    f, _ = compiled(model, x)
    for xi in (torch.randn(2, 4, 6, 10, 8), x.to(memory_format=torch.channels_last_3d)):
        with torch.no_grad():
            assert rel(f(xi), ref_model(xi)) < 1e-4
    with torch.inference_mode():
        assert rel(f(x), ref_model(x)) < 1e-4


def test_training_runs_unfused_with_exact_gradients():
    torch.manual_seed(2)
    model = Block(4, "instance", "leaky_relu", True, True).train()
    ref_model = copy.deepcopy(model)
    x = torch.randn(1, 4, 6, 6, 6)
    torch._dynamo.reset()
    convert_model(model, tile=2)
    fusion.reports.clear()
    n0 = 0
    f = torch.compile(model, backend="pywino3d")
    with torch.no_grad():  # an inference call first: its fused graph must not serve the training call
        model.eval()
        f(x)
        model.train()
    n0 = len(fusion.reports)
    assert n0 == 1
    y = f(x)
    assert len(fusion.reports) == n0  # nothing rewritten with gradients enabled
    y.square().sum().backward()
    ref_model(x).square().sum().backward()
    scale = max(float(q.grad.abs().max()) for q in ref_model.parameters())
    for (name, p), q in zip(model.named_parameters(), ref_model.parameters()):
        # (conv1's bias gradient is zero in exact arithmetic: InstanceNorm follows)
        assert torch.allclose(p.grad, q.grad, rtol=1e-3, atol=1e-5 * scale), name


class Branchy(nn.Module):
    """Data-dependent Python control flow (a graph break) around fusable
    chains."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.InstanceNorm3d(4), nn.ReLU())
        self.b = nn.Sequential(nn.Conv3d(4, 4, 3, padding=1), nn.InstanceNorm3d(4), nn.LeakyReLU(0.2))

    def forward(self, x):
        t = self.a(x)
        if float(t.mean()) > 0.3:
            t = t * 2
        return self.b(t)


def test_data_dependent_control_flow():
    torch.manual_seed(3)
    model = Branchy().eval()
    ref_model = copy.deepcopy(model)
    x = torch.randn(1, 2, 8, 8, 8)
    f, _ = compiled(model, x)
    with torch.no_grad():
        for xi in (x, x + 3.0):
            assert rel(f(xi), ref_model(xi)) < 1e-4


def test_switch_off(monkeypatch):
    monkeypatch.setenv("PYWINO3D_FUSION", "0")
    model = Block(2, "instance", "relu", False, False).eval()
    x = torch.randn(1, 2, 6, 6, 6)
    torch._dynamo.reset()
    fusion.reports.clear()
    n0 = 0
    f = torch.compile(convert_model(copy.deepcopy(model), tile=2), backend="pywino3d")
    with torch.no_grad():
        assert rel(f(x), model(x)) < 1e-4
    assert len(fusion.reports) == n0


def test_monai_networks_fused():
    monai = pytest.importorskip("monai")
    nets = [monai.networks.nets.BasicUNet(spatial_dims=3, in_channels=1, out_channels=2, features=(4, 4, 8, 8, 16, 4)),
            monai.networks.nets.UNet(3, 1, 2, (4, 8, 16), (2, 2), num_res_units=2),
            monai.networks.nets.SegResNet(3, init_filters=8, in_channels=1, out_channels=2, blocks_down=(1, 2),
                                          blocks_up=(1,))]
    x = torch.randn(1, 1, 32, 32, 32)  # BasicUNet halves four times
    for net in nets:
        torch.manual_seed(0)
        net = net.eval()
        with torch.no_grad():
            ref = net(x)
        torch._dynamo.reset()
        fusion.reports.clear()
        # a fixed tile: every eligible layer runs pywino3d (with "auto" torch wins some at 32^3)
        f = optimize(convert_model(copy.deepcopy(net), tile=2), x, convert=False)
        with torch.no_grad():
            y = f(x)
        assert rel(y, ref) < 1e-4, type(net).__name__
        assert sum(r.stats_epilogues for r in fusion.reports) >= 3, type(net).__name__
        assert sum(r.prologues for r in fusion.reports) >= 1, type(net).__name__


def test_norm_affine_groups_match_torch():
    torch.manual_seed(4)
    t = torch.randn(2, 6, 5, 4, 3, dtype=torch.float64)
    mean, var = fusion._moments(t)
    for groups in (None, 1, 2, 3):
        w, b = torch.rand(6) + 0.5, torch.randn(6)
        scale, shift = fusion._norm_affine(mean, var, w, b, 1e-5, groups, 6)
        got = t * scale[:, :, None, None, None] + shift[:, :, None, None, None]
        ref = F.instance_norm(t, weight=w.double(), bias=b.double()) if groups is None else \
            F.group_norm(t, groups, w.double(), b.double())
        assert rel(got, ref) < 1e-5


class UpCat(nn.Module):
    """MONAI-UpCat-like: a transposed convolution with kernel == stride,
    concatenated with a skip tensor, then a convolution."""

    def __init__(self, first):
        super().__init__()
        self.first = first
        self.up = nn.ConvTranspose3d(6, 3, 2, stride=2)
        self.other = nn.ConvTranspose3d(6, 3, 3, stride=2, padding=1, output_padding=1)  # not kernel == stride
        self.conv = nn.Conv3d(5, 2, 3, padding=1)

    def forward(self, x, skip):
        u = self.up(x)
        t = torch.cat([u, skip] if self.first else [skip, u], dim=1)
        return self.conv(t) + self.other(x)[:, :2]


@pytest.mark.parametrize("first", [True, False])
def test_upsampling_and_concatenation(first):
    torch.manual_seed(5)
    model = UpCat(first).eval()
    x, skip = torch.randn(2, 6, 3, 4, 5), torch.randn(2, 2, 6, 8, 10)
    with torch.no_grad():
        ref = model(x, skip)
    torch._dynamo.reset()
    fusion.reports.clear()
    f = torch.compile(convert_model(copy.deepcopy(model), tile=2), backend="pywino3d")
    with torch.no_grad():
        y = f(x, skip)
    assert fusion.reports[0].upsamplings == 1 and fusion.reports[0].concatenations == 1
    assert rel(y, ref) < 1e-5
    assert rel(fusion._upsample(x, model.up.weight, None), F.conv_transpose3d(x, model.up.weight, stride=2)) < 1e-6


class BroadcastAdd(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 3, padding=1)
        self.offset = nn.Parameter(torch.randn(1, 4, 1, 1, 1))

    def forward(self, x):
        return F.relu(self.conv(x) + self.offset)


def test_broadcast_add_is_not_a_residual():
    torch.manual_seed(6)
    model = BroadcastAdd().eval()
    x = torch.randn(1, 3, 6, 6, 6)
    with torch.no_grad():
        ref = model(x)
    f, report = compiled(copy.deepcopy(model), x)
    with torch.no_grad():
        assert rel(f(x), ref) < 1e-5
    assert report.residual_epilogues == 0


def test_optimize_keeps_the_faster_of_fused_and_unfused(monkeypatch):
    torch.manual_seed(7)
    model = Block(2, "instance", "relu", False, False).eval()
    x = torch.randn(1, 2, 6, 6, 6)
    torch._dynamo.reset()
    for fused_faster in (True, False):
        monkeypatch.setattr(fusion, "_alternating_ms", lambda fns, args, rounds: [1.0, 2.0][::1 if fused_faster else -1])
        m = copy.deepcopy(model)
        out = optimize(m, x)
        assert fusion.decisions[-1]["fused"] is fused_faster
        assert (out is m) is not fused_faster
        with torch.no_grad():
            assert rel(out(x), model(x)) < 1e-4
