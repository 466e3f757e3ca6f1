/* quant_dot.h — dot products of quantized weight rows with quantized
 * activations, as llama.cpp's CPU backend computes them.
 *
 * llama.cpp never multiplies a quantized weight by f32 activations: it first
 * quantizes the activation row to the weight type's "vec_dot_type" (Q8_0 for
 * Q4_0/Q5_0/Q8_0, Q8_1 for Q4_1/Q5_1, Q8_K for Q2_K..Q6_K) and then takes
 * integer dot products per block, scaled by the blocks' f16 scales in float
 * (ggml_vec_dot_<type>_q8_<x>). Doing the same here makes anvil's quantized
 * logits (and so perplexity / KL divergence) follow llama.cpp's, and reads
 * only the quantized bytes, which is what makes quantized decode fast.
 *
 * Every kernel has a scalar `_ref` twin that transcribes ggml's generic C
 * (ggml-cpu/quants.c, ggml_vec_dot_*_generic) operation for operation; the
 * AVX2 / AVX-512 (+VNNI) kernels do the same integer arithmetic and differ
 * from the ref only in the order of the float additions (per-block partial
 * sums are accumulated in 8 float lanes, then summed), as llama.cpp's own
 * SIMD kernels do. Q2_K and Q3_K run the ref kernel in every build.
 *
 * Core conventions: nothing here allocates, prints or fails; sizes must be
 * whole blocks (checked by the callers, see q_row_size). */
#ifndef AV_QUANT_DOT_H
#define AV_QUANT_DOT_H

#include <stdint.h>

#include "dtype.h"

/* The activation type llama.cpp pairs with weights of type t (ggml's
 * type_traits_cpu[t].vec_dot_type): AV_Q8_0, AV_Q8_1 or AV_Q8_K; or
 * (av_dtype)-1 when t has no quantized dot product here (F32, F16, BF16,
 * Q8_1, Q8_K, unknown types). */
av_dtype q_vec_dot_type(av_dtype t);

/* Quantize n activations x (n a multiple of vdt's block size) into dst
 * (q_row_size(vdt, n) bytes) exactly as ggml's CPU from_float for vdt does
 * on x86: Q8_0/Q8_1 with d = amax/127, id = 127/amax and round-half-even
 * (quantize_row_q8_0/q8_1's AVX path, which can differ from the _ref code
 * in the last bit of a tie); Q8_K with quantize_row_q8_K_ref (what x86 uses).
 * vdt must be AV_Q8_0, AV_Q8_1 or AV_Q8_K. */
void q_quantize_act(av_dtype vdt, const float *x, void *dst, int64_t n);

/* dot(w_row, act_row) over n elements: w_row n elements of weight type t,
 * act_row n elements of q_vec_dot_type(t) (from q_quantize_act). t must have
 * a vec_dot_type. q_vec_dot picks the fastest kernel of this build;
 * q_vec_dot_ref is ggml's generic C. */
float q_vec_dot(av_dtype t, int64_t n, const void *w_row, const void *act_row);
float q_vec_dot_ref(av_dtype t, int64_t n, const void *w_row, const void *act_row);

/* The kernel q_vec_dot(t, ...) would call, for hot loops (NULL if none). */
typedef float (*q_vec_dot_fn)(int64_t n, const void *w_row, const void *act_row);
q_vec_dot_fn q_vec_dot_get(av_dtype t);

/* Which kernels this build compiled: "avx512-vnni", "avx2" or "scalar". */
const char *q_vec_dot_impl(void);

#endif
