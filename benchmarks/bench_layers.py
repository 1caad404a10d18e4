"""Per-layer CPU benchmark over the 3-D networks people run.

Every distinct stride-1 convolution of MONAI ``BasicUNet`` and ``UNet``
(1x1x96^3 input), C3D, an R3D-18-like and an R(2+1)D-18-like network
(3x16x112x112 clips) is found by tracing the real networks (forward hooks on
the meta device: no computation, no weights downloaded), then timed at each
requested batch size against ``torch.nn.functional.conv3d``.

One command (see docs/benchmarks_layers.md)::

    python benchmarks/bench_layers.py --batch 1 2 --md docs/benchmarks_layers.md \\
        --json layers.json --plot docs/speedup_layers.png

A quick run (a few layers, one batch, three rounds)::

    python benchmarks/bench_layers.py --nets basicunet --match "1->32" "32->32" --batch 1 --repeat 3

``--list`` prints the layers and exits.  The script clears
``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` for itself only (it re-executes
itself without them, so every BLAS runs at full speed; the calling shell keeps
them); ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python ...`` does the
same by hand.

Columns (every one timed alternately with torch in the same process, once
per round, ``--repeat`` rounds after one warm-up call; cells give the median
time and the median over rounds of torch's time / the column's time in the
same round, so slow phases of a shared machine hit both sides):

* ``torch`` -- ``F.conv3d`` on NCDHW tensors (oneDNN, direct algorithm);
* ``torch CL`` -- the same with ``torch.channels_last_3d`` input and weights;
* ``direct`` -- pywino3d's direct path: ``winograd_conv3d`` with ``tile=1``;
* ``F(m)`` -- ``winograd_conv3d`` with pre-transformed weights U and tile m
  on every axis whose kernel extent is > 1 (1 elsewhere);
* ``auto`` -- one-shot ``pywino3d.conv3d(x, w, tile="auto")``, filter
  transform included;
* ``--pipelines P ...`` adds, for every tile column, the same call with
  ``pipeline=P`` (skipped with a note while the API has no such option);
  ``--tiles`` chooses the tiles.

For every pywino3d column the report adds the stage breakdown
(``pywino3d._backends.cpu.common.stage_timer``), the float32 relative L2 error
against a float64 torch convolution (first sample), and a roofline: the product's FLOPs at
the measured GEMM rate, and the bytes each stage must move (x, V, U, M, y) at
the measured copy bandwidth.  "staged" adds the three stages as if V and M
went through memory; "fused" is the bound of a pipeline that keeps V and M in
cache (only x, U and y move).  Machine peaks are measured in the same run.
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field

_BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
if any(v in os.environ for v in _BLAS_VARS) and __name__ == "__main__":
    env = {k: v for k, v in os.environ.items() if k not in _BLAS_VARS}
    os.execve(sys.executable, [sys.executable] + sys.argv, env)

import numpy as np  # noqa: E402

# ------------------------------------------------------------------ networks

NETS = ("basicunet", "unet", "c3d", "r3d", "r2plus1d")


def build_net(name):
    """(module, input shape) of one network (``nets3d.py``: random weights,
    nothing downloaded)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from nets3d import build

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net, shape = build(name)
    return net, (1, *shape)


@dataclass
class Layer:
    C: int
    K: int
    ksize: tuple
    spatial: tuple  # input D, H, W
    pads: tuple
    where: dict = field(default_factory=dict)  # net -> count

    @property
    def out(self):
        return tuple(s + 2 * p - r + 1 for s, p, r in zip(self.spatial, self.pads, self.ksize))

    @property
    def key(self):
        return (self.C, self.K, self.ksize, self.spatial, self.pads)

    @property
    def name(self):
        k = "x".join(map(str, self.ksize))
        s = self.spatial
        vol = f"{s[0]}³" if s[0] == s[1] == s[2] else "x".join(map(str, s))
        return f"C{self.C}->{self.K} k{k} @{vol}"

    def gflop(self, N):
        return 2.0 * N * self.C * self.K * math.prod(self.ksize) * math.prod(self.out) / 1e9


def trace_layers(nets, pointwise=False):
    """Distinct stride-1, dilation-1, groups-1 Conv3d shapes of the networks,
    in order of first appearance."""
    import torch

    found = {}
    for net_name in nets:
        net, shape = build_net(net_name)
        net = net.to("meta").eval()

        def hook(mod, inp, out, net_name=net_name):
            if (mod.stride != (1, 1, 1) or mod.dilation != (1, 1, 1) or mod.groups != 1
                    or not isinstance(mod.padding, tuple)):
                return
            if not pointwise and mod.kernel_size == (1, 1, 1):
                return
            lay = Layer(mod.in_channels, mod.out_channels, tuple(mod.kernel_size),
                        tuple(inp[0].shape[2:]), tuple(mod.padding))
            lay = found.setdefault(lay.key, lay)
            lay.where[net_name] = lay.where.get(net_name, 0) + 1

        handles = [m.register_forward_hook(hook) for m in net.modules() if type(m) is torch.nn.Conv3d]
        with torch.no_grad():
            net(torch.empty(shape, device="meta"))
        for h in handles:
            h.remove()
    return list(found.values())


# ------------------------------------------------------------------ columns

@dataclass
class Column:
    label: str
    kind: str  # "torch", "pre" (pre-transformed U), "oneshot"
    tile: tuple | None = None
    pipeline: str | None = None
    layout: str = "ncdhw"


def tile_for(m, ksize):
    return tuple(m if r > 1 else 1 for r in ksize)


def _accepts(fn, kwarg):
    try:
        return kwarg in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def make_columns(args):
    import pywino3d

    cols = [Column("torch", "torch")]
    if "torch_cl" in args.algos:
        cols.append(Column("torch CL", "torch", layout="cl"))
    pipelines = [None]
    for p in args.pipelines:
        if _accepts(pywino3d.winograd_conv3d, "pipeline"):
            pipelines.append(p)
        else:
            print(f"note: winograd_conv3d has no pipeline= option on this build; '{p}' skipped",
                  file=sys.stderr)
    for p in pipelines:
        sfx = "" if p is None else f" [{p}]"
        if "direct" in args.algos:
            cols.append(Column("direct" + sfx, "pre", 1, p))
        for m in args.tiles:
            cols.append(Column(f"F({m})" + sfx, "pre", m, p))
    if "auto" in args.algos:
        cols.append(Column("auto", "oneshot"))
    return cols


def column_fn(col, lay, x, w, xt, wt, threads):
    """A zero-argument callable for the column (its set-up -- the filter
    transform of pre-transformed columns -- done here, untimed)."""
    import torch
    import torch.nn.functional as F

    import pywino3d

    pad = lay.pads
    if col.kind == "torch":
        if col.layout == "cl":
            xt = xt.contiguous(memory_format=torch.channels_last_3d)
            wt = wt.contiguous(memory_format=torch.channels_last_3d)

        def run():
            with torch.no_grad():
                return F.conv3d(xt, wt, padding=pad)
        return run
    if col.kind == "oneshot":
        return lambda: pywino3d.conv3d(x, w, padding=pad, tile="auto", workers=threads)
    tile = tile_for(col.tile, lay.ksize)
    U = pywino3d.filter_transform(w, tile, workers=threads)
    kw = {} if col.pipeline is None else {"pipeline": col.pipeline}
    return lambda: pywino3d.winograd_conv3d(x, U, kernel_size=lay.ksize, tile=tile, padding=pad,
                                            workers=threads, **kw)


def auto_tile(x, w, pad, threads):
    """The tile conv3d(tile='auto') runs (its tuning decision, cached by the
    warm-up call), where the library says (best effort)."""
    try:
        from pywino3d._api import auto_tile as library_auto_tile

        return library_auto_tile(x, w, padding=pad, workers=threads)
    except Exception:  # the selection moved: not reported
        return None


# ------------------------------------------------------------------ peaks, roofline

def measure_peaks(threads):
    """GEMM GFLOP/s (best of BLAS through NumPy and torch, 2048^2 float32) and
    copy bandwidth (GB/s counted as bytes read + bytes written, 512 MiB)."""
    import torch

    n = 2048
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)
    at, bt = torch.from_numpy(a), torch.from_numpy(b)
    src = np.ones(2**27, np.float32)
    dst = np.empty_like(src)
    fns = {"numpy": lambda: np.matmul(a, b, out=c), "torch": lambda: torch.mm(at, bt),
           "copy": lambda: np.copyto(dst, src)}
    times = {k: [] for k in fns}
    for f in fns.values():
        f()
    for _ in range(5):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    flop = 2.0 * n**3
    return {"gemm_gflops": flop / min(med["numpy"], med["torch"]) / 1e9,
            "gemm_numpy_gflops": flop / med["numpy"] / 1e9, "gemm_torch_gflops": flop / med["torch"] / 1e9,
            "copy_gbs": 2 * src.nbytes / med["copy"] / 1e9, "threads": threads}


def roofline(lay, N, tile, peaks, itemsize=4):
    """Lower bounds (seconds) per stage for a tile (None: direct convolution)."""
    gemm, bw = peaks["gemm_gflops"] * 1e9, peaks["copy_gbs"] * 1e9
    bx = N * lay.C * math.prod(lay.spatial) * itemsize
    by = N * lay.K * math.prod(lay.out) * itemsize
    if tile is None:
        flop = lay.gflop(N) * 1e9
        bw_bytes = bx + by + lay.K * lay.C * math.prod(lay.ksize) * itemsize
        return {"total": max(flop / gemm, bw_bytes / bw)}
    alpha = [m + r - 1 for m, r in zip(tile, lay.ksize)]
    P = math.prod(alpha)
    T = N * math.prod(-(-o // m) for o, m in zip(lay.out, tile))
    bV, bM, bU = P * lay.C * T * itemsize, P * lay.K * T * itemsize, P * lay.K * lay.C * itemsize
    f_prod = 2.0 * P * lay.K * lay.C * T
    f_in = 2.0 * lay.C * T * P * sum(alpha)       # separable transform, one pass per axis
    f_out = 2.0 * lay.K * T * P * sum(alpha)
    r = {"input": max(f_in / gemm, (bx + bV) / bw),
         "product": max(f_prod / gemm, (bV + bM + bU) / bw),
         "output": max(f_out / gemm, (bM + by) / bw)}
    r["staged"] = r["input"] + r["product"] + r["output"]
    r["fused"] = max((f_prod + f_in + f_out) / gemm, (bx + by + bU) / bw)
    r["product_gflop"] = f_prod / 1e9
    return r


def attach_rooflines(r, peaks):
    """Roofline of every pywino3d column of one result (and the product's rate)."""
    lay = Layer(r["C"], r["K"], tuple(r["ksize"]), tuple(r["spatial"]), tuple(r["pads"]))
    r["roofline_direct"] = roofline(lay, r["batch"], None, peaks)["total"]
    for label, e in r["cols"].items():
        if label.startswith("torch") or not e.get("tile"):
            continue
        tile = tuple(e["tile"])
        if tile == (1, 1, 1):
            e["roofline"] = {"total": r["roofline_direct"]}
            continue
        e["roofline"] = roofline(lay, r["batch"], tile, peaks)
        prod = e.get("stages", {}).get("product")
        if prod:
            e["product_gflops"] = e["roofline"]["product_gflop"] / prod


# ------------------------------------------------------------------ one layer

def rel_l2(y, ref):
    y = np.asarray(y, dtype=np.float64)
    return float(np.linalg.norm(y - ref) / max(np.linalg.norm(ref), 1e-300))


def bench_layer(lay, N, cols, args, peaks):
    import torch
    import torch.nn.functional as F

    from pywino3d._backends.cpu.common import stage_timer

    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, lay.C, *lay.spatial), dtype=np.float32)
    w = (rng.standard_normal((lay.K, lay.C, *lay.ksize)) / math.sqrt(lay.C * math.prod(lay.ksize))
         ).astype(np.float32)
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    ref = None
    if args.accuracy:  # on the first sample: torch's float64 conv3d of a whole
        # 96^3 batch of 2 needs more than 23 GB (its im2col buffer)
        with torch.no_grad():
            ref = F.conv3d(xt[:1].double(), wt.double(), padding=lay.pads).numpy()
    res = {"layer": lay.name, "C": lay.C, "K": lay.K, "ksize": lay.ksize, "spatial": lay.spatial,
           "out": lay.out, "pads": lay.pads, "where": lay.where, "batch": N, "gflop": lay.gflop(N),
           "auto_tile": None, "cols": {}}
    fns = {}
    for col in cols:
        entry = res["cols"][col.label] = {"tile": None if col.tile is None else tile_for(col.tile, lay.ksize)}
        try:
            fn = column_fn(col, lay, x, w, xt, wt, args.threads)
            y = fn()  # warm-up (pages, caches, plans)
        except (MemoryError, ValueError, TypeError) as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
            continue
        if ref is not None and col.kind != "torch":
            entry["rel_l2"] = rel_l2(y[:1], ref)
        del y
        fns[col.label] = fn
    times = {k: [] for k in fns}
    for _ in range(args.repeat):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    t_torch = np.array(times["torch"])
    for k, ts in times.items():
        ts = np.array(ts)
        e = res["cols"][k]
        e["time"] = float(np.median(ts))
        e["ratio"] = float(np.median(t_torch / ts))  # paired per round
        e["times"] = ts.tolist()
    if "auto" in fns:  # after the warm-up: its tuning decision is cached
        res["auto_tile"] = auto_tile(x, w, lay.pads, args.threads)
        if res["auto_tile"]:
            res["cols"]["auto"]["tile"] = res["auto_tile"]
    if args.stages:
        for col in cols:
            if col.kind == "pre" and col.label in fns:
                with stage_timer() as st:
                    fns[col.label]()
                res["cols"][col.label]["stages"] = dict(st)
    attach_rooflines(res, peaks)
    return res


def bench_filter(K, C, tile, repeat, threads):
    """filter_transform (and its adjoint) of a K x C x 3^3 kernel against its
    memory-traffic bound: w read and U written at the copy bandwidth measured
    alternately in the same rounds (a copy of U's size into an existing array),
    and against a copy into a fresh array (page faults included, as for U)."""
    import pywino3d

    rng = np.random.default_rng(1)
    w = rng.standard_normal((K, C, 3, 3, 3)).astype(np.float32)
    U = pywino3d.filter_transform(w, tile, workers=threads)
    dst, into = np.empty_like(U), np.empty_like(U)
    fns = {"filter": lambda: pywino3d.filter_transform(w, tile, workers=threads),
           "filter out=": lambda: pywino3d.filter_transform(w, tile, out=into, workers=threads),
           "adjoint": lambda: pywino3d.filter_transform_backward(U, 3, tile, workers=threads),
           "copy": lambda: np.copyto(dst, U), "fresh copy": lambda: U.copy()}
    times = {k: [] for k in fns}
    for f in fns.values():
        f()
    for _ in range(repeat):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    bw = 2 * U.nbytes / med["copy"]
    bound = (w.nbytes + U.nbytes) / bw
    return {"K": K, "C": C, "tile": tile, "bytes": w.nbytes + U.nbytes, "copy_gbs": bw / 1e9,
            "bound": bound, "fresh_bound": med["fresh copy"] + w.nbytes / bw, **med}


def filter_report(rows):
    L = ["Filter transform (float32, 3³ kernels) against its memory-traffic bound: w read and U "
         "written at the copy bandwidth measured alternately in the same rounds; 'fresh' adds the "
         "page faults of a new U (a copy into a freshly allocated array); `out=` writes into an "
         "existing U:", "",
         "| K × C | tile | w + U MB | copy GB/s | bound ms | fresh bound ms | filter_transform ms | "
         "× fresh | with `out=` ms | × bound | adjoint ms | × bound |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        into = r.get("filter out=")  # absent from runs recorded before out= existed
        into_x = "–" if into is None else f"{into / r['bound']:.1f}×"
        L.append(f"| {r['K']} × {r['C']} | F({r['tile']}³) | {r['bytes'] / 1e6:.1f} | {r['copy_gbs']:.0f} | "
                 f"{ms(r['bound'])} | {ms(r['fresh_bound'])} | {ms(r['filter'])} | "
                 f"{r['filter'] / r['fresh_bound']:.1f}× | {ms(into)} | {into_x} | "
                 f"{ms(r['adjoint'])} | {r['adjoint'] / r['bound']:.1f}× |")
    return "\n".join(L)


# ------------------------------------------------------------------ report

def ms(t):
    return "–" if t is None else (f"{t * 1e3:.1f}" if t >= 0.01 else f"{t * 1e3:.2f}")


def geomean(v):
    v = [x for x in v if x and x > 0]
    return math.exp(sum(map(math.log, v)) / len(v)) if v else float("nan")


def ours(r):
    return {k: e for k, e in r["cols"].items() if not k.startswith("torch") and "time" in e}


def report(results, peaks, cols, args):
    labels = [c.label for c in cols if c.label != "torch"]
    L = []
    L.append(f"Machine: {os.cpu_count()} cores, {args.threads} threads for every library "
             f"(torch.set_num_threads, threadpoolctl, workers=); measured in this run: GEMM "
             f"{peaks.get('measured_gemm_gflops', peaks['gemm_gflops']):.0f} GFLOP/s (NumPy {peaks['gemm_numpy_gflops']:.0f}, torch "
             f"{peaks['gemm_torch_gflops']:.0f}; float32 2048²), copy bandwidth "
             f"{peaks.get('measured_copy_gbs', peaks['copy_gbs']):.0f} GB/s (read + write); best of a measurement before and after the layers "
             f"({peaks.get('minutes', 0):.0f} min). {args.repeat} rounds per layer; float32."
             + (f" Rooflines use {peaks['gemm_gflops']:.0f} GFLOP/s and {peaks['copy_gbs']:.0f} GB/s "
                "(given on the command line)." if args.peak_gflops or args.peak_gbs else ""))
    L.append("")
    L.append("| layer | in | out | N | GFLOP | torch ms | " + " | ".join(labels)
             + " | auto tile | roofline ms direct / F(4) fused |")
    L.append("|---" * (8 + len(labels)) + "|")
    for r in results:
        cells = []
        for lab in labels:
            e = r["cols"][lab]
            cells.append("fails" if "error" in e else f"{ms(e['time'])} ({e['ratio']:.2f}×)")
        t4 = tile_for(4, r["ksize"])
        fused = roofline(Layer(r["C"], r["K"], r["ksize"], r["spatial"], r["pads"]), r["batch"], t4,
                         peaks)["fused"]
        L.append(f"| {r['layer']} | {', '.join(f'{k}×{v}' for k, v in r['where'].items())} | "
                 f"{'x'.join(map(str, r['out']))} | {r['batch']} | {r['gflop']:.2f} | "
                 f"{ms(r['cols']['torch']['time'])} | " + " | ".join(cells)
                 + f" | {r['auto_tile'] if r['auto_tile'] else '?'} | "
                 f"{ms(r['roofline_direct'])} / {ms(fused)} |")
    L.append("")
    L.append("Cells: median ms and, in brackets, the median over rounds of torch's time divided by the "
             "column's time in the same round (> 1: faster than torch NCDHW). 'in' lists the networks "
             "and how many of their convolutions have this shape.")
    L.append("")
    # summaries
    L.append("| column | geometric-mean speed-up | min | max | layers ≥ 1.0× |")
    L.append("|---|---|---|---|---|")
    best = [max((e["ratio"] for e in ours(r).values()), default=None) for r in results]
    for lab in labels + ["best of pywino3d"]:
        v = best if lab == "best of pywino3d" else [r["cols"][lab].get("ratio") for r in results]
        v = [x for x in v if x]
        if v:
            L.append(f"| {lab} | {geomean(v):.2f}× | {min(v):.2f}× | {max(v):.2f}× | "
                     f"{sum(x >= 1.0 for x in v)}/{len(v)} |")
    L.append("")
    L.append("Stage breakdown of the pre-transformed columns (measured ms, one call under "
             "`stage_timer`) against the roofline (ms: product FLOPs at the GEMM peak, each stage's "
             "bytes at the copy bandwidth; 'fused' keeps V and M in cache), with the product's "
             "GFLOP/s and the float32 relative L2 error against float64 torch (first sample):")
    L.append("")
    L.append("| layer | N | column | ms | stages ms | roofline ms per stage | roofline staged / fused | "
             "product GFLOP/s | rel. L2 error |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        for lab, e in ours(r).items():
            st = e.get("stages", {})
            rf = e.get("roofline", {})
            stages = " / ".join(f"{k} {ms(v)}" for k, v in st.items()) or "–"
            per = " / ".join(ms(rf[k]) for k in ("input", "product", "output") if k in rf) or "–"
            tot = (f"{ms(rf['staged'])} / {ms(rf['fused'])}" if "staged" in rf
                   else ms(rf.get("total")))
            pg = f"{e['product_gflops']:.3g}" if "product_gflops" in e else "–"
            err = f"{e['rel_l2']:.1e}" if "rel_l2" in e else "–"
            L.append(f"| {r['layer']} | {r['batch']} | {lab} | {ms(e['time'])} | {stages} | {per} | {tot} | "
                     f"{pg} | {err} |")
    errs = [(r["layer"], lab, e["error"]) for r in results for lab, e in r["cols"].items() if "error" in e]
    if errs:
        L.append("")
        L.append("Columns that failed: " + "; ".join(f"{a} {b}: {c}" for a, b, c in errs))
    return "\n".join(L)


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    series = [("auto", "auto", "o"), ("best", "best of pywino3d", "^"), ("direct", "direct", "s"),
              ("torch CL", "torch channels_last_3d", "x")]
    for key, label, marker in series:
        chans, vols, ys, sizes = [], [], [], []
        for r in results:
            if key == "best":
                y = max((e["ratio"] for e in ours(r).values()), default=None)
            else:
                y = r["cols"].get(key, {}).get("ratio")
            if not y:
                continue
            chans.append(math.sqrt(r["C"] * r["K"]))
            vols.append(math.prod(r["out"]) * r["batch"])
            ys.append(y)
            sizes.append(20 + 10 * r["batch"])
        if ys:
            axes[0].scatter(chans, ys, marker=marker, s=sizes, label=label, alpha=0.75)
            axes[1].scatter(vols, ys, marker=marker, s=sizes, label=label, alpha=0.75)
    for ax, xl in zip(axes, ("channels √(C_in·C_out)", "output voxels × batch")):
        ax.set_xscale("log", base=2 if "channels" in xl else 10)
        ax.set_yscale("log", base=2)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xlabel(xl)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("speed-up over torch conv3d (NCDHW)")
    axes[0].legend(fontsize=8)
    fig.suptitle("pywino3d per layer, CPU, float32 (marker size: batch)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def save_json(path, peaks, args, results, frows):
    with open(path, "w") as f:
        json.dump({"peaks": peaks, "args": vars(args), "results": results, "filter": frows}, f,
                  indent=1, default=str)


def render(path, args):
    """Report and plot from a JSON file of this script (also a partial one)."""
    with open(path) as f:
        data = json.load(f)
    results, peaks = data["results"], data["peaks"]
    peaks.setdefault("measured_gemm_gflops", peaks["gemm_gflops"])
    peaks.setdefault("measured_copy_gbs", peaks["copy_gbs"])
    if args.peak_gflops:
        peaks["gemm_gflops"] = args.peak_gflops
    if args.peak_gbs:
        peaks["copy_gbs"] = args.peak_gbs
    for r in results:
        for k in ("ksize", "spatial", "out", "pads"):
            r[k] = tuple(r[k])
        if r.get("auto_tile"):
            r["auto_tile"] = tuple(r["auto_tile"])
        attach_rooflines(r, peaks)
    labels = list(results[0]["cols"]) if results else ["torch"]
    cols = [Column(lab, "torch" if lab.startswith("torch") else "pre") for lab in labels]
    keep = ("md", "plot", "peak_gflops", "peak_gbs")
    run = argparse.Namespace(**{**data["args"], **{k: v for k, v in vars(args).items() if k in keep}})
    text = report(results, peaks, cols, run)
    if data.get("filter"):
        text += "\n\n" + filter_report(data["filter"])
    return text, results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nets", nargs="+", default=list(NETS), choices=NETS)
    ap.add_argument("--match", nargs="*", default=[],
                    help="keep layers whose name (e.g. 'C32->32 k3x3x3 @96³') contains any of these")
    ap.add_argument("--pointwise", action="store_true", help="include 1x1x1 convolutions")
    ap.add_argument("--batch", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--repeat", type=int, default=5, help="timed rounds per layer (after one warm-up)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tiles", nargs="*", type=int, default=[2, 4, 6])
    ap.add_argument("--algos", nargs="*", default=["torch_cl", "direct", "auto"],
                    help="extra columns beside torch and the tiles: torch_cl, direct, auto")
    ap.add_argument("--pipelines", nargs="*", default=[],
                    help="also time every tile column with winograd_conv3d(..., pipeline=P)")
    ap.add_argument("--no-stages", dest="stages", action="store_false")
    ap.add_argument("--no-accuracy", dest="accuracy", action="store_false")
    ap.add_argument("--peak-gflops", type=float,
                    help="GEMM rate for the rooflines instead of the measured one (a busy machine)")
    ap.add_argument("--peak-gbs", type=float, help="copy bandwidth for the rooflines instead of the measured one")
    ap.add_argument("--filter", nargs="*", default=["256x256", "64x64"], metavar="KxC",
                    help="filter_transform shapes timed against their memory-traffic bound "
                         "(none: skip)")
    ap.add_argument("--from-json", help="render the report and plot of an earlier (or interrupted) run")
    ap.add_argument("--list", action="store_true", help="print the layers and exit")
    ap.add_argument("--md", help="write the markdown report here")
    ap.add_argument("--json", help="write raw results here")
    ap.add_argument("--plot", help="write a PNG of the speed-ups against channels and volume here")
    args = ap.parse_args(argv)

    if args.from_json:
        text, results = render(args.from_json, args)
        print(text)
        if args.md:
            with open(args.md, "w") as f:
                f.write(f"<!-- generated by benchmarks/bench_layers.py --from-json on {time.strftime('%Y-%m-%d')} -->\n")
                f.write(text + "\n")
        if args.plot:
            plot(results, args.plot)
        return

    import torch
    from threadpoolctl import threadpool_limits

    layers = trace_layers(args.nets, args.pointwise)
    if args.match:
        layers = [lay for lay in layers if any(m in lay.name for m in args.match)]
    if args.list:
        for lay in layers:
            print(f"{lay.name:30s} out {'x'.join(map(str, lay.out)):12s} pad {lay.pads} in {lay.where}")
        return
    torch.set_num_threads(args.threads)
    results = []
    with threadpool_limits(limits=args.threads):
        peaks = measure_peaks(args.threads)
        print(json.dumps(peaks), flush=True)
        t_start = time.perf_counter()
        cols = make_columns(args)
        for N in args.batch:
            for lay in layers:
                r = bench_layer(lay, N, cols, args, peaks)
                results.append(r)
                summary = ", ".join(f"{k} {e['ratio']:.2f}x" for k, e in r["cols"].items()
                                    if "ratio" in e and k != "torch")
                print(f"{lay.name} N={N}: torch {ms(r['cols']['torch']['time'])} ms; {summary}", flush=True)
                if args.json:  # partial results survive an interrupted run (--from-json renders them)
                    save_json(args.json, peaks, args, results, [])
        # peaks again at the end: on a shared machine the best of the two is
        # the better estimate of what the hardware can do (rooflines use it)
        end = measure_peaks(args.threads)
        peaks_runs = [dict(peaks), end]
        for k in ("gemm_gflops", "gemm_numpy_gflops", "gemm_torch_gflops", "copy_gbs"):
            peaks[k] = max(peaks[k], end[k])
        peaks["runs"] = peaks_runs
        peaks["minutes"] = (time.perf_counter() - t_start) / 60
        peaks["measured_gemm_gflops"], peaks["measured_copy_gbs"] = peaks["gemm_gflops"], peaks["copy_gbs"]
        if args.peak_gflops:
            peaks["gemm_gflops"] = args.peak_gflops
        if args.peak_gbs:
            peaks["copy_gbs"] = args.peak_gbs
        for r in results:  # with the final peaks
            attach_rooflines(r, peaks)
        frows = []
        for shape in args.filter:
            K, C = (int(v) for v in shape.split("x"))
            for m in args.tiles:
                frows.append(bench_filter(K, C, m, args.repeat, args.threads))
                print(f"filter {shape} F({m}): {ms(frows[-1]['filter'])} ms, bound {ms(frows[-1]['bound'])} ms",
                      flush=True)
    text = report(results, peaks, cols, args)
    if frows:
        text += "\n\n" + filter_report(frows)
    print(text)
    if args.md:
        with open(args.md, "w") as f:
            f.write(f"<!-- generated by benchmarks/bench_layers.py on {time.strftime('%Y-%m-%d')}: "
                    f"{' '.join(sys.argv[1:])} -->\n")
            f.write(text + "\n")
    if args.json:
        save_json(args.json, peaks, args, results, frows)
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
