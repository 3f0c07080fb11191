/* source.h: where an extraction's activations come from, batch by batch.
 *
 *   stored activations: a safetensors file (act_input.h), read as they are;
 *   a model + dataset:  the dataset is first tokenized and packed into the
 *                       store's token file (dataset.h, tokfile.h); each batch
 *                       of sequences then runs through the model up to the hook.
 * Either way a batch yields its input (activations, or the model's input ids;
 * the backend runs the model), the token ids (-1 for padding) and which rows go
 * to the SAE: padding never does, and special tokens (BOS, EOS, ...) only with
 * include_special. */
#ifndef SAELITE_SOURCE_H
#define SAELITE_SOURCE_H

#include <stdint.h>

#include "act_input.h"
#include "common.h"
#include "dataset.h"
#include "model.h"
#include "runparams.h"
#include "sae.h"
#include "tokenizer.h"
#include "tokfile.h"

typedef struct sl_source_opts {
    const char *activations_path; /* stored activations, or: */
    const char *model_path;       /* a model directory and */
    const char *dataset_path;     /* a dataset file, or */
    sl_doc_next_fn docs;          /* documents from the caller (a SQL query) */
    void *docs_ctx;
    const char *dataset_kind;     /* "txt", "jsonl", or NULL (by extension) */
    const char *text_mode;        /* "lines" (default) or "file" */
    const char *text_field;       /* jsonl field, default "text" */
    const char *token_dtype;      /* raw .bin ids: "uint16" (default) or "uint32" */
    const char *tokenizer_path;
    const char *hook;             /* NULL: the SAE's metadata.hook_name */
    uint32_t context_size;        /* 0: the SAE's metadata.context_size, else 128 */
    int prepend_bos;              /* -1: the SAE's metadata.prepend_bos, else true */
    int include_special;
    int center;                   /* -1: the SAE's center_writing_weights, else 1 */
    uint64_t max_tokens;          /* 0: all */
    int reuse_tokens;             /* resuming: keep the store's token file if it is complete */
} sl_source_opts;

typedef struct sl_source {
    int from_model;
    sl_act_input acts;
    sl_model *model;
    sl_hook hook;
    sl_tokfile tf;
    sl_tokenizer *tok; /* for special tokens of stored activations; may be NULL */
    int include_special;
    int center; /* subtract each row's mean, as TransformerLens's centred weights do */
    uint32_t seq_len, d_in;
    uint64_t n_seq, n_tokens; /* sequences; real (non-padding) tokens */
    char hook_name[256];
    /* model sources: what sl_run_params_resolve decided (hook, context_size, BOS,
     * centring, special tokens); a 2-D token file packs no BOS (context_size is its
     * row length, prepend_bos 0, bos -1) */
    sl_run_params run;
} sl_source;

/* Opens the source and checks it against the SAE. For a model + dataset this
 * tokenizes the dataset into store_dir (which must exist). */
int sl_source_open(sl_source *src, const sl_source_opts *o, const sl_sae *sae, const char *store_dir, sl_err *err);
void sl_source_close(sl_source *src);

/* Sequences [first, first + n), rows = n * seq_len: stored activations into
 * x [rows, d_in], or model input ids [rows] (padding as 0) for a model source;
 * token ids as stored [rows] (-1 padding); include [rows] (1: goes to the SAE). */
int sl_source_read(sl_source *src, uint64_t first, uint32_t n, float *x, int32_t *ids, int32_t *tokens,
                   uint8_t *include, sl_err *err);

/* Where a row comes from in its document (model + dataset sources only). */
int sl_source_row_origin(const sl_source *src, uint64_t row, uint64_t *doc, uint32_t *char_start, uint32_t *char_end,
                         int32_t *token);

#endif
