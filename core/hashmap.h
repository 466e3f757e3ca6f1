/* hashmap.h — open-addressing hash maps used by tokenizers and trainers.
 *
 * av_strmap: byte string -> int32 (keys are copied into one arena).
 * av_u64map: u64 -> int64 (e.g. a token pair (a << 32 | b) -> merge rank).
 * Both grow at 1/2 load; lookups never allocate. */
#ifndef AV_HASHMAP_H
#define AV_HASHMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct av_strmap {
    uint64_t *hashes;     /* 0 = empty slot */
    uint32_t *offs, *lens;/* key bytes in arena */
    int32_t *vals;
    size_t cap, n;
    char *arena;
    size_t arena_len, arena_cap;
} av_strmap;

void av_strmap_init(av_strmap *m);
void av_strmap_release(av_strmap *m);
/* Insert or overwrite. Returns 0 or AV_ENOMEM. */
int av_strmap_put(av_strmap *m, const char *key, size_t len, int32_t val);
/* Value for key, or -1 when absent. */
int32_t av_strmap_get(const av_strmap *m, const char *key, size_t len);

typedef struct av_u64map {
    uint64_t *keys;
    int64_t *vals;
    uint8_t *used;
    size_t cap, n;
} av_u64map;

void av_u64map_init(av_u64map *m);
void av_u64map_release(av_u64map *m);
int av_u64map_put(av_u64map *m, uint64_t key, int64_t val);
/* 1 and *val set when present, else 0. */
int av_u64map_get(const av_u64map *m, uint64_t key, int64_t *val);
/* Pointer to the value slot for key, inserting `init` if absent (NULL: out of memory).
 * The pointer is valid until the next insertion. */
int64_t *av_u64map_slot(av_u64map *m, uint64_t key, int64_t init);

/* 64-bit hash of bytes (never returns 0). */
uint64_t av_hash_bytes(const void *p, size_t n);

#endif
