/*
 * wino3d_cpu.c -- instantiates the CPU templates for float and double, and
 * the few type-independent entry points (compiled once).
 */
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "wino3d_cpu.h"
#include "simd.h"
#define WINO_CX_DEFINE  /* the constant transforms live in this translation unit */
#include "const_transforms.h"
#include "scratch.h"
#include "gemm.h"
#include "blocked.h"
#include "wino3d_fusion.h"

#define WINO_REAL float
#define WINO_SUFFIX f
#include "tile_lanes.template.h"
#include "affine.template.h"
#include "gemm.template.h"
#include "filter.template.h"
#include "product_w.template.h"
#include "blocked.template.h"
#include "fused.template.h"
#include "fused_backward.template.h"
#undef WINO_REAL
#undef WINO_SUFFIX

#define WINO_REAL double
#define WINO_SUFFIX d
#include "tile_lanes.template.h"
#include "affine.template.h"
#include "gemm.template.h"
#include "filter.template.h"
#include "product_w.template.h"
#include "blocked.template.h"
#include "fused.template.h"
#include "fused_backward.template.h"
#undef WINO_REAL
#undef WINO_SUFFIX

int wino_has_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int wino_max_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

int wino_num_procs(void)
{
#ifdef _OPENMP
    return omp_get_num_procs();
#else
    return 1;
#endif
}

void wino_tile_origin(const wino_geom *g, wino_index t, wino_index out[4])
{
    wino_geom_tile_origin(g, t, &out[0], out + 1);
}

int wino_simd_bytes(void)
{
    return WINO_VBYTES;
}

wino_gemm_blocking_t wino_gemm_blocking(int itemsize)
{
    const int dbl = itemsize == 8;
    wino_gemm_blocking_t b;
    b.mr = WINO_GEMM_MR;
    b.nr = dbl ? WINO_GEMM_NR_d : WINO_GEMM_NR_f;
    b.kc = WINO_GEMM_KC;
    b.mc = WINO_GEMM_MC;
    b.nc = dbl ? WINO_GEMM_NC_d : WINO_GEMM_NC_f;
    return b;
}

wino_blocked_chunks_t wino_blocked_chunks(void)
{
    wino_blocked_chunks_t c;
    c.k_chunk = WINO_BLOCKED_K_CHUNK;
    c.tile_multiple = WINO_BLOCKED_TILE_MULTIPLE;
    return c;
}

int wino_tile_moments(const wino_geom *g, const double *part, wino_index KP, double *mean, double *var,
                      int nthreads)
{
    const wino_index K = g->K, tps = g->nt[0] * g->nt[1] * g->nt[2];
    enum { KB = 16 }; /* channels merged together: contiguous rows of part */
    if (K > KP) return WINO_EARG;
    const wino_index nkb = (K + KB - 1) / KB;
    /* one (sample, channel block) per iteration, its tiles in order: the
     * same merges in the same order for any number of threads.  A few
     * hundred thousand merges take a fraction of a millisecond on one core;
     * waking a second thread on a loaded machine took 8-15 ms (measured:
     * C32 at 64^3, F(4^3), 2 threads), so small jobs run on one. */
    const wino_index work = g->N * tps * K;
    if (work < ((wino_index)1 << 22)) nthreads = 1;
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (wino_index job = 0; job < g->N * nkb; ++job) {
        const wino_index n = job / nkb, k0 = job % nkb * KB, kn = K - k0 < KB ? K - k0 : KB;
        double cnt[KB], m[KB], m2[KB];
        for (int k = 0; k < KB; ++k) cnt[k] = m[k] = m2[k] = 0;
        for (wino_index t = n * tps; t < (n + 1) * tps; ++t) {
            wino_index tn, o[3], e = 1;
            wino_geom_tile_origin(g, t, &tn, o);
            for (int ax = 0; ax < 3; ++ax) e *= g->od[ax] - o[ax] < g->m[ax] ? g->od[ax] - o[ax] : g->m[ax];
            const double *pm = part + t * 2 * KP + k0, *pq = pm + KP;
            for (wino_index k = 0; k < kn; ++k) wino_moments_merge(cnt + k, m + k, m2 + k, (double)e, pm[k], pq[k]);
        }
        for (wino_index k = 0; k < kn; ++k) {
            mean[n * K + k0 + k] = m[k];
            var[n * K + k0 + k] = cnt[k] > 0 ? m2[k] / cnt[k] : 0;
        }
    }
    return 0;
}
