/*
 * tile_lanes.template.h -- the per-tile maths of wino3d_tile.template.h run
 * on VL tiles at once (one SIMD lane a tile), with the pieces every CPU
 * pipeline needs around it: the unrolled cubic cases, the per-thread tile
 * scratch (laid out in the caller's memory) and the gather of an input
 * patch.
 *
 * Template (see template_names.h): define WINO_REAL and WINO_SUFFIX.
 */
#include "template_names.h"

/* Cubic tiles (same n and alpha on every axis) of the common sizes get a
 * copy of the per-tile math with literal sizes, so the compiler unrolls it;
 * everything else runs the generic loops.  (n, alpha): input transforms use
 * (alpha, alpha), output transforms (m, alpha). */
#define WINO_CUBIC_CASES(X) \
    X(2, 4) X(4, 4) X(3, 5) X(5, 5) X(4, 6) X(6, 6) X(5, 7) X(7, 7) X(6, 8) X(8, 8) X(3, 3) X(2, 2)

/* Whether a plan keeps every position and uses one matrix on all three axes:
 * then, if that matrix is one of const_transforms.h's tables (the Cython
 * side swaps equal matrices for them), the constant straight-line code runs. */
static inline int FN(dense_cube)(const PLAN *pl)
{
    return pl->nk == pl->a[0] * pl->a[1] * pl->a[2] && pl->X[1] == pl->X[0] && pl->X[2] == pl->X[0];
}

/* expand with the kept values written to out[i * ostride] */
static void FN(expandv_strided)(const PLAN *pl, const VEC *in, VEC *out, wino_index ostride,
                                VEC *t1, VEC *t2)
{
    if (FN(dense_cube)(pl) && WINO_CAT(wino_cx_expand_, WINO_SUFFIX)(pl->X[0], in, out, ostride, t1, t2))
        return;
    const int n = pl->n[0], a = pl->a[0];
    if (pl->n[1] == n && pl->n[2] == n && pl->a[1] == a && pl->a[2] == a) {
#define X(N_, A_) \
        if (n == N_ && a == A_) { EXPAND_DIMS_V(pl, N_, N_, N_, A_, A_, A_, in, out, ostride, t1, t2); return; }
        WINO_CUBIC_CASES(X)
#undef X
    }
    EXPAND_DIMS_V(pl, pl->n[0], pl->n[1], pl->n[2], pl->a[0], pl->a[1], pl->a[2], in, out, ostride, t1, t2);
}

/* contract with the kept values read from in[i * istride] */
static void FN(contractv_strided)(const PLAN *pl, const VEC *in, wino_index istride, VEC *out,
                                  VEC *t1, VEC *t2)
{
    if (FN(dense_cube)(pl) && WINO_CAT(wino_cx_contract_, WINO_SUFFIX)(pl->X[0], in, istride, out, t1, t2))
        return;
    const int n = pl->n[0], a = pl->a[0];
    if (pl->n[1] == n && pl->n[2] == n && pl->a[1] == a && pl->a[2] == a) {
#define X(N_, A_) \
        if (n == N_ && a == A_) { CONTRACT_DIMS_V(pl, N_, N_, N_, A_, A_, A_, in, istride, out, t1, t2); return; }
        WINO_CUBIC_CASES(X)
#undef X
    }
    CONTRACT_DIMS_V(pl, pl->n[0], pl->n[1], pl->n[2], pl->a[0], pl->a[1], pl->a[2], in, istride, out, t1, t2);
}

static inline void FN(expandv)(const PLAN *pl, const VEC *in, VEC *out, VEC *t1, VEC *t2)
{
    FN(expandv_strided)(pl, in, out, 1, t1, t2);
}

static inline void FN(contractv)(const PLAN *pl, const VEC *in, VEC *out, VEC *t1, VEC *t2)
{
    FN(contractv_strided)(pl, in, 1, out, t1, t2);
}

/* Per-thread tile scratch.  The block kernels process VL tiles at once: one
 * SIMD lane per tile, so the per-tile transform math of
 * wino3d_tile.template.h runs on vectors (patch, t1, t2 and the kept values
 * `col` are arrays of VEC).  The memory is the caller's (scratch.h). */
typedef struct {
    VEC *patch, *t1, *t2, *col;
} FN(tile_scratch);

/* Bytes of one thread's tile scratch for plan pl. */
static size_t FN(tile_scratch_bytes)(const PLAN *pl)
{
    size_t patch = 1;
    for (int ax = 0; ax < 3; ++ax) patch *= (size_t)(pl->n[ax] > pl->a[ax] ? pl->n[ax] : pl->a[ax]);
    const size_t t = (size_t)SCRATCH_LEN(pl);
    return sizeof(VEC) * (patch + 2 * t + (size_t)pl->nk + 1);
}

/* Lay the tile scratch out in `mem` (tile_scratch_bytes(pl) bytes, aligned). */
static FN(tile_scratch) FN(tile_scratch_at)(void *mem, const PLAN *pl)
{
    size_t patch = 1;
    for (int ax = 0; ax < 3; ++ax) patch *= (size_t)(pl->n[ax] > pl->a[ax] ? pl->n[ax] : pl->a[ax]);
    const size_t t = (size_t)SCRATCH_LEN(pl);
    FN(tile_scratch) s;
    s.patch = (VEC *)mem;
    s.t1 = s.patch + patch;
    s.t2 = s.t1 + t;
    s.col = s.t2 + t;
    return s;
}

/* Gather the alpha_d x alpha_h x alpha_w input patch of tile t into lane j
 * of `patch`, with zeros outside x (padding and overhang).  The valid range
 * of each axis is computed once, so the copy loops carry no bounds checks. */
static inline void FN(gather_patch)(const wino_geom *g, const REAL *x, wino_index c, wino_index t,
                                    const int a[3], REAL *patch, int j)
{
    wino_index n, o[3];
    wino_geom_tile_origin(g, t, &n, o);
    const REAL *xc = x + n * g->xs[0] + c * g->xs[1];
    int lo[3], hi[3];
    wino_index start[3];
    wino_geom_patch_window(g, o, a, start, lo, hi);
    const int ah = a[1], aw = a[2];
    const wino_index sw = g->xs[4];
    for (int p = 0; p < a[0]; ++p) {
        const int okd = p >= lo[0] && p < hi[0];
        for (int q = 0; q < ah; ++q) {
            REAL *dst = patch + (size_t)((p * ah + q) * aw) * VL + j;
            if (!okd || q < lo[1] || q >= hi[1]) {
                for (int e = 0; e < aw; ++e) dst[(size_t)e * VL] = 0;
                continue;
            }
            const REAL *src = xc + (start[0] + p) * g->xs[2] + (start[1] + q) * g->xs[3] + start[2] * sw;
            int e = 0;
            for (; e < lo[2]; ++e) dst[(size_t)e * VL] = 0;
            if (sw == 1)
                for (; e < hi[2]; ++e) dst[(size_t)e * VL] = src[e];
            else
                for (; e < hi[2]; ++e) dst[(size_t)e * VL] = src[e * sw];
            for (; e < aw; ++e) dst[(size_t)e * VL] = 0;
        }
    }
}

#undef WINO_CUBIC_CASES
#include "template_names_end.h"
