/* onnx.h — ONNX models: read (validated), describe, import a Llama decoder
 * graph into GGUF names and layout, export a Llama model as an ONNX graph.
 *
 * The protobuf code is generated at build time by protoc-c from the
 * onnx.proto Debian ships (libonnx-dev); this header does not expose it.
 * Limits enforced on read are listed in docs/FORMATS.md (ONNX section). */
#ifndef AV_ONNX_H
#define AV_ONNX_H

#include <jansson.h>

#include "gguf.h" /* av_progress_fn */
#include "model.h"

#define ONNX_MAX_DEPTH 48      /* protobuf message nesting (subgraphs inside attributes) */
#define ONNX_MAX_OPSET 23      /* highest ai.onnx opset we accept */

typedef struct onnx_model onnx_model;

/* Read and validate the ONNX file at path. *out is owned by the caller
 * (onnx_free). Checks: message nesting <= ONNX_MAX_DEPTH before decoding,
 * a decodable ModelProto with a graph, every node's domain imported with a
 * known opset version, every tensor (initializers, Constant values, also in
 * subgraphs) with a known data type, <= 8 dims, no negative dims, element
 * and byte counts without overflow and data exactly as long as its shape;
 * external data: a relative location inside the model's folder (no '..',
 * symlinks resolved), non-negative offset/length inside the file.
 * Errors: AV_EIO, AV_EFORMAT, AV_EUNSUPPORTED, AV_ENOMEM; message names the
 * file and the tensor/node/offset. */
int onnx_open(const char *path, onnx_model **out, av_err *err);
/* As onnx_open on an in-memory image (`name` in messages); external data is
 * refused (no folder). buf need not outlive the model. */
int onnx_open_mem(const void *buf, size_t size, const char *name, onnx_model **out, av_err *err);
/* Free the model and the files its external data maps. NULL-safe. */
void onnx_free(onnx_model *m);

/* A JSON description (new reference, caller decrefs): ir_version, producer,
 * opsets [{domain, version}], inputs/outputs [{name, dtype, shape}] with
 * dynamic dims as their names, initializers [{name, dtype, shape, bytes,
 * external?}], ops {op_type: count} (most frequent first), n_nodes.
 * Errors: AV_ENOMEM. */
int onnx_describe(const onnx_model *m, json_t **out, av_err *err);

/* Map a Llama decoder graph (torch.onnx.export of HF LlamaForCausalLM, or
 * anvil's own export) to a model with GGUF tensor names, GGUF q/k row order
 * and llama.* metadata, walking the graph from input_ids. GGUF metadata that
 * anvil's export stored in metadata_props (gguf:<key>) is restored. Errors:
 * AV_EUNSUPPORTED naming the first node that could not be mapped (name and
 * op type), AV_EFORMAT, AV_ENOMEM. */
int onnx_to_model(const onnx_model *om, av_model **out, av_err *err);

/* onnx_open + onnx_to_model. */
int onnx_read(const char *path, av_model **out, av_err *err);

typedef struct onnx_write_opts {
    int opset;          /* ai.onnx opset, 0 = 17 */
    int kv_cache;       /* past_key_values.N.key/value inputs, present.N.* outputs */
    int int8;           /* 0 none, 1 sym, 2 asym: per-channel int8 + DequantizeLinear */
    int external;       /* 1: weights in "<path>.data" beside the file (also forced past 2 GB) */
} onnx_write_opts;

/* Write the Llama model m (GGUF names and layout, llama.* metadata, float
 * tensors) as an ONNX decoder graph at path, atomically: input input_ids
 * int64 [batch, sequence], output logits float32 [batch, sequence, vocab];
 * GGUF metadata kept in metadata_props. opts may be NULL. Errors:
 * AV_EUNSUPPORTED (not a llama model, quantized tensors, opset out of
 * range), AV_EFORMAT (missing tensors/metadata), AV_EIO, AV_ENOMEM. */
int onnx_write(const av_model *m, const char *path, const onnx_write_opts *opts, av_err *err);

#endif
