/* test_csr_stats.c: dense -> CSR, and statistics/top-k against values computed
 * here by brute force, including ties and independence from the batch split. */
#include <stdio.h>
#include <stdlib.h>

#include "check.h"
#include "csr.h"
#include "stats.h"

enum { ROWS = 300, D = 37, TOP_K = 4 };

static float dense_value(uint32_t r, uint32_t f) {
    /* planted: sparse, with repeated values so ties happen */
    uint32_t h = (r * 2654435761u) ^ (f * 40503u);
    if (h % 7 != 0) return 0.0f;
    if (f == 5) return 0.0f; /* a dead feature */
    return (float)(1 + (h >> 8) % 9) * 0.5f;
}

static void check_csr(void) {
    float dense[3 * 5] = {0, 1.5f, 0, 0, 2, /**/ 0, 0, 0, 0, 0, /**/ -1, 3, 0, 4, 0};
    sl_csr_builder b = {0};
    sl_err err;
    CHECK(sl_csr_reset(&b, 3, &err) == 0);
    CHECK(sl_csr_append_dense(&b, dense, 2, 5, &err) == 0);
    CHECK(sl_csr_append_dense(&b, dense + 10, 1, 5, &err) == 0);
    CHECK(sl_csr_append_dense(&b, dense, 1, 5, &err) != 0); /* over capacity: error, not overflow */
    sl_csr c = sl_csr_view(&b, 5);
    CHECK(c.n_rows == 3);
    CHECK(c.row_ptr[0] == 0 && c.row_ptr[1] == 2 && c.row_ptr[2] == 2 && c.row_ptr[3] == 4);
    CHECK(c.col[0] == 1 && c.col[1] == 4 && c.col[2] == 1 && c.col[3] == 3); /* -1 is not active */
    CHECK(c.val[0] == 1.5f && c.val[1] == 2.0f && c.val[2] == 3.0f && c.val[3] == 4.0f);
    sl_csr_free(&b);
}

/* Feeds all rows to a fresh sl_stats in batches of `batch` rows. */
static sl_stats *run(uint32_t batch) {
    sl_err err;
    sl_stats *st = sl_stats_new(D, TOP_K, &err);
    float *dense = malloc((size_t)batch * D * sizeof(float));
    sl_csr_builder b = {0};
    for (uint32_t r0 = 0; r0 < ROWS; r0 += batch) {
        uint32_t n = ROWS - r0 < batch ? ROWS - r0 : batch;
        for (uint32_t r = 0; r < n; r++)
            for (uint32_t f = 0; f < D; f++) dense[r * D + f] = dense_value(r0 + r, f);
        sl_csr_reset(&b, n, &err);
        sl_csr_append_dense(&b, dense, n, D, &err);
        sl_csr c = sl_csr_view(&b, D);
        sl_stats_add(st, &c, r0, n);
    }
    sl_csr_free(&b);
    free(dense);
    sl_stats_sort_examples(st);
    return st;
}

static void check_stats(void) {
    sl_stats *a = run(ROWS), *b = run(7), *c = run(1);
    CHECK(a->n_tokens == ROWS && b->n_tokens == ROWS);
    for (uint32_t f = 0; f < D; f++) {
        /* brute force */
        uint64_t n = 0;
        double sum = 0, sum_sq = 0;
        float mn = 0, mx = 0;
        for (uint32_t r = 0; r < ROWS; r++) {
            float v = dense_value(r, f);
            if (v <= 0) continue;
            if (!n || v < mn) mn = v;
            if (!n || v > mx) mx = v;
            n++;
            sum += v;
            sum_sq += (double)v * v;
        }
        double mean = n ? sum / (double)n : 0, var = n ? sum_sq / (double)n - mean * mean : 0;
        double got_mean, got_std;
        sl_stats_feature(a, f, &got_mean, &got_std);
        CHECK(a->acc[f].n_active == n);
        CHECK_NEAR(got_mean, mean, 1e-12);
        CHECK_NEAR(got_std, sqrt(var > 0 ? var : 0), 1e-9);
        if (n) CHECK(a->acc[f].min_active == mn && a->acc[f].max == mx);
        /* top-k: activation desc, ties by earliest row, found by repeated scans */
        uint32_t expect_n = n < TOP_K ? (uint32_t)n : TOP_K;
        CHECK(a->acc[f].n_examples == expect_n);
        float last_v = 1e30f;
        int64_t last_r = -1;
        for (uint32_t i = 0; i < expect_n; i++) {
            float best_v = -1;
            int64_t best_r = -1;
            for (uint32_t r = 0; r < ROWS; r++) {
                float v = dense_value(r, f);
                if (v <= 0) continue;
                int after_last = v < last_v || (v == last_v && (int64_t)r > last_r);
                if (after_last && (v > best_v)) best_v = v, best_r = r;
            }
            const sl_example *e = &a->heap[f * TOP_K + i];
            CHECK(e->act == best_v && (int64_t)e->row == best_r);
            last_v = best_v;
            last_r = best_r;
        }
        /* the batch split changes nothing */
        for (uint32_t i = 0; i < expect_n; i++) {
            CHECK(b->heap[f * TOP_K + i].row == a->heap[f * TOP_K + i].row);
            CHECK(c->heap[f * TOP_K + i].row == a->heap[f * TOP_K + i].row);
        }
        CHECK(b->acc[f].n_active == n && c->acc[f].n_active == n);
    }
    CHECK(a->acc[5].n_active == 0 && a->acc[5].n_examples == 0);
    sl_stats_free(a);
    sl_stats_free(b);
    sl_stats_free(c);
}

int main(void) {
    check_csr();
    check_stats();
    CHECK_DONE();
}
