"""Benchmarks of pywino3d.dask (results in docs/scaling.md).

Two studies:

``throughput``
    The ``python -m pywino3d volume`` stack (three 3x3x3 convolutions,
    1 -> C -> C -> 1 channels, Zarr to Zarr) on a fresh LocalCluster for each
    (chunk size, workers) pair, timed alternately with the single-process
    in-memory run of the same stack; medians and the throughput ratio.

``out-of-core``
    A Zarr volume at least twice the cluster's total ``memory_limit`` through
    the same stack, Zarr to Zarr, on a 2-worker cluster: checks that no worker
    was restarted (process ids before and after, the scheduler's worker
    events), records the cluster's peak process memory (distributed's
    ``MemorySampler``) and compares sampled output blocks with the in-memory
    stack on the matching sub-volume.

Examples::

    python benchmarks/bench_dask.py throughput --size 256 --chunks 64 128 --workers 1 2
    python benchmarks/bench_dask.py out-of-core --size 672 --chunks 96 --memory-limit 300MB

Run with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset; the machine's other load
moves absolute numbers a lot: compare the ratios measured in one run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np


def throughput(args):
    from pywino3d._volume_demo import run

    rows = []
    for chunks in args.chunks:
        for workers in args.workers:
            print(f"\n=== chunks {chunks}^3, {workers} workers x {args.threads_per_worker} thread ===", flush=True)
            r = run(size=args.size, chunks=chunks, workers=workers, threads_per_worker=args.threads_per_worker,
                    channels=args.channels, repeat=args.repeat, memory_limit=args.memory_limit)
            r.update(chunks=chunks, workers=workers, threads_per_worker=args.threads_per_worker)
            rows.append(r)
    print(f"\n{'chunks':>7} {'workers':>7} {'dask Mvox/s':>12} {'in-memory Mvox/s':>17} {'ratio':>6} "
          f"{'pair ratio':>10}")
    for r in rows:
        print(f"{r['chunks']:>7} {r['workers']:>7} {r['voxels'] / r['dask_s'] / 1e6:>12.3f} "
              f"{r['voxels'] / r['memory_s'] / 1e6:>17.3f} {r['ratio']:>6.2f} {r['pair_ratio']:>10.2f}")
    return rows


def out_of_core(args):
    import dask.array as da
    import zarr
    from distributed import Client, LocalCluster, progress
    from distributed.diagnostics import MemorySampler

    from pywino3d._volume_demo import layer_tiles, stack_dask, stack_in_memory, stack_weights, write_volume

    with tempfile.TemporaryDirectory(prefix="pywino3d-ooc-", dir=args.tmp) as tmp:
        src, dst = os.path.join(tmp, "in.zarr"), os.path.join(tmp, "out.zarr")
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit=args.memory_limit,
                               dashboard_address=None)
        client = Client(cluster)
        try:
            info = client.scheduler_info(n_workers=-1)["workers"]
            limit = sum(w["memory_limit"] for w in info.values())
            nbytes = 4 * args.size ** 3
            print(f"volume {args.size}^3 float32 = {nbytes / 1e9:.2f} GB; cluster memory_limit "
                  f"{limit / 1e9:.2f} GB in all ({nbytes / limit:.2f}x)", flush=True)
            t0 = time.perf_counter()
            write_volume(src, args.size, args.chunks, seed=1)
            print(f"input written in {time.perf_counter() - t0:.1f} s", flush=True)
            layers = stack_weights(args.channels, seed=2)
            tiles = layer_tiles(layers, args.chunks)
            pids = client.run(os.getpid)
            y = stack_dask(da.from_zarr(src), layers, tiles)
            ms = MemorySampler()
            t0 = time.perf_counter()
            with ms.sample("stack", interval=0.5):
                fut = client.compute(da.to_zarr(y, dst, overwrite=True, compute=False))
                progress(fut)
                fut.result()
            elapsed = time.perf_counter() - t0
            after = client.run(os.getpid)
            removed = [e for _, e in client.get_events("all") if isinstance(e, dict)
                       and e.get("action") in ("remove-worker", "worker-restart", "kill-worker")]
            samples = ms.samples["stack"]  # (time, cluster process memory in bytes)
            peak = max((b for _, b in samples), default=float("nan"))
            # compare sampled blocks with the in-memory stack on the sub-volume plus a 3-voxel margin
            xin = zarr.open_array(src, mode="r")
            out = zarr.open_array(dst, mode="r")
            rng = np.random.default_rng(0)
            worst = 0.0
            for _ in range(args.check_blocks):
                lo = [int(rng.integers(0, args.size - 32)) for _ in range(3)]
                m = [(max(0, a - 3), min(args.size, a + 32 + 3)) for a in lo]
                sub = xin[(0, slice(0, 1)) + tuple(slice(a, b) for a, b in m)][None]
                ref = stack_in_memory(sub, layers, tiles)
                sl = tuple(slice(a - ma, a - ma + 32) for a, (ma, _) in zip(lo, m))
                got = out[(slice(0, 1), slice(0, 1)) + tuple(slice(a, a + 32) for a in lo)]
                worst = max(worst, float(np.abs(got - ref[(slice(None), slice(None)) + sl]).max()
                                   / np.abs(ref).max()))
            res = {"size": args.size, "chunks": args.chunks, "channels": args.channels, "volume_bytes": nbytes,
                   "memory_limit_total": limit, "ratio_to_limit": nbytes / limit, "seconds": elapsed,
                   "voxels_per_s": args.size ** 3 / elapsed, "peak_cluster_process_memory": peak,
                   "workers_restarted": sorted(set(pids.values()) - set(after.values())),
                   "worker_events": removed, "max_rel_err_sampled": worst, "memory_samples": len(samples)}
            print(json.dumps(res, indent=1, default=str))
            return res
        finally:
            client.close()
            cluster.close()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="study", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--size", type=int, default=256)
    t.add_argument("--chunks", type=int, nargs="+", default=[64, 128])
    t.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    t.add_argument("--threads-per-worker", type=int, default=1)
    t.add_argument("--channels", type=int, default=4)
    t.add_argument("--repeat", type=int, default=3)
    t.add_argument("--memory-limit", default="auto")
    o = sub.add_parser("out-of-core")
    o.add_argument("--size", type=int, default=672)
    o.add_argument("--chunks", type=int, default=96)
    o.add_argument("--channels", type=int, default=2)
    o.add_argument("--memory-limit", default="300MB")
    o.add_argument("--check-blocks", type=int, default=3)
    o.add_argument("--tmp", default=None, help="folder for the Zarr stores (default: the system's temp)")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    res = throughput(args) if args.study == "throughput" else out_of_core(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
