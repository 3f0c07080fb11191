/* act_input.h: a dataset of stored activations (docs/INPUTS.md).
 *
 * A safetensors file with
 *   activations [n_seq, seq_len, d_in]  F32, F16 or BF16
 *   tokens      [n_seq, seq_len]        I32 or I64
 * read by mmap one batch of sequences at a time; pages already consumed are
 * dropped from the resident set, so memory does not grow with the file. */
#ifndef SAELITE_ACT_INPUT_H
#define SAELITE_ACT_INPUT_H

#include <stdint.h>

#include "common.h"
#include "safetensors.h"

typedef struct sl_act_input {
    sl_st *st;
    const sl_tensor *acts, *tokens;
    uint64_t n_seq;
    uint32_t seq_len, d_in;
} sl_act_input;

int sl_act_input_open(sl_act_input *in, const char *path, sl_err *err);
void sl_act_input_close(sl_act_input *in);

/* Smallest and largest token id (for range checks against a tokenizer). */
int sl_act_input_token_range(const sl_act_input *in, int64_t *min_id, int64_t *max_id, sl_err *err);

/* Sequences [first, first + n): activations as f32 into x [n * seq_len, d_in],
 * token ids into tokens [n * seq_len]. */
int sl_act_input_read(sl_act_input *in, uint64_t first, uint32_t n, float *x, int32_t *tokens,
                      sl_err *err);

#endif
