#include "kv.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

static const size_t SCALAR_SIZE[AV_KV_TYPE_COUNT] = {
    [AV_KV_U8] = 1, [AV_KV_I8] = 1, [AV_KV_U16] = 2, [AV_KV_I16] = 2,
    [AV_KV_U32] = 4, [AV_KV_I32] = 4, [AV_KV_F32] = 4, [AV_KV_BOOL] = 1,
    [AV_KV_U64] = 8, [AV_KV_I64] = 8, [AV_KV_F64] = 8,
};
static const char *const TYPE_NAME[AV_KV_TYPE_COUNT] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
};

size_t av_kv_scalar_size(av_kv_type t) {
    return (unsigned)t < AV_KV_TYPE_COUNT ? SCALAR_SIZE[t] : 0;
}
const char *av_kv_type_name(int t) {
    return t >= 0 && t < AV_KV_TYPE_COUNT ? TYPE_NAME[t] : "?";
}

void av_kvs_init(av_kvs *kv) { memset(kv, 0, sizeof *kv); }

void av_value_release(av_value *v) {
    if (!v) return;
    if (v->type == AV_KV_STRING) {
        free(v->str.s);
    } else if (v->type == AV_KV_ARRAY) {
        if (v->arr.elem == AV_KV_STRING) {
            av_str *s = v->arr.data;
            for (uint64_t i = 0; s && i < v->arr.n; i++) free(s[i].s);
        } else if (v->arr.elem == AV_KV_ARRAY) {
            av_value *s = v->arr.data;
            for (uint64_t i = 0; s && i < v->arr.n; i++) av_value_release(&s[i]);
        }
        free(v->arr.data);
    }
    memset(v, 0, sizeof *v);
}

void av_kvs_release(av_kvs *kv) {
    if (!kv) return;
    for (size_t i = 0; i < kv->n; i++) {
        free(kv->items[i].key);
        av_value_release(&kv->items[i].val);
    }
    free(kv->items);
    memset(kv, 0, sizeof *kv);
}

static char *dup_bytes(const char *s, uint64_t n) {
    char *d = malloc((size_t)n + 1);
    if (!d) return NULL;
    if (n) memcpy(d, s, (size_t)n);
    d[n] = '\0';
    return d;
}

int av_value_copy(av_value *dst, const av_value *src) {
    memset(dst, 0, sizeof *dst);
    dst->type = src->type;
    if (src->type == AV_KV_STRING) {
        dst->str.len = src->str.len;
        if (!(dst->str.s = dup_bytes(src->str.s, src->str.len))) return AV_ENOMEM;
        return 0;
    }
    if (src->type != AV_KV_ARRAY) {
        *dst = *src;
        return 0;
    }
    const av_array *a = &src->arr;
    dst->arr.elem = a->elem;
    dst->arr.n = a->n;
    if (!a->n) return 0;
    if (a->elem == AV_KV_STRING) {
        av_str *d = calloc(a->n, sizeof *d);
        if (!d) return AV_ENOMEM;
        dst->arr.data = d;
        const av_str *s = a->data;
        for (uint64_t i = 0; i < a->n; i++) {
            d[i].len = s[i].len;
            if (!(d[i].s = dup_bytes(s[i].s, s[i].len))) { dst->arr.n = i; av_value_release(dst); return AV_ENOMEM; }
        }
    } else if (a->elem == AV_KV_ARRAY) {
        av_value *d = calloc(a->n, sizeof *d);
        if (!d) return AV_ENOMEM;
        dst->arr.data = d;
        const av_value *s = a->data;
        for (uint64_t i = 0; i < a->n; i++)
            if (av_value_copy(&d[i], &s[i])) { dst->arr.n = i; av_value_release(dst); return AV_ENOMEM; }
    } else {
        size_t b = av_kv_scalar_size(a->elem) * a->n;
        if (!(dst->arr.data = malloc(b))) return AV_ENOMEM;
        memcpy(dst->arr.data, a->data, b);
    }
    return 0;
}

long av_kvs_index(const av_kvs *kv, const char *key) {
    for (size_t i = 0; i < kv->n; i++)
        if (strcmp(kv->items[i].key, key) == 0) return (long)i;
    return -1;
}

const av_kv *av_kvs_find(const av_kvs *kv, const char *key) {
    long i = av_kvs_index(kv, key);
    return i < 0 ? NULL : &kv->items[i];
}

int av_kvs_set(av_kvs *kv, const char *key, av_value *val) {
    long i = av_kvs_index(kv, key);
    if (i >= 0) {
        av_value_release(&kv->items[i].val);
        kv->items[i].val = *val;
        memset(val, 0, sizeof *val);
        return 0;
    }
    if (kv->n == kv->cap) {
        size_t nc = kv->cap ? kv->cap * 2 : 16;
        av_kv *ni = realloc(kv->items, nc * sizeof *ni);
        if (!ni) return AV_ENOMEM;
        kv->items = ni;
        kv->cap = nc;
    }
    char *k = strdup(key);
    if (!k) return AV_ENOMEM;
    kv->items[kv->n].key = k;
    kv->items[kv->n].val = *val;
    kv->n++;
    memset(val, 0, sizeof *val);
    return 0;
}

void av_kvs_remove(av_kvs *kv, const char *key) {
    long i = av_kvs_index(kv, key);
    if (i < 0) return;
    free(kv->items[i].key);
    av_value_release(&kv->items[i].val);
    memmove(&kv->items[i], &kv->items[i + 1], (kv->n - (size_t)i - 1) * sizeof kv->items[0]);
    kv->n--;
}

static int set_scalar(av_kvs *kv, const char *key, av_value v) { return av_kvs_set(kv, key, &v); }

int av_kvs_set_u32(av_kvs *kv, const char *key, uint32_t x) {
    return set_scalar(kv, key, (av_value){ .type = AV_KV_U32, .u = x });
}
int av_kvs_set_i32(av_kvs *kv, const char *key, int32_t x) {
    return set_scalar(kv, key, (av_value){ .type = AV_KV_I32, .i = x });
}
int av_kvs_set_f32(av_kvs *kv, const char *key, float x) {
    return set_scalar(kv, key, (av_value){ .type = AV_KV_F32, .f = x });
}
int av_kvs_set_bool(av_kvs *kv, const char *key, int x) {
    return set_scalar(kv, key, (av_value){ .type = AV_KV_BOOL, .u = x ? 1 : 0 });
}
int av_kvs_set_str(av_kvs *kv, const char *key, const char *s) {
    av_value v = { .type = AV_KV_STRING };
    v.str.len = strlen(s);
    if (!(v.str.s = dup_bytes(s, v.str.len))) return AV_ENOMEM;
    int rc = av_kvs_set(kv, key, &v);
    if (rc) av_value_release(&v);
    return rc;
}
int av_kvs_set_arr(av_kvs *kv, const char *key, av_kv_type elem, const void *data, uint64_t n) {
    assert(av_kv_scalar_size(elem) > 0);
    av_value v = { .type = AV_KV_ARRAY };
    v.arr.elem = elem;
    v.arr.n = n;
    size_t b = av_kv_scalar_size(elem) * n;
    if (n && !(v.arr.data = malloc(b))) return AV_ENOMEM;
    if (n) memcpy(v.arr.data, data, b);
    int rc = av_kvs_set(kv, key, &v);
    if (rc) av_value_release(&v);
    return rc;
}
int av_kvs_set_str_arr(av_kvs *kv, const char *key, const char *const *strs, const uint64_t *lens, uint64_t n) {
    av_value v = { .type = AV_KV_ARRAY };
    v.arr.elem = AV_KV_STRING;
    av_str *d = n ? calloc(n, sizeof *d) : NULL;
    if (n && !d) return AV_ENOMEM;
    v.arr.data = d;
    for (uint64_t i = 0; i < n; i++) {
        d[i].len = lens ? lens[i] : strlen(strs[i]);
        v.arr.n = i + 1;
        if (!(d[i].s = dup_bytes(strs[i], d[i].len))) { av_value_release(&v); return AV_ENOMEM; }
    }
    v.arr.n = n;
    int rc = av_kvs_set(kv, key, &v);
    if (rc) av_value_release(&v);
    return rc;
}

static int is_unsigned(av_kv_type t) {
    return t == AV_KV_U8 || t == AV_KV_U16 || t == AV_KV_U32 || t == AV_KV_U64 || t == AV_KV_BOOL;
}
static int is_signed(av_kv_type t) {
    return t == AV_KV_I8 || t == AV_KV_I16 || t == AV_KV_I32 || t == AV_KV_I64;
}

int av_kvs_get_u64(const av_kvs *kv, const char *key, uint64_t *out) {
    const av_kv *e = av_kvs_find(kv, key);
    if (!e) return AV_ENOTFOUND;
    if (is_unsigned(e->val.type)) { *out = e->val.u; return 0; }
    if (is_signed(e->val.type) && e->val.i >= 0) { *out = (uint64_t)e->val.i; return 0; }
    return AV_EFORMAT;
}
int av_kvs_get_i64(const av_kvs *kv, const char *key, int64_t *out) {
    const av_kv *e = av_kvs_find(kv, key);
    if (!e) return AV_ENOTFOUND;
    if (is_signed(e->val.type)) { *out = e->val.i; return 0; }
    if (is_unsigned(e->val.type) && e->val.u <= INT64_MAX) { *out = (int64_t)e->val.u; return 0; }
    return AV_EFORMAT;
}
int av_kvs_get_f64(const av_kvs *kv, const char *key, double *out) {
    const av_kv *e = av_kvs_find(kv, key);
    if (!e) return AV_ENOTFOUND;
    if (e->val.type == AV_KV_F32 || e->val.type == AV_KV_F64) { *out = e->val.f; return 0; }
    if (is_signed(e->val.type)) { *out = (double)e->val.i; return 0; }
    if (is_unsigned(e->val.type)) { *out = (double)e->val.u; return 0; }
    return AV_EFORMAT;
}
int av_kvs_get_str(const av_kvs *kv, const char *key, const char **out) {
    const av_kv *e = av_kvs_find(kv, key);
    if (!e) return AV_ENOTFOUND;
    if (e->val.type != AV_KV_STRING) return AV_EFORMAT;
    *out = e->val.str.s;
    return 0;
}

double av_array_get_f64(const av_array *a, uint64_t i) {
    assert(i < a->n);
    const uint8_t *p = (const uint8_t *)a->data + i * av_kv_scalar_size(a->elem);
    switch (a->elem) {
    case AV_KV_F32: { float f; memcpy(&f, p, 4); return f; }
    case AV_KV_F64: { double d; memcpy(&d, p, 8); return d; }
    default: return (double)av_array_get_i64(a, i);
    }
}

int64_t av_array_get_i64(const av_array *a, uint64_t i) {
    assert(i < a->n);
    const uint8_t *p = (const uint8_t *)a->data + i * av_kv_scalar_size(a->elem);
    switch (a->elem) {
    case AV_KV_U8: case AV_KV_BOOL: return *p;
    case AV_KV_I8: return (int8_t)*p;
    case AV_KV_U16: { uint16_t x; memcpy(&x, p, 2); return x; }
    case AV_KV_I16: { int16_t x; memcpy(&x, p, 2); return x; }
    case AV_KV_U32: { uint32_t x; memcpy(&x, p, 4); return x; }
    case AV_KV_I32: { int32_t x; memcpy(&x, p, 4); return x; }
    case AV_KV_U64: { uint64_t x; memcpy(&x, p, 8); return (int64_t)x; }
    case AV_KV_I64: { int64_t x; memcpy(&x, p, 8); return x; }
    case AV_KV_F32: { float f; memcpy(&f, p, 4); return (int64_t)f; }
    case AV_KV_F64: { double d; memcpy(&d, p, 8); return (int64_t)d; }
    default: return 0;
    }
}
