/* bench_writer.c: time of the writer thread's work per batch (not a test).
 *
 *   build/bench_writer [rows 4096] [nnz_per_row 64] [d_sae 24576] [batches 12]
 *
 * A synthetic batch (rows x about nnz_per_row features of d_sae, exponential
 * values, random token ids) goes through what engine/extract.c's writer does
 * per batch, two ways:
 *   serial:   sl_stats_add, then sl_segment_write (every block compressed in turn);
 *   parallel: sl_segment_write_start on a pool of sl_workpool_default_threads()
 *             threads ($SAELITE_THREADS), sl_stats_add meanwhile, then finish.
 * Both write into a temporary directory with fsync as the engine does. Prints the
 * median and the best milliseconds per batch of each, and of the parts alone. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "stats.h"
#include "store.h"
#include "workpool.h"

static uint64_t g_rng = 0x2545f4914f6cdd1dull;
static uint64_t rnd(void) { /* splitmix64 */
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *what, double *ms, int n) {
    qsort(ms, (size_t)n, sizeof *ms, cmp_double);
    printf("  %-34s median %7.2f ms   best %7.2f ms\n", what, ms[n / 2], ms[0]);
}

int main(int argc, char **argv) {
    uint32_t rows = argc > 1 ? (uint32_t)atoi(argv[1]) : 4096;
    uint32_t k = argc > 2 ? (uint32_t)atoi(argv[2]) : 64;
    uint32_t d_sae = argc > 3 ? (uint32_t)atoi(argv[3]) : 24576;
    int batches = argc > 4 ? atoi(argv[4]) : 12;
    if (!rows || !k || k > d_sae || batches < 1) return fprintf(stderr, "bad arguments\n"), 2;

    /* [rows + 1] offsets, [rows * k] ascending features and values, [rows] tokens */
    uint64_t *row_ptr = malloc((rows + 1) * sizeof *row_ptr);
    uint32_t *col = malloc((size_t)rows * k * sizeof *col);
    float *val = malloc((size_t)rows * k * sizeof *val);
    int32_t *tok = malloc(rows * sizeof *tok);
    if (!row_ptr || !col || !val || !tok) return fprintf(stderr, "out of memory\n"), 1;
    row_ptr[0] = 0;
    for (uint32_t r = 0; r < rows; r++) {
        uint32_t need = k, at = 0;
        for (uint32_t c = 0; c < d_sae && need; c++) /* selection sampling: ascending */
            if (rnd() % (d_sae - c) < need) col[row_ptr[r] + at++] = c, need--;
        for (uint32_t i = 0; i < k; i++)
            val[row_ptr[r] + i] = (float)(-log(1.0 - (double)(rnd() >> 11) / 9007199254740992.0) * 2.0) + 0.05f;
        row_ptr[r + 1] = row_ptr[r] + k;
        tok[r] = (int32_t)(rnd() % 50257);
    }
    sl_csr csr = {rows, d_sae, row_ptr, col, val};

    char dir[] = "/tmp/saelite-bench-writer-XXXXXX", path[128];
    if (!mkdtemp(dir)) return perror("mkdtemp"), 1;
    snprintf(path, sizeof path, "%s/seg.sls", dir);
    sl_err err = {{0}};
    int threads = sl_workpool_default_threads();
    sl_workpool *pool = sl_workpool_new(threads, 0, &err);
    sl_stats *st = sl_stats_new(d_sae, 20, &err);
    if (!pool || !st) return fprintf(stderr, "%s\n", err.msg), 1;
    double *t_serial = malloc((size_t)batches * sizeof(double)), *t_par = malloc((size_t)batches * sizeof(double));
    double *t_stats = malloc((size_t)batches * sizeof(double)), *t_write = malloc((size_t)batches * sizeof(double));
    double *t_pwrite = malloc((size_t)batches * sizeof(double));
    uint64_t first = 0;
    for (int i = 0; i < batches; i++) {
        double t0 = now();
        sl_stats_add(st, &csr, first, rows);
        double t1 = now();
        if (sl_segment_write(path, first, 128, &csr, tok, 0, NULL, &err)) return fprintf(stderr, "%s\n", err.msg), 1;
        double t2 = now();
        first += rows;
        t_stats[i] = 1e3 * (t1 - t0);
        t_write[i] = 1e3 * (t2 - t1);
        t_serial[i] = 1e3 * (t2 - t0);

        sl_segment_job *job;
        t0 = now();
        if (sl_segment_write_start(&job, path, first, 128, &csr, tok, 0, pool, &err))
            return fprintf(stderr, "%s\n", err.msg), 1;
        sl_stats_add(st, &csr, first, rows);
        if (sl_segment_write_finish(job, NULL, &err)) return fprintf(stderr, "%s\n", err.msg), 1;
        t1 = now();
        first += rows;
        t_par[i] = 1e3 * (t1 - t0);

        t0 = now(); /* the parallel write alone */
        if (sl_segment_write_start(&job, path, first, 128, &csr, tok, 0, pool, &err) ||
            sl_segment_write_finish(job, NULL, &err))
            return fprintf(stderr, "%s\n", err.msg), 1;
        t_pwrite[i] = 1e3 * (now() - t0);
    }
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    printf("writer per batch: %u rows x %u nonzeros, d_sae %u, %d batches, %ld CPUs, pool of %d threads + caller\n",
           rows, k, d_sae, batches, cpus, threads);
    report("statistics (sl_stats_add)", t_stats, batches);
    report("segment write, serial", t_write, batches);
    report("segment write, pool", t_pwrite, batches);
    report("before: statistics then write", t_serial, batches);
    report("after: write on pool || statistics", t_par, batches);
    unlink(path);
    rmdir(dir);
    sl_workpool_free(pool);
    sl_stats_free(st);
    free(row_ptr), free(col), free(val), free(tok);
    free(t_serial), free(t_par), free(t_stats), free(t_write), free(t_pwrite);
    return 0;
}
