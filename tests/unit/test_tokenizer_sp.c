/* test_tokenizer_sp.c: SentencePiece-style BPE (byte_fallback, Metaspace, Prepend/Replace
 * normalizers, unk) against Hugging Face `tokenizers`: for every tokenizer under
 * tests/data/tokenizers (made by tests/fixtures/tokenizers/make_sp_tokenizers.py), every
 * case's ids and offsets must be HF's, and the token texts must give HF's decode; then
 * what stays unsupported, the decode side, long inputs and threads. argv[1] is not used:
 * the committed fixtures are found next to this file. */
#include <dirent.h>
#include <jansson.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "text.h"
#include "tokenizer.h"

static char data_dir[4096];

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void print_escaped(const char *s, size_t n, size_t max) {
    for (size_t i = 0; i < n && i < max; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '\n') fputs("\\n", stderr);
        else if (ch == '\t') fputs("\\t", stderr);
        else if (ch == '\r') fputs("\\r", stderr);
        else if (ch < 0x20 || ch == 0x7f) fprintf(stderr, "\\x%02x", ch);
        else fputc(ch, stderr);
    }
    if (n > max) fputs("...", stderr);
}

/* HF's Python offsets are characters: its BytesToCharOffsetConverter on byte offsets
 * (a byte maps to the index of the character holding it; an end at the text's end to
 * one past the last character; a start at the end leaves the pair in bytes). */
static void to_char_offsets(const char *text, size_t len, uint32_t s, uint32_t e, long *cs, long *ce) {
    long idx_s = -1, idx_e = -1, idx_last = -1, ci = -1;
    for (size_t i = 0; i < len; i++) {
        if (((unsigned char)text[i] & 0xC0) != 0x80) ci++;
        if (i == s) idx_s = ci;
        if (i == e) idx_e = ci;
        if (e > 0 && i == e - 1) idx_last = ci;
    }
    if (idx_s < 0) {
        *cs = s, *ce = e;
        return;
    }
    *cs = idx_s;
    *ce = idx_e >= 0 ? idx_e : (idx_last >= 0 ? idx_last : idx_s + 1) + 1;
}

static int valid_utf8(const char *s, size_t n) {
    json_t *j = json_stringn(s, n); /* jansson checks UTF-8 */
    int ok = j != NULL;
    json_decref(j);
    return ok;
}

/* HF's decode from the token texts: each token's bytes (its decoder steps, from
 * sl_tokenizer_token_bytes), a run of byte-fallback tokens that is not valid UTF-8 as
 * one U+FFFD per token (ByteFallback), then what the decoder does at the start of the
 * text (first_space, see make_sp_tokenizers.py). */
static void decode_like_hf(const sl_tokenizer *tok, json_t *vocab_r, json_t *ids, const char *first_space,
                           sl_buf *out) {
    sl_buf run = {0};
    size_t n_run = 0;
    out->len = 0;
    for (size_t i = 0; i <= json_array_size(ids); i++) {
        int32_t id = i < json_array_size(ids) ? (int32_t)json_integer_value(json_array_get(ids, i)) : -1;
        size_t n = 0;
        const char *b = id >= 0 ? sl_tokenizer_token_bytes(tok, id, &n) : NULL;
        char key[16];
        snprintf(key, sizeof key, "%d", id);
        const char *vs = json_string_value(json_object_get(vocab_r, key));
        int is_byte = b && n == 1 && vs && strlen(vs) == 6 && strncmp(vs, "<0x", 3) == 0;
        if (is_byte) {
            sl_buf_append(&run, b, 1);
            n_run++;
            continue;
        }
        if (n_run) {
            if (valid_utf8(run.data, run.len))
                sl_buf_append(out, run.data, run.len);
            else
                for (size_t k = 0; k < n_run; k++) sl_buf_puts(out, "\xEF\xBF\xBD");
            run.len = 0, n_run = 0;
        }
        if (!b) continue;
        if (i == 0 && strcmp(first_space, "first_token") == 0) {
            for (size_t k = 0; k < n; k++)
                if (b[k] != ' ') sl_buf_append(out, b + k, 1);
        } else
            sl_buf_append(out, b, n);
    }
    if (strcmp(first_space, "strip_one") == 0 && out->len && out->data[0] == ' ') {
        memmove(out->data, out->data + 1, out->len - 1);
        out->len--;
    }
    sl_buf_free(&run);
}

/* Offsets lie in [0, len], start <= end, and never decrease. */
static int offsets_sane(const sl_encoding *e, size_t len) {
    for (size_t i = 0; i < e->n; i++) {
        if (e->start[i] > e->end[i] || e->end[i] > len) return 0;
        if (i && (e->start[i] < e->start[i - 1] || e->end[i] < e->end[i - 1])) return 0;
    }
    return 1;
}

static void print_ids(const sl_tokenizer *tok, const int32_t *ids, size_t n, json_t *jids, size_t from) {
    size_t total = jids ? json_array_size(jids) : n;
    for (size_t j = from; j < total && j < from + 10; j++) {
        int32_t id = jids ? (int32_t)json_integer_value(json_array_get(jids, j)) : ids[j];
        size_t bn;
        const char *b = sl_tokenizer_token_bytes(tok, id, &bn);
        fprintf(stderr, "%d'", id);
        if (b) print_escaped(b, bn, 30);
        fputs("' ", stderr);
    }
}

/* One fixture directory: every case's ids, offsets and decode. */
static void run_fixture(const char *name) {
    char path[8192], jpath[8192];
    snprintf(path, sizeof path, "%s/%s/tokenizer.json", data_dir, name);
    snprintf(jpath, sizeof jpath, "%s/%s/expected.json", data_dir, name);
    json_error_t jerr;
    json_t *exp = json_load_file(jpath, 0, &jerr), *tj = json_load_file(path, 0, &jerr);
    sl_err err = {{0}};
    sl_tokenizer *tok = sl_tokenizer_load(path, &err);
    CHECK(exp && tj && tok);
    if (!exp || !tj || !tok) {
        fprintf(stderr, "%s: %s %s\n", name, jerr.text, err.msg);
        json_decref(exp), json_decref(tj), sl_tokenizer_free(tok);
        return;
    }
    if (sl_tokenizer_can_encode(tok, &err)) fprintf(stderr, "%s: %s\n", name, err.msg);
    CHECK(sl_tokenizer_can_encode(tok, &err) == 0);
    /* id -> vocabulary string, to know the byte-fallback tokens */
    json_t *vocab_r = json_object(), *v;
    const char *key;
    json_object_foreach(json_object_get(json_object_get(tj, "model"), "vocab"), key, v) {
        char k[16];
        snprintf(k, sizeof k, "%lld", (long long)json_integer_value(v));
        json_object_set_new(vocab_r, k, json_string(key));
    }
    const char *first_space = json_string_value(json_object_get(exp, "first_space"));
    if (!first_space) first_space = "none";

    int ok_ids = 0, ok_off = 0, ok_dec = 0, n_cases = 0;
    size_t ci;
    json_t *cs;
    sl_buf dec = {0};
    json_array_foreach(json_object_get(exp, "cases"), ci, cs) {
        const char *text = json_string_value(json_object_get(cs, "text"));
        size_t len = json_string_length(json_object_get(cs, "text"));
        json_t *want = json_object_get(cs, "ids"), *woff = json_object_get(cs, "offsets");
        sl_encoding e = {0};
        n_cases++;
        int rc = sl_tokenizer_encode(tok, text, len, &e, &err);
        if (rc) fprintf(stderr, "%s case %zu: encode failed: %s\n", name, ci, err.msg);
        size_t k = 0, nw = json_array_size(want);
        while (!rc && k < nw && k < e.n && e.ids[k] == (int32_t)json_integer_value(json_array_get(want, k))) k++;
        int ids_ok = !rc && k == nw && k == e.n;
        if (!ids_ok && !rc) {
            fprintf(stderr, "%s case %zu: ids differ at token %zu of %zu (HF: %zu)\n  text: \"", name, ci, k, e.n, nw);
            print_escaped(text, len, 200);
            fprintf(stderr, "\"\n  HF:   ");
            print_ids(tok, NULL, 0, want, k > 3 ? k - 3 : 0);
            fprintf(stderr, "\n  ours: ");
            print_ids(tok, e.ids, e.n, NULL, k > 3 ? k - 3 : 0);
            fprintf(stderr, "\n");
        }
        int off_ok = ids_ok && offsets_sane(&e, len);
        for (size_t i = 0; off_ok && i < e.n; i++) {
            long s, en;
            to_char_offsets(text, len, e.start[i], e.end[i], &s, &en);
            json_t *w = json_array_get(woff, i);
            if (s != json_integer_value(json_array_get(w, 0)) || en != json_integer_value(json_array_get(w, 1))) {
                off_ok = 0;
                fprintf(stderr, "%s case %zu: offsets of token %zu (%d) are bytes [%u, %u) = chars [%ld, %ld), HF chars [%lld, %lld)\n  text: \"",
                        name, ci, i, e.ids[i], e.start[i], e.end[i], s, en,
                        (long long)json_integer_value(json_array_get(w, 0)), (long long)json_integer_value(json_array_get(w, 1)));
                print_escaped(text, len, 200);
                fprintf(stderr, "\"\n");
            }
        }
        decode_like_hf(tok, vocab_r, want, first_space, &dec);
        json_t *wd = json_object_get(cs, "decode");
        int dec_ok = dec.len == json_string_length(wd) && memcmp(dec.data ? dec.data : "", json_string_value(wd), dec.len) == 0;
        if (!dec_ok) {
            fprintf(stderr, "%s case %zu: decode differs\n  HF:   \"", name, ci);
            print_escaped(json_string_value(wd), json_string_length(wd), 200);
            fprintf(stderr, "\"\n  ours: \"");
            print_escaped(dec.data ? dec.data : "", dec.len, 200);
            fprintf(stderr, "\"\n");
        }
        ok_ids += ids_ok, ok_off += off_ok, ok_dec += dec_ok;
        CHECK(ids_ok && off_ok && dec_ok);
        sl_encoding_free(&e);
    }
    sl_buf_free(&dec);

    int ok_inv = 0, n_inv = 0;
    json_array_foreach(json_object_get(exp, "invalid"), ci, cs) {
        const char *hex = json_string_value(json_object_get(cs, "hex"));
        size_t len = strlen(hex) / 2;
        char *bytes = malloc(len + 1);
        for (size_t i = 0; i < len; i++) {
            unsigned x;
            sscanf(hex + 2 * i, "%2x", &x);
            bytes[i] = (char)x;
        }
        json_t *want = json_object_get(cs, "ids");
        sl_encoding e = {0};
        int ok = sl_tokenizer_encode(tok, bytes, len, &e, &err) == 0 && e.n == json_array_size(want);
        for (size_t i = 0; ok && i < e.n; i++) ok = e.ids[i] == (int32_t)json_integer_value(json_array_get(want, i));
        ok = ok && offsets_sane(&e, len);
        if (!ok) fprintf(stderr, "%s invalid case %zu differs\n", name, ci);
        n_inv++, ok_inv += ok;
        CHECK(ok);
        sl_encoding_free(&e);
        free(bytes);
    }
    printf("%-10s ids %d/%d, offsets %d/%d, decode %d/%d, invalid UTF-8 %d/%d\n", name, ok_ids, n_cases, ok_off,
           n_cases, ok_dec, n_cases, ok_inv, n_inv);

    /* appending to an encoding */
    sl_encoding e = {0};
    CHECK(sl_tokenizer_encode(tok, "Hello world", 11, &e, &err) == 0);
    size_t n1 = e.n;
    CHECK(n1 > 0 && sl_tokenizer_encode(tok, "Hello world", 11, &e, &err) == 0 && e.n == 2 * n1);
    CHECK(memcmp(e.ids, e.ids + n1, n1 * sizeof *e.ids) == 0);
    sl_encoding_free(&e);

    json_decref(vocab_r);
    json_decref(exp);
    json_decref(tj);
    sl_tokenizer_free(tok);
}

/* Writes root to a temporary file and loads it; the file is removed again. */
static sl_tokenizer *load_json(json_t *root, sl_err *err) {
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char path[4096];
    snprintf(path, sizeof path, "%s/saelite_tokenizer_sp_XXXXXX", dir);
    int fd = mkstemp(path);
    if (fd < 0) return sl_errf(err, "mkstemp failed"), NULL;
    int rc = json_dumpfd(root, fd, 0);
    close(fd);
    sl_tokenizer *tok = rc == 0 ? sl_tokenizer_load(path, err) : NULL;
    unlink(path);
    return tok;
}

static json_t *load_fixture_json(const char *name) {
    char path[8192];
    snprintf(path, sizeof path, "%s/%s/tokenizer.json", data_dir, name);
    json_error_t jerr;
    return json_load_file(path, 0, &jerr);
}

/* A variant of llama2 that must load, decode, and refuse to encode naming why. */
static void check_refused(const char *what, const char *field, json_t *value, const char *why) {
    json_t *root = load_fixture_json("llama2");
    CHECK(root != NULL);
    if (!root) return;
    json_object_set_new(root, field, value);
    sl_err err = {{0}};
    sl_tokenizer *tok = load_json(root, &err);
    CHECK(tok != NULL);
    if (tok) {
        size_t n;
        const char *b = sl_tokenizer_token_bytes(tok, 3 + 0x41, &n); /* <0x41> */
        CHECK(b && n == 1 && b[0] == 'A');
        CHECK(sl_tokenizer_can_encode(tok, &err) != 0);
        CHECK_MSG(err.msg, "encoding unsupported");
        CHECK_MSG(err.msg, why);
        sl_encoding e = {0};
        CHECK(sl_tokenizer_encode(tok, "hello", 5, &e, &err) != 0 && e.n == 0);
        CHECK_MSG(err.msg, why);
        printf("refused: %-34s %s\n", what, err.msg + (strstr(err.msg, "encoding") ? strstr(err.msg, "encoding") - err.msg : 0));
        sl_tokenizer_free(tok);
    }
    json_decref(root);
}

static void check_unsupported(void) {
    check_refused("Replace with a Regex pattern", "normalizer",
                  json_pack("{s:s, s:{s:s}, s:s}", "type", "Replace", "pattern", "Regex", " {2,}", "content", "\xE2\x96\x81"),
                  "Regex");
    check_refused("Precompiled normalizer", "normalizer",
                  json_pack("{s:s, s:[{s:s, s:s}, {s:s, s:s}]}", "type", "Sequence", "normalizers", "type", "Precompiled",
                            "precompiled_charsmap", "", "type", "Prepend", "prepend", "\xE2\x96\x81"),
                  "unsupported normalizer Precompiled");
    check_refused("NFKC normalizer", "normalizer", json_pack("{s:s}", "type", "NFKC"), "unsupported normalizer NFKC");
    check_refused("Prepend with ByteLevel", "pre_tokenizer",
                  json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1,
                            "use_regex", 1),
                  "with a ByteLevel pre_tokenizer");
    check_refused("Whitespace pre_tokenizer", "pre_tokenizer", json_pack("{s:s}", "type", "Whitespace"),
                  "unsupported pre_tokenizer Whitespace");
    /* Unigram (SentencePiece's other model): decodes, does not encode */
    json_t *root = load_fixture_json("llama2");
    json_object_set_new(json_object_get(root, "model"), "type", json_string("Unigram"));
    sl_err err = {{0}};
    sl_tokenizer *tok = load_json(root, &err);
    CHECK(tok != NULL);
    if (tok) {
        CHECK(sl_tokenizer_can_encode(tok, &err) != 0);
        CHECK_MSG(err.msg, "model type Unigram");
        sl_tokenizer_free(tok);
    }
    json_decref(root);
}

/* Pipeline variants of llama2 (variants.json): HF's ids and offsets again. */
static void check_variants(void) {
    char path[8192];
    snprintf(path, sizeof path, "%s/variants.json", data_dir);
    json_error_t jerr;
    json_t *vs = json_load_file(path, 0, &jerr);
    CHECK(vs != NULL);
    if (!vs) return;
    json_t *cases = json_object_get(vs, "cases"), *v;
    size_t vi;
    json_array_foreach(json_object_get(vs, "variants"), vi, v) {
        const char *name = json_string_value(json_object_get(v, "name"));
        json_t *root = load_fixture_json(json_string_value(json_object_get(vs, "base")));
        json_object_update(root, json_object_get(v, "set"));
        json_object_update(json_object_get(root, "model"), json_object_get(v, "model"));
        if (json_object_get(v, "added_tokens")) json_object_set(root, "added_tokens", json_object_get(v, "added_tokens"));
        sl_err err = {{0}};
        sl_tokenizer *tok = load_json(root, &err);
        json_decref(root);
        CHECK(tok != NULL && sl_tokenizer_can_encode(tok, &err) == 0);
        if (!tok || sl_tokenizer_can_encode(tok, &err)) {
            fprintf(stderr, "variant %s: %s\n", name, err.msg);
            sl_tokenizer_free(tok);
            continue;
        }
        int passed = 0;
        size_t ci;
        json_t *c;
        json_array_foreach(cases, ci, c) {
            const char *text = json_string_value(c);
            size_t len = json_string_length(c);
            json_t *want = json_array_get(json_object_get(v, "ids"), ci);
            json_t *woff = json_array_get(json_object_get(v, "offsets"), ci);
            sl_encoding e = {0};
            int ok = sl_tokenizer_encode(tok, text, len, &e, &err) == 0 && e.n == json_array_size(want) &&
                     offsets_sane(&e, len);
            for (size_t k = 0; ok && k < e.n; k++) {
                long s, en;
                to_char_offsets(text, len, e.start[k], e.end[k], &s, &en);
                ok = e.ids[k] == (int32_t)json_integer_value(json_array_get(want, k)) &&
                     s == json_integer_value(json_array_get(woff, 2 * k)) &&
                     en == json_integer_value(json_array_get(woff, 2 * k + 1));
            }
            if (!ok) {
                fprintf(stderr, "variant %s case %zu: \"", name, ci);
                print_escaped(text, len, 200);
                fprintf(stderr, "\"\n  HF:   ");
                print_ids(tok, NULL, 0, want, 0);
                fprintf(stderr, "\n  ours: ");
                print_ids(tok, e.ids, e.n, NULL, 0);
                fprintf(stderr, "\n");
            }
            passed += ok;
            CHECK(ok);
            sl_encoding_free(&e);
        }
        printf("variant %-26s %d/%zu\n", name, passed, json_array_size(cases));
        sl_tokenizer_free(tok);
    }
    json_decref(vs);
}

/* The decode side: U+2581 is a space, "<0xAB>" the byte 0xAB where the decoder has
 * ByteFallback (not with a bare Metaspace decoder), added tokens verbatim. */
static void check_decode(void) {
    static const struct {
        const char *fixture, *vocab, *bytes;
        size_t n;
        int special;
    } cases[] = {
        {"llama2", "<0x41>", "A", 1, 0},         {"llama2", "<0x00>", "\0", 1, 0},
        {"llama2", "<0xE4>", "\xE4", 1, 0},      {"llama2", "\xE2\x96\x81", " ", 1, 0},
        {"llama2", "\xE2\x96\x81the", " the", 4, 0}, {"llama2", "<s>", "<s>", 3, 1},
        {"llama2", "<unk>", "<unk>", 5, 1},      {"llama2", "FIXME", " FIXME", 6, 0}, /* HF: from "▁FIXME", its normalized form */
        {"gemma", "<0x0A>", "\n", 1, 0},         {"gemma", "<start_of_turn>", "<start_of_turn>", 15, 1},
        {"gemma", "\xE2\x96\x81the", " the", 4, 0}, {"metaspace", "<0x7A>", "<0x7A>", 6, 0},
        {"metaspace", "\xE2\x96\x81the", " the", 4, 0}, {"mistral", "<0x41>", "A", 1, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[8192];
        snprintf(path, sizeof path, "%s/%s/tokenizer.json", data_dir, cases[i].fixture);
        sl_err err = {{0}};
        sl_tokenizer *tok = sl_tokenizer_load(path, &err);
        CHECK(tok != NULL);
        if (!tok) continue;
        json_t *root = load_fixture_json(cases[i].fixture);
        json_t *v = json_object_get(json_object_get(json_object_get(root, "model"), "vocab"), cases[i].vocab);
        int32_t id = v ? (int32_t)json_integer_value(v) : sl_tokenizer_added_id(tok, cases[i].vocab);
        size_t n;
        const char *b = sl_tokenizer_token_bytes(tok, id, &n);
        int ok = id >= 0 && b && n == cases[i].n && memcmp(b, cases[i].bytes, n) == 0 &&
                 sl_tokenizer_is_special(tok, id) == cases[i].special;
        if (!ok) fprintf(stderr, "decode %s %s: id %d\n", cases[i].fixture, cases[i].vocab, id);
        CHECK(ok);
        json_decref(root);
        sl_tokenizer_free(tok);
    }
}

/* Long inputs (no pre-tokenizer: one word of the whole text for llama2): near-linear.
 * Times are printed, not checked. */
static void check_long_inputs(const char *name) {
    char path[8192];
    snprintf(path, sizeof path, "%s/%s/tokenizer.json", data_dir, name);
    sl_err err = {{0}};
    sl_tokenizer *tok = sl_tokenizer_load(path, &err);
    CHECK(tok != NULL);
    if (!tok) return;
    static const struct {
        const char *what, *unit;
        size_t n;
    } cases[] = {{"100 KB of 'a'", "a", 100000},          {"1 MB of spaces", " ", 1000000},
                 {"1 MB of mixed whitespace", " \t\n ", 1000000}, {"100 KB of \xE4\xB8\xAD", "\xE4\xB8\xAD", 100000},
                 {"1 MB of words", "the license ", 1000000}, {"100 KB of '<s>'", "<s>", 100000}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t ul = strlen(cases[i].unit), n = cases[i].n / ul * ul;
        char *text = malloc(n + 1);
        for (size_t k = 0; k < n; k += ul) memcpy(text + k, cases[i].unit, ul);
        sl_encoding e = {0};
        double t0 = now();
        int rc = sl_tokenizer_encode(tok, text, n, &e, &err);
        double dt = now() - t0;
        CHECK(rc == 0 && e.n > 0 && offsets_sane(&e, n));
        printf("  %-10s %-26s %8zu bytes -> %7zu tokens in %7.1f ms\n", name, cases[i].what, n, e.n, dt * 1e3);
        sl_encoding_free(&e);
        free(text);
    }
    sl_tokenizer_free(tok);
}

typedef struct thread_job {
    const sl_tokenizer *tok;
    const char *text;
    size_t len;
    sl_encoding e;
    int rc;
} thread_job;

static void *thread_main(void *arg) {
    thread_job *j = arg;
    sl_err err;
    for (int r = 0; r < 3 && j->rc == 0; r++) {
        sl_encoding_free(&j->e);
        j->rc = sl_tokenizer_encode(j->tok, j->text, j->len, &j->e, &err);
    }
    return NULL;
}

/* Several threads on one tokenizer give the single-threaded result. */
static void check_threads(const char *name) {
    char path[8192];
    snprintf(path, sizeof path, "%s/%s/tokenizer.json", data_dir, name);
    sl_err err = {{0}};
    sl_tokenizer *tok = sl_tokenizer_load(path, &err);
    CHECK(tok != NULL);
    if (!tok) return;
    sl_buf text = {0};
    for (int r = 0; r < 200; r++)
        sl_buf_puts(&text, "This License applies to any program <s> or other work \xE4\xB8\xAD\xC3\xA9 "
                           "which contains a notice </s> placed by the copyright holder.\n");
    sl_encoding ref = {0};
    CHECK(sl_tokenizer_encode(tok, text.data, text.len, &ref, &err) == 0);
    thread_job jobs[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        memset(&jobs[i], 0, sizeof jobs[i]);
        jobs[i].tok = tok, jobs[i].text = text.data, jobs[i].len = text.len;
        pthread_create(&th[i], NULL, thread_main, &jobs[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(jobs[i].rc == 0 && jobs[i].e.n == ref.n && memcmp(jobs[i].e.ids, ref.ids, ref.n * 4) == 0 &&
              memcmp(jobs[i].e.start, ref.start, ref.n * 4) == 0 && memcmp(jobs[i].e.end, ref.end, ref.n * 4) == 0);
        sl_encoding_free(&jobs[i].e);
    }
    sl_encoding_free(&ref);
    sl_buf_free(&text);
    sl_tokenizer_free(tok);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(int argc, char **argv) {
    (void)argc, (void)argv;
    char here[4096];
    snprintf(here, sizeof here, "%s", __FILE__);
    snprintf(data_dir, sizeof data_dir, "%s/../data/tokenizers", dirname(here));

    DIR *d = opendir(data_dir);
    if (!d) {
        fprintf(stderr, "cannot read the fixtures in %s\n", data_dir);
        return 1;
    }
    char *names[64];
    size_t n_names = 0;
    struct dirent *de;
    while ((de = readdir(d)) && n_names < 64) {
        char p[8192];
        snprintf(p, sizeof p, "%s/%s/expected.json", data_dir, de->d_name);
        if (de->d_name[0] != '.' && access(p, R_OK) == 0) names[n_names++] = strdup(de->d_name);
    }
    closedir(d);
    qsort(names, n_names, sizeof *names, cmp_str);
    CHECK(n_names >= 4);
    for (size_t i = 0; i < n_names; i++) run_fixture(names[i]);
    check_variants();
    check_unsupported();
    check_decode();
    check_threads("llama2");
    check_threads("metaspace");
    for (size_t i = 0; i < n_names; i++) check_long_inputs(names[i]);
    for (size_t i = 0; i < n_names; i++) free(names[i]);
    CHECK_DONE();
}
