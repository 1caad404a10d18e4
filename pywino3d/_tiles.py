"""``tile="auto"``: a cost model that picks the tile per layer.

The model counts, for a candidate tile (m_d, m_h, m_w):

* product  : ``2 * nk * K * C * T`` FLOPs at the GEMM rate,
* input    : ``C * T * (alpha^3 * sum(alpha) * 2)`` FLOPs at the transform rate
  plus ``C * T * alpha^3`` elements written and read again,
* output   : ``K * T * (alpha^3 * sum(m) * 2)`` FLOPs likewise,
* weights  : ``alpha^3 * K * C`` elements read from memory once per call,

with ``T`` the number of tiles (edge tiles count whole, so tiles that overhang
the output are penalised) rounded up to the GEMM micro-panel width of 16 (a
batch-1 layer of 2x7x7 outputs has only 8 F(4^3) tiles: half a panel).  The rates are the ones measured on the development
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
#: Weights stream through the GEMM's panel packing: measured ~16 GB/s.
WEIGHT_BYTES_PER_S = 16e9
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
    prod = 2.0 * P * K * C * (-(-T // 16) * 16) / GEMM_FLOPS
    weights = P * K * C * itemsize / WEIGHT_BYTES_PER_S
    tin = C * T * (2.0 * P * sum(alpha) / TRANSFORM_FLOPS + P * itemsize * 2 / BYTES_PER_S)
    tout = K * T * (2.0 * P * sum(tile) / TRANSFORM_FLOPS + P * itemsize * 2 / BYTES_PER_S)
    return prod + weights + tin + tout + (C + K) * T * PER_TILE_CHANNEL


def candidate_tiles(ksize, itemsize):
    """Tiles with alpha within the accuracy limit; axes that share a kernel
    size share the tile (3x3x3 -> cubic tiles, 1x3x3 -> (m_d, m, m)), which
    also keeps the unrolled transform kernels in use."""
    amax = MAX_ALPHA.get(itemsize, 6)
    sizes = sorted(set(ksize))
    per_size = [[m for m in range(1, 7) if m + r - 1 <= max(amax, r)] for r in sizes]
    for choice in itertools.product(*per_size):
        pick = dict(zip(sizes, choice))
        yield tuple(pick[r] for r in ksize)


def choose_tile(out, ksize, N, C, K, itemsize=4):
    """Return the (m_d, m_h, m_w) with the lowest model cost."""
    best = None
    for tile in candidate_tiles(ksize, itemsize):
        cost = tile_cost(out, ksize, N, C, K, tile, itemsize)
        if best is None or cost < best[0] * (1 - 1e-12):
            best = (cost, tile)
    return best[1]
