/*
 * simd.h -- the SIMD layer of the CPU kernels: vector width, vector types,
 * lane load/store, and the per-tile maths (wino3d_tile.template.h)
 * instantiated on vectors that hold one value of VL tiles (one lane a tile).
 *
 * Per type (suffix f or d): the vector type wino_v<S>, its lane count
 * WINO_VL_<S>, wino_load_lanes_<S> / wino_store_lanes_<S>, and the vector
 * per-tile maths wino_expand_dims_<S>v / wino_contract_dims_<S>v.
 */
#ifndef WINO3D_SIMD_H
#define WINO3D_SIMD_H

#include <string.h>

#include "wino3d_common.h"
#include "wino3d_tile.h"

/* Bytes of one vector: 512-bit with AVX-512, 256-bit otherwise (GCC vector
 * extensions lower to whatever the target has).  WINO_FORCE_VBYTES=64 builds
 * the 16-lane kernels on any target (GCC splits each vector operation in
 * two): the tests run them that way on machines without AVX-512. */
#if defined(WINO_FORCE_VBYTES)
#define WINO_VBYTES WINO_FORCE_VBYTES
#elif defined(__AVX512F__)
#define WINO_VBYTES 64
#else
#define WINO_VBYTES 32
#endif

typedef float wino_vf __attribute__((vector_size(WINO_VBYTES)));
typedef double wino_vd __attribute__((vector_size(WINO_VBYTES)));
#define WINO_VL_f (WINO_VBYTES / 4)
#define WINO_VL_d (WINO_VBYTES / 8)
/* The same vectors at the alignment of one element: dereferencing a pointer
 * to one is a single unaligned vector load or store (a memcpy into a
 * wino_v<S> array element can go through the stack and stall). */
typedef float wino_vf_u __attribute__((vector_size(WINO_VBYTES), aligned(4)));
typedef double wino_vd_u __attribute__((vector_size(WINO_VBYTES), aligned(8)));

/* Copy lanes [0, lanes) of v to dst (contiguous); load them back, zeroing
 * the lanes past `lanes`. */
#define WINO_LANE_HELPERS(S, R)                                                           \
static inline void wino_store_lanes_##S(R *dst, const wino_v##S *v, int lanes)            \
{                                                                                         \
    if (lanes == WINO_VL_##S) memcpy(dst, v, sizeof(wino_v##S));                          \
    else memcpy(dst, v, sizeof(R) * (size_t)lanes);                                       \
}                                                                                         \
static inline void wino_load_lanes_##S(wino_v##S *v, const R *src, int lanes)             \
{                                                                                         \
    if (lanes == WINO_VL_##S) {                                                           \
        memcpy(v, src, sizeof(wino_v##S));                                                \
    } else {                                                                              \
        *v = (wino_v##S){0};                                                              \
        memcpy(v, src, sizeof(R) * (size_t)lanes);                                        \
    }                                                                                     \
}
WINO_LANE_HELPERS(f, float)
WINO_LANE_HELPERS(d, double)
#undef WINO_LANE_HELPERS

/* Transpose a VL x VL block held as VL vectors: out[j] lane i = in[i] lane j.
 * With 256-bit vectors this is the three-stage unpack / shuffle / permute
 * network (24 shuffles for float, 8 for double), written with the compiler's
 * generic two-vector shuffle so that it lowers to whatever the target has;
 * other widths take the plain loop.  Used where channels-in-lanes data meets
 * a channels-first array (the channels-last copy, the output stores). */
#if defined(__clang__)
#define WINO_SHUFFLE2(T, a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
typedef int wino_vi32x8 __attribute__((vector_size(32)));
typedef long long wino_vi64x4 __attribute__((vector_size(32)));
#define WINO_SHUFFLE2(T, a, b, ...) __builtin_shuffle(a, b, (T){__VA_ARGS__})
#endif

static inline void wino_transpose_f(const wino_vf *in, wino_vf *out)
{
#if WINO_VBYTES == 32
    wino_vf a[8], b[8];
    for (int i = 0; i < 4; ++i) {
        a[2 * i] = WINO_SHUFFLE2(wino_vi32x8, in[2 * i], in[2 * i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
        a[2 * i + 1] = WINO_SHUFFLE2(wino_vi32x8, in[2 * i], in[2 * i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
    }
    for (int h = 0; h < 8; h += 4) {
        b[h] = WINO_SHUFFLE2(wino_vi32x8, a[h], a[h + 2], 0, 1, 8, 9, 4, 5, 12, 13);
        b[h + 1] = WINO_SHUFFLE2(wino_vi32x8, a[h], a[h + 2], 2, 3, 10, 11, 6, 7, 14, 15);
        b[h + 2] = WINO_SHUFFLE2(wino_vi32x8, a[h + 1], a[h + 3], 0, 1, 8, 9, 4, 5, 12, 13);
        b[h + 3] = WINO_SHUFFLE2(wino_vi32x8, a[h + 1], a[h + 3], 2, 3, 10, 11, 6, 7, 14, 15);
    }
    for (int j = 0; j < 4; ++j) {
        out[j] = WINO_SHUFFLE2(wino_vi32x8, b[j], b[j + 4], 0, 1, 2, 3, 8, 9, 10, 11);
        out[j + 4] = WINO_SHUFFLE2(wino_vi32x8, b[j], b[j + 4], 4, 5, 6, 7, 12, 13, 14, 15);
    }
#else
    for (int j = 0; j < WINO_VL_f; ++j)
        for (int i = 0; i < WINO_VL_f; ++i) out[j][i] = in[i][j];
#endif
}

static inline void wino_transpose_d(const wino_vd *in, wino_vd *out)
{
#if WINO_VBYTES == 32
    const wino_vd a0 = WINO_SHUFFLE2(wino_vi64x4, in[0], in[1], 0, 4, 2, 6);
    const wino_vd a1 = WINO_SHUFFLE2(wino_vi64x4, in[0], in[1], 1, 5, 3, 7);
    const wino_vd a2 = WINO_SHUFFLE2(wino_vi64x4, in[2], in[3], 0, 4, 2, 6);
    const wino_vd a3 = WINO_SHUFFLE2(wino_vi64x4, in[2], in[3], 1, 5, 3, 7);
    out[0] = WINO_SHUFFLE2(wino_vi64x4, a0, a2, 0, 1, 4, 5);
    out[1] = WINO_SHUFFLE2(wino_vi64x4, a1, a3, 0, 1, 4, 5);
    out[2] = WINO_SHUFFLE2(wino_vi64x4, a0, a2, 2, 3, 6, 7);
    out[3] = WINO_SHUFFLE2(wino_vi64x4, a1, a3, 2, 3, 6, 7);
#else
    for (int j = 0; j < WINO_VL_d; ++j)
        for (int i = 0; i < WINO_VL_d; ++i) out[j][i] = in[i][j];
#endif
}

/* The per-tile maths on vectors (suffixes fv and dv, scalar plans f and d). */
#define WINO_REAL float
#define WINO_VALUE wino_vf
#define WINO_VZERO ((wino_vf){0})
#define WINO_SUFFIX fv
#define WINO_PLAN_SUFFIX f
#include "wino3d_tile.template.h"
#undef WINO_REAL
#undef WINO_VALUE
#undef WINO_VZERO
#undef WINO_SUFFIX
#undef WINO_PLAN_SUFFIX
#define WINO_REAL double
#define WINO_VALUE wino_vd
#define WINO_VZERO ((wino_vd){0})
#define WINO_SUFFIX dv
#define WINO_PLAN_SUFFIX d
#include "wino3d_tile.template.h"
#undef WINO_REAL
#undef WINO_VALUE
#undef WINO_VZERO
#undef WINO_SUFFIX
#undef WINO_PLAN_SUFFIX

#endif /* WINO3D_SIMD_H */
