/* findex.c: building, validating and reading index.sli, the feature-major
 * index of a store (see findex.h; byte layout in docs/STORE_FORMAT.md).
 *
 *   header     64 bytes: magic, version, d_sae, n_rows, nnz, directory offset,
 *              directory checksum, header checksum
 *   postings   one run of bytes per feature, in feature order, no gaps
 *   directory  d_sae entries of 56 bytes: offset, count, stored and raw sizes,
 *              flags, p50/p90/p99, XXH64 of the stored bytes
 *
 * A feature's raw postings are its rows as LEB128 varints (the first as is,
 * then row - prev - 1) followed by its values: fp16 as a plane of low bytes
 * then a plane of high bytes when every value is exactly an fp16, else f32.
 * A feature is LZ4-compressed when that saves at least an eighth and its raw
 * bytes are at most 16 MiB (so a reader's scratch buffer stays bounded). */
#include "findex.h"

#include <errno.h>
#include <lz4.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xxhash.h>

#include "dtype.h"
#include "fsutil.h"
#include "store.h"

#define MAGIC "SAELIDX1"
#define VERSION 1u
#define HEADER_BYTES 64u
#define ENTRY_BYTES 56u
#define FLAG_FP16 0x1u
#define FLAG_LZ4 0x2u
#define LZ4_MAX_RAW ((uint64_t)16 << 20)
#define POSTING_BYTES 12u /* row (8) + value (4) while building */

typedef struct entry {
    uint64_t offset, count, stored, raw;
    uint32_t flags;
    float p50, p90, p99;
    uint64_t xxh;
} entry;

struct sl_findex {
    char *path;
    const unsigned char *map;
    size_t size;
    uint32_t d_sae;
    uint64_t n_rows, nnz;
    entry *dir; /* [d_sae] */
};

/* ---- little-endian fields and varints ---------------------------------- */

static void put32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get64(const unsigned char *p) { return get32(p) | (uint64_t)get32(p + 4) << 32; }
static void putf32(unsigned char *p, float v) { put32(p, sl_f32_to_bits(v)); }
static float getf32(const unsigned char *p) { return sl_bits_to_f32(get32(p)); }

static unsigned char *put_varint64(unsigned char *p, uint64_t v) {
    while (v >= 0x80) {
        *p++ = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    *p++ = (unsigned char)v;
    return p;
}

/* A u64 LEB128 varint that must end before `end`; -1 if it runs over or
 * does not fit 64 bits (a 10th byte above 1). */
static int get_varint64(const unsigned char *p, size_t *pos, size_t end, uint64_t *out) {
    size_t i = *pos;
    if (i < end && p[i] < 0x80) { /* the common case: one byte */
        *out = p[i];
        *pos = i + 1;
        return 0;
    }
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 70; shift += 7, i++) {
        if (i >= end) return -1;
        unsigned char b = p[i];
        if (shift == 63 && b > 1) return -1;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (b < 0x80) {
            *out = v;
            *pos = i + 1;
            return 0;
        }
    }
    return -1;
}

/* ---- building ---------------------------------------------------------- */

/* Exact fp16: every value survives the round trip (then 2 bytes suffice). */
static int all_fp16(const float *vals, uint64_t n) {
    for (uint64_t i = 0; i < n; i++)
        if (sl_f16_to_f32(sl_f32_to_f16(vals[i])) != vals[i] || !isfinite(vals[i])) return 0;
    return 1;
}

/* Order-preserving key of a finite fp16 (sign-magnitude to unsigned). */
static uint16_t f16_key(uint16_t h) { return h & 0x8000u ? (uint16_t)~h : (uint16_t)(h | 0x8000u); }
static uint16_t f16_unkey(uint16_t k) { return k & 0x8000u ? (uint16_t)(k & 0x7fffu) : (uint16_t)~k; }

static int cmp_f32(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

/* numpy.percentile's default ("linear"): between the order statistics around
 * q (n - 1), in double, with numpy's lerp (from the upper end when t >= 0.5). */
static float percentile_sorted(const float *v, uint64_t n, double q) {
    double pos = q * (double)(n - 1);
    uint64_t lo = (uint64_t)floor(pos);
    if (lo >= n - 1) return v[n - 1];
    double t = pos - (double)lo, a = v[lo], b = v[lo + 1], diff = b - a;
    return (float)(t >= 0.5 ? b - diff * (1.0 - t) : a + diff * t);
}

/* Sorts a feature's values (a copy in `sorted`) and takes p50/p90/p99. fp16
 * values sort by two byte-wise counting passes over their 16-bit keys. */
static void feature_quantiles(const float *vals, uint64_t n, int fp16, float *sorted, uint16_t *keys, entry *e) {
    if (n == 0) {
        e->p50 = e->p90 = e->p99 = NAN;
        return;
    }
    if (fp16) {
        uint16_t *a = keys, *b = keys + n;
        uint64_t count[256];
        for (uint64_t i = 0; i < n; i++) a[i] = f16_key(sl_f32_to_f16(vals[i]));
        for (int byte = 0; byte < 2; byte++) {
            memset(count, 0, sizeof count);
            for (uint64_t i = 0; i < n; i++) count[(a[i] >> (8 * byte)) & 0xff]++;
            uint64_t sum = 0;
            for (int d = 0; d < 256; d++) {
                uint64_t c = count[d];
                count[d] = sum;
                sum += c;
            }
            for (uint64_t i = 0; i < n; i++) b[count[(a[i] >> (8 * byte)) & 0xff]++] = a[i];
            uint16_t *t = a;
            a = b;
            b = t;
        }
        for (uint64_t i = 0; i < n; i++) sorted[i] = sl_f16_to_f32(f16_unkey(a[i]));
    } else {
        memcpy(sorted, vals, (size_t)n * sizeof *sorted);
        qsort(sorted, (size_t)n, sizeof *sorted, cmp_f32);
    }
    e->p50 = percentile_sorted(sorted, n, 0.50);
    e->p90 = percentile_sorted(sorted, n, 0.90);
    e->p99 = percentile_sorted(sorted, n, 0.99);
}

/* Raw postings of one feature into out (room: n * 14 bytes); returns the length. */
static size_t encode_feature(const uint64_t *rows, const float *vals, uint64_t n, int fp16, unsigned char *out) {
    unsigned char *p = out;
    uint64_t next = 0; /* the smallest row the next one can be */
    for (uint64_t i = 0; i < n; i++) {
        p = put_varint64(p, rows[i] - next);
        next = rows[i] + 1;
    }
    if (fp16) {
        for (uint64_t i = 0; i < n; i++) {
            uint16_t h = sl_f32_to_f16(vals[i]);
            p[i] = (unsigned char)h;
            p[n + i] = (unsigned char)(h >> 8);
        }
        p += 2 * n;
    } else {
        for (uint64_t i = 0; i < n; i++, p += 4) putf32(p, vals[i]);
    }
    return (size_t)(p - out);
}

static void entry_bytes(const entry *e, unsigned char *p) {
    put64(p, e->offset);
    put64(p + 8, e->count);
    put64(p + 16, e->stored);
    put64(p + 24, e->raw);
    put32(p + 32, e->flags);
    putf32(p + 36, e->p50);
    putf32(p + 40, e->p90);
    putf32(p + 44, e->p99);
    put64(p + 48, e->xxh);
}

typedef struct builder {
    const char *store_dir, *tmp;
    FILE *out;
    uint64_t written; /* bytes of the file so far */
    uint64_t *rows;   /* [range postings] */
    float *vals;      /* [range postings] */
    uint64_t *fill;   /* [range features] next slot of each feature */
    uint64_t *end;    /* [range features] end of each feature's slots */
    unsigned char *raw, *comp;
    size_t raw_cap, comp_cap;
    float *sorted;  /* [largest feature] */
    uint16_t *keys; /* [2 * largest feature] */
    sl_block blk;
    sl_findex_progress_fn progress;
    void *progress_ctx;
    uint64_t reads_done, reads_total;
} builder;

static int write_bytes(builder *b, const void *data, size_t n, sl_err *err) {
    if (n && fwrite(data, 1, n, b->out) != n) return sl_errf_path(err, b->tmp, "cannot write: %s", strerror(errno));
    b->written += n;
    return 0;
}

/* One pass: every segment's blocks, keeping the nonzeros of features [f0, f1). */
static int fill_range(builder *b, uint32_t f0, uint32_t f1, uint32_t d_sae, const sl_segment_ref *segments,
                      uint32_t n_segments, sl_err *err) {
    char path[4200];
    for (uint32_t s = 0; s < n_segments; s++) {
        sl_segment_name(path, sizeof path, b->store_dir, s);
        sl_segment *seg = sl_segment_open(path, err);
        if (!seg) return -1;
        int rc = -1;
        if (sl_segment_first_row(seg) != segments[s].first_row || sl_segment_n_rows(seg) != segments[s].n_rows ||
            sl_segment_n_cols(seg) != d_sae) {
            sl_errf_path(err, path, "segment holds rows %llu..+%u of %u features, expected %llu..+%u of %u",
                         (unsigned long long)sl_segment_first_row(seg), sl_segment_n_rows(seg),
                         sl_segment_n_cols(seg), (unsigned long long)segments[s].first_row, segments[s].n_rows,
                         d_sae);
            goto next;
        }
        for (uint32_t bi = 0; bi < sl_segment_n_blocks(seg); bi++) {
            if (sl_segment_read_block(seg, bi, &b->blk, err)) goto next;
            const sl_block *blk = &b->blk;
            uint64_t row0 = segments[s].first_row + blk->first_row;
            for (uint32_t r = 0; r < blk->n_rows; r++) {
                for (uint64_t j = blk->row_ptr[r]; j < blk->row_ptr[r + 1]; j++) {
                    uint32_t c = blk->col[j];
                    if (c < f0) continue;
                    if (c >= f1) break; /* ids ascend within a row */
                    uint32_t k = c - f0;
                    if (b->fill[k] == b->end[k]) {
                        sl_errf_path(err, path, "feature %u has more nonzeros in the segments than the statistics count",
                                     c);
                        goto next;
                    }
                    b->rows[b->fill[k]] = row0 + r;
                    b->vals[b->fill[k]++] = blk->val[j];
                }
            }
        }
        rc = 0;
    next:
        sl_segment_close(seg);
        if (rc) return rc;
        b->reads_done++;
        if (b->progress && b->progress(b->progress_ctx, b->reads_done, b->reads_total))
            return sl_errf(err, "interrupted");
    }
    return 0;
}

static int grow(unsigned char **buf, size_t *cap, size_t need, sl_err *err) {
    if (need <= *cap) return 0;
    unsigned char *p = realloc(*buf, need);
    if (!p) return sl_errf(err, "out of memory (%zu bytes while building the index)", need);
    *buf = p;
    *cap = need;
    return 0;
}

/* Encodes, checksums and writes feature f's postings (already in memory). */
static int write_feature(builder *b, const uint64_t *rows, const float *vals, uint64_t n, entry *e,
                         sl_err *err) {
    int fp16 = n > 0 && all_fp16(vals, n);
    feature_quantiles(vals, n, fp16, b->sorted, b->keys, e);
    e->offset = b->written;
    e->count = n;
    e->flags = fp16 ? FLAG_FP16 : 0;
    if (grow(&b->raw, &b->raw_cap, (size_t)n * 14 + 1, err)) return -1;
    size_t raw = encode_feature(rows, vals, n, fp16, b->raw);
    const unsigned char *stored = b->raw;
    size_t stored_size = raw;
    if (raw > 0 && raw <= LZ4_MAX_RAW) {
        if (grow(&b->comp, &b->comp_cap, (size_t)LZ4_compressBound((int)raw), err)) return -1;
        int c = LZ4_compress_default((const char *)b->raw, (char *)b->comp, (int)raw, (int)b->comp_cap);
        if (c > 0 && (size_t)c <= raw - raw / 8) {
            stored = b->comp;
            stored_size = (size_t)c;
            e->flags |= FLAG_LZ4;
        }
    }
    e->raw = raw;
    e->stored = stored_size;
    e->xxh = XXH64(stored, stored_size, 0);
    return write_bytes(b, stored, stored_size, err);
}

int sl_findex_build(const char *store_dir, uint32_t d_sae, const uint64_t *n_active, const sl_segment_ref *segments,
                    uint32_t n_segments, size_t budget_bytes, sl_findex_progress_fn progress, void *progress_ctx,
                    sl_err *err) {
    char path[4200], tmp[4220];
    snprintf(path, sizeof path, "%s/%s", store_dir, SL_FINDEX_FILE);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if (budget_bytes == 0) budget_bytes = SL_FINDEX_DEFAULT_BUDGET;
    if (d_sae == 0) return sl_errf_path(err, path, "cannot index 0 features");
    uint64_t budget_postings = budget_bytes / POSTING_BYTES ? budget_bytes / POSTING_BYTES : 1;

    uint64_t n_rows = 0, nnz = 0, largest = 0, range_max = 0, n_ranges = 0;
    for (uint32_t s = 0; s < n_segments; s++) {
        if (segments[s].first_row != n_rows)
            return sl_errf_path(err, store_dir, "segment %u does not start where the one before ends", s);
        n_rows += segments[s].n_rows;
    }
    /* Ranges: as many whole features as fit the budget (at least one). */
    for (uint32_t f = 0; f < d_sae;) {
        uint64_t sum = 0;
        uint32_t g = f;
        while (g < d_sae && (g == f || sum + n_active[g] <= budget_postings)) {
            if (n_active[g] > n_rows) return sl_errf_path(err, store_dir, "feature %u: %llu nonzeros in %llu rows", g,
                                                          (unsigned long long)n_active[g], (unsigned long long)n_rows);
            sum += n_active[g];
            if (n_active[g] > largest) largest = n_active[g];
            g++;
        }
        if (sum > range_max) range_max = sum;
        nnz += sum;
        n_ranges++;
        f = g;
    }

    builder b = {.store_dir = store_dir, .tmp = tmp, .progress = progress, .progress_ctx = progress_ctx,
                 .reads_total = n_ranges * n_segments};
    entry *dir = calloc(d_sae, sizeof *dir);
    unsigned char *dir_bytes = malloc((size_t)d_sae * ENTRY_BYTES);
    b.rows = malloc((size_t)(range_max ? range_max : 1) * sizeof *b.rows);
    b.vals = malloc((size_t)(range_max ? range_max : 1) * sizeof *b.vals);
    b.fill = malloc((size_t)d_sae * sizeof *b.fill);
    b.end = malloc((size_t)d_sae * sizeof *b.end);
    b.sorted = malloc((size_t)(largest ? largest : 1) * sizeof *b.sorted);
    b.keys = malloc((size_t)(largest ? largest : 1) * 2 * sizeof *b.keys);
    int rc = -1;
    if (!dir || !dir_bytes || !b.rows || !b.vals || !b.fill || !b.end || !b.sorted || !b.keys) {
        sl_errf_path(err, path, "out of memory for an index pass of %llu nonzeros", (unsigned long long)range_max);
        goto done;
    }
    if (!(b.out = fopen(tmp, "wb"))) {
        sl_errf_path(err, tmp, "cannot create: %s", strerror(errno));
        goto done;
    }
    unsigned char header[HEADER_BYTES] = {0};
    if (write_bytes(&b, header, sizeof header, err)) goto done; /* filled in at the end */

    for (uint32_t f0 = 0; f0 < d_sae;) {
        uint64_t sum = 0;
        uint32_t f1 = f0;
        while (f1 < d_sae && (f1 == f0 || sum + n_active[f1] <= budget_postings)) {
            b.fill[f1 - f0] = sum;
            sum += n_active[f1];
            b.end[f1 - f0] = sum;
            f1++;
        }
        if (fill_range(&b, f0, f1, d_sae, segments, n_segments, err)) goto done;
        for (uint32_t f = f0; f < f1; f++) {
            uint64_t start = b.end[f - f0] - n_active[f];
            if (b.fill[f - f0] != b.end[f - f0]) {
                sl_errf_path(err, store_dir, "feature %u has %llu nonzeros in the segments, the statistics count %llu",
                             f, (unsigned long long)(b.fill[f - f0] - start), (unsigned long long)n_active[f]);
                goto done;
            }
            if (write_feature(&b, b.rows + start, b.vals + start, n_active[f], &dir[f], err)) goto done;
        }
        f0 = f1;
    }

    uint64_t dir_offset = b.written;
    for (uint32_t f = 0; f < d_sae; f++) entry_bytes(&dir[f], dir_bytes + (size_t)f * ENTRY_BYTES);
    if (write_bytes(&b, dir_bytes, (size_t)d_sae * ENTRY_BYTES, err)) goto done;
    memcpy(header, MAGIC, 8);
    put32(header + 8, VERSION);
    put32(header + 12, d_sae);
    put64(header + 16, n_rows);
    put64(header + 24, nnz);
    put64(header + 32, dir_offset);
    put64(header + 40, XXH64(dir_bytes, (size_t)d_sae * ENTRY_BYTES, 0));
    put64(header + 48, 0);
    put64(header + 56, XXH64(header, 56, 0));
    if (fseek(b.out, 0, SEEK_SET) != 0 || fwrite(header, 1, sizeof header, b.out) != sizeof header ||
        fflush(b.out) != 0 || fsync(fileno(b.out)) != 0) {
        sl_errf_path(err, tmp, "cannot write: %s", strerror(errno));
        goto done;
    }
    FILE *out = b.out;
    b.out = NULL;
    if (fclose(out) != 0) { /* some file systems report a full disk only here */
        sl_errf_path(err, tmp, "cannot write: %s", strerror(errno));
        goto done;
    }
    if (rename(tmp, path) != 0) {
        sl_errf_path(err, path, "cannot rename the index into place: %s", strerror(errno));
        goto done;
    }
    sl_fsync_dir(store_dir);
    rc = 0;
done:
    if (b.out) fclose(b.out);
    if (rc != 0) unlink(tmp);
    sl_block_free(&b.blk);
    free(b.raw);
    free(b.comp);
    free(b.rows);
    free(b.vals);
    free(b.fill);
    free(b.end);
    free(b.sorted);
    free(b.keys);
    free(dir_bytes);
    free(dir);
    return rc;
}

/* ---- reading ----------------------------------------------------------- */

static int bad(sl_findex *idx, sl_err *err, const char *what) {
    sl_errf_path(err, idx->path, "damaged index (%s)", what);
    sl_findex_close(idx);
    return -1;
}

sl_findex *sl_findex_open(const char *store_dir, sl_err *err) {
    sl_findex *idx = calloc(1, sizeof *idx);
    if (!idx) return sl_errf(err, "out of memory"), NULL;
    size_t plen = strlen(store_dir) + sizeof(SL_FINDEX_FILE) + 2;
    if (!(idx->path = malloc(plen))) {
        free(idx);
        return sl_errf(err, "out of memory"), NULL;
    }
    snprintf(idx->path, plen, "%s/%s", store_dir, SL_FINDEX_FILE);
    void *map;
    if (sl_map_readonly(idx->path, "the feature index", &map, &idx->size, err)) {
        sl_findex_close(idx);
        return NULL;
    }
    idx->map = map;
    const unsigned char *h = idx->map;
    if (idx->size < 8 || memcmp(h, MAGIC, 8) != 0) {
        sl_errf_path(err, idx->path, "not a saelite feature index (bad magic)");
        sl_findex_close(idx);
        return NULL;
    }
    if (idx->size < HEADER_BYTES) return bad(idx, err, "truncated header"), NULL;
    if (XXH64(h, 56, 0) != get64(h + 56)) return bad(idx, err, "header checksum mismatch"), NULL;
    if (get32(h + 8) != VERSION) {
        sl_errf_path(err, idx->path, "feature index version %u is not supported (expected %u)", get32(h + 8), VERSION);
        sl_findex_close(idx);
        return NULL;
    }
    idx->d_sae = get32(h + 12);
    idx->n_rows = get64(h + 16);
    idx->nnz = get64(h + 24);
    uint64_t dir_offset = get64(h + 32);
    if (idx->d_sae == 0 || get64(h + 48) != 0) return bad(idx, err, "bad header fields"), NULL;
    if ((idx->size - HEADER_BYTES) / ENTRY_BYTES < idx->d_sae ||
        dir_offset != idx->size - (uint64_t)idx->d_sae * ENTRY_BYTES)
        return bad(idx, err, "truncated, or directory out of place"), NULL;
    const unsigned char *d = idx->map + dir_offset;
    if (XXH64(d, (size_t)idx->d_sae * ENTRY_BYTES, 0) != get64(h + 40))
        return bad(idx, err, "directory checksum mismatch"), NULL;
    if (!(idx->dir = malloc((size_t)idx->d_sae * sizeof *idx->dir))) {
        sl_errf(err, "out of memory");
        sl_findex_close(idx);
        return NULL;
    }
    /* Entries tile [64, dir_offset) in feature order; sizes agree with counts. */
    uint64_t at = HEADER_BYTES, total = 0;
    for (uint32_t f = 0; f < idx->d_sae; f++) {
        const unsigned char *p = d + (size_t)f * ENTRY_BYTES;
        entry *e = &idx->dir[f];
        *e = (entry){.offset = get64(p), .count = get64(p + 8), .stored = get64(p + 16), .raw = get64(p + 24),
                     .flags = get32(p + 32), .p50 = getf32(p + 36), .p90 = getf32(p + 40), .p99 = getf32(p + 44),
                     .xxh = get64(p + 48)};
        uint64_t v = e->flags & FLAG_FP16 ? 2 : 4;
        int ok = e->offset == at && e->stored <= dir_offset - at && !(e->flags & ~(FLAG_FP16 | FLAG_LZ4)) &&
                 e->count <= idx->n_rows && e->count <= (UINT64_MAX >> 5);
        if (ok && e->count == 0)
            ok = e->stored == 0 && e->raw == 0 && e->flags == 0 && isnan(e->p50) && isnan(e->p90) && isnan(e->p99);
        else if (ok)
            ok = e->raw >= e->count * (1 + v) && e->raw <= e->count * (10 + v) && !isnan(e->p50) &&
                 !isnan(e->p90) && !isnan(e->p99) && e->p50 <= e->p90 && e->p90 <= e->p99 &&
                 (e->flags & FLAG_LZ4 ? e->stored > 0 && e->stored < e->raw && e->raw <= LZ4_MAX_RAW &&
                                            e->raw <= 256 * e->stored
                                      : e->stored == e->raw);
        if (!ok) {
            char what[96];
            snprintf(what, sizeof what, "directory entry of feature %u", f);
            return bad(idx, err, what), NULL;
        }
        at += e->stored;
        total += e->count;
    }
    if (at != dir_offset) return bad(idx, err, "postings do not fill the file"), NULL;
    if (total != idx->nnz) return bad(idx, err, "feature counts do not sum to nnz"), NULL;
    return idx;
}

void sl_findex_close(sl_findex *idx) {
    if (!idx) return;
    if (idx->map) munmap((void *)idx->map, idx->size);
    free(idx->dir);
    free(idx->path);
    free(idx);
}

uint32_t sl_findex_d_sae(const sl_findex *idx) { return idx->d_sae; }
uint64_t sl_findex_n_rows(const sl_findex *idx) { return idx->n_rows; }
uint64_t sl_findex_nnz(const sl_findex *idx) { return idx->nnz; }
const char *sl_findex_path(const sl_findex *idx) { return idx->path; }

uint64_t sl_findex_count(const sl_findex *idx, uint32_t feature) {
    return feature < idx->d_sae ? idx->dir[feature].count : 0;
}

void sl_findex_quantiles(const sl_findex *idx, uint32_t feature, float *p50, float *p90, float *p99) {
    const entry *e = feature < idx->d_sae ? &idx->dir[feature] : NULL;
    *p50 = e ? e->p50 : NAN;
    *p90 = e ? e->p90 : NAN;
    *p99 = e ? e->p99 : NAN;
}

int sl_findex_iter_begin(const sl_findex *idx, uint32_t feature, sl_findex_iter *it, sl_err *err) {
    memset(it, 0, sizeof *it);
    if (feature >= idx->d_sae)
        return sl_errf_path(err, idx->path, "feature %u out of range (d_sae %u)", feature, idx->d_sae);
    const entry *e = &idx->dir[feature];
    const unsigned char *stored = idx->map + e->offset;
    if (XXH64(stored, (size_t)e->stored, 0) != e->xxh)
        return sl_errf_path(err, idx->path, "feature %u: checksum mismatch (damaged data)", feature);
    it->idx = idx;
    it->feature = feature;
    it->count = e->count;
    it->fp16 = (e->flags & FLAG_FP16) != 0;
    it->raw = stored;
    if (e->flags & FLAG_LZ4) {
        if (!(it->scratch = malloc((size_t)e->raw))) return sl_errf(err, "out of memory");
        int n = LZ4_decompress_safe((const char *)stored, (char *)it->scratch, (int)e->stored, (int)e->raw);
        if (n < 0 || (uint64_t)n != e->raw) {
            sl_findex_iter_end(it);
            return sl_errf_path(err, idx->path, "feature %u: cannot decompress (damaged data)", feature);
        }
        it->raw = it->scratch;
    }
    it->rows_end = (size_t)(e->raw - e->count * (it->fp16 ? 2 : 4));
    return 0;
}

int64_t sl_findex_iter_next(sl_findex_iter *it, uint64_t *rows, float *vals, size_t max, sl_err *err) {
    if (!it->idx) return 0;
    const unsigned char *raw = it->raw;
    const unsigned char *values = raw + it->rows_end;
    uint64_t n = it->count - it->done < max ? it->count - it->done : max;
    uint64_t next = it->done ? it->prev_row + 1 : 0, limit = it->idx->n_rows;
    size_t pos = it->pos;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t gap;
        if (pos < it->rows_end && raw[pos] < 0x80) /* one byte: gaps below 128 */
            gap = raw[pos++];
        else if (get_varint64(raw, &pos, it->rows_end, &gap))
            gap = UINT64_MAX;
        if (gap >= limit - next)
            return sl_errf_path(err, it->idx->path, "feature %u: bad row in its postings (damaged data)", it->feature);
        rows[i] = next + gap;
        next = rows[i] + 1;
    }
    const uint64_t at = it->done;
    if (it->fp16) {
        const unsigned char *lo = values + at, *hi = values + it->count + at;
        for (uint64_t i = 0; i < n; i++) {
            uint32_t h = (uint32_t)lo[i] | (uint32_t)hi[i] << 8, e = h & 0x7c00u;
            /* normal numbers: rebias the exponent; zeros, subnormals, inf, nan: the general path */
            vals[i] = e != 0 && e != 0x7c00u ? sl_bits_to_f32((h & 0x8000u) << 16 | ((h & 0x7fffu) + 0x1c000u) << 13)
                                             : sl_f16_to_f32((uint16_t)h);
        }
    } else
        for (uint64_t i = 0; i < n; i++) vals[i] = getf32(values + 4 * (at + i));
    it->pos = pos;
    it->done += n;
    if (n) it->prev_row = rows[n - 1];
    if (it->done == it->count && it->pos != it->rows_end)
        return sl_errf_path(err, it->idx->path, "feature %u: postings longer than their count (damaged data)",
                            it->feature);
    return (int64_t)n;
}

void sl_findex_iter_end(sl_findex_iter *it) {
    free(it->scratch);
    memset(it, 0, sizeof *it);
}

int sl_findex_read(const sl_findex *idx, uint32_t feature, uint64_t *rows, float *vals, sl_err *err) {
    sl_findex_iter it;
    if (sl_findex_iter_begin(idx, feature, &it, err)) return -1;
    int64_t n = sl_findex_iter_next(&it, rows, vals, (size_t)it.count, err);
    sl_findex_iter_end(&it);
    return n < 0 ? -1 : 0;
}
