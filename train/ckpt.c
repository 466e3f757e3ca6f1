/* Training checkpoints as safetensors (see ckpt.h). */
#include "ckpt.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "safetensors.h"

/* 64-bit multiply-xor hash over 4 interleaved lanes (bit flips anywhere in
 * the tensors change it; fast enough for ~100 MB at save and load). */
static uint64_t hash_floats(uint64_t h, const float *p, size_t n) {
    uint64_t lane[4] = { h, h ^ 0x9e3779b97f4a7c15ull, h ^ 0xbf58476d1ce4e5b9ull, h ^ 0x94d049bb133111ebull };
    const uint32_t *w = (const uint32_t *)(const void *)p;
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 4; k++) {
            uint64_t x = (uint64_t)w[i + 2 * k] | (uint64_t)w[i + 2 * k + 1] << 32;
            lane[k] = (lane[k] ^ x) * 0x100000001b3ull;
            lane[k] ^= lane[k] >> 29;
        }
    for (; i < n; i++) lane[0] = ((lane[0] ^ w[i]) * 0x100000001b3ull) ^ (lane[0] >> 31);
    return (lane[0] * 31 + lane[1]) * 31 * 31 + lane[2] * 31 + lane[3] + n;
}

static uint64_t checksum(const tr_model *m) {
    uint64_t h = 0xcbf29ce484222325ull;
    h = hash_floats(h, m->params, m->n_params);
    h = hash_floats(h, m->m, m->n_params);
    return hash_floats(h, m->v, m->n_params);
}

static char *config_json(const tr_config *c) {
    json_t *j = json_pack("{s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:b, s:f, s:f, s:i}", "dim", c->dim, "n_layer",
                          c->n_layer, "n_head", c->n_head, "n_kv_head", c->n_kv_head, "ffn", c->ffn, "vocab",
                          c->vocab, "seq_len", c->seq_len, "tied", c->tied, "rope_base", (double)c->rope_base,
                          "eps", (double)c->eps, "rope_mode", c->rope_mode);
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return s;
}

static void hex(char *out, const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", p[i]);
    out[2 * n] = 0;
}

static int unhex(unsigned char *out, size_t cap, const char *s, size_t *n) {
    size_t L = strlen(s);
    if (L % 2 || L / 2 > cap) return -1;
    for (size_t i = 0; i < L / 2; i++) {
        unsigned v;
        if (sscanf(s + 2 * i, "%2x", &v) != 1) return -1;
        out[i] = (unsigned char)v;
    }
    *n = L / 2;
    return 0;
}

static int add_view(av_model *am, const char *prefix, const tr_tensor *t, const float *base) {
    char name[96];
    snprintf(name, sizeof name, "%s%s", prefix, t->name);
    return av_model_add_tensor(am, name, AV_F32, t->n_dims, t->shape, base + t->offset, NULL) ? 0 : -1;
}

int ckpt_save(const char *path, tr_model *m, const ckpt_state *s, av_err *err) {
    int rc = tr_alloc_moments(m, err);
    if (rc) return rc;
    av_model *am = av_model_new();
    char *cfg = config_json(&m->cfg);
    char num[64], sum[32], loader[2 * CKPT_LOADER_MAX + 1];
    rc = AV_ENOMEM;
    if (!am || !cfg) goto done;
    for (int i = 0; i < m->n_tensors; i++)
        if (add_view(am, "", &m->tensors[i], m->params) || add_view(am, "adam.m.", &m->tensors[i], m->m) ||
            add_view(am, "adam.v.", &m->tensors[i], m->v))
            goto done;
    snprintf(sum, sizeof sum, "%016" PRIx64, checksum(m));
    hex(loader, s->loader, s->loader_n);
    av_kvs *kv = &am->kv;
    if (av_kvs_set_str(kv, "format", CKPT_FORMAT) || av_kvs_set_str(kv, "config", cfg) ||
        av_kvs_set_str(kv, "settings", s->settings ? s->settings : "{}") ||
        av_kvs_set_str(kv, "loader_state", loader) || av_kvs_set_str(kv, "checksum", sum) ||
        (s->lora && av_kvs_set_str(kv, "lora", s->lora)))
        goto done;
    snprintf(num, sizeof num, "%d", s->step);
    if (av_kvs_set_str(kv, "step", num)) goto done;
    snprintf(num, sizeof num, "%" PRIu64, s->tokens);
    if (av_kvs_set_str(kv, "tokens", num)) goto done;
    rc = st_write(am, path, NULL, NULL, err);
done:
    if (rc == AV_ENOMEM) av_errf(err, rc, "%s: out of memory writing the checkpoint", path);
    free(cfg);
    av_model_free(am);
    return rc;
}

static int get_str(const av_model *am, const char *path, const char *key, const char **out, av_err *err) {
    if (av_kvs_get_str(&am->kv, key, out))
        return av_errf(err, AV_EFORMAT, "%s: not an anvil training checkpoint (no \"%s\" in __metadata__)", path,
                       key);
    return 0;
}

static int parse_config(const char *path, const char *s, tr_config *c, av_err *err) {
    json_error_t je;
    json_t *j = json_loads(s, 0, &je);
    int tied = 0;
    double rb = 0, eps = 0;
    memset(c, 0, sizeof *c);
    if (!j || json_unpack_ex(j, &je, JSON_STRICT, "{s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:b, s:F, s:F, s:i}", "dim",
                             &c->dim, "n_layer", &c->n_layer, "n_head", &c->n_head, "n_kv_head", &c->n_kv_head,
                             "ffn", &c->ffn, "vocab", &c->vocab, "seq_len", &c->seq_len, "tied", &tied,
                             "rope_base", &rb, "eps", &eps, "rope_mode", &c->rope_mode)) {
        json_decref(j);
        return av_errf(err, AV_EFORMAT, "%s: metadata \"config\" is malformed: %s", path, je.text);
    }
    json_decref(j);
    c->tied = tied;
    c->rope_base = (float)rb;
    c->eps = (float)eps;
    return 0;
}

static int fill(const av_model *am, const char *path, const char *prefix, const tr_tensor *t, float *dst,
                av_err *err) {
    char name[96];
    snprintf(name, sizeof name, "%s%s", prefix, t->name);
    const av_tensor *x = av_model_find(am, name);
    if (!x) return av_errf(err, AV_EFORMAT, "%s: tensor '%s' is missing", path, name);
    if (x->dtype != AV_F32 || x->n_dims != t->n_dims || x->shape[0] != t->shape[0] ||
        (t->n_dims == 2 && x->shape[1] != t->shape[1]))
        return av_errf(err, AV_EFORMAT, "%s: tensor '%s' is not F32 of the config's shape", path, name);
    memcpy(dst + t->offset, x->data, t->n * sizeof(float));
    return 0;
}

int ckpt_lora_meta(const char *path, char **json, av_err *err) {
    *json = NULL;
    av_model *am = NULL;
    int rc = st_read(path, &am, err);
    if (rc) return rc;
    const char *v;
    if (!av_kvs_get_str(&am->kv, "lora", &v) && !(*json = strdup(v)))
        rc = av_errf(err, AV_ENOMEM, "%s: out of memory", path);
    av_model_free(am);
    return rc;
}

int ckpt_load(const char *path, tr_model **out, ckpt_state *s, av_err *err) {
    tr_model *given = *out;
    memset(s, 0, sizeof *s);
    av_model *am = NULL;
    tr_model *m = NULL;
    const char *fmt, *cfg, *settings, *loader, *sum, *step, *tokens;
    int rc = st_read(path, &am, err);
    if (rc) return rc;
    if ((rc = get_str(am, path, "format", &fmt, err))) goto fail;
    if (strcmp(fmt, CKPT_FORMAT)) {
        rc = av_errf(err, AV_EFORMAT, "%s: format \"%s\", expected \"%s\"", path, fmt, CKPT_FORMAT);
        goto fail;
    }
    if ((rc = get_str(am, path, "config", &cfg, err)) || (rc = get_str(am, path, "settings", &settings, err)) ||
        (rc = get_str(am, path, "loader_state", &loader, err)) || (rc = get_str(am, path, "checksum", &sum, err)) ||
        (rc = get_str(am, path, "step", &step, err)) || (rc = get_str(am, path, "tokens", &tokens, err)))
        goto fail;
    tr_config c;
    if ((rc = parse_config(path, cfg, &c, err))) goto fail;
    char *end;
    long st = strtol(step, &end, 10);
    if (*end || end == step || st < 0 || st > (1L << 30)) {
        rc = av_errf(err, AV_EFORMAT, "%s: metadata step \"%s\" is not a step count", path, step);
        goto fail;
    }
    s->step = (int)st;
    s->tokens = strtoull(tokens, &end, 10);
    if (*end || end == tokens) {
        rc = av_errf(err, AV_EFORMAT, "%s: metadata tokens \"%s\" is not a count", path, tokens);
        goto fail;
    }
    if (unhex(s->loader, sizeof s->loader, loader, &s->loader_n)) {
        rc = av_errf(err, AV_EFORMAT, "%s: metadata loader_state is not hex of at most %d bytes", path,
                     CKPT_LOADER_MAX);
        goto fail;
    }
    const char *lora = NULL;
    av_kvs_get_str(&am->kv, "lora", &lora);
    if (lora && !given) {
        rc = av_errf(err, AV_EFORMAT, "%s: a LoRA checkpoint; resume it with --lora (and its base)", path);
        goto fail;
    }
    if (!lora && given) {
        rc = av_errf(err, AV_EFORMAT, "%s: a full-model checkpoint, not a LoRA one", path);
        goto fail;
    }
    if (given) {
        m = given;
        const tr_config *g = &m->cfg;
        if (g->dim != c.dim || g->n_layer != c.n_layer || g->n_head != c.n_head || g->n_kv_head != c.n_kv_head ||
            g->ffn != c.ffn || g->vocab != c.vocab) {
            rc = av_errf(err, AV_EFORMAT, "%s: trained on a base of dim %d, %d layers, %d/%d heads, ffn %d, vocab %d; "
                         "this base differs", path, c.dim, c.n_layer, c.n_head, c.n_kv_head, c.ffn, c.vocab);
            goto fail;
        }
        m->cfg.seq_len = c.seq_len;
    } else if ((rc = tr_model_new(&c, &m, err))) {
        char why[AV_ERR_MSG_MAX];
        snprintf(why, sizeof why, "%s", err->msg);
        rc = av_errf(err, AV_EFORMAT, "%s: metadata config: %s", path, why);
        goto fail;
    }
    if ((rc = tr_alloc_moments(m, err))) goto fail;
    size_t expect = 3 * (size_t)m->n_tensors;
    if (am->n_tensors != expect) {
        rc = av_errf(err, AV_EFORMAT, "%s: %zu tensors, the config wants %zu", path, am->n_tensors, expect);
        goto fail;
    }
    for (int i = 0; i < m->n_tensors; i++)
        if ((rc = fill(am, path, "", &m->tensors[i], m->params, err)) ||
            (rc = fill(am, path, "adam.m.", &m->tensors[i], m->m, err)) ||
            (rc = fill(am, path, "adam.v.", &m->tensors[i], m->v, err)))
            goto fail;
    char got[32];
    snprintf(got, sizeof got, "%016" PRIx64, checksum(m));
    if (strcmp(got, sum)) {
        rc = av_errf(err, AV_EFORMAT, "%s: checksum mismatch (stored %s, data gives %s): the file is corrupted",
                     path, sum, got);
        goto fail;
    }
    s->settings = strdup(settings);
    s->lora = lora ? strdup(lora) : NULL;
    if (!s->settings || (lora && !s->lora)) {
        rc = av_errf(err, AV_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    av_model_free(am);
    *out = m;
    return 0;
fail:
    if (m != given) tr_model_free(m);
    free((void *)s->settings);
    s->settings = NULL;
    av_model_free(am);
    return rc;
}
