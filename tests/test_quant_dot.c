/* test_quant_dot.c — quantized dot products (core/quant_dot.c) and the
 * quantized paths of ops_matvec / ops_matmul.
 *
 * What defines the kernels is ggml's generic C; the refs transcribe it, and
 * these tests pin (1) the activation quantizers to ggml's x86 semantics on
 * hand-made blocks, (2) every SIMD kernel to its ref, (3) both to the
 * mathematical value dot(dequant(w), dequant(act)) and to the f32 dot within
 * the activation quantization error, (4) thread-count invariance. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "quant.h"
#include "quant_dot.h"

#define NELEM(a) ((int)(sizeof(a) / sizeof((a)[0])))

static uint64_t rng_next(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static float rng_unif(uint64_t *s, float lo, float hi) {
    return lo + (hi - lo) * (float)((rng_next(s) >> 40) * (1.0 / 16777216.0));
}

/* n floats in blocks of 32 with varied magnitudes (some blocks tiny, one
 * all zero, some with an outlier) so scales cover a wide range. */
static void fill_varied(uint64_t *s, float *x, int64_t n) {
    for (int64_t b = 0; b < n; b += 32) {
        const int kind = (int)(rng_next(s) % 8);
        const float mag = kind == 0 ? 0.0f : kind == 1 ? 1e-3f : kind == 2 ? 30.0f : 1.0f;
        for (int j = 0; j < 32 && b + j < n; j++) x[b + j] = rng_unif(s, -mag, mag);
        if (kind == 3) x[b + (int64_t)(rng_next(s) % 32)] *= 20.0f;
    }
}

static const av_dtype TYPES[] = {AV_Q4_0, AV_Q4_1, AV_Q5_0, AV_Q5_1, AV_Q8_0,
                                 AV_Q2_K, AV_Q3_K, AV_Q4_K, AV_Q5_K, AV_Q6_K};

Test(quant_dot, vec_dot_types) {
    cr_expect_eq(q_vec_dot_type(AV_Q4_0), AV_Q8_0);
    cr_expect_eq(q_vec_dot_type(AV_Q5_0), AV_Q8_0);
    cr_expect_eq(q_vec_dot_type(AV_Q8_0), AV_Q8_0);
    cr_expect_eq(q_vec_dot_type(AV_Q4_1), AV_Q8_1);
    cr_expect_eq(q_vec_dot_type(AV_Q5_1), AV_Q8_1);
    for (int t = AV_Q2_K; t <= AV_Q6_K; t++) cr_expect_eq(q_vec_dot_type((av_dtype)t), AV_Q8_K);
    cr_expect_eq(q_vec_dot_type(AV_F32), (av_dtype)-1);
    cr_expect_eq(q_vec_dot_type(AV_Q8_K), (av_dtype)-1);
    cr_expect_null(q_vec_dot_get(AV_F16));
    cr_log_info("quant_dot kernels: %s", q_vec_dot_impl());
}

/* ggml quantize_row_q8_0 (x86): d = amax/127, q = round(x * 127/amax). */
Test(quant_dot, act_q8_0_hand_block) {
    float x[64];
    for (int j = 0; j < 32; j++) x[j] = (float)(j - 16) * 0.25f; /* amax 4 at j = 0 */
    for (int j = 0; j < 32; j++) x[32 + j] = 0.0f;               /* all-zero block */
    block_q8_0 y[2];
    q_quantize_act(AV_Q8_0, x, y, 64);
    cr_expect_eq(y[0].d, av_f32_to_f16(4.0f / 127.f));
    for (int j = 0; j < 32; j++)
        cr_expect_eq(y[0].qs[j], (int8_t)lrintf((float)(j - 16) * 0.25f * (127.f / 4.0f)), "j %d", j);
    cr_expect_eq(y[0].qs[0], -127);
    cr_expect_eq(y[0].qs[16], 0);
    cr_expect_eq(y[1].d, 0);
    for (int j = 0; j < 32; j++) cr_expect_eq(y[1].qs[j], 0);
    /* ties go to even (_mm256_round_ps), unlike roundf in quantize_row_q8_0_ref */
    float t[32] = {127.0f, 2.5f, -2.5f, 3.5f, 0.5f, -0.5f};
    q_quantize_act(AV_Q8_0, t, y, 32);
    cr_expect_eq(y[0].qs[0], 127);
    cr_expect_eq(y[0].qs[1], 2);
    cr_expect_eq(y[0].qs[2], -2);
    cr_expect_eq(y[0].qs[3], 4);
    cr_expect_eq(y[0].qs[4], 0);
    cr_expect_eq(y[0].qs[5], 0);
    cr_expect_eq(y[0].d, av_f32_to_f16(1.0f));
}

/* Q8_1 additionally stores s = d * sum(q) (f16). */
Test(quant_dot, act_q8_1_sum) {
    float x[32];
    for (int j = 0; j < 32; j++) x[j] = (float)j * 0.1f - 1.0f;
    block_q8_1 y;
    q_quantize_act(AV_Q8_1, x, &y, 32);
    int sum = 0;
    for (int j = 0; j < 32; j++) sum += y.qs[j];
    const float d = av_f16_to_f32(y.d), amax = fabsf(x[31]); /* 2.1 > |x[0]| = 1 */
    cr_expect_eq(y.d, av_f32_to_f16(amax / 127.f));
    cr_expect_eq(y.s, av_f32_to_f16(amax / 127.f * (float)sum));
    for (int j = 0; j < 32; j++) cr_expect_leq(fabsf(d * y.qs[j] - x[j]), d * 0.5f + 1e-6f);
}

/* Q8_K (quantize_row_q8_K_ref): d = max / -127 with max the signed
 * extreme, bsums = sums of 16. */
Test(quant_dot, act_q8_K_hand_block) {
    float x[QK_K];
    for (int j = 0; j < QK_K; j++) x[j] = (float)((j * 37) % 101 - 50) * 0.01f;
    x[77] = -3.0f;
    block_q8_K y;
    q_quantize_act(AV_Q8_K, x, &y, QK_K);
    cr_expect_float_eq(y.d, 1.0f / (-127.f / -3.0f), 0);
    cr_expect_eq(y.qs[77], -127);
    for (int g = 0; g < QK_K / 16; g++) {
        int s = 0;
        for (int j = 0; j < 16; j++) s += y.qs[16 * g + j];
        cr_expect_eq(y.bsums[g], s);
    }
    for (int j = 0; j < QK_K; j++) cr_expect_leq(fabsf(y.d * y.qs[j] - x[j]), fabsf(y.d) * 0.5f + 1e-6f);
}

/* Everything about one (type, n) pair on random data. */
static void check_type(av_dtype t, int64_t n, uint64_t seed) {
    uint64_t s = seed;
    const av_dtype vdt = q_vec_dot_type(t);
    const av_dtype_traits *tr = av_dtype_traits_of(t);
    float *w = malloc(sizeof(float) * n), *x = malloc(sizeof(float) * n);
    float *wd = malloc(sizeof(float) * n), *ad = malloc(sizeof(float) * n);
    void *wq = malloc(q_row_size(t, n)), *aq = malloc(q_row_size(vdt, n));
    fill_varied(&s, w, n);
    fill_varied(&s, x, n);
    cr_assert_eq(q_quantize(t, w, wq, 1, n, NULL), q_row_size(t, n));
    q_quantize_act(vdt, x, aq, n);
    cr_assert_eq(q_dequantize_row(t, wq, wd, n), 0);
    cr_assert_eq(q_dequantize_row(vdt, aq, ad, n), 0);
    double exact = 0, mag = 0, actq_err = 0, f32 = 0;
    for (int64_t i = 0; i < n; i++) {
        exact += (double)wd[i] * ad[i];
        mag += fabs((double)wd[i] * ad[i]);
        actq_err += fabs((double)wd[i]) * fabs((double)ad[i] - x[i]);
        f32 += (double)wd[i] * x[i];
    }
    /* Q4_1/Q5_1 add m * s per block, s = f16(d * sum(q)) from Q8_1: one
     * more f16 rounding than dequantization has (relative 2^-11) */
    double ms = 0;
    if (vdt == AV_Q8_1) {
        const size_t bs = tr->type_size;
        for (int64_t b = 0; b < n / 32; b++) {
            uint16_t m;
            memcpy(&m, (const char *)wq + b * bs + 2, 2);
            ms += fabs((double)av_f16_to_f32(m) * av_f16_to_f32(((const block_q8_1 *)aq)[b].s));
        }
    }
    mag += ms;
    const float got = q_vec_dot(t, n, wq, aq), ref = q_vec_dot_ref(t, n, wq, aq);
    /* SIMD vs ref: the same integer block sums, float additions in another
     * order (8 FMA lanes vs ggml's sequence): a few ulp of the sum of
     * |terms| per addition level — 1e-5 of the magnitude is ~100x that. */
    cr_expect_leq(fabs((double)got - ref), 1e-5 * mag + 1e-30, "%s n %ld: simd %.9g ref %.9g (mag %g)",
                  tr->name, (long)n, got, ref, mag);
    /* both are dot(dequant(w), dequant(act)) up to float rounding (f16/f32
     * scale products are rounded once more than dequantization does) */
    cr_expect_leq(fabs(ref - exact), 2e-5 * mag + 1e-3 * ms + 1e-30, "%s n %ld: ref %.9g exact %.9g", tr->name,
                  (long)n, ref, exact);
    /* and the f32 dot within the activation quantization error */
    cr_expect_leq(fabs(ref - f32), actq_err * 1.001 + 2e-5 * mag + 1e-3 * ms + 1e-30,
                  "%s n %ld: ref %.9g f32 %.9g bound %g", tr->name, (long)n, ref, f32, actq_err);
    free(w), free(x), free(wd), free(ad), free(wq), free(aq);
}

Test(quant_dot, kernels_match_refs_and_dequantized_dot) {
    const int64_t ns[] = {256, 512, 768, 4096};
    for (int k = 0; k < NELEM(TYPES); k++)
        for (int i = 0; i < NELEM(ns); i++)
            for (uint64_t seed = 1; seed <= 8; seed++) check_type(TYPES[k], ns[i], seed * 1000 + (uint64_t)k);
}

/* Bit patterns quantizers rarely make: raw random bytes with sane f16
 * scales; integer sums must still agree exactly, so SIMD = ref to float
 * accumulation order. */
Test(quant_dot, random_bytes) {
    uint64_t s = 99;
    const int64_t n = 1024;
    for (int k = 0; k < NELEM(TYPES); k++) {
        const av_dtype t = TYPES[k], vdt = q_vec_dot_type(t);
        const size_t wb = q_row_size(t, n);
        unsigned char *wq = malloc(wb);
        float *x = malloc(sizeof(float) * n), *wd = malloc(sizeof(float) * n), *ad = malloc(sizeof(float) * n);
        void *aq = malloc(q_row_size(vdt, n));
        for (int rep = 0; rep < 20; rep++) {
            for (size_t i = 0; i < wb; i++) wq[i] = (unsigned char)rng_next(&s);
            /* overwrite every f16 field with a value in [-2, 2] */
            const size_t bs = av_dtype_traits_of(t)->type_size;
            for (size_t b = 0; b < wb; b += bs) {
                uint16_t h1 = av_f32_to_f16(rng_unif(&s, -2, 2)), h2 = av_f32_to_f16(rng_unif(&s, -2, 2));
                unsigned char *p = wq + b;
                if (t == AV_Q6_K || t == AV_Q3_K) memcpy(p + bs - 2, &h1, 2);
                else if (t == AV_Q2_K) memcpy(p + bs - 4, &h1, 2), memcpy(p + bs - 2, &h2, 2);
                else memcpy(p, &h1, 2), (t == AV_Q4_1 || t == AV_Q5_1 || t == AV_Q4_K || t == AV_Q5_K)
                                            ? (void)memcpy(p + 2, &h2, 2) : (void)0;
                if (t == AV_Q8_0) /* ggml's Q8_0 never holds -128 (see mul_sum_us8) */
                    for (int j = 0; j < 32; j++) if (p[2 + j] == 0x80) p[2 + j] = 0x81;
            }
            fill_varied(&s, x, n);
            q_quantize_act(vdt, x, aq, n);
            q_dequantize_row(t, wq, wd, n);
            q_dequantize_row(vdt, aq, ad, n);
            double mag = 0;
            for (int64_t i = 0; i < n; i++) mag += fabs((double)wd[i] * ad[i]);
            const float got = q_vec_dot(t, n, wq, aq), ref = q_vec_dot_ref(t, n, wq, aq);
            cr_expect_leq(fabs((double)got - ref), 1e-5 * mag + 1e-30, "%s rep %d: %.9g vs %.9g",
                          av_dtype_traits_of(t)->name, rep, got, ref);
        }
        free(wq), free(x), free(wd), free(ad), free(aq);
    }
}

/* ops_matvec on quantized weights: same bits for 1, 2, 3 threads (rows are
 * independent, x quantized the same way each time), = q_vec_dot per row,
 * and ops_matvec_ref within the SIMD-vs-ref tolerance; ops_matmul's rows are
 * exactly the matvecs of its tokens. */
Test(quant_dot, ops_matvec_and_matmul_quantized) {
    uint64_t s = 7;
    const int64_t rows = 512, cols = 2048, nt = 5; /* > OPS_MT_MIN_BYTES for every type */
    float *wf = malloc(sizeof(float) * rows * cols), *X = malloc(sizeof(float) * nt * cols);
    float *y1 = malloc(sizeof(float) * rows), *y2 = malloc(sizeof(float) * rows);
    float *y3 = malloc(sizeof(float) * rows), *yr = malloc(sizeof(float) * rows);
    float *Y = malloc(sizeof(float) * nt * rows);
    fill_varied(&s, wf, rows * cols);
    fill_varied(&s, X, nt * cols);
    const av_dtype types[] = {AV_Q8_0, AV_Q4_0, AV_Q4_1, AV_Q5_0, AV_Q4_K, AV_Q5_K, AV_Q6_K, AV_Q3_K};
    for (int k = 0; k < NELEM(types); k++) {
        const av_dtype t = types[k], vdt = q_vec_dot_type(t);
        const char *nm = av_dtype_traits_of(t)->name;
        const size_t rb = ops_row_bytes(t, cols);
        char *q = malloc(rb * rows);
        void *aq = malloc(q_row_size(vdt, cols));
        q_quantize(t, wf, q, rows, cols, NULL);
        ops_matvec(t, q, X, y1, rows, cols, 1);
        ops_matvec(t, q, X, y2, rows, cols, 2);
        ops_matvec(t, q, X, y3, rows, cols, 3);
        ops_matvec_ref(t, q, X, yr, rows, cols);
        q_quantize_act(vdt, X, aq, cols);
        for (int64_t r = 0; r < rows; r++) {
            cr_expect_eq(memcmp(&y1[r], &y2[r], 4), 0, "%s row %ld: %.9g vs %.9g (2 threads)", nm, (long)r, y1[r], y2[r]);
            cr_expect_eq(memcmp(&y1[r], &y3[r], 4), 0, "%s row %ld (3 threads)", nm, (long)r);
            const float want = q_vec_dot(t, cols, q + r * rb, aq);
            cr_expect_eq(memcmp(&y1[r], &want, 4), 0, "%s row %ld: %.9g vs q_vec_dot %.9g", nm, (long)r, y1[r], want);
            /* float order only (see kernels_match_refs...): relative to sum |w x|,
             * with room for the K-quants' scale/min terms that cancel */
            double mag = 0;
            for (int64_t i = 0; i < cols; i++) mag += fabs((double)wf[r * cols + i] * X[i]);
            cr_expect_leq(fabsf(y1[r] - yr[r]), 1e-4 * mag, "%s row %ld: %.9g vs ref %.9g (mag %g)",
                          nm, (long)r, y1[r], yr[r], mag);
        }
        for (int th = 1; th <= 2; th++) {
            ops_matmul(t, q, X, Y, nt, rows, cols, NULL, th);
            for (int64_t i = 0; i < nt; i++) {
                ops_matvec(t, q, X + i * cols, y1, rows, cols, 1);
                cr_expect_eq(memcmp(Y + i * rows, y1, sizeof(float) * rows), 0, "%s matmul token %ld (%d threads)",
                             nm, (long)i, th);
            }
        }
        free(q), free(aq);
    }
    free(wf), free(X), free(y1), free(y2), free(y3), free(yr), free(Y);
}
