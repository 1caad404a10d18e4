# cython: language_level=3, boundscheck=False, wraparound=False
"""Thin Cython wrappers over the direct convolution (``src/cpu/direct.h``).

The callers (``pywino3d._backends.cpu.pipelines.direct``) validate everything: the geometry
dict matches the arrays, ``Wp`` and ``scratch`` have the lengths the size
queries return, ``y`` is C-contiguous.  Every call releases the GIL.
"""
from cython cimport floating

from pywino3d._backends.cpu._ext._cpu cimport wino_geom, wino_index


cdef extern from "direct.h" nogil:
    int wino_direct_lanes(int itemsize)
    wino_index wino_direct_packed_len(const wino_geom *g, int itemsize)
    wino_index wino_direct_slab_planes(const wino_geom *g, wino_index budget_elems)
    wino_index wino_direct_scratch_len(const wino_geom *g, wino_index slab_planes)
    int wino_direct_pack_w_f(const wino_geom *g, const float *w, wino_index sk, wino_index sc,
                             wino_index st, const unsigned char *tap_mask, float *Wp, int nthreads)
    int wino_direct_pack_w_d(const wino_geom *g, const double *w, wino_index sk, wino_index sc,
                             wino_index st, const unsigned char *tap_mask, double *Wp, int nthreads)
    int wino_direct_variant(const wino_geom *g, int itemsize)
    int wino_direct_forward_f(const wino_geom *g, const float *x, const float *Wp, const float *bias,
                              float *y, float *scratch, wino_index slab_planes, int variant,
                              int nthreads)
    int wino_direct_forward_d(const wino_geom *g, const double *x, const double *Wp, const double *bias,
                              double *y, double *scratch, wino_index slab_planes, int variant,
                              int nthreads)

#: Kernel variants (``src/cpu/direct.h``): 0 lets the C side choose.
VARIANTS = {"auto": 0, "channel_lanes": 1, "position_lanes": 2}


def lanes(int itemsize):
    """Output channels per SIMD vector for this item size (4 or 8)."""
    return wino_direct_lanes(itemsize)


def variant(dict fields, int itemsize):
    """Name of the variant ``"auto"`` runs for this geometry and item size."""
    cdef wino_geom g = fields
    code = wino_direct_variant(&g, itemsize)
    return next(k for k, v in VARIANTS.items() if v == code)


def packed_len(dict fields, int itemsize):
    """Elements of the packed weights of this geometry."""
    cdef wino_geom g = fields
    return wino_direct_packed_len(&g, itemsize)


def slab_planes(dict fields, wino_index budget_elems):
    """Output planes per slab within ``budget_elems`` elements of scratch."""
    cdef wino_geom g = fields
    return wino_direct_slab_planes(&g, budget_elems)


def scratch_len(dict fields, wino_index planes):
    """Elements of scratch a slab of ``planes`` output planes needs."""
    cdef wino_geom g = fields
    return wino_direct_scratch_len(&g, planes)


def pack_w(dict fields, const floating[::1] w, wino_index sk, wino_index sc, wino_index st,
           const unsigned char[::1] tap_mask, floating[::1] Wp, int nthreads):
    """Wp[kb][c][tap][lane] = w[k * sk + c * sc + tap * st] (zero past K and
    at taps where ``tap_mask`` is 0; ``tap_mask`` may be None)."""
    cdef wino_geom g = fields
    cdef const unsigned char *mask = NULL
    if tap_mask is not None:
        mask = &tap_mask[0]
    with nogil:
        if floating is float:
            wino_direct_pack_w_f(&g, &w[0], sk, sc, st, mask, &Wp[0], nthreads)
        else:
            wino_direct_pack_w_d(&g, &w[0], sk, sc, st, mask, &Wp[0], nthreads)


def forward(dict fields, const floating[:, :, :, :, :] x, const floating[::1] Wp, const floating[::1] bias,
            floating[:, :, :, :, ::1] y, floating[::1] scratch, wino_index planes, int nthreads,
            str variant="auto"):
    """y = direct convolution of x (strides given in ``fields``) with the
    packed weights, plus ``bias`` (None for none), by the kernel ``variant``
    (a key of VARIANTS)."""
    cdef wino_geom g = fields
    cdef int code = VARIANTS[variant]
    cdef const floating *b = NULL
    if bias is not None:
        b = &bias[0]
    with nogil:
        if floating is float:
            wino_direct_forward_f(&g, &x[0, 0, 0, 0, 0], &Wp[0], b, &y[0, 0, 0, 0, 0], &scratch[0],
                                  planes, code, nthreads)
        else:
            wino_direct_forward_d(&g, &x[0, 0, 0, 0, 0], &Wp[0], b, &y[0, 0, 0, 0, 0], &scratch[0],
                                  planes, code, nthreads)
