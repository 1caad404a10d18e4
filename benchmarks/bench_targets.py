"""The small-channel targets of the cache-resident pipeline, against torch.

For each layer (batch 1, 3x3x3, padding 1, float32) this times, alternately
in one process, torch's conv3d, one-shot ``pywino3d.conv3d`` (tile="auto",
filter transform included, after its first call has tuned), and
``winograd_conv3d`` with U transformed once, through the fused and the
blocked pipelines, and prints medians and ratios.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_targets.py [--threads 2] [--rounds 5]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

LAYERS = [  # name, C, K, size
    ("C32->32 at 64^3", 32, 32, 64),
    ("C16->16 at 128^3", 16, 16, 128),
    ("C64->64 at 32^3", 64, 64, 32),
    ("C1->32 at 64^3", 1, 32, 64),
    ("C256->256 at 4^3", 256, 256, 4),
]


def main(argv=None):
    import torch

    import pywino3d
    from pywino3d._backends.cpu import backend as _cpu_backend

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--layers", type=int, nargs="*", default=None, help="indices into LAYERS")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print(f"| layer | torch ms | conv3d auto | F(4^3) fused, U cached | F(4^3) blocked, U cached |")
    print("|---|---|---|---|---|")
    for i, (name, C, K, S) in enumerate(LAYERS):
        if args.layers is not None and i not in args.layers:
            continue
        x = rng.standard_normal((1, C, S, S, S)).astype(np.float32)
        w = (rng.standard_normal((K, C, 3, 3, 3)) / np.sqrt(27 * C)).astype(np.float32)
        U = pywino3d.filter_transform(w, 4)
        xt, wt = torch.from_numpy(x), torch.from_numpy(w)

        def wino(pipeline):
            def f():
                with _cpu_backend.use_pipeline(pipeline):
                    return pywino3d.winograd_conv3d(x, U, kernel_size=3, tile=4, padding=1, workers=args.threads)
            return f

        fns = {
            "torch": lambda: torch.nn.functional.conv3d(xt, wt, padding=1),
            "auto": lambda: pywino3d.conv3d(x, w, padding=1, workers=args.threads),
            "fused": wino("fused") if max(C, K) <= 64 else None,
            "blocked": wino("blocked"),
        }
        fns = {k: f for k, f in fns.items() if f is not None}
        times = {k: [] for k in fns}
        with torch.no_grad():
            for f in fns.values():
                f()  # warm-up; tile="auto" tunes here
            for r in range(args.rounds):
                order = list(fns) if r % 2 == 0 else list(fns)[::-1]
                for k in order:
                    t0 = time.perf_counter()
                    fns[k]()
                    times[k].append(time.perf_counter() - t0)
        med = {k: float(np.median(v)) for k, v in times.items()}
        cells = [f"{med['torch'] * 1e3:.1f}"]
        for k in ("auto", "fused", "blocked"):
            cells.append(f"{med[k] * 1e3:.1f} ms ({med['torch'] / med[k]:.2f}x)" if k in med else "-")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
