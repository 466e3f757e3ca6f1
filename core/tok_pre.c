/* tok_pre.c — regex pre-tokenizers for byte-level BPE (tokenizer.ggml.pre).
 *
 * Each pre-tokenizer is a list of regexes applied in sequence, as llama.cpp's
 * unicode_regex_split does: the first regex splits the text, each later one
 * splits every piece the previous one produced; the stretches between matches
 * are kept as pieces too. Lookarounds never see past the piece being split.
 *
 * The pattern lists are those of llama.cpp's llm_tokenizer_bpe (src/llama-vocab.cpp)
 * for each pre type. llama.cpp runs the GPT-2 and llama3 patterns through
 * hand-written matchers (unicode.cpp) that also implement a trailing "|\s+"
 * branch; we compile that branch into the pattern, which gives the same
 * pieces. Everything else goes through PCRE2 (UTF + UCP, JIT).
 *
 * Unicode categories come from PCRE2's tables, not llama.cpp's: they agree
 * except on characters whose category changed between Unicode versions.
 * One fix-up: PCRE2 10.42's UCP \s is \p{Z} plus \t\n\v\f\r, which leaves out
 * U+0085 (NEL), a White_Space character for llama.cpp, Rust regex (tiktoken)
 * and HF tokenizers; patterns are rewritten so \s and \S include/exclude it.
 *
 * Thread safety: a tok_pre is immutable after construction; each split call
 * allocates its own match data (pcre2 JIT code is shareable). */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <stdlib.h>
#include <string.h>

#include "tok_impl.h"

struct tok_pre {
    size_t n;
    pcre2_code **re;
};

/* ---- pattern lists (llama.cpp's regex_exprs per pre type) ---- */

#define P_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
#define P_LLAMA3 "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|" \
                 "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define P_QWEN2 "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|" \
                "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define P_CONTR_OPT "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?"
#define P_GPT4O "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+" P_CONTR_OPT \
                "|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*" P_CONTR_OPT \
                "|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define P_TEKKEN "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+" \
                 "|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*" \
                 "|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define P_DS3 "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|" \
              " ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"
#define P_PORO " ?[^(\\s|.,!?\xe2\x80\xa6\xe3\x80\x82\xef\xbc\x8c\xe3\x80\x81\xe0\xa5\xa4\xdb\x94\xd8\x8c)]+"

static const char *const pats_default[] = {"[\\p{P}\\$\\+<=>\\^~\\|]+", P_GPT2, "\\p{N}+", "[0-9][0-9][0-9]", NULL};
static const char *const pats_gpt2[] = {P_GPT2, NULL};
static const char *const pats_llama3[] = {P_LLAMA3, NULL};
static const char *const pats_qwen2[] = {P_QWEN2, NULL};
static const char *const pats_falcon[] = {"[\\p{P}\\$\\+<=>\\^~\\|`]+", P_GPT2, "[0-9][0-9][0-9]", NULL};
static const char *const pats_starcoder[] = {"\\p{N}", P_GPT2, NULL};
static const char *const pats_ds_coder[] = {
    "[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+",
    "[\xe4\xb8\x80-\xe9\xbe\xa5\xe0\xa0\x80-\xe4\xb8\x80\xea\xb0\x80-\xed\x9f\xbf]+", /* [一-龥ࠀ-一가-퟿]+ */
    "\\p{N}", NULL};
static const char *const pats_ds_llm[] = {
    "[\r\n]",
    /* \s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+ */
    "\\s?[A-Za-z\\x{b5}\\x{c0}-\\x{d6}\\x{d8}-\\x{f6}\\x{f8}-\\x{1ba}\\x{1bc}-\\x{1bf}\\x{1c4}-\\x{293}"
    "\\x{295}-\\x{2af}\\x{370}-\\x{373}\\x{376}\\x{377}\\x{37b}-\\x{37d}\\x{37f}\\x{386}\\x{388}-\\x{38a}"
    "\\x{38c}\\x{38e}-\\x{3a1}\\x{3a3}-\\x{3f5}\\x{3f7}-\\x{481}\\x{48a}-\\x{52f}\\x{531}-\\x{556}"
    "\\x{10a0}-\\x{10c5}\\x{13a0}-\\x{13f5}\\x{13f8}-\\x{13fd}\\x{1c90}-\\x{1cba}\\x{1cbd}-\\x{1cbf}"
    "\\x{1d00}-\\x{1d2b}\\x{1d6b}-\\x{1d77}\\x{1d79}-\\x{1d9a}\\x{1e00}-\\x{1f15}\\x{1f18}-\\x{1f1d}"
    "\\x{1f20}-\\x{1f45}\\x{1f48}-\\x{1f4d}\\x{1f50}-\\x{1f57}\\x{1f59}\\x{1f5b}\\x{1f5d}\\x{1f5f}-\\x{1f7d}"
    "\\x{1f80}-\\x{1fb4}\\x{1fb6}-\\x{1fbc}\\x{1fbe}\\x{1fc2}-\\x{1fc4}\\x{1fc6}-\\x{1fcc}\\x{1fd0}-\\x{1fd3}"
    "\\x{1fd6}-\\x{1fdb}\\x{1fe0}-\\x{1fec}\\x{1ff2}-\\x{1ff4}\\x{1ff6}-\\x{1ffc}\\x{2102}\\x{2107}"
    "\\x{210a}-\\x{2113}\\x{2115}\\x{2119}-\\x{211d}\\x{2124}\\x{2126}\\x{2128}\\x{212a}-\\x{212d}"
    "\\x{212f}-\\x{2134}\\x{2139}\\x{213c}-\\x{213f}\\x{2145}-\\x{2149}\\x{214e}\\x{2183}\\x{2184}"
    "\\x{2c00}-\\x{2c7b}\\x{2c7e}-\\x{2ce4}\\x{2ceb}-\\x{2cee}\\x{2cf2}\\x{2cf3}\\x{a640}-\\x{a66d}"
    "\\x{a680}-\\x{a69b}\\x{a722}-\\x{a76f}\\x{a771}-\\x{a787}\\x{a78b}-\\x{a78e}\\x{ab70}-\\x{abbf}"
    "\\x{fb00}-\\x{fb06}\\x{fb13}-\\x{fb17}\\x{ff21}-\\x{ff3a}\\x{ff41}-\\x{ff5a}\\x{10400}-\\x{1044f}"
    "\\x{104b0}-\\x{104d3}\\x{104d8}-\\x{104fb}\\x{10c80}-\\x{10cb2}\\x{10cc0}-\\x{10cf2}\\x{118a0}-\\x{118df}"
    "\\x{1e900}-\\x{1e943}]+",
    /* \s?[!-/:-~！-／：-～‘-‟　-。]+ */
    "\\s?[!-/:-~\\x{ff01}-\\x{ff0f}\\x{ff1a}-\\x{ff5e}\\x{2018}-\\x{201f}\\x{3000}-\\x{3002}]+",
    "\\s+$",
    "[\\x{4e00}-\\x{9fa5}\\x{800}-\\x{4e00}\\x{ac00}-\\x{d7ff}]+", /* [一-龥ࠀ-一가-퟿]+ */
    "\\p{N}+", NULL};
static const char *const pats_ds3[] = {"\\p{N}{1,3}", "[\\x{4e00}-\\x{9fa5}\\x{3040}-\\x{309f}\\x{30a0}-\\x{30ff}]+",
                                       P_DS3, NULL};
static const char *const pats_poro[] = {P_PORO, NULL};
static const char *const pats_viking[] = {P_PORO, "\\p{N}", NULL};
static const char *const pats_tekken[] = {P_TEKKEN, NULL};
static const char *const pats_gpt4o[] = {P_GPT4O, NULL};
static const char *const pats_chameleon[] = {
    "<sentinel:[0-9]+>", "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z", "([\\t\\n]|    |  )", "\\p{N}",
    "[\\p{P}!-/:-@\\[-`{-~]", P_GPT2, NULL};
static const char *const pats_superbpe[] = {"\\p{N}+", "(?=(\\d{3})+(?!\\d))", NULL};
static const char *const pats_bailing[] = {
    "'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]|\\s+(?!\\S)|\\s+", NULL};
static const char *const pats_seed_coder[] = {
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1}|"
    " ?[^\\s\\p{L}\\p{N}\\r\\n]+|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+", NULL};

/* tokenizer.ggml.pre value -> pattern list (the names llama.cpp accepts) */
static const struct { const char *name; const char *const *pats; } pre_table[] = {
    {"default", pats_default},
    {"llama3", pats_llama3}, {"llama-v3", pats_llama3}, {"llama-bpe", pats_llama3}, {"falcon3", pats_llama3},
    {"falcon-h1", pats_llama3}, {"pixtral", pats_llama3}, {"midm-2.0", pats_llama3}, {"lfm2", pats_llama3},
    {"dbrx", pats_llama3}, {"smaug-bpe", pats_llama3}, {"glm4", pats_llama3}, {"chatglm-bpe", pats_llama3},
    {"deepseek-llm", pats_ds_llm}, {"deepseek-coder", pats_ds_coder},
    {"deepseek-v3", pats_ds3}, {"hunyuan-dense", pats_ds3},
    {"falcon", pats_falcon},
    {"mpt", pats_gpt2}, {"gpt-2", pats_gpt2}, {"phi-2", pats_gpt2}, {"jina-es", pats_gpt2}, {"jina-de", pats_gpt2},
    {"gigachat", pats_gpt2}, {"jina-v2-es", pats_gpt2}, {"jina-v2-de", pats_gpt2}, {"a.x-4.0", pats_gpt2},
    {"mellum", pats_gpt2}, {"jina-v1-en", pats_gpt2}, {"jina-v2-code", pats_gpt2}, {"roberta-bpe", pats_gpt2},
    {"olmo", pats_gpt2}, {"jais", pats_gpt2}, {"trillion", pats_gpt2}, {"granite-docling", pats_gpt2},
    {"starcoder", pats_starcoder}, {"refact", pats_starcoder}, {"command-r", pats_starcoder},
    {"smollm", pats_starcoder}, {"codeshell", pats_starcoder}, {"exaone", pats_starcoder},
    {"minerva-7b", pats_starcoder},
    {"qwen2", pats_qwen2}, {"deepseek-r1-qwen", pats_qwen2}, {"megrez", pats_qwen2}, {"stablelm2", pats_qwen2},
    {"hunyuan", pats_qwen2}, {"grok-2", pats_qwen2},
    {"poro-chat", pats_poro}, {"bloom", pats_poro}, {"gpt3-finnish", pats_poro},
    {"viking", pats_viking},
    {"tekken", pats_tekken},
    {"chameleon", pats_chameleon},
    {"gpt-4o", pats_gpt4o}, {"llama4", pats_gpt4o}, {"minimax-m2", pats_gpt4o},
    {"superbpe", pats_superbpe},
    {"bailingmoe", pats_bailing}, {"llada-moe", pats_bailing},
    {"seed-coder", pats_seed_coder},
};

/* ---- compilation ---- */

/* Rewrite \s / \S so that U+0085 counts as white space (see top comment).
 * Returns a malloc'd NUL-terminated copy, or NULL when out of memory. */
static char *fix_ws(const char *pat) {
    size_t n = strlen(pat);
    char *o = malloc(n * 4 + 16);
    if (!o) return NULL;
    size_t j = 0;
    int in_class = 0;
    for (size_t i = 0; i < n; i++) {
        char c = pat[i];
        if (c == '\\' && i + 1 < n) {
            char d = pat[i + 1];
            if (d == 's') {
                const char *r = in_class ? "\\s\\x{85}" : "[\\s\\x{85}]";
                memcpy(o + j, r, strlen(r)); j += strlen(r); i++;
                continue;
            }
            if (d == 'S' && !in_class) {
                const char *r = "[^\\s\\x{85}]";
                memcpy(o + j, r, strlen(r)); j += strlen(r); i++;
                continue;
            }
            o[j++] = c; o[j++] = d; i++;
            continue;
        }
        if (!in_class && c == '[') {
            in_class = 1;
            o[j++] = c;
            /* a ']' right after '[' or '[^' is a literal */
            if (i + 1 < n && pat[i + 1] == '^') o[j++] = pat[++i];
            if (i + 1 < n && pat[i + 1] == ']') o[j++] = pat[++i];
            continue;
        }
        if (in_class && c == ']') in_class = 0;
        o[j++] = c;
    }
    o[j] = 0;
    return o;
}

int tok_pre_new_patterns(const char *const *patterns, size_t n, tok_pre **out, av_err *err) {
    *out = NULL;
    tok_pre *p = calloc(1, sizeof *p);
    if (!p || !(p->re = calloc(n ? n : 1, sizeof *p->re))) {
        free(p);
        return av_errf(err, AV_ENOMEM, "pre-tokenizer: out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        char *fixed = fix_ws(patterns[i]);
        if (!fixed) { tok_pre_free(p); return av_errf(err, AV_ENOMEM, "pre-tokenizer: out of memory"); }
        int ec;
        PCRE2_SIZE eo;
        /* DOLLAR_ENDONLY: '$' means end of piece, as in ECMAScript/Rust */
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)fixed, PCRE2_ZERO_TERMINATED,
                                       PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY, &ec, &eo, NULL);
        free(fixed);
        if (!re) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(ec, msg, sizeof msg);
            tok_pre_free(p);
            return av_errf(err, AV_EFORMAT, "pre-tokenizer regex %zu '%.200s': %s at offset %zu", i, patterns[i],
                           (const char *)msg, (size_t)eo);
        }
        pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* failure: interpreter still works */
        p->re[p->n++] = re;
    }
    *out = p;
    return 0;
}

int tok_pre_new(const char *pre_name, tok_pre **out, av_err *err) {
    *out = NULL;
    if (!pre_name || !*pre_name) pre_name = "default";
    for (size_t i = 0; i < sizeof pre_table / sizeof pre_table[0]; i++) {
        if (strcmp(pre_table[i].name, pre_name) != 0) continue;
        size_t n = 0;
        while (pre_table[i].pats[n]) n++;
        return tok_pre_new_patterns(pre_table[i].pats, n, out, err);
    }
    return av_errf(err, AV_EUNSUPPORTED, "unknown pre-tokenizer type '%.100s' (tokenizer.ggml.pre)", pre_name);
}

void tok_pre_free(tok_pre *p) {
    if (!p) return;
    for (size_t i = 0; i < p->n; i++) pcre2_code_free(p->re[i]);
    free(p->re);
    free(p);
}

/* ---- splitting ---- */

typedef struct { size_t *v, n, cap; } offs;

static int offs_push(offs *o, size_t len) {
    if (o->n == o->cap) {
        size_t nc = o->cap ? o->cap * 2 : 64;
        size_t *nv = realloc(o->v, nc * sizeof *nv);
        if (!nv) return AV_ENOMEM;
        o->v = nv;
        o->cap = nc;
    }
    o->v[o->n++] = len;
    return 0;
}

/* Length in bytes of the UTF-8 character starting at s[0] (input is valid). */
static size_t u8len(unsigned char c) {
    return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

/* Split piece s[0..n) with re; append the lengths of matches and gaps to out. */
static int split_one(const pcre2_code *re, pcre2_match_data *md, pcre2_match_context *mc,
                     const char *s, size_t n, offs *out) {
    size_t pos = 0, prev = 0;
    uint32_t opts = 0;
    while (pos <= n) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, pos, opts | PCRE2_NO_UTF_CHECK, md, mc);
        if (rc == PCRE2_ERROR_NOMATCH) {
            if (!opts) break;
            /* no non-empty match at pos after an empty one: step one character */
            opts = 0;
            if (pos >= n) break;
            pos += u8len((unsigned char)s[pos]);
            continue;
        }
        if (rc < 0) return rc == PCRE2_ERROR_NOMEMORY ? AV_ENOMEM : AV_EINVAL;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (ms > prev && offs_push(out, ms - prev)) return AV_ENOMEM;
        if (me > ms && offs_push(out, me - ms)) return AV_ENOMEM;
        prev = me;
        pos = me;
        /* after an empty match, the next one must be non-empty at that spot */
        opts = me == ms ? PCRE2_NOTEMPTY_ATSTART | PCRE2_ANCHORED : 0;
        if (me == ms && pos >= n) break;
    }
    if (n > prev && offs_push(out, n - prev)) return AV_ENOMEM;
    return 0;
}

/* Strict UTF-8 check (no overlongs, surrogates or code points past U+10FFFF),
 * so that PCRE2 can run with PCRE2_NO_UTF_CHECK on every piece. */
static int valid_utf8(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) { i++; continue; }
        size_t k;
        uint32_t cp, min;
        if (c >= 0xC2 && c <= 0xDF) k = 2, cp = c & 0x1F, min = 0x80;
        else if (c >= 0xE0 && c <= 0xEF) k = 3, cp = c & 0x0F, min = 0x800;
        else if (c >= 0xF0 && c <= 0xF4) k = 4, cp = c & 0x07, min = 0x10000;
        else return 0;
        if (n - i < k) return 0;
        for (size_t j = 1; j < k; j++) {
            if ((s[i + j] & 0xC0) != 0x80) return 0;
            cp = cp << 6 | (s[i + j] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
        i += k;
    }
    return 1;
}

int tok_pre_split(const tok_pre *p, const char *s, size_t n, tok_piece_fn fn, void *ud) {
    if (n == 0) return 0;
    if (!p || p->n == 0) return fn(ud, s, n);
    if (!valid_utf8((const unsigned char *)s, n)) return AV_EINVAL; /* callers clean input first (tok_bpe.c) */
    int rc = 0;
    offs a = {0}, b = {0};
    pcre2_match_data *md = NULL;
    pcre2_match_context *mc = NULL;
    pcre2_jit_stack *js = NULL;
    uint32_t maxpairs = 1;
    for (size_t i = 0; i < p->n; i++) {
        uint32_t c = 0;
        pcre2_pattern_info(p->re[i], PCRE2_INFO_CAPTURECOUNT, &c);
        if (c + 1 > maxpairs) maxpairs = c + 1;
    }
    md = pcre2_match_data_create(maxpairs, NULL);
    if (!md || offs_push(&a, n)) { rc = AV_ENOMEM; goto done; }
    for (size_t r = 0; r < p->n; r++) {
        b.n = 0;
        size_t start = 0;
        for (size_t k = 0; k < a.n; k++) {
            rc = split_one(p->re[r], md, mc, s + start, a.v[k], &b);
            if (rc == AV_EINVAL && !js) {
                /* most likely the JIT stack (32 KiB default) ran out: retry with a large one */
                b.n = 0;
                js = pcre2_jit_stack_create(64 * 1024, 64 * 1024 * 1024, NULL);
                mc = pcre2_match_context_create(NULL);
                if (!js || !mc) { rc = AV_ENOMEM; goto done; }
                pcre2_jit_stack_assign(mc, NULL, js);
                r--; /* redo this regex from scratch */
                rc = 0;
                goto next_regex;
            }
            if (rc) goto done;
            start += a.v[k];
        }
        { offs t = a; a = b; b = t; }
    next_regex:;
    }
    {
        size_t start = 0;
        for (size_t k = 0; k < a.n; k++) {
            if (a.v[k] && (rc = fn(ud, s + start, a.v[k])) != 0) goto done;
            start += a.v[k];
        }
    }
done:
    free(a.v);
    free(b.v);
    pcre2_match_data_free(md);
    pcre2_match_context_free(mc);
    pcre2_jit_stack_free(js);
    return rc;
}
