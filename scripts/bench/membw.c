/* membw.c — memcpy bandwidth for given buffer sizes (scripts/bench_run.sh).
 *
 * usage: membw [-t THREADS] BYTES...
 * For each size, copies a BYTES buffer into another (each of T threads copies
 * its own contiguous slice) over and over and prints "BYTES GB/s" with
 * GB/s = bytes copied / wall time (1 GB = 1e9 B), the best of 7 samples of at
 * least ~30 ms each. A buffer the size of a model's weights measures the
 * copy rate at the cache level that holds them — decode re-reads the same
 * weights every token, so that is the level it streams from; 1 GiB measures
 * DRAM. Both buffers are touched before timing (no page faults timed). */
#define _GNU_SOURCE
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    int threads = 1, i = 1;
    if (argc > 2 && !strcmp(argv[1], "-t")) {
        threads = atoi(argv[2]);
        i = 3;
    }
    if (i >= argc || threads < 1) {
        fprintf(stderr, "usage: membw [-t THREADS] BYTES...\n");
        return 2;
    }
    for (; i < argc; i++) {
        char *end;
        unsigned long long n = strtoull(argv[i], &end, 10);
        if (*end || n < 64) {
            fprintf(stderr, "membw: '%s' is not a size >= 64 bytes\n", argv[i]);
            return 2;
        }
        size_t size = (size_t)n;
        char *src = aligned_alloc(64, (size + 63) / 64 * 64), *dst = aligned_alloc(64, (size + 63) / 64 * 64);
        if (!src || !dst) {
            fprintf(stderr, "membw: cannot allocate 2 x %zu bytes\n", size);
            return 1;
        }
        memset(src, 1, size);
        memset(dst, 2, size);
        /* copies per sample: enough for ~30 ms at ~20 GB/s */
        size_t inner = (size_t)(6e8 / (double)size);
        if (inner < 1) inner = 1;
        double best = 0;
        for (int s = 0; s < 8; s++) { /* sample 0 warms caches */
            double t0 = now();
#pragma omp parallel num_threads(threads)
            {
                int t = omp_get_thread_num(), nt = omp_get_num_threads();
                size_t chunk = (size / nt + 63) / 64 * 64, lo = (size_t)t * chunk;
                size_t hi = lo + chunk < size ? lo + chunk : size;
                for (size_t r = 0; r < inner && lo < hi; r++) {
                    memcpy(dst + lo, src + lo, hi - lo);
                    __asm__ volatile("" ::: "memory");
                }
            }
            double dt = now() - t0, gbs = (double)size * inner / dt / 1e9;
            if (s > 0 && gbs > best) best = gbs;
        }
        unsigned sum = 0;
        for (size_t k = 0; k < size; k += 4096) sum += (unsigned char)dst[k];
        printf("%zu %.3f\n", size, best + (sum == 0 ? 1e-12 : 0));
        free(src);
        free(dst);
    }
    return 0;
}
