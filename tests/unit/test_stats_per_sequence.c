/* test_stats_per_sequence.c: top-k with at most one example per sequence
 * (sl_stats_one_per_sequence) against a brute force over the whole dataset:
 * every sequence's best row per feature, then the top_k of those. Fed in
 * batches of 1, 3 and all sequences, and across a checkpoint save/load in the
 * middle, the heaps must give exactly the brute-force ranking. Values are drawn
 * from a few levels so ties (broken by row) are frequent. */
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "check.h"
#include "checkpoint.h"
#include "csr.h"
#include "stats.h"

enum { D = 6, SEQ = 5, NSEQ = 23, ROWS = SEQ * NSEQ, TOP_K = 4 };

static float dense[ROWS * D]; /* [ROWS, D] */

static uint32_t rng = 12345;
static uint32_t next_rand(void) {
    rng = rng * 1664525u + 1013904223u;
    return rng >> 8;
}

static void make_data(void) {
    for (int i = 0; i < ROWS * D; i++) {
        uint32_t r = next_rand() % 10;
        dense[i] = r < 5 ? 0.0f : (float)(r - 4) * 0.5f; /* half zero, levels 0.5 .. 2.5 */
    }
    for (int r = 0; r < ROWS; r++) dense[r * D + 5] = 0.0f; /* feature 5 is dead */
    for (int r = 0; r < ROWS; r++) dense[r * D + 4] = r < SEQ ? 1.0f + (float)r : 0.0f; /* only sequence 0 */
}

/* Brute force: for feature f, each sequence's best row (max act, first row on
 * ties), ranked by act descending then row ascending; returns how many. */
static int brute(int f, sl_example *out) {
    sl_example best[NSEQ];
    int n = 0;
    for (int s = 0; s < NSEQ; s++) {
        int b = -1;
        for (int p = 0; p < SEQ; p++) {
            int r = s * SEQ + p;
            float v = dense[r * D + f];
            if (v > 0 && (b < 0 || v > dense[b * D + f])) b = r;
        }
        if (b >= 0) best[n++] = (sl_example){.act = dense[b * D + f], .row = (uint64_t)b};
    }
    /* selection sort: act desc, row asc */
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (best[j].act > best[i].act || (best[j].act == best[i].act && best[j].row < best[i].row)) {
                sl_example t = best[i];
                best[i] = best[j];
                best[j] = t;
            }
    int k = n < TOP_K ? n : TOP_K;
    for (int i = 0; i < k; i++) out[i] = best[i];
    return k;
}

static void feed(sl_stats *st, uint32_t seq_from, uint32_t seq_to, uint32_t batch_seqs) {
    sl_err err;
    sl_csr_builder b = {0};
    for (uint32_t s0 = seq_from; s0 < seq_to; s0 += batch_seqs) {
        uint32_t ns = seq_to - s0 < batch_seqs ? seq_to - s0 : batch_seqs;
        uint32_t n = ns * SEQ, r0 = s0 * SEQ;
        CHECK(sl_csr_reset(&b, n, &err) == 0);
        CHECK(sl_csr_append_dense(&b, dense + (size_t)r0 * D, n, D, &err) == 0);
        sl_csr c = sl_csr_view(&b, D);
        sl_stats_add(st, &c, r0, n);
    }
    sl_csr_free(&b);
}

static sl_stats *fresh(void) {
    sl_err err;
    sl_stats *st = sl_stats_new(D, TOP_K, &err);
    CHECK(st != NULL);
    CHECK(sl_stats_one_per_sequence(st, SEQ, &err) == 0);
    return st;
}

static void compare(sl_stats *st, const char *label) {
    for (int f = 0; f < D; f++) {
        sl_example want[TOP_K];
        int n = brute(f, want);
        const sl_example *got = st->heap + (size_t)f * TOP_K;
        if ((int)st->acc[f].n_examples != n) {
            fprintf(stderr, "%s: feature %d has %u examples, brute force %d\n", label, f, st->acc[f].n_examples, n);
            check_failures++;
            continue;
        }
        for (int i = 0; i < n; i++) {
            if (got[i].act != want[i].act || got[i].row != want[i].row) {
                fprintf(stderr, "%s: feature %d rank %d: (%g, row %llu), brute force (%g, row %llu)\n", label, f,
                        i + 1, (double)got[i].act, (unsigned long long)got[i].row, (double)want[i].act,
                        (unsigned long long)want[i].row);
                check_failures++;
            }
        }
        for (int i = 1; i < n; i++) CHECK(got[i].row / SEQ != got[0].row / SEQ); /* distinct sequences */
    }
}

int main(int argc, char **argv) {
    (void)argc, (void)argv;
    make_data();
    const uint32_t batches[] = {1, 3, NSEQ};
    for (size_t i = 0; i < sizeof batches / sizeof batches[0]; i++) {
        sl_stats *st = fresh();
        feed(st, 0, NSEQ, batches[i]);
        sl_stats_sort_examples(st);
        char label[32];
        snprintf(label, sizeof label, "batch of %u", batches[i]);
        compare(st, label);
        sl_stats_free(st);
    }
    /* Feature 4 fires only in sequence 0 (values 1..5): one example, the best. */
    {
        sl_stats *st = fresh();
        feed(st, 0, NSEQ, 2);
        sl_stats_sort_examples(st);
        CHECK(st->acc[4].n_examples == 1);
        CHECK(st->heap[4 * TOP_K].act == 5.0f && st->heap[4 * TOP_K].row == 4);
        CHECK(st->acc[5].n_examples == 0);
        sl_stats_free(st);
    }
    /* Without the option the same data keeps several rows of one sequence. */
    {
        sl_err err;
        sl_stats *st = sl_stats_new(D, TOP_K, &err);
        feed(st, 0, NSEQ, NSEQ);
        sl_stats_sort_examples(st);
        CHECK(st->acc[4].n_examples == 4 && st->heap[4 * TOP_K + 1].row == 3);
        sl_stats_free(st);
    }
    /* A checkpoint in the middle (pending examples included) resumes exactly. */
    {
        char dir[] = "/tmp/saelite-stats-XXXXXX";
        CHECK(mkdtemp(dir) != NULL);
        sl_err err;
        sl_stats *st = fresh();
        feed(st, 0, 11, 2);
        double x_sum[1] = {0};
        sl_recon_sums recon = {.x_sum = x_sum};
        sl_checkpoint c = {.batches_done = 6, .batch_size = 2, .seq_len = SEQ};
        CHECK(sl_checkpoint_save(dir, st, &recon, 1, &c, &err) == 0);
        sl_stats_free(st);
        /* a run without the option refuses this checkpoint */
        sl_stats *plain = sl_stats_new(D, TOP_K, &err);
        CHECK(sl_checkpoint_load(dir, plain, &recon, 1, &c, &err) == -1);
        CHECK_MSG(err.msg, "one example per sequence");
        sl_stats_free(plain);
        sl_stats *back = fresh();
        CHECK(sl_checkpoint_load(dir, back, &recon, 1, &c, &err) == 0);
        feed(back, 11, NSEQ, 3);
        sl_stats_sort_examples(back);
        compare(back, "resumed");
        sl_stats_free(back);
        char path[128];
        snprintf(path, sizeof path, "%s/%s", dir, SL_CHECKPOINT_FILE);
        unlink(path);
        rmdir(dir);
    }
    if (check_failures) fprintf(stderr, "%d check(s) failed\n", check_failures);
    else printf("test_stats_per_sequence: ok\n");
    return check_failures != 0;
}
