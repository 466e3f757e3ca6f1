/* ops.c — numeric kernels of the forward pass (see ops.h).
 *
 * Three builds of the hot kernels, chosen at compile time:
 *   AVX-512 (F+BW+VL: masked 16-bit loads for column tails), 16 lanes;
 *   AVX2+FMA+F16C (PORTABLE=1), 8 lanes with scalar column tails;
 *   plain C (anything else, e.g. the clang fuzz build) = the _ref twins.
 * The _ref functions are the definitions: dot products accumulate in double,
 * the rest follows ggml's scalar code (rms_norm and soft_max sum in double).
 * -std=c11 implies -ffp-contract=off, so the scalar code is never fused into
 * FMAs behind our back and the refs stay exact twins of ggml's arithmetic. */
#include "ops.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"
#include "quant_dot.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define OPS_AVX512 1
#include <immintrin.h>
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define OPS_AVX2 1
#include <immintrin.h>
#endif

/* Matvecs smaller than this many weight bytes run on one thread. Measured on
 * the 2-vCPU Zen4 VM with scripts/bench/ops_bench.c: an OpenMP region costs
 * ~3.8 us there (empty region, spinning or not), one thread streams ~110 GB/s
 * from L2 but only ~30 GB/s from L3/DRAM, two threads ~45-60 GB/s. Decode
 * streams every weight once per token, so the cold numbers decide: splitting
 * pays from ~250 KB (256x256 f32, 512x256 f16) up. */
#define OPS_MT_MIN_BYTES (256 * 1024)

int ops_weight_supported(av_dtype t) {
    if (t == AV_F32 || t == AV_F16 || t == AV_BF16) return 1;
    const av_dtype_traits *tr = av_dtype_traits_of(t);
    return tr && tr->is_quantized && tr->to_float != NULL;
}

size_t ops_row_bytes(av_dtype t, int64_t cols) {
    const av_dtype_traits *tr = av_dtype_traits_of(t);
    return (size_t)(cols / tr->block_size) * tr->type_size;
}

/* Quantized rows without a quantized dot product (Q8_1 / Q8_K weights):
 * widen each row with the type's dequantizer, then an f32 dot. */
static void matvec_rows_deq(av_dtype wt, const void *W, const float *x, float *y, int64_t r0,
                            int64_t r1, int64_t cols) {
    const av_dtype_traits *tr = av_dtype_traits_of(wt);
    const size_t rb = ops_row_bytes(wt, cols);
    float *buf = malloc((size_t)cols * sizeof *buf);
    if (!buf) { /* no memory for one row: fall back to nothing sensible but defined */
        for (int64_t r = r0; r < r1; r++) y[r] = NAN;
        return;
    }
    for (int64_t r = r0; r < r1; r++) {
        tr->to_float((const char *)W + (size_t)r * rb, buf, cols);
        y[r] = ops_dot_f32(buf, x, cols);
    }
    free(buf);
}

/* Quantized weights the way llama.cpp's CPU backend multiplies them: x is
 * quantized once to the weight type's vec_dot_type (q_quantize_act), then
 * every row is an integer-block dot product (core/quant_dot.c). `act` holds
 * the quantized x; rows [r0, r1). */
static void matvec_rows_q(av_dtype wt, const void *W, const void *act, float *y, int64_t r0,
                          int64_t r1, int64_t cols) {
    const q_vec_dot_fn dot = q_vec_dot_get(wt);
    const size_t rb = ops_row_bytes(wt, cols);
    const char *w = (const char *)W;
    for (int64_t r = r0; r < r1; r++) y[r] = dot(cols, w + (size_t)r * rb, act);
}

/* Activation rows up to this many bytes are quantized into a stack buffer
 * (a Q8_0 row of 15k elements), larger ones into malloc. */
#define OPS_ACT_STACK 16384

/* ================================================================ refs */

float ops_dot_f32_ref(const float *w, const float *x, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)(w[i] * x[i]);
    return (float)s;
}

float ops_dot_f16_ref(const uint16_t *w, const float *x, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)(av_f16_to_f32(w[i]) * x[i]);
    return (float)s;
}

float ops_dot_bf16_ref(const uint16_t *w, const float *x, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)(av_bf16_to_f32(w[i]) * x[i]);
    return (float)s;
}

// W: [rows, cols], x: [cols], y: [rows]
void ops_matvec_ref(av_dtype wt, const void *W, const float *x, float *y, int64_t rows,
                    int64_t cols) {
    for (int64_t r = 0; r < rows; r++) {
        if (wt == AV_F32)
            y[r] = ops_dot_f32_ref((const float *)W + r * cols, x, cols);
        else if (wt == AV_F16)
            y[r] = ops_dot_f16_ref((const uint16_t *)W + r * cols, x, cols);
        else if (wt == AV_BF16)
            y[r] = ops_dot_bf16_ref((const uint16_t *)W + r * cols, x, cols);
        else if (q_vec_dot_type(wt) != (av_dtype)-1) { /* llama.cpp's quantized dot */
            const av_dtype vdt = q_vec_dot_type(wt);
            void *act = malloc(q_row_size(vdt, cols));
            if (!act) { y[r] = NAN; continue; }
            q_quantize_act(vdt, x, act, cols);
            y[r] = q_vec_dot_ref(wt, cols, (const char *)W + (size_t)r * ops_row_bytes(wt, cols), act);
            free(act);
        } else { /* no dot product: the type's dequantizer, then the f32 dot */
            float *buf = malloc((size_t)cols * sizeof *buf);
            if (!buf) { y[r] = NAN; continue; }
            av_dtype_traits_of(wt)->to_float((const char *)W + (size_t)r * ops_row_bytes(wt, cols), buf, cols);
            y[r] = ops_dot_f32_ref(buf, x, cols);
            free(buf);
        }
    }
}

/* ggml_compute_forward_rms_norm_f32 followed by ggml_mul with the weight. */
void ops_rmsnorm_ref(float *out, const float *x, const float *w, int64_t n, float eps) {
    double sum = 0;
    for (int64_t i = 0; i < n; i++) sum += (double)(x[i] * x[i]);
    const float mean = (float)(sum / (double)n);
    const float scale = 1.0f / sqrtf(mean + eps);
    for (int64_t i = 0; i < n; i++) {
        float v = x[i] * scale;
        out[i] = v * w[i];
    }
}

/* ggml_vec_soft_max_f32 (sum in ggml_float) and ggml_vec_scale_f32(1/sum). */
void ops_softmax_ref(float *x, int64_t n) {
    if (n <= 0) return;
    float max = -INFINITY;
    for (int64_t i = 0; i < n; i++) max = x[i] > max ? x[i] : max;
    double sum = 0;
    for (int64_t i = 0; i < n; i++) {
        float v = expf(x[i] - max);
        sum += (double)v;
        x[i] = v;
    }
    const float s = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; i++) x[i] *= s;
}

void ops_swiglu_ref(float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

/* ggml_rope_cache_init with freq_scale 1, ext_factor 0, attn_factor 1:
 * theta starts at pos and is multiplied by base^(-2/d) per pair, in float. */
static void rope_cache(float *c, float *s, int half, int head_dim, int pos, float base) {
    const float theta_scale = powf(base, -2.0f / (float)head_dim);
    float theta = (float)pos;
    for (int i = 0; i < half; i++) {
        c[i] = cosf(theta);
        s[i] = sinf(theta);
        theta *= theta_scale;
    }
}

static void rope_head(float *x, const float *c, const float *s, int half, int mode) {
    // NORM pairs (2i, 2i+1); NEOX pairs (i, i+half)
    const int stride = mode == OPS_ROPE_NEOX ? 1 : 2, off = mode == OPS_ROPE_NEOX ? half : 1;
    for (int i = 0; i < half; i++) {
        float *p = x + (int64_t)i * stride;
        const float x0 = p[0], x1 = p[off];
        p[0] = x0 * c[i] - x1 * s[i];
        p[off] = x0 * s[i] + x1 * c[i];
    }
}

// x: [n_head, head_dim]; angles recomputed per head, rotation inline: the plainest form.
void ops_rope_ref(float *x, int n_head, int head_dim, int pos, float base, int mode) {
    const int half = head_dim / 2;
    const float theta_scale = powf(base, -2.0f / (float)head_dim);
    for (int h = 0; h < n_head; h++) {
        float *xh = x + (int64_t)h * head_dim;
        float theta = (float)pos;
        for (int i = 0; i < half; i++) {
            const float c = cosf(theta), s = sinf(theta);
            const int i0 = mode == OPS_ROPE_NEOX ? i : 2 * i;
            const int i1 = mode == OPS_ROPE_NEOX ? i + half : 2 * i + 1;
            const float x0 = xh[i0], x1 = xh[i1];
            xh[i0] = x0 * c - x1 * s;
            xh[i1] = x0 * s + x1 * c;
            theta *= theta_scale;
        }
    }
}

/* ================================================================ AVX-512 */
#if defined(OPS_AVX512)

/* 16 weights widened to f32; the _m forms load only the lanes in m (zero elsewhere). */
static inline __m512 ld_f32(const float *p) { return _mm512_loadu_ps(p); }
static inline __m512 ldm_f32(const float *p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
static inline __m512 ld_f16(const uint16_t *p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}
static inline __m512 ldm_f16(const uint16_t *p, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
}
/* bf16 is the top half of an f32: zero-extend to 32 bits and shift left 16. */
static inline __m512 ld_bf16(const uint16_t *p) {
    __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}
static inline __m512 ldm_bf16(const uint16_t *p, __mmask16 m) {
    __m512i v = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}
static inline __mmask16 tail_mask(int64_t k) { return (__mmask16)((1u << k) - 1u); }

static inline __m256 fold256(__m512 a) {
    return _mm256_add_ps(_mm512_castps512_ps256(a),
                         _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
}

/* Horizontal sums of four vectors at once: [sum a0, sum a1, sum a2, sum a3]. */
static inline __m128 hsum4_256(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
    __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
}

/* DOT1: one row, two accumulators. ROWS4: four rows (stride ld) share each x
 * load; four independent FMA chains cover the FMA latency. */
#define OPS_KERNELS(SFX, T)                                                                   \
    static float dot1_##SFX(const T *w, const float *x, int64_t n) {                          \
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();                            \
        int64_t i = 0;                                                                        \
        for (; i + 32 <= n; i += 32) {                                                        \
            a0 = _mm512_fmadd_ps(ld_##SFX(w + i), _mm512_loadu_ps(x + i), a0);                \
            a1 = _mm512_fmadd_ps(ld_##SFX(w + i + 16), _mm512_loadu_ps(x + i + 16), a1);      \
        }                                                                                     \
        for (; i + 16 <= n; i += 16)                                                          \
            a0 = _mm512_fmadd_ps(ld_##SFX(w + i), _mm512_loadu_ps(x + i), a0);                \
        if (i < n) {                                                                          \
            __mmask16 m = tail_mask(n - i);                                                   \
            a1 = _mm512_fmadd_ps(ldm_##SFX(w + i, m), _mm512_maskz_loadu_ps(m, x + i), a1);   \
        }                                                                                     \
        return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));                                   \
    }                                                                                         \
    static void rows4_##SFX(const T *w, int64_t ld, const float *x, float *y, int64_t n) {    \
        const T *w0 = w, *w1 = w + ld, *w2 = w + 2 * ld, *w3 = w + 3 * ld;                    \
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                           \
        int64_t i = 0;                                                                        \
        for (; i + 16 <= n; i += 16) {                                                        \
            __m512 xv = _mm512_loadu_ps(x + i);                                               \
            a0 = _mm512_fmadd_ps(ld_##SFX(w0 + i), xv, a0);                                   \
            a1 = _mm512_fmadd_ps(ld_##SFX(w1 + i), xv, a1);                                   \
            a2 = _mm512_fmadd_ps(ld_##SFX(w2 + i), xv, a2);                                   \
            a3 = _mm512_fmadd_ps(ld_##SFX(w3 + i), xv, a3);                                   \
        }                                                                                     \
        if (i < n) {                                                                          \
            __mmask16 m = tail_mask(n - i);                                                   \
            __m512 xv = _mm512_maskz_loadu_ps(m, x + i);                                      \
            a0 = _mm512_fmadd_ps(ldm_##SFX(w0 + i, m), xv, a0);                               \
            a1 = _mm512_fmadd_ps(ldm_##SFX(w1 + i, m), xv, a1);                               \
            a2 = _mm512_fmadd_ps(ldm_##SFX(w2 + i, m), xv, a2);                               \
            a3 = _mm512_fmadd_ps(ldm_##SFX(w3 + i, m), xv, a3);                               \
        }                                                                                     \
        _mm_storeu_ps(y, hsum4_256(fold256(a0), fold256(a1), fold256(a2), fold256(a3)));      \
    }

OPS_KERNELS(f32, float)
OPS_KERNELS(f16, uint16_t)
OPS_KERNELS(bf16, uint16_t)

/* BF16 without widening shuffles: a 64-byte load holds 32 bf16; in each
 * 32-bit lane j the low half is element 2j and the high half element 2j+1,
 * so `v << 16` and `v & 0xffff0000` are those elements as f32. x is split
 * once per call into evens and odds per 32-block to match (xp). */
#define OPS_XP_MAX 4096
static void split_even_odd(const float *x, float *xp, int64_t n32) {
    const __m512i ev = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i od = _mm512_add_epi32(ev, _mm512_set1_epi32(1));
    for (int64_t i = 0; i < n32; i += 32) {
        __m512 lo = _mm512_loadu_ps(x + i), hi = _mm512_loadu_ps(x + i + 16);
        _mm512_storeu_ps(xp + i, _mm512_permutex2var_ps(lo, ev, hi));
        _mm512_storeu_ps(xp + i + 16, _mm512_permutex2var_ps(lo, od, hi));
    }
}

// w: 4 rows of stride ld; xp: split x for [0, n & ~31); x: plain x for the tail
static void rows4_bf16p(const uint16_t *w, int64_t ld, const float *xp, const float *x, float *y,
                        int64_t n) {
    const uint16_t *w0 = w, *w1 = w + ld, *w2 = w + 2 * ld, *w3 = w + 3 * ld;
    const __m512i hi = _mm512_set1_epi32((int)0xffff0000u);
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    int64_t i = 0;
#define BF16P_ROW(wk, ak, bk)                                                                 \
    do {                                                                                      \
        __m512i v = _mm512_loadu_si512((const void *)((wk) + i));                             \
        ak = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(v, 16)), xe, ak);          \
        bk = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(v, hi)), xo, bk);           \
    } while (0)
    for (; i + 32 <= n; i += 32) {
        const __m512 xe = _mm512_loadu_ps(xp + i), xo = _mm512_loadu_ps(xp + i + 16);
        BF16P_ROW(w0, a0, b0);
        BF16P_ROW(w1, a1, b1);
        BF16P_ROW(w2, a2, b2);
        BF16P_ROW(w3, a3, b3);
    }
#undef BF16P_ROW
    for (; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : tail_mask(n - i);
        __m512 xv = _mm512_maskz_loadu_ps(m, x + i);
        a0 = _mm512_fmadd_ps(ldm_bf16(w0 + i, m), xv, a0);
        a1 = _mm512_fmadd_ps(ldm_bf16(w1 + i, m), xv, a1);
        a2 = _mm512_fmadd_ps(ldm_bf16(w2 + i, m), xv, a2);
        a3 = _mm512_fmadd_ps(ldm_bf16(w3 + i, m), xv, a3);
    }
    a0 = _mm512_add_ps(a0, b0), a1 = _mm512_add_ps(a1, b1);
    a2 = _mm512_add_ps(a2, b2), a3 = _mm512_add_ps(a3, b3);
    _mm_storeu_ps(y, hsum4_256(fold256(a0), fold256(a1), fold256(a2), fold256(a3)));
}

/* exp for the swiglu: Cephes expf reduction + degree-6 polynomial (~1 ulp);
 * scalef does 2^n with correct overflow to inf and underflow to 0. The clamp
 * keeps the reduction sane for huge |x| and lets NaN through (MINPS/MAXPS
 * return the second operand when one is NaN). */
static inline __m512 exp512(__m512 x) {
    x = _mm512_max_ps(_mm512_set1_ps(-104.0f), _mm512_min_ps(_mm512_set1_ps(89.0f), x));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

/* ================================================================ AVX2 */
#elif defined(OPS_AVX2)

static inline __m256 ld_f32(const float *p) { return _mm256_loadu_ps(p); }
static inline __m256 ld_f16(const uint16_t *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}
static inline __m256 ld_bf16(const uint16_t *p) {
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}
static inline float sc_f32(const float *p, int64_t i) { return p[i]; }
static inline float sc_f16(const uint16_t *p, int64_t i) { return av_f16_to_f32(p[i]); }
static inline float sc_bf16(const uint16_t *p, int64_t i) { return av_bf16_to_f32(p[i]); }

static inline float hsum256(__m256 a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
static inline __m128 hsum4_256(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
    __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
}

/* As the AVX-512 kernels, 8 lanes; the column tail (< 8) is scalar. */
#define OPS_KERNELS(SFX, T)                                                                   \
    static float dot1_##SFX(const T *w, const float *x, int64_t n) {                          \
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();                            \
        int64_t i = 0;                                                                        \
        for (; i + 16 <= n; i += 16) {                                                        \
            a0 = _mm256_fmadd_ps(ld_##SFX(w + i), _mm256_loadu_ps(x + i), a0);                \
            a1 = _mm256_fmadd_ps(ld_##SFX(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);        \
        }                                                                                     \
        for (; i + 8 <= n; i += 8)                                                            \
            a0 = _mm256_fmadd_ps(ld_##SFX(w + i), _mm256_loadu_ps(x + i), a0);                \
        float s = hsum256(_mm256_add_ps(a0, a1));                                             \
        for (; i < n; i++) s += sc_##SFX(w, i) * x[i];                                        \
        return s;                                                                             \
    }                                                                                         \
    static void rows4_##SFX(const T *w, int64_t ld, const float *x, float *y, int64_t n) {    \
        const T *w0 = w, *w1 = w + ld, *w2 = w + 2 * ld, *w3 = w + 3 * ld;                    \
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                           \
        int64_t i = 0;                                                                        \
        for (; i + 8 <= n; i += 8) {                                                          \
            __m256 xv = _mm256_loadu_ps(x + i);                                               \
            a0 = _mm256_fmadd_ps(ld_##SFX(w0 + i), xv, a0);                                   \
            a1 = _mm256_fmadd_ps(ld_##SFX(w1 + i), xv, a1);                                   \
            a2 = _mm256_fmadd_ps(ld_##SFX(w2 + i), xv, a2);                                   \
            a3 = _mm256_fmadd_ps(ld_##SFX(w3 + i), xv, a3);                                   \
        }                                                                                     \
        float s[4];                                                                           \
        _mm_storeu_ps(s, hsum4_256(a0, a1, a2, a3));                                          \
        for (; i < n; i++) {                                                                  \
            s[0] += sc_##SFX(w0, i) * x[i];                                                   \
            s[1] += sc_##SFX(w1, i) * x[i];                                                   \
            s[2] += sc_##SFX(w2, i) * x[i];                                                   \
            s[3] += sc_##SFX(w3, i) * x[i];                                                   \
        }                                                                                     \
        memcpy(y, s, sizeof s);                                                               \
    }

OPS_KERNELS(f32, float)
OPS_KERNELS(f16, uint16_t)
OPS_KERNELS(bf16, uint16_t)

#endif

/* ================================================================ dispatch */
#if defined(OPS_AVX512) || defined(OPS_AVX2)

float ops_dot_f32(const float *w, const float *x, int64_t n) { return dot1_f32(w, x, n); }
float ops_dot_f16(const uint16_t *w, const float *x, int64_t n) { return dot1_f16(w, x, n); }
float ops_dot_bf16(const uint16_t *w, const float *x, int64_t n) { return dot1_bf16(w, x, n); }

/* Rows [r0, r1) of y = W x; blocks of 4 rows, then single rows. The 4-row
 * blocks start at multiples of 4 from r0, so callers that split at multiples
 * of 4 get the same bits as one serial call. */
static void matvec_rows(av_dtype wt, const void *W, const float *x, float *y, int64_t r0,
                        int64_t r1, int64_t cols) {
    int64_t r = r0;
    if (wt == AV_F32) {
        const float *w = W;
        for (; r + 4 <= r1; r += 4) rows4_f32(w + r * cols, cols, x, y + r, cols);
        for (; r < r1; r++) y[r] = dot1_f32(w + r * cols, x, cols);
    } else if (wt == AV_F16) {
        const uint16_t *w = W;
        for (; r + 4 <= r1; r += 4) rows4_f16(w + r * cols, cols, x, y + r, cols);
        for (; r < r1; r++) y[r] = dot1_f16(w + r * cols, x, cols);
    } else {
        const uint16_t *w = W;
#if defined(OPS_AVX512)
        if (cols <= OPS_XP_MAX && r + 4 <= r1) {
            float xp[OPS_XP_MAX];
            split_even_odd(x, xp, cols & ~(int64_t)31);
            for (; r + 4 <= r1; r += 4) rows4_bf16p(w + r * cols, cols, xp, x, y + r, cols);
        }
#endif
        for (; r + 4 <= r1; r += 4) rows4_bf16(w + r * cols, cols, x, y + r, cols);
        for (; r < r1; r++) y[r] = dot1_bf16(w + r * cols, x, cols);
    }
}

#else /* plain C */

float ops_dot_f32(const float *w, const float *x, int64_t n) { return ops_dot_f32_ref(w, x, n); }
float ops_dot_f16(const uint16_t *w, const float *x, int64_t n) { return ops_dot_f16_ref(w, x, n); }
float ops_dot_bf16(const uint16_t *w, const float *x, int64_t n) {
    return ops_dot_bf16_ref(w, x, n);
}

static void matvec_rows(av_dtype wt, const void *W, const float *x, float *y, int64_t r0,
                        int64_t r1, int64_t cols) {
    const char *w = (const char *)W + (size_t)r0 * ops_row_bytes(wt, cols);
    ops_matvec_ref(wt, w, x, y + r0, r1 - r0, cols);
}

#endif

// W: [rows, cols] of wt, x: [cols], y: [rows]
void ops_matvec(av_dtype wt, const void *W, const float *x, float *y, int64_t rows, int64_t cols,
                int n_threads) {
    const size_t bytes = (size_t)rows * ops_row_bytes(wt, cols);
    const int quant = wt != AV_F32 && wt != AV_F16 && wt != AV_BF16;
    const av_dtype vdt = quant ? q_vec_dot_type(wt) : (av_dtype)-1;
    _Alignas(64) char stack_act[OPS_ACT_STACK];
    void *act = NULL;
    if (vdt != (av_dtype)-1) {
        const size_t ab = q_row_size(vdt, cols);
        act = ab <= sizeof stack_act ? stack_act : malloc(ab);
        if (!act) {
            for (int64_t r = 0; r < rows; r++) y[r] = NAN;
            return;
        }
        q_quantize_act(vdt, x, act, cols);
    }
    if (n_threads <= 1 || rows < 8 || bytes < OPS_MT_MIN_BYTES) {
        if (act) matvec_rows_q(wt, W, act, y, 0, rows, cols);
        else if (quant) matvec_rows_deq(wt, W, x, y, 0, rows, cols);
        else matvec_rows(wt, W, x, y, 0, rows, cols);
    } else {
        if (n_threads > rows / 4) n_threads = (int)(rows / 4);
        // one contiguous chunk per thread, a multiple of 4 rows (see matvec_rows)
        const int64_t chunk = ((rows + n_threads - 1) / n_threads + 3) & ~(int64_t)3;
#pragma omp parallel for num_threads(n_threads) schedule(static)
        for (int t = 0; t < n_threads; t++) {
            const int64_t r0 = t * chunk, r1 = r0 + chunk < rows ? r0 + chunk : rows;
            if (r0 >= r1) continue;
            if (act) matvec_rows_q(wt, W, act, y, r0, r1, cols);
            else if (quant) matvec_rows_deq(wt, W, x, y, r0, r1, cols);
            else matvec_rows(wt, W, x, y, r0, r1, cols);
        }
    }
    if (act && act != (void *)stack_act) free(act);
}

/* ================================================================ matmul */

/* Quantized W for a batch: every row of X quantized once to the
 * vec_dot_type, then Y[t, r] = q_vec_dot(W[r], act[t]) — the same numbers
 * as n calls of ops_matvec, i.e. llama.cpp's mul_mat for quantized weights.
 * Row tiles of W stay in cache while every token passes over them. Returns
 * 0, or -1 when the activation buffer cannot be allocated. */
#define OPS_QTILE 16
static int matmul_q(av_dtype wt, av_dtype vdt, const void *W, const float *X, float *Y, int64_t n,
                    int64_t rows, int64_t cols, int nt) {
    const size_t ab = q_row_size(vdt, cols), rb = ops_row_bytes(wt, cols);
    char *act = malloc((size_t)n * ab);
    if (!act) return -1;
    const q_vec_dot_fn dot = q_vec_dot_get(wt);
    const int64_t ntiles = (rows + OPS_QTILE - 1) / OPS_QTILE;
#pragma omp parallel num_threads(nt)
    {
#pragma omp for schedule(static)
        for (int64_t t = 0; t < n; t++) q_quantize_act(vdt, X + t * cols, act + (size_t)t * ab, cols);
#pragma omp for schedule(static)
        for (int64_t k = 0; k < ntiles; k++) {
            const int64_t r0 = k * OPS_QTILE, r1 = r0 + OPS_QTILE < rows ? r0 + OPS_QTILE : rows;
            for (int64_t t = 0; t < n; t++) {
                const char *a = act + (size_t)t * ab;
                float *yt = Y + t * rows;
                for (int64_t r = r0; r < r1; r++) yt[r] = dot(cols, (const char *)W + (size_t)r * rb, a);
            }
        }
    }
    free(act);
    return 0;
}

// X: [n, cols], W: [rows, cols], Y: [n, rows], scratch: [rows, cols] for F16/BF16
void ops_matmul(av_dtype wt, const void *W, const float *X, float *Y, int64_t n, int64_t rows,
                int64_t cols, float *scratch, int n_threads) {
    if (n == 1) {
        ops_matvec(wt, W, X, Y, rows, cols, n_threads);
        return;
    }
    int nt = n_threads < 1 ? 1 : n_threads;
    if ((double)n * rows * cols < 2e6) nt = 1; /* below ~1 ms of work threads don't pay */
    const int quant = wt != AV_F32 && wt != AV_F16 && wt != AV_BF16;
    const av_dtype vdt = quant ? q_vec_dot_type(wt) : (av_dtype)-1;
    if (vdt != (av_dtype)-1) {
        if (matmul_q(wt, vdt, W, X, Y, n, rows, cols, nt) == 0) return;
        for (int64_t t = 0; t < n; t++) ops_matvec(wt, W, X + t * cols, Y + t * rows, rows, cols, nt);
        return;
    }
    /* One threading runtime only: OpenBLAS runs single-threaded inside our
     * OpenMP threads, each on its own slice of W's rows (Y's columns).
     * OpenBLAS's own pthreads spinning beside OpenMP's on 2 cores cost 10x. */
    openblas_set_num_threads(1);
    const int64_t step = ((rows + nt - 1) / nt + 15) & ~(int64_t)15;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t r0 = 0; r0 < rows; r0 += step) {
        const int64_t nr = rows - r0 < step ? rows - r0 : step;
        const float *Wf = (const float *)W + r0 * cols;
        if (wt != AV_F32) {
            float *dst = scratch + r0 * cols;
            if (wt == AV_F16)
                av_f16_to_f32_row((const uint16_t *)W + r0 * cols, dst, nr * cols);
            else if (wt == AV_BF16)
                av_bf16_to_f32_row((const uint16_t *)W + r0 * cols, dst, nr * cols);
            else
                av_dtype_traits_of(wt)->to_float((const char *)W + (size_t)r0 * ops_row_bytes(wt, cols),
                                                 dst, nr * cols);
            Wf = dst;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)nr, (int)cols, 1.0f, X,
                    (int)cols, Wf, (int)cols, 0.0f, Y + r0, (int)rows);
    }
}

/* ================================================================ norms, activations */

/* Squares in float exactly as the ref, summed in double lanes: only the
 * order of the double additions differs from ops_rmsnorm_ref. */
void ops_rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps) {
    int64_t i = 0;
    double sum = 0;
#if defined(OPS_AVX512)
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    for (; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : tail_mask(n - i);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        __m512 q = _mm512_mul_ps(v, v);
        s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(q)));
        s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(
                                   _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(q), 1))));
    }
    sum = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
#elif defined(OPS_AVX2)
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256 q = _mm256_mul_ps(v, v);
        s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(q)));
        s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(q, 1)));
    }
    double t[4];
    _mm256_storeu_pd(t, _mm256_add_pd(s0, s1));
    sum = (t[0] + t[1]) + (t[2] + t[3]);
#endif
    for (; i < n; i++) sum += (double)(x[i] * x[i]);
    const float mean = (float)(sum / (double)n);
    const float scale = 1.0f / sqrtf(mean + eps);
    // two roundings (x*scale, then *w) like ggml's rms_norm + mul; the compiler vectorises it
    for (int64_t k = 0; k < n; k++) {
        float v = x[k] * scale;
        out[k] = v * w[k];
    }
}

/* Max is order-independent and expf is scalar, so this matches the ref bit for bit. */
void ops_softmax(float *x, int64_t n) {
    if (n <= 0) return;
    float max = -INFINITY;
    int64_t i = 0;
#if defined(OPS_AVX512)
    __m512 m = _mm512_set1_ps(-INFINITY);
    for (; i + 16 <= n; i += 16) m = _mm512_max_ps(m, _mm512_loadu_ps(x + i));
    max = _mm512_reduce_max_ps(m);
#elif defined(OPS_AVX2)
    __m256 m = _mm256_set1_ps(-INFINITY);
    for (; i + 8 <= n; i += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
    float t[8];
    _mm256_storeu_ps(t, m);
    for (int k = 0; k < 8; k++) max = t[k] > max ? t[k] : max;
#endif
    for (; i < n; i++) max = x[i] > max ? x[i] : max;
    double sum = 0;
    for (int64_t k = 0; k < n; k++) {
        float v = expf(x[k] - max);
        sum += (double)v;
        x[k] = v;
    }
    const float s = (float)(1.0 / sum);
    for (int64_t k = 0; k < n; k++) x[k] *= s;
}

// g, u: [n]
void ops_swiglu(float *g, const float *u, int64_t n) {
#if defined(OPS_AVX512)
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : tail_mask(n - i);
        __m512 gv = _mm512_maskz_loadu_ps(m, g + i);
        __m512 e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), gv));
        __m512 s = _mm512_div_ps(gv, _mm512_add_ps(one, e));
        _mm512_mask_storeu_ps(g + i, m, _mm512_mul_ps(s, _mm512_maskz_loadu_ps(m, u + i)));
    }
#else
    ops_swiglu_ref(g, u, n);
#endif
}

/* Same arithmetic as the ref with the angles computed once for all heads. */
void ops_rope(float *x, int n_head, int head_dim, int pos, float base, int mode) {
    enum { MAX_HALF = 512 };
    const int half = head_dim / 2;
    if (half > MAX_HALF) {
        ops_rope_ref(x, n_head, head_dim, pos, base, mode);
        return;
    }
    float c[MAX_HALF], s[MAX_HALF];
    rope_cache(c, s, half, head_dim, pos, base);
    for (int h = 0; h < n_head; h++) rope_head(x + (int64_t)h * head_dim, c, s, half, mode);
}

/* ================================================================ attention helpers */

void ops_axpy_ref(float *y, float a, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

void ops_axpy(float *y, float a, const float *x, int64_t n) {
    int64_t i = 0;
#if defined(OPS_AVX512)
    const __m512 va = _mm512_set1_ps(a);
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
#elif defined(OPS_AVX2)
    const __m256 va = _mm256_set1_ps(a);
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
#endif
    for (; i < n; i++) y[i] += a * x[i];
}

/* Query row r (position pos0 + r) attends keys [0, pos0 + r]: causal. */
void ops_attention_ref(const float *q, int64_t ldq, const float *k, const float *v, int64_t ldkv,
                       int n_q, int pos0, int hd, float scale, float *out, int64_t ldo,
                       float *scores) {
    for (int r = 0; r < n_q; r++) {
        const int len = pos0 + r + 1;
        for (int t = 0; t < len; t++)
            scores[t] = ops_dot_f32_ref(k + (int64_t)t * ldkv, q + (int64_t)r * ldq, hd) * scale;
        ops_softmax_ref(scores, len);
        float *o = out + (int64_t)r * ldo;
        for (int e = 0; e < hd; e++) o[e] = 0;
        for (int t = 0; t < len; t++) ops_axpy_ref(o, scores[t], v + (int64_t)t * ldkv, hd);
    }
}

void ops_attention(const float *q, int64_t ldq, const float *k, const float *v, int64_t ldkv,
                   int n_q, int pos0, int hd, float scale, float *out, int64_t ldo, float *scores) {
    if (n_q == 1) {
        const int len = pos0 + 1;
        for (int t = 0; t < len; t++) scores[t] = ops_dot_f32(k + (int64_t)t * ldkv, q, hd) * scale;
        ops_softmax(scores, len);
        memset(out, 0, (size_t)hd * sizeof(float));
        for (int t = 0; t < len; t++) ops_axpy(out, scores[t], v + (int64_t)t * ldkv, hd);
        return;
    }
    /* S [n_q, len] = scale * Q K^T, masked causal softmax, O = S V */
    const int len = pos0 + n_q;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n_q, len, hd, scale, q, (int)ldq, k,
                (int)ldkv, 0.0f, scores, len);
    for (int r = 0; r < n_q; r++) {
        float *s = scores + (int64_t)r * len;
        const int valid = pos0 + r + 1;
        ops_softmax(s, valid);
        memset(s + valid, 0, (size_t)(len - valid) * sizeof(float));
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n_q, hd, len, 1.0f, scores, len, v,
                (int)ldkv, 0.0f, out, (int)ldo);
}
