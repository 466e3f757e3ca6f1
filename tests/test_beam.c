/* test_beam.c — core/beam.{h,c} against brute force on a toy model.
 *
 * The toy model keeps each slot's whole token history and derives the
 * next-token logits from a hash of it, so a missing or wrong copy() or a
 * wrong position changes the answer (eval also rejects pos != history
 * length and slots outside beam_slots()). The reference enumerates every
 * sequence up to max_len directly from the logits function, independently of
 * the slot machinery, and ranks by sum(log p) / len^alpha. */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "beam.h"

#define MAXP 16   /* positions per slot */
#define MAXS 256  /* slots */
#define MAXV 64

typedef void (*logits_fn)(const int32_t *h, int n, int32_t V, uint64_t salt, float *out);

typedef struct toy {
    int32_t V;
    uint64_t salt;
    logits_fn fn;
    int n_slots;
    int32_t hist[MAXS][MAXP];
    int len[MAXS];
    int n_eval, n_copy, fail_at; /* fail_at: eval number that fails (0: never) */
    int broken_copy;             /* copy only the length, not the history */
} toy;

static uint64_t mix(uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* logits in [-1, 1) from a hash of the whole history: flat enough that the
 * best sequence is often not the greedy one */
static void hash_logits(const int32_t *h, int n, int32_t V, uint64_t salt, float *out) {
    uint64_t x = 0xcbf29ce484222325ull ^ salt;
    for (int i = 0; i < n; i++) x = mix(x ^ (uint64_t)(h[i] + 1) * 0x100000001b3ull);
    for (int32_t v = 0; v < V; v++)
        out[v] = (float)((double)(mix(x + (uint64_t)v) >> 40) / 16777216.0 * 2.0 - 1.0);
}

static int toy_eval(void *ud, int slot, int32_t tok, int pos, float *logits, av_err *err) {
    toy *t = ud;
    if (slot < 0 || slot >= t->n_slots)
        return av_errf(err, AV_EINVAL, "toy: slot %d outside [0, %d)", slot, t->n_slots);
    if (pos != t->len[slot] || pos >= MAXP)
        return av_errf(err, AV_EINVAL, "toy: eval at pos %d, slot %d holds %d", pos, slot,
                       t->len[slot]);
    if (tok < 0 || tok >= t->V) return av_errf(err, AV_EINVAL, "toy: token %d", (int)tok);
    if (++t->n_eval == t->fail_at) return av_errf(err, AV_EIO, "toy: eval %d failed", t->n_eval);
    t->hist[slot][pos] = tok;
    t->len[slot] = pos + 1;
    t->fn(t->hist[slot], pos + 1, t->V, t->salt, logits);
    return 0;
}

static int toy_copy(void *ud, int dst, int src, int n_pos, av_err *err) {
    toy *t = ud;
    if (dst < 0 || dst >= t->n_slots || src < 0 || src >= t->n_slots)
        return av_errf(err, AV_EINVAL, "toy: copy %d <- %d outside [0, %d)", dst, src, t->n_slots);
    if (n_pos > t->len[src])
        return av_errf(err, AV_EINVAL, "toy: copy %d positions, slot %d holds %d", n_pos, src,
                       t->len[src]);
    t->n_copy++;
    if (!t->broken_copy) memmove(t->hist[dst], t->hist[src], (size_t)n_pos * sizeof(int32_t));
    t->len[dst] = n_pos;
    return 0;
}

static const int32_t PROMPT[2] = {1, 2};

/* Fresh model for n_beams: slot 0 holds PROMPT, other slots junk. */
static beam_model toy_init(toy *t, int32_t V, uint64_t salt, logits_fn fn, int n_beams,
                           float *first) {
    memset(t, 0, sizeof *t);
    t->V = V;
    t->salt = salt;
    t->fn = fn;
    t->n_slots = beam_slots(n_beams);
    cr_assert_leq(t->n_slots, MAXS);
    for (int s = 0; s < t->n_slots; s++) {
        t->len[s] = 5;
        for (int i = 0; i < MAXP; i++) t->hist[s][i] = 0; /* differs from PROMPT */
    }
    memcpy(t->hist[0], PROMPT, sizeof PROMPT);
    t->len[0] = 2;
    fn(PROMPT, 2, V, salt, first);
    return (beam_model){t, V, toy_eval, toy_copy};
}

static double log_softmax_at(const float *x, int32_t V, int32_t id) {
    double m = -INFINITY, s = 0;
    for (int32_t i = 0; i < V; i++) m = fmax(m, x[i]);
    for (int32_t i = 0; i < V; i++) s += exp((double)x[i] - m);
    return (double)x[id] - m - log(s);
}

/* ------------------------------------------------------------ brute force */

typedef struct best {
    int32_t tok[MAXP];
    double lp[MAXP];
    int len;
    double score, second;
    int found;
} best;

static void enumerate(int32_t *h, int n_new, double sum, double *lps, int32_t V, uint64_t salt,
                      logits_fn fn, const beam_params *p, best *b) {
    float x[MAXV];
    fn(h, 2 + n_new, V, salt, x);
    for (int32_t v = 0; v < V; v++) {
        double lp = log_softmax_at(x, V, v);
        h[2 + n_new] = v;
        lps[n_new] = lp;
        int len = n_new + 1;
        if (v == p->eos || len == p->max_len) {
            double s = (sum + lp) / pow(len, p->length_penalty);
            if (!b->found || s > b->score) {
                b->second = b->found ? b->score : -INFINITY;
                b->score = s;
                b->len = len;
                memcpy(b->tok, h + 2, (size_t)len * sizeof *h);
                memcpy(b->lp, lps, (size_t)len * sizeof *lps);
                b->found = 1;
            } else if (s > b->second) {
                b->second = s;
            }
        } else {
            enumerate(h, len, sum + lp, lps, V, salt, fn, p, b);
        }
    }
}

static best brute(int32_t V, uint64_t salt, logits_fn fn, const beam_params *p) {
    best b = {0};
    int32_t h[MAXP + 2];
    double lps[MAXP];
    memcpy(h, PROMPT, sizeof PROMPT);
    enumerate(h, 0, 0, lps, V, salt, fn, p, &b);
    return b;
}

/* Greedy decoding straight from the logits function: argmax (ties: lowest
 * id) until EOS or max_len. Returns the length; *sum the total log p. */
static int greedy(int32_t V, uint64_t salt, const beam_params *p, int32_t *out, double *sum) {
    int32_t h[MAXP + 2];
    memcpy(h, PROMPT, sizeof PROMPT);
    int n = 0;
    *sum = 0;
    while (n < p->max_len) {
        float x[MAXV];
        hash_logits(h, 2 + n, V, salt, x);
        int32_t arg = 0;
        for (int32_t v = 1; v < V; v++)
            if (x[v] > x[arg]) arg = v;
        *sum += log_softmax_at(x, V, arg);
        out[n] = h[2 + n] = arg;
        n++;
        if (arg == p->eos) break;
    }
    return n;
}

typedef struct result {
    int32_t *tok;
    float *lp;
    int n;
    float score;
} result;

static result run(toy *t, int32_t V, uint64_t salt, logits_fn fn, const beam_params *p) {
    float first[MAXV];
    beam_model m = toy_init(t, V, salt, fn, p->n_beams, first);
    result r = {0};
    av_err e = {0};
    int rc = beam_search(&m, first, 2, p, &r.tok, &r.n, &r.lp, &r.score, &e);
    cr_assert_eq(rc, 0, "beam_search: %s", e.msg);
    return r;
}

static void result_free(result *r) {
    free(r->tok);
    free(r->lp);
}

static int ipow(int b, int e) {
    int r = 1;
    while (e--) r *= b;
    return r;
}

/* ------------------------------------------------------------------ tests */

Test(beam, exhaustive_equals_brute_force) {
    static const struct { int32_t V, eos; int max_len; } cfg[] = {
        {3, 0, 4}, {3, -1, 4}, {4, 3, 3}, {4, -1, 3}, {2, 1, 6}};
    static const float alphas[] = {0.0f, 1.0f, 0.5f};
    static toy t;
    int checked = 0, not_greedy = 0;
    for (size_t c = 0; c < sizeof cfg / sizeof *cfg; c++) {
        for (size_t a = 0; a < 3; a++) {
            for (uint64_t salt = 0; salt < 4; salt++) {
                beam_params p = {ipow(cfg[c].V, cfg[c].max_len) + (int)salt, cfg[c].max_len,
                                 alphas[a], cfg[c].eos};
                best b = brute(cfg[c].V, salt, hash_logits, &p);
                if (b.score - b.second < 1e-4) continue; /* near-tie: not a meaningful check */
                result r = run(&t, cfg[c].V, salt, hash_logits, &p);
                cr_assert_eq(r.n, b.len, "cfg %zu alpha %g salt %d", c, (double)alphas[a], (int)salt);
                cr_assert_arr_eq(r.tok, b.tok, (size_t)b.len * sizeof(int32_t));
                cr_assert_float_eq(r.score, b.score, 1e-5);
                double sum = 0;
                for (int i = 0; i < r.n; i++) {
                    cr_assert_float_eq(r.lp[i], b.lp[i], 1e-5);
                    sum += r.lp[i];
                }
                cr_assert_float_eq(sum / pow(r.n, alphas[a]), b.score, 1e-5);
                if (cfg[c].eos < 0) cr_assert_eq(r.n, cfg[c].max_len);
                if (cfg[c].V - (cfg[c].eos >= 0) >= 2) cr_assert_gt(t.n_copy, 0);
                int32_t g[MAXP];
                double gsum;
                int gn = greedy(cfg[c].V, salt, &p, g, &gsum);
                not_greedy += gn != b.len || memcmp(g, b.tok, (size_t)gn * sizeof *g);
                result_free(&r);
                checked++;
            }
        }
    }
    cr_assert_geq(checked, 50, "only %d configurations were tie-free", checked);
    /* the search must have found answers greedy decoding misses */
    cr_log_info("%d of %d exhaustive answers differ from greedy", not_greedy, checked);
    cr_assert_geq(not_greedy, checked / 6, "only %d of %d", not_greedy, checked);
}

/* n_beams = 1 is greedy decoding, including a vocabulary larger than the beam */
Test(beam, one_beam_is_greedy) {
    static toy t;
    static const struct { int32_t V, eos; int max_len; } cfg[] = {{3, 0, 8}, {4, -1, 6}, {50, 7, 12}};
    for (size_t c = 0; c < 3; c++) {
        for (uint64_t salt = 0; salt < 20; salt++) {
            beam_params p = {1, cfg[c].max_len, 0.7f, cfg[c].eos};
            int32_t want[MAXP];
            double sum;
            int n = greedy(cfg[c].V, salt, &p, want, &sum);
            result r = run(&t, cfg[c].V, salt, hash_logits, &p);
            cr_assert_eq(r.n, n, "cfg %zu salt %d", c, (int)salt);
            cr_assert_arr_eq(r.tok, want, (size_t)n * sizeof(int32_t));
            cr_assert_float_eq(r.score, sum / pow(n, 0.7), 1e-5);
            cr_assert_eq(t.n_copy, 0); /* a single child never needs a copy */
            result_free(&r);
        }
    }
}

Test(beam, repeated_calls_identical) {
    static toy t;
    beam_params p = {3, 7, 1.0f, 2};
    result a = run(&t, 5, 11, hash_logits, &p);
    int copies = t.n_copy;
    result b = run(&t, 5, 11, hash_logits, &p);
    cr_assert_eq(a.n, b.n);
    cr_assert_arr_eq(a.tok, b.tok, (size_t)a.n * sizeof(int32_t));
    cr_assert_arr_eq(a.lp, b.lp, (size_t)a.n * sizeof(float));
    cr_assert_eq(a.score, b.score);
    cr_assert_eq(t.n_copy, copies);
    result_free(&a);
    result_free(&b);
}

/* Reference beam search written from the definition, on token lists with
 * no slots: proposals = each live beam's top min(n_beams, V) tokens (ties:
 * lowest id); EOS / max_len proposals finish (best score wins, ties: first
 * found); the rest are stably sorted by cumulative log p and cut to n_beams. */
typedef struct rhyp { int32_t tok[MAXP]; int len; double sum; } rhyp;

static best ref_beam(int32_t V, uint64_t salt, const beam_params *p) {
    static rhyp live[MAXV], next[MAXV * MAXV];
    best b = {0};
    int n_live = 1;
    live[0].len = 0;
    live[0].sum = 0;
    int per = p->n_beams < V ? p->n_beams : V;
    while (n_live > 0) {
        int nn = 0;
        for (int k = 0; k < n_live; k++) {
            int32_t h[MAXP + 2], ids[MAXV];
            float x[MAXV];
            memcpy(h, PROMPT, sizeof PROMPT);
            memcpy(h + 2, live[k].tok, (size_t)live[k].len * sizeof *h);
            hash_logits(h, 2 + live[k].len, V, salt, x);
            for (int32_t v = 0; v < V; v++) ids[v] = v;
            for (int i = 0; i < per; i++) /* selection sort: best first */
                for (int j = i + 1; j < V; j++)
                    if (x[ids[j]] > x[ids[i]] || (x[ids[j]] == x[ids[i]] && ids[j] < ids[i])) {
                        int32_t t = ids[i];
                        ids[i] = ids[j];
                        ids[j] = t;
                    }
            for (int i = 0; i < per; i++) {
                rhyp c = live[k];
                c.tok[c.len++] = ids[i];
                c.sum += log_softmax_at(x, V, ids[i]);
                if (ids[i] == p->eos || c.len == p->max_len) {
                    double sc = c.sum / pow(c.len, p->length_penalty);
                    if (!b.found || sc > b.score) {
                        b.found = 1;
                        b.score = sc;
                        b.len = c.len;
                        memcpy(b.tok, c.tok, sizeof c.tok);
                    }
                } else {
                    int j = nn++; /* stable insertion by sum, descending */
                    while (j > 0 && next[j - 1].sum < c.sum) {
                        next[j] = next[j - 1];
                        j--;
                    }
                    next[j] = c;
                }
            }
        }
        n_live = nn < p->n_beams ? nn : p->n_beams;
        memcpy(live, next, (size_t)n_live * sizeof *live);
    }
    return b;
}

/* Widths where pruning matters: against the reference on many models. */
Test(beam, pruned_search_matches_reference) {
    static toy t;
    static const float alphas[] = {0.0f, 1.0f, 0.5f};
    int differs_from_exhaustive = 0, n = 0;
    for (uint64_t salt = 0; salt < 30; salt++) {
        for (int nb = 2; nb <= 5; nb++) {
            int32_t V = 5 + (int32_t)(salt % 4);
            beam_params p = {nb, 6, alphas[salt % 3], salt & 1 ? -1 : (int32_t)(salt % (uint64_t)V)};
            best want = ref_beam(V, salt, &p);
            result r = run(&t, V, salt, hash_logits, &p);
            cr_assert_eq(r.n, want.len, "salt %d beams %d", (int)salt, nb);
            cr_assert_arr_eq(r.tok, want.tok, (size_t)r.n * sizeof(int32_t), "salt %d beams %d",
                             (int)salt, nb);
            cr_assert_float_eq(r.score, want.score, 1e-5);
            result_free(&r);
            if (nb == 2 && salt < 10) { /* pruning loses the exhaustive answer at times */
                beam_params q = p;
                q.n_beams = 1 << 20;
                q.max_len = 4;
                p.max_len = 4;
                best ex = brute(V, salt, hash_logits, &q), w2 = ref_beam(V, salt, &p);
                differs_from_exhaustive += ex.len != w2.len || memcmp(ex.tok, w2.tok, sizeof ex.tok);
            }
            n++;
        }
    }
    cr_assert_eq(n, 120);
    cr_assert_gt(differs_from_exhaustive, 0, "two beams always found the optimum: weak test");
}

/* All logits equal: every hypothesis ties. The first found wins: token ties
 * go to the lowest id, so without EOS the answer is all zeros; with EOS = 0
 * and alpha 1 (every mean is log 1/3) it is [EOS] from the first step. */
static void flat_logits(const int32_t *h, int n, int32_t V, uint64_t salt, float *out) {
    (void)h;
    (void)n;
    (void)salt;
    for (int32_t i = 0; i < V; i++) out[i] = 0.25f;
}

Test(beam, ties_resolve_to_first_found) {
    static toy t;
    beam_params p = {2, 3, 1.0f, 0};
    result a = run(&t, 3, 0, flat_logits, &p);
    cr_assert_eq(a.n, 1);
    cr_assert_eq(a.tok[0], 0);
    cr_assert_float_eq(a.score, log(1.0 / 3.0), 1e-6);
    p.eos = -1;
    p.length_penalty = 0.0f;
    result b = run(&t, 3, 0, flat_logits, &p);
    cr_assert_eq(b.n, 3);
    cr_assert(b.tok[0] == 0 && b.tok[1] == 0 && b.tok[2] == 0);
    cr_assert_float_eq(b.score, 3 * log(1.0 / 3.0), 1e-5);
    result_free(&a);
    result_free(&b);
}

/* Hand-checkable: vocab {0 = EOS, 1 = a, 2 = b}, probabilities by prefix:
 *   start: EOS .05, a .55, b .40;  after a: .34 .33 .33;  after b: .90 .05 .05;
 *   later: .98 .01 .01.
 * Greedy takes a then EOS: .55 * .34 = .187. Two beams keep a and b and find
 * b EOS: .40 * .90 = .36, the best of all sequences. */
static void table_logits(const int32_t *h, int n, int32_t V, uint64_t salt, float *out) {
    (void)V;
    (void)salt;
    static const float P[4][3] = {{.05f, .55f, .40f}, {.34f, .33f, .33f}, {.90f, .05f, .05f},
                                  {.98f, .01f, .01f}};
    int row = n == 2 ? 0 : n == 3 ? h[2] : 3;
    for (int i = 0; i < 3; i++) out[i] = logf(P[row][i]);
}

Test(beam, two_beams_beat_greedy_by_hand) {
    static toy t;
    beam_params p = {1, 3, 0.0f, 0};
    result g = run(&t, 3, 0, table_logits, &p);
    cr_assert_eq(g.n, 2);
    cr_assert(g.tok[0] == 1 && g.tok[1] == 0);
    cr_assert_float_eq(g.score, log(.55 * .34), 1e-5);
    p.n_beams = 2;
    result b = run(&t, 3, 0, table_logits, &p);
    cr_assert_eq(b.n, 2);
    cr_assert(b.tok[0] == 2 && b.tok[1] == 0);
    cr_assert_float_eq(b.lp[0], log(.40), 1e-6);
    cr_assert_float_eq(b.lp[1], log(.90), 1e-6);
    cr_assert_float_eq(b.score, log(.40 * .90), 1e-5);
    result_free(&g);
    result_free(&b);
}

/* The harness can fail: copying only the length (stale history) must change
 * the exhaustive answer for most models. */
Test(beam, broken_copy_is_detected) {
    static toy t;
    int differ = 0;
    for (uint64_t salt = 0; salt < 20; salt++) {
        beam_params p = {81, 4, 1.0f, -1};
        best want = brute(3, salt, hash_logits, &p);
        float first[MAXV];
        beam_model m = toy_init(&t, 3, salt, hash_logits, p.n_beams, first);
        t.broken_copy = 1;
        int32_t *tok = NULL;
        int n = 0;
        float score = 0;
        cr_assert_eq(beam_search(&m, first, 2, &p, &tok, &n, NULL, &score, NULL), 0);
        differ += n != want.len || memcmp(tok, want.tok, (size_t)n * sizeof *tok) ||
                  fabs(score - want.score) > 1e-4;
        free(tok);
    }
    cr_log_info("broken copy changed %d of 20 answers", differ);
    cr_assert_geq(differ, 5, "broken copy changed only %d of 20 answers", differ);
}

Test(beam, model_error_propagates) {
    static toy t;
    float first[MAXV];
    beam_params p = {3, 6, 1.0f, -1};
    beam_model m = toy_init(&t, 4, 0, hash_logits, p.n_beams, first);
    t.fail_at = 5;
    int32_t *tok = (int32_t *)&t;
    float *lp = (float *)&t;
    int n = -1;
    float score;
    av_err e = {0};
    cr_assert_eq(beam_search(&m, first, 2, &p, &tok, &n, &lp, &score, &e), AV_EIO);
    cr_assert_null(tok);
    cr_assert_null(lp);
    cr_assert_eq(n, 0);
    cr_assert(strstr(e.msg, "eval 5 failed"), "%s", e.msg);
}

Test(beam, rejects_bad_parameters) {
    static toy t;
    float first[MAXV];
    beam_model m = toy_init(&t, 4, 0, hash_logits, 2, first);
    int32_t *tok;
    int n;
    float score;
    av_err e = {0};
    static const beam_params bad[] = {{0, 4, 1.0f, -1}, {2, 0, 1.0f, -1}, {2, 4, 1.0f, 4},
                                      {2, 4, 1.0f, -2}, {2, 4, NAN, -1}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cr_assert_eq(beam_search(&m, first, 2, &bad[i], &tok, &n, NULL, &score, &e), AV_EINVAL,
                     "case %zu", i);
        cr_assert_neq(e.msg[0], 0);
    }
    cr_assert_eq(beam_slots(3), 3);
}
