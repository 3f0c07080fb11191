/* test_gpu_parity.c: the CUDA backend against the CPU backend, on a GPU.
 *
 * Always (no GPU needed): device selection. "auto" runs on the CPU where there is
 * no usable device or no CUDA module; "cuda" then fails with the reason; a
 * missing module ($SAELITE_CUDA_MODULE pointing nowhere) is handled the same way.
 *
 * With a device (the "cuda" backend opens): every SAE fixture case as stored
 * activations, and tests/data/gpt2_tiny at every hook with random standard /
 * topk / jumprelu / gated SAEs, centring and excluded rows, in fp32: the CSR must
 * match the CPU backend's under the rule of parity.h (activations within 1e-4,
 * same structure except within 1e-6 of a threshold), and the reconstruction sums
 * (explained variance) must match the CPU's: the same rows, err_sq within 1e-3
 * relative, x_sq and x_sum within 1e-4. tf32 is run and reported,
 * not held to that rule. Then a benchmark (tokens/s of CPU and CUDA, SAE encode of
 * stored activations, d_in 768, d_sae 24576, and the tiny model + SAE).
 * Without a device it prints "GPU parity test skipped: no CUDA device" and passes.
 * argv[1]: the fixtures dir; SAELITE_SOURCE_DIR: the source root. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "check.h"
#include "model.h"
#include "parity.h"
#include "sae.h"
#include "safetensors.h"
#include "test_util.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static sl_backend_setup setup_of(const sl_sae *sae, const sl_model *model, sl_hook hook, int center, uint32_t B,
                                 uint32_t T, int tf32) {
    sl_backend_setup s;
    memset(&s, 0, sizeof s);
    s.sae = sae;
    s.model = model;
    s.hook = hook;
    s.center = center;
    s.max_seqs = B;
    s.seq_len = T;
    s.fast_math = tf32;
    return s;
}

/* Runs one batch on both backends and compares; returns violations. */
static uint64_t compare_batch(const sl_backend_setup *s, const sl_batch_in *in, const char *label, int tf32,
                              parity_stats *out) {
    sl_err err = {{0}};
    sl_backend *cpu = sl_backend_cpu_new(s, &err);
    sl_backend *gpu = sl_backend_open("cuda", s, &err);
    CHECK(cpu && gpu);
    if (!cpu || !gpu) {
        fprintf(stderr, "%s: %s\n", label, err.msg);
        if (cpu) cpu->ops->free(cpu);
        if (gpu) gpu->ops->free(gpu);
        return 1;
    }
    const uint32_t rows = in->n_seq * in->seq_len;
    sl_csr_builder a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    CHECK(sl_csr_reset(&a, rows, &err) == 0 && sl_csr_reset(&b, rows, &err) == 0);
    /* reconstruction sums of both (the GPU's from its own CSR, k_recon_rows) */
    const int D = s->sae->d_in;
    sl_recon_sums qc = {0, 0, 0, calloc((size_t)D, sizeof(double))}, qg = {0, 0, 0, calloc((size_t)D, sizeof(double))};
    sl_batch_in ic = *in, ig = *in;
    ic.recon = &qc;
    ig.recon = &qg;
    CHECK(cpu->ops->run(cpu, &ic, &a, &err) == 0);
    int rc = gpu->ops->run(gpu, &ig, &b, &err);
    CHECK(rc == 0);
    if (rc) fprintf(stderr, "%s: %s\n", label, err.msg);
    uint64_t bad = 0;
    if (!tf32) {
        bad = parity_compare(&a, &b, s->sae->threshold, s->sae->arch == SL_ARCH_TOPK, out, label);
        CHECK(bad == 0);
        double de = fabs(qg.err_sq - qc.err_sq) / (1e-12 + qc.err_sq), dx = fabs(qg.x_sq - qc.x_sq) / (1e-12 + qc.x_sq);
        double ds = 0;
        for (int i = 0; i < D; i++) {
            double d = fabs(qg.x_sum[i] - qc.x_sum[i]) / (1.0 + fabs(qc.x_sum[i]));
            if (d > ds) ds = d;
        }
        CHECK(qg.rows == qc.rows && de < 1e-3 && dx < 1e-4 && ds < 1e-4);
        if (qg.rows != qc.rows || de >= 1e-3 || dx >= 1e-4 || ds >= 1e-4)
            fprintf(stderr, "%s: reconstruction rows %llu/%llu err_sq %.9g/%.9g x_sq %.9g/%.9g x_sum %.3g\n", label,
                    (unsigned long long)qg.rows, (unsigned long long)qc.rows, qg.err_sq, qc.err_sq, qg.x_sq, qc.x_sq, ds);
    } else {
        parity_compare(&a, &b, s->sae->threshold, s->sae->arch == SL_ARCH_TOPK, out, label);
    }
    free(qc.x_sum);
    free(qg.x_sum);
    sl_csr_free(&a);
    sl_csr_free(&b);
    cpu->ops->free(cpu);
    gpu->ops->free(gpu);
    return bad;
}

static void parity_sae_cases(const char *fixtures) {
    char list[4096], line[256];
    snprintf(list, sizeof list, "%s/sae/cases.txt", fixtures);
    FILE *f = fopen(list, "r");
    CHECK(f != NULL);
    while (f && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        if (!*line) continue;
        char sae_path[4096], expect_path[4096];
        size_t n = strlen(line), sl = strlen(".safetensors");
        int bare = n > sl && strcmp(line + n - sl, ".safetensors") == 0;
        snprintf(sae_path, sizeof sae_path, "%s/sae/%s", fixtures, line);
        snprintf(expect_path, sizeof expect_path, "%s/sae/%.*s.expect.safetensors", fixtures,
                 (int)(bare ? n - sl : n), line);
        sl_err err = {{0}};
        sl_sae *sae = sl_sae_load(sae_path, &err);
        sl_st *ex = sl_st_open(expect_path, &err);
        CHECK(sae && ex);
        if (sae && ex) {
            const sl_tensor *xt = sl_st_get(ex, "x");
            uint32_t rows = (uint32_t)xt->shape[0];
            int64_t xs[2] = {rows, sae->d_in};
            float *x = sl_st_load_f32(ex, "x", 2, xs, &err);
            uint8_t *inc = malloc(rows);
            for (uint32_t r = 0; r < rows; r++) inc[r] = r % 5 != 2;
            sl_hook none = {0, SL_HOOK_RESID_PRE};
            sl_backend_setup s = setup_of(sae, NULL, none, 0, rows, 1, 0);
            sl_batch_in in = {rows, 1, x, NULL, inc, NULL};
            parity_stats st;
            compare_batch(&s, &in, line, 0, &st);
            printf("  %-28s %llu nonzeros, %llu matched, %llu near a threshold, max |diff| %.2g\n", line,
                   (unsigned long long)st.nnz_a, (unsigned long long)st.matched,
                   (unsigned long long)st.near_threshold, st.max_abs_diff);
            free(x);
            free(inc);
        }
        sl_st_close(ex);
        sl_sae_free(sae);
    }
    if (f) fclose(f);
}

static void parity_model(const char *dir) {
    sl_err err = {{0}};
    sl_model *model = sl_model_load(dir, &err);
    CHECK(model != NULL);
    if (!model) return;
    int B = 0, T = 0;
    int32_t *tok = read_tokens(dir, &B, &T);
    const sl_model_config *c = sl_model_config_of(model);
    const uint32_t rows = (uint32_t)(B * T);
    uint8_t *inc = malloc(rows);
    for (uint32_t r = 0; r < rows; r++) inc[r] = r % 7 != 0;
    sl_arch archs[] = {SL_ARCH_STANDARD, SL_ARCH_TOPK, SL_ARCH_JUMPRELU, SL_ARCH_GATED};
    for (int ai = 0; ai < 4; ai++) {
        sl_sae *sae = random_sae(c->d_model, 128, archs[ai], SL_NORM_NONE);
        for (int l = 0; l < c->n_layer; l++)
            for (int k = 0; k < 4; k++)
                for (int tf32 = 0; tf32 < 2; tf32++) {
                    sl_hook hook = {l, (sl_hook_kind)k};
                    sl_backend_setup s = setup_of(sae, model, hook, (l + k) % 2, (uint32_t)B, (uint32_t)T, tf32);
                    sl_batch_in in = {(uint32_t)B, (uint32_t)T, NULL, tok, inc, NULL};
                    char label[128];
                    snprintf(label, sizeof label, "%s layer %d hook %d %s", sl_arch_name(sae->arch), l, k,
                             tf32 ? "tf32" : "fp32");
                    parity_stats st;
                    compare_batch(&s, &in, label, tf32, &st);
                    if (l == c->n_layer - 1 && k == 3)
                        printf("  model %s, %-8s last hook %s: %llu nonzeros, %llu matched, %llu near a threshold, "
                               "max |diff| %.2g\n",
                               dir, sl_arch_name(sae->arch), tf32 ? "tf32" : "fp32", (unsigned long long)st.nnz_a,
                               (unsigned long long)st.matched, (unsigned long long)st.near_threshold,
                               st.max_abs_diff);
                }
        sl_sae_free(sae);
    }
    free(inc);
    free(tok);
    sl_model_free(model);
}

/* tokens/s of the SAE encode of stored activations, d_in 768, d_sae 24576. */
static void bench(void) {
    const int D = 768, S = 24576;
    const uint32_t T = 128, B = 32, batches = 8; /* 4096 tokens a batch */
    sl_sae *sae = random_sae(D, S, SL_ARCH_STANDARD, SL_NORM_NONE);
    for (int i = 0; i < S; i++) sae->b_enc[i] = -2.0f; /* sparse: a few dozen features a token */
    const size_t rows = (size_t)B * T;
    float *x = malloc(rows * D * sizeof(float));
    for (size_t i = 0; i < rows * D; i++) x[i] = frand();
    uint8_t *inc = malloc(rows);
    memset(inc, 1, rows);
    sl_hook none = {0, SL_HOOK_RESID_PRE};
    sl_batch_in in = {B, T, x, NULL, inc, NULL};
    sl_csr_builder out;
    memset(&out, 0, sizeof out);
    sl_err err = {{0}};
    for (int dev = 0; dev < 3; dev++) {
        sl_backend_setup s = setup_of(sae, NULL, none, 0, B, T, dev == 2);
        sl_backend *b = dev == 0 ? sl_backend_cpu_new(&s, &err) : sl_backend_open("cuda", &s, &err);
        CHECK(b != NULL);
        if (!b) continue;
        uint32_t n = dev == 0 ? 1 : batches;
        double t0 = now();
        for (uint32_t i = 0; i < n; i++) {
            CHECK(sl_csr_reset(&out, (uint32_t)rows, &err) == 0);
            CHECK(b->ops->run(b, &in, &out, &err) == 0);
        }
        double dt = now() - t0;
        char desc[256];
        b->ops->describe(b, desc, sizeof desc);
        printf("benchmark: SAE encode d_in %d d_sae %d, %u x %zu tokens on %s: %.0f tokens/s (%.1f nonzeros/token)\n",
               D, S, n, rows, desc, (double)n * (double)rows / dt, (double)out.row_ptr[out.n_rows] / (double)rows);
        b->ops->free(b);
    }
    sl_csr_free(&out);
    free(x);
    free(inc);
    sl_sae_free(sae);
}

/* Device selection without a usable device, or without the module. */
static void check_selection(const char *fixtures, int have_gpu) {
    char path[4096];
    snprintf(path, sizeof path, "%s/sae/standard_f32", fixtures);
    sl_err err = {{0}};
    sl_sae *sae = sl_sae_load(path, &err);
    CHECK(sae != NULL);
    if (!sae) return;
    sl_hook none = {0, SL_HOOK_RESID_PRE};
    sl_backend_setup s = setup_of(sae, NULL, none, 0, 4, 8, 0);
    char desc[256];
    const char *saved = getenv("SAELITE_CUDA_MODULE");
    char *saved_copy = saved ? strdup(saved) : NULL;
    for (int missing = 0; missing < 2; missing++) {
        if (missing) setenv("SAELITE_CUDA_MODULE", "/nonexistent/saelite_cuda.so", 1);
        if (have_gpu && !missing) continue;
        sl_backend *b = sl_backend_open("auto", &s, &err);
        CHECK(b != NULL);
        if (b) {
            b->ops->describe(b, desc, sizeof desc);
            CHECK(strncmp(desc, "cpu", 3) == 0);
            b->ops->free(b);
        }
        CHECK(sl_backend_open("cuda", &s, &err) == NULL);
        CHECK_MSG(err.msg, "device 'cuda': ");
        /* SAELITE_CUDA_BUILT: CMake says whether saelite_cuda.so was built beside this test */
        CHECK_MSG(err.msg, missing                ? "cannot load the CUDA module /nonexistent/saelite_cuda.so"
                           : SAELITE_CUDA_BUILT ? "no usable CUDA device (cudaGetDeviceCount: "
                                                : "cannot load the CUDA module");
        printf("  %s: auto runs on the cpu; cuda fails: %s\n", missing ? "module missing" : "no device", err.msg);
    }
    if (saved_copy)
        setenv("SAELITE_CUDA_MODULE", saved_copy, 1);
    else
        unsetenv("SAELITE_CUDA_MODULE");
    free(saved_copy);
    CHECK(sl_backend_open("tpu", &s, &err) == NULL);
    CHECK_MSG(err.msg, "unknown device 'tpu'");
    sl_sae_free(sae);
}

int main(int argc, char **argv) {
    if (argc < 2) return fprintf(stderr, "usage: %s FIXTURES [--bench]\n", argv[0]), 2;
    const char *src = getenv("SAELITE_SOURCE_DIR");
    char tiny[4200], tiny16[4200], path[4096];
    snprintf(tiny, sizeof tiny, "%s/tests/data/gpt2_tiny", src ? src : ".");
    snprintf(tiny16, sizeof tiny16, "%s/tests/data/gpt2_tiny_f16", src ? src : ".");

    /* Is there a device? Open the CUDA backend once. */
    snprintf(path, sizeof path, "%s/sae/standard_f32", argv[1]);
    sl_err err = {{0}};
    sl_sae *sae = sl_sae_load(path, &err);
    CHECK(sae != NULL);
    if (!sae) CHECK_DONE();
    sl_hook none = {0, SL_HOOK_RESID_PRE};
    sl_backend_setup s = setup_of(sae, NULL, none, 0, 4, 8, 0);
    sl_backend *gpu = sl_backend_open("cuda", &s, &err);
    int have_gpu = gpu != NULL;
    char desc[256] = "";
    if (gpu) {
        gpu->ops->describe(gpu, desc, sizeof desc);
        gpu->ops->free(gpu);
    }
    sl_sae_free(sae);

    printf("device selection:\n");
    check_selection(argv[1], have_gpu);
    if (!have_gpu) {
        printf("GPU parity test skipped: no CUDA device (%s)\n", err.msg);
        CHECK_DONE();
    }
    printf("GPU parity test on %s\nSAE fixture cases (stored activations):\n", desc);
    parity_sae_cases(argv[1]);
    printf("models:\n");
    parity_model(tiny);
    parity_model(tiny16);
    if (argc > 2 && strcmp(argv[2], "--bench") == 0) bench();
    CHECK_DONE();
}
