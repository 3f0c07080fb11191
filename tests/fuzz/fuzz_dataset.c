/* fuzz_dataset.c: dataset files (engine/dataset.c) as the first pass of an
 * extraction reads them (engine/source.c), written into a token file
 * (engine/tokfile.c) that is then read back.
 *
 * Input: one mode byte (modulo 8), then the dataset file.
 *   0 .npy   1 .safetensors   2 .bin (uint16)   3 .bin (uint32)  -- pre-tokenized:
 *     sl_dataset_tokens_row_len, then sl_dataset_tokens_file (vocabulary of 1000)
 *   4 .jsonl (field "text")   5 .txt (lines)   6 .txt (text_mode "file")
 *   7 .jsonl read with field "t"  -- text: sl_text_source_* and sl_dataset_tokenize
 *     with tests/data/tokenizer/bytelevel.json (BOS-separated, BOS-prepended)
 * When the pass succeeds the token file is finished and opened again, and its
 * records must be consistent: sequences of seq_len, ids in the vocabulary or -1 for
 * padding (only at the end), char_start <= char_end, documents in order. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dataset.h"
#include "fuzz_common.h"
#include "tokfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define VOCAB 1000
#define MAX_TOKENS 100000

static sl_tokenizer *tok;
static const char *store_dir;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    char path[1200];
    const char *env = getenv("SAELITE_FUZZ_DATA");
#ifdef SAELITE_SOURCE_DIR
    snprintf(path, sizeof path, "%s/bytelevel.json",
             env && *env ? env : SAELITE_SOURCE_DIR "/tests/data/tokenizer");
#else
    snprintf(path, sizeof path, "%s/bytelevel.json", env && *env ? env : "tests/data/tokenizer");
#endif
    sl_err err;
    if (!(tok = sl_tokenizer_load(path, &err))) {
        fprintf(stderr, "fuzz_dataset: %s (set SAELITE_FUZZ_DATA to tests/data/tokenizer)\n", err.msg);
        abort();
    }
    store_dir = strdup(fz_mkdir("store"));
    fz_mkdir("ds");
    return 0;
}

/* Reads the finished token file back. */
static void check_tokfile(int32_t vocab, uint64_t n_tokens_written) {
    sl_tokfile tf;
    sl_err err;
    err.msg[0] = 0;
    int rc = sl_tokfile_open(&tf, store_dir, &err);
    if (rc != 0) fprintf(stderr, "%s\n", err.msg);
    FZ_ASSERT(rc == 0);
    const sl_tokfile_header *h = tf.header;
    FZ_ASSERT(h->n_tokens == n_tokens_written && h->n_special <= h->n_tokens);
    uint64_t n = h->n_seq * h->seq_len, real = 0, prev_doc = 0;
    int padding = 0;
    for (uint64_t i = 0; i < n; i++) {
        const sl_tok_record *r = &tf.records[i];
        if (r->token == -1) {
            padding = 1;
            FZ_ASSERT(i >= (h->n_seq - 1) * h->seq_len); /* only the last sequence is padded */
            continue;
        }
        FZ_ASSERT(!padding);
        FZ_ASSERT(r->token >= 0 && r->token < vocab);
        FZ_ASSERT(r->char_start <= r->char_end);
        FZ_ASSERT(r->doc >= prev_doc);
        prev_doc = r->doc;
        real++;
    }
    FZ_ASSERT(real == h->n_tokens);
    sl_tokfile_close(&tf);
}

static void token_dataset(const char *path, const char *token_dtype) {
    sl_err err;
    err.msg[0] = 0;
    int64_t row_len = sl_dataset_tokens_row_len(path, &err);
    if (row_len < 0) {
        FZ_CHECK_ERR(err);
        return;
    }
    if (row_len > 4096) return; /* beyond any model's n_positions: refused before this */
    sl_tokfile_writer w;
    uint32_t seq_len = row_len ? (uint32_t)row_len : 8;
    FZ_ASSERT(sl_tokfile_begin(&w, store_dir, seq_len, !row_len, row_len ? -1 : 0, MAX_TOKENS, &err) == 0);
    if (sl_dataset_tokens_file(path, token_dtype, VOCAB, NULL, 0, &w, &err) != 0) {
        FZ_CHECK_ERR(err);
        sl_tokfile_abort(&w);
        return;
    }
    FZ_ACCEPTED("tokens");
    if (w.n_tokens == 0) {
        sl_tokfile_abort(&w);
        return;
    }
    uint64_t n_tokens = w.n_tokens;
    FZ_ASSERT(sl_tokfile_finish(&w, &err) == 0);
    check_tokfile(VOCAB, n_tokens);
}

static void text_dataset(const char *path, const char *kind, const char *text_mode, const char *field) {
    sl_err err;
    err.msg[0] = 0;
    sl_text_source ts;
    if (sl_text_source_open(&ts, path, kind, text_mode, field, &err) != 0) {
        FZ_CHECK_ERR(err);
        return;
    }
    sl_tokfile_writer w;
    FZ_ASSERT(sl_tokfile_begin(&w, store_dir, 16, 1, sl_tokenizer_added_id(tok, "<|endoftext|>"), MAX_TOKENS,
                               &err) == 0);
    sl_dataset_counts counts = {0};
    int rc = sl_dataset_tokenize(tok, sl_text_source_next, &ts, &w, &counts, NULL, NULL, &err);
    sl_text_source_close(&ts);
    if (rc != 0) {
        FZ_CHECK_ERR(err);
        sl_tokfile_abort(&w);
        return;
    }
    FZ_ACCEPTED("text");
    if (w.n_tokens == 0) {
        sl_tokfile_abort(&w);
        return;
    }
    uint64_t n_tokens = w.n_tokens;
    FZ_ASSERT(sl_tokfile_finish(&w, &err) == 0);
    check_tokfile(sl_tokenizer_vocab_size(tok), n_tokens);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    static const char *const names[8] = {"ds/d.npy", "ds/d.safetensors", "ds/d.bin", "ds/d.bin",
                                         "ds/d.jsonl", "ds/d.txt", "ds/d.txt", "ds/d.txt"};
    int mode = data[0] % 8;
    const char *path = fz_path(names[mode]);
    fz_write_file(path, data + 1, size - 1);
    switch (mode) {
    case 0:
    case 1:
    case 2: token_dataset(path, NULL); break;
    case 3: token_dataset(path, "uint32"); break;
    case 4: text_dataset(path, NULL, NULL, NULL); break;
    case 5: text_dataset(path, NULL, "lines", NULL); break;
    case 6: text_dataset(path, NULL, "file", NULL); break;
    default: text_dataset(path, "jsonl", NULL, "t"); break;
    }
    return 0;
}
