/* test_safetensors.c: validation of malformed files, dtype conversions.
 * The bad files and the keyword each error must contain are listed in
 * FIXTURES/bad/README (written by tests/fixtures/make_fixtures.py). */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "dtype.h"
#include "safetensors.h"

static void check_bad_files(const char *fixtures) {
    char readme[4096], line[1024];
    snprintf(readme, sizeof readme, "%s/bad/README", fixtures);
    FILE *f = fopen(readme, "r");
    CHECK(f != NULL);
    if (!f) return;
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        char *tab1 = strchr(line, '\t');
        if (!tab1) continue;
        *tab1 = 0;
        char *keyword = tab1 + 1, *tab2 = strchr(keyword, '\t');
        if (!tab2) continue;
        *tab2 = 0;
        char path[4096];
        snprintf(path, sizeof path, "%s/bad/%s", fixtures, line);
        sl_err err = {{0}};
        sl_st *st = sl_st_open(path, &err);
        CHECK(st == NULL);
        sl_st_close(st);
        CHECK_MSG(err.msg, path);
        CHECK_MSG(err.msg, keyword);
        printf("  %-32s -> %s\n", line, err.msg + strlen(path) + 2);
        n++;
    }
    fclose(f);
    CHECK(n >= 8);
}

static void check_good_file(const char *fixtures) {
    char path[4096];
    snprintf(path, sizeof path, "%s/planted/acts.safetensors", fixtures);
    sl_err err = {{0}};
    sl_st *st = sl_st_open(path, &err);
    CHECK(st != NULL);
    if (!st) {
        fprintf(stderr, "%s\n", err.msg);
        return;
    }
    const sl_tensor *a = sl_st_get(st, "activations"), *t = sl_st_get(st, "tokens");
    CHECK(a && t);
    CHECK(a && a->dtype == SL_DT_F32 && a->ndim == 3 && a->shape[0] == 40 && a->shape[1] == 24 && a->shape[2] == 16);
    CHECK(t && t->dtype == SL_DT_I32 && t->nbytes == 40 * 24 * 4);
    CHECK(sl_st_get(st, "nope") == NULL);
    sl_st_close(st);
    /* a missing file names itself and the OS reason */
    snprintf(path, sizeof path, "%s/planted/missing.safetensors", fixtures);
    CHECK(sl_st_open(path, &err) == NULL);
    CHECK_MSG(err.msg, path);
    CHECK_MSG(err.msg, "No such file");
}

static void check_conversions(void) {
    /* hand-picked f16 bit patterns and their exact values */
    CHECK(sl_f16_to_f32(0x3c00) == 1.0f);
    CHECK(sl_f16_to_f32(0xc000) == -2.0f);
    CHECK(sl_f16_to_f32(0x7bff) == 65504.0f);
    CHECK(sl_f16_to_f32(0x0001) == 5.9604644775390625e-08f); /* smallest subnormal */
    CHECK(sl_f32_to_f16(1.0f) == 0x3c00);
    CHECK(sl_f32_to_f16(65504.0f) == 0x7bff);
    CHECK(sl_f32_to_f16(65520.0f) == 0x7c00); /* rounds to infinity */
    CHECK(sl_f32_to_f16(5.9604644775390625e-08f) == 0x0001);
    CHECK(sl_f32_to_f16(2.98023223876953125e-08f) == 0x0000); /* exactly half the smallest: ties to even */
    CHECK(sl_f32_to_f16(1.0009765625f) == 0x3c01);
    CHECK(sl_f32_to_f16(1.00048828125f) == 0x3c00); /* halfway between 0x3c00 and 0x3c01: even */
    /* every f16 value round-trips */
    int bad = 0;
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue; /* NaN payloads */
        if (sl_f32_to_f16(sl_f16_to_f32((uint16_t)h)) != h) bad++;
    }
    CHECK(bad == 0);
    CHECK(sl_bf16_to_f32(0x3f80) == 1.0f);
    CHECK(sl_f32_to_bf16(1.0f) == 0x3f80);
    CHECK(sl_f32_to_bf16(sl_bits_to_f32(0x3f808000u)) == 0x3f80); /* tie to even */
    CHECK(sl_f32_to_bf16(sl_bits_to_f32(0x3f818000u)) == 0x3f82);
}

int main(int argc, char **argv) {
    if (argc < 2) return fprintf(stderr, "usage: %s FIXTURES\n", argv[0]), 2;
    check_conversions();
    check_good_file(argv[1]);
    check_bad_files(argv[1]);
    CHECK_DONE();
}
