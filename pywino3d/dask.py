"""Convolution of dask arrays: volumes larger than memory, on dask.distributed.

Optional extra ``pywino3d[dask]``; ``import pywino3d`` does not import dask.

:func:`conv3d` and :func:`winograd_conv3d` take a dask array
``(N, C, D, H, W)`` with NumPy (or CuPy) chunks and return a lazy dask array.
The graph they build has, per output block,

* one *halo* task per neighbouring input chunk that slices exactly the part
  the block needs (``kernel - 1`` voxels per axis in all), so only thin slabs
  travel between workers;
* one convolution task that places those pieces in a zero-filled buffer (the
  zeros are the padding, present only where the block touches the volume's
  border) and calls :func:`pywino3d.winograd_conv3d` with ``padding=0``.

The Winograd-domain weights, the bias and the kept columns sit in ONE graph key
that every convolution task refers to: they reach each worker once, and the
size of the graph does not grow with (weight size x number of chunks).

The output keeps the input's spatial chunks (the last chunk along an axis
grows or shrinks when the padding changes the extent); the channel axis is one
chunk.  Inputs are validated when the graph is built, with the messages of
the in-memory API.

Kernel threads per task: see :func:`task_threads`.
"""
from __future__ import annotations

import bisect
import itertools
import math
import operator
import sys
import threading
import weakref
from types import SimpleNamespace

import dask.array as da
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from pywino3d import _api
from pywino3d._core.geometry import make_geometry, parse_kernel_size, parse_padding, parse_tile
from pywino3d._choice import model_tile

__all__ = ["conv3d", "winograd_conv3d", "task_threads"]


class _Weights:
    """What every convolution task needs besides its input: stored in one graph key."""

    __slots__ = ("U", "bias", "columns", "kernel_size", "tile", "backend")

    def __init__(self, U, bias, columns, kernel_size, tile, backend):
        self.U, self.bias, self.columns = U, bias, columns
        self.kernel_size, self.tile, self.backend = kernel_size, tile, backend

    def __getstate__(self):
        return tuple(getattr(self, s) for s in self.__slots__)

    def __setstate__(self, state):
        for s, v in zip(self.__slots__, state):
            setattr(self, s, v)


# ------------------------------------------------------------------ threads

def _dask_threads_here():
    """How many dask tasks may run at once in this process (1 outside dask)."""
    dist = sys.modules.get("distributed")
    if dist is not None:
        try:
            me = dist.get_worker()
        except ValueError:
            me = None
        if me is not None:
            # every worker living in this process (LocalCluster(processes=False) runs several)
            total = sum(w.state.nthreads for w in list(dist.Worker._instances)
                        if w.status.name not in ("closed", "closing", "failed"))
            return max(total, me.state.nthreads, 1)
    thread = threading.current_thread()
    if thread is threading.main_thread():
        return 1  # a plain call, or dask's synchronous scheduler
    # a thread pool: the threaded scheduler's (a concurrent.futures worker
    # thread holds a weak reference to its executor while it runs)
    args = getattr(thread, "_args", None)
    if args and isinstance(args[0], weakref.ref):
        size = getattr(args[0](), "_max_workers", None)
        if isinstance(size, int) and size > 0:
            return size
    threaded = sys.modules.get("dask.threaded")
    if threaded is not None:
        pools = [threaded.default_pool]
        for by_size in list(threaded.pools.values()):
            pools.extend(by_size.values())
        for pool in pools:
            if thread in getattr(pool, "_threads", ()):
                return max(1, pool._max_workers)
    from dask.system import CPU_COUNT

    return max(1, CPU_COUNT)  # some other thread pool: assume dask's default size


def task_threads(workers=None):
    """Kernel threads one convolution task uses.

    ``workers`` given: that many (as in :func:`pywino3d.conv3d`).  Otherwise
    the process's thread budget (``OMP_NUM_THREADS`` and threadpoolctl
    limits, else all cores) divided by the number of dask tasks that can run
    at once in this process: the threads of the dask.distributed workers
    living in it, or the size of the threaded scheduler's pool; 1 outside
    dask.  So 2 single-threaded workers on 2 cores run one kernel thread each,
    and a dask thread pool of 2 on 2 cores too.  (dask.distributed's nanny
    sets ``OMP_NUM_THREADS=1`` in the workers it starts; raise it through
    ``distributed.nanny.pre-spawn-environ`` to give each task more cores.)
    The result of a convolution does not depend on the thread count.

    Examples
    --------
    >>> from pywino3d.dask import task_threads
    >>> task_threads(3)
    3
    >>> task_threads() >= 1
    True
    """
    from pywino3d._backends.cpu.common import resolve_workers

    if workers is not None:
        return resolve_workers(workers)
    return max(1, resolve_workers(None) // _dask_threads_here())


# ------------------------------------------------------------------ tasks

def _conv_block(pieces, weights, shape, dests, crop, workers):
    """One output block: assemble the padded input of its tiles, convolve, crop."""
    from pywino3d._backends.dispatch import get_impl

    if len(pieces) == 1 and tuple(pieces[0].shape) == tuple(shape):
        xb = pieces[0]
    else:
        xp = get_impl(weights.backend).xp
        xb = xp.zeros(shape, dtype=weights.U.dtype)
        for p, (d, h, w) in zip(pieces, dests):
            xb[:, :, d:d + p.shape[2], h:h + p.shape[3], w:w + p.shape[4]] = p
    y = _api.winograd_conv3d(xb, weights.U, kernel_size=weights.kernel_size, tile=weights.tile,
                             padding=0, bias=weights.bias, columns=weights.columns,
                             workers=task_threads(workers), backend=weights.backend)
    d, h, w, nd, nh, nw = crop
    if (d, h, w, nd, nh, nw) == (0, 0, 0, *y.shape[2:]):
        return y
    return y[:, :, d:d + nd, h:h + nh, w:w + nw].copy()


# ------------------------------------------------------------------ graph

def _edges(chunks):
    e = [0]
    for c in chunks:
        e.append(e[-1] + c)
    return e


def _output_chunks(in_chunks, out_len):
    """The input's chunk boundaries, clipped to the output's extent (the last
    chunk absorbs any growth); empty chunks dropped."""
    edges = [min(e, out_len) for e in _edges(in_chunks)]
    edges[-1] = out_len
    return tuple(b - a for a, b in zip(edges[:-1], edges[1:]) if b > a)


def _axis_plan(in_chunks, out_chunks, r, p0, m):
    """Per output block along one axis: (padded extent, [(input block, local
    start, local stop, offset in the padded block), ...], crop start).

    A block is computed on whole tiles of the volume's tile grid (tiles at
    multiples of ``m``), then cropped: every output voxel is computed by the
    same tile as in the in-memory call, so column-sparse weights (which make
    the result depend on the tile grid) give the in-memory result.
    """
    in_edges = _edges(in_chunks)
    D = in_edges[-1]
    plan = []
    out_edges = _edges(out_chunks)
    for a, b in zip(out_edges[:-1], out_edges[1:]):
        a0 = a - a % m
        b0 = a0 + -(-(b - a0) // m) * m
        s, e = a0 - p0, b0 + r - 1 - p0  # input range of the tiles, padding included
        lo, hi = max(0, s), min(D, e)
        pieces = []
        if hi > lo:
            j = bisect.bisect_right(in_edges, lo) - 1
            while j < len(in_chunks) and in_edges[j] < hi:
                u, v = max(lo, in_edges[j]), min(hi, in_edges[j + 1])
                if v > u:
                    pieces.append((j, u - in_edges[j], v - in_edges[j], u - s))
                j += 1
        plan.append((e - s, pieces, a - a0))
    return plan


def _build(x, weights, ksize, pads, out_spatial, workers):
    K = weights.U.shape[1]
    x = x.rechunk({1: -1}) if len(x.chunks[1]) > 1 else x
    C = x.shape[1]
    out_chunks = tuple(_output_chunks(c, o) for c, o in zip(x.chunks[2:], out_spatial))
    plans = [_axis_plan(ic, oc, r, p[0], m)
             for ic, oc, r, p, m in zip(x.chunks[2:], out_chunks, ksize, pads, weights.tile)]
    token = tokenize(x, weights.U, weights.bias, weights.columns, weights.kernel_size, weights.tile,
                     weights.backend, pads, workers)
    name = f"pywino3d-conv3d-{token}"
    halo = f"pywino3d-halo-{token}"
    wkey = f"pywino3d-weights-{token}"
    dsk = {wkey: weights}
    full = x.chunks[2:]
    for n, nn in enumerate(x.chunks[0]):
        for (i, (ld, pd, cd)), (j, (lh, ph, ch)), (k, (lw, pw, cw)) in itertools.product(
                *(enumerate(p) for p in plans)):
            keys, dests = [], []
            for (bd, d0, d1, od), (bh, h0, h1, oh), (bw, w0, w1, ow) in itertools.product(pd, ph, pw):
                src = (x.name, n, 0, bd, bh, bw)
                if (d1 - d0, h1 - h0, w1 - w0) == (full[0][bd], full[1][bh], full[2][bw]):
                    keys.append(src)
                else:
                    hk = (halo, n, i, j, k, bd, bh, bw)
                    dsk[hk] = (operator.getitem, src,
                               (slice(None), slice(None), slice(d0, d1), slice(h0, h1), slice(w0, w1)))
                    keys.append(hk)
                dests.append([od, oh, ow])
            crop = [cd, ch, cw, out_chunks[0][i], out_chunks[1][j], out_chunks[2][k]]
            dsk[(name, n, 0, i, j, k)] = (_conv_block, keys, wkey, (nn, C, ld, lh, lw), dests, crop, workers)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[x])
    return da.Array(graph, name, chunks=(x.chunks[0], (K,), *out_chunks), meta=x._meta)


def _check_volume(x, backend):
    if not isinstance(x, da.Array):
        raise TypeError(
            f"x: expected a dask array of shape (N, C, D, H, W), got {type(x).__module__}.{type(x).__name__}; "
            "wrap an in-memory array with dask.array.from_array(x, chunks=...) or use pywino3d.conv3d")
    if x.ndim != 5:
        raise ValueError(f"x: expected a 5-D array, got shape {x.shape}")
    if any(math.isnan(c) for cs in x.chunks for c in cs):
        raise ValueError("x: chunk sizes must be known; call x.compute_chunk_sizes() first")
    call = _api._Call(x._meta, backend, False)
    call.array("x", x._meta, ndim=5)  # dtype (and chunk type) checks of the in-memory API
    return call, SimpleNamespace(shape=x.shape, dtype=x.dtype)


def conv3d(x, w, bias=None, *, padding=0, tile="auto", workers=None):
    """3-D cross-correlation of a dask array, chunk by chunk with halos.

    The dask counterpart of :func:`pywino3d.conv3d`: same arguments, same
    errors (raised here, when the graph is built), same result within the
    rounding bound of :func:`pywino3d.testing.error_bound` for the tiles of
    each block.

    Parameters
    ----------
    x : dask.array.Array, shape (N, C, D, H, W)
        float32 or float64 with NumPy (CPU) or CuPy (GPU) chunks, any
        chunking; the channel axis is rechunked to one chunk.
    w : array_like, shape (K, C, rd, rh, rw)
        Filters, in memory, where the chunks live (NumPy for NumPy chunks).
    bias : array_like, shape (K,), optional
    padding : int, tuple of 3 ints, "same" or "valid"
        Zero padding at the volume's borders only.
    tile : int, tuple of 3 ints or "auto"
        ``"auto"``: one tile for the whole volume, the cost model's choice
        (``pywino3d._choice.cost``) for the largest output block; nothing is timed.
    workers : int, optional
        Kernel threads per task; None follows :func:`task_threads`.

    Returns
    -------
    y : dask.array.Array, shape (N, K, Do, Ho, Wo)
        Lazy; the input's spatial chunks, the channel axis in one chunk.

    Examples
    --------
    >>> import dask, dask.array as da, numpy as np, pywino3d
    >>> import pywino3d.dask
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((1, 2, 12, 12, 12)).astype(np.float32)
    >>> w = rng.standard_normal((3, 2, 3, 3, 3)).astype(np.float32)
    >>> y = pywino3d.dask.conv3d(da.from_array(x, chunks=(1, 2, 5, 6, 7)), w, padding=1, tile=2)
    >>> y.chunks[2:]
    ((5, 5, 2), (6, 6), (7, 5))
    >>> with dask.config.set(scheduler="threads"):
    ...     bool(np.allclose(y.compute(), pywino3d.conv3d(x, w, padding=1, tile=2), atol=1e-4))
    True
    """
    call, xinfo = _check_volume(x, None)
    w = _api._check_w(call, w, xinfo)
    K = w.shape[0]
    bias = _api._check_bias(call, bias, K, x.dtype)
    ksize = tuple(w.shape[2:])
    call.workers(workers)
    g = make_geometry(x.shape, K, ksize, padding, (1, 1, 1))
    if isinstance(tile, str):
        if tile != "auto":
            raise ValueError(f"tile: expected an int, 3 ints or 'auto', got {tile!r}")
        block = tuple(max(_output_chunks(c, o)) for c, o in zip(x.chunks[2:], g.out))
        tile = model_tile(block, ksize, max(x.chunks[0], default=0), x.shape[1], K, x.dtype.itemsize, call.name)
    tile = parse_tile(tile)
    U = _api.filter_transform(w, tile, workers=workers, backend=call.name)
    weights = _Weights(U, bias, None, ksize, tile, call.name)
    return _build(x, weights, ksize, g.pads, g.out, workers)


def winograd_conv3d(x, U, *, kernel_size, tile, padding=0, bias=None, columns=None, workers=None):
    """Convolution of a dask array with Winograd-domain weights (optionally column-sparse).

    The dask counterpart of :func:`pywino3d.winograd_conv3d`; see
    :func:`conv3d` for the chunking, halos and threads.

    Parameters
    ----------
    x : dask.array.Array, shape (N, C, D, H, W)
    U : array_like, shape (P, K, C)
        In memory, where the chunks live; sent to the workers once.
    kernel_size, tile, padding, bias, columns
        As in :func:`pywino3d.winograd_conv3d`.
    workers : int, optional
        Kernel threads per task; None follows :func:`task_threads`.

    Returns
    -------
    y : dask.array.Array, shape (N, K, Do, Ho, Wo)

    Examples
    --------
    >>> import dask, dask.array as da, numpy as np, pywino3d
    >>> import pywino3d.dask
    >>> rng = np.random.default_rng(1)
    >>> x = rng.standard_normal((1, 2, 9, 9, 9))
    >>> U = pywino3d.filter_transform(rng.standard_normal((3, 2, 3, 3, 3)), 2)
    >>> cols = np.arange(0, 64, 2)
    >>> y = pywino3d.dask.winograd_conv3d(da.from_array(x, chunks=4), U, kernel_size=3, tile=2,
    ...                                   padding="same", columns=cols)
    >>> ref = pywino3d.winograd_conv3d(x, U, kernel_size=3, tile=2, padding="same", columns=cols)
    >>> with dask.config.set(scheduler="threads"):
    ...     bool(np.allclose(y.compute(), ref))
    True
    """
    call, xinfo = _check_volume(x, None)
    ksize = parse_kernel_size(kernel_size)
    tile = _api._tile_for_filter(tile)
    U = call.array("U", U, ndim=3, dtype=x.dtype)
    g = make_geometry(x.shape, U.shape[1], ksize, padding, tile)
    _api._check_U(U, g)
    kept = None if columns is None else call.columns(columns, g.npos)
    bias = _api._check_bias(call, bias, g.K, x.dtype)
    call.workers(workers)
    weights = _Weights(U, bias, kept, ksize, tile, call.name)
    return _build(x, weights, ksize, parse_padding(padding, ksize), g.out, workers)
