"""CPU benchmark suite: pywino3d against torch.nn.functional.conv3d.

One command (see docs/benchmarks.md)::

    python benchmarks/bench_cpu.py --batch 1 8 --md docs/benchmarks_cpu.md --plot docs/speedup_cpu.png

The script clears OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE (re-executing itself
if they are set) so that every baseline runs at full speed, measures the
machine's SGEMM peak and memory bandwidth, then for every layer and batch
reports, with the same thread count for everyone:

* median time of torch, pywino3d's direct path (tile=1), F(2^3), F(4^3) and
  tile="auto", dense and at column densities 0.5 and 0.25 (inference with
  pre-transformed weights);
* ratio to torch, direct-equivalent GFLOP/s, and the product stage's executed
  GFLOP/s as a fraction of the measured SGEMM peak;
* the time per stage (input transform, product, output transform) of F(4^3);
* a training step (forward + grad_x + grad_U) against torch forward+backward;
* peak memory of one call (separate process, ru_maxrss) for --memory layers.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

_BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
if any(v in os.environ for v in _BLAS_VARS) and __name__ == "__main__":
    env = {k: v for k, v in os.environ.items() if k not in _BLAS_VARS}
    os.execve(sys.executable, [sys.executable] + sys.argv, env)

import numpy as np  # noqa: E402

import pywino3d  # noqa: E402
from pywino3d._backends.cpu.common import stage_timer  # noqa: E402
from pywino3d._choice.cost import choose_tile  # noqa: E402

# name: (C_in, C_out, (D, H, W) of the output) -- 3x3x3, stride 1, padding 1
LAYERS = {
    "c3d.conv2a": (64, 128, (16, 56, 56)),
    "c3d.conv3a": (128, 256, (8, 28, 28)),
    "c3d.conv3b": (256, 256, (8, 28, 28)),
    "c3d.conv4a": (256, 512, (4, 14, 14)),
    "c3d.conv4b": (512, 512, (4, 14, 14)),
    "c3d.conv5a": (512, 512, (2, 7, 7)),
    "c3d.conv5b": (512, 512, (2, 7, 7)),
    "r3d.layer1": (64, 64, (16, 56, 56)),
    "r3d.layer2": (128, 128, (8, 28, 28)),
    "r3d.layer3": (256, 256, (4, 14, 14)),
    "r3d.layer4": (512, 512, (2, 7, 7)),
    "small.c32": (32, 32, (32, 32, 32)),
}


def median_time(fn, repeat, min_time=0.0):
    fn()
    ts = []
    t_start = time.perf_counter()
    while len(ts) < repeat or (time.perf_counter() - t_start < min_time and len(ts) < 50):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def machine_peaks(threads):
    """SGEMM peak (best of OpenBLAS and pywino3d's micro-kernel) and copy bandwidth."""
    from pywino3d._backends.cpu._ext import _cpu

    n = 2048
    a = np.random.rand(n, n).astype(np.float32)
    b = np.random.rand(n, n).astype(np.float32)
    c = np.empty((n, n), np.float32)
    t_np = median_time(lambda: np.matmul(a, b, out=c), 5)
    scratch = np.empty(_cpu.gemm_scratch_bytes(np.float32, threads), np.uint8)
    t_ours = median_time(lambda: _cpu.gemm_batched(a[None], b[None], c[None], scratch=scratch,
                                                   nthreads=threads), 5)
    gemm = 2 * n**3 / min(t_np, t_ours) / 1e9
    src = np.ones(2**27, np.float32)  # 512 MiB
    dst = np.empty_like(src)
    t_copy = median_time(lambda: np.copyto(dst, src), 5)
    bw = 2 * src.nbytes / t_copy / 1e9
    return {"sgemm_gflops": gemm, "sgemm_numpy_gflops": 2 * n**3 / t_np / 1e9,
            "sgemm_pywino3d_gflops": 2 * n**3 / t_ours / 1e9, "copy_gbs": bw}


def columns_for(U, density):
    if density >= 1.0:
        return None
    score = np.linalg.norm(U.reshape(U.shape[0], -1), axis=1)
    k = max(1, int(round(density * U.shape[0])))
    return np.sort(np.argsort(score)[::-1][:k])


def bench_layer(name, batch, repeat, threads, training=True):
    import torch

    C, K, out = LAYERS[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, C, *out)).astype(np.float32)
    w = (rng.standard_normal((K, C, 3, 3, 3)) / np.sqrt(27 * C)).astype(np.float32)
    gflop = 2.0 * batch * K * C * 27 * np.prod(out) / 1e9
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    with torch.no_grad():
        t_torch = median_time(lambda: torch.nn.functional.conv3d(xt, wt, padding=1), repeat)
    res = {"layer": name, "batch": batch, "gflop": gflop, "torch": t_torch, "rows": []}
    auto = choose_tile(out, (3, 3, 3), batch, C, K, 4)
    for label, tile in (("direct", 1), ("F(2^3)", 2), ("F(4^3)", 4), ("auto", auto)):
        U = pywino3d.filter_transform(w, tile)
        for density in ((1.0,) if label in ("direct", "auto") else (1.0, 0.5, 0.25)):
            cols = columns_for(U, density)
            f = lambda: pywino3d.winograd_conv3d(x, U, kernel_size=3, tile=tile, padding=1,  # noqa: E731
                                                 columns=cols, workers=threads)
            t = median_time(f, repeat)
            with stage_timer() as st:
                for _ in range(3):
                    f()
            stages = {k: v / 3 for k, v in st.items()}
            nk = U.shape[0] if cols is None else len(cols)
            T = batch
            for o, m in zip(out, (tile,) * 3 if isinstance(tile, int) else tile):
                T *= -(-o // m)
            prod_flop = 2.0 * nk * K * C * T
            res["rows"].append({"algo": label, "tile": tile, "density": density, "time": t,
                                "stages": stages, "product_gflops": prod_flop / stages["product"] / 1e9})
    if training:
        xg = xt.clone().requires_grad_(True)
        wg = wt.clone().requires_grad_(True)

        def torch_step():
            y = torch.nn.functional.conv3d(xg, wg, padding=1)
            y.backward(torch.ones_like(y))

        res["torch_train"] = median_time(torch_step, repeat)
        U = pywino3d.filter_transform(w, 4)
        gy = np.ones((batch, K, *out), np.float32)

        def ours_step():
            pywino3d.winograd_conv3d(x, U, kernel_size=3, tile=4, padding=1, workers=threads)
            pywino3d.winograd_conv3d_backward(gy, x, U, kernel_size=3, tile=4, padding=1, workers=threads)

        res["ours_train"] = median_time(ours_step, repeat)
    return res


_MEM_SNIPPET = r"""
import json, sys, numpy as np
name, batch, which = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sys.path.insert(0, sys.argv[4])
from bench_cpu import LAYERS


def status(key):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(key)) / 1024


C, K, out = LAYERS[name]
rng = np.random.default_rng(0)
x = rng.standard_normal((batch, C, *out), dtype=np.float32)
w = rng.standard_normal((K, C, 3, 3, 3), dtype=np.float32)
if which == "torch":
    import torch
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    torch.nn.functional.conv3d(xt[:, :, :3, :3, :3], wt)  # load oneDNN
else:
    import pywino3d
    U = pywino3d.filter_transform(w, 4)
base = status("VmRSS:")
with open("/proc/self/clear_refs", "w") as f:  # reset the high-water mark
    f.write("5")
if which == "torch":
    with torch.no_grad():
        y = torch.nn.functional.conv3d(xt, wt, padding=1)
else:
    y = pywino3d.winograd_conv3d(x, U, kernel_size=3, tile=4, padding=1)
peak = status("VmHWM:")
print(json.dumps({"extra_mib": peak - base, "output_mib": y.nbytes / 2**20}))
"""


def peak_memory(name, batch, which):
    here = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run([sys.executable, "-c", _MEM_SNIPPET, name, str(batch), which, here],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def fmt_ms(t):
    return f"{t * 1e3:.1f}"


def report(results, peaks, threads, memory):
    lines = []
    lines.append(f"Machine: {os.cpu_count()} cores, {threads} threads for every library; "
                 f"measured SGEMM peak {peaks['sgemm_gflops']:.0f} GFLOP/s (OpenBLAS "
                 f"{peaks['sgemm_numpy_gflops']:.0f}, pywino3d micro-kernel "
                 f"{peaks['sgemm_pywino3d_gflops']:.0f}), copy bandwidth {peaks['copy_gbs']:.0f} GB/s.")
    lines.append("")
    lines.append("| layer | batch | torch ms | direct | F(2³) | F(4³) | auto | F(2³) d=.5 | F(2³) d=.25 | "
                 "F(4³) d=.5 | F(4³) d=.25 | F(4³) GFLOP/s* | F(4³) product % peak |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        rows = {(row["algo"], row["density"]): row for row in r["rows"]}

        def cell(algo, dens):
            row = rows[(algo, dens)]
            return f"{fmt_ms(row['time'])} ({r['torch'] / row['time']:.2f}×)"

        f4 = rows[("F(4^3)", 1.0)]
        auto = rows[("auto", 1.0)]
        lines.append(
            f"| {r['layer']} | {r['batch']} | {fmt_ms(r['torch'])} | {cell('direct', 1.0)} | "
            f"{cell('F(2^3)', 1.0)} | {cell('F(4^3)', 1.0)} | {cell('auto', 1.0)} {auto['tile']} | "
            f"{cell('F(2^3)', 0.5)} | {cell('F(2^3)', 0.25)} | {cell('F(4^3)', 0.5)} | "
            f"{cell('F(4^3)', 0.25)} | {r['gflop'] / f4['time']:.0f} | "
            f"{100 * f4['product_gflops'] / peaks['sgemm_gflops']:.0f} % |")
    lines.append("")
    lines.append("Times in ms (median); in brackets the speed-up over torch (>1 is faster). "
                 "*direct-equivalent GFLOP/s. d = column density. Weights pre-transformed.")
    lines.append("")
    lines.append("Stage breakdown of F(4³) (ms): input transform / product / output transform, "
                 "and the sparse speed-up of density 0.25 over dense F(4³):")
    lines.append("")
    lines.append("| layer | batch | input | product | output | product GFLOP/s | d=.25 vs dense |")
    lines.append("|---|---|---|---|---|---|---|")
    for r in results:
        rows = {(row["algo"], row["density"]): row for row in r["rows"]}
        f4, sp = rows[("F(4^3)", 1.0)], rows[("F(4^3)", 0.25)]
        st = f4["stages"]
        lines.append(f"| {r['layer']} | {r['batch']} | {fmt_ms(st['input'])} | {fmt_ms(st['product'])} | "
                     f"{fmt_ms(st['output'])} | {f4['product_gflops']:.0f} | {f4['time'] / sp['time']:.2f}× |")
    if any("torch_train" in r for r in results):
        lines.append("")
        lines.append("Training step (forward + grad_x + grad_U with F(4³), against torch forward + backward):")
        lines.append("")
        lines.append("| layer | batch | torch ms | pywino3d ms | speed-up |")
        lines.append("|---|---|---|---|---|")
        for r in results:
            if "torch_train" in r:
                lines.append(f"| {r['layer']} | {r['batch']} | {fmt_ms(r['torch_train'])} | "
                             f"{fmt_ms(r['ours_train'])} | {r['torch_train'] / r['ours_train']:.2f}× |")
    if memory:
        lines.append("")
        lines.append("Peak memory of one inference call (MiB above the inputs, separate process):")
        lines.append("")
        lines.append("| layer | batch | torch | pywino3d F(4³) | output size |")
        lines.append("|---|---|---|---|---|")
        for (name, batch), m in memory.items():
            lines.append(f"| {name} | {batch} | {m['torch']['extra_mib']:.0f} | {m['ours']['extra_mib']:.0f} | "
                         f"{m['ours']['output_mib']:.0f} |")
    return "\n".join(lines)


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 5))
    labels = [f"{r['layer']} b={r['batch']}" for r in results]
    series = [("F(2^3)", 1.0), ("F(4^3)", 1.0), ("F(4^3)", 0.5), ("F(4^3)", 0.25), ("auto", 1.0)]
    width = 0.8 / len(series)
    for i, (algo, dens) in enumerate(series):
        vals = []
        for r in results:
            row = next(x for x in r["rows"] if x["algo"] == algo and x["density"] == dens)
            vals.append(r["torch"] / row["time"])
        ax.bar(np.arange(len(results)) + (i - len(series) / 2 + 0.5) * width, vals, width,
               label=f"{algo} density {dens:g}" if algo != "auto" else "auto")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(np.arange(len(results)))
    ax.set_xticklabels(labels, fontsize=7, rotation=45, ha="right")
    ax.set_ylabel("speed-up over torch conv3d")
    ax.set_title("pywino3d on the CPU (float32, pre-transformed weights)")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", nargs="*", default=list(LAYERS))
    ap.add_argument("--batch", nargs="*", type=int, default=[1, 8])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--no-training", action="store_true")
    ap.add_argument("--memory", nargs="*", default=["c3d.conv3b"], help="layers whose peak memory is measured")
    ap.add_argument("--md", help="write the markdown report here")
    ap.add_argument("--json", help="write raw results here")
    ap.add_argument("--plot", help="write a PNG of the speed-ups here")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    peaks = machine_peaks(args.threads)
    print(json.dumps(peaks), flush=True)
    results = []
    for batch in args.batch:
        for name in args.layers:
            r = bench_layer(name, batch, args.repeat, args.threads, training=not args.no_training)
            results.append(r)
            rows = {(row["algo"], row["density"]): row for row in r["rows"]}
            print(f"{name} b={batch}: torch {fmt_ms(r['torch'])} ms, F(4^3) "
                  f"{fmt_ms(rows[('F(4^3)', 1.0)]['time'])} ms ({r['torch'] / rows[('F(4^3)', 1.0)]['time']:.2f}x), "
                  f"auto {rows[('auto', 1.0)]['tile']} {r['torch'] / rows[('auto', 1.0)]['time']:.2f}x", flush=True)
    memory = {}
    for name in args.memory:
        for batch in args.batch:
            memory[(name, batch)] = {"torch": peak_memory(name, batch, "torch"),
                                     "ours": peak_memory(name, batch, "ours")}
    text = report(results, peaks, args.threads, memory)
    print(text)
    if args.md:
        with open(args.md, "w") as f:
            f.write(f"<!-- generated by benchmarks/bench_cpu.py on {time.strftime('%Y-%m-%d')} -->\n")
            f.write(text + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"peaks": peaks, "results": results}, f, indent=1, default=str)
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
