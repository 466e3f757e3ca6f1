/* tok_tiktoken.c — load a tiktoken encoding (NAME.tiktoken + NAME.json).
 *
 * NAME.tiktoken: one line per mergeable token, "base64(bytes) rank\n"; ranks
 * dense from 0. The rank is both the token id and its merge priority.
 * NAME.json (beside it): {"pat_str": regex, "special_tokens": {text: id},
 * "n_vocab": int|null}. Special ids follow the ranks, possibly with gaps.
 *
 * The result is a TOK_BPE tok with rank_merge set (tok_bpe.c runs tiktoken's
 * byte_pair_merge on rank lookups, so no merges table is derived): stored
 * text of a rank = its bytes in GPT-2 byte->unicode form; specials = CONTROL
 * tokens with their raw text; unused ids in the gaps = "[PADn]" of type
 * UNUSED (the convention of llama.cpp's converter); pre-tokenizer = pat_str. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "io.h"
#include "tok_impl.h"

#define TIKTOKEN_MAX_FILE (256u << 20)
#define TIKTOKEN_MAX_TOKEN 4096      /* bytes in one token */
#define TIKTOKEN_MAX_VOCAB (16 << 20)

static int b64val(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Standard base64 with padding. Returns decoded length or -1. */
static long b64decode(const char *s, size_t n, unsigned char *out, size_t out_cap) {
    if (n == 0 || n % 4) return -1;
    size_t pad = 0;
    if (s[n - 1] == '=') pad++;
    if (s[n - 2] == '=') pad++;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4];
        for (int k = 0; k < 4; k++) {
            unsigned char c = (unsigned char)s[i + k];
            if (c == '=' && i + 4 == n && k >= 4 - (int)pad) v[k] = 0;
            else if ((v[k] = b64val(c)) < 0) return -1;
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        size_t take = i + 4 == n ? 3 - pad : 3;
        if (o + take > out_cap) return -1;
        for (size_t k = 0; k < take; k++) out[o++] = (unsigned char)(w >> (16 - 8 * k));
    }
    return (long)o;
}

static char *dupn(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (p) { memcpy(p, s, n); p[n] = 0; }
    return p;
}

/* GPT-2 byte->unicode form of n bytes (malloc'd, NUL-terminated). */
static char *map_bytes(const unsigned char *b, size_t n, size_t *out_n) {
    char *p = malloc(2 * n + 1);
    if (!p) return NULL;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t cp = tok_byte_to_cp[b[i]];
        if (cp < 0x80) p[j++] = (char)cp;
        else { p[j++] = (char)(0xC0 | cp >> 6); p[j++] = (char)(0x80 | (cp & 0x3F)); }
    }
    p[j] = 0;
    *out_n = j;
    return p;
}

/* The llama.cpp pre type whose regex is this pat_str, for GGUF export. */
static const char *pre_name_for(const char *pat) {
    static const struct { const char *pat, *name; } known[] = {
        {"'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+", "gpt-2"},
        {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
         "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+", "llama-bpe"},
        {"[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
         "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
         "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+", "gpt-4o"},
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (!strcmp(pat, known[i].pat)) return known[i].name;
    return NULL;
}

typedef struct { uint32_t off, len, line; int32_t rank; } tt_ent;

int tok_load_tiktoken(const char *path, tok **out, av_err *err) {
    *out = NULL;
    int rc = 0;
    char *buf = NULL, *json_path = NULL;
    size_t blen = 0;
    unsigned char *arena = NULL; /* decoded token bytes */
    size_t arena_len = 0, arena_cap = 0;
    tt_ent *ents = NULL;
    size_t n_ents = 0, ents_cap = 0;
    int32_t *by_rank = NULL;
    av_strmap seen;
    av_strmap_init(&seen);
    json_t *root = NULL;
    tok *t = NULL;

    if ((rc = av_read_file(path, TIKTOKEN_MAX_FILE, &buf, &blen, err))) goto fail;

    /* ---- rank file ---- */
    unsigned char tmp[TIKTOKEN_MAX_TOKEN];
    size_t line = 0;
    for (size_t p = 0; p < blen;) {
        line++;
        size_t e = p;
        while (e < blen && buf[e] != '\n') e++;
        size_t next = e < blen ? e + 1 : e;
        if (e > p && buf[e - 1] == '\r') e--;
        if (e == p) { p = next; continue; } /* blank line */
        const char *sp = memchr(buf + p, ' ', e - p);
        if (!sp) {
            rc = av_errf(err, AV_EFORMAT, "%s: line %zu: expected 'base64 rank'", path, line);
            goto fail;
        }
        size_t b64n = (size_t)(sp - (buf + p));
        long tn = b64decode(buf + p, b64n, tmp, sizeof tmp);
        if (tn <= 0) {
            rc = av_errf(err, AV_EFORMAT, "%s: line %zu: bad base64 token '%.*s'", path, line,
                         (int)(b64n > 64 ? 64 : b64n), buf + p);
            goto fail;
        }
        const char *r = sp + 1;
        if (r >= buf + e) {
            rc = av_errf(err, AV_EFORMAT, "%s: line %zu: missing rank", path, line);
            goto fail;
        }
        int64_t rank = 0;
        for (const char *q = r; q < buf + e; q++) {
            if (*q < '0' || *q > '9' || rank > TIKTOKEN_MAX_VOCAB) {
                rc = av_errf(err, AV_EFORMAT, "%s: line %zu: bad rank '%.*s' (a decimal below %d expected)", path,
                             line, (int)(buf + e - r > 32 ? 32 : buf + e - r), r, TIKTOKEN_MAX_VOCAB);
                goto fail;
            }
            rank = rank * 10 + (*q - '0');
        }
        if (rank >= TIKTOKEN_MAX_VOCAB) {
            rc = av_errf(err, AV_EFORMAT, "%s: line %zu: rank %lld too large", path, line, (long long)rank);
            goto fail;
        }
        int32_t prev = av_strmap_get(&seen, (const char *)tmp, (size_t)tn);
        if (prev >= 0) {
            rc = av_errf(err, AV_EFORMAT, "%s: line %zu: duplicate token (same bytes as line %u)", path, line,
                         ents[prev].line);
            goto fail;
        }
        if (n_ents == ents_cap) {
            size_t nc = ents_cap ? ents_cap * 2 : 1024;
            tt_ent *ne = realloc(ents, nc * sizeof *ne);
            if (!ne) goto oom;
            ents = ne;
            ents_cap = nc;
        }
        if (arena_len + (size_t)tn > arena_cap) {
            size_t nc = arena_cap ? arena_cap * 2 : 1 << 16;
            while (nc < arena_len + (size_t)tn) nc *= 2;
            unsigned char *na = realloc(arena, nc);
            if (!na) goto oom;
            arena = na;
            arena_cap = nc;
        }
        if (av_strmap_put(&seen, (const char *)tmp, (size_t)tn, (int32_t)n_ents)) goto oom;
        memcpy(arena + arena_len, tmp, (size_t)tn);
        ents[n_ents] = (tt_ent){(uint32_t)arena_len, (uint32_t)tn, (uint32_t)line, (int32_t)rank};
        arena_len += (size_t)tn;
        n_ents++;
        p = next;
    }
    if (n_ents == 0) {
        rc = av_errf(err, AV_EFORMAT, "%s: no tokens", path);
        goto fail;
    }
    /* ranks must be exactly 0..n-1 */
    if (!(by_rank = malloc(n_ents * sizeof *by_rank))) goto oom;
    for (size_t i = 0; i < n_ents; i++) by_rank[i] = -1;
    for (size_t i = 0; i < n_ents; i++) {
        int32_t rk = ents[i].rank;
        if ((size_t)rk >= n_ents) {
            rc = av_errf(err, AV_EFORMAT, "%s: line %u: rank %d but the file has %zu tokens (ranks must be dense from 0)",
                         path, ents[i].line, rk, n_ents);
            goto fail;
        }
        if (by_rank[rk] >= 0) {
            rc = av_errf(err, AV_EFORMAT, "%s: line %u: duplicate rank %d (also on line %u)", path, ents[i].line, rk,
                         ents[by_rank[rk]].line);
            goto fail;
        }
        by_rank[rk] = (int32_t)i;
    }

    /* ---- sibling json ---- */
    {
        size_t pl = strlen(path);
        size_t stem = pl >= 9 && !strcmp(path + pl - 9, ".tiktoken") ? pl - 9 : pl;
        if (!(json_path = malloc(stem + 6))) goto oom;
        memcpy(json_path, path, stem);
        memcpy(json_path + stem, ".json", 6);
    }
    json_error_t je;
    root = json_load_file(json_path, 0, &je);
    if (!root) {
        rc = av_errf(err, je.line < 0 ? AV_EIO : AV_EFORMAT, "%s: %s (line %d)", json_path,
                     je.text, je.line);
        goto fail;
    }
    json_t *pat = json_object_get(root, "pat_str");
    if (!json_is_string(pat)) {
        rc = av_errf(err, AV_EFORMAT, "%s: 'pat_str' missing or not a string", json_path);
        goto fail;
    }
    json_t *specials = json_object_get(root, "special_tokens");
    if (specials && !json_is_null(specials) && !json_is_object(specials)) {
        rc = av_errf(err, AV_EFORMAT, "%s: 'special_tokens' is not an object", json_path);
        goto fail;
    }
    int64_t n_vocab = (int64_t)n_ents;
    const char *key;
    json_t *val;
    if (json_is_object(specials)) {
        json_object_foreach(specials, key, val) {
            json_int_t id = json_is_integer(val) ? json_integer_value(val) : -1;
            if (id < (json_int_t)n_ents || id >= TIKTOKEN_MAX_VOCAB) {
                rc = av_errf(err, AV_EFORMAT, "%s: special token '%.64s': id must be an integer in [%zu, %d)",
                             json_path, key, n_ents, TIKTOKEN_MAX_VOCAB);
                goto fail;
            }
            if (id + 1 > n_vocab) n_vocab = id + 1;
        }
    }
    json_t *nv = json_object_get(root, "n_vocab");
    if (json_is_integer(nv)) {
        json_int_t v = json_integer_value(nv);
        if (v < n_vocab || v > TIKTOKEN_MAX_VOCAB) {
            rc = av_errf(err, AV_EFORMAT, "%s: n_vocab %lld is smaller than the ids used (%lld) or too large",
                         json_path, (long long)v, (long long)n_vocab);
            goto fail;
        }
        n_vocab = v;
    }

    /* ---- the tok ---- */
    if (!(t = tok_alloc())) goto oom;
    t->kind = TOK_BPE;
    t->n_vocab = (int32_t)n_vocab;
    t->text = calloc((size_t)n_vocab, sizeof *t->text);
    t->types = malloc((size_t)n_vocab * sizeof *t->types);
    if (!t->text || !t->types) goto oom;
    for (int64_t i = 0; i < n_vocab; i++) t->types[i] = TOK_TYPE_UNUSED;
    for (size_t r = 0; r < n_ents; r++) {
        const tt_ent *e = &ents[by_rank[r]];
        size_t ml;
        char *m = map_bytes(arena + e->off, e->len, &ml);
        if (!m) goto oom;
        t->text[r] = (av_str){ml, m};
        t->types[r] = TOK_TYPE_NORMAL;
    }
    if (json_is_object(specials)) {
        json_object_foreach(specials, key, val) {
            json_int_t id = json_integer_value(val);
            if (t->text[id].s) {
                rc = av_errf(err, AV_EFORMAT, "%s: special token '%.64s': id %lld used twice", json_path, key,
                             (long long)id);
                goto fail;
            }
            size_t kl = strlen(key);
            if (!(t->text[id].s = dupn(key, kl))) goto oom;
            t->text[id].len = kl;
            t->types[id] = TOK_TYPE_CONTROL;
        }
    }
    for (int64_t i = 0; i < n_vocab; i++) {
        if (t->text[i].s) continue;
        char pad[32];
        int pl = snprintf(pad, sizeof pad, "[PAD%lld]", (long long)i);
        if (!(t->text[i].s = dupn(pad, (size_t)pl))) goto oom;
        t->text[i].len = (uint64_t)pl;
    }
    const char *pat_s = json_string_value(pat);
    const char *pn = pre_name_for(pat_s);
    if (pn && !(t->pre_name = strdup(pn))) goto oom;
    tok_defaults(t);
    t->add_bos = t->add_eos = 0;
    t->clean_spaces = 0;
    t->ignore_merges = 1;
    t->rank_merge = 1;
    t->bos = t->eos = t->eot = t->unk = t->pad = -1;
    if (json_is_object(specials)) {
        json_t *eot = json_object_get(specials, "<|endoftext|>");
        if (json_is_integer(eot)) t->bos = t->eos = t->eot = (int32_t)json_integer_value(eot);
    }
    if ((rc = tok_pre_new_patterns(&pat_s, 1, &t->pre, err))) {
        av_err_prefix(err, json_path);
        goto fail;
    }
    if ((rc = tok_finish(t, path, err))) goto fail;
    /* tok_finish forces some texts to CONTROL by llama.cpp's rules ("</s>",
     * "[PAD]", ...); for tiktoken every rank is an ordinary token */
    {
        size_t k = 0;
        for (size_t r = 0; r < n_ents; r++) t->attr[r] = TOK_ATTR_NORMAL;
        for (size_t i = 0; i < t->n_special; i++)
            if ((size_t)t->special[i] >= n_ents) t->special[k++] = t->special[i];
        t->n_special = k;
    }
    *out = t;
    t = NULL;
    goto done;
oom:
    rc = av_errf(err, AV_ENOMEM, "%s: out of memory", path);
fail:
    tok_free(t);
done:
    json_decref(root);
    free(json_path);
    free(buf);
    free(arena);
    free(ents);
    free(by_rank);
    av_strmap_release(&seen);
    return rc;
}
