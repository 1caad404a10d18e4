/* template_names_end.h -- closes template_names.h at the end of a template. */
#undef REAL
#undef FN
#undef VEC
#undef VEC_U
#undef VL
#undef PLAN
#undef EXPAND
#undef CONTRACT
#undef SCRATCH_LEN
#undef EXPAND_DIMS_V
#undef CONTRACT_DIMS_V
#undef LOAD_LANES
#undef STORE_LANES
#undef TRANSPOSE
