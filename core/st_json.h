/* st_json.h — JSON text helpers for safetensors.c (internal, not installed API).
 *
 * A growable byte buffer, a JSON string writer that escapes exactly like
 * serde_json (the Rust safetensors library), a UTF-8 validator matching what
 * jansson accepts, and the lossless codec for GGUF-typed metadata values that
 * st_write stores as "gguf:<key>" strings in __metadata__.
 *
 * Typed value encoding (a compact JSON text, itself stored as a JSON string):
 *   {"type":"u32","value":5}                      u8 i8 u16 i16 u32 i32 u64 i64
 *   {"type":"bool","value":true}
 *   {"type":"f32","value":0.100000001}            f32 "%.9g", f64 "%.17g"; always
 *                                                 with '.' or 'e' so -0.0 stays real
 *   {"type":"string","value":"text"}
 *   {"type":"array","elem":"string","value":["a","b"]}
 *   {"type":"array","elem":"array","value":[{"type":"array","elem":"u8","value":[1]}]}
 * Element encodings that plain JSON cannot carry losslessly:
 *   - strings that are not valid UTF-8: {"hex":"ff00"} (lowercase hex of the bytes);
 *     NUL is fine inside valid strings (\u0000, read with JSON_ALLOW_NUL)
 *   - non-finite floats (NaN with its payload, +-Inf): "0x7fc00000" raw IEEE bits
 *   - u64 above INT64_MAX (jansson integers are signed): decimal string "18446744073709551615"
 * Finite floats printed with 9 (f32) / 17 (f64) significant digits parse back
 * to the identical bits, so GGUF -> safetensors -> GGUF restores every byte. */
#ifndef AV_ST_JSON_H
#define AV_ST_JSON_H

#include <stddef.h>

#include "kv.h"

typedef struct st_buf {
    char *p;
    size_t len, cap;
    int oom; /* set once an append failed; later appends are no-ops */
} st_buf;

/* Free the buffer's bytes and zero it. */
void st_buf_release(st_buf *b);
/* Append n bytes / a C string / printf output (errors recorded in b->oom). */
void st_buf_put(st_buf *b, const void *s, size_t n);
void st_buf_puts(st_buf *b, const char *s);
void st_buf_printf(st_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* True when s[0..n) is valid UTF-8 (no overlongs, surrogates or > U+10FFFF). */
int st_utf8_valid(const char *s, size_t n);

/* Append s[0..n) as a quoted JSON string; s must be valid UTF-8. */
void st_buf_json_str(st_buf *b, const char *s, size_t n);

/* Append the typed encoding of v (see above). Errors: AV_EINVAL for a value
 * with an unknown type or a nested-array element that is not an array. */
int st_meta_encode(st_buf *b, const av_value *v);

/* Decode a typed encoding into *out (caller releases it). Returns 0, or -1
 * with a short reason in why[0..n) when text is not a valid encoding. */
int st_meta_decode(const char *text, size_t len, av_value *out, char *why, size_t n);

#endif
