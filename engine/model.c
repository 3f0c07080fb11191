/* model.c: decoder-only language models on the CPU, up to a hook (see model.h).
 *
 * Shapes below use llm.c's letters: B sequences of T tokens, N = B*T rows,
 * C = d_model, NH heads and NKV key/value heads of HD = head_dim, Q = NH*HD,
 * K = NKV*HD, F = d_mlp, V = vocab_size, P = n_positions.
 *
 * A family is a table of parameters (param_spec: slot, name, shape in those
 * letters, when it is present) and a layer function. Loading walks the table:
 * it finds the name prefix, checks every present tensor's shape, sums their
 * sizes into one flat f32 allocation (converted from F32/F16/BF16 once) and
 * points each slot into it. Every layer is loaded even though a forward stops
 * at its hook: the model is loaded once and serves any hook. The final norm is
 * not loaded; no hook needs it. */
#include "model.h"

#include <cblas.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model_math.h"
#include "safetensors.h"
#include "workpool.h"

#define SL_PATH_MAX 4200
#define MAX_SHARDS 256

/* ---- the parameter tables --------------------------------------------------- */

/* Slots: global ones, then per layer. One name per role in every family: GPT-2's
 * c_attn and NeoX's query_key_value are QKV, the ungated MLPs' first matrix is UP
 * and their second DOWN; LN2 is the norm in front of the MLP (Gemma-2's
 * pre_feedforward_layernorm), POST_ATTN and POST_MLP Gemma-2's norms after each. */
enum { G_EMBED, G_POS, G_LM_HEAD, N_GLOBAL };
enum { L_LN1_W, L_LN1_B, L_QKV_W, L_QKV_B, L_Q_W, L_Q_B, L_K_W, L_K_B, L_V_W, L_V_B, L_O_W, L_O_B, L_Q_NORM, L_K_NORM,
       L_POST_ATTN, L_LN2_W, L_LN2_B, L_GATE_W, L_GATE_B, L_UP_W, L_UP_B, L_DOWN_W, L_DOWN_B, L_POST_MLP,
       N_LAYER_SLOTS };

/* Dimensions, resolved from the config. */
typedef enum { D_NONE, D_V, D_P, D_C, D_3C, D_F, D_Q, D_K, D_HD } dim;

/* When a parameter is in the checkpoint. */
enum { W_ALWAYS, W_QKV_BIAS, W_O_BIAS, W_MLP_BIAS, W_QK_NORM, W_UNTIED, W_IF_PRESENT };

typedef struct param_spec {
    int slot;
    int per_layer;
    const char *name; /* after the prefix (body, or root for lm_head); %d is the layer */
    dim d0, d1;       /* shape as stored: [d0] or [d0, d1] */
    int when;         /* W_* */
} param_spec;

/* GPT-2: Conv1D weights [in, out]. lm_head: used when the checkpoint has one. */
static const param_spec gpt2_params[] = {
    {G_EMBED, 0, "wte.weight", D_V, D_C, W_ALWAYS},
    {G_POS, 0, "wpe.weight", D_P, D_C, W_ALWAYS},
    {G_LM_HEAD, 0, "lm_head.weight", D_V, D_C, W_IF_PRESENT},
    {L_LN1_W, 1, "h.%d.ln_1.weight", D_C, D_NONE, W_ALWAYS},
    {L_LN1_B, 1, "h.%d.ln_1.bias", D_C, D_NONE, W_ALWAYS},
    {L_QKV_W, 1, "h.%d.attn.c_attn.weight", D_C, D_3C, W_ALWAYS},
    {L_QKV_B, 1, "h.%d.attn.c_attn.bias", D_3C, D_NONE, W_ALWAYS},
    {L_O_W, 1, "h.%d.attn.c_proj.weight", D_C, D_C, W_ALWAYS},
    {L_O_B, 1, "h.%d.attn.c_proj.bias", D_C, D_NONE, W_ALWAYS},
    {L_LN2_W, 1, "h.%d.ln_2.weight", D_C, D_NONE, W_ALWAYS},
    {L_LN2_B, 1, "h.%d.ln_2.bias", D_C, D_NONE, W_ALWAYS},
    {L_UP_W, 1, "h.%d.mlp.c_fc.weight", D_C, D_F, W_ALWAYS},
    {L_UP_B, 1, "h.%d.mlp.c_fc.bias", D_F, D_NONE, W_ALWAYS},
    {L_DOWN_W, 1, "h.%d.mlp.c_proj.weight", D_F, D_C, W_ALWAYS},
    {L_DOWN_B, 1, "h.%d.mlp.c_proj.bias", D_C, D_NONE, W_ALWAYS},
};

/* Llama and its kin, nn.Linear weights [out, in]: the embeddings and attention every
 * one has, then the norms and MLP of Llama, and those of Gemma-2/3 (a norm before and
 * after the attention and the MLP). */
static const param_spec rotary_params[] = {
    {G_EMBED, 0, "embed_tokens.weight", D_V, D_C, W_ALWAYS},
    {G_LM_HEAD, 0, "lm_head.weight", D_V, D_C, W_UNTIED},
    {L_LN1_W, 1, "layers.%d.input_layernorm.weight", D_C, D_NONE, W_ALWAYS},
    {L_Q_W, 1, "layers.%d.self_attn.q_proj.weight", D_Q, D_C, W_ALWAYS},
    {L_Q_B, 1, "layers.%d.self_attn.q_proj.bias", D_Q, D_NONE, W_QKV_BIAS},
    {L_K_W, 1, "layers.%d.self_attn.k_proj.weight", D_K, D_C, W_ALWAYS},
    {L_K_B, 1, "layers.%d.self_attn.k_proj.bias", D_K, D_NONE, W_QKV_BIAS},
    {L_V_W, 1, "layers.%d.self_attn.v_proj.weight", D_K, D_C, W_ALWAYS},
    {L_V_B, 1, "layers.%d.self_attn.v_proj.bias", D_K, D_NONE, W_QKV_BIAS},
    {L_O_W, 1, "layers.%d.self_attn.o_proj.weight", D_C, D_Q, W_ALWAYS},
    {L_O_B, 1, "layers.%d.self_attn.o_proj.bias", D_C, D_NONE, W_O_BIAS},
    {L_Q_NORM, 1, "layers.%d.self_attn.q_norm.weight", D_HD, D_NONE, W_QK_NORM},
    {L_K_NORM, 1, "layers.%d.self_attn.k_norm.weight", D_HD, D_NONE, W_QK_NORM},
    {L_GATE_W, 1, "layers.%d.mlp.gate_proj.weight", D_F, D_C, W_ALWAYS},
    {L_GATE_B, 1, "layers.%d.mlp.gate_proj.bias", D_F, D_NONE, W_MLP_BIAS},
    {L_UP_W, 1, "layers.%d.mlp.up_proj.weight", D_F, D_C, W_ALWAYS},
    {L_UP_B, 1, "layers.%d.mlp.up_proj.bias", D_F, D_NONE, W_MLP_BIAS},
    {L_DOWN_W, 1, "layers.%d.mlp.down_proj.weight", D_C, D_F, W_ALWAYS},
    {L_DOWN_B, 1, "layers.%d.mlp.down_proj.bias", D_C, D_NONE, W_MLP_BIAS},
};
static const param_spec llama_norms[] = {
    {L_LN2_W, 1, "layers.%d.post_attention_layernorm.weight", D_C, D_NONE, W_ALWAYS},
};
static const param_spec gemma2_norms[] = {
    {L_POST_ATTN, 1, "layers.%d.post_attention_layernorm.weight", D_C, D_NONE, W_ALWAYS},
    {L_LN2_W, 1, "layers.%d.pre_feedforward_layernorm.weight", D_C, D_NONE, W_ALWAYS},
    {L_POST_MLP, 1, "layers.%d.post_feedforward_layernorm.weight", D_C, D_NONE, W_ALWAYS},
};

/* GPT-NeoX (Pythia): nn.Linear weights; query_key_value holds q | k | v per head. */
static const param_spec neox_params[] = {
    {G_EMBED, 0, "embed_in.weight", D_V, D_C, W_ALWAYS},
    {G_LM_HEAD, 0, "embed_out.weight", D_V, D_C, W_UNTIED},
    {L_LN1_W, 1, "layers.%d.input_layernorm.weight", D_C, D_NONE, W_ALWAYS},
    {L_LN1_B, 1, "layers.%d.input_layernorm.bias", D_C, D_NONE, W_ALWAYS},
    {L_QKV_W, 1, "layers.%d.attention.query_key_value.weight", D_3C, D_C, W_ALWAYS},
    {L_QKV_B, 1, "layers.%d.attention.query_key_value.bias", D_3C, D_NONE, W_QKV_BIAS},
    {L_O_W, 1, "layers.%d.attention.dense.weight", D_C, D_C, W_ALWAYS},
    {L_O_B, 1, "layers.%d.attention.dense.bias", D_C, D_NONE, W_O_BIAS},
    {L_LN2_W, 1, "layers.%d.post_attention_layernorm.weight", D_C, D_NONE, W_ALWAYS},
    {L_LN2_B, 1, "layers.%d.post_attention_layernorm.bias", D_C, D_NONE, W_ALWAYS},
    {L_UP_W, 1, "layers.%d.mlp.dense_h_to_4h.weight", D_F, D_C, W_ALWAYS},
    {L_UP_B, 1, "layers.%d.mlp.dense_h_to_4h.bias", D_F, D_NONE, W_ALWAYS},
    {L_DOWN_W, 1, "layers.%d.mlp.dense_4h_to_h.weight", D_C, D_F, W_ALWAYS},
    {L_DOWN_B, 1, "layers.%d.mlp.dense_4h_to_h.bias", D_C, D_NONE, W_ALWAYS},
};

/* Name prefixes: the body's (everything but lm_head) and the root's (lm_head),
 * tried in order until the embedding is found. */
typedef struct prefix_pair {
    const char *body, *root;
} prefix_pair;
static const prefix_pair gpt2_prefixes[] = {{"", ""}, {"transformer.", ""}};
static const prefix_pair llama_prefixes[] = {
    {"model.", ""}, {"language_model.model.", "language_model."}, {"model.language_model.", ""}};
static const prefix_pair neox_prefixes[] = {{"gpt_neox.", ""}, {"", ""}};

/* A family's parameters: one or two tables (the first starts with the embedding). */
typedef struct family_spec {
    const param_spec *params[2];
    int n_params[2];
    const prefix_pair *prefixes;
    int n_prefixes;
} family_spec;

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))
static const family_spec families[] = {
    [SL_FAMILY_GPT2] = {{gpt2_params}, {COUNT(gpt2_params)}, gpt2_prefixes, COUNT(gpt2_prefixes)},
    [SL_FAMILY_LLAMA] = {{rotary_params, llama_norms}, {COUNT(rotary_params), COUNT(llama_norms)}, llama_prefixes,
                         COUNT(llama_prefixes)},
    [SL_FAMILY_GEMMA2] = {{rotary_params, gemma2_norms}, {COUNT(rotary_params), COUNT(gemma2_norms)},
                          llama_prefixes, COUNT(llama_prefixes)},
    [SL_FAMILY_NEOX] = {{neox_params}, {COUNT(neox_params)}, neox_prefixes, COUNT(neox_prefixes)},
};

/* model_type -> family. */
static const struct {
    const char *model_type;
    sl_family family;
} model_types[] = {
    {"gpt2", SL_FAMILY_GPT2},        {"llama", SL_FAMILY_LLAMA},         {"mistral", SL_FAMILY_LLAMA},
    {"qwen2", SL_FAMILY_LLAMA},      {"qwen3", SL_FAMILY_LLAMA},         {"gemma", SL_FAMILY_LLAMA},
    {"gemma2", SL_FAMILY_GEMMA2},    {"gemma3_text", SL_FAMILY_GEMMA2},  {"gemma3", SL_FAMILY_GEMMA2},
    {"gpt_neox", SL_FAMILY_NEOX},
};
#define SUPPORTED_MODEL_TYPES "gpt2, llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3_text, gemma3, gpt_neox"

/* ---- the model ------------------------------------------------------------------ */

typedef enum sl_act { SL_ACT_GELU_TANH, SL_ACT_GELU_ERF } sl_act;

/* RoPE frequencies, as transformers computes them: inv_freq[dims / 2] over the
 * first `dims` of each head (all of it but for NeoX's partial rotary). */
typedef struct rope {
    float *inv_freq;
    int dims;
} rope;

/* The forward's threads. The pool is made on the first forward (a loaded model that
 * never runs costs no threads) and serves one forward at a time: `busy` is taken with
 * trylock, and a forward that finds it held runs serially on its own thread. */
typedef struct sl_model_rt {
    pthread_mutex_t busy;
    sl_workpool *pool;
    int pool_tried;
    int n_threads; /* the pool's threads, fixed at load: the workspace has n_threads + 1 score buffers */
} sl_model_rt;

struct sl_model {
    sl_model_config cfg;
    sl_model_rt *rt;
    char cfg_path[SL_PATH_MAX];
    unsigned features;                   /* 1 << W_* that the config turns on */
    /* GPT-2 */
    sl_act act;
    int scale_attn_weights;              /* divide scores by sqrt(HS) (HF default true) */
    int scale_attn_by_inverse_layer_idx; /* and by layer + 1 (HF default false) */
    /* the rotary families */
    rope rope[2];       /* [0] full-attention layers, [1] sliding ones (Gemma-3's local base) */
    int *window;        /* [n_layer] sliding window of each layer (keys at most window - 1 back); 0: none */
    int gated_act;      /* SwiGLU / GeGLU gate: 0 silu, 1 gelu tanh, 2 gelu erf; NeoX's plain MLP: 2 */
    float embed_scale;  /* Gemma: sqrt(d_model); 0: none */
    float attn_scale;   /* the scores' factor: head_dim^-0.5, or query_pre_attn_scalar^-0.5 */
    float softcap;      /* Gemma-2: scores = cap tanh(scores / cap); 0: none */
    int parallel;       /* NeoX's use_parallel_residual: x + attn(ln1 x) + mlp(ln2 x) */
    /* weights */
    float *flat;                 /* the one allocation */
    const float *global[N_GLOBAL];
    const float **layer;         /* [n_layer * N_LAYER_SLOTS] */
};

static const float *P(const sl_model *m, int l, int slot) { return m->layer[(size_t)l * N_LAYER_SLOTS + slot]; }

/* ---- hooks ---------------------------------------------------------------------- */

static const char *const hook_suffix[SL_N_HOOK_KINDS] = {
    [SL_HOOK_RESID_PRE] = "hook_resid_pre",   [SL_HOOK_ATTN_OUT] = "hook_attn_out",
    [SL_HOOK_MLP_OUT] = "hook_mlp_out",       [SL_HOOK_RESID_POST] = "hook_resid_post",
    [SL_HOOK_RESID_MID] = "hook_resid_mid",   [SL_HOOK_ATTN_Z] = "attn.hook_z",
    [SL_HOOK_LN2_NORMALIZED] = "ln2.hook_normalized",
};

#define SL_HOOK_SPELLINGS                                                                                  \
    "blocks.L.hook_resid_pre, blocks.L.hook_attn_out, blocks.L.hook_resid_mid, blocks.L.hook_mlp_out, "    \
    "blocks.L.hook_resid_post, blocks.L.attn.hook_z, blocks.L.ln2.hook_normalized, with L the layer "      \
    "number from 0"

int sl_hook_parse(const char *name, sl_hook *out, sl_err *err) {
    if (!name) return sl_errf(err, "no hook given (accepted: " SL_HOOK_SPELLINGS ")");
    const char *p = name;
    if (strncmp(p, "blocks.", 7) != 0) goto bad;
    p += 7;
    long layer = 0;
    int digits = 0;
    for (; *p >= '0' && *p <= '9'; p++, digits++) {
        if (digits >= 9) goto bad; /* layer numbers beyond 1e9 are nonsense */
        layer = layer * 10 + (*p - '0');
    }
    if (digits == 0 || (digits > 1 && p[-digits] == '0') || *p != '.') goto bad;
    p++;
    for (int k = 0; k < SL_N_HOOK_KINDS; k++) {
        if (strcmp(p, hook_suffix[k]) == 0) {
            out->layer = (int)layer;
            out->kind = (sl_hook_kind)k;
            return 0;
        }
    }
bad:
    return sl_errf(err, "unknown hook '%s' (accepted: " SL_HOOK_SPELLINGS ")", name);
}

int sl_model_check_hook(const sl_model *m, sl_hook hook, sl_err *err) {
    if ((int)hook.kind < 0 || (int)hook.kind >= SL_N_HOOK_KINDS)
        return sl_errf(err, "invalid hook kind %d", (int)hook.kind);
    if (hook.layer < 0 || hook.layer >= m->cfg.n_layer)
        return sl_errf_path(err, m->cfg_path,
                            "hook blocks.%d.%s is beyond the model's %d layers (blocks.0 to blocks.%d)",
                            hook.layer, hook_suffix[hook.kind], m->cfg.n_layer, m->cfg.n_layer - 1);
    if (hook.kind == SL_HOOK_RESID_MID && m->parallel)
        return sl_errf_path(err, m->cfg_path,
                            "hook blocks.%d.hook_resid_mid does not exist: attention and MLP run in parallel "
                            "(use_parallel_residual), as in TransformerLens",
                            hook.layer);
    return 0;
}

int sl_model_hook_width(const sl_model *m, sl_hook hook) {
    return hook.kind == SL_HOOK_ATTN_Z ? m->cfg.n_head * m->cfg.head_dim : m->cfg.d_model;
}

/* ---- views ---------------------------------------------------------------------- */

const sl_model_config *sl_model_config_of(const sl_model *m) { return &m->cfg; }

int sl_model_get_view(const sl_model *m, sl_model_view *v, sl_model_layer_view *layers, sl_err *err) {
    if (m->cfg.family != SL_FAMILY_GPT2)
        return sl_errf_path(err, m->cfg_path, "the CUDA backend runs gpt2 models only; this is a %s model (use "
                            "device 'cpu')", m->cfg.model_type);
    v->cfg = m->cfg;
    v->gelu_erf = m->act == SL_ACT_GELU_ERF;
    v->scale_attn_weights = m->scale_attn_weights;
    v->scale_attn_by_inverse_layer_idx = m->scale_attn_by_inverse_layer_idx;
    v->wte = m->global[G_EMBED];
    v->wpe = m->global[G_POS];
    for (int l = 0; l < m->cfg.n_layer; l++)
        layers[l] = (sl_model_layer_view){P(m, l, L_LN1_W), P(m, l, L_LN1_B), P(m, l, L_QKV_W), P(m, l, L_QKV_B),
                                          P(m, l, L_O_W),   P(m, l, L_O_B),   P(m, l, L_LN2_W), P(m, l, L_LN2_B),
                                          P(m, l, L_UP_W),  P(m, l, L_UP_B),  P(m, l, L_DOWN_W), P(m, l, L_DOWN_B)};
    v->layers = layers;
    return 0;
}

const float *sl_model_unembed(const sl_model *m, int *untied) {
    *untied = m->global[G_LM_HEAD] != NULL;
    return *untied ? m->global[G_LM_HEAD] : m->global[G_EMBED];
}

void sl_model_free(sl_model *m) {
    if (!m) return;
    if (m->rt) {
        sl_workpool_free(m->rt->pool);
        pthread_mutex_destroy(&m->rt->busy);
        free(m->rt);
    }
    free(m->rope[0].inv_freq);
    free(m->rope[1].inv_freq);
    free(m->window);
    free(m->flat);
    free(m->layer);
    free(m);
}

/* ---- config --------------------------------------------------------------------- */

/* An integer config value: required (def < lo) or defaulted when missing/null. */
static int cfg_int(json_t *cfg, const char *key, long long def, long long lo, long long hi, int *out,
                   const char *path, sl_err *err) {
    *out = (int)def; /* set on every path, so no caller reads it unset */
    json_t *v = json_object_get(cfg, key);
    if (!v || json_is_null(v)) {
        if (def < lo) return sl_errf_path(err, path, "missing '%s'", key);
        *out = (int)def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return sl_errf_path(err, path, "'%s' must be an integer in [%lld, %lld]", key, lo, hi);
    *out = (int)json_integer_value(v);
    return 0;
}

static int cfg_bool(json_t *cfg, const char *key, int def, int *out, const char *path, sl_err *err) {
    *out = def;
    json_t *v = json_object_get(cfg, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_boolean(v)) return sl_errf_path(err, path, "'%s' must be true or false", key);
    *out = json_is_true(v);
    return 0;
}

/* A positive number (as the f32 it is used as), defaulted when missing/null. */
static int cfg_float(json_t *cfg, const char *key, double def, double hi, float *out, const char *path,
                     sl_err *err) {
    *out = (float)def; /* set on every path */
    json_t *v = json_object_get(cfg, key);
    if (!v || json_is_null(v)) {
        *out = (float)def;
        return 0;
    }
    float f = json_is_number(v) ? (float)json_number_value(v) : 0.0f;
    if (!(f > 0.0f) || !(f < hi)) return sl_errf_path(err, path, "'%s' must be a number in (0, %g)", key, hi);
    *out = f;
    return 0;
}

/* A token id that may be missing, null, or (some configs) a list: first entry. */
static int cfg_token(json_t *cfg, const char *key, int vocab, int *out, const char *path, sl_err *err) {
    json_t *v = json_object_get(cfg, key);
    if (json_is_array(v)) v = json_array_get(v, 0);
    if (!v || json_is_null(v)) {
        *out = -1;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= vocab)
        return sl_errf_path(err, path, "'%s' must be a token id in [0, %d)", key, vocab);
    *out = (int)json_integer_value(v);
    return 0;
}

static int parse_gpt2(sl_model *m, json_t *cfg, const char *path, sl_err *err) {
    sl_model_config *c = &m->cfg;
    if (cfg_int(cfg, "vocab_size", -1, 1, 1 << 24, &c->vocab_size, path, err) ||
        cfg_int(cfg, "n_embd", -1, 1, 1 << 16, &c->d_model, path, err) ||
        cfg_int(cfg, "n_layer", -1, 1, 1 << 12, &c->n_layer, path, err) ||
        cfg_int(cfg, "n_head", -1, 1, 1 << 12, &c->n_head, path, err))
        return -1;
    const char *pos_key = json_object_get(cfg, "n_positions") ? "n_positions" : "n_ctx";
    if (cfg_int(cfg, pos_key, -1, 1, 1 << 20, &c->n_positions, path, err)) return -1;
    if (cfg_int(cfg, "n_inner", 4LL * c->d_model, 1, 1 << 20, &c->d_mlp, path, err)) return -1;
    if (c->d_model % c->n_head != 0)
        return sl_errf_path(err, path, "n_embd %d is not a multiple of n_head %d", c->d_model, c->n_head);
    c->n_kv_head = c->n_head;
    c->head_dim = c->d_model / c->n_head;
    /* checked as the f32 the layer norm uses: 1e-105 is > 0 but rounds to 0 */
    if (cfg_float(cfg, "layer_norm_epsilon", 1e-5, 1.0, &c->layer_norm_eps, path, err)) return -1;
    json_t *act = json_object_get(cfg, "activation_function");
    const char *a = act && !json_is_null(act) ? json_string_value(act) : "gelu_new";
    if (!a) return sl_errf_path(err, path, "'activation_function' must be a string");
    if (strcmp(a, "gelu_new") == 0 || strcmp(a, "gelu_pytorch_tanh") == 0 || strcmp(a, "gelu_fast") == 0)
        m->act = SL_ACT_GELU_TANH;
    else if (strcmp(a, "gelu") == 0)
        m->act = SL_ACT_GELU_ERF;
    else
        return sl_errf_path(err, path,
                            "activation_function '%s' is not supported (supported: gelu_new, gelu_pytorch_tanh, "
                            "gelu_fast, gelu)",
                            a);
    return cfg_bool(cfg, "scale_attn_weights", 1, &m->scale_attn_weights, path, err) ||
                   cfg_bool(cfg, "scale_attn_by_inverse_layer_idx", 0, &m->scale_attn_by_inverse_layer_idx, path, err)
               ? -1
               : 0;
}

/* One set of RoPE frequencies as transformers' rope init functions compute them
 * (f32): inv_freq[i] = 1 / theta^(2i / dims), then the scaling its type names.
 * `params` holds rope_theta and the type (transformers 5's rope_parameters, or
 * rope_scaling with rope_theta beside it in cfg for older configs). */
static int make_rope(rope *r, int dims, json_t *cfg, json_t *params, const char *path, sl_err *err) {
    if (dims % 2 || dims < 2) return sl_errf_path(err, path, "rotary dimension %d is not a positive even number", dims);
    float theta;
    if (cfg_float(json_object_get(params, "rope_theta") ? params : cfg, "rope_theta", 10000.0, 1e30, &theta, path, err))
        return -1;
    r->dims = dims;
    if (!(r->inv_freq = malloc((size_t)(dims / 2) * sizeof(float)))) return sl_errf(err, "out of memory");
    for (int i = 0; i < dims / 2; i++) r->inv_freq[i] = 1.0f / powf(theta, (float)(2 * i) / (float)dims);
    if (!params || json_is_null(params)) return 0;
    if (!json_is_object(params)) return sl_errf_path(err, path, "the RoPE parameters must be an object or null");
    json_t *t = json_object_get(params, "rope_type");
    if (!t) t = json_object_get(params, "type");
    const char *type = t ? json_string_value(t) : "default";
    if (!type) return sl_errf_path(err, path, "RoPE: 'rope_type' must be a string");
    if (strcmp(type, "default") == 0) return 0;
    float factor;
    if (cfg_float(params, "factor", -1.0, 1e9, &factor, path, err)) return -1;
    if (strcmp(type, "linear") == 0) { /* positions / factor, i.e. every frequency / factor */
        for (int i = 0; i < dims / 2; i++) r->inv_freq[i] /= factor;
        return 0;
    }
    if (strcmp(type, "llama3") == 0) {
        float lo_f, hi_f;
        int old_ctx;
        if (cfg_float(params, "low_freq_factor", -1.0, 1e9, &lo_f, path, err) ||
            cfg_float(params, "high_freq_factor", -1.0, 1e9, &hi_f, path, err) ||
            cfg_int(params, "original_max_position_embeddings", -1, 1, 1 << 30, &old_ctx, path, err))
            return -1;
        if (!(hi_f > lo_f)) return sl_errf_path(err, path, "RoPE: high_freq_factor must exceed low_freq_factor");
        const float lo_wavelen = (float)old_ctx / lo_f, hi_wavelen = (float)old_ctx / hi_f;
        for (int i = 0; i < dims / 2; i++) {
            float f = r->inv_freq[i], wavelen = 2.0f * (float)M_PI / f;
            float scaled = wavelen > lo_wavelen ? f / factor : f;
            if (!(wavelen < hi_wavelen) && !(wavelen > lo_wavelen)) {
                float smooth = ((float)old_ctx / wavelen - lo_f) / (hi_f - lo_f);
                scaled = (1.0f - smooth) * scaled / factor + smooth * scaled;
            }
            r->inv_freq[i] = scaled;
        }
        return 0;
    }
    return sl_errf_path(err, path, "RoPE type '%s' is not supported (supported: default, linear, llama3)", type);
}

/* The model's RoPE: one set, or Gemma-3's two (per layer type, each with its own
 * base: rope_parameters.full_attention / .sliding_attention, or rope_local_base_freq). */
static int parse_rope(sl_model *m, json_t *cfg, int dims, const char *path, sl_err *err) {
    json_t *params = json_object_get(cfg, "rope_parameters");
    if (!params) params = json_object_get(cfg, "rope_scaling");
    json_t *full = json_object_get(params, "full_attention"), *local = json_object_get(params, "sliding_attention");
    if (full || local) {
        if (!json_is_object(full) || !json_is_object(local))
            return sl_errf_path(err, path, "rope_parameters needs both 'full_attention' and 'sliding_attention'");
        return make_rope(&m->rope[0], dims, cfg, full, path, err) || make_rope(&m->rope[1], dims, cfg, local, path, err)
                   ? -1
                   : 0;
    }
    if (make_rope(&m->rope[0], dims, cfg, params, path, err)) return -1;
    json_t *base = json_object_get(cfg, "rope_local_base_freq"); /* Gemma-3 before rope_parameters */
    if (base && !json_is_null(base)) {
        json_t *p = json_pack("{s:O}", "rope_theta", base);
        int rc = make_rope(&m->rope[1], dims, cfg, p, path, err);
        json_decref(p);
        return rc;
    }
    return make_rope(&m->rope[1], dims, cfg, params, path, err); /* the same for every layer */
}

/* Which layers attend through a sliding window, and how wide. */
static int parse_windows(sl_model *m, json_t *cfg, const char *path, sl_err *err) {
    const sl_model_config *c = &m->cfg;
    if (!(m->window = calloc((size_t)c->n_layer, sizeof *m->window))) return sl_errf(err, "out of memory");
    int window = 0;
    json_t *w = json_object_get(cfg, "sliding_window");
    if (w && !json_is_null(w) && cfg_int(cfg, "sliding_window", 0, 1, 1 << 30, &window, path, err)) return -1;
    json_t *types = json_object_get(cfg, "layer_types");
    int qwen = strncmp(c->model_type, "qwen", 4) == 0;
    int use = !qwen; /* mistral (and a llama that names one): every layer */
    int from_layer = 0;
    if (qwen && (cfg_bool(cfg, "use_sliding_window", 0, &use, path, err) ||
                 cfg_int(cfg, "max_window_layers", 0, 0, 1 << 20, &from_layer, path, err)))
        return -1;
    if (types && !json_is_null(types)) {
        if (!json_is_array(types) || (int)json_array_size(types) != c->n_layer)
            return sl_errf_path(err, path, "'layer_types' must be a list of %d strings", c->n_layer);
        for (int l = 0; l < c->n_layer; l++) {
            const char *t = json_string_value(json_array_get(types, (size_t)l));
            int sliding = t && strcmp(t, "sliding_attention") == 0;
            if (!sliding && (!t || strcmp(t, "full_attention") != 0))
                return sl_errf_path(err, path, "layer_types[%d] must be \"full_attention\" or \"sliding_attention\"",
                                    l);
            if (sliding && !window)
                return sl_errf_path(err, path, "layer %d is a sliding_attention layer but 'sliding_window' is not set",
                                    l);
            m->window[l] = sliding ? window : 0;
        }
        return 0;
    }
    int pattern = 0; /* Gemma-2: every other layer from 0; Gemma-3: all but every pattern-th */
    if (strcmp(c->model_type, "gemma2") == 0) pattern = 2;
    if (strncmp(c->model_type, "gemma3", 6) == 0 &&
        cfg_int(cfg, json_object_get(cfg, "sliding_window_pattern") ? "sliding_window_pattern" : "_sliding_window_pattern",
                6, 1, 1 << 20, &pattern, path, err))
        return -1;
    for (int l = 0; l < c->n_layer; l++) {
        int sliding = pattern == 2 ? l % 2 == 0 : pattern ? (l + 1) % pattern != 0 : use && l >= from_layer;
        m->window[l] = sliding ? window : 0;
    }
    return 0;
}

/* hidden_act / hidden_activation of a gated MLP (or NeoX's plain one). */
static int parse_act(sl_model *m, json_t *cfg, const char *def, const char *path, sl_err *err) {
    json_t *act = json_object_get(cfg, "hidden_activation");
    if (!act || json_is_null(act)) act = json_object_get(cfg, "hidden_act");
    const char *a = act && !json_is_null(act) ? json_string_value(act) : def;
    if (a && (strcmp(a, "silu") == 0 || strcmp(a, "swish") == 0)) m->gated_act = 0;
    else if (a && (strcmp(a, "gelu_pytorch_tanh") == 0 || strcmp(a, "gelu_new") == 0)) m->gated_act = 1;
    else if (a && strcmp(a, "gelu") == 0) m->gated_act = 2;
    else
        return sl_errf_path(err, path, "hidden_act '%s' is not supported (supported: silu, gelu_pytorch_tanh, gelu)",
                            a ? a : "?");
    return 0;
}

/* Llama, Mistral, Qwen2/3, Gemma 1-3. */
static int parse_llama(sl_model *m, json_t *cfg, const char *path, sl_err *err) {
    sl_model_config *c = &m->cfg;
    const char *mt = c->model_type;
    if (cfg_int(cfg, "vocab_size", -1, 1, 1 << 24, &c->vocab_size, path, err) ||
        cfg_int(cfg, "hidden_size", -1, 1, 1 << 16, &c->d_model, path, err) ||
        cfg_int(cfg, "num_hidden_layers", -1, 1, 1 << 12, &c->n_layer, path, err) ||
        cfg_int(cfg, "num_attention_heads", -1, 1, 1 << 12, &c->n_head, path, err) ||
        cfg_int(cfg, "num_key_value_heads", c->n_head, 1, c->n_head, &c->n_kv_head, path, err) ||
        cfg_int(cfg, "intermediate_size", -1, 1, 1 << 20, &c->d_mlp, path, err) ||
        cfg_int(cfg, "max_position_embeddings", -1, 1, 1 << 24, &c->n_positions, path, err))
        return -1;
    if (c->n_head % c->n_kv_head)
        return sl_errf_path(err, path, "num_attention_heads %d is not a multiple of num_key_value_heads %d",
                            c->n_head, c->n_kv_head);
    json_t *hd = json_object_get(cfg, "head_dim");
    if (hd && !json_is_null(hd)) {
        if (cfg_int(cfg, "head_dim", -1, 1, 1 << 12, &c->head_dim, path, err)) return -1;
    } else {
        if (c->d_model % c->n_head)
            return sl_errf_path(err, path, "hidden_size %d is not a multiple of num_attention_heads %d", c->d_model,
                                c->n_head);
        c->head_dim = c->d_model / c->n_head;
    }
    c->rms_norm = 1;
    if (cfg_float(cfg, "rms_norm_eps", 1e-6, 1.0, &c->layer_norm_eps, path, err)) return -1;
    const int gemma = strncmp(mt, "gemma", 5) == 0, qwen2 = strcmp(mt, "qwen2") == 0, qwen3 = strcmp(mt, "qwen3") == 0;
    const int gemma3 = strncmp(mt, "gemma3", 6) == 0;
    if (parse_act(m, cfg, gemma ? "gelu_pytorch_tanh" : "silu", path, err)) return -1;
    int tied = 0, attn_bias = 0, mlp_bias = 0;
    if (cfg_bool(cfg, "tie_word_embeddings", gemma, &tied, path, err) ||
        cfg_bool(cfg, "attention_bias", 0, &attn_bias, path, err) ||
        cfg_bool(cfg, "mlp_bias", 0, &mlp_bias, path, err))
        return -1;
    if (!tied) m->features |= 1u << W_UNTIED;
    if (attn_bias || qwen2) m->features |= 1u << W_QKV_BIAS;
    if (attn_bias) m->features |= 1u << W_O_BIAS;
    if (mlp_bias) m->features |= 1u << W_MLP_BIAS;
    if (qwen3 || gemma3) m->features |= 1u << W_QK_NORM;
    int bidirectional = 0;
    if (cfg_bool(cfg, "use_bidirectional_attention", 0, &bidirectional, path, err)) return -1;
    if (bidirectional) return sl_errf_path(err, path, "use_bidirectional_attention is not supported (causal only)");
    if (gemma) m->embed_scale = (float)sqrt((double)c->d_model);
    float qpas = 0.0f;
    json_t *q = json_object_get(cfg, "query_pre_attn_scalar");
    if (q && !json_is_null(q) && cfg_float(cfg, "query_pre_attn_scalar", 0.0, 1e9, &qpas, path, err)) return -1;
    m->attn_scale = qpas > 0 ? (float)(1.0 / sqrt((double)qpas)) : (float)(1.0 / sqrt((double)c->head_dim));
    json_t *cap = json_object_get(cfg, "attn_logit_softcapping");
    if (cap && !json_is_null(cap) && cfg_float(cfg, "attn_logit_softcapping", 0.0, 1e9, &m->softcap, path, err))
        return -1;
    return parse_rope(m, cfg, c->head_dim, path, err) || parse_windows(m, cfg, path, err) ? -1 : 0;
}

/* GPT-NeoX (Pythia). */
static int parse_neox(sl_model *m, json_t *cfg, const char *path, sl_err *err) {
    sl_model_config *c = &m->cfg;
    if (cfg_int(cfg, "vocab_size", -1, 1, 1 << 24, &c->vocab_size, path, err) ||
        cfg_int(cfg, "hidden_size", -1, 1, 1 << 16, &c->d_model, path, err) ||
        cfg_int(cfg, "num_hidden_layers", -1, 1, 1 << 12, &c->n_layer, path, err) ||
        cfg_int(cfg, "num_attention_heads", -1, 1, 1 << 12, &c->n_head, path, err) ||
        cfg_int(cfg, "intermediate_size", -1, 1, 1 << 20, &c->d_mlp, path, err) ||
        cfg_int(cfg, "max_position_embeddings", -1, 1, 1 << 24, &c->n_positions, path, err))
        return -1;
    if (c->d_model % c->n_head)
        return sl_errf_path(err, path, "hidden_size %d is not a multiple of num_attention_heads %d", c->d_model,
                            c->n_head);
    c->n_kv_head = c->n_head;
    c->head_dim = c->d_model / c->n_head;
    if (cfg_float(cfg, "layer_norm_eps", 1e-5, 1.0, &c->layer_norm_eps, path, err) ||
        parse_act(m, cfg, "gelu", path, err))
        return -1;
    int tied = 0, bias = 1;
    if (cfg_bool(cfg, "tie_word_embeddings", 0, &tied, path, err) ||
        cfg_bool(cfg, "attention_bias", 1, &bias, path, err) ||
        cfg_bool(cfg, "use_parallel_residual", 1, &m->parallel, path, err))
        return -1;
    if (!tied) m->features |= 1u << W_UNTIED;
    if (bias) m->features |= (1u << W_QKV_BIAS) | (1u << W_O_BIAS);
    m->attn_scale = (float)(1.0 / sqrt((double)c->head_dim));
    /* partial rotary: rope_parameters.partial_rotary_factor, or rotary_pct in older configs */
    json_t *params = json_object_get(cfg, "rope_parameters");
    float pct;
    if (cfg_float(json_object_get(params, "partial_rotary_factor") ? params : cfg,
                  json_object_get(params, "partial_rotary_factor") ? "partial_rotary_factor" : "rotary_pct", 0.25,
                  1.000001, &pct, path, err))
        return -1;
    if (!json_object_get(cfg, "rope_parameters") && json_object_get(cfg, "rotary_emb_base")) {
        json_t *p = json_pack("{s:O}", "rope_theta", json_object_get(cfg, "rotary_emb_base"));
        json_object_set_new(cfg, "rope_parameters", p);
    }
    int dims = (int)((float)c->head_dim * pct); /* int(head_size * rotary_pct), as transformers */
    if (parse_rope(m, cfg, dims, path, err)) return -1;
    return (m->window = calloc((size_t)c->n_layer, sizeof *m->window)) ? 0 : sl_errf(err, "out of memory");
}

static int parse_config(sl_model *m, const char *path, sl_err *err) {
    json_error_t jerr;
    json_t *cfg = json_load_file(path, 0, &jerr);
    if (!cfg) {
        FILE *f = fopen(path, "r");
        if (!f) return sl_errf_path(err, path, "cannot open model config: %s", strerror(errno));
        fclose(f);
        return sl_errf_path(err, path, "invalid JSON: %s (line %d)", jerr.text, jerr.line);
    }
    int rc = -1;
    sl_model_config *c = &m->cfg;
    if (!json_is_object(cfg)) {
        sl_errf_path(err, path, "expected a JSON object");
        goto done;
    }
    const char *mt = json_string_value(json_object_get(cfg, "model_type"));
    if (!mt) {
        sl_errf_path(err, path, "missing 'model_type' (supported: " SUPPORTED_MODEL_TYPES ")");
        goto done;
    }
    int known = 0;
    for (int i = 0; i < COUNT(model_types); i++)
        if (strcmp(mt, model_types[i].model_type) == 0) {
            c->family = model_types[i].family;
            known = 1;
        }
    if (!known) {
        sl_errf_path(err, path, "model_type '%s' is not supported (supported: " SUPPORTED_MODEL_TYPES ")", mt);
        goto done;
    }
    snprintf(c->model_type, sizeof c->model_type, "%s", mt);
    m->features = 1u << W_ALWAYS;
    json_t *body = cfg;
    if (strcmp(mt, "gemma3") == 0) { /* multimodal: the text tower's config */
        body = json_object_get(cfg, "text_config");
        if (!json_is_object(body)) {
            sl_errf_path(err, path, "model_type 'gemma3' without a 'text_config' object");
            goto done;
        }
    }
    int (*parse)(sl_model *, json_t *, const char *, sl_err *) =
        c->family == SL_FAMILY_GPT2 ? parse_gpt2 : c->family == SL_FAMILY_NEOX ? parse_neox : parse_llama;
    if (parse(m, body, path, err) ||
        cfg_token(json_object_get(body, "bos_token_id") ? body : cfg, "bos_token_id", c->vocab_size, &c->bos_token_id,
                  path, err) ||
        cfg_token(json_object_get(body, "eos_token_id") ? body : cfg, "eos_token_id", c->vocab_size, &c->eos_token_id,
                  path, err))
        goto done;
    rc = 0;
done:
    json_decref(cfg);
    return rc;
}

/* ---- weights -------------------------------------------------------------------- */

/* The checkpoint's files: model.safetensors, or the shards an index names. */
typedef struct checkpoint {
    sl_st *st[MAX_SHARDS];
    int n;
    char index_path[SL_PATH_MAX]; /* set when sharded */
} checkpoint;

static void checkpoint_close(checkpoint *ck) {
    for (int i = 0; i < ck->n; i++) sl_st_close(ck->st[i]);
    ck->n = 0;
}

static const sl_tensor *checkpoint_get(const checkpoint *ck, const char *name, const sl_st **in) {
    for (int i = 0; i < ck->n; i++) {
        const sl_tensor *t = sl_st_get(ck->st[i], name);
        if (t) {
            *in = ck->st[i];
            return t;
        }
    }
    return NULL;
}

/* Opens every shard model.safetensors.index.json's weight_map names (once each). */
static int open_sharded(checkpoint *ck, const char *dir, sl_err *err) {
    json_error_t jerr;
    json_t *index = json_load_file(ck->index_path, 0, &jerr);
    if (!index) return sl_errf_path(err, ck->index_path, "invalid JSON: %s (line %d)", jerr.text, jerr.line);
    json_t *map = json_object_get(index, "weight_map");
    int rc = -1;
    if (!json_is_object(map) || json_object_size(map) == 0) {
        sl_errf_path(err, ck->index_path, "no 'weight_map' object");
        goto done;
    }
    const char *tensor;
    json_t *file;
    json_object_foreach(map, tensor, file) {
        const char *f = json_string_value(file);
        if (!f || !*f || strchr(f, '/')) {
            sl_errf_path(err, ck->index_path, "weight_map['%s'] must be a file name in the model directory", tensor);
            goto done;
        }
        char path[SL_PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", dir, f);
        int seen = 0;
        for (int i = 0; i < ck->n && !seen; i++) seen = strcmp(sl_st_path(ck->st[i]), path) == 0;
        if (seen) continue;
        if (ck->n == MAX_SHARDS) {
            sl_errf_path(err, ck->index_path, "more than %d shards", MAX_SHARDS);
            goto done;
        }
        if (!(ck->st[ck->n] = sl_st_open(path, err))) goto done;
        ck->n++;
    }
    rc = 0;
done:
    json_decref(index);
    return rc;
}

static int64_t dim_size(const sl_model_config *c, dim d) {
    switch (d) {
    case D_NONE: return 0;
    case D_V: return c->vocab_size;
    case D_P: return c->n_positions;
    case D_C: return c->d_model;
    case D_3C: return 3LL * c->d_model;
    case D_F: return c->d_mlp;
    case D_Q: return (int64_t)c->n_head * c->head_dim;
    case D_K: return (int64_t)c->n_kv_head * c->head_dim;
    case D_HD: return c->head_dim;
    }
    return 0;
}

/* One parameter of the table, for layer l: its tensor (NULL when absent and not
 * needed) after checking presence and shape. */
static int find_param(const sl_model *m, const checkpoint *ck, const prefix_pair *pre, const param_spec *p, int l,
                      const sl_tensor **t, const sl_st **in, sl_err *err) {
    char rel[160], full[256];
    snprintf(rel, sizeof rel, p->name, l);
    snprintf(full, sizeof full, "%s%s", p->slot == G_LM_HEAD && !p->per_layer ? pre->root : pre->body, rel);
    *t = checkpoint_get(ck, full, in);
    int wanted = p->when == W_IF_PRESENT ? *t != NULL : (m->features >> p->when) & 1;
    const char *where = ck->index_path[0] ? ck->index_path : ck->n ? sl_st_path(ck->st[0]) : m->cfg_path;
    if (!wanted) {
        *t = NULL; /* a tensor the config does not use (tied lm_head, ...) is ignored, as transformers does */
        return 0;
    }
    if (!*t) return sl_errf_path(err, where, "missing tensor '%s'", full);
    int64_t shape[2] = {dim_size(&m->cfg, p->d0), dim_size(&m->cfg, p->d1)};
    int ndim = p->d1 == D_NONE ? 1 : 2;
    int ok = (*t)->ndim == ndim && (*t)->shape[0] == shape[0] && (ndim == 1 || (*t)->shape[1] == shape[1]);
    if (!ok) {
        char got[128], want[128];
        sl_tensor w = {.ndim = ndim, .shape = {shape[0], shape[1]}};
        sl_shape_str(*t, got, sizeof got);
        sl_shape_str(&w, want, sizeof want);
        return sl_errf_path(err, sl_st_path(*in), "tensor '%s' has shape %s, expected %s (from %s)", full, got, want,
                            m->cfg_path);
    }
    return 0;
}

/* Two passes over the table: sizes into one allocation, then the conversions. */
static int load_weights(sl_model *m, const checkpoint *ck, sl_err *err) {
    const family_spec *fam = &families[m->cfg.family];
    const int L = m->cfg.n_layer;
    const prefix_pair *pre = NULL;
    for (int i = 0; i < fam->n_prefixes && !pre; i++) {
        char name[256];
        snprintf(name, sizeof name, "%s%s", fam->prefixes[i].body, fam->params[0][0].name);
        const sl_st *in;
        if (checkpoint_get(ck, name, &in)) pre = &fam->prefixes[i];
    }
    if (!pre)
        return sl_errf_path(err, ck->index_path[0] ? ck->index_path : sl_st_path(ck->st[0]),
                            "missing tensor '%s%s' (nor under another prefix): not a %s checkpoint?",
                            fam->prefixes[0].body, fam->params[0][0].name, m->cfg.model_type);
    if (!(m->layer = calloc((size_t)L * N_LAYER_SLOTS, sizeof *m->layer))) return sl_errf(err, "out of memory");
    size_t total = 0;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1 && !(m->flat = malloc((total ? total : 1) * sizeof(float))))
            return sl_errf(err, "out of memory: %zu MiB of weights", total * sizeof(float) >> 20);
        size_t at = 0;
        for (int i = 0; i < fam->n_params[0] + fam->n_params[1]; i++) {
            const param_spec *p = i < fam->n_params[0] ? &fam->params[0][i] : &fam->params[1][i - fam->n_params[0]];
            for (int l = 0; l < (p->per_layer ? L : 1); l++) {
                const sl_tensor *t = NULL;
                const sl_st *in = NULL;
                if (find_param(m, ck, pre, p, l, &t, &in, err)) return -1;
                if (!t) continue;
                if (pass == 0) {
                    total += (size_t)t->numel;
                    continue;
                }
                float *dst = m->flat + at;
                if (sl_convert_to_f32(t->data, t->dtype, t->numel, dst) != 0)
                    return sl_errf_path(err, sl_st_path(in), "tensor '%s' has dtype %s; expected F32, F16 or BF16",
                                        t->name, sl_dtype_name(t->dtype));
                if (p->per_layer) m->layer[(size_t)l * N_LAYER_SLOTS + p->slot] = dst;
                else m->global[p->slot] = dst;
                at += (size_t)t->numel;
            }
        }
    }
    return 0;
}

/* Gemma's RMSNorms scale by (1 + w): the stored w becomes 1 + w once, in f32, as
 * transformers adds it before the product. */
static void gemma_norms(sl_model *m) {
    static const int norms[] = {L_LN1_W, L_POST_ATTN, L_LN2_W, L_POST_MLP, L_Q_NORM, L_K_NORM};
    for (int l = 0; l < m->cfg.n_layer; l++)
        for (size_t i = 0; i < sizeof norms / sizeof norms[0]; i++) {
            float *w = (float *)P(m, l, norms[i]);
            int n = norms[i] == L_Q_NORM || norms[i] == L_K_NORM ? m->cfg.head_dim : m->cfg.d_model;
            if (w)
                for (int k = 0; k < n; k++) w[k] = 1.0f + w[k];
        }
}

sl_model *sl_model_load(const char *dir, sl_err *err) {
    if (!dir) return sl_errf(err, "no model directory given"), NULL;
    sl_model *m = calloc(1, sizeof *m);
    if (!m) return sl_errf(err, "out of memory"), NULL;
    if (!(m->rt = calloc(1, sizeof *m->rt))) {
        free(m);
        return sl_errf(err, "out of memory"), NULL;
    }
    pthread_mutex_init(&m->rt->busy, NULL);
    m->rt->n_threads = sl_workpool_default_threads();
    checkpoint ck = {.n = 0};
    char weights_path[SL_PATH_MAX], bin_path[SL_PATH_MAX];
    struct stat sb;
    if (stat(dir, &sb) != 0) {
        sl_errf_path(err, dir, "cannot open model directory: %s", strerror(errno));
        goto fail;
    }
    if (!S_ISDIR(sb.st_mode)) {
        sl_errf_path(err, dir, "not a directory (a model is a directory with config.json and model.safetensors)");
        goto fail;
    }
    snprintf(m->cfg_path, sizeof m->cfg_path, "%s/config.json", dir);
    snprintf(weights_path, sizeof weights_path, "%s/model.safetensors", dir);
    snprintf(ck.index_path, sizeof ck.index_path, "%s/model.safetensors.index.json", dir);
    snprintf(bin_path, sizeof bin_path, "%s/pytorch_model.bin", dir);
    if (parse_config(m, m->cfg_path, err) != 0) goto fail;
    if (stat(weights_path, &sb) == 0) {
        ck.index_path[0] = 0;
        if (!(ck.st[0] = sl_st_open(weights_path, err))) goto fail;
        ck.n = 1;
    } else if (stat(ck.index_path, &sb) == 0) {
        if (open_sharded(&ck, dir, err)) goto fail;
    } else if (stat(bin_path, &sb) == 0) {
        sl_errf_path(err, weights_path,
                     "missing; the directory has pytorch_model.bin, which is not supported: convert it "
                     "to safetensors (save_pretrained(..., safe_serialization=True))");
        goto fail;
    } else {
        sl_errf_path(err, weights_path, "missing (nor model.safetensors.index.json with its shards)");
        goto fail;
    }
    if (load_weights(m, &ck, err) != 0) goto fail;
    checkpoint_close(&ck);
    if (strncmp(m->cfg.model_type, "gemma", 5) == 0) gemma_norms(m);
    return m;
fail:
    checkpoint_close(&ck);
    sl_model_free(m);
    return NULL;
}

/* ---- forward: the pool's jobs -------------------------------------------------- */

/* The forward's non-GEMM steps run as pool jobs. Each item is a range of rows (or one
 * (sequence, head) of attention) computed exactly as the serial loop would, so the
 * result does not depend on how items fall on threads. */
typedef enum fwd_op {
    OP_EMBED, OP_LAYER_NORM, OP_LN_PRE, OP_RMS_NORM, OP_RMS_PRE, OP_ADD, OP_SUB_BIAS, OP_GELU_TANH, OP_GELU_ERF,
    OP_GELU, OP_SWIGLU, OP_ROPE, OP_ATTENTION
} fwd_op;

/* Rows per item of the row-wise steps: large enough that the pool's lock per item is
 * noise (64 rows of d_model 768 is about 50k floats), small enough to balance. */
#define FWD_ROWS_PER_ITEM 64

typedef struct fwd_job {
    fwd_op op;
    int N, T, width;           /* width: floats per row of the row-wise op */
    const sl_model *m;
    const int32_t *tokens;
    const float *in, *w, *b;   /* row ops: input, weight, bias (SUB_BIAS: b [width]) */
    float *out;
    float eps;
    /* attention: q, k, v with their row strides and the distance between heads
     * (HD, or 3 HD in NeoX's q | k | v per head); out (z) with its own row stride */
    const float *q, *k, *v;
    int ldq, ldk, ldz, hs, NH, NKV, HD, window;
    float scale, softcap;
    float *att;                /* [workers, T, T] */
    /* RoPE and QK-norm of each row of q and k (same strides as above) */
    float *rq, *rk;
    const rope *rope;
    const float *q_norm, *k_norm;
    int bias_stride;           /* SUB_BIAS: distance between the heads' biases */
} fwd_job;

static void attention_item(const fwd_job *j, size_t item, int worker) {
    const int T = j->T, HD = j->HD;
    const int b = (int)(item / (size_t)j->NH), h = (int)(item % (size_t)j->NH), g = h / (j->NH / j->NKV);
    float *att = j->att + (size_t)worker * (size_t)T * (size_t)T;
    /* q of (b, h), k and v of (b, g): [T, HD] each, with their row strides */
    const float *q = j->q + (size_t)b * (size_t)T * (size_t)j->ldq + (size_t)h * (size_t)j->hs;
    const float *k = j->k + (size_t)b * (size_t)T * (size_t)j->ldk + (size_t)g * (size_t)j->hs;
    const float *v = j->v + (size_t)b * (size_t)T * (size_t)j->ldk + (size_t)g * (size_t)j->hs;
    /* att [T, T] = scale * q k^T */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, HD, j->scale, q, j->ldq, k, j->ldk, 0.0f, att, T);
    for (int t = 0; t < T; t++) {
        float *row = att + (size_t)t * (size_t)T;
        if (j->softcap > 0) /* Gemma-2: cap tanh(score / cap), before the mask */
            for (int s = 0; s <= t; s++) row[s] = tanhf(row[s] / j->softcap) * j->softcap;
        int lo = j->window && t - j->window + 1 > 0 ? t - j->window + 1 : 0; /* keys t - window < s <= t */
        if (lo) {
            for (int s = 0; s < lo; s++) row[s] = 0.0f;
            sl_softmax_causal_row(row + lo, t + 1 - lo, T - lo);
        } else {
            sl_softmax_causal_row(row, t + 1, T);
        }
    }
    /* z[b, :, h] [T, HD] = att v */
    float *zo = j->out + (size_t)b * (size_t)T * (size_t)j->ldz + (size_t)h * (size_t)HD;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, HD, T, 1.0f, att, T, v, j->ldk, 0.0f, zo, j->ldz);
}

/* RMSNorm over head_dim of each head of one row, with its weight (Qwen3's, Gemma-3's q_norm). */
static void head_norm(float *x, int heads, int hs, int HD, const float *w, float eps) {
    for (int h = 0; h < heads; h++) sl_rms_norm_row(x + (size_t)h * hs, w, x + (size_t)h * hs, HD, eps);
}

static void fwd_item(void *ctx, size_t item, int worker) {
    const fwd_job *j = ctx;
    if (j->op == OP_ATTENTION) {
        attention_item(j, item, worker);
        return;
    }
    const size_t W = (size_t)j->width;
    const int r0 = (int)item * FWD_ROWS_PER_ITEM;
    const int r1 = r0 + FWD_ROWS_PER_ITEM < j->N ? r0 + FWD_ROWS_PER_ITEM : j->N;
    const size_t lo = (size_t)r0 * W, hi = (size_t)r1 * W;
    const sl_model *m = j->m;
    switch (j->op) {
    case OP_EMBED: /* x[b, t] = wte[token] (+ wpe[t]) (* Gemma's sqrt(d_model)) */
        for (int i = r0; i < r1; i++) {
            const float *te = m->global[G_EMBED] + (size_t)j->tokens[i] * W;
            const float *pe = m->global[G_POS] ? m->global[G_POS] + (size_t)(i % j->T) * W : NULL;
            float *xr = j->out + (size_t)i * W;
            if (pe)
                for (size_t k = 0; k < W; k++) xr[k] = te[k] + pe[k];
            else if (m->embed_scale > 0)
                for (size_t k = 0; k < W; k++) xr[k] = te[k] * m->embed_scale;
            else
                memcpy(xr, te, W * sizeof(float));
        }
        break;
    case OP_LAYER_NORM:
        for (int r = r0; r < r1; r++) sl_layer_norm_row(j->in + (size_t)r * W, j->w, j->b, j->out + (size_t)r * W, j->width, j->eps);
        break;
    case OP_LN_PRE:
        for (int r = r0; r < r1; r++) sl_layer_norm_pre_row(j->in + (size_t)r * W, j->out + (size_t)r * W, j->width, j->eps);
        break;
    case OP_RMS_NORM:
    case OP_RMS_PRE:
        for (int r = r0; r < r1; r++)
            sl_rms_norm_row(j->in + (size_t)r * W, j->op == OP_RMS_NORM ? j->w : NULL, j->out + (size_t)r * W, j->width,
                            j->eps);
        break;
    case OP_ADD:
        for (size_t i = lo; i < hi; i++) j->out[i] += j->in[i];
        break;
    case OP_SUB_BIAS: /* out[r] -= b: per head of z, the value bias of its key/value group */
        for (int r = r0; r < r1; r++)
            for (int h = 0; h < j->NH; h++) {
                float *z = j->out + (size_t)r * W + (size_t)h * j->HD;
                const float *bv = j->b + (size_t)(h / (j->NH / j->NKV)) * (size_t)j->bias_stride;
                for (int d = 0; d < j->HD; d++) z[d] -= bv[d];
            }
        break;
    case OP_GELU_TANH:
        for (size_t i = lo; i < hi; i++) j->out[i] = sl_gelu_tanh(j->out[i]);
        break;
    case OP_GELU_ERF:
        for (size_t i = lo; i < hi; i++) j->out[i] = sl_gelu_erf(j->out[i]);
        break;
    case OP_GELU: /* NeoX's MLP: hidden_act */
        for (size_t i = lo; i < hi; i++)
            j->out[i] = m->gated_act == 0 ? sl_silu(j->out[i]) : m->gated_act == 1 ? sl_gelu_tanh(j->out[i])
                                                                                   : sl_gelu_erf(j->out[i]);
        break;
    case OP_SWIGLU: /* out (gate) = act(gate) * up (in): SwiGLU, GeGLU */
        for (size_t i = lo; i < hi; i++) {
            float g = j->out[i];
            g = m->gated_act == 0 ? sl_silu(g) : m->gated_act == 1 ? sl_gelu_tanh(g) : sl_gelu_erf(g);
            j->out[i] = g * j->in[i];
        }
        break;
    case OP_ROPE: /* QK-norm, then rotary embedding of every head of q and k, at the row's position */
        for (int r = r0; r < r1; r++) {
            float *q = j->rq + (size_t)r * (size_t)j->ldq, *k = j->rk + (size_t)r * (size_t)j->ldk;
            if (j->q_norm) {
                head_norm(q, j->NH, j->hs, j->HD, j->q_norm, j->eps);
                head_norm(k, j->NKV, j->hs, j->HD, j->k_norm, j->eps);
            }
            const int pos = r % j->T, dims = j->rope->dims;
            for (int h = 0; h < j->NH; h++) sl_rope_half(q + (size_t)h * j->hs, dims, j->rope->inv_freq, pos);
            for (int h = 0; h < j->NKV; h++) sl_rope_half(k + (size_t)h * j->hs, dims, j->rope->inv_freq, pos);
        }
        break;
    case OP_ATTENTION:
        break;
    }
}

/* Runs job j over all its items on the pool (NULL: on the caller). */
static void run_job(sl_workpool *pool, fwd_job *j) {
    size_t n = j->op == OP_ATTENTION ? (size_t)(j->N / j->T) * (size_t)j->NH
                                     : ((size_t)j->N + FWD_ROWS_PER_ITEM - 1) / FWD_ROWS_PER_ITEM;
    sl_workjob wj;
    sl_workpool_start(pool, &wj, n, fwd_item, j);
    sl_workpool_wait(pool, &wj);
}

static void rows_op(sl_workpool *pool, const sl_model *m, fwd_op op, const float *in, const float *w, const float *b,
                    float *out, int N, int width) {
    fwd_job j = {.op = op, .N = N, .T = 1, .width = width, .m = m, .in = in, .w = w, .b = b, .out = out,
                 .eps = m->cfg.layer_norm_eps};
    run_job(pool, &j);
}

/* B * NH small GEMMs (T x T x HD): OpenBLAS threading them costs more than it gains
 * (on 2 cores 22-101 GFLOP/s with 2 threads vs 97-117 with one), so each runs
 * single-threaded and the (sequence, head) pairs are spread over the pool. The BLAS
 * thread count is process-wide (0.3.21 has no per-call setting): it is restored for
 * the big GEMMs, and a forward on another model running meanwhile may get a big GEMM
 * single-threaded (slower, and rounded as one thread does). */
static void run_attention(sl_workpool *pool, fwd_job *aj) {
    const int blas_threads = openblas_get_num_threads();
    if (blas_threads > 1) openblas_set_num_threads(1);
    run_job(pool, aj);
    if (blas_threads > 1) openblas_set_num_threads(blas_threads);
}

/* out [N, OC] = in [N, IC] W [IC, OC] + bias [OC] (GPT-2's Conv1D). */
static void conv1d(const float *in, const float *W, const float *bias, float *out, int N, int IC, int OC) {
    for (int r = 0; r < N; r++) memcpy(out + (size_t)r * (size_t)OC, bias, (size_t)OC * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, OC, IC, 1.0f, in, IC, W, OC, 1.0f, out, OC);
}

/* out [N, OC] = in [N, IC] W^T (+ bias [OC]), W [OC, IC] (nn.Linear). */
static void linear(const float *in, const float *W, const float *bias, float *out, int N, int IC, int OC) {
    if (bias)
        for (int r = 0; r < N; r++) memcpy(out + (size_t)r * (size_t)OC, bias, (size_t)OC * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, IC, 1.0f, in, IC, W, IC, bias ? 1.0f : 0.0f, out, OC);
}

/* The pool for this forward, with rt->busy held; NULL (serial) when another forward
 * holds it, when the pool has no threads, or when its threads could not start. */
static sl_workpool *take_pool(const sl_model *m, int *held) {
    sl_model_rt *rt = m->rt;
    *held = pthread_mutex_trylock(&rt->busy) == 0;
    if (!*held) return NULL;
    if (!rt->pool_tried && rt->n_threads > 0) {
        sl_err ignored = {{0}};
        rt->pool = sl_workpool_new(rt->n_threads, 0, &ignored); /* failing costs only speed */
        rt->pool_tried = 1;
    }
    return rt->pool;
}

/* ---- forward: workspace and layers ---------------------------------------------- */

/* Whether the pass up to `hook` runs any block / the hook layer's MLP. */
static int runs_block(sl_hook hook) { return !(hook.kind == SL_HOOK_RESID_PRE && hook.layer == 0); }
static int runs_mlp(sl_hook hook) {
    return hook.layer > 0 || hook.kind == SL_HOOK_MLP_OUT || hook.kind == SL_HOOK_RESID_POST;
}

/* Workspace (floats, in this order):
 *   x    [N, C]          residual stream
 *   buf  [N, C]          norm output, then the attention's / MLP's output
 *   z    [N, Q]          attention output, heads concatenated (input of the projection)
 *   big  [N, wide]       GPT-2: qkv [N, 3C], then the MLP's h [N, F];
 *                        Llama: q | k | v [N, Q + 2K], then gate | up [N, 2F]
 *   att  [W, T, T]       scores of one (sequence, head) per worker, W = pool threads + 1
 * Only x when no block runs (blocks.0.hook_resid_pre); no MLP part when none runs. */
static size_t wide_floats(const sl_model *m, sl_hook hook) {
    const sl_model_config *c = &m->cfg;
    const size_t C = (size_t)c->d_model, F = (size_t)c->d_mlp, Q = (size_t)c->n_head * c->head_dim,
                 K = (size_t)c->n_kv_head * c->head_dim;
    const int ungated = c->family == SL_FAMILY_GPT2 || c->family == SL_FAMILY_NEOX;
    size_t attn = ungated ? 3 * C : Q + 2 * K;
    size_t mlp = runs_mlp(hook) ? (ungated ? F : 2 * F) : 0;
    return attn > mlp ? attn : mlp;
}

size_t sl_model_workspace_floats(const sl_model *m, int n_seq, int seq_len, sl_hook hook) {
    if (n_seq <= 0 || seq_len <= 0) return 0;
    const size_t N = (size_t)n_seq * (size_t)seq_len, T = (size_t)seq_len, C = (size_t)m->cfg.d_model;
    const size_t Q = (size_t)m->cfg.n_head * m->cfg.head_dim;
    if (!runs_block(hook)) return N * C;
    return 2 * N * C + N * Q + N * wide_floats(m, hook) + ((size_t)m->rt->n_threads + 1) * T * T;
}

typedef struct fwd_state {
    const sl_model *m;
    sl_workpool *pool;
    int N, T;
    float *x, *buf, *z, *big, *att;
} fwd_state;

/* Copies the hook's rows [N, width] to out and says the forward is done. */
static int emit(const fwd_state *s, const float *src, int width, float *out) {
    memcpy(out, src, (size_t)s->N * (size_t)width * sizeof(float));
    return 1;
}

/* GPT-2 block l; returns 1 when it reached the hook (out written). */
static int gpt2_layer(fwd_state *s, int l, sl_hook hook, float *out) {
    const sl_model *m = s->m;
    const int C = m->cfg.d_model, NH = m->cfg.n_head, HS = m->cfg.head_dim, F = m->cfg.d_mlp, N = s->N;
    const int at = l == hook.layer;
    float *qkv = s->big; /* [N, 3C]: per row Q | K | V, head h at columns h*HS of each */
    rows_op(s->pool, m, OP_LAYER_NORM, s->x, P(m, l, L_LN1_W), P(m, l, L_LN1_B), s->buf, N, C);
    conv1d(s->buf, P(m, l, L_QKV_W), P(m, l, L_QKV_B), qkv, N, C, 3 * C);
    float scale = m->scale_attn_weights ? 1.0f / sqrtf((float)HS) : 1.0f;
    if (m->scale_attn_by_inverse_layer_idx) scale /= (float)(l + 1);
    fwd_job aj = {.op = OP_ATTENTION, .N = N, .T = s->T, .m = m, .q = qkv, .k = qkv + C, .v = qkv + 2 * C,
                  .ldq = 3 * C, .ldk = 3 * C, .ldz = C, .hs = HS, .NH = NH, .NKV = NH, .HD = HS, .scale = scale,
                  .att = s->att, .out = s->z};
    run_attention(s->pool, &aj);
    if (at && hook.kind == SL_HOOK_ATTN_Z) { /* without the value bias (TransformerLens folds it into c_proj's) */
        fwd_job sj = {.op = OP_SUB_BIAS, .N = N, .T = 1, .width = C, .m = m, .b = P(m, l, L_QKV_B) + 2 * C,
                      .out = s->z, .NH = NH, .NKV = NH, .HD = HS, .bias_stride = HS};
        run_job(s->pool, &sj);
        return emit(s, s->z, C, out);
    }
    conv1d(s->z, P(m, l, L_O_W), P(m, l, L_O_B), s->buf, N, C, C); /* buf = attn_out [N, C] */
    if (at && hook.kind == SL_HOOK_ATTN_OUT) return emit(s, s->buf, C, out);
    rows_op(s->pool, m, OP_ADD, s->buf, NULL, NULL, s->x, N, C);
    if (at && hook.kind == SL_HOOK_RESID_MID) return emit(s, s->x, C, out);
    if (at && hook.kind == SL_HOOK_LN2_NORMALIZED) {
        rows_op(s->pool, m, OP_LN_PRE, s->x, NULL, NULL, s->buf, N, C);
        return emit(s, s->buf, C, out);
    }
    float *hid = s->big; /* [N, F] */
    rows_op(s->pool, m, OP_LAYER_NORM, s->x, P(m, l, L_LN2_W), P(m, l, L_LN2_B), s->buf, N, C);
    conv1d(s->buf, P(m, l, L_UP_W), P(m, l, L_UP_B), hid, N, C, F);
    rows_op(s->pool, m, m->act == SL_ACT_GELU_TANH ? OP_GELU_TANH : OP_GELU_ERF, NULL, NULL, NULL, hid, N, F);
    conv1d(hid, P(m, l, L_DOWN_W), P(m, l, L_DOWN_B), s->buf, N, F, C); /* buf = mlp_out [N, C] */
    if (at && hook.kind == SL_HOOK_MLP_OUT) return emit(s, s->buf, C, out);
    rows_op(s->pool, m, OP_ADD, s->buf, NULL, NULL, s->x, N, C);
    return 0;
}

/* Llama-family block l: pre-norm, RoPE, grouped-query attention, a gated MLP; with
 * Gemma-2's norms after the attention and after the MLP when the model has them
 * (TransformerLens's hook_attn_out and hook_mlp_out are after those). */
static int llama_layer(fwd_state *s, int l, sl_hook hook, float *out) {
    const sl_model *m = s->m;
    const sl_model_config *c = &m->cfg;
    const int C = c->d_model, NH = c->n_head, NKV = c->n_kv_head, HD = c->head_dim, F = c->d_mlp, N = s->N;
    const int Q = NH * HD, K = NKV * HD, at = l == hook.layer;
    /* q | k | v side by side in big: row r of q at big + r * (Q + 2K) */
    const int ld = Q + 2 * K;
    float *q = s->big, *k = q + Q, *v = k + K;
    rows_op(s->pool, m, OP_RMS_NORM, s->x, P(m, l, L_LN1_W), NULL, s->buf, N, C);
    /* Each projection into its columns of big: a strided GEMM per matrix. */
    const float *Wp[3] = {P(m, l, L_Q_W), P(m, l, L_K_W), P(m, l, L_V_W)};
    const float *bp[3] = {P(m, l, L_Q_B), P(m, l, L_K_B), P(m, l, L_V_B)};
    float *dst[3] = {q, k, v};
    const int width[3] = {Q, K, K};
    for (int i = 0; i < 3; i++) {
        if (bp[i])
            for (int r = 0; r < N; r++) memcpy(dst[i] + (size_t)r * ld, bp[i], (size_t)width[i] * sizeof(float));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, width[i], C, 1.0f, s->buf, C, Wp[i], C,
                    bp[i] ? 1.0f : 0.0f, dst[i], ld);
    }
    fwd_job rj = {.op = OP_ROPE, .N = N, .T = s->T, .width = 1, .m = m, .rq = q, .rk = k, .ldq = ld, .ldk = ld,
                  .hs = HD, .NH = NH, .NKV = NKV, .HD = HD, .rope = &m->rope[m->window[l] ? 1 : 0],
                  .q_norm = P(m, l, L_Q_NORM), .k_norm = P(m, l, L_K_NORM), .eps = c->layer_norm_eps};
    run_job(s->pool, &rj);
    fwd_job aj = {.op = OP_ATTENTION, .N = N, .T = s->T, .m = m, .q = q, .k = k, .v = v, .ldq = ld, .ldk = ld,
                  .ldz = Q, .hs = HD, .NH = NH, .NKV = NKV, .HD = HD, .window = m->window[l], .scale = m->attn_scale,
                  .softcap = m->softcap, .att = s->att, .out = s->z};
    run_attention(s->pool, &aj);
    if (at && hook.kind == SL_HOOK_ATTN_Z) {
        if (P(m, l, L_V_B)) { /* without the value bias (TransformerLens folds it into the output bias) */
            fwd_job sj = {.op = OP_SUB_BIAS, .N = N, .T = 1, .width = Q, .m = m, .b = P(m, l, L_V_B),
                          .out = s->z, .NH = NH, .NKV = NKV, .HD = HD, .bias_stride = HD};
            run_job(s->pool, &sj);
        }
        return emit(s, s->z, Q, out);
    }
    linear(s->z, P(m, l, L_O_W), P(m, l, L_O_B), s->buf, N, Q, C); /* buf = attn_out [N, C] */
    if (P(m, l, L_POST_ATTN)) rows_op(s->pool, m, OP_RMS_NORM, s->buf, P(m, l, L_POST_ATTN), NULL, s->buf, N, C);
    if (at && hook.kind == SL_HOOK_ATTN_OUT) return emit(s, s->buf, C, out);
    rows_op(s->pool, m, OP_ADD, s->buf, NULL, NULL, s->x, N, C);
    if (at && hook.kind == SL_HOOK_RESID_MID) return emit(s, s->x, C, out);
    if (at && hook.kind == SL_HOOK_LN2_NORMALIZED) {
        rows_op(s->pool, m, OP_RMS_PRE, s->x, NULL, NULL, s->buf, N, C);
        return emit(s, s->buf, C, out);
    }
    float *gate = s->big, *up = gate + (size_t)N * F; /* [N, F] each */
    rows_op(s->pool, m, OP_RMS_NORM, s->x, P(m, l, L_LN2_W), NULL, s->buf, N, C);
    linear(s->buf, P(m, l, L_GATE_W), P(m, l, L_GATE_B), gate, N, C, F);
    linear(s->buf, P(m, l, L_UP_W), P(m, l, L_UP_B), up, N, C, F);
    rows_op(s->pool, m, OP_SWIGLU, up, NULL, NULL, gate, N, F);
    linear(gate, P(m, l, L_DOWN_W), P(m, l, L_DOWN_B), s->buf, N, F, C); /* buf = mlp_out [N, C] */
    if (P(m, l, L_POST_MLP)) rows_op(s->pool, m, OP_RMS_NORM, s->buf, P(m, l, L_POST_MLP), NULL, s->buf, N, C);
    if (at && hook.kind == SL_HOOK_MLP_OUT) return emit(s, s->buf, C, out);
    rows_op(s->pool, m, OP_ADD, s->buf, NULL, NULL, s->x, N, C);
    return 0;
}

/* GPT-NeoX block l: LayerNorms, fused q | k | v per head, partial RoPE, a GELU MLP;
 * parallel (x + attn(ln1 x) + mlp(ln2 x)) or sequential residual. */
static int neox_layer(fwd_state *s, int l, sl_hook hook, float *out) {
    const sl_model *m = s->m;
    const sl_model_config *c = &m->cfg;
    const int C = c->d_model, NH = c->n_head, HD = c->head_dim, F = c->d_mlp, N = s->N, at = l == hook.layer;
    float *qkv = s->big; /* [N, 3C]: per head h, columns h*3HD: q | k | v */
    rows_op(s->pool, m, OP_LAYER_NORM, s->x, P(m, l, L_LN1_W), P(m, l, L_LN1_B), s->buf, N, C);
    linear(s->buf, P(m, l, L_QKV_W), P(m, l, L_QKV_B), qkv, N, C, 3 * C);
    fwd_job rj = {.op = OP_ROPE, .N = N, .T = s->T, .width = 1, .m = m, .rq = qkv, .rk = qkv + HD, .ldq = 3 * C,
                  .ldk = 3 * C, .hs = 3 * HD, .NH = NH, .NKV = NH, .HD = HD, .rope = &m->rope[0]};
    run_job(s->pool, &rj);
    fwd_job aj = {.op = OP_ATTENTION, .N = N, .T = s->T, .m = m, .q = qkv, .k = qkv + HD, .v = qkv + 2 * HD,
                  .ldq = 3 * C, .ldk = 3 * C, .ldz = C, .hs = 3 * HD, .NH = NH, .NKV = NH, .HD = HD,
                  .scale = m->attn_scale, .att = s->att, .out = s->z};
    run_attention(s->pool, &aj);
    if (at && hook.kind == SL_HOOK_ATTN_Z) {
        if (P(m, l, L_QKV_B)) { /* without the value bias, as TransformerLens folds it */
            fwd_job sj = {.op = OP_SUB_BIAS, .N = N, .T = 1, .width = C, .m = m, .b = P(m, l, L_QKV_B) + 2 * HD,
                          .out = s->z, .NH = NH, .NKV = NH, .HD = HD, .bias_stride = 3 * HD};
            run_job(s->pool, &sj);
        }
        return emit(s, s->z, C, out);
    }
    linear(s->z, P(m, l, L_O_W), P(m, l, L_O_B), s->buf, N, C, C); /* buf = attn_out [N, C] */
    if (at && hook.kind == SL_HOOK_ATTN_OUT) return emit(s, s->buf, C, out);
    float *mlp_in = s->z, *hid = s->big; /* z [N, C] is free again; hid [N, F] */
    if (!m->parallel) {
        rows_op(s->pool, m, OP_ADD, s->buf, NULL, NULL, s->x, N, C);
        if (at && hook.kind == SL_HOOK_RESID_MID) return emit(s, s->x, C, out);
    }
    /* the MLP reads x: resid_mid, or resid_pre when parallel */
    if (at && hook.kind == SL_HOOK_LN2_NORMALIZED) {
        rows_op(s->pool, m, OP_LN_PRE, s->x, NULL, NULL, mlp_in, N, C);
        return emit(s, mlp_in, C, out);
    }
    rows_op(s->pool, m, OP_LAYER_NORM, s->x, P(m, l, L_LN2_W), P(m, l, L_LN2_B), mlp_in, N, C);
    linear(mlp_in, P(m, l, L_UP_W), P(m, l, L_UP_B), hid, N, C, F);
    rows_op(s->pool, m, OP_GELU, NULL, NULL, NULL, hid, N, F);
    linear(hid, P(m, l, L_DOWN_W), P(m, l, L_DOWN_B), mlp_in, N, F, C); /* mlp_in = mlp_out [N, C] */
    if (at && hook.kind == SL_HOOK_MLP_OUT) return emit(s, mlp_in, C, out);
    if (m->parallel) rows_op(s->pool, m, OP_ADD, s->buf, NULL, NULL, mlp_in, N, C); /* mlp + attn, then + x */
    rows_op(s->pool, m, OP_ADD, mlp_in, NULL, NULL, s->x, N, C);
    return 0;
}

static int forward(const sl_model *m, sl_workpool *pool, const int32_t *tokens, int B, int T, sl_hook hook,
                   float *out, float *ws) {
    const sl_model_config *c = &m->cfg;
    const int C = c->d_model, N = B * T;
    const size_t NC = (size_t)N * (size_t)C;
    fwd_state s = {.m = m, .pool = pool, .N = N, .T = T, .x = ws};
    fwd_job emb = {.op = OP_EMBED, .N = N, .T = T, .width = C, .m = m, .tokens = tokens, .out = s.x};
    run_job(pool, &emb);
    if (!runs_block(hook)) return emit(&s, s.x, C, out), 0; /* blocks.0.hook_resid_pre: the workspace is x alone */
    s.buf = s.x + NC;
    s.z = s.buf + NC;
    s.big = s.z + (size_t)N * (size_t)c->n_head * (size_t)c->head_dim;
    s.att = s.big + (size_t)N * wide_floats(m, hook);
    int (*layer)(fwd_state *, int, sl_hook, float *) = c->family == SL_FAMILY_GPT2   ? gpt2_layer
                                                       : c->family == SL_FAMILY_NEOX ? neox_layer
                                                                                     : llama_layer;
    for (int l = 0; l <= hook.layer; l++) {
        if (hook.kind == SL_HOOK_RESID_PRE && l == hook.layer) break;
        if (layer(&s, l, hook, out)) return 0;
    }
    emit(&s, s.x, C, out); /* resid_pre or resid_post of hook.layer */
    return 0;
}

int sl_model_forward(const sl_model *m, const int32_t *tokens, int n_seq, int seq_len, sl_hook hook, float *out,
                     float *ws, sl_err *err) {
    const sl_model_config *c = &m->cfg;
    if (sl_model_check_hook(m, hook, err) != 0) return -1;
    if (n_seq < 1) return sl_errf(err, "no sequences to run (n_seq %d)", n_seq);
    if (seq_len < 1 || seq_len > c->n_positions)
        return sl_errf_path(err, m->cfg_path, "sequence length %d is outside [1, n_positions = %d]", seq_len,
                            c->n_positions);
    const int B = n_seq, T = seq_len;
    if ((size_t)B * (size_t)T > (size_t)(1 << 30)) return sl_errf(err, "batch of %d x %d tokens is too large", B, T);
    const int N = B * T;
    for (int i = 0; i < N; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
            return sl_errf_path(err, m->cfg_path,
                                "token id %d (sequence %d, position %d) is outside the vocabulary [0, %d)",
                                (int)tokens[i], i / T, i % T, c->vocab_size);
    int held;
    sl_workpool *pool = take_pool(m, &held);
    int rc = forward(m, pool, tokens, B, T, hook, out, ws);
    if (held) pthread_mutex_unlock(&m->rt->busy);
    return rc;
}
