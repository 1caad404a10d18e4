"""The backward target of the small-channel layers, against torch.

For each layer (batch 1, 3x3x3, padding 1, float32) this times, alternately
in one process, torch's input + weight gradients
(``torch.ops.aten.convolution_backward``) and pywino3d's grad_x + grad_U
(U transformed once) through the fused and the blocked pipelines, F(4^3)
and F(6^3), and prints medians and ratios.  ``--clock cpu`` (process CPU
time, meaningful with one thread on a shared machine) or ``wall``.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_backward.py --threads 2 --clock wall
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_backward.py --threads 1 --clock cpu
"""
from __future__ import annotations

import argparse
import time

import numpy as np

LAYERS = [  # name, C, K, size
    ("C32->32 at 64^3", 32, 32, 64),
    ("C16->16 at 128^3", 16, 16, 128),
    ("C64->64 at 32^3", 64, 64, 32),
]


def main(argv=None):
    import torch

    import pywino3d
    from pywino3d._backends.cpu import backend as _cpu_backend
    from pywino3d._core.geometry import make_geometry

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    p.add_argument("--tiles", type=int, nargs="*", default=[4, 6])
    p.add_argument("--layers", type=int, nargs="*", default=None, help="indices into LAYERS")
    args = p.parse_args(argv)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    for idx in args.layers if args.layers is not None else range(len(LAYERS)):
        name, C, K, S = LAYERS[idx]
        x = rng.standard_normal((1, C, S, S, S)).astype(np.float32)
        w = (rng.standard_normal((K, C, 3, 3, 3)) / np.sqrt(27 * C)).astype(np.float32)
        gy = rng.standard_normal((1, K, S, S, S)).astype(np.float32)
        xt, wt, gyt = map(torch.from_numpy, (x, w, gy))

        def run_torch():
            torch.ops.aten.convolution_backward(gyt, xt, wt, None, [1] * 3, [1] * 3, [1] * 3, False, [0] * 3, 1,
                                                [True, True, False])
        cands = {"torch": run_torch}
        for m in args.tiles:
            U = pywino3d.filter_transform(w, m)
            g = make_geometry(x.shape, K, (3, 3, 3), 1, (m,) * 3)
            kept = np.arange(U.shape[0], dtype=np.int32)
            for pipe in ("fused", "blocked"):
                cands[f"F({m}^3) {pipe}"] = (lambda g=g, U=U, kept=kept, pipe=pipe: _cpu_backend.backward(
                    g, gy, x, U, kept, args.threads, pipeline=pipe))
        for f in cands.values():
            f()
        times = {k: [] for k in cands}
        for _ in range(args.rounds):
            for k, f in cands.items():
                t0 = clock()
                f()
                times[k].append(clock() - t0)
        med = {k: float(np.median(v)) for k, v in times.items()}
        cells = " | ".join(f"{k} {med[k] * 1e3:.0f} ms ({med['torch'] / med[k]:.2f}x)" for k in cands if k != "torch")
        print(f"{name}, {args.threads} thread(s), {args.clock}: torch {med['torch'] * 1e3:.0f} ms | {cells}",
              flush=True)


if __name__ == "__main__":
    main()
