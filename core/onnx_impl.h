/* onnx_impl.h — internals shared by onnx.c (reader), onnx_import.c and
 * onnx_export.c. Not installed. */
#ifndef AV_ONNX_IMPL_H
#define AV_ONNX_IMPL_H

#include "io.h"
#include "onnx.h"
#include "onnx.pb-c.h"

struct onnx_model {
    char *path;
    char *dir;                 /* realpath of the model's folder (external data root) */
    Onnx__ModelProto *proto;
    av_map **ext;              /* external data files, one per distinct location */
    char **ext_names;
    size_t n_ext;
};

/* ONNX TensorProto.DataType facts: name, element bytes, av_dtype (-1: none). */
typedef struct onnx_dt { const char *name; int size; int av; } onnx_dt;
const onnx_dt *onnx_dtype(int32_t data_type);

/* Element count of t (checked when opened). */
int64_t onnx_tensor_nelem(const Onnx__TensorProto *t);

/* Bytes of t's elements, little-endian, wherever they are stored: *data points
 * into the decoded message or a mapped external file; typed fields that need
 * narrowing (int32_data for 16/8-bit types) are copied into *owned (caller
 * frees). Errors: AV_ENOMEM, AV_EUNSUPPORTED (string tensors). */
int onnx_tensor_bytes(const onnx_model *m, const Onnx__TensorProto *t, const void **data, size_t *n, void **owned,
                      av_err *err);

#endif
