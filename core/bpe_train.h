/* bpe_train.h — byte-level BPE training (GPT-2 style), exactly the CS336 rule.
 *
 * The corpus is streamed in windows (never read whole): special tokens are cut
 * out of the text first (they contribute no bytes and no pair spans them),
 * every piece is split with a pre-tokenization regex, identical pre-tokens are
 * counted (OpenMP, one table per thread, merged), and merges are learned with
 * incremental pair counts and a max-heap: highest pair count first, ties
 * broken by the lexicographically greater pair of byte strings (left token's
 * bytes first, then right; unsigned bytes, a proper prefix is smaller) — the
 * rule of Stanford CS336 assignment 1, whose reference merges this reproduces.
 *
 * Vocabulary id order (the same as HF tokenizers' BpeTrainer with a ByteLevel
 * alphabet, and as the CS336 reference vocab): ids [0, n_special) are the
 * special tokens in the order given, then the 256 single bytes sorted by their
 * GPT-2 bytes_to_unicode code point (0x21..0x7E, 0xA1..0xAC, 0xAE..0xFF, then
 * 0x00..0x20, 0x7F..0xA0, 0xAD), then one token per merge in merge order.
 *
 * Windows are cut only where no pre-token can span the cut for the built-in
 * patterns (between an ASCII letter and " " + ASCII letter, or after "\n"
 * preceded by a non-space and followed by an ASCII letter, never inside a
 * special token), so results do not depend on the window size. A custom regex
 * is assumed to behave the same at those points. Bytes the regex does not
 * match (e.g. invalid UTF-8) form pre-tokens of their own, so no byte is lost. */
#ifndef AV_BPE_TRAIN_H
#define AV_BPE_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "kv.h"

/* Progress: done/total in bytes while counting, then merges done / merges wanted
 * (phase 0 = reading the corpus, 1 = merging). Called from the calling thread. */
typedef void (*bpe_progress_fn)(void *ud, int phase, uint64_t done, uint64_t total);

typedef struct bpe_train_opts {
    int vocab_size;               /* total: specials + 256 bytes + merges (>= 256 + n_specials) */
    const char *const *specials;  /* special tokens (UTF-8 text), may be NULL when n_specials 0 */
    size_t n_specials;
    const char *pattern;          /* "gpt2" (NULL), "gpt4" (cl100k), "llama3", or a PCRE2 regex */
    int min_frequency;            /* stop when the best pair occurs fewer times (<= 1: never) */
    int n_threads;                /* OpenMP threads for counting; <= 0: OpenMP default */
    size_t window_bytes;          /* streaming window; 0: 8 MiB per thread */
    bpe_progress_fn progress;     /* may be NULL */
    void *progress_ud;
} bpe_train_opts;

/* Fill o with defaults: vocab 8192, no specials, gpt2 pattern, min_frequency 0. */
void bpe_train_opts_init(bpe_train_opts *o);

typedef struct bpe_result {
    int32_t n_vocab;
    av_str *vocab;          /* [n_vocab] raw bytes of each token (NUL-terminated copies) */
    int32_t n_special;      /* ids [0, n_special) are the special tokens */
    int32_t n_merges;
    int32_t *merges;        /* [n_merges][2] left id, right id; merge k made id n_special + 256 + k */
    int64_t *merge_counts;  /* [n_merges] pair count at the time of the merge */
    char *pattern;          /* the regex actually used (owned) */
    char *pattern_name;     /* "gpt2", "gpt4", "llama3" or NULL for a custom regex (owned) */
    uint64_t n_bytes;       /* corpus bytes read */
    uint64_t n_pretokens;   /* pre-tokens counted (with repetition) */
    uint64_t n_words;       /* distinct pre-tokens */
} bpe_result;

/* Regex for a pattern name ("gpt2", "gpt4", "llama3"); NULL for anything else. */
const char *bpe_pattern_regex(const char *name);

/* Train on n files streamed in order (one corpus; no pre-token spans two files).
 * *out is owned by the caller (bpe_result_free). Errors: AV_EINVAL (vocab_size
 * too small, bad regex, empty/duplicate special), AV_EIO (names the file),
 * AV_ENOMEM. */
int bpe_train_files(const char *const *paths, size_t n, const bpe_train_opts *o,
                    bpe_result **out, av_err *err);

/* Train on len bytes in memory. Same result as a file holding the bytes. */
int bpe_train_mem(const char *text, size_t len, const bpe_train_opts *o,
                  bpe_result **out, av_err *err);

void bpe_result_free(bpe_result *r); /* NULL-safe */

/* Write r as an HF tokenizer.json (byte-level BPE; loads in HF tokenizers):
 * specials as added_tokens (special: true), ByteLevel pre-tokenizer (gpt2) or
 * Split(regex, Isolated) + ByteLevel(use_regex false), ByteLevel decoder and
 * post-processor, vocab in GPT-2 mapped text, merges as "a b". Written
 * atomically. o may be NULL (pattern taken from r). Errors: AV_EIO, AV_ENOMEM. */
int tok_write_hfjson(const bpe_result *r, const bpe_train_opts *o, const char *path, av_err *err);

/* Put r into kv as GGUF tokenizer.ggml.* keys: model "gpt2", pre ("gpt-2" for
 * gpt2, "llama-bpe" for gpt4/llama3), tokens (mapped text), token_type
 * (specials CONTROL, others NORMAL), merges; the first special (if any) is
 * bos and eos, add_bos false. Errors: AV_EUNSUPPORTED for a custom regex
 * (GGUF names pre-tokenizers, it cannot carry a regex), AV_ENOMEM. */
int bpe_result_to_kv(const bpe_result *r, const bpe_train_opts *o, av_kvs *kv, av_err *err);

/* GPT-2 mapped text of bytes s[0..n) (malloc'd, NUL-terminated; NULL: out of memory). */
char *bpe_bytes_to_mapped(const uint8_t *s, size_t n, size_t *out_len);

#endif
