/* checkpoint.h: the resumable state of a running extraction (checkpoint.slc).
 *
 * Saved by the writer thread after a segment is durable, at most every couple
 * of seconds and once when all batches are done: the exact statistics
 * accumulators and top-k heaps (sl_stats) plus the counters, covering segments
 * [0, batches_done). A resumed run loads it, deletes any later segment and goes
 * on from batch batches_done, so its results are identical to an uninterrupted
 * run. Written to a temporary file, fsynced and renamed; XXH64-checked on load.
 *
 *   header   sl_checkpoint_header
 *   acc      sl_feature_acc [d_sae]
 *   heap     sl_example [d_sae * top_k]
 *   x_sum    double [d_in]  (reconstruction sums, sae.h)
 *   pending  sl_example [d_sae]  (version 3 only: one example per sequence) */
#ifndef SAELITE_CHECKPOINT_H
#define SAELITE_CHECKPOINT_H

#include <stdint.h>

#include "common.h"
#include "sae.h"
#include "stats.h"

#define SL_CHECKPOINT_FILE "checkpoint.slc"

typedef struct sl_checkpoint {
    uint64_t batches_done;
    uint32_t batch_size; /* sequences per batch: a resumed run must use the same */
    uint32_t seq_len;
    uint64_t rows, tokens, nnz, bytes; /* committed so far */
} sl_checkpoint;

int sl_checkpoint_save(const char *store_dir, const sl_stats *st, const sl_recon_sums *recon, uint32_t d_in,
                       const sl_checkpoint *c, sl_err *err);
/* 0: loaded into st (same d_sae and top_k), recon (x_sum of d_in) and c;
 * 1: no checkpoint; -1: error. */
int sl_checkpoint_load(const char *store_dir, sl_stats *st, sl_recon_sums *recon, uint32_t d_in, sl_checkpoint *c,
                       sl_err *err);

#endif
