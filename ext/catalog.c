/* catalog.c: resolving extractions and caching their opened results. */
#include "catalog.h"

#include <jansson.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

SQLITE_EXTENSION_INIT3

#define CACHE_SLOTS 4

struct sl_catalog {
    sl_ctx *ctx;                            /* its tokenizers */
    sl_open_extraction *slots[CACHE_SLOTS]; /* slot 0 most recently used */
};

sl_catalog *sl_catalog_new(sl_ctx *ctx) {
    sl_catalog *cat = calloc(1, sizeof *cat);
    if (cat) cat->ctx = ctx;
    return cat;
}

enum { TT_PRESENT = 1, TT_RAW = 2 }; /* in the vocabulary; its bytes are valid UTF-8 as they are */

struct sl_token_texts {
    int state;      /* 0 not built, 1 built, -1 could not be built (decode per use) */
    int32_t n;      /* vocabulary size */
    uint32_t *off;  /* text of id i: data[off[i] .. off[i + 1]) */
    uint8_t *flags; /* TT_* */
    char *data;
};

static void texts_free(struct sl_token_texts *t) {
    if (!t) return;
    free(t->off);
    free(t->flags);
    free(t->data);
    free(t);
}

static void texts_build(struct sl_token_texts *t, const sl_tokenizer *tok) {
    t->state = -1;
    int32_t n = sl_tokenizer_vocab_size(tok);
    if (n <= 0) return;
    sl_buf data = {0};
    t->off = malloc(((size_t)n + 1) * sizeof *t->off);
    t->flags = malloc((size_t)n);
    if (!t->off || !t->flags) goto fail;
    for (int32_t i = 0; i < n; i++) {
        size_t len, at = data.len;
        const char *bytes = sl_tokenizer_token_bytes(tok, i, &len);
        t->off[i] = (uint32_t)at;
        t->flags[i] = 0;
        if (bytes) {
            sl_utf8_sanitize(&data, bytes, len);
            /* A repair only ever lengthens the text (1 byte -> 3). */
            t->flags[i] = TT_PRESENT | (data.len - at == len ? TT_RAW : 0);
        }
        if (data.oom || data.len > UINT32_MAX) goto fail;
    }
    t->off[n] = (uint32_t)data.len;
    t->data = data.data;
    t->n = n;
    t->state = 1;
    return;
fail:
    sl_buf_free(&data);
    free(t->off);
    free(t->flags);
    t->off = NULL;
    t->flags = NULL;
}

/* The table, built on first use; NULL without a tokenizer or memory. */
static const struct sl_token_texts *texts_of(const sl_open_extraction *x) {
    struct sl_token_texts *t = x->texts;
    if (!t || !x->tok) return NULL;
    if (t->state == 0) texts_build(t, x->tok);
    return t->state == 1 ? t : NULL;
}

/* The decimal id, without snprintf (per window token when there is no tokenizer). */
static void append_id(sl_buf *out, int32_t token) {
    char num[16], *p = num + sizeof num;
    uint32_t u = token < 0 ? 0u - (uint32_t)token : (uint32_t)token;
    do *--p = (char)('0' + u % 10);
    while (u /= 10);
    if (token < 0) *--p = '-';
    sl_buf_append(out, p, (size_t)(num + sizeof num - p));
}

static void open_free(sl_ctx *ctx, sl_open_extraction *x) {
    if (!x) return;
    texts_free(x->texts);
    sl_findex_close(x->index);
    if (x->tokens_state == 1) sl_tokfile_close(&x->tokens);
    sl_results_close(&x->res);
    sl_tokenizer_release(ctx, x->tok);
    free(x->store);
    free(x);
}

void sl_catalog_free(sl_catalog *cat) {
    if (!cat) return;
    for (int i = 0; i < CACHE_SLOTS; i++) open_free(cat->ctx, cat->slots[i]);
    free(cat);
}

/* Identity of a store's results file, so a cached mapping is dropped when the
 * store was rebuilt (same id and path, new file). */
static int results_identity(const char *store, struct stat *sb) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", store, SL_RESULTS_FILE);
    return stat(path, sb);
}

static int same_file(const struct stat *a, const struct stat *b) {
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
           a->st_mtim.tv_nsec == b->st_mtim.tv_nsec && a->st_size == b->st_size;
}

int sl_extractions_ensure(sqlite3 *db, char **msg) {
    int rc = sqlite3_exec(db, SL_EXTRACTIONS_DDL ";" SL_LABELS_DDL, NULL, NULL, msg);
    if (rc != SQLITE_OK) return rc;
    static const struct {
        const char *name, *definition;
    } added[] = {{"dead_threshold", SL_DEAD_THRESHOLD_COLUMN},
                 {"dense_threshold", SL_DENSE_THRESHOLD_COLUMN},
                 {"paths", SL_PATHS_COLUMN}};
    sqlite3_stmt *q = NULL;
    rc = sqlite3_prepare_v2(db, "SELECT 1 FROM pragma_table_info('extractions', 'main') WHERE name = ?1", -1, &q, NULL);
    for (size_t i = 0; rc == SQLITE_OK && i < sizeof added / sizeof added[0]; i++) {
        sqlite3_bind_text(q, 1, added[i].name, -1, SQLITE_STATIC);
        int present = sqlite3_step(q) == SQLITE_ROW;
        sqlite3_reset(q);
        if (present) continue;
        char *sql = sqlite3_mprintf("ALTER TABLE main.extractions ADD COLUMN %s", added[i].definition);
        rc = sql ? sqlite3_exec(db, sql, NULL, NULL, msg) : SQLITE_NOMEM;
        sqlite3_free(sql);
    }
    sqlite3_finalize(q);
    return rc;
}

sl_open_extraction *sl_catalog_acquire(sl_ctx *ctx, sqlite3 *db, int has_id, int64_t id, const char *fn,
                                       char **errmsg) {
    sl_catalog *cat = ctx->catalog;
    sl_extraction_row row;
    if (sl_extraction_lookup(db, has_id, id, fn, &row, errmsg)) return NULL;
    sl_open_extraction *x = NULL;
    if (!row.status || strcmp(row.status, "done") != 0) {
        *errmsg = sqlite3_mprintf("%s: extraction %lld is %s, not done", fn, (long long)row.id,
                                  row.status ? row.status : "NULL");
        goto done;
    }
    if (!row.store) {
        *errmsg = sqlite3_mprintf("%s: extraction %lld has no store", fn, (long long)row.id);
        goto done;
    }
    struct stat now;
    int have_file = results_identity(row.store, &now) == 0;
    for (int i = 0; i < CACHE_SLOTS; i++) {
        x = cat->slots[i];
        if (x && x->id == row.id && have_file && strcmp(x->store, row.store) == 0 && same_file(&x->file, &now)) {
            memmove(&cat->slots[1], &cat->slots[0], (size_t)i * sizeof cat->slots[0]);
            cat->slots[0] = x;
            x->refs++;
            goto done;
        }
    }
    sl_err err;
    if (!(x = calloc(1, sizeof *x)) || !(x->store = strdup(row.store))) {
        *errmsg = sqlite3_mprintf("%s: out of memory", fn);
        goto fail;
    }
    x->id = row.id;
    if (have_file) x->file = now;
    x->texts = calloc(1, sizeof *x->texts); /* NULL: tokens decoded per use */
    if (sl_results_open(&x->res, x->store, &err)) {
        *errmsg = sqlite3_mprintf("%s: extraction %lld: %s", fn, (long long)row.id, err.msg);
        goto fail;
    }
    if (row.tokenizer && !(x->tok = sl_tokenizer_acquire(ctx, row.tokenizer, &err))) {
        *errmsg = sqlite3_mprintf("%s: extraction %lld: its tokenizer cannot be loaded, so token texts cannot be "
                                  "shown: %s (restore the file, or record where it is now: UPDATE extractions SET "
                                  "paths = json_set(paths, '$.tokenizer', 'NEW PATH') WHERE id = %lld)",
                                  fn, (long long)row.id, err.msg, (long long)row.id);
        goto fail;
    }
    /* Evict the least recently used entry nobody is reading. */
    int victim = CACHE_SLOTS - 1;
    while (victim >= 0 && cat->slots[victim] && cat->slots[victim]->refs) victim--;
    if (victim >= 0) {
        open_free(ctx, cat->slots[victim]);
        memmove(&cat->slots[1], &cat->slots[0], (size_t)victim * sizeof cat->slots[0]);
        cat->slots[0] = x;
    }
    /* else: every slot busy; x is owned by the caller alone (refs 1, freed on release) */
    x->refs = victim >= 0 ? 1 : -1;
    goto done;
fail:
    open_free(ctx, x);
    x = NULL;
done:
    sl_extraction_row_free(&row);
    return x;
}

void sl_catalog_release(sl_ctx *ctx, sl_open_extraction *x) {
    if (!x) return;
    if (x->refs < 0)
        open_free(ctx, x);
    else
        x->refs--;
}

const sl_findex *sl_catalog_index(sl_open_extraction *x, char **errmsg) {
    if (x->index) return x->index;
    sl_err err;
    if (!(x->index = sl_findex_open(x->store, &err))) {
        *errmsg = sqlite3_mprintf("saelite: extraction %lld: %s", (long long)x->id, err.msg);
        return NULL;
    }
    if (sl_findex_d_sae(x->index) != x->res.header->d_sae || sl_findex_nnz(x->index) != x->res.header->nnz) {
        *errmsg = sqlite3_mprintf("saelite: extraction %lld: %s: index of %u features and %llu nonzeros, the "
                                  "results file has %u and %llu (not from the same run)",
                                  (long long)x->id, sl_findex_path(x->index), sl_findex_d_sae(x->index),
                                  (unsigned long long)sl_findex_nnz(x->index), x->res.header->d_sae,
                                  (unsigned long long)x->res.header->nnz);
        sl_findex_close(x->index);
        x->index = NULL;
        return NULL;
    }
    return x->index;
}

const sl_tokfile *sl_catalog_tokens(sl_open_extraction *x, char **errmsg) {
    if (x->tokens_state == 0) {
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", x->store, SL_TOKFILE_NAME);
        if (access(path, F_OK) != 0) {
            x->tokens_state = -1;
        } else {
            sl_err err;
            if (sl_tokfile_open(&x->tokens, x->store, &err)) {
                *errmsg = sqlite3_mprintf("saelite: extraction %lld: %s", (long long)x->id, err.msg);
                return NULL;
            }
            x->tokens_state = 1;
        }
    }
    return x->tokens_state == 1 ? &x->tokens : NULL;
}

const char *sl_token_text_ref(const sl_open_extraction *x, int32_t token, size_t *len) {
    const struct sl_token_texts *t = texts_of(x);
    if (!t || token < 0 || token >= t->n || !(t->flags[token] & TT_PRESENT)) return NULL;
    *len = t->off[token + 1] - t->off[token];
    return t->data ? t->data + t->off[token] : "";
}

void sl_token_text(const sl_open_extraction *x, int32_t token, sl_buf *out) {
    size_t len;
    const char *text = sl_token_text_ref(x, token, &len);
    if (text) {
        sl_buf_append(out, text, len);
        return;
    }
    const char *bytes = x->tok ? sl_tokenizer_token_bytes(x->tok, token, &len) : NULL;
    if (bytes)
        sl_utf8_sanitize(out, bytes, len);
    else
        append_id(out, token);
}

/* Whether every window token's bytes are valid UTF-8 on their own (or absent):
 * then their concatenation is too and needs no repair. */
static int window_raw(const struct sl_token_texts *t, const sl_window_token *w, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) {
        int32_t id = w[i].token;
        if (id >= 0 && id < t->n && (t->flags[id] & (TT_PRESENT | TT_RAW)) == TT_PRESENT) return 0;
    }
    return 1;
}

/* Concatenates the window's token bytes first, so characters split across
 * tokens are rejoined before the UTF-8 repair. */
void sl_example_context(const sl_open_extraction *x, const sl_result_example *e, sl_buf *out) {
    const sl_window_token *w = x->res.windows + e->window_offset;
    if (!x->tok) {
        for (uint32_t i = 0; i < e->window_len; i++) {
            if (i == e->max_index) sl_buf_puts(out, "«");
            else if (i) sl_buf_puts(out, " ");
            append_id(out, w[i].token);
            if (i == e->max_index) sl_buf_puts(out, "»");
        }
        return;
    }
    const struct sl_token_texts *t = texts_of(x);
    if (t && window_raw(t, w, e->window_len)) {
        /* The repair below would change nothing: copy the decoded texts. */
        if (e->max_index >= e->window_len) sl_buf_puts(out, "«»");
        for (uint32_t i = 0; i < e->window_len; i++) {
            int32_t id = w[i].token;
            if (i == e->max_index) sl_buf_puts(out, "«");
            if (id >= 0 && id < t->n && t->data) sl_buf_append(out, t->data + t->off[id], t->off[id + 1] - t->off[id]);
            if (i == e->max_index) sl_buf_puts(out, "»");
        }
        return;
    }
    sl_buf raw = {0};
    size_t mark_lo = 0, mark_hi = 0;
    for (uint32_t i = 0; i < e->window_len; i++) {
        size_t len;
        const char *bytes = sl_tokenizer_token_bytes(x->tok, w[i].token, &len);
        if (i == e->max_index) mark_lo = raw.len;
        if (bytes) sl_buf_append(&raw, bytes, len);
        if (i == e->max_index) mark_hi = raw.len;
    }
    sl_utf8_sanitize(out, raw.data ? raw.data : "", mark_lo);
    sl_buf_puts(out, "«");
    sl_utf8_sanitize(out, raw.data ? raw.data + mark_lo : "", mark_hi - mark_lo);
    sl_buf_puts(out, "»");
    sl_utf8_sanitize(out, raw.data ? raw.data + mark_hi : "", raw.len - mark_hi);
    sl_buf_free(&raw);
}

void sl_example_tokens_json(const sl_open_extraction *x, const sl_result_example *e, sl_buf *out) {
    const sl_window_token *w = x->res.windows + e->window_offset;
    json_t *arr = json_array();
    for (uint32_t i = 0; i < e->window_len; i++) {
        size_t len;
        const char *text = sl_token_text_ref(x, w[i].token, &len);
        if (text) {
            json_array_append_new(arr, json_stringn(text, len));
            continue;
        }
        sl_buf t = {0};
        sl_token_text(x, w[i].token, &t);
        json_array_append_new(arr, json_stringn(sl_buf_str(&t), t.len));
        sl_buf_free(&t);
    }
    char *s = json_dumps(arr, JSON_COMPACT);
    if (s) sl_buf_puts(out, s);
    free(s);
    json_decref(arr);
}

/* Shortest %g form that reads back as the same float. */
static void format_f32(float v, char *buf, size_t size) {
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, size, "%.*g", prec, (double)v);
        if (strtof(buf, NULL) == v) return;
    }
}

void sl_example_acts_json(const sl_open_extraction *x, const sl_result_example *e, sl_buf *out) {
    const sl_window_token *w = x->res.windows + e->window_offset;
    sl_buf_puts(out, "[");
    for (uint32_t i = 0; i < e->window_len; i++) {
        char num[32];
        format_f32(w[i].act, num, sizeof num);
        if (i) sl_buf_puts(out, ",");
        sl_buf_puts(out, num);
    }
    sl_buf_puts(out, "]");
}
