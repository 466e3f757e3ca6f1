/* dtype.h — element types and their traits.
 *
 * Values equal GGML type ids so a GGUF type field maps 1:1; the enum is
 * append-only. Every per-type fact lives in one traits table (dtype.c): add a
 * type by adding a row. Types GGML lacks (bool, u8, fp8 from safetensors) get
 * ids from 64 up, which no GGUF file can carry. */
#ifndef AV_DTYPE_H
#define AV_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum av_dtype {
    AV_F32 = 0, AV_F16 = 1, AV_Q4_0 = 2, AV_Q4_1 = 3,
    /* 4, 5: removed Q4_2/Q4_3 in GGML */
    AV_Q5_0 = 6, AV_Q5_1 = 7, AV_Q8_0 = 8, AV_Q8_1 = 9,
    AV_Q2_K = 10, AV_Q3_K = 11, AV_Q4_K = 12, AV_Q5_K = 13, AV_Q6_K = 14, AV_Q8_K = 15,
    AV_IQ2_XXS = 16, AV_IQ2_XS = 17, AV_IQ3_XXS = 18, AV_IQ1_S = 19, AV_IQ4_NL = 20,
    AV_IQ3_S = 21, AV_IQ2_S = 22, AV_IQ4_XS = 23,
    AV_I8 = 24, AV_I16 = 25, AV_I32 = 26, AV_I64 = 27, AV_F64 = 28, AV_IQ1_M = 29,
    AV_BF16 = 30,
    /* 31-33 removed Q4_0_4_4.. in GGML */
    AV_TQ1_0 = 34, AV_TQ2_0 = 35,
    /* 36-38 removed IQ4_NL_x in GGML */
    AV_MXFP4 = 39,
    AV_GGML_TYPE_COUNT = 40,
    /* not GGML types: safetensors/PyTorch only */
    AV_U8 = 64, AV_BOOL = 65, AV_F8_E4M3 = 66, AV_F8_E5M2 = 67,
    AV_DTYPE_MAX = 68
} av_dtype;

/* Convert n elements of a row to/from f32. n must be a multiple of block_size. */
typedef void (*av_to_float_fn)(const void *src, float *dst, int64_t n);
typedef void (*av_from_float_fn)(const float *src, void *dst, int64_t n);

typedef struct av_dtype_traits {
    const char *name;     /* GGML spelling: "f32", "q4_0", "bf16"; NULL = unknown id */
    int block_size;       /* elements per block (1 for plain types) */
    size_t type_size;     /* bytes per block */
    int is_quantized;
    int in_gguf;          /* can appear in a GGUF file */
    av_to_float_fn to_float;     /* NULL if not convertible (yet) */
    av_from_float_fn from_float; /* NULL if not convertible (yet) */
} av_dtype_traits;

/* Traits of t, or NULL when t is not a known id. Never fails otherwise. */
const av_dtype_traits *av_dtype_traits_of(int t);

/* Name of t ("f32"), or "?" when unknown. */
const char *av_dtype_name(int t);

/* Parse a name case-insensitively ("F16", "bf16", "q8_0"); -1 if unknown. */
int av_dtype_from_name(const char *name);

/* Bytes for n elements of t; returns 0 and sets *ok=0 when n is not a whole
 * number of blocks or the product overflows. */
size_t av_dtype_nbytes(int t, int64_t n, int *ok);

/* --- f16 / bf16 scalar conversions (round to nearest even, NaN/Inf kept) --- */
uint16_t av_f32_to_f16(float f);
float av_f16_to_f32(uint16_t h);
uint16_t av_f32_to_bf16(float f);
float av_bf16_to_f32(uint16_t h);

/* Row conversions. The plain names pick the fastest kernel for this CPU; the
 * _ref twins are the scalar definitions the tests compare them against. */
void av_f32_to_f16_row(const float *src, uint16_t *dst, int64_t n);
void av_f16_to_f32_row(const uint16_t *src, float *dst, int64_t n);
void av_f32_to_bf16_row(const float *src, uint16_t *dst, int64_t n);
void av_bf16_to_f32_row(const uint16_t *src, float *dst, int64_t n);
void av_f32_to_f16_row_ref(const float *src, uint16_t *dst, int64_t n);
void av_f16_to_f32_row_ref(const uint16_t *src, float *dst, int64_t n);
void av_f32_to_bf16_row_ref(const float *src, uint16_t *dst, int64_t n);
void av_bf16_to_f32_row_ref(const uint16_t *src, float *dst, int64_t n);

#endif
