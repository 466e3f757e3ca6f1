/* tok.c — the tokenizer object: building it (GGUF metadata, llama2.c
 * tokenizer.bin, dispatch to the other loaders), the encode driver (special
 * token partition, BOS/EOS, SPM space prefix) and decode, as llama.cpp's
 * llama-vocab.cpp does them. Per-kind encoders live in tok_spm/bpe/wpm.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "io.h"
#include "llama2c.h"
#include "tok_impl.h"
#include "unicode.h"

/* ---- GPT-2 bytes <-> unicode ---------------------------------------------- */

const uint16_t tok_byte_to_cp[256] = {
    256, 257, 258, 259, 260, 261, 262, 263, 264, 265, 266, 267, 268, 269, 270, 271,
    272, 273, 274, 275, 276, 277, 278, 279, 280, 281, 282, 283, 284, 285, 286, 287,
    288, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47,
    48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63,
    64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79,
    80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95,
    96, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111,
    112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 289,
    290, 291, 292, 293, 294, 295, 296, 297, 298, 299, 300, 301, 302, 303, 304, 305,
    306, 307, 308, 309, 310, 311, 312, 313, 314, 315, 316, 317, 318, 319, 320, 321,
    322, 161, 162, 163, 164, 165, 166, 167, 168, 169, 170, 171, 172, 323, 174, 175,
    176, 177, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 190, 191,
    192, 193, 194, 195, 196, 197, 198, 199, 200, 201, 202, 203, 204, 205, 206, 207,
    208, 209, 210, 211, 212, 213, 214, 215, 216, 217, 218, 219, 220, 221, 222, 223,
    224, 225, 226, 227, 228, 229, 230, 231, 232, 233, 234, 235, 236, 237, 238, 239,
    240, 241, 242, 243, 244, 245, 246, 247, 248, 249, 250, 251, 252, 253, 254, 255,
};

int tok_cp_to_byte(uint32_t cp) {
    if (cp < 256) return tok_byte_to_cp[cp] == cp ? (int)cp : -1;
    if (cp < 256 + 33) return (int)(cp - 256);             /* bytes 0..32 */
    if (cp < 256 + 67) return (int)(cp - 256 - 33 + 127);  /* bytes 127..160 */
    if (cp == 256 + 67) return 173;
    return -1;
}

/* ---- lifetime --------------------------------------------------------------- */

tok *tok_alloc(void) {
    tok *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    av_strmap_init(&t->text_to_id);
    av_u64map_init(&t->merges);
    t->bos = t->eos = t->unk = t->sep = t->pad = t->cls = t->mask = t->eot = -1;
    for (int b = 0; b < 256; b++) t->byte_tok[b] = -1;
    return t;
}

void tok_free(tok *t) {
    if (!t) return;
    for (int32_t i = 0; t->text && i < t->n_vocab; i++) free(t->text[i].s);
    free(t->text);
    free(t->scores);
    free(t->types);
    av_strmap_release(&t->text_to_id);
    av_u64map_release(&t->merges);
    free(t->pre_name);
    tok_pre_free(t->pre);
    free(t->special);
    free(t->attr);
    free(t);
}

int tok_push(int32_t **ids, size_t *len, size_t *cap, int32_t id) {
    if (*len == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        int32_t *p = realloc(*ids, nc * sizeof *p);
        if (!p) return AV_ENOMEM;
        *ids = p;
        *cap = nc;
    }
    (*ids)[(*len)++] = id;
    return 0;
}

static int name_is(const char *s, const char *const *list) {
    for (; s && *list; list++)
        if (!strcmp(s, *list)) return 1;
    return 0;
}

void tok_defaults(tok *t) {
    static const char *const bpe_keep_spaces[] = {
        "deepseek-llm", "deepseek-coder", "deepseek-v3", "spark2_5", "youtu", "command-r", "qwen2",
        "deepseek-r1-qwen", "kormo", "f2llmv2", "qwen35", "poro-chat", "viking", "tekken", "smollm",
        "chameleon", "gpt-4o", "llama4", "kanana2", "talkie", "granite-embed-multi-97m", "tiny_aya",
        "cohere2moe", "superbpe", "trillion", "granite-docling", "bailingmoe", "bailingmoe2", "llada-moe",
        "seed-coder", "hunyuan", "hunyuan-dense", "hy_v4", "joyai-llm", "kimi-k2", "ufakzeka", "grok-2",
        "afmoe", "laguna", "minimax-m2", "solar-open", "sarvam-moe", NULL };
    static const char *const bpe_add_bos[] = {
        "llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
        "jina-v5-nano", "tekken", "chameleon", NULL };
    static const char *const bpe_ignore_merges[] = {
        "llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
        "jina-v5-nano", "tekken", "youtu", "minicpm5", "granite-embed-multi-97m", NULL };
    t->add_bos = t->add_eos = t->add_sep = t->add_space_prefix = t->clean_spaces = t->ignore_merges = 0;
    t->bos = t->eos = t->unk = t->sep = t->pad = t->cls = t->mask = t->eot = -1;
    switch (t->kind) {
    case TOK_SPM:
        t->bos = 1, t->eos = 2, t->unk = 0;
        t->add_space_prefix = 1, t->add_bos = 1;
        break;
    case TOK_BPE:
        t->bos = 11, t->eos = 11;
        t->clean_spaces = !name_is(t->pre_name, bpe_keep_spaces);
        t->add_bos = name_is(t->pre_name, bpe_add_bos);
        t->ignore_merges = name_is(t->pre_name, bpe_ignore_merges);
        if (name_is(t->pre_name, (const char *const[]){ "glm4", "chatglm-bpe", NULL })) t->bos = -1;
        if (name_is(t->pre_name, (const char *const[]){ "jina-v1-en", "jina-v2-code", "roberta-bpe", NULL }))
            t->add_sep = 1;
        break;
    case TOK_WPM:
        t->bos = 101, t->unk = 100, t->sep = 102, t->pad = 0, t->mask = 103;
        t->clean_spaces = 1, t->add_bos = 1, t->add_sep = 1;
        break;
    }
}

/* texts llama.cpp forces to CONTROL (EOG/EOT/EOM/FIM detection by text) */
static const char *const forced_control[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<EOT>",
    "_<EOT>", "[EOT]", "<\xef\xbd\x9c" "end\xe2\x96\x81" "of\xe2\x96\x81" "sentence\xef\xbd\x9c>",
    "<end_of_utterance>", "<|eom_id|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>", "</s>", "[EOS]",
    "<eos>", "<turn|>", "<|tool_response>", "[e~[",
    "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<PRE>", "\xe2\x96\x81<PRE>", "<|code_prefix|>",
    "<|prefix|>", "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<SUF>", "\xe2\x96\x81<SUF>",
    "<|code_suffix|>", "<|suffix|>", "<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<MID>",
    "\xe2\x96\x81<MID>", "<|code_middle|>", "<|middle|>", "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>",
    "[PAD]", "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>", "<|file_sep|>",
    "<\xef\xbd\x9c" "fim\xe2\x96\x81" "begin\xef\xbd\x9c>", "<\xef\xbd\x9c" "fim\xe2\x96\x81" "hole\xef\xbd\x9c>",
    "<\xef\xbd\x9c" "fim\xe2\x96\x81" "end\xef\xbd\x9c>", NULL };

static uint32_t attr_of_type(int32_t type) {
    switch (type) {
    case TOK_TYPE_UNKNOWN: return TOK_ATTR_UNKNOWN;
    case TOK_TYPE_UNUSED: return TOK_ATTR_UNUSED;
    case TOK_TYPE_NORMAL: return TOK_ATTR_NORMAL;
    case TOK_TYPE_CONTROL: return TOK_ATTR_CONTROL;
    case TOK_TYPE_USER_DEFINED: return TOK_ATTR_USER_DEFINED;
    case TOK_TYPE_BYTE: return TOK_ATTR_BYTE;
    default: return TOK_ATTR_UNDEFINED;
    }
}

static int cmp_special(const void *a, const void *b, void *ctx) { /* longest first, then by id */
    const tok *t = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    uint64_t lx = t->text[x].len, ly = t->text[y].len;
    if (lx != ly) return lx > ly ? -1 : 1;
    return x < y ? -1 : x > y;
}

int tok_finish(tok *t, const char *name, av_err *err) {
    if (t->n_vocab <= 0 || !t->text) return av_errf(err, AV_EFORMAT, "%s: empty vocabulary", name);
    if (!t->types) {
        if (!(t->types = malloc((size_t)t->n_vocab * sizeof *t->types))) goto oom;
        for (int32_t i = 0; i < t->n_vocab; i++) t->types[i] = TOK_TYPE_NORMAL;
    }
    free(t->attr);
    if (!(t->attr = malloc((size_t)t->n_vocab * sizeof *t->attr))) goto oom;
    t->max_token_len = 0;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        const av_str *s = &t->text[i];
        if (s->len > INT32_MAX) return av_errf(err, AV_EFORMAT, "%s: token %d is %llu bytes long", name, i,
                                                (unsigned long long)s->len);
        if ((int32_t)s->len > t->max_token_len) t->max_token_len = (int32_t)s->len;
        t->attr[i] = attr_of_type(t->types[i]);
        if (s->len == 0) continue; /* never matches text */
        int32_t prev = av_strmap_get(&t->text_to_id, s->s, s->len);
        if (prev >= 0 && prev != i)
            return av_errf(err, AV_EFORMAT, "%s: duplicate token '%s' has ids %d and %d", name, s->s, prev, i);
        if (av_strmap_put(&t->text_to_id, s->s, s->len, i)) goto oom;
        char c0 = s->s[0];
        if ((c0 == '<' || c0 == '[' || c0 == '_' || c0 == '\xe2') && strlen(s->s) == s->len) {
            if (name_is(s->s, forced_control)) t->attr[i] |= TOK_ATTR_CONTROL;
            if (name_is(s->s, (const char *const[]){ "<|channel|>", "<|message|>", "<|start|>", "<|constrain|>", NULL }))
                t->attr[i] = TOK_ATTR_USER_DEFINED;
        }
    }
    /* special ids out of range are dropped (llama.cpp warns and disables them) */
    int32_t *ids[] = { &t->bos, &t->eos, &t->unk, &t->sep, &t->pad, &t->cls, &t->mask, &t->eot };
    for (size_t k = 0; k < sizeof ids / sizeof ids[0]; k++)
        if (*ids[k] >= t->n_vocab) *ids[k] = -1;
    for (int b = 0; b < 256; b++) {
        char buf[8];
        int32_t id = -1;
        if (t->kind == TOK_SPM) {
            static const char hex[] = "0123456789ABCDEF";
            char h[7] = { '<', '0', 'x', hex[b >> 4], hex[b & 15], '>', 0 };
            id = av_strmap_get(&t->text_to_id, h, 6);
            if (id < 0) { buf[0] = (char)b; id = av_strmap_get(&t->text_to_id, buf, 1); }
        } else {
            size_t n = av_utf8_put(tok_byte_to_cp[b], buf);
            id = av_strmap_get(&t->text_to_id, buf, n);
        }
        t->byte_tok[b] = id;
    }
    free(t->special);
    t->special = NULL;
    t->n_special = 0;
    for (int32_t i = 0; i < t->n_vocab; i++)
        if (t->attr[i] & (TOK_ATTR_CONTROL | TOK_ATTR_USER_DEFINED | TOK_ATTR_UNKNOWN)) t->n_special++;
    if (t->n_special) {
        if (!(t->special = malloc(t->n_special * sizeof *t->special))) goto oom;
        size_t k = 0;
        for (int32_t i = 0; i < t->n_vocab; i++)
            if (t->attr[i] & (TOK_ATTR_CONTROL | TOK_ATTR_USER_DEFINED | TOK_ATTR_UNKNOWN)) t->special[k++] = i;
        qsort_r(t->special, t->n_special, sizeof *t->special, cmp_special, t);
    }
    return 0;
oom:
    return av_errf(err, AV_ENOMEM, "%s: out of memory building the vocabulary", name);
}

/* ---- GGUF metadata ------------------------------------------------------------ */

static const av_array *get_arr(const av_kvs *kv, const char *key) {
    const av_kv *e = av_kvs_find(kv, key);
    return e && e->val.type == AV_KV_ARRAY ? &e->val.arr : NULL;
}

static void get_flag(const av_kvs *kv, const char *key, int *out) {
    uint64_t v;
    if (!av_kvs_get_u64(kv, key, &v)) *out = v != 0;
}

static void get_id(const av_kvs *kv, const char *key, int32_t n_vocab, int32_t *out) {
    uint64_t v;
    if (!av_kvs_get_u64(kv, key, &v) && v < (uint64_t)n_vocab) *out = (int32_t)v;
}

static int contains_ci(const char *s, const char *sub) {
    size_t n = strlen(sub);
    for (; s && *s; s++) {
        size_t i = 0;
        while (i < n && s[i] && (s[i] | 0x20) == (sub[i] | 0x20)) i++;
        if (i == n) return 1;
    }
    return 0;
}

int tok_from_kv(const av_kvs *kv, const char *name, tok **out, av_err *err) {
    *out = NULL;
    const char *model = NULL, *pre = NULL, *gname = NULL;
    if (av_kvs_get_str(kv, "tokenizer.ggml.model", &model))
        return av_errf(err, AV_EFORMAT, "%s: no tokenizer.ggml.model string", name);
    tok_kind kind;
    if (!strcmp(model, "llama")) kind = TOK_SPM;
    else if (!strcmp(model, "gpt2")) kind = TOK_BPE;
    else if (!strcmp(model, "bert")) kind = TOK_WPM;
    else return av_errf(err, AV_EUNSUPPORTED, "%s: tokenizer model '%s' is not supported (llama, gpt2, bert)", name, model);
    const av_array *toks = get_arr(kv, "tokenizer.ggml.tokens");
    if (!toks || toks->elem != AV_KV_STRING)
        return av_errf(err, AV_EFORMAT, "%s: tokenizer.ggml.tokens is missing or not an array of strings", name);
    if (toks->n == 0 || toks->n > INT32_MAX)
        return av_errf(err, AV_EFORMAT, "%s: tokenizer.ggml.tokens has %llu entries", name, (unsigned long long)toks->n);
    int32_t n = (int32_t)toks->n;
    const av_array *sc = get_arr(kv, "tokenizer.ggml.scores");
    if (sc && ((sc->elem != AV_KV_F32 && sc->elem != AV_KV_I32) || sc->n < toks->n))
        return av_errf(err, AV_EFORMAT, "%s: tokenizer.ggml.scores must be f32/i32 with >= %d entries", name, n);
    const av_array *ty = get_arr(kv, "tokenizer.ggml.token_type");
    if (ty && (ty->elem != AV_KV_I32 || ty->n < toks->n))
        return av_errf(err, AV_EFORMAT, "%s: tokenizer.ggml.token_type must be i32 with >= %d entries", name, n);
    av_kvs_get_str(kv, "tokenizer.ggml.pre", &pre);
    av_kvs_get_str(kv, "general.name", &gname);

    int rc;
    tok *t = tok_alloc();
    if (!t) goto oom;
    t->kind = kind;
    if (pre && !(t->pre_name = strdup(pre))) goto oom;
    if (!(t->text = calloc((size_t)n, sizeof *t->text))) goto oom;
    t->n_vocab = n;
    const av_str *ts = toks->data;
    for (int32_t i = 0; i < n; i++) {
        if (!(t->text[i].s = malloc(ts[i].len + 1))) goto oom;
        memcpy(t->text[i].s, ts[i].s, ts[i].len);
        t->text[i].s[ts[i].len] = 0;
        t->text[i].len = ts[i].len;
    }
    if (sc) {
        if (!(t->scores = malloc((size_t)n * sizeof *t->scores))) goto oom;
        for (int32_t i = 0; i < n; i++)
            t->scores[i] = sc->elem == AV_KV_F32 ? ((const float *)sc->data)[i] : (float)((const int32_t *)sc->data)[i];
    }
    if (ty) {
        if (!(t->types = malloc((size_t)n * sizeof *t->types))) goto oom;
        memcpy(t->types, ty->data, (size_t)n * sizeof *t->types);
    }
    tok_defaults(t);
    get_flag(kv, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix);
    get_flag(kv, "tokenizer.ggml.remove_extra_whitespaces", &t->remove_extra_ws);
    get_id(kv, "tokenizer.ggml.bos_token_id", n, &t->bos);
    get_id(kv, "tokenizer.ggml.eos_token_id", n, &t->eos);
    get_id(kv, "tokenizer.ggml.eot_token_id", n, &t->eot);
    get_id(kv, "tokenizer.ggml.unknown_token_id", n, &t->unk);
    get_id(kv, "tokenizer.ggml.seperator_token_id", n, &t->sep);
    get_id(kv, "tokenizer.ggml.padding_token_id", n, &t->pad);
    get_id(kv, "tokenizer.ggml.mask_token_id", n, &t->mask);
    get_id(kv, "tokenizer.ggml.cls_token_id", n, &t->cls);
    get_flag(kv, "tokenizer.ggml.add_bos_token", &t->add_bos);
    get_flag(kv, "tokenizer.ggml.add_eos_token", &t->add_eos);
    get_flag(kv, "tokenizer.ggml.add_sep_token", &t->add_sep);
    if ((rc = tok_finish(t, name, err))) goto fail;
    if (t->add_bos && t->bos < 0 && kind != TOK_WPM) {
        rc = av_errf(err, AV_EFORMAT, "%s: tokenizer.ggml.add_bos_token is true, but there is no BOS token", name);
        goto fail;
    }
    if (t->add_eos && t->eos < 0) {
        rc = av_errf(err, AV_EFORMAT, "%s: tokenizer.ggml.add_eos_token is true, but there is no EOS token", name);
        goto fail;
    }

    if (kind == TOK_BPE) {
        const av_array *mg = get_arr(kv, "tokenizer.ggml.merges");
        if (!mg || mg->elem != AV_KV_STRING) {
            rc = av_errf(err, AV_EFORMAT, "%s: tokenizer.ggml.merges is missing or not an array of strings", name);
            goto fail;
        }
        const av_str *ms = mg->data;
        for (uint64_t i = 0; i < mg->n; i++) {
            const char *sp = ms[i].len > 1 ? memchr(ms[i].s + 1, ' ', ms[i].len - 1) : NULL;
            if (!sp) {
                rc = av_errf(err, AV_EFORMAT, "%s: merge %llu '%s' is not two tokens separated by a space", name,
                             (unsigned long long)i, ms[i].s);
                goto fail;
            }
            size_t ll = (size_t)(sp - ms[i].s);
            int32_t a = av_strmap_get(&t->text_to_id, ms[i].s, ll);
            int32_t b = av_strmap_get(&t->text_to_id, sp + 1, ms[i].len - ll - 1);
            if (a < 0 || b < 0) {
                rc = av_errf(err, AV_EFORMAT, "%s: merge %llu '%s' names a token that is not in the vocabulary", name,
                             (unsigned long long)i, ms[i].s);
                goto fail;
            }
            uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
            int64_t old;
            if (!av_u64map_get(&t->merges, key, &old) && av_u64map_put(&t->merges, key, (int64_t)i)) goto oom;
        }
        if ((rc = tok_pre_new(t->pre_name ? t->pre_name : "default", &t->pre, err))) {
            av_err_prefix(err, name);
            goto fail;
        }
    }

    /* per-model token attributes llama.cpp sets by name */
    if (contains_ci(pre, "jina-v2-de") || contains_ci(pre, "jina-v2-es") || contains_ci(pre, "jina-v2-code")) {
        int32_t id = av_strmap_get(&t->text_to_id, "<mask>", 6);
        if (id >= 0) t->attr[id] |= TOK_ATTR_LSTRIP;
    } else if (contains_ci(gname, "phi-3") || contains_ci(gname, "phi3")) {
        for (size_t k = 0; k < t->n_special; k++) t->attr[t->special[k]] |= TOK_ATTR_RSTRIP;
        static const char *const off[] = { "<unk>", "<s>", "<|endoftext|>" };
        int32_t id = av_strmap_get(&t->text_to_id, "</s>", 4);
        if (id >= 0) t->attr[id] |= TOK_ATTR_RSTRIP;
        for (size_t k = 0; k < 3; k++)
            if ((id = av_strmap_get(&t->text_to_id, off[k], strlen(off[k]))) >= 0) t->attr[id] &= ~(uint32_t)TOK_ATTR_RSTRIP;
    } else if (contains_ci(gname, "modern-bert")) {
        int32_t id = av_strmap_get(&t->text_to_id, "[MASK]", 6);
        if (id >= 0) t->attr[id] |= TOK_ATTR_LSTRIP;
    }
    *out = t;
    return 0;
oom:
    rc = av_errf(err, AV_ENOMEM, "%s: out of memory reading the vocabulary", name);
fail:
    tok_free(t);
    return rc;
}

int tok_to_kv(const tok *t, av_kvs *kv, av_err *err) {
    /* drop every tokenizer.ggml.* key first: what we write replaces them all */
    for (size_t i = kv->n; i-- > 0;)
        if (!strncmp(kv->items[i].key, "tokenizer.ggml.", 15)) {
            char key[256];
            snprintf(key, sizeof key, "%s", kv->items[i].key);
            av_kvs_remove(kv, key);
        }
    const char *model = t->kind == TOK_SPM ? "llama" : t->kind == TOK_BPE ? "gpt2" : "bert";
    const char **strs = malloc((size_t)t->n_vocab * sizeof *strs);
    uint64_t *lens = malloc((size_t)t->n_vocab * sizeof *lens);
    char **merges = NULL;
    uint64_t n_merges = 0;
    int rc = AV_ENOMEM;
    if (!strs || !lens) goto done;
    for (int32_t i = 0; i < t->n_vocab; i++) strs[i] = t->text[i].s, lens[i] = t->text[i].len;
    if (av_kvs_set_str(kv, "tokenizer.ggml.model", model) ||
        (t->pre_name && av_kvs_set_str(kv, "tokenizer.ggml.pre", t->pre_name)) ||
        av_kvs_set_str_arr(kv, "tokenizer.ggml.tokens", strs, lens, (uint64_t)t->n_vocab) ||
        (t->scores && av_kvs_set_arr(kv, "tokenizer.ggml.scores", AV_KV_F32, t->scores, (uint64_t)t->n_vocab)) ||
        av_kvs_set_arr(kv, "tokenizer.ggml.token_type", AV_KV_I32, t->types, (uint64_t)t->n_vocab))
        goto done;
    if (t->kind == TOK_BPE && t->merges.n) {
        int64_t max_rank = -1;
        for (size_t i = 0; i < t->merges.cap; i++)
            if (t->merges.used[i] && t->merges.vals[i] > max_rank) max_rank = t->merges.vals[i];
        n_merges = (uint64_t)(max_rank + 1);
        if (!(merges = calloc(n_merges, sizeof *merges))) goto done;
        for (size_t i = 0; i < t->merges.cap; i++) {
            if (!t->merges.used[i]) continue;
            uint32_t a = (uint32_t)(t->merges.keys[i] >> 32), b = (uint32_t)t->merges.keys[i];
            size_t la = t->text[a].len, lb = t->text[b].len;
            char *m = malloc(la + lb + 2);
            if (!m) goto done;
            memcpy(m, t->text[a].s, la);
            m[la] = ' ';
            memcpy(m + la + 1, t->text[b].s, lb);
            m[la + lb + 1] = 0;
            merges[t->merges.vals[i]] = m;
        }
        for (uint64_t i = 0; i < n_merges; i++)
            if (!merges[i] && !(merges[i] = strdup(""))) goto done; /* rank gap (not from a GGUF) */
        if (av_kvs_set_str_arr(kv, "tokenizer.ggml.merges", (const char *const *)merges, NULL, n_merges)) goto done;
    }
    struct { const char *key; int32_t id; } ids[] = {
        { "tokenizer.ggml.bos_token_id", t->bos }, { "tokenizer.ggml.eos_token_id", t->eos },
        { "tokenizer.ggml.eot_token_id", t->eot }, { "tokenizer.ggml.unknown_token_id", t->unk },
        { "tokenizer.ggml.seperator_token_id", t->sep }, { "tokenizer.ggml.padding_token_id", t->pad },
        { "tokenizer.ggml.cls_token_id", t->cls }, { "tokenizer.ggml.mask_token_id", t->mask } };
    for (size_t k = 0; k < sizeof ids / sizeof ids[0]; k++)
        if (ids[k].id >= 0 && av_kvs_set_u32(kv, ids[k].key, (uint32_t)ids[k].id)) goto done;
    if (av_kvs_set_bool(kv, "tokenizer.ggml.add_bos_token", t->add_bos) ||
        av_kvs_set_bool(kv, "tokenizer.ggml.add_eos_token", t->add_eos))
        goto done;
    if (t->kind == TOK_SPM && (av_kvs_set_bool(kv, "tokenizer.ggml.add_space_prefix", t->add_space_prefix) ||
                               (t->remove_extra_ws && av_kvs_set_bool(kv, "tokenizer.ggml.remove_extra_whitespaces", 1))))
        goto done;
    rc = 0;
done:
    for (uint64_t i = 0; merges && i < n_merges; i++) free(merges[i]);
    free(merges);
    free(strs);
    free(lens);
    if (rc) av_errf(err, rc, "tokenizer metadata: out of memory");
    return rc;
}

/* ---- loading files ------------------------------------------------------------ */

/* llama2.c tokenizer.bin does not store its size: count the entries. */
static int l2c_count(const char *path, int32_t *n, av_err *err) {
    av_map *m = NULL;
    int rc = av_map_open(path, &m, err);
    if (rc) return rc;
    size_t pos = 4, size = m->size;
    int64_t count = 0;
    if (size < 4) rc = av_errf(err, AV_EFORMAT, "%s: %zu bytes is too short for a tokenizer.bin header", path, size);
    while (!rc && pos < size) {
        int32_t len;
        if (size - pos < 8) {
            rc = av_errf(err, AV_EFORMAT, "%s: truncated token entry at offset %zu", path, pos);
            break;
        }
        memcpy(&len, m->data + pos + 4, 4);
        if (len < 0 || (size_t)len > size - pos - 8) {
            rc = av_errf(err, AV_EFORMAT, "%s: token %lld at offset %zu has length %d but %zu bytes remain", path,
                         (long long)count, pos + 4, len, size - pos - 8);
            break;
        }
        pos += 8 + (size_t)len;
        if (++count > INT32_MAX) rc = av_errf(err, AV_EFORMAT, "%s: too many tokens", path);
    }
    if (!rc && count == 0) rc = av_errf(err, AV_EFORMAT, "%s: no tokens", path);
    av_map_free(m);
    *n = (int32_t)count;
    return rc;
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

int tok_load(const char *path, tok **out, av_err *err) {
    *out = NULL;
    if (av_has_ext(path, ".json")) return tok_load_hfjson(path, out, err);
    if (av_has_ext(path, ".tiktoken")) return tok_load_tiktoken(path, out, err);
    int rc;
    unsigned char magic[4] = { 0 };
    {
        av_map *m = NULL;
        if ((rc = av_map_open(path, &m, err))) return rc;
        if (m->size >= 4) memcpy(magic, m->data, 4);
        av_map_free(m);
    }
    if (!memcmp(magic, "GGUF", 4) || ends_with(path, ".gguf")) {
        av_model *m = NULL;
        if ((rc = gguf_read(path, &m, err))) return rc;
        rc = tok_from_kv(&m->kv, path, out, err);
        av_model_free(m);
        return rc;
    }
    int32_t n;
    if ((rc = l2c_count(path, &n, err))) return rc;
    av_kvs kv;
    av_kvs_init(&kv);
    if (!(rc = l2c_read_tokenizer(path, n, &kv, err))) rc = tok_from_kv(&kv, path, out, err);
    av_kvs_release(&kv);
    return rc;
}

/* ---- encode --------------------------------------------------------------------- */

typedef struct frag {
    int32_t id;        /* >= 0: a special token; -1: raw text [off, off+len) */
    size_t off, len;
} frag;

typedef struct frags {
    frag *v;
    size_t n, cap;
} frags;

static int frag_push(frags *f, int32_t id, size_t off, size_t len) {
    if (f->n == f->cap) {
        size_t nc = f->cap ? f->cap * 2 : 16;
        frag *p = realloc(f->v, nc * sizeof *p);
        if (!p) return AV_ENOMEM;
        f->v = p;
        f->cap = nc;
    }
    f->v[f->n++] = (frag){ id, off, len };
    return 0;
}

static int c_isspace(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

/* llama.cpp's tokenizer_st_partition: split raw fragments on each special
 * token's text, longest tokens first, honouring LSTRIP/RSTRIP. */
static int st_partition(const tok *t, const char *text, frags *f, int parse_special) {
    frags nf = { 0 };
    for (size_t k = 0; k < t->n_special; k++) {
        int32_t sid = t->special[k];
        uint32_t attr = t->attr[sid];
        if (!parse_special && (attr & (TOK_ATTR_CONTROL | TOK_ATTR_UNKNOWN))) continue;
        const char *st = t->text[sid].s;
        size_t sl = t->text[sid].len;
        if (!sl) continue;
        nf.n = 0;
        int changed = 0;
        for (size_t i = 0; i < f->n; i++) {
            frag fr = f->v[i];
            if (fr.id >= 0) { if (frag_push(&nf, fr.id, 0, 0)) goto oom; continue; }
            size_t base = fr.off, end = fr.off + fr.len;
            for (;;) {
                const char *m = end - base >= sl ? memmem(text + base, end - base, st, sl) : NULL;
                if (!m) {
                    if (end > base && frag_push(&nf, -1, base, end - base)) goto oom;
                    break;
                }
                changed = 1;
                size_t mpos = (size_t)(m - text), llen = mpos - base;
                if (attr & TOK_ATTR_LSTRIP)
                    while (llen > 0 && c_isspace(text[base + llen - 1])) llen--;
                if (llen > 0 && frag_push(&nf, -1, base, llen)) goto oom;
                if (frag_push(&nf, sid, 0, 0)) goto oom;
                base = mpos + sl;
                if (attr & TOK_ATTR_RSTRIP)
                    while (base < end && c_isspace(text[base])) base++;
                if (base >= end) break;
            }
        }
        if (changed) { frags tmp = *f; *f = nf; nf = tmp; }
    }
    free(nf.v);
    return 0;
oom:
    free(nf.v);
    return AV_ENOMEM;
}

static int encode(const tok *t, const char *text, size_t len, const tok_opts *o, int continued, int32_t **ids, size_t *n,
                  av_err *err) {
    *ids = NULL;
    *n = 0;
    int add_special = o ? o->add_special : 0, parse_special = o ? o->parse_special : 0;
    frags f = { 0 };
    int32_t *out = NULL;
    size_t no = 0, cap = 0;
    char *buf = NULL;
    size_t buf_cap = 0;
    int rc = AV_ENOMEM;
    if (len > 0 && (frag_push(&f, -1, 0, len) || st_partition(t, text, &f, parse_special))) goto done;

    if (add_special && (t->kind == TOK_WPM || t->add_bos)) {
        if (t->bos < 0) { rc = av_errf(err, AV_EINVAL, "tokenizer: the vocabulary asks for BOS but has none"); goto done; }
        if (tok_push(&out, &no, &cap, t->bos)) goto done;
    }
    int prev_special = !continued; /* SPM: space prefix on the first fragment and after special tokens */
    for (size_t i = 0; i < f.n; i++) {
        if (f.v[i].id >= 0) {
            if (tok_push(&out, &no, &cap, f.v[i].id)) goto done;
            prev_special = 1;
            continue;
        }
        const char *s = text + f.v[i].off;
        size_t sl = f.v[i].len;
        int r;
        if (t->kind == TOK_SPM) {
            /* escape ' ' as U+2581 (3 bytes), with the optional leading one */
            size_t need = 3 * (sl + 1);
            if (need > buf_cap) {
                char *p = realloc(buf, need);
                if (!p) goto done;
                buf = p;
                buf_cap = need;
            }
            size_t bl = 0;
            if (t->add_space_prefix && prev_special) memcpy(buf, "\xe2\x96\x81", 3), bl = 3;
            for (size_t k = 0; k < sl; k++) {
                if (s[k] == ' ') memcpy(buf + bl, "\xe2\x96\x81", 3), bl += 3;
                else buf[bl++] = s[k];
            }
            r = tok_spm_encode(t, buf, bl, &out, &no, &cap);
        } else if (t->kind == TOK_BPE) {
            r = tok_bpe_encode(t, s, sl, &out, &no, &cap);
        } else {
            r = tok_wpm_encode(t, s, sl, &out, &no, &cap);
        }
        if (r) { rc = r; goto done; }
        prev_special = 0;
    }
    if (add_special && t->kind != TOK_WPM && t->add_eos) {
        if (t->eos < 0) { rc = av_errf(err, AV_EINVAL, "tokenizer: the vocabulary asks for EOS but has none"); goto done; }
        if (tok_push(&out, &no, &cap, t->eos)) goto done;
    }
    if (add_special && t->kind == TOK_WPM) {
        if (t->sep < 0) { rc = av_errf(err, AV_EINVAL, "tokenizer: the vocabulary asks for SEP but has none"); goto done; }
        if (tok_push(&out, &no, &cap, t->sep)) goto done;
    }
    rc = 0;
done:
    free(f.v);
    free(buf);
    if (rc) {
        free(out);
        if (rc == AV_ENOMEM) av_errf(err, rc, "tokenizer: out of memory encoding %zu bytes", len);
        return rc;
    }
    if (!out) out = malloc(sizeof *out); /* a valid pointer even for 0 ids */
    if (!out) return av_errf(err, AV_ENOMEM, "tokenizer: out of memory");
    *ids = out;
    *n = no;
    return 0;
}

int tok_encode(const tok *t, const char *text, size_t len, const tok_opts *o, int32_t **ids, size_t *n, av_err *err) {
    return encode(t, text, len, o, 0, ids, n, err);
}

int tok_encode_continued(const tok *t, const char *text, size_t len, const tok_opts *o, int32_t **ids, size_t *n,
                         av_err *err) {
    return encode(t, text, len, o, 1, ids, n, err);
}

/* ---- decode --------------------------------------------------------------------- */

int tok_buf_add(tok_buf *b, const char *p, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 64;
        while (nc < b->n + n + 1) nc *= 2;
        char *q = realloc(b->s, nc);
        if (!q) return AV_ENOMEM;
        b->s = q;
        b->cap = nc;
    }
    memcpy(b->s + b->n, p, n);
    b->n += n;
    return 0;
}

static int hexval(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : 0;
}

/* llama.cpp's token_to_piece (with its special=true cache) for one token */
static int piece(const tok *t, int32_t id, int special, int lstrip, tok_buf *b) {
    uint32_t attr = t->attr[id];
    if (!special && (attr & (TOK_ATTR_UNKNOWN | TOK_ATTR_CONTROL))) return 0;
    const char *s = t->text[id].s;
    size_t n = t->text[id].len, start = b->n;
    int rc = 0;
    if (attr & (TOK_ATTR_UNKNOWN | TOK_ATTR_CONTROL | TOK_ATTR_USER_DEFINED)) {
        rc = tok_buf_add(b, s, n);
    } else if (attr & TOK_ATTR_NORMAL) {
        if (t->kind != TOK_BPE) { /* U+2581 -> ' ' */
            for (size_t k = 0; k < n && !rc;) {
                if (n - k >= 3 && !memcmp(s + k, "\xe2\x96\x81", 3)) rc = tok_buf_add(b, " ", 1), k += 3;
                else rc = tok_buf_add(b, s + k, 1), k++;
            }
        } else { /* GPT-2 chars -> bytes */
            for (size_t k = 0; k < n && !rc;) {
                size_t k0 = k;
                uint32_t cp;
                av_utf8_next(s, n, &k, &cp);
                int byte = tok_cp_to_byte(cp);
                if (byte >= 0) {
                    char c = (char)byte;
                    rc = tok_buf_add(b, &c, 1);
                } else { /* llama_decode_text: "[UNK_BYTE_0x" + utf8 hex + whole text + "]" */
                    char u[4], hx[3];
                    size_t ul = av_utf8_put(cp, u);
                    (void)k0;
                    rc = tok_buf_add(b, "[UNK_BYTE_0x", 12);
                    for (size_t q = 0; q < ul && !rc; q++) {
                        static const char hex[] = "0123456789abcdef";
                        hx[0] = hex[(unsigned char)u[q] >> 4], hx[1] = hex[u[q] & 15];
                        rc = tok_buf_add(b, hx, 2);
                    }
                    if (!rc) rc = tok_buf_add(b, s, n);
                    if (!rc) rc = tok_buf_add(b, "]", 1);
                }
            }
        }
    } else if (attr & TOK_ATTR_BYTE) {
        if (t->kind == TOK_WPM || n < 5) return 0;
        char c = (char)(hexval(s[3]) << 4 | hexval(s[4]));
        rc = tok_buf_add(b, &c, 1);
    }
    if (!rc && lstrip && b->n > start && b->s[start] == ' ') { /* drop one leading space */
        memmove(b->s + start, b->s + start + 1, b->n - start - 1);
        b->n--;
    }
    return rc;
}

/* llama.cpp detokenize's clean_spaces passes, in place; returns the new length */
static size_t clean_spaces(char *text, size_t total) {
    size_t t1 = total, i;
    total = total ? 1 : 0;
    for (i = 1; i < t1; ++i) { /* " ?", " !", " .", " ," */
        char x = text[i];
        if (text[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',')) total--;
        text[total++] = x;
    }
    size_t t2 = total;
    total = total ? 1 : 0;
    for (i = 1; i < t2; ++i) { /* " ' " */
        char x = text[i];
        if (x == '\'' && i + 1 < t2 && text[i - 1] == ' ' && text[i + 1] == ' ') {
            total--;
            text[++i] = '\0';
        }
        text[total++] = x;
    }
    size_t t3 = total;
    total = total ? 1 : 0;
    for (i = 1; i < t3; ++i) { /* " 's", " 'm", " 're", " 've" */
        char x = text[i];
        if (text[i - 1] == ' ' && x == '\'' && i + 1 < t3) {
            char x1 = text[i + 1];
            if (x1 == 's' || x1 == 'm') total--;
            else if (x1 != 't' && x1 != 'd' && i + 2 < t3) {
                char x2 = text[i + 2];
                if ((x1 == 'r' && x2 == 'e') || (x1 == 'v' && x2 == 'e')) total--;
            }
        }
        text[total++] = x;
    }
    return total;
}

int tok_decode(const tok *t, const int32_t *ids, size_t n, int render_special, char **text, size_t *len, av_err *err) {
    *text = NULL;
    if (len) *len = 0;
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= t->n_vocab)
            return av_errf(err, AV_EINVAL, "tokenizer: id %d at position %zu is outside [0, %d)", ids[i], i, t->n_vocab);
    tok_buf b = { 0 };
    int remove_space = t->add_space_prefix;
    for (size_t i = 0; i < n; i++) {
        if (piece(t, ids[i], render_special, remove_space, &b)) goto oom;
        remove_space = 0;
    }
    if (!b.s && !(b.s = malloc(1))) goto oom;
    if (t->clean_spaces) b.n = clean_spaces(b.s, b.n);
    b.s[b.n] = 0;
    *text = b.s;
    if (len) *len = b.n;
    return 0;
oom:
    free(b.s);
    return av_errf(err, AV_ENOMEM, "tokenizer: out of memory decoding %zu ids", n);
}

/* ---- getters -------------------------------------------------------------------- */

tok_kind tok_get_kind(const tok *t) { return t->kind; }
int32_t tok_n_vocab(const tok *t) { return t->n_vocab; }
int32_t tok_bos(const tok *t) { return t->bos; }
int32_t tok_eos(const tok *t) { return t->eos; }

const char *tok_token_text(const tok *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n_vocab) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = t->text[id].len;
    return t->text[id].s;
}
