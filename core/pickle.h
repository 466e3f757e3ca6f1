/* pickle.h — a restricted unpickler for PyTorch checkpoints.
 *
 * A small stack VM over a byte buffer that implements only the opcodes
 * torch.save emits (protocol 2..5: MARK, tuples, lists, dicts, memo, ints,
 * floats, strings, bytes, BINPERSID, REDUCE, BUILD, NEWOBJ, STACK_GLOBAL,
 * FRAME...). GLOBAL / STACK_GLOBAL resolve only names on a fixed allowlist
 * (tensor and parameter rebuilders, OrderedDict, the torch.*Storage types,
 * torch dtypes, torch.Size); REDUCE calls only the allowlisted rebuilders,
 * which build inert values. Nothing from the input is ever executed: a
 * hostile pickle fails with an error naming the opcode, global or offset.
 *
 * Every size read is checked against the remaining input and explicit limits
 * (stack depth, MARK depth, memo index, object count). Values live in an
 * arena owned by the pk_result and are freed together; strings and bytes
 * point into the input buffer, which must outlive the result. */
#ifndef AV_PICKLE_H
#define AV_PICKLE_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "err.h"

#define PK_MAX_STACK (1u << 20)   /* values on the stack */
#define PK_MAX_MARKS 4096         /* nested MARKs */
#define PK_MAX_MEMO (1u << 22)    /* highest memo index + 1 */
#define PK_MAX_OBJECTS (1u << 24) /* values created per pickle */
#define PK_MAX_DIMS 8             /* tensor dimensions (AV_MAX_DIMS) */

typedef enum pk_type {
    PK_NONE, PK_BOOL, PK_INT, PK_FLOAT, PK_STR, PK_BYTES,
    PK_TUPLE, PK_LIST, PK_DICT,
    PK_GLOBAL,  /* an allowlisted name (g) */
    PK_STORAGE, /* a persistent id ('storage', type, key, location, numel[, view]) */
    PK_TENSOR,  /* a rebuilt tensor (storage view) */
} pk_type;

/* Allowlisted globals. */
typedef enum pk_global {
    PKG_ORDERED_DICT, PKG_REBUILD_TENSOR, PKG_REBUILD_TENSOR_V2, PKG_REBUILD_TENSOR_V3,
    PKG_REBUILD_PARAMETER, PKG_REBUILD_PARAMETER_STATE, PKG_REBUILD_FROM_TYPE_V2,
    PKG_TENSOR_CLASS, PKG_PARAMETER_CLASS, PKG_SIZE, PKG_DEVICE,
    PKG_STORAGE_TYPE, /* torch.FloatStorage etc.; dtype in pk_value.dtype */
    PKG_UNTYPED_STORAGE,
    PKG_DTYPE,        /* torch.float32 etc.; dtype in pk_value.dtype (-1: no anvil type) */
} pk_global;

typedef struct pk_value pk_value;

struct pk_value {
    pk_type type;
    int dtype;            /* PK_GLOBAL storage/dtype globals, PK_STORAGE, PK_TENSOR: av_dtype or -1 */
    union {
        int b;            /* PK_BOOL */
        struct {          /* PK_INT: big = 1 when it does not fit int64 (raw LE bytes kept) */
            int64_t v;
            int big;
            const uint8_t *raw;
            size_t raw_len;
        } i;
        double f;         /* PK_FLOAT */
        struct {          /* PK_STR (UTF-8, not NUL-terminated) / PK_BYTES: view into the input */
            const char *p;
            size_t n;
        } s;
        struct {          /* PK_TUPLE / PK_LIST: items; PK_DICT: 2*n items, key then value, in insertion order */
            pk_value **items;
            size_t n, cap;
        } seq;
        struct {
            pk_global g;
            const char *name; /* "module.name", static */
        } gl;
        struct {          /* PK_STORAGE */
            const char *key;  /* NUL-terminated copy (arena) */
            int64_t numel;    /* elements (bytes for untyped storages) */
            int untyped;
            int has_view;     /* legacy view_metadata (view_key, offset, size) */
            const char *view_key;
            int64_t view_offset, view_size;
        } st;
        struct {          /* PK_TENSOR */
            pk_value *storage;
            int64_t offset;   /* in elements */
            int n_dims;
            int64_t size[PK_MAX_DIMS], stride[PK_MAX_DIMS];
            void *user;       /* free for the consumer (pt_read caches materialised data) */
        } t;
    } u;
};

typedef struct pk_result pk_result;

/* Unpickle one pickle from buf[0..size) (stops at STOP). name prefixes error
 * messages ("model.pt: data.pkl"). *out owns every value (pk_result_free);
 * *used (may be NULL) receives the bytes consumed through STOP.
 * Errors: AV_EFORMAT (malformed, truncated, a disallowed opcode or global,
 * a limit exceeded: the message names it and the offset), AV_ENOMEM. */
int pk_load(const uint8_t *buf, size_t size, const char *name, pk_result **out, size_t *used, av_err *err);

/* The unpickled object (valid until pk_result_free). */
pk_value *pk_root(const pk_result *r);

/* Storages created while unpickling, in order of appearance (for the legacy
 * format's key list and validation). */
size_t pk_n_storages(const pk_result *r);
pk_value *pk_storage_at(const pk_result *r, size_t i);

/* Free r and all its values. NULL-safe. */
void pk_result_free(pk_result *r);

/* Dict lookup by string key (NULL when absent or d is not a dict). */
pk_value *pk_dict_get(const pk_value *d, const char *key);

/* 1 when v is a PK_STR equal to s. */
int pk_str_eq(const pk_value *v, const char *s);

/* Name of an opcode byte ("BINUNICODE"), or NULL when it is no pickle opcode. */
const char *pk_opcode_name(uint8_t op);

#endif
