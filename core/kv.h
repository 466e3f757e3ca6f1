/* kv.h — an ordered key/value metadata table with GGUF's value types.
 *
 * Every format's metadata lands here (GGUF natively; safetensors'
 * __metadata__ as strings; llama2.c headers as llama.* keys), so converters
 * never talk format to format. Order is kept: writing a table back out
 * reproduces the input byte for byte. Strings carry a length (they may hold
 * NUL) and are also NUL-terminated for convenience. */
#ifndef AV_KV_H
#define AV_KV_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef enum av_kv_type {
    AV_KV_U8 = 0, AV_KV_I8 = 1, AV_KV_U16 = 2, AV_KV_I16 = 3,
    AV_KV_U32 = 4, AV_KV_I32 = 5, AV_KV_F32 = 6, AV_KV_BOOL = 7,
    AV_KV_STRING = 8, AV_KV_ARRAY = 9, AV_KV_U64 = 10, AV_KV_I64 = 11,
    AV_KV_F64 = 12, AV_KV_TYPE_COUNT = 13
} av_kv_type;

typedef struct av_str {
    uint64_t len;
    char *s;           /* len bytes + a terminating NUL */
} av_str;

typedef struct av_value av_value;

typedef struct av_array {
    av_kv_type elem;   /* element type; AV_KV_ARRAY for nested arrays */
    uint64_t n;
    void *data;        /* packed scalars in their C type, av_str[], or av_value[] */
} av_array;

struct av_value {
    av_kv_type type;
    union {
        uint64_t u;    /* U8..U64, BOOL (0/1) */
        int64_t i;     /* I8..I64 */
        double f;      /* F32, F64 */
        av_str str;
        av_array arr;
    };
};

typedef struct av_kv {
    char *key;
    av_value val;
} av_kv;

typedef struct av_kvs {
    av_kv *items;
    size_t n, cap;
} av_kvs;

/* Byte size of one scalar element of type t (0 for STRING/ARRAY). */
size_t av_kv_scalar_size(av_kv_type t);
/* Name of a value type ("u32", "string", "array"). */
const char *av_kv_type_name(int t);

void av_kvs_init(av_kvs *kv);
/* Free everything the table owns. NULL-safe. */
void av_kvs_release(av_kvs *kv);
/* Free what a value owns (recursively). */
void av_value_release(av_value *v);
/* Deep copy. Errors: AV_ENOMEM. */
int av_value_copy(av_value *dst, const av_value *src);

/* Entry for key, or NULL. */
const av_kv *av_kvs_find(const av_kvs *kv, const char *key);
/* Index of key or -1. */
long av_kvs_index(const av_kvs *kv, const char *key);

/* Insert or replace key (keeps its position when replacing); takes ownership
 * of *val (which is zeroed). Errors: AV_ENOMEM. */
int av_kvs_set(av_kvs *kv, const char *key, av_value *val);
/* Remove key if present. */
void av_kvs_remove(av_kvs *kv, const char *key);

/* Convenience setters (copy their arguments). Errors: AV_ENOMEM. */
int av_kvs_set_u32(av_kvs *kv, const char *key, uint32_t v);
int av_kvs_set_i32(av_kvs *kv, const char *key, int32_t v);
int av_kvs_set_f32(av_kvs *kv, const char *key, float v);
int av_kvs_set_bool(av_kvs *kv, const char *key, int v);
int av_kvs_set_str(av_kvs *kv, const char *key, const char *s);
/* Array of n scalars of type elem copied from data (packed C values). */
int av_kvs_set_arr(av_kvs *kv, const char *key, av_kv_type elem, const void *data, uint64_t n);
/* Array of n strings (lens may be NULL: strlen is used). */
int av_kvs_set_str_arr(av_kvs *kv, const char *key, const char *const *strs, const uint64_t *lens, uint64_t n);

/* Getters: 0 when key exists and converts losslessly to the asked type,
 * AV_ENOTFOUND when absent, AV_EFORMAT on type mismatch. */
int av_kvs_get_u64(const av_kvs *kv, const char *key, uint64_t *out);
int av_kvs_get_i64(const av_kvs *kv, const char *key, int64_t *out);
int av_kvs_get_f64(const av_kvs *kv, const char *key, double *out);
int av_kvs_get_str(const av_kvs *kv, const char *key, const char **out);

/* Element i of a scalar array as a double / int64 (no bounds check beyond assert). */
double av_array_get_f64(const av_array *a, uint64_t i);
int64_t av_array_get_i64(const av_array *a, uint64_t i);

#endif
