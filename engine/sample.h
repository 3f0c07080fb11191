/* sample.h: sampled examples of a feature, beside its top examples.
 *
 * Top examples show only the strongest activations. Two other views show what
 * a feature does across its range:
 *
 *   interval  [0, max] is cut into `intervals` equal-width intervals (as the
 *             "quantile" groups of sae_vis); up to `per_interval` examples are
 *             drawn uniformly at random inside each, and each interval reports
 *             its share of the feature's active tokens;
 *   random    up to `n_random` active tokens drawn uniformly at random.
 *
 * `max` is the largest stored value of the feature (its postings in the index
 * hold the values as stored, fp16-rounded), so every stored value lies in
 * exactly one interval (lo, hi]. Drawing is reservoir sampling over the
 * postings in row order with a generator seeded by (extraction, feature): the
 * same store gives the same examples on every query, in bounded memory
 * (intervals * per_interval + n_random picks), whatever the posting count.
 *
 * Windows are read back through the rowstore like the top examples' (context
 * tokens each side, clipped to the sequence, stopping before padding), with
 * the document and character span from the token file of a text dataset. */
#ifndef SAELITE_SAMPLE_H
#define SAELITE_SAMPLE_H

#include <stdint.h>

#include "common.h"
#include "findex.h"
#include "results.h"
#include "rowstore.h"
#include "tokfile.h"

typedef enum { SL_SAMPLE_INTERVAL = 1, SL_SAMPLE_RANDOM = 2 } sl_sample_kind;

typedef struct sl_sample_opts {
    uint32_t intervals;    /* >= 1 */
    uint32_t per_interval; /* examples drawn in each interval */
    uint32_t n_random;     /* examples drawn over all active tokens */
    uint64_t seed;         /* sl_sample_seed() */
} sl_sample_opts;

typedef struct sl_sampled {
    uint64_t row; /* global token row: sequence = row / seq_len */
    float act;    /* the stored value */
    sl_sample_kind kind;
    uint32_t interval; /* SL_SAMPLE_INTERVAL: 0-based, 0 = the lowest */
    double interval_lo, interval_hi, interval_share;
    sl_result_example ex; /* filled by sl_sample_windows; window_offset indexes windows[] */
} sl_sampled;

typedef struct sl_sample {
    /* examples[0 .. n_interval): by interval descending, then activation
     * descending, then row; then n_random random ones by activation descending. */
    sl_sampled *examples;
    uint32_t n_interval, n_random;
    sl_window_token *windows; /* [n_window_tokens] */
    uint64_t n_window_tokens;
} sl_sample;

/* The generator's seed for one feature of one extraction. */
uint64_t sl_sample_seed(int64_t extraction_id, uint32_t feature);

/* Streaming sampler: init with the largest value, add the postings in order
 * (any chunking), finish. Exposed so tests can drive it with arrays. */
typedef struct sl_sampler sl_sampler;
sl_sampler *sl_sampler_new(const sl_sample_opts *o, float max_value, sl_err *err);
void sl_sampler_add(sl_sampler *s, const uint64_t *rows, const float *vals, size_t n);
/* Moves the picks into out (windows empty) and frees the sampler. */
int sl_sampler_finish(sl_sampler *s, sl_sample *out, sl_err *err);
void sl_sampler_free(sl_sampler *s);

/* Both passes over the feature's postings in the index (max, then draws). */
int sl_sample_pick(const sl_findex *idx, uint32_t feature, const sl_sample_opts *o, sl_sample *out, sl_err *err);

/* Reads every example's window: rows through rs in ascending order, so each
 * block is decoded once; tf (NULL for stored activations) gives padding,
 * documents and character spans. */
int sl_sample_windows(sl_sample *s, sl_rowstore *rs, const sl_tokfile *tf, uint32_t feature, uint32_t context,
                      sl_err *err);

void sl_sample_free(sl_sample *s);

#endif
