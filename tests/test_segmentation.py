"""The segmentation study: its volumes, Dice, the robust-verdict machinery, a --quick smoke run."""
import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("monai")
pytest.importorskip("tqdm")

from pywino3d.experiments import cli, runner, segmentation as S, stats  # noqa: E402
from pywino3d.experiments.models import conv_layers  # noqa: E402
from pywino3d.experiments.volumes import CLASS_NAMES, dice_scores, ellipsoid_volumes  # noqa: E402


# ------------------------------------------------------------------ data
def test_volumes_are_deterministic_per_seed():
    a, b, c = (ellipsoid_volumes(3, seed=s, split="train") for s in (4, 4, 5))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    assert a[0].shape == (3, 1, 32, 32, 32) and a[0].dtype == np.float32 and a[1].dtype == np.int64
    assert set(np.unique(a[1]).tolist()) == {0, 1, 2}
    # a volume does not depend on how many are drawn
    np.testing.assert_array_equal(ellipsoid_volumes(1, seed=4)[1][0], a[1][0])


def test_splits_are_disjoint():
    ys = {s: ellipsoid_volumes(6, seed=0, split=s)[1] for s in ("train", "val", "test")}
    keys = {s: {v.tobytes() for v in y} for s, y in ys.items()}
    assert all(len(k) == 6 for k in keys.values())
    assert not (keys["train"] & keys["val"] or keys["train"] & keys["test"] or keys["val"] & keys["test"])


def test_classes_differ_only_along_depth():
    """Tall objects extend further along depth than flat ones, relative to their in-plane size."""
    _, y = ellipsoid_volumes(20, seed=1, noise=0.0, n_objects=(1, 1))
    ratios = {1: [], 2: []}
    for v in y:
        cls = int(v.max())
        z, yy, _ = np.nonzero(v == cls)
        ratios[cls].append((z.max() - z.min() + 1) / (yy.max() - yy.min() + 1))
    assert ratios[1] and ratios[2]
    assert min(ratios[1]) > 1.2 and max(ratios[2]) <= 1.0


def test_bad_volume_arguments():
    with pytest.raises(ValueError, match="split"):
        ellipsoid_volumes(1, split="dev")
    with pytest.raises(ValueError, match="n:"):
        ellipsoid_volumes(0)
    with pytest.raises(ValueError, match="shape"):
        ellipsoid_volumes(1, shape=(8, 32, 32))
    with pytest.raises(ValueError, match="radius"):
        ellipsoid_volumes(1, radius=(3, 20))
    with pytest.raises(ValueError, match="n_objects"):
        ellipsoid_volumes(1, n_objects=(3, 2))


# ------------------------------------------------------------------ Dice
def test_dice_of_perfect_empty_and_half_predictions():
    _, y = ellipsoid_volumes(2, seed=0, split="test")
    np.testing.assert_allclose(dice_scores(y, y), 1.0)
    np.testing.assert_allclose(dice_scores(np.zeros_like(y), y), 0.0)
    t = np.zeros((1, 4, 4, 4), np.int64)
    t[0, :2] = 1                       # 32 voxels of class 1, class 2 absent
    p = np.zeros_like(t)
    p[0, :1] = 1                       # 16 of them found, nothing else
    np.testing.assert_allclose(dice_scores(p, t), [[2 * 16 / (16 + 32), 1.0]])  # absent and not predicted: 1
    p[0, 3, 0, 0] = 2                  # class 2 predicted where there is none: 0
    assert dice_scores(p, t)[0, 1] == 0.0
    assert len(CLASS_NAMES) == 3


def test_bad_dice_arguments():
    with pytest.raises(ValueError, match="pred, target"):
        dice_scores(np.zeros((1, 4, 4, 4), np.int64), np.zeros((1, 4, 4, 5), np.int64))
    with pytest.raises(ValueError, match="integer"):
        dice_scores(np.zeros((1, 4, 4, 4)), np.zeros((1, 4, 4, 4)))


# ------------------------------------------------------------------ robust verdicts
def test_choose_lr_reports_the_margin():
    c = stats.choose_lr({1e-3: [0.5, 0.6], 1e-2: [0.7, 0.71], 3e-2: [0.69, 0.72]})
    assert c.lr == 1e-2 and c.runner_up == 3e-2 and c.margin == pytest.approx(0.0)
    assert not c.settled  # a tie: the choice hangs on the seeds
    c = stats.choose_lr({1e-3: [0.5], 1e-2: [0.7]})
    assert c.lr == 1e-2 and c.paired is None and not c.settled
    with pytest.raises(ValueError, match="scores"):
        stats.choose_lr({1e-3: [0.5], 1e-2: [0.7, 0.8]})


def test_agreement_needs_two_passes_that_agree():
    assert stats.agreement(["higher"]) == (False, "higher")
    assert stats.agreement(["lower", "lower"]) == (True, "lower")
    assert stats.agreement(["lower", "no difference detected"]) == (False, "split")


def test_machine_record():
    m = runner.machine(1)
    assert m["simd_bytes"] in (16, 32, 64) and m["threads"] == 1
    assert "thread per run" in runner.describe_machine(m)


def test_a_pass_resumes_only_on_its_own_machine_setup(tmp_path):
    path = str(tmp_path / "r.json")
    c = runner.ResultCache(path, {"n": 1}, extra_keys=("machine",))
    c.set_machine(runner.machine(1))
    c.put("a", {"x": 1})
    again = runner.ResultCache(path, {"n": 1}, extra_keys=("machine",))
    again.set_machine(runner.machine(1))  # same setup: fine
    with pytest.raises(RuntimeError, match="another machine setup.*threads 1 -> 2"):
        runner.ResultCache(path, {"n": 1}, extra_keys=("machine",)).set_machine(runner.machine(2))


# ------------------------------------------------------------------ models
def test_conversion_keeps_the_function_and_the_classifier_spatial():
    import torch

    net = S.make_unet(2, 0).eval()
    x = torch.from_numpy(ellipsoid_volumes(1, seed=0)[0])
    ref = net(x)
    conv = S.convert_3x3x3(net, "winograd").eval()
    assert type(conv.final_conv).__name__ == "Conv3d"
    assert len(conv_layers(conv)) == 18
    torch.testing.assert_close(conv(x), ref, atol=1e-4, rtol=1e-4)


def test_slice_net_sees_one_slice_at_a_time():
    import torch

    net = S.make_slice_net(2, 0).eval()
    x = torch.randn(1, 1, 32, 32, 32)
    y = net(x)
    x2 = x.clone()
    x2[:, :, 5] += 1.0
    y2 = net(x2)
    changed = (y2 - y).abs().amax(dim=(0, 1, 3, 4)) > 0
    assert changed.tolist() == [i == 5 for i in range(32)]


# ------------------------------------------------------------------ the study
def test_quick_run_resumes_and_reports_robustness(tmp_path, monkeypatch):
    monkeypatch.setenv("PYWINO3D_AUTOTUNE", "0")  # a smoke run: no timing of candidate algorithms per layer
    out = tmp_path / "docs"
    argv = ["--segmentation", "--quick", "--out", str(out), "--no-progress", "--cache-dir", str(tmp_path / "c"),
            "--jobs", "2"]
    assert cli.main(argv) == 0
    res = json.loads((out / "experiment_segmentation.json").read_text())
    keys = {k for phase in S.plan(S.SegConfig.quick()) for k, _ in phase}
    assert set(res["runs"]) == keys and res["timing"] and res["machine"]["simd_bytes"] > 0
    md = (out / "experiments.md").read_text()
    assert S.BEGIN in md and "only one pass so far" in md and (out / "experiment_segmentation.png").exists()
    # resumes: nothing is rerun
    stamp = {k: r["wall_s"] for k, r in res["runs"].items()}
    assert cli.main(argv) == 0
    res2 = json.loads((out / "experiment_segmentation.json").read_text())
    assert {k: r["wall_s"] for k, r in res2["runs"].items()} == stamp
    # a second pass (here: the same numbers under another name) makes verdicts robust where they agree
    b = dict(res2, config=dict(res2["config"], **{"pass": "b"}))
    (out / "experiment_segmentation.b.json").write_text(json.dumps(b))
    text = S.report(S.load_passes(str(out), S.SegConfig.quick()))
    assert "pass b" in text and "**robust**" in text and "only one pass so far" not in text
    assert "0 of" in text  # the copy differs in no run


def test_bad_study_configuration():
    with pytest.raises(ValueError, match="thin_widths"):
        S.SegConfig(thin_widths=(8,))
    with pytest.raises(ValueError, match="densities"):
        S.SegConfig(densities=(1.0,))
    with pytest.raises(ValueError, match="seeds"):
        S.SegConfig(seeds=(0,))
    with pytest.raises(ValueError, match="starts"):
        S.SegConfig(starts=("vanilla",))


def test_bad_cli_arguments():
    with pytest.raises(SystemExit, match="pass-name"):
        cli.main(["--segmentation", "--quick", "--pass-name", "../x"])
    with pytest.raises(SystemExit, match="choose one"):
        cli.main(["--segmentation", "--pruning", "--quick"])
    with pytest.raises(SystemExit, match="jobs"):
        cli.main(["--segmentation", "--quick", "--jobs", "0"])
