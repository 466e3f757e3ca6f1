/* tokenizer.h — text <-> token ids for the vocabularies real models ship.
 *
 * Kinds: SentencePiece-style BPE as llama.cpp's "llama" model (scores, byte
 * fallback <0xXX>, U+2581 space prefix); GPT-2-style byte-level BPE (ranked
 * merges, bytes<->unicode mapping, regex pre-tokenizers by tokenizer.ggml.pre,
 * PCRE2 JIT) which also serves tiktoken rank files; WordPiece (BERT).
 * Sources: GGUF tokenizer.ggml.* metadata (a .gguf model or vocab file),
 * HF tokenizer.json, llama2.c tokenizer.bin, tiktoken .tiktoken files. */
#ifndef AV_TOKENIZER_H
#define AV_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "kv.h"

typedef struct tok tok; /* opaque; see tok_impl.h for implementers */

typedef enum tok_kind { TOK_SPM = 1, TOK_BPE = 2, TOK_WPM = 3 } tok_kind;

/* llama.cpp token types (tokenizer.ggml.token_type values) */
enum { TOK_TYPE_UNDEFINED = 0, TOK_TYPE_NORMAL = 1, TOK_TYPE_UNKNOWN = 2, TOK_TYPE_CONTROL = 3,
       TOK_TYPE_USER_DEFINED = 4, TOK_TYPE_UNUSED = 5, TOK_TYPE_BYTE = 6 };

/* Load any supported tokenizer file, chosen by extension/content: .gguf,
 * tokenizer.json, llama2.c tokenizer.bin, .tiktoken. *out owned by caller.
 * Errors: AV_EIO, AV_EFORMAT, AV_EUNSUPPORTED (message names file and cause). */
int tok_load(const char *path, tok **out, av_err *err);

/* Build from GGUF-style metadata (tokenizer.ggml.model, .pre, .tokens, .scores,
 * .token_type, .merges, special ids, add_bos/add_eos/add_space_prefix).
 * `name` is used in messages. Errors: AV_EFORMAT, AV_EUNSUPPORTED. */
int tok_from_kv(const av_kvs *kv, const char *name, tok **out, av_err *err);

/* Write the vocabulary as GGUF tokenizer.ggml.* keys into kv (replacing them). */
int tok_to_kv(const tok *t, av_kvs *kv, av_err *err);

void tok_free(tok *t); /* NULL-safe */

typedef struct tok_opts {
    int add_special;   /* add BOS/EOS as the vocabulary asks (llama.cpp add_special) */
    int parse_special; /* recognise special/added tokens written in the text */
} tok_opts;

/* Encode len bytes of text. *ids is malloc'd (caller frees), *n its length.
 * Invalid UTF-8 is handled like the reference tokenizers (see docs/FORMATS.md).
 * Errors: AV_ENOMEM. */
int tok_encode(const tok *t, const char *text, size_t len, const tok_opts *o,
               int32_t **ids, size_t *n, av_err *err);
/* The same for text that continues an earlier piece (chunked encoding of a
 * long text): no SPM space prefix at its start (after special tokens as usual). */
int tok_encode_continued(const tok *t, const char *text, size_t len, const tok_opts *o,
                         int32_t **ids, size_t *n, av_err *err);

/* Decode ids to text (*text malloc'd, NUL-terminated, *len bytes). Special
 * (control) tokens are rendered as their text when render_special is set.
 * Errors: AV_EINVAL for an id outside [0, n_vocab). */
int tok_decode(const tok *t, const int32_t *ids, size_t n, int render_special,
               char **text, size_t *len, av_err *err);

tok_kind tok_get_kind(const tok *t);
int32_t tok_n_vocab(const tok *t);
/* Stored text of token id (GGUF form), its byte length in *len. NULL if out of range. */
const char *tok_token_text(const tok *t, int32_t id, size_t *len);
/* Special ids, -1 when the vocabulary has none. */
int32_t tok_bos(const tok *t);
int32_t tok_eos(const tok *t);

#endif
