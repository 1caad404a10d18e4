"""Measure the rounding error of conv3d per tile size (docs/accuracy.md).

    python benchmarks/accuracy.py            # the published tables

Part 1: relative L1 error and max abs error against the float64 oracle for a
64-channel 3x3x3 layer (outputs ~ N(0, 1)), float32 and float64, m = 1..6.
Part 2: the calibration behind pywino3d.testing.AXIS_ERROR: cube root of
max |err| / (eps * (|x| star |w|)) for cubic kernels r = 1..7, tiles m = 1..8.
Part 3: the layers of issue 30 (C64->64 at 24^3, C256->256 at 12^3, C16->16 at
40^3; ``--small`` halves the extents): float32 relative L2 error of
conv3d(tile=m) against the float64 direct result, as a ratio to float32
direct's (tile=1) own error, per input/weight statistic (see ``STATS``).
Part 4: the same error split by stage: a NumPy Winograd pipeline (the
library's matrices, the library's tiling) is run in float64 with one stage at a
time in float32 -- filter transform, input transform, storing U and V in
float32, the product's accumulation over input channels, output transform --
so each column is the error that stage alone adds (relative L2 against the
float64 direct result).  The NumPy float32 stages sum in NumPy/BLAS order,
not in the C kernels' order; the "all" column runs every stage in float32 and
is to be compared with the library's end-to-end error (part 3).

Parts 5 and 6 (only when asked for): the point search of
pywino3d._core.transforms.SEARCHED_POINTS, and the error table behind
tile="auto"'s accuracy rule (docs/accuracy.md).

    python benchmarks/accuracy.py --part 3 --stats gauss relu trained
    python benchmarks/accuracy.py --part 4 --layers C256 --tiles 4 6
"""
import argparse

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

import pywino3d
from pywino3d import winograd_matrices
from pywino3d.testing import conv3d_reference, local_max


def part1(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, 64, 8, 16, 16))
    w = rng.standard_normal((64, 64, 3, 3, 3)) / np.sqrt(64 * 27)
    print("| tile | float32 rel. L1 | float32 max abs | float64 rel. L1 | float64 max abs |")
    print("|---|---|---|---|---|")
    for m in range(1, 7):
        cells = []
        for dt in (np.float32, np.float64):
            xd, wd = x.astype(dt), w.astype(dt)
            ref = conv3d_reference(xd, wd, padding=1)
            y = pywino3d.conv3d(xd, wd, padding=1, tile=m)
            cells += [f"{np.abs(y - ref).sum() / np.abs(ref).sum():.2e}", f"{np.abs(y - ref).max():.2e}"]
        name = "direct (m=1)" if m == 1 else f"F({m}^3, 3^3)"
        print(f"| {name} | " + " | ".join(cells) + " |")


def part2(seed=1, samples=2):
    rng = np.random.default_rng(seed)
    eps = np.finfo(np.float32).eps
    print("| r \\ m | " + " | ".join(str(m) for m in range(1, 9)) + " |")
    print("|---" * 9 + "|")
    for r in range(1, 8):
        row = []
        for m in range(1, 9):
            worst = 0.0
            for _ in range(samples):
                x = rng.standard_normal((1, 8, 10, 10, 10)).astype(np.float32)
                w = rng.standard_normal((4, 8, r, r, r)).astype(np.float32)
                y = pywino3d.conv3d(x, w, padding="same", tile=m)
                ref = conv3d_reference(x, w, padding="same")
                mag = local_max(conv3d_reference(np.abs(x), np.abs(w), padding="same"), [2 * m - 1] * 3)
                worst = max(worst, float((np.abs(y - ref) / mag).max() / eps))
            row.append(f"{worst ** (1 / 3):.2f}")
        print(f"| {r} | " + " | ".join(row) + " |")


#: The layers of issue 30: name -> (channels, extent).
LAYERS = {"C64": (64, 24), "C256": (256, 12), "C16": (16, 40)}


def _weights(rng, kind, K, C, r=3):
    """Weights of statistic ``kind``, scaled to 1/sqrt(r^3 C) per entry (unit
    output variance for unit inputs).

    ``gauss``: i.i.d. normal.  ``trained``: trained-like -- the K x (C r^3)
    matrix has a decaying spectrum (singular values ~ 1/sqrt(i), a few
    directions dominate, as in trained layers), the entries are heavy tailed
    (each multiplied by a Laplace variable) and the taps are centre-heavy
    (weight 2 at the centre, 1 on faces, 0.5 elsewhere, like smooth learned
    kernels)."""
    if kind == "gauss":
        w = rng.standard_normal((K, C, r, r, r))
    elif kind == "trained":
        n = min(K, C * r ** 3)
        a = rng.standard_normal((K, n))
        b = rng.standard_normal((n, C * r ** 3))
        w = ((a / np.sqrt(np.arange(1, n + 1))) @ b).reshape(K, C, r, r, r)
        w *= rng.laplace(size=w.shape)
        c = np.abs(np.arange(r) - (r - 1) / 2) < 1
        taps = 0.5 * 2.0 ** (c[:, None, None] * 1.0 + c[None, :, None] + c[None, None, :] - 1)
        w *= taps / np.sqrt((taps ** 2).mean())
    else:
        raise ValueError(f"unknown weight statistic {kind!r}")
    return w / np.sqrt((w ** 2).mean() * C * r ** 3)


def _inputs(rng, kind, C, S):
    """Activations of statistic ``kind``: ``gauss`` (standard normal),
    ``relu`` (post-ReLU: max(0, N(0, 1)), a nonzero mean), ``norm``
    (post-norm of a smooth field: a 3-tap box-filtered normal volume,
    standardised per channel, so neighbours correlate)."""
    x = rng.standard_normal((1, C, S, S, S))
    if kind == "relu":
        return np.maximum(x, 0)
    if kind == "norm":
        for ax in (2, 3, 4):
            x = (x + np.roll(x, 1, ax) + np.roll(x, -1, ax)) / 3
        return (x - x.mean(axis=(2, 3, 4), keepdims=True)) / x.std(axis=(2, 3, 4), keepdims=True)
    if kind != "gauss":
        raise ValueError(f"unknown input statistic {kind!r}")
    return x


#: Statistic name -> (input kind, weight kind).
STATS = {"gauss": ("gauss", "gauss"), "relu": ("relu", "gauss"), "norm": ("norm", "gauss"),
         "trained": ("relu", "trained")}


def layer_problem(layer, stat, small=False, seed=0):
    """(x, w) in float32 for one layer of :data:`LAYERS` and statistic of :data:`STATS`."""
    C, S = LAYERS[layer]
    if small:
        S //= 2
    rng = np.random.default_rng(seed)
    xk, wk = STATS[stat]
    x = _inputs(rng, xk, C, S).astype(np.float32)
    w = _weights(rng, wk, C, C).astype(np.float32)
    return x, w


def rel_l2(y, ref):
    return float(np.linalg.norm((y - ref).ravel()) / np.linalg.norm(ref.ravel()))


def part3(layers=tuple(LAYERS), stats=("gauss",), tiles=range(2, 7), small=False):
    print("| layer | stats | direct | " + " | ".join(f"F({m}^3)" for m in tiles) + " |")
    print("|---" * (3 + len(tiles)) + "|")
    for layer in layers:
        for stat in stats:
            x, w = layer_problem(layer, stat, small)
            ref = conv3d_reference(x, w, padding=1)
            e1 = rel_l2(pywino3d.conv3d(x, w, padding=1, tile=1), ref)
            cells = [f"{rel_l2(pywino3d.conv3d(x, w, padding=1, tile=m), ref) / e1:.1f}x" for m in tiles]
            print(f"| {layer} | {stat} | {e1:.2g} | " + " | ".join(cells) + " |", flush=True)


def _axes_apply(M, X, first):
    """Apply the matrix M (n_out x n_in) along the three axes first..first+2 of X."""
    for ax in range(first, first + 3):
        X = np.moveaxis(np.tensordot(M, X, axes=([1], [ax])), 0, ax)
    return X


def _tiles(x, m, r):
    """(C, nd, nh, nw, a, a, a) input tiles of x (C, S, S, S) for padding 1 ('same')."""
    C, S = x.shape[0], x.shape[1]
    n, a = -(-S // m), m + r - 1
    p0 = (r - 1) // 2
    xp = np.zeros((C,) + (n * m + r - 1,) * 3, x.dtype)
    xp[:, p0:p0 + S, p0:p0 + S, p0:p0 + S] = x
    return sliding_window_view(xp, (a, a, a), axis=(1, 2, 3))[:, ::m, ::m, ::m], n


def _untile(Y, n, m, S):
    """(K, nd, nh, nw, m, m, m) -> (K, S, S, S)."""
    K = Y.shape[0]
    return Y.transpose(0, 1, 4, 2, 5, 3, 6).reshape(K, n * m, n * m, n * m)[:, :S, :S, :S]


def stage_errors(x, w, m, block=None):
    """{stage: relative L2 error} of a NumPy F(m^3, 3^3) with one stage in float32.

    ``x`` (1, C, S, S, S) and ``w`` (K, C, 3, 3, 3) hold float32 values; the
    reference is the float64 direct result.  The float32 product sums over
    the input channels in one sequential chain per output (``block=None``,
    as one long micro-kernel k loop) or, with ``block=b``, in chains of b
    channels, each started from zero and then added to the running total
    (the micro-kernels' blocked accumulation)."""
    f32, f64 = np.float32, np.float64
    AT, G, BT = winograd_matrices(m, 3)
    K, C, r = w.shape[0], w.shape[1], w.shape[2]
    S = x.shape[2]
    ref = conv3d_reference(x, w, padding=1)[0]
    t64, n = _tiles(x[0].astype(f64), m, r)
    t32, _ = _tiles(x[0], m, r)
    a = m + r - 1

    def U_of(dt):
        return _axes_apply(G.astype(dt), w.astype(dt), 2).reshape(K, C, a ** 3)

    def V_of(dt, tiles):
        return _axes_apply(BT.astype(dt), tiles, 4).reshape(C, n ** 3, a ** 3)

    def product(U, V, dt):
        Ut = np.ascontiguousarray(U.transpose(2, 0, 1), dtype=dt)   # (P, K, C)
        Vt = np.ascontiguousarray(V.transpose(2, 0, 1), dtype=dt)   # (P, C, T)
        if dt == f64:
            return Ut @ Vt
        b = block or C
        total = None
        for c0 in range(0, C, b):
            acc = np.zeros((Ut.shape[0], K, Vt.shape[2]), f32)
            for c in range(c0, min(C, c0 + b)):
                acc += Ut[:, :, c:c + 1] * Vt[:, c:c + 1, :]
            total = acc if total is None else total + acc
        return total

    def output(M, dt):
        Y = M.reshape(a, a, a, K, n, n, n).transpose(3, 4, 5, 6, 0, 1, 2)
        Y = _axes_apply(AT.astype(dt), Y.astype(dt), 4)
        return _untile(Y, n, m, S)

    U64, V64 = U_of(f64), V_of(f64, t64)
    M64 = product(U64, V64, f64)
    out = {}
    out["filter"] = rel_l2(output(product(U_of(f32).astype(f64), V64, f64), f64), ref)
    out["input"] = rel_l2(output(product(U64, V_of(f32, t32).astype(f64), f64), f64), ref)
    U32, V32 = U64.astype(f32), V64.astype(f32)
    out["U,V storage"] = rel_l2(output(product(U32.astype(f64), V32.astype(f64), f64), f64), ref)
    Mst = product(U32.astype(f64), V32.astype(f64), f64)
    out["accumulation"] = rel_l2(output(product(U32, V32, f32).astype(f64), f64)
                                 - output(Mst, f64) + ref, ref)
    out["output"] = rel_l2(output(M64.astype(f32), f32).astype(f64), ref)
    out["all"] = rel_l2(output(product(U_of(f32), V_of(f32, t32), f32), f32).astype(f64), ref)
    return out


STAGES = ("filter", "input", "U,V storage", "accumulation", "output", "all")


def part4(layers=tuple(LAYERS), stats=("gauss",), tiles=range(2, 7), small=False, block=None):
    print("| layer | stats | tile | library | " + " | ".join(STAGES) + " |")
    print("|---" * (4 + len(STAGES)) + "|")
    for layer in layers:
        for stat in stats:
            x, w = layer_problem(layer, stat, small)
            ref = conv3d_reference(x, w, padding=1)
            e1 = rel_l2(pywino3d.conv3d(x, w, padding=1, tile=1), ref)
            for m in tiles:
                lib = rel_l2(pywino3d.conv3d(x, w, padding=1, tile=m), ref) / e1
                st = stage_errors(x, w, m, block)
                print(f"| {layer} | {stat} | F({m}^3) | {lib:.1f}x | "
                      + " | ".join(f"{st[k] / e1:.1f}x" for k in STAGES) + " |", flush=True)


def point_score(pts, m, r=3):
    """Search score of a finite point set for F(m, r): the mean over the
    outputs of sum_p AT[i,p]^2 |G[p,:]|^2 |BT[p,:]|^2 / r (the first-order
    variance of the product's rounding for unit i.i.d. inputs; invariant to
    the G/BT scaling; its cube is the 3-D tile's)."""
    def ev(n):
        return np.array([[float(p) ** j for j in range(n)] for p in pts] + [[0.0] * (n - 1) + [1.0]])
    AT, G, BT = ev(m).T, ev(r), np.linalg.inv(ev(m + r - 1)).T
    return float((AT ** 2 * ((G ** 2).sum(1) * (BT ** 2).sum(1))).sum(1).mean() / r)


def part5(tiles=(4, 5, 6), top=5):
    """The point search behind pywino3d._core.transforms.SEARCHED_POINTS: symmetric
    sets 0, +-p, +-q (, s) with p, q, |s| fractions of integers 1..9 up to 4."""
    import itertools
    from fractions import Fraction

    from pywino3d._core.transforms import interpolation_points
    pool = sorted({Fraction(p, q) for p in range(1, 10) for q in range(1, 10) if Fraction(p, q) <= 4})
    for m in tiles:
        nf = m + 1
        res = []
        for ps in itertools.combinations(pool, (nf - 1) // 2):
            base = [Fraction(0)] + [s * p for p in ps for s in (1, -1)]
            extra = [[]] if nf % 2 else [[s] for s in pool + [-q for q in pool] if abs(s) not in ps]
            for ex in extra:
                try:
                    res.append((point_score(base + ex, m), base + ex))
                except np.linalg.LinAlgError:
                    pass
        res.sort(key=lambda t: t[0])
        now = interpolation_points(nf)
        print(f"F({m}, 3): in use {', '.join(map(str, now))}: {point_score(now, m):.3g}")
        for v, pts in res[:top]:
            print(f"    {v:.3g}  {', '.join(map(str, pts))}")


def part6(seed=0, C=32, S=18):
    """The table behind tile="auto"'s accuracy rule (pywino3d._choice.cost.MAX_ALPHA):
    float32 relative L2 error of F(m^3, r^3) against the float64 direct
    result, C -> C channels, S^3 input, padding "same", weights scaled to
    unit output variance."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, C, S, S, S)).astype(np.float32)
    print("| r \\ m | " + " | ".join(str(m) for m in range(1, 9)) + " |")
    print("|---" * 9 + "|")
    for r in range(1, 8):
        w = (rng.standard_normal((C, C, r, r, r)) / np.sqrt(C * r ** 3)).astype(np.float32)
        ref = conv3d_reference(x, w, padding="same")
        row = [f"{rel_l2(pywino3d.conv3d(x, w, padding='same', tile=m), ref):.1e}" for m in range(1, 9)]
        print(f"| {r} | " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", type=int, choices=[1, 2, 3, 4, 5, 6], default=None)
    ap.add_argument("--layers", nargs="+", choices=list(LAYERS), default=list(LAYERS))
    ap.add_argument("--stats", nargs="+", choices=list(STATS), default=["gauss"])
    ap.add_argument("--tiles", nargs="+", type=int, default=[2, 3, 4, 5, 6])
    ap.add_argument("--small", action="store_true", help="halve the layers' extents")
    ap.add_argument("--block", type=int, default=None,
                    help="part 4: the float32 product sums chains of this many channels")
    a = ap.parse_args()
    if a.part in (None, 1):
        part1()
    if a.part in (None, 2):
        print()
        part2()
    if a.part in (None, 3):
        print()
        part3(a.layers, a.stats, a.tiles, a.small)
    if a.part in (None, 4):
        print()
        part4(a.layers, a.stats, a.tiles, a.small, a.block)
    if a.part == 5:
        part5()
    if a.part == 6:
        part6()
