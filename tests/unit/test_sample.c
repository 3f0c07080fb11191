/* test_sample.c: the interval and random sampler of engine/sample.c, driven with arrays.
 *
 * Checks that intervals are (lo, hi] with the edges reported (values on an edge,
 * the maximum), shares are counts over the total, every interval gives
 * min(per_interval, count) distinct picks, chunking does not change the picks,
 * the same seed gives the same picks, and that over many seeds every posting is
 * drawn equally often (a chi-square bound far from what a biased draw gives). */
#include <stdint.h>
#include <stdlib.h>

#include "check.h"
#include "sample.h"

static sl_sample run(const sl_sample_opts *o, float max_value, const uint64_t *rows, const float *vals, size_t n,
                     size_t chunk) {
    sl_err err;
    sl_sample s;
    sl_sampler *sp = sl_sampler_new(o, max_value, &err);
    CHECK(sp != NULL);
    for (size_t at = 0; at < n; at += chunk) sl_sampler_add(sp, rows + at, vals + at, n - at < chunk ? n - at : chunk);
    CHECK(sl_sampler_finish(sp, &s, &err) == 0);
    return s;
}

static void test_edges_and_shares(void) {
    /* max 1: intervals (0, .25], (.25, .5], (.5, .75], (.75, 1] */
    const float vals[] = {0.25f, 0.2500001f, 0.5f, 1.0f, 0.1f, 0.75f, 0.76f, 0.9f};
    const uint64_t rows[] = {0, 1, 2, 3, 4, 5, 6, 7};
    const uint32_t want_interval[] = {0, 1, 1, 3, 0, 2, 3, 3};
    sl_sample_opts o = {.intervals = 4, .per_interval = 10, .n_random = 0, .seed = 1};
    sl_sample s = run(&o, 1.0f, rows, vals, 8, 8);
    CHECK(s.n_interval == 8 && s.n_random == 0);
    uint32_t counts[4] = {0};
    for (uint32_t i = 0; i < s.n_interval; i++) {
        const sl_sampled *e = &s.examples[i];
        CHECK(e->kind == SL_SAMPLE_INTERVAL);
        CHECK(e->interval == want_interval[e->row]);
        CHECK(e->interval_lo == 0.25 * e->interval && e->interval_hi == 0.25 * (e->interval + 1));
        CHECK(e->interval_lo < e->act && e->act <= e->interval_hi);
        counts[e->interval]++;
        if (i) CHECK(e->interval < e[-1].interval || (e->interval == e[-1].interval && e->act <= e[-1].act));
    }
    CHECK(counts[0] == 2 && counts[1] == 2 && counts[2] == 1 && counts[3] == 3);
    for (uint32_t i = 0; i < s.n_interval; i++)
        CHECK_NEAR(s.examples[i].interval_share, counts[s.examples[i].interval] / 8.0, 1e-15);
    sl_sample_free(&s);
}

static void test_counts_chunks_and_seed(void) {
    enum { N = 5000 };
    uint64_t *rows = malloc(N * sizeof *rows);
    float *vals = malloc(N * sizeof *vals);
    for (uint32_t i = 0; i < N; i++) {
        rows[i] = 3 * (uint64_t)i + 7;
        vals[i] = (float)((i * 7919u) % 1000 + 1) / 1000.0f; /* (0, 1], 5 of each value */
    }
    sl_sample_opts o = {.intervals = 7, .per_interval = 4, .n_random = 9, .seed = sl_sample_seed(3, 17)};
    sl_sample a = run(&o, 1.0f, rows, vals, N, N), b = run(&o, 1.0f, rows, vals, N, 1);
    CHECK(a.n_interval == 7 * 4 && a.n_random == 9);
    CHECK(a.n_interval == b.n_interval && a.n_random == b.n_random);
    int same = 1;
    for (uint32_t i = 0; i < a.n_interval + a.n_random; i++)
        same &= a.examples[i].row == b.examples[i].row && a.examples[i].act == b.examples[i].act;
    CHECK(same); /* chunking does not change the draws */
    for (uint32_t i = 0; i < a.n_interval + a.n_random; i++)
        for (uint32_t j = 0; j < i; j++)
            if (a.examples[i].kind == a.examples[j].kind) CHECK(a.examples[i].row != a.examples[j].row);
    o.seed = sl_sample_seed(3, 18);
    sl_sample c = run(&o, 1.0f, rows, vals, N, N);
    int differ = 0;
    for (uint32_t i = 0; i < a.n_interval; i++) differ |= a.examples[i].row != c.examples[i].row;
    CHECK(differ); /* another feature's seed draws other tokens */
    CHECK(sl_sample_seed(3, 17) != sl_sample_seed(4, 17));
    sl_sample_free(&a);
    sl_sample_free(&b);
    sl_sample_free(&c);
    free(rows);
    free(vals);
}

/* Over many seeds each of n postings is drawn k / n of the time: chi-square over
 * n cells has mean n - 1 and sd sqrt(2 (n - 1)); 6 sd is far below what a draw
 * that favours early or late postings gives. */
static void test_uniform(void) {
    enum { N = 400, K = 8, SEEDS = 4000 };
    uint64_t rows[N];
    float vals[N];
    for (uint32_t i = 0; i < N; i++) rows[i] = i, vals[i] = 0.5f;
    static uint32_t drawn_interval[N], drawn_random[N];
    for (uint32_t seed = 0; seed < SEEDS; seed++) {
        sl_sample_opts o = {.intervals = 1, .per_interval = K, .n_random = K, .seed = sl_sample_seed(1, seed)};
        sl_sample s = run(&o, 1.0f, rows, vals, N, 64);
        CHECK(s.n_interval == K && s.n_random == K);
        for (uint32_t i = 0; i < s.n_interval; i++) drawn_interval[s.examples[i].row]++;
        for (uint32_t i = 0; i < s.n_random; i++) drawn_random[s.examples[s.n_interval + i].row]++;
        sl_sample_free(&s);
    }
    double expect = (double)SEEDS * K / N, chi_i = 0, chi_r = 0;
    for (uint32_t i = 0; i < N; i++) {
        chi_i += (drawn_interval[i] - expect) * (drawn_interval[i] - expect) / expect;
        chi_r += (drawn_random[i] - expect) * (drawn_random[i] - expect) / expect;
    }
    double bound = (N - 1) + 6 * sqrt(2.0 * (N - 1));
    printf("chi-square over %d postings: interval %.1f, random %.1f (bound %.1f)\n", N, chi_i, chi_r, bound);
    CHECK(chi_i < bound);
    CHECK(chi_r < bound);
}

int main(int argc, char **argv) {
    (void)argc, (void)argv;
    test_edges_and_shares();
    test_counts_chunks_and_seed();
    test_uniform();
    CHECK_DONE();
}
