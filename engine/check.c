/* check.c: reading back every byte of a store to find damage (see check.h). */
#include "check.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "findex.h"
#include "results.h"
#include "store.h"
#include "tokfile.h"

static void problem(sl_buf *report, int *n, const char *msg) {
    sl_buf_puts(report, msg);
    sl_buf_puts(report, "\n");
    (*n)++;
}

/* Every block of one segment; each damaged block is its own line. */
static void check_segment(const char *path, sl_buf *report, int *n) {
    sl_err err;
    sl_segment *seg = sl_segment_open(path, &err);
    if (!seg) {
        problem(report, n, err.msg);
        return;
    }
    int32_t *tokens = malloc((size_t)(sl_segment_n_rows(seg) ? sl_segment_n_rows(seg) : 1) * sizeof *tokens);
    if (!tokens || sl_segment_read_tokens(seg, tokens, &err)) problem(report, n, tokens ? err.msg : "out of memory");
    free(tokens);
    sl_block blk = {0};
    for (uint32_t b = 0; b < sl_segment_n_blocks(seg); b++)
        if (sl_segment_read_block(seg, b, &blk, &err)) problem(report, n, err.msg);
    sl_block_free(&blk);
    sl_segment_close(seg);
}

/* index.sli: header and directory, then every feature's checksum and
 * postings; its counts must be the results file's (when that opens). */
static void check_index(const char *store_dir, const sl_results *res, sl_buf *report, int *n) {
    sl_err err;
    sl_findex *idx = sl_findex_open(store_dir, &err);
    if (!idx) {
        problem(report, n, err.msg);
        return;
    }
    enum { CHUNK = 4096 };
    uint64_t *rows = malloc(CHUNK * sizeof *rows); /* [CHUNK] */
    float *vals = malloc(CHUNK * sizeof *vals);    /* [CHUNK] */
    if (!rows || !vals) problem(report, n, "out of memory");
    char msg[SL_ERR_MAX + 200];
    if (res && res->header && (sl_findex_d_sae(idx) != res->header->d_sae || sl_findex_nnz(idx) != res->header->nnz)) {
        snprintf(msg, sizeof msg, "%s: %u features and %llu nonzeros, the results file has %u and %llu",
                 sl_findex_path(idx), sl_findex_d_sae(idx), (unsigned long long)sl_findex_nnz(idx), res->header->d_sae,
                 (unsigned long long)res->header->nnz);
        problem(report, n, msg);
        res = NULL;
    }
    for (uint32_t f = 0; rows && vals && f < sl_findex_d_sae(idx); f++) {
        if (res && res->header && sl_findex_count(idx, f) != res->features[f].n_active) {
            snprintf(msg, sizeof msg, "%s: feature %u: %llu postings, the results file counts %llu",
                     sl_findex_path(idx), f, (unsigned long long)sl_findex_count(idx, f),
                     (unsigned long long)res->features[f].n_active);
            problem(report, n, msg);
        }
        sl_findex_iter it;
        int64_t got = 0;
        if (sl_findex_iter_begin(idx, f, &it, &err) == 0) {
            while ((got = sl_findex_iter_next(&it, rows, vals, CHUNK, &err)) > 0) {}
            sl_findex_iter_end(&it);
        } else {
            got = -1;
        }
        if (got < 0) problem(report, n, err.msg);
    }
    free(rows);
    free(vals);
    sl_findex_close(idx);
}

int sl_check_store(const char *store_dir, sl_buf *report) {
    int n = 0;
    char msg[SL_ERR_MAX + 4300];
    DIR *d = opendir(store_dir);
    if (!d) {
        snprintf(msg, sizeof msg, "%s: cannot open the store: %s", store_dir, strerror(errno));
        problem(report, &n, msg);
        return n;
    }
    long max_no = -1, count = 0;
    int has_results = 0, has_tokens = 0, has_checkpoint = 0, has_index = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        unsigned no;
        char tail;
        if (sscanf(e->d_name, "seg-%u.sl%c", &no, &tail) == 2 && tail == 's' && strlen(e->d_name) == 14) {
            count++;
            if ((long)no > max_no) max_no = (long)no;
        }
        has_results |= strcmp(e->d_name, SL_RESULTS_FILE) == 0;
        has_index |= strcmp(e->d_name, SL_FINDEX_FILE) == 0;
        has_tokens |= strcmp(e->d_name, SL_TOKFILE_NAME) == 0;
        has_checkpoint |= strcmp(e->d_name, SL_CHECKPOINT_FILE) == 0;
    }
    closedir(d);
    char path[4200];
    for (long no = 0; no <= max_no; no++) {
        sl_segment_name(path, sizeof path, store_dir, (uint32_t)no);
        FILE *f = fopen(path, "rb");
        if (!f) {
            snprintf(msg, sizeof msg, "%s: missing (segments run from 0 to %ld)", path, max_no);
            problem(report, &n, msg);
            continue;
        }
        fclose(f);
        check_segment(path, report, &n);
    }
    sl_err err;
    sl_results res = {0};
    if (has_results && sl_results_open(&res, store_dir, &err)) problem(report, &n, err.msg);
    if (has_index) check_index(store_dir, &res, report, &n); /* stores older than the index have none */
    sl_results_close(&res);
    if (has_tokens) {
        sl_tokfile tf;
        if (sl_tokfile_open(&tf, store_dir, &err)) problem(report, &n, err.msg);
        else sl_tokfile_close(&tf);
    }
    (void)has_checkpoint; /* verified when a run resumes from it */
    (void)count;
    return n;
}
