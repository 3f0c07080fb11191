/* test_runparams.c: an extraction and encode_text decide a run the same way.
 *
 * For each request of a grid (defaults; context_size below, equal to and above the
 * model's n_positions; context_size 1 and 2 with and without BOS; prepend_bos 0/1;
 * a misspelled hook, a hook on a layer the model lacks; center 0/1; include_special;
 * SAEs whose metadata names no hook, a context_size above n_positions, 1, a bad hook;
 * models with no BOS, a BOS from the tokenizer only, a BOS outside the vocabulary
 * (refused by both when the model loads);
 * a tokenizer larger than the model; an SAE of another width; two errors at once),
 * it opens BOTH an extraction source (sl_source_open, a two-line .txt dataset, a
 * store in a temporary directory) and a probe (sl_probe_open) with the same options
 * and checks that each made the decision written out by hand in the table below:
 * the same hook, context_size / seq_len, prepend_bos, BOS id, centring and
 * include_special, or the same error message (which holds the expected text).
 * For the source it also checks what the token file it wrote holds: sequences of
 * that length, each starting with BOS when prepend_bos, documents separated by BOS.
 *
 * Inputs: FIXTURES/lm (tests/fixtures/make_lm_fixtures.py): a GPT-2 of 2 layers,
 * d_model 32, n_positions 64, vocab_size 257, bos_token_id 256; its SAE (hook
 * blocks.1.hook_resid_pre, context_size 16, prepend_bos true, center_writing_weights
 * false); its byte-level tokenizer (256 bytes, <|endoftext|> = 256). FIXTURES/planted/sae
 * has d_in 16. The variants (other cfg.json / config.json / tokenizer.json beside
 * links to the same weights) are written to a mkdtemp directory. */
#include <ftw.h>
#include <limits.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "probe.h"
#include "runparams.h"
#include "sae.h"
#include "source.h"
#include "tokenizer.h"

static char g_tmp[256];
static const char *g_fix;

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) return;
    CHECK(fputs(text, f) >= 0);
    CHECK(fclose(f) == 0);
}

static void path_of(char *out, size_t n, const char *a, const char *b) { snprintf(out, n, "%s/%s", a, b); }

/* An SAE directory: this cfg.json metadata, the lm SAE's weights. */
static void make_sae(const char *name, const char *metadata) {
    char dir[512], p[600], target[600], cfg[2048];
    path_of(dir, sizeof dir, g_tmp, name);
    CHECK(mkdir(dir, 0755) == 0);
    snprintf(cfg, sizeof cfg,
             "{\"architecture\": \"standard\", \"d_in\": 32, \"d_sae\": 32, \"dtype\": \"float32\", "
             "\"apply_b_dec_to_input\": true, \"normalize_activations\": \"none\", \"metadata\": {%s}}",
             metadata);
    path_of(p, sizeof p, dir, "cfg.json");
    write_text(p, cfg);
    snprintf(target, sizeof target, "%s/lm/sae/sae_weights.safetensors", g_fix);
    path_of(p, sizeof p, dir, "sae_weights.safetensors");
    CHECK(symlink(target, p) == 0);
}

/* A model directory: this config.json, the lm model's weights. */
static void make_model(const char *name, const char *bos_json) {
    char dir[512], p[600], target[600], cfg[2048];
    path_of(dir, sizeof dir, g_tmp, name);
    CHECK(mkdir(dir, 0755) == 0);
    snprintf(cfg, sizeof cfg,
             "{\"model_type\": \"gpt2\", \"vocab_size\": 257, \"n_positions\": 64, \"n_embd\": 32, "
             "\"n_layer\": 2, \"n_head\": 2, \"n_inner\": null, \"activation_function\": \"gelu_new\", "
             "\"layer_norm_epsilon\": 1e-05%s}",
             bos_json);
    path_of(p, sizeof p, dir, "config.json");
    write_text(p, cfg);
    snprintf(target, sizeof target, "%s/lm/model/model.safetensors", g_fix);
    path_of(p, sizeof p, dir, "model.safetensors");
    CHECK(symlink(target, p) == 0);
}

/* The lm tokenizer.json with its added tokens replaced by `added` (a JSON array). */
static void make_tokenizer(const char *name, const char *added) {
    char src[600], dst[600];
    snprintf(src, sizeof src, "%s/lm/tokenizer.json", g_fix);
    path_of(dst, sizeof dst, g_tmp, name);
    json_error_t jerr;
    json_t *t = json_load_file(src, 0, &jerr), *a = json_loads(added, 0, &jerr);
    CHECK(t != NULL && a != NULL);
    if (!t || !a) return;
    CHECK(json_object_set_new(t, "added_tokens", a) == 0);
    CHECK(json_dump_file(t, dst, 0) == 0);
    json_decref(t);
}

/* One request and the decision written out for it. NULL names are the lm fixture's
 * own SAE / model / tokenizer; other names are the variants made in main. */
typedef struct rp_case {
    const char *what;
    const char *sae, *model, *tok;
    const char *hook;
    uint32_t context_size;
    int prepend_bos, center, include_special;
    const char *error; /* NULL: success, else a piece of the one message both give */
    const char *e_hook;
    uint32_t e_ctx;
    int e_prepend;
    int32_t e_bos;
    int e_center, e_special;
} rp_case;

#define LM_HOOK "blocks.1.hook_resid_pre"
#define NO_BOS "prepend_bos is on but neither config.json nor the tokenizer names a BOS token"

static const rp_case CASES[] = {
    /* what                     sae        model    tok       hook  ctx pre cen spc  error */
    {"defaults (SAE metadata)", NULL, NULL, NULL, NULL, 0, -1, -1, 0, NULL, LM_HOOK, 16, 1, 256, 0, 0},
    {"context_size 8", NULL, NULL, NULL, NULL, 8, -1, -1, 0, NULL, LM_HOOK, 8, 1, 256, 0, 0},
    {"context_size 63 (below n_positions)", NULL, NULL, NULL, NULL, 63, -1, -1, 0, NULL, LM_HOOK, 63, 1, 256, 0, 0},
    {"context_size 64 (= n_positions)", NULL, NULL, NULL, NULL, 64, -1, -1, 0, NULL, LM_HOOK, 64, 1, 256, 0, 0},
    {"context_size 65 (above n_positions)", NULL, NULL, NULL, NULL, 65, -1, -1, 0,
     "context_size 65 exceeds the model's n_positions 64", NULL, 0, 0, 0, 0, 0},
    {"context_size 1 with BOS", NULL, NULL, NULL, NULL, 1, -1, -1, 0, "context_size 1 leaves no room after BOS",
     NULL, 0, 0, 0, 0, 0},
    {"context_size 1 with prepend_bos 1", NULL, NULL, NULL, NULL, 1, 1, -1, 0,
     "context_size 1 leaves no room after BOS", NULL, 0, 0, 0, 0, 0},
    {"context_size 1 without BOS", NULL, NULL, NULL, NULL, 1, 0, -1, 0, NULL, LM_HOOK, 1, 0, 256, 0, 0},
    {"context_size 2 with BOS", NULL, NULL, NULL, NULL, 2, 1, -1, 0, NULL, LM_HOOK, 2, 1, 256, 0, 0},
    {"prepend_bos 0", NULL, NULL, NULL, NULL, 0, 0, -1, 0, NULL, LM_HOOK, 16, 0, 256, 0, 0},
    {"prepend_bos 1", NULL, NULL, NULL, NULL, 0, 1, -1, 0, NULL, LM_HOOK, 16, 1, 256, 0, 0},
    {"misspelled hook", NULL, NULL, NULL, "blocks.1.resid", 0, -1, -1, 0, "unknown hook 'blocks.1.resid'", NULL, 0, 0,
     0, 0, 0},
    {"hook on a layer the model lacks", NULL, NULL, NULL, "blocks.2.hook_resid_pre", 0, -1, -1, 0,
     "hook blocks.2.hook_resid_pre is beyond the model's 2 layers", NULL, 0, 0, 0, 0, 0},
    {"hook blocks.0.hook_mlp_out", NULL, NULL, NULL, "blocks.0.hook_mlp_out", 0, -1, -1, 0, NULL,
     "blocks.0.hook_mlp_out", 16, 1, 256, 0, 0},
    {"center 1", NULL, NULL, NULL, NULL, 0, -1, 1, 0, NULL, LM_HOOK, 16, 1, 256, 1, 0},
    {"center 0", NULL, NULL, NULL, NULL, 0, -1, 0, 0, NULL, LM_HOOK, 16, 1, 256, 0, 0},
    {"include_special 1", NULL, NULL, NULL, NULL, 0, -1, -1, 1, NULL, LM_HOOK, 16, 1, 256, 0, 1},
    {"all given", NULL, NULL, NULL, "blocks.1.hook_resid_post", 32, 0, 1, 1, NULL, "blocks.1.hook_resid_post", 32, 0,
     256, 1, 1},
    /* SAE metadata variants */
    {"SAE without metadata", "sae_nometa", NULL, NULL, NULL, 0, -1, -1, 0,
     "the SAE names no hook (metadata.hook_name); give the option 'hook'", NULL, 0, 0, 0, 0, 0},
    {"SAE without metadata, hook given (128 clamped to 64)", "sae_nometa", NULL, NULL, "blocks.1.hook_attn_out", 0, -1,
     -1, 0, NULL, "blocks.1.hook_attn_out", 64, 1, 256, 1, 0},
    {"SAE without metadata, context_size 100 given", "sae_nometa", NULL, NULL, "blocks.1.hook_attn_out", 100, -1, -1,
     0, "context_size 100 exceeds the model's n_positions 64", NULL, 0, 0, 0, 0, 0},
    {"SAE context_size 100 (clamped to 64)", "sae_big", NULL, NULL, NULL, 0, -1, -1, 0, NULL, LM_HOOK, 64, 0, 256, 1,
     0},
    {"SAE context_size 100, context_size 64 given", "sae_big", NULL, NULL, NULL, 64, 1, 0, 0, NULL, LM_HOOK, 64, 1,
     256, 0, 0},
    {"SAE context_size 1 with BOS", "sae_ctx1", NULL, NULL, NULL, 0, -1, -1, 0,
     "context_size 1 leaves no room after BOS", NULL, 0, 0, 0, 0, 0},
    {"SAE context_size 1, prepend_bos 0", "sae_ctx1", NULL, NULL, NULL, 0, 0, -1, 0, NULL, "blocks.0.hook_resid_post",
     1, 0, 256, 1, 0},
    {"SAE hook beyond the model", "sae_layer", NULL, NULL, NULL, 0, -1, -1, 0,
     "hook blocks.5.hook_mlp_out is beyond the model's 2 layers", NULL, 0, 0, 0, 0, 0},
    {"SAE with a misspelled hook", "sae_badhook", NULL, NULL, NULL, 0, -1, -1, 0, "unknown hook 'block.1.hook_resid_pre'",
     NULL, 0, 0, 0, 0, 0},
    {"SAE of d_in 16", "planted", NULL, NULL, LM_HOOK, 0, -1, -1, 0, "the model's d_model 32 differs from the SAE",
     NULL, 0, 0, 0, 0, 0},
    /* BOS: config.json, else the tokenizer's <|endoftext|> */
    {"no bos_token_id: the tokenizer's <|endoftext|>", NULL, "model_nobos", NULL, NULL, 0, -1, -1, 0, NULL, LM_HOOK, 16,
     1, 256, 0, 0},
    {"no BOS anywhere", NULL, "model_nobos", "tok_noadded.json", NULL, 0, -1, -1, 0, NO_BOS, NULL, 0, 0, 0, 0, 0},
    {"no BOS anywhere, prepend_bos 0", NULL, "model_nobos", "tok_noadded.json", NULL, 0, 0, -1, 0, NULL, LM_HOOK, 16, 0,
     -1, 0, 0},
    {"bos_token_id 5 from config.json over the tokenizer's", NULL, "model_bos5", NULL, NULL, 0, -1, -1, 0, NULL,
     LM_HOOK, 16, 1, 5, 0, 0},
    {"bos_token_id 300 outside the vocabulary", NULL, "model_bos300", NULL, NULL, 0, 0, -1, 0,
     "'bos_token_id' must be a token id in [0, 257)", NULL, 0, 0, 0, 0, 0},
    {"tokenizer larger than the model", NULL, NULL, "tok_big.json", NULL, 0, -1, -1, 0,
     "vocabulary of 301 exceeds the model's vocab_size 257", NULL, 0, 0, 0, 0, 0},
    /* two problems: the first in the documented order is the error */
    {"misspelled hook and context_size 65", NULL, NULL, NULL, "blocks.1.resid", 65, -1, -1, 0,
     "unknown hook 'blocks.1.resid'", NULL, 0, 0, 0, 0, 0},
    {"tokenizer larger and context_size 65", NULL, NULL, "tok_big.json", NULL, 65, -1, -1, 0,
     "vocabulary of 301 exceeds the model's vocab_size 257", NULL, 0, 0, 0, 0, 0},
    {"context_size 65 and no BOS", NULL, "model_nobos", "tok_noadded.json", NULL, 65, -1, -1, 0,
     "context_size 65 exceeds the model's n_positions 64", NULL, 0, 0, 0, 0, 0},
};

static void input_paths(const rp_case *c, char *sae, char *model, char *tok, size_t n) {
    if (!c->sae) snprintf(sae, n, "%s/lm/sae", g_fix);
    else if (strcmp(c->sae, "planted") == 0) snprintf(sae, n, "%s/planted/sae", g_fix);
    else path_of(sae, n, g_tmp, c->sae);
    if (c->model) path_of(model, n, g_tmp, c->model);
    else snprintf(model, n, "%s/lm/model", g_fix);
    if (c->tok) path_of(tok, n, g_tmp, c->tok);
    else snprintf(tok, n, "%s/lm/tokenizer.json", g_fix);
}

/* The decision as seen from one side: 0 and the fields, or -1 and the message. */
static void check_params(const char *who, const rp_case *c, const sl_run_params *rp) {
    int ok = strcmp(rp->hook_name, c->e_hook) == 0 && rp->context_size == c->e_ctx && rp->prepend_bos == c->e_prepend &&
             rp->bos == c->e_bos && rp->center == c->e_center && rp->include_special == c->e_special;
    CHECK(ok);
    if (!ok)
        fprintf(stderr,
                "%s: %s: hook %s ctx %u prepend %d bos %d center %d special %d; expected %s %u %d %d %d %d\n", c->what,
                who, rp->hook_name, rp->context_size, rp->prepend_bos, (int)rp->bos, rp->center, rp->include_special,
                c->e_hook, c->e_ctx, c->e_prepend, (int)c->e_bos, c->e_center, c->e_special);
}

/* What the token file the source wrote shows of the decision. */
static void check_token_file(const rp_case *c, const sl_source *src) {
    const sl_tokfile_header *h = src->tf.header;
    CHECK(h->seq_len == c->e_ctx && src->seq_len == c->e_ctx);
    int bad = 0, saw_doc1 = 0;
    for (uint64_t s = 0; s < h->n_seq; s++) {
        const sl_tok_record *r = &src->tf.records[s * h->seq_len];
        if (c->e_prepend) bad += !(r->token == c->e_bos && r->special);
        else bad += r->token >= 0 && r->special; /* the text has no special token of its own */
    }
    for (uint64_t i = 0; i < h->n_seq * h->seq_len; i++) {
        const sl_tok_record *r = &src->tf.records[i];
        if (r->token < 0 || r->doc != 1) continue;
        /* the first record of the second document: BOS (separator or a sequence's first),
         * unless there is none or the first document ended a sequence of 1 */
        if (c->e_ctx >= 16) {
            if (c->e_bos >= 0) bad += !(r->token == c->e_bos && r->special);
            else bad += r->special;
        }
        saw_doc1 = 1;
        break;
    }
    CHECK(saw_doc1);
    CHECK(bad == 0);
    if (bad) fprintf(stderr, "%s: the token file disagrees with the decision (%d records)\n", c->what, bad);
}

static void run_case(int k, const rp_case *c) {
    char sae_path[600], model_path[600], tok_path[600], store[600], dataset[600];
    input_paths(c, sae_path, model_path, tok_path, sizeof sae_path);
    snprintf(store, sizeof store, "%s/store_%d", g_tmp, k);
    CHECK(mkdir(store, 0755) == 0);
    path_of(dataset, sizeof dataset, g_tmp, "docs.txt");

    sl_err serr = {{0}}, perr = {{0}};
    int src_rc = -1;
    sl_source src;
    memset(&src, 0, sizeof src);
    sl_sae *sae = sl_sae_load(sae_path, &serr);
    CHECK(sae != NULL);
    if (sae) {
        sl_source_opts so = {.model_path = model_path, .dataset_path = dataset, .tokenizer_path = tok_path,
                             .hook = c->hook, .context_size = c->context_size, .prepend_bos = c->prepend_bos,
                             .include_special = c->include_special, .center = c->center};
        src_rc = sl_source_open(&src, &so, sae, store, &serr);
    }
    sl_probe_opts po = {.sae_path = sae_path, .model_path = model_path, .tokenizer_path = tok_path, .hook = c->hook,
                        .seq_len = c->context_size, .prepend_bos = c->prepend_bos, .center = c->center,
                        .include_special = c->include_special};
    sl_probe *p = sl_probe_open(&po, &perr);

    if (c->error) {
        CHECK(src_rc != 0 && p == NULL);
        if (src_rc == 0 || p) fprintf(stderr, "%s: expected the error \"%s\"\n", c->what, c->error);
        if (src_rc != 0) CHECK_MSG(serr.msg, c->error);
        if (!p) CHECK_MSG(perr.msg, c->error);
        int same = src_rc != 0 && !p && strcmp(serr.msg, perr.msg) == 0;
        CHECK(same);
        if (!same) fprintf(stderr, "%s: source says \"%s\", probe \"%s\"\n", c->what, serr.msg, perr.msg);
        printf("  %-52s both fail: %s\n", c->what, perr.msg);
    } else {
        CHECK(src_rc == 0 && p != NULL);
        if (src_rc != 0) fprintf(stderr, "%s: source: %s\n", c->what, serr.msg);
        if (!p) fprintf(stderr, "%s: probe: %s\n", c->what, perr.msg);
        if (src_rc == 0) {
            check_params("source", c, &src.run);
            CHECK(strcmp(src.hook_name, c->e_hook) == 0 && src.center == c->e_center &&
                  src.include_special == c->e_special);
            check_token_file(c, &src);
        }
        if (p) {
            check_params("probe", c, sl_probe_run_params(p));
            CHECK(sl_probe_seq_len(p) == c->e_ctx);
            sl_probe_result res;
            sl_err eerr;
            CHECK(sl_probe_encode(p, "hello world", 11, &res, &eerr) == 0); /* the run works with them */
            CHECK(res.n_tokens == 11);
            sl_probe_result_free(&res);
        }
        printf("  %-52s both: hook %s, context_size %u, prepend_bos %d, bos %d, center %d, special %d\n", c->what,
               c->e_hook, c->e_ctx, c->e_prepend, (int)c->e_bos, c->e_center, c->e_special);
    }
    sl_source_close(&src); /* also after a failed open */
    sl_sae_free(sae);
    sl_probe_free(p);
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s FIXTURES\n", argv[0]);
        return 2;
    }
    static char fix[4096];
    if (!realpath(argv[1], fix)) { /* the variants link to its files */
        perror(argv[1]);
        return 2;
    }
    g_fix = fix;
    const char *tmpdir = getenv("TMPDIR");
    snprintf(g_tmp, sizeof g_tmp, "%s/saelite-runparams-XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
    if (!mkdtemp(g_tmp)) {
        perror("mkdtemp");
        return 2;
    }
    char p[600];
    path_of(p, sizeof p, g_tmp, "docs.txt");
    write_text(p, "hello world\nab\n"); /* documents 0 (11 tokens) and 1 (2 tokens) */
    make_sae("sae_nometa", "\"model_name\": \"planted-lm\"");
    make_sae("sae_big", "\"hook_name\": \"" LM_HOOK "\", \"context_size\": 100, \"prepend_bos\": false, "
                        "\"model_from_pretrained_kwargs\": {\"center_writing_weights\": true}");
    make_sae("sae_ctx1", "\"hook_name\": \"blocks.0.hook_resid_post\", \"context_size\": 1, \"prepend_bos\": true");
    make_sae("sae_layer", "\"hook_name\": \"blocks.5.hook_mlp_out\", \"context_size\": 16");
    make_sae("sae_badhook", "\"hook_name\": \"block.1.hook_resid_pre\", \"context_size\": 16");
    make_model("model_nobos", "");
    make_model("model_bos5", ", \"bos_token_id\": 5");
    make_model("model_bos300", ", \"bos_token_id\": 300");
    make_tokenizer("tok_noadded.json", "[]");
    make_tokenizer("tok_big.json",
                   "[{\"id\": 256, \"content\": \"<|endoftext|>\", \"single_word\": false, \"lstrip\": false, "
                   "\"rstrip\": false, \"normalized\": false, \"special\": true}, "
                   "{\"id\": 300, \"content\": \"<|pad|>\", \"single_word\": false, \"lstrip\": false, "
                   "\"rstrip\": false, \"normalized\": false, \"special\": true}]");

    for (size_t k = 0; k < sizeof CASES / sizeof CASES[0]; k++) run_case((int)k, &CASES[k]);
    printf("%zu requests: the extraction source and the probe decided alike\n", sizeof CASES / sizeof CASES[0]);

    if (nftw(g_tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS) != 0) fprintf(stderr, "cannot remove %s\n", g_tmp);
    CHECK_DONE();
}
