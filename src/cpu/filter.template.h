/*
 * filter.template.h -- the filter transform and its adjoint (K * C small
 * kernels, one a job, scalar per-tile maths).
 *
 * Template (see template_names.h): define WINO_REAL and WINO_SUFFIX.
 */
#include "template_names.h"

/* Filter transforms are small (K * C kernels): one kernel per job, scalar.
 * adjoint = 0: U[:, j] = expand(w[j]);  adjoint = 1: w[j] = contract(U[:, j]). */
static int FN(filter_any)(const REAL *src, wino_index KC, const PLAN *pl, REAL *dst, int adjoint,
                          int nthreads)
{
    const wino_index rsz = (wino_index)pl->n[0] * pl->n[1] * pl->n[2];
    const size_t t = (size_t)SCRATCH_LEN(pl);
    int failed = 0;
#pragma omp parallel num_threads(nthreads) reduction(|| : failed)
    {
        REAL *t1 = (REAL *)malloc(sizeof(REAL) * 2 * t);
#pragma omp for schedule(static)
        for (wino_index j = 0; j < KC; ++j) {
            if (!t1) { failed = 1; continue; }
            if (adjoint) CONTRACT(pl, src + j, KC, dst + j * rsz, t1, t1 + t);
            else EXPAND(pl, src + j * rsz, dst + j, KC, t1, t1 + t);
        }
        free(t1);
    }
    return failed ? -1 : 0;
}

int FN(wino_filter)(const REAL *w, wino_index KC, const PLAN *pl, REAL *U, int nthreads)
{
    return FN(filter_any)(w, KC, pl, U, 0, nthreads);
}

int FN(wino_filter_adjoint)(const REAL *gU, wino_index KC, const PLAN *pl, REAL *gw, int nthreads)
{
    return FN(filter_any)(gU, KC, pl, gw, 1, nthreads);
}

#include "template_names_end.h"
