/* test_tokenizer.c: byte-level BPE encoding against ids computed by Hugging Face
 * `tokenizers` (tests/data/tokenizer, made by tools/reference/make_tokenizer_fixture.py),
 * offsets, round trips, added tokens, decode-only tokenizers, long inputs, threads,
 * and the decode side (vocabulary strings to bytes). argv[1] is not used: the
 * committed fixtures are found next to this file. */
#include <jansson.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "tokenizer.h"
#include "tokenizer_variant.h"

static char data_dir[4096];

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static const char *data_path(const char *name) {
    static char buf[8192];
    snprintf(buf, sizeof buf, "%s/%s", data_dir, name);
    return buf;
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) buf[n] = 0, *len = (size_t)n;
    return buf;
}

/* Prints bytes with escapes, at most max of them. */
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

static void print_token(const sl_tokenizer *tok, int32_t id) {
    size_t n;
    const char *b = sl_tokenizer_token_bytes(tok, id, &n);
    fprintf(stderr, "%d'", id);
    if (b) print_escaped(b, n, 40);
    fputs("' ", stderr);
}

/* Checks offsets: within the text, never decreasing, start <= end. With exact set
 * (valid UTF-8, no added tokens that strip), each token's bytes are text[start, end),
 * or " " + that when the tokenizer added a prefix space. Returns the problems found. */
static int check_offsets(const sl_tokenizer *tok, const sl_encoding *e, const char *text, size_t len, int exact) {
    int bad = 0;
    for (size_t i = 0; i < e->n; i++) {
        if (e->start[i] > e->end[i] || e->end[i] > len) bad++;
        if (i && (e->start[i] < e->start[i - 1] || e->end[i] < e->end[i - 1])) bad++;
        if (exact && !bad) {
            size_t n;
            const char *b = sl_tokenizer_token_bytes(tok, e->ids[i], &n);
            size_t sn = e->end[i] - e->start[i];
            int ok = b && ((n == sn && memcmp(b, text + e->start[i], n) == 0) ||
                           (n == sn + 1 && b[0] == ' ' && memcmp(b + 1, text + e->start[i], sn) == 0));
            if (!ok && !sl_tokenizer_is_special(tok, e->ids[i])) bad++;
        }
        if (bad) {
            fprintf(stderr, "  offsets wrong at token %zu: ", i);
            print_token(tok, e->ids[i]);
            fprintf(stderr, "[%u, %u) of %zu\n", e->start[i], e->end[i], len);
            return bad;
        }
    }
    return 0;
}

/* Decoding the ids gives back the text. */
static int round_trip(const sl_tokenizer *tok, const sl_encoding *e, const char *text, size_t len) {
    size_t o = 0;
    for (size_t i = 0; i < e->n; i++) {
        size_t n;
        const char *b = sl_tokenizer_token_bytes(tok, e->ids[i], &n);
        if (!b || o + n > len || memcmp(text + o, b, n) != 0) {
            fprintf(stderr, "  round trip differs at token %zu (byte %zu)\n", i, o);
            return 1;
        }
        o += n;
    }
    if (o != len) fprintf(stderr, "  round trip gives %zu of %zu bytes\n", o, len);
    return o != len;
}

/* Encodes each case and compares with HF's ids. Returns the number of cases that pass. */
static int run_cases(const char *name, const sl_tokenizer *tok, const char *data, json_t *cases, json_t *expected,
                     int valid_utf8, int *n_cases) {
    int passed = 0, exact = valid_utf8 && strcmp(name, "prefix_space") != 0;
    size_t ci;
    json_t *cs;
    *n_cases = (int)json_array_size(cases);
    json_array_foreach(cases, ci, cs) {
        size_t off = (size_t)json_integer_value(json_array_get(cs, 0));
        size_t len = (size_t)json_integer_value(json_array_get(cs, 1));
        json_t *want = json_array_get(expected, ci);
        sl_encoding e = {0};
        sl_err err = {{0}};
        int rc = sl_tokenizer_encode(tok, data + off, len, &e, &err);
        int ok = rc == 0;
        if (!ok) fprintf(stderr, "%s case %zu: encode failed: %s\n", name, ci, err.msg);
        size_t nw = json_array_size(want), k = 0;
        if (ok) {
            while (k < nw && k < e.n && e.ids[k] == (int32_t)json_integer_value(json_array_get(want, k))) k++;
            if (k != nw || k != e.n) {
                ok = 0;
                fprintf(stderr, "%s case %zu (%zu bytes at %zu): ids differ at token %zu of %zu (HF: %zu)\n  text: \"",
                        name, ci, len, off, k, e.n, nw);
                print_escaped(data + off, len, 300);
                fprintf(stderr, "\"\n  HF:   ");
                for (size_t j = k > 3 ? k - 3 : 0; j < nw && j < k + 6; j++)
                    print_token(tok, (int32_t)json_integer_value(json_array_get(want, j)));
                fprintf(stderr, "\n  ours: ");
                for (size_t j = k > 3 ? k - 3 : 0; j < e.n && j < k + 6; j++) print_token(tok, e.ids[j]);
                fprintf(stderr, "\n");
            }
        }
        if (ok && check_offsets(tok, &e, data + off, len, exact)) ok = 0, fprintf(stderr, "%s case %zu\n", name, ci);
        if (ok && exact && strcmp(name, "prefix_space") != 0 && round_trip(tok, &e, data + off, len))
            ok = 0, fprintf(stderr, "%s case %zu\n", name, ci);
        passed += ok;
        CHECK(ok);
        sl_encoding_free(&e);
    }
    return passed;
}

/* The decode side: byte-level vocabulary strings map to bytes. */
static void check_decode(const sl_tokenizer *tok, const char *json_path) {
    json_error_t jerr;
    json_t *root = json_load_file(json_path, 0, &jerr);
    CHECK(root != NULL);
    json_t *vocab = json_object_get(json_object_get(root, "model"), "vocab");
    struct {
        const char *vocab, *bytes;
    } cases[] = {{"Ġthe", " the"}, {"Ċ", "\n"}, {"ĉ", "\t"}, {"Ġ", " "}, {"ĠĠ", "  "}, {"č", "\r"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *v = json_object_get(vocab, cases[i].vocab);
        if (!v) {
            fprintf(stderr, "note: %s not in %s\n", cases[i].vocab, json_path);
            continue;
        }
        size_t n;
        const char *b = sl_tokenizer_token_bytes(tok, (int32_t)json_integer_value(v), &n);
        CHECK(b && n == strlen(cases[i].bytes) && memcmp(b, cases[i].bytes, n) == 0);
        CHECK(!sl_tokenizer_is_special(tok, (int32_t)json_integer_value(v)));
    }
    json_decref(root);
    size_t n;
    CHECK(sl_tokenizer_token_bytes(tok, -1, &n) == NULL && n == 0);
    CHECK(sl_tokenizer_token_bytes(tok, sl_tokenizer_vocab_size(tok), &n) == NULL);
    int32_t eot = sl_tokenizer_added_id(tok, "<|endoftext|>");
    const char *b = sl_tokenizer_token_bytes(tok, eot, &n);
    CHECK(eot >= 0 && sl_tokenizer_is_special(tok, eot) && b && n == 13 && memcmp(b, "<|endoftext|>", 13) == 0);
}

static void check_unsupported(void) {
    sl_err err = {{0}};
    /* WordPiece: loads and decodes; encoding says why not, naming the file */
    sl_tokenizer *wp = sl_tokenizer_load(data_path("wordpiece.json"), &err);
    CHECK(wp != NULL);
    if (wp) {
        size_t n;
        const char *b = sl_tokenizer_token_bytes(wp, 1, &n);
        CHECK(b && n == 5 && memcmp(b, "hello", 5) == 0);
        CHECK(sl_tokenizer_is_special(wp, 0));
        CHECK(sl_tokenizer_added_id(wp, "[UNK]") == 0);
        CHECK(sl_tokenizer_can_encode(wp, &err) != 0);
        CHECK_MSG(err.msg, "wordpiece.json");
        CHECK_MSG(err.msg, "encoding unsupported");
        CHECK_MSG(err.msg, "WordPiece");
        sl_encoding e = {0};
        CHECK(sl_tokenizer_encode(wp, "hello", 5, &e, &err) != 0 && e.n == 0);
        CHECK_MSG(err.msg, "wordpiece.json");
        sl_encoding_free(&e);
        sl_tokenizer_free(wp);
    }
    /* a normalizer that is not implemented */
    sl_tokenizer *nfc = sl_tokenizer_load(data_path("nfc.json"), &err);
    CHECK(nfc != NULL);
    if (nfc) {
        sl_encoding e = {0};
        CHECK(sl_tokenizer_encode(nfc, "x", 1, &e, &err) != 0);
        CHECK_MSG(err.msg, "nfc.json");
        CHECK_MSG(err.msg, "unsupported normalizer NFC");
        size_t n;
        CHECK(sl_tokenizer_token_bytes(nfc, 0, &n) != NULL); /* decoding still works */
        sl_tokenizer_free(nfc);
    }
}

/* Long inputs with no split points: must stay near-linear. Times are printed, not checked. */
static void check_long_inputs(const char *name, const sl_tokenizer *tok) {
    struct {
        const char *what, *unit;
        size_t n;
    } cases[] = {{"100 KB of 'a'", "a", 100000},     {"1 MB of spaces", " ", 1000000},
                 {"1 MB of mixed whitespace", " \t\n ", 1000000}, {"100 KB of 中", "中", 100000},
                 {"100 KB of digits", "7", 100000},  {"100 KB of '<|'", "<|", 100000},
                 {"100 KB of \"'s\"", "'s", 100000}, {"100 KB of 'the', no spaces", "the", 100000}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t ul = strlen(cases[i].unit), n = cases[i].n / ul * ul;
        char *text = malloc(n + 1);
        for (size_t k = 0; k < n; k += ul) memcpy(text + k, cases[i].unit, ul);
        text[n] = 0;
        sl_encoding e = {0};
        sl_err err = {{0}};
        double t0 = now();
        int rc = sl_tokenizer_encode(tok, text, n, &e, &err);
        double dt = now() - t0;
        CHECK(rc == 0);
        CHECK(check_offsets(tok, &e, text, n, strcmp(name, "prefix_space") != 0) == 0);
        if (strcmp(name, "prefix_space") != 0) CHECK(round_trip(tok, &e, text, n) == 0);
        printf("  %-13s %-26s %8zu bytes -> %7zu tokens in %7.1f ms\n", name, cases[i].what, n, e.n, dt * 1e3);
        sl_encoding_free(&e);
        free(text);
    }
}

/* Writes root to a temporary file and loads it; the file is removed again. */
static sl_tokenizer *load_json(json_t *root, sl_err *err) {
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char path[4096];
    snprintf(path, sizeof path, "%s/saelite_tokenizer_XXXXXX", dir);
    int fd = mkstemp(path);
    if (fd < 0) return sl_errf(err, "mkstemp failed"), NULL;
    int rc = json_dumpfd(root, fd, 0);
    close(fd);
    sl_tokenizer *tok = rc == 0 ? sl_tokenizer_load(path, err) : NULL;
    unlink(path);
    return tok;
}

/* Pre-tokenizer and unk variants of bytelevel.json (variants.json): HF's ids again. */
static void check_variants(void) {
    json_error_t jerr;
    json_t *vs = json_load_file(data_path("variants.json"), 0, &jerr);
    CHECK(vs != NULL);
    if (!vs) return;
    json_t *cases = json_object_get(vs, "cases"), *v;
    size_t vi;
    json_array_foreach(json_object_get(vs, "variants"), vi, v) {
        const char *name = json_string_value(json_object_get(v, "name"));
        json_t *root = json_load_file(data_path("bytelevel.json"), 0, &jerr);
        apply_tokenizer_variant(root, v);
        sl_err err = {{0}};
        sl_tokenizer *tok = load_json(root, &err);
        json_decref(root);
        CHECK(tok != NULL);
        if (!tok) {
            fprintf(stderr, "variant %s: %s\n", name, err.msg);
            continue;
        }
        size_t ci;
        json_t *c;
        int passed = 0;
        json_array_foreach(cases, ci, c) {
            const char *text = json_string_value(c);
            size_t len = json_string_length(c);
            json_t *want = json_array_get(json_object_get(v, "ids"), ci);
            sl_encoding e = {0};
            int ok = sl_tokenizer_encode(tok, text, len, &e, &err) == 0 && e.n == json_array_size(want);
            for (size_t k = 0; ok && k < e.n; k++)
                ok = e.ids[k] == (int32_t)json_integer_value(json_array_get(want, k));
            if (ok && check_offsets(tok, &e, text, len, 0)) ok = 0;
            if (!ok) {
                fprintf(stderr, "variant %s case %zu: \"", name, ci);
                print_escaped(text, len, 200);
                fprintf(stderr, "\"\n  HF:   ");
                for (size_t k = 0; k < json_array_size(want) && k < 30; k++)
                    print_token(tok, (int32_t)json_integer_value(json_array_get(want, k)));
                fprintf(stderr, "\n  ours: ");
                for (size_t k = 0; k < e.n && k < 30; k++) print_token(tok, e.ids[k]);
                fprintf(stderr, "\n");
            }
            passed += ok;
            CHECK(ok);
            sl_encoding_free(&e);
        }
        printf("variant %-17s %d/%zu\n", name, passed, json_array_size(cases));
        sl_tokenizer_free(tok);
    }
    json_decref(vs);

    /* An Oniguruma construct whose meaning PCRE2 does not share is refused, not guessed. */
    json_t *root = json_load_file(data_path("bytelevel.json"), 0, &jerr);
    json_object_set_new(root, "pre_tokenizer",
                        json_pack("{s:s, s:[{s:s, s:{s:s}, s:s, s:b}, {s:s, s:b, s:b, s:b}]}", "type", "Sequence",
                                  "pretokenizers", "type", "Split", "pattern", "Regex", "[[:alpha:]]+", "behavior",
                                  "Isolated", "invert", 0, "type", "ByteLevel", "add_prefix_space", 0,
                                  "trim_offsets", 1, "use_regex", 0));
    sl_err err = {{0}};
    sl_tokenizer *tok = load_json(root, &err);
    CHECK(tok != NULL);
    if (tok) {
        CHECK(sl_tokenizer_can_encode(tok, &err) != 0);
        CHECK_MSG(err.msg, "POSIX");
        sl_tokenizer_free(tok);
    }
    json_decref(root);
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

/* Several threads on one tokenizer (shared word cache) give the single-threaded result. */
static void check_threads(const sl_tokenizer *tok, const char *text, size_t len) {
    sl_encoding ref = {0};
    sl_err err;
    CHECK(sl_tokenizer_encode(tok, text, len, &ref, &err) == 0);
    thread_job jobs[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        memset(&jobs[i], 0, sizeof jobs[i]);
        jobs[i].tok = tok, jobs[i].text = text, jobs[i].len = len;
        pthread_create(&th[i], NULL, thread_main, &jobs[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(jobs[i].rc == 0 && jobs[i].e.n == ref.n && memcmp(jobs[i].e.ids, ref.ids, ref.n * 4) == 0);
        sl_encoding_free(&jobs[i].e);
    }
    sl_encoding_free(&ref);
}

static void check_speed(const char *name, const sl_tokenizer *tok, const char *corpus, size_t clen) {
    size_t reps = 10000000 / clen + 1, n = reps * clen;
    char *big = malloc(n);
    for (size_t r = 0; r < reps; r++) memcpy(big + r * clen, corpus, clen);
    sl_encoding e = {0};
    sl_err err;
    double t0 = now();
    CHECK(sl_tokenizer_encode(tok, big, n, &e, &err) == 0);
    double dt = now() - t0;
    printf("  %-13s %.1f MB corpus x%zu: %zu tokens in %.0f ms = %.1f MB/s\n", name, n / 1e6, reps, e.n, dt * 1e3,
           n / 1e6 / dt);
    sl_encoding_free(&e);
    free(big);
}

int main(int argc, char **argv) {
    (void)argc, (void)argv;
    char here[4096];
    snprintf(here, sizeof here, "%s", __FILE__);
    snprintf(data_dir, sizeof data_dir, "%s/../data/tokenizer", dirname(here));

    size_t clen = 0, ilen = 0;
    char *corpus = read_file(data_path("corpus.txt"), &clen);
    char *invalid = read_file(data_path("corpus_invalid.bin"), &ilen);
    json_error_t jerr;
    json_t *exp = json_load_file(data_path("expected.json"), 0, &jerr);
    if (!corpus || !invalid || !exp) {
        fprintf(stderr, "cannot read the fixtures in %s (%s)\n", data_dir, exp ? "" : jerr.text);
        return 1;
    }
    int speed = getenv("TOKENIZER_NO_SPEED") == NULL;

    size_t ti;
    json_t *jn;
    json_array_foreach(json_object_get(exp, "tokenizers"), ti, jn) {
        const char *name = json_string_value(jn);
        char file[256];
        snprintf(file, sizeof file, "%s.json", name);
        sl_err err = {{0}};
        sl_tokenizer *tok = sl_tokenizer_load(data_path(file), &err);
        if (!tok) {
            fprintf(stderr, "%s\n", err.msg);
            CHECK(tok != NULL);
            continue;
        }
        CHECK(sl_tokenizer_can_encode(tok, &err) == 0);
        int nc, ni;
        int pc = run_cases(name, tok, corpus, json_object_get(exp, "cases"),
                           json_object_get(json_object_get(exp, "ids"), name), 1, &nc);
        int pi = run_cases(name, tok, invalid, json_object_get(exp, "invalid_cases"),
                           json_object_get(json_object_get(exp, "invalid_ids"), name), 0, &ni);
        printf("%-13s corpus %d/%d, invalid UTF-8 %d/%d\n", name, pc, nc, pi, ni);

        /* appending, and the empty text */
        sl_encoding e = {0};
        CHECK(sl_tokenizer_encode(tok, "", 0, &e, &err) == 0 && e.n == 0);
        CHECK(sl_tokenizer_encode(tok, "hello world", 11, &e, &err) == 0);
        size_t n1 = e.n;
        CHECK(n1 > 0 && sl_tokenizer_encode(tok, "hello world", 11, &e, &err) == 0 && e.n == 2 * n1);
        CHECK(memcmp(e.ids, e.ids + n1, n1 * sizeof *e.ids) == 0);
        sl_encoding_free(&e);
        /* the special token alone is one token */
        int32_t eot = sl_tokenizer_added_id(tok, "<|endoftext|>");
        CHECK(eot >= 0);
        CHECK(sl_tokenizer_encode(tok, "<|endoftext|>", 13, &e, &err) == 0 && e.n == 1 && e.ids[0] == eot &&
              e.start[0] == 0 && e.end[0] == 13);
        sl_encoding_free(&e);
        CHECK(sl_tokenizer_added_id(tok, "<|endoftext") == -1);
        CHECK(sl_tokenizer_added_id(tok, "no such token") == -1);

        if (strcmp(name, "bytelevel") == 0) {
            check_decode(tok, data_path(file));
            check_threads(tok, corpus, clen);
        }
        if (strcmp(name, "prefix_space") == 0) {
            CHECK(sl_tokenizer_added_id(tok, "<mask>") >= 0);
            CHECK(sl_tokenizer_added_id(tok, "FIXME") >= 0);
            /* "a  <mask>": <mask> takes the spaces on its left (lstrip) */
            CHECK(sl_tokenizer_encode(tok, "a  <mask>", 9, &e, &err) == 0 && e.n == 2 &&
                  e.ids[1] == sl_tokenizer_added_id(tok, "<mask>") && e.start[1] == 1 && e.end[1] == 9);
            sl_encoding_free(&e);
            /* the prefix space: "x" -> " x", offsets [0, 1) */
            CHECK(sl_tokenizer_encode(tok, "x", 1, &e, &err) == 0 && e.n == 1 && e.start[0] == 0 && e.end[0] == 1);
            sl_encoding_free(&e);
        }
        if (strcmp(name, "split_regex") == 0) CHECK(sl_tokenizer_added_id(tok, "TODO") >= 0);
        /* invalid UTF-8: "\xe4\xb8" (a truncated character) becomes one U+FFFD; every token
         * holding a byte of it covers both original bytes, the others are exact */
        {
            const char *txt = "ab\xe4\xb8" "cd\xff";
            CHECK(sl_tokenizer_encode(tok, txt, 7, &e, &err) == 0);
            char dec[64];
            size_t o = 0;
            for (size_t i = 0; i < e.n; i++) {
                size_t n;
                const char *b = sl_tokenizer_token_bytes(tok, e.ids[i], &n);
                int has_fffd = 0;
                for (size_t k = 0; b && k < n; k++) has_fffd |= (unsigned char)b[k] >= 0xBD;
                size_t span = e.end[i] - e.start[i];
                if (!has_fffd)
                    CHECK(b && (n == span || (n == span + 1 && b[0] == ' ')));
                else
                    CHECK((e.start[i] <= 2 && e.end[i] >= 4) || (e.start[i] == 6 && e.end[i] == 7));
                if (b && o + n <= sizeof dec) memcpy(dec + o, b, n), o += n;
            }
            const char *want = "ab\xEF\xBF\xBD" "cd\xEF\xBF\xBD";
            size_t skip = strcmp(name, "prefix_space") == 0; /* " ab..." */
            CHECK(o == 10 + skip && memcmp(dec + skip, want, 10) == 0);
            sl_encoding_free(&e);
        }

        check_long_inputs(name, tok);
        if (speed) check_speed(name, tok, corpus, clen);
        sl_tokenizer_free(tok);
    }
    check_unsupported();
    check_variants();

    sl_err err;
    CHECK(sl_tokenizer_load(data_path("no-such-file.json"), &err) == NULL);
    CHECK_MSG(err.msg, "no-such-file.json");
    json_decref(exp);
    free(corpus);
    free(invalid);
    CHECK_DONE();
}
