"""Transform-aware column selection (structure="lines") and the kernels'
results for structured and free column sets: the fewest lines, exact counts,
the same errors, results equal to the dense run with zeroed U and
bit-identical across thread counts."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pywino3d
from pywino3d._backends.cpu.backend import use_pipeline


@settings(deadline=None, max_examples=80)
@given(shape=st.sampled_from([(4, 4, 4), (6, 6, 6), (4, 5, 6), (1, 4, 4), (8, 8, 8)]),
       density=st.floats(0.01, 1.0), seed=st.integers(0, 2**32 - 1))
def test_lines_keeps_exactly_k_in_the_fewest_lines(shape, density, seed):
    ad, ah, aw = shape
    P = ad * ah * aw
    s = np.random.default_rng(seed).random(P)
    cols = pywino3d.select_columns(s, density, structure="lines", shape=shape)
    k = max(1, math.ceil(density * P - 1e-9))
    assert cols.dtype == np.int64 and cols.size == k
    assert np.all(np.diff(cols) > 0) and cols.min() >= 0 and cols.max() < P
    rem = cols % (ah * aw)
    assert np.unique(rem % aw).size == -(-k // (ad * ah))  # the fewest w' that hold k
    assert np.unique(rem).size == -(-k // ad)  # the fewest (h', w') lines that hold k
    free = pywino3d.select_columns(s, density)
    assert free.size == k
    # never more lines than the free choice, never a higher total score
    assert np.unique(rem).size <= np.unique(free % (ah * aw)).size
    assert s[cols].sum() <= s[free].sum() + 1e-12


def test_lines_picks_the_best_lines():
    s = np.zeros((4, 4, 4))
    s[:, :, 2] = 1.0  # w' = 2 scores highest
    s[:, 3, 2] = 5.0  # and in it the line h' = 3
    s[1, 0, 1] = 9.0  # one strong position elsewhere loses to the lines rule
    cols = pywino3d.select_columns(s.ravel(), 4 / 64, structure="lines")
    assert cols.tolist() == [d * 16 + 3 * 4 + 2 for d in range(4)]
    assert 1 * 16 + 0 * 4 + 1 in pywino3d.select_columns(s.ravel(), 4 / 64)  # free takes it


def test_free_is_the_default_and_unchanged():
    s = np.random.default_rng(3).random(216)
    for d in (0.9, 0.5, 0.1):
        want = np.sort(np.argsort(-s, kind="stable")[:math.ceil(d * 216)])
        assert np.array_equal(pywino3d.select_columns(s, d), want)
        assert np.array_equal(pywino3d.select_columns(s, d, structure="free"), want)


@pytest.mark.parametrize("kwargs, match", [
    ({"structure": "axes"}, "structure"),
    ({"structure": None}, "structure"),
    ({"structure": "lines", "shape": (4, 4)}, "shape"),
    ({"structure": "lines", "shape": (4, 4, 5)}, "shape"),
])
def test_bad_structure_or_shape(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pywino3d.select_columns(np.ones(64), 0.5, **kwargs)


def test_lines_needs_a_cube_or_a_shape():
    with pytest.raises(ValueError, match="not a cube"):
        pywino3d.select_columns(np.ones(80), 0.5, structure="lines")
    assert pywino3d.select_columns(np.ones(80), 0.5, structure="lines", shape=(4, 4, 5)).size == 40


def test_prune_columns_lines():
    rng = np.random.default_rng(0)
    U = pywino3d.filter_transform(rng.standard_normal((4, 3, 3, 3, 3)), 4)
    Up, cols = pywino3d.prune_columns(U, 0.25, kernel_size=3, tile=4, structure="lines", refit=False)
    scores = pywino3d.column_importance(U, "output", kernel_size=3, tile=4)
    assert np.array_equal(cols, pywino3d.select_columns(scores, 0.25, structure="lines"))
    assert np.all(np.delete(Up, cols, axis=0) == 0) and np.array_equal(Up[cols], U[cols])
    c = pywino3d.column_cost(cols, 3, 4)
    assert (c.lines_w, c.lines_hw) == (2, 9)
    Ur, cr = pywino3d.prune_columns(U, 0.25, kernel_size=3, tile=4, structure="lines")  # with refit
    assert np.array_equal(cr, cols) and np.all(np.delete(Ur, cr, axis=0) == 0)
    with pytest.raises(ValueError, match="obs"):
        pywino3d.prune_columns(U, 0.25, kernel_size=3, tile=4, structure="lines", method="obs")
    with pytest.raises(ValueError, match="structure"):
        pywino3d.prune_columns(U, 0.25, kernel_size=3, tile=4, structure="slabs")


@settings(deadline=None, max_examples=25)
@given(tile=st.sampled_from([2, 3, 4, (2, 4, 3)]), density=st.floats(0.02, 0.99),
       structure=st.sampled_from(["free", "lines"]), pipeline=st.sampled_from(["fused", "blocked"]),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**32 - 1))
def test_sparse_results_match_dense_and_thread_counts(tile, density, structure, pipeline, dtype, seed):
    """Every column set (structured or free) gives the dense result with U
    zeroed at the pruned positions (to rounding: the sparse plan runs the
    run-time code), forward and backward, bit-identical on 1 and 2 threads."""
    rng = np.random.default_rng(seed)
    C, K = 5, 6
    x = rng.standard_normal((1, C, 7, 6, 9)).astype(dtype)
    U = pywino3d.filter_transform(rng.standard_normal((K, C, 3, 3, 3)).astype(dtype), tile)
    t3 = (tile,) * 3 if isinstance(tile, int) else tile
    shape = tuple(m + 2 for m in t3)
    cols = pywino3d.select_columns(rng.random(U.shape[0]), density, structure=structure, shape=shape)
    Uz = np.zeros_like(U)
    Uz[cols] = U[cols]
    gy = None
    outs = []
    with use_pipeline(pipeline):
        for workers in (1, 2):
            y = pywino3d.winograd_conv3d(x, U, kernel_size=3, tile=tile, padding=1, columns=cols, workers=workers)
            gy = rng.standard_normal(y.shape).astype(dtype) if gy is None else gy
            gx, gU = pywino3d.winograd_conv3d_backward(gy, x, U, kernel_size=3, tile=tile, padding=1,
                                                        columns=cols, workers=workers)
            outs.append((y, gx, gU))
        yd = pywino3d.winograd_conv3d(x, Uz, kernel_size=3, tile=tile, padding=1, workers=1)
        gxd, gUd = pywino3d.winograd_conv3d_backward(gy, x, Uz, kernel_size=3, tile=tile, padding=1, workers=1)
    for a, b in zip(outs[0], outs[1]):
        assert np.array_equal(a, b)
    tol = 1e-4 if dtype == np.float32 else 1e-11
    y, gx, gU = outs[0]
    for got, want in ((y, yd), (gx, gxd), (gU[cols], gUd[cols])):
        assert np.linalg.norm(got - want) <= tol * (np.linalg.norm(want) + 1e-30), structure


@pytest.mark.parametrize("with_inputs", [False, True])
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_prune_model_lines(with_inputs, scope):
    torch = pytest.importorskip("torch")
    from pywino3d.torch import convert_model, prune_model

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(3, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv3d(8, 8, 3, padding=1))
    net = convert_model(net, weights="winograd", tile=4)
    x = torch.randn(2, 3, 8, 8, 8)
    kw = {"example_inputs": x} if with_inputs else {}
    prune_model(net, 0.25, scope=scope, structure="lines", **kw)
    for layer in (net[0], net[2]):
        cols = np.flatnonzero(layer.columns_mask.numpy())
        k = cols.size
        c = pywino3d.column_cost(cols, 3, 4)
        assert (c.lines_w, c.lines_hw) == (-(-k // 36), -(-k // 6))
    assert net(x).shape == (2, 8, 8, 8, 8)
    with pytest.raises(ValueError, match="obs"):
        prune_model(net, 0.5, method="obs", structure="lines")
    with pytest.raises(ValueError, match="structure"):
        prune_model(net, 0.5, structure="axes")
