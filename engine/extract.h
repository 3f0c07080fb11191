/* extract.h: one extraction, from an input dataset to a finished store.
 *
 * The pipeline (docs/ARCHITECTURE.md):
 *   main thread:   read a batch of sequences (stored activations, or model
 *                  input ids) -> the backend (backend.h): model forward up to
 *                  the hook, SAE encode of the rows that count, CSR (f32)
 *   writer thread: statistics + top-k from the f32 CSR -> segment file (LZ4,
 *                  fsync, rename)
 * Two batch buffers alternate, so encoding batch i+1 overlaps writing batch i.
 * Memory is bounded by the batch size and d_sae, not by the dataset. At the end
 * the top examples are sorted and results.slr is written. */
#ifndef SAELITE_EXTRACT_H
#define SAELITE_EXTRACT_H

#include <stdint.h>

#include "common.h"
#include "source.h"

typedef struct sl_extract_opts {
    const char *sae_path;
    sl_source_opts source;      /* stored activations, or model + dataset */
    const char *store_dir;
    uint32_t top_k;
    uint32_t context;
    int one_per_sequence;   /* keep at most one top example per sequence per feature */
    uint32_t batch_size;    /* sequences per batch; 0 = about 4096 tokens */
    uint64_t max_sequences; /* 0 = all */
    const char *device;     /* "auto" (NULL), "cpu", "cuda" */
    int resume;             /* continue the run whose store this is (see checkpoint.h) */
    int fast_math;          /* CUDA: TF32 GEMMs */
} sl_extract_opts;

typedef struct sl_extract_progress {
    uint64_t sequences_done, sequences_total;
    uint64_t tokens_done, tokens_total; /* positions processed, padding excluded */
    uint64_t tokens_counted;            /* of which went to the SAE (not special) */
    uint64_t nnz, store_bytes;
    double seconds;
    int finalizing;
    char device_status[96]; /* the backend's live state (GPU memory in use), or "" */
} sl_extract_progress;

/* Called on the calling thread after each batch is committed to the store;
 * a nonzero return stops the run (it then fails with "interrupted"). */
typedef int (*sl_progress_fn)(void *ctx, const sl_extract_progress *p);

typedef struct sl_extraction sl_extraction;

typedef struct sl_extract_shape {
    int d_in, d_sae;
    int from_model;
    int prepend_bos; /* model runs: whether each sequence starts with BOS (a 2-D token file: 0) */
    char hook[256];
    uint32_t seq_len;
    uint64_t sequences_total, tokens_total;
    uint32_t batch_size;
    char device[128]; /* the backend, as the progress bar shows it */
} sl_extract_shape;

/* Loads the SAE, opens and validates the input (and tokenizer), creates the
 * store directory (which must be absent or empty, unless resuming) and locks
 * it; a model + dataset source is tokenized into it (or, when resuming, its
 * token file is reused). With resume, the checkpoint decides where to start. */
sl_extraction *sl_extraction_open(const sl_extract_opts *opts, sl_err *err);
sl_extract_shape sl_extraction_shape(const sl_extraction *x);
int sl_extraction_run(sl_extraction *x, sl_progress_fn progress, void *ctx, sl_err *err);
void sl_extraction_close(sl_extraction *x);

/* After a successful run: the SAE's reconstruction quality on this dataset, in
 * its input space (after normalization): explained variance
 * 1 - sum |x - x_hat|^2 / sum |x - mean(x)|^2 and the mean squared error per
 * element, summed by the backend over every row it encoded (the CPU and CUDA
 * backends both do). -1 when the sums do not cover every counted row (a
 * backend that does not add them). */
int sl_extraction_quality(const sl_extraction *x, double *explained_variance, double *mse);

#endif
