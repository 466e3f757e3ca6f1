/* test_sample.c — core/sample.{h,c}: sampler stages, chain, PRNG, stop strings.
 *
 * Expected values are worked by hand from llama.cpp's definitions
 * (src/llama-sampling.cpp) on small known distributions; the PRNG vectors are
 * the published outputs of Vigna's reference splitmix64.c / xoshiro256starstar.c.
 * Thresholds are chosen away from exact ties with the distribution's own
 * values (e.g. min_p 0.29 / 0.31 rather than 0.3, whose cut p >= 0.15 lands
 * exactly on a candidate and is decided by float rounding). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "sample.h"

static const float P5[5] = {0.5f, 0.2f, 0.15f, 0.1f, 0.05f};

/* Candidates for P5 as logits log(p), listed in a scrambled order so the
 * unsorted code paths are exercised. */
static smp_cand g_buf[64];
static smp_cands p5_cands(void) {
    static const int order[5] = {3, 0, 4, 2, 1};
    for (int i = 0; i < 5; i++)
        g_buf[i] = (smp_cand){order[i], logf(P5[order[i]]), 0};
    return (smp_cands){g_buf, 5, 0};
}

/* The ids left in c as a bit set. */
static unsigned id_set(const smp_cands *c) {
    unsigned m = 0;
    for (size_t i = 0; i < c->n; i++) m |= 1u << c->data[i].id;
    return m;
}

/* ------------------------------------------------------------------ PRNG */

Test(rng, splitmix64_seeding_matches_reference) {
    smp_rng r;
    smp_rng_seed(&r, 0); /* splitmix64.c with x = 0: first three outputs */
    cr_assert_eq(r.s[0], 0xE220A8397B1DCDAFull);
    cr_assert_eq(r.s[1], 0x6E789E6AA1B965F4ull);
    cr_assert_eq(r.s[2], 0x06C45D188009454Full);
}

Test(rng, xoshiro256starstar_matches_reference) {
    /* xoshiro256starstar.c from state {0, 0, 0, 1} */
    static const uint64_t want[10] = {
        0x0000000000000000ull, 0x0000000000000000ull, 0x0000000000001680ull,
        0x02D0000000001680ull, 0x02D0005A2D001680ull, 0x0000005A2D0B4120ull,
        0x68B45A5A2D0B57A0ull, 0x68B48716AD000120ull, 0x1CB48716B2A00288ull,
        0x11B10070BDEB59BCull};
    smp_rng r = {{0, 0, 0, 1}};
    for (int i = 0; i < 10; i++) cr_assert_eq(smp_rng_next(&r), want[i], "output %d", i);
}

Test(rng, uniform_is_top_53_bits) {
    smp_rng a, b;
    smp_rng_seed(&a, 7);
    smp_rng_seed(&b, 7);
    for (int i = 0; i < 1000; i++) {
        double u = smp_rng_uniform(&a);
        cr_assert_eq(u, (double)(smp_rng_next(&b) >> 11) / 9007199254740992.0);
        cr_assert(u >= 0 && u < 1);
    }
}

/* ---------------------------------------------------------------- stages */

Test(stages, softmax_sorts_and_normalises) {
    smp_cands c = p5_cands();
    smp_softmax(&c);
    cr_assert(c.sorted);
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(c.data[i].id, i);
        cr_assert_float_eq(c.data[i].p, P5[i], 1e-6);
    }
}

Test(stages, top_k) {
    smp_cands c = p5_cands();
    smp_top_k(&c, 2);
    cr_assert_eq(c.n, 2);
    cr_assert_eq(id_set(&c), 0x3u); /* {0, 1} */
    c = p5_cands();
    smp_top_k(&c, 0); /* off */
    cr_assert_eq(c.n, 5);
    smp_top_k(&c, 9); /* k > n: everything */
    cr_assert_eq(c.n, 5);
    c = p5_cands();
    smp_softmax(&c);
    smp_top_k(&c, 3); /* sorted path */
    cr_assert_eq(id_set(&c), 0x7u);
}

static int ref_cmp(const void *a, const void *b) {
    const smp_cand *x = a, *y = b;
    if (x->logit != y->logit) return x->logit > y->logit ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

Test(stages, top_k_matches_full_sort_with_ties) {
    static smp_cand a[1000], ref[1000];
    uint64_t s = 1;
    for (int i = 0; i < 1000; i++) { /* few distinct values: many ties */
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        a[i] = (smp_cand){i, (float)(s >> 60), 0};
    }
    memcpy(ref, a, sizeof a);
    qsort(ref, 1000, sizeof *ref, ref_cmp);
    for (int k = 1; k <= 1000; k += 37) {
        smp_cand b[1000];
        memcpy(b, a, sizeof a);
        smp_cands c = {b, 1000, 0};
        smp_top_k(&c, k);
        smp_softmax(&c);
        cr_assert_eq(c.n, (size_t)k);
        for (int i = 0; i < k; i++) cr_assert_eq(c.data[i].id, ref[i].id, "k %d rank %d", k, i);
    }
}

Test(stages, top_p) {
    /* cumulative p: 0.5, 0.7, 0.85, 0.95, 1.0 */
    static const struct { float p; unsigned want; } cases[] = {
        {0.8f, 0x07u}, {0.45f, 0x01u}, {0.55f, 0x03u}, {0.86f, 0x0fu}, {1.0f, 0x1fu}, {0.0f, 0x01u}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        smp_cands c = p5_cands();
        smp_top_p(&c, cases[i].p);
        cr_assert_eq(id_set(&c), cases[i].want, "top_p %g kept %#x", (double)cases[i].p, id_set(&c));
    }
}

Test(stages, min_p_unsorted_and_sorted) {
    /* keep p >= min_p * 0.5: 0.29 -> p >= 0.145, 0.31 -> p >= 0.155 */
    static const struct { float p; unsigned want; } cases[] = {
        {0.29f, 0x07u}, {0.31f, 0x03u}, {0.0f, 0x1fu}, {0.09f, 0x1fu}, {0.11f, 0x0fu}, {5.0f, 0x01u}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        for (int sorted = 0; sorted < 2; sorted++) {
            smp_cands c = p5_cands();
            if (sorted) smp_softmax(&c);
            smp_min_p(&c, cases[i].p);
            cr_assert_eq(id_set(&c), cases[i].want, "min_p %g sorted %d kept %#x",
                         (double)cases[i].p, sorted, id_set(&c));
            if (sorted) /* filtering keeps the order */
                for (size_t j = 1; j < c.n; j++) cr_assert_gt(c.data[j - 1].logit, c.data[j].logit);
        }
    }
}

/* Large lists take the partial-sort path of top_p; check it against a full
 * sort and a double-precision softmax. */
Test(stages, top_p_large_matches_full_sort) {
    enum { N = 5000 };
    static smp_cand a[N], b[N];
    smp_rng r;
    smp_rng_seed(&r, 3);
    int checked = 0;
    for (int iter = 0; iter < 30; iter++) {
        double spread = 1.0 + iter % 6 * 3.0; /* from flat to peaky */
        for (int i = 0; i < N; i++)
            a[i] = (smp_cand){i, (float)(smp_rng_uniform(&r) * spread), 0};
        memcpy(b, a, sizeof a);
        qsort(b, N, sizeof *b, ref_cmp);
        double z = 0;
        for (int i = 0; i < N; i++) z += exp((double)b[i].logit - b[0].logit);
        const float ps[3] = {0.5f, 0.9f, 0.99f};
        for (int k = 0; k < 3; k++) {
            double cum = 0;
            int keep = 0;
            while (cum < ps[k]) cum += exp((double)b[keep++].logit - b[0].logit) / z;
            if (cum - ps[k] < 1e-5) continue; /* too close to call in float */
            smp_cand d[N];
            memcpy(d, a, sizeof a);
            smp_cands c = {d, N, 0};
            smp_top_p(&c, ps[k]);
            cr_assert(c.sorted);
            cr_assert_eq(c.n, (size_t)keep, "iter %d p %g: %zu vs %d", iter, (double)ps[k], c.n, keep);
            for (int i = 0; i < keep; i++) cr_assert_eq(c.data[i].id, b[i].id);
            checked++;
        }
    }
    cr_assert_geq(checked, 70, "checked %d", checked);
}

/* Exact boundaries: equal logits give p = 1/2 or 1/4 exactly, so the
 * comparisons are >= as in llama.cpp, not decided by rounding. */
Test(stages, top_p_and_min_p_boundaries_are_inclusive) {
    smp_cand d[4];
    for (int i = 0; i < 4; i++) d[i] = (smp_cand){i, 0.5f, 0};
    smp_cands c = {d, 2, 0};
    smp_top_p(&c, 0.5f); /* cumulative 0.5 >= 0.5 */
    cr_assert_eq(c.n, 1);
    cr_assert_eq(c.data[0].id, 0); /* tie: lowest id first */
    c = (smp_cands){d, 4, 0};
    smp_top_p(&c, 0.75f);
    cr_assert_eq(c.n, 3);
    for (int i = 0; i < 4; i++) d[i] = (smp_cand){i, i < 3 ? 0.5f : 0.0f, 0};
    c = (smp_cands){d, 4, 0};
    smp_min_p(&c, 1.0f); /* p_i >= 1 * p_max keeps every tied maximum */
    cr_assert_eq(id_set(&c), 0x7u);
}

Test(stages, temp) {
    smp_cand d[2] = {{0, 2.0f, 0}, {1, 0.0f, 0}};
    smp_cands c = {d, 2, 0};
    smp_temp(&c, 2.0f);
    cr_assert_float_eq(d[0].logit, 1.0f, 0);
    cr_assert_float_eq(d[1].logit, 0.0f, 0);
    smp_softmax(&c);
    cr_assert_float_eq(c.data[0].p, 1.0 / (1.0 + exp(-1.0)), 1e-6);
    smp_cand e[3] = {{0, 1.0f, 0}, {1, 3.0f, 0}, {2, 2.0f, 0}};
    smp_cands c2 = {e, 3, 0};
    smp_temp(&c2, 0.0f); /* llama.cpp: only the max survives */
    cr_assert(isinf(e[0].logit) && e[0].logit < 0);
    cr_assert_float_eq(e[1].logit, 3.0f, 0);
    cr_assert(isinf(e[2].logit) && e[2].logit < 0);
}

Test(stages, penalties_formula) {
    /* repeat 1.5, freq 0.1, presence 0.2; counts from hist: 0 x2, 1 x2, 2 x1,
     * 4 x1, 9 x1 (not a candidate, ignored), 3 x0 */
    smp_cand d[5] = {{0, 2.0f, 0}, {1, -1.0f, 0}, {2, 0.5f, 0}, {3, 3.0f, 0}, {4, 0.0f, 0}};
    const int32_t hist[] = {0, 1, 9, 0, 1, 2, 4};
    smp_cands c = {d, 5, 0};
    smp_penalties(&c, hist, 7, 1.5f, 0.1f, 0.2f);
    cr_assert_float_eq(d[0].logit, 2.0f / 1.5f - 0.2f - 0.2f, 1e-6);  /* > 0: divided */
    cr_assert_float_eq(d[1].logit, -1.0f * 1.5f - 0.2f - 0.2f, 1e-6); /* < 0: multiplied */
    cr_assert_float_eq(d[2].logit, 0.5f / 1.5f - 0.1f - 0.2f, 1e-6);
    cr_assert_float_eq(d[3].logit, 3.0f, 0);                          /* absent: unchanged */
    cr_assert_float_eq(d[4].logit, 0.0f - 0.1f - 0.2f, 1e-6);         /* 0 counts as <= 0 */
}

Test(stages, dist_frequencies) {
    smp_rng r;
    smp_rng_seed(&r, 12345);
    int counts[5] = {0};
    const int N = 200000;
    for (int i = 0; i < N; i++) {
        smp_cands c = p5_cands();
        counts[c.data[smp_dist(&c, &r)].id]++;
    }
    for (int i = 0; i < 5; i++)
        cr_assert(fabs((double)counts[i] / N - P5[i]) < 0.01, "id %d: %d of %d", i, counts[i], N);
}

/* ---------------------------------------------------------------- sampler */

static smp *mk(const smp_params *p, int32_t n_vocab) {
    smp *s = NULL;
    av_err e = {0};
    int rc = smp_new(p, n_vocab, &s, &e);
    cr_assert_eq(rc, 0, "smp_new: %s", e.msg);
    return s;
}

static void params_plain(smp_params *p, float temp) {
    smp_params_default(p);
    p->temp = temp;
    p->top_k = 0;
    p->top_p = 1.0f;
    p->min_p = 0.0f;
}

Test(sampler, defaults_are_llama_cpp) {
    smp_params p;
    smp_params_default(&p);
    cr_assert_float_eq(p.temp, 0.8f, 0);
    cr_assert_eq(p.top_k, 40);
    cr_assert_float_eq(p.top_p, 0.95f, 0);
    cr_assert_float_eq(p.min_p, 0.05f, 0);
    cr_assert_float_eq(p.repeat_penalty, 1.0f, 0);
    cr_assert_eq(p.repeat_last_n, 64);
    cr_assert_eq(p.n_bias, 0);
}

Test(sampler, greedy_argmax_ties_and_bias) {
    const float lg[4] = {0.1f, 2.0f, 1.5f, 2.0f};
    smp_params p;
    params_plain(&p, 0.0f);
    smp *s = mk(&p, 4);
    cr_assert_eq(smp_sample(s, lg, NULL), 1); /* tie 1 / 3: lowest id */
    smp_free(s);
    smp_bias ban = {1, -INFINITY};
    p.bias = &ban;
    p.n_bias = 1;
    s = mk(&p, 4);
    cr_assert_eq(smp_sample(s, lg, NULL), 3);
    smp_free(s);
    smp_bias up = {2, 1.0f};
    p.bias = &up;
    s = mk(&p, 4);
    cr_assert_eq(smp_sample(s, lg, NULL), 2); /* 1.5 + 1 beats 2.0 */
    smp_free(s);
}

Test(sampler, banned_token_never_drawn) {
    const float lg[5] = {1.0f, 3.0f, 0.5f, 1.0f, 0.0f};
    smp_bias ban = {1, -INFINITY};
    for (int chain = 0; chain < 2; chain++) {
        smp_params p;
        if (chain) smp_params_default(&p);
        else params_plain(&p, 1.5f);
        p.temp = 1.5f;
        p.bias = &ban;
        p.n_bias = 1;
        smp *s = mk(&p, 5);
        int seen[5] = {0};
        for (int i = 0; i < 10000; i++) seen[smp_sample(s, lg, NULL)]++;
        cr_assert_eq(seen[1], 0, "banned id drawn %d times", seen[1]);
        cr_assert(seen[0] > 0 && seen[3] > 0, "sampling is not random: %d %d", seen[0], seen[3]);
        smp_free(s);
    }
}

Test(sampler, top_k_one_is_greedy_at_any_temp) {
    const float lg[4] = {0.3f, 0.2f, 0.35f, 0.1f};
    smp_params p;
    params_plain(&p, 5.0f);
    p.top_k = 1;
    smp *s = mk(&p, 4);
    for (int i = 0; i < 1000; i++) cr_assert_eq(smp_sample(s, lg, NULL), 2);
    smp_free(s);
}

/* The chain filters before temperature: top_p 0.6 on [.5 .3 .2] keeps {0, 1};
 * temp 100 then flattens them to about 1/2 each. Temperature first would let
 * id 2 through. min_p 0.5 alone keeps p >= .25: {0, 1} in proportion 5:3. */
Test(sampler, chain_filters_then_temperature) {
    const float lg[3] = {logf(0.5f), logf(0.3f), logf(0.2f)};
    static const struct { float top_p, min_p, temp, p0; } cases[] = {
        {0.6f, 0.0f, 100.0f, 0.5f}, {1.0f, 0.5f, 1.0f, 0.625f}};
    for (int k = 0; k < 2; k++) {
        smp_params p;
        params_plain(&p, cases[k].temp);
        p.top_p = cases[k].top_p;
        p.min_p = cases[k].min_p;
        smp *s = mk(&p, 3);
        int seen[3] = {0};
        for (int i = 0; i < 20000; i++) seen[smp_sample(s, lg, NULL)]++;
        cr_assert_eq(seen[2], 0, "case %d: filtered id drawn %d times", k, seen[2]);
        cr_assert(fabs(seen[0] / 20000.0 - cases[k].p0) < 0.015, "case %d: %d", k, seen[0]);
        smp_free(s);
    }
}

Test(sampler, penalty_window) {
    /* freq 0.3: after 0,0,0,1 with the whole history: 0.1, 0.6, 0.65 -> 2;
     * window 2 sees {0, 1}: 0.7, 0.6, 0.65 -> 0; window 3 sees {0,0,1}:
     * 0.4, 0.6, 0.65 -> 2; window 0: no penalty -> 0. */
    const float lg[3] = {1.0f, 0.9f, 0.65f};
    static const struct { int last_n; int32_t want; } cases[] = {{-1, 2}, {2, 0}, {3, 2}, {0, 0}};
    for (size_t i = 0; i < 4; i++) {
        smp_params p;
        params_plain(&p, 0.0f);
        p.freq_penalty = 0.3f;
        p.repeat_last_n = cases[i].last_n;
        smp *s = mk(&p, 3);
        const int32_t acc[4] = {0, 0, 0, 1};
        for (int j = 0; j < 4; j++) smp_accept(s, acc[j]);
        cr_assert_eq(smp_sample(s, lg, NULL), cases[i].want, "last_n %d", cases[i].last_n);
        smp_free(s);
    }
}

/* The sampler's incremental window counts against smp_penalties on the
 * explicit last-n history, over a long random run with random logits. */
Test(sampler, penalties_match_standalone_over_long_run) {
    enum { V = 40, W = 16, STEPS = 3000 };
    smp_params p;
    params_plain(&p, 0.0f);
    p.repeat_penalty = 1.3f;
    p.freq_penalty = 0.05f;
    p.presence_penalty = 0.1f;
    p.repeat_last_n = W;
    smp *s = mk(&p, V);
    static int32_t hist[STEPS];
    smp_rng r;
    smp_rng_seed(&r, 99);
    for (int t = 0; t < STEPS; t++) {
        float lg[V];
        smp_cand d[V];
        for (int i = 0; i < V; i++) {
            lg[i] = (float)(smp_rng_uniform(&r) * 4.0 - 2.0);
            d[i] = (smp_cand){i, lg[i], 0};
        }
        size_t n = t < W ? (size_t)t : W;
        smp_cands c = {d, V, 0};
        smp_penalties(&c, hist + t - n, n, p.repeat_penalty, p.freq_penalty, p.presence_penalty);
        smp_softmax(&c);
        int32_t got = smp_sample(s, lg, NULL);
        cr_assert_eq(got, c.data[0].id, "step %d", t);
        /* accept a random token, not the argmax, so counts vary */
        hist[t] = (int32_t)(smp_rng_next(&r) % 7);
        smp_accept(s, hist[t]);
    }
    smp_free(s);
}

Test(sampler, seed_determinism) {
    enum { V = 32, N = 1000 };
    float lg[V];
    for (int i = 0; i < V; i++) lg[i] = (float)((i * 7919) % 13) * 0.25f;
    int32_t seq[3][N];
    const uint64_t seeds[3] = {42, 42, 43};
    for (int k = 0; k < 3; k++) {
        smp_params p;
        smp_params_default(&p);
        p.temp = 1.0f;
        p.repeat_penalty = 1.1f;
        p.seed = seeds[k];
        smp *s = mk(&p, V);
        for (int i = 0; i < N; i++) {
            seq[k][i] = smp_sample(s, lg, NULL);
            smp_accept(s, seq[k][i]);
        }
        smp_free(s);
    }
    cr_assert_arr_eq(seq[0], seq[1], sizeof seq[0]);
    cr_assert_neq(memcmp(seq[0], seq[2], sizeof seq[0]), 0);
}

Test(sampler, logprob_is_of_raw_logits) {
    const float lg[4] = {1.0f, 2.0f, 3.0f, 0.5f};
    double z = exp(1.0) + exp(2.0) + exp(3.0) + exp(0.5);
    smp_bias b = {0, 10.0f}; /* forces id 0; logprob must ignore the bias */
    smp_params p;
    params_plain(&p, 0.0f);
    p.bias = &b;
    p.n_bias = 1;
    p.repeat_penalty = 2.0f;
    smp *s = mk(&p, 4);
    smp_accept(s, 0);
    float lp = 0;
    cr_assert_eq(smp_sample(s, lg, &lp), 0);
    cr_assert_float_eq(lp, log(exp(1.0) / z), 1e-6);
    smp_free(s);
    params_plain(&p, 1.0f);
    s = mk(&p, 4);
    for (int i = 0; i < 100; i++) {
        int32_t id = smp_sample(s, lg, &lp);
        cr_assert_float_eq(lp, log(exp((double)lg[id]) / z), 1e-6);
    }
    smp_free(s);
}

Test(sampler, rejects_bad_parameters) {
    smp_params p;
    smp *s = (smp *)&p;
    av_err e = {0};
    smp_params_default(&p);
    smp_bias b = {4, 1.0f};
    p.bias = &b;
    p.n_bias = 1;
    cr_assert_eq(smp_new(&p, 4, &s, &e), AV_EINVAL);
    cr_assert_null(s);
    cr_assert(strstr(e.msg, "4"), "%s", e.msg);
    smp_params_default(&p);
    p.repeat_penalty = 0.0f;
    cr_assert_eq(smp_new(&p, 4, &s, &e), AV_EINVAL);
    smp_params_default(&p);
    p.repeat_last_n = -2;
    cr_assert_eq(smp_new(&p, 4, &s, &e), AV_EINVAL);
    smp_params_default(&p);
    cr_assert_eq(smp_new(&p, 0, &s, &e), AV_EINVAL);
    smp_free(NULL);
}

/* ------------------------------------------------------------ stop strings */

static smp_stop *mk_stop(const char *const *stops, int n) {
    smp_stop *st = NULL;
    av_err e = {0};
    cr_assert_eq(smp_stop_new(stops, n, &st, &e), 0, "%s", e.msg);
    return st;
}

/* Each case: pieces fed in order; want[i] is what call i emits ("|" ends the
 * list), then what flush returns. A stop is the call whose want starts "!". */
typedef struct stop_case {
    const char *name, *stops[3], *pieces[5], *want[6];
} stop_case;

static const stop_case STOP_CASES[] = {
    {"spans pieces", {"lo Wo"}, {"Hel", "lo W", "orld"}, {"He", "l", "!", ""}},
    {"held prefix released", {"</s>"}, {"a<", "/x"}, {"a", "</x", ""}},
    {"flush returns held text", {"END"}, {"abcE", "N"}, {"abc", "", "EN"}},
    {"overlapping prefixes", {"aab"}, {"a", "a", "a", "b"}, {"", "", "a", "!", ""}},
    {"overlap in one piece", {"aab"}, {"aaab"}, {"!a", ""}},
    /* "lo w" starts at 3, "o" at 4, "world" at 6: not list order or length */
    {"earliest occurrence wins", {"world", "o", "lo w"}, {"hello world"}, {"!hel", ""}},
    {"stop inside one piece", {"STOP"}, {"abSTOPcd", "more"}, {"!ab", "!", ""}},
    {"no stops, empty pieces", {NULL}, {"", "ab", "", "c"}, {"", "ab", "", "c", ""}},
};

Test(stop, cases) {
    for (size_t k = 0; k < sizeof STOP_CASES / sizeof *STOP_CASES; k++) {
        const stop_case *c = &STOP_CASES[k];
        int ns = 0, np = 0;
        while (ns < 3 && c->stops[ns]) ns++;
        while (np < 5 && c->pieces[np]) np++;
        smp_stop *st = mk_stop(c->stops, ns);
        for (int i = 0; i < np; i++) {
            const char *e, *w = c->want[i];
            size_t el;
            int rc = smp_stop_feed(st, c->pieces[i], strlen(c->pieces[i]), &e, &el);
            int want_stop = w[0] == '!';
            w += want_stop;
            cr_assert_eq(rc, want_stop, "%s: call %d returned %d", c->name, i, rc);
            cr_assert(el == strlen(w) && !memcmp(e, w, el), "%s: call %d emitted '%.*s', want '%s'",
                      c->name, i, (int)el, e, w);
        }
        const char *e, *w = c->want[np];
        size_t el;
        smp_stop_flush(st, &e, &el);
        cr_assert(el == strlen(w) && !memcmp(e, w, el), "%s: flush gave '%.*s', want '%s'", c->name,
                  (int)el, e, w);
        smp_stop_free(st);
    }
}

Test(stop, rejects_empty_stop) {
    const char *stops[] = {"x", ""};
    smp_stop *st = (smp_stop *)stops;
    av_err e = {0};
    cr_assert_eq(smp_stop_new(stops, 2, &st, &e), AV_EINVAL);
    cr_assert_null(st);
    cr_assert(strstr(e.msg, "1"), "%s", e.msg);
    smp_stop_free(NULL);
}

/* Random texts over {a,b,c} cut into random pieces against the definition:
 * after each piece, if some stop occurs in the text so far, the output is the
 * text before its earliest occurrence; otherwise output + flush is the text. */
Test(stop, random_against_definition) {
    const char *stops[] = {"abca", "cc", "bab"};
    smp_rng r;
    smp_rng_seed(&r, 5);
    for (int iter = 0; iter < 2000; iter++) {
        char text[64];
        int n = 1 + (int)(smp_rng_next(&r) % 40);
        for (int i = 0; i < n; i++) text[i] = (char)('a' + smp_rng_next(&r) % 3);
        text[n] = 0;
        smp_stop *st = mk_stop(stops, 3);
        char got[64];
        size_t gl = 0;
        int pos = 0, stopped = 0;
        while (pos < n && !stopped) {
            int len = 1 + (int)(smp_rng_next(&r) % 5);
            if (pos + len > n) len = n - pos;
            const char *e;
            size_t el;
            stopped = smp_stop_feed(st, text + pos, (size_t)len, &e, &el);
            memcpy(got + gl, e, el);
            gl += el;
            pos += len;
            size_t first = SIZE_MAX; /* definition on text[0..pos) */
            for (int k = 0; k < 3; k++) {
                const char *m = memmem(text, (size_t)pos, stops[k], strlen(stops[k]));
                if (m && (size_t)(m - text) < first) first = (size_t)(m - text);
            }
            cr_assert_eq(stopped, first != SIZE_MAX, "text %s pos %d", text, pos);
            if (stopped) cr_assert_eq(gl, first, "text %s", text);
            size_t hold = 0; /* longest suffix that is a proper prefix of a stop */
            for (int k = 0; k < 3 && !stopped; k++)
                for (size_t l = strlen(stops[k]) - 1; l > hold; l--)
                    if (l <= (size_t)pos && !memcmp(text + pos - l, stops[k], l)) hold = l;
            if (!stopped) cr_assert_eq(gl, (size_t)pos - hold, "held too much/little: %s", text);
            cr_assert(!memcmp(got, text, gl), "emitted text is not a prefix: %s", text);
        }
        if (!stopped) {
            const char *e;
            size_t el;
            smp_stop_flush(st, &e, &el);
            memcpy(got + gl, e, el);
            gl += el;
            cr_assert_eq(gl, (size_t)n, "text %s", text);
        }
        smp_stop_free(st);
    }
}
