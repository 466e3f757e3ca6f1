/* ckpt.h — training checkpoints: one safetensors file holding the parameters
 * (GGUF names), AdamW's moments ("adam.m.<name>", "adam.v.<name>") and, in
 * __metadata__, the model config, optimizer step, tokens seen, the data
 * loader's state (hex), the run's settings (JSON) and a checksum over all
 * tensor bytes. Written atomically (temp file, fsync, rename) by st_write.
 * `anvil convert` reads it like any safetensors file. */
#ifndef ANVIL_TRAIN_CKPT_H
#define ANVIL_TRAIN_CKPT_H

#include <stdint.h>

#include "err.h"
#include "train.h"

#define CKPT_FORMAT "anvil-train-checkpoint-1"
#define CKPT_LOADER_MAX 256

typedef struct ckpt_state {
    int step;          /* optimizer steps done */
    uint64_t tokens;   /* training tokens consumed */
    unsigned char loader[CKPT_LOADER_MAX]; /* shard_loader_save blob */
    size_t loader_n;
    const char *settings; /* JSON text of the settings (save: borrowed; load: malloc'd, caller frees) */
    const char *lora;     /* LoRA runs: JSON of the adapter settings and the base (save: borrowed;
                           * load: malloc'd, caller frees); NULL otherwise */
} ckpt_state;

/* Save m (parameters and moments; moments allocated if absent) and s.
 * Errors: AV_EIO, AV_ENOMEM. */
int ckpt_save(const char *path, tr_model *m, const ckpt_state *s, av_err *err);

/* Load a checkpoint into s and a model: *out NULL on entry -> a new model
 * from the checkpoint's config (a LoRA checkpoint is refused: it needs its
 * base); otherwise *out is the model to fill (a LoRA model over the base,
 * see ckpt_lora_meta), whose tensors must be exactly the file's. Every
 * tensor's name, shape and dtype, the metadata and the checksum are checked
 * first: a truncated or corrupted file is AV_EFORMAT naming the file and the
 * cause. Errors: AV_EIO, AV_EFORMAT, AV_ENOMEM. */
int ckpt_load(const char *path, tr_model **out, ckpt_state *s, av_err *err);

/* The "lora" metadata of a checkpoint (malloc'd JSON, caller frees), or
 * *json = NULL for a full-model checkpoint. Errors: the reader's. */
int ckpt_lora_meta(const char *path, char **json, av_err *err);

#endif
