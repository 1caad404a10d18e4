"""Transform-aware column pruning: importance, least-squares refit, prune_model."""
import copy
import doctest
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pywino3d
from pywino3d import LowRankWinograd, column_importance, prune_columns, refit_columns
from pywino3d.pruning import operator_error, tile_operator_gram

KERNELS = [(3, 3, 3), (1, 3, 3), (3, 1, 1), (5, 5, 5)]


def npos_of(ks, tile):
    return math.prod(m + r - 1 for m, r in zip(tile, ks))


def explicit_operator_error(D, ks, tile):
    """sqrt(sum over channel pairs of ||A3^T diag(D) B3^T||_F^2), with the 3-D
    matrices built explicitly as Kronecker products (independent of the Gram
    matrix route of operator_error)."""
    AT3, BT3 = np.ones((1, 1)), np.ones((1, 1))
    for m, r in zip(tile, ks):
        AT, _, BT = pywino3d.winograd_matrices(m, r)
        AT3, BT3 = np.kron(AT3, AT), np.kron(BT3, BT)
    flat = D.reshape(D.shape[0], -1)
    return math.sqrt(sum(np.linalg.norm(AT3 @ (flat[:, j][:, None] * BT3)) ** 2 for j in range(flat.shape[1])))


def plain(U, keep):
    out = np.zeros_like(U)
    out[keep] = U[keep]
    return out


def relative_output_error(x, U, Up, cols, tile):
    y = pywino3d.winograd_conv3d(x, U, kernel_size=3, tile=tile, padding=1)
    yp = pywino3d.winograd_conv3d(x, Up, kernel_size=3, tile=tile, padding=1, columns=cols)
    return np.linalg.norm(yp - y) / np.linalg.norm(y)


# ------------------------------------------------------------ the maths
@pytest.mark.parametrize("ks,tile", [((3, 3, 3), (2, 2, 2)), ((1, 3, 3), (1, 4, 4)), ((3, 1, 1), (2, 3, 1)),
                                     ((2, 2, 2), (3, 3, 3))])
def test_operator_error_matches_explicit_operators(rng, ks, tile):
    D = rng.standard_normal((npos_of(ks, tile), 2, 3))
    want = explicit_operator_error(D, ks, tile)
    assert operator_error(D, 0 * D, kernel_size=ks, tile=tile) == pytest.approx(want, rel=1e-10)


def test_operator_error_of_a_filter_is_the_correlation_norm(rng):
    """The unpruned operator of U = G w is the correlation by w: each of the
    m^3 outputs of a tile sees all r^3 taps once, so ||M||_F^2 = m^3 ||w||^2."""
    w = rng.standard_normal((3, 2, 3, 3, 3))
    for m in (1, 2, 4):
        U = pywino3d.filter_transform(w, m)
        assert operator_error(0 * U, U, kernel_size=3, tile=m) ** 2 == pytest.approx(m ** 3 * np.sum(w ** 2),
                                                                                   rel=1e-9)


def test_output_importance_is_the_error_of_removing_one_position(rng):
    U = pywino3d.filter_transform(rng.standard_normal((3, 2, 3, 3, 3)), 4)
    s = column_importance(U, "output", kernel_size=3, tile=4)
    for p in (0, 7, 100, 215):
        Up = U.copy()
        Up[p] = 0
        assert s[p] == pytest.approx(operator_error(Up, U, kernel_size=3, tile=4), rel=1e-9)
    lr = LowRankWinograd.from_filter(rng.standard_normal((3, 2, 3, 3, 3)), 5, 4)
    np.testing.assert_allclose(column_importance(lr, "output"),
                               column_importance(lr.weights(), "output", kernel_size=3, tile=4), rtol=1e-8)


def test_gram_is_positive_definite_kronecker():
    K = tile_operator_gram((3, 1, 3), (2, 4, 2))
    assert K.shape == (64, 64)
    np.testing.assert_allclose(K, K.T)
    assert np.linalg.eigvalsh(K).min() > 0


# ------------------------------------------------------------ refit
@pytest.mark.parametrize("ks,tile", [((3, 3, 3), 2), ((3, 3, 3), 4), ((1, 3, 3), (1, 4, 4)), ((5, 5, 5), 2)])
def test_refit_exact_when_nothing_is_pruned(rng, ks, tile):
    w = rng.standard_normal((3, 2, *ks))
    U = pywino3d.filter_transform(w, tile)
    Up, cols = prune_columns(U, 1.0, kernel_size=ks, tile=tile)
    assert cols.size == U.shape[0]
    np.testing.assert_allclose(Up, U, rtol=0, atol=1e-12 * np.abs(U).max())
    np.testing.assert_allclose(refit_columns(U, np.arange(U.shape[0]), kernel_size=ks, tile=tile), U,
                               rtol=0, atol=1e-12 * np.abs(U).max())


def test_refit_solves_the_normal_equations(rng):
    """U' is the least-squares optimum: the residual operator is orthogonal to
    every kept position's operator, Kg[S] (U' - U) = 0."""
    U = pywino3d.filter_transform(rng.standard_normal((4, 3, 3, 3, 3)), 4)
    keep = np.sort(rng.permutation(216)[:100])
    Up = refit_columns(U, keep, kernel_size=3, tile=4)
    assert np.all(np.delete(Up, keep, axis=0) == 0)
    K = tile_operator_gram(3, 4)
    res = K[keep] @ (Up - U).reshape(216, -1)
    scale = np.abs(K[keep]).max() * np.abs(U).max()
    assert np.abs(res).max() < 1e-9 * scale


# ------------------------------------------------------------ calibration (data-aware) criteria
def smooth_inputs(rng, shape):
    """Positive, spatially correlated activations (like a ReLU network's), not white noise."""
    from scipy.ndimage import uniform_filter

    x = np.maximum(rng.standard_normal(shape), 0)
    return uniform_filter(x, size=(1, 1, 3, 3, 3)) + 0.2


@pytest.mark.parametrize("ks,tile,C", [((3, 3, 3), (2, 2, 2), 3), ((1, 3, 3), (1, 2, 4), 2),
                                       ((3, 1, 1), (2, 1, 1), 4), ((3, 3, 3), (2, 2, 2), 40)])
def test_calibrated_error_is_the_kernels_output_error(rng, ks, tile, C):
    """operator_error(..., inputs=x) is the RMS per-tile output error of the
    kernels on x (every tile full: the output extents are multiples of the
    tile).  C=40 takes the channel-diagonal moments (positions * C > FULL_LIMIT),
    which drop the cross-channel terms: exact when only one input channel changes."""
    from pywino3d._core import calibration as _calibration

    x = smooth_inputs(rng, (2, C, 4, 4, 4))
    w = rng.standard_normal((3, C, *ks))
    U = pywino3d.filter_transform(w, tile)
    D = rng.standard_normal(U.shape)
    if U.shape[0] * C > _calibration.FULL_LIMIT:
        D[:, :, 1:] = 0
    pad = tuple(r // 2 for r in ks)
    y0 = pywino3d.winograd_conv3d(x, U, kernel_size=ks, tile=tile, padding=pad)
    y1 = pywino3d.winograd_conv3d(x, U + D, kernel_size=ks, tile=tile, padding=pad)
    ntiles = 2 * math.prod(4 // m for m in tile)
    want = np.linalg.norm(y1 - y0) / math.sqrt(ntiles)
    got = operator_error(U + D, U, kernel_size=ks, tile=tile, inputs=x, padding=pad)
    assert got == pytest.approx(want, rel=1e-9)
    mom = _calibration.input_moments(x, kernel_size=ks, tile=tile, padding=pad)
    assert mom.full == (U.shape[0] * C <= _calibration.FULL_LIMIT)
    # the data-aware score of p is the error of removing p alone
    s = column_importance(U, "output", kernel_size=ks, tile=tile, inputs=x, padding=pad)
    for p in (0, U.shape[0] // 2, U.shape[0] - 1):
        Up = U.copy()
        Up[p] = 0
        if mom.full:
            assert s[p] == pytest.approx(operator_error(Up, U, kernel_size=ks, tile=tile, inputs=x, padding=pad),
                                         rel=1e-9)


@settings(max_examples=12)
@given(ks=st.sampled_from(KERNELS[:3]), tile=st.tuples(*[st.integers(1, 3)] * 3), C=st.sampled_from([1, 3, 40]),
       seed=st.integers(0, 2 ** 16))
def test_calibrated_refit_exact_and_never_worse(ks, tile, C, seed):
    """Exact with nothing pruned; never a larger calibrated error than zeroing
    the same columns; for the full and the channel-diagonal moments."""
    rng = np.random.default_rng(seed)
    x = smooth_inputs(rng, (1, C, 4, 5, 3))
    U = pywino3d.filter_transform(rng.standard_normal((2, C, *ks)), tile)
    npos = U.shape[0]
    kw = dict(kernel_size=ks, tile=tile, inputs=x, padding="same")
    np.testing.assert_allclose(refit_columns(U, np.arange(npos), **kw), U, rtol=0, atol=1e-12 * np.abs(U).max())
    keep = np.sort(rng.permutation(npos)[: rng.integers(1, npos + 1)])
    fit = refit_columns(U, keep, **kw)
    assert np.all(np.delete(fit, keep, axis=0) == 0)
    e_fit = operator_error(fit, U, **kw)
    e_plain = operator_error(plain(U, keep), U, **kw)
    assert e_fit <= e_plain * (1 + 1e-9) + 1e-12


def test_calibrated_pruning_beats_white_noise_on_smooth_inputs(rng):
    """On smooth positive activations the calibrated score + refit has a much
    smaller output error (held-out inputs) than magnitude or white-noise pruning."""
    x = smooth_inputs(rng, (6, 4, 8, 8, 8))
    calib, test = x[:3], x[3:]
    w = rng.standard_normal((5, 4, 3, 3, 3))
    for tile in (2, 4):
        U = pywino3d.filter_transform(w, tile)
        errs = {}
        for name, kw in (("l2", dict(method="l2", refit=False)), ("white", dict(method="output", refit=True)),
                         ("data", dict(method="output", refit=True, inputs=calib, padding=1))):
            Up, cols = prune_columns(U, 0.5, kernel_size=3, tile=tile, **kw)
            errs[name] = relative_output_error(test, U, Up, cols, tile)
        assert errs["data"] < 0.5 * min(errs["l2"], errs["white"]), errs


def test_reference_inputs_compensate_an_earlier_error(rng):
    """Fitting on perturbed inputs to the unpruned layer on the clean inputs
    undoes part of the perturbation; the plain data refit cannot."""
    x = smooth_inputs(rng, (2, 3, 6, 6, 6))
    xp = x * (1 + 0.2 * rng.standard_normal(x.shape[:2])[:, :, None, None, None])  # an earlier layer's error
    U = pywino3d.filter_transform(rng.standard_normal((4, 3, 3, 3, 3)), 2)
    keep = np.arange(U.shape[0])
    target = pywino3d.winograd_conv3d(x, U, kernel_size=3, tile=2, padding=1)
    fit_ref = refit_columns(U, keep, kernel_size=3, tile=2, inputs=xp, padding=1, reference_inputs=x)
    fit_own = refit_columns(U, keep, kernel_size=3, tile=2, inputs=xp, padding=1)
    err = lambda V: np.linalg.norm(pywino3d.winograd_conv3d(xp, V, kernel_size=3, tile=2, padding=1) - target)
    assert err(fit_ref) < 0.7 * err(fit_own)


def test_calibrated_bad_arguments(rng):
    U = pywino3d.filter_transform(rng.standard_normal((2, 3, 3, 3, 3)), 2)
    x = rng.standard_normal((1, 3, 4, 4, 4))
    kw = dict(kernel_size=3, tile=2, padding=1)
    with pytest.raises(ValueError, match="^inputs: .* does not match U"):
        prune_columns(U, 0.5, inputs=x[:, :2], **kw)
    with pytest.raises(ValueError, match="^inputs: expected shape"):
        prune_columns(U, 0.5, inputs=x[0], **kw)
    with pytest.raises(ValueError, match="^method: 'obs'"):
        prune_columns(U, 0.5, method="obs", inputs=x, **kw)
    with pytest.raises(ValueError, match="^reference_inputs: needs inputs"):
        refit_columns(U, [0, 1], reference_inputs=x, **kw)
    with pytest.raises(ValueError, match="^reference_inputs: expected the shape"):
        refit_columns(U, [0, 1], inputs=x, reference_inputs=x[:, :, :3], **kw)
    lr = LowRankWinograd.from_filter(rng.standard_normal((2, 3, 3, 3, 3)), 4, 2)
    with pytest.raises(ValueError, match="^inputs: the data-aware refit"):
        refit_columns(lr, [0, 1], inputs=x, padding=1)


# ------------------------------------------------------------ properties
@settings(max_examples=25)
@given(ks=st.sampled_from(KERNELS), tile=st.tuples(*[st.integers(1, 4)] * 3),
       density=st.floats(0.05, 1.0), method=st.sampled_from(["output", "obs", "l2", "l1"]),
       seed=st.integers(0, 2 ** 16), dtype=st.sampled_from([np.float32, np.float64]))
def test_pruning_properties(ks, tile, density, method, seed, dtype):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((2, 3, *ks)).astype(dtype)
    U = pywino3d.filter_transform(w, tile)
    U_before = U.copy()
    npos = U.shape[0]
    Up, cols = prune_columns(U, density, kernel_size=ks, tile=tile, method=method, refit=True)
    Uz, cols_plain = prune_columns(U, density, kernel_size=ks, tile=tile, method=method, refit=False)
    np.testing.assert_array_equal(U, U_before)  # input not mutated
    assert Up.dtype == U.dtype and Up.shape == U.shape
    assert cols.size == max(1, math.ceil(density * npos - 1e-9))
    assert np.all(np.diff(cols) > 0) and cols.min() >= 0 and cols.max() < npos
    np.testing.assert_array_equal(cols, cols_plain)
    pruned = np.setdiff1d(np.arange(npos), cols)
    assert np.all(Up[pruned] == 0) and np.all(Uz[pruned] == 0)
    np.testing.assert_array_equal(Uz[cols], U[cols])
    e_fit = operator_error(Up, U, kernel_size=ks, tile=tile)
    e_plain = operator_error(Uz, U, kernel_size=ks, tile=tile)
    tol = (1e-4 if dtype == np.float32 else 1e-9) * operator_error(0 * U, U, kernel_size=ks, tile=tile)
    assert e_fit <= e_plain + tol
    # the kernels see exactly these columns
    x = rng.standard_normal((1, 3, 4, 5, 3)).astype(dtype)
    np.testing.assert_allclose(
        pywino3d.winograd_conv3d(x, Up, kernel_size=ks, tile=tile, padding="same", columns=cols),
        pywino3d.winograd_conv3d(x, Up, kernel_size=ks, tile=tile, padding="same"),
        rtol=1e-4, atol=1e-4 * np.abs(Up).max() * x.size)


@settings(max_examples=15)
@given(ks=st.sampled_from(KERNELS[:3]), tile=st.tuples(*[st.integers(1, 4)] * 3), seed=st.integers(0, 2 ** 16))
def test_refit_never_worse_for_any_columns(ks, tile, seed):
    rng = np.random.default_rng(seed)
    U = pywino3d.filter_transform(rng.standard_normal((3, 2, *ks)), tile)
    npos = U.shape[0]
    keep = np.sort(rng.permutation(npos)[: rng.integers(1, npos + 1)])
    e_fit = operator_error(refit_columns(U, keep, kernel_size=ks, tile=tile), U, kernel_size=ks, tile=tile)
    e_plain = operator_error(plain(U, keep), U, kernel_size=ks, tile=tile)
    assert e_fit <= e_plain * (1 + 1e-9) + 1e-12


def test_obs_first_step_is_the_best_single_removal(rng):
    ks, tile = (3, 3, 3), (2, 2, 2)
    U = pywino3d.filter_transform(rng.standard_normal((3, 2, *ks)), tile)
    _, cols = prune_columns(U, 63 / 64, kernel_size=ks, tile=tile, method="obs")
    errs = [operator_error(refit_columns(U, np.delete(np.arange(64), p), kernel_size=ks, tile=tile), U,
                           kernel_size=ks, tile=tile) for p in range(64)]
    assert np.setdiff1d(np.arange(64), cols).tolist() == [int(np.argmin(errs))]


@pytest.mark.parametrize("mode", ["factor", "residual"])
def test_lowrank_refit_is_the_refit_of_the_composed_weights(rng, mode):
    w = rng.standard_normal((4, 3, 3, 3, 3))
    lr = LowRankWinograd.from_filter(w, 6, 4, mode=mode)
    if mode == "residual":
        lr.Q = rng.standard_normal(lr.Q.shape)
    pr, cols = prune_columns(lr, 0.5, method="output")
    assert isinstance(pr, LowRankWinograd) and pr.rank == lr.rank and pr.mode == mode
    np.testing.assert_array_equal(pr.Q, lr.Q)
    pruned = np.setdiff1d(np.arange(216), cols)
    assert np.all(pr.P[pruned] == 0) and (mode == "factor" or np.all(pr.U0[pruned] == 0))
    want = refit_columns(lr.weights(), cols, kernel_size=3, tile=4)
    np.testing.assert_allclose(pr.weights(), want, atol=1e-9 * np.abs(want).max())
    _, cols_arr = prune_columns(lr.weights(), 0.5, kernel_size=3, tile=4, method="output")
    np.testing.assert_array_equal(cols, cols_arr)
    plain_lr, _ = prune_columns(lr, 0.5, refit=False)
    np.testing.assert_allclose(plain_lr.weights(), plain(lr.weights(), cols), atol=1e-12)


# ------------------------------------------------------------ targets
def test_targets_against_random_positions():
    """One-shot prune_columns (transform-aware + refit) on random 3x3x3 weights,
    5 -> 4 channels, padding 1: output error <= 0.2x that of random positions at
    F(4^3) with 50 % and 75 % kept, <= 0.5x at F(2^3) with 75 % kept.

    F(4^3)'s factor was 0.1 with the points 0, +-1, +-2 (measured 0.040x and
    0.036x on these draws); with the searched points 0, +-2/3, +-3/2 (issue 30)
    random positions lose far less (output error 20 -> 6.4 and 15 -> 4.9) while
    ours stays near (0.80 -> 0.84 and 0.54 -> 0.68): 0.13x and 0.14x."""
    rng = np.random.default_rng(7)
    for tile, density, factor in ((4, 0.5, 0.2), (4, 0.75, 0.2), (2, 0.75, 0.5)):
        ours, rand = [], []
        for _ in range(2):
            w = rng.standard_normal((4, 5, 3, 3, 3))
            x = rng.standard_normal((1, 5, 8, 8, 8))
            U = pywino3d.filter_transform(w, tile)
            Up, cols = prune_columns(U, density, kernel_size=3, tile=tile)
            ours.append(relative_output_error(x, U, Up, cols, tile))
            for _ in range(2):
                rc = np.sort(rng.permutation(U.shape[0])[: cols.size])
                rand.append(relative_output_error(x, U, plain(U, rc), rc, tile))
        assert np.mean(ours) <= factor * np.mean(rand), (tile, density, np.mean(ours), np.mean(rand))


# ------------------------------------------------------------ errors
def test_bad_arguments_raise_clear_errors(rng):
    U = pywino3d.filter_transform(rng.standard_normal((2, 2, 3, 3, 3)), 2)
    for d in (0, 1.5, -0.1, "0.5", True, None):
        with pytest.raises(ValueError, match="^density:"):
            prune_columns(U, d, kernel_size=3, tile=2)
    with pytest.raises(ValueError, match="^kernel_size: expected an int <= 7"):
        prune_columns(U, 0.5, kernel_size=8, tile=2)
    with pytest.raises(ValueError, match=r"^kernel_size: expected an int or 3 ints"):
        prune_columns(U, 0.5, kernel_size=(3, 3), tile=2)
    with pytest.raises(ValueError, match="^tile: expected an int >= 1"):
        prune_columns(U, 0.5, kernel_size=3, tile=0)
    with pytest.raises(TypeError, match="^tile: expected an int"):
        prune_columns(U, 0.5, kernel_size=3, tile=2.5)
    with pytest.raises(ValueError, match=r"^U: expected shape \(positions=216"):
        prune_columns(U, 0.5, kernel_size=3, tile=4)
    with pytest.raises(ValueError, match="^kernel_size, tile:"):
        prune_columns(U, 0.5)
    with pytest.raises(ValueError, match="^kernel_size, tile:"):
        column_importance(U, "output")
    with pytest.raises(ValueError, match="^method:"):
        prune_columns(U, 0.5, kernel_size=3, tile=2, method="taylor")
    with pytest.raises(ValueError, match="^columns:"):
        refit_columns(U, [0, 64], kernel_size=3, tile=2)
    lr = LowRankWinograd.from_filter(rng.standard_normal((2, 2, 3, 3, 3)), 4, 2)
    with pytest.raises(ValueError, match="^kernel_size, tile:.*differ"):
        prune_columns(lr, 0.5, kernel_size=3, tile=4)
    with pytest.raises(ValueError, match="^U_new:"):
        operator_error(U[:, :1], U, kernel_size=3, tile=2)


# ------------------------------------------------------------ PyTorch
torch = pytest.importorskip("torch")


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv3d(2, 6, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv3d(6, 4, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv3d(4, 3, (1, 3, 3), padding=(0, 1, 1)))


@pytest.mark.parametrize("rank", [None, 9])
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_prune_model_matches_prune_columns(scope, rank):
    from pywino3d.torch import convert_model, prune_model

    net = convert_model(_net(), weights="winograd" if rank is None else "lowrank", tile=4, rank=rank)
    layers = [net[0], net[2], net[4]]
    before = [(l.winograd_weights().detach().double().numpy(), l) for l in layers]
    prune_model(net, 0.5, scope=scope)
    total = sum(l.positions for l in layers)
    kept = sum(int(l.columns_mask.sum()) for l in layers)
    if scope == "layer":
        assert [int(l.columns_mask.sum()) for l in layers] == [108, 108, 72]  # 1x3x3 at tile 4: 4 * 6 * 6 positions
    else:
        assert abs(kept - 0.5 * total) <= len(layers)
    for U, layer in before:
        cols = layer.columns()
        want = refit_columns(U, cols, kernel_size=layer.kernel_size, tile=layer.tile)
        got = layer.winograd_weights().detach().double().numpy()
        np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max())
        if scope == "layer":
            _, c2 = prune_columns(U, 0.5, kernel_size=layer.kernel_size, tile=layer.tile)
            np.testing.assert_array_equal(cols, c2)
    x = torch.randn(1, 2, 5, 6, 7)
    y = net(x)
    y.sum().backward()  # pruned nets still train
    assert y.shape == (1, 3, 5, 6, 7)


def test_prune_model_errors_and_refit_helps():
    from pywino3d.torch import convert_model, prune_model

    with pytest.raises(ValueError, match="^model: has no WinogradConv3d"):
        prune_model(_net(), 0.5)
    net = convert_model(_net(), weights="winograd", tile=4)
    for kw, match in ((dict(density=0), "^density:"), (dict(density=0.5, scope="all"), "^scope:"),
                      (dict(density=0.5, method="random"), "^method:")):
        with pytest.raises(ValueError, match=match):
            prune_model(net, **kw)
    x = torch.randn(2, 2, 8, 8, 8)
    ref = _net()(x).detach()
    errs = {}
    for refit in (False, True):
        pruned = prune_model(convert_model(_net(), weights="winograd", tile=4), 0.75, refit=refit, scope="layer")
        with torch.no_grad():
            errs[refit] = float((pruned(x) - ref).norm() / ref.norm())
    assert errs[True] < errs[False]


def test_prune_model_docstring_example():
    import pywino3d.torch.pruning as mod

    res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert res.attempted > 0 and res.failed == 0


def test_pruning_study_helpers_docstring_examples():
    """Statistics, report and the section writer of the experiment (the run
    itself is exercised by ``python -m pywino3d experiment --pruning --quick``)."""
    pytest.importorskip("sklearn")
    pytest.importorskip("tqdm")
    import pywino3d.experiments.pruning_study as mod

    res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert res.attempted > 0 and res.failed == 0
    words = mod.verdict("(c)", "(a)", [0.5, 0.6, 0.7], [0.1, 0.1, 0.1])
    assert words.startswith("(c) higher than (a) by 50.0 points")


def test_prune_model_with_example_inputs_is_sequential_and_better():
    from pywino3d.torch import convert_model, prune_model

    def make():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Conv3d(2, 6, 3, padding=1), torch.nn.ReLU(),
                                   torch.nn.Conv3d(6, 6, 3, padding=1), torch.nn.ReLU(),
                                   torch.nn.Conv3d(6, 3, 3, padding=1))

    x = torch.nn.functional.avg_pool3d(torch.rand(12, 2, 8, 8, 8), 3, 1, 1)
    conv = convert_model(make(), weights="winograd", tile=2).eval()
    with torch.no_grad():
        ref = conv(x[6:])
    errs = {}
    for name, kw in (("white", {}), ("data", {"example_inputs": x[:6]})):
        pruned = prune_model(copy.deepcopy(conv), 0.5, scope="layer", **kw)
        assert [int(l.columns_mask.sum()) for l in (pruned[0], pruned[2], pruned[4])] == [32, 32, 32]
        with torch.no_grad():
            errs[name] = float((pruned(x[6:]) - ref).norm() / ref.norm())
    assert errs["data"] < 0.5 * errs["white"], errs
    # global scope with data keeps the overall fraction
    g = prune_model(copy.deepcopy(conv), 0.5, scope="global", example_inputs=x[:6])
    assert abs(sum(int(l.columns_mask.sum()) for l in (g[0], g[2], g[4])) - 96) <= 3
    with pytest.raises(ValueError, match="^method: 'obs'"):
        prune_model(copy.deepcopy(conv), 0.5, method="obs", example_inputs=x[:6])
    low = convert_model(make(), weights="lowrank", tile=2, rank=4)
    with pytest.raises(ValueError, match="^example_inputs: the data-aware refit"):
        prune_model(low, 0.5, example_inputs=x[:6])
    before = {k: v.detach().clone() for k, v in low.state_dict().items()}
    prune_model(low, 0.5, refit=False, example_inputs=x[:6])  # scores from data, factors kept
    masks = [low[i].columns_mask.bool() for i in (0, 2, 4)]
    assert abs(sum(int(m.sum()) for m in masks) - 96) <= 3 and all(0 < int(m.sum()) < 64 for m in masks)
    for i, m in zip((0, 2, 4), masks):
        P = low[i].P.detach()
        assert torch.equal(low[i].Q.detach(), before[f"{i}.Q"])  # Q unchanged
        assert torch.equal(P[m], before[f"{i}.P"][m])  # kept rows of P as they were: no refit
        assert not P[~m].any()  # pruned rows zero
