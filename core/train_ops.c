/* train_ops.c — forward and backward kernels of the training core (train.h).
 *
 * Every weight product is cblas_sgemm, run single-threaded inside OpenMP
 * threads, each thread on a slice of the output (one threading runtime:
 * OpenBLAS's pthreads spinning beside OpenMP's cost 10x on 2 cores, see
 * ops.c). Attention, softmax/cross-entropy, SwiGLU, RMSNorm and AdamW are
 * explicit vector code (AVX-512, AVX2+FMA, or plain C through the same
 * helpers) with an exp of our own (Cephes' expf polynomial, ~1 ulp). Every
 * reduction runs in a fixed order that does not depend on the thread count
 * except inside sgemm slices, so a run is bit-reproducible for a given
 * thread count. The _ref functions are the plain twins the tests compare
 * against (the previous sgemm + scalar-softmax attention, scalar expf). */
#include "train.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

/* ---- vector helpers: one set of names over AVX-512 (16 lanes), AVX2+FMA (8)
 * or plain C (1). vm: lane mask; vmask_n(n): lanes [0, n) for 0 <= n <= VL. */
#if defined(__AVX512F__)
#include <immintrin.h>
#define VL 16
typedef __m512 vf;
typedef __mmask16 vm;
static inline vf vzero(void) { return _mm512_setzero_ps(); }
static inline vf v1(float x) { return _mm512_set1_ps(x); }
static inline vf vld(const float *p) { return _mm512_loadu_ps(p); }
static inline void vst(float *p, vf a) { _mm512_storeu_ps(p, a); }
static inline vm vmask_n(int n) { return (vm)(n >= 16 ? 0xFFFFu : (1u << n) - 1u); }
static inline vf vldm(const float *p, vm m) { return _mm512_maskz_loadu_ps(m, p); }
static inline void vstm(float *p, vf a, vm m) { _mm512_mask_storeu_ps(p, m, a); }
static inline vf vsel(vm m, vf a, vf b) { return _mm512_mask_blend_ps(m, b, a); } /* m ? a : b */
static inline vf vadd(vf a, vf b) { return _mm512_add_ps(a, b); }
static inline vf vsub(vf a, vf b) { return _mm512_sub_ps(a, b); }
static inline vf vmul(vf a, vf b) { return _mm512_mul_ps(a, b); }
static inline vf vdiv(vf a, vf b) { return _mm512_div_ps(a, b); }
static inline vf vmax(vf a, vf b) { return _mm512_max_ps(a, b); }
static inline vf vmin(vf a, vf b) { return _mm512_min_ps(a, b); }
static inline vf vsqrt(vf a) { return _mm512_sqrt_ps(a); }
static inline vf vfma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }  /* a*b + c */
static inline vf vfnma(vf a, vf b, vf c) { return _mm512_fnmadd_ps(a, b, c); } /* c - a*b */
static inline float vhsum(vf a) { return _mm512_reduce_add_ps(a); }
static inline float vhmax(vf a) { return _mm512_reduce_max_ps(a); }
static inline vm vge(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_GE_OQ); }
static inline vf vround(vf a) {
    return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
static inline vf vpow2i(vf n) { /* 2^n for integral n in [-126, 127] */
    return _mm512_castsi512_ps(
        _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23));
}
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define VL 8
typedef __m256 vf;
typedef __m256 vm;
static inline vf vzero(void) { return _mm256_setzero_ps(); }
static inline vf v1(float x) { return _mm256_set1_ps(x); }
static inline vf vld(const float *p) { return _mm256_loadu_ps(p); }
static inline void vst(float *p, vf a) { _mm256_storeu_ps(p, a); }
static inline vm vmask_n(int n) {
    return _mm256_castsi256_ps(
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
}
static inline vf vldm(const float *p, vm m) { return _mm256_maskload_ps(p, _mm256_castps_si256(m)); }
static inline void vstm(float *p, vf a, vm m) { _mm256_maskstore_ps(p, _mm256_castps_si256(m), a); }
static inline vf vsel(vm m, vf a, vf b) { return _mm256_blendv_ps(b, a, m); }
static inline vf vadd(vf a, vf b) { return _mm256_add_ps(a, b); }
static inline vf vsub(vf a, vf b) { return _mm256_sub_ps(a, b); }
static inline vf vmul(vf a, vf b) { return _mm256_mul_ps(a, b); }
static inline vf vdiv(vf a, vf b) { return _mm256_div_ps(a, b); }
static inline vf vmax(vf a, vf b) { return _mm256_max_ps(a, b); }
static inline vf vmin(vf a, vf b) { return _mm256_min_ps(a, b); }
static inline vf vsqrt(vf a) { return _mm256_sqrt_ps(a); }
static inline vf vfma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
static inline vf vfnma(vf a, vf b, vf c) { return _mm256_fnmadd_ps(a, b, c); }
static inline float vhsum(vf a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
static inline float vhmax(vf a) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
static inline vm vge(vf a, vf b) { return _mm256_cmp_ps(a, b, _CMP_GE_OQ); }
static inline vf vround(vf a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
static inline vf vpow2i(vf n) {
    return _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
}
#else
#define VL 1
typedef float vf;
typedef int vm;
static inline vf vzero(void) { return 0.0f; }
static inline vf v1(float x) { return x; }
static inline vf vld(const float *p) { return *p; }
static inline void vst(float *p, vf a) { *p = a; }
static inline vm vmask_n(int n) { return n >= 1; }
static inline vf vldm(const float *p, vm m) { return m ? *p : 0.0f; }
static inline void vstm(float *p, vf a, vm m) { if (m) *p = a; }
static inline vf vsel(vm m, vf a, vf b) { return m ? a : b; }
static inline vf vadd(vf a, vf b) { return a + b; }
static inline vf vsub(vf a, vf b) { return a - b; }
static inline vf vmul(vf a, vf b) { return a * b; }
static inline vf vdiv(vf a, vf b) { return a / b; }
static inline vf vmax(vf a, vf b) { return a > b ? a : b; }
static inline vf vmin(vf a, vf b) { return a < b ? a : b; }
static inline vf vsqrt(vf a) { return sqrtf(a); }
static inline vf vfma(vf a, vf b, vf c) { return fmaf(a, b, c); }
static inline vf vfnma(vf a, vf b, vf c) { return fmaf(-a, b, c); }
static inline float vhsum(vf a) { return a; }
static inline float vhmax(vf a) { return a; }
static inline vm vge(vf a, vf b) { return a >= b; }
static inline vf vround(vf a) { return nearbyintf(a); }
static inline vf vpow2i(vf n) {
    union { int32_t i; float f; } u = {.i = ((int32_t)n + 127) * (1 << 23)};
    return u.f;
}
#endif

/* exp(x), Cephes expf: x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial, ~1 ulp.
 * x < -87.34 gives exactly 0 (-inf included); x is clamped at 88 (exp(88) =
 * 1.65e38 where expf would reach inf near 88.72). NaN is not propagated. */
static inline vf vexp(vf x) {
    const vm live = vge(x, v1(-87.33654f));
    x = vmin(vmax(x, v1(-87.33654f)), v1(88.0f));
    const vf n = vround(vmul(x, v1(1.44269504088896341f)));
    vf r = vfnma(n, v1(0.693359375f), x);
    r = vfnma(n, v1(-2.12194440e-4f), r);
    vf y = v1(1.9875691500e-4f);
    y = vfma(y, r, v1(1.3981999507e-3f));
    y = vfma(y, r, v1(8.3334519073e-3f));
    y = vfma(y, r, v1(4.1665795894e-2f));
    y = vfma(y, r, v1(1.6666665459e-1f));
    y = vfma(y, r, v1(5.0000001201e-1f));
    y = vfma(y, vmul(r, r), vadd(r, v1(1.0f)));
    return vsel(live, vmul(y, vpow2i(n)), vzero());
}

float tr_expf(float x) {
    float o;
    vstm(&o, vexp(v1(x)), vmask_n(1));
    return o;
}

static inline size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }

/* C [M, N] = alpha op(A) op(B) + beta C, split over nt threads along the
 * larger of M and N (slices of 16). Small products run on one thread. */
void tr_sgemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc, int nt) {
    if (M <= 0 || N <= 0) return;
    if (nt < 1) nt = 1;
    if ((double)M * N * K < 1e6) nt = 1;
    openblas_set_num_threads(1);
    const enum CBLAS_TRANSPOSE TA = ta ? CblasTrans : CblasNoTrans,
                               TB = tb ? CblasTrans : CblasNoTrans;
    if (nt == 1) {
        cblas_sgemm(CblasRowMajor, TA, TB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    const int by_rows = M >= N;
    const int len = by_rows ? M : N;
    const int step = ((len + nt - 1) / nt + 15) & ~15;
    const int chunks = (len + step - 1) / step;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int c = 0; c < chunks; c++) {
        const int s0 = c * step, n = len - s0 < step ? len - s0 : step;
        if (by_rows)
            cblas_sgemm(CblasRowMajor, TA, TB, n, N, K, alpha, ta ? A + s0 : A + (size_t)s0 * lda,
                        lda, B, ldb, beta, C + (size_t)s0 * ldc, ldc);
        else
            cblas_sgemm(CblasRowMajor, TA, TB, M, n, K, alpha, A, lda,
                        tb ? B + (size_t)s0 * ldb : B + s0, ldb, beta, C + s0, ldc);
    }
}

/* ---- embedding -------------------------------------------------------- */

void tr_embedding_fwd(float *out, const float *table, const int32_t *ids, int N, int E) {
    for (int i = 0; i < N; i++)
        memcpy(out + (size_t)i * E, table + (size_t)ids[i] * E, (size_t)E * sizeof(float));
}

void tr_embedding_bwd(float *dtable, const float *dout, const int32_t *ids, int N, int E) {
    for (int i = 0; i < N; i++) {
        float *d = dtable + (size_t)ids[i] * E;
        const float *g = dout + (size_t)i * E;
#pragma omp simd
        for (int j = 0; j < E; j++) d[j] += g[j];
    }
}

/* ---- RMSNorm ---------------------------------------------------------- */

/* sum of a[j] * b[j] over [0, n) (float lanes, fixed order) */
static inline float dot_f(const float *a, const float *b, int n) {
    vf s = vzero();
    int j = 0;
    for (; j + VL <= n; j += VL) s = vfma(vld(a + j), vld(b + j), s);
    if (j < n) {
        const vm m = vmask_n(n - j);
        s = vfma(vldm(a + j, m), vldm(b + j, m), s);
    }
    return vhsum(s);
}

void tr_rmsnorm_fwd(float *out, float *rstd, const float *x, const float *w, int N, int E,
                    float eps, int nt) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && (long)N * E > 32768)
    for (int i = 0; i < N; i++) {
        const float *xi = x + (size_t)i * E;
        float *oi = out + (size_t)i * E;
        const float r = 1.0f / sqrtf(dot_f(xi, xi, E) / (float)E + eps);
        rstd[i] = r;
        const vf rv = v1(r);
        int j = 0;
        for (; j + VL <= E; j += VL) vst(oi + j, vmul(vld(w + j), vmul(vld(xi + j), rv)));
        if (j < E) {
            const vm m = vmask_n(E - j);
            vstm(oi + j, vmul(vldm(w + j, m), vmul(vldm(xi + j, m), rv)), m);
        }
    }
}

#define NORM_ROWS 32 /* rows per partial sum of the weight gradient */

void tr_rmsnorm_bwd_acc(float *dx, float *dw, const float *dout, const float *x, const float *w,
                        const float *rstd, int N, int E, int nt) {
    const int par = nt > 1 && (long)N * E > 32768;
    /* dw: float partial sums over fixed chunks of NORM_ROWS rows, added in
     * chunk order in double: the same for any nt. Without memory for the
     * partials: columns in blocks of 16, rows in order (double). */
    const int nch = (N + NORM_ROWS - 1) / NORM_ROWS;
    const size_t Ep = round_up((size_t)E, VL);
    float *part = dw ? malloc((size_t)nch * Ep * sizeof(float)) : NULL; /* dw NULL: frozen (LoRA) */
#pragma omp parallel num_threads(nt) if (par)
    {
#pragma omp for schedule(static)
        for (int c = 0; c < nch; c++) {
            float *pc = part ? part + (size_t)c * Ep : NULL;
            if (pc) memset(pc, 0, Ep * sizeof(float));
            for (int i = c * NORM_ROWS; i < N && i < (c + 1) * NORM_ROWS; i++) {
                const float *xi = x + (size_t)i * E, *gi = dout + (size_t)i * E;
                float *di = dx + (size_t)i * E;
                const float r = rstd[i];
                vf sv = vzero();
                for (int j = 0; j < E; j += VL) {
                    const vm m = vmask_n(E - j < VL ? E - j : VL);
                    sv = vfma(vmul(vldm(gi + j, m), vldm(w + j, m)), vldm(xi + j, m), sv);
                }
                const float cc = vhsum(sv) / (float)E * r * r * r;
                const vf rv = v1(r), cv = v1(cc);
                /* dx += r (g w) - c x; partial dw += g x r */
                for (int j = 0; j < E; j += VL) {
                    const vm m = vmask_n(E - j < VL ? E - j : VL);
                    const vf g = vldm(gi + j, m), xv = vldm(xi + j, m);
                    vstm(di + j, vadd(vldm(di + j, m), vfnma(cv, xv, vmul(rv, vmul(g, vldm(w + j, m))))), m);
                    if (pc) vst(pc + j, vadd(vld(pc + j), vmul(vmul(g, xv), rv)));
                }
            }
        }
        if (part) {
#pragma omp for schedule(static)
            for (int j0 = 0; j0 < E; j0 += 16) {
                const int nj = j0 + 16 < E ? 16 : E - j0;
                double acc[16] = {0};
                for (int c = 0; c < nch; c++) {
                    const float *pc = part + (size_t)c * Ep + j0;
                    for (int j = 0; j < nj; j++) acc[j] += pc[j];
                }
                for (int j = 0; j < nj; j++) dw[j0 + j] += (float)acc[j];
            }
        } else if (dw) {
#pragma omp for schedule(static)
            for (int j0 = 0; j0 < E; j0 += 16) {
                const int nj = j0 + 16 < E ? 16 : E - j0;
                double acc[16] = {0};
                for (int i = 0; i < N; i++) {
                    const float *xi = x + (size_t)i * E + j0, *gi = dout + (size_t)i * E + j0;
                    for (int j = 0; j < nj; j++) acc[j] += (double)(gi[j] * xi[j] * rstd[i]);
                }
                for (int j = 0; j < nj; j++) dw[j0 + j] += (float)acc[j];
            }
        }
    }
    free(part);
}

/* ---- linear ----------------------------------------------------------- */

void tr_matmul_fwd(float *Y, const float *X, const float *W, int N, int In, int O, int nt) {
    tr_sgemm(0, 1, N, O, In, 1.0f, X, In, W, In, 0.0f, Y, O, nt);
}

void tr_matmul_fwd_acc(float *Y, const float *X, const float *W, int N, int In, int O, int nt) {
    tr_sgemm(0, 1, N, O, In, 1.0f, X, In, W, In, 1.0f, Y, O, nt);
}

void tr_matmul_bwd(float *dX, int acc, float *dW, const float *dY, const float *X,
                   const float *W, int N, int In, int O, int nt) {
    tr_matmul_bwd_scaled(dX, acc, dW, dY, X, W, N, In, O, 1.0f, nt);
}

void tr_matmul_bwd_scaled(float *dX, int acc, float *dW, const float *dY, const float *X,
                          const float *W, int N, int In, int O, float alpha, int nt) {
    if (dW) tr_sgemm(1, 0, O, In, N, alpha, dY, O, X, In, 1.0f, dW, In, nt);
    if (dX) tr_sgemm(0, 0, N, In, O, alpha, dY, O, W, In, acc ? 1.0f : 0.0f, dX, In, nt);
}

/* ---- RoPE ------------------------------------------------------------- */

void tr_rope_table(float *cos_t, float *sin_t, int T, int hd, float base) {
    const int half = hd / 2;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < half; i++) {
            const double a = t * pow((double)base, -2.0 * i / hd);
            cos_t[(size_t)t * half + i] = (float)cos(a);
            sin_t[(size_t)t * half + i] = (float)sin(a);
        }
}

static void rope_rows(float *x, int N, int T, int n_head, int hd, const float *cos_t,
                      const float *sin_t, int mode, float sign, int nt) {
    const int half = hd / 2, D = n_head * hd;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && (long)N * D > 32768)
    for (int r = 0; r < N; r++) {
        const float *c = cos_t + (size_t)(r % T) * half, *s = sin_t + (size_t)(r % T) * half;
        for (int h = 0; h < n_head; h++) {
            float *xh = x + (size_t)r * D + (size_t)h * hd;
            for (int i = 0; i < half; i++) {
                const int i0 = mode == OPS_ROPE_NEOX ? i : 2 * i;
                const int i1 = mode == OPS_ROPE_NEOX ? i + half : 2 * i + 1;
                const float x0 = xh[i0], x1 = xh[i1], si = sign * s[i];
                xh[i0] = x0 * c[i] - x1 * si;
                xh[i1] = x0 * si + x1 * c[i];
            }
        }
    }
}

void tr_rope_fwd(float *x, int N, int T, int n_head, int hd, const float *cos_t,
                 const float *sin_t, int mode, int nt) {
    rope_rows(x, N, T, n_head, hd, cos_t, sin_t, mode, 1.0f, nt);
}

/* the rotation is orthogonal: its transpose is the rotation by -angle */
void tr_rope_bwd(float *dx, int N, int T, int n_head, int hd, const float *cos_t,
                 const float *sin_t, int mode, int nt) {
    rope_rows(dx, N, T, n_head, hd, cos_t, sin_t, mode, -1.0f, nt);
}

/* ---- attention ----------------------------------------------------------
 * One job per (batch, kv head), the heads sharing it inside: jobs are
 * independent, so the result does not depend on the thread count. Rows are
 * taken ATT_R at a time; a block of rows needs keys j <= its last row only
 * (causal: about half of the T x T products). Per job, in the thread's
 * scratch: Kt = K^T, Vt = V^T, dKt, dVt [hd][Tp] (keys along the
 * vector lanes, zero padded to Tp = T rounded up to VL) and S, dP, dS
 * [ATT_R][Tp] rows. The forward keeps only each softmax row's max and 1/sum
 * (P [B, H, T, 2]); the backward recomputes the probabilities from them with
 * the same operations, so they are bit-identical to the forward's. Memory
 * traffic stays O(T * hd) per job instead of O(T^2). */

#define ATT_R 4

static size_t att_scratch_1(int T, int hd) {
    const size_t Tp = round_up((size_t)T, VL), hdp = round_up((size_t)hd, VL);
    return 4 * (size_t)hd * Tp + 3 * ATT_R * Tp + hdp + VL;
}

size_t tr_attention_scratch(int T, int hd, int nt) {
    return (size_t)(nt < 1 ? 1 : nt) * att_scratch_1(T, hd);
}

/* dst [hd][Tp] <- s * rows [T][hd] (stride ld) transposed, zero padded */
static void transpose_in(float *dst, const float *src, int T, int Tp, int hd, int ld, float s) {
    for (int d = 0; d < hd; d++) {
        float *o = dst + (size_t)d * Tp;
        for (int j = 0; j < T; j++) o[j] = src[(size_t)j * ld + d] * s;
        for (int j = T; j < Tp; j++) o[j] = 0.0f;
    }
}

/* rows [T][hd] (stride ld) <- src [hd][Tp] transposed */
static void transpose_out(float *dst, int ld, const float *src, int T, int Tp, int hd) {
    for (int j = 0; j < T; j++)
        for (int d = 0; d < hd; d++) dst[(size_t)j * ld + d] = src[(size_t)d * Tp + j];
}

/* S[r][jv] = alpha sum_d A[r][d] Bt[d][jv] for ATT_R rows, vectors jv < nv
 * (one vector at a time: measured faster than two, whose broadcasts no longer
 * fold into the FMAs) */
static void rows_x_t(float *S, int Tp, const float *const *A, const float *Bt, int hd, int nv,
                     float alpha) {
    const float *a0 = A[0], *a1 = A[1], *a2 = A[2], *a3 = A[3];
    const vf al = v1(alpha);
    for (int jv = 0; jv < nv; jv++) {
        vf s0 = vzero(), s1 = vzero(), s2 = vzero(), s3 = vzero();
        const float *bt = Bt + (size_t)jv * VL;
        for (int d = 0; d < hd; d++) {
            const vf b = vld(bt + (size_t)d * Tp);
            s0 = vfma(v1(a0[d]), b, s0);
            s1 = vfma(v1(a1[d]), b, s1);
            s2 = vfma(v1(a2[d]), b, s2);
            s3 = vfma(v1(a3[d]), b, s3);
        }
        vst(S + (size_t)jv * VL, vmul(s0, al));
        vst(S + Tp + (size_t)jv * VL, vmul(s1, al));
        vst(S + 2 * (size_t)Tp + (size_t)jv * VL, vmul(s2, al));
        vst(S + 3 * (size_t)Tp + (size_t)jv * VL, vmul(s3, al));
    }
}

/* O[r][d] = sum_{j < nj} W[r][j] M[j][d] for ATT_R rows (M rows of stride
 * ldm, O rows of stride ldo); only rows r < nr are stored. Even and odd j
 * accumulate apart (8 independent FMA chains), then add. */
static void rows_x_m(float *O, int ldo, int nr, const float *W, int Tp, const float *M, int ldm,
                     int hd, int nj) {
    const float *w0 = W, *w1 = W + Tp, *w2 = W + 2 * (size_t)Tp, *w3 = W + 3 * (size_t)Tp;
    for (int d0 = 0; d0 < hd; d0 += VL) {
        const vm mk = vmask_n(hd - d0 < VL ? hd - d0 : VL);
        vf a0 = vzero(), a1 = vzero(), a2 = vzero(), a3 = vzero();
        vf b0 = vzero(), b1 = vzero(), b2 = vzero(), b3 = vzero();
        const float *m = M + d0;
        int j = 0;
        for (; j + 2 <= nj; j += 2) {
            const vf x = vldm(m + (size_t)j * ldm, mk), y = vldm(m + (size_t)(j + 1) * ldm, mk);
            a0 = vfma(v1(w0[j]), x, a0);
            a1 = vfma(v1(w1[j]), x, a1);
            a2 = vfma(v1(w2[j]), x, a2);
            a3 = vfma(v1(w3[j]), x, a3);
            b0 = vfma(v1(w0[j + 1]), y, b0);
            b1 = vfma(v1(w1[j + 1]), y, b1);
            b2 = vfma(v1(w2[j + 1]), y, b2);
            b3 = vfma(v1(w3[j + 1]), y, b3);
        }
        if (j < nj) {
            const vf x = vldm(m + (size_t)j * ldm, mk);
            a0 = vfma(v1(w0[j]), x, a0);
            a1 = vfma(v1(w1[j]), x, a1);
            a2 = vfma(v1(w2[j]), x, a2);
            a3 = vfma(v1(w3[j]), x, a3);
        }
        const vf acc[ATT_R] = {vadd(a0, b0), vadd(a1, b1), vadd(a2, b2), vadd(a3, b3)};
        for (int r = 0; r < nr; r++) vstm(O + (size_t)r * ldo + d0, acc[r], mk);
    }
}

/* Dt[d][jv] += sum_r X[r][d] W[r][jv] for vectors jv < nv (Dt [hd][Tp]) */
static void acc_xt(float *Dt, int Tp, const float *const *X, const float *W, int hd, int nv) {
    const float *x0 = X[0], *x1 = X[1], *x2 = X[2], *x3 = X[3];
    for (int jv = 0; jv < nv; jv++) {
        const size_t o = (size_t)jv * VL;
        const vf w0 = vld(W + o), w1 = vld(W + Tp + o), w2 = vld(W + 2 * (size_t)Tp + o),
                 w3 = vld(W + 3 * (size_t)Tp + o);
        float *dt = Dt + o;
        for (int d = 0; d < hd; d++) {
            float *p = dt + (size_t)d * Tp;
            vf a = vfma(v1(x0[d]), w0, vld(p));
            vf b = vmul(v1(x1[d]), w1);
            a = vfma(v1(x2[d]), w2, a);
            b = vfma(v1(x3[d]), w3, b);
            vst(p, vadd(a, b));
        }
    }
}

/* Softmax of row i (scores in row[0..i]) into probabilities in place, lanes
 * past i 0 and the row zeroed up to nv vectors. recompute = 0: the max and
 * 1/sum are computed and returned in *M, *inv; recompute = 1: they are taken
 * from there and p = exp(s - M) * inv gives the forward's bits again. */
static void softmax_row(float *row, int i, int nv, float *M, float *inv, int recompute) {
    const int nvi = i / VL + 1, lv = (nvi - 1) * VL;
    const vf tail = vsel(vmask_n(i + 1 - lv), vld(row + lv), v1(-INFINITY));
    if (recompute) {
        const vf Mv = v1(*M), iv = v1(*inv);
        for (int j = 0; j < lv; j += VL) vst(row + j, vmul(vexp(vsub(vld(row + j), Mv)), iv));
        vst(row + lv, vmul(vexp(vsub(tail, Mv)), iv)); /* -inf lanes: 0 */
    } else {
        vf mx = tail;
        for (int j = 0; j < lv; j += VL) mx = vmax(mx, vld(row + j));
        *M = vhmax(mx);
        const vf Mv = v1(*M);
        vf sum = vzero();
        for (int j = 0; j < lv; j += VL) {
            const vf e = vexp(vsub(vld(row + j), Mv));
            vst(row + j, e);
            sum = vadd(sum, e);
        }
        const vf et = vexp(vsub(tail, Mv));
        sum = vadd(sum, et);
        *inv = 1.0f / vhsum(sum);
        const vf iv = v1(*inv);
        for (int j = 0; j < lv; j += VL) vst(row + j, vmul(vld(row + j), iv));
        vst(row + lv, vmul(et, iv));
    }
    for (int j = nvi * VL; j < nv * VL; j++) row[j] = 0.0f;
}

void tr_attention_fwd(float *out, float *P, const float *q, const float *k, const float *v,
                      int B, int T, int H, int KVH, int hd, float *scratch, int nt) {
    const int Qd = H * hd, KVd = KVH * hd, group = H / KVH, jobs = B * KVH;
    const int Tp = (int)round_up((size_t)T, VL), hdp = (int)round_up((size_t)hd, VL);
    const float scale = 1.0f / sqrtf((float)hd);
    const size_t per = att_scratch_1(T, hd);
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1) if (nt > 1 && jobs > 1)
    for (int job = 0; job < jobs; job++) {
        const int b = job / KVH, kvh = job % KVH;
        float *Kt = scratch + (size_t)omp_get_thread_num() * per, *S = Kt + (size_t)hd * Tp,
              *zero = S + 3 * (size_t)ATT_R * Tp;
        memset(zero, 0, (size_t)hdp * sizeof(float));
        const float *kb = k + (size_t)b * T * KVd + (size_t)kvh * hd;
        const float *vb = v + (size_t)b * T * KVd + (size_t)kvh * hd;
        transpose_in(Kt, kb, T, Tp, hd, KVd, 1.0f);
        for (int h = kvh * group; h < (kvh + 1) * group; h++) {
            const float *qb = q + (size_t)b * T * Qd + (size_t)h * hd;
            float *ob = out + (size_t)b * T * Qd + (size_t)h * hd;
            float *st = P + ((size_t)b * H + h) * T * 2;
            for (int i0 = 0; i0 < T; i0 += ATT_R) {
                const int nr = T - i0 < ATT_R ? T - i0 : ATT_R;
                const int nj = i0 + nr, nv = (nj + VL - 1) / VL;
                const float *A[ATT_R];
                for (int r = 0; r < ATT_R; r++) A[r] = r < nr ? qb + (size_t)(i0 + r) * Qd : zero;
                rows_x_t(S, Tp, A, Kt, hd, nv, scale);
                for (int r = 0; r < ATT_R; r++) {
                    float *row = S + (size_t)r * Tp;
                    if (r < nr)
                        softmax_row(row, i0 + r, nv, st + 2 * (i0 + r), st + 2 * (i0 + r) + 1, 0);
                    else
                        memset(row, 0, (size_t)nv * VL * sizeof(float));
                }
                rows_x_m(ob + (size_t)i0 * Qd, Qd, nr, S, Tp, vb, KVd, hd, nj);
            }
        }
    }
}

void tr_attention_bwd(float *dq, float *dk, float *dv, const float *dout, const float *P,
                      const float *q, const float *k, const float *v, int B, int T, int H,
                      int KVH, int hd, float *scratch, int nt) {
    const int Qd = H * hd, KVd = KVH * hd, group = H / KVH, jobs = B * KVH;
    const int Tp = (int)round_up((size_t)T, VL), hdp = (int)round_up((size_t)hd, VL);
    const float scale = 1.0f / sqrtf((float)hd);
    const size_t per = att_scratch_1(T, hd);
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1) if (nt > 1 && jobs > 1)
    for (int job = 0; job < jobs; job++) {
        const int b = job / KVH, kvh = job % KVH;
        float *Kt = scratch + (size_t)omp_get_thread_num() * per, *Vt = Kt + (size_t)hd * Tp,
              *dKt = Vt + (size_t)hd * Tp, *dVt = dKt + (size_t)hd * Tp,
              *Pr = dVt + (size_t)hd * Tp, *dS = Pr + (size_t)ATT_R * Tp,
              *dP = dS + (size_t)ATT_R * Tp, *zero = dP + (size_t)ATT_R * Tp;
        memset(zero, 0, (size_t)hdp * sizeof(float));
        const float *kb = k + (size_t)b * T * KVd + (size_t)kvh * hd;
        const float *vb = v + (size_t)b * T * KVd + (size_t)kvh * hd;
        transpose_in(Kt, kb, T, Tp, hd, KVd, 1.0f);
        transpose_in(Vt, vb, T, Tp, hd, KVd, 1.0f);
        memset(dKt, 0, sizeof(float) * 2 * (size_t)hd * Tp);
        for (int h = kvh * group; h < (kvh + 1) * group; h++) {
            const size_t qo = (size_t)b * T * Qd + (size_t)h * hd;
            const float *st = P + ((size_t)b * H + h) * T * 2;
            for (int i0 = 0; i0 < T; i0 += ATT_R) {
                const int nr = T - i0 < ATT_R ? T - i0 : ATT_R;
                const int nj = i0 + nr, nv = (nj + VL - 1) / VL;
                const float *Qr[ATT_R], *Or[ATT_R];
                for (int r = 0; r < ATT_R; r++) {
                    Qr[r] = r < nr ? q + qo + (size_t)(i0 + r) * Qd : zero;
                    Or[r] = r < nr ? dout + qo + (size_t)(i0 + r) * Qd : zero;
                }
                /* P recomputed; dP = dO V^T */
                rows_x_t(Pr, Tp, Qr, Kt, hd, nv, scale);
                rows_x_t(dP, Tp, Or, Vt, hd, nv, 1.0f);
                /* dS = P * (dP - rowsum(P*dP)) * scale; rows past nr are 0 */
                for (int r = 0; r < ATT_R; r++) {
                    float *pr = Pr + (size_t)r * Tp, *ds = dS + (size_t)r * Tp;
                    const float *dp = dP + (size_t)r * Tp;
                    if (r >= nr) {
                        memset(pr, 0, (size_t)nv * VL * sizeof(float));
                        memset(ds, 0, (size_t)nv * VL * sizeof(float));
                        continue;
                    }
                    const int i = i0 + r, nvi = i / VL + 1;
                    float M = st[2 * i], inv = st[2 * i + 1];
                    softmax_row(pr, i, nv, &M, &inv, 1);
                    vf dot = vzero();
                    for (int j = 0; j < nvi * VL; j += VL) dot = vfma(vld(pr + j), vld(dp + j), dot);
                    const vf d = v1(vhsum(dot)), sc = v1(scale);
                    for (int j = 0; j < nvi * VL; j += VL)
                        vst(ds + j, vmul(vmul(vld(pr + j), vsub(vld(dp + j), d)), sc));
                    for (int j = nvi * VL; j < nv * VL; j++) ds[j] = 0.0f;
                }
                /* dQ = dS K (written); dK += dS^T Q; dV += P^T dO */
                rows_x_m(dq + qo + (size_t)i0 * Qd, Qd, nr, dS, Tp, kb, KVd, hd, nj);
                acc_xt(dKt, Tp, Qr, dS, hd, nv);
                acc_xt(dVt, Tp, Or, Pr, hd, nv);
            }
        }
        transpose_out(dk + (size_t)b * T * KVd + (size_t)kvh * hd, KVd, dKt, T, Tp, hd);
        transpose_out(dv + (size_t)b * T * KVd + (size_t)kvh * hd, KVd, dVt, T, Tp, hd);
    }
}

/* ---- attention, reference twin: full T x T sgemm per head, scalar softmax -------------------------------------------------------- */

size_t tr_attention_scratch_ref(int T, int nt) { return (size_t)(nt < 1 ? 1 : nt) * T * T; }

void tr_attention_fwd_ref(float *out, float *P, const float *q, const float *k, const float *v,
                      int B, int T, int H, int KVH, int hd, float *scratch, int nt) {
    (void)scratch;
    const int Qd = H * hd, KVd = KVH * hd, group = H / KVH, jobs = B * H;
    const float scale = 1.0f / sqrtf((float)hd);
    openblas_set_num_threads(1);
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1) if (nt > 1 && jobs > 1)
    for (int job = 0; job < jobs; job++) {
        const int b = job / H, h = job % H, kvh = h / group;
        const float *qb = q + (size_t)b * T * Qd + (size_t)h * hd;
        const float *kb = k + (size_t)b * T * KVd + (size_t)kvh * hd;
        const float *vb = v + (size_t)b * T * KVd + (size_t)kvh * hd;
        float *Pb = P + (size_t)job * T * T;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, scale, qb, Qd, kb, KVd,
                    0.0f, Pb, T);
        for (int i = 0; i < T; i++) {
            float *row = Pb + (size_t)i * T, mx = row[0];
            for (int j = 1; j <= i; j++) mx = row[j] > mx ? row[j] : mx;
            double sum = 0;
            for (int j = 0; j <= i; j++) {
                row[j] = expf(row[j] - mx);
                sum += row[j];
            }
            const float inv = (float)(1.0 / sum);
            for (int j = 0; j <= i; j++) row[j] *= inv;
            for (int j = i + 1; j < T; j++) row[j] = 0.0f;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, 1.0f, Pb, T, vb, KVd,
                    0.0f, out + (size_t)b * T * Qd + (size_t)h * hd, Qd);
    }
}

void tr_attention_bwd_ref(float *dq, float *dk, float *dv, const float *dout, const float *P,
                      const float *q, const float *k, const float *v, int B, int T, int H,
                      int KVH, int hd, float *scratch, int nt) {
    const int Qd = H * hd, KVd = KVH * hd, group = H / KVH, jobs = B * KVH;
    const float scale = 1.0f / sqrtf((float)hd);
    openblas_set_num_threads(1);
    /* one job per (batch, kv head): the heads sharing it add into dk/dv in order */
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1) if (nt > 1 && jobs > 1)
    for (int job = 0; job < jobs; job++) {
        const int b = job / KVH, kvh = job % KVH;
        float *dP = scratch + (size_t)omp_get_thread_num() * T * T;
        const float *kb = k + (size_t)b * T * KVd + (size_t)kvh * hd;
        const float *vb = v + (size_t)b * T * KVd + (size_t)kvh * hd;
        float *dkb = dk + (size_t)b * T * KVd + (size_t)kvh * hd;
        float *dvb = dv + (size_t)b * T * KVd + (size_t)kvh * hd;
        for (int t = 0; t < T; t++) {
            memset(dkb + (size_t)t * KVd, 0, (size_t)hd * sizeof(float));
            memset(dvb + (size_t)t * KVd, 0, (size_t)hd * sizeof(float));
        }
        for (int h = kvh * group; h < (kvh + 1) * group; h++) {
            const size_t qo = (size_t)b * T * Qd + (size_t)h * hd;
            const float *Pb = P + ((size_t)b * H + h) * T * T;
            /* dP = dO V^T; dV += P^T dO */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, 1.0f, dout + qo, Qd, vb,
                        KVd, 0.0f, dP, T);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, 1.0f, Pb, T, dout + qo,
                        Qd, 1.0f, dvb, KVd);
            /* dS = P * (dP - rowsum(P*dP)) * scale */
            for (int i = 0; i < T; i++) {
                const float *pr = Pb + (size_t)i * T;
                float *dr = dP + (size_t)i * T;
                double dot = 0;
                for (int j = 0; j <= i; j++) dot += (double)pr[j] * dr[j];
                const float d = (float)dot;
                for (int j = 0; j <= i; j++) dr[j] = pr[j] * (dr[j] - d) * scale;
                for (int j = i + 1; j < T; j++) dr[j] = 0.0f;
            }
            /* dQ = dS K; dK += dS^T Q */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, 1.0f, dP, T, kb, KVd,
                        0.0f, dq + qo, Qd);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, 1.0f, dP, T, q + qo, Qd,
                        1.0f, dkb, KVd);
        }
    }
}

/* ---- AdamW ------------------------------------------------------------ */

/* The update of torch.optim.AdamW's single-tensor path over [0, n), in the
 * scalar code's operation order (no FMA): the same bits as the plain loop. */
void tr_adamw_update(float *p, const float *g, float *m, float *v, size_t n, float keep,
                     float b1, float b2, float bc2_sqrt, float step_size, float eps) {
    const vf kv = v1(keep), b1v = v1(b1), b2v = v1(b2), c1 = v1(1.0f - b1), c2 = v1(1.0f - b2),
             bcv = v1(bc2_sqrt), ev = v1(eps), sv = v1(-step_size);
    for (size_t i = 0; i < n; i += VL) {
        const vm mk = vmask_n(n - i < VL ? (int)(n - i) : VL);
        const vf gv = vldm(g + i, mk);
        const vf mv = vadd(vmul(vldm(m + i, mk), b1v), vmul(gv, c1));
        const vf vv = vadd(vmul(vldm(v + i, mk), b2v), vmul(vmul(gv, gv), c2));
        const vf denom = vadd(vdiv(vsqrt(vv), bcv), ev);
        const vf pv = vmul(vldm(p + i, mk), kv);
        vstm(m + i, mv, mk);
        vstm(v + i, vv, mk);
        vstm(p + i, vadd(pv, vmul(sv, vdiv(mv, denom))), mk);
    }
}

/* sum of squares over [0, n) in double (lanes, then across: a fixed order) */
double tr_sumsq(const float *x, size_t n) {
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return s;
}

/* ---- SwiGLU ----------------------------------------------------------- */

/* sigmoid(g) = 1 / (1 + exp(-g)) */
static inline vf vsigmoid(vf g) {
    return vdiv(v1(1.0f), vadd(v1(1.0f), vexp(vsub(vzero(), g))));
}

#define EW_MIN 32768 /* element-wise loops shorter than this run on one thread */

/* [0, n) split into nt parts of whole vectors: part t is [*i0, *i1) */
static void ew_part(size_t n, int t, int nt, size_t *i0, size_t *i1) {
    const size_t nv = (n + VL - 1) / VL, per = (nv + nt - 1) / nt;
    *i0 = (size_t)t * per * VL < n ? (size_t)t * per * VL : n;
    *i1 = (size_t)(t + 1) * per * VL < n ? (size_t)(t + 1) * per * VL : n;
}

void tr_swiglu_fwd(float *h, const float *g, const float *u, size_t n, int nt) {
    if (n < EW_MIN) nt = 1;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        size_t i0, i1;
        ew_part(n, omp_get_thread_num(), omp_get_num_threads(), &i0, &i1);
        size_t i = i0;
        for (; i + VL <= i1; i += VL) {
            const vf gv = vld(g + i);
            vst(h + i, vmul(vmul(gv, vsigmoid(gv)), vld(u + i)));
        }
        if (i < i1) {
            const vm m = vmask_n((int)(i1 - i));
            const vf gv = vldm(g + i, m);
            vstm(h + i, vmul(vmul(gv, vsigmoid(gv)), vldm(u + i, m)), m);
        }
    }
}

void tr_swiglu_bwd(float *dg, float *du, const float *dh, const float *g, const float *u,
                   size_t n, int nt) {
    if (n < EW_MIN) nt = 1;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        size_t i0, i1;
        ew_part(n, omp_get_thread_num(), omp_get_num_threads(), &i0, &i1);
        for (size_t i = i0; i < i1; i += VL) {
            const vm m = vmask_n(i1 - i < VL ? (int)(i1 - i) : VL);
            const vf gv = vldm(g + i, m), uv = vldm(u + i, m), d = vldm(dh + i, m);
            const vf sg = vsigmoid(gv);
            /* dg = d u s (1 + g (1 - s)), du = d g s */
            const vf dgv = vmul(vmul(vmul(d, uv), sg), vfma(gv, vsub(v1(1.0f), sg), v1(1.0f)));
            vstm(dg + i, dgv, m);
            vstm(du + i, vmul(vmul(d, gv), sg), m);
        }
    }
}

void tr_swiglu_fwd_ref(float *h, const float *g, const float *u, size_t n) {
    for (size_t i = 0; i < n; i++) h[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void tr_swiglu_bwd_ref(float *dg, float *du, const float *dh, const float *g, const float *u,
                       size_t n) {
    for (size_t i = 0; i < n; i++) {
        const float s = 1.0f / (1.0f + expf(-g[i])), d = dh[i];
        dg[i] = d * u[i] * s * (1.0f + g[i] * (1.0f - s));
        du[i] = d * g[i] * s;
    }
}

/* ---- cross-entropy ---------------------------------------------------- */

/* row [V] -> exp(row - max) in place; returns max, *sum = sum of the exps
 * (float lanes, then across lanes: a fixed order) */
static float exp_row(float *row, int V, float *sum) {
    vf mx = v1(-INFINITY);
    int j = 0;
    for (; j + VL <= V; j += VL) mx = vmax(mx, vld(row + j));
    const vm mt = vmask_n(V - j);
    if (j < V) mx = vmax(mx, vsel(mt, vldm(row + j, mt), v1(-INFINITY)));
    const float M = vhmax(mx);
    const vf Mv = v1(M);
    vf s0 = vzero(), s1 = vzero();
    for (j = 0; j + 2 * VL <= V; j += 2 * VL) {
        const vf e0 = vexp(vsub(vld(row + j), Mv)), e1 = vexp(vsub(vld(row + j + VL), Mv));
        vst(row + j, e0);
        vst(row + j + VL, e1);
        s0 = vadd(s0, e0);
        s1 = vadd(s1, e1);
    }
    for (; j < V; j += VL) {
        const vm m = vmask_n(V - j < VL ? V - j : VL);
        const vf e = vsel(m, vexp(vsub(vldm(row + j, m), Mv)), vzero());
        vstm(row + j, e, m);
        s0 = vadd(s0, e);
    }
    *sum = vhsum(vadd(s0, s1));
    return M;
}

static void scale_row(float *row, int V, float s) {
    const vf sv = v1(s);
    int j = 0;
    for (; j + VL <= V; j += VL) vst(row + j, vmul(vld(row + j), sv));
    if (j < V) {
        const vm m = vmask_n(V - j);
        vstm(row + j, vmul(vldm(row + j, m), sv), m);
    }
}

static int xent_sum(const float *losses, const int32_t *targets, int N, double *sum) {
    double acc = 0;
    int count = 0;
    for (int i = 0; i < N; i++)
        if (targets[i] >= 0) {
            acc += losses[i];
            count++;
        }
    *sum = acc;
    return count;
}

int tr_xent_fwd(float *logits, float *losses, const int32_t *targets, int N, int V, double *sum,
                int nt) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && (long)N * V > 65536)
    for (int i = 0; i < N; i++) {
        float *row = logits + (size_t)i * V;
        const float lt = targets[i] >= 0 ? row[targets[i]] : 0.0f;
        float s;
        const float mx = exp_row(row, V, &s);
        scale_row(row, V, (float)(1.0 / s));
        losses[i] = targets[i] >= 0 ? (float)(log(s) - ((double)lt - mx)) : 0.0f;
    }
    return xent_sum(losses, targets, N, sum);
}

int tr_xent_fwd_grad(float *logits, float *losses, const int32_t *targets, int N, int V,
                     double *sum, int nt) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && (long)N * V > 65536)
    for (int i = 0; i < N; i++) {
        float *row = logits + (size_t)i * V;
        if (targets[i] < 0) {
            memset(row, 0, (size_t)V * sizeof(float));
            losses[i] = 0.0f;
            continue;
        }
        const float lt = row[targets[i]];
        float s;
        const float mx = exp_row(row, V, &s);
        scale_row(row, V, (float)(1.0 / s));
        row[targets[i]] -= 1.0f;
        losses[i] = (float)(log(s) - ((double)lt - mx));
    }
    return xent_sum(losses, targets, N, sum);
}

void tr_xent_bwd(float *probs, const int32_t *targets, int N, int V, float scale, int nt) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && (long)N * V > 65536)
    for (int i = 0; i < N; i++) {
        float *row = probs + (size_t)i * V;
        if (targets[i] < 0) {
            memset(row, 0, (size_t)V * sizeof(float));
            continue;
        }
        scale_row(row, V, scale);
        row[targets[i]] -= scale;
    }
}

int tr_xent_fwd_ref(float *logits, float *losses, const int32_t *targets, int N, int V,
                    double *sum) {
    for (int i = 0; i < N; i++) {
        float *row = logits + (size_t)i * V;
        float mx = row[0];
        for (int j = 1; j < V; j++) mx = row[j] > mx ? row[j] : mx;
        const float lt = targets[i] >= 0 ? row[targets[i]] : 0.0f;
        double s = 0;
        for (int j = 0; j < V; j++) {
            row[j] = expf(row[j] - mx);
            s += row[j];
        }
        const float inv = (float)(1.0 / s);
        for (int j = 0; j < V; j++) row[j] *= inv;
        losses[i] = targets[i] >= 0 ? (float)(log(s) - ((double)lt - mx)) : 0.0f;
    }
    return xent_sum(losses, targets, N, sum);
}
