/*
 * wino3d_fusion.h -- the per-value maths of the prologues and epilogues that
 * the kernels fuse around a convolution (issue 28), shared by every C kernel
 * and written so that CUDA can compile it too (WINO_HD, no libc headers
 * under NVRTC).
 *
 * The meaning -- activation kinds, the order of an epilogue's steps, the
 * statistics -- is pywino3d/_core/fusion.py, whose ACTIVATIONS table holds
 * the same codes as WINO_ACT_* below (a test compares them).  The vector
 * versions of the cheap kinds live in src/cpu/affine.template.h; they fall
 * back to these functions lane by lane for the transcendental kinds, so a
 * value is the same whichever kernel computed it.
 *
 * Moments are merged with Chan's formula (wino_moments_merge): partial
 * (count, mean, M2) of disjoint parts, merged in a fixed order, give the same
 * bits for any number of threads and no cancellation of E[x^2] - E[x]^2.
 */
#ifndef WINO3D_FUSION_H
#define WINO3D_FUSION_H

#include "wino3d_common.h"

#ifndef __CUDACC_RTC__
#include <math.h>
#endif

/* Activation codes: the values of pywino3d._core.fusion.ACTIVATIONS. */
#define WINO_ACT_IDENTITY 0
#define WINO_ACT_RELU 1
#define WINO_ACT_LEAKY_RELU 2
#define WINO_ACT_PRELU 3       /* leaky ReLU with a per-channel slope */
#define WINO_ACT_ELU 4
#define WINO_ACT_SILU 5
#define WINO_ACT_SIGMOID 6
#define WINO_ACT_TANH 7
#define WINO_ACT_COUNT 8

/* act(v) for one value; alpha is the slope (leaky_relu, prelu) or the scale
 * of elu, unused by the other kinds.  NaN stays NaN. */
WINO_HD static inline float wino_act_f(int act, float v, float alpha)
{
    switch (act) {
    case WINO_ACT_RELU: return v < 0.0f ? 0.0f : v;
    case WINO_ACT_LEAKY_RELU:
    case WINO_ACT_PRELU: return v >= 0.0f ? v : v * alpha;
    case WINO_ACT_ELU: return v > 0.0f ? v : alpha * expm1f(v);
    case WINO_ACT_SILU: return v / (1.0f + expf(-v));
    case WINO_ACT_SIGMOID: return 1.0f / (1.0f + expf(-v));
    case WINO_ACT_TANH: return tanhf(v);
    default: return v;
    }
}

WINO_HD static inline double wino_act_d(int act, double v, double alpha)
{
    switch (act) {
    case WINO_ACT_RELU: return v < 0.0 ? 0.0 : v;
    case WINO_ACT_LEAKY_RELU:
    case WINO_ACT_PRELU: return v >= 0.0 ? v : v * alpha;
    case WINO_ACT_ELU: return v > 0.0 ? v : alpha * expm1(v);
    case WINO_ACT_SILU: return v / (1.0 + exp(-v));
    case WINO_ACT_SIGMOID: return 1.0 / (1.0 + exp(-v));
    case WINO_ACT_TANH: return tanh(v);
    default: return v;
    }
}

/* Merge the moments (nb, mb, m2b) of a part into the running (*n, *m, *m2)
 * of the parts before it (Chan, Golub and LeVeque): M2 is the sum of squared
 * deviations from the mean, so the biased variance is m2 / n. */
WINO_HD static inline void wino_moments_merge(double *n, double *m, double *m2, double nb, double mb,
                                              double m2b)
{
    if (nb <= 0) return;
    if (*n <= 0) {
        *n = nb;
        *m = mb;
        *m2 = m2b;
        return;
    }
    const double nt = *n + nb, delta = mb - *m;
    *m += delta * (nb / nt);
    *m2 += m2b + delta * delta * (*n * nb / nt);
    *n = nt;
}

#endif /* WINO3D_FUSION_H */
