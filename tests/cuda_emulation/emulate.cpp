/* C entry points that launch the CUDA kernels of wino3d_kernels.cu on the
 * host, for every instantiation the library launches (float and double,
 * AMAX 4, 6, 8, 10 and 14, both sparse_gemm tilings).
 *
 * Every entry point takes the launch as the Python side gave it: grid and
 * block sizes (6 unsigned: gx gy gz bx by bz) and a seed, then the kernel's
 * arguments (the geometry by pointer, passed to the kernel by value).
 *
 * - Tile kernels (no shared memory, no barriers) run every (block, thread)
 *   of the launch exactly once, blocks and the threads within each block in
 *   a shuffled order drawn from the seed: a kernel whose result depends on
 *   the order of its threads, or a launch that is too small, shows up.
 * - sparse_gemm runs each block as blockDim real threads that share the
 *   block's __shared__ arrays and meet at a std::barrier for
 *   __syncthreads(); the blocks, in a shuffled order, reuse one set of
 *   threads, with a barrier between blocks.  A block larger than the
 *   kernel's __launch_bounds__ is refused (CUDA refuses that launch too).
 *
 * Return value: 0, or an error code that fake_cupy.py raises as a launch
 * failure. */
#include "wino3d_kernels.cu"

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <thread>
#include <vector>

enum { EMU_OK = 0, EMU_BAD_CONFIG = 1, EMU_TOO_MANY_THREADS = 2 };

static int set_dims(const unsigned *L)
{
    gridDim = {L[0], L[1], L[2]};
    blockDim = {L[3], L[4], L[5]};
    const unsigned long long nt = (unsigned long long)L[3] * L[4] * L[5];
    if (nt == 0 || nt > 1024 || L[0] == 0 || L[1] == 0 || L[2] == 0 || L[1] > 65535 || L[2] > 65535)
        return EMU_BAD_CONFIG;
    return EMU_OK;
}

static wino_dim3 unflatten(unsigned long long i, wino_dim3 d)
{
    wino_dim3 r;
    r.x = (unsigned)(i % d.x); i /= d.x;
    r.y = (unsigned)(i % d.y); i /= d.y;
    r.z = (unsigned)i;
    return r;
}

static std::vector<unsigned long long> shuffled(unsigned long long n, std::mt19937_64 &rng)
{
    std::vector<unsigned long long> v(n);
    std::iota(v.begin(), v.end(), 0ull);
    std::shuffle(v.begin(), v.end(), rng);
    return v;
}

/* Every thread of the launch once, in a shuffled order (seed). */
template <typename F>
static int launch(const unsigned *L, unsigned long long seed, F &&body)
{
    if (int e = set_dims(L)) return e;
    std::mt19937_64 rng(seed);
    const unsigned long long nb = (unsigned long long)gridDim.x * gridDim.y * gridDim.z;
    const unsigned long long nt = (unsigned long long)blockDim.x * blockDim.y * blockDim.z;
    for (unsigned long long b : shuffled(nb, rng)) {
        blockIdx = unflatten(b, gridDim);
        for (unsigned long long t : shuffled(nt, rng)) {
            threadIdx = unflatten(t, blockDim);
            body();
        }
    }
    return EMU_OK;
}

/* A cooperative launch: blockDim real threads per block, sharing the
 * (static) shared arrays and a barrier; blocks in a shuffled order. */
template <typename F>
static int launch_blocks(const unsigned *L, unsigned long long seed, unsigned max_threads, F &&body)
{
    if (int e = set_dims(L)) return e;
    const unsigned long long nt = (unsigned long long)blockDim.x * blockDim.y * blockDim.z;
    if (nt > max_threads) return EMU_TOO_MANY_THREADS;
    std::mt19937_64 rng(seed);
    const unsigned long long nb = (unsigned long long)gridDim.x * gridDim.y * gridDim.z;
    const std::vector<unsigned long long> order = shuffled(nb, rng);
    const std::vector<unsigned long long> starts = shuffled(nt, rng);  /* thread start order */
    std::barrier<> bar((std::ptrdiff_t)nt);
    wino_block_barrier = &bar;
    std::vector<std::thread> ts;
    for (unsigned long long s : starts)
        ts.emplace_back([&, s] {
            threadIdx = unflatten(s, blockDim);
            for (unsigned long long b : order) {
                blockIdx = unflatten(b, gridDim);
                body();
                bar.arrive_and_wait();  /* the block ends before the next one reuses the shared arrays */
            }
        });
    for (auto &th : ts) th.join();
    wino_block_barrier = nullptr;
    return EMU_OK;
}

#define LAUNCH const unsigned *L, unsigned long long seed
#define PLAN_C(T) const T *X0, const T *X1, const T *X2, const int *dims, const int *kept, \
                  int nk, const unsigned char *need_w, const unsigned char *need_hw
#define PLAN_A X0, X1, X2, dims, kept, nk, need_w, need_hw

#define TILE_ENTRY_POINTS(T, S, A)                                                                       \
int emu_input_transform_##S##_##A(LAUNCH, const T *x, const wino_geom *g, PLAN_C(T), long long t0,       \
                                  long long tb, T *V)                                                     \
{ return launch(L, seed, [&] { input_transform<T, A>(x, *g, PLAN_A, t0, tb, V); }); }                     \
int emu_output_transform_##S##_##A(LAUNCH, const T *M, long long K, const wino_geom *g, PLAN_C(T),       \
                                   long long t0, long long tb, const T *bias, T *y)                      \
{ return launch(L, seed, [&] { output_transform<T, A>(M, K, *g, PLAN_A, t0, tb, bias, y); }); }           \
int emu_output_adjoint_##S##_##A(LAUNCH, const T *gy, long long K, const wino_geom *g, PLAN_C(T),        \
                                 long long t0, long long tb, T *gM)                                      \
{ return launch(L, seed, [&] { output_adjoint<T, A>(gy, K, *g, PLAN_A, t0, tb, gM); }); }                 \
int emu_input_adjoint_patches_##S##_##A(LAUNCH, const T *gV, const wino_geom *g, PLAN_C(T), long long tb, \
                                        T *P)                                                             \
{ return launch(L, seed, [&] { input_adjoint_patches<T, A>(gV, *g, PLAN_A, tb, P); }); }                  \
int emu_filter_transform_##S##_##A(LAUNCH, const T *src, long long KC, PLAN_C(T), int adjoint, T *dst)  \
{ return launch(L, seed, [&] { filter_transform<T, A>(src, KC, PLAN_A, adjoint, dst); }); }

#define TYPE_ENTRY_POINTS(T, S, BM, BN, BK, TM, TN)                                                      \
TILE_ENTRY_POINTS(T, S, 4)                                                                               \
TILE_ENTRY_POINTS(T, S, 6)                                                                               \
TILE_ENTRY_POINTS(T, S, 8)                                                                               \
TILE_ENTRY_POINTS(T, S, 10)                                                                              \
TILE_ENTRY_POINTS(T, S, 14)                                                                              \
int emu_input_adjoint_gather_##S(LAUNCH, const T *P, const wino_geom *g, long long t0, long long tb, T *gx) \
{ return launch(L, seed, [&] { input_adjoint_gather<T>(P, *g, t0, tb, gx); }); }                          \
/* the tiling, for fake_cupy.py to check against the name launched */                                    \
void emu_sparse_gemm_tiles_##S(int *out) { out[0] = BM; out[1] = BN; out[2] = BK; out[3] = TM; out[4] = TN; } \
int emu_sparse_gemm_##S(LAUNCH, long long M, long long N, long long K, const T *A, const int *aidx,       \
                        long long sa, long long rsa, long long csa, const T *B, long long sb, long long rsb, \
                        long long csb, T *C, const int *cidx, long long sc, long long rsc, int accumulate)  \
{                                                                                                        \
    return launch_blocks(L, seed, (BM / TM) * (BN / TN), [&] {                                           \
        sparse_gemm<T, BM, BN, BK, TM, TN>(M, N, K, A, aidx, sa, rsa, csa, B, sb, rsb, csb, C, cidx, sc,  \
                                           rsc, accumulate);                                             \
    });                                                                                                  \
}

extern "C" {
/* the (BM, BN, BK, TM, TN) of pywino3d._backends.cuda.sources.GEMM_TILES */
TYPE_ENTRY_POINTS(float, f, 64, 64, 8, 4, 4)
TYPE_ENTRY_POINTS(double, d, 32, 32, 8, 2, 2)
}
