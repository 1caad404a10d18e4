/*
 * direct.template.h -- direct convolution, output channels in SIMD lanes
 * (the algorithm and the data layouts are described in direct.h).
 *
 * Template (see template_names.h): define WINO_REAL and WINO_SUFFIX; needs
 * simd.h and direct.h.
 */
#include "template_names.h"

/* One register block: acc[kv][p] += Wp[kb0 + kv][c][tap] * xpad[c][q0 + p + tap offset]
 * for nkv (1 or 2) vectors of output channels and rb (<= WINO_DIRECT_RB)
 * consecutive flattened positions starting at xq.  Inlined with constant nkv
 * and rb (see direct_block_any), so the accumulators live in registers and
 * every product is one FMA with a broadcast operand. */
WINO_INLINE void FN(direct_block)(const REAL *WINO_RESTRICT xq, wino_index cs, wino_index ds,
                                  wino_index hs, const REAL *WINO_RESTRICT w0,
                                  const REAL *WINO_RESTRICT w1, wino_index C, int rd, int rh, int rw,
                                  const int nkv, const int rb, VEC *WINO_RESTRICT out)
{
    VEC a0[WINO_DIRECT_RB], a1[WINO_DIRECT_RB];
    for (int p = 0; p < rb; ++p) {
        a0[p] = (VEC){0};
        a1[p] = (VEC){0};
    }
    const REAL *u0 = w0, *u1 = w1;
    for (wino_index c = 0; c < C; ++c) {
        const REAL *xc = xq + c * cs;
        for (int i = 0; i < rd; ++i)
            for (int j = 0; j < rh; ++j) {
                const REAL *xr = xc + i * ds + j * hs;
                for (int l = 0; l < rw; ++l) {
                    VEC v0, v1 = (VEC){0};
                    memcpy(&v0, u0, sizeof(VEC));
                    u0 += VL;
                    if (nkv > 1) {
                        memcpy(&v1, u1, sizeof(VEC));
                        u1 += VL;
                    }
                    for (int p = 0; p < rb; ++p) {
                        const REAL s = xr[p + l];
                        a0[p] += v0 * s;
                        if (nkv > 1) a1[p] += v1 * s;
                    }
                }
            }
    }
    for (int p = 0; p < rb; ++p) {
        out[p] = a0[p];
        if (nkv > 1) out[WINO_DIRECT_RB + p] = a1[p];
    }
}

static void FN(direct_block_any)(const REAL *xq, wino_index cs, wino_index ds, wino_index hs,
                                 const REAL *w0, const REAL *w1, wino_index C, int rd, int rh, int rw,
                                 int nkv, int rb, VEC *out)
{
#define WINO_DIRECT_CASE(RB_)                                                            \
    case RB_:                                                                           \
        if (nkv > 1) FN(direct_block)(xq, cs, ds, hs, w0, w1, C, rd, rh, rw, 2, RB_, out); \
        else FN(direct_block)(xq, cs, ds, hs, w0, w1, C, rd, rh, rw, 1, RB_, out);         \
        break;
    switch (rb) {
        WINO_DIRECT_CASE(1) WINO_DIRECT_CASE(2) WINO_DIRECT_CASE(3) WINO_DIRECT_CASE(4)
        WINO_DIRECT_CASE(5) WINO_DIRECT_CASE(6)
#if WINO_DIRECT_RB > 6
        WINO_DIRECT_CASE(7) WINO_DIRECT_CASE(8) WINO_DIRECT_CASE(9) WINO_DIRECT_CASE(10)
        WINO_DIRECT_CASE(11) WINO_DIRECT_CASE(12)
#endif
        default: break;
    }
#undef WINO_DIRECT_CASE
}

int FN(wino_direct_pack_w)(const wino_geom *g, const REAL *w, wino_index sk, wino_index sc,
                           wino_index st, const unsigned char *tap_mask, REAL *Wp, int nthreads)
{
    const wino_index K = g->K, C = g->C, T = g->r[0] * g->r[1] * g->r[2];
    const wino_index nkb = (K + VL - 1) / VL;
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (wino_index job = 0; job < nkb * C; ++job) {
        const wino_index kb = job / C, c = job - kb * C;
        REAL *dst = Wp + job * T * VL;
        for (wino_index t = 0; t < T; ++t) {
            const int keep = !tap_mask || tap_mask[t];
            for (int k = 0; k < VL; ++k) {
                const wino_index kk = kb * VL + k;
                dst[t * VL + k] = (keep && kk < K) ? w[kk * sk + c * sc + t * st] : (REAL)0;
            }
        }
    }
    return 0;
}

/* Zero-padded copy of input planes [d0 - pad_d, d0 - pad_d + npl) of sample n:
 * xp[c][plane][Hp][pitch], pitch >= Wp = Wo + rw - 1 (the columns past Wp are
 * zero).  Jobs are rows; each copies the row of every channel (a
 * channels-last input is read a pixel's channels at a time). */
static void FN(direct_pad_slab)(const wino_geom *g, const REAL *x, wino_index n, wino_index d0,
                                wino_index npl, wino_index pitch, REAL *xp, int nthreads)
{
    const wino_index C = g->C, Ho = g->od[1], Wo = g->od[2];
    const wino_index Hp = Ho + g->r[1] - 1, Wp = Wo + g->r[2] - 1, Sp = Hp * pitch, cs = npl * Sp;
    const wino_index sw = g->xs[4];
    wino_index lo = g->pad[2], hi = g->pad[2] + g->W;
    lo = lo < 0 ? 0 : (lo > Wp ? Wp : lo);
    hi = hi < lo ? lo : (hi > Wp ? Wp : hi);
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (wino_index row = 0; row < npl * Hp; ++row) {
        const wino_index pi = row / Hp, ph = row - pi * Hp;
        const wino_index xd = d0 - g->pad[0] + pi, xh = ph - g->pad[1];
        REAL *dst0 = xp + pi * Sp + ph * pitch;
        if (xd < 0 || xd >= g->D || xh < 0 || xh >= g->H) {
            for (wino_index c = 0; c < C; ++c) memset(dst0 + c * cs, 0, sizeof(REAL) * (size_t)pitch);
            continue;
        }
        const REAL *src0 = x + n * g->xs[0] + xd * g->xs[2] + xh * g->xs[3] + (lo - g->pad[2]) * sw;
        for (wino_index c = 0; c < C; ++c) {
            REAL *dst = dst0 + c * cs;
            const REAL *src = src0 + c * g->xs[1];
            wino_index e = 0;
            for (; e < lo; ++e) dst[e] = 0;
            if (sw == 1)
                for (; e < hi; ++e) dst[e] = src[e - lo];
            else
                for (; e < hi; ++e) dst[e] = src[(e - lo) * sw];
            for (; e < pitch; ++e) dst[e] = 0;
        }
    }
}

/* Output channels in the lanes, over output planes [d0, d0 + nd) of sample n
 * whose padded input slab (row pitch Wp = Wo + rw - 1) is in `scratch`:
 * register blocks of 2 channel vectors x RB flattened positions (direct.h). */
static void FN(direct_slab_klanes)(const wino_geom *g, const REAL *Wpk, const REAL *bias, REAL *y,
                                   const REAL *scratch, wino_index pitch, wino_index n, wino_index d0,
                                   wino_index nd, int nthreads)
{
    const wino_index C = g->C, K = g->K, Do = g->od[0], Ho = g->od[1], Wo = g->od[2];
    const int rd = (int)g->r[0], rh = (int)g->r[1], rw = (int)g->r[2];
    const wino_index Hp = Ho + rh - 1, Wp = pitch, Sp = Hp * Wp, T = (wino_index)rd * rh * rw;
    const wino_index nkb = (K + VL - 1) / VL, ngr = (nkb + 1) / 2;
    /* flattened positions q = oh * Wp + ow of one output plane; those with
     * ow >= Wo are computed and dropped */
    const wino_index Qn = (Ho - 1) * Wp + Wo;
    const wino_index qchunk = (wino_index)WINO_DIRECT_RB * 8, nqc = (Qn + qchunk - 1) / qchunk;
    const wino_index plane = Ho * Wo, cs = (nd + rd - 1) * Sp;
    /* dynamic: a job is computed whole by whichever thread takes it, so the
     * result is the same; a descheduled thread on a busy machine does not
     * hold the others at the barrier */
#pragma omp parallel for num_threads(nthreads) schedule(dynamic, 1)
    for (wino_index job = 0; job < ngr * nd * nqc; ++job) {
        const wino_index gi = job / (nd * nqc), rem = job - gi * (nd * nqc);
        const wino_index odl = rem / nqc, qc = rem - odl * nqc;
        const wino_index kb0 = 2 * gi;
        const int nkv = kb0 + 1 < nkb ? 2 : 1;
        const REAL *w0 = Wpk + kb0 * C * T * VL;
        const REAL *w1 = nkv > 1 ? w0 + C * T * VL : w0;
        const wino_index q_end = (qc + 1) * qchunk < Qn ? (qc + 1) * qchunk : Qn;
        const wino_index od = d0 + odl;
        for (wino_index q0 = qc * qchunk; q0 < q_end; q0 += WINO_DIRECT_RB) {
            const int rb = q_end - q0 < WINO_DIRECT_RB ? (int)(q_end - q0) : WINO_DIRECT_RB;
            VEC acc[2 * WINO_DIRECT_RB];
            FN(direct_block_any)(scratch + odl * Sp + q0, cs, Sp, Wp, w0, w1, C, rd, rh, rw,
                                 nkv, rb, acc);
            /* the block's positions are runs along output rows: (p0, length, y offset) */
            const wino_index oh0 = q0 / Wp;
            wino_index ow = q0 - oh0 * Wp, yrow = od * plane + oh0 * Wo;
            int run_p[WINO_DIRECT_RB], run_len[WINO_DIRECT_RB], nrun = 0;
            wino_index run_y[WINO_DIRECT_RB];
            for (int p = 0; p < rb;) {
                if (ow >= Wo) { /* padding columns: skip to the next row */
                    const int skip = (int)(Wp - ow) < rb - p ? (int)(Wp - ow) : rb - p;
                    p += skip;
                    ow += skip;
                    if (ow == Wp) { ow = 0; yrow += Wo; }
                    continue;
                }
                const int len = (int)(Wo - ow) < rb - p ? (int)(Wo - ow) : rb - p;
                run_p[nrun] = p;
                run_len[nrun] = len;
                run_y[nrun++] = yrow + ow;
                p += len;
                ow += len;
            }
            for (int kv = 0; kv < nkv; ++kv) {
                const wino_index kb = kb0 + kv;
                const int lanes = K - kb * VL < VL ? (int)(K - kb * VL) : VL;
                const REAL *t = (const REAL *)(acc + kv * WINO_DIRECT_RB);
                for (int k = 0; k < lanes; ++k) {
                    const wino_index kk = kb * VL + k;
                    const REAL b = bias ? bias[kk] : (REAL)0;
                    REAL *yk = y + (n * K + kk) * Do * plane;
                    if (nrun == 1 && run_len[0] == WINO_DIRECT_RB) { /* a whole block in one row */
                        REAL *dst = yk + run_y[0];
                        for (int p = 0; p < WINO_DIRECT_RB; ++p) dst[p] = t[p * VL + k] + b;
                        continue;
                    }
                    for (int r = 0; r < nrun; ++r) {
                        REAL *dst = yk + run_y[r];
                        const REAL *src = t + run_p[r] * VL + k;
                        for (int p = 0; p < run_len[r]; ++p) dst[p] = src[p * VL] + b;
                    }
                }
            }
        }
    }
}

/* One positions-in-lanes register block: acc[kk][p] += Wp[kb][c][tap][kk0 + kk]
 * * xpad[c][row + tap offset + p * VL + lane] for WINO_DIRECT_KB output
 * channels (broadcast) and pv (<= WINO_DIRECT_PV) vectors of VL consecutive
 * outputs along w (unaligned loads).  Inlined with constant pv (see
 * direct_wblock_any).  Summation order per output: (c, i, j, l), as in
 * direct_block. */
WINO_INLINE void FN(direct_wblock)(const REAL *WINO_RESTRICT xq, wino_index cs, wino_index ds,
                                   wino_index hs, const REAL *WINO_RESTRICT wk, wino_index C,
                                   int rd, int rh, int rw, const int pv, VEC *WINO_RESTRICT out)
{
    VEC acc[WINO_DIRECT_KB][WINO_DIRECT_PV];
    for (int kk = 0; kk < WINO_DIRECT_KB; ++kk)
        for (int p = 0; p < pv; ++p) acc[kk][p] = (VEC){0};
    const REAL *u = wk;
    for (wino_index c = 0; c < C; ++c) {
        const REAL *xc = xq + c * cs;
        for (int i = 0; i < rd; ++i)
            for (int j = 0; j < rh; ++j) {
                const REAL *xr = xc + i * ds + j * hs;
                for (int l = 0; l < rw; ++l, u += VL) {
                    VEC xv[WINO_DIRECT_PV];
                    for (int p = 0; p < pv; ++p) xv[p] = *(const VEC_U *)(xr + l + p * VL);
                    for (int kk = 0; kk < WINO_DIRECT_KB; ++kk) {
                        const REAL s = u[kk];
                        for (int p = 0; p < pv; ++p) acc[kk][p] += xv[p] * s;
                    }
                }
            }
    }
    for (int kk = 0; kk < WINO_DIRECT_KB; ++kk)
        for (int p = 0; p < pv; ++p) out[kk * WINO_DIRECT_PV + p] = acc[kk][p];
}

static void FN(direct_wblock_any)(const REAL *xq, wino_index cs, wino_index ds, wino_index hs,
                                  const REAL *wk, wino_index C, int rd, int rh, int rw, int pv,
                                  VEC *out)
{
#define WINO_DIRECT_CASE(PV_)                                                   \
    case PV_:                                                                  \
        FN(direct_wblock)(xq, cs, ds, hs, wk, C, rd, rh, rw, PV_, out);         \
        break;
    switch (pv) {
        WINO_DIRECT_CASE(1) WINO_DIRECT_CASE(2) WINO_DIRECT_CASE(3)
#if WINO_DIRECT_PV > 3
        WINO_DIRECT_CASE(4) WINO_DIRECT_CASE(5) WINO_DIRECT_CASE(6)
#endif
        default: break;
    }
#undef WINO_DIRECT_CASE
}

/* Output positions along w in the lanes: each job is a block of output rows
 * of one plane of a slab; it runs every group of WINO_DIRECT_KB output
 * channels over those rows in blocks of WINO_DIRECT_PV vectors and stores
 * whole vectors of y (the last one of a row partially).  The slab's rows are
 * padded to a pitch of ceil(Wo / VL) * VL + rw - 1 (wino_direct_forward), so
 * every vector load stays in its row. */
static void FN(direct_slab_wlanes)(const wino_geom *g, const REAL *Wpk, const REAL *bias, REAL *y,
                                   const REAL *scratch, wino_index pitch, wino_index n, wino_index d0,
                                   wino_index nd, int nthreads)
{
    const wino_index C = g->C, K = g->K, Do = g->od[0], Ho = g->od[1], Wo = g->od[2];
    const int rd = (int)g->r[0], rh = (int)g->r[1], rw = (int)g->r[2];
    const wino_index nwv = (Wo + VL - 1) / VL;
    const wino_index Hp = Ho + rh - 1, Sp = Hp * pitch, T = (wino_index)rd * rh * rw;
    const wino_index ngrp = (K + WINO_DIRECT_KB - 1) / WINO_DIRECT_KB, plane = Ho * Wo;
    /* a job is a block of `rows` output rows: each group of channels writes
     * them as one contiguous run of y per channel (prefetchers follow a few
     * long runs, not many 1-row pieces), while the input rows the block
     * reads, C * rd * (rows + rh - 1) of them, stay within about 256 KiB */
    const wino_index row_bytes = (wino_index)sizeof(REAL) * C * rd * pitch;
    wino_index rows = (wino_index)(256 * 1024) / (row_bytes > 0 ? row_bytes : 1) - (rh - 1);
    rows = rows < 1 ? 1 : (rows > Ho ? Ho : rows);
    const wino_index nrb = (Ho + rows - 1) / rows, cs = (nd + rd - 1) * Sp;
#pragma omp parallel for num_threads(nthreads) schedule(dynamic, 1)
    for (wino_index job = 0; job < nd * nrb; ++job) {
        const wino_index odl = job / nrb, oh0 = (job - odl * nrb) * rows;
        const wino_index oh1 = oh0 + rows < Ho ? oh0 + rows : Ho, od = d0 + odl;
        for (wino_index kg = 0; kg < ngrp; ++kg) {
            const wino_index k0 = kg * WINO_DIRECT_KB, kb = k0 / VL;
            const REAL *wk = Wpk + kb * C * T * VL + (k0 - kb * VL);
            const int nk = K - k0 < WINO_DIRECT_KB ? (int)(K - k0) : WINO_DIRECT_KB;
            for (wino_index oh = oh0; oh < oh1; ++oh) {
                const REAL *xrow = scratch + odl * Sp + oh * pitch;
                for (wino_index v0 = 0; v0 < nwv; v0 += WINO_DIRECT_PV) {
                    const int pv = nwv - v0 < WINO_DIRECT_PV ? (int)(nwv - v0) : WINO_DIRECT_PV;
                    VEC acc[WINO_DIRECT_KB * WINO_DIRECT_PV];
                    FN(direct_wblock_any)(xrow + v0 * VL, cs, Sp, pitch, wk, C, rd, rh, rw, pv, acc);
                    for (int kk = 0; kk < nk; ++kk) {
                        const REAL b = bias ? bias[k0 + kk] : (REAL)0;
                        REAL *yr = y + ((n * K + k0 + kk) * Do + od) * plane + oh * Wo;
                        for (int p = 0; p < pv; ++p) {
                            const wino_index ow = (v0 + p) * VL;
                            const VEC r = acc[kk * WINO_DIRECT_PV + p] + b;
                            const int cnt = Wo - ow < VL ? (int)(Wo - ow) : VL;
                            if (cnt == VL) *(VEC_U *)(yr + ow) = r;
                            else memcpy(yr + ow, &r, sizeof(REAL) * (size_t)cnt);
                        }
                    }
                }
            }
        }
    }
}

int FN(wino_direct_forward)(const wino_geom *g, const REAL *x, const REAL *Wpk, const REAL *bias,
                            REAL *y, REAL *scratch, wino_index slab_planes, int variant, int nthreads)
{
    if (variant == WINO_DIRECT_AUTO) variant = wino_direct_variant(g, (int)sizeof(REAL));
    const wino_index Do = g->od[0], Wo = g->od[2], rw = g->r[2];
    /* row pitch of the padded slab: whole vectors plus the taps (position
     * lanes), or just the taps (channel lanes: flattened positions) */
    const wino_index pitch = variant == WINO_DIRECT_WLANES ? (Wo + VL - 1) / VL * VL + rw - 1 : Wo + rw - 1;
    if (slab_planes < 1) slab_planes = 1;
    for (wino_index n = 0; n < g->N; ++n)
        for (wino_index d0 = 0; d0 < Do; d0 += slab_planes) {
            const wino_index nd = Do - d0 < slab_planes ? Do - d0 : slab_planes;
            FN(direct_pad_slab)(g, x, n, d0, nd + g->r[0] - 1, pitch, scratch, nthreads);
            if (variant == WINO_DIRECT_WLANES)
                FN(direct_slab_wlanes)(g, Wpk, bias, y, scratch, pitch, n, d0, nd, nthreads);
            else
                FN(direct_slab_klanes)(g, Wpk, bias, y, scratch, pitch, n, d0, nd, nthreads);
        }
    return 0;
}

#include "template_names_end.h"
