/* pickle.c — restricted unpickler (see pickle.h). */
#include "pickle.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pk_result {
    pk_value **objs; /* every value created, for freeing */
    size_t n_objs, cap_objs;
    pk_value **storages;
    size_t n_storages, cap_storages;
    pk_value *root;
};

typedef struct vm {
    const uint8_t *buf;
    size_t size, pos, op_pos;
    const char *name;
    av_err *err;
    pk_result *r;
    pk_value **stack;
    size_t sp, cap;
    size_t marks[PK_MAX_MARKS];
    size_t n_marks;
    pk_value **memo;
    size_t memo_cap, memo_count;
} vm;

/* ---- opcode names (for errors) ---- */

static const struct { uint8_t op; const char *name; } OPS[] = {
    {'(', "MARK"}, {'.', "STOP"}, {'0', "POP"}, {'1', "POP_MARK"}, {'2', "DUP"}, {'F', "FLOAT"},
    {'I', "INT"}, {'J', "BININT"}, {'K', "BININT1"}, {'L', "LONG"}, {'M', "BININT2"}, {'N', "NONE"},
    {'P', "PERSID"}, {'Q', "BINPERSID"}, {'R', "REDUCE"}, {'S', "STRING"}, {'T', "BINSTRING"},
    {'U', "SHORT_BINSTRING"}, {'V', "UNICODE"}, {'X', "BINUNICODE"}, {'a', "APPEND"}, {'b', "BUILD"},
    {'c', "GLOBAL"}, {'d', "DICT"}, {'}', "EMPTY_DICT"}, {'e', "APPENDS"}, {'g', "GET"}, {'h', "BINGET"},
    {'i', "INST"}, {'j', "LONG_BINGET"}, {'l', "LIST"}, {']', "EMPTY_LIST"}, {'o', "OBJ"}, {'p', "PUT"},
    {'q', "BINPUT"}, {'r', "LONG_BINPUT"}, {'s', "SETITEM"}, {'t', "TUPLE"}, {')', "EMPTY_TUPLE"},
    {'u', "SETITEMS"}, {'G', "BINFLOAT"}, {0x80, "PROTO"}, {0x81, "NEWOBJ"}, {0x82, "EXT1"},
    {0x83, "EXT2"}, {0x84, "EXT4"}, {0x85, "TUPLE1"}, {0x86, "TUPLE2"}, {0x87, "TUPLE3"},
    {0x88, "NEWTRUE"}, {0x89, "NEWFALSE"}, {0x8a, "LONG1"}, {0x8b, "LONG4"}, {'B', "BINBYTES"},
    {'C', "SHORT_BINBYTES"}, {0x8c, "SHORT_BINUNICODE"}, {0x8d, "BINUNICODE8"}, {0x8e, "BINBYTES8"},
    {0x8f, "EMPTY_SET"}, {0x90, "ADDITEMS"}, {0x91, "FROZENSET"}, {0x92, "NEWOBJ_EX"},
    {0x93, "STACK_GLOBAL"}, {0x94, "MEMOIZE"}, {0x95, "FRAME"}, {0x96, "BYTEARRAY8"},
    {0x97, "NEXT_BUFFER"}, {0x98, "READONLY_BUFFER"},
};

const char *pk_opcode_name(uint8_t op) {
    for (size_t i = 0; i < sizeof OPS / sizeof *OPS; i++)
        if (OPS[i].op == op) return OPS[i].name;
    return NULL;
}

static const char *type_name(const pk_value *v) {
    static const char *const N[] = {"None", "bool", "int", "float", "str", "bytes", "tuple", "list",
                                    "dict", "global", "storage", "tensor"};
    return v ? N[v->type] : "nothing";
}

/* ---- allowlist ---- */

typedef struct allowed {
    const char *module, *name, *full;
    pk_global g;
    int dtype;
} allowed;

static const allowed ALLOW[] = {
    {"collections", "OrderedDict", "collections.OrderedDict", PKG_ORDERED_DICT, -1},
    {"torch._utils", "_rebuild_tensor", "torch._utils._rebuild_tensor", PKG_REBUILD_TENSOR, -1},
    {"torch._utils", "_rebuild_tensor_v2", "torch._utils._rebuild_tensor_v2", PKG_REBUILD_TENSOR_V2, -1},
    {"torch._utils", "_rebuild_tensor_v3", "torch._utils._rebuild_tensor_v3", PKG_REBUILD_TENSOR_V3, -1},
    {"torch._utils", "_rebuild_parameter", "torch._utils._rebuild_parameter", PKG_REBUILD_PARAMETER, -1},
    {"torch._utils", "_rebuild_parameter_with_state", "torch._utils._rebuild_parameter_with_state",
     PKG_REBUILD_PARAMETER_STATE, -1},
    {"torch._tensor", "_rebuild_from_type_v2", "torch._tensor._rebuild_from_type_v2", PKG_REBUILD_FROM_TYPE_V2, -1},
    {"torch", "Tensor", "torch.Tensor", PKG_TENSOR_CLASS, -1},
    {"torch._tensor", "Tensor", "torch._tensor.Tensor", PKG_TENSOR_CLASS, -1},
    {"torch.nn.parameter", "Parameter", "torch.nn.parameter.Parameter", PKG_PARAMETER_CLASS, -1},
    {"torch", "Size", "torch.Size", PKG_SIZE, -1},
    {"torch", "device", "torch.device", PKG_DEVICE, -1},
    {"torch", "DoubleStorage", "torch.DoubleStorage", PKG_STORAGE_TYPE, AV_F64},
    {"torch", "FloatStorage", "torch.FloatStorage", PKG_STORAGE_TYPE, AV_F32},
    {"torch", "HalfStorage", "torch.HalfStorage", PKG_STORAGE_TYPE, AV_F16},
    {"torch", "BFloat16Storage", "torch.BFloat16Storage", PKG_STORAGE_TYPE, AV_BF16},
    {"torch", "LongStorage", "torch.LongStorage", PKG_STORAGE_TYPE, AV_I64},
    {"torch", "IntStorage", "torch.IntStorage", PKG_STORAGE_TYPE, AV_I32},
    {"torch", "ShortStorage", "torch.ShortStorage", PKG_STORAGE_TYPE, AV_I16},
    {"torch", "CharStorage", "torch.CharStorage", PKG_STORAGE_TYPE, AV_I8},
    {"torch", "ByteStorage", "torch.ByteStorage", PKG_STORAGE_TYPE, AV_U8},
    {"torch", "BoolStorage", "torch.BoolStorage", PKG_STORAGE_TYPE, AV_BOOL},
    {"torch", "ComplexFloatStorage", "torch.ComplexFloatStorage", PKG_STORAGE_TYPE, -1},
    {"torch", "ComplexDoubleStorage", "torch.ComplexDoubleStorage", PKG_STORAGE_TYPE, -1},
    {"torch", "UntypedStorage", "torch.UntypedStorage", PKG_UNTYPED_STORAGE, AV_U8},
    {"torch", "float64", "torch.float64", PKG_DTYPE, AV_F64},
    {"torch", "float32", "torch.float32", PKG_DTYPE, AV_F32},
    {"torch", "float16", "torch.float16", PKG_DTYPE, AV_F16},
    {"torch", "bfloat16", "torch.bfloat16", PKG_DTYPE, AV_BF16},
    {"torch", "int64", "torch.int64", PKG_DTYPE, AV_I64},
    {"torch", "int32", "torch.int32", PKG_DTYPE, AV_I32},
    {"torch", "int16", "torch.int16", PKG_DTYPE, AV_I16},
    {"torch", "int8", "torch.int8", PKG_DTYPE, AV_I8},
    {"torch", "uint8", "torch.uint8", PKG_DTYPE, AV_U8},
    {"torch", "bool", "torch.bool", PKG_DTYPE, AV_BOOL},
    {"torch", "float8_e4m3fn", "torch.float8_e4m3fn", PKG_DTYPE, AV_F8_E4M3},
    {"torch", "float8_e5m2", "torch.float8_e5m2", PKG_DTYPE, AV_F8_E5M2},
    {"torch", "complex64", "torch.complex64", PKG_DTYPE, -1},
    {"torch", "complex128", "torch.complex128", PKG_DTYPE, -1},
};

/* ---- errors ---- */

/* Printable, bounded copy of untrusted text for messages. */
static void clean(char *dst, size_t cap, const char *s, size_t n) {
    size_t j = 0;
    for (size_t i = 0; i < n && j + 4 < cap; i++) dst[j++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    if (j + 4 >= cap && n > j) { dst[j++] = '.'; dst[j++] = '.'; dst[j++] = '.'; }
    dst[j] = 0;
}

#define FAIL(code, ...) fail_(v, code, __VA_ARGS__)

__attribute__((format(printf, 3, 4))) static int fail_(vm *v, int code, const char *fmt, ...) {
    char m[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    return av_errf(v->err, code, "%s: %s", v->name, m);
}

static const char *opname(uint8_t op) {
    const char *n = pk_opcode_name(op);
    return n ? n : "?";
}

/* ---- values ---- */

static pk_value *newv(vm *v, pk_type t) {
    pk_result *r = v->r;
    if (r->n_objs >= PK_MAX_OBJECTS) {
        FAIL(AV_EFORMAT, "more than %u objects (offset %zu)", PK_MAX_OBJECTS, v->op_pos);
        return NULL;
    }
    if (r->n_objs == r->cap_objs) {
        size_t nc = r->cap_objs ? r->cap_objs * 2 : 256;
        pk_value **n = realloc(r->objs, nc * sizeof *n);
        if (!n) goto oom;
        r->objs = n;
        r->cap_objs = nc;
    }
    pk_value *x = calloc(1, sizeof *x);
    if (!x) goto oom;
    x->type = t;
    x->dtype = -1;
    r->objs[r->n_objs++] = x;
    return x;
oom:
    FAIL(AV_ENOMEM, "out of memory");
    return NULL;
}

static int seq_push(vm *v, pk_value *s, pk_value *item) {
    if (s->u.seq.n == s->u.seq.cap) {
        size_t nc = s->u.seq.cap ? s->u.seq.cap * 2 : 4;
        pk_value **n = realloc(s->u.seq.items, nc * sizeof *n);
        if (!n) return FAIL(AV_ENOMEM, "out of memory");
        s->u.seq.items = n;
        s->u.seq.cap = nc;
    }
    s->u.seq.items[s->u.seq.n++] = item;
    return 0;
}

/* ---- stack ---- */

static size_t mark_base(const vm *v) { return v->n_marks ? v->marks[v->n_marks - 1] : 0; }

static int push(vm *v, pk_value *x) {
    if (!x) return v->err->code ? v->err->code : AV_ENOMEM;
    if (v->sp == v->cap) {
        if (v->cap >= PK_MAX_STACK)
            return FAIL(AV_EFORMAT, "stack deeper than %u values at offset %zu", PK_MAX_STACK, v->op_pos);
        size_t nc = v->cap ? v->cap * 2 : 64;
        pk_value **n = realloc(v->stack, nc * sizeof *n);
        if (!n) return FAIL(AV_ENOMEM, "out of memory");
        v->stack = n;
        v->cap = nc;
    }
    v->stack[v->sp++] = x;
    return 0;
}

/* Pop one value above the current mark. */
static int pop(vm *v, pk_value **x) {
    if (v->sp <= mark_base(v))
        return FAIL(AV_EFORMAT, "%s at offset %zu: stack underflow", opname(v->buf[v->op_pos]), v->op_pos);
    *x = v->stack[--v->sp];
    return 0;
}

static int top(vm *v, pk_value **x) {
    if (v->sp <= mark_base(v))
        return FAIL(AV_EFORMAT, "%s at offset %zu: stack underflow", opname(v->buf[v->op_pos]), v->op_pos);
    *x = v->stack[v->sp - 1];
    return 0;
}

/* Pop back to the last MARK: items in stack[*from .. sp) stay readable until the next push. */
static int pop_mark(vm *v, size_t *from, size_t *n) {
    if (!v->n_marks)
        return FAIL(AV_EFORMAT, "%s at offset %zu: no MARK on the stack", opname(v->buf[v->op_pos]), v->op_pos);
    *from = v->marks[--v->n_marks];
    *n = v->sp - *from;
    v->sp = *from;
    return 0;
}

/* ---- input ---- */

static int need(vm *v, size_t n, const char *what) {
    if (n > v->size - v->pos)
        return FAIL(AV_EFORMAT, "%s at offset %zu: %zu bytes past the end of the input (%zu left)", what, v->op_pos, n,
                    v->size - v->pos);
    return 0;
}

static uint64_t rd_le(const uint8_t *p, int n) {
    uint64_t x = 0;
    for (int i = n - 1; i >= 0; i--) x = x << 8 | p[i];
    return x;
}

/* Read an n-byte little-endian length, then that many bytes. */
static int rd_len_data(vm *v, int lenbytes, int is_signed, const char *what, const uint8_t **p, size_t *n) {
    int rc = need(v, (size_t)lenbytes, what);
    if (rc) return rc;
    uint64_t len = rd_le(v->buf + v->pos, lenbytes);
    v->pos += (size_t)lenbytes;
    if (is_signed && (len & 0x80000000u))
        return FAIL(AV_EFORMAT, "%s at offset %zu: negative length", what, v->op_pos);
    if (len > v->size - v->pos)
        return FAIL(AV_EFORMAT, "%s length %llu at offset %zu runs past the end of the input (%zu bytes left)", what,
                    (unsigned long long)len, v->op_pos, v->size - v->pos);
    *p = v->buf + v->pos;
    *n = (size_t)len;
    v->pos += (size_t)len;
    return 0;
}

/* ---- memo ---- */

static int memo_put(vm *v, uint64_t idx) {
    pk_value *x;
    int rc = top(v, &x);
    if (rc) return rc;
    if (idx >= PK_MAX_MEMO)
        return FAIL(AV_EFORMAT, "memo index %llu at offset %zu is too large (limit %u)", (unsigned long long)idx,
                    v->op_pos, PK_MAX_MEMO);
    if (idx >= v->memo_cap) {
        size_t nc = v->memo_cap ? v->memo_cap : 64;
        while (nc <= idx) nc *= 2;
        pk_value **n = realloc(v->memo, nc * sizeof *n);
        if (!n) return FAIL(AV_ENOMEM, "out of memory");
        memset(n + v->memo_cap, 0, (nc - v->memo_cap) * sizeof *n);
        v->memo = n;
        v->memo_cap = nc;
    }
    if (!v->memo[idx]) v->memo_count++;
    v->memo[idx] = x;
    return 0;
}

static int memo_get(vm *v, uint64_t idx) {
    if (idx >= v->memo_cap || !v->memo[idx])
        return FAIL(AV_EFORMAT, "memo index %llu at offset %zu was never stored (%s)", (unsigned long long)idx,
                    v->op_pos, opname(v->buf[v->op_pos]));
    return push(v, v->memo[idx]);
}

/* ---- globals ---- */

static int resolve_global(vm *v, const char *mod, size_t ml, const char *name, size_t nl, const char *how) {
    for (size_t i = 0; i < sizeof ALLOW / sizeof *ALLOW; i++) {
        const allowed *a = &ALLOW[i];
        if (strlen(a->module) == ml && memcmp(a->module, mod, ml) == 0 && strlen(a->name) == nl &&
            memcmp(a->name, name, nl) == 0) {
            pk_value *g = newv(v, PK_GLOBAL);
            if (!g) return v->err->code;
            g->u.gl.g = a->g;
            g->u.gl.name = a->full;
            g->dtype = a->dtype;
            return push(v, g);
        }
    }
    char cm[120], cn[120];
    clean(cm, sizeof cm, mod, ml);
    clean(cn, sizeof cn, name, nl);
    return FAIL(AV_EFORMAT, "global '%s.%s' is not allowed (%s at offset %zu)", cm, cn, how, v->op_pos);
}

static int read_line(vm *v, const char **s, size_t *n) {
    const uint8_t *start = v->buf + v->pos;
    size_t left = v->size - v->pos, lim = left < 512 ? left : 512;
    const uint8_t *nl = memchr(start, '\n', lim);
    if (!nl) return FAIL(AV_EFORMAT, "GLOBAL at offset %zu: name not terminated by a newline", v->op_pos);
    *s = (const char *)start;
    *n = (size_t)(nl - start);
    v->pos += *n + 1;
    return 0;
}

/* ---- torch objects ---- */

static int as_int(const pk_value *x, int64_t *out) {
    if (!x) return 0;
    if (x->type == PK_INT && !x->u.i.big) { *out = x->u.i.v; return 1; }
    if (x->type == PK_BOOL) { *out = x->u.b; return 1; }
    return 0;
}

static int is_seq(const pk_value *x) { return x && (x->type == PK_TUPLE || x->type == PK_LIST); }

/* ('storage', type, key, location, numel[, view_metadata]) */
static int make_storage(vm *v, pk_value *pid) {
    pk_value **it = is_seq(pid) ? pid->u.seq.items : NULL;
    size_t n = it ? pid->u.seq.n : 0;
    int64_t numel;
    if (n < 5 || n > 6 || !pk_str_eq(it[0], "storage") || it[1]->type != PK_GLOBAL ||
        (it[1]->u.gl.g != PKG_STORAGE_TYPE && it[1]->u.gl.g != PKG_UNTYPED_STORAGE) || it[2]->type != PK_STR ||
        !as_int(it[4], &numel) || numel < 0)
        return FAIL(AV_EFORMAT, "BINPERSID at offset %zu: persistent id is not a ('storage', storage type, key, "
                                "location, numel) tuple", v->op_pos);
    if (memchr(it[2]->u.s.p, 0, it[2]->u.s.n) || it[2]->u.s.n > 256)
        return FAIL(AV_EFORMAT, "BINPERSID at offset %zu: bad storage key", v->op_pos);
    pk_value *s = newv(v, PK_STORAGE);
    if (!s) return v->err->code;
    if (!(s->u.st.key = strndup(it[2]->u.s.p, it[2]->u.s.n))) return FAIL(AV_ENOMEM, "out of memory");
    s->dtype = it[1]->dtype;
    s->u.st.numel = numel;
    s->u.st.untyped = it[1]->u.gl.g == PKG_UNTYPED_STORAGE;
    if (n == 6 && it[5]->type != PK_NONE) {
        pk_value *vm_ = it[5];
        int64_t off, sz;
        if (!is_seq(vm_) || vm_->u.seq.n != 3 || vm_->u.seq.items[0]->type != PK_STR ||
            !as_int(vm_->u.seq.items[1], &off) || !as_int(vm_->u.seq.items[2], &sz) || off < 0 || sz < 0 ||
            memchr(vm_->u.seq.items[0]->u.s.p, 0, vm_->u.seq.items[0]->u.s.n) || vm_->u.seq.items[0]->u.s.n > 256)
            return FAIL(AV_EFORMAT, "BINPERSID at offset %zu: bad view metadata", v->op_pos);
        s->u.st.has_view = 1;
        if (!(s->u.st.view_key = strndup(vm_->u.seq.items[0]->u.s.p, vm_->u.seq.items[0]->u.s.n)))
            return FAIL(AV_ENOMEM, "out of memory");
        s->u.st.view_offset = off;
        s->u.st.view_size = sz;
    }
    pk_result *r = v->r;
    if (r->n_storages == r->cap_storages) {
        size_t nc = r->cap_storages ? r->cap_storages * 2 : 16;
        pk_value **nn = realloc(r->storages, nc * sizeof *nn);
        if (!nn) return FAIL(AV_ENOMEM, "out of memory");
        r->storages = nn;
        r->cap_storages = nc;
    }
    r->storages[r->n_storages++] = s;
    return push(v, s);
}

static int int_tuple(vm *v, const pk_value *x, int64_t *out, int *n, const char *what) {
    if (!is_seq(x)) return FAIL(AV_EFORMAT, "REDUCE at offset %zu: tensor %s is a %s, not a tuple", v->op_pos, what, type_name(x));
    if (x->u.seq.n > PK_MAX_DIMS)
        return FAIL(AV_EUNSUPPORTED, "REDUCE at offset %zu: tensor with %zu dimensions (at most %d)", v->op_pos,
                    x->u.seq.n, PK_MAX_DIMS);
    for (size_t i = 0; i < x->u.seq.n; i++)
        if (!as_int(x->u.seq.items[i], &out[i]) || out[i] < 0)
            return FAIL(AV_EFORMAT, "REDUCE at offset %zu: tensor %s[%zu] is not a non-negative int", v->op_pos, what, i);
    *n = (int)x->u.seq.n;
    return 0;
}

/* _rebuild_tensor[_v2|_v3](storage, offset, size, stride, ...) */
static int make_tensor(vm *v, pk_global g, pk_value **a, size_t n, pk_value **out) {
    size_t lo = g == PKG_REBUILD_TENSOR ? 4 : g == PKG_REBUILD_TENSOR_V2 ? 6 : 7;
    if (n < lo || n > lo + 1)
        return FAIL(AV_EFORMAT, "REDUCE at offset %zu: tensor rebuild takes %zu arguments, got %zu", v->op_pos, lo, n);
    if (a[0]->type != PK_STORAGE)
        return FAIL(AV_EFORMAT, "REDUCE at offset %zu: tensor storage is a %s", v->op_pos, type_name(a[0]));
    pk_value *t = newv(v, PK_TENSOR);
    if (!t) return v->err->code;
    t->u.t.storage = a[0];
    if (!as_int(a[1], &t->u.t.offset) || t->u.t.offset < 0)
        return FAIL(AV_EFORMAT, "REDUCE at offset %zu: tensor storage offset is not a non-negative int", v->op_pos);
    int nd, ns;
    int rc = int_tuple(v, a[2], t->u.t.size, &nd, "size");
    if (rc || (rc = int_tuple(v, a[3], t->u.t.stride, &ns, "stride"))) return rc;
    if (nd != ns)
        return FAIL(AV_EFORMAT, "REDUCE at offset %zu: tensor has %d sizes but %d strides", v->op_pos, nd, ns);
    t->u.t.n_dims = nd;
    if (g == PKG_REBUILD_TENSOR_V3) {
        if (a[6]->type != PK_GLOBAL || a[6]->u.gl.g != PKG_DTYPE)
            return FAIL(AV_EFORMAT, "REDUCE at offset %zu: _rebuild_tensor_v3 dtype is a %s", v->op_pos, type_name(a[6]));
        t->dtype = a[6]->dtype;
    } else {
        if (a[0]->u.st.untyped)
            return FAIL(AV_EFORMAT, "REDUCE at offset %zu: untyped storage without a dtype", v->op_pos);
        t->dtype = a[0]->dtype;
    }
    *out = t;
    return 0;
}

static int apply(vm *v, pk_value *fn, pk_value *args, pk_value **out, int depth) {
    if (!fn || fn->type != PK_GLOBAL)
        return FAIL(AV_EFORMAT, "REDUCE at offset %zu: callable is a %s, not an allowed global", v->op_pos, type_name(fn));
    if (!args || args->type != PK_TUPLE)
        return FAIL(AV_EFORMAT, "REDUCE at offset %zu: arguments of %s are a %s, not a tuple", v->op_pos,
                    fn->u.gl.name, type_name(args));
    pk_value **a = args->u.seq.items;
    size_t n = args->u.seq.n;
    switch (fn->u.gl.g) {
    case PKG_ORDERED_DICT: {
        pk_value *d = newv(v, PK_DICT);
        if (!d) return v->err->code;
        if (n == 1 && is_seq(a[0])) {
            for (size_t i = 0; i < a[0]->u.seq.n; i++) {
                pk_value *p = a[0]->u.seq.items[i];
                if (!is_seq(p) || p->u.seq.n != 2)
                    return FAIL(AV_EFORMAT, "REDUCE at offset %zu: OrderedDict item is not a pair", v->op_pos);
                int rc = seq_push(v, d, p->u.seq.items[0]);
                if (rc || (rc = seq_push(v, d, p->u.seq.items[1]))) return rc;
            }
        } else if (n != 0) {
            return FAIL(AV_EFORMAT, "REDUCE at offset %zu: unexpected OrderedDict arguments", v->op_pos);
        }
        *out = d;
        return 0;
    }
    case PKG_REBUILD_TENSOR:
    case PKG_REBUILD_TENSOR_V2:
    case PKG_REBUILD_TENSOR_V3:
        return make_tensor(v, fn->u.gl.g, a, n, out);
    case PKG_REBUILD_PARAMETER:
    case PKG_REBUILD_PARAMETER_STATE:
        if (n != (fn->u.gl.g == PKG_REBUILD_PARAMETER ? 3u : 4u) || a[0]->type != PK_TENSOR)
            return FAIL(AV_EFORMAT, "REDUCE at offset %zu: bad %s arguments", v->op_pos, fn->u.gl.name);
        *out = a[0];
        return 0;
    case PKG_REBUILD_FROM_TYPE_V2:
        if (depth > 0 || n != 4 || a[1]->type != PK_GLOBAL ||
            (a[1]->u.gl.g != PKG_TENSOR_CLASS && a[1]->u.gl.g != PKG_PARAMETER_CLASS))
            return FAIL(AV_EFORMAT, "REDUCE at offset %zu: bad %s arguments", v->op_pos, fn->u.gl.name);
        {
            int rc = apply(v, a[0], a[2], out, depth + 1);
            if (rc) return rc;
            if ((*out)->type != PK_TENSOR)
                return FAIL(AV_EFORMAT, "REDUCE at offset %zu: %s did not build a tensor", v->op_pos, fn->u.gl.name);
            return 0;
        }
    case PKG_SIZE:
        if (n != 1 || !is_seq(a[0]))
            return FAIL(AV_EFORMAT, "REDUCE at offset %zu: bad torch.Size arguments", v->op_pos);
        *out = a[0];
        return 0;
    case PKG_DEVICE:
        if (n < 1 || n > 2 || a[0]->type != PK_STR)
            return FAIL(AV_EFORMAT, "REDUCE at offset %zu: bad torch.device arguments", v->op_pos);
        *out = a[0];
        return 0;
    default:
        return FAIL(AV_EFORMAT, "REDUCE at offset %zu: calling '%s' is not allowed", v->op_pos, fn->u.gl.name);
    }
}

/* ---- the VM ---- */

static int new_seq(vm *v, pk_type t, size_t from, size_t n) {
    pk_value *x = newv(v, t);
    if (!x) return v->err->code;
    if (n) {
        if (!(x->u.seq.items = malloc(n * sizeof *x->u.seq.items))) return FAIL(AV_ENOMEM, "out of memory");
        memcpy(x->u.seq.items, v->stack + from, n * sizeof *x->u.seq.items);
        x->u.seq.n = x->u.seq.cap = n;
    }
    return push(v, x);
}

static int run(vm *v, size_t *used) {
    int rc = 0;
    int seen_proto = 0;
    while (!rc) {
        if (v->pos >= v->size)
            return FAIL(AV_EFORMAT, "truncated: no STOP opcode before the end of the input (%zu bytes)", v->size);
        v->op_pos = v->pos;
        uint8_t op = v->buf[v->pos++];
        const uint8_t *p;
        size_t n, from;
        pk_value *x, *y, *z;
        switch (op) {
        case 0x80: /* PROTO */
            if ((rc = need(v, 1, "PROTO"))) break;
            if (v->buf[v->pos] < 2 || v->buf[v->pos] > 5)
                return FAIL(AV_EFORMAT, "unsupported pickle protocol %d at offset %zu (2..5)", v->buf[v->pos], v->op_pos);
            v->pos++;
            seen_proto = 1;
            break;
        case 0x95: /* FRAME: a length hint only */
            if ((rc = need(v, 8, "FRAME"))) break;
            v->pos += 8;
            break;
        case '.': /* STOP */
            if ((rc = pop(v, &x))) break;
            v->r->root = x;
            if (used) *used = v->pos;
            return 0;
        case '(': /* MARK */
            if (v->n_marks >= PK_MAX_MARKS)
                return FAIL(AV_EFORMAT, "MARK nesting deeper than %d at offset %zu", PK_MAX_MARKS, v->op_pos);
            v->marks[v->n_marks++] = v->sp;
            break;
        case '0': /* POP */
            if (v->sp > mark_base(v)) v->sp--;
            else if (v->n_marks) v->n_marks--;
            else return FAIL(AV_EFORMAT, "POP at offset %zu: stack underflow", v->op_pos);
            break;
        case '1': /* POP_MARK */
            rc = pop_mark(v, &from, &n);
            break;
        case '2': /* DUP */
            if (!(rc = top(v, &x))) rc = push(v, x);
            break;
        case ')': rc = new_seq(v, PK_TUPLE, 0, 0); break;
        case 't':
            if (!(rc = pop_mark(v, &from, &n))) rc = new_seq(v, PK_TUPLE, from, n);
            break;
        case 0x85: case 0x86: case 0x87: /* TUPLE1..3 */
            n = (size_t)(op - 0x84);
            if (v->sp < mark_base(v) + n)
                return FAIL(AV_EFORMAT, "%s at offset %zu: stack underflow", opname(op), v->op_pos);
            v->sp -= n;
            rc = new_seq(v, PK_TUPLE, v->sp, n);
            break;
        case ']': rc = new_seq(v, PK_LIST, 0, 0); break;
        case 'l':
            if (!(rc = pop_mark(v, &from, &n))) rc = new_seq(v, PK_LIST, from, n);
            break;
        case '}': rc = new_seq(v, PK_DICT, 0, 0); break;
        case 'd':
            if ((rc = pop_mark(v, &from, &n))) break;
            if (n % 2) return FAIL(AV_EFORMAT, "DICT at offset %zu: odd number of items", v->op_pos);
            rc = new_seq(v, PK_DICT, from, n);
            break;
        case 'a': /* APPEND */
            if ((rc = pop(v, &y)) || (rc = top(v, &x))) break;
            if (x->type != PK_LIST) return FAIL(AV_EFORMAT, "APPEND at offset %zu: target is a %s", v->op_pos, type_name(x));
            rc = seq_push(v, x, y);
            break;
        case 'e': /* APPENDS */
            if ((rc = pop_mark(v, &from, &n)) || (rc = top(v, &x))) break;
            if (x->type != PK_LIST) return FAIL(AV_EFORMAT, "APPENDS at offset %zu: target is a %s", v->op_pos, type_name(x));
            for (size_t i = 0; i < n && !rc; i++) rc = seq_push(v, x, v->stack[from + i]);
            break;
        case 's': /* SETITEM */
            if ((rc = pop(v, &z)) || (rc = pop(v, &y)) || (rc = top(v, &x))) break;
            if (x->type != PK_DICT) return FAIL(AV_EFORMAT, "SETITEM at offset %zu: target is a %s", v->op_pos, type_name(x));
            if (!(rc = seq_push(v, x, y))) rc = seq_push(v, x, z);
            break;
        case 'u': /* SETITEMS */
            if ((rc = pop_mark(v, &from, &n)) || (rc = top(v, &x))) break;
            if (x->type != PK_DICT) return FAIL(AV_EFORMAT, "SETITEMS at offset %zu: target is a %s", v->op_pos, type_name(x));
            if (n % 2) return FAIL(AV_EFORMAT, "SETITEMS at offset %zu: odd number of items", v->op_pos);
            for (size_t i = 0; i < n && !rc; i++) rc = seq_push(v, x, v->stack[from + i]);
            break;
        case 'q': /* BINPUT */
            if (!(rc = need(v, 1, "BINPUT"))) rc = memo_put(v, v->buf[v->pos++]);
            break;
        case 'r': /* LONG_BINPUT */
            if ((rc = need(v, 4, "LONG_BINPUT"))) break;
            v->pos += 4;
            rc = memo_put(v, rd_le(v->buf + v->pos - 4, 4));
            break;
        case 0x94: /* MEMOIZE */
            rc = memo_put(v, v->memo_count);
            break;
        case 'h': /* BINGET */
            if (!(rc = need(v, 1, "BINGET"))) rc = memo_get(v, v->buf[v->pos++]);
            break;
        case 'j': /* LONG_BINGET */
            if ((rc = need(v, 4, "LONG_BINGET"))) break;
            v->pos += 4;
            rc = memo_get(v, rd_le(v->buf + v->pos - 4, 4));
            break;
        case 'J': case 'K': case 'M': { /* BININT, BININT1, BININT2 */
            int k = op == 'J' ? 4 : op == 'K' ? 1 : 2;
            if ((rc = need(v, (size_t)k, opname(op)))) break;
            uint64_t u = rd_le(v->buf + v->pos, k);
            v->pos += (size_t)k;
            if (!(x = newv(v, PK_INT))) return v->err->code;
            x->u.i.v = op == 'J' ? (int64_t)(int32_t)(uint32_t)u : (int64_t)u;
            rc = push(v, x);
            break;
        }
        case 0x8a: case 0x8b: { /* LONG1, LONG4 */
            if ((rc = rd_len_data(v, op == 0x8a ? 1 : 4, 1, opname(op), &p, &n))) break;
            if (!(x = newv(v, PK_INT))) return v->err->code;
            x->u.i.raw = p;
            x->u.i.raw_len = n;
            if (n <= 8) {
                uint64_t u = n ? rd_le(p, (int)n) : 0;
                if (n && n < 8 && (p[n - 1] & 0x80)) u |= ~(uint64_t)0 << (8 * n);
                x->u.i.v = (int64_t)u;
            } else {
                x->u.i.big = 1;
            }
            rc = push(v, x);
            break;
        }
        case 'G': { /* BINFLOAT, big-endian */
            if ((rc = need(v, 8, "BINFLOAT"))) break;
            uint64_t u = 0;
            for (int i = 0; i < 8; i++) u = u << 8 | v->buf[v->pos + (size_t)i];
            v->pos += 8;
            if (!(x = newv(v, PK_FLOAT))) return v->err->code;
            memcpy(&x->u.f, &u, 8);
            rc = push(v, x);
            break;
        }
        case 'N':
            rc = push(v, newv(v, PK_NONE));
            break;
        case 0x88: case 0x89:
            if (!(x = newv(v, PK_BOOL))) return v->err->code;
            x->u.b = op == 0x88;
            rc = push(v, x);
            break;
        case 0x8c: case 'X': case 0x8d: /* SHORT_BINUNICODE, BINUNICODE, BINUNICODE8 */
        case 'U': case 'T':             /* SHORT_BINSTRING, BINSTRING (legacy str) */
        case 'C': case 'B': case 0x8e: { /* SHORT_BINBYTES, BINBYTES, BINBYTES8 */
            int k = (op == 0x8c || op == 'U' || op == 'C') ? 1 : (op == 0x8d || op == 0x8e) ? 8 : 4;
            if ((rc = rd_len_data(v, k, op == 'T', opname(op), &p, &n))) break;
            if (!(x = newv(v, (op == 'C' || op == 'B' || op == 0x8e) ? PK_BYTES : PK_STR))) return v->err->code;
            x->u.s.p = (const char *)p;
            x->u.s.n = n;
            rc = push(v, x);
            break;
        }
        case 'c': { /* GLOBAL */
            const char *m, *nm;
            size_t ml, nl;
            if ((rc = read_line(v, &m, &ml)) || (rc = read_line(v, &nm, &nl))) break;
            rc = resolve_global(v, m, ml, nm, nl, "GLOBAL");
            break;
        }
        case 0x93: /* STACK_GLOBAL */
            if ((rc = pop(v, &y)) || (rc = pop(v, &x))) break;
            if (x->type != PK_STR || y->type != PK_STR)
                return FAIL(AV_EFORMAT, "STACK_GLOBAL at offset %zu: module/name are not strings", v->op_pos);
            rc = resolve_global(v, x->u.s.p, x->u.s.n, y->u.s.p, y->u.s.n, "STACK_GLOBAL");
            break;
        case 'Q': /* BINPERSID */
            if (!(rc = pop(v, &x))) rc = make_storage(v, x);
            break;
        case 'R': /* REDUCE */
            if ((rc = pop(v, &y)) || (rc = pop(v, &x))) break;
            if (!(rc = apply(v, x, y, &z, 0))) rc = push(v, z);
            break;
        case 0x81: /* NEWOBJ: only OrderedDict */
            if ((rc = pop(v, &y)) || (rc = pop(v, &x))) break;
            if (x->type != PK_GLOBAL || x->u.gl.g != PKG_ORDERED_DICT || y->type != PK_TUPLE || y->u.seq.n)
                return FAIL(AV_EFORMAT, "NEWOBJ at offset %zu: only OrderedDict() may be created, not %s", v->op_pos,
                            x->type == PK_GLOBAL ? x->u.gl.name : type_name(x));
            rc = new_seq(v, PK_DICT, 0, 0);
            break;
        case 'b': /* BUILD: state of OrderedDicts (_metadata) and tensors is ignored */
            if ((rc = pop(v, &y)) || (rc = top(v, &x))) break;
            if (x->type != PK_DICT && x->type != PK_TENSOR)
                return FAIL(AV_EFORMAT, "BUILD at offset %zu: setting the state of a %s is not allowed", v->op_pos,
                            type_name(x));
            break;
        default: {
            const char *nm = pk_opcode_name(op);
            if (nm) return FAIL(AV_EFORMAT, "opcode %s (0x%02x) at offset %zu is not allowed", nm, op, v->op_pos);
            return FAIL(AV_EFORMAT, "unknown opcode 0x%02x at offset %zu", op, v->op_pos);
        }
        }
        if (!rc && !seen_proto)
            return FAIL(AV_EFORMAT, "no PROTO opcode at offset 0 (protocol 2 or later expected)");
    }
    return rc;
}

int pk_load(const uint8_t *buf, size_t size, const char *name, pk_result **out, size_t *used, av_err *err) {
    *out = NULL;
    av_err dummy;
    vm v = {.buf = buf, .size = size, .name = name, .err = err ? err : &dummy};
    v.err->code = 0;
    if (!(v.r = calloc(1, sizeof *v.r))) return av_errf(err, AV_ENOMEM, "%s: out of memory", name);
    int rc = run(&v, used);
    free(v.stack);
    free(v.memo);
    if (rc) {
        pk_result_free(v.r);
        return rc;
    }
    *out = v.r;
    return 0;
}

pk_value *pk_root(const pk_result *r) { return r->root; }
size_t pk_n_storages(const pk_result *r) { return r->n_storages; }
pk_value *pk_storage_at(const pk_result *r, size_t i) { return i < r->n_storages ? r->storages[i] : NULL; }

void pk_result_free(pk_result *r) {
    if (!r) return;
    for (size_t i = 0; i < r->n_objs; i++) {
        pk_value *x = r->objs[i];
        if (x->type == PK_TUPLE || x->type == PK_LIST || x->type == PK_DICT) free(x->u.seq.items);
        if (x->type == PK_STORAGE) {
            free((char *)x->u.st.key);
            free((char *)x->u.st.view_key);
        }
        free(x);
    }
    free(r->objs);
    free(r->storages);
    free(r);
}

int pk_str_eq(const pk_value *v, const char *s) {
    return v && v->type == PK_STR && strlen(s) == v->u.s.n && memcmp(v->u.s.p, s, v->u.s.n) == 0;
}

pk_value *pk_dict_get(const pk_value *d, const char *key) {
    if (!d || d->type != PK_DICT) return NULL;
    for (size_t i = d->u.seq.n; i >= 2; i -= 2)
        if (pk_str_eq(d->u.seq.items[i - 2], key)) return d->u.seq.items[i - 1];
    return NULL;
}
