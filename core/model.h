/* model.h — the in-memory form every reader produces and every writer takes:
 * an ordered list of named tensors plus an ordered metadata table.
 *
 * Converters are read(any) -> av_model -> name map -> write(any); no format
 * talks to another directly. A model owns its tensors, its metadata and
 * references to the mmaps its tensor views point into. */
#ifndef AV_MODEL_H
#define AV_MODEL_H

#include "io.h"
#include "kv.h"
#include "tensor.h"

typedef enum av_format {
    AV_FMT_UNKNOWN = 0, AV_FMT_GGUF, AV_FMT_SAFETENSORS, AV_FMT_LLAMA2C,
    AV_FMT_TORCH, AV_FMT_ONNX,
} av_format;

typedef struct av_model {
    av_format format;          /* where it was read from */
    uint32_t gguf_version;     /* GGUF only: version read (3 written) */
    av_kvs kv;
    av_tensor *tensors;
    size_t n_tensors, cap_tensors;
    av_map **maps;             /* mmaps the tensor views point into */
    size_t n_maps;
} av_model;

/* New empty model, or NULL when out of memory. */
av_model *av_model_new(void);
/* Free the model, its tensors' owned buffers and its map references. NULL-safe. */
void av_model_free(av_model *m);

/* Keep map alive as long as the model (takes a reference). Errors: AV_ENOMEM. */
int av_model_hold_map(av_model *m, av_map *map);

/* Append a tensor (name copied; shape in PyTorch order; data a view, or owned
 * when `owned` is non-NULL — then the model frees it). Returns the new tensor
 * or NULL when out of memory. */
av_tensor *av_model_add_tensor(av_model *m, const char *name, av_dtype dtype, int n_dims,
                               const int64_t *shape, const void *data, void *owned);

/* Tensor by name, or NULL. */
av_tensor *av_model_find(const av_model *m, const char *name);

/* Fail with AV_EFORMAT "<path>: tensor 'X' appears in more than one shard"
 * when two tensors share a name (sharded readers merge files). AV_ENOMEM. */
int av_model_check_unique_names(const av_model *m, const char *path, av_err *err);

/* Total element count over all tensors. */
int64_t av_model_nparams(const av_model *m);

/* Append t's data to o in t->dtype, converting from t->src_dtype in
 * chunks when they differ. *done is advanced by the bytes written and
 * progress (may be NULL) called. Errors: AV_EIO, AV_EUNSUPPORTED. */
int av_write_tensor_data(av_out *o, const av_tensor *t, uint64_t *done, uint64_t total,
                         void (*progress)(void *, uint64_t, uint64_t), void *ud, av_err *err);

/* Detect the format of a path from its extension, or its first bytes when
 * the extension says nothing. Folders are HF model folders (safetensors). */
av_format av_detect_format(const char *path);
const char *av_format_name(av_format f);

/* Read any supported format into a new model (*out owned by the caller).
 * Errors from the format readers. */
int av_model_read(const char *path, av_model **out, av_err *err);

#endif
