/* beam.h — beam search with length normalisation over any model that can
 * evaluate one token in a numbered state slot and copy slots.
 *
 * Hypotheses end at EOS (eos included in their length) or at max_len new
 * tokens; they are ranked by sum(log p) / len^length_penalty. The search
 * keeps the n_beams best live hypotheses each step and stops when none is
 * left alive; with n_beams >= V^max_len it is an exhaustive search. */
#ifndef AV_BEAM_H
#define AV_BEAM_H

#include <stdint.h>

#include "err.h"

typedef struct beam_model {
    void *ud;
    int32_t n_vocab;
    /* Evaluate tok at position pos in slot's state, writing next-token
     * logits [n_vocab]. */
    int (*eval)(void *ud, int slot, int32_t tok, int pos, float *logits, av_err *err);
    /* Make slot dst's state equal slot src's for positions [0, n_pos). */
    int (*copy)(void *ud, int dst, int src, int n_pos, av_err *err);
} beam_model;

typedef struct beam_params {
    int n_beams;           /* >= 1 */
    int max_len;           /* new tokens at most */
    float length_penalty;  /* exponent alpha of len in the normaliser (1 = mean log p) */
    int32_t eos;           /* -1: no EOS, every hypothesis runs to max_len */
} beam_params;

/* Slots the model must provide for n_beams (states 0 .. beam_slots-1):
 * n_beams, since every copy happens before any eval of a step. */
int beam_slots(int n_beams);

/* Search from the state in slot 0, which holds positions [0, pos0) and whose
 * next-token logits are first_logits [n_vocab]. *out (malloc'd, caller frees)
 * receives the best hypothesis' *n_out tokens, *logprobs (may be NULL;
 * malloc'd) their per-token log p, *score its normalised score.
 * Errors: AV_EINVAL, AV_ENOMEM, or what eval/copy return. */
int beam_search(const beam_model *m, const float *first_logits, int pos0, const beam_params *p,
                int32_t **out, int *n_out, float **logprobs, float *score, av_err *err);

#endif
