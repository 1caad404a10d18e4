/*
 * wino3d_cpu.c -- instantiates the CPU kernels for float and double.
 */
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "wino3d_cpu.h"

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

/* Micro-kernel shape: MR rows x (2 * VL) columns of C in registers.  With
 * AVX-512 a float micro-tile is 12 x 32 (24 zmm accumulators); otherwise
 * the vectors are 256-bit and the tile is 6 x 16 (12 ymm accumulators). */
#if defined(__AVX512F__)
#define WINO_VBYTES 64
#define MR_f 12
#define MR_d 12
#else
#define WINO_VBYTES 32
#define MR_f 6
#define MR_d 6
#endif

/* SIMD instantiations of the per-tile math: one lane per tile. */

typedef float wino_vf __attribute__((vector_size(WINO_VBYTES)));
typedef double wino_vd __attribute__((vector_size(WINO_VBYTES)));
#define WINO_REAL float
#define WINO_VALUE wino_vf
#define WINO_VZERO ((wino_vf){0})
#define WINO_SUFFIX fv
#define WINO_PLAN_SUFFIX f
#include "wino3d_tile.h"
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
#include "wino3d_tile.h"
#undef WINO_REAL
#undef WINO_VALUE
#undef WINO_VZERO
#undef WINO_SUFFIX
#undef WINO_PLAN_SUFFIX

#define R float
#define S f
#define VL (WINO_VBYTES / 4)
#include "wino3d_cpu_impl.h"
#define FN(name) WINO_CAT(WINO_CAT(name, _), S)
#define VEC WINO_CAT(wino_v, S)
#define PLAN WINO_CAT(wino_plan_, S)
#define SCRATCH_LEN WINO_CAT(wino_scratch_len_, S)
#include "cpu/fused.template.h"
#undef FN
#undef VEC
#undef PLAN
#undef SCRATCH_LEN
#undef R
#undef S
#undef VL

#define R double
#define S d
#define VL (WINO_VBYTES / 8)
#include "wino3d_cpu_impl.h"
#define FN(name) WINO_CAT(WINO_CAT(name, _), S)
#define VEC WINO_CAT(wino_v, S)
#define PLAN WINO_CAT(wino_plan_, S)
#define SCRATCH_LEN WINO_CAT(wino_scratch_len_, S)
#include "cpu/fused.template.h"
#undef FN
#undef VEC
#undef PLAN
#undef SCRATCH_LEN
#undef R
#undef S
#undef VL

int wino_simd_bytes(void) { return WINO_VBYTES; }

void wino_tile_origin(const wino_geom *g, wino_index t, wino_index out[4])
{
    tile_origin_f(g, t, &out[0], out + 1);
}
