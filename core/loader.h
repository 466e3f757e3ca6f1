/* loader.h — one call from a model path to a runnable model: any format core
 * reads (GGUF, llama2.c .bin, HF folder / safetensors, PyTorch), HF names
 * mapped to GGUF's, the forward pass built, and the vocabulary found (the
 * model's own metadata, tokenizer.json beside an HF folder, or a given file).
 * Shared by run and eval so they accept exactly the same inputs. */
#ifndef AV_LOADER_H
#define AV_LOADER_H

#include "err.h"
#include "llm.h"
#include "model.h"
#include "tokenizer.h"

typedef struct av_loaded {
    av_model *model;
    llm *llm;
    tok *tok; /* NULL when not asked for */
} av_loaded;

/* Load path; tokenizer_path (may be NULL) overrides the vocabulary; with
 * need_tok = 0 no vocabulary is looked for. On error nothing is left
 * allocated. Errors: the readers', llm_new's, AV_ENOTFOUND (no vocabulary). */
int av_load(const char *path, const char *tokenizer_path, int need_tok, av_loaded *out,
            av_err *err);
/* The same with LoRA adapters applied by the forward pass at run time
 * (lora_attach: the weights stay as loaded, quantized ones too):
 * loras[i] is "ADAPTER.gguf[:SCALE]" (lora.h). Errors: also lora_*'s. */
int av_load_lora(const char *path, const char *tokenizer_path, int need_tok, const char *const *loras,
                 int n_loras, av_loaded *out, av_err *err);
void av_loaded_release(av_loaded *x); /* NULL-safe fields */

#endif
