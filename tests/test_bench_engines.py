"""benchmarks/bench_engines.py runs end to end on a tiny volume (the engines
other than torch and pywino3d are in the bench extra, not the test one: a
missing engine is reported as not run, which is checked too)."""
import importlib.util
import pathlib
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("monai")

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "benchmarks"))
import bench_engines  # noqa: E402


def test_quick_run_reports_every_engine(monkeypatch, tmp_path):
    monkeypatch.setenv("PYWINO3D_AUTOTUNE", "0")  # the cost model decides: no timing inside the test
    monkeypatch.setattr(bench_engines, "NEEDS", {**bench_engines.NEEDS, "openvino": ("no_such_package_xyz",)})
    md = tmp_path / "b.md"
    md.write_text("# Benchmarks\n")
    rows = bench_engines.main(["--quick", "--size", "32", "--engines", "pywino3d", "openvino",
                               "--md", str(md), "--json", str(tmp_path / "b.json")])
    done = {r["engine"]: r for r in rows if "skipped" not in r}
    assert set(done) == {"torch", "pywino3d"}  # torch added as the reference
    assert done["torch"]["speedup"] == 1.0 and done["torch"]["rel_l2"] == 0.0
    assert done["pywino3d"]["ms"] > 0 and done["pywino3d"]["rel_l2"] < 1e-4
    skipped = [r for r in rows if "skipped" in r]
    assert [r["engine"] for r in skipped] == ["openvino"] and "not installed" in skipped[0]["skipped"]
    text = md.read_text()
    assert bench_engines.START in text and "| basicunet | 1x1x32x32x32 | pywino3d |" in text
    assert "openvino: not run" in text
    # a second run replaces the block instead of appending another
    bench_engines.main(["--quick", "--size", "32", "--md", str(md)])
    assert md.read_text().count(bench_engines.START) == 1


def test_an_engine_that_fails_is_reported_not_fatal(monkeypatch):
    monkeypatch.setenv("PYWINO3D_AUTOTUNE", "0")
    rows = bench_engines.bench_net("basicunet", ["torch"], 16, 1, 2)  # 1^3 at the bottom: instance norm refuses
    assert rows == [{"net": "basicunet", "engine": "torch", "skipped": rows[0]["skipped"]}]
    assert rows[0]["skipped"].startswith("failed: ValueError")


def test_unknown_network_is_refused():
    with pytest.raises(ValueError, match="nets"):
        bench_engines.build("resnet")


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is in the bench extra only")
def test_openvino_engine_matches_torch(monkeypatch):
    monkeypatch.setenv("PYWINO3D_AUTOTUNE", "0")
    rows = bench_engines.main(["--quick", "--size", "32", "--engines", "openvino"])
    ov = next(r for r in rows if r["engine"] == "openvino")
    assert "skipped" not in ov and ov["rel_l2"] < 1e-4
