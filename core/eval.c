/* eval.c — llama-perplexity-compatible perplexity and KL divergence. */
#include "eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

double ev_log_softmax(const float *logits, int n_vocab, int32_t tok) {
    float mx = logits[0];
    for (int i = 1; i < n_vocab; i++)
        if (logits[i] > mx) mx = logits[i];
    double sum = 0;
    for (int i = 0; i < n_vocab; i++) sum += expf(logits[i] - mx);
    return logits[tok] - mx - log(sum);
}

static void ppl_finish(ev_ppl *p) {
    if (p->n_scored == 0) return;
    const double mean = p->nll / (double)p->n_scored;
    p->ppl = exp(mean);
    double var = p->nll2 / (double)p->n_scored - mean * mean;
    p->ppl_stderr = var > 0 && p->n_scored > 1 ? sqrt(var / (double)(p->n_scored - 1)) * p->ppl : 0;
}

static void ppl_add(ev_ppl *p, double logp) {
    p->nll -= logp;
    p->nll2 += logp * logp;
    p->n_scored++;
}

static int check_opts(const ev_opts *o, size_t n, int *n_chunks, int *n_batch, av_err *err) {
    if (o->n_ctx < 4 || o->n_ctx % 2)
        return av_errf(err, AV_EINVAL, "context %d: need an even number >= 4", o->n_ctx);
    size_t chunks = n / (size_t)o->n_ctx;
    if (chunks < 1)
        return av_errf(err, AV_EINVAL, "%zu tokens: need at least one chunk of %d", n, o->n_ctx);
    if (o->max_chunks > 0 && chunks > (size_t)o->max_chunks) chunks = (size_t)o->max_chunks;
    if (chunks > (size_t)1 << 30) return av_errf(err, AV_EINVAL, "too many chunks");
    *n_chunks = (int)chunks;
    *n_batch = o->n_batch > 0 && o->n_batch < o->n_ctx ? o->n_batch : o->n_ctx;
    return 0;
}

/* Evaluate chunk k of the stream into c in batches; for every scored
 * position j (n_ctx/2 <= j <= n_ctx-2) call visit(ud, j, logits_j, next_token). */
typedef void (*visit_fn)(void *ud, int j, const float *logits, int32_t next);

static int run_chunk(const llm *l, llm_ctx *c, const int32_t *tokens, int k, const ev_opts *o,
                     int n_batch, int32_t *chunk, float *logits, visit_fn visit, void *ud,
                     av_err *err) {
    const int C = o->n_ctx, V = l->hp.n_vocab, first = C / 2;
    memcpy(chunk, tokens + (size_t)k * C, (size_t)C * sizeof *chunk);
    if (o->bos >= 0) chunk[0] = o->bos;
    for (int b = 0; b < C; b += n_batch) {
        const int nb = C - b < n_batch ? C - b : n_batch;
        /* logits only where they are scored: batches before first need none */
        const int want = b + nb > first;
        int rc = llm_eval(c, chunk + b, nb, b, want ? logits : NULL, 1, o->n_threads, err);
        if (rc) return rc;
        if (!want) continue;
        for (int i = 0; i < nb; i++) {
            const int j = b + i;
            if (j >= first && j <= C - 2) visit(ud, j, logits + (size_t)i * V, chunk[j + 1]);
        }
    }
    return 0;
}

typedef struct ppl_visit { ev_ppl *p; int V; } ppl_visit;

static void visit_ppl(void *ud, int j, const float *logits, int32_t next) {
    (void)j;
    ppl_visit *v = ud;
    ppl_add(v->p, ev_log_softmax(logits, v->V, next));
}

int ev_perplexity(const llm *l, const int32_t *tokens, size_t n, const ev_opts *o, ev_ppl *out,
                  av_err *err) {
    memset(out, 0, sizeof *out);
    int n_chunks, n_batch, rc;
    if ((rc = check_opts(o, n, &n_chunks, &n_batch, err))) return rc;
    llm_ctx *c = NULL;
    int32_t *chunk = malloc((size_t)o->n_ctx * sizeof *chunk);
    float *logits = malloc((size_t)n_batch * l->hp.n_vocab * sizeof *logits);
    if (!chunk || !logits) {
        rc = av_errf(err, AV_ENOMEM, "out of memory");
        goto done;
    }
    if ((rc = llm_ctx_new(l, o->n_ctx, n_batch, &c, err))) goto done;
    ppl_visit v = {out, l->hp.n_vocab};
    for (int k = 0; k < n_chunks; k++) {
        if ((rc = run_chunk(l, c, tokens, k, o, n_batch, chunk, logits, visit_ppl, &v, err)))
            goto done;
        out->n_chunks = k + 1;
        if (o->progress) o->progress(o->ud, k, n_chunks, exp(out->nll / (double)out->n_scored));
    }
    ppl_finish(out);
done:
    llm_ctx_free(c);
    free(chunk);
    free(logits);
    return rc;
}

/* ---- compare ---------------------------------------------------------- */

typedef struct cmp_state {
    ev_compare *r;
    int V;
    float *base_logits; /* [n_ctx][V] of the base model for the current chunk */
    double *lp;         /* [V] scratch: base log-probs */
    float *kld;         /* per scored position */
    size_t n_kld;
    double kld_sum, kld_sum2;
    int64_t agree;
} cmp_state;

static void visit_base(void *ud, int j, const float *logits, int32_t next) {
    cmp_state *s = ud;
    memcpy(s->base_logits + (size_t)j * s->V, logits, (size_t)s->V * sizeof *logits);
    ppl_add(&s->r->base, ev_log_softmax(logits, s->V, next));
}

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* log-softmax of x into lp (double), returns nothing */
static void log_softmax_all(const float *x, int n, double *lp) {
    float mx = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > mx) mx = x[i];
    double sum = 0;
    for (int i = 0; i < n; i++) sum += exp((double)x[i] - mx);
    const double ls = log(sum);
    for (int i = 0; i < n; i++) lp[i] = (double)x[i] - mx - ls;
}

static void visit_test(void *ud, int j, const float *logits, int32_t next) {
    cmp_state *s = ud;
    const float *b = s->base_logits + (size_t)j * s->V;
    ppl_add(&s->r->test, ev_log_softmax(logits, s->V, next));
    log_softmax_all(b, s->V, s->lp);
    /* KL(base || test) = sum p_b (log p_b - log p_t) */
    float mx = logits[0];
    for (int i = 1; i < s->V; i++)
        if (logits[i] > mx) mx = logits[i];
    double sum = 0;
    for (int i = 0; i < s->V; i++) sum += exp((double)logits[i] - mx);
    const double ls = log(sum);
    double kl = 0;
    for (int i = 0; i < s->V; i++) {
        const double lt = (double)logits[i] - mx - ls;
        kl += exp(s->lp[i]) * (s->lp[i] - lt);
    }
    if (kl < 0) kl = 0; /* rounding */
    s->kld[s->n_kld++] = (float)kl;
    s->kld_sum += kl;
    s->kld_sum2 += kl * kl;
    s->agree += argmax(b, s->V) == argmax(logits, s->V);
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* value at fraction q of sorted v[0..n) (linear interpolation) */
static double quantile(const float *v, size_t n, double q) {
    if (n == 0) return 0;
    double pos = q * (double)(n - 1);
    size_t i = (size_t)pos;
    if (i + 1 >= n) return v[n - 1];
    return v[i] + (pos - (double)i) * (v[i + 1] - v[i]);
}

int ev_compare_models(const llm *base, const llm *test, const int32_t *tokens, size_t n,
                      const ev_opts *o, ev_compare *out, av_err *err) {
    memset(out, 0, sizeof *out);
    if (base->hp.n_vocab != test->hp.n_vocab)
        return av_errf(err, AV_EINVAL, "vocabulary sizes differ (%d vs %d)", base->hp.n_vocab,
                       test->hp.n_vocab);
    int n_chunks, n_batch, rc;
    if ((rc = check_opts(o, n, &n_chunks, &n_batch, err))) return rc;
    const int V = base->hp.n_vocab, C = o->n_ctx;
    llm_ctx *cb = NULL, *ct = NULL;
    cmp_state s = {.r = out, .V = V};
    int32_t *chunk = malloc((size_t)C * sizeof *chunk);
    float *logits = malloc((size_t)n_batch * V * sizeof *logits);
    s.base_logits = malloc((size_t)C * V * sizeof *s.base_logits);
    s.lp = malloc((size_t)V * sizeof *s.lp);
    s.kld = malloc((size_t)n_chunks * (size_t)(C / 2) * sizeof *s.kld);
    if (!chunk || !logits || !s.base_logits || !s.lp || !s.kld) {
        rc = av_errf(err, AV_ENOMEM, "out of memory");
        goto done;
    }
    if ((rc = llm_ctx_new(base, C, n_batch, &cb, err)) || (rc = llm_ctx_new(test, C, n_batch, &ct, err)))
        goto done;
    for (int k = 0; k < n_chunks; k++) {
        if ((rc = run_chunk(base, cb, tokens, k, o, n_batch, chunk, logits, visit_base, &s, err)) ||
            (rc = run_chunk(test, ct, tokens, k, o, n_batch, chunk, logits, visit_test, &s, err)))
            goto done;
        out->base.n_chunks = out->test.n_chunks = k + 1;
        if (o->progress)
            o->progress(o->ud, k, n_chunks, exp(out->test.nll / (double)out->test.n_scored));
    }
    ppl_finish(&out->base);
    ppl_finish(&out->test);
    const double m = s.n_kld ? s.kld_sum / (double)s.n_kld : 0;
    out->kld_mean = m;
    double var = s.n_kld > 1 ? (s.kld_sum2 / (double)s.n_kld - m * m) : 0;
    out->kld_stderr = var > 0 ? sqrt(var / (double)(s.n_kld - 1)) : 0;
    qsort(s.kld, s.n_kld, sizeof *s.kld, cmp_float);
    out->kld_median = quantile(s.kld, s.n_kld, 0.5);
    out->kld_p99 = quantile(s.kld, s.n_kld, 0.99);
    out->kld_max = s.n_kld ? s.kld[s.n_kld - 1] : 0;
    out->top1 = s.n_kld ? (double)s.agree / (double)s.n_kld : 0;
    out->ppl_ratio = out->base.ppl > 0 ? out->test.ppl / out->base.ppl : 0;
done:
    llm_ctx_free(cb);
    llm_ctx_free(ct);
    free(chunk);
    free(logits);
    free(s.base_logits);
    free(s.lp);
    free(s.kld);
    return rc;
}

/* ---- importance matrix ---------------------------------------------- */

typedef struct im_entry {
    const llm_weight *w;
    float *sum2; /* [w->cols], summed in float as llama-imatrix does */
    double rows;
} im_entry;

typedef struct im_state {
    im_entry *e;
    int n;
} im_state;

static void observe_im(void *ud, const llm_weight *w, const float *X, int n) {
    im_state *s = ud;
    for (int k = 0; k < s->n; k++) {
        if (s->e[k].w != w) continue;
        float *acc = s->e[k].sum2;
        for (int i = 0; i < n; i++) {
            const float *x = X + (size_t)i * w->cols;
            for (int64_t j = 0; j < w->cols; j++) acc[j] += x[j] * x[j];
        }
        s->e[k].rows += n;
        return;
    }
}

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const im_entry *)a)->w->name, ((const im_entry *)b)->w->name);
}

int ev_imatrix(const llm *l, const int32_t *tokens, size_t n, const ev_opts *o, const char *dataset,
               av_model **out, av_err *err) {
    *out = NULL;
    int n_chunks, n_batch, rc;
    if ((rc = check_opts(o, n, &n_chunks, &n_batch, err))) return rc;
    const int C = o->n_ctx, L = l->hp.n_layer;
    im_state s = {calloc((size_t)L * 7, sizeof(im_entry)), L * 7};
    int32_t *chunk = malloc((size_t)C * sizeof *chunk);
    llm_ctx *c = NULL;
    av_model *m = NULL;
    if (!s.e || !chunk) goto oom;
    for (int i = 0; i < L; i++) {
        const llm_layer *ly = &l->layers[i];
        const llm_weight *ws[7] = {&ly->wq, &ly->wk, &ly->wv, &ly->wo, &ly->w_gate, &ly->w_up, &ly->w_down};
        for (int k = 0; k < 7; k++) {
            s.e[i * 7 + k].w = ws[k];
            if (!(s.e[i * 7 + k].sum2 = calloc((size_t)ws[k]->cols, sizeof(float)))) goto oom;
        }
    }
    if ((rc = llm_ctx_new(l, C, n_batch, &c, err))) goto done;
    llm_ctx_set_observer(c, observe_im, &s);
    for (int k = 0; k < n_chunks; k++) {
        memcpy(chunk, tokens + (size_t)k * C, (size_t)C * sizeof *chunk);
        if (o->bos >= 0) chunk[0] = o->bos;
        for (int b = 0; b < C; b += n_batch) {
            const int nb = C - b < n_batch ? C - b : n_batch;
            if ((rc = llm_eval(c, chunk + b, nb, b, NULL, 0, o->n_threads, err))) goto done;
        }
        if (o->progress) o->progress(o->ud, k, n_chunks, 0);
    }
    qsort(s.e, (size_t)s.n, sizeof *s.e, cmp_entry);
    if (!(m = av_model_new())) goto oom;
    const char *ds[1] = {dataset ? dataset : ""};
    if (av_kvs_set_str(&m->kv, "general.type", "imatrix") ||
        av_kvs_set_str_arr(&m->kv, "imatrix.datasets", ds, NULL, 1) ||
        av_kvs_set_u32(&m->kv, "imatrix.chunk_count", (uint32_t)n_chunks) ||
        av_kvs_set_u32(&m->kv, "imatrix.chunk_size", (uint32_t)C))
        goto oom;
    for (int k = 0; k < s.n; k++) {
        char name[512];
        int64_t shape[1] = {s.e[k].w->cols}, one[1] = {1};
        float *cnt = malloc(sizeof *cnt);
        if (!cnt) goto oom;
        *cnt = (float)s.e[k].rows;
        snprintf(name, sizeof name, "%s.in_sum2", s.e[k].w->name);
        if (!av_model_add_tensor(m, name, AV_F32, 1, shape, s.e[k].sum2, s.e[k].sum2)) {
            free(cnt);
            goto oom;
        }
        s.e[k].sum2 = NULL; /* the model owns it now */
        snprintf(name, sizeof name, "%s.counts", s.e[k].w->name);
        if (!av_model_add_tensor(m, name, AV_F32, 1, one, cnt, cnt)) {
            free(cnt);
            goto oom;
        }
    }
    *out = m;
    m = NULL;
    rc = 0;
    goto done;
oom:
    rc = av_errf(err, AV_ENOMEM, "out of memory");
done:
    for (int k = 0; s.e && k < s.n; k++) free(s.e[k].sum2);
    free(s.e);
    free(chunk);
    llm_ctx_free(c);
    av_model_free(m);
    return rc;
}
