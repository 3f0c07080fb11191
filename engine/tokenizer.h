/* tokenizer.h: Hugging Face tokenizer.json, decode side.
 *
 * Maps token ids to the bytes they stand for: for byte-level BPE (GPT-2 style,
 * decoder "ByteLevel") each vocabulary character is mapped back through the
 * GPT-2 byte-to-unicode table; added tokens are taken verbatim; other decoders
 * (Metaspace) turn U+2581 into a space. A token may hold an incomplete UTF-8
 * sequence (a multi-byte character split over tokens): callers that need text
 * pass the bytes through sl_utf8_sanitize. */
#ifndef SAELITE_TOKENIZER_H
#define SAELITE_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

typedef struct sl_tokenizer sl_tokenizer;

sl_tokenizer *sl_tokenizer_load(const char *path, sl_err *err);
void sl_tokenizer_free(sl_tokenizer *tok);

const char *sl_tokenizer_path(const sl_tokenizer *tok);
/* One past the largest id. */
int32_t sl_tokenizer_vocab_size(const sl_tokenizer *tok);
/* Bytes of a token, or NULL when the id is not in the vocabulary. */
const char *sl_tokenizer_token_bytes(const sl_tokenizer *tok, int32_t id, size_t *len);
/* 1 for added tokens marked special (BOS, EOS, pad, ...). */
int sl_tokenizer_is_special(const sl_tokenizer *tok, int32_t id);

#endif
