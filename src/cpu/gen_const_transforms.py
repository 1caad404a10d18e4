"""Write src/cpu/const_transforms.h: the dense input, output and filter
transforms of the common tiles with their coefficients as constants.

The per-tile maths of wino3d_tile.template.h reads its 1-D matrices at run
time, so every coefficient costs a broadcast and an FMA, zeros and ones
included.  Bᵀ and A of F(m, 3) are sparse with many +-1 entries (F(4, 3): Bᵀ
has 22 non-zeros of 36, 10 of them +-1), so straight-line code that skips the
zeros and adds or subtracts the ones does the same sums with a third fewer
operations and no coefficient loads.  Every output is summed over the same
non-zero terms in the same order as the run-time code (from zero, in index
order), so the two agree bit for bit on finite inputs, signed zeros aside.
Where an input is infinite or NaN, a skipped zero term no longer turns
0 * inf into NaN; the outputs then carry fewer NaNs.

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
from pywino3d._geometry import axis_matrices  # noqa: E402

#: The tiles of 3-wide kernels whose transforms get constant code.
TILES = (2, 3, 4, 5, 6)
TYPES = (("f", "float", np.float32), ("d", "double", np.float64))


def literal(v, ctype):
    """An exact C literal of v (hexadecimal float)."""
    s = float(v).hex()
    return s + ("f" if ctype == "float" else "")


def term_sum(terms, ctype):
    """C expression: the sum, from zero and in order, of (coefficient, operand)."""
    if not terms:
        return "z"
    expr = "z"
    for c, op in terms:
        if c == 1:
            expr = f"({expr} + {op})"
        elif c == -1:
            expr = f"({expr} - {op})"
        else:
            expr = f"({expr} + {literal(c, ctype)} * {op})"
    return expr


def line_function(name, M, s, ctype, adjoint):
    """out[i os] = sum_j M[i, j] in[j is] (adjoint: sum_j M[j, i] in[j is])."""
    X = M.T if adjoint else M
    rows, cols = X.shape
    L = [f"static inline void {name}(const wino_v{s} *in, wino_index is, wino_v{s} *out, wino_index os)",
         "{",
         f"    const wino_v{s} z = {{0}};"]
    L += [f"    const wino_v{s} v{j} = in[{j} * is];" for j in range(cols)]
    for i in range(rows):
        terms = [(X[i, j], f"v{j}") for j in range(cols) if X[i, j] != 0]
        L.append(f"    out[{i} * os] = {term_sum(terms, ctype)};")
    L.append("}")
    return L


#: The dense 3-D expand (the line function along w, then h, then d) and
#: contract (its adjoint, along d, h, w) of an a x n matrix, in the loop order
#: of wino_expand_dims_/contract_dims_: one body for every table and type,
#: instantiated by WINO_CX_CUBE(suffix, tag, a, n).
CUBE_MACRO = r"""/* WINO_CX_CUBE(S, TAG, A, N): wino_cx_expand_S_TAG and wino_cx_contract_S_TAG,
 * the dense cubic expand (line function along w, h, d) and contract (its
 * adjoint along d, h, w) of the A x N matrix TAG, in the loop order of
 * wino_expand_dims_ / wino_contract_dims_. */
#define WINO_CX_CUBE(S, TAG, A, N)                                                         \
static void wino_cx_expand_##S##_##TAG(const wino_v##S *in, wino_v##S *out, wino_index os,  \
                                       wino_v##S *t1, wino_v##S *t2)                       \
{                                                                                          \
    for (int ab = 0; ab < (N) * (N); ++ab)                                                 \
        wino_cx_line_##S##_##TAG(in + ab * (N), 1, t1 + ab * (A), 1);                      \
    for (int i = 0; i < (N); ++i)                                                          \
        for (int w = 0; w < (A); ++w)                                                      \
            wino_cx_line_##S##_##TAG(t1 + i * (N) * (A) + w, (A), t2 + i * (A) * (A) + w, (A)); \
    for (int hw = 0; hw < (A) * (A); ++hw)                                                 \
        wino_cx_line_##S##_##TAG(t2 + hw, (A) * (A), out + hw * os, (A) * (A) * os);       \
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
    L += ["", "#ifdef WINO_CX_DEFINE", "", *CUBE_MACRO.split("\n"), ""]
    for s, ctype, dtype in TYPES:
        mats = matrices(dtype)
        for tag, desc, M in mats:
            vals = ", ".join(literal(v, ctype) for v in M.ravel())
            L += [f"/* {desc}: {M.shape[0]} x {M.shape[1]} */",
                  f"static const {ctype} wino_cx_{s}_{tag}[{M.size}] = {{{vals}}};"]
            L += line_function(f"wino_cx_line_{s}_{tag}", M, s, ctype, adjoint=False)
            L += line_function(f"wino_cx_linet_{s}_{tag}", M, s, ctype, adjoint=True)
            L += [f"WINO_CX_CUBE({s}, {tag}, {M.shape[0]}, {M.shape[1]})", ""]
        L += [f"const {ctype} *wino_cx_match_{s}(const {ctype} *X, int a, int n)", "{"]
        for tag, _, M in mats:
            L.append(f"    if (a == {M.shape[0]} && n == {M.shape[1]} && "
                     f"!memcmp(X, wino_cx_{s}_{tag}, sizeof wino_cx_{s}_{tag})) return wino_cx_{s}_{tag};")
        L += ["    return X;", "}", ""]
        for op, sig, args in (
                ("expand", f"const wino_v{s} *in, wino_v{s} *out, wino_index os, wino_v{s} *t1, wino_v{s} *t2",
                 "in, out, os, t1, t2"),
                ("contract", f"const wino_v{s} *in, wino_index is, wino_v{s} *out, wino_v{s} *t1, wino_v{s} *t2",
                 "in, is, out, t1, t2")):
            L += [f"/* Run the constant dense cubic {op} when all three axes use one table; 0 if none. */",
                  f"static inline int wino_cx_{op}_{s}(const {ctype} *X, {sig})",
                  "{"]
            for tag, _, _ in mats:
                L.append(f"    if (X == wino_cx_{s}_{tag}) {{ wino_cx_{op}_{s}_{tag}({args}); return 1; }}")
            L += ["    return 0;", "}", ""]
    L += ["#undef WINO_CX_CUBE", "#endif /* WINO_CX_DEFINE */", "#endif /* WINO3D_CONST_TRANSFORMS_H */"]
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    sys.stdout.write(header())
