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
    for m in (2, 3, 6):
        AT, G, BT = winograd_matrices(m, 3, exact=True)
        assert all(v.denominator == 1 for v in BT.ravel())  # lavin: BT rows are integers


def test_searched_points_and_unit_form():
    """alpha 6 and 7 use the searched sets; every BT row holds a +-1 entry,
    and as many AT rows as one scale per column pair +-p can give (plus the
    rows of the points 0 and infinity, whose columns are unit vectors): adds,
    not multiplies, in the generated transforms."""
    assert interpolation_points(5) == [0, Fraction(2, 3), Fraction(-2, 3), Fraction(3, 2), Fraction(-3, 2)]
    assert interpolation_points(6) == [Fraction(2, 7), Fraction(-2, 7), Fraction(6, 7), Fraction(-6, 7),
                                       Fraction(7, 4), Fraction(-7, 4)]
    for m, r in [(4, 3), (5, 3), (3, 4), (2, 5), (3, 5), (4, 4), (6, 2), (2, 6)]:
        AT, G, BT = winograd_matrices(m, r, exact=True)
        pts = interpolation_points(m + r - 2)
        reachable = len({abs(p) for p in pts if p != 0}) + (0 in pts) + 1
        assert all(any(abs(v) == 1 for v in row) for row in BT), (m, r)
        assert sum(any(abs(v) == 1 for v in row) for row in AT) == min(m, reachable), (m, r)


def test_searched_points_lower_product_error():
    """The search's score (first-order variance of the product's rounding,
    per output) is lower for the searched sets than for the default ones."""
    def score(m, pts):
        n = m + 2
        ev = lambda k: np.array([[float(p) ** j for j in range(k)] for p in pts] + [[0.0] * (k - 1) + [1.0]])
        AT, G, BT = ev(m).T, ev(3), np.linalg.inv(ev(n)).T
        return float((AT ** 2 * ((G ** 2).sum(1) * (BT ** 2).sum(1))).sum(1).mean())

    default = [Fraction(v) for v in (0, 1, -1, 2, -2, Fraction(1, 2), Fraction(-1, 2))]
    assert score(4, interpolation_points(5)) < 0.5 * score(4, default[:5])
    assert score(5, interpolation_points(6)) < 0.6 * score(5, default[:6])


@pytest.mark.parametrize("bad,exc", [((0, 3), ValueError), ((9, 3), ValueError), ((2, 8), ValueError),
                                     ((2.0, 3), TypeError), ((True, 3), TypeError)])
def test_bad_sizes(bad, exc):
    with pytest.raises(exc, match="^[mr] "):
        winograd_matrices(*bad)
    with pytest.raises(ValueError, match="scaling"):
        winograd_matrices(2, 3, scaling="nope")
