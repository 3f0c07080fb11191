/* fuzz_common.h: helpers shared by the libFuzzer harnesses in tests/fuzz.
 *
 * The engine's loaders take paths, so a harness puts each input in a file: a
 * memfd reached through /proc/self/fd/N (one per harness, rewritten per input) or
 * a file in a private temporary directory, removed at exit when atexit handlers run
 * (libFuzzer often ends without them: scripts/fuzz.sh points TMPDIR at a directory it
 * removes). fz_st_build writes
 * small valid safetensors files for the directory loaders (SAE, model), whose
 * JSON config is what gets fuzzed. FZ_ASSERT aborts, which libFuzzer reports as a
 * crash with the input saved: the harnesses use it for invariants the engine's
 * headers promise. */
#ifndef SAELITE_FUZZ_COMMON_H
#define SAELITE_FUZZ_COMMON_H

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dtype.h"

#define FZ_UNUSED __attribute__((unused))

#define FZ_ASSERT(cond)                                                                            \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: fuzz invariant failed: %s\n", __FILE__, __LINE__, #cond);     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static inline FZ_UNUSED void fz_die(const char *what) {
    fprintf(stderr, "fuzz harness setup: %s: %s\n", what, strerror(errno));
    abort();
}

/* ---- a private temporary directory ---- */

static FZ_UNUSED char fz_dir_path[256];

static inline FZ_UNUSED int fz_rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static inline FZ_UNUSED void fz_rm_dir(void) {
    if (fz_dir_path[0]) nftw(fz_dir_path, fz_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Creates the directory on first use: $TMPDIR (else /dev/shm, else /tmp)/saelite-fuzz-XXXXXX. */
static inline FZ_UNUSED const char *fz_dir(void) {
    if (!fz_dir_path[0]) {
        /* tmpfs when there is one: rewriting a file per input on a disk costs ~1 ms */
        const char *base = getenv("TMPDIR");
        if (!base || !*base) base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(fz_dir_path, sizeof fz_dir_path, "%s/saelite-fuzz-XXXXXX", base);
        if (!mkdtemp(fz_dir_path)) fz_die("mkdtemp");
        atexit(fz_rm_dir);
    }
    return fz_dir_path;
}

/* DIR/name (sub-directories allowed when created with fz_mkdir). */
static inline FZ_UNUSED const char *fz_path(const char *name) {
    static char buf[8][512];
    static int next;
    char *p = buf[next++ & 7];
    snprintf(p, sizeof buf[0], "%s/%s", fz_dir(), name);
    return p;
}

static inline FZ_UNUSED const char *fz_mkdir(const char *name) {
    const char *p = fz_path(name);
    if (mkdir(p, 0700) != 0 && errno != EEXIST) fz_die("mkdir");
    return p;
}

static inline FZ_UNUSED void fz_write_fd(int fd, const void *data, size_t n) {
    const unsigned char *p = data;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) fz_die("write");
        p += w;
        n -= (size_t)w;
    }
}

static inline FZ_UNUSED void fz_write_file(const char *path, const void *data, size_t n) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) fz_die(path);
    fz_write_fd(fd, data, n);
    close(fd);
}

/* ---- one memfd per harness, rewritten for every input ---- */

static FZ_UNUSED int fz_memfd_fd = -1;
static FZ_UNUSED char fz_memfd_name[64];

/* Replaces the memfd's contents; returns its path, /proc/self/fd/N. */
static inline FZ_UNUSED const char *fz_memfd(const void *data, size_t n) {
    if (fz_memfd_fd < 0) {
        fz_memfd_fd = memfd_create("saelite-fuzz", MFD_CLOEXEC);
        if (fz_memfd_fd < 0) fz_die("memfd_create");
        snprintf(fz_memfd_name, sizeof fz_memfd_name, "/proc/self/fd/%d", fz_memfd_fd);
    }
    if (ftruncate(fz_memfd_fd, 0) != 0) fz_die("ftruncate");
    if (lseek(fz_memfd_fd, 0, SEEK_SET) != 0) fz_die("lseek");
    fz_write_fd(fz_memfd_fd, data, n);
    return fz_memfd_name;
}

/* ---- the error message contract: set, NUL-terminated, within SL_ERR_MAX ---- */

/* With SAELITE_FUZZ_VERBOSE set, harnesses say what became of each input (to check
 * that seeds reach what they are meant to): "refused: <message>" or "accepted". */
static inline FZ_UNUSED int fz_verbose(void) {
    static int v = -1;
    if (v < 0) v = getenv("SAELITE_FUZZ_VERBOSE") != NULL;
    return v;
}

/* An expected failure: a NUL-terminated, non-empty message. */
#define FZ_ERR_SET(err)                                                                            \
    do {                                                                                           \
        FZ_ASSERT(memchr((err).msg, 0, sizeof (err).msg) != NULL);                                 \
        FZ_ASSERT((err).msg[0] != 0);                                                              \
    } while (0)

/* The input was refused: as FZ_ERR_SET, and said when verbose. */
#define FZ_CHECK_ERR(err)                                                                          \
    do {                                                                                           \
        FZ_ERR_SET(err);                                                                           \
        if (fz_verbose()) fprintf(stderr, "refused: %s\n", (err).msg);                            \
    } while (0)

#define FZ_ACCEPTED(what)                                                                          \
    do {                                                                                           \
        if (fz_verbose()) fprintf(stderr, "accepted: %s\n", what);                                \
    } while (0)

/* ---- small safetensors files ---- */

typedef struct fz_tensor {
    const char *name;
    const char *dtype; /* F32, F16, BF16 or F64 */
    int ndim;
    int64_t shape[4];
} fz_tensor;

/* Deterministic values in [-1, 1). */
static inline FZ_UNUSED float fz_value(uint32_t *state) {
    *state = *state * 1664525u + 1013904223u;
    return (float)((*state >> 8) & 0xffff) / 32768.0f - 1.0f;
}

/* A valid safetensors file holding the given tensors (values deterministic from
 * seed). The caller frees the result; *len gets its size. */
static inline FZ_UNUSED unsigned char *fz_st_build(const fz_tensor *t, int n, uint32_t seed, size_t *len) {
    char header[8192];
    size_t h = 0, data = 0;
    h += (size_t)snprintf(header + h, sizeof header - h, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < n; i++) {
        uint64_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++) numel *= (uint64_t)t[i].shape[d];
        size_t es = strcmp(t[i].dtype, "F32") == 0 ? 4 : strcmp(t[i].dtype, "F64") == 0 ? 8 : 2;
        h += (size_t)snprintf(header + h, sizeof header - h, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[",
                              t[i].name, t[i].dtype);
        for (int d = 0; d < t[i].ndim; d++)
            h += (size_t)snprintf(header + h, sizeof header - h, "%s%lld", d ? "," : "",
                                  (long long)t[i].shape[d]);
        h += (size_t)snprintf(header + h, sizeof header - h, "],\"data_offsets\":[%zu,%zu]}", data,
                              data + (size_t)numel * es);
        data += (size_t)numel * es;
        if (h >= sizeof header - 16) abort();
    }
    header[h++] = '}';
    while (h % 8) header[h++] = ' ';
    unsigned char *out = malloc(8 + h + data + 1);
    if (!out) abort();
    for (int i = 0; i < 8; i++) out[i] = (unsigned char)((uint64_t)h >> (8 * i));
    memcpy(out + 8, header, h);
    unsigned char *p = out + 8 + h;
    uint32_t state = seed;
    for (int i = 0; i < n; i++) {
        uint64_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++) numel *= (uint64_t)t[i].shape[d];
        for (uint64_t k = 0; k < numel; k++) {
            float v = fz_value(&state);
            if (strcmp(t[i].dtype, "F32") == 0) {
                uint32_t u = sl_f32_to_bits(v);
                for (int b = 0; b < 4; b++) *p++ = (unsigned char)(u >> (8 * b));
            } else if (strcmp(t[i].dtype, "F64") == 0) {
                double dv = v;
                uint64_t u;
                memcpy(&u, &dv, 8);
                for (int b = 0; b < 8; b++) *p++ = (unsigned char)(u >> (8 * b));
            } else {
                uint16_t u = strcmp(t[i].dtype, "F16") == 0 ? sl_f32_to_f16(v) : sl_f32_to_bf16(v);
                *p++ = (unsigned char)u;
                *p++ = (unsigned char)(u >> 8);
            }
        }
    }
    *len = 8 + h + data;
    return out;
}

/* ---- little-endian access for the binary formats ---- */

static inline FZ_UNUSED uint32_t fz_get_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline FZ_UNUSED uint64_t fz_get_u64(const unsigned char *p) {
    return (uint64_t)fz_get_u32(p) | (uint64_t)fz_get_u32(p + 4) << 32;
}
static inline FZ_UNUSED void fz_put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

#endif
