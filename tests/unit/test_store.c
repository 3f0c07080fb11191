/* test_store.c: segment round trips, compression ratio, and damaged-file handling.
 * argv[1] (the fixture dir) is unused; files go to a mkdtemp directory under /tmp.
 * The corruption tests parse the footer and index themselves, following
 * docs/STORE_FORMAT.md, so they also pin the documented byte layout. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <xxhash.h>

#include "check.h"
#include "dtype.h"
#include "store.h"
#include "workpool.h"

#define HEADER 16u
#define FOOTER 104u
#define ENTRY 48u

static char g_dir[64];
static uint64_t g_rng = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void) { /* splitmix64 */
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double urand(void) { return (double)(rnd() >> 11) * (1.0 / 9007199254740992.0); }
static uint32_t rnd_below(uint32_t n) { return (uint32_t)(rnd() % n); }

static uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const unsigned char *p) { return rd32(p) | (uint64_t)rd32(p + 4) << 32; }
static void wr32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void wr64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static unsigned char *slurp(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *size = (size_t)n;
    return buf;
}
static void spit(const char *path, const unsigned char *buf, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(2);
    }
    if (n && fwrite(buf, 1, n, f) != n) exit(2);
    fclose(f);
}
static int file_exists(const char *path) { return access(path, F_OK) == 0; }

/* An owned CSR batch plus tokens. */
typedef struct batch {
    sl_csr csr;
    uint64_t *row_ptr;
    uint32_t *col;
    float *val;
    int32_t *tok;
} batch;

static void batch_free(batch *b) {
    free(b->row_ptr);
    free(b->col);
    free(b->val);
    free(b->tok);
    memset(b, 0, sizeof *b);
}

/* Picks k distinct sorted ids of n into out (selection sampling: already ascending). */
static void pick_sorted(uint32_t n, uint32_t k, uint32_t *out) {
    uint32_t need = k;
    for (uint32_t c = 0; c < n && need; c++)
        if (rnd_below(n - c) < need) out[k - need--] = c;
}

/* Random batch: rows with 0..max_nnz nonzeros (some empty), row 3 full, mixed values. */
static batch make_batch(uint32_t n_rows, uint32_t n_cols, uint32_t max_nnz, int big_values) {
    batch b = {0};
    b.row_ptr = malloc((n_rows + 1) * sizeof *b.row_ptr);
    b.tok = malloc((n_rows + 1) * sizeof *b.tok);
    uint32_t *counts = malloc((n_rows + 1) * sizeof *counts);
    uint64_t nnz = 0;
    for (uint32_t r = 0; r < n_rows; r++) {
        uint32_t c = rnd_below(4) == 0 ? 0 : rnd_below(max_nnz + 1);
        if (r == 3 && max_nnz) c = n_cols;
        if (c > n_cols) c = n_cols;
        counts[r] = c;
        nnz += c;
        b.tok[r] = (int32_t)rnd_below(50257);
    }
    if (n_rows > 5) b.tok[5] = -7; /* negative ids survive too */
    if (n_rows > 6) b.tok[6] = INT32_MAX;
    b.col = malloc((nnz + 1) * sizeof *b.col);
    b.val = malloc((nnz + 1) * sizeof *b.val);
    b.row_ptr[0] = 0;
    for (uint32_t r = 0; r < n_rows; r++) {
        uint64_t k0 = b.row_ptr[r];
        pick_sorted(n_cols, counts[r], b.col + k0);
        for (uint32_t i = 0; i < counts[r]; i++) {
            float v = (float)(-log(1.0 - urand()) * 3.0) + 0.01f;
            if (rnd_below(10) == 0) v = -v;
            b.val[k0 + i] = v;
        }
        b.row_ptr[r + 1] = k0 + counts[r];
    }
    if (big_values && nnz > 10) {
        /* forces f32 in the blocks holding them */
        b.val[nnz / 2] = 1.0e6f;
        b.val[nnz - 1] = 1.0e-9f; /* would round to 0 in fp16 */
    }
    free(counts);
    b.csr = (sl_csr){n_rows, n_cols, b.row_ptr, b.col, b.val};
    return b;
}

static int f16_storable(float v) {
    return isfinite(v) && fabsf(v) <= 65504.0f && (v == 0.0f || (sl_f32_to_f16(v) & 0x7fff));
}

/* Writes b, reads everything back, and compares exactly. */
static void round_trip(const batch *b, uint64_t first_row, uint32_t seq_len, uint32_t block_rows,
                       sl_block *blk) {
    char path[128];
    snprintf(path, sizeof path, "%s/rt-%u.sls", g_dir, block_rows);
    sl_err err = {{0}};
    sl_segment_stats st;
    int rc = sl_segment_write(path, first_row, seq_len, &b->csr, b->tok, block_rows, &st, &err);
    CHECK(rc == 0);
    if (rc) {
        fprintf(stderr, "write: %s\n", err.msg);
        return;
    }
    uint32_t br = block_rows ? block_rows : SL_SEGMENT_DEFAULT_BLOCK_ROWS;
    uint32_t n_rows = b->csr.n_rows;
    CHECK(st.nnz == b->row_ptr[n_rows]);
    CHECK(st.n_blocks == (n_rows + br - 1) / br);
    char tmp[160];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CHECK(!file_exists(tmp));

    sl_segment *seg = sl_segment_open(path, &err);
    CHECK(seg != NULL);
    if (!seg) {
        fprintf(stderr, "open: %s\n", err.msg);
        return;
    }
    CHECK(strcmp(sl_segment_path(seg), path) == 0);
    CHECK(sl_segment_first_row(seg) == first_row);
    CHECK(sl_segment_n_rows(seg) == n_rows);
    CHECK(sl_segment_n_cols(seg) == b->csr.n_cols);
    CHECK(sl_segment_seq_len(seg) == seq_len);
    CHECK(sl_segment_nnz(seg) == st.nnz);
    CHECK(sl_segment_n_blocks(seg) == st.n_blocks);
    CHECK(sl_segment_block_rows(seg) == br);
    CHECK(sl_segment_file_bytes(seg) == st.file_bytes);

    int32_t *tok = malloc((n_rows + 1) * sizeof *tok);
    CHECK(sl_segment_read_tokens(seg, tok, &err) == 0);
    CHECK(n_rows == 0 || memcmp(tok, b->tok, n_rows * sizeof *tok) == 0);
    free(tok);

    int bad_cols = 0, bad_vals = 0, bad_lookup = 0;
    for (uint32_t k = 0; k < sl_segment_n_blocks(seg); k++) {
        if (sl_segment_read_block(seg, k, blk, &err)) {
            fprintf(stderr, "read block %u: %s\n", k, err.msg);
            CHECK(0);
            continue;
        }
        CHECK(blk->first_row == k * br);
        CHECK(blk->n_rows == (n_rows - k * br < br ? n_rows - k * br : br));
        uint64_t base = b->row_ptr[blk->first_row];
        int f16 = 1;
        for (uint64_t i = base; i < b->row_ptr[blk->first_row + blk->n_rows]; i++)
            f16 &= f16_storable(b->val[i]);
        CHECK(blk->row_ptr[0] == 0);
        for (uint32_t r = 0; r < blk->n_rows; r++) {
            uint32_t gr = blk->first_row + r;
            CHECK(blk->row_ptr[r + 1] - blk->row_ptr[r] == b->row_ptr[gr + 1] - b->row_ptr[gr]);
            for (uint64_t i = b->row_ptr[gr]; i < b->row_ptr[gr + 1]; i++) {
                uint64_t j = i - base;
                float want = f16 ? sl_f16_to_f32(sl_f32_to_f16(b->val[i])) : b->val[i];
                bad_cols += blk->col[j] != b->col[i];
                bad_vals += memcmp(&blk->val[j], &want, 4) != 0;
                bad_lookup += sl_block_value(blk, r, b->col[i]) != want;
            }
            /* absent features: between, before and after the stored ones */
            for (uint32_t t = 0; t < 4; t++) {
                uint32_t c = rnd_below(b->csr.n_cols);
                int present = 0;
                for (uint64_t i = b->row_ptr[gr]; i < b->row_ptr[gr + 1]; i++)
                    present |= b->col[i] == c;
                if (!present) bad_lookup += sl_block_value(blk, r, c) != 0.0f;
            }
            bad_lookup += sl_block_value(blk, r, b->csr.n_cols) != 0.0f;
            bad_lookup += sl_block_value(blk, r, UINT32_MAX) != 0.0f;
        }
        bad_lookup += sl_block_value(blk, blk->n_rows, 0) != 0.0f;
    }
    CHECK(bad_cols == 0);
    CHECK(bad_vals == 0);
    CHECK(bad_lookup == 0);
    CHECK(sl_segment_read_block(seg, sl_segment_n_blocks(seg), blk, &err) != 0);
    CHECK_MSG(err.msg, "out of range");
    sl_segment_close(seg);
}

/* ~64 active features of 24576 per token, exponential positive values. */
static void test_ratio(void) {
    const uint32_t n_rows = 4096, n_cols = 24576, k = 64;
    batch b = {0};
    b.row_ptr = malloc((n_rows + 1) * sizeof *b.row_ptr);
    b.col = malloc((size_t)n_rows * (k + 8) * sizeof *b.col);
    b.val = malloc((size_t)n_rows * (k + 8) * sizeof *b.val);
    b.tok = malloc(n_rows * sizeof *b.tok);
    b.row_ptr[0] = 0;
    for (uint32_t r = 0; r < n_rows; r++) {
        uint32_t kr = k - 8 + rnd_below(17); /* 56..72 */
        uint64_t k0 = b.row_ptr[r];
        pick_sorted(n_cols, kr, b.col + k0);
        for (uint32_t i = 0; i < kr; i++) b.val[k0 + i] = (float)(-log(1.0 - urand()) * 2.0) + 0.05f;
        b.row_ptr[r + 1] = k0 + kr;
        b.tok[r] = (int32_t)rnd_below(50257);
    }
    b.csr = (sl_csr){n_rows, n_cols, b.row_ptr, b.col, b.val};
    char path[128];
    snprintf(path, sizeof path, "%s/ratio.sls", g_dir);
    sl_err err = {{0}};
    sl_segment_stats st = {0};
    CHECK(sl_segment_write(path, 0, 128, &b.csr, b.tok, 0, &st, &err) == 0);
    double bpn = (double)st.file_bytes / (double)st.nnz;

    /* split the file into blocks / tokens / rest using the documented layout */
    size_t size;
    unsigned char *buf = slurp(path, &size);
    const unsigned char *f = buf + size - FOOTER;
    uint64_t tok_off = rd64(f + 56), tok_size = rd64(f + 64);
    uint32_t n_lz4 = 0;
    for (uint32_t i = 0; i < rd32(f + 36); i++) n_lz4 += (rd32(buf + rd64(f + 48) + i * ENTRY + 32) & 2) != 0;
    printf("realistic segment: %u rows, %" PRIu64 " nnz, %" PRIu64 " bytes: %.3f bytes/nonzero "
           "(blocks %.3f, tokens %.3f B/token, %u/%u blocks LZ4)\n",
           n_rows, st.nnz, st.file_bytes, bpn, (double)(tok_off - HEADER) / (double)st.nnz,
           (double)tok_size / n_rows, n_lz4, st.n_blocks);
    CHECK(bpn < 4.0);
    free(buf);
    sl_block blk = {0};
    round_trip(&b, 0, 128, 0, &blk);
    sl_block_free(&blk);
    batch_free(&b);
}

/* Opens a damaged copy; returns 0 and fills err if open, any block or tokens fail. */
static int read_all(const char *path, sl_err *err) {
    sl_segment *seg = sl_segment_open(path, err);
    if (!seg) return -1;
    int rc = 0;
    sl_block blk = {0};
    int32_t *tok = malloc(((size_t)sl_segment_n_rows(seg) + 1) * sizeof *tok);
    if (sl_segment_read_tokens(seg, tok, err)) rc = -1;
    for (uint32_t k = 0; k < sl_segment_n_blocks(seg); k++)
        if (sl_segment_read_block(seg, k, &blk, rc ? NULL : err)) rc = -1;
    free(tok);
    sl_block_free(&blk);
    sl_segment_close(seg);
    return rc;
}

static void rehash(unsigned char *buf, size_t size) {
    unsigned char *f = buf + size - FOOTER;
    uint64_t idx = rd64(f + 48);
    if (idx > size - FOOTER) return; /* a damaged offset: leave the hashes stale */
    wr64(f + 88, XXH64(buf + idx, size - FOOTER - idx, 0));
    wr64(f + 96, XXH64(f, 96, 0));
}

static void test_corruption(void) {
    batch b = make_batch(60, 40, 12, 0);
    char path[128], bad[128];
    snprintf(path, sizeof path, "%s/good.sls", g_dir);
    snprintf(bad, sizeof bad, "%s/bad.sls", g_dir);
    sl_err err = {{0}};
    CHECK(sl_segment_write(path, 64, 32, &b.csr, b.tok, 7, NULL, &err) == 0);
    size_t size;
    unsigned char *orig = slurp(path, &size);
    unsigned char *buf = malloc(size > 512 ? size : 512);
    CHECK(read_all(path, &err) == 0);

    /* one byte flipped inside block 3: open works, block 3 reports a checksum error */
    const unsigned char *f = orig + size - FOOTER;
    uint64_t idx = rd64(f + 48);
    const unsigned char *e3 = orig + idx + 3 * ENTRY;
    memcpy(buf, orig, size);
    buf[rd64(e3) + rd32(e3 + 8) / 2] ^= 0x10;
    spit(bad, buf, size);
    sl_segment *seg = sl_segment_open(bad, &err);
    CHECK(seg != NULL);
    if (seg) {
        sl_block blk = {0};
        CHECK(sl_segment_read_block(seg, 2, &blk, &err) == 0);
        CHECK(sl_segment_read_block(seg, 3, &blk, &err) != 0);
        CHECK_MSG(err.msg, bad);
        CHECK_MSG(err.msg, "block 3");
        CHECK_MSG(err.msg, "checksum");
        CHECK(blk.n_rows == 0);
        CHECK(sl_segment_read_block(seg, 4, &blk, &err) == 0); /* the block is reusable */
        sl_block_free(&blk);
        sl_segment_close(seg);
    }

    /* token section damage */
    memcpy(buf, orig, size);
    buf[rd64(f + 56)] ^= 1;
    spit(bad, buf, size);
    seg = sl_segment_open(bad, &err);
    CHECK(seg != NULL);
    if (seg) {
        int32_t tok[60];
        CHECK(sl_segment_read_tokens(seg, tok, &err) != 0);
        CHECK_MSG(err.msg, "token section: checksum");
        sl_segment_close(seg);
    }

    /* index and footer damage fail at open */
    memcpy(buf, orig, size);
    buf[idx + 5] ^= 0x01;
    spit(bad, buf, size);
    CHECK(sl_segment_open(bad, &err) == NULL);
    CHECK_MSG(err.msg, "index checksum mismatch");
    CHECK_MSG(err.msg, bad);
    for (size_t pos = size - FOOTER; pos < size; pos += 5) {
        memcpy(buf, orig, size);
        buf[pos] ^= 0x40;
        spit(bad, buf, size);
        CHECK(sl_segment_open(bad, &err) == NULL);
    }
    memcpy(buf, orig, size);
    buf[0] = 'X';
    spit(bad, buf, size);
    CHECK(sl_segment_open(bad, &err) == NULL);
    CHECK_MSG(err.msg, "bad magic (not a saelite segment)");

    /* every single-byte flip anywhere is detected by open, a block or the tokens */
    int undetected = 0;
    for (size_t pos = 0; pos < size; pos++) {
        memcpy(buf, orig, size);
        buf[pos] ^= (unsigned char)(1u << (pos % 8));
        spit(bad, buf, size);
        if (read_all(bad, &err) == 0) {
            fprintf(stderr, "flip at %zu undetected\n", pos);
            undetected++;
        }
    }
    CHECK(undetected == 0);

    /* truncations */
    size_t cuts[] = {0, 1, 7, 10, HEADER, HEADER + FOOTER - 1, size / 2, size - FOOTER, size - 8,
                     size - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        spit(bad, orig, cuts[i]);
        CHECK(sl_segment_open(bad, &err) == NULL);
        CHECK_MSG(err.msg, "truncated segment");
        CHECK_MSG(err.msg, bad);
    }
    /* not a segment at all */
    spit(bad, (const unsigned char *)"hello world, this is not a segment file at all........"
               "......................................................................."
               "..........................",
         150);
    CHECK(sl_segment_open(bad, &err) == NULL);
    CHECK_MSG(err.msg, "bad magic");
    CHECK(sl_segment_open(g_dir, &err) == NULL); /* a directory */
    CHECK(sl_segment_open("/nonexistent/x.sls", &err) == NULL);
    CHECK_MSG(err.msg, "/nonexistent/x.sls: ");

    /* Structure-aware fuzz: damage the index/footer/block bytes and recompute the
     * checksums so the damage reaches validation and decoding. Must never crash. */
    int opened = 0, decoded = 0;
    uint32_t n_blocks = rd32(f + 36);
    for (int it = 0; it < 20000; it++) {
        memcpy(buf, orig, size);
        int nflip = 1 + (int)rnd_below(4);
        for (int j = 0; j < nflip; j++) {
            size_t pos;
            uint32_t mode = rnd_below(3);
            if (mode == 0) pos = idx + rnd_below((uint32_t)(size - idx - 8)); /* index/footer */
            else pos = HEADER + rnd_below((uint32_t)(idx - HEADER));           /* data */
            if (pos >= size - 8) continue;
            if (rnd_below(2)) buf[pos] ^= (unsigned char)(1u << rnd_below(8));
            else buf[pos] = (unsigned char)rnd();
        }
        /* re-checksum the (possibly damaged) blocks and tokens so decoders see the damage */
        unsigned char *ff = buf + size - FOOTER;
        for (uint32_t k = 0; k < n_blocks; k++) {
            unsigned char *e = buf + idx + k * ENTRY;
            uint64_t off = rd64(e);
            uint32_t cs = rd32(e + 8);
            if (off <= size && cs <= size - off) wr64(e + 40, XXH64(buf + off, cs, 0));
        }
        uint64_t to = rd64(ff + 56), ts = rd64(ff + 64);
        if (to <= size && ts <= size - to) wr64(ff + 80, XXH64(buf + to, ts, 0));
        rehash(buf, size);
        spit(bad, buf, size);
        sl_segment *s = sl_segment_open(bad, &err);
        if (!s) {
            CHECK_MSG(err.msg, bad);
            continue;
        }
        opened++;
        sl_segment_close(s);
        if (read_all(bad, &err) == 0) decoded++;
    }
    printf("fuzz: 20000 damaged files, %d passed open, %d decoded fully\n", opened, decoded);

    /* random garbage after a valid header */
    for (int it = 0; it < 2000; it++) {
        size_t n = rnd_below(400);
        for (size_t i = 0; i < n; i++) buf[i] = (unsigned char)rnd();
        if (n >= 8) memcpy(buf, "SAELSEG1", 8);
        if (n >= 12) wr32(buf + 8, 1);
        if (n >= 16) wr32(buf + 12, 0);
        if (n >= HEADER + FOOTER) memcpy(buf + n - FOOTER, "SAELSEG1", 8);
        if (n >= HEADER + FOOTER) wr32(buf + n - FOOTER + 8, 1);
        if (n >= HEADER + FOOTER) wr64(buf + n - 8, XXH64(buf + n - FOOTER, 96, 0));
        spit(bad, buf, n);
        read_all(bad, &err);
    }
    free(buf);
    free(orig);
    batch_free(&b);
}

static void test_invalid_input(void) {
    char path[128], tmp[140];
    snprintf(path, sizeof path, "%s/invalid.sls", g_dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    uint64_t rp[4] = {0, 2, 2, 5};
    uint32_t col[5] = {1, 4, 0, 3, 9};
    float val[5] = {1, 2, 3, 4, 5};
    int32_t tok[3] = {1, 2, 3};
    sl_csr good = {3, 10, rp, col, val};
    sl_err err = {{0}};

    struct {
        const char *what, *needle;
        sl_csr csr;
        uint64_t first_row;
        uint32_t seq_len;
    } cases[] = {
        {"seq_len 0", "seq_len", good, 0, 0},
        {"first_row", "multiple of seq_len", good, 5, 4},
        {"n_cols 0", "n_cols", {3, 0, rp, col, val}, 0, 4},
        {"row_ptr[0]", "row_ptr[0]", {3, 10, (uint64_t[]){1, 2, 2, 5}, col, val}, 0, 4},
        {"monotone", "decreases", {3, 10, (uint64_t[]){0, 3, 2, 5}, col, val}, 0, 4},
        {"col range", "feature 10 >= n_cols", {3, 10, rp, (uint32_t[]){1, 4, 0, 3, 10}, val}, 0, 4},
        {"duplicate", "strictly ascending", {3, 10, rp, (uint32_t[]){1, 4, 0, 3, 3}, val}, 0, 4},
        {"descending", "strictly ascending", {3, 10, rp, (uint32_t[]){4, 1, 0, 3, 9}, val}, 0, 4},
        {"row too long", "nonzeros", {3, 2, rp, col, val}, 0, 4},
        {"null row_ptr", "row_ptr", {3, 10, NULL, col, val}, 0, 4},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        err.msg[0] = 0;
        int rc = sl_segment_write(path, cases[i].first_row, cases[i].seq_len, &cases[i].csr, tok, 0,
                                  NULL, &err);
        if (rc == 0) fprintf(stderr, "case %s accepted\n", cases[i].what);
        CHECK(rc != 0);
        CHECK_MSG(err.msg, cases[i].needle);
        CHECK_MSG(err.msg, path);
        CHECK(!file_exists(path) && !file_exists(tmp));
    }
    CHECK(sl_segment_write(path, 0, 4, &good, NULL, 0, NULL, &err) != 0); /* NULL tokens */
    CHECK(sl_segment_write(path, 0, 4, NULL, tok, 0, NULL, &err) != 0);
    CHECK(sl_segment_write(path, 8, 4, &good, tok, 0, NULL, &err) == 0);
    CHECK(file_exists(path) && !file_exists(tmp));

    /* nonexistent directory: error names the path and the OS reason */
    const char *nd = "/tmp/saelite-no-such-dir-XYZ/seg-000001.sls";
    CHECK(sl_segment_write(nd, 0, 4, &good, tok, 0, NULL, &err) != 0);
    CHECK_MSG(err.msg, nd);
    CHECK_MSG(err.msg, "No such file or directory");

    /* A failing write (a full disk, emulated by a file size limit: EFBIG) removes the
     * .tmp and names the path and the OS reason. */
    batch big = make_batch(2000, 500, 60, 0);
    struct rlimit old_lim, lim;
    getrlimit(RLIMIT_FSIZE, &old_lim);
    lim = old_lim;
    lim.rlim_cur = 4096;
    signal(SIGXFSZ, SIG_IGN);
    if (setrlimit(RLIMIT_FSIZE, &lim) == 0) {
        snprintf(path, sizeof path, "%s/full.sls", g_dir);
        snprintf(tmp, sizeof tmp, "%s.tmp", path);
        CHECK(sl_segment_write(path, 0, 4, &big.csr, big.tok, 0, NULL, &err) != 0);
        CHECK_MSG(err.msg, path);
        CHECK_MSG(err.msg, strerror(EFBIG));
        CHECK(!file_exists(path) && !file_exists(tmp));
        setrlimit(RLIMIT_FSIZE, &old_lim);
    }
    signal(SIGXFSZ, SIG_DFL);
    batch_free(&big);

    char name[64];
    sl_segment_name(name, sizeof name, "store", 42);
    CHECK(strcmp(name, "store/seg-000042.sls") == 0);
}

/* The segment of a parallel write (sl_segment_write_start/finish on pools of 1 to
 * 7 threads, some busy with a second job in turn) is byte for byte the serial
 * one, and the serial one is what the writer wrote before blocks were compressed
 * in parallel: the XXH64 of a fixed-seed segment is pinned. */
static void test_parallel_identical(void) {
    g_rng = 0x5eed5eedull; /* the pinned hash depends on this batch only */
    batch pinned = make_batch(3000, 700, 50, 1);
    batch zeros = make_batch(40, 1000, 0, 0);
    batch none = make_batch(0, 10, 0, 0);
    struct {
        const batch *b;
        uint32_t block_rows;
    } cases[] = {{&pinned, 0}, {&pinned, 1}, {&pinned, 37}, {&pinned, 5000}, {&zeros, 16}, {&none, 0}};
    char serial[128], par[128];
    snprintf(serial, sizeof serial, "%s/serial.sls", g_dir);
    snprintf(par, sizeof par, "%s/parallel.sls", g_dir);
    int threads[] = {1, 2, 3, 7};
    sl_err err = {{0}};
    int compared = 0;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const batch *b = cases[c].b;
        uint32_t br = cases[c].block_rows;
        sl_segment_stats s1 = {0};
        CHECK(sl_segment_write(serial, 4 * 100, 100, &b->csr, b->tok, br, &s1, &err) == 0);
        size_t n1, n2;
        unsigned char *want = slurp(serial, &n1);
        if (c == 0) {
            uint64_t h = XXH64(want, n1, 0);
            if (h != 0x8b8c19e71068b0c8ull) fprintf(stderr, "pinned segment: %zu bytes, XXH64 0x%016" PRIx64 "\n", n1, h);
            CHECK(h == 0x8b8c19e71068b0c8ull); /* written by the serial writer before this change */
        }
        for (size_t t = 0; t < sizeof threads / sizeof threads[0]; t++) {
            sl_workpool *pool = sl_workpool_new(threads[t], t % 2, &err);
            CHECK(pool != NULL);
            sl_segment_job *job = NULL;
            sl_segment_stats s2 = {0};
            CHECK(sl_segment_write_start(&job, par, 4 * 100, 100, &b->csr, b->tok, br, pool, &err) == 0);
            /* the caller's own work while the pool compresses: statistics in the writer */
            volatile double busy = 0;
            for (int i = 0; i < 100000; i++) busy += i * 0.5;
            CHECK(busy == 2499975000.0); /* 0.5 * (0 + ... + 99999), exact in a double */
            CHECK(job && sl_segment_write_finish(job, &s2, &err) == 0);
            unsigned char *got = slurp(par, &n2);
            CHECK(n1 == n2 && memcmp(want, got, n1) == 0);
            CHECK(s1.file_bytes == s2.file_bytes && s1.nnz == s2.nnz && s1.n_blocks == s2.n_blocks);
            compared++;
            free(got);
            sl_workpool_free(pool);
        }
        free(want);
    }
    CHECK(compared == 24);

    /* Bad input fails in start (no job, no file) with the same message as the serial writer. */
    sl_workpool *pool = sl_workpool_new(2, 0, &err);
    uint64_t rp[3] = {0, 2, 1};
    uint32_t col[2] = {1, 2};
    float val[2] = {1, 2};
    int32_t tok[2] = {1, 2};
    sl_csr bad = {2, 10, rp, col, val};
    sl_segment_job *job = (sl_segment_job *)&bad; /* must be reset to NULL */
    unlink(par);
    CHECK(sl_segment_write_start(&job, par, 0, 2, &bad, tok, 0, pool, &err) != 0);
    CHECK(job == NULL);
    CHECK_MSG(err.msg, "decreases at row 1");
    CHECK_MSG(err.msg, par);
    CHECK(!file_exists(par));
    /* An I/O failure in finish: the .tmp's directory does not exist. */
    const char *nd = "/tmp/saelite-no-such-dir-XYZ/seg-000002.sls";
    CHECK(sl_segment_write_start(&job, nd, 0, 100, &pinned.csr, pinned.tok, 0, pool, &err) == 0);
    CHECK(sl_segment_write_finish(job, NULL, &err) != 0);
    CHECK_MSG(err.msg, nd);
    CHECK_MSG(err.msg, "No such file or directory");
    sl_workpool_free(pool);
    printf("parallel writes: %d segments byte-identical to the serial writer's\n", compared);
    batch_free(&pinned);
    batch_free(&zeros);
    batch_free(&none);
}

int main(int argc, char **argv) {
    (void)argc;
    (void)argv;
    strcpy(g_dir, "/tmp/saelite-store-XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 2;
    }

    sl_block blk = {0}; /* one block reused across every segment: exercises growth */
    batch small = make_batch(1000, 300, 40, 1);
    uint32_t sizes[] = {1, 7, 256, 0, 5000};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) round_trip(&small, 2000, 100, sizes[i], &blk);
    batch_free(&small);

    batch tiny = make_batch(9, 5, 5, 0); /* every row can be full */
    round_trip(&tiny, 0, 1, 2, &blk);
    batch_free(&tiny);

    batch empty = make_batch(0, 10, 0, 0);
    round_trip(&empty, 0, 1, 0, &blk);
    batch_free(&empty);

    batch zeros = make_batch(40, 1000, 0, 0); /* all rows empty */
    round_trip(&zeros, 40, 8, 16, &blk);
    batch_free(&zeros);
    sl_block_free(&blk);

    test_ratio();
    test_invalid_input();
    test_corruption();
    test_parallel_identical();

    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    CHECK_DONE();
}
