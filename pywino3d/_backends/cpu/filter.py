"""The CPU filter transform: U = (G_d x G_h x G_w) w, its adjoint, and the
weights that stand in for U where a pipeline transforms them itself.

Below the pipelines (they import it, never the backend module), above
``common`` and the compiled kernels (``src/cpu/filter.template.h``).
"""
from __future__ import annotations

import numpy as np

from pywino3d._backends.cpu._ext import _cpu
from pywino3d._backends.cpu.common import plan, scratch
from pywino3d._core.geometry import n_positions


def filter_transform(w, tile, kept, nthreads, out=None):
    """U (npos, K, C) with rows at ``kept`` filled, others zero; written into
    ``out`` (checked by the caller) when given."""
    K, C = w.shape[:2]
    ksize = w.shape[2:]
    npos = n_positions(tile, ksize)
    if out is None:
        U = np.zeros((npos, K, C), dtype=w.dtype)
    else:
        U = out
        if kept.size != npos or K * C == 0:
            U[...] = 0
    if K * C == 0 or kept.size == 0:
        return U
    w = np.ascontiguousarray(w)
    pl = plan("filter", tile, ksize, w.dtype, kept)
    sc = scratch(_cpu.filter_scratch_bytes(pl, nthreads))
    if kept.size == npos:
        _cpu.filter_expand(w.reshape(-1), K * C, pl, U.reshape(-1), sc, nthreads)
    else:
        Uk = np.empty((kept.size, K, C), dtype=w.dtype)
        _cpu.filter_expand(w.reshape(-1), K * C, pl, Uk.reshape(-1), sc, nthreads)
        U[kept] = Uk
    return U


def filter_transform_backward(gU, ksize, tile, nthreads):
    P, K, C = gU.shape
    gw = np.empty((K, C, *ksize), dtype=gU.dtype)
    if K * C == 0:
        return gw
    kept = np.arange(P, dtype=np.int32)
    pl = plan("filter", tile, ksize, gU.dtype, kept)
    sc = scratch(_cpu.filter_scratch_bytes(pl, nthreads))
    _cpu.filter_contract(np.ascontiguousarray(gU).reshape(-1), K * C, pl, gw.reshape(-1), sc, nthreads)
    return gw


class UnfilteredWeights:
    """The weights of a one-shot ``conv3d`` standing in for their filter
    transform U (``backend.conv_weights``), which the blocked pipeline
    computes inside its product (``src/cpu/product_w.template.h``) or one
    chunk of output channels at a time, instead of writing all of U to
    memory (the blocked pipeline's ``takes_unfiltered``).

    ``shape`` and ``dtype`` are U's; :meth:`transform` makes U for any other
    consumer.
    """

    def __init__(self, w, tile, kept):
        self.w = np.ascontiguousarray(w)
        self.tile = tuple(tile)
        self.ksize = tuple(w.shape[2:])
        self.kept = kept
        self.dtype = self.w.dtype
        K, C = w.shape[:2]
        self.shape = (n_positions(self.tile, self.ksize), K, C)

    def kernels(self):
        """w as (K, C, taps), the layout the kernel reads."""
        K, C = self.shape[1:]
        return self.w.reshape(K, C, -1)

    #: Pipelines that take these weights in place of U say so with
    #: ``TAKES_UNFILTERED = True``; the backend calls :meth:`transform` for
    #: every other pipeline.
    unfiltered = True

    def transform(self, nthreads):
        """U itself (:func:`filter_transform`)."""
        return filter_transform(self.w, self.tile, self.kept, nthreads)
