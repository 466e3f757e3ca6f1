/* tok_impl.h — the tokenizer's internals, shared by core/tok_*.c only.
 *
 * One struct for every kind: the vocabulary as GGUF stores it (text, scores,
 * types), a text->id map, BPE merge ranks keyed by (left id, right id), the
 * special ids and flags, and the pre-tokenizer. Each kind's encoder lives in
 * its own file (tok_spm.c, tok_bpe.c, tok_wpm.c) behind the functions below. */
#ifndef AV_TOK_IMPL_H
#define AV_TOK_IMPL_H

#include "hashmap.h"
#include "tokenizer.h"

typedef struct tok_pre tok_pre; /* compiled pre-tokenizer (tok_pre.c) */

struct tok {
    tok_kind kind;
    int32_t n_vocab;
    av_str *text;         /* [n_vocab] token text as stored: SPM with U+2581, BPE in GPT-2
                           * byte->unicode form, WPM as llama.cpp's GGUF: word starts with
                           * U+2581, continuations bare (no "##") */
    float *scores;        /* [n_vocab] or NULL */
    int32_t *types;       /* [n_vocab] TOK_TYPE_*, never NULL (NORMAL by default) */
    av_strmap text_to_id; /* stored text -> id */
    av_u64map merges;     /* BPE: (uint64)left << 32 | right -> rank (lower merges first) */
    char *pre_name;       /* tokenizer.ggml.pre, or NULL */
    tok_pre *pre;         /* BPE regex pre-tokenizer, or NULL */

    int32_t bos, eos, unk, sep, pad, cls, mask, eot; /* -1 if none */
    int add_bos, add_eos;      /* tokenizer.ggml.add_bos_token / add_eos_token (or kind defaults) */
    int add_space_prefix;      /* SPM: prepend U+2581 (tokenizer.ggml.add_space_prefix, default 1) */
    int remove_extra_ws;       /* SPM: tokenizer.ggml.remove_extra_whitespaces */
    int32_t byte_tok[256];     /* id of each single byte: SPM <0xXX>, BPE mapped char; -1 none */

    /* tokens recognised in text when parse_special (CONTROL, USER_DEFINED,
     * UNKNOWN types, as llama.cpp), longest first */
    int32_t *special;
    size_t n_special;

    /* added by tok.c (derived state; loaders need not fill them) */
    uint32_t *attr;            /* [n_vocab] llama.cpp token attributes TOK_ATTR_*, built by tok_finish
                                * from types + llama.cpp's by-text rules; tok_from_kv adds LSTRIP/RSTRIP */
    int32_t max_token_len;     /* longest token text in bytes (tok_finish) */
    int add_sep;               /* WPM: append SEP with add_special (tokenizer.ggml.add_sep_token) */
    int clean_spaces;          /* decode: llama.cpp's clean_spaces (" ," -> ",", ...) */
    int ignore_merges;         /* BPE: a pre-token that is itself a token is emitted whole (llama3) */
    int rank_merge;            /* BPE (tiktoken): no merges table; a pair's rank is the id of its
                                * concatenation when that is a NORMAL token (tok_load_tiktoken) */
};

/* llama.cpp llama_token_attr bits (tok->attr) */
enum { TOK_ATTR_UNDEFINED = 0, TOK_ATTR_UNKNOWN = 1 << 0, TOK_ATTR_UNUSED = 1 << 1, TOK_ATTR_NORMAL = 1 << 2,
       TOK_ATTR_CONTROL = 1 << 3, TOK_ATTR_USER_DEFINED = 1 << 4, TOK_ATTR_BYTE = 1 << 5,
       TOK_ATTR_NORMALIZED = 1 << 6, TOK_ATTR_LSTRIP = 1 << 7, TOK_ATTR_RSTRIP = 1 << 8,
       TOK_ATTR_SINGLE_WORD = 1 << 9 };

/* Allocate an empty tok (all ids -1, byte_tok -1). NULL if out of memory. */
tok *tok_alloc(void);
/* After text/scores/types are filled: build text_to_id, byte_tok, special list. */
int tok_finish(tok *t, const char *name, av_err *err);
/* llama.cpp's per-kind defaults for add_bos/add_eos/add_sep/add_space_prefix/
 * clean_spaces/ignore_merges and default special ids, from t->kind and t->pre_name
 * (call before reading overrides; ids >= n_vocab are dropped by tok_finish). */
void tok_defaults(tok *t);

/* Per-kind encoders of one fragment of plain text (no special tokens inside).
 * Append ids to *ids (capacity *cap, length *n; realloc as needed). */
int tok_spm_encode(const tok *t, const char *s, size_t n, int32_t **ids, size_t *len, size_t *cap);
int tok_bpe_encode(const tok *t, const char *s, size_t n, int32_t **ids, size_t *len, size_t *cap);
int tok_wpm_encode(const tok *t, const char *s, size_t n, int32_t **ids, size_t *len, size_t *cap);

/* A growable byte buffer, always with room for a terminating NUL. */
typedef struct tok_buf {
    char *s;
    size_t n, cap;
} tok_buf;
/* Append n bytes (realloc). 0 or AV_ENOMEM. */
int tok_buf_add(tok_buf *b, const char *p, size_t n);

/* Append one id (realloc). 0 or AV_ENOMEM. */
int tok_push(int32_t **ids, size_t *len, size_t *cap, int32_t id);

/* GPT-2 bytes<->unicode: byte b maps to code point tok_byte_to_cp[b];
 * tok_cp_to_byte returns the byte or -1. */
extern const uint16_t tok_byte_to_cp[256];
int tok_cp_to_byte(uint32_t cp);

/* Pre-tokenizer (tok_pre.c): compile the regex set for a tokenizer.ggml.pre
 * name (or a custom pattern list); split text into pieces via callback. */
int tok_pre_new(const char *pre_name, tok_pre **out, av_err *err);
int tok_pre_new_patterns(const char *const *patterns, size_t n, tok_pre **out, av_err *err);
void tok_pre_free(tok_pre *p);
typedef int (*tok_piece_fn)(void *ud, const char *s, size_t n);
int tok_pre_split(const tok_pre *p, const char *s, size_t n, tok_piece_fn fn, void *ud);

/* Loaders of other formats (tok_hfjson.c, tok_tiktoken.c). */
int tok_load_hfjson(const char *path, tok **out, av_err *err);
/* tokenizer.json held in memory (len bytes); name is used in messages. */
int tok_load_hfjson_mem(const char *buf, size_t len, const char *name, tok **out, av_err *err);
/* tokenizer.json text -> GGUF tokenizer.ggml.* keys added to kv (as convert_hf_to_gguf).
 * Errors: AV_EFORMAT, AV_EUNSUPPORTED (also for regexes no llama.cpp pre type names). */
int tok_hfjson_to_kv(const char *buf, size_t len, const char *name, av_kvs *kv, av_err *err);
int tok_load_tiktoken(const char *path, tok **out, av_err *err);

#endif
