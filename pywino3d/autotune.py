"""Choose an algorithm by measuring it, once per problem and machine.

In the spirit of cuDNN's benchmark mode: the first time a problem is seen,
every candidate implementation is run on the real data and the fastest is
remembered -- in memory for the process, and in a small JSON file under the
user cache directory for the next processes on the same machine.

What :func:`choose` does for a problem not seen before:

1. one warm-up call per candidate (page faults, thread start-up, lazily built
   tables); a candidate that raises :class:`MemoryError` here or later is
   dropped, any other exception propagates;
2. timed rounds: every remaining candidate once per round, the order
   alternating between rounds (ABC, CBA, ...) so that drifting machine load
   does not favour one side; at most :data:`ROUNDS` rounds;
3. after two rounds a candidate whose median is more than
   :data:`SLOWER_FACTOR` times the best median is no longer timed; the rounds
   also stop when the next one would exceed :data:`TIME_BUDGET` seconds for
   the whole decision (warm-ups included; at least one timed round is always
   run) -- except on a close call: the candidates within
   :data:`CLOSE_FACTOR` of the best median go on alone until they have
   :data:`CLOSE_ROUNDS` samples each, so that two tiles a few percent apart
   are not told apart by one noisy sample each;
4. the candidate with the lowest median wins; its name, every median and the
   machine fingerprint are stored.

Cache entries are keyed by the operation, the problem key, the CPU model,
the thread count, the pywino3d version, a digest of the compiled kernels and
the dtype, so a cache file copied to another machine or left over from
another version or build is never trusted.
``PYWINO3D_AUTOTUNE=0`` turns tuning off (nothing is read or written; the
callers fall back to their cost models); ``PYWINO3D_CACHE_DIR`` moves the
cache file.  Failure modes are listed in ``docs/failure_modes.md``.
"""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from functools import lru_cache

from pywino3d._core.env import getenv

try:  # POSIX advisory locks; elsewhere writers merge without a lock
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = [
    "AutotuneCacheWarning",
    "Decision",
    "cache_path",
    "choose",
    "clear",
    "enabled",
    "lookup",
]

#: Environment variable: ``0`` (or false/no/off) disables tuning.
ENV_ENABLE = "PYWINO3D_AUTOTUNE"
#: Environment variable: directory of the cache file.
ENV_CACHE_DIR = "PYWINO3D_CACHE_DIR"
#: File name inside the cache directory.
FILE_NAME = "autotune.json"
#: Layout of the cache file; a file with another value is foreign.
FORMAT = 1
#: Timed rounds at most (``rounds=None``).
ROUNDS = 4
#: After two rounds, candidates slower than this factor times the best stop.
SLOWER_FACTOR = 1.5
#: Seconds one decision may take, warm-ups included (at least one timed round).
TIME_BUDGET = 2.0
#: Candidates within this factor of the best median are a close call ...
CLOSE_FACTOR = 1.2
#: ... and get this many timed rounds (among themselves) whatever the budget.
CLOSE_ROUNDS = 3
#: Entries kept in the file; the oldest go first beyond this.
MAX_ENTRIES = 4096
#: Seconds a writer waits for the lock file before merging without it.
LOCK_TIMEOUT = 10.0


class AutotuneCacheWarning(UserWarning):
    """The autotune cache file could not be read or written.

    Tuning still works; decisions are then kept in memory only (unwritable
    directory) or the file is rewritten (corrupted, truncated or foreign
    file).  Issued once per file and cause.
    """


@dataclass(frozen=True)
class Decision:
    """The outcome of :func:`choose` or :func:`lookup`.

    Attributes
    ----------
    best : str
        Name of the fastest candidate.
    times : dict of str to float
        Median seconds per timed candidate (empty when a single candidate
        was returned without timing; candidates dropped for
        :class:`MemoryError` are absent).
    cached : bool
        True when the decision comes from the memory or disk cache.

    Examples
    --------
    >>> from pywino3d.autotune import Decision
    >>> d = Decision(best="a", times={"a": 0.01, "b": 0.02}, cached=False)
    >>> d.best, d.cached
    ('a', False)
    """

    best: str
    times: dict = field(default_factory=dict)
    cached: bool = False


# ---------------------------------------------------------------- state
_lock = threading.RLock()
_memory: dict = {}  # entry key (str) -> (Decision, frozenset of candidate names)
_warned: set = set()  # (path, cause, file state) already warned about
_unwritable: set = set()  # cache directories found unwritable in this process
_file_memo: dict = {}  # path -> ((mtime_ns, size, inode), entries)


def _after_fork():  # a lock held by another thread at fork time stays held in the child
    global _lock
    _lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def enabled():
    """Whether tuning is on (``PYWINO3D_AUTOTUNE`` is not ``0``).

    Returns
    -------
    bool

    Examples
    --------
    >>> import os
    >>> from pywino3d import autotune
    >>> autotune.enabled() == (os.environ.get("PYWINO3D_AUTOTUNE", "1") != "0")
    True
    """
    v = getenv(ENV_ENABLE, "1").strip().lower()
    return v not in ("0", "false", "no", "off")


def cache_path():
    """Path of the JSON cache file (it need not exist).

    ``$PYWINO3D_CACHE_DIR/autotune.json`` if that variable is set, else
    ``autotune.json`` in the user cache directory: ``$XDG_CACHE_HOME/pywino3d``
    or ``~/.cache/pywino3d`` (``~/Library/Caches/pywino3d`` on macOS,
    ``%LOCALAPPDATA%\\pywino3d\\Cache`` on Windows).

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> from pywino3d import autotune
    >>> autotune.cache_path().name
    'autotune.json'
    """
    d = os.environ.get(ENV_CACHE_DIR)
    if d:
        return pathlib.Path(d).expanduser() / FILE_NAME
    if sys.platform == "win32":  # pragma: no cover
        base = os.environ.get("LOCALAPPDATA") or str(pathlib.Path.home() / "AppData" / "Local")
        return pathlib.Path(base) / "pywino3d" / "Cache" / FILE_NAME
    if sys.platform == "darwin":  # pragma: no cover
        return pathlib.Path.home() / "Library" / "Caches" / "pywino3d" / FILE_NAME
    base = os.environ.get("XDG_CACHE_HOME")
    if not base or not os.path.isabs(base):
        base = str(pathlib.Path.home() / ".cache")
    return pathlib.Path(base) / "pywino3d" / FILE_NAME


def clear(memory=True, disk=False):
    """Forget tuning decisions.

    Parameters
    ----------
    memory : bool, default True
        Empty the in-process cache (and forget which cache warnings were
        already issued, so they can be issued again).
    disk : bool, default False
        Delete the cache file (every process's entries for this user).

    Examples
    --------
    >>> from pywino3d import autotune
    >>> autotune.clear()
    >>> autotune.lookup("example", (1,), dtype="float32", threads=1) is None
    True
    """
    with _lock:
        if memory:
            _memory.clear()
            _warned.clear()
            _unwritable.clear()
            _file_memo.clear()
        if disk:
            path = cache_path()
            _file_memo.pop(str(path), None)
            with _file_lock(path):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()


# ---------------------------------------------------------- fingerprint
@lru_cache(maxsize=1)
def _cpu_model():
    """The CPU model name ("model name" of /proc/cpuinfo where it exists)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    name = line.split(":", 1)[1].strip()
                    if name:
                        return " ".join(name.split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _version():
    from pywino3d._core.version import __version__

    return __version__


#: The package holding every compiled extension (``setup.py``'s ``EXT_DIR``).
EXTENSIONS_PACKAGE = "pywino3d._backends.cpu._ext"


@lru_cache(maxsize=1)
def _build():
    """A digest of the compiled kernels (the bytes of every extension module
    in :data:`EXTENSIONS_PACKAGE`, found by listing that folder, so a new or
    moved extension cannot silently drop out), so that a rebuild with
    changed kernels -- same version string, e.g. a development checkout --
    does not reuse decisions measured on the old kernels."""
    import hashlib
    import importlib.machinery
    import importlib.util

    spec = importlib.util.find_spec(EXTENSIONS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"autotune: the compiled extensions' package {EXTENSIONS_PACKAGE} is missing")
    files = sorted(p for d in spec.submodule_search_locations for p in pathlib.Path(d).iterdir()
                   if p.name.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)))
    if not files:
        raise ImportError(f"autotune: no compiled extension in {EXTENSIONS_PACKAGE} (is the package built?)")
    h = hashlib.sha1()
    for p in files:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


def _dtype_name(dtype):
    s = str(dtype)
    if s.startswith("torch."):
        return s[len("torch."):]
    try:
        import numpy as np

        return np.dtype(dtype).name
    except TypeError:
        return s


def _fingerprint(threads, dtype):
    """What, besides op and key, a decision depends on."""
    return {"cpu": _cpu_model(), "threads": int(threads), "version": _version(),
            "build": _build(), "dtype": _dtype_name(dtype)}


def _plain_key(key, name="key"):
    """``key`` as nested JSON lists of ints, floats, strs, bools and None."""
    if key is None or isinstance(key, (str, bool)):
        return key
    if type(key).__name__ == "bool_":  # numpy.bool_
        return bool(key)
    if isinstance(key, (tuple, list)):
        return [_plain_key(k, name) for k in key]
    if hasattr(key, "__index__"):  # int, numpy integers
        return int(key.__index__())
    if isinstance(key, float) or type(key).__name__.startswith("float"):
        return float(key)
    raise TypeError(f"{name}: expected a tuple of ints, strs, floats or None, "
                    f"got an element {key!r} of type {type(key).__name__}")


def _entry_key(op, key, threads, dtype):
    """The cache's key string of a problem, and the fingerprint it holds
    (the string memoized for hashable keys: ``conv3d`` asks on every call).
    Keys that compare equal share the string (``(1,)`` and ``(True,)``):
    every caller builds its keys with the same types in each place."""
    if not isinstance(op, str) or not op:
        raise TypeError(f"op: expected a non-empty str, got {op!r}")
    if isinstance(threads, bool) or not hasattr(threads, "__index__") or int(threads) < 1:
        raise ValueError(f"threads: expected a positive int, got {threads!r}")
    fp = _fingerprint(threads, dtype)
    fields = (fp["cpu"], fp["threads"], fp["version"], fp["build"], fp["dtype"])
    try:
        return _key_string_memo(op, key, fields), fp
    except TypeError:  # an unhashable key (lists), or one _plain_key refuses
        return _key_string(op, _plain_key(key), fields), fp


@lru_cache(maxsize=1024)
def _key_string_memo(op, key, fields):
    return _key_string(op, _plain_key(key), fields)


def _key_string(op, plain, fields):
    return json.dumps([op, plain, *fields], separators=(",", ":"))


# ------------------------------------------------------------ the file
def _warn_once(path, cause, state, message):
    token = (str(path), cause, state)
    if token in _warned:
        return
    _warned.add(token)
    warnings.warn(AutotuneCacheWarning(message), stacklevel=4)


def _read_file(path):
    """Entries of the cache file; {} (with one warning) if it is unusable."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return {}
    except OSError as e:
        _warn_once(path, "stat", None, f"autotune cache {path} cannot be read ({e}); not using it")
        return {}
    state = (st.st_mtime_ns, st.st_size, st.st_ino)
    memo = _file_memo.get(str(path))
    if memo is not None and memo[0] == state:
        return memo[1]
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        _warn_once(path, "read", state, f"autotune cache {path} cannot be read ({e}); not using it")
        return {}
    entries = _parse(raw, path, state)
    _file_memo[str(path)] = (state, entries)
    return entries


def _parse(raw, path, state):
    why = None
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        doc, why = None, "is corrupted or truncated (not valid JSON)"
    if why is None:
        if not isinstance(doc, dict) or doc.get("library") != "pywino3d" or "format" not in doc:
            why = "is not a pywino3d autotune cache"
        elif doc.get("format") != FORMAT:
            why = f"has format {doc.get('format')!r}, this version reads format {FORMAT}"
        elif not isinstance(doc.get("entries"), dict):
            why = "has no entries table"
    if why is not None:
        _warn_once(path, "content", state,
                   f"autotune cache {path} {why}; ignoring it (it is rewritten at the next decision)")
        return {}
    good = {}
    for k, e in doc["entries"].items():
        if (isinstance(e, dict) and isinstance(e.get("best"), str) and isinstance(e.get("times"), dict)
                and isinstance(e.get("candidates"), list)):
            good[k] = e
    return good


@contextlib.contextmanager
def _file_lock(path):
    """Exclusive advisory lock on ``<file>.lock`` (best effort: without
    fcntl, in a read-only directory or after LOCK_TIMEOUT the caller goes on
    unlocked; writes stay atomic, only a concurrent entry may be lost)."""
    fd = None
    if fcntl is not None:
        try:
            fd = os.open(str(path) + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            fd = None
    try:
        if fd is not None:
            deadline = time.monotonic() + LOCK_TIMEOUT
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.005)
        yield
    finally:
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _atomic_write(path, text):
    """Write ``text`` to a temporary file in path's directory, fsync it and
    rename it over ``path`` (readers see the old or the new file, never a
    mixture)."""
    fd, tmp = tempfile.mkstemp(prefix=".autotune-", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    with contextlib.suppress(OSError, AttributeError):  # make the rename durable (POSIX)
        dfd = os.open(str(path.parent), os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _dumps(entries):
    """The file's text: valid JSON, one entry per line."""
    lines = ",\n".join(f" {json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in entries.items())
    return f'{{"library": "pywino3d", "format": {FORMAT}, "entries": {{\n{lines}\n}}}}\n'


def _store_disk(ekey, entry):
    path = cache_path()
    folder = str(path.parent)
    if folder in _unwritable:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(path):
            entries = dict(_read_file(path))  # merge with what other processes wrote
            entries.pop(ekey, None)
            entries[ekey] = entry
            if len(entries) > MAX_ENTRIES:
                for k in sorted(entries, key=lambda k: entries[k].get("created", 0))[:len(entries) - MAX_ENTRIES]:
                    del entries[k]
            _atomic_write(path, _dumps(entries))
            _file_memo.pop(str(path), None)
    except OSError as e:
        _unwritable.add(folder)
        _warn_once(path, "write", None,
                   f"autotune cache directory {folder} is not writable ({e.__class__.__name__}: {e}); "
                   f"tuning decisions are kept in memory only (set {ENV_CACHE_DIR} to a writable "
                   f"directory, or {ENV_ENABLE}=0 to turn tuning off)")


# ------------------------------------------------------------ decisions
def _from_entry(e):
    return Decision(best=e["best"], times={str(k): float(v) for k, v in e["times"].items()}, cached=True)


def _lookup(ekey):
    with _lock:
        hit = _memory.get(ekey)
        if hit is not None:
            return hit
        e = _read_file(cache_path()).get(ekey)
        if e is None:
            return None
        try:
            hit = (_from_entry(e), frozenset(map(str, e["candidates"])))
        except (TypeError, ValueError):
            return None
        _memory[ekey] = hit
        return hit


def lookup(op, key, *, dtype, threads):
    """The cached decision for a problem, or None; never times anything.

    Parameters
    ----------
    op, key, dtype, threads
        As in :func:`choose`.

    Returns
    -------
    Decision or None
        None when nothing is cached for this problem on this machine (CPU
        model, threads, pywino3d version, dtype) or tuning is disabled.

    Examples
    --------
    >>> from pywino3d import autotune
    >>> autotune.lookup("never-tuned", (0,), dtype="float32", threads=1) is None
    True
    """
    if not enabled():
        return None
    ekey, _ = _entry_key(op, key, threads, dtype)
    hit = _lookup(ekey)
    return None if hit is None else hit[0]


def _time_once(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _measure(candidates, rounds):
    """Median seconds per candidate (see the module docstring)."""
    start = time.perf_counter()
    alive, warm = [], {}
    last_oom = None
    for name, fn in candidates.items():
        try:
            warm[name] = _time_once(fn)
        except MemoryError as e:
            last_oom = e
            continue
        alive.append(name)
    if not alive:
        raise MemoryError("autotune: every candidate ran out of memory "
                          f"({', '.join(candidates)})") from last_oom
    samples = {n: [] for n in alive}
    per_round = sum(warm.values())
    for r in range(rounds):
        if r > 0:
            left = TIME_BUDGET - (time.perf_counter() - start)
            med = {n: statistics.median(samples[n]) for n in alive}
            if sum(med.values()) > left:
                best = min(med.values())
                close = [n for n in alive if med[n] <= CLOSE_FACTOR * best]
                if len(close) < 2 or r >= CLOSE_ROUNDS:
                    break
                alive = close  # a close call: only these, CLOSE_ROUNDS rounds
        order = alive if r % 2 == 0 else alive[::-1]
        for name in list(order):
            try:
                samples[name].append(_time_once(candidates[name]))
            except MemoryError:
                alive.remove(name)
                del samples[name]
        if not alive:
            raise MemoryError("autotune: every candidate ran out of memory")
        if r >= 1:
            med = {n: statistics.median(samples[n]) for n in alive}
            best = min(med.values())
            alive = [n for n in alive if med[n] <= SLOWER_FACTOR * best]
            if len(alive) == 1:
                break
    return {n: statistics.median(s) for n, s in samples.items() if s}


def choose(op, key, candidates, *, dtype, threads, rounds=None):
    """Run each candidate on the real problem and return the fastest.

    The decision is cached in memory and in :func:`cache_path`; later calls
    for the same problem on the same machine return it without timing.

    Parameters
    ----------
    op : str
        What is being tuned, e.g. ``"conv3d"`` or ``"torch.conv3d.forward"``.
    key : tuple
        The problem: ints, strs, floats or None, nested tuples allowed
        (shapes, padding, backend, ...).
    candidates : dict of str to callable
        Each callable runs its candidate once, with no arguments; the result
        is discarded.  A candidate raising :class:`MemoryError` is dropped;
        any other exception (KeyboardInterrupt included) propagates and
        nothing is cached.
    dtype : numpy dtype, torch dtype or str
    threads : int
        Threads the candidates run with (part of the cache key).
    rounds : int, optional
        Timed rounds at most (default :data:`ROUNDS`); fewer when the
        candidates separate early or :data:`TIME_BUDGET` runs out.

    Returns
    -------
    Decision or None
        None when tuning is disabled (``PYWINO3D_AUTOTUNE=0``): fall back
        to a cost model.  A single candidate is returned untimed (empty
        ``times``).  A cached decision whose candidate set differs from
        ``candidates`` is timed again.

    Raises
    ------
    MemoryError
        When every candidate raised MemoryError.

    Examples
    --------
    >>> import time
    >>> from pywino3d import autotune
    >>> autotune.clear()
    >>> d = autotune.choose("example.sleep", (1,),
    ...                     {"slow": lambda: time.sleep(0.02), "fast": lambda: None},
    ...                     dtype="float32", threads=1)
    >>> d.best, d.cached
    ('fast', False)
    >>> autotune.lookup("example.sleep", (1,), dtype="float32", threads=1).cached
    True
    """
    if not enabled():
        return None
    if not isinstance(candidates, dict) or not candidates:
        raise ValueError(f"candidates: expected a non-empty dict of name -> callable, got {candidates!r}")
    for name, fn in candidates.items():
        if not isinstance(name, str) or not callable(fn):
            raise TypeError(f"candidates: expected str names and callables, got {name!r}: {fn!r}")
    if rounds is None:
        rounds = ROUNDS
    if isinstance(rounds, bool) or not hasattr(rounds, "__index__") or int(rounds) < 1:
        raise ValueError(f"rounds: expected a positive int or None, got {rounds!r}")
    ekey, fp = _entry_key(op, key, threads, dtype)
    if len(candidates) == 1:
        return Decision(best=next(iter(candidates)), times={}, cached=False)
    names = frozenset(candidates)
    hit = _lookup(ekey)
    if hit is not None and hit[1] == names and hit[0].best in candidates:
        return hit[0]
    times = _measure(candidates, int(rounds))
    best = min(times, key=times.__getitem__)
    decision = Decision(best=best, times=dict(times), cached=False)
    entry = {"op": op, "key": _plain_key(key), **fp, "best": best,
             "times": dict(times),
             "candidates": sorted(names), "created": time.time()}
    with _lock:  # disk first: an interrupted write leaves no entry anywhere
        _store_disk(ekey, entry)
        _memory[ekey] = (Decision(best=best, times=dict(times), cached=True), names)
    return decision
