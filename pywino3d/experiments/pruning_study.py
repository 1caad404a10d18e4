"""One-shot column pruning of a trained network: magnitude vs transform-aware + refit.

    python -m pywino3d experiment --pruning            # writes docs/experiments.md (own section)
    python -m pywino3d experiment --pruning --quick    # a smoke run

The spatially trained model of the reproduction (:mod:`.reproduction`: same
data, same network, same training function), converted to
:class:`~pywino3d.torch.WinogradConv3d` layers, is pruned one-shot with
:func:`pywino3d.torch.prune_model` (``scope="layer"``: every layer keeps the
same fraction of positions, so all methods do the same work) at each density
by (a) magnitude l2, (b) the transform-aware score, (c) the transform-aware
score with the least-squares refit; test accuracy (eval mode) is measured
before and after one short fine-tuning epoch, over several seeds (each seed
trains its own network and orders its own fine-tuning).  The conv-layer time
of the pruned network is measured against the dense one, interleaved.
"""
from __future__ import annotations

import copy
import json
import math
import os
import sys

import numpy as np

from .data import FRAMES, SIZE, moving_digits
from .models import CHANNELS, make_model
from .training import accuracy, conv_time, train

#: (label, prune_model method, refit)
METHODS = (("(a) magnitude l2", "l2", False),
           ("(b) transform-aware", "output", False),
           ("(c) transform-aware + refit", "output", True))
BEGIN, END = "<!-- pruning-study:begin -->", "<!-- pruning-study:end -->"

# two-sided 95 % Student t quantiles by degrees of freedom
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def summarize(values):
    """Mean, sample standard deviation and the half-width of the 95 % t interval.

    Examples
    --------
    >>> from pywino3d.experiments.pruning_study import summarize
    >>> m, s, h = summarize([0.5, 0.6, 0.7])
    >>> round(m, 3), round(s, 3), round(h, 3)
    (0.6, 0.1, 0.248)
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        return float(v.mean()), float("nan"), float("nan")
    s = float(v.std(ddof=1))
    return float(v.mean()), s, _T975.get(v.size - 1, 1.96) * s / math.sqrt(v.size)


def interleaved_speedup(dense, pruned, x, rounds=5):
    """Median conv-layer time of both models, measured alternately, and their ratio.

    Examples
    --------
    >>> from pywino3d.experiments.data import moving_digits
    >>> from pywino3d.experiments.models import make_model
    >>> from pywino3d.experiments.pruning_study import interleaved_speedup
    >>> m = make_model("vanilla")
    >>> td, tp, r = interleaved_speedup(m, m, moving_digits(2)[0], rounds=1)
    >>> td > 0 and tp > 0
    True
    """
    td, tp = [], []
    for _ in range(rounds):
        td.append(conv_time(dense, x, repeat=1))
        tp.append(conv_time(pruned, x, repeat=1))
    td, tp = float(np.median(td)), float(np.median(tp))
    return td, tp, td / tp


def run(*, quick=False, seeds=(0, 1, 2), epochs=8, n_train=1200, n_test=400, n_finetune=256,
        finetune_lr=1e-3, densities=(0.75, 0.5, 0.25), tile=2, timing_clips=16, threads=None, out_md=None,
        out_png=None, out_json=None):
    """Run the study; returns the results dict (also written to ``out_json``).

    The defaults train as the reproduction does (1200 clips, 8 epochs);
    ``threads`` sets torch's thread count (default: all cores).  Seeds are
    independent: ``run(seeds=(s,), ...)`` in separate processes and
    :func:`combine` give the same study.

    Examples
    --------
    >>> from pywino3d.experiments.pruning_study import run
    >>> res = run(quick=True)  # doctest: +SKIP
    """
    import torch
    from tqdm import tqdm

    from ..torch import convert_model, prune_model

    torch.set_num_threads(threads or os.cpu_count() or 1)
    for path in (out_md, out_png, out_json):
        if path and os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
    if quick:
        seeds, epochs, n_train, n_test, n_finetune, densities, timing_clips = (0, 1), 1, 64, 64, 32, (0.5,), 4
    train_data = moving_digits(n_train, seed=0, split="train")
    test_data = moving_digits(n_test, seed=0, split="test")
    steps = n_train // 32
    ft_steps = n_finetune // 32
    total = len(seeds) * (epochs * steps + len(densities) * len(METHODS) * ft_steps)
    prog = tqdm(total=total, desc="pruning study", unit="step", file=sys.stderr)
    config = dict(seeds=list(seeds), epochs=epochs, n_train=n_train, n_test=n_test, n_finetune=n_finetune,
                  finetune_lr=finetune_lr, densities=list(densities), tile=tile, timing_clips=timing_clips,
                  quick=quick)
    results = {"config": config, "dense": [], "runs": [], "timing": []}
    for seed in seeds:
        spatial = make_model("spatial", seed=seed)
        train(spatial, train_data, epochs=epochs, seed=seed, progress=prog)
        spatial.eval()
        dense = convert_model(copy.deepcopy(spatial), tile=tile).eval()
        results["dense"].append({"seed": seed, "spatial_acc": accuracy(spatial, test_data),
                                 "converted_acc": accuracy(dense, test_data)})
        # fine-tuning subset: its own clips, drawn per seed from the training data
        pick = np.random.default_rng([seed, 7]).choice(n_train, size=min(n_finetune, n_train), replace=False)
        ft_data = (train_data[0][pick], train_data[1][pick])
        for density in densities:
            for label, method, refit in METHODS:
                model = prune_model(copy.deepcopy(dense), density, method=method, refit=refit, scope="layer")
                before = accuracy(model.eval(), test_data)
                train(model.train(), ft_data, epochs=1, lr=finetune_lr, seed=seed, progress=prog)
                after = accuracy(model.eval(), test_data)
                results["runs"].append({"seed": seed, "density": density, "method": label,
                                        "before": before, "after": after})
            td, tp, ratio = interleaved_speedup(dense, model, test_data[0][:timing_clips])
            results["timing"].append({"seed": seed, "density": density, "dense_s": td, "pruned_s": tp,
                                      "speedup": ratio})
        if out_json:  # partial results survive an interrupted run
            _write_json(results, out_json)
    prog.close()
    text = report(results)
    print(text)
    if out_json:
        _write_json(results, out_json)
    if out_png:
        plot(results, out_png)
    if out_md:
        write_section(out_md, text)
    return results


def combine(parts):
    """Merge the results of runs over disjoint seeds (same configuration).

    Examples
    --------
    >>> from pywino3d.experiments.pruning_study import combine
    >>> a = {"config": {"seeds": [0]}, "dense": [1], "runs": [2], "timing": [3]}
    >>> b = {"config": {"seeds": [1]}, "dense": [4], "runs": [5], "timing": [6]}
    >>> combine([a, b])
    {'config': {'seeds': [0, 1]}, 'dense': [1, 4], 'runs': [2, 5], 'timing': [3, 6]}
    """
    out = {"config": dict(parts[0]["config"], seeds=[s for p in parts for s in p["config"]["seeds"]])}
    for key in ("dense", "runs", "timing"):
        out[key] = [r for p in parts for r in p[key]]
    return out


def _write_json(results, path):
    with open(path, "w") as f:
        json.dump(results, f, indent=1)


def write_section(path, text):
    """Replace this study's section of ``path`` (between markers), or append it.

    Examples
    --------
    >>> import os, tempfile
    >>> from pywino3d.experiments.pruning_study import write_section
    >>> p = os.path.join(tempfile.mkdtemp(), "e.md")
    >>> write_section(p, "one"); write_section(p, "two")
    >>> open(p).read().count("two"), open(p).read().count("one")
    (1, 0)
    """
    old = open(path).read() if os.path.exists(path) else ""
    block = f"{BEGIN}\n{text.rstrip()}\n{END}\n"
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        new = head + block + rest.split(END, 1)[1].lstrip("\n")
    else:
        new = (old.rstrip("\n") + "\n\n" if old else "") + block
    with open(path, "w") as f:
        f.write(new)


def _pct(m, s, h):
    return f"{100 * m:.1f} ± {100 * s:.1f} [{100 * (m - h):.1f}, {100 * (m + h):.1f}]"


def _paired(results, density, phase, a, c):
    """Per-seed differences c - a (same seed, same density)."""
    by = {(r["seed"], r["method"]): r[phase] for r in results["runs"] if r["density"] == density}
    seeds = sorted({s for s, _ in by})
    return [by[(s, c)] - by[(s, a)] for s in seeds if (s, a) in by and (s, c) in by]


def verdict(diffs):
    """Words for paired differences (c) - (a) that the 95 % t interval supports.

    Examples
    --------
    >>> from pywino3d.experiments.pruning_study import verdict
    >>> verdict([0.30, 0.25, 0.35])
    '(c) higher by 30.0 points, 95 % interval [17.6, 42.4] excludes 0'
    >>> verdict([0.05, -0.02, 0.01])[:36]
    'no difference shown: mean +1.3 point'
    """
    m, _, h = summarize(diffs)
    if len(diffs) < 2 or math.isnan(h):
        return f"one seed only, difference {100 * m:+.1f} points (no interval)"
    lo, hi = 100 * (m - h), 100 * (m + h)
    if lo > 0:
        return f"(c) higher by {100 * m:.1f} points, 95 % interval [{lo:.1f}, {hi:.1f}] excludes 0"
    if hi < 0:
        return f"(c) lower by {-100 * m:.1f} points, 95 % interval [{lo:.1f}, {hi:.1f}] excludes 0"
    return (f"no difference shown: mean {100 * m:+.1f} points, 95 % interval [{lo:.1f}, {hi:.1f}] "
            f"contains 0 (n = {len(diffs)})")


def report(results):
    """The Markdown section of the study.

    Examples
    --------
    >>> from pywino3d.experiments.pruning_study import report
    >>> res = {"config": dict(seeds=[0], epochs=1, n_train=64, n_test=64, n_finetune=32, finetune_lr=1e-3,
    ...        densities=[0.5], tile=2, timing_clips=8, quick=True),
    ...        "dense": [{"seed": 0, "spatial_acc": 0.5, "converted_acc": 0.5}],
    ...        "runs": [{"seed": 0, "density": 0.5, "method": m, "before": 0.1, "after": 0.2}
    ...                 for m in ("(a) magnitude l2", "(b) transform-aware", "(c) transform-aware + refit")],
    ...        "timing": [{"seed": 0, "density": 0.5, "dense_s": 2.0, "pruned_s": 1.0, "speedup": 2.0}]}
    >>> "## One-shot pruning of a trained network" in report(res)
    True
    """
    cfg = results["config"]
    n = len(cfg["seeds"])
    L = ["## One-shot pruning of a trained network (transform-aware score and refit)", ""]
    L.append("Generated by `python -m pywino3d experiment --pruning`"
             + (" — **a quick smoke run, not a result**." if cfg["quick"] else ".")
             + (f" {cfg['note']}" if cfg.get("note") else ""))
    L.append("")
    L.append(f"The reproduction's spatial network (4 conv layers {CHANNELS}, 3×3×3, batch norm, ReLU; "
             f"same data generator, {cfg['n_train']} training clips of 1×{FRAMES}×{SIZE}×{SIZE}, "
             f"{cfg['epochs']} epochs of Adam 3e-3) is trained per seed, converted to F({cfg['tile']}³) "
             f"`WinogradConv3d` layers and pruned one-shot by `pywino3d.torch.prune_model(..., "
             f"scope=\"layer\")` (every layer keeps the same fraction of its {(cfg['tile'] + 2) ** 3} positions). "
             f"Test accuracy on {cfg['n_test']} clips from unseen digit images, in eval mode, before and "
             f"after one fine-tuning epoch over {cfg['n_finetune']} training clips (Adam "
             f"{cfg['finetune_lr']:g}). {n} seeds (each trains its own network and orders its own "
             "fine-tuning); mean ± sample std [95 % t interval of the mean], in %.")
    L.append("")
    sp = summarize([d["spatial_acc"] for d in results["dense"]])
    cv = summarize([d["converted_acc"] for d in results["dense"]])
    L.append(f"Unpruned: spatial {_pct(*sp)}, converted {_pct(*cv)}.")
    L.append("")
    L.append("| density | method | before fine-tuning | after 1 epoch |")
    L.append("|---|---|---|---|")
    for d in cfg["densities"]:
        for label, _, _ in METHODS:
            rs = [r for r in results["runs"] if r["density"] == d and r["method"] == label]
            if not rs:
                continue
            L.append(f"| {d} | {label} | {_pct(*summarize([r['before'] for r in rs]))} | "
                     f"{_pct(*summarize([r['after'] for r in rs]))} |")
    L.append("")
    a, c = METHODS[0][0], METHODS[2][0]
    L.append("Paired difference (c) − (a), same seed (points; mean [95 % t interval]):")
    L.append("")
    L.append("| density | before fine-tuning | after 1 epoch |")
    L.append("|---|---|---|")
    for d in cfg["densities"]:
        cells = []
        for phase in ("before", "after"):
            diffs = _paired(results, d, phase, a, c)
            m, _, h = summarize(diffs)
            cells.append(f"{100 * m:+.1f} [{100 * (m - h):+.1f}, {100 * (m + h):+.1f}]"
                         f" (per seed: {', '.join(f'{100 * x:+.1f}' for x in diffs)})")
        L.append(f"| {d} | {cells[0]} | {cells[1]} |")
    L.append("")
    L.append("What the statistics support (target: (c) beats (a) at every density before fine-tuning "
             "and is no worse after it):")
    L.append("")
    for d in cfg["densities"]:
        words = []
        for phase, name in (("before", "before fine-tuning"), ("after", "after one epoch")):
            words.append(f"{name}: {verdict(_paired(results, d, phase, a, c))}")
        L.append(f"* density {d} — " + "; ".join(words) + ".")
    L.append("")
    L.append(f"Measured conv-layer time (all four Winograd layers, {cfg['timing_clips']} test clips, "
             "dense and pruned timed alternately, median of 5 rounds; column-sparse kernels):")
    L.append("")
    L.append("| density | dense ms | pruned ms | speed-up (median over seeds) |")
    L.append("|---|---|---|---|")
    for d in cfg["densities"]:
        ts = [t for t in results["timing"] if t["density"] == d]
        if ts:
            L.append(f"| {d} | {1e3 * np.median([t['dense_s'] for t in ts]):.1f} | "
                     f"{1e3 * np.median([t['pruned_s'] for t in ts]):.1f} | "
                     f"{np.median([t['speedup'] for t in ts]):.2f}× |")
    L.append("")
    L.append("![one-shot pruning](experiment_pruning.png)")
    L.append("")
    return "\n".join(L)


def plot(results, path):
    """Accuracy before/after fine-tuning against density, one line per method.

    Examples
    --------
    >>> from pywino3d.experiments.pruning_study import plot  # doctest: +SKIP
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = results["config"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, phase, title in ((axes[0], "before", "one-shot, before fine-tuning"),
                             (axes[1], "after", "after one fine-tuning epoch")):
        for label, _, _ in METHODS:
            ds, ms, hs = [], [], []
            for d in cfg["densities"]:
                vals = [r[phase] for r in results["runs"] if r["density"] == d and r["method"] == label]
                if vals:
                    m, _, h = summarize(vals)
                    ds.append(d)
                    ms.append(100 * m)
                    hs.append(0 if math.isnan(h) else 100 * h)
            ax.errorbar(ds, ms, yerr=hs, marker="o", capsize=3, label=label)
        cv = 100 * np.mean([d["converted_acc"] for d in results["dense"]])
        ax.axhline(cv, color="k", lw=0.8, ls="--", label="unpruned")
        ax.set_xlabel("density (kept positions)")
        ax.set_ylabel("test accuracy % (mean, 95 % CI)")
        ax.set_title(title)
        ax.invert_xaxis()
        ax.legend(fontsize=8)
    ds = cfg["densities"]
    axes[2].plot(ds, [np.median([t["speedup"] for t in results["timing"] if t["density"] == d]) for d in ds],
                 marker="o")
    axes[2].axhline(1.0, color="k", lw=0.8)
    axes[2].set_xlabel("density (kept positions)")
    axes[2].set_ylabel("conv-layer speed-up over dense")
    axes[2].set_title(f"measured speed-up, F({cfg['tile']}³)")
    axes[2].invert_xaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
