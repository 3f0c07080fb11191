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
    char *match; /* what is looked for: the content, or for a normalized token with a
                    normalizer the normalized content (owned when != content) */
    size_t mlen;
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

enum { STEP_SPLIT, STEP_BYTELEVEL, STEP_METASPACE };
enum { SPLIT_ISOLATED, SPLIT_REMOVED, SPLIT_MERGED_PREV, SPLIT_MERGED_NEXT, SPLIT_CONTIGUOUS };
enum { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER };
typedef struct pt_step {
    int kind, behavior, add_prefix_space;
    pcre2_code *re; /* NULL: ByteLevel without regex */
    int invert;     /* Split */
    int prepend_scheme, split; /* Metaspace */
    char repl[4];   /* Metaspace replacement character, UTF-8 */
    unsigned char repl_len;
} pt_step;
#define MAX_STEPS 8

/* Normalizer steps (SentencePiece-style BPE): Prepend(pat), Replace(String pat, content). */
enum { NORM_PREPEND, NORM_REPLACE };
typedef struct norm_op {
    int kind;
    char *pat, *content;
    size_t pat_len, content_len;
} norm_op;
#define MAX_NORMS 8

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
    /* char_mode: BPE over characters (SentencePiece style: normalizer, Metaspace,
     * byte_fallback) instead of over GPT-2 byte characters */
    int char_mode, byte_fallback;
    norm_op norms[MAX_NORMS];
    int n_norms;
    int32_t bf_id[256];    /* char mode: id of "<0xAB>" for each byte, -1 if absent */
    int32_t ascii_id[128]; /* char mode: id of each ASCII character, -1 if absent */
    int32_t byte_id[256];      /* vocab id of each byte's GPT-2 character, -1 if absent */
    char byte_char[256][2];    /* each byte's GPT-2 character, UTF-8 */
    unsigned char byte_char_len[256];
    pair_map merges;
    str_map vocab; /* filled with ignore_merges, and in char mode */
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
    for (size_t i = 0; i < tok->n_added; i++) {
        if (tok->added[i].match != tok->added[i].content) free(tok->added[i].match);
        free(tok->added[i].content);
    }
    for (int i = 0; i < tok->n_norms; i++) free(tok->norms[i].pat), free(tok->norms[i].content);
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

/* How the decoder turns one vocabulary string into bytes: ByteLevel (GPT-2 table), or
 * in order the steps of a (Sequence of) Replace(String pattern, content), Metaspace
 * (its replacement character becomes a space) and ByteFallback ("<0xAB>" is the byte
 * 0xAB). Fuse and Strip work on the whole decoded text, not on one token: skipped. */
enum { DEC_REPLACE, DEC_BYTEFALLBACK };
typedef struct dec_step {
    int kind;
    const char *pat, *content; /* point into the JSON, alive while loading */
    size_t pat_len, content_len;
} dec_step;
#define MAX_DEC_STEPS 8
typedef struct dec_spec {
    int bytelevel, n;
    dec_step step[MAX_DEC_STEPS];
} dec_spec;

static void dec_add(dec_spec *d, json_t *dec) {
    const char *type = json_string_value(json_object_get(dec, "type"));
    if (!type || d->n == MAX_DEC_STEPS) return;
    dec_step *st = &d->step[d->n];
    if (strcmp(type, "ByteLevel") == 0)
        d->bytelevel = 1;
    else if (strcmp(type, "Metaspace") == 0) {
        json_t *r = json_object_get(dec, "replacement");
        st->kind = DEC_REPLACE;
        st->pat = json_is_string(r) ? json_string_value(r) : "\xE2\x96\x81";
        st->pat_len = json_is_string(r) ? json_string_length(r) : 3;
        st->content = " ", st->content_len = 1;
        d->n++;
    } else if (strcmp(type, "Replace") == 0) {
        json_t *p = json_object_get(json_object_get(dec, "pattern"), "String"), *c = json_object_get(dec, "content");
        if (json_is_string(p) && json_string_length(p) && json_is_string(c)) {
            st->kind = DEC_REPLACE;
            st->pat = json_string_value(p), st->pat_len = json_string_length(p);
            st->content = json_string_value(c), st->content_len = json_string_length(c);
            d->n++;
        }
    } else if (strcmp(type, "ByteFallback") == 0) {
        st->kind = DEC_BYTEFALLBACK;
        d->n++;
    }
}

static int hex_digit(char ch) {
    return ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
}

/* The byte a ByteFallback token "<0xAB>" stands for, or -1. Like HF's
 * u8::from_str_radix(&token[3..5], 16), which also takes "+A". */
static int byte_fallback_value(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int hi = hex_digit(s[3]), lo = hex_digit(s[4]);
    if (s[3] == '+' && lo >= 0) return lo;
    return hi >= 0 && lo >= 0 ? hi * 16 + lo : -1;
}

static char *spec_decode(const dec_spec *d, const char *s, size_t n, size_t *out_len) {
    sl_buf cur = {0}, next = {0};
    sl_buf_append(&cur, s, n);
    for (int k = 0; k < d->n && !cur.oom; k++) {
        const dec_step *st = &d->step[k];
        if (st->kind == DEC_BYTEFALLBACK) {
            int b = byte_fallback_value(cur.data, cur.len);
            if (b >= 0) cur.data[0] = (char)b, cur.len = 1;
            continue;
        }
        next.len = 0;
        for (size_t i = 0; i < cur.len;) {
            if (i + st->pat_len <= cur.len && memcmp(cur.data + i, st->pat, st->pat_len) == 0) {
                sl_buf_append(&next, st->content, st->content_len);
                i += st->pat_len;
            } else
                sl_buf_append(&next, cur.data + i++, 1);
        }
        sl_buf tmp = cur;
        cur = next, next = tmp;
    }
    sl_buf_free(&next);
    char *out = cur.oom ? NULL : malloc(cur.len + 1);
    if (out) memcpy(out, cur.data ? cur.data : "", cur.len), out[cur.len] = 0, *out_len = cur.len;
    sl_buf_free(&cur);
    return out;
}

static int set_token(sl_tokenizer *tok, const int *byte_map, json_int_t id, const char *s, size_t n,
                     const dec_spec *dec, int special, sl_err *err) {
    token_entry *t = &tok->tokens[id];
    free(t->bytes);
    if (dec && dec->bytelevel)
        t->bytes = byte_level_decode(byte_map, s, n, &t->len);
    else if (dec && dec->n)
        t->bytes = spec_decode(dec, s, n, &t->len);
    else {
        t->bytes = malloc(n + 1);
        if (t->bytes) memcpy(t->bytes, s, n), t->bytes[n] = 0, t->len = n;
    }
    t->special = special;
    return t->bytes ? 0 : sl_errf(err, "out of memory");
}


/* A normalized string, as HF's NormalizedString: bytes, and for each byte the range
 * [as, ae) of the (repaired) text it stands for. */
typedef struct nstr {
    char *s;
    uint32_t *as, *ae;
    size_t n, cap;
    int oom;
} nstr;

static inline size_t utf8_char_len(const char *s, size_t i, size_t n);

static int nstr_reserve(nstr *v, size_t add) {
    if (v->oom) return -1;
    if (v->n + add <= v->cap) return 0;
    size_t cap = v->cap ? v->cap : 64;
    while (cap < v->n + add) cap *= 2;
    char *s = realloc(v->s, cap);
    if (s) v->s = s;
    uint32_t *as = s ? realloc(v->as, cap * sizeof *as) : NULL;
    if (as) v->as = as;
    uint32_t *ae = as ? realloc(v->ae, cap * sizeof *ae) : NULL;
    if (!ae) return v->oom = 1, -1;
    v->ae = ae;
    v->cap = cap;
    return 0;
}

/* Appends n bytes, all standing for [a, e). */
static void nstr_push(nstr *v, const char *b, size_t n, uint32_t a, uint32_t e) {
    if (!n || nstr_reserve(v, n)) return;
    memcpy(v->s + v->n, b, n);
    for (size_t i = 0; i < n; i++) v->as[v->n + i] = a, v->ae[v->n + i] = e;
    v->n += n;
}

/* Appends bytes [i, i + n) of src with their ranges. */
static void nstr_copy(nstr *v, const nstr *src, size_t i, size_t n) {
    if (!n || nstr_reserve(v, n)) return;
    memcpy(v->s + v->n, src->s + i, n);
    memcpy(v->as + v->n, src->as + i, n * sizeof *v->as);
    memcpy(v->ae + v->n, src->ae + i, n * sizeof *v->ae);
    v->n += n;
}

static void nstr_free(nstr *v) {
    free(v->s);
    free(v->as);
    free(v->ae);
    memset(v, 0, sizeof *v);
}

/* dst = src with one normalizer step applied, the ranges moved as HF moves them:
 *   Prepend(p): only when src is not empty; the first character of p takes the range
 *     of src's first byte, the rest of p and src's first character the range of that
 *     character's last byte (NormalizedString::prepend);
 *   Replace(pat, content): leftmost non-overlapping occurrences; each byte of content
 *     takes the range of the occurrence's last byte (NormalizedString::replace). */
static void norm_apply(const norm_op *op, const nstr *src, nstr *dst) {
    dst->n = 0;
    dst->oom = src->oom;
    if (op->kind == NORM_PREPEND) {
        if (!src->n) return;
        size_t fl = utf8_char_len(src->s, 0, src->n);
        size_t l0 = op->pat_len ? utf8_char_len(op->pat, 0, op->pat_len) : 0;
        nstr_push(dst, op->pat, l0, src->as[0], src->ae[0]);
        nstr_push(dst, op->pat + l0, op->pat_len - l0, src->as[fl - 1], src->ae[fl - 1]);
        if (op->pat_len)
            nstr_push(dst, src->s, fl, src->as[fl - 1], src->ae[fl - 1]);
        else /* HF: the first character is then a new one at offset 0 */
            nstr_push(dst, src->s, fl, src->as[0], src->as[0]);
        nstr_copy(dst, src, fl, src->n - fl);
        return;
    }
    size_t pl = op->pat_len, i = 0, last = 0;
    while (i + pl <= src->n) {
        const char *hit = memchr(src->s + i, op->pat[0], src->n - i - pl + 1);
        if (!hit) break;
        i = (size_t)(hit - src->s);
        if (memcmp(hit, op->pat, pl) != 0) {
            i++;
            continue;
        }
        nstr_copy(dst, src, last, i - last);
        nstr_push(dst, op->content, op->content_len, src->as[i + pl - 1], src->ae[i + pl - 1]);
        i += pl;
        last = i;
    }
    nstr_copy(dst, src, last, src->n - last);
}

/* Runs the normalizer on *cur (using *alt as scratch); the result is in *cur. */
static void normalize(const sl_tokenizer *tok, nstr **cur, nstr **alt) {
    for (int k = 0; k < tok->n_norms; k++) {
        norm_apply(&tok->norms[k], *cur, *alt);
        nstr *t = *cur;
        *cur = *alt, *alt = t;
    }
}

/* HF matches a normalized added token by its content run through the normalizer. */
static int normalize_added(sl_tokenizer *tok) {
    nstr a = {0}, b = {0};
    int rc = 0;
    for (size_t k = 0; k < tok->n_added && !rc; k++) {
        added_tok *t = &tok->added[k];
        if (!t->normalized) continue;
        nstr *cur = &a, *alt = &b;
        cur->n = 0;
        nstr_push(cur, t->content, t->len, 0, (uint32_t)t->len);
        normalize(tok, &cur, &alt);
        if (!cur->oom && cur->n == t->len && memcmp(cur->s, t->content, t->len) == 0) continue; /* unchanged */
        if (cur->oom || !(t->match = malloc(cur->n + 1))) {
            t->match = t->content;
            rc = -1;
            break;
        }
        memcpy(t->match, cur->s ? cur->s : "", cur->n);
        t->match[cur->n] = 0;
        t->mlen = cur->n;
    }
    nstr_free(&a);
    nstr_free(&b);
    return rc;
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
        static const char *const behaviors[] = {"Isolated", "Removed", "MergedWithPrevious", "MergedWithNext",
                                                "Contiguous"};
        json_t *pat = json_object_get(pt, "pattern");
        json_t *rx = json_object_get(pat, "Regex"), *lit = json_object_get(pat, "String");
        const char *beh = json_string_value(json_object_get(pt, "behavior"));
        int b = -1;
        for (int k = 0; beh && k < 5; k++)
            if (strcmp(beh, behaviors[k]) == 0) b = k;
        if (b < 0) return unsupported(tok, "pre_tokenizer Split behavior %s", beh ? beh : "(none)");
        if (!json_is_string(rx) && !json_is_string(lit))
            return unsupported(tok, "pre_tokenizer Split needs a Regex or String pattern");
        json_t *p = json_is_string(rx) ? rx : lit;
        st->kind = STEP_SPLIT;
        st->behavior = b;
        st->invert = json_is_true(json_object_get(pt, "invert"));
        st->re = compile_re(tok, json_string_value(p), json_string_length(p), p == lit ? PCRE2_LITERAL : 0, 1);
        if (!st->re) return 1;
        tok->n_steps++;
        return 0;
    }
    if (strcmp(type, "Digits") == 0) { /* HF: split on char::is_numeric (\p{N}) */
        st->kind = STEP_SPLIT;
        st->behavior = json_is_true(json_object_get(pt, "individual_digits")) ? SPLIT_ISOLATED : SPLIT_CONTIGUOUS;
        st->re = compile_re(tok, "\\p{N}", PCRE2_ZERO_TERMINATED, 0, 0);
        if (!st->re) return tok->enc_why ? 1 : -1;
        tok->n_steps++;
        return 0;
    }
    if (strcmp(type, "Metaspace") == 0) {
        json_t *r = json_object_get(pt, "replacement"), *aps = json_object_get(pt, "add_prefix_space");
        json_t *sp = json_object_get(pt, "split");
        const char *ps = json_string_value(json_object_get(pt, "prepend_scheme"));
        const char *rs = json_is_string(r) ? json_string_value(r) : "\xE2\x96\x81";
        size_t rn = json_is_string(r) ? json_string_length(r) : 3;
        uint32_t cp;
        if (rn == 0 || rn > 4 || utf8_decode((const unsigned char *)rs, rn, &cp) != rn)
            return unsupported(tok, "pre_tokenizer Metaspace replacement must be one character");
        st->kind = STEP_METASPACE;
        memcpy(st->repl, rs, rn);
        st->repl_len = (unsigned char)rn;
        st->prepend_scheme = !ps || strcmp(ps, "always") == 0 ? PREPEND_ALWAYS
                             : strcmp(ps, "first") == 0       ? PREPEND_FIRST
                             : strcmp(ps, "never") == 0       ? PREPEND_NEVER
                                                              : -1;
        if (st->prepend_scheme < 0) return unsupported(tok, "pre_tokenizer Metaspace prepend_scheme %s", ps);
        if (json_is_false(aps)) st->prepend_scheme = PREPEND_NEVER; /* HF's older form */
        st->split = sp ? json_is_true(sp) : 1;
        tok->n_steps++;
        return 0;
    }
    return unsupported(tok, "unsupported pre_tokenizer %s", type);
}

/* Appends the steps of one normalizer object. Returns 0, 1 (unsupported) or -1. */
static int parse_normalizer(sl_tokenizer *tok, json_t *nz, int depth) {
    if (!nz || json_is_null(nz)) return 0;
    const char *type = json_string_value(json_object_get(nz, "type"));
    if (type && strcmp(type, "Sequence") == 0 && depth < 4) {
        size_t i;
        json_t *v;
        json_array_foreach(json_object_get(nz, "normalizers"), i, v) {
            int rc = parse_normalizer(tok, v, depth + 1);
            if (rc) return rc;
        }
        return 0;
    }
    if (!type || (strcmp(type, "Prepend") != 0 && strcmp(type, "Replace") != 0))
        return unsupported(tok, "unsupported normalizer %s", type ? type : "(no type)");
    if (tok->n_norms == MAX_NORMS) return unsupported(tok, "normalizer has too many steps");
    norm_op *op = &tok->norms[tok->n_norms];
    json_t *pat, *content;
    if (strcmp(type, "Prepend") == 0) {
        op->kind = NORM_PREPEND;
        pat = json_object_get(nz, "prepend");
        content = NULL;
        if (!json_is_string(pat)) return unsupported(tok, "normalizer Prepend without a prepend string");
    } else {
        op->kind = NORM_REPLACE;
        json_t *p = json_object_get(nz, "pattern");
        pat = json_object_get(p, "String");
        content = json_object_get(nz, "content");
        if (json_is_string(json_object_get(p, "Regex")))
            return unsupported(tok, "normalizer Replace with a Regex pattern (only String)");
        if (!json_is_string(pat) || !json_is_string(content))
            return unsupported(tok, "normalizer Replace needs a String pattern and a content");
        if (json_string_length(pat) == 0) return unsupported(tok, "normalizer Replace with an empty pattern");
    }
    op->pat_len = json_string_length(pat);
    op->pat = malloc(op->pat_len + 1);
    op->content_len = content ? json_string_length(content) : 0;
    op->content = malloc(op->content_len + 1);
    tok->n_norms++; /* freed with the tokenizer from here on */
    if (!op->pat || !op->content) return -1;
    memcpy(op->pat, json_string_value(pat), op->pat_len + 1);
    if (content) memcpy(op->content, json_string_value(content), op->content_len + 1);
    else op->content[0] = 0;
    return 0;
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
        a->match = a->content, a->mlen = a->len;
        a->id = (int32_t)json_integer_value(json_object_get(v, "id"));
        a->single_word = json_is_true(json_object_get(v, "single_word"));
        a->lstrip = json_is_true(json_object_get(v, "lstrip"));
        a->rstrip = json_is_true(json_object_get(v, "rstrip"));
        a->normalized = nz ? json_is_true(nz) : 1;
        tok->n_added++;
    }
    return 0;
}

/* The two sets of added tokens to match, by what each looks for (HF's two tries). */
static int build_added_sets(sl_tokenizer *tok) {
    added_key *keys = malloc((tok->n_added ? tok->n_added : 1) * sizeof *keys);
    if (!keys) return -1;
    for (int s = 0; s < 2; s++) {
        added_set *set = &tok->sets[s];
        set->order = malloc((tok->n_added ? tok->n_added : 1) * sizeof *set->order);
        if (!set->order) return free(keys), -1;
        for (size_t k = 0; k < tok->n_added; k++)
            if (tok->added[k].normalized == s && tok->added[k].mlen)
                keys[set->n++] = (added_key){(unsigned char)tok->added[k].match[0], tok->added[k].mlen, (uint32_t)k};
        qsort(keys, set->n, sizeof *keys, cmp_added);
        for (size_t k = 0; k < set->n; k++) set->order[k] = keys[k].index;
        size_t k = 0;
        for (int b = 0; b <= 256; b++) {
            while (k < set->n && (unsigned char)tok->added[set->order[k]].match[0] < b) k++;
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

/* Whether the pre-tokenizer steps are those of byte-level BPE: one ByteLevel, last,
 * after Split steps that regex_split handles. Returns 1, 0 (no ByteLevel at all: char
 * mode), or records why not and returns -2 (or -1 when out of memory). */
static int bytelevel_steps(sl_tokenizer *tok) {
    int n_bl = 0, n_ms = 0;
    for (int i = 0; i < tok->n_steps; i++) {
        n_bl += tok->steps[i].kind == STEP_BYTELEVEL;
        n_ms += tok->steps[i].kind == STEP_METASPACE;
    }
    if (!n_bl) return 0;
    int rc = 0;
    if (n_bl != 1 || n_ms || tok->steps[tok->n_steps - 1].kind != STEP_BYTELEVEL)
        rc = unsupported(tok, "pre_tokenizer must end in one ByteLevel step (byte-level BPE)");
    for (int i = 0; i < tok->n_steps && !rc; i++) {
        const pt_step *st = &tok->steps[i];
        if (st->kind != STEP_SPLIT) continue;
        if (st->invert)
            rc = unsupported(tok, "pre_tokenizer Split with invert");
        else if (st->behavior != SPLIT_ISOLATED && st->behavior != SPLIT_REMOVED)
            rc = unsupported(tok, "pre_tokenizer Split behavior %s (only Isolated, Removed)",
                             st->behavior == SPLIT_MERGED_PREV   ? "MergedWithPrevious"
                             : st->behavior == SPLIT_MERGED_NEXT ? "MergedWithNext"
                                                                 : "Contiguous");
    }
    if (!rc && tok->n_norms)
        rc = unsupported(tok, "normalizer %s with a ByteLevel pre_tokenizer",
                         tok->norms[0].kind == NORM_PREPEND ? "Prepend" : "Replace");
    return rc < 0 ? -1 : rc ? -2 : 1;
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
    json_t *pre = json_object_get(root, "pre_tokenizer");
    json_t *merges = json_object_get(model, "merges");
    json_t *dropout = json_object_get(model, "dropout"), *unk = json_object_get(model, "unk_token");
    const char *csp = json_string_value(json_object_get(model, "continuing_subword_prefix"));
    const char *ews = json_string_value(json_object_get(model, "end_of_word_suffix"));

    if (!mtype || strcmp(mtype, "BPE") != 0)
        rc = unsupported(tok, "model type %s (only BPE)", mtype ? mtype : "(none)");
    else if ((rc = parse_normalizer(tok, norm, 0)) != 0)
        ;
    else if (json_is_number(dropout) && json_number_value(dropout) > 0)
        rc = unsupported(tok, "BPE dropout");
    else if ((csp && *csp) || (ews && *ews))
        rc = unsupported(tok, "BPE continuing_subword_prefix / end_of_word_suffix");
    else if (!json_is_array(merges))
        rc = unsupported(tok, "model.merges must be an array");
    if (rc) return rc < 0 ? -1 : 0;

    if (tok->n_norms && normalize_added(tok)) return -1;
    if (build_added_sets(tok)) return -1;
    if (pre && !json_is_null(pre)) {
        rc = parse_pre_tokenizer(tok, pre, 0);
        if (rc) return rc < 0 || !tok->enc_why ? -1 : 0; /* no reason recorded: out of memory */
    }
    rc = bytelevel_steps(tok);
    if (rc == -1) return -1;
    if (rc == -2) return 0;
    tok->char_mode = rc == 0;
    rc = 0;
    tok->byte_fallback = json_is_true(json_object_get(model, "byte_fallback"));

    if (tok->char_mode) {
        /* SentencePiece style: BPE over characters, "<0xAB>" tokens for byte_fallback */
        for (int b = 0; b < 256; b++) {
            char name[8];
            snprintf(name, sizeof name, "<0x%02X>", b);
            tok->bf_id[b] = vocab_lookup(vocab, name, 6);
            if (b < 128) {
                char ch = (char)b;
                tok->ascii_id[b] = vocab_lookup(vocab, &ch, 1);
            }
        }
    } else {
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
        if (missing && tok->byte_fallback) {
            rc = unsupported(tok, "byte_fallback with an incomplete byte alphabet");
            return rc < 0 ? -1 : 0;
        }
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

    if (tok->ignore_merges || tok->char_mode) {
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
    json_t *decoder = json_object_get(root, "decoder");
    const char *dec_type = json_string_value(json_object_get(decoder, "type"));
    const char *pre_type = json_string_value(json_object_get(json_object_get(root, "pre_tokenizer"), "type"));
    int byte_map[BYTE_MAP_SIZE];
    dec_spec dec;
    memset(&dec, 0, sizeof dec);
    build_byte_map(byte_map);
    if (!dec_type && pre_type && strcmp(pre_type, "ByteLevel") == 0)
        dec.bytelevel = 1;
    else if (dec_type && strcmp(dec_type, "Sequence") == 0) {
        size_t k;
        json_t *v;
        json_array_foreach(json_object_get(decoder, "decoders"), k, v) dec_add(&dec, v);
    } else if (dec_type)
        dec_add(&dec, decoder);

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
        if (set_token(tok, byte_map, json_integer_value(val), key, strlen(key), &dec, 0, err)) goto fail;
    }
    json_array_foreach(added, i, val) {
        json_t *content = json_object_get(val, "content");
        if (set_token(tok, byte_map, json_integer_value(json_object_get(val, "id")), json_string_value(content),
                      json_string_length(content), NULL, json_is_true(json_object_get(val, "special")), err))
            goto fail;
    }
    if (setup_encoder(tok, root, model, vocab, added)) {
        sl_errf(err, "out of memory");
        goto fail;
    }
    /* HF decodes a normalized added token from its normalized form ("FIXME" after
     * Prepend("▁") is "▁FIXME", shown " FIXME"), through the decoder */
    for (size_t k = 0; k < tok->n_added; k++) {
        const added_tok *a = &tok->added[k];
        if (a->match != a->content &&
            set_token(tok, byte_map, a->id, a->match, a->mlen, &dec, tok->tokens[a->id].special, err))
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

/* A span [a, b) of a piece after a Split step; m: it is a match (removed with Removed). */
typedef struct span {
    size_t a, b;
    int m;
} span;

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
    /* char mode: the normalized text between two non-normalized added tokens (and a
     * scratch copy), what each Metaspace step makes of its piece, each Split step's spans */
    nstr norm[2];
    nstr ms[MAX_STEPS];
    struct span *spans[MAX_STEPS];
    size_t spans_cap[MAX_STEPS];
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

static int merge_syms(enc_ctx *c, size_t n);

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
    return merge_syms(c, n);
}

/* Merges the n symbols in c->syms; the result goes to c->rid, rstart, rlen. */
static int merge_syms(enc_ctx *c, size_t n) {
    const sl_tokenizer *tok = c->tok;
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

/* Oniguruma's find_iter, as HF's Split walks matches: the next match of re in
 * s[0..n) from it->off, an empty match right after the previous one skipped. 1 with
 * [*ms, *me), 0 when there is none left, -1 on a matcher error. */
typedef struct find_iter {
    size_t off, last_end;
    int have_last;
} find_iter;

static int next_match(enc_ctx *c, const pcre2_code *re, const char *s, size_t n, find_iter *it, size_t *ms,
                      size_t *me) {
    while (it->off <= n) {
        int rc = match_at(c, re, s, n, it->off, 0);
        if (rc == PCRE2_ERROR_NOMATCH) return 0;
        if (rc == -1000) return -1;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
        *ms = ov[0], *me = ov[1];
        if (*ms == *me && it->have_last && it->last_end == *me) {
            it->off += it->off < n ? utf8_char_len(s, it->off, n) : 1;
            continue;
        }
        it->off = it->last_end = *me, it->have_last = 1;
        return 1;
    }
    return 0;
}

/* Splits a piece by the step's regex, matches and the text between them as their
 * own pieces (Isolated) or only the text between (Removed), like HF's Split. */
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
    size_t prev = 0, ms, me;
    find_iter it = {0};
    int rc;
    while ((rc = next_match(c, st->re, s, n, &it, &ms, &me)) == 1) {
        if (prev != ms && sub_piece(c, k, p, prev, ms)) return -1;
        if (st->behavior == SPLIT_ISOLATED && sub_piece(c, k, p, ms, me)) return -1;
        prev = me;
    }
    if (rc < 0) return -1;
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

/* ---- char mode: SentencePiece-style BPE (normalizer, Metaspace, byte_fallback) ---- */

/* HF's BPE::merge_word over characters: each character's vocab id; a character not in
 * the vocab becomes the "<0xAB>" tokens of its bytes with byte_fallback (when they all
 * exist), else <unk> (one for a run of them with fuse_unk), else it is dropped. HF
 * lays the symbols end to end (its offsets are running sums of their lengths, so a
 * dropped character, or a byte-fallback character HF puts before a pending <unk>,
 * moves the later offsets): reproduced. */
static int cm_syms(enc_ctx *c, const char *w, size_t wn, size_t *n_out) {
    const sl_tokenizer *tok = c->tok;
    if (grow((void **)&c->syms, &c->syms_cap, wn, sizeof *c->syms)) return oom(c);
    size_t n = 0, pos = 0, unk_len = 0;
    int have_unk = 0;
    for (size_t i = 0; i < wn;) {
        size_t l = utf8_char_len(w, i, wn);
        unsigned char ch = (unsigned char)w[i];
        int32_t id = ch < 0x80 ? tok->ascii_id[ch] : str_map_get(&tok->vocab, w + i, l);
        if (id >= 0) {
            if (have_unk) push_sym(c, &n, tok->unk_id, pos, unk_len), pos += unk_len, have_unk = 0;
            push_sym(c, &n, id, pos, l), pos += l;
            i += l;
            continue;
        }
        if (tok->byte_fallback) {
            size_t k = 0;
            while (k < l && tok->bf_id[(unsigned char)w[i + k]] >= 0) k++;
            if (k == l) {
                for (k = 0; k < l; k++) push_sym(c, &n, tok->bf_id[(unsigned char)w[i + k]], pos++, 1);
                i += l;
                continue;
            }
        }
        if (tok->unk_id >= 0) {
            if (have_unk && tok->fuse_unk)
                unk_len += l;
            else {
                if (have_unk) push_sym(c, &n, tok->unk_id, pos, unk_len), pos += unk_len;
                have_unk = 1, unk_len = l;
            }
        }
        i += l;
    }
    if (have_unk) push_sym(c, &n, tok->unk_id, pos, unk_len);
    *n_out = n;
    return 0;
}

/* The text's byte range of bytes [s0, s1) of v (HF: the first byte's start to the
 * last byte's end); an empty range sits where byte s0 starts. */
static void view_range(const enc_ctx *c, const nstr *v, size_t s0, size_t s1, size_t *os, size_t *oe) {
    if (s1 > s0 && v->ae[s1 - 1] > v->as[s0]) {
        *os = ostart(c, v->as[s0]);
        *oe = oend(c, v->ae[s1 - 1] - 1);
        return;
    }
    size_t p = s0 < v->n ? v->as[s0] : v->n ? v->ae[v->n - 1] : 0;
    *os = *oe = opos(c, p);
}

/* The model on one pre-token: bytes [a, b) of v. */
static int cm_word(enc_ctx *c, const nstr *v, size_t a, size_t b) {
    const sl_tokenizer *tok = c->tok;
    const char *w = v->s + a;
    size_t wn = b - a;
    if (wn > INT32_MAX / 2) return sl_errf_path(c->err, tok->path, "pre-token too long to encode");
    int cacheable = wn <= CACHE_MAX_WORD, done = 0;
    uint64_t h = 0;
    if (cacheable) {
        h = hash_bytes(w, wn);
        done = cache_get(c, h, w, wn);
    }
    if (!done && tok->ignore_merges) {
        int32_t id = str_map_get(&tok->vocab, w, wn);
        if (id >= 0) {
            if (res_reserve(c, 1)) return oom(c);
            c->rid[0] = id, c->rstart[0] = 0, c->rlen[0] = (uint32_t)wn, c->rn = 1;
            done = 1;
        }
    }
    if (!done) {
        size_t n = 0;
        if (cm_syms(c, w, wn, &n) || merge_syms(c, n)) return -1;
        if (cacheable) cache_put(c, h, w, wn);
    }
    for (size_t i = 0; i < c->rn; i++) {
        size_t s, e, ns = a + c->rstart[i], ne = ns + c->rlen[i];
        view_range(c, v, ns, ne > b ? b : ne, &s, &e);
        if (out_push(c, c->rid[i], s, e)) return -1;
    }
    return 0;
}

static int cm_step(enc_ctx *c, int k, const nstr *v, size_t a, size_t b);

/* HF's Metaspace pre-tokenizer on bytes [a, b) of v: spaces become the replacement
 * character, which is prepended (always; or "first": only to the piece that starts the
 * text) unless the piece already starts with it; with split, each replacement
 * character begins a new piece (SplitDelimiterBehavior::MergedWithNext). */
static int cm_metaspace(enc_ctx *c, int k, const nstr *v, size_t a, size_t b) {
    const pt_step *st = &c->tok->steps[k];
    nstr *d = &c->ms[k];
    d->n = 0;
    size_t rl = st->repl_len;
    int starts = v->s[a] == ' ' || (b - a >= rl && memcmp(v->s + a, st->repl, rl) == 0);
    size_t i = a;
    if (!starts && (st->prepend_scheme == PREPEND_ALWAYS || (st->prepend_scheme == PREPEND_FIRST && v->as[a] == 0))) {
        size_t fl = utf8_char_len(v->s, a, b);
        nstr_push(d, st->repl, rl, v->as[a], v->ae[a]);
        nstr_push(d, v->s + a, fl, v->as[a + fl - 1], v->ae[a + fl - 1]);
        i = a + fl;
    }
    size_t last = i;
    for (; i < b; i++)
        if (v->s[i] == ' ') {
            nstr_copy(d, v, last, i - last);
            nstr_push(d, st->repl, rl, v->as[i], v->ae[i]);
            last = i + 1;
        }
    nstr_copy(d, v, last, b - last);
    if (d->oom) return oom(c);
    if (!st->split) return cm_step(c, k + 1, d, 0, d->n);
    size_t start = 0;
    for (size_t j = 1; j + rl <= d->n; j++)
        if (memcmp(d->s + j, st->repl, rl) == 0) {
            if (cm_step(c, k + 1, d, start, j)) return -1;
            start = j;
        }
    return cm_step(c, k + 1, d, start, d->n);
}

static int add_span(enc_ctx *c, int k, size_t *n, size_t a, size_t b, int m) {
    if (grow((void **)&c->spans[k], &c->spans_cap[k], *n + 1, sizeof(span))) return oom(c);
    c->spans[k][(*n)++] = (span){a, b, m};
    return 0;
}

/* HF's Split pre-tokenizer on bytes [a, b) of v: the pattern's matches (Oniguruma's
 * find_iter, as regex_split), flagged, inverted with invert, then combined by the
 * behavior as NormalizedString::split does; empty pieces are dropped. */
static int cm_split(enc_ctx *c, int k, const nstr *v, size_t a, size_t b) {
    const pt_step *st = &c->tok->steps[k];
    const char *s = v->s + a;
    size_t n = b - a, cnt = 0, prev = 0, ms, me;
    find_iter it = {0};
    int rc;
    while ((rc = next_match(c, st->re, s, n, &it, &ms, &me)) == 1) {
        if (prev != ms && add_span(c, k, &cnt, prev, ms, 0)) return -1;
        if (add_span(c, k, &cnt, ms, me, 1)) return -1;
        prev = me;
    }
    if (rc < 0) return -1;
    if (prev != n && add_span(c, k, &cnt, prev, n, 0)) return -1;
    span *sp = c->spans[k];
    size_t out = 0;
    int prev_m = 0;
    if (st->behavior == SPLIT_MERGED_NEXT) { /* HF folds from the end */
        for (size_t i = cnt; i-- > 0;) {
            int m = sp[i].m != st->invert;
            if (m && !prev_m && out)
                sp[cnt - out].a = sp[i].a; /* extends the piece after it */
            else
                sp[cnt - ++out] = (span){sp[i].a, sp[i].b, 0};
            prev_m = m;
        }
        memmove(sp, sp + cnt - out, out * sizeof *sp);
    } else
        for (size_t i = 0; i < cnt; i++) {
            int m = sp[i].m != st->invert;
            span x = {sp[i].a, sp[i].b, st->behavior == SPLIT_REMOVED && m};
            if (out && ((st->behavior == SPLIT_MERGED_PREV && m && !prev_m) ||
                        (st->behavior == SPLIT_CONTIGUOUS && m == prev_m)))
                sp[out - 1].b = x.b;
            else
                sp[out++] = x;
            prev_m = m;
        }
    for (size_t i = 0; i < out; i++) {
        span x = c->spans[k][i]; /* the array may move: deeper steps use their own */
        if (!x.m && cm_step(c, k + 1, v, a + x.a, a + x.b)) return -1;
    }
    return 0;
}

static int cm_step(enc_ctx *c, int k, const nstr *v, size_t a, size_t b) {
    if (a >= b) return 0; /* HF drops empty pieces */
    if (k == c->tok->n_steps) return cm_word(c, v, a, b);
    if (c->tok->steps[k].kind == STEP_METASPACE) return cm_metaspace(c, k, v, a, b);
    return cm_split(c, k, v, a, b);
}

/* ---- added tokens ---- */

/* Added tokens are looked for in the text itself (t, tn: c->t, c->tn), or in char mode
 * for normalized ones in the normalized text (v). */
static int char_is(enc_ctx *c, const pcre2_code *re, const char *t, size_t tn, size_t i) {
    return match_at(c, re, t + i, utf8_char_len(t, i, tn), 0, PCRE2_ANCHORED) >= 0;
}

static int is_ws_at(enc_ctx *c, const char *t, size_t tn, size_t i) {
    unsigned char ch = (unsigned char)t[i];
    if (ch < 0x80) return ch == ' ' || (ch >= '\t' && ch <= '\r');
    return char_is(c, c->tok->re_ws, t, tn, i);
}

static int is_word_at(enc_ctx *c, const char *t, size_t tn, size_t i) {
    unsigned char ch = (unsigned char)t[i];
    if (ch < 0x80) return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_';
    return char_is(c, c->tok->re_word, t, tn, i);
}

/* Start of the character that ends at i (i > a). */
static size_t char_before(const char *t, size_t a, size_t i) {
    do i--;
    while (i > a && ((unsigned char)t[i] & 0xC0) == 0x80);
    return i;
}

static int split_added(enc_ctx *c, int set, const nstr *v, size_t a, size_t b);

/* Char mode: text [a, b) between non-normalized added tokens is normalized (HF's
 * extract_and_normalize), then searched for the normalized added tokens. */
static int cm_gap(enc_ctx *c, size_t a, size_t b) {
    nstr *cur = &c->norm[0], *alt = &c->norm[1];
    cur->n = 0;
    for (size_t i = a; i < b;) {
        size_t l = utf8_char_len(c->t, i, b);
        nstr_push(cur, c->t + i, l, (uint32_t)i, (uint32_t)(i + l));
        i += l;
    }
    normalize(c->tok, &cur, &alt);
    if (cur->oom) return oom(c);
    return split_added(c, 1, cur, 0, cur->n);
}

static int added_gap(enc_ctx *c, int set, const nstr *v, size_t a, size_t b) {
    if (a >= b) return 0;
    if (c->tok->char_mode) return set == 0 ? cm_gap(c, a, b) : cm_step(c, 0, v, a, b);
    if (set == 0) return split_added(c, 1, NULL, a, b);
    piece p = {a, b, 0};
    return apply_step(c, 0, p);
}

/* HF's AddedVocabulary::find_matches on the segment [a, b) of the text (v NULL) or of
 * v: leftmost-longest matches, each then checked for single_word and widened by
 * lstrip/rstrip. */
static int split_added(enc_ctx *c, int set, const nstr *v, size_t a, size_t b) {
    const sl_tokenizer *tok = c->tok;
    const added_set *S = &tok->sets[set];
    if (S->n == 0) return added_gap(c, set, v, a, b);
    const char *t = v ? v->s : c->t;
    size_t tn = v ? v->n : c->tn;
    size_t start_offset = a, pos = a;
    while (pos < b) {
        unsigned char ch = (unsigned char)t[pos];
        const added_tok *m = NULL;
        for (uint32_t k = S->first[ch]; k < S->first[ch + 1]; k++) {
            const added_tok *x = &tok->added[S->order[k]];
            if (x->mlen <= b - pos && memcmp(t + pos, x->match, x->mlen) == 0) {
                m = x;
                break;
            }
        }
        if (!m) {
            pos++;
            continue;
        }
        size_t start = pos, stop = pos + m->mlen;
        pos = stop; /* the matcher goes on after the raw match */
        if (m->single_word) {
            int start_space = start == a || !is_word_at(c, t, tn, char_before(t, a, start));
            int stop_space = stop == b || !is_word_at(c, t, tn, stop);
            if (!start_space || !stop_space) continue;
        }
        if (m->lstrip) {
            size_t ns = start;
            while (ns > a) {
                size_t q = char_before(t, a, ns);
                if (!is_ws_at(c, t, tn, q)) break;
                ns = q;
            }
            start = ns > start_offset ? ns : start_offset;
        }
        if (m->rstrip)
            while (stop < b && is_ws_at(c, t, tn, stop)) stop += utf8_char_len(t, stop, b);
        if (start_offset < start && added_gap(c, set, v, start_offset, start)) return -1;
        /* start < start_offset only after an rstrip took whitespace this token begins with */
        size_t s0 = start < start_offset ? start_offset : start, s1 = stop > s0 ? stop : s0, os0, os1;
        if (v)
            view_range(c, v, s0, s1, &os0, &os1);
        else
            os0 = s1 > s0 ? ostart(c, s0) : opos(c, s0), os1 = s1 > s0 ? oend(c, s1 - 1) : os0;
        if (out_push(c, m->id, os0, os1)) return -1;
        start_offset = stop;
    }
    return added_gap(c, set, v, start_offset, b);
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
        rc = c.md ? split_added(&c, 0, NULL, 0, c.tn) : oom(&c);
    }
    if (own_t) free((void *)c.t);
    free(c.rep_t);
    free(c.rep_o);
    free(c.rep_n);
    pcre2_match_data_free(c.md);
    pcre2_match_context_free(c.mctx);
    pcre2_jit_stack_free(c.jstack);
    for (int i = 0; i < MAX_STEPS; i++) {
        sl_buf_free(&c.scratch[i]);
        nstr_free(&c.ms[i]);
        free(c.spans[i]);
    }
    nstr_free(&c.norm[0]);
    nstr_free(&c.norm[1]);
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
