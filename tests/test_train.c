/* test_train.c — the training core against PyTorch's one AdamW step on
 * stories260K (../shared/reference/torch/train_step.json), plus tied/untied
 * heads, gradient accumulation, clipping, the LR schedule, determinism,
 * thread invariance, export to an av_model that llm.c runs, and the vector
 * kernels (attention, fused softmax + cross-entropy, SwiGLU, exp) against
 * their plain twins.
 *
 * Layout: we train in GGUF layout (q/k rows interleaved, RoPE NORM mode),
 * loading stories260K.bin through l2c_read; the reference ran the HF layout
 * (q/k rows permuted, rotate_half). The two are the same function (README:
 * logits agree to 1.4e-5), and every compared quantity is invariant under
 * the row permutation: losses, per-tensor L2 norms of gradients and
 * parameters, and the full gradients listed (two norm weights). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "llama2c.h"
#include "llm.h"
#include "ops.h"
#include "testutil.h"
#include "train.h"

static json_t *load_json(const char *rel) {
    json_error_t je;
    json_t *j = json_load_file(shared_path(rel), 0, &je);
    cr_assert(j, "cannot read %s: %s", rel, je.text);
    return j;
}

static tr_model *load_260k(void) {
    av_err e = {0};
    av_model *src = NULL;
    tr_model *m = NULL;
    cr_assert_eq(l2c_read(shared_path("models/stories260K.bin"), NULL, &src, &e), 0, "%s", e.msg);
    cr_assert_eq(tr_model_from_model(src, "stories260K", &m, &e), 0, "%s", e.msg);
    av_model_free(src);
    return m;
}

/* GGUF name -> HF name (train_step.json's keys) */
static void hf_name(const char *g, char *out, size_t n) {
    static const char *map[][2] = {
        {"attn_norm", "input_layernorm"}, {"attn_q", "self_attn.q_proj"},
        {"attn_k", "self_attn.k_proj"},   {"attn_v", "self_attn.v_proj"},
        {"attn_output", "self_attn.o_proj"}, {"ffn_norm", "post_attention_layernorm"},
        {"ffn_gate", "mlp.gate_proj"},    {"ffn_up", "mlp.up_proj"},
        {"ffn_down", "mlp.down_proj"},
    };
    int l;
    char part[32];
    if (strcmp(g, "token_embd.weight") == 0) snprintf(out, n, "model.embed_tokens.weight");
    else if (strcmp(g, "output_norm.weight") == 0) snprintf(out, n, "model.norm.weight");
    else if (strcmp(g, "output.weight") == 0) snprintf(out, n, "lm_head.weight");
    else if (sscanf(g, "blk.%d.%31[^.].weight", &l, part) == 2) {
        for (size_t i = 0; i < sizeof map / sizeof *map; i++)
            if (strcmp(part, map[i][0]) == 0) {
                snprintf(out, n, "model.layers.%d.%s.weight", l, map[i][1]);
                return;
            }
        cr_assert_fail("unmapped %s", g);
    } else cr_assert_fail("unmapped %s", g);
}

static double l2(const float *x, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return sqrt(s);
}

static void ids(json_t *arr, int32_t *out, int n) {
    cr_assert_eq((int)json_array_size(arr), n);
    for (int i = 0; i < n; i++) out[i] = (int32_t)json_integer_value(json_array_get(arr, i));
}

/* compare per-tensor L2 norms of buf (params or grads) with obj; max rel diff */
static double cmp_norms(tr_model *m, const float *buf, json_t *obj, double tol, const char *what) {
    double worst = 0;
    cr_assert_eq((int)json_object_size(obj), m->n_tensors, "%s: %zu tensors in the reference", what,
                 json_object_size(obj));
    for (int i = 0; i < m->n_tensors; i++) {
        char hn[128];
        hf_name(m->tensors[i].name, hn, sizeof hn);
        json_t *r = json_object_get(obj, hn);
        cr_assert(r, "%s: no reference for %s", what, hn);
        const double ref = json_real_value(r);
        const double got = l2(buf + m->tensors[i].offset, m->tensors[i].n);
        const double rel = fabs(got - ref) / ref;
        cr_expect(rel <= tol, "%s %s: %.9g vs %.9g (rel %.3g)", what, hn, got, ref, rel);
        if (rel > worst) worst = rel;
    }
    return worst;
}

Test(train, torch_step_parity) {
    json_t *ref = load_json("reference/torch/train_step.json");
    tr_model *m = load_260k();
    cr_assert(m->cfg.tied, "stories260K shares its classifier");
    cr_assert_eq(m->n_params, 512 * 64 + 5 * (64 * 64 * 2 + 32 * 64 * 2 + 172 * 64 * 3 + 128) + 64);
    for (int i = 0; i < m->n_tensors; i++) m->tensors[i].decay = 1; /* reference decays all */
    int32_t x[64], y[64];
    json_t *data = json_object_get(ref, "data");
    ids(json_object_get(data, "x"), x, 64);
    ids(json_object_get(data, "y"), y, 64);
    av_err e = {0};
    const int nt = 2;

    /* loss */
    float loss;
    cr_assert_eq(tr_forward(m, x, y, 1, 64, &loss, NULL, nt, &e), 0, "%s", e.msg);
    const double ref_loss = json_real_value(json_object_get(ref, "loss_before"));
    const double loss_rel = fabs(loss - ref_loss) / ref_loss;
    cr_expect(loss_rel <= 1e-5, "loss %.9g vs %.9g (rel %.3g)", loss, ref_loss, loss_rel);

    /* gradients: every tensor's norm, the total, the two full gradients */
    tr_zero_grad(m);
    cr_assert_eq(tr_backward(m, 1.0f, nt, &e), 0, "%s", e.msg);
    const double gn_rel = cmp_norms(m, m->grads, json_object_get(ref, "grad_l2_norm"), 1e-4, "grad");
    const double tot = tr_grad_norm(m, nt),
                 tot_ref = json_real_value(json_object_get(ref, "grad_total_l2_norm"));
    cr_expect(fabs(tot - tot_ref) / tot_ref <= 1e-4, "total grad norm %.9g vs %.9g", tot, tot_ref);
    static const char *full[][2] = {{"output_norm.weight", "grad_model.norm.weight"},
                                    {"blk.0.attn_norm.weight",
                                     "grad_model.layers.0.input_layernorm.weight"}};
    double full_abs = 0, full_rel = 0;
    for (int f = 0; f < 2; f++) {
        tr_tensor *t = tr_find(m, full[f][0]);
        json_t *arr = json_object_get(ref, full[f][1]);
        cr_assert(t && arr && json_array_size(arr) == t->n);
        double mx = 0;
        for (size_t i = 0; i < t->n; i++) mx = fmax(mx, fabs(json_real_value(json_array_get(arr, i))));
        for (size_t i = 0; i < t->n; i++) {
            const double r = json_real_value(json_array_get(arr, i)), g = m->grads[t->offset + i];
            const double d = fabs(g - r);
            cr_expect(d <= 1e-4 * mx, "%s[%zu]: %.9g vs %.9g", full[f][1], i, g, r);
            full_abs = fmax(full_abs, d);
            full_rel = fmax(full_rel, d / mx);
        }
    }

    /* parameter norms before, one AdamW step, loss and norms after */
    const double pb_rel = cmp_norms(m, m->params, json_object_get(ref, "param_l2_norm_before"),
                                    1e-6, "param before");
    json_t *opt = json_object_get(ref, "optimizer");
    json_t *betas = json_object_get(opt, "betas");
    tr_adamw aw = {.beta1 = (float)json_real_value(json_array_get(betas, 0)),
                   .beta2 = (float)json_real_value(json_array_get(betas, 1)),
                   .eps = (float)json_real_value(json_object_get(opt, "eps")),
                   .weight_decay = (float)json_real_value(json_object_get(opt, "weight_decay"))};
    cr_assert_eq(tr_adamw_step(m, &aw, (float)json_real_value(json_object_get(opt, "lr")), 1, nt, &e),
                 0, "%s", e.msg);
    const double pa_rel = cmp_norms(m, m->params, json_object_get(ref, "param_l2_norm_after"), 1e-5,
                                    "param after");
    float loss2;
    cr_assert_eq(tr_forward(m, x, y, 1, 64, &loss2, NULL, nt, &e), 0, "%s", e.msg);
    const double ref_loss2 = json_real_value(json_object_get(ref, "loss_after"));
    const double loss2_rel = fabs(loss2 - ref_loss2) / ref_loss2;
    cr_expect(loss2_rel <= 1e-5, "loss after %.9g vs %.9g (rel %.3g)", loss2, ref_loss2, loss2_rel);
    cr_log_info("parity: loss rel %.3g, grad norms max rel %.3g, total %.9g vs %.9g, full grads "
                "max |d| %.3g (rel to max %.3g), param norms before %.3g after %.3g, loss after "
                "rel %.3g",
                loss_rel, gn_rel, tot, tot_ref, full_abs, full_rel, pb_rel, pa_rel, loss2_rel);
    tr_model_free(m);
    json_decref(ref);
}

/* ---- small random models ---------------------------------------------- */

static tr_model *tiny(int tied, uint64_t seed) {
    tr_config c = {.dim = 32, .n_layer = 2, .n_head = 4, .n_kv_head = 2, .ffn = 48, .vocab = 64,
                   .seq_len = 32, .tied = tied};
    tr_model *m = NULL;
    av_err e = {0};
    cr_assert_eq(tr_model_new(&c, &m, &e), 0, "%s", e.msg);
    tr_init_weights(m, seed);
    return m;
}

static void batch(int32_t *x, int32_t *y, int n, int V, uint64_t s) {
    for (int i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (int32_t)((s >> 33) % (uint64_t)V);
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        y[i] = (int32_t)((s >> 33) % (uint64_t)V);
    }
}

static double max_abs(const float *a, size_t n) {
    double mx = 0;
    for (size_t i = 0; i < n; i++) mx = fmax(mx, fabs(a[i]));
    return mx;
}

Test(train, tied_equals_untied_with_equal_weights) {
    tr_model *t = load_260k();
    tr_config c = t->cfg;
    c.tied = 0;
    tr_model *u = NULL;
    av_err e = {0};
    cr_assert_eq(tr_model_new(&c, &u, &e), 0, "%s", e.msg);
    /* same parameters; untied's output.weight is the last tensor, a copy of the embedding */
    cr_assert_eq(u->n_params, t->n_params + (size_t)c.vocab * c.dim);
    memcpy(u->params, t->params, t->n_params * sizeof(float));
    memcpy(tr_param(u, u->t_out), tr_param(t, t->t_embd), (size_t)c.vocab * c.dim * sizeof(float));
    int32_t x[64], y[64];
    batch(x, y, 64, c.vocab, 7);
    float lt, lu;
    cr_assert_eq(tr_forward(t, x, y, 2, 32, &lt, NULL, 2, &e), 0, "%s", e.msg);
    cr_assert_eq(tr_forward(u, x, y, 2, 32, &lu, NULL, 2, &e), 0, "%s", e.msg);
    cr_expect_eq(lt, lu, "tied %.9g untied %.9g", lt, lu);
    tr_zero_grad(t);
    tr_zero_grad(u);
    cr_assert_eq(tr_backward(t, 1.0f, 2, &e), 0);
    cr_assert_eq(tr_backward(u, 1.0f, 2, &e), 0);
    const float *gt = tr_grad(t, t->t_embd), *ge = tr_grad(u, u->t_embd), *go = tr_grad(u, u->t_out);
    double d = 0;
    for (size_t i = 0; i < (size_t)c.vocab * c.dim; i++) d = fmax(d, fabs(gt[i] - (ge[i] + go[i])));
    cr_expect(d <= 1e-6 * max_abs(gt, (size_t)c.vocab * c.dim) + 1e-9, "tied grad != sum: %g", d);
    /* every other gradient equal */
    for (size_t i = t->tensors[t->t_embd].n; i < t->n_params; i++)
        cr_assert_eq(t->grads[i], u->grads[i], "grad %zu differs", i);
    tr_model_free(t);
    tr_model_free(u);
}

Test(train, gradient_accumulation) {
    for (int tied = 0; tied < 2; tied++) {
        tr_model *a = tiny(tied, 1), *b = tiny(tied, 1);
        int32_t x[128], y[128];
        batch(x, y, 128, 64, 3);
        y[5] = -1; /* an ignored position: halves then count 31 and 32 positions */
        y[70] = -1;
        av_err e = {0};
        float l;
        tr_zero_grad(a);
        cr_assert_eq(tr_forward(a, x, y, 4, 32, &l, NULL, 2, &e), 0, "%s", e.msg);
        cr_assert_eq(tr_backward(a, 1.0f, 2, &e), 0);
        tr_zero_grad(b);
        float l1, l2_;
        cr_assert_eq(tr_forward(b, x, y, 2, 32, &l1, NULL, 2, &e), 0, "%s", e.msg);
        cr_assert_eq(tr_backward(b, 0.5f, 2, &e), 0);
        cr_assert_eq(tr_forward(b, x + 64, y + 64, 2, 32, &l2_, NULL, 2, &e), 0, "%s", e.msg);
        cr_assert_eq(tr_backward(b, 0.5f, 2, &e), 0);
        /* same count per half, so the mean of the means is the mean */
        cr_expect(fabsf(l - 0.5f * (l1 + l2_)) <= 1e-6f * l, "%g vs %g", l, 0.5f * (l1 + l2_));
        double d = 0;
        for (size_t i = 0; i < a->n_params; i++) d = fmax(d, fabs(a->grads[i] - b->grads[i]));
        const double g = max_abs(a->grads, a->n_params);
        cr_expect(d <= 1e-6 * g, "tied %d: accumulated grads differ by %g (max |g| %g)", tied, d, g);
        cr_log_info("accumulation tied %d: max |dgrad| %.3g (max |g| %.3g)", tied, d, g);
        tr_model_free(a);
        tr_model_free(b);
    }
}

Test(train, clip_grad_norm) {
    tr_model *m = tiny(1, 2);
    for (size_t i = 0; i < m->n_params; i++) m->grads[i] = (i % 3 == 0) ? 0.5f : -0.25f;
    double want = 0;
    for (size_t i = 0; i < m->n_params; i++) want += (double)m->grads[i] * m->grads[i];
    want = sqrt(want);
    float n = tr_clip_grad_norm(m, 1.0f, 2);
    cr_expect(fabs(n - want) <= 1e-6 * want, "%g vs %g", n, want);
    cr_expect(fabs(tr_grad_norm(m, 1) - 1.0) <= 1e-5, "after clip %g", tr_grad_norm(m, 1));
    float n2 = tr_clip_grad_norm(m, 10.0f, 2); /* below: untouched */
    cr_expect(fabs(n2 - 1.0) <= 1e-5);
    cr_expect(fabs(tr_grad_norm(m, 3) - 1.0) <= 1e-5);
    tr_model_free(m);
}

Test(train, lr_schedule) {
    tr_schedule s = {.lr_max = 1e-3f, .lr_min = 1e-4f, .warmup = 10, .total = 110};
    cr_expect_float_eq(tr_lr_at(&s, 0), 1e-4f, 1e-10);
    cr_expect_float_eq(tr_lr_at(&s, 4), 5e-4f, 1e-10);
    cr_expect_float_eq(tr_lr_at(&s, 9), 1e-3f, 1e-10);
    cr_expect_float_eq(tr_lr_at(&s, 10), 1e-3f, 1e-10);             /* cos(0) */
    cr_expect_float_eq(tr_lr_at(&s, 60), 5.5e-4f, 1e-10);           /* cos(pi/2): midpoint */
    cr_expect_float_eq(tr_lr_at(&s, 35), 1e-4f + 0.5f * 9e-4f * (1.0f + 0.70710678f), 1e-9);
    cr_expect_float_eq(tr_lr_at(&s, 110), 1e-4f, 1e-10);
    cr_expect_float_eq(tr_lr_at(&s, 1000), 1e-4f, 1e-10);
}

static void train3(tr_model *m, int nt) {
    tr_adamw aw = {.beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f};
    tr_schedule s = {.lr_max = 3e-3f, .lr_min = 3e-4f, .warmup = 1, .total = 3};
    int32_t x[128], y[128];
    av_err e = {0};
    for (int step = 0; step < 3; step++) {
        batch(x, y, 128, m->cfg.vocab, 100 + step);
        float l;
        tr_zero_grad(m);
        cr_assert_eq(tr_forward(m, x, y, 4, 32, &l, NULL, nt, &e), 0, "%s", e.msg);
        cr_assert_eq(tr_backward(m, 1.0f, nt, &e), 0);
        tr_clip_grad_norm(m, 1.0f, nt);
        cr_assert_eq(tr_adamw_step(m, &aw, tr_lr_at(&s, step), step + 1, nt, &e), 0);
    }
}

Test(train, deterministic_and_thread_invariant) {
    tr_model *a = tiny(0, 42), *b = tiny(0, 42), *c = tiny(0, 42);
    cr_assert_eq(memcmp(a->params, b->params, a->n_params * sizeof(float)), 0, "seeded init");
    train3(a, 2);
    train3(b, 2);
    cr_expect_eq(memcmp(a->params, b->params, a->n_params * sizeof(float)), 0,
                 "same seed, same threads: params differ");
    train3(c, 1);
    double d = 0;
    for (size_t i = 0; i < a->n_params; i++) d = fmax(d, fabs(a->params[i] - c->params[i]));
    cr_expect(d <= 1e-5, "1 vs 2 threads: max |dparam| %g", d);
    cr_log_info("1 vs 2 threads after 3 steps: max |dparam| %.3g", d);
    tr_model_free(a);
    tr_model_free(b);
    tr_model_free(c);
}

/* large enough that every product is split over threads (tiny() never is):
 * same threads bit-identical after 3 steps; 1 vs 2 threads agree in loss and
 * gradients to rounding. (Parameters after Adam steps are not compared across
 * thread counts: the first steps are sign-like, so a gradient element near 0
 * that rounds differently moves its weight by up to 2*lr.) */
Test(train, thread_invariant_split_products) {
    tr_config cf = {.dim = 128, .n_layer = 2, .n_head = 4, .n_kv_head = 2, .ffn = 320,
                    .vocab = 512, .seq_len = 32, .tied = 0};
    tr_model *a = NULL, *b = NULL;
    av_err e = {0};
    cr_assert_eq(tr_model_new(&cf, &a, &e), 0);
    cr_assert_eq(tr_model_new(&cf, &b, &e), 0);
    tr_init_weights(a, 5);
    tr_init_weights(b, 5);
    int32_t x[128], y[128];
    batch(x, y, 128, cf.vocab, 11);
    float la, lb;
    tr_zero_grad(a);
    tr_zero_grad(b);
    cr_assert_eq(tr_forward(a, x, y, 4, 32, &la, NULL, 2, &e), 0, "%s", e.msg);
    cr_assert_eq(tr_backward(a, 1.0f, 2, &e), 0);
    cr_assert_eq(tr_forward(b, x, y, 4, 32, &lb, NULL, 1, &e), 0, "%s", e.msg);
    cr_assert_eq(tr_backward(b, 1.0f, 1, &e), 0);
    cr_expect(fabsf(la - lb) <= 1e-6f * la, "loss %.9g vs %.9g", la, lb);
    double d = 0;
    for (size_t i = 0; i < a->n_params; i++) d = fmax(d, fabs(a->grads[i] - b->grads[i]));
    const double g = max_abs(a->grads, a->n_params);
    cr_expect(d <= 1e-5 * g, "1 vs 2 threads: max |dgrad| %g (max |g| %g)", d, g);
    cr_log_info("split products, 1 vs 2 threads: loss %.9g vs %.9g, max |dgrad| %.3g (max |g| %.3g)",
                la, lb, d, g);
    /* fresh weights (the optimizer state is allocated at the first step) */
    tr_init_weights(a, 5);
    tr_init_weights(b, 5);
    train3(a, 2);
    train3(b, 2);
    cr_expect_eq(memcmp(a->params, b->params, a->n_params * sizeof(float)), 0,
                 "same seed, same threads: params differ");
    tr_model_free(a);
    tr_model_free(b);
}

Test(train, init_statistics) {
    tr_config cf = {.dim = 64, .n_layer = 4, .n_head = 4, .n_kv_head = 4, .ffn = 128, .vocab = 256,
                    .seq_len = 16, .tied = 1};
    tr_model *m = NULL;
    av_err e = {0};
    cr_assert_eq(tr_model_new(&cf, &m, &e), 0);
    tr_init_weights(m, 9);
    for (int i = 0; i < m->n_tensors; i++) {
        const tr_tensor *t = &m->tensors[i];
        const float *p = m->params + t->offset;
        double s = 0, s2 = 0;
        for (size_t j = 0; j < t->n; j++) s += p[j], s2 += (double)p[j] * p[j];
        const double mean = s / t->n, sd = sqrt(s2 / t->n - mean * mean);
        if (t->n_dims == 1) {
            cr_expect(mean == 1.0 && sd == 0.0, "%s: norms init to 1", t->name);
            continue;
        }
        const int resid = strstr(t->name, "attn_output") || strstr(t->name, "ffn_down");
        const double want = 0.02 / (resid ? sqrt(8.0) : 1.0);
        cr_expect(fabs(sd - want) < 0.1 * want, "%s: sd %g want %g", t->name, sd, want);
        cr_expect(fabs(mean) < 0.1 * want, "%s: mean %g", t->name, mean);
    }
    tr_model_free(m);
}

/* export -> llm.c forward gives the same logits as the training forward */
Test(train, export_runs_in_llm) {
    tr_model *m = load_260k();
    av_err e = {0};
    /* perturb so the export is not just the input: one step on some batch */
    int32_t x[32], y[32];
    batch(x, y, 32, m->cfg.vocab, 5);
    float l;
    tr_zero_grad(m);
    cr_assert_eq(tr_forward(m, x, y, 1, 32, &l, NULL, 2, &e), 0, "%s", e.msg);
    cr_assert_eq(tr_backward(m, 1.0f, 2, &e), 0);
    tr_adamw aw = {.beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f};
    cr_assert_eq(tr_adamw_step(m, &aw, 1e-3f, 1, 2, &e), 0);
    av_model *o = NULL;
    cr_assert_eq(tr_model_to_model(m, NULL, &o, &e), 0, "%s", e.msg);
    cr_assert_null(av_model_find(o, "output.weight"), "tied: no output.weight");
    llm *lm = NULL;
    llm_ctx *c = NULL;
    cr_assert_eq(llm_new(o, "export", &lm, &e), 0, "%s", e.msg);
    cr_assert_eq(llm_ctx_new(lm, 32, 32, &c, &e), 0, "%s", e.msg);
    const int V = m->cfg.vocab;
    float *a = malloc(sizeof(float) * 32 * V), *b = malloc(sizeof(float) * 32 * V);
    cr_assert_eq(llm_eval(c, x, 32, 0, a, 1, 2, &e), 0, "%s", e.msg);
    cr_assert_eq(tr_forward(m, x, NULL, 1, 32, NULL, b, 2, &e), 0, "%s", e.msg);
    double d = 0;
    for (int i = 0; i < 32 * V; i++) d = fmax(d, fabs(a[i] - b[i]));
    cr_expect(d <= 1e-4, "llm vs train logits: %g", d);
    free(a);
    free(b);
    llm_ctx_free(c);
    llm_free(lm);
    av_model_free(o);
    tr_model_free(m);
}

Test(train, bad_input) {
    tr_model *m = tiny(1, 1);
    av_err e = {0};
    int32_t x[4] = {0, 1, 2, 64}, y[4] = {1, 2, 3, 4};
    float l;
    cr_expect_eq(tr_forward(m, x, y, 1, 4, &l, NULL, 1, &e), AV_EINVAL);
    x[3] = 3;
    cr_expect_eq(tr_forward(m, x, y, 1, 33, &l, NULL, 1, &e), AV_EINVAL);
    cr_expect_eq(tr_backward(m, 1.0f, 1, &e), AV_EINVAL, "no forward yet");
    tr_config bad = m->cfg;
    bad.n_kv_head = 3;
    tr_model *n = NULL;
    cr_expect_eq(tr_model_new(&bad, &n, &e), AV_EINVAL);
    tr_model_free(m);
}

/* ---- vector kernels against their plain twins -------------------------- */

static float frand(uint64_t *s) { /* [-1, 1) */
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(*s >> 11) / 4503599627370496.0 - 1.0);
}

static double max_diff(const float *a, const float *b, size_t n) {
    double d = 0;
    for (size_t i = 0; i < n; i++) d = fmax(d, fabs((double)a[i] - b[i]));
    return d;
}

/* causal attention (recomputing P in the backward, jobs per batch x kv head)
 * vs the full-sgemm reference, for head sizes below, at and above one vector,
 * T not a multiple of the vector width or of the 4-row blocks; the result is
 * bit-identical for 1 and 2 threads and from run to run */
Test(train, attention_matches_reference) {
    static const int cases[][5] = {/* B, T, H, KVH, hd */
                                   {2, 37, 4, 2, 8},  {1, 64, 6, 6, 48}, {2, 256, 8, 4, 8},
                                   {1, 33, 2, 1, 16}, {3, 5, 4, 2, 4},   {1, 18, 3, 1, 6},
                                   {1, 100, 2, 2, 64}};
    uint64_t s = 99;
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        const int B = cases[c][0], T = cases[c][1], H = cases[c][2], KVH = cases[c][3],
                  hd = cases[c][4];
        const size_t nq = (size_t)B * T * H * hd, nk = (size_t)B * T * KVH * hd;
        float *q = malloc(nq * 4), *k = malloc(nk * 4), *v = malloc(nk * 4), *dO = malloc(nq * 4);
        for (size_t i = 0; i < nq; i++) q[i] = 2 * frand(&s), dO[i] = frand(&s);
        for (size_t i = 0; i < nk; i++) k[i] = 2 * frand(&s), v[i] = frand(&s);
        float *o[3], *dq[3], *dk[3], *dv[3];
        for (int r = 0; r < 3; r++) { /* 0: reference, 1: 2 threads, 2: 1 thread */
            o[r] = malloc(nq * 4), dq[r] = malloc(nq * 4), dk[r] = malloc(nk * 4), dv[r] = malloc(nk * 4);
            for (size_t i = 0; i < nk; i++) dk[r][i] = dv[r][i] = 7.0f; /* must be overwritten */
            const int nt = r == 2 ? 1 : 2;
            float *P = malloc((size_t)B * H * T * T * 4),
                  *sc = malloc((r ? tr_attention_scratch(T, hd, nt) : tr_attention_scratch_ref(T, nt)) * 4);
            if (r == 0) {
                tr_attention_fwd_ref(o[r], P, q, k, v, B, T, H, KVH, hd, sc, nt);
                tr_attention_bwd_ref(dq[r], dk[r], dv[r], dO, P, q, k, v, B, T, H, KVH, hd, sc, nt);
            } else {
                tr_attention_fwd(o[r], P, q, k, v, B, T, H, KVH, hd, sc, nt);
                tr_attention_bwd(dq[r], dk[r], dv[r], dO, P, q, k, v, B, T, H, KVH, hd, sc, nt);
            }
            free(P);
            free(sc);
        }
        const double eo = max_diff(o[1], o[0], nq) / max_abs(o[0], nq),
                     eq = max_diff(dq[1], dq[0], nq) / max_abs(dq[0], nq),
                     ek = max_diff(dk[1], dk[0], nk) / max_abs(dk[0], nk),
                     ev = max_diff(dv[1], dv[0], nk) / max_abs(dv[0], nk);
        cr_expect(eo < 2e-6 && eq < 1e-5 && ek < 1e-5 && ev < 1e-5,
                  "case %zu (B %d T %d H %d/%d hd %d): rel diff out %.3g dq %.3g dk %.3g dv %.3g", c,
                  B, T, H, KVH, hd, eo, eq, ek, ev);
        cr_expect(memcmp(o[1], o[2], nq * 4) == 0 && memcmp(dq[1], dq[2], nq * 4) == 0 &&
                      memcmp(dk[1], dk[2], nk * 4) == 0 && memcmp(dv[1], dv[2], nk * 4) == 0,
                  "case %zu: 1 and 2 threads differ", c);
        cr_log_info("attention case %zu (T %d hd %d): rel diff vs reference out %.2g dq %.2g dk %.2g "
                    "dv %.2g", c, T, hd, eo, eq, ek, ev);
        for (int r = 0; r < 3; r++) free(o[r]), free(dq[r]), free(dk[r]), free(dv[r]);
        free(q), free(k), free(v), free(dO);
    }
}

/* fused softmax + cross-entropy leaving p - onehot == reference softmax then
 * tr_xent_bwd with scale 1; vector rows of a length that is not a multiple
 * of the vector width; an ignored row */
Test(train, xent_grad_matches_reference) {
    const int N = 9, V = 1003;
    int32_t t[9] = {0, 1002, 17, -1, 500, 3, 999, 64, 1};
    uint64_t s = 5;
    float *a = malloc(sizeof(float) * N * V), *b = malloc(sizeof(float) * N * V),
          *c = malloc(sizeof(float) * N * V), *la = malloc(N * 4), *lb = malloc(N * 4),
          *lc = malloc(N * 4);
    for (int i = 0; i < N * V; i++) a[i] = b[i] = c[i] = 8 * frand(&s) + (i % 7 == 0 ? 20 : 0);
    double sa, sb, sc;
    const int na = tr_xent_fwd_grad(a, la, t, N, V, &sa, 2);
    const int nb = tr_xent_fwd_ref(b, lb, t, N, V, &sb);
    const int nc = tr_xent_fwd(c, lc, t, N, V, &sc, 2);
    cr_expect(na == 8 && nb == 8 && nc == 8);
    cr_expect(fabs(sa - sb) <= 1e-6 * fabs(sb) && sa == sc, "loss sum %.9g %.9g %.9g", sa, sb, sc);
    cr_expect(max_diff(la, lb, N) <= 1e-5, "losses differ by %g", max_diff(la, lb, N));
    cr_expect(max_diff(c, b, (size_t)N * V) <= 1e-6, "probabilities differ by %g",
              max_diff(c, b, (size_t)N * V));
    tr_xent_bwd(b, t, N, V, 1.0f, 2);
    cr_expect(max_diff(a, b, (size_t)N * V) <= 1e-6, "p - onehot differs by %g",
              max_diff(a, b, (size_t)N * V));
    for (int j = 0; j < V; j++) cr_assert_eq(a[3 * V + j], 0.0f, "ignored row");
    free(a), free(b), free(c), free(la), free(lb), free(lc);
}

Test(train, swiglu_and_exp_match_reference) {
    const size_t n = 70001; /* threaded, with a tail */
    uint64_t s = 8;
    float *g = malloc(n * 4), *u = malloc(n * 4), *dh = malloc(n * 4), *h[2], *dg[2], *du[2];
    for (size_t i = 0; i < n; i++) g[i] = 12 * frand(&s), u[i] = frand(&s), dh[i] = frand(&s);
    g[0] = -100.0f, g[1] = 100.0f, g[2] = 0.0f;
    for (int r = 0; r < 2; r++) h[r] = malloc(n * 4), dg[r] = malloc(n * 4), du[r] = malloc(n * 4);
    tr_swiglu_fwd(h[0], g, u, n, 2);
    tr_swiglu_bwd(dg[0], du[0], dh, g, u, n, 2);
    tr_swiglu_fwd_ref(h[1], g, u, n);
    tr_swiglu_bwd_ref(dg[1], du[1], dh, g, u, n);
    cr_expect(max_diff(h[0], h[1], n) <= 4e-6, "swiglu fwd %g", max_diff(h[0], h[1], n));
    cr_expect(max_diff(dg[0], dg[1], n) <= 4e-6, "swiglu dg %g", max_diff(dg[0], dg[1], n));
    cr_expect(max_diff(du[0], du[1], n) <= 4e-6, "swiglu du %g", max_diff(du[0], du[1], n));
    for (int r = 0; r < 2; r++) free(h[r]), free(dg[r]), free(du[r]);
    free(g), free(u), free(dh);
    /* exp: a few ulp of expf on [-87, 88], 0 below the normal range */
    double worst = 0;
    for (float x = -87.0f; x < 88.0f; x += 0.0137f) {
        const double want = exp((double)x), rel = fabs(tr_expf(x) - want) / want;
        if (rel > worst) worst = rel;
    }
    cr_expect(worst < 3e-7, "exp max rel error %g", worst);
    cr_expect(tr_expf(-88.0f) == 0.0f && tr_expf(-INFINITY) == 0.0f && tr_expf(0.0f) == 1.0f);
    cr_log_info("exp: max rel error %.3g on [-87, 88]", worst);
}

/* head size 48 and T = 40 (not a multiple of 16), GQA: two runs with the
 * same threads are bitwise equal; 1 and 2 threads agree to rounding */
Test(train, repeatable_wide_heads) {
    tr_config cf = {.dim = 96, .n_layer = 2, .n_head = 2, .n_kv_head = 1, .ffn = 200,
                    .vocab = 300, .seq_len = 40, .tied = 1};
    tr_model *m[3];
    av_err e = {0};
    for (int r = 0; r < 3; r++) {
        cr_assert_eq(tr_model_new(&cf, &m[r], &e), 0, "%s", e.msg);
        tr_init_weights(m[r], 3);
    }
    tr_adamw aw = {.beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f};
    int32_t x[120], y[120];
    float loss[3][3];
    for (int step = 0; step < 3; step++) {
        batch(x, y, 120, cf.vocab, 40 + step);
        for (int r = 0; r < 3; r++) {
            tr_zero_grad(m[r]);
            cr_assert_eq(tr_forward(m[r], x, y, 3, 40, &loss[r][step], NULL, r == 2 ? 1 : 2, &e), 0,
                         "%s", e.msg);
            cr_assert_eq(tr_backward(m[r], 1.0f, r == 2 ? 1 : 2, &e), 0);
        }
        if (step == 0) { /* gradients of the same weights (Adam's first steps are sign-like) */
            double d = 0;
            for (size_t i = 0; i < m[0]->n_params; i++)
                d = fmax(d, fabs(m[0]->grads[i] - m[2]->grads[i]));
            const double g = max_abs(m[0]->grads, m[0]->n_params);
            cr_expect(d <= 1e-5 * g, "1 vs 2 threads: max |dgrad| %g (max |g| %g)", d, g);
            cr_log_info("wide heads, 1 vs 2 threads: max |dgrad| %.3g (max |g| %.3g)", d, g);
        }
        for (int r = 0; r < 3; r++) {
            tr_clip_grad_norm(m[r], 1.0f, r == 2 ? 1 : 2);
            cr_assert_eq(tr_adamw_step(m[r], &aw, 1e-3f, step + 1, r == 2 ? 1 : 2, &e), 0);
        }
    }
    cr_expect_eq(memcmp(m[0]->params, m[1]->params, m[0]->n_params * sizeof(float)), 0,
                 "same threads: params differ");
    cr_expect_eq(memcmp(loss[0], loss[1], sizeof loss[0]), 0, "same threads: losses differ");
    cr_expect(fabsf(loss[0][0] - loss[2][0]) <= 1e-6f * loss[0][0], "loss 2 threads %.9g, 1 thread %.9g",
              loss[0][0], loss[2][0]);
    for (int r = 0; r < 3; r++) tr_model_free(m[r]);
}
