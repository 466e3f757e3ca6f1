/* hf.c — HF Llama names/config -> GGUF names/metadata (see hf.h). */
#include "hf.h"

#include <jansson.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int hf_is_llama(const av_model *m) { return av_model_find(m, "model.embed_tokens.weight") != NULL; }

/* HF per-layer suffix -> GGUF name part; permute: 1 for q (n_head), 2 for k (n_head_kv) */
static const struct { const char *hf, *gguf; int permute; } layer_names[] = {
    {"input_layernorm.weight", "attn_norm.weight", 0},
    {"self_attn.q_proj.weight", "attn_q.weight", 1},
    {"self_attn.k_proj.weight", "attn_k.weight", 2},
    {"self_attn.v_proj.weight", "attn_v.weight", 0},
    {"self_attn.o_proj.weight", "attn_output.weight", 0},
    {"post_attention_layernorm.weight", "ffn_norm.weight", 0},
    {"mlp.gate_proj.weight", "ffn_gate.weight", 0},
    {"mlp.up_proj.weight", "ffn_up.weight", 0},
    {"mlp.down_proj.weight", "ffn_down.weight", 0},
};

static const struct { const char *hf, *gguf; } top_names[] = {
    {"model.embed_tokens.weight", "token_embd.weight"},
    {"model.norm.weight", "output_norm.weight"},
    {"lm_head.weight", "output.weight"},
};

static int cfg_int(json_t *cfg, const char *path, const char *key, int required, int64_t dflt,
                   int64_t *out, av_err *err) {
    json_t *v = json_object_get(cfg, key);
    if (!v || json_is_null(v)) {
        if (required) return av_errf(err, AV_EFORMAT, "%s: missing '%s'", path, key);
        *out = dflt;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) <= 0 || json_integer_value(v) > (1 << 24))
        return av_errf(err, AV_EFORMAT, "%s: '%s' is not a positive integer", path, key);
    *out = json_integer_value(v);
    return 0;
}

static int cfg_num(json_t *cfg, const char *path, const char *key, double dflt, double *out,
                   av_err *err) {
    json_t *v = json_object_get(cfg, key);
    if (!v || json_is_null(v)) {
        *out = dflt;
        return 0;
    }
    if (!json_is_number(v) || json_number_value(v) <= 0)
        return av_errf(err, AV_EFORMAT, "%s: '%s' is not a positive number", path, key);
    *out = json_number_value(v);
    return 0;
}

/* Rows of t regrouped between HF's [n_head, 2, hd/2] and GGUF's [n_head, hd/2, 2]
 * order (llama.cpp's LlamaModel.permute and its inverse), into an owned copy. */
static int permute_rows(av_tensor *t, int64_t n_head, int to_hf, const char *path, av_err *err) {
    const av_dtype_traits *tr = av_dtype_traits_of(t->src_dtype);
    if (t->n_dims != 2 || n_head <= 0 || t->shape[0] % (2 * n_head) != 0 || !tr ||
        tr->block_size != 1)
        return av_errf(err, AV_EFORMAT, "%s: tensor '%s' cannot be split into %lld heads", path,
                       t->name, (long long)n_head);
    const int64_t rows = t->shape[0], hd = rows / n_head, half = hd / 2;
    const size_t rb = (size_t)t->shape[1] * tr->type_size;
    char *dst = malloc((size_t)rows * rb);
    if (!dst) return av_errf(err, AV_ENOMEM, "%s: out of memory", path);
    const char *src = t->data;
    for (int64_t h = 0; h < n_head; h++)
        for (int64_t j = 0; j < half; j++)
            for (int s = 0; s < 2; s++) {
                size_t gg = (size_t)(h * hd + 2 * j + s), hf = (size_t)(h * hd + s * half + j);
                memcpy(dst + (to_hf ? hf : gg) * rb, src + (to_hf ? gg : hf) * rb, rb);
            }
    free(t->owned);
    t->owned = dst;
    t->data = dst;
    return 0;
}

static int check_perm(const av_tensor *t, int64_t n_head, const char *path, av_err *err) {
    const av_dtype_traits *tr = av_dtype_traits_of(t->src_dtype);
    if (t->n_dims != 2 || n_head <= 0 || t->shape[0] % (2 * n_head) != 0 || !tr || tr->block_size != 1)
        return av_errf(err, AV_EFORMAT, "%s: tensor '%s' cannot be split into %lld heads", path, t->name,
                       (long long)n_head);
    return 0;
}

/* Permute now, or queue it when q is given (checked now either way). */
static int perm_or_queue(av_model *m, size_t i, int64_t n_head, int to_hf, hf_perm_queue *q, const char *path,
                         av_err *err) {
    int rc = check_perm(&m->tensors[i], n_head, path, err);
    if (rc) return rc;
    if (!q) return permute_rows(&m->tensors[i], n_head, to_hf, path, err);
    if (q->n == q->cap) {
        size_t nc = q->cap ? q->cap * 2 : 64;
        hf_perm *nv = realloc(q->v, nc * sizeof *nv);
        if (!nv) return av_errf(err, AV_ENOMEM, "%s: out of memory", path);
        q->v = nv;
        q->cap = nc;
    }
    q->v[q->n++] = (hf_perm){ .tensor = i, .n_head = n_head, .to_hf = to_hf };
    return 0;
}

int hf_perm_apply(av_model *m, const hf_perm *p, av_err *err) {
    if (p->tensor >= m->n_tensors) return av_errf(err, AV_EINVAL, "hf_perm_apply: no tensor %zu", p->tensor);
    return permute_rows(&m->tensors[p->tensor], p->n_head, p->to_hf, m->tensors[p->tensor].name, err);
}

void hf_perm_queue_release(hf_perm_queue *q) {
    if (!q) return;
    free(q->v);
    q->v = NULL;
    q->n = q->cap = 0;
}

static int rename_tensor(av_tensor *t, const char *name, const char *path, av_err *err) {
    char *n = strdup(name);
    if (!n) return av_errf(err, AV_ENOMEM, "%s: out of memory", path);
    free(t->name);
    t->name = n;
    return 0;
}

int hf_llama_to_gguf(av_model *m, const char *config_path, av_err *err) {
    return hf_llama_to_gguf_ex(m, config_path, NULL, err);
}

int hf_llama_to_gguf_ex(av_model *m, const char *config_path, hf_perm_queue *defer, av_err *err) {
    json_error_t je;
    json_t *cfg = json_load_file(config_path, 0, &je);
    if (!cfg)
        return av_errf(err, json_error_code(&je) == json_error_cannot_open_file ? AV_EIO : AV_EFORMAT,
                       "%s: %s (line %d)", config_path, je.text, je.line);
    int rc = 0;
    const char *mt = json_string_value(json_object_get(cfg, "model_type"));
    if (!mt || (strcmp(mt, "llama") != 0 && strcmp(mt, "mistral") != 0)) {
        rc = av_errf(err, AV_EUNSUPPORTED, "%s: model_type '%s' is not supported (llama only)",
                     config_path, mt ? mt : "(missing)");
        goto done;
    }
    json_t *rs = json_object_get(cfg, "rope_scaling");
    if (rs && !json_is_null(rs)) {
        rc = av_errf(err, AV_EUNSUPPORTED, "%s: rope_scaling is not supported yet", config_path);
        goto done;
    }
    int64_t E, L, H, HKV, F, C, HD;
    double eps, theta;
    if ((rc = cfg_int(cfg, config_path, "hidden_size", 1, 0, &E, err)) ||
        (rc = cfg_int(cfg, config_path, "num_hidden_layers", 1, 0, &L, err)) ||
        (rc = cfg_int(cfg, config_path, "num_attention_heads", 1, 0, &H, err)) ||
        (rc = cfg_int(cfg, config_path, "num_key_value_heads", 0, H, &HKV, err)) ||
        (rc = cfg_int(cfg, config_path, "intermediate_size", 1, 0, &F, err)) ||
        (rc = cfg_int(cfg, config_path, "max_position_embeddings", 0, 2048, &C, err)) ||
        (rc = cfg_int(cfg, config_path, "head_dim", 0, E / H, &HD, err)) ||
        (rc = cfg_num(cfg, config_path, "rms_norm_eps", 1e-6, &eps, err)) ||
        (rc = cfg_num(cfg, config_path, "rope_theta", 10000.0, &theta, err)))
        goto done;
    if (HD * H != E) {
        rc = av_errf(err, AV_EUNSUPPORTED, "%s: head_dim %lld x %lld heads != hidden_size %lld",
                     config_path, (long long)HD, (long long)H, (long long)E);
        goto done;
    }
    for (size_t i = 0; i < m->n_tensors && rc == 0; i++) {
        av_tensor *t = &m->tensors[i];
        for (size_t k = 0; k < sizeof top_names / sizeof *top_names; k++)
            if (strcmp(t->name, top_names[k].hf) == 0) {
                rc = rename_tensor(t, top_names[k].gguf, config_path, err);
                break;
            }
        int layer, off = 0;
        if (rc || sscanf(t->name, "model.layers.%d.%n", &layer, &off) != 1 || off == 0) continue;
        for (size_t k = 0; k < sizeof layer_names / sizeof *layer_names; k++) {
            if (strcmp(t->name + off, layer_names[k].hf) != 0) continue;
            if (layer_names[k].permute)
                rc = perm_or_queue(m, i, layer_names[k].permute == 1 ? H : HKV, 0, defer, config_path, err);
            char name[96];
            snprintf(name, sizeof name, "blk.%d.%s", layer, layer_names[k].gguf);
            if (!rc) rc = rename_tensor(t, name, config_path, err);
            break;
        }
    }
    if (rc) goto done;
    av_kvs *kv = &m->kv;
    /* rope_theta absent from config.json: HF's default 10000 is llama.cpp's too; set
     * the key only when the file gives it (or the model has one) */
    json_t *th = json_object_get(cfg, "rope_theta");
    int has_theta = (th && !json_is_null(th)) || av_kvs_find(kv, "llama.rope.freq_base");
    /* safetensors' container tag (save_pretrained writes {"format": "pt"}) is not model metadata */
    const char *fmt = NULL;
    if (av_kvs_get_str(kv, "format", &fmt) == 0 && strcmp(fmt, "pt") == 0) av_kvs_remove(kv, "format");
    if (av_kvs_set_str(kv, "general.architecture", "llama") ||
        av_kvs_set_u32(kv, "llama.context_length", (uint32_t)C) ||
        av_kvs_set_u32(kv, "llama.embedding_length", (uint32_t)E) ||
        av_kvs_set_u32(kv, "llama.block_count", (uint32_t)L) ||
        av_kvs_set_u32(kv, "llama.feed_forward_length", (uint32_t)F) ||
        av_kvs_set_u32(kv, "llama.rope.dimension_count", (uint32_t)HD) ||
        av_kvs_set_u32(kv, "llama.attention.head_count", (uint32_t)H) ||
        av_kvs_set_u32(kv, "llama.attention.head_count_kv", (uint32_t)HKV) ||
        av_kvs_set_f32(kv, "llama.attention.layer_norm_rms_epsilon", (float)eps) ||
        (has_theta && av_kvs_set_f32(kv, "llama.rope.freq_base", (float)theta)))
        rc = av_errf(err, AV_ENOMEM, "%s: out of memory", config_path);
done:
    json_decref(cfg);
    return rc;
}

int hf_normalize(av_model *m, const char *path, av_err *err) {
    return hf_normalize_ex(m, path, NULL, NULL, err);
}

int hf_normalize_ex(av_model *m, const char *path, const char *config_path, hf_perm_queue *defer, av_err *err) {
    if (!hf_is_llama(m)) return 0;
    if (config_path) return hf_llama_to_gguf_ex(m, config_path, defer, err);
    char cfg[4096];
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(cfg, sizeof cfg, "%s/config.json", path);
    } else {
        const char *slash = strrchr(path, '/');
        int dir = slash ? (int)(slash - path) : 1;
        snprintf(cfg, sizeof cfg, "%.*s/config.json", dir, slash ? path : ".");
    }
    return hf_llama_to_gguf_ex(m, cfg, defer, err);
}
