"""The fused, cache-resident CPU backward pass (src/cpu/fused_backward.template.h).

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

from . import _cpu
from ._cpu_backend import _x_geometry, check_memory, plan, workspace
from ._fused_pipeline import KEEP_COPY_BYTES, is_channels_last, lanes

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
    vl = _cpu.simd_bytes() // itemsize
    CV, KV = -(-g.C // vl) * vl, -(-g.K // vl) * vl
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
    """Tiles per block: BLOCK_TILES, fewer where BLOCK_BUDGET asks (the
    results do not depend on it)."""
    return int(max(1, min(BLOCK_TILES, BLOCK_BUDGET // (nk * (CV + KV) * itemsize))))


def _channels_last(x, geom, C, CP, nthreads):
    """(array, strides (n, d, h, w)) of x in channels-last order with CP
    channels, zero padded: x itself when it already is, else a copy (kept for
    reuse up to KEEP_COPY_BYTES, as the forward pass does)."""
    item = x.itemsize
    if is_channels_last(x) and CP == C:
        return x, tuple(x.strides[i] // item for i in (0, 2, 3, 4))
    N, (D, H, W) = x.shape[0], x.shape[2:]
    n = N * D * H * W * CP
    out = workspace("xcl", n, x.dtype) if n * item <= KEEP_COPY_BYTES else np.empty(n, x.dtype)
    _cpu.to_channels_last(geom, x, CP, out, nthreads)
    return out, (D * H * W * CP, H * W * CP, W * CP, CP)


def backward(g, gy, x, U, kept, nthreads, need_x=True, need_U=True):
    """(grad_x, grad_U) by the fused pipeline; grad_x follows the memory
    format of x (channels-last in, channels-last out)."""
    dtype = x.dtype
    item = dtype.itemsize
    vl = lanes(dtype)
    N, C, K = g.N, g.C, g.K
    D, H, W = g.spatial
    CV, KV = -(-C // vl) * vl, -(-K // vl) * vl
    nk = int(kept.size)
    nchunks = num_chunks(g, item) if need_U else 1
    tb = tiles_per_block(nk, CV, KV, item)
    x, xgeom = _x_geometry(g, x)
    if any(s % item for s in gy.strides):
        gy = np.ascontiguousarray(gy)
    gs = tuple(s // item for s in gy.strides)
    pin = plan("input", g, g.ksize, dtype, kept)
    pout = plan("output", g, g.ksize, dtype, kept)
    stride = -(-_cpu.fused_scratch_bytes(pin, pout, tb, CV, KV) // 64) * 64
    vol = N * D * H * W
    cl_in_place = is_channels_last(x) and CV == C
    gx_direct = need_x and cl_in_place
    check_memory("the gradients and the fused backward workspace", item * (
        (vol * C + nk * KV * CV if need_x else 0)  # grad_x, packed U
        + (vol * CV if need_x and not gx_direct else 0)  # grad_x's channels-last accumulator
        + (g.npos * K * C + nchunks * nk * CV * KV if need_U else 0)  # grad_U and its partials
        + (vol * CV if need_U and not cl_in_place else 0))  # x channels-last
        + nthreads * stride)
    buf = workspace("fused", nthreads * stride + 64, np.uint8)
    off = (-buf.ctypes.data) % 64

    xcl = xcs = parts = gUout = Ut = gxcl = gx = None
    if need_U:
        xcl, xcs = _channels_last(x, xgeom, C, CV, nthreads)
        parts = workspace("gU_parts", nchunks * nk * CV * KV, dtype)
        gUout = np.zeros((g.npos, K, C), dtype=dtype)
    if need_x:
        Ut = np.zeros((nk, KV, CV), dtype=dtype)
        Ut[:, :K, :C] = U[kept]
        if gx_direct:
            gxcl = np.empty((N, D, H, W, C), dtype=dtype)
            gx = gxcl.transpose(0, 4, 1, 2, 3)
        else:
            n = vol * CV
            gxcl = workspace("gxcl", n, dtype) if n * item <= KEEP_COPY_BYTES else np.empty(n, dtype)
            gx = np.empty((N, C, D, H, W), dtype=dtype)
    _cpu.fused_backward(xgeom, gy, gs, KV, xcl, xcs, CV, Ut, pin, pout, gxcl, parts, nchunks, gUout, tb,
                        buf[off:], stride, nthreads)
    if need_x and not gx_direct:
        _cpu.from_channels_last(xgeom, gxcl, CV, gx, tuple(s // item for s in gx.strides), nthreads)
    return gx, gUout
