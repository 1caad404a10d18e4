"""Tile plans: the three 1-D matrices of one transform and the kept
positions with their masks, built once on the host for every device.

The CPU wraps a :class:`PlanArrays` in ``_cpu.TilePlan`` (pointers into these
arrays); the CUDA backend copies the same arrays to the device.  The masks
mirror the skipped work of ``src/wino3d_tile.template.h``: ``need_w[w]`` is
set when some kept position uses column ``w`` (stage 1), ``need_hw[h, w]``
when some kept position uses the pair ``(h, w)`` (stage 2).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from pywino3d._core.geometry import axis_matrices

#: Which matrix of ``axis_matrices`` each transform uses.
KINDS = {"input": 0, "output": 1, "filter": 2}


@dataclass(frozen=True, eq=False)
class PlanArrays:
    """Host arrays of one tile plan (read-only)."""

    mats: tuple  # X[axis], (a[axis], n[axis]), C-contiguous, of the plan's dtype
    kept: np.ndarray  # int32, sorted kept positions over (a_d, a_h, a_w)
    need_w: np.ndarray  # uint8, (a[2],)
    need_hw: np.ndarray  # uint8, (a[1] * a[2],)

    @property
    def dtype(self):
        return self.mats[0].dtype

    @property
    def a(self):
        return tuple(m.shape[0] for m in self.mats)

    @property
    def n(self):
        return tuple(m.shape[1] for m in self.mats)

    @property
    def nk(self):
        return int(self.kept.size)


def build_plan(mats, kept):
    """A :class:`PlanArrays` from three (alpha, n) matrices and kept positions."""
    mats = tuple(np.ascontiguousarray(m) for m in mats)
    a = [m.shape[0] for m in mats]
    kept = np.ascontiguousarray(kept, dtype=np.int32)
    rem = kept % (a[1] * a[2])
    need_w = np.zeros(a[2], np.uint8)
    need_w[rem % a[2]] = 1
    need_hw = np.zeros(a[1] * a[2], np.uint8)
    need_hw[rem] = 1
    for arr in (*mats, kept, need_w, need_hw):
        arr.setflags(write=False)
    return PlanArrays(mats, kept, need_w, need_hw)


@lru_cache(maxsize=256)
def _tile_plan(kind, tile, ksize, dtype_str, kept_bytes):
    mats = [axis_matrices(m, r, dtype_str)[KINDS[kind]] for m, r in zip(tile, ksize)]
    return build_plan(mats, np.frombuffer(kept_bytes, dtype=np.int32))


def tile_plan(kind, tile, ksize, dtype, kept):
    """The (memoized) plan of transform ``kind`` -- 'input' (Bᵀ), 'output'
    (A = Aᵀᵀ) or 'filter' (G) -- for one tile, kernel size, dtype and kept set."""
    return _tile_plan(kind, tuple(tile), tuple(ksize), np.dtype(dtype).str,
                      np.ascontiguousarray(kept, dtype=np.int32).tobytes())
