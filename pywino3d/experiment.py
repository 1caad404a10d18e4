"""Small-scale reproduction of the low-rank Winograd paper's two claims.

    python -m pywino3d experiment            # full run, writes docs/experiments.md
    python -m pywino3d experiment --quick    # a smoke run (seconds)

Claim 1: training low-rank Winograd weights beats training the full
("vanilla") Winograd-domain weights.  Claim 2: low-rank-oriented column
pruning gives real Winograd speed-ups at small accuracy cost, while
unstructured Winograd-domain pruning gives none.

Data (:func:`moving_digits`): deterministic 8-frame clips of a scikit-learn
digit moving left or right across an 18x18 canvas with noise; the label is
(digit, direction), 20 classes, so the time axis is needed.  Train and test
clips use disjoint digit images.

Needs torch and scikit-learn (``pip install "pywino3d[experiment]"``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

FRAMES, SIZE, NCLASS = 8, 18, 20


# ------------------------------------------------------------------ data
def moving_digits(n, *, seed=0, split="train", frames=FRAMES, size=SIZE, noise=0.15):
    """Deterministic video clips of moving digits.

    Parameters
    ----------
    n : int
        Number of clips.
    seed : int
        Fixes everything: digit choice, start position, direction, noise.
    split : {"train", "test"}
        Digit images 0..1399 for train, 1400..1796 for test.

    Returns
    -------
    x : ndarray float32, shape (n, 1, frames, size, size)
    y : ndarray int64, shape (n,), label = 2 * digit + direction
        (direction 0: moving right, 1: moving left).

    Examples
    --------
    >>> from pywino3d.experiment import moving_digits
    >>> x, y = moving_digits(4, seed=0)
    >>> x.shape, y.dtype.name
    ((4, 1, 8, 18, 18), 'int64')
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    labels = digits.target.astype(np.int64)
    idx = np.arange(0, 1400) if split == "train" else np.arange(1400, len(images))
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    pick = rng.choice(idx, size=n, replace=True)
    direction = rng.integers(0, 2, size=n)
    travel = frames - 1
    x = np.zeros((n, 1, frames, size, size), np.float32)
    for i in range(n):
        img = images[pick[i]] * rng.uniform(0.7, 1.3)
        x0 = rng.integers(0, size - 8 - travel + 1)
        y0 = rng.integers(0, size - 8 + 1)
        for t in range(frames):
            xs = x0 + (t if direction[i] == 0 else travel - t)
            x[i, 0, t, y0:y0 + 8, xs:xs + 8] = img
    x += noise * rng.standard_normal(x.shape).astype(np.float32)
    return x, 2 * labels[pick] + direction


# ------------------------------------------------------------------ models
CHANNELS = (1, 8, 16, 16, 32)


def make_model(kind, *, tile=2, rank=8, seed=0):
    """A 4-layer 3-D CNN (conv, batch norm, ReLU); ``kind`` picks the convolutions.

    kind: "spatial" (torch nn.Conv3d), "vanilla" (WinogradConv3d, full U),
    "lowrank" (LowRankWinogradConv3d, U = P Q) or "residual" (U = U0 + P Q,
    U0 frozen at the random initialisation).

    Examples
    --------
    >>> from pywino3d.experiment import make_model, trainable_params
    >>> trainable_params(make_model("lowrank", rank=8)) < trainable_params(make_model("vanilla"))
    True
    """
    import torch
    from torch import nn

    from .torch import LowRankWinogradConv3d, WinogradConv3d

    torch.manual_seed(seed)
    layers = []
    for i, (cin, cout) in enumerate(zip(CHANNELS[:-1], CHANNELS[1:])):
        if kind == "spatial":
            conv = nn.Conv3d(cin, cout, 3, padding=1)
        elif kind == "vanilla":
            conv = WinogradConv3d(cin, cout, 3, padding=1, tile=tile)
        elif kind in ("lowrank", "residual"):
            conv = LowRankWinogradConv3d(cin, cout, 3, padding=1, tile=tile, rank=rank, seed=seed + i,
                                         mode="factor" if kind == "lowrank" else "residual")
        else:
            raise ValueError(f"kind: unknown model kind {kind!r}")
        layers += [conv, nn.BatchNorm3d(cout), nn.ReLU()]
        if i == 1:
            layers.append(nn.MaxPool3d((1, 2, 2)))
    layers += [nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(CHANNELS[-1], NCLASS)]
    return nn.Sequential(*layers)


def conv_layers(model):
    from .torch import _WinogradBase

    return [m for m in model.modules() if isinstance(m, _WinogradBase)]


def trainable_params(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ------------------------------------------------------------------ training
class Progress:
    """A tiny text progress bar (no dependency)."""

    def __init__(self, total, label="", stream=sys.stderr, width=30):
        self.total, self.label, self.stream, self.width = max(1, total), label, stream, width
        self.n, self.t0 = 0, time.time()

    def update(self, k=1, info=""):
        self.n += k
        frac = min(1.0, self.n / self.total)
        bar = "#" * int(frac * self.width)
        el = time.time() - self.t0
        eta = el / frac - el if frac > 0 else 0
        self.stream.write(f"\r{self.label} [{bar:<{self.width}}] {self.n}/{self.total} "
                          f"{el:5.0f}s eta {eta:4.0f}s {info[:40]:<40}")
        self.stream.flush()

    def close(self):
        self.stream.write("\n")


def train(model, data, *, epochs, lr=3e-3, batch=32, seed=0, on_step=None, progress=None):
    import torch

    x, y = data
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    g = torch.Generator().manual_seed(seed)
    step = 0
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt) - batch + 1, batch):
            b = perm[i:i + batch]
            loss = torch.nn.functional.cross_entropy(model(xt[b]), yt[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if on_step is not None:
                on_step(step)
            if progress is not None:
                progress.update(1, f"loss {loss.item():.3f}")
    return model


def accuracy(model, data, batch=200):
    import torch

    x, y = data
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            correct += int((model(torch.from_numpy(x[i:i + batch])).argmax(1).numpy() == y[i:i + batch]).sum())
    return correct / len(x)


def conv_time(model, x, repeat=5):
    """Median time of all Winograd conv layers of one inference batch."""
    import torch

    layers = conv_layers(model)
    inputs = []
    hook_handles = [m.register_forward_hook(lambda m, i, o: inputs.append(i[0].detach()))
                    for m in layers]
    with torch.no_grad():
        model(torch.from_numpy(x))
    for h in hook_handles:
        h.remove()
    ts = []
    with torch.no_grad():
        for _ in range(repeat + 1):
            t0 = time.perf_counter()
            for m, inp in zip(layers, inputs):
                m(inp)
            ts.append(time.perf_counter() - t0)
    return float(np.median(ts[1:]))


# ------------------------------------------------------------------ pruning
def prune_finetune(model, method, density, data, *, epochs, seed=0, progress=None):
    """Prune ``model`` to ``density`` while fine-tuning (cubic schedule).

    method: "lowrank-column" (column scores from the factors, l2),
    "column" (l2 of the full U's columns) or "unstructured" (magnitude mask on
    the entries of U; columns stay, so no speed-up).
    """
    import torch

    from .pruning import column_importance, cubic_density, magnitude_mask, select_columns

    layers = conv_layers(model)
    steps_per_epoch = len(data[0]) // 32
    end = max(1, int(0.7 * epochs * steps_per_epoch))
    masks = {}

    def apply(step):
        d = cubic_density(step, final_density=density, begin_step=0, end_step=end, frequency=5)
        for m in layers:
            if method == "unstructured":
                U = m.winograd_weights().detach().numpy()
                mask = torch.from_numpy(magnitude_mask(U, d))
                masks[m] = mask
                with torch.no_grad():
                    m.weight_U.mul_(mask)
            else:
                if method == "lowrank-column":
                    from .lowrank import LowRankWinograd

                    lr = LowRankWinograd(m.P.detach().numpy(), m.Q.detach().numpy(),
                                         kernel_size=m.kernel_size, tile=m.tile,
                                         U0=None if m.U0 is None else m.U0.numpy())
                    scores = column_importance(lr, "l2")
                else:
                    scores = column_importance(m.winograd_weights().detach().numpy(), "l2")
                scores[~m.columns_mask.numpy()] = -1.0  # pruned columns stay pruned
                m.set_columns(select_columns(scores, d))

    apply(0)
    train(model, data, epochs=epochs, seed=seed, on_step=apply, progress=progress)
    apply(10**9)
    return model


# ------------------------------------------------------------------ driver
def run(*, quick=False, seeds=(0, 1, 2), epochs=8, finetune_epochs=2, ranks=(4, 8, 16),
        residual_ranks=(4, 8, 16), densities=(0.75, 0.5, 0.25), tile=2, n_train=1200, n_test=400,
        out_md=None, out_png=None, out_json=None):
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    if quick:
        seeds, epochs, finetune_epochs, ranks, residual_ranks = (0,), 1, 1, (4,), (4,)
        densities, n_train, n_test = (0.5,), 96, 64
    train_data = moving_digits(n_train, seed=0, split="train")
    test_data = moving_digits(n_test, seed=0, split="test")
    configs = [("spatial", None), ("vanilla", None)] + [("lowrank", r) for r in ranks] + \
              [("residual", r) for r in residual_ranks]
    steps = len(train_data[0]) // 32
    total = len(seeds) * (len(configs) * epochs * steps + 3 * len(densities) * finetune_epochs * steps)
    prog = Progress(total, "experiment")
    results = {"train": [], "prune": []}
    trained = {}
    for seed in seeds:
        for kind, rank in configs:
            model = make_model(kind, tile=tile, rank=rank or 8, seed=seed)
            train(model, train_data, epochs=epochs, seed=seed, progress=prog)
            acc = accuracy(model, test_data)
            results["train"].append({"kind": kind, "rank": rank, "seed": seed, "acc": acc,
                                     "params": trainable_params(model),
                                     "conv_params": sum(m.num_weight_params for m in conv_layers(model))
                                     if kind != "spatial" else sum(p.numel() for n, p in model.named_parameters()
                                                                    if "weight" in n and p.dim() == 5)})
            trained[(kind, rank, seed)] = model
        base_lr = ("lowrank", 8 if 8 in ranks else ranks[0])
        for density in densities:
            for method, src in (("lowrank-column", base_lr), ("column", ("vanilla", None)),
                                ("unstructured", ("vanilla", None))):
                import copy

                model = copy.deepcopy(trained[(src[0], src[1], seed)])
                prune_finetune(model, method, density, train_data, epochs=finetune_epochs, seed=seed,
                               progress=prog)
                results["prune"].append({"method": method, "density": density, "seed": seed,
                                         "acc": accuracy(model, test_data),
                                         "conv_time": conv_time(model, test_data[0][:64])})
        for src in (base_lr, ("vanilla", None)):
            results.setdefault("dense_time", {})[f"{src[0]}-{src[1]}-{seed}"] = \
                conv_time(trained[(src[0], src[1], seed)], test_data[0][:64])
    prog.close()
    text = report(results, quick=quick, tile=tile, epochs=epochs, finetune_epochs=finetune_epochs,
                  n_train=n_train, n_test=n_test)
    print(text)
    if out_json:
        with open(out_json, "w") as f:
            json.dump(results, f, indent=1)
    if out_png:
        plot(results, out_png)
    if out_md:
        with open(out_md, "w") as f:
            f.write(text)
    return results


def _ms(vals):
    vals = np.asarray(vals, dtype=np.float64)
    return f"{100 * vals.mean():.1f} ± {100 * vals.std():.1f}"


def report(results, *, quick, tile, epochs, finetune_epochs, n_train, n_test):
    lines = ["# Experiment: low-rank Winograd training and column pruning", ""]
    lines.append("Generated by `python -m pywino3d experiment` (re-run with the same command; "
                 "`--quick` for a smoke run)." + (" **This is a quick smoke run.**" if quick else ""))
    lines.append("")
    lines.append(f"Data: moving-digit clips (1×{FRAMES}×{SIZE}×{SIZE}, 20 classes = digit × direction), "
                 f"{n_train} train / {n_test} test clips from disjoint digit images. Model: 4 conv layers "
                 f"{CHANNELS}, 3×3×3, padding 1, each with batch norm and ReLU, "
                 f"F({tile}³, 3³) for the Winograd variants, Adam 3e-3, "
                 f"batch 32, {epochs} epochs; pruning fine-tunes {finetune_epochs} epochs with the cubic "
                 "schedule (Zhu & Gupta). Mean ± std over seeds; accuracy in %.")
    lines.append("")
    lines.append("## Claim 1: training in the Winograd domain")
    lines.append("")
    lines.append("| model | rank | accuracy % | trainable params | conv weight params |")
    lines.append("|---|---|---|---|---|")
    groups = {}
    for r in results["train"]:
        groups.setdefault((r["kind"], r["rank"]), []).append(r)
    for (kind, rank), rs in groups.items():
        lines.append(f"| {kind} | {rank or '—'} | {_ms([r['acc'] for r in rs])} | {rs[0]['params']} | "
                     f"{rs[0]['conv_params']} |")
    lines.append("")
    lines.append("## Claim 2: pruning")
    lines.append("")
    lines.append("| method | density | accuracy % | conv time ms (64 clips) | speed-up vs dense |")
    lines.append("|---|---|---|---|---|")
    dense = results.get("dense_time", {})
    dense_lr = np.median([v for k, v in dense.items() if k.startswith("lowrank")])
    dense_v = np.median([v for k, v in dense.items() if k.startswith("vanilla")])
    pg = {}
    for r in results["prune"]:
        pg.setdefault((r["method"], r["density"]), []).append(r)
    for (method, density), rs in pg.items():
        t = np.median([r["conv_time"] for r in rs])
        base = dense_lr if method == "lowrank-column" else dense_v
        lines.append(f"| {method} | {density} | {_ms([r['acc'] for r in rs])} | {1e3 * t:.2f} | "
                     f"{base / t:.2f}× |")
    lines.append("")
    lines.append(f"Dense conv time: low-rank model {1e3 * dense_lr:.2f} ms, vanilla model {1e3 * dense_v:.2f} ms "
                 "(U composed once; time of the Winograd conv layers only).")
    lines.append("")
    lines.append("![accuracy and speed-up](experiment.png)")
    lines.append("")
    return "\n".join(lines)


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(15, 4))
    groups = {}
    for r in results["train"]:
        groups.setdefault(f"{r['kind']}{'' if r['rank'] is None else ' k=' + str(r['rank'])}", []).append(r)
    names = list(groups)
    means = [100 * np.mean([r["acc"] for r in groups[n]]) for n in names]
    stds = [100 * np.std([r["acc"] for r in groups[n]]) for n in names]
    a1.bar(range(len(names)), means, yerr=stds, color="tab:blue")
    a1.set_xticks(range(len(names)))
    a1.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    a1.set_ylabel("test accuracy %")
    a1.set_title("training variants")
    pg = {}
    for r in results["prune"]:
        pg.setdefault(r["method"], {}).setdefault(r["density"], []).append(r)
    for method, d in pg.items():
        ds = sorted(d)
        a2.errorbar(ds, [100 * np.mean([r["acc"] for r in d[x]]) for x in ds],
                    yerr=[100 * np.std([r["acc"] for r in d[x]]) for x in ds], marker="o", label=method)
    a2.set_xlabel("column / weight density")
    a2.set_ylabel("test accuracy %")
    a2.set_title("pruning: accuracy")
    a2.invert_xaxis()
    a2.legend(fontsize=8)
    dense = results.get("dense_time", {})
    for method, d in pg.items():
        base = np.median([v for k, v in dense.items() if k.startswith("lowrank" if method == "lowrank-column"
                                                                          else "vanilla")])
        ds = sorted(d)
        a3.plot(ds, [base / np.median([r["conv_time"] for r in d[x]]) for x in ds], marker="o", label=method)
    a3.axhline(1.0, color="k", lw=0.8)
    a3.set_xlabel("column / weight density")
    a3.set_ylabel("conv-layer speed-up over dense")
    a3.set_title("pruning: measured speed-up")
    a3.invert_xaxis()
    a3.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m pywino3d experiment", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a smoke run of a few steps")
    ap.add_argument("--out", default=None, help="folder for experiments.md and experiment.png "
                    "(default: docs/ when it exists, else nothing is written)")
    ap.add_argument("--epochs", type=int, default=8)
    args = ap.parse_args(argv)
    out = args.out if args.out is not None else ("docs" if os.path.isdir("docs") and not args.quick else None)
    kw = {}
    if out:
        kw = dict(out_md=os.path.join(out, "experiments.md"), out_png=os.path.join(out, "experiment.png"),
                  out_json=os.path.join(out, "experiment.json"))
    run(quick=args.quick, epochs=args.epochs, **kw)
    return 0
