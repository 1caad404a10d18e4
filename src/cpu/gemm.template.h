/*
 * gemm.template.h -- the batched, strided, indexed GEMM of the product stage
 * (blocking in gemm.h).
 *
 * Scratch: the packing buffers of each thread, in the caller's memory, sized
 * by wino_gemm_scratch_bytes(nthreads) (scratch.h).
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
#define KB WINO_GEMM_KB
#define MC_BLK WINO_GEMM_MC
#define NC_BLK WINO_CAT(WINO_GEMM_NC_, WINO_SUFFIX)


/* The micro-kernels read A[i][k] at a[i * ars + k * aks]: a packed panel
 * has ars = 1 and aks = MR (rows past mr are zero there); A read in place
 * has aks = 1 and its row stride (rows past mr then repeat row 0, so nothing
 * past A is read; their results are never stored).  Same FMAs in the same
 * order either way.  With an index `acol` (the gathered GEMM), A[i][k] is
 * a[i * ars + acol[k]] instead; every other caller passes a constant NULL,
 * which the inlining folds away. */
WINO_INLINE void FN(ukernel)(int kc, int kb, const REAL *WINO_RESTRICT a, wino_index ars, wino_index aks,
                             const wino_index *acol, const REAL *WINO_RESTRICT Bp, REAL *Cb,
                             wino_index rsc, int mr, int nr, int accumulate)
{
    VEC acc0[MR], acc1[MR], sum0[MR], sum1[MR];
    const REAL *row[MR];
    for (int i = 0; i < MR; ++i) {
        acc0[i] = (VEC){0};
        acc1[i] = (VEC){0};
        row[i] = a + (aks != 1 || i < mr ? i : 0) * ars;
    }
    /* chains of kb products, added in order (gemm.h) */
    for (int k0 = 0; k0 < kc; k0 += kb) {
        const int k1 = kc - k0 < kb ? kc : k0 + kb;
        for (int i = 0; i < MR; ++i) {
            sum0[i] = (VEC){0};
            sum1[i] = (VEC){0};
        }
        for (int k = k0; k < k1; ++k) {
            VEC b0, b1;
            memcpy(&b0, Bp + (wino_index)k * NR, sizeof b0);
            memcpy(&b1, Bp + (wino_index)k * NR + VL, sizeof b1);
            const wino_index ka = acol ? acol[k] : (wino_index)k * aks;
            for (int i = 0; i < MR; ++i) {
                const REAL ai = row[i][ka];
                sum0[i] += ai * b0;
                sum1[i] += ai * b1;
            }
        }
        for (int i = 0; i < MR; ++i) {
            acc0[i] = k0 ? acc0[i] + sum0[i] : sum0[i];
            acc1[i] = k0 ? acc1[i] + sum1[i] : sum1[i];
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
WINO_INLINE void FN(ukernel_half)(int kc, int kb, const REAL *WINO_RESTRICT a, wino_index ars,
                                  wino_index aks, const wino_index *acol,
                                  const REAL *WINO_RESTRICT Bp, REAL *Cb, wino_index rsc, int mr,
                                  int nr, int accumulate)
{
    VEC acc[MR], sum[MR];
    const REAL *row[MR];
    for (int i = 0; i < MR; ++i) {
        acc[i] = (VEC){0};
        row[i] = a + (aks != 1 || i < mr ? i : 0) * ars;
    }
    /* chains of kb products, added in order (gemm.h) */
    for (int k0 = 0; k0 < kc; k0 += kb) {
        const int k1 = kc - k0 < kb ? kc : k0 + kb;
        for (int i = 0; i < MR; ++i) sum[i] = (VEC){0};
        for (int k = k0; k < k1; ++k) {
            VEC b0;
            memcpy(&b0, Bp + (wino_index)k * NR, sizeof b0);
            const wino_index ka = acol ? acol[k] : (wino_index)k * aks;
            for (int i = 0; i < MR; ++i) sum[i] += row[i][ka] * b0;
        }
        for (int i = 0; i < MR; ++i) acc[i] = k0 ? acc[i] + sum[i] : sum[i];
    }
    REAL tmp[VL];
    for (int i = 0; i < mr; ++i) {
        memcpy(tmp, &acc[i], sizeof acc[i]);
        REAL *c = Cb + i * rsc;
        for (int j = 0; j < nr; ++j) c[j] = accumulate ? c[j] + tmp[j] : tmp[j];
    }
}

/* The micro-kernel of an MR x nr block, from a packed panel (ars = 1, aks =
 * MR: constants, so the packed loop is what it always was) or from A in
 * place (aks = 1). */
static void FN(ukernel_packed)(int kc, const REAL *Ap, const REAL *Bp, REAL *Cb, wino_index rsc,
                               int mr, int nr, int accumulate)
{
    if (nr <= VL) FN(ukernel_half)(kc, KB, Ap, 1, MR, NULL, Bp, Cb, rsc, mr, nr, accumulate);
    else FN(ukernel)(kc, KB, Ap, 1, MR, NULL, Bp, Cb, rsc, mr, nr, accumulate);
}

static void FN(ukernel_inplace)(int kc, const REAL *A, wino_index rsa, const REAL *Bp, REAL *Cb,
                                wino_index rsc, int mr, int nr, int accumulate)
{
    if (nr <= VL) FN(ukernel_half)(kc, KB, A, rsa, 1, NULL, Bp, Cb, rsc, mr, nr, accumulate);
    else FN(ukernel)(kc, KB, A, rsa, 1, NULL, Bp, Cb, rsc, mr, nr, accumulate);
}

/* A in place with its columns gathered through `acol` (wino_gemm_gathered).
 * One chain per KC block, not chains of KB: the im2col pipeline's groups
 * skip the taps in the padding or multiply them as zeros depending on how
 * it splits a batch, and only a single chain sums to the same bits either
 * way (a zero term moves the chains' boundaries). */
static void FN(ukernel_gathered)(int kc, const REAL *A, wino_index rsa, const wino_index *acol,
                                 const REAL *Bp, REAL *Cb, wino_index rsc, int mr, int nr,
                                 int accumulate)
{
    if (nr <= VL) FN(ukernel_half)(kc, kc, A, rsa, 1, acol, Bp, Cb, rsc, mr, nr, accumulate);
    else FN(ukernel)(kc, kc, A, rsa, 1, acol, Bp, Cb, rsc, mr, nr, accumulate);
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

/* One C[0:M, j0:j0+nc] block, all of K.  With `inplace` (see
 * wino_gemm_batched) the micro-kernel reads A in place, row block by row
 * block, each over all the column panels; otherwise A is packed per MC x KC
 * block. */
static void FN(gemm_block)(wino_index M, wino_index j0, int nc, wino_index K,
                           const REAL *A, wino_index rsa, wino_index csa,
                           const REAL *B, wino_index rsb, wino_index csb,
                           REAL *C, wino_index rsc, int accumulate, int inplace, REAL *Ap, REAL *Bp)
{
    for (wino_index p0 = 0; p0 < K; p0 += KC_BLK) {
        const int kc = K - p0 < KC_BLK ? (int)(K - p0) : KC_BLK;
        const int acc = accumulate || p0 > 0;
        FN(pack_b)(B + p0 * rsb + j0 * csb, rsb, csb, kc, nc, Bp);
        for (wino_index i0 = 0; i0 < M; i0 += MC_BLK) {
            const int mc = M - i0 < MC_BLK ? (int)(M - i0) : MC_BLK;
            if (inplace) {
                for (int ir = 0; ir < mc; ir += MR) {
                    const int mr = mc - ir < MR ? mc - ir : MR;
                    for (int jr = 0; jr < nc; jr += NR) {
                        const int nr = nc - jr < NR ? nc - jr : NR;
                        FN(ukernel_inplace)(kc, A + (i0 + ir) * rsa + p0, rsa, Bp + (wino_index)jr * kc,
                                            C + (i0 + ir) * rsc + j0 + jr, rsc, mr, nr, acc);
                    }
                }
                continue;
            }
            FN(pack_a)(A + i0 * rsa + p0 * csa, rsa, csa, mc, kc, Ap);
            for (int jr = 0; jr < nc; jr += NR) {
                const int nr = nc - jr < NR ? nc - jr : NR;
                for (int ir = 0; ir < mc; ir += MR) {
                    const int mr = mc - ir < MR ? mc - ir : MR;
                    FN(ukernel_packed)(kc, Ap + (wino_index)ir * kc, Bp + (wino_index)jr * kc,
                                       C + (i0 + ir) * rsc + j0 + jr, rsc, mr, nr, acc);
                }
            }
        }
    }
    if (K == 0 && !accumulate)
        for (wino_index i = 0; i < M; ++i)
            for (int j = 0; j < nc; ++j) C[i * rsc + j0 + j] = 0;
}

/* Per-thread packing buffers: an MC x KC block of A and a KC x NC block of B. */
#define PACK_BYTES (sizeof(REAL) * ((size_t)MC_BLK * KC_BLK + (size_t)KC_BLK * NC_BLK))

size_t FN(wino_gemm_scratch_bytes)(int nthreads)
{
    return wino_scratch_total(PACK_BYTES, nthreads);
}

/* C[c(b)] (+)= A[a(b)] @ B[b(b)] for b < nb, where x(b) is x->index[b], or b
 * when the index is NULL (wino_batch in gemm.h).  C's columns must be
 * contiguous (C->cstride == 1).  Jobs are (batch, column block, row block)
 * triples: the rows are split only when there are fewer (batch, column
 * block) pairs than twice the threads (one large product: im2col, or the
 * Winograd product of a layer with few tiles), into whole MR-row panels.
 * Each element of C is summed by one job in the same k order whatever the
 * split, so results never depend on the thread count.
 *
 * Where A's rows are contiguous (cstride 1) and either a panel of A would
 * serve a single column panel of B (N <= NR) or A is large
 * (WINO_GEMM_INPLACE_BYTES, gemm.h), the micro-kernel reads A in place:
 * that saves a copy of every element of A per job -- the Winograd-domain
 * weights of a layer with many channels, which are read once per position
 * anyway.  Small A (few channels) is packed: there the contiguous panel was
 * measured faster. */
int FN(wino_gemm_batched)(wino_index nb, wino_index M, wino_index N, wino_index K,
                          const wino_batch *A, const wino_batch *B, const wino_batch *C,
                          int accumulate, void *scratch, size_t scratch_bytes, int nthreads)
{
    if (C->cstride != 1) return WINO_EARG;
    if (!scratch || scratch_bytes < wino_scratch_total(PACK_BYTES, nthreads)) return WINO_ESCRATCH;
    const wino_index ncb = (N + NC_BLK - 1) / NC_BLK, npanels = (M + MR - 1) / MR;
    wino_index nmb = 1;
    if (nb * ncb < 2 * (wino_index)nthreads) {
        nmb = (2 * (wino_index)nthreads + nb * ncb - 1) / (nb * ncb);
        if (nmb > npanels) nmb = npanels;
        if (nmb < 1) nmb = 1;
    }
    const wino_index mrows = (npanels + nmb - 1) / nmb * MR;
    const int inplace = A->cstride == 1 &&
                        (N <= NR || (size_t)M * (size_t)K * sizeof(REAL) >= WINO_GEMM_INPLACE_BYTES);
    const REAL *a = (const REAL *)A->data, *bm = (const REAL *)B->data;
    REAL *c = (REAL *)C->data;
#pragma omp parallel num_threads(nthreads)
    {
        REAL *Ap = (REAL *)wino_scratch_slice(scratch, PACK_BYTES, wino_thread_num());
        REAL *Bp = Ap + (size_t)MC_BLK * KC_BLK;
#pragma omp for schedule(static)
        for (wino_index job = 0; job < nb * ncb * nmb; ++job) {
            const wino_index b = job / (ncb * nmb), rest = job - b * (ncb * nmb);
            const wino_index jb = rest / nmb, mb = rest - jb * nmb;
            const wino_index j0 = jb * NC_BLK, m0 = mb * mrows;
            if (m0 >= M) continue;
            const wino_index mm = M - m0 < mrows ? M - m0 : mrows;
            const int nc = N - j0 < NC_BLK ? (int)(N - j0) : NC_BLK;
            const wino_index ia = A->index ? A->index[b] : b;
            const wino_index ib = B->index ? B->index[b] : b;
            const wino_index ic = C->index ? C->index[b] : b;
            FN(gemm_block)(mm, j0, nc, K, a + ia * A->bstride + m0 * A->rstride, A->rstride, A->cstride,
                           bm + ib * B->bstride, B->rstride, B->cstride,
                           c + ic * C->bstride + m0 * C->rstride, C->rstride, accumulate, inplace, Ap, Bp);
        }
    }
    return 0;
}

/* The gathered GEMM packs up to GATHER_PANELS column panels (KC x NR each)
 * at a time into one buffer shared by the threads: 512 KiB, L2-sized. */
#define GATHER_PANELS 32
#define GATHER_BYTES (sizeof(REAL) * (size_t)GATHER_PANELS * KC_BLK * NR)

size_t FN(wino_gemm_gathered_scratch_bytes)(void)
{
    return wino_scratch_total(GATHER_BYTES, 1);
}

/* Pack one NR-column panel of B from kc gathered rows and nr <= NR gathered
 * columns: element (k, j) is B[brow[k] + bcol[j]], zero past nr. */
static void FN(pack_panel_gathered)(const REAL *B, const wino_index *brow, const wino_index *bcol,
                                    int kc, int nr, REAL *Bp)
{
    for (int k = 0; k < kc; ++k) {
        REAL *dst = Bp + (wino_index)k * NR;
        const REAL *src = B + brow[k];
        int j = 0;
        for (; j < nr; ++j) dst[j] = src[bcol[j]];
        for (; j < NR; ++j) dst[j] = 0;
    }
}

/* First of acol[0:K] (increasing) that is >= v. */
static wino_index FN(lower_bound)(const wino_index *acol, wino_index K, wino_index v)
{
    wino_index lo = 0, hi = K;
    while (lo < hi) {
        const wino_index mid = lo + (hi - lo) / 2;
        if (acol[mid] < v) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

/* The gathered GEMM (wino_gather_group in wino3d_cpu.h): for each group g
 * and row i < M,
 *
 *     C[i * rsc + g.c0 + j] = sum_k A[i * rsa + g.acol[k]] * B[g.brow[k] + g.bcol[j]]
 *
 * -- a GEMM whose terms (k) and columns (j) are picked out of larger A and
 * B (NB elements; C has NC columns).  Every offset is checked first
 * (WINO_EARG): A's columns increasing inside KA, B's offsets inside B, the
 * groups' columns disjoint and in increasing order inside C.  The im2col
 * pipeline (pywino3d/_backends/cpu/pipelines/im2col.py) runs one group per set of output positions
 * that share their valid kernel taps, so taps that fall in the padding are
 * skipped instead of multiplied as zeros.
 *
 * A is read in place (the weights, as stored), its columns blocked by KC:
 * every group's terms inside one block of KA columns run before the next
 * block, so that block of A is read from memory once and then from cache by
 * every group.  Per block, the threads first pack the column panels of B
 * together into one shared buffer (GATHER_PANELS at a time), then split the
 * rows of C between them, each multiplying its rows by every packed panel:
 * B is packed once, not once per thread.  Each element of C is summed by
 * one thread in the order of its group's terms, so results never depend on
 * the thread count. */
int FN(wino_gemm_gathered)(wino_index M, wino_index KA, const REAL *A, wino_index rsa,
                           wino_index ng, const wino_gather_group *groups, const REAL *B,
                           wino_index NB, REAL *C, wino_index rsc, wino_index NC, void *scratch,
                           size_t scratch_bytes, int nthreads)
{
    if (!scratch || scratch_bytes < wino_scratch_total(GATHER_BYTES, 1)) return WINO_ESCRATCH;
    /* every offset inside its array; groups in increasing, disjoint columns */
    wino_index cend = 0;
    for (wino_index g = 0; g < ng; ++g) {
        const wino_gather_group *gr = &groups[g];
        if (gr->K < 0 || gr->N < 0 || gr->c0 < cend || gr->c0 + gr->N > NC || gr->c0 + gr->N > rsc)
            return WINO_EARG;
        cend = gr->c0 + gr->N;
        wino_index rlo = 0, rhi = 0, clo = 0, chi = 0;
        for (wino_index k = 0; k < gr->K; ++k) {
            if (gr->acol[k] < 0 || gr->acol[k] >= KA || (k > 0 && gr->acol[k] <= gr->acol[k - 1]))
                return WINO_EARG;
            if (k == 0 || gr->brow[k] < rlo) rlo = gr->brow[k];
            if (k == 0 || gr->brow[k] > rhi) rhi = gr->brow[k];
        }
        for (wino_index j = 0; j < gr->N; ++j) {
            if (j == 0 || gr->bcol[j] < clo) clo = gr->bcol[j];
            if (j == 0 || gr->bcol[j] > chi) chi = gr->bcol[j];
        }
        if (gr->K > 0 && gr->N > 0 && (rlo + clo < 0 || rhi + chi >= NB)) return WINO_EARG;
    }
    const wino_index npanels = (M + MR - 1) / MR;
    const wino_index nmb = npanels < (wino_index)nthreads ? npanels : (wino_index)nthreads;
    const wino_index mrows = nmb > 0 ? (npanels + nmb - 1) / nmb * MR : 0;
    wino_index total = 0; /* column panels of all groups */
    for (wino_index g = 0; g < ng; ++g) total += (groups[g].N + NR - 1) / NR;
    REAL *buf = (REAL *)wino_scratch_slice(scratch, GATHER_BYTES, 0);
#pragma omp parallel num_threads(nthreads)
    for (wino_index pb = 0; pb < total; pb += GATHER_PANELS) {
        const wino_index pe = total - pb < GATHER_PANELS ? total : pb + GATHER_PANELS;
        for (wino_index a0 = 0; a0 < KA; a0 += KC_BLK) {
            /* pack this chunk's panels for this block of A's columns, shared */
#pragma omp for schedule(static)
            for (wino_index p = pb; p < pe; ++p) {
                wino_index g = 0, j0 = p;
                while (j0 >= (groups[g].N + NR - 1) / NR) j0 -= (groups[g].N + NR - 1) / NR, ++g;
                const wino_gather_group *gr = &groups[g];
                const wino_index lo = FN(lower_bound)(gr->acol, gr->K, a0);
                const wino_index hi = FN(lower_bound)(gr->acol, gr->K, a0 + KC_BLK);
                const int nr = gr->N - j0 * NR < NR ? (int)(gr->N - j0 * NR) : NR;
                if (hi > lo)
                    FN(pack_panel_gathered)(B, gr->brow + lo, gr->bcol + j0 * NR, (int)(hi - lo), nr,
                                            buf + (p - pb) * (KC_BLK * NR));
            }
            /* every thread its rows, against every packed panel */
#pragma omp for schedule(static)
            for (wino_index mb = 0; mb < nmb; ++mb) {
                const wino_index m0 = mb * mrows;
                if (m0 >= M) continue;
                const wino_index mm = M - m0 < mrows ? M - m0 : mrows;
                wino_index p = 0;
                for (wino_index g = 0; g < ng && p < pe; ++g) {
                    const wino_gather_group *gr = &groups[g];
                    const wino_index np = (gr->N + NR - 1) / NR;
                    if (p + np <= pb) {
                        p += np;
                        continue;
                    }
                    const wino_index lo = FN(lower_bound)(gr->acol, gr->K, a0);
                    const wino_index hi = FN(lower_bound)(gr->acol, gr->K, a0 + KC_BLK);
                    for (wino_index j0 = 0; j0 < np; ++j0, ++p) {
                        if (p < pb || p >= pe || hi == lo) continue;
                        const int nr = gr->N - j0 * NR < NR ? (int)(gr->N - j0 * NR) : NR;
                        for (wino_index ir = 0; ir < mm; ir += MR) {
                            const int mr = mm - ir < MR ? (int)(mm - ir) : MR;
                            FN(ukernel_gathered)((int)(hi - lo), A + (m0 + ir) * rsa, rsa, gr->acol + lo,
                                                 buf + (p - pb) * (KC_BLK * NR),
                                                 C + (m0 + ir) * rsc + gr->c0 + j0 * NR, rsc, mr, nr, lo > 0);
                        }
                    }
                }
            }
        }
    }
    for (wino_index g = 0; g < ng; ++g)  /* a group with no terms sums to zero */
        if (groups[g].K == 0)
            for (wino_index i = 0; i < M; ++i)
                for (wino_index j = 0; j < groups[g].N; ++j) C[i * rsc + groups[g].c0 + j] = 0;
    return 0;
}

#undef PACK_BYTES
#undef GATHER_PANELS
#undef GATHER_BYTES
#undef MR
#undef NR
#undef KC_BLK
#undef KB
#undef MC_BLK
#undef NC_BLK
#include "template_names_end.h"
