/* rowstore.c: random access to a finished store's rows (see rowstore.h).
 *
 * Per segment number the row range is remembered once the segment has been
 * opened; at most OPEN_SEGMENTS stay mapped (least recently used closed), each
 * with its decoded token ids once asked for, and the last CACHED_BLOCKS
 * decoded blocks are kept. A row is found by trying the segment its number
 * would be in if every segment had segment 0's size (true of all but the
 * last, as the writer makes them), then by binary search over first_row. */
#include "rowstore.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

#define OPEN_SEGMENTS 8
#define CACHED_BLOCKS 4

typedef struct open_segment {
    sl_segment *seg; /* NULL: free slot */
    uint32_t no;
    int32_t *tokens; /* [n_rows], decoded on first token read, or NULL */
    uint64_t used;
} open_segment;

typedef struct cached_block {
    int valid;
    uint32_t segment_no, block_no;
    uint64_t used;
    sl_block blk;
} cached_block;

struct sl_rowstore {
    char *dir;
    uint32_t n_segments;
    uint64_t *first_row; /* [n_segments], valid where known[i] */
    uint32_t *seg_rows;  /* [n_segments] */
    uint8_t *known;      /* [n_segments] */
    uint64_t n_rows;
    uint32_t seq_len, n_cols;
    uint64_t tick;
    open_segment open[OPEN_SEGMENTS];
    cached_block blocks[CACHED_BLOCKS];
};

/* The open segment `no`, opening it (and learning its rows) if needed. */
static open_segment *segment(sl_rowstore *rs, uint32_t no, sl_err *err) {
    open_segment *victim = &rs->open[0];
    for (int i = 0; i < OPEN_SEGMENTS; i++) {
        open_segment *o = &rs->open[i];
        if (o->seg && o->no == no) {
            o->used = ++rs->tick;
            return o;
        }
        if (!o->seg || (victim->seg && o->used < victim->used)) victim = o;
    }
    char path[4200];
    sl_segment_name(path, sizeof path, rs->dir, no);
    sl_segment *seg = sl_segment_open(path, err);
    if (!seg) return NULL;
    if (rs->n_cols && (sl_segment_n_cols(seg) != rs->n_cols || sl_segment_seq_len(seg) != rs->seq_len)) {
        sl_errf_path(err, path, "segment has %u features and sequences of %u tokens, segment 0 %u and %u",
                     sl_segment_n_cols(seg), sl_segment_seq_len(seg), rs->n_cols, rs->seq_len);
        sl_segment_close(seg);
        return NULL;
    }
    sl_segment_close(victim->seg);
    free(victim->tokens);
    *victim = (open_segment){.seg = seg, .no = no, .used = ++rs->tick};
    rs->first_row[no] = sl_segment_first_row(seg);
    rs->seg_rows[no] = sl_segment_n_rows(seg);
    rs->known[no] = 1;
    return victim;
}

static int row_range(sl_rowstore *rs, uint32_t no, uint64_t *first, uint32_t *n, sl_err *err) {
    if (!rs->known[no] && !segment(rs, no, err)) return -1;
    *first = rs->first_row[no];
    *n = rs->seg_rows[no];
    return 0;
}

/* The segment holding `row`, and the row's index in it. */
static open_segment *locate(sl_rowstore *rs, uint64_t row, uint32_t *local, sl_err *err) {
    if (row >= rs->n_rows)
        return sl_errf_path(err, rs->dir, "row %llu is outside the store (%llu rows)", (unsigned long long)row,
                            (unsigned long long)rs->n_rows),
               NULL;
    uint64_t first;
    uint32_t n, lo = 0, hi = rs->n_segments - 1;
    uint64_t per = rs->seg_rows[0] ? rs->seg_rows[0] : 1;
    uint32_t guess = row / per < rs->n_segments ? (uint32_t)(row / per) : hi;
    if (row_range(rs, guess, &first, &n, err)) return NULL;
    if (row < first || row - first >= n) {
        while (lo < hi) { /* last segment whose first_row <= row */
            uint32_t mid = lo + (hi - lo + 1) / 2;
            if (row_range(rs, mid, &first, &n, err)) return NULL;
            if (first <= row) lo = mid;
            else hi = mid - 1;
        }
        guess = lo;
        if (row_range(rs, guess, &first, &n, err)) return NULL;
        if (row < first || row - first >= n)
            return sl_errf_path(err, rs->dir, "row %llu is in no segment (segments overlap or leave a gap)",
                                (unsigned long long)row),
                   NULL;
    }
    *local = (uint32_t)(row - first);
    return segment(rs, guess, err);
}

sl_rowstore *sl_rowstore_open(const char *store_dir, sl_err *err) {
    sl_rowstore *rs = calloc(1, sizeof *rs);
    if (!rs || !(rs->dir = strdup(store_dir))) {
        free(rs);
        return sl_errf(err, "out of memory"), NULL;
    }
    DIR *d = opendir(store_dir);
    if (!d) {
        sl_errf_path(err, store_dir, "cannot open the store: %s", strerror(errno));
        sl_rowstore_close(rs);
        return NULL;
    }
    long max_no = -1, count = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        unsigned no;
        char tail;
        if (strlen(e->d_name) == 14 && sscanf(e->d_name, "seg-%6u.sl%c", &no, &tail) == 2 && tail == 's') {
            count++;
            if ((long)no > max_no) max_no = (long)no;
        }
    }
    closedir(d);
    if (count == 0 || count != max_no + 1) {
        if (count == 0) sl_errf_path(err, store_dir, "no segment files in the store");
        else sl_errf_path(err, store_dir, "%ld segment files but numbers up to %ld (a segment is missing)", count, max_no);
        sl_rowstore_close(rs);
        return NULL;
    }
    rs->n_segments = (uint32_t)count;
    rs->first_row = calloc((size_t)count, sizeof *rs->first_row);
    rs->seg_rows = calloc((size_t)count, sizeof *rs->seg_rows);
    rs->known = calloc((size_t)count, 1);
    if (!rs->first_row || !rs->seg_rows || !rs->known) {
        sl_errf(err, "out of memory");
        sl_rowstore_close(rs);
        return NULL;
    }
    open_segment *first = segment(rs, 0, err);
    if (!first) goto fail;
    rs->n_cols = sl_segment_n_cols(first->seg);
    rs->seq_len = sl_segment_seq_len(first->seg);
    if (rs->first_row[0] != 0) {
        sl_errf_path(err, sl_segment_path(first->seg), "the first segment starts at row %llu, not 0",
                     (unsigned long long)rs->first_row[0]);
        goto fail;
    }
    uint64_t last_first;
    uint32_t last_n;
    if (row_range(rs, rs->n_segments - 1, &last_first, &last_n, err)) goto fail;
    rs->n_rows = last_first + last_n;
    return rs;
fail:
    sl_rowstore_close(rs);
    return NULL;
}

void sl_rowstore_close(sl_rowstore *rs) {
    if (!rs) return;
    for (int i = 0; i < OPEN_SEGMENTS; i++) {
        sl_segment_close(rs->open[i].seg);
        free(rs->open[i].tokens);
    }
    for (int i = 0; i < CACHED_BLOCKS; i++) sl_block_free(&rs->blocks[i].blk);
    free(rs->first_row);
    free(rs->seg_rows);
    free(rs->known);
    free(rs->dir);
    free(rs);
}

uint64_t sl_rowstore_n_rows(const sl_rowstore *rs) { return rs->n_rows; }
uint32_t sl_rowstore_seq_len(const sl_rowstore *rs) { return rs->seq_len; }

static int segment_tokens(open_segment *o, sl_err *err) {
    if (o->tokens) return 0;
    uint32_t n = sl_segment_n_rows(o->seg);
    if (!(o->tokens = malloc((size_t)(n ? n : 1) * sizeof *o->tokens))) return sl_errf(err, "out of memory");
    if (sl_segment_read_tokens(o->seg, o->tokens, err)) {
        free(o->tokens);
        o->tokens = NULL;
        return -1;
    }
    return 0;
}

int sl_rowstore_token(sl_rowstore *rs, uint64_t row, int32_t *token, sl_err *err) {
    uint32_t local;
    open_segment *o = locate(rs, row, &local, err);
    if (!o || segment_tokens(o, err)) return -1;
    *token = o->tokens[local];
    return 0;
}

int sl_rowstore_row(sl_rowstore *rs, uint64_t row, sl_row *out, sl_err *err) {
    uint32_t local;
    open_segment *o = locate(rs, row, &local, err);
    if (!o || segment_tokens(o, err)) return -1;
    uint32_t block_no = local / sl_segment_block_rows(o->seg);
    cached_block *cb = NULL, *victim = &rs->blocks[0];
    for (int i = 0; i < CACHED_BLOCKS; i++) {
        cached_block *c = &rs->blocks[i];
        if (c->valid && c->segment_no == o->no && c->block_no == block_no) {
            cb = c;
            break;
        }
        if (!c->valid || (victim->valid && c->used < victim->used)) victim = c;
    }
    if (!cb) {
        cb = victim;
        cb->valid = 0;
        if (sl_segment_read_block(o->seg, block_no, &cb->blk, err)) return -1;
        cb->valid = 1;
        cb->segment_no = o->no;
        cb->block_no = block_no;
    }
    cb->used = ++rs->tick;
    uint32_t r = local - cb->blk.first_row;
    uint64_t at = cb->blk.row_ptr[r];
    out->token = o->tokens[local];
    out->nnz = (uint32_t)(cb->blk.row_ptr[r + 1] - at);
    out->col = cb->blk.col + at;
    out->val = cb->blk.val + at;
    return 0;
}
