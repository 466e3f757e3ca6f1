/* BPE training (bpe_train.c) and tokenizer.json (tok_hfjson.c).
 *
 * Expected values: the CS336 assignment's reference merges/vocab (made by the
 * course staff's trainer, see shared/reference/tokenizer/cs336/README.md).
 * HF tokenizers parity of written tokenizer.json files is checked outside the
 * suite with scripts/hf_encode.js (needs node + npm tokenizers). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <string.h>

#include "bpe_train.h"
#include "tok_impl.h"
#include "testutil.h"

static const char *const EOT[] = { "<|endoftext|>" };

static bpe_result *train_file(const char *path, int vocab, size_t window, const char *pattern) {
    bpe_train_opts o;
    bpe_train_opts_init(&o);
    o.vocab_size = vocab;
    o.specials = EOT;
    o.n_specials = 1;
    o.window_bytes = window;
    o.pattern = pattern;
    bpe_result *r = NULL;
    av_err err = { 0 };
    int rc = bpe_train_files(&path, 1, &o, &r, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);
    return r;
}

static char *mapped(const bpe_result *r, int32_t id) {
    if (id < r->n_special) return strdup(r->vocab[id].s);
    return bpe_bytes_to_mapped((const uint8_t *)r->vocab[id].s, r->vocab[id].len, NULL);
}

static void check_cs336_merges(const bpe_result *r) {
    size_t n;
    char *ref = (char *)slurp(shared_path("reference/tokenizer/cs336/train-bpe-reference-merges.txt"), &n);
    cr_assert(ref, "reference merges missing");
    cr_assert_eq(r->n_merges, 243);
    char *save = NULL, *line = strtok_r(ref, "\n", &save);
    for (int32_t k = 0; k < r->n_merges; k++, line = strtok_r(NULL, "\n", &save)) {
        cr_assert(line, "reference has fewer merges than %d", k);
        char *a = mapped(r, r->merges[2 * k]), *b = mapped(r, r->merges[2 * k + 1]);
        char got[256];
        snprintf(got, sizeof got, "%s %s", a, b);
        cr_assert_str_eq(got, line, "merge %d", k);
        free(a); free(b);
    }
    cr_assert_null(line);
    free(ref);
}

Test(bpe_train, cs336_reference_merges) {
    bpe_result *r = train_file(shared_path("reference/tokenizer/cs336/corpus.en"), 500, 0, NULL);
    check_cs336_merges(r);
    bpe_result_free(r);
}

Test(bpe_train, cs336_reference_vocab_id_for_id) {
    bpe_result *r = train_file(shared_path("reference/tokenizer/cs336/corpus.en"), 500, 0, NULL);
    json_error_t je;
    json_t *v = json_load_file(shared_path("reference/tokenizer/cs336/train-bpe-reference-vocab.json"), 0, &je);
    cr_assert(v, "%s", je.text);
    cr_assert_eq(json_object_size(v), 500);
    cr_assert_eq(r->n_vocab, 500);
    const char *k;
    json_t *id;
    json_object_foreach(v, k, id) {
        int32_t i = (int32_t)json_integer_value(id);
        cr_assert(i >= 0 && i < r->n_vocab);
        char *m = mapped(r, i);
        cr_assert_str_eq(m, k, "id %d", i);
        free(m);
    }
    json_decref(v);
    bpe_result_free(r);
}

Test(bpe_train, window_size_and_threads_do_not_change_result) {
    const char *p = shared_path("reference/tokenizer/cs336/corpus.en");
    size_t wins[] = { 64, 1000, 7777 };
    for (size_t w = 0; w < 3; w++) {
        bpe_result *r = train_file(p, 500, wins[w], NULL);
        check_cs336_merges(r);
        bpe_result_free(r);
    }
    size_t n;
    char *text = (char *)slurp(p, &n);
    bpe_train_opts o;
    bpe_train_opts_init(&o);
    o.vocab_size = 500; o.specials = EOT; o.n_specials = 1; o.n_threads = 3;
    bpe_result *r;
    av_err err;
    cr_assert_eq(bpe_train_mem(text, n, &o, &r, &err), 0, "%s", err.msg);
    check_cs336_merges(r);
    bpe_result_free(r);
    free(text);
}

Test(bpe_train, specials_are_cut_out_and_never_merged) {
    bpe_result *r = train_file(shared_path("reference/tokenizer/cs336/tinystories_sample.txt"), 1000, 0, NULL);
    cr_assert_eq(r->n_special, 1);
    cr_assert_str_eq(r->vocab[0].s, "<|endoftext|>");
    for (int32_t i = 1; i < r->n_vocab; i++) cr_assert_null(strstr(r->vocab[i].s, "<|"), "token %d '%s'", i, r->vocab[i].s);
    bpe_result_free(r);
    /* a pair never spans a special: "ab" occurs only across one */
    const char *txt = "xa<|endoftext|>bx xa<|endoftext|>bx";
    bpe_train_opts o;
    bpe_train_opts_init(&o);
    o.vocab_size = 300; o.specials = EOT; o.n_specials = 1;
    av_err err;
    cr_assert_eq(bpe_train_mem(txt, strlen(txt), &o, &r, &err), 0, "%s", err.msg);
    for (int32_t i = 0; i < r->n_vocab; i++) cr_assert(strcmp(r->vocab[i].s, "ab") != 0);
    bpe_result_free(r);
}

Test(bpe_train, tie_break_takes_greater_pair_and_min_frequency_stops) {
    /* "ab" and "cd" both occur 3 times: (c,d) > (a,b) wins first */
    const char *txt = "ab cd ab cd ab cd";
    bpe_train_opts o;
    bpe_train_opts_init(&o);
    o.vocab_size = 258;
    bpe_result *r;
    av_err err;
    cr_assert_eq(bpe_train_mem(txt, strlen(txt), &o, &r, &err), 0, "%s", err.msg);
    cr_assert_eq(r->n_merges, 2);
    cr_assert_str_eq(r->vocab[256].s, "cd");
    cr_assert_eq(r->merge_counts[0], 3);
    bpe_result_free(r);
    o.vocab_size = 1000;
    o.min_frequency = 3;
    cr_assert_eq(bpe_train_mem(txt, strlen(txt), &o, &r, &err), 0, "%s", err.msg);
    for (int32_t k = 0; k < r->n_merges; k++) cr_assert_geq(r->merge_counts[k], 3);
    cr_assert_lt(r->n_vocab, 1000);
    bpe_result_free(r);
}

Test(bpe_train, invalid_utf8_bytes_are_kept) {
    const char txt[] = "\xff\xfe abc \xc3 abc \xe2\x82 abc\x80";
    bpe_train_opts o;
    bpe_train_opts_init(&o);
    o.vocab_size = 400;
    bpe_result *r;
    av_err err;
    cr_assert_eq(bpe_train_mem(txt, sizeof txt - 1, &o, &r, &err), 0, "%s", err.msg);
    int found = 0;
    for (int32_t i = 256; i < r->n_vocab; i++) found |= !strcmp(r->vocab[i].s, "\xff\xfe");
    cr_assert(found, "the invalid run \\xff\\xfe is a pre-token and gets merged");
    bpe_result_free(r);
}

Test(bpe_train, bad_arguments_fail_cleanly) {
    bpe_train_opts o;
    bpe_train_opts_init(&o);
    bpe_result *r = (bpe_result *)1;
    av_err err = { 0 };
    o.vocab_size = 256; o.specials = EOT; o.n_specials = 1;
    cr_assert_eq(bpe_train_mem("abc", 3, &o, &r, &err), AV_EINVAL);
    cr_assert_null(r);
    cr_assert(strstr(err.msg, "vocab size"), "%s", err.msg);
    o.vocab_size = 300; o.pattern = "(unclosed";
    cr_assert_eq(bpe_train_mem("abc", 3, &o, &r, &err), AV_EINVAL);
    cr_assert(strstr(err.msg, "bpe_train"), "%s", err.msg);
    o.pattern = NULL;
    const char *missing = "/nonexistent/corpus.txt";
    cr_assert_eq(bpe_train_files(&missing, 1, &o, &r, &err), AV_EIO);
    cr_assert(strstr(err.msg, missing), "%s", err.msg);
    const char *const dup[] = { "<a>", "<a>" };
    o.specials = dup; o.n_specials = 2;
    cr_assert_eq(bpe_train_mem("abc", 3, &o, &r, &err), AV_EINVAL);
}

/* ---- tokenizer.json ---------------------------------------------------------- */

static void check_roundtrip(const char *pattern) {
    bpe_result *r = train_file(shared_path("data/tinyshakespeare.txt"), 600, 0, pattern);
    const char *path = tmp_path(".json");
    av_err err;
    cr_assert_eq(tok_write_hfjson(r, NULL, path, &err), 0, "%s", err.msg);
    tok *t;
    cr_assert_eq(tok_load(path, &t, &err), 0, "%s", err.msg);
    cr_assert_eq(tok_get_kind(t), TOK_BPE);
    cr_assert_eq(tok_n_vocab(t), r->n_vocab);
    for (int32_t i = 0; i < r->n_vocab; i++) {
        char *m = mapped(r, i);
        size_t len;
        cr_assert_str_eq(tok_token_text(t, i, &len), m, "token %d", i);
        free(m);
    }
    cr_assert_eq(t->types[0], TOK_TYPE_CONTROL);
    cr_assert_eq(t->types[1], TOK_TYPE_NORMAL);
    cr_assert_eq(t->merges.n, (size_t)r->n_merges);
    for (int32_t k = 0; k < r->n_merges; k++) {
        int64_t rank = -1;
        uint64_t key = (uint64_t)(uint32_t)r->merges[2 * k] << 32 | (uint32_t)r->merges[2 * k + 1];
        cr_assert(av_u64map_get(&t->merges, key, &rank));
        cr_assert_eq(rank, k);
    }
    /* same tokenizer through GGUF metadata */
    av_kvs kv;
    av_kvs_init(&kv);
    cr_assert_eq(bpe_result_to_kv(r, NULL, &kv, &err), 0, "%s", err.msg);
    tok *g;
    cr_assert_eq(tok_from_kv(&kv, "kv", &g, &err), 0, "%s", err.msg);
    const char *text = "First Citizen:\nBefore we proceed any further, hear me speak.<|endoftext|>  123 caf\xc3\xa9!";
    tok_opts to = { 0, 1 };
    int32_t *a, *b;
    size_t na, nb;
    cr_assert_eq(tok_encode(t, text, strlen(text), &to, &a, &na, &err), 0, "%s", err.msg);
    cr_assert_eq(tok_encode(g, text, strlen(text), &to, &b, &nb, &err), 0, "%s", err.msg);
    cr_assert_eq(na, nb);
    cr_assert_arr_eq(a, b, na * sizeof *a);
    int has_eot = 0;
    for (size_t i = 0; i < na; i++) has_eot |= a[i] == 0;
    cr_assert(has_eot);
    char *dec;
    size_t dl;
    cr_assert_eq(tok_decode(t, a, na, 1, &dec, &dl, &err), 0, "%s", err.msg);
    cr_assert_str_eq(dec, text);
    free(dec); free(a); free(b);
    tok_free(g); tok_free(t);
    av_kvs_release(&kv);
    bpe_result_free(r);
    unlink(path);
}

Test(hfjson, written_tokenizer_reads_back_gpt2) { check_roundtrip(NULL); }
Test(hfjson, written_tokenizer_reads_back_gpt4) { check_roundtrip("gpt4"); }

Test(hfjson, custom_regex_is_kept_but_not_gguf) {
    bpe_result *r = train_file(shared_path("reference/tokenizer/cs336/corpus.en"), 300, 0, "\\p{L}+|\\s+|[^\\s\\p{L}]+");
    cr_assert_null(r->pattern_name);
    const char *path = tmp_path(".json");
    av_err err;
    cr_assert_eq(tok_write_hfjson(r, NULL, path, &err), 0, "%s", err.msg);
    tok *t;
    cr_assert_eq(tok_load_hfjson(path, &t, &err), 0, "%s", err.msg);
    cr_assert_null(t->pre_name);
    cr_assert_not_null(t->pre);
    tok_free(t);
    av_kvs kv;
    av_kvs_init(&kv);
    cr_assert_eq(bpe_result_to_kv(r, NULL, &kv, &err), AV_EUNSUPPORTED);
    av_kvs_release(&kv);
    bpe_result_free(r);
    unlink(path);
}

static int load_str(const char *json, tok **t, av_err *err) {
    return tok_load_hfjson_mem(json, strlen(json), "t.json", t, err);
}

Test(hfjson, wordpiece_and_spm_styles) {
    tok *t;
    av_err err;
    const char *wp = "{\"model\":{\"type\":\"WordPiece\",\"unk_token\":\"[UNK]\",\"continuing_subword_prefix\":\"##\","
                     "\"vocab\":{\"[PAD]\":0,\"[UNK]\":1,\"[CLS]\":2,\"[SEP]\":3,\"hello\":4,\"##lo\":5}},"
                     "\"added_tokens\":[{\"id\":0,\"content\":\"[PAD]\",\"special\":true}]}";
    cr_assert_eq(load_str(wp, &t, &err), 0, "%s", err.msg);
    cr_assert_eq(tok_get_kind(t), TOK_WPM);
    size_t len;
    cr_assert_str_eq(tok_token_text(t, 4, &len), "\xe2\x96\x81hello");
    cr_assert_str_eq(tok_token_text(t, 5, &len), "lo");
    cr_assert_eq(t->unk, 1);
    cr_assert_eq(t->sep, 3);
    cr_assert_eq(t->types[1], TOK_TYPE_UNKNOWN);
    tok_free(t);
    const char *spm = "{\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\xe2\x96\x81\"},"
                      "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\xe2\x96\x81\"}]},"
                      "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":0}},"
                      "{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}]},"
                      "\"model\":{\"type\":\"BPE\",\"byte_fallback\":true,\"unk_token\":\"<unk>\","
                      "\"vocab\":{\"<unk>\":0,\"<s>\":1,\"</s>\":2,\"<0x0A>\":3,\"a\":4,\"b\":5,\"ab\":6,\"\xe2\x96\x81\":7,\"\xe2\x96\x81" "ab\":8},"
                      "\"merges\":[\"a b\",[\"\xe2\x96\x81\",\"ab\"]]},"
                      "\"added_tokens\":[{\"id\":1,\"content\":\"<s>\",\"special\":true},{\"id\":2,\"content\":\"</s>\",\"special\":true}]}";
    cr_assert_eq(load_str(spm, &t, &err), 0, "%s", err.msg);
    cr_assert_eq(tok_get_kind(t), TOK_SPM);
    cr_assert_eq(t->types[3], TOK_TYPE_BYTE);
    cr_assert_eq(t->types[1], TOK_TYPE_CONTROL);
    cr_assert_eq(t->bos, 1);
    cr_assert_eq(t->eos, 2);
    cr_assert(t->add_bos);
    cr_assert(t->add_space_prefix);
    cr_assert_float_eq(t->scores[6], -1.0f, 0);
    cr_assert_float_eq(t->scores[8], -2.0f, 0);
    tok_free(t);
}

Test(hfjson, malformed_inputs_fail_cleanly) {
    static const struct { const char *json; int code; const char *needle; } cases[] = {
        { "not json", AV_EFORMAT, "not valid JSON" },
        { "[1,2]", AV_EFORMAT, "not a JSON object" },
        { "{}", AV_EFORMAT, "'model'" },
        { "{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}", AV_EUNSUPPORTED, "Unigram" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":[]}}", AV_EFORMAT, "model.vocab" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{}}}", AV_EFORMAT, "empty" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-1}}}", AV_EFORMAT, "-1" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":99999999999}}}", AV_EFORMAT, "99999999999" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":16000000}}}", AV_EFORMAT, "far beyond" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":\"x\"}}}", AV_EFORMAT, "not an integer" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":0}}}", AV_EFORMAT, "both" },
        { "{\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1}}}", AV_EFORMAT,
          "merges" },
        { "{\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[\"a c\"]}}",
          AV_EFORMAT, "'c' is not in the vocabulary" },
        { "{\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[\"a b\"]}}",
          AV_EFORMAT, "'ab' is not in the vocabulary" },
        { "{\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[\"ab\"]}}",
          AV_EFORMAT, "merges[0]" },
        { "{\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[[1,2]]}}",
          AV_EFORMAT, "merges[0]" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}", AV_EUNSUPPORTED, "byte-level" },
        { "{\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"a\"},\"behavior\":\"Removed\"},"
          "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}", AV_EUNSUPPORTED, "Removed" },
        { "{\"pre_tokenizer\":{\"type\":\"Whitespace\"},\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}",
          AV_EUNSUPPORTED, "Whitespace" },
        { "{\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"},\"behavior\":\"Isolated\"},"
          "\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}",
          AV_EFORMAT, "regex" },
        { "{\"added_tokens\":[{\"id\":-5,\"content\":\"x\"}],\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}",
          AV_EFORMAT, "added_tokens[0]" },
        { "{\"added_tokens\":[{\"id\":1}],\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}",
          AV_EFORMAT, "content" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tok *t = (tok *)1;
        av_err err = { 0 };
        int rc = load_str(cases[i].json, &t, &err);
        cr_assert_eq(rc, cases[i].code, "case %zu: rc %d (%s)", i, rc, err.msg);
        cr_assert_null(t, "case %zu", i);
        cr_assert(strstr(err.msg, "t.json"), "case %zu: '%s' does not name the file", i, err.msg);
        cr_assert(strstr(err.msg, cases[i].needle), "case %zu: '%s' lacks '%s'", i, err.msg, cases[i].needle);
        cr_assert_null(strchr(err.msg, '\n'), "case %zu: one line", i);
    }
    tok *t;
    av_err err;
    cr_assert_eq(tok_load_hfjson("/nonexistent/tokenizer.json", &t, &err), AV_EIO);
}

/* GPT-2's encoder.json/vocab.bpe as a tokenizer.json (as HF's gpt2 one is laid
 * out) gives tiktoken's gpt2 ids (shared/reference/tokenizer/tiktoken). */
Test(hfjson, gpt2_tokenizer_json_matches_tiktoken) {
    json_error_t je;
    json_t *vocab = json_load_file(shared_path("vocab/gpt2/vocab.json"), 0, &je);
    cr_assert(vocab, "%s", je.text);
    size_t n;
    char *mt = (char *)slurp(shared_path("vocab/gpt2/merges.txt"), &n);
    cr_assert(mt);
    json_t *merges = json_array();
    char *save = NULL;
    for (char *l = strtok_r(mt, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
        if (strncmp(l, "#version", 8)) json_array_append_new(merges, json_string(l));
    free(mt);
    json_t *root = json_pack("{s:[{s:i, s:s, s:b}], s:{s:s, s:b}, s:{s:s}, s:{s:s, s:o, s:o}}",
                             "added_tokens", "id", 50256, "content", "<|endoftext|>", "special", 1,
                             "pre_tokenizer", "type", "ByteLevel", "add_prefix_space", 0,
                             "decoder", "type", "ByteLevel",
                             "model", "type", "BPE", "vocab", vocab, "merges", merges);
    cr_assert(root);
    char *js = json_dumps(root, 0);
    json_decref(root);
    tok *t;
    av_err err;
    cr_assert_eq(tok_load_hfjson_mem(js, strlen(js), "gpt2.json", &t, &err), 0, "%s", err.msg);
    free(js);
    cr_assert_eq(tok_n_vocab(t), 50257);
    cr_assert_str_eq(t->pre_name, "gpt-2");
    static const struct { const char *input, *ids; size_t bytes; int special; } cases[] = {
        { "data/tinyshakespeare.txt", "tinyshakespeare_200k.ids.json", 200000, 0 },
        { "reference/tokenizer/cs336/german.txt", "german.ids.json", 0, 0 },
        { "reference/tokenizer/cs336/tinystories_sample.txt", "tinystories_sample.special.ids.json", 0, 1 },
        { "reference/tokenizer/cs336/special_token_double_newlines_non_whitespace.txt",
          "special_token_double_newlines_non_whitespace.special.ids.json", 0, 1 },
        { "reference/tokenizer/inputs/tokenizer_edge_cases.txt", "tokenizer_edge_cases.ids.json", 0, 0 },
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char *text = (char *)slurp(shared_path(cases[c].input), &n);
        cr_assert(text, "%s", cases[c].input);
        if (cases[c].bytes && cases[c].bytes < n) n = cases[c].bytes;
        char rel[256];
        snprintf(rel, sizeof rel, "reference/tokenizer/tiktoken/gpt2/%s", cases[c].ids);
        json_t *exp = json_load_file(shared_path(rel), 0, &je);
        cr_assert(exp, "%s: %s", rel, je.text);
        tok_opts o = { 0, cases[c].special };
        int32_t *ids;
        size_t k;
        cr_assert_eq(tok_encode(t, text, n, &o, &ids, &k, &err), 0, "%s", err.msg);
        cr_assert_eq(k, json_array_size(exp), "%s: %zu ids, tiktoken %zu", cases[c].input, k, json_array_size(exp));
        for (size_t i = 0; i < k; i++)
            cr_assert_eq(ids[i], json_integer_value(json_array_get(exp, i)), "%s: id %zu", cases[c].input, i);
        free(ids); free(text);
        json_decref(exp);
    }
    tok_free(t);
}
