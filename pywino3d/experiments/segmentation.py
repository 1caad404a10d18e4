"""3-D segmentation study: pruned Winograd networks against the honest alternative, a thinner network.

    python -m pywino3d experiment --segmentation [--jobs 2]        # pass "a", writes docs/
    python -m pywino3d experiment --segmentation --pass-name b ...  # a second pass on another machine setup
    python -m pywino3d experiment --segmentation --quick            # a smoke run

Task: :mod:`.volumes` (tall and flat ellipsoids in noise; only the extent
along depth tells the classes apart).  Metric: Dice of the two object
classes (:func:`.volumes.dice_scores`, MONAI's ``DiceMetric``), mean over
the test volumes; "Dice" alone is the mean of the two classes.

Models: MONAI's ``BasicUNet`` (features ``(w, w, 2w, 4w, 8w, w)``, instance
norm, LeakyReLU), trained with the shared loop of :mod:`.training` (Adam,
cosine decay, voxel-wise cross-entropy):

* ``spatial``: width ``w``, torch convolutions (the user's recipe);
* ``lowrank``: the same network with every 3×3×3 convolution a
  :class:`~pywino3d.torch.LowRankWinogradConv3d` from the start (the paper's
  recipe; the final 1×1×1 classifier stays spatial everywhere);
* ``thin-<w'>``: the honest alternative, width ``w' < w``, trained from scratch
  for the start model's epochs plus the fine-tuning epochs (the pruned
  networks' total budget);
* ``slice2d``: a 2-D ``BasicUNet`` of width ``w`` applied slice by slice (the
  baseline showing the task needs 3-D context).

Pruning: each start model (``spatial`` converted to
:class:`~pywino3d.torch.WinogradConv3d`, and ``lowrank``) is pruned one-shot
by :func:`pywino3d.torch.prune_model` (``scope="layer"``) at each density,
"calibrated" (``method="output"`` with ``example_inputs=`` training volumes;
with the least-squares refit for the converted network, without for the
low-rank one, which cannot take it) and "magnitude" (l2 of the columns, no
refit, the control); scored before and after a fine-tune of
``finetune_epochs``, beside a dense control fine-tuned the same.

Robustness: learning rates are chosen per family on several tuning seeds
(:func:`.stats.choose_lr`, margin reported); every run is repeated in a second
*pass* under another machine-level setup (another build of the kernels, e.g.
the forced 16-lane ``WINO_FORCE_VBYTES=64``, and another thread count); the
report calls a verdict robust only where both passes give it.  Each pass has
its own JSON (``experiment_segmentation.json`` for pass "a",
``experiment_segmentation.<name>.json`` otherwise), written after every run,
so an interrupted pass resumes.
"""
from __future__ import annotations

import dataclasses
import functools
import glob
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass

import numpy as np

from .runner import ResultCache, describe_machine, machine, run_phases, set_threads, write_marked_section
from .stats import agreement, choose_lr, paired_test, summarize
from .training import interleaved_forward_times, predict, train
from .volumes import CLASS_NAMES, NCLASS, dice_scores, ellipsoid_volumes

BEGIN, END = "<!-- segmentation-study:begin -->", "<!-- segmentation-study:end -->"
FAMILIES = ("spatial", "lowrank")
STARTS = ("spatial", "lowrank")
METHODS = ("calibrated", "magnitude")


@dataclass(frozen=True)
class SegConfig:
    """Sizes of the segmentation study; the defaults are the published run."""

    seeds: tuple = (0, 1, 2, 3, 4)
    tune_seeds: tuple = (1000, 1001)
    lr_grid: tuple = (3e-3, 1e-2, 3e-2)
    shape: tuple = (32, 32, 32)
    radius: tuple = (2.5, 4.5)
    n_train: int = 64
    n_val: int = 8
    n_test: int = 16
    epochs: int = 8
    batch: int = 2
    width: int = 8
    thin_widths: tuple = (5, 6, 7)
    rank: int = 16
    tile: int = 2
    densities: tuple = (0.75, 0.5, 0.25)
    calib_volumes: int = 2
    starts: tuple = STARTS
    finetune_epochs: int = 1
    finetune_lr_scale: float = 0.3
    timing_size: int = 96
    timing_rounds: int = 5

    def __post_init__(self):
        if len(self.seeds) < 2 or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: need at least 2 distinct seeds for intervals, got {self.seeds!r}")
        if not self.tune_seeds or not self.lr_grid:
            raise ValueError("tune_seeds, lr_grid: need at least one tuning seed and one learning rate")
        if not self.thin_widths or not all(1 <= w < self.width for w in self.thin_widths):
            raise ValueError(f"thin_widths: expected widths in [1, width={self.width}), got {self.thin_widths!r}")
        if not self.densities or not all(0 < d < 1 for d in self.densities):
            raise ValueError(f"densities: expected values in (0, 1), got {self.densities!r}")
        if not self.starts or not set(self.starts) <= set(STARTS):
            raise ValueError(f"starts: expected a subset of {STARTS}, got {self.starts!r}")

    @classmethod
    def quick(cls):
        """A smoke-test configuration (seconds)."""
        return cls(seeds=(0, 1), tune_seeds=(1000,), lr_grid=(1e-2,),
                   n_train=2, n_val=1, n_test=1, epochs=1, batch=2, width=2, thin_widths=(1,), rank=4,
                   densities=(0.5,), calib_volumes=1, starts=("lowrank",), timing_size=32, timing_rounds=2)

    def to_json(self):
        return json.loads(json.dumps(dataclasses.asdict(self)))


# ------------------------------------------------------------------ models
def features(width):
    """BasicUNet features of width ``width``: (w, w, 2w, 4w, 8w, w)."""
    return (width, width, 2 * width, 4 * width, 8 * width, width)


def make_slice_net(width, seed):
    """A 2-D BasicUNet applied to every depth slice of a (n, 1, d, h, w) volume on its own.

    Examples
    --------
    >>> import torch
    >>> from pywino3d.experiments.segmentation import make_slice_net
    >>> make_slice_net(2, 0)(torch.zeros(1, 1, 32, 32, 32)).shape
    torch.Size([1, 3, 32, 32, 32])
    """
    import torch
    from monai.networks.nets import BasicUNet

    class PerSlice(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            n, c, d, h, w = x.shape
            y = self.net(x.permute(0, 2, 1, 3, 4).reshape(n * d, c, h, w))
            return y.reshape(n, d, -1, h, w).permute(0, 2, 1, 3, 4)

    torch.manual_seed(seed)
    return PerSlice(BasicUNet(spatial_dims=2, in_channels=1, out_channels=NCLASS, features=features(width)))


def convert_3x3x3(model, weights, *, tile=2, rank=None):
    """Convert every 3×3×3 ``nn.Conv3d`` of ``model`` with :func:`pywino3d.torch.convert_model`, in place.

    Other convolutions (the 1×1×1 classifier) stay spatial: dropping
    Winograd positions of a 1×1×1 kernel would drop output voxels.

    Examples
    --------
    >>> from pywino3d.experiments.segmentation import convert_3x3x3, make_unet
    >>> m = convert_3x3x3(make_unet(2, 0), "winograd")
    >>> type(m.conv_0.conv_0.conv).__name__, type(m.final_conv).__name__
    ('WinogradConv3d', 'Conv3d')
    """
    from torch import nn

    from pywino3d.torch import convert_model

    for name, child in list(model.named_modules()):
        if type(child) is nn.Conv3d and tuple(child.kernel_size) == (3, 3, 3):
            parent, _, attr = name.rpartition(".")
            wrapped = convert_model(nn.Sequential(child), weights=weights, tile=tile, rank=rank)
            setattr(model.get_submodule(parent) if parent else model, attr, wrapped[0])
    return model


def make_unet(width, seed, *, kind="spatial", rank=16, tile=2):
    """A 3-D BasicUNet of ``width`` (``kind`` "spatial" or "lowrank"), seeded.

    Examples
    --------
    >>> import torch
    >>> from pywino3d.experiments.segmentation import make_unet
    >>> make_unet(2, 0, kind="lowrank", rank=4)(torch.zeros(1, 1, 32, 32, 32)).shape
    torch.Size([1, 3, 32, 32, 32])
    """
    import torch
    from monai.networks.nets import BasicUNet

    if kind not in FAMILIES:
        raise ValueError(f"kind: expected one of {FAMILIES}, got {kind!r}")
    torch.manual_seed(seed)
    net = BasicUNet(spatial_dims=3, in_channels=1, out_channels=NCLASS, features=features(width))
    if kind == "lowrank":
        convert_3x3x3(net, "lowrank", tile=tile, rank=rank)
    return net


# ------------------------------------------------------------------ data and scores
def _data(cfg, seed, split, n):
    return ellipsoid_volumes(n, seed=seed, split=split, shape=cfg.shape, radius=cfg.radius)


def evaluate(model, data, batch=4):
    """Dice of ``model`` on ``data`` = (x, y): {"dice": mean, "classes": [per class]} (eval mode).

    Examples
    --------
    >>> from pywino3d.experiments.segmentation import evaluate, make_unet, SegConfig, _data
    >>> r = evaluate(make_unet(2, 0), _data(SegConfig.quick(), 0, "test", 2))
    >>> sorted(r), len(r["classes"])
    (['classes', 'dice'], 2)
    """
    pred = predict(model, data[0], batch).argmax(1)
    d = dice_scores(pred, data[1])
    return {"dice": float(d.mean()), "classes": [float(v) for v in d.mean(0)]}


# ------------------------------------------------------------------ plan
def plan(cfg):
    """The runs of one pass, as phases of (key, spec).

    Examples
    --------
    >>> from pywino3d.experiments.segmentation import SegConfig, plan
    >>> [len(p) for p in plan(SegConfig.quick())]
    [2, 8, 6]
    """
    tune = [(f"tune/{f}/lr={lr:g}/tune={t}", {"type": "tune", "kind": f, "lr": lr, "seed": t})
            for f in FAMILIES for lr in cfg.lr_grid for t in cfg.tune_seeds]
    models = ["spatial", "lowrank", "slice2d"] + [f"thin-{w}" for w in cfg.thin_widths]
    trains = [(f"train/{m}/seed={s}", {"type": "train", "model": m, "seed": s}) for s in cfg.seeds for m in models]
    prunes = []
    for s in cfg.seeds:
        for start in cfg.starts:
            prunes.append((f"prune/{start}/dense/d=1/seed={s}",
                           {"type": "prune", "start": start, "method": "dense", "density": 1.0, "seed": s}))
            for d in cfg.densities:
                for m in METHODS:
                    prunes.append((f"prune/{start}/{m}/d={d:g}/seed={s}",
                                   {"type": "prune", "start": start, "method": m, "density": d, "seed": s}))
    return [tune, trains, prunes]


def chosen(cfg, runs, family):
    """The :class:`~.stats.LrChoice` of ``family`` from the tuning runs of ``runs``."""
    return choose_lr({lr: [runs[f"tune/{family}/lr={lr:g}/tune={t}"]["dice"] for t in cfg.tune_seeds]
                      for lr in cfg.lr_grid})


def _state_path(cache_dir, seed, what):
    return os.path.join(cache_dir, f"{what}-seed{seed}.npz")


def _save(model, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez(path, **{k: v.detach().cpu().numpy() for k, v in model.state_dict().items()})


def _load(model, path):
    import torch

    if not os.path.exists(path):
        raise RuntimeError(f"cache_dir: the start model {path} is missing; rerun the pass with --fresh")
    with np.load(path, allow_pickle=False) as z:
        model.load_state_dict({k: torch.from_numpy(z[k].copy()) for k in z.files})
    return model


def start_model(cfg, cache_dir, start, seed):
    """The trained start model of a pruning run, as pruned: Winograd-domain layers."""
    if start == "spatial":
        m = _load(make_unet(cfg.width, seed), _state_path(cache_dir, seed, "spatial"))
        return convert_3x3x3(m, "winograd", tile=cfg.tile)
    m = make_unet(cfg.width, seed, kind="lowrank", rank=cfg.rank, tile=cfg.tile)
    return _load(m, _state_path(cache_dir, seed, "lowrank"))


def prune(cfg, model, method, density, calib=None):
    """Prune ``model`` (Winograd-domain layers) one-shot by ``method`` at ``density``, in place."""
    from pywino3d.torch import prune_model

    from .models import conv_layers

    lowrank = any(hasattr(m, "P") for m in conv_layers(model))
    if method == "calibrated":
        return prune_model(model, density, method="output", refit=not lowrank, scope="layer", example_inputs=calib)
    if method == "magnitude":
        return prune_model(model, density, method="l2", refit=False, scope="layer")
    raise ValueError(f"method: expected one of {METHODS}, got {method!r}")


def run_job(cfg, cache_dir, spec, runs):
    """Run one job of :func:`plan` and return its record."""
    import torch

    t0, c0 = time.perf_counter(), time.process_time()
    seed = spec["seed"]
    train_data = _data(cfg, seed, "train", cfg.n_train)
    kw = dict(batch=cfg.batch, seed=seed)
    if spec["type"] == "tune":
        model = make_unet(cfg.width, seed, kind=spec["kind"], rank=cfg.rank, tile=cfg.tile)
        train(model, train_data, epochs=cfg.epochs, lr=spec["lr"], **kw)
        rec = evaluate(model, _data(cfg, seed, "val", cfg.n_val))
    elif spec["type"] == "train":
        name = spec["model"]
        family = "lowrank" if name == "lowrank" else "spatial"
        lr = chosen(cfg, runs, family).lr
        epochs = cfg.epochs
        if name.startswith("thin-"):
            model, epochs = make_unet(int(name[5:]), seed), cfg.epochs + cfg.finetune_epochs
        elif name == "slice2d":
            model = make_slice_net(cfg.width, seed)
        else:
            model = make_unet(cfg.width, seed, kind=family, rank=cfg.rank, tile=cfg.tile)
        train(model, train_data, epochs=epochs, lr=lr, **kw)
        rec = dict(evaluate(model, _data(cfg, seed, "test", cfg.n_test)), lr=lr, epochs=epochs,
                   params=sum(p.numel() for p in model.parameters() if p.requires_grad))
        if name in STARTS:
            _save(model, _state_path(cache_dir, seed, name))
    elif spec["type"] == "prune":
        start, method, density = spec["start"], spec["method"], spec["density"]
        test_data = _data(cfg, seed, "test", cfg.n_test)
        model = start_model(cfg, cache_dir, start, seed)
        rng = np.random.default_rng([seed, 11])
        calib = torch.from_numpy(train_data[0][rng.choice(cfg.n_train, cfg.calib_volumes, replace=False)])
        if method != "dense":
            prune(cfg, model, method, density, calib)
        before = evaluate(model, test_data)
        lr = chosen(cfg, runs, start).lr * cfg.finetune_lr_scale
        train(model, train_data, epochs=cfg.finetune_epochs, lr=lr, **kw)
        after = evaluate(model, test_data)
        rec = {"before": before["dice"], "before_classes": before["classes"], "dice": after["dice"],
               "classes": after["classes"], "lr": lr}
    else:
        raise ValueError(f"spec: unknown job type {spec['type']!r}")
    rec["wall_s"] = round(time.perf_counter() - t0, 2)
    rec["cpu_s"] = round(time.process_time() - c0, 2)
    return rec


def _job(cfg, cache_dir, spec, runs):  # module level: picklable with functools.partial
    return run_job(cfg, cache_dir, spec, runs)


def timing_models(cfg, cache_dir):
    """The networks whose forward time is measured (first seed): name -> model.

    Names: ``dense (torch)``, ``dense (Winograd)``, ``Winograd d=<density>``
    (the spatial start pruned by magnitude: every method and start keeps the
    same number of positions per layer, so the kernels do the same work),
    ``thin-<w>``, ``slice2d``.
    """
    from .models import to_vanilla

    seed = cfg.seeds[0]
    models = {"dense (torch)": _load(make_unet(cfg.width, seed), _state_path(cache_dir, seed, "spatial")),
              "dense (Winograd)": start_model(cfg, cache_dir, "spatial", seed)}
    for d in cfg.densities:
        models[f"Winograd d={d:g}"] = to_vanilla(prune(cfg, start_model(cfg, cache_dir, "spatial", seed),
                                                       "magnitude", d))
    for w in cfg.thin_widths:
        models[f"thin-{w}"] = make_unet(w, seed)
    models["slice2d"] = make_slice_net(cfg.width, seed)
    return models


def measure_times(cfg, cache_dir):
    """Interleaved forward times on one 1×1×s³ volume (s = ``timing_size``): name -> list of seconds."""
    s = cfg.timing_size
    x = np.random.default_rng(0).standard_normal((1, 1, s, s, s)).astype(np.float32)
    return interleaved_forward_times(timing_models(cfg, cache_dir), x, rounds=cfg.timing_rounds, seed=0)


# ------------------------------------------------------------------ run
def pass_json(out_dir, name):
    """The JSON file of pass ``name`` in ``out_dir``."""
    return os.path.join(out_dir, "experiment_segmentation.json" if name == "a"
                        else f"experiment_segmentation.{name}.json")


def run(cfg=None, *, out_json=None, pass_name="a", cache_dir=None, jobs=1, threads=1, fresh=False, progress=True):
    """Run (or resume) one pass of the study; returns its results dict.

    Parameters
    ----------
    cfg : SegConfig
    out_json : str, optional
        The pass's results file (see :func:`pass_json`); finished runs found
        there under the same configuration are skipped.
    pass_name : str
        Names the pass (and its machine setup) in the report.
    cache_dir : str, optional
        Where the trained start models are kept (default: a temp folder per
        configuration and pass).
    jobs, threads : int
        Processes, and threads per process.
    """
    import torch

    cfg = cfg or SegConfig()
    if out_json and fresh and os.path.exists(out_json):
        os.remove(out_json)
    config = {"study": cfg.to_json(), "pass": pass_name}
    cache = ResultCache(out_json, config, extra_keys=("timing", "machine"))
    if cache_dir is None:
        h = hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
        cache_dir = os.path.join(tempfile.gettempdir(), f"pywino3d-segmentation-{h}")
    phases = plan(cfg)
    for k, s in phases[2]:  # a pruning run needs its start model on disk: retrain it when the file is gone
        if k not in cache.runs and not os.path.exists(_state_path(cache_dir, s["seed"], s["start"])):
            cache.runs.pop(f"train/{s['start']}/seed={s['seed']}", None)
    need_timing = cache.timing is None
    if need_timing:
        for s in STARTS[:1]:
            if not os.path.exists(_state_path(cache_dir, cfg.seeds[0], s)):
                cache.runs.pop(f"train/{s}/seed={cfg.seeds[0]}", None)
    cache.set_machine(machine(threads))
    run_phases(phases, functools.partial(_job, cfg, cache_dir), cache, jobs=jobs, threads=threads,
               progress=progress, desc=f"segmentation pass {pass_name}")
    if need_timing:
        old = torch.get_num_threads()
        limits = set_threads(threads)
        try:
            cache.timing = {"size": cfg.timing_size, "rounds": cfg.timing_rounds, "threads": threads,
                            "times": measure_times(cfg, cache_dir)}
        finally:
            limits.restore_original_limits()
            torch.set_num_threads(old)
    cache.save()
    return cache.data()


def load_passes(out_dir, cfg):
    """Every pass's results in ``out_dir`` with configuration ``cfg``, pass "a" first: list of dicts."""
    found = []
    for path in sorted(glob.glob(os.path.join(out_dir, "experiment_segmentation*.json"))):
        with open(path) as f:
            res = json.load(f)
        if res.get("config", {}).get("study") == cfg.to_json():
            found.append(res)
    return sorted(found, key=lambda r: (r["config"]["pass"] != "a", r["config"]["pass"]))


# ------------------------------------------------------------------ report
def _vals(cfg, runs, key_fmt, field="dice"):
    return [runs[key_fmt.format(seed=s)][field] for s in cfg["seeds"]]


def _complete(cfg, res):
    keys = [k for phase in plan(SegConfig(**_tuples(cfg))) for k, _ in phase]
    return all(k in res["runs"] for k in keys) and res.get("timing")


def _tuples(d):
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def options(cfg):
    """The options of the Pareto plot: name -> (run key format, timing name)."""
    opts = {"dense (torch)": ("train/spatial/seed={seed}", "dense (torch)"),
            "dense, converted to Winograd": ("train/spatial/seed={seed}", "dense (Winograd)"),
            "lowrank, unpruned": ("train/lowrank/seed={seed}", "dense (Winograd)")}
    for w in cfg["thin_widths"]:
        opts[f"thin-{w}"] = (f"train/thin-{w}/seed={{seed}}", f"thin-{w}")
    opts["slice2d"] = ("train/slice2d/seed={seed}", "slice2d")
    for start in cfg["starts"]:
        for d in cfg["densities"]:
            for m in METHODS:
                opts[f"{start} → {m} {d:g}"] = (f"prune/{start}/{m}/d={d:g}/seed={{seed}}", f"Winograd d={d:g}")
    return opts


def _fmt(s):
    return f"{s.mean:.3f} ± {s.sd:.3f} [{s.lo:.3f}, {s.hi:.3f}]"


def _verdict_words(a, b, p):
    if p.verdict == "higher":
        return f"{a} higher"
    if p.verdict == "lower":
        return f"{a} lower"
    return "no difference detected"


def matched_thin(cfg, times, name_time):
    """The thin width whose median time is nearest (in ratio) to the timing entry ``name_time``."""
    t = np.median(times[name_time])
    return min(cfg["thin_widths"], key=lambda w: abs(np.log(np.median(times[f"thin-{w}"]) / t)))


def report(passes):
    """The Markdown section of the study from its passes (pass "a" first; its timing is the one shown).

    Every comparison is a paired t-test over the seeds in each pass; the
    "robust" column says whether all passes give the same verdict (only
    possible with two or more passes).
    """
    if not passes:
        raise ValueError("passes: need the results of at least one pass")
    base = passes[0]
    cfg = base["config"]["study"]
    runs = base["runs"]
    times = {k: np.asarray(v) for k, v in base["timing"]["times"].items()}
    ms = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
    n = len(cfg["seeds"])
    L = ["## 3-D segmentation: a pruned network or a thinner one?", ""]
    L.append("Generated by `python -m pywino3d experiment --segmentation` from `experiment_segmentation*.json` "
             "(one file per pass).")
    L.append("")
    sh = "×".join(map(str, cfg["shape"]))
    L.append(f"Task (`pywino3d.experiments.volumes`): volumes of 1×{sh} with 5–9 ellipsoids in Gaussian noise "
             f"(σ 0.35, brightness 0.6–1.0 for both classes), in-plane radius {cfg['radius'][0]:g}–"
             f"{cfg['radius'][1]:g}; class *tall* extends 1.6–2.2× its radius along depth, class *flat* "
             "0.45–0.7×, so one depth slice cannot tell them apart. Per seed "
             f"{cfg['n_train']} training, {cfg['n_val']} validation (tuning only) and {cfg['n_test']} test volumes "
             "from disjoint generator streams, resampled per seed. Metric: Dice of the two object classes "
             "(MONAI `DiceMetric`), mean over the test volumes; *Dice* is the mean of the two classes. "
             f"Model: MONAI `BasicUNet`, features {tuple(features(cfg['width']))}, instance norm; Adam, batch "
             f"{cfg['batch']}, cosine decay, {cfg['epochs']} epochs, voxel-wise cross-entropy. {n} seeds "
             f"({', '.join(map(str, cfg['seeds']))}): mean ± sample sd [95 % t interval of the mean]; comparisons "
             "are paired by seed (paired t-test, Δ in Dice, 95 % interval), a difference is called only when "
             "its interval excludes 0.")
    L.append("")
    L.append("Passes (a verdict is **robust** only when every pass gives it):")
    L.append("")
    for p in passes:
        L.append(f"* pass {p['config']['pass']}: {describe_machine(p['machine'])}.")
    if len(passes) >= 2:
        diff = sum(1 for k, r in runs.items() if all(k in q["runs"] for q in passes[1:]) and "dice" in r
                   and any(q["runs"][k]["dice"] != r["dice"] for q in passes[1:]))
        L.append(f"* {diff} of {len(runs)} runs of pass a give a different Dice in another pass (the machine "
                 "setup changes the summation order, and training amplifies it).")
    else:
        L.append("* only one pass so far: no verdict below can be called robust.")
    L.append("")

    # learning rates
    L.append("### Learning rates")
    L.append("")
    L.append(f"Chosen per family by the mean validation Dice over the tuning seeds {tuple(cfg['tune_seeds'])} "
             "(thin networks and the 2-D baseline use the spatial rate; fine-tuning uses "
             f"{cfg['finetune_lr_scale']:g}× the start model's rate). Margin: chosen minus runner-up, mean "
             "over tuning seeds, with its paired 95 % interval.")
    L.append("")
    L.append("| pass | family | " + " | ".join(f"lr {lr:g}" for lr in cfg["lr_grid"]) + " | chosen | margin |")
    L.append("|---|---|" + "---|" * (len(cfg["lr_grid"]) + 2))
    scfg = SegConfig(**_tuples(cfg))
    for p in passes:
        for fam in FAMILIES:
            c = chosen(scfg, p["runs"], fam)
            cells = [f"{np.mean([p['runs'][f'tune/{fam}/lr={lr:g}/tune={t}']['dice'] for t in cfg['tune_seeds']]):.3f}"
                     for lr in cfg["lr_grid"]]
            marg = f"{c.margin:+.3f}" + (f" [{c.paired.lo:+.3f}, {c.paired.hi:+.3f}]" if c.paired else "")
            L.append(f"| {p['config']['pass']} | {fam} | " + " | ".join(cells) + f" | {c.lr:g} | {marg} |")
    L.append("")

    # models
    L.append("### Trained networks")
    L.append("")
    L.append(f"Forward time: one 1×1×{base['timing']['size']}³ volume, median of {base['timing']['rounds']} "
             f"interleaved rounds, {base['timing']['threads']} thread(s), pass a's machine; "
             "\"dense (Winograd)\" is the spatial network converted to `WinogradConv3d` layers (the same function).")
    L.append("")
    L.append("| network | Dice | tall | flat | params | forward ms |")
    L.append("|---|---|---|---|---|---|")
    rows = [("dense (torch)", "spatial", "dense (torch)"), ("lowrank (Winograd from the start)", "lowrank",
                                                              "dense (Winograd)")]
    rows += [(f"thin-{w}", f"thin-{w}", f"thin-{w}") for w in cfg["thin_widths"]]
    rows += [("slice2d (2-D, slice by slice)", "slice2d", "slice2d")]
    for label, m, tn in rows:
        fmt = f"train/{m}/seed={{seed}}"
        cls = np.array(_vals(cfg, runs, fmt, "classes"))
        L.append(f"| {label} | {_fmt(summarize(_vals(cfg, runs, fmt)))} | {cls[:, 0].mean():.3f} | "
                 f"{cls[:, 1].mean():.3f} | {runs[fmt.format(seed=cfg['seeds'][0])]['params']} | {ms[tn]:.0f} |")
    L.append(f"| dense (Winograd), converted | as dense (torch) | | | | {ms['dense (Winograd)']:.0f} |")
    L.append("")

    # comparisons
    def compare(label_a, label_b, fa, fb, field_a="dice", field_b="dice"):
        verdicts, cells = [], []
        for p in passes:
            r = paired_test(_vals(cfg, p["runs"], fa, field_a), _vals(cfg, p["runs"], fb, field_b))
            verdicts.append(_verdict_words(label_a, label_b, r))
            cells.append(f"{r.diff:+.3f} [{r.lo:+.3f}, {r.hi:+.3f}] {verdicts[-1]}")
        robust, _ = agreement(verdicts)
        return f"| {label_a} − {label_b} | " + " | ".join(cells) + f" | {'**robust**' if robust else 'no'} |", \
            robust, verdicts[0]

    hdr = "| comparison | " + " | ".join(f"pass {p['config']['pass']}: Δ Dice [95 % CI], verdict" for p in passes) \
          + " | robust |"
    sep = "|---|" + "---|" * len(passes) + "---|"
    claims = []
    L.append("### 3-D context, and training in the Winograd domain")
    L.append("")
    L.append(hdr)
    L.append(sep)
    row, rob, v = compare("dense (torch)", "slice2d", "train/spatial/seed={seed}", "train/slice2d/seed={seed}")
    L.append(row)
    claims.append(("3-D context", rob, v))
    row, rob, v = compare("lowrank", "dense (torch)", "train/lowrank/seed={seed}", "train/spatial/seed={seed}")
    L.append(row)
    claims.append(("low-rank Winograd training from the start vs the spatial network", rob, v))
    L.append("")

    L.append("### One-shot pruning (before and after fine-tuning)")
    L.append("")
    L.append(f"Start models: the trained dense network converted to `WinogradConv3d` (\"spatial\"), and the "
             f"low-rank network (rank {cfg['rank']}, F({cfg['tile']}³)). Pruned by `prune_model(scope=\"layer\")`"
             f" at each density: *calibrated* = `method=\"output\"` with `example_inputs=` {cfg['calib_volumes']}"
             " training volumes (with the least-squares refit for the converted network; the low-rank layers "
             "take no refit), *magnitude* = l2 of the columns, no refit. Then fine-tuned "
             f"{cfg['finetune_epochs']} epoch(s); *dense* is the same fine-tune with nothing pruned. Pass a:")
    L.append("")
    L.append("| start | method | density | Dice before fine-tune | Dice after | tall after | flat after |")
    L.append("|---|---|---|---|---|---|---|")
    for start in cfg["starts"]:
        for m, d in [("dense", 1.0)] + [(m, d) for d in cfg["densities"] for m in METHODS]:
            fmt = f"prune/{start}/{m}/d={d:g}/seed={{seed}}"
            cls = np.array(_vals(cfg, runs, fmt, "classes"))
            L.append(f"| {start} | {m} | {d:g} | {_fmt(summarize(_vals(cfg, runs, fmt, 'before')))} | "
                     f"{_fmt(summarize(_vals(cfg, runs, fmt)))} | {cls[:, 0].mean():.3f} | {cls[:, 1].mean():.3f} |")
    L.append("")
    L.append(hdr)
    L.append(sep)
    for start in cfg["starts"]:
        for d in cfg["densities"]:
            c, g = f"prune/{start}/calibrated/d={d:g}/seed={{seed}}", f"prune/{start}/magnitude/d={d:g}/seed={{seed}}"
            row, rob, v = compare(f"{start} calibrated {d:g}", f"magnitude {d:g} (before ft)", c, g, "before",
                                  "before")
            L.append(row)
            claims.append((f"{start}: calibrated vs magnitude at {d:g}, one-shot", rob, v))
            row, rob, v = compare(f"{start} calibrated {d:g}", f"magnitude {d:g} (after ft)", c, g)
            L.append(row)
            claims.append((f"{start}: calibrated vs magnitude at {d:g}, fine-tuned", rob, v))
            row, rob, v = compare(f"{start} calibrated {d:g}", "dense control (after ft)", c,
                                  f"prune/{start}/dense/d=1/seed={{seed}}")
            L.append(row)
            claims.append((f"{start}: calibrated {d:g} vs dense control", rob, v))
    L.append("")

    L.append("### Against the honest alternative: a thinner network at matched time")
    L.append("")
    L.append(f"Thin networks of widths {tuple(cfg['thin_widths'])} (dense is {cfg['width']}), trained from scratch "
             f"for {cfg['epochs'] + cfg['finetune_epochs']} epochs (the start model's {cfg['epochs']} plus the "
             f"{cfg['finetune_epochs']} of fine-tuning). Each fine-tuned calibrated pruned network is compared with "
             "the thin network whose forward time is nearest to its own (time ratio in brackets: thin / pruned).")
    L.append("")
    L.append(hdr)
    L.append(sep)
    for d in cfg["densities"]:
        tn = f"Winograd d={d:g}"
        w = matched_thin(cfg, times, tn)
        ratio = ms[f"thin-{w}"] / ms[tn]
        bracket = [x for x in cfg["thin_widths"] if ms[f"thin-{x}"] <= ms[tn]], \
                  [x for x in cfg["thin_widths"] if ms[f"thin-{x}"] >= ms[tn]]
        for start in cfg["starts"]:
            row, rob, v = compare(f"{start} → calibrated {d:g}", f"thin-{w} ({ratio:.2f}× time)",
                                  f"prune/{start}/calibrated/d={d:g}/seed={{seed}}", f"train/thin-{w}/seed={{seed}}")
            L.append(row)
            claims.append((f"{start} pruned to {d:g} vs thin-{w}", rob, v))
        if not (bracket[0] and bracket[1]):
            L.append(f"| (the thin widths do not bracket the time of density {d:g}: {ms[tn]:.0f} ms) | "
                     + " | " * len(passes) + "|")
    L.append("")

    # recommendation
    L.append("### Which option to pick at a time budget")
    L.append("")
    opts = options(cfg)
    final = {k: v for k, v in opts.items() if "magnitude" not in k and k != "slice2d"}
    vals = {k: _vals(cfg, runs, f) for k, (f, _) in final.items()}
    t_of = {k: ms[tn] for k, (_, tn) in final.items()}
    budgets = sorted(set(round(t) for t in t_of.values()))
    L.append("For a budget of forward time (ms on pass a's machine; below the first, nothing fits), the option "
             "with the highest mean Dice among those that fit (pruned options calibrated and fine-tuned), tested "
             "against the best *thin* network that fits, paired by seed in pass a:")
    L.append("")
    tiers = []  # (lowest budget, highest budget, advice), consecutive budgets with the same advice merged
    for b in budgets:
        inside = [k for k in final if t_of[k] <= b + 0.5]
        best = max(inside, key=lambda k: np.mean(vals[k]))
        thin = [k for k in inside if k.startswith("thin-")]
        s = summarize(vals[best])
        line = f"**{best}** (Dice {s.mean:.3f} [{s.lo:.3f}, {s.hi:.3f}], {t_of[best]:.0f} ms)"
        if best.startswith("thin-"):
            line += ": a thinner network is the best option here."
        elif thin:
            tb = max(thin, key=lambda k: np.mean(vals[k]))
            r = paired_test(vals[best], vals[tb])
            if r.verdict == "higher":
                line += (f"; it beats the best thin network within the budget, {tb}, by {r.diff:+.3f} Dice "
                         f"[{r.lo:+.3f}, {r.hi:+.3f}]: pick it.")
            else:
                line += (f"; against {tb} the difference is {r.diff:+.3f} [{r.lo:+.3f}, {r.hi:+.3f}], "
                         f"not shown to be above 0: the simpler thinner network ({tb}) is as good a pick.")
        else:
            line += "; no thin network fits this budget."
        if tiers and tiers[-1][2] == line:
            tiers[-1] = (tiers[-1][0], b, line)
        else:
            tiers.append((b, b, line))
    for i, (lo, hi, line) in enumerate(tiers):
        nxt = tiers[i + 1][0] if i + 1 < len(tiers) else None
        span = f"{lo}–{nxt} ms" if nxt is not None else f"{lo} ms or more"
        L.append(f"* {span}: {line}")
    L.append("")
    L.append("Claims, and whether they survive the second pass:")
    L.append("")
    for what, rob, v in claims:
        L.append(f"* {what}: {v}" + (" — robust." if rob else " — **not robust** (passes disagree or only one pass)."))
    L.append("")
    cpu = sum(r["cpu_s"] for p in passes for r in p["runs"].values())
    wall = sum(r["wall_s"] for p in passes for r in p["runs"].values())
    L.append(f"Compute: {sum(len(p['runs']) for p in passes)} runs over {len(passes)} pass(es), {cpu / 60:.1f} "
             f"CPU-minutes ({wall / 60:.1f} minutes of run time summed over runs; CPU time / 2 estimates the wall "
             "time on 2 idle cores).")
    L.append("")
    L.append("![Dice against forward time](experiment_segmentation.png)")
    L.append("")
    return "\n".join(L)


def plot(passes, path):
    """Pareto plot of pass a: test Dice (mean, 95 % CI) against measured forward time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = passes[0]
    cfg, runs = base["config"]["study"], base["runs"]
    ms = {k: 1e3 * float(np.median(v)) for k, v in base["timing"]["times"].items()}
    fig, ax = plt.subplots(figsize=(8, 5))
    groups = {"thin": "tab:blue", "spatial →": "tab:orange", "lowrank →": "tab:green"}
    labels = {"spatial →": "pruned from the trained spatial network", "lowrank →": "pruned from the low-rank network",
              "thin": "thin networks (from scratch)"}
    shown = set()
    for k, (fmt, tn) in options(cfg).items():
        s = summarize(_vals(cfg, runs, fmt))
        group = next((g for g in groups if k.startswith(g)), None)
        color = groups.get(group, "k")
        marker = "s" if "magnitude" in k else ("*" if k == "dense (torch)" else "o")
        label = labels[group] if group and group not in shown and "magnitude" not in k else None
        if label:
            shown.add(group)
        ax.errorbar(ms[tn], s.mean, yerr=s.half_width, fmt=marker, color=color, capsize=3, label=label,
                    mfc="none" if "magnitude" in k else color, ms=10 if k == "dense (torch)" else 6)
        if "→" not in k:
            ax.annotate(k, (ms[tn], s.mean), fontsize=7, xytext=(3, 3), textcoords="offset points")
        elif k.startswith("spatial") and "calibrated" in k:
            ax.annotate(f"d={k.split()[-1]}", (ms[tn], s.mean), fontsize=7, xytext=(-30, 0), textcoords="offset points")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_xscale("log")
    ax.margins(x=0.15)
    ax.set_xlabel(f"forward time, 1×1×{base['timing']['size']}³ volume (ms, log scale)")
    ax.set_ylabel("test Dice (mean, 95 % CI)")
    ax.set_title("Dice against forward time (pass a); ★ dense torch eager; hollow squares: magnitude pruning",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_section(path, text):
    """Replace this study's section of ``path`` (between its markers), or append it."""
    write_marked_section(path, text, BEGIN, END)


def main(cfg, *, out, pass_name, jobs, threads, fresh, progress, cache_dir=None):
    """Run one pass, then write the report of every pass found in ``out`` (when given); returns the text."""
    out_json = pass_json(out, pass_name) if out else None
    res = run(cfg, out_json=out_json, pass_name=pass_name, cache_dir=cache_dir, jobs=jobs, threads=threads,
              fresh=fresh, progress=progress)
    passes = load_passes(out, cfg) if out else [res]
    if not passes or passes[0]["config"]["pass"] != "a":
        return None  # the report is made when pass a is there
    passes = [p for p in passes if _complete(p["config"]["study"], p)]
    text = report(passes)
    print(text)
    if out:
        plot(passes, os.path.join(out, "experiment_segmentation.png"))
        write_section(os.path.join(out, "experiments.md"), text)
    return text
