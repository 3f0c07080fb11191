/* runparams.h: the one place that decides how a model run over text is set up.
 *
 * An extraction from a model + dataset (source.c) and a snippet through the same
 * model (probe.c, behind encode_text) must tokenize, pack and run the same way, or
 * a snippet would not see what a dataset document saw. Both hand the options they
 * were given to sl_run_params_resolve, which fills in the defaults from the SAE's
 * metadata and the model, checks them, and returns what the run does (or the one
 * error message for what is wrong, the same for both callers).
 *
 * Defaults and rules:
 *   hook            the SAE's metadata.hook_name; parsed and checked against the
 *                   model's layers
 *   context_size    the SAE's metadata.context_size, else 128, clamped to the
 *                   model's n_positions when defaulted; a context_size given
 *                   explicitly above n_positions is an error
 *   prepend_bos     the SAE's metadata.prepend_bos, else 1
 *   center          the SAE's center_writing_weights, else 1; off by default for
 *                   RMSNorm models, and never for attn.hook_z or ln2.hook_normalized
 *                   (TransformerLens centres writing weights of LayerNorm models only)
 *   BOS             the model's bos_token_id, else the tokenizer's <|endoftext|>
 *                   (both are within the model's vocabulary: model.c checks the
 *                   first, the vocabulary check below bounds the second). With
 *                   prepend_bos there must be one, and context_size must be 2 or
 *                   more (a sequence of BOS alone holds no token)
 * Checks, in this order (the first that fails is the error): hook missing, hook
 * unknown or beyond the model's layers, the hook's width (d_model, or n_head * head_dim
 * for attn.hook_z) against the SAE's d_in,
 * the tokenizer's vocabulary against the model's (when a tokenizer is given),
 * context_size given above n_positions, prepend_bos without a BOS token, context_size
 * too small for BOS. */
#ifndef SAELITE_RUNPARAMS_H
#define SAELITE_RUNPARAMS_H

#include <stdint.h>

#include "common.h"
#include "model.h"
#include "sae.h"
#include "tokenizer.h"

/* What the options asked for. */
typedef struct sl_run_request {
    const char *hook;      /* NULL: the SAE's metadata.hook_name */
    uint32_t context_size; /* 0: the SAE's metadata.context_size, else 128 (clamped to n_positions) */
    int prepend_bos;       /* -1: the SAE's metadata.prepend_bos, else 1 */
    int center;            /* -1: the SAE's center_writing_weights, else 1 */
    int include_special;   /* special tokens of the text go to the SAE */
} sl_run_request;

/* What the run does. */
typedef struct sl_run_params {
    char hook_name[256];
    sl_hook hook;
    uint32_t context_size; /* tokens per sequence, BOS included */
    int prepend_bos;       /* 0 or 1: every sequence starts with BOS */
    int32_t bos;           /* the BOS id (also the document separator); -1: none */
    int center;            /* 0 or 1: subtract each row's mean at the hook */
    int include_special;   /* 0 or 1 */
} sl_run_params;

/* tok may be NULL (no tokenizer: BOS only from config.json, no vocabulary check).
 * model_path names the model in messages. Returns 0 and fills *out, or -1 with err
 * set (and *out unspecified). */
int sl_run_params_resolve(const sl_run_request *req, const sl_sae *sae, const sl_model *model,
                          const sl_tokenizer *tok, const char *model_path, sl_run_params *out, sl_err *err);

#endif
