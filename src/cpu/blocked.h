/*
 * blocked.h -- the chunk sizes of the blocked pipeline (blocked.template.h),
 * exported by the extension (pywino3d._backends.cpu._ext._cpu.blocked_chunks) for the Python
 * block loop.
 */
#ifndef WINO3D_BLOCKED_H
#define WINO3D_BLOCKED_H

#include "gemm.h"

/* Output channels per product + output-transform chunk: bounds M's share of
 * the workspace.  A multiple of the GEMM's A block (MC = 96 rows with
 * AVX-512, 48 with AVX2).  Measured medians (ms, F(4^3)) for chunks
 * 96 / 288: conv3b batch 8 159.5 / 144.7, conv4b batch 8 81.1 / 73.9, conv2a
 * batch 1 31.3 / 30.4, conv3b batch 1 18.3 / 17.6: smaller chunks re-pack
 * the GEMM's B panels (V) once per chunk. */
#define WINO_BLOCKED_K_CHUNK 288
/* Tiles per block are rounded up to a multiple of this where the workspace
 * allows: whole SIMD tile groups (VL is at most 16) in every stage. */
#define WINO_BLOCKED_TILE_MULTIPLE 16

_Static_assert(WINO_BLOCKED_K_CHUNK % WINO_GEMM_MC == 0, "K chunk: a multiple of the GEMM's MC");
_Static_assert(WINO_BLOCKED_TILE_MULTIPLE % WINO_VL_f == 0, "tile multiple: whole float vectors");

#endif /* WINO3D_BLOCKED_H */
