/* results.h: the per-feature results file of an extraction (results.slr).
 *
 * Written once when an extraction finishes, read by the virtual tables through
 * mmap. Fixed-size records make a feature lookup O(1):
 *
 *   sl_results_header                      (64 bytes)
 *   sl_result_feature  features[d_sae]     (40 bytes each)
 *   sl_result_example  examples[d_sae * top_k]  (48 bytes each; feature f's
 *                      examples are slots [f*top_k, f*top_k + n_examples), best first)
 *   sl_window_token    windows[n_window_tokens] (8 bytes each; an example's
 *                      window is windows[window_offset .. + window_len))
 *
 * All little-endian. header.checksum is XXH64 of every byte after the header;
 * the reader verifies it, so a damaged file is an error, never a wrong answer. */
#ifndef SAELITE_RESULTS_H
#define SAELITE_RESULTS_H

#include <stdint.h>

#include "common.h"
#include "source.h"
#include "stats.h"

#define SL_RESULTS_FILE "results.slr"

typedef struct sl_results_header {
    char magic[8]; /* "SAELRES1" */
    uint32_t version;
    uint32_t d_sae;
    uint32_t top_k;
    uint32_t context;
    uint32_t seq_len;
    uint32_t reserved;
    uint64_t n_tokens;
    uint64_t nnz;
    uint64_t n_window_tokens;
    uint64_t checksum;
} sl_results_header;

typedef struct sl_result_feature {
    uint64_t n_active;
    double mean, std;
    float min_active, max;
    uint32_t n_examples;
    uint32_t reserved;
} sl_result_feature;

typedef struct sl_result_example {
    float act;
    uint32_t position;   /* of the max token in its sequence */
    uint64_t sequence;
    uint64_t window_offset;
    uint32_t window_len;
    uint32_t max_index;  /* the max token's index in the window */
    uint64_t document;   /* the max token's document (SL_NO_DOCUMENT for stored activations) */
    uint32_t char_start, char_end; /* the window's span in that document, in characters */
} sl_result_example;

#define SL_NO_DOCUMENT UINT64_MAX

typedef struct sl_window_token {
    int32_t token;
    float act; /* this feature's activation; exact at max_index, fp16 from the store elsewhere */
} sl_window_token;

/* Where the store's rows live: segment i holds rows [first_row, first_row + n_rows). */
typedef struct sl_segment_ref {
    uint64_t first_row;
    uint32_t n_rows;
} sl_segment_ref;

/* Writes DIR/results.slr (via a temporary file, fsynced and renamed): statistics
 * from st (examples must be sorted), windows read back from the segments,
 * documents and character spans from src (windows stop before padding). */
int sl_results_write(const char *store_dir, const sl_stats *st, uint32_t context, uint32_t seq_len,
                     const sl_segment_ref *segments, uint32_t n_segments, const sl_source *src, sl_err *err);

typedef struct sl_results {
    const sl_results_header *header;
    const sl_result_feature *features;
    const sl_result_example *examples;
    const sl_window_token *windows;
    void *map;
    size_t map_size;
} sl_results;

int sl_results_open(sl_results *res, const char *store_dir, sl_err *err);
void sl_results_close(sl_results *res);

#endif
