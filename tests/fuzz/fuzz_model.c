/* fuzz_model.c: loading GPT-2 checkpoints (engine/model.c): config.json parsing,
 * the tensors and shapes a config asks for, the forward pass on what was loaded,
 * and hook names.
 *
 * Input: one selector byte, then the file that is fuzzed.
 *   selector '#': the rest is a hook name for sl_hook_parse; one that parses must
 *     print back to itself ("blocks.L.hook_...", L without leading zeros).
 *   other selector < 0x80: the rest is config.json, written beside one of four
 *     fixed, valid model.safetensors (selector & 3: 0 = F32 "transformer."-prefixed,
 *     vocab 8, 4 positions, n_embd 4, 2 layers, n_inner 16; 1 = F16, 1 layer,
 *     n_inner 8; 2 = BF16, vocab 5, 3 positions, n_embd 6, 1 layer, n_inner 24;
 *     3 = like 0 unprefixed, but layer 1 lacks mlp.c_proj.bias).
 *   selector >= 0x80: the rest is model.safetensors, beside a fixed config.json
 *     (vocab 8, 4 positions, n_embd 4, 1 layer, 2 heads).
 * A loaded model must accept every hook of its layers and run the forward pass up
 * to each; with the fixed (finite) weights the activations must be finite. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "fuzz_common.h"
#include "model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static const char *model_dir[4], *bare_dir;

typedef struct tiny {
    const char *dtype, *prefix;
    int V, P, C, L, F;
    int drop_last; /* leave out the last layer's mlp.c_proj.bias */
} tiny;

static void write_tiny(const char *dir_name, const tiny *m, uint32_t seed) {
    fz_tensor t[64];
    char names[64][64];
    int n = 0;
#define ADD(nm, nd, d0, d1)                                                                        \
    do {                                                                                           \
        snprintf(names[n], sizeof names[n], "%s%s", m->prefix, nm);                                \
        t[n] = (fz_tensor){names[n], m->dtype, nd, {d0, d1}};                                      \
        n++;                                                                                       \
    } while (0)
    ADD("wte.weight", 2, m->V, m->C);
    ADD("wpe.weight", 2, m->P, m->C);
    for (int l = 0; l < m->L; l++) {
        char p[80];
#define LAYER(nm, nd, d0, d1)                                                                      \
    do {                                                                                           \
        snprintf(p, sizeof p, "h.%d.%s", l, nm);                                                   \
        ADD(p, nd, d0, d1);                                                                        \
    } while (0)
        LAYER("ln_1.weight", 1, m->C, 0);
        LAYER("ln_1.bias", 1, m->C, 0);
        LAYER("attn.c_attn.weight", 2, m->C, 3 * m->C);
        LAYER("attn.c_attn.bias", 1, 3 * m->C, 0);
        LAYER("attn.c_proj.weight", 2, m->C, m->C);
        LAYER("attn.c_proj.bias", 1, m->C, 0);
        LAYER("ln_2.weight", 1, m->C, 0);
        LAYER("ln_2.bias", 1, m->C, 0);
        LAYER("mlp.c_fc.weight", 2, m->C, m->F);
        LAYER("mlp.c_fc.bias", 1, m->F, 0);
        LAYER("mlp.c_proj.weight", 2, m->F, m->C);
        if (!(m->drop_last && l == m->L - 1)) LAYER("mlp.c_proj.bias", 1, m->C, 0);
    }
    ADD("ln_f.weight", 1, m->C, 0);
    ADD("ln_f.bias", 1, m->C, 0);
    size_t len;
    unsigned char *st = fz_st_build(t, n, seed, &len);
    char file[96];
    snprintf(file, sizeof file, "%s/model.safetensors", dir_name);
    fz_write_file(fz_path(file), st, len);
    free(st);
#undef LAYER
#undef ADD
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    openblas_set_num_threads(1);
    const tiny models[4] = {
        {"F32", "transformer.", 8, 4, 4, 2, 16, 0},
        {"F16", "", 8, 4, 4, 1, 8, 0},
        {"BF16", "", 5, 3, 6, 1, 24, 0},
        {"F32", "", 8, 4, 4, 2, 16, 1},
    };
    for (int i = 0; i < 4; i++) {
        char name[16];
        snprintf(name, sizeof name, "model%d", i);
        model_dir[i] = strdup(fz_mkdir(name));
        write_tiny(name, &models[i], 5u + (uint32_t)i);
    }
    bare_dir = strdup(fz_mkdir("bare"));
    static const char cfg[] = "{\"model_type\": \"gpt2\", \"vocab_size\": 8, \"n_positions\": 4, "
                              "\"n_embd\": 4, \"n_layer\": 1, \"n_head\": 2}";
    fz_write_file(fz_path("bare/config.json"), cfg, sizeof cfg - 1);
    return 0;
}

static const char *const kind_name[4] = {"hook_resid_pre", "hook_attn_out", "hook_mlp_out",
                                         "hook_resid_post"};

static void check_hook_name(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    FZ_ASSERT(s);
    memcpy(s, data, size);
    s[size] = 0;
    sl_hook h;
    sl_err err;
    err.msg[0] = 0;
    if (sl_hook_parse(s, &h, &err) == 0) {
        FZ_ACCEPTED(s);
        FZ_ASSERT(h.layer >= 0);
        FZ_ASSERT((int)h.kind >= 0 && (int)h.kind <= 3);
        char back[64];
        snprintf(back, sizeof back, "blocks.%d.%s", h.layer, kind_name[h.kind]);
        FZ_ASSERT(strcmp(back, s) == 0);
    } else {
        FZ_CHECK_ERR(err);
    }
    free(s);
}

static void check_and_run(const sl_model *m, int strict) {
    const sl_model_config *c = sl_model_config_of(m);
    FZ_ASSERT(c->vocab_size >= 1 && c->n_positions >= 1 && c->d_model >= 1 && c->n_layer >= 1);
    FZ_ASSERT(c->n_head >= 1 && c->d_model % c->n_head == 0 && c->d_mlp >= 1);
    FZ_ASSERT(c->layer_norm_eps > 0.0f && c->layer_norm_eps < 1.0f);
    FZ_ASSERT(c->bos_token_id >= -1 && c->bos_token_id < c->vocab_size);
    FZ_ASSERT(c->eos_token_id >= -1 && c->eos_token_id < c->vocab_size);
    sl_err err;
    sl_hook beyond = {c->n_layer, SL_HOOK_RESID_PRE};
    FZ_ASSERT(sl_model_check_hook(m, beyond, &err) != 0);
    FZ_ERR_SET(err);
    const int n_seq = 2, seq_len = c->n_positions < 3 ? c->n_positions : 3;
    int32_t tokens[6];
    for (int i = 0; i < n_seq * seq_len; i++) tokens[i] = (int32_t)((i * 5 + 1) % c->vocab_size);
    size_t out_n = (size_t)n_seq * (size_t)seq_len * (size_t)c->d_model;
    float *out = malloc(out_n * sizeof *out);
    FZ_ASSERT(out);
    for (int l = 0; l < c->n_layer && l < 3; l++) {
        for (int k = 0; k < 4; k++) {
            sl_hook h = {l, (sl_hook_kind)k};
            FZ_ASSERT(sl_model_check_hook(m, h, &err) == 0);
            size_t wsn = sl_model_workspace_floats(m, n_seq, seq_len, h);
            float *ws = malloc((wsn + 1) * sizeof *ws);
            FZ_ASSERT(ws);
            err.msg[0] = 0;
            int rc = sl_model_forward(m, tokens, n_seq, seq_len, h, out, ws, &err);
            FZ_ASSERT(rc == 0);
            if (strict)
                for (size_t i = 0; i < out_n; i++) FZ_ASSERT(isfinite(out[i]));
            free(ws);
        }
    }
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    unsigned sel = data[0];
    if (sel == '#') {
        check_hook_name(data + 1, size - 1);
        return 0;
    }
    const char *dir;
    if (sel < 0x80) {
        int w = (int)(sel & 3);
        char cfg[64];
        snprintf(cfg, sizeof cfg, "model%d/config.json", w);
        fz_write_file(fz_path(cfg), data + 1, size - 1);
        dir = model_dir[w];
    } else {
        fz_write_file(fz_path("bare/model.safetensors"), data + 1, size - 1);
        dir = bare_dir;
    }
    sl_err err;
    err.msg[0] = 0;
    sl_model *m = sl_model_load(dir, &err);
    if (!m) {
        FZ_CHECK_ERR(err);
        return 0;
    }
    FZ_ACCEPTED("model");
    check_and_run(m, sel < 0x80);
    sl_model_free(m);
    return 0;
}
