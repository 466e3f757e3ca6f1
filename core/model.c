#include "model.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf.h"
#include "llama2c.h"
#include "onnx.h"
#include "safetensors.h"
#include "torchpt.h"

av_model *av_model_new(void) {
    av_model *m = calloc(1, sizeof *m);
    if (m) av_kvs_init(&m->kv);
    return m;
}

void av_model_free(av_model *m) {
    if (!m) return;
    for (size_t i = 0; i < m->n_tensors; i++) {
        free(m->tensors[i].name);
        free(m->tensors[i].owned);
    }
    free(m->tensors);
    for (size_t i = 0; i < m->n_maps; i++) av_map_free(m->maps[i]);
    free(m->maps);
    av_kvs_release(&m->kv);
    free(m);
}

int av_model_hold_map(av_model *m, av_map *map) {
    av_map **nm = realloc(m->maps, (m->n_maps + 1) * sizeof *nm);
    if (!nm) return AV_ENOMEM;
    m->maps = nm;
    m->maps[m->n_maps++] = map;
    map->refs++;
    return 0;
}

av_tensor *av_model_add_tensor(av_model *m, const char *name, av_dtype dtype, int n_dims,
                               const int64_t *shape, const void *data, void *owned) {
    if (n_dims < 0 || n_dims > AV_MAX_DIMS) return NULL;
    if (m->n_tensors == m->cap_tensors) {
        size_t nc = m->cap_tensors ? m->cap_tensors * 2 : 64;
        av_tensor *nt = realloc(m->tensors, nc * sizeof *nt);
        if (!nt) return NULL;
        m->tensors = nt;
        m->cap_tensors = nc;
    }
    av_tensor *t = &m->tensors[m->n_tensors];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(name))) return NULL;
    t->dtype = t->src_dtype = dtype;
    t->n_dims = n_dims;
    for (int i = 0; i < n_dims; i++) t->shape[i] = shape[i];
    t->data = data;
    t->owned = owned;
    m->n_tensors++;
    return t;
}

av_tensor *av_model_find(const av_model *m, const char *name) {
    for (size_t i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0) return &m->tensors[i];
    return NULL;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int av_model_check_unique_names(const av_model *m, const char *path, av_err *err) {
    const char **v = malloc((m->n_tensors + 1) * sizeof *v);
    if (!v) return av_errf(err, AV_ENOMEM, "%s: out of memory", path);
    for (size_t i = 0; i < m->n_tensors; i++) v[i] = m->tensors[i].name;
    qsort(v, m->n_tensors, sizeof *v, cmp_str);
    int rc = 0;
    for (size_t i = 1; i < m->n_tensors && !rc; i++)
        if (strcmp(v[i - 1], v[i]) == 0)
            rc = av_errf(err, AV_EFORMAT, "%s: tensor '%s' appears in more than one shard", path, v[i]);
    free(v);
    return rc;
}

int64_t av_model_nparams(const av_model *m) {
    int64_t n = 0;
    for (size_t i = 0; i < m->n_tensors; i++) {
        int64_t k = av_tensor_nelements(&m->tensors[i]);
        if (k > 0) n += k;
    }
    return n;
}

#define EMIT_CHUNK (1u << 22) /* output bytes per conversion step: 4 MiB */

int av_write_tensor_data(av_out *o, const av_tensor *t, uint64_t *done, uint64_t total,
                         void (*progress)(void *, uint64_t, uint64_t), void *ud, av_err *err) {
    int ok;
    size_t nb = av_tensor_nbytes(t, &ok);
    if (!ok) return av_errf(err, AV_EINVAL, "tensor '%s': size is not a whole number of %s blocks", t->name, av_dtype_name(t->dtype));
    if (t->src_dtype == t->dtype) {
        const uint8_t *p = t->data;
        for (size_t off = 0; off < nb;) {
            size_t k = nb - off < EMIT_CHUNK ? nb - off : EMIT_CHUNK;
            int rc = av_out_write(o, p + off, k, err);
            if (rc) return rc;
            off += k;
            *done += k;
            if (progress) progress(ud, *done, total);
        }
        return 0;
    }
    const av_dtype_traits *st = av_dtype_traits_of(t->src_dtype), *dt = av_dtype_traits_of(t->dtype);
    if (!st || !dt || !av_can_convert(t->src_dtype, t->dtype))
        return av_errf(err, AV_EUNSUPPORTED, "tensor '%s': cannot convert %s to %s", t->name,
                       av_dtype_name(t->src_dtype), av_dtype_name(t->dtype));
    /* elements per chunk: a whole number of both types' blocks (block sizes are powers of two) */
    int64_t n = av_tensor_nelements(t);
    int64_t per = (int64_t)(EMIT_CHUNK / dt->type_size) * dt->block_size;
    int64_t blk = st->block_size > dt->block_size ? st->block_size : dt->block_size;
    per -= per % blk;
    uint8_t *buf = malloc(EMIT_CHUNK + dt->type_size);
    if (!buf) return av_errf(err, AV_ENOMEM, "tensor '%s': out of memory", t->name);
    int rc = 0;
    for (int64_t i0 = 0; i0 < n; i0 += per) {
        int64_t k = n - i0 < per ? n - i0 : per;
        const uint8_t *src = (const uint8_t *)t->data + (size_t)(i0 / st->block_size) * st->type_size;
        if ((rc = av_convert(src, t->src_dtype, buf, t->dtype, k, err))) break;
        size_t kb = (size_t)(k / dt->block_size) * dt->type_size;
        if ((rc = av_out_write(o, buf, kb, err))) break;
        *done += kb;
        if (progress) progress(ud, *done, total);
    }
    free(buf);
    if (rc) av_err_prefix(err, t->name);
    return rc;
}

const char *av_format_name(av_format f) {
    switch (f) {
    case AV_FMT_GGUF: return "gguf";
    case AV_FMT_SAFETENSORS: return "safetensors";
    case AV_FMT_LLAMA2C: return "llama2c";
    case AV_FMT_TORCH: return "pytorch";
    case AV_FMT_ONNX: return "onnx";
    default: return "unknown";
    }
}

av_format av_detect_format(const char *path) {
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return AV_FMT_SAFETENSORS;
    if (av_has_ext(path, ".gguf")) return AV_FMT_GGUF;
    if (av_has_ext(path, ".safetensors") || av_has_ext(path, ".safetensors.index.json")) return AV_FMT_SAFETENSORS;
    if (av_has_ext(path, ".pt") || av_has_ext(path, ".pth") || av_has_ext(path, ".bin.index.json") ||
        av_has_ext(path, ".pt.index.json"))
        return AV_FMT_TORCH;
    if (av_has_ext(path, ".onnx")) return AV_FMT_ONNX;
    /* sniff: GGUF magic, else a llama2.c .bin (no magic of its own) */
    unsigned char b[4] = { 0 };
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t r = read(fd, b, 4);
        close(fd);
        if (r == 4 && memcmp(b, "GGUF", 4) == 0) return AV_FMT_GGUF;
        if (r == 4 && b[0] == 'P' && b[1] == 'K') return AV_FMT_TORCH;
        /* legacy torch.save: PROTO 2, LONG1 (the magic number) */
        if (r == 4 && b[0] == 0x80 && b[1] == 0x02 && b[2] == 0x8a) return AV_FMT_TORCH;
    }
    if (av_has_ext(path, ".bin")) return AV_FMT_LLAMA2C;
    return AV_FMT_UNKNOWN;
}

int av_model_read(const char *path, av_model **out, av_err *err) {
    *out = NULL;
    switch (av_detect_format(path)) {
    case AV_FMT_GGUF: return gguf_read(path, out, err);
    case AV_FMT_SAFETENSORS: return st_read(path, out, err);
    case AV_FMT_LLAMA2C: return l2c_read(path, NULL, out, err);
    case AV_FMT_TORCH: return pt_read(path, NULL, out, err);
    case AV_FMT_ONNX: return onnx_read(path, out, err);
    default: return av_errf(err, AV_EUNSUPPORTED, "%s: unknown model format (expected .gguf, .safetensors, PyTorch .pt/.pth/.bin or llama2.c .bin)", path);
    }
}
