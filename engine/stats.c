#include "stats.h"

#include <math.h>
#include <stdlib.h>

sl_stats *sl_stats_new(uint32_t d_sae, uint32_t top_k, sl_err *err) {
    sl_stats *st = calloc(1, sizeof *st);
    if (!st) return sl_errf(err, "out of memory"), NULL;
    st->d_sae = d_sae;
    st->top_k = top_k;
    st->acc = calloc(d_sae, sizeof *st->acc);
    st->heap = calloc((size_t)d_sae * top_k, sizeof *st->heap);
    if (!st->acc || !st->heap) {
        sl_stats_free(st);
        return sl_errf(err, "out of memory for statistics of %u features x %u examples", d_sae, top_k), NULL;
    }
    return st;
}

void sl_stats_free(sl_stats *st) {
    if (!st) return;
    free(st->acc);
    free(st->heap);
    free(st->pending);
    free(st);
}

/* a ranks below b: lower activation, or equal activation and a later row. */
static inline int worse(const sl_example *a, const sl_example *b) {
    return a->act < b->act || (a->act == b->act && a->row > b->row);
}

static void sift_down(sl_example *h, uint32_t n, uint32_t i) {
    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && worse(&h[l], &h[m])) m = l;
        if (r < n && worse(&h[r], &h[m])) m = r;
        if (m == i) return;
        sl_example t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

static void sift_up(sl_example *h, uint32_t i) {
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (!worse(&h[i], &h[p])) return;
        sl_example t = h[i];
        h[i] = h[p];
        h[p] = t;
        i = p;
    }
}

int sl_stats_one_per_sequence(sl_stats *st, uint32_t seq_len, sl_err *err) {
    if (seq_len == 0) return sl_errf(err, "one example per sequence needs a sequence length");
    if (!st->pending && !(st->pending = calloc(st->d_sae, sizeof *st->pending)))
        return sl_errf(err, "out of memory for %u pending examples", st->d_sae);
    st->seq_len = seq_len;
    return 0;
}

static void heap_offer(sl_stats *st, uint32_t f, sl_example e) {
    const uint32_t k = st->top_k;
    sl_feature_acc *a = &st->acc[f];
    sl_example *h = st->heap + (size_t)f * k;
    if (a->n_examples < k) {
        h[a->n_examples] = e;
        sift_up(h, a->n_examples++);
    } else if (worse(&h[0], &e)) {
        h[0] = e;
        sift_down(h, k, 0);
    }
}

/* One example per sequence: e replaces the pending example of its sequence if
 * better; the first row of a later sequence pushes the pending one to the heap. */
static void offer_one_per_sequence(sl_stats *st, uint32_t f, sl_example e) {
    sl_example *p = &st->pending[f];
    if (p->act > 0.0f && p->row / st->seq_len == e.row / st->seq_len) {
        if (worse(p, &e)) *p = e;
        return;
    }
    if (p->act > 0.0f) heap_offer(st, f, *p);
    *p = e;
}

void sl_stats_add(sl_stats *st, const sl_csr *csr, uint64_t first_row, uint32_t n_counted) {
    for (uint32_t r = 0; r < csr->n_rows; r++) {
        uint64_t row = first_row + r;
        for (uint64_t i = csr->row_ptr[r]; i < csr->row_ptr[r + 1]; i++) {
            uint32_t f = csr->col[i];
            float v = csr->val[i];
            if (!(v > 0.0f)) continue; /* active means > 0 */
            sl_feature_acc *a = &st->acc[f];
            if (a->n_active == 0) {
                a->shift = v;
                a->min_active = a->max = v;
            }
            double d = (double)v - a->shift;
            a->sum += d;
            a->sum_sq += d * d;
            if (v < a->min_active) a->min_active = v;
            if (v > a->max) a->max = v;
            a->n_active++;
            sl_example e = {.act = v, .row = row};
            if (st->pending) offer_one_per_sequence(st, f, e);
            else heap_offer(st, f, e);
        }
    }
    st->n_tokens += n_counted;
    st->nnz += csr->row_ptr[csr->n_rows];
}

static int best_first(const void *pa, const void *pb) {
    const sl_example *a = pa, *b = pb;
    return worse(b, a) ? -1 : worse(a, b) ? 1 : 0;
}

void sl_stats_sort_examples(sl_stats *st) {
    if (st->pending)
        for (uint32_t f = 0; f < st->d_sae; f++)
            if (st->pending[f].act > 0.0f) {
                heap_offer(st, f, st->pending[f]);
                st->pending[f].act = 0.0f;
            }
    for (uint32_t f = 0; f < st->d_sae; f++)
        qsort(st->heap + (size_t)f * st->top_k, st->acc[f].n_examples, sizeof(sl_example), best_first);
}

void sl_stats_feature(const sl_stats *st, uint32_t f, double *mean, double *std) {
    const sl_feature_acc *a = &st->acc[f];
    if (a->n_active == 0) {
        *mean = *std = 0.0;
        return;
    }
    double n = (double)a->n_active, m = a->sum / n;
    double var = a->sum_sq / n - m * m;
    *mean = a->shift + m;
    *std = var > 0 ? sqrt(var) : 0.0;
}
