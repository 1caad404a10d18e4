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
    per_tile = nk * (CP + KP) * itemsize
    tb = max(1, L2_BUDGET // per_tile)
    per_thread = -(-g.ntiles // max(1, nthreads))
    import os
    if os.environ.get("PYWINO3D_FUSED_TB"):
        return int(os.environ["PYWINO3D_FUSED_TB"])
    tb = int(max(1, min(tb, per_thread, 64)))
    return tb - tb % 6 if tb > 6 else tb


def forward(g, x, U, bias, kept, nthreads, Up=None):
    dtype = x.dtype
    item = dtype.itemsize
    K, C = g.K, g.C
    nk = int(kept.size)
    CP, KP = padded_channels(C, K, dtype)
    if Up is None:
        Up = pack_weights(U, kept, CP, KP)
    x, geom = _x_geometry(g, x)
    cl = x.strides[1] == item and CP == C and all(s % item == 0 for s in x.strides)
    if cl:
        xcl = x
        xcs = tuple(x.strides[i] // item for i in (0, 2, 3, 4))
    else:
        xcl = workspace("xcl", g.N * int(np.prod(g.spatial)) * CP, dtype)
        _cpu.to_channels_last(geom, x, CP, xcl, nthreads)
        D, H, W = g.spatial
        xcs = (D * H * W * CP, H * W * CP, W * CP, CP)
    if x.strides[1] == item and x.ndim == 5 and C > 1:
        y = np.empty((g.N, *g.out, K), dtype=dtype).transpose(0, 4, 1, 2, 3)
    else:
        y = np.empty((g.N, K, *g.out), dtype=dtype)
    ys = tuple(s // item for s in y.strides)
    tb = tiles_per_block(g, nk, CP, KP, item, nthreads)
    pin = plan("input", g, g.ksize, dtype, kept)
    pout = plan("output", g, g.ksize, dtype, kept)
    stride = -(-_cpu.fused_scratch_bytes(pin, pout, tb, CP, KP) // 64) * 64
    buf = workspace("fused", nthreads * stride + 64, np.uint8)
    off = (-buf.ctypes.data) % 64
    _cpu.fused_forward(geom, xcl, xcs, CP, Up, K, KP, pin, pout, bias, y, ys, tb, buf[off:], stride, nthreads)
    return y
