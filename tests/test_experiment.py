"""The reproduction experiment: data, evaluation, statistics, resumability, the command line."""
import json
import pathlib

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("tqdm")

import torch  # noqa: E402

from pywino3d.experiments import cli, reproduction, stats, training  # noqa: E402
from pywino3d.experiments import data as D  # noqa: E402
from pywino3d.experiments.models import conv_layers, make_model, to_vanilla  # noqa: E402

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
SMALL = (1, 4, 4, 4, 8)  # narrow layers keep these tests fast


# ------------------------------------------------------------------ data
def test_data_is_deterministic():
    a = D.moving_digits(20, seed=3)
    b = D.moving_digits(20, seed=3)
    c = D.moving_digits(20, seed=4)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    x, y = a
    assert x.shape == (20, 1, D.FRAMES, D.SIZE, D.SIZE) and x.dtype == np.float32
    assert y.min() >= 0 and y.max() < D.NCLASS


@pytest.mark.parametrize("seed", [0, 5])
def test_split_is_disjoint_and_resampled_per_seed(seed):
    s = D.split_images(seed, n_val=100, n_test=150)
    sets = [set(s[k].tolist()) for k in ("train", "val", "test")]
    assert sum(map(len, sets)) == D.N_IMAGES and set.union(*sets) == set(range(D.N_IMAGES))
    assert len(sets[2]) == 150 and len(sets[1]) == 100
    assert not np.array_equal(s["test"], D.split_images(seed + 1, n_val=100, n_test=150)["test"])
    _, _, img = D.moving_digits(200, seed=seed, split="train", n_val=100, n_test=150, return_images=True)
    assert set(img.tolist()) <= sets[0]


@pytest.mark.parametrize("task", ["digit-direction", "opposite"])
def test_test_set_is_every_image_in_every_arrangement_once(task):
    x, y, img = D.moving_digits(seed=2, split="test", task=task, n_test=40, return_images=True, noise=0.0)
    assert len(y) == 80
    assert sorted(np.unique(img, return_counts=True)[1].tolist()) == [2] * 40
    assert set(img.tolist()) == set(D.split_images(2, n_test=40)["test"].tolist())
    if task == "digit-direction":  # both directions of each image
        for i in np.unique(img):
            assert sorted((y[img == i] % 2).tolist()) == [0, 1]
    else:  # the labelled digit once on top, once at the bottom: the clips differ
        for i in np.unique(img)[:5]:
            a, b = x[img == i]
            assert not np.array_equal(a, b)


def test_bad_data_arguments():
    with pytest.raises(ValueError, match="n:"):
        D.moving_digits(1000, split="test", n_test=100)
    with pytest.raises(ValueError, match="split"):
        D.moving_digits(4, split="dev")
    with pytest.raises(ValueError, match="task"):
        D.moving_digits(4, task="colour")
    with pytest.raises(ValueError, match="n_val, n_test"):
        D.split_images(0, n_val=1000, n_test=1000)


def _com_x(frames):
    w = np.arange(frames.shape[-1])
    return (frames * w).sum(axis=(-2, -1)) / frames.sum(axis=(-2, -1))


def test_digit_direction_label_needs_the_time_axis():
    """Reversing time flips the direction bit of the label: one frame cannot tell."""
    x, y = D.moving_digits(10, seed=1, noise=0.0)
    com = _com_x(x[:, 0])
    np.testing.assert_array_equal(com[:, -1] > com[:, 0], y % 2 == 0)


def test_opposite_label_is_the_digit_moving_right():
    x, y, img = D.moving_digits(12, seed=4, task="opposite", noise=0.0, return_images=True)
    images, labels = D._digits()
    np.testing.assert_array_equal(labels[img], y)
    half = D.SIZE // 2
    for clip, i in zip(x[:, 0], img):
        top, bottom = clip[:, :half], clip[:, half:]
        dt, db = np.diff(_com_x(top)), np.diff(_com_x(bottom))
        assert (np.all(dt > 0) and np.all(db < 0)) or (np.all(dt < 0) and np.all(db > 0))
        right = top if dt[0] > 0 else bottom
        rows, cols = np.nonzero(right[0])
        crop = right[0, rows.min():rows.min() + 8, cols.min():cols.min() + 8]
        ref = images[i][:, np.nonzero(images[i].any(0))[0].min():]
        ref = ref[np.nonzero(ref.any(1))[0].min():]
        got = crop[:ref.shape[0], :ref.shape[1]]
        np.testing.assert_allclose(got / got.max(), ref / ref.max(), atol=1e-6)


# ------------------------------------------------------------------ evaluation
@pytest.mark.parametrize("kind", ["spatial", "vanilla", "lowrank"])
def test_eval_prediction_does_not_depend_on_the_batch(kind):
    x, y = D.moving_digits(32, seed=0)
    model = training.train(make_model(kind, rank=4, seed=1, channels=SMALL), (x, y), epochs=1, lr=1e-2)
    # in training mode BatchNorm uses the batch's statistics: the same clip scores differently
    with torch.no_grad():
        a = model(torch.from_numpy(x[:2]))[0]
        b = model(torch.from_numpy(x[:32]))[0]
    assert not torch.allclose(a, b, atol=1e-4)
    training.recalibrate_bn(model, x)
    alone = np.concatenate([training.predict(model, x[i:i + 1]) for i in range(5)])
    np.testing.assert_allclose(training.predict(model, x[:5]), alone, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(training.predict(model, x, batch=7), training.predict(model, x, batch=32),
                               rtol=1e-4, atol=1e-4)
    assert not model.training


def test_recalibrated_statistics_are_those_of_the_training_clips():
    x, _ = D.moving_digits(48, seed=0)
    model = training.recalibrate_bn(make_model("spatial", seed=0, channels=SMALL), x, batch=16)
    with torch.no_grad():
        h = model[0](torch.from_numpy(x))
    np.testing.assert_allclose(model[1].running_mean.numpy(), h.mean(dim=(0, 2, 3, 4)).numpy(), atol=1e-5)


def test_pruning_methods_and_controls():
    x, y = D.moving_digits(32, seed=0)
    lr_model = make_model("lowrank", rank=4, channels=SMALL)
    dense = training.prune_finetune(to_vanilla(lr_model), "dense", 0.25, (x, y), epochs=1)
    assert all(m.density == 1.0 for m in conv_layers(dense))
    pruned = training.prune_finetune(make_model("lowrank", rank=4, channels=SMALL), "lowrank-column", 0.25, (x, y),
                                     epochs=1)
    assert all(m.density == 0.25 for m in conv_layers(pruned))
    unstr = training.prune_finetune(to_vanilla(lr_model), "unstructured", 0.25, (x, y), epochs=1)
    for m in conv_layers(unstr):
        assert m.density == 1.0 and abs(float((m.weight_U != 0).float().mean()) - 0.25) < 0.01
    with pytest.raises(ValueError, match="method"):
        training.prune_finetune(make_model("vanilla", channels=SMALL), "lowrank-column", 0.5, (x, y), epochs=1)
    with pytest.raises(ValueError, match="method"):
        training.prune_finetune(make_model("vanilla", channels=SMALL), "random", 0.5, (x, y), epochs=1)
    with pytest.raises(ValueError, match="channels"):
        make_model("vanilla", channels=(3, 4))
    with pytest.raises(ValueError, match="kind"):
        make_model("dilated")


# ------------------------------------------------------------------ statistics
def test_t_quantiles_hand_checked():
    # two-sided 95 % critical values from any t table
    assert stats.t_quantile(0.975, 1) == pytest.approx(12.706, abs=1e-3)
    assert stats.t_quantile(0.975, 4) == pytest.approx(2.776, abs=1e-3)
    assert stats.t_quantile(0.975, 9) == pytest.approx(2.262, abs=1e-3)


def test_summary_hand_checked():
    s = stats.summarize([0.70, 0.80, 0.90])
    # mean 0.8, sd 0.1, half width 4.303 * 0.1 / sqrt(3) = 0.24843
    assert (s.n, s.mean, s.sd) == (3, pytest.approx(0.8), pytest.approx(0.1))
    assert (s.lo, s.hi) == (pytest.approx(0.8 - 0.24843, abs=1e-4), pytest.approx(0.8 + 0.24843, abs=1e-4))


def test_statistics_match_scipy():
    sps = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for n in (2, 5, 12):
        a = rng.normal(0.8, 0.05, n)
        b = a - rng.normal(0.01, 0.03, n)
        s = stats.summarize(a)
        lo, hi = sps.t.interval(0.95, n - 1, loc=a.mean(), scale=sps.sem(a))
        assert (s.sd, s.lo, s.hi) == (pytest.approx(np.std(a, ddof=1)), pytest.approx(lo), pytest.approx(hi))
        p = stats.paired_test(a, b)
        ref = sps.ttest_rel(a, b)
        ci = ref.confidence_interval(0.95)
        assert (p.p, p.lo, p.hi) == (pytest.approx(ref.pvalue), pytest.approx(ci.low), pytest.approx(ci.high))
        assert p.diff == pytest.approx(np.mean(a - b))


def test_paired_verdicts_follow_the_interval():
    assert stats.paired_test([0.80, 0.82, 0.81, 0.85, 0.81], [0.78, 0.80, 0.80, 0.81, 0.77]).verdict == "higher"
    assert stats.paired_test([0.78, 0.80, 0.80, 0.81, 0.77], [0.80, 0.82, 0.81, 0.85, 0.81]).verdict == "lower"
    assert stats.paired_test([0.80, 0.82, 0.79, 0.85, 0.81],
                             [0.78, 0.80, 0.80, 0.81, 0.77]).verdict == "no difference detected"
    with pytest.raises(ValueError, match="equal lengths"):
        stats.paired_test([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="values"):
        stats.summarize([0.5])


# ------------------------------------------------------------------ end to end, resumable
def test_cli_runs_end_to_end_and_resumes(tmp_path, monkeypatch):
    out = tmp_path / "out"
    (out).mkdir()
    (out / "experiments.md").write_text("# Experiments\n\nintro kept\n\n" + reproduction.BEGIN + "\nold\n" +
                                        reproduction.END + "\n\n## Another section, kept\n")
    args = ["--quick", "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    assert cli.main(args) == 0
    res = json.loads((out / "experiment.json").read_text())
    cfg = reproduction.Config.quick()
    assert res["config"] == cfg.to_json()
    assert set(res["runs"]) == {k for k, _ in reproduction.plan(cfg)}
    assert all(0.0 <= r["acc"] <= 1.0 for k, r in res["runs"].items() if "acc" in r)
    assert set(res["timing"]["times"]) == {"dense/U/d=1", "lowrank-column/PQ/d=0.5", "column/U/d=0.5",
                                           "unstructured/U/d=0.5"}
    md = (out / "experiments.md").read_text()
    assert md.startswith("# Experiments\n\nintro kept") and md.endswith("## Another section, kept\n")
    assert reproduction.read_markdown_block(str(out / "experiments.md")) == reproduction.report(res)
    assert (out / "experiment.png").stat().st_size > 1000

    # a rerun skips every finished run ...
    def refuse(*a, **k):
        raise AssertionError("a finished run was run again")

    monkeypatch.setattr(reproduction, "run_job", refuse)
    assert cli.main(args) == 0
    # ... and runs exactly the missing ones
    del res["runs"]["train/opposite/vanilla/seed=1"], res["runs"]["prune/column/U/d=0.5/seed=1"]
    (out / "experiment.json").write_text(json.dumps(res))
    done = []
    monkeypatch.undo()
    real = reproduction.run_job

    def record(cfg, spec, runs, cache_dir):
        done.append(spec)
        return real(cfg, spec, runs, cache_dir)

    monkeypatch.setattr(reproduction, "run_job", record)
    assert cli.main(args) == 0
    assert sorted((s["type"], s.get("task"), s.get("method"), s["seed"]) for s in done) == \
        [("prune", None, "column", 1), ("train", "opposite", None, 1)]
    res2 = json.loads((out / "experiment.json").read_text())
    assert set(res2["runs"]) == {k for k, _ in reproduction.plan(cfg)}
    # a pruning run whose start model is gone from the cache retrains the start model first
    (tmp_path / "cache" / "prune-start-seed1.npz").unlink()
    del res2["runs"]["prune/dense/PQ/d=1/seed=1"]
    (out / "experiment.json").write_text(json.dumps(res2))
    done.clear()
    assert cli.main(args) == 0
    assert [(s["type"], s.get("kind"), s.get("method"), s["seed"]) for s in done] == \
        [("train", "lowrank", None, 1), ("prune", None, "dense", 1)]

    # a second pass (here: pass a's numbers under another machine) adds its verdicts and the robust column
    res3 = json.loads((out / "experiment.json").read_text())
    assert res3["machine"]["simd_bytes"] > 0 and "Machine: pass a:" in reproduction.report(res3)
    other = dict(res3, machine=dict(res3["machine"], threads=7))
    (out / "experiment.b.json").write_text(json.dumps(other))
    others = reproduction.load_other_passes(str(out), res3)
    assert [o["name"] for o in others] == ["b"]
    text = reproduction.report(res3, others)
    assert "| pass b | robust |" in text and "**robust**" in text and "7 threads per run" in text


def test_learning_rate_over_several_tuning_seeds():
    cfg = reproduction.Config.quick().__class__(**{**reproduction.Config.quick().__dict__,
                                                   "tune_seeds": (1000, 1001), "lr_grid": (1e-3, 1e-2)})
    keys = [k for k, s in reproduction.plan(cfg) if s["type"] == "tune"]
    assert "tune/vanilla/lr=0.01/tune=1001" in keys and len(keys) == 2 * 2 * len(reproduction.families(cfg))
    runs = {k: {"val_acc": 0.5 + (0.1 if "lr=0.01/" in k else 0.0) + (0.01 if k.endswith("1001") else 0.0)}
            for k in keys}
    c = reproduction.lr_choice(cfg, runs, "vanilla")
    assert c.lr == 1e-2 and c.runner_up == 1e-3 and c.margin == pytest.approx(0.1)
    # one tuning seed: the published key format and configuration
    assert "tune/spatial/lr=0.003" in [k for k, _ in reproduction.plan(reproduction.Config.quick())]
    assert "tune_seed" in reproduction.Config.v1().to_json()
    assert reproduction.Config.from_json(reproduction.Config.v1().to_json()) == reproduction.Config.v1()


def test_a_changed_configuration_starts_over(tmp_path):
    path = str(tmp_path / "r.json")
    reproduction.ResultCache(path, reproduction.Config.quick()).put("x", {"acc": 1.0})
    assert reproduction.ResultCache(path, reproduction.Config.quick()).runs == {"x": {"acc": 1.0}}
    other = reproduction.Config.quick().__class__(**{**reproduction.Config.quick().__dict__, "epochs": 2})
    assert reproduction.ResultCache(path, other).runs == {}


@pytest.mark.skipif(not (DOCS / "experiments.md").exists(), reason="docs/ not present (installed without sources)")
def test_published_page_is_the_published_json():
    """docs/experiments.md shows exactly what docs/experiment.json holds, from the default command."""
    md = (DOCS / "experiments.md").read_text()
    if not (DOCS / "experiment.json").exists():
        assert reproduction.BEGIN not in md and "](experiment.png)" not in md, "numbers published without their data"
        return
    res = json.loads((DOCS / "experiment.json").read_text())
    # the published tables come from a preset of the command: the robust default once re-run, else v1
    presets = [reproduction.Config(), reproduction.Config.v1()]
    assert res["config"] in [c.to_json() for c in presets]
    cfg = reproduction.Config.from_json(res["config"])
    assert set(res["runs"]) == {k for k, _ in reproduction.plan(cfg)}
    assert reproduction.read_markdown_block(str(DOCS / "experiments.md")) == reproduction.report(res)


def test_not_imported_by_the_library():
    import subprocess
    import sys

    code = "import sys, pywino3d, pywino3d.torch; print(any(m.startswith('pywino3d.experiments') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
