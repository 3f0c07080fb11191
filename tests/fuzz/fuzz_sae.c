/* fuzz_sae.c: loading SAEs (engine/sae.c): cfg.json parsing, the tensors each
 * architecture needs, and the encoder run on what was loaded.
 *
 * Input: one selector byte, then the file that is fuzzed.
 *   selector < 0x80: the rest is cfg.json, written beside one of four fixed, valid
 *     sae_weights.safetensors (selector & 3: 0 = F32 d_in 4, d_sae 8, every tensor of
 *     every architecture; 1 = F16 with log_threshold; 2 = BF16 missing b_enc, b_mag
 *     and r_mag; 3 = F32 d_in 2, d_sae 3). selector & 4: load through the weights
 *     file's path instead of the directory.
 *   selector >= 0x80: the rest is a bare .safetensors SAE (no cfg.json), named
 *     sae_weights.safetensors when selector & 1.
 * A loaded SAE must satisfy sae.h (sizes, architecture, the tensors it needs) and
 * encode a few rows; with the fixed (finite) weights the activations must be
 * finite and non-negative, and a top-k SAE keeps at most k per row. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "fuzz_common.h"
#include "sae.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static const char *weights_dir[4];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    openblas_set_num_threads(1);
    const fz_tensor full[] = {
        {"W_enc", "F32", 2, {4, 8}}, {"b_enc", "F32", 1, {8}},     {"W_dec", "F32", 2, {8, 4}},
        {"b_dec", "F32", 1, {4}},    {"threshold", "F32", 1, {8}}, {"b_gate", "F32", 1, {8}},
        {"b_mag", "F32", 1, {8}},    {"r_mag", "F32", 1, {8}},
    };
    const fz_tensor half[] = {
        {"W_enc", "F16", 2, {4, 8}}, {"b_enc", "F16", 1, {8}}, {"W_dec", "F16", 2, {8, 4}},
        {"b_dec", "F16", 1, {4}},    {"log_threshold", "F16", 1, {8}},
    };
    const fz_tensor partial[] = {
        {"W_enc", "BF16", 2, {4, 8}}, {"W_dec", "BF16", 2, {8, 4}},
        {"b_dec", "BF16", 1, {4}},    {"b_gate", "BF16", 1, {8}},
    };
    const fz_tensor small[] = {
        {"W_enc", "F32", 2, {2, 3}}, {"b_enc", "F32", 1, {3}},     {"W_dec", "F32", 2, {3, 2}},
        {"b_dec", "F32", 1, {2}},    {"threshold", "F32", 1, {3}},
    };
    const struct {
        const fz_tensor *t;
        int n;
    } sets[4] = {{full, 8}, {half, 5}, {partial, 4}, {small, 5}};
    for (int i = 0; i < 4; i++) {
        char name[16], file[64];
        snprintf(name, sizeof name, "sae%d", i);
        weights_dir[i] = strdup(fz_mkdir(name));
        snprintf(file, sizeof file, "sae%d/sae_weights.safetensors", i);
        size_t len;
        unsigned char *st = fz_st_build(sets[i].t, sets[i].n, 17u + (uint32_t)i, &len);
        fz_write_file(fz_path(file), st, len);
        free(st);
    }
    fz_mkdir("bare");
    return 0;
}

static void check_and_encode(const sl_sae *sae, int strict) {
    FZ_ASSERT(sae->d_in >= 1 && sae->d_sae >= 1);
    FZ_ASSERT(memchr(sae->path, 0, sizeof sae->path));
    FZ_ASSERT(memchr(sae->hook_name, 0, sizeof sae->hook_name));
    FZ_ASSERT(memchr(sae->model_name, 0, sizeof sae->model_name));
    FZ_ASSERT(sae->W_enc && sae->b_enc && sae->b_dec);
    switch (sae->arch) {
    case SL_ARCH_STANDARD: break;
    case SL_ARCH_TOPK:
        FZ_ASSERT(sae->k >= 1); /* a missing k defaults to 100, even above d_sae: then all are kept */
        FZ_ASSERT(!sae->rescale_acts_by_decoder_norm || sae->dec_norm);
        break;
    case SL_ARCH_JUMPRELU: FZ_ASSERT(sae->threshold); break;
    case SL_ARCH_GATED: FZ_ASSERT(sae->W_mag && sae->b_mag); break;
    default: FZ_ASSERT(!"unknown architecture");
    }
    FZ_ASSERT(sae->norm == SL_NORM_NONE || sae->norm == SL_NORM_CONSTANT_NORM_RESCALE ||
              sae->norm == SL_NORM_LAYER_NORM);
    FZ_ASSERT(strcmp(sl_arch_name(sae->arch), "?") != 0);
    if ((size_t)sae->d_in * (size_t)sae->d_sae > (1u << 20)) return; /* keep each run fast */
    const int n = 3;
    float *x = malloc((size_t)n * (size_t)sae->d_in * sizeof *x);
    float *acts = malloc((size_t)n * (size_t)sae->d_sae * sizeof *acts);
    float *ws = malloc((sl_sae_workspace_floats(sae, n) + 1) * sizeof *ws);
    FZ_ASSERT(x && acts && ws);
    uint32_t state = 99;
    for (size_t i = 0; i < (size_t)n * (size_t)sae->d_in; i++) x[i] = 3.0f * fz_value(&state);
    sl_sae_encode(sae, x, n, acts, ws);
    if (strict) {
        for (int r = 0; r < n; r++) {
            int nonzero = 0;
            for (int f = 0; f < sae->d_sae; f++) {
                float a = acts[(size_t)r * (size_t)sae->d_sae + (size_t)f];
                FZ_ASSERT(isfinite(a) && a >= 0.0f);
                nonzero += a != 0.0f;
            }
            if (sae->arch == SL_ARCH_TOPK) FZ_ASSERT(nonzero <= sae->k);
        }
    }
    free(x);
    free(acts);
    free(ws);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    unsigned sel = data[0];
    const char *load_path;
    if (sel < 0x80) {
        int w = (int)(sel & 3);
        char cfg[64], file[64];
        snprintf(cfg, sizeof cfg, "sae%d/cfg.json", w);
        snprintf(file, sizeof file, "sae%d/sae_weights.safetensors", w);
        fz_write_file(fz_path(cfg), data + 1, size - 1);
        load_path = sel & 4 ? fz_path(file) : weights_dir[w];
    } else {
        load_path = fz_path(sel & 1 ? "bare/sae_weights.safetensors" : "bare/sae.safetensors");
        fz_write_file(load_path, data + 1, size - 1);
    }
    sl_err err;
    err.msg[0] = 0;
    sl_sae *sae = sl_sae_load(load_path, &err);
    if (!sae) {
        FZ_CHECK_ERR(err);
        return 0;
    }
    FZ_ACCEPTED(sl_arch_name(sae->arch));
    check_and_encode(sae, sel < 0x80);
    sl_sae_free(sae);
    return 0;
}
