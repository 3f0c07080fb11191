/* tokfile.c: writing and mapping tokens.slt (see tokfile.h). */
#include "tokfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "fsutil.h"

_Static_assert(sizeof(sl_tokfile_header) == 64, "header layout");
_Static_assert(sizeof(sl_tok_record) == 24, "record layout");

static int put(sl_tokfile_writer *w, const sl_tok_record *r, sl_err *err) {
    if (fwrite(r, sizeof *r, 1, w->f) != 1)
        return sl_errf_path(err, w->tmp_path, "cannot write: %s", strerror(errno));
    XXH64_update(w->hash, r, sizeof *r);
    if (++w->fill == w->seq_len) {
        w->fill = 0;
        w->n_seq++;
    }
    return 0;
}

int sl_tokfile_begin(sl_tokfile_writer *w, const char *store_dir, uint32_t seq_len, int prepend_bos, int32_t bos_id,
                     uint64_t max_tokens, sl_err *err) {
    memset(w, 0, sizeof *w);
    w->seq_len = seq_len;
    w->prepend_bos = prepend_bos;
    w->bos_id = bos_id;
    w->max_tokens = max_tokens;
    size_t n = strlen(store_dir) + sizeof(SL_TOKFILE_NAME) + 8;
    w->path = malloc(n);
    w->tmp_path = malloc(n);
    w->hash = XXH64_createState();
    if (!w->path || !w->tmp_path || !w->hash) {
        sl_tokfile_abort(w);
        return sl_errf(err, "out of memory");
    }
    snprintf(w->path, n, "%s/%s", store_dir, SL_TOKFILE_NAME);
    snprintf(w->tmp_path, n, "%s/%s.tmp", store_dir, SL_TOKFILE_NAME);
    XXH64_reset(w->hash, 0);
    w->f = fopen(w->tmp_path, "wb");
    if (!w->f) {
        int e = errno;
        sl_errf_path(err, w->tmp_path, "cannot create: %s", strerror(e));
        sl_tokfile_abort(w);
        return -1;
    }
    sl_tokfile_header h = {0};
    if (fwrite(&h, sizeof h, 1, w->f) != 1) { /* placeholder, rewritten at the end */
        sl_errf_path(err, w->tmp_path, "cannot write: %s", strerror(errno));
        sl_tokfile_abort(w);
        return -1;
    }
    return 0;
}

static int add_tokens(sl_tokfile_writer *w, uint64_t doc, const int32_t *ids, const uint32_t *char_start,
                      const uint32_t *char_end, const uint8_t *special, size_t n, int new_doc, sl_err *err) {
    if (n == 0 || w->full) return 0;
    if (new_doc) {
        w->n_docs++;
        if (w->fill != 0 && w->bos_id >= 0) { /* documents are separated by BOS, as SAELens packs them */
            sl_tok_record sep = {.token = w->bos_id, .special = 1, .doc = doc};
            if (put(w, &sep, err)) return -1;
            w->n_tokens++;
            w->n_special++;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (w->max_tokens && w->n_tokens >= w->max_tokens) {
            w->full = 1;
            return 0;
        }
        if (w->fill == 0 && w->prepend_bos) {
            sl_tok_record bos = {.token = w->bos_id, .special = 1, .doc = doc};
            if (put(w, &bos, err)) return -1;
            w->n_tokens++;
            w->n_special++;
        }
        sl_tok_record r = {.token = ids[i], .char_start = char_start[i], .char_end = char_end[i],
                           .special = special ? special[i] : 0, .doc = doc};
        if (put(w, &r, err)) return -1;
        w->n_tokens++;
        w->n_special += r.special;
    }
    return 0;
}

int sl_tokfile_add_doc(sl_tokfile_writer *w, uint64_t doc, const int32_t *ids, const uint32_t *char_start,
                       const uint32_t *char_end, const uint8_t *special, size_t n, sl_err *err) {
    return add_tokens(w, doc, ids, char_start, char_end, special, n, 1, err);
}

int sl_tokfile_add_more(sl_tokfile_writer *w, uint64_t doc, const int32_t *ids, const uint32_t *char_start,
                        const uint32_t *char_end, const uint8_t *special, size_t n, sl_err *err) {
    return add_tokens(w, doc, ids, char_start, char_end, special, n, 0, err);
}

void sl_tokfile_abort(sl_tokfile_writer *w) {
    if (w->f) fclose(w->f);
    if (w->tmp_path) unlink(w->tmp_path);
    free(w->path);
    free(w->tmp_path);
    if (w->hash) XXH64_freeState(w->hash);
    memset(w, 0, sizeof *w);
}

int sl_tokfile_finish(sl_tokfile_writer *w, sl_err *err) {
    while (w->fill != 0) { /* pad the last sequence */
        sl_tok_record pad = {.token = -1};
        if (put(w, &pad, err)) goto fail;
    }
    sl_tokfile_header h = {.version = 1, .seq_len = w->seq_len, .n_seq = w->n_seq, .n_tokens = w->n_tokens,
                           .n_special = w->n_special, .n_docs = w->n_docs, .checksum = XXH64_digest(w->hash)};
    memcpy(h.magic, "SAELTOK1", 8);
    if (fseek(w->f, 0, SEEK_SET) != 0 || fwrite(&h, sizeof h, 1, w->f) != 1 || fflush(w->f) != 0 ||
        fsync(fileno(w->f)) != 0) {
        sl_errf_path(err, w->tmp_path, "cannot write: %s", strerror(errno));
        goto fail;
    }
    fclose(w->f);
    w->f = NULL;
    if (rename(w->tmp_path, w->path) != 0) {
        sl_errf_path(err, w->path, "cannot rename into place: %s", strerror(errno));
        goto fail;
    }
    char *dir = strdup(w->path);
    if (dir) {
        char *slash = strrchr(dir, '/');
        if (slash) *slash = 0;
        sl_fsync_dir(dir);
        free(dir);
    }
    free(w->tmp_path);
    w->tmp_path = NULL; /* nothing to unlink */
    sl_tokfile_abort(w);
    return 0;
fail:
    sl_tokfile_abort(w);
    return -1;
}

int sl_tokfile_open(sl_tokfile *tf, const char *store_dir, sl_err *err) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", store_dir, SL_TOKFILE_NAME);
    memset(tf, 0, sizeof *tf);
    void *map;
    size_t size;
    if (sl_map_readonly(path, "token file", &map, &size, err)) return -1;
    if (size < sizeof(sl_tokfile_header)) {
        if (map) munmap(map, size);
        return sl_errf_path(err, path, "truncated token file");
    }
    const sl_tokfile_header *h = map;
    unsigned __int128 want = sizeof *h + (unsigned __int128)h->n_seq * h->seq_len * sizeof(sl_tok_record);
    if (memcmp(h->magic, "SAELTOK1", 8) != 0 || h->version != 1 || want != size ||
        XXH64((const char *)map + sizeof *h, size - sizeof *h, 0) != h->checksum) {
        munmap(map, size);
        return sl_errf_path(err, path, "damaged token file (bad magic, size or checksum)");
    }
    tf->map = map;
    tf->map_size = size;
    tf->header = h;
    tf->records = (const sl_tok_record *)(h + 1);
    return 0;
}

void sl_tokfile_close(sl_tokfile *tf) {
    if (tf->map) munmap(tf->map, tf->map_size);
    memset(tf, 0, sizeof *tf);
}
