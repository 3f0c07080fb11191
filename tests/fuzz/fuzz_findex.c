/* fuzz_findex.c: the feature index index.sli (sl_findex_open, sl_findex_read and
 * the chunked sl_findex_iter_*, engine/findex.c).
 *
 * Input: one mode byte, then the file. With mode & 1 the harness recomputes the
 * checksums first (each feature's whose bytes lie inside the file, then the
 * directory's, then the header's), so the fuzzer reaches the checks behind them.
 * An opened index is read whole, feature by feature, in chunks of 1 + (mode >> 1)
 * postings, checking what findex.h promises: counts sum to nnz, rows strictly
 * ascending and below n_rows, NaN quantiles exactly for dead features, and the
 * chunked and whole reads agree. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "findex.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static const char *store_dir;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    store_dir = strdup(fz_mkdir("store"));
    return 0;
}

static uint64_t get64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static uint32_t get32(const unsigned char *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }

static void reseal(unsigned char *m, size_t n) {
    if (n < 64) return;
    uint64_t d_sae = get32(m + 12);
    if (d_sae * 56 > n - 64) return;
    uint64_t dir = n - d_sae * 56;
    for (uint64_t f = 0; f < d_sae; f++) {
        unsigned char *e = m + dir + f * 56;
        uint64_t off = get64(e), stored = get64(e + 16);
        if (off <= n && stored <= n - off) fz_put_u64(e + 48, XXH64(m + off, (size_t)stored, 0));
    }
    fz_put_u64(m + 40, XXH64(m + dir, (size_t)(n - dir), 0));
    fz_put_u64(m + 56, XXH64(m, 56, 0));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    unsigned mode = data[0];
    size_t n = size - 1;
    unsigned char *m = malloc(n ? n : 1);
    FZ_ASSERT(m);
    memcpy(m, data + 1, n);
    if (mode & 1) reseal(m, n);
    char name[64];
    snprintf(name, sizeof name, "store/%s", SL_FINDEX_FILE);
    fz_write_file(fz_path(name), m, n);
    free(m);

    sl_err err;
    err.msg[0] = 0;
    sl_findex *idx = sl_findex_open(store_dir, &err);
    if (!idx) {
        FZ_CHECK_ERR(err);
        return 0;
    }
    FZ_ACCEPTED("index");
    const size_t chunk = 1 + (mode >> 1);
    uint64_t total = 0, n_rows = sl_findex_n_rows(idx);
    uint64_t *rows = malloc(chunk * sizeof *rows);
    float *vals = malloc(chunk * sizeof *vals);
    FZ_ASSERT(rows && vals);
    for (uint32_t f = 0; f < sl_findex_d_sae(idx); f++) {
        uint64_t count = sl_findex_count(idx, f), got = 0, prev = 0, sum_rows = 0;
        float p50, p90, p99;
        sl_findex_quantiles(idx, f, &p50, &p90, &p99);
        FZ_ASSERT((count == 0) == (isnan(p50) != 0));
        total += count;
        sl_findex_iter it;
        if (sl_findex_iter_begin(idx, f, &it, &err) != 0) {
            FZ_CHECK_ERR(err);
            continue;
        }
        int64_t k;
        while ((k = sl_findex_iter_next(&it, rows, vals, chunk, &err)) > 0) {
            for (int64_t i = 0; i < k; i++) {
                FZ_ASSERT(rows[i] < n_rows);
                FZ_ASSERT(got + (uint64_t)i == 0 || rows[i] > prev);
                prev = rows[i];
                sum_rows += rows[i];
            }
            got += (uint64_t)k;
        }
        sl_findex_iter_end(&it);
        if (k < 0) {
            FZ_CHECK_ERR(err);
            continue;
        }
        FZ_ASSERT(got == count);
        if (count && count <= 4096) { /* the whole read agrees */
            uint64_t *all = malloc(count * sizeof *all);
            float *allv = malloc(count * sizeof *allv);
            FZ_ASSERT(all && allv);
            FZ_ASSERT(sl_findex_read(idx, f, all, allv, &err) == 0);
            uint64_t s = 0;
            for (uint64_t i = 0; i < count; i++) s += all[i];
            FZ_ASSERT(s == sum_rows && all[count - 1] == prev);
            free(all);
            free(allv);
        }
    }
    FZ_ASSERT(total == sl_findex_nnz(idx));
    free(rows);
    free(vals);
    sl_findex_close(idx);
    return 0;
}
