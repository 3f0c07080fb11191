/* test_families.c: every model family's forward against Hugging Face transformers.
 *
 * tests/data/families/<case> holds a tiny random checkpoint made with
 * transformers' own config and model classes and expected.safetensors: the tokens
 * [2, 24] and, for every layer, each hook as TransformerLens defines it, recorded
 * from transformers' forward in f32 (tests/fixtures/families/make_families.py;
 * the definitions are in each case's hooks.json). For every case of a supported
 * family, every hook of every layer must be within 1e-5 of the reference,
 * relative to the hook's largest value (max |err| / max |ref|). attn.hook_z is
 * compared without the value bias, as TransformerLens's from_pretrained folds it
 * into the output projection's bias (model.h). A parallel block (NeoX's
 * use_parallel_residual) has no hook_resid_mid: asking for it is an error. The
 * data directory is found from $SAELITE_SOURCE_DIR, else from __FILE__. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "model.h"
#include "safetensors.h"

#define TOL 1e-5

static const char *const CASES[] = {"gpt2",  "llama",  "llama_bf16",  "llama_sharded", "mistral",     "qwen2",
                                    "qwen3", "gemma", "gemma2",      "gemma3_text",   "gpt_neox", "gpt_neox_seq"};
static const char *const HOOKS[] = {"hook_resid_pre", "hook_attn_out",  "hook_resid_mid",     "hook_mlp_out",
                                    "hook_resid_post", "attn.hook_z", "ln2.hook_normalized"};

static const char *data_root(void) {
    static char root[4200];
    const char *src = getenv("SAELITE_SOURCE_DIR");
    if (src) {
        snprintf(root, sizeof root, "%s/tests/data/families", src);
        return root;
    }
    snprintf(root, sizeof root, "%s", __FILE__);
    char *slash = strrchr(root, '/');
    if (!slash) return "tests/data/families";
    snprintf(slash, sizeof root - (size_t)(slash - root), "/../data/families");
    return root;
}

static float *value_bias_in(const char *path, const sl_model_config *c, int l) {
    char name[128];
    sl_err err;
    sl_st *st = sl_st_open(path, &err);
    if (!st) return NULL;
    float *b = NULL;
    int64_t shape[1];
    if (c->family == SL_FAMILY_GPT2) {
        snprintf(name, sizeof name, "transformer.h.%d.attn.c_attn.bias", l);
        shape[0] = 3LL * c->d_model;
        float *all = sl_st_get(st, name) ? sl_st_load_f32(st, name, 1, shape, &err) : NULL;
        if (all) {
            b = malloc((size_t)c->d_model * sizeof *b);
            memcpy(b, all + 2 * c->d_model, (size_t)c->d_model * sizeof *b);
            free(all);
        }
    } else if (c->family == SL_FAMILY_NEOX) { /* q | k | v per head: the v parts, contiguous */
        snprintf(name, sizeof name, "gpt_neox.layers.%d.attention.query_key_value.bias", l);
        shape[0] = 3LL * c->d_model;
        float *all = sl_st_get(st, name) ? sl_st_load_f32(st, name, 1, shape, &err) : NULL;
        if (all) {
            b = malloc((size_t)c->d_model * sizeof *b);
            for (int h = 0; h < c->n_head; h++)
                memcpy(b + (size_t)h * c->head_dim, all + (size_t)h * 3 * c->head_dim + 2 * c->head_dim,
                       (size_t)c->head_dim * sizeof *b);
            free(all);
        }
    } else {
        snprintf(name, sizeof name, "model.layers.%d.self_attn.v_proj.bias", l);
        shape[0] = (int64_t)c->n_kv_head * c->head_dim;
        if (sl_st_get(st, name)) b = sl_st_load_f32(st, name, 1, shape, &err);
    }
    sl_st_close(st);
    return b;
}

/* The value bias of layer l per key/value head [NKV * HD], or NULL when the model has
 * none: from model.safetensors, or from whichever of the two shards holds it. */
static float *value_bias(const char *dir, const sl_model_config *c, int l) {
    float *b = NULL;
    for (int f = 0; f < 3 && !b; f++) {
        char path[4500];
        if (f == 0) snprintf(path, sizeof path, "%s/model.safetensors", dir);
        else snprintf(path, sizeof path, "%s/model-%05d-of-00002.safetensors", dir, f);
        b = value_bias_in(path, c, l);
    }
    return b;
}

static void check_case(const char *name) {
    char dir[4400], path[4500];
    snprintf(dir, sizeof dir, "%s/%s", data_root(), name);
    snprintf(path, sizeof path, "%s/expected.safetensors", dir);
    sl_err err = {{0}};
    sl_model *m = sl_model_load(dir, &err);
    CHECK(m != NULL);
    sl_st *ex = m ? sl_st_open(path, &err) : NULL;
    CHECK(ex != NULL);
    if (!m || !ex) {
        fprintf(stderr, "%s: %s\n", name, err.msg);
        sl_model_free(m);
        return;
    }
    const sl_model_config *c = sl_model_config_of(m);
    const sl_tensor *tt = sl_st_get(ex, "tokens");
    CHECK(tt && tt->ndim == 2 && tt->dtype == SL_DT_I32);
    if (!tt || tt->ndim != 2 || tt->dtype != SL_DT_I32) goto done;
    const int B = (int)tt->shape[0], T = (int)tt->shape[1], N = B * T;
    int32_t *tokens = malloc((size_t)N * sizeof *tokens);
    memcpy(tokens, tt->data, (size_t)N * sizeof *tokens);
    double worst = 0;
    int compared = 0;
    for (int l = 0; l < c->n_layer; l++) {
        float *bv = value_bias(dir, c, l);
        for (size_t k = 0; k < sizeof HOOKS / sizeof HOOKS[0]; k++) {
            char hname[96];
            snprintf(hname, sizeof hname, "blocks.%d.%s", l, HOOKS[k]);
            sl_hook hook;
            CHECK(sl_hook_parse(hname, &hook, &err) == 0);
            const int W = sl_model_hook_width(m, hook);
            if (!sl_st_get(ex, hname) && hook.kind == SL_HOOK_RESID_MID) {
                /* a parallel block (NeoX): TransformerLens has no resid_mid, and neither does the model */
                CHECK(sl_model_check_hook(m, hook, &err) == -1);
                CHECK_MSG(err.msg, "parallel");
                continue;
            }
            int64_t shape[2] = {N, W};
            float *want = sl_st_load_f32(ex, hname, 2, shape, &err);
            CHECK(want != NULL);
            if (!want) {
                fprintf(stderr, "%s: %s\n", name, err.msg);
                continue;
            }
            if (hook.kind == SL_HOOK_ATTN_Z && bv) /* TransformerLens's z: without the value bias */
                for (int r = 0; r < N; r++)
                    for (int h = 0; h < c->n_head; h++)
                        for (int d = 0; d < c->head_dim; d++)
                            want[(size_t)r * W + (size_t)h * c->head_dim + d] -=
                                bv[(size_t)(h / (c->n_head / c->n_kv_head)) * c->head_dim + d];
            float *ws = malloc((sl_model_workspace_floats(m, B, T, hook) + 1) * sizeof(float));
            float *got = malloc((size_t)N * (size_t)W * sizeof(float));
            int rc = sl_model_forward(m, tokens, B, T, hook, got, ws, &err);
            CHECK(rc == 0);
            if (rc == 0) {
                double max_err = 0, max_ref = 0;
                for (size_t i = 0; i < (size_t)N * (size_t)W; i++) {
                    double e = fabs((double)got[i] - (double)want[i]);
                    if (!(e <= max_err)) max_err = e; /* NaN propagates */
                    if (fabs(want[i]) > max_ref) max_ref = fabs(want[i]);
                }
                double rel = max_err / (max_ref > 0 ? max_ref : 1);
                if (!(rel <= TOL)) fprintf(stderr, "%s %s: relative error %.3g (max |err| %.3g, max |ref| %.3g)\n",
                                           name, hname, rel, max_err, max_ref);
                CHECK(rel <= TOL);
                if (rel > worst) worst = rel;
                compared++;
            } else {
                fprintf(stderr, "%s %s: %s\n", name, hname, err.msg);
            }
            free(ws);
            free(got);
            free(want);
        }
        free(bv);
    }
    printf("%-14s %-12s %d layers, %d/%d heads of %d: %2d hooks, worst relative error %.2g\n", name, c->model_type,
           c->n_layer, c->n_head, c->n_kv_head, c->head_dim, compared, worst);
    free(tokens);
done:
    sl_st_close(ex);
    sl_model_free(m);
}

/* ---- bad checkpoints: each an error naming the file and the problem ---------- */

static void copy_file(const char *from, const char *to) {
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    CHECK(a && b);
    char buf[1 << 16];
    size_t n;
    while (a && b && (n = fread(buf, 1, sizeof buf, a)) > 0) CHECK(fwrite(buf, 1, n, b) == n);
    if (a) fclose(a);
    if (b) fclose(b);
}

/* A copy of case `name` in dir, config.json's key set to value (JSON text; NULL
 * keeps the config as it is). */
static void copy_case(const char *name, const char *dir, const char *key, const char *value) {
    static const char *const files[] = {"config.json", "model.safetensors", "model.safetensors.index.json",
                                        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"};
    char from[4500], to[4500];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(from, sizeof from, "%s/%s/%s", data_root(), name, files[i]);
        snprintf(to, sizeof to, "%s/%s", dir, files[i]);
        unlink(to);
        if (access(from, F_OK) == 0) copy_file(from, to);
    }
    if (!key) return;
    snprintf(to, sizeof to, "%s/config.json", dir);
    json_t *cfg = json_load_file(to, 0, NULL), *v = json_loads(value, JSON_DECODE_ANY, NULL);
    CHECK(cfg && v);
    json_object_set_new(cfg, key, v);
    CHECK(json_dump_file(cfg, to, 0) == 0);
    json_decref(cfg);
}

static void expect_error(const char *dir, const char *what, const char *needle1, const char *needle2) {
    sl_err err = {{0}};
    sl_model *m = sl_model_load(dir, &err);
    CHECK(m == NULL);
    sl_model_free(m);
    CHECK_MSG(err.msg, needle1);
    if (needle2) CHECK_MSG(err.msg, needle2);
    printf("bad checkpoint: %-34s -> %s\n", what, err.msg);
}

static void check_bad_checkpoints(void) {
    char dir[] = "/tmp/saelite-test-families-XXXXXX", path[4200];
    CHECK(mkdtemp(dir) != NULL);
    copy_case("llama_sharded", dir, NULL, NULL);
    snprintf(path, sizeof path, "%s/model-00002-of-00002.safetensors", dir);
    unlink(path);
    expect_error(dir, "a shard missing", "model-00002-of-00002.safetensors", "cannot open");
    copy_case("llama", dir, "num_hidden_layers", "4");
    expect_error(dir, "a layer more than the weights", "missing tensor 'model.layers.3.", NULL);
    copy_case("llama", dir, "intermediate_size", "100");
    expect_error(dir, "a shape that disagrees", "has shape [128, 64], expected [100, 64]", "config.json");
    copy_case("llama", dir, "model_type", "\"mamba\"");
    expect_error(dir, "model_type unsupported", "model_type 'mamba' is not supported", "gpt_neox");
    copy_case("llama", dir, "hidden_act", "\"relu\"");
    expect_error(dir, "hidden_act unsupported", "hidden_act 'relu' is not supported", NULL);
    copy_case("llama", dir, "rope_parameters", "{\"rope_type\": \"yarn\", \"factor\": 2, \"rope_theta\": 10000}");
    expect_error(dir, "RoPE type unsupported", "RoPE type 'yarn' is not supported", "llama3");
    copy_case("llama", dir, "num_key_value_heads", "3");
    expect_error(dir, "heads not a multiple of kv heads", "not a multiple of num_key_value_heads 3", NULL);
    copy_case("llama", dir, "attention_bias", "true");
    expect_error(dir, "biases the weights lack", "missing tensor 'model.layers.0.self_attn.q_proj.bias'", NULL);
    copy_case("gemma2", dir, "layer_types", "[\"sliding_attention\", \"full_attention\"]");
    expect_error(dir, "layer_types of the wrong length", "'layer_types' must be a list of 3 strings", NULL);
    copy_case("llama", dir, NULL, NULL);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    unlink(path);
    expect_error(dir, "no weights at all", "model.safetensors: missing", "index.json");
    for (int i = 0; i < 5; i++) { /* clean up */
        static const char *const files[] = {"config.json", "model.safetensors", "model.safetensors.index.json",
                                            "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"};
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
}

int main(void) {
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) check_case(CASES[i]);
    check_bad_checkpoints();
    CHECK_DONE();
}
