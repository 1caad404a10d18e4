"""The cost of a column set: what the CPU kernels do for a kept set.

:func:`column_cost` counts, for one tile and one channel, the multiply-adds
and the values read and written by each stage of the input transform
(``expand`` with X = Bᵀ: stage 1 along w, stage 2 along h, stage 3 along d)
and of the output transform (``contract`` with X = Aᵀᵀ: the adjoint stages
3ᵀ, 2ᵀ, 1ᵀ), and per tile the product's multiply-adds and the traffic of V
and M.  The counts follow the SIMD schedule of
``src/wino3d_tile.template.h`` (one vector of channels or tiles a value) as
the kernels run it:

* stage 1 computes the ``w`` indices that some kept position uses
  (``need_w``), stage 2 the used ``(h, w)`` pairs (``need_hw``), stage 3 the
  kept positions; the adjoints likewise, with stage 3ᵀ clearing and
  accumulating only the used ``(h, w)`` lines of a sparse set;
* every coefficient is multiplied, zeros included (the run-time code does
  not know the matrices);
* a dense set of a cubic tile of a 3-wide kernel (F(2…6, 3)) runs the
  constant straight-line code of ``src/cpu/const_transforms.h`` instead,
  which leaves out zero terms and shares sums: there the counts are those of
  the run-time code and an upper bound (``engine == "constant"``).

The counts are exact integers and monotone in the kept set: removing a
position never adds work.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pywino3d._core.geometry import alphas, n_positions, parse_kernel_size, parse_tile
from pywino3d._core.validation import as_columns

#: Tiles whose dense transforms run the constant code (3-wide kernels).
CONSTANT_TILES = (2, 3, 4, 5, 6)


@dataclass(frozen=True)
class StageCost:
    """One stage: ``fma`` multiply-adds, ``reads`` and ``writes`` of values
    (one value a channel), per tile and channel (product: per tile)."""

    name: str
    fma: int
    reads: int
    writes: int


@dataclass(frozen=True)
class ColumnCost:
    """The work of a kept set (see :func:`column_cost`).

    Attributes
    ----------
    kept, positions : int
        Kept positions and all positions (alpha_d * alpha_h * alpha_w).
    lines_w, lines_hw : int
        The w indices and (h, w) pairs that some kept position uses.
    engine : str
        ``"constant"`` when the dense constant code runs the transforms
        (the counts are then an upper bound), else ``"template"``.
    input, output : tuple of StageCost
        Per tile and channel: input stages ``("1", "2", "3")``, output stages
        ``("3T", "2T", "1T")``.
    product : StageCost
        Per tile: ``kept * C * K`` multiply-adds; V read, M written.
    in_channels, out_channels : int
    """

    kept: int
    positions: int
    lines_w: int
    lines_hw: int
    engine: str
    input: tuple
    output: tuple
    product: StageCost
    in_channels: int
    out_channels: int

    @property
    def transform_fma(self):
        """Multiply-adds of both transforms per tile, all channels."""
        return (self.in_channels * sum(s.fma for s in self.input)
                + self.out_channels * sum(s.fma for s in self.output))

    @property
    def fma(self):
        """Multiply-adds per tile: both transforms and the product."""
        return self.transform_fma + self.product.fma

    @property
    def traffic(self):
        """Values read and written per tile: transforms (all channels) and
        the product's V and M."""
        t = self.in_channels * sum(s.reads + s.writes for s in self.input)
        t += self.out_channels * sum(s.reads + s.writes for s in self.output)
        return t + self.product.reads + self.product.writes


def _expand_stages(n, a, kept, need_w, need_hw, dense):
    nd, nh, nw = n
    _, ah, aw = a
    wn, hwn, nk = int(need_w.sum()), int(need_hw.sum()), kept.size
    s1 = StageCost("1", nd * nh * wn * nw, nd * nh * nw, nd * nh * wn)
    s2 = StageCost("2", nd * hwn * nh, nd * wn * nh, nd * hwn)
    if dense:  # line by line along d: each t2 value read once
        s3 = StageCost("3", nk * nd, nd * ah * aw, nk)
    else:  # one dot product a kept position
        s3 = StageCost("3", nk * nd, nk * nd, nk)
    return (s1, s2, s3)


def _contract_stages(n, a, kept, need_w, need_hw, dense):
    nd, nh, nw = n
    _, ah, aw = a
    wn, hwn, nk = int(need_w.sum()), int(need_hw.sum()), kept.size
    if dense:  # line by line along d into registers
        s3 = StageCost("3T", nk * nd, nk, nd * ah * aw)
    else:  # clear the used lines, then accumulate each kept value into t2
        s3 = StageCost("3T", nk * nd, nk + nk * nd, nd * hwn + nk * nd)
    s2 = StageCost("2T", nd * hwn * nh, nd * hwn, nd * wn * nh)
    s1 = StageCost("1T", nd * nh * wn * nw, nd * nh * wn, nd * nh * nw)
    return (s3, s2, s1)


def column_cost(columns, kernel_size, tile, *, in_channels=1, out_channels=1):
    """Arithmetic and memory traffic of each stage for a kept column set.

    Parameters
    ----------
    columns : None or 1-D array_like of int
        Kept Winograd positions (as ``columns`` of
        :func:`pywino3d.winograd_conv3d`; None: all), checked the same way:
        an unsorted set is sorted, an empty one costs nothing, duplicated,
        out-of-range or non-integer positions raise the same errors.
    kernel_size, tile : int or tuple of 3 ints
    in_channels, out_channels : int, optional
        C and K: the product is ``kept * C * K`` multiply-adds per tile, the
        input transform runs C times and the output transform K times.

    Returns
    -------
    ColumnCost
        Per-stage counts (multiply-adds, values read and written, per tile
        and channel), the product per tile, and totals per tile
        (:attr:`ColumnCost.fma`, :attr:`ColumnCost.traffic`).

    Notes
    -----
    The counts model the CPU's SIMD kernels (``src/wino3d_tile.template.h``):
    with n and alpha the dense and transformed sizes per axis, stage 1 of the
    input transform costs ``n_d n_h |W| n_w`` multiply-adds for the used w
    indices W, stage 2 ``n_d |HW| n_h`` for the used (h, w) pairs HW, stage 3
    ``kept * n_d``; the output transform the same with n = m, in reverse.
    Positions chosen freely keep nearly every w and (h, w) line, so the
    transforms shrink far less than the product; sets that are products of
    per-axis index sets keep few lines.

    Examples
    --------
    >>> import numpy as np, pywino3d
    >>> dense = pywino3d.column_cost(None, 3, 2)          # F(2^3, 3^3), 64 positions
    >>> [s.fma for s in dense.input]                      # stages 1, 2, 3
    [256, 256, 256]
    >>> slab = pywino3d.column_cost(np.arange(16), 3, 2)  # the d = 0 slab
    >>> [s.fma for s in slab.input], slab.lines_w, slab.lines_hw
    ([256, 256, 64], 4, 16)
    >>> line = pywino3d.column_cost(np.arange(0, 64, 4), 3, 2)  # w = 0 only
    >>> [s.fma for s in line.input], line.lines_w, line.lines_hw
    ([64, 64, 64], 1, 4)
    """
    ks = parse_kernel_size(kernel_size)
    tl = parse_tile(tile)
    for name, v in (("in_channels", in_channels), ("out_channels", out_channels)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name}: expected a positive integer, got {v!r}")
    a = tuple(int(v) for v in alphas(tl, ks))
    npos = int(n_positions(tl, ks))
    kept = as_columns(columns, npos).astype(np.int64)
    dense = kept.size == npos
    rem = kept % (a[1] * a[2])
    need_w = np.zeros(a[2], bool)
    need_w[rem % a[2]] = True
    need_hw = np.zeros(a[1] * a[2], bool)
    need_hw[rem] = True
    inp = _expand_stages(a, a, kept, need_w, need_hw, dense)
    out = _contract_stages(tl, a, kept, need_w, need_hw, dense)
    C, K = int(in_channels), int(out_channels)
    product = StageCost("product", kept.size * C * K, kept.size * C, kept.size * K)
    cubic = len(set(ks)) == 1 and len(set(tl)) == 1
    engine = "constant" if dense and cubic and ks[0] == 3 and tl[0] in CONSTANT_TILES else "template"
    return ColumnCost(kept=int(kept.size), positions=npos, lines_w=int(need_w.sum()),
                      lines_hw=int(need_hw.sum()), engine=engine, input=inp, output=out,
                      product=product, in_channels=C, out_channels=K)
