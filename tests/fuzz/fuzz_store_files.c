/* fuzz_store_files.c: the two other files of a store, read by mmap: the results
 * file (sl_results_open, engine/results.c) and the packed token file
 * (sl_tokfile_open, engine/tokfile.c).
 *
 * Input: one mode byte, then the file. mode & 1 clear: results.slr; set: tokens.slt.
 * Both carry an XXH64 of everything after their 64-byte header; when mode & 2 the
 * harness recomputes it first so the fuzzer reaches the size and reference checks.
 * An opened results file is walked as the virtual tables walk it (results.h: every
 * example's window lies inside the window array, max_index inside the window); an
 * opened token file's records are all read. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "fuzz_common.h"
#include "results.h"
#include "tokfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);
static volatile uint64_t fz_sink;

static const char *store_dir;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    store_dir = strdup(fz_mkdir("store"));
    return 0;
}

static void walk_results(const sl_results *res, size_t size) {
    const sl_results_header *h = res->header;
    FZ_ASSERT(res->map_size == size);
    uint64_t acc = 0;
    for (uint32_t f = 0; f < h->d_sae; f++) {
        const sl_result_feature *ft = &res->features[f];
        FZ_ASSERT(ft->n_examples <= h->top_k);
        acc += ft->n_active;
        for (uint32_t j = 0; j < ft->n_examples; j++) {
            const sl_result_example *e = &res->examples[(size_t)f * h->top_k + j];
            FZ_ASSERT(e->window_offset <= h->n_window_tokens);
            FZ_ASSERT(e->window_len <= h->n_window_tokens - e->window_offset);
            FZ_ASSERT(e->max_index < e->window_len);
            const sl_window_token *w = res->windows + e->window_offset;
            for (uint32_t k = 0; k < e->window_len; k++) acc += (uint64_t)(uint32_t)w[k].token;
            acc += (uint64_t)(uint32_t)w[e->max_index].token;
        }
    }
    fz_sink = acc;
}

static void walk_tokfile(const sl_tokfile *tf, size_t size) {
    const sl_tokfile_header *h = tf->header;
    FZ_ASSERT(tf->map_size == size);
    uint64_t n = h->n_seq * h->seq_len, acc = 0;
    FZ_ASSERT(sizeof *h + n * sizeof(sl_tok_record) == size);
    for (uint64_t i = 0; i < n; i++) acc += (uint64_t)(uint32_t)tf->records[i].token + tf->records[i].doc;
    fz_sink = acc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    unsigned mode = data[0];
    size_t n = size - 1;
    unsigned char *m = malloc(n ? n : 1);
    FZ_ASSERT(m);
    memcpy(m, data + 1, n);
    int tokfile = mode & 1;
    if ((mode & 2) && n >= 64)
        fz_put_u64(m + (tokfile ? 48 : 56), XXH64(m + 64, n - 64, 0));
    char name[64];
    snprintf(name, sizeof name, "store/%s", tokfile ? SL_TOKFILE_NAME : SL_RESULTS_FILE);
    fz_write_file(fz_path(name), m, n);
    free(m);

    sl_err err;
    err.msg[0] = 0;
    if (tokfile) {
        sl_tokfile tf;
        if (sl_tokfile_open(&tf, store_dir, &err) != 0) {
            FZ_CHECK_ERR(err);
            return 0;
        }
        FZ_ACCEPTED("token file");
        walk_tokfile(&tf, n);
        sl_tokfile_close(&tf);
    } else {
        sl_results res;
        if (sl_results_open(&res, store_dir, &err) != 0) {
            FZ_CHECK_ERR(err);
            return 0;
        }
        FZ_ACCEPTED("results");
        walk_results(&res, n);
        sl_results_close(&res);
    }
    return 0;
}
