/* quant_dot.c — quantized-weight x quantized-activation dot products (see
 * quant_dot.h).
 *
 * The _ref kernels are ggml-cpu/quants.c's ggml_vec_dot_*_generic written
 * out again: same integer sums, same float expressions in the same order
 * (-std=c11 means -ffp-contract=off, so no FMA is slipped in). The SIMD
 * kernels compute every block's (or sub-block's) integer sum exactly and
 * then accumulate `scale * sum` in 8 float lanes with FMA (llama.cpp's AVX2
 * structure), so they match the ref to float rounding of the accumulation.
 *
 * Builds: AVX2+FMA+F16C (PORTABLE=1) uses maddubs/madd for the u8 x s8
 * products; with AVX512_VNNI+VL (Zen 4, -march=native) the block products
 * are vpdpbusd and the Q5 high bits come from a mask register. */
#include "quant_dot.h"

#include <math.h>
#include <string.h>

#include "quant.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define QD_AVX2 1
#include <immintrin.h>
#if defined(__AVX512VNNI__) && defined(__AVX512VL__) && defined(__AVX512BW__)
#define QD_VNNI 1
#endif
#endif

static inline float h2f(uint16_t h) { return av_f16_to_f32(h); }

/* The refs must stay scalar: GCC 12.2 with -march=native (AVX512_VNNI)
 * vectorizes `((q & 0xF) - 8) * y` sums into vpdpbusd with the *signed*
 * nibble-minus-8 bytes as the unsigned operand — dot_q4_0_ref returned 7936
 * for 16 nibbles of 0 against y = 1 (want -256). Reproducer in the commit
 * message; the SIMD kernels below are written with intrinsics and unaffected. */
#if defined(__GNUC__) && !defined(__clang__)
#define QD_SCALAR __attribute__((optimize("no-tree-vectorize")))
#else
#define QD_SCALAR
#endif

/* ================================================================ activations */

/* x86 quantize_row_q8_0 / q8_1: id = 127/amax (not 1/d) and _mm256_round_ps
 * (nearest, ties to even) — nearbyintf in the default rounding mode. */
QD_SCALAR static void act_q8_0(const float *x, block_q8_0 *y, int64_t k) {
    for (int64_t i = 0; i < k / QK8_0; i++, x += QK8_0) {
        float amax = 0.0f;
        for (int j = 0; j < QK8_0; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127.f;
        y[i].d = av_f32_to_f16(d);
        const float id = amax != 0.0f ? 127.f / amax : 0.0f;
        for (int j = 0; j < QK8_0; j++) y[i].qs[j] = (int8_t)nearbyintf(x[j] * id);
    }
}

QD_SCALAR static void act_q8_1(const float *x, block_q8_1 *y, int64_t k) {
    for (int64_t i = 0; i < k / QK8_1; i++, x += QK8_1) {
        float amax = 0.0f;
        for (int j = 0; j < QK8_1; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127.f;
        y[i].d = av_f32_to_f16(d);
        const float id = amax != 0.0f ? 127.f / amax : 0.0f;
        int sum = 0;
        for (int j = 0; j < QK8_1; j++) {
            y[i].qs[j] = (int8_t)nearbyintf(x[j] * id);
            sum += y[i].qs[j];
        }
        y[i].s = av_f32_to_f16(d * (float)sum);
    }
}

av_dtype q_vec_dot_type(av_dtype t) {
    switch (t) {
    case AV_Q4_0: case AV_Q5_0: case AV_Q8_0: return AV_Q8_0;
    case AV_Q4_1: case AV_Q5_1: return AV_Q8_1;
    case AV_Q2_K: case AV_Q3_K: case AV_Q4_K: case AV_Q5_K: case AV_Q6_K: return AV_Q8_K;
    default: return (av_dtype)-1;
    }
}

void q_quantize_act(av_dtype vdt, const float *x, void *dst, int64_t n) {
    if (vdt == AV_Q8_0) act_q8_0(x, dst, n);
    else if (vdt == AV_Q8_1) act_q8_1(x, dst, n);
    else if (vdt == AV_Q8_K) q_quantize_row_q8_K(x, dst, n);
}

/* ================================================================ refs (ggml generic) */

QD_SCALAR static float dot_q4_0_ref(int64_t n, const void *vx, const void *vy) {
    const block_q4_0 *x = vx;
    const block_q8_0 *y = vy;
    const int qk = QK8_0;
    float sumf = 0;
    for (int64_t ib = 0; ib < n / qk; ++ib) {
        int sumi0 = 0, sumi1 = 0;
        for (int j = 0; j < qk / 2; ++j) {
            const int v0 = (x[ib].qs[j] & 0x0F) - 8;
            const int v1 = (x[ib].qs[j] >> 4) - 8;
            sumi0 += (v0 * y[ib].qs[j]);
            sumi1 += (v1 * y[ib].qs[j + qk / 2]);
        }
        int sumi = sumi0 + sumi1;
        sumf += sumi * h2f(x[ib].d) * h2f(y[ib].d);
    }
    return sumf;
}

QD_SCALAR static float dot_q4_1_ref(int64_t n, const void *vx, const void *vy) {
    const block_q4_1 *x = vx;
    const block_q8_1 *y = vy;
    const int qk = QK8_1;
    float sumf = 0;
    for (int64_t ib = 0; ib < n / qk; ++ib) {
        int sumi0 = 0, sumi1 = 0;
        for (int j = 0; j < qk / 2; ++j) {
            const int v0 = (x[ib].qs[j] & 0x0F);
            const int v1 = (x[ib].qs[j] >> 4);
            sumi0 += (v0 * y[ib].qs[j]);
            sumi1 += (v1 * y[ib].qs[j + qk / 2]);
        }
        int sumi = sumi0 + sumi1;
        sumf += (h2f(x[ib].d) * h2f(y[ib].d)) * sumi + h2f(x[ib].m) * h2f(y[ib].s);
    }
    return sumf;
}

QD_SCALAR static float dot_q5_0_ref(int64_t n, const void *vx, const void *vy) {
    const block_q5_0 *x = vx;
    const block_q8_0 *y = vy;
    const int qk = QK8_0;
    float sumf = 0;
    for (int64_t ib = 0; ib < n / qk; ++ib) {
        uint32_t qh;
        memcpy(&qh, x[ib].qh, sizeof(qh));
        int sumi0 = 0, sumi1 = 0;
        for (int j = 0; j < qk / 2; ++j) {
            const uint8_t xh_0 = (uint8_t)(((qh & (1u << (j + 0))) >> (j + 0)) << 4);
            const uint8_t xh_1 = (uint8_t)((qh & (1u << (j + 16))) >> (j + 12));
            const int32_t x0 = (int8_t)(((x[ib].qs[j] & 0x0F) | xh_0) - 16);
            const int32_t x1 = (int8_t)(((x[ib].qs[j] >> 4) | xh_1) - 16);
            sumi0 += (x0 * y[ib].qs[j]);
            sumi1 += (x1 * y[ib].qs[j + qk / 2]);
        }
        int sumi = sumi0 + sumi1;
        sumf += (h2f(x[ib].d) * h2f(y[ib].d)) * sumi;
    }
    return sumf;
}

QD_SCALAR static float dot_q5_1_ref(int64_t n, const void *vx, const void *vy) {
    const block_q5_1 *x = vx;
    const block_q8_1 *y = vy;
    const int qk = QK8_1;
    float sumf = 0;
    for (int64_t ib = 0; ib < n / qk; ++ib) {
        uint32_t qh;
        memcpy(&qh, x[ib].qh, sizeof(qh));
        int sumi0 = 0, sumi1 = 0;
        for (int j = 0; j < qk / 2; ++j) {
            const uint8_t xh_0 = (uint8_t)(((qh >> (j + 0)) << 4) & 0x10);
            const uint8_t xh_1 = (uint8_t)(((qh >> (j + 12))) & 0x10);
            const int32_t x0 = (x[ib].qs[j] & 0xF) | xh_0;
            const int32_t x1 = (x[ib].qs[j] >> 4) | xh_1;
            sumi0 += (x0 * y[ib].qs[j]);
            sumi1 += (x1 * y[ib].qs[j + qk / 2]);
        }
        int sumi = sumi0 + sumi1;
        sumf += (h2f(x[ib].d) * h2f(y[ib].d)) * sumi + h2f(x[ib].m) * h2f(y[ib].s);
    }
    return sumf;
}

QD_SCALAR static float dot_q8_0_ref(int64_t n, const void *vx, const void *vy) {
    const block_q8_0 *x = vx;
    const block_q8_0 *y = vy;
    const int qk = QK8_0;
    float sumf = 0;
    for (int64_t ib = 0; ib < n / qk; ++ib) {
        int sumi = 0;
        for (int j = 0; j < qk; j++) sumi += x[ib].qs[j] * y[ib].qs[j];
        sumf += sumi * (h2f(x[ib].d) * h2f(y[ib].d));
    }
    return sumf;
}

QD_SCALAR static float dot_q2_K_ref(int64_t n, const void *vx, const void *vy) {
    const block_q2_K *x = vx;
    const block_q8_K *y = vy;
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const uint8_t *q2 = x[i].qs;
        const int8_t *q8 = y[i].qs;
        const uint8_t *sc = x[i].scales;
        int summs = 0;
        for (int j = 0; j < 16; ++j) summs += y[i].bsums[j] * (sc[j] >> 4);
        const float dall = y[i].d * h2f(x[i].d);
        const float dmin = y[i].d * h2f(x[i].dmin);
        int isum = 0, is = 0, d;
        for (int k = 0; k < QK_K / 128; ++k) {
            int shift = 0;
            for (int j = 0; j < 4; ++j) {
                d = sc[is++] & 0xF;
                int isuml = 0;
                for (int l = 0; l < 16; ++l) isuml += q8[l] * ((q2[l] >> shift) & 3);
                isum += d * isuml;
                d = sc[is++] & 0xF;
                isuml = 0;
                for (int l = 16; l < 32; ++l) isuml += q8[l] * ((q2[l] >> shift) & 3);
                isum += d * isuml;
                shift += 2;
                q8 += 32;
            }
            q2 += 32;
        }
        sumf += dall * isum - dmin * summs;
    }
    return sumf;
}

QD_SCALAR static float dot_q3_K_ref(int64_t n, const void *vx, const void *vy) {
    const block_q3_K *x = vx;
    const block_q8_K *y = vy;
    const uint32_t kmask1 = 0x03030303, kmask2 = 0x0f0f0f0f;
    int8_t aux8[QK_K];
    int16_t aux16[8];
    float sums[8];
    int32_t aux32[8];
    memset(sums, 0, sizeof sums);
    uint32_t auxs[4];
    const int8_t *scales = (const int8_t *)auxs;
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const uint8_t *q3 = x[i].qs;
        const uint8_t *hm = x[i].hmask;
        const int8_t *q8 = y[i].qs;
        memset(aux32, 0, sizeof aux32);
        int8_t *a = aux8;
        uint8_t m = 1;
        for (int j = 0; j < QK_K; j += 128) {
            for (int sh = 0; sh < 8; sh += 2) {
                for (int l = 0; l < 32; ++l) a[l] = (int8_t)((q3[l] >> sh) & 3);
                for (int l = 0; l < 32; ++l) a[l] = (int8_t)(a[l] - (hm[l] & m ? 0 : 4));
                a += 32;
                m <<= 1;
            }
            q3 += 32;
        }
        a = aux8;
        memcpy(auxs, x[i].scales, 12);
        uint32_t tmp = auxs[2];
        auxs[2] = ((auxs[0] >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4);
        auxs[3] = ((auxs[1] >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4);
        auxs[0] = (auxs[0] & kmask2) | (((tmp >> 0) & kmask1) << 4);
        auxs[1] = (auxs[1] & kmask2) | (((tmp >> 2) & kmask1) << 4);
        for (int j = 0; j < QK_K / 16; ++j) {
            for (int h = 0; h < 2; h++) {
                for (int l = 0; l < 8; ++l) aux16[l] = (int16_t)(q8[l] * a[l]);
                for (int l = 0; l < 8; ++l) aux32[l] += (scales[j] - 32) * aux16[l];
                q8 += 8;
                a += 8;
            }
        }
        const float d = h2f(x[i].d) * y[i].d;
        for (int l = 0; l < 8; ++l) sums[l] += d * aux32[l];
    }
    for (int l = 0; l < 8; ++l) sumf += sums[l];
    return sumf;
}

/* Q4_K / Q5_K 6-bit scales and mins: utmp[0..1] = 8 scales, utmp[2..3] = 8 mins. */
static inline void k4_scales(const uint8_t *packed, uint32_t utmp[4]) {
    const uint32_t kmask1 = 0x3f3f3f3f, kmask2 = 0x0f0f0f0f, kmask3 = 0x03030303;
    memcpy(utmp, packed, 12);
    utmp[3] = ((utmp[2] >> 4) & kmask2) | (((utmp[1] >> 6) & kmask3) << 4);
    const uint32_t uaux = utmp[1] & kmask1;
    utmp[1] = (utmp[2] & kmask2) | (((utmp[0] >> 6) & kmask3) << 4);
    utmp[2] = uaux;
    utmp[0] &= kmask1;
}

/* ggml's q4_K / q5_K generic share everything but the 5th bit. */
QD_SCALAR static float dot_q45_K_ref(int64_t n, const uint8_t *d_dmin_x, size_t bstride,
                           const block_q8_K *y, int five) {
    uint32_t utmp[4];
    const uint8_t *scales = (const uint8_t *)&utmp[0];
    const uint8_t *mins = (const uint8_t *)&utmp[2];
    int8_t aux8[QK_K];
    int16_t aux16[8];
    float sums[8];
    int32_t aux32[8];
    memset(sums, 0, sizeof sums);
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const uint8_t *blk = d_dmin_x + (size_t)i * bstride;
        uint16_t xd, xdmin;
        memcpy(&xd, blk, 2);
        memcpy(&xdmin, blk + 2, 2);
        const uint8_t *sc = blk + 4;
        const uint8_t *hm = five ? blk + 4 + K_SCALE_SIZE : NULL;
        const uint8_t *q4 = blk + 4 + K_SCALE_SIZE + (five ? QK_K / 8 : 0);
        const int8_t *q8 = y[i].qs;
        memset(aux32, 0, sizeof aux32);
        int8_t *a = aux8;
        uint8_t m = 1;
        for (int j = 0; j < QK_K / 64; ++j) {
            for (int l = 0; l < 32; ++l) a[l] = (int8_t)(q4[l] & 0xF);
            if (five) for (int l = 0; l < 32; ++l) a[l] = (int8_t)(a[l] + (hm[l] & m ? 16 : 0));
            a += 32;
            m <<= 1;
            for (int l = 0; l < 32; ++l) a[l] = (int8_t)(q4[l] >> 4);
            if (five) for (int l = 0; l < 32; ++l) a[l] = (int8_t)(a[l] + (hm[l] & m ? 16 : 0));
            a += 32;
            m <<= 1;
            q4 += 32;
        }
        k4_scales(sc, utmp);
        int sumi = 0;
        for (int j = 0; j < QK_K / 16; ++j) sumi += y[i].bsums[j] * mins[j / 2];
        a = aux8;
        int is = 0;
        for (int j = 0; j < QK_K / 32; ++j) {
            int32_t scale = scales[is++];
            for (int h = 0; h < 4; h++) {
                for (int l = 0; l < 8; ++l) aux16[l] = (int16_t)(q8[l] * a[l]);
                for (int l = 0; l < 8; ++l) aux32[l] += scale * aux16[l];
                q8 += 8;
                a += 8;
            }
        }
        const float d = h2f(xd) * y[i].d;
        for (int l = 0; l < 8; ++l) sums[l] += d * aux32[l];
        const float dmin = h2f(xdmin) * y[i].d;
        sumf -= dmin * sumi;
    }
    for (int l = 0; l < 8; ++l) sumf += sums[l];
    return sumf;
}

QD_SCALAR static float dot_q4_K_ref(int64_t n, const void *vx, const void *vy) {
    return dot_q45_K_ref(n, vx, sizeof(block_q4_K), vy, 0);
}
QD_SCALAR static float dot_q5_K_ref(int64_t n, const void *vx, const void *vy) {
    return dot_q45_K_ref(n, vx, sizeof(block_q5_K), vy, 1);
}

QD_SCALAR static float dot_q6_K_ref(int64_t n, const void *vx, const void *vy) {
    const block_q6_K *x = vx;
    const block_q8_K *y = vy;
    int8_t aux8[QK_K];
    int16_t aux16[8];
    float sums[8];
    int32_t aux32[8];
    memset(sums, 0, sizeof sums);
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const uint8_t *q4 = x[i].ql;
        const uint8_t *qh = x[i].qh;
        const int8_t *q8 = y[i].qs;
        memset(aux32, 0, sizeof aux32);
        int8_t *a = aux8;
        for (int j = 0; j < QK_K; j += 128) {
            for (int l = 0; l < 32; ++l) {
                a[l + 0] = (int8_t)(((q4[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32);
                a[l + 32] = (int8_t)(((q4[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
                a[l + 64] = (int8_t)(((q4[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
                a[l + 96] = (int8_t)(((q4[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
            }
            a += 128;
            q4 += 64;
            qh += 32;
        }
        a = aux8;
        int is = 0;
        for (int j = 0; j < QK_K / 16; ++j) {
            int scale = x[i].scales[is++];
            for (int h = 0; h < 2; h++) {
                for (int l = 0; l < 8; ++l) aux16[l] = (int16_t)(q8[l] * a[l]);
                for (int l = 0; l < 8; ++l) aux32[l] += scale * aux16[l];
                q8 += 8;
                a += 8;
            }
        }
        const float d = h2f(x[i].d) * y[i].d;
        for (int l = 0; l < 8; ++l) sums[l] += d * aux32[l];
    }
    for (int l = 0; l < 8; ++l) sumf += sums[l];
    return sumf;
}

/* ================================================================ SIMD */
#if defined(QD_AVX2)

static inline float hf(uint16_t h) { return _cvtsh_ss(h); }

static inline float hsum8(__m256 v) {
    __m128 r = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

/* u (unsigned bytes) x s (signed bytes): 8 int32 lanes, each the sum of 4
 * adjacent products. The AVX2 form goes through maddubs' saturating int16
 * pairs: exact while |u*s + u'*s'| <= 32767 (u <= 127 or s != -128 pairs). */
static inline __m256i mul_sum_us8(__m256i u, __m256i s) {
#if defined(QD_VNNI)
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
#endif
}

/* signed x signed via |x| and sign(y, x) (x, y in [-127, 127]). */
static inline __m256i mul_sum_i8(__m256i x, __m256i y) {
    return mul_sum_us8(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
}

/* 16 bytes of nibbles -> 32 bytes: low nibbles first, then high nibbles. */
static inline __m256i nibbles32(const uint8_t *p) {
    const __m128i t = _mm_loadu_si128((const __m128i *)p);
    return _mm256_and_si256(_mm256_set1_epi8(0x0F), _mm256_set_m128i(_mm_srli_epi16(t, 4), t));
}

/* byte j = 0x10 where bit j of the 32-bit little-endian qh is set, else 0 */
static inline __m256i bits32_0x10(const uint8_t *qh) {
    uint32_t b;
    memcpy(&b, qh, 4);
#if defined(QD_VNNI)
    return _mm256_maskz_set1_epi8((__mmask32)b, 0x10);
#else
    const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
                                           0x0101010101010101, 0x0000000000000000);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)b), shuf);
    v = _mm256_or_si256(v, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    return _mm256_and_si256(_mm256_cmpeq_epi8(v, _mm256_set1_epi64x(-1)), _mm256_set1_epi8(0x10));
#endif
}

static inline __m256i ld256(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }

static float dot_q8_0_simd(int64_t n, const void *vx, const void *vy) {
    const block_q8_0 *x = vx;
    const block_q8_0 *y = vy;
    const int64_t nb = n / QK8_0;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2) {
        const __m256i p0 = mul_sum_i8(ld256(x[i].qs), ld256(y[i].qs));
        const __m256i p1 = mul_sum_i8(ld256(x[i + 1].qs), ld256(y[i + 1].qs));
        a0 = _mm256_fmadd_ps(_mm256_set1_ps(hf(x[i].d) * hf(y[i].d)), _mm256_cvtepi32_ps(p0), a0);
        a1 = _mm256_fmadd_ps(_mm256_set1_ps(hf(x[i + 1].d) * hf(y[i + 1].d)), _mm256_cvtepi32_ps(p1), a1);
    }
    for (; i < nb; i++) {
        const __m256i p = mul_sum_i8(ld256(x[i].qs), ld256(y[i].qs));
        a0 = _mm256_fmadd_ps(_mm256_set1_ps(hf(x[i].d) * hf(y[i].d)), _mm256_cvtepi32_ps(p), a0);
    }
    return hsum8(_mm256_add_ps(a0, a1));
}

static float dot_q4_0_simd(int64_t n, const void *vx, const void *vy) {
    const block_q4_0 *x = vx;
    const block_q8_0 *y = vy;
    const int64_t nb = n / QK8_0;
    const __m256i off = _mm256_set1_epi8(8);
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2) {
        const __m256i q0 = _mm256_sub_epi8(nibbles32(x[i].qs), off);
        const __m256i q1 = _mm256_sub_epi8(nibbles32(x[i + 1].qs), off);
        const __m256i p0 = mul_sum_i8(q0, ld256(y[i].qs));
        const __m256i p1 = mul_sum_i8(q1, ld256(y[i + 1].qs));
        a0 = _mm256_fmadd_ps(_mm256_set1_ps(hf(x[i].d) * hf(y[i].d)), _mm256_cvtepi32_ps(p0), a0);
        a1 = _mm256_fmadd_ps(_mm256_set1_ps(hf(x[i + 1].d) * hf(y[i + 1].d)), _mm256_cvtepi32_ps(p1), a1);
    }
    for (; i < nb; i++) {
        const __m256i p = mul_sum_i8(_mm256_sub_epi8(nibbles32(x[i].qs), off), ld256(y[i].qs));
        a0 = _mm256_fmadd_ps(_mm256_set1_ps(hf(x[i].d) * hf(y[i].d)), _mm256_cvtepi32_ps(p), a0);
    }
    return hsum8(_mm256_add_ps(a0, a1));
}

static float dot_q4_1_simd(int64_t n, const void *vx, const void *vy) {
    const block_q4_1 *x = vx;
    const block_q8_1 *y = vy;
    __m256 acc = _mm256_setzero_ps();
    float summs = 0;
    for (int64_t i = 0; i < n / QK8_1; i++) {
        const __m256i p = mul_sum_us8(nibbles32(x[i].qs), ld256(y[i].qs));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(hf(x[i].d) * hf(y[i].d)), _mm256_cvtepi32_ps(p), acc);
        summs += hf(x[i].m) * hf(y[i].s);
    }
    return hsum8(acc) + summs;
}

static float dot_q5_0_simd(int64_t n, const void *vx, const void *vy) {
    const block_q5_0 *x = vx;
    const block_q8_0 *y = vy;
    const __m256i off = _mm256_set1_epi8(16);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK8_0; i++) {
        const __m256i q = _mm256_sub_epi8(_mm256_or_si256(nibbles32(x[i].qs), bits32_0x10(x[i].qh)), off);
        const __m256i p = mul_sum_i8(q, ld256(y[i].qs));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(hf(x[i].d) * hf(y[i].d)), _mm256_cvtepi32_ps(p), acc);
    }
    return hsum8(acc);
}

static float dot_q5_1_simd(int64_t n, const void *vx, const void *vy) {
    const block_q5_1 *x = vx;
    const block_q8_1 *y = vy;
    __m256 acc = _mm256_setzero_ps();
    float summs = 0;
    for (int64_t i = 0; i < n / QK8_1; i++) {
        const __m256i q = _mm256_or_si256(nibbles32(x[i].qs), bits32_0x10(x[i].qh));
        const __m256i p = mul_sum_us8(q, ld256(y[i].qs));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(hf(x[i].d) * hf(y[i].d)), _mm256_cvtepi32_ps(p), acc);
        summs += hf(x[i].m) * hf(y[i].s);
    }
    return hsum8(acc) + summs;
}

/* K-quants: u8 weights x s8 activations as int16 pairs (maddubs: weights
 * <= 63, so never saturating), then madd with the int16 sub-block scales:
 * exact int32 lanes. sc16: the scale of elements 0..15 in the low 128 bits
 * and of 16..31 in the high 128 bits. */
static inline __m256i kdot(__m256i u, __m256i s, __m256i sc16) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), sc16);
}
static inline __m256i sc2(int lo, int hi) {
    return _mm256_set_m128i(_mm_set1_epi16((short)hi), _mm_set1_epi16((short)lo));
}

static inline __attribute__((always_inline)) float dot_q45_K_simd(int64_t n, const uint8_t *bx, size_t bstride, const block_q8_K *y,
                            int five) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), m10 = _mm256_set1_epi8(0x10);
    __m256 acc = _mm256_setzero_ps();
    float accm = 0;
    uint32_t utmp[4];
    const uint8_t *scales = (const uint8_t *)&utmp[0];
    const uint8_t *mins = (const uint8_t *)&utmp[2];
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const uint8_t *blk = bx + (size_t)i * bstride;
        uint16_t xd, xdmin;
        memcpy(&xd, blk, 2);
        memcpy(&xdmin, blk + 2, 2);
        k4_scales(blk + 4, utmp);
        const uint8_t *q4 = blk + 4 + K_SCALE_SIZE + (five ? QK_K / 8 : 0);
        const int8_t *q8 = y[i].qs;
        int summ = 0;
        for (int j = 0; j < QK_K / 32; j++) summ += mins[j] * (y[i].bsums[2 * j] + y[i].bsums[2 * j + 1]);
        __m256i hb = five ? ld256(blk + 4 + K_SCALE_SIZE) : _mm256_setzero_si256();
        __m256i sumi = _mm256_setzero_si256();
        for (int j = 0; j < QK_K / 64; j++) {
            const __m256i bits = ld256(q4 + 32 * j);
            __m256i ql = _mm256_and_si256(bits, m4);
            __m256i qh = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
            if (five) {
                ql = _mm256_or_si256(ql, _mm256_and_si256(_mm256_slli_epi16(hb, 4), m10));
                qh = _mm256_or_si256(qh, _mm256_and_si256(_mm256_slli_epi16(hb, 3), m10));
                hb = _mm256_srli_epi16(hb, 2);
            }
            const int s0 = scales[2 * j], s1 = scales[2 * j + 1];
            sumi = _mm256_add_epi32(sumi, kdot(ql, ld256(q8 + 64 * j), _mm256_set1_epi16((short)s0)));
            sumi = _mm256_add_epi32(sumi, kdot(qh, ld256(q8 + 64 * j + 32), _mm256_set1_epi16((short)s1)));
        }
        const float yd = y[i].d;
        acc = _mm256_fmadd_ps(_mm256_set1_ps(hf(xd) * yd), _mm256_cvtepi32_ps(sumi), acc);
        accm += (hf(xdmin) * yd) * (float)summ;
    }
    return hsum8(acc) - accm;
}

static float dot_q4_K_simd(int64_t n, const void *vx, const void *vy) {
    return dot_q45_K_simd(n, vx, sizeof(block_q4_K), vy, 0);
}
static float dot_q5_K_simd(int64_t n, const void *vx, const void *vy) {
    return dot_q45_K_simd(n, vx, sizeof(block_q5_K), vy, 1);
}

static float dot_q6_K_simd(int64_t n, const void *vx, const void *vy) {
    const block_q6_K *x = vx;
    const block_q8_K *y = vy;
    const __m256i m4 = _mm256_set1_epi8(0x0F), m3 = _mm256_set1_epi8(0x30);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const uint8_t *ql = x[i].ql, *qh = x[i].qh;
        const int8_t *sc = x[i].scales, *q8 = y[i].qs;
        int summ = 0; /* the -32 offset: sum over sub-blocks of scale * bsum */
        for (int j = 0; j < QK_K / 16; j++) summ += sc[j] * y[i].bsums[j];
        __m256i sumi = _mm256_setr_epi32(-32 * summ, 0, 0, 0, 0, 0, 0, 0);
        for (int h = 0; h < 2; h++, ql += 64, qh += 32, sc += 8, q8 += 128) {
            const __m256i l0 = ld256(ql), l1 = ld256(ql + 32), hh = ld256(qh);
            const __m256i q1 = _mm256_or_si256(_mm256_and_si256(l0, m4),
                                               _mm256_and_si256(_mm256_slli_epi16(hh, 4), m3));
            const __m256i q2 = _mm256_or_si256(_mm256_and_si256(l1, m4),
                                               _mm256_and_si256(_mm256_slli_epi16(hh, 2), m3));
            const __m256i q3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                               _mm256_and_si256(hh, m3));
            const __m256i q4 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                               _mm256_and_si256(_mm256_srli_epi16(hh, 2), m3));
            sumi = _mm256_add_epi32(sumi, kdot(q1, ld256(q8), sc2(sc[0], sc[1])));
            sumi = _mm256_add_epi32(sumi, kdot(q2, ld256(q8 + 32), sc2(sc[2], sc[3])));
            sumi = _mm256_add_epi32(sumi, kdot(q3, ld256(q8 + 64), sc2(sc[4], sc[5])));
            sumi = _mm256_add_epi32(sumi, kdot(q4, ld256(q8 + 96), sc2(sc[6], sc[7])));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(hf(x[i].d) * y[i].d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return hsum8(acc);
}

#define K(name) dot_##name##_simd
#else
#define K(name) dot_##name##_ref
#endif

/* ================================================================ dispatch */

q_vec_dot_fn q_vec_dot_get(av_dtype t) {
    switch (t) {
    case AV_Q4_0: return K(q4_0);
    case AV_Q4_1: return K(q4_1);
    case AV_Q5_0: return K(q5_0);
    case AV_Q5_1: return K(q5_1);
    case AV_Q8_0: return K(q8_0);
    case AV_Q2_K: return dot_q2_K_ref;
    case AV_Q3_K: return dot_q3_K_ref;
    case AV_Q4_K: return K(q4_K);
    case AV_Q5_K: return K(q5_K);
    case AV_Q6_K: return K(q6_K);
    default: return NULL;
    }
}

static q_vec_dot_fn get_ref(av_dtype t) {
    switch (t) {
    case AV_Q4_0: return dot_q4_0_ref;
    case AV_Q4_1: return dot_q4_1_ref;
    case AV_Q5_0: return dot_q5_0_ref;
    case AV_Q5_1: return dot_q5_1_ref;
    case AV_Q8_0: return dot_q8_0_ref;
    case AV_Q2_K: return dot_q2_K_ref;
    case AV_Q3_K: return dot_q3_K_ref;
    case AV_Q4_K: return dot_q4_K_ref;
    case AV_Q5_K: return dot_q5_K_ref;
    case AV_Q6_K: return dot_q6_K_ref;
    default: return NULL;
    }
}

float q_vec_dot(av_dtype t, int64_t n, const void *w_row, const void *act_row) {
    q_vec_dot_fn f = q_vec_dot_get(t);
    return f ? f(n, w_row, act_row) : NAN;
}

float q_vec_dot_ref(av_dtype t, int64_t n, const void *w_row, const void *act_row) {
    q_vec_dot_fn f = get_ref(t);
    return f ? f(n, w_row, act_row) : NAN;
}

const char *q_vec_dot_impl(void) {
#if defined(QD_VNNI)
    return "avx512-vnni";
#elif defined(QD_AVX2)
    return "avx2";
#else
    return "scalar";
#endif
}
