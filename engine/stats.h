/* stats.h: per-feature statistics and top-k examples, accumulated in one pass.
 *
 * Fed the f32 CSR of every batch in dataset order (before any fp16 rounding in
 * the store). Per feature: n_active, sum and sum of squares (double, shifted by
 * the first value seen to avoid cancellation), min and max of active values,
 * and a min-heap of the top_k (activation, row) pairs. Ranking: activation
 * descending, then row ascending, so results do not depend on the batch size.
 *
 * One example per sequence (sl_stats_one_per_sequence): the heap then holds the
 * top_k best of each sequence's best row. Rows arrive in order and a sequence's
 * rows are contiguous, so a feature's current sequence has one pending best
 * example outside the heap; it enters the heap when the feature first fires in
 * a later sequence, or at sl_stats_sort_examples. The result is the same as
 * ranking every sequence's best row, whatever the batch size. */
#ifndef SAELITE_STATS_H
#define SAELITE_STATS_H

#include <stdint.h>

#include "common.h"
#include "store.h"

typedef struct sl_example {
    float act;
    uint32_t pad_;
    uint64_t row; /* global token row: sequence * seq_len + position */
} sl_example;

typedef struct sl_feature_acc {
    uint64_t n_active;
    double shift, sum, sum_sq; /* of (value - shift) */
    float min_active, max;
    uint32_t n_examples;       /* entries used in the heap */
} sl_feature_acc;

typedef struct sl_stats {
    uint32_t d_sae, top_k;
    uint64_t n_tokens; /* tokens that went to the SAE */
    uint64_t nnz;
    sl_feature_acc *acc; /* [d_sae] */
    sl_example *heap;    /* [d_sae, top_k] min-heaps (worst example at the root) */
    uint32_t seq_len;    /* one example per sequence of seq_len rows; 0: off */
    sl_example *pending; /* [d_sae] best example of the feature's current sequence
                            (act 0: none), when seq_len != 0, else NULL */
} sl_stats;

sl_stats *sl_stats_new(uint32_t d_sae, uint32_t top_k, sl_err *err);
void sl_stats_free(sl_stats *st);

/* Keeps at most one example per sequence (of seq_len rows) in every feature's
 * top_k: the sequence's best. Call before the first sl_stats_add. */
int sl_stats_one_per_sequence(sl_stats *st, uint32_t seq_len, sl_err *err);

/* Adds one batch whose first row has global index first_row; n_counted of its
 * rows are tokens that went to the SAE (the others are empty rows: padding or
 * special tokens, which do not count in n_tokens). */
void sl_stats_add(sl_stats *st, const sl_csr *csr, uint64_t first_row, uint32_t n_counted);

/* Moves pending examples (one per sequence) into the heaps and sorts every
 * feature's examples best first (in place); call once at the end. */
void sl_stats_sort_examples(sl_stats *st);

/* Final values of feature f (population std, zeros for dead features). */
void sl_stats_feature(const sl_stats *st, uint32_t f, double *mean, double *std);

#endif
