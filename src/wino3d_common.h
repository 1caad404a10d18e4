/*
 * wino3d_common.h -- what the C (src/cpu/) and CUDA (src/cuda/) builds share:
 * portability macros, the index type and the geometry of one convolution.
 *
 * WINO_HD marks per-tile functions that run on the host and on the device:
 * __host__ __device__ under nvcc/NVRTC, nothing in the C build.
 */
#ifndef WINO3D_COMMON_H
#define WINO3D_COMMON_H

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define WINO_HD __host__ __device__
#define WINO_INLINE __forceinline__
#define WINO_RESTRICT __restrict__
#else
#define WINO_HD
#if defined(__GNUC__)
#define WINO_INLINE static inline __attribute__((always_inline))
#else
#define WINO_INLINE static inline
#endif
#define WINO_RESTRICT restrict
#endif

#ifdef __CUDACC_RTC__
typedef long long wino_index;  /* no <stdint.h> under NVRTC */
#else
#include <stdint.h>
typedef int64_t wino_index;    /* 64-bit: element counts can exceed 2^31 */
#endif

#define WINO_CAT_(a, b) a##b
#define WINO_CAT(a, b) WINO_CAT_(a, b)

/* Geometry of one convolution, by name in every language: filled field by
 * field from pywino3d._core.geometry.Geometry.c_fields() (the Cython wrapper
 * pywino3d._backends.cpu._ext._cpu.CGeom for the CPU; the NumPy record of GEOM_DTYPE passed by
 * value to the CUDA kernels).  Every field is 64-bit, so the layout has no
 * padding and is the same under C, C++ and NVRTC; a test compares it with
 * GEOM_DTYPE field by field. */
typedef struct {
    wino_index N, C, K;         /* batch, input and output channels */
    wino_index D, H, W;         /* input extent (unpadded) */
    wino_index xs[5];           /* strides of x in elements (N, C, D, H, W) */
    wino_index pad[3];          /* front padding per axis */
    wino_index od[3];           /* output extent per axis */
    wino_index m[3];            /* output tile per axis */
    wino_index r[3];            /* kernel size per axis */
    wino_index a[3];            /* alpha = m + r - 1 per axis */
    wino_index nt[3];           /* tiles per axis */
} wino_geom;

/* Tile t -> batch index n and the first output index o[axis].  Tiles are
 * numbered in C order over (n, tile_d, tile_h, tile_w). */
WINO_HD WINO_INLINE void wino_geom_tile_origin(const wino_geom *g, wino_index t, wino_index *n,
                                               wino_index o[3])
{
    const wino_index tw = t % g->nt[2];
    t /= g->nt[2];
    const wino_index th = t % g->nt[1];
    t /= g->nt[1];
    const wino_index td = t % g->nt[0];
    *n = t / g->nt[0];
    o[0] = td * g->m[0];
    o[1] = th * g->m[1];
    o[2] = tw * g->m[2];
}

/* The input patch (a[ax] voxels per axis) of the tile whose output origin is
 * o: start[ax] is the input index of its first voxel (o - pad), and patch
 * indices [lo[ax], hi[ax]) lie inside the volume (the rest is padding). */
WINO_HD WINO_INLINE void wino_geom_patch_window(const wino_geom *g, const wino_index o[3], const int a[3],
                                                wino_index start[3], int lo[3], int hi[3])
{
    const wino_index ext[3] = {g->D, g->H, g->W};
    for (int ax = 0; ax < 3; ++ax) {
        start[ax] = o[ax] - g->pad[ax];
        const wino_index l = -start[ax], h = ext[ax] - start[ax];
        lo[ax] = l < 0 ? 0 : (l > a[ax] ? a[ax] : (int)l);
        hi[ax] = h < lo[ax] ? lo[ax] : (h > a[ax] ? a[ax] : (int)h);
    }
}

#endif /* WINO3D_COMMON_H */
