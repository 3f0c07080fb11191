/* checkpoint.c: saving and loading checkpoint.slc (see checkpoint.h). */
#include "checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "fsutil.h"

typedef struct sl_checkpoint_header {
    char magic[8]; /* "SAELCKP1" */
    uint32_t version, d_sae, top_k, d_in;
    sl_checkpoint c;
    uint64_t n_tokens, nnz; /* of the stats */
    uint64_t recon_rows;
    double recon_err_sq, recon_x_sq;
    uint64_t checksum; /* XXH64 of acc, heap and x_sum */
} sl_checkpoint_header;

static int write_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

int sl_checkpoint_save(const char *store_dir, const sl_stats *st, const sl_recon_sums *recon, uint32_t d_in,
                       const sl_checkpoint *c, sl_err *err) {
    char path[4200], tmp[4220];
    snprintf(path, sizeof path, "%s/%s", store_dir, SL_CHECKPOINT_FILE);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    size_t acc_bytes = (size_t)st->d_sae * sizeof *st->acc;
    size_t heap_bytes = (size_t)st->d_sae * st->top_k * sizeof *st->heap;
    size_t sum_bytes = (size_t)d_in * sizeof *recon->x_sum;
    size_t pending_bytes = st->pending ? (size_t)st->d_sae * sizeof *st->pending : 0;
    sl_checkpoint_header h = {.version = st->pending ? 3 : 2, .d_sae = st->d_sae, .top_k = st->top_k, .d_in = d_in, .c = *c,
                              .n_tokens = st->n_tokens, .nnz = st->nnz, .recon_rows = recon->rows,
                              .recon_err_sq = recon->err_sq, .recon_x_sq = recon->x_sq};
    memcpy(h.magic, "SAELCKP1", 8);
    XXH64_state_t *hs = XXH64_createState();
    if (!hs) return sl_errf(err, "out of memory");
    XXH64_reset(hs, 0);
    XXH64_update(hs, st->acc, acc_bytes);
    XXH64_update(hs, st->heap, heap_bytes);
    XXH64_update(hs, recon->x_sum, sum_bytes);
    if (pending_bytes) XXH64_update(hs, st->pending, pending_bytes);
    h.checksum = XXH64_digest(hs);
    XXH64_freeState(hs);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return sl_errf_path(err, tmp, "cannot create checkpoint: %s", strerror(errno));
    if (write_all(fd, &h, sizeof h) || write_all(fd, st->acc, acc_bytes) || write_all(fd, st->heap, heap_bytes) ||
        write_all(fd, recon->x_sum, sum_bytes) || (pending_bytes && write_all(fd, st->pending, pending_bytes)) ||
        fsync(fd) != 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        return sl_errf_path(err, tmp, "cannot write checkpoint: %s", strerror(e));
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return sl_errf_path(err, path, "cannot rename checkpoint into place: %s", strerror(e));
    }
    sl_fsync_dir(store_dir);
    return 0;
}

int sl_checkpoint_load(const char *store_dir, sl_stats *st, sl_recon_sums *recon, uint32_t d_in, sl_checkpoint *c,
                       sl_err *err) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", store_dir, SL_CHECKPOINT_FILE);
    FILE *f = fopen(path, "rb");
    if (!f) return errno == ENOENT ? 1 : sl_errf_path(err, path, "cannot open checkpoint: %s", strerror(errno));
    sl_checkpoint_header h;
    size_t acc_bytes = (size_t)st->d_sae * sizeof *st->acc;
    size_t heap_bytes = (size_t)st->d_sae * st->top_k * sizeof *st->heap;
    size_t sum_bytes = (size_t)d_in * sizeof *recon->x_sum;
    size_t pending_bytes = st->pending ? (size_t)st->d_sae * sizeof *st->pending : 0;
    int ok = fread(&h, sizeof h, 1, f) == 1 && memcmp(h.magic, "SAELCKP1", 8) == 0 &&
             (h.version == 2 || h.version == 3);
    if (ok && (h.version == 3) != (st->pending != NULL)) { /* version 3 holds one-per-sequence state */
        fclose(f);
        return sl_errf_path(err, path, "checkpoint is %s one example per sequence; the run is %s", h.version == 3 ? "with" : "without",
                            st->pending ? "with" : "without");
    }
    if (ok && (h.d_sae != st->d_sae || h.top_k != st->top_k || h.d_in != d_in)) {
        fclose(f);
        return sl_errf_path(err, path, "checkpoint is for d_sae %u, top_k %u, d_in %u; the run has %u, %u, %u",
                            h.d_sae, h.top_k, h.d_in, st->d_sae, st->top_k, d_in);
    }
    ok = ok && fread(st->acc, 1, acc_bytes, f) == acc_bytes && fread(st->heap, 1, heap_bytes, f) == heap_bytes &&
         fread(recon->x_sum, 1, sum_bytes, f) == sum_bytes &&
         (!pending_bytes || fread(st->pending, 1, pending_bytes, f) == pending_bytes) && fgetc(f) == EOF;
    fclose(f);
    if (ok) {
        XXH64_state_t *hs = XXH64_createState();
        if (!hs) return sl_errf(err, "out of memory");
        XXH64_reset(hs, 0);
        XXH64_update(hs, st->acc, acc_bytes);
        XXH64_update(hs, st->heap, heap_bytes);
        XXH64_update(hs, recon->x_sum, sum_bytes);
        if (pending_bytes) XXH64_update(hs, st->pending, pending_bytes);
        ok = XXH64_digest(hs) == h.checksum;
        XXH64_freeState(hs);
    }
    if (!ok) return sl_errf_path(err, path, "damaged checkpoint (truncated or checksum mismatch)");
    for (uint32_t f2 = 0; f2 < st->d_sae; f2++)
        if (st->acc[f2].n_examples > st->top_k) return sl_errf_path(err, path, "damaged checkpoint (heap size)");
    st->n_tokens = h.n_tokens;
    st->nnz = h.nnz;
    recon->rows = h.recon_rows;
    recon->err_sq = h.recon_err_sq;
    recon->x_sq = h.recon_x_sq;
    *c = h.c;
    return 0;
}
