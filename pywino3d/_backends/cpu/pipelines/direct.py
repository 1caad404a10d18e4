"""Direct convolution on the CPU, for the layers where Winograd cannot win.

The kernel (``src/cpu/direct.h``) keeps output channels -- or, the
variant used on rows of a vector or more, consecutive outputs along w -- in
the SIMD lanes and broadcasts the other operand, so a layer with one to
three input channels costs ``27 * K / lanes`` FMAs per output position
instead of a Winograd input and output transform per channel.  It is the
CPU pipeline "direct" (``cpu/backend.py``'s ``PIPELINES``): it serves ``tile=1``
(``F(1, r)``, the direct algorithm) in the forward pass; under ``"auto"``
the im2col pipeline, tried first, takes the tile-1 problems it is the faster
on (its ``prefers``).  Its backward pass is the blocked ``F(1, r)``
pipeline's (``BACKWARD``; the same gradients: F(1, r) has G = I).

Two steps per call:

1. the weights are packed to ``[K / lanes][C][tap][lanes]`` (zero lanes past
   K; taps that ``columns`` prunes are zero) -- from ``U`` of a tile-1
   Winograd layer, ``U[tap, k, c] = w[k, c, tap]`` because F(1, r) has
   ``G = I``;
2. for each slab of output planes, a zero-padded copy of the input slab is
   made (any input strides: NCDHW or channels-last) and every
   (channel group, plane, chunk of positions) job runs register blocks of
   2 lane vectors x a few consecutive positions.

Both buffers are per-thread workspaces (``common.workspace``); the
input slab is bounded by ``PYWINO3D_WORKSPACE_MB``.  Each output element is
summed by one thread in a fixed order: results do not depend on ``workers``.
"""
from __future__ import annotations

import numpy as np

from pywino3d._backends.cpu import outputs as _cpu_outputs
from pywino3d._backends.cpu._ext import _direct
from pywino3d._backends.cpu.common import c_geometry, check_memory, run, workspace, workspace_budget

NAME = "direct"
#: Kernel variant (a key of ``_direct.VARIANTS``): "auto" lets the C side
#: choose per geometry (``wino_direct_variant``); the tests pin the others.
VARIANT = "auto"
#: Its own arithmetic: one chain of C * taps FMAs per output.
ARITHMETIC = None
#: The backward pass of tile 1 runs on the blocked F(1, r) pipeline (27
#: GEMMs, then a gather and sum; ``backend.backward_pipeline``).
BACKWARD = "blocked"


def supports(g, kept, dtype):
    """None when the direct kernel serves this problem, else why not."""
    if tuple(g.tile) != (1, 1, 1):
        return f"the direct kernel runs tile (1, 1, 1) only, not {tuple(g.tile)}"
    return None


def _sizes(g, dtype):
    """(slab planes, scratch elements, packed-weight elements)."""
    fields = g.c_fields((0, 0, 0, 0, 0))
    planes = _direct.slab_planes(fields, max(1, workspace_budget() // dtype.itemsize))
    return planes, _direct.scratch_len(fields, planes), _direct.packed_len(fields, dtype.itemsize)


def workspace_bytes(g, kept, dtype, nthreads, backward=False):
    """Bytes of workspace one forward call uses: the input slab and the
    packed weights (the backward pass is the blocked pipeline's)."""
    dtype = np.dtype(dtype)
    if backward:
        raise ValueError(f"backward: the {NAME!r} pipeline's backward pass is the {BACKWARD!r} one's")
    _, nscratch, npacked = _sizes(g, dtype)
    return (nscratch + npacked) * dtype.itemsize



def pack_weights(fields, src, strides, tap_mask, nthreads):
    """Packed weights (a workspace view) of ``src`` read at element strides
    ``(k, c, tap)``; ``tap_mask`` (uint8, one per tap) or None."""
    Wp = workspace("direct_w", _direct.packed_len(fields, src.itemsize), src.dtype)
    _direct.pack_w(fields, src.reshape(-1), *strides, tap_mask, Wp, nthreads)
    return Wp


def forward(g, x, U, bias, kept, nthreads):
    """y = direct convolution of x with the tile-1 weights U (taps, K, C) at
    the kept taps; the problem is non-trivial (see ``_api._forward``)."""
    why = supports(g, kept, x.dtype)
    if why is not None:
        raise ValueError(f"pipeline: 'direct' cannot run this problem: {why}")
    dtype = x.dtype
    K, C = g.K, g.C
    T = g.npos
    y = _cpu_outputs.empty((g.N, K, *g.out), dtype)
    planes, nscratch, npacked = _sizes(g, dtype)
    check_memory("the output, the packed weights and the input slab",
                 y.nbytes + (nscratch + npacked) * dtype.itemsize)
    x, cgeom = c_geometry(g, x)
    fields = cgeom.fields()
    mask = None
    if kept.size != T:
        mask = np.zeros(T, dtype=np.uint8)
        mask[kept] = 1
    Ut = U.transpose(1, 2, 0)  # (K, C, taps): w itself when U is conv_weights' view
    if Ut.flags.c_contiguous:
        src, strides = Ut, (C * T, T, 1)
    else:
        src, strides = np.ascontiguousarray(U), (C, 1, K * C)
    Wp = run("pack", pack_weights, fields, src, strides, mask, nthreads)
    scratch = workspace("direct_x", nscratch, dtype)
    run("direct", _direct.forward, fields, x, Wp, bias, y, scratch, planes, nthreads, VARIANT)
    return y
