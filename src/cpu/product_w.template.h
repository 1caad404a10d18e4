/*
 * product_w.template.h -- the product stage of a one-shot convolution with
 * the filter transform inside it, so that the Winograd-domain weights never
 * reach memory.
 *
 *   wino_product_w   M[i] = U_i[k0:k0+kc] @ V[i]   (i < nk, the kept positions)
 *
 * where U_i is position kept[i] of the filter transform of w (K x C kernels).
 * A one-shot conv3d with many channels on a small volume spends more time
 * writing U (512x512 kernels to F(2^3): 67 MB) and reading it back than
 * multiplying; here each thread transforms the kernels of a few rows of
 * output channels, one KC-deep slab of input channels at a time, into a
 * buffer of its own (L2-sized where the positions allow), and multiplies
 * that slab at every kept position before it transforms the next.
 *
 * Same bits as filter_transform followed by the batched GEMM: the same
 * filter code makes U, and the micro-kernel runs over the same KC blocks of
 * input channels in the same order (gemm.template.h), reading U in place.
 *
 * Two phases per call:
 *   1. (if pack_v) V[i][c0:c0+KC] is packed into NR-column panels, all
 *      positions, shared by the threads (Vp; wino_product_w_packed_len);
 *   2. the threads split the kc rows into blocks of whole MR-row panels;
 *      per block and KC slab: transform, then multiply at every position.
 *
 * Scratch: per thread, the tile scratch and the slab buffer
 * (wino_product_w_scratch_bytes).
 *
 * Template (see template_names.h): define WINO_REAL and WINO_SUFFIX; needs
 * tile_lanes, gemm and filter templates of the same type before it.
 */
#include "template_names.h"

#define MR WINO_GEMM_MR
#define NR WINO_CAT(WINO_GEMM_NR_, WINO_SUFFIX)
#define KC_BLK WINO_GEMM_KC
/* Bytes of a thread's transformed slab that the row block is sized to:
 * half the L2 of the machines this was measured on, the rest for V. */
#define PW_SLAB_BYTES (512 * 1024)

/* Rows of output channels a thread transforms per slab: whole MR panels,
 * at least one. */
static wino_index FN(pw_rows)(const PLAN *pl)
{
    const size_t panel = sizeof(REAL) * (size_t)pl->nk * MR * KC_BLK;
    const size_t q = PW_SLAB_BYTES / (panel ? panel : 1);
    return (wino_index)MR * (wino_index)(q > 1 ? q : 1);
}

/* Elements between two positions of a slab of mb rows, each cbp long,
 * spread over the L1's sets (wino_spread_stride).  (The transform writes one
 * vector to every position in turn; 6 rows of 256 floats are 6 KiB apart,
 * which mapped all 64 positions to two sets of the L1 and evicted every line
 * before its second half was written: 512x512 kernels to F(2^3), 32 tiles:
 * product 25 -> 20 ms.) */
static wino_index FN(pw_pos_stride)(wino_index mb, wino_index cbp)
{
    return wino_spread_stride(mb * cbp, sizeof(REAL));
}

static size_t FN(pw_thread_bytes)(const PLAN *pl)
{
    return wino_scratch_round(FN(tile_scratch_bytes)(pl)) +
           sizeof(REAL) * (size_t)pl->nk * (size_t)FN(pw_pos_stride)(FN(pw_rows)(pl), KC_BLK);
}

size_t FN(wino_product_w_scratch_bytes)(const PLAN *pl, int nthreads)
{
    return wino_scratch_total(FN(pw_thread_bytes)(pl), nthreads);
}

/* Elements of the packed V of nk positions, C channels and n tiles. */
wino_index FN(wino_product_w_packed_len)(wino_index nk, wino_index C, wino_index n)
{
    return nk * C * ((n + NR - 1) / NR) * NR;
}

/* w: (K, C, taps) contiguous, the filter plan pl (its kept positions are
 * V's and M's); V: (nk, C, n); M: (nk, kc, n), rows k0 .. k0 + kc of the
 * output channels; Vp: wino_product_w_packed_len(nk, C, n) elements, packed
 * from V when pack_v (else packed by an earlier call with the same V). */
int FN(wino_product_w)(const REAL *w, wino_index K, wino_index C, const PLAN *pl, const REAL *V,
                       wino_index n, wino_index k0, wino_index kc, REAL *M, REAL *Vp, int pack_v,
                       void *scratch, size_t scratch_bytes, int nthreads)
{
    if (k0 < 0 || kc < 0 || k0 + kc > K || C < 1 || n < 1) return WINO_EARG;
    const size_t per_thread = FN(pw_thread_bytes)(pl);
    if (!scratch || scratch_bytes < wino_scratch_total(per_thread, nthreads)) return WINO_ESCRATCH;
    const wino_index nk = pl->nk, rsz = (wino_index)pl->n[0] * pl->n[1] * pl->n[2];
    const wino_index npan = (n + NR - 1) / NR, ncb = (C + KC_BLK - 1) / KC_BLK;
    /* row blocks: whole MR panels, at most pw_rows rows, a multiple of the threads */
    const wino_index npr = (kc + MR - 1) / MR, ppb_max = FN(pw_rows)(pl) / MR;
    wino_index nrb = (npr + ppb_max - 1) / ppb_max;
    nrb = (nrb + nthreads - 1) / nthreads * nthreads;
    if (nrb > npr) nrb = npr;
    const wino_index ppb = nrb > 0 ? (npr + nrb - 1) / nrb : 0;
#pragma omp parallel num_threads(nthreads)
    {
        char *mem = (char *)wino_scratch_slice(scratch, per_thread, wino_thread_num());
        FN(tile_scratch) s = FN(tile_scratch_at)(mem, pl);
        REAL *Ub = (REAL *)(mem + wino_scratch_round(FN(tile_scratch_bytes)(pl)));
        if (pack_v) {
#pragma omp for schedule(static)
            for (wino_index job = 0; job < nk * ncb; ++job) {
                const wino_index i = job / ncb, c0 = (job - i * ncb) * KC_BLK;
                const int cb = C - c0 < KC_BLK ? (int)(C - c0) : KC_BLK;
                FN(pack_b)(V + (i * C + c0) * n, n, 1, cb, (int)n, Vp + (i * C + c0) * npan * NR);
            }
        }
#pragma omp for schedule(static)
        for (wino_index rb = 0; rb < nrb; ++rb) {
            const wino_index r0 = rb * ppb * MR;
            if (r0 >= kc) continue;
            const wino_index mb = kc - r0 < ppb * MR ? kc - r0 : ppb * MR;
            for (wino_index c0 = 0; c0 < C; c0 += KC_BLK) {
                const int cb = C - c0 < KC_BLK ? (int)(C - c0) : KC_BLK;
                const wino_index cbp = (cb + VL - 1) / VL * VL, ps = FN(pw_pos_stride)(mb, cbp);
                /* the slab: Ub[i * ps + r * cbp + c] = U_i[k0 + r0 + r][c0 + c] */
                for (wino_index r = 0; r < mb; ++r) {
                    const REAL *wr = w + ((k0 + r0 + r) * C + c0) * rsz;
                    for (wino_index cg = 0; cg < cb; cg += VL) {
                        const int lanes = cb - cg < VL ? (int)(cb - cg) : VL;
                        FN(filter_gather)(wr + cg * rsz, rsz, lanes, s.patch);
                        FN(filter_expandv)(pl, s.patch, (VEC *)(Ub + r * cbp + cg), ps / VL, s.t1, s.t2);
                    }
                }
                /* M[i][r0:r0+mb] (+)= slab_i @ V[i][c0:c0+cb] */
                for (wino_index i = 0; i < nk; ++i) {
                    const REAL *Bp = Vp + (i * C + c0) * npan * NR;
                    REAL *Mi = M + (i * kc + r0) * n;
                    for (wino_index jr = 0; jr < n; jr += NR) {
                        const int nr = n - jr < NR ? (int)(n - jr) : NR;
                        for (wino_index ir = 0; ir < mb; ir += MR) {
                            const int mr = mb - ir < MR ? (int)(mb - ir) : MR;
                            FN(ukernel_inplace)(cb, Ub + i * ps + ir * cbp, cbp, Bp + jr * cb,
                                                Mi + ir * n + jr, n, mr, nr, c0 > 0);
                        }
                    }
                }
            }
        }
    }
    return 0;
}

#undef PW_SLAB_BYTES
#undef MR
#undef NR
#undef KC_BLK
#include "template_names_end.h"
