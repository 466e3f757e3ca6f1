/* shard.h — token datasets for training: a seekable, zstd-compressed file of
 * token ids, its writer, text -> shards preparation, and a deterministic
 * random-window batch loader that never loads the whole dataset.
 *
 * File format (all integers little-endian), version 1:
 *
 *   offset  size  field
 *   0       8     magic "ANVLTOK1"
 *   8       4     u32 version = 1
 *   12      4     u32 vocab_size      ids are in [0, vocab_size); 1 .. 2^31-1
 *   16      4     u32 token_bytes     2 (u16 ids, needs vocab_size <= 65536) or 4 (u32 ids)
 *   20      4     u32 frame_tokens    tokens per frame (the last may hold fewer); 1 .. 2^24
 *   24      8     u64 n_tokens
 *   32      8     u64 n_frames        = ceil(n_tokens / frame_tokens)
 *   40      16*n_frames               frame index: {u64 offset, u64 compressed_size} per frame;
 *                                     offset is absolute in the file
 *   ...                               the frames: frame i is one zstd frame (content size
 *                                     recorded) of min(frame_tokens, n_tokens - i*frame_tokens)
 *                                     ids, token_bytes each, little-endian
 *
 * Frames are stored in order and back to back: frame 0 starts right after the
 * index and the last frame ends at the end of the file. The reader checks all
 * of this (and each frame's recorded content size) when it opens a file, and
 * each frame's decompressed length and ids when it first decodes it; a
 * truncated or corrupted file is an AV_EFORMAT error naming the file and the
 * field, never a crash. Writers pick token_bytes = 2 when vocab_size <= 65536.
 *
 * Not thread-safe: a shard (and a loader over it) belongs to one thread at a
 * time; open the file once per thread to read in parallel. */
#ifndef AV_SHARD_H
#define AV_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "gguf.h" /* av_progress_fn */
#include "tokenizer.h"

#define SHARD_MAGIC "ANVLTOK1"
#define SHARD_VERSION 1u
#define SHARD_HEADER_SIZE 40u
#define SHARD_INDEX_ENTRY 16u
#define SHARD_FRAME_TOKENS (1u << 16)     /* default: 128 KiB of u16 ids per frame */
#define SHARD_MAX_FRAME_TOKENS (1u << 24) /* limit enforced by reader and writer */
#define SHARD_CACHE_BYTES (32u << 20)     /* decompressed frames a reader keeps (LRU; at least 2) */

/* ------------------------------------------------------------------ reader */

typedef struct shard shard; /* opaque */

/* Open a shard file (mmap'd; frames are decompressed on demand and the
 * last SHARD_CACHE_BYTES of them kept). *out owned
 * by the caller (shard_free). Errors: AV_EIO, AV_EFORMAT (message names the
 * file and the bad field), AV_ENOMEM. */
int shard_open(const char *path, shard **out, av_err *err);
/* The same over size bytes in memory; data is borrowed and must outlive the
 * shard. name is used in messages. */
int shard_open_mem(const void *data, size_t size, const char *name, shard **out, av_err *err);
void shard_free(shard *sh); /* NULL-safe */

uint64_t shard_n_tokens(const shard *sh);
uint32_t shard_vocab(const shard *sh);
uint32_t shard_token_bytes(const shard *sh);
uint32_t shard_frame_tokens(const shard *sh);
uint64_t shard_n_frames(const shard *sh);
const char *shard_name(const shard *sh); /* the path or name given at open */

/* Copy ids [start, start + n) into out[n], across frames as needed.
 * Errors: AV_EINVAL (range outside the shard), AV_EFORMAT (a frame does not
 * decompress to its size, or holds an id >= vocab_size), AV_ENOMEM. */
int shard_read(shard *sh, uint64_t start, size_t n, int32_t *out, av_err *err);

/* 0 when every id of the shard fits a model with model_vocab embeddings
 * (shard vocab_size <= model_vocab); else AV_EINVAL naming both sizes. */
int shard_check_vocab(const shard *sh, int64_t model_vocab, av_err *err);

/* ------------------------------------------------------------------ writer */

typedef struct shard_writer shard_writer; /* opaque */

/* Start writing path atomically (av_out: temp file, fsync, rename on commit).
 * Compressed frames wait in an unlinked scratch file beside path until commit
 * (the index precedes them), so memory stays at one frame whatever the size.
 * frame_tokens 0 means SHARD_FRAME_TOKENS. zstd level 3.
 * Errors: AV_EINVAL (vocab_size or frame_tokens out of range), AV_EIO, AV_ENOMEM. */
int shard_writer_open(const char *path, uint32_t vocab_size, uint32_t frame_tokens, shard_writer **out,
                      av_err *err);
/* Append n ids. Errors: AV_EINVAL (an id outside [0, vocab_size), naming it), AV_EIO. */
int shard_writer_add(shard_writer *w, const int32_t *ids, size_t n, av_err *err);
uint64_t shard_writer_n_tokens(const shard_writer *w);
/* Flush the last frame, write header + index + frames, commit. Frees w.
 * *file_size (may be NULL) receives the size of the file written. */
int shard_writer_commit(shard_writer *w, uint64_t *file_size, av_err *err);
void shard_writer_abort(shard_writer *w); /* remove temp files, free; NULL-safe */

/* ------------------------------------------------------------ text -> shards */

typedef struct shard_prep_opts {
    uint32_t frame_tokens;  /* 0: SHARD_FRAME_TOKENS */
    int bos;                /* put BOS before every non-empty document (input file) */
    int parse_special;      /* special-token text (<|endoftext|>) becomes its id, as `tokenizer encode` */
    double val_fraction;    /* no val files: the last fraction of the text goes to val (0: no val) */
    int n_threads;          /* chunks encoded in parallel; <= 0: OpenMP's default */
    size_t chunk_bytes;     /* text per tok_encode call; 0: 64 KiB */
    av_progress_fn progress; /* (ud, text bytes done, total); may be NULL */
    void *progress_ud;
} shard_prep_opts;

typedef struct shard_prep_stats {
    uint64_t text_bytes;              /* all input text */
    uint64_t train_text_bytes, val_text_bytes;
    uint64_t train_tokens, val_tokens;
    uint64_t train_file_bytes, val_file_bytes; /* shard sizes on disk */
    int split_file;                   /* fraction split: index into train_files where val starts, else -1 */
    uint64_t split_offset;            /*   and the byte offset in that file */
    uint64_t n_chunk_splits;          /* documents were cut into chunks at this many line starts */
} shard_prep_stats;

/* Tokenize text files into a train shard (and a val shard). The ids equal
 * tok_encode of each whole document (no BOS/EOS added by the vocabulary;
 * with o->bos a BOS before each one); documents are the input files. Text is
 * mmap'd and encoded in chunks of about chunk_bytes, cut only at line starts
 * where no pre-tokenizer piece or vocabulary token can span the cut (a line
 * ending in "\n" without trailing whitespace, the next starting with a
 * non-space byte that no token has after a "\n"), continuations encoded
 * without the SPM space prefix — so memory stays bounded and the ids are
 * those of the whole text. A file with no such line start is encoded whole.
 * Validation: val_files (n_val > 0) go to val_out; otherwise with
 * o->val_fraction F in (0, 1) the text from byte (1 - F) * total of the
 * concatenated train files, moved forward to the next such line start, goes
 * to val_out (train and val together then hold exactly the ids of the whole
 * text; val starts mid-document, without BOS). val_out NULL: no val shard.
 * Threads encode consecutive chunks in parallel; the output does not depend
 * on their number.
 * Errors: AV_EIO, AV_EINVAL (bad fraction, empty split, no BOS in vocab),
 * AV_ENOMEM, tokenizer errors; outputs are left untouched on failure. */
int shard_prepare(const tok *t, const char *const *train_files, int n_train, const char *const *val_files,
                  int n_val, const char *train_out, const char *val_out, const shard_prep_opts *o,
                  shard_prep_stats *st, av_err *err);

/* FNV-1a 64 over the vocabulary: n_vocab, then each token's stored text with
 * its length (u32 little-endian). Equal for a tokenizer.bin and the GGUF
 * converted from it; meta.json records it so a trainer can check that a
 * dataset and a model share a vocabulary. */
uint64_t shard_vocab_hash(const tok *t);

/* ------------------------------------------------------------------ loader */

typedef struct shard_loader shard_loader; /* opaque */

/* Random-window batches over sh (borrowed; must outlive the loader): each
 * window starts at a uniform position in [0, n_tokens - T - 1] drawn from
 * xoshiro256** seeded by splitmix64(seed) (smp_rng), so a seed gives the same
 * batches on every machine. Errors: AV_ENOMEM. */
int shard_loader_new(shard *sh, uint64_t seed, shard_loader **out, av_err *err);
void shard_loader_free(shard_loader *l); /* NULL-safe */

/* Fill inputs[B, T] and targets[B, T] (row-major, T fastest; targets are the
 * inputs shifted by one: window row b is ids[s_b .. s_b + T]). Errors:
 * AV_EINVAL (B or T < 1, or the shard has fewer than T + 1 tokens),
 * shard_read's errors. A failed call leaves the loader state unchanged. */
int shard_next_batch(shard_loader *l, int B, int T, int32_t *inputs, int32_t *targets, av_err *err);

/* Windows drawn so far. */
uint64_t shard_loader_position(const shard_loader *l);

/* Loader state as a fixed-size little-endian blob (seed, rng, position, and
 * the shard's n_tokens/vocab for a sanity check), for checkpoints: load it
 * into a loader over the same shard and the following batches are
 * bit-identical. */
size_t shard_loader_state_size(void);
void shard_loader_save(const shard_loader *l, void *buf /* [shard_loader_state_size()] */);
/* Errors: AV_EFORMAT (wrong size/magic/version), AV_EINVAL (the state
 * belongs to a shard of another size or vocabulary). */
int shard_loader_load(shard_loader *l, const void *buf, size_t n, av_err *err);

#endif
