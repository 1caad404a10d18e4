/*
 * wino3d_cpu.h -- the CPU kernels of pywino3d (C99 + OpenMP): every entry
 * point of src/cpu/, as called by pywino3d/_backends/cpu/_ext/_cpu.pyx.
 *
 * The convolution runs over blocks of tiles; for one block of `tb` tiles
 * starting at tile `t0` the stages are
 *   wino_input_block   x  -> V  [nk][C][tb]   (kept positions only)
 *   wino_gemm_batched  M[i] = U[kept[i]] @ V[i]      ([nk][K][tb])
 *     or wino_product_w  the same, U made from w inside it (one-shot calls)
 *   wino_output_block  M  -> y   (+ bias), for a chunk of K output channels
 *                      (y has ky channels; pass y and bias offset to the chunk)
 * and for the backward pass
 *   wino_output_adjoint_block  grad_y -> grad_M
 *   wino_gemm_batched          grad_V[i] = U[kept[i]]^T @ grad_M[i]
 *                              grad_U[kept[i]] += grad_M[i] @ V[i]^T
 *   wino_input_adjoint_block   grad_V -> grad_x (accumulated)
 * Tiles are numbered in C order over (n, tile_d, tile_h, tile_w).
 *
 * Every function is deterministic: each output element is produced by one
 * thread in an order that does not depend on the number of threads.
 */
#ifndef WINO3D_CPU_H
#define WINO3D_CPU_H

#include <stddef.h>

#include "wino3d_common.h"
#include "wino3d_tile.h"

/* Layers (one file each):
 *   wino3d_common.h          the geometry struct, shared with CUDA
 *   wino3d_tile.template.h   the per-tile maths, shared with CUDA
 *   simd.h                   vector types, lanes, per-tile maths on vectors
 *   tile_lanes.template.h    per-thread tile scratch, patch gather
 *   scratch.h                caller-owned scratch: sizes, per-thread slices
 *   gemm.h, gemm.template.h  the batched GEMM and its blocking
 *   filter.template.h        filter transform and adjoint
 *   product_w.template.h     the product with the filter transform inside it
 *   fused_backward.template.h  the fused backward pipeline
 *   wino3d_fusion.h, affine.template.h  prologues and epilogues (shared maths; vector forms)
 *   blocked.h, blocked.template.h  the blocked pipeline: chunk sizes, stage kernels
 *   wino3d_cpu.c             instantiation for float and double only
 */

int wino_has_openmp(void);
/* Tile t -> batch index n and the first output index per axis (64-bit);
 * exposed for the index-arithmetic tests. */
void wino_tile_origin(const wino_geom *g, wino_index t, wino_index out[4]);
int wino_max_threads(void);
int wino_num_procs(void);
/* Compile-time facts of the build, for Python (pywino3d._backends.cpu._ext._cpu.build_facts):
 * the SIMD vector size, and per type (itemsize 4 or 8) the GEMM blocking. */
typedef struct {
    int mr, nr;     /* micro-tile of C in registers: mr rows x nr columns */
    int kc;         /* depth of a packed panel */
    int mc, nc;     /* rows of a packed A block, columns of a packed B block */
} wino_gemm_blocking_t;
typedef struct {
    int k_chunk;        /* output channels per product + output chunk */
    int tile_multiple;  /* tiles per block are rounded to a multiple of it */
} wino_blocked_chunks_t;
int wino_simd_bytes(void);
wino_gemm_blocking_t wino_gemm_blocking(int itemsize);
wino_blocked_chunks_t wino_blocked_chunks(void);

/* Return codes of the kernels: 0, or */
#define WINO_ESCRATCH (-2)  /* scratch smaller than its *_scratch_bytes query */
#define WINO_EARG (-3)      /* an operand the kernel cannot take */

/* Scratch: every kernel takes `scratch` (any address, caller-owned, reused
 * between calls) and its size; the *_scratch_bytes(..., nthreads) queries
 * say how much (scratch.h).  No kernel allocates memory. */

/* One batch of matrices X[b] (b < nb) of the GEMM, by strides in elements:
 * X[b][i][j] = data[x(b) * bstride + i * rstride + j * cstride] with
 * x(b) = index[b], or b when index is NULL.  Transposes and gathers of kept
 * positions are free. */
typedef struct {
    void *data;
    const int *index;
    wino_index bstride, rstride, cstride;
} wino_batch;

/* One group of the gathered GEMM (wino_gemm_gathered, gemm.template.h):
 * for rows i < M and columns j < N,
 *     C[i * rsc + c0 + j] = sum_{k < K} A[i * rsa + acol[k]] * B[brow[k] + bcol[j]]
 * with acol increasing and the groups' columns disjoint, in increasing
 * order.  Offsets are in elements. */
typedef struct {
    wino_index K, N, c0;
    const wino_index *acol, *brow, *bcol;
} wino_gather_group;

#define WINO_DECLARE(S, R)                                                                 \
size_t wino_blocked_scratch_bytes_##S(const wino_plan_##S *pl, int nthreads);              \
int wino_input_block_##S(const wino_geom *g, const R *x, const wino_plan_##S *pl,          \
                         wino_index t0, wino_index tb, R *V,                               \
                         void *scratch, size_t scratch_bytes, int nthreads);               \
int wino_output_block_##S(const wino_geom *g, const R *M, wino_index K, wino_index ky,     \
                          const wino_plan_##S *pl, wino_index t0, wino_index tb,           \
                          const R *bias, R *y,                                             \
                          void *scratch, size_t scratch_bytes, int nthreads);              \
int wino_output_adjoint_block_##S(const wino_geom *g, const R *gy, wino_index K,           \
                                  const wino_plan_##S *pl, wino_index t0, wino_index tb,   \
                                  R *gM, void *scratch, size_t scratch_bytes, int nthreads); \
int wino_input_adjoint_block_##S(const wino_geom *g, const R *gV,                          \
                                 const wino_plan_##S *pl, wino_index t0, wino_index tb,    \
                                 R *gx, void *scratch, size_t scratch_bytes, int nthreads); \
size_t wino_filter_scratch_bytes_##S(const wino_plan_##S *pl, int nthreads);               \
int wino_filter_##S(const R *w, wino_index KC, const wino_plan_##S *pl, R *U,              \
                    void *scratch, size_t scratch_bytes, int nthreads);                    \
int wino_filter_adjoint_##S(const R *gU, wino_index KC, const wino_plan_##S *pl, R *gw,    \
                            void *scratch, size_t scratch_bytes, int nthreads);            \
size_t wino_gemm_scratch_bytes_##S(int nthreads);                                          \
int wino_gemm_batched_##S(wino_index nb, wino_index M, wino_index N, wino_index K,         \
                          const wino_batch *A, const wino_batch *B, const wino_batch *C,   \
                          int accumulate, void *scratch, size_t scratch_bytes, int nthreads); \
size_t wino_gemm_gathered_scratch_bytes_##S(void);                                         \
int wino_gemm_gathered_##S(wino_index M, wino_index KA, const R *A, wino_index rsa,       \
                           wino_index ng, const wino_gather_group *groups, const R *B,   \
                           wino_index NB, R *C, wino_index rsc, wino_index NC,           \
                           void *scratch, size_t scratch_bytes, int nthreads);         \
size_t wino_product_w_scratch_bytes_##S(const wino_plan_##S *pl, int nthreads);            \
wino_index wino_product_w_packed_len_##S(wino_index nk, wino_index C, wino_index n);       \
int wino_product_w_##S(const R *w, wino_index K, wino_index C, const wino_plan_##S *pl,    \
                       const R *V, wino_index n, wino_index k0, wino_index kc, R *M,      \
                       R *Vp, int pack_v, void *scratch, size_t scratch_bytes, int nthreads);

#include <stddef.h>

/* A prologue or epilogue (issue 28; the maths: wino3d_fusion.h, affine.template.h).
 * Pointers are of the kernel's type (float or double) or NULL. */
typedef struct {
    const void *scale, *shift;  /* value of (n, c) at [n * sn + c]; NULL: 1 and 0 */
    wino_index sn;              /* 0 (one value per channel) or the channel count */
    int act;                    /* WINO_ACT_* */
    double alpha;               /* the activation's parameter */
    const void *alphas;         /* one parameter per channel (prelu), or NULL: alpha */
    const void *res;            /* residual of the output's shape, or NULL */
    wino_index rs[5];           /* its element strides (n, c, d, h, w) */
    int res_after;              /* add the residual after the activation, not before */
} wino_fusion;

/* The fused pipeline's per-tile moments (part: [tile][2][KP] doubles, mean
 * and M2 of each channel) merged in tile order into mean and biased var
 * (N x K, float64) of every (sample, channel). */
int wino_tile_moments(const wino_geom *g, const double *part, wino_index KP, double *mean, double *var,
                      int nthreads);

/* affine.template.h */
#define WINO_DECLARE_AFFINE(S, R)                                                       \
int wino_channel_affine_##S(const wino_index shape[5], const R *x, const wino_index xs[5], \
                            R *out, const wino_index os[5], const wino_fusion *f,        \
                            double *part, double *mean, double *var, int nthreads);
WINO_DECLARE_AFFINE(f, float)
WINO_DECLARE_AFFINE(d, double)
#undef WINO_DECLARE_AFFINE

#define WINO_DECLARE_FUSED(S, R)                                                        \
size_t wino_fused_scratch_bytes_##S(const wino_plan_##S *pin, const wino_plan_##S *pout, \
                                    wino_index tb, wino_index CP, wino_index KP,       \
                                    int nthreads);                                     \
int wino_to_channels_last_##S(const wino_geom *g, const R *x, wino_index CP, R *xcl,   \
                              const wino_fusion *pro, int nthreads);                                           \
int wino_fused_pack_##S(const R *U, wino_index P, wino_index K, wino_index C,           \
                        const wino_index *src, wino_index nrun, wino_index CP,         \
                        wino_index KP, R *Up, int nthreads);                           \
int wino_fused_forward_##S(const wino_geom *g, const R *xcl, const wino_index xcs[4],  \
                           wino_index CP, const R *Up, wino_index K, wino_index KP,    \
                           const wino_plan_##S *pin, const wino_plan_##S *pout,        \
                           const R *bias, R *y, const wino_index ys[5],               \
                           wino_index t_begin, wino_index t_end, wino_index tb,        \
                           const wino_fusion *epi, double *part,                       \
                           void *scratch, size_t scratch_bytes, int nthreads);
WINO_DECLARE_FUSED(f, float)
WINO_DECLARE_FUSED(d, double)
#undef WINO_DECLARE_FUSED

/* fused_backward.template.h */
#define WINO_DECLARE_FUSED_BACKWARD(S, R)                                               \
size_t wino_fused_backward_scratch_bytes_##S(const wino_plan_##S *pin,                  \
                                             const wino_plan_##S *pout, wino_index tb,  \
                                             wino_index CV, wino_index KV, int nthreads); \
int wino_fused_backward_##S(const wino_geom *g, const R *gy, const wino_index gs[5],    \
                            wino_index KV, const R *xcl, const wino_index xcs[4],      \
                            wino_index CV, const R *Ut, const wino_plan_##S *pin,      \
                            const wino_plan_##S *pout, R *gxcl, R *parts,              \
                            wino_index nchunks, R *gU, wino_index tb, void *scratch,   \
                            size_t scratch_bytes, int nthreads);                       \
int wino_from_channels_last_##S(const wino_geom *g, const R *src, wino_index CP, R *dst, \
                                const wino_index ds[5], int nthreads);
WINO_DECLARE_FUSED_BACKWARD(f, float)
WINO_DECLARE_FUSED_BACKWARD(d, double)
#undef WINO_DECLARE_FUSED_BACKWARD

WINO_DECLARE(f, float)
WINO_DECLARE(d, double)
#undef WINO_DECLARE

#endif /* WINO3D_CPU_H */
