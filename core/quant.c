/* quant.c — dispatch (ggml_quantize_chunk), file types, and llama-quantize's
 * per-tensor type choice (llama_tensor_get_type, src/llama-quant.cpp). */
#include "quant.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant_impl.h"

/* ------------------------------------------------------------- dispatch */

int q_can_quantize(av_dtype t) {
    switch (t) {
    case AV_F32: case AV_F16: case AV_BF16:
    case AV_Q4_0: case AV_Q4_1: case AV_Q5_0: case AV_Q5_1: case AV_Q8_0: case AV_Q8_1:
    case AV_Q2_K: case AV_Q3_K: case AV_Q4_K: case AV_Q5_K: case AV_Q6_K: case AV_Q8_K:
        return 1;
    default:
        return 0;
    }
}

size_t q_row_size(av_dtype t, int64_t ncols) {
    int ok;
    if (ncols < 0) return 0;
    size_t n = av_dtype_nbytes(t, ncols, &ok);
    return ok ? n : 0;
}

/* One row, as ggml_quantize_chunk -> quantize_<type> does for it: the _ref
 * path without importance weights, the _impl path with. */
static void quantize_one_row(av_dtype t, const float *x, void *y, int64_t n, const float *w) {
    switch (t) {
    case AV_F32: memcpy(y, x, (size_t)n * 4); break;
    case AV_F16: av_f32_to_f16_row(x, y, n); break;
    case AV_BF16: av_f32_to_bf16_row_ref(x, y, n); break;
    case AV_Q4_0: if (w) q_quantize_row_q4_0_w(x, y, n, w); else q_quantize_row_q4_0(x, y, n); break;
    case AV_Q4_1: if (w) q_quantize_row_q4_1_w(x, y, n, w); else q_quantize_row_q4_1(x, y, n); break;
    case AV_Q5_0: if (w) q_quantize_row_q5_0_w(x, y, n, w); else q_quantize_row_q5_0(x, y, n); break;
    case AV_Q5_1: if (w) q_quantize_row_q5_1_w(x, y, n, w); else q_quantize_row_q5_1(x, y, n); break;
    case AV_Q8_0: q_quantize_row_q8_0(x, y, n); break; /* ggml ignores weights for Q8_0 */
    case AV_Q8_1: q_quantize_row_q8_1(x, y, n); break;
    case AV_Q2_K: if (w) q_quantize_row_q2_K_w(x, y, n, w); else q_quantize_row_q2_K(x, y, n); break;
    case AV_Q3_K: if (w) q_quantize_row_q3_K_w(x, y, n, w); else q_quantize_row_q3_K(x, y, n); break;
    case AV_Q4_K: if (w) q_quantize_row_q4_K_w(x, y, n, w); else q_quantize_row_q4_K(x, y, n); break;
    case AV_Q5_K: if (w) q_quantize_row_q5_K_w(x, y, n, w); else q_quantize_row_q5_K(x, y, n); break;
    case AV_Q6_K: if (w) q_quantize_row_q6_K_w(x, y, n, w); else q_quantize_row_q6_K(x, y, n); break;
    case AV_Q8_K: q_quantize_row_q8_K(x, y, n); break;
    default: break;
    }
}

static size_t quantize_rows(av_dtype t, const float *src, void *dst, int64_t nrows, int64_t ncols,
                            const float *imatrix, int parallel) {
    if (!q_can_quantize(t) || nrows < 0) return 0;
    size_t rs = q_row_size(t, ncols);
    if (!rs && ncols) return 0;
    if (nrows && rs > SIZE_MAX / (size_t)nrows) return 0;
    /* rows are independent: any split gives the same bytes */
    #pragma omp parallel for schedule(dynamic, 16) if (parallel && nrows * ncols >= 65536)
    for (int64_t r = 0; r < nrows; r++)
        quantize_one_row(t, src + r * ncols, (uint8_t *)dst + (size_t)r * rs, ncols, imatrix);
    return (size_t)nrows * rs;
}

size_t q_quantize(av_dtype t, const float *src, void *dst, int64_t nrows, int64_t ncols, const float *imatrix) {
    return quantize_rows(t, src, dst, nrows, ncols, imatrix, 1);
}

size_t q_quantize_ref(av_dtype t, const float *src, void *dst, int64_t nrows, int64_t ncols,
                      const float *imatrix) {
    return quantize_rows(t, src, dst, nrows, ncols, imatrix, 0);
}

int q_dequantize_row(av_dtype t, const void *src, float *dst, int64_t n) {
    const av_dtype_traits *tr = av_dtype_traits_of(t);
    if (!tr) return AV_EUNSUPPORTED;
    if (n < 0 || n % tr->block_size) return AV_EINVAL;
    switch (t) {
    case AV_F32: memcpy(dst, src, (size_t)n * 4); break;
    case AV_F16: av_f16_to_f32_row(src, dst, n); break;
    case AV_BF16: av_bf16_to_f32_row(src, dst, n); break;
    case AV_Q4_0: q_dequantize_row_q4_0(src, dst, n); break;
    case AV_Q4_1: q_dequantize_row_q4_1(src, dst, n); break;
    case AV_Q5_0: q_dequantize_row_q5_0(src, dst, n); break;
    case AV_Q5_1: q_dequantize_row_q5_1(src, dst, n); break;
    case AV_Q8_0: q_dequantize_row_q8_0(src, dst, n); break;
    case AV_Q8_1: q_dequantize_row_q8_1(src, dst, n); break;
    case AV_Q2_K: q_dequantize_row_q2_K(src, dst, n); break;
    case AV_Q3_K: q_dequantize_row_q3_K(src, dst, n); break;
    case AV_Q4_K: q_dequantize_row_q4_K(src, dst, n); break;
    case AV_Q5_K: q_dequantize_row_q5_K(src, dst, n); break;
    case AV_Q6_K: q_dequantize_row_q6_K(src, dst, n); break;
    case AV_Q8_K: q_dequantize_row_q8_K(src, dst, n); break;
    default: return AV_EUNSUPPORTED;
    }
    return 0;
}

/* ----------------------------------------------------------- file types */

static const q_ftype_info FTYPES[] = {
    { "Q4_0", Q_FTYPE_Q4_0, AV_Q4_0, "4.5 bpw, legacy 4-bit" },
    { "Q4_1", Q_FTYPE_Q4_1, AV_Q4_1, "5.0 bpw, legacy 4-bit with minimum" },
    { "Q5_0", Q_FTYPE_Q5_0, AV_Q5_0, "5.5 bpw, legacy 5-bit" },
    { "Q5_1", Q_FTYPE_Q5_1, AV_Q5_1, "6.0 bpw, legacy 5-bit with minimum" },
    { "Q2_K", Q_FTYPE_Q2_K, AV_Q2_K, "2-bit K-quant mix" },
    { "Q3_K_S", Q_FTYPE_Q3_K_S, AV_Q3_K, "3-bit K-quant, small" },
    { "Q3_K_M", Q_FTYPE_Q3_K_M, AV_Q3_K, "3-bit K-quant mix, medium" },
    { "Q3_K_L", Q_FTYPE_Q3_K_L, AV_Q3_K, "3-bit K-quant mix, large" },
    { "Q4_K_S", Q_FTYPE_Q4_K_S, AV_Q4_K, "4-bit K-quant mix, small" },
    { "Q4_K_M", Q_FTYPE_Q4_K_M, AV_Q4_K, "4-bit K-quant mix, medium (recommended)" },
    { "Q5_K_S", Q_FTYPE_Q5_K_S, AV_Q5_K, "5-bit K-quant, small" },
    { "Q5_K_M", Q_FTYPE_Q5_K_M, AV_Q5_K, "5-bit K-quant mix, medium" },
    { "Q6_K", Q_FTYPE_Q6_K, AV_Q6_K, "6.6 bpw K-quant" },
    { "Q8_0", Q_FTYPE_Q8_0, AV_Q8_0, "8.5 bpw, nearly lossless" },
    { "F16", Q_FTYPE_F16, AV_F16, "16-bit float" },
    { "BF16", Q_FTYPE_BF16, AV_BF16, "16-bit bfloat" },
    { "F32", Q_FTYPE_ALL_F32, AV_F32, "32-bit float" },
};
#define N_FTYPES (sizeof FTYPES / sizeof FTYPES[0])

const q_ftype_info *q_ftype_list(size_t *n) {
    *n = N_FTYPES;
    return FTYPES;
}

static int ieq(const char *a, const char *b) {
    while (*a && *b && toupper((unsigned char)*a) == toupper((unsigned char)*b)) a++, b++;
    return !*a && !*b;
}

const q_ftype_info *q_ftype_from_name(const char *name) {
    static const struct { const char *alias, *name; } ALIASES[] = {
        { "Q3_K", "Q3_K_M" }, { "Q4_K", "Q4_K_M" }, { "Q5_K", "Q5_K_M" },
    };
    if (!name || !*name) return NULL;
    for (size_t i = 0; i < sizeof ALIASES / sizeof ALIASES[0]; i++)
        if (ieq(name, ALIASES[i].alias)) name = ALIASES[i].name;
    for (size_t i = 0; i < N_FTYPES; i++)
        if (ieq(name, FTYPES[i].name)) return &FTYPES[i];
    char *end;
    long v = strtol(name, &end, 10);
    if (*end == 0)
        for (size_t i = 0; i < N_FTYPES; i++)
            if ((long)FTYPES[i].ftype == v) return &FTYPES[i];
    return NULL;
}

/* ------------------------------------------------------------ the plan */

typedef enum { CAT_TOKEN_EMBD, CAT_ATTN_Q, CAT_ATTN_V, CAT_ATTN_K, CAT_ATTN_QKV, CAT_ATTN_KV_B,
               CAT_ATTN_OUTPUT, CAT_FFN_UP, CAT_FFN_GATE, CAT_FFN_DOWN, CAT_OUTPUT, CAT_OTHER } category;

static int is_token_embd(const char *n) {
    return !strcmp(n, "token_embd.weight") || !strcmp(n, "per_layer_token_embd.weight");
}

static category category_of(const char *n) {
    if (!strcmp(n, "output.weight")) return CAT_OUTPUT;
    if (is_token_embd(n)) return CAT_TOKEN_EMBD;
    if (strstr(n, "attn_qkv.weight")) return CAT_ATTN_QKV;
    if (strstr(n, "attn_kv_b.weight")) return CAT_ATTN_KV_B;
    if (strstr(n, "attn_v.weight")) return CAT_ATTN_V;
    if (strstr(n, "attn_k.weight")) return CAT_ATTN_K;
    if (strstr(n, "attn_q.weight")) return CAT_ATTN_Q;
    if (strstr(n, "attn_output.weight")) return CAT_ATTN_OUTPUT;
    if (strstr(n, "ffn_up")) return CAT_FFN_UP;
    if (strstr(n, "ffn_gate")) return CAT_FFN_GATE;
    if (strstr(n, "ffn_down")) return CAT_FFN_DOWN;
    return CAT_OTHER;
}

static int is_attn_v(category c) { return c == CAT_ATTN_V || c == CAT_ATTN_QKV || c == CAT_ATTN_KV_B; }

/* tensor_allows_quantization: >= 2-D tensors whose name ends in "weight",
 * minus norms and the small special tensors llama-quantize keeps. */
static int allows_quantization(const av_tensor *t, const q_plan_opts *o) {
    static const char *const KEEP[] = {
        "_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
        "per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight",
        "indexer.q_proj.weight", "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight",
        "time_mix_w2.weight", "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight",
        "time_mix_a0.weight", "time_mix_a1.weight", "time_mix_a2.weight", "time_mix_g1.weight",
        "time_mix_g2.weight", "time_mix_decay_w1.weight", "time_mix_decay_w2.weight",
        "time_mix_lerp_fused.weight", "attn_rel_b.weight", ".position_embd", "sam.pos_embd",
        "sam.neck.", "sam.net_", ".rel_pos", ".patch_embd", ".patch_merger", "a.rvq.codebook",
        "mm.a.code_embd",
    };
    int dims = t->n_dims; /* ggml_n_dims: trailing 1s do not count */
    while (dims > 1 && t->shape[t->n_dims - dims] == 1) dims--;
    if (dims < 2) return 0;
    const char *n = t->name;
    size_t len = strlen(n);
    if (len < 6 || strcmp(n + len - 6, "weight")) return 0;
    if (o->leave_output && !strcmp(n, "output.weight")) return 0;
    for (size_t i = 0; i < sizeof KEEP / sizeof KEEP[0]; i++)
        if (strstr(n, KEEP[i])) return 0;
    if (!strcmp(n, "position_embd.weight") || !strcmp(n, "token_types.weight")) return 0;
    return 1;
}

typedef struct {
    const q_ftype_info *ft;
    const q_plan_opts *o;
    int n_layer, n_gqa, n_expert, is_falcon, is_70b, has_tied;
    int n_attention_wv, i_attention_wv, i_ffn_down, i_ffn_gate, i_ffn_up;
    int n_fallback;
} plan_state;

static int use_more_bits(int i_layer, int n_layers) {
    return i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2;
}

/* For MoE models the layer comes from the name (experts are not consecutive). */
static int layer_of(const plan_state *s, int counter, const char *name, int *out, av_err *err) {
    *out = counter;
    if (s->n_expert > 1) {
        if (sscanf(name, "blk.%d.", out) != 1)
            return av_errf(err, AV_EFORMAT, "failed to determine layer for tensor '%s'", name);
        if (*out < 0 || *out >= s->n_layer)
            return av_errf(err, AV_EFORMAT, "bad layer %d for tensor '%s': must be in [0, %d)", *out, name,
                           s->n_layer);
    }
    return 0;
}

/* llama_tensor_get_type_impl for the K-quant and legacy mixes. */
static int mix_type(plan_state *s, const av_tensor *t, category cat, av_dtype *type, av_err *err) {
    const q_ftype f = s->ft->ftype;
    av_dtype nt = *type;
    const int64_t nx = t->shape[t->n_dims - 1];
    if (cat == CAT_OUTPUT || (s->has_tied && cat == CAT_TOKEN_EMBD)) {
        if (s->o->output_type >= 0) nt = (av_dtype)s->o->output_type;
        else {
            const av_dtype_traits *tr = av_dtype_traits_of(nt);
            if (s->is_falcon || nx % tr->block_size) nt = AV_Q8_0;
            else if (nt != AV_Q8_0) nt = AV_Q6_K;
        }
    } else if (cat == CAT_TOKEN_EMBD) {
        if (s->o->token_embd_type >= 0) nt = (av_dtype)s->o->token_embd_type;
    } else if (is_attn_v(cat)) {
        if (f == Q_FTYPE_Q2_K) nt = s->n_gqa >= 4 ? AV_Q4_K : AV_Q3_K;
        else if (f == Q_FTYPE_Q3_K_M) nt = s->i_attention_wv < 2 ? AV_Q5_K : AV_Q4_K;
        else if (f == Q_FTYPE_Q3_K_L) nt = AV_Q5_K;
        else if ((f == Q_FTYPE_Q4_K_M || f == Q_FTYPE_Q5_K_M) && use_more_bits(s->i_attention_wv, s->n_attention_wv))
            nt = AV_Q6_K;
        else if (f == Q_FTYPE_Q4_K_S && s->i_attention_wv < 4) nt = AV_Q5_K;
        if (s->is_70b && (nt == AV_Q3_K || nt == AV_Q4_K)) nt = AV_Q5_K;
        if (s->n_expert == 8) nt = AV_Q8_0;
        ++s->i_attention_wv;
    } else if (cat == CAT_ATTN_K) {
        if (s->n_expert == 8) nt = AV_Q8_0;
    } else if (cat == CAT_FFN_DOWN) {
        int i_layer, n_layer = s->n_layer, rc;
        if ((rc = layer_of(s, s->i_ffn_down, t->name, &i_layer, err))) return rc;
        if (f == Q_FTYPE_Q2_K) nt = AV_Q3_K;
        else if (f == Q_FTYPE_Q3_K_M)
            nt = i_layer < n_layer / 16 ? AV_Q5_K : !s->is_falcon || use_more_bits(i_layer, n_layer) ? AV_Q4_K : AV_Q3_K;
        else if (f == Q_FTYPE_Q3_K_L) nt = s->is_falcon ? AV_Q4_K : AV_Q5_K;
        else if (f == Q_FTYPE_Q4_K_M) {
            if (s->is_falcon)
                nt = i_layer < n_layer / 16 ? AV_Q6_K : use_more_bits(i_layer, n_layer) ? AV_Q5_K : AV_Q4_K;
            else if (use_more_bits(i_layer, n_layer)) nt = AV_Q6_K;
        } else if (f == Q_FTYPE_Q5_K_M && use_more_bits(i_layer, n_layer)) nt = AV_Q6_K;
        else if (f == Q_FTYPE_Q4_K_S && !s->is_falcon && i_layer < n_layer / 8) nt = AV_Q5_K;
        else if ((f == Q_FTYPE_Q4_0 || f == Q_FTYPE_Q5_0) && s->o->has_imatrix && i_layer < n_layer / 8)
            nt = f == Q_FTYPE_Q4_0 ? AV_Q4_1 : AV_Q5_1;
        ++s->i_ffn_down;
    } else if (cat == CAT_ATTN_OUTPUT) {
        if (!s->is_falcon) {
            if (s->n_expert == 8) {
                if (f == Q_FTYPE_Q2_K || f == Q_FTYPE_Q3_K_S || f == Q_FTYPE_Q3_K_M || f == Q_FTYPE_Q4_K_S ||
                    f == Q_FTYPE_Q4_K_M)
                    nt = AV_Q5_K;
            } else {
                if (f == Q_FTYPE_Q2_K) nt = AV_Q3_K;
                else if (f == Q_FTYPE_Q3_K_M) nt = AV_Q4_K;
                else if (f == Q_FTYPE_Q3_K_L) nt = AV_Q5_K;
            }
        } else if (f == Q_FTYPE_Q3_K_L) nt = AV_Q4_K;
    } else if (cat == CAT_ATTN_QKV) {
        /* unreachable: attn_qkv is an attn_v-like category above (as in llama.cpp) */
    } else if (cat == CAT_FFN_GATE) {
        int i_layer, rc;
        if ((rc = layer_of(s, s->i_ffn_gate, t->name, &i_layer, err))) return rc;
        ++s->i_ffn_gate;
    } else if (cat == CAT_FFN_UP) {
        int i_layer, rc;
        if ((rc = layer_of(s, s->i_ffn_up, t->name, &i_layer, err))) return rc;
        ++s->i_ffn_up;
    }
    *type = nt;
    return 0;
}

/* tensor_type_fallback: a row that is not whole blocks of the chosen type. */
static int fallback(plan_state *s, const av_tensor *t, av_dtype *type, char **warning, av_err *err) {
    const int64_t ncols = t->shape[t->n_dims - 1];
    const av_dtype_traits *tr = av_dtype_traits_of(*type);
    const int64_t qk = tr->block_size;
    if (ncols % qk == 0) return 0;
    av_dtype rt;
    switch (*type) {
    case AV_IQ1_S: case AV_IQ1_M: case AV_IQ2_XXS: case AV_IQ2_XS: case AV_IQ2_S:
    case AV_IQ3_XXS: case AV_IQ3_S: case AV_IQ4_XS: rt = AV_IQ4_NL; break;
    case AV_Q2_K: case AV_Q3_K: case AV_TQ1_0: case AV_TQ2_0: rt = AV_Q4_0; break;
    case AV_Q4_K: rt = AV_Q5_0; break;
    case AV_Q5_K: rt = AV_Q5_1; break;
    case AV_Q6_K: rt = AV_Q8_0; break;
    default:
        return av_errf(err, AV_EUNSUPPORTED,
                       "tensor '%s': ncols %" PRId64 " not divisible by %" PRId64
                       " (required for type %s) and no tensor type fallback is defined for type %s",
                       t->name, ncols, qk, tr->name, tr->name);
    }
    ++s->n_fallback;
    int f16 = ncols % av_dtype_traits_of(rt)->block_size != 0;
    if (f16) rt = AV_F16;
    char buf[256];
    snprintf(buf, sizeof buf,
             "warning: %-36s - ncols %6" PRId64 " not divisible by %3" PRId64 " (required for type %7s) %s-> falling back to %7s",
             t->name, ncols, qk, tr->name, f16 ? "(WARNING: must use F16 due to unusual shape) " : "",
             av_dtype_name(rt));
    if (!(*warning = strdup(buf))) return av_errf(err, AV_ENOMEM, "out of memory");
    *type = rt;
    return 0;
}

static int64_t kv_int(const av_model *m, const char *arch, const char *key, int64_t dflt) {
    char k[160];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    int64_t v;
    if (av_kvs_get_i64(&m->kv, k, &v) == 0) return v;
    /* per-layer arrays (head_count_kv of some models): take layer 0 */
    const av_kv *e = av_kvs_find(&m->kv, k);
    if (e && e->val.type == AV_KV_ARRAY && e->val.arr.n > 0 && e->val.arr.elem != AV_KV_STRING &&
        e->val.arr.elem != AV_KV_ARRAY)
        return av_array_get_i64(&e->val.arr, 0);
    return dflt;
}

/* llama.cpp's weights_map order: tensors outside blocks first, then blocks by
 * number; by name within each. The mixes count attn_v / ffn_down in it. */
static int layer_key(const char *name) {
    int l = -1;
    if (sscanf(name, "blk.%d.", &l) != 1) l = -1;
    return l;
}

static const av_model *sort_model;
static int cmp_llama_order(const void *a, const void *b) {
    const av_tensor *x = &sort_model->tensors[*(const size_t *)a], *y = &sort_model->tensors[*(const size_t *)b];
    int lx = layer_key(x->name), ly = layer_key(y->name);
    if (lx != ly) return lx < ly ? -1 : 1;
    return strcmp(x->name, y->name);
}

void q_plan_release(q_plan *p) {
    if (!p) return;
    for (size_t i = 0; i < p->n; i++) free(p->items[i].warning);
    free(p->items);
    memset(p, 0, sizeof *p);
}

int q_plan_model(const av_model *m, const q_ftype_info *ft, const q_plan_opts *opts, q_plan *out, av_err *err) {
    static const q_plan_opts DEFAULT_OPTS = { 0, 0, 0, -1, -1 };
    const q_plan_opts *o = opts ? opts : &DEFAULT_OPTS;
    memset(out, 0, sizeof *out);
    if (!ft) return av_errf(err, AV_EINVAL, "no file type given");
    const char *arch = "llama";
    av_kvs_get_str(&m->kv, "general.architecture", &arch);
    plan_state s = { .ft = ft, .o = o, .has_tied = 1 };
    s.n_layer = (int)kv_int(m, arch, "block_count", -1);
    if (s.n_layer < 0) return av_errf(err, AV_EFORMAT, "metadata lack %s.block_count (needed for the quant mix)", arch);
    int64_t n_head = kv_int(m, arch, "attention.head_count", 0);
    int64_t n_head_kv = kv_int(m, arch, "attention.head_count_kv", n_head);
    s.n_gqa = n_head_kv > 0 ? (int)(n_head / n_head_kv) : 0;
    s.n_expert = (int)kv_int(m, arch, "expert_count", 0);
    s.is_falcon = !strcmp(arch, "falcon");
    s.is_70b = !strcmp(arch, "llama") && s.n_layer == 80 && n_head != n_head_kv;

    size_t n = m->n_tensors;
    size_t *order = malloc((n ? n : 1) * sizeof *order);
    out->items = calloc(n ? n : 1, sizeof *out->items);
    if (!order || !out->items) {
        free(order);
        q_plan_release(out);
        return av_errf(err, AV_ENOMEM, "out of memory");
    }
    out->n = n;
    for (size_t i = 0; i < n; i++) {
        order[i] = i;
        category c = category_of(m->tensors[i].name);
        if (is_attn_v(c)) s.n_attention_wv++;
        if (c == CAT_OUTPUT) s.has_tied = 0;
    }
    sort_model = m; /* qsort has no context argument in C11 */
    qsort(order, n, sizeof *order, cmp_llama_order);

    int rc = 0;
    for (size_t k = 0; k < n && !rc; k++) {
        const av_tensor *t = &m->tensors[order[k]];
        q_plan_item *it = &out->items[order[k]];
        av_dtype type = t->dtype;
        if (allows_quantization(t, o)) {
            category c = category_of(t->name);
            type = ft->base;
            if (o->token_embd_type >= 0 && c == CAT_TOKEN_EMBD) type = (av_dtype)o->token_embd_type;
            else if (o->output_type >= 0 && c == CAT_OUTPUT) type = (av_dtype)o->output_type;
            else if (av_dtype_traits_of(type)->is_quantized) {
                if (!o->pure) rc = mix_type(&s, t, c, &type, err);
                if (!rc) rc = fallback(&s, t, &type, &it->warning, err);
            }
        }
        it->from = t->dtype;
        it->type = type;
        it->quantize = type != t->dtype;
    }
    free(order);
    if (rc) {
        q_plan_release(out);
        return rc;
    }
    out->n_fallback = s.n_fallback;
    return 0;
}

/* ------------------------------------------------------------- tensors */

int q_quantize_tensor(const av_tensor *t, av_dtype to, const float *imatrix, void **data, size_t *nbytes,
                      av_err *err) {
    *data = NULL;
    *nbytes = 0;
    if (!q_can_quantize(to))
        return av_errf(err, AV_EUNSUPPORTED, "tensor '%s': cannot quantize to %s", t->name, av_dtype_name(to));
    const av_dtype_traits *st = av_dtype_traits_of(t->src_dtype);
    if (!st || (t->src_dtype != AV_F32 && t->src_dtype != AV_F16 && t->src_dtype != AV_BF16 &&
                !(st->to_float && q_can_quantize(t->src_dtype))))
        return av_errf(err, AV_EUNSUPPORTED, "tensor '%s': cannot read %s data as floats", t->name,
                       av_dtype_name(t->src_dtype));
    int64_t ne = av_tensor_nelements(t);
    int64_t ncols = t->n_dims ? t->shape[t->n_dims - 1] : 1;
    if (ne < 0) return av_errf(err, AV_EINVAL, "tensor '%s': element count overflows", t->name);
    int64_t nrows = ncols ? ne / ncols : 0;
    int64_t n_mat = t->n_dims >= 3 ? t->shape[t->n_dims - 3] : 1; /* experts: ggml ne[2] */
    for (int i = 0; i < t->n_dims - 3; i++) n_mat *= t->shape[i];
    size_t rs = q_row_size(to, ncols);
    if (!rs && ncols)
        return av_errf(err, AV_EINVAL, "tensor '%s': rows of %" PRId64 " are not whole %s blocks of %d", t->name,
                       ncols, av_dtype_name(to), av_dtype_traits_of(to)->block_size);
    if (nrows && rs > SIZE_MAX / (size_t)nrows) return av_errf(err, AV_EINVAL, "tensor '%s' too large", t->name);
    size_t total = rs * (size_t)nrows;
    float *tmp = NULL;
    const float *src = t->data;
    if (t->src_dtype != AV_F32) {
        if (!(tmp = malloc((size_t)(ne ? ne : 1) * sizeof(float))))
            return av_errf(err, AV_ENOMEM, "tensor '%s': out of memory", t->name);
        q_dequantize_row(t->src_dtype, t->data, tmp, ne);
        src = tmp;
    }
    void *dst = malloc(total ? total : 1);
    if (!dst) {
        free(tmp);
        return av_errf(err, AV_ENOMEM, "tensor '%s': out of memory", t->name);
    }
    int64_t rows_per_mat = n_mat ? nrows / n_mat : 0;
    for (int64_t e = 0; e < n_mat; e++)
        q_quantize(to, src + e * rows_per_mat * ncols, (uint8_t *)dst + (size_t)(e * rows_per_mat) * rs,
                   rows_per_mat, ncols, imatrix ? imatrix + e * ncols : NULL);
    free(tmp);
    *data = dst;
    *nbytes = total;
    return 0;
}

/* ------------------------------------------------------------ whole models */

/* Permute m's tensors and plan's items together into llama.cpp's weights_map
 * order (llama_model_loader::weight_name_comparer). */
static int reorder(av_model *m, q_plan *p, av_err *err) {
    size_t n = m->n_tensors;
    size_t *ord = malloc((n ? n : 1) * sizeof *ord);
    av_tensor *t = malloc((n ? n : 1) * sizeof *t);
    q_plan_item *it = malloc((n ? n : 1) * sizeof *it);
    if (!ord || !t || !it) {
        free(ord), free(t), free(it);
        return av_errf(err, AV_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) ord[i] = i;
    sort_model = m;
    qsort(ord, n, sizeof *ord, cmp_llama_order);
    for (size_t i = 0; i < n; i++) t[i] = m->tensors[ord[i]], it[i] = p->items[ord[i]];
    memcpy(m->tensors, t, n * sizeof *t);
    memcpy(p->items, it, n * sizeof *it);
    free(ord), free(t), free(it);
    return 0;
}

/* gguf_set_val_* remove an existing key first, so a set key moves to the end. */
static int kv_append_u32(av_kvs *kv, const char *key, uint32_t v) {
    av_kvs_remove(kv, key);
    return av_kvs_set_u32(kv, key, v);
}
static int kv_append_str(av_kvs *kv, const char *key, const char *s) {
    av_kvs_remove(kv, key);
    return av_kvs_set_str(kv, key, s);
}

static int set_metadata(av_model *m, const q_ftype_info *ft, const q_model_opts *o) {
    const q_imatrix *im = o->imatrix;
    int rc;
    if ((rc = kv_append_u32(&m->kv, "general.quantization_version", Q_QNT_VERSION)) ||
        (rc = kv_append_u32(&m->kv, "general.file_type", (uint32_t)ft->ftype)))
        return rc;
    av_kvs_remove(&m->kv, "split.no");
    av_kvs_remove(&m->kv, "split.count");
    av_kvs_remove(&m->kv, "split.tensors.count");
    if (!im) return 0;
    if ((rc = kv_append_str(&m->kv, "quantize.imatrix.file", o->imatrix_path ? o->imatrix_path : "")) ||
        (im->dataset && (rc = kv_append_str(&m->kv, "quantize.imatrix.dataset", im->dataset))) ||
        (rc = kv_append_u32(&m->kv, "quantize.imatrix.entries_count", (uint32_t)im->n)))
        return rc;
    if (im->chunk_count > 0) rc = kv_append_u32(&m->kv, "quantize.imatrix.chunks_count", (uint32_t)im->chunk_count);
    return rc;
}

int q_model_quantize(av_model *m, const char *name, const q_ftype_info *ft, const q_model_opts *opts,
                     q_plan *plan, av_err *err) {
    static const q_model_opts DEFAULT_OPTS = { .plan = { 0, 0, 0, -1, -1 } };
    const q_model_opts *o = opts ? opts : &DEFAULT_OPTS;
    const q_imatrix *im = o->imatrix;
    const char *impath = o->imatrix_path ? o->imatrix_path : "imatrix";
    q_plan_opts po = o->plan;
    po.has_imatrix = im != NULL;
    const float **weights = NULL;
    int rc = q_plan_model(m, ft, &po, plan, err);
    if (rc) {
        av_err_prefix(err, name);
        return rc;
    }
    /* llama.cpp's order from here on: checks name the tensor llama-quantize names */
    if ((rc = reorder(m, plan, err))) goto fail_named;
    if (!(weights = calloc(m->n_tensors ? m->n_tensors : 1, sizeof *weights))) {
        rc = av_errf(err, AV_ENOMEM, "out of memory");
        goto fail_named;
    }
    size_t im_used = 0, n_quant = 0;
    uint64_t work = 0, done = 0;
    for (size_t i = 0; i < m->n_tensors; i++) {
        const av_tensor *t = &m->tensors[i];
        if (!plan->items[i].quantize) continue;
        int ok;
        n_quant++;
        work += av_tensor_nbytes(t, &ok);
        const av_dtype_traits *tr = av_dtype_traits_of(t->dtype);
        if (tr && tr->is_quantized && !o->allow_requantize) {
            rc = av_errf(err, AV_EUNSUPPORTED,
                         "tensor '%s' is already %s: requantizing from type %s is disabled (--allow-requantize "
                         "enables it, at a loss of quality)", t->name, tr->name, tr->name);
            goto fail_named;
        }
        if (im) {
            if ((rc = q_imatrix_for_tensor(im, t, &weights[i], err))) {
                size_t l = err ? strlen(err->msg) : 0;
                if (err) snprintf(err->msg + l, sizeof err->msg - l, " (an imatrix for another model?)");
                av_err_prefix(err, impath);
                goto fail;
            }
            im_used += weights[i] != NULL;
        }
    }
    if (im && im->n && !im_used && n_quant) {
        rc = av_errf(err, AV_EFORMAT, "%s: none of its %zu entries names a tensor of %s: imatrix made for another model",
                     impath, im->n, name);
        goto fail;
    }
    for (size_t i = 0; i < m->n_tensors; i++) {
        if (!plan->items[i].quantize) continue;
        av_tensor *t = &m->tensors[i];
        int ok;
        uint64_t nb = av_tensor_nbytes(t, &ok);
        void *data;
        size_t nbytes;
        if ((rc = q_quantize_tensor(t, plan->items[i].type, weights[i], &data, &nbytes, err))) goto fail_named;
        free(t->owned);
        t->owned = data;
        t->data = data;
        t->dtype = t->src_dtype = plan->items[i].type;
        done += nb;
        if (o->progress) o->progress(o->ud, done, work);
    }
    if ((rc = set_metadata(m, ft, o))) {
        rc = av_errf(err, rc, "out of memory");
        goto fail_named;
    }
    free(weights);
    return 0;
fail_named:
    av_err_prefix(err, name);
fail:
    free(weights);
    q_plan_release(plan);
    return rc;
}
