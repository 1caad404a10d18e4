/*
 * wino3d_cpu_impl.h -- block kernels, templated on the floating type.
 * Included by wino3d_cpu.c with R (type), S (suffix) and VL (SIMD lanes of
 * the micro-kernel) defined.
 */
#define PLAN WINO_CAT(wino_plan_, S)
#define EXPAND WINO_CAT(wino_expand_, S)
#define CONTRACT WINO_CAT(wino_contract_, S)
#define SCRATCH_LEN WINO_CAT(wino_scratch_len_, S)
#define FN(name) WINO_CAT(WINO_CAT(name, _), S)

#define VEC WINO_CAT(wino_v, S)
#define EXPAND_DIMS WINO_CAT(WINO_CAT(wino_expand_dims_, S), v)
#define CONTRACT_DIMS WINO_CAT(WINO_CAT(wino_contract_dims_, S), v)

/* Cubic tiles (same n and alpha on every axis) of the common sizes get a
 * copy of the per-tile math with literal sizes, so the compiler unrolls it;
 * everything else runs the generic loops.  (n, alpha): input transforms use
 * (alpha, alpha), output transforms (m, alpha). */
#define WINO_CUBIC_CASES(X) \
    X(2, 4) X(4, 4) X(3, 5) X(5, 5) X(4, 6) X(6, 6) X(5, 7) X(7, 7) X(6, 8) X(8, 8) X(3, 3) X(2, 2)

static void FN(expandv)(const PLAN *pl, const VEC *in, VEC *out, VEC *t1, VEC *t2)
{
    const int n = pl->n[0], a = pl->a[0];
    if (pl->n[1] == n && pl->n[2] == n && pl->a[1] == a && pl->a[2] == a) {
#define X(N_, A_) \
        if (n == N_ && a == A_) { EXPAND_DIMS(pl, N_, N_, N_, A_, A_, A_, in, out, 1, t1, t2); return; }
        WINO_CUBIC_CASES(X)
#undef X
    }
    EXPAND_DIMS(pl, pl->n[0], pl->n[1], pl->n[2], pl->a[0], pl->a[1], pl->a[2], in, out, 1, t1, t2);
}

static void FN(contractv)(const PLAN *pl, const VEC *in, VEC *out, VEC *t1, VEC *t2)
{
    const int n = pl->n[0], a = pl->a[0];
    if (pl->n[1] == n && pl->n[2] == n && pl->a[1] == a && pl->a[2] == a) {
#define X(N_, A_) \
        if (n == N_ && a == A_) { CONTRACT_DIMS(pl, N_, N_, N_, A_, A_, A_, in, 1, out, t1, t2); return; }
        WINO_CUBIC_CASES(X)
#undef X
    }
    CONTRACT_DIMS(pl, pl->n[0], pl->n[1], pl->n[2], pl->a[0], pl->a[1], pl->a[2], in, 1, out, t1, t2);
}

/* Per-thread scratch.  The block kernels process VL tiles at once: one SIMD
 * lane per tile, so the per-tile transform math of wino3d_tile.h runs on
 * vectors (patch, t1, t2 and the kept values `col` are arrays of VEC). */
typedef struct {
    VEC *patch, *t1, *t2, *col;
} FN(tile_scratch);

static int FN(scratch_alloc)(FN(tile_scratch) *s, const PLAN *pl)
{
    size_t patch = 1, alpha = 1;
    for (int ax = 0; ax < 3; ++ax) {
        patch *= (size_t)(pl->n[ax] > pl->a[ax] ? pl->n[ax] : pl->a[ax]);
        alpha *= (size_t)pl->a[ax];
    }
    const size_t t = (size_t)SCRATCH_LEN(pl);
    const size_t total = patch + 2 * t + (size_t)pl->nk + 1;
    s->patch = (VEC *)aligned_alloc(64, sizeof(VEC) * total);
    if (!s->patch) {
        s->t1 = s->t2 = s->col = NULL;
        return -1;
    }
    s->t1 = s->patch + patch;
    s->t2 = s->t1 + t;
    s->col = s->t2 + t;
    return 0;
}

/* Tile t -> (n, first output index per axis). */
static inline void FN(tile_origin)(const wino_geom *g, wino_index t, wino_index *n, wino_index o[3])
{
    wino_index tw = t % g->nt[2];
    t /= g->nt[2];
    wino_index th = t % g->nt[1];
    t /= g->nt[1];
    wino_index td = t % g->nt[0];
    *n = t / g->nt[0];
    o[0] = td * g->m[0];
    o[1] = th * g->m[1];
    o[2] = tw * g->m[2];
}

/* Copy lanes [0, lanes) of v to dst (contiguous). */
static inline void FN(store_lanes)(R *dst, const VEC *v, int lanes)
{
    if (lanes == VL) memcpy(dst, v, sizeof(VEC));
    else memcpy(dst, v, sizeof(R) * (size_t)lanes);
}

static inline void FN(load_lanes)(VEC *v, const R *src, int lanes)
{
    if (lanes == VL) {
        memcpy(v, src, sizeof(VEC));
    } else {
        *v = (VEC){0};
        memcpy(v, src, sizeof(R) * (size_t)lanes);
    }
}

/* Gather the alpha_d x alpha_h x alpha_w input patch of tile t into lane j
 * of `patch`, with zeros outside x (padding and overhang).  The valid range
 * of each axis is computed once, so the copy loops carry no bounds checks. */
static inline void FN(gather_patch)(const wino_geom *g, const R *x, wino_index c, wino_index t,
                                    const int a[3], R *patch, int j)
{
    wino_index n, o[3];
    FN(tile_origin)(g, t, &n, o);
    const R *xc = x + n * g->xs[0] + c * g->xs[1];
    const wino_index ext[3] = {g->D, g->H, g->W};
    int lo[3], hi[3];
    wino_index start[3];
    for (int ax = 0; ax < 3; ++ax) {
        start[ax] = o[ax] - g->pad[ax];
        wino_index l = -start[ax], h = ext[ax] - start[ax];
        lo[ax] = l < 0 ? 0 : (l > a[ax] ? a[ax] : (int)l);
        hi[ax] = h < lo[ax] ? lo[ax] : (h > a[ax] ? a[ax] : (int)h);
    }
    const int ah = a[1], aw = a[2];
    const wino_index sw = g->xs[4];
    for (int p = 0; p < a[0]; ++p) {
        const int okd = p >= lo[0] && p < hi[0];
        for (int q = 0; q < ah; ++q) {
            R *dst = patch + (size_t)((p * ah + q) * aw) * VL + j;
            if (!okd || q < lo[1] || q >= hi[1]) {
                for (int e = 0; e < aw; ++e) dst[(size_t)e * VL] = 0;
                continue;
            }
            const R *src = xc + (start[0] + p) * g->xs[2] + (start[1] + q) * g->xs[3] + start[2] * sw;
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

/* ---------------------------------------------------------------- input */
int FN(wino_input_block)(const wino_geom *g, const R *x, const PLAN *pl,
                         wino_index t0, wino_index tb, R *V, int nthreads)
{
    const wino_index C = g->C, ng = (tb + VL - 1) / VL;
    const int nk = pl->nk;
    int failed = 0;
#pragma omp parallel num_threads(nthreads) reduction(|| : failed)
    {
        FN(tile_scratch) s;
        const int ok = FN(scratch_alloc)(&s, pl) == 0;
#pragma omp for schedule(static)
        for (wino_index job = 0; job < C * ng; ++job) {
            if (!ok) { failed = 1; continue; }
            const wino_index c = job / ng, gi = job - c * ng, tt = gi * VL;
            const int lanes = tb - tt < VL ? (int)(tb - tt) : VL;
            R *patch = (R *)s.patch;
            if (lanes < VL) memset(patch, 0, sizeof(VEC) * (size_t)pl->a[0] * pl->a[1] * pl->a[2]);
            for (int j = 0; j < lanes; ++j) FN(gather_patch)(g, x, c, t0 + tt + j, pl->a, patch, j);
            FN(expandv)(pl, s.patch, s.col, s.t1, s.t2);
            for (int i = 0; i < nk; ++i) FN(store_lanes)(V + (i * C + c) * tb + tt, s.col + i, lanes);
        }
        free(s.patch);
    }
    return failed ? -1 : 0;
}

/* --------------------------------------------------------------- output */
int FN(wino_output_block)(const wino_geom *g, const R *M, wino_index K, wino_index ky,
                          const PLAN *pl, wino_index t0, wino_index tb,
                          const R *bias, R *y, int nthreads)
{
    const int md = pl->n[0], mh = pl->n[1], mw = pl->n[2], nk = pl->nk;
    const wino_index Do = g->od[0], Ho = g->od[1], Wo = g->od[2], ng = (tb + VL - 1) / VL;
    int failed = 0;
#pragma omp parallel num_threads(nthreads) reduction(|| : failed)
    {
        FN(tile_scratch) s;
        const int ok = FN(scratch_alloc)(&s, pl) == 0;
#pragma omp for schedule(static)
        for (wino_index job = 0; job < K * ng; ++job) {
            if (!ok) { failed = 1; continue; }
            const wino_index k = job / ng, gi = job - k * ng, tt = gi * VL;
            const int lanes = tb - tt < VL ? (int)(tb - tt) : VL;
            for (int i = 0; i < nk; ++i) FN(load_lanes)(s.col + i, M + (i * K + k) * tb + tt, lanes);
            FN(contractv)(pl, s.col, s.patch, s.t1, s.t2);
            const R b = bias ? bias[k] : (R)0;
            const R *patch = (const R *)s.patch;
            for (int j = 0; j < lanes; ++j) {
                wino_index n, o[3];
                FN(tile_origin)(g, t0 + tt + j, &n, o);
                R *yk = y + ((n * ky + k) * Do) * Ho * Wo;
                for (int a = 0; a < md && o[0] + a < Do; ++a)
                    for (int c = 0; c < mh && o[1] + c < Ho; ++c) {
                        R *dst = yk + ((o[0] + a) * Ho + o[1] + c) * Wo + o[2];
                        const R *src = patch + (size_t)((a * mh + c) * mw) * VL + j;
                        for (int e = 0; e < mw && o[2] + e < Wo; ++e) dst[e] = src[(size_t)e * VL] + b;
                    }
            }
        }
        free(s.patch);
    }
    return failed ? -1 : 0;
}

/* ------------------------------------------------------- output adjoint */
int FN(wino_output_adjoint_block)(const wino_geom *g, const R *gy, wino_index K,
                                  const PLAN *pl, wino_index t0, wino_index tb,
                                  R *gM, int nthreads)
{
    const int md = pl->n[0], mh = pl->n[1], mw = pl->n[2], nk = pl->nk;
    const wino_index Do = g->od[0], Ho = g->od[1], Wo = g->od[2], ng = (tb + VL - 1) / VL;
    int failed = 0;
#pragma omp parallel num_threads(nthreads) reduction(|| : failed)
    {
        FN(tile_scratch) s;
        const int ok = FN(scratch_alloc)(&s, pl) == 0;
#pragma omp for schedule(static)
        for (wino_index job = 0; job < K * ng; ++job) {
            if (!ok) { failed = 1; continue; }
            const wino_index k = job / ng, gi = job - k * ng, tt = gi * VL;
            const int lanes = tb - tt < VL ? (int)(tb - tt) : VL;
            R *patch = (R *)s.patch;
            memset(patch, 0, sizeof(VEC) * (size_t)md * mh * mw);
            for (int j = 0; j < lanes; ++j) {
                wino_index n, o[3];
                FN(tile_origin)(g, t0 + tt + j, &n, o);
                const R *gk = gy + ((n * K + k) * Do) * Ho * Wo;
                for (int a = 0; a < md && o[0] + a < Do; ++a)
                    for (int c = 0; c < mh && o[1] + c < Ho; ++c) {
                        R *dst = patch + (size_t)((a * mh + c) * mw) * VL + j;
                        const R *src = gk + ((o[0] + a) * Ho + o[1] + c) * Wo + o[2];
                        for (int e = 0; e < mw && o[2] + e < Wo; ++e) dst[(size_t)e * VL] = src[e];
                    }
            }
            FN(expandv)(pl, s.patch, s.col, s.t1, s.t2);
            for (int i = 0; i < nk; ++i) FN(store_lanes)(gM + (i * K + k) * tb + tt, s.col + i, lanes);
        }
        free(s.patch);
    }
    return failed ? -1 : 0;
}

/* -------------------------------------------------------- input adjoint */
/* gx is contiguous (N, C, D, H, W) and is accumulated into.  One thread owns
 * a channel and adds the block's tiles in order, so overlapping patches are
 * summed in a fixed order whatever the number of threads. */
int FN(wino_input_adjoint_block)(const wino_geom *g, const R *gV,
                                 const PLAN *pl, wino_index t0, wino_index tb,
                                 R *gx, int nthreads)
{
    const wino_index C = g->C, D = g->D, H = g->H, W = g->W;
    const int ad = pl->a[0], ah = pl->a[1], aw = pl->a[2], nk = pl->nk;
    int failed = 0;
#pragma omp parallel num_threads(nthreads) reduction(|| : failed)
    {
        FN(tile_scratch) s;
        const int ok = FN(scratch_alloc)(&s, pl) == 0;
#pragma omp for schedule(static)
        for (wino_index c = 0; c < C; ++c) {
            if (!ok) { failed = 1; continue; }
            for (wino_index tt = 0; tt < tb; tt += VL) {
                const int lanes = tb - tt < VL ? (int)(tb - tt) : VL;
                for (int i = 0; i < nk; ++i) FN(load_lanes)(s.col + i, gV + (i * C + c) * tb + tt, lanes);
                FN(contractv)(pl, s.col, s.patch, s.t1, s.t2);
                const R *patch = (const R *)s.patch;
                for (int j = 0; j < lanes; ++j) {
                    wino_index n, o[3];
                    FN(tile_origin)(g, t0 + tt + j, &n, o);
                    R *gc = gx + (n * C + c) * D * H * W;
                    for (int a = 0; a < ad; ++a) {
                        const wino_index id = o[0] + a - g->pad[0];
                        if (id < 0 || id >= D) continue;
                        for (int b = 0; b < ah; ++b) {
                            const wino_index ih = o[1] + b - g->pad[1];
                            if (ih < 0 || ih >= H) continue;
                            R *dst = gc + (id * H + ih) * W;
                            const R *src = patch + (size_t)((a * ah + b) * aw) * VL + j;
                            for (int e = 0; e < aw; ++e) {
                                const wino_index iw = o[2] + e - g->pad[2];
                                if (iw >= 0 && iw < W) dst[iw] += src[(size_t)e * VL];
                            }
                        }
                    }
                }
            }
        }
        free(s.patch);
    }
    return failed ? -1 : 0;
}

/* --------------------------------------------------------------- filter */
/* Filter transforms are small (K * C kernels): one kernel per job, scalar.
 * adjoint = 0: U[:, j] = expand(w[j]);  adjoint = 1: w[j] = contract(U[:, j]). */
static int FN(filter_any)(const R *src, wino_index KC, const PLAN *pl, R *dst, int adjoint,
                          int nthreads)
{
    const wino_index rsz = (wino_index)pl->n[0] * pl->n[1] * pl->n[2];
    const size_t t = (size_t)SCRATCH_LEN(pl);
    int failed = 0;
#pragma omp parallel num_threads(nthreads) reduction(|| : failed)
    {
        R *t1 = (R *)malloc(sizeof(R) * 2 * t);
#pragma omp for schedule(static)
        for (wino_index j = 0; j < KC; ++j) {
            if (!t1) { failed = 1; continue; }
            if (adjoint) CONTRACT(pl, src + j, KC, dst + j * rsz, t1, t1 + t);
            else EXPAND(pl, src + j * rsz, dst + j, KC, t1, t1 + t);
        }
        free(t1);
    }
    return failed ? -1 : 0;
}

int FN(wino_filter)(const R *w, wino_index KC, const PLAN *pl, R *U, int nthreads)
{
    return FN(filter_any)(w, KC, pl, U, 0, nthreads);
}

int FN(wino_filter_adjoint)(const R *gU, wino_index KC, const PLAN *pl, R *gw, int nthreads)
{
    return FN(filter_any)(gU, KC, pl, gw, 1, nthreads);
}

/* ----------------------------------------------------------------- GEMM */
/* A register-blocked GEMM in the BLIS style: C (+)= A @ B with A (M x K)
 * and B (K x N) given by arbitrary element strides (so transposes are free)
 * and C row-major with row stride rsc.  Panels of A (MR rows) and B (NR
 * columns) are packed into contiguous buffers; the micro-kernel keeps an
 * MR x NR block of C in vector registers and streams one column of A and
 * one row of B per step.  The k loop runs in the same order for every
 * element, so results never depend on the thread count. */
#define MR WINO_CAT(MR_, S)
#define NR (2 * VL)
#define KC_BLK 256
#define MC_BLK (MR * 8)
#define NC_BLK (NR * 8)


static void FN(ukernel)(int kc, const R *WINO_RESTRICT Ap, const R *WINO_RESTRICT Bp,
                        R *Cb, wino_index rsc, int mr, int nr, int accumulate)
{
    VEC acc0[MR], acc1[MR];
    for (int i = 0; i < MR; ++i) {
        acc0[i] = (VEC){0};
        acc1[i] = (VEC){0};
    }
    for (int k = 0; k < kc; ++k) {
        VEC b0, b1;
        memcpy(&b0, Bp + (wino_index)k * NR, sizeof b0);
        memcpy(&b1, Bp + (wino_index)k * NR + VL, sizeof b1);
        const R *a = Ap + (wino_index)k * MR;
        for (int i = 0; i < MR; ++i) {
            const R ai = a[i];
            acc0[i] += ai * b0;
            acc1[i] += ai * b1;
        }
    }
    if (mr == MR && nr == NR) {
        for (int i = 0; i < MR; ++i) {
            R *c = Cb + i * rsc;
            if (accumulate) {
                VEC c0, c1;
                memcpy(&c0, c, sizeof c0);
                memcpy(&c1, c + VL, sizeof c1);
                acc0[i] += c0;
                acc1[i] += c1;
            }
            memcpy(c, &acc0[i], sizeof acc0[i]);
            memcpy(c + VL, &acc1[i], sizeof acc1[i]);
        }
    } else {
        R tmp[NR];
        for (int i = 0; i < mr; ++i) {
            memcpy(tmp, &acc0[i], sizeof acc0[i]);
            memcpy(tmp + VL, &acc1[i], sizeof acc1[i]);
            R *c = Cb + i * rsc;
            for (int j = 0; j < nr; ++j) c[j] = accumulate ? c[j] + tmp[j] : tmp[j];
        }
    }
}

/* Half-width variant for the last column panel when it has <= VL columns
 * (e.g. 16 tiles): half the FMAs of the full kernel. */
static void FN(ukernel_half)(int kc, const R *WINO_RESTRICT Ap, const R *WINO_RESTRICT Bp,
                             R *Cb, wino_index rsc, int mr, int nr, int accumulate)
{
    VEC acc[MR];
    for (int i = 0; i < MR; ++i) acc[i] = (VEC){0};
    for (int k = 0; k < kc; ++k) {
        VEC b0;
        memcpy(&b0, Bp + (wino_index)k * NR, sizeof b0);
        const R *a = Ap + (wino_index)k * MR;
        for (int i = 0; i < MR; ++i) acc[i] += a[i] * b0;
    }
    R tmp[VL];
    for (int i = 0; i < mr; ++i) {
        memcpy(tmp, &acc[i], sizeof acc[i]);
        R *c = Cb + i * rsc;
        for (int j = 0; j < nr; ++j) c[j] = accumulate ? c[j] + tmp[j] : tmp[j];
    }
}

/* pack rows [i0, i0+mc) x cols [p0, p0+kc) of A into MR-row panels */
static void FN(pack_a)(const R *A, wino_index rsa, wino_index csa, int mc, int kc, R *Ap)
{
    for (int i0 = 0; i0 < mc; i0 += MR) {
        const int mr = mc - i0 < MR ? mc - i0 : MR;
        for (int k = 0; k < kc; ++k) {
            R *dst = Ap + (wino_index)i0 * kc + (wino_index)k * MR;
            const R *src = A + i0 * rsa + k * csa;
            int i = 0;
            for (; i < mr; ++i) dst[i] = src[i * rsa];
            for (; i < MR; ++i) dst[i] = 0;
        }
    }
}

/* pack rows [p0, p0+kc) x cols [j0, j0+nc) of B into NR-column panels */
static void FN(pack_b)(const R *B, wino_index rsb, wino_index csb, int kc, int nc, R *Bp)
{
    for (int j0 = 0; j0 < nc; j0 += NR) {
        const int nr = nc - j0 < NR ? nc - j0 : NR;
        for (int k = 0; k < kc; ++k) {
            R *dst = Bp + (wino_index)j0 * kc + (wino_index)k * NR;
            const R *src = B + k * rsb + j0 * csb;
            int j = 0;
            if (csb == 1 && nr == NR) {
                memcpy(dst, src, sizeof(R) * NR);
                continue;
            }
            for (; j < nr; ++j) dst[j] = src[j * csb];
            for (; j < NR; ++j) dst[j] = 0;
        }
    }
}

/* One C[i0:i0+mc_all, j0:j0+nc] block, all of K. */
static void FN(gemm_block)(wino_index M, wino_index j0, int nc, wino_index K,
                           const R *A, wino_index rsa, wino_index csa,
                           const R *B, wino_index rsb, wino_index csb,
                           R *C, wino_index rsc, int accumulate, R *Ap, R *Bp)
{
    for (wino_index p0 = 0; p0 < K; p0 += KC_BLK) {
        const int kc = K - p0 < KC_BLK ? (int)(K - p0) : KC_BLK;
        const int acc = accumulate || p0 > 0;
        FN(pack_b)(B + p0 * rsb + j0 * csb, rsb, csb, kc, nc, Bp);
        for (wino_index i0 = 0; i0 < M; i0 += MC_BLK) {
            const int mc = M - i0 < MC_BLK ? (int)(M - i0) : MC_BLK;
            FN(pack_a)(A + i0 * rsa + p0 * csa, rsa, csa, mc, kc, Ap);
            for (int jr = 0; jr < nc; jr += NR) {
                const int nr = nc - jr < NR ? nc - jr : NR;
                for (int ir = 0; ir < mc; ir += MR) {
                    const int mr = mc - ir < MR ? mc - ir : MR;
                    if (nr <= VL)
                        FN(ukernel_half)(kc, Ap + (wino_index)ir * kc, Bp + (wino_index)jr * kc,
                                         C + (i0 + ir) * rsc + j0 + jr, rsc, mr, nr, acc);
                    else
                        FN(ukernel)(kc, Ap + (wino_index)ir * kc, Bp + (wino_index)jr * kc,
                                    C + (i0 + ir) * rsc + j0 + jr, rsc, mr, nr, acc);
                }
            }
        }
    }
    if (K == 0 && !accumulate)
        for (wino_index i = 0; i < M; ++i)
            for (int j = 0; j < nc; ++j) C[i * rsc + j0 + j] = 0;
}

/* C[cidx[b]] (+)= A[aidx[b]] @ B[b] for b < nb; aidx/cidx may be NULL
 * (identity).  Jobs are (batch, column block) pairs. Returns -1 when the
 * packing buffers cannot be allocated. */
int FN(wino_gemm_batched)(wino_index nb, wino_index M, wino_index N, wino_index K,
                          const R *A, const int *aidx, wino_index sa,
                          wino_index rsa, wino_index csa,
                          const R *B, wino_index sb, wino_index rsb, wino_index csb,
                          R *C, const int *cidx, wino_index sc, wino_index rsc,
                          int accumulate, int nthreads)
{
    const wino_index ncb = (N + NC_BLK - 1) / NC_BLK;
    int failed = 0;
#pragma omp parallel num_threads(nthreads) reduction(|| : failed)
    {
        R *Ap = (R *)aligned_alloc(64, sizeof(R) * MC_BLK * KC_BLK);
        R *Bp = (R *)aligned_alloc(64, sizeof(R) * KC_BLK * NC_BLK);
#pragma omp for schedule(static)
            for (wino_index job = 0; job < nb * ncb; ++job) {
                if (!Ap || !Bp) { failed = 1; continue; }
                const wino_index b = job / ncb, jb = job - b * ncb;
                const wino_index j0 = jb * NC_BLK;
                const int nc = N - j0 < NC_BLK ? (int)(N - j0) : NC_BLK;
                const wino_index ia = aidx ? aidx[b] : b, ic = cidx ? cidx[b] : b;
                FN(gemm_block)(M, j0, nc, K, A + ia * sa, rsa, csa, B + b * sb, rsb, csb,
                               C + ic * sc, rsc, accumulate, Ap, Bp);
            }
        free(Ap);
        free(Bp);
    }
    return failed ? -1 : 0;
}

#undef MR
#undef NR
#undef KC_BLK
#undef MC_BLK
#undef NC_BLK
#undef PLAN
#undef EXPAND
#undef CONTRACT
#undef SCRATCH_LEN
#undef FN
#undef EXPAND_DIMS
#undef CONTRACT_DIMS
#undef VEC
