/*
 * wino3d_common.h -- portability macros shared by the C and CUDA builds.
 *
 * WINO_HD marks per-tile functions that run on the host and on the device:
 * __host__ __device__ under nvcc/NVRTC, nothing in the C build.
 */
#ifndef WINO3D_COMMON_H
#define WINO3D_COMMON_H

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define WINO_HD __host__ __device__
#define WINO_INLINE __forceinline__
#define WINO_RESTRICT __restrict__
#else
#define WINO_HD
#if defined(__GNUC__)
#define WINO_INLINE static inline __attribute__((always_inline))
#else
#define WINO_INLINE static inline
#endif
#define WINO_RESTRICT restrict
#endif

#ifdef __CUDACC_RTC__
typedef long long wino_index;  /* no <stdint.h> under NVRTC */
#else
#include <stdint.h>
typedef int64_t wino_index;    /* 64-bit: element counts can exceed 2^31 */
#endif

#define WINO_CAT_(a, b) a##b
#define WINO_CAT(a, b) WINO_CAT_(a, b)

#endif /* WINO3D_COMMON_H */
