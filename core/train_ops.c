/* train_ops.c — forward and backward kernels of the training core (train.h).
 *
 * Every product is cblas_sgemm, run single-threaded inside OpenMP threads,
 * each thread on a slice of the output (one threading runtime: OpenBLAS's
 * pthreads spinning beside OpenMP's cost 10x on 2 cores, see ops.c). Every
 * reduction runs in a fixed order that does not depend on the thread count
 * except inside sgemm slices, so a run is bit-reproducible for a given
 * thread count. */
#include "train.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "ops.h"

/* C [M, N] = alpha op(A) op(B) + beta C, split over nt threads along the
 * larger of M and N (slices of 16). Small products run on one thread. */
static void mm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
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
        for (int j = 0; j < E; j++) d[j] += g[j];
    }
}

/* ---- RMSNorm ---------------------------------------------------------- */

void tr_rmsnorm_fwd(float *out, float *rstd, const float *x, const float *w, int N, int E,
                    float eps, int nt) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && (long)N * E > 32768)
    for (int i = 0; i < N; i++) {
        const float *xi = x + (size_t)i * E;
        float *oi = out + (size_t)i * E;
        double ss = 0;
        for (int j = 0; j < E; j++) ss += (double)xi[j] * xi[j];
        const float r = 1.0f / sqrtf((float)(ss / E) + eps);
        rstd[i] = r;
        for (int j = 0; j < E; j++) oi[j] = w[j] * (xi[j] * r);
    }
}

void tr_rmsnorm_bwd_acc(float *dx, float *dw, const float *dout, const float *x, const float *w,
                        const float *rstd, int N, int E, int nt) {
    const int par = nt > 1 && (long)N * E > 32768;
#pragma omp parallel num_threads(nt) if (par)
    {
#pragma omp for schedule(static)
        for (int i = 0; i < N; i++) {
            const float *xi = x + (size_t)i * E, *gi = dout + (size_t)i * E;
            float *di = dx + (size_t)i * E;
            const float r = rstd[i];
            double s = 0;
            for (int j = 0; j < E; j++) s += (double)gi[j] * w[j] * xi[j];
            const float c = (float)(s / E) * r * r * r;
            for (int j = 0; j < E; j++) di[j] += r * (gi[j] * w[j]) - c * xi[j];
        }
        /* dw over blocks of 16 columns, rows in order: independent of nt */
#pragma omp for schedule(static)
        for (int j0 = 0; j0 < E; j0 += 16) {
            const int j1 = j0 + 16 < E ? j0 + 16 : E;
            double acc[16] = {0};
            for (int i = 0; i < N; i++) {
                const float *xi = x + (size_t)i * E, *gi = dout + (size_t)i * E;
                const float r = rstd[i];
                for (int j = j0; j < j1; j++) acc[j - j0] += (double)(gi[j] * xi[j] * r);
            }
            for (int j = j0; j < j1; j++) dw[j] += (float)acc[j - j0];
        }
    }
}

/* ---- linear ----------------------------------------------------------- */

void tr_matmul_fwd(float *Y, const float *X, const float *W, int N, int In, int O, int nt) {
    mm(0, 1, N, O, In, 1.0f, X, In, W, In, 0.0f, Y, O, nt);
}

void tr_matmul_bwd(float *dX, int acc, float *dW, const float *dY, const float *X,
                   const float *W, int N, int In, int O, int nt) {
    if (dW) mm(1, 0, O, In, N, 1.0f, dY, O, X, In, 1.0f, dW, In, nt);
    if (dX) mm(0, 0, N, In, O, 1.0f, dY, O, W, In, acc ? 1.0f : 0.0f, dX, In, nt);
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

/* ---- attention -------------------------------------------------------- */

size_t tr_attention_scratch(int T, int nt) {
    return (size_t)(nt < 1 ? 1 : nt) * T * T;
}

void tr_attention_fwd(float *out, float *P, const float *q, const float *k, const float *v,
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

void tr_attention_bwd(float *dq, float *dk, float *dv, const float *dout, const float *P,
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

/* ---- SwiGLU ----------------------------------------------------------- */

void tr_swiglu_fwd(float *h, const float *g, const float *u, size_t n, int nt) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && n > 65536)
    for (size_t i = 0; i < n; i++) h[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void tr_swiglu_bwd(float *dg, float *du, const float *dh, const float *g, const float *u,
                   size_t n, int nt) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && n > 65536)
    for (size_t i = 0; i < n; i++) {
        const float s = 1.0f / (1.0f + expf(-g[i])), d = dh[i];
        dg[i] = d * u[i] * s * (1.0f + g[i] * (1.0f - s));
        du[i] = d * g[i] * s;
    }
}

/* ---- cross-entropy ---------------------------------------------------- */

int tr_xent_fwd(float *logits, float *losses, const int32_t *targets, int N, int V, double *sum,
                int nt) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && (long)N * V > 65536)
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

void tr_xent_bwd(float *probs, const int32_t *targets, int N, int V, float scale, int nt) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && (long)N * V > 65536)
    for (int i = 0; i < N; i++) {
        float *row = probs + (size_t)i * V;
        if (targets[i] < 0) {
            memset(row, 0, (size_t)V * sizeof(float));
            continue;
        }
        for (int j = 0; j < V; j++) row[j] *= scale;
        row[targets[i]] -= scale;
    }
}
