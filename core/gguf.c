/* gguf.c — GGUF reader (v2, v3) and writer (v3).
 *
 * Layout: "GGUF" u32 version, u64 n_tensors, u64 n_kv, KVs, tensor infos,
 * padding to general.alignment, data section. Every count and length read is
 * checked against the bytes left before it is used. */
#include "gguf.h"

#include <stdlib.h>
#include <string.h>

#define GGUF_MAGIC "GGUF"
#define MAX_ARRAY_DEPTH 8   /* nested arrays: bound recursion on hostile input */

/* ---------------- reader ---------------- */

typedef struct cursor {
    const uint8_t *p;
    size_t size, pos;
    const char *name;
    av_err *err;
} cursor;

static int need(cursor *c, uint64_t n, const char *what) {
    if (n > c->size - c->pos)
        return av_errf(c->err, AV_EFORMAT, "%s: truncated at offset %zu: %s needs %llu bytes, %zu left",
                       c->name, c->pos, what, (unsigned long long)n, c->size - c->pos);
    return 0;
}

static int rd(cursor *c, void *dst, size_t n, const char *what) {
    int rc = need(c, n, what);
    if (rc) return rc;
    memcpy(dst, c->p + c->pos, n);
    c->pos += n;
    return 0;
}

static int rd_u32(cursor *c, uint32_t *v, const char *what) { return rd(c, v, 4, what); }
static int rd_u64(cursor *c, uint64_t *v, const char *what) { return rd(c, v, 8, what); }

/* String: u64 length then bytes; copied and NUL-terminated. */
static int rd_str(cursor *c, av_str *s, const char *what) {
    uint64_t len;
    size_t at = c->pos;
    int rc = rd_u64(c, &len, what);
    if (rc) return rc;
    if (len > c->size - c->pos)
        return av_errf(c->err, AV_EFORMAT, "%s: %s at offset %zu has length %llu but only %zu bytes remain",
                       c->name, what, at, (unsigned long long)len, c->size - c->pos);
    s->s = malloc((size_t)len + 1);
    if (!s->s) return av_errf(c->err, AV_ENOMEM, "%s: out of memory reading %s", c->name, what);
    memcpy(s->s, c->p + c->pos, (size_t)len);
    s->s[len] = '\0';
    s->len = len;
    c->pos += (size_t)len;
    return 0;
}

static int rd_value(cursor *c, av_kv_type type, av_value *v, int depth, const char *key);

static int rd_array(cursor *c, av_array *a, int depth, const char *key) {
    uint32_t et;
    uint64_t n;
    size_t at = c->pos;
    int rc;
    if ((rc = rd_u32(c, &et, "array type")) || (rc = rd_u64(c, &n, "array length"))) return rc;
    if (et >= AV_KV_TYPE_COUNT)
        return av_errf(c->err, AV_EFORMAT, "%s: key '%s': array at offset %zu has unknown element type %u",
                       c->name, key, at, et);
    if (et == AV_KV_ARRAY && depth >= MAX_ARRAY_DEPTH)
        return av_errf(c->err, AV_EFORMAT, "%s: key '%s': arrays nested deeper than %d at offset %zu",
                       c->name, key, MAX_ARRAY_DEPTH, at);
    /* smallest possible encoding of one element bounds n by the bytes left */
    size_t min_elem = et == AV_KV_STRING ? 8 : et == AV_KV_ARRAY ? 12 : av_kv_scalar_size(et);
    if (n > (c->size - c->pos) / min_elem)
        return av_errf(c->err, AV_EFORMAT, "%s: key '%s': array at offset %zu claims %llu elements, more than the %zu bytes left can hold",
                       c->name, key, at, (unsigned long long)n, c->size - c->pos);
    a->elem = (av_kv_type)et;
    a->n = 0;
    a->data = NULL;
    if (n == 0) return 0;
    if (et == AV_KV_STRING || et == AV_KV_ARRAY) {
        size_t es = et == AV_KV_STRING ? sizeof(av_str) : sizeof(av_value);
        a->data = calloc((size_t)n, es);
        if (!a->data) return av_errf(c->err, AV_ENOMEM, "%s: out of memory for key '%s'", c->name, key);
        for (uint64_t i = 0; i < n; i++) {
            a->n = i + 1; /* so release frees what was read */
            rc = et == AV_KV_STRING ? rd_str(c, &((av_str *)a->data)[i], "array string")
                                    : rd_array(c, &((av_value *)a->data)[i].arr, depth + 1, key);
            if (et == AV_KV_ARRAY) ((av_value *)a->data)[i].type = AV_KV_ARRAY;
            if (rc) return rc;
        }
        return 0;
    }
    size_t nb = (size_t)n * min_elem;
    a->data = malloc(nb);
    if (!a->data) return av_errf(c->err, AV_ENOMEM, "%s: out of memory for key '%s'", c->name, key);
    a->n = n;
    return rd(c, a->data, nb, "array data");
}

static int rd_value(cursor *c, av_kv_type type, av_value *v, int depth, const char *key) {
    memset(v, 0, sizeof *v);
    v->type = type;
    uint8_t b[8] = { 0 };
    int rc;
    switch (type) {
    case AV_KV_U8: case AV_KV_BOOL: rc = rd(c, b, 1, key); v->u = b[0]; return rc;
    case AV_KV_I8: rc = rd(c, b, 1, key); v->i = (int8_t)b[0]; return rc;
    case AV_KV_U16: { uint16_t x = 0; rc = rd(c, &x, 2, key); v->u = x; return rc; }
    case AV_KV_I16: { int16_t x = 0; rc = rd(c, &x, 2, key); v->i = x; return rc; }
    case AV_KV_U32: { uint32_t x = 0; rc = rd(c, &x, 4, key); v->u = x; return rc; }
    case AV_KV_I32: { int32_t x = 0; rc = rd(c, &x, 4, key); v->i = x; return rc; }
    case AV_KV_F32: { float x = 0; rc = rd(c, &x, 4, key); v->f = x; return rc; }
    case AV_KV_U64: return rd(c, &v->u, 8, key);
    case AV_KV_I64: return rd(c, &v->i, 8, key);
    case AV_KV_F64: return rd(c, &v->f, 8, key);
    case AV_KV_STRING: return rd_str(c, &v->str, key);
    case AV_KV_ARRAY: return rd_array(c, &v->arr, depth, key);
    default: return av_errf(c->err, AV_EFORMAT, "%s: key '%s' has unknown type %d", c->name, key, (int)type);
    }
}

typedef struct tinfo { uint64_t off, size; size_t idx; } tinfo;

static int cmp_tinfo(const void *a, const void *b) {
    const tinfo *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off;
}

static int parse(const uint8_t *buf, size_t size, const char *name, av_model *m, av_err *err) {
    cursor c = { buf, size, 0, name, err };
    int rc;
    tinfo *ti = NULL;
    char magic[4];
    if (size < 4 || memcmp(buf, GGUF_MAGIC, 4) != 0) {
        if (size < 4) return av_errf(err, AV_EFORMAT, "%s: not a GGUF file (%zu bytes, too short for the magic)", name, size);
        return av_errf(err, AV_EFORMAT, "%s: not a GGUF file (magic %02x %02x %02x %02x, expected \"GGUF\")",
                       name, buf[0], buf[1], buf[2], buf[3]);
    }
    rd(&c, magic, 4, "magic");
    uint32_t version;
    if ((rc = rd_u32(&c, &version, "version"))) return rc;
    if (version == 1)
        return av_errf(err, AV_EUNSUPPORTED, "%s: GGUF version 1 is not supported (convert it with a newer llama.cpp)", name);
    if (version != 2 && version != 3) {
        if ((version & 0xffff) == 0 && (version >> 16))
            return av_errf(err, AV_EUNSUPPORTED, "%s: big-endian GGUF is not supported", name);
        return av_errf(err, AV_EFORMAT, "%s: unknown GGUF version %u at offset 4", name, version);
    }
    m->gguf_version = version;
    uint64_t n_tensors, n_kv;
    if ((rc = rd_u64(&c, &n_tensors, "tensor count")) || (rc = rd_u64(&c, &n_kv, "metadata count"))) return rc;
    /* a KV is at least 8 (key len) + 4 (type) + 1 bytes; a tensor info at least 8+4+8+4+8 */
    if (n_kv > (size - c.pos) / 13)
        return av_errf(err, AV_EFORMAT, "%s: metadata count %llu at offset 16 is more than the file can hold", name, (unsigned long long)n_kv);
    if (n_tensors > (size - c.pos) / 32)
        return av_errf(err, AV_EFORMAT, "%s: tensor count %llu at offset 8 is more than the file can hold", name, (unsigned long long)n_tensors);

    for (uint64_t i = 0; i < n_kv; i++) {
        size_t at = c.pos;
        av_str key = { 0, NULL };
        av_value v = { 0 };
        uint32_t type;
        if ((rc = rd_str(&c, &key, "metadata key"))) return rc;
        if (av_kvs_find(&m->kv, key.s)) {
            rc = av_errf(err, AV_EFORMAT, "%s: duplicate metadata key '%s' at offset %zu", name, key.s, at);
            free(key.s);
            return rc;
        }
        if ((rc = rd_u32(&c, &type, key.s))) { free(key.s); return rc; }
        if (type >= AV_KV_TYPE_COUNT) {
            rc = av_errf(err, AV_EFORMAT, "%s: key '%s' at offset %zu has unknown value type %u", name, key.s, at, type);
            free(key.s);
            return rc;
        }
        rc = rd_value(&c, (av_kv_type)type, &v, 0, key.s);
        if (!rc && av_kvs_set(&m->kv, key.s, &v)) rc = av_errf(err, AV_ENOMEM, "%s: out of memory", name);
        av_value_release(&v);
        free(key.s);
        if (rc) return rc;
    }

    uint64_t alignment = GGUF_DEFAULT_ALIGNMENT;
    const av_kv *al = av_kvs_find(&m->kv, "general.alignment");
    if (al) {
        if (al->val.type != AV_KV_U32)
            return av_errf(err, AV_EFORMAT, "%s: general.alignment has type %s, expected u32", name, av_kv_type_name(al->val.type));
        alignment = al->val.u;
        if (alignment == 0 || (alignment & (alignment - 1)))
            return av_errf(err, AV_EFORMAT, "%s: general.alignment %llu is not a power of two", name, (unsigned long long)alignment);
    }

    ti = calloc(n_tensors ? (size_t)n_tensors : 1, sizeof *ti);
    if (!ti) return av_errf(err, AV_ENOMEM, "%s: out of memory", name);
    for (uint64_t i = 0; i < n_tensors; i++) {
        size_t at = c.pos;
        av_str tn = { 0, NULL };
        uint32_t nd, type;
        uint64_t ne[GGUF_MAX_DIMS], off;
        if ((rc = rd_str(&c, &tn, "tensor name"))) goto fail;
        if ((rc = rd_u32(&c, &nd, "tensor n_dims"))) { free(tn.s); goto fail; }
        if (nd > GGUF_MAX_DIMS) {
            rc = av_errf(err, AV_EFORMAT, "%s: tensor '%s' at offset %zu has %u dimensions (max %d)", name, tn.s, at, nd, GGUF_MAX_DIMS);
            free(tn.s);
            goto fail;
        }
        rc = 0;
        for (uint32_t d = 0; d < nd && !rc; d++) rc = rd_u64(&c, &ne[d], "tensor shape");
        if (!rc) rc = rd_u32(&c, &type, "tensor type");
        if (!rc) rc = rd_u64(&c, &off, "tensor offset");
        if (rc) { free(tn.s); goto fail; }
        const av_dtype_traits *tr = av_dtype_traits_of((int)type);
        if (!tr || !tr->in_gguf) {
            rc = av_errf(err, AV_EFORMAT, "%s: tensor '%s' at offset %zu has unknown type %u", name, tn.s, at, type);
            free(tn.s);
            goto fail;
        }
        if (av_model_find(m, tn.s)) {
            rc = av_errf(err, AV_EFORMAT, "%s: duplicate tensor name '%s' at offset %zu", name, tn.s, at);
            free(tn.s);
            goto fail;
        }
        int64_t shape[GGUF_MAX_DIMS];
        int64_t nel = 1;
        for (uint32_t d = 0; d < nd; d++) {
            if (ne[d] > (uint64_t)INT64_MAX || (ne[d] && (uint64_t)nel > (uint64_t)INT64_MAX / ne[d])) {
                rc = av_errf(err, AV_EFORMAT, "%s: tensor '%s' at offset %zu: element count overflows", name, tn.s, at);
                free(tn.s);
                goto fail;
            }
            nel *= (int64_t)ne[d];
            shape[nd - 1 - d] = (int64_t)ne[d]; /* GGUF ne[0] is fastest: reverse into PyTorch order */
        }
        if (nd && ne[0] % (uint64_t)tr->block_size) {
            rc = av_errf(err, AV_EFORMAT, "%s: tensor '%s' row of %llu elements is not a multiple of the %s block size %d",
                         name, tn.s, (unsigned long long)ne[0], tr->name, tr->block_size);
            free(tn.s);
            goto fail;
        }
        int ok;
        size_t nb = av_dtype_nbytes((int)type, nel, &ok);
        if (!ok) {
            rc = av_errf(err, AV_EFORMAT, "%s: tensor '%s': byte size overflows", name, tn.s);
            free(tn.s);
            goto fail;
        }
        if (off % alignment) {
            rc = av_errf(err, AV_EFORMAT, "%s: tensor '%s' data offset %llu is not a multiple of the alignment %llu",
                         name, tn.s, (unsigned long long)off, (unsigned long long)alignment);
            free(tn.s);
            goto fail;
        }
        av_tensor *t = av_model_add_tensor(m, tn.s, (av_dtype)type, (int)nd, shape, NULL, NULL);
        free(tn.s);
        if (!t) { rc = av_errf(err, AV_ENOMEM, "%s: out of memory", name); goto fail; }
        ti[i] = (tinfo){ off, nb, (size_t)i };
    }

    /* data section starts at the next multiple of the alignment */
    uint64_t data_start = c.pos + (alignment - c.pos % alignment) % alignment;
    if (n_tensors && data_start > size) {
        rc = av_errf(err, AV_EFORMAT, "%s: data section at offset %llu starts past end of file (size %zu)",
                     name, (unsigned long long)data_start, size);
        goto fail;
    }
    uint64_t data_size = n_tensors ? size - data_start : 0;
    qsort(ti, (size_t)n_tensors, sizeof *ti, cmp_tinfo);
    for (uint64_t i = 0; i < n_tensors; i++) {
        av_tensor *t = &m->tensors[ti[i].idx];
        if (ti[i].off > data_size || ti[i].size > data_size - ti[i].off) {
            rc = av_errf(err, AV_EFORMAT, "%s: tensor '%s' data at offset %llu (+%llu bytes) runs past end of file (size %zu)",
                         name, t->name, (unsigned long long)(data_start + ti[i].off), (unsigned long long)ti[i].size, size);
            goto fail;
        }
        if (i && ti[i - 1].off + ti[i - 1].size > ti[i].off) {
            rc = av_errf(err, AV_EFORMAT, "%s: tensor '%s' data at offset %llu overlaps tensor '%s'", name, t->name,
                         (unsigned long long)(data_start + ti[i].off), m->tensors[ti[i - 1].idx].name);
            goto fail;
        }
        t->file_offset = data_start + ti[i].off;
        t->data = buf + t->file_offset;
    }
    free(ti);
    m->format = AV_FMT_GGUF;
    return 0;
fail:
    free(ti);
    return rc;
}

int gguf_read_mem(const void *buf, size_t size, const char *name, av_model **out, av_err *err) {
    *out = NULL;
    av_model *m = av_model_new();
    if (!m) return av_errf(err, AV_ENOMEM, "%s: out of memory", name);
    int rc = parse(buf, size, name, m, err);
    if (rc) {
        av_model_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

int gguf_read(const char *path, av_model **out, av_err *err) {
    av_map *map;
    *out = NULL;
    int rc = av_map_open(path, &map, err);
    if (rc) return rc;
    rc = gguf_read_mem(map->data, map->size, path, out, err);
    if (!rc && av_model_hold_map(*out, map)) {
        av_model_free(*out);
        *out = NULL;
        rc = av_errf(err, AV_ENOMEM, "%s: out of memory", path);
    }
    av_map_free(map);
    return rc;
}

/* ---------------- writer ---------------- */

static int wr_str(av_out *o, const char *s, uint64_t len, av_err *err) {
    int rc = av_out_write(o, &len, 8, err);
    return rc ? rc : av_out_write(o, s, (size_t)len, err);
}

static int wr_array(av_out *o, const av_array *a, av_err *err);

static int wr_value(av_out *o, const av_value *v, av_err *err) {
    uint8_t b[8];
    switch (v->type) {
    case AV_KV_U8: case AV_KV_I8: case AV_KV_BOOL: b[0] = (uint8_t)v->u; return av_out_write(o, b, 1, err);
    case AV_KV_U16: case AV_KV_I16: { uint16_t x = (uint16_t)v->u; return av_out_write(o, &x, 2, err); }
    case AV_KV_U32: case AV_KV_I32: { uint32_t x = (uint32_t)v->u; return av_out_write(o, &x, 4, err); }
    case AV_KV_F32: { float x = (float)v->f; return av_out_write(o, &x, 4, err); }
    case AV_KV_U64: case AV_KV_I64: return av_out_write(o, &v->u, 8, err);
    case AV_KV_F64: return av_out_write(o, &v->f, 8, err);
    case AV_KV_STRING: return wr_str(o, v->str.s, v->str.len, err);
    case AV_KV_ARRAY: return wr_array(o, &v->arr, err);
    default: return av_errf(err, AV_EINVAL, "%s: cannot write value type %d", o->path, (int)v->type);
    }
}

static int wr_array(av_out *o, const av_array *a, av_err *err) {
    uint32_t et = (uint32_t)a->elem;
    int rc;
    if ((rc = av_out_write(o, &et, 4, err)) || (rc = av_out_write(o, &a->n, 8, err))) return rc;
    if (a->elem == AV_KV_STRING) {
        const av_str *s = a->data;
        for (uint64_t i = 0; i < a->n; i++)
            if ((rc = wr_str(o, s[i].s, s[i].len, err))) return rc;
        return 0;
    }
    if (a->elem == AV_KV_ARRAY) {
        const av_value *s = a->data;
        for (uint64_t i = 0; i < a->n; i++)
            if ((rc = wr_array(o, &s[i].arr, err))) return rc;
        return 0;
    }
    return a->n ? av_out_write(o, a->data, (size_t)a->n * av_kv_scalar_size(a->elem), err) : 0;
}

static uint64_t pad_to(uint64_t x, uint64_t a) { return (a - x % a) % a; }

int gguf_write(const av_model *m, const char *path, av_progress_fn progress, void *ud, av_err *err) {
    uint64_t alignment = GGUF_DEFAULT_ALIGNMENT;
    const av_kv *al = av_kvs_find(&m->kv, "general.alignment");
    if (al) {
        if (al->val.type != AV_KV_U32 || !al->val.u || (al->val.u & (al->val.u - 1)))
            return av_errf(err, AV_EINVAL, "%s: general.alignment must be a u32 power of two", path);
        alignment = al->val.u;
    }
    uint64_t total = 0;
    for (size_t i = 0; i < m->n_tensors; i++) {
        const av_tensor *t = &m->tensors[i];
        const av_dtype_traits *tr = av_dtype_traits_of(t->dtype);
        if (!tr || !tr->in_gguf)
            return av_errf(err, AV_EINVAL, "%s: tensor '%s' has type %s, which GGUF cannot store", path, t->name, av_dtype_name(t->dtype));
        if (t->n_dims > GGUF_MAX_DIMS)
            return av_errf(err, AV_EINVAL, "%s: tensor '%s' has %d dimensions; GGUF allows %d", path, t->name, t->n_dims, GGUF_MAX_DIMS);
        int ok;
        size_t nb = av_tensor_nbytes(t, &ok);
        if (!ok || (t->n_dims && t->shape[t->n_dims - 1] % tr->block_size))
            return av_errf(err, AV_EINVAL, "%s: tensor '%s' rows are not a multiple of the %s block size", path, t->name, tr->name);
        total += nb + pad_to(nb, alignment);
    }
    av_out *o;
    int rc = av_out_open(path, &o, err);
    if (rc) return rc;
    uint32_t version = 3;
    uint64_t nt = m->n_tensors, nkv = m->kv.n;
    if ((rc = av_out_write(o, GGUF_MAGIC, 4, err)) || (rc = av_out_write(o, &version, 4, err)) ||
        (rc = av_out_write(o, &nt, 8, err)) || (rc = av_out_write(o, &nkv, 8, err)))
        goto fail;
    for (size_t i = 0; i < m->kv.n; i++) {
        const av_kv *kv = &m->kv.items[i];
        uint32_t type = (uint32_t)kv->val.type;
        if ((rc = wr_str(o, kv->key, strlen(kv->key), err)) || (rc = av_out_write(o, &type, 4, err)) ||
            (rc = wr_value(o, &kv->val, err)))
            goto fail;
    }
    uint64_t off = 0;
    for (size_t i = 0; i < m->n_tensors; i++) {
        const av_tensor *t = &m->tensors[i];
        uint32_t nd = (uint32_t)t->n_dims, type = (uint32_t)t->dtype;
        if ((rc = wr_str(o, t->name, strlen(t->name), err)) || (rc = av_out_write(o, &nd, 4, err))) goto fail;
        for (int d = t->n_dims - 1; d >= 0; d--) { /* PyTorch order -> ne[] */
            uint64_t ne = (uint64_t)t->shape[d];
            if ((rc = av_out_write(o, &ne, 8, err))) goto fail;
        }
        if ((rc = av_out_write(o, &type, 4, err)) || (rc = av_out_write(o, &off, 8, err))) goto fail;
        int ok;
        size_t nb = av_tensor_nbytes(t, &ok);
        off += nb + pad_to(nb, alignment);
    }
    /* llama.cpp and gguf-py pad the metadata only when a data section follows */
    if (m->n_tensors && (rc = av_out_zeros(o, (size_t)pad_to(o->pos, alignment), err))) goto fail;
    uint64_t done = 0;
    for (size_t i = 0; i < m->n_tensors; i++) {
        uint64_t start = o->pos;
        if ((rc = av_write_tensor_data(o, &m->tensors[i], &done, total, progress, ud, err))) goto fail;
        if ((rc = av_out_zeros(o, (size_t)pad_to(o->pos - start, alignment), err))) goto fail;
    }
    return av_out_commit(o, err);
fail:
    av_out_abort(o);
    return rc;
}
