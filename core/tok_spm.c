/* tok_spm.c — SentencePiece-style BPE over scores, exactly as llama.cpp's
 * llm_tokenizer_spm: one symbol per UTF-8 char, repeatedly merge the adjacent
 * pair whose concatenation is the highest-scoring token (ties: leftmost), then
 * resegment: a symbol that is a token is emitted, otherwise its bytes as
 * byte-fallback tokens <0xXX> (unk without them). llama.cpp also keeps a
 * rev_merge map to split non-token symbols along their last merge, but a merge
 * only ever produces a token, so that lookup never succeeds: it is left out.
 * The input is already escaped (' ' -> U+2581) by the driver in tok.c. */
#include <stdlib.h>
#include <string.h>

#include "tok_impl.h"
#include "unicode.h"

typedef struct sym {
    int prev, next;
    const char *text;
    size_t n;
} sym;

typedef struct bigram {
    int left, right;
    float score;
    size_t size;
} bigram;

typedef struct spm {
    const tok *t;
    sym *syms;
    bigram *heap;
    size_t nheap, capheap;
} spm;

/* std::priority_queue order: a below b when a.score < b.score, or equal scores and a.left > b.left */
static int below(const bigram *a, const bigram *b) {
    return a->score < b->score || (a->score == b->score && a->left > b->left);
}

static int heap_push(spm *s, bigram b) {
    if (s->nheap == s->capheap) {
        size_t nc = s->capheap ? s->capheap * 2 : 64;
        bigram *p = realloc(s->heap, nc * sizeof *p);
        if (!p) return AV_ENOMEM;
        s->heap = p;
        s->capheap = nc;
    }
    size_t i = s->nheap++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!below(&s->heap[parent], &b)) break;
        s->heap[i] = s->heap[parent];
        i = parent;
    }
    s->heap[i] = b;
    return 0;
}

static bigram heap_pop(spm *s) {
    bigram top = s->heap[0], last = s->heap[--s->nheap];
    size_t i = 0, n = s->nheap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && below(&s->heap[c], &s->heap[c + 1])) c++;
        if (!below(&last, &s->heap[c])) break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (n) s->heap[i] = last;
    return top;
}

static int try_add(spm *s, int left, int right) {
    if (left == -1 || right == -1) return 0;
    const char *text = s->syms[left].text;
    size_t n = s->syms[left].n + s->syms[right].n;
    int32_t id = av_strmap_get(&s->t->text_to_id, text, n);
    if (id < 0) return 0;
    bigram b = { left, right, s->t->scores ? s->t->scores[id] : 0.0f, n };
    return heap_push(s, b);
}

static int resegment(spm *s, const sym *y, int32_t **ids, size_t *len, size_t *cap) {
    int32_t id = av_strmap_get(&s->t->text_to_id, y->text, y->n);
    if (id >= 0) return tok_push(ids, len, cap, id);
    for (size_t j = 0; j < y->n; j++) {
        int32_t b = s->t->byte_tok[(unsigned char)y->text[j]];
        if (tok_push(ids, len, cap, b >= 0 ? b : s->t->unk)) return AV_ENOMEM;
    }
    return 0;
}

int tok_spm_encode(const tok *t, const char *text, size_t n, int32_t **ids, size_t *len, size_t *cap) {
    if (n == 0) return 0;
    spm s = { .t = t };
    int rc = AV_ENOMEM;
    if (!(s.syms = malloc(n * sizeof *s.syms))) goto done;
    int nsym = 0;
    for (size_t off = 0; off < n;) {
        size_t l = av_utf8_len((unsigned char)text[off]);
        if (l > n - off) l = n - off;
        s.syms[nsym] = (sym){ nsym - 1, off + l == n ? -1 : nsym + 1, text + off, l };
        off += l;
        nsym++;
    }
    for (int i = 1; i < nsym; i++)
        if (try_add(&s, i - 1, i)) goto done;
    while (s.nheap) {
        bigram b = heap_pop(&s);
        sym *L = &s.syms[b.left], *R = &s.syms[b.right];
        if (L->n == 0 || R->n == 0 || L->n + R->n != b.size) continue;
        L->n += R->n;
        R->n = 0;
        L->next = R->next;
        if (R->next >= 0) s.syms[R->next].prev = b.left;
        if (try_add(&s, L->prev, b.left) || try_add(&s, b.left, L->next)) goto done;
    }
    for (int i = 0; i != -1; i = s.syms[i].next)
        if (resegment(&s, &s.syms[i], ids, len, cap)) goto done;
    rc = 0;
done:
    free(s.syms);
    free(s.heap);
    return rc;
}
