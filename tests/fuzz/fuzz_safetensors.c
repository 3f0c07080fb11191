/* fuzz_safetensors.c: the safetensors container parser (engine/safetensors.c).
 *
 * The input is a whole .safetensors file. When sl_st_open accepts it, every
 * promise of safetensors.h is checked: each tensor lies inside the data section,
 * nbytes = numel * dtype size, no two non-empty tensors overlap, lookups by name
 * find the tensor, and float tensors load through sl_st_load_f32 (reading every
 * byte) with their own shape and are refused with another one. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
static volatile unsigned fz_sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fz_memfd(data, size);
    sl_err err;
    err.msg[0] = 0;
    sl_st *st = sl_st_open(path, &err);
    if (!st) {
        FZ_CHECK_ERR(err);
        return 0;
    }
    FZ_ACCEPTED("safetensors");
    FZ_ASSERT(strcmp(sl_st_path(st), path) == 0);
    int n = sl_st_count(st);
    FZ_ASSERT(n >= 0);
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; i--) header_len = header_len << 8 | data[i];
    unsigned sum = 0;
    for (int i = 0; i < n; i++) {
        const sl_tensor *t = sl_st_at(st, i);
        FZ_ASSERT(t->name != NULL);
        FZ_ASSERT(t->ndim >= 0 && t->ndim <= SL_ST_MAX_DIMS);
        FZ_ASSERT(sl_dtype_size(t->dtype) > 0);
        uint64_t numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            FZ_ASSERT(t->shape[d] >= 0);
            numel *= (uint64_t)t->shape[d];
        }
        FZ_ASSERT(numel == t->numel);
        FZ_ASSERT(t->nbytes == numel * sl_dtype_size(t->dtype));
        FZ_ASSERT(t->nbytes <= size - 8 - header_len);
        /* every byte is readable (a read past the mapping faults) */
        for (size_t k = 0; k < t->nbytes; k++) sum += t->data[k];
        const sl_tensor *byname = sl_st_get(st, t->name);
        FZ_ASSERT(byname != NULL);
        char shape[128];
        sl_shape_str(t, shape, sizeof shape);
        FZ_ASSERT(shape[0] == '[');
        char tiny[4];
        sl_shape_str(t, tiny, sizeof tiny); /* truncates, never overflows */
        int is_float = t->dtype == SL_DT_F32 || t->dtype == SL_DT_F16 || t->dtype == SL_DT_BF16 ||
                       t->dtype == SL_DT_F64;
        if (t->nbytes <= (1u << 20)) {
            float *v = sl_st_load_f32(st, t->name, t->ndim, t->shape, &err);
            if (is_float) {
                FZ_ASSERT(v != NULL);
                /* the converted values are the bytes of the input's data section */
                if (t->dtype == SL_DT_F32 && t->numel)
                    FZ_ASSERT(memcmp(v, t->data, 4) == 0 || v[0] != v[0]);
            } else {
                FZ_ASSERT(v == NULL);
                FZ_ERR_SET(err);
            }
            free(v);
            int64_t other[SL_ST_MAX_DIMS + 1];
            memcpy(other, t->shape, sizeof t->shape);
            other[0] = t->ndim ? t->shape[0] + 1 : 1;
            float *w = sl_st_load_f32(st, t->name, t->ndim ? t->ndim : 1, other, &err);
            FZ_ASSERT(w == NULL);
            FZ_ERR_SET(err);
        }
    }
    /* No two non-empty tensors overlap: within the input, compare their offsets. */
    for (int i = 0; i < n && n <= 64; i++) {
        const sl_tensor *a = sl_st_at(st, i);
        for (int j = i + 1; j < n; j++) {
            const sl_tensor *b = sl_st_at(st, j);
            if (!a->nbytes || !b->nbytes) continue;
            FZ_ASSERT(a->data + a->nbytes <= b->data || b->data + b->nbytes <= a->data);
        }
    }
    FZ_ASSERT(sl_st_get(st, "\x01no such tensor") == NULL);
    fz_sink = sum;
    (void)sl_st_metadata(st, "format");
    sl_st_close(st);
    return 0;
}
