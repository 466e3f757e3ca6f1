/* sample.c — sampler chain (llama.cpp order and formulas), PRNG, stop strings.
 *
 * Candidates are ordered by (logit descending, id ascending) everywhere, so
 * ties resolve to the lowest id independently of qsort's implementation. */
#include "sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ rng */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void smp_rng_seed(smp_rng *r, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t smp_rng_next(smp_rng *r) {
    uint64_t *s = r->s;
    uint64_t res = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return res;
}

double smp_rng_uniform(smp_rng *r) { return (double)(smp_rng_next(r) >> 11) * 0x1.0p-53; }

/* --------------------------------------------------------------- params */

void smp_params_default(smp_params *p) {
    memset(p, 0, sizeof *p);
    p->temp = 0.8f;
    p->top_k = 40;
    p->top_p = 0.95f;
    p->min_p = 0.05f;
    p->repeat_penalty = 1.0f;
    p->repeat_last_n = 64;
}

/* ------------------------------------------------------------- stages */

/* a ranks before b */
static int cand_before(const smp_cand *a, const smp_cand *b) {
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static int cand_cmp(const void *pa, const void *pb) {
    const smp_cand *a = pa, *b = pb;
    return cand_before(a, b) ? -1 : cand_before(b, a) ? 1 : 0;
}

static void cands_sort(smp_cands *c) {
    if (!c->sorted) qsort(c->data, c->n, sizeof *c->data, cand_cmp);
    c->sorted = 1;
}

void smp_softmax(smp_cands *c) {
    if (c->n == 0) return;
    cands_sort(c);
    float max = c->data[0].logit;
    if (max == -INFINITY) { /* everything banned: deterministic lowest id */
        for (size_t i = 0; i < c->n; i++) c->data[i].p = i == 0;
        return;
    }
    double sum = 0;
    for (size_t i = 0; i < c->n; i++) {
        float e = expf(c->data[i].logit - max);
        c->data[i].p = e;
        sum += e;
    }
    for (size_t i = 0; i < c->n; i++) c->data[i].p = (float)(c->data[i].p / sum);
}

/* Min-heap on rank ("worst" at the root) used to select the k best in place. */
static void heap_down(smp_cand *h, size_t n, size_t i) {
    for (;;) {
        size_t l = 2 * i + 1, w = i;
        if (l < n && cand_before(&h[w], &h[l])) w = l;
        if (l + 1 < n && cand_before(&h[w], &h[l + 1])) w = l + 1;
        if (w == i) return;
        smp_cand t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

/* Move the k best candidates to data[0..k), sorted; the rest stay behind them
 * in some order. O(n log k). */
static void select_top(smp_cands *c, size_t k) {
    smp_cand *h = c->data;
    for (size_t i = k / 2; i-- > 0;) heap_down(h, k, i);
    for (size_t i = k; i < c->n; i++) {
        if (cand_before(&h[i], &h[0])) {
            smp_cand t = h[0];
            h[0] = h[i];
            h[i] = t;
            heap_down(h, k, 0);
        }
    }
    qsort(h, k, sizeof *h, cand_cmp);
}

void smp_top_k(smp_cands *c, int k) {
    if (k <= 0 || (size_t)k >= c->n) return;
    if (!c->sorted) select_top(c, (size_t)k); /* instead of sorting the whole vocabulary */
    c->n = (size_t)k;
    c->sorted = 1;
}

void smp_top_p(smp_cands *c, float p) {
    if (p >= 1.0f || c->n == 0) return;
    if (!c->sorted) {
        /* The kept prefix is usually short: sort only the best k, growing k,
         * with probabilities from the full sum (as smp_softmax would give). */
        float max = -INFINITY;
        for (size_t i = 0; i < c->n; i++) max = fmaxf(max, c->data[i].logit);
        if (max == -INFINITY) {
            smp_softmax(c);
            c->n = 1;
            return;
        }
        double sum = 0;
        for (size_t i = 0; i < c->n; i++) sum += expf(c->data[i].logit - max);
        for (size_t k = 64; k <= c->n / 8; k *= 8) { /* bounded extra work */
            select_top(c, k);
            double cum = 0;
            for (size_t i = 0; i < k; i++) {
                c->data[i].p = (float)(expf(c->data[i].logit - max) / sum);
                cum += c->data[i].p;
                if (cum >= p) {
                    c->n = i + 1;
                    c->sorted = 1;
                    return;
                }
            }
        }
    }
    smp_softmax(c);
    double cum = 0;
    for (size_t i = 0; i < c->n; i++) {
        cum += c->data[i].p;
        if (cum >= p) {
            c->n = i + 1;
            return;
        }
    }
}

void smp_min_p(smp_cands *c, float p) {
    if (p <= 0.0f || c->n == 0) return;
    float max = c->data[0].logit;
    if (!c->sorted)
        for (size_t i = 1; i < c->n; i++) max = fmaxf(max, c->data[i].logit);
    float min_logit = max + logf(p);
    size_t m = 0;
    for (size_t i = 0; i < c->n; i++) /* stable filter: keeps sortedness */
        if (c->data[i].logit >= min_logit) c->data[m++] = c->data[i];
    if (m == 0) { /* only when max is -inf or p is huge: keep one best */
        size_t b = 0;
        for (size_t i = 1; i < c->n; i++)
            if (cand_before(&c->data[i], &c->data[b])) b = i;
        c->data[0] = c->data[b];
        m = 1;
    }
    c->n = m;
}

void smp_temp(smp_cands *c, float t) {
    if (t <= 0.0f) { /* llama.cpp: only the best survives */
        size_t b = 0;
        for (size_t i = 1; i < c->n; i++)
            if (cand_before(&c->data[i], &c->data[b])) b = i;
        for (size_t i = 0; i < c->n; i++)
            if (i != b) c->data[i].logit = -INFINITY;
        return;
    }
    for (size_t i = 0; i < c->n; i++) c->data[i].logit /= t;
}

static void penalize(smp_cand *x, uint32_t count, float repeat, float freq, float presence) {
    if (x->logit <= 0) x->logit *= repeat;
    else x->logit /= repeat;
    x->logit -= (float)count * freq + (float)(count > 0) * presence;
}

/* Small open-addressing hash id -> count for the standalone penalty stage. */
void smp_penalties(smp_cands *c, const int32_t *hist, size_t n, float repeat, float freq,
                   float presence) {
    if (n == 0 || c->n == 0) return;
    if (repeat == 1.0f && freq == 0.0f && presence == 0.0f) return;
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    int32_t *key = malloc(cap * sizeof *key);
    uint32_t *cnt = calloc(cap, sizeof *cnt);
    if (!key || !cnt) { /* no memory: fall back to the quadratic count */
        free(key);
        free(cnt);
        for (size_t i = 0; i < c->n; i++) {
            uint32_t k = 0;
            for (size_t j = 0; j < n; j++) k += hist[j] == c->data[i].id;
            if (k) penalize(&c->data[i], k, repeat, freq, presence);
        }
        return;
    }
    size_t mask = cap - 1;
    for (size_t j = 0; j < n; j++) {
        size_t h = ((uint32_t)hist[j] * 0x9e3779b1u) & mask;
        while (cnt[h] && key[h] != hist[j]) h = (h + 1) & mask;
        key[h] = hist[j];
        cnt[h]++;
    }
    for (size_t i = 0; i < c->n; i++) {
        int32_t id = c->data[i].id;
        size_t h = ((uint32_t)id * 0x9e3779b1u) & mask;
        while (cnt[h] && key[h] != id) h = (h + 1) & mask;
        if (cnt[h]) penalize(&c->data[i], cnt[h], repeat, freq, presence);
    }
    free(key);
    free(cnt);
}

size_t smp_dist(smp_cands *c, smp_rng *r) {
    if (c->n == 0) return 0;
    smp_softmax(c);
    double total = 0;
    for (size_t i = 0; i < c->n; i++) total += c->data[i].p;
    double u = smp_rng_uniform(r) * total, cum = 0;
    size_t last = 0;
    for (size_t i = 0; i < c->n; i++) {
        if (c->data[i].p <= 0) continue; /* p == 0 (banned) is never drawn */
        cum += c->data[i].p;
        last = i;
        if (u < cum) return i;
    }
    return last; /* rounding left u just past the end */
}

/* -------------------------------------------------------------- sampler */

struct smp {
    smp_params p;
    smp_bias *bias;
    int32_t n_vocab;
    smp_cand *cand;   /* [n_vocab], reused for every token */
    uint32_t *counts; /* [n_vocab] occurrences inside the penalty window */
    int32_t *ring;    /* [repeat_last_n] when the window is finite */
    size_t ring_n, ring_head;
    smp_rng rng;
};

int smp_new(const smp_params *p, int32_t n_vocab, smp **out, av_err *err) {
    *out = NULL;
    if (n_vocab < 1) return av_errf(err, AV_EINVAL, "sampler: n_vocab %d < 1", (int)n_vocab);
    if (isnan(p->temp) || isnan(p->top_p) || isnan(p->min_p))
        return av_errf(err, AV_EINVAL, "sampler: temp/top_p/min_p is NaN");
    if (!(p->repeat_penalty > 0) || !isfinite(p->repeat_penalty))
        return av_errf(err, AV_EINVAL, "sampler: repeat_penalty %g must be finite and > 0",
                       (double)p->repeat_penalty);
    if (!isfinite(p->freq_penalty) || !isfinite(p->presence_penalty))
        return av_errf(err, AV_EINVAL, "sampler: frequency/presence penalty not finite");
    if (p->repeat_last_n < -1)
        return av_errf(err, AV_EINVAL, "sampler: repeat_last_n %d < -1", p->repeat_last_n);
    if (p->n_bias < 0 || (p->n_bias > 0 && !p->bias))
        return av_errf(err, AV_EINVAL, "sampler: %d bias entries without a list", p->n_bias);
    for (int i = 0; i < p->n_bias; i++) {
        if (p->bias[i].id < 0 || p->bias[i].id >= n_vocab)
            return av_errf(err, AV_EINVAL, "sampler: bias token id %d outside vocabulary [0, %d)",
                           (int)p->bias[i].id, (int)n_vocab);
        if (isnan(p->bias[i].value) || p->bias[i].value == INFINITY)
            return av_errf(err, AV_EINVAL, "sampler: bias for token %d is %g (NaN/+inf not allowed)",
                           (int)p->bias[i].id, (double)p->bias[i].value);
    }
    smp *s = calloc(1, sizeof *s);
    if (!s) goto nomem;
    s->p = *p;
    s->n_vocab = n_vocab;
    s->cand = malloc((size_t)n_vocab * sizeof *s->cand);
    s->counts = calloc((size_t)n_vocab, sizeof *s->counts);
    if (!s->cand || !s->counts) goto nomem;
    if (p->n_bias > 0) {
        s->bias = malloc((size_t)p->n_bias * sizeof *s->bias);
        if (!s->bias) goto nomem;
        memcpy(s->bias, p->bias, (size_t)p->n_bias * sizeof *s->bias);
    }
    s->p.bias = s->bias;
    if (p->repeat_last_n > 0) {
        s->ring = malloc((size_t)p->repeat_last_n * sizeof *s->ring);
        if (!s->ring) goto nomem;
    }
    smp_rng_seed(&s->rng, p->seed);
    *out = s;
    return 0;
nomem:
    smp_free(s);
    return av_errf(err, AV_ENOMEM, "sampler: out of memory for %d-token vocabulary", (int)n_vocab);
}

void smp_free(smp *s) {
    if (!s) return;
    free(s->bias);
    free(s->cand);
    free(s->counts);
    free(s->ring);
    free(s);
}

void smp_accept(smp *s, int32_t id) {
    if (id < 0 || id >= s->n_vocab || s->p.repeat_last_n == 0) return;
    if (s->p.repeat_last_n > 0) { /* ring: the oldest token leaves the window */
        size_t w = (size_t)s->p.repeat_last_n;
        if (s->ring_n == w) s->counts[s->ring[s->ring_head]]--;
        else s->ring_n++;
        s->ring[s->ring_head] = id;
        s->ring_head = (s->ring_head + 1) % w;
    }
    if (s->counts[id] < UINT32_MAX) s->counts[id]++;
}

static float raw_logprob(const float *logits, int32_t n, int32_t id) {
    double max = -INFINITY;
    for (int32_t i = 0; i < n; i++)
        if (logits[i] > max) max = logits[i];
    if (max == -INFINITY) return -INFINITY;
    double sum = 0;
    for (int32_t i = 0; i < n; i++) sum += exp((double)logits[i] - max);
    return (float)((double)logits[id] - max - log(sum));
}

int32_t smp_sample(smp *s, const float *logits, float *logprob) {
    const smp_params *p = &s->p;
    smp_cand *d = s->cand;
    for (int32_t i = 0; i < s->n_vocab; i++) {
        d[i].id = i;
        d[i].logit = isnan(logits[i]) ? -INFINITY : logits[i];
        d[i].p = 0;
    }
    for (int i = 0; i < p->n_bias; i++) d[s->bias[i].id].logit += s->bias[i].value;
    if (p->repeat_last_n != 0 &&
        (p->repeat_penalty != 1.0f || p->freq_penalty != 0.0f || p->presence_penalty != 0.0f))
        for (int32_t i = 0; i < s->n_vocab; i++) /* d[i].id == i still */
            if (s->counts[i])
                penalize(&d[i], s->counts[i], p->repeat_penalty, p->freq_penalty,
                         p->presence_penalty);
    int32_t id = 0;
    if (p->temp <= 0) {
        for (int32_t i = 1; i < s->n_vocab; i++)
            if (d[i].logit > d[id].logit) id = i;
    } else {
        smp_cands c = {d, (size_t)s->n_vocab, 0};
        smp_top_k(&c, p->top_k);
        smp_top_p(&c, p->top_p);
        smp_min_p(&c, p->min_p);
        smp_temp(&c, p->temp);
        id = c.data[smp_dist(&c, &s->rng)].id;
    }
    if (logprob) *logprob = raw_logprob(logits, s->n_vocab, id);
    return id;
}

/* --------------------------------------------------------- stop strings */

struct smp_stop {
    char **stops;
    size_t *lens;
    int n;
    size_t maxlen;
    char *buf;        /* held-back text, then the last emitted text */
    size_t len, cap;
    size_t drop;      /* bytes at the front emitted by the last call */
    int done;         /* a stop string completed: nothing more is emitted */
};

int smp_stop_new(const char *const *stops, int n, smp_stop **out, av_err *err) {
    *out = NULL;
    if (n < 0 || (n > 0 && !stops))
        return av_errf(err, AV_EINVAL, "stop strings: bad list (n = %d)", n);
    for (int i = 0; i < n; i++)
        if (!stops[i] || !stops[i][0])
            return av_errf(err, AV_EINVAL, "stop string %d is empty", i);
    smp_stop *s = calloc(1, sizeof *s);
    if (!s) goto nomem;
    if (n > 0) {
        s->stops = calloc((size_t)n, sizeof *s->stops);
        s->lens = calloc((size_t)n, sizeof *s->lens);
        if (!s->stops || !s->lens) goto nomem;
    }
    s->n = n;
    for (int i = 0; i < n; i++) {
        s->lens[i] = strlen(stops[i]);
        s->stops[i] = malloc(s->lens[i] + 1);
        if (!s->stops[i]) goto nomem;
        memcpy(s->stops[i], stops[i], s->lens[i] + 1);
        if (s->lens[i] > s->maxlen) s->maxlen = s->lens[i];
    }
    *out = s;
    return 0;
nomem:
    smp_stop_free(s);
    return av_errf(err, AV_ENOMEM, "stop strings: out of memory");
}

void smp_stop_free(smp_stop *s) {
    if (!s) return;
    for (int i = 0; i < s->n && s->stops; i++) free(s->stops[i]);
    free(s->stops);
    free(s->lens);
    free(s->buf);
    free(s);
}

/* Longest suffix of buf[0..len) that is a proper prefix of some stop string:
 * any stop occurrence spanning into later pieces must start inside it. */
static size_t held_suffix(const smp_stop *s) {
    size_t top = s->maxlen ? s->maxlen - 1 : 0;
    if (top > s->len) top = s->len;
    for (size_t l = top; l > 0; l--)
        for (int i = 0; i < s->n; i++)
            if (s->lens[i] > l && !memcmp(s->buf + s->len - l, s->stops[i], l)) return l;
    return 0;
}

int smp_stop_feed(smp_stop *s, const char *piece, size_t len, const char **emit,
                  size_t *emit_len) {
    *emit = "";
    *emit_len = 0;
    if (s->done) return 1;
    if (s->drop) memmove(s->buf, s->buf + s->drop, s->len - s->drop);
    s->len -= s->drop;
    s->drop = 0;
    if (len > s->cap - s->len) {
        if (len > SIZE_MAX / 2 - s->len) return AV_ENOMEM;
        size_t cap = s->cap ? s->cap : 64;
        while (cap < s->len + len) cap *= 2;
        char *b = realloc(s->buf, cap);
        if (!b) return AV_ENOMEM;
        s->buf = b;
        s->cap = cap;
    }
    if (len) memcpy(s->buf + s->len, piece, len);
    s->len += len;
    size_t first = SIZE_MAX;
    for (int i = 0; i < s->n && s->len; i++) {
        const char *m = memmem(s->buf, s->len, s->stops[i], s->lens[i]);
        if (m && (size_t)(m - s->buf) < first) first = (size_t)(m - s->buf);
    }
    if (first != SIZE_MAX) {
        s->done = 1;
        *emit = s->buf;
        *emit_len = first;
        return 1;
    }
    s->drop = s->len - held_suffix(s);
    if (s->buf) *emit = s->buf; /* never NULL, even before any text */
    *emit_len = s->drop;
    return 0;
}

void smp_stop_flush(smp_stop *s, const char **emit, size_t *emit_len) {
    *emit = "";
    *emit_len = 0;
    if (s->done || s->drop == s->len) return;
    *emit = s->buf + s->drop;
    *emit_len = s->len - s->drop;
    s->drop = s->len;
}
