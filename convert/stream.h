/* stream.h — per-tensor preparation and release while a writer streams (stream.c). */
#ifndef CV_STREAM_H
#define CV_STREAM_H

#include "hf.h"
#include "progress.h"

typedef struct cv_stream {
    av_model *m;
    const hf_perm_queue *q; /* queued q/k permutations (may be NULL) */
    uint64_t pad_sum;       /* bytes the writer counts in total but never in done */
    uint64_t sum, *end;     /* output bytes: all tensors, cumulative per tensor */
    size_t *released;       /* source bytes already dropped, per tensor */
    char *prepared;
    size_t cur;             /* first tensor not fully written */
    uintptr_t page;
    av_bar *bar;
    int owned_by_us;
    int rc;                 /* a failed permutation (out of memory): the output must be discarded */
    av_err err;
} cv_stream;

/* Set up for m (tensors in write order) and prepare tensor 0. Errors: AV_ENOMEM, permutation errors. */
int cv_stream_init(cv_stream *s, av_model *m, const hf_perm_queue *q, uint64_t pad_sum, av_bar *bar, av_err *err);
/* Apply tensor i's queued permutations (once). */
int cv_stream_prepare(cv_stream *s, size_t i);
/* av_progress_fn: ud is the cv_stream. */
void cv_stream_progress(void *ud, uint64_t done, uint64_t total);
void cv_stream_release(cv_stream *s);

#endif
