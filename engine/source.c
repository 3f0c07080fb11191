/* source.c: stored activations or model + dataset, batch by batch (see source.h). */
#include "source.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int open_activations(sl_source *src, const sl_source_opts *o, const sl_sae *sae, sl_err *err) {
    const char *path = o->activations_path;
    if (sl_act_input_open(&src->acts, path, err)) return -1;
    if ((int)src->acts.d_in != sae->d_in)
        return sl_errf_path(err, path, "activations have d_in %u but the SAE %s has d_in %d", src->acts.d_in,
                            sae->path, sae->d_in);
    int64_t min_id, max_id;
    if (sl_act_input_token_range(&src->acts, &min_id, &max_id, err)) return -1;
    if (min_id < 0) return sl_errf_path(err, path, "token id %lld is out of range (negative)", (long long)min_id);
    if (src->tok && max_id >= sl_tokenizer_vocab_size(src->tok))
        return sl_errf_path(err, path, "token id %lld is out of range for the tokenizer %s (vocabulary of %d)",
                            (long long)max_id, sl_tokenizer_path(src->tok), sl_tokenizer_vocab_size(src->tok));
    if (max_id > INT32_MAX)
        return sl_errf_path(err, path, "token id %lld is out of range (above 2^31-1)", (long long)max_id);
    src->seq_len = src->acts.seq_len;
    src->n_seq = src->acts.n_seq;
    src->n_tokens = src->n_seq * src->seq_len;
    src->d_in = src->acts.d_in;
    return 0;
}

static int open_model(sl_source *src, const sl_source_opts *o, const sl_sae *sae, const char *store_dir,
                      sl_err *err) {
    if (!(src->model = sl_model_load(o->model_path, err))) return -1;
    const sl_model_config *c = sl_model_config_of(src->model);
    /* hook, context_size, BOS, centring, special tokens: as the probe decides them */
    sl_run_request req = {.hook = o->hook, .context_size = o->context_size, .prepend_bos = o->prepend_bos,
                          .center = o->center, .include_special = o->include_special};
    sl_run_params *rp = &src->run;
    if (sl_run_params_resolve(&req, sae, src->model, src->tok, o->model_path, rp, err)) return -1;
    snprintf(src->hook_name, sizeof src->hook_name, "%s", rp->hook_name);
    src->hook = rp->hook;
    src->center = rp->center;
    src->include_special = rp->include_special;
    const uint32_t ctx = rp->context_size;
    const int prepend = rp->prepend_bos;
    const int32_t bos = rp->bos;

    const char *dpath = o->dataset_path;
    if (o->reuse_tokens) { /* resuming: the first pass finished if tokens.slt is there and whole */
        sl_err ignored;
        if (sl_tokfile_open(&src->tf, store_dir, &ignored) == 0) {
            src->seq_len = src->tf.header->seq_len;
            src->n_seq = src->tf.header->n_seq;
            src->n_tokens = src->tf.header->n_tokens;
            src->d_in = (uint32_t)c->d_model;
            return 0;
        }
    }
    int token_file = dpath && sl_dataset_is_token_file(dpath);
    if (!token_file && !src->tok)
        return sl_errf(err, "a text dataset needs a tokenizer: the option 'tokenizer' (a tokenizer.json), or a "
                            "tokenizer.json in the model directory");

    sl_tokfile_writer w;
    int64_t row_len = token_file ? sl_dataset_tokens_row_len(dpath, err) : 0;
    if (row_len < 0) return -1;
    if (row_len > 0) { /* 2-D token ids: each row is a sequence as it is */
        if (row_len > c->n_positions)
            return sl_errf_path(err, dpath, "rows of %lld tokens exceed the model's n_positions %d", (long long)row_len,
                                c->n_positions);
        if (sl_tokfile_begin(&w, store_dir, (uint32_t)row_len, 0, -1, o->max_tokens, err)) return -1;
        rp->context_size = (uint32_t)row_len; /* what this run does instead of the options' packing */
        rp->prepend_bos = 0;
        rp->bos = -1;
    } else if (sl_tokfile_begin(&w, store_dir, ctx, prepend, bos, o->max_tokens, err))
        return -1;

    int rc;
    sl_dataset_counts counts = {0};
    if (token_file) {
        rc = sl_dataset_tokens_file(dpath, o->token_dtype, c->vocab_size, src->tok, bos, &w, err);
    } else if (dpath) {
        sl_text_source ts;
        rc = sl_text_source_open(&ts, dpath, o->dataset_kind, o->text_mode, o->text_field, err);
        if (rc == 0) rc = sl_dataset_tokenize(src->tok, sl_text_source_next, &ts, &w, &counts, NULL, NULL, err);
        sl_text_source_close(&ts);
    } else {
        rc = sl_dataset_tokenize(src->tok, o->docs, o->docs_ctx, &w, &counts, NULL, NULL, err);
    }
    if (rc == 0 && w.n_tokens == 0) rc = sl_errf_path(err, dpath ? dpath : "query", "empty dataset (no tokens)");
    if (rc != 0) {
        sl_tokfile_abort(&w);
        return -1;
    }
    if (sl_tokfile_finish(&w, err) || sl_tokfile_open(&src->tf, store_dir, err)) return -1;
    src->seq_len = src->tf.header->seq_len;
    src->n_seq = src->tf.header->n_seq;
    src->n_tokens = src->tf.header->n_tokens;
    src->d_in = (uint32_t)c->d_model;
    return 0;
}

int sl_source_open(sl_source *src, const sl_source_opts *o, const sl_sae *sae, const char *store_dir, sl_err *err) {
    memset(src, 0, sizeof *src);
    src->include_special = o->include_special;
    if (o->tokenizer_path && !(src->tok = sl_tokenizer_load(o->tokenizer_path, err))) return -1;
    if (o->activations_path) return open_activations(src, o, sae, err);
    src->from_model = 1;
    return open_model(src, o, sae, store_dir, err);
}

void sl_source_close(sl_source *src) {
    sl_act_input_close(&src->acts);
    sl_model_free(src->model);
    sl_tokfile_close(&src->tf);
    sl_tokenizer_free(src->tok);
    memset(src, 0, sizeof *src);
}

int sl_source_read(sl_source *src, uint64_t first, uint32_t n, float *x, int32_t *ids, int32_t *tokens,
                   uint8_t *include, sl_err *err) {
    size_t rows = (size_t)n * src->seq_len;
    if (!src->from_model) {
        if (sl_act_input_read(&src->acts, first, n, x, tokens, err)) return -1;
        for (size_t i = 0; i < rows; i++)
            include[i] = src->include_special || !src->tok || !sl_tokenizer_is_special(src->tok, tokens[i]);
        return 0;
    }
    const sl_tok_record *rec = src->tf.records + first * src->seq_len;
    for (size_t i = 0; i < rows; i++) {
        tokens[i] = rec[i].token;
        ids[i] = rec[i].token >= 0 ? rec[i].token : 0; /* padding: causal attention keeps it harmless */
        include[i] = rec[i].token >= 0 && (src->include_special || !rec[i].special);
    }
    return 0;
}

int sl_source_row_origin(const sl_source *src, uint64_t row, uint64_t *doc, uint32_t *char_start, uint32_t *char_end,
                         int32_t *token) {
    if (!src->from_model || row >= src->n_seq * src->seq_len) return -1;
    const sl_tok_record *r = &src->tf.records[row];
    *doc = r->doc;
    *char_start = r->char_start;
    *char_end = r->char_end;
    *token = r->token;
    return 0;
}
