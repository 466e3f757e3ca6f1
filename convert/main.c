/* anvil convert — IN -> OUT between model formats, chosen by extension.
 * read(any) -> av_model -> optional dtype change -> write(any). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/stat.h>
#include <unistd.h>

#include "gguf.h"
#include "hf.h"
#include "lora.h"
#include "llama2c.h"
#include "onnx.h"
#include "progress.h"
#include "safetensors.h"
#include "stream.h"
#include "tokenizer.h"
#include "torchpt.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: anvil convert IN OUT [--outtype f32|f16|bf16] [--tokenizer FILE] [--config FILE]\n"
            "                            [--key K] [--hf-folder] [--opset N] [--kv-cache] [--external-data]\n"
            "                            [--int8 sym|asym]\n"
            "                            [--json] [-q]\n"
            "\n"
            "Convert a model between formats, chosen by file extension:\n"
            "  IN:  .gguf, .safetensors, model.safetensors.index.json, HF folder, llama2.c .bin,\n"
            "       PyTorch .pt/.pth/.bin (torch.save zip or legacy), .onnx (Llama decoder graphs:\n"
            "       anvil's export or torch.onnx.export of HF Llama)\n"
            "  OUT: .gguf, .safetensors, .pt/.pth (torch.save zip), .onnx (Llama decoder graph), HF folder (OUT ending in '/',\n"
            "       an existing empty folder, or --hf-folder): config.json, model.safetensors, tokenizer.json\n"
            "\n"
            "  --outtype T        store weight matrices as f32, f16 or bf16 (round to nearest even);\n"
            "                     1-D tensors (norms) stay f32, as llama.cpp's converters do\n"
            "  --tokenizer FILE   vocabulary to embed (llama2.c tokenizer.bin, tokenizer.json, .gguf, .tiktoken);\n"
            "                     needed for GGUF output from a llama2.c checkpoint\n"
            "  --config FILE      HF config.json for IN with HF tensor names, when it is not beside IN\n"
            "  --base MODEL       LoRA adapters (PEFT folder <-> GGUF adapter): the base model, for the\n"
            "                     head counts of the q/k permutation (or --config with the HF config)\n"
            "  --key K            PyTorch input: the state dict inside a checkpoint dict (\"model\", \"model.ema\")\n"
            "  --hf-folder        OUT is an HF folder whatever its name\n"
            "  --opset N          .onnx output: ai.onnx opset (default 17)\n"
            "  --kv-cache         .onnx output: past_key_values.N.key/value inputs, present.N.key/value outputs\n"
            "  --external-data    .onnx output: weights in OUT.data beside it (always past 2 GB)\n"
            "  --int8 sym|asym    .onnx output: weight matrices as int8 (sym, zero point 0) or uint8 (asym)\n"
            "                     per output channel, each through a DequantizeLinear; norms stay f32\n"
            "  --json             print a JSON summary on stdout\n"
            "  -q, --quiet        no progress output\n"
            "  -h, --help\n"
            "\n"
            "HF tensor names (model.layers.N...) become llama.cpp's (blk.N...) with the q/k rows\n"
            "un-permuted for GGUF output and HF folders; the reverse for HF folder output.\n"
            "Outputs are written to OUT.tmp.<pid> (a folder: OUT.tmp.<pid>/), fsync'd and renamed:\n"
            "never half-written. Tensors are converted one at a time from the mmapped input.\n");
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

enum { OUT_GGUF, OUT_ST, OUT_PT, OUT_HF, OUT_ONNX };
static const char *out_names[] = { "gguf", "safetensors", "pytorch", "hf-folder", "onnx" };

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The folder a model path lives in (the path itself for a folder). */
static void folder_of(const char *path, char *buf, size_t n) {
    if (is_dir(path)) { snprintf(buf, n, "%s", path); return; }
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(buf, n, ".");
    else snprintf(buf, n, "%.*s", (int)(slash - path) > 0 ? (int)(slash - path) : 1, path);
}

/* Vocabulary into GGUF tokenizer.ggml.* keys from a tokenizer file. */
static int embed_tokenizer(av_model *m, const char *file, av_err *err) {
    tok *t = NULL;
    int rc = tok_load(file, &t, err);
    if (!rc) rc = tok_to_kv(t, &m->kv, err);
    tok_free(t);
    return rc;
}

/* Bytes the GGUF writer counts in its total (alignment padding) but never in done. */
static uint64_t gguf_pad_sum(const av_model *m) {
    uint64_t al = 32, sum = 0;
    const av_kv *a = av_kvs_find(&m->kv, "general.alignment");
    if (a && a->val.type == AV_KV_U32 && a->val.u) al = a->val.u;
    for (size_t i = 0; i < m->n_tensors; i++) {
        int ok;
        uint64_t nb = av_tensor_nbytes(&m->tensors[i], &ok);
        sum += (al - nb % al) % al;
    }
    return sum;
}

/* LoRA adapters: PEFT folder <-> llama.cpp GGUF adapter; head counts from
 * --base MODEL or --config (HF config.json). */
static int convert_adapter(const char *in, const char *out, const char *base, const char *config, int quiet) {
    av_err err = { 0 };
    json_int_t nh = 0, nkv = 0;
    if (!base && config) {
        json_error_t je;
        json_t *j = json_load_file(config, 0, &je);
        if (!j || json_unpack(j, "{s:I, s?I}", "num_attention_heads", &nh, "num_key_value_heads", &nkv)) {
            fprintf(stderr, "anvil convert: %s: no num_attention_heads%s%s\n", config, j ? "" : ": ", j ? "" : je.text);
            json_decref(j);
            return 1;
        }
        json_decref(j);
    }
    size_t n = 0;
    double t0 = av_now();
    if (lora_convert(in, out, base, (int64_t)nh, (int64_t)nkv, &n, &err)) {
        fprintf(stderr, "anvil convert: %s\n", err.msg);
        return 1;
    }
    if (!quiet) fprintf(stderr, "anvil convert: LoRA adapter %s -> %s: %zu tensors in %.2f s\n", in, out, n, av_now() - t0);
    return 0;
}

int main(int argc, char **argv) {
    const char *in = NULL, *out = NULL, *tokf = NULL, *outtype = NULL, *config = NULL, *key = NULL, *base = NULL;
    int as_json = 0, quiet = 0, hf_folder = 0;
    onnx_write_opts oo = { 0 };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        else if (!strcmp(a, "--json")) as_json = 1;
        else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) quiet = 1;
        else if (!strcmp(a, "--hf-folder")) hf_folder = 1;
        else if (!strcmp(a, "--kv-cache")) oo.kv_cache = 1;
        else if (!strcmp(a, "--external-data")) oo.external = 1;
        else if (!strcmp(a, "--int8")) {
            const char *v = i + 1 < argc ? argv[i + 1] : "";
            if (strcmp(v, "sym") && strcmp(v, "asym")) {
                fprintf(stderr, "anvil convert: --int8 needs sym or asym\n");
                return 2;
            }
            oo.int8 = !strcmp(v, "asym") ? 2 : 1;
            i++;
        }
        else if (!strcmp(a, "--opset")) {
            if (i + 1 >= argc || av_parse_int(argv[i + 1], 13, ONNX_MAX_OPSET, &oo.opset)) {
                fprintf(stderr, "anvil convert: --opset needs a number from 13 to %d\n", ONNX_MAX_OPSET);
                return 2;
            }
            i++;
        }
        else if (!strcmp(a, "--tokenizer") || !strcmp(a, "--outtype") || !strcmp(a, "--config") || !strcmp(a, "--key") ||
                 !strcmp(a, "--base")) {
            if (i + 1 >= argc) { fprintf(stderr, "anvil convert: %s needs a value\n", a); usage(stderr); return 2; }
            const char *v = argv[++i];
            if (!strcmp(a, "--tokenizer")) tokf = v;
            else if (!strcmp(a, "--outtype")) outtype = v;
            else if (!strcmp(a, "--config")) config = v;
            else if (!strcmp(a, "--base")) base = v;
            else key = v;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "anvil convert: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        } else if (!in) in = a;
        else if (!out) out = a;
        else { fprintf(stderr, "anvil convert: unexpected argument '%s'\n", a); usage(stderr); return 2; }
    }
    if (!in || !out) { usage(stderr); return 2; }
    /* LoRA adapters: PEFT folder -> .gguf, GGUF adapter -> folder (a GGUF adapter to a
     * .safetensors/.pt file stays a plain tensor conversion) */
    if (lora_is_adapter(in) && (is_dir(in) || (!av_has_ext(out, ".gguf") && !av_has_ext(out, ".safetensors") &&
                                               !av_has_ext(out, ".pt") && !av_has_ext(out, ".pth"))))
        return convert_adapter(in, out, base, config, quiet);
    int out_t = -1;
    if (outtype) {
        out_t = av_dtype_from_name(outtype);
        if (out_t != AV_F32 && out_t != AV_F16 && out_t != AV_BF16) {
            fprintf(stderr, "anvil convert: --outtype '%s' is not one of f32, f16, bf16\n", outtype);
            return 2;
        }
    }
    size_t ol = strlen(out);
    int kind = hf_folder || (ol && out[ol - 1] == '/') || is_dir(out) ? OUT_HF
             : av_has_ext(out, ".gguf") ? OUT_GGUF
             : av_has_ext(out, ".safetensors") ? OUT_ST
             : av_has_ext(out, ".onnx") ? OUT_ONNX
             : av_has_ext(out, ".pt") || av_has_ext(out, ".pth") ? OUT_PT : -1;
    if (kind < 0) {
        fprintf(stderr, "anvil convert: cannot tell the output format of '%s' (use .gguf, .safetensors, .pt, .pth, .onnx or a folder/)\n", out);
        return 2;
    }
    av_format in_fmt = av_detect_format(in);
    if (key && in_fmt != AV_FMT_TORCH) {
        fprintf(stderr, "anvil convert: --key applies to PyTorch checkpoints only\n");
        return 2;
    }
    if (in_fmt == AV_FMT_LLAMA2C && kind == OUT_GGUF && !tokf) {
        fprintf(stderr, "anvil convert: %s: llama2.c checkpoints carry no vocabulary; pass --tokenizer tokenizer.bin\n", in);
        return 2;
    }

    av_err err = { 0 };
    av_model *m = NULL;
    hf_perm_queue q = { 0 };
    cv_stream cs = { 0 };
    double t0 = av_now();
    int rc;
    if (in_fmt == AV_FMT_LLAMA2C) {
        rc = l2c_read(in, tokf, &m, &err);
    } else if (in_fmt == AV_FMT_TORCH) {
        pt_read_opts po = { .key = key };
        rc = pt_read(in, &po, &m, &err);
    } else {
        rc = av_model_read(in, &m, &err);
    }
    if (rc) { fprintf(stderr, "anvil convert: %s\n", err.msg); return 1; }
    if (tokf && in_fmt != AV_FMT_LLAMA2C && (rc = embed_tokenizer(m, tokf, &err))) goto fail;

    /* HF names -> GGUF names and layout (for GGUF and HF-folder outputs, or when --config says so) */
    if ((oo.opset || oo.kv_cache || oo.external || oo.int8) && kind != OUT_ONNX) {
        fprintf(stderr, "anvil convert: --opset, --kv-cache, --external-data and --int8 apply to .onnx output only\n");
        av_model_free(m);
        return 2;
    }
    if (hf_is_llama(m) && (kind == OUT_GGUF || kind == OUT_HF || kind == OUT_ONNX || config)) {
        if (!config) {
            char dir[4096], cfg[4200];
            folder_of(in, dir, sizeof dir);
            snprintf(cfg, sizeof cfg, "%s/config.json", dir);
            struct stat st;
            if (stat(cfg, &st) != 0) {
                rc = av_errf(&err, AV_EIO, "%s: HF tensor names but no %s (pass --config config.json)", in, cfg);
                goto fail;
            }
        }
        if ((rc = hf_normalize_ex(m, in, config, &q, &err))) goto fail;
        /* a tokenizer.json beside an HF checkpoint becomes the GGUF vocabulary */
        if (!tokf && !av_kvs_find(&m->kv, "tokenizer.ggml.tokens")) {
            char dir[4096], tj[4200];
            folder_of(config ? config : in, dir, sizeof dir);
            snprintf(tj, sizeof tj, "%s/tokenizer.json", dir);
            struct stat st;
            if (stat(tj, &st) == 0 && (rc = embed_tokenizer(m, tj, &err))) goto fail;
        }
    } else if (config) {
        rc = av_errf(&err, AV_EINVAL, "%s: --config given but the tensors do not have HF Llama names", in);
        goto fail;
    }
    if (kind == OUT_HF && (rc = hf_gguf_to_hf(m, &q, &err))) {
        av_err_prefix(&err, in);
        goto fail;
    }
    if (out_t >= 0 && (rc = apply_outtype(m, (av_dtype)out_t, in, &err))) goto fail;

    uint64_t total = 0;
    for (size_t i = 0; i < m->n_tensors; i++) {
        int ok;
        total += av_tensor_nbytes(&m->tensors[i], &ok);
    }
    av_bar bar;
    av_bar_init(&bar, quiet ? NULL : stderr, "convert", total);
    if ((rc = cv_stream_init(&cs, m, &q, kind == OUT_GGUF ? gguf_pad_sum(m) : 0, &bar, &err))) goto fail;
    hf_folder_info hfi = { 0 };
    switch (kind) {
    case OUT_GGUF: rc = gguf_write(m, out, cv_stream_progress, &cs, &err); break;
    case OUT_ST: rc = st_write(m, out, cv_stream_progress, &cs, &err); break;
    case OUT_PT: rc = pt_write(m, out, cv_stream_progress, &cs, &err); break;
    case OUT_ONNX:
        for (size_t i = 0; i < q.n && !rc; i++) rc = hf_perm_apply(m, &q.v[i], &err); /* whole model at once */
        if (!rc) rc = onnx_write(m, out, &oo, &err);
        break;
    default: rc = hf_write_folder(m, out, cv_stream_progress, &cs, &hfi, &err); break;
    }
    if (rc) goto fail;
    if (cs.rc) { /* a permutation failed mid-write: the output holds unpermuted rows */
        err = cs.err;
        rc = cs.rc;
        if (kind == OUT_HF) fprintf(stderr, "anvil convert: warning: remove %s by hand\n", out);
        else unlink(out);
        goto fail;
    }
    av_bar_done(&bar);
    double secs = av_now() - t0;
    if (kind == OUT_HF && !hfi.wrote_tokenizer && hfi.note[0] && !as_json) fprintf(stderr, "anvil convert: note: %s\n", hfi.note);
    if (as_json) {
        json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:f}", "input", in, "input_format",
                              av_format_name(m->format), "output", out, "output_format", out_names[kind],
                              "n_tensors", (json_int_t)m->n_tensors, "n_params", (json_int_t)av_model_nparams(m),
                              "tensor_bytes", (json_int_t)total, "seconds", secs);
        if (kind == OUT_HF) json_object_set_new(j, "tokenizer_json", hfi.wrote_tokenizer ? json_true() : json_string(hfi.note));
        json_dumpf(j, stdout, JSON_PRESERVE_ORDER);
        putchar('\n');
        json_decref(j);
    } else if (!quiet) {
        fprintf(stderr, "anvil convert: %s (%s) -> %s: %zu tensors, %.2f MiB in %.2f s\n", in, av_format_name(m->format),
                out, m->n_tensors, total / 1048576.0, secs);
    }
    cv_stream_release(&cs);
    hf_perm_queue_release(&q);
    av_model_free(m);
    return 0;
fail:
    fprintf(stderr, "anvil convert: %s\n", err.msg);
    cv_stream_release(&cs);
    hf_perm_queue_release(&q);
    av_model_free(m);
    return 1;
}
