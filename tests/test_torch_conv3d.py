"""pywino3d.torch.Conv3d and conv3d: parity with nn.Conv3d / F.conv3d,
gradients, the U cache, torch.compile and torch.export, checkpoints."""
import copy
import io
import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from pywino3d.torch import algorithm as _torch_plan  # noqa: E402
from pywino3d.torch import Conv3d, conv3d  # noqa: E402


@pytest.fixture(autouse=True)
def _cost_model(monkeypatch):
    """Parity tests run on the cost model's tile (no timing), one thread
    (tiny problems; the layers follow torch.get_num_threads())."""
    monkeypatch.setenv("PYWINO3D_AUTOTUNE", "0")
    _torch_plan.clear()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pair(*args, dtype=torch.float64, seed=0, **kw):
    """An nn.Conv3d and a Conv3d with the same weights."""
    tile = kw.pop("tile", "auto")
    torch.manual_seed(seed)
    ref = torch.nn.Conv3d(*args, dtype=dtype, **kw)
    torch.manual_seed(seed)
    ours = Conv3d(*args, dtype=dtype, tile=tile, **kw)
    assert torch.equal(ref.weight, ours.weight)  # same initialisation
    return ref, ours


def check_parity(ref, ours, x, rtol=1e-9, atol=1e-10):
    """Forward and every gradient (input, weight, bias) agree."""
    x1 = x.clone().requires_grad_()
    x2 = x.clone().requires_grad_()
    y1, y2 = ref(x1), ours(x2)
    assert y1.shape == y2.shape
    torch.testing.assert_close(y2, y1, rtol=rtol, atol=atol)
    gy = torch.randn_like(y1)
    (y1 * gy).sum().backward()
    (y2 * gy).sum().backward()
    torch.testing.assert_close(x2.grad, x1.grad, rtol=rtol, atol=atol)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=rtol, atol=atol)
    if ref.bias is not None:
        torch.testing.assert_close(ours.bias.grad, ref.bias.grad, rtol=rtol, atol=atol)


KERNELS = [3, (1, 3, 3), (3, 1, 1), 5, 1]
PADDINGS = [0, 1, (1, 2, 0), "same", "valid"]


@pytest.mark.parametrize("kernel,padding", list(itertools.product(KERNELS, PADDINGS)))
def test_parity_kernels_paddings_modes(kernel, padding):
    x = torch.randn(2, 3, 6, 7, 5, dtype=torch.float64)
    for mode in ("zeros", "reflect", "replicate", "circular"):
        ref, ours = pair(3, 4, kernel, padding=padding, padding_mode=mode, bias=mode != "circular")
        check_parity(ref, ours, x)
        assert next(iter(ours.plans.values())).algo == "pywino3d"


@pytest.mark.parametrize("stride,dilation,groups,padding", [
    (2, 1, 1, 1), ((1, 2, 1), 1, 1, 0), (1, 2, 1, 2), (1, (1, 2, 1), 1, "same"), (1, 1, 2, 1),
    (1, 1, 4, "same"), (2, 2, 2, (1, 0, 2)),
])
def test_parity_fallback_stride_dilation_groups(stride, dilation, groups, padding):
    x = torch.randn(2, 4, 7, 8, 6, dtype=torch.float64)
    ref, ours = pair(4, 4, 3, stride=stride, dilation=dilation, groups=groups, padding=padding)
    check_parity(ref, ours, x)
    (key, plan), = ours.plans.items()
    assert plan.algo == "torch" and key[0] == "ineligible"


@pytest.mark.parametrize("tile", [1, 2, 4, (1, 2, 3)])
def test_given_tile_float32(tile):
    ref, ours = pair(4, 6, 3, padding=1, dtype=torch.float32, tile=tile)
    x = torch.randn(2, 4, 9, 8, 7)
    with torch.no_grad():
        y, yr = ours(x), ref(x)
    assert (y - yr).norm() / yr.norm() < 1e-5
    (plan,) = ours.plans.values()
    assert plan.source == "fixed" and plan.tile == ((tile,) * 3 if isinstance(tile, int) else tile)


def test_unbatched_and_channels_last_input():
    ref, ours = pair(3, 4, 3, padding=1)
    x = torch.randn(3, 5, 6, 4, dtype=torch.float64)
    torch.testing.assert_close(ours(x), ref(x))
    xc = torch.randn(2, 3, 5, 6, 4, dtype=torch.float64).contiguous(memory_format=torch.channels_last_3d)
    check_parity(ref, ours, xc)
    # the kernels read channels_last input in place (no copy on the way in)
    from pywino3d.torch.ops import to_array

    assert np.shares_memory(to_array(xc), xc.numpy())
    # non-contiguous views and expanded (stride 0) inputs
    xs = torch.randn(2, 3, 10, 6, 8, dtype=torch.float64)[:, :, ::2, :, 1:5]
    check_parity(ref, ours, xs)
    xe = torch.randn(1, 3, 5, 6, 4, dtype=torch.float64).expand(2, 3, 5, 6, 4)
    torch.testing.assert_close(ours(xe), ref(xe))


@pytest.mark.parametrize("need", list(itertools.product([False, True], repeat=3)))
def test_requires_grad_combinations(need):
    ref, ours = pair(2, 3, 3, padding=1)
    for m in (ref, ours):
        m.weight.requires_grad_(need[1])
        m.bias.requires_grad_(need[2])
    x = torch.randn(1, 2, 4, 5, 4, dtype=torch.float64)
    xs = [x.clone().requires_grad_(need[0]) for _ in range(2)]
    ys = [ref(xs[0]), ours(xs[1])]
    torch.testing.assert_close(ys[1], ys[0])
    assert ys[0].requires_grad == ys[1].requires_grad == any(need)
    if any(need):
        for y in ys:
            y.sum().backward()
        for a, b in ((xs[1], xs[0]), (ours.weight, ref.weight), (ours.bias, ref.bias)):
            assert (a.grad is None) == (b.grad is None)
            if a.grad is not None:
                torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.parametrize("kernel,padding,tile", [(3, 1, 2), ((1, 3, 3), "same", (1, 2, 2)), ((2, 3, 1), "same", 3)])
def test_gradcheck_functional(kernel, padding, tile):
    torch.manual_seed(0)
    k = (kernel,) * 3 if isinstance(kernel, int) else kernel
    x = torch.randn(2, 2, 4, 5, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, *k, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    f = lambda x, w, b: conv3d(x, w, b, padding=padding, tile=tile)  # noqa: E731
    torch.testing.assert_close(f(x, w, b), F.conv3d(x, w, b, padding=padding))
    assert torch.autograd.gradcheck(f, (x, w, b), fast_mode=True)
    # the full Jacobian on a smaller problem
    xs, ws = x[:1, :, :3].detach().requires_grad_(), w[:2].detach().requires_grad_()
    assert torch.autograd.gradcheck(f, (xs, ws, b[:2].detach().requires_grad_()))


@pytest.mark.parametrize("kw", [dict(stride=2, padding=1), dict(dilation=2, padding="same"), dict(groups=2),
                                dict(padding=(0, 1, 2)), dict(padding="valid")])
def test_functional_matches_F(kw):
    torch.manual_seed(1)
    x = torch.randn(2, 4, 6, 7, 8, dtype=torch.float64)
    w = torch.randn(6, 4 // kw.get("groups", 1), 3, 3, 3, dtype=torch.float64)
    b = torch.randn(6, dtype=torch.float64)
    torch.testing.assert_close(conv3d(x, w, b, **kw), F.conv3d(x, w, b, **kw))
    torch.testing.assert_close(conv3d(x[0], w, None, **kw), F.conv3d(x[0], w, None, **kw))


def test_custom_ops_opcheck():
    from pywino3d.torch.ops import filter_transform_op, winograd_conv3d_op

    x = torch.randn(2, 3, 5, 4, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    U = filter_transform_op(w, [2, 2, 2]).detach().requires_grad_()
    # schema, fake (meta) implementation and autograd registration; the
    # compile/export tests below cover tracing
    utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    torch.library.opcheck(filter_transform_op, (w, [2, 2, 2]), test_utils=utils)
    torch.library.opcheck(winograd_conv3d_op, (x, U, b, [2, 3, 3], [2, 2, 2], [0, 1, 1, 1, 1, 1], None),
                          test_utils=utils)


# ------------------------------------------------------------ no grad: nothing saved, U cached
def count_saved(fn):
    n = [0]

    def pack(t):
        n[0] += 1
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return n[0]


def test_no_grad_and_inference_mode_save_nothing():
    _, ours = pair(2, 3, 3, padding=1, dtype=torch.float32, tile=2)
    x = torch.randn(1, 2, 5, 5, 5, requires_grad=True)
    for ctx in (torch.no_grad, torch.inference_mode):
        def run():
            with ctx():
                y = ours(x)
            assert not y.requires_grad
        assert count_saved(run) == 0
    assert count_saved(lambda: conv3d(x, ours.weight, ours.bias, padding=1, tile=2)) > 0


def test_cache_reused_while_weight_unchanged():
    ref, ours = pair(2, 3, 3, padding=1, tile=2)
    x = torch.randn(1, 2, 5, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        ours(x)
        U = ours._u_cache[1]
        ours(x)
        assert ours._u_cache[1] is U  # same tensor: no filter transform
    with torch.inference_mode():
        ours(x)
    assert ours._u_cache[1] is U
    # a cached U made inside inference_mode is a normal tensor: a later
    # forward with gradients (frozen weight, input needing grad) may save it
    ours.clear_cache()
    with torch.inference_mode():
        ours(x)
    ours.weight.requires_grad_(False)
    ref.weight.requires_grad_(False)
    check_parity_input_only(ref, ours, x)


def check_parity_input_only(ref, ours, x):
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    ref(x1).sum().backward()
    ours(x2).sum().backward()
    torch.testing.assert_close(x2.grad, x1.grad)


def _eval(ours, ref, x):
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x))


def test_choice_memo_follows_what_it_depends_on(monkeypatch):
    """A layer memoizes its algorithm per kind of input; changing anything the
    choice depends on (attributes, grad mode, the decisions) remakes it."""
    monkeypatch.setenv("PYWINO3D_AUTOTUNE", "0")
    ref, ours = pair(2, 3, 3, padding=1, tile=2)
    x = torch.randn(1, 2, 6, 6, 6, dtype=torch.float64)
    _eval(ours, ref, x)
    _eval(ours, ref, x)
    assert len(ours._memo) == 1
    ours.tile = (4, 4, 4)
    _eval(ours, ref, x)
    assert len(ours._memo) == 2 and [p.tile for p in ours.plans.values()] == [(4, 4, 4)]
    for m in (ref, ours):
        m.padding = (0, 1, 0)
    _eval(ours, ref, x)
    for m in (ref, ours):
        m.stride = (2, 1, 2)
    _eval(ours, ref, x)
    for m in (ref, ours):
        m.stride, m.padding_mode = (1, 1, 1), "circular"
        m._reversed_padding_repeated_twice = [0, 0, 1, 1, 0, 0]
    _eval(ours, ref, x)
    _eval(ours, ref, x[0])  # unbatched
    check_parity(ref, ours, x)
    n = len(ours._memo)
    _torch_plan.clear()
    _eval(ours, ref, x)
    assert len(ours._memo) == n + 1


def test_no_stale_cache():
    ref, ours = pair(2, 3, 3, padding=1, tile=2)
    x = torch.randn(1, 2, 5, 5, 5, dtype=torch.float64)
    _eval(ours, ref, x)
    # in-place update (what optimizers do)
    for m in (ref, ours):
        with torch.no_grad():
            m.weight.mul_(-2).add_(0.5)
    _eval(ours, ref, x)
    # an optimizer step
    for m in (ref, ours):
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        m(x).square().sum().backward()
        opt.step()
    _eval(ours, ref, x)
    # load_state_dict
    other = torch.nn.Conv3d(2, 3, 3, padding=1, dtype=torch.float64)
    ref.load_state_dict(other.state_dict())
    ours.load_state_dict(other.state_dict())
    _eval(ours, ref, x)
    # .to(dtype) both ways
    ref.float(), ours.float()
    with torch.no_grad():
        torch.testing.assert_close(ours(x.float()), ref(x.float()), rtol=1e-5, atol=1e-5)
    ref.double(), ours.double()
    _eval(ours, ref, x)
    # requires_grad_ changes: gradients reach the weight again
    ours.weight.requires_grad_(False)
    ref.weight.requires_grad_(False)
    _eval(ours, ref, x)
    ours.weight.requires_grad_(True)
    ref.weight.requires_grad_(True)
    check_parity(ref, ours, x)
    # replacing the parameter
    ours.weight = torch.nn.Parameter(ref.weight.detach().clone() * 3)
    ref.weight = torch.nn.Parameter(ref.weight.detach().clone() * 3)
    _eval(ours, ref, x)
    # .data bypasses the version counter (documented): clear_cache() helps
    ours.weight.data.mul_(2)
    ref.weight.data.mul_(2)
    ours.clear_cache()
    _eval(ours, ref, x)


def test_meta_device_like_nn_conv3d():
    ref, ours = pair(2, 3, 3, padding=1, dtype=torch.float32)
    ref.to("meta"), ours.to("meta")
    x = torch.empty(1, 2, 5, 5, 5, device="meta")
    assert ours(x).shape == ref(x).shape and ours(x).device.type == "meta"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_falls_back_to_torch(dtype):
    ref, ours = pair(2, 3, 3, padding=1, dtype=torch.float32)
    ref.to(dtype), ours.to(dtype)
    x = torch.randn(1, 2, 5, 5, 5, dtype=dtype)
    try:
        expect = ref(x)
    except RuntimeError:  # no half kernel for this op on this build: same error from ours
        with pytest.raises(RuntimeError):
            ours(x)
        return
    assert torch.equal(ours(x), expect)
    assert next(iter(ours.plans.values())).source == f"dtype {str(dtype)[6:]}"


def test_autocast_falls_back_to_torch():
    ref, ours = pair(2, 3, 3, padding=1, dtype=torch.float32)
    x = torch.randn(1, 2, 5, 5, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y1, y2 = ref(x), ours(x)
        y3 = conv3d(x, ours.weight, ours.bias, padding=1)
    assert y1.dtype == y2.dtype == y3.dtype and torch.equal(y1, y2) and torch.equal(y1, y3)
    assert next(iter(ours.plans.values())).source == "autocast"


def test_zero_size_batch():
    ref, ours = pair(2, 3, 3, padding=1)
    x = torch.randn(0, 2, 5, 5, 5, dtype=torch.float64, requires_grad=True)
    y = ours(x)
    assert y.shape == ref(x).shape == (0, 3, 5, 5, 5)
    y.sum().backward()
    assert x.grad.shape == x.shape


# ------------------------------------------------------------ state_dict, pickling
def test_state_dict_identical_and_loads_both_ways():
    ref, ours = pair(3, 4, (1, 3, 3), padding=(0, 1, 1), dtype=torch.float32)
    assert list(ref.state_dict()) == list(ours.state_dict()) == ["weight", "bias"]
    x = torch.randn(1, 3, 4, 5, 6)
    buf = io.BytesIO()
    torch.save(ours.state_dict(), buf)
    fresh = torch.nn.Conv3d(3, 4, (1, 3, 3), padding=(0, 1, 1))
    fresh.load_state_dict(torch.load(io.BytesIO(buf.getvalue())))
    buf = io.BytesIO()
    torch.save(ref.state_dict(), buf)
    fresh2 = Conv3d(3, 4, (1, 3, 3), padding=(0, 1, 1))
    fresh2.load_state_dict(torch.load(io.BytesIO(buf.getvalue())))
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), ours(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fresh2(x), ref(x), rtol=1e-5, atol=1e-5)


def test_save_load_and_deepcopy_whole_module():
    _, ours = pair(2, 3, 3, padding=1, dtype=torch.float32, tile=2)
    x = torch.randn(1, 2, 5, 5, 5)
    with torch.no_grad():
        y = ours(x)
    assert ours._u_cache is not None
    buf = io.BytesIO()
    torch.save(ours, buf)
    loaded = torch.load(io.BytesIO(buf.getvalue()), weights_only=False)
    cp = copy.deepcopy(ours)
    for m in (loaded, cp):
        assert m._u_cache is None and m.tile == (2, 2, 2)
        with torch.no_grad():
            torch.testing.assert_close(m(x), y)
        with torch.no_grad():
            m.weight.zero_()
            # the copy's cached U must follow its weight: the output is now its bias, exactly
            assert m.bias is not None and m.bias.abs().min() > 0
            torch.testing.assert_close(m(x), m.bias.view(1, -1, 1, 1, 1).expand_as(y), rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), y)  # the original is untouched


# ------------------------------------------------------------ compile and export
def test_compile_fullgraph_parity():
    torch._dynamo.reset()
    ref, ours = pair(3, 4, 3, padding=1, dtype=torch.float32)
    x = torch.randn(2, 3, 6, 5, 7)
    compiled = torch.compile(ours, fullgraph=True, backend="eager")
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = ref(x1), compiled(x2)
    torch.testing.assert_close(y2, y1, rtol=1e-4, atol=1e-5)
    y1.square().sum().backward()
    y2.square().sum().backward()
    torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-3)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), ref(x), rtol=1e-4, atol=1e-5)
    f = torch.compile(lambda x, w: conv3d(x, w, padding="same"), fullgraph=True, backend="eager")
    torch.testing.assert_close(f(x, ref.weight), F.conv3d(x, ref.weight, padding="same"), rtol=1e-4, atol=1e-5)


def test_export():
    ref, ours = pair(3, 4, 3, padding=1, dtype=torch.float32, padding_mode="replicate")
    x = torch.randn(1, 3, 6, 5, 7)
    ep = torch.export.export(ours, (x,))
    assert "pywino3d.winograd_conv3d" in str(ep.graph)
    torch.testing.assert_close(ep.module()(x), ref(x), rtol=1e-4, atol=1e-5)
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    ep2 = torch.export.load(io.BytesIO(buf.getvalue()))
    torch.testing.assert_close(ep2.module()(x), ref(x), rtol=1e-4, atol=1e-5)
