/* safetensors.c — safetensors reader/writer (single files, sharded indexes, HF folders).
 *
 * Layout: u64 LE header length N | N bytes of JSON | data buffer. We write
 * the header the way the Rust library (and so PyTorch/HF) does: compact JSON,
 * "__metadata__" first, then one entry per tensor in data order, escaped like
 * serde_json, padded with spaces to a multiple of 8 bytes. Reading a file the
 * Rust library wrote (its tensors sorted by name within a dtype) and writing
 * it back reproduces it byte for byte, because tensors are added to the model
 * in data-offset order and written in model order. */
#include "safetensors.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "st_json.h"

#define META_KEY "__metadata__"
#define GGUF_PREFIX "gguf:" /* metadata key prefix for typed (non-string) KVs */

static const struct { const char *name; av_dtype t; } DTYPES[] = {
    { "F64", AV_F64 }, { "F32", AV_F32 }, { "F16", AV_F16 }, { "BF16", AV_BF16 },
    { "I64", AV_I64 }, { "I32", AV_I32 }, { "I16", AV_I16 }, { "I8", AV_I8 },
    { "U8", AV_U8 }, { "BOOL", AV_BOOL }, { "F8_E4M3", AV_F8_E4M3 }, { "F8_E5M2", AV_F8_E5M2 },
};
#define N_DTYPES (sizeof DTYPES / sizeof DTYPES[0])

const char *st_dtype_name(av_dtype t) {
    for (size_t i = 0; i < N_DTYPES; i++)
        if (DTYPES[i].t == t) return DTYPES[i].name;
    return NULL;
}

int st_dtype_from_name(const char *s) {
    if (!s) return -1;
    for (size_t i = 0; i < N_DTYPES; i++)
        if (strcmp(DTYPES[i].name, s) == 0) return (int)DTYPES[i].t;
    return -1;
}

/* ======================================================================
 * Reading
 * ====================================================================== */

typedef struct st_entry {
    const char *name;      /* points into the jansson tree */
    av_dtype dtype;
    int n_dims;
    int64_t shape[AV_MAX_DIMS];
    uint64_t begin, end;
} st_entry;

static int entry_cmp(const void *a, const void *b) {
    const st_entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1; /* zero-size first at a shared offset */
    return strcmp(x->name, y->name);
}

static void shape_str(const int64_t *shape, int n, char *buf, size_t cap) {
    av_tensor t = { .n_dims = n };
    memcpy(t.shape, shape, (size_t)n * sizeof *shape);
    av_shape_str(&t, buf, cap);
}

/* Validate one header entry ("name": {...}) into *e. */
static int parse_entry(const char *name, const char *key, const json_t *v, st_entry *e, av_err *err) {
    memset(e, 0, sizeof *e);
    e->name = key;
    if (!json_is_object(v))
        return av_errf(err, AV_EFORMAT, "%s: tensor '%s': entry is not a JSON object", name, key);
    const json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
                 *jo = json_object_get(v, "data_offsets");
    if (!json_is_string(jd))
        return av_errf(err, AV_EFORMAT, "%s: tensor '%s': \"dtype\" missing or not a string", name, key);
    int dt = strlen(json_string_value(jd)) == json_string_length(jd) ? st_dtype_from_name(json_string_value(jd)) : -1;
    if (dt < 0)
        return av_errf(err, AV_EFORMAT, "%s: tensor '%s': unknown dtype '%s'", name, key, json_string_value(jd));
    e->dtype = (av_dtype)dt;
    if (!json_is_array(js))
        return av_errf(err, AV_EFORMAT, "%s: tensor '%s': \"shape\" missing or not an array", name, key);
    size_t nd = json_array_size(js);
    if (nd > AV_MAX_DIMS)
        return av_errf(err, AV_EFORMAT, "%s: tensor '%s': shape has %zu dims (max %d)", name, key, nd, AV_MAX_DIMS);
    e->n_dims = (int)nd;
    int64_t nel = 1;
    int overflow = 0;
    for (size_t i = 0; i < nd; i++) {
        const json_t *d = json_array_get(js, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return av_errf(err, AV_EFORMAT, "%s: tensor '%s': shape[%zu] is not a non-negative integer", name, key, i);
        e->shape[i] = json_integer_value(d);
        if (e->shape[i] && nel > INT64_MAX / e->shape[i]) overflow = 1;
        else nel *= e->shape[i];
    }
    char sh[160];
    shape_str(e->shape, e->n_dims, sh, sizeof sh);
    if (!json_is_array(jo) || json_array_size(jo) != 2 || !json_is_integer(json_array_get(jo, 0)) ||
        !json_is_integer(json_array_get(jo, 1)) || json_integer_value(json_array_get(jo, 0)) < 0 ||
        json_integer_value(json_array_get(jo, 1)) < 0)
        return av_errf(err, AV_EFORMAT, "%s: tensor '%s': \"data_offsets\" must be [begin, end] of non-negative integers",
                       name, key);
    e->begin = (uint64_t)json_integer_value(json_array_get(jo, 0));
    e->end = (uint64_t)json_integer_value(json_array_get(jo, 1));
    if (e->end < e->begin)
        return av_errf(err, AV_EFORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] end before they begin", name, key,
                       (unsigned long long)e->begin, (unsigned long long)e->end);
    int ok = 0;
    size_t nb = overflow ? 0 : av_dtype_nbytes(e->dtype, nel, &ok);
    if (!ok)
        return av_errf(err, AV_EFORMAT, "%s: tensor '%s': %s %s: byte size overflows", name, key,
                       st_dtype_name(e->dtype), sh);
    if ((uint64_t)nb != e->end - e->begin)
        return av_errf(err, AV_EFORMAT, "%s: tensor '%s' data_offsets [%llu, %llu] but %s %s needs %zu bytes", name, key,
                       (unsigned long long)e->begin, (unsigned long long)e->end, st_dtype_name(e->dtype), sh, nb);
    return 0;
}

/* __metadata__ -> m->kv: strings as they are, "gguf:<key>" decoded to their
 * type when they hold a valid typed encoding (else kept as plain strings: any
 * string -> string map is valid safetensors metadata). */
static int parse_metadata(av_model *m, const char *name, const json_t *meta, av_err *err) {
    if (!json_is_object(meta))
        return av_errf(err, AV_EFORMAT, "%s: \"" META_KEY "\" is not a JSON object", name);
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)meta, k, v) {
        if (!json_is_string(v))
            return av_errf(err, AV_EFORMAT, "%s: metadata '%s' is not a string", name, k);
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);
        av_value val;
        char why[160];
        int plain = 1;
        const size_t pl = strlen(GGUF_PREFIX);
        if (strncmp(k, GGUF_PREFIX, pl) == 0 && st_meta_decode(s, n, &val, why, sizeof why) == 0) plain = 0;
        if (plain) {
            val = (av_value){ .type = AV_KV_STRING };
            if (!(val.str.s = malloc(n + 1))) return av_errf(err, AV_ENOMEM, "%s: out of memory", name);
            memcpy(val.str.s, s, n);
            val.str.s[n] = '\0';
            val.str.len = n;
        }
        if (av_kvs_set(&m->kv, plain ? k : k + pl, &val)) {
            av_value_release(&val);
            return av_errf(err, AV_ENOMEM, "%s: out of memory", name);
        }
    }
    return 0;
}

/* Parse one safetensors image and append its tensors (views into buf) and
 * metadata to m. `name` is used in messages. */
static int parse_image(av_model *m, const uint8_t *buf, size_t size, const char *name, av_err *err) {
    json_t *root = NULL;
    st_entry *ents = NULL;
    int rc = 0;
    if (size < 8) {
        rc = av_errf(err, AV_EFORMAT, "%s: file is %zu bytes, shorter than the 8-byte header length", name, size);
        goto done;
    }
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | buf[i];
    if (n > ST_MAX_HEADER) {
        rc = av_errf(err, AV_EFORMAT, "%s: header length %llu at offset 0 exceeds the %u-byte limit", name,
                     (unsigned long long)n, ST_MAX_HEADER);
        goto done;
    }
    if (n > size - 8) {
        rc = av_errf(err, AV_EFORMAT, "%s: header length %llu at offset 0 runs past end of file (size %zu)", name,
                     (unsigned long long)n, size);
        goto done;
    }
    json_error_t je;
    root = json_loadb((const char *)buf + 8, (size_t)n, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!root) {
        rc = av_errf(err, AV_EFORMAT, "%s: header JSON invalid at byte %llu: %s", name,
                     (unsigned long long)(8 + (je.position > 0 ? (uint64_t)je.position : 0)), je.text);
        goto done;
    }
    if (!json_is_object(root)) {
        rc = av_errf(err, AV_EFORMAT, "%s: header at byte 8 is not a JSON object", name);
        goto done;
    }
    const uint64_t data_start = 8 + n, data_size = size - data_start;
    size_t cap = json_object_size(root), ne = 0;
    if (cap && !(ents = calloc(cap, sizeof *ents))) {
        rc = av_errf(err, AV_ENOMEM, "%s: out of memory", name);
        goto done;
    }
    const json_t *meta = NULL;
    const char *k;
    json_t *v;
    json_object_foreach(root, k, v) {
        if (strcmp(k, META_KEY) == 0) { meta = v; continue; }
        if ((rc = parse_entry(name, k, v, &ents[ne], err))) goto done;
        if (ents[ne].end > data_size) {
            rc = av_errf(err, AV_EFORMAT, "%s: tensor '%s' data_offsets [%llu, %llu] run past the %llu-byte data buffer",
                         name, k, (unsigned long long)ents[ne].begin, (unsigned long long)ents[ne].end,
                         (unsigned long long)data_size);
            goto done;
        }
        ne++;
    }
    if (ne) qsort(ents, ne, sizeof *ents, entry_cmp);
    /* the spec: offsets tile the data buffer exactly, no gaps, no overlaps */
    uint64_t cursor = 0;
    for (size_t i = 0; i < ne; i++) {
        const st_entry *e = &ents[i];
        if (e->begin < cursor) {
            rc = av_errf(err, AV_EFORMAT, "%s: tensor '%s' data_offsets [%llu, %llu] overlap tensor '%s' (ends at %llu)",
                         name, e->name, (unsigned long long)e->begin, (unsigned long long)e->end, ents[i - 1].name,
                         (unsigned long long)cursor);
            goto done;
        }
        if (e->begin > cursor) {
            rc = av_errf(err, AV_EFORMAT, "%s: gap in data buffer: bytes [%llu, %llu) before tensor '%s' belong to no tensor",
                         name, (unsigned long long)cursor, (unsigned long long)e->begin, e->name);
            goto done;
        }
        cursor = e->end;
    }
    if (cursor != data_size) {
        rc = av_errf(err, AV_EFORMAT, "%s: tensors cover %llu bytes but the data buffer at offset %llu has %llu",
                     name, (unsigned long long)cursor, (unsigned long long)data_start, (unsigned long long)data_size);
        goto done;
    }
    if (meta && (rc = parse_metadata(m, name, meta, err))) goto done;
    for (size_t i = 0; i < ne; i++) {
        const st_entry *e = &ents[i];
        av_tensor *t = av_model_add_tensor(m, e->name, e->dtype, e->n_dims, e->shape, buf + data_start + e->begin, NULL);
        if (!t) {
            rc = av_errf(err, AV_ENOMEM, "%s: out of memory adding tensor '%s'", name, e->name);
            goto done;
        }
        t->file_offset = data_start + e->begin;
    }
done:
    free(ents);
    json_decref(root);
    return rc;
}

/* Map path, keep the map alive in m and append its contents. */
static int read_file(av_model *m, const char *path, av_err *err) {
    av_map *map = NULL;
    int rc = av_map_open(path, &map, err);
    if (rc) return rc;
    rc = av_model_hold_map(m, map);
    if (rc) rc = av_errf(err, AV_ENOMEM, "%s: out of memory", path);
    else rc = parse_image(m, map->data, map->size, path, err);
    av_map_free(map); /* m holds it now (or it is unmapped on failure) */
    return rc;
}

static int name_cmp(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sorted names of tensors [from, m->n_tensors), or NULL when out of memory. */
static const char **sorted_names(const av_model *m, size_t from) {
    size_t n = m->n_tensors - from;
    const char **v = malloc((n ? n : 1) * sizeof *v);
    if (!v) return NULL;
    for (size_t i = 0; i < n; i++) v[i] = m->tensors[from + i].name;
    qsort(v, n, sizeof *v, name_cmp);
    return v;
}

/* model.safetensors.index.json: every shard in weight_map (in order of first
 * appearance), each tensor of weight_map checked to be in its shard. The
 * index's own "metadata" (total_size) is derived data and not kept. */
static int read_index(av_model *m, const char *path, av_err *err) {
    char *text = NULL, *dir = NULL, *shard = NULL;
    const char **names = NULL, **shards = NULL;
    json_t *root = NULL;
    size_t len, nshards = 0;
    int rc = av_read_file(path, ST_MAX_HEADER, &text, &len, err);
    if (rc) return rc;
    json_error_t je;
    root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        rc = av_errf(err, AV_EFORMAT, "%s: invalid JSON at byte %d: %s", path, je.position, je.text);
        goto done;
    }
    const json_t *wm = json_is_object(root) ? json_object_get(root, "weight_map") : NULL;
    if (!json_is_object(wm)) {
        rc = av_errf(err, AV_EFORMAT, "%s: no \"weight_map\" object", path);
        goto done;
    }
    if (!(shards = malloc((json_object_size(wm) + 1) * sizeof *shards))) {
        rc = av_errf(err, AV_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)wm, k, v) {
        if (!json_is_string(v) || !json_string_length(v) || strlen(json_string_value(v)) != json_string_length(v)) {
            rc = av_errf(err, AV_EFORMAT, "%s: weight_map['%s'] is not a file name", path, k);
            goto done;
        }
        size_t j = 0;
        while (j < nshards && strcmp(shards[j], json_string_value(v)) != 0) j++;
        if (j == nshards) shards[nshards++] = json_string_value(v);
    }
    const char *slash = strrchr(path, '/');
    size_t dl = slash ? (size_t)(slash - path) : 1;
    if (!(dir = strndup(slash ? path : ".", dl))) {
        rc = av_errf(err, AV_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    for (size_t s = 0; s < nshards; s++) {
        free(shard);
        if (!(shard = malloc(strlen(dir) + strlen(shards[s]) + 2))) {
            rc = av_errf(err, AV_ENOMEM, "%s: out of memory", path);
            goto done;
        }
        sprintf(shard, "%s/%s", dir, shards[s]);
        size_t from = m->n_tensors;
        if ((rc = read_file(m, shard, err))) {
            av_err_prefix(err, path);
            goto done;
        }
        free(names);
        if (!(names = sorted_names(m, from))) {
            rc = av_errf(err, AV_ENOMEM, "%s: out of memory", path);
            goto done;
        }
        json_object_foreach((json_t *)wm, k, v) {
            if (strcmp(json_string_value(v), shards[s]) != 0) continue;
            if (!bsearch(&k, names, m->n_tensors - from, sizeof *names, name_cmp)) {
                rc = av_errf(err, AV_EFORMAT, "%s: tensor '%s' is mapped to %s but that shard does not contain it", path,
                             k, shard);
                goto done;
            }
        }
    }
    rc = av_model_check_unique_names(m, path, err);
done:
    free(names);
    free(shards);
    free(shard);
    free(dir);
    json_decref(root);
    free(text);
    return rc;
}

static int is_regular(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int st_read(const char *path, av_model **out, av_err *err) {
    *out = NULL;
    av_model *m = av_model_new();
    char *p = NULL;
    int rc = 0;
    if (!m) return av_errf(err, AV_ENOMEM, "%s: out of memory", path);
    m->format = AV_FMT_SAFETENSORS;
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        if (!(p = malloc(strlen(path) + 48))) {
            rc = av_errf(err, AV_ENOMEM, "%s: out of memory", path);
            goto done;
        }
        sprintf(p, "%s/model.safetensors", path);
        if (is_regular(p)) {
            rc = read_file(m, p, err);
        } else {
            strcat(p, ".index.json");
            if (is_regular(p)) rc = read_index(m, p, err);
            else rc = av_errf(err, AV_EIO, "%s: no model.safetensors or model.safetensors.index.json", path);
        }
    } else if (av_has_ext(path, ".safetensors.index.json")) {
        rc = read_index(m, path, err);
    } else {
        rc = read_file(m, path, err);
    }
done:
    free(p);
    if (rc) av_model_free(m);
    else *out = m;
    return rc;
}

int st_read_mem(const void *buf, size_t size, const char *name, av_model **out, av_err *err) {
    *out = NULL;
    av_model *m = av_model_new();
    if (!m) return av_errf(err, AV_ENOMEM, "%s: out of memory", name);
    m->format = AV_FMT_SAFETENSORS;
    int rc = parse_image(m, buf, size, name, err);
    if (rc) av_model_free(m);
    else *out = m;
    return rc;
}

/* ======================================================================
 * Writing
 * ====================================================================== */

/* Append the "__metadata__" object (nothing when m has no KVs). */
static int put_metadata(st_buf *b, const av_model *m, const char *path, av_err *err) {
    if (!m->kv.n) return 0;
    st_buf_puts(b, "\"" META_KEY "\":{");
    st_buf enc = { 0 };
    int rc = 0;
    for (size_t i = 0; i < m->kv.n; i++) {
        const av_kv *kv = &m->kv.items[i];
        if (!st_utf8_valid(kv->key, strlen(kv->key))) {
            rc = av_errf(err, AV_EINVAL, "%s: metadata key '%s' is not valid UTF-8", path, kv->key);
            goto done;
        }
        if (i) st_buf_put(b, ",", 1);
        const av_value *v = &kv->val;
        /* plain strings as they are; anything else (or a key that would be
         * mistaken for an encoded one) typed under "gguf:<key>" */
        if (v->type == AV_KV_STRING && st_utf8_valid(v->str.s, (size_t)v->str.len) &&
            strncmp(kv->key, GGUF_PREFIX, strlen(GGUF_PREFIX)) != 0) {
            st_buf_json_str(b, kv->key, strlen(kv->key));
            st_buf_put(b, ":", 1);
            st_buf_json_str(b, v->str.s, (size_t)v->str.len);
            continue;
        }
        enc.len = 0;
        char *gk = malloc(strlen(GGUF_PREFIX) + strlen(kv->key) + 1);
        if (!gk) {
            rc = av_errf(err, AV_ENOMEM, "%s: out of memory", path);
            goto done;
        }
        sprintf(gk, GGUF_PREFIX "%s", kv->key);
        rc = st_meta_encode(&enc, v);
        if (!rc) {
            st_buf_json_str(b, gk, strlen(gk));
            st_buf_put(b, ":", 1);
            st_buf_json_str(b, enc.p, enc.len);
        }
        free(gk);
        if (rc) {
            rc = av_errf(err, rc, "%s: metadata '%s': cannot encode %s value", path, kv->key, av_kv_type_name(v->type));
            goto done;
        }
    }
    st_buf_put(b, "}", 1);
done:
    st_buf_release(&enc);
    return rc;
}

static int tensor_name_cmp(const void *a, const void *b) {
    return strcmp((*(const av_tensor *const *)a)->name, (*(const av_tensor *const *)b)->name);
}

int st_write(const av_model *m, const char *path, av_progress_fn progress, void *ud, av_err *err) {
    st_buf h = { 0 };
    const av_tensor **sorted = NULL;
    av_out *o = NULL;
    int rc = 0;
    /* validate tensors before creating anything */
    if (m->n_tensors && !(sorted = malloc(m->n_tensors * sizeof *sorted))) {
        rc = av_errf(err, AV_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    uint64_t data_size = 0;
    for (size_t i = 0; i < m->n_tensors; i++) {
        const av_tensor *t = &m->tensors[i];
        sorted[i] = t;
        int ok;
        size_t nb = av_tensor_nbytes(t, &ok);
        if (!st_dtype_name(t->dtype)) {
            rc = av_errf(err, AV_EINVAL, "%s: tensor '%s': dtype %s cannot be stored in safetensors", path, t->name,
                         av_dtype_name(t->dtype));
            goto fail;
        }
        if (!ok || (!t->data && nb) || nb > UINT64_MAX - data_size) {
            rc = av_errf(err, AV_EINVAL, "%s: tensor '%s': invalid shape or no data", path, t->name);
            goto fail;
        }
        if (!av_can_convert(t->src_dtype, t->dtype)) {
            rc = av_errf(err, AV_EUNSUPPORTED, "%s: tensor '%s': cannot convert %s to %s", path, t->name,
                         av_dtype_name(t->src_dtype), av_dtype_name(t->dtype));
            goto fail;
        }
        if (!st_utf8_valid(t->name, strlen(t->name)) || strcmp(t->name, META_KEY) == 0) {
            rc = av_errf(err, AV_EINVAL, "%s: tensor '%s': name is not valid UTF-8 or is reserved", path, t->name);
            goto fail;
        }
        data_size += nb;
    }
    if (m->n_tensors) qsort(sorted, m->n_tensors, sizeof *sorted, tensor_name_cmp);
    for (size_t i = 1; i < m->n_tensors; i++) {
        if (strcmp(sorted[i - 1]->name, sorted[i]->name) == 0) {
            rc = av_errf(err, AV_EINVAL, "%s: tensor '%s' appears twice", path, sorted[i]->name);
            goto fail;
        }
    }

    /* header JSON */
    st_buf_put(&h, "{", 1);
    if ((rc = put_metadata(&h, m, path, err))) goto fail;
    uint64_t off = 0;
    for (size_t i = 0; i < m->n_tensors; i++) {
        const av_tensor *t = &m->tensors[i];
        int ok;
        uint64_t nb = av_tensor_nbytes(t, &ok);
        if (h.len > 1) st_buf_put(&h, ",", 1);
        st_buf_json_str(&h, t->name, strlen(t->name));
        st_buf_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", st_dtype_name(t->dtype));
        for (int d = 0; d < t->n_dims; d++) st_buf_printf(&h, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        st_buf_printf(&h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off, (unsigned long long)(off + nb));
        off += nb;
    }
    st_buf_put(&h, "}", 1);
    while (!h.oom && h.len % 8) st_buf_put(&h, " ", 1);
    if (h.oom) {
        rc = av_errf(err, AV_ENOMEM, "%s: out of memory building the header", path);
        goto fail;
    }
    if (h.len > ST_MAX_HEADER) {
        rc = av_errf(err, AV_EINVAL, "%s: header would be %zu bytes (limit %u)", path, h.len, ST_MAX_HEADER);
        goto fail;
    }

    /* bytes */
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)h.len >> (8 * i));
    const uint64_t total = 8 + h.len + data_size;
    uint64_t done = 8 + h.len;
    if ((rc = av_out_open(path, &o, err))) goto fail;
    if ((rc = av_out_write(o, len8, 8, err)) || (rc = av_out_write(o, h.p, h.len, err))) goto fail;
    if (progress) progress(ud, done, total);
    for (size_t i = 0; i < m->n_tensors; i++)
        if ((rc = av_write_tensor_data(o, &m->tensors[i], &done, total, progress, ud, err))) {
            if (err && !strstr(err->msg, path)) av_err_prefix(err, path);
            goto fail;
        }
    rc = av_out_commit(o, err); /* frees o either way */
    o = NULL;
fail:
    av_out_abort(o);
    st_buf_release(&h);
    free(sorted);
    return rc;
}
