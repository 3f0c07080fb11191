/* search.c: finding features by token and by text, two table-valued functions.
 *
 *   CREATE TABLE token_features(feature_id INTEGER, n_on_token INTEGER,
 *     occurrences INTEGER, fraction_of_occurrences REAL, fraction_of_feature REAL,
 *     mean_activation REAL, token HIDDEN, extraction_id HIDDEN)
 *   CREATE TABLE search_examples(feature_id INTEGER, rank INTEGER, activation REAL,
 *     sequence_id INTEGER, position INTEGER, token TEXT, context TEXT,
 *     substring HIDDEN, extraction_id HIDDEN)
 *
 * Examples:
 *   SELECT * FROM token_features('(') ORDER BY n_on_token DESC LIMIT 10;
 *   SELECT feature_id, fraction_of_occurrences FROM token_features(' def', 2)
 *     WHERE fraction_of_feature > 0.9;          -- features that are about this token
 *   SELECT * FROM token_features(50256);        -- a token id
 *   SELECT feature_id, rank, context FROM search_examples('#include');
 *
 * token_features(token [, extraction_id]): the features active on one token
 * over the whole dataset. The token is an id (an integer) or a text that the
 * extraction's tokenizer encodes to exactly one token; a text of several
 * tokens is an error listing them. One pass over the store: every segment's
 * token ids are read and only the blocks holding that token are decoded. Per
 * feature active on it at least once: n_on_token (rows of the token where the
 * feature is > 0), occurrences (rows of the token in the store, special tokens
 * and all; padding is not a row), fraction_of_occurrences = n_on_token /
 * occurrences, fraction_of_feature = n_on_token / the feature's n_active,
 * mean_activation over those n_on_token rows (the store's values: fp16 unless
 * a block needed f32). Rows in feature_id order.
 *
 * search_examples(substring [, extraction_id]): the top examples (rank 1..top_k
 * of every feature) whose window contains substring, in feature then rank
 * order: one pass over the results file's windows. The window text is the
 * window's token bytes joined (ids separated by spaces without a tokenizer), the
 * same text as top_examples.context without the « »; the match is on bytes,
 * case-sensitive. context marks the max token with « ».
 *
 * xBestIndex: the hidden columns are the arguments (sl_tvf_best_index,
 * vtab_args.h): token / substring required, extraction_id optional. */
#include <sqlite3ext.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "catalog.h"
#include "registry.h"
#include "store.h"
#include "text.h"
#include "tokenizer.h"
#include "vtab_args.h"

SQLITE_EXTENSION_INIT3

typedef enum { T_TOKEN_FEATURES, T_SEARCH_EXAMPLES } search_kind;

enum { TF_FEATURE_ID, TF_N_ON_TOKEN, TF_OCCURRENCES, TF_FRAC_OCC, TF_FRAC_FEATURE, TF_MEAN, TF_TOKEN, TF_EXTRACTION };
enum { SE_FEATURE_ID, SE_RANK, SE_ACTIVATION, SE_SEQUENCE_ID, SE_POSITION, SE_TOKEN, SE_CONTEXT, SE_SUBSTRING,
       SE_EXTRACTION };
enum { ARG_TEXT, ARG_EXTRACTION, N_ARGS };

static const sl_arg_spec tf_args[N_ARGS] = {{TF_TOKEN, "token", SL_ARG_REQUIRED}, {TF_EXTRACTION, "extraction_id", 0}};
static const sl_arg_spec se_args[N_ARGS] = {{SE_SUBSTRING, "substring", SL_ARG_REQUIRED},
                                            {SE_EXTRACTION, "extraction_id", 0}};

static const struct {
    const char *schema;
    int extraction_col;
    sl_tvf_spec spec;
} tables[] = {
    [T_TOKEN_FEATURES] = {"CREATE TABLE x(feature_id INTEGER, n_on_token INTEGER, occurrences INTEGER, "
                          "fraction_of_occurrences REAL, fraction_of_feature REAL, mean_activation REAL, "
                          "token HIDDEN, extraction_id HIDDEN)",
                          TF_EXTRACTION,
                          {"token_features", "token_features('(')", tf_args, N_ARGS}},
    [T_SEARCH_EXAMPLES] = {"CREATE TABLE x(feature_id INTEGER, rank INTEGER, activation REAL, sequence_id INTEGER, "
                           "position INTEGER, token TEXT, context TEXT, substring HIDDEN, extraction_id HIDDEN)",
                           SE_EXTRACTION,
                           {"search_examples", "search_examples('#include')", se_args, N_ARGS}},
};

typedef struct search_vtab {
    sqlite3_vtab base;
    sqlite3 *db;
    sl_ctx *ctx;
    search_kind kind;
} search_vtab;

/* token_features: one feature's counts. */
typedef struct token_hit {
    uint32_t feature;
    uint64_t n;
    double sum;
} token_hit;

typedef struct search_cursor {
    sqlite3_vtab_cursor base;
    sl_open_extraction *x;
    sqlite3_value *arg; /* the token or substring, shown in its hidden column */
    uint64_t occurrences;
    token_hit *hits; /* token_features: [n] features with n > 0, ascending */
    uint32_t *found; /* search_examples: [n] example slots (f * top_k + rank - 1) */
    size_t n, at;
} search_cursor;

static int sv_connect(sqlite3 *db, void *aux, int argc, const char *const *argv, sqlite3_vtab **out, char **err,
                      search_kind kind) {
    (void)argc, (void)argv, (void)err;
    int rc = sqlite3_declare_vtab(db, tables[kind].schema);
    if (rc != SQLITE_OK) return rc;
    search_vtab *vt = sqlite3_malloc(sizeof *vt);
    if (!vt) return SQLITE_NOMEM;
    memset(vt, 0, sizeof *vt);
    vt->db = db;
    vt->ctx = aux;
    vt->kind = kind;
    sqlite3_vtab_config(db, SQLITE_VTAB_DIRECTONLY); /* it reads files named in the database */
    *out = &vt->base;
    return SQLITE_OK;
}

static int tf_connect(sqlite3 *db, void *aux, int argc, const char *const *argv, sqlite3_vtab **out, char **err) {
    return sv_connect(db, aux, argc, argv, out, err, T_TOKEN_FEATURES);
}
static int se_connect(sqlite3 *db, void *aux, int argc, const char *const *argv, sqlite3_vtab **out, char **err) {
    return sv_connect(db, aux, argc, argv, out, err, T_SEARCH_EXAMPLES);
}

static int sv_disconnect(sqlite3_vtab *vtab) {
    sqlite3_free(vtab);
    return SQLITE_OK;
}

static int sv_best_index(sqlite3_vtab *vtab, sqlite3_index_info *info) {
    search_vtab *vt = (search_vtab *)vtab;
    int rc = sl_tvf_best_index(vtab, info, &tables[vt->kind].spec);
    if (rc != SQLITE_OK) return rc;
    info->estimatedCost = 1e6;
    info->estimatedRows = 100;
    if (info->nOrderBy == 1 && info->aOrderBy[0].iColumn == 0 && !info->aOrderBy[0].desc) info->orderByConsumed = 1;
    return SQLITE_OK;
}

static int sv_open(sqlite3_vtab *vtab, sqlite3_vtab_cursor **out) {
    (void)vtab;
    search_cursor *c = sqlite3_malloc(sizeof *c);
    if (!c) return SQLITE_NOMEM;
    memset(c, 0, sizeof *c);
    *out = &c->base;
    return SQLITE_OK;
}

static void cursor_reset(search_cursor *c) {
    search_vtab *vt = (search_vtab *)c->base.pVtab;
    sl_catalog_release(vt->ctx, c->x);
    c->x = NULL;
    sqlite3_value_free(c->arg);
    c->arg = NULL;
    free(c->hits);
    free(c->found);
    c->hits = NULL;
    c->found = NULL;
    c->n = c->at = 0;
    c->occurrences = 0;
}

static int sv_close(sqlite3_vtab_cursor *cur) {
    cursor_reset((search_cursor *)cur);
    sqlite3_free(cur);
    return SQLITE_OK;
}

/* The token id a token_features argument names; -1 with *msg set if none. */
static int64_t resolve_token(const sl_open_extraction *x, sqlite3_value *v, char **msg) {
    if (sqlite3_value_type(v) == SQLITE_INTEGER) return sqlite3_value_int64(v);
    const char *text = (const char *)sqlite3_value_text(v);
    size_t len = (size_t)sqlite3_value_bytes(v);
    if (!x->tok) {
        *msg = sqlite3_mprintf("token_features: extraction %lld has no tokenizer: give the token id", (long long)x->id);
        return -1;
    }
    sl_encoding enc = {0};
    sl_err err;
    if (sl_tokenizer_encode(x->tok, text ? text : "", len, &enc, &err)) {
        *msg = sqlite3_mprintf("token_features: %s", err.msg);
        return -1;
    }
    int64_t id = -1;
    if (enc.n == 1) {
        id = enc.ids[0];
    } else {
        sl_buf list = {0};
        for (size_t i = 0; i < enc.n && i < 16; i++) {
            char num[24];
            sl_buf_puts(&list, i ? ", '" : "'");
            sl_token_text(x, enc.ids[i], &list);
            snprintf(num, sizeof num, "' (%d)", (int)enc.ids[i]);
            sl_buf_puts(&list, num);
        }
        if (enc.n > 16) sl_buf_puts(&list, ", ...");
        *msg = len == 0  ? sqlite3_mprintf("token_features: the text is empty: give one token or its id")
               : enc.n == 0 ? sqlite3_mprintf("token_features: '%s' encodes to no token of the tokenizer %s: give one "
                                              "token or its id", text, sl_tokenizer_path(x->tok))
                            : sqlite3_mprintf("token_features: '%s' is %d tokens (%s): give one token or its id", text,
                                              (int)enc.n, sl_buf_str(&list));
        sl_buf_free(&list);
    }
    sl_encoding_free(&enc);
    return id;
}

/* One pass over the store's segments: the rows holding `token`, their nonzeros. */
static int scan_token(search_cursor *c, int32_t token, char **msg) {
    const uint32_t d_sae = c->x->res.header->d_sae;
    uint64_t *count = calloc(d_sae, sizeof *count); /* [d_sae] */
    double *sum = calloc(d_sae, sizeof *sum);       /* [d_sae] */
    int32_t *tokens = NULL;
    size_t tokens_cap = 0;
    sl_block blk = {0};
    sl_segment *seg = NULL;
    int rc = -1;
    if (!count || !sum) goto oom;
    for (uint32_t s = 0;; s++) {
        char path[4200];
        sl_segment_name(path, sizeof path, c->x->store, s);
        if (access(path, F_OK) != 0) break; /* segments are numbered from 0 without gaps (check_extraction) */
        sl_err err;
        if (!(seg = sl_segment_open(path, &err))) {
            *msg = sqlite3_mprintf("token_features: %s", err.msg);
            goto done;
        }
        if (sl_segment_n_cols(seg) != d_sae) {
            *msg = sqlite3_mprintf("token_features: %s: %u features, the results file %u", path,
                                   sl_segment_n_cols(seg), d_sae);
            goto done;
        }
        uint32_t n_rows = sl_segment_n_rows(seg), block_rows = sl_segment_block_rows(seg);
        if (n_rows > tokens_cap) {
            int32_t *t = realloc(tokens, n_rows * sizeof *t);
            if (!t) goto oom;
            tokens = t;
            tokens_cap = n_rows;
        }
        if (sl_segment_read_tokens(seg, tokens, &err)) {
            *msg = sqlite3_mprintf("token_features: %s", err.msg);
            goto done;
        }
        int64_t decoded = -1; /* block in blk */
        for (uint32_t r = 0; r < n_rows; r++) {
            if (tokens[r] != token) continue;
            c->occurrences++;
            uint32_t b = r / block_rows;
            if ((int64_t)b != decoded) {
                if (sl_segment_read_block(seg, b, &blk, &err)) {
                    *msg = sqlite3_mprintf("token_features: %s", err.msg);
                    goto done;
                }
                decoded = b;
            }
            uint32_t lr = r - blk.first_row;
            for (uint64_t i = blk.row_ptr[lr]; i < blk.row_ptr[lr + 1]; i++) {
                if (!(blk.val[i] > 0.0f)) continue;
                count[blk.col[i]]++;
                sum[blk.col[i]] += blk.val[i];
            }
        }
        sl_segment_close(seg);
        seg = NULL;
    }
    size_t n = 0;
    for (uint32_t f = 0; f < d_sae; f++) n += count[f] != 0;
    if (!(c->hits = malloc((n ? n : 1) * sizeof *c->hits))) goto oom;
    for (uint32_t f = 0; f < d_sae; f++)
        if (count[f]) c->hits[c->n++] = (token_hit){.feature = f, .n = count[f], .sum = sum[f]};
    rc = 0;
    goto done;
oom:
    *msg = sqlite3_mprintf("token_features: out of memory");
done:
    if (seg) sl_segment_close(seg);
    sl_block_free(&blk);
    free(tokens);
    free(count);
    free(sum);
    return rc;
}

/* Window text as top_examples.context shows it, without the « » marks. */
static void window_text(const sl_open_extraction *x, const sl_result_example *e, sl_buf *out) {
    const sl_window_token *w = x->res.windows + e->window_offset;
    for (uint32_t i = 0; i < e->window_len; i++) {
        size_t len;
        const char *bytes = x->tok ? sl_tokenizer_token_bytes(x->tok, w[i].token, &len) : NULL;
        if (bytes) {
            sl_buf_append(out, bytes, len);
        } else {
            char num[16];
            snprintf(num, sizeof num, i && !x->tok ? " %d" : "%d", (int)w[i].token);
            sl_buf_puts(out, num);
        }
    }
}

static int scan_examples(search_cursor *c, const char *needle, size_t n_needle, char **msg) {
    const sl_results *res = &c->x->res;
    const uint32_t d_sae = res->header->d_sae, top_k = res->header->top_k;
    size_t cap = 0;
    sl_buf text = {0};
    for (uint32_t f = 0; f < d_sae; f++) {
        for (uint32_t r = 0; r < res->features[f].n_examples; r++) {
            uint32_t slot = f * top_k + r;
            text.len = 0;
            window_text(c->x, &res->examples[slot], &text);
            if (text.oom) goto oom;
            if (!memmem(text.data ? text.data : "", text.len, needle, n_needle)) continue;
            if (c->n == cap) {
                cap = cap ? 2 * cap : 64;
                uint32_t *p = realloc(c->found, cap * sizeof *p);
                if (!p) goto oom;
                c->found = p;
            }
            c->found[c->n++] = slot;
        }
    }
    sl_buf_free(&text);
    return 0;
oom:
    sl_buf_free(&text);
    *msg = sqlite3_mprintf("search_examples: out of memory");
    return -1;
}

static int sv_filter(sqlite3_vtab_cursor *cur, int idx, const char *idx_str, int argc, sqlite3_value **argv) {
    (void)idx_str, (void)argc;
    search_cursor *c = (search_cursor *)cur;
    search_vtab *vt = (search_vtab *)cur->pVtab;
    cursor_reset(c);
    const char *fn = tables[vt->kind].spec.name;
    sqlite3_value *args[N_ARGS];
    sl_tvf_args(&tables[vt->kind].spec, idx, argv, args);
    sqlite3_value *arg = args[ARG_TEXT], *xv = args[ARG_EXTRACTION];
    if (sqlite3_value_type(arg) == SQLITE_NULL || (xv && sqlite3_value_type(xv) == SQLITE_NULL)) return SQLITE_OK;
    char *msg = NULL;
    if (!(c->x = sl_catalog_acquire(vt->ctx, vt->db, xv != NULL, xv ? sqlite3_value_int64(xv) : 0, fn, &msg)))
        return sl_vtab_error(&vt->base, "%z", msg);
    if (!(c->arg = sqlite3_value_dup(arg))) return SQLITE_NOMEM;
    if (vt->kind == T_TOKEN_FEATURES) {
        int64_t token = resolve_token(c->x, arg, &msg);
        if (token < 0 && msg) return sl_vtab_error(&vt->base, "%z", msg);
        if (token < 0 || token > INT32_MAX) return SQLITE_OK; /* no such token: no rows */
        if (scan_token(c, (int32_t)token, &msg)) return sl_vtab_error(&vt->base, "%z", msg);
    } else {
        const char *s = (const char *)sqlite3_value_text(arg);
        size_t n = (size_t)sqlite3_value_bytes(arg);
        if (n == 0) return sl_vtab_error(&vt->base, "search_examples: the substring is empty");
        if (scan_examples(c, s, n, &msg)) return sl_vtab_error(&vt->base, "%z", msg);
    }
    return SQLITE_OK;
}

static int sv_next(sqlite3_vtab_cursor *cur) {
    ((search_cursor *)cur)->at++;
    return SQLITE_OK;
}

static int sv_eof(sqlite3_vtab_cursor *cur) {
    search_cursor *c = (search_cursor *)cur;
    return c->at >= c->n;
}

static int sv_rowid(sqlite3_vtab_cursor *cur, sqlite3_int64 *rowid) {
    *rowid = (sqlite3_int64)((search_cursor *)cur)->at;
    return SQLITE_OK;
}

static void result_buf(sqlite3_context *ctx, sl_buf *b) {
    if (b->oom) sqlite3_result_error_nomem(ctx);
    else sqlite3_result_text(ctx, sl_buf_str(b), (int)b->len, SQLITE_TRANSIENT);
    sl_buf_free(b);
}

static int sv_column(sqlite3_vtab_cursor *cur, sqlite3_context *ctx, int col) {
    search_cursor *c = (search_cursor *)cur;
    search_vtab *vt = (search_vtab *)cur->pVtab;
    const sl_results *res = &c->x->res;
    if (col == tables[vt->kind].extraction_col) {
        sqlite3_result_int64(ctx, c->x->id);
        return SQLITE_OK;
    }
    if (col == tables[vt->kind].spec.args[ARG_TEXT].column) {
        sqlite3_result_value(ctx, c->arg);
        return SQLITE_OK;
    }
    if (vt->kind == T_TOKEN_FEATURES) {
        const token_hit *t = &c->hits[c->at];
        uint64_t n_active = res->features[t->feature].n_active;
        switch (col) {
        case TF_FEATURE_ID: sqlite3_result_int64(ctx, t->feature); break;
        case TF_N_ON_TOKEN: sqlite3_result_int64(ctx, (sqlite3_int64)t->n); break;
        case TF_OCCURRENCES: sqlite3_result_int64(ctx, (sqlite3_int64)c->occurrences); break;
        case TF_FRAC_OCC: sqlite3_result_double(ctx, (double)t->n / (double)c->occurrences); break;
        case TF_FRAC_FEATURE:
            sqlite3_result_double(ctx, n_active ? (double)t->n / (double)n_active : 0.0);
            break;
        case TF_MEAN: sqlite3_result_double(ctx, t->sum / (double)t->n); break;
        default: break;
        }
        return SQLITE_OK;
    }
    uint32_t slot = c->found[c->at], top_k = res->header->top_k;
    const sl_result_example *e = &res->examples[slot];
    sl_buf b = {0};
    switch (col) {
    case SE_FEATURE_ID: sqlite3_result_int64(ctx, slot / top_k); break;
    case SE_RANK: sqlite3_result_int64(ctx, slot % top_k + 1); break;
    case SE_ACTIVATION: sqlite3_result_double(ctx, sl_f32_to_display(e->act)); break;
    case SE_SEQUENCE_ID: sqlite3_result_int64(ctx, (sqlite3_int64)e->sequence); break;
    case SE_POSITION: sqlite3_result_int64(ctx, e->position); break;
    case SE_TOKEN:
        sl_token_text(c->x, res->windows[e->window_offset + e->max_index].token, &b);
        result_buf(ctx, &b);
        break;
    case SE_CONTEXT:
        sl_example_context(c->x, e, &b);
        result_buf(ctx, &b);
        break;
    default: break;
    }
    return SQLITE_OK;
}

#define MODULE(connect)                                                                                      \
    {                                                                                                        \
        .iVersion = 0, .xCreate = NULL, .xConnect = connect, .xBestIndex = sv_best_index,                   \
        .xDisconnect = sv_disconnect, .xDestroy = NULL, .xOpen = sv_open, .xClose = sv_close,              \
        .xFilter = sv_filter, .xNext = sv_next, .xEof = sv_eof, .xColumn = sv_column, .xRowid = sv_rowid, \
    }

const sqlite3_module sl_token_features_module = MODULE(tf_connect);
const sqlite3_module sl_search_examples_module = MODULE(se_connect);
