/*
 * fused.template.h -- the fused, cache-resident forward pipeline.
 *
 * For small and mid channel counts the three stages of the blocked pipeline
 * are memory-bound: V and M of a whole volume are hundreds of MB, and every
 * trip through DRAM between stages costs more than the arithmetic.  Here each
 * thread carries one block of `tb` tiles through all three stages with the
 * block's V and M in its private scratch (sized to stay in L2):
 *
 *   input transform   x (channels-last, CP channels)  ->  V[t][i][CP]
 *   product           M[t][i][:] = V[t][i][:] @ Up[i]     ([CP] x [CP][KP])
 *   output transform  M[t][i][k-vector] -> y (any strides) + bias
 *
 * V and M are tile-major, so the transforms write and read them in place
 * (position i of tile t at a fixed vector stride) with no copy.
 *
 * Transforms are vectorised across channels: one SIMD vector holds VL
 * channels of one voxel, so a tile's patch is whole-vector loads and the
 * per-tile math of wino3d_tile.h runs lane-wise on channel vectors.  The
 * product micro-kernel broadcasts V[i][t][c] and streams rows of the packed
 * weights Up[i][c][k0 : k0 + 2 VL]; it needs no packing of V.
 *
 * Determinism: a tile's arithmetic does not depend on which block or thread
 * processes it (every M element is summed over c in order from zero), so
 * results are bit-identical for any number of threads.
 *
 * Template (see template_names.h): define WINO_REAL and WINO_SUFFIX; it is
 * included after tile_lanes.template.h, whose expandv/contractv it uses.
 */
#include "template_names.h"

#define FUSED_NB (2 * VL) /* output channels per micro-tile */
#define FUSED_MR 6        /* tiles per micro-tile */

/* Elements between consecutive tiles of V (w = CP) or M (w = KP): nk * w,
 * spread over the L1's sets (wino_spread_stride).  The micro-kernel reads 6
 * tiles' rows of V and writes 6 of M at once; with nk * w * size a multiple
 * of 4 KiB (F(6^3) on 16 or 32 channels: 32 or 64 KiB) all twelve fell in
 * one set of the 8-way L1. */
static wino_index FN(fused_tile_stride)(wino_index nk, wino_index w)
{
    return wino_spread_stride(nk * w, sizeof(REAL));
}

/* Scratch of one thread, carved from the caller's buffer in this order. */
static void FN(fused_sizes)(const PLAN *pin, const PLAN *pout, wino_index tb, wino_index CP,
                            wino_index KP, size_t sz[6])
{
    size_t patch = 1, po = 1;
    for (int ax = 0; ax < 3; ++ax) {
        patch *= (size_t)(pin->n[ax] > pin->a[ax] ? pin->n[ax] : pin->a[ax]);
        po *= (size_t)(pout->n[ax] > pout->a[ax] ? pout->n[ax] : pout->a[ax]);
    }
    if (po > patch) patch = po;
    size_t t = (size_t)SCRATCH_LEN(pin);
    if ((size_t)SCRATCH_LEN(pout) > t) t = (size_t)SCRATCH_LEN(pout);
    const size_t nk = (size_t)pin->nk;
    sz[0] = wino_scratch_round(sizeof(VEC) * patch);          /* patch */
    sz[1] = wino_scratch_round(sizeof(VEC) * t);              /* t1 */
    sz[2] = wino_scratch_round(sizeof(VEC) * t);              /* t2 */
    sz[3] = 0;                                               /* (unused) */
    sz[4] = wino_scratch_round(sizeof(REAL) * (size_t)tb * (size_t)FN(fused_tile_stride)((wino_index)nk, CP)); /* V */
    sz[5] = wino_scratch_round(sizeof(REAL) * (size_t)tb * (size_t)FN(fused_tile_stride)((wino_index)nk, KP)); /* M */
}

/* One thread's scratch, carved from its slice in the order of fused_sizes:
 * the per-tile transform buffers, then the block's V and M. */
typedef struct {
    VEC *patch, *t1, *t2;
    REAL *V, *M;
} FN(fused_scratch);

static FN(fused_scratch) FN(fused_scratch_at)(char *s, const size_t sz[6])
{
    FN(fused_scratch) f;
    f.patch = (VEC *)s;
    f.t1 = (VEC *)(s + sz[0]);
    f.t2 = (VEC *)(s + sz[0] + sz[1]);
    f.V = (REAL *)(s + sz[0] + sz[1] + sz[2] + sz[3]);
    f.M = (REAL *)(s + sz[0] + sz[1] + sz[2] + sz[3] + sz[4]);
    return f;
}

/* Bytes of scratch one thread needs. */
static size_t FN(fused_thread_bytes)(const PLAN *pin, const PLAN *pout, wino_index tb,
                                     wino_index CP, wino_index KP)
{
    size_t sz[6], total = 0;
    FN(fused_sizes)(pin, pout, tb, CP, KP, sz);
    for (int i = 0; i < 6; ++i) total += sz[i];
    return total;
}

/* Bytes of scratch wino_fused_forward needs with nthreads threads. */
size_t FN(wino_fused_scratch_bytes)(const PLAN *pin, const PLAN *pout, wino_index tb,
                                    wino_index CP, wino_index KP, int nthreads)
{
    return wino_scratch_total(FN(fused_thread_bytes)(pin, pout, tb, CP, KP), nthreads);
}

/* The packed weights of the fused pipeline: Up[i][c][k] = U[src[i]][k][c]
 * for c < C and k < K (U: P positions of K rows of C values), zero for
 * c >= C, k >= K, or where src[i] < 0 (a position not kept).  Positions are
 * split between the threads; each one's K x C block is transposed in VL x VL
 * pieces, whole ones by a register transpose, the edges one value at a time
 * (the scalar copy took 0.85 ms of a 6.4 ms C64->64 F(3^3) layer at 12^3). */
int FN(wino_fused_pack)(const REAL *U, wino_index P, wino_index K, wino_index C, const wino_index *src,
                        wino_index nrun, wino_index CP, wino_index KP, REAL *Up, int nthreads)
{
    if (CP < C || KP < K || K < 0 || C < 0) return WINO_EARG;
    for (wino_index i = 0; i < nrun; ++i)
        if (src[i] >= P) return WINO_EARG;
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (wino_index i = 0; i < nrun; ++i) {
        REAL *dst = Up + i * CP * KP;
        if (src[i] < 0) {
            memset(dst, 0, sizeof(REAL) * (size_t)(CP * KP));
            continue;
        }
        const REAL *u = U + src[i] * K * C;
        for (wino_index c0 = 0; c0 < C; c0 += VL) {
            const wino_index c1 = C - c0 < VL ? C : c0 + VL;
            for (wino_index k0 = 0; k0 < K; k0 += VL) {
                const wino_index k1 = K - k0 < VL ? K : k0 + VL;
                if (c1 - c0 == VL && k1 - k0 == VL) { /* a whole block: register transpose */
                    VEC in[VL], out[VL];
                    for (int r = 0; r < VL; ++r) memcpy(in + r, u + (k0 + r) * C + c0, sizeof(VEC));
                    TRANSPOSE(in, out);
                    for (int r = 0; r < VL; ++r) memcpy(dst + (c0 + r) * KP + k0, out + r, sizeof(VEC));
                    continue;
                }
                for (wino_index c = c0; c < c1; ++c)
                    for (wino_index k = k0; k < k1; ++k) dst[c * KP + k] = u[k * C + c];
            }
        }
        for (wino_index c = 0; c < C; ++c)
            for (wino_index k = K; k < KP; ++k) dst[c * KP + k] = 0;
        if (CP > C) memset(dst + C * KP, 0, sizeof(REAL) * (size_t)((CP - C) * KP));
    }
    return 0;
}

/* x (any strides, C channels) -> xcl[n][d][h][w][CP], channels C..CP zero.
 * With unit w stride, whole VL x VL blocks (VL channels x VL voxels) go
 * through a register transpose; the edges are copied one value at a time.
 * With a prologue `pro` (else NULL), each value copied is act(x * scale[n, c]
 * + shift[n, c]) (affine.template.h), on the transposed vectors; the padding
 * channels stay zero, as does the convolution's padding (fused_gather). */
int FN(wino_to_channels_last)(const wino_geom *g, const REAL *x, wino_index CP, REAL *xcl,
                              const wino_fusion *pro, int nthreads)
{
    if (pro && (pro->act < 0 || pro->act >= WINO_ACT_COUNT)) return WINO_EARG;
    const wino_index rows = g->N * g->D * g->H, W = g->W, C = g->C;
    const wino_index cs = g->xs[1], ws = g->xs[4];
    const wino_index Cv = ws == 1 ? C - C % VL : 0, Wv = ws == 1 ? W - W % VL : 0;
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (wino_index row = 0; row < rows; ++row) {
        const wino_index h = row % g->H, nd = row / g->H, d = nd % g->D, n = nd / g->D;
        const REAL *src = x + n * g->xs[0] + d * g->xs[2] + h * g->xs[3];
        REAL *dst = xcl + row * W * CP;
        VEC in[VL], out[VL];
        for (wino_index c0 = 0; c0 < Cv; c0 += VL) {
            const FN(affine_vecs) av = pro ? FN(affine_vecs_at)(pro, n, c0, VL) : (FN(affine_vecs)){0};
            for (wino_index w0 = 0; w0 < Wv; w0 += VL) {
                for (int i = 0; i < VL; ++i) memcpy(in + i, src + (c0 + i) * cs + w0, sizeof(VEC));
                TRANSPOSE(in, out);
                if (pro) FN(affine_act_vecs)(pro, &av, out, VL);
                for (int j = 0; j < VL; ++j) memcpy(dst + (w0 + j) * CP + c0, out + j, sizeof(VEC));
            }
            for (wino_index c = c0; c < c0 + VL; ++c)
                for (wino_index w = Wv; w < W; ++w)
                    dst[w * CP + c] = pro ? FN(affine_act1)(pro, n, c, src[c * cs + w]) : src[c * cs + w];
        }
        for (wino_index c = Cv; c < C; ++c) {
            const REAL *s = src + c * cs;
            if (pro)
                for (wino_index w = 0; w < W; ++w) dst[w * CP + c] = FN(affine_act1)(pro, n, c, s[w * ws]);
            else
                for (wino_index w = 0; w < W; ++w) dst[w * CP + c] = s[w * ws];
        }
        if (CP > C)
            for (wino_index w = 0; w < W; ++w)
                for (wino_index c = C; c < CP; ++c) dst[w * CP + c] = 0;
    }
    return 0;
}

/* Store one output row of a tile: ew voxels along w, each a vector of VL
 * channels (k0 .. k0 + lanes) in `row`, plus the bias, to y at yk (channel
 * k0's first voxel) with channel stride ks and voxel stride ws.  Unit voxel
 * stride with a full vector of channels goes through a register transpose
 * and stores ew contiguous values per channel. */
static inline void FN(fused_store_row)(const VEC *row, int ew, int lanes, const REAL *bias, REAL *yk,
                                       wino_index ks, wino_index ws)
{
#if WINO_VBYTES == 64
    /* 16 lanes: a full 16 x 16 transpose costs 256 element moves for the
     * ew <= 8 values of a row; read each lane's ew values directly instead
     * (ew constant per case, so the loops unroll). */
    if (ws == 1 && lanes == VL && ew <= 8) {
        VEC in[8], b = (VEC){0};
        if (bias) memcpy(&b, bias, sizeof b);
        switch (ew) {
#define CASE(E_)                                                              \
        case E_:                                                              \
            for (int e = 0; e < E_; ++e) in[e] = row[e] + b;                  \
            for (int l = 0; l < VL; ++l)                                      \
                for (int e = 0; e < E_; ++e) yk[l * ks + e] = in[e][l];       \
            return;
            CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8)
#undef CASE
            default: break;
        }
    }
#endif
    if (ws == 1 && lanes == VL && ew <= VL) {
        VEC in[VL], out[VL], b = (VEC){0};
        if (bias) memcpy(&b, bias, sizeof b);
        for (int e = 0; e < ew; ++e) in[e] = row[e] + b;
        for (int e = ew; e < VL; ++e) in[e] = (VEC){0};
        TRANSPOSE(in, out);
        for (int l = 0; l < VL; ++l) {
            REAL *dst = yk + l * ks;
            /* constant sizes: a run-time length compiles to a memmove call
             * per lane (7 % of F(6^3) on C16 at 128^3) */
            switch (ew) {
#define CASE(E_) case E_: memcpy(dst, out + l, E_ * sizeof(REAL)); break;
                CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8)
#undef CASE
                default: for (int e = 0; e < ew; ++e) dst[e] = out[l][e]; break;
            }
        }
        return;
    }
    const REAL *pr = (const REAL *)row;
    for (int l = 0; l < lanes; ++l) {
        const REAL b = bias ? bias[l] : (REAL)0;
        REAL *dst = yk + l * ks;
        for (int e = 0; e < ew; ++e) dst[e * ws] = pr[(size_t)e * VL + l] + b;
    }
}

/* M rows [0, ROWS) x columns [0, FUSED_NB):  Cm[r][:] = sum_c A[r][c] * B[c][:]
 * A: rows of CP values (stride lda), B: rows of KP values (stride ldb). */
WINO_INLINE void FN(fused_ukernel)(const int ROWS, wino_index CP, const REAL *A, wino_index lda,
                                   const REAL *B, wino_index ldb, REAL *Cm, wino_index ldc, const char *pf)
{
    VEC acc0[FUSED_MR], acc1[FUSED_MR], sum0[FUSED_MR], sum1[FUSED_MR];
    for (int r = 0; r < ROWS; ++r) {
        acc0[r] = (VEC){0};
        acc1[r] = (VEC){0};
    }
    /* chains of WINO_GEMM_KB products, added in order: the GEMM's chains
     * (gemm.h), so the bits stay the blocked pipeline's */
    for (wino_index c0 = 0; c0 < CP; c0 += WINO_GEMM_KB) {
        const wino_index c1 = CP - c0 < WINO_GEMM_KB ? CP : c0 + WINO_GEMM_KB;
        for (int r = 0; r < ROWS; ++r) {
            sum0[r] = (VEC){0};
            sum1[r] = (VEC){0};
        }
        for (wino_index c = c0; c < c1; ++c) {
            VEC b0, b1;
            memcpy(&b0, B + c * ldb, sizeof b0);
            memcpy(&b1, B + c * ldb + VL, sizeof b1);
            WINO_PREFETCH_LINE(pf, c);
            for (int r = 0; r < ROWS; ++r) {
                const REAL a = A[r * lda + c];
                sum0[r] += a * b0;
                sum1[r] += a * b1;
            }
        }
        for (int r = 0; r < ROWS; ++r) {
            acc0[r] = c0 ? acc0[r] + sum0[r] : sum0[r];
            acc1[r] = c0 ? acc1[r] + sum1[r] : sum1[r];
        }
    }
    for (int r = 0; r < ROWS; ++r) {
        memcpy(Cm + r * ldc, &acc0[r], sizeof(VEC));
        memcpy(Cm + r * ldc + VL, &acc1[r], sizeof(VEC));
    }
}

/* M (n x KP, row stride ldm) = V (n x CP, row stride ldv) @ Up (CP x KP). */
static void FN(fused_product)(wino_index n, wino_index CP, wino_index KP, const REAL *V,
                              wino_index ldv, const REAL *Up, REAL *M, wino_index ldm, const REAL *next)
{
    /* each call prefetches CP lines of the next position's weights: the
     * KP / FUSED_NB calls of the first row group cover them */
    wino_prefetch pf = wino_prefetch_of(next, sizeof(REAL) * (size_t)CP * KP);
    wino_index r0 = 0;
    for (; r0 + FUSED_MR <= n; r0 += FUSED_MR)
        for (wino_index k0 = 0; k0 < KP; k0 += FUSED_NB)
            FN(fused_ukernel)(FUSED_MR, CP, V + r0 * ldv, ldv, Up + k0, KP, M + r0 * ldm + k0, ldm,
                              wino_prefetch_next(&pf, CP));
    for (wino_index k0 = 0; k0 < KP; k0 += FUSED_NB) {
        const char *at = wino_prefetch_next(&pf, CP);
        switch (n - r0) {
#define X(R_) case R_: FN(fused_ukernel)(R_, CP, V + r0 * ldv, ldv, Up + k0, KP, M + r0 * ldm + k0, ldm, at); break;
            X(1) X(2) X(3) X(4) X(5)
#undef X
            default: break;
        }
    }
}

/* Gather the alpha^3 patch of channel vector cg of tile (n, o) from xcl,
 * zeros outside the volume. */
static inline void FN(fused_gather)(const wino_geom *g, const REAL *xcl, const wino_index xcs[4],
                                    wino_index n, const wino_index o[3], wino_index cg,
                                    const int a[3], VEC *patch)
{
    int lo[3], hi[3];
    wino_index start[3];
    wino_geom_patch_window(g, o, a, start, lo, hi);
    const int ah = a[1], aw = a[2];
    const REAL *base = xcl + n * xcs[0] + cg * VL;
    for (int p = 0; p < a[0]; ++p) {
        const int okd = p >= lo[0] && p < hi[0];
        for (int q = 0; q < ah; ++q) {
            VEC *dst = patch + (p * ah + q) * aw;
            if (!okd || q < lo[1] || q >= hi[1]) {
                for (int e = 0; e < aw; ++e) dst[e] = (VEC){0};
                continue;
            }
            const REAL *src = base + (start[0] + p) * xcs[1] + (start[1] + q) * xcs[2] + start[2] * xcs[3];
            int e = 0;
            for (; e < lo[2]; ++e) dst[e] = (VEC){0};
            for (; e < hi[2]; ++e) memcpy(dst + e, src + e * xcs[3], sizeof(VEC));
            for (; e < aw; ++e) dst[e] = (VEC){0};
        }
    }
}

/* The fused forward pass over all tiles.
 *   xcl, xcs : channels-last input with CP (multiple of VL) channels, element
 *              strides (n, d, h, w), channel stride 1, padding lanes zero
 *   Up       : packed weights [nk][CP][KP], KP a multiple of 2 VL, zero padded
 *   y, ys    : output (N, K, Do, Ho, Wo) with element strides ys
 *   epi      : an epilogue applied to each output tile before it is stored
 *              (fused_epilogue_tile), or NULL: bias only
 *   part     : with epi, where each tile t's float64 mean and M2 per channel
 *              go (part[t][2][KP], t counted from tile 0 of g), or NULL
 *   scratch  : caller-owned, sized by wino_fused_scratch_bytes (else
 *              WINO_ESCRATCH before anything is touched)
 */
int FN(wino_fused_forward)(const wino_geom *g, const REAL *xcl, const wino_index xcs[4], wino_index CP,
                           const REAL *Up, wino_index K, wino_index KP, const PLAN *pin,
                           const PLAN *pout, const REAL *bias, REAL *y, const wino_index ys[5],
                           wino_index t_begin, wino_index t_end, wino_index tb,
                           const wino_fusion *epi, double *part,
                           void *scratch, size_t scratch_bytes, int nthreads)
{
    if (epi && (epi->act < 0 || epi->act >= WINO_ACT_COUNT)) return WINO_EARG;
    if (part && !epi) return WINO_EARG;
    const size_t per_thread = FN(fused_thread_bytes)(pin, pout, tb, CP, KP);
    if (!scratch || scratch_bytes < wino_scratch_total(per_thread, nthreads)) return WINO_ESCRATCH;
    if (CP % VL || KP % FUSED_NB || tb < 1 || K > KP || g->C > CP || pout->nk != pin->nk) return WINO_EARG;
    const wino_index T = t_end;
    if (t_begin < 0 || t_end > g->N * g->nt[0] * g->nt[1] * g->nt[2] || t_begin > t_end) return WINO_EARG;
    const wino_index nblocks = (t_end - t_begin + tb - 1) / tb;
    const int nk = pin->nk;
    const wino_index ldv = FN(fused_tile_stride)(nk, CP), ldm = FN(fused_tile_stride)(nk, KP);
    const int md = pout->n[0], mh = pout->n[1], mw = pout->n[2];
    const wino_index Do = g->od[0], Ho = g->od[1], Wo = g->od[2];
    const wino_index ys0 = ys[0], ys1 = ys[1], ys2 = ys[2], ys3 = ys[3], ys4 = ys[4];
    size_t sz[6];
    FN(fused_sizes)(pin, pout, tb, CP, KP, sz);
    /* x holds whole, aligned vectors at every voxel: the constant expand may read it in place */
    const int x_vectors = FN(dense_cube)(pin) && (uintptr_t)xcl % sizeof(VEC) == 0 && xcs[0] % VL == 0 &&
                         xcs[1] % VL == 0 && xcs[2] % VL == 0 && xcs[3] % VL == 0;
    const wino_index xvs = xcs[3] / VL, xhs = xcs[2] / VL, xds = xcs[1] / VL; /* in vectors */
#pragma omp parallel num_threads(nthreads)
    {
        const FN(fused_scratch) f = FN(fused_scratch_at)((char *)wino_scratch_slice(scratch, per_thread, wino_thread_num()), sz);
        VEC *patch = f.patch, *t1 = f.t1, *t2 = f.t2;
        REAL *V = f.V, *M = f.M;
#pragma omp for schedule(static)
        for (wino_index blk = 0; blk < nblocks; ++blk) {
            const wino_index t0 = t_begin + blk * tb;
            const wino_index nt = T - t0 < tb ? T - t0 : tb;
            /* input transform, one channel vector at a time: a tile inside
             * the volume is read in place when x is vector-aligned and the
             * constant code serves the plan, else gathered into a patch */
            for (wino_index r = 0; r < nt; ++r) {
                wino_index n, o[3], start[3];
                int lo[3], hi[3];
                wino_geom_tile_origin(g, t0 + r, &n, o);
                wino_geom_patch_window(g, o, pin->a, start, lo, hi);
                const int inside = x_vectors && !lo[0] && !lo[1] && !lo[2] && hi[0] == pin->a[0] &&
                                   hi[1] == pin->a[1] && hi[2] == pin->a[2];
                const REAL *xt = xcl + n * xcs[0] + start[0] * xcs[1] + start[1] * xcs[2] + start[2] * xcs[3];
                for (wino_index cg = 0; cg < CP / VL; ++cg) {
                    VEC *vt = (VEC *)(V + r * ldv + cg * VL);
                    if (inside && WINO_CAT(wino_cx_expand3_, WINO_SUFFIX)(pin->X[0], (const VEC *)(xt + cg * VL),
                                                                            xvs, xhs, xds, vt, CP / VL, t1, t2))
                        continue;
                    FN(fused_gather)(g, xcl, xcs, n, o, cg, pin->a, patch);
                    FN(expandv_strided)(pin, patch, vt, CP / VL, t1, t2);
                }
            }
            /* product, one kept position at a time */
            for (int i = 0; i < nk; ++i)
                FN(fused_product)(nt, CP, KP, V + (wino_index)i * CP, ldv, Up + (wino_index)i * CP * KP,
                                  M + (wino_index)i * KP, ldm, Up + (wino_index)((i + 1) % nk) * CP * KP);
            /* output transform, one channel vector at a time */
            for (wino_index r = 0; r < nt; ++r) {
                wino_index n, o[3];
                wino_geom_tile_origin(g, t0 + r, &n, o);
                const int ed = Do - o[0] < md ? (int)(Do - o[0]) : md;
                const int eh = Ho - o[1] < mh ? (int)(Ho - o[1]) : mh;
                const int ew = Wo - o[2] < mw ? (int)(Wo - o[2]) : mw;
                REAL *yt = y + n * ys0 + o[0] * ys2 + o[1] * ys3 + o[2] * ys4;
                for (wino_index k0 = 0; k0 < K; k0 += VL) {
                    FN(contractv_strided)(pout, (const VEC *)(M + r * ldm + k0), KP / VL, patch, t1, t2);
                    const int lanes = K - k0 < VL ? (int)(K - k0) : VL;
                    const REAL *bk = bias ? bias + k0 : NULL;
                    if (epi) { /* the epilogue on the tile in L1, bias included */
                        FN(fused_epilogue_tile)(patch, mh, mw, ed, eh, ew, lanes, n, o, k0, bias, epi,
                                                part ? part + (t0 + r) * 2 * KP : NULL, KP);
                        bk = NULL;
                    }
                    for (int a = 0; a < ed; ++a)
                        for (int c = 0; c < eh; ++c)
                            FN(fused_store_row)(patch + (a * mh + c) * mw, ew, lanes, bk,
                                                yt + k0 * ys1 + a * ys2 + c * ys3, ys1, ys4);
                }
            }
        }
    }
    return 0;
}

#undef FUSED_NB
#undef FUSED_MR

#include "template_names_end.h"
