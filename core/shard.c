/* shard.c — token shard reader, writer, text preparation and batch loader
 * (format in shard.h). */
#include "shard.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "io.h"
#include "sample.h"

#define ZSTD_LEVEL 3

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }
static void wr32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void wr64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* ================================================================== reader */

typedef struct frame_slot {
    uint64_t frame;
    uint64_t tick; /* last use; 0 = empty */
    uint8_t *buf;  /* decompressed frame: n ids, token_bytes each */
} frame_slot;

struct shard {
    char *name;
    av_map *map; /* NULL for shard_open_mem */
    const uint8_t *data;
    size_t size;
    uint32_t vocab, tb, ft;
    uint64_t n_tokens, n_frames;
    ZSTD_DCtx *dctx;
    int n_slots;
    frame_slot *slots;
    uint64_t tick;
};

static uint64_t frame_len(const shard *sh, uint64_t f) { /* ids in frame f */
    uint64_t first = f * sh->ft;
    return sh->n_tokens - first < sh->ft ? sh->n_tokens - first : sh->ft;
}

static int validate(shard *sh, av_err *err) {
    const char *nm = sh->name;
    const uint8_t *d = sh->data;
    size_t size = sh->size;
    if (size < SHARD_HEADER_SIZE)
        return av_errf(err, AV_EFORMAT, "%s: file is %zu bytes, shorter than the %u-byte shard header", nm, size,
                       SHARD_HEADER_SIZE);
    if (memcmp(d, SHARD_MAGIC, 8) != 0)
        return av_errf(err, AV_EFORMAT, "%s: not an anvil token shard (magic is not \"%s\")", nm, SHARD_MAGIC);
    uint32_t ver = rd32(d + 8);
    if (ver != SHARD_VERSION)
        return av_errf(err, ver == 0 ? AV_EFORMAT : AV_EUNSUPPORTED,
                       "%s: shard version %" PRIu32 " is not supported (this build reads version %u)", nm, ver,
                       SHARD_VERSION);
    sh->vocab = rd32(d + 12);
    sh->tb = rd32(d + 16);
    sh->ft = rd32(d + 20);
    sh->n_tokens = rd64(d + 24);
    sh->n_frames = rd64(d + 32);
    if (sh->vocab == 0 || sh->vocab > INT32_MAX)
        return av_errf(err, AV_EFORMAT, "%s: vocab_size %" PRIu32 " is out of range [1, %d]", nm, sh->vocab, INT32_MAX);
    if (sh->tb != 2 && sh->tb != 4)
        return av_errf(err, AV_EFORMAT, "%s: token_bytes %" PRIu32 " must be 2 or 4", nm, sh->tb);
    if (sh->tb == 2 && sh->vocab > 65536)
        return av_errf(err, AV_EFORMAT, "%s: token_bytes 2 cannot hold ids of vocab_size %" PRIu32 " (> 65536)", nm,
                       sh->vocab);
    if (sh->ft == 0 || sh->ft > SHARD_MAX_FRAME_TOKENS)
        return av_errf(err, AV_EFORMAT, "%s: frame_tokens %" PRIu32 " is out of range [1, %u]", nm, sh->ft,
                       SHARD_MAX_FRAME_TOKENS);
    uint64_t want = sh->n_tokens / sh->ft + (sh->n_tokens % sh->ft != 0);
    if (sh->n_frames != want)
        return av_errf(err, AV_EFORMAT,
                       "%s: n_frames %" PRIu64 " does not match n_tokens %" PRIu64 " / frame_tokens %" PRIu32
                       " (expected %" PRIu64 ")",
                       nm, sh->n_frames, sh->n_tokens, sh->ft, want);
    if (sh->n_frames > (size - SHARD_HEADER_SIZE) / SHARD_INDEX_ENTRY)
        return av_errf(err, AV_EFORMAT,
                       "%s: frame index of n_frames %" PRIu64 " entries (%u bytes each) runs past end of file (size %zu)",
                       nm, sh->n_frames, SHARD_INDEX_ENTRY, size);
    uint64_t pos = SHARD_HEADER_SIZE + sh->n_frames * SHARD_INDEX_ENTRY;
    for (uint64_t f = 0; f < sh->n_frames; f++) {
        const uint8_t *e = d + SHARD_HEADER_SIZE + f * SHARD_INDEX_ENTRY;
        uint64_t off = rd64(e), cs = rd64(e + 8);
        if (off != pos)
            return av_errf(err, AV_EFORMAT,
                           "%s: frame %" PRIu64 " offset %" PRIu64 ", expected %" PRIu64
                           " (frames follow the index back to back)",
                           nm, f, off, pos);
        if (cs == 0 || cs > size - off)
            return av_errf(err, AV_EFORMAT,
                           "%s: frame %" PRIu64 " at offset %" PRIu64 " with compressed_size %" PRIu64
                           " runs past end of file (size %zu)",
                           nm, f, off, cs, size);
        unsigned long long cz = ZSTD_getFrameContentSize(d + off, (size_t)cs);
        uint64_t raw = frame_len(sh, f) * sh->tb;
        if (cz == ZSTD_CONTENTSIZE_ERROR || cz == ZSTD_CONTENTSIZE_UNKNOWN)
            return av_errf(err, AV_EFORMAT, "%s: frame %" PRIu64 " at offset %" PRIu64 " is not a zstd frame with a content size",
                           nm, f, off);
        if (cz != raw)
            return av_errf(err, AV_EFORMAT,
                           "%s: frame %" PRIu64 " at offset %" PRIu64 " holds %llu bytes, expected %" PRIu64
                           " (%" PRIu64 " ids of %" PRIu32 " bytes)",
                           nm, f, off, cz, raw, frame_len(sh, f), sh->tb);
        pos = off + cs;
    }
    if (pos != size)
        return av_errf(err, AV_EFORMAT, "%s: %" PRIu64 " bytes after the last frame (file size %zu, data ends at %" PRIu64 ")",
                       nm, (uint64_t)size - pos, size, pos);
    return 0;
}

static int open_common(shard *sh, av_err *err) {
    int rc = validate(sh, err);
    if (rc) return rc;
    size_t fb = (size_t)sh->ft * sh->tb;
    uint64_t n = SHARD_CACHE_BYTES / fb;
    if (n > sh->n_frames) n = sh->n_frames;
    sh->n_slots = n < 2 ? 2 : (int)n;
    sh->slots = calloc((size_t)sh->n_slots, sizeof *sh->slots);
    if (!sh->slots || !(sh->dctx = ZSTD_createDCtx())) return av_errf(err, AV_ENOMEM, "%s: out of memory", sh->name);
    return 0;
}

int shard_open_mem(const void *data, size_t size, const char *name, shard **out, av_err *err) {
    *out = NULL;
    shard *sh = calloc(1, sizeof *sh);
    if (!sh || !(sh->name = strdup(name ? name : "shard"))) {
        free(sh);
        return av_errf(err, AV_ENOMEM, "%s: out of memory", name ? name : "shard");
    }
    sh->data = data;
    sh->size = size;
    int rc = open_common(sh, err);
    if (rc) { shard_free(sh); return rc; }
    *out = sh;
    return 0;
}

int shard_open(const char *path, shard **out, av_err *err) {
    *out = NULL;
    av_map *m;
    int rc = av_map_open(path, &m, err);
    if (rc) return rc;
    static const uint8_t empty[1];
    rc = shard_open_mem(m->data ? m->data : empty, m->size, path, out, err);
    if (rc) { av_map_free(m); return rc; }
    (*out)->map = m;
    return 0;
}

void shard_free(shard *sh) {
    if (!sh) return;
    for (int i = 0; sh->slots && i < sh->n_slots; i++) free(sh->slots[i].buf);
    free(sh->slots);
    ZSTD_freeDCtx(sh->dctx);
    av_map_free(sh->map);
    free(sh->name);
    free(sh);
}

uint64_t shard_n_tokens(const shard *sh) { return sh->n_tokens; }
uint32_t shard_vocab(const shard *sh) { return sh->vocab; }
uint32_t shard_token_bytes(const shard *sh) { return sh->tb; }
uint32_t shard_frame_tokens(const shard *sh) { return sh->ft; }
uint64_t shard_n_frames(const shard *sh) { return sh->n_frames; }
const char *shard_name(const shard *sh) { return sh->name; }

/* Decompressed bytes of frame f, from the cache or decoded into the least
 * recently used slot (ids checked against vocab on decode). */
static int get_frame(shard *sh, uint64_t f, const uint8_t **out, av_err *err) {
    frame_slot *victim = &sh->slots[0];
    for (int i = 0; i < sh->n_slots; i++) {
        frame_slot *s = &sh->slots[i];
        if (s->tick && s->frame == f) {
            s->tick = ++sh->tick;
            *out = s->buf;
            return 0;
        }
        if (s->tick < victim->tick) victim = s;
    }
    const uint8_t *e = sh->data + SHARD_HEADER_SIZE + f * SHARD_INDEX_ENTRY;
    uint64_t off = rd64(e), cs = rd64(e + 8), n = frame_len(sh, f);
    size_t raw = (size_t)n * sh->tb;
    victim->tick = 0;
    if (!victim->buf && !(victim->buf = malloc((size_t)sh->ft * sh->tb)))
        return av_errf(err, AV_ENOMEM, "%s: out of memory for a frame of %" PRIu32 " ids", sh->name, sh->ft);
    size_t r = ZSTD_decompressDCtx(sh->dctx, victim->buf, raw, sh->data + off, (size_t)cs);
    if (ZSTD_isError(r))
        return av_errf(err, AV_EFORMAT, "%s: frame %" PRIu64 " at offset %" PRIu64 ": zstd: %s", sh->name, f, off,
                       ZSTD_getErrorName(r));
    if (r != raw)
        return av_errf(err, AV_EFORMAT, "%s: frame %" PRIu64 " at offset %" PRIu64 " decompresses to %zu bytes, expected %zu",
                       sh->name, f, off, r, raw);
    const uint8_t *b = victim->buf;
    for (uint64_t i = 0; i < n; i++) {
        uint32_t id = sh->tb == 2 ? (uint32_t)b[2 * i] | (uint32_t)b[2 * i + 1] << 8 : rd32(b + 4 * i);
        if (id >= sh->vocab)
            return av_errf(err, AV_EFORMAT,
                           "%s: token %" PRIu64 " (frame %" PRIu64 ") has id %" PRIu32 ", outside vocab_size %" PRIu32,
                           sh->name, f * sh->ft + i, f, id, sh->vocab);
    }
    victim->frame = f;
    victim->tick = ++sh->tick;
    *out = victim->buf;
    return 0;
}

int shard_read(shard *sh, uint64_t start, size_t n, int32_t *out, av_err *err) {
    if (start > sh->n_tokens || n > sh->n_tokens - start)
        return av_errf(err, AV_EINVAL, "%s: ids [%" PRIu64 ", %" PRIu64 ") are outside the shard's %" PRIu64 " tokens",
                       sh->name, start, start + (uint64_t)n, sh->n_tokens);
    while (n > 0) {
        uint64_t f = start / sh->ft, in = start % sh->ft;
        uint64_t avail = frame_len(sh, f) - in;
        size_t k = avail < n ? (size_t)avail : n;
        const uint8_t *b = NULL;
        int rc = get_frame(sh, f, &b, err);
        if (rc) return rc;
        if (sh->tb == 2) {
            const uint8_t *p = b + 2 * in;
            for (size_t i = 0; i < k; i++) out[i] = (int32_t)((uint32_t)p[2 * i] | (uint32_t)p[2 * i + 1] << 8);
        } else {
            const uint8_t *p = b + 4 * in;
            for (size_t i = 0; i < k; i++) out[i] = (int32_t)rd32(p + 4 * i);
        }
        out += k;
        n -= k;
        start += k;
    }
    return 0;
}

int shard_check_vocab(const shard *sh, int64_t model_vocab, av_err *err) {
    if ((int64_t)sh->vocab > model_vocab)
        return av_errf(err, AV_EINVAL,
                       "%s: dataset vocabulary (%" PRIu32 " ids) is larger than the model's (%" PRId64
                       "): prepare it with the model's tokenizer",
                       sh->name, sh->vocab, model_vocab);
    return 0;
}

/* ================================================================== writer */

struct shard_writer {
    char *path, *scratch_path;
    int scratch_fd;
    uint32_t vocab, tb, ft;
    uint8_t *raw;  /* current frame, ft ids */
    size_t raw_n;  /* ids in it */
    uint8_t *cbuf; /* compressed frame */
    size_t ccap;
    ZSTD_CCtx *cctx;
    uint64_t n_tokens, scratch_size;
    uint64_t *csize; /* per frame written to scratch */
    size_t n_frames, cap_frames;
};

void shard_writer_abort(shard_writer *w) {
    if (!w) return;
    if (w->scratch_fd >= 0) close(w->scratch_fd);
    ZSTD_freeCCtx(w->cctx);
    free(w->raw);
    free(w->cbuf);
    free(w->csize);
    free(w->path);
    free(w->scratch_path);
    free(w);
}

int shard_writer_open(const char *path, uint32_t vocab_size, uint32_t frame_tokens, shard_writer **out,
                      av_err *err) {
    *out = NULL;
    if (frame_tokens == 0) frame_tokens = SHARD_FRAME_TOKENS;
    if (vocab_size == 0 || vocab_size > INT32_MAX)
        return av_errf(err, AV_EINVAL, "%s: vocab_size %" PRIu32 " is out of range [1, %d]", path, vocab_size, INT32_MAX);
    if (frame_tokens > SHARD_MAX_FRAME_TOKENS)
        return av_errf(err, AV_EINVAL, "%s: frame_tokens %" PRIu32 " is out of range [1, %u]", path, frame_tokens,
                       SHARD_MAX_FRAME_TOKENS);
    shard_writer *w = calloc(1, sizeof *w);
    if (!w) return av_errf(err, AV_ENOMEM, "%s: out of memory", path);
    w->scratch_fd = -1;
    w->vocab = vocab_size;
    w->tb = vocab_size <= 65536 ? 2 : 4;
    w->ft = frame_tokens;
    size_t fb = (size_t)frame_tokens * w->tb;
    w->ccap = ZSTD_compressBound(fb);
    size_t sl = strlen(path) + 48;
    w->path = strdup(path);
    w->scratch_path = malloc(sl);
    w->raw = malloc(fb);
    w->cbuf = malloc(w->ccap);
    w->cctx = ZSTD_createCCtx();
    if (!w->path || !w->scratch_path || !w->raw || !w->cbuf || !w->cctx) {
        shard_writer_abort(w);
        return av_errf(err, AV_ENOMEM, "%s: out of memory", path);
    }
    snprintf(w->scratch_path, sl, "%s.frames.%ld", path, (long)getpid());
    w->scratch_fd = open(w->scratch_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (w->scratch_fd < 0) {
        int e = errno;
        shard_writer_abort(w);
        return av_errf(err, AV_EIO, "%s: cannot create scratch file: %s", path, strerror(e));
    }
    unlink(w->scratch_path); /* lives until closed; nothing left behind on a crash */
    *out = w;
    return 0;
}

static int put_all(int fd, const uint8_t *p, size_t n, uint64_t at) {
    while (n > 0) {
        ssize_t r = pwrite(fd, p, n, (off_t)at);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        p += r;
        n -= (size_t)r;
        at += (uint64_t)r;
    }
    return 0;
}

static int flush_frame(shard_writer *w, av_err *err) {
    if (w->raw_n == 0) return 0;
    size_t c = ZSTD_compressCCtx(w->cctx, w->cbuf, w->ccap, w->raw, w->raw_n * w->tb, ZSTD_LEVEL);
    if (ZSTD_isError(c)) return av_errf(err, AV_EIO, "%s: zstd: %s", w->path, ZSTD_getErrorName(c));
    if (w->n_frames == w->cap_frames) {
        size_t nc = w->cap_frames ? w->cap_frames * 2 : 64;
        uint64_t *p = realloc(w->csize, nc * sizeof *p);
        if (!p) return av_errf(err, AV_ENOMEM, "%s: out of memory", w->path);
        w->csize = p;
        w->cap_frames = nc;
    }
    if (put_all(w->scratch_fd, w->cbuf, c, w->scratch_size))
        return av_errf(err, AV_EIO, "%s: cannot write scratch file: %s", w->path, strerror(errno));
    w->csize[w->n_frames++] = c;
    w->scratch_size += c;
    w->raw_n = 0;
    return 0;
}

int shard_writer_add(shard_writer *w, const int32_t *ids, size_t n, av_err *err) {
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (uint32_t)ids[i] >= w->vocab)
            return av_errf(err, AV_EINVAL, "%s: token %" PRIu64 " has id %" PRId32 ", outside vocab_size %" PRIu32,
                           w->path, w->n_tokens, ids[i], w->vocab);
        uint8_t *p = w->raw + w->raw_n * w->tb;
        if (w->tb == 2) p[0] = (uint8_t)ids[i], p[1] = (uint8_t)(ids[i] >> 8);
        else wr32(p, (uint32_t)ids[i]);
        w->n_tokens++;
        if (++w->raw_n == w->ft) {
            int rc = flush_frame(w, err);
            if (rc) return rc;
        }
    }
    return 0;
}

uint64_t shard_writer_n_tokens(const shard_writer *w) { return w->n_tokens; }

int shard_writer_commit(shard_writer *w, uint64_t *file_size, av_err *err) {
    av_out *o = NULL;
    uint8_t *copy = NULL;
    int rc = flush_frame(w, err);
    if (rc) goto fail;
    if ((rc = av_out_open(w->path, &o, err))) goto fail;
    uint8_t h[SHARD_HEADER_SIZE];
    memcpy(h, SHARD_MAGIC, 8);
    wr32(h + 8, SHARD_VERSION);
    wr32(h + 12, w->vocab);
    wr32(h + 16, w->tb);
    wr32(h + 20, w->ft);
    wr64(h + 24, w->n_tokens);
    wr64(h + 32, w->n_frames);
    if ((rc = av_out_write(o, h, sizeof h, err))) goto fail;
    uint64_t off = SHARD_HEADER_SIZE + (uint64_t)w->n_frames * SHARD_INDEX_ENTRY;
    for (size_t f = 0; f < w->n_frames; f++) {
        uint8_t e[SHARD_INDEX_ENTRY];
        wr64(e, off);
        wr64(e + 8, w->csize[f]);
        if ((rc = av_out_write(o, e, sizeof e, err))) goto fail;
        off += w->csize[f];
    }
    enum { COPY = 1 << 20 };
    if (!(copy = malloc(COPY))) { rc = av_errf(err, AV_ENOMEM, "%s: out of memory", w->path); goto fail; }
    for (uint64_t at = 0; at < w->scratch_size;) {
        size_t want = w->scratch_size - at < COPY ? (size_t)(w->scratch_size - at) : COPY;
        ssize_t r = pread(w->scratch_fd, copy, want, (off_t)at);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            rc = av_errf(err, AV_EIO, "%s: cannot read back scratch file: %s", w->path, r < 0 ? strerror(errno) : "short read");
            goto fail;
        }
        if ((rc = av_out_write(o, copy, (size_t)r, err))) goto fail;
        at += (uint64_t)r;
    }
    rc = av_out_commit(o, err);
    o = NULL;
    if (rc) goto fail;
    if (file_size) *file_size = off;
    free(copy);
    shard_writer_abort(w);
    return 0;
fail:
    av_out_abort(o);
    free(copy);
    shard_writer_abort(w);
    return rc;
}

/* ========================================================= text -> shards */

typedef struct doc {
    const char *path;
    av_map *map;
    int val;
} doc;

typedef struct job {
    int doc;
    uint64_t a, b; /* byte range in the document */
    int bos;       /* BOS before it */
    int val;       /* goes to the val shard */
    int32_t *ids;  /* result */
    size_t n;
    int rc;
    av_err err;
} job;

static int is_ws(unsigned char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f'; }

/* Smallest chunk boundary p in [from, end] of text s, else end. A boundary
 * is a line start: s[p-1] is "\n" ending a line without trailing whitespace
 * (s[p-2] is not a space, tab, CR or another "\n") and s[p] is not
 * whitespace nor a byte in nosplit. There every pre-tokenizer regex ends a
 * piece after the "\n" whether or not the text goes on, and no vocabulary
 * token can span it (see vocab_nosplit), so encoding the two sides apart
 * gives the ids of the whole. */
static uint64_t next_boundary(const uint8_t *s, uint64_t from, uint64_t end, const uint8_t *nosplit) {
    if (from < 2) from = 2;
    for (uint64_t p = from; p < end; p++) {
        if (s[p - 1] != '\n') {
            const void *q = memchr(s + p, '\n', end - p);
            if (!q) return end;
            p = (uint64_t)((const uint8_t *)q - s); /* the loop's ++ moves past the "\n" */
            continue;
        }
        if (!is_ws(s[p - 2]) && !is_ws(s[p]) && !nosplit[s[p]]) return p;
    }
    return end;
}

/* Bytes a chunk must not start with: X when some token's text holds "\nX"
 * (a merge could span the boundary), and the first bytes of control tokens
 * (lstrip could take the "\n" before them). */
static void vocab_nosplit(const tok *t, uint8_t nosplit[256]) {
    memset(nosplit, 0, 256);
    for (int32_t id = 0; id < tok_n_vocab(t); id++) {
        char *s = NULL, *plain = NULL;
        size_t n = 0, pn = 0;
        av_err e;
        if (tok_decode(t, &id, 1, 1, &s, &n, &e)) continue;
        for (size_t i = 0; i + 1 < n; i++)
            if (s[i] == '\n') nosplit[(unsigned char)s[i + 1]] = 1;
        if (n > 0 && tok_decode(t, &id, 1, 0, &plain, &pn, &e) == 0 && pn != n) nosplit[(unsigned char)s[0]] = 1;
        free(s);
        free(plain);
    }
}

static int add_jobs(job **jobs, size_t *nj, size_t *cap, int d, const uint8_t *s, uint64_t a, uint64_t b, int bos,
                    int val, size_t chunk, const uint8_t *nosplit, uint64_t *n_split) {
    uint64_t p = a;
    do {
        uint64_t e = b;
        if (b - p > chunk) e = next_boundary(s, p + chunk, b, nosplit);
        if (*nj == *cap) {
            size_t nc = *cap ? *cap * 2 : 64;
            job *q = realloc(*jobs, nc * sizeof *q);
            if (!q) return AV_ENOMEM;
            *jobs = q;
            *cap = nc;
        }
        if (e < b) *n_split += 1;
        (*jobs)[(*nj)++] = (job){ .doc = d, .a = p, .b = e, .bos = bos && p == 0 && b > 0, .val = val };
        p = e;
    } while (p < b);
    return 0;
}

int shard_prepare(const tok *t, const char *const *train_files, int n_train, const char *const *val_files,
                  int n_val, const char *train_out, const char *val_out, const shard_prep_opts *o,
                  shard_prep_stats *st, av_err *err) {
    shard_prep_opts def = { 0 };
    if (!o) o = &def;
    memset(st, 0, sizeof *st);
    st->split_file = -1;
    int nd = n_train + (val_out ? n_val : 0), rc = 0;
    doc *docs = calloc(nd > 0 ? (size_t)nd : 1, sizeof *docs);
    job *jobs = NULL;
    size_t nj = 0, capj = 0;
    shard_writer *w[2] = { NULL, NULL };
    if (!docs) return av_errf(err, AV_ENOMEM, "out of memory");
    double F = o->val_fraction;
    int by_fraction = val_out && n_val == 0;
    if (n_train < 1) { rc = av_errf(err, AV_EINVAL, "no training text files"); goto done; }
    if (by_fraction && !(F > 0 && F < 1)) {
        rc = av_errf(err, AV_EINVAL, "validation fraction %g is not in (0, 1)", F);
        goto done;
    }
    int32_t bos_id = tok_bos(t);
    if (o->bos && bos_id < 0) {
        rc = av_errf(err, AV_EINVAL, "the tokenizer has no BOS token to put before each document");
        goto done;
    }
    for (int i = 0; i < nd; i++) {
        docs[i].val = i >= n_train;
        docs[i].path = docs[i].val ? val_files[i - n_train] : train_files[i];
        if ((rc = av_map_open(docs[i].path, &docs[i].map, err))) goto done;
        st->text_bytes += docs[i].map->size;
        if (docs[i].val) st->val_text_bytes += docs[i].map->size;
        else st->train_text_bytes += docs[i].map->size;
    }
    uint8_t nosplit[256];
    vocab_nosplit(t, nosplit);
    size_t chunk = o->chunk_bytes ? o->chunk_bytes : (size_t)64 << 10;

    /* where validation starts (fraction mode): doc sd, byte so */
    int sd = n_train;
    uint64_t so = 0;
    if (by_fraction) {
        uint64_t target = (uint64_t)((double)st->train_text_bytes * (1.0 - F)), acc = 0;
        for (sd = 0; sd < n_train; sd++) {
            uint64_t sz = docs[sd].map->size;
            if (target < acc + sz) break;
            acc += sz;
        }
        if (sd < n_train) {
            so = next_boundary(docs[sd].map->data, target - acc, docs[sd].map->size, nosplit);
            if (so == docs[sd].map->size) sd++, so = 0;
        }
        /* skip empty files so the split lands on text */
        while (sd < n_train && so == 0 && docs[sd].map->size == 0) sd++;
        if (sd >= n_train) {
            rc = av_errf(err, AV_EINVAL, "validation fraction %g leaves no text for validation (no line start to split at after byte %" PRIu64 " of %s)",
                         F, target, n_train == 1 ? docs[0].path : "the training files");
            goto done;
        }
        if (sd == 0 && so == 0) {
            rc = av_errf(err, AV_EINVAL, "validation fraction %g leaves no text for training", F);
            goto done;
        }
        st->split_file = sd;
        st->split_offset = so;
        st->val_text_bytes = 0;
        for (int i = sd; i < n_train; i++) st->val_text_bytes += docs[i].map->size;
        st->val_text_bytes -= so;
        st->train_text_bytes -= st->val_text_bytes;
    }
    for (int i = 0; i < nd; i++) {
        const uint8_t *s = docs[i].map->data;
        uint64_t sz = docs[i].map->size;
        int r;
        if (by_fraction && i == sd && so > 0) {
            r = add_jobs(&jobs, &nj, &capj, i, s, 0, so, o->bos, 0, chunk, nosplit, &st->n_chunk_splits);
            if (!r) r = add_jobs(&jobs, &nj, &capj, i, s, so, sz, 0, 1, chunk, nosplit, &st->n_chunk_splits);
        } else {
            int val = docs[i].val || (by_fraction && i >= sd);
            r = add_jobs(&jobs, &nj, &capj, i, s, 0, sz, o->bos, val, chunk, nosplit, &st->n_chunk_splits);
        }
        if (r) { rc = av_errf(err, AV_ENOMEM, "out of memory"); goto done; }
    }

    uint32_t vocab = (uint32_t)tok_n_vocab(t);
    if ((rc = shard_writer_open(train_out, vocab, o->frame_tokens, &w[0], err))) goto done;
    if (val_out && (rc = shard_writer_open(val_out, vocab, o->frame_tokens, &w[1], err))) goto done;

    int nt = o->n_threads > 0 ? o->n_threads : 0;
#ifdef _OPENMP
    if (nt == 0) nt = omp_get_max_threads();
#endif
    if (nt < 1) nt = 1;
    size_t group = (size_t)nt * 2;
    uint64_t done_bytes = 0;
    for (size_t g = 0; g < nj; g += group) {
        size_t ge = g + group < nj ? g + group : nj;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
        for (size_t k = g; k < ge; k++) {
            job *j = &jobs[k];
            tok_opts to = { .add_special = 0, .parse_special = o->parse_special };
            const char *txt = (const char *)docs[j->doc].map->data + j->a;
            size_t tl = (size_t)(j->b - j->a);
            j->rc = j->a > 0 ? tok_encode_continued(t, txt, tl, &to, &j->ids, &j->n, &j->err)
                             : tok_encode(t, txt, tl, &to, &j->ids, &j->n, &j->err);
        }
        for (size_t k = g; k < ge; k++) {
            job *j = &jobs[k];
            if (!rc && j->rc) {
                rc = j->rc;
                av_errf(err, rc, "%s: bytes %" PRIu64 "..%" PRIu64 ": %s", docs[j->doc].path, j->a, j->b, j->err.msg);
            }
            shard_writer *ww = w[j->val];
            if (!rc && j->bos) rc = shard_writer_add(ww, &bos_id, 1, err);
            if (!rc) rc = shard_writer_add(ww, j->ids, j->n, err);
            free(j->ids);
            j->ids = NULL;
            done_bytes += j->b - j->a;
        }
        if (rc) goto done;
        if (o->progress) o->progress(o->progress_ud, done_bytes, st->text_bytes);
    }
    st->train_tokens = shard_writer_n_tokens(w[0]);
    st->val_tokens = w[1] ? shard_writer_n_tokens(w[1]) : 0;
    rc = shard_writer_commit(w[0], &st->train_file_bytes, err);
    w[0] = NULL;
    if (!rc && w[1]) rc = shard_writer_commit(w[1], &st->val_file_bytes, err);
    w[1] = NULL;
done:
    shard_writer_abort(w[0]);
    shard_writer_abort(w[1]);
    for (size_t k = 0; k < nj; k++) free(jobs[k].ids);
    free(jobs);
    for (int i = 0; i < nd; i++) av_map_free(docs[i].map);
    free(docs);
    return rc;
}

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

uint64_t shard_vocab_hash(const tok *t) {
    uint64_t h = 0xcbf29ce484222325ull;
    uint8_t le[4];
    int32_t n = tok_n_vocab(t);
    wr32(le, (uint32_t)n);
    h = fnv(h, le, 4);
    for (int32_t id = 0; id < n; id++) {
        size_t len = 0;
        const char *s = tok_token_text(t, id, &len);
        if (!s) len = 0;
        wr32(le, (uint32_t)len);
        h = fnv(fnv(h, le, 4), s, len);
    }
    return h;
}

/* ================================================================== loader */

struct shard_loader {
    shard *sh;
    uint64_t seed;
    smp_rng rng;
    uint64_t pos;
    int32_t *win;
    size_t win_cap;
};

int shard_loader_new(shard *sh, uint64_t seed, shard_loader **out, av_err *err) {
    *out = NULL;
    shard_loader *l = calloc(1, sizeof *l);
    if (!l) return av_errf(err, AV_ENOMEM, "%s: out of memory", sh->name);
    l->sh = sh;
    l->seed = seed;
    smp_rng_seed(&l->rng, seed);
    *out = l;
    return 0;
}

void shard_loader_free(shard_loader *l) {
    if (!l) return;
    free(l->win);
    free(l);
}

uint64_t shard_loader_position(const shard_loader *l) { return l->pos; }

/* Uniform in [0, r) without modulo bias (r >= 1). */
static uint64_t uniform(smp_rng *g, uint64_t r) {
    uint64_t min = (0 - r) % r; /* 2^64 mod r */
    uint64_t x;
    do x = smp_rng_next(g);
    while (x < min);
    return x % r;
}

int shard_next_batch(shard_loader *l, int B, int T, int32_t *inputs, int32_t *targets, av_err *err) {
    shard *sh = l->sh;
    if (B < 1 || T < 1) return av_errf(err, AV_EINVAL, "%s: batch %d x %d: both must be at least 1", sh->name, B, T);
    if (sh->n_tokens < (uint64_t)T + 1)
        return av_errf(err, AV_EINVAL, "%s: %" PRIu64 " tokens, fewer than one window of T + 1 = %d", sh->name,
                       sh->n_tokens, T + 1);
    if ((size_t)T + 1 > l->win_cap) {
        int32_t *p = realloc(l->win, ((size_t)T + 1) * sizeof *p);
        if (!p) return av_errf(err, AV_ENOMEM, "%s: out of memory", sh->name);
        l->win = p;
        l->win_cap = (size_t)T + 1;
    }
    smp_rng saved = l->rng;
    uint64_t R = sh->n_tokens - (uint64_t)T; /* starts 0 .. n_tokens - T - 1 */
    for (int b = 0; b < B; b++) {
        uint64_t s = uniform(&l->rng, R);
        int rc = shard_read(sh, s, (size_t)T + 1, l->win, err);
        if (rc) { l->rng = saved; return rc; }
        memcpy(inputs + (size_t)b * T, l->win, (size_t)T * sizeof *inputs);
        memcpy(targets + (size_t)b * T, l->win + 1, (size_t)T * sizeof *targets);
    }
    l->pos += (uint64_t)B;
    return 0;
}

/* blob: "ALDR" u32 version, u64 seed, u64 rng[4], u64 pos, u64 n_tokens, u32 vocab, u32 0 */
#define STATE_SIZE 72u
#define STATE_MAGIC "ALDR"
size_t shard_loader_state_size(void) { return STATE_SIZE; }

void shard_loader_save(const shard_loader *l, void *buf) {
    uint8_t *p = buf;
    memcpy(p, STATE_MAGIC, 4);
    wr32(p + 4, 1);
    wr64(p + 8, l->seed);
    for (int i = 0; i < 4; i++) wr64(p + 16 + 8 * i, l->rng.s[i]);
    wr64(p + 48, l->pos);
    wr64(p + 56, l->sh->n_tokens);
    wr32(p + 64, l->sh->vocab);
    wr32(p + 68, 0);
}

int shard_loader_load(shard_loader *l, const void *buf, size_t n, av_err *err) {
    const uint8_t *p = buf;
    if (n != STATE_SIZE || memcmp(p, STATE_MAGIC, 4) != 0 || rd32(p + 4) != 1)
        return av_errf(err, AV_EFORMAT, "%s: data loader state is not a version-1 state of %u bytes", l->sh->name,
                       STATE_SIZE);
    uint64_t nt = rd64(p + 56);
    uint32_t v = rd32(p + 64);
    if (nt != l->sh->n_tokens || v != l->sh->vocab)
        return av_errf(err, AV_EINVAL,
                       "%s: data loader state is for a dataset of %" PRIu64 " tokens (vocab %" PRIu32
                       "), this one has %" PRIu64 " (vocab %" PRIu32 ")",
                       l->sh->name, nt, v, l->sh->n_tokens, l->sh->vocab);
    smp_rng r;
    for (int i = 0; i < 4; i++) r.s[i] = rd64(p + 16 + 8 * i);
    if (!(r.s[0] | r.s[1] | r.s[2] | r.s[3]))
        return av_errf(err, AV_EFORMAT, "%s: data loader state has an all-zero generator", l->sh->name);
    l->seed = rd64(p + 8);
    l->rng = r;
    l->pos = rd64(p + 48);
    return 0;
}
