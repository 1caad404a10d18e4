"""Command line: ``python -m pywino3d demo`` and ``python -m pywino3d info``."""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def _median_time(fn, repeat):
    fn()  # warm-up (plans, page faults)
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


#: The demo's layers: a C3D layer (many channels, small volume) and a layer of
#: a MONAI 3-D U-Net (few channels, large volume), 3x3x3, padding 1.
DEMO_LAYERS = (
    ("C3D conv3a", 128, 256, (8, 28, 28)),
    ("U-Net C32->32", 32, 32, (48, 48, 48)),
)


def demo(batch=1, repeat=3, workers=None, seed=0, layers=DEMO_LAYERS, out=sys.stdout):
    """Time F(2^3) and F(4^3), dense and column-sparse, against the direct
    path (and PyTorch when it is installed) on each layer of ``layers``."""
    import pywino3d

    rows = []
    for name, cin, cout, size in layers:
        rows += _demo_layer(name, batch, cin, cout, size, repeat, workers, seed, out)
    return rows


def _demo_layer(name, batch, cin, cout, size, repeat, workers, seed, out):
    import pywino3d
    from pywino3d._backends.cpu import backend as _cpu_backend
    from pywino3d._core.geometry import make_geometry
    from pywino3d.testing import conv3d_reference

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, cin, *size)).astype(np.float32)
    w = (rng.standard_normal((cout, cin, 3, 3, 3)) / np.sqrt(cin * 27)).astype(np.float32)
    direct_gflop = 2.0 * batch * cout * cin * 27 * np.prod(size) / 1e9
    print(f"\n{name}: x {x.shape} -> {cout} channels, 3x3x3, padding 1, float32, "
          f"{direct_gflop:.1f} direct GFLOP", file=out)
    print("computing the float64 oracle ...", file=out, flush=True)
    ref = conv3d_reference(x, w, padding=1)
    t_direct = _median_time(lambda: pywino3d.conv3d(x, w, padding=1, tile=1, workers=workers), repeat)
    y = pywino3d.conv3d(x, w, padding=1, tile=1, workers=workers)
    rows = [(name, "direct (tile=1)", 1.0, t_direct, float(np.abs(y - ref).max()))]
    t_torch = _torch_time(x, w, repeat, workers)
    if t_torch is not None:
        rows.append((name, "torch conv3d", 1.0, t_torch, float("nan")))
    x64 = x.astype(np.float64)
    for m in (2, 4):
        U = pywino3d.filter_transform(w, m)
        U64 = pywino3d.filter_transform(w.astype(np.float64), m)
        score = np.linalg.norm(U64.reshape(U.shape[0], -1), axis=1)
        g = make_geometry(x.shape, cout, (3, 3, 3), 1, (m, m, m))
        for density in (1.0, 0.5, 0.25):
            if density == 1.0:
                cols, exact = None, ref
            else:
                cols = np.sort(np.argsort(score)[::-1][: int(round(density * U.shape[0]))])
                exact = pywino3d.winograd_conv3d(x64, U64, kernel_size=3, tile=m, padding=1, columns=cols)
            kept = np.arange(U.shape[0], dtype=np.int32) if cols is None else cols.astype(np.int32)
            pipeline = _cpu_backend.choose_pipeline(g, kept, x.dtype).NAME
            f = lambda: pywino3d.winograd_conv3d(x, U, kernel_size=3, tile=m, padding=1,  # noqa: E731
                                                 columns=cols, workers=workers)
            t = _median_time(f, repeat)
            rows.append((name, f"F({m}^3) {pipeline}", density, t, float(np.abs(f() - exact).max())))
    print(f"{'algorithm':<18} {'density':>7} {'time ms':>9} {'vs direct':>9} {'vs torch':>9} "
          f"{'GFLOP/s*':>9} {'max err':>10}", file=out)
    for _, alg, dens, t, err in rows:
        vs_torch = f"{t_torch / t:>8.2f}x" if t_torch is not None else f"{'-':>9}"
        print(f"{alg:<18} {dens:>7.2f} {t * 1e3:>9.1f} {t_direct / t:>8.2f}x {vs_torch} "
              f"{direct_gflop / t:>9.0f} {err:>10.2e}", file=out)
    print("* direct-equivalent GFLOP/s; errors against the float64 oracle (sparse rows: against\n"
          "  the float64 result of the same pruned weights). Weights pre-transformed; the pipeline\n"
          "  (blocked or fused) is the one pipeline='auto' runs.", file=out)
    return rows


def _torch_time(x, w, repeat, workers):
    """Median time of torch's conv3d on the same layer, or None without torch."""
    try:
        import torch
    except ImportError:
        return None
    from pywino3d._backends.cpu.common import resolve_workers

    prev = torch.get_num_threads()
    torch.set_num_threads(resolve_workers(workers))
    try:
        xt, wt = torch.from_numpy(x), torch.from_numpy(w)
        with torch.no_grad():
            return _median_time(lambda: torch.nn.functional.conv3d(xt, wt, padding=1), repeat)
    finally:
        torch.set_num_threads(prev)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m pywino3d", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="time F(2^3)/F(4^3), dense and sparse, on a C3D and a U-Net layer")
    d.add_argument("--batch", type=int, default=1)
    d.add_argument("--repeat", type=int, default=3)
    d.add_argument("--workers", type=int, default=None)
    sub.add_parser("info", help="versions, OpenMP, threads, backends")
    sub.add_parser("experiment", help="low-rank training and column pruning experiment", add_help=False)
    sub.add_parser("volume", help="three convolutions over a Zarr volume on dask.distributed", add_help=False)
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "experiment":
        from pywino3d.experiments.cli import main as experiment_main

        return experiment_main(argv[1:])
    if argv and argv[0] == "volume":
        from pywino3d._volume_demo import main as volume_main

        return volume_main(argv[1:])
    args = parser.parse_args(argv)
    if args.cmd == "demo":
        demo(batch=args.batch, repeat=args.repeat, workers=args.workers)
    else:
        from pywino3d import show_versions

        show_versions()
    return 0


if __name__ == "__main__":
    sys.exit(main())
