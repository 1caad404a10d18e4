/* Host shim: compile src/cuda/wino3d_kernels.cu as plain C++20 and run its
 * kernels on the CPU (tests/test_cuda_emulation.py, launches in
 * emulate.cpp).  Thread and block indices are per host thread; the launch
 * sizes (gridDim, blockDim) are the ones the caller launched with.
 * sparse_gemm, which uses shared memory and barriers, runs each block's
 * threads as real std::threads meeting at a std::barrier. */
#include <barrier>
#include <cstdint>
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(x)
#define __shared__ static
#define restrict __restrict__
struct wino_dim3 { unsigned x, y, z; };
static thread_local wino_dim3 blockIdx, threadIdx;
static wino_dim3 blockDim, gridDim;
static std::barrier<> *wino_block_barrier = nullptr;
static inline void __syncthreads() { wino_block_barrier->arrive_and_wait(); }
