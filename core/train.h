/* train.h — training core: Llama blocks (embedding, RMSNorm, RoPE, GQA causal
 * attention, SwiGLU, tied or untied head) with forward and backward in f32,
 * cross-entropy with fused softmax, AdamW, LR schedule, gradient clipping.
 *
 * Layout (llm.c style): one flat f32 buffer for parameters, one for their
 * gradients, two for AdamW's moments (m, v), all in the same order; each
 * tensor is a view (name, shape, offset, decay flag) into them. Names and
 * layout are GGUF's (`token_embd.weight`, `blk.N.attn_q.weight`, ...; q/k
 * rows in the Meta/GGUF order, RoPE in NORM mode: adjacent pairs), exactly
 * what core/llm.c runs, so a trained model exports to GGUF and `anvil run`
 * needs no conversion. HF-layout checkpoints (rotate_half) are equally
 * trainable with rope_mode = OPS_ROPE_NEOX.
 *
 * Weight products in forward and backward go through cblas_sgemm, run
 * single-threaded inside OpenMP threads (each on a slice of the output);
 * attention, softmax/cross-entropy and the element-wise passes are vector
 * code (AVX-512 / AVX2 / plain C) in OpenMP loops. Activations are planned
 * once per (B, T) and reused.
 * Results are bit-identical for the same thread count; different thread
 * counts agree to rounding (different sgemm splits). */
#ifndef AV_TRAIN_H
#define AV_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "model.h"

typedef struct tr_config {
    int dim, n_layer, n_head, n_kv_head, ffn, vocab, seq_len;
    int tied;        /* output projection = token embedding */
    float rope_base; /* 10000 */
    float eps;       /* RMSNorm epsilon, 1e-5 */
    int rope_mode;   /* OPS_ROPE_NORM (GGUF layout, default 0) or OPS_ROPE_NEOX */
} tr_config;

typedef struct tr_tensor {
    char name[64];    /* GGUF name */
    int n_dims;       /* 1 or 2 */
    int64_t shape[2]; /* PyTorch order: [rows, cols] */
    size_t offset, n; /* element offset into the flat buffers, element count */
    int decay;        /* 1: AdamW weight decay applies (matrices by default) */
} tr_tensor;

typedef struct tr_acts tr_acts; /* activations of one (B, T); private */

typedef struct tr_model {
    tr_config cfg;
    int head_dim, q_dim, kv_dim;
    size_t n_params;
    float *params, *grads, *m, *v; /* [n_params] each; m/v allocated at the first AdamW step */
    tr_tensor *tensors;
    int n_tensors;
    /* views into params (grads at the same offsets): */
    int t_embd, t_out_norm, t_out; /* tensor indices; t_out == t_embd when tied */
    int *t_layer;                  /* [n_layer][9]: attn_norm q k v o ffn_norm gate up down */
    tr_acts *acts;
    /* Dropout (training only: tr_forward with targets). p = 0 (default) is off.
     * Applied to the attention output before attn_output and to the SwiGLU
     * activation before ffn_down, scaled by 1/(1-p); masks come from
     * tr_dropout_scale(dropout_key, ...), a stateless hash, so they depend on
     * the key only (not on threads): set the key per micro-batch (e.g. from
     * seed, step and micro-batch index) and a resumed run draws the same. */
    float dropout;
    uint64_t dropout_key;
    int eval; /* 1: no dropout (model's or LoRA's) even in a forward with targets */
    /* 1: keep only each block's input and recompute the block in the backward
     * (activation checkpointing): activations of one block instead of all,
     * for one more forward pass; results bit-identical. */
    int recompute;
    /* LoRA (tr_lora_new): the base is frozen and read in place from its
     * model (any dtype); params/grads/m/v hold only the adapters' A and B.
     * NULL: full training. Private (core/train_lora.c). */
    struct tr_lora *lora;
} tr_model;

/* The dropout multiplier (0 or 1/(1-p)) of element i of site (layer, which:
 * 0 attention output, 1 SwiGLU activation) under key. */
float tr_dropout_scale(uint64_t key, int layer, int which, size_t i, float p);

enum { TR_ATTN_NORM, TR_WQ, TR_WK, TR_WV, TR_WO, TR_FFN_NORM, TR_W_GATE, TR_W_UP, TR_W_DOWN,
       TR_PER_LAYER };

/* New model with parameters zeroed (see tr_init_weights). Checks the config
 * (dimensions positive, dim % n_head == 0, n_head % n_kv_head == 0, head_dim
 * even). Decay flags: matrices and embedding 1, norms 0 (change freely).
 * Errors: AV_EINVAL, AV_ENOMEM. The caller frees with tr_model_free. */
int tr_model_new(const tr_config *cfg, tr_model **out, av_err *err);
void tr_model_free(tr_model *m); /* NULL-safe */

/* Tensor by GGUF name, or NULL. */
tr_tensor *tr_find(tr_model *m, const char *name);
/* Pointer to a tensor's parameters / gradients. */
float *tr_param(tr_model *m, int tensor);
float *tr_grad(tr_model *m, int tensor);

/* Seeded initialization: every matrix and the embedding ~ N(0, 0.02)
 * (Box-Muller over a splitmix64 stream per tensor), attn_output and ffn_down
 * scaled by 1/sqrt(2*n_layer), norms = 1. */
void tr_init_weights(tr_model *m, uint64_t seed);

/* Model with av_model m's architecture and weights (GGUF names and layout,
 * `llama` architecture; F32/F16/BF16 tensors, as llm_new reads them). Tied
 * when output.weight is absent or is the same data as token_embd.weight.
 * seq_len = llama.context_length. Errors as llm_new, AV_ENOMEM. */
int tr_model_from_model(const av_model *src, const char *name, tr_model **out, av_err *err);

/* New av_model (caller frees) holding a copy of the parameters as F32 GGUF
 * tensors with llama.* metadata; keys of `meta` (may be NULL; e.g. the
 * source model's tokenizer.*) that are not llama.* are copied too. Tied
 * models get no output.weight (llm_new then reuses token_embd). Errors: AV_ENOMEM. */
int tr_model_to_model(const tr_model *m, const av_kvs *meta, av_model **out, av_err *err);

/* Forward pass over inputs [B, T] (row-major, token ids). With targets
 * ([B, T]; ids < 0 are ignored) *loss receives the mean cross-entropy over
 * the counted positions and the state needed by tr_backward is kept;
 * logits (may be NULL) receives [B*T, vocab] (before softmax). T <= seq_len.
 * Activations are (re)allocated only when (B, T) changes. n_threads <= 0: all.
 * Errors: AV_EINVAL (ids out of range, T > seq_len), AV_ENOMEM. */
int tr_forward(tr_model *m, const int32_t *inputs, const int32_t *targets, int B, int T,
               float *loss, float *logits, int n_threads, av_err *err);

/* Backward of the last tr_forward (which must have had targets): adds
 * d(loss_scale * loss)/d(params) into m->grads. Use loss_scale = 1/k for k
 * accumulated micro-batches. Errors: AV_EINVAL (no forward with targets). */
int tr_backward(tr_model *m, float loss_scale, int n_threads, av_err *err);

/* grads = 0. */
void tr_zero_grad(tr_model *m);

typedef struct tr_adamw {
    float beta1, beta2, eps, weight_decay; /* 0.9 0.95 1e-8 0.1 */
} tr_adamw;

/* Allocate m->m and m->v (zeroed) if they are not yet; a checkpoint loader
 * fills them before the first step. Errors: AV_ENOMEM. */
int tr_alloc_moments(tr_model *m, av_err *err);

/* One AdamW step (PyTorch's torch.optim.AdamW; decoupled decay p *= 1 - lr*wd
 * on tensors with decay set). step counts from 1 (bias correction).
 * Errors: AV_ENOMEM (moments allocated on first use), AV_EINVAL (step < 1). */
int tr_adamw_step(tr_model *m, const tr_adamw *opt, float lr, int step, int n_threads,
                  av_err *err);

/* Global L2 norm of all gradients (double accumulation over fixed chunks:
 * the same for any thread count). */
double tr_grad_norm(const tr_model *m, int n_threads);
/* Scale gradients by max_norm / (norm + 1e-6) when the norm exceeds max_norm
 * (torch.nn.utils.clip_grad_norm_); max_norm <= 0 only measures. Returns the
 * norm before clipping. */
float tr_clip_grad_norm(tr_model *m, float max_norm, int n_threads);

typedef struct tr_schedule {
    float lr_max, lr_min;
    int warmup, total; /* steps: linear warmup over [0, warmup), cosine to lr_min at total */
} tr_schedule;

/* LR at 0-based step: lr_max*(step+1)/warmup while step < warmup, then
 * lr_min + 0.5*(lr_max-lr_min)*(1+cos(pi*(step-warmup)/(total-warmup))),
 * lr_min from total on. */
float tr_lr_at(const tr_schedule *s, int step);

/* ---- LoRA (core/train_lora.c) ------------------------------------------
 * Each target W [out, in] of the frozen base gets A [r, in] and B [out, r]:
 * y = x W^T + (alpha/r) (drop(x) A^T) B^T, PEFT's LoRA layer. Trainable
 * tensors are named as llama.cpp's adapters: "blk.N.attn_q.weight.lora_a"
 * (shape [r, in]) and ".lora_b" ([out, r]). The base's matrices are read
 * from its model: F32 in place, other types (F16, BF16, Q8_0, Q4_K, ...)
 * dequantized a chunk of rows at a time into a scratch of about 1 MB, in
 * forward and backward; nothing of the base is copied whole. Everything else
 * (tr_forward, tr_backward, AdamW, clipping) works unchanged. */

typedef struct tr_lora_config {
    int r;            /* rank (8) */
    float alpha;      /* scale = alpha / r (16) */
    float dropout;    /* PEFT's lora_dropout on each target's input (0) */
    unsigned targets; /* bit (1u << TR_WQ) ... of the seven matrices */
} tr_lora_config;

/* "attn_q,attn_k,attn_v,attn_output,ffn_gate,ffn_up,ffn_down" (HF names
 * q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj and "all"
 * too) -> a targets mask. Errors: AV_EINVAL naming an unknown target. */
int tr_lora_parse_targets(const char *list, unsigned *mask, av_err *err);
/* The mask as a GGUF-name list ("attn_q,attn_v") into buf. */
void tr_lora_targets_str(unsigned mask, char *buf, size_t n);

/* LoRA model over base (llama architecture, any weight type llm_new reads;
 * base must outlive the model). seq_len 0: the base's context length.
 * A and B start at zero (see tr_lora_init). Errors: llm_new's, AV_EINVAL
 * (rank < 1, no targets), AV_ENOMEM. */
int tr_lora_new(const av_model *base, const char *name, const tr_lora_config *lc, int seq_len,
                tr_model **out, av_err *err);
/* The model's LoRA settings, or NULL for full training. */
const tr_lora_config *tr_lora_get(const tr_model *m);
/* PEFT's initialization: A ~ kaiming_uniform(a = sqrt(5)), that is
 * U(-1/sqrt(in), 1/sqrt(in)) from a seeded stream per tensor; B = 0. */
void tr_lora_init(tr_model *m, uint64_t seed);
/* The adapters as a new av_model in llama.cpp's GGUF adapter layout
 * (general.type adapter, adapter.type lora, adapter.lora.alpha; F32
 * copies). Errors: AV_EINVAL (not a LoRA model), AV_ENOMEM. */
int tr_lora_to_adapter(const tr_model *m, av_model **out, av_err *err);
/* Set A and B from an adapter model (tensors named as above, F32, the same
 * shapes). Errors: AV_EINVAL naming the tensor. */
int tr_lora_load(tr_model *m, const av_model *adapter, av_err *err);

/* A fingerprint of a base model (tensor names, types, shapes and sampled
 * bytes of each tensor's data): a resumed LoRA run checks it is on the same
 * base. */
uint64_t tr_lora_fingerprint(const av_model *base);

/* ---- per-op kernels (f32; forward and backward; tested by finite differences
 * in tests/test_grad.c). Shapes row-major, last dimension fastest. Backward
 * functions ADD into parameter gradients; input gradients are written unless
 * the name says _acc. nt: OpenMP threads. ---------------------------------- */

/* out [N, E] = table[ids[i]];  dtable [V, E] += scatter of dout. */
void tr_embedding_fwd(float *out, const float *table, const int32_t *ids, int N, int E);
void tr_embedding_bwd(float *dtable, const float *dout, const int32_t *ids, int N, int E);

/* out = x * rstd * w, rstd [N] = 1/sqrt(mean(x^2)+eps);  x, out: [N, E].
 * Backward: dx [N,E] += ..., dw [E] += sum_i dout*x*rstd (dw NULL: skipped). */
void tr_rmsnorm_fwd(float *out, float *rstd, const float *x, const float *w, int N, int E,
                    float eps, int nt);
void tr_rmsnorm_bwd_acc(float *dx, float *dw, const float *dout, const float *x, const float *w,
                        const float *rstd, int N, int E, int nt);

/* Y [N, O] = X [N, In] W^T (W [O, In]). Backward: dX [N, In] = dY W (+= when
 * acc), dW [O, In] += dY^T X (dW NULL: skipped). */
void tr_matmul_fwd(float *Y, const float *X, const float *W, int N, int In, int O, int nt);
void tr_matmul_bwd(float *dX, int acc, float *dW, const float *dY, const float *X,
                   const float *W, int N, int In, int O, int nt);

/* cos/sin tables [T, hd/2]: angle(t, i) = t * base^(-2i/hd) (double, rounded). */
void tr_rope_table(float *cos_t, float *sin_t, int T, int hd, float base);
/* Rotate x [N, n_head*hd] in place, row r at position r % T; bwd applies the
 * inverse rotation to the gradient in place. mode: OPS_ROPE_NORM / _NEOX. */
void tr_rope_fwd(float *x, int N, int T, int n_head, int hd, const float *cos_t,
                 const float *sin_t, int mode, int nt);
void tr_rope_bwd(float *dx, int N, int T, int n_head, int hd, const float *cos_t,
                 const float *sin_t, int mode, int nt);

/* Causal GQA attention: q [B*T, H*hd], k, v [B*T, KVH*hd], out [B*T, H*hd];
 * head h reads kv head h / (H/KVH); scale 1/sqrt(hd). P [B, H, T, 2] keeps
 * each softmax row's max and 1/sum for the backward, which recomputes the
 * probabilities (bit-identical to the forward's). scratch:
 * tr_attention_scratch(T, hd, nt) floats. Backward writes dq, dk, dv (same
 * shapes as q, k, v). Work is split by (batch, kv head), so the results are
 * the same for any nt. */
size_t tr_attention_scratch(int T, int hd, int nt);
void tr_attention_fwd(float *out, float *P, const float *q, const float *k, const float *v,
                      int B, int T, int H, int KVH, int hd, float *scratch, int nt);
void tr_attention_bwd(float *dq, float *dk, float *dv, const float *dout, const float *P,
                      const float *q, const float *k, const float *v, int B, int T, int H,
                      int KVH, int hd, float *scratch, int nt);

/* h = silu(g) * u over n; backward writes dg, du. */
void tr_swiglu_fwd(float *h, const float *g, const float *u, size_t n, int nt);
void tr_swiglu_bwd(float *dg, float *du, const float *dh, const float *g, const float *u,
                   size_t n, int nt);

/* Fused softmax + cross-entropy over logits [N, V], in place: logits become
 * probabilities, losses [N] = -log p[target] (0 where target < 0). Returns
 * the number of counted rows; *sum the loss sum (double, summed in row order).
 * Backward turns probabilities into dlogits = scale * (p - onehot) in place
 * (rows with target < 0 become 0). */
int tr_xent_fwd(float *logits, float *losses, const int32_t *targets, int N, int V, double *sum,
                int nt);
void tr_xent_bwd(float *probs, const int32_t *targets, int N, int V, float scale, int nt);

/* ---- internal: used by train.c and the tests, not a stable API ------------ */

/* C [M, N] = alpha op(A) op(B) + beta C (row-major cblas_sgemm), split over
 * nt OpenMP threads along the longer of M and N (each slice one
 * single-threaded sgemm). */
void tr_sgemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc, int nt);
/* The seeded stream of the initializations (splitmix64). */
uint64_t tr_splitmix64(uint64_t *state);
/* LoRA internals called by tr_forward / tr_backward (train_lora.c). */
struct tr_lora;
void tr_lora_free(struct tr_lora *lo);
int tr_lora_plan(tr_model *m, size_t N, int training, av_err *err);
void tr_lora_embed(tr_model *m, float *out, const int32_t *ids, int N);
const float *tr_lora_norm(const tr_model *m, int layer, int slot); /* layer -1: output norm */
/* Y [N, out] (+)= X W^T + LoRA of (layer, slot); layer -1: the output head. */
void tr_lora_linear_fwd(tr_model *m, int layer, int slot, float *Y, int acc, const float *X, int N,
                        int nt);
/* dX [N, in] (+)= alpha dY W + LoRA input gradient; A, B gradients added. */
void tr_lora_linear_bwd(tr_model *m, int layer, int slot, float *dX, int acc, const float *dY,
                        const float *X, int N, float alpha, int nt);

/* Y [N, O] += X [N, In] W^T. */
void tr_matmul_fwd_acc(float *Y, const float *X, const float *W, int N, int In, int O, int nt);
/* tr_matmul_bwd with both products scaled by alpha. */
void tr_matmul_bwd_scaled(float *dX, int acc, float *dW, const float *dY, const float *X,
                          const float *W, int N, int In, int O, float alpha, int nt);
/* tr_xent_fwd leaving p - onehot(target) in logits instead of p (rows with
 * target < 0 become 0): the unscaled dlogits, so the backward folds the
 * loss scale into the head's products. */
int tr_xent_fwd_grad(float *logits, float *losses, const int32_t *targets, int N, int V,
                     double *sum, int nt);
/* AdamW over [0, n) (one thread): p *= keep; m, v moments; p -= step_size m /
 * (sqrt(v) / bc2_sqrt + eps). Sum of squares in double. */
void tr_adamw_update(float *p, const float *g, float *m, float *v, size_t n, float keep,
                     float b1, float b2, float bc2_sqrt, float step_size, float eps);
double tr_sumsq(const float *x, size_t n);
/* The exp the kernels use (Cephes expf polynomial, ~1 ulp; 0 below -87.34,
 * clamped at 88). */
float tr_expf(float x);
/* Plain twins of the vector kernels (the previous implementations: full
 * T x T sgemm attention keeping P [B, H, T, T], scalar expf). */
size_t tr_attention_scratch_ref(int T, int nt);
void tr_attention_fwd_ref(float *out, float *P, const float *q, const float *k, const float *v,
                          int B, int T, int H, int KVH, int hd, float *scratch, int nt);
void tr_attention_bwd_ref(float *dq, float *dk, float *dv, const float *dout, const float *P,
                          const float *q, const float *k, const float *v, int B, int T, int H,
                          int KVH, int hd, float *scratch, int nt);
void tr_swiglu_fwd_ref(float *h, const float *g, const float *u, size_t n);
void tr_swiglu_bwd_ref(float *dg, float *du, const float *dh, const float *g, const float *u,
                       size_t n);
int tr_xent_fwd_ref(float *logits, float *losses, const int32_t *targets, int N, int V,
                    double *sum);

#endif
