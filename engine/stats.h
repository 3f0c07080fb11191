/* stats.h: per-feature statistics and top-k examples, accumulated in one pass.
 *
 * Fed the f32 CSR of every batch in dataset order (before any fp16 rounding in
 * the store). Per feature: n_active, sum and sum of squares (double, shifted by
 * the first value seen to avoid cancellation), min and max of active values,
 * and a min-heap of the top_k (activation, row) pairs. Ranking: activation
 * descending, then row ascending, so results do not depend on the batch size. */
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
} sl_stats;

sl_stats *sl_stats_new(uint32_t d_sae, uint32_t top_k, sl_err *err);
void sl_stats_free(sl_stats *st);

/* Adds one batch whose first row has global index first_row; n_counted of its
 * rows are tokens that went to the SAE (the others are empty rows: padding or
 * special tokens, which do not count in n_tokens). */
void sl_stats_add(sl_stats *st, const sl_csr *csr, uint64_t first_row, uint32_t n_counted);

/* Sorts every feature's examples best first (in place); call once at the end. */
void sl_stats_sort_examples(sl_stats *st);

/* Final values of feature f (population std, zeros for dead features). */
void sl_stats_feature(const sl_stats *st, uint32_t f, double *mean, double *std);

#endif
