/* model_math.h: per-element and per-row transformer math shared by the CPU
 * forward pass (model.c) and the CUDA kernels, so that the CPU tests exercise
 * exactly the arithmetic the GPU runs. Everything here is header-only and
 * SL_HD (host + device). */
#ifndef SAELITE_MODEL_MATH_H
#define SAELITE_MODEL_MATH_H

#include <math.h>

#include "dtype.h" /* SL_HD */

/* GELU, tanh approximation (HF "gelu_new" / "gelu_pytorch_tanh" / "gelu_fast"):
 * 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3), computed as the equal
 * x / (1 + exp(-2u)): one expf instead of tanhf (about twice as fast) and no
 * cancellation in 1 + tanh(u) for negative x. Large |u| gives x or -0. */
static inline SL_HD float sl_gelu_tanh(float x) {
    const float k = 0.7978845608028654f; /* sqrt(2 / pi) */
    float u = k * (x + 0.044715f * x * x * x);
    return x / (1.0f + expf(-2.0f * u));
}

/* GELU, exact (HF "gelu", torch.nn.functional.gelu): 0.5 x (1 + erf(x / sqrt(2))). */
static inline SL_HD float sl_gelu_erf(float x) {
    return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f));
}

/* 1 / sqrt(var + eps): the LayerNorm scale from the biased (N) variance. */
static inline SL_HD float sl_ln_rstd(double var, float eps) {
    return (float)(1.0 / sqrt(var + (double)eps));
}

/* Affine step of LayerNorm for one element. */
static inline SL_HD float sl_ln_apply(float x, float mean, float rstd, float w, float b) {
    return (x - mean) * rstd * w + b;
}

/* The mean and 1 / sqrt(var + eps) of one row of n, var the biased (divide by n)
 * variance: two passes, double accumulation. */
static inline SL_HD void sl_ln_stats(const float *x, int n, float eps, float *mean, float *rstd) {
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += x[i];
    double mu = sum / (double)n;
    double ss = 0.0;
    for (int i = 0; i < n; i++) {
        double c = (double)x[i] - mu;
        ss += c * c;
    }
    *rstd = sl_ln_rstd(ss / (double)n, eps);
    *mean = (float)mu;
}

/* torch.nn.LayerNorm of one row of n: y = (x - mean) / sqrt(var + eps) * w + b.
 * y may alias x. */
static inline SL_HD void sl_layer_norm_row(const float *x, const float *w, const float *b, float *y, int n,
                                           float eps) {
    float m, rstd;
    sl_ln_stats(x, n, eps, &m, &rstd);
    for (int i = 0; i < n; i++) y[i] = sl_ln_apply(x[i], m, rstd, w[i], b[i]);
}

/* TransformerLens's LayerNormPre (a LayerNorm whose weight and bias were folded
 * into the next layer): (x - mean) / sqrt(var + eps). y may alias x. */
static inline SL_HD void sl_layer_norm_pre_row(const float *x, float *y, int n, float eps) {
    float m, rstd;
    sl_ln_stats(x, n, eps, &m, &rstd);
    for (int i = 0; i < n; i++) y[i] = (x[i] - m) * rstd;
}

/* RMSNorm of one row as transformers' LlamaRMSNorm computes it in f32:
 * w * (x / sqrt(mean(x^2) + eps)); w NULL: without the weight (TransformerLens's
 * RMSNormPre). The mean of squares is accumulated in double. y may alias x. */
static inline SL_HD void sl_rms_norm_row(const float *x, const float *w, float *y, int n, float eps) {
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * (double)x[i];
    float r = sl_ln_rstd(ss / (double)n, eps);
    if (w)
        for (int i = 0; i < n; i++) y[i] = w[i] * (x[i] * r);
    else
        for (int i = 0; i < n; i++) y[i] = x[i] * r;
}

/* SiLU (swish): x * sigmoid(x). */
static inline SL_HD float sl_silu(float x) { return x / (1.0f + expf(-x)); }

/* Rotary embedding of one head of n (even) at position pos, in transformers'
 * layout (rotate_half: the first half pairs with the second): for i < n/2, with
 * a = x[i], b = x[i + n/2], c = cos(pos inv_freq[i]), s = sin(...):
 * x[i] = a c - b s, x[i + n/2] = b c + a s. Angles in f32, as transformers. */
static inline SL_HD void sl_rope_half(float *x, int n, const float *inv_freq, int pos) {
    const int h = n / 2;
    for (int i = 0; i < h; i++) {
        float ang = (float)pos * inv_freq[i], c = cosf(ang), s = sinf(ang);
        float a = x[i], b = x[i + h];
        x[i] = a * c + (-b) * s;
        x[i + h] = b * c + a * s;
    }
}

/* One unnormalized softmax term: exp(score - row max). */
static inline SL_HD float sl_softmax_exp(float score, float mx) { return expf(score - mx); }

/* Causal softmax of one attention row of n scores: the first len (1 <= len <= n)
 * are softmaxed with the max subtracted; the masked rest [len, n) become 0,
 * exactly what softmax gives for scores masked with finfo.min. */
static inline SL_HD void sl_softmax_causal_row(float *row, int len, int n) {
    float mx = row[0];
    for (int j = 1; j < len; j++) mx = row[j] > mx ? row[j] : mx;
    float sum = 0.0f;
    for (int j = 0; j < len; j++) {
        float e = sl_softmax_exp(row[j], mx);
        row[j] = e;
        sum += e;
    }
    float inv = 1.0f / sum;
    for (int j = 0; j < len; j++) row[j] *= inv;
    for (int j = len; j < n; j++) row[j] = 0.0f;
}

/* The mean TransformerLens's centred writing weights remove from a row, as the
 * f32 that is subtracted (the sum is accumulated in double). */
static inline SL_HD float sl_center_mean(double sum, int n) { return (float)(sum / (double)n); }

#endif
