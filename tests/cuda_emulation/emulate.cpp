/* C entry points that launch the CUDA kernels on the host, one "thread" at a
 * time, with the block size of the real launches (256).  The geometry comes
 * in by pointer (ctypes) and goes to the kernels by value, as on the GPU. */
#include "wino3d_kernels.cu"

#include <thread>
#include <vector>

template <typename F>
static void launch(long long n, F &&body)
{
    const unsigned B = 256;
    blockDim = {B, 1, 1};
    const long long blocks = (n + B - 1) / B;
    for (long long b = 0; b < blocks; ++b)
        for (unsigned t = 0; t < B; ++t) {
            blockIdx = {(unsigned)b, 0, 0};
            threadIdx = {t, 0, 0};
            body();
        }
}

/* A cooperative launch: each block's threads are real threads sharing the
 * (static) shared arrays and a barrier; blocks run one after another. */
template <typename F>
static void launch_blocks(wino_dim3 grid, unsigned B, F &&body)
{
    blockDim = {B, 1, 1};
    std::barrier<> bar(B);
    wino_block_barrier = &bar;
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) {
                std::vector<std::thread> ts;
                for (unsigned t = 0; t < B; ++t)
                    ts.emplace_back([&, t] {
                        blockIdx = {x, y, z};
                        threadIdx = {t, 0, 0};
                        body();
                    });
                for (auto &th : ts) th.join();
            }
    wino_block_barrier = nullptr;
}

#define PLAN_C const float *X0, const float *X1, const float *X2, const int *dims, const int *kept, \
               int nk, const unsigned char *need_w, const unsigned char *need_hw

#define TILE_ENTRY_POINTS(A)                                                                          \
void emu_input_transform_##A(const float *x, const wino_geom *g, PLAN_C, long long t0, long long tb,   \
                             float *V)                                                                 \
{                                                                                                      \
    launch(g->C * tb, [&] { input_transform<float, A>(x, *g, X0, X1, X2, dims, kept, nk, need_w,        \
                                                      need_hw, t0, tb, V); });                         \
}                                                                                                      \
void emu_output_transform_##A(const float *M, long long K, const wino_geom *g, PLAN_C, long long t0,   \
                              long long tb, const float *bias, float *y)                               \
{                                                                                                      \
    launch(K * tb, [&] { output_transform<float, A>(M, K, *g, X0, X1, X2, dims, kept, nk, need_w,       \
                                                    need_hw, t0, tb, bias, y); });                     \
}                                                                                                      \
void emu_output_adjoint_##A(const float *gy, long long K, const wino_geom *g, PLAN_C, long long t0,    \
                            long long tb, float *gM)                                                   \
{                                                                                                      \
    launch(K * tb, [&] { output_adjoint<float, A>(gy, K, *g, X0, X1, X2, dims, kept, nk, need_w,        \
                                                  need_hw, t0, tb, gM); });                            \
}                                                                                                      \
void emu_input_adjoint_patches_##A(const float *gV, const wino_geom *g, PLAN_C, long long tb, float *P) \
{                                                                                                      \
    launch(g->C * tb, [&] { input_adjoint_patches<float, A>(gV, *g, X0, X1, X2, dims, kept, nk, need_w, \
                                                            need_hw, tb, P); });                       \
}                                                                                                      \
void emu_filter_transform_##A(const float *src, long long KC, PLAN_C, int adjoint, float *dst)        \
{                                                                                                      \
    launch(KC, [&] { filter_transform<float, A>(src, KC, X0, X1, X2, dims, kept, nk, need_w, need_hw,  \
                                                adjoint, dst); });                                     \
}

extern "C" {
TILE_ENTRY_POINTS(4)
TILE_ENTRY_POINTS(6)
void emu_input_adjoint_gather(const float *P, const wino_geom *g, long long t0, long long tb, float *gx)
{
    launch(g->N * g->C * g->D * g->H * g->W, [&] { input_adjoint_gather<float>(P, *g, t0, tb, gx); });
}
void emu_sparse_gemm(long long nb, long long M, long long N, long long K, const float *A, const int *aidx,
                     long long sa, long long rsa, long long csa, const float *B, long long sb, long long rsb,
                     long long csb, float *C, const int *cidx, long long sc, long long rsc, int accumulate)
{
    const unsigned bm = 64, bn = 64;
    wino_dim3 grid = {(unsigned)((N + bn - 1) / bn), (unsigned)((M + bm - 1) / bm), (unsigned)nb};
    launch_blocks(grid, 256, [&] {
        sparse_gemm<float, 64, 64, 8, 4, 4>(M, N, K, A, aidx, sa, rsa, csa, B, sb, rsb, csb, C, cidx, sc, rsc,
                                            accumulate);
    });
}
}
