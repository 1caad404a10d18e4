/*
 * wino3d_kernels.cu -- the CUDA kernels of pywino3d (loaded with
 * cupy.RawModule, compiled by NVRTC).
 *
 * The per-tile transform math is wino3d_tile.template.h, the same template
 * the CPU extension compiles, so both backends run one piece of transform code.
 * Kernels are templates on the value type T and on AMAX, the largest
 * alpha (and n) over the three axes, which sizes the per-thread scratch.
 * Every (T, AMAX) pair used by the library is listed in kernel_names() of
 * pywino3d/_backends/cuda/sources.py and compiled through name_expressions
 * (launched by pywino3d/_backends/cuda/backend.py).
 *
 * Integer arguments: 64-bit (long long) for sizes and offsets, 32-bit (int)
 * for the small counts; the Python side passes numpy.int64 / numpy.int32.
 * The geometry is the struct wino_geom of wino3d_common.h, passed by value
 * (a NumPy record of pywino3d._core.geometry.GEOM_DTYPE on the Python side).
 */
#include "wino3d_common.h"
#include "wino3d_tile.h"
/* The per-value maths of prologues and epilogues (issue 28), shared with the
 * CPU kernels; the CUDA backend applies them through the array reference of
 * pywino3d._core.fusion for now, and compiles the header so that it stays
 * valid device code. */
#include "wino3d_fusion.h"

/* C++ overloads over the C-style instantiations. */
__device__ __forceinline__ void wino_expand(const wino_plan_f *p, const float *in, float *out,
                                            long long os, float *t1, float *t2)
{ wino_expand_f(p, in, out, os, t1, t2); }
__device__ __forceinline__ void wino_expand(const wino_plan_d *p, const double *in, double *out,
                                            long long os, double *t1, double *t2)
{ wino_expand_d(p, in, out, os, t1, t2); }
__device__ __forceinline__ void wino_contract(const wino_plan_f *p, const float *in, long long is,
                                              float *out, float *t1, float *t2)
{ wino_contract_f(p, in, is, out, t1, t2); }
__device__ __forceinline__ void wino_contract(const wino_plan_d *p, const double *in, long long is,
                                              double *out, double *t1, double *t2)
{ wino_contract_d(p, in, is, out, t1, t2); }

template <typename T> struct plan_of;
template <> struct plan_of<float> { typedef wino_plan_f type; };
template <> struct plan_of<double> { typedef wino_plan_d type; };

#define GEOM const wino_geom g

/* Plan arguments travel as raw pointers + small ints and are rebuilt into
 * the shared plan struct on the device. */
template <typename T>
__device__ __forceinline__ typename plan_of<T>::type make_plan(
    const T *X0, const T *X1, const T *X2, const int *dims /* a0 a1 a2 n0 n1 n2 */,
    const int *kept, int nk, const unsigned char *need_w, const unsigned char *need_hw)
{
    typename plan_of<T>::type p;
    p.X[0] = X0; p.X[1] = X1; p.X[2] = X2;
    for (int i = 0; i < 3; ++i) { p.a[i] = dims[i]; p.n[i] = dims[3 + i]; }
    p.kept = kept; p.nk = nk; p.need_w = need_w; p.need_hw = need_hw;
    return p;
}

#define PLAN_PARAMS const T *X0, const T *X1, const T *X2, const int *dims, const int *kept, \
                    int nk, const unsigned char *need_w, const unsigned char *need_hw
#define PLAN_ARGS X0, X1, X2, dims, kept, nk, need_w, need_hw

/* V[i, c, t] for kept position i, channel c, tile t0 + t (t < tb). */
template <typename T, int AMAX>
__global__ void input_transform(const T *__restrict__ x, GEOM, PLAN_PARAMS,
                                long long t0, long long tb, T *__restrict__ V)
{
    const long long C = g.C;
    const long long job = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (job >= C * tb) return;
    const long long c = job / tb, tt = job - c * tb;
    typename plan_of<T>::type pl = make_plan<T>(PLAN_ARGS);
    T patch[AMAX * AMAX * AMAX], t1[AMAX * AMAX * AMAX], t2[AMAX * AMAX * AMAX];
    wino_index n, o[3];
    wino_geom_tile_origin(&g, t0 + tt, &n, o);
    const T *xc = x + n * g.xs[0] + c * g.xs[1];
    const int ad = pl.a[0], ah = pl.a[1], aw = pl.a[2];
    for (int a = 0; a < ad; ++a) {
        const long long id = o[0] + a - g.pad[0];
        for (int b = 0; b < ah; ++b) {
            const long long ih = o[1] + b - g.pad[1];
            for (int e = 0; e < aw; ++e) {
                const long long iw = o[2] + e - g.pad[2];
                const bool ok = id >= 0 && id < g.D && ih >= 0 && ih < g.H && iw >= 0 && iw < g.W;
                patch[(a * ah + b) * aw + e] = ok ? xc[id * g.xs[2] + ih * g.xs[3] + iw * g.xs[4]] : T(0);
            }
        }
    }
    wino_expand(&pl, patch, V + c * tb + tt, C * tb, t1, t2);
}

/* y <- output transform of M[i, k, t] + bias[k]; y contiguous (N,K,Do,Ho,Wo). */
template <typename T, int AMAX>
__global__ void output_transform(const T *__restrict__ M, long long K, GEOM, PLAN_PARAMS,
                                 long long t0, long long tb, const T *__restrict__ bias,
                                 T *__restrict__ y)
{
    const long long job = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (job >= K * tb) return;
    const long long k = job / tb, tt = job - k * tb;
    typename plan_of<T>::type pl = make_plan<T>(PLAN_ARGS);
    T patch[AMAX * AMAX * AMAX], t1[AMAX * AMAX * AMAX], t2[AMAX * AMAX * AMAX];
    wino_contract(&pl, M + k * tb + tt, K * tb, patch, t1, t2);
    wino_index n, o[3];
    wino_geom_tile_origin(&g, t0 + tt, &n, o);
    const long long Do = g.od[0], Ho = g.od[1], Wo = g.od[2];
    const int md = pl.n[0], mh = pl.n[1], mw = pl.n[2];
    const T b = bias[k];
    T *yk = y + ((n * K + k) * Do) * Ho * Wo;
    for (int a = 0; a < md && o[0] + a < Do; ++a)
        for (int c = 0; c < mh && o[1] + c < Ho; ++c)
            for (int e = 0; e < mw && o[2] + e < Wo; ++e)
                yk[((o[0] + a) * Ho + o[1] + c) * Wo + o[2] + e] = patch[(a * mh + c) * mw + e] + b;
}

/* gM[i, k, t] = adjoint of the output transform applied to grad_y. */
template <typename T, int AMAX>
__global__ void output_adjoint(const T *__restrict__ gy, long long K, GEOM, PLAN_PARAMS,
                               long long t0, long long tb, T *__restrict__ gM)
{
    const long long job = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (job >= K * tb) return;
    const long long k = job / tb, tt = job - k * tb;
    typename plan_of<T>::type pl = make_plan<T>(PLAN_ARGS);
    T patch[AMAX * AMAX * AMAX], t1[AMAX * AMAX * AMAX], t2[AMAX * AMAX * AMAX];
    wino_index n, o[3];
    wino_geom_tile_origin(&g, t0 + tt, &n, o);
    const long long Do = g.od[0], Ho = g.od[1], Wo = g.od[2];
    const int md = pl.n[0], mh = pl.n[1], mw = pl.n[2];
    const T *gk = gy + ((n * K + k) * Do) * Ho * Wo;
    for (int a = 0; a < md; ++a)
        for (int c = 0; c < mh; ++c)
            for (int e = 0; e < mw; ++e) {
                const bool ok = o[0] + a < Do && o[1] + c < Ho && o[2] + e < Wo;
                patch[(a * mh + c) * mw + e] = ok ? gk[((o[0] + a) * Ho + o[1] + c) * Wo + o[2] + e] : T(0);
            }
    wino_expand(&pl, patch, gM + k * tb + tt, K * tb, t1, t2);
}

/* Patch gradients P[c, t, :] = adjoint of the input transform of gV[:, c, t]
 * (first of two passes; the second, input_adjoint_gather, sums them into
 * grad_x in a fixed order, so the result is deterministic). */
template <typename T, int AMAX>
__global__ void input_adjoint_patches(const T *__restrict__ gV, GEOM, PLAN_PARAMS,
                                      long long tb, T *__restrict__ P)
{
    const long long C = g.C;
    const long long job = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (job >= C * tb) return;
    const long long c = job / tb, tt = job - c * tb;
    typename plan_of<T>::type pl = make_plan<T>(PLAN_ARGS);
    T t1[AMAX * AMAX * AMAX], t2[AMAX * AMAX * AMAX];
    const long long asz = (long long)pl.a[0] * pl.a[1] * pl.a[2];
    wino_contract(&pl, gV + c * tb + tt, C * tb, P + job * asz, t1, t2);
}

/* grad_x[n, c, i, j, l] += sum over the block's tiles whose patch covers it,
 * in increasing tile order. One thread per input element. */
template <typename T>
__global__ void input_adjoint_gather(const T *__restrict__ P, GEOM, long long t0, long long tb,
                                     T *__restrict__ gx)
{
    const long long N = g.N, C = g.C, D = g.D, H = g.H, W = g.W;
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= N * C * D * H * W) return;
    long long r = idx;
    const long long l = r % W; r /= W;
    const long long j = r % H; r /= H;
    const long long i = r % D; r /= D;
    const long long c = r % C;
    const long long n = r / C;
    const long long a[3] = {g.a[0], g.a[1], g.a[2]};
    const long long m[3] = {g.m[0], g.m[1], g.m[2]}, nt[3] = {g.nt[0], g.nt[1], g.nt[2]};
    const long long pos[3] = {i + g.pad[0], j + g.pad[1], l + g.pad[2]};  /* padded coordinates */
    long long lo[3], hi[3];
    for (int ax = 0; ax < 3; ++ax) {
        /* tiles q with q*m <= pos < q*m + a */
        long long q_hi = pos[ax] / m[ax];
        long long q_lo = pos[ax] - a[ax] + 1;
        q_lo = q_lo <= 0 ? 0 : (q_lo + m[ax] - 1) / m[ax];
        if (q_hi > nt[ax] - 1) q_hi = nt[ax] - 1;
        lo[ax] = q_lo; hi[ax] = q_hi;
    }
    const long long asz = (long long)a[0] * a[1] * a[2];
    const long long tiles_per_n = nt[0] * nt[1] * nt[2];
    T s = T(0);
    for (long long qd = lo[0]; qd <= hi[0]; ++qd)
        for (long long qh = lo[1]; qh <= hi[1]; ++qh)
            for (long long qw = lo[2]; qw <= hi[2]; ++qw) {
                const long long t = n * tiles_per_n + (qd * nt[1] + qh) * nt[2] + qw;
                if (t < t0 || t >= t0 + tb) continue;
                const long long pa = pos[0] - qd * m[0], pb = pos[1] - qh * m[1], pc = pos[2] - qw * m[2];
                s += P[(c * tb + (t - t0)) * asz + (pa * a[1] + pb) * a[2] + pc];
            }
    gx[idx] += s;
}

/* Filter transform (all positions kept), one kernel per thread:
 * adjoint = 0: dst = U, dst[i, j] = expand(src[j]);
 * adjoint = 1: dst = grad_w, dst[j] = contract(src[:, j]). */
template <typename T, int AMAX>
__global__ void filter_transform(const T *__restrict__ src, long long KC, PLAN_PARAMS, int adjoint,
                                 T *__restrict__ dst)
{
    const long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= KC) return;
    typename plan_of<T>::type pl = make_plan<T>(PLAN_ARGS);
    T t1[AMAX * AMAX * AMAX], t2[AMAX * AMAX * AMAX];
    const long long rsz = (long long)pl.n[0] * pl.n[1] * pl.n[2];
    if (adjoint)
        wino_contract(&pl, src + j, KC, dst + j * rsz, t1, t2);
    else
        wino_expand(&pl, src + j * rsz, dst + j, KC, t1, t2);
}

/* Column-sparse batched product: C[cidx[b]] (+)= A[aidx[b]] @ B[b] for the
 * kept positions only (aidx/cidx: position indices, identity when dense).  A and B take any
 * element strides (transposes are free); C rows are contiguous.  Classic
 * shared-memory tiling: a BM x BN block of C per thread block, BK-deep
 * slabs of A and B staged in shared memory, each thread owning a TM x TN
 * micro-tile of C in registers.  grid = (ceil(N/BN), ceil(M/BM), nb). */
template <typename T, int BM, int BN, int BK, int TM, int TN>
__global__ void __launch_bounds__((BM / TM) * (BN / TN))
sparse_gemm(long long M, long long N, long long K,
            const T *__restrict__ A, const int *__restrict__ aidx, long long sa, long long rsa, long long csa,
            const T *__restrict__ B, long long sb, long long rsb, long long csb,
            T *__restrict__ Cm, const int *__restrict__ cidx, long long sc, long long rsc, int accumulate)
{
    __shared__ T As[BK][BM + 1];
    __shared__ T Bs[BK][BN + 1];
    const int b = blockIdx.z;
    const T *Ab = A + (long long)aidx[b] * sa;
    const T *Bb = B + (long long)b * sb;
    T *Cb = Cm + (long long)cidx[b] * sc;
    const long long i0 = (long long)blockIdx.y * BM, j0 = (long long)blockIdx.x * BN;
    const int tx = threadIdx.x % (BN / TN), ty = threadIdx.x / (BN / TN);
    const int nthr = (BM / TM) * (BN / TN);
    T acc[TM][TN];
    for (int u = 0; u < TM; ++u)
        for (int v = 0; v < TN; ++v) acc[u][v] = T(0);
    for (long long k0 = 0; k0 < K; k0 += BK) {
        for (int e = threadIdx.x; e < BK * BM; e += nthr) {
            const int kk = e / BM, ii = e % BM;
            const long long gi = i0 + ii, gk = k0 + kk;
            As[kk][ii] = (gi < M && gk < K) ? Ab[gi * rsa + gk * csa] : T(0);
        }
        for (int e = threadIdx.x; e < BK * BN; e += nthr) {
            const int kk = e / BN, jj = e % BN;
            const long long gj = j0 + jj, gk = k0 + kk;
            Bs[kk][jj] = (gj < N && gk < K) ? Bb[gk * rsb + gj * csb] : T(0);
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < BK; ++kk) {
            T a[TM], bv[TN];
#pragma unroll
            for (int u = 0; u < TM; ++u) a[u] = As[kk][ty * TM + u];
#pragma unroll
            for (int v = 0; v < TN; ++v) bv[v] = Bs[kk][tx * TN + v];
#pragma unroll
            for (int u = 0; u < TM; ++u)
#pragma unroll
                for (int v = 0; v < TN; ++v) acc[u][v] += a[u] * bv[v];
        }
        __syncthreads();
    }
    for (int u = 0; u < TM; ++u) {
        const long long gi = i0 + ty * TM + u;
        if (gi >= M) continue;
        for (int v = 0; v < TN; ++v) {
            const long long gj = j0 + tx * TN + v;
            if (gj >= N) continue;
            T *dst = Cb + gi * rsc + gj;
            *dst = accumulate ? *dst + acc[u][v] : acc[u][v];
        }
    }
}
