/* results.c: writing and mapping results.slr (see results.h for the layout). */
#include "results.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "fsutil.h"

_Static_assert(sizeof(sl_results_header) == 64, "header layout");
_Static_assert(sizeof(sl_result_feature) == 40, "feature record layout");
_Static_assert(sizeof(sl_result_example) == 48, "example record layout");
_Static_assert(sizeof(sl_window_token) == 8, "window token layout");

typedef struct pending_window {
    uint64_t row;  /* the example's max-token row */
    uint64_t slot; /* index into examples[] */
} pending_window;

static int by_row(const void *pa, const void *pb) {
    const pending_window *a = pa, *b = pb;
    return a->row < b->row ? -1 : a->row > b->row;
}

/* A segment decoded whole: its tokens and every block. */
typedef struct decoded_segment {
    sl_segment *seg;
    int32_t *tokens;
    sl_block *blocks;
    uint32_t n_blocks, block_rows;
} decoded_segment;

static void decoded_free(decoded_segment *d) {
    for (uint32_t b = 0; b < d->n_blocks; b++) sl_block_free(&d->blocks[b]);
    free(d->blocks);
    free(d->tokens);
    sl_segment_close(d->seg);
    memset(d, 0, sizeof *d);
}

static int decoded_load(decoded_segment *d, const char *store_dir, uint32_t segment_no, sl_err *err) {
    char path[4200];
    sl_segment_name(path, sizeof path, store_dir, segment_no);
    if (!(d->seg = sl_segment_open(path, err))) return -1;
    uint32_t n_rows = sl_segment_n_rows(d->seg);
    d->n_blocks = sl_segment_n_blocks(d->seg);
    d->block_rows = sl_segment_block_rows(d->seg);
    d->tokens = malloc((size_t)(n_rows ? n_rows : 1) * sizeof(int32_t));
    d->blocks = calloc(d->n_blocks ? d->n_blocks : 1, sizeof(sl_block));
    if (!d->tokens || !d->blocks) return sl_errf(err, "out of memory");
    if (sl_segment_read_tokens(d->seg, d->tokens, err)) return -1;
    for (uint32_t b = 0; b < d->n_blocks; b++)
        if (sl_segment_read_block(d->seg, b, &d->blocks[b], err)) return -1;
    return 0;
}

/* The window of the example at `row`: [row - context, row + context] within its
 * sequence, stopping before padding. */
static void window_bounds(uint64_t row, uint32_t seq_len, uint32_t context, const sl_source *src, uint64_t *lo,
                          uint64_t *hi) {
    uint64_t pos = row % seq_len, first = row - pos;
    *lo = first + (pos > context ? pos - context : 0);
    *hi = first + (pos + context < seq_len - 1 ? pos + context : seq_len - 1);
    uint64_t doc;
    uint32_t cs, ce;
    int32_t token;
    while (*hi > row && sl_source_row_origin(src, *hi, &doc, &cs, &ce, &token) == 0 && token < 0) (*hi)--;
}

/* The max token's document and the characters the window covers in it. */
static void window_origin(const sl_source *src, uint64_t lo, uint64_t hi, uint64_t row, sl_result_example *e) {
    uint64_t doc, d;
    uint32_t cs, ce, s, t;
    int32_t token;
    e->document = SL_NO_DOCUMENT;
    if (sl_source_row_origin(src, row, &doc, &cs, &ce, &token) != 0) return;
    e->document = doc;
    e->char_start = UINT32_MAX;
    e->char_end = 0;
    for (uint64_t r = lo; r <= hi; r++) {
        if (sl_source_row_origin(src, r, &d, &s, &t, &token) != 0 || d != doc || token < 0 || s == t) continue;
        if (s < e->char_start) e->char_start = s;
        if (t > e->char_end) e->char_end = t;
    }
    if (e->char_start > e->char_end) e->char_start = e->char_end = 0; /* only special tokens */
}

int sl_results_write(const char *store_dir, const sl_stats *st, uint32_t context, uint32_t seq_len,
                     const sl_segment_ref *segments, uint32_t n_segments, const sl_source *src, sl_err *err) {
    const uint32_t d_sae = st->d_sae, k = st->top_k;
    char path[4200], tmp[4220];
    snprintf(path, sizeof path, "%s/%s", store_dir, SL_RESULTS_FILE);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);

    /* Window sizes are known from positions alone, so offsets are assigned first. */
    uint64_t n_window_tokens = 0, n_pending = 0;
    for (uint32_t f = 0; f < d_sae; f++) {
        for (uint32_t i = 0; i < st->acc[f].n_examples; i++) {
            uint64_t lo, hi;
            window_bounds(st->heap[(size_t)f * k + i].row, seq_len, context, src, &lo, &hi);
            n_window_tokens += hi - lo + 1;
            n_pending++;
        }
    }
    size_t size = sizeof(sl_results_header) + (size_t)d_sae * sizeof(sl_result_feature) +
                  (size_t)d_sae * k * sizeof(sl_result_example) +
                  (size_t)n_window_tokens * sizeof(sl_window_token);

    int rc = -1, fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    unsigned char *map = NULL;
    pending_window *pending = NULL;
    decoded_segment cur = {0};
    if (fd < 0) return sl_errf_path(err, tmp, "cannot create: %s", strerror(errno));
    if (sl_reserve_file(fd, size) != 0) {
        sl_errf_path(err, tmp, "cannot write %zu bytes: %s", size, strerror(errno));
        goto done;
    }
    map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        map = NULL;
        sl_errf_path(err, tmp, "cannot mmap: %s", strerror(errno));
        goto done;
    }
    sl_results_header *h = (sl_results_header *)map;
    sl_result_feature *feats = (sl_result_feature *)(h + 1);
    sl_result_example *ex = (sl_result_example *)(feats + d_sae);
    sl_window_token *win = (sl_window_token *)(ex + (size_t)d_sae * k);
    memcpy(h->magic, "SAELRES1", 8);
    h->version = 2;
    h->d_sae = d_sae;
    h->top_k = k;
    h->context = context;
    h->seq_len = seq_len;
    h->n_tokens = st->n_tokens;
    h->nnz = st->nnz;
    h->n_window_tokens = n_window_tokens;

    pending = malloc((size_t)(n_pending ? n_pending : 1) * sizeof *pending);
    if (!pending) {
        sl_errf(err, "out of memory");
        goto done;
    }
    uint64_t offset = 0, np = 0;
    for (uint32_t f = 0; f < d_sae; f++) {
        const sl_feature_acc *a = &st->acc[f];
        sl_result_feature *rf = &feats[f];
        rf->n_active = a->n_active;
        sl_stats_feature(st, f, &rf->mean, &rf->std);
        rf->min_active = a->n_active ? a->min_active : 0.0f;
        rf->max = a->n_active ? a->max : 0.0f;
        rf->n_examples = a->n_examples;
        for (uint32_t i = 0; i < a->n_examples; i++) {
            size_t slot = (size_t)f * k + i;
            const sl_example *e = &st->heap[slot];
            uint64_t lo, hi;
            window_bounds(e->row, seq_len, context, src, &lo, &hi);
            ex[slot] = (sl_result_example){.act = e->act,
                                           .position = (uint32_t)(e->row % seq_len),
                                           .sequence = e->row / seq_len,
                                           .window_offset = offset,
                                           .window_len = (uint32_t)(hi - lo + 1),
                                           .max_index = (uint32_t)(e->row - lo)};
            window_origin(src, lo, hi, e->row, &ex[slot]);
            offset += hi - lo + 1;
            pending[np++] = (pending_window){.row = e->row, .slot = slot};
        }
    }

    /* Fill windows segment by segment, each segment decoded once. */
    qsort(pending, (size_t)n_pending, sizeof *pending, by_row);
    uint32_t seg_i = 0;
    int loaded = -1;
    for (uint64_t p = 0; p < n_pending; p++) {
        uint64_t row = pending[p].row;
        while (seg_i < n_segments && row >= segments[seg_i].first_row + segments[seg_i].n_rows) seg_i++;
        if (seg_i == n_segments || row < segments[seg_i].first_row) {
            sl_errf_path(err, store_dir, "row %llu of a top example is in no segment",
                         (unsigned long long)row);
            goto done;
        }
        if (loaded != (int)seg_i) {
            decoded_free(&cur);
            if (decoded_load(&cur, store_dir, seg_i, err)) goto done;
            loaded = (int)seg_i;
        }
        const sl_result_example *e = &ex[pending[p].slot];
        uint32_t f = (uint32_t)(pending[p].slot / k);
        uint64_t first = pending[p].row - e->max_index;
        for (uint32_t t = 0; t < e->window_len; t++) {
            uint64_t local = first + t - segments[seg_i].first_row;
            const sl_block *blk = &cur.blocks[local / cur.block_rows];
            sl_window_token *w = &win[e->window_offset + t];
            w->token = cur.tokens[local];
            w->act = t == e->max_index ? e->act : sl_block_value(blk, (uint32_t)(local - blk->first_row), f);
        }
    }
    h->checksum = XXH64(map + sizeof *h, size - sizeof *h, 0);
    if (msync(map, size, MS_SYNC) != 0 || fsync(fd) != 0) {
        sl_errf_path(err, tmp, "cannot sync: %s", strerror(errno));
        goto done;
    }
    if (rename(tmp, path) != 0) {
        sl_errf_path(err, path, "cannot rename results into place: %s", strerror(errno));
        goto done;
    }
    sl_fsync_dir(store_dir);
    rc = 0;
done:
    decoded_free(&cur);
    free(pending);
    if (map) munmap(map, size);
    close(fd);
    if (rc != 0) unlink(tmp);
    return rc;
}

int sl_results_open(sl_results *res, const char *store_dir, sl_err *err) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", store_dir, SL_RESULTS_FILE);
    memset(res, 0, sizeof *res);
    void *map;
    size_t size;
    if (sl_map_readonly(path, "results", &map, &size, err)) return -1;
    if (size < sizeof(sl_results_header)) {
        if (map) munmap(map, size);
        return sl_errf_path(err, path, "truncated results file");
    }
    const sl_results_header *h = map;
    int ok = memcmp(h->magic, "SAELRES1", 8) == 0 && h->version == 2;
    if (!ok) {
        munmap(map, size);
        return sl_errf_path(err, path, "not a saelite results file (bad magic or version)");
    }
    /* Sizes in 128-bit-safe steps: every factor is bounded before multiplying. */
    unsigned __int128 want = (unsigned __int128)sizeof *h + (unsigned __int128)h->d_sae * sizeof(sl_result_feature) +
                             (unsigned __int128)h->d_sae * h->top_k * sizeof(sl_result_example) +
                             (unsigned __int128)h->n_window_tokens * sizeof(sl_window_token);
    if (want != size || XXH64((const unsigned char *)map + sizeof *h, size - sizeof *h, 0) != h->checksum) {
        munmap(map, size);
        return sl_errf_path(err, path, "damaged results file (%s)", want != size ? "size mismatch" : "checksum mismatch");
    }
    res->map = map;
    res->map_size = size;
    res->header = h;
    res->features = (const sl_result_feature *)(h + 1);
    res->examples = (const sl_result_example *)(res->features + h->d_sae);
    res->windows = (const sl_window_token *)(res->examples + (size_t)h->d_sae * h->top_k);
    /* Window references are checked here so readers can index without bounds checks. */
    for (size_t i = 0; i < (size_t)h->d_sae; i++) {
        if (res->features[i].n_examples > h->top_k) goto bad;
        for (uint32_t j = 0; j < res->features[i].n_examples; j++) {
            const sl_result_example *e = &res->examples[i * h->top_k + j];
            if (e->window_offset > h->n_window_tokens || e->window_len > h->n_window_tokens - e->window_offset ||
                e->max_index >= e->window_len)
                goto bad;
        }
    }
    return 0;
bad:
    sl_results_close(res);
    return sl_errf_path(err, path, "damaged results file (window out of range)");
}

void sl_results_close(sl_results *res) {
    if (res->map) munmap(res->map, res->map_size);
    memset(res, 0, sizeof *res);
}
