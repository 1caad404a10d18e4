"""Tap-skipping im2col on the CPU: tile-1 layers with large weights on small
volumes (C256->256 at 4^3, the 512-channel layers of C3D's last stage).

There the direct kernel (``pipelines/direct.py``) would stream its packed weights
once per block of positions, and the blocked F(1, r) pipeline would run 27
GEMMs and then gather and sum their outputs.  This pipeline runs one GEMM

    y (K x positions) = w (K x C * taps) @ B (C * taps x positions)

with ``w`` read as it is stored: ``conv3d`` hands tile-1 weights over as a
view of ``w`` (``cpu/backend.py``'s ``conv_weights``), whose (k, c, tap) layout is
the GEMM's A with contiguous rows, which the GEMM reads in place.  ``U``
from ``filter_transform`` (taps, K, C) is accepted too, at the cost of one
copy.

On a small volume a large part of the taps fall in the zero padding (42 % at
4^3, 45 % at 2x7x7, 30 % at 6^3), and a plain im2col GEMM multiplies them as
zeros.  Here the output positions are grouped by the taps that are valid
for them (a group per combination of the per-axis classes "first rows /
interior / last rows"), and each group sums over its own taps only: the
gathered GEMM (``gemm.template.h``: ``wino_gemm_gathered``) picks each
group's columns of A (the taps' weights) and builds its B panels straight
from a zero-padded copy of x -- no im2col matrix is written.  Which axes to
split on is chosen per problem by counting the SIMD lanes each grouping
computes (``_grouping``): splitting an axis skips its padded taps but leaves
narrower groups, whose last panel of columns is partly empty.  Pruned taps
(``columns``) are left out of every group the same way.

The GEMM sums each output over its group's (c, tap) terms in increasing
order: results agree with the direct kernel to rounding, not bit for bit,
and do not depend on ``workers``.  The backward pass is the blocked F(1, r)
pipeline's.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import replace
from functools import lru_cache

import numpy as np

from pywino3d._backends.cpu._ext import _cpu
from pywino3d._choice.cost import direct_preferred
from pywino3d._backends.cpu import outputs as _cpu_outputs
from pywino3d._backends.cpu.common import check_memory, run, scratch, workspace, workspace_budget

NAME = "im2col"
#: Its own arithmetic (sums over each group's taps): agreement is to rounding.
ARITHMETIC = None
#: The backward pass of tile 1 runs on the blocked F(1, r) pipeline
#: (``backend.backward_pipeline``).
BACKWARD = "blocked"
#: ``_grouping``'s cost of a group, per summed tap: the SIMD lanes of its
#: columns, plus GROUP_LANES (each group reloads its columns of A per
#: block of rows) and SMALL_GROUP_LANES more for a group of at most one
#: vector of columns (a half-width micro-kernel, loads outweigh FMAs).
#: Fitted to the eight splits timed on C256->256 at 4^3, C512->512 at
#: 2x7x7 (batch 2) and C128->128 at 6^3 (batch 2), 2 threads: the choice is
#: within 7 % of the fastest split on each.
GROUP_LANES = 4
SMALL_GROUP_LANES = 4
#: Force a split (a triple of bools: split d, h, w) instead of the cost
#: model's choice; None (the default) lets the model choose.  For tests and
#: benchmarks.
SPLIT = None


def _terms(g):
    """Elements of one sample's (dense) im2col matrix.  No such matrix is
    written any more, but it still bounds the volumes this pipeline takes:
    the bound the routing (``pywino3d._choice.cost.DIRECT_MIN_LARGE_C``) was measured with.
    Padded taps are a large share only of small volumes; larger ones run on
    the direct kernel or, under ``tile="auto"``, on Winograd tiles."""
    return g.C * g.npos * math.prod(g.out)


def supports(g, kept, dtype):
    """None when this pipeline serves the problem, else why not."""
    if tuple(g.tile) != (1, 1, 1):
        return f"im2col runs tile (1, 1, 1) only, not {tuple(g.tile)}"
    if _terms(g) * np.dtype(dtype).itemsize > workspace_budget():
        return ("one sample's im2col terms (C * taps * positions) exceed the workspace budget "
                "(PYWINO3D_WORKSPACE_MB): a volume this large runs on the direct kernel")
    return None


def prefers(g, kept, dtype):
    """Under ``pipeline="auto"``: whether this pipeline, tried before the
    direct one, should take a problem it supports -- 128 or more input
    channels (:func:`pywino3d._choice.cost.direct_preferred`, with its
    measurements); the direct kernel takes the rest."""
    return not direct_preferred(g.N, g.C, g.out)


def _padded_shape(g):
    return tuple(s + p0 + p1 for s, (p0, p1) in zip(g.spatial, g.pads))


def _work_bytes(g, dtype):
    """The padded copy of x and the grouped output (K x N * positions)."""
    return (g.N * g.C * math.prod(_padded_shape(g)) + g.K * g.N * math.prod(g.out)) * np.dtype(dtype).itemsize


def samples_per_call(g, dtype):
    """Samples per gathered GEMM: as many as keep their padded input and
    grouped output within the workspace budget, at least one.  Each output
    sums the same terms in the same order whatever the split: the batch
    size per call does not change a bit."""
    per_sample = _work_bytes(replace(g, N=1), dtype)
    return int(max(1, min(g.N, workspace_budget() // max(1, per_sample))))


def workspace_bytes(g, kept, dtype, nthreads, backward=False):
    """Bytes of workspace one call uses: the padded input and the grouped
    output of one batch of samples (``samples_per_call``) and the GEMM's
    packing buffer (forward); the blocked pipeline's (backward)."""
    dtype = np.dtype(dtype)
    if backward:
        raise ValueError(f"backward: the {NAME!r} pipeline's backward pass is the {BACKWARD!r} one's")
    return _work_bytes(replace(g, N=samples_per_call(g, dtype)), dtype) + _cpu.gemm_gathered_scratch_bytes(dtype)



def _axis_classes(o, r, s, p0):
    """Per output index along one axis (o of them): the range [lo, hi) of
    kernel taps that read inside the input (extent s, p0 padding in front).
    Returns (class of each index, list of ranges)."""
    ranges, cls = [], np.empty(o, dtype=np.int64)
    for i in range(o):
        rg = (max(0, p0 - i), min(r, s + p0 - i))
        if rg not in ranges:
            ranges.append(rg)
        cls[i] = ranges.index(rg)
    return cls, ranges


def _grouping(g, kept, lanes, split=None):
    """Groups of output positions sharing their summed taps, for the split
    (a subset of the axes, or ``split`` when given) of the lowest modelled
    cost (``GROUP_LANES``).

    Returns a list of (tap indices, (od, oh, ow) index arrays per axis
    combination).  An axis not split sums all its taps for every position
    (those in the padding read zeros)."""
    per_axis = [_axis_classes(o, r, s, p0) for o, r, s, (p0, _) in zip(g.out, g.ksize, g.spatial, g.pads)]
    keep = np.zeros(g.npos, dtype=bool)
    keep[np.asarray(kept)] = True
    best = None
    for split in ([split] if split is not None else itertools.product((False, True), repeat=3)):
        axis_sets = []  # per axis: list of (tap range, output indices)
        for ax, (cls, ranges) in enumerate(per_axis):
            r = g.ksize[ax]
            if split[ax]:
                axis_sets.append([(range(*rg), np.flatnonzero(cls == c)) for c, rg in enumerate(ranges)])
            else:
                axis_sets.append([(range(r), np.arange(g.out[ax]))])
        groups, cost = [], 0
        for (td, od), (th, oh), (tw, ow) in itertools.product(*axis_sets):
            taps = np.array([(kd * g.ksize[1] + kh) * g.ksize[2] + kw
                             for kd in td for kh in th for kw in tw], dtype=np.int64)
            taps = taps[keep[taps]]
            ncols = g.N * len(od) * len(oh) * len(ow)
            cost += len(taps) * (-(-ncols // lanes) * lanes + GROUP_LANES
                                 + (SMALL_GROUP_LANES if ncols <= lanes else 0))
            groups.append((taps, (od, oh, ow)))
        if best is None or cost < best[0]:
            best = (cost, groups)
    return best[1]


@lru_cache(maxsize=32)
def _tables(g, kept, lanes, split):
    """The gathered GEMM's groups for geometry ``g`` (offsets into the
    padded input, ``forward``) and the order of their columns among the
    N * positions outputs.  Memoized: a layer called again reuses them
    (building them took 1.5-2 ms, an entry holds 0.3-0.7 MB of offsets:
    C128 at 6^3 to C512 at 2x7x7, batch 2)."""
    N, C, T = g.N, g.C, g.npos
    P = math.prod(g.out)
    Dp, Hp, Wp = _padded_shape(g)
    rd, rh, rw = g.ksize
    # offsets into the padded input: term (c, tap) -> row, output (n, od, oh, ow) -> column
    tap_off = ((np.arange(rd)[:, None, None] * Hp + np.arange(rh)[None, :, None]) * Wp
               + np.arange(rw)[None, None, :]).reshape(-1)
    chan = np.arange(C, dtype=np.int64)
    n = np.arange(N, dtype=np.int64)[:, None]
    groups, order, c0 = [], [], 0
    for taps, (od, oh, ow) in _grouping(g, np.asarray(kept, dtype=np.int64), lanes, split):
        acol = (chan[:, None] * T + taps[None, :]).reshape(-1)
        brow = (chan[:, None] * (Dp * Hp * Wp) + tap_off[taps][None, :]).reshape(-1)
        pos = ((od[:, None, None] * Hp + oh[None, :, None]) * Wp + ow[None, None, :]).reshape(-1)
        flat = ((od[:, None, None] * g.out[1] + oh[None, :, None]) * g.out[2] + ow[None, None, :]).reshape(-1)
        groups.append((acol, brow, (n * (C * Dp * Hp * Wp) + pos[None, :]).reshape(-1), c0))
        order.append((n * P + flat[None, :]).reshape(-1))
        c0 += N * pos.size
    for arrays in groups:
        for a in arrays[:3]:
            a.flags.writeable = False
    order = np.concatenate(order)
    order.flags.writeable = False
    return tuple(groups), order


def forward(g, x, U, bias, kept, nthreads):
    """y = x convolved with the tile-1 weights U (taps, K, C), summing only
    the taps in ``kept`` that read inside the input; the problem is
    non-trivial (see ``_api._forward``)."""
    why = supports(g, kept, x.dtype)
    if why is not None:
        raise ValueError(f"pipeline: 'im2col' cannot run this problem: {why}")
    dtype = x.dtype
    N, K, C, T = g.N, g.K, g.C, g.npos
    P = math.prod(g.out)
    y = _cpu_outputs.empty((N, K, *g.out), dtype)
    check_memory("the output, a padded copy of the input and the grouped output",
                 y.nbytes + workspace_bytes(g, kept, dtype, nthreads))
    nb = samples_per_call(g, dtype)
    # A[k, c * T + t] = U[t, k, c]: a view when U is a view of w (k, c, t)
    A = np.ascontiguousarray(U.transpose(1, 2, 0)).reshape(K, C * T)
    Dp, Hp, Wp = _padded_shape(g)
    (d0, _), (h0, _), (w0, _) = g.pads
    D, H, W = g.spatial
    kept = tuple(int(t) for t in kept)
    lanes = _cpu.gemm_blocking(dtype)["nr"] // 2
    for n0 in range(0, N, nb):
        nc = min(nb, N - n0)
        # the zero-padded input of these samples, in the reused workspace
        xp = workspace("im2col_x", nc * C * Dp * Hp * Wp, dtype).reshape(nc, C, Dp, Hp, Wp)
        xp[...] = 0
        xp[:, :, d0:d0 + D, h0:h0 + H, w0:w0 + W] = x[n0:n0 + nc]
        groups, order = _tables(replace(g, N=nc), kept, lanes, SPLIT)
        Ct = workspace("im2col_y", K * nc * P, dtype).reshape(K, nc * P)
        run("product", _cpu.gemm_gathered, A, groups, xp.reshape(-1), Ct,
            scratch=scratch(_cpu.gemm_gathered_scratch_bytes(dtype)), nthreads=nthreads)
        # the groups' columns back to (n, k, position)
        yc = y[n0:n0 + nc].reshape(nc, K, P)
        if nc == 1:
            yc[0][:, order] = Ct
        else:
            yk = np.empty((K, nc * P), dtype)
            yk[:, order] = Ct
            yc[...] = yk.reshape(K, nc, P).transpose(1, 0, 2)
    if bias is not None:
        y += bias.reshape(1, K, 1, 1, 1)
    return y
