/* model.h: GPT-2-family language models (Hugging Face checkpoints) on the CPU.
 *
 * A checkpoint directory holds config.json and model.safetensors (F32, F16 or
 * BF16; tensor names with or without the "transformer." prefix). Weights are
 * converted to f32 once. The forward pass runs only up to the requested hook:
 * no layer after it is computed.
 *
 * Hooks are spelled as SAELens / TransformerLens do:
 *   blocks.L.hook_resid_pre   input of block L (embeddings for L = 0)
 *   blocks.L.hook_attn_out    output of block L's attention (after c_proj)
 *   blocks.L.hook_mlp_out     output of block L's MLP (after c_proj)
 *   blocks.L.hook_resid_post  output of block L
 * Attention is causal within each sequence; sequences never see each other. */
#ifndef SAELITE_MODEL_H
#define SAELITE_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

typedef enum sl_hook_kind { SL_HOOK_RESID_PRE, SL_HOOK_ATTN_OUT, SL_HOOK_MLP_OUT, SL_HOOK_RESID_POST } sl_hook_kind;

typedef struct sl_hook {
    int layer;
    sl_hook_kind kind;
} sl_hook;

/* Parses "blocks.L.hook_..."; errors name the hook. */
int sl_hook_parse(const char *name, sl_hook *out, sl_err *err);

typedef struct sl_model_config {
    int vocab_size;
    int n_positions; /* maximum sequence length */
    int d_model;     /* n_embd */
    int n_layer;
    int n_head;
    int d_mlp;       /* n_inner, default 4 * d_model */
    float layer_norm_eps;
    int bos_token_id; /* -1 if absent */
    int eos_token_id; /* -1 if absent */
} sl_model_config;

typedef struct sl_model sl_model;

sl_model *sl_model_load(const char *dir, sl_err *err);
void sl_model_free(sl_model *m);
const sl_model_config *sl_model_config_of(const sl_model *m);

/* Checks the hook against the model (layer in range). */
int sl_model_check_hook(const sl_model *m, sl_hook hook, sl_err *err);

/* Floats of scratch sl_model_forward needs for n_seq sequences of seq_len. */
size_t sl_model_workspace_floats(const sl_model *m, int n_seq, int seq_len, sl_hook hook);

/* tokens [n_seq, seq_len] (ids < vocab_size, seq_len <= n_positions) ->
 * out [n_seq * seq_len, d_model]: the activations at `hook`. */
int sl_model_forward(const sl_model *m, const int32_t *tokens, int n_seq, int seq_len, sl_hook hook, float *out,
                     float *ws, sl_err *err);

#endif
