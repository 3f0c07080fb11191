/* sae_math.h: per-element SAE math shared by the CPU encoder and the CUDA kernels,
 * so that the CPU tests exercise exactly the arithmetic the GPU runs. */
#ifndef SAELITE_SAE_MATH_H
#define SAELITE_SAE_MATH_H

#include <math.h>

#include "dtype.h" /* SL_HD */

static inline SL_HD float sl_relu(float pre) { return pre > 0.0f ? pre : 0.0f; }

/* JumpReLU: relu(pre) * [pre > threshold]. */
static inline SL_HD float sl_jumprelu(float pre, float threshold) {
    return pre > threshold ? sl_relu(pre) : 0.0f;
}

/* Gated: [gate_pre > 0] * relu(mag_pre). */
static inline SL_HD float sl_gated(float gate_pre, float mag_pre) {
    return gate_pre > 0.0f ? sl_relu(mag_pre) : 0.0f;
}

/* Multiplier that maps x to x * sqrt(d) / ||x|| (constant_norm_rescale). */
static inline SL_HD float sl_constant_norm_scale(double sum_sq, int d) {
    return sum_sq > 0.0 ? (float)(sqrt((double)d) / sqrt(sum_sq)) : 0.0f;
}

/* layer_norm as SAELens applies it: (x - mean) / (std + 1e-5) with the unbiased
 * (N - 1) standard deviation of torch.std. Returns 1 / (std + eps). */
static inline SL_HD float sl_layer_norm_inv(double centered_sum_sq, int d) {
    double var = d > 1 ? centered_sum_sq / (double)(d - 1) : 0.0;
    return (float)(1.0 / (sqrt(var) + 1e-5));
}

/* Top-k selection on the GPU is a radix select over these keys: an unsigned key
 * with the order of the floats (-0 and +0 equal; NaN sorts above +inf). */
static inline SL_HD uint32_t sl_f32_order_key(float v) {
    uint32_t u = sl_f32_to_bits(v == 0.0f ? 0.0f : v);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* What a top-k row keeps at a feature: relu(pre) when selected (among the k
 * largest, ties to the lower feature id), else 0. */
static inline SL_HD float sl_topk_value(float pre, int selected) { return selected ? sl_relu(pre) : 0.0f; }

#endif
