"""pywino3d.autotune: measured choice, memory and disk cache, and its failure modes."""
import doctest
import json
import time
import types
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


#: Nominal run times of the candidates below (seconds).
FAST, SLOW = 0.001, 0.030


class VirtualClock:
    """autotune's clock in these tests: it advances only when a candidate
    "runs" (``sleeper``), by exactly that candidate's nominal time.  The
    decisions under test (order, early stop, budget, close calls) then do not
    depend on how loaded the machine is; one test
    (``test_fastest_of_real_sleeps_wins``) keeps the real clock."""

    def __init__(self):
        self.now = 1000.0

    def perf_counter(self):
        return self.now


_CLOCK = None  # the active VirtualClock, or None: real sleeps
#: The tests that keep the real clock.
REAL_CLOCK = {"test_docstring_examples", "test_fastest_of_real_sleeps_wins"}


@pytest.fixture(autouse=True)
def clock(request, monkeypatch):
    global _CLOCK
    if request.node.originalname in REAL_CLOCK:
        yield None
        return
    c = VirtualClock()
    fake = types.SimpleNamespace(**{k: getattr(time, k) for k in dir(time) if not k.startswith("_")})
    fake.perf_counter = c.perf_counter
    monkeypatch.setattr(autotune, "time", fake)
    _CLOCK = c
    yield c
    _CLOCK = None


def sleeper(seconds, calls=None, name=None):
    def run():
        if calls is not None:
            calls.append(name)
        if _CLOCK is None:
            time.sleep(seconds)
        else:
            _CLOCK.now += seconds
    return run


def sleepers(times, calls=None):
    return {n: sleeper(t, calls, n) for n, t in times.items()}


def entries_on_disk():
    doc = json.loads(autotune.cache_path().read_text())
    return doc["entries"]


def test_docstring_examples():  # on the real clock: the examples time real work
    res = doctest.testmod(autotune, optionflags=doctest.ELLIPSIS)
    assert res.attempted > 0 and res.failed == 0


# ------------------------------------------------------------ the choice
def test_fastest_of_controlled_sleeps_wins(clock):
    t0 = clock.now
    d = autotune.choose("t.sleep", (1, 2), sleepers({"slow": 0.060, "fast": 0.004, "mid": 0.025}),
                        dtype="float32", threads=1)
    assert isinstance(d, Decision) and d.best == "fast" and not d.cached
    assert d.times == pytest.approx({"slow": 0.060, "fast": 0.004, "mid": 0.025})  # exact virtual times
    assert clock.now - t0 > 0.089 * 2  # warm-up and at least one round of all three


def test_fastest_of_real_sleeps_wins():
    """The same on the real clock: sleeps 15x apart (a loaded machine delays
    wake-ups by milliseconds, not by 15x over a 60 ms sleep)."""
    d = autotune.choose("t.sleep", (1, 2), sleepers({"slow": 0.060, "fast": 0.004}), dtype="float32", threads=1)
    assert d.best == "fast" and d.times["slow"] >= 0.060 and d.times["fast"] < d.times["slow"]


def test_warm_up_interleaving_and_early_stop(monkeypatch):
    monkeypatch.setattr(autotune, "SLOWER_FACTOR", 3.0)  # a and c (equal) never separate
    calls = []
    autotune.choose("t.order", (1,), sleepers({"a": 0.008, "b": 0.080, "c": 0.008}, calls),
                    dtype="float32", threads=1, rounds=5)
    # warm-up a b c, round 1 a b c, round 2 c b a; then b (10x slower) stops
    assert calls[:9] == ["a", "b", "c", "a", "b", "c", "c", "b", "a"]
    assert calls.count("b") == 3
    assert calls.count("a") == calls.count("c") == 1 + 5  # warm-up + rounds=5


def test_time_budget_bounds_the_decision(monkeypatch, clock):
    monkeypatch.setattr(autotune, "TIME_BUDGET", 0.2)
    t0 = clock.now
    d = autotune.choose("t.budget", (1,), sleepers({"a": 0.05, "b": 0.075}), dtype="float32",
                        threads=1, rounds=50)
    # warm-ups (0.125 s) + one round (0.125 s): the next round would pass the budget
    assert clock.now - t0 == pytest.approx(0.25)
    assert d.best == "a"


def test_close_calls_get_more_rounds_beyond_the_budget(monkeypatch):
    """Over budget after one round, the candidates within CLOSE_FACTOR of the
    best go on alone to CLOSE_ROUNDS samples; the slow one is not timed again."""
    monkeypatch.setattr(autotune, "TIME_BUDGET", 0.05)
    monkeypatch.setattr(autotune, "CLOSE_FACTOR", 2.0)
    calls = []
    d = autotune.choose("t.close", (1,), sleepers({"a": 0.020, "b": 0.021, "slow": 0.100}, calls),
                        dtype="float32", threads=1, rounds=50)
    assert calls.count("slow") == 2  # warm-up + the first round
    assert calls.count("a") == calls.count("b") == 1 + autotune.CLOSE_ROUNDS
    assert len(d.times) == 3 and d.best in ("a", "b")


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
    d1 = autotune.choose("t.mem", (3,), sleepers({"a": SLOW, "b": FAST}, calls), dtype="float32", threads=2)
    n = len(calls)
    d2 = autotune.choose("t.mem", (3,), sleepers({"a": SLOW, "b": FAST}, calls), dtype="float32", threads=2)
    assert len(calls) == n and d2.cached and d2.best == d1.best == "b" and d2.times == d1.times


def test_disk_cache_survives_the_memory_cache():
    d1 = autotune.choose("t.disk", (4, "x", None), sleepers({"a": FAST, "b": SLOW}), dtype=np.float64,
                         threads=3)
    assert autotune.cache_path().exists()
    autotune.clear(memory=True)
    calls = []
    d2 = autotune.choose("t.disk", (4, "x", None), sleepers({"a": FAST, "b": SLOW}, calls),
                         dtype="float64", threads=3)
    assert calls == [] and d2.cached and d2.best == d1.best == "a"
    assert d2.times == pytest.approx(d1.times)
    autotune.clear(memory=True, disk=True)
    assert not autotune.cache_path().exists()
    assert autotune.lookup("t.disk", (4, "x", None), dtype="float64", threads=3) is None


def test_changed_candidate_set_is_timed_again():
    autotune.choose("t.set", (1,), sleepers({"a": FAST, "b": SLOW}), dtype="float32", threads=1)
    calls = []
    d = autotune.choose("t.set", (1,), sleepers({"a": 2 * SLOW, "b": SLOW, "c": FAST}, calls),
                        dtype="float32", threads=1)
    assert calls and d.best == "c" and not d.cached


@pytest.mark.parametrize("change", ["cpu", "threads", "version", "build", "dtype", "op", "key"])
def test_key_includes_machine_threads_version_dtype(monkeypatch, change):
    args = dict(op="t.fp", key=(8, 8), dtype="float32", threads=2)
    autotune.choose(args["op"], args["key"], sleepers({"a": FAST, "b": SLOW}), dtype=args["dtype"],
                    threads=args["threads"])
    assert autotune.lookup(**args) is not None
    autotune.clear(memory=True)  # the disk entry must not match either
    if change == "cpu":
        monkeypatch.setattr(autotune, "_cpu_model", lambda: "Some Other CPU 9000")
    elif change == "version":
        monkeypatch.setattr(autotune, "_version", lambda: "99.0")
    elif change == "build":
        monkeypatch.setattr(autotune, "_build", lambda: "rebuilt-kernels")
    else:
        args[change] = {"threads": 3, "dtype": "float64", "op": "t.fp2", "key": (8, 9)}[change]
    assert autotune.lookup(**args) is None
    entry = next(iter(entries_on_disk().values()))
    assert {"cpu", "threads", "version", "build", "dtype"} <= set(entry)


def test_dtype_spellings_share_an_entry():
    torch = pytest.importorskip("torch")
    autotune.choose("t.dt", (1,), sleepers({"a": FAST, "b": SLOW}), dtype=torch.float32, threads=1)
    assert autotune.lookup("t.dt", (1,), dtype=np.float32, threads=1) is not None
    assert autotune.lookup("t.dt", (1,), dtype="float32", threads=1) is not None
    assert autotune.lookup("t.dt", (1,), dtype=torch.float64, threads=1) is None


def test_disabled_times_nothing_and_touches_no_file(monkeypatch, fresh_cache):
    autotune.choose("t.off", (1,), sleepers({"a": FAST, "b": SLOW}), dtype="float32", threads=1)
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


# ------------------------------------------------------- a damaged file
DAMAGED = {
    "corrupted": b"\x00\xff garbage {{{",
    "truncated": None,  # the first half of a valid file
    "foreign-format": json.dumps({"library": "pywino3d", "format": 999, "entries": {}}).encode(),
    "not-ours": json.dumps({"some": "other tool"}).encode(),
    "entries-not-a-table": json.dumps({"library": "pywino3d", "format": 1, "entries": [1, 2]}).encode(),
}


@pytest.mark.parametrize("kind", list(DAMAGED))
def test_damaged_file_warns_once_and_is_rewritten(kind):
    path = autotune.cache_path()
    autotune.choose("t.dmg", (0,), sleepers({"a": FAST, "b": SLOW}), dtype="float32", threads=1)
    good = path.read_bytes()
    path.write_bytes(DAMAGED[kind] if DAMAGED[kind] is not None else good[: len(good) // 2])
    autotune.clear(memory=True)
    with pytest.warns(AutotuneCacheWarning) as rec:
        assert autotune.lookup("t.dmg", (0,), dtype="float32", threads=1) is None
        autotune.choose("t.dmg", (1,), sleepers({"a": FAST, "b": SLOW}), dtype="float32", threads=1)
        autotune.choose("t.dmg", (2,), sleepers({"a": SLOW, "b": FAST}), dtype="float32", threads=1)
    assert len([w for w in rec if issubclass(w.category, AutotuneCacheWarning)]) == 1
    assert "ignoring it" in str(rec[0].message)
    entries = entries_on_disk()  # valid again, with the two new entries
    assert sorted(e["key"] for e in entries.values()) == [[1], [2]]
    autotune.clear(memory=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert autotune.lookup("t.dmg", (2,), dtype="float32", threads=1).best == "b"


def test_entry_of_another_version_in_the_file_is_not_used(monkeypatch):
    autotune.choose("t.ver", (0,), sleepers({"a": FAST, "b": SLOW}), dtype="float32", threads=1)
    doc = json.loads(autotune.cache_path().read_text())
    (k, e), = doc["entries"].items()
    doc["entries"] = {k.replace(e["version"], "0.0.0-other"): {**e, "version": "0.0.0-other"}}
    autotune.cache_path().write_text(json.dumps(doc))
    autotune.clear(memory=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a valid file with foreign entries is no warning
        assert autotune.lookup("t.ver", (0,), dtype="float32", threads=1) is None
        autotune.choose("t.ver", (0,), sleepers({"a": FAST, "b": SLOW}), dtype="float32", threads=1)
    assert len(entries_on_disk()) == 2  # the other version's entry is kept for that version


# ----------------------------------------------------- several processes
def _tune_many(args):
    cache_dir, worker, n = args
    import os

    os.environ["PYWINO3D_CACHE_DIR"] = cache_dir
    os.environ["PYWINO3D_AUTOTUNE"] = "1"
    from pywino3d import autotune as at

    for i in range(n):
        at.choose("t.race", (worker, i), {"a": lambda: None, "b": lambda: None}, dtype="float32",
                  threads=1, rounds=1)
    return worker


def test_processes_racing_keep_every_entry_and_valid_json(fresh_cache):
    import multiprocessing as mp

    nproc, n = 4, 20
    ctx = mp.get_context("spawn" if "forkserver" not in mp.get_all_start_methods() else "forkserver")
    with ctx.Pool(nproc) as pool:
        assert sorted(pool.map(_tune_many, [(str(fresh_cache), w, n) for w in range(nproc)])) == \
            list(range(nproc))
    keys = sorted(tuple(e["key"]) for e in entries_on_disk().values())
    assert keys == [(w, i) for w in range(nproc) for i in range(n)]
    assert not list(fresh_cache.glob(".autotune-*.tmp"))  # no temporary file left behind


# -------------------------------------------------------- unwritable dir
def test_failed_rename_keeps_memory_cache_and_warns_once(monkeypatch, fresh_cache):
    def deny(src, dst):
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr(autotune.os, "replace", deny)
    with pytest.warns(AutotuneCacheWarning, match="not writable") as rec:
        d1 = autotune.choose("t.ro", (1,), sleepers({"a": FAST, "b": SLOW}), dtype="float32", threads=1)
        d2 = autotune.choose("t.ro", (2,), sleepers({"a": SLOW, "b": FAST}), dtype="float32", threads=1)
    assert len(rec) == 1 and (d1.best, d2.best) == ("a", "b")
    assert not autotune.cache_path().exists()
    assert not list(fresh_cache.glob(".autotune-*.tmp"))  # the temporary file was removed
    calls = []
    assert autotune.choose("t.ro", (1,), sleepers({"a": FAST, "b": SLOW}, calls), dtype="float32",
                           threads=1).cached and calls == []


def test_read_only_directory_really(fresh_cache):
    import os
    import stat

    autotune.choose("t.chmod", (1,), sleepers({"a": FAST, "b": SLOW}), dtype="float32", threads=1)
    before = autotune.cache_path().read_bytes()
    autotune.clear(memory=True)
    fresh_cache.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        probe = fresh_cache / "probe"
        try:
            probe.write_text("x")
            writable = True  # root ignores the mode bits
            probe.unlink()
        except PermissionError:
            writable = False
        # the existing entry is still read from the read-only directory
        assert autotune.lookup("t.chmod", (1,), dtype="float32", threads=1).best == "a"
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            d = autotune.choose("t.chmod", (2,), sleepers({"a": SLOW, "b": FAST}), dtype="float32", threads=1)
        assert d.best == "b"
        cache_warnings = [w for w in rec if issubclass(w.category, AutotuneCacheWarning)]
        if writable:  # effective behaviour: the entry was written, no warning
            assert not cache_warnings and len(entries_on_disk()) == 2
        else:  # memory only, one warning, file untouched
            assert len(cache_warnings) == 1 and autotune.cache_path().read_bytes() == before
        assert autotune.lookup("t.chmod", (2,), dtype="float32", threads=1).best == "b"
    finally:
        fresh_cache.chmod(stat.S_IRWXU)
        os.sync() if hasattr(os, "sync") else None


# ---------------------------------------------------------------- Ctrl-C
@pytest.mark.parametrize("when", [0, 1, 3])  # in the warm-up, the first round, a later round
def test_keyboard_interrupt_leaves_no_entry(when, monkeypatch):
    monkeypatch.setattr(autotune, "SLOWER_FACTOR", 1e9)  # both candidates run every round
    autotune.choose("t.other", (0,), sleepers({"a": FAST, "b": SLOW}), dtype="float32", threads=1)
    before = autotune.cache_path().read_bytes()
    count = []

    def interrupted():
        count.append(1)
        if len(count) > when:
            raise KeyboardInterrupt
        sleeper(FAST)()

    with pytest.raises(KeyboardInterrupt):
        autotune.choose("t.int", (1,), {"a": sleeper(FAST), "b": interrupted}, dtype="float32", threads=1)
    assert autotune.lookup("t.int", (1,), dtype="float32", threads=1) is None
    assert autotune.cache_path().read_bytes() == before
    autotune.clear(memory=True)
    assert autotune.lookup("t.int", (1,), dtype="float32", threads=1) is None
    assert not list(autotune.cache_path().parent.glob(".autotune-*.tmp"))


def test_keyboard_interrupt_while_writing_leaves_old_file(monkeypatch):
    autotune.choose("t.other", (0,), sleepers({"a": FAST, "b": SLOW}), dtype="float32", threads=1)
    before = autotune.cache_path().read_bytes()

    def interrupt(fd):
        raise KeyboardInterrupt

    with monkeypatch.context() as mp, pytest.raises(KeyboardInterrupt):
        mp.setattr(autotune.os, "fsync", interrupt)
        autotune.choose("t.int2", (1,), sleepers({"a": FAST, "b": SLOW}), dtype="float32", threads=1)
    assert autotune.cache_path().read_bytes() == before
    assert not list(autotune.cache_path().parent.glob(".autotune-*.tmp"))
    assert autotune.lookup("t.int2", (1,), dtype="float32", threads=1) is None


# --------------------------------------------------- conv3d(tile="auto")
import pywino3d  # noqa: E402
from pywino3d._choice import cost as _tiles  # noqa: E402


@pytest.fixture
def layer():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 8, 9, 10, 11)).astype(np.float32)
    w = rng.standard_normal((6, 8, 3, 3, 3)).astype(np.float32)
    return x, w


def _timed_names(x, w, padding=1):
    out = tuple(s + 2 * padding - 2 for s in x.shape[2:])
    cands = _tiles.conv3d_candidates(out, w.shape[2:], x.shape[0], x.shape[1], w.shape[0], x.dtype.itemsize)
    return [c for c in _tiles.candidates_to_time(cands)]


@pytest.fixture
def always_unsure(monkeypatch):
    """Make the cost model unsure about every problem (tiny ones included)."""
    monkeypatch.setattr(_tiles, "MIN_TUNED_SECONDS", 0.0)
    monkeypatch.setattr(_tiles, "UNSURE_FACTOR", 1e9)
    monkeypatch.setattr(_tiles, "CANDIDATE_FACTOR", 1e9)


def test_conv3d_auto_tunes_once_and_uses_the_measured_tile(layer, always_unsure, monkeypatch):
    x, w = layer
    timed = _timed_names(x, w)
    assert len(timed) >= 3 and "direct" in [c.name for c in timed]
    y = pywino3d.conv3d(x, w, padding=1, workers=1)
    (entry,) = entries_on_disk().values()
    assert entry["op"] == "conv3d" and sorted(entry["candidates"]) == sorted(c.name for c in timed)
    assert entry["threads"] == 1 and entry["dtype"] == "float32"
    best = next(c.tile for c in timed if c.name == entry["best"])
    assert y.tobytes() == pywino3d.conv3d(x, w, padding=1, tile=best, workers=1).tobytes()
    # second call: no timing, same bits
    monkeypatch.setattr(autotune, "_measure", lambda *a: pytest.fail("timed again"))
    assert pywino3d.conv3d(x, w, padding=1, workers=1).tobytes() == y.tobytes()


def test_conv3d_auto_uses_a_cached_decision(layer, always_unsure, monkeypatch):
    """A decision in the cache file (as another process would leave it)
    decides the tile, whatever the cost model says."""
    x, w = layer
    timed = _timed_names(x, w)
    model = _tiles.choose_tile((9, 10, 11), (3, 3, 3), 1, 8, 6, 4, direct=True)  # the CPU's model
    planted = next(c for c in timed if c.tile != model)
    pywino3d.conv3d(x, w, padding=1, workers=1)  # tunes and stores the real entry
    path = autotune.cache_path()
    doc = json.loads(path.read_text())
    (k, e), = doc["entries"].items()
    e["best"] = planted.name
    path.write_text(json.dumps(doc))
    autotune.clear(memory=True)
    monkeypatch.setattr(autotune, "_measure", lambda *a: pytest.fail("timed although cached"))
    y = pywino3d.conv3d(x, w, padding=1, workers=1)
    assert y.tobytes() == pywino3d.conv3d(x, w, padding=1, tile=planted.tile, workers=1).tobytes()
    assert y.tobytes() != pywino3d.conv3d(x, w, padding=1, tile=model, workers=1).tobytes()


def test_conv3d_auto_without_tuning_is_the_cost_model(layer, always_unsure, monkeypatch, fresh_cache):
    x, w = layer
    monkeypatch.setenv("PYWINO3D_AUTOTUNE", "0")
    monkeypatch.setattr(autotune, "_measure", lambda *a: pytest.fail("timed although disabled"))
    model = _tiles.choose_tile((9, 10, 11), (3, 3, 3), 1, 8, 6, 4, direct=True)  # the CPU's model
    y1 = pywino3d.conv3d(x, w, padding=1, workers=1)
    y2 = pywino3d.conv3d(x, w, padding=1, workers=2)
    assert y1.tobytes() == y2.tobytes() == pywino3d.conv3d(x, w, padding=1, tile=model, workers=1).tobytes()
    assert not fresh_cache.exists()


def test_conv3d_auto_when_the_model_is_sure_times_nothing(layer, monkeypatch, fresh_cache):
    x, w = layer  # a tiny problem: below MIN_TUNED_SECONDS
    monkeypatch.setattr(autotune, "_measure", lambda *a: pytest.fail("timed a tiny problem"))
    pywino3d.conv3d(x, w, padding=1)
    assert not autotune.cache_path().exists()


def test_tuned_tiles_respect_the_accuracy_rule():
    """No candidate ever has alpha > 8 on an axis (float32 relative L2 error
    <= 1.7e-5 measured, docs/accuracy.md), for any kernel size."""
    for r in range(1, 8):
        for ks in [(r, r, r), (1, r, r), (r, 1, 1)]:
            for c in _tiles.conv3d_candidates((32, 32, 32), ks, 1, 16, 16, 4):
                assert all(m + k - 1 <= 8 or m == 1 for m, k in zip(c.tile, ks)), (ks, c)


def test_accuracy_of_the_largest_admitted_tile(rng):
    """F(6^3, 3^3) (alpha 8), the largest tile tuning can pick for 3^3
    kernels, stays below 3e-5 relative L2 error in float32."""
    x = rng.standard_normal((1, 16, 14, 14, 14))
    w = rng.standard_normal((16, 16, 3, 3, 3)) / np.sqrt(16 * 27)
    ref = pywino3d.conv3d(x, w, padding=1, tile=1)
    y = pywino3d.conv3d(x.astype(np.float32), w.astype(np.float32), padding=1, tile=6)
    err = np.linalg.norm(y - ref) / np.linalg.norm(ref)
    assert err < 3e-5
