/* vtabs.c: the eponymous virtual tables features, feature_stats, top_examples.
 *
 *   CREATE TABLE features(feature_id INTEGER, frequency REAL, max_activation REAL,
 *     mean_activation REAL, n_active INTEGER, is_dead INTEGER, top_token TEXT,
 *     example TEXT, label TEXT, extraction_id HIDDEN)
 *   CREATE TABLE feature_stats(feature_id INTEGER, n_tokens INTEGER, n_active INTEGER,
 *     frequency REAL, log10_frequency REAL, mean REAL, std REAL, min_active REAL,
 *     max REAL, extraction_id HIDDEN)
 *   CREATE TABLE top_examples(feature_id INTEGER, rank INTEGER, activation REAL,
 *     sequence_id INTEGER, position INTEGER, token TEXT, context TEXT, tokens TEXT,
 *     activations TEXT, max_index INTEGER, document INTEGER, char_start INTEGER,
 *     char_end INTEGER, extraction_id HIDDEN)
 *
 * Examples:
 *   SELECT * FROM features ORDER BY frequency DESC LIMIT 5;
 *   SELECT rank, activation, context FROM top_examples WHERE feature_id = 42;
 *   SELECT * FROM feature_stats WHERE feature_id IN (1, 2, 3) AND extraction_id = 2;
 *
 * Rows come from the results file of one extraction: extraction_id = ? picks it,
 * otherwise the most recent extraction whose status is 'done'.
 *
 * xBestIndex. idxNum bits, with argv filled in this order:
 *   1  feature_id = ?       argv: the id
 *   2  feature_id IN (...)  argv: the list, read whole with sqlite3_vtab_in
 *   4  extraction_id = ?    argv: the id
 * A feature lookup costs its row count (O(1) per feature: fixed-size records);
 * a scan costs d_sae rows. Handled constraints are omitted from SQLite's own
 * checks. idxStr names the lookup so EXPLAIN QUERY PLAN shows it. Rows come in
 * feature_id (then rank) order, so ORDER BY feature_id is consumed. */
#include <math.h>
#include <sqlite3ext.h>
#include <stdlib.h>
#include <string.h>

#include "catalog.h"
#include "vtabs.h"

SQLITE_EXTENSION_INIT3

typedef enum { T_FEATURES, T_FEATURE_STATS, T_TOP_EXAMPLES } table_kind;

enum { IDX_FEATURE_EQ = 1, IDX_FEATURE_IN = 2, IDX_EXTRACTION = 4 };

/* Column numbers. The hidden extraction_id is always last. */
enum { F_FEATURE_ID, F_FREQUENCY, F_MAX, F_MEAN, F_N_ACTIVE, F_IS_DEAD, F_TOP_TOKEN, F_EXAMPLE, F_LABEL, F_EXTRACTION };
enum { S_FEATURE_ID, S_N_TOKENS, S_N_ACTIVE, S_FREQUENCY, S_LOG10_FREQUENCY, S_MEAN, S_STD, S_MIN_ACTIVE, S_MAX, S_EXTRACTION };
enum { E_FEATURE_ID, E_RANK, E_ACTIVATION, E_SEQUENCE_ID, E_POSITION, E_TOKEN, E_CONTEXT, E_TOKENS, E_ACTIVATIONS,
       E_MAX_INDEX, E_DOCUMENT, E_CHAR_START, E_CHAR_END, E_EXTRACTION };

static const struct {
    const char *schema;
    int extraction_col;
} tables[] = {
    [T_FEATURES] = {"CREATE TABLE x(feature_id INTEGER, frequency REAL, max_activation REAL, mean_activation REAL, "
                    "n_active INTEGER, is_dead INTEGER, top_token TEXT, example TEXT, label TEXT, extraction_id HIDDEN)",
                    F_EXTRACTION},
    [T_FEATURE_STATS] = {"CREATE TABLE x(feature_id INTEGER, n_tokens INTEGER, n_active INTEGER, frequency REAL, "
                         "log10_frequency REAL, mean REAL, std REAL, min_active REAL, max REAL, extraction_id HIDDEN)",
                         S_EXTRACTION},
    [T_TOP_EXAMPLES] = {"CREATE TABLE x(feature_id INTEGER, rank INTEGER, activation REAL, sequence_id INTEGER, "
                        "position INTEGER, token TEXT, context TEXT, tokens TEXT, activations TEXT, "
                        "max_index INTEGER, document INTEGER, char_start INTEGER, char_end INTEGER, "
                        "extraction_id HIDDEN)",
                        E_EXTRACTION},
};

typedef struct feature_vtab {
    sqlite3_vtab base;
    sqlite3 *db;
    sl_catalog *catalog;
    table_kind kind;
    sqlite3_stmt *label_stmt; /* features.label, prepared on first use */
} feature_vtab;

/* The feature's label from feature_labels (NULL when none, or no such table). */
static void column_label(feature_vtab *vt, sqlite3_context *ctx, int64_t extraction_id, int64_t feature_id) {
    if (!vt->label_stmt &&
        sqlite3_prepare_v2(vt->db, "SELECT label FROM main.feature_labels WHERE extraction_id = ?1 AND feature_id = ?2",
                           -1, &vt->label_stmt, NULL) != SQLITE_OK)
        return;
    sqlite3_bind_int64(vt->label_stmt, 1, extraction_id);
    sqlite3_bind_int64(vt->label_stmt, 2, feature_id);
    if (sqlite3_step(vt->label_stmt) == SQLITE_ROW) sqlite3_result_value(ctx, sqlite3_column_value(vt->label_stmt, 0));
    sqlite3_reset(vt->label_stmt);
}

typedef struct feature_cursor {
    sqlite3_vtab_cursor base;
    sl_open_extraction *x;
    int64_t *ids; /* explicit feature ids (sorted, unique), or NULL for all */
    int64_t n_ids, at;
    uint32_t rank; /* top_examples: index into the current feature's examples */
    int eof;
} feature_cursor;

static int vt_connect(sqlite3 *db, void *aux, int argc, const char *const *argv, sqlite3_vtab **out, char **err,
                      table_kind kind) {
    (void)argc, (void)argv, (void)err;
    int rc = sqlite3_declare_vtab(db, tables[kind].schema);
    if (rc != SQLITE_OK) return rc;
    feature_vtab *vt = sqlite3_malloc(sizeof *vt);
    if (!vt) return SQLITE_NOMEM;
    memset(vt, 0, sizeof *vt);
    vt->db = db;
    vt->catalog = aux;
    vt->kind = kind;
    /* It reads files named in the database: never from a schema's triggers or views. */
    sqlite3_vtab_config(db, SQLITE_VTAB_DIRECTONLY);
    *out = &vt->base;
    return SQLITE_OK;
}

#define CONNECT_FN(name, kind)                                                                                     \
    static int name(sqlite3 *db, void *aux, int argc, const char *const *argv, sqlite3_vtab **out, char **err) { \
        return vt_connect(db, aux, argc, argv, out, err, kind);                                                    \
    }
CONNECT_FN(features_connect, T_FEATURES)
CONNECT_FN(feature_stats_connect, T_FEATURE_STATS)
CONNECT_FN(top_examples_connect, T_TOP_EXAMPLES)

static int vt_disconnect(sqlite3_vtab *vtab) {
    sqlite3_finalize(((feature_vtab *)vtab)->label_stmt);
    sqlite3_free(vtab);
    return SQLITE_OK;
}

static int vt_best_index(sqlite3_vtab *vtab, sqlite3_index_info *info) {
    feature_vtab *vt = (feature_vtab *)vtab;
    int feature_c = -1, extraction_c = -1, feature_in = 0;
    for (int i = 0; i < info->nConstraint; i++) {
        const struct sqlite3_index_constraint *c = &info->aConstraint[i];
        if (c->op != SQLITE_INDEX_CONSTRAINT_EQ) continue;
        if (!c->usable) continue;
        if (c->iColumn == 0 && feature_c < 0) feature_c = i;
        else if (c->iColumn == tables[vt->kind].extraction_col && extraction_c < 0) extraction_c = i;
    }
    int argv_i = 0, idx = 0;
    double rows = 100000.0; /* a scan: d_sae rows, unknown here */
    if (feature_c >= 0) {
        feature_in = sqlite3_vtab_in(info, feature_c, 1);
        idx |= feature_in ? IDX_FEATURE_IN : IDX_FEATURE_EQ;
        info->aConstraintUsage[feature_c].argvIndex = ++argv_i;
        info->aConstraintUsage[feature_c].omit = 1;
        rows = feature_in ? 10.0 : 1.0;
        if (vt->kind == T_TOP_EXAMPLES) rows *= 20.0;
        info->idxStr = feature_in ? "feature_id IN (...)" : "feature_id=?";
    }
    if (extraction_c >= 0) {
        idx |= IDX_EXTRACTION;
        info->aConstraintUsage[extraction_c].argvIndex = ++argv_i;
        info->aConstraintUsage[extraction_c].omit = 1;
    }
    info->idxNum = idx;
    info->estimatedRows = (sqlite3_int64)rows;
    info->estimatedCost = rows;
    if (feature_c >= 0 && !feature_in) info->idxFlags = vt->kind == T_TOP_EXAMPLES ? 0 : SQLITE_INDEX_SCAN_UNIQUE;
    if (info->nOrderBy == 1 && info->aOrderBy[0].iColumn == 0 && !info->aOrderBy[0].desc) info->orderByConsumed = 1;
    return SQLITE_OK;
}

static int vt_open(sqlite3_vtab *vtab, sqlite3_vtab_cursor **out) {
    (void)vtab;
    feature_cursor *c = sqlite3_malloc(sizeof *c);
    if (!c) return SQLITE_NOMEM;
    memset(c, 0, sizeof *c);
    *out = &c->base;
    return SQLITE_OK;
}

static void cursor_reset(feature_cursor *c) {
    feature_vtab *vt = (feature_vtab *)c->base.pVtab;
    sl_catalog_release(vt->catalog, c->x);
    sqlite3_free(c->ids);
    c->x = NULL;
    c->ids = NULL;
    c->n_ids = c->at = 0;
    c->rank = 0;
    c->eof = 1;
}

static int vt_close(sqlite3_vtab_cursor *cur) {
    cursor_reset((feature_cursor *)cur);
    sqlite3_free(cur);
    return SQLITE_OK;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int add_id(feature_cursor *c, int64_t *cap, sqlite3_value *v) {
    if (sqlite3_value_type(v) != SQLITE_INTEGER) {
        double d = sqlite3_value_double(v); /* 3.0 matches feature 3; 3.5 matches nothing */
        if (sqlite3_value_type(v) != SQLITE_FLOAT || d != floor(d) || fabs(d) > 9e15) return SQLITE_OK;
    }
    if (c->n_ids == *cap) {
        *cap = *cap ? *cap * 2 : 16;
        int64_t *p = sqlite3_realloc64(c->ids, (sqlite3_uint64)*cap * sizeof *p);
        if (!p) return SQLITE_NOMEM;
        c->ids = p;
    }
    c->ids[c->n_ids++] = sqlite3_value_int64(v);
    return SQLITE_OK;
}

static uint32_t d_sae_of(const feature_cursor *c) { return c->x->res.header->d_sae; }

static int64_t current_feature(const feature_cursor *c) { return c->ids ? c->ids[c->at] : c->at; }

/* Moves to the first valid row at or after the current position. */
static void settle(feature_cursor *c) {
    feature_vtab *vt = (feature_vtab *)c->base.pVtab;
    int64_t n = c->ids ? c->n_ids : (int64_t)d_sae_of(c);
    for (; c->at < n; c->at++, c->rank = 0) {
        int64_t f = current_feature(c);
        if (f < 0 || f >= (int64_t)d_sae_of(c)) continue;
        if (vt->kind != T_TOP_EXAMPLES || c->rank < c->x->res.features[f].n_examples) return;
    }
    c->eof = 1;
}

static int vt_filter(sqlite3_vtab_cursor *cur, int idx, const char *idx_str, int argc, sqlite3_value **argv) {
    (void)idx_str, (void)argc;
    feature_cursor *c = (feature_cursor *)cur;
    feature_vtab *vt = (feature_vtab *)cur->pVtab;
    cursor_reset(c);
    int a = 0, rc = SQLITE_OK;
    int64_t cap = 0;
    int want_ids = idx & (IDX_FEATURE_EQ | IDX_FEATURE_IN);
    if (idx & IDX_FEATURE_EQ) {
        rc = add_id(c, &cap, argv[a++]);
    } else if (idx & IDX_FEATURE_IN) {
        sqlite3_value *v;
        sqlite3_value *list = argv[a++];
        for (rc = sqlite3_vtab_in_first(list, &v); rc == SQLITE_OK && v; rc = sqlite3_vtab_in_next(list, &v))
            if ((rc = add_id(c, &cap, v)) != SQLITE_OK) break;
        if (rc == SQLITE_DONE) rc = SQLITE_OK;
    }
    if (rc != SQLITE_OK) return rc;
    int has_x = (idx & IDX_EXTRACTION) != 0;
    int64_t xid = 0;
    if (has_x) {
        if (sqlite3_value_type(argv[a]) == SQLITE_NULL) return SQLITE_OK; /* = NULL matches nothing */
        xid = sqlite3_value_int64(argv[a]);
    }
    char *msg = NULL;
    c->x = sl_catalog_acquire(vt->catalog, vt->db, has_x, xid, &msg);
    if (!c->x) {
        sqlite3_free(vt->base.zErrMsg);
        vt->base.zErrMsg = msg;
        return SQLITE_ERROR;
    }
    if (want_ids) {
        if (c->n_ids == 0) return SQLITE_OK; /* eof */
        qsort(c->ids, (size_t)c->n_ids, sizeof *c->ids, cmp_i64);
        int64_t u = 0;
        for (int64_t i = 0; i < c->n_ids; i++)
            if (i == 0 || c->ids[i] != c->ids[u - 1]) c->ids[u++] = c->ids[i];
        c->n_ids = u;
    }
    c->eof = 0;
    settle(c);
    return SQLITE_OK;
}

static int vt_next(sqlite3_vtab_cursor *cur) {
    feature_cursor *c = (feature_cursor *)cur;
    feature_vtab *vt = (feature_vtab *)cur->pVtab;
    if (vt->kind == T_TOP_EXAMPLES)
        c->rank++;
    else
        c->at++;
    settle(c);
    return SQLITE_OK;
}

static int vt_eof(sqlite3_vtab_cursor *cur) { return ((feature_cursor *)cur)->eof; }

static int vt_rowid(sqlite3_vtab_cursor *cur, sqlite3_int64 *rowid) {
    feature_cursor *c = (feature_cursor *)cur;
    *rowid = current_feature(c) * (int64_t)(c->x->res.header->top_k + 1) + c->rank;
    return SQLITE_OK;
}

static void result_buf(sqlite3_context *ctx, sl_buf *b) {
    if (b->oom)
        sqlite3_result_error_nomem(ctx);
    else
        sqlite3_result_text(ctx, sl_buf_str(b), (int)b->len, SQLITE_TRANSIENT);
    sl_buf_free(b);
}

static int vt_column(sqlite3_vtab_cursor *cur, sqlite3_context *ctx, int col) {
    feature_cursor *c = (feature_cursor *)cur;
    feature_vtab *vt = (feature_vtab *)cur->pVtab;
    const sl_open_extraction *x = c->x;
    int64_t f = current_feature(c);
    const sl_result_feature *rf = &x->res.features[f];
    const uint64_t n_tokens = x->res.header->n_tokens;
    const double freq = n_tokens ? (double)rf->n_active / (double)n_tokens : 0.0;
    const sl_result_example *top = x->res.examples + (size_t)f * x->res.header->top_k;
    sl_buf b = {0};
    if (col == tables[vt->kind].extraction_col) {
        sqlite3_result_int64(ctx, x->id);
        return SQLITE_OK;
    }
    if (col == 0) {
        sqlite3_result_int64(ctx, f);
        return SQLITE_OK;
    }
    switch (vt->kind) {
    case T_FEATURES:
        switch (col) {
        case F_FREQUENCY: sqlite3_result_double(ctx, freq); break;
        case F_MAX: sqlite3_result_double(ctx, sl_f32_to_display(rf->max)); break;
        case F_MEAN: sqlite3_result_double(ctx, rf->mean); break;
        case F_N_ACTIVE: sqlite3_result_int64(ctx, (sqlite3_int64)rf->n_active); break;
        case F_IS_DEAD: sqlite3_result_int(ctx, rf->n_active == 0); break;
        case F_TOP_TOKEN:
            if (!rf->n_examples) break; /* NULL */
            sl_token_text(x, x->res.windows[top->window_offset + top->max_index].token, &b);
            result_buf(ctx, &b);
            break;
        case F_LABEL:
            column_label(vt, ctx, x->id, f);
            break;
        case F_EXAMPLE:
            if (!rf->n_examples) break;
            sl_example_context(x, top, &b);
            result_buf(ctx, &b);
            break;
        }
        break;
    case T_FEATURE_STATS:
        switch (col) {
        case S_N_TOKENS: sqlite3_result_int64(ctx, (sqlite3_int64)n_tokens); break;
        case S_N_ACTIVE: sqlite3_result_int64(ctx, (sqlite3_int64)rf->n_active); break;
        case S_FREQUENCY: sqlite3_result_double(ctx, freq); break;
        case S_LOG10_FREQUENCY: sqlite3_result_double(ctx, log10(freq + 1e-10)); break;
        case S_MEAN: sqlite3_result_double(ctx, rf->mean); break;
        case S_STD: sqlite3_result_double(ctx, rf->std); break;
        case S_MIN_ACTIVE: sqlite3_result_double(ctx, sl_f32_to_display(rf->min_active)); break;
        case S_MAX: sqlite3_result_double(ctx, sl_f32_to_display(rf->max)); break;
        }
        break;
    case T_TOP_EXAMPLES: {
        const sl_result_example *e = top + c->rank;
        switch (col) {
        case E_RANK: sqlite3_result_int(ctx, (int)c->rank + 1); break;
        case E_ACTIVATION: sqlite3_result_double(ctx, sl_f32_to_display(e->act)); break;
        case E_SEQUENCE_ID: sqlite3_result_int64(ctx, (sqlite3_int64)e->sequence); break;
        case E_POSITION: sqlite3_result_int64(ctx, e->position); break;
        case E_TOKEN:
            sl_token_text(x, x->res.windows[e->window_offset + e->max_index].token, &b);
            result_buf(ctx, &b);
            break;
        case E_CONTEXT:
            sl_example_context(x, e, &b);
            result_buf(ctx, &b);
            break;
        case E_TOKENS:
            sl_example_tokens_json(x, e, &b);
            result_buf(ctx, &b);
            break;
        case E_ACTIVATIONS:
            sl_example_acts_json(x, e, &b);
            result_buf(ctx, &b);
            break;
        case E_MAX_INDEX: sqlite3_result_int(ctx, (int)e->max_index); break;
        case E_DOCUMENT:
        case E_CHAR_START:
        case E_CHAR_END:
            if (e->document == SL_NO_DOCUMENT) break; /* stored activations: NULL */
            sqlite3_result_int64(ctx, col == E_DOCUMENT     ? (sqlite3_int64)e->document
                                      : col == E_CHAR_START ? (sqlite3_int64)e->char_start
                                                            : (sqlite3_int64)e->char_end);
            break;
        }
        break;
    }
    }
    return SQLITE_OK;
}

#define MODULE(connect)                                                                                      \
    {                                                                                                        \
        .iVersion = 0, .xCreate = NULL, .xConnect = connect, .xBestIndex = vt_best_index,                   \
        .xDisconnect = vt_disconnect, .xDestroy = NULL, .xOpen = vt_open, .xClose = vt_close,              \
        .xFilter = vt_filter, .xNext = vt_next, .xEof = vt_eof, .xColumn = vt_column, .xRowid = vt_rowid, \
    }

static sqlite3_module features_module = MODULE(features_connect);
static sqlite3_module feature_stats_module = MODULE(feature_stats_connect);
static sqlite3_module top_examples_module = MODULE(top_examples_connect);

int sl_register_vtabs(sqlite3 *db) {
    sl_catalog *cat = sl_catalog_new();
    if (!cat) return SQLITE_NOMEM;
    /* The catalog is shared by the three modules; the last one registered owns it. */
    int rc = sqlite3_create_module_v2(db, "features", &features_module, cat, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_create_module_v2(db, "feature_stats", &feature_stats_module, cat, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_create_module_v2(db, "top_examples", &top_examples_module, cat, sl_catalog_free);
    else sl_catalog_free(cat);
    return rc;
}
