/* anvil info — describe a model file: format, metadata, tensor table, totals.
 * Reads headers only: tensor data are mmap'd views that are never touched. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "onnx.h"

#define ARRAY_SHOW 8 /* elements shown of a long array without --all */

static void usage(FILE *f) {
    fprintf(f,
            "usage: anvil info FILE [--json] [--all]\n"
            "\n"
            "Print a model file's format, metadata and tensor table (name, dtype, shape,\n"
            "offset, bytes) and its total parameter count. FILE: .gguf, .safetensors,\n"
            "model.safetensors.index.json, an HF model folder, a llama2.c .bin, PyTorch .pt,\n"
            "or .onnx (IR version, opsets, inputs/outputs, initializers, op histogram).\n"
            "\n"
            "  --json   one JSON object on stdout instead of text\n"
            "  --all    print long arrays (vocabularies) in full\n"
            "  -h, --help\n");
}

/* ---- text ---- */

static void print_str(const char *s, uint64_t len, int quote) {
    if (quote) putchar('"');
    for (uint64_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '\n') fputs("\\n", stdout);
        else if (ch == '\t') fputs("\\t", stdout);
        else if (ch == '"' && quote) fputs("\\\"", stdout);
        else if (ch < 0x20 || ch == 0x7f) printf("\\x%02x", ch);
        else putchar(ch);
    }
    if (quote) putchar('"');
}

static void print_value(const av_value *v, int all) {
    switch (v->type) {
    case AV_KV_STRING: print_str(v->str.s, v->str.len, 1); return;
    case AV_KV_BOOL: fputs(v->u ? "true" : "false", stdout); return;
    case AV_KV_F32: case AV_KV_F64: printf("%.9g", v->f); return;
    case AV_KV_U8: case AV_KV_U16: case AV_KV_U32: case AV_KV_U64: printf("%llu", (unsigned long long)v->u); return;
    case AV_KV_I8: case AV_KV_I16: case AV_KV_I32: case AV_KV_I64: printf("%lld", (long long)v->i); return;
    case AV_KV_ARRAY: {
        const av_array *a = &v->arr;
        uint64_t shown = all || a->n <= ARRAY_SHOW ? a->n : ARRAY_SHOW;
        printf("[%s x %llu] [", av_kv_type_name(a->elem), (unsigned long long)a->n);
        for (uint64_t i = 0; i < shown; i++) {
            if (i) fputs(", ", stdout);
            if (a->elem == AV_KV_STRING) {
                const av_str *s = &((const av_str *)a->data)[i];
                print_str(s->s, s->len, 1);
            } else if (a->elem == AV_KV_ARRAY) {
                print_value(&((const av_value *)a->data)[i], all);
            } else if (a->elem == AV_KV_F32 || a->elem == AV_KV_F64) {
                printf("%.9g", av_array_get_f64(a, i));
            } else if (a->elem == AV_KV_U64) {
                printf("%llu", (unsigned long long)av_array_get_i64(a, i));
            } else {
                printf("%lld", (long long)av_array_get_i64(a, i));
            }
        }
        if (shown < a->n) printf(", ... %llu more", (unsigned long long)(a->n - shown));
        putchar(']');
        return;
    }
    default: fputs("?", stdout);
    }
}

static void print_text(const char *path, const av_model *m, int all) {
    printf("file:     %s\n", path);
    printf("format:   %s", av_format_name(m->format));
    if (m->format == AV_FMT_GGUF) printf(" v%u", m->gguf_version);
    printf("\nmetadata: %zu keys\n", m->kv.n);
    for (size_t i = 0; i < m->kv.n; i++) {
        const av_kv *kv = &m->kv.items[i];
        printf("  %-40s %-7s ", kv->key, av_kv_type_name(kv->val.type));
        print_value(&kv->val, all);
        putchar('\n');
    }
    printf("tensors:  %zu\n", m->n_tensors);
    if (m->n_tensors) printf("  %-40s %-6s %-22s %12s %12s\n", "name", "dtype", "shape", "offset", "bytes");
    uint64_t bytes = 0;
    for (size_t i = 0; i < m->n_tensors; i++) {
        const av_tensor *t = &m->tensors[i];
        char shape[128];
        int ok;
        size_t nb = av_tensor_nbytes(t, &ok);
        bytes += nb;
        av_shape_str(t, shape, sizeof shape);
        printf("  %-40s %-6s %-22s %12llu %12zu\n", t->name, av_dtype_name(t->dtype), shape,
               (unsigned long long)t->file_offset, nb);
    }
    printf("params:   %lld (%.3f M)\n", (long long)av_model_nparams(m), av_model_nparams(m) / 1e6);
    printf("bytes:    %llu (%.2f MiB of tensor data)\n", (unsigned long long)bytes, bytes / 1048576.0);
}

/* ---- JSON ---- */

static json_t *json_bytes(const char *s, uint64_t len) {
    json_t *j = json_stringn(s, (size_t)len);
    if (j) return j;
    /* not valid UTF-8: show as an array of byte values */
    json_t *a = json_array();
    for (uint64_t i = 0; i < len; i++) json_array_append_new(a, json_integer((unsigned char)s[i]));
    return a;
}

static json_t *json_value(const av_value *v, int all) {
    switch (v->type) {
    case AV_KV_STRING: return json_bytes(v->str.s, v->str.len);
    case AV_KV_BOOL: return json_boolean(v->u);
    case AV_KV_F32: case AV_KV_F64: return json_real(v->f);
    case AV_KV_U8: case AV_KV_U16: case AV_KV_U32: case AV_KV_U64: return json_integer((json_int_t)v->u);
    case AV_KV_I8: case AV_KV_I16: case AV_KV_I32: case AV_KV_I64: return json_integer((json_int_t)v->i);
    case AV_KV_ARRAY: {
        const av_array *a = &v->arr;
        json_t *o = json_object(), *items = json_array();
        uint64_t shown = all || a->n <= ARRAY_SHOW ? a->n : ARRAY_SHOW;
        json_object_set_new(o, "elem_type", json_string(av_kv_type_name(a->elem)));
        json_object_set_new(o, "length", json_integer((json_int_t)a->n));
        for (uint64_t i = 0; i < shown; i++) {
            json_t *e;
            if (a->elem == AV_KV_STRING) e = json_bytes(((const av_str *)a->data)[i].s, ((const av_str *)a->data)[i].len);
            else if (a->elem == AV_KV_ARRAY) e = json_value(&((const av_value *)a->data)[i], all);
            else if (a->elem == AV_KV_F32 || a->elem == AV_KV_F64) e = json_real(av_array_get_f64(a, i));
            else if (a->elem == AV_KV_BOOL) e = json_boolean(av_array_get_i64(a, i));
            else e = json_integer((json_int_t)av_array_get_i64(a, i));
            json_array_append_new(items, e);
        }
        json_object_set_new(o, "values", items);
        if (shown < a->n) json_object_set_new(o, "truncated", json_true());
        return o;
    }
    default: return json_null();
    }
}

static int print_json(const char *path, const av_model *m, int all) {
    json_t *root = json_object(), *meta = json_object(), *tensors = json_array();
    json_object_set_new(root, "file", json_string(path));
    json_object_set_new(root, "format", json_string(av_format_name(m->format)));
    if (m->format == AV_FMT_GGUF) json_object_set_new(root, "gguf_version", json_integer(m->gguf_version));
    for (size_t i = 0; i < m->kv.n; i++) {
        json_t *e = json_object();
        json_object_set_new(e, "type", json_string(av_kv_type_name(m->kv.items[i].val.type)));
        json_object_set_new(e, "value", json_value(&m->kv.items[i].val, all));
        json_object_set_new(meta, m->kv.items[i].key, e);
    }
    json_object_set_new(root, "metadata", meta);
    uint64_t bytes = 0;
    for (size_t i = 0; i < m->n_tensors; i++) {
        const av_tensor *t = &m->tensors[i];
        json_t *e = json_object(), *shape = json_array();
        int ok;
        size_t nb = av_tensor_nbytes(t, &ok);
        bytes += nb;
        for (int d = 0; d < t->n_dims; d++) json_array_append_new(shape, json_integer(t->shape[d]));
        json_object_set_new(e, "name", json_string(t->name));
        json_object_set_new(e, "dtype", json_string(av_dtype_name(t->dtype)));
        json_object_set_new(e, "shape", shape);
        json_object_set_new(e, "offset", json_integer((json_int_t)t->file_offset));
        json_object_set_new(e, "bytes", json_integer((json_int_t)nb));
        json_array_append_new(tensors, e);
    }
    json_object_set_new(root, "tensors", tensors);
    json_object_set_new(root, "n_tensors", json_integer((json_int_t)m->n_tensors));
    json_object_set_new(root, "n_params", json_integer(av_model_nparams(m)));
    json_object_set_new(root, "tensor_bytes", json_integer((json_int_t)bytes));
    int rc = json_dumpf(root, stdout, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    putchar('\n');
    json_decref(root);
    return rc;
}

/* ---- ONNX: the graph's own description (onnx_describe) ---- */

static void print_dims(json_t *shape) {
    size_t i;
    json_t *d;
    putchar('[');
    json_array_foreach(shape, i, d) {
        if (i) fputs(", ", stdout);
        if (json_is_integer(d)) printf("%lld", (long long)json_integer_value(d));
        else fputs(json_string_value(d), stdout);
    }
    putchar(']');
}

static void print_onnx_text(const char *path, json_t *j) {
    size_t i;
    json_t *e;
    const char *k;
    printf("file:     %s\n", path);
    printf("format:   onnx, IR version %lld, producer %s\n", (long long)json_integer_value(json_object_get(j, "ir_version")),
           json_string_value(json_object_get(j, "producer")));
    fputs("opsets:  ", stdout);
    json_array_foreach(json_object_get(j, "opsets"), i, e)
        printf(" %s %lld", json_string_value(json_object_get(e, "domain")), (long long)json_integer_value(json_object_get(e, "version")));
    putchar('\n');
    static const char *io[2] = { "inputs", "outputs" };
    for (int s = 0; s < 2; s++) {
        printf("%s:%s %zu\n", io[s], s ? " " : "  ", json_array_size(json_object_get(j, io[s])));
        json_array_foreach(json_object_get(j, io[s]), i, e) {
            printf("  %-40s %-8s ", json_string_value(json_object_get(e, "name")), json_string_value(json_object_get(e, "dtype")));
            print_dims(json_object_get(e, "shape"));
            putchar('\n');
        }
    }
    json_t *inits = json_object_get(j, "initializers");
    printf("initializers: %zu\n", json_array_size(inits));
    if (json_array_size(inits)) printf("  %-40s %-8s %-22s %12s\n", "name", "dtype", "shape", "bytes");
    json_array_foreach(inits, i, e) {
        printf("  %-40s %-8s ", json_string_value(json_object_get(e, "name")), json_string_value(json_object_get(e, "dtype")));
        char buf[128];
        size_t n = 0, d;
        json_t *x;
        buf[n++] = '[';
        json_array_foreach(json_object_get(e, "shape"), d, x)
            n += (size_t)snprintf(buf + n, sizeof buf - n < 2 ? 0 : sizeof buf - n, "%s%lld", d ? ", " : "", (long long)json_integer_value(x));
        if (n < sizeof buf - 1) { buf[n++] = ']'; buf[n] = 0; } else buf[sizeof buf - 1] = 0;
        printf("%-22s %12lld", buf, (long long)json_integer_value(json_object_get(e, "bytes")));
        if (json_object_get(e, "external")) printf("  external: %s", json_string_value(json_object_get(e, "external")));
        putchar('\n');
    }
    printf("ops:      %lld nodes\n", (long long)json_integer_value(json_object_get(j, "n_nodes")));
    json_object_foreach(json_object_get(j, "ops"), k, e) printf("  %-24s %lld\n", k, (long long)json_integer_value(e));
    printf("bytes:    %lld (%.2f MiB of initializer data)\n", (long long)json_integer_value(json_object_get(j, "initializer_bytes")),
           json_integer_value(json_object_get(j, "initializer_bytes")) / 1048576.0);
}

static int info_onnx(const char *path, int as_json) {
    av_err err = { 0 };
    onnx_model *om = NULL;
    json_t *j = NULL;
    if (onnx_open(path, &om, &err) || onnx_describe(om, &j, &err)) {
        fprintf(stderr, "anvil info: %s\n", err.msg);
        onnx_free(om);
        return 1;
    }
    int rc = 0;
    if (as_json) {
        json_object_set_new(j, "file", json_string(path));
        json_object_set_new(j, "format", json_string("onnx"));
        rc = json_dumpf(j, stdout, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
        putchar('\n');
    } else {
        print_onnx_text(path, j);
    }
    json_decref(j);
    onnx_free(om);
    if (fflush(stdout) != 0 || rc) { fprintf(stderr, "anvil info: cannot write output\n"); return 1; }
    return 0;
}

int main(int argc, char **argv) {
    const char *path = NULL;
    int as_json = 0, all = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) { usage(stdout); return 0; }
        else if (!strcmp(argv[i], "--json")) as_json = 1;
        else if (!strcmp(argv[i], "--all")) all = 1;
        else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "anvil info: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        } else if (!path) path = argv[i];
        else { fprintf(stderr, "anvil info: more than one FILE given\n"); usage(stderr); return 2; }
    }
    if (!path) { usage(stderr); return 2; }
    if (av_detect_format(path) == AV_FMT_ONNX) return info_onnx(path, as_json);
    av_err err = { 0 };
    av_model *m;
    if (av_model_read(path, &m, &err)) {
        fprintf(stderr, "anvil info: %s\n", err.msg);
        return 1;
    }
    int rc = as_json ? print_json(path, m, all) : (print_text(path, m, all), 0);
    av_model_free(m);
    if (fflush(stdout) != 0 || rc) { fprintf(stderr, "anvil info: cannot write output\n"); return 1; }
    return 0;
}
