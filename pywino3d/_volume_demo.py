"""``python -m pywino3d volume``: three convolutions over a Zarr volume on dask.distributed.

A synthetic volume (1 channel, ``size``^3, float32) is written to a Zarr
store, a stack of three 3x3x3 "same" convolutions (1 -> C -> C -> 1 channels,
fixed random weights) runs through :mod:`pywino3d.dask` on a local cluster (or
the scheduler at ``--scheduler``) with distributed's progress bar, and the
result is written to another Zarr store.  The same stack then runs in one
process on the volume held in memory (:func:`pywino3d.conv3d`, all cores), and
both throughputs are printed in voxels per second.  The two are timed
alternately, ``--repeat`` times each, and the medians reported; the dask time
is Zarr to Zarr (reading, computing, compressing, writing), the in-memory time
the three convolutions only.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

IN_STORE, OUT_STORE, WEIGHTS = "volume.zarr", "output.zarr", "weights.npz"


def stack_weights(channels, seed=0, dtype=np.float32):
    """The three layers' weights and biases: 1 -> C -> C -> 1, 3x3x3."""
    rng = np.random.default_rng(seed)
    shapes = [(channels, 1), (channels, channels), (1, channels)]
    out = []
    for k, c in shapes:
        w = rng.standard_normal((k, c, 3, 3, 3)) / np.sqrt(27 * c)
        out.append((w.astype(dtype), (0.1 * rng.standard_normal(k)).astype(dtype)))
    return out


def layer_tiles(layers, chunks):
    """One tile per layer, the cost model's choice for a chunk (what
    ``pywino3d.dask.conv3d(tile="auto")`` picks); both paths use these, so
    they run the same arithmetic and nothing is autotuned while timing."""
    from pywino3d._choice import model_tile

    return [model_tile((chunks,) * 3, w.shape[2:], 1, w.shape[1], w.shape[0], w.dtype.itemsize, "cpu")
            for w, _ in layers]


def stack_in_memory(x, layers, tiles, workers=None):
    import pywino3d

    for (w, b), tile in zip(layers, tiles):
        x = pywino3d.conv3d(x, w, b, padding="same", tile=tile, workers=workers)
    return x


def stack_dask(x, layers, tiles):
    from pywino3d import dask as pwd

    for (w, b), tile in zip(layers, tiles):
        x = pwd.conv3d(x, w, b, padding="same", tile=tile)
    return x


def write_volume(path, size, chunks, seed=0):
    """A random volume (1, 1, size, size, size) in a Zarr store, built chunk by chunk."""
    import dask.array as da

    rng = da.random.default_rng(seed)
    x = rng.standard_normal((1, 1, size, size, size), chunks=(1, 1, chunks, chunks, chunks), dtype=np.float32)
    da.to_zarr(x, path, overwrite=True)


def check_output(out):
    """Max |dask - in-memory| / max |in-memory| of a finished run in folder ``out``."""
    import zarr

    out = str(out)
    x = zarr.open_array(os.path.join(out, IN_STORE), mode="r")[...]
    y = zarr.open_array(os.path.join(out, OUT_STORE), mode="r")[...]
    with np.load(os.path.join(out, WEIGHTS)) as f:
        layers = [(f[f"w{i}"], f[f"b{i}"]) for i in range(3)]
        tiles = [tuple(int(m) for m in t) for t in f["tiles"]]
    ref = stack_in_memory(x, layers, tiles)
    return float(np.abs(y - ref).max() / np.abs(ref).max())


def run(size=256, chunks=128, workers=2, threads_per_worker=1, channels=4, scheduler=None, out=None,
        repeat=3, memory_limit="auto", seed=0, stream=sys.stdout):
    import dask.array as da
    from distributed import Client, LocalCluster, progress

    tmp = None
    if out is None:
        tmp = tempfile.TemporaryDirectory(prefix="pywino3d-volume-")
        out = tmp.name
    os.makedirs(out, exist_ok=True)
    src, dst = os.path.join(out, IN_STORE), os.path.join(out, OUT_STORE)
    layers = stack_weights(channels, seed)
    tiles = layer_tiles(layers, min(chunks, size))
    np.savez(os.path.join(out, WEIGHTS), tiles=np.array(tiles),
             **{f"w{i}": w for i, (w, _) in enumerate(layers)}, **{f"b{i}": b for i, (_, b) in enumerate(layers)})
    cluster = None
    if scheduler is None:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker, processes=True,
                               memory_limit=memory_limit, dashboard_address=None)
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        info = client.scheduler_info(n_workers=-1)["workers"]
        nthreads = sum(w["nthreads"] for w in info.values())
        print(f"pywino3d volume: {size}^3 float32, chunks {chunks}^3, 3 convolutions 3x3x3 "
              f"(1 -> {channels} -> {channels} -> 1, padding 'same', tiles {tiles});\n"
              f"cluster {client.scheduler.address}: {len(info)} workers, {nthreads} threads; stores in {out}",
              file=stream, flush=True)
        write_volume(src, size, chunks, seed)  # on the cluster (the client is the default scheduler)
        x_mem = da.from_zarr(src).compute()
        t_dask, t_mem = [], []
        for r in range(repeat):
            y = stack_dask(da.from_zarr(src), layers, tiles)
            t0 = time.perf_counter()
            fut = client.compute(da.to_zarr(y, dst, overwrite=True, compute=False))
            progress(fut)
            fut.result()
            t_dask.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            stack_in_memory(x_mem, layers, tiles)
            t_mem.append(time.perf_counter() - t0)
            print(f"\nrun {r + 1}: dask {t_dask[-1]:.2f} s, in-memory {t_mem[-1]:.2f} s", file=stream, flush=True)
        td, tm = float(np.median(t_dask)), float(np.median(t_mem))
        vox = float(size) ** 3
        print(f"{'path':<34} {'median s':>9} {'voxels/s':>12}", file=stream)
        print(f"{'dask, Zarr to Zarr':<34} {td:>9.2f} {vox / td:>12.3g}", file=stream)
        print(f"{'in-memory, one process (compute)':<34} {tm:>9.2f} {vox / tm:>12.3g}", file=stream)
        pair = float(np.median([m / d for m, d in zip(t_mem, t_dask)]))
        print(f"dask / in-memory throughput: {tm / td:.2f}x (medians); {pair:.2f}x (median of the "
              "runs' ratios, each pair timed back to back)", file=stream, flush=True)
        return {"dask_s": td, "memory_s": tm, "voxels": vox, "ratio": tm / td, "pair_ratio": pair,
                "dask_runs": t_dask, "memory_runs": t_mem, "out": out}
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
        if tmp is not None:
            tmp.cleanup()


def add_arguments(p):
    p.add_argument("--size", type=int, default=256, help="edge of the cubic volume (default 256)")
    p.add_argument("--chunks", type=int, default=128, help="edge of the cubic chunks (default 128)")
    p.add_argument("--workers", type=int, default=2, help="local cluster: worker processes (default 2)")
    p.add_argument("--threads-per-worker", type=int, default=1)
    p.add_argument("--channels", type=int, default=4, help="channels between the layers (default 4)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="address of an existing dask scheduler (tcp://host:8786) instead of a local cluster")
    p.add_argument("--out", default=None, help="folder for the Zarr stores (default: a temporary folder)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs of each path (median reported)")
    p.add_argument("--memory-limit", default="auto", help="local cluster: memory limit per worker")
    return p


def main(argv=None):
    args = add_arguments(argparse.ArgumentParser(prog="python -m pywino3d volume", description=__doc__)
                         ).parse_args(argv)
    run(size=args.size, chunks=args.chunks, workers=args.workers, threads_per_worker=args.threads_per_worker,
        channels=args.channels, scheduler=args.scheduler, out=args.out, repeat=args.repeat,
        memory_limit=args.memory_limit)
    return 0
