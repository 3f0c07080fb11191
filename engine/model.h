/* model.h: decoder-only language models (Hugging Face checkpoints) on the CPU.
 *
 * A checkpoint directory holds config.json and model.safetensors, or
 * model.safetensors.index.json and its shards (F32, F16 or BF16). config.json's
 * model_type picks the family; each family is a table of its parameters
 * (model.c: name in the checkpoint, shape, per layer or not, when present) that
 * drives loading into one flat f32 allocation, and a layer function:
 *   gpt2                  LayerNorm, learned positions, GELU MLP (Conv1D weights)
 *   llama, mistral,       RMSNorm, RoPE (default, linear, llama3 scaling), grouped-query
 *   qwen2, qwen3, gemma   attention, SwiGLU / GeGLU; biases (qwen2; attention_bias,
 *                         mlp_bias), QK-norm (qwen3), sliding windows (mistral; layer_types);
 *                         Gemma's (1 + w) norms and sqrt(d_model) embedding scale
 *   gemma2, gemma3_text,  and a norm after the attention and after the MLP, score
 *   gemma3 (text tower)   soft-capping, query_pre_attn_scalar, alternating sliding layers,
 *                         Gemma-3's QK-norm and separate local and global RoPE bases
 *   gpt_neox              LayerNorm, fused q | k | v per head, partial rotary, GELU MLP,
 *                         parallel (or sequential) residual
 * Names with or without the body prefix ("transformer.", "model.",
 * "language_model.model."). An unknown model_type or config value is an error that
 * names it. The forward pass runs only up to the requested hook.
 *
 * Hooks are spelled as SAELens / TransformerLens do, with TransformerLens's
 * from_pretrained defaults (folded norms, folded value biases):
 *   blocks.L.hook_resid_pre        input of block L (embeddings for L = 0)
 *   blocks.L.hook_attn_out         the attention's output (after its projection)
 *   blocks.L.hook_resid_mid        resid_pre + attn_out
 *   blocks.L.hook_mlp_out          the MLP's output
 *   blocks.L.hook_resid_post       output of block L
 *   blocks.L.attn.hook_z           each head's attention output before the projection,
 *                                  heads concatenated [n_head * head_dim], without the
 *                                  value bias (folded into the projection's bias)
 *   blocks.L.ln2.hook_normalized   the MLP's input normalized, before the norm's weight:
 *                                  (x - mean) / sqrt(var + eps) for LayerNorm,
 *                                  x / sqrt(mean(x^2) + eps) for RMSNorm
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

/* The first four are the ones the CUDA backend runs (cuda/pipeline.cuh). */
typedef enum sl_hook_kind {
    SL_HOOK_RESID_PRE,
    SL_HOOK_ATTN_OUT,
    SL_HOOK_MLP_OUT,
    SL_HOOK_RESID_POST,
    SL_HOOK_RESID_MID,
    SL_HOOK_ATTN_Z,
    SL_HOOK_LN2_NORMALIZED,
    SL_N_HOOK_KINDS
} sl_hook_kind;

typedef struct sl_hook {
    int layer;
    sl_hook_kind kind;
} sl_hook;

/* Parses "blocks.L.hook_...", "blocks.L.attn.hook_z", "blocks.L.ln2.hook_normalized";
 * errors name the hook and list the accepted ones. */
int sl_hook_parse(const char *name, sl_hook *out, sl_err *err);

typedef enum sl_family { SL_FAMILY_GPT2, SL_FAMILY_LLAMA, SL_FAMILY_GEMMA2, SL_FAMILY_NEOX } sl_family;

typedef struct sl_model_config {
    sl_family family;
    char model_type[32]; /* as config.json says, e.g. "qwen3" */
    int vocab_size;
    int n_positions; /* maximum sequence length (n_positions, max_position_embeddings) */
    int d_model;     /* n_embd, hidden_size */
    int n_layer;
    int n_head;
    int n_kv_head; /* grouped-query attention: heads share K and V in groups; n_head for GPT-2 */
    int head_dim;  /* d_model / n_head unless the config says otherwise */
    int d_mlp;     /* n_inner (default 4 * d_model), intermediate_size */
    int rms_norm;  /* 1: RMSNorm (no mean, no bias); 0: LayerNorm */
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

/* Fills *v (GPT-2 models only: the layout the CUDA backend uploads); layers must
 * hold cfg.n_layer entries and becomes v->layers. -1 with err for another family. */
int sl_model_get_view(const sl_model *m, sl_model_view *v, sl_model_layer_view *layers, sl_err *err);

/* The unembedding W_U as rows [vocab_size, d_model]: the checkpoint's lm_head.weight
 * when the model has its own (*untied = 1), else the tied token embedding. */
const float *sl_model_unembed(const sl_model *m, int *untied);

/* Floats per row at the hook: n_head * head_dim for attn.hook_z, else d_model. */
int sl_model_hook_width(const sl_model *m, sl_hook hook);

/* Checks the hook against the model (layer in range). */
int sl_model_check_hook(const sl_model *m, sl_hook hook, sl_err *err);

/* Floats of scratch sl_model_forward needs for n_seq sequences of seq_len. */
size_t sl_model_workspace_floats(const sl_model *m, int n_seq, int seq_len, sl_hook hook);

/* tokens [n_seq, seq_len] (ids < vocab_size, seq_len <= n_positions) ->
 * out [n_seq * seq_len, sl_model_hook_width]: the activations at `hook`. */
int sl_model_forward(const sl_model *m, const int32_t *tokens, int n_seq, int seq_len, sl_hook hook, float *out,
                     float *ws, sl_err *err);

#endif
