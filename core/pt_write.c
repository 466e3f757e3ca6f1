/* pt_write.c — write an av_model as a torch.save zip (see torchpt.h).
 *
 * Layout copied from what torch 1.13's PyTorchStreamWriter (miniz) emits for
 * torch.save(state_dict, "NAME.pt"):
 *   NAME/data.pkl, NAME/byteorder, NAME/data/0 .. NAME/data/K-1, NAME/version
 * every entry STORED, general-purpose flags 0x0808 (data descriptor + UTF-8),
 * version/time/date 0, local header CRC and sizes 0 followed by a data
 * descriptor (PK\7\8 crc, sizes), the data aligned to 64 bytes by an extra
 * field "FB" + u16 length + 'Z' padding, a central directory with the real CRC
 * and sizes, and always a zip64 end record + locator before the classic end
 * record. Entries of 4 GiB or more, or starting at 4 GiB or later, carry zip64
 * extra fields (local: as miniz does, CD: 0xFFFFFFFF in the 32-bit fields).
 * torch 1.13 does not write byteorder (newer versions do and 1.13 ignores
 * unknown records); it does not write .data/serialization_id.
 *
 * data.pkl is protocol 2, with the opcode shapes torch 1.13 produces:
 *   OrderedDict() { name: _rebuild_tensor_v2(persistent_load(('storage',
 *   torch.FloatStorage, '0', 'cpu', numel)), 0, size, stride, False,
 *   OrderedDict()) , ... }
 * SETITEMS in batches of 1000 as Python's pickler does. Tensors with the same
 * data pointer, dtypes and byte size share one storage key; if their shapes
 * are also equal the second name refers to the same tensor (memo BINGET), as
 * a tied HF state dict does.
 *
 * Tensor bytes stream from the source (mmap) through av_convert in 4 MiB
 * chunks; the CRC-32 is computed over the bytes as they are written, which is
 * why the CRC sits in the data descriptor. */
#include <stdlib.h>
#include <string.h>

#include "torchpt.h"

/* ---- CRC-32 (IEEE, reflected 0xEDB88320), slicing by 8 ---- */
static uint32_t crc_tab[8][256];

static void crc_init(void) {
    if (crc_tab[0][1]) return;
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_tab[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++) crc_tab[t][i] = (crc_tab[t - 1][i] >> 8) ^ crc_tab[0][crc_tab[t - 1][i] & 0xff];
}

static uint32_t crc_update(uint32_t crc, const void *p, size_t n) {
    const uint8_t *s = p;
    uint32_t c = ~crc;
    while (n && ((uintptr_t)s & 7)) { c = crc_tab[0][(c ^ *s++) & 0xff] ^ (c >> 8); n--; }
    while (n >= 8) {
        uint32_t a, b;
        memcpy(&a, s, 4);
        memcpy(&b, s + 4, 4);
        a ^= c;
        c = crc_tab[7][a & 0xff] ^ crc_tab[6][(a >> 8) & 0xff] ^ crc_tab[5][(a >> 16) & 0xff] ^ crc_tab[4][a >> 24] ^
            crc_tab[3][b & 0xff] ^ crc_tab[2][(b >> 8) & 0xff] ^ crc_tab[1][(b >> 16) & 0xff] ^ crc_tab[0][b >> 24];
        s += 8;
        n -= 8;
    }
    while (n--) c = crc_tab[0][(c ^ *s++) & 0xff] ^ (c >> 8);
    return ~c;
}

/* ---- growable byte buffer (the pickle, small records, central directory) ---- */
typedef struct buf { uint8_t *p; size_t n, cap; int oom; } buf;

static void b_put(buf *b, const void *s, size_t n) {
    if (b->oom) return;
    if (b->n + n > b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 4096;
        while (nc < b->n + n) nc *= 2;
        uint8_t *np = realloc(b->p, nc);
        if (!np) { b->oom = 1; return; }
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}
static void b_u8(buf *b, uint8_t v) { b_put(b, &v, 1); }
static void b_u16(buf *b, uint16_t v) { uint8_t x[2] = { (uint8_t)v, (uint8_t)(v >> 8) }; b_put(b, x, 2); }
static void b_u32(buf *b, uint32_t v) { b_u16(b, (uint16_t)v); b_u16(b, (uint16_t)(v >> 16)); }
static void b_u64(buf *b, uint64_t v) { b_u32(b, (uint32_t)v); b_u32(b, (uint32_t)(v >> 32)); }

/* ---- pickle (protocol 2) ---- */
typedef struct pk { buf b; uint32_t memo; } pk;

static uint32_t pk_put(pk *p) { /* memoize the top of the stack, as Python does */
    uint32_t id = p->memo++;
    if (id < 256) { b_u8(&p->b, 'q'); b_u8(&p->b, (uint8_t)id); }
    else { b_u8(&p->b, 'r'); b_u32(&p->b, id); }
    return id;
}
static void pk_get(pk *p, uint32_t id) {
    if (id < 256) { b_u8(&p->b, 'h'); b_u8(&p->b, (uint8_t)id); }
    else { b_u8(&p->b, 'j'); b_u32(&p->b, id); }
}
static uint32_t pk_str(pk *p, const char *s) {
    size_t n = strlen(s);
    b_u8(&p->b, 'X');
    b_u32(&p->b, (uint32_t)n);
    b_put(&p->b, s, n);
    return pk_put(p);
}
static uint32_t pk_global(pk *p, const char *mod, const char *name) {
    b_u8(&p->b, 'c');
    b_put(&p->b, mod, strlen(mod));
    b_u8(&p->b, '\n');
    b_put(&p->b, name, strlen(name));
    b_u8(&p->b, '\n');
    return pk_put(p);
}
static void pk_int(pk *p, int64_t v) { /* pickle.py save_long, protocol 2 */
    if (v >= 0 && v <= 0xff) { b_u8(&p->b, 'K'); b_u8(&p->b, (uint8_t)v); }
    else if (v >= 0 && v <= 0xffff) { b_u8(&p->b, 'M'); b_u16(&p->b, (uint16_t)v); }
    else if (v >= INT32_MIN && v <= INT32_MAX) { b_u8(&p->b, 'J'); b_u32(&p->b, (uint32_t)(int32_t)v); }
    else { /* LONG1: minimal two's complement, little-endian (v >= 2^31 here) */
        uint8_t x[9];
        int n = 0;
        uint64_t u = (uint64_t)v;
        int bits = 64 - __builtin_clzll(u);
        n = (bits >> 3) + 1;
        for (int i = 0; i < n; i++) x[i] = i < 8 ? (uint8_t)(u >> (8 * i)) : 0;
        b_u8(&p->b, 0x8a);
        b_u8(&p->b, (uint8_t)n);
        b_put(&p->b, x, (size_t)n);
    }
}
/* tuple of ints: EMPTY_TUPLE, TUPLE1..3, or MARK .. TUPLE; memoized unless empty */
static void pk_int_tuple(pk *p, const int64_t *v, int n) {
    if (n == 0) { b_u8(&p->b, ')'); return; }
    if (n > 3) b_u8(&p->b, '(');
    for (int i = 0; i < n; i++) pk_int(p, v[i]);
    b_u8(&p->b, n == 1 ? 0x85 : n == 2 ? 0x86 : n == 3 ? 0x87 : 't');
    pk_put(p);
}

static const char *storage_type(av_dtype t) {
    switch (t) {
    case AV_F32: return "FloatStorage";
    case AV_F16: return "HalfStorage";
    case AV_BF16: return "BFloat16Storage";
    case AV_F64: return "DoubleStorage";
    case AV_I64: return "LongStorage";
    case AV_I32: return "IntStorage";
    case AV_I16: return "ShortStorage";
    case AV_I8: return "CharStorage";
    case AV_U8: return "ByteStorage";
    case AV_BOOL: return "BoolStorage";
    default: return NULL;
    }
}

/* ---- zip records ---- */
#define ALIGN 64
#define U32MAX 0xFFFFFFFFull

typedef struct entry { char *name; uint64_t off, size; uint32_t crc; } entry;

typedef struct zw {
    av_out *o;
    entry *e;
    size_t n, cap;
    const char *path;
    av_err *err;
} zw;

/* Local header for an entry of `size` bytes starting now; data follows 64-aligned. */
static int zw_begin(zw *z, const char *name, uint64_t size) {
    if (z->n == z->cap) {
        size_t nc = z->cap ? z->cap * 2 : 64;
        entry *ne = realloc(z->e, nc * sizeof *ne);
        if (!ne) return av_errf(z->err, AV_ENOMEM, "%s: out of memory", z->path);
        z->e = ne;
        z->cap = nc;
    }
    entry *e = &z->e[z->n];
    if (!(e->name = strdup(name))) return av_errf(z->err, AV_ENOMEM, "%s: out of memory", z->path);
    z->n++;
    e->off = z->o->pos;
    e->size = size;
    e->crc = 0;
    size_t nl = strlen(name);
    int big = size >= U32MAX, far = e->off >= U32MAX;
    buf h = { 0 };
    /* torch's getPadding: where the data would start with an empty FB field */
    uint64_t start = e->off + 30 + nl + 4;
    if (big || far) start += 4 + (big ? 16 : 0) + (far ? 8 : 0);
    uint16_t pad = (uint16_t)((ALIGN - start % ALIGN) % ALIGN);
    uint16_t xl = (uint16_t)(4 + pad + ((big || far) ? 4 + (big ? 16 : 0) + (far ? 8 : 0) : 0));
    b_u32(&h, 0x04034b50);
    b_u16(&h, 0);      /* version needed (as miniz in torch) */
    b_u16(&h, 0x0808); /* data descriptor follows; UTF-8 name */
    b_u16(&h, 0);      /* stored */
    b_u16(&h, 0); b_u16(&h, 0); /* time, date */
    b_u32(&h, 0); b_u32(&h, 0); b_u32(&h, 0); /* crc, sizes: in the descriptor */
    b_u16(&h, (uint16_t)nl);
    b_u16(&h, xl);
    b_put(&h, name, nl);
    if (big || far) {
        b_u16(&h, 1);
        b_u16(&h, (uint16_t)((big ? 16 : 0) + (far ? 8 : 0)));
        if (big) { b_u64(&h, size); b_u64(&h, size); }
        if (far) b_u64(&h, e->off);
    }
    b_put(&h, "FB", 2);
    b_u16(&h, pad);
    for (uint16_t i = 0; i < pad; i++) b_u8(&h, 'Z');
    int rc = h.oom ? av_errf(z->err, AV_ENOMEM, "%s: out of memory", z->path) : av_out_write(z->o, h.p, h.n, z->err);
    free(h.p);
    return rc;
}

/* Data descriptor after the entry's bytes (crc computed while writing them). */
static int zw_end(zw *z, uint32_t crc) {
    entry *e = &z->e[z->n - 1];
    e->crc = crc;
    buf d = { 0 };
    b_u32(&d, 0x08074b50);
    b_u32(&d, crc);
    if (e->size >= U32MAX || e->off >= U32MAX) { b_u64(&d, e->size); b_u64(&d, e->size); }
    else { b_u32(&d, (uint32_t)e->size); b_u32(&d, (uint32_t)e->size); }
    int rc = d.oom ? av_errf(z->err, AV_ENOMEM, "%s: out of memory", z->path) : av_out_write(z->o, d.p, d.n, z->err);
    free(d.p);
    return rc;
}

static int zw_small(zw *z, const char *name, const void *p, size_t n) {
    int rc = zw_begin(z, name, n);
    if (!rc) rc = av_out_write(z->o, p, n, z->err);
    if (!rc) rc = zw_end(z, crc_update(0, p, n));
    return rc;
}

static int zw_finish(zw *z) {
    buf c = { 0 };
    uint64_t cd_off = z->o->pos;
    for (size_t i = 0; i < z->n; i++) {
        const entry *e = &z->e[i];
        int big = e->size >= U32MAX, far = e->off >= U32MAX;
        size_t nl = strlen(e->name);
        b_u32(&c, 0x02014b50);
        b_u16(&c, 0); b_u16(&c, 0); /* made by, needed */
        b_u16(&c, 0x0808);
        b_u16(&c, 0);
        b_u16(&c, 0); b_u16(&c, 0);
        b_u32(&c, e->crc);
        b_u32(&c, big ? (uint32_t)U32MAX : (uint32_t)e->size);
        b_u32(&c, big ? (uint32_t)U32MAX : (uint32_t)e->size);
        b_u16(&c, (uint16_t)nl);
        b_u16(&c, (uint16_t)((big || far) ? 4 + (big ? 16 : 0) + (far ? 8 : 0) : 0));
        b_u16(&c, 0); b_u16(&c, 0); b_u16(&c, 0); /* comment, disk, internal attrs */
        b_u32(&c, 0);                             /* external attrs */
        b_u32(&c, far ? (uint32_t)U32MAX : (uint32_t)e->off);
        b_put(&c, e->name, nl);
        if (big || far) {
            b_u16(&c, 1);
            b_u16(&c, (uint16_t)((big ? 16 : 0) + (far ? 8 : 0)));
            if (big) { b_u64(&c, e->size); b_u64(&c, e->size); }
            if (far) b_u64(&c, e->off);
        }
    }
    uint64_t cd_size = c.n, z64_off = cd_off + cd_size;
    /* zip64 end of central directory record + locator (torch always writes them) */
    b_u32(&c, 0x06064b50);
    b_u64(&c, 44);
    b_u16(&c, 0x031e); b_u16(&c, 0x002d);
    b_u32(&c, 0); b_u32(&c, 0);
    b_u64(&c, z->n); b_u64(&c, z->n);
    b_u64(&c, cd_size); b_u64(&c, cd_off);
    b_u32(&c, 0x07064b50);
    b_u32(&c, 0);
    b_u64(&c, z64_off);
    b_u32(&c, 1);
    /* classic end record */
    b_u32(&c, 0x06054b50);
    b_u16(&c, 0); b_u16(&c, 0);
    b_u16(&c, z->n >= 0xFFFF ? 0xFFFF : (uint16_t)z->n);
    b_u16(&c, z->n >= 0xFFFF ? 0xFFFF : (uint16_t)z->n);
    b_u32(&c, cd_size >= U32MAX ? (uint32_t)U32MAX : (uint32_t)cd_size);
    b_u32(&c, cd_off >= U32MAX ? (uint32_t)U32MAX : (uint32_t)cd_off);
    b_u16(&c, 0);
    int rc = c.oom ? av_errf(z->err, AV_ENOMEM, "%s: out of memory", z->path) : av_out_write(z->o, c.p, c.n, z->err);
    free(c.p);
    return rc;
}

#define CHUNK (1u << 22)

/* Stream t's bytes (converted to t->dtype) into the open entry; returns the CRC in *crc. */
static int write_tensor(zw *z, const av_tensor *t, uint8_t *tmp, uint32_t *crc, uint64_t *done, uint64_t total,
                        av_progress_fn progress, void *ud) {
    int ok;
    size_t nb = av_tensor_nbytes(t, &ok);
    uint32_t c = 0;
    if (t->src_dtype == t->dtype) {
        const uint8_t *p = t->data;
        for (size_t off = 0; off < nb;) {
            size_t k = nb - off < CHUNK ? nb - off : CHUNK;
            c = crc_update(c, p + off, k);
            int rc = av_out_write(z->o, p + off, k, z->err);
            if (rc) return rc;
            off += k;
            *done += k;
            if (progress) progress(ud, *done, total);
        }
    } else {
        if (!av_can_convert(t->src_dtype, t->dtype))
            return av_errf(z->err, AV_EUNSUPPORTED, "%s: tensor '%s': cannot convert %s to %s", z->path, t->name,
                           av_dtype_name(t->src_dtype), av_dtype_name(t->dtype));
        const av_dtype_traits *st = av_dtype_traits_of(t->src_dtype), *dt = av_dtype_traits_of(t->dtype);
        int64_t n = av_tensor_nelements(t), per = (int64_t)(CHUNK / dt->type_size);
        per -= per % st->block_size;
        for (int64_t i0 = 0; i0 < n; i0 += per) {
            int64_t k = n - i0 < per ? n - i0 : per;
            const uint8_t *src = (const uint8_t *)t->data + (size_t)(i0 / st->block_size) * st->type_size;
            int rc = av_convert(src, t->src_dtype, tmp, t->dtype, k, z->err);
            if (rc) { av_err_prefix(z->err, t->name); return rc; }
            size_t kb = (size_t)k * dt->type_size;
            c = crc_update(c, tmp, kb);
            if ((rc = av_out_write(z->o, tmp, kb, z->err))) return rc;
            *done += kb;
            if (progress) progress(ud, *done, total);
        }
    }
    *crc = c;
    return 0;
}

int pt_write(const av_model *m, const char *path, av_progress_fn progress, void *ud, av_err *err) {
    crc_init();
    size_t n = m->n_tensors;
    uint64_t total = 0;
    /* storage index per tensor (shared when tied), tensor it refers to when identical */
    size_t *sto = calloc(n ? n : 1, sizeof *sto), *same = calloc(n ? n : 1, sizeof *same);
    uint32_t *memo = calloc(n ? n : 1, sizeof *memo);
    size_t n_sto = 0;
    pk p = { 0 };
    zw z = { .path = path, .err = err };
    uint8_t *tmp = NULL;
    char *arch = NULL, *name = NULL;
    int rc = 0;
    if (!sto || !same || !memo) { rc = av_errf(err, AV_ENOMEM, "%s: out of memory", path); goto fail; }
    for (size_t i = 0; i < n; i++) {
        const av_tensor *t = &m->tensors[i];
        int ok;
        size_t nb = av_tensor_nbytes(t, &ok);
        const av_dtype_traits *tr = av_dtype_traits_of(t->dtype);
        if (!storage_type(t->dtype) || !ok || !tr || tr->is_quantized) {
            rc = av_errf(err, AV_EINVAL, "%s: tensor '%s' is %s, which PyTorch cannot hold (dequantize it first)", path,
                         t->name, av_dtype_name(t->dtype));
            goto fail;
        }
        if (!storage_type(t->src_dtype) && t->src_dtype != t->dtype) {
            rc = av_errf(err, AV_EINVAL, "%s: tensor '%s' is %s; converting it to %s is not supported", path, t->name,
                         av_dtype_name(t->src_dtype), av_dtype_name(t->dtype));
            goto fail;
        }
        total += nb;
        sto[i] = n_sto;
        same[i] = i;
        for (size_t j = 0; j < i && t->data && nb; j++) {
            const av_tensor *u = &m->tensors[j];
            int ok2;
            if (u->data == t->data && u->dtype == t->dtype && u->src_dtype == t->src_dtype &&
                av_tensor_nbytes(u, &ok2) == nb) {
                sto[i] = sto[j];
                if (u->n_dims == t->n_dims && !memcmp(u->shape, t->shape, (size_t)t->n_dims * sizeof *t->shape))
                    same[i] = same[j];
                break;
            }
        }
        if (sto[i] == n_sto) n_sto++;
    }

    /* archive folder: the file stem, as torch.save names it */
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    size_t al = dot && dot != base ? (size_t)(dot - base) : strlen(base);
    if (!(arch = malloc(al + 32 + 1)) || !(name = malloc(al + 64))) { rc = av_errf(err, AV_ENOMEM, "%s: out of memory", path); goto fail; }
    if (al == 0) { strcpy(arch, "archive"); al = 7; }
    else { memcpy(arch, base, al); arch[al] = 0; }

    /* data.pkl */
    b_put(&p.b, "\x80\x02", 2);
    uint32_t g_od = pk_global(&p, "collections", "OrderedDict");
    b_u8(&p.b, ')');
    b_u8(&p.b, 'R');
    pk_put(&p);
    uint32_t g_rebuild = UINT32_MAX, s_storage = UINT32_MAX, s_cpu = UINT32_MAX, g_sto[AV_DTYPE_MAX];
    for (int k = 0; k < AV_DTYPE_MAX; k++) g_sto[k] = UINT32_MAX;
    for (size_t i = 0; i < n; i++) {
        const av_tensor *t = &m->tensors[i];
        if (i % 1000 == 0 && n - i > 1) b_u8(&p.b, '(');
        pk_str(&p, t->name);
        if (same[i] != i) {
            pk_get(&p, memo[same[i]]);
        } else {
            if (g_rebuild == UINT32_MAX) g_rebuild = pk_global(&p, "torch._utils", "_rebuild_tensor_v2");
            else pk_get(&p, g_rebuild);
            b_u8(&p.b, '(');
            b_u8(&p.b, '(');
            if (s_storage == UINT32_MAX) s_storage = pk_str(&p, "storage");
            else pk_get(&p, s_storage);
            if (g_sto[t->dtype] == UINT32_MAX) g_sto[t->dtype] = pk_global(&p, "torch", storage_type(t->dtype));
            else pk_get(&p, g_sto[t->dtype]);
            char key[32];
            snprintf(key, sizeof key, "%zu", sto[i]);
            pk_str(&p, key);
            if (s_cpu == UINT32_MAX) s_cpu = pk_str(&p, "cpu");
            else pk_get(&p, s_cpu);
            int64_t numel = av_tensor_nelements(t), stride[AV_MAX_DIMS];
            pk_int(&p, numel);
            b_u8(&p.b, 't');
            pk_put(&p);
            b_u8(&p.b, 'Q'); /* BINPERSID */
            pk_int(&p, 0);   /* storage offset */
            int64_t s = 1;
            for (int d = t->n_dims - 1; d >= 0; d--) {
                stride[d] = s;
                s *= t->shape[d] > 1 ? t->shape[d] : 1;
            }
            pk_int_tuple(&p, t->shape, t->n_dims);
            pk_int_tuple(&p, stride, t->n_dims);
            b_u8(&p.b, 0x89); /* NEWFALSE: requires_grad */
            pk_get(&p, g_od);
            b_u8(&p.b, ')');
            b_u8(&p.b, 'R');
            pk_put(&p);
            b_u8(&p.b, 't');
            pk_put(&p);
            b_u8(&p.b, 'R');
            memo[i] = pk_put(&p);
        }
        size_t batch_end = (i / 1000 + 1) * 1000;
        if (i + 1 == n || i + 1 == batch_end) b_u8(&p.b, (n - (i / 1000) * 1000 > 1) ? 'u' : 's');
    }
    b_u8(&p.b, '.');
    if (p.b.oom) { rc = av_errf(err, AV_ENOMEM, "%s: out of memory", path); goto fail; }

    if (!(tmp = malloc(CHUNK + 64))) { rc = av_errf(err, AV_ENOMEM, "%s: out of memory", path); goto fail; }
    if ((rc = av_out_open(path, &z.o, err))) goto fail;
    snprintf(name, al + 64, "%s/data.pkl", arch);
    if ((rc = zw_small(&z, name, p.b.p, p.b.n))) goto fail;
    snprintf(name, al + 64, "%s/byteorder", arch);
    if ((rc = zw_small(&z, name, "little", 6))) goto fail;
    uint64_t done = 0;
    if (progress) progress(ud, 0, total);
    size_t written = 0;
    for (size_t i = 0; i < n; i++) {
        const av_tensor *t = &m->tensors[i];
        if (sto[i] < written) { /* tied: bytes already in its storage */
            int ok;
            done += av_tensor_nbytes(t, &ok);
            if (progress) progress(ud, done, total);
            continue;
        }
        int ok;
        snprintf(name, al + 64, "%s/data/%zu", arch, sto[i]);
        uint32_t crc = 0;
        if ((rc = zw_begin(&z, name, av_tensor_nbytes(t, &ok))) ||
            (rc = write_tensor(&z, t, tmp, &crc, &done, total, progress, ud)) || (rc = zw_end(&z, crc)))
            goto fail;
        written++;
    }
    snprintf(name, al + 64, "%s/version", arch);
    if ((rc = zw_small(&z, name, "3\n", 2)) || (rc = zw_finish(&z))) goto fail;
    rc = av_out_commit(z.o, err);
    z.o = NULL;
fail:
    av_out_abort(z.o);
    for (size_t i = 0; i < z.n; i++) free(z.e[i].name);
    free(z.e);
    free(p.b.p);
    free(sto);
    free(same);
    free(memo);
    free(tmp);
    free(arch);
    free(name);
    return rc;
}
