/* llama2.c checkpoints: conversion equals llama.cpp's convert-llama2c-to-ggml
 * output (reference/llamacpp/stories260K-f32.gguf) and bad files fail cleanly. */
#include <criterion/criterion.h>
#include <string.h>

#include "gguf.h"
#include "llama2c.h"
#include "testutil.h"

/* Keys whose values differ from llama.cpp's converter on purpose (docs/FORMATS.md). */
static int deliberate_difference(const char *key) {
    return !strcmp(key, "general.name") || !strcmp(key, "llama.context_length");
}

static int values_equal(const av_value *a, const av_value *b) {
    if (a->type != b->type) return 0;
    switch (a->type) {
    case AV_KV_STRING: return a->str.len == b->str.len && !memcmp(a->str.s, b->str.s, a->str.len);
    case AV_KV_F32: case AV_KV_F64: return !memcmp(&a->f, &b->f, sizeof a->f);
    case AV_KV_ARRAY: {
        if (a->arr.elem != b->arr.elem || a->arr.n != b->arr.n) return 0;
        if (a->arr.elem == AV_KV_STRING) {
            const av_str *x = a->arr.data, *y = b->arr.data;
            for (uint64_t i = 0; i < a->arr.n; i++)
                if (x[i].len != y[i].len || memcmp(x[i].s, y[i].s, x[i].len)) return 0;
            return 1;
        }
        return !memcmp(a->arr.data, b->arr.data, a->arr.n * av_kv_scalar_size(a->arr.elem));
    }
    default: return a->u == b->u;
    }
}

Test(llama2c, stories260K_matches_llamacpp_converter) {
    av_err err = { 0 };
    av_model *ours, *ref;
    cr_assert_eq(l2c_read(shared_path("models/stories260K.bin"), shared_path("models/tok512.bin"), &ours, &err), 0, "%s", err.msg);
    cr_assert_eq(gguf_read(shared_path("reference/llamacpp/stories260K-f32.gguf"), &ref, &err), 0, "%s", err.msg);
    /* same keys in the same order, same values except the documented ones */
    cr_assert_eq(ours->kv.n, ref->kv.n);
    for (size_t i = 0; i < ref->kv.n; i++) {
        cr_assert_str_eq(ours->kv.items[i].key, ref->kv.items[i].key);
        if (!deliberate_difference(ref->kv.items[i].key))
            cr_assert(values_equal(&ours->kv.items[i].val, &ref->kv.items[i].val), "key %s differs", ref->kv.items[i].key);
    }
    uint64_t ctx;
    cr_assert_eq(av_kvs_get_u64(&ours->kv, "llama.context_length", &ctx), 0);
    cr_assert_eq(ctx, 512); /* the checkpoint's seq_len (shared/reference/torch/README.md) */
    /* same tensors, same order, byte-identical data */
    cr_assert_eq(ours->n_tensors, ref->n_tensors);
    for (size_t i = 0; i < ref->n_tensors; i++) {
        const av_tensor *a = &ours->tensors[i], *b = &ref->tensors[i];
        cr_assert_str_eq(a->name, b->name);
        cr_assert_eq(a->dtype, b->dtype, "%s", a->name);
        cr_assert_eq(a->n_dims, b->n_dims, "%s", a->name);
        for (int d = 0; d < a->n_dims; d++) cr_assert_eq(a->shape[d], b->shape[d], "%s dim %d", a->name, d);
        int ok;
        size_t n = av_tensor_nbytes(a, &ok);
        cr_assert(ok);
        cr_assert_eq(memcmp(a->data, b->data, n), 0, "tensor %s data differ", a->name);
    }
    av_model_free(ours);
    av_model_free(ref);
}

Test(llama2c, written_gguf_matches_reference_bytes_outside_metadata) {
    /* the converted file's tensor infos and data section equal the reference file's */
    const char *out = tmp_path(".gguf");
    av_err err = { 0 };
    av_model *m;
    cr_assert_eq(l2c_read(shared_path("models/stories260K.bin"), shared_path("models/tok512.bin"), &m, &err), 0, "%s", err.msg);
    cr_assert_eq(gguf_write(m, out, NULL, NULL, &err), 0, "%s", err.msg);
    size_t na, nb;
    unsigned char *a = slurp(out, &na), *b = slurp(shared_path("reference/llamacpp/stories260K-f32.gguf"), &nb);
    cr_assert_eq(na, nb);
    av_model *w;
    cr_assert_eq(gguf_read(out, &w, &err), 0, "%s", err.msg);
    size_t start = w->tensors[0].file_offset;
    cr_assert_eq(start, 14176); /* the reference's data section offset (anvil info on it) */
    cr_assert_eq(memcmp(a + start, b + start, na - start), 0);
    free(a);
    free(b);
    av_model_free(w);
    av_model_free(m);
    unlink(out);
}

Test(llama2c, header_facts) {
    size_t n;
    unsigned char *p = slurp(shared_path("models/stories260K.bin"), &n);
    cr_assert(p);
    l2c_config c;
    av_err err = { 0 };
    cr_assert_eq(l2c_read_config(p, n, "s.bin", &c, &err), 0, "%s", err.msg);
    /* shared/DATA.md: dim=64 hidden_dim=172 n_layers=5 n_heads=8 n_kv_heads=4 vocab_size=512 seq_len=512 */
    cr_assert_eq(c.dim, 64);
    cr_assert_eq(c.hidden_dim, 172);
    cr_assert_eq(c.n_layers, 5);
    cr_assert_eq(c.n_heads, 8);
    cr_assert_eq(c.n_kv_heads, 4);
    cr_assert_eq(c.vocab_size, 512);
    cr_assert_eq(c.seq_len, 512);
    cr_assert(c.shared_classifier);
    free(p);
}

static void expect_cfg_error(const unsigned char *p, size_t n, const char *needle) {
    l2c_config c;
    av_err err = { 0 };
    cr_assert_eq(l2c_read_config(p, n, "bad.bin", &c, &err), AV_EFORMAT, "size %zu parsed", n);
    cr_assert(strstr(err.msg, "bad.bin: ") == err.msg, "%s", err.msg);
    cr_assert(strstr(err.msg, needle), "'%s' lacks '%s'", err.msg, needle);
}

Test(llama2c, malformed_checkpoints) {
    size_t n;
    unsigned char *p = slurp(shared_path("models/stories260K.bin"), &n);
    cr_assert(p);
    for (size_t cut = 0; cut < n; cut += cut < 64 ? 1 : 997)
        expect_cfg_error(p, cut, cut < 28 ? "too short" : "truncated");
    unsigned char *q = malloc(n + 4);
    memcpy(q, p, n);
    memset(q + n, 0, 4);
    expect_cfg_error(q, n + 4, "trailing data");
    int32_t bad[] = { 0, -5, 1 << 30, INT32_MIN }; /* INT32_MIN: found by fuzz_llama2c (negation overflow) */
    for (int field = 0; field < 7; field++)
        for (size_t k = 0; k < 4; k++) {
            memcpy(q, p, 28);
            if (field == 5 && bad[k] == -5) continue; /* negative vocab = untied classifier: legal */
            memcpy(q + field * 4, &bad[k], 4);
            expect_cfg_error(q, n, "out of range");
        }
    memcpy(q, p, 28);
    int32_t heads = 7; /* 64 % 7 != 0 */
    memcpy(q + 12, &heads, 4);
    expect_cfg_error(q, n, "divide");
    /* untied classifier claimed but no wcls stored */
    memcpy(q, p, 28);
    int32_t neg = -512;
    memcpy(q + 20, &neg, 4);
    expect_cfg_error(q, n, "truncated");
    free(q);
    free(p);
}

Test(llama2c, untied_classifier_reads_wcls) {
    /* append a classifier and flip vocab_size negative: output.weight must be the new block */
    size_t n;
    unsigned char *p = slurp(shared_path("models/stories260K.bin"), &n);
    size_t cls = 512 * 64 * 4;
    unsigned char *q = malloc(n + cls);
    memcpy(q, p, n);
    for (size_t i = 0; i < cls / 4; i++) { float f = (float)i; memcpy(q + n + i * 4, &f, 4); }
    int32_t neg = -512;
    memcpy(q + 20, &neg, 4);
    const char *path = tmp_path(".bin");
    cr_assert_eq(write_bytes(path, q, n + cls), 0);
    av_err err = { 0 };
    av_model *m;
    cr_assert_eq(l2c_read(path, NULL, &m, &err), 0, "%s", err.msg);
    const av_tensor *o = av_model_find(m, "output.weight"), *e = av_model_find(m, "token_embd.weight");
    cr_assert(o && e && o->data != e->data);
    cr_assert_eq(((const float *)o->data)[100], 100.0f);
    av_model_free(m);
    unlink(path);
    free(p);
    free(q);
}

Test(llama2c, malformed_tokenizers) {
    size_t n;
    unsigned char *p = slurp(shared_path("models/tok512.bin"), &n);
    cr_assert(p);
    const char *path = tmp_path(".bin");
    for (size_t cut = 0; cut < n; cut += cut < 200 ? 1 : 331) {
        cr_assert_eq(write_bytes(path, p, cut), 0);
        av_kvs kv;
        av_kvs_init(&kv);
        av_err err = { 0 };
        cr_assert_eq(l2c_read_tokenizer(path, 512, &kv, &err), AV_EFORMAT, "cut %zu parsed", cut);
        cr_assert(strstr(err.msg, path) == err.msg, "%s", err.msg);
        av_kvs_release(&kv);
    }
    /* a negative or huge token length */
    int32_t bad = -1;
    memcpy(p + 8, &bad, 4);
    cr_assert_eq(write_bytes(path, p, n), 0);
    av_kvs kv;
    av_kvs_init(&kv);
    av_err err = { 0 };
    cr_assert_eq(l2c_read_tokenizer(path, 512, &kv, &err), AV_EFORMAT);
    cr_assert(strstr(err.msg, "has length -1"), "%s", err.msg);
    /* vocabulary larger than the checkpoint's */
    av_kvs_release(&kv);
    free(p);
    p = slurp(shared_path("models/tok512.bin"), &n);
    cr_assert_eq(write_bytes(path, p, n), 0);
    av_kvs_init(&kv);
    cr_assert_eq(l2c_read_tokenizer(path, 500, &kv, &err), AV_EFORMAT);
    cr_assert(strstr(err.msg, "trailing bytes"), "%s", err.msg);
    av_kvs_release(&kv);
    unlink(path);
    free(p);
}
