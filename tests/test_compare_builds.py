"""benchmarks/compare_builds.py: each side runs its own build, from a neutral folder."""
import importlib.util
import pathlib

import pytest

_spec = importlib.util.spec_from_file_location(
    "compare_builds", pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "compare_builds.py")
compare_builds = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare_builds)


def _fake_build(root, mark):
    pkg = root / mark / "pywino3d"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(f"MARK = {mark!r}\n")
    return root / mark


def test_each_build_runs_its_own_package(tmp_path, monkeypatch):
    a, b = _fake_build(tmp_path, "a"), _fake_build(tmp_path, "b")
    script = tmp_path / "bench.py"
    script.write_text("import pywino3d\nprint('ran', pywino3d.MARK)\n")
    # started from inside a build's folder, as the mistake was: still each side its own
    monkeypatch.chdir(a)
    res = compare_builds.compare(script, [a, b], rounds=2)
    assert res == {a.resolve(): ["ran a", "ran a"], b.resolve(): ["ran b", "ran b"]}


def test_a_folder_without_its_own_package_is_refused(tmp_path):
    a = _fake_build(tmp_path, "a")
    empty = tmp_path / "empty"
    empty.mkdir()
    script = tmp_path / "bench.py"
    script.write_text("print(1)\n")
    # another folder's package (an installed one) or none at all
    with pytest.raises(RuntimeError, match="empty (imports pywino3d from .* not from itself|has no importable)"):
        compare_builds.compare(script, [a, empty], rounds=1)


def test_a_failing_script_is_reported(tmp_path):
    a = _fake_build(tmp_path, "a")
    script = tmp_path / "bench.py"
    script.write_text("raise SystemExit('broken benchmark')\n")
    with pytest.raises(RuntimeError, match="broken benchmark"):
        compare_builds.compare(script, [a], rounds=1)
