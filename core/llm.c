/* llm.c — Llama-family forward pass over weights viewed in an av_model.
 *
 * Numerics follow llama.cpp's `llama` graph: RMSNorm (eps from metadata),
 * RoPE NORM mode on the GGUF (Meta) weight layout, GQA with
 * n_head/n_head_kv query heads per KV head, scale 1/sqrt(head_dim), SwiGLU.
 * The KV cache is f32 and written in place: for a batch of n tokens the K
 * and V projections land directly in rows [pos, pos+n) of the cache. */
#include "llm.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

#define ATT_BLOCK 64 /* query rows per attention job: scores scratch is ATT_BLOCK x n_ctx */

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

struct llm_ctx {
    const llm *l;
    int n_ctx, n_batch;
    float *k_cache, *v_cache; /* [n_layer][n_ctx][n_kv*hd] */
    float *x, *xb, *q, *att;  /* [n_batch][n_embd] / [n_batch][n_head*hd] */
    float *hg, *hu;           /* [n_batch][n_ff] */
    float *scores;            /* [n_threads_max][ATT_BLOCK][n_ctx] */
    float *wscratch;          /* widened F16/BF16 weights for sgemm, or NULL */
    float *lora_t;            /* X A^T of a LoRA pair: [max(n_batch, n_scores)][rank_max], or NULL */
    llm_observer observe;     /* sees every product's input, or NULL */
    void *observe_ud;
    int n_scores;
};

/* ---- loading ---------------------------------------------------------- */

static int need_u32(const av_model *m, const char *name, const char *key, int *out, av_err *err) {
    uint64_t v;
    int rc = av_kvs_get_u64(&m->kv, key, &v);
    if (rc == AV_ENOTFOUND)
        return av_errf(err, AV_EFORMAT, "%s: missing metadata key '%s'", name, key);
    if (rc != 0)
        return av_errf(err, AV_EFORMAT, "%s: metadata '%s' is not a non-negative integer", name,
                       key);
    if (v == 0 || v > (1u << 24))
        return av_errf(err, AV_EFORMAT, "%s: metadata '%s' = %llu is out of range", name, key,
                       (unsigned long long)v);
    *out = (int)v;
    return 0;
}

/* Tensor `tname` as an f32 vector of n, or widened into *owned_at. */
static int get_norm(const av_model *m, const char *name, const char *tname, int64_t n,
                    const float **out, float **owned_at, av_err *err) {
    const av_tensor *t = av_model_find(m, tname);
    if (!t) return av_errf(err, AV_EFORMAT, "%s: missing tensor '%s'", name, tname);
    if (av_tensor_nelements(t) != n || t->n_dims != 1) {
        char s[96];
        av_shape_str(t, s, sizeof s);
        return av_errf(err, AV_EFORMAT, "%s: tensor '%s' has shape %s, expected [%lld]", name,
                       tname, s, (long long)n);
    }
    if (t->src_dtype == AV_F32) {
        *out = t->data;
        return 0;
    }
    if (t->src_dtype != AV_F16 && t->src_dtype != AV_BF16)
        return av_errf(err, AV_EUNSUPPORTED, "%s: tensor '%s' is %s; norms must be f32/f16/bf16",
                       name, tname, av_dtype_name(t->src_dtype));
    float *dst = *owned_at;
    if (t->src_dtype == AV_F16) av_f16_to_f32_row(t->data, dst, n);
    else av_bf16_to_f32_row(t->data, dst, n);
    *out = dst;
    *owned_at = dst + n;
    return 0;
}

static int get_weight(const av_model *m, const char *name, const char *tname, int64_t rows,
                      int64_t cols, llm_weight *w, int optional, av_err *err) {
    const av_tensor *t = av_model_find(m, tname);
    if (!t) {
        if (optional) return 1;
        return av_errf(err, AV_EFORMAT, "%s: missing tensor '%s'", name, tname);
    }
    if (t->n_dims != 2 || t->shape[0] != rows || t->shape[1] != cols) {
        char s[96];
        av_shape_str(t, s, sizeof s);
        return av_errf(err, AV_EFORMAT, "%s: tensor '%s' has shape %s, expected [%lld, %lld]",
                       name, tname, s, (long long)rows, (long long)cols);
    }
    if (!ops_weight_supported(t->src_dtype))
        return av_errf(err, AV_EUNSUPPORTED,
                       "%s: tensor '%s' is %s; the forward pass takes f32, f16, bf16 and Q4_0..Q8_0 / K-quant weights",
                       name, tname, av_dtype_name(t->src_dtype));
    w->name = t->name;
    w->data = t->data;
    w->type = t->src_dtype;
    w->rows = rows;
    w->cols = cols;
    return 0;
}

static int64_t weight_nbytes(const llm_weight *w) {
    return w->rows * (int64_t)ops_row_bytes(w->type, w->cols);
}

int llm_new(const av_model *m, const char *name, llm **out, av_err *err) {
    *out = NULL;
    const char *arch = NULL;
    if (av_kvs_get_str(&m->kv, "general.architecture", &arch) != 0)
        return av_errf(err, AV_EFORMAT, "%s: missing metadata key 'general.architecture'", name);
    if (strcmp(arch, "llama") != 0)
        return av_errf(err, AV_EUNSUPPORTED,
                       "%s: architecture '%s' is not supported (only 'llama')", name, arch);
    llm *l = calloc(1, sizeof *l);
    if (!l) return av_errf(err, AV_ENOMEM, "%s: out of memory", name);
    llm_hparams *hp = &l->hp;
    int rc;
    if ((rc = need_u32(m, name, "llama.embedding_length", &hp->n_embd, err)) ||
        (rc = need_u32(m, name, "llama.block_count", &hp->n_layer, err)) ||
        (rc = need_u32(m, name, "llama.attention.head_count", &hp->n_head, err)) ||
        (rc = need_u32(m, name, "llama.feed_forward_length", &hp->n_ff, err)) ||
        (rc = need_u32(m, name, "llama.context_length", &hp->n_ctx_train, err)))
        goto fail;
    hp->n_head_kv = hp->n_head;
    if (av_kvs_find(&m->kv, "llama.attention.head_count_kv") &&
        (rc = need_u32(m, name, "llama.attention.head_count_kv", &hp->n_head_kv, err)))
        goto fail;
    double d;
    if (av_kvs_get_f64(&m->kv, "llama.attention.layer_norm_rms_epsilon", &d) != 0) {
        rc = av_errf(err, AV_EFORMAT,
                     "%s: missing metadata key 'llama.attention.layer_norm_rms_epsilon'", name);
        goto fail;
    }
    hp->rms_eps = (float)d;
    hp->rope_base = av_kvs_get_f64(&m->kv, "llama.rope.freq_base", &d) == 0 ? (float)d : 10000.0f;
    hp->rope_mode = OPS_ROPE_NORM;
    if (hp->n_embd % hp->n_head != 0 || hp->n_head % hp->n_head_kv != 0) {
        rc = av_errf(err, AV_EFORMAT,
                     "%s: embedding_length %d, head_count %d, head_count_kv %d do not divide", name,
                     hp->n_embd, hp->n_head, hp->n_head_kv);
        goto fail;
    }
    hp->head_dim = hp->n_embd / hp->n_head;
    if (hp->head_dim % 2) {
        rc = av_errf(err, AV_EFORMAT, "%s: head dimension %d is odd", name, hp->head_dim);
        goto fail;
    }
    uint64_t rd;
    if (av_kvs_get_u64(&m->kv, "llama.rope.dimension_count", &rd) == 0 &&
        rd != (uint64_t)hp->head_dim) {
        rc = av_errf(err, AV_EUNSUPPORTED, "%s: partial RoPE (dimension_count %llu of %d)", name,
                     (unsigned long long)rd, hp->head_dim);
        goto fail;
    }

    const av_tensor *te = av_model_find(m, "token_embd.weight");
    if (!te) {
        rc = av_errf(err, AV_EFORMAT, "%s: missing tensor 'token_embd.weight'", name);
        goto fail;
    }
    if (te->n_dims != 2 || te->shape[0] < 1 || te->shape[0] > (1 << 24)) {
        char s[96];
        av_shape_str(te, s, sizeof s);
        rc = av_errf(err, AV_EFORMAT, "%s: tensor 'token_embd.weight' has shape %s", name, s);
        goto fail;
    }
    hp->n_vocab = (int)te->shape[0];
    const int E = hp->n_embd, F = hp->n_ff, Q = hp->n_head * hp->head_dim,
              KV = hp->n_head_kv * hp->head_dim, V = hp->n_vocab;
    if ((rc = get_weight(m, name, "token_embd.weight", V, E, &l->tok_embd, 0, err))) goto fail;

    /* norms stored as f16/bf16 are widened once; room for all of them */
    l->owned_f32 = malloc(sizeof(float) * (size_t)E * (2 * (size_t)hp->n_layer + 1));
    l->layers = calloc((size_t)hp->n_layer, sizeof *l->layers);
    if (!l->owned_f32 || !l->layers) {
        rc = av_errf(err, AV_ENOMEM, "%s: out of memory", name);
        goto fail;
    }
    float *own = l->owned_f32;
    if ((rc = get_norm(m, name, "output_norm.weight", E, &l->out_norm, &own, err))) goto fail;
    rc = get_weight(m, name, "output.weight", V, E, &l->output, 1, err);
    if (rc < 0) goto fail;
    if (rc == 1) l->output = l->tok_embd; /* tied embeddings */

    int64_t bytes = weight_nbytes(&l->output) + E * (int64_t)sizeof(float) * (2 * hp->n_layer + 1) +
                    (int64_t)ops_row_bytes(l->tok_embd.type, E);
    for (int i = 0; i < hp->n_layer; i++) {
        llm_layer *ly = &l->layers[i];
        char tn[96];
#define W(field, suffix, r, c)                                                        \
    snprintf(tn, sizeof tn, "blk.%d." suffix ".weight", i);                           \
    if ((rc = get_weight(m, name, tn, r, c, &ly->field, 0, err))) goto fail;          \
    bytes += weight_nbytes(&ly->field);
        snprintf(tn, sizeof tn, "blk.%d.attn_norm.weight", i);
        if ((rc = get_norm(m, name, tn, E, &ly->attn_norm, &own, err))) goto fail;
        snprintf(tn, sizeof tn, "blk.%d.ffn_norm.weight", i);
        if ((rc = get_norm(m, name, tn, E, &ly->ffn_norm, &own, err))) goto fail;
        W(wq, "attn_q", Q, E)
        W(wk, "attn_k", KV, E)
        W(wv, "attn_v", KV, E)
        W(wo, "attn_output", E, Q)
        W(w_gate, "ffn_gate", F, E)
        W(w_up, "ffn_up", F, E)
        W(w_down, "ffn_down", E, F)
#undef W
    }
    l->weight_bytes = bytes;
    *out = l;
    return 0;
fail:
    llm_free(l);
    return rc;
}

/* Every matrix of the forward pass: tok_embd, output, then 7 per layer. */
static int n_weights(const llm *l) { return 2 + 7 * l->hp.n_layer; }
static llm_weight *weight_at(llm *l, int i) {
    if (i == 0) return &l->tok_embd;
    if (i == 1) return &l->output;
    llm_layer *ly = &l->layers[(i - 2) / 7];
    llm_weight *ws[7] = {&ly->wq, &ly->wk, &ly->wv, &ly->wo, &ly->w_gate, &ly->w_up, &ly->w_down};
    return ws[(i - 2) % 7];
}

static void lora_free_chain(llm_lora *p) {
    while (p) {
        llm_lora *next = p->next;
        free(p->a);
        free(p->b);
        free(p);
        p = next;
    }
}

int llm_add_lora(llm *l, const char *target, const float *A, const float *B, int rank, float factor,
                 av_err *err) {
    if (rank < 1) return av_errf(err, AV_EINVAL, "LoRA pair for '%s': rank %d", target, rank);
    const int nw = n_weights(l);
    int n = 0;
    for (int i = 0; i < nw; i++) n += !strcmp(weight_at(l, i)->name, target);
    if (!n)
        return av_errf(err, AV_ENOTFOUND, "LoRA target '%s' is not a matrix of the forward pass", target);
    if (factor == 0) return 0;
    /* one node per weight (a tied output gets its own copy), all made before any is linked */
    llm_lora *made[2] = {0};
    if (n > 2) return av_errf(err, AV_EINVAL, "LoRA target '%s' names %d weights", target, n);
    for (int i = 0, k = 0; i < nw; i++) {
        const llm_weight *w = weight_at(l, i);
        if (strcmp(w->name, target)) continue;
        llm_lora *p = made[k++] = calloc(1, sizeof *p);
        if (!p || !(p->a = malloc((size_t)rank * w->cols * sizeof(float))) ||
            !(p->b = malloc((size_t)w->rows * rank * sizeof(float)))) {
            lora_free_chain(made[0]);
            lora_free_chain(made[1]);
            return av_errf(err, AV_ENOMEM, "out of memory for the LoRA pair of '%s'", target);
        }
        memcpy(p->a, A, (size_t)rank * w->cols * sizeof(float));
        memcpy(p->b, B, (size_t)w->rows * rank * sizeof(float));
        p->rank = rank;
        p->factor = factor;
    }
    for (int i = 0, k = 0; i < nw; i++) {
        llm_weight *w = weight_at(l, i);
        if (strcmp(w->name, target)) continue;
        llm_lora **tail = &w->lora;
        while (*tail) tail = &(*tail)->next;
        *tail = made[k++];
        /* decode reads A and B (only A and one row of B for the embedding) */
        l->weight_bytes += (int64_t)sizeof(float) * rank * (i == 0 ? w->cols + 1 : w->cols + w->rows);
    }
    if (rank > l->lora_rank_max) l->lora_rank_max = rank;
    return 0;
}

void llm_free(llm *l) {
    if (!l) return;
    for (int i = 0; l->layers && i < n_weights(l); i++) lora_free_chain(weight_at(l, i)->lora);
    free(l->layers);
    free(l->owned_f32);
    free(l);
}

/* ---- context ---------------------------------------------------------- */

int llm_ctx_n_ctx(const llm_ctx *c) { return c->n_ctx; }

void llm_ctx_set_observer(llm_ctx *c, llm_observer fn, void *ud) {
    c->observe = fn;
    c->observe_ud = ud;
}

static int threads_max(void) {
    int n = omp_get_num_procs();
    return n > 0 ? n : 1;
}

int llm_ctx_new(const llm *l, int n_ctx, int n_batch, llm_ctx **out, av_err *err) {
    *out = NULL;
    const llm_hparams *hp = &l->hp;
    if (n_ctx < 1 || n_ctx > (1 << 24) || n_batch < 1)
        return av_errf(err, AV_EINVAL, "context of %d tokens / batch of %d is out of range", n_ctx,
                       n_batch);
    if (n_batch > n_ctx) n_batch = n_ctx;
    llm_ctx *c = calloc(1, sizeof *c);
    if (!c) return av_errf(err, AV_ENOMEM, "out of memory");
    c->l = l;
    c->n_ctx = n_ctx;
    c->n_batch = n_batch;
    size_t kvd = (size_t)hp->n_head_kv * hp->head_dim, qd = (size_t)hp->n_head * hp->head_dim;
    size_t cache = (size_t)hp->n_layer * n_ctx * kvd;
    c->n_scores = threads_max();
    c->k_cache = malloc(cache * sizeof(float));
    c->v_cache = malloc(cache * sizeof(float));
    c->x = malloc((size_t)n_batch * hp->n_embd * sizeof(float));
    c->xb = malloc((size_t)n_batch * hp->n_embd * sizeof(float));
    c->q = malloc((size_t)n_batch * qd * sizeof(float));
    c->att = malloc((size_t)n_batch * qd * sizeof(float));
    c->hg = malloc((size_t)n_batch * hp->n_ff * sizeof(float));
    c->hu = malloc((size_t)n_batch * hp->n_ff * sizeof(float));
    c->scores = malloc((size_t)c->n_scores * ATT_BLOCK * n_ctx * sizeof(float));
    int ok = c->k_cache && c->v_cache && c->x && c->xb && c->q && c->att && c->hg && c->hu &&
             c->scores;
    /* sgemm on f16/bf16 weights widens the largest matrix into scratch */
    int64_t wmax = 0;
    const llm_weight *ws[] = {&l->output};
    if (ws[0]->type != AV_F32) wmax = ws[0]->rows * ws[0]->cols;
    for (int i = 0; i < hp->n_layer; i++) {
        const llm_layer *ly = &l->layers[i];
        const llm_weight *lw[] = {&ly->wq, &ly->wk, &ly->wv, &ly->wo, &ly->w_gate, &ly->w_up,
                                  &ly->w_down};
        for (size_t j = 0; j < sizeof lw / sizeof *lw; j++)
            if (lw[j]->type != AV_F32 && lw[j]->rows * lw[j]->cols > wmax)
                wmax = lw[j]->rows * lw[j]->cols;
    }
    if (ok && wmax > 0 && n_batch > 1) ok = (c->wscratch = malloc((size_t)wmax * sizeof(float))) != NULL;
    if (ok && l->lora_rank_max > 0) {
        size_t rows = (size_t)(n_batch > c->n_scores ? n_batch : c->n_scores);
        ok = (c->lora_t = malloc(rows * l->lora_rank_max * sizeof(float))) != NULL;
    }
    if (!ok) {
        llm_ctx_free(c);
        return av_errf(err, AV_ENOMEM, "out of memory for a context of %d tokens", n_ctx);
    }
    *out = c;
    return 0;
}

void llm_ctx_free(llm_ctx *c) {
    if (!c) return;
    free(c->k_cache);
    free(c->v_cache);
    free(c->x);
    free(c->xb);
    free(c->q);
    free(c->att);
    free(c->hg);
    free(c->hu);
    free(c->scores);
    free(c->wscratch);
    free(c->lora_t);
    free(c);
}

int llm_ctx_copy(llm_ctx *dst, const llm_ctx *src, int n_pos, av_err *err) {
    if (dst->l != src->l || dst->n_ctx != src->n_ctx || n_pos < 0 || n_pos > src->n_ctx)
        return av_errf(err, AV_EINVAL, "llm_ctx_copy: contexts differ or %d positions out of range",
                       n_pos);
    const llm_hparams *hp = &src->l->hp;
    size_t kvd = (size_t)hp->n_head_kv * hp->head_dim;
    for (int i = 0; i < hp->n_layer; i++) {
        size_t off = (size_t)i * src->n_ctx * kvd;
        memcpy(dst->k_cache + off, src->k_cache + off, (size_t)n_pos * kvd * sizeof(float));
        memcpy(dst->v_cache + off, src->v_cache + off, (size_t)n_pos * kvd * sizeof(float));
    }
    return 0;
}

/* ---- forward ---------------------------------------------------------- */

/* One token through a LoRA pair, rows [r0, r1) of y += f B (A x); t: rank
 * floats of scratch. Every thread of a team computes the same A x (rank dot
 * products, cheap next to its rows of W), so no extra barrier is needed. */
static void lora_vec(const llm_lora *p, const float *x, float *y, int64_t r0, int64_t r1, int64_t cols,
                     float *t) {
    ops_matvec(AV_F32, p->a, x, t, p->rank, cols, 1);
    for (int64_t r = r0; r < r1; r++) {
        const float *b = p->b + r * p->rank;
        float s = 0;
        for (int k = 0; k < p->rank; k++) s += b[k] * t[k];
        y[r] += p->factor * s;
    }
}

/* A batch through a LoRA pair: T [n, rank] = X A^T, Y += f T B^T, each sgemm
 * split over rows of its output like ops_matmul (single-threaded OpenBLAS). */
static void lora_batch(llm_ctx *c, const llm_weight *w, const llm_lora *p, const float *X, float *Y, int n,
                       int nt) {
    const int rank = p->rank, rows = (int)w->rows, cols = (int)w->cols;
    float *T = c->lora_t;
    if ((double)n * rank * (rows + cols) < 2e6) nt = 1;
    openblas_set_num_threads(1);
    const int tstep = (n + nt - 1) / nt, rstep = ((rows + nt - 1) / nt + 15) & ~15;
#pragma omp parallel num_threads(nt)
    {
#pragma omp for schedule(static)
        for (int t0 = 0; t0 < n; t0 += tstep)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n - t0 < tstep ? n - t0 : tstep, rank, cols, 1.0f,
                        X + (size_t)t0 * cols, cols, p->a, cols, 0.0f, T + (size_t)t0 * rank, rank);
#pragma omp for schedule(static)
        for (int r0 = 0; r0 < rows; r0 += rstep)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, rows - r0 < rstep ? rows - r0 : rstep, rank,
                        p->factor, T, rank, p->b + (size_t)r0 * rank, rank, 1.0f, Y + r0, rows);
    }
}

/* Y [n, w->rows] = X [n, w->cols] W^T (+ the weight's LoRA pairs) */
static void linear(llm_ctx *c, const llm_weight *w, const float *X, float *Y, int n, int nt) {
    if (c->observe) c->observe(c->observe_ud, w, X, n);
    if (n == 1) ops_matvec(w->type, w->data, X, Y, w->rows, w->cols, nt);
    else ops_matmul(w->type, w->data, X, Y, n, w->rows, w->cols, c->wscratch, nt);
    for (const llm_lora *p = w->lora; p; p = p->next) {
        if (n == 1) lora_vec(p, X, Y, 0, w->rows, w->cols, c->lora_t);
        else lora_batch(c, w, p, X, Y, n, nt);
    }
}

/* Causal attention of tokens [pos, pos+n) of one layer:
 * q [n, n_head*hd] (roped), caches [n_ctx, kvd] hold [0, pos+n), out att [n, n_head*hd].
 * Jobs are (head, block of queries); each runs single-threaded sgemms. */
static void attention(llm_ctx *c, const float *kc, const float *vc, int n, int pos, int nt) {
    const llm_hparams *hp = &c->l->hp;
    const int hd = hp->head_dim, kvd = hp->n_head_kv * hd, qd = hp->n_head * hd;
    const int group = hp->n_head / hp->n_head_kv;
    const float scale = 1.0f / sqrtf((float)hd);
    const int blocks = (n + ATT_BLOCK - 1) / ATT_BLOCK, jobs = blocks * hp->n_head;
    /* tiny attention costs less than waking threads */
    long work = (long)n * hp->n_head * (pos + n) * hd;
    if (nt > c->n_scores) nt = c->n_scores;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1) if (nt > 1 && work > 32768)
    for (int j = 0; j < jobs; j++) {
        const int h = j % hp->n_head, i0 = (j / hp->n_head) * ATT_BLOCK;
        const int bn = n - i0 < ATT_BLOCK ? n - i0 : ATT_BLOCK, kvh = h / group;
        float *s = c->scores + (size_t)omp_get_thread_num() * ATT_BLOCK * c->n_ctx;
        ops_attention(c->q + (size_t)i0 * qd + (size_t)h * hd, qd, kc + (size_t)kvh * hd,
                      vc + (size_t)kvh * hd, kvd, bn, pos + i0, hd, scale,
                      c->att + (size_t)i0 * qd + (size_t)h * hd, qd, s);
    }
}

/* Rows [r0, r1) of y = W x for thread ith of nth (row blocks of 4 keep the
 * kernels' 4-row path). */
static void matvec_part(const llm_ctx *c, const llm_weight *w, const float *x, float *y, int ith, int nth) {
    const int64_t per = ((w->rows + nth - 1) / nth + 3) & ~(int64_t)3;
    const int64_t r0 = (int64_t)ith * per, r1 = r0 + per < w->rows ? r0 + per : w->rows;
    if (r0 >= r1) return;
    const size_t rb = ops_row_bytes(w->type, w->cols);
    ops_matvec(w->type, (const char *)w->data + (size_t)r0 * rb, x, y + r0, r1 - r0, w->cols, 1);
    for (const llm_lora *p = w->lora; p; p = p->next)
        lora_vec(p, x, y, r0, r1, w->cols, c->lora_t + (size_t)ith * c->l->lora_rank_max);
}

/* A sense-counting spin barrier for the threads of one decode region:
 * ~0.1 us where an OpenMP barrier costs ~2 us on this class of VM, and a
 * token of a small model needs ~30 of them. Yields after a while so an
 * oversubscribed machine still makes progress. */
typedef struct spin_barrier {
    _Atomic int arrived, phase;
    int n;
} spin_barrier;

static void spin_barrier_wait(spin_barrier *b) {
    const int ph = atomic_load_explicit(&b->phase, memory_order_relaxed);
    if (atomic_fetch_add_explicit(&b->arrived, 1, memory_order_acq_rel) == b->n - 1) {
        atomic_store_explicit(&b->arrived, 0, memory_order_relaxed);
        atomic_store_explicit(&b->phase, ph + 1, memory_order_release);
        return;
    }
    for (unsigned spins = 0; atomic_load_explicit(&b->phase, memory_order_acquire) == ph; spins++) {
        if (spins < 4096) cpu_relax();
        else sched_yield();
    }
}

/* One token with nt > 1 threads inside a single parallel region (an OpenMP
 * fork/join costs ~3 us here); x holds the embedding. Thread 0 does the
 * small serial steps (norms, residuals, rope) between barriers. */
static void decode_team(llm_ctx *c, int pos, float *logits, int nt) {
    const llm *l = c->l;
    const llm_hparams *hp = &l->hp;
    const int E = hp->n_embd, F = hp->n_ff, hd = hp->head_dim, kvd = hp->n_head_kv * hd;
    const int group = hp->n_head / hp->n_head_kv;
    const float scale = 1.0f / sqrtf((float)hd);
    if (nt > c->n_scores) nt = c->n_scores;
    spin_barrier bar = {.n = 0};
#pragma omp parallel num_threads(nt)
    {
        const int ith = omp_get_thread_num(), nth = omp_get_num_threads();
        float *s = c->scores + (size_t)ith * ATT_BLOCK * c->n_ctx;
        if (ith == 0) {
            bar.n = nth;
            ops_rmsnorm(c->xb, c->x, l->layers[0].attn_norm, E, hp->rms_eps);
        }
#pragma omp barrier
        for (int li = 0; li < hp->n_layer; li++) {
            const llm_layer *ly = &l->layers[li];
            float *kc = c->k_cache + (size_t)li * c->n_ctx * kvd;
            float *vc = c->v_cache + (size_t)li * c->n_ctx * kvd;
            matvec_part(c, &ly->wq, c->xb, c->q, ith, nth);
            matvec_part(c, &ly->wk, c->xb, kc + (size_t)pos * kvd, ith, nth);
            matvec_part(c, &ly->wv, c->xb, vc + (size_t)pos * kvd, ith, nth);
            spin_barrier_wait(&bar);
            if (ith == 0) {
                ops_rope(c->q, hp->n_head, hd, pos, hp->rope_base, hp->rope_mode);
                ops_rope(kc + (size_t)pos * kvd, hp->n_head_kv, hd, pos, hp->rope_base,
                         hp->rope_mode);
            }
            spin_barrier_wait(&bar);
            for (int h = ith; h < hp->n_head; h += nth)
                ops_attention(c->q + (size_t)h * hd, hd, kc + (size_t)(h / group) * hd,
                              vc + (size_t)(h / group) * hd, kvd, 1, pos, hd, scale,
                              c->att + (size_t)h * hd, hd, s);
            spin_barrier_wait(&bar);
            matvec_part(c, &ly->wo, c->att, c->xb, ith, nth);
            spin_barrier_wait(&bar);
            if (ith == 0) {
                for (int k = 0; k < E; k++) c->x[k] += c->xb[k];
                ops_rmsnorm(c->xb, c->x, ly->ffn_norm, E, hp->rms_eps);
            }
            spin_barrier_wait(&bar);
            /* gate and up rows split alike, so each thread's SwiGLU needs only its rows */
            matvec_part(c, &ly->w_gate, c->xb, c->hg, ith, nth);
            matvec_part(c, &ly->w_up, c->xb, c->hu, ith, nth);
            {
                const int64_t per = ((F + nth - 1) / nth + 3) & ~(int64_t)3;
                const int64_t r0 = (int64_t)ith * per, r1 = r0 + per < F ? r0 + per : F;
                if (r0 < r1) ops_swiglu(c->hg + r0, c->hu + r0, r1 - r0);
            }
            spin_barrier_wait(&bar);
            matvec_part(c, &ly->w_down, c->hg, c->xb, ith, nth);
            spin_barrier_wait(&bar);
            if (ith == 0) {
                for (int k = 0; k < E; k++) c->x[k] += c->xb[k];
                const float *nw = li + 1 < hp->n_layer ? l->layers[li + 1].attn_norm : l->out_norm;
                ops_rmsnorm(c->xb, c->x, nw, E, hp->rms_eps);
            }
            spin_barrier_wait(&bar);
        }
        if (logits) matvec_part(c, &l->output, c->xb, logits, ith, nth);
    }
}

int llm_eval(llm_ctx *c, const int32_t *tokens, int n, int pos, float *logits, int all_logits,
             int n_threads, av_err *err) {
    const llm *l = c->l;
    const llm_hparams *hp = &l->hp;
    if (n < 1 || n > c->n_batch)
        return av_errf(err, AV_EINVAL, "batch of %d tokens (allowed 1..%d)", n, c->n_batch);
    if (pos < 0 || pos + n > c->n_ctx)
        return av_errf(err, AV_EINVAL, "positions %d..%d run past the context of %d tokens", pos,
                       pos + n - 1, c->n_ctx);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= hp->n_vocab)
            return av_errf(err, AV_EINVAL, "token id %d is outside the vocabulary (0..%d)",
                           tokens[i], hp->n_vocab - 1);
    const int nt = n_threads > 0 ? n_threads : threads_max();
    const int E = hp->n_embd, F = hp->n_ff, hd = hp->head_dim;
    const int qd = hp->n_head * hd, kvd = hp->n_head_kv * hd;

    /* x [n, E] = embedding rows, widened from whatever type they are stored in */
    const size_t erb = ops_row_bytes(l->tok_embd.type, E);
    const av_to_float_fn widen = av_dtype_traits_of(l->tok_embd.type)->to_float;
    for (int i = 0; i < n; i++) {
        float *xi = c->x + (size_t)i * E;
        widen((const char *)l->tok_embd.data + (size_t)tokens[i] * erb, xi, E);
        /* row t of W + f B A is W[t] + f sum_k B[t, k] A[k] */
        for (const llm_lora *p = l->tok_embd.lora; p; p = p->next)
            for (int k = 0; k < p->rank; k++)
                ops_axpy(xi, p->factor * p->b[(size_t)tokens[i] * p->rank + k], p->a + (size_t)k * E, E);
    }

    if (n == 1 && nt > 1 && !c->observe) {
        decode_team(c, pos, logits, nt);
        return 0;
    }
    for (int li = 0; li < hp->n_layer; li++) {
        const llm_layer *ly = &l->layers[li];
        float *kc = c->k_cache + (size_t)li * c->n_ctx * kvd;
        float *vc = c->v_cache + (size_t)li * c->n_ctx * kvd;
        for (int i = 0; i < n; i++)
            ops_rmsnorm(c->xb + (size_t)i * E, c->x + (size_t)i * E, ly->attn_norm, E, hp->rms_eps);
        linear(c, &ly->wq, c->xb, c->q, n, nt);
        /* K and V rows go straight into the cache rows [pos, pos+n) */
        linear(c, &ly->wk, c->xb, kc + (size_t)pos * kvd, n, nt);
        linear(c, &ly->wv, c->xb, vc + (size_t)pos * kvd, n, nt);
        for (int i = 0; i < n; i++) {
            ops_rope(c->q + (size_t)i * qd, hp->n_head, hd, pos + i, hp->rope_base, hp->rope_mode);
            ops_rope(kc + (size_t)(pos + i) * kvd, hp->n_head_kv, hd, pos + i, hp->rope_base,
                     hp->rope_mode);
        }
        attention(c, kc, vc, n, pos, nt);
        linear(c, &ly->wo, c->att, c->xb, n, nt);
        for (size_t k = 0; k < (size_t)n * E; k++) c->x[k] += c->xb[k];

        for (int i = 0; i < n; i++)
            ops_rmsnorm(c->xb + (size_t)i * E, c->x + (size_t)i * E, ly->ffn_norm, E, hp->rms_eps);
        linear(c, &ly->w_gate, c->xb, c->hg, n, nt);
        linear(c, &ly->w_up, c->xb, c->hu, n, nt);
        ops_swiglu(c->hg, c->hu, (int64_t)n * F);
        linear(c, &ly->w_down, c->hg, c->xb, n, nt);
        for (size_t k = 0; k < (size_t)n * E; k++) c->x[k] += c->xb[k];
    }

    if (!logits) return 0;
    if (all_logits) {
        for (int i = 0; i < n; i++)
            ops_rmsnorm(c->xb + (size_t)i * E, c->x + (size_t)i * E, l->out_norm, E, hp->rms_eps);
        linear(c, &l->output, c->xb, logits, n, nt);
    } else {
        ops_rmsnorm(c->xb, c->x + (size_t)(n - 1) * E, l->out_norm, E, hp->rms_eps);
        linear(c, &l->output, c->xb, logits, 1, nt);
    }
    return 0;
}
