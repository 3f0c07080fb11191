/* probe.c: a model and an SAE on one snippet (see probe.h). */
#include "probe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "csr.h"
#include "model.h"
#include "runparams.h"
#include "sae.h"
#include "tokenizer.h"

#define PROBE_MAX_SEQS 8 /* windows per forward pass: bounds the workspace */

struct sl_probe {
    sl_sae *sae;
    sl_model *model;
    const sl_tokenizer *tok; /* NULL: the extraction had none (encode is then an error) */
    sl_tokenizer *own_tok;   /* tok when the probe loaded it (else borrowed, not freed) */
    char *model_path;
    sl_backend *backend;
    sl_run_params run; /* as resolved; the fields below are copies of it */
    sl_hook hook;
    uint32_t seq_len;
    int prepend_bos, include_special;
    int32_t bos;
    sl_csr_builder csr;
    int32_t *ids;      /* [PROBE_MAX_SEQS * seq_len] model input */
    uint8_t *include;  /* [PROBE_MAX_SEQS * seq_len] */
    int64_t *token_of; /* [PROBE_MAX_SEQS * seq_len] snippet token of a row; -1 for BOS and padding */
};

void sl_probe_free(sl_probe *p) {
    if (!p) return;
    if (p->backend) p->backend->ops->free(p->backend);
    sl_sae_free(p->sae);
    sl_model_free(p->model);
    sl_tokenizer_free(p->own_tok);
    free(p->model_path);
    sl_csr_free(&p->csr);
    free(p->ids);
    free(p->include);
    free(p->token_of);
    free(p);
}

uint32_t sl_probe_seq_len(const sl_probe *p) { return p->seq_len; }
const struct sl_tokenizer *sl_probe_tokenizer(const sl_probe *p) { return p->tok; }
const struct sl_sae *sl_probe_sae(const sl_probe *p) { return p->sae; }
const struct sl_run_params *sl_probe_run_params(const sl_probe *p) { return &p->run; }

const float *sl_probe_unembed(sl_probe *p, int *vocab, int *d_model, int *untied, sl_err *err) {
    (void)err;
    const sl_model_config *c = sl_model_config_of(p->model);
    *vocab = c->vocab_size;
    *d_model = c->d_model;
    return sl_model_unembed(p->model, untied);
}

/* The run parameters come from sl_run_params_resolve, as source.c's, so a snippet
 * sees what a dataset document saw. */
sl_probe *sl_probe_open(const sl_probe_opts *o, sl_err *err) {
    sl_probe *p = calloc(1, sizeof *p);
    if (!p) return sl_errf(err, "out of memory"), NULL;
    if (!o->model_path) {
        sl_errf(err, "no model: the extraction ran on stored activations");
        goto fail;
    }
    if (!(p->model_path = strdup(o->model_path))) {
        sl_errf(err, "out of memory");
        goto fail;
    }
    if (!(p->sae = sl_sae_load(o->sae_path, err)) || !(p->model = sl_model_load(o->model_path, err))) goto fail;
    if (o->tokenizer)
        p->tok = o->tokenizer;
    else if (o->tokenizer_path && !(p->tok = p->own_tok = sl_tokenizer_load(o->tokenizer_path, err)))
        goto fail;
    /* hook, context_size, BOS, centring, special tokens: as an extraction decides them */
    sl_run_request req = {.hook = o->hook, .context_size = o->seq_len, .prepend_bos = o->prepend_bos,
                          .center = o->center, .include_special = o->include_special};
    if (sl_run_params_resolve(&req, p->sae, p->model, p->tok, o->model_path, &p->run, err)) goto fail;
    const uint32_t ctx = p->run.context_size;
    p->hook = p->run.hook;
    p->seq_len = ctx;
    p->prepend_bos = p->run.prepend_bos;
    p->include_special = p->run.include_special;
    p->bos = p->run.bos;
    const int center = p->run.center;
    sl_backend_setup setup = {.sae = p->sae, .model = p->model, .hook = p->hook, .center = center,
                              .max_seqs = PROBE_MAX_SEQS, .seq_len = ctx};
    if (!(p->backend = sl_backend_cpu_new(&setup, err))) goto fail;
    size_t rows = (size_t)PROBE_MAX_SEQS * ctx;
    p->ids = malloc(rows * sizeof *p->ids);
    p->include = malloc(rows);
    p->token_of = malloc(rows * sizeof *p->token_of);
    if (!p->ids || !p->include || !p->token_of) {
        sl_errf(err, "out of memory");
        goto fail;
    }
    return p;
fail:
    sl_probe_free(p);
    return NULL;
}

void sl_probe_result_free(sl_probe_result *r) {
    free(r->tokens);
    free(r->start);
    free(r->end);
    free(r->row_ptr);
    free(r->col);
    free(r->val);
    memset(r, 0, sizeof *r);
}

int sl_probe_encode(sl_probe *p, const char *text, size_t len, sl_probe_result *out, sl_err *err) {
    memset(out, 0, sizeof *out);
    if (!p->tok) return sl_errf(err, "no tokenizer to encode text with");
    if (sl_tokenizer_can_encode(p->tok, err)) return -1;
    sl_encoding enc = {0};
    if (sl_tokenizer_encode(p->tok, text, len, &enc, err)) return -1;
    const int32_t vocab = sl_model_config_of(p->model)->vocab_size;
    for (size_t i = 0; i < enc.n; i++)
        if (enc.ids[i] < 0 || enc.ids[i] >= vocab) {
            sl_errf_path(err, sl_tokenizer_path(p->tok), "token id %d is outside the model's vocabulary of %d",
                         (int)enc.ids[i], (int)vocab);
            sl_encoding_free(&enc);
            return -1;
        }
    size_t n = enc.n, cap = 0;
    out->n_tokens = n;
    out->tokens = malloc((n ? n : 1) * sizeof *out->tokens);
    out->start = malloc((n ? n : 1) * sizeof *out->start);
    out->end = malloc((n ? n : 1) * sizeof *out->end);
    out->row_ptr = calloc(n + 1, sizeof *out->row_ptr);
    if (!out->tokens || !out->start || !out->end || !out->row_ptr) goto oom;
    if (n) {
        memcpy(out->tokens, enc.ids, n * sizeof *enc.ids);
        memcpy(out->start, enc.start, n * sizeof *enc.start);
        memcpy(out->end, enc.end, n * sizeof *enc.end);
    }
    const uint32_t T = p->seq_len, per_window = p->prepend_bos ? T - 1 : T;
    size_t next = 0; /* next snippet token to place */
    while (next < n) {
        uint32_t n_seq = 0;
        for (; n_seq < PROBE_MAX_SEQS && next < n; n_seq++) {
            size_t base = (size_t)n_seq * T;
            uint32_t pos = 0;
            if (p->prepend_bos) {
                p->ids[base] = p->bos;
                p->include[base] = 0; /* not a token of the snippet: never shown */
                p->token_of[base] = -1;
                pos = 1;
            }
            for (uint32_t k = 0; k < per_window && next < n; k++, pos++, next++) {
                p->ids[base + pos] = enc.ids[next];
                p->include[base + pos] = p->include_special || !sl_tokenizer_is_special(p->tok, enc.ids[next]);
                p->token_of[base + pos] = (int64_t)next;
            }
            for (; pos < T; pos++) { /* padding, as the token file pads: token 0, never encoded */
                p->ids[base + pos] = 0;
                p->include[base + pos] = 0;
                p->token_of[base + pos] = -1;
            }
        }
        uint32_t rows = n_seq * T;
        if (sl_csr_reset(&p->csr, rows, err)) goto fail;
        sl_batch_in in = {.n_seq = n_seq, .seq_len = T, .ids = p->ids, .include = p->include};
        if (p->backend->ops->run(p->backend, &in, &p->csr, err)) goto fail;
        for (uint32_t r = 0; r < rows; r++) {
            if (p->token_of[r] < 0) continue;
            size_t t = (size_t)p->token_of[r];
            uint64_t lo = p->csr.row_ptr[r], hi = p->csr.row_ptr[r + 1], have = out->row_ptr[t];
            if (have + (hi - lo) > cap) {
                size_t ncap = cap ? cap * 2 : 1024;
                while (ncap < have + (hi - lo)) ncap *= 2;
                uint32_t *c = realloc(out->col, ncap * sizeof *c);
                if (c) out->col = c;
                float *v = realloc(out->val, ncap * sizeof *v);
                if (v) out->val = v;
                if (!c || !v) goto oom;
                cap = ncap;
            }
            if (hi > lo) { /* a row with no feature may meet col/val still NULL */
                memcpy(out->col + have, p->csr.col + lo, (hi - lo) * sizeof *out->col);
                memcpy(out->val + have, p->csr.val + lo, (hi - lo) * sizeof *out->val);
            }
            out->row_ptr[t + 1] = have + (hi - lo);
        }
    }
    sl_encoding_free(&enc);
    return 0;
oom:
    sl_errf(err, "out of memory encoding a snippet of %zu tokens", n);
fail:
    sl_encoding_free(&enc);
    sl_probe_result_free(out);
    return -1;
}
