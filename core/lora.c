/* LoRA adapters: read llama.cpp's GGUF layout, apply at run time or merge
 * into a base (lora.h). */
#include "lora.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gguf.h"
#include "progress.h"
#include "quant.h"

void lora_free(lora_adapter *a) {
    if (!a) return;
    for (size_t i = 0; i < a->n_pairs; i++) free(a->pairs[i].target);
    free(a->pairs);
    av_model_free(a->file);
    free(a->path);
    free(a);
}

static int ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && !strcmp(s + n - k, suf);
}

int lora_read(const char *path, lora_adapter **out, av_err *err) {
    *out = NULL;
    lora_adapter *a = calloc(1, sizeof *a);
    if (!a || !(a->path = strdup(path))) { free(a); return av_errf(err, AV_ENOMEM, "%s: out of memory", path); }
    int rc = gguf_read(path, &a->file, err);
    if (rc) goto fail;
    const char *type = NULL, *atype = NULL;
    av_kvs_get_str(&a->file->kv, "general.type", &type);
    av_kvs_get_str(&a->file->kv, "adapter.type", &atype);
    if (!type || strcmp(type, "adapter") || !atype || strcmp(atype, "lora")) {
        rc = av_errf(err, AV_EFORMAT, "%s: not a LoRA adapter (general.type '%s', adapter.type '%s'; want 'adapter', 'lora')",
                     path, type ? type : "", atype ? atype : "");
        goto fail;
    }
    double alpha = 0;
    if (!av_kvs_get_f64(&a->file->kv, "adapter.lora.alpha", &alpha)) {
        if (!isfinite(alpha) || alpha < 0) {
            rc = av_errf(err, AV_EFORMAT, "%s: adapter.lora.alpha %g is not a non-negative number", path, alpha);
            goto fail;
        }
        a->alpha = (float)alpha;
    }
    else
        av_log(AV_LOG_INFO, "%s: no adapter.lora.alpha: the factor is the scale alone (alpha = r), as llama.cpp\n",
               path);
    a->pairs = calloc(a->file->n_tensors + 1, sizeof *a->pairs);
    if (!a->pairs) { rc = av_errf(err, AV_ENOMEM, "%s: out of memory", path); goto fail; }
    for (size_t i = 0; i < a->file->n_tensors; i++) {
        const av_tensor *t = &a->file->tensors[i];
        if (ends_with(t->name, ".lora_b")) continue; /* found from its lora_a */
        if (!ends_with(t->name, ".lora_a")) {
            rc = av_errf(err, AV_EFORMAT, "%s: tensor '%s' is neither .lora_a nor .lora_b", path, t->name);
            goto fail;
        }
        size_t base_len = strlen(t->name) - strlen(".lora_a");
        char bname[512];
        snprintf(bname, sizeof bname, "%.*s.lora_b", (int)base_len, t->name);
        const av_tensor *b = av_model_find(a->file, bname);
        if (!b) { rc = av_errf(err, AV_EFORMAT, "%s: '%s' has no '%s'", path, t->name, bname); goto fail; }
        /* A [r, n_in], B [n_out, r] (PyTorch order) */
        if (t->n_dims != 2 || b->n_dims != 2 || t->shape[0] != b->shape[1] || t->shape[0] < 1) {
            rc = av_errf(err, AV_EFORMAT,
                         "%s: rank mismatch: '%s' is [%lld, %lld] and '%s' [%lld, %lld] (want A [r, n_in], B [n_out, r])",
                         path, t->name, (long long)t->shape[0], (long long)t->shape[1], bname, (long long)b->shape[0],
                         (long long)b->shape[1]);
            goto fail;
        }
        lora_pair *p = &a->pairs[a->n_pairs++];
        p->a = t;
        p->b = b;
        if (!(p->target = strndup(t->name, base_len))) { rc = av_errf(err, AV_ENOMEM, "%s: out of memory", path); goto fail; }
    }
    for (size_t i = 0; i < a->file->n_tensors; i++) { /* every lora_b has its lora_a */
        const av_tensor *t = &a->file->tensors[i];
        if (!ends_with(t->name, ".lora_b")) continue;
        char aname[512];
        snprintf(aname, sizeof aname, "%.*s.lora_a", (int)(strlen(t->name) - 7), t->name);
        if (!av_model_find(a->file, aname)) {
            rc = av_errf(err, AV_EFORMAT, "%s: '%s' has no '%s'", path, t->name, aname);
            goto fail;
        }
    }
    if (!a->n_pairs) { rc = av_errf(err, AV_EFORMAT, "%s: the adapter has no lora_a/lora_b tensors", path); goto fail; }
    *out = a;
    return 0;
fail:
    lora_free(a);
    return rc;
}

int lora_parse_spec(const char *spec, char **path, float *scale, av_err *err) {
    *path = NULL;
    *scale = 1.0f;
    const char *colon = strrchr(spec, ':');
    struct stat st;
    if (colon && stat(spec, &st) != 0) {
        char *end;
        double s = strtod(colon + 1, &end);
        if (end == colon + 1 || *end || !isfinite(s))
            return av_errf(err, AV_EINVAL, "adapter '%s': scale '%s' is not a number (ADAPTER[:SCALE])", spec, colon + 1);
        *scale = (float)s;
        *path = strndup(spec, (size_t)(colon - spec));
    } else {
        *path = strdup(spec);
    }
    return *path ? 0 : av_errf(err, AV_ENOMEM, "out of memory");
}

float lora_factor(const lora_adapter *a, size_t pair, float scale) {
    const float r = (float)a->pairs[pair].a->shape[0];
    return a->alpha > 0 ? scale * a->alpha / r : scale;
}

/* Adapter tensor as F32 (a copy; F32 sources are copied too, for alignment). */
static float *to_f32(const av_tensor *t) {
    int64_t n = av_tensor_nelements(t);
    float *f = n > 0 ? malloc((size_t)n * sizeof(float)) : NULL;
    if (f && q_dequantize_row(t->src_dtype, t->data, f, n)) { free(f); f = NULL; }
    return f;
}

static int check(const av_model *base, const lora_adapter *ad, av_err *err) {
    const char *ba = NULL, *aa = NULL;
    av_kvs_get_str(&base->kv, "general.architecture", &ba);
    av_kvs_get_str(&ad->file->kv, "general.architecture", &aa);
    if (aa && ba && strcmp(aa, ba))
        return av_errf(err, AV_EINVAL, "%s: adapter for architecture '%s', the model is '%s'", ad->path, aa, ba);
    for (size_t i = 0; i < ad->n_pairs; i++) {
        const lora_pair *p = &ad->pairs[i];
        const av_tensor *w = av_model_find(base, p->target);
        if (!w) return av_errf(err, AV_EINVAL, "%s: target '%s' is not a tensor of the model", ad->path, p->target);
        if (w->n_dims != 2 || w->shape[0] != p->b->shape[0] || w->shape[1] != p->a->shape[1])
            return av_errf(err, AV_EINVAL,
                           "%s: '%s' adapts [%lld, %lld] but the model's is [%lld, %lld]: an adapter for another base",
                           ad->path, p->target, (long long)p->b->shape[0], (long long)p->a->shape[1],
                           (long long)w->shape[0], (long long)(w->n_dims > 1 ? w->shape[1] : 1));
        const av_dtype_traits *tr = av_dtype_traits_of(w->src_dtype);
        if (!tr || (w->src_dtype != AV_F32 && w->src_dtype != AV_F16 && w->src_dtype != AV_BF16 && !tr->is_quantized))
            return av_errf(err, AV_EUNSUPPORTED, "%s: target '%s' has a type LoRA cannot merge into", ad->path,
                           p->target);
    }
    return 0;
}

/* Every adapter against the base before anything changes. */
static int check_all(const av_model *base, lora_adapter *const *ads, int n, av_err *err) {
    for (int k = 0; k < n; k++) {
        int rc = check(base, ads[k], err);
        if (rc) return rc;
    }
    return 0;
}

int lora_attach(llm *l, const av_model *base, lora_adapter *const *ads, const float *scales, int n,
                av_err *err) {
    int rc0 = check_all(base, ads, n, err);
    if (rc0) return rc0;
    for (int k = 0; k < n; k++) {
        const lora_adapter *ad = ads[k];
        for (size_t i = 0; i < ad->n_pairs; i++) {
            const lora_pair *p = &ad->pairs[i];
            float *A = to_f32(p->a), *B = to_f32(p->b);
            int rc = A && B ? llm_add_lora(l, p->target, A, B, (int)p->a->shape[0], lora_factor(ad, i, scales[k]), err)
                            : av_errf(err, AV_ENOMEM, "%s: out of memory reading '%s'", ad->path, p->target);
            free(A);
            free(B);
            if (rc == AV_ENOTFOUND)
                rc = av_errf(err, AV_EUNSUPPORTED, "%s: target '%s' is not a matrix the forward pass multiplies by",
                             ad->path, p->target);
            if (rc) return rc;
        }
    }
    return 0;
}

int lora_merge(av_model *base, lora_adapter *const *ads, const float *scales, int n, av_err *err) {
    int rc0 = check_all(base, ads, n, err);
    if (rc0) return rc0;
    for (int k = 0; k < n; k++) {
        const lora_adapter *ad = ads[k];
        for (size_t i = 0; i < ad->n_pairs; i++) {
            const lora_pair *p = &ad->pairs[i];
            av_tensor *w = av_model_find(base, p->target);
            const int n_out = (int)w->shape[0], n_in = (int)w->shape[1], rank = (int)p->a->shape[0];
            float *wf = w->src_dtype == AV_F32 && w->owned ? (float *)w->owned : to_f32(w);
            float *A = to_f32(p->a), *B = to_f32(p->b);
            if (!wf || !A || !B) {
                if (wf != w->owned) free(wf);
                free(A); free(B);
                return av_errf(err, AV_ENOMEM, "%s: out of memory merging '%s'", ad->path, p->target);
            }
            /* W [n_out, n_in] += f * B [n_out, rank] A [rank, n_in] */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n_out, n_in, rank, lora_factor(ad, i, scales[k]), B,
                        rank, A, n_in, 1.0f, wf, n_in);
            free(A); free(B);
            if (wf != w->owned) {
                free(w->owned);
                w->owned = wf;
            }
            w->data = wf;
            w->dtype = w->src_dtype = AV_F32;
        }
    }
    return 0;
}
