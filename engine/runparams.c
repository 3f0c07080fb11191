/* runparams.c: run parameters of a model over text, for extraction and probe (see runparams.h). */
#include "runparams.h"

#include <stdio.h>
#include <string.h>

int sl_run_params_resolve(const sl_run_request *req, const sl_sae *sae, const sl_model *model,
                          const sl_tokenizer *tok, const char *model_path, sl_run_params *out, sl_err *err) {
    memset(out, 0, sizeof *out);
    out->bos = -1;
    const sl_model_config *c = sl_model_config_of(model);

    const char *hook = req->hook ? req->hook : sae->hook_name[0] ? sae->hook_name : NULL;
    if (!hook)
        return sl_errf_path(err, sae->path, "the SAE names no hook (metadata.hook_name); give the option 'hook'");
    if (sl_hook_parse(hook, &out->hook, err) || sl_model_check_hook(model, out->hook, err)) return -1;
    snprintf(out->hook_name, sizeof out->hook_name, "%s", hook); /* a valid hook name is short */

    const int width = sl_model_hook_width(model, out->hook);
    if (width != sae->d_in && out->hook.kind == SL_HOOK_ATTN_Z)
        return sl_errf_path(err, model_path, "the model's n_heads * head_dim %d (%s) differs from the SAE %s's d_in %d",
                            width, hook, sae->path, sae->d_in);
    if (width != sae->d_in)
        return sl_errf_path(err, model_path, "the model's d_model %d differs from the SAE %s's d_in %d", width,
                            sae->path, sae->d_in);
    if (tok && sl_tokenizer_vocab_size(tok) > c->vocab_size)
        return sl_errf_path(err, sl_tokenizer_path(tok), "vocabulary of %d exceeds the model's vocab_size %d",
                            sl_tokenizer_vocab_size(tok), c->vocab_size);

    uint32_t ctx = req->context_size;
    if (ctx) {
        if (ctx > (uint32_t)c->n_positions)
            return sl_errf_path(err, model_path, "context_size %u exceeds the model's n_positions %d", ctx,
                                c->n_positions);
    } else {
        ctx = sae->context_size > 0 ? (uint32_t)sae->context_size : 128;
        if (ctx > (uint32_t)c->n_positions) ctx = (uint32_t)c->n_positions;
    }
    out->context_size = ctx;

    int prepend = req->prepend_bos >= 0 ? req->prepend_bos : sae->prepend_bos >= 0 ? sae->prepend_bos : 1;
    int center = req->center >= 0 ? req->center : sae->center_writing_weights >= 0 ? sae->center_writing_weights : 1;
    /* TransformerLens centres writing weights of LayerNorm models only, and only
     * the residual stream and what writes to it have their mean removed. */
    if (req->center < 0 && c->rms_norm) center = 0;
    if (out->hook.kind == SL_HOOK_ATTN_Z || out->hook.kind == SL_HOOK_LN2_NORMALIZED) center = 0;
    out->prepend_bos = prepend != 0;
    out->center = center != 0;
    out->include_special = req->include_special != 0;

    int32_t bos = c->bos_token_id >= 0 ? c->bos_token_id : tok ? sl_tokenizer_added_id(tok, "<|endoftext|>") : -1;
    if (bos >= c->vocab_size) bos = -1; /* model.c and the vocabulary check above already rule it out */
    if (out->prepend_bos && bos < 0)
        return sl_errf_path(err, model_path,
                            "prepend_bos is on but neither config.json nor the tokenizer names a BOS token");
    if (out->prepend_bos && ctx < 2)
        return sl_errf(err, "context_size %u leaves no room after BOS (prepend_bos is on)", ctx);
    out->bos = bos;
    return 0;
}
