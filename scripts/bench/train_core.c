/* train_core.c — training-step throughput of core/train.c: tokens/s, GFLOP/s and
 * MFU against the sgemm peak measured in the same process (each of the n threads
 * runs single-threaded cblas_sgemm on its own 1024x1024 matrices; summed).
 *
 *   cc -std=c11 -D_GNU_SOURCE -O2 -g -march=native -fopenmp -Icore -DTR_PROFILE \
 *      scripts/bench/train_core.c core/train.c core/train_ops.c build/libanvil.a \
 *      -ljansson -lpcre2-8 -larchive -lzstd -lopenblas -lm -fopenmp -o build/train_core
 *   env -u OPENBLAS_CORETYPE OPENBLAS_NUM_THREADS=1 ./build/train_core [steps] [config] [threads]
 *
 * config: 15M | 260K | all (default); threads: 1 | 2 | 0 = 1 and 2 (default).
 * A step = tr_zero_grad, tr_forward (targets), tr_backward, tr_clip_grad_norm(1),
 * tr_adamw_step. FLOPs/token = 6 N + 12 L dim T, N = weights of every matmul
 * including the head (tied: once). With -DTR_PROFILE train.c accumulates
 * per-phase seconds in tr_prof[] (names in tr_prof_name[]), printed per step. */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "train.h"

#ifdef TR_PROFILE
extern double tr_prof[];
extern const char *const tr_prof_name[];
extern const int tr_prof_n;
#endif

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* GFLOP/s of nt threads, each on its own 1024^3 single-threaded sgemm; best of reps */
static double sgemm_peak(int nt) {
    const int n = 1024;
    openblas_set_num_threads(1);
    float *buf = malloc(sizeof(float) * (size_t)3 * n * n * nt);
    for (size_t i = 0; i < (size_t)3 * n * n * nt; i++) buf[i] = (float)((i * 7919) % 1000) * 1e-3f;
    double best = 0;
    for (int rep = 0; rep < 6; rep++) {
        const int iters = 4;
        double t0 = now();
#pragma omp parallel num_threads(nt)
        {
            float *a = buf + (size_t)omp_get_thread_num() * 3 * n * n, *b = a + (size_t)n * n,
                  *c = b + (size_t)n * n;
            for (int it = 0; it < iters; it++)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n,
                            0.0f, c, n);
        }
        const double g = 2.0 * n * n * n * iters * nt / (now() - t0) / 1e9;
        if (g > best) best = g;
    }
    free(buf);
    return best;
}

typedef struct { const char *name; tr_config c; int B; } cfg_t;

static void run(const cfg_t *cf, int nt, int steps, double peak) {
    av_err e = {0};
    tr_model *m = NULL;
    if (tr_model_new(&cf->c, &m, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        exit(1);
    }
    tr_init_weights(m, 1);
    const int B = cf->B, T = cf->c.seq_len, V = cf->c.vocab, E = cf->c.dim, L = cf->c.n_layer;
    const size_t N = (size_t)B * T;
    int32_t *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
    uint64_t s = 12345;
    tr_adamw aw = {.beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f};
    const size_t Qd = (size_t)E, KV = (size_t)cf->c.n_kv_head * (E / cf->c.n_head);
    const double nmat = (double)L * (E * (Qd + 2 * KV) + Qd * E + 3.0 * E * cf->c.ffn) +
                        (double)V * E;
    const double flop_tok = 6.0 * nmat + 12.0 * L * E * T;
    double t_zero = 0, t_fwd = 0, t_bwd = 0, t_clip = 0, t_adam = 0;
    double *st = malloc(sizeof(double) * (steps > 0 ? steps : 1));
    float loss = 0;
    for (int step = -1; step < steps; step++) { /* step -1: warm-up, not timed */
        for (size_t i = 0; i < N; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            x[i] = (int32_t)((s >> 33) % (uint64_t)V);
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            y[i] = (int32_t)((s >> 33) % (uint64_t)V);
        }
#ifdef TR_PROFILE
        if (step == 0) memset(tr_prof, 0, sizeof(double) * tr_prof_n);
#endif
        double t0 = now();
        tr_zero_grad(m);
        double t1 = now();
        if (tr_forward(m, x, y, B, T, &loss, NULL, nt, &e)) {
            fprintf(stderr, "%s\n", e.msg);
            exit(1);
        }
        double t2 = now();
        tr_backward(m, 1.0f, nt, &e);
        double t3 = now();
        tr_clip_grad_norm(m, 1.0f, nt);
        double t4 = now();
        tr_adamw_step(m, &aw, 1e-4f, step + 2, nt, &e);
        double t5 = now();
        if (step >= 0) {
            t_zero += t1 - t0;
            t_fwd += t2 - t1;
            t_bwd += t3 - t2;
            t_clip += t4 - t3;
            t_adam += t5 - t4;
            st[step] = t5 - t0;
        }
    }
    const double tot = t_zero + t_fwd + t_bwd + t_clip + t_adam;
    /* best step (robust to other load on a shared machine) and the mean */
    double best = st[0];
    for (int i = 1; i < steps; i++) best = st[i] < best ? st[i] : best;
    const double tps = (double)N / best, gf = tps * flop_tok / 1e9;
    printf("%-5s nt=%d  %8.0f tok/s  %6.1f GFLOP/s  peak %6.1f  MFU %5.1f%%  (best of %d steps "
           "%.1f ms, mean %.1f ms, %.1f MFLOP/tok, loss %.4f)\n",
           cf->name, nt, tps, gf, peak, 100 * gf / peak, steps, 1e3 * best, 1e3 * tot / steps,
           flop_tok / 1e6, loss);
    printf("      ms/step: zero %.2f  fwd %.2f  bwd %.2f  clip %.2f  adamw %.2f\n",
           1e3 * t_zero / steps, 1e3 * t_fwd / steps, 1e3 * t_bwd / steps, 1e3 * t_clip / steps,
           1e3 * t_adam / steps);
#ifdef TR_PROFILE
    printf("      phases ms/step:");
    for (int i = 0; i < tr_prof_n; i++)
        if (tr_prof[i] > 0) printf(" %s %.2f", tr_prof_name[i], 1e3 * tr_prof[i] / steps);
    printf("\n");
#endif
    fflush(stdout);
    free(st);
    free(x);
    free(y);
    tr_model_free(m);
}

int main(int argc, char **argv) {
    const int steps = argc > 1 ? atoi(argv[1]) : 5;
    const char *which = argc > 2 ? argv[2] : "all";
    const int th = argc > 3 ? atoi(argv[3]) : 0;
    const cfg_t cfgs[] = {
        {"15M", {.dim = 288, .n_layer = 6, .n_head = 6, .n_kv_head = 6, .ffn = 768, .vocab = 32000,
                 .seq_len = 256, .tied = 1}, 8},
        {"260K", {.dim = 64, .n_layer = 5, .n_head = 8, .n_kv_head = 4, .ffn = 172, .vocab = 512,
                  .seq_len = 256, .tied = 1}, 16},
    };
    for (int nt = 1; nt <= 2; nt++) {
        if (th && nt != th) continue;
        const double peak = sgemm_peak(nt);
        for (size_t i = 0; i < sizeof cfgs / sizeof *cfgs; i++)
            if (!strcmp(which, "all") || !strcmp(which, cfgs[i].name)) run(&cfgs[i], nt, steps, peak);
    }
    return 0;
}
