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

#endif
