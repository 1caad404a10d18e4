"""Algorithm choice: the one owner of ``tile="auto"``.

Every entry point asks this package, so the same problem gets the same
algorithm from :func:`pywino3d.conv3d`, :func:`pywino3d.dask.conv3d`, the
PyTorch layers (:mod:`pywino3d.torch`) and the volume demo:

* :func:`model_tile` -- the cost model's tile (:mod:`.cost`), direct
  convolution (tile 1) costed as the CPU's direct kernel where the backend
  has one.  This is the whole answer wherever nothing is timed.
* Where the model is unsure, the entry points that run on real data refine
  it by measurement with :mod:`pywino3d.autotune` (the one tuner):
  ``conv3d`` times :func:`.cost.candidates_to_time`; a torch layer times
  :func:`torch_candidates` against torch itself.
* :mod:`.names` -- the one codec between tiles and candidate names.

Deliberate differences, the only ones:

1. ``dask.conv3d`` and the volume demo never time (the graph is built before
   the data exist; both paths of the demo must run the same arithmetic):
   they use :func:`model_tile`, which is also what ``conv3d`` and the torch
   layers use when tuning is off (``PYWINO3D_AUTOTUNE=0``) or the model is
   sure.  dask's problem is its largest output block, not the whole volume.
2. A torch layer may also pick torch itself (its candidates include it).
3. Winograd-domain layers (``WinogradConv3d``, ``LowRankWinogradConv3d``)
   hold U for one tile, fixed when the layer is made, before any input
   shape is known: ``tile="auto"`` there means :data:`DOMAIN_TILE`.
"""
from __future__ import annotations

from pywino3d._choice.cost import (  # noqa: F401  (the package's interface)
    candidate_tiles, candidates_to_time, choose_tile, conv3d_candidates, direct_preferred, tile_cost,
)
from pywino3d._choice.names import TORCH, parse_name, tile_name  # noqa: F401

#: The tile of a Winograd-domain layer made with ``tile="auto"``: F(2^3)
#: -- the most accurate Winograd tile, whose U (4^3 positions for 3-wide
#: kernels) the reproduction trains and prunes (docs/lowrank.md).
DOMAIN_TILE = 2
#: Cost-model tiles a torch layer times (plus direct, and torch itself).
TORCH_TIMED_TILES = 3


def has_direct_kernel(backend):
    """Whether ``backend`` runs tile (1, 1, 1) with a direct kernel (the CPU)."""
    return backend == "cpu"


def model_tile(out, ksize, N, C, K, itemsize, backend="cpu"):
    """The cost model's tile for a stride-1 convolution with output extent
    ``out`` -- what every entry point runs when nothing is timed.

    Examples
    --------
    >>> from pywino3d._choice import model_tile
    >>> model_tile((32, 32, 32), (3, 3, 3), 1, 32, 32, 4)
    (4, 4, 4)
    """
    return choose_tile(out, ksize, N, C, K, itemsize, direct=has_direct_kernel(backend))


def torch_candidates(out, ksize, N, C, K, itemsize, backend="cpu"):
    """The tiles a torch layer times against torch: the cost model's
    :data:`TORCH_TIMED_TILES` best Winograd tiles, cheapest first, and the
    direct tile 1."""
    cands = conv3d_candidates(out, ksize, N, C, K, itemsize, direct=has_direct_kernel(backend))
    tiles = [c.tile for c in cands if c.tile != (1, 1, 1)][:TORCH_TIMED_TILES]
    return tiles + [(1, 1, 1)]
