/* anvil lora — LoRA adapters: `merge` folds adapters (llama.cpp's GGUF
 * layout) into a base model and writes the result in any weight format. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gguf.h"
#include "hf.h"
#include "io.h"
#include "lora.h"
#include "model.h"
#include "progress.h"
#include "quant.h"
#include "safetensors.h"
#include "torchpt.h"

#define PFX "anvil lora"

static void usage(FILE *f) {
    fprintf(f,
            "usage: anvil lora merge BASE ADAPTER.gguf[:SCALE]... -o OUT [--outtype T] [--json] [-q]\n"
            "       anvil lora convert IN OUT --base MODEL   (or --heads H [--kv-heads K])\n"
            "\n"
            "convert: a PEFT folder (adapter_config.json + adapter_model.safetensors) -> llama.cpp's\n"
            "  GGUF adapter (OUT.gguf), or a GGUF adapter -> a PEFT folder (OUT/). lora_B rows of\n"
            "  q_proj/k_proj are permuted between HF's and GGUF's RoPE layouts with the base's head\n"
            "  counts (from MODEL: any format anvil reads). `anvil convert` does the same.\n"
            "\n"
            "merge: W' = W + SCALE * alpha/r * B A for every target of every adapter (llama.cpp's\n"
            "  GGUF adapter layout: general.type adapter, adapter.lora.alpha, <tensor>.lora_a/.lora_b;\n"
            "  without alpha the factor is SCALE, as llama.cpp). BASE: .gguf, .safetensors, .pt or\n"
            "  an HF folder, float or quantized (merged tensors become float; the rest is copied).\n"
            "  OUT by extension: .gguf, .safetensors, .pt; a folder path ending in '/' is an HF folder.\n"
            "  Same result as llama-export-lora. `anvil run/eval --lora` need no merge: they apply\n"
            "  adapters at run time, beside the base's weights as stored (quantized ones too).\n"
            "\n"
            "  -o, --output OUT   output file (written atomically)\n"
            "  --outtype T        float matrices as f32 (default), f16 or bf16; or, for .gguf, a\n"
            "                     quantized file type as `anvil quantize` takes it (q8_0, q4_0, q4_k_m,\n"
            "                     ...: the same bytes as merging to f32, then anvil quantize)\n"
            "  --json             one JSON summary on stdout\n"
            "  -q, --quiet        no summary on stderr\n"
            "\n"
            "Exit codes: 0 ok, 1 failure (bad adapter, adapter for another base), 2 usage error.\n");
}

#define USAGE_ERR(...) do { fprintf(stderr, PFX ": " __VA_ARGS__); fputc('\n', stderr); return 2; } while (0)

static int merge(int argc, char **argv) {
    const char *base = NULL, *out = NULL, *outtype = NULL;
    const char *specs[64];
    int n = 0, json = 0, quiet = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        else if ((!strcmp(a, "-o") || !strcmp(a, "--output")) && i + 1 < argc) out = argv[++i];
        else if (!strcmp(a, "--outtype") && i + 1 < argc) outtype = argv[++i];
        else if (!strcmp(a, "--json")) json = 1;
        else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) quiet = 1;
        else if (a[0] == '-' && a[1]) USAGE_ERR("unknown option or missing value '%s'", a);
        else if (!base) base = a;
        else if (n < 64) specs[n++] = a;
        else USAGE_ERR("at most 64 adapters");
    }
    if (!base || !n) USAGE_ERR("merge wants BASE and at least one ADAPTER (see --help)");
    if (!out) USAGE_ERR("-o OUT is required");
    av_dtype ot = AV_F32;
    const q_ftype_info *qft = NULL; /* a quantized file type: anvil quantize's names */
    if (outtype) {
        if (!strcasecmp(outtype, "f32")) ot = AV_F32;
        else if (!strcasecmp(outtype, "f16")) ot = AV_F16;
        else if (!strcasecmp(outtype, "bf16")) ot = AV_BF16;
        else if (!(qft = q_ftype_from_name(outtype)) || !av_dtype_traits_of(qft->base)->is_quantized)
            USAGE_ERR("--outtype '%s': f32, f16, bf16 or a quantized type of anvil quantize (q8_0, q4_k_m, ...)",
                      outtype);
    }
    size_t ol = strlen(out);
    int to_hf = ol && out[ol - 1] == '/';
    if (!to_hf && !av_has_ext(out, ".gguf") && !av_has_ext(out, ".safetensors") && !av_has_ext(out, ".pt") &&
        !av_has_ext(out, ".pth"))
        USAGE_ERR("cannot tell the output format of '%s' (.gguf, .safetensors, .pt, or a folder/)", out);
    if (qft && !av_has_ext(out, ".gguf")) USAGE_ERR("--outtype %s needs a .gguf output (block types)", outtype);
    /* scales are checked before any file is read */
    char *paths[64] = { 0 };
    float scales[64];
    lora_adapter *ads[64] = { 0 };
    av_model *m = NULL;
    av_err err = { 0 };
    int code = 1, rc;
    for (int i = 0; i < n; i++)
        if (lora_parse_spec(specs[i], &paths[i], &scales[i], &err)) {
            fprintf(stderr, PFX ": %s\n", err.msg);
            code = 2;
            goto done;
        }
    double t0 = av_now();
    if ((rc = av_model_read(base, &m, &err)) || (rc = hf_normalize(m, base, &err))) goto fail;
    for (int i = 0; i < n; i++)
        if ((rc = lora_read(paths[i], &ads[i], &err))) goto fail;
    if ((rc = lora_merge(m, ads, scales, n, &err))) goto fail;
    for (size_t i = 0; i < m->n_tensors; i++) {
        av_tensor *t = &m->tensors[i];
        if (qft) t->dtype = t->src_dtype; /* the quantizer plans from the data as they are */
        else if (t->n_dims >= 2 && (t->src_dtype == AV_F32 || t->src_dtype == AV_F16 || t->src_dtype == AV_BF16))
            t->dtype = ot;
    }
    if (qft) {
        /* as `anvil quantize` on the merge; a quantized base's other tensors may be requantized */
        q_plan plan = { 0 };
        q_model_opts qo = { .plan = { .output_type = -1, .token_embd_type = -1 }, .allow_requantize = 1 };
        rc = q_model_quantize(m, base, qft, &qo, &plan, &err);
        q_plan_release(&plan);
        if (rc) goto fail;
    }
    if (to_hf) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%.*s", (int)ol - 1, out);
        if (!(rc = hf_gguf_to_hf(m, NULL, &err))) rc = hf_write_folder(m, dir, NULL, NULL, NULL, &err);
    } else if (av_has_ext(out, ".gguf")) rc = gguf_write(m, out, NULL, NULL, &err);
    else if (av_has_ext(out, ".safetensors")) rc = st_write(m, out, NULL, NULL, &err);
    else rc = pt_write(m, out, NULL, NULL, &err);
    if (rc) goto fail;
    size_t targets = 0;
    for (int i = 0; i < n; i++) targets += ads[i]->n_pairs;
    if (json)
        printf("{\"output\":\"%s\",\"adapters\":%d,\"merged_tensors\":%zu,\"seconds\":%.3f}\n", out, n, targets,
               av_now() - t0);
    if (!quiet)
        fprintf(stderr, PFX ": merged %d adapter%s (%zu tensors) into %s -> %s in %.2f s\n", n, n > 1 ? "s" : "",
                targets, base, out, av_now() - t0);
    code = 0;
    goto done;
fail:
    fprintf(stderr, PFX ": %s\n", err.msg);
done:
    for (int i = 0; i < n; i++) { free(paths[i]); lora_free(ads[i]); }
    av_model_free(m);
    return code;
}

static int lora_convert_cli(const char *pfx, int argc, char **argv) {
    const char *in = NULL, *out = NULL, *base = NULL;
    long heads = 0, kv = 0;
    int quiet = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        char *end;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        else if (!strcmp(a, "--base") && i + 1 < argc) base = argv[++i];
        else if ((!strcmp(a, "--heads") || !strcmp(a, "--kv-heads")) && i + 1 < argc) {
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 1 || v > 1 << 16) USAGE_ERR("%s wants a positive integer", a);
            *(!strcmp(a, "--heads") ? &heads : &kv) = v;
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) quiet = 1;
        else if (a[0] == '-' && a[1]) USAGE_ERR("unknown option or missing value '%s'", a);
        else if (!in) in = a;
        else if (!out) out = a;
        else USAGE_ERR("convert takes IN and OUT");
    }
    if (!in || !out) USAGE_ERR("convert wants IN and OUT (see --help)");
    av_err err = { 0 };
    size_t n = 0;
    double t0 = av_now();
    if (lora_convert(in, out, base, heads, kv, &n, &err)) {
        fprintf(stderr, "%s: %s\n", pfx, err.msg);
        return 1;
    }
    if (!quiet) fprintf(stderr, "%s: adapter %s -> %s: %zu tensors in %.2f s\n", pfx, in, out, n, av_now() - t0);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) { usage(stdout); return 0; }
    if (argc >= 2 && !strcmp(argv[1], "merge")) return merge(argc - 2, argv + 2);
    if (argc >= 2 && !strcmp(argv[1], "convert")) return lora_convert_cli(PFX, argc - 2, argv + 2);
    fprintf(stderr, PFX ": %s (see --help)\n", argc < 2 ? "no command" : "unknown command; merge or convert");
    return 2;
}
