/*
 * affine.template.h -- prologues and epilogues on the CPU (issue 28): the
 * per-channel affine map, activation and residual of src/wino3d_fusion.h on
 * SIMD vectors (channels in the lanes, for the fused pipeline), and the
 * one-pass kernel wino_channel_affine over a whole array (the standalone
 * pywino3d.channel_affine, and the pre- and post-passes of the pipelines
 * that do not fuse in their loops).
 *
 * Determinism: every value is computed by one thread from its own inputs;
 * statistics are per-part (count, mean, M2) in float64 over parts fixed by
 * the shape alone (a d-slice of one (sample, channel) here, a tile in the
 * fused pipeline), merged in part order (wino_moments_merge), so the bits
 * do not depend on the number of threads.
 *
 * Template (see template_names.h): define WINO_REAL and WINO_SUFFIX.
 */
#include "template_names.h"

#define ACT1 WINO_CAT(wino_act_, WINO_SUFFIX)
/* Half a channel vector, as REAL and as double: the statistics run on
 * halves so that the doubles fit the hardware's vectors (a conversion of a
 * whole 16-float vector into one 128-byte double vector went through the
 * stack: the stats epilogue cost 30 % of a C32 layer, 4 % on halves). */
#define HALF (VL / 2)
typedef REAL WINO_CAT(wino_hvec_, WINO_SUFFIX) __attribute__((vector_size(HALF * sizeof(REAL))));
typedef double WINO_CAT(wino_dvec_, WINO_SUFFIX) __attribute__((vector_size(HALF * 8)));
#define HVEC WINO_CAT(wino_hvec_, WINO_SUFFIX)
#define DVEC WINO_CAT(wino_dvec_, WINO_SUFFIX)

/* act(v) lane-wise, alpha per lane: the cheap kinds as vector selects, the
 * others through the scalar function of wino3d_fusion.h. */
static inline VEC FN(act_vec)(int act, VEC v, VEC alpha)
{
    switch (act) {
    case WINO_ACT_IDENTITY: return v;
    case WINO_ACT_RELU: {
        const __typeof__(v < v) neg = v < (VEC){0};
        return (VEC)((__typeof__(neg))v & ~neg);
    }
    case WINO_ACT_LEAKY_RELU:
    case WINO_ACT_PRELU: {
        const __typeof__(v < v) pos = v >= (VEC){0};
        const VEC s = v * alpha;
        return (VEC)(((__typeof__(pos))v & pos) | ((__typeof__(pos))s & ~pos));
    }
    default:
        for (int l = 0; l < VL; ++l) v[l] = ACT1(act, v[l], alpha[l]);
        return v;
    }
}

/* The vectors of a prologue or epilogue for channels c0 .. c0 + lanes of
 * sample n: scale, shift and the activation's parameter (lanes past `lanes`
 * get 1, 0 and alpha; their results are never stored). */
typedef struct {
    VEC scale, shift, alpha;
    int has_affine;
} FN(affine_vecs);

static inline FN(affine_vecs) FN(affine_vecs_at)(const wino_fusion *f, wino_index n, wino_index c0, int lanes)
{
    FN(affine_vecs) a;
    for (int l = 0; l < VL; ++l) {
        a.scale[l] = 1;
        a.shift[l] = 0;
        a.alpha[l] = (REAL)f->alpha;
    }
    const wino_index off = n * f->sn + c0;
    if (f->scale) memcpy(&a.scale, (const REAL *)f->scale + off, sizeof(REAL) * (size_t)lanes);
    if (f->shift) memcpy(&a.shift, (const REAL *)f->shift + off, sizeof(REAL) * (size_t)lanes);
    if (f->alphas) memcpy(&a.alpha, (const REAL *)f->alphas + c0, sizeof(REAL) * (size_t)lanes);
    a.has_affine = f->scale || f->shift;
    return a;
}

/* act on `count` vectors, the kind chosen once (a switch inside the
 * vector loop was not hoisted: the prologue's copy took 1.5x as long). */
static inline void FN(act_vecs)(int act, VEC *v, int count, VEC alpha)
{
    switch (act) {
    case WINO_ACT_IDENTITY: return;
    case WINO_ACT_RELU:
        for (int j = 0; j < count; ++j) v[j] = FN(act_vec)(WINO_ACT_RELU, v[j], alpha);
        return;
    case WINO_ACT_LEAKY_RELU:
    case WINO_ACT_PRELU:
        for (int j = 0; j < count; ++j) v[j] = FN(act_vec)(WINO_ACT_LEAKY_RELU, v[j], alpha);
        return;
    default:
        for (int j = 0; j < count; ++j) v[j] = FN(act_vec)(act, v[j], alpha);
        return;
    }
}

/* act(v * scale + shift) lane-wise on `count` vectors: the prologue's map
 * (the fused pipeline's copy calls it per VL x VL block). */
static inline void FN(affine_act_vecs)(const wino_fusion *f, const FN(affine_vecs) *a, VEC *v, int count)
{
    if (a->has_affine)
        for (int j = 0; j < count; ++j) v[j] = v[j] * a->scale + a->shift;
    FN(act_vecs)(f->act, v, count, a->alpha);
}

/* The same for one value of channel c of sample n. */
static inline REAL FN(affine_act1)(const wino_fusion *f, wino_index n, wino_index c, REAL v)
{
    if (f->scale) v *= ((const REAL *)f->scale)[n * f->sn + c];
    if (f->shift) v += ((const REAL *)f->shift)[n * f->sn + c];
    return ACT1(f->act, v, f->alphas ? ((const REAL *)f->alphas)[c] : (REAL)f->alpha);
}

/* row[e] += the residual at voxel e (stride ws) of channels l < lanes
 * (stride ks): a gather across the channel lanes. */
static inline void FN(add_residual_row)(VEC *row, int ew, int lanes, const REAL *res, wino_index ks,
                                        wino_index ws)
{
    for (int e = 0; e < ew; ++e) {
        VEC r = (VEC){0};
        for (int l = 0; l < lanes; ++l) r[l] = res[l * ks + e * ws];
        row[e] = row[e] + r;
    }
}

/* The epilogue of one output tile of the fused pipeline, in place on its
 * contracted values (tile[(a * mh + c) * mw + e], a < ed, c < eh, e < ew, one
 * vector of channels k0 .. k0 + lanes each) before they are stored: bias,
 * scale and shift, residual (read from f->res at the tile's voxels of sample
 * n, origin o), activation; with `part`, this tile's float64 mean and M2 per
 * channel of the values as stored (part[k0 + l] and part[KP + k0 + l]). */
static void FN(fused_epilogue_tile)(VEC *tile, int mh, int mw, int ed, int eh, int ew, int lanes,
                                    wino_index n, const wino_index o[3], wino_index k0, const REAL *bias,
                                    const wino_fusion *f, double *part, wino_index KP)
{
    const FN(affine_vecs) av = FN(affine_vecs_at)(f, n, k0, lanes);
    VEC b = (VEC){0};
    if (bias) memcpy(&b, bias + k0, sizeof(REAL) * (size_t)lanes);
    const REAL *res = (const REAL *)f->res;
    const wino_index *rs = f->rs;
    const int after = f->res_after;
    for (int a = 0; a < ed; ++a)
        for (int c = 0; c < eh; ++c) {
            VEC *row = tile + (a * mh + c) * mw;
            const REAL *rrow = res ? res + n * rs[0] + k0 * rs[1] + (o[0] + a) * rs[2] + (o[1] + c) * rs[3] +
                                         o[2] * rs[4] : NULL;
            if (bias)
                for (int e = 0; e < ew; ++e) row[e] = row[e] + b;
            if (av.has_affine)
                for (int e = 0; e < ew; ++e) row[e] = row[e] * av.scale + av.shift;
            if (rrow && !after) FN(add_residual_row)(row, ew, lanes, rrow, rs[1], rs[4]);
            FN(act_vecs)(f->act, row, ew, av.alpha);
            if (rrow && after) FN(add_residual_row)(row, ew, lanes, rrow, rs[1], rs[4]);
        }
    if (!part) return;
    for (int h = 0; h < 2; ++h) { /* lanes [h * HALF, (h + 1) * HALF) */
        DVEC s = (DVEC){0}, m2 = (DVEC){0};
        HVEC v;
        for (int a = 0; a < ed; ++a)
            for (int c = 0; c < eh; ++c)
                for (int e = 0; e < ew; ++e) {
                    memcpy(&v, (const REAL *)(tile + (a * mh + c) * mw + e) + h * HALF, sizeof v);
                    s += __builtin_convertvector(v, DVEC);
                }
        const DVEC mean = s / (double)(ed * eh * ew);
        for (int a = 0; a < ed; ++a)
            for (int c = 0; c < eh; ++c)
                for (int e = 0; e < ew; ++e) {
                    memcpy(&v, (const REAL *)(tile + (a * mh + c) * mw + e) + h * HALF, sizeof v);
                    const DVEC d = __builtin_convertvector(v, DVEC) - mean;
                    m2 += d * d;
                }
        memcpy(part + k0 + h * HALF, &mean, sizeof mean);
        memcpy(part + KP + k0 + h * HALF, &m2, sizeof m2);
    }
}

/* act(row[i]) for a row of values, the kind chosen once (the cheap kinds
 * vectorise). */
static void FN(act_row)(int act, REAL *row, int len, REAL alpha)
{
    switch (act) {
    case WINO_ACT_IDENTITY: return;
    case WINO_ACT_RELU:
        for (int i = 0; i < len; ++i) row[i] = row[i] < 0 ? 0 : row[i];
        return;
    case WINO_ACT_LEAKY_RELU:
    case WINO_ACT_PRELU:
        for (int i = 0; i < len; ++i) row[i] = row[i] >= 0 ? row[i] : row[i] * alpha;
        return;
    default:
        for (int i = 0; i < len; ++i) row[i] = ACT1(act, row[i], alpha);
        return;
    }
}

#define AFFINE_CHUNK 256 /* values of a row handled at once (on the stack) */

/* sum of row[i] (squares = 0) or of (row[i] - mean)^2 (squares = 1) in
 * float64, on half vectors in a fixed order (a scalar sum is one dependent
 * add per value: channel_affine with stats ran at under 1 GB/s). */
static double FN(row_sum)(const REAL *row, int len, double mean, int squares)
{
    DVEC acc = (DVEC){0};
    const DVEC mv = (DVEC){0} + mean;
    HVEC v;
    int i = 0;
    for (; i + HALF <= len; i += HALF) {
        memcpy(&v, row + i, sizeof v);
        DVEC d = __builtin_convertvector(v, DVEC);
        if (squares) {
            d -= mv;
            d *= d;
        }
        acc += d;
    }
    double t = 0;
    for (int l = 0; l < HALF; ++l) t += acc[l];
    for (; i < len; ++i) {
        const double d = squares ? (double)row[i] - mean : (double)row[i];
        t += squares ? d * d : d;
    }
    return t;
}

/* out = the epilogue's map of x, value by value, over arrays of shape
 * (N, C, D, H, W) with element strides xs and os (out may be x itself, same
 * strides): t = x * scale[n, c] + shift[n, c]; t += res (before or after
 * act); out = act(t).  With mean and var (float64, N * C each), also the
 * moments of out per (sample, channel), from per-d-slice parts (`part`,
 * 2 * N * C * D doubles) merged in d order. */
int FN(wino_channel_affine)(const wino_index shape[5], const REAL *x, const wino_index xs[5], REAL *out,
                            const wino_index os[5], const wino_fusion *f, double *part, double *mean,
                            double *var, int nthreads)
{
    const wino_index N = shape[0], C = shape[1], D = shape[2], H = shape[3], W = shape[4];
    const int stats = mean && var;
    if (stats && !part) return WINO_EARG;
    if (f->act < 0 || f->act >= WINO_ACT_COUNT) return WINO_EARG;
    const wino_index units = N * C * D;
    const REAL *res = (const REAL *)f->res;
    const wino_index *rs = f->rs;
#pragma omp parallel num_threads(nthreads)
    {
        REAL buf[AFFINE_CHUNK];
#pragma omp for schedule(static)
        for (wino_index u = 0; u < units; ++u) {
            const wino_index d = u % D, nc = u / D, c = nc % C, n = nc / C;
            const REAL s = f->scale ? ((const REAL *)f->scale)[n * f->sn + c] : (REAL)1;
            const REAL b = f->shift ? ((const REAL *)f->shift)[n * f->sn + c] : (REAL)0;
            const int affine = f->scale || f->shift;
            const REAL alpha = f->alphas ? ((const REAL *)f->alphas)[c] : (REAL)f->alpha;
            double cnt = 0, m = 0, m2 = 0;
            for (wino_index h = 0; h < H; ++h) {
                const REAL *xr = x + n * xs[0] + c * xs[1] + d * xs[2] + h * xs[3];
                REAL *orow = out + n * os[0] + c * os[1] + d * os[2] + h * os[3];
                const REAL *rr = res ? res + n * rs[0] + c * rs[1] + d * rs[2] + h * rs[3] : NULL;
                for (wino_index w0 = 0; w0 < W; w0 += AFFINE_CHUNK) {
                    const int len = (int)(W - w0 < AFFINE_CHUNK ? W - w0 : AFFINE_CHUNK);
                    const wino_index xw = xs[4], ow = os[4], rw = rs[4];
                    if (xw == 1)
                        for (int i = 0; i < len; ++i) buf[i] = xr[w0 + i];
                    else
                        for (int i = 0; i < len; ++i) buf[i] = xr[(w0 + i) * xw];
                    if (affine)
                        for (int i = 0; i < len; ++i) buf[i] = buf[i] * s + b;
                    if (rr && !f->res_after)
                        for (int i = 0; i < len; ++i) buf[i] += rr[(w0 + i) * rw];
                    FN(act_row)(f->act, buf, len, alpha);
                    if (rr && f->res_after)
                        for (int i = 0; i < len; ++i) buf[i] += rr[(w0 + i) * rw];
                    if (ow == 1)
                        for (int i = 0; i < len; ++i) orow[w0 + i] = buf[i];
                    else
                        for (int i = 0; i < len; ++i) orow[(w0 + i) * ow] = buf[i];
                    if (!stats) continue;
                    const double mb = FN(row_sum)(buf, len, 0.0, 0) / len;
                    wino_moments_merge(&cnt, &m, &m2, (double)len, mb, FN(row_sum)(buf, len, mb, 1));
                }
            }
            if (stats) {
                part[2 * u] = m;
                part[2 * u + 1] = m2;
            }
        }
        if (stats) {
#pragma omp for schedule(static)
            for (wino_index nc = 0; nc < N * C; ++nc) {
                double cnt = 0, m = 0, m2 = 0;
                for (wino_index d = 0; d < D; ++d)
                    wino_moments_merge(&cnt, &m, &m2, (double)(H * W), part[2 * (nc * D + d)],
                                       part[2 * (nc * D + d) + 1]);
                mean[nc] = m;
                var[nc] = cnt > 0 ? m2 / cnt : 0;
            }
        }
    }
    return 0;
}

#undef AFFINE_CHUNK
#undef ACT1
#undef HALF
#undef HVEC
#undef DVEC

#include "template_names_end.h"
