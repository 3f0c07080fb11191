/* rowstore.h: random access to the rows of a finished store, for browsing.
 *
 * Opens the segments of a store directory (lazily, each on first use), maps a
 * global token row to its segment by binary search over first_row, and keeps
 * the most recently decoded blocks so reading many rows in ascending order
 * decodes each block once. Used for lookups by sequence, co-occurrence and the
 * windows of sampled examples. Not thread-safe: one per cursor/query. */
#ifndef SAELITE_ROWSTORE_H
#define SAELITE_ROWSTORE_H

#include <stdint.h>

#include "common.h"

typedef struct sl_rowstore sl_rowstore;

/* Lists the segments (seg-000000.sls up to the highest number, none missing)
 * and opens the first and the last; the rest open when a row needs them. */
sl_rowstore *sl_rowstore_open(const char *store_dir, sl_err *err);
void sl_rowstore_close(sl_rowstore *rs);

uint64_t sl_rowstore_n_rows(const sl_rowstore *rs); /* rows in all segments */
uint32_t sl_rowstore_seq_len(const sl_rowstore *rs);

/* One row: its token and its nonzeros (cols ascending). The pointers stay
 * valid until the next call on rs. A row outside the store is an error. */
typedef struct sl_row {
    int32_t token;
    uint32_t nnz;
    const uint32_t *col;
    const float *val;
} sl_row;

int sl_rowstore_row(sl_rowstore *rs, uint64_t row, sl_row *out, sl_err *err);

/* Only the row's token: decodes the segment's token section (kept while the
 * segment stays open), not its blocks. */
int sl_rowstore_token(sl_rowstore *rs, uint64_t row, int32_t *token, sl_err *err);

#endif
