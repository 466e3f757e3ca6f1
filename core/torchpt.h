/* torchpt.h — PyTorch checkpoints (torch.save) without Python and without
 * running pickle code.
 *
 * Zip format (torch >= 1.6): an archive whose entries share one prefix folder:
 * PREFIX/data.pkl (the pickled object), PREFIX/data/N (raw storage bytes),
 * PREFIX/byteorder, PREFIX/version. Legacy format (< 1.6): a stream of pickles
 * (magic number, protocol, sys info, the object, the storage key list) then
 * each storage's bytes. The object is decoded by a restricted unpickler
 * (pickle.h): only the opcodes torch.save emits, GLOBAL resolved from an
 * allowlist (tensor/parameter rebuilders, OrderedDict, storage types, dtypes),
 * so a hostile file can fail but never execute anything.
 *
 * Tensors become av_model tensors: zero-copy views into the mmap when the
 * storage is stored uncompressed and the view is contiguous, owned copies
 * otherwise (strided views materialised). Tied weights (two names, one
 * storage) stay two tensors over the same bytes. */
#ifndef AV_TORCHPT_H
#define AV_TORCHPT_H

#include "gguf.h" /* av_progress_fn */
#include "model.h"

typedef struct pt_read_opts {
    /* Nested checkpoints ({"model": {...}, "optimizer": ..., "epoch": 3}):
     * the dict entry holding the state dict. NULL: the top-level object if it
     * is a state dict, else the first of "state_dict", "model", "module",
     * "model_state_dict" that is one. Dotted paths ("model.ema") descend. */
    const char *key;
} pt_read_opts;

/* Read a .pt/.pth/.bin PyTorch checkpoint (zip or legacy), or a sharded
 * pytorch_model.bin.index.json (every shard). Non-tensor entries of the state
 * dict are skipped. o may be NULL. Errors: AV_EIO, AV_EFORMAT (malformed or
 * hostile: the message names the opcode, global, entry or offset),
 * AV_EUNSUPPORTED (valid but unhandled, e.g. a complex dtype). */
int pt_read(const char *path, const pt_read_opts *o, av_model **out, av_err *err);

/* Parse an in-memory zip or legacy image (fuzzing, tests); views point into buf. */
int pt_read_mem(const void *buf, size_t size, const char *name, const pt_read_opts *o,
                av_model **out, av_err *err);

/* Write m as a torch.save zip (archive folder = file stem, data.pkl with an
 * OrderedDict of _rebuild_tensor_v2 tensors, 64-byte aligned stored records,
 * byteorder "little", version 3) that torch.load(path, weights_only=True)
 * reads. Tensors sharing the same data pointer and size share one storage.
 * Streams tensor data (converting src_dtype -> dtype on the fly), atomic
 * write. Errors: AV_EIO, AV_EINVAL (a dtype PyTorch cannot hold, e.g. quantized). */
int pt_write(const av_model *m, const char *path, av_progress_fn progress, void *ud, av_err *err);

#endif
