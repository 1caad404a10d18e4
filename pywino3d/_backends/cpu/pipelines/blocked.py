"""The blocked CPU pipeline: each stage runs over a whole block of tiles.

For a block of ``tb`` tiles the forward pass runs

    V = input_transform(x)          # (nk, C, tb)   kept positions only
    M[i] = U[kept[i]] @ V[i]        # (nk, kc, tb)  batched GEMM, kc-channel chunks
    y   <- output_transform(M)      # written straight into y

so the workspace is ``(C + kc) * nk * tb`` elements whatever the volume, plus
the kernels' scratch.  The block size comes from a workspace budget
(``PYWINO3D_WORKSPACE_MB``, default 48); ``kc`` and the rounding of ``tb``
are the extension's ``blocked_chunks()``.  Kernels: ``src/cpu/blocked.template.h``
and ``src/cpu/gemm.template.h``.
"""
from __future__ import annotations

import numpy as np

from pywino3d._backends.cpu._ext import _cpu
from pywino3d._backends.cpu import outputs as _cpu_outputs
from pywino3d._backends.cpu.common import (
    block_size, c_geometry, check_memory, plan, run, scratch, workspace, workspace_budget,
)
from pywino3d._backends.cpu.filter import UnfilteredWeights

NAME = "blocked"
#: Same arithmetic as this pipeline (bit-for-bit agreement expected).
ARITHMETIC = "blocked"
#: forward() takes :class:`UnfilteredWeights` for U (:func:`weights`).
TAKES_UNFILTERED = True


def supports(g, kept, dtype):
    """None: the blocked pipeline serves every problem."""
    return None


def _k_chunk(K):
    return min(K, _cpu.blocked_chunks()["k_chunk"])


def _scratch_bytes(pin, pout, dtype, nthreads):
    return max(_cpu.blocked_scratch_bytes(pin, nthreads), _cpu.blocked_scratch_bytes(pout, nthreads),
               _cpu.gemm_scratch_bytes(dtype, nthreads))


def _plans(g, dtype, kept):
    return (plan("input", g.tile, g.ksize, dtype, kept), plan("output", g.tile, g.ksize, dtype, kept))


def forward_layout(g, nk, dtype):
    """(tiles per block, output-channel chunk) of the forward pass."""
    dtype = np.dtype(dtype)
    kc = _k_chunk(g.K)
    return block_size(g.ntiles, nk * (g.C + kc), dtype.itemsize), kc


def backward_layout(g, nk, dtype):
    """Tiles per block of the backward pass."""
    return block_size(g.ntiles, nk * (2 * g.C + g.K), np.dtype(dtype).itemsize)


def workspace_bytes(g, kept, dtype, nthreads, backward=False):
    """Bytes of workspace (tile buffers and kernel scratch) one call uses."""
    dtype = np.dtype(dtype)
    nk = int(kept.size)
    pin, pout = _plans(g, dtype, kept)
    if backward:
        tb = backward_layout(g, nk, dtype)
        elems = tb * nk * (2 * g.C + g.K)
    else:
        tb, kc = forward_layout(g, nk, dtype)
        elems = tb * nk * (g.C + kc)
    return elems * dtype.itemsize + _scratch_bytes(pin, pout, dtype, nthreads)


#: Where the product transforms the weights itself (``transforms_in_product``):
#: a thread's slab of U (kept positions x one GEMM row panel x one KC-deep
#: slab of input channels) within the L2 of one core, and V's packed slab
#: (kept positions x KC x tiles), which every row panel reads again, within
#: about half the L3 (8 MiB on the machine measured).  Medians on 2 cores,
#: product_w against filter_transform(out=) + GEMM, 512x512 kernels: F(2^3)
#: 32 tiles 19.6 / 26.7 ms, 64 tiles 42.8 / 40.2, 96 tiles 73 / 55; F(3^3)
#: 32 tiles 46 / 51; F(4^3) 32 tiles 91 / 82; 256x256: F(2^3) 54 tiles
#: 8.1 / 9.7, F(3^3) 32 tiles 11.0 / 13.8.
IN_PRODUCT_SLAB_BYTES = 1 << 20
IN_PRODUCT_V_BYTES = 9 << 19


def transforms_in_product(g, kept, dtype):
    """Whether the product should transform the weights itself
    (``_cpu.product_w``): the tiles fit one block, so each kernel is
    transformed once either way, and the slabs fit the caches (above)."""
    dtype = np.dtype(dtype)
    return _one_block(g, int(kept.size), dtype) and _slabs_fit(g, int(kept.size), dtype)


def _one_block(g, nk, dtype):
    return nk > 0 and g.ntiles > 0 and not all(m == 1 for m in g.tile) and forward_layout(g, nk, dtype)[0] >= g.ntiles


def _slabs_fit(g, nk, dtype):
    blk = _cpu.gemm_blocking(dtype)
    slab = nk * blk["kc"] * dtype.itemsize
    return slab * blk["mr"] <= IN_PRODUCT_SLAB_BYTES and slab * g.ntiles <= IN_PRODUCT_V_BYTES


def takes_unfiltered(g, kept, dtype):
    """Whether a one-shot call should hand this pipeline w instead of U
    (:class:`~pywino3d._backends.cpu.filter.UnfilteredWeights`): where the product
    transforms it (:func:`transforms_in_product`), or where the tiles fit one
    block and U exceeds the workspace budget -- U is then made one chunk of
    output channels at a time into reused memory, just before that chunk's
    product, instead of into tens or hundreds of MB of fresh pages (C512->512
    at 4x14x14, F(4^3): 226 MB)."""
    dtype = np.dtype(dtype)
    nk = int(kept.size)
    return _one_block(g, nk, dtype) and (_slabs_fit(g, nk, dtype)
                                         or nk * g.K * g.C * dtype.itemsize > workspace_budget())


def weights(w, tile, kept, nthreads, g):
    """The backend's hook for one-shot weights: w itself, unfiltered, where
    :func:`takes_unfiltered` holds; else None (filter_transform's U)."""
    if takes_unfiltered(g, kept, w.dtype):
        return UnfilteredWeights(w, tile, kept)
    return None


def _u_chunk(g, nk, dtype, kc):
    """Output channels per chunk of U made in turn (``takes_unfiltered``):
    the forward chunk, or fewer so that the chunk of U fits the workspace
    budget (whole GEMM row blocks, at least one)."""
    mc = _cpu.gemm_blocking(dtype)["mc"]
    rows = workspace_budget() // max(1, nk * g.C * np.dtype(dtype).itemsize)
    return int(min(kc, max(mc, rows // mc * mc)))


def forward(g, x, U, bias, kept, nthreads):
    """y = Winograd convolution of x with U at the kept positions (a
    non-empty problem with at least one kept position and channel; the
    trivial ones are answered in ``_api._forward``).  U may be
    :class:`~pywino3d._backends.cpu.filter.UnfilteredWeights` (``takes_unfiltered``):
    the product then makes U from w as it goes (``_cpu.product_w``), or U is
    made one chunk of output channels at a time into reused memory; same
    bits either way."""
    dtype = x.dtype
    K, C = g.K, g.C
    y = _cpu_outputs.empty((g.N, K, *g.out), dtype)
    nk = int(kept.size)
    T = g.ntiles
    tb, kc = forward_layout(g, nk, dtype)
    unfiltered = isinstance(U, UnfilteredWeights)
    in_product = unfiltered and transforms_in_product(g, kept, dtype)
    # the buffers one-shot weights add: V packed for the product, or a chunk of U
    if in_product:
        extra = _cpu.product_w_packed_len(dtype, nk, C, tb)
    elif unfiltered:  # U made a chunk of output channels at a time (takes_unfiltered)
        kc = _u_chunk(g, nk, dtype, kc)
        extra = nk * kc * C
    else:
        extra = 0
    check_memory("the output and the tile workspace",
                 y.nbytes + workspace_bytes(g, kept, dtype, nthreads) + extra * np.dtype(dtype).itemsize)
    x, geom = c_geometry(g, x)
    bias = None if bias is None else np.ascontiguousarray(bias)
    pin, pout = _plans(g, dtype, kept)
    V = workspace("V", nk * C * tb, dtype)
    M = workspace("M", nk * kc * tb, dtype)
    sc_bytes = _scratch_bytes(pin, pout, dtype, nthreads)
    if unfiltered:
        w = U.kernels()
        pfil = plan("filter", g.tile, g.ksize, dtype, kept)
    if in_product:
        Vp = workspace("Vp", extra, dtype)
        sc_bytes = max(sc_bytes, _cpu.product_w_scratch_bytes(pfil, nthreads))
    elif unfiltered:
        Uc = workspace("conv_U", extra, dtype)
        sc_bytes = max(sc_bytes, _cpu.filter_scratch_bytes(pfil, nthreads))
    else:
        U = np.ascontiguousarray(U)
    sc = scratch(sc_bytes)
    for t0 in range(0, T, tb):
        n = min(tb, T - t0)
        run("input", _cpu.input_block, geom, x, pin, t0, n, V, sc, nthreads)
        Vb = V[:nk * C * n].reshape(nk, C, n)
        for k0 in range(0, K, kc):
            k1 = min(K, k0 + kc)
            Mb = M[:nk * (k1 - k0) * n].reshape(nk, k1 - k0, n)
            # M[i] (kc x n) = U[kept[i], k0:k1] (kc x C) @ V[i] (C x n)
            if in_product:
                run("product", _cpu.product_w, w, pfil, Vb, k0, Mb, Vp, k0 == 0, sc, nthreads)
            elif unfiltered:
                Uk = Uc[:nk * (k1 - k0) * C]
                run("filter", _cpu.filter_expand, w[k0:k1].reshape(-1), (k1 - k0) * C, pfil, Uk, sc, nthreads)
                run("product", _cpu.gemm_batched, Uk.reshape(nk, k1 - k0, C), Vb, Mb, None, None, accumulate=False,
                    scratch=sc, nthreads=nthreads)
            else:
                run("product", _cpu.gemm_batched, U[:, k0:k1], Vb, Mb, kept, None, accumulate=False, scratch=sc,
                    nthreads=nthreads)
            run("output", _cpu.output_block, geom, M, k0, k1 - k0, pout, t0, n, bias, y, sc, nthreads)
    return y


def backward(g, gy, x, U, kept, nthreads, need_x=True, need_U=True):
    """(grad_x, grad_U) of the Winograd convolution (non-trivial problems;
    see ``_api._backward``)."""
    dtype = x.dtype
    K, C = g.K, g.C
    P = g.npos
    gx = np.zeros((g.N, C, *g.spatial), dtype=dtype) if need_x else None
    gU = np.zeros((P, K, C), dtype=dtype) if need_U else None
    nk = int(kept.size)
    T = g.ntiles
    tb = backward_layout(g, nk, dtype)
    check_memory("the gradients and the tile workspace",
                 (gx.nbytes if need_x else 0) + workspace_bytes(g, kept, dtype, nthreads, backward=True))
    x, geom = c_geometry(g, x)
    gy = np.ascontiguousarray(gy)
    U = np.ascontiguousarray(U)
    pin, pout = _plans(g, dtype, kept)
    gM = workspace("M", nk * K * tb, dtype)
    V = workspace("V", nk * C * tb, dtype) if need_U else None
    gV = workspace("gV", nk * C * tb, dtype) if need_x else None
    gUk = np.zeros((nk, K, C), dtype=dtype) if need_U else None
    sc = scratch(_scratch_bytes(pin, pout, dtype, nthreads))
    for t0 in range(0, T, tb):
        n = min(tb, T - t0)
        run("output_adjoint", _cpu.output_adjoint_block, geom, gy, pout, t0, n, gM, sc, nthreads)
        gMb = gM[:nk * K * n].reshape(nk, K, n)
        if need_x:
            # gV[i] (C x n) = U[kept[i]]^T (C x K) @ gM[i] (K x n)
            run("product_x", _cpu.gemm_batched, U.transpose(0, 2, 1), gMb, gV[:nk * C * n].reshape(nk, C, n),
                kept, None, accumulate=False, scratch=sc, nthreads=nthreads)
            run("input_adjoint", _cpu.input_adjoint_block, geom, gV, pin, t0, n, gx, sc, nthreads)
        if need_U:
            run("input", _cpu.input_block, geom, x, pin, t0, n, V, sc, nthreads)
            # gU[i] (K x C) += gM[i] (K x n) @ V[i]^T (n x C)
            run("product_U", _cpu.gemm_batched, gMb, V[:nk * C * n].reshape(nk, C, n).transpose(0, 2, 1), gUk,
                None, None, accumulate=True, scratch=sc, nthreads=nthreads)
    if need_U:
        gU[kept] = gUk
    return gx, gU
