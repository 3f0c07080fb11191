/* sae.h: sparse autoencoders in the SAELens format, and their encoder on the CPU.
 *
 * Accepted inputs:
 *   - a SAELens directory: cfg.json + sae_weights.safetensors (cfg keys of
 *     SAELens >= 6 and of earlier releases: hook_point, activation_fn_str,
 *     activation_fn_kwargs.k, boolean normalize_activations);
 *   - a bare .safetensors file with W_enc/b_enc/W_dec/b_dec (+ threshold, or
 *     b_gate/b_mag/r_mag); the architecture is inferred from the tensors present.
 * Tensors may be F32, F16 or BF16; they are converted to f32 once at load.
 *
 * Encode (the math SAELens uses):
 *   x'  = normalize(x) - b_dec * apply_b_dec_to_input
 *   pre = x' W_enc + b_enc
 *   standard: relu(pre)
 *   topk:     pre *= ||W_dec[f]|| if rescale_acts_by_decoder_norm; keep the k
 *             largest of pre per row, relu them, zero the rest
 *   jumprelu: relu(pre) * [pre > threshold]
 *   gated:    [x' W_enc + b_gate > 0] * relu(x' (W_enc * exp(r_mag)) + b_mag)
 *   normalize: none | constant_norm_rescale: x * sqrt(d_in) / ||x||
 *              | layer_norm: (x - mean) / (std + 1e-5), std with N-1 as torch.std
 *   "expected_average_only_in" is treated as none: its scale is folded into
 *   the weights when SAELens saves an inference SAE. */
#ifndef SAELITE_SAE_H
#define SAELITE_SAE_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

typedef enum sl_arch { SL_ARCH_STANDARD, SL_ARCH_TOPK, SL_ARCH_JUMPRELU, SL_ARCH_GATED } sl_arch;
typedef enum sl_norm { SL_NORM_NONE, SL_NORM_CONSTANT_NORM_RESCALE, SL_NORM_LAYER_NORM } sl_norm;

typedef struct sl_sae {
    char path[4096];       /* what the user named: directory or .safetensors */
    int d_in, d_sae;
    sl_arch arch;
    int k;                 /* topk only */
    int rescale_acts_by_decoder_norm;
    int apply_b_dec_to_input;
    sl_norm norm;
    /* metadata (empty / -1 when absent) */
    char hook_name[256];
    char model_name[256];
    int context_size;
    int prepend_bos;
    int center_writing_weights; /* metadata.model_from_pretrained_kwargs; -1 if absent */
    /* weights, f32, row-major */
    float *W_enc;    /* [d_in, d_sae] (gated: the gate path) */
    float *b_enc;    /* [d_sae] (gated: b_gate) */
    float *b_dec;    /* [d_in] */
    float *threshold;/* [d_sae] jumprelu */
    float *W_mag;    /* [d_in, d_sae] gated: W_enc * exp(r_mag) */
    float *b_mag;    /* [d_sae] gated */
    float *dec_norm; /* [d_sae] ||W_dec[f]||, topk with rescale only */
    float *W_dec;    /* [d_sae, d_in] decoder: reconstruction quality */
} sl_sae;

/* Sums from which the reconstruction quality of a run follows, in the SAE's
 * input space (after normalization): explained variance =
 * 1 - err_sq / (x_sq - |x_sum|^2 / rows), mse = err_sq / (rows * d_in). */
typedef struct sl_recon_sums {
    uint64_t rows;
    double err_sq, x_sq;
    double *x_sum; /* [d_in] */
} sl_recon_sums;

sl_sae *sl_sae_load(const char *path, sl_err *err);
void sl_sae_free(sl_sae *sae);
const char *sl_arch_name(sl_arch arch);

/* Floats of scratch sl_sae_encode needs for n rows. */
size_t sl_sae_workspace_floats(const sl_sae *sae, int n);

/* x: [n, d_in] (not modified), acts: [n, d_sae] out, ws: sl_sae_workspace_floats(n).
 * Afterwards ws[0 .. n * d_in) holds x' = normalize(x) - b_dec * apply_b_dec_to_input. */
void sl_sae_encode(const sl_sae *sae, const float *x, int n, float *acts, float *ws);

/* Adds the reconstruction error of one encoded row to q: xp is its row of ws as
 * sl_sae_encode left it, (cols, vals) its nonzero activations, r scratch of
 * d_in floats. x_hat = sum_f acts[f] W_dec[f] + b_dec (acts divided by
 * ||W_dec[f]|| first for top-k with rescale_acts_by_decoder_norm). */
void sl_sae_add_recon(const sl_sae *sae, const float *xp, const uint32_t *cols, const float *vals, size_t nnz,
                      float *r, sl_recon_sums *q);

#endif
