/* model.c: GPT-2-family forward pass on the CPU, up to a hook.
 *
 * Shapes below use llm.c's letters: B sequences of T tokens, N = B*T rows,
 * C = d_model, NH heads of HS = C/NH, F = d_mlp, V = vocab_size.
 *
 * Every layer of the checkpoint is loaded (converted to f32 once) even though a
 * given forward pass stops at its hook: the model is loaded once and serves
 * any hook. ln_f is not loaded; no hook needs it. */
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

typedef enum sl_act { SL_ACT_GELU_TANH, SL_ACT_GELU_ERF } sl_act;

typedef struct sl_block {
    float *ln1_w, *ln1_b;   /* [C] */
    float *attn_w;          /* [C, 3C] Conv1D: y = x W + b, columns Q|K|V */
    float *attn_b;          /* [3C] */
    float *attn_proj_w;     /* [C, C] */
    float *attn_proj_b;     /* [C] */
    float *ln2_w, *ln2_b;   /* [C] */
    float *fc_w;            /* [C, F] */
    float *fc_b;            /* [F] */
    float *mlp_proj_w;      /* [F, C] */
    float *mlp_proj_b;      /* [C] */
} sl_block;

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
    sl_act act;
    int scale_attn_weights;              /* divide scores by sqrt(HS) (HF default true) */
    int scale_attn_by_inverse_layer_idx; /* and by layer + 1 (HF default false) */
    char cfg_path[SL_PATH_MAX];
    float *wte; /* [V, C] */
    float *wpe; /* [n_positions, C] */
    sl_block *blocks; /* [n_layer] */
};

/* ---- hooks ---------------------------------------------------------------- */

static const char *const hook_suffix[] = {
    [SL_HOOK_RESID_PRE] = "hook_resid_pre",
    [SL_HOOK_ATTN_OUT] = "hook_attn_out",
    [SL_HOOK_MLP_OUT] = "hook_mlp_out",
    [SL_HOOK_RESID_POST] = "hook_resid_post",
};

#define SL_HOOK_SPELLINGS                                                                          \
    "blocks.L.hook_resid_pre, blocks.L.hook_attn_out, blocks.L.hook_mlp_out, "                     \
    "blocks.L.hook_resid_post, with L the layer number from 0"

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
    for (int k = 0; k < 4; k++) {
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
    if ((int)hook.kind < 0 || (int)hook.kind > SL_HOOK_RESID_POST)
        return sl_errf(err, "invalid hook kind %d", (int)hook.kind);
    if (hook.layer < 0 || hook.layer >= m->cfg.n_layer)
        return sl_errf_path(err, m->cfg_path,
                            "hook blocks.%d.%s is beyond the model's %d layers (blocks.0 to blocks.%d)",
                            hook.layer, hook_suffix[hook.kind], m->cfg.n_layer, m->cfg.n_layer - 1);
    return 0;
}

/* ---- loading -------------------------------------------------------------- */

const sl_model_config *sl_model_config_of(const sl_model *m) { return &m->cfg; }

void sl_model_get_view(const sl_model *m, sl_model_view *v, sl_model_layer_view *layers) {
    v->cfg = m->cfg;
    v->gelu_erf = m->act == SL_ACT_GELU_ERF;
    v->scale_attn_weights = m->scale_attn_weights;
    v->scale_attn_by_inverse_layer_idx = m->scale_attn_by_inverse_layer_idx;
    v->wte = m->wte;
    v->wpe = m->wpe;
    for (int l = 0; l < m->cfg.n_layer; l++) {
        const sl_block *b = &m->blocks[l];
        layers[l] = (sl_model_layer_view){b->ln1_w, b->ln1_b, b->attn_w,  b->attn_b,     b->attn_proj_w, b->attn_proj_b,
                                          b->ln2_w, b->ln2_b, b->fc_w,    b->fc_b,       b->mlp_proj_w,  b->mlp_proj_b};
    }
    v->layers = layers;
}

static void free_block(sl_block *b) {
    free(b->ln1_w);
    free(b->ln1_b);
    free(b->attn_w);
    free(b->attn_b);
    free(b->attn_proj_w);
    free(b->attn_proj_b);
    free(b->ln2_w);
    free(b->ln2_b);
    free(b->fc_w);
    free(b->fc_b);
    free(b->mlp_proj_w);
    free(b->mlp_proj_b);
}

void sl_model_free(sl_model *m) {
    if (!m) return;
    if (m->rt) {
        sl_workpool_free(m->rt->pool);
        pthread_mutex_destroy(&m->rt->busy);
        free(m->rt);
    }
    if (m->blocks)
        for (int l = 0; l < m->cfg.n_layer; l++) free_block(&m->blocks[l]);
    free(m->blocks);
    free(m->wte);
    free(m->wpe);
    free(m);
}

/* An integer config value: required (def < lo) or defaulted when missing/null. */
static int cfg_int(json_t *cfg, const char *key, long long def, long long lo, long long hi, int *out,
                   const char *path, sl_err *err) {
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
    json_t *v = json_object_get(cfg, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_boolean(v)) return sl_errf_path(err, path, "'%s' must be true or false", key);
    *out = json_is_true(v);
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
    json_t *mt = json_object_get(cfg, "model_type");
    if (!json_is_string(mt)) {
        sl_errf_path(err, path, "missing 'model_type' (only \"gpt2\" models are supported)");
        goto done;
    }
    if (strcmp(json_string_value(mt), "gpt2") != 0) {
        sl_errf_path(err, path, "model_type '%s' is not supported (only \"gpt2\")", json_string_value(mt));
        goto done;
    }
    if (cfg_int(cfg, "vocab_size", -1, 1, 1 << 24, &c->vocab_size, path, err) ||
        cfg_int(cfg, "n_embd", -1, 1, 1 << 16, &c->d_model, path, err) ||
        cfg_int(cfg, "n_layer", -1, 1, 1 << 12, &c->n_layer, path, err) ||
        cfg_int(cfg, "n_head", -1, 1, 1 << 12, &c->n_head, path, err))
        goto done;
    const char *pos_key = json_object_get(cfg, "n_positions") ? "n_positions" : "n_ctx";
    if (cfg_int(cfg, pos_key, -1, 1, 1 << 20, &c->n_positions, path, err)) goto done;
    if (cfg_int(cfg, "n_inner", 4LL * c->d_model, 1, 1 << 20, &c->d_mlp, path, err)) goto done;
    if (c->d_model % c->n_head != 0) {
        sl_errf_path(err, path, "n_embd %d is not a multiple of n_head %d", c->d_model, c->n_head);
        goto done;
    }
    json_t *eps = json_object_get(cfg, "layer_norm_epsilon");
    c->layer_norm_eps = 1e-5f;
    if (eps && !json_is_null(eps)) {
        /* checked as the f32 the layer norm uses: 1e-105 is > 0 but rounds to 0 */
        float e = json_is_number(eps) ? (float)json_number_value(eps) : 0.0f;
        if (!(e > 0.0f) || e >= 1.0f) {
            sl_errf_path(err, path, "'layer_norm_epsilon' must be a number in (0, 1) (as a 32-bit float)");
            goto done;
        }
        c->layer_norm_eps = e;
    }
    json_t *act = json_object_get(cfg, "activation_function");
    const char *a = act && !json_is_null(act) ? json_string_value(act) : "gelu_new";
    if (!a) {
        sl_errf_path(err, path, "'activation_function' must be a string");
        goto done;
    }
    if (strcmp(a, "gelu_new") == 0 || strcmp(a, "gelu_pytorch_tanh") == 0 || strcmp(a, "gelu_fast") == 0)
        m->act = SL_ACT_GELU_TANH;
    else if (strcmp(a, "gelu") == 0)
        m->act = SL_ACT_GELU_ERF;
    else {
        sl_errf_path(err, path,
                     "activation_function '%s' is not supported (supported: gelu_new, gelu_pytorch_tanh, "
                     "gelu_fast, gelu)",
                     a);
        goto done;
    }
    if (cfg_bool(cfg, "scale_attn_weights", 1, &m->scale_attn_weights, path, err) ||
        cfg_bool(cfg, "scale_attn_by_inverse_layer_idx", 0, &m->scale_attn_by_inverse_layer_idx, path, err) ||
        cfg_token(cfg, "bos_token_id", c->vocab_size, &c->bos_token_id, path, err) ||
        cfg_token(cfg, "eos_token_id", c->vocab_size, &c->eos_token_id, path, err))
        goto done;
    rc = 0;
done:
    json_decref(cfg);
    return rc;
}

/* Loads prefix + name with the expected shape (ndim 1 or 2). */
static float *load_t(const sl_st *st, const char *prefix, const char *name, int64_t d0, int64_t d1,
                     sl_err *err) {
    char full[256];
    snprintf(full, sizeof full, "%s%s", prefix, name);
    int64_t shape[2] = {d0, d1};
    return sl_st_load_f32(st, full, d1 > 0 ? 2 : 1, shape, err);
}

static int load_weights(sl_model *m, const sl_st *st, sl_err *err) {
    const sl_model_config *c = &m->cfg;
    const int64_t C = c->d_model, F = c->d_mlp;
    const char *prefix;
    if (sl_st_get(st, "wte.weight"))
        prefix = "";
    else if (sl_st_get(st, "transformer.wte.weight"))
        prefix = "transformer.";
    else
        return sl_errf_path(err, sl_st_path(st),
                            "missing tensor 'wte.weight' (nor 'transformer.wte.weight'): not a GPT-2 checkpoint?");
    if (!(m->wte = load_t(st, prefix, "wte.weight", c->vocab_size, C, err))) return -1;
    if (!(m->wpe = load_t(st, prefix, "wpe.weight", c->n_positions, C, err))) return -1;
    if (!(m->blocks = calloc((size_t)c->n_layer, sizeof *m->blocks))) return sl_errf(err, "out of memory");
    for (int l = 0; l < c->n_layer; l++) {
        sl_block *b = &m->blocks[l];
        char pre[64];
        snprintf(pre, sizeof pre, "%sh.%d.", prefix, l);
        if (!(b->ln1_w = load_t(st, pre, "ln_1.weight", C, 0, err)) ||
            !(b->ln1_b = load_t(st, pre, "ln_1.bias", C, 0, err)) ||
            !(b->attn_w = load_t(st, pre, "attn.c_attn.weight", C, 3 * C, err)) ||
            !(b->attn_b = load_t(st, pre, "attn.c_attn.bias", 3 * C, 0, err)) ||
            !(b->attn_proj_w = load_t(st, pre, "attn.c_proj.weight", C, C, err)) ||
            !(b->attn_proj_b = load_t(st, pre, "attn.c_proj.bias", C, 0, err)) ||
            !(b->ln2_w = load_t(st, pre, "ln_2.weight", C, 0, err)) ||
            !(b->ln2_b = load_t(st, pre, "ln_2.bias", C, 0, err)) ||
            !(b->fc_w = load_t(st, pre, "mlp.c_fc.weight", C, F, err)) ||
            !(b->fc_b = load_t(st, pre, "mlp.c_fc.bias", F, 0, err)) ||
            !(b->mlp_proj_w = load_t(st, pre, "mlp.c_proj.weight", F, C, err)) ||
            !(b->mlp_proj_b = load_t(st, pre, "mlp.c_proj.bias", C, 0, err)))
            return -1;
    }
    return 0;
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
    snprintf(bin_path, sizeof bin_path, "%s/pytorch_model.bin", dir);
    if (parse_config(m, m->cfg_path, err) != 0) goto fail;
    if (stat(weights_path, &sb) != 0 && stat(bin_path, &sb) == 0) {
        sl_errf_path(err, weights_path,
                     "missing; the directory has pytorch_model.bin, which is not supported: convert it "
                     "to safetensors (save_pretrained(..., safe_serialization=True))");
        goto fail;
    }
    sl_st *st = sl_st_open(weights_path, err);
    if (!st) goto fail;
    int rc = load_weights(m, st, err);
    sl_st_close(st);
    if (rc != 0) goto fail;
    return m;
fail:
    sl_model_free(m);
    return NULL;
}

/* ---- forward -------------------------------------------------------------- */

/* Whether the pass up to `hook` runs any block / any MLP. */
static int runs_block(sl_hook hook) { return !(hook.kind == SL_HOOK_RESID_PRE && hook.layer == 0); }
static int runs_mlp(sl_hook hook) {
    return hook.layer > 0 || hook.kind == SL_HOOK_MLP_OUT || hook.kind == SL_HOOK_RESID_POST;
}

/* Workspace layout (floats, in this order):
 *   x    [N, C]            residual stream
 *   buf  [N, C]            layer-norm output, then the c_proj output of attention / MLP
 *   y    [N, C]            attention output, heads concatenated (input of attn c_proj)
 *   big  [N, max(3C, F)]   qkv [N, 3C] during attention; MLP hidden h [N, F] after it
 *   att  [W, T, T]         scores / probabilities of one (sequence, head) per worker,
 *                          W = the model's pool threads + 1 (the caller works too)
 * Only x when no block runs (blocks.0.hook_resid_pre); no F part when no MLP runs. */
size_t sl_model_workspace_floats(const sl_model *m, int n_seq, int seq_len, sl_hook hook) {
    if (n_seq <= 0 || seq_len <= 0) return 0;
    const size_t N = (size_t)n_seq * (size_t)seq_len, T = (size_t)seq_len;
    const size_t C = (size_t)m->cfg.d_model, F = (size_t)m->cfg.d_mlp;
    if (!runs_block(hook)) return N * C;
    size_t wide = 3 * C;
    if (runs_mlp(hook) && F > wide) wide = F;
    return 3 * N * C + N * wide + ((size_t)m->rt->n_threads + 1) * T * T;
}

/* out [N, OC] = in [N, IC] W [IC, OC] + bias [OC] (Conv1D). */
static void conv1d(const float *in, const float *W, const float *bias, float *out, int N, int IC, int OC) {
    for (int r = 0; r < N; r++) memcpy(out + (size_t)r * (size_t)OC, bias, (size_t)OC * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, OC, IC, 1.0f, in, IC, W, OC, 1.0f, out, OC);
}

/* The forward's non-GEMM steps run as pool jobs. Each item is a range of rows (or one
 * (sequence, head) of attention) computed exactly as the serial loop would, so the
 * result does not depend on how items fall on threads. */
typedef enum fwd_op { OP_EMBED, OP_LAYER_NORM, OP_ADD, OP_GELU_TANH, OP_GELU_ERF, OP_ATTENTION } fwd_op;

/* Rows per item of the row-wise steps: large enough that the pool's lock per item is
 * noise (64 rows of d_model 768 is about 50k floats), small enough to balance. */
#define FWD_ROWS_PER_ITEM 64

typedef struct fwd_job {
    fwd_op op;
    int N, T, C, NH, HS, width; /* width: floats per row of the row-wise op */
    const sl_model *m;
    const int32_t *tokens;
    const float *in, *w, *b;
    float *out;
    float eps, scale;
    float *att; /* [workers, T, T] */
} fwd_job;

static void attention_item(const fwd_job *j, size_t item, int worker) {
    const int T = j->T, C = j->C, HS = j->HS, ld = 3 * C;
    const int b = (int)(item / (size_t)j->NH), h = (int)(item % (size_t)j->NH);
    float *att = j->att + (size_t)worker * (size_t)T * (size_t)T;
    /* q, k, v of (b, h): [T, HS] each, row stride 3C, inside qkv (j->in) */
    const float *q = j->in + (size_t)b * (size_t)T * (size_t)ld + (size_t)h * (size_t)HS;
    const float *k = q + C;
    const float *v = q + 2 * C;
    /* att [T, T] = scale * q k^T */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, HS, j->scale, q, ld, k, ld, 0.0f, att, T);
    for (int t = 0; t < T; t++) sl_softmax_causal_row(att + (size_t)t * (size_t)T, t + 1, T);
    /* y[b, :, h] [T, HS] ld C = att v */
    float *yo = j->out + (size_t)b * (size_t)T * (size_t)C + (size_t)h * (size_t)HS;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, HS, T, 1.0f, att, T, v, ld, 0.0f, yo, C);
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
    switch (j->op) {
    case OP_EMBED: /* x[b, t] = wte[token] + wpe[t] */
        for (int i = r0; i < r1; i++) {
            const float *te = j->m->wte + (size_t)j->tokens[i] * W, *pe = j->m->wpe + (size_t)(i % j->T) * W;
            float *xr = j->out + (size_t)i * W;
            for (size_t k = 0; k < W; k++) xr[k] = te[k] + pe[k];
        }
        break;
    case OP_LAYER_NORM:
        for (int r = r0; r < r1; r++) sl_layer_norm_row(j->in + (size_t)r * W, j->w, j->b, j->out + (size_t)r * W, j->width, j->eps);
        break;
    case OP_ADD:
        for (size_t i = lo; i < hi; i++) j->out[i] += j->in[i];
        break;
    case OP_GELU_TANH:
        for (size_t i = lo; i < hi; i++) j->out[i] = sl_gelu_tanh(j->out[i]);
        break;
    case OP_GELU_ERF:
        for (size_t i = lo; i < hi; i++) j->out[i] = sl_gelu_erf(j->out[i]);
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

static int forward(const sl_model *m, sl_workpool *pool, const int32_t *tokens, int B, int T, sl_hook hook,
                   float *out, float *ws) {
    const sl_model_config *c = &m->cfg;
    const int C = c->d_model, NH = c->n_head, HS = C / NH, F = c->d_mlp;
    const int N = B * T;
    const size_t NC = (size_t)N * (size_t)C;
    float *x = ws; /* [N, C] */

    fwd_job emb = {.op = OP_EMBED, .N = N, .T = T, .width = C, .m = m, .tokens = tokens, .out = x};
    run_job(pool, &emb);
    if (!runs_block(hook)) { /* blocks.0.hook_resid_pre: the workspace is x alone */
        memcpy(out, x, NC * sizeof(float));
        return 0;
    }

    float *buf = x + NC; /* [N, C] */
    float *y = buf + NC; /* [N, C] */
    float *big = y + NC; /* [N, max(3C, F)]: qkv [N, 3C], then h [N, F] */
    size_t wide = (size_t)3 * (size_t)C;
    if (runs_mlp(hook) && (size_t)F > wide) wide = (size_t)F;
    float *att = big + (size_t)N * wide; /* [workers, T, T] */

    for (int l = 0; l <= hook.layer; l++) {
        const sl_block *bl = &m->blocks[l];
        if (hook.kind == SL_HOOK_RESID_PRE && l == hook.layer) break;

        /* Attention. */
        float *qkv = big; /* [N, 3C]: per row Q | K | V, head h at columns h*HS of each */
        rows_op(pool, m, OP_LAYER_NORM, x, bl->ln1_w, bl->ln1_b, buf, N, C);
        conv1d(buf, bl->attn_w, bl->attn_b, qkv, N, C, 3 * C);
        float scale = m->scale_attn_weights ? 1.0f / sqrtf((float)HS) : 1.0f;
        if (m->scale_attn_by_inverse_layer_idx) scale /= (float)(l + 1);
        /* B * NH small GEMMs (T x T x HS): OpenBLAS threading them costs more than it
         * gains (on 2 cores 22-101 GFLOP/s with 2 threads vs 97-117 with one), so each
         * runs single-threaded and the (sequence, head) pairs are spread over the pool.
         * The BLAS thread count is process-wide (0.3.21 has no per-call setting): it is
         * restored for the big GEMMs, and a forward on another model running meanwhile
         * may get a big GEMM single-threaded (slower, and rounded as one thread does). */
        const int blas_threads = openblas_get_num_threads();
        if (blas_threads > 1) openblas_set_num_threads(1);
        fwd_job aj = {.op = OP_ATTENTION, .N = N, .T = T, .C = C, .NH = NH, .HS = HS, .m = m, .in = qkv, .out = y,
                      .scale = scale, .att = att};
        run_job(pool, &aj);
        if (blas_threads > 1) openblas_set_num_threads(blas_threads);
        conv1d(y, bl->attn_proj_w, bl->attn_proj_b, buf, N, C, C); /* buf = attn_out [N, C] */
        if (hook.kind == SL_HOOK_ATTN_OUT && l == hook.layer) {
            memcpy(out, buf, NC * sizeof(float));
            return 0;
        }
        rows_op(pool, m, OP_ADD, buf, NULL, NULL, x, N, C);

        /* MLP. */
        float *hid = big; /* [N, F] */
        rows_op(pool, m, OP_LAYER_NORM, x, bl->ln2_w, bl->ln2_b, buf, N, C);
        conv1d(buf, bl->fc_w, bl->fc_b, hid, N, C, F);
        rows_op(pool, m, m->act == SL_ACT_GELU_TANH ? OP_GELU_TANH : OP_GELU_ERF, NULL, NULL, NULL, hid, N, F);
        conv1d(hid, bl->mlp_proj_w, bl->mlp_proj_b, buf, N, F, C); /* buf = mlp_out [N, C] */
        if (hook.kind == SL_HOOK_MLP_OUT && l == hook.layer) {
            memcpy(out, buf, NC * sizeof(float));
            return 0;
        }
        rows_op(pool, m, OP_ADD, buf, NULL, NULL, x, N, C);
    }
    /* resid_pre of hook.layer or resid_post of hook.layer. */
    memcpy(out, x, NC * sizeof(float));
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
