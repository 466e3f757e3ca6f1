/* train.c — the training model: flat parameter/gradient/moment buffers,
 * activation planning, forward and backward through the kernels of
 * train_ops.c, AdamW, gradient clipping and the LR schedule (train.h). */
#include "train.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm.h"
#include "ops.h"

struct tr_acts {
    int B, T, nt_max;
    int recompute; /* per-layer buffers hold one layer (slot 0); the backward recomputes it */
    size_t N;
    float *buf;       /* everything below points into buf */
    float *x;         /* [L+1][N, E]: input of each layer, x[L] feeds the final norm */
    float *xmid;      /* [L][N, E]: residual after attention */
    float *xn1, *xn2; /* [L][N, E]: normed inputs of attention / FFN */
    float *rstd1, *rstd2; /* [L][N] */
    float *q, *k, *v, *atty; /* [L][N, Q|KV|KV|Q], q and k after RoPE */
    float *P;         /* [L][B, H, T, 2] attention softmax max and 1/sum */
    float *hg, *hu, *hh; /* [L][N, F] gate, up, silu(gate)*up */
    float *xnf, *rstdf; /* [N, E], [N] */
    float *logits;    /* [N, V]: logits, then p - onehot (dlogits before the loss scale) */
    float *losses;    /* [N] */
    float *cos_t, *sin_t; /* [T, hd/2] */
    /* backward scratch, one layer's worth */
    float *dx, *dxn, *dq, *dk, *dv, *datt, *dhg, *dhu, *dhh, *att_scratch;
    int32_t *inputs, *targets; /* copies of the last forward's batch */
    int have_targets, count;
    int dropped; /* the last forward applied dropout (its backward must too) */
};

static int threads_max(void) {
    int n = omp_get_num_procs();
    return n > 0 ? n : 1;
}

static int nthreads(int n) { return n > 0 ? n : threads_max(); }

/* ---- model ------------------------------------------------------------ */

static int add_tensor(tr_model *m, const char *name, int n_dims, int64_t r, int64_t c,
                      int decay) {
    tr_tensor *t = &m->tensors[m->n_tensors];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->n_dims = n_dims;
    t->shape[0] = r;
    t->shape[1] = n_dims == 2 ? c : 1;
    t->n = (size_t)r * (n_dims == 2 ? (size_t)c : 1);
    t->offset = m->n_params;
    t->decay = decay;
    m->n_params += t->n;
    return m->n_tensors++;
}

int tr_model_new(const tr_config *cfg, tr_model **out, av_err *err) {
    *out = NULL;
    const tr_config *c = cfg;
    if (c->dim < 1 || c->n_layer < 1 || c->n_head < 1 || c->n_kv_head < 1 || c->ffn < 1 ||
        c->vocab < 1 || c->seq_len < 1 || c->dim % c->n_head || c->n_head % c->n_kv_head ||
        (c->dim / c->n_head) % 2 || c->n_layer > 4096 ||
        (c->rope_mode != OPS_ROPE_NORM && c->rope_mode != OPS_ROPE_NEOX))
        return av_errf(err, AV_EINVAL,
                       "train: bad config (dim %d, layers %d, heads %d/%d, ffn %d, vocab %d, seq %d)",
                       c->dim, c->n_layer, c->n_head, c->n_kv_head, c->ffn, c->vocab, c->seq_len);
    tr_model *m = calloc(1, sizeof *m);
    if (!m) return av_errf(err, AV_ENOMEM, "train: out of memory");
    m->cfg = *c;
    if (m->cfg.rope_base <= 0) m->cfg.rope_base = 10000.0f;
    if (m->cfg.eps <= 0) m->cfg.eps = 1e-5f;
    m->head_dim = c->dim / c->n_head;
    m->q_dim = c->dim;
    m->kv_dim = c->n_kv_head * m->head_dim;
    const int E = c->dim, F = c->ffn, V = c->vocab, Q = m->q_dim, KV = m->kv_dim;
    m->tensors = calloc((size_t)c->n_layer * TR_PER_LAYER + 3, sizeof *m->tensors);
    m->t_layer = calloc((size_t)c->n_layer * TR_PER_LAYER, sizeof *m->t_layer);
    if (!m->tensors || !m->t_layer) goto oom;
    m->t_embd = add_tensor(m, "token_embd.weight", 2, V, E, 1);
    for (int l = 0; l < c->n_layer; l++) {
        char n[64];
        int *tl = m->t_layer + (size_t)l * TR_PER_LAYER;
#define T_(idx, suffix, nd, r, cc, dec)                               \
    snprintf(n, sizeof n, "blk.%d." suffix ".weight", l);             \
    tl[idx] = add_tensor(m, n, nd, r, cc, dec);
        T_(TR_ATTN_NORM, "attn_norm", 1, E, 1, 0)
        T_(TR_WQ, "attn_q", 2, Q, E, 1)
        T_(TR_WK, "attn_k", 2, KV, E, 1)
        T_(TR_WV, "attn_v", 2, KV, E, 1)
        T_(TR_WO, "attn_output", 2, E, Q, 1)
        T_(TR_FFN_NORM, "ffn_norm", 1, E, 1, 0)
        T_(TR_W_GATE, "ffn_gate", 2, F, E, 1)
        T_(TR_W_UP, "ffn_up", 2, F, E, 1)
        T_(TR_W_DOWN, "ffn_down", 2, E, F, 1)
#undef T_
    }
    m->t_out_norm = add_tensor(m, "output_norm.weight", 1, E, 1, 0);
    m->t_out = c->tied ? m->t_embd : add_tensor(m, "output.weight", 2, V, E, 1);
    m->params = calloc(m->n_params, sizeof(float));
    m->grads = calloc(m->n_params, sizeof(float));
    if (!m->params || !m->grads) goto oom;
    *out = m;
    return 0;
oom:
    tr_model_free(m);
    return av_errf(err, AV_ENOMEM, "train: out of memory for the model");
}

static void acts_free(tr_acts *a) {
    if (!a) return;
    free(a->buf);
    free(a->inputs);
    free(a->targets);
    free(a);
}

void tr_model_free(tr_model *m) {
    if (!m) return;
    free(m->params);
    free(m->grads);
    free(m->m);
    free(m->v);
    free(m->tensors);
    free(m->t_layer);
    acts_free(m->acts);
    tr_lora_free(m->lora);
    free(m);
}

tr_tensor *tr_find(tr_model *m, const char *name) {
    for (int i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0) return &m->tensors[i];
    return NULL;
}

float *tr_param(tr_model *m, int t) { return m->params + m->tensors[t].offset; }
float *tr_grad(tr_model *m, int t) { return m->grads + m->tensors[t].offset; }

/* ---- initialization --------------------------------------------------- */

uint64_t tr_splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double unit_open(uint64_t *s) { /* (0, 1) */
    return ((double)(tr_splitmix64(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

void tr_init_weights(tr_model *m, uint64_t seed) {
    const double resid = 1.0 / sqrt(2.0 * m->cfg.n_layer);
    for (int i = 0; i < m->n_tensors; i++) {
        const tr_tensor *t = &m->tensors[i];
        float *p = m->params + t->offset;
        if (t->n_dims == 1) {
            for (size_t j = 0; j < t->n; j++) p[j] = 1.0f;
            continue;
        }
        const size_t L = strlen(t->name);
        const int is_resid = (L > 19 && strcmp(t->name + L - 19, ".attn_output.weight") == 0) ||
                             (L > 16 && strcmp(t->name + L - 16, ".ffn_down.weight") == 0);
        const double sd = 0.02 * (is_resid ? resid : 1.0);
        uint64_t s = seed ^ (0xD1B54A32D192ED03ull * (uint64_t)(i + 1));
        for (size_t j = 0; j < t->n; j += 2) {
            const double u1 = unit_open(&s), u2 = unit_open(&s);
            const double r = sqrt(-2.0 * log(u1)), a = 6.283185307179586 * u2;
            p[j] = (float)(sd * r * cos(a));
            if (j + 1 < t->n) p[j + 1] = (float)(sd * r * sin(a));
        }
    }
}

/* ---- av_model in and out ---------------------------------------------- */

static void copy_weight(float *dst, const llm_weight *w) {
    const size_t n = (size_t)w->rows * w->cols;
    if (w->type == AV_F32) memcpy(dst, w->data, n * sizeof(float));
    else av_dtype_traits_of(w->type)->to_float(w->data, dst, (int64_t)n);
}

int tr_model_from_model(const av_model *src, const char *name, tr_model **out, av_err *err) {
    *out = NULL;
    llm *l = NULL;
    int rc = llm_new(src, name, &l, err);
    if (rc) return rc;
    const llm_hparams *hp = &l->hp;
    int tied = l->output.data == l->tok_embd.data;
    if (!tied && l->output.type == l->tok_embd.type) /* same bytes: a tie written out twice */
        tied = memcmp(l->output.data, l->tok_embd.data,
                      (size_t)l->output.rows * ops_row_bytes(l->output.type, l->output.cols)) == 0;
    tr_config c = {.dim = hp->n_embd, .n_layer = hp->n_layer, .n_head = hp->n_head,
                   .n_kv_head = hp->n_head_kv, .ffn = hp->n_ff, .vocab = hp->n_vocab,
                   .seq_len = hp->n_ctx_train, .tied = tied, .rope_base = hp->rope_base,
                   .eps = hp->rms_eps, .rope_mode = OPS_ROPE_NORM};
    tr_model *m = NULL;
    if ((rc = tr_model_new(&c, &m, err))) goto done;
    const int E = hp->n_embd;
    copy_weight(tr_param(m, m->t_embd), &l->tok_embd);
    if (!tied) copy_weight(tr_param(m, m->t_out), &l->output);
    memcpy(tr_param(m, m->t_out_norm), l->out_norm, (size_t)E * sizeof(float));
    for (int i = 0; i < hp->n_layer; i++) {
        const llm_layer *ly = &l->layers[i];
        const int *tl = m->t_layer + (size_t)i * TR_PER_LAYER;
        memcpy(tr_param(m, tl[TR_ATTN_NORM]), ly->attn_norm, (size_t)E * sizeof(float));
        memcpy(tr_param(m, tl[TR_FFN_NORM]), ly->ffn_norm, (size_t)E * sizeof(float));
        copy_weight(tr_param(m, tl[TR_WQ]), &ly->wq);
        copy_weight(tr_param(m, tl[TR_WK]), &ly->wk);
        copy_weight(tr_param(m, tl[TR_WV]), &ly->wv);
        copy_weight(tr_param(m, tl[TR_WO]), &ly->wo);
        copy_weight(tr_param(m, tl[TR_W_GATE]), &ly->w_gate);
        copy_weight(tr_param(m, tl[TR_W_UP]), &ly->w_up);
        copy_weight(tr_param(m, tl[TR_W_DOWN]), &ly->w_down);
    }
    *out = m;
done:
    llm_free(l);
    return rc;
}

/* HF (rotate_half) row order -> GGUF (interleaved) row order, per head. */
static void unpermute_rows(float *dst, const float *src, int n_head, int hd, int cols) {
    const int half = hd / 2;
    for (int h = 0; h < n_head; h++)
        for (int j = 0; j < hd; j++) {
            const int g = j < half ? 2 * j : 2 * (j - half) + 1;
            memcpy(dst + ((size_t)h * hd + g) * cols, src + ((size_t)h * hd + j) * cols,
                   (size_t)cols * sizeof(float));
        }
}

int tr_model_to_model(const tr_model *m, const av_kvs *meta, av_model **out, av_err *err) {
    *out = NULL;
    av_model *o = av_model_new();
    if (!o) return av_errf(err, AV_ENOMEM, "train: out of memory");
    const tr_config *c = &m->cfg;
    if (meta)
        for (size_t i = 0; i < meta->n; i++) {
            if (strncmp(meta->items[i].key, "llama.", 6) == 0) continue;
            av_value v;
            if (av_value_copy(&v, &meta->items[i].val) || av_kvs_set(&o->kv, meta->items[i].key, &v))
                goto oom;
        }
    if (av_kvs_set_str(&o->kv, "general.architecture", "llama") ||
        (!av_kvs_find(&o->kv, "general.name") && av_kvs_set_str(&o->kv, "general.name", "anvil")) ||
        av_kvs_set_u32(&o->kv, "llama.context_length", (uint32_t)c->seq_len) ||
        av_kvs_set_u32(&o->kv, "llama.embedding_length", (uint32_t)c->dim) ||
        av_kvs_set_u32(&o->kv, "llama.feed_forward_length", (uint32_t)c->ffn) ||
        av_kvs_set_u32(&o->kv, "llama.attention.head_count", (uint32_t)c->n_head) ||
        av_kvs_set_u32(&o->kv, "llama.attention.head_count_kv", (uint32_t)c->n_kv_head) ||
        av_kvs_set_u32(&o->kv, "llama.block_count", (uint32_t)c->n_layer) ||
        av_kvs_set_u32(&o->kv, "llama.rope.dimension_count", (uint32_t)m->head_dim) ||
        av_kvs_set_f32(&o->kv, "llama.rope.freq_base", c->rope_base) ||
        av_kvs_set_f32(&o->kv, "llama.attention.layer_norm_rms_epsilon", c->eps))
        goto oom;
    for (int i = 0; i < m->n_tensors; i++) {
        const tr_tensor *t = &m->tensors[i];
        float *buf = malloc(t->n * sizeof(float));
        if (!buf) goto oom;
        const float *p = m->params + t->offset;
        const size_t L = strlen(t->name);
        const int is_q = L > 14 && strcmp(t->name + L - 14, ".attn_q.weight") == 0;
        const int is_k = L > 14 && strcmp(t->name + L - 14, ".attn_k.weight") == 0;
        if (c->rope_mode == OPS_ROPE_NEOX && (is_q || is_k))
            unpermute_rows(buf, p, is_q ? c->n_head : c->n_kv_head, m->head_dim, c->dim);
        else
            memcpy(buf, p, t->n * sizeof(float));
        if (!av_model_add_tensor(o, t->name, AV_F32, t->n_dims, t->shape, buf, buf)) {
            free(buf);
            goto oom;
        }
    }
    *out = o;
    return 0;
oom:
    av_model_free(o);
    return av_errf(err, AV_ENOMEM, "train: out of memory exporting the model");
}

/* ---- activations ------------------------------------------------------ */

static int acts_plan(tr_model *m, int B, int T, av_err *err) {
    if (m->acts && m->acts->B == B && m->acts->T == T && m->acts->recompute == m->recompute) return 0;
    acts_free(m->acts);
    m->acts = NULL;
    const tr_config *c = &m->cfg;
    /* L: layers whose activations are kept (1 when recomputing), x keeps every layer's input */
    const size_t N = (size_t)B * T, L = m->recompute ? 1 : (size_t)c->n_layer, E = (size_t)c->dim, F = (size_t)c->ffn,
                 Q = (size_t)m->q_dim, KV = (size_t)m->kv_dim, V = (size_t)c->vocab,
                 H = (size_t)c->n_head, hd2 = (size_t)m->head_dim / 2;
    const int ntm = threads_max();
    tr_acts *a = calloc(1, sizeof *a);
    if (!a) return av_errf(err, AV_ENOMEM, "train: out of memory");
    a->B = B;
    a->T = T;
    a->N = N;
    a->nt_max = ntm;
    a->recompute = m->recompute;
    struct { float **p; size_t n; } plan[] = {
        {&a->x, ((size_t)c->n_layer + 1) * N * E}, {&a->xmid, L * N * E}, {&a->xn1, L * N * E},
        {&a->xn2, L * N * E}, {&a->rstd1, L * N}, {&a->rstd2, L * N}, {&a->q, L * N * Q},
        {&a->k, L * N * KV}, {&a->v, L * N * KV}, {&a->atty, L * N * Q},
        {&a->P, L * B * H * T * 2}, {&a->hg, L * N * F}, {&a->hu, L * N * F},
        {&a->hh, L * N * F}, {&a->xnf, N * E}, {&a->rstdf, N}, {&a->logits, N * V},
        {&a->losses, N}, {&a->cos_t, (size_t)T * hd2}, {&a->sin_t, (size_t)T * hd2},
        {&a->dx, N * E}, {&a->dxn, N * E}, {&a->dq, N * Q}, {&a->dk, N * KV}, {&a->dv, N * KV},
        {&a->datt, N * Q}, {&a->dhg, N * F}, {&a->dhu, N * F}, {&a->dhh, N * F},
        {&a->att_scratch, tr_attention_scratch(T, m->head_dim, ntm)},
    };
    size_t total = 0;
    for (size_t i = 0; i < sizeof plan / sizeof *plan; i++) total += (plan[i].n + 15) & ~(size_t)15;
    a->buf = malloc(total * sizeof(float));
    a->inputs = malloc(N * sizeof(int32_t));
    a->targets = malloc(N * sizeof(int32_t));
    if (!a->buf || !a->inputs || !a->targets) {
        acts_free(a);
        return av_errf(err, AV_ENOMEM, "train: out of memory for activations of %d x %d tokens "
                       "(%zu MB)", B, T, total * sizeof(float) >> 20);
    }
    size_t off = 0;
    for (size_t i = 0; i < sizeof plan / sizeof *plan; i++) {
        *plan[i].p = a->buf + off;
        off += (plan[i].n + 15) & ~(size_t)15;
    }
    tr_rope_table(a->cos_t, a->sin_t, T, m->head_dim, c->rope_base);
    m->acts = a;
    return 0;
}

/* ---- forward / backward ----------------------------------------------- */

/* Per-phase seconds, accumulated when built with -DTR_PROFILE (for
 * scripts/bench/train_core.c); compiled out otherwise. */
#ifdef TR_PROFILE
enum { P_EMB, P_NORM, P_QKV, P_ROPE, P_ATT, P_WO, P_FFN, P_SWIGLU, P_HEAD, P_XENT,
       P_HEAD_B, P_NORM_B, P_FFN_B, P_SWIGLU_B, P_WO_B, P_ATT_B, P_ROPE_B, P_QKV_B,
       P_EMB_B, P_N };
double tr_prof[P_N];
const char *const tr_prof_name[P_N] = {
    "emb", "norm", "qkv", "rope", "att", "wo", "ffn", "swiglu", "head", "xent",
    "| head_b", "norm_b", "ffn_b", "swiglu_b", "wo_b", "att_b", "rope_b", "qkv_b",
    "emb_b"};
const int tr_prof_n = P_N;
#define PROF_START double prof_t_ = omp_get_wtime()
#define PROF(k)                                \
    do {                                       \
        const double t_ = omp_get_wtime();     \
        tr_prof[k] += t_ - prof_t_;            \
        prof_t_ = t_;                          \
    } while (0)
#else
#define PROF_START ((void)0)
#define PROF(k) ((void)0)
#endif

float tr_dropout_scale(uint64_t key, int layer, int which, size_t i, float p) {
    uint64_t z = key ^ ((uint64_t)(layer * 2 + which) << 48) ^ (uint64_t)i;
    z += 0x9e3779b97f4a7c15ull; /* splitmix64 finalizer */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (double)(z >> 40) < (double)p * (double)(1u << 24) ? 0.0f : 1.0f / (1.0f - p);
}

/* x[n] *= the dropout mask of (layer, which): forward on activations, backward on their gradients. */
static void dropout_apply(float *x, size_t n, uint64_t key, int layer, int which, float p, int nt) {
    #pragma omp parallel for schedule(static) num_threads(nt)
    for (size_t i = 0; i < n; i++) x[i] *= tr_dropout_scale(key, layer, which, i, p);
}

/* Weights: trainable parameters (full training) or the frozen base with its
 * adapters (LoRA, train_lora.c). Layer -1 is the output head / final norm. */
static const float *norm_w(tr_model *m, int l, int slot) {
    if (m->lora) return tr_lora_norm(m, l, slot);
    return tr_param(m, l < 0 ? m->t_out_norm : m->t_layer[(size_t)l * TR_PER_LAYER + slot]);
}

static float *norm_g(tr_model *m, int l, int slot) {
    if (m->lora) return NULL;
    return tr_grad(m, l < 0 ? m->t_out_norm : m->t_layer[(size_t)l * TR_PER_LAYER + slot]);
}

static int weight_index(const tr_model *m, int l, int slot) {
    return l < 0 ? m->t_out : m->t_layer[(size_t)l * TR_PER_LAYER + slot];
}

/* Y [N, O] (+)= X [N, In] W^T */
static void lin_fwd(tr_model *m, int l, int slot, float *Y, int acc, const float *X, int N, int In, int O,
                    int nt) {
    if (m->lora) {
        tr_lora_linear_fwd(m, l, slot, Y, acc, X, N, nt);
        return;
    }
    const float *W = tr_param(m, weight_index(m, l, slot));
    if (acc) tr_matmul_fwd_acc(Y, X, W, N, In, O, nt);
    else tr_matmul_fwd(Y, X, W, N, In, O, nt);
}

/* dX [N, In] (+)= alpha dY W; dW += alpha dY^T X when trainable */
static void lin_bwd(tr_model *m, int l, int slot, float *dX, int acc, const float *dY, const float *X, int N,
                    int In, int O, float alpha, int nt) {
    if (m->lora) {
        tr_lora_linear_bwd(m, l, slot, dX, acc, dY, X, N, alpha, nt);
        return;
    }
    const int t = weight_index(m, l, slot);
    tr_matmul_bwd_scaled(dX, acc, tr_grad(m, t), dY, X, tr_param(m, t), N, In, O, alpha, nt);
}

/* One block's forward from x[l] to x[l+1], its activations in slot l (slot 0
 * when recomputing). Deterministic, so the backward's recomputation gives
 * the forward's bits (dropout masks are a hash of the key). */
static void layer_fwd(tr_model *m, int l, int drop, int nt, int ntm) {
    const tr_config *c = &m->cfg;
    tr_acts *a = m->acts;
    const size_t N = a->N, ls = a->recompute ? 0 : (size_t)l;
    const int B = a->B, T = a->T, E = c->dim, F = c->ffn, Q = m->q_dim, KV = m->kv_dim, hd = m->head_dim, H = c->n_head,
              KVH = c->n_kv_head;
    PROF_START;
    float *x = a->x + l * N * E, *xmid = a->xmid + ls * N * E, *xout = a->x + (l + 1) * N * E;
    float *xn1 = a->xn1 + ls * N * E, *xn2 = a->xn2 + ls * N * E;
    float *q = a->q + ls * N * Q, *k = a->k + ls * N * KV, *v = a->v + ls * N * KV;
    float *atty = a->atty + ls * N * Q, *P = a->P + ls * (size_t)B * H * T * 2;
    float *hg = a->hg + ls * N * F, *hu = a->hu + ls * N * F, *hh = a->hh + ls * N * F;

    tr_rmsnorm_fwd(xn1, a->rstd1 + ls * N, x, norm_w(m, l, TR_ATTN_NORM), (int)N, E, c->eps, nt);
    PROF(P_NORM);
    lin_fwd(m, l, TR_WQ, q, 0, xn1, (int)N, E, Q, nt);
    lin_fwd(m, l, TR_WK, k, 0, xn1, (int)N, E, KV, nt);
    lin_fwd(m, l, TR_WV, v, 0, xn1, (int)N, E, KV, nt);
    PROF(P_QKV);
    tr_rope_fwd(q, (int)N, T, H, hd, a->cos_t, a->sin_t, c->rope_mode, nt);
    tr_rope_fwd(k, (int)N, T, KVH, hd, a->cos_t, a->sin_t, c->rope_mode, nt);
    PROF(P_ROPE);
    tr_attention_fwd(atty, P, q, k, v, B, T, H, KVH, hd, a->att_scratch, ntm);
    PROF(P_ATT);
    if (drop) dropout_apply(atty, N * Q, m->dropout_key, l, 0, m->dropout, nt);
    memcpy(xmid, x, N * E * sizeof(float)); /* residual: xmid = x + atty Wo^T */
    lin_fwd(m, l, TR_WO, xmid, 1, atty, (int)N, Q, E, nt);
    PROF(P_WO);

    tr_rmsnorm_fwd(xn2, a->rstd2 + ls * N, xmid, norm_w(m, l, TR_FFN_NORM), (int)N, E, c->eps, nt);
    PROF(P_NORM);
    lin_fwd(m, l, TR_W_GATE, hg, 0, xn2, (int)N, E, F, nt);
    lin_fwd(m, l, TR_W_UP, hu, 0, xn2, (int)N, E, F, nt);
    PROF(P_FFN);
    tr_swiglu_fwd(hh, hg, hu, N * F, nt);
    PROF(P_SWIGLU);
    if (drop) dropout_apply(hh, N * F, m->dropout_key, l, 1, m->dropout, nt);
    memcpy(xout, xmid, N * E * sizeof(float));
    lin_fwd(m, l, TR_W_DOWN, xout, 1, hh, (int)N, F, E, nt);
    PROF(P_FFN);
}

int tr_forward(tr_model *m, const int32_t *inputs, const int32_t *targets, int B, int T,
               float *loss, float *logits, int n_threads, av_err *err) {
    const tr_config *c = &m->cfg;
    if (B < 1 || T < 1 || T > c->seq_len)
        return av_errf(err, AV_EINVAL, "train: batch %d x %d (sequence at most %d)", B, T,
                       c->seq_len);
    const size_t N = (size_t)B * T;
    for (size_t i = 0; i < N; i++)
        if (inputs[i] < 0 || inputs[i] >= c->vocab || (targets && targets[i] >= c->vocab))
            return av_errf(err, AV_EINVAL, "train: token id %d at %zu is outside the vocabulary "
                           "(0..%d)", inputs[i] < 0 || inputs[i] >= c->vocab ? inputs[i] : targets[i],
                           i, c->vocab - 1);
    int rc = acts_plan(m, B, T, err);
    if (!rc) rc = tr_lora_plan(m, N, targets && !m->eval, err);
    if (rc) return rc;
    tr_acts *a = m->acts;
    const int nt = nthreads(n_threads), ntm = nt < a->nt_max ? nt : a->nt_max;
    const int E = c->dim, V = c->vocab;
    memcpy(a->inputs, inputs, N * sizeof(int32_t));
    a->have_targets = 0;
    const int drop = targets && !m->eval && m->dropout > 0;
    a->dropped = drop;

    PROF_START;
    if (m->lora) tr_lora_embed(m, a->x, inputs, (int)N);
    else tr_embedding_fwd(a->x, tr_param(m, m->t_embd), inputs, (int)N, E);
    PROF(P_EMB);
    for (int l = 0; l < c->n_layer; l++) layer_fwd(m, l, drop, nt, ntm);
    tr_rmsnorm_fwd(a->xnf, a->rstdf, a->x + (size_t)c->n_layer * N * E, norm_w(m, -1, 0), (int)N, E, c->eps,
                   nt);
    PROF(P_NORM);
    lin_fwd(m, -1, 0, a->logits, 0, a->xnf, (int)N, E, V, nt);
    PROF(P_HEAD);
    if (logits) memcpy(logits, a->logits, N * V * sizeof(float));
    if (targets) {
        memcpy(a->targets, targets, N * sizeof(int32_t));
        double sum;
        /* logits become p - onehot: the backward scales them inside the head's products */
        a->count = tr_xent_fwd_grad(a->logits, a->losses, targets, (int)N, V, &sum, nt);
        a->have_targets = 1;
        if (loss) *loss = a->count ? (float)(sum / a->count) : 0.0f;
    }
    PROF(P_XENT);
    return 0;
}

int tr_backward(tr_model *m, float loss_scale, int n_threads, av_err *err) {
    tr_acts *a = m->acts;
    if (!a || !a->have_targets)
        return av_errf(err, AV_EINVAL, "train: backward needs a forward pass with targets first");
    a->have_targets = 0; /* the logits buffer becomes gradients */
    const tr_config *c = &m->cfg;
    const int nt = nthreads(n_threads), ntm = nt < a->nt_max ? nt : a->nt_max;
    const int B = a->B, T = a->T, E = c->dim, F = c->ffn, V = c->vocab, Q = m->q_dim,
              KV = m->kv_dim, hd = m->head_dim, H = c->n_head, KVH = c->n_kv_head;
    const size_t N = a->N;
    if (a->count == 0) return 0;

    PROF_START;
    lin_bwd(m, -1, 0, a->dxn, 0, a->logits, a->xnf, (int)N, E, V, loss_scale / (float)a->count, nt);
    PROF(P_HEAD_B);
    memset(a->dx, 0, N * E * sizeof(float));
    tr_rmsnorm_bwd_acc(a->dx, norm_g(m, -1, 0), a->dxn, a->x + (size_t)c->n_layer * N * E, norm_w(m, -1, 0),
                       a->rstdf, (int)N, E, nt);
    PROF(P_NORM_B);
    for (int l = c->n_layer - 1; l >= 0; l--) {
        /* recomputing: slot 0 still holds the last block from the forward */
        if (a->recompute && l < c->n_layer - 1) layer_fwd(m, l, a->dropped, nt, ntm);
        const size_t ls = a->recompute ? 0 : (size_t)l;
        float *x = a->x + l * N * E, *xmid = a->xmid + ls * N * E;
        float *xn1 = a->xn1 + ls * N * E, *xn2 = a->xn2 + ls * N * E;
        float *q = a->q + ls * N * Q, *k = a->k + ls * N * KV, *v = a->v + ls * N * KV;
        float *atty = a->atty + ls * N * Q, *P = a->P + ls * (size_t)B * H * T * 2;
        float *hg = a->hg + ls * N * F, *hu = a->hu + ls * N * F, *hh = a->hh + ls * N * F;
        /* x_out = xmid + hh Wd^T; hh = silu(hg) * hu; hg|hu = xn2 Wg|Wu^T */
        lin_bwd(m, l, TR_W_DOWN, a->dhh, 0, a->dx, hh, (int)N, F, E, 1.0f, nt);
        PROF(P_FFN_B);
        if (a->dropped) dropout_apply(a->dhh, N * F, m->dropout_key, l, 1, m->dropout, nt);
        tr_swiglu_bwd(a->dhg, a->dhu, a->dhh, hg, hu, N * F, nt);
        PROF(P_SWIGLU_B);
        lin_bwd(m, l, TR_W_GATE, a->dxn, 0, a->dhg, xn2, (int)N, E, F, 1.0f, nt);
        lin_bwd(m, l, TR_W_UP, a->dxn, 1, a->dhu, xn2, (int)N, E, F, 1.0f, nt);
        PROF(P_FFN_B);
        tr_rmsnorm_bwd_acc(a->dx, norm_g(m, l, TR_FFN_NORM), a->dxn, xmid, norm_w(m, l, TR_FFN_NORM),
                           a->rstd2 + ls * N, (int)N, E, nt);
        PROF(P_NORM_B);
        /* xmid = x + atty Wo^T; atty = attention(rope(xn1 Wq^T), rope(xn1 Wk^T), xn1 Wv^T) */
        lin_bwd(m, l, TR_WO, a->datt, 0, a->dx, atty, (int)N, Q, E, 1.0f, nt);
        PROF(P_WO_B);
        if (a->dropped) dropout_apply(a->datt, N * Q, m->dropout_key, l, 0, m->dropout, nt);
        tr_attention_bwd(a->dq, a->dk, a->dv, a->datt, P, q, k, v, B, T, H, KVH, hd,
                         a->att_scratch, ntm);
        PROF(P_ATT_B);
        tr_rope_bwd(a->dq, (int)N, T, H, hd, a->cos_t, a->sin_t, c->rope_mode, nt);
        tr_rope_bwd(a->dk, (int)N, T, KVH, hd, a->cos_t, a->sin_t, c->rope_mode, nt);
        PROF(P_ROPE_B);
        lin_bwd(m, l, TR_WQ, a->dxn, 0, a->dq, xn1, (int)N, E, Q, 1.0f, nt);
        lin_bwd(m, l, TR_WK, a->dxn, 1, a->dk, xn1, (int)N, E, KV, 1.0f, nt);
        lin_bwd(m, l, TR_WV, a->dxn, 1, a->dv, xn1, (int)N, E, KV, 1.0f, nt);
        PROF(P_QKV_B);
        tr_rmsnorm_bwd_acc(a->dx, norm_g(m, l, TR_ATTN_NORM), a->dxn, x, norm_w(m, l, TR_ATTN_NORM),
                           a->rstd1 + ls * N, (int)N, E, nt);
        PROF(P_NORM_B);
    }
    if (!m->lora) tr_embedding_bwd(tr_grad(m, m->t_embd), a->dx, a->inputs, (int)N, E);
    PROF(P_EMB_B);
    return 0;
}

void tr_zero_grad(tr_model *m) { memset(m->grads, 0, m->n_params * sizeof(float)); }

/* ---- optimizer -------------------------------------------------------- */

int tr_alloc_moments(tr_model *m, av_err *err) {
    if (m->m) return 0;
    m->m = calloc(m->n_params, sizeof(float));
    m->v = calloc(m->n_params, sizeof(float));
    if (!m->m || !m->v) {
        free(m->m);
        free(m->v);
        m->m = m->v = NULL;
        return av_errf(err, AV_ENOMEM, "train: out of memory for optimizer state");
    }
    return 0;
}

int tr_adamw_step(tr_model *m, const tr_adamw *o, float lr, int step, int n_threads,
                  av_err *err) {
    if (step < 1) return av_errf(err, AV_EINVAL, "train: AdamW step %d (counts from 1)", step);
    int rc = tr_alloc_moments(m, err);
    if (rc) return rc;
    const int nt = nthreads(n_threads);
    const float b1 = o->beta1, b2 = o->beta2, eps = o->eps;
    /* as torch.optim.AdamW (single-tensor path): bias corrections in double */
    const double bc1 = 1.0 - pow(b1, step), bc2 = 1.0 - pow(b2, step);
    const float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    /* one parallel region; each tensor split in whole 64-float blocks (no barriers) */
#pragma omp parallel num_threads(nt) if (nt > 1 && m->n_params > 65536)
    {
        const int th = omp_get_thread_num(), nth = omp_get_num_threads();
        for (int ti = 0; ti < m->n_tensors; ti++) {
            const tr_tensor *t = &m->tensors[ti];
            const size_t blocks = (t->n + 63) / 64, per = (blocks + nth - 1) / nth;
            const size_t i0 = th * per * 64 < t->n ? th * per * 64 : t->n,
                         i1 = (th + 1) * per * 64 < t->n ? (th + 1) * per * 64 : t->n;
            const size_t off = t->offset + i0;
            const float keep = t->decay ? 1.0f - lr * o->weight_decay : 1.0f;
            if (i1 > i0)
                tr_adamw_update(m->params + off, m->grads + off, m->m + off, m->v + off, i1 - i0,
                                keep, b1, b2, bc2_sqrt, step_size, eps);
        }
    }
    return 0;
}

#define NORM_CHUNK 65536

double tr_grad_norm(const tr_model *m, int n_threads) {
    const int nt = nthreads(n_threads);
    const size_t nc = (m->n_params + NORM_CHUNK - 1) / NORM_CHUNK;
    double *part = calloc(nc ? nc : 1, sizeof(double));
    double total = 0;
    if (!part) { /* serial fallback, same chunk order */
        for (size_t i = 0; i < m->n_params; i++) total += (double)m->grads[i] * m->grads[i];
        return sqrt(total);
    }
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && nc > 1)
    for (size_t cix = 0; cix < nc; cix++) {
        const size_t i0 = cix * NORM_CHUNK, i1 = i0 + NORM_CHUNK < m->n_params ? i0 + NORM_CHUNK : m->n_params;
        part[cix] = tr_sumsq(m->grads + i0, i1 - i0);
    }
    for (size_t cix = 0; cix < nc; cix++) total += part[cix];
    free(part);
    return sqrt(total);
}

float tr_clip_grad_norm(tr_model *m, float max_norm, int n_threads) {
    const double norm = tr_grad_norm(m, n_threads);
    if (max_norm > 0 && norm > max_norm) {
        const float s = (float)(max_norm / (norm + 1e-6));
        const int nt = nthreads(n_threads);
#pragma omp parallel for simd num_threads(nt) schedule(static) if (nt > 1 && m->n_params > 65536)
        for (size_t i = 0; i < m->n_params; i++) m->grads[i] *= s;
    }
    return (float)norm;
}

float tr_lr_at(const tr_schedule *s, int step) {
    if (step < s->warmup) return s->lr_max * (float)(step + 1) / (float)s->warmup;
    if (step >= s->total || s->total <= s->warmup) return s->lr_min;
    const double r = (double)(step - s->warmup) / (double)(s->total - s->warmup);
    return (float)(s->lr_min + 0.5 * (s->lr_max - s->lr_min) * (1.0 + cos(M_PI * r)));
}
