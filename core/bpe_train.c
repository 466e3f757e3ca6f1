/* bpe_train.c — byte-level BPE training; see bpe_train.h for the rule.
 *
 * Pre-tokenization goes through tok_pre (immutable, so OpenMP threads share
 * it) on valid UTF-8 runs; each run of invalid bytes is a pre-token of its own. The merge loop keeps pair -> count,
 * pair -> words containing it, and a lazy max-heap (an entry may hold a stale,
 * higher count; it is re-pushed with the true count when popped), so each merge
 * touches only the words that contain the merged pair. */
#include "bpe_train.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "hashmap.h"
#ifdef _OPENMP
#include <omp.h>
#else /* e.g. the fuzz build: one thread */
static int omp_get_max_threads(void) { return 1; }
static int omp_get_thread_num(void) { return 0; }
#endif
#include "tok_impl.h"

/* ---- patterns ------------------------------------------------------------ */

static const char PAT_GPT2[] =
    "'(?:[sdmt]|ll|ve|re)| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
/* cl100k_base as tiktoken ships it; Llama 3's tokenizer.json Split regex is the same text */
static const char PAT_CL100K[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

const char *bpe_pattern_regex(const char *name) {
    if (!name || !strcmp(name, "gpt2")) return PAT_GPT2;
    if (!strcmp(name, "gpt4") || !strcmp(name, "llama3") || !strcmp(name, "cl100k")) return PAT_CL100K;
    return NULL;
}

void bpe_train_opts_init(bpe_train_opts *o) {
    memset(o, 0, sizeof *o);
    o->vocab_size = 8192;
}

/* ---- counting pre-tokens ---------------------------------------------------- */

typedef struct counter {
    av_strmap map;    /* pre-token bytes -> index into cnt */
    int64_t *cnt;
    size_t n, cap;
    uint64_t total;   /* pre-tokens seen */
    int oom;
} counter;

static void counter_add(counter *c, const char *s, size_t n, int64_t k) {
    if (!n || c->oom) return;
    int32_t i = av_strmap_get(&c->map, s, n);
    if (i < 0) {
        if (c->n == c->cap) {
            size_t nc = c->cap ? c->cap * 2 : 1024;
            int64_t *p = realloc(c->cnt, nc * sizeof *p);
            if (!p || nc > INT32_MAX) { c->oom = 1; return; }
            c->cnt = p; c->cap = nc;
        }
        i = (int32_t)c->n;
        if (av_strmap_put(&c->map, s, n, i)) { c->oom = 1; return; }
        c->cnt[c->n++] = 0;
    }
    c->cnt[i] += k;
    c->total += (uint64_t)k;
}

typedef struct trainer {
    const bpe_train_opts *o;
    tok_pre *pre;         /* immutable; safe to share between threads */
    counter *ctr;         /* [n_threads] */
    int n_threads;
    const char *const *sp;/* specials */
    size_t *sp_len;
    size_t n_sp;
} trainer;

static int count_piece(void *ud, const char *s, size_t n) {
    counter_add(ud, s, n, 1);
    return 0;
}

/* Length of the valid UTF-8 prefix of s[0..n) (no overlongs, surrogates, > U+10FFFF). */
static size_t utf8_valid_prefix(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) { i++; continue; }
        size_t L = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
        if (!L || i + L > n) return i;
        unsigned c1 = s[i + 1];
        if ((c1 & 0xC0) != 0x80) return i;
        if ((c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 > 0x9F) || (c == 0xF0 && c1 < 0x90) || (c == 0xF4 && c1 > 0x8F))
            return i;
        for (size_t k = 2; k < L; k++)
            if ((s[i + k] & 0xC0) != 0x80) return i;
        i += L;
    }
    return n;
}

/* Split one special-free segment with the regex and count its pieces. A run of
 * bytes that is not valid UTF-8 is counted as a piece of its own. */
static void count_segment(const trainer *t, int th, const char *s, size_t n) {
    counter *c = &t->ctr[th];
    const unsigned char *u = (const unsigned char *)s;
    size_t pos = 0;
    while (pos < n && !c->oom) {
        size_t v = utf8_valid_prefix(u + pos, n - pos);
        if (v && tok_pre_split(t->pre, s + pos, v, count_piece, c)) c->oom = 1;
        pos += v;
        size_t bad = pos;
        while (bad < n && utf8_valid_prefix(u + bad, n - bad < 4 ? n - bad : 4) == 0) bad++;
        if (bad > pos) counter_add(c, s + pos, bad - pos, 1);
        pos = bad;
    }
}

/* Cut s[0..n) at special tokens (leftmost, longest at one position) and count the rest. */
static void count_range(const trainer *t, int th, const char *s, size_t n) {
    size_t pos = 0;
    while (pos < n) {
        const char *best = NULL;
        size_t bl = 0;
        for (size_t i = 0; i < t->n_sp; i++) {
            const char *f = memmem(s + pos, n - pos, t->sp[i], t->sp_len[i]);
            if (f && (!best || f < best || (f == best && t->sp_len[i] > bl))) { best = f; bl = t->sp_len[i]; }
        }
        size_t end = best ? (size_t)(best - s) : n;
        if (end > pos) count_segment(t, th, s + pos, end - pos);
        if (!best) break;
        pos = end + bl;
    }
}

static int is_alpha(unsigned char c) { return (c | 0x20) >= 'a' && (c | 0x20) <= 'z'; }
static int is_space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

/* True when no pre-token can span position p of s[0..n) (see bpe_train.h). */
static int safe_cut(const trainer *t, const char *s, size_t n, size_t p) {
    const unsigned char *u = (const unsigned char *)s;
    if (p < 2 || p + 1 >= n) return 0;
    int ok = (is_alpha(u[p - 1]) && u[p] == ' ' && is_alpha(u[p + 1])) ||
             (u[p - 1] == '\n' && !is_space(u[p - 2]) && is_alpha(u[p]));
    if (!ok) return 0;
    for (size_t i = 0; i < t->n_sp; i++) { /* never inside a special token */
        size_t L = t->sp_len[i];
        if (L < 2) continue;
        size_t a = p >= L - 1 ? p - (L - 1) : 0, b = p + L - 1 < n ? p + L - 1 : n;
        if (memmem(s + a, b - a, t->sp[i], L)) return 0;
    }
    return 1;
}

/* Last safe cut in (lo, hi], or 0 if none. */
static size_t find_cut(const trainer *t, const char *s, size_t n, size_t lo, size_t hi) {
    for (size_t p = hi; p > lo; p--)
        if (safe_cut(t, s, n, p)) return p;
    return 0;
}

/* Count s[0..n) (a whole number of pre-tokens) in parallel ranges. */
static void count_window(const trainer *t, const char *s, size_t n) {
    enum { MAXR = 256 };
    size_t cut[MAXR + 1];
    size_t nr = 0;
    size_t want = (size_t)t->n_threads * 4;
    if (want > MAXR) want = MAXR;
    if (n < ((size_t)1 << 16) || t->n_threads == 1) want = 1;
    cut[0] = 0;
    for (size_t r = 1; r < want; r++) {
        size_t target = n / want * r;
        if (target <= cut[nr]) continue;
        size_t c = find_cut(t, s, n, cut[nr], target);
        if (c > cut[nr]) cut[++nr] = c;
    }
    cut[++nr] = n;
    #pragma omp parallel for schedule(dynamic, 1) num_threads(t->n_threads)
    for (size_t r = 0; r < nr; r++)
        count_range(t, omp_get_thread_num(), s + cut[r], cut[r + 1] - cut[r]);
}

/* ---- merging ------------------------------------------------------------ */

typedef struct wlist { int32_t *w; uint32_t n, cap; } wlist;
typedef struct hent { int64_t cnt; uint32_t p; } hent;

typedef struct merger {
    /* tokens: bytes in arena */
    char *arena; size_t arena_len, arena_cap;
    size_t *toff; uint32_t *tlen; int32_t ntok, tok_cap;
    /* words */
    size_t nw; int32_t *sym; size_t *woff; int32_t *wlen; int64_t *wcnt; uint32_t *wstamp;
    /* pairs */
    av_u64map pidx;          /* key -> pair index */
    uint64_t *pkey; int64_t *pcnt; wlist *pw; uint32_t *pstamp; size_t np, pcap;
    hent *heap; size_t nh, hcap;
    int oom;
} merger;

static int tok_cmp(const merger *m, int32_t a, int32_t b) {
    size_t la = m->tlen[a], lb = m->tlen[b];
    int c = memcmp(m->arena + m->toff[a], m->arena + m->toff[b], la < lb ? la : lb);
    return c ? c : (la > lb) - (la < lb);
}

/* >0 when pair p beats pair q on ties (lexicographically greater) */
static int pair_cmp(const merger *m, uint32_t p, uint32_t q) {
    int c = tok_cmp(m, (int32_t)(m->pkey[p] >> 32), (int32_t)(m->pkey[q] >> 32));
    return c ? c : tok_cmp(m, (int32_t)(uint32_t)m->pkey[p], (int32_t)(uint32_t)m->pkey[q]);
}

static int hent_gt(const merger *m, const hent *x, const hent *y) {
    if (x->cnt != y->cnt) return x->cnt > y->cnt;
    return pair_cmp(m, x->p, y->p) > 0;
}

static void heap_push(merger *m, int64_t cnt, uint32_t p) {
    if (m->nh == m->hcap) {
        size_t nc = m->hcap ? m->hcap * 2 : 4096;
        hent *h = realloc(m->heap, nc * sizeof *h);
        if (!h) { m->oom = 1; return; }
        m->heap = h; m->hcap = nc;
    }
    size_t i = m->nh++;
    hent e = { cnt, p };
    while (i > 0) {
        size_t par = (i - 1) / 2;
        if (!hent_gt(m, &e, &m->heap[par])) break;
        m->heap[i] = m->heap[par];
        i = par;
    }
    m->heap[i] = e;
}

static hent heap_pop(merger *m) {
    hent top = m->heap[0], e = m->heap[--m->nh];
    size_t i = 0, n = m->nh;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, b = i;
        const hent *be = &e;
        if (l < n && hent_gt(m, &m->heap[l], be)) { b = l; be = &m->heap[l]; }
        if (r < n && hent_gt(m, &m->heap[r], be)) { b = r; }
        if (b == i) break;
        m->heap[i] = m->heap[b];
        i = b;
    }
    if (n) m->heap[i] = e;
    return top;
}

static int32_t add_token(merger *m, const char *s, size_t n) {
    if (m->ntok == m->tok_cap) {
        int32_t nc = m->tok_cap ? m->tok_cap * 2 : 1024;
        size_t *o = realloc(m->toff, (size_t)nc * sizeof *o);
        if (o) m->toff = o;
        uint32_t *l = realloc(m->tlen, (size_t)nc * sizeof *l);
        if (l) m->tlen = l;
        if (!o || !l) { m->oom = 1; return -1; }
        m->tok_cap = nc;
    }
    if (m->arena_len + n > m->arena_cap) {
        size_t nc = m->arena_cap * 2 + n + 4096;
        char *a = realloc(m->arena, nc);
        if (!a) { m->oom = 1; return -1; }
        m->arena = a; m->arena_cap = nc;
    }
    memmove(m->arena + m->arena_len, s, n); /* s may point into the arena */
    m->toff[m->ntok] = m->arena_len;
    m->tlen[m->ntok] = (uint32_t)n;
    m->arena_len += n;
    return m->ntok++;
}

/* Index of pair (a, b), created with count 0 when absent; -1 out of memory. */
static int64_t pair_get(merger *m, int32_t a, int32_t b) {
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    int64_t *slot = av_u64map_slot(&m->pidx, key, -1);
    if (!slot) { m->oom = 1; return -1; }
    if (*slot >= 0) return *slot;
    if (m->np == m->pcap) {
        size_t nc = m->pcap ? m->pcap * 2 : 4096;
        uint64_t *k = realloc(m->pkey, nc * sizeof *k);
        if (k) m->pkey = k;
        int64_t *c = realloc(m->pcnt, nc * sizeof *c);
        if (c) m->pcnt = c;
        wlist *w = realloc(m->pw, nc * sizeof *w);
        if (w) m->pw = w;
        uint32_t *st = realloc(m->pstamp, nc * sizeof *st);
        if (st) m->pstamp = st;
        if (!k || !c || !w || !st) { m->oom = 1; return -1; }
        m->pcap = nc;
    }
    size_t p = m->np++;
    m->pkey[p] = key; m->pcnt[p] = 0; m->pw[p] = (wlist){ 0 }; m->pstamp[p] = 0;
    *slot = (int64_t)p;
    return (int64_t)p;
}

static void wlist_add(merger *m, wlist *l, int32_t w) {
    if (l->n && l->w[l->n - 1] == w) return;
    if (l->n == l->cap) {
        uint32_t nc = l->cap ? l->cap * 2 : 4;
        int32_t *p = realloc(l->w, nc * sizeof *p);
        if (!p) { m->oom = 1; return; }
        l->w = p; l->cap = nc;
    }
    l->w[l->n++] = w;
}

static void merger_release(merger *m) {
    free(m->arena); free(m->toff); free(m->tlen);
    free(m->sym); free(m->woff); free(m->wlen); free(m->wcnt); free(m->wstamp);
    av_u64map_release(&m->pidx);
    for (size_t p = 0; p < m->np; p++) free(m->pw[p].w);
    free(m->pkey); free(m->pcnt); free(m->pw); free(m->pstamp); free(m->heap);
}

/* Apply merge (a, b) -> nt to every word holding it; k is the merge index. */
static void apply_merge(merger *m, uint32_t p, int32_t a, int32_t b, int32_t nt, uint32_t k) {
    wlist lst = m->pw[p];
    m->pw[p] = (wlist){ 0 };
    uint32_t *touched = NULL;
    size_t nt_n = 0, nt_cap = 0;
    for (uint32_t i = 0; i < lst.n && !m->oom; i++) {
        int32_t w = lst.w[i];
        if (m->wstamp[w] == k) continue;
        m->wstamp[w] = k;
        int32_t *s = m->sym + m->woff[w];
        int32_t n = m->wlen[w];
        int found = 0;
        for (int32_t j = 0; j + 1 < n; j++)
            if (s[j] == a && s[j + 1] == b) { found = 1; break; }
        if (!found) continue;
        int64_t f = m->wcnt[w];
        for (int32_t j = 0; j + 1 < n; j++) {
            int64_t q = pair_get(m, s[j], s[j + 1]);
            if (q >= 0) m->pcnt[q] -= f;
        }
        int32_t o = 0;
        for (int32_t j = 0; j < n; j++) {
            if (j + 1 < n && s[j] == a && s[j + 1] == b) { s[o++] = nt; j++; }
            else s[o++] = s[j];
        }
        m->wlen[w] = n = o;
        for (int32_t j = 0; j + 1 < n; j++) {
            int64_t q = pair_get(m, s[j], s[j + 1]);
            if (q < 0) break;
            m->pcnt[q] += f;
            if (s[j] != nt && s[j + 1] != nt) continue;
            wlist_add(m, &m->pw[q], w);
            if (m->pstamp[q] != k) {
                m->pstamp[q] = k;
                if (nt_n == nt_cap) {
                    nt_cap = nt_cap ? nt_cap * 2 : 64;
                    uint32_t *np = realloc(touched, nt_cap * sizeof *np);
                    if (!np) { m->oom = 1; break; }
                    touched = np;
                }
                touched[nt_n++] = (uint32_t)q;
            }
        }
    }
    for (size_t i = 0; i < nt_n && !m->oom; i++)
        if (m->pcnt[touched[i]] > 0) heap_push(m, m->pcnt[touched[i]], touched[i]);
    free(touched);
    free(lst.w);
}

/* ---- driver ------------------------------------------------------------- */

static int build_result(merger *m, const trainer *t, int32_t n_merges, const int32_t *mg,
                        const int64_t *mc, bpe_result **out, av_err *err) {
    bpe_result *r = calloc(1, sizeof *r);
    if (!r) return av_errf(err, AV_ENOMEM, "bpe_train: out of memory");
    *out = r;
    r->n_vocab = m->ntok;
    r->n_special = (int32_t)t->n_sp;
    r->n_merges = n_merges;
    r->n_words = m->nw;
    r->vocab = calloc((size_t)m->ntok, sizeof *r->vocab);
    r->merges = malloc(((size_t)n_merges + 1) * 2 * sizeof *r->merges);
    r->merge_counts = malloc(((size_t)n_merges + 1) * sizeof *r->merge_counts);
    if (!r->vocab || !r->merges || !r->merge_counts) return av_errf(err, AV_ENOMEM, "bpe_train: out of memory");
    for (int32_t i = 0; i < m->ntok; i++) {
        char *s = malloc(m->tlen[i] + 1);
        if (!s) return av_errf(err, AV_ENOMEM, "bpe_train: out of memory");
        memcpy(s, m->arena + m->toff[i], m->tlen[i]);
        s[m->tlen[i]] = 0;
        r->vocab[i] = (av_str){ m->tlen[i], s };
    }
    if (n_merges) {
        memcpy(r->merges, mg, (size_t)n_merges * 2 * sizeof *mg);
        memcpy(r->merge_counts, mc, (size_t)n_merges * sizeof *mc);
    }
    return 0;
}

/* Turn the counted pre-tokens into words and run the merge loop. */
static int train_merges(const trainer *t, bpe_result **out, av_err *err) {
    const bpe_train_opts *o = t->o;
    merger m = { 0 };
    int32_t *mg = NULL;
    int64_t *mc = NULL;
    int rc = 0;
    av_u64map_init(&m.pidx);
    counter *g = &t->ctr[0];
    for (int th = 1; th < t->n_threads && !g->oom; th++) { /* merge thread tables into table 0 */
        counter *c = &t->ctr[th];
        for (size_t j = 0; j < c->map.cap; j++)
            if (c->map.hashes[j])
                counter_add(g, c->map.arena + c->map.offs[j], c->map.lens[j], c->cnt[c->map.vals[j]]);
    }
    for (int th = 0; th < t->n_threads; th++)
        if (t->ctr[th].oom) { rc = av_errf(err, AV_ENOMEM, "bpe_train: out of memory counting pre-tokens"); goto fail; }
    /* tokens: specials, then the 256 bytes in bytes_to_unicode code point order */
    for (size_t i = 0; i < t->n_sp; i++) add_token(&m, t->sp[i], t->sp_len[i]);
    int32_t byte_id[256];
    {
        int order[256], n = 0;
        for (int b = 0; b < 256; b++) order[n++] = b;
        for (int i = 1; i < 256; i++) { /* insertion sort by mapped code point */
            int x = order[i], j = i;
            while (j > 0 && tok_byte_to_cp[order[j - 1]] > tok_byte_to_cp[x]) { order[j] = order[j - 1]; j--; }
            order[j] = x;
        }
        for (int i = 0; i < 256; i++) {
            char c = (char)order[i];
            byte_id[order[i]] = add_token(&m, &c, 1);
        }
    }
    /* words */
    m.nw = g->n;
    size_t nsym = g->map.arena_len;
    m.sym = malloc((nsym + 1) * sizeof *m.sym);
    m.woff = malloc((m.nw + 1) * sizeof *m.woff);
    m.wlen = malloc((m.nw + 1) * sizeof *m.wlen);
    m.wcnt = malloc((m.nw + 1) * sizeof *m.wcnt);
    m.wstamp = calloc(m.nw + 1, sizeof *m.wstamp);
    if (m.oom || !m.sym || !m.woff || !m.wlen || !m.wcnt || !m.wstamp) { rc = av_errf(err, AV_ENOMEM, "bpe_train: out of memory"); goto fail; }
    {
        size_t off = 0;
        for (size_t j = 0; j < g->map.cap; j++) {
            if (!g->map.hashes[j]) continue;
            int32_t w = g->map.vals[j];
            const unsigned char *s = (const unsigned char *)g->map.arena + g->map.offs[j];
            uint32_t L = g->map.lens[j];
            m.woff[w] = off; m.wlen[w] = (int32_t)L; m.wcnt[w] = g->cnt[w];
            for (uint32_t i = 0; i < L; i++) m.sym[off + i] = byte_id[s[i]];
            off += L;
        }
    }
    av_strmap_release(&g->map); /* the pre-token strings are no longer needed */
    free(g->cnt); g->cnt = NULL;
    for (size_t w = 0; w < m.nw && !m.oom; w++) {
        const int32_t *s = m.sym + m.woff[w];
        for (int32_t j = 0; j + 1 < m.wlen[w]; j++) {
            int64_t q = pair_get(&m, s[j], s[j + 1]);
            if (q < 0) break;
            m.pcnt[q] += m.wcnt[w];
            wlist_add(&m, &m.pw[q], (int32_t)w);
        }
    }
    for (size_t p = 0; p < m.np && !m.oom; p++) heap_push(&m, m.pcnt[p], (uint32_t)p);
    int32_t want = o->vocab_size - m.ntok, done = 0;
    mg = malloc(((size_t)want + 1) * 2 * sizeof *mg);
    mc = malloc(((size_t)want + 1) * sizeof *mc);
    if (m.oom || !mg || !mc) { rc = av_errf(err, AV_ENOMEM, "bpe_train: out of memory"); goto fail; }
    int64_t minf = o->min_frequency > 1 ? o->min_frequency : 1;
    while (done < want && m.nh && !m.oom) {
        hent e = heap_pop(&m);
        int64_t cur = m.pcnt[e.p];
        if (cur != e.cnt) { /* stale: re-queue with the true count */
            if (cur > 0) heap_push(&m, cur, e.p);
            continue;
        }
        if (cur < minf) break;
        int32_t a = (int32_t)(m.pkey[e.p] >> 32), b = (int32_t)(uint32_t)m.pkey[e.p];
        size_t la = m.tlen[a], lb = m.tlen[b];
        char *tmp = malloc(la + lb);
        if (!tmp) { m.oom = 1; break; }
        memcpy(tmp, m.arena + m.toff[a], la);
        memcpy(tmp + la, m.arena + m.toff[b], lb);
        int32_t nt = add_token(&m, tmp, la + lb);
        free(tmp);
        if (nt < 0) break;
        mg[2 * done] = a; mg[2 * done + 1] = b; mc[done] = cur;
        done++;
        apply_merge(&m, e.p, a, b, nt, (uint32_t)done);
        if (o->progress && (done % 64 == 0 || done == want)) o->progress(o->progress_ud, 1, (uint64_t)done, (uint64_t)want);
    }
    if (m.oom) { rc = av_errf(err, AV_ENOMEM, "bpe_train: out of memory while merging"); goto fail; }
    rc = build_result(&m, t, done, mg, mc, out, err);
fail:
    free(mg); free(mc);
    merger_release(&m);
    return rc;
}

static void trainer_release(trainer *t) {
    for (int i = 0; i < t->n_threads; i++) {
        if (t->ctr) { av_strmap_release(&t->ctr[i].map); free(t->ctr[i].cnt); }
    }
    free(t->ctr); free(t->sp_len);
    tok_pre_free(t->pre);
}

static int trainer_init(trainer *t, const bpe_train_opts *o, av_err *err) {
    memset(t, 0, sizeof *t);
    t->o = o;
    if (!o) return av_errf(err, AV_EINVAL, "bpe_train: no options");
    if (o->n_specials && !o->specials) return av_errf(err, AV_EINVAL, "bpe_train: n_specials set but no specials");
    if ((int64_t)o->vocab_size < 256 + (int64_t)o->n_specials)
        return av_errf(err, AV_EINVAL, "bpe_train: vocab size %d is smaller than 256 bytes + %zu special tokens",
                       o->vocab_size, o->n_specials);
    t->n_threads = o->n_threads > 0 ? o->n_threads : omp_get_max_threads();
    if (t->n_threads > 256) t->n_threads = 256;
    t->sp = o->specials; t->n_sp = o->n_specials;
    t->sp_len = calloc(t->n_sp + 1, sizeof *t->sp_len);
    t->ctr = calloc((size_t)t->n_threads, sizeof *t->ctr);
    if (!t->sp_len || !t->ctr) return av_errf(err, AV_ENOMEM, "bpe_train: out of memory");
    for (size_t i = 0; i < t->n_sp; i++) {
        if (!t->sp[i] || !t->sp[i][0]) return av_errf(err, AV_EINVAL, "bpe_train: special token %zu is empty", i);
        t->sp_len[i] = strlen(t->sp[i]);
        for (size_t j = 0; j < i; j++)
            if (!strcmp(t->sp[i], t->sp[j]))
                return av_errf(err, AV_EINVAL, "bpe_train: special token '%s' given twice", t->sp[i]);
    }
    for (int i = 0; i < t->n_threads; i++) av_strmap_init(&t->ctr[i].map);
    const char *pat = bpe_pattern_regex(o->pattern);
    if (!pat) pat = o->pattern;
    if (!pat || !*pat) return av_errf(err, AV_EINVAL, "bpe_train: empty pattern");
    int rc = tok_pre_new_patterns(&pat, 1, &t->pre, err);
    if (rc) { av_err_prefix(err, "bpe_train"); return rc == AV_EFORMAT ? (err->code = AV_EINVAL) : rc; }
    return 0;
}

static int finish(trainer *t, bpe_result **out, uint64_t nbytes, av_err *err) {
    uint64_t npre = 0;
    for (int i = 0; i < t->n_threads; i++) npre += t->ctr[i].total;
    int rc = train_merges(t, out, err);
    if (rc) { bpe_result_free(*out); *out = NULL; return rc; }
    bpe_result *r = *out;
    const char *pat = bpe_pattern_regex(t->o->pattern);
    r->pattern = strdup(pat ? pat : t->o->pattern);
    r->pattern_name = pat ? strdup(t->o->pattern ? t->o->pattern : "gpt2") : NULL;
    if (!r->pattern || (pat && !r->pattern_name)) {
        bpe_result_free(r); *out = NULL;
        return av_errf(err, AV_ENOMEM, "bpe_train: out of memory");
    }
    r->n_bytes = nbytes;
    r->n_pretokens = npre;
    return 0;
}

int bpe_train_mem(const char *text, size_t len, const bpe_train_opts *o, bpe_result **out, av_err *err) {
    trainer t;
    *out = NULL;
    int rc = trainer_init(&t, o, err);
    if (!rc) {
        count_window(&t, text, len);
        rc = finish(&t, out, len, err);
    }
    trainer_release(&t);
    return rc;
}

int bpe_train_files(const char *const *paths, size_t n, const bpe_train_opts *o, bpe_result **out, av_err *err) {
    trainer t;
    char *buf = NULL;
    FILE *f = NULL;
    *out = NULL;
    uint64_t total = 0, done = 0;
    int rc = trainer_init(&t, o, err);
    if (rc) goto fail;
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        if (stat(paths[i], &st) == 0) total += (uint64_t)st.st_size;
    }
    size_t win = o->window_bytes ? o->window_bytes : ((size_t)8 << 20) * (size_t)t.n_threads;
    if (win < 64) win = 64;
    size_t cap = win, len = 0;
    buf = malloc(cap);
    if (!buf) { rc = av_errf(err, AV_ENOMEM, "bpe_train: out of memory"); goto fail; }
    for (size_t i = 0; i < n; i++) {
        f = fopen(paths[i], "rb");
        if (!f) { rc = av_errf(err, AV_EIO, "%s: %s", paths[i], strerror(errno)); goto fail; }
        len = 0;
        int eof = 0;
        while (!eof) {
            while (len < cap && !eof) {
                size_t got = fread(buf + len, 1, cap - len, f);
                if (got == 0) {
                    if (ferror(f)) { rc = av_errf(err, AV_EIO, "%s: read error: %s", paths[i], strerror(errno)); goto fail; }
                    eof = 1;
                }
                len += got; done += got;
            }
            size_t c = eof ? len : find_cut(&t, buf, len, len / 2, len - 1);
            if (!eof && !c) c = find_cut(&t, buf, len, 0, len / 2);
            if (!c && !eof) { /* no cut point in the window: grow it */
                char *nb = realloc(buf, cap * 2);
                if (!nb) { rc = av_errf(err, AV_ENOMEM, "%s: out of memory (no pre-token boundary in %zu bytes)", paths[i], cap); goto fail; }
                buf = nb; cap *= 2;
                continue;
            }
            count_window(&t, buf, c);
            memmove(buf, buf + c, len - c);
            len -= c;
            if (o->progress) o->progress(o->progress_ud, 0, done, total);
        }
        fclose(f); f = NULL;
    }
    free(buf); buf = NULL;
    rc = finish(&t, out, done, err);
fail:
    if (f) fclose(f);
    free(buf);
    trainer_release(&t);
    return rc;
}

void bpe_result_free(bpe_result *r) {
    if (!r) return;
    if (r->vocab)
        for (int32_t i = 0; i < r->n_vocab; i++) free(r->vocab[i].s);
    free(r->vocab); free(r->merges); free(r->merge_counts);
    free(r->pattern); free(r->pattern_name);
    free(r);
}

char *bpe_bytes_to_mapped(const uint8_t *s, size_t n, size_t *out_len) {
    char *o = malloc(n * 2 + 1), *p = o;
    if (!o) return NULL;
    for (size_t i = 0; i < n; i++) {
        uint16_t cp = tok_byte_to_cp[s[i]];
        if (cp < 0x80) *p++ = (char)cp;
        else { *p++ = (char)(0xC0 | (cp >> 6)); *p++ = (char)(0x80 | (cp & 0x3F)); }
    }
    *p = 0;
    if (out_len) *out_len = (size_t)(p - o);
    return o;
}
