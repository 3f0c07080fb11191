/* fuzz_tokenizer_json.c: loading tokenizer.json (engine/tokenizer.c): the vocab
 * and added tokens, the decoders, and the encoder set-up (pre-tokenizer steps,
 * Oniguruma-to-PCRE2 regex rewriting, merges, unk, ignore_merges).
 *
 * Input: a whole tokenizer.json. A tokenizer that loads must decode every id (each
 * token's bytes readable), and when it can encode, encode a few fixed texts
 * (ASCII, added-token spellings, multi-byte and invalid UTF-8) with the promises
 * of tokenizer.h: every id decodes, starts and ends never decrease and lie in
 * [0, len], start <= end; a failing encode leaves the encoding as it was. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
static volatile unsigned fz_sink;

static const struct {
    const char *s;
    size_t n;
} texts[] = {
#define T(lit) {lit, sizeof lit - 1}
    T("Hello world, it's 2024!  \n\tok ok"),
    T("<|endoftext|>x <mask>  TODO y\xC2\xA0<|endoftext|><|endoftext|>"),
    T("\xff\xc3(\xe2\x82 \xf0\x9f\x98\x80\xed\xa0\x80 caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87"),
    T(""),
    T(" "),
    T("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab"),
#undef T
};

static void check_encoding(const sl_tokenizer *tok, const sl_encoding *e, size_t n0, size_t len) {
    uint32_t prev_s = 0, prev_e = 0;
    for (size_t i = n0; i < e->n; i++) {
        size_t blen;
        FZ_ASSERT(e->ids[i] >= 0 && e->ids[i] < sl_tokenizer_vocab_size(tok));
        FZ_ASSERT(sl_tokenizer_token_bytes(tok, e->ids[i], &blen) != NULL);
        FZ_ASSERT(e->start[i] <= e->end[i] && e->end[i] <= len);
        FZ_ASSERT(e->start[i] >= prev_s && e->end[i] >= prev_e);
        prev_s = e->start[i], prev_e = e->end[i];
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fz_memfd(data, size);
    sl_err err;
    err.msg[0] = 0;
    sl_tokenizer *tok = sl_tokenizer_load(path, &err);
    if (!tok) {
        FZ_CHECK_ERR(err);
        return 0;
    }
    FZ_ACCEPTED("tokenizer");
    FZ_ASSERT(strcmp(sl_tokenizer_path(tok), path) == 0);
    int32_t n_ids = sl_tokenizer_vocab_size(tok);
    FZ_ASSERT(n_ids >= 0);
    unsigned sum = 0;
    int32_t lim = n_ids < (1 << 16) ? n_ids : (1 << 16);
    for (int32_t id = -1; id <= lim; id++) {
        size_t len = 12345;
        const char *b = sl_tokenizer_token_bytes(tok, id, &len);
        if (!b) {
            FZ_ASSERT(len == 0);
            FZ_ASSERT(!sl_tokenizer_is_special(tok, id) || (id >= 0 && id < n_ids));
            continue;
        }
        FZ_ASSERT(id >= 0 && id < n_ids);
        for (size_t k = 0; k < len; k++) sum += (unsigned char)b[k];
        sum += (unsigned)sl_tokenizer_is_special(tok, id);
    }
    int32_t eot = sl_tokenizer_added_id(tok, "<|endoftext|>");
    FZ_ASSERT(eot >= -1 && eot < n_ids);
    if (sl_tokenizer_can_encode(tok, &err) == 0) {
        sl_encoding e;
        memset(&e, 0, sizeof e);
        for (size_t t = 0; t < sizeof texts / sizeof texts[0]; t++) {
            size_t n0 = e.n;
            err.msg[0] = 0;
            if (sl_tokenizer_encode(tok, texts[t].s, texts[t].n, &e, &err) == 0)
                check_encoding(tok, &e, n0, texts[t].n);
            else {
                FZ_ERR_SET(err);
                FZ_ASSERT(e.n == n0);
            }
        }
        sl_encoding_free(&e);
    } else {
        FZ_CHECK_ERR(err);
        sl_encoding e;
        memset(&e, 0, sizeof e);
        FZ_ASSERT(sl_tokenizer_encode(tok, "x", 1, &e, &err) != 0);
        FZ_ASSERT(e.n == 0);
        sl_encoding_free(&e);
    }
    fz_sink = sum;
    sl_tokenizer_free(tok);
    return 0;
}
