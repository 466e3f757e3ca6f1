#include "hashmap.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"

uint64_t av_hash_bytes(const void *p, size_t n) {
    /* FNV-1a then a final avalanche (splitmix64) */
    const uint8_t *s = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ull;
    h ^= h >> 30; h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27; h *= 0x94d049bb133111ebull;
    h ^= h >> 31;
    return h ? h : 1;
}

static uint64_t mix64(uint64_t x) {
    x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27; x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

void av_strmap_init(av_strmap *m) { memset(m, 0, sizeof *m); }

void av_strmap_release(av_strmap *m) {
    if (!m) return;
    free(m->hashes); free(m->offs); free(m->lens); free(m->vals); free(m->arena);
    memset(m, 0, sizeof *m);
}

static int strmap_grow(av_strmap *m) {
    size_t nc = m->cap ? m->cap * 2 : 64;
    uint64_t *h = calloc(nc, sizeof *h);
    uint32_t *o = malloc(nc * sizeof *o), *l = malloc(nc * sizeof *l);
    int32_t *v = malloc(nc * sizeof *v);
    if (!h || !o || !l || !v) { free(h); free(o); free(l); free(v); return AV_ENOMEM; }
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->hashes[i]) continue;
        size_t j = m->hashes[i] & (nc - 1);
        while (h[j]) j = (j + 1) & (nc - 1);
        h[j] = m->hashes[i]; o[j] = m->offs[i]; l[j] = m->lens[i]; v[j] = m->vals[i];
    }
    free(m->hashes); free(m->offs); free(m->lens); free(m->vals);
    m->hashes = h; m->offs = o; m->lens = l; m->vals = v; m->cap = nc;
    return 0;
}

static size_t strmap_find(const av_strmap *m, uint64_t h, const char *key, size_t len) {
    size_t j = h & (m->cap - 1);
    while (m->hashes[j]) {
        if (m->hashes[j] == h && m->lens[j] == len && !memcmp(m->arena + m->offs[j], key, len)) return j;
        j = (j + 1) & (m->cap - 1);
    }
    return j;
}

int av_strmap_put(av_strmap *m, const char *key, size_t len, int32_t val) {
    if ((m->n + 1) * 2 > m->cap && strmap_grow(m)) return AV_ENOMEM;
    uint64_t h = av_hash_bytes(key, len);
    size_t j = strmap_find(m, h, key, len);
    if (m->hashes[j]) { m->vals[j] = val; return 0; }
    if (m->arena_len + len > UINT32_MAX) return AV_ENOMEM;
    if (m->arena_len + len > m->arena_cap) {
        size_t nc = (m->arena_cap ? m->arena_cap * 2 : 4096) + len;
        char *na = realloc(m->arena, nc);
        if (!na) return AV_ENOMEM;
        m->arena = na; m->arena_cap = nc;
    }
    if (len) memcpy(m->arena + m->arena_len, key, len);
    m->hashes[j] = h; m->offs[j] = (uint32_t)m->arena_len; m->lens[j] = (uint32_t)len; m->vals[j] = val;
    m->arena_len += len;
    m->n++;
    return 0;
}

int32_t av_strmap_get(const av_strmap *m, const char *key, size_t len) {
    if (!m->cap) return -1;
    size_t j = strmap_find(m, av_hash_bytes(key, len), key, len);
    return m->hashes[j] ? m->vals[j] : -1;
}

void av_u64map_init(av_u64map *m) { memset(m, 0, sizeof *m); }

void av_u64map_release(av_u64map *m) {
    if (!m) return;
    free(m->keys); free(m->vals); free(m->used);
    memset(m, 0, sizeof *m);
}

static int u64map_grow(av_u64map *m) {
    size_t nc = m->cap ? m->cap * 2 : 64;
    uint64_t *k = malloc(nc * sizeof *k);
    int64_t *v = malloc(nc * sizeof *v);
    uint8_t *u = calloc(nc, 1);
    if (!k || !v || !u) { free(k); free(v); free(u); return AV_ENOMEM; }
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->used[i]) continue;
        size_t j = mix64(m->keys[i]) & (nc - 1);
        while (u[j]) j = (j + 1) & (nc - 1);
        u[j] = 1; k[j] = m->keys[i]; v[j] = m->vals[i];
    }
    free(m->keys); free(m->vals); free(m->used);
    m->keys = k; m->vals = v; m->used = u; m->cap = nc;
    return 0;
}

int64_t *av_u64map_slot(av_u64map *m, uint64_t key, int64_t init) {
    if ((m->n + 1) * 2 > m->cap && u64map_grow(m)) return NULL;
    size_t j = mix64(key) & (m->cap - 1);
    while (m->used[j]) {
        if (m->keys[j] == key) return &m->vals[j];
        j = (j + 1) & (m->cap - 1);
    }
    m->used[j] = 1; m->keys[j] = key; m->vals[j] = init;
    m->n++;
    return &m->vals[j];
}

int av_u64map_put(av_u64map *m, uint64_t key, int64_t val) {
    int64_t *s = av_u64map_slot(m, key, val);
    if (!s) return AV_ENOMEM;
    *s = val;
    return 0;
}

int av_u64map_get(const av_u64map *m, uint64_t key, int64_t *val) {
    if (!m->cap) return 0;
    size_t j = mix64(key) & (m->cap - 1);
    while (m->used[j]) {
        if (m->keys[j] == key) { *val = m->vals[j]; return 1; }
        j = (j + 1) & (m->cap - 1);
    }
    return 0;
}
