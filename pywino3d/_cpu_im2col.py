"""im2col + GEMM on the CPU, for tile-1 layers with large weights on small
volumes (C256->256 at 4^3, the 512-channel layers of C3D's last stage).

There the direct kernel (``_cpu_direct``) would stream its packed weights
once per block of positions, and the blocked F(1, r) pipeline would run 27
GEMMs and then gather and sum their outputs.  This pipeline instead writes,
per sample, the im2col matrix B (``C * taps`` rows by ``positions`` columns,
``src/cpu/direct.h``: ``wino_direct_im2col``) and runs one GEMM

    y[n] (K x positions) = w (K x C * taps) @ B

with ``w`` read as it is stored: ``conv3d`` hands tile-1 weights over as a
view of ``w`` (``_cpu_backend.conv_weights``), whose (k, c, tap) layout is
the GEMM's A with contiguous rows, which the GEMM reads in place
(``gemm.h``).  No copy of the weights is made.  ``U`` from
``filter_transform`` (taps, K, C) is accepted too, at the cost of one copy.

The GEMM sums each output over (c, tap) in chunks of ``KC`` (``gemm.h``):
results agree with the direct kernel to rounding, not bit for bit, and do
not depend on ``workers``.  The backward pass is the blocked F(1, r)
pipeline's.  Pruned taps (``columns``) are left to the direct kernel, which
skips them.
"""
from __future__ import annotations

import math

import numpy as np

from . import _cpu, _cpu_blocked, _direct
from ._cpu_common import c_geometry, check_memory, run, scratch, workspace, workspace_budget

NAME = "im2col"
#: Its own arithmetic (GEMM chunks of KC): agreement is to rounding.
ARITHMETIC = None


def _b_elems(g):
    """Elements of one sample's im2col matrix and of its padded copy."""
    return g.C * g.npos * math.prod(g.out) + _direct.scratch_len(g.c_fields((0, 0, 0, 0, 0)), g.out[0])


def supports(g, kept, dtype):
    """None when this pipeline serves the problem, else why not.  Under
    ``pipeline="auto"`` the direct pipeline, tried first, takes the tile-1
    problems it is the faster on (``_tiles.direct_preferred``): this one sees
    the rest -- 256 or more input channels on at most 128 output positions."""
    if tuple(g.tile) != (1, 1, 1):
        return f"im2col runs tile (1, 1, 1) only, not {tuple(g.tile)}"
    if kept.size != g.npos:
        return "pruned taps: the direct kernel skips them"
    if _b_elems(g) * np.dtype(dtype).itemsize > workspace_budget():
        return "one sample's im2col matrix exceeds the workspace budget (PYWINO3D_WORKSPACE_MB)"
    return None


def workspace_bytes(g, kept, dtype, nthreads, backward=False):
    """Bytes of workspace one call uses: one sample's im2col matrix and the
    GEMM's packing buffers (forward); the blocked pipeline's (backward)."""
    dtype = np.dtype(dtype)
    if backward:
        return _cpu_blocked.workspace_bytes(g, kept, dtype, nthreads, backward=True)
    return _b_elems(g) * dtype.itemsize + _cpu.gemm_scratch_bytes(dtype, nthreads)


def backward(g, gy, x, U, kept, nthreads, need_x=True, need_U=True):
    """(grad_x, grad_U): the blocked F(1, r) pipeline's."""
    return _cpu_blocked.backward(g, gy, x, U, kept, nthreads, need_x, need_U)


def forward(g, x, U, bias, kept, nthreads):
    """y = x convolved with the tile-1 weights U (taps, K, C), every tap kept;
    the problem is non-trivial (see ``_api._forward``)."""
    why = supports(g, kept, x.dtype)
    if why is not None:
        raise ValueError(f"pipeline: 'im2col' cannot run this problem: {why}")
    dtype = x.dtype
    K, C, T = g.K, g.C, g.npos
    P = math.prod(g.out)
    y = np.empty((g.N, K, *g.out), dtype=dtype)
    check_memory("the output and one sample's im2col matrix", y.nbytes + _b_elems(g) * dtype.itemsize)
    # A[k, c * T + t] = U[t, k, c]: a view when U is a view of w (k, c, t)
    A = np.ascontiguousarray(U.transpose(1, 2, 0)).reshape(1, K, C * T)
    x, cgeom = c_geometry(g, x)
    fields = cgeom.fields()
    B = workspace("im2col_B", C * T * P, dtype)
    xp = workspace("direct_x", _direct.scratch_len(fields, g.out[0]), dtype)
    sc = scratch(_cpu.gemm_scratch_bytes(dtype, nthreads))
    for n in range(g.N):
        run("im2col", _direct.im2col, fields, x, n, B, xp, nthreads)
        yn = y[n].reshape(1, K, P)
        if bias is not None:
            yn[...] = bias.reshape(1, K, 1)  # the GEMM adds its sum to the bias
        run("product", _cpu.gemm_batched, A, B.reshape(1, C * T, P), yn, accumulate=bias is not None,
            scratch=sc, nthreads=nthreads)
    return y
