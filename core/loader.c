/* loader.c — model path -> model + llm + tokenizer (see loader.h). */
#include "loader.h"

#include "lora.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hf.h"
#include "llama2c.h"

/* An HF folder's vocabulary: tokenizer.json beside the weights. */
static int folder_tokenizer(const char *model, tok **t, av_err *err) {
    char path[4096];
    struct stat st;
    if (stat(model, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(path, sizeof path, "%s/tokenizer.json", model);
    } else {
        const char *slash = strrchr(model, '/');
        snprintf(path, sizeof path, "%.*s/tokenizer.json", slash ? (int)(slash - model) : 1,
                 slash ? model : ".");
    }
    if (access(path, R_OK) != 0)
        return av_errf(err, AV_ENOTFOUND,
                       "%s: no vocabulary (no tokenizer.json beside it); pass --tokenizer", model);
    return tok_load(path, t, err);
}

/* Adapters applied to the forward pass at run time (base weights untouched). */
static int attach_loras(llm *l, const av_model *m, const char *const *specs, int n, av_err *err) {
    lora_adapter **ads = calloc((size_t)n + 1, sizeof *ads);
    float *scales = calloc((size_t)n + 1, sizeof *scales);
    int rc = ads && scales ? 0 : av_errf(err, AV_ENOMEM, "out of memory");
    for (int i = 0; i < n && !rc; i++) {
        char *p = NULL;
        if (!(rc = lora_parse_spec(specs[i], &p, &scales[i], err))) rc = lora_read(p, &ads[i], err);
        free(p);
    }
    if (!rc) rc = lora_attach(l, m, ads, scales, n, err);
    for (int i = 0; ads && i < n; i++) lora_free(ads[i]);
    free(ads);
    free(scales);
    return rc;
}

int av_load(const char *path, const char *tokenizer_path, int need_tok, av_loaded *out,
            av_err *err) {
    return av_load_lora(path, tokenizer_path, need_tok, NULL, 0, out, err);
}

int av_load_lora(const char *path, const char *tokenizer_path, int need_tok, const char *const *loras,
                 int n_loras, av_loaded *out, av_err *err) {
    memset(out, 0, sizeof *out);
    av_format fmt = av_detect_format(path);
    int rc;
    if (fmt == AV_FMT_LLAMA2C) {
        if (need_tok && !tokenizer_path) {
            rc = av_errf(err, AV_ENOTFOUND,
                         "%s: llama2.c checkpoints carry no vocabulary; pass --tokenizer", path);
            goto fail;
        }
        rc = l2c_read(path, need_tok ? tokenizer_path : NULL, &out->model, err);
    } else if ((rc = av_model_read(path, &out->model, err)) == 0) {
        rc = hf_normalize(out->model, path, err);
    }
    if (rc || (rc = llm_new(out->model, path, &out->llm, err))) goto fail;
    if (n_loras && (rc = attach_loras(out->llm, out->model, loras, n_loras, err))) goto fail;
    if (!need_tok) return 0;
    if (tokenizer_path && fmt != AV_FMT_LLAMA2C) rc = tok_load(tokenizer_path, &out->tok, err);
    else if (fmt == AV_FMT_SAFETENSORS && !av_kvs_find(&out->model->kv, "tokenizer.ggml.model"))
        rc = folder_tokenizer(path, &out->tok, err);
    else rc = tok_from_kv(&out->model->kv, path, &out->tok, err);
    if (rc) goto fail;
    return 0;
fail:
    av_loaded_release(out);
    return rc;
}

void av_loaded_release(av_loaded *x) {
    tok_free(x->tok);
    llm_free(x->llm);
    av_model_free(x->model);
    memset(x, 0, sizeof *x);
}
