/* csr.h: a growable compressed-sparse-row batch built from dense SAE output. */
#ifndef SAELITE_CSR_H
#define SAELITE_CSR_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "store.h"

typedef struct sl_csr_builder {
    uint32_t n_rows, rows_cap;
    uint64_t *row_ptr; /* [rows_cap + 1] */
    uint32_t *col;     /* [nnz_cap] */
    float *val;        /* [nnz_cap] */
    size_t nnz_cap;
} sl_csr_builder;

/* Empties the builder and makes room for rows_cap rows (keeps its memory). */
int sl_csr_reset(sl_csr_builder *b, uint32_t rows_cap, sl_err *err);
/* Appends the entries > 0 of dense rows [n, d_sae] (ascending feature ids). */
int sl_csr_append_dense(sl_csr_builder *b, const float *dense, uint32_t n, uint32_t d_sae, sl_err *err);
/* Appends an empty row (a token that does not go to the SAE). */
int sl_csr_append_empty(sl_csr_builder *b, sl_err *err);
/* A view of the rows built so far. */
sl_csr sl_csr_view(const sl_csr_builder *b, uint32_t n_cols);
void sl_csr_free(sl_csr_builder *b);

#endif
