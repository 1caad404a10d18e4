"""Column-sparse speed against density (issue 29, "Pruning that pays").

For each layer of the issue's table (batch 1, float32, cached U), the kept
columns come from ``select_columns(column_importance(U), density)`` (the free
choice a new user makes), and ``winograd_conv3d`` (and, with ``--backward``,
``winograd_conv3d_backward``) is timed at densities 1, 0.75, 0.5, 0.25 and
0.125; ``"lines"`` rows keep the same scores in the fewest transform lines
(``select_columns(..., structure="lines")``).  Every density of a layer is timed once per round, the densities
alternating inside the round after one warm-up call each, so slow phases of
a shared machine hit all of them; a cell is the median over rounds of
(dense time / sparse time) in the same round.  ``model`` is the same ratio
predicted by :func:`pywino3d.column_cost` (multiply-adds of both transforms
and the product; the dense transforms of F(2..6, 3) run constant code that
does fewer, so the model flatters dense there).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        python benchmarks/bench_sparse.py --threads 2 --rounds 5 --md sparse.md

``--quick`` runs three rounds of the forward pass on the two smallest
layers.  ``--columns FILE`` saves the kept sets (or reads them, so that an
older build times the same sets).  The script clears ``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` for
itself only (it re-executes itself without them).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

_BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
if any(v in os.environ for v in _BLAS_VARS) and __name__ == "__main__":
    env = {k: v for k, v in os.environ.items() if k not in _BLAS_VARS}
    os.execve(sys.executable, [sys.executable] + sys.argv, env)

import numpy as np  # noqa: E402

import pywino3d  # noqa: E402

#: (name, C, K, (D, H, W), tile) -- the issue's table, 3x3x3 kernels, padding 1.
LAYERS = (
    ("C3D conv3b C256->256 8x28x28", 256, 256, (8, 28, 28), 4),
    ("C3D conv3b C256->256 8x28x28", 256, 256, (8, 28, 28), 2),
    ("C3D conv2a C64->128 16x56x56", 64, 128, (16, 56, 56), 4),
    ("U-Net C32->32 64^3", 32, 32, (64, 64, 64), 4),
    ("U-Net C64->64 32^3", 64, 64, (32, 32, 32), 4),
)
QUICK = (LAYERS[4], LAYERS[3])
DENSITIES = (1.0, 0.75, 0.5, 0.25, 0.125)


SELECTIONS = ("free", "lines")


def columns_for(U, density, selection):
    """The importance-ordered choice (None: dense): ``"free"`` the highest
    scores, ``"lines"`` the same scores in the fewest transform lines."""
    if density >= 1:
        return None
    scores = pywino3d.column_importance(U)
    if selection == "free":
        return pywino3d.select_columns(scores, density)
    return pywino3d.select_columns(scores, density, structure=selection)


def model_speedup(cols, tile, C, K):
    """(model's dense / sparse multiply-adds, kept, used w lines, used (h, w)
    lines); NaN for the model on a build without ``column_cost``."""
    a = tile + 2  # alpha of F(tile, 3)
    P = a ** 3
    kept = np.arange(P) if cols is None else np.asarray(cols)
    rem = kept % (a * a)
    lines = (kept.size, np.unique(rem % a).size, np.unique(rem).size)
    if not hasattr(pywino3d, "column_cost"):  # an older build, timed for comparison
        return (float("nan"),) + lines
    dense = pywino3d.column_cost(None, 3, tile, in_channels=C, out_channels=K)
    c = pywino3d.column_cost(cols, 3, tile, in_channels=C, out_channels=K)
    return (dense.fma / c.fma,) + lines


def bench_layer(layer, densities, rounds, threads, backward, selection, saved, seed=0):
    """Rows of one layer; ``saved``: {key: kept list} read (an older build
    without the selection times the same sets) and filled."""
    name, C, K, shape, tile = layer
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, C, *shape)).astype(np.float32)
    w = (rng.standard_normal((K, C, 3, 3, 3)) / np.sqrt(27 * C)).astype(np.float32)
    U = pywino3d.filter_transform(w, tile)
    cols = {}
    for d in densities:
        key = f"{name} F({tile}) {selection} {d:g}"
        if key in saved:
            cols[d] = None if saved[key] is None else np.asarray(saved[key], np.int64)
        else:
            cols[d] = columns_for(U, d, selection)
            saved[key] = None if cols[d] is None else cols[d].tolist()
    gy = rng.standard_normal((1, K, *shape)).astype(np.float32) if backward else None

    def fwd(d):
        return lambda: pywino3d.winograd_conv3d(x, U, kernel_size=3, tile=tile, padding=1,
                                                columns=cols[d], workers=threads)

    def bwd(d):
        return lambda: pywino3d.winograd_conv3d_backward(gy, x, U, kernel_size=3, tile=tile, padding=1,
                                                         columns=cols[d], workers=threads)

    passes = [("forward", fwd)] + ([("backward", bwd)] if backward else [])
    rows = []
    for pname, make in passes:
        calls = {d: make(d) for d in densities}
        for f in calls.values():  # warm-up: plans, workspace, tuner caches
            f()
        times = {d: [] for d in densities}
        for r in range(rounds):
            order = densities if r % 2 == 0 else densities[::-1]
            for d in order:
                t0 = time.perf_counter()
                calls[d]()
                times[d].append(time.perf_counter() - t0)
        for d in densities:
            ratios = [td / ts for td, ts in zip(times[1.0], times[d])] if 1.0 in times else [float("nan")]
            ms, kept, lw, lhw = model_speedup(cols[d], tile, C, K)
            rows.append({"layer": name, "tile": tile, "pass_": f"{pname}, {selection}", "density": d, "kept": kept,
                             "lines_w": lw, "lines_hw": lhw,
                             "ms": 1e3 * statistics.median(times[d]), "speedup": statistics.median(ratios),
                             "model": ms})
    return rows


def markdown(rows, densities):
    out = ["| layer (batch 1) | tile | pass | " + " | ".join(f"d = {d:g}" for d in densities) + " |",
           "|---|---|---|" + "---|" * len(densities)]
    keys = []
    for r in rows:
        k = (r["layer"], r["tile"], r["pass_"])
        if k not in keys:
            keys.append(k)
    for k in keys:
        cells = []
        for d in densities:
            r = next(r for r in rows if (r["layer"], r["tile"], r["pass_"]) == k and r["density"] == d)
            if d >= 1:
                cells.append(f"{r['ms']:.1f} ms")
            else:
                cells.append(f"{r['speedup']:.2f}x (model {r['model']:.2f}x; w {r['lines_w']}, hw {r['lines_hw']})")
        out.append(f"| {k[0]} | F({k[1]}^3) | {k[2]} | " + " | ".join(cells) + " |")
    out.append("| ideal (work ∝ density) | | | " + " | ".join(
        "1x" if d >= 1 else f"{1 / d:.2f}x" for d in densities) + " |")
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--backward", action="store_true", help="time winograd_conv3d_backward too")
    p.add_argument("--quick", action="store_true", help="three rounds, forward, the two smallest layers")
    p.add_argument("--layers", type=int, nargs="*", default=None, help="indices into LAYERS")
    p.add_argument("--densities", type=float, nargs="*", default=list(DENSITIES))
    p.add_argument("--selections", nargs="*", default=list(SELECTIONS), choices=SELECTIONS)
    p.add_argument("--columns", help="JSON file of the kept sets: read if it exists (so that a build "
                   "without a selection times the same sets), else written")
    p.add_argument("--md", help="write the markdown table here")
    p.add_argument("--json", help="write the rows here")
    a = p.parse_args(argv)
    densities = tuple(sorted(set(a.densities) | {1.0}, reverse=True))
    if any(not 0 < d <= 1 for d in densities):
        p.error("--densities: each must be in (0, 1]")
    if a.quick:
        layers, rounds, backward = QUICK, 3, False
    else:
        layers = LAYERS if a.layers is None else tuple(LAYERS[i] for i in a.layers)
        rounds, backward = a.rounds, a.backward
    saved = {}
    if a.columns and os.path.exists(a.columns):
        with open(a.columns) as f:
            saved = json.load(f)
    rows = []
    for layer in layers:
        for sel in a.selections:
            new = bench_layer(layer, densities, rounds, a.threads, backward, sel, saved)
            rows += new
            print(markdown(new, densities), flush=True)
    if a.columns and not os.path.exists(a.columns):
        with open(a.columns, "w") as f:
            json.dump(saved, f)
    table = markdown(rows, densities)
    print()
    print(f"pywino3d {pywino3d.__version__} from {os.path.dirname(pywino3d.__file__)}; "
          f"{a.threads} threads, {rounds} rounds, medians")
    print(table)
    if a.md:
        with open(a.md, "w") as f:
            f.write(table + "\n")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
