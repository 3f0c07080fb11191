#include "dtype.h"

static const struct {
    const char *name;
    sl_dtype dt;
    size_t size;
} dtype_table[] = {
    {"F64", SL_DT_F64, 8}, {"F32", SL_DT_F32, 4}, {"F16", SL_DT_F16, 2}, {"BF16", SL_DT_BF16, 2},
    {"I64", SL_DT_I64, 8}, {"I32", SL_DT_I32, 4}, {"I16", SL_DT_I16, 2}, {"I8", SL_DT_I8, 1},
    {"U64", SL_DT_U64, 8}, {"U32", SL_DT_U32, 4}, {"U16", SL_DT_U16, 2}, {"U8", SL_DT_U8, 1},
    {"BOOL", SL_DT_BOOL, 1},
};
#define N_DTYPES (sizeof dtype_table / sizeof dtype_table[0])

size_t sl_dtype_size(sl_dtype dt) {
    for (size_t i = 0; i < N_DTYPES; i++)
        if (dtype_table[i].dt == dt) return dtype_table[i].size;
    return 0;
}

const char *sl_dtype_name(sl_dtype dt) {
    for (size_t i = 0; i < N_DTYPES; i++)
        if (dtype_table[i].dt == dt) return dtype_table[i].name;
    return "INVALID";
}

sl_dtype sl_dtype_parse(const char *name) {
    for (size_t i = 0; i < N_DTYPES; i++)
        if (strcmp(dtype_table[i].name, name) == 0) return dtype_table[i].dt;
    return SL_DT_INVALID;
}

int sl_convert_to_f32(const void *src, sl_dtype dt, size_t n, float *dst) {
    const unsigned char *p = src;
    switch (dt) {
    case SL_DT_F32: memcpy(dst, p, n * 4); return 0;
    case SL_DT_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = sl_f16_to_f32(h);
        }
        return 0;
    case SL_DT_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = sl_bf16_to_f32(h);
        }
        return 0;
    case SL_DT_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            dst[i] = (float)d;
        }
        return 0;
    default: return -1;
    }
}

#define CONVERT_INT(T)                                                                             \
    for (size_t i = 0; i < n; i++) {                                                               \
        T v;                                                                                       \
        memcpy(&v, p + sizeof(T) * i, sizeof(T));                                                  \
        dst[i] = (int64_t)v;                                                                       \
    }                                                                                              \
    return 0

int sl_convert_to_i64(const void *src, sl_dtype dt, size_t n, int64_t *dst) {
    const unsigned char *p = src;
    switch (dt) {
    case SL_DT_I64: CONVERT_INT(int64_t);
    case SL_DT_I32: CONVERT_INT(int32_t);
    case SL_DT_I16: CONVERT_INT(int16_t);
    case SL_DT_I8: CONVERT_INT(int8_t);
    case SL_DT_U32: CONVERT_INT(uint32_t);
    case SL_DT_U16: CONVERT_INT(uint16_t);
    case SL_DT_U8: CONVERT_INT(uint8_t);
    case SL_DT_U64:
        for (size_t i = 0; i < n; i++) {
            uint64_t v;
            memcpy(&v, p + 8 * i, 8);
            dst[i] = v > (uint64_t)INT64_MAX ? -1 : (int64_t)v; /* caller range-checks ids */
        }
        return 0;
    default: return -1;
    }
}
