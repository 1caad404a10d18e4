"""What fused epilogues and prologues save (issue 28): conv -> instance norm
-> leaky ReLU -> conv, computed

* **separate**: the convolutions plain, the norm and activation as torch
  runs them between two layers (``F.instance_norm``: a statistics pass and a
  normalize pass; ``F.leaky_relu``: one more pass);
* **fused**: the first convolution returns the statistics of its output
  (``Epilogue(stats=True)``), the second normalizes and activates its input
  as it reads it (``Prologue``) -- no pass of its own;

and the two plain convolutions alone (the floor).  All in one process, the
variants alternating, medians of ``--rounds``; the outputs are compared.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_fusion.py --rounds 7

With ``--plain`` it prints one line of the plain layers' times instead (C32
at 64^3 and C64 at 32^3, F(4^3)): the script ``compare_builds.py`` times
against another build.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import pywino3d


def _median_ms(fn, rounds):
    ts = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)) * 1e3


def plain_layers(rounds, workers):
    rng = np.random.default_rng(0)
    out = []
    for C, S in ((32, 64), (64, 32)):
        x = rng.standard_normal((1, C, S, S, S)).astype(np.float32)
        w = (rng.standard_normal((C, C, 3, 3, 3)) / 50).astype(np.float32)
        b = rng.standard_normal(C).astype(np.float32)
        run = lambda: pywino3d.conv3d(x, w, b, padding=1, tile=4, workers=workers)
        run(), run()
        out.append(f"C{C}@{S}^3 {_median_ms(run, rounds):.2f}")
    print(" ".join(out))


def fusion(rounds, workers, C=32, S=64, tile=4, eps=1e-5, slope=0.01):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(workers)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, C, S, S, S)).astype(np.float32)
    w1, w2 = ((rng.standard_normal((C, C, 3, 3, 3)) / 15).astype(np.float32) for _ in range(2))
    b1, b2 = (rng.standard_normal(C).astype(np.float32) for _ in range(2))
    conv = lambda a, w, b, **kw: pywino3d.conv3d(a, w, b, padding=1, tile=tile, workers=workers, **kw)

    def plain():
        return conv(conv(x, w1, b1), w2, b2)

    def separate():
        y = conv(x, w1, b1)
        with torch.inference_mode():
            t = F.leaky_relu(F.instance_norm(torch.from_numpy(y), eps=eps), slope)
        return conv(t.numpy(), w2, b2)

    def fused():
        y, mean, var = conv(x, w1, b1, epilogue=pywino3d.Epilogue(stats=True))
        scale = 1 / np.sqrt(var + eps)
        pro = pywino3d.Prologue(scale=scale, shift=-mean * scale, activation="leaky_relu", alpha=slope)
        return conv(y, w2, b2, prologue=pro)

    def norm_only():
        y = conv(x, w1, b1)
        t0 = time.perf_counter()
        with torch.inference_mode():
            F.leaky_relu(F.instance_norm(torch.from_numpy(y), eps=eps), slope)
        return time.perf_counter() - t0

    a, b = separate(), fused()
    err = float(np.linalg.norm(a - b) / np.linalg.norm(a))
    times = {"plain": [], "separate": [], "fused": [], "norm+act": []}
    for _ in range(rounds):
        for name, fn in (("plain", plain), ("separate", separate), ("fused", fused)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        times["norm+act"].append(norm_only())
    med = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
    print(f"C{C}->{C} at {S}^3, F({tile}^3), float32, {workers} threads, medians of {rounds} alternating rounds")
    print(f"  two plain convolutions            {med['plain']:8.1f} ms")
    print(f"  separate (torch norm + act)       {med['separate']:8.1f} ms  (norm + act alone "
          f"{med['norm+act']:.1f} ms)")
    print(f"  fused (stats epilogue, prologue)  {med['fused']:8.1f} ms")
    print(f"  fused / separate                  {med['fused'] / med['separate']:8.3f}")
    print(f"  cost over the plain convolutions: separate {med['separate'] - med['plain']:.1f} ms, "
          f"fused {med['fused'] - med['plain']:.1f} ms")
    print(f"  relative L2 difference of the outputs {err:.2e}")


def passes(rounds, workers, C=128, S=32, tile=4):
    """The pipelines that fuse by a pre-pass and a post-pass (blocked,
    direct, im2col): what the passes cost on a layer the blocked pipeline
    serves, against torch's separate instance norm + leaky ReLU."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(workers)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, C, S, S, S)).astype(np.float32)
    w = (rng.standard_normal((C, C, 3, 3, 3)) / 30).astype(np.float32)
    scale, shift = rng.uniform(0.5, 1.5, (1, C)), rng.standard_normal((1, C))
    conv = lambda **kw: pywino3d.conv3d(x, w, padding=1, tile=tile, workers=workers, **kw)
    variants = {
        "plain": lambda: conv(),
        "epilogue (leaky_relu + stats)": lambda: conv(epilogue=pywino3d.Epilogue(activation="leaky_relu",
                                                                                  stats=True)),
        "prologue (affine + leaky_relu)": lambda: conv(prologue=pywino3d.Prologue(scale=scale, shift=shift,
                                                                                   activation="leaky_relu")),
    }
    y = conv()

    def torch_norm():
        with torch.inference_mode():
            F.leaky_relu(F.instance_norm(torch.from_numpy(y)), 0.01)

    variants["torch instance_norm + leaky_relu on y"] = torch_norm
    variants["channel_affine(y, stats) alone"] = lambda: pywino3d.channel_affine(
        y, scale, shift, activation="leaky_relu", stats=True, workers=workers)
    times = {k: [] for k in variants}
    for _ in range(rounds):
        for k, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    print(f"C{C}->{C} at {S}^3, F({tile}^3) (blocked pipeline), float32, {workers} threads, medians of {rounds}")
    for k, v in times.items():
        print(f"  {k:40s} {float(np.median(v)) * 1e3:8.1f} ms")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--plain", action="store_true", help="one line of plain layer times (for compare_builds)")
    args = ap.parse_args(argv)
    if args.plain:
        plain_layers(args.rounds, args.workers)
    else:
        fusion(args.rounds, args.workers)
        passes(args.rounds, args.workers)


if __name__ == "__main__":
    main()
