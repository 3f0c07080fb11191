/* dataset.h: datasets of text or token ids, turned into the packed token file.
 *
 * Text sources yield documents; sl_dataset_tokenize encodes each with the
 * tokenizer and appends it to a tokfile writer (tokfile.h), which packs them
 * into sequences. Sources:
 *   .txt     one document per line (empty lines skipped), or the whole file as
 *            one document (text_mode "file")
 *   .jsonl   one JSON object per line; the document is its `field` (default
 *            "text"); lines whose field is missing, null or not a string are
 *            skipped and counted
 *   a SQL query, provided by the SQL layer through the same callback
 * Pre-tokenized sources (no tokenizer needed) go straight to the writer:
 *   .npy     1-D or 2-D, int32/int64/uint16/uint32 little-endian
 *   .safetensors  an integer tensor named "tokens" (or the only tensor), 1-D or 2-D
 *   .bin     raw little-endian uint16 (default) or uint32 ids, 1-D
 * A 1-D stream is packed like text; each row of a 2-D array is one document. */
#ifndef SAELITE_DATASET_H
#define SAELITE_DATASET_H

#include <stdint.h>

#include "common.h"
#include "tokenizer.h"
#include "tokfile.h"

/* Yields the next document: 1 with text/len/doc set, 0 at the end, -1 on error.
 * text stays valid until the next call. */
typedef int (*sl_doc_next_fn)(void *ctx, const char **text, size_t *len, uint64_t *doc, sl_err *err);

typedef struct sl_dataset_counts {
    uint64_t docs, skipped; /* documents read; rows skipped (empty, null, not text) */
} sl_dataset_counts;

typedef int (*sl_tokenize_progress_fn)(void *ctx, uint64_t docs, uint64_t tokens);

/* Encodes every document of a source into w (stops early once w is full). */
int sl_dataset_tokenize(const sl_tokenizer *tok, sl_doc_next_fn next, void *src, sl_tokfile_writer *w,
                        sl_dataset_counts *counts, sl_tokenize_progress_fn progress, void *pctx, sl_err *err);

/* A .txt or .jsonl file as a document source. */
typedef struct sl_text_source {
    char *path;
    void *file; /* FILE* */
    int whole_file, jsonl;
    char *field;
    char *line;
    size_t line_cap;
    uint64_t line_no;
    void *json; /* the current parsed line (json_t*) */
    uint64_t skipped;
} sl_text_source;

/* kind: "txt" or "jsonl" (NULL: from the extension); text_mode "lines" | "file". */
int sl_text_source_open(sl_text_source *s, const char *path, const char *kind, const char *text_mode,
                        const char *field, sl_err *err);
int sl_text_source_next(void *ctx, const char **text, size_t *len, uint64_t *doc, sl_err *err);
void sl_text_source_close(sl_text_source *s);

/* Writes a pre-tokenized file (.npy, .safetensors, .bin) into w. token_dtype is
 * "uint16" or "uint32" for .bin (NULL: uint16). Every id must be < vocab_size.
 * Special tokens: those tok lists, or without a tokenizer the id special_id.
 * For a 2-D input, begin w with seq_len = the row length, no BOS and no
 * separator, so each row is exactly one sequence. */
int sl_dataset_tokens_file(const char *path, const char *token_dtype, int32_t vocab_size, const sl_tokenizer *tok,
                           int32_t special_id, sl_tokfile_writer *w, sl_err *err);
/* Row length of a 2-D pre-tokenized file, 0 for 1-D; -1 on error. */
int64_t sl_dataset_tokens_row_len(const char *path, sl_err *err);

/* 1 if the path names a pre-tokenized file by its extension. */
int sl_dataset_is_token_file(const char *path);

#endif
