/* test_sae.c: every SAE case of FIXTURES/sae encodes to the activations the
 * pure-Python reference (tests/fixtures/sae_reference.py) computed, and the top-k
 * encoder selects bit for bit what the plain full-row quickselect did on random
 * rows with many ties, negative values and decoder-norm rescaling. */
#include <stdint.h>
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

/* The former top-k encoder, kept as the reference: a copy of the row, a
 * quickselect for the k-th largest, then the ties at it to the lowest ids. */
static float ref_kth_largest(float *v, int n, int k) {
    int lo = 0, hi = n - 1, target = k - 1;
    while (lo < hi) {
        float pivot = v[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (v[i] > pivot) i++;
            while (v[j] < pivot) j--;
            if (i <= j) {
                float t = v[i];
                v[i] = v[j];
                v[j] = t;
                i++;
                j--;
            }
        }
        if (target <= j)
            hi = j;
        else if (target >= i)
            lo = i;
        else
            return v[target];
    }
    return v[target];
}

static void ref_topk_row(float *row, int d_sae, int k, float *scratch) {
    if (k >= d_sae) {
        for (int f = 0; f < d_sae; f++) row[f] = row[f] > 0.0f ? row[f] : 0.0f;
        return;
    }
    memcpy(scratch, row, (size_t)d_sae * sizeof(float));
    float kth = ref_kth_largest(scratch, d_sae, k);
    int above = 0;
    for (int f = 0; f < d_sae; f++) above += row[f] > kth;
    int ties_left = k - above;
    for (int f = 0; f < d_sae; f++) {
        float v = row[f];
        if (v > kth)
            row[f] = v > 0.0f ? v : 0.0f;
        else if (v == kth && ties_left > 0) {
            row[f] = v > 0.0f ? v : 0.0f;
            ties_left--;
        } else
            row[f] = 0.0f;
    }
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void) { /* xorshift64*: the same rows on every run */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545f4914f6cdd1dull) >> 32);
}

/* A value of a row of kind `kind`: continuous, few distinct values (many ties,
 * +0 and -0 among them), mostly negative, or all one value. */
static float rnd_value(int kind, float one) {
    static const float levels[] = {-2.0f, -1.0f, -0.0f, 0.0f, 0.25f, 0.5f, 1.0f, 1.5f, 3.0f};
    switch (kind) {
    case 0: return (float)rnd() / 4294967296.0f * 8.0f - 4.0f;
    case 1: return levels[rnd() % 9];
    case 2: return rnd() % 50 == 0 ? (float)(rnd() % 4) : -(float)(rnd() % 1000) / 100.0f;
    case 3: return rnd() % 3 ? 1.0f : (float)rnd() / 4294967296.0f;
    default: return one;
    }
}

/* Rows [n, d_sae] go through sl_sae_encode exactly: x is the identity, W_enc the
 * rows, b_enc 0, so the pre-activations are the rows themselves. */
static void check_topk_case(int n, int d_sae, int k, int kind, int rescale) {
    sl_sae *sae = calloc(1, sizeof *sae);
    CHECK(sae != NULL);
    if (!sae) return;
    sae->arch = SL_ARCH_TOPK;
    sae->d_in = n;
    sae->d_sae = d_sae;
    sae->k = k;
    sae->rescale_acts_by_decoder_norm = rescale;
    sae->W_enc = malloc((size_t)n * (size_t)d_sae * sizeof(float));
    sae->b_enc = calloc((size_t)d_sae, sizeof(float));
    sae->b_dec = calloc((size_t)n, sizeof(float));
    if (rescale) sae->dec_norm = malloc((size_t)d_sae * sizeof(float));
    float *x = calloc((size_t)n * (size_t)n, sizeof(float));
    float *got = malloc((size_t)n * (size_t)d_sae * sizeof(float));
    float *want = malloc((size_t)n * (size_t)d_sae * sizeof(float));
    float *scratch = malloc((size_t)d_sae * sizeof(float));
    float *ws = malloc(sl_sae_workspace_floats(sae, n) * sizeof(float));
    CHECK(sae->W_enc && sae->b_enc && sae->b_dec && (!rescale || sae->dec_norm) && x && got && want && scratch && ws);
    if (sae->W_enc && sae->b_enc && sae->b_dec && (!rescale || sae->dec_norm) && x && got && want && scratch && ws) {
        float one = (float)(rnd() % 5) - 2.0f;
        for (size_t i = 0; i < (size_t)n * (size_t)d_sae; i++) sae->W_enc[i] = rnd_value(kind, one);
        if (rescale) /* half exact (powers of two keep ties), half not */
            for (int f = 0; f < d_sae; f++)
                sae->dec_norm[f] = f % 2 ? (float)(1u << (rnd() % 3)) : 0.5f + (float)rnd() / 4294967296.0f;
        for (int r = 0; r < n; r++) x[(size_t)r * (size_t)n + (size_t)r] = 1.0f;
        for (int r = 0; r < n; r++) {
            float *row = want + (size_t)r * (size_t)d_sae;
            memcpy(row, sae->W_enc + (size_t)r * (size_t)d_sae, (size_t)d_sae * sizeof(float));
            if (rescale)
                for (int f = 0; f < d_sae; f++) row[f] *= sae->dec_norm[f];
            ref_topk_row(row, d_sae, k, scratch);
        }
        sl_sae_encode(sae, x, n, got, ws);
        size_t bad = 0, first = 0;
        for (size_t i = 0; i < (size_t)n * (size_t)d_sae; i++)
            if (memcmp(&got[i], &want[i], sizeof(float)) != 0 && bad++ == 0) first = i;
        if (bad)
            fprintf(stderr, "topk n %d d_sae %d k %d kind %d rescale %d: %zu differ, first row %zu feature %zu: "
                            "got %.9g want %.9g\n", n, d_sae, k, kind, rescale, bad, first / (size_t)d_sae,
                    first % (size_t)d_sae, got[first], want[first]);
        CHECK(bad == 0);
    }
    free(x);
    free(got);
    free(want);
    free(scratch);
    free(ws);
    sl_sae_free(sae);
}

static void check_topk_random(void) {
    static const int d_saes[] = {1, 7, 16, 33, 64, 300, 2048, 8192};
    int cases = 0;
    for (size_t di = 0; di < sizeof d_saes / sizeof d_saes[0]; di++) {
        int d_sae = d_saes[di];
        int ks[] = {1, 2, 3, d_sae / 8, d_sae / 4 - 1, d_sae / 4, d_sae / 2, d_sae - 1, d_sae, 64};
        for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
            int k = ks[ki];
            if (k < 1 || k > d_sae) continue;
            for (int kind = 0; kind < 5; kind++) {
                /* 40 rows of 8192 take the threaded path; the smaller ones stay serial */
                int n = d_sae >= 2048 ? 40 : 1 + (int)(rnd() % 9);
                check_topk_case(n, d_sae, k, kind, (int)(rnd() % 2));
                cases++;
            }
        }
    }
    printf("  top-k selection: %d random cases match the full-row quickselect\n", cases);
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
    check_topk_random();
    setenv("SAELITE_THREADS", "3", 1); /* more workers than cores: the items interleave */
    check_topk_random();
    CHECK_DONE();
}
