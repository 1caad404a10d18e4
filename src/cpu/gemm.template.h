/*
 * gemm.template.h -- the batched, strided, indexed GEMM of the product stage
 * (blocking in gemm.h).
 *
 * Template (see template_names.h): define WINO_REAL and WINO_SUFFIX.
 */
#include "template_names.h"

/* A register-blocked GEMM in the BLIS style: C (+)= A @ B with A (M x K)
 * and B (K x N) given by arbitrary element strides (so transposes are free)
 * and C row-major with row stride rsc.  Panels of A (MR rows) and B (NR
 * columns) are packed into contiguous buffers; the micro-kernel keeps an
 * MR x NR block of C in vector registers and streams one column of A and
 * one row of B per step.  The k loop runs in the same order for every
 * element, so results never depend on the thread count. */
#define MR WINO_GEMM_MR
#define NR WINO_CAT(WINO_GEMM_NR_, WINO_SUFFIX)
#define KC_BLK WINO_GEMM_KC
#define MC_BLK WINO_GEMM_MC
#define NC_BLK WINO_CAT(WINO_GEMM_NC_, WINO_SUFFIX)


static void FN(ukernel)(int kc, const REAL *WINO_RESTRICT Ap, const REAL *WINO_RESTRICT Bp,
                        REAL *Cb, wino_index rsc, int mr, int nr, int accumulate)
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
        const REAL *a = Ap + (wino_index)k * MR;
        for (int i = 0; i < MR; ++i) {
            const REAL ai = a[i];
            acc0[i] += ai * b0;
            acc1[i] += ai * b1;
        }
    }
    if (mr == MR && nr == NR) {
        for (int i = 0; i < MR; ++i) {
            REAL *c = Cb + i * rsc;
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
        REAL tmp[NR];
        for (int i = 0; i < mr; ++i) {
            memcpy(tmp, &acc0[i], sizeof acc0[i]);
            memcpy(tmp + VL, &acc1[i], sizeof acc1[i]);
            REAL *c = Cb + i * rsc;
            for (int j = 0; j < nr; ++j) c[j] = accumulate ? c[j] + tmp[j] : tmp[j];
        }
    }
}

/* Half-width variant for the last column panel when it has <= VL columns
 * (e.g. 16 tiles): half the FMAs of the full kernel. */
static void FN(ukernel_half)(int kc, const REAL *WINO_RESTRICT Ap, const REAL *WINO_RESTRICT Bp,
                             REAL *Cb, wino_index rsc, int mr, int nr, int accumulate)
{
    VEC acc[MR];
    for (int i = 0; i < MR; ++i) acc[i] = (VEC){0};
    for (int k = 0; k < kc; ++k) {
        VEC b0;
        memcpy(&b0, Bp + (wino_index)k * NR, sizeof b0);
        const REAL *a = Ap + (wino_index)k * MR;
        for (int i = 0; i < MR; ++i) acc[i] += a[i] * b0;
    }
    REAL tmp[VL];
    for (int i = 0; i < mr; ++i) {
        memcpy(tmp, &acc[i], sizeof acc[i]);
        REAL *c = Cb + i * rsc;
        for (int j = 0; j < nr; ++j) c[j] = accumulate ? c[j] + tmp[j] : tmp[j];
    }
}

/* pack rows [i0, i0+mc) x cols [p0, p0+kc) of A into MR-row panels */
static void FN(pack_a)(const REAL *A, wino_index rsa, wino_index csa, int mc, int kc, REAL *Ap)
{
    for (int i0 = 0; i0 < mc; i0 += MR) {
        const int mr = mc - i0 < MR ? mc - i0 : MR;
        for (int k = 0; k < kc; ++k) {
            REAL *dst = Ap + (wino_index)i0 * kc + (wino_index)k * MR;
            const REAL *src = A + i0 * rsa + k * csa;
            int i = 0;
            for (; i < mr; ++i) dst[i] = src[i * rsa];
            for (; i < MR; ++i) dst[i] = 0;
        }
    }
}

/* pack rows [p0, p0+kc) x cols [j0, j0+nc) of B into NR-column panels */
static void FN(pack_b)(const REAL *B, wino_index rsb, wino_index csb, int kc, int nc, REAL *Bp)
{
    for (int j0 = 0; j0 < nc; j0 += NR) {
        const int nr = nc - j0 < NR ? nc - j0 : NR;
        for (int k = 0; k < kc; ++k) {
            REAL *dst = Bp + (wino_index)j0 * kc + (wino_index)k * NR;
            const REAL *src = B + k * rsb + j0 * csb;
            int j = 0;
            if (csb == 1 && nr == NR) {
                memcpy(dst, src, sizeof(REAL) * NR);
                continue;
            }
            for (; j < nr; ++j) dst[j] = src[j * csb];
            for (; j < NR; ++j) dst[j] = 0;
        }
    }
}

/* One C[i0:i0+mc_all, j0:j0+nc] block, all of K. */
static void FN(gemm_block)(wino_index M, wino_index j0, int nc, wino_index K,
                           const REAL *A, wino_index rsa, wino_index csa,
                           const REAL *B, wino_index rsb, wino_index csb,
                           REAL *C, wino_index rsc, int accumulate, REAL *Ap, REAL *Bp)
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
                          const REAL *A, const int *aidx, wino_index sa,
                          wino_index rsa, wino_index csa,
                          const REAL *B, wino_index sb, wino_index rsb, wino_index csb,
                          REAL *C, const int *cidx, wino_index sc, wino_index rsc,
                          int accumulate, int nthreads)
{
    const wino_index ncb = (N + NC_BLK - 1) / NC_BLK;
    int failed = 0;
#pragma omp parallel num_threads(nthreads) reduction(|| : failed)
    {
        REAL *Ap = (REAL *)aligned_alloc(64, sizeof(REAL) * MC_BLK * KC_BLK);
        REAL *Bp = (REAL *)aligned_alloc(64, sizeof(REAL) * KC_BLK * NC_BLK);
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
#include "template_names_end.h"
