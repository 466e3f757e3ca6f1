/* pt_read.c — PyTorch checkpoint reader: zip (libarchive) and legacy pickle
 * streams, restricted unpickling (pickle.h), state-dict selection, storage
 * views checked and materialised, sharded pytorch_model.bin.index.json. */
#include <archive.h>
#include <archive_entry.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "hashmap.h"
#include "pickle.h"
#include "torchpt.h"

#define PT_MAX_ENTRIES (1u << 20)
#define PT_MAX_INDEX (64u << 20) /* bytes of an index.json */

typedef struct entry {
    char *rel;            /* name below the archive folder ("data/0") */
    const uint8_t *data;  /* view into the input or into an anonymous map */
    size_t size;
} entry;

typedef struct store {    /* a storage record resolved to bytes */
    const char *key;      /* points at the pk_value's key */
    int dtype;
    const uint8_t *data;
    size_t nbytes;
} store;

typedef struct ctx {
    const char *name;
    const uint8_t *buf;
    size_t size;
    av_model *m;
    av_err *err;
    entry *ents;
    size_t n_ents, cap_ents;
    av_strmap ent_map;    /* rel -> index in ents */
    int big_endian;
    int legacy;
    store *stores;
    size_t n_stores, cap_stores;
    av_strmap store_map;  /* key -> index in stores */
    size_t inflated, materialised;
} ctx;

static const uint8_t EMPTY[8];

__attribute__((format(printf, 3, 4))) static int fail(ctx *c, int code, const char *fmt, ...) {
    char m[420];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    return av_errf(c->err, code, "%s: %s", c->name, m);
}

/* Printable, bounded copy of untrusted text. */
static const char *clean(char *dst, size_t cap, const char *s, size_t n) {
    size_t j = 0;
    for (size_t i = 0; i < n && j + 4 < cap; i++) dst[j++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    if (j + 4 >= cap && n > j) { dst[j++] = '.'; dst[j++] = '.'; dst[j++] = '.'; }
    dst[j] = 0;
    return dst;
}

/* A zeroed anonymous mapping held by the model (freed with it). */
static int anon(ctx *c, size_t n, uint8_t **p) {
    if (!n) { *p = (uint8_t *)EMPTY; return 0; }
    void *q = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (q == MAP_FAILED) return fail(c, AV_ENOMEM, "out of memory (%zu bytes)", n);
    av_map *mp = calloc(1, sizeof *mp);
    if (!mp || !(mp->path = strdup(c->name))) {
        free(mp);
        munmap(q, n);
        return fail(c, AV_ENOMEM, "out of memory");
    }
    mp->data = q;
    mp->size = n;
    mp->refs = 1;
    int rc = av_model_hold_map(c->m, mp);
    av_map_free(mp);
    if (rc) return fail(c, AV_ENOMEM, "out of memory");
    *p = q;
    return 0;
}

/* ---------------- zip ---------------- */

static size_t inflate_budget(const ctx *c) {
    size_t b = c->size > (SIZE_MAX - (1u << 20)) / 64 ? SIZE_MAX : c->size * 64 + (1u << 20);
    return b;
}

/* Validate an entry name; set *prefix_len to the archive folder's length. */
static int check_name(ctx *c, const char *nm, const char *prefix, size_t *plen) {
    char cn[200];
    size_t n = strlen(nm);
    clean(cn, sizeof cn, nm, n);
    if (!n) return fail(c, AV_EFORMAT, "zip entry with an empty name");
    if (nm[0] == '/' || strchr(nm, '\\') || (n > 1 && nm[1] == ':'))
        return fail(c, AV_EFORMAT, "zip entry '%s' has an absolute path", cn);
    for (const char *s = nm; *s;) {
        const char *e = strchr(s, '/');
        size_t k = e ? (size_t)(e - s) : strlen(s);
        if ((k == 2 && s[0] == '.' && s[1] == '.') || (k == 1 && s[0] == '.'))
            return fail(c, AV_EFORMAT, "zip entry '%s': path traversal ('%.*s' component)", cn, (int)k, s);
        if (!k && e) return fail(c, AV_EFORMAT, "zip entry '%s': empty path component", cn);
        s = e ? e + 1 : s + k;
    }
    const char *sl = strchr(nm, '/');
    if (!sl || !sl[1]) return fail(c, AV_EFORMAT, "zip entry '%s' is not inside an archive folder", cn);
    size_t pl = (size_t)(sl - nm);
    if (prefix && (strlen(prefix) != pl || memcmp(prefix, nm, pl) != 0)) {
        char cp[120];
        return fail(c, AV_EFORMAT, "zip entry '%s' is outside the archive folder '%s' (more than one prefix folder)",
                    cn, clean(cp, sizeof cp, prefix, strlen(prefix)));
    }
    *plen = pl;
    return 0;
}

static int add_entry(ctx *c, const char *rel, const uint8_t *data, size_t size) {
    char cn[200];
    if (av_strmap_get(&c->ent_map, rel, strlen(rel)) >= 0)
        return fail(c, AV_EFORMAT, "duplicate zip entry '%s'", clean(cn, sizeof cn, rel, strlen(rel)));
    if (c->n_ents == c->cap_ents) {
        size_t nc = c->cap_ents ? c->cap_ents * 2 : 64;
        entry *ne = realloc(c->ents, nc * sizeof *ne);
        if (!ne) return fail(c, AV_ENOMEM, "out of memory");
        c->ents = ne;
        c->cap_ents = nc;
    }
    entry *e = &c->ents[c->n_ents];
    if (!(e->rel = strdup(rel)) || av_strmap_put(&c->ent_map, rel, strlen(rel), (int32_t)c->n_ents)) {
        free(e->rel);
        return fail(c, AV_ENOMEM, "out of memory");
    }
    e->data = data;
    e->size = size;
    c->n_ents++;
    return 0;
}

/* Read the current entry's bytes: a view into the input when libarchive
 * hands out the stored bytes in place, else a capped copy. */
static int read_entry(ctx *c, struct archive *a, struct archive_entry *ae, const char *cn, const uint8_t **out,
                      size_t *out_size) {
    const void *blk;
    size_t bl;
    la_int64_t off;
    int64_t declared = archive_entry_size_is_set(ae) ? archive_entry_size(ae) : -1;
    size_t budget = inflate_budget(c);
    if (declared > 0 && (uint64_t)declared > c->size && (uint64_t)declared > budget - c->inflated)
        return fail(c, AV_EFORMAT, "zip entry '%s' declares %lld bytes, more than 64x the archive size + 1 MiB "
                                   "(zip bomb?)", cn, (long long)declared);
    /* Storage records stored uncompressed are taken in place from the local
     * header, without reading them: libarchive computes the CRC of every
     * block it hands out, which would read (and make resident) the whole
     * file at load time. Like GGUF and safetensors, tensor bytes are
     * bounds-checked, not checksummed. */
    la_int64_t hp = archive_read_header_position(a);
    if (strstr(cn, "/data/") && declared >= 0 && hp >= 0 && (uint64_t)hp <= c->size - 30) {
        const uint8_t *h = c->buf + hp;
        const unsigned method = h[8] | h[9] << 8, nl = h[26] | h[27] << 8, el = h[28] | h[29] << 8;
        const uint64_t doff = (uint64_t)hp + 30 + nl + el;
        if (h[0] == 'P' && h[1] == 'K' && h[2] == 3 && h[3] == 4 && method == 0 && doff <= c->size &&
            (uint64_t)declared <= c->size - doff) {
            if (archive_read_data_skip(a) != ARCHIVE_OK) goto aerr;
            *out = declared ? c->buf + doff : EMPTY;
            *out_size = (size_t)declared;
            return 0;
        }
    }
    int r = archive_read_data_block(a, &blk, &bl, &off);
    if (r == ARCHIVE_EOF) {
        *out = EMPTY;
        *out_size = 0;
        return 0;
    }
    if (r != ARCHIVE_OK && r != ARCHIVE_WARN) goto aerr;
    if (off == 0 && declared >= 0 && bl == (size_t)declared && (const uint8_t *)blk >= c->buf &&
        bl <= c->size && (const uint8_t *)blk - c->buf <= (ptrdiff_t)(c->size - bl)) {
        /* stored in place. Storage records are not drained: libarchive's CRC
         * check would read every byte at load time and make the whole file
         * resident (a 1 GB checkpoint = 1 GB RSS before conversion starts);
         * like GGUF and safetensors, tensor bytes are bounds-checked, not
         * checksummed. Other entries (data.pkl, version) are CRC-checked. */
        const void *b2;
        size_t l2;
        la_int64_t o2;
        do r = archive_read_data_block(a, &b2, &l2, &o2);
        while ((r == ARCHIVE_OK || r == ARCHIVE_WARN) && l2 == 0);
        if (r == ARCHIVE_EOF) {
            *out = blk;
            *out_size = bl;
            return 0;
        }
        if (r != ARCHIVE_OK && r != ARCHIVE_WARN) goto aerr;
        if (l2) return fail(c, AV_EFORMAT, "zip entry '%s' holds more bytes than its declared size", cn);
    }
    /* copy path: growable buffer, every byte counted against the budget */
    uint8_t *buf = NULL, *dst;
    size_t len = 0, cap = 0;
    int rc = 0;
    for (;;) {
        if (off < 0 || (uint64_t)off > SIZE_MAX - bl) { rc = fail(c, AV_EFORMAT, "zip entry '%s': bad block offset", cn); break; }
        size_t end = (size_t)off + bl;
        if (end > c->size && end > budget - c->inflated) {
            rc = fail(c, AV_EFORMAT, "zip entry '%s' inflates past %zu bytes, more than 64x the archive size + 1 MiB "
                                     "(zip bomb?)", cn, budget);
            break;
        }
        if (end > cap) {
            size_t nc = cap ? cap : 65536;
            while (nc < end) nc *= 2;
            uint8_t *nb = realloc(buf, nc);
            if (!nb) { rc = fail(c, AV_ENOMEM, "out of memory"); break; }
            memset(nb + cap, 0, nc - cap);
            buf = nb;
            cap = nc;
        }
        if (bl) memcpy(buf + off, blk, bl);
        if (end > len) len = end;
        r = archive_read_data_block(a, &blk, &bl, &off);
        if (r == ARCHIVE_EOF) break;
        if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
            char m[200];
            snprintf(m, sizeof m, "%s", archive_error_string(a) ? archive_error_string(a) : "read error");
            rc = fail(c, AV_EFORMAT, "zip entry '%s': %s", cn, m);
            break;
        }
    }
    if (!rc) {
        c->inflated += len > c->size ? len : 0;
        if (!(rc = anon(c, len, &dst))) {
            if (len) memcpy(dst, buf, len);
            *out = dst;
            *out_size = len;
        }
    }
    free(buf);
    return rc;
aerr:
    return fail(c, AV_EFORMAT, "zip entry '%s': %s", cn,
                archive_error_string(a) ? archive_error_string(a) : "read error");
}

static int read_zip(ctx *c) {
    struct archive *a = archive_read_new();
    struct archive_entry *ae;
    char *prefix = NULL;
    int rc = 0, r;
    if (!a) return fail(c, AV_ENOMEM, "out of memory");
    /* the seekable reader works from the central directory, so a truncated
     * archive is an error (the streaming one would take what precedes the cut) */
    archive_read_support_format_zip_seekable(a);
    /* no CRC pass over the storages (see read_entry); data.pkl is parsed
     * by the restricted unpickler, which checks every length it reads */
    archive_read_set_format_option(a, "zip", "ignorecrc32", "1");
    if (archive_read_open_memory(a, c->buf, c->size) != ARCHIVE_OK) {
        rc = fail(c, AV_EFORMAT, "not a readable zip archive: %s",
                  archive_error_string(a) ? archive_error_string(a) : "?");
        goto done;
    }
    while ((r = archive_read_next_header(a, &ae)) == ARCHIVE_OK || r == ARCHIVE_WARN) {
        const char *nm = archive_entry_pathname(ae);
        char cn[200];
        size_t pl = 0;
        if (c->n_ents >= PT_MAX_ENTRIES) { rc = fail(c, AV_EFORMAT, "more than %u zip entries", PT_MAX_ENTRIES); goto done; }
        if (!nm) { rc = fail(c, AV_EFORMAT, "zip entry %zu has no (readable) name", c->n_ents); goto done; }
        if ((rc = check_name(c, nm, prefix, &pl))) goto done;
        clean(cn, sizeof cn, nm, strlen(nm));
        if (!prefix && !(prefix = strndup(nm, pl))) { rc = fail(c, AV_ENOMEM, "out of memory"); goto done; }
        if (archive_entry_filetype(ae) == AE_IFDIR) continue;
        if (archive_entry_filetype(ae) != AE_IFREG) {
            rc = fail(c, AV_EFORMAT, "zip entry '%s' is not a regular file", cn);
            goto done;
        }
        const char *rel = nm + pl + 1;
        const uint8_t *d = EMPTY;
        size_t ds = 0;
        if (!strcmp(rel, "data.pkl") || !strncmp(rel, "data/", 5) || !strcmp(rel, "byteorder") ||
            !strcmp(rel, "version") || !strcmp(rel, ".data/version")) {
            if ((rc = read_entry(c, a, ae, cn, &d, &ds))) goto done;
        } else if (archive_read_data_skip(a) != ARCHIVE_OK) {
            rc = fail(c, AV_EFORMAT, "zip entry '%s': %s", cn, archive_error_string(a) ? archive_error_string(a) : "?");
            goto done;
        }
        if ((rc = add_entry(c, rel, d, ds))) goto done;
    }
    if (r != ARCHIVE_EOF) {
        rc = fail(c, AV_EFORMAT, "zip: %s", archive_error_string(a) ? archive_error_string(a) : "bad archive");
        goto done;
    }
    if (!prefix) rc = fail(c, AV_EFORMAT, "empty zip archive (no data.pkl)");
done:
    free(prefix);
    archive_read_free(a);
    return rc;
}

static const entry *find_entry(const ctx *c, const char *rel) {
    int32_t i = av_strmap_get(&c->ent_map, rel, strlen(rel));
    return i >= 0 ? &c->ents[i] : NULL;
}

/* ---------------- storages and tensors ---------------- */

static size_t esize_of(int dtype) {
    const av_dtype_traits *t = av_dtype_traits_of(dtype);
    return t && t->block_size == 1 ? t->type_size : 0;
}

static size_t esize_of(int dtype);

/* Record a storage; bytes not aligned to the element size (legacy files,
 * zips not written by torch) are copied once into an aligned buffer, so
 * every tensor view over the storage is aligned and ties still share. */
static int add_store(ctx *c, const char *key, int dtype, const uint8_t *data, size_t nbytes) {
    size_t es = esize_of(dtype);
    if (es > 1 && (uintptr_t)data % es) {
        uint8_t *w;
        size_t lim = c->size * 2 + (64u << 20);
        if (nbytes > lim - c->materialised || c->materialised > lim)
            return fail(c, AV_EFORMAT, "unaligned storages to copy exceed %zu bytes", lim);
        c->materialised += nbytes;
        int rc = anon(c, nbytes, &w);
        if (rc) return rc;
        memcpy(w, data, nbytes);
        data = w;
    }
    if (c->n_stores == c->cap_stores) {
        size_t nc = c->cap_stores ? c->cap_stores * 2 : 64;
        store *ns = realloc(c->stores, nc * sizeof *ns);
        if (!ns) return fail(c, AV_ENOMEM, "out of memory");
        c->stores = ns;
        c->cap_stores = nc;
    }
    if (av_strmap_put(&c->store_map, key, strlen(key), (int32_t)c->n_stores)) return fail(c, AV_ENOMEM, "out of memory");
    c->stores[c->n_stores++] = (store){key, dtype, data, nbytes};
    return 0;
}

static store *find_store(ctx *c, const char *key) {
    int32_t i = av_strmap_get(&c->store_map, key, strlen(key));
    return i >= 0 ? &c->stores[i] : NULL;
}

/* Bytes of storage s: (*p, *n) with n = numel * element size, bounds-checked. */
static int storage_bytes(ctx *c, const pk_value *s, int dtype, const char *tname, const uint8_t **p, size_t *n) {
    char ck[120];
    const char *key = s->u.st.key;
    clean(ck, sizeof ck, key, strlen(key));
    int sdt = s->u.st.untyped ? AV_U8 : s->dtype;
    size_t es = esize_of(sdt);
    if (!es) return fail(c, AV_EUNSUPPORTED, "tensor '%s': storage '%s' has an unsupported dtype", tname, ck);
    store *st = find_store(c, key);
    if (!st) {
        if (c->legacy) return fail(c, AV_EFORMAT, "tensor '%s': storage '%s' is missing from the file", tname, ck);
        char rel[300];
        snprintf(rel, sizeof rel, "data/%s", key);
        const entry *e = find_entry(c, rel);
        if (!e) return fail(c, AV_EFORMAT, "tensor '%s': storage record 'data/%s' is missing from the archive", tname, ck);
        const uint8_t *d = e->data;
        if (c->big_endian && es > 1) {
            uint8_t *w;
            int rc = anon(c, e->size, &w);
            if (rc) return rc;
            for (size_t i = 0; i + es <= e->size; i += es)
                for (size_t k = 0; k < es; k++) w[i + k] = d[i + es - 1 - k];
            d = w;
        }
        if (add_store(c, key, sdt, d, e->size)) return c->err->code;
        st = &c->stores[c->n_stores - 1];
    }
    if (st->dtype != sdt)
        return fail(c, AV_EFORMAT, "storage '%s' is used as both %s and %s", ck, av_dtype_name(st->dtype), av_dtype_name(sdt));
    uint64_t need;
    if (__builtin_mul_overflow((uint64_t)s->u.st.numel, (uint64_t)es, &need) || need > st->nbytes)
        return fail(c, AV_EFORMAT, "tensor '%s': storage '%s' holds %zu bytes, less than its %lld %s elements", tname,
                    ck, st->nbytes, (long long)s->u.st.numel, av_dtype_name(sdt));
    const uint8_t *d = st->data;
    if (s->u.st.has_view) { /* legacy storage view: root[offset, offset + size) */
        uint64_t vo, vs;
        if (__builtin_mul_overflow((uint64_t)s->u.st.view_offset, es, &vo) ||
            __builtin_mul_overflow((uint64_t)s->u.st.view_size, es, &vs) || vo > need || vs > need - vo)
            return fail(c, AV_EFORMAT, "tensor '%s': storage view of '%s' is out of range", tname, ck);
        d += vo;
        need = vs;
    }
    (void)dtype;
    *p = d;
    *n = (size_t)need;
    return 0;
}

static void dims_str(const int64_t *v, int n, char *buf, size_t cap) {
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < n && k < cap; i++) k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)v[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
}

static void copy_strided(uint8_t *dst, const uint8_t *src, size_t es, int nd, const int64_t *size,
                         const int64_t *stride, int64_t numel) {
    int64_t idx[PK_MAX_DIMS] = {0};
    int64_t off = 0;
    for (int64_t i = 0; i < numel; i++) {
        switch (es) {
        case 1: dst[i] = src[off]; break;
        case 2: memcpy(dst + i * 2, src + off * 2, 2); break;
        case 4: memcpy(dst + i * 4, src + off * 4, 4); break;
        case 8: memcpy(dst + i * 8, src + off * 8, 8); break;
        default: memcpy(dst + (size_t)i * es, src + (size_t)off * es, es);
        }
        for (int d = nd - 1; d >= 0; d--) {
            if (++idx[d] < size[d]) { off += stride[d]; break; }
            off -= stride[d] * (size[d] - 1);
            idx[d] = 0;
        }
    }
}

/* Resolve tensor value t (named tname) to bytes; contiguous views point
 * into the storage, strided ones are materialised once per value. */
static int tensor_data(ctx *c, pk_value *t, const char *tname, const uint8_t **data) {
    if (t->u.t.user) { *data = t->u.t.user; return 0; }
    int dt = t->dtype;
    size_t es = esize_of(dt);
    if (dt < 0 || !es) return fail(c, AV_EUNSUPPORTED, "tensor '%s': unsupported dtype (complex or quantized)", tname);
    pk_value *s = t->u.t.storage;
    if (!s->u.st.untyped && s->dtype != dt)
        return fail(c, AV_EFORMAT, "tensor '%s' is %s but its storage is %s", tname, av_dtype_name(dt), av_dtype_name(s->dtype));
    const uint8_t *base = NULL;
    size_t nbytes = 0;
    int rc = storage_bytes(c, s, dt, tname, &base, &nbytes);
    if (rc) return rc;
    int nd = t->u.t.n_dims;
    const int64_t *sz = t->u.t.size, *st = t->u.t.stride;
    char ss[200], sst[200];
    dims_str(sz, nd, ss, sizeof ss);
    dims_str(st, nd, sst, sizeof sst);
    uint64_t numel = 1, last = (uint64_t)t->u.t.offset, tmp;
    for (int i = 0; i < nd; i++) {
        if (__builtin_mul_overflow(numel, (uint64_t)sz[i], &numel))
            return fail(c, AV_EFORMAT, "tensor '%s': size %s overflows", tname, ss);
    }
    uint64_t avail = nbytes / es;
    if (numel == 0) { *data = base; t->u.t.user = (void *)base; return 0; }
    for (int i = 0; i < nd; i++)
        if (__builtin_mul_overflow((uint64_t)(sz[i] - 1), (uint64_t)st[i], &tmp) || __builtin_add_overflow(last, tmp, &last))
            return fail(c, AV_EFORMAT, "tensor '%s': view sizes %s strides %s overflow", tname, ss, sst);
    if (last >= avail)
        return fail(c, AV_EFORMAT, "tensor '%s': view (offset %lld, sizes %s, strides %s) reaches element %llu but "
                                   "storage '%s' holds %llu elements (out of range)", tname, (long long)t->u.t.offset,
                    ss, sst, (unsigned long long)last, s->u.st.key, (unsigned long long)avail);
    int contiguous = 1;
    int64_t expect = 1;
    for (int i = nd - 1; i >= 0; i--) {
        if (sz[i] != 1 && st[i] != expect) contiguous = 0;
        expect *= sz[i]; /* no overflow: numel fits */
    }
    const uint8_t *src = base + (size_t)t->u.t.offset * es;
    if (contiguous) {
        *data = src;
        t->u.t.user = (void *)src;
        return 0;
    }
    /* non-overlapping check: dims of size > 1 sorted by stride, each stride past the previous extent */
    int ord[PK_MAX_DIMS], k = 0;
    for (int i = 0; i < nd; i++)
        if (sz[i] > 1) {
            int j = k++;
            while (j > 0 && st[ord[j - 1]] > st[i]) { ord[j] = ord[j - 1]; j--; }
            ord[j] = i;
        }
    for (int j = 0; j < k; j++) {
        int64_t prev_extent = j ? st[ord[j - 1]] * sz[ord[j - 1]] : 1;
        if (st[ord[j]] < prev_extent)
            return fail(c, AV_EFORMAT, "tensor '%s': view (sizes %s, strides %s) overlaps itself", tname, ss, sst);
    }
    size_t nb = (size_t)numel * es;
    size_t lim = c->size * 2 + (64u << 20);
    if (nb > lim - c->materialised || c->materialised > lim)
        return fail(c, AV_EFORMAT, "tensor '%s': strided views to materialise exceed %zu bytes", tname, lim);
    c->materialised += nb;
    uint8_t *dst;
    if ((rc = anon(c, nb, &dst))) return rc;
    copy_strided(dst, src, es, nd, sz, st, (int64_t)numel);
    *data = dst;
    t->u.t.user = dst;
    return 0;
}

static int is_state_dict(const pk_value *d) {
    if (!d || d->type != PK_DICT) return 0;
    size_t nt = 0;
    for (size_t i = 0; i + 1 < d->u.seq.n; i += 2) {
        const pk_value *x = d->u.seq.items[i + 1];
        if (x->type == PK_TENSOR) nt++;
        else if (x->type == PK_DICT) return 0;
    }
    return nt > 0;
}

static void key_list(const pk_value *d, char *buf, size_t cap) {
    size_t k = 0;
    buf[0] = 0;
    for (size_t i = 0; i + 1 < d->u.seq.n && k + 8 < cap; i += 2) {
        const pk_value *x = d->u.seq.items[i];
        if (x->type != PK_STR) continue;
        char cn[64];
        clean(cn, sizeof cn, x->u.s.p, x->u.s.n);
        k += (size_t)snprintf(buf + k, cap - k, "%s'%s'", k ? ", " : "", cn);
        if (i > 40) { snprintf(buf + k, cap - k, ", ..."); break; }
    }
}

/* Find the state dict in root per o->key (see torchpt.h). */
static int select_state_dict(ctx *c, pk_value *root, const char *key, pk_value **out) {
    char keys[300];
    if (!root || root->type != PK_DICT)
        return fail(c, AV_EFORMAT, "the pickled object is not a dict (a state dict or a checkpoint dict expected)");
    if (key && *key) {
        pk_value *d = root;
        const char *rest = key;
        char ck[120];
        clean(ck, sizeof ck, key, strlen(key));
        while (*rest) {
            /* the longest dotted prefix of rest that is a key of d */
            size_t n = strlen(rest);
            pk_value *x = NULL;
            for (;;) {
                char part[512];
                if (n < sizeof part) {
                    memcpy(part, rest, n);
                    part[n] = 0;
                    if ((x = pk_dict_get(d, part))) break;
                }
                while (n > 0 && rest[n - 1] != '.') n--;
                if (n <= 1) break;
                n--;
            }
            if (!x) {
                key_list(d, keys, sizeof keys);
                return fail(c, AV_ENOTFOUND, "key '%s' not found (keys here: %s)", ck, keys);
            }
            rest += n;
            if (*rest == '.') rest++;
            d = x;
            if (*rest && d->type != PK_DICT) return fail(c, AV_ENOTFOUND, "key '%s': '%.*s' is not a dict", ck, (int)n, rest - n);
        }
        if (!is_state_dict(d) && !(d->type == PK_DICT && d->u.seq.n == 0))
            return fail(c, AV_EFORMAT, "key '%s' is not a state dict (a dict of tensors)", ck);
        *out = d;
        return 0;
    }
    if (is_state_dict(root) || root->u.seq.n == 0) { *out = root; return 0; }
    static const char *const CANDIDATES[] = {"state_dict", "model", "module", "model_state_dict"};
    for (size_t i = 0; i < 4; i++) {
        pk_value *x = pk_dict_get(root, CANDIDATES[i]);
        if (is_state_dict(x)) { *out = x; return 0; }
    }
    key_list(root, keys, sizeof keys);
    return fail(c, AV_EFORMAT, "no state dict found: top-level keys are %s (choose one with --key)", keys);
}

static int name_cmp(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int build_tensors(ctx *c, pk_value *root, const pt_read_opts *o) {
    pk_value *sd = NULL;
    int rc = select_state_dict(c, root, o ? o->key : NULL, &sd);
    if (rc) return rc;
    size_t first = c->m->n_tensors;
    for (size_t i = 0; i + 1 < sd->u.seq.n; i += 2) {
        pk_value *k = sd->u.seq.items[i], *t = sd->u.seq.items[i + 1];
        if (t->type != PK_TENSOR) continue;
        if (k->type != PK_STR) return fail(c, AV_EFORMAT, "state dict key %zu is a non-string", i / 2);
        char name[1024], cn[200];
        if (k->u.s.n >= sizeof name || memchr(k->u.s.p, 0, k->u.s.n) || !k->u.s.n)
            return fail(c, AV_EFORMAT, "state dict key '%s' is not a valid tensor name", clean(cn, sizeof cn, k->u.s.p, k->u.s.n));
        memcpy(name, k->u.s.p, k->u.s.n);
        name[k->u.s.n] = 0;
        clean(cn, sizeof cn, name, k->u.s.n);
        const uint8_t *data = NULL;
        if ((rc = tensor_data(c, t, cn, &data))) return rc;
        av_tensor *at = av_model_add_tensor(c->m, name, (av_dtype)t->dtype, t->u.t.n_dims, t->u.t.size, data, NULL);
        if (!at) return fail(c, AV_ENOMEM, "out of memory");
        if (data >= c->buf && data < c->buf + c->size) at->file_offset = (uint64_t)(data - c->buf);
    }
    size_t n = c->m->n_tensors - first;
    if (n > 1) {
        const char **v = malloc(n * sizeof *v);
        if (!v) return fail(c, AV_ENOMEM, "out of memory");
        for (size_t i = 0; i < n; i++) v[i] = c->m->tensors[first + i].name;
        qsort(v, n, sizeof *v, name_cmp);
        for (size_t i = 1; i < n && !rc; i++)
            if (!strcmp(v[i - 1], v[i])) {
                char cn[200];
                rc = fail(c, AV_EFORMAT, "tensor '%s' appears twice in the state dict", clean(cn, sizeof cn, v[i], strlen(v[i])));
            }
        free(v);
    }
    return rc;
}

/* ---------------- formats ---------------- */

static int parse_zip(ctx *c, const pt_read_opts *o) {
    int rc = read_zip(c);
    if (rc) return rc;
    const entry *bo = find_entry(c, "byteorder");
    if (bo) {
        if (bo->size == 6 && !memcmp(bo->data, "little", 6)) c->big_endian = 0;
        else if (bo->size == 3 && !memcmp(bo->data, "big", 3)) c->big_endian = 1;
        else return fail(c, AV_EFORMAT, "byteorder record is neither 'little' nor 'big'");
    }
    const entry *ve = find_entry(c, "version");
    if (!ve) ve = find_entry(c, ".data/version");
    if (ve) {
        long ver = 0;
        size_t i = 0;
        for (; i < ve->size && i < 8 && ve->data[i] >= '0' && ve->data[i] <= '9'; i++) ver = ver * 10 + (ve->data[i] - '0');
        int tail_ok = i == ve->size || (i + 1 == ve->size && ve->data[i] == '\n');
        if (!i || !tail_ok || ver < 1 || ver > 100)
            return fail(c, AV_EFORMAT, "version record is not a supported format version");
    }
    const entry *pk = find_entry(c, "data.pkl");
    if (!pk) return fail(c, AV_EFORMAT, "no data.pkl in the archive");
    char pname[600];
    snprintf(pname, sizeof pname, "%s: data.pkl", c->name);
    pk_result *r = NULL;
    if ((rc = pk_load(pk->data, pk->size, pname, &r, NULL, c->err))) return rc;
    rc = build_tensors(c, pk_root(r), o);
    pk_result_free(r);
    return rc;
}

/* 0x1950a86a20f9469cfc6c as LONG1 bytes */
static const uint8_t LEGACY_MAGIC[10] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};

static int parse_legacy(ctx *c, const pt_read_opts *o) {
    size_t pos = 0, used;
    pk_result *hdr = NULL, *obj = NULL, *keys = NULL;
    char pname[600];
    int rc;
    av_strmap by_key;
    av_strmap_init(&by_key);
    c->legacy = 1;
    const char *what[3] = {"magic number", "protocol version", "sys info"};
    for (int i = 0; i < 3; i++) {
        snprintf(pname, sizeof pname, "%s: legacy %s pickle", c->name, what[i]);
        if ((rc = pk_load(c->buf + pos, c->size - pos, pname, &hdr, &used, c->err))) goto done;
        pk_value *v = pk_root(hdr);
        if (i == 0 && !(v->type == PK_INT && v->u.i.big && v->u.i.raw_len == 10 && !memcmp(v->u.i.raw, LEGACY_MAGIC, 10))) {
            rc = fail(c, AV_EFORMAT, "not a PyTorch file (legacy magic number missing)");
            goto done;
        }
        if (i == 1 && !(v->type == PK_INT && !v->u.i.big && v->u.i.v == 1001)) {
            rc = fail(c, AV_EUNSUPPORTED, "legacy protocol version is not 1001");
            goto done;
        }
        if (i == 2) {
            pk_value *le = pk_dict_get(v, "little_endian");
            if (!le || le->type != PK_BOOL || !le->u.b) {
                rc = fail(c, AV_EUNSUPPORTED, "legacy file is not little-endian");
                goto done;
            }
        }
        pk_result_free(hdr);
        hdr = NULL;
        pos += used;
    }
    snprintf(pname, sizeof pname, "%s: legacy object pickle at offset %zu", c->name, pos);
    if ((rc = pk_load(c->buf + pos, c->size - pos, pname, &obj, &used, c->err))) goto done;
    pos += used;
    snprintf(pname, sizeof pname, "%s: legacy storage key list at offset %zu", c->name, pos);
    if ((rc = pk_load(c->buf + pos, c->size - pos, pname, &keys, &used, c->err))) goto done;
    pos += used;
    pk_value *kl = pk_root(keys);
    for (size_t j = pk_n_storages(obj); j-- > 0;) { /* first storage per key wins */
        const char *sk = pk_storage_at(obj, j)->u.st.key;
        if (av_strmap_put(&by_key, sk, strlen(sk), (int32_t)j)) { rc = fail(c, AV_ENOMEM, "out of memory"); goto done; }
    }
    if (kl->type != PK_LIST) { rc = fail(c, AV_EFORMAT, "legacy storage key list is not a list"); goto done; }
    for (size_t i = 0; i < kl->u.seq.n; i++) {
        pk_value *k = kl->u.seq.items[i];
        char ck[120];
        if (k->type != PK_STR || memchr(k->u.s.p, 0, k->u.s.n)) { rc = fail(c, AV_EFORMAT, "legacy storage key %zu is not a string", i); goto done; }
        clean(ck, sizeof ck, k->u.s.p, k->u.s.n);
        /* the element type comes from a storage referencing this key */
        int32_t si = av_strmap_get(&by_key, k->u.s.p, k->u.s.n);
        pk_value *s = si >= 0 ? pk_storage_at(obj, (size_t)si) : NULL;
        if (!s) { rc = fail(c, AV_EFORMAT, "legacy storage '%s' is not referenced by the object", ck); goto done; }
        if (find_store(c, s->u.st.key)) { rc = fail(c, AV_EFORMAT, "legacy storage '%s' listed twice", ck); goto done; }
        int sdt = s->u.st.untyped ? AV_U8 : s->dtype;
        size_t es = esize_of(sdt);
        if (!es) { rc = fail(c, AV_EUNSUPPORTED, "legacy storage '%s' has an unsupported dtype", ck); goto done; }
        if (c->size - pos < 8) { rc = fail(c, AV_EFORMAT, "legacy storage '%s' at offset %zu: truncated size", ck, pos); goto done; }
        uint64_t n = 0, nb;
        for (int b = 7; b >= 0; b--) n = n << 8 | c->buf[pos + (size_t)b];
        pos += 8;
        if (__builtin_mul_overflow(n, (uint64_t)es, &nb) || nb > c->size - pos) {
            rc = fail(c, AV_EFORMAT, "legacy storage '%s' at offset %zu: %llu elements run past the end of the file",
                      ck, pos - 8, (unsigned long long)n);
            goto done;
        }
        if ((rc = add_store(c, s->u.st.key, sdt, c->buf + pos, (size_t)nb))) goto done;
        pos += (size_t)nb;
    }
    rc = build_tensors(c, pk_root(obj), o);
done:
    pk_result_free(hdr);
    pk_result_free(obj);
    pk_result_free(keys);
    av_strmap_release(&by_key);
    return rc;
}

static int parse_image(av_model *m, const uint8_t *buf, size_t size, const char *name, const pt_read_opts *o,
                       av_err *err) {
    ctx c = {.name = name, .buf = buf, .size = size, .m = m, .err = err};
    av_strmap_init(&c.ent_map);
    av_strmap_init(&c.store_map);
    int rc;
    if (size >= 4 && buf[0] == 'P' && buf[1] == 'K') rc = parse_zip(&c, o);
    else if (size >= 2 && buf[0] == 0x80 && buf[1] >= 2) rc = parse_legacy(&c, o);
    else rc = fail(&c, AV_EFORMAT, "not a PyTorch checkpoint (neither a zip archive nor a legacy pickle stream)");
    for (size_t i = 0; i < c.n_ents; i++) free(c.ents[i].rel);
    free(c.ents);
    free(c.stores);
    av_strmap_release(&c.ent_map);
    av_strmap_release(&c.store_map);
    return rc;
}

int pt_read_mem(const void *buf, size_t size, const char *name, const pt_read_opts *o, av_model **out, av_err *err) {
    *out = NULL;
    av_model *m = av_model_new();
    if (!m) return av_errf(err, AV_ENOMEM, "%s: out of memory", name);
    m->format = AV_FMT_TORCH;
    int rc = parse_image(m, buf, size, name, o, err);
    if (rc) av_model_free(m);
    else *out = m;
    return rc;
}

static int read_file(av_model *m, const char *path, const pt_read_opts *o, av_err *err) {
    av_map *map = NULL;
    int rc = av_map_open(path, &map, err);
    if (rc) return rc;
    if (av_model_hold_map(m, map)) rc = av_errf(err, AV_ENOMEM, "%s: out of memory", path);
    else rc = parse_image(m, map->data, map->size, path, o, err);
    av_map_free(map);
    return rc;
}

/* pytorch_model.bin.index.json: shards in order of first appearance in
 * weight_map, each shard's tensors in its state-dict order; every
 * weight_map name must be in its shard, no name in two shards. */
static int read_index(av_model *m, const char *path, const pt_read_opts *o, av_err *err) {
    char *text = NULL, *dir = NULL, *shard = NULL;
    const char **shards = NULL;
    json_t *root = NULL;
    size_t len, nshards = 0;
    int rc = av_read_file(path, PT_MAX_INDEX, &text, &len, err);
    if (rc) return rc;
    json_error_t je;
    root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    const json_t *wm = root && json_is_object(root) ? json_object_get(root, "weight_map") : NULL;
    if (!root) { rc = av_errf(err, AV_EFORMAT, "%s: invalid JSON at byte %d: %s", path, je.position, je.text); goto done; }
    if (!json_is_object(wm)) { rc = av_errf(err, AV_EFORMAT, "%s: no \"weight_map\" object", path); goto done; }
    if (!(shards = malloc((json_object_size(wm) + 1) * sizeof *shards))) { rc = av_errf(err, AV_ENOMEM, "%s: out of memory", path); goto done; }
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)wm, k, v) {
        const char *s = json_string_value(v);
        if (!s || !*s || strlen(s) != json_string_length(v) || strchr(s, '/') || !strcmp(s, "..")) {
            rc = av_errf(err, AV_EFORMAT, "%s: weight_map['%s'] is not a file name in the index's folder", path, k);
            goto done;
        }
        size_t j = 0;
        while (j < nshards && strcmp(shards[j], s)) j++;
        if (j == nshards) shards[nshards++] = s;
    }
    const char *slash = strrchr(path, '/');
    if (!(dir = strndup(slash ? path : ".", slash ? (size_t)(slash - path) : 1))) { rc = av_errf(err, AV_ENOMEM, "%s: out of memory", path); goto done; }
    for (size_t s = 0; s < nshards; s++) {
        free(shard);
        if (!(shard = malloc(strlen(dir) + strlen(shards[s]) + 2))) { rc = av_errf(err, AV_ENOMEM, "%s: out of memory", path); goto done; }
        sprintf(shard, "%s/%s", dir, shards[s]);
        size_t from = m->n_tensors;
        if ((rc = read_file(m, shard, o, err))) { av_err_prefix(err, path); goto done; }
        json_object_foreach((json_t *)wm, k, v) {
            if (strcmp(json_string_value(v), shards[s])) continue;
            int found = 0;
            for (size_t i = from; i < m->n_tensors && !found; i++) found = !strcmp(m->tensors[i].name, k);
            if (!found) {
                rc = av_errf(err, AV_EFORMAT, "%s: tensor '%s' is mapped to %s but that shard does not contain it", path, k, shard);
                goto done;
            }
        }
    }
    rc = av_model_check_unique_names(m, path, err);
done:
    free(shards);
    free(shard);
    free(dir);
    json_decref(root);
    free(text);
    return rc;
}

int pt_read(const char *path, const pt_read_opts *o, av_model **out, av_err *err) {
    *out = NULL;
    av_model *m = av_model_new();
    if (!m) return av_errf(err, AV_ENOMEM, "%s: out of memory", path);
    m->format = AV_FMT_TORCH;
    int rc = av_has_ext(path, ".index.json") ? read_index(m, path, o, err) : read_file(m, path, o, err);
    if (rc) av_model_free(m);
    else *out = m;
    return rc;
}
