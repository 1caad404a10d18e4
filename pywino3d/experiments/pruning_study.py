"""One-shot column pruning of a trained network: magnitude vs transform-aware + refit.

    python -m pywino3d experiment --pruning [--jobs 2]   # writes its own section of docs/experiments.md
    python -m pywino3d experiment --pruning --quick      # a smoke run

The protocol is the reproduction's (:mod:`.reproduction`, its
:meth:`~.reproduction.Config.v1`, the protocol of its published tables): per seed a fresh image split, training clips
and initialisation; the spatial network trained by the same function; every
model evaluated in eval mode after recalibrating BatchNorm on training clips;
the test set every held-out image in both directions.  The trained network is
converted to :class:`~pywino3d.torch.WinogradConv3d` layers and pruned one-shot
with :func:`pywino3d.torch.prune_model` (``scope="layer"``: every layer keeps
the same fraction of positions, so all methods do the same work) at each
density by

(a) magnitude l2 of U's columns;
(b) the transform-aware score on calibration clips (the output error of
    removing each position alone, measured on the layer's inputs);
(c) (b) with the least-squares refit on the calibration clips, layer after
    layer, each layer fitted to the unpruned network's output;
(w) the white-noise versions of (b) + refit, for comparison.

Test accuracy is measured before and after one short fine-tuning epoch.
The conv-layer time of the pruned network is measured against the dense one,
interleaved over several rounds.  Runs are per seed, resumable from the JSON.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import sys

import numpy as np

from .data import FRAMES, SIZE
from .runner import write_marked_section
from .stats import paired_test, summarize
from .training import accuracy, interleaved_conv_times, recalibrate_bn, train

#: (label, prune_model method, refit, calibrated)
METHODS = (("(a) magnitude l2", "l2", False, False),
           ("(b) transform-aware", "output", False, True),
           ("(c) transform-aware + refit", "output", True, True),
           ("(w) white-noise transform-aware + refit", "output", True, False))
BEGIN, END = "<!-- pruning-study:begin -->", "<!-- pruning-study:end -->"
TASK = "digit-direction"


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """Sizes of the pruning study on top of the reproduction's :class:`~.reproduction.Config`."""

    lr: float = None  # None: the rate the reproduction chose for "spatial" (its JSON), else 1e-2
    densities: tuple = (0.75, 0.5, 0.25)
    calib_clips: int = 64
    n_finetune: int = 256
    finetune_lr: float = 1e-3
    timing_rounds: int = 9
    timing_clips: int = 64

    @classmethod
    def quick(cls):
        return cls(densities=(0.5,), calib_clips=8, n_finetune=32, timing_rounds=2, timing_clips=4)


def _configs(quick):
    from .reproduction import Config

    return (Config.quick(), StudyConfig.quick()) if quick else (Config.v1(), StudyConfig())


def spatial_lr(cfg, reproduction_json):
    """(learning rate, where it came from): the reproduction's choice for the
    spatial family when ``reproduction_json`` holds a run of the same
    configuration, else 1e-2.

    Examples
    --------
    >>> from pywino3d.experiments.pruning_study import spatial_lr, _configs
    >>> spatial_lr(_configs(True)[0], None)
    (0.01, 'default (no reproduction results found)')
    """
    from .reproduction import chosen_lr

    if reproduction_json and os.path.exists(reproduction_json):
        with open(reproduction_json) as f:
            rep = json.load(f)
        try:
            if rep.get("config") == cfg.to_json():
                return chosen_lr(cfg, rep["runs"], "spatial"), "chosen for spatial by the reproduction's search"
        except KeyError:
            pass
    return 1e-2, "default (no reproduction results found)"


def run_seed(cfg, study, seed, threads=1, progress=None):
    """Every measurement of one seed (a JSON-able dict).

    Examples
    --------
    >>> from pywino3d.experiments.pruning_study import run_seed, _configs
    >>> rec = run_seed(*_configs(True), seed=0)  # doctest: +SKIP
    """
    import torch

    from pywino3d.torch import convert_model, prune_model
    from .models import make_model
    from .reproduction import _data

    torch.set_num_threads(threads)
    train_data = _data(cfg, seed, "train", TASK, cfg.n_train)
    test_data = _data(cfg, seed, "test", TASK)
    recal = train_data[0][:cfg.recal_clips]
    rng = np.random.default_rng([seed, 7])
    pick = rng.choice(len(train_data[0]), size=min(study.n_finetune, len(train_data[0])), replace=False)
    ft_data = (train_data[0][pick], train_data[1][pick])
    calib = torch.from_numpy(train_data[0][rng.choice(len(train_data[0]), size=study.calib_clips, replace=False)])
    spatial = make_model("spatial", seed=seed, channels=cfg.channels)
    train(spatial, train_data, epochs=cfg.epochs, lr=study.lr, batch=cfg.batch, seed=seed, progress=progress)
    recalibrate_bn(spatial, recal)
    dense = recalibrate_bn(convert_model(copy.deepcopy(spatial), weights="winograd", tile=cfg.tile), recal)
    rec = {"seed": seed, "spatial_acc": accuracy(spatial, test_data), "converted_acc": accuracy(dense, test_data),
           "runs": [], "timing": []}
    for density in study.densities:
        for label, method, refit, calibrated in METHODS:
            model = prune_model(copy.deepcopy(dense), density, method=method, refit=refit, scope="layer",
                                example_inputs=calib if calibrated else None)
            before = accuracy(recalibrate_bn(model, recal), test_data)
            train(model, ft_data, epochs=1, lr=study.finetune_lr, batch=cfg.batch, seed=seed, progress=progress)
            after = accuracy(recalibrate_bn(model, recal), test_data)
            rec["runs"].append({"density": density, "method": label, "before": before, "after": after})
        times = interleaved_conv_times({"dense": dense, "pruned": model}, test_data[0][:study.timing_clips],
                                       rounds=study.timing_rounds, seed=seed)
        ratio = np.asarray(times["dense"]) / np.asarray(times["pruned"])
        rec["timing"].append({"density": density, "dense_s": float(np.median(times["dense"])),
                              "pruned_s": float(np.median(times["pruned"])),
                              "speedup": float(np.median(ratio)),
                              "speedup_iqr": [float(q) for q in np.percentile(ratio, [25, 75])]})
    return rec


def _worker(args):
    cfg, study, seed = args
    return run_seed(cfg, study, seed, threads=1)


def run(*, quick=False, jobs=1, threads=None, out_md=None, out_png=None, out_json=None, fresh=False,
        progress=True):
    """Run (or resume) the study; returns the results dict (also written to ``out_json``).

    Seeds run one per process when ``jobs > 1`` (one thread each); finished
    seeds found in ``out_json`` under the same configuration are not rerun.

    Examples
    --------
    >>> from pywino3d.experiments.pruning_study import run
    >>> res = run(quick=True)  # doctest: +SKIP
    """
    from tqdm import tqdm

    cfg, study = _configs(quick)
    if study.lr is None:
        lr, source = spatial_lr(cfg, os.path.join(os.path.dirname(out_json), "experiment.json") if out_json else None)
        study = dataclasses.replace(study, lr=lr)
    else:
        source = "given"
    config = {"protocol": cfg.to_json(), "study": json.loads(json.dumps(dataclasses.asdict(study))),
              "quick": quick, "lr_source": source}
    results = {"config": config, "seeds": {}}
    if out_json and os.path.exists(out_json) and not fresh:
        with open(out_json) as f:
            old = json.load(f)
        if old.get("config") == config:
            results["seeds"] = old.get("seeds", {})
    for path in (out_md, out_png, out_json):
        if path and os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
    todo = [s for s in cfg.seeds if str(s) not in results["seeds"]]
    bar = tqdm(total=len(todo), desc="pruning study seeds", unit="seed", file=sys.stderr, disable=not progress)

    def done(seed, rec):
        results["seeds"][str(seed)] = rec
        if out_json:  # finished seeds survive an interrupted run
            _write_json(results, out_json)
        bar.update(1)

    if jobs > 1 and len(todo) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(min(jobs, len(todo)), mp_context=mp.get_context("spawn")) as pool:
            futs = {pool.submit(_worker, (cfg, study, s)): s for s in todo}
            for f in as_completed(futs):
                done(futs[f], f.result())
    else:
        for s in todo:
            done(s, run_seed(cfg, study, s, threads=threads or os.cpu_count() or 1))
    bar.close()
    text = report(results)
    print(text)
    if out_png:
        plot(results, out_png)
    if out_md:
        write_section(out_md, text)
    return results


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
    write_marked_section(path, text, BEGIN, END)


def _pct(values):
    s = summarize(values)
    return f"{100 * s.mean:.1f} ± {100 * s.sd:.1f} [{100 * s.lo:.1f}, {100 * s.hi:.1f}]"


def _runs(results):
    """Flat list of the runs of every seed, each with its seed."""
    return [dict(r, seed=int(s)) for s, rec in sorted(results["seeds"].items(), key=lambda kv: int(kv[0]))
            for r in rec["runs"]]


def _by_seed(results, density, method, phase):
    return [r[phase] for r in _runs(results) if r["density"] == density and r["method"] == method]


def verdict(name_a, name_b, a, b):
    """Words for the paired comparison of ``a`` with ``b`` (same seeds) that its 95 % interval supports.

    Examples
    --------
    >>> from pywino3d.experiments.pruning_study import verdict
    >>> verdict("(c)", "(a)", [0.60, 0.62, 0.65], [0.30, 0.37, 0.30])
    '(c) higher than (a) by 30.0 points, 95 % interval [17.6, 42.4] excludes 0 (paired t, p = 0.0091, n = 3)'
    >>> verdict("(c)", "(a)", [0.31, 0.30, 0.32], [0.30, 0.32, 0.31])[:45]
    'no difference shown between (c) and (a): mean'
    """
    r = paired_test(a, b)
    span = f"95 % interval [{100 * r.lo:.1f}, {100 * r.hi:.1f}]"
    tail = f"(paired t, p = {r.p:.2g}, n = {r.n})"
    if r.verdict == "higher":
        return f"{name_a} higher than {name_b} by {100 * r.diff:.1f} points, {span} excludes 0 {tail}"
    if r.verdict == "lower":
        return f"{name_a} lower than {name_b} by {-100 * r.diff:.1f} points, {span} excludes 0 {tail}"
    return f"no difference shown between {name_a} and {name_b}: mean {100 * r.diff:+.1f} points, {span} {tail}"


def report(results):
    """The Markdown section of the study.

    Examples
    --------
    >>> from pywino3d.experiments.pruning_study import report, _configs, METHODS
    >>> import dataclasses
    >>> cfg, study = _configs(True)
    >>> rec = lambda s: {"spatial_acc": 0.5, "converted_acc": 0.5,
    ...     "runs": [{"density": 0.5, "method": m[0], "before": 0.1 + s / 100, "after": 0.2} for m in METHODS],
    ...     "timing": [{"density": 0.5, "dense_s": 2.0, "pruned_s": 1.0, "speedup": 2.0, "speedup_iqr": [1.9, 2.1]}]}
    >>> res = {"config": {"protocol": cfg.to_json(), "study": dict(dataclasses.asdict(study), lr=0.01), "quick": True},
    ...        "seeds": {"0": rec(0), "1": rec(1)}}
    >>> "## One-shot pruning of a trained network" in report(res)
    True
    """
    cfg, study = results["config"]["protocol"], results["config"]["study"]
    seeds = sorted(results["seeds"], key=int)
    recs = [results["seeds"][s] for s in seeds]
    n = len(seeds)
    L = ["## One-shot pruning of a trained network (transform-aware score and refit)", ""]
    L.append("Generated by `python -m pywino3d experiment --pruning` from `experiment_pruning.json`"
             + (" — **a quick smoke run, not a result**." if results["config"]["quick"] else "."))
    L.append("")
    L.append(f"Protocol of the reproduction above: per seed a fresh image split, {cfg['n_train']} training "
             f"clips of 1×{FRAMES}×{SIZE}×{SIZE} and initialisation; the spatial network {tuple(cfg['channels'])} "
             f"(3×3×3 convolutions, batch norm, ReLU) trained {cfg['epochs']} epochs (Adam {study['lr']:g}, "
             f"{results['config'].get('lr_source', 'given')}; cosine); converted to F({cfg['tile']}³) `WinogradConv3d` layers and pruned one-shot by "
             "`pywino3d.torch.prune_model(..., scope=\"layer\")` (every layer keeps the same fraction of its "
             f"{(cfg['tile'] + 2) ** 3} positions, so every method does the same work). (b) and (c) use "
             f"`example_inputs=` {study['calib_clips']} training clips (calibration); (w) is (c) with the "
             "white-noise criteria (no data). Every model is evaluated in eval mode after recalibrating "
             f"BatchNorm on {cfg['recal_clips']} training clips, on the test set (every held-out image in both "
             f"directions), before and after one fine-tuning epoch over {study['n_finetune']} training clips "
             f"(Adam {study['finetune_lr']:g}, cosine). {n} seeds; mean ± sample std [95 % t interval of the "
             "mean], in %.")
    L.append("")
    L.append(f"Unpruned: spatial {_pct([r['spatial_acc'] for r in recs])}, converted "
             f"{_pct([r['converted_acc'] for r in recs])}.")
    L.append("")
    L.append("| density | method | before fine-tuning | after 1 epoch |")
    L.append("|---|---|---|---|")
    for d in study["densities"]:
        for label, *_ in METHODS:
            if n >= 2:
                L.append(f"| {d} | {label} | {_pct(_by_seed(results, d, label, 'before'))} | "
                         f"{_pct(_by_seed(results, d, label, 'after'))} |")
    L.append("")
    a, b, c, w = (m[0] for m in METHODS)
    L.append("Paired comparisons (same seed), with what their 95 % intervals support "
             "(target: (c) beats (a) at every density before fine-tuning and is no worse after it):")
    L.append("")
    for d in study["densities"]:
        for phase, name in (("before", "before fine-tuning"), ("after", "after one epoch")):
            parts = [verdict(x[:3], y[:3], _by_seed(results, d, x, phase), _by_seed(results, d, y, phase))
                     for x, y in ((c, a), (c, b), (c, w))]
            L.append(f"* density {d}, {name}: " + "; ".join(parts) + ".")
    L.append("")
    L.append(f"Measured conv-layer time (the four Winograd layers on {study['timing_clips']} test clips, dense "
             f"and pruned timed alternately over {study['timing_rounds']} rounds; column-sparse kernels; one "
             "thread per seed process):")
    L.append("")
    L.append("| density | dense ms | pruned ms | speed-up, median over seeds | per-seed interquartile range of "
             "the round ratios |")
    L.append("|---|---|---|---|---|")
    for d in study["densities"]:
        ts = [t for r in recs for t in r["timing"] if t["density"] == d]
        if ts:
            lo = min(t["speedup_iqr"][0] for t in ts)
            hi = max(t["speedup_iqr"][1] for t in ts)
            L.append(f"| {d} | {1e3 * np.median([t['dense_s'] for t in ts]):.1f} | "
                     f"{1e3 * np.median([t['pruned_s'] for t in ts]):.1f} | "
                     f"{np.median([t['speedup'] for t in ts]):.2f}× | {lo:.2f}–{hi:.2f}× |")
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

    study = results["config"]["study"]
    recs = list(results["seeds"].values())
    ds = study["densities"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, phase, title in ((axes[0], "before", "one-shot, before fine-tuning"),
                             (axes[1], "after", "after one fine-tuning epoch")):
        for label, *_ in METHODS:
            s = [summarize(_by_seed(results, d, label, phase)) for d in ds]
            ax.errorbar(ds, [100 * x.mean for x in s], yerr=[100 * x.half_width for x in s], marker="o",
                        capsize=3, label=label)
        ax.axhline(100 * np.mean([r["converted_acc"] for r in recs]), color="k", lw=0.8, ls="--",
                   label="unpruned")
        ax.set_xlabel("density (kept positions)")
        ax.set_ylabel("test accuracy % (mean, 95 % CI)")
        ax.set_title(title)
        ax.invert_xaxis()
        ax.legend(fontsize=7)
    axes[2].plot(ds, [np.median([t["speedup"] for r in recs for t in r["timing"] if t["density"] == d]) for d in ds],
                 marker="o")
    axes[2].axhline(1.0, color="k", lw=0.8)
    axes[2].set_xlabel("density (kept positions)")
    axes[2].set_ylabel("conv-layer speed-up over dense")
    axes[2].set_title(f"measured speed-up, F({results['config']['protocol']['tile']}³)")
    axes[2].invert_xaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
