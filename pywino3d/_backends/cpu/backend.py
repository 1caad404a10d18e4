"""The CPU backend: the filter transforms and a choice of pipelines.

A *pipeline* runs the convolution and its gradients around the C kernels of
``src/cpu/``.  Pipelines are sibling modules, registered in
:data:`PIPELINES` and tried in :data:`ORDER` by ``pipeline="auto"``, the way
oneDNN lists its implementations: the first whose ``supports()`` returns
None serves the problem, and ``"blocked"`` (``_cpu_blocked``), which serves
every problem, comes last.  Each pipeline sizes its own workspace
(``workspace_bytes``).  See ``docs/design.md`` for how to add one.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Protocol, runtime_checkable

import numpy as np

from pywino3d._backends.cpu._ext import _cpu
from pywino3d._backends.cpu.pipelines import blocked as _cpu_blocked
from pywino3d._backends.cpu.pipelines import direct as _cpu_direct
from pywino3d._backends.cpu.pipelines import im2col as _cpu_im2col
from pywino3d._backends.dispatch import is_cupy_array
from pywino3d._core.geometry import n_positions
from pywino3d._backends.cpu.common import (  # noqa: F401  (re-exported: tests and benchmarks use them here)
    UnfilteredWeights, available_memory, block_size, check_memory, plan, release_workspace, resolve_workers, scratch,
    stage_timer, workspace, workspace_budget,
)


@runtime_checkable
class CpuPipeline(Protocol):
    """What a CPU pipeline module provides."""

    NAME: str
    #: Name of the pipeline whose arithmetic this one repeats exactly
    #: (bit-for-bit agreement is then tested), or None.
    ARITHMETIC: str | None

    def supports(self, g, kept, dtype):
        """None when the pipeline serves this problem, else the reason why not."""

    def workspace_bytes(self, g, kept, dtype, nthreads, backward=False):
        """Bytes of workspace (tile buffers and kernel scratch) one call uses."""

    def forward(self, g, x, U, bias, kept, nthreads):
        """y of a non-trivial problem."""

    def backward(self, g, gy, x, U, kept, nthreads, need_x=True, need_U=True):
        """(grad_x, grad_U) of a non-trivial problem."""


#: The CPU pipelines by name.
PIPELINES = {}
#: The order in which ``"auto"`` tries them; "blocked" serves everything.
ORDER = []


def register_pipeline(module, before="blocked"):
    """Add a pipeline module (checked against :class:`CpuPipeline`), tried by
    "auto" before ``before`` (None: last)."""
    missing = [m for m in ("NAME", "ARITHMETIC", "supports", "workspace_bytes", "forward", "backward")
               if not hasattr(module, m)]
    if missing or not isinstance(module, CpuPipeline):
        raise TypeError(f"pipeline: {getattr(module, '__name__', module)!r} lacks {', '.join(missing)}")
    PIPELINES[module.NAME] = module
    if module.NAME in ORDER:
        ORDER.remove(module.NAME)
    ORDER.insert(ORDER.index(before) if before in ORDER else len(ORDER), module.NAME)


register_pipeline(_cpu_blocked, before=None)
register_pipeline(_cpu_direct)  # tile 1 where the direct kernel is the faster
register_pipeline(_cpu_im2col)  # tile 1 with large weights on a small volume

_pipeline = contextvars.ContextVar("pywino3d_cpu_pipeline", default="auto")


@contextlib.contextmanager
def use_pipeline(name):
    """Run the CPU calls inside the block with pipeline ``name`` ("auto" or a
    key of :data:`PIPELINES`); internal, for tests and benchmarks."""
    _check_pipeline(name)
    token = _pipeline.set(name)
    try:
        yield name
    finally:
        _pipeline.reset(token)


def _check_pipeline(name):
    if name != "auto" and name not in PIPELINES:
        raise ValueError(f"pipeline: expected 'auto' or one of {sorted(PIPELINES)}, got {name!r}")
    return name


def choose_pipeline(g, kept, dtype, pipeline=None):
    """The pipeline module for this problem: ``pipeline`` (default: the
    context's, "auto"), or under "auto" the first in :data:`ORDER` that
    supports the problem."""
    name = _check_pipeline(_pipeline.get() if pipeline is None else pipeline)
    if name != "auto":
        impl = PIPELINES[name]
        why = impl.supports(g, kept, dtype)
        if why is not None:
            raise ValueError(f"pipeline: {name!r} cannot run this problem: {why}")
        return impl
    for key in ORDER:
        if PIPELINES[key].supports(g, kept, dtype) is None:
            return PIPELINES[key]
    raise AssertionError("the blocked pipeline serves every problem")


def filter_transform(w, tile, kept, nthreads, out=None):
    """U (npos, K, C) with rows at ``kept`` filled, others zero; written into
    ``out`` (checked by the caller) when given."""
    K, C = w.shape[:2]
    ksize = w.shape[2:]
    npos = n_positions(tile, ksize)
    if out is None:
        U = np.zeros((npos, K, C), dtype=w.dtype)
    else:
        U = out
        if kept.size != npos or K * C == 0:
            U[...] = 0
    if K * C == 0 or kept.size == 0:
        return U
    w = np.ascontiguousarray(w)
    pl = plan("filter", tile, ksize, w.dtype, kept)
    sc = scratch(_cpu.filter_scratch_bytes(pl, nthreads))
    if kept.size == npos:
        _cpu.filter_expand(w.reshape(-1), K * C, pl, U.reshape(-1), sc, nthreads)
    else:
        Uk = np.empty((kept.size, K, C), dtype=w.dtype)
        _cpu.filter_expand(w.reshape(-1), K * C, pl, Uk.reshape(-1), sc, nthreads)
        U[kept] = Uk
    return U


def conv_weights(w, tile, kept, nthreads, g=None):
    """U for a one-shot ``conv3d`` of geometry ``g``, which never leaves the call.

    Tile 1 with every tap kept is ``w`` itself seen through a read-only view
    (``U[tap, k, c] = w[k, c, tap]``: F(1, r) has G = I), which the direct
    and im2col pipelines read without a copy.  Otherwise U is
    ``filter_transform``'s, written into this thread's reused workspace
    where it fits the workspace budget: a fresh U of tens of MB costs more
    in page faults than the transform itself (256x256 kernels to F(2^3):
    17 MB, 4.1 ms into reused memory, several ms more into fresh pages).
    Where the fused pipeline will run and needs no channel padding, U is
    the transform of w with its first two axes swapped, seen as (P, K, C):
    its memory is then the fused pipeline's packed weights (the pipeline
    skips its transpose; same values).  Where the blocked pipeline will run
    and ``_cpu_blocked.takes_unfiltered`` holds, no U is made here: the
    pipeline gets w (:class:`UnfilteredWeights`) and transforms it inside
    its product, or a chunk of output channels at a time."""
    taps = math.prod(w.shape[2:])
    K, C = w.shape[:2]
    if all(m == 1 for m in tile) and kept.size == taps:
        U = np.ascontiguousarray(w).reshape(K, C, taps).transpose(2, 0, 1)
        U.flags.writeable = False
        return U
    if (g is not None and _cpu_blocked.takes_unfiltered(g, kept, w.dtype)
            and choose_pipeline(g, kept, w.dtype) is _cpu_blocked):
        return UnfilteredWeights(w, tile, kept)
    npos = n_positions(tile, w.shape[2:])
    if npos * K * C * w.itemsize > workspace_budget():
        return filter_transform(w, tile, kept, nthreads)
    # where the fused pipeline will run, transform w with K and C swapped:
    # U's memory is then its packed weights (no transpose per call)
    swap = (kept.size == npos and _pipeline.get() in ("auto", "fused") and _cpu_fused.packed_layout(C, K, w.dtype)
            and _cpu_fused.supports_channels(C, K, npos, w.dtype) is None)
    U = workspace("conv_U", npos * K * C, w.dtype).reshape(npos, *((C, K) if swap else (K, C)))
    if swap:
        return filter_transform(np.ascontiguousarray(w.swapaxes(0, 1)), tile, kept, nthreads, out=U).transpose(0, 2, 1)
    return filter_transform(w, tile, kept, nthreads, out=U)


def filter_transform_backward(gU, ksize, tile, nthreads):
    P, K, C = gU.shape
    gw = np.empty((K, C, *ksize), dtype=gU.dtype)
    if K * C == 0:
        return gw
    kept = np.arange(P, dtype=np.int32)
    pl = plan("filter", tile, ksize, gU.dtype, kept)
    sc = scratch(_cpu.filter_scratch_bytes(pl, nthreads))
    _cpu.filter_contract(np.ascontiguousarray(gU).reshape(-1), K * C, pl, gw.reshape(-1), sc, nthreads)
    return gw


def forward(g, x, U, bias, kept, nthreads, pipeline=None):
    """y of a non-trivial problem (see ``_api._forward``) by the chosen
    pipeline; U made from :class:`UnfilteredWeights` where that pipeline is
    not the blocked one."""
    impl = choose_pipeline(g, kept, x.dtype, pipeline)
    if isinstance(U, UnfilteredWeights) and impl is not _cpu_blocked:
        U = U.transform(nthreads)
    return impl.forward(g, x, U, bias, kept, nthreads)


def backward(g, gy, x, U, kept, nthreads, need_x=True, need_U=True, pipeline=None):
    """(grad_x, grad_U) of a non-trivial problem by the chosen pipeline."""
    return choose_pipeline(g, kept, x.dtype, pipeline).backward(g, gy, x, U, kept, nthreads, need_x, need_U)


class CpuBackend:
    """The CPU backend object used by the dispatcher (see _backend.py)."""

    name = "cpu"
    xp = np
    #: A NumPy ndarray argument is used as it is (``as_float_array`` skips
    #: ``asarray``: a microsecond of every call).
    takes_ndarray = True

    @staticmethod
    def owns(a):
        return isinstance(a, np.ndarray)

    @staticmethod
    def asarray(name, a, coerce):
        if is_cupy_array(a):
            if not coerce:
                raise TypeError(
                    f"{name}: is a CuPy (GPU) array but the backend is 'cpu'; use backend='cuda' "
                    "(or leave the backend on 'auto'), move it with cupy.asnumpy(), or pass "
                    "coerce=True to copy")
            return a.get()
        return a

    @staticmethod
    def to_own(a):
        return a.get() if is_cupy_array(a) else np.asarray(a)

    @staticmethod
    def resolve_workers(workers):
        return resolve_workers(workers)

    filter_transform = staticmethod(filter_transform)
    conv_weights = staticmethod(conv_weights)
    filter_transform_backward = staticmethod(filter_transform_backward)
    forward = staticmethod(forward)
    backward = staticmethod(backward)


BACKEND = CpuBackend()


# The fused pipeline registers last so that it may import this module's
# helpers; "auto" tries it before "blocked".
from pywino3d._backends.cpu.pipelines import fused as _cpu_fused  # noqa: E402

register_pipeline(_cpu_fused, before="blocked")
