"""Whole networks, converted with ``pywino3d.torch.convert_model`` against the
same networks unconverted (CPU, float32).

Networks (``benchmarks/nets3d.py``, random weights, nothing downloaded):
MONAI ``BasicUNet`` and ``UNet`` on 1x1x96^3 volumes, C3D, an R3D-18-like and
an R(2+1)D-18-like network on 3x16x112x112 clips.  For each network and batch
size:

* ``eval``: ``model.eval()`` forward under ``torch.no_grad()``;
* ``train``: a training step -- forward in train mode (BatchNorm batch
  statistics), a loss, backward, ``torch.optim.SGD`` step.

The converted copy is made with ``convert_model(copy, example_inputs=x)``
(every layer tuned: torch or a pywino3d tile, measured), then one warm-up call
per side and mode (which also tunes the training plans); after that the two
sides run alternately (A B, B A, ...) for ``--repeat`` rounds in this process.
Cells give median times and the median over rounds of the per-round ratio
torch / converted, so slow phases of a shared machine hit both sides.

Examples::

    python benchmarks/bench_models.py                      # everything (long on 2 cores)
    python benchmarks/bench_models.py --nets basicunet c3d --batch 1 --modes eval --repeat 3
    python benchmarks/bench_models.py --md docs/benchmarks.md --plot docs/speedup_models.png --json models.json

With ``--md`` the table replaces the block between the markers
``<!-- bench_models:start -->`` and ``<!-- bench_models:end -->`` of that file
(appended as a new section when the markers are absent).  The script clears
``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` for itself (it re-executes
itself without them).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import pathlib
import platform
import statistics
import sys
import time
import warnings

_BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
if any(v in os.environ for v in _BLAS_VARS) and __name__ == "__main__":
    env = {k: v for k, v in os.environ.items() if k not in _BLAS_VARS}
    os.execve(sys.executable, [sys.executable] + sys.argv, env)

import torch  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import md_blocks  # noqa: E402
import nets3d  # noqa: E402

from pywino3d.torch import Conv3d, conversion_summary, convert_model  # noqa: E402

START, END = "<!-- bench_models:start -->", "<!-- bench_models:end -->"


def loss_of(out):
    return out.float().square().mean()


def make_step(model, mode):
    if mode == "eval":
        def run(x):
            with torch.no_grad():
                model(x)
        return run
    opt = torch.optim.SGD(model.parameters(), lr=1e-6)

    def run(x):
        opt.zero_grad(set_to_none=True)
        loss_of(model(x)).backward()
        opt.step()
    return run


def _sync(x):
    if x.is_cuda:
        torch.cuda.synchronize(x.device)


def timed(fn, x):
    _sync(x)
    t0 = time.perf_counter()
    fn(x)
    _sync(x)
    return time.perf_counter() - t0


def bench(name, batch, modes, repeat, spatial=None, log=print, device="cpu"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref, shape = nets3d.build(name)
    if spatial is not None:
        shape = shape[:-3] + tuple(spatial)
    torch.manual_seed(1)
    x = torch.randn(batch, *shape).to(device)
    ref.to(device)
    ours = copy.deepcopy(ref)
    ours.eval()
    ref.eval()
    t0 = time.perf_counter()
    convert_model(ours, example_inputs=x)
    tune_s = time.perf_counter() - t0
    n_conv = sum(isinstance(m, Conv3d) for m in ours.modules())
    with torch.no_grad():
        y_ref, y = ref(x), ours(x)
    err = float((y - y_ref).norm() / y_ref.norm())
    rows = []
    for mode in modes:
        ref.train(mode == "train")
        ours.train(mode == "train")
        steps = {"torch": make_step(ref, mode), "pywino3d": make_step(ours, mode)}
        t0 = time.perf_counter()
        for side in ("torch", "pywino3d"):  # warm-up; tunes the training plans
            steps[side](x)
        warm_s = time.perf_counter() - t0
        times = {"torch": [], "pywino3d": []}
        for r in range(repeat):
            order = ("torch", "pywino3d") if r % 2 == 0 else ("pywino3d", "torch")
            for side in order:
                times[side].append(timed(steps[side], x))
        ratios = [a / b for a, b in zip(times["torch"], times["pywino3d"])]
        on_ours = sum(1 for rr in conversion_summary(ours) if rr[2] == ("train" if mode == "train" else "eval")
                      and not rr[3].startswith("torch"))
        n_plans = sum(1 for rr in conversion_summary(ours) if rr[2] in (mode, "-"))
        row = dict(net=name, input=f"{batch}x" + "x".join(map(str, shape)), batch=batch, mode=mode,
                   torch_ms=statistics.median(times["torch"]) * 1e3,
                   ours_ms=statistics.median(times["pywino3d"]) * 1e3,
                   speedup=statistics.median(ratios), spread=(min(ratios), max(ratios)),
                   layers=f"{on_ours}/{n_plans}", n_conv=n_conv, tune_s=tune_s, warm_s=warm_s,
                   rel_l2=err, rounds=repeat, device=_device_name(x.device),
                   threads=torch.get_num_threads() if x.device.type == "cpu" else 1,
                   command="python benchmarks/bench_models.py " + " ".join(sys.argv[1:]))
        rows.append(row)
        log(f"{name:10s} {row['input']:18s} {mode:5s} torch {row['torch_ms']:9.1f} ms  converted "
            f"{row['ours_ms']:9.1f} ms  x{row['speedup']:.2f} [{row['spread'][0]:.2f}, {row['spread'][1]:.2f}]  "
            f"pywino3d layers {row['layers']}  tune {tune_s:.0f}s  rel L2 {err:.1e}")
    summary = str(conversion_summary(ours))
    return rows, summary


def _device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def markdown(rows, args):
    commands = sorted({r.get("command", "") for r in rows} - {""})
    head = ["network", "input", "mode", "torch ms", "converted ms", "speed-up [min, max]",
            "layers on pywino3d", "rel L2"]
    out = [START, "", f"Measured {time.strftime('%Y-%m-%d')} on "
           f"{rows[0].get('device', platform.processor() or platform.machine()) if rows else ''}, "
           f"{rows[0].get('threads', torch.get_num_threads()) if rows else ''} threads, torch {torch.__version__}, "
           f"float32, {rows[0]['rounds'] if rows else args.repeat} alternating "
           "rounds per cell (median; speed-up = median of per-round torch/converted ratios, min and max over "
           "rounds). `eval` = forward under `no_grad`; `train` = forward + backward + SGD step. "
           "\"layers on pywino3d\" counts the distinct (layer, shape) decisions that chose a pywino3d tile. "
           "Commands: " + "; ".join(f"`{c}`" for c in commands) + ".", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        out.append(f"| {r['net']} | {r['input']} | {r['mode']} | {r['torch_ms']:.0f} | {r['ours_ms']:.0f} | "
                   f"{r['speedup']:.2f}× [{r['spread'][0]:.2f}, {r['spread'][1]:.2f}] | {r['layers']} | "
                   f"{r['rel_l2']:.1e} |")
    if args.plot:
        out += ["", f"![speed-up per network]({pathlib.Path(args.plot).name})"]
    out += ["", END]
    return "\n".join(out)


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['net']}\nb{r['batch']} {r['mode']}" for r in rows]
    sp = [r["speedup"] for r in rows]
    lo = [r["speedup"] - r["spread"][0] for r in rows]
    hi = [r["spread"][1] - r["speedup"] for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(rows) + 2), 4))
    colors = ["tab:blue" if r["mode"] == "eval" else "tab:orange" for r in rows]
    ax.bar(range(len(rows)), sp, yerr=[lo, hi], color=colors, capsize=3)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(range(len(rows)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("speed-up over torch (×)")
    where = rows[0].get("device", "CPU") if rows else "CPU"
    ax.set_title(f"convert_model, {where} float32\n(blue: eval forward, orange: training step)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nets", nargs="+", default=list(nets3d.NETS), choices=list(nets3d.NETS))
    ap.add_argument("--batch", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--modes", nargs="+", default=["eval", "train"], choices=["eval", "train"])
    ap.add_argument("--repeat", type=int, default=5, help="alternating rounds per cell")
    ap.add_argument("--spatial", nargs=3, type=int, default=None,
                    help="override the input's D H W (e.g. 64 64 64 for a quicker U-Net run)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu", help="torch device of both networks (cuda: CuPy backend, "
                    "CUDA-synchronised timing)")
    ap.add_argument("--md", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--plot", default=None)
    ap.add_argument("--summary", action="store_true", help="print each converted network's layer table")
    ap.add_argument("--from-json", default=None, help="render --md/--plot from the rows of an earlier run")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    if args.from_json:
        rows = json.loads(pathlib.Path(args.from_json).read_text())
        args.nets = []
    for name in args.nets:
        for batch in args.batch:
            r, summary = bench(name, batch, args.modes, args.repeat, args.spatial, device=args.device)
            rows += r
            if args.summary:
                print(summary, flush=True)
            if args.json:
                pathlib.Path(args.json).write_text(json.dumps(rows, indent=1))
    if args.plot:
        plot(rows, args.plot)
    if args.md:
        md_blocks.write_block(args.md, markdown(rows, args), START, END,
                               'Whole networks (`pywino3d.torch.convert_model`)')
    return rows


if __name__ == "__main__":
    main()
