/*
 * fused_backward.template.h -- the fused, cache-resident backward pipeline,
 * sibling of fused.template.h (whose scratch layout, patch gather and
 * channels-last conversion it reuses).
 *
 * Each thread carries one block of `tb` tiles through every stage of the
 * backward pass with the block's values in its private scratch, channels in
 * SIMD lanes (one vector holds VL channels of one voxel):
 *
 *   output adjoint    grad_y (any strides)                -> gM[t][i][KV]
 *   grad_U  (if asked)
 *     input transform x (channels-last, CV channels)     -> V[t][i][CV]
 *     weight product  P_j[i][c][:] += V[t][i][c] gM[t][i][:]  (tiles in order)
 *   grad_x  (if asked)
 *     data product    gV[t][i][:] = gM[t][i][:K] @ Ut[i]      ([K] x [K][CV])
 *     input adjoint   gV -> alpha^3 patch, added into grad_x (channels-last)
 *
 * Like the forward pass, the blocks are tile-major (position i of tile t at a
 * fixed vector stride), so the transforms write and read them in place; gV
 * takes V's place once the weight product has used V.
 *
 * Determinism for any thread count
 * --------------------------------
 * Work is organised in rows of tiles (fixed n, tile_d, tile_h; every tile_w
 * in order).  The rows are split into `nchunks` contiguous chunks, a number
 * the caller chooses from the problem size only (never from the thread
 * count).  Chunk j owns the partial weight gradient P_j ([nk][CV][KV]); its
 * tiles are added to P_j one at a time, in a fixed order, by whichever
 * thread holds the chunk.  At the end grad_U[kept[i]] = P_0 + P_1 + ... in
 * chunk order.  Memory: nchunks x nk x CV x KV values.
 *
 * The input adjoint scatters patches that overlap their neighbours by
 * alpha - m voxels.  Rows are coloured by (tile_d mod qd, tile_h mod qh),
 * q = ceil(alpha / m) per axis, and the colours run as phases separated by
 * barriers.  Two rows of one colour are >= q tiles apart along d or h, so
 * their patches (alpha <= q m voxels long) never share a voxel: within a
 * phase every voxel is written by at most one row, i.e. one thread, tiles in
 * tile_w order.  Every voxel therefore receives its contributions in the
 * same order (phase by phase, then tile_w) whatever the number of threads
 * and the chunking.  This order is the tile order of the blocked pipeline
 * when there are at most q tiles along d and h; otherwise the sums differ
 * from the blocked pipeline's by rounding only.
 *
 * Every stage skips pruned positions: the transforms run on the plans' kept
 * positions, the products loop over i < nk.
 *
 * Template (see template_names.h): define WINO_REAL and WINO_SUFFIX; it is
 * included after fused.template.h of the same type.
 */
#include "template_names.h"

#define FB_MR 6 /* rows per micro-tile */

/* Most tiles in one block (the list of a block's tiles is on the stack). */
#ifndef WINO_FUSED_BACKWARD_TB_MAX
#define WINO_FUSED_BACKWARD_TB_MAX 256
#endif

/* Out[r][0 : NV VL] (+)= sum_{j < J} A[r ars + j ajs] * B[j ldb + 0 : NV VL]
 * for r < ROWS, each element summed over j in order (from Out when acc_in,
 * from zero otherwise). */
WINO_INLINE void FN(fb_ukernel)(const int ROWS, const int NV, wino_index J, const REAL *A,
                                wino_index ars, wino_index ajs, const REAL *B, wino_index ldb,
                                REAL *Out, wino_index ldo, int acc_in, const char *pf)
{
    VEC acc0[FB_MR], acc1[FB_MR];
    for (int r = 0; r < ROWS; ++r) {
        if (acc_in) {
            memcpy(&acc0[r], Out + r * ldo, sizeof(VEC));
            if (NV == 2) memcpy(&acc1[r], Out + r * ldo + VL, sizeof(VEC));
        } else {
            acc0[r] = (VEC){0};
            acc1[r] = (VEC){0};
        }
    }
    for (wino_index j = 0; j < J; ++j) {
        VEC b0, b1;
        memcpy(&b0, B + j * ldb, sizeof b0);
        if (NV == 2) memcpy(&b1, B + j * ldb + VL, sizeof b1);
        WINO_PREFETCH_LINE(pf, j);
        const REAL *a = A + j * ajs;
        for (int r = 0; r < ROWS; ++r) {
            const REAL ar = a[r * ars];
            acc0[r] += ar * b0;
            if (NV == 2) acc1[r] += ar * b1;
        }
    }
    for (int r = 0; r < ROWS; ++r) {
        memcpy(Out + r * ldo, &acc0[r], sizeof(VEC));
        if (NV == 2) memcpy(Out + r * ldo + VL, &acc1[r], sizeof(VEC));
    }
}

/* Out (rows x ncols, ncols a multiple of VL) (+)= A (rows x J) @ B (J x ncols);
 * the calls prefetch `pf` (wino_prefetch_next, J lines each). */
static void FN(fb_gemm)(wino_index rows, wino_index ncols, wino_index J, const REAL *A, wino_index ars,
                        wino_index ajs, const REAL *B, wino_index ldb, REAL *Out, wino_index ldo, int acc_in,
                        wino_prefetch pf)
{
    for (wino_index c0 = 0; c0 < ncols;) {
        const int nv = ncols - c0 >= 2 * VL ? 2 : 1;
        wino_index r0 = 0;
#define UK(R_, NV_) FN(fb_ukernel)(R_, NV_, J, A + r0 * ars, ars, ajs, B + c0, ldb, Out + r0 * ldo + c0, ldo, \
                                 acc_in, wino_prefetch_next(&pf, J))
        if (nv == 2) {
            for (; r0 + FB_MR <= rows; r0 += FB_MR) UK(FB_MR, 2);
        } else {
            for (; r0 + FB_MR <= rows; r0 += FB_MR) UK(FB_MR, 1);
        }
        switch ((int)(rows - r0) * 2 + nv - 1) {
#define X(R_) case 2 * R_: UK(R_, 1); break; case 2 * R_ + 1: UK(R_, 2); break;
            X(1) X(2) X(3) X(4) X(5)
#undef X
#undef UK
            default: break;
        }
        c0 += (wino_index)nv * VL;
    }
}

/* The m_d x m_h x m_w patch of channels [kg VL, kg VL + VL) of output tile
 * (n, o) from grad_y (element strides gs over (n, k, d, h, w)), zeros past
 * the output's end and in lanes k >= K.  Output tiles do not overlap, so
 * every element of grad_y is read once: straight from any layout, as whole
 * vectors when channels are unit-stride. */
static inline void FN(fb_gather_out)(const wino_geom *g, const REAL *gy, const wino_index gs[5],
                                     wino_index n, const wino_index o[3], wino_index kg,
                                     const int m[3], VEC *patch)
{
    const int ed = g->od[0] - o[0] < m[0] ? (int)(g->od[0] - o[0]) : m[0];
    const int eh = g->od[1] - o[1] < m[1] ? (int)(g->od[1] - o[1]) : m[1];
    const int ew = g->od[2] - o[2] < m[2] ? (int)(g->od[2] - o[2]) : m[2];
    const wino_index s2 = gs[2], s3 = gs[3], s4 = gs[4];
    const REAL *base = gy + n * gs[0] + kg * VL * gs[1] + o[0] * s2 + o[1] * s3 + o[2] * s4;
    const int lanes = g->K - kg * VL < VL ? (int)(g->K - kg * VL) : VL;
    if (gs[1] == 1 && lanes == VL) {
        for (int a = 0; a < m[0]; ++a)
            for (int b = 0; b < m[1]; ++b) {
                VEC *dst = patch + (a * m[1] + b) * m[2];
                if (a >= ed || b >= eh) {
                    for (int e = 0; e < m[2]; ++e) dst[e] = (VEC){0};
                    continue;
                }
                const REAL *src = base + a * s2 + b * s3;
                int e = 0;
                for (; e < ew; ++e) memcpy(dst + e, src + e * s4, sizeof(VEC));
                for (; e < m[2]; ++e) dst[e] = (VEC){0};
            }
        return;
    }
    const int vol = m[0] * m[1] * m[2];
    if (lanes < VL || ed < m[0] || eh < m[1] || ew < m[2])
        for (int p = 0; p < vol; ++p) patch[p] = (VEC){0};
    REAL *pr = (REAL *)patch;
    for (int l = 0; l < lanes; ++l) {
        const REAL *src = base + l * gs[1];
        for (int a = 0; a < ed; ++a)
            for (int b = 0; b < eh; ++b) {
                const REAL *row = src + a * s2 + b * s3;
                REAL *dst = pr + (size_t)((a * m[1] + b) * m[2]) * VL + l;
                if (s4 == 1)
                    for (int e = 0; e < ew; ++e) dst[(size_t)e * VL] = row[e];
                else
                    for (int e = 0; e < ew; ++e) dst[(size_t)e * VL] = row[e * s4];
            }
    }
}

/* gxcl[n][d][h][w][cg VL : (cg + 1) VL] += the alpha^3 patch of tile (n, o),
 * the parts inside the volume. */
static inline void FN(fb_scatter_in)(const wino_geom *g, REAL *gxcl, wino_index CV, wino_index n,
                                     const wino_index o[3], wino_index cg, const int a[3], const VEC *patch)
{
    int lo[3], hi[3];
    wino_index start[3];
    wino_geom_patch_window(g, o, a, start, lo, hi);
    const wino_index s2 = g->W * CV, s1 = g->H * s2, s0 = g->D * s1;
    REAL *base = gxcl + n * s0 + cg * VL;
    for (int p = lo[0]; p < hi[0]; ++p)
        for (int q = lo[1]; q < hi[1]; ++q) {
            const VEC *src = patch + (p * a[1] + q) * a[2];
            REAL *dst = base + (start[0] + p) * s1 + (start[1] + q) * s2 + start[2] * CV;
            for (int e = lo[2]; e < hi[2]; ++e) {
                VEC v;
                memcpy(&v, dst + e * CV, sizeof v);
                v += src[e];
                memcpy(dst + e * CV, &v, sizeof v);
            }
        }
}

/* Bytes of scratch wino_fused_backward needs with nthreads threads: the
 * forward's per-thread layout (V holds V, then gV; M holds gM). */
size_t FN(wino_fused_backward_scratch_bytes)(const PLAN *pin, const PLAN *pout, wino_index tb, wino_index CV,
                                             wino_index KV, int nthreads)
{
    return wino_scratch_total(FN(fused_thread_bytes)(pin, pout, tb, CV, KV), nthreads);
}

/* One block of nt tiles (ids in `tiles`) through the backward stages. */
static void FN(fb_block)(const wino_geom *g, const wino_index *tiles, wino_index nt, wino_index tb,
                         const REAL *gy, const wino_index gs[5], wino_index K, wino_index KV,
                         const REAL *xcl, const wino_index xcs[4], wino_index C, wino_index CV,
                         const REAL *Ut, const PLAN *pin, const PLAN *pout, REAL *gxcl, REAL *part,
                         VEC *patch, VEC *t1, VEC *t2, REAL *V, REAL *gM)
{
    const int nk = pin->nk;
    (void)tb;
    const wino_index ldv = (wino_index)nk * CV, ldm = (wino_index)nk * KV;
    /* output adjoint: grad_y -> gM[r][i][KV] */
    for (wino_index r = 0; r < nt; ++r) {
        wino_index n, o[3];
        wino_geom_tile_origin(g, tiles[r], &n, o);
        for (wino_index kg = 0; kg < KV / VL; ++kg) {
            FN(fb_gather_out)(g, gy, gs, n, o, kg, pout->n, patch);
            FN(expandv_strided)(pout, patch, (VEC *)(gM + r * ldm + kg * VL), KV / VL, t1, t2);
        }
    }
    if (part) {
        /* input transform: x -> V[r][i][CV] */
        for (wino_index r = 0; r < nt; ++r) {
            wino_index n, o[3];
            wino_geom_tile_origin(g, tiles[r], &n, o);
            for (wino_index cg = 0; cg < CV / VL; ++cg) {
                FN(fused_gather)(g, xcl, xcs, n, o, cg, pin->a, patch);
                FN(expandv_strided)(pin, patch, (VEC *)(V + r * ldv + cg * VL), CV / VL, t1, t2);
            }
        }
        /* P[i] (C x KV) += V[i]^T (C x nt) @ gM[i] (nt x KV), tiles in order */
        for (int i = 0; i < nk; ++i)
            FN(fb_gemm)(C, KV, nt, V + (wino_index)i * CV, 1, ldv, gM + (wino_index)i * KV, ldm,
                        part + (wino_index)i * CV * KV, KV, 1,
                        wino_prefetch_of(part + (wino_index)((i + 1) % nk) * CV * KV, sizeof(REAL) * (size_t)CV * KV));
    }
    if (gxcl) {
        /* gV[i] (nt x CV) = gM[i] (nt x K) @ Ut[i] (K x CV), into V's space */
        for (int i = 0; i < nk; ++i)
            FN(fb_gemm)(nt, CV, K, gM + (wino_index)i * KV, ldm, 1, Ut + (wino_index)i * KV * CV, CV,
                        V + (wino_index)i * CV, ldv, 0,
                        wino_prefetch_of(Ut + (wino_index)((i + 1) % nk) * KV * CV, sizeof(REAL) * (size_t)KV * CV));
        /* input adjoint, tiles in order */
        for (wino_index r = 0; r < nt; ++r) {
            wino_index n, o[3];
            wino_geom_tile_origin(g, tiles[r], &n, o);
            for (wino_index cg = 0; cg < CV / VL; ++cg) {
                FN(contractv_strided)(pin, (const VEC *)(V + r * ldv + cg * VL), CV / VL, patch, t1, t2);
                FN(fb_scatter_in)(g, gxcl, CV, n, o, cg, pin->a, patch);
            }
        }
    }
}

/* The fused backward pass over all tiles.
 *   gy, gs    : grad_y (N, K, Do, Ho, Wo) with element strides gs; KV is K
 *               rounded up to a multiple of VL
 *   xcl, xcs  : channels-last x with CV (multiple of VL) channels, padding
 *               lanes zero (read only for grad_U)
 *   Ut        : [nk][KV][CV] with Ut[i][k][c] = U[kept[i]][k][c], zero padded
 *               (read only for grad_x)
 *   gxcl      : grad_x, contiguous [N][D][H][W][CV]; overwritten; NULL: no grad_x
 *   parts     : nchunks x [nk][CV][KV] partial sums; NULL: no grad_U
 *   gU        : (P, K, C) contiguous; rows kept[i] overwritten (others untouched)
 *   scratch   : caller-owned, sized by wino_fused_backward_scratch_bytes
 * Returns WINO_ESCRATCH when scratch is smaller than
 * wino_fused_backward_scratch_bytes, WINO_EARG for operands it cannot take
 * (tb above WINO_FUSED_BACKWARD_TB_MAX, unpadded channel counts, ...).
 */
int FN(wino_fused_backward)(const wino_geom *g, const REAL *gy, const wino_index gs[5], wino_index KV,
                            const REAL *xcl, const wino_index xcs[4], wino_index CV, const REAL *Ut,
                            const PLAN *pin, const PLAN *pout, REAL *gxcl, REAL *parts, wino_index nchunks,
                            REAL *gU, wino_index tb, void *scratch, size_t scratch_bytes, int nthreads)
{
    const size_t per_thread = FN(fused_thread_bytes)(pin, pout, tb, CV, KV);
    if (!scratch || scratch_bytes < wino_scratch_total(per_thread, nthreads)) return WINO_ESCRATCH;
    if (tb < 1 || tb > WINO_FUSED_BACKWARD_TB_MAX || nchunks < 1 || CV % VL || KV % VL || g->C > CV ||
        g->K > KV || pout->nk != pin->nk || (parts && (!xcl || !gU)) || (gxcl && !Ut))
        return WINO_EARG;
    const wino_index C = g->C, K = g->K;
    const wino_index nt0 = g->nt[0], nt1 = g->nt[1], nt2 = g->nt[2];
    const wino_index R = g->N * nt0 * nt1;
    /* colours per axis: ceil(alpha / m), no more than the tiles on the axis */
    wino_index qd = (g->a[0] + g->m[0] - 1) / g->m[0], qh = (g->a[1] + g->m[1] - 1) / g->m[1];
    if (qd > nt0) qd = nt0;
    if (qh > nt1) qh = nt1;
    if (qd < 1) qd = 1;
    if (qh < 1) qh = 1;
    const int nk = pin->nk;
    const size_t part_len = (size_t)nk * (size_t)CV * (size_t)KV;
    size_t sz[6];
    FN(fused_sizes)(pin, pout, tb, CV, KV, sz);
#pragma omp parallel num_threads(nthreads)
    {
        const FN(fused_scratch) f = FN(fused_scratch_at)((char *)wino_scratch_slice(scratch, per_thread, wino_thread_num()), sz);
        VEC *patch = f.patch, *t1 = f.t1, *t2 = f.t2;
        REAL *V = f.V, *gM = f.M;
        wino_index tiles[WINO_FUSED_BACKWARD_TB_MAX];
        if (gxcl) {
            const wino_index rows = g->N * g->D * g->H, len = g->W * CV;
#pragma omp for schedule(static)
            for (wino_index row = 0; row < rows; ++row) memset(gxcl + row * len, 0, sizeof(REAL) * (size_t)len);
        }
        if (parts) {
#pragma omp for schedule(static)
            for (wino_index j = 0; j < nchunks; ++j) memset(parts + (size_t)j * part_len, 0, sizeof(REAL) * part_len);
        }
        for (wino_index phase = 0; phase < qd * qh; ++phase) {
            const wino_index cd = phase / qh, ch = phase % qh;
#pragma omp for schedule(dynamic, 1)
            for (wino_index j = 0; j < nchunks; ++j) {
                REAL *part = parts ? parts + (size_t)j * part_len : NULL;
                const wino_index rb = j * R / nchunks, re = (j + 1) * R / nchunks;
                wino_index nt = 0;
                for (wino_index row = rb; row < re; ++row) {
                    const wino_index th = row % nt1, td = (row / nt1) % nt0;
                    if (td % qd != cd || th % qh != ch) continue;
                    for (wino_index tw = 0; tw < nt2; ++tw) {
                        tiles[nt++] = row * nt2 + tw;
                        if (nt == tb) {
                            FN(fb_block)(g, tiles, nt, tb, gy, gs, K, KV, xcl, xcs, C, CV, Ut, pin, pout,
                                         gxcl, part, patch, t1, t2, V, gM);
                            nt = 0;
                        }
                    }
                }
                if (nt)
                    FN(fb_block)(g, tiles, nt, tb, gy, gs, K, KV, xcl, xcs, C, CV, Ut, pin, pout, gxcl,
                                 part, patch, t1, t2, V, gM);
            }
        }
        if (parts) {
            /* gU[kept[i]][k][c] = sum over chunks, in chunk order */
#pragma omp for schedule(static)
            for (int i = 0; i < nk; ++i) {
                REAL *dst = gU + (wino_index)pin->kept[i] * K * C;
                const REAL *src = parts + (size_t)i * CV * KV;
                for (wino_index c = 0; c < C; ++c)
                    for (wino_index k = 0; k < K; ++k) {
                        REAL acc = src[c * KV + k];
                        for (wino_index j = 1; j < nchunks; ++j) acc += src[(size_t)j * part_len + c * KV + k];
                        dst[k * C + c] = acc;
                    }
            }
        }
    }
    return 0;
}

/* dst (N, C, D, H, W) with element strides ds = src[n][d][h][w][c], c < C,
 * from a contiguous channels-last src with CP channels. */
int FN(wino_from_channels_last)(const wino_geom *g, const REAL *src, wino_index CP, REAL *dst,
                                const wino_index ds[5], int nthreads)
{
    const wino_index rows = g->N * g->D * g->H, W = g->W, C = g->C;
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (wino_index row = 0; row < rows; ++row) {
        const wino_index h = row % g->H, nd = row / g->H, d = nd % g->D, n = nd / g->D;
        const REAL *s = src + row * W * CP;
        REAL *o = dst + n * ds[0] + d * ds[2] + h * ds[3];
        for (wino_index c = 0; c < C; ++c) {
            REAL *oc = o + c * ds[1];
            for (wino_index w = 0; w < W; ++w) oc[w * ds[4]] = s[w * CP + c];
        }
    }
    return 0;
}

#undef FB_MR

#include "template_names_end.h"
