/* tok_bpe.c — byte-level BPE encoding (GPT-2 style; also tiktoken ranks).
 *
 * One fragment of plain text goes: UTF-8 clean-up (as llama.cpp: every byte
 * that does not start a well-formed sequence becomes U+FFFD) -> regex
 * pre-tokenizer (tok_pre) -> per piece, bytes mapped through GPT-2's
 * byte->unicode table into the stored-token form -> merges -> ids.
 *
 * Merging starts from one symbol per mapped character (= one input byte) and
 * repeatedly joins the adjacent pair with the lowest rank, leftmost first on
 * ties, with a binary heap and lazy invalidation: O(n log n) per piece.
 *   - merges mode (GGUF / HF): rank of (left id, right id) from t->merges,
 *     as llama.cpp's llm_tokenizer_bpe;
 *   - rank mode (t->rank_merge, tiktoken): rank of a pair = id of the
 *     concatenated bytes when that is an ordinary token, as tiktoken's
 *     byte_pair_merge. A piece that is itself a token is emitted directly.
 * llama.cpp's "ignore_merges" pre types (llama3 family, tekken) also look the
 * whole piece up first. A final symbol that is not a token is emitted as the
 * ids of its single bytes (each byte of its stored text that is a token), as
 * llama.cpp does. */
#include <stdlib.h>
#include <string.h>

#include "tok_impl.h"

typedef struct {
    int64_t rank;
    int32_t left, right;
    uint32_t size; /* bytes of left + right when pushed (staleness check) */
} bigram;

typedef struct {
    const tok *t;
    int32_t **ids;
    size_t *len, *cap;
    int check_whole;
    /* per-piece scratch, reused */
    char *m;            /* mapped text */
    size_t m_cap;
    uint32_t *start, *n; /* symbol byte offset / length in m (n == 0: merged away) */
    int32_t *prev, *next, *id;
    size_t s_cap;
    bigram *heap;
    size_t h_n, h_cap;
} bpe_ctx;

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t nc = *cap ? *cap : 64;
    while (nc < need) nc *= 2;
    void *np = realloc(*p, nc * elem);
    if (!np) return AV_ENOMEM;
    *p = np;
    *cap = nc;
    return 0;
}

static int bg_less(const bigram *a, const bigram *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static int heap_push(bpe_ctx *c, bigram b) {
    if (c->h_n == c->h_cap) {
        size_t nc = c->h_cap ? c->h_cap * 2 : 64;
        bigram *nh = realloc(c->heap, nc * sizeof *nh);
        if (!nh) return AV_ENOMEM;
        c->heap = nh;
        c->h_cap = nc;
    }
    size_t i = c->h_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!bg_less(&b, &c->heap[p])) break;
        c->heap[i] = c->heap[p];
        i = p;
    }
    c->heap[i] = b;
    return 0;
}

static bigram heap_pop(bpe_ctx *c) {
    bigram top = c->heap[0], last = c->heap[--c->h_n];
    size_t i = 0, n = c->h_n;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const bigram *best = &last;
        if (l < n && bg_less(&c->heap[l], best)) { m = l; best = &c->heap[l]; }
        if (r < n && bg_less(&c->heap[r], best)) { m = r; }
        if (m == i) break;
        c->heap[i] = c->heap[m];
        i = m;
    }
    if (n) c->heap[i] = last;
    return top;
}

/* id of an ordinary token with this stored text (rank mode), else -1 */
static int32_t rank_of(const tok *t, const char *s, size_t n) {
    int32_t id = av_strmap_get(&t->text_to_id, s, n);
    if (id < 0 || id >= t->n_vocab || t->types[id] != TOK_TYPE_NORMAL) return -1;
    return id;
}

/* Queue the pair (l, r) if it can merge. */
static int add_pair(bpe_ctx *c, int32_t l, int32_t r) {
    if (l < 0 || r < 0) return 0;
    const tok *t = c->t;
    int64_t rank;
    if (t->rank_merge) {
        int32_t id = rank_of(t, c->m + c->start[l], c->n[l] + c->n[r]);
        if (id < 0) return 0;
        rank = id;
    } else {
        if (c->id[l] < 0 || c->id[r] < 0) return 0;
        uint64_t key = (uint64_t)(uint32_t)c->id[l] << 32 | (uint32_t)c->id[r];
        if (!av_u64map_get(&t->merges, key, &rank)) return 0;
    }
    bigram b = {rank, l, r, c->n[l] + c->n[r]};
    return heap_push(c, b);
}

static int emit_symbol(bpe_ctx *c, const char *s, size_t n, int32_t id) {
    if (id >= 0) return tok_push(c->ids, c->len, c->cap, id);
    /* not a token: the ids of its single bytes that are tokens (llama.cpp) */
    for (size_t i = 0; i < n; i++) {
        int32_t b = av_strmap_get(&c->t->text_to_id, s + i, 1);
        if (b >= 0 && tok_push(c->ids, c->len, c->cap, b)) return AV_ENOMEM;
    }
    return 0;
}

static int bpe_piece(void *ud, const char *s, size_t n) {
    bpe_ctx *c = ud;
    const tok *t = c->t;
    if (grow((void **)&c->m, &c->m_cap, 2 * n + 1, 1)) return AV_ENOMEM;
    size_t need = n;
    if (need > c->s_cap) {
        size_t cap = c->s_cap;
        if (grow((void **)&c->start, &cap, need, sizeof *c->start)) return AV_ENOMEM;
        cap = c->s_cap;
        if (grow((void **)&c->n, &cap, need, sizeof *c->n)) return AV_ENOMEM;
        cap = c->s_cap;
        if (grow((void **)&c->prev, &cap, need, sizeof *c->prev)) return AV_ENOMEM;
        cap = c->s_cap;
        if (grow((void **)&c->next, &cap, need, sizeof *c->next)) return AV_ENOMEM;
        cap = c->s_cap;
        if (grow((void **)&c->id, &cap, need, sizeof *c->id)) return AV_ENOMEM;
        c->s_cap = cap;
    }
    /* bytes -> stored form, one symbol per byte */
    size_t mlen = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t cp = tok_byte_to_cp[(unsigned char)s[i]];
        c->start[i] = (uint32_t)mlen;
        if (cp < 0x80) {
            c->m[mlen++] = (char)cp;
        } else {
            c->m[mlen++] = (char)(0xC0 | cp >> 6);
            c->m[mlen++] = (char)(0x80 | (cp & 0x3F));
        }
        c->n[i] = (uint32_t)(mlen - c->start[i]);
        c->prev[i] = (int32_t)i - 1;
        c->next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    c->m[mlen] = 0;
    if (c->check_whole) {
        int32_t id = t->rank_merge ? rank_of(t, c->m, mlen) : av_strmap_get(&t->text_to_id, c->m, mlen);
        if (id >= 0) return tok_push(c->ids, c->len, c->cap, id);
    }
    for (size_t i = 0; i < n; i++) c->id[i] = av_strmap_get(&t->text_to_id, c->m + c->start[i], c->n[i]);
    c->h_n = 0;
    for (size_t i = 1; i < n; i++)
        if (add_pair(c, (int32_t)i - 1, (int32_t)i)) return AV_ENOMEM;
    while (c->h_n) {
        bigram b = heap_pop(c);
        int32_t l = b.left, r = b.right;
        if (c->n[l] == 0 || c->n[r] == 0 || c->next[l] != r || c->n[l] + c->n[r] != b.size) continue;
        c->n[l] += c->n[r];
        c->n[r] = 0;
        c->next[l] = c->next[r];
        if (c->next[r] >= 0) c->prev[c->next[r]] = l;
        c->id[l] = t->rank_merge ? (int32_t)b.rank : av_strmap_get(&t->text_to_id, c->m + c->start[l], c->n[l]);
        if (add_pair(c, c->prev[l], l) || add_pair(c, l, c->next[l])) return AV_ENOMEM;
    }
    for (int32_t i = 0; i >= 0; i = c->next[i])
        if (emit_symbol(c, c->m + c->start[i], c->n[i], c->id[i])) return AV_ENOMEM;
    return 0;
}

/* Decode one character with llama.cpp's rules (unicode_cpt_from_utf8): *cp is
 * the code point or 0xFFFD, return value the bytes consumed. */
static size_t llama_cpt(const unsigned char *s, size_t n, uint32_t *cp) {
    unsigned char c = s[0];
    if (c < 0x80) { *cp = c; return 1; }
    *cp = 0xFFFD;
    if (!(c & 0x40)) return 1;
    if (!(c & 0x20)) {
        if (n < 2 || (s[1] & 0xC0) != 0x80) return 1;
        *cp = (uint32_t)(c & 0x1F) << 6 | (s[1] & 0x3F);
        return 2;
    }
    if (!(c & 0x10)) {
        if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return 1;
        *cp = (uint32_t)(c & 0x0F) << 12 | (uint32_t)(s[1] & 0x3F) << 6 | (s[2] & 0x3F);
        return 3;
    }
    if (!(c & 0x08)) {
        if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80) return 1;
        *cp = (uint32_t)(c & 0x07) << 18 | (uint32_t)(s[1] & 0x3F) << 12 | (uint32_t)(s[2] & 0x3F) << 6 | (s[3] & 0x3F);
        return 4;
    }
    return 1;
}

static size_t put_utf8(char *o, uint32_t cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | cp >> 6); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12); o[1] = (char)(0x80 | (cp >> 6 & 0x3F)); o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18); o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Rewrite s as llama.cpp sees it (decode, re-encode). Surrogates and code
 * points above U+10FFFF, which llama.cpp would keep or reject, become U+FFFD
 * too so that the result is valid UTF-8 for PCRE2. NULL when s is unchanged
 * (*out_n untouched) or out of memory (*oom set). */
static char *clean_utf8(const char *s, size_t n, size_t *out_n, int *oom) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    for (;;) { /* fast scan for the first byte that changes */
        while (i < n && u[i] < 0x80) i++;
        if (i == n) return NULL;
        uint32_t cp;
        size_t k = llama_cpt(u + i, n - i, &cp);
        char tmp[4];
        if (k == 1) break; /* invalid lead or truncated sequence */
        if ((cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) break;
        if (put_utf8(tmp, cp) != k) break; /* overlong */
        i += k;
    }
    char *o = malloc(n * 3 + 1); /* each input byte yields at most 3 bytes (U+FFFD) */
    if (!o) { *oom = 1; return NULL; }
    memcpy(o, s, i);
    size_t j = i;
    while (i < n) {
        uint32_t cp;
        i += llama_cpt(u + i, n - i, &cp);
        if ((cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) cp = 0xFFFD;
        j += put_utf8(o + j, cp);
    }
    *out_n = j;
    return o;
}

int tok_bpe_encode(const tok *t, const char *s, size_t n, int32_t **ids, size_t *len, size_t *cap) {
    if (n == 0) return 0;
    int oom = 0;
    size_t cn = n;
    char *clean = clean_utf8(s, n, &cn, &oom);
    if (oom) return AV_ENOMEM;
    if (clean) { s = clean; n = cn; }
    bpe_ctx c = {0};
    c.t = t;
    c.ids = ids;
    c.len = len;
    c.cap = cap;
    c.check_whole = t->rank_merge || t->ignore_merges;
    int rc = t->pre ? tok_pre_split(t->pre, s, n, bpe_piece, &c) : bpe_piece(&c, s, n);
    free(c.m);
    free(c.start);
    free(c.n);
    free(c.prev);
    free(c.next);
    free(c.id);
    free(c.heap);
    free(clean);
    return rc < 0 ? rc : rc ? AV_ENOMEM : 0;
}
