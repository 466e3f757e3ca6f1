/* test_ops.c — core/ops.{h,c}.
 *
 * Every SIMD kernel against its scalar _ref twin on seeded random data with
 * odd lengths (masked / scalar tails), and each op against values computed by
 * hand from its definition (softmax of [0, ln 3] is [1/4, 3/4]; RoPE at pos 1
 * with head_dim 2 rotates by exactly 1 radian). Tolerances:
 *   dot / matvec: |simd - ref| <= 2e-6 * sum|w_i x_i| (f32 sums in another order);
 *   matmul (sgemm): 1e-4 * sum|w_i x_i|;
 *   rmsnorm: 1e-6 relative; swiglu: 1e-6 relative (vector exp ~1 ulp);
 *   softmax, rope: bit-exact with the ref (same scalar expf / cosf / sinf). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "dtype.h"
#include "ops.h"
#include "quant.h"
#include "quant_dot.h"

/* ------------------------------------------------------------------ helpers */

static uint64_t rng_next(uint64_t *s) {  // splitmix64
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static float rng_unif(uint64_t *s, float lo, float hi) {  // [lo, hi)
    return lo + (hi - lo) * (float)((rng_next(s) >> 40) * (1.0 / 16777216.0));
}
static void fill(uint64_t *s, float *x, int64_t n, float lo, float hi) {
    for (int64_t i = 0; i < n; i++) x[i] = rng_unif(s, lo, hi);
}

static const av_dtype DTYPES[] = {AV_F32, AV_F16, AV_BF16};
static const int LENS[] = {1, 2, 7, 15, 16, 17, 31, 32, 33, 63, 64, 65, 172, 256, 768, 1000};
#define NELEM(a) ((int)(sizeof(a) / sizeof *(a)))

/* Random weights of type t (f32 values in [-1, 1) rounded to t) plus the same
 * values widened back to f32 in *wf. Caller frees both. */
static void *make_weights(uint64_t *s, av_dtype t, int64_t n, float **wf) {
    float *f = malloc((size_t)n * sizeof *f);
    fill(s, f, n, -1.0f, 1.0f);
    void *w;
    if (t == AV_F32) {
        w = malloc((size_t)n * 4);
        memcpy(w, f, (size_t)n * 4);
    } else {
        uint16_t *h = malloc((size_t)n * 2);
        for (int64_t i = 0; i < n; i++) {
            h[i] = t == AV_F16 ? av_f32_to_f16(f[i]) : av_f32_to_bf16(f[i]);
            f[i] = t == AV_F16 ? av_f16_to_f32(h[i]) : av_bf16_to_f32(h[i]);
        }
        w = h;
    }
    *wf = f;
    return w;
}

static const void *row_ptr(av_dtype t, const void *W, int64_t r, int64_t cols) {
    return (const char *)W + (size_t)r * (size_t)cols * (t == AV_F32 ? 4 : 2);
}

/* sum |w_i x_i|: the scale of the rounding error of any summation order. */
static double abs_dot(const float *wf, const float *x, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += fabs((double)wf[i] * x[i]);
    return s;
}

static float dot_t(av_dtype t, const void *w, const float *x, int64_t n, int ref) {
    if (t == AV_F32) return ref ? ops_dot_f32_ref(w, x, n) : ops_dot_f32(w, x, n);
    if (t == AV_F16) return ref ? ops_dot_f16_ref(w, x, n) : ops_dot_f16(w, x, n);
    return ref ? ops_dot_bf16_ref(w, x, n) : ops_dot_bf16(w, x, n);
}

/* ------------------------------------------------------------------ dot, matvec */

Test(ops, weight_supported) {
    cr_expect(ops_weight_supported(AV_F32));
    cr_expect(ops_weight_supported(AV_F16));
    cr_expect(ops_weight_supported(AV_BF16));
    cr_expect(ops_weight_supported(AV_Q8_0)); /* dequantizer from core/quant.c */
    cr_expect(ops_weight_supported(AV_Q4_K));
    cr_expect(!ops_weight_supported(AV_IQ2_XXS));
    cr_expect(!ops_weight_supported(AV_I32));
}

Test(ops, dot_matches_ref) {
    uint64_t s = 1;
    for (int d = 0; d < NELEM(DTYPES); d++) {
        for (int k = 0; k < NELEM(LENS); k++) {
            const int64_t n = LENS[k];
            float *wf, *x = malloc((size_t)n * sizeof *x);
            void *w = make_weights(&s, DTYPES[d], n, &wf);
            fill(&s, x, n, -2.0f, 2.0f);
            const float a = dot_t(DTYPES[d], w, x, n, 0), b = dot_t(DTYPES[d], w, x, n, 1);
            cr_expect_leq(fabs((double)a - b), 2e-6 * abs_dot(wf, x, n) + 1e-30,
                          "%s n=%ld: simd %.9g ref %.9g", av_dtype_name(DTYPES[d]), (long)n, a, b);
            // the ref itself: a double sum of exact products, then one rounding
            double e = 0;
            for (int64_t i = 0; i < n; i++) e += (double)(wf[i] * x[i]);
            cr_expect_eq(b, (float)e);
            free(w), free(wf), free(x);
        }
    }
}

Test(ops, dot_hand_values) {
    const float w[3] = {1.0f, 2.0f, 3.0f}, x[3] = {4.0f, -5.0f, 0.5f};
    const uint16_t h[3] = {0x3c00, 0x4000, 0x4200};  // f16 1, 2, 3
    const uint16_t b[3] = {0x3f80, 0x4000, 0x4040};  // bf16 1, 2, 3
    cr_expect_eq(ops_dot_f32(w, x, 3), -4.5f);
    cr_expect_eq(ops_dot_f16(h, x, 3), -4.5f);
    cr_expect_eq(ops_dot_bf16(b, x, 3), -4.5f);
    cr_expect_eq(ops_dot_f32(w, x, 0), 0.0f);
}

static void check_matvec(uint64_t *s, av_dtype t, int64_t rows, int64_t cols) {
    float *wf, *x = malloc((size_t)cols * sizeof *x);
    float *y = malloc((size_t)rows * sizeof *y), *yr = malloc((size_t)rows * sizeof *yr);
    void *W = make_weights(s, t, rows * cols, &wf);
    fill(s, x, cols, -2.0f, 2.0f);
    ops_matvec(t, W, x, y, rows, cols, 1);
    ops_matvec_ref(t, W, x, yr, rows, cols);
    for (int64_t r = 0; r < rows; r++) {
        const double tol = 2e-6 * abs_dot(wf + r * cols, x, cols) + 1e-30;
        cr_expect_leq(fabs((double)y[r] - yr[r]), tol, "%s %ldx%ld row %ld: %.9g vs ref %.9g",
                      av_dtype_name(t), (long)rows, (long)cols, (long)r, y[r], yr[r]);
        // ops_matvec_ref is ops_dot_*_ref per row
        cr_expect_eq(yr[r], dot_t(t, row_ptr(t, W, r, cols), x, cols, 1));
    }
    free(W), free(wf), free(x), free(y), free(yr);
}

Test(ops, matvec_matches_ref) {
    static const int ROWS[] = {1, 3, 4, 5, 7, 9, 64, 172};
    uint64_t s = 2;
    for (int d = 0; d < NELEM(DTYPES); d++)
        for (int i = 0; i < NELEM(ROWS); i++)
            for (int k = 0; k < NELEM(LENS); k++) check_matvec(&s, DTYPES[d], ROWS[i], LENS[k]);
}

Test(ops, matvec_model_shapes) {
    static const int64_t SH[][2] = {{256, 256}, {128, 256}, {768, 256}, {256, 768},
                                    {512, 256}, {64, 64},   {172, 64},  {64, 172}};
    uint64_t s = 3;
    for (int d = 0; d < NELEM(DTYPES); d++)
        for (int i = 0; i < NELEM(SH); i++) check_matvec(&s, DTYPES[d], SH[i][0], SH[i][1]);
    check_matvec(&s, AV_BF16, 9, 4099);  // wider than the BF16 kernel's split-x buffer
}

/* Threads split rows at multiples of 4, so every row is computed by the same
 * kernel as in the serial call: results must be bit-identical. */
Test(ops, matvec_threads_equal_serial) {
    static const int64_t SH[][2] = {{768, 256}, {771, 300}, {256, 768}, {1030, 172}, {64, 64},
                                    {5, 1000},  {13, 4099}};
    uint64_t s = 4;
    for (int d = 0; d < NELEM(DTYPES); d++) {
        for (int i = 0; i < NELEM(SH); i++) {
            const int64_t rows = SH[i][0], cols = SH[i][1];
            float *wf, *x = malloc((size_t)cols * sizeof *x);
            float *y1 = malloc((size_t)rows * 4), *y2 = malloc((size_t)rows * 4);
            float *y3 = malloc((size_t)rows * 4);
            void *W = make_weights(&s, DTYPES[d], rows * cols, &wf);
            fill(&s, x, cols, -1.0f, 1.0f);
            ops_matvec(DTYPES[d], W, x, y1, rows, cols, 1);
            ops_matvec(DTYPES[d], W, x, y2, rows, cols, 2);
            ops_matvec(DTYPES[d], W, x, y3, rows, cols, 3);
            cr_expect_arr_eq(y1, y2, (size_t)rows * 4, "%s %ldx%ld: 2 threads differ",
                             av_dtype_name(DTYPES[d]), (long)rows, (long)cols);
            cr_expect_arr_eq(y1, y3, (size_t)rows * 4, "%s %ldx%ld: 3 threads differ",
                             av_dtype_name(DTYPES[d]), (long)rows, (long)cols);
            free(W), free(wf), free(x), free(y1), free(y2), free(y3);
        }
    }
}

/* ------------------------------------------------------------------ matmul */

static void check_matmul(uint64_t *s, av_dtype t, int64_t n, int64_t rows, int64_t cols, int nt) {
    float *wf, *X = malloc((size_t)(n * cols) * 4), *Y = malloc((size_t)(n * rows) * 4);
    float *yr = malloc((size_t)rows * 4), *scratch = malloc((size_t)(rows * cols) * 4);
    void *W = make_weights(s, t, rows * cols, &wf);
    fill(s, X, n * cols, -1.0f, 1.0f);
    ops_matmul(t, W, X, Y, n, rows, cols, t == AV_F32 ? NULL : scratch, nt);
    for (int64_t b = 0; b < n; b++) {
        ops_matvec_ref(t, W, X + b * cols, yr, rows, cols);
        for (int64_t r = 0; r < rows; r++) {
            const double tol = 1e-4 * abs_dot(wf + r * cols, X + b * cols, cols) + 1e-30;
            cr_expect_leq(fabs((double)Y[b * rows + r] - yr[r]), tol,
                          "%s n=%ld %ldx%ld [%ld,%ld]: %.9g vs %.9g", av_dtype_name(t), (long)n,
                          (long)rows, (long)cols, (long)b, (long)r, Y[b * rows + r], yr[r]);
        }
    }
    free(W), free(wf), free(X), free(Y), free(yr), free(scratch);
}

Test(ops, matmul_matches_matvec_ref) {
    uint64_t s = 5;
    for (int d = 0; d < NELEM(DTYPES); d++) {
        check_matmul(&s, DTYPES[d], 1, 67, 100, 1);  // n == 1: the matvec path
        check_matmul(&s, DTYPES[d], 2, 7, 31, 1);
        check_matmul(&s, DTYPES[d], 5, 67, 100, 1);
        check_matmul(&s, DTYPES[d], 17, 256, 64, 2);
        check_matmul(&s, DTYPES[d], 9, 172, 256, 2);
    }
}

/* ------------------------------------------------------------------ rmsnorm */

Test(ops, rmsnorm_hand_values) {
    // mean(x^2) = (1 + 4 + 9 + 16) / 4 = 7.5
    const float x[4] = {1, 2, 3, 4}, w[4] = {1, 1, 2, -1};
    float out[4];
    ops_rmsnorm(out, x, w, 4, 0.0f);
    const double r = 1.0 / sqrt(7.5);
    const double want[4] = {1 * r, 2 * r, 6 * r, -4 * r};
    for (int i = 0; i < 4; i++) cr_expect_float_eq(out[i], want[i], 1e-6, "out[%d]", i);
    // eps enters under the root: x = [0] gives 0, x = [1] with eps 3 gives 1/2
    const float one = 1.0f, wone = 1.0f;
    ops_rmsnorm(out, &one, &wone, 1, 3.0f);
    cr_expect_float_eq(out[0], 0.5f, 1e-7);
}

Test(ops, rmsnorm_matches_ref) {
    uint64_t s = 6;
    for (int k = 0; k < NELEM(LENS); k++) {
        const int64_t n = LENS[k];
        float *x = malloc((size_t)n * 4), *w = malloc((size_t)n * 4);
        float *a = malloc((size_t)n * 4), *b = malloc((size_t)n * 4);
        fill(&s, x, n, -3.0f, 3.0f);
        fill(&s, w, n, 0.5f, 1.5f);
        ops_rmsnorm(a, x, w, n, 1e-5f);
        ops_rmsnorm_ref(b, x, w, n, 1e-5f);
        for (int64_t i = 0; i < n; i++)
            cr_expect_leq(fabsf(a[i] - b[i]), 1e-6f * fabsf(b[i]), "n=%ld i=%ld", (long)n, (long)i);
        memcpy(a, x, (size_t)n * 4);  // in place
        ops_rmsnorm(a, a, w, n, 1e-5f);
        for (int64_t i = 0; i < n; i++) cr_expect_leq(fabsf(a[i] - b[i]), 1e-6f * fabsf(b[i]));
        free(x), free(w), free(a), free(b);
    }
}

/* ------------------------------------------------------------------ softmax */

Test(ops, softmax_hand_values) {
    float x[2] = {0.0f, logf(3.0f)};
    ops_softmax(x, 2);
    cr_expect_float_eq(x[0], 0.25f, 1e-7);
    cr_expect_float_eq(x[1], 0.75f, 1e-7);
    // max-subtracted: no overflow for large logits; -inf (masked) gives 0
    // (expf(89) alone would overflow)
    float y[4] = {88.0f, 89.0f, -INFINITY, -INFINITY};
    ops_softmax(y, 4);
    cr_expect_float_eq(y[0], 1.0 / (1.0 + exp(1.0)), 1e-7);
    cr_expect_float_eq(y[1], exp(1.0) / (1.0 + exp(1.0)), 1e-7);
    cr_expect_eq(y[2], 0.0f);
    cr_expect_eq(y[3], 0.0f);
    float z[1] = {-7.0f};
    ops_softmax(z, 1);
    cr_expect_eq(z[0], 1.0f);
}

Test(ops, softmax_matches_ref) {
    uint64_t s = 7;
    for (int k = 0; k < NELEM(LENS); k++) {
        const int64_t n = LENS[k];
        float *a = malloc((size_t)n * 4), *b = malloc((size_t)n * 4);
        fill(&s, a, n, -20.0f, 20.0f);
        memcpy(b, a, (size_t)n * 4);
        ops_softmax(a, n);
        ops_softmax_ref(b, n);
        cr_expect_arr_eq(a, b, (size_t)n * 4, "n=%ld", (long)n);
        double sum = 0;
        for (int64_t i = 0; i < n; i++) sum += a[i];
        cr_expect_float_eq(sum, 1.0, 1e-5, "n=%ld sums to %.9g", (long)n, sum);
        free(a), free(b);
    }
}

/* ------------------------------------------------------------------ swiglu */

Test(ops, swiglu_hand_values) {
    float g[4] = {0.0f, 1.0f, 100.0f, -100.0f};
    const float u[4] = {5.0f, 2.0f, 0.5f, 1.0f};
    ops_swiglu(g, u, 4);
    cr_expect_eq(g[0], 0.0f);
    cr_expect_float_eq(g[1], 2.0 / (1.0 + exp(-1.0)), 1e-6);  // 1.46211715726...
    cr_expect_float_eq(g[2], 50.0f, 1e-6);
    cr_expect_float_eq(g[3], 0.0f, 1e-30);  // -100 / (1 + e^100) underflows to -0
}

Test(ops, swiglu_matches_ref) {
    uint64_t s = 8;
    for (int k = 0; k < NELEM(LENS); k++) {
        const int64_t n = LENS[k];
        float *g = malloc((size_t)n * 4), *u = malloc((size_t)n * 4);
        float *a = malloc((size_t)n * 4), *b = malloc((size_t)n * 4);
        fill(&s, g, n, -30.0f, 30.0f);
        fill(&s, u, n, -2.0f, 2.0f);
        memcpy(a, g, (size_t)n * 4), memcpy(b, g, (size_t)n * 4);
        ops_swiglu(a, u, n);
        ops_swiglu_ref(b, u, n);
        for (int64_t i = 0; i < n; i++)
            cr_expect_leq(fabsf(a[i] - b[i]), 1e-6f * fabsf(b[i]) + 1e-37f,
                          "n=%ld g=%.9g: %.9g vs ref %.9g", (long)n, g[i], a[i], b[i]);
        free(g), free(u), free(a), free(b);
    }
}

/* ------------------------------------------------------------------ rope */

Test(ops, rope_pos0_is_identity) {
    uint64_t s = 9;
    float x[4 * 64], y[4 * 64];
    fill(&s, x, 4 * 64, -1.0f, 1.0f);
    for (int mode = 0; mode <= OPS_ROPE_NEOX; mode += OPS_ROPE_NEOX) {
        memcpy(y, x, sizeof x);
        ops_rope(y, 4, 64, 0, 10000.0f, mode);
        cr_expect_arr_eq(x, y, sizeof x, "mode %d", mode);
    }
}

Test(ops, rope_one_radian) {
    // head_dim 2: one pair, angle = pos * base^0 = 1 rad at pos 1, for any base
    float x[2] = {1.0f, 0.0f};
    ops_rope(x, 1, 2, 1, 10000.0f, OPS_ROPE_NORM);
    cr_expect_float_eq(x[0], cos(1.0), 1e-7);
    cr_expect_float_eq(x[1], sin(1.0), 1e-7);
    float y[2] = {0.0f, 1.0f};
    ops_rope(y, 1, 2, 1, 10000.0f, OPS_ROPE_NEOX);
    cr_expect_float_eq(y[0], -sin(1.0), 1e-7);
    cr_expect_float_eq(y[1], cos(1.0), 1e-7);
}

Test(ops, rope_pairs_and_angles) {
    // head_dim 4, base 100, pos 3: angles 3 and 3 * 100^(-1/2) = 0.3
    float n[4] = {1, 0, 1, 0}, h[4] = {1, 1, 0, 0};
    ops_rope(n, 1, 4, 3, 100.0f, OPS_ROPE_NORM);  // pairs (0,1), (2,3)
    ops_rope(h, 1, 4, 3, 100.0f, OPS_ROPE_NEOX);  // pairs (0,2), (1,3)
    const double c3 = cos(3.0), s3 = sin(3.0), c03 = cos(0.3), s03 = sin(0.3);
    const double wn[4] = {c3, s3, c03, s03}, wh[4] = {c3, c03, s3, s03};
    for (int i = 0; i < 4; i++) {
        cr_expect_float_eq(n[i], wn[i], 1e-6, "norm[%d]", i);
        cr_expect_float_eq(h[i], wh[i], 1e-6, "neox[%d]", i);
    }
}

Test(ops, rope_matches_ref_and_keeps_norm) {
    uint64_t s = 10;
    enum { NH = 6, HD = 64 };
    float x[NH * HD], a[NH * HD], b[NH * HD];
    fill(&s, x, NH * HD, -1.0f, 1.0f);
    static const int POS[] = {1, 17, 511, 4095};
    for (int mode = 0; mode <= OPS_ROPE_NEOX; mode += OPS_ROPE_NEOX) {
        for (int p = 0; p < NELEM(POS); p++) {
            memcpy(a, x, sizeof x), memcpy(b, x, sizeof x);
            ops_rope(a, NH, HD, POS[p], 10000.0f, mode);
            ops_rope_ref(b, NH, HD, POS[p], 10000.0f, mode);
            cr_expect_arr_eq(a, b, sizeof a, "mode %d pos %d", mode, POS[p]);
            double n0 = 0, n1 = 0;
            for (int i = 0; i < NH * HD; i++) n0 += (double)x[i] * x[i], n1 += (double)a[i] * a[i];
            cr_expect_float_eq(n1, n0, 1e-5 * n0, "rotation keeps the norm");
        }
    }
}

/* ------------------------------------------------------------------ axpy */

Test(ops, axpy_matches_ref_and_hand_values) {
    float y[3] = {1, 2, 3};
    const float x[3] = {10, 20, 30};
    ops_axpy(y, 0.5f, x, 3);
    cr_expect(y[0] == 6 && y[1] == 12 && y[2] == 18);
    uint64_t s = 11;
    for (int k = 0; k < NELEM(LENS); k++) {
        const int64_t n = LENS[k];
        float *xx = malloc((size_t)n * 4), *a = malloc((size_t)n * 4), *b = malloc((size_t)n * 4);
        fill(&s, xx, n, -3.0f, 3.0f);
        fill(&s, a, n, -3.0f, 3.0f);
        memcpy(b, a, (size_t)n * 4);
        ops_axpy(a, 0.37f, xx, n);
        ops_axpy_ref(b, 0.37f, xx, n);
        /* fma rounds once where the ref rounds twice */
        for (int64_t i = 0; i < n; i++) cr_expect_leq(fabsf(a[i] - b[i]), 1e-6f * (fabsf(b[i]) + 1));
        free(xx), free(a), free(b);
    }
}

/* ------------------------------------------------------------------ attention */

Test(ops, attention_matches_ref) {
    uint64_t s = 12;
    const int hd = 32, ld = 4 * hd; /* heads interleaved in rows, as in the KV cache */
    const int cases[][2] = {{1, 0}, {1, 9}, {5, 0}, {7, 3}, {64, 0}, {33, 40}};
    for (int c = 0; c < NELEM(cases); c++) {
        const int n_q = cases[c][0], pos0 = cases[c][1], len = pos0 + n_q;
        float *q = malloc(sizeof(float) * n_q * ld), *k = malloc(sizeof(float) * len * ld);
        float *v = malloc(sizeof(float) * len * ld), *sc = malloc(sizeof(float) * n_q * len);
        float *a = calloc((size_t)n_q * ld, 4), *b = calloc((size_t)n_q * ld, 4);
        fill(&s, q, (int64_t)n_q * ld, -2, 2);
        fill(&s, k, (int64_t)len * ld, -2, 2);
        fill(&s, v, (int64_t)len * ld, -2, 2);
        ops_attention(q + hd, ld, k + hd, v + hd, ld, n_q, pos0, hd, 0.17f, a + hd, ld, sc);
        ops_attention_ref(q + hd, ld, k + hd, v + hd, ld, n_q, pos0, hd, 0.17f, b + hd, ld, sc);
        for (int i = 0; i < n_q * ld; i++)
            cr_expect_leq(fabsf(a[i] - b[i]), 1e-5f, "case %d elem %d: %g vs %g", c, i, a[i], b[i]);
        /* first query sees only key 0: its output is exactly v[0] */
        if (pos0 == 0)
            for (int e = 0; e < hd; e++) cr_expect_float_eq(a[hd + e], v[hd + e], 1e-6);
        free(q), free(k), free(v), free(sc), free(a), free(b);
    }
}

/* ------------------------------------------------------------------ quantized rows */

Test(ops, matvec_quantized_equals_dequantized_dot) {
    uint64_t s = 21;
    const int64_t rows = 9, cols = 512;
    float *wf = malloc(sizeof(float) * rows * cols), *x = malloc(sizeof(float) * cols);
    float *deq = malloc(sizeof(float) * rows * cols), y[9], yr[9], want[9];
    fill(&s, wf, rows * cols, -1, 1);
    fill(&s, x, cols, -1, 1);
    const av_dtype types[] = {AV_Q8_0, AV_Q4_0, AV_Q5_1, AV_Q4_K, AV_Q6_K, AV_Q2_K};
    for (int k = 0; k < NELEM(types); k++) {
        const av_dtype_traits *tr = av_dtype_traits_of(types[k]);
        size_t rb = ops_row_bytes(types[k], cols);
        cr_assert_eq(rb, (size_t)(cols / tr->block_size) * tr->type_size);
        void *q = malloc(rb * rows);
        tr->from_float(wf, q, rows * cols);
        tr->to_float(q, deq, rows * cols);
        /* llama.cpp's numerics: x is quantized to the weight's vec_dot_type
         * first (core/quant_dot.h), so the reference is the dot with that */
        const av_dtype vdt = q_vec_dot_type(types[k]);
        void *xq = malloc(q_row_size(vdt, cols));
        float *xd = malloc(sizeof(float) * cols);
        q_quantize_act(vdt, x, xq, cols);
        q_dequantize_row(vdt, xq, xd, cols);
        for (int r = 0; r < rows; r++) want[r] = ops_dot_f32_ref(deq + r * cols, xd, cols);
        free(xq), free(xd);
        ops_matvec(types[k], q, x, y, rows, cols, 2);
        ops_matvec_ref(types[k], q, x, yr, rows, cols);
        for (int r = 0; r < rows; r++) {
            /* Q5_1 (Q8_1 activations) adds m * s per block with s = f16(d * sum q):
             * up to ~|m s| 2^-11 per block more than the dequantized dot */
            const double tol = vdt == AV_Q8_1 ? 3e-3 : 1e-4;
            cr_expect_float_eq(y[r], want[r], tol, "%s row %d", tr->name, r);
            cr_expect_float_eq(yr[r], want[r], tol, "%s ref row %d", tr->name, r);
        }
        free(q);
    }
    free(wf), free(x), free(deq);
}
