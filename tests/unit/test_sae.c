/* test_sae.c: every SAE case of FIXTURES/sae encodes to the activations the
 * pure-Python reference (tests/fixtures/sae_reference.py) computed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "sae.h"
#include "safetensors.h"

static void check_case(const char *fixtures, const char *name) {
    char sae_path[4096], expect_path[4096];
    snprintf(sae_path, sizeof sae_path, "%s/sae/%s", fixtures, name);
    size_t n = strlen(name);
    const char *suffix = ".safetensors";
    int bare = n > strlen(suffix) && strcmp(name + n - strlen(suffix), suffix) == 0;
    snprintf(expect_path, sizeof expect_path, "%s/sae/%.*s.expect.safetensors", fixtures,
             (int)(bare ? n - strlen(suffix) : n), name);
    sl_err err = {{0}};
    sl_sae *sae = sl_sae_load(sae_path, &err);
    sl_st *ex = sl_st_open(expect_path, &err);
    CHECK(sae != NULL && ex != NULL);
    if (!sae || !ex) {
        fprintf(stderr, "%s: %s\n", name, err.msg);
        sl_sae_free(sae);
        sl_st_close(ex);
        return;
    }
    const sl_tensor *x = sl_st_get(ex, "x");
    int rows = x ? (int)x->shape[0] : 0;
    int64_t xs[2] = {rows, sae->d_in}, as[2] = {rows, sae->d_sae};
    float *xin = sl_st_load_f32(ex, "x", 2, xs, &err);
    float *want = sl_st_load_f32(ex, "acts", 2, as, &err);
    float *got = calloc((size_t)rows * (size_t)sae->d_sae, sizeof(float));
    float *ws = malloc(sl_sae_workspace_floats(sae, rows) * sizeof(float));
    CHECK(xin && want && got && ws);
    if (xin && want && got && ws) {
        sl_sae_encode(sae, xin, rows, got, ws);
        int mismatches = 0, active = 0;
        for (size_t i = 0; i < (size_t)rows * (size_t)sae->d_sae; i++) {
            double tol = 1e-4 * (1.0 + fabs(want[i]));
            if (fabs(got[i] - want[i]) > tol) {
                if (mismatches++ < 5)
                    fprintf(stderr, "%s: row %zu feature %zu: got %.7g want %.7g\n", name, i / (size_t)sae->d_sae,
                            i % (size_t)sae->d_sae, got[i], want[i]);
            }
            active += want[i] > 0;
        }
        CHECK(mismatches == 0);
        CHECK(active > 0); /* the case exercises something */
        printf("  %-28s %-9s d_in %d d_sae %d: %d active values match\n", name, sl_arch_name(sae->arch), sae->d_in,
               sae->d_sae, active);
    }
    free(xin);
    free(want);
    free(got);
    free(ws);
    sl_st_close(ex);
    sl_sae_free(sae);
}

static void check_errors(const char *fixtures) {
    char path[4096];
    sl_err err = {{0}};
    snprintf(path, sizeof path, "%s/planted/sae_badarch", fixtures);
    CHECK(sl_sae_load(path, &err) == NULL);
    CHECK_MSG(err.msg, "cfg.json");
    CHECK_MSG(err.msg, "unknown architecture 'quantum'");
    snprintf(path, sizeof path, "%s/planted/sae_noWenc", fixtures);
    CHECK(sl_sae_load(path, &err) == NULL);
    CHECK_MSG(err.msg, "sae_weights.safetensors");
    CHECK_MSG(err.msg, "missing tensor 'W_enc'");
    snprintf(path, sizeof path, "%s/planted/no_such_sae", fixtures);
    CHECK(sl_sae_load(path, &err) == NULL);
    CHECK_MSG(err.msg, path);
}

int main(int argc, char **argv) {
    if (argc < 2) return fprintf(stderr, "usage: %s FIXTURES\n", argv[0]), 2;
    char list[4096], line[256];
    snprintf(list, sizeof list, "%s/sae/cases.txt", argv[1]);
    FILE *f = fopen(list, "r");
    CHECK(f != NULL);
    int n = 0;
    while (f && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        if (!*line) continue;
        check_case(argv[1], line);
        n++;
    }
    if (f) fclose(f);
    CHECK(n >= 12);
    check_errors(argv[1]);
    CHECK_DONE();
}
