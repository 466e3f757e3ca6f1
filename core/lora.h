/* lora.h — LoRA adapters in llama.cpp's GGUF layout: read one, check it
 * against a base model, apply adapters to a forward pass at run time
 * (lora_attach) or merge them into the base's weights (lora_merge).
 *
 * Adapter file: general.type "adapter", adapter.type "lora",
 * adapter.lora.alpha (f32; optional), general.architecture equal to the
 * base's; for each target W (GGUF name "<base tensor>") two tensors
 * "<base tensor>.lora_a" ne [n_in, r] (A: [r, n_in] in PyTorch order) and
 * "<base tensor>.lora_b" ne [r, n_out] (B: [n_out, r]).
 * Merged weight: W' = W + scale * (alpha / r) * B A; without alpha the factor
 * is scale alone (llama.cpp's rule: alpha = r). */
#ifndef AV_LORA_H
#define AV_LORA_H

#include "err.h"
#include "llm.h"
#include "model.h"

typedef struct lora_pair {
    const av_tensor *a, *b; /* views into the adapter file */
    char *target;           /* base tensor name */
} lora_pair;

typedef struct lora_adapter {
    char *path;
    av_model *file;
    float alpha; /* 0 when the file has none */
    lora_pair *pairs;
    size_t n_pairs;
} lora_adapter;

/* Read and check an adapter's own consistency (type keys, pairs, ranks).
 * Errors: the GGUF reader's, AV_EFORMAT naming the file and the problem. */
int lora_read(const char *path, lora_adapter **out, av_err *err);
void lora_free(lora_adapter *a); /* NULL-safe */

/* "PATH[:SCALE]" -> path (malloc'd) and scale (1 when absent). Errors:
 * AV_EINVAL for a scale that is not a finite number. A ':' followed by
 * something that is not a number is taken as part of the path only when
 * that path exists. */
int lora_parse_spec(const char *spec, char **path, float *scale, av_err *err);

/* Merge adapters into base (GGUF names): each target becomes an owned F32
 * tensor (quantized or half bases are dequantized; other tensors untouched).
 * Checks each adapter against base first (architecture, every target
 * present, n_in/n_out equal to the target's), so on error base is unchanged.
 * Errors: AV_EINVAL naming the adapter and the tensor, AV_ENOMEM, AV_EUNSUPPORTED. */
int lora_merge(av_model *base, lora_adapter *const *ads, const float *scales, int n, av_err *err);

/* Apply adapters to l at run time, without touching the weights: each
 * product through a target W adds factor (X A^T) B^T (llm_add_lora; A and B
 * kept as f32 copies, so base may be any type and stay mmap'd, and the
 * adapters may be freed afterwards). base is the model l was built over;
 * adapters are checked against it as lora_merge does, all before any is
 * applied. Errors: those of lora_merge's checks, AV_EUNSUPPORTED (a target
 * the forward pass does not multiply by), AV_ENOMEM; on error l may hold
 * some pairs (free it). */
int lora_attach(llm *l, const av_model *base, lora_adapter *const *ads, const float *scales, int n,
                av_err *err);

/* The multiplier of B A for an adapter at a given user scale. */
float lora_factor(const lora_adapter *a, size_t pair, float scale);

/* ---- PEFT folders (core/lora_peft.c) -------------------------------------
 * PEFT keeps HF names (base_model.model.model.layers.N.self_attn.q_proj.
 * lora_A.weight [r, in], lora_B.weight [out, r]) and q/k lora_B rows in HF's
 * rotate_half order; GGUF keeps Meta's: lora_B of q/k is permuted with the
 * base's n_head / n_kv_head (A is unchanged, since B A changes rows via B). */

/* PEFT folder (adapter_config.json + adapter_model.safetensors) -> a new
 * av_model in the GGUF adapter layout (tensors owned; ready for gguf_write).
 * Errors: AV_EFORMAT (not LoRA, unknown tensor names), AV_EINVAL (head counts
 * needed but < 1), AV_EIO, AV_ENOMEM. */
int lora_peft_read(const char *dir, int64_t n_head, int64_t n_kv_head, av_model **out, av_err *err);

/* Adapter -> PEFT folder dir (created if missing; both files atomic).
 * A missing alpha is written as lora_alpha = r (the same factor). */
int lora_peft_write(const lora_adapter *a, const char *dir, int64_t n_head, int64_t n_kv_head, av_err *err);

/* 1 when path is a PEFT folder or a GGUF whose general.type is "adapter". */
int lora_is_adapter(const char *path);

/* Convert an adapter: PEFT folder -> .gguf, or GGUF adapter -> PEFT folder.
 * Head counts from base (any model path; may be NULL) or n_head/n_kv_head
 * (n_kv_head < 1: = n_head). *n_tensors receives the tensors written. */
int lora_convert(const char *in, const char *out, const char *base, int64_t n_head, int64_t n_kv_head,
                 size_t *n_tensors, av_err *err);

#endif
