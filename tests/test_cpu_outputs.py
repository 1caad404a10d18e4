"""The reused memory of large outputs (pywino3d/_cpu_outputs.py).

A pooled buffer must never back two live arrays: an output, any view of it
or anything holding it keeps it.  A reused buffer still holds the previous
output's values, so every pipeline must write every element: the tests fill
a dropped output with NaN before its buffer is reused and compare the new
output with a fresh one bit for bit.
"""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import pywino3d
from pywino3d._backends.cpu import backend as _cpu_backend
from pywino3d._backends.cpu import outputs as _cpu_outputs
from pywino3d._core.geometry import make_geometry


@pytest.fixture
def small_pool(monkeypatch):
    """Pool every output (no size floor), starting empty."""
    monkeypatch.setattr(_cpu_outputs, "MIN_BYTES", 0)
    monkeypatch.setattr(_cpu_outputs, "_pool", [])
    monkeypatch.delenv("PYWINO3D_OUTPUT_POOL_MB", raising=False)
    yield


def _problem(rng, C=5, K=7, shape=(6, 7, 9), tile=2, N=1):
    x = rng.standard_normal((N, C, *shape)).astype(np.float32)
    w = rng.standard_normal((K, C, 3, 3, 3)).astype(np.float32)
    return x, w, pywino3d.filter_transform(w, tile), tile


def _conv(x, U, tile, workers=2):
    return pywino3d.winograd_conv3d(x, U, kernel_size=3, tile=tile, padding=1, workers=workers)


def test_dropped_output_is_reused_and_rewritten(small_pool, rng):
    x, w, U, tile = _problem(rng)
    y1 = _conv(x, U, tile)
    address = y1.ctypes.data
    y1[...] = np.nan
    del y1
    x2 = rng.standard_normal(x.shape).astype(np.float32)
    y2 = _conv(x2, U, tile)
    assert y2.ctypes.data == address  # the buffer came back
    np.testing.assert_array_equal(y2, _conv(x2.copy(), U, tile))


@pytest.mark.parametrize("keep", ["output", "view", "reshape", "memoryview"])
def test_a_live_output_is_never_reused(small_pool, rng, keep):
    x, w, U, tile = _problem(rng)
    y1 = _conv(x, U, tile)
    want = y1.copy()
    holder = {"output": lambda: y1, "view": lambda: y1[:, 2:, 1], "reshape": lambda: y1.reshape(-1),
              "memoryview": lambda: memoryview(y1)}[keep]()
    del y1
    y2 = _conv(rng.standard_normal(x.shape).astype(np.float32), U, tile)
    kept = np.asarray(holder)
    assert not np.shares_memory(y2, kept)
    np.testing.assert_array_equal(kept.reshape(-1) if keep == "reshape" else kept,
                                  want.reshape(-1) if keep == "reshape" else
                                  want[:, 2:, 1] if keep == "view" else want)


def test_a_torch_tensor_keeps_the_output(small_pool, rng):
    torch = pytest.importorskip("torch")
    x, w, U, tile = _problem(rng)
    t = torch.from_numpy(_conv(x, U, tile))
    want = t.clone()
    y2 = _conv(rng.standard_normal(x.shape).astype(np.float32), U, tile)
    assert not np.shares_memory(y2, t.numpy())
    assert torch.equal(t, want)


@pytest.mark.parametrize("pipeline,tile,layout", [
    ("fused", 2, "ncdhw"), ("fused", 4, "channels_last"), ("blocked", 3, "ncdhw"),
    ("direct", 1, "ncdhw"), ("im2col", 1, "ncdhw"),
])
def test_every_pipeline_writes_every_element(small_pool, rng, pipeline, tile, layout):
    x, w, U, _ = _problem(rng, C=8, K=16, shape=(5, 9, 11), tile=tile, N=2)
    if layout == "channels_last":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 4, 1)).transpose(0, 4, 1, 2, 3)
    g = make_geometry(x.shape, U.shape[1], (3, 3, 3), 1, (tile,) * 3)
    kept = np.arange(U.shape[0], dtype=np.int32)
    fresh = _cpu_backend.forward(g, x, U, None, kept, 2, pipeline=pipeline)
    want, strides = fresh.copy(), fresh.strides
    fresh[...] = np.nan  # the stale values a reused buffer holds
    address = fresh.__array_interface__["data"][0]
    del fresh
    again = _cpu_backend.forward(g, x, U, None, kept, 2, pipeline=pipeline)
    assert again.__array_interface__["data"][0] == address
    np.testing.assert_array_equal(again, want)
    assert again.strides == strides


def test_cap_and_release(small_pool, rng, monkeypatch):
    x, w, U, tile = _problem(rng)
    nbytes = _conv(x, U, tile).nbytes
    assert _cpu_outputs.kept_bytes() == nbytes  # kept after the output died
    monkeypatch.setenv("PYWINO3D_OUTPUT_POOL_MB", str(2.5 * nbytes / 2**20))
    a, b = _conv(x, U, tile), _conv(x, U, tile)  # two live outputs: two buffers
    c = _conv(x, U, tile)  # a third would pass the cap: a plain array
    assert c.flags.owndata and not a.flags.owndata and not b.flags.owndata
    assert _cpu_outputs.kept_bytes() == 2 * nbytes
    del a
    assert _cpu_outputs.release() == nbytes  # b's buffer is in use
    assert _cpu_outputs.kept_bytes() == nbytes
    x2 = np.concatenate([x, x])  # another size: the free buffers make room
    del b
    d = _conv(x2, U, tile)
    assert _cpu_outputs.kept_bytes() == d.nbytes
    monkeypatch.setenv("PYWINO3D_OUTPUT_POOL_MB", "0")
    assert _conv(x, U, tile).flags.owndata
    np.testing.assert_array_equal(c, _conv(x, U, tile))


def test_default_floor_keeps_small_outputs_plain(rng):
    x, w, U, tile = _problem(rng)
    assert _conv(x, U, tile).flags.owndata
    assert _cpu_outputs.MIN_BYTES >= 2**20


def test_threads_get_distinct_buffers(small_pool, rng):
    x, w, U, tile = _problem(rng, C=8, K=8, shape=(8, 8, 8))
    inputs = [rng.standard_normal(x.shape).astype(np.float32) for _ in range(4)]
    wants = [_conv(xi, U, tile, workers=1).copy() for xi in inputs]

    def work(i):
        outs = []
        for _ in range(20):
            outs.append(_conv(inputs[i], U, tile, workers=1))  # kept alive: no two may share memory
            np.testing.assert_array_equal(outs[-1], wants[i])
        return outs

    with ThreadPoolExecutor(len(inputs)) as pool:  # a failed check raises here
        outs = [y for ys in pool.map(work, range(len(inputs))) for y in ys]
    addresses = [y.ctypes.data for y in outs]
    assert len(set(addresses)) == len(addresses)
