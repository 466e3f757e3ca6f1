/* train_lora.c — LoRA on a frozen base for the training core (train.h):
 * the model's trainable tensors are only the adapters' A and B; the base's
 * weights are llm_weight views into its av_model, multiplied in place (F32)
 * or dequantized a chunk of rows at a time (F16, BF16, quantized). */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm.h"
#include "ops.h"
#include "train.h"

#define DEQ_FLOATS (1u << 18) /* dequantization scratch: 1 MB of rows */
#define LORA_KEY 0x4c6f52414d61736bull /* dropout stream of the LoRA inputs */

struct tr_lora {
    tr_lora_config cfg;
    float scale; /* alpha / r */
    llm *base;
    int *t_ab;   /* [n_layer][TR_PER_LAYER][2]: tensor index of A and B, -1: not a target */
    float *deq;  /* [DEQ_FLOATS or one row if larger] */
    size_t deq_n;
    /* per batch of N rows */
    size_t N;
    float *u;    /* [n_layer][TR_PER_LAYER][N, r]: scale * drop(X) A^T, kept for the backward */
    float *xd;   /* [N, max in]: drop(X) */
    float *dxd;  /* [N, max in] */
    float *du;   /* [N, r] */
    int training; /* the last forward had targets: LoRA dropout applies */
};

static const char *const SLOT_NAME[TR_PER_LAYER] = {
    "attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"};
static const char *const SLOT_HF[TR_PER_LAYER] = {
    NULL, "q_proj", "k_proj", "v_proj", "o_proj", NULL, "gate_proj", "up_proj", "down_proj"};

static int is_matrix(int slot) { return slot != TR_ATTN_NORM && slot != TR_FFN_NORM; }

int tr_lora_parse_targets(const char *list, unsigned *mask, av_err *err) {
    *mask = 0;
    const char *p = list;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        int found = 0;
        if (n == 3 && !strncmp(p, "all", 3)) {
            for (int s = 0; s < TR_PER_LAYER; s++)
                if (is_matrix(s)) *mask |= 1u << s;
            found = 1;
        }
        for (int s = 0; s < TR_PER_LAYER && !found; s++) {
            if (!is_matrix(s)) continue;
            if ((strlen(SLOT_NAME[s]) == n && !strncmp(p, SLOT_NAME[s], n)) ||
                (strlen(SLOT_HF[s]) == n && !strncmp(p, SLOT_HF[s], n))) {
                *mask |= 1u << s;
                found = 1;
            }
        }
        if (!found)
            return av_errf(err, AV_EINVAL,
                           "unknown LoRA target '%.*s' (attn_q, attn_k, attn_v, attn_output, ffn_gate, "
                           "ffn_up, ffn_down, their HF names q_proj ... down_proj, or all)",
                           (int)n, p);
        p += n;
        if (*p == ',') p++;
    }
    if (!*mask) return av_errf(err, AV_EINVAL, "no LoRA targets given");
    return 0;
}

void tr_lora_targets_str(unsigned mask, char *buf, size_t n) {
    size_t o = 0;
    buf[0] = 0;
    for (int s = 0; s < TR_PER_LAYER; s++)
        if (is_matrix(s) && (mask >> s & 1) && o < n)
            o += (size_t)snprintf(buf + o, n - o, "%s%s", o ? "," : "", SLOT_NAME[s]);
}

static const llm_weight *base_weight(const llm *b, int layer, int slot) {
    if (layer < 0) return &b->output;
    const llm_layer *ly = &b->layers[layer];
    switch (slot) {
    case TR_WQ: return &ly->wq;
    case TR_WK: return &ly->wk;
    case TR_WV: return &ly->wv;
    case TR_WO: return &ly->wo;
    case TR_W_GATE: return &ly->w_gate;
    case TR_W_UP: return &ly->w_up;
    case TR_W_DOWN: return &ly->w_down;
    default: return NULL;
    }
}

void tr_lora_free(struct tr_lora *lo) {
    if (!lo) return;
    llm_free(lo->base);
    free(lo->t_ab);
    free(lo->deq);
    free(lo->u);
    free(lo->xd);
    free(lo->dxd);
    free(lo->du);
    free(lo);
}

const tr_lora_config *tr_lora_get(const tr_model *m) { return m->lora ? &m->lora->cfg : NULL; }

int tr_lora_new(const av_model *base, const char *name, const tr_lora_config *lc, int seq_len,
                tr_model **out, av_err *err) {
    *out = NULL;
    if (lc->r < 1 || lc->r > 65536 || !(lc->alpha > 0) || lc->dropout < 0 || lc->dropout >= 1 || !lc->targets)
        return av_errf(err, AV_EINVAL, "LoRA: rank %d, alpha %g, dropout %g, targets %#x: rank >= 1, alpha > 0, "
                       "dropout in [0, 1) and at least one target", lc->r, (double)lc->alpha,
                       (double)lc->dropout, lc->targets);
    llm *b = NULL;
    int rc = llm_new(base, name, &b, err);
    if (rc) return rc;
    const llm_hparams *hp = &b->hp;
    tr_model *m = calloc(1, sizeof *m);
    struct tr_lora *lo = calloc(1, sizeof *lo);
    if (!m || !lo) {
        free(m);
        free(lo);
        llm_free(b);
        return av_errf(err, AV_ENOMEM, "LoRA: out of memory");
    }
    m->lora = lo; /* from here tr_model_free releases lo and the base views */
    lo->base = b;
    lo->cfg = *lc;
    lo->scale = lc->alpha / (float)lc->r;
    m->cfg = (tr_config){.dim = hp->n_embd, .n_layer = hp->n_layer, .n_head = hp->n_head,
                         .n_kv_head = hp->n_head_kv, .ffn = hp->n_ff, .vocab = hp->n_vocab,
                         .seq_len = seq_len > 0 ? seq_len : hp->n_ctx_train,
                         .tied = b->output.data == b->tok_embd.data, .rope_base = hp->rope_base,
                         .eps = hp->rms_eps, .rope_mode = OPS_ROPE_NORM};
    m->head_dim = hp->head_dim;
    m->q_dim = hp->n_head * hp->head_dim;
    m->kv_dim = hp->n_head_kv * hp->head_dim;
    m->t_embd = m->t_out = m->t_out_norm = -1;
    const int L = hp->n_layer, r = lc->r;
    int n_targets = 0;
    for (int s = 0; s < TR_PER_LAYER; s++) n_targets += is_matrix(s) && (lc->targets >> s & 1);
    m->tensors = calloc((size_t)L * n_targets * 2, sizeof *m->tensors);
    lo->t_ab = malloc((size_t)L * TR_PER_LAYER * 2 * sizeof *lo->t_ab);
    if (!m->tensors || !lo->t_ab) goto oom;
    size_t max_row = 0;
    for (int l = 0; l < L; l++)
        for (int s = 0; s < TR_PER_LAYER; s++) {
            int *ab = lo->t_ab + ((size_t)l * TR_PER_LAYER + s) * 2;
            ab[0] = ab[1] = -1;
            if (!is_matrix(s)) continue;
            const llm_weight *w = base_weight(b, l, s);
            if ((size_t)w->cols > max_row) max_row = (size_t)w->cols;
            if (!(lc->targets >> s & 1)) continue;
            for (int k = 0; k < 2; k++) {
                tr_tensor *t = &m->tensors[m->n_tensors];
                snprintf(t->name, sizeof t->name, "blk.%d.%s.weight.lora_%c", l, SLOT_NAME[s], k ? 'b' : 'a');
                t->n_dims = 2;
                t->shape[0] = k ? w->rows : r;
                t->shape[1] = k ? r : w->cols;
                t->n = (size_t)t->shape[0] * (size_t)t->shape[1];
                t->offset = m->n_params;
                t->decay = 1;
                m->n_params += t->n;
                ab[k] = m->n_tensors++;
            }
        }
    if ((size_t)b->output.cols > max_row) max_row = (size_t)b->output.cols;
    lo->deq_n = max_row > DEQ_FLOATS ? max_row : DEQ_FLOATS;
    lo->deq = malloc(lo->deq_n * sizeof(float));
    m->params = calloc(m->n_params, sizeof(float));
    m->grads = calloc(m->n_params, sizeof(float));
    if (!lo->deq || !m->params || !m->grads) goto oom;
    *out = m;
    return 0;
oom:
    tr_model_free(m);
    return av_errf(err, AV_ENOMEM, "LoRA: out of memory");
}

int tr_lora_plan(tr_model *m, size_t N, int training, av_err *err) {
    struct tr_lora *lo = m->lora;
    if (!lo) return 0;
    lo->training = training;
    if (lo->N == N) return 0;
    const size_t L = (size_t)m->cfg.n_layer, r = (size_t)lo->cfg.r;
    size_t in_max = (size_t)m->cfg.dim;
    if ((size_t)m->cfg.ffn > in_max) in_max = (size_t)m->cfg.ffn;
    if ((size_t)m->q_dim > in_max) in_max = (size_t)m->q_dim;
    free(lo->u); free(lo->xd); free(lo->dxd); free(lo->du);
    lo->u = malloc(L * TR_PER_LAYER * N * r * sizeof(float));
    lo->du = malloc(N * r * sizeof(float));
    lo->xd = lo->cfg.dropout > 0 ? malloc(N * in_max * sizeof(float)) : NULL;
    lo->dxd = lo->cfg.dropout > 0 ? malloc(N * in_max * sizeof(float)) : NULL;
    if (!lo->u || !lo->du || (lo->cfg.dropout > 0 && (!lo->xd || !lo->dxd))) {
        lo->N = 0;
        return av_errf(err, AV_ENOMEM, "LoRA: out of memory for activations of %zu tokens", N);
    }
    lo->N = N;
    return 0;
}

/* ---- frozen base ------------------------------------------------------ */

static void row_to_float(const llm_weight *w, int64_t row, float *dst) {
    const char *p = (const char *)w->data + (size_t)row * ops_row_bytes(w->type, w->cols);
    if (w->type == AV_F32) memcpy(dst, p, (size_t)w->cols * sizeof(float));
    else av_dtype_traits_of(w->type)->to_float(p, dst, w->cols);
}

void tr_lora_embed(tr_model *m, float *out, const int32_t *ids, int N) {
    const llm_weight *e = &m->lora->base->tok_embd;
    for (int i = 0; i < N; i++) row_to_float(e, ids[i], out + (size_t)i * e->cols);
}

const float *tr_lora_norm(const tr_model *m, int layer, int slot) {
    const llm *b = m->lora->base;
    if (layer < 0) return b->out_norm;
    return slot == TR_ATTN_NORM ? b->layers[layer].attn_norm : b->layers[layer].ffn_norm;
}

/* Rows per dequantized chunk: the scratch full, in multiples of 16. */
static int64_t chunk_rows(const struct tr_lora *lo, const llm_weight *w) {
    int64_t c = (int64_t)(lo->deq_n / (size_t)w->cols);
    if (c > 16) c &= ~(int64_t)15;
    return c < w->rows ? c : w->rows;
}

static void dequant_rows(const llm_weight *w, int64_t r0, int64_t n, float *dst, int nt) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && n * w->cols > 65536)
    for (int64_t i = 0; i < n; i++) row_to_float(w, r0 + i, dst + (size_t)i * w->cols);
}

/* Y [N, rows] (+)= X [N, cols] W^T */
static void frozen_fwd(struct tr_lora *lo, const llm_weight *w, float *Y, int acc, const float *X, int N, int nt) {
    const int O = (int)w->rows, In = (int)w->cols;
    if (w->type == AV_F32) { /* in place, as full training multiplies */
        if (acc) tr_matmul_fwd_acc(Y, X, w->data, N, In, O, nt);
        else tr_matmul_fwd(Y, X, w->data, N, In, O, nt);
        return;
    }
    const int64_t R = chunk_rows(lo, w);
    for (int64_t r0 = 0; r0 < O; r0 += R) {
        const int n = (int)(O - r0 < R ? O - r0 : R);
        dequant_rows(w, r0, n, lo->deq, nt);
        tr_sgemm(0, 1, N, n, In, 1.0f, X, In, lo->deq, In, acc ? 1.0f : 0.0f, Y + r0, O, nt);
    }
}

/* dX [N, cols] (+)= alpha dY [N, rows] W */
static void frozen_bwd(struct tr_lora *lo, const llm_weight *w, float *dX, int acc, const float *dY, int N,
                       float alpha, int nt) {
    const int O = (int)w->rows, In = (int)w->cols;
    if (w->type == AV_F32) {
        tr_matmul_bwd_scaled(dX, acc, NULL, dY, NULL, w->data, N, In, O, alpha, nt);
        return;
    }
    const int64_t R = chunk_rows(lo, w);
    for (int64_t r0 = 0; r0 < O; r0 += R) {
        const int n = (int)(O - r0 < R ? O - r0 : R);
        dequant_rows(w, r0, n, lo->deq, nt);
        tr_sgemm(0, 0, N, In, n, alpha, dY + r0, O, lo->deq, In, acc || r0 ? 1.0f : 0.0f, dX, In, nt);
    }
}

/* ---- LoRA forward / backward -------------------------------------------
 * u = scale drop(X) A^T [N, r] (kept); Y += u B^T.
 * Backward: du = dY B, dB += dY^T u; dA += scale du^T drop(X);
 * dX += drop'(scale du A). */

static void drop_rows(float *dst, const float *src, size_t n, uint64_t key, int layer, int slot, float p, int nt) {
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && n > 32768)
    for (size_t i = 0; i < n; i++)
        dst[i] = src[i] * tr_dropout_scale(key ^ LORA_KEY, layer * TR_PER_LAYER + slot, 0, i, p);
}

void tr_lora_linear_fwd(tr_model *m, int layer, int slot, float *Y, int acc, const float *X, int N, int nt) {
    struct tr_lora *lo = m->lora;
    const llm_weight *w = base_weight(lo->base, layer, slot);
    frozen_fwd(lo, w, Y, acc, X, N, nt);
    if (layer < 0) return;
    const int *ab = lo->t_ab + ((size_t)layer * TR_PER_LAYER + slot) * 2;
    if (ab[0] < 0) return;
    const int In = (int)w->cols, O = (int)w->rows, r = lo->cfg.r;
    float *u = lo->u + ((size_t)layer * TR_PER_LAYER + slot) * lo->N * r;
    const float *xin = X;
    if (lo->cfg.dropout > 0 && lo->training) {
        drop_rows(lo->xd, X, (size_t)N * In, m->dropout_key, layer, slot, lo->cfg.dropout, nt);
        xin = lo->xd;
    }
    tr_sgemm(0, 1, N, r, In, lo->scale, xin, In, tr_param(m, ab[0]), In, 0.0f, u, r, nt);
    tr_sgemm(0, 1, N, O, r, 1.0f, u, r, tr_param(m, ab[1]), r, 1.0f, Y, O, nt);
}

void tr_lora_linear_bwd(tr_model *m, int layer, int slot, float *dX, int acc, const float *dY, const float *X,
                        int N, float alpha, int nt) {
    struct tr_lora *lo = m->lora;
    const llm_weight *w = base_weight(lo->base, layer, slot);
    frozen_bwd(lo, w, dX, acc, dY, N, alpha, nt);
    if (layer < 0) return;
    const int *ab = lo->t_ab + ((size_t)layer * TR_PER_LAYER + slot) * 2;
    if (ab[0] < 0) return;
    const int In = (int)w->cols, O = (int)w->rows, r = lo->cfg.r;
    const float *u = lo->u + ((size_t)layer * TR_PER_LAYER + slot) * lo->N * r;
    /* du [N, r] = alpha dY B;  dB [O, r] += alpha dY^T u */
    tr_sgemm(0, 0, N, r, O, alpha, dY, O, tr_param(m, ab[1]), r, 0.0f, lo->du, r, nt);
    tr_sgemm(1, 0, O, r, N, alpha, dY, O, u, r, 1.0f, tr_grad(m, ab[1]), r, nt);
    const int drop = lo->cfg.dropout > 0 && lo->training;
    const float *xin = X;
    if (drop) {
        drop_rows(lo->xd, X, (size_t)N * In, m->dropout_key, layer, slot, lo->cfg.dropout, nt);
        xin = lo->xd;
    }
    /* dA [r, In] += scale du^T drop(X) */
    tr_sgemm(1, 0, r, In, N, lo->scale, lo->du, r, xin, In, 1.0f, tr_grad(m, ab[0]), In, nt);
    /* dX += drop'(scale du A) */
    if (!drop) {
        tr_sgemm(0, 0, N, In, r, lo->scale, lo->du, r, tr_param(m, ab[0]), In, 1.0f, dX, In, nt);
        return;
    }
    tr_sgemm(0, 0, N, In, r, lo->scale, lo->du, r, tr_param(m, ab[0]), In, 0.0f, lo->dxd, In, nt);
    drop_rows(lo->dxd, lo->dxd, (size_t)N * In, m->dropout_key, layer, slot, lo->cfg.dropout, nt);
    const size_t n = (size_t)N * In;
#pragma omp parallel for simd schedule(static) num_threads(nt) if (nt > 1 && n > 32768)
    for (size_t i = 0; i < n; i++) dX[i] += lo->dxd[i];
}

/* ---- init, adapters ----------------------------------------------------- */

void tr_lora_init(tr_model *m, uint64_t seed) {
    for (int i = 0; i < m->n_tensors; i++) {
        const tr_tensor *t = &m->tensors[i];
        float *p = m->params + t->offset;
        const size_t L = strlen(t->name);
        if (t->name[L - 1] == 'b') { /* lora_b */
            memset(p, 0, t->n * sizeof(float));
            continue;
        }
        /* kaiming_uniform(a=sqrt(5)): gain sqrt(2/(1+5)), bound gain*sqrt(3/fan_in) = 1/sqrt(fan_in) */
        const double bound = 1.0 / sqrt((double)t->shape[1]);
        uint64_t s = seed ^ (0xD1B54A32D192ED03ull * (uint64_t)(i + 1));
        for (size_t j = 0; j < t->n; j++) {
            const double u = (double)(tr_splitmix64(&s) >> 11) * (1.0 / 9007199254740992.0);
            p[j] = (float)((2.0 * u - 1.0) * bound);
        }
    }
}

int tr_lora_to_adapter(const tr_model *m, av_model **out, av_err *err) {
    *out = NULL;
    if (!m->lora) return av_errf(err, AV_EINVAL, "LoRA: not a LoRA model");
    av_model *o = av_model_new();
    if (!o) goto oom;
    if (av_kvs_set_str(&o->kv, "general.architecture", "llama") ||
        av_kvs_set_str(&o->kv, "general.type", "adapter") || av_kvs_set_str(&o->kv, "adapter.type", "lora") ||
        av_kvs_set_f32(&o->kv, "adapter.lora.alpha", m->lora->cfg.alpha) ||
        av_kvs_set_str(&o->kv, "general.name", "anvil-lora"))
        goto oom;
    for (int i = 0; i < m->n_tensors; i++) {
        const tr_tensor *t = &m->tensors[i];
        float *buf = malloc(t->n * sizeof(float));
        if (!buf) goto oom;
        memcpy(buf, m->params + t->offset, t->n * sizeof(float));
        if (!av_model_add_tensor(o, t->name, AV_F32, 2, t->shape, buf, buf)) {
            free(buf);
            goto oom;
        }
    }
    *out = o;
    return 0;
oom:
    av_model_free(o);
    return av_errf(err, AV_ENOMEM, "LoRA: out of memory exporting the adapter");
}

int tr_lora_load(tr_model *m, const av_model *ad, av_err *err) {
    if (!m->lora) return av_errf(err, AV_EINVAL, "LoRA: not a LoRA model");
    for (int i = 0; i < m->n_tensors; i++) {
        const tr_tensor *t = &m->tensors[i];
        const av_tensor *x = av_model_find(ad, t->name);
        if (!x) return av_errf(err, AV_EINVAL, "LoRA: the adapter has no tensor '%s'", t->name);
        if (x->dtype != AV_F32 || x->n_dims != 2 || x->shape[0] != t->shape[0] || x->shape[1] != t->shape[1])
            return av_errf(err, AV_EINVAL, "LoRA: adapter tensor '%s' is not F32 [%lld, %lld]", t->name,
                           (long long)t->shape[0], (long long)t->shape[1]);
        memcpy(m->params + t->offset, x->data, t->n * sizeof(float));
    }
    return 0;
}

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

uint64_t tr_lora_fingerprint(const av_model *base) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < base->n_tensors; i++) {
        const av_tensor *t = &base->tensors[i];
        h = fnv(h, t->name, strlen(t->name) + 1);
        h = fnv(h, &t->dtype, sizeof t->dtype);
        h = fnv(h, t->shape, sizeof(int64_t) * (size_t)t->n_dims);
        /* 64 bytes at 16 evenly spaced places: cheap for any size, catches another base */
        int ok = 1;
        const size_t n = t->data ? av_tensor_src_nbytes(t, &ok) : 0;
        for (int k = 0; k < 16 && n && ok; k++) {
            const size_t off = n > 64 ? (n - 64) / 15 * (size_t)k : 0;
            h = fnv(h, (const char *)t->data + off, n < 64 ? n : 64);
        }
    }
    return h;
}
