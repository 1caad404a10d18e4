/*
 * wino3d_tile.template.h -- per-tile 3-D Winograd transform math, shared by
 * the CPU extension (src/cpu/, C + OpenMP) and the CUDA kernels (src/cuda/,
 * NVRTC / nvcc).
 *
 * Every transform of the algorithm is one of two separable operations on a
 * single tile, each taking three 1-D matrices X_d, X_h, X_w of shape
 * (alpha x n) (row-major) for the depth, height and width axes:
 *
 *   expand   : dense n_d x n_h x n_w block  ->  the kept alpha positions
 *              out[p] = sum_abc X_d[d,a] X_h[h,b] X_w[w,c] in[a,b,c]
 *   contract : the kept alpha positions       ->  dense n_d x n_h x n_w block
 *              out[a,b,c] = sum_p X_d[d,a] X_h[h,b] X_w[w,c] in[p]
 *
 * where p = (d*alpha_h + h)*alpha_w + w runs over the kept positions only
 * (column sparsity).  contract is the exact adjoint of expand.  With
 *   X = BT (alpha x alpha): expand = input transform,  contract = its adjoint
 *   X = G  (alpha x r)    : expand = filter transform, contract = its adjoint
 *   X = AT^T (alpha x m)  : contract = output transform, expand = its adjoint
 * so these two functions are the whole per-tile math of the library.
 *
 * Work skipped for pruned positions: stage 1 (along w) computes only the w
 * indices used by some kept position, stage 2 (along h) only the (h, w)
 * pairs used, stage 3 (along d) only the kept positions.
 *
 * The file is a template in the PyWavelets style (the convention of every
 * *.template.h of the project): it is included once per floating type with
 * WINO_REAL and WINO_SUFFIX defined, e.g.
 *     #define WINO_REAL float
 *     #define WINO_SUFFIX f
 *     #include "wino3d_tile.template.h"
 * (wino3d_tile.h does this for float and double), which defines wino_plan_f, wino_scratch_len_f, wino_expand_f and
 * wino_contract_f.  The CPU build also instantiates it on SIMD vectors that
 * hold one value of several tiles: define WINO_VALUE (the vector type),
 * WINO_VZERO (its zero) and WINO_PLAN_SUFFIX (the suffix of the scalar plan
 * type already defined), and the same arithmetic runs lane-wise.
 */
#include "wino3d_common.h"

#ifndef WINO_REAL
#error "define WINO_REAL and WINO_SUFFIX before including wino3d_tile.template.h"
#endif

#ifdef WINO_VALUE
#define WINO_V WINO_VALUE
#define WINO_PLAN WINO_CAT(wino_plan_, WINO_PLAN_SUFFIX)
#else
#define WINO_V WINO_REAL
#define WINO_VZERO ((WINO_REAL)0)
#define WINO_PLAN WINO_CAT(wino_plan_, WINO_SUFFIX)

/* A tile plan: the three 1-D matrices and the kept positions.  need_w and
 * need_hw are masks derived from kept (see wino_plan_masks in Python). */
typedef struct {
    const WINO_REAL *X[3];   /* X[axis] is (a[axis] x n[axis]), row-major */
    int a[3];                /* alpha per axis (d, h, w) */
    int n[3];                /* dense size per axis */
    const int *kept;         /* sorted kept positions, nk of them */
    int nk;
    const unsigned char *need_w;   /* a[2] flags */
    const unsigned char *need_hw;  /* a[1]*a[2] flags */
} WINO_PLAN;

/* Scratch needed by one call: two buffers of wino_scratch_len values. */
WINO_HD WINO_INLINE int WINO_CAT(wino_scratch_len_, WINO_SUFFIX)(const WINO_PLAN *pl)
{
    int s1 = pl->n[0] * pl->n[1] * pl->a[2];
    int s2 = pl->n[0] * pl->a[1] * pl->a[2];
    return s1 > s2 ? s1 : s2;
}
#endif /* WINO_VALUE */

/* The _dims variants take the sizes as arguments so that a caller passing
 * literal constants gets fully unrolled loops (the CPU build does this for
 * the common cubic tiles); the plain variants read them from the plan. */

/* expand: in is dense (n_d, n_h, n_w) C-order; out[i * ostride] receives the
 * value at kept position i.  t1, t2: scratch of wino_scratch_len each. */
#ifdef WINO_VALUE
/* SIMD schedule (CPU, one vector of channels or tiles per value).  A dense
 * plan (every position kept): each loop nest keeps the alpha outputs of one
 * line in independent accumulators so the FMA chains overlap.  A sparse plan:
 * every stage computes only what the kept positions use, from index lists
 * built once a call (wino_used_lines) -- expand's stage 1 only the used w',
 * stage 2 only the used (h', w') pairs; the adjoint stages likewise -- so the
 * transforms' work shrinks with every line pruned.  Every output is still
 * summed over its inputs in the same order as the scalar schedule below, so
 * all schedules give identical values. */
#define WINO_ACC_MAX 16

/* The used w' in ascending order (wl[0 .. nwl), nwl returned) and, for the
 * j-th of them, the used h' in ascending order (hl[hs[j] .. hs[j + 1])). */
WINO_HD WINO_INLINE int WINO_CAT(wino_used_lines_, WINO_SUFFIX)(const WINO_PLAN *pl, const int ah,
                                                                 const int aw, int *wl, int *hs,
                                                                 int *hl)
{
    int nwl = 0, nhl = 0;
    for (int w = 0; w < aw; ++w) {
        if (!pl->need_w[w]) continue;
        wl[nwl] = w;
        hs[nwl] = nhl;
        for (int h = 0; h < ah; ++h)
            if (pl->need_hw[h * aw + w]) hl[nhl++] = h;
        ++nwl;
    }
    hs[nwl] = nhl;
    return nwl;
}
#endif

WINO_HD WINO_INLINE void WINO_CAT(wino_expand_dims_, WINO_SUFFIX)(
    const WINO_PLAN *pl, const int nd, const int nh, const int nw, const int ad, const int ah,
    const int aw, const WINO_V *WINO_RESTRICT in, WINO_V *WINO_RESTRICT out, wino_index ostride,
    WINO_V *WINO_RESTRICT t1, WINO_V *WINO_RESTRICT t2)
{
    const WINO_REAL *Xd = pl->X[0], *Xh = pl->X[1], *Xw = pl->X[2];
    const int ahw = ah * aw;
#ifdef WINO_VALUE
    if (pl->nk == ad * ahw) {
        WINO_V acc[WINO_ACC_MAX];
        /* stage 1: along w -> t1[a][b][w'] */
        for (int ab = 0; ab < nd * nh; ++ab) {
            const WINO_V *row = in + ab * nw;
            for (int w = 0; w < aw; ++w) acc[w] = WINO_VZERO;
            for (int c = 0; c < nw; ++c) {
                const WINO_V v = row[c];
                for (int w = 0; w < aw; ++w) acc[w] += Xw[w * nw + c] * v;
            }
            for (int w = 0; w < aw; ++w) t1[ab * aw + w] = acc[w];
        }
        /* stage 2: along h -> t2[a][h'][w'] */
        for (int a = 0; a < nd; ++a) {
            for (int w = 0; w < aw; ++w) {
                for (int h = 0; h < ah; ++h) acc[h] = WINO_VZERO;
                for (int b = 0; b < nh; ++b) {
                    const WINO_V v = t1[(a * nh + b) * aw + w];
                    for (int h = 0; h < ah; ++h) acc[h] += Xh[h * nh + b] * v;
                }
                for (int h = 0; h < ah; ++h) t2[(a * ah + h) * aw + w] = acc[h];
            }
        }
        /* stage 3: along d */
        for (int hw = 0; hw < ahw; ++hw) {
            for (int d = 0; d < ad; ++d) acc[d] = WINO_VZERO;
            for (int a = 0; a < nd; ++a) {
                const WINO_V v = t2[a * ahw + hw];
                for (int d = 0; d < ad; ++d) acc[d] += Xd[d * nd + a] * v;
            }
            for (int d = 0; d < ad; ++d) out[(d * ahw + hw) * ostride] = acc[d];
        }
        return;
    }
    {
        int wl[WINO_ACC_MAX], hs[WINO_ACC_MAX + 1], hl[WINO_ACC_MAX * WINO_ACC_MAX];
        const int nwl = WINO_CAT(wino_used_lines_, WINO_SUFFIX)(pl, ah, aw, wl, hs, hl);
        WINO_V r[WINO_ACC_MAX];
        /* stage 1: along w -> t1[a][b][w'], the used w' only */
        for (int ab = 0; ab < nd * nh; ++ab) {
            const WINO_V *row = in + ab * nw;
            for (int c = 0; c < nw; ++c) r[c] = row[c];
            for (int j = 0; j < nwl; ++j) {
                const int w = wl[j];
                WINO_V s = WINO_VZERO;
                for (int c = 0; c < nw; ++c) s += Xw[w * nw + c] * r[c];
                t1[ab * aw + w] = s;
            }
        }
        /* stage 2: along h -> t2[a][h'][w'], the used (h', w') only */
        for (int a = 0; a < nd; ++a) {
            for (int j = 0; j < nwl; ++j) {
                const int w = wl[j];
                for (int b = 0; b < nh; ++b) r[b] = t1[(a * nh + b) * aw + w];
                for (int q = hs[j]; q < hs[j + 1]; ++q) {
                    const int h = hl[q];
                    WINO_V s = WINO_VZERO;
                    for (int b = 0; b < nh; ++b) s += Xh[h * nh + b] * r[b];
                    t2[(a * ah + h) * aw + w] = s;
                }
            }
        }
    }
#else
    (void)ad;
    /* stage 1: along w -> t1[a][b][w'] */
    for (int ab = 0; ab < nd * nh; ++ab) {
        const WINO_V *row = in + ab * nw;
        for (int w = 0; w < aw; ++w) {
            if (!pl->need_w[w]) continue;
            WINO_V s = WINO_VZERO;
            for (int c = 0; c < nw; ++c) s += Xw[w * nw + c] * row[c];
            t1[ab * aw + w] = s;
        }
    }
    /* stage 2: along h -> t2[a][h'][w'] */
    for (int a = 0; a < nd; ++a) {
        for (int h = 0; h < ah; ++h) {
            for (int w = 0; w < aw; ++w) {
                if (!pl->need_hw[h * aw + w]) continue;
                WINO_V s = WINO_VZERO;
                for (int b = 0; b < nh; ++b) s += Xh[h * nh + b] * t1[(a * nh + b) * aw + w];
                t2[(a * ah + h) * aw + w] = s;
            }
        }
    }
#endif
    /* stage 3: along d, kept positions only */
    for (int i = 0; i < pl->nk; ++i) {
        const int p = pl->kept[i];
        const int d = p / ahw, hw = p - d * ahw;
        WINO_V s = WINO_VZERO;
        for (int a = 0; a < nd; ++a) s += Xd[d * nd + a] * t2[a * ahw + hw];
        out[i * ostride] = s;
    }
}

/* contract: in[i * istride] holds the value at kept position i; out is dense
 * (n_d, n_h, n_w) C-order and is overwritten. */
WINO_HD WINO_INLINE void WINO_CAT(wino_contract_dims_, WINO_SUFFIX)(
    const WINO_PLAN *pl, const int nd, const int nh, const int nw, const int ad, const int ah,
    const int aw, const WINO_V *WINO_RESTRICT in, wino_index istride, WINO_V *WINO_RESTRICT out,
    WINO_V *WINO_RESTRICT t1, WINO_V *WINO_RESTRICT t2)
{
    const int ahw = ah * aw;
    const WINO_REAL *Xd = pl->X[0], *Xh = pl->X[1], *Xw = pl->X[2];
#ifdef WINO_VALUE
    WINO_V acc[WINO_ACC_MAX];
    if (pl->nk == ad * ahw) {
        /* stage 3^T, dense: t2[a][hw] = sum_d Xd[d][a] in[d][hw] (d in order) */
        for (int hw = 0; hw < ahw; ++hw) {
            for (int a = 0; a < nd; ++a) acc[a] = WINO_VZERO;
            for (int d = 0; d < ad; ++d) {
                const WINO_V v = in[(d * ahw + hw) * istride];
                for (int a = 0; a < nd; ++a) acc[a] += Xd[d * nd + a] * v;
            }
            for (int a = 0; a < nd; ++a) t2[a * ahw + hw] = acc[a];
        }
        /* stage 2^T: t1[a][b][w] = sum_h Xh[h][b] t2[a][h][w] */
        for (int a = 0; a < nd; ++a) {
            for (int w = 0; w < aw; ++w) {
                for (int b = 0; b < nh; ++b) acc[b] = WINO_VZERO;
                for (int h = 0; h < ah; ++h) {
                    const WINO_V v = t2[(a * ah + h) * aw + w];
                    for (int b = 0; b < nh; ++b) acc[b] += Xh[h * nh + b] * v;
                }
                for (int b = 0; b < nh; ++b) t1[(a * nh + b) * aw + w] = acc[b];
            }
        }
        /* stage 1^T: out[a][b][c] = sum_w Xw[w][c] t1[a][b][w] */
        for (int ab = 0; ab < nd * nh; ++ab) {
            for (int c = 0; c < nw; ++c) acc[c] = WINO_VZERO;
            for (int w = 0; w < aw; ++w) {
                const WINO_V v = t1[ab * aw + w];
                for (int c = 0; c < nw; ++c) acc[c] += Xw[w * nw + c] * v;
            }
            for (int c = 0; c < nw; ++c) out[ab * nw + c] = acc[c];
        }
        return;
    }
    int wl[WINO_ACC_MAX], hs[WINO_ACC_MAX + 1], hl[WINO_ACC_MAX * WINO_ACC_MAX];
    const int nwl = WINO_CAT(wino_used_lines_, WINO_SUFFIX)(pl, ah, aw, wl, hs, hl);
    /* stage 3^T: t2[a][h][w] = sum over kept (d,h,w) of Xd[d][a] in_p, the
     * used (h, w) lines only */
    for (int a = 0; a < nd; ++a)
        for (int j = 0; j < nwl; ++j)
            for (int q = hs[j]; q < hs[j + 1]; ++q) t2[(a * ah + hl[q]) * aw + wl[j]] = WINO_VZERO;
#else
    (void)ad;
    for (int a = 0; a < nd; ++a)
        for (int hw = 0; hw < ahw; ++hw)
            if (pl->need_hw[hw]) t2[a * ahw + hw] = WINO_VZERO;
#endif
    for (int i = 0; i < pl->nk; ++i) {
        const int p = pl->kept[i];
        const int d = p / ahw, hw = p - d * ahw;
        const WINO_V v = in[i * istride];
        for (int a = 0; a < nd; ++a) t2[a * ahw + hw] += Xd[d * nd + a] * v;
    }
#ifdef WINO_VALUE
    /* stage 2^T: t1[a][b][w] = sum_h Xh[h][b] t2[a][h][w], used (h, w) only */
    for (int a = 0; a < nd; ++a) {
        for (int j = 0; j < nwl; ++j) {
            const int w = wl[j];
            for (int b = 0; b < nh; ++b) acc[b] = WINO_VZERO;
            for (int q = hs[j]; q < hs[j + 1]; ++q) {
                const int h = hl[q];
                const WINO_V v = t2[(a * ah + h) * aw + w];
                for (int b = 0; b < nh; ++b) acc[b] += Xh[h * nh + b] * v;
            }
            for (int b = 0; b < nh; ++b) t1[(a * nh + b) * aw + w] = acc[b];
        }
    }
    /* stage 1^T: out[a][b][c] = sum_w Xw[w][c] t1[a][b][w], used w only */
    for (int ab = 0; ab < nd * nh; ++ab) {
        for (int c = 0; c < nw; ++c) acc[c] = WINO_VZERO;
        for (int j = 0; j < nwl; ++j) {
            const WINO_V v = t1[ab * aw + wl[j]];
            for (int c = 0; c < nw; ++c) acc[c] += Xw[wl[j] * nw + c] * v;
        }
        for (int c = 0; c < nw; ++c) out[ab * nw + c] = acc[c];
    }
#else
    /* stage 2^T: t1[a][b][w] = sum_h Xh[h][b] t2[a][h][w] */
    for (int a = 0; a < nd; ++a) {
        for (int b = 0; b < nh; ++b) {
            for (int w = 0; w < aw; ++w) {
                if (!pl->need_w[w]) continue;
                WINO_V s = WINO_VZERO;
                for (int h = 0; h < ah; ++h)
                    if (pl->need_hw[h * aw + w]) s += Xh[h * nh + b] * t2[(a * ah + h) * aw + w];
                t1[(a * nh + b) * aw + w] = s;
            }
        }
    }
    /* stage 1^T: out[a][b][c] = sum_w Xw[w][c] t1[a][b][w] */
    for (int ab = 0; ab < nd * nh; ++ab) {
        for (int c = 0; c < nw; ++c) {
            WINO_V s = WINO_VZERO;
            for (int w = 0; w < aw; ++w)
                if (pl->need_w[w]) s += Xw[w * nw + c] * t1[ab * aw + w];
            out[ab * nw + c] = s;
        }
    }
#endif
}

WINO_HD WINO_INLINE void WINO_CAT(wino_expand_, WINO_SUFFIX)(
    const WINO_PLAN *pl, const WINO_V *WINO_RESTRICT in, WINO_V *WINO_RESTRICT out,
    wino_index ostride, WINO_V *WINO_RESTRICT t1, WINO_V *WINO_RESTRICT t2)
{
    WINO_CAT(wino_expand_dims_, WINO_SUFFIX)(pl, pl->n[0], pl->n[1], pl->n[2], pl->a[0], pl->a[1],
                                             pl->a[2], in, out, ostride, t1, t2);
}

WINO_HD WINO_INLINE void WINO_CAT(wino_contract_, WINO_SUFFIX)(
    const WINO_PLAN *pl, const WINO_V *WINO_RESTRICT in, wino_index istride,
    WINO_V *WINO_RESTRICT out, WINO_V *WINO_RESTRICT t1, WINO_V *WINO_RESTRICT t2)
{
    WINO_CAT(wino_contract_dims_, WINO_SUFFIX)(pl, pl->n[0], pl->n[1], pl->n[2], pl->a[0],
                                               pl->a[1], pl->a[2], in, istride, out, t1, t2);
}

#undef WINO_PLAN
#undef WINO_V
#ifndef WINO_VALUE
#undef WINO_VZERO
#endif
