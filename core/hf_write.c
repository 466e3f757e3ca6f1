/* hf_write.c — GGUF llama names/metadata -> HF Llama folder (see hf.h):
 * hf_gguf_to_hf (names, q/k layout, tie) and hf_write_folder (config.json,
 * model.safetensors, tokenizer.json; atomic folder). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hashmap.h"
#include "hf.h"
#include "safetensors.h"

static const struct { const char *gguf, *hf; int permute; } layer_names[] = {
    {"attn_norm.weight", "input_layernorm.weight", 0},
    {"attn_q.weight", "self_attn.q_proj.weight", 1},
    {"attn_k.weight", "self_attn.k_proj.weight", 2},
    {"attn_v.weight", "self_attn.v_proj.weight", 0},
    {"attn_output.weight", "self_attn.o_proj.weight", 0},
    {"ffn_norm.weight", "post_attention_layernorm.weight", 0},
    {"ffn_gate.weight", "mlp.gate_proj.weight", 0},
    {"ffn_up.weight", "mlp.up_proj.weight", 0},
    {"ffn_down.weight", "mlp.down_proj.weight", 0},
};

static const struct { const char *gguf, *hf; } top_names[] = {
    {"token_embd.weight", "model.embed_tokens.weight"},
    {"output_norm.weight", "model.norm.weight"},
    {"output.weight", "lm_head.weight"},
};

static int kv_u64(const av_model *m, const char *key, int required, uint64_t dflt, uint64_t *out, av_err *err) {
    int rc = av_kvs_get_u64(&m->kv, key, out);
    if (rc == AV_ENOTFOUND && !required) { *out = dflt; return 0; }
    if (rc == AV_ENOTFOUND) return av_errf(err, AV_EFORMAT, "metadata '%s' is missing", key);
    if (rc) return av_errf(err, AV_EFORMAT, "metadata '%s' is not an unsigned integer", key);
    if (*out == 0 || *out > (1u << 24)) return av_errf(err, AV_EFORMAT, "metadata '%s' = %llu is out of range", key, (unsigned long long)*out);
    return 0;
}

static void remove_tensor(av_model *m, size_t i) {
    free(m->tensors[i].name);
    free(m->tensors[i].owned);
    memmove(&m->tensors[i], &m->tensors[i + 1], (m->n_tensors - i - 1) * sizeof *m->tensors);
    m->n_tensors--;
}

int hf_gguf_to_hf(av_model *m, hf_perm_queue *defer, av_err *err) {
    const char *arch = NULL;
    if (av_kvs_get_str(&m->kv, "general.architecture", &arch) != 0 || strcmp(arch, "llama") != 0)
        return av_errf(err, AV_EUNSUPPORTED, "general.architecture is '%s'; only llama models map to HF folders",
                       arch ? arch : "(missing)");
    uint64_t H, HKV;
    int rc;
    if ((rc = kv_u64(m, "llama.attention.head_count", 1, 0, &H, err)) ||
        (rc = kv_u64(m, "llama.attention.head_count_kv", 0, H, &HKV, err)))
        return rc;
    for (size_t i = 0; i < m->n_tensors; i++) {
        const av_dtype_traits *tr = av_dtype_traits_of(m->tensors[i].src_dtype);
        if (!tr || tr->is_quantized)
            return av_errf(err, AV_EUNSUPPORTED, "tensor '%s' is %s; HF folders hold float tensors and dequantizing is not supported yet",
                           m->tensors[i].name, av_dtype_name(m->tensors[i].src_dtype));
    }
    const av_tensor *emb = av_model_find(m, "token_embd.weight");
    av_tensor *out = av_model_find(m, "output.weight");
    if (!emb) return av_errf(err, AV_EFORMAT, "tensor 'token_embd.weight' is missing");
    if (out && out->data == emb->data && out->src_dtype == emb->src_dtype && out->dtype == emb->dtype &&
        out->n_dims == emb->n_dims && !memcmp(out->shape, emb->shape, sizeof out->shape))
        remove_tensor(m, (size_t)(out - m->tensors)); /* tied: one storage, as HF saves it */
    for (size_t i = 0; i < m->n_tensors; i++) {
        av_tensor *t = &m->tensors[i];
        const char *hf = NULL;
        char buf[128];
        for (size_t k = 0; k < sizeof top_names / sizeof *top_names && !hf; k++)
            if (!strcmp(t->name, top_names[k].gguf)) hf = top_names[k].hf;
        int layer, off = 0;
        if (!hf && sscanf(t->name, "blk.%d.%n", &layer, &off) == 1 && off > 0 && layer >= 0) {
            for (size_t k = 0; k < sizeof layer_names / sizeof *layer_names; k++) {
                if (strcmp(t->name + off, layer_names[k].gguf) != 0) continue;
                snprintf(buf, sizeof buf, "model.layers.%d.%s", layer, layer_names[k].hf);
                hf = buf;
                if (layer_names[k].permute) {
                    int64_t nh = (int64_t)(layer_names[k].permute == 1 ? H : HKV);
                    const av_dtype_traits *tr = av_dtype_traits_of(t->src_dtype);
                    if (t->n_dims != 2 || t->shape[0] % (2 * nh) != 0 || !tr || tr->block_size != 1)
                        return av_errf(err, tr && tr->block_size != 1 ? AV_EUNSUPPORTED : AV_EFORMAT,
                                       "tensor '%s' (%s) cannot be split into %lld heads of row pairs", t->name,
                                       av_dtype_name(t->src_dtype), (long long)nh);
                    hf_perm p = { .tensor = i, .n_head = nh, .to_hf = 1 };
                    if (defer) {
                        if (defer->n == defer->cap) {
                            size_t nc = defer->cap ? defer->cap * 2 : 64;
                            hf_perm *nv = realloc(defer->v, nc * sizeof *nv);
                            if (!nv) return av_errf(err, AV_ENOMEM, "out of memory");
                            defer->v = nv;
                            defer->cap = nc;
                        }
                        defer->v[defer->n++] = p;
                    } else if ((rc = hf_perm_apply(m, &p, err))) {
                        return rc;
                    }
                }
                break;
            }
        }
        if (!hf) return av_errf(err, AV_EUNSUPPORTED, "tensor '%s' has no HF Llama name", t->name);
        char *n = strdup(hf);
        if (!n) return av_errf(err, AV_ENOMEM, "out of memory");
        free(t->name);
        t->name = n;
    }
    return 0;
}

/* ---- config.json ---- */

/* Shortest decimal that reads back as the same float, always with a '.' or exponent. */
static void fmt_float(char *buf, size_t n, double v) {
    float f = (float)v;
    for (int p = 1; p <= 9; p++) {
        snprintf(buf, n, "%.*g", p, (double)f);
        if ((float)strtod(buf, NULL) == f) break;
    }
    if (!strpbrk(buf, ".eEn")) strncat(buf, ".0", n - strlen(buf) - 1);
}

static const char *torch_dtype_name(av_dtype t) {
    switch (t) {
    case AV_F16: return "float16";
    case AV_BF16: return "bfloat16";
    case AV_F64: return "float64";
    default: return "float32";
    }
}

static int config_json(const av_model *m, char **out, av_err *err) {
    uint64_t E, L, H, HKV, F, C, HD, bos, eos;
    int rc;
    if ((rc = kv_u64(m, "llama.embedding_length", 1, 0, &E, err)) ||
        (rc = kv_u64(m, "llama.block_count", 1, 0, &L, err)) ||
        (rc = kv_u64(m, "llama.attention.head_count", 1, 0, &H, err)) ||
        (rc = kv_u64(m, "llama.attention.head_count_kv", 0, H, &HKV, err)) ||
        (rc = kv_u64(m, "llama.feed_forward_length", 1, 0, &F, err)) ||
        (rc = kv_u64(m, "llama.context_length", 0, 2048, &C, err)) ||
        (rc = kv_u64(m, "llama.rope.dimension_count", 0, E / H, &HD, err)))
        return rc;
    if (av_kvs_find(&m->kv, "llama.rope.scaling.type") || av_kvs_find(&m->kv, "llama.rope.scaling.factor"))
        return av_errf(err, AV_EUNSUPPORTED, "llama.rope.scaling.* is not mapped to config.json yet");
    const av_tensor *emb = av_model_find(m, "model.embed_tokens.weight");
    if (!emb || emb->n_dims != 2) return av_errf(err, AV_EFORMAT, "tensor 'model.embed_tokens.weight' is missing or not 2-D");
    av_dtype dt = emb->dtype;
    for (size_t i = 0; i < m->n_tensors; i++)
        if (m->tensors[i].n_dims >= 2) { dt = m->tensors[i].dtype; break; }
    double eps = 1e-6, theta = 0;
    av_kvs_get_f64(&m->kv, "llama.attention.layer_norm_rms_epsilon", &eps);
    int has_theta = av_kvs_get_f64(&m->kv, "llama.rope.freq_base", &theta) == 0;
    char s_eps[40], s_theta[40];
    fmt_float(s_eps, sizeof s_eps, eps);
    fmt_float(s_theta, sizeof s_theta, theta);
    char ids[160] = "";
    size_t il = 0;
    if (av_kvs_get_u64(&m->kv, "tokenizer.ggml.bos_token_id", &bos) == 0 && bos < (1u << 31))
        il += (size_t)snprintf(ids + il, sizeof ids - il, "  \"bos_token_id\": %llu,\n", (unsigned long long)bos);
    if (av_kvs_get_u64(&m->kv, "tokenizer.ggml.eos_token_id", &eos) == 0 && eos < (1u << 31))
        il += (size_t)snprintf(ids + il, sizeof ids - il, "  \"eos_token_id\": %llu,\n", (unsigned long long)eos);
    char *s = NULL;
    if (asprintf(&s,
                 "{\n"
                 "  \"architectures\": [\n    \"LlamaForCausalLM\"\n  ],\n"
                 "  \"model_type\": \"llama\",\n"
                 "  \"hidden_size\": %llu,\n"
                 "  \"intermediate_size\": %llu,\n"
                 "  \"num_hidden_layers\": %llu,\n"
                 "  \"num_attention_heads\": %llu,\n"
                 "  \"num_key_value_heads\": %llu,\n"
                 "  \"head_dim\": %llu,\n"
                 "  \"vocab_size\": %lld,\n"
                 "  \"max_position_embeddings\": %llu,\n"
                 "  \"rms_norm_eps\": %s,\n"
                 "%s%s%s"
                 "  \"rope_scaling\": null,\n"
                 "  \"hidden_act\": \"silu\",\n"
                 "  \"attention_bias\": false,\n"
                 "  \"mlp_bias\": false,\n"
                 "  \"tie_word_embeddings\": %s,\n"
                 "  \"torch_dtype\": \"%s\",\n"
                 "%s"
                 "  \"use_cache\": true\n"
                 "}\n",
                 (unsigned long long)E, (unsigned long long)F, (unsigned long long)L, (unsigned long long)H,
                 (unsigned long long)HKV, (unsigned long long)HD, (long long)emb->shape[0], (unsigned long long)C, s_eps,
                 has_theta ? "  \"rope_theta\": " : "", has_theta ? s_theta : "", has_theta ? ",\n" : "",
                 av_model_find(m, "lm_head.weight") ? "false" : "true", torch_dtype_name(dt), ids) < 0)
        return av_errf(err, AV_ENOMEM, "out of memory");
    *out = s;
    return 0;
}

/* ---- tokenizer.json for SentencePiece-style vocabularies (transformers' LlamaConverter) ---- */

typedef struct merge { int32_t l, r, piece; float score; } merge;

static int merge_cmp(const void *a, const void *b) { /* score desc, then (piece, l, r): stable like Python */
    const merge *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    if (x->piece != y->piece) return x->piece < y->piece ? -1 : 1;
    if (x->l != y->l) return x->l < y->l ? -1 : 1;
    return (x->r > y->r) - (x->r < y->r);
}

static size_t utf8_len(unsigned char c) { return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }

static int spm_tokenizer_json(const av_model *m, char **out, char *note, size_t note_len, av_err *err) {
    *out = NULL;
    const char *model = NULL;
    const av_kv *tk = av_kvs_find(&m->kv, "tokenizer.ggml.tokens"), *sc = av_kvs_find(&m->kv, "tokenizer.ggml.scores"),
                *ty = av_kvs_find(&m->kv, "tokenizer.ggml.token_type");
    if (av_kvs_get_str(&m->kv, "tokenizer.ggml.model", &model) != 0 || !tk) {
        snprintf(note, note_len, "tokenizer.json not written: the model carries no vocabulary");
        return 0;
    }
    if (strcmp(model, "llama") != 0) {
        snprintf(note, note_len, "tokenizer.json not written: tokenizer.ggml.model '%s' is not mapped yet (SentencePiece 'llama' only)", model);
        return 0;
    }
    if (tk->val.type != AV_KV_ARRAY || tk->val.arr.elem != AV_KV_STRING || !sc || sc->val.type != AV_KV_ARRAY ||
        sc->val.arr.n != tk->val.arr.n || (ty && (ty->val.type != AV_KV_ARRAY || ty->val.arr.n != tk->val.arr.n))) {
        snprintf(note, note_len, "tokenizer.json not written: tokens/scores/token_type arrays are missing or differ in length");
        return 0;
    }
    const av_str *toks = tk->val.arr.data;
    size_t n = (size_t)tk->val.arr.n;
    uint64_t unk = 0, bos = UINT64_MAX;
    av_kvs_get_u64(&m->kv, "tokenizer.ggml.unknown_token_id", &unk);
    av_kvs_get_u64(&m->kv, "tokenizer.ggml.bos_token_id", &bos);
    int add_bos = 1;
    const av_kv *ab = av_kvs_find(&m->kv, "tokenizer.ggml.add_bos_token");
    if (ab && ab->val.type == AV_KV_BOOL) add_bos = (int)ab->val.u;
    if (unk >= n) unk = 0;

    int rc = 0;
    av_strmap ids;
    av_strmap_init(&ids);
    merge *mg = NULL;
    size_t nm = 0, cm = 0;
    json_t *root = json_object(), *vocab = json_object(), *merges = json_array(), *added = json_array();
    if (!root || !vocab || !merges || !added) goto oom;
    for (size_t i = 0; i < n; i++) {
        if (av_strmap_put(&ids, toks[i].s, (size_t)toks[i].len, (int32_t)i)) goto oom;
        if (json_object_setn_new_nocheck(vocab, toks[i].s, (size_t)toks[i].len, json_integer((json_int_t)i))) goto oom;
        int type = ty ? (int)av_array_get_i64(&ty->val.arr, i) : 1;
        if (type == 2 || type == 3 || type == 4) { /* unknown, control, user-defined: added tokens */
            json_t *a = json_pack("{s:I, s:s%, s:b, s:b, s:b, s:b, s:b}", "id", (json_int_t)i, "content", toks[i].s,
                                  (size_t)toks[i].len, "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", type == 4,
                                  "special", type != 4);
            if (!a || json_array_append_new(added, a)) goto oom;
        }
    }
    /* SentencePieceExtractor.extract: every split of a piece into two vocab pieces, ranked by the piece's score */
    for (size_t i = 0; i < n; i++) {
        if (av_strmap_get(&ids, toks[i].s, (size_t)toks[i].len) != (int32_t)i) continue; /* dict keeps the last duplicate */
        const char *s = toks[i].s;
        size_t len = (size_t)toks[i].len;
        for (size_t k = utf8_len((unsigned char)s[0]); k < len; k += utf8_len((unsigned char)s[k])) {
            int32_t l = av_strmap_get(&ids, s, k), r = av_strmap_get(&ids, s + k, len - k);
            if (l < 0 || r < 0) continue;
            if (nm == cm) {
                cm = cm ? cm * 2 : 1024;
                merge *nmg = realloc(mg, cm * sizeof *mg);
                if (!nmg) goto oom;
                mg = nmg;
            }
            mg[nm++] = (merge){ l, r, (int32_t)i, (float)av_array_get_f64(&sc->val.arr, i) };
        }
    }
    qsort(mg, nm, sizeof *mg, merge_cmp);
    for (size_t i = 0; i < nm; i++) {
        json_t *p = json_pack("[s%, s%]", toks[mg[i].l].s, (size_t)toks[mg[i].l].len, toks[mg[i].r].s, (size_t)toks[mg[i].r].len);
        if (!p || json_array_append_new(merges, p)) goto oom;
    }
    json_t *bpe = json_pack("{s:s, s:n, s:n, s:n, s:s%, s:b, s:b, s:b, s:o, s:o}", "type", "BPE", "dropout",
                            "continuing_subword_prefix", "end_of_word_suffix", "unk_token", toks[unk].s,
                            (size_t)toks[unk].len, "fuse_unk", 1, "byte_fallback", 1, "ignore_merges", 0, "vocab", vocab,
                            "merges", merges);
    vocab = merges = NULL; /* both stolen by "s:o" */
    json_t *normalizer = json_pack("{s:s, s:[{s:s, s:s}, {s:s, s:{s:s}, s:s}]}", "type", "Sequence", "normalizers",
                                   "type", "Prepend", "prepend", "\xe2\x96\x81", "type", "Replace", "pattern", "String",
                                   " ", "content", "\xe2\x96\x81");
    json_t *decoder = json_pack("{s:s, s:[{s:s, s:{s:s}, s:s}, {s:s}, {s:s}, {s:s, s:s, s:i, s:i}]}", "type", "Sequence",
                                "decoders", "type", "Replace", "pattern", "String", "\xe2\x96\x81", "content", " ", "type",
                                "ByteFallback", "type", "Fuse", "type", "Strip", "content", " ", "start", 1, "stop", 0);
    json_t *post = json_null();
    if (add_bos && bos < n) {
        const char *b = toks[bos].s;
        post = json_pack("{s:s, s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}], s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}, {s:{s:s, s:i}}, {s:{s:s, s:i}}],"
                         " s:{s:{s:s, s:[I], s:[s]}}}",
                         "type", "TemplateProcessing", "single", "SpecialToken", "id", b, "type_id", 0, "Sequence", "id", "A",
                         "type_id", 0, "pair", "SpecialToken", "id", b, "type_id", 0, "Sequence", "id", "A", "type_id", 0,
                         "SpecialToken", "id", b, "type_id", 1, "Sequence", "id", "B", "type_id", 1, "special_tokens", b,
                         "id", b, "ids", (json_int_t)bos, "tokens", b);
    }
    if (!bpe || !normalizer || !decoder || !post) {
        json_decref(bpe); json_decref(normalizer); json_decref(decoder); json_decref(post);
        goto oom;
    }
    json_object_set_new(root, "version", json_string("1.0"));
    json_object_set_new(root, "truncation", json_null());
    json_object_set_new(root, "padding", json_null());
    json_object_set_new(root, "added_tokens", added);
    added = NULL;
    json_object_set_new(root, "normalizer", normalizer);
    json_object_set_new(root, "pre_tokenizer", json_null());
    json_object_set_new(root, "post_processor", post);
    json_object_set_new(root, "decoder", decoder);
    json_object_set_new(root, "model", bpe);
    if (!(*out = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER))) goto oom;
    goto done;
oom:
    rc = av_errf(err, AV_ENOMEM, "tokenizer.json: out of memory");
done:
    json_decref(root);
    json_decref(vocab);
    json_decref(merges);
    json_decref(added);
    av_strmap_release(&ids);
    free(mg);
    return rc;
}

/* ---- the folder ---- */

static int write_small(const char *dir, const char *name, const char *text, av_err *err) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return av_write_atomic(path, text, strlen(text), err);
}

static void fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) { fsync(fd); close(fd); }
}

static void remove_tmp_dir(const char *tmp) {
    DIR *d = opendir(tmp);
    if (d) {
        struct dirent *e;
        char p[4400];
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                snprintf(p, sizeof p, "%s/%s", tmp, e->d_name);
                unlink(p);
            }
        closedir(d);
    }
    rmdir(tmp);
}

int hf_write_folder(const av_model *m, const char *dir_in, av_progress_fn progress, void *ud, hf_folder_info *info,
                    av_err *err) {
    hf_folder_info dummy;
    if (!info) info = &dummy;
    memset(info, 0, sizeof *info);
    char dir[4000], tmp[4096];
    size_t dl = strlen(dir_in);
    while (dl > 1 && dir_in[dl - 1] == '/') dl--;
    if (dl == 0 || dl >= sizeof dir) return av_errf(err, AV_EINVAL, "%s: bad folder name", dir_in);
    memcpy(dir, dir_in, dl);
    dir[dl] = 0;
    struct stat st;
    if (stat(dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) return av_errf(err, AV_EINVAL, "%s: exists and is not a folder", dir);
        DIR *d = opendir(dir);
        struct dirent *e;
        int empty = 1;
        while (d && (e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) empty = 0;
        if (d) closedir(d);
        if (!empty) return av_errf(err, AV_EINVAL, "%s: folder exists and is not empty (remove it first)", dir);
    }
    char *config = NULL, *tok = NULL;
    int rc = config_json(m, &config, err);
    if (rc) { av_err_prefix(err, dir); return rc; }
    if ((rc = spm_tokenizer_json(m, &tok, info->note, sizeof info->note, err))) { free(config); av_err_prefix(err, dir); return rc; }
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", dir, (long)getpid());
    if (mkdir(tmp, 0755) != 0) {
        rc = av_errf(err, AV_EIO, "%s: cannot create %s: %s", dir, tmp, strerror(errno));
        free(config);
        free(tok);
        return rc;
    }
    /* model.safetensors: {"format": "pt"} first (transformers checks it), then the GGUF keys */
    av_model view = *m;
    av_kv *items = malloc((m->kv.n + 1) * sizeof *items);
    if (!items) { rc = av_errf(err, AV_ENOMEM, "%s: out of memory", dir); goto fail; }
    items[0].key = (char *)"format";
    items[0].val.type = AV_KV_STRING;
    items[0].val.str.s = (char *)"pt";
    items[0].val.str.len = 2;
    size_t k = 1;
    for (size_t i = 0; i < m->kv.n; i++)
        if (strcmp(m->kv.items[i].key, "format") != 0) items[k++] = m->kv.items[i];
    view.kv.items = items;
    view.kv.n = view.kv.cap = k;
    char path[4200];
    snprintf(path, sizeof path, "%s/model.safetensors", tmp);
    rc = write_small(tmp, "config.json", config, err);
    if (!rc && tok) rc = write_small(tmp, "tokenizer.json", tok, err);
    if (!rc) rc = st_write(&view, path, progress, ud, err);
    free(items);
    if (rc) goto fail;
    fsync_dir(tmp);
    if (rename(tmp, dir) != 0) {
        rc = av_errf(err, AV_EIO, "%s: cannot rename %s into place: %s", dir, tmp, strerror(errno));
        goto fail;
    }
    char parent[4096];
    snprintf(parent, sizeof parent, "%s", dir);
    char *slash = strrchr(parent, '/');
    if (slash) { if (slash == parent) slash[1] = 0; else *slash = 0; fsync_dir(parent); }
    else fsync_dir(".");
    info->wrote_tokenizer = tok != NULL;
    free(config);
    free(tok);
    return 0;
fail:
    remove_tmp_dir(tmp);
    free(config);
    free(tok);
    return rc;
}
