/* gen.c — the generation loop of `anvil run`: prompt evaluation in batches,
 * then sampling (or beam search) one token at a time, streaming each token's
 * text through the stop-string filter. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "beam.h"
#include "progress.h"
#include "run.h"

int run_buf_add(run_buf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *ns = realloc(b->s, cap);
        if (!ns) return AV_ENOMEM;
        b->s = ns;
        b->cap = cap;
    }
    if (n) memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = '\0';
    return 0;
}

void run_result_release(run_result *r) {
    free(r->ids);
    free(r->logprobs);
    free(r->text.s);
    memset(r, 0, sizeof *r);
}

static int push_token(run_result *r, int32_t id, float lp) {
    if (r->n == r->cap) {
        int cap = r->cap ? r->cap * 2 : 256;
        int32_t *ni = realloc(r->ids, (size_t)cap * sizeof *ni);
        if (!ni) return AV_ENOMEM;
        r->ids = ni;
        float *nl = realloc(r->logprobs, (size_t)cap * sizeof *nl);
        if (!nl) return AV_ENOMEM;
        r->logprobs = nl;
        r->cap = cap;
    }
    r->ids[r->n] = id;
    r->logprobs[r->n] = lp;
    r->n++;
    return 0;
}

/* tok_decode drops the leading space of a sequence's first token (as
 * llama.cpp's detokenizer does), while llama_token_to_piece does not: decode
 * [prev, id] and keep what follows decode([prev]). */
int run_piece(const tok *t, int32_t prev, int32_t id, run_buf *b, av_err *err) {
    int32_t pair[2] = {prev, id};
    char *a = NULL, *p = NULL;
    size_t al = 0, pl = 0;
    int rc;
    if (prev >= 0) {
        if ((rc = tok_decode(t, pair, 2, 1, &p, &pl, err))) return rc;
        if ((rc = tok_decode(t, pair, 1, 1, &a, &al, err))) { free(p); return rc; }
        if (pl >= al && !memcmp(p, a, al)) {
            rc = run_buf_add(b, p + al, pl - al);
            free(a);
            free(p);
            if (rc) return av_errf(err, rc, "out of memory");
            return 0;
        }
        free(a);
        free(p);
    }
    /* no previous token, or a decoder that rewrites across tokens (clean-up of
     * spaces before punctuation): the token alone */
    if ((rc = tok_decode(t, &id, 1, 1, &p, &pl, err))) return rc;
    rc = run_buf_add(b, p, pl);
    free(p);
    return rc ? av_errf(err, rc, "out of memory") : 0;
}

static int emit(run_result *r, FILE *out, const char *s, size_t n, av_err *err) {
    if (!n) return 0;
    if (run_buf_add(&r->text, s, n)) return av_errf(err, AV_ENOMEM, "out of memory");
    if (out) {
        if (fwrite(s, 1, n, out) != n || fflush(out))
            return av_errf(err, AV_EIO, "cannot write the output");
    }
    return 0;
}

static int eval_prompt(llm_ctx *c, const int32_t *prompt, int n_prompt, int nb, int nt,
                       float *logits, av_err *err) {
    for (int p = 0; p < n_prompt; p += nb) {
        int n = n_prompt - p < nb ? n_prompt - p : nb;
        int rc = llm_eval(c, prompt + p, n, p, logits, 0, nt, err);
        if (rc) return rc;
    }
    return 0;
}

/* ---- generated tokens -> ids, logprobs and stop-filtered text ------------ */

typedef struct text_sink {
    run_result *r;
    const tok *t;
    smp_stop *st;
    FILE *out;
    run_buf piece;
    int32_t prev; /* the token before, for run_piece */
} text_sink;

/* Record id and stream its text; *stopped = 1 when a stop string completed. */
static int sink_take(text_sink *k, int32_t id, float lp, int *stopped, av_err *err) {
    int rc;
    if ((rc = push_token(k->r, id, lp))) return av_errf(err, rc, "out of memory");
    k->piece.n = 0;
    if ((rc = run_piece(k->t, k->prev, id, &k->piece, err))) return rc;
    k->prev = id;
    const char *e;
    size_t el;
    *stopped = smp_stop_feed(k->st, k->piece.s ? k->piece.s : "", k->piece.n, &e, &el);
    if (*stopped < 0) return av_errf(err, *stopped, "out of memory");
    return emit(k->r, k->out, e, el, err);
}

/* End of generation: the text held back for a possible stop string. */
static int sink_finish(text_sink *k, int stopped, av_err *err) {
    if (stopped) {
        k->r->stop_reason = "stop";
        return 0;
    }
    const char *e;
    size_t el;
    smp_stop_flush(k->st, &e, &el);
    return emit(k->r, k->out, e, el, err);
}

/* ---- beam search ---------------------------------------------------------- */

typedef struct beam_ud {
    llm_ctx **slots;
    int n_threads;
} beam_ud;

static int beam_eval(void *ud, int slot, int32_t tok, int pos, float *logits, av_err *err) {
    beam_ud *u = ud;
    return llm_eval(u->slots[slot], &tok, 1, pos, logits, 0, u->n_threads, err);
}

static int beam_copy(void *ud, int dst, int src, int n_pos, av_err *err) {
    beam_ud *u = ud;
    return llm_ctx_copy(u->slots[dst], u->slots[src], n_pos, err);
}

static int run_beams(const run_opts *o, const llm *l, const tok *t, const int32_t *prompt,
                     int n_prompt, int n_ctx, FILE *out, run_result *r, av_err *err) {
    const int V = l->hp.n_vocab, nt = o->n_threads;
    int nb = o->n_batch < n_prompt ? o->n_batch : n_prompt;
    int n_slots = beam_slots(o->beams), rc = 0;
    llm_ctx **slots = calloc((size_t)n_slots, sizeof *slots);
    float *logits = malloc((size_t)V * sizeof *logits), *lps = NULL;
    int32_t *ids = NULL;
    smp_stop *st = NULL;
    if (!slots || !logits) { rc = av_errf(err, AV_ENOMEM, "out of memory"); goto done; }
    for (int i = 0; i < n_slots; i++)
        if ((rc = llm_ctx_new(l, n_ctx, i ? 1 : nb, &slots[i], err))) goto done;
    double t0 = av_now();
    if ((rc = eval_prompt(slots[0], prompt, n_prompt, nb, nt, logits, err))) goto done;
    double t1 = av_now();
    r->prompt_s = t1 - t0;

    /* every new token but the last is evaluated at positions n_prompt.. < n_ctx */
    int room = n_ctx - n_prompt;
    int max_len = o->n_predict >= 0 && o->n_predict <= room ? o->n_predict : room;
    int32_t eos = o->ignore_eos ? -1 : tok_eos(t);
    int n = 0;
    float score = 0;
    if (max_len > 0) {
        beam_ud u = {slots, nt};
        beam_model bm = {&u, V, beam_eval, beam_copy};
        beam_params bp = {o->beams, max_len, o->length_penalty, eos};
        if ((rc = beam_search(&bm, logits, n_prompt, &bp, &ids, &n, &lps, &score, err))) goto done;
    }
    r->gen_s = av_now() - t1;
    r->stop_reason = max_len == o->n_predict ? "length" : "context";
    if (n > 0 && eos >= 0 && ids[n - 1] == eos) {
        n--;
        r->stop_reason = "eos";
    }

    /* the best hypothesis' text, cut at the first stop string */
    if ((rc = smp_stop_new(o->stops, o->n_stops, &st, err))) goto done;
    text_sink k = {r, t, st, out, {0}, prompt[n_prompt - 1]};
    int stopped = 0;
    for (int i = 0; i < n && !stopped && rc == 0; i++)
        rc = sink_take(&k, ids[i], lps ? lps[i] : 0, &stopped, err);
    if (rc == 0) rc = sink_finish(&k, stopped, err);
    free(k.piece.s);
done:
    for (int i = 0; slots && i < n_slots; i++) llm_ctx_free(slots[i]);
    free(slots);
    free(logits);
    free(ids);
    free(lps);
    smp_stop_free(st);
    return rc;
}

/* ---- sampling ------------------------------------------------------------- */

int run_generate(const run_opts *o, const llm *l, const tok *t, const int32_t *prompt,
                 int n_prompt, int n_ctx, FILE *out, run_result *r, av_err *err) {
    if (o->beams >= 1) return run_beams(o, l, t, prompt, n_prompt, n_ctx, out, r, err);
    const int V = l->hp.n_vocab, nt = o->n_threads;
    int nb = o->n_batch < n_prompt ? o->n_batch : n_prompt;
    int rc;
    llm_ctx *c = NULL;
    smp *s = NULL;
    smp_stop *st = NULL;
    float *logits = malloc((size_t)V * sizeof *logits);
    if (!logits) return av_errf(err, AV_ENOMEM, "out of memory");
    if ((rc = llm_ctx_new(l, n_ctx, nb, &c, err))) goto done;
    smp_params sp = o->sp;
    sp.bias = o->bias;
    sp.n_bias = o->n_bias;
    sp.seed = o->seed;
    if ((rc = smp_new(&sp, V, &s, err))) goto done;
    if ((rc = smp_stop_new(o->stops, o->n_stops, &st, err))) goto done;

    double t0 = av_now();
    if ((rc = eval_prompt(c, prompt, n_prompt, nb, nt, logits, err))) goto done;
    double t1 = av_now();
    r->prompt_s = t1 - t0;
    for (int i = 0; i < n_prompt; i++) smp_accept(s, prompt[i]);

    const int32_t eos = o->ignore_eos ? -1 : tok_eos(t);
    const int limit = o->n_predict >= 0 ? o->n_predict : INT_MAX;
    int pos = n_prompt, stopped = 0;
    text_sink k = {r, t, st, out, {0}, prompt[n_prompt - 1]};
    r->stop_reason = "length";
    while (r->n < limit) {
        float lp;
        int32_t id = smp_sample(s, logits, &lp);
        if (id == eos) {
            r->stop_reason = "eos";
            break;
        }
        smp_accept(s, id);
        if ((rc = sink_take(&k, id, lp, &stopped, err)) || stopped) break;
        if (r->n >= limit) break;
        if (pos >= n_ctx) {
            r->stop_reason = "context";
            break;
        }
        if ((rc = llm_eval(c, &id, 1, pos, logits, 0, nt, err))) break;
        pos++;
        r->n_eval++;
    }
    free(k.piece.s);
    if (rc || (rc = sink_finish(&k, stopped, err))) goto done;
    r->gen_s = av_now() - t1;
done:
    llm_ctx_free(c);
    smp_free(s);
    smp_stop_free(st);
    free(logits);
    return rc;
}
