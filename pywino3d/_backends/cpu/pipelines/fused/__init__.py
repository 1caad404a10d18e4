"""The fused CPU pipeline: each thread carries a small block of tiles through
input transform, product and output transform with the block in its L2.

Few channels on large volumes make the blocked pipeline memory-bound: V and
M of a whole block round-trip through DRAM between its three stages.  Here a
thread keeps ``tiles_per_block`` tiles' V and M in ``L2_BUDGET`` bytes of
its scratch, and transforms run across channels (one SIMD vector holds
``lanes`` channels of a voxel).  Kernels: ``src/cpu/fused.template.h``;
design notes: ``docs/design.md``.

The arithmetic repeats the blocked pipeline's exactly (same per-tile maths,
the product summed over input channels in order), so both give the same
bits; ``tests/test_kernels.py`` and ``tests/test_fused.py`` check it.
The backward pass (``_fused_backward``) sums in other orders than the
blocked pipeline, within the rounding bound (``BACKWARD_ARITHMETIC``).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from pywino3d._backends.cpu import fusion as _fusion
from pywino3d._backends.cpu import outputs as _cpu_outputs
from pywino3d._backends.cpu._ext import _cpu
from pywino3d._backends.cpu.common import c_geometry, check_memory, plan, run, scratch, workspace, workspace_budget
from pywino3d._backends.cpu.filter import filter_transform
from pywino3d._backends.cpu.pipelines.fused import backward_pass as _fused_backward
from pywino3d._backends.cpu.pipelines.fused.layout import KEEP_COPY_BYTES, is_channels_last
from pywino3d._core.geometry import n_positions

NAME = "fused"
#: Same arithmetic as the blocked pipeline (bit-for-bit agreement expected).
ARITHMETIC = "blocked"
#: The backward pass sums grad_U in fixed chunks of tiles and adds grad_x
#: phase by phase: within the rounding bound of the blocked pipeline's.
BACKWARD_ARITHMETIC = None

#: Bytes of a thread's V + M block: half of a 1 MiB L2, as oneDNN budgets
#: (all of a 512 KiB L2, as some development machines report; 256-768 KiB
#: measured alike on C16-C64 layers there, 256 slower for C64).
L2_BUDGET = 512 * 1024

#: Above this many channels the blocked pipeline's packed GEMM wins (measured:
#: C3D conv2a 64->128 fused 2.3x slower; C64->64 at 32^3 fused 1.3x faster).
MAX_CHANNELS = 64

#: Tiles per micro-kernel call (rows of its register block).
MICRO_ROWS = 6



def lanes(dtype):
    """Channels per SIMD vector of the compiled kernels."""
    return _cpu.simd_lanes(dtype)


def padded_channels(C, K, dtype):
    """(CP, KP): input channels padded to the vector width, output channels
    to the micro-kernel's two vectors."""
    vl = lanes(dtype)
    return -(-C // vl) * vl, -(-K // (2 * vl)) * (2 * vl)


def _per_tile_bytes(C, K, nk, dtype):
    CP, KP = padded_channels(C, K, dtype)
    return nk * (CP + KP) * np.dtype(dtype).itemsize


def supports(g, kept, dtype):
    """None when the fused pipeline should serve the problem, else why not."""
    return supports_channels(g.C, g.K, int(kept.size), dtype)


def supports_channels(C, K, nk, dtype):
    """:func:`supports` from what decides it: the channel counts and the
    number of positions computed."""
    if max(C, K) > MAX_CHANNELS:
        return f"more than {MAX_CHANNELS} channels (C={C}, K={K}): the blocked GEMM is faster"
    if 2 * _per_tile_bytes(C, K, nk, dtype) > L2_BUDGET:
        return "fewer than 2 tiles fit the L2 budget"
    return None


def packed_layout(C, K, dtype):
    """Whether U stored as (positions, C, K) -- the filter transform of w with
    its first two axes swapped -- is already the packed form ``Up``: C and K
    multiples of the vector widths (no padding)."""
    return padded_channels(C, K, dtype) == (C, K)


def tiles_per_block(g, nk, CP, KP, itemsize, nthreads):
    """Tiles a thread carries through the three stages at once: as many as
    fit V and M in ``L2_BUDGET``, at most an even share of the tiles and 64,
    rounded down to the micro-kernel's rows."""
    per_tile = nk * (CP + KP) * itemsize
    tb = max(1, L2_BUDGET // per_tile)
    per_thread = -(-g.ntiles // max(1, nthreads))
    tb = int(max(1, min(tb, per_thread, 64)))
    return tb - tb % MICRO_ROWS if tb > MICRO_ROWS else tb


#: Multiply-adds of the product per kernel call (about 10-50 ms of work):
#: long convolutions are split into calls so that Ctrl-C is seen promptly.
CALL_MACS = 2**29


def call_tiles(g, nk, CP, KP, tb, nthreads):
    """Tiles per kernel call: whole blocks for every thread, about
    ``CALL_MACS`` multiply-adds of product."""
    blocks = max(1, CALL_MACS // max(1, nk * CP * KP * tb * nthreads))
    return int(blocks * tb * nthreads)


#: Column-sparse calls keeping at least this fraction of the positions run the
#: dense kernel with the pruned positions' weights zero: measured on 2 threads
#: (F(2^3) and F(4^3), 16-32 channels), the sparse plans ran 0.87-0.92x of
#: dense at density 0.9 and 0.97-1.10x at 0.75 (their unrolled dense loops are
#: faster than the kept-position loops), 1.12-1.34x at 0.5; at 0.75 it is a
#: wash (0.93-1.10x over two runs), so from 0.75 up the dense kernel runs.
DENSE_ABOVE = 0.75


def run_positions(g, kept):
    """The positions the kernel computes: ``kept``, or all of them when that
    is cheaper (:data:`DENSE_ABOVE`); the results agree to rounding (the
    dense cubic transforms run the constant code of
    ``src/cpu/const_transforms.h``, which sums in another order)."""
    if kept.size < g.npos and kept.size >= DENSE_ABOVE * g.npos:
        return np.arange(g.npos, dtype=kept.dtype)
    return kept


def pack_weights(U, kept, CP, KP, run=None, nthreads=1):
    """Up[i, c, k] = U[run[i], k, c] for run[i] in kept, zero elsewhere, zero
    padded to (len(run), CP, KP); ``run`` defaults to ``kept``.  Written by
    the C transpose (``wino_fused_pack``) into this thread's reused
    workspace: valid until the next call.  (It was a NumPy gather and
    transpose into fresh zeros: 2.6 ms a call for C64->64 F(4^3), 5 % of
    that layer.)  A dense U whose memory is already (positions, C, K) with
    no padding -- one-shot ``conv3d``'s, see :func:`weights` -- is used as
    it is."""
    run = kept if run is None else run
    if run.size == kept.size == U.shape[0] and U.shape[1:] == (KP, CP) and U.transpose(0, 2, 1).flags.c_contiguous:
        return U.transpose(0, 2, 1)  # already packed (``weights``)
    src = np.full(run.size, -1, dtype=np.int64)
    src[np.searchsorted(run, kept)] = kept
    Up = workspace("fused_Up", run.size * CP * KP, U.dtype).reshape(run.size, CP, KP)
    _cpu.fused_pack(np.ascontiguousarray(U), src, Up, nthreads)
    return Up


def weights(w, tile, kept, nthreads, g):
    """The backend's hook for one-shot weights: where every position is kept
    and the channels need no padding, w transformed with K and C swapped into
    this thread's reused workspace, seen as (P, K, C) -- U's memory is then
    the packed weights (:func:`pack_weights` skips its transpose; same
    values).  None (filter_transform's U) otherwise, and where U would not
    fit the workspace budget."""
    K, C = w.shape[:2]
    npos = n_positions(tile, w.shape[2:])
    if (kept.size != npos or not packed_layout(C, K, w.dtype) or supports_channels(C, K, npos, w.dtype) is not None
            or npos * K * C * w.itemsize > workspace_budget()):
        return None
    U = workspace("conv_U", npos * K * C, w.dtype).reshape(npos, C, K)
    return filter_transform(np.ascontiguousarray(w.swapaxes(0, 1)), tile, kept, nthreads, out=U).transpose(0, 2, 1)


def samples_per_copy(N, per_sample):
    """Samples whose channels-last copy is made at once: all, or as many as
    the kept copy (``KEEP_COPY_BYTES``) holds, at least one.  (A fresh copy
    of a large batch costs its page faults on every call: C64->32 at 96^3,
    batch 2, is a 453 MB copy.)"""
    return N if N * per_sample <= KEEP_COPY_BYTES else max(1, KEEP_COPY_BYTES // max(1, per_sample))


def _layout(g, kept, dtype, nthreads):
    dtype = np.dtype(dtype)
    nk = int(kept.size)
    CP, KP = padded_channels(g.C, g.K, dtype)
    tb = tiles_per_block(g, nk, CP, KP, dtype.itemsize, nthreads)
    pin = plan("input", g.tile, g.ksize, dtype, kept)
    pout = plan("output", g.tile, g.ksize, dtype, kept)
    return CP, KP, tb, pin, pout, _cpu.fused_scratch_bytes(pin, pout, tb, CP, KP, nthreads)


def workspace_bytes(g, kept, dtype, nthreads, backward=False):
    """Bytes of workspace (channels-last copy, packed weights, per-thread
    blocks) one forward or backward call uses."""
    if backward:
        return _fused_backward.workspace_bytes(g, kept, dtype, nthreads)
    item = np.dtype(dtype).itemsize
    CP, KP, tb, pin, pout, sbytes = _layout(g, kept, dtype, nthreads)
    per_sample = int(np.prod(g.spatial)) * CP * item
    copy = per_sample * samples_per_copy(g.N, per_sample)
    return copy + int(kept.size) * CP * KP * item + sbytes


def forward(g, x, U, bias, kept, nthreads):
    """y of a non-trivial problem.

    x may have any strides: channels-last x whose channel count is a
    multiple of the SIMD width is read in place, any other layout is first
    copied to channels-last (one pass; a few samples at a time where the
    whole batch would exceed ``KEEP_COPY_BYTES``).  y is C-contiguous NCDHW, or
    channels-last when x is (as torch's ``channels_last_3d`` propagates).
    """
    return _forward(g, x, U, bias, kept, nthreads, None, None)


def forward_fused(g, x, U, bias, kept, nthreads, prologue, epilogue):
    """:func:`forward` with a prologue and an epilogue (checked,
    :class:`~pywino3d._core.fusion.CheckedAffine`, or None) fused into its
    loops: the prologue in the channels-last copy (which then always runs:
    x is never read in place), the epilogue on each output tile before its
    store, with per-tile moments merged in tile order when it asks for
    stats.  y, or (y, mean, var)."""
    return _forward(g, x, U, bias, kept, nthreads, prologue, epilogue)


def _forward(g, x, U, bias, kept, nthreads, prologue, epilogue):
    dtype = x.dtype
    item = dtype.itemsize
    K = g.K
    run_pos = run_positions(g, kept)
    CP, KP, tb, pin, pout, sbytes = _layout(g, run_pos, dtype, nthreads)
    x, geom = c_geometry(g, x)
    in_place = is_channels_last(x) and CP == g.C and prologue is None
    per_sample = 0 if in_place else int(np.prod(g.spatial)) * CP * item  # bytes of one sample's copy
    out_bytes = g.N * K * int(np.prod(g.out)) * item
    nb = samples_per_copy(g.N, per_sample)
    moments_bytes = 16 * KP * (g.ntiles // g.N) * nb if epilogue is not None and epilogue.stats else 0
    check_memory("the output and the fused pipeline's buffers",
                 out_bytes + per_sample * nb + sbytes + int(run_pos.size) * CP * KP * item + moments_bytes)
    Up = run("pack", pack_weights, np.asarray(U), kept, CP, KP, run_pos, nthreads)
    if is_channels_last(x):
        y = _cpu_outputs.empty((g.N, *g.out, K), dtype).transpose(0, 4, 1, 2, 3)
    else:
        y = _cpu_outputs.empty((g.N, K, *g.out), dtype)
    sc = scratch(sbytes)
    stats = epilogue is not None and epilogue.stats
    if stats:
        mean = np.empty((g.N, K), dtype=np.float64)
        var = np.empty((g.N, K), dtype=np.float64)
    for n0 in range(0, g.N, nb):
        gb = g if nb == g.N else dataclasses.replace(g, N=min(nb, g.N - n0))
        xb, geomb = (x, geom) if gb is g else c_geometry(gb, x[n0:n0 + gb.N])
        if in_place:
            xcl = xb.transpose(0, 2, 3, 4, 1)
        else:
            n = per_sample * gb.N // item
            flat = workspace("xcl", n, dtype) if n * item <= KEEP_COPY_BYTES else np.empty(n, dtype)
            xcl = flat.reshape(gb.N, *gb.spatial, CP)
            if prologue is None:
                run("to_channels_last", _cpu.to_channels_last, geomb, xb, xcl, nthreads)
            else:
                pro = _fusion.c_fusion(_fusion.sample_slice(prologue, n0, n0 + gb.N, g.C), dtype, g.C)
                run("to_channels_last", _cpu.to_channels_last, geomb, xb, xcl, nthreads, pro)
        yb = y[n0:n0 + gb.N]
        epi = part = None
        if epilogue is not None:
            epi = _fusion.c_fusion(_fusion.sample_slice(epilogue, n0, n0 + gb.N, K), dtype, K)
            if stats:  # reused up to the workspace budget (16 bytes per tile and channel)
                m = gb.ntiles * 2 * KP
                part = workspace("fused_moments", m, np.float64) if 8 * m <= workspace_budget() else \
                    np.empty(m, np.float64)
        step = call_tiles(gb, int(run_pos.size), CP, KP, tb, nthreads)
        for t0 in range(0, gb.ntiles, step):  # Python sees Ctrl-C between calls
            if epi is None:
                run("fused", _cpu.fused_forward, geomb, xcl, Up, pin, pout, bias, yb, t0,
                    min(gb.ntiles, t0 + step), tb, sc, nthreads)
            else:
                run("fused", _cpu.fused_forward, geomb, xcl, Up, pin, pout, bias, yb, t0,
                    min(gb.ntiles, t0 + step), tb, sc, nthreads, epi, part)
        if stats:
            run("tile_moments", _cpu.tile_moments, geomb, part, KP, mean[n0:n0 + gb.N].reshape(-1),
                var[n0:n0 + gb.N].reshape(-1), nthreads)
    return (y, mean, var) if stats else y


def backward(g, gy, x, U, kept, nthreads, need_x=True, need_U=True):
    """(grad_x, grad_U) of a non-trivial problem: the fused backward pass
    (``_fused_backward``)."""
    return _fused_backward.backward(g, gy, x, U, kept, nthreads, need_x, need_U)
