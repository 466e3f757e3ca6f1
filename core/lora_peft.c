/* LoRA adapters between PEFT folders (adapter_config.json +
 * adapter_model.safetensors, HF names, q/k lora_B rows in HF's rotate_half
 * order) and llama.cpp's GGUF layout (lora.h). */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gguf.h"
#include "hf.h"
#include "io.h"
#include "lora.h"
#include "safetensors.h"

static const struct { const char *hf, *gguf; int perm; /* 1 q: n_head, 2 k: n_kv_head */ } MODS[] = {
    { "self_attn.q_proj", "attn_q", 1 }, { "self_attn.k_proj", "attn_k", 2 }, { "self_attn.v_proj", "attn_v", 0 },
    { "self_attn.o_proj", "attn_output", 0 }, { "mlp.gate_proj", "ffn_gate", 0 }, { "mlp.up_proj", "ffn_up", 0 },
    { "mlp.down_proj", "ffn_down", 0 },
};
#define N_MODS (sizeof MODS / sizeof MODS[0])
#define PEFT_PREFIX "base_model.model.model.layers."

/* An owned copy of src's data under a new name (permutations then work in place). */
static av_tensor *copy_tensor(av_model *dst, const av_tensor *src, const char *name) {
    int ok;
    size_t n = av_tensor_src_nbytes(src, &ok);
    void *buf = malloc(n ? n : 1);
    if (!buf) return NULL;
    memcpy(buf, src->data, n);
    av_tensor *t = av_model_add_tensor(dst, name, src->src_dtype, src->n_dims, src->shape, buf, buf);
    if (!t) free(buf);
    return t;
}

static int permute(av_model *m, av_tensor *t, int64_t heads, int to_hf, av_err *err) {
    hf_perm p = { (size_t)(t - m->tensors), heads, to_hf };
    return hf_perm_apply(m, &p, err);
}

int lora_peft_read(const char *dir, int64_t n_head, int64_t n_kv_head, av_model **out, av_err *err) {
    *out = NULL;
    char cfg[4200], st[4200];
    snprintf(cfg, sizeof cfg, "%s/adapter_config.json", dir);
    snprintf(st, sizeof st, "%s/adapter_model.safetensors", dir);
    json_error_t je;
    json_t *j = json_load_file(cfg, 0, &je);
    if (!j) return av_errf(err, AV_EFORMAT, "%s:%d: %s", cfg, je.line, je.text);
    const char *ptype = NULL;
    json_int_t r = 0;
    double alpha = 0;
    int rc = 0;
    if (json_unpack_ex(j, &je, 0, "{s:s, s:I, s:F}", "peft_type", &ptype, "r", &r, "lora_alpha", &alpha) ||
        strcmp(ptype, "LORA") || r < 1) {
        rc = av_errf(err, AV_EFORMAT, "%s: not a LoRA adapter config (peft_type LORA, r, lora_alpha): %s", cfg,
                     je.text[0] ? je.text : "wrong peft_type or r");
        json_decref(j);
        return rc;
    }
    json_decref(j);
    av_model *src = NULL, *m = av_model_new();
    if (!m) return av_errf(err, AV_ENOMEM, "%s: out of memory", dir);
    if ((rc = st_read(st, &src, err))) goto fail;
    if (av_kvs_set_str(&m->kv, "general.architecture", "llama") || av_kvs_set_str(&m->kv, "general.type", "adapter") ||
        av_kvs_set_str(&m->kv, "adapter.type", "lora") || av_kvs_set_f32(&m->kv, "adapter.lora.alpha", (float)alpha)) {
        rc = av_errf(err, AV_ENOMEM, "%s: out of memory", dir);
        goto fail;
    }
    /* GGUF order: per layer, per module (q k v o gate up down), a then b */
    int max_layer = -1;
    for (size_t i = 0; i < src->n_tensors; i++) {
        const char *nm = src->tensors[i].name;
        int l;
        if (strncmp(nm, PEFT_PREFIX, strlen(PEFT_PREFIX)) || sscanf(nm + strlen(PEFT_PREFIX), "%d.", &l) != 1 || l < 0) {
            rc = av_errf(err, AV_EFORMAT, "%s: tensor '%s' is not a LoRA weight of a Llama layer", st, nm);
            goto fail;
        }
        if (l > max_layer) max_layer = l;
    }
    size_t used = 0;
    for (int l = 0; l <= max_layer; l++)
        for (size_t k = 0; k < N_MODS; k++)
            for (int ab = 0; ab < 2; ab++) {
                char hn[256], gn[256];
                snprintf(hn, sizeof hn, PEFT_PREFIX "%d.%s.lora_%c.weight", l, MODS[k].hf, ab ? 'B' : 'A');
                snprintf(gn, sizeof gn, "blk.%d.%s.weight.lora_%c", l, MODS[k].gguf, ab ? 'b' : 'a');
                const av_tensor *s = av_model_find(src, hn);
                if (!s) continue;
                av_tensor *t = copy_tensor(m, s, gn);
                if (!t) { rc = av_errf(err, AV_ENOMEM, "%s: out of memory", dir); goto fail; }
                used++;
                if (ab && MODS[k].perm) {
                    int64_t heads = MODS[k].perm == 1 ? n_head : n_kv_head;
                    if (heads < 1) {
                        rc = av_errf(err, AV_EINVAL, "%s: '%s' needs the head counts (give the base model)", dir, hn);
                        goto fail;
                    }
                    if ((rc = permute(m, t, heads, 0, err))) goto fail;
                }
            }
    if (used != src->n_tensors) {
        rc = av_errf(err, AV_EFORMAT, "%s: %zu of %zu tensors are not lora_A/lora_B of a known module", st,
                     src->n_tensors - used, src->n_tensors);
        goto fail;
    }
    av_model_free(src);
    *out = m;
    return 0;
fail:
    av_model_free(src);
    av_model_free(m);
    return rc;
}

int lora_peft_write(const lora_adapter *a, const char *dir, int64_t n_head, int64_t n_kv_head, av_err *err) {
    av_model *m = av_model_new();
    json_t *j = NULL, *mods = json_array();
    char *text = NULL;
    int rc = AV_ENOMEM, used[N_MODS] = { 0 };
    if (!m || !mods) goto fail;
    for (size_t i = 0; i < a->n_pairs; i++) {
        const lora_pair *p = &a->pairs[i];
        int l = -1, k = -1;
        char mod[64];
        if (sscanf(p->target, "blk.%d.%63[a-z_].weight", &l, mod) == 2)
            for (size_t q = 0; q < N_MODS; q++)
                if (!strcmp(mod, MODS[q].gguf)) k = (int)q;
        if (l < 0 || k < 0) {
            rc = av_errf(err, AV_EUNSUPPORTED, "%s: target '%s' has no PEFT name", a->path, p->target);
            goto fail;
        }
        used[k] = 1;
        for (int ab = 0; ab < 2; ab++) {
            char hn[256];
            snprintf(hn, sizeof hn, PEFT_PREFIX "%d.%s.lora_%c.weight", l, MODS[k].hf, ab ? 'B' : 'A');
            av_tensor *t = copy_tensor(m, ab ? p->b : p->a, hn);
            if (!t) { rc = av_errf(err, AV_ENOMEM, "%s: out of memory", dir); goto fail; }
            if (ab && MODS[k].perm) {
                int64_t heads = MODS[k].perm == 1 ? n_head : n_kv_head;
                if (heads < 1) {
                    rc = av_errf(err, AV_EINVAL, "%s: '%s' needs the head counts (give the base model)", a->path,
                                 p->target);
                    goto fail;
                }
                if ((rc = permute(m, t, heads, 1, err))) goto fail;
            }
        }
    }
    const char *prefix_free[N_MODS];
    size_t nm = 0;
    for (size_t q = 0; q < N_MODS; q++)
        if (used[q]) prefix_free[nm++] = strchr(MODS[q].hf, '.') + 1;
    for (size_t x = 0; x < nm; x++) json_array_append_new(mods, json_string(prefix_free[x]));
    const int r = (int)a->pairs[0].a->shape[0];
    j = json_pack("{s:s, s:s, s:i, s:f, s:f, s:s, s:b, s:O}", "peft_type", "LORA", "task_type", "CAUSAL_LM", "r", r,
                  "lora_alpha", (double)(a->alpha > 0 ? a->alpha : (float)r), "lora_dropout", 0.0, "bias", "none",
                  "fan_in_fan_out", 0, "target_modules", mods);
    if (!j || !(text = json_dumps(j, JSON_INDENT(2)))) goto fail;
    if (mkdir(dir, 0777) && !(errno == EEXIST)) {
        rc = av_errf(err, AV_EIO, "%s: cannot create the folder", dir);
        goto fail;
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    if ((rc = st_write(m, path, NULL, NULL, err))) goto fail;
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    rc = av_write_atomic(path, text, strlen(text), err);
fail:
    if (rc == AV_ENOMEM && !err->msg[0]) av_errf(err, rc, "%s: out of memory", dir);
    free(text);
    json_decref(j);
    json_decref(mods);
    av_model_free(m);
    return rc;
}

int lora_is_adapter(const char *path) {
    char p[4200];
    struct stat st;
    snprintf(p, sizeof p, "%s/adapter_config.json", path);
    if (stat(p, &st) == 0) return 1;
    if (!av_has_ext(path, ".gguf")) return 0;
    av_model *m = NULL;
    av_err e = { 0 };
    const char *type = NULL;
    int yes = gguf_read(path, &m, &e) == 0 && !av_kvs_get_str(&m->kv, "general.type", &type) && !strcmp(type, "adapter");
    av_model_free(m);
    return yes;
}

/* Head counts of a base model (any format anvil reads; HF folders mapped). */
static int base_heads(const char *base, int64_t *nh, int64_t *nkv, av_err *err) {
    av_model *m = NULL;
    int rc = av_model_read(base, &m, err);
    if (!rc) rc = hf_normalize(m, base, err);
    if (!rc && av_kvs_get_i64(&m->kv, "llama.attention.head_count", nh))
        rc = av_errf(err, AV_EFORMAT, "%s: no llama.attention.head_count", base);
    if (!rc && av_kvs_get_i64(&m->kv, "llama.attention.head_count_kv", nkv)) *nkv = *nh;
    av_model_free(m);
    return rc;
}

int lora_convert(const char *in, const char *out, const char *base, int64_t n_head, int64_t n_kv_head,
                 size_t *n_tensors, av_err *err) {
    int rc;
    if (base && (rc = base_heads(base, &n_head, &n_kv_head, err))) return rc;
    if (n_kv_head < 1) n_kv_head = n_head;
    char p[4200];
    struct stat st;
    snprintf(p, sizeof p, "%s/adapter_config.json", in);
    if (stat(p, &st) == 0) { /* PEFT -> GGUF */
        if (!av_has_ext(out, ".gguf"))
            return av_errf(err, AV_EINVAL, "%s: a PEFT adapter converts to a .gguf adapter, not '%s'", in, out);
        av_model *m = NULL;
        if ((rc = lora_peft_read(in, n_head, n_kv_head, &m, err))) return rc;
        *n_tensors = m->n_tensors;
        rc = gguf_write(m, out, NULL, NULL, err);
        av_model_free(m);
        return rc;
    }
    lora_adapter *a = NULL; /* GGUF -> PEFT */
    if ((rc = lora_read(in, &a, err))) return rc;
    *n_tensors = 2 * a->n_pairs;
    rc = lora_peft_write(a, out, n_head, n_kv_head, err);
    lora_free(a);
    return rc;
}
