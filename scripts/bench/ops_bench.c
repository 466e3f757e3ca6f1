/* ops_bench.c — GB/s of weights streamed by ops_matvec vs memcpy of the same bytes.
 *   cc -std=c11 -D_GNU_SOURCE -O2 -march=native -fopenmp -Icore scripts/bench/ops_bench.c \
 *      build/libanvil.a -lopenblas -lm -o build/ops_bench && ./build/ops_bench
 * "hot": one matrix reused (L1/L2 resident); "cold": a rotation of copies
 * totalling 64 MiB, so every call streams from L3/DRAM like a decode step. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ops.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static volatile float sink;

/* GB/s of `bytes` per call for fn over n_copies buffers of stride `bytes`. */
static double run(int kind, av_dtype wt, char *buf, size_t bytes, int n_copies, const float *x,
                  float *y, char *dst, int64_t rows, int64_t cols, int nt) {
    double best = 0;
    long iters = (long)(6e7 / (double)bytes) + 8;
    for (int rep = 0; rep < 12; rep++) {
        double t0 = now();
        for (long it = 0; it < iters; it++) {
            char *w = buf + (size_t)(it % n_copies) * bytes;
            if (kind == 0)
                ops_matvec(wt, w, x, y, rows, cols, nt);
            else
                memcpy(dst, w, bytes);
        }
        double t = now() - t0;
        double gbs = (double)bytes * iters / t / 1e9;
        if (gbs > best) best = gbs;
        sink = y[0] + dst[0];
    }
    return best;
}

int main(void) {
    static const int64_t sizes[][2] = {{256, 256}, {768, 256}, {256, 768}, {512, 256},
                                       {128, 256}, {64, 64},   {172, 64},  {64, 172}};
    static const av_dtype types[] = {AV_F32, AV_F16, AV_BF16};
    static const char *tn[] = {"F32", "F16", "BF16"};
    const size_t pool = 64u << 20;
    char *buf = aligned_alloc(64, pool);
    char *dst = aligned_alloc(64, 4u << 20);
    for (size_t i = 0; i < pool; i++) buf[i] = (char)(rand() & 0x3f);  // small f16/bf16/f32 values
    float x[1024], y[1024];
    for (int i = 0; i < 1024; i++) x[i] = (float)rand() / RAND_MAX - 0.5f;
    printf("%-8s %-5s %8s | %9s %9s %9s | %9s %9s %9s\n", "size", "type", "bytes", "hot 1t",
           "hot 2t", "memcpy", "cold 1t", "cold 2t", "memcpy");
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        for (int t = 0; t < 3; t++) {
            int64_t rows = sizes[s][0], cols = sizes[s][1];
            size_t bytes = (size_t)rows * cols * (types[t] == AV_F32 ? 4 : 2);
            int nc = (int)(pool / bytes);
            double r[6];
            r[0] = run(0, types[t], buf, bytes, 1, x, y, dst, rows, cols, 1);
            r[1] = run(0, types[t], buf, bytes, 1, x, y, dst, rows, cols, 2);
            r[2] = run(1, types[t], buf, bytes, 1, x, y, dst, rows, cols, 1);
            r[3] = run(0, types[t], buf, bytes, nc, x, y, dst, rows, cols, 1);
            r[4] = run(0, types[t], buf, bytes, nc, x, y, dst, rows, cols, 2);
            r[5] = run(1, types[t], buf, bytes, nc, x, y, dst, rows, cols, 1);
            char name[32];
            snprintf(name, sizeof name, "%ldx%ld", (long)rows, (long)cols);
            printf("%-8s %-5s %8zu | %9.1f %9.1f %9.1f | %9.1f %9.1f %9.1f\n", name, tn[t], bytes,
                   r[0], r[1], r[2], r[3], r[4], r[5]);
        }
    }
    free(buf);
    free(dst);
    return 0;
}
