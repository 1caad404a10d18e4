/*
 * direct.c -- instantiates the direct convolution (direct.template.h) for
 * float and double, and its type-independent size queries.
 */
#include <stdlib.h>
#include <string.h>

#include "simd.h"
#include "direct.h"

/* Register block: 2 vectors of output channels x WINO_DIRECT_RB positions,
 * 24 of the 32 zmm registers with AVX-512, 12 of the 16 ymm otherwise. */
#if defined(__AVX512F__)
#define WINO_DIRECT_RB 12
#else
#define WINO_DIRECT_RB 6
#endif

#define WINO_REAL float
#define WINO_SUFFIX f
#include "direct.template.h"
#undef WINO_REAL
#undef WINO_SUFFIX

#define WINO_REAL double
#define WINO_SUFFIX d
#include "direct.template.h"
#undef WINO_REAL
#undef WINO_SUFFIX

int wino_direct_lanes(int itemsize)
{
    return itemsize == 8 ? WINO_VL_d : WINO_VL_f;
}

wino_index wino_direct_packed_len(const wino_geom *g, int itemsize)
{
    const wino_index vl = wino_direct_lanes(itemsize);
    return (g->K + vl - 1) / vl * vl * g->C * g->r[0] * g->r[1] * g->r[2];
}

static wino_index wino_direct_plane_len(const wino_geom *g)
{
    return (g->od[1] + g->r[1] - 1) * (g->od[2] + g->r[2] - 1);
}

wino_index wino_direct_slab_planes(const wino_geom *g, wino_index budget_elems)
{
    const wino_index per_plane = g->C * wino_direct_plane_len(g);
    wino_index nd = per_plane > 0 ? budget_elems / per_plane - (g->r[0] - 1) : 1;
    if (nd > g->od[0]) nd = g->od[0];
    return nd < 1 ? 1 : nd;
}

wino_index wino_direct_scratch_len(const wino_geom *g, wino_index slab_planes)
{
    return g->C * (slab_planes + g->r[0] - 1) * wino_direct_plane_len(g);
}
