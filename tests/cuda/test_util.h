/* test_util.h: helpers shared by the CUDA tests (C and C++): a deterministic
 * random generator, the tokens of a model fixture, an SAE with random weights. */
#ifndef SAELITE_TESTS_CUDA_UTIL_H
#define SAELITE_TESTS_CUDA_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "sae.h"
#include "safetensors.h"

static uint32_t rng_state = 12345;
static inline float frand(void) { /* uniform [-1, 1) */
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)((rng_state >> 8) & 0xffffff) / 8388608.0f - 1.0f;
}

static inline int32_t *read_tokens(const char *dir, int *B, int *T) {
    char path[4200];
    snprintf(path, sizeof path, "%s/expected.safetensors", dir);
    sl_err err = {{0}};
    sl_st *ex = sl_st_open(path, &err);
    if (!ex) return fprintf(stderr, "%s\n", err.msg), (int32_t *)NULL;
    const sl_tensor *tt = sl_st_get(ex, "tokens");
    *B = (int)tt->shape[0];
    *T = (int)tt->shape[1];
    int64_t *t64 = (int64_t *)malloc(tt->numel * sizeof(int64_t));
    int32_t *tok = (int32_t *)malloc(tt->numel * sizeof(int32_t));
    sl_convert_to_i64(tt->data, tt->dtype, tt->numel, t64);
    for (size_t i = 0; i < tt->numel; i++) tok[i] = (int32_t)t64[i];
    free(t64);
    sl_st_close(ex);
    return tok;
}

/* An SAE of the given architecture with random weights, d_in = D. */
static inline sl_sae *random_sae(int D, int S, sl_arch arch, sl_norm norm) {
    sl_sae *s = (sl_sae *)calloc(1, sizeof *s);
    s->d_in = D;
    s->d_sae = S;
    s->arch = arch;
    s->k = 5;
    s->norm = norm;
    s->apply_b_dec_to_input = 1;
    s->W_enc = (float *)malloc((size_t)D * S * sizeof(float));
    s->b_enc = (float *)malloc((size_t)S * sizeof(float));
    s->b_dec = (float *)malloc((size_t)D * sizeof(float));
    for (size_t i = 0; i < (size_t)D * S; i++) s->W_enc[i] = frand() * 0.5f;
    for (int i = 0; i < S; i++) s->b_enc[i] = frand() * 0.3f - 0.2f;
    for (int i = 0; i < D; i++) s->b_dec[i] = frand() * 0.1f;
    s->W_dec = (float *)malloc((size_t)S * D * sizeof(float)); /* reconstruction quality */
    for (size_t i = 0; i < (size_t)S * D; i++) s->W_dec[i] = frand() * 0.2f;
    s->apply_b_dec_to_input = arch != SL_ARCH_JUMPRELU; /* both ways */
    if (arch == SL_ARCH_JUMPRELU) {
        s->threshold = (float *)malloc((size_t)S * sizeof(float));
        for (int i = 0; i < S; i++) s->threshold[i] = fabsf(frand()) * 0.5f;
    }
    if (arch == SL_ARCH_GATED) {
        s->W_mag = (float *)malloc((size_t)D * S * sizeof(float));
        s->b_mag = (float *)malloc((size_t)S * sizeof(float));
        for (size_t i = 0; i < (size_t)D * S; i++) s->W_mag[i] = s->W_enc[i] * 1.3f;
        for (int i = 0; i < S; i++) s->b_mag[i] = frand() * 0.2f;
    }
    if (arch == SL_ARCH_TOPK) {
        s->dec_norm = (float *)malloc((size_t)S * sizeof(float));
        for (int i = 0; i < S; i++) s->dec_norm[i] = 0.5f + fabsf(frand());
    }
    return s;
}

#endif
