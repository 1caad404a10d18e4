"""What every CPU pipeline shares: reusable workspace, block sizing, the
memory guard, tile plans and the benchmarks' stage timer.

Memory ownership: the kernels in ``src/cpu/`` allocate nothing.  The Python
side owns every buffer -- the tensors a call returns, and the per-thread
workspace (:func:`workspace`: tile buffers and the kernels' scratch, sized
by the extension's ``*_scratch_bytes`` queries) that is kept between calls.
"""
from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from functools import lru_cache

import numpy as np

from pywino3d._backends.cpu._ext import _cpu
from pywino3d._core.env import getenv
from pywino3d._core.geometry import n_positions
from pywino3d._core.plans import tile_plan
from pywino3d._core.validation import as_int

#: When a dict, stage times (seconds) are accumulated into it (benchmarks).
_stage_times = None


@contextmanager
def stage_timer():
    """Collect per-stage wall time of the calls made inside the block.

    Yields a dict {stage: seconds}.  Used by the benchmarks only.
    """
    global _stage_times
    prev, _stage_times = _stage_times, {}
    try:
        yield _stage_times
    finally:
        _stage_times = prev


def run(stage, fn, *args, **kw):
    """``fn(*args, **kw)``, timed as ``stage`` inside :func:`stage_timer`."""
    if _stage_times is None:
        return fn(*args, **kw)
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    _stage_times[stage] = _stage_times.get(stage, 0.0) + time.perf_counter() - t0
    return out


_tls = threading.local()


def workspace(slot, n, dtype):
    """A reusable 1-D scratch array of ``n`` elements, one per thread and slot.

    Reusing the tile workspace between calls avoids faulting in fresh pages
    on every call (tens of MB).  The memory kept is bounded by the workspace
    budget per slot and thread; ``release_workspace()`` frees it.  The array
    starts on a 64-byte boundary (a cache line; whole SIMD vectors for the
    kernels that read it in place, such as the fused pipeline's
    channels-last copy of x).
    """
    dtype = np.dtype(dtype)
    return _workspace_bytes(slot, n * dtype.itemsize).view(dtype)


def _workspace_bytes(slot, need):
    """The first ``need`` bytes (uint8) of this thread's buffer ``slot``."""
    cache = getattr(_tls, "buffers", None)
    if cache is None:
        cache = _tls.buffers = {}
    buf = cache.get(slot)
    if buf is None or buf.nbytes < need:
        raw = np.empty(max(need, 64) + 64, dtype=np.uint8)
        cache[slot] = buf = raw[-raw.ctypes.data % 64:][:max(need, 64)]
    return buf[:need]


def scratch(nbytes):
    """This thread's reusable kernel scratch of ``nbytes`` bytes (uint8)."""
    return _workspace_bytes("scratch", int(nbytes))


def release_workspace():
    """Free this thread's cached tile workspace."""
    _tls.buffers = {}


def workspace_budget():
    """Bytes of workspace one call may use (``PYWINO3D_WORKSPACE_MB``)."""
    return int(float(getenv("PYWINO3D_WORKSPACE_MB", "48")) * 2**20)


#: Seconds a reading of the available memory is reused: reading
#: /proc/meminfo costs ~30 us, a tenth of a small layer's call.
MEMINFO_SECONDS = 0.5
_meminfo = (float("-inf"), 0)


def available_memory():
    """Bytes of memory available to this process (best effort; read at most
    every :data:`MEMINFO_SECONDS`)."""
    global _meminfo
    now = time.monotonic()
    if now - _meminfo[0] < MEMINFO_SECONDS:
        return _meminfo[1]
    _meminfo = (now, _read_available_memory())
    return _meminfo[1]


def _read_available_memory():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def check_memory(what, nbytes):
    """Raise MemoryError if ``nbytes`` cannot fit in the available memory."""
    avail = available_memory()
    if nbytes > avail:
        raise MemoryError(
            f"pywino3d: {what} needs {nbytes / 2**30:.2f} GiB but only "
            f"{avail / 2**30:.2f} GiB is available; reduce the batch or the volume, "
            "or lower PYWINO3D_WORKSPACE_MB"
        )


def block_size(ntiles, per_tile_elems, itemsize, multiple=None):
    """Tiles per block for a workspace of ``per_tile_elems`` elements a tile.

    The blocks are balanced (a 98-tile layer with room for 64 runs as 2 x 49,
    not 64 + 34) and rounded up to ``multiple`` (default: the blocked
    pipeline's ``tile_multiple``, whole SIMD tile groups) where that stays in
    budget.
    """
    if multiple is None:
        multiple = _cpu.blocked_chunks()["tile_multiple"]
    per_tile = max(1, per_tile_elems) * itemsize
    tbmax = int(max(1, workspace_budget() // per_tile))
    ntiles = max(1, ntiles)
    if tbmax >= ntiles:
        return ntiles
    nblocks = -(-ntiles // tbmax)
    tb = -(-ntiles // nblocks)
    rounded = -(-tb // multiple) * multiple
    return int(rounded if rounded <= tbmax else tb)


@lru_cache(maxsize=256)
def _c_plan(arrays):
    return _cpu.TilePlan(arrays)


#: (kind, tile, ksize, dtype) -> (plan maker, PlanArrays, C plan) of the
#: dense plans; the C plan is reused while ``_c_plan`` is the maker that
#: made it (tests swap the maker).
_dense_plans = {}


def plan(kind, tile, ksize, dtype, kept):
    """The C tile plan (``_cpu.TilePlan``) of transform ``kind``, memoized.
    The plans of every position (``kept`` a valid set of as many positions
    as there are) are found by shape and dtype alone: that key needs no copy
    of ``kept`` (a few microseconds of a small call)."""
    tile, ksize = tuple(tile), tuple(ksize)
    if kept.size == n_positions(tile, ksize):
        key = (kind, tile, ksize, dtype)
        hit = _dense_plans.get(key)
        if hit is not None and hit[0] is _c_plan:  # made by the plan maker in force
            return hit[2]
        arrays = tile_plan(kind, tile, ksize, dtype, kept) if hit is None else hit[1]
        c_plan = _c_plan(arrays)
        _dense_plans[key] = (_c_plan, arrays, c_plan)
        return c_plan
    return _c_plan(tile_plan(kind, tile, ksize, dtype, kept))


def c_geometry(g, x):
    """(x, ``_cpu.CGeom``) for input ``x`` of any element-aligned strides."""
    item = x.itemsize
    if any(s % item for s in x.strides):
        x = np.ascontiguousarray(x)
    return x, _cpu.CGeom(g.c_fields(tuple(s // item for s in x.strides)))


def resolve_workers(workers):
    """Map scipy.fft-style ``workers`` to a positive thread count.

    None -> the OpenMP default (OMP_NUM_THREADS, threadpoolctl limits);
    positive n -> n; -1 -> all cores, -2 -> all but one, ...
    """
    if workers is None:
        return max(1, _cpu.max_threads())
    w = as_int("workers", workers)
    if w == 0:
        raise ValueError("workers: must be a nonzero int (None, n > 0, or -1 for all cores)")
    if w < 0:
        n = _cpu.num_procs() + 1 + w
        if n < 1:
            raise ValueError(f"workers: {w} leaves no core (this machine has {_cpu.num_procs()})")
        return n
    return w
