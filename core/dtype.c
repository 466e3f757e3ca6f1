/* dtype.c — the traits table and f16/bf16 conversion kernels. */
#include "dtype.h"
#include "quant.h"

#include <ctype.h>
#include <string.h>
#if defined(__AVX512F__) || defined(__F16C__)
#include <immintrin.h>
#endif

/* ---------- scalar definitions ---------- */

static inline uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* Round to nearest even; NaN keeps sign and top payload bits, made quiet
 * (what x86 F16C does, so the SIMD path and this one agree bit for bit). */
uint16_t av_f32_to_f16(float f) {
    uint32_t x = f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t exp = (x >> 23) & 0xffu;
    uint32_t man = x & 0x7fffffu;
    if (exp == 0xff) {
        if (man) return (uint16_t)(sign | 0x7e00u | (man >> 13));
        return (uint16_t)(sign | 0x7c00u);
    }
    int32_t e = (int32_t)exp - 127 + 15;
    if (e >= 0x1f) return (uint16_t)(sign | 0x7c00u); /* overflow -> inf */
    if (e <= 0) {                                     /* f16 subnormal or zero */
        if (e < -10) return (uint16_t)sign;
        man |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - e);
        uint32_t half = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t h = ((uint32_t)e << 10) | (man >> 13);
    uint32_t rem = man & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++; /* may carry into exp: correct */
    return (uint16_t)(sign | h);
}

float av_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (man ? 0x400000u | (man << 13) : 0));
    if (exp == 0) {
        if (!man) return bits_f32(sign);
        /* subnormal: normalize */
        int e = -1;
        do { man <<= 1; e++; } while (!(man & 0x400u));
        man &= 0x3ffu;
        return bits_f32(sign | ((uint32_t)(127 - 15 - e) << 23) | (man << 13));
    }
    return bits_f32(sign | ((exp + 127 - 15) << 23) | (man << 13));
}

/* As ggml and convert_hf_to_gguf.py: NaN -> quiet NaN with the top bits kept;
 * otherwise round to nearest even (subnormals kept, no flush). */
uint16_t av_f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 64);
    return (uint16_t)((u + (0x7fffu + ((u >> 16) & 1))) >> 16);
}

float av_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

void av_f32_to_f16_row_ref(const float *src, uint16_t *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = av_f32_to_f16(src[i]);
}
void av_f16_to_f32_row_ref(const uint16_t *src, float *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = av_f16_to_f32(src[i]);
}
void av_f32_to_bf16_row_ref(const float *src, uint16_t *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = av_f32_to_bf16(src[i]);
}
void av_bf16_to_f32_row_ref(const uint16_t *src, float *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = av_bf16_to_f32(src[i]);
}

/* ---------- SIMD kernels ---------- */

void av_f32_to_f16_row(const float *src, uint16_t *dst, int64_t n) {
    int64_t i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16) {
        __m256i h = _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
        _mm256_storeu_si256((__m256i *)(dst + i), h);
    }
#elif defined(__F16C__)
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128((__m128i *)(dst + i), h);
    }
#endif
    av_f32_to_f16_row_ref(src + i, dst + i, n - i);
}

void av_f16_to_f32_row(const uint16_t *src, float *dst, int64_t n) {
    int64_t i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + i))));
#elif defined(__F16C__)
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
#endif
    av_f16_to_f32_row_ref(src + i, dst + i, n - i);
}

/* Integer arithmetic, not VCVTNEPS2BF16: that instruction flushes subnormals,
 * which would differ from ggml's and PyTorch's rounding. */
void av_f32_to_bf16_row(const float *src, uint16_t *dst, int64_t n) {
    int64_t i = 0;
#if defined(__AVX512F__) && defined(__AVX512BW__)
    const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff);
    const __m512i inf = _mm512_set1_epi32(0x7f800000);
    const __m512i bias = _mm512_set1_epi32(0x7fff);
    const __m512i one = _mm512_set1_epi32(1);
    const __m512i quiet = _mm512_set1_epi32(64);
    for (; i + 16 <= n; i += 16) {
        __m512i u = _mm512_loadu_si512((const void *)(src + i));
        __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, abs_mask), inf);
        __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), one);
        __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(bias, lsb)), 16);
        __m512i q = _mm512_or_si512(_mm512_srli_epi32(u, 16), quiet);
        r = _mm512_mask_mov_epi32(r, nan, q);
        _mm256_storeu_si256((__m256i *)(dst + i), _mm512_cvtepi32_epi16(r));
    }
#endif
    av_f32_to_bf16_row_ref(src + i, dst + i, n - i);
}

void av_bf16_to_f32_row(const uint16_t *src, float *dst, int64_t n) {
    int64_t i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16) {
        __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(src + i)));
        _mm512_storeu_si512((void *)(dst + i), _mm512_slli_epi32(w, 16));
    }
#endif
    av_bf16_to_f32_row_ref(src + i, dst + i, n - i);
}

/* ---------- traits table ---------- */

static void f32_to_float(const void *s, float *d, int64_t n) { memcpy(d, s, (size_t)n * 4); }
static void f32_from_float(const float *s, void *d, int64_t n) { memcpy(d, s, (size_t)n * 4); }
static void f16_to_float(const void *s, float *d, int64_t n) { av_f16_to_f32_row(s, d, n); }
static void f16_from_float(const float *s, void *d, int64_t n) { av_f32_to_f16_row(s, d, n); }
static void bf16_to_float(const void *s, float *d, int64_t n) { av_bf16_to_f32_row(s, d, n); }
static void bf16_from_float(const float *s, void *d, int64_t n) { av_f32_to_bf16_row(s, d, n); }
static void f64_to_float(const void *s, float *d, int64_t n) {
    const double *x = s;
    for (int64_t i = 0; i < n; i++) d[i] = (float)x[i];
}
static void f64_from_float(const float *s, void *d, int64_t n) {
    double *y = d;
    for (int64_t i = 0; i < n; i++) y[i] = s[i];
}

/* Quantized types: to_float is ggml's dequantize_row_*, from_float its
 * reference quantizer without importance weights (core/quant.h). */
#define QWRAP(ty, blk)                                                                          \
    static void ty##_to_float(const void *s, float *d, int64_t n) { q_dequantize_row_##ty(s, d, n); } \
    static void ty##_from_float(const float *s, void *d, int64_t n) { q_quantize_row_##ty(s, (blk *)d, n); }
QWRAP(q4_0, block_q4_0)
QWRAP(q4_1, block_q4_1)
QWRAP(q5_0, block_q5_0)
QWRAP(q5_1, block_q5_1)
QWRAP(q8_0, block_q8_0)
QWRAP(q8_1, block_q8_1)
QWRAP(q2_K, block_q2_K)
QWRAP(q3_K, block_q3_K)
QWRAP(q4_K, block_q4_K)
QWRAP(q5_K, block_q5_K)
QWRAP(q6_K, block_q6_K)
QWRAP(q8_K, block_q8_K)

#define PLAIN(nm, sz) { nm, 1, sz, 0, 1, NULL, NULL }
#define QCONV(ty, bs, sz) { #ty, bs, sz, 1, 1, ty##_to_float, ty##_from_float }
#define QUANT(nm, bs, sz) { nm, bs, sz, 1, 1, NULL, NULL }

static const av_dtype_traits TRAITS[AV_DTYPE_MAX] = {
    [AV_F32] = { "f32", 1, 4, 0, 1, f32_to_float, f32_from_float },
    [AV_F16] = { "f16", 1, 2, 0, 1, f16_to_float, f16_from_float },
    [AV_Q4_0] = QCONV(q4_0, 32, 18),
    [AV_Q4_1] = QCONV(q4_1, 32, 20),
    [AV_Q5_0] = QCONV(q5_0, 32, 22),
    [AV_Q5_1] = QCONV(q5_1, 32, 24),
    [AV_Q8_0] = QCONV(q8_0, 32, 34),
    [AV_Q8_1] = QCONV(q8_1, 32, 36),
    [AV_Q2_K] = QCONV(q2_K, 256, 84),
    [AV_Q3_K] = QCONV(q3_K, 256, 110),
    [AV_Q4_K] = QCONV(q4_K, 256, 144),
    [AV_Q5_K] = QCONV(q5_K, 256, 176),
    [AV_Q6_K] = QCONV(q6_K, 256, 210),
    [AV_Q8_K] = QCONV(q8_K, 256, 292),
    [AV_IQ2_XXS] = QUANT("iq2_xxs", 256, 66),
    [AV_IQ2_XS] = QUANT("iq2_xs", 256, 74),
    [AV_IQ3_XXS] = QUANT("iq3_xxs", 256, 98),
    [AV_IQ1_S] = QUANT("iq1_s", 256, 50),
    [AV_IQ4_NL] = QUANT("iq4_nl", 32, 18),
    [AV_IQ3_S] = QUANT("iq3_s", 256, 110),
    [AV_IQ2_S] = QUANT("iq2_s", 256, 82),
    [AV_IQ4_XS] = QUANT("iq4_xs", 256, 136),
    [AV_I8] = PLAIN("i8", 1),
    [AV_I16] = PLAIN("i16", 2),
    [AV_I32] = PLAIN("i32", 4),
    [AV_I64] = PLAIN("i64", 8),
    [AV_F64] = { "f64", 1, 8, 0, 1, f64_to_float, f64_from_float },
    [AV_IQ1_M] = QUANT("iq1_m", 256, 56),
    [AV_BF16] = { "bf16", 1, 2, 0, 1, bf16_to_float, bf16_from_float },
    [AV_TQ1_0] = QUANT("tq1_0", 256, 54),
    [AV_TQ2_0] = QUANT("tq2_0", 256, 66),
    [AV_MXFP4] = QUANT("mxfp4", 32, 17),
    [AV_U8] = { "u8", 1, 1, 0, 0, NULL, NULL },
    [AV_BOOL] = { "bool", 1, 1, 0, 0, NULL, NULL },
    [AV_F8_E4M3] = { "f8_e4m3", 1, 1, 0, 0, NULL, NULL },
    [AV_F8_E5M2] = { "f8_e5m2", 1, 1, 0, 0, NULL, NULL },
};

const av_dtype_traits *av_dtype_traits_of(int t) {
    if (t < 0 || t >= AV_DTYPE_MAX || !TRAITS[t].name) return NULL;
    return &TRAITS[t];
}

const char *av_dtype_name(int t) {
    const av_dtype_traits *tr = av_dtype_traits_of(t);
    return tr ? tr->name : "?";
}

int av_dtype_from_name(const char *name) {
    if (!name) return -1;
    for (int t = 0; t < AV_DTYPE_MAX; t++) {
        if (!TRAITS[t].name) continue;
        const char *a = TRAITS[t].name, *b = name;
        while (*a && *b && tolower((unsigned char)*a) == tolower((unsigned char)*b)) a++, b++;
        if (!*a && !*b) return t;
    }
    return -1;
}

size_t av_dtype_nbytes(int t, int64_t n, int *ok) {
    const av_dtype_traits *tr = av_dtype_traits_of(t);
    *ok = 0;
    if (!tr || n < 0 || n % tr->block_size) return 0;
    uint64_t blocks = (uint64_t)(n / tr->block_size);
    if (blocks && tr->type_size > UINT64_MAX / blocks) return 0;
    uint64_t b = blocks * tr->type_size;
    if (b > SIZE_MAX) return 0;
    *ok = 1;
    return (size_t)b;
}
