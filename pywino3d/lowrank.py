"""Low-rank Winograd-domain weights: U = P @ Q (or U0 + P @ Q).

The Winograd-domain weight tensor of one layer, ``U`` of shape
(positions, C_out, C_in), is parameterised by two small factors:

* ``P`` of shape (positions, k): how each tile position mixes the k bases;
* ``Q`` of shape (k, C_out, C_in): the k channel-mixing bases,

so that ``U[p] = sum_j P[p, j] Q[j]``.  A spatial kernel of size
``r_d x r_h x r_w`` maps to ``U = (G_d x G_h x G_w) w`` whose reshaped
(positions, C_out*C_in) matrix has rank at most ``r_d r_h r_w`` (27 for
3x3x3): a truncated SVD at that rank is exact.

Two variants are supported (the source paper's exact one is not known to us):

* ``mode="factor"``: U = P Q, both trained;
* ``mode="residual"``: U = U0 + P Q with U0 frozen (e.g. the transform of a
  pretrained kernel) and the low-rank update trained; P starts random and Q
  at zero, so training starts exactly at U0.
"""
from __future__ import annotations

import numpy as np

from pywino3d._core.arrays import array_module as _xp
from pywino3d._core.geometry import n_positions, parse_kernel_size, parse_tile
from pywino3d._core.validation import as_int

__all__ = ["LowRankWinograd"]

MODES = ("factor", "residual")



class LowRankWinograd:
    """Winograd-domain weights held as two factors.

    Parameters
    ----------
    P : array, shape (positions, k)
    Q : array, shape (k, C_out, C_in)
    kernel_size : int or tuple of 3 ints
    tile : int or tuple of 3 ints
    U0 : array, shape (positions, C_out, C_in), optional
        Frozen base for the residual mode.

    Examples
    --------
    >>> import numpy as np, pywino3d
    >>> w = np.random.default_rng(0).standard_normal((8, 4, 3, 3, 3))
    >>> lr = pywino3d.LowRankWinograd.from_filter(w, rank=27, tile=2)  # rank(U) <= 27
    >>> lr.P.shape, lr.Q.shape, lr.rank
    ((64, 27), (27, 8, 4), 27)
    >>> bool(np.allclose(lr.weights(), pywino3d.filter_transform(w, 2)))
    True
    """

    def __init__(self, P, Q, *, kernel_size, tile, U0=None):
        self.kernel_size = parse_kernel_size(kernel_size)
        self.tile = parse_tile(tile)
        npos = n_positions(self.tile, self.kernel_size)
        xp = _xp(P)
        if P.ndim != 2 or P.shape[0] != npos:
            raise ValueError(f"P: expected shape (positions={npos}, k), got {P.shape}")
        if Q.ndim != 3 or Q.shape[0] != P.shape[1]:
            raise ValueError(f"Q: expected shape (k={P.shape[1]}, C_out, C_in), got {Q.shape}")
        if _xp(Q) is not xp or Q.dtype != P.dtype:
            raise TypeError("Q: must have P's array type and dtype")
        if U0 is not None and (U0.shape != (npos, *Q.shape[1:]) or _xp(U0) is not xp):
            raise ValueError(f"U0: expected shape {(npos, *Q.shape[1:])} on P's device, got {U0.shape}")
        self.P, self.Q, self.U0 = P, Q, U0

    # ------------------------------------------------------------ factories
    @classmethod
    def from_filter(cls, w, rank, tile, *, mode="factor", seed=0):
        """Initialise from spatial weights by a truncated SVD of U.

        Parameters
        ----------
        w : array, shape (C_out, C_in, rd, rh, rw)
        rank : int
            k; at ``rank >= rd*rh*rw`` the factorisation is exact.
        tile : int or tuple of 3 ints
        mode : {"factor", "residual"}
            "factor": P Q is the rank-k truncation of U (split as
            ``P = L sqrt(S)``, ``Q = sqrt(S) R^T``).  "residual": U0 = U
            exactly, P random (scaled like the SVD factors), Q = 0.

        Examples
        --------
        >>> import numpy as np, pywino3d
        >>> w = np.random.default_rng(0).standard_normal((4, 4, 1, 3, 3))
        >>> lr = pywino3d.LowRankWinograd.from_filter(w, 9, (1, 4, 4))  # 1x3x3: rank <= 9
        >>> bool(np.allclose(lr.weights(), pywino3d.filter_transform(w, (1, 4, 4))))
        True
        >>> pywino3d.LowRankWinograd.from_filter(w, 3, 2, mode="residual").mode
        'residual'
        """
        from pywino3d._api import filter_transform

        if mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
        xp = _xp(w)
        U = filter_transform(w, tile)
        npos, K, C = U.shape
        rank = as_int("rank", rank, 1, min(npos, K * C) if mode == "factor" else None)
        if mode == "residual":
            rng = np.random.default_rng(seed)
            P = xp.asarray(rng.standard_normal((npos, rank)) / np.sqrt(npos)).astype(U.dtype)
            Q = xp.zeros((rank, K, C), dtype=U.dtype)
            return cls(P, Q, kernel_size=w.shape[2:], tile=tile, U0=U)
        L, S, Rt = xp.linalg.svd(U.reshape(npos, K * C).astype(xp.float64), full_matrices=False)
        s = xp.sqrt(S[:rank])
        P = (L[:, :rank] * s).astype(U.dtype)
        Q = (s[:, None] * Rt[:rank]).reshape(rank, K, C).astype(U.dtype)
        return cls(P, Q, kernel_size=w.shape[2:], tile=tile)

    @classmethod
    def random(cls, out_channels, in_channels, kernel_size, tile, rank, *, dtype=np.float32,
               seed=0, mode="factor"):
        """Variance-preserving random initialisation for training from scratch.

        Draws a He-normal spatial kernel (std ``sqrt(2 / (C_in r_d r_h r_w))``),
        transforms it and takes the rank-k truncation, rescaled to keep U's
        Frobenius norm, so the layer's output variance matches a He-initialised
        spatial convolution.

        Examples
        --------
        >>> import pywino3d
        >>> lr = pywino3d.LowRankWinograd.random(16, 8, 3, tile=2, rank=6)
        >>> lr.shape, lr.num_params, lr.num_dense_params
        ((64, 16, 8), 1152, 8192)
        """
        from pywino3d._api import filter_transform

        ks = parse_kernel_size(kernel_size)
        rng = np.random.default_rng(seed)
        fan_in = in_channels * ks[0] * ks[1] * ks[2]
        w = (rng.standard_normal((out_channels, in_channels, *ks)) * np.sqrt(2.0 / fan_in)).astype(dtype)
        lr = cls.from_filter(w, rank, tile, mode=mode, seed=seed)
        if mode == "factor":
            full = np.linalg.norm(filter_transform(w, tile))
            low = np.linalg.norm(lr.weights())
            if low > 0:
                scale = np.sqrt(full / low)
                lr.P = (lr.P * scale).astype(dtype)
                lr.Q = (lr.Q * scale).astype(dtype)
        return lr

    # ------------------------------------------------------------ properties
    @property
    def rank(self):
        return int(self.P.shape[1])

    @property
    def mode(self):
        return "factor" if self.U0 is None else "residual"

    @property
    def shape(self):
        """Shape of U: (positions, C_out, C_in)."""
        return (self.P.shape[0], *self.Q.shape[1:])

    @property
    def num_params(self):
        """Trainable parameters: P.size + Q.size."""
        return int(self.P.size + self.Q.size)

    @property
    def num_dense_params(self):
        """Parameters of the full U (the "vanilla" Winograd-domain weights)."""
        npos, K, C = self.shape
        return npos * K * C

    # ------------------------------------------------------------ maths
    def weights(self):
        """U = P @ Q (+ U0), shape (positions, C_out, C_in), on the factors' backend."""
        npos, K, C = self.shape
        U = (self.P @ self.Q.reshape(self.rank, K * C)).reshape(npos, K, C)
        return U if self.U0 is None else U + self.U0

    def backward(self, grad_U):
        """(grad_P, grad_Q) from the gradient with respect to U.

        ``grad_P = grad_U Q^T`` and ``grad_Q = P^T grad_U`` in the
        (positions, C_out*C_in) reshape; U0 is frozen.

        Examples
        --------
        >>> import numpy as np, pywino3d
        >>> lr = pywino3d.LowRankWinograd.random(4, 2, 3, tile=2, rank=3)
        >>> gP, gQ = lr.backward(np.ones(lr.shape, np.float32))
        >>> gP.shape, gQ.shape
        ((64, 3), (3, 4, 2))
        """
        npos, K, C = self.shape
        if tuple(grad_U.shape) != (npos, K, C):
            raise ValueError(f"grad_U: expected shape {(npos, K, C)}, got {grad_U.shape}")
        gU = grad_U.reshape(npos, K * C)
        gP = gU @ self.Q.reshape(self.rank, K * C).T
        gQ = (self.P.T @ gU).reshape(self.rank, K, C)
        return gP, gQ

    def column_norms(self, ord=2):
        """Norm of every column U[p] (positions,), from the factors when cheaper.

        For ``ord=2`` in factor mode, ``||P[p] Q||^2 = P[p] (Q Q^T) P[p]^T``
        costs ``k^2 C_out C_in`` instead of ``positions k C_out C_in``.
        """
        npos, K, C = self.shape
        xp = _xp(self.P)
        if ord == 2 and self.U0 is None and self.rank < npos:
            Qf = self.Q.reshape(self.rank, K * C).astype(xp.float64)
            gram = Qf @ Qf.T
            P = self.P.astype(xp.float64)
            return xp.sqrt(xp.maximum(xp.einsum("pi,ij,pj->p", P, gram, P), 0))
        U = self.weights().reshape(npos, K * C)
        if ord == 1:
            return xp.abs(U).sum(axis=1)
        return xp.sqrt((U.astype(xp.float64) ** 2).sum(axis=1))

    def __repr__(self):
        npos, K, C = self.shape
        return (f"LowRankWinograd(positions={npos}, out={K}, in={C}, rank={self.rank}, "
                f"tile={self.tile}, kernel_size={self.kernel_size}, mode={self.mode!r})")
