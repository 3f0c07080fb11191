/* findex.h: the feature-major index of an extraction (index.sli).
 *
 * The segments (store.h) are row-major: fast to write, fast to read a token's
 * features. Browsing asks the other question, "where does feature f fire?",
 * so when an extraction finishes its nonzeros are transposed into one posting
 * list per feature: the rows where f is active, ascending, with their values
 * as stored (fp16-rounded unless a block was f32). Layout: docs/STORE_FORMAT.md.
 *
 * Built out of core: features are cut into ranges whose postings fit a memory
 * budget (n_active per feature is known from the statistics), and each range
 * is one pass over the segments. Written to a temporary file, fsynced, renamed.
 *
 * Per feature the index also keeps the exact p50, p90 and p99 of its stored
 * active values (linear interpolation between order statistics, as numpy's
 * default percentile), computed while the range is in memory. */
#ifndef SAELITE_FINDEX_H
#define SAELITE_FINDEX_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "results.h"

#define SL_FINDEX_FILE "index.sli"

/* Postings held in memory while building cost 12 bytes each (row + value). */
#define SL_FINDEX_DEFAULT_BUDGET ((size_t)256 << 20)

/* Called while building, after each segment read: done/total segment reads
 * (a segment is read once per pass). A nonzero return stops the build with
 * "interrupted". */
typedef int (*sl_findex_progress_fn)(void *ctx, uint64_t done, uint64_t total);

/* Builds DIR/index.sli. n_active[d_sae]: each feature's nonzero count (from
 * the statistics; the build checks the segments agree). budget_bytes bounds
 * the postings held in memory at once (0 = SL_FINDEX_DEFAULT_BUDGET; a single
 * feature larger than the budget gets a pass of its own). progress may be NULL. */
int sl_findex_build(const char *store_dir, uint32_t d_sae, const uint64_t *n_active, const sl_segment_ref *segments,
                    uint32_t n_segments, size_t budget_bytes, sl_findex_progress_fn progress, void *progress_ctx,
                    sl_err *err);

typedef struct sl_findex sl_findex;

/* Maps DIR/index.sli and validates its header and directory; a feature's
 * postings are checksummed and verified when read. Errors name the file.
 * The opened index is read-only and may be shared by several readers. */
sl_findex *sl_findex_open(const char *store_dir, sl_err *err);
void sl_findex_close(sl_findex *idx);

uint32_t sl_findex_d_sae(const sl_findex *idx);
uint64_t sl_findex_n_rows(const sl_findex *idx);                   /* token rows of the store */
uint64_t sl_findex_nnz(const sl_findex *idx);                      /* postings of all features */
uint64_t sl_findex_count(const sl_findex *idx, uint32_t feature); /* postings of the feature */
const char *sl_findex_path(const sl_findex *idx);

/* Exact quantiles of the feature's stored active values; NAN for a dead feature. */
void sl_findex_quantiles(const sl_findex *idx, uint32_t feature, float *p50, float *p90, float *p99);

/* Decodes all postings of a feature: rows[count] ascending, vals[count].
 * The caller sizes both arrays from sl_findex_count. */
int sl_findex_read(const sl_findex *idx, uint32_t feature, uint64_t *rows, float *vals, sl_err *err);

/* Streaming decode of one feature's postings in chunks, so a feature with
 * millions of postings needs no arrays of its size. begin verifies the
 * checksum (and decompresses an LZ4 feature, at most 16 MiB); next decodes up
 * to max postings and returns how many (0 at the end, -1 on damaged data). */
typedef struct sl_findex_iter {
    /* private */
    const sl_findex *idx;
    uint32_t feature;
    const unsigned char *raw; /* raw postings: row varints, then values */
    unsigned char *scratch;   /* decompressed LZ4 feature, or NULL */
    uint64_t count, done, prev_row;
    size_t pos, rows_end;
    int fp16;
} sl_findex_iter;

int sl_findex_iter_begin(const sl_findex *idx, uint32_t feature, sl_findex_iter *it, sl_err *err);
int64_t sl_findex_iter_next(sl_findex_iter *it, uint64_t *rows, float *vals, size_t max, sl_err *err);
void sl_findex_iter_end(sl_findex_iter *it);

#endif
