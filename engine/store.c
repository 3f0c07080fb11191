/* store.c: segment files of sparse activations (interface in store.h, byte layout in
 * docs/STORE_FORMAT.md).
 *
 * The writer encodes each block of CSR rows as three byte streams (row counts,
 * delta-coded feature ids, values) and LZ4-compresses it, each block a work item of
 * its own (on a thread pool, engine/workpool.h, or on the caller), into a buffer
 * of its own; the blocks are then appended in order, followed by the token ids,
 * the block index and a checksummed footer, so the bytes never depend on the pool. The reader maps the file, checks
 * the footer and index once at open so that every later offset and size is trusted,
 * and verifies each block's XXH64 before decoding it with full bounds checks: no
 * byte pattern may crash it or make it allocate more than a small multiple of the
 * file size. All integers are little-endian and written byte by byte, so the format
 * does not depend on the host. */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <lz4.h>
#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "dtype.h"
#include "workpool.h"

#define SEG_MAGIC "SAELSEG1"
#define SEG_VERSION 1u
#define SEG_HEADER_SIZE 16u
#define SEG_FOOTER_SIZE 104u
#define SEG_ENTRY_SIZE 48u

/* Block and token-section flags. */
#define SEG_F16 1u /* values are fp16 (else f32) */
#define SEG_LZ4 2u /* bytes are LZ4-compressed (else stored raw) */

/* An LZ4 block never expands more than about 255:1, so a raw size beyond this
 * multiple of the stored size can only come from a damaged or forged index. */
#define SEG_MAX_RATIO 256u

/* Longest LEB128 encoding of a uint32. */
#define VARINT_MAX 5u

/* ---- little-endian helpers ---- */

static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get_u64(const unsigned char *p) {
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

static unsigned char *put_varint(unsigned char *p, uint32_t v) {
    while (v >= 0x80u) {
        *p++ = (unsigned char)(v | 0x80u);
        v >>= 7;
    }
    *p++ = (unsigned char)v;
    return p;
}

/* Reads one LEB128 uint32 from [*pp, end); -1 if it runs off the end or overflows. */
static int get_varint(const unsigned char **pp, const unsigned char *end, uint32_t *out) {
    const unsigned char *p = *pp;
    uint32_t v = 0;
    for (unsigned shift = 0; shift < 7 * VARINT_MAX; shift += 7) {
        if (p == end) return -1;
        unsigned c = *p++;
        if (shift == 28 && c > 0x0fu) return -1; /* bits beyond 32, or a 6th byte */
        v |= (uint32_t)(c & 0x7fu) << shift;
        if (!(c & 0x80u)) {
            *pp = p;
            *out = v;
            return 0;
        }
    }
    return -1;
}

void sl_segment_name(char *out, size_t out_size, const char *dir, uint32_t segment_no) {
    if (out && out_size) snprintf(out, out_size, "%s/seg-%06" PRIu32 ".sls", dir, segment_no);
}

/* ---- writer ---- */

/* A value may be stored as fp16 if it is finite, in range, and a nonzero does not
 * round to zero (that would silently drop an activation). */
static int f16_ok(float v) {
    if (!isfinite(v) || fabsf(v) > 65504.0f) return 0;
    return v == 0.0f || (sl_f32_to_f16(v) & 0x7fffu) != 0;
}

static int validate_input(const char *path, uint64_t first_row, uint32_t seq_len,
                          const sl_csr *csr, const int32_t *tokens, sl_err *err) {
    if (seq_len == 0) return sl_errf_path(err, path, "invalid segment input: seq_len is 0");
    if (first_row % seq_len != 0)
        return sl_errf_path(err, path,
                            "invalid segment input: first_row %" PRIu64
                            " is not a multiple of seq_len %" PRIu32,
                            first_row, seq_len);
    if (first_row > UINT64_MAX - csr->n_rows)
        return sl_errf_path(err, path, "invalid segment input: row range overflows");
    if (csr->n_cols == 0) return sl_errf_path(err, path, "invalid segment input: n_cols is 0");
    if (!csr->row_ptr) return sl_errf_path(err, path, "invalid segment input: row_ptr is NULL");
    if (csr->n_rows && !tokens)
        return sl_errf_path(err, path, "invalid segment input: tokens is NULL");
    if (csr->row_ptr[0] != 0)
        return sl_errf_path(err, path, "invalid segment input: row_ptr[0] is %" PRIu64 ", not 0",
                            csr->row_ptr[0]);
    for (uint32_t r = 0; r < csr->n_rows; r++) {
        uint64_t a = csr->row_ptr[r], b = csr->row_ptr[r + 1];
        if (b < a)
            return sl_errf_path(err, path,
                                "invalid segment input: row_ptr decreases at row %" PRIu32, r);
        if (b - a > csr->n_cols)
            return sl_errf_path(err, path,
                                "invalid segment input: row %" PRIu32 " has %" PRIu64
                                " nonzeros but n_cols is %" PRIu32,
                                r, b - a, csr->n_cols);
    }
    uint64_t nnz = csr->row_ptr[csr->n_rows];
    if (nnz && (!csr->col || !csr->val))
        return sl_errf_path(err, path, "invalid segment input: col or val is NULL");
    for (uint32_t r = 0; r < csr->n_rows; r++) {
        for (uint64_t k = csr->row_ptr[r]; k < csr->row_ptr[r + 1]; k++) {
            uint32_t c = csr->col[k];
            if (c >= csr->n_cols)
                return sl_errf_path(err, path,
                                    "invalid segment input: row %" PRIu32 ": feature %" PRIu32
                                    " >= n_cols %" PRIu32,
                                    r, c, csr->n_cols);
            if (k > csr->row_ptr[r] && c <= csr->col[k - 1])
                return sl_errf_path(err, path,
                                    "invalid segment input: row %" PRIu32
                                    ": features not strictly ascending (%" PRIu32
                                    " after %" PRIu32 ")",
                                    r, c, csr->col[k - 1]);
        }
    }
    return 0;
}

/* Encodes rows [r0, r0 + nr) into out (sized for the worst case) and returns the
 * raw length; *flags gets SEG_F16 when the values fit fp16. */
static size_t encode_block(const sl_csr *csr, uint32_t r0, uint32_t nr, unsigned char *out,
                           uint32_t *flags) {
    const uint64_t *rp = csr->row_ptr;
    uint64_t k0 = rp[r0], k1 = rp[r0 + nr];
    size_t nnz = (size_t)(k1 - k0);
    unsigned char *p = out;
    for (uint32_t r = r0; r < r0 + nr; r++) p = put_varint(p, (uint32_t)(rp[r + 1] - rp[r]));
    for (uint32_t r = r0; r < r0 + nr; r++) {
        for (uint64_t k = rp[r]; k < rp[r + 1]; k++) {
            /* ascending ids: store the gap minus one, so adjacent ids cost one byte */
            uint32_t c = csr->col[k];
            p = put_varint(p, k == rp[r] ? c : c - csr->col[k - 1] - 1u);
        }
    }
    int f16 = 1;
    for (uint64_t k = k0; k < k1 && f16; k++) f16 = f16_ok(csr->val[k]);
    if (f16) {
        /* low bytes, then high bytes: grouping the sign/exponent bytes gives LZ4 runs
         * to find when values cluster (it rarely can in the mixed layout) */
        for (size_t i = 0; i < nnz; i++) {
            uint16_t h = sl_f32_to_f16(csr->val[k0 + i]);
            p[i] = (unsigned char)h;
            p[nnz + i] = (unsigned char)(h >> 8);
        }
        p += 2 * nnz;
    } else {
        for (size_t i = 0; i < nnz; i++, p += 4) put_u32(p, sl_f32_to_bits(csr->val[k0 + i]));
    }
    *flags = f16 ? SEG_F16 : 0u;
    return (size_t)(p - out);
}

/* write(2) until done; returns 0 or an errno value. */
static int write_all(int fd, const void *buf, size_t n) {
    const unsigned char *p = buf;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        if (w == 0) return EIO;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* The rename is durable only once the directory entry is on disk. */
static int fsync_parent_dir(const char *path, sl_err *err) {
    const char *slash = strrchr(path, '/');
    char *dir;
    if (!slash) dir = strdup(".");
    else if (slash == path) dir = strdup("/");
    else dir = strndup(path, (size_t)(slash - path));
    if (!dir) return sl_errf_path(err, path, "out of memory");
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = 0;
    if (fd < 0 || (fsync(fd) != 0 && errno != EINVAL)) /* EINVAL: fs cannot sync dirs */
        rc = sl_errf_path(err, path, "cannot sync directory %s: %s", dir, strerror(errno));
    if (fd >= 0) close(fd);
    free(dir);
    return rc;
}

/* One piece of a segment: a block of rows, or (the last) the token ids. Written by
 * the worker that encodes it, read by the finishing thread after the job. */
typedef struct seg_piece {
    unsigned char *stored; /* inside job->out: LZ4 bytes, or raw when LZ4 did not help */
    size_t stored_len, raw_len;
    uint64_t hash; /* XXH64 of stored */
    uint32_t flags;
    int oom;
} seg_piece;

struct sl_segment_job {
    char *path, *tmp;
    uint64_t first_row;
    uint32_t seq_len, block_rows, n_blocks;
    sl_csr csr;
    const int32_t *tokens;
    size_t max_raw;         /* largest raw piece: each worker's scratch */
    unsigned char *out;     /* every piece's region, worst case each (about the CSR's size) */
    seg_piece *pieces;      /* [n_blocks + 1] */
    unsigned char **scratch; /* [workers] raw bytes of the piece being encoded, made on first use */
    int n_workers;
    sl_workpool *pool;
    sl_workjob work;
};

/* Compresses raw [len] into the piece's region (sized LZ4_compressBound(len) or
 * more); keeps it raw when LZ4 does not make it smaller. */
static void store_piece(seg_piece *pc, const unsigned char *raw, size_t len, uint32_t flags) {
    int clen = len ? LZ4_compress_default((const char *)raw, (char *)pc->stored, (int)len,
                                          LZ4_compressBound((int)len))
                   : 0;
    pc->raw_len = len;
    if (clen > 0 && (size_t)clen < len) {
        pc->stored_len = (size_t)clen;
        flags |= SEG_LZ4;
    } else {
        if (len) memcpy(pc->stored, raw, len);
        pc->stored_len = len;
    }
    pc->flags = flags;
    pc->hash = XXH64(pc->stored, pc->stored_len, 0);
}

/* Worker: encodes and compresses piece `item` (a block, or the tokens when item ==
 * n_blocks) with its own scratch, so pieces run in any order on any thread. */
static void encode_piece(void *ctx, size_t item, int worker) {
    sl_segment_job *j = ctx;
    seg_piece *pc = &j->pieces[item];
    if (!j->scratch[worker] && !(j->scratch[worker] = malloc(j->max_raw + 1))) {
        pc->oom = 1;
        return;
    }
    unsigned char *raw = j->scratch[worker];
    const uint32_t n_rows = j->csr.n_rows;
    if (item < j->n_blocks) {
        uint32_t r0 = (uint32_t)item * j->block_rows;
        uint32_t nr = n_rows - r0 < j->block_rows ? n_rows - r0 : j->block_rows;
        uint32_t flags;
        size_t raw_len = encode_block(&j->csr, r0, nr, raw, &flags);
        store_piece(pc, raw, raw_len, flags);
        return;
    }
    /* Token ids as four byte planes: ids < 2^16 leave two planes all zero. */
    for (uint32_t i = 0; i < n_rows; i++) {
        uint32_t t = (uint32_t)j->tokens[i];
        for (int b = 0; b < 4; b++) raw[(size_t)b * n_rows + i] = (unsigned char)(t >> (8 * b));
    }
    store_piece(pc, raw, (size_t)n_rows * 4, 0);
}

static void job_free(sl_segment_job *j) {
    if (!j) return;
    if (j->scratch)
        for (int i = 0; i < j->n_workers; i++) free(j->scratch[i]);
    free(j->scratch);
    free(j->pieces);
    free(j->out);
    free(j->path);
    free(j->tmp);
    free(j);
}

int sl_segment_write_start(sl_segment_job **job, const char *path, uint64_t first_row, uint32_t seq_len,
                           const sl_csr *csr, const int32_t *tokens, uint32_t block_rows, sl_workpool *pool,
                           sl_err *err) {
    *job = NULL;
    if (!path) return sl_errf(err, "segment write: path is NULL");
    if (!csr) return sl_errf_path(err, path, "invalid segment input: csr is NULL");
    if (validate_input(path, first_row, seq_len, csr, tokens, err)) return -1;
    if (block_rows == 0) block_rows = SL_SEGMENT_DEFAULT_BLOCK_ROWS;

    const uint32_t n_rows = csr->n_rows;
    const uint32_t n_blocks = (uint32_t)(((uint64_t)n_rows + block_rows - 1) / block_rows);
    const size_t tok_raw = (size_t)n_rows * 4;
    if (tok_raw > LZ4_MAX_INPUT_SIZE)
        return sl_errf_path(err, path, "segment too large: %" PRIu32 " rows", n_rows);

    /* Worst-case raw size of each block; every piece gets LZ4_compressBound of it in
     * `out`. LZ4 takes at most ~2 GB; only absurd blocks (~200M nonzeros) come near. */
    uint64_t max_raw = tok_raw, out_size = (uint64_t)LZ4_compressBound((int)tok_raw);
    for (uint32_t b = 0; b < n_blocks; b++) {
        uint32_t r0 = b * block_rows, nr = n_rows - r0 < block_rows ? n_rows - r0 : block_rows;
        uint64_t bnnz = csr->row_ptr[r0 + nr] - csr->row_ptr[r0];
        uint64_t bound = (uint64_t)nr * VARINT_MAX + bnnz * (VARINT_MAX + 4);
        if (bound > LZ4_MAX_INPUT_SIZE)
            return sl_errf_path(err, path,
                                "block %" PRIu32 " too large (%" PRIu64
                                " nonzeros); use fewer rows per block",
                                b, bnnz);
        if (bound > max_raw) max_raw = bound;
        out_size += (uint64_t)LZ4_compressBound((int)bound);
    }
    if (out_size > SIZE_MAX / 2) return sl_errf_path(err, path, "segment too large: %" PRIu32 " rows", n_rows);

    sl_segment_job *j = calloc(1, sizeof *j);
    if (!j) return sl_errf_path(err, path, "out of memory writing segment");
    j->path = strdup(path);
    j->tmp = malloc(strlen(path) + 5);
    j->first_row = first_row;
    j->seq_len = seq_len;
    j->block_rows = block_rows;
    j->n_blocks = n_blocks;
    j->csr = *csr;
    j->tokens = tokens;
    j->max_raw = (size_t)max_raw;
    j->out = malloc((size_t)out_size + 1);
    j->pieces = calloc((size_t)n_blocks + 1, sizeof *j->pieces);
    j->n_workers = sl_workpool_threads(pool) + 1;
    j->scratch = calloc((size_t)j->n_workers, sizeof *j->scratch);
    j->pool = pool;
    if (!j->path || !j->tmp || !j->out || !j->pieces || !j->scratch) {
        job_free(j);
        return sl_errf_path(err, path, "out of memory writing segment");
    }
    strcpy(j->tmp, path);
    strcat(j->tmp, ".tmp");
    unsigned char *region = j->out;
    for (uint32_t b = 0; b < n_blocks; b++) {
        uint32_t r0 = b * block_rows, nr = n_rows - r0 < block_rows ? n_rows - r0 : block_rows;
        uint64_t bnnz = csr->row_ptr[r0 + nr] - csr->row_ptr[r0];
        j->pieces[b].stored = region;
        region += LZ4_compressBound((int)((uint64_t)nr * VARINT_MAX + bnnz * (VARINT_MAX + 4)));
    }
    j->pieces[n_blocks].stored = region;
    sl_workpool_start(pool, &j->work, (size_t)n_blocks + 1, encode_piece, j);
    *job = j;
    return 0;
}

int sl_segment_write_finish(sl_segment_job *j, sl_segment_stats *stats, sl_err *err) {
    sl_workpool_wait(j->pool, &j->work);
    const char *path = j->path, *tmp = j->tmp;
    const uint32_t n_rows = j->csr.n_rows, n_blocks = j->n_blocks;
    const uint64_t nnz = j->csr.row_ptr[n_rows];
    size_t index_len = (size_t)n_blocks * SEG_ENTRY_SIZE;
    unsigned char *index = malloc(index_len + 1);
    int fd = -1, rc = -1, e;
    int oom = !index;
    for (uint32_t b = 0; b <= n_blocks; b++) oom |= j->pieces[b].oom;
    if (oom) {
        sl_errf_path(err, path, "out of memory writing segment");
        goto done;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        sl_errf_path(err, path, "cannot create %s: %s", tmp, strerror(errno));
        goto done;
    }

    unsigned char header[SEG_HEADER_SIZE];
    memcpy(header, SEG_MAGIC, 8);
    put_u32(header + 8, SEG_VERSION);
    put_u32(header + 12, 0);
    if ((e = write_all(fd, header, sizeof header))) goto io_error;
    uint64_t off = SEG_HEADER_SIZE;

    for (uint32_t b = 0; b < n_blocks; b++) { /* in order, whichever thread encoded them */
        const seg_piece *pc = &j->pieces[b];
        uint32_t r0 = b * j->block_rows, nr = n_rows - r0 < j->block_rows ? n_rows - r0 : j->block_rows;
        if ((e = write_all(fd, pc->stored, pc->stored_len))) goto io_error;
        unsigned char *ent = index + (size_t)b * SEG_ENTRY_SIZE;
        put_u64(ent + 0, off);
        put_u32(ent + 8, (uint32_t)pc->stored_len);
        put_u32(ent + 12, (uint32_t)pc->raw_len);
        put_u32(ent + 16, r0);
        put_u32(ent + 20, nr);
        put_u64(ent + 24, j->csr.row_ptr[r0 + nr] - j->csr.row_ptr[r0]);
        put_u32(ent + 32, pc->flags);
        put_u32(ent + 36, 0);
        put_u64(ent + 40, pc->hash);
        off += pc->stored_len;
    }

    const seg_piece *tp = &j->pieces[n_blocks];
    uint64_t tok_off = off;
    if ((e = write_all(fd, tp->stored, tp->stored_len))) goto io_error;
    off += tp->stored_len;
    if ((e = write_all(fd, index, index_len))) goto io_error;

    unsigned char f[SEG_FOOTER_SIZE];
    memcpy(f, SEG_MAGIC, 8);
    put_u32(f + 8, SEG_VERSION);
    put_u32(f + 12, n_rows);
    put_u64(f + 16, j->first_row);
    put_u32(f + 24, j->csr.n_cols);
    put_u32(f + 28, j->seq_len);
    put_u32(f + 32, j->block_rows);
    put_u32(f + 36, n_blocks);
    put_u64(f + 40, nnz);
    put_u64(f + 48, off); /* index offset */
    put_u64(f + 56, tok_off);
    put_u64(f + 64, tp->stored_len);
    put_u32(f + 72, tp->flags);
    put_u32(f + 76, 0);
    put_u64(f + 80, tp->hash);
    put_u64(f + 88, XXH64(index, index_len, 0));
    put_u64(f + 96, XXH64(f, 96, 0));
    if ((e = write_all(fd, f, sizeof f))) goto io_error;
    off += index_len + SEG_FOOTER_SIZE;

    if (fsync(fd) != 0) {
        e = errno;
        goto io_error;
    }
    int cfd = fd;
    fd = -1;
    if (close(cfd) != 0) { /* NFS and friends report a full disk here */
        e = errno;
        goto io_error;
    }
    if (rename(tmp, path) != 0) {
        sl_errf_path(err, path, "cannot rename %s: %s", tmp, strerror(errno));
        goto fail;
    }
    if (fsync_parent_dir(path, err)) goto done; /* the file is complete; only durability is in doubt */
    if (stats) {
        stats->file_bytes = off;
        stats->nnz = nnz;
        stats->n_blocks = n_blocks;
    }
    rc = 0;
    goto done;

io_error:
    sl_errf_path(err, path, "cannot write %s: %s", tmp, strerror(e));
fail:
    if (fd >= 0) close(fd);
    fd = -1;
    unlink(tmp);
done:
    if (fd >= 0) close(fd);
    free(index);
    job_free(j);
    return rc;
}

int sl_segment_write(const char *path, uint64_t first_row, uint32_t seq_len, const sl_csr *csr,
                     const int32_t *tokens, uint32_t block_rows, sl_segment_stats *stats,
                     sl_err *err) {
    sl_segment_job *job;
    if (sl_segment_write_start(&job, path, first_row, seq_len, csr, tokens, block_rows, NULL, err)) return -1;
    return sl_segment_write_finish(job, stats, err);
}

/* ---- reader ---- */

typedef struct seg_block {
    uint64_t offset, nnz, hash;
    uint32_t comp_size, raw_size, first_row, n_rows, flags;
} seg_block;

struct sl_segment {
    char *path;
    const unsigned char *map;
    size_t size;
    uint64_t first_row, nnz, tok_off, tok_size, tok_hash;
    uint32_t n_rows, n_cols, seq_len, block_rows, n_blocks, tok_flags;
    seg_block *blocks;
};

/* Checks header, footer and index. Afterwards every block and the token section are
 * known to lie inside the file, in order, with raw sizes bounded by the stored sizes. */
static int seg_validate(sl_segment *s, sl_err *err) {
    const unsigned char *m = s->map;
    const size_t size = s->size;
    const char *path = s->path;

    if (memcmp(m, SEG_MAGIC, size < 8 ? size : 8) != 0)
        return sl_errf_path(err, path, "bad magic (not a saelite segment)");
    if (size < SEG_HEADER_SIZE + SEG_FOOTER_SIZE)
        return sl_errf_path(err, path, "truncated segment (%zu bytes)", size);
    if (get_u32(m + 8) != SEG_VERSION)
        return sl_errf_path(err, path,
                            "unsupported segment format version %" PRIu32 " (expected %u)",
                            get_u32(m + 8), SEG_VERSION);
    if (get_u32(m + 12) != 0) return sl_errf_path(err, path, "bad segment header (damaged data)");

    const unsigned char *f = m + size - SEG_FOOTER_SIZE;
    if (memcmp(f, SEG_MAGIC, 8) != 0)
        return sl_errf_path(err, path, "truncated segment (no footer at end of file)");
    if (XXH64(f, 96, 0) != get_u64(f + 96))
        return sl_errf_path(err, path, "footer checksum mismatch (damaged data)");
    if (get_u32(f + 8) != SEG_VERSION)
        return sl_errf_path(err, path,
                            "unsupported segment format version %" PRIu32 " (expected %u)",
                            get_u32(f + 8), SEG_VERSION);
    s->n_rows = get_u32(f + 12);
    s->first_row = get_u64(f + 16);
    s->n_cols = get_u32(f + 24);
    s->seq_len = get_u32(f + 28);
    s->block_rows = get_u32(f + 32);
    s->n_blocks = get_u32(f + 36);
    s->nnz = get_u64(f + 40);
    uint64_t index_off = get_u64(f + 48);
    s->tok_off = get_u64(f + 56);
    s->tok_size = get_u64(f + 64);
    s->tok_flags = get_u32(f + 72);
    s->tok_hash = get_u64(f + 80);
    uint64_t index_hash = get_u64(f + 88);

    /* The footer checksum matched, so these catch writer bugs and forged files. */
    if (!s->seq_len || !s->block_rows || !s->n_cols)
        return sl_errf_path(err, path, "invalid footer (zero seq_len, block_rows or n_cols)");
    if (s->first_row % s->seq_len || s->first_row > UINT64_MAX - s->n_rows)
        return sl_errf_path(err, path, "invalid footer (first_row %" PRIu64 ")", s->first_row);
    if (s->n_blocks != ((uint64_t)s->n_rows + s->block_rows - 1) / s->block_rows)
        return sl_errf_path(err, path,
                            "invalid footer (%" PRIu32 " blocks for %" PRIu32
                            " rows of %" PRIu32 ")",
                            s->n_blocks, s->n_rows, s->block_rows);
    if (get_u32(f + 76) != 0 || (s->tok_flags & ~SEG_LZ4))
        return sl_errf_path(err, path, "invalid footer (unknown flags)");
    const uint64_t data_end = size - SEG_FOOTER_SIZE;
    const uint64_t index_len = (uint64_t)s->n_blocks * SEG_ENTRY_SIZE;
    if (index_len > data_end - SEG_HEADER_SIZE || index_off != data_end - index_len)
        return sl_errf_path(err, path, "invalid footer (block index outside the file)");
    if (s->tok_off < SEG_HEADER_SIZE || s->tok_off > index_off ||
        s->tok_size != index_off - s->tok_off)
        return sl_errf_path(err, path, "invalid footer (token section outside the file)");
    const uint64_t tok_raw = (uint64_t)s->n_rows * 4;
    const int tok_lz4 = (s->tok_flags & SEG_LZ4) != 0;
    if (tok_raw > LZ4_MAX_INPUT_SIZE ||
        (tok_lz4 ? s->tok_size == 0 || s->tok_size >= tok_raw ||
                       tok_raw > s->tok_size * SEG_MAX_RATIO
                 : s->tok_size != tok_raw))
        return sl_errf_path(err, path, "invalid footer (token section size)");
    if (XXH64(m + index_off, (size_t)index_len, 0) != index_hash)
        return sl_errf_path(err, path, "index checksum mismatch (damaged data)");

    s->blocks = calloc(s->n_blocks ? s->n_blocks : 1, sizeof *s->blocks);
    if (!s->blocks) return sl_errf_path(err, path, "out of memory");
    uint64_t expect_off = SEG_HEADER_SIZE, nnz_sum = 0;
    for (uint32_t b = 0; b < s->n_blocks; b++) {
        const unsigned char *ent = m + index_off + (uint64_t)b * SEG_ENTRY_SIZE;
        seg_block *blk = &s->blocks[b];
        blk->offset = get_u64(ent + 0);
        blk->comp_size = get_u32(ent + 8);
        blk->raw_size = get_u32(ent + 12);
        blk->first_row = get_u32(ent + 16);
        blk->n_rows = get_u32(ent + 20);
        blk->nnz = get_u64(ent + 24);
        blk->flags = get_u32(ent + 32);
        blk->hash = get_u64(ent + 40);
        uint32_t first = b * s->block_rows;
        uint32_t nr = s->n_rows - first < s->block_rows ? s->n_rows - first : s->block_rows;
        const char *why = NULL;
        uint64_t vsize = blk->flags & SEG_F16 ? 2 : 4;
        if (blk->offset != expect_off) why = "offset out of order";
        else if (blk->comp_size == 0 || blk->comp_size > s->tok_off - blk->offset)
            why = "extends past the data region";
        else if ((blk->flags & ~(SEG_F16 | SEG_LZ4)) || get_u32(ent + 36) != 0)
            why = "unknown flags";
        else if (blk->first_row != first || blk->n_rows != nr) why = "wrong row range";
        else if ((blk->flags & SEG_LZ4) ? blk->comp_size >= blk->raw_size ||
                                              blk->raw_size > LZ4_MAX_INPUT_SIZE ||
                                              blk->raw_size > (uint64_t)blk->comp_size * SEG_MAX_RATIO
                                        : blk->comp_size != blk->raw_size)
            why = "implausible raw size";
        /* each row costs 1..5 bytes, each nonzero 1..5 bytes of id plus the value */
        else if (blk->nnz > blk->raw_size / (1 + vsize) ||
                 blk->nnz > (uint64_t)blk->n_rows * s->n_cols ||
                 blk->n_rows + blk->nnz * (1 + vsize) > blk->raw_size ||
                 (uint64_t)blk->n_rows * VARINT_MAX + blk->nnz * (VARINT_MAX + vsize) <
                     blk->raw_size)
            why = "implausible nonzero count";
        if (why)
            return sl_errf_path(err, path, "block %" PRIu32 ": bad index entry (%s)", b, why);
        expect_off += blk->comp_size;
        nnz_sum += blk->nnz;
    }
    if (expect_off != s->tok_off)
        return sl_errf_path(err, path, "invalid block index (blocks do not end at token section)");
    if (nnz_sum != s->nnz)
        return sl_errf_path(err, path,
                            "invalid block index (block nonzeros sum to %" PRIu64
                            ", footer says %" PRIu64 ")",
                            nnz_sum, s->nnz);
    return 0;
}

sl_segment *sl_segment_open(const char *path, sl_err *err) {
    if (!path) {
        sl_errf(err, "segment open: path is NULL");
        return NULL;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        sl_errf_path(err, path, "cannot open segment: %s", strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        sl_errf_path(err, path, "cannot stat segment: %s", strerror(errno));
        close(fd);
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        sl_errf_path(err, path, "not a regular file");
        close(fd);
        return NULL;
    }
    if (st.st_size == 0) { /* mmap refuses zero lengths */
        sl_errf_path(err, path, "truncated segment (empty file)");
        close(fd);
        return NULL;
    }
    size_t size = (size_t)st.st_size;
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd); /* the mapping keeps the file alive */
    if (map == MAP_FAILED) {
        sl_errf_path(err, path, "cannot map segment: %s", strerror(map_errno));
        return NULL;
    }
    sl_segment *s = calloc(1, sizeof *s);
    char *p = strdup(path);
    if (!s || !p) {
        sl_errf_path(err, path, "out of memory");
        munmap(map, size);
        free(s);
        free(p);
        return NULL;
    }
    s->path = p;
    s->map = map;
    s->size = size;
    if (seg_validate(s, err)) {
        sl_segment_close(s);
        return NULL;
    }
    return s;
}

void sl_segment_close(sl_segment *seg) {
    if (!seg) return;
    if (seg->map) munmap((void *)seg->map, seg->size);
    free(seg->blocks);
    free(seg->path);
    free(seg);
}

const char *sl_segment_path(const sl_segment *seg) { return seg->path; }
uint64_t sl_segment_first_row(const sl_segment *seg) { return seg->first_row; }
uint32_t sl_segment_n_rows(const sl_segment *seg) { return seg->n_rows; }
uint32_t sl_segment_n_cols(const sl_segment *seg) { return seg->n_cols; }
uint32_t sl_segment_seq_len(const sl_segment *seg) { return seg->seq_len; }
uint64_t sl_segment_nnz(const sl_segment *seg) { return seg->nnz; }
uint32_t sl_segment_n_blocks(const sl_segment *seg) { return seg->n_blocks; }
uint32_t sl_segment_block_rows(const sl_segment *seg) { return seg->block_rows; }
uint64_t sl_segment_file_bytes(const sl_segment *seg) { return seg->size; }

int sl_segment_read_tokens(sl_segment *seg, int32_t *out, sl_err *err) {
    if (!seg) return sl_errf(err, "segment read: segment is NULL");
    size_t n = seg->n_rows, raw_len = n * 4;
    if (n == 0) return 0;
    if (!out) return sl_errf_path(err, seg->path, "token section: output buffer is NULL");
    const unsigned char *src = seg->map + seg->tok_off;
    if (XXH64(src, (size_t)seg->tok_size, 0) != seg->tok_hash)
        return sl_errf_path(err, seg->path, "token section: checksum mismatch (damaged data)");
    unsigned char *planes = malloc(raw_len);
    if (!planes) return sl_errf_path(err, seg->path, "token section: out of memory");
    if (seg->tok_flags & SEG_LZ4) {
        int got = LZ4_decompress_safe((const char *)src, (char *)planes, (int)seg->tok_size,
                                      (int)raw_len);
        if (got < 0 || (size_t)got != raw_len) {
            free(planes);
            return sl_errf_path(err, seg->path,
                                "token section: decompression failed (damaged data)");
        }
    } else {
        memcpy(planes, src, raw_len);
    }
    for (size_t i = 0; i < n; i++) {
        uint32_t t = (uint32_t)planes[i] | (uint32_t)planes[n + i] << 8 |
                     (uint32_t)planes[2 * n + i] << 16 | (uint32_t)planes[3 * n + i] << 24;
        memcpy(&out[i], &t, 4);
    }
    free(planes);
    return 0;
}

/* Grows a block buffer to n elements of size sz (at least 1, by >= 1.5x to amortise);
 * on failure the old buffer and capacity stay valid. */
static int grow(void **buf, size_t *cap, size_t n, size_t sz) {
    if (n <= *cap && *buf) return 0;
    size_t want = *cap + *cap / 2;
    if (want < n) want = n;
    if (want == 0) want = 1;
    void *p = realloc(*buf, want * sz);
    if (!p) return -1;
    *buf = p;
    *cap = want;
    return 0;
}

int sl_segment_read_block(sl_segment *seg, uint32_t b, sl_block *blk, sl_err *err) {
    if (!seg || !blk) return sl_errf(err, "segment read: NULL argument");
    if (b >= seg->n_blocks)
        return sl_errf_path(err, seg->path, "block %" PRIu32 " out of range (%" PRIu32 " blocks)",
                            b, seg->n_blocks);
    const seg_block *e = &seg->blocks[b];
    blk->first_row = 0;
    blk->n_rows = 0; /* stays empty unless decoding succeeds */

    const unsigned char *src = seg->map + e->offset;
    if (XXH64(src, e->comp_size, 0) != e->hash)
        return sl_errf_path(err, seg->path,
                            "block %" PRIu32 ": checksum mismatch (damaged data)", b);
    const size_t nnz = (size_t)e->nnz, nr = e->n_rows;
    /* col and val share nnz_cap, so grow them on private copies of the capacity */
    size_t col_cap = blk->nnz_cap, val_cap = blk->nnz_cap;
    int oom = (e->flags & SEG_LZ4) && grow((void **)&blk->raw, &blk->raw_cap, e->raw_size, 1);
    oom = oom || grow((void **)&blk->row_ptr, &blk->rows_cap, nr + 1, sizeof *blk->row_ptr);
    oom = oom || grow((void **)&blk->col, &col_cap, nnz, sizeof *blk->col);
    oom = oom || grow((void **)&blk->val, &val_cap, nnz, sizeof *blk->val);
    blk->nnz_cap = col_cap < val_cap ? col_cap : val_cap;
    if (oom) return sl_errf_path(err, seg->path, "block %" PRIu32 ": out of memory", b);

    const unsigned char *raw = src;
    if (e->flags & SEG_LZ4) {
        int got = LZ4_decompress_safe((const char *)src, (char *)blk->raw, (int)e->comp_size,
                                      (int)e->raw_size);
        if (got < 0 || (uint32_t)got != e->raw_size)
            return sl_errf_path(err, seg->path,
                                "block %" PRIu32 ": decompression failed (damaged data)", b);
        raw = blk->raw;
    }

    const unsigned char *p = raw, *end = raw + e->raw_size;
    const char *why = NULL;
    uint64_t *rp = blk->row_ptr;
    rp[0] = 0;
    for (size_t r = 0; r < nr && !why; r++) {
        uint32_t cnt;
        if (get_varint(&p, end, &cnt)) why = "row counts run past the block";
        else if (cnt > seg->n_cols || cnt > nnz - rp[r]) why = "row counts exceed the nonzeros";
        else rp[r + 1] = rp[r] + cnt;
    }
    if (!why && rp[nr] != nnz) why = "row counts do not sum to the nonzeros";
    for (size_t r = 0; r < nr && !why; r++) {
        uint64_t c = 0;
        for (uint64_t k = rp[r]; k < rp[r + 1]; k++) {
            uint32_t d;
            if (get_varint(&p, end, &d)) {
                why = "feature ids run past the block";
                break;
            }
            c = k == rp[r] ? d : c + 1 + d;
            if (c >= seg->n_cols) {
                why = "feature id out of range";
                break;
            }
            blk->col[k] = (uint32_t)c;
        }
    }
    const size_t vsize = e->flags & SEG_F16 ? 2 : 4;
    if (!why && (size_t)(end - p) != nnz * vsize) why = "value stream has the wrong length";
    if (why)
        return sl_errf_path(err, seg->path, "block %" PRIu32 ": corrupt data (%s)", b, why);
    if (vsize == 2) {
        for (size_t i = 0; i < nnz; i++)
            blk->val[i] = sl_f16_to_f32((uint16_t)(p[i] | (unsigned)p[nnz + i] << 8));
    } else {
        for (size_t i = 0; i < nnz; i++) blk->val[i] = sl_bits_to_f32(get_u32(p + 4 * i));
    }
    blk->first_row = e->first_row;
    blk->n_rows = e->n_rows;
    return 0;
}

void sl_block_free(sl_block *blk) {
    if (!blk) return;
    free(blk->row_ptr);
    free(blk->col);
    free(blk->val);
    free(blk->raw);
    memset(blk, 0, sizeof *blk);
}

float sl_block_value(const sl_block *blk, uint32_t r, uint32_t col) {
    if (!blk || r >= blk->n_rows) return 0.0f;
    uint64_t lo = blk->row_ptr[r], hi = blk->row_ptr[r + 1];
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        uint32_t c = blk->col[mid];
        if (c == col) return blk->val[mid];
        if (c < col) lo = mid + 1;
        else hi = mid;
    }
    return 0.0f;
}
