/*
 * blocked.template.h -- the blocked pipeline: each stage runs over a whole
 * block of tiles before the next starts (stage map in wino3d_cpu.h).
 *
 *   wino_input_block           x      -> V   [nk][C][tb]
 *   wino_output_block          M      -> y   (+ bias), a chunk of K channels
 *   wino_output_adjoint_block  grad_y -> grad_M
 *   wino_input_adjoint_block   grad_V -> grad_x (accumulated)
 *
 * Jobs are (channel, group of VL tiles).  Scratch: each thread uses a tile
 * scratch (tile_lanes.template.h) in its slice of the caller's buffer, sized
 * by wino_blocked_scratch_bytes(pl, nthreads); a smaller buffer gives
 * WINO_ESCRATCH.
 * Template (see template_names.h): define WINO_REAL and WINO_SUFFIX; needs
 * tile_lanes.template.h of the same type.
 */
#include "template_names.h"

size_t FN(wino_blocked_scratch_bytes)(const PLAN *pl, int nthreads)
{
    return wino_scratch_total(FN(tile_scratch_bytes)(pl), nthreads);
}

/* ---------------------------------------------------------------- input */
int FN(wino_input_block)(const wino_geom *g, const REAL *x, const PLAN *pl,
                         wino_index t0, wino_index tb, REAL *V,
                         void *scratch, size_t scratch_bytes, int nthreads)
{
    const wino_index C = g->C, ng = (tb + VL - 1) / VL;
    const int nk = pl->nk;
    const size_t per_thread = FN(tile_scratch_bytes)(pl);
    if (!scratch || scratch_bytes < wino_scratch_total(per_thread, nthreads)) return WINO_ESCRATCH;
#pragma omp parallel num_threads(nthreads)
    {
        const FN(tile_scratch) s = FN(tile_scratch_at)(wino_scratch_slice(scratch, per_thread, wino_thread_num()), pl);
#pragma omp for schedule(static)
        for (wino_index job = 0; job < C * ng; ++job) {
            const wino_index c = job / ng, gi = job - c * ng, tt = gi * VL;
            const int lanes = tb - tt < VL ? (int)(tb - tt) : VL;
            REAL *patch = (REAL *)s.patch;
            if (lanes < VL) memset(patch, 0, sizeof(VEC) * (size_t)pl->a[0] * pl->a[1] * pl->a[2]);
            for (int j = 0; j < lanes; ++j) FN(gather_patch)(g, x, c, t0 + tt + j, pl->a, patch, j);
            FN(expandv)(pl, s.patch, s.col, s.t1, s.t2);
            for (int i = 0; i < nk; ++i) STORE_LANES(V + (i * C + c) * tb + tt, s.col + i, lanes);
        }
    }
    return 0;
}

/* --------------------------------------------------------------- output */
int FN(wino_output_block)(const wino_geom *g, const REAL *M, wino_index K, wino_index ky,
                          const PLAN *pl, wino_index t0, wino_index tb,
                          const REAL *bias, REAL *y,
                          void *scratch, size_t scratch_bytes, int nthreads)
{
    const int md = pl->n[0], mh = pl->n[1], mw = pl->n[2], nk = pl->nk;
    const wino_index Do = g->od[0], Ho = g->od[1], Wo = g->od[2], ng = (tb + VL - 1) / VL;
    const size_t per_thread = FN(tile_scratch_bytes)(pl);
    if (!scratch || scratch_bytes < wino_scratch_total(per_thread, nthreads)) return WINO_ESCRATCH;
#pragma omp parallel num_threads(nthreads)
    {
        const FN(tile_scratch) s = FN(tile_scratch_at)(wino_scratch_slice(scratch, per_thread, wino_thread_num()), pl);
#pragma omp for schedule(static)
        for (wino_index job = 0; job < K * ng; ++job) {
            const wino_index k = job / ng, gi = job - k * ng, tt = gi * VL;
            const int lanes = tb - tt < VL ? (int)(tb - tt) : VL;
            for (int i = 0; i < nk; ++i) LOAD_LANES(s.col + i, M + (i * K + k) * tb + tt, lanes);
            FN(contractv)(pl, s.col, s.patch, s.t1, s.t2);
            const REAL b = bias ? bias[k] : (REAL)0;
            const REAL *patch = (const REAL *)s.patch;
            for (int j = 0; j < lanes; ++j) {
                wino_index n, o[3];
                wino_geom_tile_origin(g, t0 + tt + j, &n, o);
                REAL *yk = y + ((n * ky + k) * Do) * Ho * Wo;
                for (int a = 0; a < md && o[0] + a < Do; ++a)
                    for (int c = 0; c < mh && o[1] + c < Ho; ++c) {
                        REAL *dst = yk + ((o[0] + a) * Ho + o[1] + c) * Wo + o[2];
                        const REAL *src = patch + (size_t)((a * mh + c) * mw) * VL + j;
                        for (int e = 0; e < mw && o[2] + e < Wo; ++e) dst[e] = src[(size_t)e * VL] + b;
                    }
            }
        }
    }
    return 0;
}

/* ------------------------------------------------------- output adjoint */
int FN(wino_output_adjoint_block)(const wino_geom *g, const REAL *gy, wino_index K,
                                  const PLAN *pl, wino_index t0, wino_index tb,
                                  REAL *gM, void *scratch, size_t scratch_bytes, int nthreads)
{
    const int md = pl->n[0], mh = pl->n[1], mw = pl->n[2], nk = pl->nk;
    const wino_index Do = g->od[0], Ho = g->od[1], Wo = g->od[2], ng = (tb + VL - 1) / VL;
    const size_t per_thread = FN(tile_scratch_bytes)(pl);
    if (!scratch || scratch_bytes < wino_scratch_total(per_thread, nthreads)) return WINO_ESCRATCH;
#pragma omp parallel num_threads(nthreads)
    {
        const FN(tile_scratch) s = FN(tile_scratch_at)(wino_scratch_slice(scratch, per_thread, wino_thread_num()), pl);
#pragma omp for schedule(static)
        for (wino_index job = 0; job < K * ng; ++job) {
            const wino_index k = job / ng, gi = job - k * ng, tt = gi * VL;
            const int lanes = tb - tt < VL ? (int)(tb - tt) : VL;
            REAL *patch = (REAL *)s.patch;
            memset(patch, 0, sizeof(VEC) * (size_t)md * mh * mw);
            for (int j = 0; j < lanes; ++j) {
                wino_index n, o[3];
                wino_geom_tile_origin(g, t0 + tt + j, &n, o);
                const REAL *gk = gy + ((n * K + k) * Do) * Ho * Wo;
                for (int a = 0; a < md && o[0] + a < Do; ++a)
                    for (int c = 0; c < mh && o[1] + c < Ho; ++c) {
                        REAL *dst = patch + (size_t)((a * mh + c) * mw) * VL + j;
                        const REAL *src = gk + ((o[0] + a) * Ho + o[1] + c) * Wo + o[2];
                        for (int e = 0; e < mw && o[2] + e < Wo; ++e) dst[(size_t)e * VL] = src[e];
                    }
            }
            FN(expandv)(pl, s.patch, s.col, s.t1, s.t2);
            for (int i = 0; i < nk; ++i) STORE_LANES(gM + (i * K + k) * tb + tt, s.col + i, lanes);
        }
    }
    return 0;
}

/* -------------------------------------------------------- input adjoint */
/* gx is contiguous (N, C, D, H, W) and is accumulated into.  One thread owns
 * a channel and adds the block's tiles in order, so overlapping patches are
 * summed in a fixed order whatever the number of threads. */
int FN(wino_input_adjoint_block)(const wino_geom *g, const REAL *gV,
                                 const PLAN *pl, wino_index t0, wino_index tb,
                                 REAL *gx, void *scratch, size_t scratch_bytes, int nthreads)
{
    const wino_index C = g->C, D = g->D, H = g->H, W = g->W;
    const int ad = pl->a[0], ah = pl->a[1], aw = pl->a[2], nk = pl->nk;
    const size_t per_thread = FN(tile_scratch_bytes)(pl);
    if (!scratch || scratch_bytes < wino_scratch_total(per_thread, nthreads)) return WINO_ESCRATCH;
#pragma omp parallel num_threads(nthreads)
    {
        const FN(tile_scratch) s = FN(tile_scratch_at)(wino_scratch_slice(scratch, per_thread, wino_thread_num()), pl);
#pragma omp for schedule(static)
        for (wino_index c = 0; c < C; ++c) {
            for (wino_index tt = 0; tt < tb; tt += VL) {
                const int lanes = tb - tt < VL ? (int)(tb - tt) : VL;
                for (int i = 0; i < nk; ++i) LOAD_LANES(s.col + i, gV + (i * C + c) * tb + tt, lanes);
                FN(contractv)(pl, s.col, s.patch, s.t1, s.t2);
                const REAL *patch = (const REAL *)s.patch;
                for (int j = 0; j < lanes; ++j) {
                    wino_index n, o[3];
                    wino_geom_tile_origin(g, t0 + tt + j, &n, o);
                    REAL *gc = gx + (n * C + c) * D * H * W;
                    for (int a = 0; a < ad; ++a) {
                        const wino_index id = o[0] + a - g->pad[0];
                        if (id < 0 || id >= D) continue;
                        for (int b = 0; b < ah; ++b) {
                            const wino_index ih = o[1] + b - g->pad[1];
                            if (ih < 0 || ih >= H) continue;
                            REAL *dst = gc + (id * H + ih) * W;
                            const REAL *src = patch + (size_t)((a * ah + b) * aw) * VL + j;
                            for (int e = 0; e < aw; ++e) {
                                const wino_index iw = o[2] + e - g->pad[2];
                                if (iw >= 0 && iw < W) dst[iw] += src[(size_t)e * VL];
                            }
                        }
                    }
                }
            }
        }
    }
    return 0;
}

#include "template_names_end.h"
