"""What both studies share to run: the resumable results file, the job runner, the machine record.

Every study is a list of phases of independent runs (a run of a later phase
may read the records of earlier ones); :func:`run_phases` runs them in one
process or in a pool of processes, writing every finished run to a
:class:`ResultCache` at once, so an interrupted study resumes where it
stopped.  :func:`machine` records what decides the summation order of the
kernels (CPU flags, the SIMD width the CPU extension was built for, the
thread count), so a table can be read beside the machine that made it.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import tempfile

#: CPU flags recorded beside the tables (those that change the kernels' code paths).
CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "amx_tile", "neon",
             "asimd")


class ResultCache:
    """A results JSON, written after every finished run (atomically).

    Runs are kept only while the stored configuration equals ``config``.

    Parameters
    ----------
    path : str or None
        None keeps everything in memory.
    config : dict
        JSON-able configuration of the study.

    Examples
    --------
    >>> import os, tempfile
    >>> from pywino3d.experiments.runner import ResultCache
    >>> path = os.path.join(tempfile.mkdtemp(), "r.json")
    >>> c = ResultCache(path, {"n": 1}); c.put("a", {"acc": 0.5})
    >>> ResultCache(path, {"n": 1}).runs
    {'a': {'acc': 0.5}}
    >>> ResultCache(path, {"n": 2}).runs
    {}
    """

    def __init__(self, path, config, extra_keys=("timing",)):
        self.path, self.cfg = path, json.loads(json.dumps(config))
        self.runs = {}
        self.extra = {k: None for k in extra_keys}
        if path and os.path.exists(path):
            with open(path) as f:
                old = json.load(f)
            if old.get("config") == self.cfg:
                self.runs = old.get("runs", {})
                self.extra = {k: old.get(k) for k in extra_keys}

    @property
    def timing(self):
        return self.extra.get("timing")

    @timing.setter
    def timing(self, value):
        self.extra["timing"] = value

    def data(self):
        return dict({"config": self.cfg, "runs": self.runs}, **self.extra)

    def set_machine(self, m):
        """Record the :func:`machine` of this pass; a resumed pass must run on the same setup.

        Raises
        ------
        RuntimeError
            When finished runs were made under another CPU, vector width or
            thread count: mixing them would hide the machine-level variation.
        """
        old = self.extra.get("machine")
        keys = ("cpu", "cpu_flags", "simd_bytes", "threads")
        if self.runs and old and any(old.get(k) != m.get(k) for k in keys):
            diff = ", ".join(f"{k} {old.get(k)!r} -> {m.get(k)!r}" for k in keys if old.get(k) != m.get(k))
            raise RuntimeError(f"{self.path}: its runs were made under another machine setup ({diff}); resume it "
                               "there, or give this setup its own --pass-name (or --fresh to start over)")
        self.extra["machine"] = m

    def put(self, key, rec):
        self.runs[key] = rec
        self.save()

    def save(self):
        if not self.path:
            return
        write_json(self.data(), self.path)


def write_json(data, path):
    """Write ``data`` to ``path`` atomically (a temporary file, then a rename)."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, suffix=".json.tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def write_marked_section(path, text, begin, end):
    """Replace the section of ``path`` between the markers ``begin`` and ``end`` by ``text``, or append it.

    Everything outside the markers is kept; a missing file is created.

    Examples
    --------
    >>> import os, tempfile
    >>> from pywino3d.experiments.runner import write_marked_section
    >>> p = os.path.join(tempfile.mkdtemp(), "e.md")
    >>> write_marked_section(p, "one", "<!--b-->", "<!--e-->"); write_marked_section(p, "two", "<!--b-->", "<!--e-->")
    >>> open(p).read().split()
    ['<!--b-->', 'two', '<!--e-->']
    """
    old = open(path).read() if os.path.exists(path) else ""
    block = f"{begin}\n{text.rstrip()}\n{end}\n"
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        new = head + block + rest.split(end, 1)[1].lstrip("\n")
    else:
        new = (old.rstrip("\n") + "\n\n" if old else "") + block
    with open(path, "w") as f:
        f.write(new)


def set_threads(n):
    """Use ``n`` threads in torch and in the BLAS / OpenMP pools; returns the threadpoolctl limiter."""
    import torch
    from threadpoolctl import threadpool_limits

    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"threads: expected an int >= 1, got {n!r}")
    torch.set_num_threads(n)
    return threadpool_limits(n)


def _worker_init(threads):
    global _LIMITS
    _LIMITS = set_threads(threads)


def _call(args):
    fn, spec, runs = args
    return fn(spec, runs)


def run_phases(phases, fn, cache, *, jobs=1, threads=1, progress=True, desc="runs"):
    """Run the jobs not yet in ``cache``, phase after phase; every record goes to the cache at once.

    Parameters
    ----------
    phases : list of lists of (key, spec)
        The runs of a phase are independent; a phase starts when the one
        before it has finished.
    fn : callable(spec, runs) -> dict
        A picklable (module-level) function; ``runs`` holds the records of
        the runs finished so far.
    cache : ResultCache
    jobs : int
        Processes (spawned, one run each at a time) when > 1.
    threads : int
        Threads per run.

    Examples
    --------
    >>> from pywino3d.experiments.runner import ResultCache, run_phases
    >>> c = ResultCache(None, {})
    >>> run_phases([[("a", 1), ("b", 2)], [("c", 3)]], lambda spec, runs: {"x": spec, "seen": len(runs)}, c,
    ...            progress=False)
    >>> c.runs["c"]
    {'x': 3, 'seen': 2}
    """
    import torch
    from tqdm import tqdm

    todo = [[(k, s) for k, s in phase if k not in cache.runs] for phase in phases]
    bar = tqdm(total=sum(map(len, todo)), desc=desc, unit="run", file=sys.stderr, disable=not progress)
    old_threads = torch.get_num_threads()
    pool = None
    try:
        if jobs > 1 and any(todo):
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            pool = ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                                       initargs=(threads,))
        limits = set_threads(threads)
        for phase in todo:
            if pool is None:
                for k, s in phase:
                    bar.set_postfix_str(k)
                    cache.put(k, fn(s, cache.runs))
                    bar.update(1)
            else:
                from concurrent.futures import as_completed

                futs = {pool.submit(_call, (fn, s, dict(cache.runs))): k for k, s in phase}
                for f in as_completed(futs):
                    cache.put(futs[f], f.result())
                    bar.set_postfix_str(futs[f])
                    bar.update(1)
        limits.restore_original_limits()
    finally:
        if pool is not None:
            pool.shutdown()
        torch.set_num_threads(old_threads)
        bar.close()


def cpu_flags():
    """The :data:`CPU_FLAGS` this CPU has (from /proc/cpuinfo; empty where that is not available)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    have = set(line.split(":", 1)[1].split())
                    return [x for x in CPU_FLAGS if x in have]
    except OSError:
        pass
    return []


def cpu_model():
    """The CPU's model name, or the platform's processor string."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(threads):
    """What decides the summation order of a run: CPU, flags, the extension's SIMD width, threads.

    Examples
    --------
    >>> from pywino3d.experiments.runner import machine
    >>> sorted(machine(1))
    ['cores', 'cpu', 'cpu_flags', 'simd_bytes', 'threads', 'torch']
    """
    import torch

    from pywino3d._backends.cpu._ext import _cpu

    return {"cpu": cpu_model(), "cpu_flags": cpu_flags(), "cores": os.cpu_count(), "simd_bytes": int(_cpu.simd_bytes()),
            "threads": int(threads), "torch": torch.__version__}


def describe_machine(m):
    """One line for a :func:`machine` record.

    Examples
    --------
    >>> from pywino3d.experiments.runner import describe_machine
    >>> describe_machine({"cpu": "X", "cpu_flags": ["avx2", "fma"], "cores": 2, "simd_bytes": 32, "threads": 1,
    ...                   "torch": "2.0"})
    'X (2 cores; flags avx2 fma), pywino3d kernels built for 32-byte vectors (8 float lanes), 1 thread per run, torch 2.0'
    """
    return (f"{m['cpu']} ({m['cores']} cores; flags {' '.join(m['cpu_flags']) or 'unknown'}), pywino3d kernels built "
            f"for {m['simd_bytes']}-byte vectors ({m['simd_bytes'] // 4} float lanes), {m['threads']} thread"
            f"{'s' if m['threads'] != 1 else ''} per run, torch {m['torch']}")
