/* imatrix.c — llama-imatrix's importance matrices, GGUF and legacy .dat,
 * turned into per-column weights as llama-quantize's loader does. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "quant.h"

#define IM_MAX_ENTRIES (1 << 20)
#define IM_MAX_NAME 4096

void q_imatrix_free(q_imatrix *im) {
    if (!im) return;
    for (size_t i = 0; i < im->n; i++) {
        free(im->e[i].name);
        free(im->e[i].values);
    }
    free(im->e);
    free(im->dataset);
    free(im);
}

const q_imatrix_entry *q_imatrix_find(const q_imatrix *im, const char *name) {
    if (!im) return NULL;
    for (size_t i = 0; i < im->n; i++)
        if (!strcmp(im->e[i].name, name)) return &im->e[i];
    return NULL;
}

static int add_entry(q_imatrix *im, size_t *cap, const char *name, size_t name_len, int64_t n, int64_t n_mat,
                     float **values, const char *path, av_err *err) {
    for (size_t i = 0; i < im->n; i++)
        if (strlen(im->e[i].name) == name_len && !memcmp(im->e[i].name, name, name_len))
            return av_errf(err, AV_EFORMAT, "%s: duplicate imatrix entry '%s'", path, im->e[i].name);
    if (im->n == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        q_imatrix_entry *ne = realloc(im->e, nc * sizeof *ne);
        if (!ne) return av_errf(err, AV_ENOMEM, "%s: out of memory", path);
        im->e = ne;
        *cap = nc;
    }
    q_imatrix_entry *e = &im->e[im->n];
    if (!(e->name = malloc(name_len + 1))) return av_errf(err, AV_ENOMEM, "%s: out of memory", path);
    memcpy(e->name, name, name_len);
    e->name[name_len] = 0;
    e->n = n;
    e->n_mat = n_mat;
    e->values = *values;
    *values = NULL;
    im->n++;
    return 0;
}

static int check_finite(const float *v, int64_t n, const char *path, const char *name, av_err *err) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return av_errf(err, AV_EFORMAT, "%s: imatrix entry '%s' holds a non-finite value at %lld", path, name,
                           (long long)i);
    return 0;
}

/* GGUF: `<name>.in_sum2` [n_mat, ne0] and `<name>.counts` [n_mat] (f32). */
static int read_gguf(const char *path, q_imatrix *im, av_err *err) {
    static const char SUMS[] = ".in_sum2", COUNTS[] = ".counts";
    av_model *m = NULL;
    int rc = gguf_read(path, &m, err);
    if (rc) return rc;
    size_t cap = 0;
    float *vals = NULL;
    const char *type = NULL;
    if (av_kvs_get_str(&m->kv, "general.type", &type) == 0 && strcmp(type, "imatrix")) {
        rc = av_errf(err, AV_EFORMAT, "%s: general.type is '%s', not 'imatrix'", path, type);
        goto fail;
    }
    int64_t cc;
    if (av_kvs_get_i64(&m->kv, "imatrix.chunk_count", &cc) == 0 && cc >= 0 && cc <= INT32_MAX) im->chunk_count = (int)cc;
    const av_kv *ds = av_kvs_find(&m->kv, "imatrix.datasets");
    if (ds && ds->val.type == AV_KV_ARRAY && ds->val.arr.elem == AV_KV_STRING && ds->val.arr.n > 0) {
        if (!(im->dataset = strdup(((av_str *)ds->val.arr.data)[0].s))) {
            rc = av_errf(err, AV_ENOMEM, "%s: out of memory", path);
            goto fail;
        }
    }
    for (size_t i = 0; i < m->n_tensors; i++) {
        const av_tensor *s = &m->tensors[i];
        size_t len = strlen(s->name);
        if (len <= sizeof SUMS - 1 || strcmp(s->name + len - (sizeof SUMS - 1), SUMS)) continue;
        size_t blen = len - (sizeof SUMS - 1);
        char cname[IM_MAX_NAME + sizeof COUNTS];
        if (blen > IM_MAX_NAME) {
            rc = av_errf(err, AV_EFORMAT, "%s: tensor name '%s' too long", path, s->name);
            goto fail;
        }
        memcpy(cname, s->name, blen);
        memcpy(cname + blen, COUNTS, sizeof COUNTS);
        const av_tensor *c = av_model_find(m, cname);
        if (!c) {
            rc = av_errf(err, AV_EFORMAT, "%s: '%s' has no matching '%s'", path, s->name, cname);
            goto fail;
        }
        if (s->dtype != AV_F32 || c->dtype != AV_F32) {
            rc = av_errf(err, AV_EFORMAT, "%s: '%s' / '%s' must be f32 (are %s / %s)", path, s->name, cname,
                         av_dtype_name(s->dtype), av_dtype_name(c->dtype));
            goto fail;
        }
        int64_t nsums = av_tensor_nelements(s), ncounts = av_tensor_nelements(c);
        if (nsums <= 0 || ncounts <= 0 || nsums % ncounts) {
            rc = av_errf(err, AV_EFORMAT, "%s: '%s' has %lld values for %lld counts (must be a non-zero multiple)",
                         path, s->name, (long long)nsums, (long long)ncounts);
            goto fail;
        }
        int64_t ne0 = nsums / ncounts;
        if (s->shape[s->n_dims - 1] != ne0) {
            rc = av_errf(err, AV_EFORMAT, "%s: '%s' rows of %lld do not match %lld counts", path, s->name,
                         (long long)s->shape[s->n_dims - 1], (long long)ncounts);
            goto fail;
        }
        const float *sums = s->data, *counts = c->data;
        if (!(vals = malloc((size_t)nsums * sizeof(float)))) {
            rc = av_errf(err, AV_ENOMEM, "%s: out of memory", path);
            goto fail;
        }
        for (int64_t j = 0; j < ncounts; ++j) {
            const float count = counts[j];
            if (count > 0.0f)
                for (int64_t k = 0; k < ne0; ++k) vals[j * ne0 + k] = sums[j * ne0 + k] / count;
            else /* this matrix never got input during calibration */
                for (int64_t k = 0; k < ne0; ++k) vals[j * ne0 + k] = 1;
        }
        char ename[IM_MAX_NAME + 1];
        memcpy(ename, s->name, blen);
        ename[blen] = 0;
        if ((rc = check_finite(vals, nsums, path, ename, err))) goto fail;
        if ((rc = add_entry(im, &cap, s->name, blen, nsums, ncounts, &vals, path, err))) goto fail;
    }
    /* a .counts without its .in_sum2 is as malformed as the reverse */
    for (size_t i = 0; i < m->n_tensors; i++) {
        const char *nm = m->tensors[i].name;
        size_t len = strlen(nm);
        if (len > sizeof COUNTS - 1 && !strcmp(nm + len - (sizeof COUNTS - 1), COUNTS)) {
            size_t blen = len - (sizeof COUNTS - 1);
            int found = 0;
            for (size_t k = 0; k < im->n && !found; k++)
                found = strlen(im->e[k].name) == blen && !memcmp(im->e[k].name, nm, blen);
            if (!found) {
                rc = av_errf(err, AV_EFORMAT, "%s: '%s' has no matching '.in_sum2'", path, nm);
                goto fail;
            }
        }
    }
    av_model_free(m);
    return 0;
fail:
    free(vals);
    av_model_free(m);
    return rc;
}

/* Legacy .dat: i32 n_entries; per entry i32 len, name, i32 ncall, i32 nval,
 * f32[nval]; optionally i32 last_call, i32 len, dataset name. */
static int read_dat(const char *path, const unsigned char *p, size_t size, q_imatrix *im, av_err *err) {
    size_t off = 0, cap = 0;
    float *vals = NULL;
    int rc = 0;
#define RD_I32(dst, what)                                                                                      \
    do {                                                                                                       \
        if (size - off < 4) {                                                                                  \
            rc = av_errf(err, AV_EFORMAT, "%s: truncated at offset %zu reading %s (file size %zu)", path, off, \
                         what, size);                                                                          \
            goto fail;                                                                                         \
        }                                                                                                      \
        memcpy(&(dst), p + off, 4);                                                                            \
        off += 4;                                                                                              \
    } while (0)
    int32_t n_entries;
    RD_I32(n_entries, "the entry count");
    if (n_entries < 1 || n_entries > IM_MAX_ENTRIES) {
        rc = av_errf(err, AV_EFORMAT, "%s: entry count %d at offset 0 is not in [1, %d]", path, n_entries,
                     IM_MAX_ENTRIES);
        goto fail;
    }
    for (int32_t i = 0; i < n_entries; i++) {
        int32_t len, ncall, nval;
        size_t at = off;
        RD_I32(len, "a name length");
        if (len < 1 || len > IM_MAX_NAME || (size_t)len > size - off) {
            rc = av_errf(err, AV_EFORMAT, "%s: entry %d name length %d at offset %zu is not in [1, %d] or runs past end of file",
                         path, i, len, at, IM_MAX_NAME);
            goto fail;
        }
        const char *name = (const char *)p + off;
        off += (size_t)len;
        if (memchr(name, 0, (size_t)len)) {
            rc = av_errf(err, AV_EFORMAT, "%s: entry %d name at offset %zu holds a NUL byte", path, i, at + 4);
            goto fail;
        }
        RD_I32(ncall, "a call count");
        at = off;
        RD_I32(nval, "a value count");
        if (nval < 1 || (size_t)nval > (size - off) / 4) {
            rc = av_errf(err, AV_EFORMAT, "%s: entry '%.*s' value count %d at offset %zu is < 1 or runs past end of file",
                         path, len, name, nval, at);
            goto fail;
        }
        if (!(vals = malloc((size_t)nval * sizeof(float)))) {
            rc = av_errf(err, AV_ENOMEM, "%s: out of memory", path);
            goto fail;
        }
        memcpy(vals, p + off, (size_t)nval * 4);
        off += (size_t)nval * 4;
        if (ncall > 0)
            for (int32_t k = 0; k < nval; k++) vals[k] = vals[k] / ncall;
        char ename[IM_MAX_NAME + 1];
        memcpy(ename, name, (size_t)len);
        ename[len] = 0;
        if ((rc = check_finite(vals, nval, path, ename, err))) goto fail;
        if ((rc = add_entry(im, &cap, name, (size_t)len, nval, 1, &vals, path, err))) goto fail;
    }
    if (off < size) { /* trailer: last chunk and the dataset name */
        int32_t last_call, dlen;
        RD_I32(last_call, "the chunk count");
        RD_I32(dlen, "the dataset name length");
        if (dlen < 0 || (size_t)dlen > size - off) {
            rc = av_errf(err, AV_EFORMAT, "%s: dataset name length %d at offset %zu runs past end of file", path, dlen,
                         off - 4);
            goto fail;
        }
        im->chunk_count = last_call > 0 ? last_call : 0;
        if (!(im->dataset = malloc((size_t)dlen + 1))) {
            rc = av_errf(err, AV_ENOMEM, "%s: out of memory", path);
            goto fail;
        }
        memcpy(im->dataset, p + off, (size_t)dlen);
        im->dataset[dlen] = 0;
        off += (size_t)dlen;
        if (off != size) {
            rc = av_errf(err, AV_EFORMAT, "%s: %zu unexpected bytes after the dataset name at offset %zu", path,
                         size - off, off);
            goto fail;
        }
    }
    return 0;
fail:
    free(vals);
    return rc;
#undef RD_I32
}

int q_imatrix_read(const char *path, q_imatrix **out, av_err *err) {
    *out = NULL;
    q_imatrix *im = calloc(1, sizeof *im);
    if (!im) return av_errf(err, AV_ENOMEM, "%s: out of memory", path);
    FILE *f = fopen(path, "rb");
    if (!f) {
        free(im);
        return av_errf(err, AV_EIO, "%s: cannot open: %s", path, strerror(errno));
    }
    int rc = 0;
    unsigned char magic[4] = { 0 };
    size_t got = fread(magic, 1, 4, f);
    if (got == 4 && !memcmp(magic, "GGUF", 4)) {
        fclose(f);
        rc = read_gguf(path, im, err);
    } else {
        unsigned char *buf = NULL;
        long size = -1;
        if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
        if (size < 0 || fseek(f, 0, SEEK_SET) != 0) rc = av_errf(err, AV_EIO, "%s: cannot seek", path);
        else if (!(buf = malloc((size_t)size + 1))) rc = av_errf(err, AV_ENOMEM, "%s: out of memory", path);
        else if (fread(buf, 1, (size_t)size, f) != (size_t)size) rc = av_errf(err, AV_EIO, "%s: read failed", path);
        fclose(f);
        if (!rc) rc = read_dat(path, buf, (size_t)size, im, err);
        free(buf);
    }
    if (rc) {
        q_imatrix_free(im);
        return rc;
    }
    *out = im;
    return 0;
}

int q_imatrix_for_tensor(const q_imatrix *im, const av_tensor *t, const float **w, av_err *err) {
    *w = NULL;
    const q_imatrix_entry *e = q_imatrix_find(im, t->name);
    if (!e) return 0;
    int64_t ncols = t->n_dims ? t->shape[t->n_dims - 1] : 1;
    int64_t n_mat = t->n_dims >= 3 ? t->shape[t->n_dims - 3] : 1;
    if (e->n == ncols * n_mat) {
        *w = e->values;
        return 0;
    }
    /* llama-quantize: fatal, except for token embeddings (always mismatched) */
    if (!strcmp(t->name, "token_embd.weight") || !strcmp(t->name, "per_layer_token_embd.weight")) return 0;
    return av_errf(err, AV_EFORMAT, "imatrix size %lld is different from tensor size %lld for '%s'", (long long)e->n,
                   (long long)(ncols * n_mat), t->name);
}
