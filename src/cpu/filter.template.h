/*
 * filter.template.h -- the filter transform and its adjoint, vectorized over
 * (output channel, input channel) pairs.
 *
 * U is (positions, K * C): for a fixed position the K * C pairs are
 * contiguous.  A group is VL consecutive pairs: their kernels are transposed
 * into a patch of vectors (tap-major, one lane a pair) and the per-tile maths
 * of wino3d_tile.template.h runs once on the vectors -- the same code,
 * instantiated on vectors, as the blocked pipeline's transforms, with the
 * common filter shapes (3-wide kernels to alpha 4..8) unrolled, and those
 * to alpha 4 and 5 computed column by column in registers
 * (gen_const_transforms.py: wino_cx_expandc_*).  A job is G groups: their
 * transformed values are kept in a per-thread buffer, position-major (the
 * expand writes at a stride of G vectors), and written position by
 * position, each as one contiguous run of G * VL values (one memcpy; one
 * core, 64x64 kernels to F(2^3): 205 -> 175 us).  G is WINO_FILTER_GROUPS
 * for a streamed U and half of it otherwise, where the buffer then stays in
 * L1 (16 KB of float vectors): 64x64 kernels to F(2^3), with the column
 * expand and the gather below, one core 177 -> 122 us, two 102 -> 71 us
 * (alternating processes); a streamed U wants the longer runs (F(4^3) to
 * F(6^3) slower with 8 groups).  (Writing each group's
 * VL values per position would touch every position's row -- K * C
 * elements apart, a power of two for the usual channel counts, so all of
 * them fall in one cache set -- for a few bytes each.)  A U of
 * WINO_STREAM_BYTES or more is written with streaming stores (two threads,
 * out= U: 64x64 kernels to F(4^3), 3.5 MB, 0.70 -> 0.44 ms; to F(6^3)
 * 1.47 -> 1.0 ms; 256x256 to F(6^3), 134 MB, 20.3 -> 12.5 ms; 64x64 to
 * F(2^3), 1 MB, alike either way).  The adjoint reads
 * the same runs and transposes the contracted patches back.
 *
 * Scratch: a thread's tile scratch and the values of one job's groups, in
 * the caller's memory, sized by wino_filter_scratch_bytes(pl, nthreads)
 * (scratch.h).
 *
 * Template (see template_names.h): define WINO_REAL and WINO_SUFFIX; needs
 * tile_lanes.template.h of the same type.
 */
#include "template_names.h"

#define WINO_FILTER_GROUPS 16
/* (r, alpha) of the filter shapes with literal sizes: 3-wide kernels. */
#define WINO_FILTER_CASES(X) X(3, 4) X(3, 5) X(3, 6) X(3, 7) X(3, 8)

/* the kept values written to out[i * ostride] */
static void FN(filter_expandv)(const PLAN *pl, const VEC *in, VEC *out, wino_index ostride, VEC *t1, VEC *t2)
{
    if (FN(dense_cube)(pl) && (WINO_CAT(wino_cx_expandc_, WINO_SUFFIX)(pl->X[0], in, out, ostride) ||
                               WINO_CAT(wino_cx_expand_, WINO_SUFFIX)(pl->X[0], in, out, ostride, t1, t2))) return;
    const int n = pl->n[0], a = pl->a[0];
    if (pl->n[1] == n && pl->n[2] == n && pl->a[1] == a && pl->a[2] == a) {
#define X(N_, A_) \
        if (n == N_ && a == A_) { EXPAND_DIMS_V(pl, N_, N_, N_, A_, A_, A_, in, out, ostride, t1, t2); return; }
        WINO_FILTER_CASES(X)
#undef X
    }
    FN(expandv_strided)(pl, in, out, ostride, t1, t2);
}

static void FN(filter_contractv)(const PLAN *pl, const VEC *in, VEC *out, VEC *t1, VEC *t2)
{
    if (FN(dense_cube)(pl) && WINO_CAT(wino_cx_contract_, WINO_SUFFIX)(pl->X[0], in, 1, out, t1, t2)) return;
    const int n = pl->n[0], a = pl->a[0];
    if (pl->n[1] == n && pl->n[2] == n && pl->a[1] == a && pl->a[2] == a) {
#define X(N_, A_) \
        if (n == N_ && a == A_) { CONTRACT_DIMS_V(pl, N_, N_, N_, A_, A_, A_, in, 1, out, t1, t2); return; }
        WINO_FILTER_CASES(X)
#undef X
    }
    FN(contractv)(pl, in, out, t1, t2);
}

/* The patch of a group: lane e of patch[t] is src[e * rsz + t], the kernel
 * of the group's e-th pair (pairs contiguous, rsz taps each), for e < lanes;
 * zero past them.  A whole group is one lanes x rsz matrix in memory: its
 * VL x VL blocks go through a register transpose, loaded straight into
 * registers, the last rsz % VL taps as one more block ending at the last
 * tap (overlapping the previous one; rsz >= VL), else one value at a time.
 * (A memcpy into a vector array went through the stack as 16-byte halves
 * that the transpose's whole-vector loads could not forward from, and the
 * taps past the last block one at a time: one core, 64x64 kernels to
 * F(2^3), 177 -> 156 us.) */
static void FN(filter_gather)(const REAL *src, wino_index rsz, int lanes, VEC *patchv)
{
    REAL *patch = (REAL *)patchv;
    if (lanes == VL && rsz >= VL) {
        VEC in[VL];
        for (wino_index t0 = 0;; t0 += VL) {
            if (t0 + VL > rsz) t0 = rsz - VL;
            for (int e = 0; e < VL; ++e) in[e] = *(const VEC_U *)(src + e * rsz + t0);
            TRANSPOSE(in, patchv + t0);
            if (t0 + VL == rsz) return;
        }
    }
    memset(patch, 0, sizeof(VEC) * (size_t)rsz);
    for (int e = 0; e < lanes; ++e) {
        const REAL *wj = src + e * rsz;
        for (wino_index t = 0; t < rsz; ++t) patch[t * VL + e] = wj[t];
    }
}

/* Bytes of one thread's scratch: tile scratch, then a job's values: nk x
 * WINO_FILTER_GROUPS vectors ([position][group] forward, [group][position]
 * in the adjoint). */
static size_t FN(filter_thread_bytes)(const PLAN *pl)
{
    return FN(tile_scratch_bytes)(pl) + sizeof(VEC) * WINO_FILTER_GROUPS * (size_t)(pl->nk > 0 ? pl->nk : 1);
}

size_t FN(wino_filter_scratch_bytes)(const PLAN *pl, int nthreads)
{
    return wino_scratch_total(FN(filter_thread_bytes)(pl), nthreads);
}

/* adjoint = 0: U[:, j] = expand(w[j]);  adjoint = 1: w[j] = contract(U[:, j]). */
static int FN(filter_any)(const REAL *src, wino_index KC, const PLAN *pl, REAL *dst, int adjoint,
                          void *scratch, size_t scratch_bytes, int nthreads)
{
    const wino_index rsz = (wino_index)pl->n[0] * pl->n[1] * pl->n[2];
    const int nk = pl->nk;
    const size_t per_thread = FN(filter_thread_bytes)(pl);
    if (!scratch || scratch_bytes < wino_scratch_total(per_thread, nthreads)) return WINO_ESCRATCH;
    const int stream = !adjoint && (size_t)nk * (size_t)KC * sizeof(REAL) >= WINO_STREAM_BYTES;
    /* groups per job: the runs of a streamed U are longer */
    const int G = stream || adjoint ? WINO_FILTER_GROUPS : WINO_FILTER_GROUPS / 2;
    const wino_index ng = (KC + VL - 1) / VL, nb = (ng + G - 1) / G;
#pragma omp parallel num_threads(nthreads)
    {
        char *mem = (char *)wino_scratch_slice(scratch, per_thread, wino_thread_num());
        FN(tile_scratch) s = FN(tile_scratch_at)(mem, pl);
        VEC *vals = (VEC *)(mem + FN(tile_scratch_bytes)(pl));
#pragma omp for schedule(static)
        for (wino_index bi = 0; bi < nb; ++bi) {
            const wino_index g0 = bi * G;
            const int ngb = ng - g0 < G ? (int)(ng - g0) : G;
            const wino_index j0 = g0 * VL;
            /* pairs [j0, j0 + len): full groups, the last one maybe partial */
            const wino_index len = KC - j0 < (wino_index)ngb * VL ? KC - j0 : (wino_index)ngb * VL;
            if (!adjoint) {
                /* vals[i][b]: a position's values of all groups are one run */
                for (int b = 0; b < ngb; ++b) {
                    const int lanes = len - b * VL < VL ? (int)(len - b * VL) : VL;
                    FN(filter_gather)(src + (j0 + b * VL) * rsz, rsz, lanes, s.patch);
                    FN(filter_expandv)(pl, s.patch, vals + b, G, s.t1, s.t2);
                }
                if (stream)
                    for (int i = 0; i < nk; ++i)
                        wino_stream_copy(dst + i * KC + j0, vals + (size_t)i * G, sizeof(REAL) * (size_t)len);
                else
                    for (int i = 0; i < nk; ++i)
                        memcpy(dst + i * KC + j0, vals + (size_t)i * G, sizeof(REAL) * (size_t)len);
            } else {
                for (int i = 0; i < nk; ++i) {
                    const REAL *row = src + i * KC + j0;
                    for (int b = 0; b < ngb; ++b) {
                        const int lanes = len - b * VL < VL ? (int)(len - b * VL) : VL;
                        LOAD_LANES(vals + (size_t)b * nk + i, row + b * VL, lanes);
                    }
                }
                for (int b = 0; b < ngb; ++b) {
                    const int lanes = len - b * VL < VL ? (int)(len - b * VL) : VL;
                    FN(filter_contractv)(pl, vals + (size_t)b * nk, s.patch, s.t1, s.t2);
                    const REAL *patch = (const REAL *)s.patch;
                    for (int e = 0; e < lanes; ++e) {
                        REAL *wj = dst + (j0 + b * VL + e) * rsz;
                        for (wino_index t = 0; t < rsz; ++t) wj[t] = patch[t * VL + e];
                    }
                }
            }
        }
        if (stream) wino_stream_fence();
    }
    return 0;
}

int FN(wino_filter)(const REAL *w, wino_index KC, const PLAN *pl, REAL *U,
                    void *scratch, size_t scratch_bytes, int nthreads)
{
    return FN(filter_any)(w, KC, pl, U, 0, scratch, scratch_bytes, nthreads);
}

int FN(wino_filter_adjoint)(const REAL *gU, wino_index KC, const PLAN *pl, REAL *gw,
                            void *scratch, size_t scratch_bytes, int nthreads)
{
    return FN(filter_any)(gU, KC, pl, gw, 1, scratch, scratch_bytes, nthreads);
}

#undef WINO_FILTER_GROUPS
#undef WINO_FILTER_CASES
#include "template_names_end.h"
