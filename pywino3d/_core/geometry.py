"""Shapes of one convolution: padding, output extent, tiles, positions."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

from pywino3d._core.transforms import MAX_KERNEL, MAX_TILE, winograd_matrices
from pywino3d._core.validation import as_triple

AXES = ("d", "h", "w")

#: The C struct ``wino_geom`` of ``src/wino3d_common.h``, field by field (all
#: 64-bit, no padding).  The CUDA kernels take a record of this dtype by
#: value; a test compares it with the C layout the extension reports.
GEOM_DTYPE = np.dtype(
    [("N", "<i8"), ("C", "<i8"), ("K", "<i8"), ("D", "<i8"), ("H", "<i8"), ("W", "<i8"),
     ("xs", "<i8", (5,)), ("pad", "<i8", (3,)), ("od", "<i8", (3,)), ("m", "<i8", (3,)),
     ("r", "<i8", (3,)), ("a", "<i8", (3,)), ("nt", "<i8", (3,))],
    align=True,
)


def parse_padding(padding, ksize):
    """Return ((front, back) per axis) for an int, a 3-tuple, 'same' or 'valid'.

    ``"same"`` matches ``torch.nn.functional.conv3d``: total padding
    ``r - 1`` per axis, the extra element (even kernels) at the back.
    """
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * 3
        if padding == "same":
            return tuple(((r - 1) // 2, (r - 1) - (r - 1) // 2) for r in ksize)
        raise ValueError(f"padding: expected an int, 3 ints, 'same' or 'valid', got {padding!r}")
    pads = as_triple("padding", padding)
    for i, p in enumerate(pads):
        if p < 0:
            raise ValueError(f"padding: must be non-negative, got {padding!r}")
    return tuple((p, p) for p in pads)


def pads6(padding, ksize):
    """Padding as six ints, (front, back) per axis: :func:`parse_padding`'s,
    flattened (the form the custom torch operators carry)."""
    return tuple(p for pair in parse_padding(padding, ksize) for p in pair)


def padding_arg(pads, ksize):
    """Six ints (front, back per axis) back to a padding argument that
    :func:`pywino3d.conv3d` and ``torch.nn.functional.conv3d`` both take:
    3 ints when symmetric, ``"same"`` for :func:`parse_padding`'s split."""
    pairs = tuple(tuple(int(p) for p in pads[2 * i:2 * i + 2]) for i in range(3))
    if all(a == b for a, b in pairs):
        return tuple(a for a, _ in pairs)
    if pairs == parse_padding("same", ksize):
        return "same"
    raise ValueError(f"padding: expected symmetric padding or torch's 'same' split, got {tuple(pads)}")


def parse_kernel_size(kernel_size):
    return as_triple("kernel_size", kernel_size, 1, MAX_KERNEL)


def parse_tile(tile):
    return as_triple("tile", tile, 1, MAX_TILE)


def alphas(tile, ksize):
    """alpha = m + r - 1 per axis: the Winograd tile's input extent."""
    return tuple(m + r - 1 for m, r in zip(tile, ksize))


def n_positions(tile, ksize):
    """Winograd-domain positions of a tile: the product over the three axes
    of alpha = m + r - 1."""
    return (tile[0] + ksize[0] - 1) * (tile[1] + ksize[1] - 1) * (tile[2] + ksize[2] - 1)


@dataclass(frozen=True)
class Geometry:
    """Everything the kernels need to know about the shapes of one call.

    Immutable; the derived shapes are computed once per instance (a call
    asks for them a dozen times).
    """

    N: int
    C: int
    K: int
    spatial: tuple  # (D, H, W)
    ksize: tuple  # (rd, rh, rw)
    pads: tuple  # ((front, back),) * 3
    tile: tuple  # (md, mh, mw)

    @cached_property
    def out(self):
        return tuple(s + p0 + p1 - r + 1 for s, (p0, p1), r in zip(self.spatial, self.pads, self.ksize))

    @cached_property
    def alpha(self):
        return tuple(m + r - 1 for m, r in zip(self.tile, self.ksize))

    @cached_property
    def npos(self):
        return n_positions(self.tile, self.ksize)

    @cached_property
    def ntiles_axis(self):
        return tuple(-(-o // m) for o, m in zip(self.out, self.tile))

    @cached_property
    def ntiles(self):
        t = self.ntiles_axis
        return self.N * t[0] * t[1] * t[2]

    def c_fields(self, x_strides_elems):
        """The fields of the C struct ``wino_geom``, by name, for an input
        with these strides (in elements)."""
        D, H, W = self.spatial
        return {
            "N": self.N, "C": self.C, "K": self.K, "D": D, "H": H, "W": W,
            "xs": tuple(x_strides_elems), "pad": tuple(p[0] for p in self.pads),
            "od": self.out, "m": self.tile, "r": self.ksize, "a": self.alpha,
            "nt": self.ntiles_axis,
        }


def tile_patches(a, pads, tile, alpha, nt):
    """(N, C, tD, tH, tW, ad, ah, aw) view of the input tiles of ``a`` (N, C, D, H, W):
    the zero-padded input (``pads`` in front, as much as the tiles need behind),
    one alpha-patch per output tile (a view with overlapping windows; NumPy
    reference code and calibration statistics read it, the kernels never do)."""
    from numpy.lib.stride_tricks import sliding_window_view

    need = [t * m + al - m for t, m, al in zip(nt, tile, alpha)]
    full = [(p0, max(0, nd - s - p0)) for (p0, _), nd, s in zip(pads, need, a.shape[2:])]
    ap = np.pad(a, ((0, 0), (0, 0), *full))[:, :, :need[0], :need[1], :need[2]]
    win = sliding_window_view(ap, tuple(alpha), axis=(2, 3, 4))
    return win[:, :, ::tile[0], ::tile[1], ::tile[2]]


def geom_record(fields):
    """A NumPy record of :data:`GEOM_DTYPE` filled by field name (what the
    CUDA kernels receive by value)."""
    rec = np.zeros((), dtype=GEOM_DTYPE)
    for name in GEOM_DTYPE.names:
        rec[name] = fields[name]
    return rec[()]


def make_geometry(x_shape, K, ksize, padding, tile):
    """Validate shapes and build a :class:`Geometry`."""
    N, C, D, H, W = x_shape
    pads = parse_padding(padding, ksize)
    g = Geometry(N, C, K, (D, H, W), tuple(ksize), pads, tuple(tile))
    for ax, o, s, (p0, p1), r in zip(AXES, g.out, g.spatial, pads, ksize):
        if o < 1:
            raise ValueError(
                f"kernel_size: kernel {r} is larger than the padded input along {ax} "
                f"({s} + {p0} + {p1} = {s + p0 + p1})"
            )
    return g


@lru_cache(maxsize=None)
def axis_matrices(m, r, dtype_str):
    """(BT, A, G) for one axis: BT (alpha x alpha), A = AT^T (alpha x m), G (alpha x r)."""
    AT, G, BT = winograd_matrices(m, r, dtype=np.dtype(dtype_str))
    return (np.ascontiguousarray(BT), np.ascontiguousarray(AT.T), np.ascontiguousarray(G))
