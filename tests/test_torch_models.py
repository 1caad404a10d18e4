"""convert_model on whole networks: MONAI's BasicUNet and UNet, C3D, and the
locally defined R3D-like and R(2+1)D-like networks (nothing downloaded)."""
import copy
import importlib.util
import io
import pathlib
import warnings

import pytest

torch = pytest.importorskip("torch")

from pywino3d.torch import algorithm as _torch_plan  # noqa: E402
from pywino3d.torch import Conv3d, conversion_summary, convert_model  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "nets3d", pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "nets3d.py")
nets3d = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nets3d)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    _torch_plan.clear()
    yield
    torch.set_num_threads(threads)


def rel_l2(a, b):
    return float((a - b).norm() / b.norm())


def small_nets():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "basicunet": (nets3d.monai_basicunet(features=(4, 4, 8, 8, 16, 4)), (1, 1, 32, 32, 32)),
            "unet": (nets3d.monai_unet(channels=(4, 8, 16), num_res_units=1), (1, 1, 16, 16, 16)),
            "c3d": (nets3d.c3d(num_classes=5, width=4, fc=16, clip=(16, 32, 32)), (1, 3, 16, 32, 32)),
            "r3d": (nets3d.r3d(num_classes=5, width=4), (1, 3, 8, 32, 32)),
            "r2plus1d": (nets3d.r2plus1d(num_classes=5, width=4), (1, 3, 8, 32, 32)),
        }


@pytest.mark.parametrize("name", ["basicunet", "unet", "c3d", "r3d", "r2plus1d"])
def test_converted_network_matches(name, monkeypatch):
    """Every eligible layer on pywino3d (cost-model tiles, no timing): eval
    outputs within float32 Winograd error, training gradients close, the
    state_dict unchanged and loadable both ways."""
    monkeypatch.setenv("PYWINO3D_AUTOTUNE", "0")
    torch.manual_seed(0)
    model, shape = small_nets()[name]
    x = torch.randn(*shape)
    model.eval()
    ref_state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        ref = model(x)
    n_conv = sum(type(m) is torch.nn.Conv3d for m in model.modules())
    convert_model(model, example_inputs=x)
    assert sum(type(m) is Conv3d for m in model.modules()) == n_conv
    assert list(model.state_dict()) == list(ref_state)
    with torch.no_grad():
        y = model(x)
    assert rel_l2(y, ref) <= 1e-4
    summary = conversion_summary(model)
    assert any("winograd" in r[3] or "direct" in r[3] for r in summary), str(summary)
    # a checkpoint of the converted model loads into a fresh unconverted one
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    fresh, _ = small_nets()[name]
    fresh.load_state_dict(torch.load(io.BytesIO(buf.getvalue())))
    fresh.eval()
    with torch.no_grad():
        assert rel_l2(fresh(x), ref) <= 1e-6


def test_training_step_matches_unconverted(monkeypatch):
    """A training step of a converted R(2+1)D-like network (train mode,
    BatchNorm batch statistics) gives the gradients of the unconverted one.

    In float64 the two agree to rounding (measured: 6e-13 relative L2 at
    most), so any error in a layer's forward or backward pass shows.  In
    float32 both are compared with the float64 gradients: the converted
    network's error (measured: 4.5e-4 at most, BatchNorm over a batch of 2
    amplifying the float32 Winograd error) must stay below 1e-3, and every
    layer's pywino3d choice ran."""
    monkeypatch.setenv("PYWINO3D_AUTOTUNE", "0")
    torch.manual_seed(1)
    a, shape = small_nets()["r2plus1d"]
    x = torch.randn(2, *shape[1:])
    target = torch.randint(0, 5, (2,))

    def step(model, x):
        model.zero_grad()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        torch.nn.functional.cross_entropy(model(x), target).backward()
        grads = {k: p.grad.clone() for k, p in model.named_parameters()}
        opt.step()
        return grads

    a64 = copy.deepcopy(a).double()
    b64 = copy.deepcopy(a64)
    b = copy.deepcopy(a)
    for m in (b, b64):
        convert_model(m)
        assert sum(type(c) is Conv3d for c in m.modules()) == 37
    ref = step(a64, x.double())
    got64 = step(b64, x.double())
    got32 = step(b, x)
    for m in (b, b64):  # the 27 stride-1 layers ran on pywino3d (the 10 strided ones on torch)
        choices = [r[3] for r in conversion_summary(m)]
        assert sum(c.startswith(("winograd", "direct")) for c in choices) == 27, choices
    for k in ref:
        assert rel_l2(got64[k], ref[k]) < 1e-10, k
        assert rel_l2(got32[k].double(), ref[k]) < 1e-3, k
    # the step itself: the parameters moved alike
    pa, pb = dict(a64.named_parameters()), dict(b64.named_parameters())
    for k in pa:
        assert rel_l2(pb[k].detach(), pa[k].detach()) < 1e-12, k


def test_tuned_conversion_records_measured_choices(monkeypatch, tmp_path):
    """With tuning on, every eligible layer's choice is measured against
    torch, and the summary reports both times."""
    monkeypatch.setenv("PYWINO3D_AUTOTUNE", "1")
    monkeypatch.setenv("PYWINO3D_CACHE_DIR", str(tmp_path))
    from pywino3d import autotune

    autotune.clear()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv3d(2, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv3d(8, 8, (1, 3, 3), padding=(0, 1, 1)),
                                torch.nn.Conv3d(8, 4, 3, stride=2)).eval()
    x = torch.randn(1, 2, 8, 10, 10)
    with torch.no_grad():
        ref = model(x)
    convert_model(model, example_inputs=x)
    summary = conversion_summary(model)
    assert len(summary) == 3
    for row in summary[:2]:
        assert row[2] == "eval" and row[5] is not None and row[4] is not None  # both measured
        assert row[4] <= row[5] * (1 + 1e-9)  # the choice is the faster one
    assert summary[2][3] == "torch (stride)"
    with torch.no_grad():
        assert rel_l2(model(x), ref) <= 1e-4
    # the decisions are in the autotune cache: a second conversion measures nothing
    _torch_plan.clear()
    m2 = convert_model(torch.nn.Sequential(torch.nn.Conv3d(2, 8, 3, padding=1)).eval(), example_inputs=x)
    (plan,) = m2[0].plans.values()
    assert plan.source == "cached"
    assert "torch ms" in str(summary)


def test_convert_winograd_domain_layers():
    from pywino3d.torch import LowRankWinogradConv3d, WinogradConv3d

    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3, padding=1), torch.nn.Conv3d(4, 4, 3, stride=2))
    x = torch.randn(1, 2, 7, 7, 7)
    ref = m(x)
    convert_model(m, weights="lowrank", rank=27, tile=2)
    assert isinstance(m[0], LowRankWinogradConv3d) and type(m[1]) is torch.nn.Conv3d
    torch.testing.assert_close(m(x), ref, rtol=1e-4, atol=1e-5)
    m2 = convert_model(torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3)), weights="winograd")
    assert isinstance(m2[0], WinogradConv3d) and m2[0].tile == (2, 2, 2)


def test_optimizer_built_before_converting_still_trains():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3, padding=1))
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    w = m[0].weight
    convert_model(m)
    assert m[0].weight is w
    m(torch.randn(1, 2, 5, 5, 5)).sum().backward()
    before = w.detach().clone()
    opt.step()
    assert not torch.equal(before, w.detach())
