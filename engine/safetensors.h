/* safetensors.h: read-only, validated access to .safetensors files by mmap.
 *
 * Layout: u64 little-endian header length N, N bytes of JSON
 * {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}},
 * then the data section; offsets are relative to its start.
 *
 * sl_st_open checks everything before any tensor is used: header length cap
 * (SL_ST_MAX_HEADER), JSON well-formed, known dtypes, shapes non-negative and
 * their product times the dtype size equal to end - begin without overflow,
 * offsets inside the data section, no two tensors overlapping. A file that
 * passes can be read without further bounds checks. */
#ifndef SAELITE_SAFETENSORS_H
#define SAELITE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "dtype.h"

#define SL_ST_MAX_DIMS 8
#define SL_ST_MAX_HEADER (100u * 1024u * 1024u) /* the cap the reference reader uses */

typedef struct sl_tensor {
    char *name;
    sl_dtype dtype;
    int ndim;
    int64_t shape[SL_ST_MAX_DIMS];
    uint64_t numel;
    const unsigned char *data; /* inside the mapping; only byte aligned */
    size_t nbytes;
} sl_tensor;

typedef struct sl_st sl_st;

sl_st *sl_st_open(const char *path, sl_err *err);
void sl_st_close(sl_st *st);

const char *sl_st_path(const sl_st *st);
int sl_st_count(const sl_st *st);
const sl_tensor *sl_st_at(const sl_st *st, int i);
/* NULL when absent. */
const sl_tensor *sl_st_get(const sl_st *st, const char *name);
/* A __metadata__ string value, or NULL. */
const char *sl_st_metadata(const sl_st *st, const char *key);

/* Drops the pages of [ptr, ptr + len) from this process's resident set once a
 * streaming reader is done with them, so RSS stays bounded on large files. */
void sl_st_release(const sl_st *st, const void *ptr, size_t len);

/* "[2, 3, 4]" into out, for error messages. */
void sl_shape_str(const sl_tensor *t, char *out, size_t out_size);

/* Loads a float tensor (F32/F16/BF16/F64) into a fresh f32 array after checking
 * its shape equals `shape` (ndim dims). Errors name the file and the tensor. */
float *sl_st_load_f32(const sl_st *st, const char *name, int ndim, const int64_t *shape,
                      sl_err *err);

#endif
