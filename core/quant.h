/* quant.h — llama.cpp's block quantization formats, quantizers, and
 * llama-quantize's per-tensor type choice.
 *
 * Block structs mirror ggml's byte layouts exactly (sizes static-asserted in
 * quant_legacy.c / quant_k.c), so bytes written here are valid GGUF tensor
 * data and a runner can read llama.cpp's files in place. The quantizers
 * reproduce llama.cpp (commit 3f545bec) bit for bit, with and without an
 * importance matrix: same float operations in the same order (the build
 * keeps -std=c11, i.e. -ffp-contract=off, so no FMA contraction). Rows are
 * independent, so the result never depends on the thread count.
 *
 * Core conventions: nothing here prints or exits; errors go to an av_err. */
#ifndef AV_QUANT_H
#define AV_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "err.h"
#include "gguf.h" /* av_progress_fn */
#include "model.h"

/* ------------------------------------------------------------ block layouts */

#define QK4_0 32
#define QK4_1 32
#define QK5_0 32
#define QK5_1 32
#define QK8_0 32
#define QK8_1 32
#define QK_K 256
#define K_SCALE_SIZE 12

/* fp16 fields are raw IEEE half bits (av_f16_to_f32 / av_f32_to_f16). */
typedef struct { uint16_t d; uint8_t qs[QK4_0 / 2]; } block_q4_0;            /* 18 B */
typedef struct { uint16_t d, m; uint8_t qs[QK4_1 / 2]; } block_q4_1;         /* 20 B */
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[QK5_0 / 2]; } block_q5_0;     /* 22 B */
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[QK5_1 / 2]; } block_q5_1;  /* 24 B */
typedef struct { uint16_t d; int8_t qs[QK8_0]; } block_q8_0;                 /* 34 B */
typedef struct { uint16_t d, s; int8_t qs[QK8_1]; } block_q8_1;              /* 36 B: s = d * sum(qs) */

/* Super-blocks of 256. */
typedef struct {
    uint8_t scales[QK_K / 16]; /* 4-bit scale | 4-bit min per 16 */
    uint8_t qs[QK_K / 4];      /* 2-bit quants */
    uint16_t d, dmin;
} block_q2_K;                                                                /* 84 B */
typedef struct {
    uint8_t hmask[QK_K / 8];   /* high bit of the 3-bit quants */
    uint8_t qs[QK_K / 4];      /* low 2 bits */
    uint8_t scales[12];        /* 16 6-bit scales */
    uint16_t d;
} block_q3_K;                                                                /* 110 B */
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[K_SCALE_SIZE]; /* 8 6-bit scales and mins */
    uint8_t qs[QK_K / 2];
} block_q4_K;                                                                /* 144 B */
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
} block_q5_K;                                                                /* 176 B */
typedef struct {
    uint8_t ql[QK_K / 2];      /* low 4 bits */
    uint8_t qh[QK_K / 4];      /* high 2 bits */
    int8_t scales[QK_K / 16];  /* 8-bit scales */
    uint16_t d;
} block_q6_K;                                                                /* 210 B */
typedef struct {
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16];  /* sums of qs in groups of 16 */
} block_q8_K;                                                                /* 292 B */

/* ------------------------------------------------------------- row kernels */

/* Whether t can be produced by q_quantize (F32, F16, BF16, Q4_0..Q8_1,
 * Q2_K..Q8_K). */
int q_can_quantize(av_dtype t);

/* Bytes of one row of ncols elements of t; 0 when ncols is not a whole
 * number of t's blocks (or t unknown). */
size_t q_row_size(av_dtype t, int64_t ncols);

/* Quantize nrows rows of ncols floats (row-major, ncols fastest) into dst as
 * llama.cpp's ggml_quantize_chunk does. imatrix: NULL, or ncols importance
 * weights (the same for every row) — used by Q4_0 Q4_1 Q5_0 Q5_1 Q2_K..Q6_K,
 * ignored by Q8_0/F16/BF16/F32. Parallel over rows with OpenMP (output
 * independent of the thread count). Returns the bytes written
 * (nrows * q_row_size), or 0 when t is not supported or ncols not whole
 * blocks (dst untouched). */
size_t q_quantize(av_dtype t, const float *src, void *dst, int64_t nrows, int64_t ncols,
                  const float *imatrix);

/* The single-threaded reference of q_quantize (what the tests compare the
 * parallel path against). */
size_t q_quantize_ref(av_dtype t, const float *src, void *dst, int64_t nrows, int64_t ncols,
                      const float *imatrix);

/* Dequantize n elements (whole blocks) of t at src into dst, as ggml's
 * to_float. Returns 0, or AV_EUNSUPPORTED / AV_EINVAL (n not whole blocks). */
int q_dequantize_row(av_dtype t, const void *src, float *dst, int64_t n);

/* Per-type reference kernels (ggml's quantize_row_*_ref / dequantize_row_*).
 * k must be a multiple of the block size. */
void q_quantize_row_q4_0(const float *x, block_q4_0 *y, int64_t k);
void q_quantize_row_q4_1(const float *x, block_q4_1 *y, int64_t k);
void q_quantize_row_q5_0(const float *x, block_q5_0 *y, int64_t k);
void q_quantize_row_q5_1(const float *x, block_q5_1 *y, int64_t k);
void q_quantize_row_q8_0(const float *x, block_q8_0 *y, int64_t k);
void q_quantize_row_q8_1(const float *x, block_q8_1 *y, int64_t k);
void q_quantize_row_q2_K(const float *x, block_q2_K *y, int64_t k);
void q_quantize_row_q3_K(const float *x, block_q3_K *y, int64_t k);
void q_quantize_row_q4_K(const float *x, block_q4_K *y, int64_t k);
void q_quantize_row_q5_K(const float *x, block_q5_K *y, int64_t k);
void q_quantize_row_q6_K(const float *x, block_q6_K *y, int64_t k);
void q_quantize_row_q8_K(const float *x, block_q8_K *y, int64_t k);
void q_dequantize_row_q4_0(const block_q4_0 *x, float *y, int64_t k);
void q_dequantize_row_q4_1(const block_q4_1 *x, float *y, int64_t k);
void q_dequantize_row_q5_0(const block_q5_0 *x, float *y, int64_t k);
void q_dequantize_row_q5_1(const block_q5_1 *x, float *y, int64_t k);
void q_dequantize_row_q8_0(const block_q8_0 *x, float *y, int64_t k);
void q_dequantize_row_q8_1(const block_q8_1 *x, float *y, int64_t k);
void q_dequantize_row_q2_K(const block_q2_K *x, float *y, int64_t k);
void q_dequantize_row_q3_K(const block_q3_K *x, float *y, int64_t k);
void q_dequantize_row_q4_K(const block_q4_K *x, float *y, int64_t k);
void q_dequantize_row_q5_K(const block_q5_K *x, float *y, int64_t k);
void q_dequantize_row_q6_K(const block_q6_K *x, float *y, int64_t k);
void q_dequantize_row_q8_K(const block_q8_K *x, float *y, int64_t k);

/* ------------------------------------------------- file types (llama-quantize) */

/* llama.cpp's llama_ftype values (written as general.file_type). */
typedef enum q_ftype {
    Q_FTYPE_ALL_F32 = 0, Q_FTYPE_F16 = 1, Q_FTYPE_Q4_0 = 2, Q_FTYPE_Q4_1 = 3,
    Q_FTYPE_Q8_0 = 7, Q_FTYPE_Q5_0 = 8, Q_FTYPE_Q5_1 = 9, Q_FTYPE_Q2_K = 10,
    Q_FTYPE_Q3_K_S = 11, Q_FTYPE_Q3_K_M = 12, Q_FTYPE_Q3_K_L = 13,
    Q_FTYPE_Q4_K_S = 14, Q_FTYPE_Q4_K_M = 15, Q_FTYPE_Q5_K_S = 16, Q_FTYPE_Q5_K_M = 17,
    Q_FTYPE_Q6_K = 18, Q_FTYPE_BF16 = 32,
} q_ftype;

/* llama.cpp's GGML_QNT_VERSION, written as general.quantization_version. */
#define Q_QNT_VERSION 2

typedef struct q_ftype_info {
    const char *name;   /* "Q4_K_M" (llama-quantize's spelling) */
    q_ftype ftype;
    av_dtype base;      /* default tensor type of the mix (Q4_K for Q4_K_M) */
    const char *desc;   /* one line for --help */
} q_ftype_info;

/* The supported file types in llama-quantize's listing order; *n set. */
const q_ftype_info *q_ftype_list(size_t *n);
/* By name, case-insensitive, with llama-quantize's aliases (Q3_K = Q3_K_M,
 * Q4_K = Q4_K_M, Q5_K = Q5_K_M) and numeric ids ("15"); NULL if unknown. */
const q_ftype_info *q_ftype_from_name(const char *name);

/* ---------------------------------------------------------- per-tensor plan */

typedef struct q_plan_opts {
    int has_imatrix;       /* an imatrix is given (changes the Q4_0/Q5_0 ffn_down rule) */
    int pure;              /* --pure: no mixes, every quantizable tensor gets base */
    int leave_output;      /* --leave-output-tensor: output.weight keeps its type */
    int output_type;       /* --output-tensor-type, or -1 */
    int token_embd_type;   /* --token-embedding-type, or -1 */
} q_plan_opts;

typedef struct q_plan_item {
    av_dtype from;         /* the tensor's type before */
    av_dtype type;         /* output type (the source dtype when kept as is) */
    int quantize;          /* 1 when the data are converted (type != source dtype) */
    char *warning;         /* llama-quantize's fallback warning line, or NULL */
} q_plan_item;

typedef struct q_plan {
    size_t n;              /* == model->n_tensors, same order as the model */
    q_plan_item *items;
    int n_fallback;        /* tensors that needed a fallback type */
} q_plan;

/* Decide every tensor's type for file type ft as llama-quantize does:
 * 1-D tensors, norms and other non-weights keep their type; the mixes'
 * Q6_K/Q5_K/Q4_K layers (use_more_bits, attn_v / ffn_down counters in
 * llama.cpp's tensor order); output.weight Q6_K for non-Q8_0 types; the
 * fallback when a row is not whole blocks (Q2_K/Q3_K -> Q4_0, Q4_K -> Q5_0,
 * Q5_K -> Q5_1, Q6_K -> Q8_0, F16 when that still does not divide). opts may
 * be NULL. Hyper-parameters come from the model's `<arch>.*` metadata.
 * Errors: AV_EUNSUPPORTED naming the tensor where llama-quantize refuses
 * ("no tensor type fallback is defined for type q8_0"), AV_EFORMAT when the
 * metadata lack block_count, AV_ENOMEM. *out is released by q_plan_release. */
int q_plan_model(const av_model *m, const q_ftype_info *ft, const q_plan_opts *opts,
                 q_plan *out, av_err *err);
void q_plan_release(q_plan *p);

/* ------------------------------------------------------------------ imatrix */

typedef struct q_imatrix_entry {
    char *name;            /* tensor name, "blk.0.attn_q.weight" */
    int64_t n;             /* values: ncols * n_mat (n_mat experts) */
    int64_t n_mat;
    float *values;         /* per-column importance (mean of squared activations) */
} q_imatrix_entry;

typedef struct q_imatrix {
    size_t n;
    q_imatrix_entry *e;
    int chunk_count;       /* chunks the statistics were computed on (0 if unknown) */
    char *dataset;         /* first dataset name, or NULL */
} q_imatrix;

/* Read an imatrix file written by llama-imatrix: the GGUF form (tensors
 * `<name>.in_sum2` and `<name>.counts`; value = in_sum2 / count, 1 where a
 * matrix got no input) or the legacy .dat (value = sum / ncall), turned into
 * per-column weights exactly as llama-quantize's loader does. Every count and
 * size is validated. *out owned by the caller (q_imatrix_free).
 * Errors: AV_EIO, AV_EFORMAT (message names file, entry and cause), AV_ENOMEM. */
int q_imatrix_read(const char *path, q_imatrix **out, av_err *err);
void q_imatrix_free(q_imatrix *im);
/* Entry by tensor name, or NULL. */
const q_imatrix_entry *q_imatrix_find(const q_imatrix *im, const char *name);

/* The weights llama-quantize would use for tensor t (ncols = t's last dim,
 * n_mat = experts): *w = NULL when there is no entry (quantized without), or
 * the entry's values. Errors: AV_EFORMAT when the size differs from
 * ncols * n_mat (llama-quantize aborts, except for token embeddings, which
 * then go without). */
int q_imatrix_for_tensor(const q_imatrix *im, const av_tensor *t, const float **w, av_err *err);

/* ---------------------------------------------------------------- tensors */

/* Quantize tensor t (F32, F16, BF16 or a type with to_float) to type `to`
 * into a new malloc'd buffer (*data, *nbytes; caller frees). Rows are the
 * last dimension; 3-D tensors take imatrix rows per expert as llama-quantize
 * does. imatrix may be NULL. Errors: AV_EUNSUPPORTED (type), AV_EINVAL (rows
 * not whole blocks), AV_ENOMEM. */
int q_quantize_tensor(const av_tensor *t, av_dtype to, const float *imatrix, void **data,
                      size_t *nbytes, av_err *err);

/* ------------------------------------------------------------ whole models */

typedef struct q_model_opts {
    q_plan_opts plan;          /* mixes and overrides (has_imatrix follows imatrix) */
    const q_imatrix *imatrix;  /* NULL: none */
    const char *imatrix_path;  /* with imatrix: named in messages and metadata */
    int allow_requantize;      /* accept already-quantized tensors as input */
    av_progress_fn progress;   /* (ud, input bytes quantized, total), or NULL */
    void *ud;
} q_model_opts;

/* Quantize m in place to file type ft exactly as llama-quantize does, so that
 * gguf_write(m) gives its file: q_plan_model, llama.cpp's tensor order
 * (tensors outside blocks, then blocks by number, by name within), every
 * check before any work (requantization, imatrix sizes), each tensor into an
 * owned buffer, then its metadata (general.quantization_version,
 * general.file_type moved last, split.* removed, quantize.imatrix.*). plan
 * receives the per-tensor plan in the new order (q_plan_release). opts may be
 * NULL. Messages start with the file they concern (name, or imatrix_path).
 * Errors: q_plan_model's, AV_EUNSUPPORTED (requantization refused), AV_EFORMAT
 * (imatrix for another model), AV_EINVAL, AV_ENOMEM; on error m may be
 * reordered or partly quantized (not fit for writing) and plan is empty. */
int q_model_quantize(av_model *m, const char *name, const q_ftype_info *ft, const q_model_opts *opts,
                     q_plan *plan, av_err *err);

/* ------------------------------------------------------------------ INT8 */

/* Per-output-channel INT8 of W [rows, cols] for formats without block types
 * (safetensors, PyTorch). sym: q int8 in [-127, 127], scale = max|w_r| / 127,
 * w ~ q * scale. asym: q uint8, scale = (max_r - min_r) / 255 over a range
 * that includes 0, zero_point = round(-min_r / scale), w ~ (q - zp) * scale.
 * Constant-zero rows get scale 1. zero_point is unused (may be NULL) for sym. */
void q_int8_rows(const float *w, int64_t rows, int64_t cols, int asym, void *q, float *scale,
                 uint8_t *zero_point);

#endif
