/* test_torchpt.c — PyTorch checkpoint reader (core/pt_read.c, core/pickle.c).
 *
 * Reference files: ../shared/reference/torch/stories260K*.pt, made by
 * torch.save (PyTorch 1.13) from ../shared/models/stories260K.bin; the f32
 * ones must give, after the HF -> GGUF mapping, exactly the tensors of the
 * llama2.c conversion. Small and hostile fixtures: tests/fixtures/torch/,
 * written by scripts/fixtures/gen_hostile_pickles.py (python stdlib pickle). */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>

#include "gguf.h"
#include "hf.h"
#include "llama2c.h"
#include "pickle.h"
#include "testutil.h"
#include "torchpt.h"

#define FIX "tests/fixtures/torch/"

static av_model *load(const char *path, const char *key) {
    av_err e = {0};
    av_model *m = NULL;
    pt_read_opts o = {.key = key};
    cr_assert_eq(pt_read(path, &o, &m, &e), 0, "%s: %s", path, e.msg);
    cr_assert_eq(m->format, AV_FMT_TORCH);
    return m;
}

static void expect_fail(const char *path, const char *key, const char *w1, const char *w2) {
    av_err e = {0};
    av_model *m = NULL;
    pt_read_opts o = {.key = key};
    int rc = pt_read(path, &o, &m, &e);
    cr_assert_neq(rc, 0, "%s was accepted", path);
    cr_assert_null(m);
    cr_assert(strstr(e.msg, path), "%s: message does not name the file: %s", path, e.msg);
    cr_assert(strstr(e.msg, w1), "%s: '%s' not in: %s", path, w1, e.msg);
    if (w2) cr_assert(strstr(e.msg, w2), "%s: '%s' not in: %s", path, w2, e.msg);
    cr_assert(!strchr(e.msg, '\n'), "multi-line message: %s", e.msg);
}

static const float *f32_of(const av_model *m, const char *name, int64_t n) {
    const av_tensor *t = av_model_find(m, name);
    cr_assert(t, "no tensor %s", name);
    cr_assert_eq(t->dtype, AV_F32, "%s", name);
    cr_assert_eq(av_tensor_nelements(t), n, "%s: %lld elements", name, (long long)av_tensor_nelements(t));
    return t->data;
}

/* ---------------- the shared reference checkpoints ---------------- */

static const char *REF[] = {"reference/torch/stories260K.pt", "reference/torch/stories260K-legacy.pt",
                            "reference/torch/stories260K-f16.pt", "reference/torch/stories260K-bf16.pt"};
static const av_dtype REF_DT[] = {AV_F32, AV_F32, AV_F16, AV_BF16};

Test(torchpt, reference_files_load) {
    for (int i = 0; i < 4; i++) {
        av_model *m = load(shared_path(REF[i]), NULL);
        cr_assert_eq(m->n_tensors, 48, "%s: %zu tensors", REF[i], m->n_tensors);
        cr_assert_str_eq(m->tensors[0].name, "model.embed_tokens.weight");
        cr_assert_str_eq(m->tensors[47].name, "lm_head.weight");
        for (size_t k = 0; k < m->n_tensors; k++) cr_assert_eq(m->tensors[k].dtype, REF_DT[i]);
        const av_tensor *q = av_model_find(m, "model.layers.0.self_attn.k_proj.weight");
        cr_assert(q && q->n_dims == 2 && q->shape[0] == 32 && q->shape[1] == 64);
        const av_tensor *a = av_model_find(m, "lm_head.weight"), *b = av_model_find(m, "model.embed_tokens.weight");
        cr_assert_eq(a->data, b->data, "%s: tied weights do not share data", REF[i]);
        cr_assert_eq(av_model_nparams(m), 292800); /* 260K + the tied lm_head counted again */
        av_model_free(m);
    }
}

Test(torchpt, zip_views_are_zero_copy) {
    av_model *m = load(shared_path(REF[0]), NULL);
    for (size_t k = 0; k < m->n_tensors; k++) cr_assert_gt(m->tensors[k].file_offset, 0, "%s", m->tensors[k].name);
    av_model_free(m);
}

/* llama2.c .bin -> GGUF -> read back: the tensors every other path is compared to. */
static av_model *converted_260k(void) {
    av_err e = {0};
    av_model *m = NULL, *g = NULL;
    cr_assert_eq(l2c_read(shared_path("models/stories260K.bin"), shared_path("models/tok512.bin"), &m, &e), 0, "%s", e.msg);
    const char *p = tmp_path(".gguf");
    cr_assert_eq(gguf_write(m, p, NULL, NULL, &e), 0, "%s", e.msg);
    av_model_free(m);
    cr_assert_eq(gguf_read(p, &g, &e), 0, "%s", e.msg);
    unlink(p);
    return g;
}

static void check_f32_ref(const char *rel) {
    av_err e = {0};
    av_model *m = load(shared_path(rel), NULL);
    cr_assert(hf_is_llama(m));
    cr_assert_eq(hf_llama_to_gguf(m, shared_path("reference/torch/hf/config.json"), &e), 0, "%s", e.msg);
    av_model *g = converted_260k();
    int compared = 0;
    for (size_t i = 0; i < g->n_tensors; i++) {
        const av_tensor *a = &g->tensors[i], *b = av_model_find(m, a->name);
        cr_assert(b, "%s: no tensor %s after mapping", rel, a->name);
        int ok;
        size_t nb = av_tensor_src_nbytes(a, &ok);
        cr_assert_eq(nb, av_tensor_src_nbytes(b, &ok), "%s: size of %s", rel, a->name);
        cr_assert_eq(memcmp(a->data, b->data, nb), 0, "%s: %s differs", rel, a->name);
        compared++;
    }
    cr_assert_geq(compared, 47);
    const av_tensor *out = av_model_find(m, "output.weight"), *emb = av_model_find(m, "token_embd.weight");
    if (out) cr_assert_eq(memcmp(out->data, emb->data, 512 * 64 * 4), 0, "tied output.weight differs");
    av_model_free(g);
    av_model_free(m);
}

Test(torchpt, f32_zip_matches_llama2c) { check_f32_ref(REF[0]); }
Test(torchpt, f32_legacy_matches_llama2c) { check_f32_ref(REF[1]); }

Test(torchpt, f16_bf16_are_f32_rounded) {
    av_model *f = load(shared_path(REF[0]), NULL);
    for (int i = 2; i < 4; i++) {
        av_model *h = load(shared_path(REF[i]), NULL);
        for (size_t k = 0; k < f->n_tensors; k++) {
            const av_tensor *a = &f->tensors[k], *b = &h->tensors[k];
            cr_assert_str_eq(a->name, b->name);
            int64_t n = av_tensor_nelements(a);
            cr_assert_eq(n, av_tensor_nelements(b));
            const float *x = a->data;
            const uint16_t *y = b->data;
            for (int64_t j = 0; j < n; j++) {
                uint16_t want = i == 2 ? av_f32_to_f16(x[j]) : av_f32_to_bf16(x[j]);
                cr_assert_eq(y[j], want, "%s %s[%lld]: %04x vs %04x", REF[i], a->name, (long long)j, y[j], want);
            }
        }
        av_model_free(h);
    }
    av_model_free(f);
}

Test(torchpt, model_read_dispatch) {
    cr_assert_eq(av_detect_format(shared_path(REF[0])), AV_FMT_TORCH);
    cr_assert_eq(av_detect_format(FIX "pytorch_model-00001-of-00002.bin"), AV_FMT_TORCH);
    cr_assert_eq(av_detect_format(FIX "pytorch_model.bin.index.json"), AV_FMT_TORCH);
    cr_assert_eq(av_detect_format(shared_path("models/stories260K.bin")), AV_FMT_LLAMA2C);
    /* legacy stream under a .bin name: sniffed by its pickle magic */
    size_t n;
    unsigned char *b = slurp(FIX "legacy_small.pt", &n);
    const char *p = tmp_path(".bin");
    cr_assert_eq(write_bytes(p, b, n), 0);
    cr_assert_eq(av_detect_format(p), AV_FMT_TORCH);
    av_err e = {0};
    av_model *m = NULL;
    cr_assert_eq(av_model_read(p, &m, &e), 0, "%s", e.msg);
    cr_assert_eq(m->n_tensors, 4);
    av_model_free(m);
    unlink(p);
    free(b);
    cr_assert_eq(av_model_read(shared_path(REF[0]), &m, &e), 0, "%s", e.msg);
    cr_assert_eq(m->n_tensors, 48);
    av_model_free(m);
}

/* ---------------- small fixtures ---------------- */

Test(torchpt, strided_views_materialised) {
    av_model *m = load(FIX "strided.pt", NULL);
    cr_assert_eq(m->n_tensors, 9);
    const float *c = f32_of(m, "contig", 6);
    for (int i = 0; i < 6; i++) cr_assert_eq(c[i], (float)i);
    const float *t = f32_of(m, "transposed", 12);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 3; j++) cr_assert_eq(t[i * 3 + j], (float)(i + 4 * j), "transposed[%d][%d]", i, j);
    const float *nr = f32_of(m, "narrow", 4);
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) cr_assert_eq(nr[i * 2 + j], (float)(7 + 6 * i + j));
    const float *s3 = f32_of(m, "strided3", 8);
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++)
            for (int k = 0; k < 2; k++) cr_assert_eq(s3[i * 4 + j * 2 + k], (float)(2 + 12 * i + j + 4 * k));
    const float *ta = f32_of(m, "tied_a", 6), *tb = f32_of(m, "tied_b", 6);
    cr_assert_eq(ta, tb, "a strided tensor referenced twice must be materialised once");
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 2; j++) cr_assert_eq(ta[i * 2 + j], (float)(1 + i + 4 * j));
    const av_tensor *sc = av_model_find(m, "scalar");
    cr_assert_eq(sc->n_dims, 0);
    cr_assert_eq(*(const float *)sc->data, 5.0f);
    const av_tensor *em = av_model_find(m, "empty");
    cr_assert(em->n_dims == 2 && em->shape[0] == 0 && em->shape[1] == 4 && av_tensor_nelements(em) == 0);
    const float *row = f32_of(m, "row", 4);
    cr_assert_eq(row, c + 20, "size-1 dims with odd strides are still contiguous views");
    cr_assert_eq(av_model_find(m, "contig")->file_offset > 0, 1);
    av_model_free(m);
}

Test(torchpt, dtypes) {
    av_model *m = load(FIX "dtypes.pt", NULL);
    static const struct { const char *n; av_dtype t; size_t es; } D[] = {
        {"DoubleStorage", AV_F64, 8}, {"FloatStorage", AV_F32, 4}, {"HalfStorage", AV_F16, 2},
        {"BFloat16Storage", AV_BF16, 2}, {"LongStorage", AV_I64, 8}, {"IntStorage", AV_I32, 4},
        {"ShortStorage", AV_I16, 2}, {"CharStorage", AV_I8, 1}, {"ByteStorage", AV_U8, 1}, {"BoolStorage", AV_BOOL, 1}};
    cr_assert_eq(m->n_tensors, 10);
    for (int i = 0; i < 10; i++) {
        const av_tensor *t = av_model_find(m, D[i].n);
        cr_assert(t && t->dtype == D[i].t && t->n_dims == 1 && t->shape[0] == 3, "%s", D[i].n);
        int ok;
        cr_assert_eq(av_tensor_nbytes(t, &ok), 3 * D[i].es);
    }
    const double *f64 = av_model_find(m, "DoubleStorage")->data;
    cr_assert(f64[0] == 1.5 && f64[1] == -2.0 && f64[2] == 3.25);
    const uint16_t *h = av_model_find(m, "HalfStorage")->data, *bf = av_model_find(m, "BFloat16Storage")->data;
    cr_assert(h[0] == av_f32_to_f16(1.5f) && h[1] == av_f32_to_f16(-2.0f) && h[2] == av_f32_to_f16(3.25f));
    cr_assert(bf[0] == av_f32_to_bf16(1.5f) && bf[1] == av_f32_to_bf16(-2.0f) && bf[2] == av_f32_to_bf16(3.25f));
    const int64_t *l = av_model_find(m, "LongStorage")->data;
    cr_assert(l[0] == -1 && l[1] == (int64_t)1 << 40 && l[2] == 7);
    const int32_t *i32 = av_model_find(m, "IntStorage")->data;
    cr_assert(i32[0] == -1 && i32[1] == 1 << 20 && i32[2] == 7);
    const int16_t *i16 = av_model_find(m, "ShortStorage")->data;
    cr_assert(i16[0] == -1 && i16[1] == 300 && i16[2] == 7);
    const int8_t *i8 = av_model_find(m, "CharStorage")->data;
    cr_assert(i8[0] == -1 && i8[1] == 100 && i8[2] == 7);
    const uint8_t *u8 = av_model_find(m, "ByteStorage")->data, *bo = av_model_find(m, "BoolStorage")->data;
    cr_assert(u8[0] == 255 && u8[1] == 100 && u8[2] == 7);
    cr_assert(bo[0] == 1 && bo[1] == 0 && bo[2] == 1);
    av_model_free(m);
}

Test(torchpt, nested_checkpoint_and_key) {
    av_model *m = load(FIX "nested.pt", NULL); /* default: "model" */
    cr_assert_eq(m->n_tensors, 2);
    cr_assert_str_eq(m->tensors[0].name, "w");
    cr_assert_str_eq(m->tensors[1].name, "b");
    const float *w = f32_of(m, "w", 6);
    cr_assert(w[0] == 0.5f && w[5] == 5.5f);
    cr_assert_eq(m->tensors[0].shape[0], 2);
    cr_assert_eq(m->tensors[0].shape[1], 3);
    av_model_free(m);

    m = load(FIX "nested.pt", "ema.model");
    w = f32_of(m, "w", 6);
    cr_assert(w[0] == 10.0f && w[5] == 15.0f);
    cr_assert_eq(f32_of(m, "b", 3)[2], -30.0f);
    av_model_free(m);

    m = load(FIX "nested.pt", "model");
    cr_assert_eq(f32_of(m, "b", 3)[0], -1.0f);
    av_model_free(m);

    expect_fail(FIX "nested.pt", "optimizer", "optimizer", "not a state dict");
    expect_fail(FIX "nested.pt", "nope", "'nope' not found", "'model', 'optimizer', 'epoch'");
    expect_fail(FIX "nested.pt", "epoch.x", "not a dict", NULL);
    expect_fail(FIX "nested.pt", "ema.nope", "'ema.nope' not found", "'decay'");
}

Test(torchpt, protocol5_deflated_pickle_shared_storage) {
    av_model *m = load(FIX "proto5.pt", NULL);
    cr_assert_eq(m->n_tensors, 3);
    const float *a = f32_of(m, "a", 4), *b = f32_of(m, "b", 4), *c = f32_of(m, "c", 2);
    cr_assert_eq(a, b);
    cr_assert_eq(c, a + 2);
    cr_assert(a[0] == 1.0f && a[3] == 4.0f && c[0] == 3.0f);
    av_model_free(m);
}

Test(torchpt, legacy_small) {
    av_model *m = load(FIX "legacy_small.pt", NULL);
    cr_assert_eq(m->n_tensors, 4);
    const float *x = f32_of(m, "x", 6), *xt = f32_of(m, "xt", 6), *xx = f32_of(m, "x_tied", 6);
    cr_assert_eq(x, xx);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 2; j++) cr_assert_eq(xt[i * 2 + j], x[j * 3 + i]);
    const av_tensor *n = av_model_find(m, "n");
    cr_assert_eq(n->dtype, AV_I64);
    cr_assert_eq(((const int64_t *)n->data)[1], -42);
    av_model_free(m);
}

Test(torchpt, sharded_index) {
    av_model *m = load(FIX "pytorch_model.bin.index.json", NULL);
    static const char *names[] = {"l.0.w", "l.0.b", "l.1.w", "head"};
    cr_assert_eq(m->n_tensors, 4);
    for (int i = 0; i < 4; i++) cr_assert_str_eq(m->tensors[i].name, names[i]);
    cr_assert_eq(f32_of(m, "head", 4)[3], 24.0f);
    cr_assert_geq(m->n_maps, 2); /* both shards stay mapped (plus aligned copies) */
    av_model_free(m);
    expect_fail(FIX "bad.bin.index.json", NULL, "missing.w", "does not contain");
}

/* ---------------- hostile files ---------------- */

Test(torchpt, hostile_files_rejected) {
    static const char *cases[][3] = {
        {"h_os_system.pt", "global 'os.system' is not allowed", "GLOBAL"},
        {"h_eval.pt", "global 'builtins.eval' is not allowed", NULL},
        {"h_subprocess.pt", "global 'subprocess.check_output' is not allowed", NULL},
        {"h_stack_global.pt", "global 'os.system' is not allowed", "STACK_GLOBAL"},
        {"h_model_class.pt", "global '__main__.Net' is not allowed", NULL},
        {"h_inst.pt", "opcode INST (0x69)", "not allowed"},
        {"h_obj.pt", "opcode OBJ (0x6f)", "not allowed"},
        {"h_unknown_opcode.pt", "unknown opcode 0xff", "offset 2"},
        {"h_proto0.pt", "PROTO", NULL},
        {"h_memo_get.pt", "memo index 4294967295", "LONG_BINGET"},
        {"h_memo_put.pt", "memo index 2147483647", "too large"},
        {"h_marks.pt", "MARK nesting deeper", NULL},
        {"h_binunicode.pt", "BINUNICODE length 4294967280", "past the end"},
        {"h_reduce_storage.pt", "calling 'torch.FloatStorage' is not allowed", NULL},
        {"h_persid.pt", "BINPERSID", "persistent id"},
        {"h_build.pt", "BUILD", "list"},
        {"h_missing_storage.pt", "'data/7' is missing", "tensor 'w'"},
        {"h_out_of_range.pt", "tensor 'w'", "out of range"},
        {"h_huge_view.pt", "tensor 'w'", "out of range"},
        {"h_numel.pt", "storage '0' holds 16 bytes", "400"},
        {"h_overlap.pt", "tensor 'w'", "overlaps itself"},
        {"h_expand.pt", "tensor 'w'", "overlaps itself"},
        {"h_dtype_mismatch.pt", "storage '0'", "f32 and i64"},
        {"h_zip_bomb.pt", "data/0", "zip bomb"},
        {"h_zip_bomb_lying.pt", "inflates past", "zip bomb"},
        {"h_traversal.pt", "'arch/../../etc/data/0'", "path traversal"},
        {"h_absolute.pt", "'/etc/arch/data/0'", "absolute"},
        {"h_two_prefixes.pt", "'other/data/0'", "prefix"},
        {"h_no_prefix.pt", "'data.pkl'", "archive folder"},
        {"h_no_data_pkl.pt", "no data.pkl", NULL},
        {"h_duplicate.pt", "duplicate zip entry 'data/0'", NULL},
        {"h_legacy_truncated.pt", "legacy storage", "past the end"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char p[256];
        snprintf(p, sizeof p, FIX "%s", cases[i][0]);
        expect_fail(p, NULL, cases[i][1], cases[i][2]);
    }
    struct stat st;
    cr_assert_neq(stat("/tmp/anvil-pwned", &st), 0, "a hostile pickle ran a command");
}

Test(torchpt, not_a_checkpoint) {
    av_err e = {0};
    av_model *m = NULL;
    cr_assert_eq(pt_read_mem("GGUF....", 8, "x.pt", NULL, &m, &e), AV_EFORMAT);
    cr_assert(strstr(e.msg, "x.pt") && strstr(e.msg, "not a PyTorch checkpoint"), "%s", e.msg);
    cr_assert_eq(pt_read_mem("", 0, "x.pt", NULL, &m, &e), AV_EFORMAT);
    cr_assert_eq(pt_read("/nonexistent/x.pt", NULL, &m, &e), AV_EIO);
}

/* Every prefix and a sweep of single-byte corruptions: errors, never crashes. */
static void mutate_all(const char *path, int flips) {
    size_t n;
    unsigned char *b = slurp(path, &n);
    cr_assert(b);
    int ok = 0;
    for (size_t len = 0; len < n; len++) {
        unsigned char *c = malloc(len ? len : 1); /* exact size: ASan catches any over-read */
        memcpy(c, b, len);
        av_err e = {0};
        av_model *m = NULL;
        if (pt_read_mem(c, len, "trunc.pt", NULL, &m, &e) == 0) {
            ok++;
            av_model_free(m);
        } else {
            cr_assert(e.msg[0]);
        }
        free(c);
    }
    if (flips) {
        unsigned char *c = malloc(n);
        for (size_t i = 0; i < n; i++) {
            memcpy(c, b, n);
            c[i] ^= (unsigned char)(0x5a + i);
            av_err e = {0};
            av_model *m = NULL;
            if (pt_read_mem(c, n, "flip.pt", NULL, &m, &e) == 0) av_model_free(m);
        }
        free(c);
    }
    cr_assert_leq(ok, 2, "%s: %d truncated prefixes accepted", path, ok);
    free(b);
}

Test(torchpt, truncation_never_crashes) {
    mutate_all(FIX "strided.pt", 1);
    mutate_all(FIX "legacy_small.pt", 1);
    mutate_all(FIX "nested.pt", 1);
    mutate_all(FIX "proto5.pt", 1);
}

/* ---------------- the unpickler directly ---------------- */

static int pk(const char *bytes, size_t n, av_err *e, pk_result **r) {
    return pk_load((const uint8_t *)bytes, n, "t.pkl", r, NULL, e);
}

Test(pickle, values) {
    /* {'a': [1, -2, 70000, 2**40, 1.5, None, True, (), b'xy'], 'a': 3}: later duplicate wins */
    static const char p[] = "\x80\x02}q\x00(X\x01\x00\x00\x00" "a]q\x01(K\x01J\xfe\xff\xff\xff" "J\x70\x11\x01\x00"
                            "\x8a\x06\x00\x00\x00\x00\x00\x01G?\xf8\x00\x00\x00\x00\x00\x00N\x88)C\x02xyh\x00" "e"
                            "X\x01\x00\x00\x00" "aK\x03u.";
    av_err e = {0};
    pk_result *r = NULL;
    size_t used = 0;
    cr_assert_eq(pk_load((const uint8_t *)p, sizeof p - 1, "t.pkl", &r, &used, &e), 0, "%s", e.msg);
    cr_assert_eq(used, sizeof p - 1);
    pk_value *root = pk_root(r);
    cr_assert_eq(root->type, PK_DICT);
    pk_value *a = pk_dict_get(root, "a");
    cr_assert(a->type == PK_INT && a->u.i.v == 3);
    pk_value *l = root->u.seq.items[1];
    cr_assert_eq(l->type, PK_LIST);
    cr_assert_eq(l->u.seq.n, 10, "%zu", l->u.seq.n);
    cr_assert_eq(l->u.seq.items[0]->u.i.v, 1);
    cr_assert_eq(l->u.seq.items[1]->u.i.v, -2);
    cr_assert_eq(l->u.seq.items[2]->u.i.v, 70000);
    cr_assert_eq(l->u.seq.items[3]->u.i.v, (int64_t)1 << 40);
    cr_assert_eq(l->u.seq.items[4]->u.f, 1.5);
    cr_assert_eq(l->u.seq.items[5]->type, PK_NONE);
    cr_assert(l->u.seq.items[6]->type == PK_BOOL && l->u.seq.items[6]->u.b);
    cr_assert(l->u.seq.items[7]->type == PK_TUPLE && l->u.seq.items[7]->u.seq.n == 0);
    cr_assert(l->u.seq.items[8]->type == PK_BYTES && l->u.seq.items[8]->u.s.n == 2);
    cr_assert_eq(l->u.seq.items[9], root, "BINGET returns the same (memoized) object");
    pk_result_free(r);
}

Test(pickle, disallowed_opcodes_named) {
    static const struct { char op; const char *name; } ops[] = {
        {'i', "INST"}, {'o', "OBJ"}, {'P', "PERSID"}, {'I', "INT"}, {'L', "LONG"}, {'F', "FLOAT"}, {'S', "STRING"},
        {'V', "UNICODE"}, {'g', "GET"}, {'p', "PUT"}, {(char)0x82, "EXT1"}, {(char)0x92, "NEWOBJ_EX"},
        {(char)0x8f, "EMPTY_SET"}, {(char)0x96, "BYTEARRAY8"}, {(char)0x97, "NEXT_BUFFER"}};
    for (size_t i = 0; i < sizeof ops / sizeof *ops; i++) {
        char p[8] = {(char)0x80, 2, ops[i].op, '.', 0};
        av_err e = {0};
        pk_result *r = NULL;
        cr_assert_eq(pk(p, 4, &e, &r), AV_EFORMAT, "%s accepted", ops[i].name);
        char want[64];
        snprintf(want, sizeof want, "opcode %s (0x%02x) at offset 2 is not allowed", ops[i].name, (unsigned char)ops[i].op);
        cr_assert(strstr(e.msg, want), "%s", e.msg);
        cr_assert(strstr(e.msg, "t.pkl"));
    }
}

Test(pickle, limits) {
    av_err e = {0};
    pk_result *r = NULL;
    /* 10^6 nested MARKs in memory */
    size_t n = 1000000;
    char *p = malloc(n + 4);
    p[0] = (char)0x80;
    p[1] = 2;
    memset(p + 2, '(', n);
    p[n + 2] = 'N';
    p[n + 3] = '.';
    cr_assert_eq(pk(p, n + 4, &e, &r), AV_EFORMAT);
    cr_assert(strstr(e.msg, "MARK nesting deeper than 4096"), "%s", e.msg);
    /* 10^6 nested empty lists appended into each other: no recursion anywhere */
    for (size_t i = 0; i < n / 2; i++) {
        p[2 + 2 * i] = ']';
        p[3 + 2 * i] = i ? 'a' : ']';
    }
    p[n + 2] = 'a';
    cr_assert_eq(pk(p, n + 4, &e, &r), 0, "%s", e.msg);
    pk_result_free(r);
    free(p);
    /* underflows, truncations, bad memo */
#define S(x) x, sizeof(x) - 1
    static const struct { const char *p; size_t n; const char *w; } bad[] = {
        {S("\x80\x02."), "underflow"},
        {S("\x80\x02N"), "no STOP"},
        {S("\x80\x02t."), "no MARK"},
        {S("\x80\x02h\x05."), "memo index 5"},
        {S("\x80\x02Nq"), "BINPUT"},
        {S("\x80\x02J\x01\x02"), "BININT"},
        {S("\x80\x02G\x01\x02"), "BINFLOAT"},
        {S("\x80\x02\x8a\x09\x01"), "LONG1"},
        {S("\x80\x02T\xff\xff\xff\xff."), "negative"},
        {S("\x80\x02\x8d\xff\xff\xff\xff\xff\xff\xff\xff."), "BINUNICODE8"},
        {S("\x80\x02" "cos\nsys"), "newline"},
        {S("\x80\x09N."), "protocol 9"},
        {S("\x80\x02(N)R."), "callable is a None"},
        {S("\x80\x02" "ccollections\nOrderedDict\nN\x85R."), "OrderedDict"},
        {S("\x80\x02" "ctorch._utils\n_rebuild_tensor_v2\n)R."), "takes 6 arguments"},
        {S("\x80\x02N]a."), "APPEND"},
        {S("\x80\x02]N(Nu."), "SETITEMS"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        e = (av_err){0};
        cr_assert_neq(pk(bad[i].p, bad[i].n, &e, &r), 0, "case %zu accepted", i);
        cr_assert(strstr(e.msg, bad[i].w), "case %zu: '%s' not in %s", i, bad[i].w, e.msg);
    }
}
