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
#include <string.h>

#include "wino3d_common.h"
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#define WINO_CACHE_LINE 64
#define WINO_SCRATCH_ALIGN WINO_CACHE_LINE /* slices start on a cache line */

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
    return (n * (wino_index)itemsize) % 1024 ? n : n + WINO_CACHE_LINE / (wino_index)itemsize;
}

/* Results written once and at least this large go past the caches
 * (wino_stream_copy): 2 MiB, below the shared L3, where a result read back
 * soon after may still be cached. */
#define WINO_STREAM_BYTES ((size_t)2 << 20)

/* Copy `bytes` from src to dst with non-temporal stores where the target
 * has them (x86-64: 16-byte streaming stores from dst's first 16-byte
 * boundary, the unaligned head and tail copied as usual): for results
 * larger than the caches, the stores skip the read for ownership that an
 * ordinary store makes of each destination line (a third of the traffic of
 * writing them).  Each thread calls wino_stream_fence() after its last
 * streaming store, before another thread may read the data. */
static inline void wino_stream_copy(void *dst, const void *src, size_t bytes)
{
#if defined(__SSE2__)
    char *d = (char *)dst;
    const char *s = (const char *)src;
    size_t head = (16 - (uintptr_t)d % 16) % 16;
    if (head > bytes) head = bytes;
    memcpy(d, s, head);
    d += head, s += head, bytes -= head;
    for (; bytes >= 16; bytes -= 16, d += 16, s += 16)
        _mm_stream_si128((__m128i *)d, _mm_loadu_si128((const __m128i *)s));
    memcpy(d, s, bytes);
#else
    memcpy(dst, src, bytes);
#endif
}

static inline void wino_stream_fence(void)
{
#if defined(__SSE2__)
    _mm_sfence();
#endif
}

/* Software prefetch of the next operand while a product runs: the caller
 * hands each micro-kernel call the next of `bytes` bytes at `base`, `lines`
 * cache lines per call (NULL once all are covered, or without a base); the
 * micro-kernel prefetches one line per step of its reduction.  Used where
 * the products stream weights that the caches do not keep between blocks
 * (the fused pipelines re-read every position's weights for each block of
 * a few tiles: 3.5 MB for C64 F(4^3), missed in L3 when the machine is
 * busy). */
typedef struct {
    const char *base;
    size_t bytes, off;
} wino_prefetch;

static inline wino_prefetch wino_prefetch_of(const void *base, size_t bytes)
{
    wino_prefetch p = {(const char *)base, bytes, 0};
    return p;
}

static inline const char *wino_prefetch_next(wino_prefetch *p, wino_index lines)
{
    const char *at = p->base && p->off < p->bytes ? p->base + p->off : NULL;
    p->off += (size_t)lines * WINO_CACHE_LINE;
    return at;
}

/* one line of a prefetch run (a no-op without one) */
#define WINO_PREFETCH_LINE(pf_, step_) \
    do { if (pf_) __builtin_prefetch((pf_) + (size_t)(step_) * WINO_CACHE_LINE, 0, 2); } while (0)

static inline int wino_thread_num(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

#endif /* WINO3D_SCRATCH_H */
