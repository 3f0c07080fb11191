/* parity.h: comparing the CSR batches of two backends (C and C++).
 *
 * The rule of issue 4: feature activations within 1e-4 (relative to 1 + |value|),
 * and the same CSR structure except for entries whose value lies within 1e-6 of
 * the activation threshold (there one backend may keep a tiny value the other
 * drops). Threshold: 0 for relu/topk/gated, the feature's threshold for jumprelu;
 * for topk a feature that is in one row's top k and not the other's must have a
 * value within 1e-4 of the row's smallest kept value (a near tie). */
#ifndef SAELITE_TESTS_PARITY_H
#define SAELITE_TESTS_PARITY_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>

#include "csr.h"

typedef struct parity_stats {
    uint64_t nnz_a, nnz_b, matched, near_threshold, bad;
    double max_abs_diff;
} parity_stats;

/* Smallest value of a CSR row (0 if empty). */
static inline float parity_row_min(const sl_csr_builder *c, uint32_t r) {
    float m = 0.0f;
    for (uint64_t i = c->row_ptr[r]; i < c->row_ptr[r + 1]; i++)
        if (i == c->row_ptr[r] || c->val[i] < m) m = c->val[i];
    return m;
}

/* threshold: [n_cols] per-feature thresholds (jumprelu) or NULL (0); topk: 1 for
 * a topk SAE. Returns the number of violations (also in st->bad). */
static inline uint64_t parity_compare(const sl_csr_builder *a, const sl_csr_builder *b, const float *threshold,
                                      int topk, parity_stats *st, const char *label) {
    parity_stats s = {0, 0, 0, 0, 0, 0.0};
    if (a->n_rows != b->n_rows) {
        fprintf(stderr, "%s: %u rows vs %u\n", label, a->n_rows, b->n_rows);
        s.bad = 1;
        *st = s;
        return 1;
    }
    for (uint32_t r = 0; r < a->n_rows; r++) {
        uint64_t i = a->row_ptr[r], ie = a->row_ptr[r + 1], j = b->row_ptr[r], je = b->row_ptr[r + 1];
        s.nnz_a += ie - i;
        s.nnz_b += je - j;
        float min_a = topk ? parity_row_min(a, r) : 0.0f, min_b = topk ? parity_row_min(b, r) : 0.0f;
        while (i < ie || j < je) {
            uint32_t ca = i < ie ? a->col[i] : UINT32_MAX, cb = j < je ? b->col[j] : UINT32_MAX;
            if (ca == cb) {
                double d = fabs((double)a->val[i] - b->val[j]);
                if (d > s.max_abs_diff) s.max_abs_diff = d;
                if (d > 1e-4 * (1.0 + fabs(a->val[i]))) {
                    if (s.bad++ < 5)
                        fprintf(stderr, "%s: row %u feature %u: %.8g vs %.8g\n", label, r, ca, a->val[i], b->val[j]);
                } else {
                    s.matched++;
                }
                i++;
                j++;
                continue;
            }
            /* Present on one side only. */
            int in_a = ca < cb;
            uint32_t f = in_a ? ca : cb;
            float v = in_a ? a->val[i] : b->val[j];
            float thr = threshold && threshold[f] > 0.0f ? threshold[f] : 0.0f; /* relu's 0 below */
            int ok = fabsf(v - thr) <= 1e-6f;
            if (topk && !ok) ok = fabsf(v - (in_a ? min_b : min_a)) <= 1e-4f * (1.0f + fabsf(v));
            if (ok)
                s.near_threshold++;
            else if (s.bad++ < 5)
                fprintf(stderr, "%s: row %u feature %u only in %s (%.8g)\n", label, r, f, in_a ? "first" : "second", v);
            if (in_a)
                i++;
            else
                j++;
        }
    }
    *st = s;
    return s.bad;
}

#endif
