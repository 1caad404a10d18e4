/*
 * direct.h -- direct (non-Winograd) 3-D convolution, stride 1, for the
 * layers where Winograd cannot win: one to three input channels on large
 * volumes, and tiny volumes with large weights.
 *
 * Two variants of one algorithm (same packed weights, same summation order,
 * so the same results):
 *
 * - channel lanes (WINO_DIRECT_KLANES): output channels sit in the SIMD lanes
 *   (VL = 16 floats with AVX-512), the input is broadcast, and a register
 *   block holds 2 x DIRECT_RB accumulator vectors: 2 vectors of output
 *   channels times RB consecutive output positions.  The positions of a
 *   block are consecutive in a plane of the zero-padded input, flattened
 *   over (h, w): a block may run past the end of an output row into the
 *   padding columns (those results are discarded), so blocks stay full on
 *   short rows (a 4^3 volume has 4-wide rows).  y is written a lane at a
 *   time (a transpose), which is cheap only where C * taps is large.
 * - position lanes (WINO_DIRECT_WLANES): VL consecutive outputs along w sit in
 *   the lanes, the weights are broadcast, and a register block holds
 *   DIRECT_KB x DIRECT_PV vectors: KB output channels times PV vectors along
 *   the row.  y is written in whole vectors, which is what makes one to three
 *   input channels on a large volume fast (there y is most of the traffic);
 *   rows shorter than a vector waste lanes.
 *
 * wino_direct_variant picks the one with fewer wasted lanes (ties: position
 * lanes); WINO_DIRECT_AUTO asks it.
 *
 * Two steps, both parallel over independent jobs (deterministic for any
 * thread count: each output element is summed by one thread over
 * (c, i, j, l) in that order):
 *   wino_direct_pack_w   w (any strides over k, c, tap) -> Wp [kb][c][tap][VL]
 *                        (zero lanes past K; taps outside `tap_mask` zeroed)
 *   wino_direct_forward  y = conv(x, Wp) + bias, x with any strides (NCDHW
 *                        or channels-last), y contiguous (N, K, Do, Ho, Wo);
 *                        the caller passes `scratch` of
 *                        wino_direct_scratch_len() elements: a zero-padded
 *                        copy of a slab of planes of one sample (its rows
 *                        padded for either variant); `variant` is one of
 *                        the WINO_DIRECT_* values.
 * Geometry: the fields N, C, K, D, H, W, xs, pad, od, r of wino_geom (m, a
 * and nt are not used; pad may be negative: the input is then cropped).
 */
#ifndef WINO3D_DIRECT_H
#define WINO3D_DIRECT_H

#include "wino3d_common.h"

/* Output-channel lanes per vector for a type of this size (4 or 8). */
int wino_direct_lanes(int itemsize);
/* Elements of the packed weights: ceil(K / VL) * VL * C * rd * rh * rw. */
wino_index wino_direct_packed_len(const wino_geom *g, int itemsize);
/* Output planes per slab for a scratch budget of `budget_elems` elements
 * (at least 1), and the scratch length (elements) that slab needs. */
wino_index wino_direct_slab_planes(const wino_geom *g, wino_index budget_elems);
wino_index wino_direct_scratch_len(const wino_geom *g, wino_index slab_planes);

enum { WINO_DIRECT_AUTO = 0, WINO_DIRECT_KLANES = 1, WINO_DIRECT_WLANES = 2 };
/* The variant WINO_DIRECT_AUTO runs for this geometry and item size. */
int wino_direct_variant(const wino_geom *g, int itemsize);

#define WINO_DIRECT_DECLARE(S, R)                                                        \
int wino_direct_pack_w_##S(const wino_geom *g, const R *w, wino_index sk, wino_index sc,   \
                           wino_index st, const unsigned char *tap_mask, R *Wp,           \
                           int nthreads);                                                 \
int wino_direct_forward_##S(const wino_geom *g, const R *x, const R *Wp, const R *bias,    \
                            R *y, R *scratch, wino_index slab_planes, int variant,        \
                            int nthreads);
WINO_DIRECT_DECLARE(f, float)
WINO_DIRECT_DECLARE(d, double)
#undef WINO_DIRECT_DECLARE

#endif /* WINO3D_DIRECT_H */
