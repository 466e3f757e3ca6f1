/* st_json.c — JSON writing helpers and the typed-metadata codec (see st_json.h). */
#include "st_json.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Nested-array depth st_meta_encode accepts: every level costs jansson two
 * nesting levels (object + array) and jansson stops at 2048. */
#define META_MAX_DEPTH 256

/* ---- buffer ---- */

void st_buf_release(st_buf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

static int buf_reserve(st_buf *b, size_t n) {
    if (b->oom) return -1;
    if (n > SIZE_MAX - b->len - 1) { b->oom = 1; return -1; }
    if (b->len + n + 1 <= b->cap) return 0;
    size_t nc = b->cap ? b->cap : 256;
    while (nc < b->len + n + 1) nc = nc > SIZE_MAX / 2 ? b->len + n + 1 : nc * 2;
    char *np = realloc(b->p, nc);
    if (!np) { b->oom = 1; return -1; }
    b->p = np;
    b->cap = nc;
    return 0;
}

void st_buf_put(st_buf *b, const void *s, size_t n) {
    if (buf_reserve(b, n)) return;
    if (n) memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void st_buf_puts(st_buf *b, const char *s) { st_buf_put(b, s, strlen(s)); }

void st_buf_printf(st_buf *b, const char *fmt, ...) {
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (k < 0) { b->oom = 1; return; }
    if ((size_t)k < sizeof tmp) { st_buf_put(b, tmp, (size_t)k); return; }
    if (buf_reserve(b, (size_t)k)) return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)k + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)k;
}

/* ---- UTF-8 and JSON strings ---- */

int st_utf8_valid(const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        if (c < 0x80) { i++; continue; }
        size_t k;
        unsigned cp;
        if (c >= 0xC2 && c <= 0xDF) { k = 1; cp = c & 0x1F; }
        else if (c >= 0xE0 && c <= 0xEF) { k = 2; cp = c & 0x0F; }
        else if (c >= 0xF0 && c <= 0xF4) { k = 3; cp = c & 0x07; }
        else return 0;
        if (n - i - 1 < k) return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + j] & 0x3F);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000)) return 0; /* overlong */
        if ((cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) return 0;
        i += k + 1;
    }
    return 1;
}

/* Escapes as serde_json does: \" \\ \b \f \n \r \t, other controls as \u00xx;
 * everything else (including DEL and non-ASCII) verbatim. */
void st_buf_json_str(st_buf *b, const char *s, size_t n) {
    st_buf_put(b, "\"", 1);
    size_t run = 0; /* start of the pending verbatim run */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[8];
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        default:
            if (c < 0x20) {
                snprintf(u, sizeof u, "\\u%04x", c);
                esc = u;
            }
        }
        if (!esc) continue;
        st_buf_put(b, s + run, i - run);
        st_buf_puts(b, esc);
        run = i + 1;
    }
    st_buf_put(b, s + run, n - run);
    st_buf_put(b, "\"", 1);
}

/* ---- encoding ---- */

static void enc_str(st_buf *b, const char *s, uint64_t n) {
    if (st_utf8_valid(s, (size_t)n)) {
        st_buf_json_str(b, s, (size_t)n);
        return;
    }
    static const char hex[] = "0123456789abcdef";
    st_buf_puts(b, "{\"hex\":\"");
    for (uint64_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char two[2] = { hex[c >> 4], hex[c & 15] };
        st_buf_put(b, two, 2);
    }
    st_buf_puts(b, "\"}");
}

static void enc_float(st_buf *b, double x, int is_f32) {
    char tmp[40];
    if (is_f32) {
        float f = (float)x;
        if (!isfinite(f)) {
            uint32_t u;
            memcpy(&u, &f, 4);
            st_buf_printf(b, "\"0x%08lx\"", (unsigned long)u);
            return;
        }
        snprintf(tmp, sizeof tmp, "%.9g", (double)f);
    } else {
        if (!isfinite(x)) {
            uint64_t u;
            memcpy(&u, &x, 8);
            st_buf_printf(b, "\"0x%016llx\"", (unsigned long long)u);
            return;
        }
        snprintf(tmp, sizeof tmp, "%.17g", x);
    }
    int real = 0;
    for (char *p = tmp; *p; p++) {
        if (*p == 'e') real = 1;
        else if (!(*p >= '0' && *p <= '9') && *p != '-' && *p != '+') { *p = '.'; real = 1; } /* any locale's radix */
    }
    st_buf_puts(b, tmp);
    if (!real) st_buf_puts(b, ".0"); /* keep it a JSON real: "-0" would parse as integer 0 */
}

/* One scalar (v->type not STRING/ARRAY). */
static void enc_scalar(st_buf *b, const av_value *v) {
    switch (v->type) {
    case AV_KV_BOOL: st_buf_puts(b, v->u ? "true" : "false"); break;
    case AV_KV_F32: enc_float(b, v->f, 1); break;
    case AV_KV_F64: enc_float(b, v->f, 0); break;
    case AV_KV_I8: case AV_KV_I16: case AV_KV_I32: case AV_KV_I64:
        st_buf_printf(b, "%lld", (long long)v->i);
        break;
    default:
        if (v->u > (uint64_t)INT64_MAX) st_buf_printf(b, "\"%llu\"", (unsigned long long)v->u);
        else st_buf_printf(b, "%llu", (unsigned long long)v->u);
    }
}

/* Element i of a packed scalar array as a value. */
static av_value load_elem(const av_array *a, uint64_t i) {
    const uint8_t *p = (const uint8_t *)a->data + i * av_kv_scalar_size(a->elem);
    av_value v = { .type = a->elem };
    switch (a->elem) {
    case AV_KV_U8: case AV_KV_BOOL: v.u = *p; break;
    case AV_KV_U16: { uint16_t x; memcpy(&x, p, 2); v.u = x; break; }
    case AV_KV_U32: { uint32_t x; memcpy(&x, p, 4); v.u = x; break; }
    case AV_KV_U64: memcpy(&v.u, p, 8); break;
    case AV_KV_F32: { float x; memcpy(&x, p, 4); v.f = x; break; }
    case AV_KV_F64: memcpy(&v.f, p, 8); break;
    default: v.i = av_array_get_i64(a, i);
    }
    return v;
}

static int valid_type(int t) { return t >= 0 && t < AV_KV_TYPE_COUNT; }

static int encode(st_buf *b, const av_value *v, int depth) {
    if (!valid_type(v->type) || depth > META_MAX_DEPTH) return AV_EINVAL;
    st_buf_printf(b, "{\"type\":\"%s\"", av_kv_type_name(v->type));
    if (v->type == AV_KV_STRING) {
        st_buf_puts(b, ",\"value\":");
        enc_str(b, v->str.s, v->str.len);
    } else if (v->type == AV_KV_ARRAY) {
        const av_array *a = &v->arr;
        if (!valid_type(a->elem) || (a->n && !a->data)) return AV_EINVAL;
        st_buf_printf(b, ",\"elem\":\"%s\",\"value\":[", av_kv_type_name(a->elem));
        for (uint64_t i = 0; i < a->n && !b->oom; i++) {
            if (i) st_buf_put(b, ",", 1);
            if (a->elem == AV_KV_STRING) {
                const av_str *s = (const av_str *)a->data + i;
                enc_str(b, s->s, s->len);
            } else if (a->elem == AV_KV_ARRAY) {
                const av_value *e = (const av_value *)a->data + i;
                if (e->type != AV_KV_ARRAY) return AV_EINVAL;
                int rc = encode(b, e, depth + 1);
                if (rc) return rc;
            } else {
                av_value e = load_elem(a, i);
                enc_scalar(b, &e);
            }
        }
        st_buf_put(b, "]", 1);
    } else {
        st_buf_puts(b, ",\"value\":");
        enc_scalar(b, v);
    }
    st_buf_put(b, "}", 1);
    return b->oom ? AV_ENOMEM : 0;
}

int st_meta_encode(st_buf *b, const av_value *v) { return encode(b, v, 0); }

/* ---- decoding ---- */

#define WHY(...) (snprintf(why, nwhy, __VA_ARGS__), -1)

static int type_from_name(const char *s) {
    for (int t = 0; t < AV_KV_TYPE_COUNT; t++)
        if (strcmp(av_kv_type_name(t), s) == 0) return t;
    return -1;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* "0x" + exactly 2*nbytes hex digits -> bits. */
static int parse_bits(const char *s, int nbytes, uint64_t *out) {
    if (s[0] != '0' || s[1] != 'x' || strlen(s) != (size_t)(2 + 2 * nbytes)) return -1;
    uint64_t u = 0;
    for (const char *p = s + 2; *p; p++) {
        int h = hexval(*p);
        if (h < 0) return -1;
        u = (u << 4) | (unsigned)h;
    }
    *out = u;
    return 0;
}

static int dec_str(const json_t *j, av_str *out, char *why, size_t nwhy) {
    if (json_is_string(j)) {
        size_t n = json_string_length(j);
        if (!(out->s = malloc(n + 1))) return WHY("out of memory");
        memcpy(out->s, json_string_value(j), n);
        out->s[n] = '\0';
        out->len = n;
        return 0;
    }
    const json_t *h = json_is_object(j) ? json_object_get(j, "hex") : NULL;
    if (!json_is_string(h)) return WHY("string must be a JSON string or {\"hex\": ...}");
    const char *s = json_string_value(h);
    size_t n = json_string_length(h);
    if (n % 2) return WHY("odd-length hex string");
    if (!(out->s = malloc(n / 2 + 1))) return WHY("out of memory");
    for (size_t i = 0; i < n / 2; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0) return WHY("bad hex digit in string");
        out->s[i] = (char)(hi << 4 | lo);
    }
    out->s[n / 2] = '\0';
    out->len = n / 2;
    return 0;
}

/* One scalar of type t into v (v->type set). */
static int dec_scalar(const json_t *j, av_kv_type t, av_value *v, char *why, size_t nwhy) {
    v->type = t;
    if (t == AV_KV_BOOL) {
        if (!json_is_boolean(j)) return WHY("bool value must be true or false");
        v->u = json_is_true(j);
        return 0;
    }
    if (t == AV_KV_F32 || t == AV_KV_F64) {
        if (json_is_string(j)) {
            uint64_t bits;
            if (parse_bits(json_string_value(j), t == AV_KV_F32 ? 4 : 8, &bits))
                return WHY("%s bits must be \"0x\" and %d hex digits", av_kv_type_name(t), t == AV_KV_F32 ? 8 : 16);
            if (t == AV_KV_F32) {
                uint32_t u = (uint32_t)bits;
                float f;
                memcpy(&f, &u, 4);
                v->f = f;
            } else {
                memcpy(&v->f, &bits, 8);
            }
            return 0;
        }
        if (!json_is_number(j)) return WHY("%s value must be a number", av_kv_type_name(t));
        double d = json_number_value(j);
        if (t == AV_KV_F32) {
            float f = (float)d;
            if (!isfinite(f)) return WHY("f32 value %g out of range", d);
            v->f = f;
        } else {
            v->f = d;
        }
        return 0;
    }
    if (t == AV_KV_U64 && json_is_string(j)) {
        const char *s = json_string_value(j);
        char *end;
        errno = 0;
        unsigned long long u = strtoull(s, &end, 10);
        if (!(*s >= '0' && *s <= '9') || *end || errno) return WHY("u64 string must be decimal digits");
        v->u = u;
        return 0;
    }
    if (!json_is_integer(j)) return WHY("%s value must be an integer", av_kv_type_name(t));
    long long x = json_integer_value(j);
    long long lo = 0, hi = 0;
    switch (t) {
    case AV_KV_U8: hi = UINT8_MAX; break;
    case AV_KV_U16: hi = UINT16_MAX; break;
    case AV_KV_U32: hi = UINT32_MAX; break;
    case AV_KV_U64: hi = INT64_MAX; break;
    case AV_KV_I8: lo = INT8_MIN; hi = INT8_MAX; break;
    case AV_KV_I16: lo = INT16_MIN; hi = INT16_MAX; break;
    case AV_KV_I32: lo = INT32_MIN; hi = INT32_MAX; break;
    default: lo = INT64_MIN; hi = INT64_MAX; break;
    }
    if (x < lo || x > hi) return WHY("%lld out of range for %s", x, av_kv_type_name(t));
    if (t == AV_KV_U8 || t == AV_KV_U16 || t == AV_KV_U32 || t == AV_KV_U64) v->u = (uint64_t)x;
    else v->i = x;
    return 0;
}

static void store_elem(av_array *a, uint64_t i, const av_value *v) {
    uint8_t *p = (uint8_t *)a->data + i * av_kv_scalar_size(a->elem);
    switch (a->elem) {
    case AV_KV_U8: case AV_KV_BOOL: *p = (uint8_t)v->u; break;
    case AV_KV_I8: *p = (uint8_t)(int8_t)v->i; break;
    case AV_KV_U16: { uint16_t x = (uint16_t)v->u; memcpy(p, &x, 2); break; }
    case AV_KV_I16: { int16_t x = (int16_t)v->i; memcpy(p, &x, 2); break; }
    case AV_KV_U32: { uint32_t x = (uint32_t)v->u; memcpy(p, &x, 4); break; }
    case AV_KV_I32: { int32_t x = (int32_t)v->i; memcpy(p, &x, 4); break; }
    case AV_KV_U64: memcpy(p, &v->u, 8); break;
    case AV_KV_I64: memcpy(p, &v->i, 8); break;
    case AV_KV_F32: { float x = (float)v->f; memcpy(p, &x, 4); break; }
    case AV_KV_F64: memcpy(p, &v->f, 8); break;
    default: break;
    }
}

static int dec_typed(const json_t *j, av_value *out, char *why, size_t nwhy) {
    memset(out, 0, sizeof *out);
    if (!json_is_object(j)) return WHY("typed value must be an object");
    const json_t *jt = json_object_get(j, "type"), *jv = json_object_get(j, "value");
    int t = json_is_string(jt) ? type_from_name(json_string_value(jt)) : -1;
    if (t < 0) return WHY("missing or unknown \"type\"");
    if (!jv) return WHY("missing \"value\"");
    if (t == AV_KV_STRING) {
        out->type = AV_KV_STRING;
        return dec_str(jv, &out->str, why, nwhy);
    }
    if (t != AV_KV_ARRAY) return dec_scalar(jv, (av_kv_type)t, out, why, nwhy);

    const json_t *je = json_object_get(j, "elem");
    int e = json_is_string(je) ? type_from_name(json_string_value(je)) : -1;
    if (e < 0) return WHY("array with missing or unknown \"elem\"");
    if (!json_is_array(jv)) return WHY("array \"value\" must be a JSON array");
    size_t n = json_array_size(jv);
    out->type = AV_KV_ARRAY;
    out->arr.elem = (av_kv_type)e;
    if (!n) return 0;
    size_t es = e == AV_KV_STRING ? sizeof(av_str) : e == AV_KV_ARRAY ? sizeof(av_value) : av_kv_scalar_size((av_kv_type)e);
    if (!(out->arr.data = calloc(n, es))) return WHY("out of memory");
    out->arr.n = n; /* zeroed slots are safe to release on failure */
    for (size_t i = 0; i < n; i++) {
        const json_t *x = json_array_get(jv, i);
        int rc;
        if (e == AV_KV_STRING) {
            rc = dec_str(x, (av_str *)out->arr.data + i, why, nwhy);
        } else if (e == AV_KV_ARRAY) {
            av_value *sub = (av_value *)out->arr.data + i;
            rc = dec_typed(x, sub, why, nwhy);
            if (!rc && sub->type != AV_KV_ARRAY) rc = WHY("element of a nested array is not an array");
        } else {
            av_value v;
            if (!(rc = dec_scalar(x, (av_kv_type)e, &v, why, nwhy))) store_elem(&out->arr, i, &v);
        }
        if (rc) return rc;
    }
    return 0;
}

int st_meta_decode(const char *text, size_t len, av_value *out, char *why, size_t nwhy) {
    memset(out, 0, sizeof *out);
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!root) return WHY("not JSON: %s", je.text);
    int rc = dec_typed(root, out, why, nwhy);
    json_decref(root);
    if (rc) av_value_release(out);
    return rc;
}
