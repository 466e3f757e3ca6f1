/* test_grad.c — finite-difference checks of every training op's backward
 * (core/train_ops.c) and of the whole model's gradient.
 *
 * Each op has a double-precision reference forward written here (not the
 * code under test). The scalar checked is L = sum(out * R) for a fixed
 * random R (cross-entropy: its mean loss); central differences of L in
 * double (h = 1e-5) are compared with the analytic f32 gradients from core:
 * max |analytic - numeric| <= 1e-3 * max |numeric| per tensor. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "train.h"

#define FD_H 1e-5
#define TOL 1e-3

static uint64_t rng_s = 12345;
static double urand(void) { /* [-1, 1) */
    rng_s = rng_s * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng_s >> 11) / 4503599627370496.0 - 1.0;
}
static void fill(float *f, double *d, size_t n, double scale) {
    for (size_t i = 0; i < n; i++) {
        f[i] = (float)(urand() * scale);
        if (d) d[i] = f[i];
    }
}
static double *dalloc(size_t n) { return calloc(n ? n : 1, sizeof(double)); }
static float *falloc(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

/* numeric gradient of loss(ctx) w.r.t. x[0..n) (x is one of ctx's inputs) */
typedef double (*loss_fn)(void *ctx);
static void numeric(loss_fn f, void *ctx, double *x, size_t n, double *g) {
    for (size_t i = 0; i < n; i++) {
        const double x0 = x[i];
        x[i] = x0 + FD_H;
        const double lp = f(ctx);
        x[i] = x0 - FD_H;
        const double lm = f(ctx);
        x[i] = x0;
        g[i] = (lp - lm) / (2 * FD_H);
    }
}

static void check(const char *what, const float *analytic, const double *num, size_t n) {
    double mx = 0, d = 0;
    for (size_t i = 0; i < n; i++) mx = fmax(mx, fabs(num[i]));
    for (size_t i = 0; i < n; i++) d = fmax(d, fabs(analytic[i] - num[i]));
    cr_expect(mx > 0, "%s: numeric gradient is all zero", what);
    cr_expect(d <= TOL * mx, "%s: max |analytic - numeric| %.3g vs max |g| %.3g (rel %.3g)", what,
              d, mx, d / mx);
    cr_log_info("%s: rel %.3g", what, d / mx);
}

static double dot_r(const double *out, const double *R, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += out[i] * R[i];
    return s;
}

/* ---- double references ------------------------------------------------ */

static void ref_rmsnorm(double *out, const double *x, const double *w, int N, int E, double eps) {
    for (int i = 0; i < N; i++) {
        double ss = 0;
        for (int j = 0; j < E; j++) ss += x[i * E + j] * x[i * E + j];
        const double r = 1.0 / sqrt(ss / E + eps);
        for (int j = 0; j < E; j++) out[i * E + j] = x[i * E + j] * r * w[j];
    }
}

static void ref_matmul(double *Y, const double *X, const double *W, int N, int I, int O) {
    for (int i = 0; i < N; i++)
        for (int o = 0; o < O; o++) {
            double s = 0;
            for (int k = 0; k < I; k++) s += X[i * I + k] * W[o * I + k];
            Y[i * O + o] = s;
        }
}

static void ref_rope(double *x, int N, int T, int nh, int hd, double base, int mode) {
    const int half = hd / 2;
    for (int r = 0; r < N; r++)
        for (int h = 0; h < nh; h++) {
            double *xh = x + (size_t)r * nh * hd + h * hd;
            for (int i = 0; i < half; i++) {
                const double a = (r % T) * pow(base, -2.0 * i / hd), c = cos(a), s = sin(a);
                const int i0 = mode == OPS_ROPE_NEOX ? i : 2 * i;
                const int i1 = mode == OPS_ROPE_NEOX ? i + half : 2 * i + 1;
                const double x0 = xh[i0], x1 = xh[i1];
                xh[i0] = x0 * c - x1 * s;
                xh[i1] = x0 * s + x1 * c;
            }
        }
}

static void ref_attention(double *out, const double *q, const double *k, const double *v, int B,
                          int T, int H, int KVH, int hd) {
    const int Qd = H * hd, KVd = KVH * hd;
    double *s = dalloc(T);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            const int kh = h / (H / KVH);
            for (int i = 0; i < T; i++) {
                const double *qi = q + (size_t)(b * T + i) * Qd + h * hd;
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j <= i; j++) {
                    const double *kj = k + (size_t)(b * T + j) * KVd + kh * hd;
                    double d = 0;
                    for (int c = 0; c < hd; c++) d += qi[c] * kj[c];
                    s[j] = d / sqrt((double)hd);
                    mx = fmax(mx, s[j]);
                }
                for (int j = 0; j <= i; j++) sum += (s[j] = exp(s[j] - mx));
                double *oi = out + (size_t)(b * T + i) * Qd + h * hd;
                for (int c = 0; c < hd; c++) {
                    double acc = 0;
                    for (int j = 0; j <= i; j++) acc += s[j] / sum * v[(size_t)(b * T + j) * KVd + kh * hd + c];
                    oi[c] = acc;
                }
            }
        }
    free(s);
}

static double silu(double g) { return g / (1 + exp(-g)); }

static double ref_xent(const double *logits, const int32_t *t, int N, int V) {
    double sum = 0;
    int cnt = 0;
    for (int i = 0; i < N; i++) {
        if (t[i] < 0) continue;
        double mx = -INFINITY, s = 0;
        for (int j = 0; j < V; j++) mx = fmax(mx, logits[i * V + j]);
        for (int j = 0; j < V; j++) s += exp(logits[i * V + j] - mx);
        sum += log(s) + mx - logits[i * V + t[i]];
        cnt++;
    }
    return sum / cnt;
}

/* ---- per-op checks ---------------------------------------------------- */

typedef struct { double *x, *w, *R; const int32_t *ids; int N, E, V; } emb_ctx;
static double emb_loss(void *p) {
    emb_ctx *c = p;
    double s = 0;
    for (int i = 0; i < c->N; i++)
        for (int j = 0; j < c->E; j++) s += c->w[c->ids[i] * c->E + j] * c->R[i * c->E + j];
    return s;
}

Test(grad, embedding) {
    const int N = 7, E = 5, V = 6;
    const int32_t ids[7] = {3, 1, 3, 0, 5, 3, 1}; /* repeats add up */
    float *tf = falloc(V * E), *R = falloc(N * E), *dt = falloc(V * E), *out = falloc(N * E);
    double *td = dalloc(V * E), *Rd = dalloc(N * E), *g = dalloc(V * E);
    fill(tf, td, V * E, 1);
    fill(R, Rd, N * E, 1);
    tr_embedding_fwd(out, tf, ids, N, E);
    for (int i = 0; i < N * E; i++) cr_assert_eq(out[i], tf[ids[i / E] * E + i % E]);
    tr_embedding_bwd(dt, R, ids, N, E);
    emb_ctx c = {.w = td, .R = Rd, .ids = ids, .N = N, .E = E, .V = V};
    numeric(emb_loss, &c, td, V * E, g);
    check("embedding dtable", dt, g, V * E);
    free(tf); free(R); free(dt); free(out); free(td); free(Rd); free(g);
}

typedef struct { double *x, *w, *R, *out; int N, E; } rms_ctx;
static double rms_loss(void *p) {
    rms_ctx *c = p;
    ref_rmsnorm(c->out, c->x, c->w, c->N, c->E, 1e-5);
    return dot_r(c->out, c->R, (size_t)c->N * c->E);
}

Test(grad, rmsnorm) {
    const int N = 5, E = 12;
    float *x = falloc(N * E), *w = falloc(E), *R = falloc(N * E), *out = falloc(N * E),
          *rstd = falloc(N), *dx = falloc(N * E), *dw = falloc(E);
    double *xd = dalloc(N * E), *wd = dalloc(E), *Rd = dalloc(N * E), *od = dalloc(N * E),
           *gx = dalloc(N * E), *gw = dalloc(E);
    fill(x, xd, N * E, 2);
    fill(w, wd, E, 1);
    fill(R, Rd, N * E, 1);
    tr_rmsnorm_fwd(out, rstd, x, w, N, E, 1e-5f, 2);
    ref_rmsnorm(od, xd, wd, N, E, 1e-5);
    for (int i = 0; i < N * E; i++) cr_assert(fabs(out[i] - od[i]) < 1e-5, "fwd %d", i);
    tr_rmsnorm_bwd_acc(dx, dw, R, x, w, rstd, N, E, 2);
    rms_ctx c = {xd, wd, Rd, od, N, E};
    numeric(rms_loss, &c, xd, N * E, gx);
    numeric(rms_loss, &c, wd, E, gw);
    check("rmsnorm dx", dx, gx, N * E);
    check("rmsnorm dw", dw, gw, E);
    free(x); free(w); free(R); free(out); free(rstd); free(dx); free(dw);
    free(xd); free(wd); free(Rd); free(od); free(gx); free(gw);
}

typedef struct { double *X, *W, *R, *Y; int N, I, O; } mm_ctx;
static double mm_loss(void *p) {
    mm_ctx *c = p;
    ref_matmul(c->Y, c->X, c->W, c->N, c->I, c->O);
    return dot_r(c->Y, c->R, (size_t)c->N * c->O);
}

Test(grad, matmul) {
    /* one small and one large enough to be split over threads */
    const int shapes[2][3] = {{3, 5, 4}, {70, 130, 140}};
    for (int s = 0; s < 2; s++) {
        const int N = shapes[s][0], I = shapes[s][1], O = shapes[s][2];
        float *X = falloc(N * I), *W = falloc(O * I), *R = falloc(N * O), *Y = falloc(N * O),
              *dX = falloc(N * I), *dW = falloc(O * I);
        double *Xd = dalloc(N * I), *Wd = dalloc(O * I), *Rd = dalloc(N * O), *Yd = dalloc(N * O),
               *gX = dalloc(N * I), *gW = dalloc(O * I);
        fill(X, Xd, N * I, 1);
        fill(W, Wd, O * I, 1);
        fill(R, Rd, N * O, 1);
        tr_matmul_fwd(Y, X, W, N, I, O, 2);
        ref_matmul(Yd, Xd, Wd, N, I, O);
        for (int i = 0; i < N * O; i++) cr_assert(fabs(Y[i] - Yd[i]) < 1e-4, "fwd %d", i);
        for (int i = 0; i < N * I; i++) dX[i] = 100.0f; /* overwritten (acc = 0) */
        tr_matmul_bwd(dX, 0, dW, R, X, W, N, I, O, 2);
        mm_ctx c = {Xd, Wd, Rd, Yd, N, I, O};
        if (s == 0) {
            numeric(mm_loss, &c, Xd, N * I, gX);
            numeric(mm_loss, &c, Wd, O * I, gW);
        } else { /* L is linear in each: the exact gradients are R W and R^T X */
            for (int i = 0; i < N; i++)
                for (int k = 0; k < I; k++) {
                    double a = 0;
                    for (int o = 0; o < O; o++) a += Rd[i * O + o] * Wd[o * I + k];
                    gX[i * I + k] = a;
                }
            for (int o = 0; o < O; o++)
                for (int k = 0; k < I; k++) {
                    double a = 0;
                    for (int i = 0; i < N; i++) a += Rd[i * O + o] * Xd[i * I + k];
                    gW[o * I + k] = a;
                }
        }
        check(s ? "matmul dX (threaded)" : "matmul dX", dX, gX, N * I);
        check(s ? "matmul dW (threaded)" : "matmul dW", dW, gW, O * I);
        /* acc = 1 adds */
        float *dX2 = falloc(N * I);
        for (int i = 0; i < N * I; i++) dX2[i] = 1.0f;
        tr_matmul_bwd(dX2, 1, NULL, R, X, W, N, I, O, 2);
        for (int i = 0; i < N * I; i++) cr_assert(fabsf(dX2[i] - 1.0f - dX[i]) < 1e-4f);
        free(dX2);
        free(X); free(W); free(R); free(Y); free(dX); free(dW);
        free(Xd); free(Wd); free(Rd); free(Yd); free(gX); free(gW);
    }
}

typedef struct { double *x, *tmp, *R; int N, T, nh, hd, mode; } rope_ctx;
static double rope_loss(void *p) {
    rope_ctx *c = p;
    const size_t n = (size_t)c->N * c->nh * c->hd;
    memcpy(c->tmp, c->x, n * sizeof(double));
    ref_rope(c->tmp, c->N, c->T, c->nh, c->hd, 10000.0, c->mode);
    return dot_r(c->tmp, c->R, n);
}

Test(grad, rope) {
    const int B = 2, T = 6, nh = 3, hd = 8, N = B * T, n = N * nh * hd;
    for (int mode = 0; mode <= OPS_ROPE_NEOX; mode += OPS_ROPE_NEOX) {
        float *x = falloc(n), *R = falloc(n), *cs = falloc(T * hd / 2), *sn = falloc(T * hd / 2);
        double *xd = dalloc(n), *Rd = dalloc(n), *tmp = dalloc(n), *g = dalloc(n);
        fill(x, xd, n, 1);
        fill(R, Rd, n, 1);
        tr_rope_table(cs, sn, T, hd, 10000.0f);
        tr_rope_fwd(x, N, T, nh, hd, cs, sn, mode, 2);
        memcpy(tmp, xd, n * sizeof(double));
        ref_rope(tmp, N, T, nh, hd, 10000.0, mode);
        for (int i = 0; i < n; i++) cr_assert(fabs(x[i] - tmp[i]) < 1e-5, "fwd %d", i);
        /* same as the inference kernel (ops_rope_ref) row by row */
        float *y = falloc(n);
        for (int i = 0; i < n; i++) y[i] = (float)xd[i];
        for (int r = 0; r < N; r++) ops_rope_ref(y + (size_t)r * nh * hd, nh, hd, r % T, 10000.0f, mode);
        for (int i = 0; i < n; i++) cr_assert(fabsf(x[i] - y[i]) < 1e-5f, "vs ops_rope %d", i);
        memcpy(x, R, n * sizeof(float));
        tr_rope_bwd(x, N, T, nh, hd, cs, sn, mode, 2);
        rope_ctx c = {xd, tmp, Rd, N, T, nh, hd, mode};
        numeric(rope_loss, &c, xd, n, g);
        check(mode ? "rope dx (neox)" : "rope dx (norm)", x, g, n);
        free(x); free(R); free(cs); free(sn); free(y); free(xd); free(Rd); free(tmp); free(g);
    }
}

typedef struct { double *q, *k, *v, *out, *R; int B, T, H, KVH, hd; } att_ctx;
static double att_loss(void *p) {
    att_ctx *c = p;
    ref_attention(c->out, c->q, c->k, c->v, c->B, c->T, c->H, c->KVH, c->hd);
    return dot_r(c->out, c->R, (size_t)c->B * c->T * c->H * c->hd);
}

static void attention_case(int B, int T, int H, int KVH, int hd) {
    const int nq = B * T * H * hd, nk = B * T * KVH * hd;
    float *q = falloc(nq), *k = falloc(nk), *v = falloc(nk), *R = falloc(nq), *out = falloc(nq),
          *P = falloc(B * H * T * T), *sc = falloc(tr_attention_scratch(T, hd, 2)), *dq = falloc(nq),
          *dk = falloc(nk), *dv = falloc(nk);
    double *qd = dalloc(nq), *kd = dalloc(nk), *vd = dalloc(nk), *Rd = dalloc(nq), *od = dalloc(nq),
           *gq = dalloc(nq), *gk = dalloc(nk), *gv = dalloc(nk);
    fill(q, qd, nq, 1.5);
    fill(k, kd, nk, 1.5);
    fill(v, vd, nk, 1);
    fill(R, Rd, nq, 1);
    tr_attention_fwd(out, P, q, k, v, B, T, H, KVH, hd, sc, 2);
    ref_attention(od, qd, kd, vd, B, T, H, KVH, hd);
    for (int i = 0; i < nq; i++) cr_assert(fabs(out[i] - od[i]) < 1e-5, "fwd %d", i);
    for (int i = 0; i < nk; i++) dk[i] = dv[i] = 7.0f; /* overwritten */
    tr_attention_bwd(dq, dk, dv, R, P, q, k, v, B, T, H, KVH, hd, sc, 2);
    att_ctx c = {qd, kd, vd, od, Rd, B, T, H, KVH, hd};
    numeric(att_loss, &c, qd, nq, gq);
    numeric(att_loss, &c, kd, nk, gk);
    numeric(att_loss, &c, vd, nk, gv);
    check("attention dq", dq, gq, nq);
    check("attention dk", dk, gk, nk);
    check("attention dv", dv, gv, nk);
    free(q); free(k); free(v); free(R); free(out); free(P); free(sc); free(dq); free(dk); free(dv);
    free(qd); free(kd); free(vd); free(Rd); free(od); free(gq); free(gk); free(gv);
}

Test(grad, attention) { attention_case(2, 5, 4, 2, 4); }
/* more rows than one vector (16 lanes) and not a multiple of the 4-row blocks */
Test(grad, attention_long) { attention_case(1, 21, 4, 2, 6); }

typedef struct { double *g, *u, *R; int n; } sw_ctx;
static double sw_loss(void *p) {
    sw_ctx *c = p;
    double s = 0;
    for (int i = 0; i < c->n; i++) s += silu(c->g[i]) * c->u[i] * c->R[i];
    return s;
}

Test(grad, swiglu) {
    const int n = 40;
    float *g = falloc(n), *u = falloc(n), *R = falloc(n), *h = falloc(n), *dg = falloc(n),
          *du = falloc(n);
    double *gd = dalloc(n), *ud = dalloc(n), *Rd = dalloc(n), *ng = dalloc(n), *nu = dalloc(n);
    fill(g, gd, n, 4);
    fill(u, ud, n, 2);
    fill(R, Rd, n, 1);
    tr_swiglu_fwd(h, g, u, n, 2);
    for (int i = 0; i < n; i++) cr_assert(fabs(h[i] - silu(gd[i]) * ud[i]) < 1e-5);
    tr_swiglu_bwd(dg, du, R, g, u, n, 2);
    sw_ctx c = {gd, ud, Rd, n};
    numeric(sw_loss, &c, gd, n, ng);
    numeric(sw_loss, &c, ud, n, nu);
    check("swiglu dg", dg, ng, n);
    check("swiglu du", du, nu, n);
    free(g); free(u); free(R); free(h); free(dg); free(du); free(gd); free(ud); free(Rd); free(ng); free(nu);
}

typedef struct { double *l; const int32_t *t; int N, V; } xe_ctx;
static double xe_loss(void *p) {
    xe_ctx *c = p;
    return ref_xent(c->l, c->t, c->N, c->V);
}

Test(grad, cross_entropy) {
    const int N = 6, V = 11;
    const int32_t t[6] = {3, 0, -1, 10, 3, 7}; /* one ignored row */
    float *l = falloc(N * V), *losses = falloc(N);
    double *ld = dalloc(N * V), *g = dalloc(N * V);
    fill(l, ld, N * V, 3);
    double sum;
    const int cnt = tr_xent_fwd(l, losses, t, N, V, &sum, 2);
    cr_assert_eq(cnt, 5);
    xe_ctx c = {ld, t, N, V};
    const double want = ref_xent(ld, t, N, V);
    cr_expect(fabs(sum / cnt - want) < 1e-6 * want, "loss %.9g vs %.9g", sum / cnt, want);
    for (int i = 0; i < N; i++) { /* rows are probabilities now */
        double s = 0;
        for (int j = 0; j < V; j++) s += l[i * V + j];
        cr_expect(fabs(s - 1) < 1e-6);
    }
    tr_xent_bwd(l, t, N, V, 1.0f / cnt, 2);
    numeric(xe_loss, &c, ld, N * V, g);
    check("cross-entropy dlogits", l, g, N * V);
    for (int j = 0; j < V; j++) cr_expect_eq(l[2 * V + j], 0.0f, "ignored row has no gradient");
    free(l); free(losses); free(ld); free(g);
}

/* ---- whole model ------------------------------------------------------ */

typedef struct {
    const tr_model *m;
    double *p; /* the parameters, double */
    const int32_t *x, *y;
    int B, T;
    float drop; uint64_t key; /* dropout, with the core's masks */
} model_ctx;

/* the whole forward in double, composed from the references above */
static double model_loss(void *pv) {
    model_ctx *c = pv;
    const tr_model *m = c->m;
    const tr_config *cf = &m->cfg;
    const int N = c->B * c->T, E = cf->dim, F = cf->ffn, V = cf->vocab, Q = m->q_dim,
              KV = m->kv_dim, hd = m->head_dim;
#define PT(i) (c->p + m->tensors[i].offset)
    double *x = dalloc(N * E), *xn = dalloc(N * E), *q = dalloc(N * Q), *k = dalloc(N * KV),
           *v = dalloc(N * KV), *att = dalloc(N * Q), *o = dalloc(N * E), *g = dalloc(N * F),
           *u = dalloc(N * F), *lg = dalloc(N * V);
    for (int i = 0; i < N; i++)
        memcpy(x + i * E, PT(m->t_embd) + c->x[i] * E, E * sizeof(double));
    for (int l = 0; l < cf->n_layer; l++) {
        const int *tl = m->t_layer + l * TR_PER_LAYER;
        ref_rmsnorm(xn, x, PT(tl[TR_ATTN_NORM]), N, E, cf->eps);
        ref_matmul(q, xn, PT(tl[TR_WQ]), N, E, Q);
        ref_matmul(k, xn, PT(tl[TR_WK]), N, E, KV);
        ref_matmul(v, xn, PT(tl[TR_WV]), N, E, KV);
        ref_rope(q, N, c->T, cf->n_head, hd, cf->rope_base, cf->rope_mode);
        ref_rope(k, N, c->T, cf->n_kv_head, hd, cf->rope_base, cf->rope_mode);
        ref_attention(att, q, k, v, c->B, c->T, cf->n_head, cf->n_kv_head, hd);
        if (c->drop > 0)
            for (int i = 0; i < N * Q; i++) att[i] *= tr_dropout_scale(c->key, l, 0, (size_t)i, c->drop);
        ref_matmul(o, att, PT(tl[TR_WO]), N, Q, E);
        for (int i = 0; i < N * E; i++) x[i] += o[i];
        ref_rmsnorm(xn, x, PT(tl[TR_FFN_NORM]), N, E, cf->eps);
        ref_matmul(g, xn, PT(tl[TR_W_GATE]), N, E, F);
        ref_matmul(u, xn, PT(tl[TR_W_UP]), N, E, F);
        for (int i = 0; i < N * F; i++) g[i] = silu(g[i]) * u[i];
        if (c->drop > 0)
            for (int i = 0; i < N * F; i++) g[i] *= tr_dropout_scale(c->key, l, 1, (size_t)i, c->drop);
        ref_matmul(o, g, PT(tl[TR_W_DOWN]), N, F, E);
        for (int i = 0; i < N * E; i++) x[i] += o[i];
    }
    ref_rmsnorm(xn, x, PT(m->t_out_norm), N, E, cf->eps);
    ref_matmul(lg, xn, PT(m->t_out), N, E, V);
    const double loss = ref_xent(lg, c->y, N, V);
#undef PT
    free(x); free(xn); free(q); free(k); free(v); free(att); free(o); free(g); free(u); free(lg);
    return loss;
}

static void whole_model(int tied, int mode, float drop) {
    tr_config cf = {.dim = 16, .n_layer = 2, .n_head = 4, .n_kv_head = 2, .ffn = 24, .vocab = 32,
                    .seq_len = 8, .tied = tied, .rope_mode = mode};
    tr_model *m = NULL;
    av_err e = {0};
    cr_assert_eq(tr_model_new(&cf, &m, &e), 0, "%s", e.msg);
    tr_init_weights(m, 77);
    /* larger weights than 0.02 so every path carries a visible gradient */
    for (int i = 0; i < m->n_tensors; i++) {
        const tr_tensor *t = &m->tensors[i];
        for (size_t j = 0; j < t->n; j++)
            m->params[t->offset + j] = t->n_dims == 1 ? (float)(1 + 0.3 * urand())
                                                      : m->params[t->offset + j] * 15;
    }
    const int B = 2, T = 8;
    int32_t x[16], y[16];
    for (int i = 0; i < 16; i++) {
        x[i] = (int32_t)((urand() + 1) * 16) % 32;
        y[i] = (int32_t)((urand() + 1) * 16) % 32;
    }
    y[3] = -1;
    m->dropout = drop;
    m->dropout_key = 0x5eed;
    float loss;
    tr_zero_grad(m);
    cr_assert_eq(tr_forward(m, x, y, B, T, &loss, NULL, 2, &e), 0, "%s", e.msg);
    cr_assert_eq(tr_backward(m, 1.0f, 2, &e), 0, "%s", e.msg);
    double *pd = dalloc(m->n_params);
    for (size_t i = 0; i < m->n_params; i++) pd[i] = m->params[i];
    model_ctx c = {m, pd, x, y, B, T, drop, 0x5eed};
    const double ref = model_loss(&c);
    cr_expect(fabs(loss - ref) < 1e-5 * ref, "loss %.9g vs double %.9g", loss, ref);
    /* 6 random elements of every tensor */
    for (int ti = 0; ti < m->n_tensors; ti++) {
        const tr_tensor *t = &m->tensors[ti];
        float a[6];
        double num[6];
        for (int s = 0; s < 6; s++) {
            const size_t j = t->offset + (size_t)((urand() + 1) * 0.5 * t->n) % t->n;
            a[s] = m->grads[j];
            numeric(model_loss, &c, pd + j, 1, &num[s]);
        }
        char what[160];
        snprintf(what, sizeof what, "model %s (tied %d, rope %d, dropout %g)", t->name, tied, mode, drop);
        check(what, a, num, 6);
    }
    free(pd);
    tr_model_free(m);
}

Test(grad, whole_model_untied) { whole_model(0, OPS_ROPE_NORM, 0); }
Test(grad, whole_model_tied) { whole_model(1, OPS_ROPE_NORM, 0); }
Test(grad, whole_model_neox) { whole_model(0, OPS_ROPE_NEOX, 0); }
/* dropout: the double model applies the same masks; the gradient is that of the masked network */
Test(grad, whole_model_dropout) { whole_model(0, OPS_ROPE_NORM, 0.3f); }

/* masks: the drop rate is p, kept elements are scaled by 1/(1-p), and keys differ */
Test(grad, dropout_masks) {
    const float p = 0.25f;
    size_t dropped = 0, differ = 0, n = 200000;
    for (size_t i = 0; i < n; i++) {
        float s = tr_dropout_scale(7, 1, 0, i, p);
        cr_assert(s == 0.0f || s == 1.0f / (1.0f - p));
        dropped += s == 0.0f;
        differ += s != tr_dropout_scale(8, 1, 0, i, p) || s != tr_dropout_scale(7, 1, 1, i, p);
    }
    cr_expect(fabs((double)dropped / n - p) < 0.005, "drop rate %g", (double)dropped / n);
    cr_expect(differ > n / 4, "masks of other keys/sites differ (%zu)", differ);
    cr_expect_eq(tr_dropout_scale(7, 0, 0, 5, 0.0f), 1.0f);
}
