/* test_safetensors.c — safetensors reader/writer: reference files written by
 * the Rust safetensors library (via PyTorch/HF), byte-exact round trips,
 * shards and folders, typed metadata, conversion on write, malformed input. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>

#include "safetensors.h"
#include "testutil.h"

#define REF_FILE "reference/torch/hf/model.safetensors"
#define REF_DIR "reference/torch/hf"
#define REF_SHARDED "reference/torch/hf-sharded"
#define REF_INDEX "reference/torch/hf-sharded/model.safetensors.index.json"

/* ---------- helpers ---------- */

/* A safetensors image: u64 LE length of json, json, then data_len bytes 0,1,2... */
static unsigned char *make_image(const char *json, size_t data_len, size_t *size) {
    size_t n = strlen(json);
    unsigned char *b = malloc(8 + n + data_len + 1);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)n >> (8 * i));
    memcpy(b + 8, json, n);
    for (size_t i = 0; i < data_len; i++) b[8 + n + i] = (unsigned char)i;
    *size = 8 + n + data_len;
    return b;
}

static const char *make_file(const char *json, size_t data_len) {
    size_t n;
    unsigned char *b = make_image(json, data_len, &n);
    const char *p = tmp_path(".safetensors");
    cr_assert_eq(write_bytes(p, b, n), 0);
    free(b);
    return p;
}

/* Read a file expected to be rejected: code, and the path in the message. */
static void expect_bad_file(const char *json, size_t data_len, int code, const char *needle) {
    const char *p = make_file(json, data_len);
    av_model *m = (av_model *)1;
    av_err e = { 0 };
    int rc = st_read(p, &m, &e);
    cr_expect_eq(rc, code, "%s: rc %d (%s), want %d", json, rc, e.msg, code);
    cr_expect_null(m);
    cr_expect(strstr(e.msg, p) != NULL, "message lacks file name: %s", e.msg);
    if (needle) cr_expect(strstr(e.msg, needle) != NULL, "message '%s' lacks '%s'", e.msg, needle);
    unlink(p);
}

static void expect_same_tensors(const av_model *a, const av_model *b) {
    cr_assert_eq(a->n_tensors, b->n_tensors);
    for (size_t i = 0; i < a->n_tensors; i++) {
        const av_tensor *x = &a->tensors[i], *y = av_model_find(b, x->name);
        cr_assert_not_null(y, "%s missing", x->name);
        cr_expect_eq(x->dtype, y->dtype);
        cr_assert_eq(x->n_dims, y->n_dims);
        for (int d = 0; d < x->n_dims; d++) cr_expect_eq(x->shape[d], y->shape[d]);
        int ok;
        size_t nb = av_tensor_nbytes(x, &ok);
        cr_assert(ok);
        cr_expect_eq(memcmp(x->data, y->data, nb), 0, "%s data differ", x->name);
    }
}

/* Deep equality of two KV values, bytes included (floats as stored bits). */
static int value_eq(const av_value *a, const av_value *b) {
    if (a->type != b->type) return 0;
    switch (a->type) {
    case AV_KV_STRING: return a->str.len == b->str.len && memcmp(a->str.s, b->str.s, a->str.len) == 0 &&
                              a->str.s[a->str.len] == '\0' && b->str.s[b->str.len] == '\0';
    case AV_KV_F32: { float x = (float)a->f, y = (float)b->f; return memcmp(&x, &y, 4) == 0; }
    case AV_KV_F64: return memcmp(&a->f, &b->f, 8) == 0;
    case AV_KV_I8: case AV_KV_I16: case AV_KV_I32: case AV_KV_I64: return a->i == b->i;
    case AV_KV_ARRAY:
        if (a->arr.elem != b->arr.elem || a->arr.n != b->arr.n) return 0;
        for (uint64_t i = 0; i < a->arr.n; i++) {
            if (a->arr.elem == AV_KV_STRING) {
                av_value x = { .type = AV_KV_STRING, .str = ((av_str *)a->arr.data)[i] };
                av_value y = { .type = AV_KV_STRING, .str = ((av_str *)b->arr.data)[i] };
                if (!value_eq(&x, &y)) return 0;
            } else if (a->arr.elem == AV_KV_ARRAY) {
                if (!value_eq((av_value *)a->arr.data + i, (av_value *)b->arr.data + i)) return 0;
            }
        }
        if (a->arr.elem != AV_KV_STRING && a->arr.elem != AV_KV_ARRAY && a->arr.n)
            return memcmp(a->arr.data, b->arr.data, a->arr.n * av_kv_scalar_size(a->arr.elem)) == 0;
        return 1;
    default: return a->u == b->u;
    }
}

/* ---------- reading the reference ---------- */

Test(safetensors, dtype_names) {
    cr_expect_str_eq(st_dtype_name(AV_F32), "F32");
    cr_expect_str_eq(st_dtype_name(AV_BF16), "BF16");
    cr_expect_str_eq(st_dtype_name(AV_F8_E5M2), "F8_E5M2");
    cr_expect_null(st_dtype_name(AV_Q4_0));
    cr_expect_eq(st_dtype_from_name("BOOL"), AV_BOOL);
    cr_expect_eq(st_dtype_from_name("U8"), AV_U8);
    cr_expect_eq(st_dtype_from_name("f32"), -1); /* the spec spells them upper case */
    cr_expect_eq(st_dtype_from_name("Q4_0"), -1);
}

Test(safetensors, read_reference) {
    av_model *m = NULL;
    av_err e = { 0 };
    cr_assert_eq(st_read(shared_path(REF_FILE), &m, &e), 0, "%s", e.msg);
    cr_expect_eq(m->format, AV_FMT_SAFETENSORS);
    /* Expected values: the file's header read with python3's json module
     * (47 tensors, all F32, data buffer 1040128 bytes after an N=4856 header,
     * __metadata__ {"format": "pt"}). */
    cr_assert_eq(m->n_tensors, 47);
    static const struct { size_t i; const char *name; int nd; int64_t s0, s1; uint64_t begin; } want[] = {
        { 0, "model.embed_tokens.weight", 2, 512, 64, 0 },
        { 1, "model.layers.0.input_layernorm.weight", 1, 64, 0, 131072 },
        { 2, "model.layers.0.mlp.down_proj.weight", 2, 64, 172, 131328 },
        { 10, "model.layers.1.input_layernorm.weight", 1, 64, 0, 312832 },
        { 46, "model.norm.weight", 1, 64, 0, 1039872 },
    };
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        const av_tensor *t = &m->tensors[want[k].i];
        cr_expect_str_eq(t->name, want[k].name);
        cr_expect_eq(t->n_dims, want[k].nd);
        cr_expect_eq(t->shape[0], want[k].s0);
        if (want[k].nd > 1) cr_expect_eq(t->shape[1], want[k].s1);
        cr_expect_eq(t->file_offset, 8 + 4856 + want[k].begin);
    }
    for (size_t i = 0; i < m->n_tensors; i++) {
        cr_expect_eq(m->tensors[i].dtype, AV_F32);
        cr_expect_eq(m->tensors[i].src_dtype, AV_F32);
        if (i) cr_expect_gt(m->tensors[i].file_offset, m->tensors[i - 1].file_offset);
    }
    const char *fmt = NULL;
    cr_expect_eq(m->kv.n, 1);
    cr_expect_eq(av_kvs_get_str(&m->kv, "format", &fmt), 0);
    cr_expect_str_eq(fmt, "pt");
    cr_expect_eq(av_model_nparams(m), 1040128 / 4);
    /* the views are the file's bytes */
    size_t n;
    unsigned char *raw = slurp(shared_path(REF_FILE), &n);
    cr_assert_not_null(raw);
    const av_tensor *t = av_model_find(m, "model.norm.weight");
    cr_expect_eq(memcmp(t->data, raw + t->file_offset, 256), 0);
    free(raw);
    av_model_free(m);
}

Test(safetensors, roundtrip_reference_byte_identical) {
    av_model *m = NULL;
    av_err e = { 0 };
    cr_assert_eq(st_read(shared_path(REF_FILE), &m, &e), 0, "%s", e.msg);
    const char *out = tmp_path(".safetensors");
    cr_assert_eq(st_write(m, out, NULL, NULL, &e), 0, "%s", e.msg);
    size_t n1, n2;
    unsigned char *a = slurp(shared_path(REF_FILE), &n1), *b = slurp(out, &n2);
    cr_assert(a && b);
    cr_assert_eq(n1, n2, "size %zu vs %zu", n1, n2);
    cr_expect_eq(memcmp(a, b, n1), 0);
    free(a);
    free(b);
    unlink(out);
    av_model_free(m);
}

Test(safetensors, sharded_index_and_folders_match_single_file) {
    av_model *one = NULL, *idx = NULL, *dir1 = NULL, *dir2 = NULL;
    av_err e = { 0 };
    cr_assert_eq(st_read(shared_path(REF_FILE), &one, &e), 0, "%s", e.msg);
    cr_assert_eq(st_read(shared_path(REF_INDEX), &idx, &e), 0, "%s", e.msg);
    cr_assert_eq(st_read(shared_path(REF_DIR), &dir1, &e), 0, "%s", e.msg);
    cr_assert_eq(st_read(shared_path(REF_SHARDED), &dir2, &e), 0, "%s", e.msg);
    expect_same_tensors(one, idx);
    expect_same_tensors(idx, one);
    expect_same_tensors(one, dir1);
    expect_same_tensors(one, dir2);
    /* shards are read in weight_map order; each shard's tensors by offset */
    cr_expect_str_eq(idx->tensors[0].name, "model.embed_tokens.weight");
    cr_expect_str_eq(idx->tensors[idx->n_tensors - 1].name, "model.norm.weight");
    cr_expect_eq(idx->format, AV_FMT_SAFETENSORS);
    cr_expect_eq(idx->n_maps, 2);
    const char *fmt = NULL;
    cr_expect_eq(idx->kv.n, 1); /* both shards say format=pt: one KV */
    cr_expect_eq(av_kvs_get_str(&idx->kv, "format", &fmt), 0);
    /* writing the sharded model as one file gives the single reference file */
    const char *out = tmp_path(".safetensors");
    av_model *sorted = av_model_new();
    for (size_t i = 0; i < one->n_tensors; i++) {
        const av_tensor *t = av_model_find(idx, one->tensors[i].name);
        av_model_add_tensor(sorted, t->name, t->dtype, t->n_dims, t->shape, t->data, NULL);
    }
    av_kvs_set_str(&sorted->kv, "format", "pt");
    cr_assert_eq(st_write(sorted, out, NULL, NULL, &e), 0, "%s", e.msg);
    size_t n1, n2;
    unsigned char *a = slurp(shared_path(REF_FILE), &n1), *b = slurp(out, &n2);
    cr_expect(n1 == n2 && memcmp(a, b, n1) == 0);
    free(a);
    free(b);
    unlink(out);
    av_model_free(sorted);
    av_model_free(one);
    av_model_free(idx);
    av_model_free(dir1);
    av_model_free(dir2);
}

Test(safetensors, folder_without_model) {
    char dir[256];
    snprintf(dir, sizeof dir, "%s", tmp_path(".d"));
    cr_assert_eq(mkdir(dir, 0755), 0);
    av_model *m = NULL;
    av_err e = { 0 };
    int rc = st_read(dir, &m, &e);
    cr_expect_lt(rc, 0);
    cr_expect_null(m);
    cr_expect(strstr(e.msg, dir) && strstr(e.msg, "no model.safetensors or model.safetensors.index.json"), "%s", e.msg);
    rmdir(dir);
}

Test(safetensors, missing_file) {
    av_model *m = NULL;
    av_err e = { 0 };
    cr_expect_eq(st_read("/nonexistent/x.safetensors", &m, &e), AV_EIO);
    cr_expect(strstr(e.msg, "/nonexistent/x.safetensors") != NULL, "%s", e.msg);
}

/* ---------- writing ---------- */

/* Every GGUF value type, including strings JSON cannot hold as they are. */
static void add_all_kv_types(av_kvs *kv) {
    av_value v;
    v = (av_value){ .type = AV_KV_U8, .u = 200 }; av_kvs_set(kv, "t.u8", &v);
    v = (av_value){ .type = AV_KV_I8, .i = -100 }; av_kvs_set(kv, "t.i8", &v);
    v = (av_value){ .type = AV_KV_U16, .u = 60000 }; av_kvs_set(kv, "t.u16", &v);
    v = (av_value){ .type = AV_KV_I16, .i = -30000 }; av_kvs_set(kv, "t.i16", &v);
    av_kvs_set_u32(kv, "t.u32", 4000000000u);
    av_kvs_set_i32(kv, "t.i32", INT32_MIN);
    v = (av_value){ .type = AV_KV_U64, .u = UINT64_MAX }; av_kvs_set(kv, "t.u64max", &v);
    v = (av_value){ .type = AV_KV_U64, .u = 5 }; av_kvs_set(kv, "t.u64", &v);
    v = (av_value){ .type = AV_KV_I64, .i = INT64_MIN }; av_kvs_set(kv, "t.i64", &v);
    av_kvs_set_f32(kv, "t.f32", 0.1f);
    av_kvs_set_f32(kv, "t.f32neg0", -0.0f);
    av_kvs_set_f32(kv, "t.f32denorm", 1e-45f);
    av_kvs_set_f32(kv, "t.f32big", 3.4028235e38f);
    av_kvs_set_f32(kv, "t.f32inf", -INFINITY);
    uint32_t nanbits = 0x7fc12345;
    float fnan;
    memcpy(&fnan, &nanbits, 4);
    av_kvs_set_f32(kv, "t.f32nan", fnan);
    av_kvs_set_f32(kv, "t.f32one", 1.0f);
    v = (av_value){ .type = AV_KV_F64, .f = 0.1 }; av_kvs_set(kv, "t.f64", &v);
    v = (av_value){ .type = AV_KV_F64, .f = 4.9e-324 }; av_kvs_set(kv, "t.f64denorm", &v);
    v = (av_value){ .type = AV_KV_F64, .f = 1e300 }; av_kvs_set(kv, "t.f64big", &v);
    v = (av_value){ .type = AV_KV_F64, .f = INFINITY }; av_kvs_set(kv, "t.f64inf", &v);
    av_kvs_set_bool(kv, "t.true", 1);
    av_kvs_set_bool(kv, "t.false", 0);
    av_kvs_set_str(kv, "general.name", "h\xc3\xa9llo \xe2\x9c\x93 \"q\" \\ \n\t\x01\x7f");
    static const char *const strs[] = { "a", "\xff", "", "z\0y", "\xc3", "\xed\xa0\x80", "ok \xf0\x9f\x98\x80" };
    static const uint64_t lens[] = { 1, 1, 0, 3, 1, 3, 7 };
    v = (av_value){ .type = AV_KV_STRING };
    v.str.len = 4;
    v.str.s = malloc(5);
    memcpy(v.str.s, "a\0b\xff", 5);
    av_kvs_set(kv, "t.str_bad", &v);
    v = (av_value){ .type = AV_KV_STRING };
    v.str.len = 3;
    v.str.s = malloc(4);
    memcpy(v.str.s, "a\0b", 4);
    av_kvs_set(kv, "t.str_nul", &v);
    av_kvs_set_str(kv, "gguf:looks_typed", "not json");
    av_kvs_set_str_arr(kv, "tokenizer.ggml.tokens", strs, lens, 7);
    float fa[] = { 1.5f, fnan, -0.0f, 3.4e38f, 1e-40f, -INFINITY };
    av_kvs_set_arr(kv, "t.arr_f32", AV_KV_F32, fa, 6);
    double da[] = { 0.1, -0.0, 2.2250738585072014e-308 };
    av_kvs_set_arr(kv, "t.arr_f64", AV_KV_F64, da, 3);
    int32_t ia[] = { INT32_MIN, -1, 0, INT32_MAX };
    av_kvs_set_arr(kv, "t.arr_i32", AV_KV_I32, ia, 4);
    uint64_t ua[] = { 0, UINT64_MAX, (uint64_t)INT64_MAX + 1 };
    av_kvs_set_arr(kv, "t.arr_u64", AV_KV_U64, ua, 3);
    int8_t i8a[] = { -128, 127 };
    av_kvs_set_arr(kv, "t.arr_i8", AV_KV_I8, i8a, 2);
    uint8_t ba[] = { 1, 0, 1 };
    av_kvs_set_arr(kv, "t.arr_bool", AV_KV_BOOL, ba, 3);
    av_kvs_set_arr(kv, "t.arr_empty", AV_KV_U16, NULL, 0);
    /* nested: [[1, 2], [], [["x", "\xfe"]]] — u8, then array of strings */
    av_value *outer = calloc(3, sizeof *outer);
    uint8_t *u8s = malloc(2);
    u8s[0] = 1;
    u8s[1] = 2;
    outer[0] = (av_value){ .type = AV_KV_ARRAY, .arr = { AV_KV_U8, 2, u8s } };
    outer[1] = (av_value){ .type = AV_KV_ARRAY, .arr = { AV_KV_I64, 0, NULL } };
    av_value *deep = calloc(1, sizeof *deep);
    av_str *ds = calloc(2, sizeof *ds);
    ds[0] = (av_str){ 1, strdup("x") };
    ds[1] = (av_str){ 1, strdup("\xfe") };
    deep[0] = (av_value){ .type = AV_KV_ARRAY, .arr = { AV_KV_STRING, 2, ds } };
    outer[2] = (av_value){ .type = AV_KV_ARRAY, .arr = { AV_KV_ARRAY, 1, deep } };
    v = (av_value){ .type = AV_KV_ARRAY, .arr = { AV_KV_ARRAY, 3, outer } };
    av_kvs_set(kv, "t.nested", &v);
    av_kvs_set_str(kv, "last", "end");
}

Test(safetensors, metadata_all_types_roundtrip) {
    av_model *m = av_model_new();
    add_all_kv_types(&m->kv);
    static const float w[4] = { 1, 2, 3, 4 };
    int64_t shape[1] = { 4 };
    av_model_add_tensor(m, "w", AV_F32, 1, shape, w, NULL);
    const char *out = tmp_path(".safetensors");
    av_err e = { 0 };
    cr_assert_eq(st_write(m, out, NULL, NULL, &e), 0, "%s", e.msg);
    av_model *r = NULL;
    cr_assert_eq(st_read(out, &r, &e), 0, "%s", e.msg);
    cr_assert_eq(r->kv.n, m->kv.n);
    for (size_t i = 0; i < m->kv.n; i++) {
        cr_expect_str_eq(r->kv.items[i].key, m->kv.items[i].key);
        cr_expect(value_eq(&r->kv.items[i].val, &m->kv.items[i].val), "value of %s differs (type %s vs %s)",
                  m->kv.items[i].key, av_kv_type_name(r->kv.items[i].val.type),
                  av_kv_type_name(m->kv.items[i].val.type));
    }
    /* writing the read model again gives the same bytes */
    const char *out2 = tmp_path(".safetensors");
    cr_assert_eq(st_write(r, out2, NULL, NULL, &e), 0, "%s", e.msg);
    size_t n1, n2;
    unsigned char *a = slurp(out, &n1), *b = slurp(out2, &n2);
    cr_expect(n1 == n2 && memcmp(a, b, n1) == 0);
    /* header: __metadata__ first, plain strings stored as they are, padded to 8 */
    uint64_t hn;
    memcpy(&hn, a, 8);
    cr_expect_eq(hn % 8, 0);
    cr_expect_eq(memcmp(a + 8, "{\"__metadata__\":{\"gguf:t.u8\":\"{\\\"type\\\":\\\"u8\\\",\\\"value\\\":200}\"", 61), 0,
                 "%.80s", a + 8);
    cr_expect(memmem(a, n1, "\"last\":\"end\"", 12) != NULL);
    free(a);
    free(b);
    unlink(out);
    unlink(out2);
    av_model_free(r);
    av_model_free(m);
}

Test(safetensors, foreign_gguf_prefixed_string_stays_string) {
    const char *p = make_file("{\"__metadata__\":{\"gguf:x\":\"{\\\"type\\\":\\\"u9\\\"}\",\"gguf:y\":\"{\\\"type\\\":\\\"i8\\\",\\\"value\\\":-3}\"}}", 0);
    av_model *m = NULL;
    av_err e = { 0 };
    cr_assert_eq(st_read(p, &m, &e), 0, "%s", e.msg);
    cr_assert_eq(m->kv.n, 2);
    cr_expect_str_eq(m->kv.items[0].key, "gguf:x");
    cr_expect_eq(m->kv.items[0].val.type, AV_KV_STRING);
    cr_expect_str_eq(m->kv.items[1].key, "y");
    cr_expect_eq(m->kv.items[1].val.type, AV_KV_I8);
    cr_expect_eq(m->kv.items[1].val.i, -3);
    cr_expect_eq(m->n_tensors, 0);
    av_model_free(m);
    unlink(p);
}

Test(safetensors, no_metadata_no_metadata_key) {
    av_model *m = av_model_new();
    static const uint8_t z[1] = { 0 };
    int64_t s0[1] = { 0 };
    av_model_add_tensor(m, "scalar", AV_U8, 0, NULL, z, NULL);
    av_model_add_tensor(m, "empty", AV_F32, 1, s0, NULL, NULL); /* no bytes, no data */
    const char *out = tmp_path(".safetensors");
    av_err e = { 0 };
    cr_assert_eq(st_write(m, out, NULL, NULL, &e), 0, "%s", e.msg);
    size_t n;
    unsigned char *a = slurp(out, &n);
    const char *want = "{\"scalar\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[0,1]},"
                       "\"empty\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[1,1]}}";
    cr_assert_eq(n, 8 + 120 + 1); /* 114 bytes of JSON + 6 spaces */
    cr_expect_eq(a[0], 120);
    cr_expect_eq(memcmp(a + 8, want, strlen(want)), 0, "%.120s", a + 8);
    cr_expect_eq(memcmp(a + 8 + strlen(want), "      ", 120 - strlen(want)), 0);
    av_model *r = NULL;
    cr_assert_eq(st_read(out, &r, &e), 0, "%s", e.msg);
    cr_assert_eq(r->n_tensors, 2);
    cr_expect_str_eq(r->tensors[0].name, "scalar");
    cr_expect_eq(r->tensors[0].n_dims, 0);
    cr_expect_str_eq(r->tensors[1].name, "empty");
    cr_expect_eq(r->kv.n, 0);
    free(a);
    unlink(out);
    av_model_free(r);
    av_model_free(m);
}

Test(safetensors, every_dtype_roundtrip) {
    static const av_dtype ts[] = { AV_F64, AV_F32, AV_F16, AV_BF16, AV_I64, AV_I32, AV_I16,
                                   AV_I8, AV_U8, AV_BOOL, AV_F8_E4M3, AV_F8_E5M2 };
    static uint8_t buf[12][48];
    av_model *m = av_model_new();
    for (size_t i = 0; i < 12; i++) {
        for (int k = 0; k < 48; k++) buf[i][k] = (uint8_t)(i * 31 + k * 7 + 1);
        int64_t shape[2] = { 2, 48 / 2 / (int64_t)av_dtype_traits_of(ts[i])->type_size };
        char name[32];
        snprintf(name, sizeof name, "t%zu.%s", i, st_dtype_name(ts[i]));
        av_model_add_tensor(m, name, ts[i], 2, shape, buf[i], NULL);
    }
    const char *out = tmp_path(".safetensors");
    av_err e = { 0 };
    cr_assert_eq(st_write(m, out, NULL, NULL, &e), 0, "%s", e.msg);
    av_model *r = NULL;
    cr_assert_eq(st_read(out, &r, &e), 0, "%s", e.msg);
    cr_assert_eq(r->n_tensors, 12);
    for (size_t i = 0; i < 12; i++) {
        cr_expect_str_eq(r->tensors[i].name, m->tensors[i].name);
        cr_expect_eq(r->tensors[i].dtype, ts[i]);
        cr_expect_eq(memcmp(r->tensors[i].data, buf[i], 48), 0);
    }
    unlink(out);
    av_model_free(r);
    av_model_free(m);
}

static void convert_case(av_dtype to, uint16_t (*ref)(float)) {
    static const float x[8] = { 1.0f, -2.5f, 3.14159265f, 65504.0f, 1e-8f, 70000.0f, -0.0f, 0.333333343f };
    av_model *m = av_model_new();
    int64_t shape[2] = { 2, 4 };
    av_tensor *t = av_model_add_tensor(m, "x", AV_F32, 2, shape, x, NULL);
    t->dtype = to; /* write as `to`, converting from the f32 bytes */
    const char *out = tmp_path(".safetensors");
    av_err e = { 0 };
    cr_assert_eq(st_write(m, out, NULL, NULL, &e), 0, "%s", e.msg);
    av_model *r = NULL;
    cr_assert_eq(st_read(out, &r, &e), 0, "%s", e.msg);
    cr_assert_eq(r->n_tensors, 1);
    cr_expect_eq(r->tensors[0].dtype, to);
    const uint16_t *h = r->tensors[0].data;
    for (int i = 0; i < 8; i++) cr_expect_eq(h[i], ref(x[i]), "element %d: %04x vs %04x", i, h[i], ref(x[i]));
    unlink(out);
    av_model_free(r);
    av_model_free(m);
}

Test(safetensors, convert_on_write_f16) { convert_case(AV_F16, av_f32_to_f16); }
Test(safetensors, convert_on_write_bf16) { convert_case(AV_BF16, av_f32_to_bf16); }

static uint64_t g_done, g_total;
static int g_calls;
static void on_progress(void *ud, uint64_t done, uint64_t total) {
    (void)ud;
    cr_expect_geq(done, g_done);
    g_done = done;
    g_total = total;
    g_calls++;
}

Test(safetensors, progress_reaches_total) {
    av_model *m = NULL;
    av_err e = { 0 };
    cr_assert_eq(st_read(shared_path(REF_FILE), &m, &e), 0, "%s", e.msg);
    const char *out = tmp_path(".safetensors");
    cr_assert_eq(st_write(m, out, on_progress, NULL, &e), 0, "%s", e.msg);
    cr_expect_gt(g_calls, 1);
    cr_expect_eq(g_done, g_total);
    cr_expect_eq(g_total, 1044992);
    unlink(out);
    av_model_free(m);
}

Test(safetensors, write_rejects_bad_models) {
    static uint8_t q[36];
    int64_t shape[1] = { 32 };
    av_err e = { 0 };
    const char *out = tmp_path(".safetensors");
    av_model *m = av_model_new();
    av_model_add_tensor(m, "blk.0.q", AV_Q8_0, 1, shape, q, NULL);
    cr_expect_eq(st_write(m, out, NULL, NULL, &e), AV_EINVAL);
    cr_expect(strstr(e.msg, "blk.0.q") != NULL, "%s", e.msg);
    cr_expect(access(out, F_OK) != 0, "no output file on error");
    av_model_free(m);

    m = av_model_new();
    int64_t s1[1] = { 4 };
    av_model_add_tensor(m, "dup", AV_U8, 1, s1, q, NULL);
    av_model_add_tensor(m, "dup", AV_U8, 1, s1, q, NULL);
    cr_expect_eq(st_write(m, out, NULL, NULL, &e), AV_EINVAL);
    cr_expect(strstr(e.msg, "dup") != NULL, "%s", e.msg);
    av_model_free(m);

    m = av_model_new();
    av_model_add_tensor(m, "bad\xff", AV_U8, 1, s1, q, NULL);
    cr_expect_eq(st_write(m, out, NULL, NULL, &e), AV_EINVAL);
    av_model_free(m);

    m = av_model_new(); /* a type with no f32 conversion cannot be converted */
    av_tensor *t = av_model_add_tensor(m, "b", AV_BOOL, 1, s1, q, NULL);
    t->dtype = AV_F16;
    cr_expect_lt(st_write(m, out, NULL, NULL, &e), 0);
    cr_expect(access(out, F_OK) != 0);
    av_model_free(m);
}

/* ---------- malformed input ---------- */

#define T1 "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}"

Test(safetensors, malformed_files) {
    av_err e = { 0 };
    av_model *m = NULL;
    /* empty and short files */
    const char *p = tmp_path(".safetensors");
    write_bytes(p, "", 0);
    cr_expect_eq(st_read(p, &m, &e), AV_EFORMAT);
    cr_expect(strstr(e.msg, p) != NULL, "%s", e.msg);
    write_bytes(p, "\x02\0\0\0\0", 5);
    cr_expect_eq(st_read(p, &m, &e), AV_EFORMAT);
    cr_expect(strstr(e.msg, p) != NULL, "%s", e.msg);
    /* header length past the file, and over the 100 MB limit */
    unsigned char h[16] = { 0xe8, 0x03, 0, 0, 0, 0, 0, 0, '{', '}' };
    write_bytes(p, h, 16);
    cr_expect_eq(st_read(p, &m, &e), AV_EFORMAT);
    cr_expect(strstr(e.msg, p) && strstr(e.msg, "runs past end of file"), "%s", e.msg);
    unsigned char big[16] = { 0x00, 0xc2, 0xeb, 0x0b, 0, 0, 0, 0, '{', '}' }; /* 200,000,000 */
    write_bytes(p, big, 16);
    cr_expect_eq(st_read(p, &m, &e), AV_EFORMAT);
    cr_expect(strstr(e.msg, p) && strstr(e.msg, "limit"), "%s", e.msg);
    memset(big, 0xff, 8);
    write_bytes(p, big, 16);
    cr_expect_eq(st_read(p, &m, &e), AV_EFORMAT);
    cr_expect_null(m);
    unlink(p);

    expect_bad_file("{\"a\": hello}", 0, AV_EFORMAT, "JSON");
    expect_bad_file("", 0, AV_EFORMAT, NULL);
    expect_bad_file("{\"a\":{}", 0, AV_EFORMAT, "JSON");
    expect_bad_file("[1, 2]", 0, AV_EFORMAT, "not a JSON object");
    expect_bad_file("\"str\"", 0, AV_EFORMAT, "JSON");
    expect_bad_file("{\"a\":5}", 0, AV_EFORMAT, "'a'");
    expect_bad_file("{\"a\":{\"dtype\":\"F31\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, AV_EFORMAT, "unknown dtype 'F31'");
    expect_bad_file("{\"a\":{\"dtype\":\"f32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, AV_EFORMAT, "unknown dtype");
    expect_bad_file("{\"a\":{\"dtype\":32,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, AV_EFORMAT, "dtype");
    expect_bad_file("{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, AV_EFORMAT, "dtype");
    expect_bad_file("{\"a\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 8, AV_EFORMAT, "shape");
    expect_bad_file("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, AV_EFORMAT, "shape");
    expect_bad_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, AV_EFORMAT, "shape[0]");
    expect_bad_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 8, AV_EFORMAT, "shape[0]");
    expect_bad_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,\"2\"],\"data_offsets\":[0,8]}}", 8, AV_EFORMAT, "shape[1]");
    expect_bad_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,2],\"data_offsets\":[0,8]}}", 8, AV_EFORMAT,
                    "9 dims");
    expect_bad_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8, AV_EFORMAT, "data_offsets");
    expect_bad_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4,8]}}", 8, AV_EFORMAT, "data_offsets");
    expect_bad_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":{}}}", 8, AV_EFORMAT, "data_offsets");
    expect_bad_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 8, AV_EFORMAT, "data_offsets");
    expect_bad_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", 8, AV_EFORMAT, "end before");
    expect_bad_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]}}", 12, AV_EFORMAT,
                    "tensor 'a' data_offsets [0, 12] but F32 [2, 2] needs 16 bytes");
    expect_bad_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8, AV_EFORMAT, "past the 8-byte");
    expect_bad_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                    "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, AV_EFORMAT, "overlap");
    expect_bad_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                    "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, AV_EFORMAT, "overlap");
    expect_bad_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                    "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}", 20, AV_EFORMAT, "gap");
    expect_bad_file("{\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, AV_EFORMAT, "gap");
    expect_bad_file("{" T1 "}", 12, AV_EFORMAT, "cover 8 bytes");
    expect_bad_file("{}", 4, AV_EFORMAT, "cover 0 bytes");
    expect_bad_file("{" T1 "," T1 "}", 8, AV_EFORMAT, "duplicate");
    expect_bad_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[1099511627776,1099511627776],\"data_offsets\":[0,8]}}", 8,
                    AV_EFORMAT, "overflow");
    expect_bad_file("{\"a\":{\"dtype\":\"F64\",\"shape\":[2305843009213693952],\"data_offsets\":[0,8]}}", 8,
                    AV_EFORMAT, "overflow");
    expect_bad_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,18446744073709551615]}}", 8,
                    AV_EFORMAT, "JSON");
    expect_bad_file("{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, AV_EFORMAT, "JSON");
    expect_bad_file("{\"__metadata__\":[]," T1 "}", 8, AV_EFORMAT, "__metadata__");
    expect_bad_file("{\"__metadata__\":{\"k\":1}," T1 "}", 8, AV_EFORMAT, "metadata 'k'");
    expect_bad_file("{\"__metadata__\":{\"k\":\"v\",\"k\":\"w\"}}", 0, AV_EFORMAT, "duplicate");
    expect_bad_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}} x", 8, AV_EFORMAT, "JSON");
    expect_bad_file("{\"a\":\"\xff\"}", 0, AV_EFORMAT, "JSON"); /* invalid UTF-8 */
}

Test(safetensors, valid_edge_cases) {
    /* metadata anywhere, extra keys ignored, zero-size tensors at shared offsets, trailing spaces */
    const char *p = make_file("{\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8],\"x\":1},"
                              "\"z\":{\"dtype\":\"I32\",\"shape\":[0,3],\"data_offsets\":[4,4]},"
                              "\"a\":{\"dtype\":\"BOOL\",\"shape\":[2,2],\"data_offsets\":[0,4]},"
                              "\"__metadata__\":{\"k\":\"v\"},"
                              "\"y\":{\"dtype\":\"F16\",\"shape\":[0],\"data_offsets\":[8,8]}}   ", 8);
    av_model *m = NULL;
    av_err e = { 0 };
    cr_assert_eq(st_read(p, &m, &e), 0, "%s", e.msg);
    cr_assert_eq(m->n_tensors, 4);
    cr_expect_str_eq(m->tensors[0].name, "a");
    cr_expect_str_eq(m->tensors[1].name, "z");
    cr_expect_str_eq(m->tensors[2].name, "b");
    cr_expect_str_eq(m->tensors[3].name, "y");
    cr_expect_eq(((const uint8_t *)m->tensors[2].data)[0], 4);
    cr_expect_eq(m->kv.n, 1);
    av_model_free(m);
    unlink(p);
}

/* A small valid image for the truncation / bit-flip loops. */
static unsigned char *small_valid(size_t *n) {
    return make_image("{\"__metadata__\":{\"format\":\"pt\",\"gguf:n\":\"{\\\"type\\\":\\\"array\\\",\\\"elem\\\":"
                      "\\\"string\\\",\\\"value\\\":[\\\"a\\\",{\\\"hex\\\":\\\"ff\\\"}]}\"},"
                      "\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
                      "\"b\":{\"dtype\":\"I16\",\"shape\":[4],\"data_offsets\":[16,24]}}",
                      24, n);
}

Test(safetensors, every_truncation_fails_cleanly) {
    size_t n;
    unsigned char *img = small_valid(&n);
    av_model *m = NULL;
    av_err e = { 0 };
    cr_assert_eq(st_read_mem(img, n, "small.safetensors", &m, &e), 0, "%s", e.msg);
    cr_expect_eq(m->n_tensors, 2);
    cr_expect_eq(m->kv.n, 2);
    av_model_free(m);
    for (size_t len = 0; len < n; len++) {
        unsigned char *c = malloc(len ? len : 1); /* exact size so ASan sees any over-read */
        memcpy(c, img, len);
        m = (av_model *)1;
        int rc = st_read_mem(len ? c : NULL, len, "small.safetensors", &m, &e);
        cr_expect_eq(rc, AV_EFORMAT, "truncated to %zu: rc %d", len, rc);
        cr_expect_null(m);
        cr_expect(strstr(e.msg, "small.safetensors") != NULL, "%s", e.msg);
        free(c);
    }
    free(img);
}

Test(safetensors, flipped_header_bytes_never_crash) {
    size_t n;
    unsigned char *img = small_valid(&n);
    uint64_t hn;
    memcpy(&hn, img, 8);
    static const unsigned char flips[] = { 0x01, 0x02, 0x08, 0x20, 0x80, 0xff };
    int ok = 0, bad = 0;
    for (size_t i = 0; i < 8 + hn; i++) {
        for (size_t f = 0; f < sizeof flips; f++) {
            unsigned char *c = malloc(n);
            memcpy(c, img, n);
            c[i] ^= flips[f];
            av_model *m = NULL;
            av_err e = { 0 };
            int rc = st_read_mem(c, n, "flip.safetensors", &m, &e);
            if (rc == 0) {
                ok++;
                for (size_t t = 0; t < m->n_tensors; t++) {
                    int k;
                    size_t nb = av_tensor_nbytes(&m->tensors[t], &k);
                    const uint8_t *d = m->tensors[t].data;
                    cr_assert(k && d >= c && d + nb <= c + n);
                }
                av_model_free(m);
            } else {
                bad++;
                cr_expect(rc == AV_EFORMAT && strstr(e.msg, "flip.safetensors"), "byte %zu: %d %s", i, rc, e.msg);
            }
            free(c);
        }
    }
    cr_expect_gt(bad, 0);
    cr_expect_gt(ok, 0); /* e.g. flips inside metadata values */
    free(img);
}

/* ---------- shards ---------- */

static void write_in(const char *dir, const char *name, const void *p, size_t n) {
    char b[512];
    snprintf(b, sizeof b, "%s/%s", dir, name);
    cr_assert_eq(write_bytes(b, p, n), 0);
}

static void rm_in(const char *dir, const char *name) {
    char b[512];
    snprintf(b, sizeof b, "%s/%s", dir, name);
    unlink(b);
}

Test(safetensors, sharded_errors) {
    char dir[256];
    snprintf(dir, sizeof dir, "%s", tmp_path(".d"));
    cr_assert_eq(mkdir(dir, 0755), 0);
    size_t n;
    unsigned char *s1 = make_image("{" T1 "}", 8, &n);
    size_t n1 = n;
    write_in(dir, "s1.safetensors", s1, n);
    av_model *m = NULL;
    av_err e = { 0 };

    const char *ix = "{\"metadata\":{},\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s2.safetensors\"}}";
    write_in(dir, "model.safetensors.index.json", ix, strlen(ix));
    char idx[512];
    snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", dir);
    int rc = st_read(idx, &m, &e);
    cr_expect_eq(rc, AV_EIO, "missing shard: %d %s", rc, e.msg);
    cr_expect(strstr(e.msg, "s2.safetensors") && strstr(e.msg, "index.json"), "%s", e.msg);
    cr_expect_null(m);

    ix = "{\"weight_map\":{\"a\":\"s1.safetensors\",\"c\":\"s1.safetensors\"}}";
    write_in(dir, "model.safetensors.index.json", ix, strlen(ix));
    cr_expect_eq(st_read(idx, &m, &e), AV_EFORMAT);
    cr_expect(strstr(e.msg, "'c'") && strstr(e.msg, "s1.safetensors"), "%s", e.msg);
    cr_expect_eq(st_read(dir, &m, &e), AV_EFORMAT, "folder reads the index too");

    write_in(dir, "s2.safetensors", s1, n); /* 'a' again */
    ix = "{\"weight_map\":{\"a\":\"s1.safetensors\",\"x\":\"s2.safetensors\"}}";
    write_in(dir, "model.safetensors.index.json", ix, strlen(ix));
    cr_expect_eq(st_read(idx, &m, &e), AV_EFORMAT);
    cr_expect(strstr(e.msg, "'x'") != NULL, "%s", e.msg);

    ix = "{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s2.safetensors\"}}";
    write_in(dir, "model.safetensors.index.json", ix, strlen(ix));
    cr_expect_eq(st_read(idx, &m, &e), AV_EFORMAT);
    cr_expect(strstr(e.msg, "'b'") != NULL, "%s", e.msg); /* b is not in s2 */

    ix = "{\"weight_map\":[]}";
    write_in(dir, "model.safetensors.index.json", ix, strlen(ix));
    cr_expect_eq(st_read(idx, &m, &e), AV_EFORMAT);
    cr_expect(strstr(e.msg, "weight_map") != NULL, "%s", e.msg);
    ix = "{\"weight_map\":{\"a\":5}}";
    write_in(dir, "model.safetensors.index.json", ix, strlen(ix));
    cr_expect_eq(st_read(idx, &m, &e), AV_EFORMAT);
    ix = "{\"weight_map\":{\"a\":\"s1.safetensors\"}";
    write_in(dir, "model.safetensors.index.json", ix, strlen(ix));
    cr_expect_eq(st_read(idx, &m, &e), AV_EFORMAT);
    cr_expect(strstr(e.msg, "index.json") != NULL, "%s", e.msg);

    /* a shard holding the same tensor as another */
    unsigned char *s3 = make_image("{" T1 ",\"b\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[8,8]}}", 8, &n);
    write_in(dir, "s3.safetensors", s3, n);
    ix = "{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s3.safetensors\"}}";
    write_in(dir, "model.safetensors.index.json", ix, strlen(ix));
    cr_expect_eq(st_read(idx, &m, &e), AV_EFORMAT);
    cr_expect(strstr(e.msg, "more than one shard") != NULL, "%s", e.msg);

    /* a good index: all of each shard is read, even tensors weight_map omits */
    ix = "{\"weight_map\":{\"b\":\"s3.safetensors\"}}";
    write_in(dir, "model.safetensors.index.json", ix, strlen(ix));
    cr_assert_eq(st_read(dir, &m, &e), 0, "%s", e.msg);
    cr_expect_eq(m->n_tensors, 2);
    av_model_free(m);
    /* the folder prefers model.safetensors over the index */
    write_in(dir, "model.safetensors", s1, n1);
    cr_assert_eq(st_read(dir, &m, &e), 0, "%s", e.msg);
    cr_expect_eq(m->n_tensors, 1);
    av_model_free(m);
    rm_in(dir, "s1.safetensors");
    rm_in(dir, "s2.safetensors");
    rm_in(dir, "s3.safetensors");
    rm_in(dir, "model.safetensors");
    rm_in(dir, "model.safetensors.index.json");
    rmdir(dir);
    free(s1);
    free(s3);
}
