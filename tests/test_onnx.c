/* test_onnx.c — ONNX reader checks on models built here with the protobuf-c
 * code generated from Debian's onnx.proto (hostile dims, short data,
 * external data leaving the folder, opsets, nesting), and the --int8 export
 * read back within half a quantization step of the f32 weights. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model.h"
#include "onnx.h"
#include "onnx.pb-c.h"
#include "testutil.h"

/* ---------- a one-initializer model ---------- */

typedef struct tiny {
    Onnx__ModelProto m;
    Onnx__GraphProto g;
    Onnx__OperatorSetIdProto op, *ops[1];
    Onnx__TensorProto t, *inits[1];
    Onnx__StringStringEntryProto ext[3], *exts[3];
    int64_t dims[3];
    float data[8]; /* 6 used; room for the too-long raw_data case */
} tiny;

/* float32 initializer "w" [2, 3] with raw data, ai.onnx opset 17. */
static void tiny_init(tiny *x) {
    memset(x, 0, sizeof *x);
    onnx__model_proto__init(&x->m);
    onnx__graph_proto__init(&x->g);
    onnx__operator_set_id_proto__init(&x->op);
    onnx__tensor_proto__init(&x->t);
    x->op.domain = "";
    x->op.has_version = 1;
    x->op.version = 17;
    x->ops[0] = &x->op;
    x->m.has_ir_version = 1;
    x->m.ir_version = 8;
    x->m.opset_import = x->ops;
    x->m.n_opset_import = 1;
    x->m.graph = &x->g;
    x->g.name = "g";
    x->dims[0] = 2;
    x->dims[1] = 3;
    for (int i = 0; i < 6; i++) x->data[i] = (float)i;
    x->t.name = "w";
    x->t.has_data_type = 1;
    x->t.data_type = 1;
    x->t.dims = x->dims;
    x->t.n_dims = 2;
    x->t.has_raw_data = 1;
    x->t.raw_data.data = (uint8_t *)x->data;
    x->t.raw_data.len = 6 * sizeof(float);
    x->inits[0] = &x->t;
    x->g.initializer = x->inits;
    x->g.n_initializer = 1;
}

/* Initializer data moved to external `loc` at `off`, 24 bytes. */
static void tiny_external(tiny *x, const char *loc, const char *off) {
    const char *k[3] = { "location", "offset", "length" }, *v[3] = { loc, off, "24" };
    for (int i = 0; i < 3; i++) {
        onnx__string_string_entry_proto__init(&x->ext[i]);
        x->ext[i].key = (char *)k[i];
        x->ext[i].value = (char *)v[i];
        x->exts[i] = &x->ext[i];
    }
    x->t.has_raw_data = 0;
    x->t.has_data_location = 1;
    x->t.data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
    x->t.external_data = x->exts;
    x->t.n_external_data = 3;
}

static uint8_t *pack(const tiny *x, size_t *n) {
    *n = protobuf_c_message_get_packed_size(&x->m.base);
    uint8_t *b = malloc(*n ? *n : 1);
    cr_assert(b);
    protobuf_c_message_pack(&x->m.base, b);
    return b;
}

/* onnx_open_mem on x: the return code, message in err. */
static int open_mem(const tiny *x, av_err *err) {
    size_t n;
    uint8_t *b = pack(x, &n);
    onnx_model *om = NULL;
    int rc = onnx_open_mem(b, n, "t.onnx", &om, err);
    free(b);
    onnx_free(om);
    return rc;
}

/* Write x to dir/name and onnx_open it. */
static int open_file(const tiny *x, const char *dir, const char *name, av_err *err) {
    char p[512];
    size_t n;
    uint8_t *b = pack(x, &n);
    snprintf(p, sizeof p, "%s/%s", dir, name);
    cr_assert_eq(write_bytes(p, b, n), 0);
    free(b);
    onnx_model *om = NULL;
    int rc = onnx_open(p, &om, err);
    onnx_free(om);
    return rc;
}

#define EXPECT_FAIL(rc, err, code, text)                                                              \
    do {                                                                                              \
        cr_assert_eq((rc), (code), "rc %d, want %d: %s", (rc), (code), (err).msg);                    \
        cr_assert(strstr((err).msg, (text)), "message '%s' lacks '%s'", (err).msg, (text));           \
    } while (0)

/* ---------- reader checks ---------- */

Test(onnx, tiny_model_opens_and_is_described) {
    tiny x;
    tiny_init(&x);
    size_t n;
    uint8_t *b = pack(&x, &n);
    onnx_model *om = NULL;
    av_err err = { 0 };
    cr_assert_eq(onnx_open_mem(b, n, "t.onnx", &om, &err), 0, "%s", err.msg);
    free(b); /* the model does not keep the buffer */
    json_t *d = NULL;
    cr_assert_eq(onnx_describe(om, &d, &err), 0);
    json_t *w = json_array_get(json_object_get(d, "initializers"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(w, "name")), "w");
    cr_assert_eq(json_integer_value(json_object_get(w, "bytes")), 24);
    json_decref(d);
    onnx_free(om);
}

Test(onnx, dims_whose_product_overflows) {
    tiny x;
    tiny_init(&x);
    x.dims[0] = x.dims[1] = x.dims[2] = (int64_t)1 << 40;
    x.t.n_dims = 3;
    av_err err = { 0 };
    EXPECT_FAIL(open_mem(&x, &err), err, AV_EFORMAT, "'w': element count of its dims overflows");
}

Test(onnx, negative_dim) {
    tiny x;
    tiny_init(&x);
    x.dims[1] = -3;
    av_err err = { 0 };
    EXPECT_FAIL(open_mem(&x, &err), err, AV_EFORMAT, "negative dim -3");
}

Test(onnx, initializer_data_shorter_than_its_shape) {
    tiny x;
    tiny_init(&x);
    x.t.raw_data.len = 20;
    av_err err = { 0 };
    EXPECT_FAIL(open_mem(&x, &err), err, AV_EFORMAT, "'w': data does not match its shape");
    x.t.raw_data.len = 28; /* longer is as wrong */
    EXPECT_FAIL(open_mem(&x, &err), err, AV_EFORMAT, "data does not match its shape");
}

Test(onnx, typed_data_count_must_match_too) {
    tiny x;
    tiny_init(&x);
    x.t.has_raw_data = 0;
    x.t.float_data = x.data;
    x.t.n_float_data = 5;
    av_err err = { 0 };
    EXPECT_FAIL(open_mem(&x, &err), err, AV_EFORMAT, "data does not match its shape");
    x.t.n_float_data = 6;
    cr_assert_eq(open_mem(&x, &err), 0, "%s", err.msg);
}

Test(onnx, unknown_opset_and_ir_version) {
    tiny x;
    tiny_init(&x);
    x.op.version = 99;
    av_err err = { 0 };
    EXPECT_FAIL(open_mem(&x, &err), err, AV_EUNSUPPORTED, "opset 99");
    tiny_init(&x);
    x.m.ir_version = 2;
    EXPECT_FAIL(open_mem(&x, &err), err, AV_EUNSUPPORTED, "IR version 2");
}

Test(onnx, external_data_refused_in_memory) {
    tiny x;
    tiny_init(&x);
    tiny_external(&x, "w.bin", "0");
    av_err err = { 0 };
    EXPECT_FAIL(open_mem(&x, &err), err, AV_EUNSUPPORTED, "external data in an in-memory model");
}

Test(onnx, external_data_leaving_the_folder) {
    char dir[256], sub[300], out[300];
    snprintf(dir, sizeof dir, "%s", tmp_path(".d"));
    snprintf(sub, sizeof sub, "%s/sub", dir);
    snprintf(out, sizeof out, "%s/escape.bin", dir);
    cr_assert_eq(mkdir(dir, 0755), 0);
    cr_assert_eq(mkdir(sub, 0755), 0);
    float z[6] = { 0 };
    cr_assert_eq(write_bytes(out, z, sizeof z), 0); /* exists, so only the folder rule can refuse it */
    tiny x;
    av_err err = { 0 };
    tiny_init(&x);
    tiny_external(&x, "../escape.bin", "0");
    EXPECT_FAIL(open_file(&x, sub, "a.onnx", &err), err, AV_EFORMAT, "leaves the model's folder");
    tiny_external(&x, out, "0"); /* absolute */
    EXPECT_FAIL(open_file(&x, sub, "b.onnx", &err), err, AV_EFORMAT, "leaves the model's folder");
    char link[400];
    snprintf(link, sizeof link, "%s/link.bin", sub);
    cr_assert_eq(symlink(out, link), 0);
    tiny_external(&x, "link.bin", "0"); /* inside by name, outside once resolved */
    EXPECT_FAIL(open_file(&x, sub, "c.onnx", &err), err, AV_EFORMAT, "leaves the model's folder");
    /* the same bytes inside the folder are fine; a negative or too large offset is not */
    char in[400];
    snprintf(in, sizeof in, "%s/w.bin", sub);
    cr_assert_eq(write_bytes(in, z, sizeof z), 0);
    tiny_external(&x, "w.bin", "0");
    cr_assert_eq(open_file(&x, sub, "d.onnx", &err), 0, "%s", err.msg);
    tiny_external(&x, "w.bin", "-4096");
    EXPECT_FAIL(open_file(&x, sub, "e.onnx", &err), err, AV_EFORMAT, "is negative");
    tiny_external(&x, "w.bin", "8");
    EXPECT_FAIL(open_file(&x, sub, "f.onnx", &err), err, AV_EFORMAT, "past the end");
    const char *rm[] = { "a.onnx", "b.onnx", "c.onnx", "d.onnx", "e.onnx", "f.onnx", "link.bin", "w.bin" };
    for (size_t i = 0; i < sizeof rm / sizeof rm[0]; i++) {
        char p[450];
        snprintf(p, sizeof p, "%s/%s", sub, rm[i]);
        unlink(p);
    }
    unlink(out);
    rmdir(sub);
    rmdir(dir);
}

Test(onnx, garbage_and_truncation) {
    tiny x;
    tiny_init(&x);
    size_t n;
    uint8_t *b = pack(&x, &n);
    onnx_model *om = NULL;
    av_err err = { 0 };
    for (size_t cut = 1; cut < n; cut += 7) { /* every prefix fails cleanly or opens; never crashes */
        int rc = onnx_open_mem(b, cut, "t.onnx", &om, &err);
        if (!rc) onnx_free(om);
        else cr_assert(strstr(err.msg, "t.onnx"), "%s", err.msg);
        om = NULL;
    }
    free(b);
    static const uint8_t junk[] = { 0x0f, 0xff, 0xff, 0xff };
    cr_assert_neq(onnx_open_mem(junk, sizeof junk, "junk.onnx", &om, &err), 0);
    cr_assert(strstr(err.msg, "junk.onnx"));
}

/* ---------- --int8 export read back ---------- */

/* Every matrix of stories260K through onnx_write --int8 and onnx_read comes
 * back (dequantized f32, GGUF layout and q/k order) within half a step of its
 * row's scale: max|w_r| / 127 (sym) or (max_r - min_r) / 255 (asym). */
static void int8_round_trip(int mode) {
    av_model *m = NULL, *r = NULL;
    av_err err = { 0 };
    if (av_model_read(shared_path("reference/llamacpp/stories260K-f32.gguf"), &m, &err))
        cr_skip_test("stories260K-f32.gguf: %s", err.msg);
    const char *p = tmp_path(".onnx");
    onnx_write_opts o = { .int8 = mode };
    cr_assert_eq(onnx_write(m, p, &o, &err), 0, "%s", err.msg);
    cr_assert_eq(onnx_read(p, &r, &err), 0, "%s", err.msg);
    unlink(p);
    cr_assert_eq(r->n_tensors, m->n_tensors);
    for (size_t i = 0; i < m->n_tensors; i++) {
        const av_tensor *a = &m->tensors[i], *b = av_model_find(r, a->name);
        cr_assert(b, "%s missing", a->name);
        cr_assert_eq(b->src_dtype, AV_F32, "%s", a->name);
        cr_assert_eq(av_tensor_nelements(a), av_tensor_nelements(b));
        const float *x = a->data, *y = b->data;
        int64_t R = a->shape[0], C = a->n_dims == 2 ? a->shape[1] : 1;
        for (int64_t row = 0; row < R; row++) {
            float lo = 0, hi = 0;
            for (int64_t c = 0; c < C; c++) lo = fminf(lo, x[row * C + c]), hi = fmaxf(hi, x[row * C + c]);
            float step = a->n_dims == 1 ? 0 : mode == 1 ? fmaxf(-lo, hi) / 127 : (hi - lo) / 255;
            for (int64_t c = 0; c < C; c++)
                cr_assert_leq(fabsf(x[row * C + c] - y[row * C + c]), step * 0.5f * 1.001f + 1e-7f, "%s[%lld, %lld]: %g vs %g",
                              a->name, (long long)row, (long long)c, x[row * C + c], y[row * C + c]);
        }
    }
    av_model_free(m);
    av_model_free(r);
}

Test(onnx, int8_sym_reads_back_within_half_a_step) { int8_round_trip(1); }
Test(onnx, int8_asym_reads_back_within_half_a_step) { int8_round_trip(2); }
