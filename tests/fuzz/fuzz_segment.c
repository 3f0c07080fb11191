/* fuzz_segment.c: the segment reader (engine/store.c: sl_segment_open,
 * sl_segment_read_tokens, sl_segment_read_block, sl_block_value).
 *
 * Input: one mode byte, then a whole segment file (docs/STORE_FORMAT.md). Every
 * region of a segment is covered by an XXH64, so random bytes would almost never
 * get past the checksums; when mode & 1 the harness recomputes them first (block
 * hashes in the index for entries that lie inside the file, the token section's,
 * the index's, then the footer's), so the fuzzer reaches the field checks and the
 * block decoder. When mode & 1 is clear the file is used as is.
 *
 * An open segment must read its tokens and every block, or fail with an error
 * naming the file; a decoded block must be consistent: row_ptr starting at 0,
 * non-decreasing, ending at the nonzeros the index gave, at most n_cols per row,
 * ids < n_cols strictly ascending within a row, and sl_block_value finds each. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "fuzz_common.h"
#include "store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define HEADER 16u
#define FOOTER 104u
#define ENTRY 48u

static void fix_checksums(unsigned char *m, size_t size) {
    if (size < HEADER + FOOTER) return;
    unsigned char *f = m + size - FOOTER;
    uint64_t n_blocks = fz_get_u32(f + 36), index_off = fz_get_u64(f + 48);
    uint64_t tok_off = fz_get_u64(f + 56), tok_size = fz_get_u64(f + 64);
    uint64_t index_len = n_blocks * ENTRY, data_end = size - FOOTER;
    if (index_off <= data_end && index_len <= data_end - index_off) {
        for (uint64_t b = 0; b < n_blocks; b++) {
            unsigned char *ent = m + index_off + b * ENTRY;
            uint64_t off = fz_get_u64(ent), len = fz_get_u32(ent + 8);
            if (off <= size && len <= size - off) fz_put_u64(ent + 40, XXH64(m + off, (size_t)len, 0));
        }
        fz_put_u64(f + 88, XXH64(m + index_off, (size_t)index_len, 0));
    }
    if (tok_off <= size && tok_size <= size - tok_off)
        fz_put_u64(f + 80, XXH64(m + tok_off, (size_t)tok_size, 0));
    fz_put_u64(f + 96, XXH64(f, 96, 0));
}

static void check_block(const sl_segment *seg, uint32_t b, const sl_block *blk) {
    uint32_t n_cols = sl_segment_n_cols(seg), br = sl_segment_block_rows(seg);
    FZ_ASSERT(blk->first_row == b * br);
    FZ_ASSERT(blk->n_rows >= 1 && blk->n_rows <= br);
    FZ_ASSERT((uint64_t)blk->first_row + blk->n_rows <= sl_segment_n_rows(seg));
    FZ_ASSERT(blk->row_ptr[0] == 0);
    for (uint32_t r = 0; r < blk->n_rows; r++) {
        uint64_t a = blk->row_ptr[r], e = blk->row_ptr[r + 1];
        FZ_ASSERT(a <= e && e - a <= n_cols);
        for (uint64_t k = a; k < e; k++) {
            FZ_ASSERT(blk->col[k] < n_cols);
            if (k > a) FZ_ASSERT(blk->col[k] > blk->col[k - 1]);
            float v = sl_block_value(blk, r, blk->col[k]);
            FZ_ASSERT(memcmp(&v, &blk->val[k], sizeof v) == 0);
        }
        if (e == a || blk->col[a] != 0) FZ_ASSERT(sl_block_value(blk, r, 0) == 0.0f); /* absent */
    }
    FZ_ASSERT(sl_block_value(blk, blk->n_rows, 0) == 0.0f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    unsigned mode = data[0];
    size_t n = size - 1;
    unsigned char *m = malloc(n ? n : 1);
    FZ_ASSERT(m);
    memcpy(m, data + 1, n);
    if (mode & 1) fix_checksums(m, n);
    const char *path = fz_memfd(m, n);
    free(m);

    sl_err err;
    err.msg[0] = 0;
    sl_segment *seg = sl_segment_open(path, &err);
    if (!seg) {
        FZ_CHECK_ERR(err);
        FZ_ASSERT(strstr(err.msg, path) == err.msg);
        return 0;
    }
    FZ_ACCEPTED("segment");
    FZ_ASSERT(sl_segment_file_bytes(seg) == n);
    FZ_ASSERT(strcmp(sl_segment_path(seg), path) == 0);
    uint32_t n_rows = sl_segment_n_rows(seg), n_blocks = sl_segment_n_blocks(seg);
    uint32_t br = sl_segment_block_rows(seg), seq_len = sl_segment_seq_len(seg);
    FZ_ASSERT(br >= 1 && seq_len >= 1 && sl_segment_n_cols(seg) >= 1);
    FZ_ASSERT(sl_segment_first_row(seg) % seq_len == 0);
    FZ_ASSERT(n_blocks == ((uint64_t)n_rows + br - 1) / br);

    int32_t *tokens = malloc(((size_t)n_rows + 1) * sizeof *tokens);
    FZ_ASSERT(tokens);
    if (sl_segment_read_tokens(seg, tokens, &err) != 0) {
        FZ_CHECK_ERR(err);
        FZ_ASSERT(strstr(err.msg, path) == err.msg);
    }
    free(tokens);

    /* Every block, forwards then backwards through one sl_block (buffer reuse). */
    sl_block blk;
    memset(&blk, 0, sizeof blk);
    uint64_t nnz = 0;
    int all_ok = 1;
    for (uint32_t pass = 0; pass < 2; pass++) {
        for (uint32_t i = 0; i < n_blocks; i++) {
            uint32_t b = pass ? n_blocks - 1 - i : i;
            if (sl_segment_read_block(seg, b, &blk, &err) != 0) {
                FZ_CHECK_ERR(err);
                FZ_ASSERT(strstr(err.msg, path) == err.msg);
                FZ_ASSERT(blk.n_rows == 0);
                all_ok = 0;
                continue;
            }
            check_block(seg, b, &blk);
            if (!pass) nnz += blk.row_ptr[blk.n_rows];
        }
    }
    if (all_ok) FZ_ASSERT(nnz == sl_segment_nnz(seg));
    FZ_ASSERT(sl_segment_read_block(seg, n_blocks, &blk, &err) != 0);
    sl_block_free(&blk);
    sl_segment_close(seg);
    return 0;
}
