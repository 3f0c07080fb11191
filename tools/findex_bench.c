/* findex_bench: rebuilds a finished store's feature index (index.sli) and
 * measures it (a measurement tool, not a test).
 *
 *   findex_bench STORE_DIR [--budget BYTES] [--repeat N]
 *
 * Reads n_active from STORE_DIR/results.slr and the row ranges from the
 * segments, builds index.sli (timed; --budget bounds the postings per pass,
 * default 256 MiB), then decodes every feature N times (default 3) and prints
 * bytes per nonzero, build time, decode speed (postings/s over all features,
 * best of N) and the time to decode the feature with the most postings. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "findex.h"
#include "results.h"
#include "store.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: findex_bench STORE_DIR [--budget BYTES] [--repeat N]\n");
        return 2;
    }
    const char *dir = argv[1];
    size_t budget = 0;
    int repeat = 3;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--budget")) budget = (size_t)strtoull(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--repeat")) repeat = atoi(argv[i + 1]);
    }
    sl_err err;
    sl_results res;
    if (sl_results_open(&res, dir, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    uint32_t d_sae = res.header->d_sae;
    uint64_t *n_active = malloc((size_t)d_sae * sizeof *n_active); /* [d_sae] */
    for (uint32_t f = 0; f < d_sae; f++) n_active[f] = res.features[f].n_active;
    sl_results_close(&res);

    uint32_t n_seg = 0;
    sl_segment_ref *segs = NULL;
    for (;; n_seg++) {
        char path[4200];
        struct stat sb;
        sl_segment_name(path, sizeof path, dir, n_seg);
        if (stat(path, &sb) != 0) break;
        sl_segment *seg = sl_segment_open(path, &err);
        if (!seg) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        segs = realloc(segs, (n_seg + 1) * sizeof *segs);
        segs[n_seg] = (sl_segment_ref){.first_row = sl_segment_first_row(seg), .n_rows = sl_segment_n_rows(seg)};
        sl_segment_close(seg);
    }
    double t0 = now();
    if (sl_findex_build(dir, d_sae, n_active, segs, n_seg, budget, NULL, NULL, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    double build_s = now() - t0;
    sl_findex *idx = sl_findex_open(dir, &err);
    if (!idx) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    char path[4200];
    struct stat sb;
    snprintf(path, sizeof path, "%s/%s", dir, SL_FINDEX_FILE);
    stat(path, &sb);
    uint64_t nnz = sl_findex_nnz(idx), largest = 0;
    uint32_t big = 0;
    for (uint32_t f = 0; f < d_sae; f++)
        if (sl_findex_count(idx, f) > largest) largest = sl_findex_count(idx, f), big = f;
    uint64_t *rows = malloc((size_t)(largest ? largest : 1) * sizeof *rows); /* [largest] */
    float *vals = malloc((size_t)(largest ? largest : 1) * sizeof *vals);    /* [largest] */
    double best_all = 1e30, best_big = 1e30, checksum = 0;
    for (int r = 0; r < repeat; r++) {
        double t = now();
        for (uint32_t f = 0; f < d_sae; f++) {
            if (sl_findex_read(idx, f, rows, vals, &err)) {
                fprintf(stderr, "%s\n", err.msg);
                return 1;
            }
            if (sl_findex_count(idx, f)) checksum += vals[0];
        }
        double all = now() - t;
        t = now();
        sl_findex_read(idx, big, rows, vals, &err);
        double one = now() - t;
        if (all < best_all) best_all = all;
        if (one < best_big) best_big = one;
    }
    printf("store %s: %u segments, %u features, %llu nonzeros\n", dir, n_seg, d_sae, (unsigned long long)nnz);
    printf("index.sli: %lld bytes, %.3f bytes per nonzero (directory included)\n", (long long)sb.st_size,
           (double)sb.st_size / (double)(nnz ? nnz : 1));
    printf("build: %.2f s (budget %zu bytes)\n", build_s, budget ? budget : SL_FINDEX_DEFAULT_BUDGET);
    printf("decode all features: %.3f s, %.1f M postings/s (checksum %.3f)\n", best_all,
           (double)nnz / best_all / 1e6, checksum);
    printf("largest feature %u: %llu postings decoded in %.3f ms\n", big, (unsigned long long)largest, best_big * 1e3);
    free(rows);
    free(vals);
    free(segs);
    free(n_active);
    sl_findex_close(idx);
    return 0;
}
