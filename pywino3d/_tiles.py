"""``tile="auto"``: a cost model that picks the tile per layer.

The model counts, for a candidate tile (m_d, m_h, m_w):

* product  : ``2 * nk * K * C * T`` FLOPs at the GEMM rate,
* input    : ``C * T * (alpha^3 * sum(alpha) * 2)`` FLOPs at the transform rate
  plus ``C * T * alpha^3`` elements written and read again,
* output   : ``K * T * (alpha^3 * sum(m) * 2)`` FLOPs likewise,

with ``T`` the number of tiles (edge tiles count whole, so tiles that overhang
the output are penalised).  The rates are the ones measured on the development
machine (``docs/benchmarks.md``); only their ratios matter.  Tiles whose float
error would be large are excluded: per axis alpha <= 6 in float32 (F(4, 3)
at most for 3-wide kernels) and alpha <= 8 in float64 (see ``docs/accuracy.md``).
"""
from __future__ import annotations

import itertools

#: Rates in units per second; only ratios matter.
GEMM_FLOPS = 300e9
TRANSFORM_FLOPS = 40e9
BYTES_PER_S = 30e9
#: Fixed cost per tile and channel (gather, bookkeeping), in seconds.
PER_TILE_CHANNEL = 2e-9

MAX_ALPHA = {4: 6, 8: 8}


def tile_cost(out, ksize, N, C, K, tile, itemsize=4):
    """Model time (s) of one forward call with this tile."""
    alpha = [m + r - 1 for m, r in zip(tile, ksize)]
    P = alpha[0] * alpha[1] * alpha[2]
    T = N
    for o, m in zip(out, tile):
        T *= -(-o // m)
    prod = 2.0 * P * K * C * T / GEMM_FLOPS
    tin = C * T * (2.0 * P * sum(alpha) / TRANSFORM_FLOPS + P * itemsize * 2 / BYTES_PER_S)
    tout = K * T * (2.0 * P * sum(tile) / TRANSFORM_FLOPS + P * itemsize * 2 / BYTES_PER_S)
    return prod + tin + tout + (C + K) * T * PER_TILE_CHANNEL


def candidate_tiles(ksize, itemsize):
    amax = MAX_ALPHA.get(itemsize, 6)
    per_axis = [[m for m in range(1, 7) if m + r - 1 <= max(amax, r)] for r in ksize]
    return itertools.product(*per_axis)


def choose_tile(out, ksize, N, C, K, itemsize=4):
    """Return the (m_d, m_h, m_w) with the lowest model cost."""
    best = None
    for tile in candidate_tiles(ksize, itemsize):
        cost = tile_cost(out, ksize, N, C, K, tile, itemsize)
        if best is None or cost < best[0] * (1 - 1e-12):
            best = (cost, tile)
    return best[1]
