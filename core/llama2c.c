/* llama2c.c — llama2.c legacy (v0) checkpoints and tokenizer.bin.
 *
 * The output model is laid out as llama.cpp's convert-llama2c-to-ggml writes
 * it (same keys in the same order, same tensor names and order, a separate
 * output.weight even when the classifier is shared), so converting gives the
 * reference GGUF's bytes; docs/FORMATS.md lists the deliberate differences. */
#include "llama2c.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define L2C_HEADER 28
#define L2C_MAX_DIM (1 << 20) /* sanity bound for any header field */

int l2c_read_config(const void *buf, size_t size, const char *name, l2c_config *cfg, av_err *err) {
    int32_t h[7];
    if (size < L2C_HEADER)
        return av_errf(err, AV_EFORMAT, "%s: %zu bytes is too short for a llama2.c header (28 bytes)", name, size);
    memcpy(h, buf, sizeof h);
    static const char *const field[7] = { "dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len" };
    for (int i = 0; i < 7; i++) {
        int64_t v = i == 5 && h[i] < 0 ? -(int64_t)h[i] : h[i]; /* int64: -INT32_MIN overflows int32 */
        if (v <= 0 || v > L2C_MAX_DIM)
            return av_errf(err, AV_EFORMAT, "%s: header field %s = %d at offset %d is out of range (1..%d)",
                           name, field[i], (int)h[i], i * 4, L2C_MAX_DIM);
    }
    cfg->dim = h[0]; cfg->hidden_dim = h[1]; cfg->n_layers = h[2]; cfg->n_heads = h[3];
    cfg->n_kv_heads = h[4]; cfg->shared_classifier = h[5] > 0;
    cfg->vocab_size = h[5] > 0 ? h[5] : -h[5]; cfg->seq_len = h[6];
    if (cfg->dim % cfg->n_heads || cfg->n_heads % cfg->n_kv_heads || (cfg->dim / cfg->n_heads) % 2)
        return av_errf(err, AV_EFORMAT, "%s: dim %d, n_heads %d, n_kv_heads %d do not divide evenly into (even) heads",
                       name, cfg->dim, cfg->n_heads, cfg->n_kv_heads);
    /* expected size: every array below, in f32 (all counts < 2^62 given the bounds) */
    uint64_t d = (uint64_t)cfg->dim, hd = (uint64_t)cfg->hidden_dim, L = (uint64_t)cfg->n_layers;
    uint64_t kvd = d * (uint64_t)cfg->n_kv_heads / (uint64_t)cfg->n_heads, V = (uint64_t)cfg->vocab_size;
    uint64_t head = d / (uint64_t)cfg->n_heads;
    uint64_t floats = V * d + L * (2 * d + 2 * d * d + 2 * kvd * d + 3 * hd * d) + d
                    + (uint64_t)cfg->seq_len * head + (cfg->shared_classifier ? 0 : V * d);
    uint64_t want = L2C_HEADER + floats * 4;
    if (want != size)
        return av_errf(err, AV_EFORMAT, "%s: header (dim %d, hidden %d, layers %d, vocab %d, seq_len %d) implies %llu bytes but the file has %zu%s",
                       name, cfg->dim, cfg->hidden_dim, cfg->n_layers, cfg->vocab_size, cfg->seq_len,
                       (unsigned long long)want, size, want > size ? " (truncated?)" : " (trailing data or not a v0 checkpoint)");
    return 0;
}

/* llama.cpp's classification of llama2.c vocab entries (convert-llama2c-to-ggml) */
enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_BYTE = 6 };

int l2c_read_tokenizer(const char *path, int32_t n_vocab, av_kvs *kv, av_err *err) {
    av_map *map = NULL;
    int rc = av_map_open(path, &map, err);
    if (rc) return rc;
    const uint8_t *p = map->data;
    size_t size = map->size, pos = 4;
    char **toks = calloc((size_t)n_vocab, sizeof *toks);
    uint64_t *lens = calloc((size_t)n_vocab, sizeof *lens);
    float *scores = calloc((size_t)n_vocab, sizeof *scores);
    int32_t *types = calloc((size_t)n_vocab, sizeof *types);
    if (!toks || !lens || !scores || !types) { rc = av_errf(err, AV_ENOMEM, "%s: out of memory", path); goto done; }
    int32_t max_len;
    if (size < 4) { rc = av_errf(err, AV_EFORMAT, "%s: %zu bytes is too short for a tokenizer.bin header", path, size); goto done; }
    memcpy(&max_len, p, 4);
    if (max_len <= 0 || max_len > 65536) { rc = av_errf(err, AV_EFORMAT, "%s: max_token_length %d at offset 0 is out of range", path, max_len); goto done; }
    for (int32_t i = 0; i < n_vocab; i++) {
        int32_t len;
        if (size - pos < 8) {
            rc = av_errf(err, AV_EFORMAT, "%s: truncated at offset %zu: token %d of %d is missing", path, pos, i, n_vocab);
            goto done;
        }
        memcpy(&scores[i], p + pos, 4);
        memcpy(&len, p + pos + 4, 4);
        if (len < 0 || (size_t)len > size - pos - 8) {
            rc = av_errf(err, AV_EFORMAT, "%s: token %d at offset %zu has length %d but %zu bytes remain", path, i, pos + 4, len, size - pos - 8);
            goto done;
        }
        const char *text = (const char *)p + pos + 8;
        pos += 8 + (size_t)len;
        const char *fixed = NULL;
        if (i == 0) { fixed = "<unk>"; types[i] = TT_UNKNOWN; }
        else if (i == 1) { fixed = "<s>"; types[i] = TT_CONTROL; }
        else if (i == 2) { fixed = "</s>"; types[i] = TT_CONTROL; }
        else if (len == 0) types[i] = TT_CONTROL;
        else if (len >= 4 && !memcmp(text, "<0x", 3) && isxdigit((unsigned char)text[3])) types[i] = TT_BYTE;
        else types[i] = TT_NORMAL;
        if (fixed) len = (int32_t)strlen(fixed), text = fixed;
        /* llama2.c exports SentencePiece's U+2581 as ' '; GGUF keeps U+2581 */
        size_t spaces = 0;
        for (int32_t k = 0; k < len; k++) spaces += text[k] == ' ';
        char *t = malloc((size_t)len + 2 * spaces + 1);
        if (!t) { rc = av_errf(err, AV_ENOMEM, "%s: out of memory", path); goto done; }
        size_t o = 0;
        for (int32_t k = 0; k < len; k++) {
            if (text[k] == ' ') { memcpy(t + o, "\xe2\x96\x81", 3); o += 3; }
            else t[o++] = text[k];
        }
        t[o] = '\0';
        toks[i] = t;
        lens[i] = o;
    }
    if (pos != size) {
        rc = av_errf(err, AV_EFORMAT, "%s: %zu trailing bytes after %d tokens at offset %zu (vocabulary size mismatch?)",
                     path, size - pos, n_vocab, pos);
        goto done;
    }
    uint32_t none = UINT32_MAX;
    if (av_kvs_set_str_arr(kv, "tokenizer.ggml.tokens", (const char *const *)toks, lens, (uint64_t)n_vocab) ||
        av_kvs_set_arr(kv, "tokenizer.ggml.scores", AV_KV_F32, scores, (uint64_t)n_vocab) ||
        av_kvs_set_arr(kv, "tokenizer.ggml.token_type", AV_KV_I32, types, (uint64_t)n_vocab) ||
        av_kvs_set_str(kv, "tokenizer.ggml.model", "llama") ||
        av_kvs_set_str(kv, "general.architecture", "llama") ||
        av_kvs_set_str(kv, "general.name", "llama") ||
        av_kvs_set_u32(kv, "tokenizer.ggml.unknown_token_id", 0) ||
        av_kvs_set_u32(kv, "tokenizer.ggml.bos_token_id", 1) ||
        av_kvs_set_u32(kv, "tokenizer.ggml.eos_token_id", 2) ||
        av_kvs_set_u32(kv, "tokenizer.ggml.seperator_token_id", none) || /* sic: llama.cpp's key spelling */
        av_kvs_set_u32(kv, "tokenizer.ggml.padding_token_id", none))
        rc = av_errf(err, AV_ENOMEM, "%s: out of memory", path);
done:
    for (int32_t i = 0; toks && i < n_vocab; i++) free(toks[i]);
    free(toks);
    free(lens);
    free(scores);
    free(types);
    av_map_free(map);
    return rc;
}

static const char *base_name(const char *path, char *buf, size_t n) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    snprintf(buf, n, "%s", b);
    char *dot = strrchr(buf, '.');
    if (dot && dot != buf) *dot = '\0';
    return buf;
}

int l2c_read(const char *path, const char *tokenizer_path, av_model **out, av_err *err) {
    *out = NULL;
    av_map *map = NULL;
    av_model *m = NULL;
    l2c_config c;
    int rc = av_map_open(path, &map, err);
    if (rc) return rc;
    if ((rc = l2c_read_config(map->data, map->size, path, &c, err))) goto fail;
    if (!(m = av_model_new()) || av_model_hold_map(m, map)) { rc = av_errf(err, AV_ENOMEM, "%s: out of memory", path); goto fail; }
    m->format = AV_FMT_LLAMA2C;
    if (tokenizer_path && (rc = l2c_read_tokenizer(tokenizer_path, c.vocab_size, &m->kv, err))) goto fail;
    char nm[256];
    if (!tokenizer_path && av_kvs_set_str(&m->kv, "general.architecture", "llama")) goto oom;
    if (av_kvs_set_str(&m->kv, "general.name", base_name(path, nm, sizeof nm))) goto oom;
    const int64_t d = c.dim, hd = c.hidden_dim, L = c.n_layers, V = c.vocab_size;
    const int64_t kvd = d * c.n_kv_heads / c.n_heads, head = d / c.n_heads;
    if (av_kvs_set_u32(&m->kv, "llama.context_length", (uint32_t)c.seq_len) ||
        av_kvs_set_u32(&m->kv, "llama.embedding_length", (uint32_t)d) ||
        av_kvs_set_u32(&m->kv, "llama.feed_forward_length", (uint32_t)hd) ||
        av_kvs_set_u32(&m->kv, "llama.attention.head_count", (uint32_t)c.n_heads) ||
        av_kvs_set_u32(&m->kv, "llama.attention.head_count_kv", (uint32_t)c.n_kv_heads) ||
        av_kvs_set_u32(&m->kv, "llama.block_count", (uint32_t)L) ||
        av_kvs_set_u32(&m->kv, "llama.rope.dimension_count", (uint32_t)head) ||
        av_kvs_set_f32(&m->kv, "llama.attention.layer_norm_rms_epsilon", 1e-5f))
        goto oom;

    /* offsets (in floats) of each array in the file; per-layer arrays are [L, ...] */
    const float *f = (const float *)(map->data + L2C_HEADER);
    const float *emb = f, *p = f + V * d;
    const float *rms_att = p; p += L * d;
    const float *wq = p; p += L * d * d;
    const float *wk = p; p += L * kvd * d;
    const float *wv = p; p += L * kvd * d;
    const float *wo = p; p += L * d * d;
    const float *rms_ffn = p; p += L * d;
    const float *w1 = p; p += L * hd * d;
    const float *w2 = p; p += L * d * hd;
    const float *w3 = p; p += L * hd * d;
    const float *rms_final = p; p += d;
    p += (int64_t)c.seq_len * head; /* freq_cis_real + freq_cis_imag: recomputed at run time */
    const float *wcls = c.shared_classifier ? emb : p;

#define ADD(name, src_, ...) do { \
        int64_t sh_[] = { __VA_ARGS__ }; \
        av_tensor *t_ = av_model_add_tensor(m, name, AV_F32, (int)(sizeof sh_ / sizeof sh_[0]), sh_, src_, NULL); \
        if (!t_) goto oom; \
        t_->file_offset = (uint64_t)((const uint8_t *)(src_) - map->data); \
    } while (0)
    ADD("token_embd.weight", emb, V, d);
    ADD("output_norm.weight", rms_final, d);
    ADD("output.weight", wcls, V, d);
    for (int64_t l = 0; l < L; l++) {
        char n[64];
#define NAME(s) (snprintf(n, sizeof n, "blk.%lld." s, (long long)l), n)
        ADD(NAME("attn_q.weight"), wq + l * d * d, d, d);
        ADD(NAME("attn_k.weight"), wk + l * kvd * d, kvd, d);
        ADD(NAME("attn_v.weight"), wv + l * kvd * d, kvd, d);
        ADD(NAME("attn_output.weight"), wo + l * d * d, d, d);
        ADD(NAME("attn_norm.weight"), rms_att + l * d, d);
        ADD(NAME("ffn_gate.weight"), w1 + l * hd * d, hd, d);
        ADD(NAME("ffn_down.weight"), w2 + l * d * hd, d, hd);
        ADD(NAME("ffn_up.weight"), w3 + l * hd * d, hd, d);
        ADD(NAME("ffn_norm.weight"), rms_ffn + l * d, d);
#undef NAME
    }
#undef ADD
    av_map_free(map);
    *out = m;
    return 0;
oom:
    rc = av_errf(err, AV_ENOMEM, "%s: out of memory", path);
fail:
    av_model_free(m);
    av_map_free(map);
    return rc;
}
