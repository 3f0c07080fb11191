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
 * Attention is causal within each sequence; sequences never see each other.
 *
 * Threads: a forward spreads its attention heads and row-wise steps over the model's
 * own pool (sl_workpool_default_threads() threads, fixed at load, started on the first
 * forward) and leaves the big GEMMs to OpenBLAS's threads. The pool's size changes no
 * bit of the result. Forwards on one model may run at once from several threads; one
 * of them has the pool, the others run serially. */
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

/* A read-only view of a loaded model's f32 weights (row-major, owned by the model),
 * for a backend that uploads them once (cuda/). Shapes use C = d_model, F = d_mlp. */
typedef struct sl_model_layer_view {
    const float *ln1_w, *ln1_b;           /* [C] */
    const float *attn_w, *attn_b;         /* [C, 3C] (columns Q|K|V), [3C] */
    const float *attn_proj_w, *attn_proj_b; /* [C, C], [C] */
    const float *ln2_w, *ln2_b;           /* [C] */
    const float *fc_w, *fc_b;             /* [C, F], [F] */
    const float *mlp_proj_w, *mlp_proj_b; /* [F, C], [C] */
} sl_model_layer_view;

typedef struct sl_model_view {
    sl_model_config cfg;
    int gelu_erf;                        /* 1: exact erf GELU; 0: tanh approximation */
    int scale_attn_weights;              /* divide scores by sqrt(head size) */
    int scale_attn_by_inverse_layer_idx; /* and by layer + 1 */
    const float *wte;                    /* [vocab_size, C] */
    const float *wpe;                    /* [n_positions, C] */
    const sl_model_layer_view *layers;   /* [n_layer] */
} sl_model_view;

/* Fills *v; layers must hold cfg.n_layer entries and becomes v->layers. */
void sl_model_get_view(const sl_model *m, sl_model_view *v, sl_model_layer_view *layers);

/* Checks the hook against the model (layer in range). */
int sl_model_check_hook(const sl_model *m, sl_hook hook, sl_err *err);

/* Floats of scratch sl_model_forward needs for n_seq sequences of seq_len. */
size_t sl_model_workspace_floats(const sl_model *m, int n_seq, int seq_len, sl_hook hook);

/* tokens [n_seq, seq_len] (ids < vocab_size, seq_len <= n_positions) ->
 * out [n_seq * seq_len, d_model]: the activations at `hook`. */
int sl_model_forward(const sl_model *m, const int32_t *tokens, int n_seq, int seq_len, sl_hook hook, float *out,
                     float *ws, sl_err *err);

#endif
