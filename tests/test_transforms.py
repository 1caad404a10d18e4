"""Exactness and shape of the Toom-Cook matrices."""
from fractions import Fraction

import numpy as np
import pytest

from pywino3d import winograd_matrices
from pywino3d._core.transforms import MAX_KERNEL, MAX_TILE, interpolation_points

ALL = [(m, r) for m in range(1, MAX_TILE + 1) for r in range(1, MAX_KERNEL + 1)]


@pytest.mark.parametrize("scaling", ["lavin", "balanced"])
@pytest.mark.parametrize("m,r", ALL)
def test_exact_bilinear_identity(m, r, scaling):
    """In Fractions, sum_p AT[i,p] G[p,k] BT[p,j] == [j == i + k] for every
    (i, k, j): the 1-D algorithm equals correlation exactly for all inputs."""
    AT, G, BT = winograd_matrices(m, r, exact=True, scaling=scaling)
    alpha = m + r - 1
    assert AT.shape == (m, alpha) and G.shape == (alpha, r) and BT.shape == (alpha, alpha)
    assert all(isinstance(v, Fraction) for v in AT.ravel())
    for i in range(m):
        for k in range(r):
            coeff = [sum(AT[i, p] * G[p, k] * BT[p, j] for p in range(alpha)) for j in range(alpha)]
            want = [Fraction(int(j == i + k)) for j in range(alpha)]
            assert coeff == want, (i, k)


@pytest.mark.parametrize("m,r", [(2, 3), (4, 3), (6, 3), (3, 5), (8, 7)])
def test_exact_correlation_random(m, r):
    rng = np.random.default_rng(m * 10 + r)
    AT, G, BT = winograd_matrices(m, r, exact=True)
    d = [Fraction(int(v), int(q)) for v, q in zip(rng.integers(-50, 50, m + r - 1), rng.integers(1, 9, m + r - 1))]
    g = [Fraction(int(v)) for v in rng.integers(-50, 50, r)]
    y = AT.dot(G.dot(g) * BT.dot(d))
    assert list(y) == [sum(d[i + k] * g[k] for k in range(r)) for i in range(m)]


def test_float_matches_exact():
    for m, r in ALL:
        ex = winograd_matrices(m, r, exact=True)
        fl = winograd_matrices(m, r, dtype=np.float64)
        for a, b in zip(ex, fl):
            assert b.dtype == np.float64
            np.testing.assert_array_equal(b, a.astype(float))


def test_points_and_lavin_form():
    assert interpolation_points(7) == [0, 1, -1, 2, -2, Fraction(1, 2), Fraction(-1, 2)]
    AT, G, BT = winograd_matrices(4, 3, exact=True)
    assert all(v.denominator == 1 for v in BT.ravel())  # lavin: BT rows are integers


@pytest.mark.parametrize("bad,exc", [((0, 3), ValueError), ((9, 3), ValueError), ((2, 8), ValueError),
                                     ((2.0, 3), TypeError), ((True, 3), TypeError)])
def test_bad_sizes(bad, exc):
    with pytest.raises(exc, match="^[mr] "):
        winograd_matrices(*bad)
    with pytest.raises(ValueError, match="scaling"):
        winograd_matrices(2, 3, scaling="nope")
