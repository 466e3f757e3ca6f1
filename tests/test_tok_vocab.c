/* test_tok_vocab.c — tokenizers against llama.cpp's own vocabulary tests.
 *
 * shared/vocab/ggml-vocab-NAME.gguf{,.inp,.out} are llama.cpp's test-tokenizer-0
 * fixtures: .inp holds texts separated by "\n__ggml_vocab_test__\n", .out one line
 * of ids per text (made with the model's HF tokenizer). test-tokenizer-0 calls
 * common_tokenize(ctx, text, add_special = false, parse_special = false), so do we.
 * Plus: llama2.c tok512.bin vs the same vocabulary inside a llama.cpp GGUF and the
 * prompt ids llama-simple printed (greedy.json), and malformed inputs. */
#include <criterion/criterion.h>
#include <jansson.h>

#include "testutil.h"
#include "tok_impl.h"

#define SEP "\n__ggml_vocab_test__\n"

typedef struct vcase {
    char *text;
    size_t len;
    int32_t *ids;
    size_t n;
} vcase;

static size_t read_cases(const char *name, vcase **out) {
    char p_inp[512], p_out[512];
    snprintf(p_inp, sizeof p_inp, "vocab/ggml-vocab-%s.gguf.inp", name);
    snprintf(p_out, sizeof p_out, "vocab/ggml-vocab-%s.gguf.out", name);
    size_t ni, no;
    char *inp = (char *)slurp(shared_path(p_inp), &ni);
    char *outs = (char *)slurp(shared_path(p_out), &no);
    cr_assert(inp && outs, "%s: cannot read the .inp/.out fixtures", name);
    vcase *v = NULL;
    size_t nv = 0, sl = strlen(SEP);
    for (size_t pos = 0; pos < ni;) { /* as read_tests() in llama.cpp's test-tokenizer-0.cpp */
        const char *m = memmem(inp + pos, ni - pos, SEP, sl);
        size_t end = m ? (size_t)(m - inp) : ni;
        v = realloc(v, (nv + 1) * sizeof *v);
        v[nv].len = end - pos;
        v[nv].text = malloc(v[nv].len + 1);
        memcpy(v[nv].text, inp + pos, v[nv].len);
        v[nv].text[v[nv].len] = 0;
        v[nv].ids = NULL;
        v[nv].n = 0;
        nv++;
        pos = m ? end + sl : ni;
    }
    size_t line = 0;
    for (size_t pos = 0; pos < no; line++) { /* std::getline lines */
        const char *nl = memchr(outs + pos, '\n', no - pos);
        size_t end = nl ? (size_t)(nl - outs) : no;
        cr_assert(line < nv, "%s: more .out lines than .inp texts", name);
        char *s = outs + pos, *e = outs + end;
        while (s < e) {
            char *q;
            long id = strtol(s, &q, 10);
            if (q == s) { s++; continue; }
            v[line].ids = realloc(v[line].ids, (v[line].n + 1) * sizeof *v[line].ids);
            v[line].ids[v[line].n++] = (int32_t)id;
            s = q;
        }
        pos = nl ? end + 1 : no;
    }
    cr_assert_eq(line, nv, "%s: %zu .out lines for %zu .inp texts", name, line, nv);
    free(inp);
    free(outs);
    *out = v;
    return nv;
}

static void print_ids(char *buf, size_t cap, const int32_t *ids, size_t n) {
    size_t o = 0;
    buf[0] = 0;
    for (size_t i = 0; i < n && o + 16 < cap; i++) o += (size_t)snprintf(buf + o, cap - o, " %d", ids[i]);
}

/* Encode every fixture text and compare; round_trip: also decode(encode(x)) == x. */
static void run_suite(const char *name, int round_trip) {
    char path[512];
    snprintf(path, sizeof path, "vocab/ggml-vocab-%s.gguf", name);
    tok *t = NULL;
    av_err err = { 0 };
    int rc = tok_load(shared_path(path), &t, &err);
    cr_assert_eq(rc, 0, "%s: load failed: %s", name, err.msg);
    vcase *v;
    size_t nv = read_cases(name, &v), bad = 0, bad_rt = 0;
    tok_opts o = { .add_special = 0, .parse_special = 0 };
    for (size_t i = 0; i < nv; i++) {
        int32_t *ids = NULL;
        size_t n = 0;
        rc = tok_encode(t, v[i].text, v[i].len, &o, &ids, &n, &err);
        cr_expect_eq(rc, 0, "%s: encode failed: %s", name, err.msg);
        int ok = rc == 0 && n == v[i].n && (n == 0 || !memcmp(ids, v[i].ids, n * sizeof *ids));
        if (!ok) {
            char got[2048], want[2048];
            print_ids(got, sizeof got, ids, n);
            print_ids(want, sizeof want, v[i].ids, v[i].n);
            cr_log_error("%s: case %zu '%.80s'\n  want%s\n  got %s", name, i, v[i].text, want, got);
            bad++;
        } else if (round_trip) {
            char *txt = NULL;
            size_t tl = 0;
            rc = tok_decode(t, ids, n, 0, &txt, &tl, &err);
            if (rc || tl != v[i].len || memcmp(txt, v[i].text, tl)) {
                cr_log_error("%s: case %zu '%.80s' decodes to '%.80s'", name, i, v[i].text, txt ? txt : "(null)");
                bad_rt++;
            }
            free(txt);
        }
        free(ids);
    }
    cr_log_info("%s: %zu/%zu encodings match llama.cpp", name, nv - bad, nv);
    cr_expect_eq(bad, 0, "%s: %zu of %zu texts tokenize differently from llama.cpp", name, bad, nv);
    cr_expect_eq(bad_rt, 0, "%s: %zu of %zu texts do not round-trip", name, bad_rt, nv);
    for (size_t i = 0; i < nv; i++) free(v[i].text), free(v[i].ids);
    free(v);
    tok_free(t);
}

Test(tok_vocab, llama_spm) { run_suite("llama-spm", 1); }
Test(tok_vocab, phi_3) { run_suite("phi-3", 1); }
Test(tok_vocab, bert_bge) { run_suite("bert-bge", 0); }
Test(tok_vocab, gpt_2) { run_suite("gpt-2", 0); }
Test(tok_vocab, falcon) { run_suite("falcon", 0); }
Test(tok_vocab, starcoder) { run_suite("starcoder", 0); }
Test(tok_vocab, refact) { run_suite("refact", 0); }
Test(tok_vocab, mpt) { run_suite("mpt", 0); }
Test(tok_vocab, deepseek_llm) { run_suite("deepseek-llm", 1); }    /* clean_spaces off: decode is exact */
Test(tok_vocab, deepseek_coder) { run_suite("deepseek-coder", 1); }

/* special tokens in text, BOS/EOS/SEP, as llama.cpp's tokenize() (ids from the vocabularies) */
static void expect_ids(const char *vocab, const char *text, int add, int parse, const int32_t *want, size_t nw) {
    char path[256];
    snprintf(path, sizeof path, "vocab/ggml-vocab-%s.gguf", vocab);
    tok *t = NULL;
    av_err err = { 0 };
    cr_assert_eq(tok_load(shared_path(path), &t, &err), 0, "%s", err.msg);
    tok_opts o = { add, parse };
    int32_t *ids;
    size_t n;
    cr_assert_eq(tok_encode(t, text, strlen(text), &o, &ids, &n, &err), 0, "%s", err.msg);
    char got[512], exp[512];
    print_ids(got, sizeof got, ids, n);
    print_ids(exp, sizeof exp, want, nw);
    cr_expect(n == nw && (n == 0 || !memcmp(ids, want, n * sizeof *ids)), "%s '%s': want%s got%s", vocab, text, exp, got);
    free(ids);
    tok_free(t);
}

Test(tok_vocab, special_tokens_and_bos) {
    /* SPM: space prefix again after a special token; BOS from add_bos_token */
    expect_ids("llama-spm", "Hello<s>world </s>", 1, 1, (int32_t[]){ 1, 15043, 1, 3186, 29871, 2 }, 6);
    expect_ids("llama-spm", "Hello<s>", 0, 0, (int32_t[]){ 15043, 29966, 29879, 29958 }, 4);
    expect_ids("llama-spm", "", 1, 1, (int32_t[]){ 1 }, 1);
    expect_ids("llama-spm", "", 0, 1, NULL, 0);
    /* phi-3: llama.cpp gives its special tokens RSTRIP by model name */
    expect_ids("phi-3", "<|user|>  Hi<|end|>\nx", 0, 1, (int32_t[]){ 32010, 6324, 32007, 921 }, 4);
    /* WPM: CLS ... SEP with add_special */
    expect_ids("bert-bge", "Hello, [MASK] World!", 1, 1, (int32_t[]){ 101, 7592, 1010, 103, 2088, 999, 102 }, 7);
}

/* ---- llama2.c tokenizer.bin vs llama.cpp ---------------------------------------- */

static char *sample_text(size_t max, size_t *len) {
    size_t n;
    char *s = (char *)slurp(shared_path("data/tinystories-sample.txt"), &n);
    cr_assert(s, "cannot read data/tinystories-sample.txt");
    if (n > max) { /* cut at a line end */
        n = max;
        while (n > 0 && s[n - 1] != '\n') n--;
    }
    s[n] = 0;
    *len = n;
    return s;
}

static void encode_ok(const tok *t, const char *s, size_t n, int add, int parse, int32_t **ids, size_t *ni) {
    av_err err = { 0 };
    tok_opts o = { add, parse };
    cr_assert_eq(tok_encode(t, s, n, &o, ids, ni, &err), 0, "encode: %s", err.msg);
}

Test(tok_vocab, llama2c_tok512_round_trip) {
    tok *t = NULL;
    av_err err = { 0 };
    cr_assert_eq(tok_load(shared_path("models/tok512.bin"), &t, &err), 0, "%s", err.msg);
    cr_assert_eq(tok_n_vocab(t), 512);
    cr_assert_eq(tok_get_kind(t), TOK_SPM);
    size_t n, ni;
    char *s = sample_text(4096, &n);
    int32_t *ids;
    encode_ok(t, s, n, 1, 0, &ids, &ni);
    cr_assert_gt(ni, 100);
    cr_assert_eq(ids[0], tok_bos(t));
    char *back;
    size_t bl;
    /* llama.cpp's detokenize: BOS (not rendered) consumes the leading-space removal */
    cr_assert_eq(tok_decode(t, ids + 1, ni - 1, 0, &back, &bl, &err), 0, "%s", err.msg);
    cr_expect_eq(bl, n);
    cr_expect(bl == n && !memcmp(back, s, n), "tok512 round trip differs");
    free(back);
    cr_assert_eq(tok_decode(t, ids, ni, 1, &back, &bl, &err), 0, "%s", err.msg);
    cr_expect(bl == n + 4 && !memcmp(back, "<s> ", 4) && !memcmp(back + 4, s, n), "render_special: '%.20s'", back);
    free(back);
    free(ids);
    free(s);
    tok_free(t);
}

Test(tok_vocab, llama2c_matches_llamacpp_gguf) {
    tok *a = NULL, *b = NULL;
    av_err err = { 0 };
    cr_assert_eq(tok_load(shared_path("models/tok512.bin"), &a, &err), 0, "%s", err.msg);
    cr_assert_eq(tok_load(shared_path("reference/llamacpp/stories260K-f32.gguf"), &b, &err), 0, "%s", err.msg);
    size_t n, na, nb;
    char *s = sample_text(16384, &n);
    int32_t *ia, *ib;
    encode_ok(a, s, n, 1, 1, &ia, &na);
    encode_ok(b, s, n, 1, 1, &ib, &nb);
    cr_expect(na == nb && !memcmp(ia, ib, na * sizeof *ia), "tok512.bin and the GGUF vocabulary disagree");
    free(ia);
    free(ib);
    free(s);

    /* llama-simple's prompt ids (add_special = parse_special = true) */
    json_error_t je;
    json_t *root = json_load_file(shared_path("reference/llamacpp/greedy.json"), 0, &je);
    cr_assert(root && json_is_array(root), "greedy.json: %s", je.text);
    size_t i;
    json_t *e;
    int checked = 0;
    json_array_foreach(root, i, e) {
        const char *prompt = json_string_value(json_object_get(e, "prompt"));
        json_t *want = json_object_get(e, "prompt_ids");
        if (!prompt || !json_is_array(want)) continue;
        for (int k = 0; k < 2; k++) {
            int32_t *ids;
            size_t ni;
            encode_ok(k ? b : a, prompt, strlen(prompt), 1, 1, &ids, &ni);
            cr_expect_eq(ni, json_array_size(want), "'%s': %zu ids, want %zu", prompt, ni, json_array_size(want));
            for (size_t j = 0; j < ni && j < json_array_size(want); j++)
                cr_expect_eq(ids[j], json_integer_value(json_array_get(want, j)), "'%s' id %zu", prompt, j);
            free(ids);
            checked++;
        }
    }
    cr_expect_gt(checked, 0);
    json_decref(root);
    tok_free(a);
    tok_free(b);
}

Test(tok_vocab, to_kv_round_trip) {
    const char *names[] = { "llama-spm", "bert-bge", "gpt-2" };
    for (size_t k = 0; k < 3; k++) {
        char path[256];
        snprintf(path, sizeof path, "vocab/ggml-vocab-%s.gguf", names[k]);
        tok *t = NULL, *u = NULL;
        av_err err = { 0 };
        cr_assert_eq(tok_load(shared_path(path), &t, &err), 0, "%s", err.msg);
        av_kvs kv;
        av_kvs_init(&kv);
        cr_assert_eq(tok_to_kv(t, &kv, &err), 0, "%s", err.msg);
        cr_assert_eq(tok_from_kv(&kv, names[k], &u, &err), 0, "%s: %s", names[k], err.msg);
        cr_expect_eq(tok_n_vocab(u), tok_n_vocab(t));
        cr_expect_eq(tok_bos(u), tok_bos(t));
        cr_expect_eq(tok_eos(u), tok_eos(t));
        cr_expect_eq(u->merges.n, t->merges.n);
        cr_expect_eq(u->add_bos, t->add_bos);
        cr_expect_eq(u->add_space_prefix, t->add_space_prefix);
        for (int32_t i = 0; i < tok_n_vocab(t); i++) {
            size_t la, lb;
            const char *x = tok_token_text(t, i, &la), *y = tok_token_text(u, i, &lb);
            if (la != lb || memcmp(x, y, la)) { cr_expect(0, "%s: token %d differs", names[k], i); break; }
        }
        av_kvs_release(&kv);
        tok_free(t);
        tok_free(u);
    }
}

/* ---- malformed input ------------------------------------------------------------ */

static void tiny_kv(av_kvs *kv, const char *model, const char *merge) {
    const char *toks[] = { "a", "b", "ab", "<s>" };
    av_kvs_init(kv);
    cr_assert_eq(av_kvs_set_str(kv, "tokenizer.ggml.model", model), 0);
    cr_assert_eq(av_kvs_set_str_arr(kv, "tokenizer.ggml.tokens", toks, NULL, 4), 0);
    if (merge) {
        cr_assert_eq(av_kvs_set_str(kv, "tokenizer.ggml.pre", "gpt-2"), 0);
        cr_assert_eq(av_kvs_set_str_arr(kv, "tokenizer.ggml.merges", &merge, NULL, 1), 0);
    }
}

Test(tok_vocab, unknown_model_fails) {
    av_kvs kv;
    tiny_kv(&kv, "rwkv", NULL);
    tok *t = (tok *)1;
    av_err err = { 0 };
    cr_expect_eq(tok_from_kv(&kv, "x.gguf", &t, &err), AV_EUNSUPPORTED);
    cr_expect_null(t);
    cr_expect(strstr(err.msg, "rwkv") && strstr(err.msg, "x.gguf"), "message: %s", err.msg);
    av_kvs_release(&kv);
}

Test(tok_vocab, bad_merge_fails) {
    av_kvs kv;
    tok *t = NULL;
    av_err err = { 0 };
    tiny_kv(&kv, "gpt2", "a b");
    cr_expect_eq(tok_from_kv(&kv, "ok.gguf", &t, &err), 0, "%s", err.msg);
    tok_free(t);
    t = NULL;
    av_kvs_release(&kv);
    tiny_kv(&kv, "gpt2", "a zz");
    cr_expect_eq(tok_from_kv(&kv, "bad.gguf", &t, &err), AV_EFORMAT);
    cr_expect_null(t);
    cr_expect(strstr(err.msg, "'a zz'") != NULL, "message: %s", err.msg);
    av_kvs_release(&kv);
    tiny_kv(&kv, "gpt2", "ab");
    cr_expect_eq(tok_from_kv(&kv, "bad.gguf", &t, &err), AV_EFORMAT);
    av_kvs_release(&kv);
}

Test(tok_vocab, missing_tokens_fails) {
    av_kvs kv;
    av_kvs_init(&kv);
    av_kvs_set_str(&kv, "tokenizer.ggml.model", "llama");
    tok *t = NULL;
    av_err err = { 0 };
    cr_expect_eq(tok_from_kv(&kv, "x.gguf", &t, &err), AV_EFORMAT);
    cr_expect(strstr(err.msg, "tokenizer.ggml.tokens") != NULL, "message: %s", err.msg);
    av_kvs_release(&kv);
}

Test(tok_vocab, decode_out_of_range_fails) {
    tok *t = NULL;
    av_err err = { 0 };
    cr_assert_eq(tok_load(shared_path("models/tok512.bin"), &t, &err), 0, "%s", err.msg);
    int32_t ids[] = { 5, 512 }, neg[] = { -1 };
    char *s = (char *)1;
    size_t n;
    cr_expect_eq(tok_decode(t, ids, 2, 0, &s, &n, &err), AV_EINVAL);
    cr_expect_null(s);
    cr_expect(strstr(err.msg, "512") != NULL, "message: %s", err.msg);
    cr_expect_eq(tok_decode(t, neg, 1, 0, &s, &n, &err), AV_EINVAL);
    cr_expect_null(tok_token_text(t, 512, &n));
    tok_free(t);
}

Test(tok_vocab, truncated_tokenizer_bin_fails) {
    size_t n;
    unsigned char *b = slurp(shared_path("models/tok512.bin"), &n);
    cr_assert(b);
    const char *p = tmp_path(".bin");
    cr_assert_eq(write_bytes(p, b, n - 3), 0);
    tok *t = NULL;
    av_err err = { 0 };
    cr_expect_eq(tok_load(p, &t, &err), AV_EFORMAT);
    cr_expect(strstr(err.msg, p) != NULL, "message: %s", err.msg);
    unlink(p);
    free(b);
}
