"""Reliability: random partly-invalid calls, threads, leaks, 64-bit indices,
extreme magnitudes and Ctrl-C."""
import gc
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pywino3d
from pywino3d._backends.cpu._ext import _cpu
from pywino3d._core.geometry import make_geometry

ALLOWED = (ValueError, TypeError, MemoryError)


@st.composite
def wild_calls(draw):
    """Arguments that are often valid, sometimes subtly not."""
    dt = draw(st.sampled_from([np.float32, np.float64, np.int32, np.float16]))
    dt_w = draw(st.sampled_from([dt, dt, dt, np.float64]))
    nd = draw(st.sampled_from([5, 5, 5, 4, 6]))
    shape = tuple(draw(st.integers(0, 6)) for _ in range(nd))
    K = draw(st.integers(0, 4))
    cin = shape[1] if nd > 1 and draw(st.booleans()) else draw(st.integers(0, 4))
    ks = tuple(draw(st.integers(0, 8)) for _ in range(3))
    w_shape = (K, cin, *ks)
    tile = draw(st.one_of(st.integers(-1, 9), st.tuples(*[st.integers(0, 9)] * 3), st.just("auto"),
                          st.just("big")))
    padding = draw(st.one_of(st.integers(-2, 3), st.just("same"), st.just("valid"), st.just("full"),
                             st.tuples(*[st.integers(-1, 2)] * 3)))
    columns = draw(st.one_of(st.none(), st.lists(st.integers(-3, 300), max_size=6)))
    workers = draw(st.sampled_from([None, 1, 2, -1, 0]))
    return dict(dt=dt, dt_w=dt_w, shape=shape, w_shape=w_shape, tile=tile, padding=padding,
                columns=columns, workers=workers)


@settings(max_examples=200)
@given(call=wild_calls())
def test_never_crashes(call):
    """Any mix of arguments returns a well-formed result or raises one of
    ValueError/TypeError/MemoryError -- never anything else, never a crash."""
    x = np.ones(call["shape"], dtype=call["dt"])
    w = np.ones(call["w_shape"], dtype=call["dt_w"])
    try:
        y = pywino3d.conv3d(x, w, padding=call["padding"], tile=call["tile"], workers=call["workers"])
        assert y.dtype == x.dtype and y.shape[:2] == (x.shape[0], w.shape[0])
        assert np.isfinite(y).all()
    except ALLOWED:
        pass
    tile = call["tile"] if not isinstance(call["tile"], str) else 2
    try:
        U = pywino3d.filter_transform(w, tile)
        y = pywino3d.winograd_conv3d(x, U, kernel_size=call["w_shape"][2:], tile=tile,
                                     padding=call["padding"], columns=call["columns"], workers=call["workers"])
        gx, gU = pywino3d.winograd_conv3d_backward(np.ones_like(y), x, U, kernel_size=call["w_shape"][2:],
                                                   tile=tile, padding=call["padding"], columns=call["columns"])
        assert gx.shape == x.shape and gU.shape == U.shape
    except ALLOWED:
        pass


def test_threads_match_serial(rng):
    problems = [(rng.standard_normal((2, 4, 7, 8, 9)).astype(np.float32),
                 rng.standard_normal((5, 4, 3, 3, 3)).astype(np.float32), t) for t in (1, 2, 3, 4)] * 3
    serial = [pywino3d.conv3d(x, w, padding=1, tile=t) for x, w, t in problems]
    results = [None] * len(problems)

    def work(i):
        x, w, t = problems[i]
        for _ in range(3):
            results[i] = pywino3d.conv3d(x, w, padding=1, tile=t)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(problems))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for a, b in zip(serial, results):
        assert a.tobytes() == b.tobytes()


def test_gil_released_during_kernels():
    """A pure-Python thread keeps running while a kernel computes."""
    x = np.ones((4, 64, 16, 32, 32), np.float32)
    w = np.ones((64, 64, 3, 3, 3), np.float32)
    U = pywino3d.filter_transform(w, 4)
    inside = threading.Event()
    done = threading.Event()

    def heavy():
        inside.set()
        for _ in range(3):
            pywino3d.winograd_conv3d(x, U, kernel_size=3, tile=4, padding=1, workers=1)
        done.set()

    t = threading.Thread(target=heavy)
    t.start()
    inside.wait()
    ticks = 0
    t0 = time.perf_counter()
    while not done.is_set():
        ticks += 1
        time.sleep(0.001)
    elapsed = time.perf_counter() - t0
    t.join()
    # with the GIL held the loop could run only between blocks
    assert elapsed > 0.05 and ticks > 0.3 * elapsed / 0.0011


def _rss_mib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def test_no_leaks():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3, 3)).astype(np.float32)
    U = pywino3d.filter_transform(w, 2)

    def burst(n):
        for i in range(n):
            y = pywino3d.winograd_conv3d(x, U, kernel_size=3, tile=2, padding=1, columns=np.arange(i % 64 + 1))
            pywino3d.winograd_conv3d_backward(y, x, U, kernel_size=3, tile=2, padding=1)
            for bad in (dict(tile=0), dict(columns=[99]), dict(padding=-1)):
                try:
                    pywino3d.winograd_conv3d(x, U, kernel_size=3, **{"tile": 2, **bad})
                except ValueError:
                    pass

    burst(300)  # warm caches (plans, workspace)
    gc.collect()
    rss0 = _rss_mib()
    tracemalloc.start()
    snap0 = tracemalloc.take_snapshot()
    burst(1500)
    gc.collect()
    snap1 = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in snap1.compare_to(snap0, "filename"))
    assert grown < 256 * 1024, f"tracemalloc grew by {grown} bytes"
    assert _rss_mib() - rss0 < 16, f"RSS grew from {rss0:.1f} to {_rss_mib():.1f} MiB"


def test_index_arithmetic_is_64_bit():
    """Tile numbering of a geometry with > 2^31 tiles and > 2^31-element
    tensors, through the kernels' own helper, against Python integers."""
    N, C, D, H, W = 3000, 7, 2000, 2000, 2000
    g = make_geometry((N, C, D, H, W), 5, (3, 3, 3), 1, (4, 4, 4))
    assert g.ntiles > 2**31 and N * C * D * H * W > 2**40
    strides = (C * D * H * W, D * H * W, H * W, W, 1)
    gt = _cpu.CGeom(g.c_fields(strides))
    nt = g.ntiles_axis
    for t in (0, 1, 2**31 - 1, 2**31, 2**31 + 12345, 2**33 + 7, g.ntiles - 1):
        n, rem = divmod(t, nt[0] * nt[1] * nt[2])
        td, rem = divmod(rem, nt[1] * nt[2])
        th, tw = divmod(rem, nt[2])
        assert _cpu.tile_origin(gt, t) == (n, td * 4, th * 4, tw * 4)


@pytest.mark.parametrize("scale", [1e30, 1e-30])
def test_extreme_magnitudes_float32(rng, scale):
    x = (rng.standard_normal((1, 4, 6, 6, 6)) * scale).astype(np.float32)
    w = rng.standard_normal((3, 4, 3, 3, 3)).astype(np.float32)
    ref = pywino3d.testing.conv3d_reference(x, w, padding=1)
    for m in (1, 2, 4):
        y = pywino3d.conv3d(x, w, padding=1, tile=m)
        assert np.isfinite(y).all()
        assert np.abs(y - ref).sum() / np.abs(ref).sum() < 1e-4


def test_ctrl_c_interrupts_within_a_second(tmp_path):
    code = textwrap.dedent("""
        import sys, time, numpy as np, pywino3d
        x = np.ones((8, 64, 16, 56, 56), np.float32)
        w = np.ones((64, 64, 3, 3, 3), np.float32)
        U = pywino3d.filter_transform(w, 4)
        print("ready", flush=True)
        try:
            while True:
                pywino3d.winograd_conv3d(x, U, kernel_size=3, tile=4, padding=1)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(3)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(1.5)  # well inside a long call
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=10)
    finally:
        proc.kill()
    latency = time.perf_counter() - t0
    assert proc.returncode == 3 and "interrupted" in out
    assert latency < 1.0, f"took {latency:.2f} s to stop"
