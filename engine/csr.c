#include "csr.h"

#include <stdlib.h>
#include <string.h>

int sl_csr_reset(sl_csr_builder *b, uint32_t rows_cap, sl_err *err) {
    if (rows_cap > b->rows_cap || !b->row_ptr) {
        uint64_t *p = realloc(b->row_ptr, ((size_t)rows_cap + 1) * sizeof *p);
        if (!p) return sl_errf(err, "out of memory for a batch of %u rows (lower batch_size)", rows_cap);
        b->row_ptr = p;
        b->rows_cap = rows_cap;
    }
    b->n_rows = 0;
    b->row_ptr[0] = 0;
    return 0;
}

static int grow(sl_csr_builder *b, size_t need, sl_err *err) {
    size_t cap = b->nnz_cap ? b->nnz_cap : (size_t)1 << 16;
    while (cap < need) cap *= 2;
    uint32_t *col = realloc(b->col, cap * sizeof *col);
    if (col) b->col = col;
    float *val = realloc(b->val, cap * sizeof *val);
    if (val) b->val = val;
    if (!col || !val) return sl_errf(err, "out of memory growing a CSR batch to %zu nonzeros", cap);
    b->nnz_cap = cap;
    return 0;
}

int sl_csr_append_dense(sl_csr_builder *b, const float *dense, uint32_t n, uint32_t d_sae, sl_err *err) {
    if (b->n_rows + n > b->rows_cap) return sl_errf(err, "CSR batch overflow (%u + %u rows > %u)", b->n_rows, n, b->rows_cap);
    for (uint32_t r = 0; r < n; r++) {
        const float *row = dense + (size_t)r * d_sae;
        uint64_t nnz = b->row_ptr[b->n_rows];
        if (nnz + d_sae > b->nnz_cap && grow(b, nnz + d_sae, err)) return -1; /* room for a full row */
        for (uint32_t f = 0; f < d_sae; f++) {
            if (row[f] > 0.0f) {
                b->col[nnz] = f;
                b->val[nnz] = row[f];
                nnz++;
            }
        }
        b->row_ptr[++b->n_rows] = nnz;
    }
    return 0;
}

int sl_csr_append_empty(sl_csr_builder *b, sl_err *err) {
    if (b->n_rows + 1 > b->rows_cap) return sl_errf(err, "CSR batch overflow (%u rows)", b->rows_cap);
    b->row_ptr[b->n_rows + 1] = b->row_ptr[b->n_rows];
    b->n_rows++;
    return 0;
}

sl_csr sl_csr_view(const sl_csr_builder *b, uint32_t n_cols) {
    return (sl_csr){.n_rows = b->n_rows, .n_cols = n_cols, .row_ptr = b->row_ptr, .col = b->col, .val = b->val};
}

void sl_csr_free(sl_csr_builder *b) {
    free(b->row_ptr);
    free(b->col);
    free(b->val);
    memset(b, 0, sizeof *b);
}
