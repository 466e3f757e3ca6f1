/* bench.c — `anvil run --bench PP,TG`, measured as llama-bench does:
 * pp = PP random token ids evaluated as one batch from position 0;
 * tg = TG tokens evaluated one at a time from position 0, each fed the argmax
 * of the previous logits. One warm-up run of each, then -r repetitions;
 * tokens/s is averaged over repetitions (mean and sample stddev). */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "progress.h"
#include "run.h"

static void mean_sd(const double *x, int n, double *mean, double *sd) {
    double s = 0, q = 0;
    for (int i = 0; i < n; i++) s += x[i];
    *mean = n ? s / n : 0;
    for (int i = 0; i < n; i++) q += (x[i] - *mean) * (x[i] - *mean);
    *sd = n > 1 ? sqrt(q / (n - 1)) : 0;
}

static int32_t argmax(const float *x, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

int run_bench(const run_opts *o, const llm *l, double load_ms) {
    const int V = l->hp.n_vocab, PP = o->bench_pp, TG = o->bench_tg, R = o->reps,
              nt = o->n_threads;
    int n_ctx = PP > TG ? PP : TG, rc = 1;
    av_err err = {0};
    llm_ctx *c = NULL;
    int32_t *toks = malloc(((size_t)PP + 1) * sizeof *toks);
    float *logits = malloc((size_t)V * sizeof *logits);
    double *pp = calloc((size_t)R + 1, sizeof *pp), *tg = calloc((size_t)R + 1, sizeof *tg);
    if (!toks || !logits || !pp || !tg) {
        fprintf(stderr, "anvil run: out of memory\n");
        goto done;
    }
    if (llm_ctx_new(l, n_ctx < 1 ? 1 : n_ctx, PP > 0 ? PP : 1, &c, &err)) goto fail;
    smp_rng rng;
    smp_rng_seed(&rng, o->has_seed ? o->seed : 1234);
    for (int i = 0; i < PP; i++) toks[i] = (int32_t)(smp_rng_next(&rng) % (uint64_t)V);
    int32_t first = (int32_t)(smp_rng_next(&rng) % (uint64_t)V);

    for (int r = 0; r <= R; r++) { /* r == 0: warm-up */
        if (PP > 0) {
            double t0 = av_now();
            if (llm_eval(c, toks, PP, 0, logits, 0, nt, &err)) goto fail;
            double dt = av_now() - t0;
            if (r) pp[r - 1] = PP / (dt > 0 ? dt : 1e-9);
        }
        if (TG > 0) {
            int32_t tok = first;
            double t0 = av_now();
            for (int i = 0; i < TG; i++) {
                if (llm_eval(c, &tok, 1, i, logits, 0, nt, &err)) goto fail;
                tok = argmax(logits, V);
            }
            double dt = av_now() - t0;
            if (r) tg[r - 1] = TG / (dt > 0 ? dt : 1e-9);
        }
    }
    double ppm, pps, tgm, tgs;
    mean_sd(pp, R, &ppm, &pps);
    mean_sd(tg, R, &tgm, &tgs);
    if (o->json) {
        json_t *j = json_object();
        json_object_set_new(j, "model", json_string(o->model));
        json_object_set_new(j, "n_threads", json_integer(nt));
        json_object_set_new(j, "n_prompt", json_integer(PP));
        json_object_set_new(j, "n_gen", json_integer(TG));
        json_object_set_new(j, "reps", json_integer(R));
        json_object_set_new(j, "pp_tokens_per_s", PP > 0 ? json_real(ppm) : json_null());
        json_object_set_new(j, "pp_stddev", PP > 0 ? json_real(pps) : json_null());
        json_object_set_new(j, "tg_tokens_per_s", TG > 0 ? json_real(tgm) : json_null());
        json_object_set_new(j, "tg_stddev", TG > 0 ? json_real(tgs) : json_null());
        json_object_set_new(j, "weight_bytes", json_integer(l->weight_bytes));
        json_object_set_new(j, "load_ms", json_real(load_ms));
        json_dumpf(j, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER);
        putchar('\n');
        json_decref(j);
    } else {
        printf("model: %s, %d threads, %d reps, %lld weight bytes read per token\n", o->model, nt,
               R, (long long)l->weight_bytes);
        if (PP > 0) printf("pp%d: %10.2f ± %.2f tok/s\n", PP, ppm, pps);
        if (TG > 0) printf("tg%d: %10.2f ± %.2f tok/s\n", TG, tgm, tgs);
    }
    if (fflush(stdout)) {
        fprintf(stderr, "anvil run: cannot write the output\n");
        goto done;
    }
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "anvil run: %s: %s\n", o->model, err.msg);
done:
    llm_ctx_free(c);
    free(toks);
    free(logits);
    free(pp);
    free(tg);
    return rc;
}
