/*
 * filter.template.h -- the filter transform and its adjoint (K * C small
 * kernels, one a job, scalar per-tile maths).
 *
 * Scratch: two per-tile buffers a thread in the caller's memory, sized by
 * wino_filter_scratch_bytes(pl, nthreads) (scratch.h).
 *
 * Template (see template_names.h): define WINO_REAL and WINO_SUFFIX.
 */
#include "template_names.h"

/* Filter transforms are small (K * C kernels): one kernel per job, scalar.
 * adjoint = 0: U[:, j] = expand(w[j]);  adjoint = 1: w[j] = contract(U[:, j]). */
size_t FN(wino_filter_scratch_bytes)(const PLAN *pl, int nthreads)
{
    return wino_scratch_total(sizeof(REAL) * 2 * (size_t)SCRATCH_LEN(pl), nthreads);
}

static int FN(filter_any)(const REAL *src, wino_index KC, const PLAN *pl, REAL *dst, int adjoint,
                          void *scratch, size_t scratch_bytes, int nthreads)
{
    const wino_index rsz = (wino_index)pl->n[0] * pl->n[1] * pl->n[2];
    const size_t t = (size_t)SCRATCH_LEN(pl), per_thread = sizeof(REAL) * 2 * t;
    if (!scratch || scratch_bytes < wino_scratch_total(per_thread, nthreads)) return WINO_ESCRATCH;
#pragma omp parallel num_threads(nthreads)
    {
        REAL *t1 = (REAL *)wino_scratch_slice(scratch, per_thread, wino_thread_num());
#pragma omp for schedule(static)
        for (wino_index j = 0; j < KC; ++j) {
            if (adjoint) CONTRACT(pl, src + j, KC, dst + j * rsz, t1, t1 + t);
            else EXPAND(pl, src + j * rsz, dst + j, KC, t1, t1 + t);
        }
    }
    return 0;
}

int FN(wino_filter)(const REAL *w, wino_index KC, const PLAN *pl, REAL *U,
                    void *scratch, size_t scratch_bytes, int nthreads)
{
    return FN(filter_any)(w, KC, pl, U, 0, scratch, scratch_bytes, nthreads);
}

int FN(wino_filter_adjoint)(const REAL *gU, wino_index KC, const PLAN *pl, REAL *gw,
                            void *scratch, size_t scratch_bytes, int nthreads)
{
    return FN(filter_any)(gU, KC, pl, gw, 1, scratch, scratch_bytes, nthreads);
}

#include "template_names_end.h"
