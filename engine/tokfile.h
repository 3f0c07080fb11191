/* tokfile.h: the packed token file of a text dataset (tokens.slt in the store).
 *
 * Tokenizing a text dataset is a first pass that writes every sequence the
 * model will see, so the second pass (model + SAE) knows the exact totals and
 * reads tokens by mmap with bounded memory. One record per token position:
 *
 *   header   sl_tokfile_header (64 bytes)
 *   records  sl_tok_record [n_seq * seq_len]  (24 bytes each)
 *
 * record.token is -1 for padding (only the last sequence is padded); padding is
 * given to the model as token 0 at the end of the sequence, where causal
 * attention keeps it from touching real tokens, and never reaches the SAE.
 * doc is the document's index in the dataset (0-based line of a .txt/.jsonl,
 * row of a query); char_start/char_end is the token's span in that document in
 * Unicode characters (both 0 for BOS and padding). XXH64 of the records is in
 * the header. */
#ifndef SAELITE_TOKFILE_H
#define SAELITE_TOKFILE_H

#include <stdint.h>
#include <stdio.h>

#include "common.h"

#define SL_TOKFILE_NAME "tokens.slt"

typedef struct sl_tokfile_header {
    char magic[8]; /* "SAELTOK1" */
    uint32_t version, seq_len;
    uint64_t n_seq;
    uint64_t n_tokens;   /* real tokens: not padding */
    uint64_t n_special;  /* of which special (BOS, EOS, ...) */
    uint64_t n_docs;
    uint64_t checksum;
    uint64_t reserved;
} sl_tokfile_header;

typedef struct sl_tok_record {
    int32_t token;
    uint32_t char_start, char_end;
    uint8_t special; /* 1 for special tokens (excluded from statistics by default) */
    uint8_t pad_[3];
    uint64_t doc;
} sl_tok_record;

/* Streaming writer: tokens are appended and cut into sequences of seq_len. */
typedef struct sl_tokfile_writer {
    FILE *f;
    char *path, *tmp_path;
    uint32_t seq_len;
    int prepend_bos;
    int32_t bos_id;
    uint64_t n_seq, n_tokens, n_special, n_docs, max_tokens;
    uint32_t fill; /* positions used in the current sequence */
    void *hash;    /* XXH64 state */
    int full;      /* max_tokens reached */
} sl_tokfile_writer;

/* max_tokens: stop once that many real tokens are written (0 = no cap). */
int sl_tokfile_begin(sl_tokfile_writer *w, const char *store_dir, uint32_t seq_len, int prepend_bos, int32_t bos_id,
                     uint64_t max_tokens, sl_err *err);
/* Appends one document's tokens. Documents are packed back to back, separated
 * by BOS (when bos_id >= 0); every sequence starts with BOS when prepend_bos, so
 * a long document continues in the next sequences. */
int sl_tokfile_add_doc(sl_tokfile_writer *w, uint64_t doc, const int32_t *ids, const uint32_t *char_start,
                       const uint32_t *char_end, const uint8_t *special, size_t n, sl_err *err);
/* Appends more tokens to the current document (a long one fed in chunks). */
int sl_tokfile_add_more(sl_tokfile_writer *w, uint64_t doc, const int32_t *ids, const uint32_t *char_start,
                        const uint32_t *char_end, const uint8_t *special, size_t n, sl_err *err);
/* Pads the last sequence, writes the header, fsyncs and renames into place. */
int sl_tokfile_finish(sl_tokfile_writer *w, sl_err *err);
void sl_tokfile_abort(sl_tokfile_writer *w);

typedef struct sl_tokfile {
    const sl_tokfile_header *header;
    const sl_tok_record *records;
    void *map;
    size_t map_size;
} sl_tokfile;

int sl_tokfile_open(sl_tokfile *tf, const char *store_dir, sl_err *err);
void sl_tokfile_close(sl_tokfile *tf);

#endif
