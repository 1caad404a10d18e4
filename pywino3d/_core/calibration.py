"""Calibration statistics of a layer's inputs, for data-aware column pruning.

The white-noise criteria of :mod:`pywino3d.pruning` measure a change of U by
the Frobenius norm of the per-tile operator, which is the output error for
inputs whose tiles are white noise.  Real activations are smooth, mostly
positive (after ReLU) and correlated across channels, so the transformed
tiles ``V = B^T d B`` put most of their energy on a few positions.  With
calibration inputs the error of a change ``D = U' - U`` can be measured on
the data instead.

Per output channel k, over the tiles t of the calibration inputs, the output
error of the Winograd layer is ::

    E_k = sum_t || sum_p a_p sum_c D[p, k, c] V[t, p, c] ||^2
        = sum_{(p,c),(q,c')} D[p,k,c] D[q,k,c'] Ga[p,q] S[(p,c),(q,c')]

with ``a_p`` column p of ``A^T`` (so ``Ga[p, q] = a_p . a_q``, a Kronecker
product of three per-axis matrices) and ``S = V^T V`` the second-moment matrix
of the transformed tiles over positions *and* input channels.  ``H = Ga * S``
(``Ga`` broadcast over the channel blocks) is the same for every output
channel, so one factorisation serves the whole layer.  When the layer's
inputs differ from the unpruned network's (earlier layers already pruned),
the target is the unpruned layer on the unpruned inputs and the cross moments
``B = Ga * V^T V_ref`` enter the right-hand side; this compensates, layer by
layer, the error that the earlier layers made.

``H`` has ``(positions * C_in)^2`` entries.  Up to :data:`FULL_LIMIT` rows it
is kept whole; above, only its channel-diagonal blocks are kept (the
correlation between input channels is dropped, the spatial one kept), which
costs ``C_in * positions^2``.  Only tiles whose outputs all lie inside the
output are used (all tiles when there are none), so that cropped outputs do
not count.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pywino3d._core.geometry import make_geometry, parse_kernel_size, parse_tile, tile_patches
from pywino3d._core.transforms import kron3, winograd_matrices

#: Largest ``positions * C_in`` for which the channel-coupled moments are used.
FULL_LIMIT = 2048


@dataclass(frozen=True)
class InputMoments:
    """Second moments of a layer's transformed input tiles, weighted by the output transform.

    ``H`` and ``B`` are ``(P*C, P*C)`` (row ``p * C + c``) when ``full``,
    else ``(C, P, P)`` channel-diagonal blocks; both are divided by the
    number of tiles.
    """

    H: np.ndarray
    B: np.ndarray
    full: bool
    positions: int
    channels: int
    tiles: int


def input_tiles(x, kernel_size, tile, padding):
    """Transformed input tiles ``V`` (tiles, positions, C) in float64, full tiles only."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 5:
        raise ValueError(f"inputs: expected shape (N, C, D, H, W), got {x.shape}")
    ks, tl = parse_kernel_size(kernel_size), parse_tile(tile)
    g = make_geometry(x.shape, 1, ks, padding, tl)
    nt = g.ntiles_axis
    patches = tile_patches(x, g.pads, tl, g.alpha, nt)
    full_nt = tuple(o // m for o, m in zip(g.out, tl))
    if min(full_nt) >= 1:
        patches = patches[:, :, :full_nt[0], :full_nt[1], :full_nt[2]]
    BT = [winograd_matrices(m, r)[2] for m, r in zip(tl, ks)]
    V = np.einsum("ia,jb,kc,nCdhwabc->ndhwijkC", *BT, patches, optimize=True)
    return V.reshape(-1, g.npos, x.shape[1])


def output_gram(kernel_size, tile):
    """``Ga[p, q] = a_p . a_q``: Gram matrix of the output transform's columns (positions x positions)."""
    ks, tl = parse_kernel_size(kernel_size), parse_tile(tile)
    ATs = [winograd_matrices(m, r)[0] for m, r in zip(tl, ks)]
    return kron3([AT.T @ AT for AT in ATs])


def input_moments(inputs, *, kernel_size, tile, padding=0, reference=None):
    """:class:`InputMoments` of the calibration ``inputs`` (N, C, D, H, W).

    ``reference``: the unpruned network's inputs of the same layer, same
    shape (default: ``inputs``).
    """
    V = input_tiles(inputs, kernel_size, tile, padding)
    if reference is None:
        R = V
    else:
        if np.shape(reference) != np.shape(inputs):
            raise ValueError(f"reference_inputs: expected the shape of inputs {np.shape(inputs)}, "
                             f"got {np.shape(reference)}")
        R = input_tiles(reference, kernel_size, tile, padding)
    T, P, C = V.shape
    if T == 0:
        raise ValueError("inputs: no tile fits inside the output; give larger calibration volumes")
    Ga = output_gram(kernel_size, tile)
    if P * C <= FULL_LIMIT:
        Vf = V.reshape(T, P * C)
        Gb = np.kron(Ga, np.ones((C, C)))
        H = (Vf.T @ Vf) * Gb / T
        B = H if R is V else (Vf.T @ R.reshape(T, P * C)) * Gb / T
        return InputMoments(H, B, True, P, C, T)
    Vc = np.ascontiguousarray(V.transpose(2, 0, 1))  # (C, T, P)
    H = np.matmul(Vc.transpose(0, 2, 1), Vc) * Ga / T
    B = H if R is V else np.matmul(Vc.transpose(0, 2, 1), np.ascontiguousarray(R.transpose(2, 0, 1))) * Ga / T
    return InputMoments(H, B, False, P, C, T)


def check_weights(U, mom):
    """U (positions, C_out, C_in) as float64, checked against the moments."""
    U = np.asarray(U, dtype=np.float64)
    if U.ndim != 3 or U.shape[0] != mom.positions or U.shape[2] != mom.channels:
        raise ValueError(f"inputs: the calibration inputs give {mom.positions} positions x {mom.channels} "
                         f"input channels, which does not match U of shape {U.shape}")
    return U


def scores(U, mom):
    """Output error (root mean square over the calibration tiles, summed over
    output channels) of removing each position alone: ``sqrt(sum_k U[p,k]^T H_pp U[p,k])``."""
    U = check_weights(U, mom)
    P, C = mom.positions, mom.channels
    if mom.full:
        blocks = mom.H.reshape(P, C, P, C)[np.arange(P), :, np.arange(P), :]  # (P, C, C)
        s2 = np.einsum("pkc,pcd,pkd->p", U, blocks, U)
    else:
        diag = mom.H[:, np.arange(P), np.arange(P)]  # (C, P)
        s2 = np.einsum("cp,pkc->p", diag, U * U)
    return np.sqrt(np.maximum(s2, 0.0))


def _solve(Hss, rhs, damping):
    """``(Hss + lam I)^{-1} rhs``, lam = damping * mean diagonal (keeps the
    solve well posed when some tiles' channels are constant or zero)."""
    lam = damping * max(float(np.mean(np.diag(Hss))), np.finfo(np.float64).tiny)
    return np.linalg.solve(Hss + lam * np.eye(Hss.shape[0]), rhs)


def refit(U, keep, mom, damping=1e-6):
    """The U' (zero outside ``keep``) closest to U on the calibration data.

    Minimises ``sum_k E_k(U' on inputs vs U on reference) + lam ||U'_S - U_S||^2``
    over the kept positions S: ``U'_S = U_S + (H_SS + lam)^{-1} (B_S U - H_SS U_S)``.
    With nothing pruned and no reference, ``U' = U``; the damped solution
    never has a larger error than zeroing the pruned positions.
    """
    U = check_weights(U, mom)
    P, K, C = U.shape
    keep = np.asarray(keep, dtype=np.int64)
    out = np.zeros_like(U)
    if mom.full:
        Uf = U.transpose(0, 2, 1).reshape(P * C, K)
        rows = (keep[:, None] * C + np.arange(C)[None, :]).ravel()
        Hss = mom.H[np.ix_(rows, rows)]
        rhs = mom.B[rows] @ Uf - Hss @ Uf[rows]
        fit = Uf[rows] + _solve(Hss, rhs, damping)
        out[keep] = fit.reshape(keep.size, C, K).transpose(0, 2, 1)
        return out
    for c in range(C):
        Uc = U[:, :, c]
        Hss = mom.H[c][np.ix_(keep, keep)]
        rhs = mom.B[c][keep] @ Uc - Hss @ Uc[keep]
        out[keep, :, c] = Uc[keep] + _solve(Hss, rhs, damping)
    return out


def output_error(U_new, U, mom):
    """Root of ``sum_k E_k(U_new - U)`` (same inputs for both): the RMS output
    error per tile on the calibration data, summed over output channels."""
    D = check_weights(U_new, mom) - check_weights(U, mom)
    P, K, C = D.shape
    if mom.full:
        Df = D.transpose(0, 2, 1).reshape(P * C, K)
        e2 = np.einsum("ik,ij,jk->", Df, mom.H, Df)
    else:
        e2 = np.einsum("pkc,cpq,qkc->", D, mom.H, D)
    return math.sqrt(max(float(e2), 0.0))
