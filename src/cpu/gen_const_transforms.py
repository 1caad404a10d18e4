"""Write src/cpu/const_transforms.h: the dense input, output and filter
transforms of the common tiles with their coefficients as constants.

The per-tile maths of wino3d_tile.template.h reads its 1-D matrices at run
time, so every coefficient costs a broadcast and an FMA, zeros and ones
included.  Here each 1-D transform is straight-line code that skips the
zeros, adds or subtracts the ones, and shares the sums that Toom-Cook's
symmetric points (+p, -p) make common:

* rows i, i' whose coefficients agree up to sign on every term (the rows of
  Bt, A and G for the points +p and -p) are ``e + o`` and ``e - o``, with e
  the sum of the terms of equal sign and o of opposite sign;
* columns j, j' that appear with coefficients equal up to sign in every row
  (the columns of At and B, the transposes) enter as ``v_j + v_j'`` or
  ``v_j - v_j'``, each formed once;
* every sum is a balanced tree (short dependency chains).

F(6, 3)'s input transform line drops from 46 to 32 operations, its output
transform line from 38 to 20, and the sums' chains from 7 dependent
operations to 3.  The sums are in a different order than the run-time
code's, so the two agree to rounding, not bit for bit (every pipeline of
this build uses these functions, so they agree bit for bit with each
other); tests/test_kernels.py checks both against each other within 1024
ulps of the largest value (measured: 2 on U, up to 450 on F(6^3) outputs,
Winograd's own error growth).

    python src/cpu/gen_const_transforms.py > src/cpu/const_transforms.h

tests/test_kernels.py checks that the committed header is what this script
writes.  Only the kernels' translation unit (wino3d_cpu.c) defines
WINO_CX_DEFINE and gets the tables and the functions; the extension's Cython
side calls wino_cx_match_f/d to swap a plan's matrix for the table holding
the same values, so the kernels recognise it by its address.
"""
from __future__ import annotations

import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
from pywino3d._core.geometry import axis_matrices  # noqa: E402

#: The tiles of 3-wide kernels whose transforms get constant code.
TILES = (2, 3, 4, 5, 6)
TYPES = (("f", "float", np.float32), ("d", "double", np.float64))


def literal(v, ctype):
    """An exact C literal of v (hexadecimal float)."""
    s = float(v).hex()
    return s + ("f" if ctype == "float" else "")


def _term(c, op, ctype):
    if c == 1:
        return op
    if c == -1:
        return f"(-{op})"
    return f"{literal(c, ctype)} * {op}"


def _fma_order(terms):
    """The terms reordered so that the balanced tree pairs each product
    (coefficient not +-1) with a unit term where there are units to spare:
    a product added to a unit term is one FMA, two products added are a
    multiply and an FMA.  Orders with no product left unpaired are kept."""
    units = [t for t in terms if t[0] == 1]
    prods = [t for t in terms if abs(t[0]) != 1]
    if len(terms) != 3 or len(units) != 1 or len(prods) != 2:
        return terms
    # (u, p1, p2) sums as u + (p1 + p2): a multiply, an FMA and an add;
    # (p1, u, p2) as p1 + (u + p2): two FMAs.
    return [prods[0], units[0], prods[1]]


def tree_sum(terms, ctype):
    """C expression: the sum of (coefficient, operand) as a balanced tree,
    positive unit terms first (a leading negation is an extra operation),
    three terms with one unit as product + (unit + product) (two FMAs)."""
    if not terms:
        return "z"
    terms = _fma_order(sorted(terms, key=lambda t: t[0] != 1))
    if len(terms) == 1:
        return _term(*terms[0], ctype)
    h = len(terms) // 2
    left, right = terms[:h], terms[h:]
    if len(right) == 1 and right[0][0] == -1:
        return f"({tree_sum(left, ctype)} - {right[0][1]})"
    return f"({tree_sum(left, ctype)} + {tree_sum(right, ctype)})"


def _pair_columns(X):
    """[(j, j2, rows_s, rows_d)]: columns equal up to sign in every row,
    used by at least two rows and worth forming v_j +- v_j2 for."""
    rows, cols = X.shape
    used, pairs = set(), []
    for j in range(cols):
        if j in used:
            continue
        for j2 in range(j + 1, cols):
            if j2 in used or not np.array_equal(np.abs(X[:, j]), np.abs(X[:, j2])):
                continue
            nz = np.nonzero(X[:, j])[0]
            same = [i for i in nz if X[i, j] == X[i, j2]]
            diff = [i for i in nz if X[i, j] == -X[i, j2]]
            if len(nz) > bool(same) + bool(diff):  # saves operations
                pairs.append((j, j2, same, diff))
                used.update((j, j2))
                break
    return pairs


def _pair_rows(terms):
    """[(i, i2)]: rows whose terms agree up to sign, with terms of both signs."""
    used, pairs = set(), []
    for i in range(len(terms)):
        if i in used:
            continue
        for i2 in range(i + 1, len(terms)):
            a, b = terms[i], terms[i2]
            if i2 in used or a.keys() != b.keys() or not a:
                continue
            if all(abs(a[k]) == abs(b[k]) for k in a) and any(a[k] == b[k] for k in a) \
                    and any(a[k] == -b[k] for k in a):
                pairs.append((i, i2))
                used.update((i, i2))
                break
    return pairs


def line_function(name, M, s, ctype, adjoint):
    """out[i os] = sum_j M[i, j] in[j is] (adjoint: sum_j M[j, i] in[j is])."""
    X = M.T if adjoint else M
    rows, cols = X.shape
    V = f"wino_v{s}"
    body = [f"    const {V} v{j} = in[{j} * is];" for j in range(cols)]
    terms = [{f"v{j}": X[i, j] for j in range(cols) if X[i, j] != 0} for i in range(rows)]
    for j, j2, same, diff in _pair_columns(X):
        for rows_, op, name_ in ((same, "+", f"s{j}_{j2}"), (diff, "-", f"d{j}_{j2}")):
            if not rows_:
                continue
            body.append(f"    const {V} {name_} = v{j} {op} v{j2};")
            for i in rows_:
                c = terms[i].pop(f"v{j}")
                del terms[i][f"v{j2}"]
                terms[i][name_] = c
    out = {}
    for i, i2 in _pair_rows(terms):
        a, b = terms[i], terms[i2]
        even = [(a[k], k) for k in a if a[k] == b[k]]
        odd = [(a[k], k) for k in a if a[k] == -b[k]]
        body.append(f"    const {V} e{i} = {tree_sum(even, ctype)};")
        body.append(f"    const {V} o{i} = {tree_sum(odd, ctype)};")
        out[i], out[i2] = f"e{i} + o{i}", f"e{i} - o{i}"
    for i in range(rows):
        if i not in out:
            out[i] = tree_sum(sorted(((c, k) for k, c in terms[i].items()), key=lambda t: t[1]), ctype)
    head = [f"static inline void {name}(const {V} *in, wino_index is, {V} *out, wino_index os)", "{"]
    if any(v == "z" for v in out.values()):
        head.append(f"    const {V} z = {{0}};")
    return head + body + [f"    out[{i} * os] = {out[i]};" for i in range(rows)] + ["}"]


#: The dense 3-D expand (the line function along w, then h, then d) and
#: contract (its adjoint, along d, h, w) of an a x n matrix, in the loop order
#: of wino_expand_dims_/contract_dims_: one body for every table and type,
#: instantiated by WINO_CX_CUBE(suffix, tag, a, n).
CUBE_MACRO = r"""/* WINO_CX_CUBE(S, TAG, A, N): wino_cx_expand_S_TAG and wino_cx_contract_S_TAG,
 * the dense cubic expand (line function along w, h, d) and contract (its
 * adjoint along d, h, w) of the A x N matrix TAG, in the loop order of
 * wino_expand_dims_ / wino_contract_dims_.  wino_cx_expand3_S_TAG reads the
 * N^3 block at vector strides vs, hs, ds along w, h, d (x in place); the
 * expand is it on a contiguous patch. */
#define WINO_CX_CUBE(S, TAG, A, N)                                                         \
static void wino_cx_expand3_##S##_##TAG(const wino_v##S *in, wino_index vs, wino_index hs,  \
                                        wino_index ds, wino_v##S *out, wino_index os,      \
                                        wino_v##S *t1, wino_v##S *t2)                      \
{                                                                                          \
    for (int a = 0; a < (N); ++a)                                                          \
        for (int b = 0; b < (N); ++b)                                                      \
            wino_cx_line_##S##_##TAG(in + a * ds + b * hs, vs, t1 + (a * (N) + b) * (A), 1); \
    for (int i = 0; i < (N); ++i)                                                          \
        for (int w = 0; w < (A); ++w)                                                      \
            wino_cx_line_##S##_##TAG(t1 + i * (N) * (A) + w, (A), t2 + i * (A) * (A) + w, (A)); \
    for (int hw = 0; hw < (A) * (A); ++hw)                                                 \
        wino_cx_line_##S##_##TAG(t2 + hw, (A) * (A), out + hw * os, (A) * (A) * os);       \
}                                                                                          \
static void wino_cx_expand_##S##_##TAG(const wino_v##S *in, wino_v##S *out, wino_index os,  \
                                       wino_v##S *t1, wino_v##S *t2)                       \
{                                                                                          \
    wino_cx_expand3_##S##_##TAG(in, 1, (N), (N) * (N), out, os, t1, t2);                   \
}                                                                                          \
static void wino_cx_contract_##S##_##TAG(const wino_v##S *in, wino_index is,               \
                                         wino_v##S *out, wino_v##S *t1, wino_v##S *t2)     \
{                                                                                          \
    for (int hw = 0; hw < (A) * (A); ++hw)                                                 \
        wino_cx_linet_##S##_##TAG(in + hw * is, (A) * (A) * is, t2 + hw, (A) * (A));       \
    for (int i = 0; i < (N); ++i)                                                          \
        for (int w = 0; w < (A); ++w)                                                      \
            wino_cx_linet_##S##_##TAG(t2 + i * (A) * (A) + w, (A), t1 + i * (N) * (A) + w, (A)); \
    for (int ab = 0; ab < (N) * (N); ++ab)                                                 \
        wino_cx_linet_##S##_##TAG(t1 + ab * (A), 1, out + ab * (N), 1);                    \
}"""


#: The filter transform's dense expand for small alpha, in factored form:
#: G = D G' with D diagonal (each row's first nonzero coefficient) and G'
#: dyadic (entries 1, +-1, +-2, 4), so G' lines are adds and exact scalings,
#: and D_d D_h D_w is one multiply per output (none where it is 1).  It runs
#: one output column (h, w) at a time with every intermediate in registers
#: (per w the 9 values along w, per (h, w) the 3 along h, then the alpha
#: outputs along d, scaled and stored), recomputing a line's shared sums per
#: output instead of storing 148 intermediate vectors (F(2^3)).  One core,
#: in cache: F(2^3) 133 -> 90 ns a group of VL pairs.  For alpha 7 and 8 the
#: recomputation costs more than the stores saved (64x64 kernels to F(6^3):
#: 1.3 -> 2.0 ms), and for alpha 6 it is alike; they keep WINO_CX_CUBE's
#: pass-by-pass expand.  For F(2, 3), whose D is powers of two, U is the
#: same bit for bit as the pass-by-pass expand's; for F(3, 3) it agrees to
#: rounding.
EXPANDC_MAX_ALPHA = 5
FILTER_MACRO = r"""/* WINO_CX_FILTER(S, TAG, A, N): wino_cx_expandc_S_TAG, the dense cubic
 * expand of G = D G' (TAG's G' line wino_cx_line_S_TAGp, the products of D
 * in wino_cx_S_TAG_scale) column by column, into out[i * os]. */
#define WINO_CX_FILTER(S, TAG, A, N)                                                       \
static void wino_cx_expandc_##S##_##TAG(const wino_v##S *in, wino_v##S *out, wino_index os) \
{                                                                                          \
    _Pragma("GCC unroll 8")                                                                \
    for (int w = 0; w < (A); ++w) {                                                        \
        wino_v##S c1[(N) * (N)];                                                           \
        _Pragma("GCC unroll 64")                                                           \
        for (int ab = 0; ab < (N) * (N); ++ab) {                                           \
            wino_v##S l[(A)];                                                              \
            wino_cx_line_##S##_##TAG##p(in + ab * (N), 1, l, 1);                           \
            c1[ab] = l[w];                                                                 \
        }                                                                                  \
        _Pragma("GCC unroll 8")                                                            \
        for (int h = 0; h < (A); ++h) {                                                    \
            wino_v##S c2[(N)], l[(A)];                                                     \
            _Pragma("GCC unroll 8")                                                        \
            for (int a = 0; a < (N); ++a) {                                                \
                wino_v##S m[(A)];                                                          \
                wino_cx_line_##S##_##TAG##p(c1 + a * (N), 1, m, 1);                        \
                c2[a] = m[h];                                                              \
            }                                                                              \
            wino_cx_line_##S##_##TAG##p(c2, 1, l, 1);                                      \
            _Pragma("GCC unroll 8")                                                        \
            for (int d = 0; d < (A); ++d)                                                  \
                out[((d * (A) + h) * (A) + w) * os] =                                      \
                    l[d] * wino_cx_##S##_##TAG##_scale[(d * (A) + h) * (A) + w];           \
        }                                                                                  \
    }                                                                                      \
}"""


def has_expandc(tag, M):
    """True for the filter tables (G) that get a column expand."""
    return tag.startswith("g") and M.shape[0] <= EXPANDC_MAX_ALPHA


def factored(m):
    """(D, G') of G = diag(D) G' for F(m, 3), exact: D the first nonzero of
    each row of G, G' dyadic."""
    from fractions import Fraction

    from pywino3d._core.transforms import winograd_matrices

    _, G, _ = winograd_matrices(m, 3, exact=True)
    D = [next(v for v in row if v != 0) for row in G]
    Gp = [[Fraction(v) / d for v in row] for row, d in zip(G, D)]
    for row in Gp:
        for v in row:
            den = v.denominator
            assert den & (den - 1) == 0, f"G' of F({m}, 3) is not dyadic: {v}"
    return D, np.array([[float(v) for v in row] for row in Gp])


def matrices(dtype):
    """[(tag, description, matrix)] of every constant transform."""
    out = []
    for m in TILES:
        BT, A, G = axis_matrices(m, 3, np.dtype(dtype).str)
        out.append((f"bt{m}", f"Bt of F({m}, 3)", BT))
        out.append((f"a{m}", f"A = At^T of F({m}, 3)", A))
        out.append((f"g{m}", f"G of F({m}, 3)", G))
    return out


def header():
    L = ["/* Generated by src/cpu/gen_const_transforms.py -- do not edit (see that file). */",
         "#ifndef WINO3D_CONST_TRANSFORMS_H", "#define WINO3D_CONST_TRANSFORMS_H", "",
         '#include "simd.h"', "",
         "/* The table holding the same values as X (a x n), or X itself. */"]
    for s, ctype, _ in TYPES:
        L.append(f"const {ctype} *wino_cx_match_{s}(const {ctype} *X, int a, int n);")
    L += ["", "#ifdef WINO_CX_DEFINE", "", *CUBE_MACRO.split("\n"), "", *FILTER_MACRO.split("\n"), ""]
    for s, ctype, dtype in TYPES:
        mats = matrices(dtype)
        for tag, desc, M in mats:
            vals = ", ".join(literal(v, ctype) for v in M.ravel())
            L += [f"/* {desc}: {M.shape[0]} x {M.shape[1]} */",
                  f"static const {ctype} wino_cx_{s}_{tag}[{M.size}] = {{{vals}}};"]
            L += line_function(f"wino_cx_line_{s}_{tag}", M, s, ctype, adjoint=False)
            L += line_function(f"wino_cx_linet_{s}_{tag}", M, s, ctype, adjoint=True)
            L += [f"WINO_CX_CUBE({s}, {tag}, {M.shape[0]}, {M.shape[1]})", ""]
            if has_expandc(tag, M):
                D, Gp = factored(int(tag[1:]))
                a = len(D)
                scale = [D[i] * D[j] * D[k] for i in range(a) for j in range(a) for k in range(a)]
                L += [f"/* {desc} = D G': G' and the products D_d D_h D_w */"]
                L += line_function(f"wino_cx_line_{s}_{tag}p", Gp, s, ctype, adjoint=False)
                L += [f"static const {ctype} wino_cx_{s}_{tag}_scale[{a ** 3}] = "
                      f"{{{', '.join(literal(float(np.dtype(dtype).type(float(v))), ctype) for v in scale)}}};",
                      f"WINO_CX_FILTER({s}, {tag}, {a}, 3)", ""]
        L += [f"const {ctype} *wino_cx_match_{s}(const {ctype} *X, int a, int n)", "{"]
        for tag, _, M in mats:
            L.append(f"    if (a == {M.shape[0]} && n == {M.shape[1]} && "
                     f"!memcmp(X, wino_cx_{s}_{tag}, sizeof wino_cx_{s}_{tag})) return wino_cx_{s}_{tag};")
        L += ["    return X;", "}", ""]
        for op, sig, args in (
                ("expand", f"const wino_v{s} *in, wino_v{s} *out, wino_index os, wino_v{s} *t1, wino_v{s} *t2",
                 "in, out, os, t1, t2"),
                ("expand3", f"const wino_v{s} *in, wino_index vs, wino_index hs, wino_index ds, "
                            f"wino_v{s} *out, wino_index os, wino_v{s} *t1, wino_v{s} *t2",
                 "in, vs, hs, ds, out, os, t1, t2"),
                ("expandc", f"const wino_v{s} *in, wino_v{s} *out, wino_index os", "in, out, os"),
                ("contract", f"const wino_v{s} *in, wino_index is, wino_v{s} *out, wino_v{s} *t1, wino_v{s} *t2",
                 "in, is, out, t1, t2")):
            L += [f"/* Run the constant dense cubic {op} when all three axes use one table; 0 if none. */",
                  f"static inline int wino_cx_{op}_{s}(const {ctype} *X, {sig})",
                  "{"]
            for tag, _, M in mats:
                if op == "expandc" and not has_expandc(tag, M):
                    continue
                L.append(f"    if (X == wino_cx_{s}_{tag}) {{ wino_cx_{op}_{s}_{tag}({args}); return 1; }}")
            L += ["    return 0;", "}", ""]
    L += ["#undef WINO_CX_CUBE", "#undef WINO_CX_FILTER", "#endif /* WINO_CX_DEFINE */", "#endif /* WINO3D_CONST_TRANSFORMS_H */"]
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    sys.stdout.write(header())
