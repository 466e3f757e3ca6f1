/* test_llm.c — the forward pass against PyTorch logits and llama.cpp's
 * greedy generations (../shared/reference), plus load-time validation. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "llama2c.h"
#include "llm.h"
#include "testutil.h"

static json_t *load_json(const char *rel) {
    json_error_t je;
    json_t *j = json_load_file(shared_path(rel), 0, &je);
    cr_assert(j, "cannot read %s: %s", rel, je.text);
    return j;
}

/* The GGUF the converter makes from stories260K.bin (l2c_read -> gguf_write),
 * read back from disk like any user file. */
static av_model *converted_260k(void) {
    av_err e = {0};
    av_model *m = NULL, *g = NULL;
    cr_assert_eq(l2c_read(shared_path("models/stories260K.bin"), shared_path("models/tok512.bin"),
                          &m, &e), 0, "%s", e.msg);
    const char *p = tmp_path(".gguf");
    cr_assert_eq(gguf_write(m, p, NULL, NULL, &e), 0, "%s", e.msg);
    av_model_free(m);
    cr_assert_eq(gguf_read(p, &g, &e), 0, "%s", e.msg);
    unlink(p); /* the mmap keeps the data */
    return g;
}

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

static void ids_of(json_t *arr, int32_t *out, int *n) {
    *n = (int)json_array_size(arr);
    for (int i = 0; i < *n; i++) out[i] = (int32_t)json_integer_value(json_array_get(arr, i));
}

/* Evaluate the reference input either as one batch or token by token, and
 * compare every position's logits with PyTorch's to 1e-4. */
static void check_torch_logits(int batch, int n_threads) {
    json_t *ref = load_json("reference/torch/logits.json");
    av_model *m = converted_260k();
    av_err e = {0};
    llm *l = NULL;
    llm_ctx *c = NULL;
    cr_assert_eq(llm_new(m, "stories260K", &l, &e), 0, "%s", e.msg);
    int32_t ids[64];
    int n;
    ids_of(json_object_get(ref, "input_ids"), ids, &n);
    const int V = l->hp.n_vocab;
    cr_assert_eq(V, 512);
    cr_assert_eq(llm_ctx_new(l, 64, 64, &c, &e), 0, "%s", e.msg);
    float *logits = malloc(sizeof(float) * (size_t)n * V);
    if (batch) {
        cr_assert_eq(llm_eval(c, ids, n, 0, logits, 1, n_threads, &e), 0, "%s", e.msg);
    } else {
        for (int i = 0; i < n; i++)
            cr_assert_eq(llm_eval(c, ids + i, 1, i, logits + (size_t)i * V, 0, n_threads, &e), 0,
                         "%s", e.msg);
    }
    json_t *all = json_object_get(ref, "all_logits");
    cr_assert_eq((int)json_array_size(all), n);
    double worst = 0;
    for (int i = 0; i < n; i++) {
        json_t *row = json_array_get(all, i);
        for (int v = 0; v < V; v++) {
            double d = fabs(logits[(size_t)i * V + v] - json_real_value(json_array_get(row, v)));
            if (d > worst) worst = d;
        }
        cr_assert_eq(argmax(logits + (size_t)i * V, V),
                     json_integer_value(json_array_get(json_object_get(ref, "argmax_per_position"), i)));
    }
    json_t *last = json_object_get(ref, "last_logits");
    for (int v = 0; v < V; v++) {
        double d = fabs(logits[(size_t)(n - 1) * V + v] - json_real_value(json_array_get(last, v)));
        cr_assert_lt(d, 1e-4, "last logit %d differs by %g", v, d);
    }
    cr_assert_lt(worst, 1e-4, "max |logit - torch| = %g", worst);
    free(logits);
    llm_ctx_free(c);
    llm_free(l);
    av_model_free(m);
    json_decref(ref);
}

Test(llm, torch_logits_batch) { check_torch_logits(1, 1); }
Test(llm, torch_logits_batch_2threads) { check_torch_logits(1, 2); }
Test(llm, torch_logits_decode) { check_torch_logits(0, 1); }
Test(llm, torch_logits_decode_2threads) { check_torch_logits(0, 2); }

/* Greedy continuation: batch prompt, then one token at a time. */
static void greedy(llm *l, const int32_t *prompt, int np, int steps, int32_t *out, int stop_eos,
                   int *n_out) {
    av_err e = {0};
    llm_ctx *c = NULL;
    cr_assert_eq(llm_ctx_new(l, np + steps, 512, &c, &e), 0, "%s", e.msg);
    float *logits = malloc(sizeof(float) * (size_t)l->hp.n_vocab);
    cr_assert_eq(llm_eval(c, prompt, np, 0, logits, 0, 1, &e), 0, "%s", e.msg);
    int k = 0;
    for (; k < steps; k++) {
        int32_t t = argmax(logits, l->hp.n_vocab);
        if (stop_eos && t == 2) break;
        out[k] = t;
        cr_assert_eq(llm_eval(c, &t, 1, np + k, logits, 0, 1, &e), 0, "%s", e.msg);
    }
    *n_out = k;
    free(logits);
    llm_ctx_free(c);
}

Test(llm, torch_greedy_200) {
    json_t *ref = load_json("reference/torch/logits.json");
    json_t *g = json_object_get(ref, "greedy");
    av_model *m = converted_260k();
    av_err e = {0};
    llm *l = NULL;
    cr_assert_eq(llm_new(m, "stories260K", &l, &e), 0, "%s", e.msg);
    int32_t prompt[8], want[256], got[256];
    int np, nw, ng;
    ids_of(json_object_get(g, "prompt_ids"), prompt, &np);
    ids_of(json_object_get(g, "ids"), want, &nw);
    greedy(l, prompt, np, nw, got, 0, &ng);
    for (int i = 0; i < nw; i++) cr_assert_eq(got[i], want[i], "token %d: %d vs torch %d", i, got[i], want[i]);
    llm_free(l);
    av_model_free(m);
    json_decref(ref);
}

/* llama-simple greedy outputs for both reference GGUFs, 3 prompts each. */
Test(llm, llamacpp_greedy) {
    json_t *ref = load_json("reference/llamacpp/greedy.json");
    size_t i;
    json_t *ent;
    int checked = 0;
    json_array_foreach(ref, i, ent) {
        char rel[256];
        snprintf(rel, sizeof rel, "reference/llamacpp/%s",
                 json_string_value(json_object_get(ent, "model")));
        av_model *m = NULL;
        av_err e = {0};
        llm *l = NULL;
        cr_assert_eq(gguf_read(shared_path(rel), &m, &e), 0, "%s", e.msg);
        cr_assert_eq(llm_new(m, rel, &l, &e), 0, "%s", e.msg);
        int32_t prompt[64], want[256], got[256];
        int np, nw, ng;
        ids_of(json_object_get(ent, "prompt_ids"), prompt, &np);
        ids_of(json_object_get(ent, "generated_ids"), want, &nw);
        greedy(l, prompt, np, (int)json_integer_value(json_object_get(ent, "n_predict")), got, 1, &ng);
        cr_assert_eq(ng, nw, "%s %s: %d tokens vs llama.cpp %d", rel,
                     json_string_value(json_object_get(ent, "prompt")), ng, nw);
        for (int k = 0; k < nw; k++)
            cr_assert_eq(got[k], want[k], "%s prompt '%s' token %d: %d vs llama.cpp %d", rel,
                         json_string_value(json_object_get(ent, "prompt")), k, got[k], want[k]);
        checked++;
        llm_free(l);
        av_model_free(m);
    }
    cr_assert_eq(checked, 6);
    json_decref(ref);
}

/* f16/bf16 weights: the same model narrowed stays close to f32 logits. */
static void check_narrow(av_dtype dt, double tol) {
    av_model *m = converted_260k();
    av_err e = {0};
    llm *l32 = NULL, *l16 = NULL;
    cr_assert_eq(llm_new(m, "f32", &l32, &e), 0, "%s", e.msg);
    av_model *h = converted_260k();
    for (size_t i = 0; i < h->n_tensors; i++) {
        av_tensor *t = &h->tensors[i];
        if (t->n_dims != 2) continue;
        int64_t n = av_tensor_nelements(t);
        void *buf = malloc((size_t)n * 2);
        cr_assert_eq(av_convert(t->data, AV_F32, buf, dt, n, &e), 0, "%s", e.msg);
        t->data = buf;
        t->owned = buf;
        t->dtype = t->src_dtype = dt;
    }
    cr_assert_eq(llm_new(h, "narrow", &l16, &e), 0, "%s", e.msg);
    cr_assert_lt(l16->weight_bytes, l32->weight_bytes * 0.6);
    int32_t ids[] = {1, 403, 407, 261, 378, 285, 426, 263};
    const int n = 8, V = 512;
    float a[8 * 512], b[8 * 512], d1[512];
    llm_ctx *ca = NULL, *cb = NULL;
    cr_assert_eq(llm_ctx_new(l32, 16, 16, &ca, &e), 0);
    cr_assert_eq(llm_ctx_new(l16, 16, 16, &cb, &e), 0);
    cr_assert_eq(llm_eval(ca, ids, n, 0, a, 1, 1, &e), 0, "%s", e.msg);
    cr_assert_eq(llm_eval(cb, ids, n, 0, b, 1, 2, &e), 0, "%s", e.msg);
    for (int k = 0; k < n * V; k++) cr_assert_lt(fabs(a[k] - b[k]), tol, "logit %d: %g vs %g", k, a[k], b[k]);
    /* decode path (mat-vec kernels) agrees with the batch path (sgemm) */
    llm_ctx *cc = NULL;
    cr_assert_eq(llm_ctx_new(l16, 16, 1, &cc, &e), 0);
    for (int i = 0; i < n; i++) cr_assert_eq(llm_eval(cc, ids + i, 1, i, d1, 0, 1, &e), 0, "%s", e.msg);
    for (int v = 0; v < V; v++) cr_assert_lt(fabs(d1[v] - b[(n - 1) * V + v]), 1e-3);
    llm_ctx_free(ca);
    llm_ctx_free(cb);
    llm_ctx_free(cc);
    llm_free(l32);
    llm_free(l16);
    av_model_free(m);
    av_model_free(h);
}

Test(llm, f16_weights) { check_narrow(AV_F16, 0.05); }
Test(llm, bf16_weights) { check_narrow(AV_BF16, 0.3); }

Test(llm, ctx_copy_continues_identically) {
    av_model *m = converted_260k();
    av_err e = {0};
    llm *l = NULL;
    llm_ctx *a = NULL, *b = NULL;
    cr_assert_eq(llm_new(m, "m", &l, &e), 0);
    cr_assert_eq(llm_ctx_new(l, 32, 8, &a, &e), 0);
    cr_assert_eq(llm_ctx_new(l, 32, 8, &b, &e), 0);
    int32_t ids[] = {1, 403, 407, 261, 378};
    float la[512], lb[512];
    cr_assert_eq(llm_eval(a, ids, 4, 0, la, 0, 1, &e), 0);
    cr_assert_eq(llm_ctx_copy(b, a, 4, &e), 0);
    cr_assert_eq(llm_eval(a, ids + 4, 1, 4, la, 0, 1, &e), 0);
    cr_assert_eq(llm_eval(b, ids + 4, 1, 4, lb, 0, 1, &e), 0);
    cr_assert_eq(memcmp(la, lb, sizeof la), 0);
    llm_ctx_free(a);
    llm_ctx_free(b);
    llm_free(l);
    av_model_free(m);
}

Test(llm, eval_rejects_bad_calls) {
    av_model *m = converted_260k();
    av_err e = {0};
    llm *l = NULL;
    llm_ctx *c = NULL;
    cr_assert_eq(llm_new(m, "m", &l, &e), 0);
    cr_assert_eq(llm_ctx_new(l, 4, 4, &c, &e), 0);
    float lg[512];
    int32_t bad = 512, ok[5] = {1, 2, 3, 4, 5};
    cr_assert_eq(llm_eval(c, &bad, 1, 0, lg, 0, 1, &e), AV_EINVAL);
    cr_assert(strstr(e.msg, "512"), "%s", e.msg);
    cr_assert_eq(llm_eval(c, ok, 1, 4, lg, 0, 1, &e), AV_EINVAL);
    cr_assert(strstr(e.msg, "context"), "%s", e.msg);
    cr_assert_eq(llm_eval(c, ok, 5, 0, lg, 0, 1, &e), AV_EINVAL);
    llm_ctx_free(c);
    llm_free(l);
    av_model_free(m);
}

/* Load-time validation names what is wrong. */
static void expect_load_error(av_model *m, int code, const char *needle) {
    av_err e = {0};
    llm *l = NULL;
    cr_assert_eq(llm_new(m, "bad.gguf", &l, &e), code, "got %d: %s", e.code, e.msg);
    cr_assert_null(l);
    cr_assert(strstr(e.msg, "bad.gguf") && strstr(e.msg, needle), "message: %s", e.msg);
    av_model_free(m);
}

Test(llm, rejects_other_architecture) {
    av_model *m = converted_260k();
    av_kvs_set_str(&m->kv, "general.architecture", "gpt2");
    expect_load_error(m, AV_EUNSUPPORTED, "gpt2");
}

Test(llm, rejects_missing_keys) {
    const char *keys[] = {"llama.block_count", "llama.embedding_length",
                          "llama.attention.head_count", "llama.feed_forward_length",
                          "llama.attention.layer_norm_rms_epsilon", "general.architecture"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        av_model *m = converted_260k();
        av_kvs_remove(&m->kv, keys[i]);
        expect_load_error(m, AV_EFORMAT, keys[i]);
    }
}

Test(llm, rejects_shape_mismatch_and_missing_tensor) {
    av_model *m = converted_260k();
    av_model_find(m, "blk.3.attn_k.weight")->shape[0] = 64;
    expect_load_error(m, AV_EFORMAT, "blk.3.attn_k.weight");
    m = converted_260k();
    av_kvs_set_u32(&m->kv, "llama.feed_forward_length", 128);
    expect_load_error(m, AV_EFORMAT, "blk.0.ffn_gate.weight");
    m = converted_260k();
    av_tensor *t = av_model_find(m, "blk.4.ffn_up.weight");
    free(t->name);
    t->name = strdup("renamed");
    expect_load_error(m, AV_EFORMAT, "missing tensor");
    m = converted_260k();
    av_kvs_set_u32(&m->kv, "llama.attention.head_count_kv", 3);
    expect_load_error(m, AV_EFORMAT, "head_count_kv");
}

Test(llm, rejects_weight_types_without_kernels) {
    av_model *m = converted_260k();
    av_tensor *t = av_model_find(m, "blk.0.attn_q.weight");
    t->dtype = t->src_dtype = AV_IQ2_XXS;
    expect_load_error(m, AV_EUNSUPPORTED, "iq2_xxs");
}

/* HF folder (rotate_half layout, HF names): after hf_llama_to_gguf every
 * tensor equals the llama2.c-converted GGUF's byte for byte, and the logits
 * match PyTorch's. */
#include "hf.h"
#include "safetensors.h"

static void check_hf_folder(const char *rel) {
    av_err e = {0};
    av_model *m = NULL;
    cr_assert_eq(st_read(shared_path(rel), &m, &e), 0, "%s", e.msg);
    cr_assert(hf_is_llama(m));
    char cfg[512];
    snprintf(cfg, sizeof cfg, "%s/config.json", shared_path(rel));
    cr_assert_eq(hf_llama_to_gguf(m, cfg, &e), 0, "%s", e.msg);
    av_model *g = converted_260k();
    int compared = 0;
    for (size_t i = 0; i < g->n_tensors; i++) {
        const av_tensor *a = &g->tensors[i], *b = av_model_find(m, a->name);
        if (!b && strcmp(a->name, "output.weight") == 0) continue; /* tied in the HF folder */
        cr_assert(b, "%s: no tensor %s after mapping", rel, a->name);
        int ok;
        size_t nb = av_tensor_src_nbytes(a, &ok);
        cr_assert_eq(nb, av_tensor_src_nbytes(b, &ok));
        cr_assert_eq(memcmp(a->data, b->data, nb), 0, "%s differs", a->name);
        compared++;
    }
    cr_assert_eq(compared, 47);
    llm *l = NULL;
    llm_ctx *c = NULL;
    cr_assert_eq(llm_new(m, rel, &l, &e), 0, "%s", e.msg);
    json_t *ref = load_json("reference/torch/logits.json");
    int32_t ids[64];
    int n;
    ids_of(json_object_get(ref, "input_ids"), ids, &n);
    float logits[512];
    cr_assert_eq(llm_ctx_new(l, 64, 64, &c, &e), 0);
    cr_assert_eq(llm_eval(c, ids, n, 0, logits, 0, 1, &e), 0, "%s", e.msg);
    json_t *last = json_object_get(ref, "last_logits");
    for (int v = 0; v < 512; v++)
        cr_assert_lt(fabs(logits[v] - json_real_value(json_array_get(last, v))), 1e-4);
    json_decref(ref);
    llm_ctx_free(c);
    llm_free(l);
    av_model_free(g);
    av_model_free(m);
}

Test(llm, hf_folder) { check_hf_folder("reference/torch/hf"); }
Test(llm, hf_folder_sharded) { check_hf_folder("reference/torch/hf-sharded"); }

Test(llm, hf_config_errors) {
    const char *cases[][2] = {
        {"{\"model_type\":\"gpt2\"}", "gpt2"},
        {"{\"model_type\":\"llama\",\"hidden_size\":64}", "num_hidden_layers"},
        {"{\"model_type\":\"llama\",\"hidden_size\":64,\"num_hidden_layers\":5,"
         "\"num_attention_heads\":8,\"intermediate_size\":172,\"rope_scaling\":{\"type\":\"linear\"}}",
         "rope_scaling"},
        {"{\"model_type\":\"llama\",\"hidden_size\":-3}", "hidden_size"},
        {"not json", "config"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        av_err e = {0};
        av_model *m = NULL;
        cr_assert_eq(st_read(shared_path("reference/torch/hf"), &m, &e), 0, "%s", e.msg);
        const char *p = tmp_path("-config.json");
        cr_assert_eq(write_bytes(p, cases[i][0], strlen(cases[i][0])), 0);
        cr_assert_neq(hf_llama_to_gguf(m, p, &e), 0, "case %zu accepted", i);
        cr_assert(strstr(e.msg, p) && strstr(e.msg, cases[i][1]), "case %zu: %s", i, e.msg);
        unlink(p);
        av_model_free(m);
    }
}
