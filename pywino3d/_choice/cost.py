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
error would be large are excluded: per axis alpha <= 8 (F(6, 3) at most for
3-wide kernels, F(4, 5) for 5-wide ones), measured at <= 1.7e-5 relative L2
error in float32 on 32-channel layers, against >= 3.3e-4 for alpha = 9 (see
``docs/accuracy.md``); the issue's limit is 3e-5.

Where the model is unsure -- its best two tiles within :data:`UNSURE_FACTOR`
of each other -- ``conv3d(tile="auto")`` measures instead:
:func:`conv3d_candidates` lists the tiles worth timing and
:mod:`pywino3d.autotune` times them (``docs/autotune.md``).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

from pywino3d._choice.names import tile_name
from pywino3d._core.geometry import alphas, n_positions

#: Rates in units per second; only ratios matter.
GEMM_FLOPS = 300e9
TRANSFORM_FLOPS = 40e9
BYTES_PER_S = 30e9
#: Weights stream through the GEMM's panel packing: measured ~16 GB/s.
WEIGHT_BYTES_PER_S = 16e9
#: Fixed cost per tile and channel (gather, bookkeeping), in seconds.
PER_TILE_CHANNEL = 2e-9

#: Largest alpha = m + r - 1 per axis, by itemsize (accuracy limit).
MAX_ALPHA = {4: 8, 8: 8}

#: Rate of the CPU's direct kernel (tile 1, ``pywino3d._backends.cpu.pipelines.direct``): output
#: channels in SIMD lanes reach 0.4 to 0.85 of the SGEMM rate (measured 17 to
#: 36 against 42 GFLOP/s on one busy core; writing y, modelled separately,
#: is most of the difference on one input channel); 0.65 puts the crossover
#: with F(4^3) where the layer benchmark measured it (32 channels at 48^3).
DIRECT_FLOPS = 0.65 * GEMM_FLOPS
#: The direct kernel runs tile 1 on fewer than DIRECT_MIN_LARGE_C input
#: channels; from there on the im2col pipeline (one GEMM with w read in
#: place) is the faster wherever one sample's im2col terms fit the
#: workspace budget (the im2col pipeline's ``supports``; the direct kernel takes the
#: rest).  Measured before im2col skipped the padded taps, which only made
#: it faster (ms, 2 threads, direct kernel / im2col): C64->64 at 12^3
#: 6.8 / 8.1; C64->128 at 12^3, batch 2, 24.2 / 26.4; C128->128 at 6^3 6.5 /
#: 4.3 (batch 2: 12.6 / 9.0); C128->256 at 6^3, batch 2, 24.6 / 14.4;
#: C256->256 at 4x14x14 67 / 53; C512->512 at 2x7x7, batch 2, 101 / 49.
#: The blocked F(1, r) pipeline (27 GEMMs, then a gather and sum) runs the
#: backward pass of tile 1 only.
DIRECT_MIN_LARGE_C = 128


def direct_preferred(N, C, out):
    """Whether the CPU runs a tile-1 problem with its direct kernel rather
    than im2col (which declines what does not fit; see above)."""
    return C < DIRECT_MIN_LARGE_C


def direct_cost(out, ksize, N, C, K, itemsize=4):
    """Model time (s) of the CPU's direct kernel: its FLOPs over the positions
    it computes (a plane's rows run on into the rw - 1 padding columns) and
    writing y."""
    rows = (out[1] - 1) * (out[2] + ksize[2] - 1) + out[2]
    computed = N * out[0] * rows
    taps = ksize[0] * ksize[1] * ksize[2]
    return (2.0 * computed * K * C * taps / DIRECT_FLOPS
            + N * out[0] * out[1] * out[2] * K * itemsize * 2 / BYTES_PER_S)


def tile_cost(out, ksize, N, C, K, tile, itemsize=4):
    """Model time (s) of one forward call with this tile."""
    alpha = alphas(tile, ksize)
    P = n_positions(tile, ksize)
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


def _model_cost(out, ksize, N, C, K, tile, itemsize, direct):
    if direct and tuple(tile) == (1, 1, 1) and direct_preferred(N, C, out):
        return direct_cost(out, ksize, N, C, K, itemsize)
    return tile_cost(out, ksize, N, C, K, tile, itemsize)


def choose_tile(out, ksize, N, C, K, itemsize=4, direct=False):
    """Return the (m_d, m_h, m_w) with the lowest model cost.  ``direct``:
    the backend runs tile (1, 1, 1) with a direct kernel where
    :func:`direct_preferred` (the CPU does), and that tile is costed as such.
    Memoized per problem, as :func:`conv3d_candidates`."""
    return _choose_tile(tuple(int(o) for o in out), tuple(int(r) for r in ksize), int(N), int(C), int(K),
                        int(itemsize), bool(direct))


@lru_cache(maxsize=1024)
def _choose_tile(out, ksize, N, C, K, itemsize, direct):
    best = None
    for tile in candidate_tiles(ksize, itemsize):
        cost = _model_cost(out, ksize, N, C, K, tile, itemsize, direct)
        if best is None or cost < best[0] * (1 - 1e-12):
            best = (cost, tile)
    return best[1]


# --------------------------------------------------- measured choice
#: The model is "unsure" when its second-best candidate costs less than this
#: factor times its best; conv3d(tile="auto") then times the candidates.  The
#: model's ratios were off by up to ~2x on the layers of docs/benchmarks.md
#: (e.g. C256->256 at 4^3: model F(2) 6% ahead of direct, measured direct
#: 1.7x faster), so closer calls are measured.
UNSURE_FACTOR = 2.0
#: Candidates whose model cost exceeds this factor times the best are not
#: timed (their warm-up alone would cost more than it can save).
CANDIDATE_FACTOR = 3.0
#: At most this many Winograd tiles are timed (the model's best), plus direct.
TIMED_TILES = 3
#: Problems whose best model time is below this (seconds) are not timed.
MIN_TUNED_SECONDS = 1e-3


@dataclass(frozen=True)
class Candidate:
    """One way to run a layer: a pipeline and its output tile.

    ``name`` is what the autotune cache records (``"direct"``,
    ``"winograd:4x4x4"``; other pipelines prefix their own name, e.g.
    ``"fused:4x4x4"``); ``cost`` is the model's estimate in seconds.
    """

    name: str
    tile: tuple
    pipeline: str = "winograd"
    cost: float = 0.0



def conv3d_candidates(out, ksize, N, C, K, itemsize=4, direct=False):
    """Every accuracy-admissible candidate, cheapest model cost first.

    Other pipelines extend this list (one Candidate per pipeline and tile);
    the order only decides which few are timed.  ``direct`` as in
    :func:`choose_tile`.  Memoized per problem (``conv3d`` asks on every
    call; costing the candidates took 0.1 ms).
    """
    return list(_candidates(tuple(int(o) for o in out), tuple(int(r) for r in ksize), int(N), int(C), int(K),
                            int(itemsize), bool(direct)))


@lru_cache(maxsize=1024)
def _candidates(out, ksize, N, C, K, itemsize, direct):
    cands = [Candidate(tile_name(t), t, "winograd", _model_cost(out, ksize, N, C, K, t, itemsize, direct))
             for t in dict.fromkeys(candidate_tiles(ksize, itemsize))]
    return tuple(sorted(cands, key=lambda c: (c.cost, c.tile)))


def candidates_to_time(cands):
    """The candidates worth measuring, or [] when the model is sure.

    ``cands`` as returned by :func:`conv3d_candidates`.  The model is sure
    when it has a single candidate, when its runner-up costs at least
    :data:`UNSURE_FACTOR` times its best, or when the best is below
    :data:`MIN_TUNED_SECONDS`.  Otherwise: the best :data:`TIMED_TILES`
    Winograd candidates and direct, each within :data:`CANDIDATE_FACTOR`
    of the best model cost.
    """
    if len(cands) < 2:
        return []
    best = cands[0].cost
    if best < MIN_TUNED_SECONDS or cands[1].cost >= UNSURE_FACTOR * best:
        return []
    near = [c for c in cands if c.cost <= CANDIDATE_FACTOR * best]
    picked = [c for c in near if c.name != "direct"][:TIMED_TILES]
    picked += [c for c in near if c.name == "direct"]
    return picked if len(picked) > 1 else []
