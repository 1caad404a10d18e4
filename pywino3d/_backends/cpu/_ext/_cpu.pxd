"""C declarations of the CPU kernels (src/cpu/wino3d_cpu.h), shared by the
Cython wrappers."""
from libc.stddef cimport size_t
from libc.stdint cimport int64_t

ctypedef int64_t wino_index

cdef extern from "const_transforms.h" nogil:
    const float *wino_cx_match_f(const float *X, int a, int n)
    const double *wino_cx_match_d(const double *X, int a, int n)

cdef extern from "wino3d_cpu.h" nogil:
    ctypedef struct wino_plan_f:
        const float *X[3]
        int a[3]
        int n[3]
        const int *kept
        int nk
        const unsigned char *need_w
        const unsigned char *need_hw
    ctypedef struct wino_plan_d:
        const double *X[3]
        int a[3]
        int n[3]
        const int *kept
        int nk
        const unsigned char *need_w
        const unsigned char *need_hw
    ctypedef struct wino_geom:
        wino_index N, C, K
        wino_index D, H, W
        wino_index xs[5]
        wino_index pad[3]
        wino_index od[3]
        wino_index m[3]
        wino_index r[3]
        wino_index a[3]
        wino_index nt[3]
    ctypedef struct wino_gemm_blocking_t:
        int mr, nr, kc, mc, nc
    ctypedef struct wino_blocked_chunks_t:
        int k_chunk, tile_multiple
    ctypedef struct wino_batch:
        void *data
        const int *index
        wino_index bstride, rstride, cstride
    ctypedef struct wino_gather_group:
        wino_index K, N, c0
        const wino_index *acol
        const wino_index *brow
        const wino_index *bcol
    enum:
        WINO_ESCRATCH
        WINO_EARG

    int wino_has_openmp()
    void wino_tile_origin(const wino_geom *g, wino_index t, wino_index out[4])
    int wino_max_threads()
    int wino_num_procs()
    int wino_simd_bytes()
    wino_gemm_blocking_t wino_gemm_blocking(int itemsize)
    wino_blocked_chunks_t wino_blocked_chunks()


    size_t wino_blocked_scratch_bytes_f(const wino_plan_f *pl, int nthreads)
    int wino_input_block_f(const wino_geom *g, const float *x, const wino_plan_f *pl, wino_index t0,
                          wino_index tb, float *V, void *scratch, size_t scratch_bytes, int nthreads)
    int wino_output_block_f(const wino_geom *g, const float *M, wino_index K, wino_index ky,
                           const wino_plan_f *pl, wino_index t0, wino_index tb, const float *bias,
                           float *y, void *scratch, size_t scratch_bytes, int nthreads)
    int wino_output_adjoint_block_f(const wino_geom *g, const float *gy, wino_index K,
                                   const wino_plan_f *pl, wino_index t0, wino_index tb, float *gM,
                                   void *scratch, size_t scratch_bytes, int nthreads)
    int wino_input_adjoint_block_f(const wino_geom *g, const float *gV, const wino_plan_f *pl,
                                  wino_index t0, wino_index tb, float *gx,
                                  void *scratch, size_t scratch_bytes, int nthreads)
    size_t wino_filter_scratch_bytes_f(const wino_plan_f *pl, int nthreads)
    int wino_filter_f(const float *w, wino_index KC, const wino_plan_f *pl, float *U,
                     void *scratch, size_t scratch_bytes, int nthreads)
    int wino_filter_adjoint_f(const float *gU, wino_index KC, const wino_plan_f *pl, float *gw,
                             void *scratch, size_t scratch_bytes, int nthreads)
    size_t wino_gemm_scratch_bytes_f(int nthreads)
    int wino_gemm_batched_f(wino_index nb, wino_index M, wino_index N, wino_index K,
                           const wino_batch *A, const wino_batch *B, const wino_batch *C,
                           int accumulate, void *scratch, size_t scratch_bytes, int nthreads)
    size_t wino_gemm_gathered_scratch_bytes_f()
    int wino_gemm_gathered_f(wino_index M, wino_index KA, const float *A, wino_index rsa,
                             wino_index ng, const wino_gather_group *groups, const float *B,
                             wino_index NB, float *C, wino_index rsc, wino_index NC,
                             void *scratch, size_t scratch_bytes, int nthreads)
    size_t wino_product_w_scratch_bytes_f(const wino_plan_f *pl, int nthreads)
    wino_index wino_product_w_packed_len_f(wino_index nk, wino_index C, wino_index n)
    int wino_product_w_f(const float *w, wino_index K, wino_index C, const wino_plan_f *pl,
                         const float *V, wino_index n, wino_index k0, wino_index kc, float *M,
                         float *Vp, int pack_v, void *scratch, size_t scratch_bytes, int nthreads)

    size_t wino_blocked_scratch_bytes_d(const wino_plan_d *pl, int nthreads)
    int wino_input_block_d(const wino_geom *g, const double *x, const wino_plan_d *pl, wino_index t0,
                          wino_index tb, double *V, void *scratch, size_t scratch_bytes, int nthreads)
    int wino_output_block_d(const wino_geom *g, const double *M, wino_index K, wino_index ky,
                           const wino_plan_d *pl, wino_index t0, wino_index tb, const double *bias,
                           double *y, void *scratch, size_t scratch_bytes, int nthreads)
    int wino_output_adjoint_block_d(const wino_geom *g, const double *gy, wino_index K,
                                   const wino_plan_d *pl, wino_index t0, wino_index tb, double *gM,
                                   void *scratch, size_t scratch_bytes, int nthreads)
    int wino_input_adjoint_block_d(const wino_geom *g, const double *gV, const wino_plan_d *pl,
                                  wino_index t0, wino_index tb, double *gx,
                                  void *scratch, size_t scratch_bytes, int nthreads)
    size_t wino_filter_scratch_bytes_d(const wino_plan_d *pl, int nthreads)
    int wino_filter_d(const double *w, wino_index KC, const wino_plan_d *pl, double *U,
                     void *scratch, size_t scratch_bytes, int nthreads)
    int wino_filter_adjoint_d(const double *gU, wino_index KC, const wino_plan_d *pl, double *gw,
                             void *scratch, size_t scratch_bytes, int nthreads)
    size_t wino_gemm_scratch_bytes_d(int nthreads)
    int wino_gemm_batched_d(wino_index nb, wino_index M, wino_index N, wino_index K,
                           const wino_batch *A, const wino_batch *B, const wino_batch *C,
                           int accumulate, void *scratch, size_t scratch_bytes, int nthreads)
    size_t wino_gemm_gathered_scratch_bytes_d()
    int wino_gemm_gathered_d(wino_index M, wino_index KA, const double *A, wino_index rsa,
                             wino_index ng, const wino_gather_group *groups, const double *B,
                             wino_index NB, double *C, wino_index rsc, wino_index NC,
                             void *scratch, size_t scratch_bytes, int nthreads)
    size_t wino_product_w_scratch_bytes_d(const wino_plan_d *pl, int nthreads)
    wino_index wino_product_w_packed_len_d(wino_index nk, wino_index C, wino_index n)
    int wino_product_w_d(const double *w, wino_index K, wino_index C, const wino_plan_d *pl,
                         const double *V, wino_index n, wino_index k0, wino_index kc, double *M,
                         double *Vp, int pack_v, void *scratch, size_t scratch_bytes, int nthreads)

    # prologues and epilogues (src/cpu/affine.template.h, src/wino3d_fusion.h)
    ctypedef struct wino_fusion:
        const void *scale
        const void *shift
        wino_index sn
        int act
        double alpha
        const void *alphas
        const void *res
        wino_index rs[5]
        int res_after
    int wino_tile_moments(const wino_geom *g, const double *part, wino_index KP, double *mean, double *var,
                          int nthreads)
    int wino_channel_affine_f(const wino_index shape[5], const float *x, const wino_index xs[5], float *out,
                              const wino_index os[5], const wino_fusion *f, double *part, double *mean,
                              double *var, int nthreads)
    int wino_channel_affine_d(const wino_index shape[5], const double *x, const wino_index xs[5], double *out,
                              const wino_index os[5], const wino_fusion *f, double *part, double *mean,
                              double *var, int nthreads)

    # the fused pipeline (src/cpu/fused.template.h)
    size_t wino_fused_scratch_bytes_f(const wino_plan_f *pin, const wino_plan_f *pout, wino_index tb,
                                      wino_index CP, wino_index KP, int nthreads)
    size_t wino_fused_scratch_bytes_d(const wino_plan_d *pin, const wino_plan_d *pout, wino_index tb,
                                      wino_index CP, wino_index KP, int nthreads)
    int wino_to_channels_last_f(const wino_geom *g, const float *x, wino_index CP, float *xcl,
                                const wino_fusion *pro, int nthreads)
    int wino_to_channels_last_d(const wino_geom *g, const double *x, wino_index CP, double *xcl,
                                const wino_fusion *pro, int nthreads)
    int wino_fused_pack_f(const float *U, wino_index P, wino_index K, wino_index C, const wino_index *src,
                          wino_index nrun, wino_index CP, wino_index KP, float *Up, int nthreads)
    int wino_fused_pack_d(const double *U, wino_index P, wino_index K, wino_index C, const wino_index *src,
                          wino_index nrun, wino_index CP, wino_index KP, double *Up, int nthreads)
    int wino_fused_forward_f(const wino_geom *g, const float *xcl, const wino_index xcs[4], wino_index CP,
                             const float *Up, wino_index K, wino_index KP, const wino_plan_f *pin,
                             const wino_plan_f *pout, const float *bias, float *y, const wino_index ys[5],
                             wino_index t_begin, wino_index t_end, wino_index tb, const wino_fusion *epi, double *part,
                             void *scratch, size_t scratch_bytes, int nthreads)
    int wino_fused_forward_d(const wino_geom *g, const double *xcl, const wino_index xcs[4], wino_index CP,
                             const double *Up, wino_index K, wino_index KP, const wino_plan_d *pin,
                             const wino_plan_d *pout, const double *bias, double *y, const wino_index ys[5],
                             wino_index t_begin, wino_index t_end, wino_index tb, const wino_fusion *epi, double *part,
                             void *scratch, size_t scratch_bytes, int nthreads)

    # the fused backward pipeline (src/cpu/fused_backward.template.h)
    size_t wino_fused_backward_scratch_bytes_f(const wino_plan_f *pin, const wino_plan_f *pout, wino_index tb,
                                               wino_index CV, wino_index KV, int nthreads)
    size_t wino_fused_backward_scratch_bytes_d(const wino_plan_d *pin, const wino_plan_d *pout, wino_index tb,
                                               wino_index CV, wino_index KV, int nthreads)
    int wino_fused_backward_f(const wino_geom *g, const float *gy, const wino_index gs[5], wino_index KV,
                              const float *xcl, const wino_index xcs[4], wino_index CV, const float *Ut,
                              const wino_plan_f *pin, const wino_plan_f *pout, float *gxcl, float *parts,
                              wino_index nchunks, float *gU, wino_index tb, void *scratch, size_t scratch_bytes,
                              int nthreads)
    int wino_fused_backward_d(const wino_geom *g, const double *gy, const wino_index gs[5], wino_index KV,
                              const double *xcl, const wino_index xcs[4], wino_index CV, const double *Ut,
                              const wino_plan_d *pin, const wino_plan_d *pout, double *gxcl, double *parts,
                              wino_index nchunks, double *gU, wino_index tb, void *scratch, size_t scratch_bytes,
                              int nthreads)
    int wino_from_channels_last_f(const wino_geom *g, const float *src, wino_index CP, float *dst,
                                  const wino_index ds[5], int nthreads)
    int wino_from_channels_last_d(const wino_geom *g, const double *src, wino_index CP, double *dst,
                                  const wino_index ds[5], int nthreads)
