/* stream.c — keep a conversion's memory flat while a writer streams tensors.
 *
 * Writers call a progress callback after every chunk with (done, total). From
 * those two numbers (and the padding the writer counts in total but never in
 * done) this follows which tensor is being written, and:
 *  - just before tensor i is written, applies its queued q/k row permutations
 *    (hf_perm_apply), so only one permuted copy exists at a time;
 *  - once tensor i is written, frees that copy;
 *  - drops the already-consumed pages of the input mmap from the process
 *    (madvise MADV_DONTNEED: they stay in the page cache, so nothing is read
 *    twice, but they no longer count in the resident set), inside the
 *    current tensor too (big embeddings).
 * Peak RSS is then about one tensor copy + the 4 MiB conversion and output
 * buffers, instead of the whole input. */
#include "stream.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int cv_stream_init(cv_stream *s, av_model *m, const hf_perm_queue *q, uint64_t pad_sum, av_bar *bar, av_err *err) {
    memset(s, 0, sizeof *s);
    s->m = m;
    s->q = q;
    s->pad_sum = pad_sum;
    s->bar = bar;
    s->page = (uintptr_t)sysconf(_SC_PAGESIZE);
    s->end = malloc((m->n_tensors + 1) * sizeof *s->end);
    s->released = calloc(m->n_tensors + 1, sizeof *s->released);
    s->prepared = calloc(m->n_tensors + 1, 1);
    if (!s->end || !s->released || !s->prepared) return av_errf(err, AV_ENOMEM, "out of memory");
    uint64_t sum = 0;
    for (size_t i = 0; i < m->n_tensors; i++) {
        int ok;
        sum += av_tensor_nbytes(&m->tensors[i], &ok);
        s->end[i] = sum;
    }
    s->sum = sum;
    return cv_stream_prepare(s, 0);
}

void cv_stream_release(cv_stream *s) {
    free(s->end);
    free(s->released);
    free(s->prepared);
}

/* Is p inside one of the model's mmaps? */
static int in_map(const cv_stream *s, const void *p, size_t n) {
    const uint8_t *c = p;
    for (size_t k = 0; k < s->m->n_maps; k++) {
        const av_map *mp = s->m->maps[k];
        if (mp->data && c >= mp->data && c + n <= mp->data + mp->size) return 1;
    }
    return 0;
}

/* Drop whole pages of [p + from, p + to) from the resident set (mmap views only). */
static void drop(const cv_stream *s, const void *p, size_t from, size_t to, size_t n) {
    if (!p || to <= from || !in_map(s, p, n)) return;
    uintptr_t a = ((uintptr_t)p + from + s->page - 1) & ~(s->page - 1), b = ((uintptr_t)p + to) & ~(s->page - 1);
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}

int cv_stream_prepare(cv_stream *s, size_t i) {
    if (i >= s->m->n_tensors || s->prepared[i]) return s->rc;
    s->prepared[i] = 1;
    av_tensor *t = &s->m->tensors[i];
    for (size_t k = 0; s->q && k < s->q->n && !s->rc; k++) {
        if (s->q->v[k].tensor != i) continue;
        const void *orig = t->data;
        int ok;
        size_t nb = av_tensor_src_nbytes(t, &ok);
        s->rc = hf_perm_apply(s->m, &s->q->v[k], &s->err);
        s->owned_by_us = 1;
        drop(s, orig, 0, nb, nb); /* the copy read the whole source */
    }
    return s->rc;
}

static void finish(cv_stream *s, size_t i) {
    av_tensor *t = &s->m->tensors[i];
    int ok;
    size_t nb = av_tensor_src_nbytes(t, &ok);
    drop(s, t->data, s->released[i], nb, nb);
    s->released[i] = nb;
    int ours = 0;
    for (size_t k = 0; s->q && k < s->q->n; k++) ours |= s->q->v[k].tensor == i;
    if (ours && t->owned) { /* our permuted copy: written, no longer needed */
        free(t->owned);
        t->owned = NULL;
        t->data = NULL;
    }
}

void cv_stream_progress(void *ud, uint64_t done, uint64_t total) {
    cv_stream *s = ud;
    if (s->bar) av_bar_update(s->bar, done, total);
    /* tensor bytes still to come = total - done - padding; pos = tensor bytes written */
    uint64_t rest = total >= done ? total - done : 0, pos;
    if (rest <= s->pad_sum) pos = s->sum;
    else if (rest - s->pad_sum >= s->sum) pos = 0;
    else pos = s->sum - (rest - s->pad_sum);
    size_t n = s->m->n_tensors;
    while (s->cur < n && pos >= s->end[s->cur]) {
        finish(s, s->cur);
        s->cur++;
        cv_stream_prepare(s, s->cur);
    }
    if (s->cur < n) { /* inside tensor cur: drop what has been consumed so far */
        av_tensor *t = &s->m->tensors[s->cur];
        int ok;
        uint64_t start = s->cur ? s->end[s->cur - 1] : 0, out_nb = s->end[s->cur] - start;
        size_t src_nb = av_tensor_src_nbytes(t, &ok);
        if (out_nb && pos > start) {
            size_t upto = (size_t)((double)(pos - start) / (double)out_nb * (double)src_nb);
            if (upto > s->released[s->cur] + (1u << 20)) {
                drop(s, t->data, s->released[s->cur], upto, src_nb);
                s->released[s->cur] = upto & ~(size_t)(s->page - 1);
            }
        }
    }
}
