/* probe.h: a model and an SAE on one snippet of text, without a store.
 *
 * Reproduces what an extraction does to a text dataset, for a single document:
 * the tokenizer (no post-processor), packing into sequences of seq_len tokens
 * that each start with BOS when prepend_bos (as tokfile.c packs a document that
 * begins a sequence: a long snippet continues in the next window, which starts
 * with its own BOS), the GPT-2 forward up to the hook, centring, and the SAE
 * encode of the rows that count, all through the CPU backend (backend.h). The
 * loaded model, SAE and tokenizer stay in the sl_probe so later snippets only
 * pay for their own forward pass. The loaded weights also serve the logit lens
 * (sl_probe_unembed). */
#ifndef SAELITE_PROBE_H
#define SAELITE_PROBE_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

typedef struct sl_probe_opts {
    const char *sae_path, *model_path, *tokenizer_path;
    const struct sl_tokenizer *tokenizer; /* if set: already loaded, used instead of tokenizer_path;
                                             borrowed (the caller keeps it alive and frees it) */
    const char *hook;      /* NULL: the SAE's metadata.hook_name */
    uint32_t seq_len;      /* tokens per window (an extraction's context_size); 0: as extract
                              (SAE metadata, else 128, clamped to n_positions) */
    int prepend_bos;       /* -1: the SAE's metadata.prepend_bos, else 1 */
    int center;            /* -1: the SAE's center_writing_weights, else 1 */
    int include_special;   /* special tokens of the text go to the SAE */
} sl_probe_opts;

typedef struct sl_probe sl_probe;

sl_probe *sl_probe_open(const sl_probe_opts *o, sl_err *err);
void sl_probe_free(sl_probe *p);
uint32_t sl_probe_seq_len(const sl_probe *p);
/* May be NULL: a probe opened without a tokenizer cannot encode text. */
const struct sl_tokenizer *sl_probe_tokenizer(const sl_probe *p);
const struct sl_sae *sl_probe_sae(const sl_probe *p);
/* Hook, seq_len (context_size), BOS, centring and special tokens as the probe runs
 * them: sl_run_params_resolve's answer (runparams.h), the one an extraction with the
 * same options gets. */
const struct sl_run_params *sl_probe_run_params(const sl_probe *p);
/* The unembedding W_U as rows [vocab, d_model] (sl_model_unembed): the
 * checkpoint's lm_head.weight when it has one (*untied = 1), else the tied token
 * embedding. Owned by the probe. */
const float *sl_probe_unembed(sl_probe *p, int *vocab, int *d_model, int *untied, sl_err *err);

/* The snippet's tokens (BOS tokens added at window starts are not among them)
 * and each one's nonzero feature activations, CSR: token i's features are
 * col[row_ptr[i] .. row_ptr[i + 1]), ascending. Special tokens of the text
 * have no activations unless include_special. start/end: byte offsets of each
 * token in the text. */
typedef struct sl_probe_result {
    size_t n_tokens;
    int32_t *tokens;  /* [n_tokens] */
    uint32_t *start, *end; /* [n_tokens] */
    uint64_t *row_ptr; /* [n_tokens + 1] */
    uint32_t *col;     /* [nnz] */
    float *val;        /* [nnz] */
} sl_probe_result;

int sl_probe_encode(sl_probe *p, const char *text, size_t len, sl_probe_result *out, sl_err *err);
void sl_probe_result_free(sl_probe_result *r);

#endif
