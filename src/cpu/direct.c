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
#if WINO_VBYTES == 64
#define WINO_DIRECT_RB 12
#else
#define WINO_DIRECT_RB 6
#endif
/* Position-lanes block: 4 output channels (broadcast) x PV vectors along w,
 * 12 of the 16 ymm registers (24 of the 32 zmm) plus PV input vectors. */
#define WINO_DIRECT_KB 4
#if WINO_VBYTES == 64
#define WINO_DIRECT_PV 6
#else
#define WINO_DIRECT_PV 3
#endif
/* Largest lane count of any build: the slab's row pitch is sized for it. */
#define WINO_DIRECT_MAX_VL 16

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

int wino_direct_variant(const wino_geom *g, int itemsize)
{
    /* lanes computed per output row: a vector-padded row, or the flattened
     * row with its rw - 1 padding columns */
    const wino_index vl = wino_direct_lanes(itemsize), Wo = g->od[2];
    const wino_index wl = (Wo + vl - 1) / vl * vl, kl = Wo + g->r[2] - 1;
    return wl <= kl ? WINO_DIRECT_WLANES : WINO_DIRECT_KLANES;
}

/* Elements of one padded input plane: rows long enough for either variant. */
static wino_index wino_direct_plane_len(const wino_geom *g)
{
    const wino_index Wo = g->od[2], rw = g->r[2];
    const wino_index wl = (Wo + WINO_DIRECT_MAX_VL - 1) / WINO_DIRECT_MAX_VL * WINO_DIRECT_MAX_VL + rw - 1;
    const wino_index kl = Wo + rw - 1;
    return (g->od[1] + g->r[1] - 1) * (wl > kl ? wl : kl);
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
