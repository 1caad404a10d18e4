"""pywino3d.column_cost: exact counts worked by hand, monotone in the kept set,
the same column checks as winograd_conv3d, and agreement with the kernels'
run time (sparse sets that keep few lines run faster)."""
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pywino3d
from pywino3d._choice.columns import ColumnCost


def fmas(stages):
    return [s.fma for s in stages]


def test_dense_f2_counts_by_hand():
    # F(2^3, 3^3): alpha = 4, n = 4 (input), m = 2 (output), 64 positions
    c = pywino3d.column_cost(None, 3, 2, in_channels=3, out_channels=5)
    assert isinstance(c, ColumnCost)
    assert (c.kept, c.positions, c.lines_w, c.lines_hw, c.engine) == (64, 64, 4, 16, "constant")
    # input: stage 1 = 4*4 rows x 4 outputs x 4 terms; stage 2 = 4 x 16 pairs x 4; stage 3 = 64 x 4
    assert fmas(c.input) == [256, 256, 256]
    # output (n = 2): 3T = 64 x 2; 2T = 2 x 16 pairs x 2; 1T = 2*2 rows x 4 w x 2
    assert fmas(c.output) == [128, 64, 32]
    assert c.product.fma == 64 * 3 * 5
    assert c.transform_fma == 3 * 768 + 5 * 224
    assert c.fma == c.transform_fma + 960
    # traffic of the dense input stages: stage 1 reads 16 rows of 4, writes 16 x 4
    assert [(s.reads, s.writes) for s in c.input] == [(64, 64), (64, 64), (64, 64)]


def test_one_w_line_f2_by_hand():
    # every kept position has w = 0: one w' in stage 1, four (h, w) pairs in stage 2
    c = pywino3d.column_cost(np.arange(0, 64, 4), 3, 2)
    assert (c.kept, c.lines_w, c.lines_hw, c.engine) == (16, 1, 4, "template")
    assert fmas(c.input) == [4 * 4 * 1 * 4, 4 * 4 * 4, 16 * 4]
    assert fmas(c.output) == [16 * 2, 2 * 4 * 2, 2 * 2 * 1 * 2]
    # sparse stage 3: one dot product a kept position (4 reads each)
    assert (c.input[2].reads, c.input[2].writes) == (64, 16)
    # sparse 3T: clear the used lines (2 x 4), then read-modify-write per kept value
    assert (c.output[0].reads, c.output[0].writes) == (16 + 32, 8 + 32)


def test_single_position_and_empty_set():
    c = pywino3d.column_cost([5], 3, 4)  # F(4^3): alpha 6
    assert (c.kept, c.lines_w, c.lines_hw) == (1, 1, 1)
    assert fmas(c.input) == [36 * 6, 6 * 6, 6]
    e = pywino3d.column_cost(np.array([], np.int64), 3, 4)
    assert e.kept == 0 and e.fma == 0


def test_non_cubic_and_unsorted():
    # kernel (3, 1, 3), tile (2, 4, 2): alpha (4, 4, 4), output n (2, 4, 2)
    a = pywino3d.column_cost([9, 1, 40], (3, 1, 3), (2, 4, 2))
    b = pywino3d.column_cost([1, 9, 40], (3, 1, 3), (2, 4, 2))
    assert a == b and a.engine == "template"
    # positions 1, 9, 40 -> (h, w) = (0, 1), (2, 1), (2, 0): w' in {0, 1}, 3 pairs
    assert (a.lines_w, a.lines_hw) == (2, 3)
    assert fmas(a.input) == [4 * 4 * 2 * 4, 4 * 3 * 4, 3 * 4]
    assert fmas(a.output) == [3 * 2, 2 * 3 * 4, 2 * 4 * 2 * 2]
    dense = pywino3d.column_cost(None, (3, 1, 3), (2, 4, 2))
    assert dense.engine == "template"  # not a cubic tile: no constant code


@settings(deadline=None, max_examples=60)
@given(tile=st.sampled_from([2, 3, 4, (2, 3, 4)]), data=st.data())
def test_monotone_in_the_kept_set(tile, data):
    P = pywino3d.column_cost(None, 3, tile).positions
    big = data.draw(st.lists(st.integers(0, P - 1), min_size=1, max_size=P, unique=True))
    small = data.draw(st.lists(st.sampled_from(big), min_size=1, max_size=len(big), unique=True))
    cb = pywino3d.column_cost(big, 3, tile, in_channels=4, out_channels=8)
    cs = pywino3d.column_cost(small, 3, tile, in_channels=4, out_channels=8)
    for sb, ss in zip(cb.input + cb.output + (cb.product,), cs.input + cs.output + (cs.product,)):
        assert ss.fma <= sb.fma, (sb.name, small, big)
    assert cs.fma <= cb.fma and cs.lines_w <= cb.lines_w and cs.lines_hw <= cb.lines_hw
    if len(big) < P:  # dense sets are read line by line, so only sparse traffic compares
        assert cs.traffic <= cb.traffic


@pytest.mark.parametrize("bad, exc", [
    (np.array([1.0, 2.0]), TypeError),
    (np.array([True, False]), TypeError),
    (np.array([1, 1]), ValueError),
    (np.array([-1, 2]), ValueError),
    (np.array([0, 64]), ValueError),
    (np.zeros((2, 2), np.int64), ValueError),
])
def test_bad_columns_same_errors_as_winograd_conv3d(bad, exc):
    x = np.ones((1, 1, 4, 4, 4), np.float32)
    U = pywino3d.filter_transform(np.ones((1, 1, 3, 3, 3), np.float32), 2)
    with pytest.raises(exc) as e1:
        pywino3d.winograd_conv3d(x, U, kernel_size=3, tile=2, columns=bad)
    with pytest.raises(exc) as e2:
        pywino3d.column_cost(bad, 3, 2)
    assert str(e1.value) == str(e2.value)


@pytest.mark.parametrize("v", [0, -1, 1.5, True])
def test_bad_channels(v):
    with pytest.raises(ValueError, match="in_channels"):
        pywino3d.column_cost(None, 3, 2, in_channels=v)


def _best(f, reps=7):
    f()
    t = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        t.append(time.perf_counter() - t0)
    return min(t)


def test_fewer_lines_measure_faster():
    """The model's claim, measured: at the same number of kept positions, a
    set that keeps few transform lines (a slab of whole w-lines) runs the
    transforms faster than one that keeps every line.  Few channels, so the
    transforms dominate; min of several runs against load noise."""
    rng = np.random.default_rng(0)
    C = K = 16
    x = rng.standard_normal((1, C, 24, 24, 24)).astype(np.float32)
    U = pywino3d.filter_transform(rng.standard_normal((K, C, 3, 3, 3)).astype(np.float32), 4)
    P = U.shape[0]  # 216
    slab = np.arange(P).reshape(6, 6, 6)[:, :, :2].ravel()  # w' in {0, 1}: 72 positions
    spread = np.sort(rng.choice(P, slab.size, replace=False))
    cs, cf = (pywino3d.column_cost(c, 3, 4, in_channels=C, out_channels=K) for c in (slab, spread))
    assert cs.kept == cf.kept and cs.product.fma == cf.product.fma
    assert cs.transform_fma < 0.6 * cf.transform_fma
    ts = _best(lambda: pywino3d.winograd_conv3d(x, U, kernel_size=3, tile=4, padding=1, columns=slab, workers=1))
    tf = _best(lambda: pywino3d.winograd_conv3d(x, U, kernel_size=3, tile=4, padding=1, columns=spread, workers=1))
    assert ts < 0.95 * tf, (ts, tf)
