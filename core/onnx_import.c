/* onnx_import.c — a Llama decoder graph -> GGUF names, layout and llama.* keys.
 *
 * Exporters rename or constant-fold weights (torch.onnx turns every Linear
 * into a transposed initializer "onnx::MatMul_N"), so names prove nothing:
 * the graph is walked from input_ids instead. Embedding = the Gather on
 * input_ids; then per residual step an RMSNorm (Pow ... Mul by a [dim]
 * weight) feeding 3 weight MatMuls (attention: q and k meet in the scores
 * MatMul as its left and right operand, v in the probabilities MatMul; the
 * first weight MatMul after that is o_proj), or 2 (MLP: gate is the one
 * under a Sigmoid, then down), or 1 (the classifier after the final norm).
 * The residual Add must take the block's output and the stream it started
 * from. Head size comes from the q Reshape's target shape; context length
 * and RoPE theta from the sin table; RMS epsilon from the norm's Add. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "hashmap.h"
#include "hf.h"
#include "onnx_impl.h"
#include "st_json.h"

typedef struct { int node, slot; } use;

typedef struct gx {
    const onnx_model *om;
    const Onnx__GraphProto *g;
    av_strmap vid;       /* value name -> id */
    int nv;
    int *prod;           /* value id -> producing node, -1 */
    int *use_off;        /* CSR of consumers per value id */
    use *uses;
    int **in, **outv;    /* per node: input / output value ids (-1 for "") */
    av_err *err;
} gx;

#define NODE(x, i) ((x)->g->node[i])
#define OP(x, i) (NODE(x, i)->op_type ? NODE(x, i)->op_type : "")
#define IS(x, i, o) (!strcmp(OP(x, i), o))

static int id_of(gx *x, const char *name) {
    if (!name || !*name) return -1;
    return av_strmap_get(&x->vid, name, strlen(name));
}

static int intern(gx *x, const char *name) {
    if (!name || !*name) return -1;
    int id = av_strmap_get(&x->vid, name, strlen(name));
    if (id >= 0) return id;
    if (av_strmap_put(&x->vid, name, strlen(name), x->nv)) return -2;
    return x->nv++;
}

static int fail_at(gx *x, int node, const char *why) {
    if (node < 0)
        return av_errf(x->err, AV_EUNSUPPORTED, "%s: cannot map the graph to a Llama decoder: %s", x->om->path, why);
    const char *nm = NODE(x, node)->name && *NODE(x, node)->name ? NODE(x, node)->name : "(unnamed)";
    return av_errf(x->err, AV_EUNSUPPORTED, "%s: cannot map node '%s' (%s) to a Llama decoder: %s", x->om->path, nm,
                   OP(x, node), why);
}

static int build(gx *x) {
    const Onnx__GraphProto *g = x->g;
    av_strmap_init(&x->vid);
    x->in = calloc(g->n_node + 1, sizeof *x->in);
    x->outv = calloc(g->n_node + 1, sizeof *x->outv);
    if (!x->in || !x->outv) goto oom;
    for (size_t i = 0; i < g->n_node; i++) {
        const Onnx__NodeProto *n = g->node[i];
        x->in[i] = malloc((n->n_input + 1) * sizeof(int));
        x->outv[i] = malloc((n->n_output + 1) * sizeof(int));
        if (!x->in[i] || !x->outv[i]) goto oom;
        for (size_t k = 0; k < n->n_input; k++) if ((x->in[i][k] = intern(x, n->input[k])) == -2) goto oom;
        for (size_t k = 0; k < n->n_output; k++) if ((x->outv[i][k] = intern(x, n->output[k])) == -2) goto oom;
    }
    for (size_t i = 0; i < g->n_input; i++) if (intern(x, g->input[i]->name) == -2) goto oom;
    x->prod = malloc((size_t)(x->nv + 1) * sizeof(int));
    x->use_off = calloc((size_t)x->nv + 2, sizeof(int));
    if (!x->prod || !x->use_off) goto oom;
    for (int v = 0; v < x->nv; v++) x->prod[v] = -1;
    size_t nu = 0;
    for (size_t i = 0; i < g->n_node; i++) {
        for (size_t k = 0; k < g->node[i]->n_output; k++) if (x->outv[i][k] >= 0) x->prod[x->outv[i][k]] = (int)i;
        for (size_t k = 0; k < g->node[i]->n_input; k++) if (x->in[i][k] >= 0) { x->use_off[x->in[i][k] + 1]++; nu++; }
    }
    for (int v = 0; v < x->nv; v++) x->use_off[v + 1] += x->use_off[v];
    x->uses = malloc((nu + 1) * sizeof(use));
    int *fill = calloc((size_t)x->nv + 1, sizeof(int));
    if (!x->uses || !fill) { free(fill); goto oom; }
    for (size_t i = 0; i < g->n_node; i++)
        for (size_t k = 0; k < g->node[i]->n_input; k++) {
            int v = x->in[i][k];
            if (v >= 0) x->uses[x->use_off[v] + fill[v]++] = (use){ (int)i, (int)k };
        }
    free(fill);
    return 0;
oom:
    return av_errf(x->err, AV_ENOMEM, "%s: out of memory", x->om->path);
}

static void gx_release(gx *x) {
    for (size_t i = 0; x->in && i < x->g->n_node; i++) { free(x->in[i]); free(x->outv[i]); }
    free(x->in);
    free(x->outv);
    free(x->prod);
    free(x->use_off);
    free(x->uses);
    av_strmap_release(&x->vid);
}

static int nuses(gx *x, int v) { return v < 0 ? 0 : x->use_off[v + 1] - x->use_off[v]; }
static use use_at(gx *x, int v, int k) { return x->uses[x->use_off[v] + k]; }
static int in_id(gx *x, int node, size_t k) { return k < NODE(x, node)->n_input ? x->in[node][k] : -1; }
static int out0(gx *x, int node) { return NODE(x, node)->n_output ? x->outv[node][0] : -1; }

/* The initializer, or Constant node value, that value v is; NULL otherwise. */
static const Onnx__TensorProto *const_of(gx *x, int v) {
    if (v < 0) return NULL;
    for (size_t i = 0; i < x->g->n_initializer; i++)
        if (x->g->initializer[i]->name && id_of(x, x->g->initializer[i]->name) == v) return x->g->initializer[i];
    int p = x->prod[v];
    if (p >= 0 && IS(x, p, "Constant"))
        for (size_t a = 0; a < NODE(x, p)->n_attribute; a++)
            if (NODE(x, p)->attribute[a]->t) return NODE(x, p)->attribute[a]->t;
    return NULL;
}

static int is_init(gx *x, int v) {
    for (size_t i = 0; v >= 0 && i < x->g->n_initializer; i++)
        if (x->g->initializer[i]->name && id_of(x, x->g->initializer[i]->name) == v) return 1;
    return 0;
}

/* Scalar value of a constant (first element) as double; NAN when not one. */
static double const_scalar(gx *x, int v) {
    const Onnx__TensorProto *t = const_of(x, v);
    const void *d;
    size_t n;
    void *owned;
    av_err e;
    if (!t || onnx_tensor_nelem(t) < 1 || onnx_tensor_bytes(x->om, t, &d, &n, &owned, &e)) return NAN;
    double r = t->data_type == 1 ? *(const float *)d : t->data_type == 11 ? *(const double *)d
             : t->data_type == 7 ? (double)*(const int64_t *)d : t->data_type == 6 ? *(const int32_t *)d : NAN;
    free(owned);
    return r;
}

/* Last element of an int64 shape value: a constant, or the last part of a Concat. */
static int64_t shape_last(gx *x, int v, int depth) {
    const Onnx__TensorProto *t = const_of(x, v);
    if (t && t->data_type == 7 && onnx_tensor_nelem(t) >= 1) {
        const void *d;
        size_t n;
        void *owned;
        av_err e;
        if (onnx_tensor_bytes(x->om, t, &d, &n, &owned, &e)) return -1;
        int64_t r = ((const int64_t *)d)[onnx_tensor_nelem(t) - 1];
        free(owned);
        return r;
    }
    int p = v >= 0 ? x->prod[v] : -1;
    if (p < 0 || depth > 8) return -1;
    if (IS(x, p, "Concat") && NODE(x, p)->n_input) return shape_last(x, in_id(x, p, NODE(x, p)->n_input - 1), depth + 1);
    if (IS(x, p, "Cast") || IS(x, p, "Unsqueeze")) return shape_last(x, in_id(x, p, 0), depth + 1);
    return -1;
}

/* The initializer behind v: v itself, or the quantized data of a
 * DequantizeLinear of an initializer (anvil's --int8 export, QDQ graphs);
 * add_weight dequantizes it. NULL otherwise. */
static const Onnx__TensorProto *weight_init(gx *x, int v) {
    if (is_init(x, v)) return const_of(x, v);
    int p = v >= 0 ? x->prod[v] : -1;
    if (p >= 0 && IS(x, p, "DequantizeLinear") && is_init(x, in_id(x, p, 0))) return const_of(x, in_id(x, p, 0));
    return NULL;
}

/* A weight feeding a MatMul as B: an initializer [in, out], or Transpose of an
 * initializer [out, in] (transposed=1); either possibly through a DequantizeLinear. */
static const Onnx__TensorProto *weight_of(gx *x, int v, int *transposed) {
    *transposed = 0;
    const Onnx__TensorProto *t = weight_init(x, v);
    if (t) return t->n_dims == 2 ? t : NULL;
    int p = v >= 0 ? x->prod[v] : -1;
    if (p >= 0 && IS(x, p, "Transpose") && (t = weight_init(x, in_id(x, p, 0)))) {
        *transposed = 1;
        return t->n_dims == 2 ? t : NULL;
    }
    return NULL;
}

/* Weight MatMuls that take v (or a Cast of it) as their left operand. */
static int weight_mms(gx *x, int v, int *mm, int max) {
    int n = 0, tr;
    for (int k = 0; k < nuses(x, v); k++) {
        use u = use_at(x, v, k);
        if (IS(x, u.node, "MatMul") && u.slot == 0 && weight_of(x, in_id(x, u.node, 1), &tr)) {
            if (n < max) mm[n] = u.node;
            n++;
        } else if (IS(x, u.node, "Cast")) {
            n += weight_mms(x, out0(x, u.node), mm + (n < max ? n : max), n < max ? max - n : 0);
        }
    }
    return n;
}

/* Breadth-first from value v through data ops (not Shape, not MatMul) to the
 * first MatMul reached: *slot is the operand it arrives at; want_weight picks
 * weight MatMuls (1) or activation x activation ones (0). *saw_neg set when a
 * Neg lies on the way (rotate_half RoPE). Returns the node or -1. */
static int next_mm(gx *x, int v, int want_weight, int *slot, int *saw_neg, int *sink) {
    int cap = 4096, head = 0, tail = 0, *q = malloc((size_t)cap * sizeof(int));
    char *seen = calloc((size_t)x->nv + 1, 1);
    int found = -1, tr;
    if (!q || !seen) { free(q); free(seen); return -1; }
    q[tail++] = v;
    seen[v] = 1;
    while (head < tail && found < 0) {
        int cur = q[head++];
        for (int k = 0; k < nuses(x, cur) && found < 0; k++) {
            use u = use_at(x, cur, k);
            if (IS(x, u.node, "MatMul")) {
                int w = weight_of(x, in_id(x, u.node, 1), &tr) != NULL;
                if (w == want_weight) { found = u.node; *slot = u.slot; }
                continue;
            }
            if (IS(x, u.node, "Shape") || IS(x, u.node, "ConstantOfShape")) continue;
            if (IS(x, u.node, "Neg") && saw_neg) *saw_neg = 1;
            if (IS(x, u.node, "Softmax") && sink) *sink = u.node;
            for (size_t o = 0; o < NODE(x, u.node)->n_output; o++) {
                int ov = x->outv[u.node][o];
                if (ov >= 0 && !seen[ov] && tail < cap) { seen[ov] = 1; q[tail++] = ov; }
            }
        }
    }
    free(q);
    free(seen);
    return found;
}

/* v and the outputs of Casts of v: one residual stream under several names. */
static int same_stream(gx *x, int a, int b) {
    if (a == b) return 1;
    for (int k = 0; k < nuses(x, a); k++) {
        use u = use_at(x, a, k);
        if (IS(x, u.node, "Cast") && out0(x, u.node) == b) return 1;
    }
    return 0;
}

/* The residual Add taking `branch` and the stream h; its output, or -1. */
static int residual_add(gx *x, int branch, int h, int *at) {
    for (int k = 0; k < nuses(x, branch); k++) {
        use u = use_at(x, branch, k);
        *at = u.node;
        if (IS(x, u.node, "Add") && same_stream(x, h, in_id(x, u.node, 1 - u.slot))) return out0(x, u.node);
    }
    return -1;
}

/* RMSNorm on stream h: Pow(h, 2) -> ... -> Mul with a 1-D weight. Returns
 * the normalized value; *w the weight, *eps from the Add. */
static int rmsnorm(gx *x, int h, const Onnx__TensorProto **w, double *eps, int *at) {
    int start = -1;
    *at = nuses(x, h) ? use_at(x, h, 0).node : -1;
    for (int pass = 0; pass < 2 && start < 0; pass++)
        for (int k = 0; k < nuses(x, h) && start < 0; k++) {
            use u = use_at(x, h, k);
            if (IS(x, u.node, "Pow")) start = u.node;
            else if (pass && IS(x, u.node, "Cast"))
                for (int j = 0; j < nuses(x, out0(x, u.node)); j++)
                    if (IS(x, use_at(x, out0(x, u.node), j).node, "Pow")) start = use_at(x, out0(x, u.node), j).node;
        }
    if (start < 0) return -1;
    *eps = NAN;
    int n = start;
    for (int step = 0; step < 12; step++) {
        *at = n;
        if (IS(x, n, "Add")) {
            double e = const_scalar(x, in_id(x, n, 1));
            *eps = isnan(e) ? const_scalar(x, in_id(x, n, 0)) : e;
        }
        if (IS(x, n, "Mul"))
            for (int s = 0; s < 2; s++) {
                const Onnx__TensorProto *t = is_init(x, in_id(x, n, (size_t)s)) ? const_of(x, in_id(x, n, (size_t)s)) : NULL;
                if (t && t->n_dims == 1) { *w = t; return out0(x, n); }
            }
        int o = out0(x, n);
        if (nuses(x, o) < 1) return -1;
        /* the chain: take the consumer that is not the h-side Mul of a Div form */
        n = use_at(x, o, 0).node;
    }
    return -1;
}

/* The DequantizeLinear taking initializer t as its data, or -1. */
static int dq_consumer(gx *x, const Onnx__TensorProto *t) {
    int v = t->name ? id_of(x, t->name) : -1;
    for (int k = 0; k < nuses(x, v); k++)
        if (IS(x, use_at(x, v, k).node, "DequantizeLinear") && use_at(x, v, k).slot == 0) return use_at(x, v, k).node;
    return -1;
}

/* Float32 copy of int8/uint8 matrix q [R, C] dequantized as node dq says:
 * (q - zero_point) * scale, per tensor or per channel along `axis`. anvil has
 * no in-memory per-channel INT8 dtype (quantize --int8 is a file layout of
 * three tensors), so weights come back as f32. *out is malloc'd. */
static int dequantize(gx *x, int dq, const Onnx__TensorProto *q, const void *qd, float **out) {
    const Onnx__TensorProto *s = const_of(x, in_id(x, dq, 1)), *z = const_of(x, in_id(x, dq, 2));
    int64_t axis = 1, R = q->dims[0], C = q->dims[1];
    for (size_t a = 0; a < NODE(x, dq)->n_attribute; a++) {
        const Onnx__AttributeProto *at = NODE(x, dq)->attribute[a];
        if (at->name && !strcmp(at->name, "axis")) axis = at->i;
        if (at->name && !strcmp(at->name, "block_size") && at->i)
            return fail_at(x, dq, "blocked DequantizeLinear (block_size) is not supported");
    }
    if (axis < 0) axis += 2;
    int64_t ns = s ? onnx_tensor_nelem(s) : 0, nch = axis == 0 ? R : C;
    if (!s || s->data_type != 1 || (ns != 1 && (axis < 0 || axis > 1 || ns != nch)))
        return fail_at(x, dq, "scale is not a float32 initializer per tensor or per channel of a matrix");
    if (z && (z->data_type != q->data_type || onnx_tensor_nelem(z) != ns))
        return fail_at(x, dq, "zero point type or length differs from the data's and the scale's");
    const void *sd, *zd = NULL;
    size_t n;
    void *so = NULL, *zo = NULL;
    int rc = onnx_tensor_bytes(x->om, s, &sd, &n, &so, x->err);
    if (!rc && z) rc = onnx_tensor_bytes(x->om, z, &zd, &n, &zo, x->err);
    float *f = rc ? NULL : malloc((size_t)(R * C) * sizeof *f);
    if (!rc && !f) rc = av_errf(x->err, AV_ENOMEM, "%s: out of memory", x->om->path);
    for (int64_t i = 0; !rc && i < R; i++)
        for (int64_t j = 0; j < C; j++) {
            int64_t c = ns == 1 ? 0 : axis == 0 ? i : j;
            int zp = !zd ? 0 : q->data_type == 3 ? ((const int8_t *)zd)[c] : ((const uint8_t *)zd)[c];
            int v = q->data_type == 3 ? ((const int8_t *)qd)[i * C + j] : ((const uint8_t *)qd)[i * C + j];
            f[i * C + j] = (float)(v - zp) * ((const float *)sd)[c];
        }
    free(so);
    free(zo);
    *out = f;
    return rc;
}

/* Copy tensor t into m as `name` (GGUF shape), transposing a 2-D [in, out]
 * MatMul operand unless it is already [out, in]; int8/uint8 matrices behind
 * a DequantizeLinear come out dequantized to f32. */
static int add_weight(gx *x, av_model *m, const char *name, const Onnx__TensorProto *t, int transpose) {
    const onnx_dt *dt = onnx_dtype(t->data_type);
    if (!dt || dt->av < 0 || dt->size <= 0)
        return av_errf(x->err, AV_EUNSUPPORTED, "%s: weight '%s' is %s", x->om->path, t->name, dt ? dt->name : "?");
    const void *d;
    size_t n;
    void *owned = NULL;
    int rc = onnx_tensor_bytes(x->om, t, &d, &n, &owned, x->err), dq;
    if (rc) return rc;
    if ((t->data_type == 2 || t->data_type == 3) && t->n_dims == 2 && (dq = dq_consumer(x, t)) >= 0) {
        float *f = NULL;
        rc = dequantize(x, dq, t, d, &f);
        free(owned);
        if (rc) return rc;
        owned = f;
        d = f;
        n = (size_t)onnx_tensor_nelem(t) * sizeof(float);
        dt = onnx_dtype(1);
    }
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) { free(owned); return av_errf(x->err, AV_ENOMEM, "%s: out of memory", x->om->path); }
    int64_t shape[2] = { t->n_dims ? t->dims[0] : 1, t->n_dims > 1 ? t->dims[1] : 1 };
    if (t->n_dims == 2 && transpose) {
        size_t es = (size_t)dt->size, R = (size_t)shape[0], C = (size_t)shape[1];
        for (size_t i = 0; i < R; i++)
            for (size_t j = 0; j < C; j++) memcpy(buf + (j * R + i) * es, (const uint8_t *)d + (i * C + j) * es, es);
        int64_t s0 = shape[0];
        shape[0] = shape[1];
        shape[1] = s0;
    } else {
        memcpy(buf, d, n);
    }
    free(owned);
    if (!av_model_add_tensor(m, name, (av_dtype)dt->av, (int)t->n_dims, shape, buf, buf)) {
        free(buf);
        return av_errf(x->err, AV_ENOMEM, "%s: out of memory", x->om->path);
    }
    return 0;
}

enum { W_ATTN_NORM, W_Q, W_K, W_V, W_O, W_FFN_NORM, W_GATE, W_UP, W_DOWN, W_N };
static const char *wnames[W_N] = { "attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                                   "ffn_norm", "ffn_gate", "ffn_up", "ffn_down" };
/* llama2.c / llama.cpp converter order within a block */
static const int worder[W_N] = { W_Q, W_K, W_V, W_O, W_ATTN_NORM, W_GATE, W_DOWN, W_UP, W_FFN_NORM };

typedef struct blk { const Onnx__TensorProto *w[W_N]; int tr[W_N]; } blk;

typedef struct walk {
    const Onnx__TensorProto *embd, *out_norm, *out;
    int out_tr;
    blk *b;
    int nb, cap;
    int64_t head_dim, ctx;
    double eps, theta;
    int rotate_half;
} walk;

static const Onnx__TensorProto *mm_weight(gx *x, int mm, int *tr) { return weight_of(x, in_id(x, mm, 1), tr); }

/* sin table behind a RoPE Mul operand: follow data inputs to a float constant. */
static const Onnx__TensorProto *table_of(gx *x, int v) {
    for (int step = 0; step < 16 && v >= 0; step++) {
        const Onnx__TensorProto *t = const_of(x, v);
        if (t) return t->data_type == 1 && t->n_dims >= 2 ? t : NULL;
        int p = x->prod[v];
        if (p < 0) return NULL;
        v = in_id(x, p, 0);
    }
    return NULL;
}

/* Attention block from the three weight MatMuls on the normalized stream. */
static int attention(gx *x, walk *w, blk *b, const int mm[3], int h, int *newh) {
    int slot[3], neg[3] = { 0 }, dst[3], sm = -1;
    for (int i = 0; i < 3; i++) {
        dst[i] = next_mm(x, out0(x, mm[i]), 0, &slot[i], &neg[i], NULL);
        if (dst[i] < 0) return fail_at(x, mm[i], "its output reaches no attention MatMul");
    }
    int qi = -1, ki = -1, vi = -1;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            if (i != j && dst[i] == dst[j] && slot[i] == 0 && slot[j] == 1) { qi = i; ki = j; vi = 3 - i - j; }
    if (qi < 0) return fail_at(x, dst[0], "no scores MatMul with q on the left and k on the right");
    int s2, pv = next_mm(x, out0(x, dst[qi]), 0, &s2, NULL, &sm);
    if (pv != dst[vi] || slot[vi] != 1 || sm < 0)
        return fail_at(x, dst[vi], "v does not meet the softmax of the scores");
    int o = next_mm(x, out0(x, pv), 1, &s2, NULL, NULL);
    if (o < 0) return fail_at(x, pv, "no output projection after attention");
    int at;
    if ((*newh = residual_add(x, out0(x, o), h, &at)) < 0) return fail_at(x, at, "not the residual Add after attention");
    b->w[W_Q] = mm_weight(x, mm[qi], &b->tr[W_Q]);
    b->w[W_K] = mm_weight(x, mm[ki], &b->tr[W_K]);
    b->w[W_V] = mm_weight(x, mm[vi], &b->tr[W_V]);
    b->w[W_O] = mm_weight(x, o, &b->tr[W_O]);
    if (!neg[qi] || !neg[ki]) return fail_at(x, mm[qi], "RoPE is not the rotate_half form (Slice/Neg/Concat)");
    w->rotate_half = 1;
    if (w->head_dim <= 0) { /* first layer: head size from the q Reshape, tables from the RoPE Muls */
        int v = out0(x, mm[qi]);
        for (int k = 0; k < nuses(x, v); k++)
            if (IS(x, use_at(x, v, k).node, "Reshape")) w->head_dim = shape_last(x, in_id(x, use_at(x, v, k).node, 1), 0);
        if (w->head_dim <= 0) return fail_at(x, mm[qi], "no Reshape of q into heads with a constant head size");
        /* the Neg's Concat is multiplied by the sin table */
        for (size_t n = 0; n < x->g->n_node && !w->ctx; n++) {
            if (!IS(x, (int)n, "Neg")) continue;
            int c = nuses(x, out0(x, (int)n)) ? use_at(x, out0(x, (int)n), 0).node : -1;
            for (int k = 0; c >= 0 && k < nuses(x, out0(x, c)); k++) {
                use u = use_at(x, out0(x, c), k);
                const Onnx__TensorProto *t = IS(x, u.node, "Mul") ? table_of(x, in_id(x, u.node, 1 - (size_t)u.slot)) : NULL;
                if (!t) continue;
                const void *d;
                size_t nb;
                void *owned;
                if (onnx_tensor_bytes(x->om, t, &d, &nb, &owned, x->err)) return x->err->code;
                int64_t cols = t->dims[t->n_dims - 1];
                w->ctx = t->dims[t->n_dims - 2];
                if (w->ctx > 1 && cols > 1 && w->head_dim >= 4) {
                    double f1 = asin(((const float *)d)[cols + 1]);
                    w->theta = f1 > 0 ? pow(f1, -(double)w->head_dim / 2) : 10000;
                    double r = round(w->theta);
                    if (fabs(w->theta - r) <= 1e-5 * w->theta) w->theta = r;
                }
                free(owned);
                break;
            }
        }
    }
    return 0;
}

static int mlp(gx *x, blk *b, const int mm[2], int h, int *newh) {
    int gi = -1;
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < nuses(x, out0(x, mm[i])); k++)
            if (IS(x, use_at(x, out0(x, mm[i]), k).node, "Sigmoid")) gi = i;
    if (gi < 0) return fail_at(x, mm[0], "MLP without a Sigmoid (SiLU) on the gate");
    int s, down = next_mm(x, out0(x, mm[1 - gi]), 1, &s, NULL, NULL), at;
    if (down < 0) return fail_at(x, mm[1 - gi], "no down projection after the MLP");
    if ((*newh = residual_add(x, out0(x, down), h, &at)) < 0) return fail_at(x, at, "not the residual Add after the MLP");
    b->w[W_GATE] = mm_weight(x, mm[gi], &b->tr[W_GATE]);
    b->w[W_UP] = mm_weight(x, mm[1 - gi], &b->tr[W_UP]);
    b->w[W_DOWN] = mm_weight(x, down, &b->tr[W_DOWN]);
    return 0;
}

static int walk_graph(gx *x, walk *w) {
    int ids = x->g->n_input ? id_of(x, x->g->input[0]->name) : -1, h = -1, at = -1;
    for (size_t i = 0; i < x->g->n_input; i++)
        if (x->g->input[i]->name && !strcmp(x->g->input[i]->name, "input_ids")) ids = id_of(x, "input_ids");
    for (int k = 0; ids >= 0 && k < nuses(x, ids) && h < 0; k++) {
        use u = use_at(x, ids, k);
        if (IS(x, u.node, "Gather") && u.slot == 1 && weight_init(x, in_id(x, u.node, 0))) {
            w->embd = weight_init(x, in_id(x, u.node, 0));
            h = out0(x, u.node);
        }
        if (at < 0 || IS(x, at, "Shape")) at = u.node; /* name a data consumer, not a shape query */
    }
    if (h < 0) return fail_at(x, at, "input_ids does not feed an embedding Gather");
    for (int step = 0; step < 2 * 4096 + 1; step++) {
        const Onnx__TensorProto *nw = NULL;
        double eps;
        int nrm = rmsnorm(x, h, &nw, &eps, &at), mm[4], rc;
        if (nrm < 0) return fail_at(x, at, "expected an RMSNorm (Pow, ReduceMean, Add, Sqrt, Div, Mul by a weight)");
        if (!isnan(eps)) w->eps = eps;
        int n = weight_mms(x, nrm, mm, 4);
        if (n == 1) { w->out_norm = nw; w->out = mm_weight(x, mm[0], &w->out_tr); return 0; }
        if (n == 3) {
            if (w->nb == w->cap) {
                int nc = w->cap ? 2 * w->cap : 16;
                blk *nbk = realloc(w->b, (size_t)nc * sizeof *nbk);
                if (!nbk) return av_errf(x->err, AV_ENOMEM, "%s: out of memory", x->om->path);
                w->b = nbk;
                w->cap = nc;
            }
            blk *b = &w->b[w->nb++];
            memset(b, 0, sizeof *b);
            b->w[W_ATTN_NORM] = nw;
            if ((rc = attention(x, w, b, mm, h, &h))) return rc;
        } else if (n == 2 && w->nb && !w->b[w->nb - 1].w[W_GATE]) {
            blk *b = &w->b[w->nb - 1];
            b->w[W_FFN_NORM] = nw;
            if ((rc = mlp(x, b, mm, h, &h))) return rc;
        } else {
            return fail_at(x, nuses(x, nrm) ? use_at(x, nrm, 0).node : at,
                           "the normalized stream feeds neither 3 (attention), 2 (MLP) nor 1 (classifier) weight MatMuls");
        }
    }
    return fail_at(x, -1, "too many layers");
}

/* GGUF metadata anvil's export keeps in metadata_props as gguf:<key>. */
static int restore_kv(gx *x, av_model *m) {
    const Onnx__ModelProto *p = x->om->proto;
    for (size_t i = 0; i < p->n_metadata_props; i++) {
        const char *k = p->metadata_props[i]->key, *v = p->metadata_props[i]->value;
        if (!k || !v || strncmp(k, "gguf:", 5)) continue;
        av_value val;
        char why[128];
        if (st_meta_decode(v, strlen(v), &val, why, sizeof why))
            return av_errf(x->err, AV_EFORMAT, "%s: metadata_props '%s': %s", x->om->path, k, why);
        if (av_kvs_set(&m->kv, k + 5, &val)) {
            av_value_release(&val);
            return av_errf(x->err, AV_ENOMEM, "%s: out of memory", x->om->path);
        }
    }
    return 0;
}

static int set_meta(gx *x, av_model *m, const walk *w) {
    int64_t dim = w->embd->dims[1], hd = w->head_dim;
    const blk *b0 = &w->b[0];
    int64_t qo = b0->tr[W_Q] ? b0->w[W_Q]->dims[0] : b0->w[W_Q]->dims[1];
    int64_t ko = b0->tr[W_K] ? b0->w[W_K]->dims[0] : b0->w[W_K]->dims[1];
    int64_t ff = b0->tr[W_GATE] ? b0->w[W_GATE]->dims[0] : b0->w[W_GATE]->dims[1];
    if (hd <= 0 || qo % hd || ko % hd || hd % 2)
        return av_errf(x->err, AV_EFORMAT, "%s: head size %lld does not divide q (%lld) and k (%lld)", x->om->path,
                       (long long)hd, (long long)qo, (long long)ko);
    const char *base = strrchr(x->om->path, '/');
    char name[256];
    snprintf(name, sizeof name, "%s", base ? base + 1 : x->om->path);
    char *dot = strrchr(name, '.');
    if (dot && dot != name) *dot = 0;
    av_kvs *kv = &m->kv;
    int have = av_kvs_find(kv, "general.architecture") != NULL, rc = 0;
    rc |= av_kvs_set_str(kv, "general.architecture", "llama");
    if (!av_kvs_find(kv, "general.name")) rc |= av_kvs_set_str(kv, "general.name", name);
    if (!av_kvs_find(kv, "llama.context_length")) rc |= av_kvs_set_u32(kv, "llama.context_length", (uint32_t)(w->ctx > 0 ? w->ctx : 2048));
    rc |= av_kvs_set_u32(kv, "llama.embedding_length", (uint32_t)dim);
    rc |= av_kvs_set_u32(kv, "llama.feed_forward_length", (uint32_t)ff);
    rc |= av_kvs_set_u32(kv, "llama.attention.head_count", (uint32_t)(qo / hd));
    rc |= av_kvs_set_u32(kv, "llama.attention.head_count_kv", (uint32_t)(ko / hd));
    rc |= av_kvs_set_u32(kv, "llama.block_count", (uint32_t)w->nb);
    rc |= av_kvs_set_u32(kv, "llama.rope.dimension_count", (uint32_t)hd);
    if (!av_kvs_find(kv, "llama.attention.layer_norm_rms_epsilon"))
        rc |= av_kvs_set_f32(kv, "llama.attention.layer_norm_rms_epsilon", isnan(w->eps) ? 1e-5f : (float)w->eps);
    if (!have && w->theta > 0 && w->theta != 10000)
        rc |= av_kvs_set_f32(kv, "llama.rope.freq_base", (float)w->theta);
    return rc ? av_errf(x->err, AV_ENOMEM, "%s: out of memory", x->om->path) : 0;
}

int onnx_to_model(const onnx_model *om, av_model **out, av_err *err) {
    *out = NULL;
    gx x = { .om = om, .g = om->proto->graph, .err = err };
    walk w = { .eps = NAN };
    av_model *m = av_model_new();
    int rc;
    if (!m) return av_errf(err, AV_ENOMEM, "%s: out of memory", om->path);
    m->format = AV_FMT_ONNX;
    if ((rc = build(&x)) || (rc = walk_graph(&x, &w))) goto fail;
    if (!w.nb) { rc = fail_at(&x, -1, "no decoder layers"); goto fail; }
    if ((rc = restore_kv(&x, m)) || (rc = set_meta(&x, m, &w))) goto fail;
    if ((rc = add_weight(&x, m, "token_embd.weight", w.embd, 0))) goto fail;
    if ((rc = add_weight(&x, m, "output_norm.weight", w.out_norm, 0))) goto fail;
    if (!(w.out == w.embd && w.out_tr) && (rc = add_weight(&x, m, "output.weight", w.out, !w.out_tr))) goto fail;
    int64_t hd = w.head_dim;
    for (int l = 0; l < w.nb; l++)
        for (int k = 0; k < W_N; k++) {
            int i = worder[k];
            char name[64];
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, wnames[i]);
            if ((rc = add_weight(&x, m, name, w.b[l].w[i], w.b[l].w[i]->n_dims == 2 && !w.b[l].tr[i]))) goto fail;
            if ((i == W_Q || i == W_K) && w.rotate_half) { /* HF rotate_half rows -> GGUF interleaved pairs */
                hf_perm p = { m->n_tensors - 1, m->tensors[m->n_tensors - 1].shape[0] / hd, 0 };
                if ((rc = hf_perm_apply(m, &p, err))) goto fail;
            }
        }
    /* every matrix initializer must have found its place */
    for (size_t i = 0; i < x.g->n_initializer; i++) {
        const Onnx__TensorProto *t = x.g->initializer[i];
        int used = t == w.embd || t == w.out || t == w.out_norm;
        for (int l = 0; l < w.nb && !used; l++)
            for (int k = 0; k < W_N; k++) used |= w.b[l].w[k] == t;
        int v = id_of(&x, t->name);
        if (used || t->n_dims < 2) continue;
        for (int k = 0; k < nuses(&x, v); k++) { /* a matrix multiplied somewhere is a weight (tables are gathered) */
            int n = use_at(&x, v, k).node, dv = IS(&x, n, "DequantizeLinear") ? out0(&x, n) : -1;
            for (int j = 0; j < nuses(&x, dv); j++) /* through its DequantizeLinear */
                if (!IS(&x, use_at(&x, dv, j).node, "Gather")) n = use_at(&x, dv, j).node;
            if (IS(&x, n, "MatMul") || IS(&x, n, "Gemm") || IS(&x, n, "Transpose")) {
                rc = fail_at(&x, n, "uses a weight the Llama mapping does not account for");
                goto fail;
            }
        }
    }
    free(w.b);
    gx_release(&x);
    *out = m;
    return 0;
fail:
    free(w.b);
    gx_release(&x);
    av_model_free(m);
    return rc;
}
