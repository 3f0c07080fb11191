/* fuzz_tokenizer_encode.c: the byte-level BPE encoder (sl_tokenizer_encode) on
 * arbitrary text.
 *
 * Tokenizers, loaded once: the HF fixtures of tests/data/tokenizer (bytelevel,
 * prefix_space, split_o200k, split_regex), the variants of variants.json applied to
 * bytelevel.json as tests/unit/test_tokenizer.c does (Split Removed/String/\b/\h,
 * two splits, lookarounds, empty matches, unk with and without fuse_unk), and two
 * more: added tokens with lstrip / rstrip / single_word / normalized (with and
 * without a " " token), and ignore_merges.
 *
 * Input: one byte choosing the tokenizer (modulo their number), then the text.
 * Checked for every encoding (tokenizer.h): ids are in the vocabulary, starts and
 * ends never decrease and lie in [0, len], start <= end; encoding the same text
 * again (now from the word cache) gives the same result. For tokenizers that
 * drop nothing (no prefix space, no Removed split, no stripping, full byte
 * alphabet) and valid UTF-8 text, the tokens tile the text: token i's bytes are
 * exactly text[start_i, end_i) and each token starts where the previous ended. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "tokenizer.h"
#include "../unit/tokenizer_variant.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define MAX_TOK 32
static sl_tokenizer *toks[MAX_TOK];
static int lossless[MAX_TOK];
static int n_toks;
static char data_dir[1024];

static const char *data_path(const char *name) {
    static char p[1200];
    snprintf(p, sizeof p, "%s/%s", data_dir, name);
    return p;
}

/* Whether the pre-tokenizer keeps every byte where it was. */
static int pre_is_lossless(json_t *pt) {
    const char *type = json_string_value(json_object_get(pt, "type"));
    if (!type) return 0;
    if (strcmp(type, "Sequence") == 0) {
        size_t i;
        json_t *v;
        json_array_foreach(json_object_get(pt, "pretokenizers"), i, v) {
            if (!pre_is_lossless(v)) return 0;
        }
        return 1;
    }
    if (strcmp(type, "ByteLevel") == 0) {
        json_t *aps = json_object_get(pt, "add_prefix_space");
        return aps && json_is_false(aps);
    }
    if (strcmp(type, "Split") == 0) {
        const char *b = json_string_value(json_object_get(pt, "behavior"));
        return b && strcmp(b, "Isolated") == 0;
    }
    return 0;
}

static int added_is_lossless(json_t *added) {
    size_t i;
    json_t *v;
    json_array_foreach(added, i, v) {
        if (json_is_true(json_object_get(v, "lstrip")) || json_is_true(json_object_get(v, "rstrip")))
            return 0;
    }
    return 1;
}

static int add_tokenizer(json_t *root, const char *name, int may_be_lossless) {
    if (n_toks == MAX_TOK) abort();
    char file[64];
    snprintf(file, sizeof file, "tok%02d.json", n_toks);
    const char *path = fz_path(file);
    if (json_dump_file(root, path, JSON_COMPACT) != 0) fz_die(path);
    sl_err err;
    sl_tokenizer *tok = sl_tokenizer_load(path, &err);
    if (!tok || sl_tokenizer_can_encode(tok, &err) != 0) {
        fprintf(stderr, "fuzz_tokenizer_encode: tokenizer %s: %s\n", name, err.msg);
        abort();
    }
    lossless[n_toks] = may_be_lossless && pre_is_lossless(json_object_get(root, "pre_tokenizer")) &&
                       added_is_lossless(json_object_get(root, "added_tokens"));
    toks[n_toks] = tok;
    return n_toks++;
}

static json_t *load_json(const char *name) {
    json_error_t jerr;
    json_t *j = json_load_file(data_path(name), 0, &jerr);
    if (!j) {
        fprintf(stderr, "fuzz_tokenizer_encode: %s: %s (set SAELITE_FUZZ_DATA to tests/data/tokenizer)\n",
                data_path(name), jerr.text);
        abort();
    }
    return j;
}

/* The variants of variants.json (tests/unit/tokenizer_variant.h). */
static void add_variants(void) {
    json_t *vs = load_json("variants.json"), *v;
    size_t vi;
    json_array_foreach(json_object_get(vs, "variants"), vi, v) {
        const char *name = json_string_value(json_object_get(v, "name"));
        json_t *root = load_json("bytelevel.json");
        const char *drop = apply_tokenizer_variant(root, v);
        add_tokenizer(root, name ? name : "variant", drop == NULL);
        json_decref(root);
    }
    json_decref(vs);
}

/* bytelevel.json with added tokens of every kind of option (with_space: also " "). */
static int add_options_variant(int with_space) {
    json_t *root = load_json("bytelevel.json");
    json_t *added = json_object_get(root, "added_tokens");
    static const char *const spec[] = {
        "{\"id\": 1500, \"content\": \"<mask>\", \"lstrip\": true, \"normalized\": false, \"special\": true}",
        "{\"id\": 1501, \"content\": \"FIX\", \"rstrip\": true, \"single_word\": true, \"normalized\": true}",
        "{\"id\": 1502, \"content\": \"ab\", \"single_word\": true, \"normalized\": false}",
        "{\"id\": 1503, \"content\": \"\xc3\xa9t\xc3\xa9\", \"lstrip\": true, \"rstrip\": true}",
        "{\"id\": 1504, \"content\": \"<|endoftext|>x\", \"normalized\": true}",
        "{\"id\": 1505, \"content\": \" \", \"single_word\": true}",
    };
    for (size_t i = 0; i < sizeof spec / sizeof spec[0] - !with_space; i++) {
        json_error_t jerr;
        json_t *a = json_loads(spec[i], 0, &jerr);
        if (!a) abort();
        json_array_append_new(added, a);
    }
    int t = add_tokenizer(root, with_space ? "added_options" : "added_options_no_space", 1);
    json_decref(root);
    return t;
}

/* bytelevel.json with ignore_merges: whole pre-tokens found in the vocab win. */
static void add_ignore_merges_variant(void) {
    json_t *root = load_json("bytelevel.json");
    json_object_set_new(json_object_get(root, "model"), "ignore_merges", json_true());
    add_tokenizer(root, "ignore_merges", 1);
    json_decref(root);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    const char *env = getenv("SAELITE_FUZZ_DATA");
#ifdef SAELITE_SOURCE_DIR
    snprintf(data_dir, sizeof data_dir, "%s", env && *env ? env : SAELITE_SOURCE_DIR "/tests/data/tokenizer");
#else
    snprintf(data_dir, sizeof data_dir, "%s", env && *env ? env : "tests/data/tokenizer");
#endif
    static const char *const files[] = {"bytelevel.json", "prefix_space.json", "split_o200k.json",
                                        "split_regex.json"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        json_t *root = load_json(files[i]);
        add_tokenizer(root, files[i], 1);
        json_decref(root);
    }
    add_variants();
    add_options_variant(1);
    add_ignore_merges_variant();
    add_options_variant(0);
    return 0;
}

static int valid_utf8(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i], lo = 0x80, hi = 0xBF;
        size_t need;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) need = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        } else
            return 0;
        for (size_t k = 1; k <= need; k++) {
            if (i + k >= n || s[i + k] < lo || s[i + k] > hi) return 0;
            lo = 0x80, hi = 0xBF;
        }
        i += need + 1;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int t = data[0] % n_toks;
    const sl_tokenizer *tok = toks[t];
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    sl_encoding e, again;
    memset(&e, 0, sizeof e);
    memset(&again, 0, sizeof again);
    sl_err err;
    err.msg[0] = 0;
    if (sl_tokenizer_encode(tok, text, len, &e, &err) != 0) {
        /* only resource limits may fail (regex match limits on pathological text) */
        FZ_CHECK_ERR(err);
        FZ_ASSERT(e.n == 0);
        sl_encoding_free(&e);
        return 0;
    }
    if (fz_verbose()) {
        fprintf(stderr, "tokenizer %d, %zu bytes -> %zu tokens:", t, len, e.n);
        for (size_t i = 0; i < e.n; i++) fprintf(stderr, " %d[%u,%u)", e.ids[i], e.start[i], e.end[i]);
        fprintf(stderr, "\n");
    }
    int32_t vocab = sl_tokenizer_vocab_size(tok);
    uint32_t prev_s = 0, prev_e = 0;
    for (size_t i = 0; i < e.n; i++) {
        FZ_ASSERT(e.ids[i] >= 0 && e.ids[i] < vocab);
        FZ_ASSERT(e.start[i] <= e.end[i] && e.end[i] <= len);
        FZ_ASSERT(e.start[i] >= prev_s && e.end[i] >= prev_e);
        prev_s = e.start[i], prev_e = e.end[i];
    }
    if (lossless[t] && valid_utf8((const unsigned char *)text, len)) {
        size_t pos = 0;
        for (size_t i = 0; i < e.n; i++) {
            size_t blen;
            const char *b = sl_tokenizer_token_bytes(tok, e.ids[i], &blen);
            FZ_ASSERT(b != NULL);
            FZ_ASSERT(e.start[i] == pos);
            FZ_ASSERT(e.end[i] - e.start[i] == blen);
            FZ_ASSERT(memcmp(text + e.start[i], b, blen) == 0);
            pos = e.end[i];
        }
        FZ_ASSERT(pos == len);
    }
    /* The same text again: the word cache now answers; the result must not change. */
    FZ_ASSERT(sl_tokenizer_encode(tok, text, len, &again, &err) == 0);
    FZ_ASSERT(again.n == e.n);
    for (size_t i = 0; i < e.n; i++)
        FZ_ASSERT(again.ids[i] == e.ids[i] && again.start[i] == e.start[i] && again.end[i] == e.end[i]);
    sl_encoding_free(&e);
    sl_encoding_free(&again);
    return 0;
}
