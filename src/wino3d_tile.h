/*
 * wino3d_tile.h -- wino3d_tile.template.h instantiated for float (suffix f)
 * and double (suffix d); included by the CPU kernels and the CUDA kernels
 * alike.
 */
#ifndef WINO3D_TILE_H
#define WINO3D_TILE_H

#define WINO_REAL float
#define WINO_SUFFIX f
#include "wino3d_tile.template.h"
#undef WINO_REAL
#undef WINO_SUFFIX

#define WINO_REAL double
#define WINO_SUFFIX d
#include "wino3d_tile.template.h"
#undef WINO_REAL
#undef WINO_SUFFIX

#endif /* WINO3D_TILE_H */
