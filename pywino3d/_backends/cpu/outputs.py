"""Reused memory for large outputs of the CPU pipelines.

A fresh output of tens or hundreds of MB costs its page faults on every
call: the kernel clears each page as the pipeline first writes it (8-15 % of
C16->16 at 128^3), and with NumPy's huge-page advice a fault sometimes waits
for the kernel to compact memory (calls 100-150 ms slower, see
``docs/benchmarks.md``).  Like CuPy's memory pool and PyTorch's caching
allocator, this module keeps the buffers of large outputs and hands one out
again once nothing refers to the array it backed.

How "nothing refers to it" is known: an output is a view of a pooled 1-D
byte buffer, so every array made from it (slices, reshapes, ``torch``
tensors from ``torch.from_numpy``, memoryviews) holds a reference to the
buffer, directly or through the output.  A buffer is free when its reference
count is back to what it was when only the pool held it.  (Raw addresses
taken with ``.ctypes`` hold no reference; they were never valid past the
array's life.)

Only the forward pipelines' outputs come from here: their kernels write every
element, so stale values never show (the tests compare reused outputs with
fresh ones bit for bit).  ``PYWINO3D_OUTPUT_POOL_MB`` caps the bytes kept
(default 512; 0 turns the pool off); :func:`release` frees the free buffers.
"""
from __future__ import annotations

import math
import sys
import threading

import numpy as np

from pywino3d._core.env import getenv

#: Outputs smaller than this come from ``np.empty``: glibc's allocator reuses
#: freed blocks below its mmap threshold (up to 32 MiB) on its own, and
#: their page faults are a small share of the call (C64->64 at 32^3, 8 MB:
#: alike with and without the pool).
MIN_BYTES = 16 * 2**20

_lock = threading.Lock()
_pool = []  # [buffer, refcount when only the pool holds it], oldest first


def cap_bytes():
    """Bytes the pool may keep (``PYWINO3D_OUTPUT_POOL_MB``, default 512)."""
    return int(float(getenv("PYWINO3D_OUTPUT_POOL_MB", "512")) * 2**20)


def _is_free(i):
    return sys.getrefcount(_pool[i][0]) == _pool[i][1]


def _held():  # under _lock
    return sum(entry[0].nbytes for entry in _pool)


def empty(shape, dtype):
    """An uninitialised array like ``np.empty(shape, dtype)`` (C order),
    backed by a pooled buffer when it is large; the caller must write every
    element."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < MIN_BYTES:
        return np.empty(shape, dtype)
    cap = cap_bytes()
    if nbytes > cap:
        return np.empty(shape, dtype)
    with _lock:
        for i in range(len(_pool)):
            if _pool[i][0].nbytes == nbytes and _is_free(i):
                return _pool[i][0].view(dtype).reshape(shape)
        kept = _held()
        i = 0
        while kept + nbytes > cap and i < len(_pool):  # make room: free buffers, oldest first
            if _is_free(i):
                kept -= _pool.pop(i)[0].nbytes
            else:
                i += 1
        if kept + nbytes > cap:  # the kept buffers are in use
            return np.empty(shape, dtype)
        _pool.append([np.empty(nbytes, np.uint8), 0])
        _pool[-1][1] = sys.getrefcount(_pool[-1][0])
        return _pool[-1][0].view(dtype).reshape(shape)


def release():
    """Drop the pool's free buffers (those in use stay with their arrays);
    returns the bytes released."""
    with _lock:
        free = [i for i in range(len(_pool)) if _is_free(i)]
        released = sum(_pool[i][0].nbytes for i in free)
        for i in reversed(free):
            del _pool[i]
    return released


def kept_bytes():
    """Bytes of the buffers the pool holds, free or in use."""
    with _lock:
        return _held()
