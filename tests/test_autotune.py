"""pywino3d.autotune: measured choice, memory and disk cache, and its failure modes."""
import doctest
import json
import time
import warnings

import numpy as np
import pytest

from pywino3d import autotune
from pywino3d.autotune import AutotuneCacheWarning, Decision


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path, monkeypatch):
    """Each test: tuning on, its own cache directory, empty memory cache."""
    monkeypatch.setenv("PYWINO3D_AUTOTUNE", "1")
    monkeypatch.setenv("PYWINO3D_CACHE_DIR", str(tmp_path / "cache"))
    autotune.clear()
    yield tmp_path / "cache"
    autotune.clear()


def sleeper(seconds, calls=None, name=None):
    def run():
        if calls is not None:
            calls.append(name)
        time.sleep(seconds)
    return run


def sleepers(times, calls=None):
    return {n: sleeper(t, calls, n) for n, t in times.items()}


def entries_on_disk():
    doc = json.loads(autotune.cache_path().read_text())
    return doc["entries"]


def test_docstring_examples():
    res = doctest.testmod(autotune, optionflags=doctest.ELLIPSIS)
    assert res.attempted > 0 and res.failed == 0


# ------------------------------------------------------------ the choice
def test_fastest_of_controlled_sleeps_wins():
    d = autotune.choose("t.sleep", (1, 2), sleepers({"slow": 0.030, "fast": 0.004, "mid": 0.015}),
                        dtype="float32", threads=1)
    assert isinstance(d, Decision) and d.best == "fast" and not d.cached
    assert set(d.times) == {"slow", "fast", "mid"}
    assert d.times["fast"] < d.times["mid"] < d.times["slow"]
    assert d.times["slow"] >= 0.030


def test_warm_up_interleaving_and_early_stop():
    calls = []
    autotune.choose("t.order", (1,), sleepers({"a": 0.004, "b": 0.040, "c": 0.005}, calls),
                    dtype="float32", threads=1, rounds=5)
    # warm-up a b c, round 1 a b c, round 2 c b a; b (10x slower) then stops
    assert calls[:9] == ["a", "b", "c", "a", "b", "c", "c", "b", "a"]
    assert calls.count("b") == 3
    assert calls.count("a") > 3  # a and c stay within 1.5x and keep running


def test_time_budget_bounds_the_decision(monkeypatch):
    monkeypatch.setattr(autotune, "TIME_BUDGET", 0.2)
    t0 = time.perf_counter()
    d = autotune.choose("t.budget", (1,), sleepers({"a": 0.05, "b": 0.06}), dtype="float32",
                        threads=1, rounds=50)
    assert time.perf_counter() - t0 < 0.2 + 0.12  # warm-ups + 1 round minimum fit, then stop
    assert d.best in ("a", "b")


def test_single_candidate_is_not_timed():
    calls = []
    d = autotune.choose("t.one", (1,), sleepers({"only": 0.0}, calls), dtype="float32", threads=1)
    assert d == Decision(best="only", times={}, cached=False)
    assert calls == []


def test_memory_error_candidates_are_dropped_others_propagate():
    def oom():
        raise MemoryError("no room")

    d = autotune.choose("t.oom", (1,), {"big": oom, "ok": sleeper(0.001)}, dtype="float32", threads=1)
    assert d.best == "ok" and "big" not in d.times
    with pytest.raises(MemoryError, match="every candidate"):
        autotune.choose("t.oom2", (1,), {"a": oom, "b": oom}, dtype="float32", threads=1)

    def bad():
        raise ValueError("broken candidate")

    with pytest.raises(ValueError, match="broken candidate"):
        autotune.choose("t.bad", (1,), {"a": bad, "b": sleeper(0)}, dtype="float32", threads=1)
    assert autotune.lookup("t.bad", (1,), dtype="float32", threads=1) is None


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(candidates={}), ValueError, "candidates"),
    (dict(candidates={"a": 1, "b": 2}), TypeError, "candidates"),
    (dict(threads=0), ValueError, "threads"),
    (dict(rounds=0), ValueError, "rounds"),
    (dict(key=(1, object())), TypeError, "key"),
    (dict(op=""), TypeError, "op"),
])
def test_bad_arguments_name_the_argument(kwargs, exc, match):
    args = dict(op="t.args", key=(1,), candidates={"a": sleeper(0), "b": sleeper(0)}, dtype="float32",
                threads=1)
    args.update(kwargs)
    op, key, cands = args.pop("op"), args.pop("key"), args.pop("candidates")
    with pytest.raises(exc, match=match):
        autotune.choose(op, key, cands, **args)


# --------------------------------------------------------------- caching
def test_memory_cache_returns_without_timing():
    calls = []
    d1 = autotune.choose("t.mem", (3,), sleepers({"a": 0.002, "b": 0.0}, calls), dtype="float32", threads=2)
    n = len(calls)
    d2 = autotune.choose("t.mem", (3,), sleepers({"a": 0.002, "b": 0.0}, calls), dtype="float32", threads=2)
    assert len(calls) == n and d2.cached and d2.best == d1.best == "b" and d2.times == d1.times


def test_disk_cache_survives_the_memory_cache():
    d1 = autotune.choose("t.disk", (4, "x", None), sleepers({"a": 0.0, "b": 0.003}), dtype=np.float64,
                         threads=3)
    assert autotune.cache_path().exists()
    autotune.clear(memory=True)
    calls = []
    d2 = autotune.choose("t.disk", (4, "x", None), sleepers({"a": 0.0, "b": 0.003}, calls),
                         dtype="float64", threads=3)
    assert calls == [] and d2.cached and d2.best == d1.best == "a"
    assert d2.times == pytest.approx(d1.times)
    autotune.clear(memory=True, disk=True)
    assert not autotune.cache_path().exists()
    assert autotune.lookup("t.disk", (4, "x", None), dtype="float64", threads=3) is None


def test_changed_candidate_set_is_timed_again():
    autotune.choose("t.set", (1,), sleepers({"a": 0.0, "b": 0.002}), dtype="float32", threads=1)
    calls = []
    d = autotune.choose("t.set", (1,), sleepers({"a": 0.004, "b": 0.002, "c": 0.0}, calls),
                        dtype="float32", threads=1)
    assert calls and d.best == "c" and not d.cached


@pytest.mark.parametrize("change", ["cpu", "threads", "version", "dtype", "op", "key"])
def test_key_includes_machine_threads_version_dtype(monkeypatch, change):
    args = dict(op="t.fp", key=(8, 8), dtype="float32", threads=2)
    autotune.choose(args["op"], args["key"], sleepers({"a": 0.0, "b": 0.002}), dtype=args["dtype"],
                    threads=args["threads"])
    assert autotune.lookup(**args) is not None
    autotune.clear(memory=True)  # the disk entry must not match either
    if change == "cpu":
        monkeypatch.setattr(autotune, "_cpu_model", lambda: "Some Other CPU 9000")
    elif change == "version":
        monkeypatch.setattr(autotune, "_version", lambda: "99.0")
    else:
        args[change] = {"threads": 3, "dtype": "float64", "op": "t.fp2", "key": (8, 9)}[change]
    assert autotune.lookup(**args) is None
    entry = next(iter(entries_on_disk().values()))
    assert {"cpu", "threads", "version", "dtype"} <= set(entry)


def test_dtype_spellings_share_an_entry():
    torch = pytest.importorskip("torch")
    autotune.choose("t.dt", (1,), sleepers({"a": 0.0, "b": 0.002}), dtype=torch.float32, threads=1)
    assert autotune.lookup("t.dt", (1,), dtype=np.float32, threads=1) is not None
    assert autotune.lookup("t.dt", (1,), dtype="float32", threads=1) is not None
    assert autotune.lookup("t.dt", (1,), dtype=torch.float64, threads=1) is None


def test_disabled_times_nothing_and_touches_no_file(monkeypatch, fresh_cache):
    autotune.choose("t.off", (1,), sleepers({"a": 0.0, "b": 0.002}), dtype="float32", threads=1)
    autotune.clear(memory=True)
    monkeypatch.setenv("PYWINO3D_AUTOTUNE", "0")
    assert not autotune.enabled()
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda *a, **k: opened.append(a) or real_open(*a, **k))
    calls = []
    assert autotune.choose("t.off", (1,), sleepers({"a": 0.0, "b": 0.0}, calls), dtype="float32",
                           threads=1) is None
    assert autotune.lookup("t.off", (1,), dtype="float32", threads=1) is None
    assert calls == [] and opened == []
