/* test_findex.c: the feature-major index (index.sli) and row access (rowstore).
 *
 * Writes a small store of segments (uneven sizes, some f32 blocks, a dead, a
 * dense and a planted feature), transposes it by brute force from the blocks
 * read back, and checks against that: the index built with a budget of one
 * posting (a pass per feature) and with the default budget are the same bytes;
 * every feature's postings and quantiles (numpy's linear percentile, computed
 * here in double from a sorted copy; a planted feature by hand); damaged and
 * truncated files are errors naming the file; the rowstore returns every row.
 * The directory is parsed following docs/STORE_FORMAT.md, pinning its layout.
 * argv[1] (the fixture dir) is unused; files go to a mkdtemp directory. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "check.h"
#include "findex.h"
#include "rowstore.h"
#include "store.h"

#define D 50u
#define SEQ_LEN 8u
#define N_SEG 5u
#define HEADER 64u
#define ENTRY 56u

static const uint32_t seg_rows[N_SEG] = {64, 64, 48, 64, 40};
static char g_dir[64];
static uint64_t g_rng = 0x243f6a8885a308d3ull;
static sl_segment_ref g_segs[N_SEG];
static uint64_t g_n_rows;
static float *g_dense;      /* [g_n_rows, D] values as stored, 0 where inactive */
static int32_t *g_tokens;   /* [g_n_rows] */
static uint64_t g_count[D]; /* nonzeros per feature */

static uint64_t rnd(void) { /* splitmix64 */
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double urand(void) { return (double)(rnd() >> 11) * (1.0 / 9007199254740992.0); }

static uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const unsigned char *p) { return rd32(p) | (uint64_t)rd32(p + 4) << 32; }
static void wr64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void wr32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static unsigned char *slurp(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)n + 1);
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) n = 0;
    fclose(f);
    *size = (size_t)n;
    return buf;
}
static void spit(const char *path, const unsigned char *buf, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(buf, 1, n, f) != n)) {
        perror(path);
        exit(2);
    }
    fclose(f);
}

static void index_path(char *out, size_t size) { snprintf(out, size, "%s/%s", g_dir, SL_FINDEX_FILE); }

/* The store: random rows (~15% of features active), plus feature 0 dead,
 * feature 1 active on every row with one value (dense: LZ4 pays), feature 2
 * holding a 1e-9 in segment 2 (its block stores f32), feature 4 planted
 * with 1, 2, 3, 4 on rows 0..3 only. */
static void write_store(void) {
    uint64_t first = 0;
    for (uint32_t s = 0; s < N_SEG; s++) {
        uint32_t n = seg_rows[s];
        uint64_t *row_ptr = malloc((n + 1) * sizeof *row_ptr);
        uint32_t *col = malloc((size_t)n * D * sizeof *col);
        float *val = malloc((size_t)n * D * sizeof *val);
        int32_t *tok = malloc(n * sizeof *tok);
        row_ptr[0] = 0;
        for (uint32_t r = 0; r < n; r++) {
            uint64_t row = first + r, k = row_ptr[r];
            tok[r] = (int32_t)(rnd() % 50257);
            for (uint32_t f = 1; f < D; f++) {
                float v = 0;
                if (f == 1) v = 1.5f;
                else if (f == 4) v = row < 4 ? (float)(row + 1) : 0.0f;
                else if (f == 2 && s == 2 && r == 5) v = 1e-9f;
                else if (urand() < 0.15) v = (float)(-log(1.0 - urand()) * 2.0) + 0.01f;
                if (v != 0) {
                    col[k] = f;
                    val[k++] = v;
                }
            }
            row_ptr[r + 1] = k;
        }
        sl_csr csr = {n, D, row_ptr, col, val};
        char path[256];
        sl_err err;
        sl_segment_name(path, sizeof path, g_dir, s);
        if (sl_segment_write(path, first, SEQ_LEN, &csr, tok, 16, NULL, &err)) {
            fprintf(stderr, "%s\n", err.msg);
            exit(2);
        }
        g_segs[s] = (sl_segment_ref){.first_row = first, .n_rows = n};
        first += n;
        free(row_ptr);
        free(col);
        free(val);
        free(tok);
    }
    g_n_rows = first;
}

/* Brute force: the dense matrix of stored values, from the blocks read back. */
static void transpose_store(void) {
    g_dense = calloc((size_t)g_n_rows * D, sizeof *g_dense);
    g_tokens = calloc(g_n_rows, sizeof *g_tokens);
    sl_block blk = {0};
    for (uint32_t s = 0; s < N_SEG; s++) {
        char path[256];
        sl_err err;
        sl_segment_name(path, sizeof path, g_dir, s);
        sl_segment *seg = sl_segment_open(path, &err);
        CHECK(seg != NULL);
        if (!seg) exit(2);
        CHECK(sl_segment_read_tokens(seg, g_tokens + g_segs[s].first_row, &err) == 0);
        for (uint32_t b = 0; b < sl_segment_n_blocks(seg); b++) {
            CHECK(sl_segment_read_block(seg, b, &blk, &err) == 0);
            for (uint32_t r = 0; r < blk.n_rows; r++)
                for (uint64_t j = blk.row_ptr[r]; j < blk.row_ptr[r + 1]; j++) {
                    uint64_t row = g_segs[s].first_row + blk.first_row + r;
                    g_dense[row * D + blk.col[j]] = blk.val[j];
                    g_count[blk.col[j]]++;
                }
        }
        sl_segment_close(seg);
    }
    sl_block_free(&blk);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* numpy.percentile(values, 100 q), default method, from a sorted copy. */
static double np_percentile(const double *sorted, uint64_t n, double q) {
    double h = (double)(n - 1) * q;
    uint64_t lo = (uint64_t)floor(h), hi = lo + 1 < n ? lo + 1 : n - 1;
    return sorted[lo] + (h - (double)lo) * (sorted[hi] - sorted[lo]);
}

static void check_postings(const sl_findex *idx) {
    CHECK(sl_findex_d_sae(idx) == D);
    CHECK(sl_findex_n_rows(idx) == g_n_rows);
    uint64_t nnz = 0;
    for (uint32_t f = 0; f < D; f++) nnz += g_count[f];
    CHECK(sl_findex_nnz(idx) == nnz);
    uint64_t *rows = malloc(g_n_rows * sizeof *rows), *rows2 = malloc(g_n_rows * sizeof *rows2);
    float *vals = malloc(g_n_rows * sizeof *vals), *vals2 = malloc(g_n_rows * sizeof *vals2);
    double *sorted = malloc(g_n_rows * sizeof *sorted);
    sl_err err;
    for (uint32_t f = 0; f < D; f++) {
        uint64_t n = sl_findex_count(idx, f);
        CHECK(n == g_count[f]);
        CHECK(sl_findex_read(idx, f, rows, vals, &err) == 0);
        uint64_t k = 0;
        int same = 1;
        for (uint64_t row = 0; row < g_n_rows; row++) {
            float v = g_dense[row * D + f];
            if (v == 0) continue;
            if (k >= n || rows[k] != row || vals[k] != v) same = 0;
            sorted[k++] = v;
        }
        CHECK(same && k == n);
        /* the same postings in chunks of 7 */
        sl_findex_iter it;
        CHECK(sl_findex_iter_begin(idx, f, &it, &err) == 0);
        uint64_t got = 0;
        for (int64_t m; (m = sl_findex_iter_next(&it, rows2 + got, vals2 + got, 7, &err)) > 0;) got += (uint64_t)m;
        sl_findex_iter_end(&it);
        CHECK(got == n && memcmp(rows, rows2, n * sizeof *rows) == 0 && memcmp(vals, vals2, n * sizeof *vals) == 0);

        float p50, p90, p99;
        sl_findex_quantiles(idx, f, &p50, &p90, &p99);
        if (n == 0) {
            CHECK(isnan(p50) && isnan(p90) && isnan(p99));
            continue;
        }
        qsort(sorted, n, sizeof *sorted, cmp_double);
        CHECK_NEAR(p50, np_percentile(sorted, n, 0.50), 1e-6 * fabs(sorted[n - 1]));
        CHECK_NEAR(p90, np_percentile(sorted, n, 0.90), 1e-6 * fabs(sorted[n - 1]));
        CHECK_NEAR(p99, np_percentile(sorted, n, 0.99), 1e-6 * fabs(sorted[n - 1]));
    }
    /* planted: numpy.percentile([1, 2, 3, 4], [50, 90, 99]) = 2.5, 3.7, 3.97 */
    float p50, p90, p99;
    sl_findex_quantiles(idx, 4, &p50, &p90, &p99);
    CHECK(sl_findex_count(idx, 4) == 4);
    CHECK(p50 == 2.5f && p90 == 3.7f && p99 == 3.97f);
    sl_findex_quantiles(idx, 1, &p50, &p90, &p99);
    CHECK(p50 == 1.5f && p99 == 1.5f);
    CHECK(sl_findex_count(idx, 0) == 0 && sl_findex_count(idx, 1) == g_n_rows);
    CHECK(sl_findex_read(idx, D, rows, vals, &err) != 0);
    CHECK_MSG(err.msg, "out of range");
    free(rows);
    free(rows2);
    free(vals);
    free(vals2);
    free(sorted);
}

static void test_build_and_read(void) {
    sl_err err;
    char path[256];
    index_path(path, sizeof path);
    /* a budget of one posting: every feature is a pass of its own */
    CHECK(sl_findex_build(g_dir, D, g_count, g_segs, N_SEG, 12, NULL, NULL, &err) == 0);
    size_t n_small, n_big;
    unsigned char *small = slurp(path, &n_small);
    CHECK(sl_findex_build(g_dir, D, g_count, g_segs, N_SEG, 0, NULL, NULL, &err) == 0);
    unsigned char *big = slurp(path, &n_big);
    CHECK(n_small == n_big && n_big > HEADER && memcmp(small, big, n_big) == 0);
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CHECK(access(tmp, F_OK) != 0);

    /* layout: header fields and each directory entry's flags */
    CHECK(memcmp(big, "SAELIDX1", 8) == 0 && rd32(big + 8) == 1 && rd32(big + 12) == D);
    CHECK(rd64(big + 16) == g_n_rows && rd64(big + 32) == n_big - (uint64_t)D * ENTRY);
    CHECK(rd64(big + 56) == XXH64(big, 56, 0));
    const unsigned char *dir = big + rd64(big + 32);
    CHECK(rd64(dir + 8) == 0 && rd64(dir + 16) == 0);   /* dead feature: no bytes */
    CHECK(rd32(dir + ENTRY + 32) == 0x3);                /* dense feature: fp16 + LZ4 */
    CHECK((rd32(dir + 2 * ENTRY + 32) & 0x1) == 0);      /* feature 2 holds an f32 value */
    CHECK(rd64(dir + ENTRY + 16) < g_n_rows * 3 * 7 / 8); /* LZ4 saved at least an eighth */
    uint64_t bytes = n_big - HEADER - (uint64_t)D * ENTRY, nnz = rd64(big + 24);
    printf("index: %llu nonzeros, %.2f bytes per nonzero of postings\n", (unsigned long long)nnz,
           (double)bytes / (double)nnz);

    sl_findex *idx = sl_findex_open(g_dir, &err);
    CHECK(idx != NULL);
    if (idx) check_postings(idx);
    sl_findex_close(idx);
    free(small);
    free(big);
}

/* Opens DIR/index.sli after writing `bytes` there; returns the error or "". */
static const char *open_error(const unsigned char *bytes, size_t n, sl_err *err) {
    char path[256];
    index_path(path, sizeof path);
    spit(path, bytes, n);
    sl_findex *idx = sl_findex_open(g_dir, err);
    if (!idx) return err->msg;
    sl_findex_close(idx);
    return "";
}

/* Recomputes the directory and header checksums after an edit. */
static void reseal(unsigned char *buf, size_t n) {
    uint64_t dir_off = rd64(buf + 32);
    wr64(buf + 40, XXH64(buf + dir_off, n - dir_off, 0));
    wr64(buf + 56, XXH64(buf, 56, 0));
}

static void test_damage(void) {
    char path[256];
    index_path(path, sizeof path);
    size_t n;
    unsigned char *good = slurp(path, &n), *buf = malloc(n);
    sl_err err;
    const unsigned char *dir = good + rd64(good + 32);
    uint64_t f1_off = rd64(dir + ENTRY), f5_off = rd64(dir + 5 * ENTRY);

    /* a flipped byte in feature 5's postings: opens, feature 5 fails, the rest read */
    memcpy(buf, good, n);
    buf[f5_off + 1] ^= 0x40;
    CHECK(*open_error(buf, n, &err) == 0);
    sl_findex *idx = sl_findex_open(g_dir, &err);
    uint64_t rows[400];
    float vals[400];
    CHECK(idx && sl_findex_read(idx, 5, rows, vals, &err) != 0);
    CHECK_MSG(err.msg, path);
    CHECK_MSG(err.msg, "feature 5: checksum mismatch");
    CHECK(idx && sl_findex_read(idx, 6, rows, vals, &err) == 0);
    sl_findex_close(idx);

    /* LZ4 feature damaged */
    memcpy(buf, good, n);
    buf[f1_off + 2] ^= 0x01;
    CHECK(*open_error(buf, n, &err) == 0);
    idx = sl_findex_open(g_dir, &err);
    CHECK(idx && sl_findex_read(idx, 1, rows, vals, &err) != 0);
    CHECK_MSG(err.msg, "feature 1: checksum mismatch");
    sl_findex_close(idx);

    struct {
        size_t at;
        size_t len; /* truncate to this many bytes when nonzero */
        const char *needle;
    } cases[] = {
        {0, 0, "bad magic"},
        {20, 0, "header checksum mismatch"},
        {n - 3, 0, "directory checksum mismatch"},
        {0, n - 1, "damaged index"},
        {0, 40, "truncated header"},
        {0, 5, "bad magic"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memcpy(buf, good, n);
        if (!cases[i].len) buf[cases[i].at] ^= 0x10;
        const char *msg = open_error(buf, cases[i].len ? cases[i].len : n, &err);
        CHECK_MSG(msg, cases[i].needle);
        CHECK_MSG(msg, path);
    }
    CHECK(*open_error(good, 0, &err) != 0); /* empty file */

    /* forged but well-sealed files: still caught */
    memcpy(buf, good, n);
    wr32(buf + 8, 2); /* version */
    reseal(buf, n);
    CHECK_MSG(open_error(buf, n, &err), "version 2 is not supported");
    memcpy(buf, good, n);
    unsigned char *d = buf + rd64(buf + 32);
    wr64(d + 3 * ENTRY + 8, rd64(d + 3 * ENTRY + 8) + 1); /* a count that disagrees with its bytes' size */
    wr64(d + 4 * ENTRY + 8, rd64(d + 4 * ENTRY + 8) - 1);
    reseal(buf, n);
    CHECK_MSG(open_error(buf, n, &err), "directory entry of feature");
    memcpy(buf, good, n);
    d = buf + rd64(buf + 32);
    wr64(d + 7 * ENTRY, rd64(d + 7 * ENTRY) + 1); /* offsets no longer tile the file */
    reseal(buf, n);
    CHECK_MSG(open_error(buf, n, &err), "directory entry of feature 7");

    /* a row varint running into the values, with every checksum right: the read says so */
    memcpy(buf, good, n);
    d = buf + rd64(buf + 32);
    unsigned char *p4 = buf + rd64(d + 4 * ENTRY); /* feature 4: rows 0, 1, 2, 3 as varints 0, 0, 0, 0 */
    CHECK(p4[0] == 0 && p4[3] == 0 && (rd32(d + 4 * ENTRY + 32) & 0x2) == 0);
    p4[3] = 0x80; /* continues past the row bytes */
    wr64(d + 4 * ENTRY + 48, XXH64(p4, rd64(d + 4 * ENTRY + 16), 0));
    reseal(buf, n);
    CHECK(*open_error(buf, n, &err) == 0);
    idx = sl_findex_open(g_dir, &err);
    CHECK(idx && sl_findex_read(idx, 4, rows, vals, &err) != 0);
    CHECK_MSG(err.msg, "feature 4: bad row");
    sl_findex_close(idx);
    /* a first row of 2^21, past the store's 280 rows */
    p4[0] = 0x80, p4[1] = 0x80, p4[2] = 0x80, p4[3] = 0x01;
    wr64(d + 4 * ENTRY + 48, XXH64(p4, rd64(d + 4 * ENTRY + 16), 0));
    reseal(buf, n);
    CHECK(*open_error(buf, n, &err) == 0);
    idx = sl_findex_open(g_dir, &err);
    CHECK(idx && sl_findex_read(idx, 4, rows, vals, &err) != 0);
    CHECK_MSG(err.msg, "feature 4: bad row");
    sl_findex_close(idx);

    spit(path, good, n);
    free(buf);
    free(good);
}

static void test_build_errors(void) {
    sl_err err;
    char path[256], tmp[300];
    index_path(path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    unlink(path);
    uint64_t counts[D];
    memcpy(counts, g_count, sizeof counts);
    counts[5]++;
    CHECK(sl_findex_build(g_dir, D, counts, g_segs, N_SEG, 0, NULL, NULL, &err) != 0);
    CHECK_MSG(err.msg, "feature 5 has");
    CHECK_MSG(err.msg, "the statistics count");
    counts[5] -= 2;
    CHECK(sl_findex_build(g_dir, D, counts, g_segs, N_SEG, 100, NULL, NULL, &err) != 0);
    CHECK_MSG(err.msg, "feature 5 has more nonzeros");
    CHECK(access(path, F_OK) != 0 && access(tmp, F_OK) != 0);
    /* the segments say 50 features; a run of 49 is a mismatch */
    CHECK(sl_findex_build(g_dir, D - 1, g_count, g_segs, N_SEG, 0, NULL, NULL, &err) != 0);
    CHECK_MSG(err.msg, "seg-000000.sls");
    CHECK(sl_findex_open(g_dir, &err) == NULL);
    CHECK_MSG(err.msg, "cannot open the feature index");
    CHECK_MSG(err.msg, path);
    CHECK(sl_findex_build(g_dir, D, g_count, g_segs, N_SEG, 0, NULL, NULL, &err) == 0);
}

static int stop_after_3(void *ctx, uint64_t done, uint64_t total) {
    uint64_t *calls = ctx;
    (*calls)++;
    return done > total || done >= 3;
}

static void test_progress(void) {
    sl_err err;
    uint64_t calls = 0;
    CHECK(sl_findex_build(g_dir, D, g_count, g_segs, N_SEG, 12, stop_after_3, &calls, &err) != 0);
    CHECK(calls == 3);
    CHECK_MSG(err.msg, "interrupted");
    CHECK(sl_findex_build(g_dir, D, g_count, g_segs, N_SEG, 0, NULL, NULL, &err) == 0);
}

static void test_rowstore(void) {
    sl_err err;
    sl_rowstore *rs = sl_rowstore_open(g_dir, &err);
    CHECK(rs != NULL);
    if (!rs) return;
    CHECK(sl_rowstore_n_rows(rs) == g_n_rows && sl_rowstore_seq_len(rs) == SEQ_LEN);
    /* every row, in a scrambled order (binary search, cache misses), then ascending */
    for (int pass = 0; pass < 2; pass++) {
        int same = 1;
        for (uint64_t i = 0; i < g_n_rows; i++) {
            uint64_t row = pass == 0 ? (i * 97) % g_n_rows : i;
            sl_row r;
            int32_t tok;
            if (sl_rowstore_row(rs, row, &r, &err) || sl_rowstore_token(rs, row, &tok, &err)) {
                same = 0;
                continue;
            }
            uint32_t k = 0;
            for (uint32_t f = 0; f < D; f++) {
                float v = g_dense[row * D + f];
                if (v == 0) continue;
                if (k >= r.nnz || r.col[k] != f || r.val[k] != v) same = 0;
                k++;
            }
            if (k != r.nnz || r.token != g_tokens[row] || tok != g_tokens[row]) same = 0;
        }
        CHECK(same);
    }
    sl_row r;
    CHECK(sl_rowstore_row(rs, g_n_rows, &r, &err) != 0);
    CHECK_MSG(err.msg, "outside the store");
    sl_rowstore_close(rs);

    /* a missing segment */
    char a[256], b[300];
    sl_segment_name(a, sizeof a, g_dir, 2);
    snprintf(b, sizeof b, "%s.away", a);
    CHECK(rename(a, b) == 0);
    CHECK(sl_rowstore_open(g_dir, &err) == NULL);
    CHECK_MSG(err.msg, "a segment is missing");
    CHECK(rename(b, a) == 0);
}

int main(int argc, char **argv) {
    (void)argc;
    (void)argv;
    strcpy(g_dir, "/tmp/saelite-findex-XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 2;
    }
    write_store();
    transpose_store();
    CHECK(g_count[0] == 0 && g_count[1] == g_n_rows && g_count[4] == 4);
    test_build_and_read();
    test_damage();
    test_build_errors();
    test_progress();
    test_rowstore();
    free(g_dense);
    free(g_tokens);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", g_dir);
    CHECK_DONE();
}
