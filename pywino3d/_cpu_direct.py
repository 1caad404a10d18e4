"""Direct convolution on the CPU, for the layers where Winograd cannot win.

The kernel (``src/cpu/direct.h``) keeps output channels in the SIMD lanes
and broadcasts the input, so a layer with one to three input channels costs
``27 * K / lanes`` FMAs per output position instead of a Winograd input and
output transform per channel, and a tiny volume with large weights streams
its weights once instead of a Winograd-domain copy ``alpha^3 / 27`` times as
large.  It is what ``tile=1`` (``F(1, r)``, the direct algorithm) runs on the
CPU in the forward pass; the backward pass of ``tile=1`` keeps the blocked
``F(1, r)`` pipeline (the same arithmetic as a Winograd layer with G = I).

Two steps per call:

1. the weights are packed to ``[K / lanes][C][tap][lanes]`` (zero lanes past
   K; taps that ``columns`` prunes are zero) -- from ``U`` of a tile-1
   Winograd layer, ``U[tap, k, c] = w[k, c, tap]`` because F(1, r) has
   ``G = I``;
2. for each slab of output planes, a zero-padded copy of the input slab is
   made (any input strides: NCDHW or channels-last) and every
   (channel group, plane, chunk of positions) job runs register blocks of
   2 lane vectors x a few consecutive positions.

Both buffers are per-thread workspaces (``_cpu_backend.workspace``); the
input slab is bounded by ``PYWINO3D_WORKSPACE_MB``.  Each output element is
summed by one thread in a fixed order: results do not depend on ``workers``.
"""
from __future__ import annotations

import numpy as np

from . import _direct


def prefer(g):
    """Whether the direct kernel should run this tile-1 problem (the rule and
    its measurements: ``pywino3d._tiles.direct_preferred``)."""
    from ._tiles import direct_preferred

    return direct_preferred(g.N, g.C, g.out)


def _fields(g, x):
    """(x, the wino_geom fields) with x's strides in elements."""
    item = x.itemsize
    if any(s % item for s in x.strides):
        x = np.ascontiguousarray(x)
    return x, g.c_fields(tuple(s // item for s in x.strides))


def pack_weights(fields, src, strides, tap_mask, nthreads):
    """Packed weights (a workspace view) of ``src`` read at element strides
    ``(k, c, tap)``; ``tap_mask`` (uint8, one per tap) or None."""
    from ._cpu_backend import workspace

    Wp = workspace("direct_w", _direct.packed_len(fields, src.itemsize), src.dtype)
    _direct.pack_w(fields, src.reshape(-1), *strides, tap_mask, Wp, nthreads)
    return Wp


def forward(g, x, U, bias, kept, nthreads):
    """y = direct convolution of x with the tile-1 weights U (taps, K, C) at
    the kept taps; the problem is non-trivial (see ``_api._forward``)."""
    from ._cpu_backend import _run, check_memory, workspace, workspace_budget

    if g.tile != (1, 1, 1):
        raise ValueError(f"tile: the direct kernel needs tile (1, 1, 1), got {g.tile}")
    dtype = x.dtype
    K, C = g.K, g.C
    T = g.npos
    y = np.empty((g.N, K, *g.out), dtype=dtype)
    x, fields = _fields(g, x)
    planes = _direct.slab_planes(fields, max(1, workspace_budget() // dtype.itemsize))
    nscratch = _direct.scratch_len(fields, planes)
    check_memory("the output, the packed weights and the input slab",
                 y.nbytes + (nscratch + _direct.packed_len(fields, dtype.itemsize)) * dtype.itemsize)
    U = np.ascontiguousarray(U)
    mask = None
    if kept.size != T:
        mask = np.zeros(T, dtype=np.uint8)
        mask[kept] = 1
    Wp = [None]

    def pack():
        Wp[0] = pack_weights(fields, U, (C, 1, K * C), mask, nthreads)

    _run("pack", pack)
    scratch = workspace("direct_x", nscratch, dtype)
    _run("direct", _direct.forward, fields, x, Wp[0], bias, y, scratch, planes, nthreads)
    return y
