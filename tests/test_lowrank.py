"""Low-rank Winograd weights and column pruning."""
import numpy as np
import pytest

import pywino3d
from pywino3d import LowRankWinograd, column_importance, select_columns, select_columns_global
from pywino3d.pruning import cubic_density, magnitude_mask

from conftest import BACKENDS, host, on


@pytest.mark.parametrize("ks,tile", [((3, 3, 3), 2), ((3, 3, 3), 4), ((1, 3, 3), (1, 4, 4)), ((3, 1, 1), 2),
                                     ((2, 2, 2), 3)])
def test_svd_init_exact_at_full_rank(rng, ks, tile):
    w = rng.standard_normal((6, 5, *ks))
    U = pywino3d.filter_transform(w, tile)
    r3 = int(np.prod(ks))
    assert np.linalg.matrix_rank(U.reshape(U.shape[0], -1)) <= r3
    lr = LowRankWinograd.from_filter(w, r3, tile)
    assert lr.rank == r3 and lr.mode == "factor"
    np.testing.assert_allclose(lr.weights(), U, atol=1e-10 * np.abs(U).max())
    errs = [np.linalg.norm(LowRankWinograd.from_filter(w, k, tile).weights() - U) for k in (1, max(2, r3 // 2), r3)]
    assert errs[0] > errs[1] > errs[2] * 1e3


def test_rank_validation_and_counts(rng):
    w = rng.standard_normal((4, 3, 3, 3, 3))
    with pytest.raises(ValueError, match="^rank: expected an int <= 12"):
        LowRankWinograd.from_filter(w, 13, 2)
    with pytest.raises(ValueError, match="^mode:"):
        LowRankWinograd.from_filter(w, 4, 2, mode="lora")
    lr = LowRankWinograd.from_filter(w, 4, 2)
    assert lr.num_params == 64 * 4 + 4 * 12 and lr.num_dense_params == 64 * 12
    with pytest.raises(ValueError, match="^P:"):
        LowRankWinograd(lr.P[:10], lr.Q, kernel_size=3, tile=2)
    with pytest.raises(ValueError, match="^Q:"):
        LowRankWinograd(lr.P, lr.Q[:2], kernel_size=3, tile=2)


def test_residual_mode_starts_at_U0(rng):
    w = rng.standard_normal((4, 3, 3, 3, 3))
    lr = LowRankWinograd.from_filter(w, 5, 2, mode="residual")
    assert lr.mode == "residual" and not lr.Q.any() and lr.P.any()
    np.testing.assert_array_equal(lr.weights(), pywino3d.filter_transform(w, 2))


def test_random_init_is_variance_preserving():
    lr = LowRankWinograd.random(32, 16, 3, 2, rank=27, seed=1)
    rng = np.random.default_rng(1)
    w = rng.standard_normal((32, 16, 3, 3, 3)) * np.sqrt(2 / (16 * 27))
    ref = np.linalg.norm(pywino3d.filter_transform(w, 2))
    assert 0.8 < np.linalg.norm(lr.weights()) / ref < 1.25
    lo = LowRankWinograd.random(32, 16, 3, 2, rank=4, seed=1)
    assert 0.8 < np.linalg.norm(lo.weights()) / ref < 1.25  # rescaled after truncation


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["factor", "residual"])
def test_factor_gradients_finite_differences(rng, backend, mode):
    w = rng.standard_normal((4, 3, 3, 3, 3))
    lr = LowRankWinograd.from_filter(w, 6, 2, mode=mode)
    lr.Q = lr.Q + rng.standard_normal(lr.Q.shape)  # make the residual factors non-trivial
    lr = LowRankWinograd(on(backend, lr.P), on(backend, lr.Q), kernel_size=3, tile=2,
                         U0=on(backend, lr.U0))
    G = rng.standard_normal(lr.shape)
    gP, gQ = map(host, lr.backward(on(backend, G)))
    dP, dQ = rng.standard_normal(gP.shape), rng.standard_normal(gQ.shape)
    h = 1e-4

    def L(P, Q):
        return float(np.vdot(G, host(LowRankWinograd(on(backend, P), on(backend, Q), kernel_size=3, tile=2,
                                                     U0=lr.U0).weights())))

    P0, Q0 = host(lr.P), host(lr.Q)
    fdP = (L(P0 + h * dP, Q0) - L(P0 - h * dP, Q0)) / (2 * h)
    fdQ = (L(P0, Q0 + h * dQ) - L(P0, Q0 - h * dQ)) / (2 * h)
    np.testing.assert_allclose(fdP, np.vdot(gP, dP), rtol=1e-6)
    np.testing.assert_allclose(fdQ, np.vdot(gQ, dQ), rtol=1e-6)


def test_column_importance(rng):
    w = rng.standard_normal((5, 4, 3, 3, 3))
    lr = LowRankWinograd.from_filter(w, 8, 2)
    U = lr.weights()
    flat = U.reshape(64, -1)
    np.testing.assert_allclose(column_importance(lr, "l2"), np.linalg.norm(flat, axis=1), rtol=1e-5)
    np.testing.assert_allclose(column_importance(U, "l2"), np.linalg.norm(flat, axis=1), rtol=1e-12)
    np.testing.assert_allclose(column_importance(lr, "l1"), np.abs(flat).sum(1), rtol=1e-12)
    G = rng.standard_normal(U.shape)
    np.testing.assert_allclose(column_importance(U, "taylor", grad=G), np.abs((flat * G.reshape(64, -1)).sum(1)))
    with pytest.raises(ValueError, match="^grad:"):
        column_importance(U, "taylor")
    with pytest.raises(ValueError, match="^method:"):
        column_importance(U, "l3")


@pytest.mark.parametrize("bad", [0, -0.5, 1.5, "half", True, None, float("nan")])
def test_density_validation(bad):
    with pytest.raises(ValueError, match="^density: expected a number in \\(0, 1\\]"):
        select_columns(np.ones(8), bad)


def test_select_columns():
    s = np.array([0.1, 5.0, 3.0, 0.2, 3.0])
    np.testing.assert_array_equal(select_columns(s, 0.4), [1, 2])  # tie keeps the lower index
    np.testing.assert_array_equal(select_columns(s, 1.0), np.arange(5))
    assert select_columns(s, 0.01).size == 1
    with pytest.raises(ValueError, match="^scores:"):
        select_columns(np.ones((2, 2)), 0.5)


def test_select_columns_global():
    a = np.array([1.0, 2.0, 3.0, 4.0])
    b = 100 * np.array([4.0, 3.0, 2.0, 1.0])  # same shape on another scale
    ka, kb = select_columns_global([a, b], 0.5)
    assert ka.size + kb.size == 4 and set(ka) == {2, 3} and set(kb) == {0, 1}
    lo = select_columns_global([np.array([1.0, 1.0]), np.array([1e-9, 1.0])], 0.25)
    assert all(k.size >= 1 for k in lo)


def test_cubic_schedule_and_magnitude_mask(rng):
    d = [cubic_density(t, final_density=0.25, begin_step=10, end_step=20) for t in range(0, 30)]
    assert d[0] == d[10] == 1.0 and d[25] == 0.25 and all(x >= y for x, y in zip(d, d[1:]))
    assert cubic_density(15, final_density=0.25, begin_step=10, end_step=20, frequency=4) == \
        cubic_density(14, final_density=0.25, begin_step=10, end_step=20)
    U = rng.standard_normal((64, 4, 4))
    m = magnitude_mask(U, 0.3)
    assert abs(m.mean() - 0.3) < 0.01 and np.abs(U[m]).min() >= np.abs(U[~m]).max()
