/* test_lora.c — LoRA applied at run time (lora_attach / llm_add_lora)
 * against the same adapters merged into the weights (lora_merge), on the
 * d256 model and llama.cpp's reference adapter (../shared/reference/lora). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "llama2c.h"
#include "llm.h"
#include "lora.h"
#include "quant.h"
#include "testutil.h"

#define BASE "reference/llamacpp/stories-d256-f32.gguf"
#define ADAPTER "reference/lora/adapter-lora.gguf"
#define NTOK 48

static av_model *read_model(const char *rel) {
    av_err e = {0};
    av_model *m = NULL;
    cr_assert_eq(gguf_read(shared_path(rel), &m, &e), 0, "%s", e.msg);
    return m;
}

static lora_adapter *read_adapter(void) {
    av_err e = {0};
    lora_adapter *a = NULL;
    cr_assert_eq(lora_read(shared_path(ADAPTER), &a, &e), 0, "%s", e.msg);
    return a;
}

static void token_ids(int32_t *ids, int n, int vocab) {
    ids[0] = 1;
    for (int i = 1; i < n; i++) ids[i] = (int32_t)((i * 37 + 11) % vocab);
}

/* Logits [NTOK][V] of l: one batch, or token by token (decode). */
static float *logits_of(const llm *l, int batch, int nt) {
    av_err e = {0};
    llm_ctx *c = NULL;
    const int V = l->hp.n_vocab;
    int32_t ids[NTOK];
    token_ids(ids, NTOK, V);
    cr_assert_eq(llm_ctx_new(l, 64, 64, &c, &e), 0, "%s", e.msg);
    float *out = malloc(sizeof(float) * NTOK * (size_t)V);
    cr_assert(out);
    if (batch) cr_assert_eq(llm_eval(c, ids, NTOK, 0, out, 1, nt, &e), 0, "%s", e.msg);
    else
        for (int i = 0; i < NTOK; i++)
            cr_assert_eq(llm_eval(c, ids + i, 1, i, out + (size_t)i * V, 0, nt, &e), 0, "%s", e.msg);
    llm_ctx_free(c);
    return out;
}

static double max_diff(const float *a, const float *b, size_t n) {
    double w = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > w || d != d) w = d;
    }
    return w;
}

/* base + adapters at run time; *m receives the model (free after the llm). */
static llm *runtime(const char *rel, int n, const float *scales, av_model **m) {
    av_err e = {0};
    lora_adapter *ads[4];
    llm *l = NULL;
    *m = read_model(rel);
    cr_assert_eq(llm_new(*m, rel, &l, &e), 0, "%s", e.msg);
    for (int i = 0; i < n; i++) ads[i] = read_adapter();
    cr_assert_eq(lora_attach(l, *m, ads, scales, n, &e), 0, "%s", e.msg);
    for (int i = 0; i < n; i++) lora_free(ads[i]);
    return l;
}

/* base with the adapters merged into its weights */
static llm *merged(const char *rel, int n, const float *scales, av_model **m) {
    av_err e = {0};
    lora_adapter *ads[4];
    llm *l = NULL;
    *m = read_model(rel);
    for (int i = 0; i < n; i++) ads[i] = read_adapter();
    cr_assert_eq(lora_merge(*m, ads, scales, n, &e), 0, "%s", e.msg);
    for (int i = 0; i < n; i++) lora_free(ads[i]);
    cr_assert_eq(llm_new(*m, rel, &l, &e), 0, "%s", e.msg);
    return l;
}

static void release(llm *l, av_model *m) {
    llm_free(l);
    av_model_free(m);
}

Test(lora_run, runtime_logits_equal_merged) {
    const float one = 1;
    av_model *mr, *mm;
    llm *lr = runtime(BASE, 1, &one, &mr), *lm = merged(BASE, 1, &one, &mm);
    const size_t n = NTOK * (size_t)lm->hp.n_vocab;
    float *ref = logits_of(lm, 1, 1);
    const struct { int batch, nt; } runs[] = {{1, 1}, {1, 2}, {0, 1}, {0, 2}};
    for (size_t k = 0; k < sizeof runs / sizeof *runs; k++) {
        float *got = logits_of(lr, runs[k].batch, runs[k].nt);
        double d = max_diff(got, ref, n);
        cr_log_info("runtime vs merged (%s, %d threads): max |logit diff| %.3g", runs[k].batch ? "batch" : "decode",
                    runs[k].nt, d);
        cr_expect_leq(d, 1e-4, "%s with %d threads: max diff %g", runs[k].batch ? "batch" : "decode", runs[k].nt, d);
        free(got);
    }
    /* the adapter is really on: the base's logits are far away */
    av_model *mb = read_model(BASE);
    llm *lb = NULL;
    av_err e = {0};
    cr_assert_eq(llm_new(mb, "base", &lb, &e), 0, "%s", e.msg);
    float *base = logits_of(lb, 1, 1);
    cr_expect_gt(max_diff(base, ref, n), 0.5);
    free(base);
    free(ref);
    release(lb, mb);
    release(lr, mr);
    release(lm, mm);
}

Test(lora_run, thread_count_changes_rounding_only) {
    const float one = 1;
    av_model *m;
    llm *l = runtime(BASE, 1, &one, &m);
    const size_t n = NTOK * (size_t)l->hp.n_vocab;
    for (int batch = 0; batch <= 1; batch++) {
        float *a = logits_of(l, batch, 1), *b = logits_of(l, batch, 2);
        double d = max_diff(a, b, n);
        cr_expect_leq(d, 1e-5, "%s: 1 vs 2 threads differ by %g", batch ? "batch" : "decode", d);
        free(a);
        free(b);
    }
    release(l, m);
}

Test(lora_run, scale_zero_is_the_base) {
    const float zero = 0;
    av_model *mr, *mb;
    llm *lr = runtime(BASE, 1, &zero, &mr), *lb = NULL;
    av_err e = {0};
    mb = read_model(BASE);
    cr_assert_eq(llm_new(mb, "base", &lb, &e), 0, "%s", e.msg);
    const size_t n = NTOK * (size_t)lb->hp.n_vocab;
    for (int batch = 0; batch <= 1; batch++) {
        float *a = logits_of(lr, batch, 2), *b = logits_of(lb, batch, 2);
        cr_expect(!memcmp(a, b, n * sizeof *a), "scale 0 (%s) differs from the base", batch ? "batch" : "decode");
        free(a);
        free(b);
    }
    release(lr, mr);
    release(lb, mb);
}

Test(lora_run, two_adapters_add_up) {
    const float two[2] = {0.3f, 0.7f}, one = 1;
    av_model *mr, *mm, *m1;
    llm *lr = runtime(BASE, 2, two, &mr), *lm = merged(BASE, 2, two, &mm), *l1 = runtime(BASE, 1, &one, &m1);
    const size_t n = NTOK * (size_t)lm->hp.n_vocab;
    float *ref = logits_of(lm, 1, 1);
    for (int batch = 0; batch <= 1; batch++) {
        float *got = logits_of(lr, batch, 2), *single = logits_of(l1, batch, 2);
        double d = max_diff(got, ref, n), d1 = max_diff(got, single, n);
        cr_log_info("two adapters (%s): vs merged %.3g, vs one at scale 1 %.3g", batch ? "batch" : "decode", d, d1);
        cr_expect_leq(d, 1e-4, "two adapters at run time vs merged: %g", d);
        cr_expect_leq(d1, 1e-4, "0.3 + 0.7 vs 1: %g", d1);
        free(got);
        free(single);
    }
    free(ref);
    release(lr, mr);
    release(lm, mm);
    release(l1, m1);
}

/* A Q8_0 base keeps its blocks: the llm's weights are the model's own bytes. */
Test(lora_run, quantized_base_is_not_dequantized) {
    av_err e = {0};
    q_plan plan = {0};
    av_model *mq = read_model(BASE);
    cr_assert_eq(q_model_quantize(mq, "d256", q_ftype_from_name("q8_0"), NULL, &plan, &e), 0, "%s", e.msg);
    q_plan_release(&plan);
    llm *l = NULL;
    cr_assert_eq(llm_new(mq, "d256-q8", &l, &e), 0, "%s", e.msg);
    lora_adapter *ad = read_adapter();
    const float one = 1;
    cr_assert_eq(lora_attach(l, mq, &ad, &one, 1, &e), 0, "%s", e.msg);
    int with_lora = 0;
    for (int i = 0; i < l->hp.n_layer; i++) {
        const llm_layer *ly = &l->layers[i];
        const llm_weight *ws[] = {&ly->wq, &ly->wk, &ly->wv, &ly->wo, &ly->w_gate, &ly->w_up, &ly->w_down};
        for (size_t j = 0; j < sizeof ws / sizeof *ws; j++) {
            const av_tensor *t = av_model_find(mq, ws[j]->name);
            cr_assert(t);
            cr_expect_eq(ws[j]->type, AV_Q8_0, "%s", ws[j]->name);
            cr_expect_eq(t->src_dtype, AV_Q8_0, "%s", ws[j]->name);
            cr_expect_eq(ws[j]->data, t->data, "%s: the llm reads another buffer", ws[j]->name);
            with_lora += ws[j]->lora != NULL;
        }
    }
    cr_expect_eq(with_lora, (int)ad->n_pairs);
    lora_free(ad);
    /* close to the f32 merge: only the base's Q8_0 rounding differs */
    av_model *mm;
    llm *lm = merged(BASE, 1, &one, &mm);
    const size_t n = NTOK * (size_t)l->hp.n_vocab;
    float *ref = logits_of(lm, 1, 1);
    for (int batch = 0; batch <= 1; batch++) {
        float *got = logits_of(l, batch, 2);
        double d = max_diff(got, ref, n);
        cr_log_info("Q8_0 base at run time vs f32 merge (%s): max |logit diff| %.3g", batch ? "batch" : "decode", d);
        cr_expect_leq(d, 0.25, "Q8_0 + LoRA (%s) vs f32 merge: %g", batch ? "batch" : "decode", d);
        free(got);
    }
    free(ref);
    release(lm, mm);
    release(l, mq);
}

/* Pairs on the (tied) embedding and a layer of stories260K, made up here, vs
 * the same deltas written into the weights. */
static void add_delta(av_tensor *t, const float *A, const float *B, int r, float f) {
    const int64_t rows = t->shape[0], cols = t->shape[1];
    float *w = malloc(sizeof(float) * (size_t)(rows * cols));
    cr_assert(w);
    cr_assert_eq(t->src_dtype, AV_F32);
    memcpy(w, t->data, sizeof(float) * (size_t)(rows * cols));
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) {
            float s = 0;
            for (int k = 0; k < r; k++) s += B[i * r + k] * A[k * cols + j];
            w[i * cols + j] += f * s;
        }
    free(t->owned);
    t->owned = w;
    t->data = w;
}

static float *rand_floats(size_t n, unsigned *seed, float amp) {
    float *x = malloc(n * sizeof *x);
    cr_assert(x);
    for (size_t i = 0; i < n; i++) {
        *seed = *seed * 1103515245u + 12345u;
        x[i] = amp * ((float)((*seed >> 8) & 0xffff) / 32768.0f - 1.0f);
    }
    return x;
}

Test(lora_run, tied_embedding_and_layer_pairs) {
    av_err e = {0};
    av_model *mr = NULL, *mm = NULL;
    cr_assert_eq(l2c_read(shared_path("models/stories260K.bin"), NULL, &mr, &e), 0, "%s", e.msg);
    cr_assert_eq(l2c_read(shared_path("models/stories260K.bin"), NULL, &mm, &e), 0, "%s", e.msg);
    /* llama2.c's shared classifier comes as output.weight: hide it so both tie by name */
    av_model *ms[2] = {mr, mm};
    for (int i = 0; i < 2; i++) {
        av_tensor *o = av_model_find(ms[i], "output.weight");
        cr_assert(o);
        free(o->name);
        cr_assert(o->name = strdup("unused.weight"));
    }
    const char *names[] = {"token_embd.weight", "blk.2.ffn_down.weight"};
    const float factors[] = {0.5f, 2.0f};
    const int r = 3;
    llm *lr = NULL, *lm = NULL;
    cr_assert_eq(llm_new(mr, "260K", &lr, &e), 0, "%s", e.msg);
    unsigned seed = 7;
    for (int p = 0; p < 2; p++) {
        av_tensor *t = av_model_find(mm, names[p]);
        cr_assert(t);
        float *A = rand_floats((size_t)r * t->shape[1], &seed, 0.3f), *B = rand_floats((size_t)t->shape[0] * r, &seed, 0.3f);
        cr_assert_eq(llm_add_lora(lr, names[p], A, B, r, factors[p], &e), 0, "%s", e.msg);
        add_delta(t, A, B, r, factors[p]);
        free(A);
        free(B);
    }
    cr_expect(lr->tok_embd.lora && lr->output.lora, "a tied output shares the embedding's pairs");
    cr_assert_eq(llm_new(mm, "260K merged", &lm, &e), 0, "%s", e.msg);
    const size_t n = NTOK * (size_t)lm->hp.n_vocab;
    float *ref = logits_of(lm, 1, 1);
    for (int batch = 0; batch <= 1; batch++) {
        float *got = logits_of(lr, batch, 2);
        double d = max_diff(got, ref, n);
        cr_log_info("tied embedding + layer pairs (%s): max |logit diff| %.3g", batch ? "batch" : "decode", d);
        cr_expect_leq(d, 1e-4, "tied embedding + layer pairs (%s): max diff %g", batch ? "batch" : "decode", d);
        free(got);
    }
    free(ref);
    release(lr, mr);
    release(lm, mm);
}

/* The observer (imatrix) path runs single tokens through linear(), not the team. */
static void count_calls(void *ud, const llm_weight *w, const float *X, int n) {
    (void)w, (void)X, (void)n;
    ++*(int *)ud;
}

Test(lora_run, observer_path_matches) {
    const float one = 1;
    av_model *m;
    llm *l = runtime(BASE, 1, &one, &m);
    av_err e = {0};
    llm_ctx *c = NULL;
    const int V = l->hp.n_vocab;
    int32_t ids[NTOK];
    token_ids(ids, NTOK, V);
    float *plain = logits_of(l, 0, 2), *seen = malloc(sizeof(float) * NTOK * (size_t)V);
    int calls = 0;
    cr_assert_eq(llm_ctx_new(l, 64, 64, &c, &e), 0, "%s", e.msg);
    llm_ctx_set_observer(c, count_calls, &calls);
    for (int i = 0; i < NTOK; i++)
        cr_assert_eq(llm_eval(c, ids + i, 1, i, seen + (size_t)i * V, 0, 2, &e), 0, "%s", e.msg);
    cr_expect_gt(calls, 0);
    double d = max_diff(plain, seen, NTOK * (size_t)V);
    cr_expect_leq(d, 1e-5, "decode with an observer differs by %g", d);
    free(plain);
    free(seen);
    llm_ctx_free(c);
    release(l, m);
}

Test(lora_run, errors) {
    av_err e = {0};
    av_model *m = read_model("reference/llamacpp/stories260K-f32.gguf");
    llm *l = NULL;
    cr_assert_eq(llm_new(m, "260K", &l, &e), 0, "%s", e.msg);
    lora_adapter *ad = read_adapter();
    const float one = 1;
    cr_expect_eq(lora_attach(l, m, &ad, &one, 1, &e), AV_EINVAL);
    cr_expect(strstr(e.msg, "adapter-lora.gguf"), "%s", e.msg);
    float a[64] = {0}, b[64] = {0};
    cr_expect_eq(llm_add_lora(l, "blk.0.nope.weight", a, b, 1, 1, &e), AV_ENOTFOUND);
    cr_expect(strstr(e.msg, "blk.0.nope.weight"), "%s", e.msg);
    cr_expect_eq(llm_add_lora(l, "blk.0.attn_q.weight", a, b, 0, 1, &e), AV_EINVAL);
    cr_expect_null(l->layers[0].wq.lora, "a refused pair leaves the weight alone");
    cr_expect_eq(l->lora_rank_max, 0);
    lora_free(ad);
    release(l, m);
}
