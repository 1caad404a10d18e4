"""Every CPU pipeline's backward pass against float64 PyTorch gradients.

``winograd_conv3d_backward`` gives (grad_x, grad_U); ``filter_transform_backward``
maps grad_U to grad_w.  Here both are compared with the gradients of
``torch.nn.functional.conv3d`` in float64, for each CPU pipeline selected
explicitly (and checked to have run): fused (at most 64 channels), blocked
(C and K above 64 and above 256 -- what every wide layer trains with), direct
and im2col (tile 1; their backward is the blocked F(1, r) one).  Column-sparse
backward passes are compared with the dense pass on U zeroed at the pruned
positions and, independently of any backward code, with the adjoint
identities <grad_x, dx> = <grad_y, y(dx)> and <grad_U, dU> = <grad_y, y(dU)>
of the forward pass, which is linear in x and in U.

Tolerances are tied to the dtype: float64 to 1e-10 relative (measured:
~1e-15), float32 to a few times the measured error (relative L2 ~1e-7 for
F(2^3) to ~1e-5 for F(6^3)), well below 0.3 % -- the
``test_scaled_gradients_fail`` case checks that a gradient 0.3 % too large
fails these checks.
"""
import contextlib

import numpy as np
import pytest

import pywino3d

torch = pytest.importorskip("torch")
F = torch.nn.functional

# The private modules used here, in one place: the CPU backend's pipeline
# switch and the pipeline modules (to check which one ran).
from pywino3d._backends.cpu import backend as cpu_backend  # noqa: E402
from pywino3d._backends.cpu.pipelines import blocked as _cpu_blocked  # noqa: E402
from pywino3d._backends.cpu.pipelines import direct as _cpu_direct
from pywino3d._backends.cpu.pipelines import fused as _cpu_fused
from pywino3d._backends.cpu.pipelines import im2col as _cpu_im2col
from pywino3d._core.geometry import make_geometry  # noqa: E402

PIPELINE_MODULES = {"fused": _cpu_fused, "blocked": _cpu_blocked, "direct": _cpu_direct, "im2col": _cpu_im2col}

#: Relative L2 tolerance per dtype (float32: by the largest tile extent, 4-8x the
#: largest error measured on these tests: 2.4e-7, 6.2e-7, 1.3e-6, 3.7e-6, 8.1e-6).
RTOL64 = 1e-10
RTOL32 = {1: 1e-6, 2: 3e-6, 3: 1e-5, 4: 2e-5, 6: 5e-5}


def rel(a, b):
    b = np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(np.asarray(a, dtype=np.float64) - b) / max(np.linalg.norm(b), 1e-300))


def rtol(dtype, tile):
    return RTOL64 if np.dtype(dtype) == np.float64 else RTOL32[max((tile,) if isinstance(tile, int) else tile)]


def torch_grads(x, w, gy, padding):
    """(grad_x, grad_w) of F.conv3d in float64."""
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    wt = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    F.conv3d(xt, wt, padding=padding).backward(torch.tensor(gy, dtype=torch.float64))
    return xt.grad.numpy(), wt.grad.numpy()


@contextlib.contextmanager
def pipeline_ran(monkeypatch, name, x, U, ksize, tile, padding, columns=None):
    """Run the block with CPU pipeline ``name`` and check that it serves the
    problem (choose_pipeline) and that its backward actually ran."""
    g = make_geometry(x.shape, U.shape[1], ksize, padding, (tile,) * 3 if isinstance(tile, int) else tile)
    kept = np.arange(U.shape[0], dtype=np.int32) if columns is None else np.asarray(columns, np.int32)
    ran = []
    mod = PIPELINE_MODULES[name]
    owner = cpu_backend.backward_pipeline(mod)  # direct and im2col: the blocked pipeline (their BACKWARD)
    real = owner.backward

    def spy(*args, **kw):
        ran.append(name)
        return real(*args, **kw)

    monkeypatch.setattr(owner, "backward", spy)
    with cpu_backend.use_pipeline(name):
        assert cpu_backend.choose_pipeline(g, kept, x.dtype) is mod
        yield
    assert ran, f"the {name} pipeline's backward did not run"


def problem(rng, N, C, K, spatial, ksize, dtype):
    x = rng.standard_normal((N, C, *spatial))
    w = rng.standard_normal((K, C, *ksize))
    return x.astype(dtype), w.astype(dtype)


def check_dense(monkeypatch, rng, name, N, C, K, spatial, ksize, tile, padding, dtype, scale=1.0):
    x, w = problem(rng, N, C, K, spatial, ksize, dtype)
    U = pywino3d.filter_transform(w, tile)
    y = pywino3d.winograd_conv3d(x, U, kernel_size=ksize, tile=tile, padding=padding)
    gy = rng.standard_normal(y.shape).astype(dtype)
    with pipeline_ran(monkeypatch, name, x, U, ksize, tile, padding):
        gx, gU = pywino3d.winograd_conv3d_backward(gy, x, U, kernel_size=ksize, tile=tile, padding=padding)
    gw = pywino3d.filter_transform_backward(gU, ksize, tile)
    assert gx.dtype == gw.dtype == dtype and gx.shape == x.shape and gw.shape == w.shape
    rgx, rgw = torch_grads(x, w, gy, padding)
    tol = rtol(dtype, tile)
    ex, ew = rel(scale * gx, rgx), rel(scale * gw, rgw)
    assert ex <= tol and ew <= tol, (ex, ew, tol)
    return ex, ew


# ------------------------------------------------------------ dense, each pipeline
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("C, K, spatial, ksize, tile", [
    (3, 5, (5, 6, 7), (3, 3, 3), 2),
    (7, 9, (6, 5, 6), (3, 3, 3), 4),
    (5, 3, (7, 7, 7), (3, 3, 3), 6),
    (16, 24, (4, 5, 6), (1, 3, 3), (1, 4, 4)),
    (33, 64, (4, 4, 5), (2, 3, 5), (3, 2, 2)),
])
def test_fused_backward(monkeypatch, rng, dtype, C, K, spatial, ksize, tile):
    check_dense(monkeypatch, rng, "fused", 2, C, K, spatial, ksize, tile, 1, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("C, K, tile", [
    (96, 96, 2), (130, 72, 2), (72, 130, 4), (300, 64, 2), (64, 300, 2), (260, 270, 2), (65, 7, 3),
])
def test_blocked_backward_wide(monkeypatch, rng, dtype, C, K, tile):
    """The blocked pipeline at C and K above 64 and 256 (tiny volumes)."""
    check_dense(monkeypatch, rng, "blocked", 1, C, K, (3, 4, 3), (3, 3, 3), tile, 1, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blocked_backward_many_blocks(monkeypatch, rng, dtype):
    """A workspace budget small enough that the tiles run in several blocks
    (the last one partial): every block's contribution must arrive."""
    monkeypatch.setenv("PYWINO3D_WORKSPACE_MB", "1")
    g = make_geometry((2, 70, 9, 8, 7), 66, (3, 3, 3), 1, (2, 2, 2))
    tb = _cpu_blocked.backward_layout(g, g.npos, np.dtype(dtype))
    assert 1 < tb < g.ntiles and g.ntiles % tb, (tb, g.ntiles)
    check_dense(monkeypatch, rng, "blocked", 2, 70, 66, (9, 8, 7), (3, 3, 3), 2, 1, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blocked_backward_small_channels(monkeypatch, rng, dtype):
    """Forced onto problems the fused pipeline would take (odd channels)."""
    check_dense(monkeypatch, rng, "blocked", 2, 5, 3, (6, 7, 5), (3, 3, 3), 4, 1, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_direct_backward(monkeypatch, rng, dtype):
    check_dense(monkeypatch, rng, "direct", 2, 2, 6, (5, 6, 7), (3, 3, 3), 1, 1, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_im2col_backward(monkeypatch, rng, dtype):
    check_dense(monkeypatch, rng, "im2col", 1, 130, 70, (3, 4, 3), (3, 3, 3), 1, 1, dtype)


@pytest.mark.parametrize("name", ["fused", "blocked"])
def test_scaled_gradients_fail(monkeypatch, rng, name):
    """The float32 tolerances above are tight enough to see a gradient 0.3 %
    too large (the issue's measured escape), at the largest float32 tile."""
    C, K = (8, 8) if name == "fused" else (96, 72)
    with pytest.raises(AssertionError):
        check_dense(monkeypatch, rng, name, 1, C, K, (5, 5, 5), (3, 3, 3), 6, 1, np.float32, scale=1.003)


# ------------------------------------------------------------ column-sparse
def adjoint_checks(rng, x, U, gy, gx, gU, ksize, tile, padding, cols):
    """<gx, dx> = <gy, y(dx)> and <gU, dU> = <gy, y(dU)> for random dx, dU
    (dU zero at the pruned positions: grad_U is defined on kept ones)."""
    kw = dict(kernel_size=ksize, tile=tile, padding=padding, columns=cols)
    tol = 1e-11 if x.dtype == np.float64 else 1e-4
    for _ in range(3):
        dx = rng.standard_normal(x.shape).astype(x.dtype)
        lhs = float(np.vdot(gx.astype(np.float64), dx))
        rhs = float(np.vdot(gy.astype(np.float64), pywino3d.winograd_conv3d(dx, U, **kw)))
        scale = float(np.abs(gx).astype(np.float64).ravel() @ np.abs(dx).astype(np.float64).ravel())
        assert abs(lhs - rhs) <= tol * scale, (lhs, rhs)
        dU = np.zeros_like(U)
        dU[cols] = rng.standard_normal((len(cols), *U.shape[1:]))
        lhs = float(np.vdot(gU.astype(np.float64), dU))
        rhs = float(np.vdot(gy.astype(np.float64), pywino3d.winograd_conv3d(x, dU, **kw)))
        scale = float(np.abs(gU).astype(np.float64).ravel() @ np.abs(dU).astype(np.float64).ravel())
        assert abs(lhs - rhs) <= tol * scale, (lhs, rhs)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, C, K, spatial, ksize, tile", [
    ("fused", 5, 7, (5, 6, 7), (3, 3, 3), 4),
    ("fused", 3, 4, (4, 6, 5), (1, 3, 3), (1, 4, 2)),
    ("blocked", 96, 80, (3, 4, 3), (3, 3, 3), 2),
    ("blocked", 270, 65, (3, 3, 4), (3, 3, 3), 2),
    ("blocked", 6, 5, (6, 5, 7), (3, 1, 3), (4, 2, 3)),
])
def test_sparse_backward(monkeypatch, rng, dtype, name, C, K, spatial, ksize, tile):
    """Pruned positions: grad_x equals the dense pass on U zeroed there,
    grad_U is zero there and equals the dense grad_U elsewhere, and both
    satisfy the forward pass's adjoint identities."""
    x, w = problem(rng, 2 if name == "fused" else 1, C, K, spatial, ksize, dtype)
    U = pywino3d.filter_transform(w, tile)
    P = U.shape[0]
    cols = np.sort(rng.choice(P, max(1, P // 3), replace=False))
    pruned = np.setdiff1d(np.arange(P), cols)
    Um = U.copy()
    Um[pruned] = 0
    y = pywino3d.winograd_conv3d(x, U, kernel_size=ksize, tile=tile, padding=1, columns=cols)
    gy = rng.standard_normal(y.shape).astype(dtype)
    with pipeline_ran(monkeypatch, name, x, U, ksize, tile, 1, cols):
        gx, gU = pywino3d.winograd_conv3d_backward(gy, x, U, kernel_size=ksize, tile=tile, padding=1,
                                                   columns=cols)
    with cpu_backend.use_pipeline(name):
        dgx, dgU = pywino3d.winograd_conv3d_backward(gy, x, Um, kernel_size=ksize, tile=tile, padding=1)
    assert not gU[pruned].any()
    tol = rtol(dtype, tile)
    assert rel(gx, dgx) <= tol
    assert rel(gU[cols], dgU[cols]) <= tol
    adjoint_checks(rng, x, U, gy, gx, gU, ksize, tile, 1, cols)
