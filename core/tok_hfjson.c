/* tok_hfjson.c — HF tokenizers' tokenizer.json: reader (any tok kind we
 * support) and writer (byte-level BPE from bpe_train).
 *
 * The reader turns the JSON into GGUF tokenizer.ggml.* metadata the way
 * llama.cpp's convert_hf_to_gguf.py does, then builds the tok with
 * tok_from_kv, so a tokenizer.json and its GGUF conversion behave the same:
 *   - model BPE + ByteLevel (pre-tokenizer or decoder) -> "gpt2": vocab keys
 *     are already in GPT-2 byte->unicode form; merges "a b" or ["a", "b"];
 *     the pre-tokenizer regexes (ByteLevel use_regex, Split Isolated, Digits,
 *     in Sequence order) name a llama.cpp pre type when they equal one
 *     (gpt-2, llama-bpe / dbrx by model.ignore_merges, qwen2); any other
 *     regex list is compiled as is (tok_pre_new_patterns) and pre_name is NULL.
 *   - model BPE with byte_fallback or Metaspace/"▁" (Llama/Mistral HF style)
 *     -> "llama" (SPM): <0xXX> tokens are BYTE; scores are -(rank of the
 *     merge that makes the token), 0 for tokens no merge makes. llama.cpp's
 *     LlamaHfVocab writes -1000 for every token, which makes its score-driven
 *     SPM merge order arbitrary; -rank reproduces the HF merge order.
 *     add_space_prefix from normalizer Prepend("▁") or Metaspace prepend_scheme.
 *   - model WordPiece -> "bert", tokens rewritten as convert_hf_to_gguf's
 *     phantom(): "[X]" kept, "##x" -> "x", any other "x" -> "▁x".
 * Ids: vocab and added_tokens together; gaps become "[PADn]" (UNUSED) as in
 * convert_hf_to_gguf. added_tokens special -> CONTROL, else USER_DEFINED.
 * Special ids come from well-known token texts and unk_token; add_bos/add_eos
 * from a TemplateProcessing post-processor ("single" starting/ending with a
 * SpecialToken). tokenizer_config.json is not read. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bpe_train.h"
#include "io.h"
#include "tok_impl.h"

#define HF_MAX_FILE (1u << 30)
#define HF_MAX_ID (1 << 24)   /* largest token id accepted */
#define HF_MAX_PATTERNS 32

static const char RE_GPT2_HF[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char RE_QWEN2_HF[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

typedef struct hf_ent { char *s; size_t len; int32_t type; } hf_ent;

typedef struct hf_state {
    const char *name;
    av_err *err;
    hf_ent *v;
    int32_t n;
    char *pats[HF_MAX_PATTERNS];
    size_t n_pats;
    int bytelevel, metaspace, prepend_space, split_unsupported;
} hf_state;

static void hf_release(hf_state *s) {
    for (int32_t i = 0; s->v && i < s->n; i++) free(s->v[i].s);
    free(s->v);
    for (size_t i = 0; i < s->n_pats; i++) free(s->pats[i]);
}

static char *dupn(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (p) { memcpy(p, s, n); p[n] = 0; }
    return p;
}

static int oom(hf_state *s) { return av_errf(s->err, AV_ENOMEM, "%s: out of memory", s->name); }

/* Id of a JSON value, checked to be an integer in [0, HF_MAX_ID). */
static int get_id(hf_state *s, const json_t *v, const char *where, const char *key, int32_t *id) {
    if (!json_is_integer(v))
        return av_errf(s->err, AV_EFORMAT, "%s: %s['%.80s']: id is not an integer", s->name, where, key);
    json_int_t x = json_integer_value(v);
    if (x < 0 || x >= HF_MAX_ID)
        return av_errf(s->err, AV_EFORMAT, "%s: %s['%.80s']: id %lld is outside [0, %d)", s->name, where, key,
                       (long long)x, HF_MAX_ID);
    *id = (int32_t)x;
    return 0;
}

static int add_pattern(hf_state *s, const char *p, size_t n) {
    if (s->n_pats == HF_MAX_PATTERNS)
        return av_errf(s->err, AV_EUNSUPPORTED, "%s: pre_tokenizer: more than %d regexes", s->name, HF_MAX_PATTERNS);
    if (!(s->pats[s->n_pats] = dupn(p, n))) return oom(s);
    s->n_pats++;
    return 0;
}

/* PCRE2 regex matching the literal string lit. */
static int add_literal(hf_state *s, const char *lit) {
    size_t n = strlen(lit);
    char *b = malloc(n * 2 + 1), *o = b;
    if (!b) return oom(s);
    for (size_t i = 0; i < n; i++) {
        if (strchr("\\^$.|?*+()[]{}", lit[i])) *o++ = '\\';
        *o++ = lit[i];
    }
    int rc = add_pattern(s, b, (size_t)(o - b));
    free(b);
    return rc;
}

static int is_type(const json_t *o, const char *type) {
    const char *t = json_string_value(json_object_get(o, "type"));
    return t && !strcmp(t, type);
}

static int flag(const json_t *o, const char *key, int def) {
    const json_t *v = json_object_get(o, key);
    return json_is_boolean(v) ? json_is_true(v) : def;
}

/* Walk a pre_tokenizer node collecting regexes in application order. */
static int walk_pre(hf_state *s, const json_t *o, const char *path, int depth) {
    if (json_is_null(o) || !o) return 0;
    if (!json_is_object(o) || depth > 8) return av_errf(s->err, AV_EFORMAT, "%s: %s is not an object", s->name, path);
    const char *type = json_string_value(json_object_get(o, "type"));
    if (!type) return av_errf(s->err, AV_EFORMAT, "%s: %s.type is missing", s->name, path);
    if (!strcmp(type, "Sequence")) {
        const json_t *a = json_object_get(o, "pretokenizers");
        if (!json_is_array(a)) return av_errf(s->err, AV_EFORMAT, "%s: %s.pretokenizers is not an array", s->name, path);
        size_t i;
        json_t *e;
        json_array_foreach(a, i, e) {
            char sub[128];
            snprintf(sub, sizeof sub, "%.80s.pretokenizers[%zu]", path, i);
            int rc = walk_pre(s, e, sub, depth + 1);
            if (rc) return rc;
        }
        return 0;
    }
    if (!strcmp(type, "ByteLevel")) {
        s->bytelevel = 1;
        return flag(o, "use_regex", 1) ? add_pattern(s, RE_GPT2_HF, strlen(RE_GPT2_HF)) : 0;
    }
    if (!strcmp(type, "Split")) {
        const json_t *p = json_object_get(o, "pattern");
        const char *beh = json_string_value(json_object_get(o, "behavior"));
        const char *re = json_string_value(json_object_get(p, "Regex"));
        const char *lit = json_string_value(json_object_get(p, "String"));
        if (!re && !lit) return av_errf(s->err, AV_EFORMAT, "%s: %s.pattern has no Regex or String", s->name, path);
        if (!beh || strcmp(beh, "Isolated") || flag(o, "invert", 0))
            return av_errf(s->err, AV_EUNSUPPORTED, "%s: %s: Split behavior '%s'%s is not supported (only Isolated)",
                           s->name, path, beh ? beh : "?", flag(o, "invert", 0) ? " with invert" : "");
        return re ? add_pattern(s, re, strlen(re)) : add_literal(s, lit);
    }
    if (!strcmp(type, "Digits")) {
        const char *d = flag(o, "individual_digits", 0) ? "\\p{N}" : "\\p{N}+";
        return add_pattern(s, d, strlen(d));
    }
    if (!strcmp(type, "Metaspace")) {
        const char *ps = json_string_value(json_object_get(o, "prepend_scheme"));
        s->metaspace = 1;
        if ((ps && strcmp(ps, "never")) || (!ps && flag(o, "add_prefix_space", 1))) s->prepend_space = 1;
        return 0;
    }
    return av_errf(s->err, AV_EUNSUPPORTED, "%s: %s: pre-tokenizer type '%s' is not supported", s->name, path, type);
}

/* Does node o (normalizer/decoder tree) contain a node of this type? */
static const json_t *find_type(const json_t *o, const char *type, int depth) {
    if (!o || depth > 8) return NULL;
    if (json_is_object(o)) {
        if (is_type(o, type)) return o;
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)o, k, v) {
            const json_t *r = find_type(v, type, depth + 1);
            if (r) return r;
        }
    } else if (json_is_array(o)) {
        size_t i;
        json_t *v;
        json_array_foreach(o, i, v) {
            const json_t *r = find_type(v, type, depth + 1);
            if (r) return r;
        }
    }
    return NULL;
}

static int set_ent(hf_state *s, int32_t id, const char *text, int32_t type, const char *where) {
    hf_ent *e = &s->v[id];
    if (e->s) {
        if (strcmp(e->s, text) && strcmp(where, "added_tokens"))
            return av_errf(s->err, AV_EFORMAT, "%s: %s: id %d is given to both '%.60s' and '%.60s'", s->name, where, id,
                           e->s, text);
        free(e->s);
    }
    if (!(e->s = dupn(text, strlen(text)))) return oom(s);
    e->len = strlen(text);
    e->type = type;
    return 0;
}

/* Fill s->v from model.vocab and added_tokens. */
static int read_vocab(hf_state *s, const json_t *vocab, const json_t *added) {
    const char *k;
    json_t *v;
    int32_t max = -1, id;
    int rc;
    json_object_foreach((json_t *)vocab, k, v) {
        if ((rc = get_id(s, v, "model.vocab", k, &id))) return rc;
        if (id > max) max = id;
    }
    size_t i;
    json_t *a;
    if (added && !json_is_array(added))
        return av_errf(s->err, AV_EFORMAT, "%s: added_tokens is not an array", s->name);
    json_array_foreach(added, i, a) {
        char where[48];
        snprintf(where, sizeof where, "added_tokens[%zu]", i);
        if (!json_is_string(json_object_get(a, "content")))
            return av_errf(s->err, AV_EFORMAT, "%s: %s.content is not a string", s->name, where);
        if ((rc = get_id(s, json_object_get(a, "id"), where, "id", &id))) return rc;
        if (id > max) max = id;
    }
    if (max < 0) return av_errf(s->err, AV_EFORMAT, "%s: model.vocab is empty", s->name);
    size_t count = json_object_size(vocab) + json_array_size(added);
    if ((size_t)max >= count * 4 + 65536)
        return av_errf(s->err, AV_EFORMAT, "%s: largest id %d is far beyond the %zu tokens given", s->name, max, count);
    s->n = max + 1;
    if (!(s->v = calloc((size_t)s->n, sizeof *s->v))) return oom(s);
    json_object_foreach((json_t *)vocab, k, v) {
        get_id(s, v, "model.vocab", k, &id);
        if ((rc = set_ent(s, id, k, TOK_TYPE_NORMAL, "model.vocab"))) return rc;
    }
    json_array_foreach(added, i, a) {
        get_id(s, json_object_get(a, "id"), "", "", &id);
        int special = flag(a, "special", 0);
        if ((rc = set_ent(s, id, json_string_value(json_object_get(a, "content")),
                          special ? TOK_TYPE_CONTROL : TOK_TYPE_USER_DEFINED, "added_tokens")))
            return rc;
    }
    for (int32_t j = 0; j < s->n; j++) {
        if (s->v[j].s) continue;
        char pad[32];
        snprintf(pad, sizeof pad, "[PAD%d]", j);
        if (!(s->v[j].s = dupn(pad, strlen(pad)))) return oom(s);
        s->v[j].len = strlen(pad);
        s->v[j].type = TOK_TYPE_UNUSED;
    }
    return 0;
}

/* Split merge i into its two token texts (pointers into the JSON or into buf). */
static int merge_parts(hf_state *s, const json_t *m, size_t i, const char **a, size_t *la, const char **b, size_t *lb) {
    if (json_is_string(m)) {
        const char *t = json_string_value(m);
        size_t n = json_string_length(m);
        const char *sp = n > 1 ? memchr(t + 1, ' ', n - 1) : NULL;
        if (!sp || memchr(sp + 1, ' ', n - (size_t)(sp + 1 - t)))
            return av_errf(s->err, AV_EFORMAT, "%s: model.merges[%zu] '%.80s' is not two tokens separated by one space",
                           s->name, i, t);
        *a = t; *la = (size_t)(sp - t); *b = sp + 1; *lb = n - *la - 1;
        return 0;
    }
    if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
        json_is_string(json_array_get(m, 1))) {
        *a = json_string_value(json_array_get(m, 0)); *la = json_string_length(json_array_get(m, 0));
        *b = json_string_value(json_array_get(m, 1)); *lb = json_string_length(json_array_get(m, 1));
        return 0;
    }
    return av_errf(s->err, AV_EFORMAT, "%s: model.merges[%zu] is neither \"a b\" nor [\"a\", \"b\"]", s->name, i);
}

static int32_t lookup(const av_strmap *m, const char *p, size_t n) { return av_strmap_get(m, p, n); }

/* Special ids by well-known texts. */
static void find_specials(const hf_state *s, const av_strmap *ids, const char *unk, int32_t sp[8]) {
    static const char *const names[8][6] = {
        { "<s>", "<|begin_of_text|>", "<|startoftext|>", "<bos>", "[CLS]", NULL },      /* bos */
        { "</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>", "[SEP]", NULL },          /* eos */
        { "<unk>", "[UNK]", "<|unk|>", NULL },                                           /* unk */
        { "[SEP]", NULL },                                                               /* sep */
        { "<pad>", "[PAD]", "<|pad|>", "<|padding|>", NULL },                            /* pad */
        { "[CLS]", NULL },                                                               /* cls */
        { "[MASK]", "<mask>", NULL },                                                    /* mask */
        { "<|eot_id|>", "<|im_end|>", "<end_of_turn>", "<|end|>", NULL },                /* eot */
    };
    (void)s;
    for (int r = 0; r < 8; r++) {
        sp[r] = -1;
        for (int k = 0; names[r][k] && sp[r] < 0; k++) sp[r] = lookup(ids, names[r][k], strlen(names[r][k]));
    }
    if (unk) {
        int32_t u = lookup(ids, unk, strlen(unk));
        if (u >= 0) sp[2] = u;
    }
    if (sp[0] < 0 && sp[1] >= 0 && !strcmp(s->v[sp[1]].s, "<|endoftext|>")) sp[0] = sp[1]; /* GPT-2 */
}

/* TemplateProcessing: *bos / *eos = id of a leading / trailing SpecialToken, else -1. */
static void template_specials(const json_t *pp, const av_strmap *ids, int32_t *bos, int32_t *eos) {
    *bos = *eos = -1;
    const json_t *tp = find_type(pp, "TemplateProcessing", 0);
    const json_t *single = json_object_get(tp, "single");
    size_t n = json_array_size(single);
    if (!n) return;
    const json_t *f = json_object_get(json_array_get(single, 0), "SpecialToken");
    const json_t *l = json_object_get(json_array_get(single, n - 1), "SpecialToken");
    const char *fs = json_string_value(json_object_get(f, "id")), *ls = json_string_value(json_object_get(l, "id"));
    if (fs) *bos = lookup(ids, fs, strlen(fs));
    if (ls && n > 1) *eos = lookup(ids, ls, strlen(ls));
}

static int same_pats(const hf_state *s, const char *p) { return s->n_pats == 1 && !strcmp(s->pats[0], p); }

/* Parse root into GGUF metadata; *custom set when the regexes name no pre type. */
static int hf_to_kv(hf_state *s, const json_t *root, av_kvs *kv, int *custom, int *ignore_merges) {
    int rc;
    av_strmap ids;
    av_strmap_init(&ids);
    float *scores = NULL;
    char **mstr = NULL;
    size_t nm = 0;
    const char **strs = NULL;
    uint64_t *lens = NULL;
    int32_t *types = NULL;
    *custom = 0;
    *ignore_merges = -1;
    if (!json_is_object(root)) return av_errf(s->err, AV_EFORMAT, "%s: top level is not a JSON object", s->name);
    const json_t *model = json_object_get(root, "model");
    if (!json_is_object(model)) return av_errf(s->err, AV_EFORMAT, "%s: 'model' is missing or not an object", s->name);
    const char *mtype = json_string_value(json_object_get(model, "type"));
    const json_t *vocab = json_object_get(model, "vocab"), *merges = json_object_get(model, "merges");
    if (!mtype) mtype = merges ? "BPE" : json_object_get(model, "continuing_subword_prefix") ? "WordPiece" : "?";
    if (strcmp(mtype, "BPE") && strcmp(mtype, "WordPiece"))
        return av_errf(s->err, AV_EUNSUPPORTED, "%s: model.type '%s' is not supported (BPE, WordPiece)", s->name, mtype);
    if (!json_is_object(vocab)) return av_errf(s->err, AV_EFORMAT, "%s: model.vocab is missing or not an object", s->name);
    if ((rc = read_vocab(s, vocab, json_object_get(root, "added_tokens")))) return rc;
    const char *unk = json_string_value(json_object_get(model, "unk_token"));
    const json_t *pre = json_object_get(root, "pre_tokenizer"), *dec = json_object_get(root, "decoder"),
                 *norm = json_object_get(root, "normalizer");
    const char *kind;
    if (!strcmp(mtype, "WordPiece")) {
        kind = "bert";
        for (int32_t i = 0; i < s->n; i++) { /* convert_hf_to_gguf phantom() */
            hf_ent *e = &s->v[i];
            if (e->len >= 2 && e->s[0] == '[' && e->s[e->len - 1] == ']') continue;
            if (e->len >= 2 && !memcmp(e->s, "##", 2)) { memmove(e->s, e->s + 2, e->len - 1); e->len -= 2; continue; }
            char *p = malloc(e->len + 4);
            if (!p) return oom(s);
            memcpy(p, "\xe2\x96\x81", 3);
            memcpy(p + 3, e->s, e->len + 1);
            free(e->s); e->s = p; e->len += 3;
        }
    } else {
        if ((rc = walk_pre(s, pre, "pre_tokenizer", 0))) return rc;
        if (find_type(dec, "ByteLevel", 0)) s->bytelevel = 1;
        int spm = !s->bytelevel && (flag(model, "byte_fallback", 0) || s->metaspace || find_type(dec, "Metaspace", 0) ||
                                    find_type(dec, "ByteFallback", 0) || find_type(norm, "Prepend", 0));
        if (!s->bytelevel && !spm)
            return av_errf(s->err, AV_EUNSUPPORTED, "%s: BPE model is neither byte-level (ByteLevel) nor "
                           "SentencePiece-style (byte_fallback/Metaspace)", s->name);
        kind = spm ? "llama" : "gpt2";
        if (json_is_boolean(json_object_get(model, "ignore_merges"))) *ignore_merges = flag(model, "ignore_merges", 0);
        if (!json_is_array(merges)) return av_errf(s->err, AV_EFORMAT, "%s: model.merges is missing or not an array", s->name);
    }
    for (int32_t i = 0; i < s->n; i++) {
        if (lookup(&ids, s->v[i].s, s->v[i].len) < 0 && av_strmap_put(&ids, s->v[i].s, s->v[i].len, i)) { rc = oom(s); goto done; }
        if (!strcmp(kind, "llama") && s->v[i].len == 6 && !strncmp(s->v[i].s, "<0x", 3) && s->v[i].s[5] == '>')
            s->v[i].type = TOK_TYPE_BYTE;
    }
    int32_t sp[8];
    find_specials(s, &ids, unk, sp);
    if (sp[2] >= 0 && s->v[sp[2]].type != TOK_TYPE_USER_DEFINED) s->v[sp[2]].type = TOK_TYPE_UNKNOWN;
    if (sp[2] < 0 && !strcmp(kind, "bert")) { /* HF fails at encode time; we fail at load */
        rc = av_errf(s->err, AV_EFORMAT, "%s: model.unk_token '%.60s' is not in the vocabulary", s->name, unk ? unk : "");
        goto done;
    }
    if (sp[2] < 0 && !strcmp(kind, "llama")) { /* without unk, every byte needs its <0xXX> token */
        int n_bytes = 0;
        for (int32_t i = 0; i < s->n; i++) n_bytes += s->v[i].type == TOK_TYPE_BYTE;
        if (n_bytes < 256) {
            rc = av_errf(s->err, AV_EUNSUPPORTED, "%s: no unk_token and only %d of 256 <0xXX> byte tokens: "
                         "some text could not be encoded", s->name, n_bytes);
            goto done;
        }
    }
    if (strcmp(kind, "bert")) {
        nm = json_array_size(merges);
        if (!strcmp(kind, "llama") && !(scores = calloc((size_t)s->n, sizeof *scores))) { rc = oom(s); goto done; }
        if (!strcmp(kind, "gpt2") && !(mstr = calloc(nm + 1, sizeof *mstr))) { rc = oom(s); goto done; }
        char *cat = NULL;
        size_t cat_cap = 0;
        for (size_t i = 0; i < nm; i++) {
            const char *a = NULL, *b = NULL;
            size_t la = 0, lb = 0;
            if ((rc = merge_parts(s, json_array_get(merges, i), i, &a, &la, &b, &lb))) break;
            if (la + lb + 2 > cat_cap) {
                cat_cap = (la + lb + 2) * 2;
                char *nc = realloc(cat, cat_cap);
                if (!nc) { rc = oom(s); break; }
                cat = nc;
            }
            memcpy(cat, a, la); memcpy(cat + la, b, lb);
            int32_t ia = lookup(&ids, a, la), ib = lookup(&ids, b, lb), ic = lookup(&ids, cat, la + lb);
            if (ia < 0 || ib < 0 || ic < 0) {
                cat[la + lb] = 0;
                rc = av_errf(s->err, AV_EFORMAT, "%s: model.merges[%zu]: token '%.60s' is not in the vocabulary", s->name, i,
                             ia < 0 ? (cat[la] = 0, cat) : ib < 0 ? cat + la : cat);
                break;
            }
            if (scores && scores[ic] == 0) scores[ic] = -(float)(i + 1);
            if (mstr) {
                if ((memchr(a, ' ', la) || memchr(b, ' ', lb))) {
                    rc = av_errf(s->err, AV_EFORMAT, "%s: model.merges[%zu]: a byte-level token holds a space", s->name, i);
                    break;
                }
                memmove(cat + la + 1, cat + la, lb);
                cat[la] = ' ';
                cat[la + lb + 1] = 0;
                if (!(mstr[i] = dupn(cat, la + lb + 1))) { rc = oom(s); break; }
            }
        }
        free(cat);
        if (rc) goto done;
    }
    strs = malloc((size_t)s->n * sizeof *strs);
    lens = malloc((size_t)s->n * sizeof *lens);
    types = malloc((size_t)s->n * sizeof *types);
    if (!strs || !lens || !types) { rc = oom(s); goto done; }
    for (int32_t i = 0; i < s->n; i++) strs[i] = s->v[i].s, lens[i] = s->v[i].len, types[i] = s->v[i].type;
    const char *pre_name = NULL;
    if (!strcmp(kind, "gpt2")) {
        if (same_pats(s, RE_GPT2_HF) || same_pats(s, bpe_pattern_regex("gpt2"))) pre_name = "gpt-2";
        else if (same_pats(s, bpe_pattern_regex("llama3"))) pre_name = *ignore_merges == 1 ? "llama-bpe" : "dbrx";
        else if (same_pats(s, RE_QWEN2_HF)) pre_name = "qwen2";
        else { pre_name = "gpt-2"; *custom = 1; } /* placeholder; the caller compiles s->pats */
    }
    int32_t bos, eos;
    template_specials(json_object_get(root, "post_processor"), &ids, &bos, &eos);
    if ((rc = av_kvs_set_str(kv, "tokenizer.ggml.model", kind)) ||
        (pre_name && (rc = av_kvs_set_str(kv, "tokenizer.ggml.pre", pre_name))) ||
        (rc = av_kvs_set_str_arr(kv, "tokenizer.ggml.tokens", strs, lens, (uint64_t)s->n)) ||
        (rc = av_kvs_set_arr(kv, "tokenizer.ggml.token_type", AV_KV_I32, types, (uint64_t)s->n)) ||
        (scores && (rc = av_kvs_set_arr(kv, "tokenizer.ggml.scores", AV_KV_F32, scores, (uint64_t)s->n))) ||
        (mstr && (rc = av_kvs_set_str_arr(kv, "tokenizer.ggml.merges", (const char *const *)mstr, NULL, nm))))
        goto oomx;
    static const char *const keys[8] = {
        "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
        "tokenizer.ggml.seperator_token_id", "tokenizer.ggml.padding_token_id", "tokenizer.ggml.cls_token_id",
        "tokenizer.ggml.mask_token_id", "tokenizer.ggml.eot_token_id" };
    if (bos >= 0) sp[0] = bos;
    if (eos >= 0 && strcmp(kind, "bert")) sp[1] = eos;
    for (int r = 0; r < 8; r++)
        if (sp[r] >= 0 && (rc = av_kvs_set_u32(kv, keys[r], (uint32_t)sp[r]))) goto oomx;
    if (strcmp(kind, "bert") && ((rc = av_kvs_set_bool(kv, "tokenizer.ggml.add_bos_token", bos >= 0)) ||
                                 (rc = av_kvs_set_bool(kv, "tokenizer.ggml.add_eos_token", eos >= 0))))
        goto oomx;
    if (!strcmp(kind, "llama")) {
        int prepend = s->prepend_space;
        const json_t *pp = find_type(norm, "Prepend", 0);
        const char *pv = json_string_value(json_object_get(pp, "prepend"));
        if (pv && !strcmp(pv, "\xe2\x96\x81")) prepend = 1;
        if ((rc = av_kvs_set_bool(kv, "tokenizer.ggml.add_space_prefix", prepend))) goto oomx;
    }
    rc = 0;
    goto done;
oomx:
    rc = oom(s);
done:
    for (size_t i = 0; mstr && i < nm; i++) free(mstr[i]);
    free(mstr); free(scores); free(strs); free(lens); free(types);
    av_strmap_release(&ids);
    return rc;
}

/* Messages quote JSON text and token texts: keep them on one line. */
static int one_line(av_err *err, int rc) {
    if (rc && err)
        for (char *p = err->msg; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
    return rc;
}

int tok_hfjson_to_kv(const char *buf, size_t len, const char *name, av_kvs *kv, av_err *err) {
    hf_state s = { .name = name, .err = err };
    json_error_t je;
    json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) return av_errf(err, AV_EFORMAT, "%s: not valid JSON: %s at line %d column %d", name, je.text, je.line, je.column);
    int custom, im;
    int rc = hf_to_kv(&s, root, kv, &custom, &im);
    if (!rc && custom) rc = av_errf(err, AV_EUNSUPPORTED, "%s: the pre-tokenizer regexes match no llama.cpp pre type", name);
    json_decref(root);
    hf_release(&s);
    return one_line(err, rc);
}

int tok_load_hfjson_mem(const char *buf, size_t len, const char *name, tok **out, av_err *err) {
    *out = NULL;
    hf_state s = { .name = name, .err = err };
    av_kvs kv;
    av_kvs_init(&kv);
    tok *t = NULL;
    json_error_t je;
    json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
    int rc, custom = 0, im = -1;
    if (!root) {
        rc = av_errf(err, AV_EFORMAT, "%s: not valid JSON: %s at line %d column %d", name, je.text, je.line, je.column);
        goto done;
    }
    if ((rc = hf_to_kv(&s, root, &kv, &custom, &im))) goto done;
    if ((rc = tok_from_kv(&kv, name, &t, err))) goto done;
    if (custom) {
        tok_pre_free(t->pre);
        t->pre = NULL;
        free(t->pre_name);
        t->pre_name = NULL;
        if ((rc = tok_pre_new_patterns((const char *const *)s.pats, s.n_pats, &t->pre, err))) {
            av_err_prefix(err, name);
            goto done;
        }
    }
    if (t->kind == TOK_BPE && im >= 0) t->ignore_merges = im;
    /* ids the JSON did not name are not llama.cpp's per-kind defaults */
    {
        const av_kv *e;
        int32_t *f[8] = { &t->bos, &t->eos, &t->unk, &t->sep, &t->pad, &t->cls, &t->mask, &t->eot };
        static const char *const keys[8] = {
            "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
            "tokenizer.ggml.seperator_token_id", "tokenizer.ggml.padding_token_id", "tokenizer.ggml.cls_token_id",
            "tokenizer.ggml.mask_token_id", "tokenizer.ggml.eot_token_id" };
        for (int r = 0; r < 8; r++)
            if (!(e = av_kvs_find(&kv, keys[r]))) *f[r] = -1;
    }
    *out = t;
    t = NULL;
done:
    tok_free(t);
    json_decref(root);
    hf_release(&s);
    av_kvs_release(&kv);
    return one_line(err, rc);
}

int tok_load_hfjson(const char *path, tok **out, av_err *err) {
    char *buf = NULL;
    size_t len = 0;
    *out = NULL;
    int rc = av_read_file(path, HF_MAX_FILE, &buf, &len, err);
    if (!rc) rc = tok_load_hfjson_mem(buf, len, path, out, err);
    free(buf);
    return rc;
}

/* ---- writer (bpe_train.h) ---------------------------------------------------- */

static json_t *bytelevel(int use_regex) {
    return json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1,
                     "use_regex", use_regex);
}

/* Stored (GGUF/HF) text of token i of r: specials literal, others GPT-2 mapped. */
static char *token_text(const bpe_result *r, int32_t i, size_t *len) {
    if (i < r->n_special) { *len = r->vocab[i].len; return dupn(r->vocab[i].s, r->vocab[i].len); }
    return bpe_bytes_to_mapped((const uint8_t *)r->vocab[i].s, r->vocab[i].len, len);
}

int tok_write_hfjson(const bpe_result *r, const bpe_train_opts *o, const char *path, av_err *err) {
    int rc = AV_ENOMEM;
    char *text = NULL, **mapped = NULL;
    av_out *out = NULL;
    const char *pname = o && o->pattern ? o->pattern : r->pattern_name ? r->pattern_name : NULL;
    const char *regex = pname ? bpe_pattern_regex(pname) : NULL;
    if (!regex) regex = pname ? pname : r->pattern;
    int gpt2 = regex && !strcmp(regex, bpe_pattern_regex("gpt2"));
    json_t *root = json_object(), *added = json_array(), *vocab = json_object(), *merges = json_array();
    json_t *pre = NULL, *model = NULL;
    if (!root || !added || !vocab || !merges) goto fail;
    if (!(mapped = calloc((size_t)r->n_vocab + 1, sizeof *mapped))) goto fail;
    for (int32_t i = 0; i < r->n_vocab; i++) {
        size_t l;
        if (!(mapped[i] = token_text(r, i, &l))) goto fail;
        if (json_object_set_new(vocab, mapped[i], json_integer(i)) || json_object_size(vocab) != (size_t)i + 1) {
            rc = av_errf(err, AV_EINVAL, "%s: token %d '%.60s' is not valid UTF-8 or is a duplicate", path, i, mapped[i]);
            goto fail2;
        }
    }
    for (int32_t i = 0; i < r->n_special; i++)
        if (json_array_append_new(added, json_pack("{s:i, s:s, s:b, s:b, s:b, s:b, s:b}", "id", (int)i, "content", mapped[i],
                                                   "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 0,
                                                   "special", 1)))
            goto fail;
    for (int32_t k = 0; k < r->n_merges; k++) {
        const char *a = mapped[r->merges[2 * k]], *b = mapped[r->merges[2 * k + 1]];
        size_t la = strlen(a), lb = strlen(b);
        if (!(text = malloc(la + lb + 2))) goto fail;
        memcpy(text, a, la); text[la] = ' '; memcpy(text + la + 1, b, lb + 1);
        if (json_array_append_new(merges, json_string(text))) goto fail;
        free(text); text = NULL;
    }
    if (gpt2) pre = bytelevel(1);
    else pre = json_pack("{s:s, s:[{s:s, s:{s:s}, s:s, s:b}, o]}", "type", "Sequence", "pretokenizers", "type", "Split",
                         "pattern", "Regex", regex, "behavior", "Isolated", "invert", 0, bytelevel(0));
    model = json_pack("{s:s, s:n, s:n, s:n, s:n, s:b, s:b, s:b, s:O, s:O}", "type", "BPE", "dropout", "unk_token",
                      "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", 0, "byte_fallback", 0,
                      "ignore_merges", 0, "vocab", vocab, "merges", merges);
    if (!pre || !model) goto fail;
    if (json_object_set_new(root, "version", json_string("1.0")) || json_object_set_new(root, "truncation", json_null()) ||
        json_object_set_new(root, "padding", json_null()) || json_object_set(root, "added_tokens", added) ||
        json_object_set_new(root, "normalizer", json_null()) || json_object_set(root, "pre_tokenizer", pre) ||
        json_object_set_new(root, "post_processor", bytelevel(1)) || json_object_set_new(root, "decoder", bytelevel(1)) ||
        json_object_set(root, "model", model))
        goto fail;
    if (!(text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER))) goto fail;
    if ((rc = av_out_open(path, &out, err)) || (rc = av_out_write(out, text, strlen(text), err)) ||
        (rc = av_out_write(out, "\n", 1, err)))
        goto fail2;
    rc = av_out_commit(out, err);
    out = NULL;
    goto fail2;
fail:
    rc = av_errf(err, AV_ENOMEM, "%s: out of memory building tokenizer.json", path);
fail2:
    av_out_abort(out);
    free(text);
    for (int32_t i = 0; mapped && i < r->n_vocab; i++) free(mapped[i]);
    free(mapped);
    json_decref(root); json_decref(added); json_decref(vocab); json_decref(merges);
    json_decref(pre); json_decref(model);
    return rc;
}

int bpe_result_to_kv(const bpe_result *r, const bpe_train_opts *o, av_kvs *kv, av_err *err) {
    const char *pname = o && o->pattern ? o->pattern : r->pattern_name;
    const char *regex = pname ? bpe_pattern_regex(pname) : NULL; /* NULL name in r: custom regex */
    if (!regex)
        return av_errf(err, AV_EUNSUPPORTED, "bpe: a custom pre-tokenizer regex cannot be stored in GGUF "
                       "(tokenizer.ggml.pre names llama.cpp's built-in ones: use gpt2, gpt4 or llama3)");
    const char *pre = !strcmp(regex, bpe_pattern_regex("gpt2")) ? "gpt-2" : "dbrx"; /* cl100k regex, no ignore_merges */
    int rc = AV_ENOMEM;
    char **txt = calloc((size_t)r->n_vocab + 1, sizeof *txt), **mg = calloc((size_t)r->n_merges + 1, sizeof *mg);
    uint64_t *lens = calloc((size_t)r->n_vocab + 1, sizeof *lens);
    int32_t *types = calloc((size_t)r->n_vocab + 1, sizeof *types);
    if (!txt || !mg || !lens || !types) goto done;
    for (int32_t i = 0; i < r->n_vocab; i++) {
        size_t l;
        if (!(txt[i] = token_text(r, i, &l))) goto done;
        lens[i] = l;
        types[i] = i < r->n_special ? TOK_TYPE_CONTROL : TOK_TYPE_NORMAL;
    }
    for (int32_t k = 0; k < r->n_merges; k++) {
        const char *a = txt[r->merges[2 * k]], *b = txt[r->merges[2 * k + 1]];
        size_t la = lens[r->merges[2 * k]], lb = lens[r->merges[2 * k + 1]];
        if (!(mg[k] = malloc(la + lb + 2))) goto done;
        memcpy(mg[k], a, la); mg[k][la] = ' '; memcpy(mg[k] + la + 1, b, lb); mg[k][la + lb + 1] = 0;
    }
    if (av_kvs_set_str(kv, "tokenizer.ggml.model", "gpt2") || av_kvs_set_str(kv, "tokenizer.ggml.pre", pre) ||
        av_kvs_set_str_arr(kv, "tokenizer.ggml.tokens", (const char *const *)txt, lens, (uint64_t)r->n_vocab) ||
        av_kvs_set_arr(kv, "tokenizer.ggml.token_type", AV_KV_I32, types, (uint64_t)r->n_vocab) ||
        av_kvs_set_str_arr(kv, "tokenizer.ggml.merges", (const char *const *)mg, NULL, (uint64_t)r->n_merges) ||
        (r->n_special && (av_kvs_set_u32(kv, "tokenizer.ggml.bos_token_id", 0) ||
                          av_kvs_set_u32(kv, "tokenizer.ggml.eos_token_id", 0))) ||
        av_kvs_set_bool(kv, "tokenizer.ggml.add_bos_token", 0))
        goto done;
    rc = 0;
done:
    for (int32_t i = 0; txt && i < r->n_vocab; i++) free(txt[i]);
    for (int32_t k = 0; mg && k < r->n_merges; k++) free(mg[k]);
    free(txt); free(mg); free(lens); free(types);
    if (rc) av_errf(err, rc, "bpe: out of memory building tokenizer metadata");
    return rc;
}
