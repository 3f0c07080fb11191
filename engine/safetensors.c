/* safetensors.c: mmap + full validation of the safetensors container. */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct sl_st {
    char *path;
    unsigned char *map;
    size_t map_size;
    const unsigned char *data; /* start of the data section */
    uint64_t data_size;
    int n_tensors;
    sl_tensor *tensors;
    json_t *metadata; /* __metadata__ object or NULL */
};

const char *sl_st_path(const sl_st *st) { return st->path; }
int sl_st_count(const sl_st *st) { return st->n_tensors; }
const sl_tensor *sl_st_at(const sl_st *st, int i) { return &st->tensors[i]; }

const sl_tensor *sl_st_get(const sl_st *st, const char *name) {
    for (int i = 0; i < st->n_tensors; i++)
        if (strcmp(st->tensors[i].name, name) == 0) return &st->tensors[i];
    return NULL;
}

const char *sl_st_metadata(const sl_st *st, const char *key) {
    if (!st->metadata) return NULL;
    return json_string_value(json_object_get(st->metadata, key));
}

void sl_shape_str(const sl_tensor *t, char *out, size_t out_size) {
    size_t n = 0;
    n += (size_t)snprintf(out + n, out_size - n, "[");
    for (int d = 0; d < t->ndim && n < out_size; d++)
        n += (size_t)snprintf(out + n, out_size - n, "%s%lld", d ? ", " : "",
                              (long long)t->shape[d]);
    if (n < out_size) snprintf(out + n, out_size - n, "]");
}

void sl_st_close(sl_st *st) {
    if (!st) return;
    for (int i = 0; i < st->n_tensors; i++) free(st->tensors[i].name);
    free(st->tensors);
    if (st->map && st->map_size) munmap(st->map, st->map_size);
    json_decref(st->metadata);
    free(st->path);
    free(st);
}

void sl_st_release(const sl_st *st, const void *ptr, size_t len) {
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t lo = (uintptr_t)ptr, hi = lo + len;
    uintptr_t base = (uintptr_t)st->map;
    if (lo < base) lo = base;
    lo = (lo + (uintptr_t)page - 1) & ~((uintptr_t)page - 1); /* whole pages only */
    hi &= ~((uintptr_t)page - 1);
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

static int cmp_by_offset(const void *a, const void *b) {
    const sl_tensor *x = a, *y = b;
    if (x->data != y->data) return x->data < y->data ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

/* Parses one header entry into t. */
static int parse_entry(sl_st *st, const char *name, json_t *v, sl_tensor *t, sl_err *err) {
    const char *path = st->path;
    if (!json_is_object(v))
        return sl_errf_path(err, path, "not a safetensors file (entry '%s' is not an object)", name);
    json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
           *jo = json_object_get(v, "data_offsets");
    if (!json_is_string(jd) || !json_is_array(js) || !json_is_array(jo) || json_array_size(jo) != 2)
        return sl_errf_path(err, path,
                            "not a safetensors file (tensor '%s' lacks dtype, shape or data_offsets)",
                            name);
    t->dtype = sl_dtype_parse(json_string_value(jd));
    if (t->dtype == SL_DT_INVALID)
        return sl_errf_path(err, path, "tensor '%s' has unsupported dtype '%s'", name,
                            json_string_value(jd));
    size_t ndim = json_array_size(js);
    if (ndim > SL_ST_MAX_DIMS)
        return sl_errf_path(err, path, "tensor '%s' has %zu dimensions (at most %d supported)",
                            name, ndim, SL_ST_MAX_DIMS);
    t->ndim = (int)ndim;
    uint64_t numel = 1;
    for (size_t d = 0; d < ndim; d++) {
        json_t *e = json_array_get(js, d);
        if (!json_is_integer(e) || json_integer_value(e) < 0)
            return sl_errf_path(err, path, "tensor '%s' has an invalid shape", name);
        uint64_t dim = (uint64_t)json_integer_value(e);
        t->shape[d] = (int64_t)dim;
        if (dim && numel > UINT64_MAX / dim)
            return sl_errf_path(err, path, "tensor '%s' shape overflows", name);
        numel *= dim;
    }
    t->numel = numel;
    json_t *jb = json_array_get(jo, 0), *je = json_array_get(jo, 1);
    if (!json_is_integer(jb) || !json_is_integer(je) || json_integer_value(jb) < 0 ||
        json_integer_value(je) < json_integer_value(jb))
        return sl_errf_path(err, path, "tensor '%s' has invalid data_offsets", name);
    uint64_t begin = (uint64_t)json_integer_value(jb), end = (uint64_t)json_integer_value(je);
    if (end > st->data_size)
        return sl_errf_path(err, path,
                            "tensor '%s' data_offsets [%llu, %llu] lie outside the file's data "
                            "section of %llu bytes (truncated or corrupt file)",
                            name, (unsigned long long)begin, (unsigned long long)end,
                            (unsigned long long)st->data_size);
    uint64_t esize = sl_dtype_size(t->dtype);
    if (numel > UINT64_MAX / esize || numel * esize != end - begin) {
        char shape[128];
        sl_shape_str(t, shape, sizeof shape);
        return sl_errf_path(err, path,
                            "tensor '%s': shape %s of %s needs %llu bytes but data_offsets span %llu",
                            name, shape, sl_dtype_name(t->dtype),
                            (unsigned long long)(numel * esize), (unsigned long long)(end - begin));
    }
    t->data = st->data + begin;
    t->nbytes = (size_t)(end - begin);
    t->name = strdup(name);
    if (!t->name) return sl_errf(err, "out of memory");
    return 0;
}

sl_st *sl_st_open(const char *path, sl_err *err) {
    sl_st *st = calloc(1, sizeof *st);
    json_t *root = NULL;
    int fd = -1;
    if (!st || !(st->path = strdup(path))) {
        sl_errf(err, "out of memory");
        goto fail;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        sl_errf_path(err, path, "cannot open: %s", strerror(errno));
        goto fail;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        sl_errf_path(err, path, "cannot stat: %s", strerror(errno));
        goto fail;
    }
    if (S_ISDIR(sb.st_mode)) {
        sl_errf_path(err, path, "is a directory, expected a .safetensors file");
        goto fail;
    }
    if (sb.st_size < 8) {
        sl_errf_path(err, path, "not a safetensors file (%lld bytes, truncated or empty)",
                     (long long)sb.st_size);
        goto fail;
    }
    st->map_size = (size_t)sb.st_size;
    st->map = mmap(NULL, st->map_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (st->map == MAP_FAILED) {
        st->map = NULL;
        sl_errf_path(err, path, "cannot mmap: %s", strerror(errno));
        goto fail;
    }
    close(fd);
    fd = -1;

    uint64_t header_len = 0;
    for (int i = 7; i >= 0; i--) header_len = (header_len << 8) | st->map[i];
    if (header_len > SL_ST_MAX_HEADER) {
        /* Text files land here too: their first 8 bytes read as a huge length. */
        sl_errf_path(err, path,
                     "not a safetensors file (header length %llu exceeds the %u-byte cap)",
                     (unsigned long long)header_len, SL_ST_MAX_HEADER);
        goto fail;
    }
    if (header_len < 2 || header_len > st->map_size - 8) {
        sl_errf_path(err, path, "truncated: header of %llu bytes but the file has %zu",
                     (unsigned long long)header_len, st->map_size);
        goto fail;
    }
    if (st->map[8] != '{') {
        sl_errf_path(err, path, "not a safetensors file (header is not a JSON object)");
        goto fail;
    }
    st->data = st->map + 8 + header_len;
    st->data_size = st->map_size - 8 - header_len;

    json_error_t jerr;
    root = json_loadb((const char *)st->map + 8, (size_t)header_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root || !json_is_object(root)) {
        sl_errf_path(err, path, "not a safetensors file (header JSON: %s at byte %d)",
                     root ? "not an object" : jerr.text, root ? 0 : jerr.position);
        goto fail;
    }
    size_t n = json_object_size(root);
    st->tensors = calloc(n ? n : 1, sizeof *st->tensors);
    if (!st->tensors) {
        sl_errf(err, "out of memory");
        goto fail;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            if (!json_is_object(val)) {
                sl_errf_path(err, path, "__metadata__ is not an object");
                goto fail;
            }
            st->metadata = json_incref(val);
            continue;
        }
        if (parse_entry(st, key, val, &st->tensors[st->n_tensors], err) != 0) goto fail;
        st->n_tensors++;
    }
    /* Overlap check on a sorted copy (zero-size tensors may share an offset). */
    sl_tensor *sorted = malloc((size_t)(st->n_tensors ? st->n_tensors : 1) * sizeof *sorted);
    if (!sorted) {
        sl_errf(err, "out of memory");
        goto fail;
    }
    memcpy(sorted, st->tensors, (size_t)st->n_tensors * sizeof *sorted);
    qsort(sorted, (size_t)st->n_tensors, sizeof *sorted, cmp_by_offset);
    /* Against the furthest end so far: empty tensors in between must not hide an overlap. */
    const sl_tensor *reach = NULL;
    for (int i = 0; i < st->n_tensors; i++) {
        if (!sorted[i].nbytes) continue;
        if (reach && reach->data + reach->nbytes > sorted[i].data) {
            sl_errf_path(err, path, "tensors '%s' and '%s' overlap (corrupt header)", reach->name, sorted[i].name);
            free(sorted);
            goto fail;
        }
        if (!reach || sorted[i].data + sorted[i].nbytes > reach->data + reach->nbytes) reach = &sorted[i];
    }
    free(sorted);
    json_decref(root);
    return st;
fail:
    if (fd >= 0) close(fd);
    json_decref(root);
    sl_st_close(st);
    return NULL;
}

float *sl_st_load_f32(const sl_st *st, const char *name, int ndim, const int64_t *shape,
                      sl_err *err) {
    const sl_tensor *t = sl_st_get(st, name);
    if (!t) return sl_errf_path(err, st->path, "missing tensor '%s'", name), NULL;
    int ok = t->ndim == ndim;
    for (int d = 0; ok && d < ndim; d++) ok = t->shape[d] == shape[d];
    if (!ok) {
        char got[128], want[128];
        sl_tensor w = {.ndim = ndim};
        for (int d = 0; d < ndim; d++) w.shape[d] = shape[d];
        sl_shape_str(t, got, sizeof got);
        sl_shape_str(&w, want, sizeof want);
        return sl_errf_path(err, st->path, "tensor '%s' has shape %s, expected %s", name, got,
                            want),
               NULL;
    }
    float *out = malloc((t->numel ? t->numel : 1) * sizeof(float));
    if (!out) return sl_errf(err, "out of memory loading tensor '%s'", name), NULL;
    if (sl_convert_to_f32(t->data, t->dtype, t->numel, out) != 0) {
        free(out);
        return sl_errf_path(err, st->path, "tensor '%s' has dtype %s; expected F32, F16 or BF16",
                            name, sl_dtype_name(t->dtype)),
               NULL;
    }
    return out;
}
