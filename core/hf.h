/* hf.h — Hugging Face Llama checkpoints (config.json + HF tensor names) in
 * the GGUF naming and layout the rest of anvil uses.
 *
 * HF stores q_proj/k_proj rows permuted for rotate_half RoPE; GGUF (like
 * Meta's and llama2.c's layout) rotates adjacent pairs. The mapping undoes
 * the permutation the way llama.cpp's convert_hf_to_gguf.py does, so the
 * result runs with RoPE NORM and is what llama.cpp would write. */
#ifndef AV_HF_H
#define AV_HF_H

#include "err.h"
#include "gguf.h" /* av_progress_fn */
#include "model.h"

/* 1 when m carries HF Llama tensor names (model.embed_tokens.weight). */
int hf_is_llama(const av_model *m);

/* Rename m's tensors to GGUF names, un-permute attention q/k rows (into
 * owned buffers) and set general.architecture + llama.* metadata from the
 * config.json at config_path. Errors: AV_EIO, AV_EFORMAT (missing/invalid
 * config field, shapes that do not fit), AV_EUNSUPPORTED (model_type other
 * than llama/mistral, rope_scaling), AV_ENOMEM. */
int hf_llama_to_gguf(av_model *m, const char *config_path, av_err *err);

/* If m (read from path: an HF folder or a .safetensors file in one) has HF
 * Llama names, map it with the config.json in that folder; otherwise leave
 * it as is. Errors: as hf_llama_to_gguf. */
int hf_normalize(av_model *m, const char *path, av_err *err);

/* A q/k row permutation not yet applied: the *_ex variants queue them so a
 * converter can permute each tensor just before it is written (one owned copy
 * at a time instead of all q/k matrices at once). */
typedef struct hf_perm { size_t tensor; int64_t n_head; int to_hf; } hf_perm;
typedef struct hf_perm_queue { hf_perm *v; size_t n, cap; } hf_perm_queue;

/* As hf_llama_to_gguf; with defer non-NULL the q/k permutations are checked
 * and appended to *defer instead of applied. */
int hf_llama_to_gguf_ex(av_model *m, const char *config_path, hf_perm_queue *defer, av_err *err);
/* As hf_normalize; config_path (may be NULL) overrides the config.json beside path. */
int hf_normalize_ex(av_model *m, const char *path, const char *config_path, hf_perm_queue *defer, av_err *err);
/* Apply one queued permutation (the tensor's data becomes an owned copy). Errors: AV_ENOMEM, AV_EFORMAT. */
int hf_perm_apply(av_model *m, const hf_perm *p, av_err *err);
/* Free the queue's array. NULL-safe. */
void hf_perm_queue_release(hf_perm_queue *q);

/* The reverse of hf_llama_to_gguf: GGUF llama names -> HF names
 * (token_embd -> model.embed_tokens, blk.N.attn_q -> model.layers.N.self_attn.q_proj,
 * ...), q/k rows permuted into HF's rotate_half layout (queued in defer when
 * non-NULL), output.weight dropped when it is a view of token_embd's bytes
 * (a tied model: tie_word_embeddings true). A separate output.weight is kept as
 * lm_head.weight even when its bytes equal token_embd's, so GGUF -> HF -> GGUF
 * is lossless. Metadata is left as it is (hf_write_folder reads it).
 * Errors: AV_EUNSUPPORTED (architecture other than llama, a tensor without an
 * HF Llama name), AV_EFORMAT (head counts that do not fit), AV_ENOMEM. */
int hf_gguf_to_hf(av_model *m, hf_perm_queue *defer, av_err *err);

typedef struct hf_folder_info {
    int wrote_tokenizer;   /* 1 when tokenizer.json was written */
    char note[256];        /* why it was not, for the tool to print */
} hf_folder_info;

/* Write an HF model folder at dir (created; must not exist, or be an empty
 * folder): config.json (LlamaForCausalLM, from the llama.* and
 * tokenizer.ggml.*_token_id keys), model.safetensors (st_write: tensors in
 * model order, __metadata__ {"format": "pt"} plus every GGUF key so the
 * folder converts back losslessly) and tokenizer.json when the vocabulary is
 * SentencePiece-style (tokenizer.ggml.model "llama": HF's LlamaConverter form,
 * BPE with byte_fallback, merges ranked by piece score). m must carry HF names
 * (hf_gguf_to_hf). Everything goes to "<dir>.tmp.<pid>" first, each file
 * fsync'd, then the folder is renamed into place: never a half-written
 * folder. info may be NULL. Errors: AV_EIO, AV_EINVAL (dir exists as a file
 * or a non-empty folder, a dtype safetensors cannot hold), AV_ENOMEM. */
int hf_write_folder(const av_model *m, const char *dir, av_progress_fn progress, void *ud, hf_folder_info *info,
                    av_err *err);

#endif
