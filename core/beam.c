/* beam.c — beam search with length normalisation.
 *
 * Each step every live beam proposes its top min(n_beams, V) tokens. A
 * proposal that ends in EOS or reaches max_len is finished: it competes only
 * for the best finished hypothesis (by normalised score, ties to the earliest
 * found) and never takes a live place, so n_beams >= V^max_len explores every
 * sequence. The other proposals are ranked by cumulative log p (ties: parent
 * rank, then token rank) and the n_beams best stay alive.
 *
 * Slots: a child reuses its parent's slot when it is the parent's first kept
 * child (no copy); other children copy the parent into a slot that no
 * surviving parent holds. All copies happen before any eval, so a parent's
 * state is intact while its children are made; this needs only n_beams slots
 * (beam_slots() = n_beams). */
#include "beam.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int beam_slots(int n_beams) { return n_beams < 1 ? 1 : n_beams; }

typedef struct hyp {
    double sum; /* cumulative log p */
    int len;    /* new tokens */
    int slot;   /* state holding pos0 + len positions */
    int32_t *tok;
    float *lp;
} hyp;

typedef struct cand {
    double sum;
    float lp;
    int parent;
    int32_t tok;
} cand;

/* x[a] ranks before x[b]: higher logit, then lower id (NaN counts as -inf). */
static int tok_before(const float *x, int32_t a, int32_t b) {
    float xa = isnan(x[a]) ? -INFINITY : x[a], xb = isnan(x[b]) ? -INFINITY : x[b];
    return xa > xb || (xa == xb && a < b);
}

static void heap_down(const float *x, int32_t *h, int n, int i) {
    for (;;) {
        int l = 2 * i + 1, w = i;
        if (l < n && tok_before(x, h[w], h[l])) w = l;
        if (l + 1 < n && tok_before(x, h[w], h[l + 1])) w = l + 1;
        if (w == i) return;
        int32_t t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

/* out[0..m): the m best ids of x[0..n), best first; O(n log m). */
static void top_ids(const float *x, int32_t n, int m, int32_t *out) {
    for (int i = 0; i < m; i++) out[i] = i;
    for (int i = m / 2; i-- > 0;) heap_down(x, out, m, i); /* worst at the root */
    for (int32_t i = m; i < n; i++) {
        if (tok_before(x, i, out[0])) {
            out[0] = i;
            heap_down(x, out, m, 0);
        }
    }
    for (int k = m - 1; k > 0; k--) { /* pop the worst to the back */
        int32_t t = out[0];
        out[0] = out[k];
        out[k] = t;
        heap_down(x, out, k, 0);
    }
}

static double log_sum_exp(const float *x, int32_t n) {
    double max = -INFINITY;
    for (int32_t i = 0; i < n; i++)
        if (x[i] > max) max = x[i];
    if (max == -INFINITY) return -INFINITY;
    double s = 0;
    for (int32_t i = 0; i < n; i++)
        if (!isnan(x[i])) s += exp((double)x[i] - max);
    return max + log(s);
}

static int cand_cmp(const void *pa, const void *pb) {
    const cand *a = *(const cand *const *)pa, *b = *(const cand *const *)pb;
    if (a->sum != b->sum) return a->sum > b->sum ? -1 : 1;
    return a < b ? -1 : a > b; /* generation order */
}

static int mul_ok(size_t a, size_t b, size_t *r) {
    if (b && a > SIZE_MAX / b) return 0;
    *r = a * b;
    return 1;
}

int beam_search(const beam_model *m, const float *first_logits, int pos0, const beam_params *p,
                int32_t **out, int *n_out, float **logprobs, float *score, av_err *err) {
    if (out) *out = NULL;
    if (n_out) *n_out = 0;
    if (logprobs) *logprobs = NULL;
    if (!m || !m->eval || !m->copy || !first_logits || !p || !out || !n_out || !score)
        return av_errf(err, AV_EINVAL, "beam search: missing model, logits or output");
    const int32_t V = m->n_vocab;
    const int nb = p->n_beams, max_len = p->max_len;
    if (V < 1) return av_errf(err, AV_EINVAL, "beam search: n_vocab %d < 1", (int)V);
    if (nb < 1 || nb > INT_MAX / 2)
        return av_errf(err, AV_EINVAL, "beam search: n_beams %d outside [1, %d]", nb, INT_MAX / 2);
    if (max_len < 1) return av_errf(err, AV_EINVAL, "beam search: max_len %d < 1", max_len);
    if (pos0 < 0 || pos0 > INT_MAX - max_len)
        return av_errf(err, AV_EINVAL, "beam search: pos0 %d out of range", pos0);
    if (p->eos < -1 || p->eos >= V)
        return av_errf(err, AV_EINVAL, "beam search: eos %d outside [-1, %d)", (int)p->eos, (int)V);
    if (!isfinite(p->length_penalty))
        return av_errf(err, AV_EINVAL, "beam search: length_penalty is not finite");

    const int per = nb < V ? nb : (int)V; /* proposals per live beam */
    size_t n_cand, n_tok, n_lg;
    if (!mul_ok((size_t)nb, (size_t)per, &n_cand) || !mul_ok((size_t)nb, (size_t)max_len, &n_tok) ||
        !mul_ok((size_t)nb, (size_t)V, &n_lg) || n_lg > SIZE_MAX / sizeof(float) ||
        n_tok > SIZE_MAX / 2 / sizeof(float) || n_cand > SIZE_MAX / sizeof(cand))
        return av_errf(err, AV_EINVAL, "beam search: %d beams x %d tokens is too large", nb, (int)V);

    int rc = 0;
    hyp *h[2] = {calloc((size_t)nb, sizeof(hyp)), calloc((size_t)nb, sizeof(hyp))};
    int32_t *tokbuf = malloc(2 * n_tok * sizeof *tokbuf);
    float *lpbuf = malloc(2 * n_tok * sizeof *lpbuf);
    float *lg = malloc(n_lg * sizeof *lg);
    cand *cands = malloc(n_cand * sizeof *cands);
    cand **live = malloc(n_cand * sizeof *live);
    int32_t *top = malloc((size_t)per * sizeof *top);
    int *slot_busy = calloc((size_t)nb, sizeof *slot_busy);
    int *child_of = malloc((size_t)nb * sizeof *child_of); /* first kept child per parent */
    int32_t *best_tok = malloc((size_t)max_len * sizeof *best_tok);
    float *best_lp = malloc((size_t)max_len * sizeof *best_lp);
    if (!h[0] || !h[1] || !tokbuf || !lpbuf || !lg || !cands || !live || !top || !slot_busy ||
        !child_of || !best_tok || !best_lp) {
        rc = av_errf(err, AV_ENOMEM, "beam search: out of memory for %d beams", nb);
        goto done;
    }
    for (int b = 0; b < nb; b++)
        for (int k = 0; k < 2; k++) {
            h[k][b].tok = tokbuf + (size_t)k * n_tok + (size_t)b * (size_t)max_len;
            h[k][b].lp = lpbuf + (size_t)k * n_tok + (size_t)b * (size_t)max_len;
        }

    int cur = 0, n_live = 1, best_len = 0, have_best = 0;
    double best_score = 0;
    h[0][0].sum = 0;
    h[0][0].len = 0;
    h[0][0].slot = 0;
    while (n_live > 0) {
        hyp *H = h[cur], *N = h[cur ^ 1];
        size_t nc = 0;
        for (int b = 0; b < n_live; b++) {
            const float *x = H[b].len == 0 ? first_logits : lg + (size_t)b * (size_t)V;
            double lse = log_sum_exp(x, V);
            top_ids(x, V, per, top);
            for (int j = 0; j < per; j++) {
                double lp = isnan(x[top[j]]) ? -INFINITY : (double)x[top[j]] - lse;
                if (isnan(lp)) lp = -INFINITY; /* -inf - -inf: nothing is possible */
                cands[nc++] = (cand){H[b].sum + lp, (float)lp, b, top[j]};
            }
        }
        size_t n_keep = 0;
        for (size_t i = 0; i < nc; i++) {
            cand *c = &cands[i];
            const hyp *par = &H[c->parent];
            int len = par->len + 1;
            if (c->tok != p->eos && len < max_len) {
                live[n_keep++] = c;
                continue;
            }
            double s = c->sum / pow((double)len, (double)p->length_penalty);
            if (!have_best || s > best_score) { /* ties: the earlier found stays */
                have_best = 1;
                best_score = s;
                best_len = len;
                memcpy(best_tok, par->tok, (size_t)par->len * sizeof *best_tok);
                memcpy(best_lp, par->lp, (size_t)par->len * sizeof *best_lp);
                best_tok[par->len] = c->tok;
                best_lp[par->len] = c->lp;
            }
        }
        qsort(live, n_keep, sizeof *live, cand_cmp);
        if (n_keep > (size_t)nb) n_keep = (size_t)nb;

        /* children: first child of a parent inherits its slot, others copy */
        for (int b = 0; b < n_live; b++) child_of[b] = -1;
        memset(slot_busy, 0, (size_t)nb * sizeof *slot_busy);
        for (size_t i = 0; i < n_keep; i++) {
            const cand *c = live[i];
            const hyp *par = &H[c->parent];
            hyp *ch = &N[i];
            ch->sum = c->sum;
            ch->len = par->len + 1;
            memcpy(ch->tok, par->tok, (size_t)par->len * sizeof *ch->tok);
            memcpy(ch->lp, par->lp, (size_t)par->len * sizeof *ch->lp);
            ch->tok[par->len] = c->tok;
            ch->lp[par->len] = c->lp;
            ch->slot = -1;
            if (child_of[c->parent] < 0) {
                child_of[c->parent] = (int)i;
                ch->slot = par->slot;
                slot_busy[par->slot] = 1;
            }
        }
        int next_free = 0;
        for (size_t i = 0; i < n_keep; i++) {
            hyp *ch = &N[i];
            if (ch->slot >= 0) continue;
            const hyp *par = &H[live[i]->parent];
            while (slot_busy[next_free]) next_free++; /* always < nb, see header */
            ch->slot = next_free;
            slot_busy[next_free] = 1;
            rc = m->copy(m->ud, ch->slot, par->slot, pos0 + par->len, err);
            if (rc) goto model_fail;
        }
        for (size_t i = 0; i < n_keep; i++) {
            hyp *ch = &N[i];
            rc = m->eval(m->ud, ch->slot, ch->tok[ch->len - 1], pos0 + ch->len - 1,
                         lg + i * (size_t)V, err);
            if (rc) goto model_fail;
        }
        n_live = (int)n_keep;
        cur ^= 1;
    }

    *out = malloc((size_t)best_len * sizeof **out);
    if (logprobs) *logprobs = malloc((size_t)best_len * sizeof **logprobs);
    if (!*out || (logprobs && !*logprobs)) {
        free(*out);
        *out = NULL;
        if (logprobs) {
            free(*logprobs);
            *logprobs = NULL;
        }
        rc = av_errf(err, AV_ENOMEM, "beam search: out of memory for the result");
        goto done;
    }
    memcpy(*out, best_tok, (size_t)best_len * sizeof **out);
    if (logprobs) memcpy(*logprobs, best_lp, (size_t)best_len * sizeof **logprobs);
    *n_out = best_len;
    *score = (float)best_score;
    goto done;
model_fail:
    if (rc > 0) rc = av_errf(err, AV_EINVAL, "model callback returned %d", rc);
    av_err_prefix(err, "beam search");
done:
    free(h[0]);
    free(h[1]);
    free(tokbuf);
    free(lpbuf);
    free(lg);
    free(cands);
    free(live);
    free(top);
    free(slot_busy);
    free(child_of);
    free(best_tok);
    free(best_lp);
    return rc;
}
