/* anvil quantize — IN.gguf -> OUT.gguf at a llama-quantize file type, with
 * llama-quantize's per-tensor type choice, tensor order and metadata, so the
 * output is byte-identical to llama.cpp's (commit 3f545bec).
 *
 * read GGUF -> q_model_quantize (core/quant.c: q_plan_model's types, fallbacks
 * and refusals, llama.cpp's tensor order, every check before any work, each
 * tensor quantized in memory, metadata) -> gguf_write (OUT.tmp, fsync,
 * rename). Nothing is written until every check passed. */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io.h"
#include "gguf.h"
#include "progress.h"
#include "quant.h"
#include "torchpt.h"
#include "safetensors.h"
#include "int8.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: anvil quantize IN.gguf OUT.gguf TYPE [NTHREADS] [--imatrix FILE] [--pure]\n"
            "                      [--output-tensor-type T] [--token-embedding-type T]\n"
            "                      [--leave-output-tensor] [--allow-requantize] [-t N] [--json] [-q]\n"
            "       anvil quantize IN OUT.safetensors|OUT.pt --int8 sym|asym [--json] [-q]\n"
            "\n"
            "--int8: per-output-channel INT8 for formats without block types. Each 2-D float tensor\n"
            "NAME becomes NAME (int8 [rows, cols], sym; uint8, asym) + NAME.scale (f32 [rows]) and, for\n"
            "asym, NAME.zero_point (uint8 [rows]); w = q * scale or (q - zero_point) * scale. The\n"
            "metadata key anvil.int8 records the mode. Other tensors are copied.\n"
            "\n"
            "Quantize a GGUF model as llama.cpp's llama-quantize does: the same per-tensor types\n"
            "(the mixes' Q6_K/Q5_K layers, output.weight Q6_K, 1-D tensors kept F32, fallback types\n"
            "when a row is not whole blocks), the same bytes, tensor order and metadata\n"
            "(general.quantization_version, general.file_type, quantize.imatrix.*).\n"
            "\n"
            "TYPE (case-insensitive; llama-quantize's numeric ids also work):\n");
    size_t n;
    const q_ftype_info *ft = q_ftype_list(&n);
    for (size_t i = 0; i < n; i++) fprintf(f, "  %-7s %2d  %s\n", ft[i].name, (int)ft[i].ftype, ft[i].desc);
    fprintf(f,
            "\n"
            "  --imatrix FILE              importance matrix from llama-imatrix (GGUF or legacy .dat)\n"
            "  --pure                      no mixes: every quantizable tensor gets TYPE's base type\n"
            "  --output-tensor-type T      type of output.weight (ggml name: q8_0, f16, q6_K, ...)\n"
            "  --token-embedding-type T    type of token_embd.weight\n"
            "  --leave-output-tensor       keep output.weight as it is\n"
            "  --allow-requantize          accept already-quantized input tensors (quality suffers)\n"
            "  -t, --threads N             threads (also the optional 4th positional argument, as\n"
            "                              llama-quantize takes it); the output does not depend on it\n"
            "  --json                      one JSON object on stdout instead of the table\n"
            "  -q, --quiet                 no table, warnings or progress\n"
            "  -h, --help\n"
            "\n"
            "Output is written to OUT.tmp.<pid>, fsync'd and renamed: a refused or failed run leaves\n"
            "no file. Exit codes: 0 ok, 1 failure (one line naming the file), 2 usage error.\n");
}

#define USAGE_ERR(...)                                         \
    do {                                                       \
        fprintf(stderr, "anvil quantize: " __VA_ARGS__);       \
        fprintf(stderr, " (see anvil quantize --help)\n");     \
        return 2;                                              \
    } while (0)

/* A ggml tensor type name for --output-tensor-type / --token-embedding-type. */
static int tensor_type(const char *s) {
    int t = av_dtype_from_name(s);
    if (t < 0 || !q_can_quantize((av_dtype)t) || t == AV_Q8_1 || t == AV_Q8_K) return -1;
    return t;
}

static double mib(uint64_t b) { return b / 1048576.0; }

static int has_ext(const char *p, const char *e) {
    size_t n = strlen(p), k = strlen(e);
    return n >= k && !strcmp(p + n - k, e);
}

/* --int8: per-channel INT8 into a safetensors or PyTorch file */
static int run_int8(const char *in, const char *out, int asym, int quiet, int as_json) {
    int pt = has_ext(out, ".pt") || has_ext(out, ".pth");
    if (!pt && !has_ext(out, ".safetensors")) {
        fprintf(stderr, "anvil quantize: %s: --int8 writes .safetensors or .pt/.pth (GGUF has block types: "
                        "use Q8_0)\n", out);
        return 2;
    }
    av_err err = { 0 };
    av_model *m = NULL, *q = NULL;
    int rc = av_model_read(in, &m, &err);
    if (!rc) rc = int8_convert(m, asym, &q, &err);
    if (!rc) rc = pt ? pt_write(q, out, NULL, NULL, &err) : st_write(q, out, NULL, NULL, &err);
    if (rc) {
        fprintf(stderr, "anvil quantize: %s\n", err.msg);
        av_model_free(q);
        av_model_free(m);
        return 1;
    }
    uint64_t bytes = 0;
    for (size_t i = 0; i < q->n_tensors; i++) {
        int ok;
        bytes += av_tensor_nbytes(&q->tensors[i], &ok);
    }
    if (as_json)
        printf("{\"input\":\"%s\",\"output\":\"%s\",\"int8\":\"%s\",\"n_tensors\":%zu,\"bytes\":%llu}\n", in,
               out, asym ? "asym" : "sym", q->n_tensors, (unsigned long long)bytes);
    else if (!quiet)
        fprintf(stderr, "anvil quantize: %s -> %s: per-channel INT8 (%s), %zu tensors, %.2f MiB\n", in, out,
                asym ? "asym" : "sym", q->n_tensors, bytes / 1048576.0);
    av_model_free(q);
    av_model_free(m);
    return 0;
}

int main(int argc, char **argv) {
    const char *pos[4] = { 0 }, *imatrix_path = NULL, *out_type_s = NULL, *embd_type_s = NULL, *int8_s = NULL;
    int npos = 0, as_json = 0, quiet = 0, pure = 0, leave_output = 0, allow_requant = 0, threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        else if (!strcmp(a, "--json")) as_json = 1;
        else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) quiet = 1;
        else if (!strcmp(a, "--pure")) pure = 1;
        else if (!strcmp(a, "--leave-output-tensor")) leave_output = 1;
        else if (!strcmp(a, "--allow-requantize")) allow_requant = 1;
        else if (!strcmp(a, "--imatrix") || !strcmp(a, "--output-tensor-type") || !strcmp(a, "--int8") ||
                 !strcmp(a, "--token-embedding-type") || !strcmp(a, "-t") || !strcmp(a, "--threads")) {
            if (i + 1 >= argc) USAGE_ERR("%s needs a value", a);
            const char *v = argv[++i];
            if (!strcmp(a, "--imatrix")) imatrix_path = v;
            else if (!strcmp(a, "--int8")) int8_s = v;
            else if (!strcmp(a, "--output-tensor-type")) out_type_s = v;
            else if (!strcmp(a, "--token-embedding-type")) embd_type_s = v;
            else if (av_parse_int(v, 1, 4096, &threads)) USAGE_ERR("%s '%s' is not a thread count in 1..4096", a, v);
        } else if (a[0] == '-' && a[1]) {
            USAGE_ERR("unknown option '%s'", a);
        } else if (npos < 4) {
            pos[npos++] = a;
        } else {
            USAGE_ERR("unexpected argument '%s'", a);
        }
    }
    if (int8_s) {
        if (strcmp(int8_s, "sym") && strcmp(int8_s, "asym")) USAGE_ERR("--int8 '%s' is not sym or asym", int8_s);
        if (npos != 2) USAGE_ERR("--int8 takes IN and OUT (no TYPE)");
        return run_int8(pos[0], pos[1], !strcmp(int8_s, "asym"), quiet, as_json);
    }
    if (npos < 3) USAGE_ERR("need IN, OUT and TYPE");
    const char *in = pos[0], *out = pos[1], *type_s = pos[2];
    if (npos == 4 && av_parse_int(pos[3], 1, 4096, &threads))
        USAGE_ERR("NTHREADS '%s' is not a thread count in 1..4096", pos[3]);
    const q_ftype_info *ft = q_ftype_from_name(type_s);
    if (!ft) {
        size_t n;
        const q_ftype_info *l = q_ftype_list(&n);
        char names[512] = "";
        for (size_t i = 0; i < n; i++) {
            strncat(names, l[i].name, sizeof names - strlen(names) - 2);
            if (i + 1 < n) strncat(names, " ", sizeof names - strlen(names) - 1);
        }
        USAGE_ERR("unknown type '%s'; one of: %s", type_s, names);
    }
    int out_type = -1, embd_type = -1;
    if (out_type_s && (out_type = tensor_type(out_type_s)) < 0)
        USAGE_ERR("--output-tensor-type '%s' is not a tensor type (f32 f16 bf16 q4_0 ... q6_K)", out_type_s);
    if (embd_type_s && (embd_type = tensor_type(embd_type_s)) < 0)
        USAGE_ERR("--token-embedding-type '%s' is not a tensor type (f32 f16 bf16 q4_0 ... q6_K)", embd_type_s);
    if (threads > 0) omp_set_num_threads(threads);

    av_err err = { 0 };
    av_model *m = NULL;
    q_imatrix *im = NULL;
    q_plan plan = { 0 };
    double t0 = av_now();
    int rc;
    if ((rc = gguf_read(in, &m, &err))) goto fail;
    if (imatrix_path && (rc = q_imatrix_read(imatrix_path, &im, &err))) goto fail;

    av_bar bar;
    av_bar_init(&bar, quiet || as_json ? NULL : stderr, "quantize", 0);
    q_model_opts qo = { .plan = { .pure = pure, .leave_output = leave_output, .output_type = out_type,
                                  .token_embd_type = embd_type },
                        .imatrix = im, .imatrix_path = imatrix_path, .allow_requantize = allow_requant,
                        .progress = av_bar_update, .ud = &bar };
    uint64_t in_bytes = 0;
    int64_t n_elem = 0;
    for (size_t i = 0; i < m->n_tensors; i++) {
        int ok;
        in_bytes += av_tensor_nbytes(&m->tensors[i], &ok);
        n_elem += av_tensor_nelements(&m->tensors[i]);
    }
    if ((rc = q_model_quantize(m, in, ft, &qo, &plan, &err))) goto fail;
    av_bar_done(&bar);

    uint64_t out_bytes = 0;
    for (size_t i = 0; i < m->n_tensors; i++) {
        int ok;
        out_bytes += av_tensor_nbytes(&m->tensors[i], &ok);
    }
    if ((rc = gguf_write(m, out, NULL, NULL, &err))) goto fail;
    double secs = av_now() - t0;
    double bpw_in = n_elem ? in_bytes * 8.0 / n_elem : 0, bpw_out = n_elem ? out_bytes * 8.0 / n_elem : 0;

    size_t n_quant = 0;
    for (size_t i = 0; i < m->n_tensors; i++) n_quant += plan.items[i].quantize;
    if (as_json) {
        json_t *ts = json_array(), *fb = json_array();
        for (size_t i = 0; i < m->n_tensors; i++) {
            const av_tensor *t = &m->tensors[i];
            const q_plan_item *it = &plan.items[i];
            json_t *shape = json_array();
            for (int d = 0; d < t->n_dims; d++) json_array_append_new(shape, json_integer(t->shape[d]));
            int ok;
            json_t *e = json_pack("{s:s, s:s, s:s, s:o, s:I, s:b}", "name", t->name, "type",
                                  av_dtype_name(t->dtype), "from", av_dtype_name(it->from), "shape", shape, "bytes", (json_int_t)av_tensor_nbytes(t, &ok), "quantized",
                                  it->quantize);
            if (it->warning) json_object_set_new(e, "fallback", json_string(it->warning));
            json_array_append_new(ts, e);
            if (it->warning) json_array_append_new(fb, json_string(it->warning));
        }
        json_t *j = json_pack("{s:s, s:s, s:s, s:i, s:o, s:o, s:I, s:I, s:i, s:I, s:I, s:f, s:f, s:f, s:f, s:o, s:f}",
                              "input", in, "output", out, "type", ft->name, "ftype", (int)ft->ftype,
                              "imatrix", imatrix_path ? json_string(imatrix_path) : json_null(), "tensors", ts,
                              "n_tensors", (json_int_t)m->n_tensors, "n_quantized", (json_int_t)n_quant,
                              "n_fallback", plan.n_fallback, "input_bytes", (json_int_t)in_bytes,
                              "output_bytes", (json_int_t)out_bytes, "input_mib", mib(in_bytes), "size_mib",
                              mib(out_bytes), "input_bpw", bpw_in, "bpw", bpw_out, "fallbacks", fb, "seconds", secs);
        json_dumpf(j, stdout, JSON_PRESERVE_ORDER);
        putchar('\n');
        json_decref(j);
    } else if (!quiet) {
        for (size_t i = 0; i < m->n_tensors; i++)
            if (plan.items[i].warning) fprintf(stderr, "%s\n", plan.items[i].warning);
        if (plan.n_fallback)
            fprintf(stderr, "anvil quantize: WARNING: %d of %zu tensor(s) required fallback quantization\n",
                    plan.n_fallback, m->n_tensors);
        printf("%4s  %-34s %-16s %-6s %-6s %12s  %s\n", "#", "name", "shape", "from", "type", "bytes", "note");
        for (size_t i = 0; i < m->n_tensors; i++) {
            const av_tensor *t = &m->tensors[i];
            const q_plan_item *it = &plan.items[i];
            char shape[128], note[64] = "kept";
            av_shape_str(t, shape, sizeof shape);
            int ok;
            if (it->warning) snprintf(note, sizeof note, "fallback");
            else if (it->quantize) snprintf(note, sizeof note, "quantized");
            printf("%4zu  %-34s %-16s %-6s %-6s %12zu  %s\n", i + 1, t->name, shape, av_dtype_name(it->from),
                   av_dtype_name(t->dtype), av_tensor_nbytes(t, &ok), note);
        }
        printf("%s: %zu tensors, %zu quantized, %d fallback%s\n", ft->name, m->n_tensors, n_quant,
               plan.n_fallback, plan.n_fallback == 1 ? "" : "s");
        printf("model size: %8.2f MiB (%.2f bpw)\n", mib(in_bytes), bpw_in);
        printf("quant size: %8.2f MiB (%.2f bpw)\n", mib(out_bytes), bpw_out);
        fprintf(stderr, "anvil quantize: %s -> %s (%s) in %.2f s\n", in, out, ft->name, secs);
    }
    q_plan_release(&plan);
    q_imatrix_free(im);
    av_model_free(m);
    return 0;
fail: /* every message names its file */
    fprintf(stderr, "anvil quantize: %s\n", err.msg);
    q_plan_release(&plan);
    q_imatrix_free(im);
    av_model_free(m);
    return 1;
}
