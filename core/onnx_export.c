/* onnx_export.c — a Llama model -> ONNX decoder graph of standard ops.
 *
 * Layout chosen so onnxruntime and our importer both read it plainly:
 * weights as float32 [in, out] initializers under their GGUF names (MatMul's
 * right operand, no Transpose at run time); q/k rows permuted into HF's
 * rotate_half order so RoPE is Slice/Neg/Concat with [ctx, head_dim] cos/sin
 * tables gathered by the position_ids input (as torch.onnx exports HF
 * Llama); GQA as Unsqueeze/Expand/Reshape (HF repeat_kv); causal mask from
 * Range/Greater/Where plus the attention_mask input as a padding bias;
 * RMSNorm as Pow/ReduceMean/Add/Sqrt/Div/Mul; SiLU as Sigmoid*x.
 * GGUF metadata goes to metadata_props as "gguf:<key>" (the typed encoding
 * of st_json.h), so ONNX -> GGUF keeps the vocabulary. */
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "onnx_impl.h"
#include "quant.h"
#include "st_json.h"

#define EXT_LIMIT ((uint64_t)2000 << 20) /* protobuf's 2 GB message limit, with room for the graph */

typedef struct ob {
    void **allocs;
    size_t n_allocs, cap_allocs;
    Onnx__NodeProto **nodes;
    size_t n_nodes, cap_nodes;
    Onnx__TensorProto **inits;
    size_t n_inits, cap_inits;
    int opset, counter, oom;
    char scope[64];
} ob;

static void *al(ob *b, size_t n) {
    if (b->oom) return NULL;
    void *p = calloc(1, n ? n : 1);
    if (b->n_allocs == b->cap_allocs) {
        size_t nc = b->cap_allocs ? 2 * b->cap_allocs : 256;
        void **na = realloc(b->allocs, nc * sizeof *na);
        if (!na) { free(p); p = NULL; } else { b->allocs = na; b->cap_allocs = nc; }
    }
    if (!p) { b->oom = 1; return NULL; }
    b->allocs[b->n_allocs++] = p;
    return p;
}

static char *sdup(ob *b, const char *s) {
    char *d = al(b, strlen(s) + 1);
    if (d) strcpy(d, s);
    return d;
}

static int push(ob *b, void ***arr, size_t *n, size_t *cap, void *item) {
    if (!item) return -1;
    if (*n == *cap) {
        size_t nc = *cap ? 2 * *cap : 256;
        void **na = realloc(*arr, nc * sizeof *na);
        if (!na) { b->oom = 1; return -1; }
        *arr = na;
        *cap = nc;
    }
    (*arr)[(*n)++] = item;
    return 0;
}

/* Node op(inputs...) with one fresh output; returns the output's name. Inputs
 * end at NULL; "" is an omitted optional input. */
static const char *nd(ob *b, const char *op, ...) {
    Onnx__NodeProto *n = al(b, sizeof *n);
    if (!n) return "";
    onnx__node_proto__init(n);
    const char *in[8];
    size_t k = 0;
    va_list ap;
    va_start(ap, op);
    for (const char *s; k < 8 && (s = va_arg(ap, const char *));) in[k++] = s;
    va_end(ap);
    char name[128];
    snprintf(name, sizeof name, "%s/%s_%d", b->scope, op, b->counter++);
    n->name = sdup(b, name);
    n->op_type = sdup(b, op);
    n->input = al(b, (k + 1) * sizeof(char *));
    n->output = al(b, sizeof(char *));
    if (!n->input || !n->output) return "";
    for (size_t i = 0; i < k; i++) n->input[i] = sdup(b, in[i]); /* callers pass stack names */
    n->n_input = k;
    snprintf(name + strlen(name), sizeof name - strlen(name), "_out");
    n->output[0] = sdup(b, name);
    n->n_output = 1;
    push(b, (void ***)&b->nodes, &b->n_nodes, &b->cap_nodes, n);
    return n->output[0] ? n->output[0] : "";
}

static Onnx__AttributeProto *attr(ob *b, const char *key) {
    if (!b->n_nodes) return NULL;
    Onnx__NodeProto *n = b->nodes[b->n_nodes - 1];
    Onnx__AttributeProto *a = al(b, sizeof *a), **na = al(b, (n->n_attribute + 1) * sizeof *na);
    if (!a || !na) return NULL;
    onnx__attribute_proto__init(a);
    a->name = sdup(b, key);
    if (n->n_attribute) memcpy(na, n->attribute, n->n_attribute * sizeof *na);
    na[n->n_attribute++] = a;
    n->attribute = na;
    return a;
}

static void attr_i(ob *b, const char *key, int64_t v) {
    Onnx__AttributeProto *a = attr(b, key);
    if (!a) return;
    a->has_type = 1; a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
    a->has_i = 1; a->i = v;
}

static void attr_ints(ob *b, const char *key, const int64_t *v, size_t n) {
    Onnx__AttributeProto *a = attr(b, key);
    if (!a || !(a->ints = al(b, n * sizeof *v))) return;
    a->has_type = 1; a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
    memcpy(a->ints, v, n * sizeof *v);
    a->n_ints = n;
}

/* Initializer with raw bytes (not copied: data must outlive the write). */
static Onnx__TensorProto *init_raw(ob *b, const char *name, int32_t dtype, const int64_t *dims, size_t nd_, const void *data,
                                   size_t nbytes) {
    Onnx__TensorProto *t = al(b, sizeof *t);
    if (!t) return NULL;
    onnx__tensor_proto__init(t);
    t->name = sdup(b, name);
    t->has_data_type = 1;
    t->data_type = dtype;
    if (!(t->dims = al(b, (nd_ + 1) * sizeof *dims))) return NULL;
    if (nd_) memcpy(t->dims, dims, nd_ * sizeof *dims);
    t->n_dims = nd_;
    t->has_raw_data = 1;
    t->raw_data.data = (uint8_t *)data;
    t->raw_data.len = nbytes;
    push(b, (void ***)&b->inits, &b->n_inits, &b->cap_inits, t);
    return t;
}

static const char *c_i64(ob *b, const char *name, const int64_t *v, size_t n, int scalar) {
    int64_t *d = al(b, n * sizeof *d), dims[1] = { (int64_t)n };
    if (!d) return "";
    memcpy(d, v, n * sizeof *d);
    init_raw(b, name, 7, dims, scalar ? 0 : 1, d, n * sizeof *d);
    return name;
}

static const char *c_f32(ob *b, const char *name, float v) {
    float *d = al(b, sizeof *d);
    if (!d) return "";
    *d = v;
    init_raw(b, name, 1, NULL, 0, d, sizeof *d);
    return name;
}

static const char *reduce_mean_last(ob *b, const char *x) {
    static const int64_t axes[1] = { -1 };
    if (b->opset >= 18) {
        const char *r = nd(b, "ReduceMean", x, "const.axes_last", NULL);
        attr_i(b, "keepdims", 1);
        return r;
    }
    const char *r = nd(b, "ReduceMean", x, NULL);
    attr_ints(b, "axes", axes, 1);
    attr_i(b, "keepdims", 1);
    return r;
}

static const char *rmsnorm(ob *b, const char *x, const char *w) {
    const char *ms = reduce_mean_last(b, nd(b, "Pow", x, "const.two", NULL));
    const char *s = nd(b, "Sqrt", nd(b, "Add", ms, "const.eps", NULL), NULL);
    return nd(b, "Mul", nd(b, "Div", x, s, NULL), w, NULL);
}

static const char *transpose(ob *b, const char *x, const int64_t *perm, size_t n) {
    const char *r = nd(b, "Transpose", x, NULL);
    attr_ints(b, "perm", perm, n);
    return r;
}

/* ---- weights ---- */

typedef struct wctx {
    const av_model *m;
    const char *path;
    av_out *ext;          /* external data file, or NULL for inline */
    const char *ext_name; /* its location, relative to the model */
    int64_t hd;
    int int8;             /* 0 float32, 1 int8 sym, 2 uint8 asym (matrices only) */
    av_err *err;
} wctx;

/* Attach nbytes at p (malloc'd, ownership taken) to initializer ti: written
 * to the external file at a 4096-aligned offset (then freed), or inline. */
static int put_data(ob *b, wctx *w, Onnx__TensorProto *ti, void *p, size_t nb) {
    int rc = 0;
    if (!w->ext) {
        if (push(b, &b->allocs, &b->n_allocs, &b->cap_allocs, p)) { free(p); return av_errf(w->err, AV_ENOMEM, "%s: out of memory", w->path); }
        ti->raw_data.data = (uint8_t *)p;
        ti->raw_data.len = nb;
        return 0;
    }
    uint64_t pad = (4096 - w->ext->pos % 4096) % 4096, off = 0;
    if (!(rc = av_out_zeros(w->ext, pad, w->err))) {
        off = w->ext->pos;
        rc = av_out_write(w->ext, p, nb, w->err);
    }
    free(p);
    if (rc) return rc;
    ti->has_raw_data = 0;
    ti->has_data_location = 1;
    ti->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
    ti->external_data = al(b, 3 * sizeof *ti->external_data);
    const char *keys[3] = { "location", "offset", "length" };
    char vals[3][32];
    snprintf(vals[1], sizeof vals[1], "%llu", (unsigned long long)off);
    snprintf(vals[2], sizeof vals[2], "%zu", nb);
    for (int k = 0; k < 3 && ti->external_data; k++) {
        Onnx__StringStringEntryProto *e = al(b, sizeof *e);
        if (!e) break;
        onnx__string_string_entry_proto__init(e);
        e->key = sdup(b, keys[k]);
        e->value = sdup(b, k ? vals[k] : w->ext_name);
        ti->external_data[ti->n_external_data++] = e;
    }
    return b->oom ? av_errf(w->err, AV_ENOMEM, "%s: out of memory", w->path) : 0;
}

/* GGUF row r of a q/k matrix (n_head > 0) -> its HF rotate_half row; else r. */
static int64_t hf_row(int64_t r, int64_t R, int64_t n_head) {
    if (n_head <= 0) return r;
    int64_t hd = R / n_head, half = hd / 2; /* row r = head h, pair j, member s -> h*hd + s*half + j */
    return (r / hd) * hd + (r % 2) * half + (r % hd) / 2;
}

/* Per-output-channel int8 of f [R, C] (GGUF rows = output channels) as
 * initializers NAME (int8/uint8), NAME.scale (f32 [R]), NAME.zero_point
 * ([R], 0 for sym) and a DequantizeLinear on the channel axis whose output
 * (NAME/dequant, float32) is what the graph uses: axis 1 of [C, R] when
 * transposed for MatMul, axis 0 of the [R, C] embedding. */
static int add_int8(ob *b, wctx *w, const char *name, const float *f, int64_t R, int64_t C, int64_t n_head, int transpose,
                    char *ref, size_t refn) {
    const int asym = w->int8 == 2;
    const int32_t qt = asym ? 2 : 3; /* ONNX UINT8 / INT8 */
    uint8_t *q = malloc((size_t)(R * C)), *oq = transpose ? malloc((size_t)(R * C)) : NULL;
    float *sc = malloc((size_t)R * sizeof *sc), *osc = malloc((size_t)R * sizeof *osc);
    uint8_t *zp = calloc((size_t)R, 1), *ozp = calloc((size_t)R, 1);
    int rc = 0;
    if (!q || (transpose && !oq) || !sc || !osc || !zp || !ozp) { rc = av_errf(w->err, AV_ENOMEM, "%s: out of memory", w->path); goto done; }
    q_int8_rows(f, R, C, asym, q, sc, asym ? zp : NULL);
    for (int64_t r = 0; r < R; r++) {
        int64_t col = hf_row(r, R, n_head);
        osc[col] = sc[r];
        ozp[col] = zp[r];
        if (transpose) for (int64_t c = 0; c < C; c++) oq[c * R + col] = q[r * C + c];
    }
    if (transpose) { free(q); q = oq; oq = NULL; }
    char nm[128];
    int64_t dims[2] = { transpose ? C : R, transpose ? R : C }, rd[1] = { R };
    Onnx__TensorProto *tq = init_raw(b, name, qt, dims, 2, NULL, 0);
    snprintf(nm, sizeof nm, "%s.scale", name);
    Onnx__TensorProto *ts = init_raw(b, nm, 1, rd, 1, NULL, 0);
    snprintf(nm, sizeof nm, "%s.zero_point", name);
    Onnx__TensorProto *tz = init_raw(b, nm, qt, rd, 1, NULL, 0);
    if (!tq || !ts || !tz) { rc = av_errf(w->err, AV_ENOMEM, "%s: out of memory", w->path); goto done; }
    rc = put_data(b, w, tq, q, (size_t)(R * C)); /* put_data owns the buffer from here */
    q = NULL;
    if (!rc) { rc = put_data(b, w, ts, osc, (size_t)R * sizeof *osc); osc = NULL; }
    if (!rc) { rc = put_data(b, w, tz, ozp, (size_t)R); ozp = NULL; }
    if (rc) goto done;
    char sn[128];
    snprintf(sn, sizeof sn, "%s.scale", name);
    nd(b, "DequantizeLinear", name, sn, nm, NULL);
    attr_i(b, "axis", transpose ? 1 : 0);
    snprintf(ref, refn, "%s/dequant", name);
    if (b->n_nodes) b->nodes[b->n_nodes - 1]->output[0] = sdup(b, ref);
done:
    free(q), free(oq), free(sc), free(osc), free(zp), free(ozp);
    return b->oom && !rc ? av_errf(w->err, AV_ENOMEM, "%s: out of memory", w->path) : rc;
}

/* Tensor as float32, matrices transposed from GGUF's [out, in] to [in, out]
 * (MatMul's right operand) unless !transpose; q/k rows (n_head > 0) regrouped
 * into HF rotate_half order on the way. 1-D: copied. With w->int8, matrices
 * go through add_int8. *ref (refn bytes) gets the value name the graph uses. */
static int add_weight(ob *b, wctx *w, const char *name, int64_t n_head, int transpose, char *ref, size_t refn) {
    const av_tensor *t = av_model_find(w->m, name);
    if (!t) return av_errf(w->err, AV_EFORMAT, "%s: no tensor '%s'", w->path, name);
    if (t->n_dims < 1 || t->n_dims > 2 || !av_can_convert(t->src_dtype, AV_F32))
        return av_errf(w->err, AV_EUNSUPPORTED, "%s: tensor '%s' (%s, %d dims) cannot be exported as float32", w->path, name,
                       av_dtype_name(t->src_dtype), t->n_dims);
    snprintf(ref, refn, "%s", name);
    int64_t R = t->shape[0], C = t->n_dims == 2 ? t->shape[1] : 1, ne = R * C;
    float *f = malloc((size_t)ne * sizeof *f), *o = NULL;
    int rc = 0;
    if (!f) { rc = av_errf(w->err, AV_ENOMEM, "%s: out of memory", w->path); goto done; }
    if ((rc = av_convert(t->data, t->src_dtype, f, AV_F32, ne, w->err))) goto done;
    if (w->int8 && t->n_dims == 2) { rc = add_int8(b, w, name, f, R, C, n_head, transpose, ref, refn); goto done; }
    if (!(o = malloc((size_t)ne * sizeof *o))) { rc = av_errf(w->err, AV_ENOMEM, "%s: out of memory", w->path); goto done; }
    if (t->n_dims == 1 || !transpose) memcpy(o, f, (size_t)ne * sizeof *f);
    else
        for (int64_t r = 0; r < R; r++) {
            int64_t col = hf_row(r, R, n_head);
            for (int64_t c = 0; c < C; c++) o[c * R + col] = f[r * C + c];
        }
    int64_t dims[2] = { C, R };
    if (t->n_dims == 1 || !transpose) { dims[0] = R; dims[1] = C; }
    Onnx__TensorProto *ti = init_raw(b, name, 1, dims, (size_t)t->n_dims, NULL, 0);
    if (!ti) { rc = av_errf(w->err, AV_ENOMEM, "%s: out of memory", w->path); goto done; }
    rc = put_data(b, w, ti, o, (size_t)ne * sizeof(float));
    o = NULL;
done:
    free(f);
    free(o);
    return b->oom && !rc ? av_errf(w->err, AV_ENOMEM, "%s: out of memory", w->path) : rc;
}

/* ---- graph ---- */

typedef struct dimv { const char *param; int64_t v; } dimv;

static Onnx__ValueInfoProto *vinfo(ob *b, const char *name, int32_t et, const dimv *d, size_t n) {
    Onnx__ValueInfoProto *vi = al(b, sizeof *vi);
    Onnx__TypeProto *tp = al(b, sizeof *tp);
    Onnx__TypeProto__Tensor *tt = al(b, sizeof *tt);
    Onnx__TensorShapeProto *sh = al(b, sizeof *sh);
    Onnx__TensorShapeProto__Dimension **dims = al(b, n * sizeof *dims);
    if (!vi || !tp || !tt || !sh || !dims) return NULL;
    onnx__value_info_proto__init(vi);
    onnx__type_proto__init(tp);
    onnx__type_proto__tensor__init(tt);
    onnx__tensor_shape_proto__init(sh);
    for (size_t i = 0; i < n; i++) {
        Onnx__TensorShapeProto__Dimension *x = al(b, sizeof *x);
        if (!x) return NULL;
        onnx__tensor_shape_proto__dimension__init(x);
        if (d[i].param) { x->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM; x->dim_param = sdup(b, d[i].param); }
        else { x->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE; x->dim_value = d[i].v; }
        dims[i] = x;
    }
    sh->dim = dims;
    sh->n_dim = n;
    tt->has_elem_type = 1;
    tt->elem_type = et;
    tt->shape = sh;
    tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    tp->tensor_type = tt;
    vi->name = sdup(b, name);
    vi->type = tp;
    return vi;
}

typedef struct hp { int64_t D, L, H, Hkv, hd, V, ctx; float eps, theta; } hp;

static int get_u(const av_model *m, const char *k, int64_t *out, int64_t def) {
    uint64_t v;
    if (av_kvs_get_u64(&m->kv, k, &v) == 0) { *out = (int64_t)v; return 0; }
    *out = def;
    return def < 0 ? -1 : 0;
}

static int hparams(const av_model *m, const char *path, hp *h, av_err *err) {
    const char *arch = NULL;
    if (av_kvs_get_str(&m->kv, "general.architecture", &arch) || strcmp(arch, "llama"))
        return av_errf(err, AV_EUNSUPPORTED, "%s: ONNX export needs a llama model (general.architecture '%s')", path,
                       arch ? arch : "");
    if (get_u(m, "llama.embedding_length", &h->D, -1) || get_u(m, "llama.block_count", &h->L, -1) ||
        get_u(m, "llama.attention.head_count", &h->H, -1))
        return av_errf(err, AV_EFORMAT, "%s: llama.embedding_length, block_count or attention.head_count missing", path);
    get_u(m, "llama.attention.head_count_kv", &h->Hkv, h->H);
    get_u(m, "llama.context_length", &h->ctx, 2048);
    double d;
    h->eps = av_kvs_get_f64(&m->kv, "llama.attention.layer_norm_rms_epsilon", &d) == 0 ? (float)d : 1e-5f;
    h->theta = av_kvs_get_f64(&m->kv, "llama.rope.freq_base", &d) == 0 ? (float)d : 10000.0f;
    const av_tensor *e = av_model_find(m, "token_embd.weight");
    if (!e || e->n_dims != 2) return av_errf(err, AV_EFORMAT, "%s: no 2-D token_embd.weight", path);
    h->V = e->shape[0];
    if (h->H <= 0 || h->Hkv <= 0 || h->D % h->H || h->H % h->Hkv || (h->D / h->H) % 2 || h->ctx <= 0 || h->ctx > (1 << 24))
        return av_errf(err, AV_EFORMAT, "%s: head counts %lld/%lld do not fit dim %lld (or context %lld)", path,
                       (long long)h->H, (long long)h->Hkv, (long long)h->D, (long long)h->ctx);
    h->hd = h->D / h->H;
    return 0;
}

static const char *nmf(char *buf, size_t n, const char *fmt, int l) { snprintf(buf, n, fmt, l); return buf; }

static int build_graph(ob *b, wctx *w, const hp *h, const onnx_write_opts *o, Onnx__GraphProto *g) {
    const int64_t hd = h->hd, half = hd / 2, rep = h->H / h->Hkv;
    int rc;
    char nm[96];
    /* constants */
    c_f32(b, "const.two", 2.0f);
    c_f32(b, "const.eps", h->eps);
    c_f32(b, "const.scale", (float)(1.0 / sqrt((double)hd)));
    c_f32(b, "const.neg_inf", -INFINITY);
    c_f32(b, "const.zero_f", 0.0f);
    c_f32(b, "const.min_f", -FLT_MAX);
    int64_t v0 = 0, v1 = 1, v2 = 2, v3 = 3, vm1 = -1, vh = half, vhd = hd;
    c_i64(b, "const.i0", &v0, 1, 1);
    c_i64(b, "const.i1", &v1, 1, 1);
    if (o->kv_cache) c_i64(b, "const.i2", &v2, 1, 1);
    if (b->opset >= 18) c_i64(b, "const.axes_last", &vm1, 1, 0);
    c_i64(b, "const.ax0", &v0, 1, 0);
    c_i64(b, "const.ax1", &v1, 1, 0);
    c_i64(b, "const.ax2", &v2, 1, 0);
    c_i64(b, "const.ax3", &v3, 1, 0);
    const int64_t a12[2] = { 1, 2 };
    c_i64(b, "const.ax12", a12, 2, 0);
    c_i64(b, "const.half", &vh, 1, 0);
    c_i64(b, "const.hd", &vhd, 1, 0);
    const int64_t qs[4] = { 0, 0, h->H, hd }, ks[4] = { 0, 0, h->Hkv, hd }, rs[5] = { 1, 1, rep, 1, 1 },
                  rr[4] = { 0, h->H, -1, hd }, os[3] = { 0, 0, h->H * hd };
    c_i64(b, "const.q_shape", qs, 4, 0);
    c_i64(b, "const.kv_shape", ks, 4, 0);
    c_i64(b, "const.rep", rs, 5, 0);
    c_i64(b, "const.rep_shape", rr, 4, 0);
    c_i64(b, "const.o_shape", os, 3, 0);
    /* RoPE tables [ctx, hd]: column i and i + hd/2 rotate by pos * theta^(-2i/hd) */
    float *ct = al(b, (size_t)(h->ctx * hd) * sizeof *ct), *st = al(b, (size_t)(h->ctx * hd) * sizeof *st);
    if (!ct || !st) return av_errf(w->err, AV_ENOMEM, "%s: out of memory", w->path);
    for (int64_t p = 0; p < h->ctx; p++)
        for (int64_t i = 0; i < half; i++) {
            double a = (double)p * pow((double)h->theta, -2.0 * (double)i / (double)hd);
            ct[p * hd + i] = ct[p * hd + i + half] = (float)cos(a);
            st[p * hd + i] = st[p * hd + i + half] = (float)sin(a);
        }
    const int64_t td[2] = { h->ctx, hd };
    init_raw(b, "rope.cos", 1, td, 2, ct, (size_t)(h->ctx * hd) * sizeof *ct);
    init_raw(b, "rope.sin", 1, td, 2, st, (size_t)(h->ctx * hd) * sizeof *st);

    /* positions, tables, mask: RoPE rows gathered by position_ids [B, T]; the
     * causal mask compares sequence indices (past P + query t vs key s), and
     * attention_mask [B, P + T] (0 = padding) adds the lowest float to padded
     * keys (finite, so all-padding rows stay finite) -> [B, 1, T, P + T] */
    snprintf(b->scope, sizeof b->scope, "/pos");
    const char *T = nd(b, "Gather", nd(b, "Shape", "input_ids", NULL), "const.i1", NULL), *qpos, *kpos;
    if (o->kv_cache) {
        const char *P = nd(b, "Gather", nd(b, "Shape", "past_key_values.0.key", NULL), "const.i2", NULL);
        const char *end = nd(b, "Add", P, T, NULL);
        qpos = nd(b, "Range", P, end, "const.i1", NULL);
        kpos = nd(b, "Range", "const.i0", end, "const.i1", NULL);
    } else {
        qpos = kpos = nd(b, "Range", "const.i0", T, "const.i1", NULL);
    }
    const char *cos_t = nd(b, "Unsqueeze", nd(b, "Gather", "rope.cos", "position_ids", NULL), "const.ax1", NULL);
    const char *sin_t = nd(b, "Unsqueeze", nd(b, "Gather", "rope.sin", "position_ids", NULL), "const.ax1", NULL);
    const char *future = nd(b, "Greater", nd(b, "Unsqueeze", kpos, "const.ax0", NULL), nd(b, "Unsqueeze", qpos, "const.ax1", NULL), NULL);
    const char *causal = nd(b, "Where", future, "const.neg_inf", "const.zero_f", NULL); /* [T, S] */
    const char *keep = nd(b, "Cast", "attention_mask", NULL);
    attr_i(b, "to", 9); /* BOOL */
    const char *pad = nd(b, "Unsqueeze", nd(b, "Where", keep, "const.zero_f", "const.min_f", NULL), "const.ax12", NULL);
    const char *mask = nd(b, "Add", causal, pad, NULL); /* [B, 1, T, S] */

    snprintf(b->scope, sizeof b->scope, "/embed");
    char embd[64];
    if ((rc = add_weight(b, w, "token_embd.weight", 0, 0, embd, sizeof embd))) return rc; /* Gather rows: [vocab, dim] */
    const char *x = nd(b, "Gather", embd, "input_ids", NULL);

    static const int64_t p0213[4] = { 0, 2, 1, 3 }, p0132[4] = { 0, 1, 3, 2 };
    for (int l = 0; l < h->L; l++) {
        snprintf(b->scope, sizeof b->scope, "/blk.%d/attn", l);
        static const char *const wn[] = { "attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down" };
        char wname[9][48], wref[9][64];
        for (int k = 0; k < 9; k++) {
            snprintf(wname[k], sizeof wname[k], "blk.%d.%s.weight", l, wn[k]);
            int64_t heads = k == 1 ? h->H : k == 2 ? h->Hkv : 0;
            if ((rc = add_weight(b, w, wname[k], heads, 1, wref[k], sizeof wref[k]))) return rc;
        }
        const char *n = rmsnorm(b, x, wref[0]);
        const char *q = transpose(b, nd(b, "Reshape", nd(b, "MatMul", n, wref[1], NULL), "const.q_shape", NULL), p0213, 4);
        const char *k = transpose(b, nd(b, "Reshape", nd(b, "MatMul", n, wref[2], NULL), "const.kv_shape", NULL), p0213, 4);
        const char *v = transpose(b, nd(b, "Reshape", nd(b, "MatMul", n, wref[3], NULL), "const.kv_shape", NULL), p0213, 4);
        const char *rq[2] = { q, k };
        for (int r = 0; r < 2; r++) { /* x*cos + rotate_half(x)*sin */
            const char *x1 = nd(b, "Slice", rq[r], "const.ax0", "const.half", "const.ax3", NULL);
            const char *x2 = nd(b, "Slice", rq[r], "const.half", "const.hd", "const.ax3", NULL);
            const char *rot = nd(b, "Concat", nd(b, "Neg", x2, NULL), x1, NULL);
            attr_i(b, "axis", -1);
            rq[r] = nd(b, "Add", nd(b, "Mul", rq[r], cos_t, NULL), nd(b, "Mul", rot, sin_t, NULL), NULL);
        }
        q = rq[0];
        k = rq[1];
        if (o->kv_cache) {
            k = nd(b, "Concat", nmf(nm, sizeof nm, "past_key_values.%d.key", l), k, NULL);
            attr_i(b, "axis", 2);
            b->nodes[b->n_nodes - 1]->output[0] = sdup(b, nmf(nm, sizeof nm, "present.%d.key", l));
            k = b->nodes[b->n_nodes - 1]->output[0];
            v = nd(b, "Concat", nmf(nm, sizeof nm, "past_key_values.%d.value", l), v, NULL);
            attr_i(b, "axis", 2);
            b->nodes[b->n_nodes - 1]->output[0] = sdup(b, nmf(nm, sizeof nm, "present.%d.value", l));
            v = b->nodes[b->n_nodes - 1]->output[0];
        }
        if (rep > 1) { /* HF repeat_kv: [B, Hkv, S, hd] -> [B, Hkv, rep, S, hd] -> [B, H, S, hd] */
            k = nd(b, "Reshape", nd(b, "Expand", nd(b, "Unsqueeze", k, "const.ax2", NULL), "const.rep", NULL), "const.rep_shape", NULL);
            v = nd(b, "Reshape", nd(b, "Expand", nd(b, "Unsqueeze", v, "const.ax2", NULL), "const.rep", NULL), "const.rep_shape", NULL);
        }
        const char *sc = nd(b, "Mul", nd(b, "MatMul", q, transpose(b, k, p0132, 4), NULL), "const.scale", NULL);
        const char *pr = nd(b, "Softmax", nd(b, "Add", sc, mask, NULL), NULL);
        attr_i(b, "axis", -1);
        const char *at = nd(b, "Reshape", transpose(b, nd(b, "MatMul", pr, v, NULL), p0213, 4), "const.o_shape", NULL);
        x = nd(b, "Add", x, nd(b, "MatMul", at, wref[4], NULL), NULL);
        snprintf(b->scope, sizeof b->scope, "/blk.%d/ffn", l);
        n = rmsnorm(b, x, wref[5]);
        const char *gt = nd(b, "MatMul", n, wref[6], NULL);
        const char *act = nd(b, "Mul", nd(b, "Mul", gt, nd(b, "Sigmoid", gt, NULL), NULL), nd(b, "MatMul", n, wref[7], NULL), NULL);
        x = nd(b, "Add", x, nd(b, "MatMul", act, wref[8], NULL), NULL);
    }
    snprintf(b->scope, sizeof b->scope, "/head");
    char onorm[64], oref[64];
    if ((rc = add_weight(b, w, "output_norm.weight", 0, 1, onorm, sizeof onorm))) return rc;
    const char *n = rmsnorm(b, x, onorm), *wout = oref;
    if (av_model_find(w->m, "output.weight")) {
        if ((rc = add_weight(b, w, "output.weight", 0, 1, oref, sizeof oref))) return rc;
    } else { /* tied classifier: the embedding, transposed at run time */
        static const int64_t p10[2] = { 1, 0 };
        wout = transpose(b, embd, p10, 2);
    }
    nd(b, "MatMul", n, wout, NULL);
    b->nodes[b->n_nodes - 1]->output[0] = "logits";

    /* inputs and outputs */
    size_t nin = o->kv_cache ? 3 + 2 * (size_t)h->L : 3, nout = o->kv_cache ? 1 + 2 * (size_t)h->L : 1;
    Onnx__ValueInfoProto **in = al(b, nin * sizeof *in), **out = al(b, nout * sizeof *out);
    if (!in || !out) return av_errf(w->err, AV_ENOMEM, "%s: out of memory", w->path);
    const dimv ids[2] = { { "batch", 0 }, { "sequence", 0 } }, lg[3] = { { "batch", 0 }, { "sequence", 0 }, { NULL, h->V } };
    const dimv am[2] = { { "batch", 0 }, { o->kv_cache ? "total_sequence" : "sequence", 0 } };
    in[0] = vinfo(b, "input_ids", 7, ids, 2);
    in[1] = vinfo(b, "attention_mask", 7, am, 2);
    in[2] = vinfo(b, "position_ids", 7, ids, 2);
    out[0] = vinfo(b, "logits", 1, lg, 3);
    for (int l = 0; o->kv_cache && l < h->L; l++)
        for (int s = 0; s < 2; s++) {
            const dimv pd[4] = { { "batch", 0 }, { NULL, h->Hkv }, { "past_sequence", 0 }, { NULL, hd } };
            const dimv td2[4] = { { "batch", 0 }, { NULL, h->Hkv }, { "total_sequence", 0 }, { NULL, hd } };
            in[3 + 2 * l + s] = vinfo(b, nmf(nm, sizeof nm, s ? "past_key_values.%d.value" : "past_key_values.%d.key", l), 1, pd, 4);
            out[1 + 2 * l + s] = vinfo(b, nmf(nm, sizeof nm, s ? "present.%d.value" : "present.%d.key", l), 1, td2, 4);
        }
    g->name = "anvil_llama";
    g->node = b->nodes;
    g->n_node = b->n_nodes;
    g->initializer = b->inits;
    g->n_initializer = b->n_inits;
    g->input = in;
    g->n_input = nin;
    g->output = out;
    g->n_output = nout;
    return b->oom ? av_errf(w->err, AV_ENOMEM, "%s: out of memory", w->path) : 0;
}

typedef struct outbuf { ProtobufCBuffer base; av_out *o; av_err *err; int rc; } outbuf;

static void outbuf_append(ProtobufCBuffer *pb, size_t len, const uint8_t *data) {
    outbuf *ob_ = (outbuf *)pb;
    if (!ob_->rc) ob_->rc = av_out_write(ob_->o, data, len, ob_->err);
}

static int meta_props(ob *b, const av_model *m, Onnx__ModelProto *mp) {
    mp->metadata_props = al(b, (m->kv.n + 1) * sizeof *mp->metadata_props);
    if (!mp->metadata_props) return -1;
    for (size_t i = 0; i < m->kv.n; i++) {
        st_buf sb = { 0 };
        char key[600];
        if (st_meta_encode(&sb, &m->kv.items[i].val) || sb.oom) { st_buf_release(&sb); continue; }
        st_buf_put(&sb, "", 1);
        Onnx__StringStringEntryProto *e = al(b, sizeof *e);
        snprintf(key, sizeof key, "gguf:%s", m->kv.items[i].key);
        if (!e || sb.oom) { st_buf_release(&sb); return -1; }
        onnx__string_string_entry_proto__init(e);
        e->key = sdup(b, key);
        e->value = sb.p; /* handed to the arena */
        if (push(b, &b->allocs, &b->n_allocs, &b->cap_allocs, sb.p)) { free(sb.p); return -1; }
        mp->metadata_props[mp->n_metadata_props++] = e;
    }
    return 0;
}

int onnx_write(const av_model *m, const char *path, const onnx_write_opts *opts, av_err *err) {
    onnx_write_opts o = opts ? *opts : (onnx_write_opts){ 0 };
    if (!o.opset) o.opset = 17;
    if (o.opset < 13 || o.opset > ONNX_MAX_OPSET)
        return av_errf(err, AV_EUNSUPPORTED, "%s: opset %d: anvil exports opsets 13 to %d", path, o.opset, ONNX_MAX_OPSET);
    hp h = { 0 };
    int rc = hparams(m, path, &h, err);
    if (rc) return rc;
    uint64_t total = 0;
    for (size_t i = 0; i < m->n_tensors; i++) total += (uint64_t)av_tensor_nelements(&m->tensors[i]) * 4;
    ob b = { .opset = o.opset };
    av_out *mo = NULL;
    char *ext_path = NULL;
    wctx w = { .m = m, .path = path, .hd = h.hd, .int8 = o.int8, .err = err };
    if (o.external || total > EXT_LIMIT) {
        const char *base = strrchr(path, '/');
        size_t n = strlen(path) + 8;
        if (!(ext_path = malloc(n))) return av_errf(err, AV_ENOMEM, "%s: out of memory", path);
        snprintf(ext_path, n, "%s.data", path);
        w.ext_name = sdup(&b, base ? base + 1 : path);
        if (w.ext_name) { char *t = al(&b, strlen(w.ext_name) + 6); if (t) { sprintf(t, "%s.data", w.ext_name); w.ext_name = t; } }
        if ((rc = av_out_open(ext_path, &w.ext, err))) goto done;
    }
    Onnx__ModelProto mp;
    Onnx__GraphProto g;
    Onnx__OperatorSetIdProto op;
    Onnx__OperatorSetIdProto *ops[1] = { &op };
    onnx__model_proto__init(&mp);
    onnx__graph_proto__init(&g);
    onnx__operator_set_id_proto__init(&op);
    op.domain = "";
    op.has_version = 1;
    op.version = o.opset;
    mp.has_ir_version = 1;
    mp.ir_version = o.opset <= 17 ? 8 : o.opset <= 20 ? 9 : 10;
    mp.producer_name = "anvil";
    mp.producer_version = "1";
    mp.opset_import = ops;
    mp.n_opset_import = 1;
    mp.graph = &g;
    if ((rc = build_graph(&b, &w, &h, &o, &g))) goto done;
    if (meta_props(&b, m, &mp) || b.oom) { rc = av_errf(err, AV_ENOMEM, "%s: out of memory", path); goto done; }
    if ((rc = av_out_open(path, &mo, err))) goto done;
    outbuf ob_ = { .base = { .append = outbuf_append }, .o = mo, .err = err };
    protobuf_c_message_pack_to_buffer(&mp.base, &ob_.base);
    if ((rc = ob_.rc)) goto done;
    if (w.ext) { rc = av_out_commit(w.ext, err); w.ext = NULL; if (rc) goto done; }
    rc = av_out_commit(mo, err);
    mo = NULL;
done:
    av_out_abort(mo);
    av_out_abort(w.ext);
    free(ext_path);
    for (size_t i = 0; i < b.n_allocs; i++) free(b.allocs[i]);
    free(b.allocs);
    free(b.nodes);
    free(b.inits);
    return rc;
}
