/* test_dtype.c — core/dtype.{h,c} and av_convert (core/tensor.c).
 *
 * Expected values come from numpy and PyTorch through the fixtures in
 * tests/fixtures/dtype/ (made by scripts/fixtures/gen_dtype_fixtures.py, whose
 * header documents the layouts), from llama.cpp's ggml type_traits table, or
 * from the IEEE/bfloat16 definitions themselves. The SIMD kernels are further
 * compared bit for bit with their scalar _ref twins on random bit patterns.
 *
 * NaN rule (f16 only). numpy (npy_floatbits_to_halfbits /
 * npy_halfbits_to_floatbits) keeps a signaling NaN signaling: f32 0x7f800001 ->
 * f16 0x7c01, f16 0x7c01 -> f32 0x7f802000. x86 F16C (VCVTPS2PH / VCVTPH2PS,
 * our SIMD kernel, which the scalar twin follows so both paths agree) sets the
 * quiet bit: 0x7e00 and 0x7fc02000. The generator found exactly these cases
 * differing (149 of 283 NaN inputs, 1022 of 2046 f16 NaN patterns; all of
 * them signaling NaNs). So for a NaN input the result must be a NaN of the
 * same sign, and when the input NaN is quiet it must also be bit-exact (numpy
 * and F16C agree there). Every non-NaN case is bit-exact. */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "testutil.h"
#include "dtype.h"
#include "err.h"
#include "tensor.h"

#define FIX "tests/fixtures/dtype/"

/* ------------------------------------------------------------------ helpers */

static uint32_t fbits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float bitsf(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const unsigned char *p) { return rd32(p) | (uint64_t)rd32(p + 4) << 32; }
static uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }

/* splitmix64, as in gen_dtype_fixtures.py */
static uint64_t sm64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static unsigned char *load_fixture(const char *name, size_t *len) {
    char path[256];
    snprintf(path, sizeof path, FIX "%s", name);
    unsigned char *b = slurp(path, len);
    cr_assert_not_null(b, "cannot read %s (run from the repo root; regenerate with "
                          "scripts/fixtures/gen_dtype_fixtures.py)", path);
    return b;
}

static int f32_is_nan(uint32_t u) { return (u & 0x7fffffffu) > 0x7f800000u; }
static int f16_is_nan(uint16_t h) { return (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu); }

/* f32 -> f16 result check under the NaN rule in the file comment. */
static int f16_ok(uint32_t in, uint16_t want, uint16_t got) {
    if (!f32_is_nan(in)) return got == want;
    if (!f16_is_nan(got) || (got & 0x8000u) != (in >> 16 & 0x8000u)) return 0;
    return (in & 0x400000u) ? got == want : 1;
}

/* f16 -> f32 result check under the NaN rule. */
static int f32_ok(uint16_t in, uint32_t want, uint32_t got) {
    if (!f16_is_nan(in)) return got == want;
    if (!f32_is_nan(got) || (got & 0x80000000u) != ((uint32_t)(in & 0x8000u) << 16)) return 0;
    return (in & 0x200u) ? got == want : 1;
}

/* ------------------------------------------------------------ f16 vs numpy */

typedef struct {
    unsigned char *buf;
    uint32_t n_listed, n_gen, n;
    float *in;          /* n inputs: listed, then generated */
    uint16_t *want;     /* numpy's f16 bits */
} f16_cases;

static void load_f16_cases(f16_cases *c) {
    size_t len;
    c->buf = load_fixture("f16_cases.bin", &len);
    cr_assert(len >= 32 && !memcmp(c->buf, "AVF16CS1", 8), "f16_cases.bin: bad magic");
    c->n_listed = rd32(c->buf + 8);
    c->n_gen = rd32(c->buf + 12);
    uint64_t seed = rd64(c->buf + 16), fnv_want = rd64(c->buf + 24);
    c->n = c->n_listed + c->n_gen;
    cr_assert_eq(len, 32 + 4 * (size_t)c->n_listed + 2 * (size_t)c->n, "f16_cases.bin: size %zu", len);
    /* not a vacuous fixture */
    cr_assert_gt(c->n_listed, 10000);
    cr_assert_gt(c->n_gen, 100000);
    c->in = malloc(c->n * sizeof(float));
    c->want = malloc(c->n * sizeof(uint16_t));
    cr_assert(c->in && c->want);
    for (uint32_t i = 0; i < c->n_listed; i++) c->in[i] = bitsf(rd32(c->buf + 32 + 4 * (size_t)i));
    uint64_t s = seed, fnv = 0xcbf29ce484222325ull;
    for (uint32_t k = 0; k < c->n_gen; k++) {
        uint64_t r = sm64(&s);
        uint32_t hi = (uint32_t)(r >> 32);
        uint32_t b = k % 4 == 0 ? hi : (hi & 0x807fffffu) | ((101u + (uint32_t)r % 44u) << 23);
        c->in[c->n_listed + k] = bitsf(b);
        for (int j = 0; j < 4; j++) fnv = (fnv ^ ((b >> (8 * j)) & 0xff)) * 0x100000001b3ull;
    }
    cr_assert_eq(fnv, fnv_want, "generated inputs differ from the script's (fnv %#llx, file %#llx)",
                 (unsigned long long)fnv, (unsigned long long)fnv_want);
    const unsigned char *o = c->buf + 32 + 4 * (size_t)c->n_listed;
    for (uint32_t i = 0; i < c->n; i++) c->want[i] = rd16(o + 2 * (size_t)i);
}

static void free_f16_cases(f16_cases *c) { free(c->buf); free(c->in); free(c->want); }

/* Count mismatches of got[] against numpy and log the first few. */
static int check_f16(const char *what, const f16_cases *c, const uint16_t *got, uint32_t off) {
    int bad = 0;
    for (uint32_t i = 0; i + off < c->n; i++) {
        uint32_t in = fbits(c->in[i + off]);
        uint16_t w = c->want[i + off];
        if (!f16_ok(in, w, got[i]) && bad++ < 10)
            cr_log_error("%s: case %u: f32 %#010x (%.9g) -> %#06x, numpy %#06x",
                         what, i + off, in, (double)c->in[i + off], got[i], w);
    }
    return bad;
}

Test(f16_numpy, f32_to_f16_scalar_ref_and_simd) {
    f16_cases c;
    load_f16_cases(&c);
    uint16_t *got = malloc(c.n * sizeof(uint16_t));
    cr_assert_not_null(got);
    int nan_cases = 0, ties = 0;
    for (uint32_t i = 0; i < c.n; i++) {
        nan_cases += f32_is_nan(fbits(c.in[i]));
        ties += (fbits(c.in[i]) & 0x1fffu) == 0x1000u && (fbits(c.in[i]) & 0x7f800000u) >= 0x38800000u;
    }
    cr_assert_gt(nan_cases, 200, "fixture has NaN cases");
    cr_assert_gt(ties, 2000, "fixture has f16 normal ties");

    for (uint32_t i = 0; i < c.n; i++) got[i] = av_f32_to_f16(c.in[i]);
    int bad = check_f16("av_f32_to_f16", &c, got, 0);
    av_f32_to_f16_row_ref(c.in, got, c.n);
    bad += check_f16("av_f32_to_f16_row_ref", &c, got, 0);
    av_f32_to_f16_row(c.in, got, c.n);
    bad += check_f16("av_f32_to_f16_row", &c, got, 0);
    /* shifted by one and three: other elements land in the SIMD tail */
    av_f32_to_f16_row(c.in + 1, got, c.n - 1);
    bad += check_f16("av_f32_to_f16_row+1", &c, got, 1);
    av_f32_to_f16_row(c.in + 3, got, c.n - 3);
    bad += check_f16("av_f32_to_f16_row+3", &c, got, 3);
    cr_expect_eq(bad, 0, "%d f32->f16 results differ from numpy", bad);
    free(got);
    free_f16_cases(&c);
}

Test(f16_numpy, f16_to_f32_all_patterns) {
    size_t len;
    unsigned char *b = load_fixture("f16_to_f32_all.bin", &len);
    cr_assert_eq(len, 65536 * 4);
    uint16_t *h = malloc(65536 * 2);
    float *got = malloc(65536 * 4);
    cr_assert(h && got);
    for (int i = 0; i < 65536; i++) h[i] = (uint16_t)i;
    int bad = 0;
    for (int v = 0; v < 4; v++) {
        const char *what[] = { "av_f16_to_f32", "av_f16_to_f32_row_ref", "av_f16_to_f32_row",
                               "av_f16_to_f32_row+5" };
        int off = v == 3 ? 5 : 0;
        if (v == 0) for (int i = 0; i < 65536; i++) got[i] = av_f16_to_f32(h[i]);
        if (v == 1) av_f16_to_f32_row_ref(h, got, 65536);
        if (v == 2) av_f16_to_f32_row(h, got, 65536);
        if (v == 3) av_f16_to_f32_row(h + off, got, 65536 - off);
        for (int i = off; i < 65536; i++) {
            uint32_t w = rd32(b + 4 * (size_t)i), g = fbits(got[i - off]);
            if (!f32_ok((uint16_t)i, w, g) && bad++ < 10)
                cr_log_error("%s: f16 %#06x -> %#010x, numpy %#010x", what[v], i, g, w);
        }
    }
    cr_expect_eq(bad, 0, "%d f16->f32 results differ from numpy", bad);
    /* spot-check the fixture itself against IEEE facts, so a broken file cannot pass */
    cr_expect_eq(rd32(b + 4 * 0x3c00), 0x3f800000u);      /* 1.0 */
    cr_expect_eq(rd32(b + 4 * 0x7bff), fbits(65504.0f));  /* f16 max */
    cr_expect_eq(rd32(b + 4 * 0x0001), fbits(ldexpf(1, -24)));
    cr_expect_eq(rd32(b + 4 * 0xfc00), 0xff800000u);      /* -inf */
    free(h); free(got); free(b);
}

/* --------------------------------------------------------- bf16/f16 vs torch */

typedef struct {
    char name[57];
    uint32_t n;
    float *x;
    uint16_t *bf16, *f16;
} torch_tensor;

static int load_torch(torch_tensor *t, int max) {
    size_t len;
    unsigned char *b = load_fixture("torch_bf16_f16.bin", &len);
    cr_assert(len >= 16 && !memcmp(b, "AVTORCH1", 8), "torch_bf16_f16.bin: bad magic");
    int nt = (int)rd32(b + 8);
    cr_assert(nt >= 2 && nt <= max, "torch_bf16_f16.bin: %d tensors", nt);
    size_t off = 16 + 64 * (size_t)nt;
    for (int k = 0; k < nt; k++) {
        const unsigned char *e = b + 16 + 64 * (size_t)k;
        memcpy(t[k].name, e, 56);
        t[k].name[56] = 0;
        t[k].n = rd32(e + 56);
        cr_assert(off + 8 * (size_t)t[k].n <= len, "torch_bf16_f16.bin truncated at %s", t[k].name);
        t[k].x = malloc(t[k].n * 4);
        t[k].bf16 = malloc(t[k].n * 2);
        t[k].f16 = malloc(t[k].n * 2);
        cr_assert(t[k].x && t[k].bf16 && t[k].f16);
        for (uint32_t i = 0; i < t[k].n; i++) {
            t[k].x[i] = bitsf(rd32(b + off + 4 * (size_t)i));
            t[k].bf16[i] = rd16(b + off + 4 * (size_t)t[k].n + 2 * (size_t)i);
            t[k].f16[i] = rd16(b + off + 6 * (size_t)t[k].n + 2 * (size_t)i);
        }
        off += 8 * (size_t)t[k].n;
    }
    cr_assert_eq(off, len, "torch_bf16_f16.bin: trailing bytes");
    cr_assert_str_eq(t[0].name, "model.embed_tokens.weight");
    cr_assert_eq(t[0].n, 512 * 64);
    cr_assert_str_eq(t[1].name, "model.layers.0.mlp.down_proj.weight");
    cr_assert_eq(t[1].n, 64 * 172);
    free(b);
    return nt;
}

static int cmp_u16(const char *what, const torch_tensor *t, const uint16_t *want, const uint16_t *got) {
    int bad = 0;
    for (uint32_t i = 0; i < t->n; i++)
        if (got[i] != want[i] && bad++ < 10)
            cr_log_error("%s %s[%u]: f32 %#010x (%.9g) -> %#06x, torch %#06x", what, t->name, i,
                         fbits(t->x[i]), (double)t->x[i], got[i], want[i]);
    return bad;
}

/* which = 0: bf16, 1: f16 */
static void torch_check(int which) {
    torch_tensor t[4];
    int nt = load_torch(t, 4), bad = 0;
    for (int k = 0; k < nt; k++) {
        const uint16_t *want = which ? t[k].f16 : t[k].bf16;
        uint16_t *got = malloc(t[k].n * 2);
        cr_assert_not_null(got);
        av_err err = { 0 };
        for (uint32_t i = 0; i < t[k].n; i++) got[i] = which ? av_f32_to_f16(t[k].x[i]) : av_f32_to_bf16(t[k].x[i]);
        bad += cmp_u16(which ? "av_f32_to_f16" : "av_f32_to_bf16", &t[k], want, got);
        memset(got, 0, t[k].n * 2);
        (which ? av_f32_to_f16_row_ref : av_f32_to_bf16_row_ref)(t[k].x, got, t[k].n);
        bad += cmp_u16(which ? "av_f32_to_f16_row_ref" : "av_f32_to_bf16_row_ref", &t[k], want, got);
        memset(got, 0, t[k].n * 2);
        (which ? av_f32_to_f16_row : av_f32_to_bf16_row)(t[k].x, got, t[k].n);
        bad += cmp_u16(which ? "av_f32_to_f16_row" : "av_f32_to_bf16_row", &t[k], want, got);
        memset(got, 0, t[k].n * 2);
        cr_assert_eq(av_convert(t[k].x, AV_F32, got, which ? AV_F16 : AV_BF16, t[k].n, &err), 0, "%s", err.msg);
        bad += cmp_u16("av_convert", &t[k], want, got);
        free(got);
        free(t[k].x); free(t[k].bf16); free(t[k].f16);
    }
    cr_expect_eq(bad, 0, "%d results differ from PyTorch", bad);
}

Test(torch, f32_to_bf16_matches_pytorch) { torch_check(0); }
Test(torch, f32_to_f16_matches_pytorch) { torch_check(1); }

/* ------------------------------------------------------ SIMD vs _ref (tails) */

static const int64_t LENS[] = { 0, 1, 15, 16, 17, 1000003 };
#define NLENS (int)(sizeof LENS / sizeof LENS[0])
#define CANARY 0xa5a5u

/* Random f32 bits over every class: NaNs (quiet and signaling), infinities,
 * f32 subnormals, values around the f16 range, ties, and plain random bits. */
static uint32_t rand_f32_bits(uint64_t *s) {
    uint64_t r = sm64(s);
    uint32_t hi = (uint32_t)(r >> 32), sign = hi & 0x80000000u;
    switch (r & 7) {
    case 0: return sign | 0x7f800000u | ((hi & 0x7fffffu) ? hi & 0x7fffffu : 1); /* NaN */
    case 1: return sign | ((r >> 8) & 1 ? 0x7f800000u : 0);                        /* inf / zero */
    case 2: return sign | (hi & 0x7fffffu);                                       /* f32 subnormal */
    case 3: return (hi & 0x807fe000u) | 0x1000u | ((101u + (uint32_t)(r >> 8) % 44u) << 23); /* f16 tie */
    case 4: return (hi & 0x807f0000u) | 0x8000u;                                  /* bf16 tie */
    case 5: return (hi & 0x807fffffu) | ((101u + (uint32_t)(r >> 8) % 44u) << 23);
    default: return hi;
    }
}

static void fill_f32(float *x, int64_t n, uint64_t seed) {
    for (int64_t i = 0; i < n; i++) x[i] = bitsf(rand_f32_bits(&seed));
}
static void fill_u16(uint16_t *x, int64_t n, uint64_t seed) {
    for (int64_t i = 0; i < n; i++) x[i] = (uint16_t)(sm64(&seed) >> 48);
}

/* kind: 0 f32->f16, 1 f32->bf16 */
static void simd_vs_ref_from_f32(int kind) {
    int64_t max = LENS[NLENS - 1] + 1;
    float *x = malloc((size_t)max * 4);
    uint16_t *a = malloc(((size_t)max + 1) * 2), *b = malloc(((size_t)max + 1) * 2);
    cr_assert(x && a && b);
    fill_f32(x, max, 42 + (uint64_t)kind);
    void (*simd)(const float *, uint16_t *, int64_t) = kind ? av_f32_to_bf16_row : av_f32_to_f16_row;
    void (*ref)(const float *, uint16_t *, int64_t) = kind ? av_f32_to_bf16_row_ref : av_f32_to_f16_row_ref;
    for (int l = 0; l < NLENS; l++)
        for (int off = 0; off < 2; off++) {
            int64_t n = LENS[l];
            for (int64_t i = 0; i <= n; i++) a[i] = b[i] = CANARY;
            simd(x + off, a, n);
            ref(x + off, b, n);
            cr_assert_eq(a[n], CANARY, "simd wrote past n=%lld", (long long)n);
            cr_assert_eq(b[n], CANARY, "ref wrote past n=%lld", (long long)n);
            for (int64_t i = 0; i < n; i++)
                cr_assert_eq(a[i], b[i], "%s n=%lld off=%d i=%lld: f32 %#010x -> simd %#06x ref %#06x",
                             kind ? "bf16" : "f16", (long long)n, off, (long long)i,
                             fbits(x[off + i]), a[i], b[i]);
        }
    free(x); free(a); free(b);
}

/* kind: 0 f16->f32, 1 bf16->f32 */
static void simd_vs_ref_to_f32(int kind) {
    int64_t max = LENS[NLENS - 1] + 1;
    uint16_t *x = malloc((size_t)max * 2);
    uint32_t *a = malloc(((size_t)max + 1) * 4), *b = malloc(((size_t)max + 1) * 4);
    cr_assert(x && a && b);
    fill_u16(x, max, 7 + (uint64_t)kind);
    void (*simd)(const uint16_t *, float *, int64_t) = kind ? av_bf16_to_f32_row : av_f16_to_f32_row;
    void (*ref)(const uint16_t *, float *, int64_t) = kind ? av_bf16_to_f32_row_ref : av_f16_to_f32_row_ref;
    for (int l = 0; l < NLENS; l++)
        for (int off = 0; off < 2; off++) {
            int64_t n = LENS[l];
            for (int64_t i = 0; i <= n; i++) a[i] = b[i] = 0xa5a5a5a5u;
            simd(x + off, (float *)a, n);
            ref(x + off, (float *)b, n);
            cr_assert_eq(a[n], 0xa5a5a5a5u, "simd wrote past n=%lld", (long long)n);
            cr_assert_eq(b[n], 0xa5a5a5a5u, "ref wrote past n=%lld", (long long)n);
            for (int64_t i = 0; i < n; i++)
                cr_assert_eq(a[i], b[i], "%s n=%lld off=%d i=%lld: %#06x -> simd %#010x ref %#010x",
                             kind ? "bf16" : "f16", (long long)n, off, (long long)i, x[off + i], a[i], b[i]);
        }
    free(x); free(a); free(b);
}

Test(simd_vs_ref, f32_to_f16) { simd_vs_ref_from_f32(0); }
Test(simd_vs_ref, f32_to_bf16) { simd_vs_ref_from_f32(1); }
Test(simd_vs_ref, f16_to_f32) { simd_vs_ref_to_f32(0); }
Test(simd_vs_ref, bf16_to_f32) { simd_vs_ref_to_f32(1); }

/* bfloat16 is by definition the top half of an f32, so widening is exact:
 * bits << 16 for every one of the 65536 patterns (NaN payloads included). */
Test(bf16, to_f32_is_exact_shift) {
    uint16_t *h = malloc(65536 * 2);
    uint32_t *a = malloc(65536 * 4), *b = malloc(65536 * 4);
    cr_assert(h && a && b);
    for (int i = 0; i < 65536; i++) h[i] = (uint16_t)i;
    av_bf16_to_f32_row(h, (float *)a, 65536);
    av_bf16_to_f32_row_ref(h, (float *)b, 65536);
    for (uint32_t i = 0; i < 65536; i++) {
        cr_assert_eq(a[i], i << 16, "row: bf16 %#06x -> %#010x", i, a[i]);
        cr_assert_eq(b[i], i << 16, "ref: bf16 %#06x -> %#010x", i, b[i]);
        cr_assert_eq(fbits(av_bf16_to_f32((uint16_t)i)), i << 16, "scalar: bf16 %#06x", i);
    }
    av_bf16_to_f32_row(h + 3, (float *)a, 65533);
    for (uint32_t i = 0; i < 65533; i++) cr_assert_eq(a[i], (i + 3) << 16, "row+3: bf16 %#06x", i + 3);
    free(h); free(a); free(b);
}

/* ------------------------------------------------------------- traits table */

/* From llama.cpp ggml/src/ggml.c, type_traits[]: .type_name, .blck_size,
 * .type_size (sizeof the block_* struct). Ids are GGML's enum ggml_type. */
static const struct { int id; const char *name; int blck; size_t size; } GGML[] = {
    { 0, "f32", 1, 4 },          { 1, "f16", 1, 2 },          { 2, "q4_0", 32, 18 },
    { 3, "q4_1", 32, 20 },       { 6, "q5_0", 32, 22 },       { 7, "q5_1", 32, 24 },
    { 8, "q8_0", 32, 34 },       { 9, "q8_1", 32, 36 },       { 10, "q2_K", 256, 84 },
    { 11, "q3_K", 256, 110 },    { 12, "q4_K", 256, 144 },    { 13, "q5_K", 256, 176 },
    { 14, "q6_K", 256, 210 },    { 15, "q8_K", 256, 292 },    { 16, "iq2_xxs", 256, 66 },
    { 17, "iq2_xs", 256, 74 },   { 18, "iq3_xxs", 256, 98 },  { 19, "iq1_s", 256, 50 },
    { 20, "iq4_nl", 32, 18 },    { 21, "iq3_s", 256, 110 },   { 22, "iq2_s", 256, 82 },
    { 23, "iq4_xs", 256, 136 },  { 24, "i8", 1, 1 },          { 25, "i16", 1, 2 },
    { 26, "i32", 1, 4 },         { 27, "i64", 1, 8 },         { 28, "f64", 1, 8 },
    { 29, "iq1_m", 256, 56 },    { 30, "bf16", 1, 2 },        { 34, "tq1_0", 256, 54 },
    { 35, "tq2_0", 256, 66 },    { 39, "mxfp4", 32, 17 },
};
#define NGGML (int)(sizeof GGML / sizeof GGML[0])

Test(traits, ggml_sizes_and_names) {
    cr_assert_eq(NGGML, 32);
    int present[AV_GGML_TYPE_COUNT] = { 0 };
    for (int k = 0; k < NGGML; k++) {
        int id = GGML[k].id;
        present[id] = 1;
        const av_dtype_traits *t = av_dtype_traits_of(id);
        cr_assert_not_null(t, "id %d (%s) unknown", id, GGML[k].name);
        cr_expect_str_eq(t->name, GGML[k].name, "id %d", id);
        cr_expect_str_eq(av_dtype_name(id), GGML[k].name, "id %d", id);
        cr_expect_eq(t->block_size, GGML[k].blck, "%s block_size %d, ggml %d", t->name, t->block_size, GGML[k].blck);
        cr_expect_eq(t->type_size, GGML[k].size, "%s type_size %zu, ggml %zu", t->name, t->type_size, GGML[k].size);
        /* ggml's is_quantized is true exactly for the blocked types */
        cr_expect_eq(!!t->is_quantized, GGML[k].blck > 1, "%s is_quantized", t->name);
        cr_expect(t->in_gguf, "%s in_gguf", t->name);
        cr_expect_eq(av_dtype_from_name(GGML[k].name), id, "from_name(%s)", GGML[k].name);
    }
    /* removed in GGML: 4, 5 (Q4_2/Q4_3), 31-33 (Q4_0_4_4..), 36-38 (IQ4_NL_x) */
    const int removed[] = { 4, 5, 31, 32, 33, 36, 37, 38 };
    for (size_t k = 0; k < sizeof removed / sizeof removed[0]; k++) {
        cr_expect_null(av_dtype_traits_of(removed[k]), "id %d should be unknown", removed[k]);
        cr_expect_str_eq(av_dtype_name(removed[k]), "?");
    }
    for (int id = 0; id < AV_GGML_TYPE_COUNT; id++)
        cr_expect_eq(av_dtype_traits_of(id) != NULL, present[id], "id %d presence", id);
    for (int id = AV_GGML_TYPE_COUNT; id < 64; id++) cr_expect_null(av_dtype_traits_of(id), "id %d", id);
    cr_expect_null(av_dtype_traits_of(-1));
    cr_expect_null(av_dtype_traits_of(AV_DTYPE_MAX));
    cr_expect_null(av_dtype_traits_of(1000));
    /* safetensors-only types: 1 byte each (safetensors dtype sizes), never in GGUF */
    const int st_only[] = { AV_U8, AV_BOOL, AV_F8_E4M3, AV_F8_E5M2 };
    for (size_t k = 0; k < 4; k++) {
        const av_dtype_traits *t = av_dtype_traits_of(st_only[k]);
        cr_assert_not_null(t, "id %d", st_only[k]);
        cr_expect_eq(t->block_size, 1);
        cr_expect_eq(t->type_size, 1u);
        cr_expect_eq(t->in_gguf, 0, "%s in_gguf", t->name);
    }
}

Test(traits, from_name) {
    cr_expect_eq(av_dtype_from_name("Q8_0"), 8);
    cr_expect_eq(av_dtype_from_name("BF16"), 30);
    cr_expect_eq(av_dtype_from_name("bf16"), 30);
    cr_expect_eq(av_dtype_from_name("F16"), 1);
    cr_expect_eq(av_dtype_from_name("Q4_k"), 12);
    cr_expect_eq(av_dtype_from_name("nope"), -1);
    cr_expect_eq(av_dtype_from_name(""), -1);
    cr_expect_eq(av_dtype_from_name("f3"), -1);
    cr_expect_eq(av_dtype_from_name("f322"), -1);
    cr_expect_eq(av_dtype_from_name(NULL), -1);
}

Test(traits, nbytes) {
    int ok;
    ok = 0; cr_expect_eq(av_dtype_nbytes(AV_Q4_0, 64, &ok), 36u); cr_expect_eq(ok, 1);
    ok = 0; cr_expect_eq(av_dtype_nbytes(AV_Q6_K, 768, &ok), 630u); cr_expect_eq(ok, 1);
    ok = 0; cr_expect_eq(av_dtype_nbytes(AV_F32, 0, &ok), 0u); cr_expect_eq(ok, 1);
    ok = 0; cr_expect_eq(av_dtype_nbytes(AV_BF16, 7, &ok), 14u); cr_expect_eq(ok, 1);
    /* not a whole number of blocks */
    ok = 1; cr_expect_eq(av_dtype_nbytes(AV_Q4_0, 33, &ok), 0u); cr_expect_eq(ok, 0);
    ok = 1; cr_expect_eq(av_dtype_nbytes(AV_Q4_K, 32, &ok), 0u); cr_expect_eq(ok, 0);
    ok = 1; cr_expect_eq(av_dtype_nbytes(AV_MXFP4, 31, &ok), 0u); cr_expect_eq(ok, 0);
    /* negative, unknown */
    ok = 1; cr_expect_eq(av_dtype_nbytes(AV_F32, -1, &ok), 0u); cr_expect_eq(ok, 0);
    ok = 1; cr_expect_eq(av_dtype_nbytes(4, 32, &ok), 0u); cr_expect_eq(ok, 0);
    /* overflow of a 64-bit byte count: 4 * (2^62 - 1) fits, 4 * 2^62 does not */
    if (sizeof(size_t) == 8) {
        ok = 0;
        cr_expect_eq(av_dtype_nbytes(AV_F32, ((int64_t)1 << 62) - 1, &ok), (size_t)UINT64_MAX - 3);
        cr_expect_eq(ok, 1);
    }
    ok = 1; cr_expect_eq(av_dtype_nbytes(AV_F32, (int64_t)1 << 62, &ok), 0u); cr_expect_eq(ok, 0);
    ok = 1; cr_expect_eq(av_dtype_nbytes(AV_F64, INT64_MAX, &ok), 0u); cr_expect_eq(ok, 0);
    ok = 1; cr_expect_eq(av_dtype_nbytes(AV_I64, INT64_MAX, &ok), 0u); cr_expect_eq(ok, 0);
    /* blocks of < 2 bytes per element cannot overflow 64 bits from an int64 count */
    if (sizeof(size_t) == 8) {
        ok = 0;
        cr_expect_eq(av_dtype_nbytes(AV_Q8_K, INT64_MAX - INT64_MAX % 256, &ok),
                     (size_t)((uint64_t)(INT64_MAX / 256) * 292u));
        cr_expect_eq(ok, 1);
    }
}

/* ---------------------------------------------------------------- av_convert */

#define NCONV (16384 * 1024 + 4099) /* >= CONV_PAR_MIN_CHUNKS chunks of 16384 (core/tensor.c): the OpenMP path runs */

static int cmp_bits(const void *a, const void *b, int64_t n, int es, const char *what) {
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        uint32_t x = 0, y = 0;
        memcpy(&x, (const char *)a + i * es, (size_t)es);
        memcpy(&y, (const char *)b + i * es, (size_t)es);
        if (x != y && bad++ < 10) cr_log_error("%s [%lld]: %#x, want %#x", what, (long long)i, x, y);
    }
    return bad;
}

Test(convert, f32_to_f16_bf16_and_back) {
    float *x = malloc(NCONV * 4), *y = malloc(NCONV * 4);
    uint16_t *h = malloc(NCONV * 2), *want = malloc(NCONV * 2);
    cr_assert(x && y && h && want);
    fill_f32(x, NCONV, 99);
    av_err err = { 0 };
    int bad = 0;

    cr_assert_eq(av_convert(x, AV_F32, h, AV_F16, NCONV, &err), 0, "%s", err.msg);
    for (int i = 0; i < NCONV; i++) want[i] = av_f32_to_f16(x[i]);
    bad += cmp_bits(h, want, NCONV, 2, "f32->f16");

    cr_assert_eq(av_convert(x, AV_F32, h, AV_BF16, NCONV, &err), 0, "%s", err.msg);
    for (int i = 0; i < NCONV; i++) want[i] = av_f32_to_bf16(x[i]);
    bad += cmp_bits(h, want, NCONV, 2, "f32->bf16");

    /* bf16 -> f32: h holds the bf16 just made */
    cr_assert_eq(av_convert(h, AV_BF16, y, AV_F32, NCONV, &err), 0, "%s", err.msg);
    for (int i = 0; i < NCONV; i++) x[i] = av_bf16_to_f32(h[i]);
    bad += cmp_bits(y, x, NCONV, 4, "bf16->f32");

    /* f16 -> bf16 goes through f32 */
    fill_u16(h, NCONV, 5);
    cr_assert_eq(av_convert(h, AV_F16, want, AV_BF16, NCONV, &err), 0, "%s", err.msg);
    for (int i = 0; i < NCONV; i++) x[i] = bitsf(av_f32_to_bf16(av_f16_to_f32(h[i])));
    for (int i = 0; i < NCONV; i++) y[i] = bitsf(want[i]);
    bad += cmp_bits(y, x, NCONV, 4, "f16->bf16");

    /* f16 -> f32 */
    cr_assert_eq(av_convert(h, AV_F16, y, AV_F32, NCONV, &err), 0, "%s", err.msg);
    for (int i = 0; i < NCONV; i++) x[i] = av_f16_to_f32(h[i]);
    bad += cmp_bits(y, x, NCONV, 4, "f16->f32");

    /* same type: a copy */
    memset(want, 0, NCONV * 2);
    cr_assert_eq(av_convert(h, AV_F16, want, AV_F16, NCONV, &err), 0, "%s", err.msg);
    bad += cmp_bits(want, h, NCONV, 2, "f16->f16");
    cr_expect_eq(bad, 0, "%d av_convert results differ from the scalar conversions", bad);
    free(x); free(y); free(h); free(want);
}

Test(convert, f64_to_f32_and_back) {
    double *d = malloc(NCONV * 8), *d2 = malloc(NCONV * 8);
    float *y = malloc(NCONV * 4), *want = malloc(NCONV * 4);
    cr_assert(d && d2 && y && want);
    uint64_t s = 1234;
    for (int i = 0; i < NCONV; i++) {
        uint64_t r = sm64(&s);
        /* exponents around the f32 range (overflow, subnormal, underflow) and any bits */
        if (i % 3) r = (r & 0x800fffffffffffffull) | ((uint64_t)(1023 - 160 + (r >> 52) % 300) << 52);
        memcpy(&d[i], &r, 8);
    }
    av_err err = { 0 };
    int bad = 0;
    cr_assert_eq(av_convert(d, AV_F64, y, AV_F32, NCONV, &err), 0, "%s", err.msg);
    for (int i = 0; i < NCONV; i++) want[i] = (float)d[i];
    bad += cmp_bits(y, want, NCONV, 4, "f64->f32");
    cr_assert_eq(av_convert(y, AV_F32, d2, AV_F64, NCONV, &err), 0, "%s", err.msg);
    for (int i = 0; i < NCONV; i++) {
        double w = (double)y[i];
        if (memcmp(&w, &d2[i], 8) && bad++ < 10) cr_log_error("f32->f64 [%d]", i);
    }
    cr_expect_eq(bad, 0, "%d av_convert f64 results differ", bad);
    free(d); free(d2); free(y); free(want);
}

Test(convert, unsupported_and_invalid) {
    unsigned char src[34 * 4] = { 0 };
    float dst[128];
    av_err err = { 0 };
    /* IQ types have no float conversion (yet); Q8_0 has one since core/quant.c */
    cr_expect_eq(av_convert(src, AV_IQ2_XXS, dst, AV_F32, 256, &err), AV_EUNSUPPORTED);
    cr_expect_eq(err.code, AV_EUNSUPPORTED);
    cr_expect_neq(err.msg[0], 0);
    cr_expect(!av_can_convert(AV_IQ2_XXS, AV_F32));
    cr_expect(av_can_convert(AV_Q8_0, AV_F32));
    err = (av_err){ 0 };
    cr_expect_eq(av_convert(dst, AV_F32, src, AV_IQ2_XXS, 256, &err), AV_EUNSUPPORTED);
    cr_expect_eq(err.code, AV_EUNSUPPORTED);
    /* unknown ids */
    cr_expect_eq(av_convert(src, (av_dtype)4, dst, AV_F32, 1, &err), AV_EINVAL);
    cr_expect_eq(av_convert(src, AV_F32, dst, (av_dtype)40, 1, &err), AV_EINVAL);
    /* what can convert */
    cr_expect(av_can_convert(AV_F32, AV_F16));
    cr_expect(av_can_convert(AV_F16, AV_BF16));
    cr_expect(av_can_convert(AV_F64, AV_F32));
    cr_expect(av_can_convert(AV_Q4_0, AV_Q4_0));
    cr_expect(!av_can_convert((av_dtype)5, (av_dtype)5));
}
