/* test_shard.c — token shards: writer/reader round trips (u16/u32, reads
 * across frames), text preparation equal to tok_encode of the whole text
 * (real vocabularies from ../shared), the random-window loader (determinism,
 * targets, state save/restore) and validation of damaged files. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "llama2c.h"
#include "sample.h"
#include "shard.h"
#include "testutil.h"

/* Write ids[n] as a shard; returns its path. */
static const char *write_shard(const int32_t *ids, size_t n, uint32_t vocab, uint32_t ft) {
    const char *p = tmp_path(".bin");
    av_err e = {0};
    shard_writer *w;
    cr_assert_eq(shard_writer_open(p, vocab, ft, &w, &e), 0, "%s", e.msg);
    /* in uneven pieces, so appends cross frame boundaries */
    for (size_t i = 0; i < n;) {
        size_t k = (i * 7 + 3) % 23 + 1;
        if (k > n - i) k = n - i;
        cr_assert_eq(shard_writer_add(w, ids + i, k, &e), 0, "%s", e.msg);
        i += k;
    }
    cr_assert_eq(shard_writer_n_tokens(w), n);
    uint64_t sz = 0;
    cr_assert_eq(shard_writer_commit(w, &sz, &e), 0, "%s", e.msg);
    size_t real;
    free(slurp(p, &real));
    cr_assert_eq(sz, real);
    return p;
}

static int32_t *random_ids(size_t n, uint32_t vocab, uint64_t seed) {
    smp_rng r;
    smp_rng_seed(&r, seed);
    int32_t *ids = malloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++) ids[i] = (int32_t)(smp_rng_next(&r) % vocab);
    ids[0] = (int32_t)vocab - 1; /* the extremes */
    if (n > 1) ids[1] = 0;
    return ids;
}

static void check_round_trip(uint32_t vocab, uint32_t ft, size_t n, uint32_t want_tb) {
    int32_t *ids = random_ids(n, vocab, vocab ^ ft);
    const char *p = write_shard(ids, n, vocab, ft);
    av_err e = {0};
    shard *sh;
    cr_assert_eq(shard_open(p, &sh, &e), 0, "%s", e.msg);
    cr_assert_eq(shard_n_tokens(sh), n);
    cr_assert_eq(shard_vocab(sh), vocab);
    cr_assert_eq(shard_token_bytes(sh), want_tb);
    cr_assert_eq(shard_frame_tokens(sh), ft);
    cr_assert_eq(shard_n_frames(sh), (n + ft - 1) / ft);
    int32_t *got = malloc((n + 1) * sizeof *got);
    cr_assert_eq(shard_read(sh, 0, n, got, &e), 0, "%s", e.msg);
    cr_assert_arr_eq(got, ids, n * sizeof *ids);
    /* every range of up to 3 frames starting in the first 2 frames, then scattered ranges */
    for (size_t s = 0; s < 2 * (size_t)ft && s < n; s += ft <= 64 ? 1 : ft / 7 + 1)
        for (size_t k = 0; k <= 3 * (size_t)ft && s + k <= n; k += 1 + k / 3) {
            cr_assert_eq(shard_read(sh, s, k, got, &e), 0, "%s", e.msg);
            cr_assert_arr_eq(got, ids + s, k * sizeof *ids, "range [%zu, +%zu)", s, k);
        }
    smp_rng r;
    smp_rng_seed(&r, 7);
    for (int i = 0; i < 500; i++) {
        size_t s = smp_rng_next(&r) % n, k = smp_rng_next(&r) % (n - s + 1);
        cr_assert_eq(shard_read(sh, s, k, got, &e), 0, "%s", e.msg);
        cr_assert_arr_eq(got, ids + s, k * sizeof *ids);
    }
    cr_assert_eq(shard_read(sh, n, 0, got, &e), 0, "an empty read at the end is fine");
    cr_assert_eq(shard_read(sh, n - 1, 2, got, &e), AV_EINVAL);
    cr_assert(strstr(e.msg, p), "%s", e.msg);
    cr_assert_eq(shard_read(sh, UINT64_MAX, 2, got, &e), AV_EINVAL);
    shard_free(sh);
    unlink(p);
    free(ids);
    free(got);
}

Test(shard, round_trip_u16_many_frames) { check_round_trip(512, 7, 1000, 2); }
Test(shard, round_trip_u16_full_range) { check_round_trip(65536, 64, 5000, 2); }
Test(shard, round_trip_u32) { check_round_trip(65537, 13, 3001, 4); }
Test(shard, round_trip_u32_large_vocab) { check_round_trip(200000, 1 << 16, 70000, 4); }
Test(shard, round_trip_exact_frames) { check_round_trip(300, 10, 100, 2); }

Test(shard, empty_shard) {
    const char *p = write_shard(NULL, 0, 10, 0);
    av_err e = {0};
    shard *sh;
    cr_assert_eq(shard_open(p, &sh, &e), 0, "%s", e.msg);
    cr_assert_eq(shard_n_tokens(sh), 0);
    cr_assert_eq(shard_n_frames(sh), 0);
    cr_assert_eq(shard_frame_tokens(sh), SHARD_FRAME_TOKENS);
    shard_loader *l;
    cr_assert_eq(shard_loader_new(sh, 1, &l, &e), 0);
    int32_t in[4], tg[4];
    cr_assert_eq(shard_next_batch(l, 1, 4, in, tg, &e), AV_EINVAL);
    cr_assert(strstr(e.msg, "fewer than one window"), "%s", e.msg);
    shard_loader_free(l);
    shard_free(sh);
    unlink(p);
}

Test(shard, writer_rejects_bad_ids_and_params) {
    av_err e = {0};
    shard_writer *w;
    const char *p = tmp_path(".bin");
    cr_assert_eq(shard_writer_open(p, 0, 0, &w, &e), AV_EINVAL);
    cr_assert(strstr(e.msg, "vocab_size"), "%s", e.msg);
    cr_assert_eq(shard_writer_open(p, 10, SHARD_MAX_FRAME_TOKENS + 1, &w, &e), AV_EINVAL);
    cr_assert(strstr(e.msg, "frame_tokens"), "%s", e.msg);
    cr_assert_eq(shard_writer_open(p, 10, 4, &w, &e), 0, "%s", e.msg);
    int32_t ids[] = {1, 2, 10};
    cr_assert_eq(shard_writer_add(w, ids, 3, &e), AV_EINVAL);
    cr_assert(strstr(e.msg, "id 10") && strstr(e.msg, "vocab_size 10"), "%s", e.msg);
    int32_t neg = -1;
    cr_assert_eq(shard_writer_add(w, &neg, 1, &e), AV_EINVAL);
    shard_writer_abort(w);
    cr_assert(access(p, F_OK) != 0, "abort leaves no file");
}

/* ------------------------------------------------------------ damaged files */

/* A small shard in memory: 100 ids, vocab 300, 16 per frame -> 7 frames. */
static unsigned char *small_shard(size_t *len) {
    int32_t ids[100];
    for (int i = 0; i < 100; i++) ids[i] = (i * 37) % 300;
    const char *p = write_shard(ids, 100, 300, 16);
    unsigned char *b = slurp(p, len);
    unlink(p);
    cr_assert(b);
    return b;
}

Test(shard, truncated_at_every_byte_is_an_error) {
    size_t len;
    unsigned char *b = small_shard(&len);
    av_err e = {0};
    shard *sh;
    cr_assert_eq(shard_open_mem(b, len, "small.bin", &sh, &e), 0, "%s", e.msg);
    shard_free(sh);
    for (size_t n = 0; n < len; n++) {
        unsigned char *c = malloc(n ? n : 1); /* exact size: ASan sees any overread */
        memcpy(c, b, n);
        e.msg[0] = 0;
        int rc = shard_open_mem(c, n, "small.bin", &sh, &e);
        cr_assert_eq(rc, AV_EFORMAT, "truncated to %zu of %zu bytes: rc %d", n, len, rc);
        cr_assert(strstr(e.msg, "small.bin"), "%s", e.msg);
        free(c);
    }
    /* and one extra byte */
    unsigned char *c = malloc(len + 1);
    memcpy(c, b, len);
    c[len] = 0;
    cr_assert_eq(shard_open_mem(c, len + 1, "small.bin", &sh, &e), AV_EFORMAT);
    cr_assert(strstr(e.msg, "after the last frame"), "%s", e.msg);
    free(c);
    free(b);
}

static void put32(unsigned char *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> 8 * i); }
static void put64(unsigned char *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> 8 * i); }

/* Patch the small shard at off with a value of w bytes; expect open to fail
 * with code and a message containing what. */
static void expect_bad(size_t off, int w, uint64_t v, int code, const char *what) {
    size_t len;
    unsigned char *b = small_shard(&len);
    if (w == 4) put32(b + off, (uint32_t)v);
    else if (w == 8) put64(b + off, v);
    else b[off] = (unsigned char)v;
    av_err e = {0};
    shard *sh = NULL;
    int rc = shard_open_mem(b, len, "hdr.bin", &sh, &e);
    cr_assert_eq(rc, code, "patch at %zu: rc %d (%s)", off, rc, e.msg);
    cr_assert(strstr(e.msg, what) && strstr(e.msg, "hdr.bin"), "want '%s' in: %s", what, e.msg);
    cr_assert_null(sh);
    free(b);
}

Test(shard, header_fields_out_of_range_are_named) {
    expect_bad(0, 1, 'X', AV_EFORMAT, "magic");
    expect_bad(8, 4, 0, AV_EFORMAT, "version 0");
    expect_bad(8, 4, 2, AV_EUNSUPPORTED, "version 2");
    expect_bad(12, 4, 0, AV_EFORMAT, "vocab_size 0");
    expect_bad(12, 4, 0x80000000u, AV_EFORMAT, "vocab_size 2147483648");
    expect_bad(12, 4, 70000, AV_EFORMAT, "token_bytes 2 cannot hold");
    expect_bad(16, 4, 3, AV_EFORMAT, "token_bytes 3");
    expect_bad(16, 4, 0, AV_EFORMAT, "token_bytes 0");
    expect_bad(20, 4, 0, AV_EFORMAT, "frame_tokens 0");
    expect_bad(20, 4, SHARD_MAX_FRAME_TOKENS + 1, AV_EFORMAT, "frame_tokens 16777217");
    expect_bad(20, 4, 17, AV_EFORMAT, "n_frames 7 does not match");
    expect_bad(24, 8, 101, AV_EFORMAT, "frame 6"); /* last frame now claims 5 ids, holds 4 */
    expect_bad(24, 8, 113, AV_EFORMAT, "n_frames 7 does not match");
    expect_bad(24, 8, UINT64_MAX, AV_EFORMAT, "n_frames");
    expect_bad(32, 8, 8, AV_EFORMAT, "n_frames 8");
    expect_bad(32, 8, UINT64_MAX / 8, AV_EFORMAT, "n_frames");
    expect_bad(40, 8, 0, AV_EFORMAT, "frame 0 offset 0");
    expect_bad(48, 8, 0, AV_EFORMAT, "compressed_size 0");
    expect_bad(48, 8, UINT64_MAX, AV_EFORMAT, "runs past end of file");
    expect_bad(56, 8, 1, AV_EFORMAT, "frame 1 offset 1");
    expect_bad(40 + 7 * 16, 1, 0, AV_EFORMAT, "zstd frame"); /* first frame's magic */
}

Test(shard, corrupted_frames_are_errors_not_crashes) {
    size_t len;
    unsigned char *b = small_shard(&len);
    size_t data = 40 + 7 * 16;
    int n_err = 0;
    for (size_t pos = data; pos < len; pos++) {
        for (int bit = 0; bit < 8; bit += 3) {
            unsigned char *c = malloc(len);
            memcpy(c, b, len);
            c[pos] ^= (unsigned char)(1 << bit);
            av_err e = {0};
            shard *sh;
            if (shard_open_mem(c, len, "flip.bin", &sh, &e) == 0) {
                int32_t out[100];
                int rc = shard_read(sh, 0, 100, out, &e);
                if (rc) {
                    cr_assert_eq(rc, AV_EFORMAT);
                    cr_assert(strstr(e.msg, "flip.bin"), "%s", e.msg);
                    n_err++;
                } else {
                    for (int i = 0; i < 100; i++) cr_assert(out[i] >= 0 && out[i] < 300);
                }
                shard_free(sh);
            } else {
                n_err++;
            }
            free(c);
        }
    }
    cr_assert_gt(n_err, 0);
    free(b);
}

Test(shard, ids_beyond_vocab_in_a_frame_are_an_error) {
    size_t len;
    unsigned char *b = small_shard(&len); /* ids up to 299 */
    put32(b + 12, 200);                   /* header now says vocab 200 */
    av_err e = {0};
    shard *sh;
    cr_assert_eq(shard_open_mem(b, len, "v.bin", &sh, &e), 0, "%s", e.msg);
    int32_t out[100];
    int rc = shard_read(sh, 0, 100, out, &e);
    cr_assert_eq(rc, AV_EFORMAT);
    cr_assert(strstr(e.msg, "outside vocab_size 200"), "%s", e.msg);
    shard_free(sh);
    free(b);
}

Test(shard, check_vocab) {
    int32_t ids[3] = {0, 5, 511};
    const char *p = write_shard(ids, 3, 512, 0);
    av_err e = {0};
    shard *sh;
    cr_assert_eq(shard_open(p, &sh, &e), 0, "%s", e.msg);
    cr_assert_eq(shard_check_vocab(sh, 512, &e), 0);
    cr_assert_eq(shard_check_vocab(sh, 32000, &e), 0);
    cr_assert_eq(shard_check_vocab(sh, 256, &e), AV_EINVAL);
    cr_assert(strstr(e.msg, "512") && strstr(e.msg, "256") && strstr(e.msg, p), "%s", e.msg);
    shard_free(sh);
    unlink(p);
}

Test(shard, open_errors_name_the_file) {
    av_err e = {0};
    shard *sh;
    cr_assert_eq(shard_open("/nonexistent/x.bin", &sh, &e), AV_EIO);
    cr_assert(strstr(e.msg, "/nonexistent/x.bin"), "%s", e.msg);
    const char *p = tmp_path(".bin");
    write_bytes(p, "", 0);
    cr_assert_eq(shard_open(p, &sh, &e), AV_EFORMAT);
    cr_assert(strstr(e.msg, p) && strstr(e.msg, "shorter than"), "%s", e.msg);
    unlink(p);
}

/* ------------------------------------------------------------ text -> shards */

static char *read_all(const char *path, size_t *len) {
    char *b = (char *)slurp(path, len);
    cr_assert(b, "cannot read %s", path);
    return b;
}

static int32_t *read_shard_all(const char *p, size_t *n) {
    av_err e = {0};
    shard *sh;
    cr_assert_eq(shard_open(p, &sh, &e), 0, "%s", e.msg);
    *n = shard_n_tokens(sh);
    int32_t *ids = malloc((*n + 1) * sizeof *ids);
    cr_assert_eq(shard_read(sh, 0, *n, ids, &e), 0, "%s", e.msg);
    shard_free(sh);
    return ids;
}

/* prepare(file) with tiny chunks and frames == tok_encode(whole file). */
static void check_prepare_exact(const char *tok_rel, const char *text_rel, size_t max_bytes, int parse_special,
                                int want_splits) {
    av_err e = {0};
    tok *t;
    cr_assert_eq(tok_load(shared_path(tok_rel), &t, &e), 0, "%s", e.msg);
    size_t len;
    char *text = read_all(shared_path(text_rel), &len);
    if (len > max_bytes) len = max_bytes;
    const char *src = tmp_path(".txt");
    cr_assert_eq(write_bytes(src, text, len), 0);
    tok_opts to = {.add_special = 0, .parse_special = parse_special};
    int32_t *want;
    size_t nw;
    cr_assert_eq(tok_encode(t, text, len, &to, &want, &nw, &e), 0, "%s", e.msg);

    const char *tr = tmp_path(".train"), *va = tmp_path(".val");
    const char *files[] = {src};
    shard_prep_opts o = {.frame_tokens = 1000, .chunk_bytes = 3000, .parse_special = parse_special, .n_threads = 2};
    shard_prep_stats st;
    cr_assert_eq(shard_prepare(t, files, 1, NULL, 0, tr, NULL, &o, &st, &e), 0, "%s", e.msg);
    if (want_splits) cr_assert_gt(st.n_chunk_splits, 20, "%s: chunked (%" PRIu64 " cuts)", tok_rel, st.n_chunk_splits);
    else cr_assert_eq(st.n_chunk_splits, 0, "%s: no line start to cut at", tok_rel);
    cr_assert_eq(st.train_tokens, nw);
    size_t n;
    int32_t *got = read_shard_all(tr, &n);
    cr_assert_eq(n, nw, "%s: %zu ids, tok_encode gives %zu", tok_rel, n, nw);
    cr_assert_arr_eq(got, want, nw * sizeof *want, "%s on %s", tok_rel, text_rel);
    free(got);

    if (!want_splits) goto out;
    /* with a validation fraction: train ++ val is the same stream, split at a line start */
    o.val_fraction = 0.3;
    cr_assert_eq(shard_prepare(t, files, 1, NULL, 0, tr, va, &o, &st, &e), 0, "%s", e.msg);
    cr_assert_eq(st.split_file, 0);
    cr_assert(st.split_offset + 1 >= (uint64_t)(len * 0.7) && st.split_offset < len);
    cr_assert_eq(text[st.split_offset - 1], '\n');
    cr_assert_eq(st.train_text_bytes, st.split_offset);
    cr_assert_eq(st.val_text_bytes, len - st.split_offset);
    size_t na, nb;
    int32_t *a = read_shard_all(tr, &na), *b = read_shard_all(va, &nb);
    cr_assert_eq(na + nb, nw);
    cr_assert_arr_eq(a, want, na * sizeof *a);
    cr_assert_arr_eq(b, want + na, nb * sizeof *b);
    cr_assert_gt(nb, nw / 5);
    cr_assert_lt(nb, nw * 2 / 5);
    free(a);
    free(b);
out:
    unlink(tr);
    unlink(va);
    unlink(src);
    free(want);
    free(text);
    tok_free(t);
}

Test(shard, prepare_equals_tok_encode_spm_tok512) {
    check_prepare_exact("models/tok512.bin", "data/tinyshakespeare.txt", 300000, 1, 1);
}
Test(shard, prepare_equals_tok_encode_spm_llama) {
    check_prepare_exact("models/llama2c-tokenizer.bin", "data/tinystories-sample.txt", 200000, 1, 1);
}
Test(shard, prepare_equals_tok_encode_bpe_gpt2_specials) {
    check_prepare_exact("vocab/ggml-vocab-gpt-2.gguf", "data/tinystories-sample.txt", 200000, 1, 1);
}
Test(shard, prepare_equals_tok_encode_bpe_gpt2_shakespeare) {
    check_prepare_exact("vocab/ggml-vocab-gpt-2.gguf", "data/tinyshakespeare.txt", 200000, 0, 1);
}
Test(shard, prepare_equals_tok_encode_bpe_deepseek) {
    check_prepare_exact("vocab/ggml-vocab-deepseek-llm.gguf", "data/tinyshakespeare.txt", 150000, 0, 1);
}
Test(shard, prepare_equals_tok_encode_tiktoken_cl100k) {
    check_prepare_exact("vocab/tiktoken/cl100k_base.tiktoken", "data/tinystories-sample.txt", 200000, 1, 1);
}
Test(shard, prepare_equals_tok_encode_wpm_bert) {
    check_prepare_exact("vocab/ggml-vocab-bert-bge.gguf", "data/tinyshakespeare.txt", 100000, 0, 1);
}
/* every wikitext line starts with a space and ends with " \n": no cut, still exact */
Test(shard, prepare_equals_tok_encode_wikitext_whole) {
    check_prepare_exact("vocab/ggml-vocab-llama-spm.gguf", "data/wikitext2-test.raw", 100000, 0, 0);
}

Test(shard, prepare_bos_per_document_and_val_files) {
    av_err e = {0};
    tok *t;
    cr_assert_eq(tok_load(shared_path("models/tok512.bin"), &t, &e), 0, "%s", e.msg);
    const char *d1 = tmp_path(".txt"), *d2 = tmp_path(".txt"), *d3 = tmp_path(".txt"), *v1 = tmp_path(".txt");
    const char *t1 = "First Citizen:\nBefore we proceed any further, hear me speak.\n";
    const char *t2 = "All:\nSpeak, speak.\n";
    const char *t3 = "You are all resolved rather to die than to famish?\n";
    write_bytes(d1, t1, strlen(t1));
    write_bytes(d2, "", 0); /* empty document: no BOS */
    write_bytes(d3, t2, strlen(t2));
    write_bytes(v1, t3, strlen(t3));
    tok_opts to = {0, 1};
    int32_t *i1, *i2, *i3;
    size_t n1, n2, n3;
    cr_assert_eq(tok_encode(t, t1, strlen(t1), &to, &i1, &n1, &e), 0);
    cr_assert_eq(tok_encode(t, t2, strlen(t2), &to, &i2, &n2, &e), 0);
    cr_assert_eq(tok_encode(t, t3, strlen(t3), &to, &i3, &n3, &e), 0);
    const char *files[] = {d1, d2, d3}, *vals[] = {v1};
    const char *tr = tmp_path(".train"), *va = tmp_path(".val");
    shard_prep_opts o = {.bos = 1, .parse_special = 1, .chunk_bytes = 8};
    shard_prep_stats st;
    cr_assert_eq(shard_prepare(t, files, 3, vals, 1, tr, va, &o, &st, &e), 0, "%s", e.msg);
    cr_assert_eq(st.split_file, -1);
    size_t na, nb;
    int32_t *a = read_shard_all(tr, &na), *b = read_shard_all(va, &nb);
    cr_assert_eq(na, 1 + n1 + 1 + n2);
    cr_assert_eq(a[0], tok_bos(t));
    cr_assert_arr_eq(a + 1, i1, n1 * sizeof *a);
    cr_assert_eq(a[1 + n1], tok_bos(t));
    cr_assert_arr_eq(a + 2 + n1, i2, n2 * sizeof *a);
    cr_assert_eq(nb, 1 + n3);
    cr_assert_eq(b[0], tok_bos(t));
    cr_assert_arr_eq(b + 1, i3, n3 * sizeof *b);
    cr_assert_eq(st.train_text_bytes, strlen(t1) + strlen(t2));
    cr_assert_eq(st.val_text_bytes, strlen(t3));

    /* a fraction that leaves nothing to validate on, and a bad fraction */
    o.val_fraction = 0.001;
    const char *one[] = {d1};
    cr_assert_eq(shard_prepare(t, one, 1, NULL, 0, tr, va, &o, &st, &e), AV_EINVAL);
    cr_assert(strstr(e.msg, "no text for validation"), "%s", e.msg);
    o.val_fraction = 1.5;
    cr_assert_eq(shard_prepare(t, one, 1, NULL, 0, tr, va, &o, &st, &e), AV_EINVAL);
    /* a missing input names it and leaves no output */
    unlink(tr);
    const char *missing[] = {"/nonexistent/in.txt"};
    o.val_fraction = 0;
    cr_assert_eq(shard_prepare(t, missing, 1, NULL, 0, tr, NULL, &o, &st, &e), AV_EIO);
    cr_assert(strstr(e.msg, "/nonexistent/in.txt"), "%s", e.msg);
    cr_assert(access(tr, F_OK) != 0);
    free(a), free(b), free(i1), free(i2), free(i3);
    unlink(d1), unlink(d2), unlink(d3), unlink(v1), unlink(va);
    tok_free(t);
}

Test(shard, vocab_hash_same_for_bin_and_converted_gguf) {
    av_err e = {0};
    tok *a, *b, *c;
    av_model *m = NULL;
    cr_assert_eq(l2c_read(shared_path("models/stories260K.bin"), shared_path("models/tok512.bin"), &m, &e), 0,
                 "%s", e.msg);
    const char *g = tmp_path(".gguf");
    cr_assert_eq(gguf_write(m, g, NULL, NULL, &e), 0, "%s", e.msg);
    av_model_free(m);
    cr_assert_eq(tok_load(shared_path("models/tok512.bin"), &a, &e), 0, "%s", e.msg);
    cr_assert_eq(tok_load(g, &b, &e), 0, "%s", e.msg);
    cr_assert_eq(tok_load(shared_path("models/llama2c-tokenizer.bin"), &c, &e), 0, "%s", e.msg);
    cr_assert_eq(shard_vocab_hash(a), shard_vocab_hash(b));
    cr_assert_neq(shard_vocab_hash(a), shard_vocab_hash(c));
    unlink(g);
    tok_free(a), tok_free(b), tok_free(c);
}

/* ------------------------------------------------------------------ loader */

/* ids[i] = i: every window's content tells where it starts. */
static shard *counting_shard(size_t n, uint32_t ft, const char **path) {
    int32_t *ids = malloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++) ids[i] = (int32_t)i;
    *path = write_shard(ids, n, (uint32_t)n, ft);
    free(ids);
    av_err e = {0};
    shard *sh;
    cr_assert_eq(shard_open(*path, &sh, &e), 0, "%s", e.msg);
    return sh;
}

Test(shard, loader_windows_and_targets) {
    const char *p;
    const int B = 8, T = 33;
    size_t n = 5000;
    shard *sh = counting_shard(n, 100, &p);
    av_err e = {0};
    shard_loader *l;
    cr_assert_eq(shard_loader_new(sh, 42, &l, &e), 0);
    int32_t in[8 * 33], tg[8 * 33];
    int saw_low = 0, saw_high = 0;
    for (int it = 0; it < 200; it++) {
        cr_assert_eq(shard_next_batch(l, B, T, in, tg, &e), 0, "%s", e.msg);
        for (int b = 0; b < B; b++) {
            int32_t s = in[b * T];
            cr_assert(s >= 0 && (size_t)s <= n - T - 1, "start %d", s);
            for (int t = 0; t < T; t++) {
                cr_assert_eq(in[b * T + t], s + t);
                cr_assert_eq(tg[b * T + t], s + t + 1, "targets are inputs shifted by one");
            }
            saw_low |= (size_t)s < n / 10;
            saw_high |= (size_t)s > n * 9 / 10;
        }
    }
    cr_assert(saw_low && saw_high, "starts cover the whole shard");
    cr_assert_eq(shard_loader_position(l), 200u * B);
    /* T + 1 == n_tokens: the only window starts at 0 */
    int32_t one_in[4999], one_tg[4999];
    cr_assert_eq(shard_next_batch(l, 1, 4999, one_in, one_tg, &e), 0, "%s", e.msg);
    cr_assert_eq(one_in[0], 0);
    cr_assert_eq(one_tg[4998], 4999);
    cr_assert_eq(shard_next_batch(l, 1, 5000, one_in, one_tg, &e), AV_EINVAL);
    cr_assert_eq(shard_next_batch(l, 0, 5, in, tg, &e), AV_EINVAL);
    cr_assert_eq(shard_next_batch(l, 1, 0, in, tg, &e), AV_EINVAL);
    shard_loader_free(l);
    shard_free(sh);
    unlink(p);
}

static void batches(shard *sh, uint64_t seed, int k, int32_t *out /* [k][2][4*16] */) {
    av_err e = {0};
    shard_loader *l;
    cr_assert_eq(shard_loader_new(sh, seed, &l, &e), 0);
    for (int i = 0; i < k; i++)
        cr_assert_eq(shard_next_batch(l, 4, 16, out + (size_t)i * 128, out + (size_t)i * 128 + 64, &e), 0, "%s",
                     e.msg);
    shard_loader_free(l);
}

Test(shard, loader_is_deterministic_by_seed) {
    const char *p;
    shard *sh = counting_shard(100000, 4096, &p);
    int32_t a[10 * 128], b[10 * 128], c[10 * 128];
    batches(sh, 1234, 10, a);
    batches(sh, 1234, 10, b);
    batches(sh, 1235, 10, c);
    cr_assert_arr_eq(a, b, sizeof a, "same seed, same batches");
    cr_assert(memcmp(a, c, sizeof a) != 0, "another seed, other batches");
    /* and the starts are the documented ones: uniform draws from smp_rng(seed) */
    smp_rng r;
    smp_rng_seed(&r, 1234);
    uint64_t R = 100000 - 16, min = (0 - R) % R, x;
    do x = smp_rng_next(&r);
    while (x < min);
    cr_assert_eq((uint64_t)a[0], x % R);
    shard_free(sh);
    unlink(p);
}

Test(shard, loader_state_save_restore) {
    const char *p;
    shard *sh = counting_shard(20000, 1000, &p);
    av_err e = {0};
    shard_loader *l, *m;
    cr_assert_eq(shard_loader_new(sh, 99, &l, &e), 0);
    int32_t in[4 * 16], tg[4 * 16], want[5][2][64], got[2][64];
    for (int i = 0; i < 3; i++) cr_assert_eq(shard_next_batch(l, 4, 16, in, tg, &e), 0);
    size_t sz = shard_loader_state_size();
    cr_assert_leq(sz, 256);
    unsigned char *st = malloc(sz);
    shard_loader_save(l, st);
    for (int i = 0; i < 5; i++) cr_assert_eq(shard_next_batch(l, 4, 16, want[i][0], want[i][1], &e), 0);
    /* a loader with another seed, restored, continues exactly */
    cr_assert_eq(shard_loader_new(sh, 7, &m, &e), 0);
    cr_assert_eq(shard_loader_load(m, st, sz, &e), 0, "%s", e.msg);
    cr_assert_eq(shard_loader_position(m), 12);
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(shard_next_batch(m, 4, 16, got[0], got[1], &e), 0);
        cr_assert_arr_eq(got, want[i], sizeof got, "batch %d after restore", i);
    }
    /* a state is checked: size, magic, and the dataset it belongs to */
    cr_assert_eq(shard_loader_load(m, st, sz - 1, &e), AV_EFORMAT);
    st[0] ^= 1;
    cr_assert_eq(shard_loader_load(m, st, sz, &e), AV_EFORMAT);
    st[0] ^= 1;
    const char *p2;
    shard *other = counting_shard(20001, 1000, &p2);
    shard_loader *o;
    cr_assert_eq(shard_loader_new(other, 1, &o, &e), 0);
    cr_assert_eq(shard_loader_load(o, st, sz, &e), AV_EINVAL);
    cr_assert(strstr(e.msg, "20000") && strstr(e.msg, "20001"), "%s", e.msg);
    shard_loader_free(o);
    shard_free(other);
    unlink(p2);
    free(st);
    shard_loader_free(l);
    shard_loader_free(m);
    shard_free(sh);
    unlink(p);
}

Test(shard, loader_failed_batch_leaves_state_unchanged) {
    /* a shard whose last frame holds an id beyond the header's vocab: some windows fail */
    int32_t ids[64];
    for (int i = 0; i < 64; i++) ids[i] = i < 60 ? i % 50 : 99;
    const char *p = write_shard(ids, 64, 100, 8);
    size_t len;
    unsigned char *b = slurp(p, &len);
    put32(b + 12, 50);
    av_err e = {0};
    shard *sh;
    cr_assert_eq(shard_open_mem(b, len, "bad.bin", &sh, &e), 0, "%s", e.msg);
    shard_loader *l;
    cr_assert_eq(shard_loader_new(sh, 3, &l, &e), 0);
    unsigned char s0[128], s1[128];
    int32_t in[8 * 4], tg[8 * 4];
    int failed = 0;
    for (int i = 0; i < 50 && !failed; i++) {
        shard_loader_save(l, s0);
        if (shard_next_batch(l, 8, 4, in, tg, &e) != 0) {
            failed = 1;
            cr_assert(strstr(e.msg, "outside vocab_size 50"), "%s", e.msg);
            shard_loader_save(l, s1);
            cr_assert_arr_eq(s0, s1, shard_loader_state_size());
        }
    }
    cr_assert(failed);
    shard_loader_free(l);
    shard_free(sh);
    free(b);
    unlink(p);
}
