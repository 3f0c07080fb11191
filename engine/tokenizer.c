/* tokenizer.c: tokenizer.json loading and id -> bytes decoding. */
#include "tokenizer.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct token_entry {
    char *bytes; /* NULL: id unused */
    size_t len;
    int special;
} token_entry;

struct sl_tokenizer {
    char *path;
    int32_t n_ids;
    token_entry *tokens;
};

const char *sl_tokenizer_path(const sl_tokenizer *tok) { return tok->path; }
int32_t sl_tokenizer_vocab_size(const sl_tokenizer *tok) { return tok->n_ids; }

const char *sl_tokenizer_token_bytes(const sl_tokenizer *tok, int32_t id, size_t *len) {
    if (id < 0 || id >= tok->n_ids || !tok->tokens[id].bytes) {
        *len = 0;
        return NULL;
    }
    *len = tok->tokens[id].len;
    return tok->tokens[id].bytes;
}

int sl_tokenizer_is_special(const sl_tokenizer *tok, int32_t id) {
    return id >= 0 && id < tok->n_ids && tok->tokens[id].special;
}

void sl_tokenizer_free(sl_tokenizer *tok) {
    if (!tok) return;
    for (int32_t i = 0; i < tok->n_ids; i++) free(tok->tokens[i].bytes);
    free(tok->tokens);
    free(tok->path);
    free(tok);
}

/* GPT-2's byte-to-unicode table, inverted: code point -> byte, -1 if unmapped.
 * Printable Latin-1 bytes map to themselves; the other 68 bytes map, in order,
 * to U+0100.. so that every byte has a visible character. */
#define BYTE_MAP_SIZE 324
static void build_byte_map(int table[BYTE_MAP_SIZE]) {
    for (int i = 0; i < BYTE_MAP_SIZE; i++) table[i] = -1;
    int next = 256;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        table[printable ? b : next++] = b;
    }
}

/* Decodes one UTF-8 code point; returns its length or 0 if invalid. */
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp) {
    if (s[0] < 0x80) return *cp = s[0], 1;
    size_t len = (s[0] & 0xe0) == 0xc0 ? 2 : (s[0] & 0xf0) == 0xe0 ? 3 : (s[0] & 0xf8) == 0xf0 ? 4 : 0;
    if (!len || len > n) return 0;
    uint32_t c = s[0] & (0x7f >> len);
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        c = (c << 6) | (s[i] & 0x3f);
    }
    *cp = c;
    return len;
}

/* Maps a byte-level vocabulary string to the bytes it encodes. Characters outside
 * the table (not produced by a byte-level tokenizer) are kept as UTF-8. */
static char *byte_level_decode(const int *byte_map, const char *s, size_t n, size_t *out_len) {
    char *out = malloc(n + 1);
    if (!out) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t len = utf8_decode((const unsigned char *)s + i, n - i, &cp);
        if (!len) { /* jansson only yields valid UTF-8, but stay safe */
            out[o++] = s[i++];
            continue;
        }
        int b = cp < BYTE_MAP_SIZE ? byte_map[cp] : -1;
        if (b >= 0)
            out[o++] = (char)b;
        else
            memcpy(out + o, s + i, len), o += len;
        i += len;
    }
    out[o] = 0;
    *out_len = o;
    return out;
}

static char *metaspace_decode(const char *s, size_t n, size_t *out_len) {
    char *out = malloc(n + 1);
    if (!out) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        if (i + 3 <= n && memcmp(s + i, "\xE2\x96\x81", 3) == 0) { /* U+2581 */
            out[o++] = ' ';
            i += 3;
        } else
            out[o++] = s[i++];
    }
    out[o] = 0;
    *out_len = o;
    return out;
}

static int set_token(sl_tokenizer *tok, const int *byte_map, json_int_t id, const char *s, size_t n,
                     int decode_kind, int special, sl_err *err) {
    token_entry *t = &tok->tokens[id];
    free(t->bytes);
    if (decode_kind == 1)
        t->bytes = byte_level_decode(byte_map, s, n, &t->len);
    else if (decode_kind == 2)
        t->bytes = metaspace_decode(s, n, &t->len);
    else {
        t->bytes = malloc(n + 1);
        if (t->bytes) memcpy(t->bytes, s, n), t->bytes[n] = 0, t->len = n;
    }
    t->special = special;
    return t->bytes ? 0 : sl_errf(err, "out of memory");
}

sl_tokenizer *sl_tokenizer_load(const char *path, sl_err *err) {
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root) {
        FILE *f = fopen(path, "r");
        if (!f) return sl_errf_path(err, path, "cannot open tokenizer: %s", strerror(errno)), NULL;
        fclose(f);
        return sl_errf_path(err, path, "not a tokenizer.json (invalid JSON: %s, line %d)",
                            jerr.text, jerr.line),
               NULL;
    }
    sl_tokenizer *tok = calloc(1, sizeof *tok);
    json_t *model = json_object_get(root, "model");
    json_t *vocab = json_object_get(model, "vocab");
    json_t *added = json_object_get(root, "added_tokens");
    if (!tok || !(tok->path = strdup(path))) {
        sl_errf(err, "out of memory");
        goto fail;
    }
    if (!json_is_object(vocab)) {
        sl_errf_path(err, path, "not a tokenizer.json: model.vocab must be an object of token -> id");
        goto fail;
    }
    if (added && !json_is_array(added)) {
        sl_errf_path(err, path, "added_tokens must be an array");
        goto fail;
    }
    const char *dec_type = json_string_value(json_object_get(json_object_get(root, "decoder"), "type"));
    const char *pre_type = json_string_value(json_object_get(json_object_get(root, "pre_tokenizer"), "type"));
    int kind = 0, byte_map[BYTE_MAP_SIZE];
    build_byte_map(byte_map);
    if ((dec_type && strcmp(dec_type, "ByteLevel") == 0) || (!dec_type && pre_type && strcmp(pre_type, "ByteLevel") == 0))
        kind = 1;
    else if (dec_type && strcmp(dec_type, "Metaspace") == 0)
        kind = 2;

    /* Size the table from the largest id; ids beyond 2^24 are not plausible vocabularies. */
    json_int_t max_id = -1;
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        if (!json_is_integer(val) || json_integer_value(val) < 0 || json_integer_value(val) >= (1 << 24)) {
            sl_errf_path(err, path, "vocab entry '%s' has an invalid id", key);
            goto fail;
        }
        if (json_integer_value(val) > max_id) max_id = json_integer_value(val);
    }
    size_t i;
    json_array_foreach(added, i, val) {
        json_t *jid = json_object_get(val, "id");
        if (!json_is_integer(jid) || json_integer_value(jid) < 0 || json_integer_value(jid) >= (1 << 24) ||
            !json_is_string(json_object_get(val, "content"))) {
            sl_errf_path(err, path, "added_tokens[%zu] needs an integer id and a string content", i);
            goto fail;
        }
        if (json_integer_value(jid) > max_id) max_id = json_integer_value(jid);
    }
    tok->n_ids = (int32_t)(max_id + 1);
    tok->tokens = calloc((size_t)(tok->n_ids ? tok->n_ids : 1), sizeof *tok->tokens);
    if (!tok->tokens) {
        sl_errf(err, "out of memory");
        goto fail;
    }
    json_object_foreach(vocab, key, val) {
        if (set_token(tok, byte_map, json_integer_value(val), key, strlen(key), kind, 0, err)) goto fail;
    }
    json_array_foreach(added, i, val) {
        json_t *content = json_object_get(val, "content");
        if (set_token(tok, byte_map, json_integer_value(json_object_get(val, "id")), json_string_value(content),
                      json_string_length(content), 0, json_is_true(json_object_get(val, "special")), err))
            goto fail;
    }
    json_decref(root);
    return tok;
fail:
    json_decref(root);
    sl_tokenizer_free(tok);
    return NULL;
}
