"""The CPU backend: the filter transforms and a choice of pipelines.

A *pipeline* runs the convolution and its gradients around the C kernels of
``src/cpu/``.  Pipelines are sibling modules, registered in
:data:`PIPELINES` and tried in :data:`ORDER` by ``pipeline="auto"``, the way
oneDNN lists its implementations: the first whose ``supports()`` returns
None (and that ``prefers()`` it, where it says) serves the problem, and
``"blocked"``, which serves every problem, comes last.  Pipelines never
import each other or this module: what the backend needs from one beyond
:class:`CpuPipeline` it finds by attribute (``BACKWARD``, ``weights``,
``TAKES_UNFILTERED``, ``prefers``).  Each pipeline sizes its own workspace
(``workspace_bytes``).  See ``docs/design.md`` for how to add one.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Protocol, runtime_checkable

import numpy as np

from pywino3d._backends.cpu import fusion as _fusion
from pywino3d._backends.cpu import outputs as _outputs
from pywino3d._backends.cpu.common import resolve_workers, workspace, workspace_budget
from pywino3d._backends.cpu.filter import filter_transform, filter_transform_backward
from pywino3d._backends.cpu.pipelines import blocked, direct, fused, im2col
from pywino3d._core.arrays import is_cupy_array
from pywino3d._core.geometry import n_positions


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
        """(grad_x, grad_U) of a non-trivial problem.  A pipeline whose
        backward pass is another's names it in ``BACKWARD`` instead."""

    # Optional members, looked up by attribute:
    #   BACKWARD: str -- the pipeline that runs this one's backward pass;
    #   TAKES_UNFILTERED: bool -- forward() accepts UnfilteredWeights for U;
    #   weights(w, tile, kept, nthreads, g) -- U for a one-shot conv3d in the
    #       pipeline's own layout, or None for filter_transform's;
    #   prefers(g, kept, dtype) -- under "auto", False passes the problem on
    #       to the next pipeline in ORDER (a speed preference, not a limit).


#: The CPU pipelines by name.
PIPELINES = {}
#: The order in which ``"auto"`` tries them; "blocked" serves everything.
ORDER = []


def register_pipeline(module, before="blocked"):
    """Add a pipeline module (checked against :class:`CpuPipeline`), tried by
    "auto" before ``before`` (None: last)."""
    required = ("NAME", "ARITHMETIC", "supports", "workspace_bytes", "forward",
                *(() if getattr(module, "BACKWARD", None) else ("backward",)))
    missing = [m for m in required if not hasattr(module, m)]
    if missing:
        raise TypeError(f"pipeline: {getattr(module, '__name__', module)!r} lacks {', '.join(missing)}")
    PIPELINES[module.NAME] = module
    if module.NAME in ORDER:
        ORDER.remove(module.NAME)
    ORDER.insert(ORDER.index(before) if before in ORDER else len(ORDER), module.NAME)


register_pipeline(blocked, before=None)
register_pipeline(direct)  # tile 1
register_pipeline(im2col, before="direct")  # tile 1 with large weights on a small volume
register_pipeline(fused)  # few channels: every stage of a block of tiles in L2

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


def _always(g, kept, dtype):
    return True


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
        impl = PIPELINES[key]
        if impl.supports(g, kept, dtype) is None and getattr(impl, "prefers", _always)(g, kept, dtype):
            return impl
    raise AssertionError("the blocked pipeline serves every problem")


def conv_weights(w, tile, kept, nthreads, g=None):
    """U for a one-shot ``conv3d`` of geometry ``g``, which never leaves the call.

    Tile 1 with every tap kept is ``w`` itself seen through a read-only view
    (``U[tap, k, c] = w[k, c, tap]``: F(1, r) has G = I), which the direct
    and im2col pipelines read without a copy.  Otherwise the pipeline that
    will run may make its own (its ``weights`` hook: the blocked pipeline
    hands on w unfiltered, the fused one transforms w straight into its
    packed layout); else U is ``filter_transform``'s, written into this
    thread's reused workspace where it fits the workspace budget: a fresh U
    of tens of MB costs more in page faults than the transform itself
    (256x256 kernels to F(2^3): 17 MB, 4.1 ms into reused memory, several ms
    more into fresh pages)."""
    taps = math.prod(w.shape[2:])
    K, C = w.shape[:2]
    if all(m == 1 for m in tile) and kept.size == taps:
        U = np.ascontiguousarray(w).reshape(K, C, taps).transpose(2, 0, 1)
        U.flags.writeable = False
        return U
    if g is not None:
        hook = getattr(choose_pipeline(g, kept, w.dtype), "weights", None)
        U = None if hook is None else hook(w, tile, kept, nthreads, g)
        if U is not None:
            return U
    npos = n_positions(tile, w.shape[2:])
    if npos * K * C * w.itemsize > workspace_budget():
        return filter_transform(w, tile, kept, nthreads)
    return filter_transform(w, tile, kept, nthreads, out=workspace("conv_U", npos * K * C, w.dtype).reshape(npos, K, C))


def forward(g, x, U, bias, kept, nthreads, pipeline=None):
    """y of a non-trivial problem (see ``_api._forward``) by the chosen
    pipeline; U made from :class:`~pywino3d._backends.cpu.filter.UnfilteredWeights`
    unless that pipeline says ``TAKES_UNFILTERED``."""
    impl = choose_pipeline(g, kept, x.dtype, pipeline)
    if getattr(U, "unfiltered", False) and not getattr(impl, "TAKES_UNFILTERED", False):
        U = U.transform(nthreads)
    return impl.forward(g, x, U, bias, kept, nthreads)


def forward_fused(g, x, U, bias, kept, nthreads, prologue, epilogue, pipeline=None):
    """:func:`forward` with a prologue and an epilogue (checked maps,
    :class:`~pywino3d._core.fusion.CheckedAffine`, or None): fused into the
    pipeline's loops where it says so (``forward_fused``, the fused
    pipeline), else one C pass over x into the workspace before it and one
    over y in place after it (``cpu/fusion.py``).  y, or (y, mean, var) when
    the epilogue asks for stats."""
    impl = choose_pipeline(g, kept, x.dtype, pipeline)
    if getattr(U, "unfiltered", False) and not getattr(impl, "TAKES_UNFILTERED", False):
        U = U.transform(nthreads)
    hook = getattr(impl, "forward_fused", None)
    if hook is not None:
        return hook(g, x, U, bias, kept, nthreads, prologue, epilogue)
    if prologue is not None:
        x = _fusion.pre_pass(x, prologue, nthreads)
    y = impl.forward(g, x, U, bias, kept, nthreads)
    return y if epilogue is None else _fusion.post_pass(y, epilogue, nthreads)


def channel_affine(x, checked, out, nthreads):
    """``out`` = the checked map applied to x in one multithreaded pass
    (``out`` may be x; None: a new C-order array, from the output pool when
    large -- a fresh 30 MB array costs its page faults on every call, which
    made the pass 3-5x slower inside a network): out, or (out, mean, var)."""
    if out is None:
        out = _outputs.empty(x.shape, x.dtype)
    return _fusion.channel_affine(x, checked, out, nthreads)


def backward_pipeline(impl):
    """The pipeline that runs ``impl``'s backward pass: its own, or the one
    it names in ``BACKWARD`` (direct and im2col: "blocked")."""
    return PIPELINES[getattr(impl, "BACKWARD", None) or impl.NAME]


def workspace_bytes(impl, g, kept, dtype, nthreads, backward=False):
    """Bytes of workspace one call of pipeline ``impl`` uses (its backward
    pass: the pipeline that runs it, :func:`backward_pipeline`)."""
    if backward:
        return backward_pipeline(impl).workspace_bytes(g, kept, dtype, nthreads, backward=True)
    return impl.workspace_bytes(g, kept, dtype, nthreads)


def backward(g, gy, x, U, kept, nthreads, need_x=True, need_U=True, pipeline=None):
    """(grad_x, grad_U) of a non-trivial problem by the chosen pipeline
    (or the one it names for its backward pass)."""
    impl = backward_pipeline(choose_pipeline(g, kept, x.dtype, pipeline))
    return impl.backward(g, gy, x, U, kept, nthreads, need_x, need_U)


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
    forward_fused = staticmethod(forward_fused)
    channel_affine = staticmethod(channel_affine)
    backward = staticmethod(backward)


BACKEND = CpuBackend()

