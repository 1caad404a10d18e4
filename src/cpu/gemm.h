/*
 * gemm.h -- the blocking of the CPU GEMM (gemm.template.h), in one place.
 *
 * Micro-kernel: MR rows x NR = 2 * VL columns of C in vector registers.
 * With 64-byte vectors (AVX-512) a float micro-tile is 12 x 32 (24 zmm
 * accumulators); with 32-byte ones (AVX2) it is 6 x 16 (12 ymm).
 * Panels: KC deep; an A block is MC = 8 * MR rows, a B block NC = 8 * NR
 * columns.  The extension exports these numbers (pywino3d._backends.cpu._ext._cpu.gemm_blocking)
 * so Python never restates them.
 */
#ifndef WINO3D_GEMM_H
#define WINO3D_GEMM_H

#include "simd.h"

/* MR follows the vector width (simd.h), not the target: a build forced to
 * 64-byte vectors (-DWINO_FORCE_VBYTES=64) on an AVX2 machine gets the
 * AVX-512 blocking with the AVX-512 lanes, as the CI job that runs the suite
 * in that configuration needs, and -DWINO_FORCE_VBYTES=32 on an AVX-512
 * machine the AVX2 one. */
#if WINO_VBYTES == 64
#define WINO_GEMM_MR 12
#else
#define WINO_GEMM_MR 6
#endif
#define WINO_GEMM_NR_f (2 * WINO_VL_f)
#define WINO_GEMM_NR_d (2 * WINO_VL_d)
#define WINO_GEMM_KC 256
/* The micro-kernels sum each element's products in chains of KB, each from
 * zero, and add the chains in order (blocked summation): a float32 chain
 * of n products loses about sqrt(n / 2) rounding steps, KB-chains
 * sqrt(KB / 2 + n / (2 KB)) -- 128 -> 16 squared for 256 input channels, a
 * 2.8x smaller product error (issue 30; benchmarks/accuracy.py --part 4).
 * The same chains in every pipeline (the fused kernel's too) and for every
 * thread count; sums of up to KB products are what they were.  The gathered
 * GEMM (im2col) keeps one chain per KC block: see its micro-kernel. */
#define WINO_GEMM_KB 32
#define WINO_GEMM_MC (WINO_GEMM_MR * 8)
#define WINO_GEMM_NC_f (WINO_GEMM_NR_f * 8)
#define WINO_GEMM_NC_d (WINO_GEMM_NR_d * 8)
/* A of at least this many bytes is read in place, not packed (gemm_block).
 * Measured on 2 Zen 5 cores, product stage: 64->128 channels 52 -> 46 ms,
 * 128->128 8.9 -> 6.6 ms, 512->512 at 16 tiles 49 -> 31 ms; 32 and 64
 * channels (fused pipeline) as fast or faster packed. */
#define WINO_GEMM_INPLACE_BYTES (32 * 1024)

#endif /* WINO3D_GEMM_H */
