/*
 * scratch.h -- caller-owned scratch (type-independent, compiled once).
 *
 * No kernel allocates: each takes `scratch` (any address) and
 * `scratch_bytes` from the caller and splits it into one 64-byte-aligned
 * slice per thread.  The caller sizes it with the kernel's
 * *_scratch_bytes(..., nthreads) query, which is
 *     wino_scratch_total(per-thread bytes, nthreads)
 * (the slices, each rounded up to 64 bytes, plus 64 bytes of alignment
 * slack).  A kernel given less returns WINO_ESCRATCH before touching
 * anything.
 */
#ifndef WINO3D_SCRATCH_H
#define WINO3D_SCRATCH_H

#include <stddef.h>
#include <stdint.h>

#include "wino3d_common.h"
#ifdef _OPENMP
#include <omp.h>
#endif

#define WINO_SCRATCH_ALIGN 64

static inline size_t wino_scratch_round(size_t n)
{
    return (n + WINO_SCRATCH_ALIGN - 1) / WINO_SCRATCH_ALIGN * WINO_SCRATCH_ALIGN;
}

static inline size_t wino_scratch_total(size_t per_thread, int nthreads)
{
    return wino_scratch_round(per_thread) * (size_t)(nthreads < 1 ? 1 : nthreads) + WINO_SCRATCH_ALIGN;
}

/* The slice of thread `tid` (0 <= tid < nthreads) in a buffer sized by
 * wino_scratch_total(per_thread, nthreads). */
static inline void *wino_scratch_slice(void *scratch, size_t per_thread, int tid)
{
    const uintptr_t base = ((uintptr_t)scratch + WINO_SCRATCH_ALIGN - 1) & ~(uintptr_t)(WINO_SCRATCH_ALIGN - 1);
    return (void *)(base + wino_scratch_round(per_thread) * (size_t)tid);
}

/* A stride of n elements (itemsize bytes each) between rows that a kernel
 * touches together, one cache line longer where n * itemsize is a multiple
 * of 1 KiB: rows that far apart share one or two sets of the L1 and evict
 * each other (the fused pipeline's tiles of V and M; the positions of the
 * in-product transform's slab). */
static inline wino_index wino_spread_stride(wino_index n, size_t itemsize)
{
    return (n * (wino_index)itemsize) % 1024 ? n : n + WINO_SCRATCH_ALIGN / (wino_index)itemsize;
}

static inline int wino_thread_num(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

#endif /* WINO3D_SCRATCH_H */
