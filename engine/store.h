/* store.h: segment files holding the sparse feature activations of an extraction.
 *
 * An extraction's store is a directory of segments, one per batch, named
 * seg-NNNNNN.sls (see sl_segment_name). Each segment holds a contiguous range of
 * token rows [first_row, first_row + n_rows) of the dataset: for every row its
 * token id and the CSR row of its nonzero feature activations. Rows are grouped
 * into LZ4-compressed blocks (LZ4 block API) so a reader decompresses only the
 * blocks it needs; the block index and a fixed footer sit at the end of the file
 * and every block carries an XXH64 checksum verified on read. The byte layout is
 * documented in docs/STORE_FORMAT.md.
 *
 * Values are stored as IEEE fp16 (2 bytes) when every value of a block is finite
 * and representable (|v| <= 65504); otherwise that block stores f32. Feature
 * indices are delta-coded varints. Statistics never read these rounded values:
 * they are computed from the f32 CSR before sl_segment_write is called.
 *
 * Writers write PATH.tmp, fsync it, rename it to PATH and fsync the directory,
 * so a reader never sees a half-written segment. */
#ifndef SAELITE_STORE_H
#define SAELITE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "workpool.h"

/* A batch of rows in compressed-sparse-row form, as produced by the encoder. */
typedef struct sl_csr {
    uint32_t n_rows;         /* token rows in the batch */
    uint32_t n_cols;         /* d_sae */
    const uint64_t *row_ptr; /* [n_rows + 1], row_ptr[0] == 0 */
    const uint32_t *col;     /* [nnz] feature ids, strictly ascending within a row */
    const float *val;        /* [nnz] activations (nonzero) */
} sl_csr;

/* Sizes reported by the writer, for progress and the benchmark. */
typedef struct sl_segment_stats {
    uint64_t file_bytes; /* whole segment file */
    uint64_t nnz;
    uint32_t n_blocks;
} sl_segment_stats;

#define SL_SEGMENT_DEFAULT_BLOCK_ROWS 256u

/* Formats "DIR/seg-%06u.sls" into out. */
void sl_segment_name(char *out, size_t out_size, const char *dir, uint32_t segment_no);

/* Writes one segment. tokens: [csr->n_rows] token ids. seq_len is recorded so a
 * reader can map rows to (sequence, position) = (row / seq_len, row % seq_len);
 * first_row must be a multiple of seq_len. block_rows: rows per compressed block
 * (0 = SL_SEGMENT_DEFAULT_BLOCK_ROWS). stats may be NULL. */
int sl_segment_write(const char *path, uint64_t first_row, uint32_t seq_len, const sl_csr *csr,
                     const int32_t *tokens, uint32_t block_rows, sl_segment_stats *stats,
                     sl_err *err);

/* The same segment in two steps, its blocks compressed in parallel on pool:
 * start validates the input and queues one work item per block (encode, LZ4,
 * XXH64 into the block's own buffer) plus one for the token ids, and returns at
 * once, so the caller can do other work (the writer thread updates statistics);
 * finish compresses what is left on the calling thread, then writes the pieces
 * in order, so the file is byte for byte what sl_segment_write writes whatever
 * the pool. csr and tokens must stay valid until finish, which always frees the
 * job. Memory: about LZ4_compressBound of the blocks' worst-case raw size (less
 * than the CSR itself) plus one block of scratch per thread. pool may be NULL. */
typedef struct sl_segment_job sl_segment_job;
int sl_segment_write_start(sl_segment_job **job, const char *path, uint64_t first_row, uint32_t seq_len,
                           const sl_csr *csr, const int32_t *tokens, uint32_t block_rows, sl_workpool *pool,
                           sl_err *err);
int sl_segment_write_finish(sl_segment_job *job, sl_segment_stats *stats, sl_err *err);

typedef struct sl_segment sl_segment;

/* Maps a segment and validates footer and block index (magic, version, sizes,
 * offsets inside the file, index checksum). Block checksums are verified when a
 * block is read. Errors name the file. */
sl_segment *sl_segment_open(const char *path, sl_err *err);
void sl_segment_close(sl_segment *seg);

const char *sl_segment_path(const sl_segment *seg);
uint64_t sl_segment_first_row(const sl_segment *seg);
uint32_t sl_segment_n_rows(const sl_segment *seg);
uint32_t sl_segment_n_cols(const sl_segment *seg);
uint32_t sl_segment_seq_len(const sl_segment *seg);
uint64_t sl_segment_nnz(const sl_segment *seg);
uint32_t sl_segment_n_blocks(const sl_segment *seg);
uint32_t sl_segment_block_rows(const sl_segment *seg);
uint64_t sl_segment_file_bytes(const sl_segment *seg);

/* Decompresses and verifies the token ids: out[n_rows]. */
int sl_segment_read_tokens(sl_segment *seg, int32_t *out, sl_err *err);

/* A decoded block: rows [first_row, first_row + n_rows) relative to the segment.
 * Buffers are owned by the block and reused across sl_segment_read_block calls;
 * zero-initialise before first use and release with sl_block_free. */
typedef struct sl_block {
    uint32_t first_row;
    uint32_t n_rows;
    uint64_t *row_ptr; /* [n_rows + 1], starting at 0 */
    uint32_t *col;     /* [nnz] */
    float *val;        /* [nnz] values as stored (fp16-rounded unless the block is f32) */
    /* private */
    size_t rows_cap, nnz_cap, raw_cap;
    unsigned char *raw;
} sl_block;

/* Decodes block b (0 <= b < n_blocks). Verifies its checksum and every field;
 * a damaged block is an error naming the segment and block, never a crash. */
int sl_segment_read_block(sl_segment *seg, uint32_t b, sl_block *blk, sl_err *err);
void sl_block_free(sl_block *blk);

/* Activation of feature `col` in a decoded block's row r (0 if absent); binary search. */
float sl_block_value(const sl_block *blk, uint32_t r, uint32_t col);

#endif
