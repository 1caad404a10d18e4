"""Prologues and epilogues on the CPU (issue 28): the C form of a checked
map (``_cpu.Fusion``), the one-pass kernel over a whole array
(``channel_affine``), and the pre- and post-passes of the pipelines that do
not fuse in their own loops.

The maths is ``src/wino3d_fusion.h`` and ``src/cpu/affine.template.h``;
its meaning and the reference are :mod:`pywino3d._core.fusion`.  Which
pipeline does what is in ``docs/design.md`` ("Prologues and epilogues").
"""
from __future__ import annotations

import dataclasses

import numpy as np

from pywino3d._backends.cpu._ext import _cpu
from pywino3d._backends.cpu.common import run, workspace, workspace_budget


def c_fusion(a, dtype, channels, residual=None):
    """The kernels' ``Fusion`` of a :class:`~pywino3d._core.fusion.CheckedAffine`
    for data of ``channels`` channels; ``residual`` replaces ``a.residual``
    (a slice of it, for a batch of samples)."""
    res = a.residual if residual is None else residual
    return _cpu.Fusion(dtype, a.scale, a.shift, channels if a.per_sample else 0, a.code, a.alpha, a.alphas,
                       res, a.after_activation)


def sample_slice(a, n0, n1, channels):
    """``a`` restricted to samples [n0, n1): per-sample scale and shift and
    the residual sliced (views), per-channel values unchanged."""
    if not a.per_sample and a.residual is None:
        return a
    cut = (lambda v: None if v is None else v[n0 * channels:n1 * channels]) if a.per_sample else (lambda v: v)
    return dataclasses.replace(a, scale=cut(a.scale), shift=cut(a.shift),
                               residual=None if a.residual is None else a.residual[n0:n1])


#: Bytes of x per thread of a pass: a memory-bound pass over less runs on
#: fewer threads (waking a thread costs more than the pass over a few MB;
#: measured on 2 threads: 128x8^3 0.45 ms on one thread, 19-26 ms on two
#: when the second had to wait for a core).  The results do not depend on it
#: (the stats are merged in a fixed order).
BYTES_PER_THREAD = 8 * 2**20


def pass_threads(x, nthreads):
    """Threads of a one-pass kernel over ``x``: ``nthreads``, fewer for a
    small array (:data:`BYTES_PER_THREAD`)."""
    return max(1, min(int(nthreads), x.nbytes // BYTES_PER_THREAD))


def channel_affine(x, a, out, nthreads):
    """``out`` = the map ``a`` applied to ``x`` in one pass (``out`` may be
    ``x``); ``out``, or ``(out, mean, var)`` when ``a.stats``."""
    N, C = x.shape[:2]
    nthreads = pass_threads(x, nthreads)
    f = c_fusion(a, x.dtype, C)
    if a.stats:
        part = workspace("affine_moments", 2 * N * C * x.shape[2], np.float64)  # small: N * C * D parts
        mean = np.empty(N * C, dtype=np.float64)
        var = np.empty(N * C, dtype=np.float64)
        run("channel_affine", _cpu.channel_affine, x, out, f, part, mean, var, nthreads)
        return out, mean.reshape(N, C), var.reshape(N, C)
    run("channel_affine", _cpu.channel_affine, x, out, f, None, None, None, nthreads)
    return out


def pre_pass(x, prologue, nthreads):
    """x with the prologue applied, in this thread's reused workspace (a
    fresh array above the workspace budget), in x's layout (NCDHW, or
    channels-last when x is): one pass over x before a pipeline that reads
    x directly."""
    N, C, D, H, W = x.shape
    n = x.size
    flat = workspace("prologue_x", n, x.dtype) if n * x.itemsize <= workspace_budget() else np.empty(n, x.dtype)
    if C > 1 and x.strides[1] == x.itemsize:
        xp = flat.reshape(N, D, H, W, C).transpose(0, 4, 1, 2, 3)
    else:
        xp = flat.reshape(N, C, D, H, W)
    channel_affine(x, prologue, xp, nthreads)
    return xp


def post_pass(y, epilogue, nthreads):
    """The epilogue applied to y in place in one pass (after a pipeline that
    stores without it): y, or (y, mean, var)."""
    return channel_affine(y, epilogue, y, nthreads)
