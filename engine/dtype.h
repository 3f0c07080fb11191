/* dtype.h: tensor element types and the f16/bf16 <-> f32 conversions.
 *
 * Conversions are bit-exact (round to nearest even, NaN and infinity kept) and
 * header-only so that the CPU engine, the store and the CUDA kernels share them. */
#ifndef SAELITE_DTYPE_H
#define SAELITE_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define SL_HD __host__ __device__
#else
#define SL_HD
#endif

typedef enum sl_dtype {
    SL_DT_INVALID = 0,
    SL_DT_F64, SL_DT_F32, SL_DT_F16, SL_DT_BF16,
    SL_DT_I64, SL_DT_I32, SL_DT_I16, SL_DT_I8,
    SL_DT_U64, SL_DT_U32, SL_DT_U16, SL_DT_U8,
    SL_DT_BOOL
} sl_dtype;

/* Bytes per element; 0 for SL_DT_INVALID. */
size_t sl_dtype_size(sl_dtype dt);
/* safetensors spelling ("F32", "BF16", ...). */
const char *sl_dtype_name(sl_dtype dt);
/* Parses a safetensors dtype string; SL_DT_INVALID if unknown. */
sl_dtype sl_dtype_parse(const char *name);

static inline SL_HD float sl_bits_to_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline SL_HD uint32_t sl_f32_to_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline SL_HD float sl_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0x1f) return sl_bits_to_f32(sign | 0x7f800000u | (man << 13)); /* inf/nan */
    if (exp == 0) {
        if (man == 0) return sl_bits_to_f32(sign);
        /* subnormal: value = man * 2^-24 */
        float v = (float)man * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    return sl_bits_to_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

static inline SL_HD uint16_t sl_f32_to_f16(float f) {
    uint32_t x = sl_f32_to_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) /* inf or nan */
        return (uint16_t)(sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0u));
    if (absx >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds to >= 65520: inf */
    if (absx < 0x38800000u) {                                    /* below smallest normal */
        if (absx < 0x33000000u) return (uint16_t)sign;           /* < half of smallest subnormal */
        uint32_t man = (absx & 0x7fffffu) | 0x800000u;
        /* value = man * 2^(e-150) and the f16 subnormal unit is 2^-24, so q = man >> (126 - e) */
        uint32_t shift = 126u - (absx >> 23); /* 14..24 */
        uint32_t q = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1u);
        uint32_t halfway = 1u << (shift - 1);
        if (rem > halfway || (rem == halfway && (q & 1u))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t h = ((absx >> 13) - (112u << 10));
    uint32_t rem = absx & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
    return (uint16_t)(sign | h);
}

static inline SL_HD float sl_bf16_to_f32(uint16_t b) { return sl_bits_to_f32((uint32_t)b << 16); }

static inline SL_HD uint16_t sl_f32_to_bf16(float f) {
    uint32_t x = sl_f32_to_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* quiet nan */
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

/* Converts n elements of a float type (F32/F16/BF16/F64) to f32. Returns -1 for
 * any other dtype. src may be unaligned (safetensors data is only byte aligned). */
int sl_convert_to_f32(const void *src, sl_dtype dt, size_t n, float *dst);
/* Converts n elements of an integer type to int64. Returns -1 for float dtypes. */
int sl_convert_to_i64(const void *src, sl_dtype dt, size_t n, int64_t *dst);

#endif
