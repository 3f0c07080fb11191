/* test_f32_display: sl_f32_to_display (one snprintf, exact shortcuts) returns
 * exactly what the slow reference returns (shortest %.6g..%.9g that reads back,
 * then strtod), over special values, every float near powers of ten and of two,
 * and millions of random bit patterns. */
#include <float.h>
#include <stdint.h>

#include "check.h"
#include "text.h"

static long mismatches;

static void same(float v) {
    double a = sl_f32_to_display(v), b = sl_f32_to_display_reference(v);
    uint64_t ba, bb;
    memcpy(&ba, &a, sizeof ba);
    memcpy(&bb, &b, sizeof bb);
    if (ba != bb && !(isnan(a) && isnan(b))) {
        if (mismatches++ < 10) fprintf(stderr, "%.9g: %.17g, reference %.17g\n", (double)v, a, b);
        check_failures++;
    }
}

static float from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint64_t rng = 0x9e3779b97f4a7c15u;
static uint32_t next32(void) { /* xorshift64* */
    rng ^= rng >> 12, rng ^= rng << 25, rng ^= rng >> 27;
    return (uint32_t)((rng * 0x2545f4914f6cdd1du) >> 32);
}

int main(void) {
    const float specials[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, FLT_MIN, -FLT_MIN, FLT_MAX, -FLT_MAX,
                              FLT_TRUE_MIN, -FLT_TRUE_MIN, FLT_EPSILON, 1.0f, -1.0f, 0.6f, 0.1f, 1e-7f, 3.4e38f,
                              1e10f, 1e-10f, 123456.789f, 9.999999f, 0.5f, 16777216.0f, 16777217.0f};
    for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++) same(specials[i]);
    CHECK(sl_f32_to_display(0.6f) == 0.6);
    CHECK(sl_f32_to_display(-2.5f) == -2.5);
    /* Every float within 4096 ulps of each power of ten and of two, both signs. */
    for (int e = -45; e <= 38; e++) {
        float p = (float)pow(10.0, e);
        uint32_t u;
        memcpy(&u, &p, sizeof u);
        for (uint32_t d = 0; d < 8192; d++) {
            uint32_t w = u - 4096 + d;
            if ((w & 0x7f800000u) == 0x7f800000u) continue;
            same(from_bits(w));
            same(from_bits(w | 0x80000000u));
        }
    }
    for (uint32_t e = 0; e < 255; e++)
        for (uint32_t d = 0; d < 64; d++) same(from_bits((e << 23) + d)), same(from_bits((e << 23) - d - 1));
    /* Short decimals: the roundings of the 9 digits land on ties most often there. */
    for (int i = 0; i < 200000; i++) same((float)i / 1000.0f), same((float)i * 0.05f), same((float)i * 1e-6f);
    /* Random bit patterns over the whole range (NaNs included) and activation-like values. */
    for (int i = 0; i < 1500000; i++) same(from_bits(next32()));
    for (int i = 0; i < 500000; i++) same((float)next32() / 4294967296.0f * 20.0f);
    if (mismatches) fprintf(stderr, "%ld mismatches\n", mismatches);
    CHECK_DONE();
}
