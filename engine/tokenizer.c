/* tokenizer.c: tokenizer.json loading, id -> bytes decoding, and text -> ids
 * encoding for byte-level BPE (see tokenizer.h for what is reproduced and how). */
#include "tokenizer.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "text.h"

typedef struct token_entry {
    char *bytes; /* NULL: id unused */
    size_t len;
    int special;
} token_entry;

/* ---- encode-side data structures ---- */

/* string -> id, open addressing; keys live in one arena. */
typedef struct str_map {
    char *arena;
    size_t arena_len, arena_cap;
    uint32_t *off, *len; /* off == UINT32_MAX: empty slot */
    int32_t *val;
    size_t cap, n; /* cap: power of two */
} str_map;

/* (left id, right id) -> (rank, merged id), open addressing. */
typedef struct pair_map {
    uint64_t *key; /* PAIR_EMPTY: empty slot */
    int32_t *rank, *id;
    size_t cap, n;
} pair_map;
#define PAIR_EMPTY UINT64_MAX

typedef struct added_tok {
    char *content;
    size_t len;
    int32_t id;
    unsigned char single_word, lstrip, rstrip, normalized;
} added_tok;

/* Added tokens of one kind (normalized or not), indexed by first byte and
 * longest first, for leftmost-longest matching. */
typedef struct added_set {
    uint32_t *order;
    size_t n;
    uint32_t first[257];
} added_set;

enum { STEP_SPLIT, STEP_BYTELEVEL };
enum { SPLIT_ISOLATED, SPLIT_REMOVED };
typedef struct pt_step {
    int kind, behavior, add_prefix_space;
    pcre2_code *re; /* NULL: ByteLevel without regex */
} pt_step;
#define MAX_STEPS 8

/* Cache of BPE results per pre-token (its bytes), cleared when full. */
typedef struct cache_entry {
    uint64_t hash;
    uint32_t klen, n;
    /* followed by int32_t ids[n], uint32_t starts[n], uint32_t lens[n], char key[klen] */
} cache_entry;
#define CACHE_SLOTS (1u << 15)
#define CACHE_MAX_ENTRIES (CACHE_SLOTS / 2)
#define CACHE_MAX_WORD 256
typedef struct word_cache {
    pthread_mutex_t mu;
    cache_entry **slot;
    size_t n;
} word_cache;

struct sl_tokenizer {
    char *path;
    int32_t n_ids;
    token_entry *tokens;

    /* encoding */
    char *enc_why; /* why this tokenizer cannot encode; NULL when it can */
    added_tok *added;
    size_t n_added;
    added_set sets[2]; /* [0]: normalized false (matched first), [1]: normalized true */
    pt_step steps[MAX_STEPS];
    int n_steps;
    int32_t byte_id[256];      /* vocab id of each byte's GPT-2 character, -1 if absent */
    char byte_char[256][2];    /* each byte's GPT-2 character, UTF-8 */
    unsigned char byte_char_len[256];
    pair_map merges;
    str_map vocab; /* only filled with ignore_merges */
    int ignore_merges, fuse_unk;
    int32_t unk_id;
    pcre2_code *re_ws, *re_word; /* Rust regex \s and \w: lstrip/rstrip, single_word */
    word_cache *cache;
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

static void str_map_free(str_map *m) {
    free(m->arena);
    free(m->off);
    free(m->len);
    free(m->val);
    memset(m, 0, sizeof *m);
}

static void pair_map_free(pair_map *m) {
    free(m->key);
    free(m->rank);
    free(m->id);
    memset(m, 0, sizeof *m);
}

static void cache_clear(word_cache *c) {
    for (size_t i = 0; i < CACHE_SLOTS; i++) {
        free(c->slot[i]);
        c->slot[i] = NULL;
    }
    c->n = 0;
}

static void cache_free(word_cache *c) {
    if (!c) return;
    if (c->slot) cache_clear(c);
    free(c->slot);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

void sl_tokenizer_free(sl_tokenizer *tok) {
    if (!tok) return;
    for (int32_t i = 0; i < tok->n_ids; i++) free(tok->tokens[i].bytes);
    free(tok->tokens);
    free(tok->path);
    free(tok->enc_why);
    for (size_t i = 0; i < tok->n_added; i++) free(tok->added[i].content);
    free(tok->added);
    for (int s = 0; s < 2; s++) free(tok->sets[s].order);
    for (int i = 0; i < tok->n_steps; i++) pcre2_code_free(tok->steps[i].re);
    pair_map_free(&tok->merges);
    str_map_free(&tok->vocab);
    pcre2_code_free(tok->re_ws);
    pcre2_code_free(tok->re_word);
    cache_free(tok->cache);
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


/* ======================================================================
 * Encoding: set-up at load time
 * ====================================================================== */

static uint64_t mix64(uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ ((uint64_t)n * 0xbf58476d1ce4e5b9ull);
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, s, 8);
        h = (h ^ mix64(v)) * 0x94d049bb133111ebull;
        s += 8;
        n -= 8;
    }
    uint64_t v = 0;
    if (n) memcpy(&v, s, n);
    return mix64(h ^ v ^ ((uint64_t)n << 56));
}

static int str_map_init(str_map *m, size_t n_keys) {
    size_t cap = 16;
    while (cap < n_keys * 2) cap *= 2;
    m->off = malloc(cap * sizeof *m->off);
    m->len = malloc(cap * sizeof *m->len);
    m->val = malloc(cap * sizeof *m->val);
    if (!m->off || !m->len || !m->val) return -1;
    memset(m->off, 0xff, cap * sizeof *m->off);
    m->cap = cap;
    return 0;
}

/* Inserts or overwrites; the map never needs to grow (sized at init). */
static int str_map_put(str_map *m, const char *s, size_t n, int32_t v) {
    if (m->n + 1 > m->cap / 2 || n >= UINT32_MAX) return -1;
    size_t i = (size_t)hash_bytes(s, n) & (m->cap - 1);
    for (; m->off[i] != UINT32_MAX; i = (i + 1) & (m->cap - 1))
        if (m->len[i] == n && memcmp(m->arena + m->off[i], s, n) == 0) return m->val[i] = v, 0;
    if (m->arena_len + n > m->arena_cap) {
        size_t cap = m->arena_cap ? m->arena_cap : 4096;
        while (cap < m->arena_len + n) cap *= 2;
        if (cap >= UINT32_MAX) return -1;
        char *a = realloc(m->arena, cap);
        if (!a) return -1;
        m->arena = a;
        m->arena_cap = cap;
    }
    memcpy(m->arena + m->arena_len, s, n);
    m->off[i] = (uint32_t)m->arena_len;
    m->len[i] = (uint32_t)n;
    m->val[i] = v;
    m->arena_len += n;
    m->n++;
    return 0;
}

static int32_t str_map_get(const str_map *m, const char *s, size_t n) {
    if (!m->cap) return -1;
    size_t i = (size_t)hash_bytes(s, n) & (m->cap - 1);
    for (; m->off[i] != UINT32_MAX; i = (i + 1) & (m->cap - 1))
        if (m->len[i] == n && memcmp(m->arena + m->off[i], s, n) == 0) return m->val[i];
    return -1;
}

static int pair_map_init(pair_map *m, size_t n_keys) {
    size_t cap = 16;
    while (cap < n_keys * 2) cap *= 2;
    m->key = malloc(cap * sizeof *m->key);
    m->rank = malloc(cap * sizeof *m->rank);
    m->id = malloc(cap * sizeof *m->id);
    if (!m->key || !m->rank || !m->id) return -1;
    memset(m->key, 0xff, cap * sizeof *m->key);
    m->cap = cap;
    return 0;
}

/* A later duplicate overwrites an earlier one, as HF's HashMap collect does. */
static void pair_map_put(pair_map *m, int32_t a, int32_t b, int32_t rank, int32_t id) {
    uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t i = (size_t)mix64(k) & (m->cap - 1);
    while (m->key[i] != PAIR_EMPTY && m->key[i] != k) i = (i + 1) & (m->cap - 1);
    if (m->key[i] == PAIR_EMPTY) m->n++;
    m->key[i] = k;
    m->rank[i] = rank;
    m->id[i] = id;
}

static inline int pair_map_get(const pair_map *m, int32_t a, int32_t b, int32_t *rank, int32_t *id) {
    if (!m->cap) return 0;
    uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t i = (size_t)mix64(k) & (m->cap - 1);
    for (; m->key[i] != PAIR_EMPTY; i = (i + 1) & (m->cap - 1))
        if (m->key[i] == k) {
            *rank = m->rank[i];
            *id = m->id[i];
            return 1;
        }
    return 0;
}

/* Records why encoding is unsupported (the first reason found wins).
 * Returns 1, or -1 when out of memory. */
static int unsupported(sl_tokenizer *tok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int unsupported(sl_tokenizer *tok, const char *fmt, ...) {
    if (tok->enc_why) return 1;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    tok->enc_why = strdup(buf);
    return tok->enc_why ? 1 : -1;
}

static const char GPT2_REGEX[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* Oniguruma (what HF compiles pre-tokenizer regexes with) and PCRE2 with UCP
 * disagree on a few escapes; rewrites them to Oniguruma's meaning:
 *   \s \S  White_Space (PCRE2's \s also takes U+180E)
 *   \w \W  Alphabetic, Mark, Number, Connector_Punctuation (PCRE2: L, N, _)
 *   \b \B  boundaries of that \w
 *   \h \H  hexadecimal digit (PCRE2: horizontal space)
 * Constructs known to differ otherwise (POSIX bracket classes, \W or \H inside a
 * bracketed class) are reported in *bad. Returns a malloc'ed pattern
 * (NUL-terminated, length in *out_n), or NULL when out of memory. */
#define ONIG_WORD "\\p{Alphabetic}\\p{M}\\p{N}\\p{Pc}"
static char *onig_to_pcre2(const char *p, size_t n, size_t *out_n, const char **bad) {
    sl_buf b = {0};
    int depth = 0; /* bracket nesting (Oniguruma allows nested classes) */
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (ch == '\\' && i + 1 < n) {
            char x = p[++i];
            const char *r = NULL;
            switch (x) {
            case 's': r = "\\p{White_Space}"; break;
            case 'S': r = "\\P{White_Space}"; break;
            case 'w': r = depth ? ONIG_WORD : "[" ONIG_WORD "]"; break;
            case 'W':
                if (depth) *bad = "\\W inside a bracketed class";
                r = "[^" ONIG_WORD "]";
                break;
            case 'h': r = depth ? "0-9a-fA-F" : "[0-9a-fA-F]"; break;
            case 'H':
                if (depth) *bad = "\\H inside a bracketed class";
                r = "[^0-9a-fA-F]";
                break;
            case 'b':
                r = depth ? NULL
                          : "(?:(?<=[" ONIG_WORD "])(?![" ONIG_WORD "])|(?<![" ONIG_WORD "])(?=[" ONIG_WORD "]))";
                break;
            case 'B':
                r = depth ? NULL
                          : "(?:(?<=[" ONIG_WORD "])(?=[" ONIG_WORD "])|(?<![" ONIG_WORD "])(?![" ONIG_WORD "]))";
                break;
            case 'Q': { /* literal up to \E */
                const char *e = NULL;
                for (size_t k = i + 1; k + 1 < n && !e; k++)
                    if (p[k] == '\\' && p[k + 1] == 'E') e = p + k;
                size_t end = e ? (size_t)(e - p) + 2 : n;
                sl_buf_append(&b, p + i - 1, end - (i - 1));
                i = end - 1;
                continue;
            }
            default: break;
            }
            if (r)
                sl_buf_puts(&b, r);
            else
                sl_buf_append(&b, p + i - 1, 2);
            continue;
        }
        if (ch == '[') {
            if (depth && i + 1 < n && p[i + 1] == ':') *bad = "POSIX bracket classes ([:alpha:] ...)";
            sl_buf_append(&b, p + i, 1);
            depth++;
            /* a ']' right after '[' or '[^' is a literal */
            if (i + 1 < n && p[i + 1] == '^') sl_buf_append(&b, p + ++i, 1);
            if (i + 1 < n && p[i + 1] == ']') sl_buf_append(&b, p + ++i, 1);
            continue;
        }
        if (ch == ']' && depth) depth--;
        sl_buf_append(&b, p + i, 1);
    }
    sl_buf_str(&b);
    if (b.oom) {
        sl_buf_free(&b);
        return NULL;
    }
    *out_n = b.len;
    return b.data;
}

/* Compiles with UTF and UCP (an Oniguruma pattern from the file is first made to
 * mean the same in PCRE2), and JIT where available (silently interpreted otherwise).
 * On a compile error returns NULL and records the reason; on OOM returns NULL. */
static pcre2_code *compile_re(sl_tokenizer *tok, const char *pat, size_t n, uint32_t opts, int onig) {
    int code;
    PCRE2_SIZE at;
    char *conv = NULL;
    if (onig && !(opts & PCRE2_LITERAL)) {
        size_t cn;
        const char *bad = NULL;
        conv = onig_to_pcre2(pat, n, &cn, &bad);
        if (!conv) return NULL;
        if (bad) {
            unsupported(tok, "pre_tokenizer regex /%.*s/ uses %s, whose Oniguruma meaning is not reproduced",
                        n > 200 ? 200 : (int)n, pat, bad);
            free(conv);
            return NULL;
        }
        pat = conv, n = cn;
    }
    /* PCRE2_UCP is refused with PCRE2_LITERAL (and means nothing there) */
    uint32_t all = PCRE2_UTF | opts | (opts & PCRE2_LITERAL ? 0 : PCRE2_UCP);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, n, all, &code, &at, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        unsupported(tok, "pre_tokenizer regex /%.*s/ does not compile with PCRE2: %s (at offset %zu)",
                    n > 200 ? 200 : (int)n, pat, (const char *)msg, (size_t)at);
    }
    free(conv); /* after the message: pat may point into it */
    if (!re) return NULL;
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    return re;
}

/* Appends the steps of one pre_tokenizer object. Returns 0, 1 (unsupported) or -1. */
static int parse_pre_tokenizer(sl_tokenizer *tok, json_t *pt, int depth) {
    const char *type = json_string_value(json_object_get(pt, "type"));
    if (!type) return unsupported(tok, "unsupported pre_tokenizer (no type)");
    if (strcmp(type, "Sequence") == 0 && depth < 4) {
        json_t *list = json_object_get(pt, "pretokenizers");
        if (!json_is_array(list)) return unsupported(tok, "pre_tokenizer Sequence without a pretokenizers array");
        size_t i;
        json_t *v;
        json_array_foreach(list, i, v) {
            int rc = parse_pre_tokenizer(tok, v, depth + 1);
            if (rc) return rc;
        }
        return 0;
    }
    if (tok->n_steps == MAX_STEPS) return unsupported(tok, "pre_tokenizer has too many steps");
    pt_step *st = &tok->steps[tok->n_steps];
    memset(st, 0, sizeof *st);
    if (strcmp(type, "ByteLevel") == 0) {
        json_t *aps = json_object_get(pt, "add_prefix_space"), *ur = json_object_get(pt, "use_regex");
        st->kind = STEP_BYTELEVEL;
        st->add_prefix_space = aps ? json_is_true(aps) : 1; /* HF's defaults */
        if (!ur || json_is_true(ur)) {
            st->re = compile_re(tok, GPT2_REGEX, sizeof GPT2_REGEX - 1, 0, 1);
            if (!st->re) return 1;
        }
        tok->n_steps++;
        return 0;
    }
    if (strcmp(type, "Split") == 0) {
        json_t *pat = json_object_get(pt, "pattern");
        json_t *rx = json_object_get(pat, "Regex"), *lit = json_object_get(pat, "String");
        const char *beh = json_string_value(json_object_get(pt, "behavior"));
        if (json_is_true(json_object_get(pt, "invert"))) return unsupported(tok, "pre_tokenizer Split with invert");
        if (!beh || (strcmp(beh, "Isolated") != 0 && strcmp(beh, "Removed") != 0))
            return unsupported(tok, "pre_tokenizer Split behavior %s (only Isolated, Removed)", beh ? beh : "(none)");
        if (!json_is_string(rx) && !json_is_string(lit))
            return unsupported(tok, "pre_tokenizer Split needs a Regex or String pattern");
        json_t *p = json_is_string(rx) ? rx : lit;
        st->kind = STEP_SPLIT;
        st->behavior = strcmp(beh, "Isolated") == 0 ? SPLIT_ISOLATED : SPLIT_REMOVED;
        st->re = compile_re(tok, json_string_value(p), json_string_length(p), p == lit ? PCRE2_LITERAL : 0, 1);
        if (!st->re) return 1;
        tok->n_steps++;
        return 0;
    }
    return unsupported(tok, "unsupported pre_tokenizer %s", type);
}

typedef struct added_key {
    unsigned char first;
    size_t len;
    uint32_t index;
} added_key;

static int cmp_added(const void *a, const void *b) {
    const added_key *x = a, *y = b;
    if (x->first != y->first) return x->first < y->first ? -1 : 1;
    if (x->len != y->len) return x->len > y->len ? -1 : 1; /* longest first */
    return x->index < y->index ? -1 : x->index > y->index; /* then in file order */
}

static int parse_added(sl_tokenizer *tok, json_t *added) {
    size_t n = json_array_size(added), i;
    json_t *v;
    tok->added = calloc(n ? n : 1, sizeof *tok->added);
    if (!tok->added) return -1;
    json_array_foreach(added, i, v) {
        json_t *c = json_object_get(v, "content"), *nz = json_object_get(v, "normalized");
        if (json_string_length(c) == 0) continue; /* HF ignores empty added tokens */
        added_tok *a = &tok->added[tok->n_added];
        a->len = json_string_length(c);
        a->content = malloc(a->len + 1);
        if (!a->content) return -1;
        memcpy(a->content, json_string_value(c), a->len + 1);
        a->id = (int32_t)json_integer_value(json_object_get(v, "id"));
        a->single_word = json_is_true(json_object_get(v, "single_word"));
        a->lstrip = json_is_true(json_object_get(v, "lstrip"));
        a->rstrip = json_is_true(json_object_get(v, "rstrip"));
        a->normalized = nz ? json_is_true(nz) : 1;
        tok->n_added++;
    }
    added_key *keys = malloc((tok->n_added ? tok->n_added : 1) * sizeof *keys);
    if (!keys) return -1;
    for (int s = 0; s < 2; s++) {
        added_set *set = &tok->sets[s];
        set->order = malloc((tok->n_added ? tok->n_added : 1) * sizeof *set->order);
        if (!set->order) return free(keys), -1;
        for (size_t k = 0; k < tok->n_added; k++)
            if (tok->added[k].normalized == s)
                keys[set->n++] = (added_key){(unsigned char)tok->added[k].content[0], tok->added[k].len, (uint32_t)k};
        qsort(keys, set->n, sizeof *keys, cmp_added);
        for (size_t k = 0; k < set->n; k++) set->order[k] = keys[k].index;
        size_t k = 0;
        for (int b = 0; b <= 256; b++) {
            while (k < set->n && (unsigned char)tok->added[set->order[k]].content[0] < b) k++;
            set->first[b] = (uint32_t)k;
        }
    }
    free(keys);
    return 0;
}

/* Looks a vocabulary string up in the JSON vocab; -1 if absent. */
static int32_t vocab_lookup(json_t *vocab, const char *s, size_t n) {
    json_t *v = json_object_getn(vocab, s, n);
    return json_is_integer(v) ? (int32_t)json_integer_value(v) : -1;
}

/* One merge "a b" / ["a", "b"]: returns 0, or 1 with the reason recorded, or -1. */
static int add_merge(sl_tokenizer *tok, json_t *vocab, json_t *m, size_t rank, char **buf, size_t *cap) {
    const char *a, *b;
    size_t na, nb;
    if (json_is_string(m)) {
        const char *s = json_string_value(m), *sp = memchr(s, ' ', json_string_length(m));
        if (!sp || memchr(sp + 1, ' ', json_string_length(m) - (size_t)(sp + 1 - s)))
            return unsupported(tok, "merges[%zu] \"%s\" is not two tokens separated by one space", rank, s);
        a = s, na = (size_t)(sp - s), b = sp + 1, nb = json_string_length(m) - na - 1;
    } else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
               json_is_string(json_array_get(m, 1))) {
        a = json_string_value(json_array_get(m, 0)), na = json_string_length(json_array_get(m, 0));
        b = json_string_value(json_array_get(m, 1)), nb = json_string_length(json_array_get(m, 1));
    } else
        return unsupported(tok, "merges[%zu] is neither \"a b\" nor [a, b]", rank);
    if (na + nb > *cap) {
        size_t c = (na + nb) * 2 + 64;
        char *p = realloc(*buf, c);
        if (!p) return -1;
        *buf = p, *cap = c;
    }
    memcpy(*buf, a, na);
    memcpy(*buf + na, b, nb);
    int32_t ia = vocab_lookup(vocab, a, na), ib = vocab_lookup(vocab, b, nb), im = vocab_lookup(vocab, *buf, na + nb);
    if (ia < 0 || ib < 0 || im < 0)
        return unsupported(tok, "merges[%zu] (%.*s, %.*s) uses a token that is not in the vocab", rank,
                           (int)na, a, (int)nb, b);
    if (rank > INT32_MAX) return unsupported(tok, "too many merges");
    pair_map_put(&tok->merges, ia, ib, (int32_t)rank, im);
    return 0;
}

/* Everything sl_tokenizer_encode needs. Returns 0 (possibly with tok->enc_why set:
 * the tokenizer still loads for decoding) or -1 when out of memory. */
static int setup_encoder(sl_tokenizer *tok, json_t *root, json_t *model, json_t *vocab, json_t *added) {
    tok->unk_id = -1;
    if (parse_added(tok, added)) return -1;
    int rc = 0;
    const char *mtype = json_string_value(json_object_get(model, "type"));
    if (!mtype && json_object_get(model, "merges")) mtype = "BPE"; /* HF infers it */
    json_t *norm = json_object_get(root, "normalizer");
    const char *ntype = json_string_value(json_object_get(norm, "type"));
    json_t *pre = json_object_get(root, "pre_tokenizer");
    json_t *merges = json_object_get(model, "merges");
    json_t *dropout = json_object_get(model, "dropout"), *unk = json_object_get(model, "unk_token");
    const char *csp = json_string_value(json_object_get(model, "continuing_subword_prefix"));
    const char *ews = json_string_value(json_object_get(model, "end_of_word_suffix"));

    if (!mtype || strcmp(mtype, "BPE") != 0)
        rc = unsupported(tok, "model type %s (only BPE)", mtype ? mtype : "(none)");
    else if (norm && !json_is_null(norm) &&
             !(ntype && strcmp(ntype, "Sequence") == 0 && json_array_size(json_object_get(norm, "normalizers")) == 0))
        rc = unsupported(tok, "unsupported normalizer %s", ntype ? ntype : "(no type)");
    else if (!pre || json_is_null(pre))
        rc = unsupported(tok, "pre_tokenizer null (only byte-level BPE can encode)");
    else if (json_is_number(dropout) && json_number_value(dropout) > 0)
        rc = unsupported(tok, "BPE dropout");
    else if ((csp && *csp) || (ews && *ews))
        rc = unsupported(tok, "BPE continuing_subword_prefix / end_of_word_suffix");
    else if (!json_is_array(merges))
        rc = unsupported(tok, "model.merges must be an array");
    if (rc) return rc < 0 ? -1 : 0;

    rc = parse_pre_tokenizer(tok, pre, 0);
    if (rc) return rc < 0 ? -1 : 0;
    int n_bl = 0;
    for (int i = 0; i < tok->n_steps; i++) n_bl += tok->steps[i].kind == STEP_BYTELEVEL;
    if (n_bl != 1 || tok->steps[tok->n_steps - 1].kind != STEP_BYTELEVEL) {
        rc = unsupported(tok, "pre_tokenizer must end in one ByteLevel step (byte-level BPE)");
        return rc < 0 ? -1 : 0;
    }

    /* GPT-2 byte-to-unicode: printable bytes are themselves, the rest U+0100.. in order. */
    int next = 256, missing = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        int cp = printable ? b : next++;
        if (cp < 0x80)
            tok->byte_char[b][0] = (char)cp, tok->byte_char_len[b] = 1;
        else
            tok->byte_char[b][0] = (char)(0xC0 | (cp >> 6)), tok->byte_char[b][1] = (char)(0x80 | (cp & 0x3F)),
            tok->byte_char_len[b] = 2;
        tok->byte_id[b] = vocab_lookup(vocab, tok->byte_char[b], tok->byte_char_len[b]);
        missing += tok->byte_id[b] < 0;
    }
    if (missing && json_is_true(json_object_get(model, "byte_fallback"))) {
        rc = unsupported(tok, "byte_fallback with an incomplete byte alphabet");
        return rc < 0 ? -1 : 0;
    }
    if (json_is_string(unk)) {
        tok->unk_id = vocab_lookup(vocab, json_string_value(unk), json_string_length(unk));
        if (tok->unk_id < 0) {
            rc = unsupported(tok, "unk_token %s is not in the vocab", json_string_value(unk));
            return rc < 0 ? -1 : 0;
        }
    }
    tok->fuse_unk = json_is_true(json_object_get(model, "fuse_unk"));
    tok->ignore_merges = json_is_true(json_object_get(model, "ignore_merges"));

    if (pair_map_init(&tok->merges, json_array_size(merges))) return -1;
    char *buf = NULL;
    size_t cap = 0, i;
    json_t *m;
    json_array_foreach(merges, i, m) {
        rc = add_merge(tok, vocab, m, i, &buf, &cap);
        if (rc) break;
    }
    free(buf);
    if (rc) return rc < 0 ? -1 : 0;

    if (tok->ignore_merges) {
        const char *key;
        json_t *val;
        if (str_map_init(&tok->vocab, json_object_size(vocab))) return -1;
        json_object_foreach(vocab, key, val) {
            if (str_map_put(&tok->vocab, key, strlen(key), (int32_t)json_integer_value(val))) return -1;
        }
    }
    int need_classes = 0;
    for (size_t k = 0; k < tok->n_added; k++)
        need_classes |= tok->added[k].single_word | tok->added[k].lstrip | tok->added[k].rstrip;
    if (need_classes) {
        /* Rust regex's \\s and \\w, which HF uses for these */
        tok->re_ws = compile_re(tok, "\\p{White_Space}", PCRE2_ZERO_TERMINATED, PCRE2_ANCHORED, 0);
        tok->re_word = compile_re(tok, "[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\x{200C}\\x{200D}]",
                                  PCRE2_ZERO_TERMINATED, PCRE2_ANCHORED, 0);
        if (!tok->re_ws || !tok->re_word) return tok->enc_why ? 0 : -1;
    }
    tok->cache = calloc(1, sizeof *tok->cache);
    if (!tok->cache) return -1;
    tok->cache->slot = calloc(CACHE_SLOTS, sizeof *tok->cache->slot);
    if (!tok->cache->slot || pthread_mutex_init(&tok->cache->mu, NULL)) {
        free(tok->cache->slot);
        free(tok->cache);
        tok->cache = NULL;
        return -1;
    }
    return 0;
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
    if (setup_encoder(tok, root, model, vocab, added)) {
        sl_errf(err, "out of memory");
        goto fail;
    }
    json_decref(root);
    return tok;
fail:
    json_decref(root);
    sl_tokenizer_free(tok);
    return NULL;
}

int sl_tokenizer_can_encode(const sl_tokenizer *tok, sl_err *err) {
    if (tok->enc_why) return sl_errf_path(err, tok->path, "encoding unsupported: %s", tok->enc_why);
    return 0;
}

int32_t sl_tokenizer_added_id(const sl_tokenizer *tok, const char *content) {
    size_t n = strlen(content);
    int32_t id = -1;
    for (size_t i = 0; i < tok->n_added; i++) /* the last one wins, as in HF's map */
        if (tok->added[i].len == n && memcmp(tok->added[i].content, content, n) == 0) id = tok->added[i].id;
    return id;
}

void sl_encoding_free(sl_encoding *e) {
    free(e->ids);
    free(e->start);
    free(e->end);
    memset(e, 0, sizeof *e);
}

/* ======================================================================
 * Encoding
 * ====================================================================== */

typedef struct sym {
    int32_t id, prev, next;
    uint32_t start, len; /* bytes of the pre-token; len 0: merged away */
} sym;

typedef struct merge_ent {
    int32_t rank, pos, id;
} merge_ent;

/* A pre-token: bytes [a, b) of the (repaired) text, after a virtual space when prefix. */
typedef struct piece {
    size_t a, b;
    int prefix;
} piece;

typedef struct enc_ctx {
    const sl_tokenizer *tok;
    size_t orig_len;
    size_t first_out; /* out->n when this encode began */
    const char *t; /* the text, with invalid UTF-8 replaced */
    size_t tn;
    /* Each U+FFFD put in: at t[rep_t[k]], for the text's bytes [rep_o[k], +rep_n[k]).
     * n_rep == 0: t is the caller's text. */
    size_t *rep_t, *rep_o, *rep_n, n_rep;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jstack;
    sl_buf scratch[MAX_STEPS];
    sl_buf word, mapped;
    sym *syms;
    size_t syms_cap;
    merge_ent *heap;
    size_t heap_n, heap_cap;
    int32_t *rid; /* BPE result of the current pre-token */
    uint32_t *rstart, *rlen;
    size_t rn, rcap;
    sl_encoding *out;
    sl_err *err;
} enc_ctx;

static int oom(enc_ctx *c) { return sl_errf(c->err, "out of memory"); }

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t n = *cap ? *cap : 16;
    while (n < need) n *= 2;
    void *q = realloc(*p, n * elem);
    if (!q) return -1;
    *p = q;
    *cap = n;
    return 0;
}

/* Room for n results of the current pre-token (rid, rstart, rlen share rcap). */
static int res_reserve(enc_ctx *c, size_t n) {
    if (n == 0) n = 1; /* never NULL, even for a pre-token whose bytes were all dropped */
    if (n <= c->rcap) return 0;
    size_t cap = c->rcap ? c->rcap : 64;
    while (cap < n) cap *= 2;
    int32_t *id = realloc(c->rid, cap * sizeof *id);
    if (id) c->rid = id;
    uint32_t *st = id ? realloc(c->rstart, cap * sizeof *st) : NULL;
    if (st) c->rstart = st;
    uint32_t *ln = st ? realloc(c->rlen, cap * sizeof *ln) : NULL;
    if (!ln) return -1;
    c->rlen = ln;
    c->rcap = cap;
    return 0;
}

static int out_push(enc_ctx *c, int32_t id, size_t s, size_t e) {
    sl_encoding *o = c->out;
    if (o->n == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 256;
        int32_t *ids = realloc(o->ids, cap * sizeof *ids);
        if (ids) o->ids = ids;
        uint32_t *st = ids ? realloc(o->start, cap * sizeof *st) : NULL;
        if (st) o->start = st;
        uint32_t *en = st ? realloc(o->end, cap * sizeof *en) : NULL;
        if (!en) return oom(c);
        o->end = en;
        o->cap = cap;
    }
    /* Starts and ends never decrease. They could after an added token with rstrip
     * took whitespace that a later added token also matches (HF emits both, with
     * overlapping ranges): the later tokens are moved up to where it ended. */
    if (o->n > c->first_out) {
        if (s < o->start[o->n - 1]) s = o->start[o->n - 1];
        if (e < o->end[o->n - 1]) e = o->end[o->n - 1];
        if (s > e) s = e;
    }
    o->ids[o->n] = id;
    o->start[o->n] = (uint32_t)s;
    o->end[o->n] = (uint32_t)e;
    o->n++;
    return 0;
}

/* The text's byte range [*s, *e) for byte i of t: itself, or the whole invalid
 * sequence a U+FFFD byte stands for. */
static void orig_range(const enc_ctx *c, size_t i, size_t *s, size_t *e) {
    if (!c->n_rep || i < c->rep_t[0]) {
        *s = i, *e = i + 1;
        return;
    }
    size_t lo = 0, hi = c->n_rep; /* last k with rep_t[k] <= i */
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (c->rep_t[mid] <= i) lo = mid;
        else hi = mid;
    }
    if (i < c->rep_t[lo] + 3)
        *s = c->rep_o[lo], *e = c->rep_o[lo] + c->rep_n[lo];
    else
        *s = c->rep_o[lo] + c->rep_n[lo] + (i - c->rep_t[lo] - 3), *e = *s + 1;
}
static inline size_t ostart(const enc_ctx *c, size_t i) {
    size_t s, e;
    orig_range(c, i, &s, &e);
    return s;
}
static inline size_t oend(const enc_ctx *c, size_t i) {
    size_t s, e;
    orig_range(c, i, &s, &e);
    return e;
}
/* Position just before byte i of t, for empty ranges (i may be tn). */
static inline size_t opos(const enc_ctx *c, size_t i) { return i < c->tn ? ostart(c, i) : c->orig_len; }

/* Length of the valid UTF-8 character at s, or 0 and in *bad the length of the
 * maximal invalid subpart to replace by one U+FFFD (Python's errors="replace"). */
static size_t utf8_check(const unsigned char *s, size_t n, size_t *bad) {
    unsigned c = s[0], lo = 0x80, hi = 0xBF;
    size_t need;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF)
        need = 1;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        *bad = 1;
        return 0;
    }
    for (size_t i = 1; i <= need; i++) {
        if (i >= n || s[i] < lo || s[i] > hi) {
            *bad = i;
            return 0;
        }
        lo = 0x80, hi = 0xBF;
    }
    return need + 1;
}

static inline size_t utf8_char_len(const char *s, size_t i, size_t n) {
    unsigned char c = (unsigned char)s[i];
    size_t l = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    return i + l <= n ? l : n - i;
}

/* Replaces invalid UTF-8; t stays the caller's text when it is valid. */
static int repair_utf8(enc_ctx *c, const char *text, size_t len) {
    const unsigned char *p = (const unsigned char *)text;
    size_t i = 0, bad = 0;
    while (i < len) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        size_t l = utf8_check(p + i, len - i, &bad);
        if (!l) break;
        i += l;
    }
    c->t = text, c->tn = len;
    if (i == len) return 0;
    size_t n_rep = 0, out = 0;
    for (size_t k = i; k < len;) {
        size_t l = utf8_check(p + k, len - k, &bad);
        if (l)
            k += l, out += l;
        else
            k += bad, out += 3, n_rep++;
    }
    out += i;
    char *t = malloc(out);
    c->rep_t = malloc(n_rep * sizeof *c->rep_t);
    c->rep_o = malloc(n_rep * sizeof *c->rep_o);
    c->rep_n = malloc(n_rep * sizeof *c->rep_n);
    if (!t || !c->rep_t || !c->rep_o || !c->rep_n) {
        free(t);
        return oom(c); /* rep_* are freed by the caller */
    }
    memcpy(t, text, i);
    size_t o = i;
    while (i < len) {
        size_t l = utf8_check(p + i, len - i, &bad);
        if (l) {
            memcpy(t + o, text + i, l);
            i += l, o += l;
        } else {
            c->rep_t[c->n_rep] = o, c->rep_o[c->n_rep] = i, c->rep_n[c->n_rep] = bad, c->n_rep++;
            memcpy(t + o, "\xEF\xBF\xBD", 3);
            i += bad, o += 3;
        }
    }
    c->t = t, c->tn = o;
    return 0;
}

/* ---- BPE on one pre-token ---- */

static inline int heap_less(const merge_ent *x, const merge_ent *y) {
    return x->rank < y->rank || (x->rank == y->rank && x->pos < y->pos);
}

static int heap_push(enc_ctx *c, int32_t rank, int32_t pos, int32_t id) {
    if (grow((void **)&c->heap, &c->heap_cap, c->heap_n + 1, sizeof *c->heap)) return oom(c);
    size_t i = c->heap_n++;
    merge_ent e = {rank, pos, id};
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&e, &c->heap[p])) break;
        c->heap[i] = c->heap[p];
        i = p;
    }
    c->heap[i] = e;
    return 0;
}

static merge_ent heap_pop(enc_ctx *c) {
    merge_ent top = c->heap[0], e = c->heap[--c->heap_n];
    size_t i = 0, n = c->heap_n;
    for (;;) {
        size_t l = 2 * i + 1, m;
        if (l >= n) break;
        m = l + 1 < n && heap_less(&c->heap[l + 1], &c->heap[l]) ? l + 1 : l;
        if (!heap_less(&c->heap[m], &e)) break;
        c->heap[i] = c->heap[m];
        i = m;
    }
    if (n) c->heap[i] = e;
    return top;
}

static void push_sym(enc_ctx *c, size_t *n, int32_t id, size_t start, size_t len) {
    sym *s = &c->syms[*n];
    s->id = id;
    s->prev = (int32_t)*n - 1;
    s->next = -1;
    s->start = (uint32_t)start;
    s->len = (uint32_t)len;
    if (*n) c->syms[*n - 1].next = (int32_t)*n;
    (*n)++;
}

/* HF's Word::merge_all: repeatedly merge the adjacent pair of lowest rank (leftmost
 * on ties), with a heap of candidate merges; stale entries are skipped. */
static int bpe_merge(enc_ctx *c, const char *w, size_t wn) {
    const sl_tokenizer *tok = c->tok;
    if (wn > INT32_MAX / 2) return sl_errf_path(c->err, tok->path, "pre-token too long to encode");
    if (grow((void **)&c->syms, &c->syms_cap, wn, sizeof *c->syms)) return oom(c);
    size_t n = 0;
    int have_unk = 0;
    size_t unk_start = 0, unk_len = 0;
    for (size_t i = 0; i < wn; i++) {
        int32_t id = tok->byte_id[(unsigned char)w[i]];
        if (id >= 0) {
            if (have_unk) push_sym(c, &n, tok->unk_id, unk_start, unk_len), have_unk = 0;
            push_sym(c, &n, id, i, 1);
        } else if (tok->unk_id >= 0) {
            if (have_unk && tok->fuse_unk)
                unk_len++;
            else {
                if (have_unk) push_sym(c, &n, tok->unk_id, unk_start, unk_len);
                have_unk = 1, unk_start = i, unk_len = 1;
            }
        } /* else: HF drops a character it cannot represent */
    }
    if (have_unk) push_sym(c, &n, tok->unk_id, unk_start, unk_len);

    c->heap_n = 0;
    int32_t rank, nid;
    for (size_t i = 0; i + 1 < n; i++)
        if (pair_map_get(&tok->merges, c->syms[i].id, c->syms[i + 1].id, &rank, &nid) &&
            heap_push(c, rank, (int32_t)i, nid))
            return -1;
    while (c->heap_n) {
        merge_ent top = heap_pop(c);
        sym *l = &c->syms[top.pos];
        if (l->len == 0 || l->next < 0) continue;
        int32_t rpos = l->next;
        sym r = c->syms[rpos];
        if (!pair_map_get(&tok->merges, l->id, r.id, &rank, &nid) || nid != top.id) continue; /* stale */
        l->id = nid;
        l->len += r.len;
        l->next = r.next;
        c->syms[rpos].len = 0;
        if (r.next >= 0) c->syms[r.next].prev = top.pos;
        if (l->prev >= 0 && pair_map_get(&tok->merges, c->syms[l->prev].id, l->id, &rank, &nid) &&
            heap_push(c, rank, l->prev, nid))
            return -1;
        if (l->next >= 0 && pair_map_get(&tok->merges, l->id, c->syms[l->next].id, &rank, &nid) &&
            heap_push(c, rank, top.pos, nid))
            return -1;
    }
    c->rn = 0;
    if (res_reserve(c, n)) return oom(c);
    for (int32_t i = n ? 0 : -1; i >= 0; i = c->syms[i].next) {
        c->rid[c->rn] = c->syms[i].id;
        c->rstart[c->rn] = c->syms[i].start;
        c->rlen[c->rn] = c->syms[i].len;
        c->rn++;
    }
    return 0;
}

static const char *entry_key(const cache_entry *e) {
    return (const char *)((const uint32_t *)((const int32_t *)(e + 1) + e->n) + 2 * (size_t)e->n);
}

/* Word cache: copy out under the lock. */
static int cache_get(enc_ctx *c, uint64_t h, const char *w, size_t wn) {
    word_cache *wc = c->tok->cache;
    int hit = 0;
    pthread_mutex_lock(&wc->mu);
    for (size_t i = (size_t)h & (CACHE_SLOTS - 1); wc->slot[i]; i = (i + 1) & (CACHE_SLOTS - 1)) {
        cache_entry *e = wc->slot[i];
        if (e->hash != h || e->klen != wn) continue;
        int32_t *ids = (int32_t *)(e + 1);
        uint32_t *st = (uint32_t *)(ids + e->n), *ln = st + e->n;
        if (memcmp(entry_key(e), w, wn) != 0) continue;
        if (res_reserve(c, e->n) == 0) { /* else: treated as a miss */
            memcpy(c->rid, ids, e->n * sizeof *ids);
            memcpy(c->rstart, st, e->n * sizeof *st);
            memcpy(c->rlen, ln, e->n * sizeof *ln);
            c->rn = e->n;
            hit = 1;
        }
        break;
    }
    pthread_mutex_unlock(&wc->mu);
    return hit;
}

static void cache_put(enc_ctx *c, uint64_t h, const char *w, size_t wn) {
    word_cache *wc = c->tok->cache;
    size_t n = c->rn;
    cache_entry *e = malloc(sizeof *e + n * (sizeof(int32_t) + 2 * sizeof(uint32_t)) + wn);
    if (!e) return; /* a cache miss next time, nothing worse */
    e->hash = h, e->klen = (uint32_t)wn, e->n = (uint32_t)n;
    int32_t *ids = (int32_t *)(e + 1);
    uint32_t *st = (uint32_t *)(ids + n), *ln = st + n;
    memcpy(ids, c->rid, n * sizeof *ids);
    memcpy(st, c->rstart, n * sizeof *st);
    memcpy(ln, c->rlen, n * sizeof *ln);
    memcpy(ln + n, w, wn);
    pthread_mutex_lock(&wc->mu);
    if (wc->n >= CACHE_MAX_ENTRIES) cache_clear(wc);
    size_t i = (size_t)h & (CACHE_SLOTS - 1);
    for (; wc->slot[i]; i = (i + 1) & (CACHE_SLOTS - 1)) {
        cache_entry *o = wc->slot[i];
        if (o->hash == h && o->klen == wn && memcmp(entry_key(o), w, wn) == 0) {
            free(e); /* another thread got there first */
            e = NULL;
            break;
        }
    }
    if (e) wc->slot[i] = e, wc->n++;
    pthread_mutex_unlock(&wc->mu);
}

static int bpe_piece(enc_ctx *c, piece p) {
    const sl_tokenizer *tok = c->tok;
    const char *w = c->t + p.a;
    size_t wn = p.b - p.a;
    if (p.prefix) {
        c->word.len = 0;
        sl_buf_append(&c->word, " ", 1);
        sl_buf_append(&c->word, c->t + p.a, p.b - p.a);
        if (c->word.oom) return oom(c);
        w = c->word.data, wn = c->word.len;
    }
    if (wn == 0) return 0;
    int cacheable = wn <= CACHE_MAX_WORD, done = 0;
    uint64_t h = 0;
    if (cacheable) {
        h = hash_bytes(w, wn);
        done = cache_get(c, h, w, wn);
    }
    if (!done && tok->ignore_merges) {
        c->mapped.len = 0;
        for (size_t i = 0; i < wn; i++)
            sl_buf_append(&c->mapped, tok->byte_char[(unsigned char)w[i]], tok->byte_char_len[(unsigned char)w[i]]);
        if (c->mapped.oom) return oom(c);
        int32_t id = str_map_get(&tok->vocab, c->mapped.data, c->mapped.len);
        if (id >= 0) {
            if (res_reserve(c, 1)) return oom(c);
            c->rid[0] = id, c->rstart[0] = 0, c->rlen[0] = (uint32_t)wn, c->rn = 1;
            done = 1;
        }
    }
    if (!done) {
        if (bpe_merge(c, w, wn)) return -1;
        if (cacheable) cache_put(c, h, w, wn);
    }
    size_t pre = (size_t)p.prefix;
    for (size_t i = 0; i < c->rn; i++) {
        size_t k0 = c->rstart[i], k1 = k0 + c->rlen[i];
        size_t lo = p.a + (k0 > pre ? k0 - pre : 0), hi = p.a + (k1 > pre ? k1 - pre : 0);
        size_t s, e;
        if (hi > lo)
            s = ostart(c, lo), e = oend(c, hi - 1);
        else
            s = e = opos(c, lo);
        if (out_push(c, c->rid[i], s, e)) return -1;
    }
    return 0;
}

/* ---- pre-tokenization ---- */

static int apply_step(enc_ctx *c, int k, piece p);

static int match_at(enc_ctx *c, const pcre2_code *re, const char *s, size_t n, size_t off, uint32_t opts) {
    for (;;) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, off, opts | PCRE2_NO_UTF_CHECK, c->md, c->mctx);
        if (rc >= 0 || rc == PCRE2_ERROR_NOMATCH) return rc;
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !c->jstack) {
            c->mctx = pcre2_match_context_create(NULL);
            c->jstack = pcre2_jit_stack_create(32 * 1024, 256 * 1024 * 1024, NULL);
            if (!c->mctx || !c->jstack) return oom(c), -1000;
            pcre2_jit_stack_assign(c->mctx, NULL, c->jstack);
            continue;
        }
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof msg);
        sl_errf_path(c->err, c->tok->path, "pre_tokenizer regex failed on the text: %s", (const char *)msg);
        return -1000;
    }
}

static int sub_piece(enc_ctx *c, int k, piece p, size_t s, size_t e) {
    if (s == e) return 0; /* HF drops empty splits */
    piece q;
    if (!p.prefix)
        q.a = p.a + s, q.b = p.a + e, q.prefix = 0;
    else if (s == 0)
        q.a = p.a, q.b = p.a + e - 1, q.prefix = 1;
    else
        q.a = p.a + s - 1, q.b = p.a + e - 1, q.prefix = 0;
    return apply_step(c, k + 1, q);
}

/* Splits a piece by the step's regex, matches and the text between them as their
 * own pieces (Isolated) or only the text between (Removed), like HF's Split with
 * Oniguruma's find_iter (an empty match right after the previous one is skipped). */
static int regex_split(enc_ctx *c, int k, piece p) {
    const pt_step *st = &c->tok->steps[k];
    const char *s = c->t + p.a;
    size_t n = p.b - p.a;
    if (p.prefix) {
        sl_buf *b = &c->scratch[k];
        b->len = 0;
        sl_buf_append(b, " ", 1);
        sl_buf_append(b, c->t + p.a, n);
        if (b->oom) return oom(c);
        s = b->data, n = b->len;
    }
    size_t prev = 0, off = 0, last_end = 0;
    int have_last = 0;
    while (off <= n) {
        int rc = match_at(c, st->re, s, n, off, 0);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc == -1000) return -1;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
        size_t ms = ov[0], me = ov[1];
        if (ms == me && have_last && last_end == me) {
            off += off < n ? utf8_char_len(s, off, n) : 1;
            continue;
        }
        off = last_end = me, have_last = 1;
        if (prev != ms && sub_piece(c, k, p, prev, ms)) return -1;
        if (st->behavior == SPLIT_ISOLATED && sub_piece(c, k, p, ms, me)) return -1;
        prev = me;
    }
    if (prev != n && sub_piece(c, k, p, prev, n)) return -1;
    return 0;
}

static int apply_step(enc_ctx *c, int k, piece p) {
    if (k == c->tok->n_steps) return bpe_piece(c, p);
    const pt_step *st = &c->tok->steps[k];
    if (st->kind == STEP_BYTELEVEL) {
        if (st->add_prefix_space && !p.prefix && !(p.b > p.a && c->t[p.a] == ' ')) p.prefix = 1;
        if (!st->re) return apply_step(c, k + 1, p);
    }
    return regex_split(c, k, p);
}

/* ---- added tokens ---- */

static int char_is(enc_ctx *c, const pcre2_code *re, size_t i) {
    return match_at(c, re, c->t + i, utf8_char_len(c->t, i, c->tn), 0, PCRE2_ANCHORED) >= 0;
}

static int is_ws_at(enc_ctx *c, size_t i) {
    unsigned char ch = (unsigned char)c->t[i];
    if (ch < 0x80) return ch == ' ' || (ch >= '\t' && ch <= '\r');
    return char_is(c, c->tok->re_ws, i);
}

static int is_word_at(enc_ctx *c, size_t i) {
    unsigned char ch = (unsigned char)c->t[i];
    if (ch < 0x80) return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_';
    return char_is(c, c->tok->re_word, i);
}

/* Start of the character that ends at i (i > a). */
static size_t char_before(const enc_ctx *c, size_t a, size_t i) {
    do i--;
    while (i > a && ((unsigned char)c->t[i] & 0xC0) == 0x80);
    return i;
}

static int split_added(enc_ctx *c, int set, size_t a, size_t b);

static int added_gap(enc_ctx *c, int set, size_t a, size_t b) {
    if (a >= b) return 0;
    if (set == 0) return split_added(c, 1, a, b);
    piece p = {a, b, 0};
    return apply_step(c, 0, p);
}

/* HF's AddedVocabulary::find_matches on the segment [a, b): leftmost-longest
 * matches, each then checked for single_word and widened by lstrip/rstrip. */
static int split_added(enc_ctx *c, int set, size_t a, size_t b) {
    const sl_tokenizer *tok = c->tok;
    const added_set *S = &tok->sets[set];
    if (S->n == 0) return added_gap(c, set, a, b);
    const char *t = c->t;
    size_t start_offset = a, pos = a;
    while (pos < b) {
        unsigned char ch = (unsigned char)t[pos];
        const added_tok *m = NULL;
        for (uint32_t k = S->first[ch]; k < S->first[ch + 1]; k++) {
            const added_tok *x = &tok->added[S->order[k]];
            if (x->len <= b - pos && memcmp(t + pos, x->content, x->len) == 0) {
                m = x;
                break;
            }
        }
        if (!m) {
            pos++;
            continue;
        }
        size_t start = pos, stop = pos + m->len;
        pos = stop; /* the matcher goes on after the raw match */
        if (m->single_word) {
            int start_space = start == a || !is_word_at(c, char_before(c, a, start));
            int stop_space = stop == b || !is_word_at(c, stop);
            if (!start_space || !stop_space) continue;
        }
        if (m->lstrip) {
            size_t ns = start;
            while (ns > a) {
                size_t q = char_before(c, a, ns);
                if (!is_ws_at(c, q)) break;
                ns = q;
            }
            start = ns > start_offset ? ns : start_offset;
        }
        if (m->rstrip)
            while (stop < b && is_ws_at(c, stop)) stop += utf8_char_len(t, stop, b);
        if (start_offset < start && added_gap(c, set, start_offset, start)) return -1;
        /* start < start_offset only after an rstrip took whitespace this token begins with */
        size_t s0 = start < start_offset ? start_offset : start, s1 = stop > s0 ? stop : s0;
        size_t os0 = s1 > s0 ? ostart(c, s0) : opos(c, s0), os1 = s1 > s0 ? oend(c, s1 - 1) : os0;
        if (out_push(c, m->id, os0, os1)) return -1;
        start_offset = stop;
    }
    return added_gap(c, set, start_offset, b);
}

int sl_tokenizer_encode(const sl_tokenizer *tok, const char *text, size_t len, sl_encoding *out, sl_err *err) {
    if (tok->enc_why) return sl_errf_path(err, tok->path, "encoding unsupported: %s", tok->enc_why);
    if (len > UINT32_MAX - 1)
        return sl_errf_path(err, tok->path, "text of %zu bytes is too long to encode (4 GiB at most)", len);
    enc_ctx c;
    memset(&c, 0, sizeof c);
    c.tok = tok, c.orig_len = len, c.out = out, c.err = err;
    size_t n0 = out->n;
    c.first_out = n0;
    int rc = repair_utf8(&c, text ? text : "", text ? len : 0);
    int own_t = c.n_rep > 0;
    if (!rc) {
        c.md = pcre2_match_data_create(16, NULL);
        rc = c.md ? split_added(&c, 0, 0, c.tn) : oom(&c);
    }
    if (own_t) free((void *)c.t);
    free(c.rep_t);
    free(c.rep_o);
    free(c.rep_n);
    pcre2_match_data_free(c.md);
    pcre2_match_context_free(c.mctx);
    pcre2_jit_stack_free(c.jstack);
    for (int i = 0; i < MAX_STEPS; i++) sl_buf_free(&c.scratch[i]);
    sl_buf_free(&c.word);
    sl_buf_free(&c.mapped);
    free(c.syms);
    free(c.heap);
    free(c.rid);
    free(c.rstart);
    free(c.rlen);
    if (rc) out->n = n0;
    return rc ? -1 : 0;
}
