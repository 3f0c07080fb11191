/* backend.h: the compute of one batch, behind one interface.
 *
 * A backend turns a batch (model input ids, or stored activations) into the
 * CSR of SAE feature activations: model forward up to the hook (if ids),
 * optional centring, SAE encode of the rows that count, dense -> CSR. The CPU
 * backend (backend_cpu.c) is always there; the CUDA backend lives in cuda/ and
 * is loaded on demand (backend.c), so the extension runs where no GPU or
 * driver exists. */
#ifndef SAELITE_BACKEND_H
#define SAELITE_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "csr.h"
#include "model.h"
#include "sae.h"

typedef struct sl_batch_in {
    uint32_t n_seq, seq_len;
    const float *x;         /* [n_seq * seq_len, d_in] stored activations, or NULL */
    const int32_t *ids;     /* [n_seq * seq_len] model input (padding as 0), or NULL */
    const uint8_t *include; /* [n_seq * seq_len] 1: the row goes to the SAE */
    sl_recon_sums *recon;   /* if not NULL, reconstruction sums of the encoded rows are added
                               here (a backend that does not, leaves recon->rows short) */
} sl_batch_in;

/* What a backend computes with; owned by the caller, outlives the backend. */
typedef struct sl_backend_setup {
    const sl_sae *sae;
    const sl_model *model; /* NULL for stored activations */
    sl_hook hook;
    int center;            /* subtract each row's mean after the model */
    uint32_t max_seqs, seq_len; /* the largest batch */
    int fast_math;         /* CUDA: allow TF32 tensor-core GEMMs (less exact) */
    int auto_batch;        /* max_seqs is only a default: the backend may size batches
                              itself (ops->batch_seqs says how many it chose) */
} sl_backend_setup;

typedef struct sl_backend sl_backend;

typedef struct sl_backend_ops {
    const char *name; /* "cpu", "cuda" */
    /* out has been reset to hold n_seq * seq_len rows; rows not included are empty. */
    int (*run)(sl_backend *b, const sl_batch_in *in, sl_csr_builder *out, sl_err *err);
    /* A line for the progress bar and the extractions row, e.g. "cpu (2 threads)". */
    void (*describe)(const sl_backend *b, char *buf, size_t size);
    void (*free)(sl_backend *b);
    /* Optional (NULL if absent). The live state for the progress bar, e.g. GPU
     * memory in use "12.3/79.6 GiB". */
    void (*status)(const sl_backend *b, char *buf, size_t size);
    /* Optional. The batch size (sequences) the backend was sized for; with
     * setup.auto_batch it may differ from setup.max_seqs. */
    uint32_t (*batch_seqs)(const sl_backend *b);
} sl_backend_ops;

struct sl_backend {
    const sl_backend_ops *ops;
};

sl_backend *sl_backend_cpu_new(const sl_backend_setup *setup, sl_err *err);

/* The CUDA backend is a separate shared object, saelite_cuda.so, beside the
 * extension (or $SAELITE_CUDA_MODULE), loaded on demand with dlopen. Its entry
 * point, plain C: returns NULL with *no_device = 1 when there is no usable
 * device (no driver, no GPU), NULL with *no_device = 0 on any other failure. */
#define SL_CUDA_ABI_VERSION 1
#define SL_CUDA_ENTRY "sl_cuda_backend_new"
typedef sl_backend *(*sl_cuda_new_fn)(int abi_version, const sl_backend_setup *setup, const sl_model_view *model,
                                       int *no_device, sl_err *err);

/* device: "auto" (CUDA when a usable device exists, else CPU), "cpu" or "cuda"
 * (an error when there is none). */
sl_backend *sl_backend_open(const char *device, const sl_backend_setup *setup, sl_err *err);

#endif
