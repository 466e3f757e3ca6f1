/* sample.h — choosing the next token from logits, and stop strings.
 *
 * The chain follows llama.cpp's default order: logit bias -> repetition /
 * frequency / presence penalties -> top-k -> top-p -> min-p -> temperature ->
 * draw. temp <= 0 is greedy: argmax after bias and penalties. Each stage is
 * also callable alone on a candidate list so tests can check it on known
 * distributions. Randomness comes from a seeded PRNG owned by the sampler:
 * same seed, same logits => same tokens, on every machine. */
#ifndef AV_SAMPLE_H
#define AV_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* xoshiro256** seeded by splitmix64(seed). */
typedef struct smp_rng { uint64_t s[4]; } smp_rng;
void smp_rng_seed(smp_rng *r, uint64_t seed);
uint64_t smp_rng_next(smp_rng *r);
double smp_rng_uniform(smp_rng *r); /* [0, 1), 53 random bits */

typedef struct smp_bias { int32_t id; float value; } smp_bias; /* value -INFINITY bans */

typedef struct smp_params {
    float temp;             /* <= 0: greedy */
    int top_k;              /* <= 0: off */
    float top_p;            /* >= 1: off */
    float min_p;            /* <= 0: off */
    float repeat_penalty;   /* 1: off; logit > 0 ? logit/p : logit*p (llama.cpp) */
    int repeat_last_n;      /* penalty window over accepted tokens; 0 off, -1 all */
    float freq_penalty;     /* logit -= count * freq_penalty */
    float presence_penalty; /* logit -= (count > 0) * presence_penalty */
    const smp_bias *bias;   /* copied by smp_new */
    int n_bias;
    uint64_t seed;
} smp_params;

/* llama.cpp's defaults: temp 0.8, top_k 40, top_p 0.95, min_p 0.05,
 * repeat_penalty 1, repeat_last_n 64, penalties 0, no bias, seed 0. */
void smp_params_default(smp_params *p);

typedef struct smp_cand { int32_t id; float logit; float p; } smp_cand;
typedef struct smp_cands {
    smp_cand *data;
    size_t n;
    int sorted; /* by logit, descending */
} smp_cands;

/* Stages on a candidate list (they keep at least min_keep=1 candidate). */
void smp_softmax(smp_cands *c);            /* sorts, fills p */
void smp_top_k(smp_cands *c, int k);       /* keep the k highest logits */
void smp_top_p(smp_cands *c, float p);     /* smallest prefix with cumulative p >= p */
void smp_min_p(smp_cands *c, float p);     /* keep p_i >= p * p_max */
void smp_temp(smp_cands *c, float t);      /* logit /= t; t <= 0 keeps only the max */
/* Penalties over the last tokens hist[0..n) (ids outside the list ignored). */
void smp_penalties(smp_cands *c, const int32_t *hist, size_t n, float repeat, float freq,
                   float presence);
/* Draw from the softmax of c with r; returns the index into c->data. */
size_t smp_dist(smp_cands *c, smp_rng *r);

typedef struct smp smp;

/* Sampler for a vocabulary of n_vocab ids. Errors: AV_EINVAL (bias id out of
 * range, bad parameter), AV_ENOMEM. */
int smp_new(const smp_params *p, int32_t n_vocab, smp **out, av_err *err);
void smp_free(smp *s); /* NULL-safe */
/* Record a token (prompt or generated) in the penalty history (ids outside
 * [0, n_vocab) are ignored). */
void smp_accept(smp *s, int32_t id);
/* Choose the next token from logits[n_vocab] (not modified; NaN counts as
 * -inf; if every token is banned, returns 0). *logprob (may be NULL) receives
 * log softmax(logits)[id] of the raw logits. */
int32_t smp_sample(smp *s, const float *logits, float *logprob);

/* Stop strings across token boundaries: text is fed piece by piece; bytes
 * that could still begin a stop string are held back until they cannot. */
typedef struct smp_stop smp_stop;
int smp_stop_new(const char *const *stops, int n, smp_stop **out, av_err *err);
void smp_stop_free(smp_stop *s); /* NULL-safe */
/* Feed a piece. *emit, *emit_len: text now safe to print (valid until the
 * next call). Returns 1 when a stop string completed (emit then holds the
 * text before its earliest occurrence, and the stop string and anything after
 * it are dropped; later calls emit nothing and return 1), else 0; AV_ENOMEM
 * (negative) if the hold-back buffer cannot grow. */
int smp_stop_feed(smp_stop *s, const char *piece, size_t len, const char **emit,
                  size_t *emit_len);
/* At end of generation: the held-back text. */
void smp_stop_flush(smp_stop *s, const char **emit, size_t *emit_len);

#endif
