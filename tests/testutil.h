/* testutil.h — helpers shared by the Criterion suites. */
#ifndef AV_TESTUTIL_H
#define AV_TESTUTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ../shared beside the repo (CI puts it there); ANVIL_SHARED overrides. */
static inline const char *shared_dir(void) {
    const char *s = getenv("ANVIL_SHARED");
    return s ? s : "../shared";
}

/* Path under shared/ in a static rotating buffer. */
static inline const char *shared_path(const char *rel) {
    static char buf[8][1024];
    static int k;
    char *b = buf[k++ & 7];
    snprintf(b, 1024, "%s/%s", shared_dir(), rel);
    return b;
}

/* A fresh temp file path (file not created). */
static inline const char *tmp_path(const char *suffix) {
    static char buf[8][256];
    static int k;
    static int n;
    char *b = buf[k++ & 7];
    snprintf(b, 256, "/tmp/anvil-test-%ld-%d%s", (long)getpid(), n++, suffix);
    return b;
}

/* Whole file into a malloc'd buffer (NULL on failure). */
static inline unsigned char *slurp(const char *path, size_t *len) {
    if (len) *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (n < 0) { fclose(f); return NULL; }
    unsigned char *b = malloc((size_t)n + 1); /* NUL-terminated: callers strtok/strstr it */
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) { free(b); b = NULL; }
    if (b) b[n] = 0;
    fclose(f);
    if (len) *len = (size_t)n;
    return b;
}

static inline int write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(p, 1, n, f);
    fclose(f);
    return w == n ? 0 : -1;
}

#endif
