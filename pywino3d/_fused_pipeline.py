"""The fused, cache-resident CPU pipeline (src/cpu/fused.template.h)."""
from __future__ import annotations

import numpy as np

from . import _cpu
from ._cpu_backend import _x_geometry, check_memory, plan, workspace

#: Bytes of a thread's V + M block: half of a 1 MiB L2, as oneDNN budgets.
L2_BUDGET = 512 * 1024

#: Above this many channels the blocked pipeline's packed GEMM wins (measured:
#: C3D conv2a 64->128 fused 2.3x slower; C64->64 at 32^3 fused 1.3x faster).
MAX_CHANNELS = 64


def lanes(dtype):
    return _cpu.simd_bytes() // np.dtype(dtype).itemsize


def padded_channels(C, K, dtype):
    vl = lanes(dtype)
    return -(-C // vl) * vl, -(-K // (2 * vl)) * (2 * vl)


def pack_weights(U, kept, CP, KP):
    """Up[i, c, k] = U[kept[i], k, c], zero padded to (nk, CP, KP)."""
    nk, (P, K, C) = kept.size, U.shape
    Up = np.zeros((nk, CP, KP), dtype=U.dtype)
    Up[:, :C, :K] = U[kept].transpose(0, 2, 1)
    return Up


def tiles_per_block(g, nk, CP, KP, itemsize, nthreads):
    """Tiles a thread carries through the three stages at once: as many as
    fit V and M in ``L2_BUDGET``, at most an even share of the tiles and 64,
    rounded down to the micro-kernel's 6 rows."""
    per_tile = nk * (CP + KP) * itemsize
    tb = max(1, L2_BUDGET // per_tile)
    per_thread = -(-g.ntiles // max(1, nthreads))
    tb = int(max(1, min(tb, per_thread, 64)))
    return tb - tb % 6 if tb > 6 else tb


#: Channels-last copies of x up to this size are kept for reuse between calls.
KEEP_COPY_BYTES = 256 * 2**20


def is_channels_last(x):
    """True when x (N, C, D, H, W) has unit channel stride (NDHWC memory)."""
    return x.shape[1] > 1 and x.strides[1] == x.itemsize


def forward(g, x, U, bias, kept, nthreads, Up=None):
    """y = Winograd convolution of x with U at the kept positions, fused.

    x may have any strides; channels-last x whose channel count is a
    multiple of the SIMD width is read in place, any other layout is first
    copied to channels-last (one pass).  y is C-contiguous NCDHW, or
    channels-last when x is (as torch's ``channels_last_3d`` propagates).
    """
    dtype = x.dtype
    item = dtype.itemsize
    K, C = g.K, g.C
    nk = int(kept.size)
    CP, KP = padded_channels(C, K, dtype)
    tb = tiles_per_block(g, nk, CP, KP, item, nthreads)
    pin = plan("input", g, g.ksize, dtype, kept)
    pout = plan("output", g, g.ksize, dtype, kept)
    stride = -(-_cpu.fused_scratch_bytes(pin, pout, tb, CP, KP) // 64) * 64
    x, geom = _x_geometry(g, x)
    in_place = is_channels_last(x) and CP == C
    copy_bytes = 0 if in_place else g.N * int(np.prod(g.spatial)) * CP * item
    out_bytes = g.N * K * int(np.prod(g.out)) * item
    check_memory("the output and the fused pipeline's buffers",
                 out_bytes + copy_bytes + nthreads * stride + (0 if Up is not None else nk * CP * KP * item))
    if Up is None:
        Up = pack_weights(U, kept, CP, KP)
    if in_place:
        xcl = x
        xcs = tuple(x.strides[i] // item for i in (0, 2, 3, 4))
    else:
        n = copy_bytes // item
        xcl = workspace("xcl", n, dtype) if copy_bytes <= KEEP_COPY_BYTES else np.empty(n, dtype)
        _cpu.to_channels_last(geom, x, CP, xcl, nthreads)
        D, H, W = g.spatial
        xcs = (D * H * W * CP, H * W * CP, W * CP, CP)
    if is_channels_last(x):
        y = np.empty((g.N, *g.out, K), dtype=dtype).transpose(0, 4, 1, 2, 3)
    else:
        y = np.empty((g.N, K, *g.out), dtype=dtype)
    ys = tuple(s // item for s in y.strides)
    buf = workspace("fused", nthreads * stride + 64, np.uint8)
    off = (-buf.ctypes.data) % 64
    _cpu.fused_forward(geom, xcl, xcs, CP, Up, K, KP, pin, pout, bias, y, ys, tb, buf[off:], stride, nthreads)
    return y
