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
float64 direct result).  Two more columns: "floor", the error of any code for
the transforms (exact transforms; only U and V stored in float32 and the
float32 product), and "scaled U,V", the float32 pipeline with U and V scaled
per position (U_p s_p, V_p / s_p with s_p balancing their RMS).  The NumPy float32 stages sum in NumPy/BLAS order,
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
    # the floor of any transform code: exact transforms, only U and V stored
    # in float32 and the float32 product (its sums and M's rounding)
    out["floor"] = rel_l2(output(product(U32, V32, f32).astype(f64), f64), ref)
    # per-position scales between U and V (U_p s_p, V_p / s_p, balancing
    # their RMS; exact in powers of two, here not rounded to them): the
    # float32 pipeline with the scaled intermediate
    s = np.sqrt(np.sqrt((V64 ** 2).mean(axis=(0, 1)) / (U64 ** 2).mean(axis=(0, 1))))
    Us, Vs = (U_of(f32) * s.astype(f32)).astype(f32), (V_of(f32, t32) / s.astype(f32)).astype(f32)
    out["scaled U,V"] = rel_l2(output(product(Us, Vs, f32), f32).astype(f64), ref)
    return out


STAGES = ("filter", "input", "U,V storage", "accumulation", "output", "all", "floor", "scaled U,V")


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


def _eval_rows(P, n, inf):
    """(..., alpha, n) evaluation matrices of point sets P (..., k): rows p^j,
    plus the row of the point at infinity (the leading coefficient)."""
    E = P[..., :, None] ** np.arange(n)
    if inf:
        last = np.zeros(P.shape[:-1] + (1, n))
        last[..., 0, -1] = 1.0
        E = np.concatenate([E, last], axis=-2)
    return E


def point_score(pts, m, r=3, inf=True):
    """Search score of a finite point set for F(m, r): the mean over the
    outputs of sum_p AT[i,p]^2 |G[p,:]|^2 |BT[p,:]|^2 / r (the first-order
    variance of the product's rounding for unit i.i.d. inputs; invariant to
    the G/BT scaling and to per-position scales between U and V; its cube is
    the 3-D tile's).  ``pts`` (k,) or a stack (..., k) of sets, evaluated in
    float64 (:func:`exact_point_score` for the exact value); ``inf=False``
    for sets of m + r - 1 finite points and no point at infinity."""
    P = np.asarray(pts, dtype=np.float64)
    AT = np.swapaxes(_eval_rows(P, m, inf), -1, -2)
    G = _eval_rows(P, r, inf)
    BT = np.swapaxes(np.linalg.inv(_eval_rows(P, m + r - 1, inf)), -1, -2)
    v = (AT ** 2 * ((G ** 2).sum(-1) * (BT ** 2).sum(-1))[..., None, :]).sum(-1).mean(-1) / r
    return float(v) if v.ndim == 0 else v


def exact_point_score(pts, m, r=3, inf=True):
    """:func:`point_score` in exact rational arithmetic (the float64 inverse
    of an ill-conditioned Vandermonde matrix can be far off)."""
    from fractions import Fraction

    from pywino3d._core.transforms import _inverse, _transpose
    pts = [Fraction(p) for p in pts]

    def ev(n):
        rows = [[p ** j for j in range(n)] for p in pts]
        return rows + ([[Fraction(0)] * (n - 1) + [Fraction(1)]] if inf else [])
    AT, G, BT = _transpose(ev(m)), ev(r), _transpose(_inverse(ev(m + r - 1)))
    tot = sum(AT[i][p] ** 2 * sum(v * v for v in G[p]) * sum(v * v for v in BT[p])
              for i in range(m) for p in range(m + r - 1))
    return float(tot) / (m * r)


def _fractions(n, top=4):
    from fractions import Fraction
    return sorted({Fraction(p, q) for p in range(1, n + 1) for q in range(1, n + 1) if Fraction(p, q) <= top})


def _symmetric_search(m, pool, pairs, zero, extra, inf, top):
    """Best ``top`` sets ``(0,) +-p1 .. +-p_pairs (, s)`` with p in ``pool``
    (s from ``extra``), scored in float64 batches; returns [(exact score, set)]."""
    import itertools
    from fractions import Fraction
    fl = {p: float(p) for p in pool + list(extra or [])}
    combos = np.array(list(itertools.combinations(range(len(pool)), pairs)))
    vals = np.array([fl[p] for p in pool])
    base = np.concatenate([vals[combos], -vals[combos]] + ([np.zeros((len(combos), 1))] if zero else []), axis=1)
    cands = []  # (score, combo index, extra)
    for ex in (extra or [None]):
        sets = base if ex is None else np.concatenate([base, np.full((len(base), 1), fl[ex])], axis=1)
        keep = np.ones(len(sets), bool) if ex is None else ~np.any(np.abs(base) == abs(fl[ex]), axis=1)
        idx = np.nonzero(keep)[0]
        with np.errstate(all="ignore"):
            try:
                v = point_score(sets[idx], m, inf=inf)
            except np.linalg.LinAlgError:
                v = np.array([_safe_score(q, m, inf) for q in sets[idx]])
        best = idx[np.argsort(np.where(np.isfinite(v), v, np.inf))[:top]]
        cands += [(float(point_score(sets[i], m, inf=inf)), i, ex) for i in best]
    cands.sort(key=lambda t: t[0])
    out = []
    for _, i, ex in cands[:top]:
        ps = [pool[j] for j in combos[i]]
        q = ([Fraction(0)] if zero else []) + [sg * p for p in ps for sg in (1, -1)] + ([ex] if ex is not None else [])
        out.append((exact_point_score(q, m, inf=inf), q))
    return sorted(out, key=lambda t: t[0])


def _safe_score(pts, m, inf):
    try:
        return point_score([float(p) for p in pts], m, inf=inf)
    except np.linalg.LinAlgError:
        return np.inf


def continuous_optimum(m, inf, starts=12, seed=0, bound=8.0):
    """The lowest score over all real point sets (no symmetry), by a compass
    search on log(score) from random starts, points kept within +-bound (the
    float64 score is unreliable for far points): the limit of any point search
    for F(m, 3).  Returns (score, points)."""
    rng = np.random.default_rng(seed)
    k = m + 2 - (1 if inf else 0)

    def f(x):
        if np.abs(x).max() > bound or np.min(np.diff(np.sort(x))) < 1e-3:
            return np.inf
        return np.log(_safe_score(x, m, inf))
    best = (np.inf, None)
    for _ in range(starts):
        x = rng.uniform(-2.5, 2.5, k)
        fx, step = f(x), 0.5
        for _ in range(2000):
            if step < 1e-5:
                break
            moved = False
            for j in range(k):
                for d in (step, -step):
                    y = x.copy()
                    y[j] += d
                    fy = f(y)
                    if fy < fx:
                        x, fx, moved = y, fy, True
            step = min(2 * step, 1.0) if moved else step / 2
        if fx < best[0]:
            best = (fx, np.sort(x))
    return float(np.exp(best[0])), best[1]


def part5(tiles=(4, 5, 6), top=3):
    """The point search behind pywino3d._core.transforms.SEARCHED_POINTS, by
    the first-order score (:func:`point_score`, exact values printed):

    * ``0, +-p, +-q (, s)`` with p, q, |s| fractions of integers 1..9 up to 4
      (the first search, issue 30);
    * zero-free ``+-p, +-q, +-s`` with fractions of integers 1..13 up to 4,
      with infinity (alpha 7), or ``+-p, ...`` of alpha finite points and no
      infinity (alpha 6 and 8; fractions of 1..9);
    * the continuous optimum over all real sets, asymmetric ones included,
      with and without the point at infinity: the bound of any search."""
    from pywino3d._core.transforms import interpolation_points
    small, wide = _fractions(9), _fractions(13)
    for m in tiles:
        nf = m + 1
        now = interpolation_points(nf)
        print(f"F({m}, 3): in use {', '.join(map(str, now))}, infinity: {exact_point_score(now, m):.4g}",
              flush=True)
        ext = small + [-q for q in small]
        fams = [("0, +-p.. (, s), infinity", small, (nf - 1) // 2, True, None if nf % 2 else ext, True)]
        if nf % 2 == 0:
            fams.append(("+-p.., infinity", wide, nf // 2, False, None, True))
        else:
            fams.append(("+-p.., no infinity", small, (nf + 1) // 2, False, None, False))
        for name, pool, pairs, zero, extra, inf in fams:
            print(f"  {name}:")
            for v, pts in _symmetric_search(m, pool, pairs, zero, extra, inf, top):
                print(f"    {v:.4g}  {', '.join(map(str, pts))}", flush=True)
        for inf in (True, False):
            v, x = continuous_optimum(m, inf)
            print(f"  continuous optimum, {'with' if inf else 'no'} infinity: {v:.4g} at "
                  + ", ".join(f"{p:.3f}" for p in x), flush=True)


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
