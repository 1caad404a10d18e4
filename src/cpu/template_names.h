/*
 * template_names.h -- opened at the top of every CPU template (src/cpu/NAME.template.h).
 *
 * The CPU templates follow the convention of wino3d_tile.template.h: the
 * includer defines WINO_REAL (float or double) and WINO_SUFFIX (f or d);
 * this file refuses to go on without them and derives the short names the
 * template bodies use.  template_names_end.h removes them again.
 */
#ifndef WINO_REAL
#error "define WINO_REAL (float or double) and WINO_SUFFIX (f or d) before including a CPU template"
#endif
#ifndef WINO_SUFFIX
#error "define WINO_SUFFIX (f or d) before including a CPU template"
#endif

#define REAL WINO_REAL
#define FN(name) WINO_CAT(WINO_CAT(name, _), WINO_SUFFIX)  /* per-type function name */
#define VEC WINO_CAT(wino_v, WINO_SUFFIX)                   /* SIMD vector of REAL */
#define VEC_U WINO_CAT(WINO_CAT(wino_v, WINO_SUFFIX), _u)  /* VEC, element-aligned */
#define VL WINO_CAT(WINO_VL_, WINO_SUFFIX)                  /* lanes of VEC */
#define PLAN WINO_CAT(wino_plan_, WINO_SUFFIX)
#define EXPAND WINO_CAT(wino_expand_, WINO_SUFFIX)
#define CONTRACT WINO_CAT(wino_contract_, WINO_SUFFIX)
#define SCRATCH_LEN WINO_CAT(wino_scratch_len_, WINO_SUFFIX)
#define EXPAND_DIMS_V WINO_CAT(WINO_CAT(wino_expand_dims_, WINO_SUFFIX), v)
#define CONTRACT_DIMS_V WINO_CAT(WINO_CAT(wino_contract_dims_, WINO_SUFFIX), v)
#define LOAD_LANES WINO_CAT(wino_load_lanes_, WINO_SUFFIX)
#define STORE_LANES WINO_CAT(wino_store_lanes_, WINO_SUFFIX)
#define TRANSPOSE WINO_CAT(wino_transpose_, WINO_SUFFIX)      /* VL x VL block transpose */
