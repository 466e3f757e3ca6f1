/* test_lora_train.c — LoRA training in the training core (core/train_lora.c).
 *
 * References: PyTorch (tests/fixtures/lora/lora_step.safetensors, made by
 * scripts/fixtures/gen_lora_step.py: one step of PEFT-style LoRA on
 * stories260K: loss, A/B gradients, loss after one AdamW step), and the
 * full-model gradient (checked by finite differences in test_grad.c): with
 * W' = W + s B A, dL/dB = s dL/dW' A^T and dL/dA = s B^T dL/dW'. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "llama2c.h"
#include "quant.h"
#include "safetensors.h"
#include "testutil.h"
#include "train.h"

#define ALL_TARGETS                                                                                       \
    ((1u << TR_WQ) | (1u << TR_WK) | (1u << TR_WV) | (1u << TR_WO) | (1u << TR_W_GATE) | (1u << TR_W_UP) | \
     (1u << TR_W_DOWN))

static av_model *load_260k(void) {
    av_err e = {0};
    av_model *src = NULL;
    cr_assert_eq(l2c_read(shared_path("models/stories260K.bin"), NULL, &src, &e), 0, "%s", e.msg);
    return src;
}

static av_model *load_d256(void) {
    av_err e = {0};
    av_model *src = NULL;
    cr_assert_eq(gguf_read(shared_path("reference/llamacpp/stories-d256-f32.gguf"), &src, &e), 0, "%s", e.msg);
    return src;
}

static void batch(int32_t *in, int32_t *tg, int n, int vocab, uint32_t seed) {
    for (int i = 0; i <= n; i++) {
        seed = seed * 1664525u + 1013904223u;
        int32_t t = (int32_t)((seed >> 8) % (uint32_t)vocab);
        if (i < n) in[i] = t;
        if (i > 0) tg[i - 1] = t;
    }
}

static void fill_rand(tr_model *m, uint64_t seed, float scale) {
    for (size_t i = 0; i < m->n_params; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        m->params[i] = ((float)(seed >> 40) / 16777216.0f * 2 - 1) * scale;
    }
}

static double max_abs(const float *x, size_t n) {
    double mx = 0;
    for (size_t i = 0; i < n; i++) mx = fmax(mx, fabs(x[i]));
    return mx;
}

Test(lora_train, zero_b_is_the_base_bit_for_bit) {
    av_model *src = load_260k();
    av_err e = {0};
    tr_model *full = NULL, *lo = NULL;
    cr_assert_eq(tr_model_from_model(src, "260K", &full, &e), 0, "%s", e.msg);
    tr_lora_config lc = {.r = 8, .alpha = 16, .targets = ALL_TARGETS};
    cr_assert_eq(tr_lora_new(src, "260K", &lc, 0, &lo, &e), 0, "%s", e.msg);
    tr_lora_init(lo, 42);
    cr_assert_eq(lo->n_tensors, 5 * 7 * 2);
    /* A ~ U(-1/sqrt(in), 1/sqrt(in)), B = 0 (PEFT) */
    const tr_tensor *a = tr_find(lo, "blk.0.ffn_down.weight.lora_a"), *b = tr_find(lo, "blk.0.ffn_down.weight.lora_b");
    cr_assert(a && b);
    cr_expect_eq(a->shape[0], 8);
    cr_expect_eq(a->shape[1], 172);
    cr_expect_eq(b->shape[0], 64);
    cr_expect_eq(b->shape[1], 8);
    double amax = max_abs(lo->params + a->offset, a->n);
    cr_expect(amax <= 1 / sqrt(172.0) && amax > 0.9 / sqrt(172.0), "A max %g", amax);
    cr_expect_eq(max_abs(lo->params + b->offset, b->n), 0);
    enum { B = 2, T = 32 };
    int32_t in[B * T], tg[B * T];
    batch(in, tg, B * T, 512, 3);
    float *l1 = malloc(sizeof(float) * B * T * 512), *l2 = malloc(sizeof(float) * B * T * 512);
    float loss1, loss2;
    cr_assert_eq(tr_forward(full, in, tg, B, T, &loss1, l1, 1, &e), 0, "%s", e.msg);
    cr_assert_eq(tr_forward(lo, in, tg, B, T, &loss2, l2, 1, &e), 0, "%s", e.msg);
    cr_expect_eq(memcmp(l1, l2, sizeof(float) * B * T * 512), 0, "logits differ");
    cr_expect_eq(loss1, loss2);
    free(l1);
    free(l2);
    tr_model_free(full);
    tr_model_free(lo);
    av_model_free(src);
}

/* A new empty model with src's metadata. */
static av_model *with_metadata_of(const av_model *src) {
    av_model *o = av_model_new();
    for (size_t i = 0; i < src->kv.n; i++) {
        av_value v;
        cr_assert_eq(av_value_copy(&v, &src->kv.items[i].val), 0);
        cr_assert_eq(av_kvs_set(&o->kv, src->kv.items[i].key, &v), 0);
    }
    return o;
}

/* base with W' = W + s B A merged in, as a new av_model (views into src, merged tensors owned) */
static av_model *merged(const av_model *src, const tr_model *lo, float s) {
    av_model *o = with_metadata_of(src);
    for (size_t i = 0; i < src->n_tensors; i++) {
        const av_tensor *t = &src->tensors[i];
        char an[96];
        snprintf(an, sizeof an, "%s.lora_a", t->name);
        const tr_tensor *a = tr_find((tr_model *)lo, an);
        if (!a) {
            cr_assert(av_model_add_tensor(o, t->name, t->dtype, t->n_dims, t->shape, t->data, NULL));
            continue;
        }
        snprintf(an, sizeof an, "%s.lora_b", t->name);
        const tr_tensor *b = tr_find((tr_model *)lo, an);
        const int64_t O = t->shape[0], In = t->shape[1], r = a->shape[0];
        float *w = malloc(sizeof(float) * O * In);
        memcpy(w, t->data, sizeof(float) * O * In);
        const float *A = lo->params + a->offset, *Bm = lo->params + b->offset;
        for (int64_t i2 = 0; i2 < O; i2++)
            for (int64_t j = 0; j < In; j++) {
                double acc = 0;
                for (int64_t k = 0; k < r; k++) acc += (double)Bm[i2 * r + k] * A[k * In + j];
                w[i2 * In + j] += (float)(s * acc);
            }
        cr_assert(av_model_add_tensor(o, t->name, AV_F32, 2, t->shape, w, w));
    }
    return o;
}

Test(lora_train, gradients_equal_the_chain_rule_through_the_merged_model) {
    av_model *src = load_260k();
    av_err e = {0};
    tr_model *lo = NULL, *full = NULL;
    tr_lora_config lc = {.r = 4, .alpha = 8, .targets = ALL_TARGETS};
    cr_assert_eq(tr_lora_new(src, "260K", &lc, 0, &lo, &e), 0, "%s", e.msg);
    fill_rand(lo, 9, 0.05f);
    av_model *mg = merged(src, lo, 2.0f);
    cr_assert_eq(tr_model_from_model(mg, "merged", &full, &e), 0, "%s", e.msg);
    enum { B = 2, T = 24 };
    int32_t in[B * T], tg[B * T];
    batch(in, tg, B * T, 512, 11);
    float l1, l2;
    tr_zero_grad(lo);
    tr_zero_grad(full);
    cr_assert_eq(tr_forward(lo, in, tg, B, T, &l1, NULL, 2, &e), 0, "%s", e.msg);
    cr_assert_eq(tr_backward(lo, 1.0f, 2, &e), 0, "%s", e.msg);
    cr_assert_eq(tr_forward(full, in, tg, B, T, &l2, NULL, 2, &e), 0, "%s", e.msg);
    cr_assert_eq(tr_backward(full, 1.0f, 2, &e), 0, "%s", e.msg);
    cr_expect(fabsf(l1 - l2) < 1e-5f * fabsf(l2), "loss %g vs merged %g", l1, l2);
    int checked = 0;
    for (int i = 0; i < lo->n_tensors; i += 2) {
        const tr_tensor *a = &lo->tensors[i], *b = &lo->tensors[i + 1];
        char wn[96];
        snprintf(wn, sizeof wn, "%.*s", (int)(strlen(a->name) - 7), a->name);
        tr_tensor *w = tr_find(full, wn);
        cr_assert(w, "%s", wn);
        const int64_t O = w->shape[0], In = w->shape[1], r = a->shape[0];
        const float *G = full->grads + w->offset, *A = lo->params + a->offset, *Bm = lo->params + b->offset;
        const float *gA = lo->grads + a->offset, *gB = lo->grads + b->offset;
        double dA = 0, mA = 0, dB = 0, mB = 0;
        for (int64_t k = 0; k < r; k++)
            for (int64_t j = 0; j < In; j++) { /* s B^T G */
                double x = 0;
                for (int64_t o = 0; o < O; o++) x += (double)Bm[o * r + k] * G[o * In + j];
                x *= 2;
                mA = fmax(mA, fabs(x));
                dA = fmax(dA, fabs(x - gA[k * In + j]));
            }
        for (int64_t o = 0; o < O; o++)
            for (int64_t k = 0; k < r; k++) { /* s G A^T */
                double x = 0;
                for (int64_t j = 0; j < In; j++) x += (double)G[o * In + j] * A[k * In + j];
                x *= 2;
                mB = fmax(mB, fabs(x));
                dB = fmax(dB, fabs(x - gB[o * r + k]));
            }
        cr_expect(mA > 0 && mB > 0, "%s: zero gradient", wn);
        cr_expect(dA <= 1e-3 * mA, "%s: dA max diff %g of %g", wn, dA, mA);
        cr_expect(dB <= 1e-3 * mB, "%s: dB max diff %g of %g", wn, dB, mB);
        checked++;
    }
    cr_expect_eq(checked, 35);
    tr_model_free(lo);
    tr_model_free(full);
    av_model_free(mg);
    av_model_free(src);
}

/* d256 with every matrix quantized to t (norms stay F32): owned buffers */
static av_model *quantized(const av_model *src, av_dtype t) {
    av_model *o = with_metadata_of(src);
    for (size_t i = 0; i < src->n_tensors; i++) {
        const av_tensor *x = &src->tensors[i];
        if (x->n_dims != 2) {
            cr_assert(av_model_add_tensor(o, x->name, x->dtype, x->n_dims, x->shape, x->data, NULL));
            continue;
        }
        size_t bytes = q_row_size(t, x->shape[1]) * (size_t)x->shape[0];
        void *buf = malloc(bytes);
        cr_assert_eq(q_quantize(t, x->data, buf, x->shape[0], x->shape[1], NULL), bytes);
        cr_assert(av_model_add_tensor(o, x->name, t, 2, x->shape, buf, buf));
    }
    return o;
}

/* LoRA over a quantized base = LoRA over its dequantized F32 copy (chunked
 * dequantization changes only the sgemm split). */
static void quantized_base_case(av_dtype t) {
    av_model *src = load_d256();
    av_model *q = quantized(src, t);
    av_err e = {0};
    tr_model *full = NULL; /* the dequantized base, F32 in memory */
    cr_assert_eq(tr_model_from_model(q, "q", &full, &e), 0, "%s", e.msg);
    av_model *deq = NULL;
    cr_assert_eq(tr_model_to_model(full, &q->kv, &deq, &e), 0, "%s", e.msg);
    tr_lora_config lc = {.r = 8, .alpha = 16, .targets = ALL_TARGETS};
    tr_model *lq = NULL, *lf = NULL;
    cr_assert_eq(tr_lora_new(q, "q", &lc, 64, &lq, &e), 0, "%s", e.msg);
    cr_assert_eq(tr_lora_new(deq, "deq", &lc, 64, &lf, &e), 0, "%s", e.msg);
    fill_rand(lq, 5, 0.03f);
    memcpy(lf->params, lq->params, lq->n_params * sizeof(float));
    enum { B = 2, T = 64 };
    int32_t in[B * T], tg[B * T];
    batch(in, tg, B * T, 512, 21);
    float l1, l2;
    tr_zero_grad(lq);
    tr_zero_grad(lf);
    cr_assert_eq(tr_forward(lq, in, tg, B, T, &l1, NULL, 2, &e), 0, "%s", e.msg);
    cr_assert_eq(tr_backward(lq, 1.0f, 2, &e), 0, "%s", e.msg);
    cr_assert_eq(tr_forward(lf, in, tg, B, T, &l2, NULL, 2, &e), 0, "%s", e.msg);
    cr_assert_eq(tr_backward(lf, 1.0f, 2, &e), 0, "%s", e.msg);
    cr_expect(fabsf(l1 - l2) < 1e-5f * fabsf(l2), "loss %.8g vs dequantized %.8g", l1, l2);
    double d = 0, mx = max_abs(lf->grads, lf->n_params);
    for (size_t i = 0; i < lq->n_params; i++) d = fmax(d, fabs(lq->grads[i] - lf->grads[i]));
    cr_expect(d <= 1e-4 * mx, "grads differ by %g of %g", d, mx);
    tr_model_free(lq);
    tr_model_free(lf);
    tr_model_free(full);
    av_model_free(deq);
    av_model_free(q);
    av_model_free(src);
}

Test(lora_train, q8_0_base_equals_its_dequantized_copy) { quantized_base_case(AV_Q8_0); }
Test(lora_train, q4_k_base_equals_its_dequantized_copy) { quantized_base_case(AV_Q4_K); }

/* Dropout on the LoRA inputs: the gradient is the derivative of the loss
 * under the same masks (directional central difference in f32). */
Test(lora_train, dropout_gradient_matches_a_directional_difference) {
    av_model *src = load_260k();
    av_err e = {0};
    tr_model *lo = NULL;
    tr_lora_config lc = {.r = 8, .alpha = 16, .dropout = 0.3f, .targets = ALL_TARGETS};
    cr_assert_eq(tr_lora_new(src, "260K", &lc, 0, &lo, &e), 0, "%s", e.msg);
    fill_rand(lo, 77, 0.05f);
    lo->dropout_key = 1234;
    enum { B = 2, T = 32 };
    int32_t in[B * T], tg[B * T];
    batch(in, tg, B * T, 512, 5);
    float l0, lp, lm, l_nodrop;
    tr_zero_grad(lo);
    cr_assert_eq(tr_forward(lo, in, tg, B, T, &l0, NULL, 1, &e), 0, "%s", e.msg);
    cr_assert_eq(tr_backward(lo, 1.0f, 1, &e), 0, "%s", e.msg);
    float *p0 = malloc(lo->n_params * sizeof(float));
    memcpy(p0, lo->params, lo->n_params * sizeof(float));
    double g2 = 0;
    for (size_t i = 0; i < lo->n_params; i++) g2 += (double)lo->grads[i] * lo->grads[i];
    const double h = 1e-2 / sqrt(g2);
    for (size_t i = 0; i < lo->n_params; i++) lo->params[i] = p0[i] + (float)(h * lo->grads[i]);
    cr_assert_eq(tr_forward(lo, in, tg, B, T, &lp, NULL, 1, &e), 0, "%s", e.msg);
    for (size_t i = 0; i < lo->n_params; i++) lo->params[i] = p0[i] - (float)(h * lo->grads[i]);
    cr_assert_eq(tr_forward(lo, in, tg, B, T, &lm, NULL, 1, &e), 0, "%s", e.msg);
    const double num = ((double)lp - lm) / (2 * h);
    cr_expect(fabs(num - g2) < 0.02 * g2, "directional derivative %g vs |g|^2 %g", num, g2);
    /* the masks matter (the loss differs without them) and evaluation has none */
    memcpy(lo->params, p0, lo->n_params * sizeof(float));
    cr_assert_eq(tr_forward(lo, in, NULL, B, T, NULL, NULL, 1, &e), 0, "%s", e.msg);
    lc.dropout = 0;
    tr_model *nd = NULL;
    cr_assert_eq(tr_lora_new(src, "260K", &lc, 0, &nd, &e), 0, "%s", e.msg);
    memcpy(nd->params, p0, nd->n_params * sizeof(float));
    cr_assert_eq(tr_forward(nd, in, tg, B, T, &l_nodrop, NULL, 1, &e), 0, "%s", e.msg);
    cr_expect(l_nodrop != l0, "dropout changed nothing");
    free(p0);
    tr_model_free(nd);
    tr_model_free(lo);
    av_model_free(src);
}

Test(lora_train, adapter_export_has_llamacpp_layout_and_loads_back) {
    av_model *src = load_260k();
    av_err e = {0};
    tr_model *lo = NULL, *lo2 = NULL;
    tr_lora_config lc = {.r = 8, .alpha = 16, .targets = (1u << TR_WQ) | (1u << TR_WV)};
    cr_assert_eq(tr_lora_new(src, "260K", &lc, 0, &lo, &e), 0, "%s", e.msg);
    cr_assert_eq(tr_lora_new(src, "260K", &lc, 0, &lo2, &e), 0, "%s", e.msg);
    fill_rand(lo, 3, 0.1f);
    av_model *ad = NULL;
    cr_assert_eq(tr_lora_to_adapter(lo, &ad, &e), 0, "%s", e.msg);
    const char *s;
    cr_assert_eq(av_kvs_get_str(&ad->kv, "general.type", &s), 0);
    cr_expect_str_eq(s, "adapter");
    cr_assert_eq(av_kvs_get_str(&ad->kv, "adapter.type", &s), 0);
    cr_expect_str_eq(s, "lora");
    cr_expect_eq(ad->n_tensors, 5 * 2 * 2);
    const av_tensor *a = av_model_find(ad, "blk.3.attn_v.weight.lora_a");
    cr_assert(a);
    cr_expect(a->shape[0] == 8 && a->shape[1] == 64); /* ne = [n_in, r] */
    cr_assert_eq(tr_lora_load(lo2, ad, &e), 0, "%s", e.msg);
    cr_expect_eq(memcmp(lo->params, lo2->params, lo->n_params * sizeof(float)), 0);
    unsigned mask;
    cr_expect_eq(tr_lora_parse_targets("q_proj,attn_v,down_proj", &mask, &e), 0);
    cr_expect_eq(mask, (1u << TR_WQ) | (1u << TR_WV) | (1u << TR_W_DOWN));
    cr_expect_eq(tr_lora_parse_targets("attn_q,attn_x", &mask, &e), AV_EINVAL);
    cr_expect(strstr(e.msg, "attn_x"), "%s", e.msg);
    tr_model_free(lo);
    tr_model_free(lo2);
    av_model_free(ad);
    av_model_free(src);
}

/* One PEFT-style LoRA step on stories260K in PyTorch
 * (scripts/fixtures/gen_lora_step.py): r 8, alpha 16, seven targets, B
 * nonzero; loss, every A/B gradient, and the loss after one AdamW step. */
Test(lora_train, one_step_matches_pytorch) {
    av_err e = {0};
    av_model *fx = NULL;
    cr_assert_eq(st_read("tests/fixtures/lora/lora_step.safetensors", &fx, &e), 0, "%s", e.msg);
    av_model *src = load_260k();
    tr_model *lo = NULL;
    tr_lora_config lc = {.r = 8, .alpha = 16, .targets = ALL_TARGETS};
    cr_assert_eq(tr_lora_new(src, "260K", &lc, 0, &lo, &e), 0, "%s", e.msg);
    cr_assert_eq(tr_lora_load(lo, fx, &e), 0, "%s", e.msg);
    const av_tensor *in = av_model_find(fx, "inputs"), *tg = av_model_find(fx, "targets");
    const av_tensor *loss = av_model_find(fx, "loss"), *after = av_model_find(fx, "loss_after_step");
    cr_assert(in && tg && loss && after && in->dtype == AV_I32 && in->shape[0] == 2 && in->shape[1] == 32);
    const int B = 2, T = 32;
    float l;
    tr_zero_grad(lo);
    cr_assert_eq(tr_forward(lo, in->data, tg->data, B, T, &l, NULL, 2, &e), 0, "%s", e.msg);
    cr_assert_eq(tr_backward(lo, 1.0f, 2, &e), 0, "%s", e.msg);
    const float want = *(const float *)loss->data;
    cr_expect(fabsf(l - want) <= 1e-5f * fabsf(want), "loss %.8g, PyTorch %.8g", l, want);
    double worst = 0;
    for (int i = 0; i < lo->n_tensors; i++) {
        const tr_tensor *t = &lo->tensors[i];
        char gn[96];
        snprintf(gn, sizeof gn, "grad.%s", t->name);
        const av_tensor *g = av_model_find(fx, gn);
        cr_assert(g && g->dtype == AV_F32 && (size_t)(g->shape[0] * g->shape[1]) == t->n, "%s", gn);
        const float *ref = g->data, *got = lo->grads + t->offset;
        const double mx = max_abs(ref, t->n);
        double d = 0;
        for (size_t j = 0; j < t->n; j++) d = fmax(d, fabs(ref[j] - got[j]));
        cr_expect(mx > 0 && d <= 1e-4 * mx, "%s: max |diff| %.3g of max |g| %.3g", t->name, d, mx);
        worst = fmax(worst, d / mx);
    }
    cr_log_info("loss %.8g vs %.8g; worst relative gradient difference %.3g", l, want, worst);
    tr_adamw adam = {0.9f, 0.999f, 1e-8f, 0.0f};
    cr_assert_eq(tr_adamw_step(lo, &adam, 1e-3f, 1, 2, &e), 0, "%s", e.msg);
    cr_assert_eq(tr_forward(lo, in->data, tg->data, B, T, &l, NULL, 2, &e), 0, "%s", e.msg);
    const float want2 = *(const float *)after->data;
    cr_expect(fabsf(l - want2) <= 1e-4f * fabsf(want2), "loss after AdamW %.8g, PyTorch %.8g", l, want2);
    tr_model_free(lo);
    av_model_free(src);
    av_model_free(fx);
}

/* --recompute (activation checkpointing) changes memory, not results: the
 * loss and every gradient are bit-identical, for full training with dropout
 * and for LoRA with LoRA dropout. */
static void recompute_case(int lora) {
    av_model *src = load_260k();
    av_err e = {0};
    tr_model *m[2] = {NULL, NULL};
    tr_lora_config lc = {.r = 8, .alpha = 16, .dropout = 0.2f, .targets = ALL_TARGETS};
    for (int k = 0; k < 2; k++) {
        if (lora) {
            cr_assert_eq(tr_lora_new(src, "260K", &lc, 0, &m[k], &e), 0, "%s", e.msg);
            fill_rand(m[k], 13, 0.05f);
        } else {
            cr_assert_eq(tr_model_from_model(src, "260K", &m[k], &e), 0, "%s", e.msg);
            m[k]->dropout = 0.1f;
        }
        m[k]->dropout_key = 99;
        m[k]->recompute = k;
    }
    enum { B = 3, T = 40 };
    int32_t in[B * T], tg[B * T];
    batch(in, tg, B * T, 512, 17);
    float l[2];
    for (int k = 0; k < 2; k++) {
        tr_zero_grad(m[k]);
        cr_assert_eq(tr_forward(m[k], in, tg, B, T, &l[k], NULL, 2, &e), 0, "%s", e.msg);
        cr_assert_eq(tr_backward(m[k], 0.5f, 2, &e), 0, "%s", e.msg);
    }
    cr_expect_eq(l[0], l[1]);
    cr_expect_eq(memcmp(m[0]->grads, m[1]->grads, m[0]->n_params * sizeof(float)), 0, "gradients differ");
    cr_expect(max_abs(m[0]->grads, m[0]->n_params) > 0);
    tr_model_free(m[0]);
    tr_model_free(m[1]);
    av_model_free(src);
}

Test(lora_train, recompute_is_bit_identical_full) { recompute_case(0); }
Test(lora_train, recompute_is_bit_identical_lora) { recompute_case(1); }
