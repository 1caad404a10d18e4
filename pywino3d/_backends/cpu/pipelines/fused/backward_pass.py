"""The fused pipeline's backward pass (src/cpu/fused_backward.template.h);
the pipeline module (``fused/__init__.py``) runs it.

Per block of tiles, in one thread's scratch: the output adjoint of grad_y
(read in place, any layout), then
for grad_U the input transform of x and ``P_j[i] += V[i]^T gM[i]`` into the
partial of the block's chunk, and for grad_x ``gV[i] = gM[i] @ U[kept[i]]``
and the input adjoint added into a channels-last grad_x.

Results are bit-identical for any number of threads: grad_U is summed per
chunk of tile rows in tile order, then over the chunks in chunk order, and
the number of chunks (:func:`num_chunks`) depends on the problem size only;
grad_x is accumulated in phases of rows that never share a voxel (see the C
file).  grad_x equals the blocked pipeline's bit for bit when there are at
most ``ceil(alpha / m)`` tiles along depth and height (the same per-voxel
order); otherwise both pipelines' sums differ by rounding only, as do their
grad_U (different summation orders over the tiles).
"""
from __future__ import annotations

import numpy as np

from pywino3d._backends.cpu._ext import _cpu
from pywino3d._backends.cpu.pipelines.fused.layout import KEEP_COPY_BYTES, is_channels_last
from pywino3d._backends.cpu.common import c_geometry, check_memory, plan, run, scratch, workspace

#: Most partial weight gradients (chunks of tile rows) grad_U is summed in.
MAX_CHUNKS = 8

#: Tiles a chunk should hold per colour phase: every block of a chunk reads
#: and writes the chunk's whole partial (nk x CV x KV), so blocks (at most
#: one phase of one chunk) must be long for that traffic to amortise.
CHUNK_PHASE_TILES = 64

#: Bytes all partials of grad_U may take (a constant, not the workspace
#: setting: the chunk count decides the summation order).
PARTIALS_BUDGET = 64 * 2**20


def phases(g):
    """Colours (qd, qh) of the tile rows: ceil(alpha / m) per axis, no more
    than the tiles on the axis (see fused_backward.template.h)."""
    return tuple(max(1, min(-(-a // m), n)) for a, m, n in zip(g.alpha[:2], g.tile[:2], g.ntiles_axis[:2]))


def num_chunks(g, itemsize):
    """Chunks of tile rows for grad_U, from the problem size only: a power
    of two, at most MAX_CHUNKS, at least 2 where there are 2 rows (so that
    two threads share the work), fewer when a chunk's phase would hold
    fewer than CHUNK_PHASE_TILES tiles, and all partials (P x CV x KV each,
    P all positions, so that pruning columns does not change the summation
    order) within PARTIALS_BUDGET."""
    CV, KV = padded_channels(g.C, g.K, itemsize)
    per_chunk = g.npos * CV * KV * itemsize
    qd, qh = phases(g)
    per_phase = g.ntiles / (qd * qh)
    n = MAX_CHUNKS
    while n > 2 and per_phase / n < CHUNK_PHASE_TILES:
        n //= 2
    while n > 1 and n * per_chunk > PARTIALS_BUDGET:
        n //= 2
    return max(1, min(n, g.N * g.ntiles_axis[0] * g.ntiles_axis[1]))


#: Tiles per block.  Unlike the forward pass, the backward pass wants long
#: blocks more than an L2-resident one: every block of a chunk reads and
#: writes the chunk's partial grad_U.  Measured (ms, 1 thread, float32; tiles
#: 8 / 16 / 32 / 64): C32->32 at 64^3 F(4^3) 408 / 382 / 363 / 408, F(6^3)
#: - / 376 / 330 / 344; C16->16 at 128^3 F(4^3) 1058 / 996 / 1011 / 1097,
#: F(6^3) 1093 / 1047 / 963 / 1108; C64->64 at 32^3 F(4^3) - / 150 / 137 /
#: -, F(6^3) - / 194 / 174 / -.
BLOCK_TILES = 32

#: Bytes of a thread's block (V and gM of its tiles) at most.
BLOCK_BUDGET = 8 * 2**20


def tiles_per_block(nk, CV, KV, itemsize):
    """Tiles per block: BLOCK_TILES, fewer where BLOCK_BUDGET asks.  A
    function of the problem, never of the thread count; the results depend
    on it by rounding at most (where the compiler contracts a*b+c into an FMA
    in one kernel instance and not in another)."""
    return int(max(1, min(BLOCK_TILES, BLOCK_BUDGET // (nk * (CV + KV) * itemsize))))


def padded_channels(C, K, itemsize):
    """(CV, KV): input and output channels rounded up to the SIMD width."""
    vl = _cpu.simd_bytes() // itemsize
    return -(-C // vl) * vl, -(-K // vl) * vl


def _in_place(x, CV):
    """x is channels-last with CV channels and reads as (N, D, H, W, CV)
    C-contiguous."""
    return is_channels_last(x) and CV == x.shape[1] and x.transpose(0, 2, 3, 4, 1).flags.c_contiguous


def _layout(g, kept, dtype, nthreads, need_U):
    dtype = np.dtype(dtype)
    item = dtype.itemsize
    nk = int(kept.size)
    CV, KV = padded_channels(g.C, g.K, item)
    tb = tiles_per_block(nk, CV, KV, item)
    pin = plan("input", g.tile, g.ksize, dtype, kept)
    pout = plan("output", g.tile, g.ksize, dtype, kept)
    nchunks = num_chunks(g, item) if need_U else 1
    return CV, KV, tb, nchunks, pin, pout, _cpu.fused_backward_scratch_bytes(pin, pout, tb, CV, KV, nthreads)


def workspace_bytes(g, kept, dtype, nthreads, need_x=True, need_U=True, x_in_place=False):
    """Bytes of workspace one backward call uses besides its results: the
    channels-last accumulator of grad_x and copy of x (none when x is
    channels-last), the packed U, the partials of grad_U, the scratch."""
    item = np.dtype(dtype).itemsize
    CV, KV, tb, nchunks, pin, pout, sbytes = _layout(g, kept, dtype, nthreads, need_U)
    vol = g.N * int(np.prod(g.spatial))
    nk = int(kept.size)
    return sbytes + item * ((nk * KV * CV + (0 if x_in_place else vol * CV) if need_x else 0)
                            + (nchunks * nk * CV * KV + (0 if x_in_place else vol * CV) if need_U else 0))


def backward(g, gy, x, U, kept, nthreads, need_x=True, need_U=True):
    """(grad_x, grad_U) of a non-trivial problem by the fused pipeline.

    gy and x may have any strides.  grad_x follows the memory format of x
    (channels-last in, channels-last out); grad_U is (P, K, C), zero at the
    pruned positions.
    """
    dtype = x.dtype
    item = dtype.itemsize
    N, C, K = g.N, g.C, g.K
    D, H, W = g.spatial
    nk = int(kept.size)
    CV, KV, tb, nchunks, pin, pout, sbytes = _layout(g, kept, dtype, nthreads, need_U)
    x, xgeom = c_geometry(g, x)
    if any(s % item for s in gy.strides):
        gy = np.ascontiguousarray(gy)
    in_place = _in_place(x, CV)
    vol = N * D * H * W
    check_memory("the gradients and the fused backward workspace",
                 workspace_bytes(g, kept, dtype, nthreads, need_x, need_U, in_place)
                 + item * ((vol * C if need_x else 0) + (g.npos * K * C if need_U else 0)))
    keep = vol * CV * item <= KEEP_COPY_BYTES

    xcl = parts = gU = Ut = gxcl = gx = None
    if need_U:
        if in_place:
            xcl = x.transpose(0, 2, 3, 4, 1)
        else:
            flat = workspace("xcl", vol * CV, dtype) if keep else np.empty(vol * CV, dtype)
            xcl = flat.reshape(N, D, H, W, CV)
            run("to_channels_last", _cpu.to_channels_last, xgeom, x, xcl, nthreads)
        parts = workspace("fused_backward_partials", nchunks * nk * CV * KV, dtype)
        gU = np.zeros((g.npos, K, C), dtype=dtype)
    if need_x:
        Ut = np.zeros((nk, KV, CV), dtype=dtype)
        Ut[:, :K, :C] = np.asarray(U)[kept]
        if in_place:
            gxcl = np.empty((N, D, H, W, C), dtype=dtype)
            gx = gxcl.transpose(0, 4, 1, 2, 3)
        else:
            flat = workspace("gxcl", vol * CV, dtype) if keep else np.empty(vol * CV, dtype)
            gxcl = flat.reshape(N, D, H, W, CV)
            gx = np.empty((N, C, D, H, W), dtype=dtype)
    run("fused_backward", _cpu.fused_backward, xgeom, gy, KV, xcl, Ut, pin, pout, gxcl, parts, nchunks, gU, tb,
        scratch(sbytes), nthreads)
    if need_x and not in_place:
        run("from_channels_last", _cpu.from_channels_last, xgeom, gxcl, gx, nthreads)
    return gx, gU
