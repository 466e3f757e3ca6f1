/* test_eval.c — perplexity against llama-perplexity's results in
 * ../shared/reference/llamacpp/perplexity.json (same text, same context). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>

#include "eval.h"
#include "gguf.h"
#include "tokenizer.h"
#include "testutil.h"

typedef struct loaded {
    av_model *m;
    llm *l;
    int32_t *ids;
    size_t n;
} loaded;

/* The reference GGUF and eval-text.txt tokenized as llama-perplexity does
 * (BOS added, special tokens not parsed). */
static loaded load(const char *model) {
    loaded r = {0};
    av_err e = {0};
    char rel[256];
    snprintf(rel, sizeof rel, "reference/llamacpp/%s", model);
    cr_assert_eq(gguf_read(shared_path(rel), &r.m, &e), 0, "%s", e.msg);
    cr_assert_eq(llm_new(r.m, rel, &r.l, &e), 0, "%s", e.msg);
    tok *t = NULL;
    cr_assert_eq(tok_from_kv(&r.m->kv, rel, &t, &e), 0, "%s", e.msg);
    size_t len;
    char *text = (char *)slurp(shared_path("reference/llamacpp/eval-text.txt"), &len);
    cr_assert(text);
    tok_opts o = {.add_special = 1, .parse_special = 0};
    cr_assert_eq(tok_encode(t, text, len, &o, &r.ids, &r.n, &e), 0, "%s", e.msg);
    free(text);
    tok_free(t);
    return r;
}

static void unload(loaded *r) {
    free(r->ids);
    llm_free(r->l);
    av_model_free(r->m);
}

static void check_ppl(const char *file, const char *name, int ctx) {
    json_error_t je;
    json_t *ref = json_load_file(shared_path("reference/llamacpp/perplexity.json"), 0, &je);
    cr_assert(ref, "%s", je.text);
    json_t *want = json_object_get(json_object_get(json_object_get(ref, "results"), name), "F32");
    cr_assert(want);
    loaded r = load(file);
    ev_opts o = {.n_ctx = ctx, .n_threads = 1, .bos = 1};
    ev_ppl p;
    av_err e = {0};
    cr_assert_eq(ev_perplexity(r.l, r.ids, r.n, &o, &p, &e), 0, "%s", e.msg);
    cr_assert_eq(p.n_chunks, json_integer_value(json_object_get(want, "chunks")));
    cr_assert_eq(p.n_scored, (int64_t)p.n_chunks * (ctx / 2 - 1));
    const double wp = json_real_value(json_object_get(want, "ppl"));
    const double ws = json_real_value(json_object_get(want, "stderr"));
    cr_assert_lt(fabs(p.ppl / wp - 1), 1e-3, "%s: PPL %.4f vs llama.cpp %.4f", name, p.ppl, wp);
    cr_assert_lt(fabs(p.ppl_stderr / ws - 1), 0.02, "%s: stderr %.5f vs %.5f", name, p.ppl_stderr, ws);
    /* the first chunk alone equals llama.cpp's first running value */
    ev_opts o1 = o;
    o1.max_chunks = 1;
    ev_ppl p1;
    cr_assert_eq(ev_perplexity(r.l, r.ids, r.n, &o1, &p1, &e), 0, "%s", e.msg);
    const double w1 = json_real_value(json_array_get(json_object_get(want, "running"), 0));
    cr_assert_lt(fabs(p1.ppl / w1 - 1), 1e-3, "%s chunk 1: %.4f vs %.4f", name, p1.ppl, w1);
    unload(&r);
    json_decref(ref);
}

Test(eval, ppl_stories260K_ctx128, .timeout = 600) { check_ppl("stories260K-f32.gguf", "stories260K", 128); }
Test(eval, ppl_d256_ctx256, .timeout = 600) { check_ppl("stories-d256-f32.gguf", "stories-d256", 256); }

Test(eval, compare_identical_models_is_zero) {
    loaded r = load("stories260K-f32.gguf");
    ev_opts o = {.n_ctx = 128, .n_threads = 1, .bos = 1, .max_chunks = 8};
    ev_compare c;
    av_err e = {0};
    cr_assert_eq(ev_compare_models(r.l, r.l, r.ids, r.n, &o, &c, &e), 0, "%s", e.msg);
    cr_assert_lt(c.kld_mean, 1e-9);
    cr_assert_eq(c.top1, 1.0);
    cr_assert_eq(c.ppl_ratio, 1.0);
    cr_assert_eq(c.base.n_scored, 8 * 63);
    unload(&r);
}

Test(eval, log_softmax_hand_values) {
    const float l[3] = {0, (float)M_LN2, 0}; /* p = [1/4, 1/2, 1/4] */
    cr_assert_float_eq(ev_log_softmax(l, 3, 1), log(0.5), 1e-6);
    cr_assert_float_eq(ev_log_softmax(l, 3, 0), log(0.25), 1e-6);
}

Test(eval, rejects_short_text_and_odd_context) {
    loaded r = load("stories260K-f32.gguf");
    ev_opts o = {.n_ctx = 127, .n_threads = 1, .bos = 1};
    ev_ppl p;
    av_err e = {0};
    cr_assert_eq(ev_perplexity(r.l, r.ids, r.n, &o, &p, &e), AV_EINVAL);
    o.n_ctx = 128;
    cr_assert_eq(ev_perplexity(r.l, r.ids, 100, &o, &p, &e), AV_EINVAL);
    cr_assert(strstr(e.msg, "100 tokens"), "%s", e.msg);
    unload(&r);
}

/* Quantized d256, made by core/quant.c (bit-identical to llama-quantize's
 * output, see test_quant), against F32 over the whole text: the quantized
 * PPL within 0.1 % of llama-perplexity's, KLD statistics and top-1
 * agreement within 5 % of llama.cpp's --kl-divergence figures. */
#include "quant.h"

static av_model *quantized(const av_model *src, const char *type) {
    av_err e = {0};
    const q_ftype_info *ft = q_ftype_from_name(type);
    cr_assert(ft, "%s", type);
    q_plan plan;
    cr_assert_eq(q_plan_model(src, ft, NULL, &plan, &e), 0, "%s", e.msg);
    av_model *m = NULL;
    cr_assert_eq(gguf_read(shared_path("reference/llamacpp/stories-d256-f32.gguf"), &m, &e), 0);
    for (size_t i = 0; i < m->n_tensors; i++) {
        if (!plan.items[i].quantize) continue;
        av_tensor *t = &m->tensors[i];
        void *data;
        size_t nb;
        cr_assert_eq(q_quantize_tensor(t, plan.items[i].type, NULL, &data, &nb, &e), 0, "%s", e.msg);
        t->data = t->owned = data;
        t->dtype = t->src_dtype = plan.items[i].type;
    }
    q_plan_release(&plan);
    return m;
}

static void check_quant(const char *type) {
    json_error_t je;
    json_t *ref = json_load_file(shared_path("reference/llamacpp/perplexity.json"), 0, &je);
    cr_assert(ref, "%s", je.text);
    json_t *want = json_object_get(json_object_get(json_object_get(ref, "results"), "stories-d256"), type);
    char key[64];
    snprintf(key, sizeof key, "stories-d256 %s vs F32", type);
    json_t *wk = json_object_get(json_object_get(ref, "kld"), key);
    cr_assert(want && wk, "no reference for %s", type);
    loaded r = load("stories-d256-f32.gguf");
    av_model *qm = quantized(r.m, type);
    av_err e = {0};
    llm *ql = NULL;
    cr_assert_eq(llm_new(qm, type, &ql, &e), 0, "%s", e.msg);
    ev_opts o = {.n_ctx = 256, .n_threads = 1, .bos = 1};
    ev_compare c;
    cr_assert_eq(ev_compare_models(r.l, ql, r.ids, r.n, &o, &c, &e), 0, "%s", e.msg);
    const double wp = json_real_value(json_object_get(want, "ppl"));
    cr_assert_lt(fabs(c.test.ppl / wp - 1), 1e-3, "%s PPL %.4f vs llama.cpp %.4f", type, c.test.ppl, wp);
    const struct { const char *k; double have, scale; } stats[] = {
        {"mean_kld", c.kld_mean, 1}, {"median_kld", c.kld_median, 1}, {"p99_kld", c.kld_p99, 1},
        {"same_top_p_percent", c.top1, 100}};
    for (size_t i = 0; i < sizeof stats / sizeof *stats; i++) {
        const double w = json_real_value(json_object_get(wk, stats[i].k));
        cr_assert_lt(fabs(stats[i].have * stats[i].scale / w - 1), 0.05, "%s %s: %.6f vs llama.cpp %.6f",
                     type, stats[i].k, stats[i].have * stats[i].scale, w);
    }
    cr_log_info("%s: PPL %.4f (llama.cpp %.4f), KLD mean %.6f median %.6f p99 %.6f, top1 %.3f %%",
                type, c.test.ppl, wp, c.kld_mean, c.kld_median, c.kld_p99, 100 * c.top1);
    llm_free(ql);
    av_model_free(qm);
    unload(&r);
    json_decref(ref);
}

Test(eval, quant_q8_0_vs_llamacpp, .timeout = 900) { check_quant("Q8_0"); }
Test(eval, quant_q4_0_vs_llamacpp, .timeout = 900) { check_quant("Q4_0"); }
Test(eval, quant_q4_k_m_vs_llamacpp, .timeout = 900) { check_quant("Q4_K_M"); }
Test(eval, quant_q6_k_vs_llamacpp, .timeout = 900) { check_quant("Q6_K"); }
