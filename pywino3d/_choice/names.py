"""The candidate-name codec: how a tile is named in the autotune cache and
in the torch layers' choices (``"direct"``, ``"winograd:4x4x4"``, ``"torch"``).

``"direct"`` names the *tile* (1, 1, 1) -- direct convolution, F(1, r) --
not a pipeline: on the CPU it runs on the direct pipeline or, for 128 or
more input channels on small volumes, the im2col pipeline
(``pywino3d._backends.cpu``); on the GPU on the Winograd kernels with m = 1.
"""
from __future__ import annotations

#: The name of "let torch run it" among the torch layers' candidates.
TORCH = "torch"


def tile_name(tile, pipeline="winograd"):
    """Cache name of a tile: ``"direct"`` for (1, 1, 1), else
    ``"<pipeline>:<md>x<mh>x<mw>"``.

    Examples
    --------
    >>> tile_name((4, 4, 4)), tile_name((1, 1, 1))
    ('winograd:4x4x4', 'direct')
    """
    tile = tuple(int(m) for m in tile)
    if tile == (1, 1, 1) and pipeline == "winograd":
        return "direct"
    return f"{pipeline}:{tile[0]}x{tile[1]}x{tile[2]}"


def parse_name(name):
    """Inverse of :func:`tile_name` (the tile; None for ``"torch"``).

    Examples
    --------
    >>> parse_name("winograd:2x3x3"), parse_name("direct"), parse_name("torch")
    ((2, 3, 3), (1, 1, 1), None)
    """
    if name == TORCH:
        return None
    if name == "direct":
        return (1, 1, 1)
    if ":" not in name:
        raise ValueError(f"name: expected 'torch', 'direct' or '<pipeline>:<m>x<m>x<m>', got {name!r}")
    return tuple(int(v) for v in name.split(":", 1)[1].split("x"))
