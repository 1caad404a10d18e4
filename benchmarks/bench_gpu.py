"""GPU benchmark: pywino3d's CUDA backend against cuDNN (torch), H100 target.

    python benchmarks/bench_gpu.py [--batch 8] [--md docs/benchmarks_gpu.md]

For the C3D layers conv2a..conv4b (3x3x3, padding 1, float32) it reports,
timed with CUDA events after a warm-up (NVRTC compilation excluded), medians:

* torch.nn.functional.conv3d with TF32 disabled and enabled;
* pywino3d F(4^3) with pre-transformed weights, dense and at column density
  0.25, with the product stage as the shared-memory RawKernel, as cuBLAS
  (cupy.matmul on the gathered positions) and as "auto" (the faster).
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
from bench_cpu import LAYERS as _ALL  # noqa: E402  (one table of layer shapes)

LAYERS = {k: _ALL[k] for k in ("c3d.conv2a", "c3d.conv3a", "c3d.conv3b", "c3d.conv4a", "c3d.conv4b")}


def cuda_time(fn, repeat=20):
    import cupy as cp

    for _ in range(3):
        fn()
    cp.cuda.Device().synchronize()
    times = []
    for _ in range(repeat):
        start, stop = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, stop))
    return float(np.median(times))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--md", default=None)
    args = ap.parse_args(argv)

    import cupy as cp
    import torch

    import pywino3d
    from pywino3d._backends.cuda import backend as _cuda_backend

    if not cp.cuda.is_available():
        sys.exit("no CUDA GPU available")
    dev = cp.cuda.Device()
    name = cp.cuda.runtime.getDeviceProperties(dev.id)["name"].decode()
    lines = [f"Card: {name}; batch {args.batch}; float32; ms (median, CUDA events).", "",
             "| layer | cuDNN TF32 off | cuDNN TF32 on | F(4³) auto | F(4³) rawkernel | F(4³) cuBLAS | "
             "ratio vs TF32 off | ratio vs TF32 on | F(4³) d=0.25 | sparse vs dense |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for lname, (C, K, out) in LAYERS.items():
        rng = np.random.default_rng(0)
        x = cp.asarray(rng.standard_normal((args.batch, C, *out), dtype=np.float32))
        w = cp.asarray((rng.standard_normal((K, C, 3, 3, 3)) / np.sqrt(27 * C)).astype(np.float32))
        xt, wt = torch.from_dlpack(x), torch.from_dlpack(w)
        res = {}
        for tf32 in (False, True):
            torch.backends.cudnn.allow_tf32 = tf32
            torch.backends.cuda.matmul.allow_tf32 = tf32
            with torch.no_grad():
                res[f"tf32_{tf32}"] = cuda_time(lambda: torch.nn.functional.conv3d(xt, wt, padding=1))
        U = pywino3d.filter_transform(w, 4)
        P = U.shape[0]
        score = pywino3d.column_importance(U, "l2")
        cols = pywino3d.select_columns(score, 0.25)
        g = None
        for mode in ("auto", "rawkernel", "cublas"):
            def f(mode=mode, c=None):
                from pywino3d._core.geometry import make_geometry
                from pywino3d._core.validation import as_columns

                nonlocal g
                g = g or make_geometry(x.shape, K, (3, 3, 3), 1, (4, 4, 4))
                kept = as_columns(c, P)
                return _cuda_backend.BACKEND.forward(g, x, U, None, kept, 1, product_mode=mode)
            res[mode] = cuda_time(f)
            if mode == "auto":
                res["sparse"] = cuda_time(lambda: f("auto", cols))
        y = pywino3d.winograd_conv3d(x, U, kernel_size=3, tile=4, padding=1)
        torch.backends.cudnn.allow_tf32 = False
        with torch.no_grad():
            ref = torch.nn.functional.conv3d(xt.double(), wt.double(), padding=1)
        err = float((torch.from_dlpack(y).double() - ref).abs().max())
        lines.append(f"| {lname} | {res['tf32_False']:.2f} | {res['tf32_True']:.2f} | {res['auto']:.2f} | "
                     f"{res['rawkernel']:.2f} | {res['cublas']:.2f} | {res['tf32_False'] / res['auto']:.2f}× | "
                     f"{res['tf32_True'] / res['auto']:.2f}× | {res['sparse']:.2f} | "
                     f"{res['auto'] / res['sparse']:.2f}× |")
        print(lines[-1], f"(max err vs float64 cuDNN {err:.2e})", flush=True)
    text = "\n".join(lines)
    print(text)
    if args.md:
        with open(args.md, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
