/* int8.c — `anvil quantize IN OUT --int8 sym|asym`: per-output-channel INT8
 * for safetensors / PyTorch outputs, which have no block types. Each 2-D
 * float tensor NAME becomes NAME (int8 or uint8 [rows, cols]) plus
 * NAME.scale (f32 [rows]) and, for asym, NAME.zero_point (uint8 [rows]);
 * other tensors are copied. Metadata "anvil.int8" = "sym" | "asym" says how
 * to read them back: w = q * scale, or (q - zero_point) * scale. */
#include <stdlib.h>
#include <string.h>

#include "int8.h"
#include "quant.h"
#include "safetensors.h"
#include "torchpt.h"

static int is_float(av_dtype t) { return t == AV_F32 || t == AV_F16 || t == AV_BF16; }

int int8_convert(const av_model *in, int asym, av_model **out, av_err *err) {
    av_model *m = av_model_new();
    float *row = NULL;
    if (!m) return av_errf(err, AV_ENOMEM, "out of memory");
    for (size_t i = 0; i < in->kv.n; i++) {
        av_value v;
        if (av_value_copy(&v, &in->kv.items[i].val) || av_kvs_set(&m->kv, in->kv.items[i].key, &v))
            goto oom;
    }
    if (av_kvs_set_str(&m->kv, "anvil.int8", asym ? "asym" : "sym")) goto oom;
    for (size_t i = 0; i < in->n_tensors; i++) {
        const av_tensor *t = &in->tensors[i];
        if (t->n_dims != 2 || !is_float(t->src_dtype)) {
            av_tensor *c = av_model_add_tensor(m, t->name, t->dtype, t->n_dims, t->shape, t->data, NULL);
            if (!c) goto oom;
            c->src_dtype = t->src_dtype;
            continue;
        }
        const int64_t rows = t->shape[0], cols = t->shape[1], n = rows * cols;
        float *w = malloc((size_t)n * sizeof *w), *scale = malloc((size_t)rows * sizeof *scale);
        void *q = malloc((size_t)n);
        uint8_t *zp = asym ? malloc((size_t)rows) : NULL;
        char name[512];
        if (!w || !scale || !q || (asym && !zp)) {
            free(w), free(scale), free(q), free(zp);
            goto oom;
        }
        if (av_convert(t->data, t->src_dtype, w, AV_F32, n, err)) {
            free(w), free(scale), free(q), free(zp);
            goto fail;
        }
        q_int8_rows(w, rows, cols, asym, q, scale, zp);
        free(w);
        int64_t sh[1] = {rows};
        int bad = !av_model_add_tensor(m, t->name, asym ? AV_U8 : AV_I8, 2, t->shape, q, q);
        if (bad) free(q);
        snprintf(name, sizeof name, "%s.scale", t->name);
        if (!bad && !(bad = !av_model_add_tensor(m, name, AV_F32, 1, sh, scale, scale))) scale = NULL;
        snprintf(name, sizeof name, "%s.zero_point", t->name);
        if (!bad && asym && !(bad = !av_model_add_tensor(m, name, AV_U8, 1, sh, zp, zp))) zp = NULL;
        free(scale);
        free(zp);
        if (bad) goto oom;
    }
    free(row);
    *out = m;
    return 0;
oom:
    av_errf(err, AV_ENOMEM, "out of memory");
fail:
    free(row);
    av_model_free(m);
    return err->code ? err->code : AV_ENOMEM;
}
