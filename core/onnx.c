/* onnx.c — ONNX reader: nesting pre-check, protobuf-c decoding, validation of
 * every tensor and external-data reference, and the JSON description. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "onnx_impl.h"

static const onnx_dt dtypes[] = {
    [1] = { "float", 4, AV_F32 },     [2] = { "uint8", 1, AV_U8 },        [3] = { "int8", 1, AV_I8 },
    [4] = { "uint16", 2, -1 },        [5] = { "int16", 2, AV_I16 },       [6] = { "int32", 4, AV_I32 },
    [7] = { "int64", 8, AV_I64 },     [8] = { "string", 0, -1 },          [9] = { "bool", 1, AV_BOOL },
    [10] = { "float16", 2, AV_F16 },  [11] = { "double", 8, AV_F64 },     [12] = { "uint32", 4, -1 },
    [13] = { "uint64", 8, -1 },       [14] = { "complex64", 8, -1 },      [15] = { "complex128", 16, -1 },
    [16] = { "bfloat16", 2, AV_BF16 }, [17] = { "float8e4m3fn", 1, AV_F8_E4M3 }, [18] = { "float8e4m3fnuz", 1, -1 },
    [19] = { "float8e5m2", 1, AV_F8_E5M2 }, [20] = { "float8e5m2fnuz", 1, -1 },
};

const onnx_dt *onnx_dtype(int32_t t) {
    if (t <= 0 || t >= (int32_t)(sizeof dtypes / sizeof dtypes[0]) || !dtypes[t].name) return NULL;
    return &dtypes[t];
}

int64_t onnx_tensor_nelem(const Onnx__TensorProto *t) {
    int64_t n = 1;
    for (size_t i = 0; i < t->n_dims; i++)
        if (t->dims[i] < 0 || __builtin_mul_overflow(n, t->dims[i], &n)) return -1;
    return n;
}

/* ---- nesting pre-check: protobuf-c decodes recursively, so a file of nested
 * subgraphs could exhaust the stack before any check of ours runs. Walk the
 * wire format guided by the generated descriptors, bounded in depth. ---- */

static int varint(const uint8_t *p, size_t n, size_t *i, uint64_t *v) {
    uint64_t r = 0;
    for (int s = 0; s < 70; s += 7) {
        if (*i >= n) return -1;
        uint8_t b = p[(*i)++];
        r |= (uint64_t)(b & 0x7f) << s;
        if (!(b & 0x80)) { *v = r; return 0; }
    }
    return -1;
}

static int wire_check(const uint8_t *base, size_t start, size_t end, const ProtobufCMessageDescriptor *d, int depth,
                      const char *path, av_err *err) {
    if (depth > ONNX_MAX_DEPTH)
        return av_errf(err, AV_EFORMAT, "%s: messages nested deeper than %d levels (subgraphs) at offset %zu", path,
                       ONNX_MAX_DEPTH, start);
    size_t i = start;
    while (i < end) {
        size_t at = i;
        uint64_t key, v;
        if (varint(base, end, &i, &key)) goto bad;
        switch (key & 7) {
        case 0: if (varint(base, end, &i, &v)) goto bad; break;
        case 1: if (end - i < 8) goto bad; i += 8; break;
        case 5: if (end - i < 4) goto bad; i += 4; break;
        case 2: {
            if (varint(base, end, &i, &v) || v > end - i) goto bad;
            const ProtobufCFieldDescriptor *f =
                d && key >> 3 <= UINT32_MAX ? protobuf_c_message_descriptor_get_field(d, (unsigned)(key >> 3)) : NULL;
            if (f && f->type == PROTOBUF_C_TYPE_MESSAGE) {
                int rc = wire_check(base, i, i + v, f->descriptor, depth + 1, path, err);
                if (rc) return rc;
            }
            i += v;
            break;
        }
        default:
            return av_errf(err, AV_EFORMAT, "%s: not an ONNX protobuf: wire type %u at offset %zu", path,
                           (unsigned)(key & 7), at);
        }
        continue;
    bad:
        return av_errf(err, AV_EFORMAT, "%s: not an ONNX protobuf: truncated field at offset %zu", path, at);
    }
    return 0;
}

/* ---- tensors ---- */

static int parse_u64(const char *s, int64_t *out) {
    if (!s || !*s) return -1;
    if (*s == '-') return -2;
    errno = 0;
    char *e;
    long long v = strtoll(s, &e, 10);
    if (*e || errno || v < 0) return -1;
    *out = v;
    return 0;
}

/* Resolve an external-data location inside m->dir and map it (once per file). */
static int ext_map(onnx_model *m, const char *loc, const char *tname, av_map **out, av_err *err) {
    for (size_t i = 0; i < m->n_ext; i++)
        if (!strcmp(m->ext_names[i], loc)) { *out = m->ext[i]; return 0; }
    if (!m->dir)
        return av_errf(err, AV_EUNSUPPORTED, "%s: initializer '%s': external data in an in-memory model", m->path, tname);
    if (!*loc || loc[0] == '/' || strstr(loc, ".."))
        return av_errf(err, AV_EFORMAT, "%s: initializer '%s': external data location '%s' leaves the model's folder",
                       m->path, tname, loc);
    size_t n = strlen(m->dir) + strlen(loc) + 2;
    char *full = malloc(n), *real = NULL;
    if (!full) return av_errf(err, AV_ENOMEM, "%s: out of memory", m->path);
    snprintf(full, n, "%s/%s", m->dir, loc);
    real = realpath(full, NULL);
    free(full);
    size_t dl = strlen(m->dir);
    if (!real) return av_errf(err, AV_EIO, "%s: initializer '%s': external data '%s': %s", m->path, tname, loc, strerror(errno));
    if (strncmp(real, m->dir, dl) || (real[dl] != '/' && strcmp(m->dir, "/"))) {
        free(real);
        return av_errf(err, AV_EFORMAT, "%s: initializer '%s': external data location '%s' leaves the model's folder",
                       m->path, tname, loc);
    }
    av_map *map = NULL;
    int rc = av_map_open(real, &map, err);
    free(real);
    if (rc) return rc;
    av_map **ne = realloc(m->ext, (m->n_ext + 1) * sizeof *ne);
    if (ne) m->ext = ne;
    char **nn = ne ? realloc(m->ext_names, (m->n_ext + 1) * sizeof *nn) : NULL;
    if (nn) m->ext_names = nn;
    char *name = nn ? strdup(loc) : NULL;
    if (!name) { av_map_free(map); return av_errf(err, AV_ENOMEM, "%s: out of memory", m->path); }
    m->ext[m->n_ext] = map;
    m->ext_names[m->n_ext++] = name;
    *out = map;
    return 0;
}

/* External-data fields of t: map, offset, length (length -1 when absent). */
static int ext_fields(onnx_model *m, const Onnx__TensorProto *t, av_map **map, int64_t *off, int64_t *len, av_err *err) {
    const char *loc = NULL, *tn = t->name ? t->name : "?";
    *off = 0;
    *len = -1;
    for (size_t i = 0; i < t->n_external_data; i++) {
        const Onnx__StringStringEntryProto *e = t->external_data[i];
        const char *k = e->key ? e->key : "";
        int64_t *dst = !strcmp(k, "offset") ? off : !strcmp(k, "length") ? len : NULL;
        if (!strcmp(k, "location")) loc = e->value;
        else if (dst) {
            int r = parse_u64(e->value, dst);
            if (r) return av_errf(err, AV_EFORMAT, "%s: initializer '%s': external data %s '%s' is %s", m->path, tn, k,
                                  e->value ? e->value : "", r == -2 ? "negative" : "not an integer");
        }
    }
    if (!loc) return av_errf(err, AV_EFORMAT, "%s: initializer '%s': external data without a location", m->path, tn);
    return ext_map(m, loc, tn, map, err);
}

/* Check one tensor: type, dims, byte count against its storage. */
static int check_tensor(onnx_model *m, const Onnx__TensorProto *t, const char *what, av_err *err) {
    const char *tn = t->name && *t->name ? t->name : "(unnamed)";
    const onnx_dt *dt = onnx_dtype(t->data_type);
    if (!dt) return av_errf(err, AV_EUNSUPPORTED, "%s: %s '%s': unknown data_type %d", m->path, what, tn, t->data_type);
    if (t->n_dims > AV_MAX_DIMS)
        return av_errf(err, AV_EUNSUPPORTED, "%s: %s '%s': %zu dims (at most %d)", m->path, what, tn, t->n_dims, AV_MAX_DIMS);
    for (size_t i = 0; i < t->n_dims; i++)
        if (t->dims[i] < 0) return av_errf(err, AV_EFORMAT, "%s: %s '%s': negative dim %lld", m->path, what, tn, (long long)t->dims[i]);
    int64_t ne = onnx_tensor_nelem(t), nb;
    if (ne < 0 || __builtin_mul_overflow(ne, (int64_t)dt->size, &nb))
        return av_errf(err, AV_EFORMAT, "%s: %s '%s': element count of its dims overflows", m->path, what, tn);
    if (t->data_type == 8) {
        if ((int64_t)t->n_string_data != ne) goto short_data;
        return 0;
    }
    if (t->has_data_location && t->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL) {
        av_map *map;
        int64_t off, len;
        int rc = ext_fields(m, t, &map, &off, &len, err);
        if (rc) return rc;
        if (len >= 0 && len != nb)
            return av_errf(err, AV_EFORMAT, "%s: %s '%s': external data length %lld, shape needs %lld bytes", m->path, what,
                           tn, (long long)len, (long long)nb);
        if ((uint64_t)off > map->size || (uint64_t)nb > map->size - (uint64_t)off)
            return av_errf(err, AV_EFORMAT, "%s: %s '%s': external data [%lld, +%lld) past the end of %s (%zu bytes)",
                           m->path, what, tn, (long long)off, (long long)nb, map->path, map->size);
        return 0;
    }
    int64_t have;
    if (t->has_raw_data) have = (int64_t)t->raw_data.len;
    else if (t->n_float_data) have = (int64_t)t->n_float_data * 4;
    else if (t->n_int32_data) have = (int64_t)t->n_int32_data * dt->size;
    else if (t->n_int64_data) have = (int64_t)t->n_int64_data * 8;
    else if (t->n_double_data) have = (int64_t)t->n_double_data * 8;
    else if (t->n_uint64_data) have = (int64_t)t->n_uint64_data * dt->size;
    else have = 0;
    if (have == nb) return 0;
short_data:
    return av_errf(err, AV_EFORMAT, "%s: %s '%s': data does not match its shape (%s, %lld elements)", m->path, what, tn,
                   dt->name, (long long)ne);
}

static int known_domain(const char *d) { return !d || !*d || !strcmp(d, "ai.onnx"); }

static int check_graph(onnx_model *m, const Onnx__GraphProto *g, av_err *err) {
    int rc;
    for (size_t i = 0; i < g->n_initializer; i++)
        if ((rc = check_tensor(m, g->initializer[i], "initializer", err))) return rc;
    for (size_t i = 0; i < g->n_node; i++) {
        const Onnx__NodeProto *n = g->node[i];
        const char *nn = n->name && *n->name ? n->name : "(unnamed)", *op = n->op_type ? n->op_type : "";
        if (!known_domain(n->domain)) {
            int imported = 0;
            for (size_t k = 0; k < m->proto->n_opset_import; k++)
                if (m->proto->opset_import[k]->domain && !strcmp(m->proto->opset_import[k]->domain, n->domain)) imported = 1;
            return av_errf(err, AV_EUNSUPPORTED, "%s: node '%s' (%s) requires opset domain '%s'%s, which anvil does not know",
                           m->path, nn, op, n->domain, imported ? "" : " (not even imported)");
        }
        for (size_t a = 0; a < n->n_attribute; a++) {
            const Onnx__AttributeProto *at = n->attribute[a];
            if (at->t && (rc = check_tensor(m, at->t, "constant", err))) return rc;
            for (size_t k = 0; k < at->n_tensors; k++)
                if ((rc = check_tensor(m, at->tensors[k], "constant", err))) return rc;
            if (at->g && (rc = check_graph(m, at->g, err))) return rc;
            for (size_t k = 0; k < at->n_graphs; k++)
                if ((rc = check_graph(m, at->graphs[k], err))) return rc;
        }
    }
    const Onnx__ValueInfoProto **ios[2] = { (const Onnx__ValueInfoProto **)g->input, (const Onnx__ValueInfoProto **)g->output };
    size_t nio[2] = { g->n_input, g->n_output };
    for (int s = 0; s < 2; s++)
        for (size_t i = 0; i < nio[s]; i++) {
            const Onnx__TypeProto *tp = ios[s][i]->type;
            if (!tp || tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !tp->tensor_type->shape) continue;
            const Onnx__TensorShapeProto *sh = tp->tensor_type->shape;
            for (size_t d = 0; d < sh->n_dim; d++)
                if (sh->dim[d]->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE && sh->dim[d]->dim_value < 0)
                    return av_errf(err, AV_EFORMAT, "%s: %s '%s': negative dim %lld", m->path, s ? "output" : "input",
                                   ios[s][i]->name ? ios[s][i]->name : "?", (long long)sh->dim[d]->dim_value);
        }
    return 0;
}

/* Decode and validate buf into m (m->path set; m->dir NULL: no external data). */
static int open_buf(onnx_model *m, const uint8_t *buf, size_t size, av_err *err) {
    const char *path = m->path;
    int rc;
    if (!size) return av_errf(err, AV_EFORMAT, "%s: empty file", path);
    if ((rc = wire_check(buf, 0, size, &onnx__model_proto__descriptor, 1, path, err))) return rc;
    m->proto = (Onnx__ModelProto *)protobuf_c_message_unpack(&onnx__model_proto__descriptor, NULL, size, buf);
    if (!m->proto) return av_errf(err, AV_EFORMAT, "%s: not a valid ONNX ModelProto (protobuf decoding failed)", path);
    if (!m->proto->graph) return av_errf(err, AV_EFORMAT, "%s: ModelProto without a graph", path);
    if (!m->proto->has_ir_version || m->proto->ir_version < 3)
        return av_errf(err, AV_EUNSUPPORTED, "%s: IR version %lld (need 3 or later)", path, (long long)m->proto->ir_version);
    for (size_t i = 0; i < m->proto->n_opset_import; i++) {
        const Onnx__OperatorSetIdProto *o = m->proto->opset_import[i];
        if (known_domain(o->domain) && (o->version < 1 || o->version > ONNX_MAX_OPSET))
            return av_errf(err, AV_EUNSUPPORTED, "%s: requires ai.onnx opset %lld; anvil knows 1 to %d", path,
                           (long long)o->version, ONNX_MAX_OPSET);
    }
    return check_graph(m, m->proto->graph, err);
}

int onnx_open(const char *path, onnx_model **out, av_err *err) {
    *out = NULL;
    av_map *map = NULL;
    int rc = av_map_open(path, &map, err);
    if (rc) return rc;
    onnx_model *m = calloc(1, sizeof *m);
    if (!m || !(m->path = strdup(path))) { rc = av_errf(err, AV_ENOMEM, "%s: out of memory", path); goto fail; }
    {
        char *slash = strrchr(m->path, '/');
        char *folder = slash ? strndup(m->path, slash == m->path ? 1 : (size_t)(slash - m->path)) : strdup(".");
        m->dir = folder ? realpath(folder, NULL) : NULL;
        free(folder);
        if (!m->dir) { rc = av_errf(err, AV_EIO, "%s: cannot resolve its folder: %s", path, strerror(errno)); goto fail; }
    }
    if ((rc = open_buf(m, map->data, map->size, err))) goto fail;
    av_map_free(map);
    *out = m;
    return 0;
fail:
    av_map_free(map);
    onnx_free(m);
    return rc;
}

int onnx_open_mem(const void *buf, size_t size, const char *name, onnx_model **out, av_err *err) {
    *out = NULL;
    onnx_model *m = calloc(1, sizeof *m);
    if (!m || !(m->path = strdup(name))) { free(m); return av_errf(err, AV_ENOMEM, "%s: out of memory", name); }
    int rc = open_buf(m, buf, size, err);
    if (rc) { onnx_free(m); return rc; }
    *out = m;
    return 0;
}

void onnx_free(onnx_model *m) {
    if (!m) return;
    if (m->proto) protobuf_c_message_free_unpacked(&m->proto->base, NULL);
    for (size_t i = 0; i < m->n_ext; i++) { av_map_free(m->ext[i]); free(m->ext_names[i]); }
    free(m->ext);
    free(m->ext_names);
    free(m->dir);
    free(m->path);
    free(m);
}

int onnx_tensor_bytes(const onnx_model *m, const Onnx__TensorProto *t, const void **data, size_t *n, void **owned,
                      av_err *err) {
    const onnx_dt *dt = onnx_dtype(t->data_type);
    int64_t ne = onnx_tensor_nelem(t);
    *owned = NULL;
    *data = NULL;
    *n = (size_t)ne * (size_t)(dt ? dt->size : 0);
    if (!dt || t->data_type == 8) return av_errf(err, AV_EUNSUPPORTED, "%s: tensor '%s' holds strings", m->path, t->name);
    if (t->has_data_location && t->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL) {
        av_map *map;
        int64_t off, len;
        int rc = ext_fields((onnx_model *)m, t, &map, &off, &len, err); /* already mapped: a lookup */
        if (rc) return rc;
        *data = map->data + off;
    } else if (t->has_raw_data) *data = t->raw_data.data;
    else if (t->n_float_data) *data = t->float_data;
    else if (t->n_int64_data) *data = t->int64_data;
    else if (t->n_double_data) *data = t->double_data;
    else if (t->n_uint64_data && dt->size == 8) *data = t->uint64_data;
    else if (t->n_int32_data && dt->size == 4) *data = t->int32_data;
    else if (*n) { /* narrow int32_data / uint64_data (uint32) into the element width */
        uint8_t *b = malloc(*n);
        if (!b) return av_errf(err, AV_ENOMEM, "%s: out of memory", m->path);
        for (int64_t i = 0; i < ne; i++) {
            uint64_t v = t->n_int32_data ? (uint64_t)(uint32_t)t->int32_data[i] : t->uint64_data[i];
            memcpy(b + i * dt->size, &v, (size_t)dt->size); /* little-endian host */
        }
        *data = *owned = b;
    }
    return 0;
}

/* ---- description ---- */

static json_t *shape_json(const Onnx__TypeProto *tp, const char **dtype) {
    *dtype = "?";
    json_t *a = json_array();
    if (!tp || tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE) return a;
    const onnx_dt *dt = onnx_dtype(tp->tensor_type->elem_type);
    if (dt) *dtype = dt->name;
    const Onnx__TensorShapeProto *sh = tp->tensor_type->shape;
    for (size_t d = 0; sh && d < sh->n_dim; d++) {
        const Onnx__TensorShapeProto__Dimension *x = sh->dim[d];
        if (x->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE) json_array_append_new(a, json_integer(x->dim_value));
        else if (x->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM) json_array_append_new(a, json_string(x->dim_param));
        else json_array_append_new(a, json_string("?"));
    }
    return a;
}

static json_t *values_json(Onnx__ValueInfoProto **v, size_t n) {
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        const char *dt;
        json_t *sh = shape_json(v[i]->type, &dt);
        json_array_append_new(a, json_pack("{s:s, s:s, s:o}", "name", v[i]->name ? v[i]->name : "", "dtype", dt, "shape", sh));
    }
    return a;
}

typedef struct { const char *op; long n; } op_count;
static int cmp_ops(const void *a, const void *b) {
    const op_count *x = a, *y = b;
    return x->n != y->n ? (y->n > x->n ? 1 : -1) : strcmp(x->op, y->op);
}

int onnx_describe(const onnx_model *m, json_t **out, av_err *err) {
    const Onnx__ModelProto *p = m->proto;
    const Onnx__GraphProto *g = p->graph;
    json_t *root = json_object(), *ops = json_array(), *inits = json_array(), *hist = json_object();
    op_count *oc = calloc(g->n_node + 1, sizeof *oc);
    if (!root || !ops || !inits || !hist || !oc) {
        json_decref(root); json_decref(ops); json_decref(inits); json_decref(hist); free(oc);
        return av_errf(err, AV_ENOMEM, "%s: out of memory", m->path);
    }
    json_object_set_new(root, "ir_version", json_integer(p->ir_version));
    json_object_set_new(root, "producer", json_sprintf("%s%s%s", p->producer_name ? p->producer_name : "",
                                                       p->producer_version && *p->producer_version ? " " : "",
                                                       p->producer_version ? p->producer_version : ""));
    for (size_t i = 0; i < p->n_opset_import; i++) {
        const char *d = p->opset_import[i]->domain;
        json_array_append_new(ops, json_pack("{s:s, s:I}", "domain", d && *d ? d : "ai.onnx", "version",
                                             (json_int_t)p->opset_import[i]->version));
    }
    json_object_set_new(root, "opsets", ops);
    json_object_set_new(root, "inputs", values_json(g->input, g->n_input));
    json_object_set_new(root, "outputs", values_json(g->output, g->n_output));
    int64_t total = 0;
    for (size_t i = 0; i < g->n_initializer; i++) {
        const Onnx__TensorProto *t = g->initializer[i];
        json_t *sh = json_array();
        for (size_t d = 0; d < t->n_dims; d++) json_array_append_new(sh, json_integer(t->dims[d]));
        int64_t nb = onnx_tensor_nelem(t) * onnx_dtype(t->data_type)->size;
        total += nb;
        json_t *e = json_pack("{s:s, s:s, s:o, s:I}", "name", t->name ? t->name : "", "dtype",
                              onnx_dtype(t->data_type)->name, "shape", sh, "bytes", (json_int_t)nb);
        if (t->has_data_location && t->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL)
            for (size_t k = 0; k < t->n_external_data; k++)
                if (t->external_data[k]->key && !strcmp(t->external_data[k]->key, "location"))
                    json_object_set_new(e, "external", json_string(t->external_data[k]->value));
        json_array_append_new(inits, e);
    }
    json_object_set_new(root, "initializers", inits);
    json_object_set_new(root, "initializer_bytes", json_integer(total));
    size_t nop = 0;
    for (size_t i = 0; i < g->n_node; i++) {
        const char *op = g->node[i]->op_type ? g->node[i]->op_type : "";
        size_t k = 0;
        while (k < nop && strcmp(oc[k].op, op)) k++;
        if (k == nop) oc[nop++] = (op_count){ op, 0 };
        oc[k].n++;
    }
    qsort(oc, nop, sizeof *oc, cmp_ops);
    for (size_t k = 0; k < nop; k++) json_object_set_new(hist, oc[k].op, json_integer(oc[k].n));
    free(oc);
    json_object_set_new(root, "ops", hist);
    json_object_set_new(root, "n_nodes", json_integer((json_int_t)g->n_node));
    *out = root;
    return 0;
}

int onnx_read(const char *path, av_model **out, av_err *err) {
    onnx_model *om = NULL;
    *out = NULL;
    int rc = onnx_open(path, &om, err);
    if (!rc) rc = onnx_to_model(om, out, err);
    onnx_free(om);
    return rc;
}
