/* GGUF reader/writer: byte-identical round trips on every .gguf under shared/
 * (files written by llama.cpp and gguf-py), and a malformed-input suite whose
 * files are built byte by byte here (not by the writer under test). */
#include <criterion/criterion.h>
#include <dirent.h>
#include <string.h>

#include "gguf.h"
#include "testutil.h"

static const char *const SHARED_GGUFS[] = {
    "models/llama-2-tiny-random.gguf",
    "reference/llamacpp/stories260K-f32.gguf",
    "reference/llamacpp/stories-d256-f32.gguf",
    "reference/llamacpp/imatrix-d256.gguf",
    "reference/lora/adapter-lora.gguf",
    "vocab/ggml-vocab-baichuan.gguf",
    "vocab/ggml-vocab-bert-bge.gguf",
    "vocab/ggml-vocab-deepseek-coder.gguf",
    "vocab/ggml-vocab-deepseek-llm.gguf",
    "vocab/ggml-vocab-falcon.gguf",
    "vocab/ggml-vocab-gpt-2.gguf",
    "vocab/ggml-vocab-gpt-neox.gguf",
    "vocab/ggml-vocab-llama-spm.gguf",
    "vocab/ggml-vocab-mpt.gguf",
    "vocab/ggml-vocab-phi-3.gguf",
    "vocab/ggml-vocab-refact.gguf",
    "vocab/ggml-vocab-starcoder.gguf",
};
#define N_SHARED (sizeof SHARED_GGUFS / sizeof SHARED_GGUFS[0])

static void roundtrip(const char *rel) {
    const char *in = shared_path(rel), *out = tmp_path(".gguf");
    av_err err = { 0 };
    av_model *m;
    cr_assert_eq(gguf_read(in, &m, &err), 0, "%s", err.msg);
    cr_assert_eq(gguf_write(m, out, NULL, NULL, &err), 0, "%s", err.msg);
    size_t na, nb;
    unsigned char *a = slurp(in, &na), *b = slurp(out, &nb);
    cr_assert(a && b);
    cr_assert_eq(na, nb, "%s: size %zu written vs %zu read", rel, nb, na);
    size_t i = 0;
    while (i < na && a[i] == b[i]) i++;
    cr_assert_eq(i, na, "%s: first differing byte at offset %zu", rel, i);
    free(a);
    free(b);
    av_model_free(m);
    unlink(out);
}

Test(gguf, every_shared_gguf_is_listed) {
    /* guards the list above: a new .gguf under shared/ must be added to it */
    const char *dirs[] = { "models", "reference/llamacpp", "reference/lora", "vocab" };
    size_t found = 0;
    for (size_t d = 0; d < 4; d++) {
        DIR *dir = opendir(shared_path(dirs[d]));
        cr_assert(dir, "cannot open %s", shared_path(dirs[d]));
        struct dirent *e;
        while ((e = readdir(dir))) {
            size_t n = strlen(e->d_name);
            if (n > 5 && !strcmp(e->d_name + n - 5, ".gguf")) found++;
        }
        closedir(dir);
    }
    cr_assert_eq(found, N_SHARED);
}

Test(gguf, roundtrip_models) {
    for (size_t i = 0; i < 5; i++) roundtrip(SHARED_GGUFS[i]);
}
Test(gguf, roundtrip_vocabs, .timeout = 60) {
    for (size_t i = 5; i < N_SHARED; i++) roundtrip(SHARED_GGUFS[i]);
}

Test(gguf, reads_reference_model_facts) {
    /* values from llama.cpp's converter output (reference/llamacpp/README.md) */
    av_err err = { 0 };
    av_model *m;
    cr_assert_eq(gguf_read(shared_path("reference/llamacpp/stories-d256-f32.gguf"), &m, &err), 0, "%s", err.msg);
    cr_assert_eq(m->gguf_version, 3);
    uint64_t v;
    cr_assert_eq(av_kvs_get_u64(&m->kv, "llama.embedding_length", &v), 0);
    cr_assert_eq(v, 256);
    cr_assert_eq(av_kvs_get_u64(&m->kv, "llama.feed_forward_length", &v), 0);
    cr_assert_eq(v, 768);
    cr_assert_eq(av_kvs_get_u64(&m->kv, "llama.block_count", &v), 0);
    cr_assert_eq(v, 4);
    const char *s;
    cr_assert_eq(av_kvs_get_str(&m->kv, "tokenizer.ggml.model", &s), 0);
    cr_assert_str_eq(s, "llama");
    av_tensor *t = av_model_find(m, "token_embd.weight");
    cr_assert(t);
    cr_assert_eq(t->n_dims, 2);
    cr_assert_eq(t->shape[0], 512); /* PyTorch order: [vocab, dim] */
    cr_assert_eq(t->shape[1], 256);
    cr_assert_eq(t->dtype, AV_F32);
    /* 3.41 M parameters per the README, counting output.weight separately */
    cr_assert(av_model_nparams(m) > 3400000 && av_model_nparams(m) < 3420000, "%lld", (long long)av_model_nparams(m));
    av_model_free(m);
}

Test(gguf, f16_outtype_then_back_is_exact) {
    /* f32 -> f16 -> f32 must equal round-to-f16 of the original weights */
    av_err err = { 0 };
    av_model *m, *h;
    const char *p = tmp_path(".gguf");
    cr_assert_eq(gguf_read(shared_path("reference/llamacpp/stories260K-f32.gguf"), &m, &err), 0, "%s", err.msg);
    for (size_t i = 0; i < m->n_tensors; i++)
        if (m->tensors[i].n_dims >= 2) m->tensors[i].dtype = AV_F16;
    cr_assert_eq(gguf_write(m, p, NULL, NULL, &err), 0, "%s", err.msg);
    cr_assert_eq(gguf_read(p, &h, &err), 0, "%s", err.msg);
    cr_assert_eq(h->n_tensors, m->n_tensors);
    for (size_t i = 0; i < m->n_tensors; i++) {
        const av_tensor *a = &m->tensors[i], *b = &h->tensors[i];
        cr_assert_str_eq(a->name, b->name);
        cr_assert_eq(b->dtype, a->n_dims >= 2 ? AV_F16 : AV_F32);
        int64_t n = av_tensor_nelements(a);
        for (int64_t k = 0; k < n && a->n_dims >= 2; k++)
            cr_assert_eq(((const uint16_t *)b->data)[k], av_f32_to_f16(((const float *)a->data)[k]));
    }
    av_model_free(h);
    av_model_free(m);
    unlink(p);
}

/* ---------- a byte builder for hand-made (malformed) files ---------- */

typedef struct buf { unsigned char *p; size_t n, cap; } buf;
static void put(buf *b, const void *x, size_t n) {
    if (b->n + n > b->cap) { b->cap = (b->n + n) * 2 + 64; b->p = realloc(b->p, b->cap); }
    memcpy(b->p + b->n, x, n);
    b->n += n;
}
static void u32(buf *b, uint32_t v) { put(b, &v, 4); }
static void u64(buf *b, uint64_t v) { put(b, &v, 8); }
static void str(buf *b, const char *s) { u64(b, strlen(s)); put(b, s, strlen(s)); }
static void pad(buf *b, size_t a) { static const unsigned char z[64]; put(b, z, (a - b->n % a) % a); }

/* A small valid file: 2 KVs (string, u32 array), 2 f32 tensors [2,3] and [4]. */
static buf valid_file(void) {
    buf b = { 0 };
    put(&b, "GGUF", 4); u32(&b, 3); u64(&b, 2); u64(&b, 2);
    str(&b, "general.architecture"); u32(&b, 8); str(&b, "llama");
    str(&b, "x.arr"); u32(&b, 9); u32(&b, 4); u64(&b, 3); u32(&b, 7); u32(&b, 8); u32(&b, 9);
    str(&b, "a"); u32(&b, 2); u64(&b, 3); u64(&b, 2); u32(&b, 0); u64(&b, 0);
    str(&b, "b"); u32(&b, 1); u64(&b, 4); u32(&b, 0); u64(&b, 32);
    pad(&b, 32);
    for (int i = 0; i < 6; i++) { float f = (float)i; put(&b, &f, 4); }
    pad(&b, 32);
    for (int i = 0; i < 4; i++) { float f = (float)-i; put(&b, &f, 4); }
    pad(&b, 32);
    return b;
}

static int parse_buf(const buf *b, av_err *err) {
    av_model *m = NULL;
    int rc = gguf_read_mem(b->p, b->n, "bad.gguf", &m, err);
    av_model_free(m);
    return rc;
}

static void expect_error(const buf *b, const char *needle) {
    av_err err = { 0 };
    int rc = parse_buf(b, &err);
    cr_assert(rc < 0, "expected an error containing '%s'", needle);
    cr_assert(strstr(err.msg, "bad.gguf") == err.msg, "message must start with the file name: %s", err.msg);
    cr_assert(strstr(err.msg, needle), "message '%s' lacks '%s'", err.msg, needle);
    cr_assert(!strchr(err.msg, '\n'), "one line: %s", err.msg);
}

Test(gguf_bad, valid_file_parses) {
    buf b = valid_file();
    av_err err = { 0 };
    av_model *m;
    cr_assert_eq(gguf_read_mem(b.p, b.n, "ok.gguf", &m, &err), 0, "%s", err.msg);
    cr_assert_eq(m->n_tensors, 2);
    cr_assert_eq(m->tensors[0].shape[0], 2);
    cr_assert_eq(m->tensors[0].shape[1], 3);
    cr_assert_eq(((const float *)m->tensors[1].data)[3], -3.0f);
    av_model_free(m);
    free(b.p);
}

Test(gguf_bad, truncated_everywhere) {
    buf b = valid_file();
    size_t full = b.n;
    /* the last tensor ends 16 bytes before EOF (padding): cuts inside that padding still parse */
    size_t data_end = full - 16;
    for (size_t n = 0; n < full; n++) {
        b.n = n;
        av_err err = { 0 };
        int rc = parse_buf(&b, &err);
        if (n < data_end) {
            cr_assert(rc < 0, "truncated to %zu bytes parsed", n);
            cr_assert(strstr(err.msg, "bad.gguf"), "%s", err.msg);
        } else {
            cr_assert_eq(rc, 0, "%zu: %s", n, err.msg);
        }
    }
    free(b.p);
}

Test(gguf_bad, flipped_bytes_never_crash) {
    buf b = valid_file();
    for (size_t i = 0; i < b.n; i++)
        for (int bit = 0; bit < 8; bit++) {
            b.p[i] ^= (unsigned char)(1u << bit);
            av_err err = { 0 };
            int rc = parse_buf(&b, &err);
            if (rc) cr_assert(strstr(err.msg, "bad.gguf"), "%s", err.msg);
            b.p[i] ^= (unsigned char)(1u << bit);
        }
    free(b.p);
}

Test(gguf_bad, wrong_magic) {
    buf b = valid_file();
    memcpy(b.p, "GGML", 4);
    expect_error(&b, "not a GGUF file");
    b.n = 2;
    expect_error(&b, "too short");
    free(b.p);
}

Test(gguf_bad, versions) {
    buf b = valid_file();
    uint32_t v = 1;
    memcpy(b.p + 4, &v, 4);
    expect_error(&b, "version 1");
    v = 0x03000000;
    memcpy(b.p + 4, &v, 4);
    expect_error(&b, "big-endian");
    v = 7;
    memcpy(b.p + 4, &v, 4);
    expect_error(&b, "unknown GGUF version 7");
    free(b.p);
}

Test(gguf_bad, huge_counts) {
    buf b = valid_file();
    uint64_t huge = UINT64_MAX / 2;
    memcpy(b.p + 16, &huge, 8);
    expect_error(&b, "metadata count");
    free(b.p);
    b = valid_file();
    memcpy(b.p + 8, &huge, 8);
    expect_error(&b, "tensor count");
    free(b.p);
}

Test(gguf_bad, huge_string_length) {
    buf b = valid_file();
    uint64_t huge = 1ull << 60;
    memcpy(b.p + 24, &huge, 8); /* first key's length */
    expect_error(&b, "has length");
    free(b.p);
}

Test(gguf_bad, huge_array_length) {
    buf b = { 0 };
    put(&b, "GGUF", 4); u32(&b, 3); u64(&b, 0); u64(&b, 1);
    str(&b, "arr"); u32(&b, 9); u32(&b, 6); u64(&b, 1ull << 61);
    expect_error(&b, "claims");
    free(b.p);
    b = (buf){ 0 };
    put(&b, "GGUF", 4); u32(&b, 3); u64(&b, 0); u64(&b, 1);
    str(&b, "arr"); u32(&b, 9); u32(&b, 8); u64(&b, 1ull << 40);
    expect_error(&b, "claims");
    free(b.p);
}

Test(gguf_bad, unknown_value_and_array_types) {
    buf b = { 0 };
    put(&b, "GGUF", 4); u32(&b, 3); u64(&b, 0); u64(&b, 1);
    str(&b, "k"); u32(&b, 13); u32(&b, 0);
    expect_error(&b, "unknown value type 13");
    free(b.p);
    b = (buf){ 0 };
    put(&b, "GGUF", 4); u32(&b, 3); u64(&b, 0); u64(&b, 1);
    str(&b, "k"); u32(&b, 9); u32(&b, 99); u64(&b, 1); u32(&b, 0);
    expect_error(&b, "unknown element type 99");
    free(b.p);
}

Test(gguf_bad, deeply_nested_arrays) {
    buf b = { 0 };
    put(&b, "GGUF", 4); u32(&b, 3); u64(&b, 0); u64(&b, 1);
    str(&b, "k"); u32(&b, 9);
    for (int i = 0; i < 100; i++) { u32(&b, 9); u64(&b, 1); }
    u32(&b, 4); u64(&b, 0);
    expect_error(&b, "nested deeper");
    free(b.p);
}

Test(gguf, nested_arrays_roundtrip) {
    /* [[1, 2], ["x"]]: arrays of arrays are legal GGUF and must survive */
    buf b = { 0 };
    put(&b, "GGUF", 4); u32(&b, 3); u64(&b, 0); u64(&b, 1);
    str(&b, "nest"); u32(&b, 9); u32(&b, 9); u64(&b, 2);
    u32(&b, 5); u64(&b, 2); u32(&b, 1); u32(&b, 2);
    u32(&b, 8); u64(&b, 1); str(&b, "x");
    const char *in = tmp_path(".gguf"), *out = tmp_path(".gguf");
    cr_assert_eq(write_bytes(in, b.p, b.n), 0);
    av_err err = { 0 };
    av_model *m;
    cr_assert_eq(gguf_read(in, &m, &err), 0, "%s", err.msg);
    const av_kv *kv = av_kvs_find(&m->kv, "nest");
    cr_assert(kv && kv->val.type == AV_KV_ARRAY && kv->val.arr.elem == AV_KV_ARRAY && kv->val.arr.n == 2);
    const av_value *inner = kv->val.arr.data;
    cr_assert_eq(av_array_get_i64(&inner[0].arr, 1), 2);
    cr_assert_str_eq(((av_str *)inner[1].arr.data)[0].s, "x");
    cr_assert_eq(gguf_write(m, out, NULL, NULL, &err), 0, "%s", err.msg);
    size_t n = 0;
    unsigned char *w = slurp(out, &n);
    cr_assert_eq(n, b.n);
    cr_assert_eq(memcmp(w, b.p, n), 0);
    free(w);
    av_model_free(m);
    free(b.p);
    unlink(in);
    unlink(out);
}

/* one-tensor file with the given info fields and `data` bytes after the pad */
static buf one_tensor(uint32_t nd, const uint64_t *ne, uint32_t type, uint64_t off, size_t data) {
    buf b = { 0 };
    put(&b, "GGUF", 4); u32(&b, 3); u64(&b, 1); u64(&b, 0);
    str(&b, "t"); u32(&b, nd);
    for (uint32_t i = 0; i < nd; i++) u64(&b, ne[i]);
    u32(&b, type); u64(&b, off);
    pad(&b, 32);
    for (size_t i = 0; i < data; i++) put(&b, "\0", 1);
    return b;
}

Test(gguf_bad, tensor_fields) {
    uint64_t ne[5] = { 4, 4, 1, 1, 1 };
    buf b = one_tensor(5, ne, 0, 0, 64);
    expect_error(&b, "5 dimensions");
    free(b.p);
    b = one_tensor(2, ne, 4, 0, 64);
    expect_error(&b, "unknown type 4");
    free(b.p);
    b = one_tensor(2, ne, 1000, 0, 64);
    expect_error(&b, "unknown type 1000");
    free(b.p);
    b = one_tensor(2, ne, 0, 8, 128);
    expect_error(&b, "alignment");
    free(b.p);
    b = one_tensor(2, ne, 0, 0, 60);
    expect_error(&b, "past end of file");
    free(b.p);
    b = one_tensor(2, ne, 0, 1ull << 62, 64);
    expect_error(&b, "past end of file");
    free(b.p);
    uint64_t big[4] = { 1ull << 32, 1ull << 32, 1ull << 32, 1 };
    b = one_tensor(4, big, 0, 0, 64);
    expect_error(&b, "overflow");
    free(b.p);
    uint64_t odd[2] = { 33, 1 };
    b = one_tensor(2, odd, 8, 0, 64); /* q8_0 rows must be multiples of 32 */
    expect_error(&b, "block size");
    free(b.p);
}

Test(gguf_bad, overlapping_and_duplicate_tensors) {
    buf b = { 0 };
    put(&b, "GGUF", 4); u32(&b, 3); u64(&b, 2); u64(&b, 0);
    str(&b, "a"); u32(&b, 1); u64(&b, 16); u32(&b, 0); u64(&b, 0);
    str(&b, "b"); u32(&b, 1); u64(&b, 16); u32(&b, 0); u64(&b, 32);
    pad(&b, 32);
    for (int i = 0; i < 128; i++) put(&b, "\0", 1);
    expect_error(&b, "overlaps");
    free(b.p);
    b = (buf){ 0 };
    put(&b, "GGUF", 4); u32(&b, 3); u64(&b, 2); u64(&b, 0);
    str(&b, "a"); u32(&b, 1); u64(&b, 8); u32(&b, 0); u64(&b, 0);
    str(&b, "a"); u32(&b, 1); u64(&b, 8); u32(&b, 0); u64(&b, 32);
    pad(&b, 32);
    for (int i = 0; i < 64; i++) put(&b, "\0", 1);
    expect_error(&b, "duplicate tensor name 'a'");
    free(b.p);
}

Test(gguf_bad, duplicate_key_and_bad_alignment) {
    buf b = { 0 };
    put(&b, "GGUF", 4); u32(&b, 3); u64(&b, 0); u64(&b, 2);
    str(&b, "k"); u32(&b, 4); u32(&b, 1);
    str(&b, "k"); u32(&b, 4); u32(&b, 2);
    expect_error(&b, "duplicate metadata key 'k'");
    free(b.p);
    b = (buf){ 0 };
    put(&b, "GGUF", 4); u32(&b, 3); u64(&b, 0); u64(&b, 1);
    str(&b, "general.alignment"); u32(&b, 4); u32(&b, 24);
    expect_error(&b, "power of two");
    free(b.p);
    b = (buf){ 0 };
    put(&b, "GGUF", 4); u32(&b, 3); u64(&b, 0); u64(&b, 1);
    str(&b, "general.alignment"); u32(&b, 8); str(&b, "32");
    expect_error(&b, "expected u32");
    free(b.p);
}

Test(gguf_bad, real_file_truncations) {
    /* sampled cut points through a real llama.cpp file: header, KVs, infos, data */
    size_t n = 0;
    unsigned char *p = slurp(shared_path("models/llama-2-tiny-random.gguf"), &n);
    cr_assert(p);
    for (size_t cut = 0; cut < n - 32; cut += cut < 4096 ? 7 : 4093) {
        buf b = { p, cut, n };
        av_err err = { 0 };
        cr_assert(parse_buf(&b, &err) < 0, "cut at %zu parsed", cut);
    }
    free(p);
}

Test(gguf_bad, io_errors_name_the_file) {
    av_err err = { 0 };
    av_model *m;
    cr_assert_eq(gguf_read("/nonexistent/x.gguf", &m, &err), AV_EIO);
    cr_assert(strstr(err.msg, "/nonexistent/x.gguf: cannot open"), "%s", err.msg);
    cr_assert_eq(gguf_read("/tmp", &m, &err), AV_EIO);
    cr_assert(strstr(err.msg, "not a regular file"), "%s", err.msg);
}

Test(gguf, writer_is_atomic_on_error) {
    /* a tensor GGUF cannot hold: no output file, no temp file left behind */
    av_model *m = av_model_new();
    int64_t shape[1] = { 4 };
    static const unsigned char bytes[4];
    cr_assert(av_model_add_tensor(m, "b", AV_BOOL, 1, shape, bytes, NULL));
    const char *p = tmp_path(".gguf");
    av_err err = { 0 };
    cr_assert_eq(gguf_write(m, p, NULL, NULL, &err), AV_EINVAL);
    cr_assert(strstr(err.msg, "cannot store"), "%s", err.msg);
    cr_assert_neq(access(p, F_OK), 0);
    av_model_free(m);
}
