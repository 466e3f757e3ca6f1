/* test_quant.c — core/quant.h against llama-quantize (commit 3f545bec):
 * per-tensor types and sha256 of every tensor's bytes for both reference
 * models and every file type (../shared/reference/llamacpp/quant-hashes*.json),
 * fallback warnings and refusals (quant-meta.json), imatrix (GGUF and .dat),
 * plus round-trip error bounds and thread independence on random data. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gguf.h"
#include "quant.h"
#include "testutil.h"

/* ------------------------------------------------------------------ sha256 */

typedef struct { uint32_t h[8]; uint64_t len; uint8_t buf[64]; size_t n; } sha256_ctx;

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(sha256_ctx *c, const uint8_t *p) {
    uint32_t w[64], a, b, cc, d, e, f, g, h;
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    a = c->h[0], b = c->h[1], cc = c->h[2], d = c->h[3], e = c->h[4], f = c->h[5], g = c->h[6], h = c->h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & cc) ^ (b & cc));
        h = g, g = f, f = e, e = d + t1, d = cc, cc = b, b = a, a = t1 + t2;
    }
    c->h[0] += a, c->h[1] += b, c->h[2] += cc, c->h[3] += d, c->h[4] += e, c->h[5] += f, c->h[6] += g, c->h[7] += h;
}

static void sha256_hex(const void *data, size_t n, char out[65]) {
    sha256_ctx c = { { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 },
                     0, { 0 }, 0 };
    const uint8_t *p = data;
    size_t i = 0;
    for (; i + 64 <= n; i += 64) sha256_block(&c, p + i);
    uint8_t tail[128] = { 0 };
    size_t r = n - i;
    memcpy(tail, p + i, r);
    tail[r] = 0x80;
    size_t tl = r + 1 + 8 <= 64 ? 64 : 128;
    uint64_t bits = (uint64_t)n * 8;
    for (int k = 0; k < 8; k++) tail[tl - 1 - k] = (uint8_t)(bits >> (8 * k));
    for (size_t k = 0; k < tl; k += 64) sha256_block(&c, tail + k);
    for (int k = 0; k < 8; k++) sprintf(out + 8 * k, "%08x", c.h[k]);
}

Test(quant, sha256_known_answers) {
    char h[65];
    sha256_hex("", 0, h);
    cr_assert_str_eq(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    sha256_hex("abc", 3, h);
    cr_assert_str_eq(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *s = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    sha256_hex(s, strlen(s), h);
    cr_assert_str_eq(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

/* ------------------------------------------------------------------ helpers */

static json_t *load_json(const char *rel) {
    json_error_t je;
    json_t *j = json_load_file(shared_path(rel), 0, &je);
    cr_assert(j, "cannot read %s: %s", rel, je.text);
    return j;
}

static const char *TYPES[] = { "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K_S", "Q3_K_M",
                               "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "F16", "BF16" };
#define N_TYPES (sizeof TYPES / sizeof TYPES[0])

typedef struct { int tensors, matched, refusals_ok, refusals; } tally;

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Plan + quantize every tensor of model `key` for file type `tname` and
 * compare with the reference entry; returns mismatches (printed). */
static int check_type(av_model *m, const char *key, const char *tname, json_t *ref, json_t *meta,
                      const q_imatrix *im, tally *t) {
    const q_ftype_info *ft = q_ftype_from_name(tname);
    cr_assert(ft, "unknown type %s", tname);
    q_plan_opts o = { .has_imatrix = im != NULL, .output_type = -1, .token_embd_type = -1 };
    q_plan plan;
    av_err e = { 0 };
    int rc = q_plan_model(m, ft, &o, &plan, &e);
    json_t *err = json_object_get(ref, "error");
    if (err) {
        t->refusals++;
        /* llama-quantize: "warning: blk.0.ffn_down.weight ... no tensor type fallback is defined for type q8_0" */
        const char *want = json_string_value(err);
        char tensor[128] = "";
        sscanf(want, "warning: %127s", tensor);
        const char *why = strstr(want, "no tensor type fallback is defined for type");
        char phrase[128] = "";
        if (why) sscanf(why, "%127[^|]", phrase);
        for (size_t l = strlen(phrase); l && phrase[l - 1] == ' '; l--) phrase[l - 1] = 0;
        int ok = rc == AV_EUNSUPPORTED && tensor[0] && strstr(e.msg, tensor) && phrase[0] && strstr(e.msg, phrase);
        if (!ok) cr_log_error("%s %s: expected refusal naming %s, got rc %d: %s", key, tname, tensor, rc, e.msg);
        t->refusals_ok += ok;
        return !ok;
    }
    cr_assert_eq(rc, 0, "%s %s: %s", key, tname, e.msg);
    int bad = 0;
    /* fallback warnings, as a multiset (llama.cpp prints them in its own order) */
    if (meta) {
        json_t *warns = json_object_get(meta, "fallback_warnings");
        size_t nw = 0, nref = 0;
        char **ours = calloc(plan.n + 1, sizeof *ours), **theirs = calloc(json_array_size(warns) + 1, sizeof *theirs);
        for (size_t i = 0; i < plan.n; i++)
            if (plan.items[i].warning) ours[nw++] = plan.items[i].warning;
        for (size_t i = 0; i < json_array_size(warns); i++) {
            const char *w = json_string_value(json_array_get(warns, i));
            if (!strncmp(w, "warning: ", 9)) theirs[nref++] = (char *)w;
            else {
                int nf = -1, nt = -1;
                sscanf(w, "llama_model_quantize_impl: WARNING: %d of %d", &nf, &nt);
                if (nf != plan.n_fallback || nt != (int)m->n_tensors) {
                    cr_log_error("%s %s: %d of %zu fallbacks, llama.cpp %d of %d", key, tname, plan.n_fallback,
                                 m->n_tensors, nf, nt);
                    bad++;
                }
            }
        }
        qsort(ours, nw, sizeof *ours, cmp_str);
        qsort(theirs, nref, sizeof *theirs, cmp_str);
        if (nw != nref) {
            cr_log_error("%s %s: %zu fallback warnings, llama.cpp %zu", key, tname, nw, nref);
            bad++;
        } else
            for (size_t i = 0; i < nw; i++)
                if (strcmp(ours[i], theirs[i])) {
                    cr_log_error("%s %s: warning\n  ours   %s\n  theirs %s", key, tname, ours[i], theirs[i]);
                    bad++;
                }
        free(ours);
        free(theirs);
        if (plan.n_fallback == 0 && nref == 0 && json_array_size(warns) != 0) bad++;
    }
    cr_assert_eq(json_object_size(ref), m->n_tensors, "%s %s: tensor count", key, tname);
    for (size_t i = 0; i < m->n_tensors; i++) {
        const av_tensor *tt = &m->tensors[i];
        json_t *r = json_object_get(ref, tt->name);
        cr_assert(r, "%s %s: %s missing in the reference", key, tname, tt->name);
        t->tensors++;
        const char *want_type = json_string_value(json_object_get(r, "ggml_type"));
        size_t want_n = (size_t)json_integer_value(json_object_get(r, "n_bytes"));
        const char *want_sha = json_string_value(json_object_get(r, "sha256"));
        av_dtype to = plan.items[i].type;
        if (strcasecmp(av_dtype_name(to), want_type)) {
            cr_log_error("%s %s: %s type %s, llama.cpp %s", key, tname, tt->name, av_dtype_name(to), want_type);
            bad++;
            continue;
        }
        const float *w = NULL;
        if (im) cr_assert_eq(q_imatrix_for_tensor(im, tt, &w, &e), 0, "%s", e.msg);
        void *data = NULL;
        size_t nb = 0;
        char sha[65];
        if (plan.items[i].quantize) {
            cr_assert_eq(q_quantize_tensor(tt, to, w, &data, &nb, &e), 0, "%s %s: %s", key, tname, e.msg);
            sha256_hex(data, nb, sha);
        } else {
            int ok;
            nb = av_tensor_src_nbytes(tt, &ok);
            sha256_hex(tt->data, nb, sha);
        }
        free(data);
        if (nb != want_n || strcmp(sha, want_sha)) {
            cr_log_error("%s %s: %s (%s) %zu bytes sha %.16s, llama.cpp %zu bytes sha %.16s", key, tname, tt->name,
                         want_type, nb, sha, want_n, want_sha);
            bad++;
        } else
            t->matched++;
    }
    q_plan_release(&plan);
    return bad;
}

static void check_model(const char *key, const char *file) {
    json_t *hashes = load_json("reference/llamacpp/quant-hashes.json");
    json_t *meta = load_json("reference/llamacpp/quant-meta.json");
    av_model *m = NULL;
    av_err e = { 0 };
    cr_assert_eq(gguf_read(shared_path(file), &m, &e), 0, "%s", e.msg);
    tally t = { 0 };
    int bad = 0;
    for (size_t k = 0; k < N_TYPES; k++) {
        json_t *ref = json_object_get(json_object_get(hashes, key), TYPES[k]);
        cr_assert(ref, "%s %s not in quant-hashes.json", key, TYPES[k]);
        bad += check_type(m, key, TYPES[k], ref, json_object_get(json_object_get(meta, key), TYPES[k]), NULL, &t);
    }
    cr_log_info("%s: %d of %d tensor hashes equal llama-quantize's; %d of %d refusals reproduced", key, t.matched,
                t.tensors, t.refusals_ok, t.refusals);
    fprintf(stderr, "# %s: %d/%d tensor hashes match, %d/%d refusals\n", key, t.matched, t.tensors, t.refusals_ok,
            t.refusals);
    cr_expect_eq(bad, 0, "%s: %d mismatches", key, bad);
    av_model_free(m);
    json_decref(hashes);
    json_decref(meta);
}

Test(quant, stories_d256_every_type_matches_llama_quantize, .timeout = 120) {
    check_model("stories-d256", "reference/llamacpp/stories-d256-f32.gguf");
}

Test(quant, stories260K_fallbacks_and_refusals_match_llama_quantize, .timeout = 60) {
    check_model("stories260K", "reference/llamacpp/stories260K-f32.gguf");
}

static void check_imatrix(const char *imfile) {
    json_t *hashes = load_json("reference/llamacpp/quant-hashes-imatrix.json");
    json_t *meta = load_json("reference/llamacpp/quant-meta.json");
    json_t *models = json_object_get(hashes, "stories-d256");
    av_model *m = NULL;
    av_err e = { 0 };
    cr_assert_eq(gguf_read(shared_path("reference/llamacpp/stories-d256-f32.gguf"), &m, &e), 0, "%s", e.msg);
    q_imatrix *im = NULL;
    cr_assert_eq(q_imatrix_read(shared_path(imfile), &im, &e), 0, "%s", e.msg);
    cr_expect_eq(im->n, 28u);
    tally t = { 0 };
    int bad = 0;
    const char *tn;
    json_t *ref;
    json_object_foreach(models, tn, ref) {
        char mk[64];
        snprintf(mk, sizeof mk, "--imatrix imatrix-d256.gguf %s", tn);
        json_t *mm = json_object_get(json_object_get(meta, "stories-d256"), mk);
        bad += check_type(m, "stories-d256+imatrix", tn, ref, mm, im, &t);
    }
    fprintf(stderr, "# imatrix %s: %d/%d tensor hashes match\n", imfile, t.matched, t.tensors);
    cr_expect_gt(t.tensors, 0);
    cr_expect_eq(bad, 0, "%s: %d mismatches", imfile, bad);
    q_imatrix_free(im);
    av_model_free(m);
    json_decref(hashes);
    json_decref(meta);
}

Test(quant, imatrix_gguf_matches_llama_quantize, .timeout = 60) {
    check_imatrix("reference/llamacpp/imatrix-d256.gguf");
}

Test(quant, imatrix_dat_matches_llama_quantize, .timeout = 60) {
    check_imatrix("reference/llamacpp/imatrix-d256.dat");
}

/* --------------------------------------------------------------- imatrix IO */

Test(quant, imatrix_gguf_and_dat_agree) {
    q_imatrix *a = NULL, *b = NULL;
    av_err e = { 0 };
    cr_assert_eq(q_imatrix_read(shared_path("reference/llamacpp/imatrix-d256.gguf"), &a, &e), 0, "%s", e.msg);
    cr_assert_eq(q_imatrix_read(shared_path("reference/llamacpp/imatrix-d256.dat"), &b, &e), 0, "%s", e.msg);
    cr_expect_eq(a->n, b->n);
    cr_expect_eq(a->chunk_count, 588);
    cr_expect_str_eq(a->dataset, "eval-text.txt");
    int64_t total = 0, differ = 0;
    double worst = 0;
    for (size_t i = 0; i < a->n; i++) {
        const q_imatrix_entry *x = &a->e[i], *y = q_imatrix_find(b, x->name);
        cr_assert(y, "%s missing from the .dat", x->name);
        cr_assert_eq(x->n, y->n);
        for (int64_t k = 0; k < x->n; k++) {
            total++;
            if (x->values[k] != y->values[k]) {
                differ++;
                double r = fabs(x->values[k] - y->values[k]) / fabs(x->values[k]);
                if (r > worst) worst = r;
            }
        }
    }
    fprintf(stderr, "# imatrix .gguf vs .dat: %lld of %lld values differ (max rel %.3g)\n", (long long)differ,
            (long long)total, worst);
    cr_expect_lt(worst, 1e-6);
    q_imatrix_free(a);
    q_imatrix_free(b);
}

Test(quant, imatrix_rejects_malformed_files) {
    size_t n;
    unsigned char *dat = slurp(shared_path("reference/llamacpp/imatrix-d256.dat"), &n);
    cr_assert(dat);
    const char *p = tmp_path(".dat");
    av_err e = { 0 };
    q_imatrix *im = NULL;
    /* truncated in the middle of the first entry's values */
    cr_assert_eq(write_bytes(p, dat, 100), 0);
    cr_expect_eq(q_imatrix_read(p, &im, &e), AV_EFORMAT);
    cr_expect(strstr(e.msg, p) && strstr(e.msg, "past end"), "%s", e.msg);
    /* absurd entry count */
    int32_t bogus = -3;
    memcpy(dat, &bogus, 4);
    cr_assert_eq(write_bytes(p, dat, n), 0);
    cr_expect_eq(q_imatrix_read(p, &im, &e), AV_EFORMAT);
    cr_expect(strstr(e.msg, "entry count"), "%s", e.msg);
    /* a NaN value */
    unsigned char *d2 = slurp(shared_path("reference/llamacpp/imatrix-d256.dat"), &n);
    int32_t len;
    memcpy(&len, d2 + 4, 4);
    float nan = NAN;
    memcpy(d2 + 4 + 4 + len + 8, &nan, 4);
    cr_assert_eq(write_bytes(p, d2, n), 0);
    cr_expect_eq(q_imatrix_read(p, &im, &e), AV_EFORMAT);
    cr_expect(strstr(e.msg, "non-finite"), "%s", e.msg);
    cr_expect_null(im);
    unlink(p);
    cr_expect_eq(q_imatrix_read("/nonexistent/x.dat", &im, &e), AV_EIO);
    free(dat);
    free(d2);
}

/* -------------------------------------------------------------- ftypes, API */

Test(quant, ftype_names_and_aliases) {
    cr_expect_eq(q_ftype_from_name("q4_k_m")->ftype, Q_FTYPE_Q4_K_M);
    cr_expect_eq(q_ftype_from_name("Q4_K")->ftype, Q_FTYPE_Q4_K_M);
    cr_expect_eq(q_ftype_from_name("Q3_K")->ftype, Q_FTYPE_Q3_K_M);
    cr_expect_eq(q_ftype_from_name("15")->base, AV_Q4_K);
    cr_expect_eq(q_ftype_from_name("BF16")->base, AV_BF16);
    cr_expect_null(q_ftype_from_name("Q4_2"));
    cr_expect_null(q_ftype_from_name(""));
    size_t n;
    const q_ftype_info *l = q_ftype_list(&n);
    for (size_t k = 0; k < N_TYPES; k++) {
        int found = 0;
        for (size_t i = 0; i < n; i++) found |= !strcmp(l[i].name, TYPES[k]);
        cr_expect(found, "%s not listed", TYPES[k]);
    }
}

Test(quant, sizes_and_rejections) {
    cr_expect_eq(q_row_size(AV_Q4_K, 512), 288u);
    cr_expect_eq(q_row_size(AV_Q4_K, 100), 0u);
    cr_expect_eq(q_row_size(AV_Q8_0, 64), 68u);
    float x[64] = { 0 };
    uint8_t y[256];
    cr_expect_eq(q_quantize(AV_Q4_0, x, y, 1, 48, NULL), 0u);       /* not whole blocks */
    cr_expect_eq(q_quantize(AV_IQ2_XXS, x, y, 1, 256, NULL), 0u);   /* not implemented */
    cr_expect_eq(q_dequantize_row(AV_IQ2_XXS, y, x, 256), AV_EUNSUPPORTED);
    cr_expect_eq(q_dequantize_row(AV_Q8_0, y, x, 33), AV_EINVAL);
}

/* --------------------------------------------------------- random round trips */

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void) { /* uniform in [-1, 1) */
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2 - 1;
}
static float gauss(void) {
    float s = 0;
    for (int i = 0; i < 12; i++) s += frand();
    return s * 0.5f;
}

/* quantize -> dequantize relative RMS error (RMS(x - y) / RMS(x)) of Gaussian
 * rows with 5x outliers every 97 values, per type, with and without importance
 * weights. Bounds are ~1.25x what this data measured (Q4_0 0.115, Q4_1 0.089,
 * Q5_0 0.058, Q5_1 0.043, Q8_0 0.0072, Q2_K 0.33, Q3_K 0.18, Q4_K 0.083,
 * Q5_K 0.042, Q6_K 0.022, Q8_K 0.015, F16 0.0002, BF16 0.0017): a broken
 * scale search or bit packing lands far above them. */
Test(quant, round_trip_error_bounds) {
    static const struct { av_dtype t; double bound; } T[] = {
        { AV_Q4_0, 0.14 }, { AV_Q4_1, 0.11 }, { AV_Q5_0, 0.07 }, { AV_Q5_1, 0.055 }, { AV_Q8_0, 0.009 },
        { AV_Q8_1, 0.009 }, { AV_Q2_K, 0.40 }, { AV_Q3_K, 0.22 }, { AV_Q4_K, 0.10 }, { AV_Q5_K, 0.052 },
        { AV_Q6_K, 0.028 }, { AV_Q8_K, 0.018 }, { AV_F16, 0.0005 }, { AV_BF16, 0.003 },
    };
    enum { R = 16, C = 1024 };
    float *x = malloc(sizeof(float) * R * C), *y = malloc(sizeof(float) * R * C), *w = malloc(sizeof(float) * C);
    uint8_t *q = malloc(R * C * 4), *q2 = malloc(R * C * 4);
    for (int i = 0; i < R * C; i++) x[i] = gauss() * (1 + (i % 97 == 0) * 4.0f); /* some outliers */
    for (int i = 0; i < C; i++) w[i] = 0.1f + fabsf(frand() * gauss()); /* positive, uneven */
    for (size_t k = 0; k < sizeof T / sizeof T[0]; k++) {
        for (int with_w = 0; with_w < 2; with_w++) {
            const float *iw = with_w ? w : NULL;
            size_t nb = q_quantize(T[k].t, x, q, R, C, iw);
            cr_assert_eq(nb, R * q_row_size(T[k].t, C), "%s", av_dtype_name(T[k].t));
            /* the OpenMP path gives the single-thread bytes */
            cr_assert_eq(q_quantize_ref(T[k].t, x, q2, R, C, iw), nb);
            cr_expect_eq(memcmp(q, q2, nb), 0, "%s: parallel bytes differ", av_dtype_name(T[k].t));
            cr_assert_eq(q_dequantize_row(T[k].t, q, y, R * C), 0);
            double se = 0, sx = 0;
            for (int i = 0; i < R * C; i++) se += (double)(x[i] - y[i]) * (x[i] - y[i]), sx += (double)x[i] * x[i];
            double rel = sqrt(se / sx);
            cr_expect_lt(rel, T[k].bound, "%s%s: relative RMS error %.4f >= %.4f", av_dtype_name(T[k].t),
                         with_w ? " (imatrix)" : "", rel, T[k].bound);
        }
    }
    /* all-zero rows quantize to zeros and back without NaN */
    memset(x, 0, sizeof(float) * C);
    for (size_t k = 0; k < sizeof T / sizeof T[0]; k++) {
        q_quantize(T[k].t, x, q, 1, C, NULL);
        q_dequantize_row(T[k].t, q, y, C);
        for (int i = 0; i < C; i++) cr_assert_eq(y[i], 0.0f, "%s zero row", av_dtype_name(T[k].t));
    }
    free(x), free(y), free(w), free(q), free(q2);
}

/* F16/BF16 rows round to nearest even, ties and subnormals included. */
Test(quant, f16_bf16_rows) {
    float x[8] = { 1.0f, 1.0f + 1.0f / 2048, 1.0f + 3.0f / 2048, 65520.0f, 5.96e-8f, -0.0f, 1.00390625f, 1e-39f };
    uint16_t h[8], b[8];
    cr_assert_eq(q_quantize(AV_F16, x, h, 1, 8, NULL), 16u);
    cr_assert_eq(q_quantize(AV_BF16, x, b, 1, 8, NULL), 16u);
    cr_expect_eq(h[0], 0x3c00);
    cr_expect_eq(h[1], 0x3c00); /* tie -> even */
    cr_expect_eq(h[2], 0x3c02); /* tie -> even (up) */
    cr_expect_eq(h[3], 0x7c00); /* overflow -> inf */
    cr_expect_eq(h[4], 0x0001); /* smallest subnormal */
    cr_expect_eq(h[5], 0x8000);
    cr_expect_eq(b[6], 0x3f80); /* 1 + 2^-8: tie -> even */
    cr_expect_eq(b[7], 0x000b); /* subnormal rounded, not flushed */
}

/* The dtype traits (av_convert, writers) use the same kernels: converting
 * f32 -> quant -> f32 through av_convert equals q_quantize + dequantize. */
Test(quant, traits_wire_the_reference_kernels) {
    static const av_dtype T[] = { AV_Q4_0, AV_Q4_1, AV_Q5_0, AV_Q5_1, AV_Q8_0, AV_Q8_1,
                                  AV_Q2_K, AV_Q3_K, AV_Q4_K, AV_Q5_K, AV_Q6_K, AV_Q8_K };
    enum { N = 4096 };
    float *x = malloc(N * sizeof(float)), *y = malloc(N * sizeof(float)), *z = malloc(N * sizeof(float));
    uint8_t *a = malloc(N * 2), *b = malloc(N * 2);
    for (int i = 0; i < N; i++) x[i] = gauss();
    av_err e = { 0 };
    for (size_t k = 0; k < sizeof T / sizeof T[0]; k++) {
        size_t nb = q_quantize(T[k], x, a, 1, N, NULL);
        cr_assert_eq(av_convert(x, AV_F32, b, T[k], N, &e), 0, "%s", e.msg);
        cr_expect_eq(memcmp(a, b, nb), 0, "%s: av_convert bytes differ", av_dtype_name(T[k]));
        cr_assert_eq(av_convert(b, T[k], y, AV_F32, N, &e), 0, "%s", e.msg);
        q_dequantize_row(T[k], a, z, N);
        cr_expect_eq(memcmp(y, z, N * sizeof(float)), 0, "%s: to_float differs", av_dtype_name(T[k]));
    }
    free(x), free(y), free(z), free(a), free(b);
}

/* Per-channel INT8 (--int8): hand values and the half-step error bound. */
Test(quant, int8_rows_hand_values_and_bound) {
    const float w[2][4] = {{1.0f, -2.0f, 0.5f, 0.0f}, {0.0f, 1.0f, 2.0f, 3.0f}};
    int8_t qs[8];
    uint8_t qa[8], zp[2];
    float ss[2], sa[2];
    q_int8_rows(&w[0][0], 2, 4, 0, qs, ss, NULL);
    cr_assert_float_eq(ss[0], 2.0f / 127, 1e-9);
    cr_assert(qs[0] == 64 && qs[1] == -127 && qs[2] == 32 && qs[3] == 0, "%d %d %d %d", qs[0], qs[1], qs[2], qs[3]);
    q_int8_rows(&w[0][0], 2, 4, 1, qa, sa, zp);
    cr_assert_float_eq(sa[1], 3.0f / 255, 1e-9);
    cr_assert(zp[1] == 0 && qa[4] == 0 && qa[5] == 85 && qa[6] == 170 && qa[7] == 255);
    cr_assert_float_eq(sa[0], 3.0f / 255, 1e-9); /* range [-2, 1] */
    cr_assert_eq(zp[0], 170);
    /* random rows: every weight within half a step of its reconstruction */
    uint64_t st = 5;
    const int R = 7, C = 300;
    float *x = malloc(sizeof(float) * R * C), *s = malloc(sizeof(float) * R);
    int8_t *q8 = malloc((size_t)R * C);
    uint8_t *u8 = malloc((size_t)R * C), *z = malloc((size_t)R);
    for (int i = 0; i < R * C; i++) {
        st = st * 6364136223846793005ULL + 1442695040888963407ULL;
        x[i] = (float)((double)(st >> 11) / 9007199254740992.0 * 4.0 - 1.5);
    }
    q_int8_rows(x, R, C, 0, q8, s, NULL);
    for (int i = 0; i < R * C; i++) cr_assert_leq(fabsf(x[i] - q8[i] * s[i / C]), s[i / C] * 0.5f + 1e-6f);
    q_int8_rows(x, R, C, 1, u8, s, z);
    for (int i = 0; i < R * C; i++)
        cr_assert_leq(fabsf(x[i] - ((int)u8[i] - z[i / C]) * s[i / C]), s[i / C] * 0.5f + 1e-6f);
    free(x), free(s), free(q8), free(u8), free(z);
}
