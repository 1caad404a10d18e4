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
 * extensions lower to whatever the target has). */
#if defined(__AVX512F__)
#define WINO_VBYTES 64
#else
#define WINO_VBYTES 32
#endif

typedef float wino_vf __attribute__((vector_size(WINO_VBYTES)));
typedef double wino_vd __attribute__((vector_size(WINO_VBYTES)));
#define WINO_VL_f (WINO_VBYTES / 4)
#define WINO_VL_d (WINO_VBYTES / 8)

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
