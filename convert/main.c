/* anvil convert — IN -> OUT between model formats, chosen by extension.
 * read(any) -> av_model -> optional dtype change -> write(any). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "llama2c.h"
#include "progress.h"
#include "safetensors.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: anvil convert IN OUT [--tokenizer FILE] [--outtype f32|f16|bf16] [--json] [-q]\n"
            "\n"
            "Convert a model between formats, chosen by file extension:\n"
            "  IN:  .gguf, .safetensors, model.safetensors.index.json, HF folder, llama2.c .bin\n"
            "  OUT: .gguf, .safetensors\n"
            "\n"
            "  --tokenizer FILE   llama2.c tokenizer.bin for a llama2.c checkpoint (needed for GGUF output)\n"
            "  --outtype T        store weight matrices as f32, f16 or bf16 (round to nearest even);\n"
            "                     1-D tensors (norms) stay f32, as llama.cpp's converters do\n"
            "  --json             print a JSON summary on stdout\n"
            "  -q, --quiet        no progress output\n"
            "  -h, --help\n"
            "\n"
            "The output is written to OUT.tmp.<pid>, fsync'd and renamed: never half-written.\n");
}

/* Apply --outtype: matrices (n_dims >= 2) get `t`; 1-D float tensors become f32. */
static int apply_outtype(av_model *m, av_dtype t, const char *in, av_err *err) {
    for (size_t i = 0; i < m->n_tensors; i++) {
        av_tensor *x = &m->tensors[i];
        const av_dtype_traits *tr = av_dtype_traits_of(x->src_dtype);
        int is_float = x->src_dtype == AV_F32 || x->src_dtype == AV_F16 || x->src_dtype == AV_BF16 || x->src_dtype == AV_F64;
        if (!is_float) {
            if (tr && tr->is_quantized)
                return av_errf(err, AV_EUNSUPPORTED, "%s: tensor '%s' is %s; dequantizing to %s is not supported yet",
                               in, x->name, tr->name, av_dtype_name(t));
            continue; /* integer tensors are kept as they are */
        }
        x->dtype = x->n_dims >= 2 ? t : AV_F32;
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *in = NULL, *out = NULL, *tok = NULL, *outtype = NULL;
    int as_json = 0, quiet = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        else if (!strcmp(a, "--json")) as_json = 1;
        else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) quiet = 1;
        else if (!strcmp(a, "--tokenizer") || !strcmp(a, "--outtype")) {
            if (i + 1 >= argc) { fprintf(stderr, "anvil convert: %s needs a value\n", a); usage(stderr); return 2; }
            if (!strcmp(a, "--tokenizer")) tok = argv[++i]; else outtype = argv[++i];
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "anvil convert: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        } else if (!in) in = a;
        else if (!out) out = a;
        else { fprintf(stderr, "anvil convert: unexpected argument '%s'\n", a); usage(stderr); return 2; }
    }
    if (!in || !out) { usage(stderr); return 2; }
    int out_t = -1;
    if (outtype) {
        out_t = av_dtype_from_name(outtype);
        if (out_t != AV_F32 && out_t != AV_F16 && out_t != AV_BF16) {
            fprintf(stderr, "anvil convert: --outtype '%s' is not one of f32, f16, bf16\n", outtype);
            return 2;
        }
    }
    int to_gguf = av_has_ext(out, ".gguf"), to_st = av_has_ext(out, ".safetensors");
    if (!to_gguf && !to_st) {
        fprintf(stderr, "anvil convert: cannot tell the output format of '%s' (use .gguf or .safetensors)\n", out);
        return 2;
    }
    av_format in_fmt = av_detect_format(in);
    if (tok && in_fmt != AV_FMT_LLAMA2C) {
        fprintf(stderr, "anvil convert: --tokenizer applies to llama2.c checkpoints only\n");
        return 2;
    }
    if (in_fmt == AV_FMT_LLAMA2C && to_gguf && !tok) {
        fprintf(stderr, "anvil convert: %s: llama2.c checkpoints carry no vocabulary; pass --tokenizer tokenizer.bin\n", in);
        return 2;
    }

    av_err err = { 0 };
    av_model *m = NULL;
    double t0 = av_now();
    int rc = in_fmt == AV_FMT_LLAMA2C ? l2c_read(in, tok, &m, &err) : av_model_read(in, &m, &err);
    if (rc) { fprintf(stderr, "anvil convert: %s\n", err.msg); return 1; }
    if (out_t >= 0 && (rc = apply_outtype(m, (av_dtype)out_t, in, &err))) goto fail;

    uint64_t total = 0;
    for (size_t i = 0; i < m->n_tensors; i++) {
        int ok;
        total += av_tensor_nbytes(&m->tensors[i], &ok);
    }
    av_bar bar;
    av_bar_init(&bar, quiet ? NULL : stderr, "convert", total);
    rc = to_gguf ? gguf_write(m, out, av_bar_update, &bar, &err) : st_write(m, out, av_bar_update, &bar, &err);
    if (rc) goto fail;
    av_bar_done(&bar);
    double secs = av_now() - t0;
    if (as_json) {
        json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:f}", "input", in, "input_format",
                              av_format_name(m->format), "output", out, "output_format", to_gguf ? "gguf" : "safetensors",
                              "n_tensors", (json_int_t)m->n_tensors, "n_params", (json_int_t)av_model_nparams(m),
                              "tensor_bytes", (json_int_t)total, "seconds", secs);
        json_dumpf(j, stdout, JSON_PRESERVE_ORDER);
        putchar('\n');
        json_decref(j);
    } else if (!quiet) {
        fprintf(stderr, "anvil convert: %s (%s) -> %s: %zu tensors, %.2f MiB in %.2f s\n", in, av_format_name(m->format),
                out, m->n_tensors, total / 1048576.0, secs);
    }
    av_model_free(m);
    return 0;
fail:
    fprintf(stderr, "anvil convert: %s\n", err.msg);
    av_model_free(m);
    return 1;
}
