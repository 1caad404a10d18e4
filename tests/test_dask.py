"""pywino3d.dask on a 2-worker, process-based dask.distributed LocalCluster.

One cluster per module (module-scoped fixture); small volumes; many cases are
computed in one call so the scheduler's fixed cost is paid once.
"""
import doctest
import itertools
import logging
import os
import pickle
import signal
import subprocess
import sys
import time

import dask
import dask.array as da
import numpy as np
import pytest
from distributed import Client, LocalCluster

import pywino3d
import pywino3d.dask as pwd
from pywino3d.testing import check_typical, conv3d_reference, error_bound, term_scale, typical_error

from conftest import CUDA_OK, CUDA_WHY


@pytest.fixture(scope="module")
def client():
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                           memory_limit="1GB", silence_logs=logging.ERROR)
    c = Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


# ----------------------------------------------------------------- helpers

def _edges(chunks):
    return np.concatenate([[0], np.cumsum(chunks)]).astype(int)


def _within(actual, ref, bound):
    err = np.abs(actual.astype(np.float64) - ref)
    assert np.all(err <= bound), f"max err/bound = {(err / np.maximum(bound, 1e-300)).max():.3g}"


def _weights_in_graph(y):
    """The values in y's graph that hold the weights (unwrapping task-spec nodes)."""
    found = []
    for v in dict(y.__dask_graph__()).values():
        v = getattr(v, "value", v)
        if isinstance(v, pwd._Weights):
            found.append(v)
    return found


# (x shape, chunks, kernel, padding, tile, dtype, bias)
CASES = [
    ((1, 3, 13, 11, 10), (1, 3, 5, 4, 3), (3, 3, 3), 1, 2, np.float32, True),        # chunks not multiples of the tile
    ((2, 2, 12, 12, 12), (1, 1, 5, 7, 6), (3, 3, 3), "same", 4, np.float64, False),  # channel axis chunked
    ((1, 2, 7, 6, 8), (1, 2, 2, 2, 3), (5, 5, 5), 2, 2, np.float32, True),           # chunks smaller than the halo
    ((1, 2, 7, 5, 6), (1, 2, 3, 1, 2), (5, 5, 5), "valid", 2, np.float64, True),     # 1-voxel chunks, valid
    ((1, 3, 6, 14, 13), (1, 3, 2, 5, 6), (1, 3, 3), (0, 1, 1), (1, 4, 4), np.float32, False),  # 1x3x3
    ((1, 3, 6, 14, 13), (1, 3, 4, 9, 4), (1, 3, 3), "same", (1, 2, 3), np.float64, True),
    ((2, 1, 9, 10, 8), ((2,), 1, (1, 8), (6, 4), (8,)), (2, 3, 4), "same", 3, np.float32, True),  # even kernel
    ((1, 2, 7, 8, 9), (1, 2, 3, 3, 3), (3, 3, 3), 3, 2, np.float64, False),  # padding > kernel - 1
    ((1, 2, 7, 8, 9), (1, 2, 7, 8, 9), (3, 3, 3), (2, 0, 1), 4, np.float32, True),   # one chunk
    ((1, 2, 11, 10, 9), (1, 2, 4, 4, 4), (3, 3, 3), 0, "auto", np.float32, True),
    ((1, 2, 11, 10, 9), (1, 2, 6, 5, 5), (5, 5, 5), "same", "auto", np.float64, False),
]


def _case(i, shape, chunks, ks, pad, tile, dtype, has_bias):
    rng = np.random.default_rng(100 + i)
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((3, shape[1], *ks)).astype(dtype)
    b = rng.standard_normal(3).astype(dtype) if has_bias else None
    return x, w, b


# ----------------------------------------------------------------- tests

def test_import_pywino3d_does_not_import_dask():
    code = ("import sys, pywino3d; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed', 'zarr')); "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_conv3d_matches_oracle_on_cluster(client):
    built = []
    for i, (shape, chunks, ks, pad, tile, dtype, has_bias) in enumerate(CASES):
        x, w, b = _case(i, shape, chunks, ks, pad, tile, dtype, has_bias)
        y = pwd.conv3d(da.from_array(x, chunks=chunks), w, b, padding=pad, tile=tile)
        assert y.chunks[0] == da.from_array(x, chunks=chunks).chunks[0] and y.chunks[1] == (w.shape[0],)
        built.append((x, w, b, pad, y))
    results = client.compute([y for *_, y in built], sync=True)
    for (x, w, b, pad, y), got in zip(built, results):
        ref = conv3d_reference(x, w, b, padding=pad)
        assert got.shape == ref.shape == y.shape and got.dtype == x.dtype
        # blocks are computed on the volume's tile grid: the in-memory error bound holds per voxel
        (weights,) = _weights_in_graph(y)
        bound = error_bound(x, w, weights.tile, x.dtype, padding=pad)
        if b is not None:
            bound += np.finfo(x.dtype).eps * np.abs(b).reshape(1, -1, 1, 1, 1)
        _within(got, ref, bound)
        # and the typical error of that tile, per sample and channel
        check_typical(got, ref, term_scale(x, w, b, padding=pad, tile=weights.tile),
                      typical_error(weights.tile, w.shape[2:], x.shape[1], x.dtype))


def test_output_keeps_input_chunks():
    x = da.zeros((2, 3, 13, 11, 10), chunks=(1, 2, 5, 4, 3), dtype=np.float32)
    w = np.zeros((4, 3, 3, 3, 3), np.float32)
    y = pwd.conv3d(x, w, padding="same")
    assert y.chunks == ((1, 1), (4,), (5, 5, 3), (4, 4, 3), (3, 3, 3, 1))
    v = pwd.conv3d(x, w, padding=0)   # output 11 x 9 x 8: the last chunks shrink
    assert v.chunks[2:] == ((5, 5, 1), (4, 4, 1), (3, 3, 2))
    p = pwd.conv3d(x, w, padding=2)   # output 15 x 13 x 12: the last chunks grow
    assert p.chunks[2:] == ((5, 5, 5), (4, 4, 5), (3, 3, 3, 3))


def test_winograd_conv3d_columns_and_bias_on_cluster(client):
    rng = np.random.default_rng(7)
    built = []
    for dtype, ks, tile, chunks in [(np.float64, (3, 3, 3), 4, (1, 3, 5, 6, 7)),
                                     (np.float32, (1, 3, 3), (1, 2, 2), (1, 3, 3, 4, 2))]:
        x = rng.standard_normal((1, 3, 10, 12, 9)).astype(dtype)
        U = pywino3d.filter_transform(rng.standard_normal((4, 3, *ks)).astype(dtype), tile)
        cols = np.sort(rng.choice(U.shape[0], U.shape[0] // 2, replace=False))
        b = rng.standard_normal(4).astype(dtype)
        y = pwd.winograd_conv3d(da.from_array(x, chunks=chunks), U, kernel_size=ks, tile=tile,
                                padding="same", bias=b, columns=cols)
        U64 = U.astype(np.float64)
        ref = pywino3d.winograd_conv3d(x.astype(np.float64), U64, kernel_size=ks, tile=tile,
                                       padding="same", bias=b.astype(np.float64), columns=cols)
        built.append((y, ref, dtype))
    for (y, ref, dtype), got in zip(built, client.compute([b[0] for b in built], sync=True)):
        assert got.dtype == dtype
        scale = np.abs(ref).max()
        assert np.abs(got - ref).max() <= 1e3 * np.finfo(dtype).eps * scale


def test_weights_sent_once_graph_size_independent_of_weight_size():
    x = da.zeros((1, 32, 16, 16, 16), chunks=(1, 32, 4, 4, 4), dtype=np.float32)  # 64 blocks
    sizes, wbytes = [], []
    for K in (1, 64):
        w = np.ones((K, 32, 3, 3, 3), np.float32)
        y = pwd.conv3d(x, w, padding=1, tile=4)
        (weights,) = _weights_in_graph(y)          # exactly one key holds the weights
        graph = dict(y.__dask_graph__())
        sizes.append(len(pickle.dumps(graph, protocol=5)))
        wbytes.append(weights.U.nbytes)
    # K=64 adds 63 filters of U (1.7 MB): the graph grows by that once, not once per block (64 blocks)
    assert wbytes[1] - wbytes[0] > 1_500_000
    assert sizes[1] - sizes[0] < 1.05 * (wbytes[1] - wbytes[0]) + 10_000


def test_graph_build_does_not_compute():
    def boom(b):
        raise AssertionError("computed while building the graph")

    x = da.zeros((1, 2, 8, 8, 8), chunks=4, dtype=np.float32).map_blocks(boom, dtype=np.float32)
    pwd.conv3d(x, np.ones((1, 2, 3, 3, 3), np.float32), padding=1)


class _FakeCupy(np.ndarray):
    """Looks like a CuPy array to the dispatcher (its module starts with 'cupy')."""

    def get(self):
        return np.asarray(self).view(np.ndarray).copy()


_FakeCupy.__module__ = "cupy.fake"


def _bad_inputs():
    x = np.zeros((1, 2, 6, 6, 6), np.float32)
    w = np.zeros((3, 2, 3, 3, 3), np.float32)
    U = pywino3d.filter_transform(w, 2)
    conv = [
        ("dtype mismatch", x, w.astype(np.float64), {}),
        ("integer x", x.astype(np.int32), w, {}),
        ("w 4-D", x, w[0], {}),
        ("channels", x, w[:, :1], {}),
        ("kernel too large", x, np.zeros((3, 2, 9, 3, 3), np.float32), {}),
        ("kernel over volume", x, np.zeros((3, 2, 7, 3, 3), np.float32), {}),
        ("bias shape", x, w, {"bias": np.zeros(2, np.float32)}),
        ("bias dtype", x, w, {"bias": np.zeros(3, np.float64)}),
        ("padding", x, w, {"padding": -1}),
        ("padding str", x, w, {"padding": "full"}),
        ("tile", x, w, {"tile": 9}),
        ("tile str", x, w, {"tile": "fast"}),
        ("workers", x, w, {"workers": 0}),
        ("w on the GPU", x, w.view(_FakeCupy), {}),
        ("w string", x, "w", {}),
    ]
    wino = [
        ("U dtype", x, U.astype(np.float64), {}),
        ("U shape", x, U[:10], {}),
        ("columns range", x, U, {"columns": [0, 64]}),
        ("columns repeat", x, U, {"columns": [1, 1]}),
        ("columns bool", x, U, {"columns": np.ones(64, bool)}),
        ("kernel_size", x, U, {"kernel_size": 0}),
        ("U on the GPU", x, U.view(_FakeCupy), {}),
    ]
    return conv, wino


@pytest.mark.parametrize("which", ["conv3d", "winograd_conv3d"])
def test_bad_inputs_raise_at_graph_build_with_in_memory_messages(which):
    conv, wino = _bad_inputs()
    cases = conv if which == "conv3d" else wino
    for label, x, wt, kw in cases:
        def poisoned(b):
            raise AssertionError("computed")

        xd = da.from_array(x, chunks=3).map_blocks(poisoned, dtype=x.dtype)
        if which == "conv3d":
            mem = lambda: pywino3d.conv3d(x, wt, **kw)  # noqa: E731
            lazy = lambda: pwd.conv3d(xd, wt, **kw)  # noqa: E731
        else:
            kw = {"kernel_size": 3, "tile": 2, **kw}
            mem = lambda: pywino3d.winograd_conv3d(x, wt, **kw)  # noqa: E731
            lazy = lambda: pwd.winograd_conv3d(xd, wt, **kw)  # noqa: E731
        with pytest.raises((TypeError, ValueError)) as e_mem:
            mem()
        with pytest.raises(type(e_mem.value)) as e_lazy:
            lazy()
        assert str(e_lazy.value) == str(e_mem.value), label


def test_bad_volume_arguments():
    w = np.zeros((1, 1, 3, 3, 3), np.float32)
    with pytest.raises(TypeError, match=r"^x: expected a dask array"):
        pwd.conv3d(np.zeros((1, 1, 4, 4, 4), np.float32), w)
    with pytest.raises(ValueError, match=r"^x: expected a 5-D array, got shape \(4, 4, 4\)"):
        pwd.conv3d(da.zeros((4, 4, 4), chunks=2), w)
    x = da.zeros((1, 1, 8, 4, 4), chunks=2, dtype=np.float32)
    x = x[x[0, 0, :, 0, 0] == 0]  # unknown chunk sizes along N
    with pytest.raises(ValueError, match=r"^x: chunk sizes must be known"):
        pwd.conv3d(x, w)


def test_task_threads_follow_the_scheduler(client, monkeypatch):
    from pywino3d._backends.cpu.common import resolve_workers

    budget = resolve_workers(None)
    # distributed: 2 single-threaded workers (their nanny sets OMP_NUM_THREADS=1)
    assert set(client.run(pwd.task_threads).values()) == {1}
    assert client.submit(pwd.task_threads, pure=False).result() == 1
    assert client.submit(pwd.task_threads, 3, pure=False).result() == 3
    # threaded scheduler: the budget shared by the pool's threads
    for n in (1, 2, 4):
        got = dask.compute(dask.delayed(pwd.task_threads)(dask_key_name=f"tt-{n}"), scheduler="threads",
                           num_workers=n)[0]
        assert got == max(1, budget // n)
    assert dask.compute(dask.delayed(pwd.task_threads)(), scheduler="sync")[0] == budget
    # the convolution tasks pass that count to the kernel
    seen = []
    real = pywino3d._api.winograd_conv3d

    def spy(*a, **kw):
        seen.append(kw["workers"])
        return real(*a, **kw)

    monkeypatch.setattr(pwd._api, "winograd_conv3d", spy)
    x = da.ones((1, 1, 8, 8, 8), chunks=4, dtype=np.float32)
    pwd.conv3d(x, np.ones((1, 1, 3, 3, 3), np.float32), padding=1).compute(scheduler="threads", num_workers=2)
    assert seen and set(seen) == {max(1, budget // 2)}


def test_nan_and_inf_stay_in_their_chunk_and_halo_neighbours(client):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 2, 12, 16, 8))
    w = rng.standard_normal((2, 2, 3, 3, 3))
    chunks = (1, 2, 4, 8, 8)  # 3 x 2 x 1 blocks, multiples of the tile
    clean = pwd.conv3d(da.from_array(x, chunks=chunks), w, padding=1, tile=4)
    dirty_inputs = []
    # inside a block; on block faces (neighbours read it as halo); at the volume's corner
    for value, voxel in [(np.nan, (5, 3, 2)), (np.inf, (4, 8, 5)), (-np.inf, (0, 0, 0))]:
        xb = x.copy()
        xb[0, 1][voxel] = value
        dirty_inputs.append((voxel, xb))
    ys = [pwd.conv3d(da.from_array(xb, chunks=chunks), w, padding=1, tile=4) for _, xb in dirty_inputs]
    ref, *dirty = client.compute([clean, *ys], sync=True)
    edges = [_edges(c) for c in clean.chunks[2:]]
    for (voxel, xb), y in zip(dirty_inputs, dirty):
        touched = 0
        for blk in itertools.product(*(range(len(e) - 1) for e in edges)):
            sl = (slice(None), slice(None)) + tuple(slice(e[b], e[b + 1]) for e, b in zip(edges, blk))
            # output block [a, b) reads input [a - 1, b + 1) (kernel 3, padding 1)
            if all(e[b] - 1 <= v < e[b + 1] + 1 for e, b, v in zip(edges, blk, voxel)):
                touched += not np.isfinite(y[sl]).all()
            else:
                np.testing.assert_array_equal(y[sl], ref[sl])  # every other block: bit for bit
        assert touched >= 1
        own = tuple(int(np.searchsorted(e, v, side="right")) - 1 for e, v in zip(edges, voxel))
        sl = (slice(None), slice(None)) + tuple(slice(e[b], e[b + 1]) for e, b in zip(edges, own))
        assert not np.isfinite(y[sl]).all()
        # exactly the voxels the in-memory call makes non-finite (same tiles)
        with np.errstate(invalid="ignore", over="ignore"):
            mem = pywino3d.conv3d(xb, w, padding=1, tile=4)
        np.testing.assert_array_equal(~np.isfinite(y), ~np.isfinite(mem))


def test_zarr_to_zarr_on_cluster(client, tmp_path):
    zarr = pytest.importorskip("zarr")
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, 2, 20, 18, 16)).astype(np.float32)
    w = rng.standard_normal((2, 2, 3, 3, 3)).astype(np.float32)
    src, dst = str(tmp_path / "in.zarr"), str(tmp_path / "out.zarr")
    da.to_zarr(da.from_array(x, chunks=(1, 2, 8, 8, 8)), src)
    y = pwd.conv3d(da.from_zarr(src), w, padding="same", tile=2)
    client.compute(da.to_zarr(y, dst, compute=False), sync=True)
    out = zarr.open_array(dst, mode="r")
    assert out.chunks == (1, 2, 8, 8, 8)
    np.testing.assert_array_equal(out[...], y.compute(scheduler="sync"))


def test_volume_demo_against_the_cluster(client, tmp_path, capsys):
    from pywino3d.__main__ import main

    out = tmp_path / "demo"
    assert main(["volume", "--size", "24", "--chunks", "12", "--channels", "2", "--repeat", "1",
                 "--scheduler", client.scheduler.address, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "voxels/s" in text and "in-memory" in text
    from pywino3d._volume_demo import check_output

    assert check_output(out) < 1e-5


@pytest.mark.skipif(not CUDA_OK, reason=CUDA_WHY)
def test_cupy_chunks():
    import cupy as cp

    rng = np.random.default_rng(11)
    x = rng.standard_normal((1, 2, 10, 11, 12)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3, 3)).astype(np.float32)
    xd = da.from_array(cp.asarray(x), chunks=(1, 2, 4, 5, 6))
    y = pwd.conv3d(xd, cp.asarray(w), padding=1, tile=2)
    got = y.compute(scheduler="threads")
    assert isinstance(got, cp.ndarray)
    _within(got.get(), conv3d_reference(x, w, padding=1), error_bound(x, w, 2, x.dtype, padding=1))
    with pytest.raises(TypeError, match="^w: is a host"):
        pwd.conv3d(xd, w)


def test_docstring_examples():
    res = doctest.testmod(pwd, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert res.attempted > 0 and res.failed == 0
    for name in pwd.__all__:
        assert "Examples" in (getattr(pwd, name).__doc__ or ""), name


# last in the module: the restarted worker may still be registering when it ends
def _slow_copy(b):
    time.sleep(0.1)
    return b.copy()


def test_worker_killed_mid_computation_gives_exact_result(client):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 16, 16, 16)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3, 3)).astype(np.float32)
    clean = pwd.conv3d(da.from_array(x, chunks=(1, 2, 4, 4, 4)), w, padding=1, tile=2)
    expected = clean.compute(scheduler="sync")
    slow = da.from_array(x, chunks=(1, 2, 4, 4, 4)).map_blocks(_slow_copy, dtype=x.dtype)
    y = pwd.conv3d(slow, w, padding=1, tile=2)
    pids = client.run(os.getpid)
    fut = client.compute(y)

    def finished(dask_scheduler, name=y.name):
        return sum(1 for ts in dask_scheduler.tasks.values()
                   if ts.state == "memory" and isinstance(ts.key, tuple) and ts.key[0] == name)

    deadline = time.time() + 60
    while client.run_on_scheduler(finished) < 4 and time.time() < deadline:
        time.sleep(0.05)
    victim = max(pids, key=lambda a: client.run_on_scheduler(
        lambda dask_scheduler, a=a: len(dask_scheduler.workers[a].has_what)))
    assert not fut.done(), "the computation ended before a worker could be killed"
    os.kill(pids[victim], signal.SIGKILL)
    got = fut.result(timeout=600)
    np.testing.assert_array_equal(got, expected)
    _within(got, conv3d_reference(x, w, padding=1), error_bound(x, w, 2, x.dtype, padding=1))
    # the nanny started a new worker process (its registration with the scheduler can take long on a
    # loaded machine, so the nanny's own process handle is checked)
    nanny_pids = lambda: {n.process.pid for n in client.cluster.workers.values()  # noqa: E731
                          if n.process is not None and n.process.pid is not None}
    deadline = time.time() + 120
    while pids[victim] in nanny_pids() or len(nanny_pids()) < 2:
        assert time.time() < deadline, "the nanny did not restart the killed worker"
        time.sleep(0.2)
