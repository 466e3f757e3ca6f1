/* tok_wpm.c — WordPiece as llama.cpp's llm_tokenizer_wpm (BERT vocabularies
 * converted to GGUF: word-initial pieces carry a U+2581 prefix, continuation
 * pieces are bare — there is no "##" in the GGUF text).
 *
 * preprocess: code points (invalid UTF-8 -> U+FFFD); NFD first code point when
 * stripping accents (lowercase implies strip_accents, as llama.cpp's default);
 * whitespace ends a word; NUL, U+FFFD and control chars are dropped; marks are
 * dropped; lowercase; punctuation, ASCII symbols and CJK ideographs become
 * single-char words. Each word, prefixed with U+2581, is cut greedily into the
 * longest vocabulary matches (byte positions); a word with a position that
 * matches nothing becomes [UNK]. */
#include <stdlib.h>
#include <string.h>

#include "tok_impl.h"
#include "unicode.h"

static int is_chinese(uint32_t c) {
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
           (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

/* greedy longest-match of one word (already prefixed with U+2581) */
static int encode_word(const tok *t, const char *w, size_t n, int32_t **ids, size_t *len, size_t *cap) {
    size_t start = *len;
    int matched_all = 1;
    for (size_t i = 0; i < n; i++) {
        size_t jmax = i + (size_t)t->max_token_len + 1;
        if (jmax > n) jmax = n;
        int match = 0;
        for (size_t j = jmax; j > i; j--) {
            int32_t id = av_strmap_get(&t->text_to_id, w + i, j - i);
            if (id >= 0) {
                if (tok_push(ids, len, cap, id)) return AV_ENOMEM;
                match = 1;
                i = j - 1;
                break;
            }
        }
        if (!match) {
            *len = start;
            matched_all = 0;
            break;
        }
    }
    (void)matched_all;
    if (*len == start && tok_push(ids, len, cap, t->unk)) return AV_ENOMEM;
    return 0;
}

static int flush(const tok *t, tok_buf *w, int32_t **ids, size_t *len, size_t *cap) {
    int rc = 0;
    if (w->n > 3) rc = encode_word(t, w->s, w->n, ids, len, cap);
    w->n = 3;
    return rc;
}

int tok_wpm_encode(const tok *t, const char *s, size_t n, int32_t **ids, size_t *len, size_t *cap) {
    /* BertNormalizer options: llama.cpp defaults lowercase = strip_accents = true */
    const int lowercase = 1, strip_accents = 1;
    tok_buf w = { 0 };
    int rc = AV_ENOMEM;
    if (tok_buf_add(&w, "\xe2\x96\x81", 3)) goto done;
    for (size_t pos = 0; pos < n;) {
        uint32_t cp;
        av_utf8_next(s, n, &pos, &cp);
        if (strip_accents) cp = av_uni_nfd_first(cp);
        unsigned f = av_uni_flags(cp);
        if (f & AV_UNI_WHITESPACE) {
            if (flush(t, &w, ids, len, cap)) goto done;
            continue;
        }
        if (cp == 0 || cp == 0xFFFD || (f & AV_UNI_CONTROL)) continue;
        if (strip_accents && (f & AV_UNI_MARK)) continue;
        char u[4];
        size_t ul = av_utf8_put(lowercase ? av_uni_tolower(cp) : cp, u);
        if ((f & AV_UNI_PUNCTUATION) || (cp < 0x7F && (f & AV_UNI_SYMBOL)) || is_chinese(cp)) {
            if (flush(t, &w, ids, len, cap) || tok_buf_add(&w, u, ul) || flush(t, &w, ids, len, cap)) goto done;
        } else if (tok_buf_add(&w, u, ul)) {
            goto done;
        }
    }
    if (flush(t, &w, ids, len, cap)) goto done;
    rc = 0;
done:
    free(w.s);
    return rc;
}
