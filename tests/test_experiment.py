"""The reproduction experiment: deterministic data and a smoke run."""
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

from pywino3d.experiments import data as experiment, reproduction  # noqa: E402


def test_data_is_deterministic():
    a = experiment.moving_digits(20, seed=3)
    b = experiment.moving_digits(20, seed=3)
    c = experiment.moving_digits(20, seed=4)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    x, y = a
    assert x.shape == (20, 1, experiment.FRAMES, experiment.SIZE, experiment.SIZE) and x.dtype == np.float32
    assert y.min() >= 0 and y.max() < experiment.NCLASS


def test_label_needs_the_time_axis():
    """Reversing time flips the direction bit of the label: one frame cannot tell."""
    x, y = experiment.moving_digits(10, seed=1, noise=0.0)
    com = (x[:, 0] * np.arange(experiment.SIZE)).sum(axis=(2, 3)) / x[:, 0].sum(axis=(2, 3))
    moving_right = com[:, -1] > com[:, 0]
    np.testing.assert_array_equal(moving_right, y % 2 == 0)


def test_smoke_run(tmp_path):
    res = reproduction.run(quick=True, out_md=str(tmp_path / "e.md"), out_png=str(tmp_path / "e.png"))
    assert {r["kind"] for r in res["train"]} == {"spatial", "vanilla", "lowrank", "residual"}
    assert all(0.0 <= r["acc"] <= 1.0 for r in res["train"] + res["prune"])
    assert {r["method"] for r in res["prune"]} == {"lowrank-column", "column", "unstructured"}
    assert (tmp_path / "e.md").read_text().startswith("# Experiment")
    assert (tmp_path / "e.png").stat().st_size > 1000


def test_not_imported_by_the_library():
    import subprocess
    import sys

    code = "import sys, pywino3d, pywino3d.torch; print(any(m.startswith('pywino3d.experiments') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
