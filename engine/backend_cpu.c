/* backend_cpu.c: the CPU backend (OpenBLAS GEMMs; see backend.h). */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"

typedef struct cpu_backend {
    sl_backend base;
    sl_backend_setup s;
    uint32_t chunk_rows; /* rows per SAE GEMM: bounds the dense buffer */
    float *x;            /* [max_rows, d_in] model output, compacted in place */
    float *model_ws;     /* model workspace for max_seqs sequences */
    float *dense;        /* [chunk_rows, d_sae] */
    float *sae_ws;       /* sl_sae_workspace_floats(chunk_rows) */
    float *recon_row;    /* [d_in] one reconstruction */
} cpu_backend;

static void cpu_free(sl_backend *base) {
    cpu_backend *b = (cpu_backend *)base;
    if (!b) return;
    free(b->x);
    free(b->model_ws);
    free(b->dense);
    free(b->sae_ws);
    free(b->recon_row);
    free(b);
}

static void cpu_describe(const sl_backend *base, char *buf, size_t size) {
    (void)base;
    snprintf(buf, size, "cpu (%d threads)", openblas_get_num_threads());
}

/* Subtracts each row's mean over d (TransformerLens's centred writing weights). */
static void center_rows(float *x, size_t rows, uint32_t d) {
    for (size_t r = 0; r < rows; r++) {
        float *row = x + r * d;
        double mean = 0;
        for (uint32_t i = 0; i < d; i++) mean += row[i];
        mean /= d;
        for (uint32_t i = 0; i < d; i++) row[i] -= (float)mean;
    }
}

static int cpu_run(sl_backend *base, const sl_batch_in *in, sl_csr_builder *out, sl_err *err) {
    cpu_backend *b = (cpu_backend *)base;
    const sl_sae *sae = b->s.sae;
    const uint32_t d_in = (uint32_t)sae->d_in, d_sae = (uint32_t)sae->d_sae;
    const uint32_t rows = in->n_seq * in->seq_len;
    float *x = b->x; /* [rows, d_in] */
    if (in->ids) {
        if (sl_model_forward(b->s.model, in->ids, (int)in->n_seq, (int)in->seq_len, b->s.hook, x, b->model_ws, err))
            return -1;
    } else {
        memcpy(x, in->x, (size_t)rows * d_in * sizeof(float));
    }
    if (b->s.center) center_rows(x, rows, d_in);

    /* Only rows that count reach the SAE: compact them to the front. */
    uint32_t n_inc = 0;
    for (uint32_t r = 0; r < rows; r++) {
        if (!in->include[r]) continue;
        if (n_inc != r) memcpy(x + (size_t)n_inc * d_in, x + (size_t)r * d_in, (size_t)d_in * sizeof(float));
        n_inc++;
    }
    uint32_t next_row = 0; /* batch row the next encoded row belongs to */
    for (uint32_t c0 = 0; c0 < n_inc; c0 += b->chunk_rows) {
        uint32_t n = n_inc - c0 < b->chunk_rows ? n_inc - c0 : b->chunk_rows;
        sl_sae_encode(sae, x + (size_t)c0 * d_in, (int)n, b->dense, b->sae_ws);
        for (uint32_t j = 0; j < n; j++, next_row++) {
            for (; !in->include[next_row]; next_row++)
                if (sl_csr_append_empty(out, err)) return -1;
            if (sl_csr_append_dense(out, b->dense + (size_t)j * d_sae, 1, d_sae, err)) return -1;
            if (in->recon) { /* from the row's nonzeros, not a second scan of the dense row */
                uint64_t lo = out->row_ptr[out->n_rows - 1], hi = out->row_ptr[out->n_rows];
                sl_sae_add_recon(sae, b->sae_ws + (size_t)j * d_in, out->col + lo, out->val + lo, (size_t)(hi - lo),
                                 b->recon_row, in->recon);
            }
        }
    }
    for (; next_row < rows; next_row++)
        if (sl_csr_append_empty(out, err)) return -1;
    return 0;
}

static const sl_backend_ops cpu_ops = {.name = "cpu", .run = cpu_run, .describe = cpu_describe, .free = cpu_free};

sl_backend *sl_backend_cpu_new(const sl_backend_setup *setup, sl_err *err) {
    cpu_backend *b = calloc(1, sizeof *b);
    if (!b) return sl_errf(err, "out of memory"), NULL;
    b->base.ops = &cpu_ops;
    b->s = *setup;
    const sl_sae *sae = setup->sae;
    size_t max_rows = (size_t)setup->max_seqs * setup->seq_len;
    /* About 64 MiB of dense activations per GEMM chunk. */
    uint32_t chunk = (uint32_t)((16u << 20) / (uint32_t)sae->d_sae);
    b->chunk_rows = chunk < 1 ? 1 : chunk > 1024 ? 1024 : chunk;
    b->x = malloc(max_rows * (size_t)sae->d_in * sizeof(float));
    b->dense = malloc((size_t)b->chunk_rows * (size_t)sae->d_sae * sizeof(float));
    b->sae_ws = malloc(sl_sae_workspace_floats(sae, (int)b->chunk_rows) * sizeof(float));
    b->recon_row = malloc((size_t)sae->d_in * sizeof(float));
    if (setup->model)
        b->model_ws = malloc(sl_model_workspace_floats(setup->model, (int)setup->max_seqs, (int)setup->seq_len,
                                                       setup->hook) * sizeof(float));
    if (!b->x || !b->dense || !b->sae_ws || !b->recon_row || (setup->model && !b->model_ws)) {
        cpu_free(&b->base);
        return sl_errf(err, "out of memory for a batch of %zu tokens (lower batch_size)", max_rows), NULL;
    }
    return &b->base;
}
