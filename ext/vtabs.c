/* vtabs.c: the eponymous virtual tables features, feature_stats, top_examples.
 *
 *   CREATE TABLE features(feature_id INTEGER, frequency REAL, max_activation REAL,
 *     mean_activation REAL, n_active INTEGER, is_dead INTEGER, is_dense INTEGER,
 *     top_token TEXT, example TEXT, label TEXT, extraction_id HIDDEN)
 *   CREATE TABLE feature_stats(feature_id INTEGER, n_tokens INTEGER, n_active INTEGER,
 *     frequency REAL, log10_frequency REAL, mean REAL, std REAL, min_active REAL,
 *     max REAL, p50 REAL, p90 REAL, p99 REAL, extraction_id HIDDEN)
 *   CREATE TABLE top_examples(feature_id INTEGER, kind TEXT, rank INTEGER,
 *     activation REAL, sequence_id INTEGER, position INTEGER, token TEXT, context TEXT,
 *     tokens TEXT, activations TEXT, max_index INTEGER, document INTEGER,
 *     char_start INTEGER, char_end INTEGER, interval_lo REAL, interval_hi REAL,
 *     interval_share REAL, extraction_id HIDDEN)
 *
 * Examples:
 *   SELECT * FROM features WHERE frequency BETWEEN 1e-4 AND 1e-2
 *     ORDER BY frequency DESC LIMIT 50;
 *   SELECT rank, activation, context FROM top_examples WHERE feature_id = 42 AND kind = 'top';
 *   SELECT interval_lo, interval_hi, interval_share, context FROM top_examples
 *     WHERE feature_id = 42 AND kind = 'interval';
 *   SELECT * FROM feature_stats WHERE feature_id IN (1, 2, 3) AND extraction_id = 2;
 *
 * Rows come from the results file of one extraction: extraction_id = ? picks it,
 * otherwise the most recent extraction whose status is 'done'. Quantiles and the
 * interval/random examples come from its feature-major index (index.sli), the
 * sampled examples' windows from its segments (engine/sample.c), drawn when a
 * query first reaches the feature. is_dead and is_dense compare the frequency
 * with the extraction's dead_threshold and dense_threshold.
 *
 * xBestIndex. idxNum bits, with argv filled in this order:
 *   1      feature_id = ?       argv: the id
 *   2      feature_id IN (...)  argv: the list, read whole with sqlite3_vtab_in
 *   4      extraction_id = ?    argv: the id
 *   8      kind = ?             (top_examples) argv: the kind; 'top' reads no index
 *   16<<n  a range on frequency, max(_activation) or n_active (features and
 *          feature_stats), n = 4 * column + op (op: > >= < <=); argv: the bound
 *   bits 20-22  the order the rows come in: 1 by n_active (= frequency), 2 by
 *          max, plus 4 for descending (ORDER BY on one of those columns)
 * An extraction_id = ? that the plan cannot use (its value comes from a table
 * later in the join) refuses the plan (SQLITE_CONSTRAINT): rows of another
 * extraction would be read and then filtered away.
 * A feature lookup costs its row count (O(1) per feature: fixed-size records);
 * a scan costs d_sae rows. Ranges are tested in C before SQLite sees a row and
 * are not omitted (SQLite re-checks them, so a text or NULL bound keeps SQL's
 * meaning). An ORDER BY on frequency, n_active or max walks a permutation of
 * the features sorted once per extraction and connection (an index, in effect),
 * so `ORDER BY frequency DESC LIMIT 50` stops after 50 rows, and the walk stops
 * at the first row past a range bound. Otherwise rows come in feature_id order
 * (then kind top, interval, random, then rank), so ORDER BY feature_id is
 * consumed. idxStr names what is used, for EXPLAIN QUERY PLAN. */
#include <jansson.h>
#include <math.h>
#include <sqlite3ext.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "catalog.h"
#include "findex.h"
#include "rowstore.h"
#include "sample.h"
#include "vtab_args.h"
#include "registry.h"

SQLITE_EXTENSION_INIT3

typedef enum { T_FEATURES, T_FEATURE_STATS, T_TOP_EXAMPLES } table_kind;

enum { IDX_FEATURE_EQ = 1, IDX_FEATURE_IN = 2, IDX_EXTRACTION = 4, IDX_KIND = 8, IDX_RANGE0 = 16 };
enum { ORDER_SHIFT = 20, ORDER_BY_COUNT = 1, ORDER_BY_MAX = 2, ORDER_DESC = 4 };

/* Range keys and operators (bit IDX_RANGE0 << (4 * key + op)). */
enum { RK_FREQUENCY, RK_MAX, RK_N_ACTIVE, N_RANGE_KEYS };
enum { OP_GT, OP_GE, OP_LT, OP_LE, N_OPS };
static const char *const range_key_names[N_RANGE_KEYS] = {"frequency", "max", "n_active"};
static const char *const op_names[N_OPS] = {">", ">=", "<", "<="};

/* Column numbers. The hidden extraction_id is always last. */
enum { F_FEATURE_ID, F_FREQUENCY, F_MAX, F_MEAN, F_N_ACTIVE, F_IS_DEAD, F_IS_DENSE, F_TOP_TOKEN, F_EXAMPLE, F_LABEL,
       F_EXTRACTION };
enum { S_FEATURE_ID, S_N_TOKENS, S_N_ACTIVE, S_FREQUENCY, S_LOG10_FREQUENCY, S_MEAN, S_STD, S_MIN_ACTIVE, S_MAX, S_P50,
       S_P90, S_P99, S_EXTRACTION };
enum { E_FEATURE_ID, E_KIND, E_RANK, E_ACTIVATION, E_SEQUENCE_ID, E_POSITION, E_TOKEN, E_CONTEXT, E_TOKENS,
       E_ACTIVATIONS, E_MAX_INDEX, E_DOCUMENT, E_CHAR_START, E_CHAR_END, E_INTERVAL_LO, E_INTERVAL_HI,
       E_INTERVAL_SHARE, E_EXTRACTION };

/* top_examples kinds, in the order a feature's rows come. */
enum { K_TOP, K_INTERVAL, K_RANDOM, N_KINDS };
static const char *const kind_names[N_KINDS] = {"top", "interval", "random"};

static const char *const table_names[] = {"features", "feature_stats", "top_examples"};

static const struct {
    const char *schema;
    int extraction_col;
} tables[] = {
    [T_FEATURES] = {"CREATE TABLE x(feature_id INTEGER, frequency REAL, max_activation REAL, mean_activation REAL, "
                    "n_active INTEGER, is_dead INTEGER, is_dense INTEGER, top_token TEXT, example TEXT, label TEXT, "
                    "extraction_id HIDDEN)",
                    F_EXTRACTION},
    [T_FEATURE_STATS] = {"CREATE TABLE x(feature_id INTEGER, n_tokens INTEGER, n_active INTEGER, frequency REAL, "
                         "log10_frequency REAL, mean REAL, std REAL, min_active REAL, max REAL, p50 REAL, p90 REAL, "
                         "p99 REAL, extraction_id HIDDEN)",
                         S_EXTRACTION},
    [T_TOP_EXAMPLES] = {"CREATE TABLE x(feature_id INTEGER, kind TEXT, rank INTEGER, activation REAL, "
                        "sequence_id INTEGER, position INTEGER, token TEXT, context TEXT, tokens TEXT, "
                        "activations TEXT, max_index INTEGER, document INTEGER, char_start INTEGER, "
                        "char_end INTEGER, interval_lo REAL, interval_hi REAL, interval_share REAL, "
                        "extraction_id HIDDEN)",
                        E_EXTRACTION},
};

/* The range key of a column, or -1. */
static int range_key(table_kind kind, int col) {
    if (kind == T_FEATURES)
        return col == F_FREQUENCY ? RK_FREQUENCY : col == F_MAX ? RK_MAX : col == F_N_ACTIVE ? RK_N_ACTIVE : -1;
    if (kind == T_FEATURE_STATS)
        return col == S_FREQUENCY ? RK_FREQUENCY : col == S_MAX ? RK_MAX : col == S_N_ACTIVE ? RK_N_ACTIVE : -1;
    return -1;
}

/* The order a column sorts features in (ORDER_BY_*), or 0. */
static int order_key(table_kind kind, int col) {
    if (kind == T_FEATURES) return col == F_FREQUENCY || col == F_N_ACTIVE ? ORDER_BY_COUNT : col == F_MAX ? ORDER_BY_MAX : 0;
    if (kind == T_FEATURE_STATS)
        return col == S_FREQUENCY || col == S_LOG10_FREQUENCY || col == S_N_ACTIVE ? ORDER_BY_COUNT
               : col == S_MAX                                                       ? ORDER_BY_MAX
                                                                                    : 0;
    return 0;
}

/* Features sorted by n_active and by max, ascending (ties by feature_id), for
 * one extraction; rebuilt when the results file changes (its checksum). */
typedef struct sorted_order {
    int64_t extraction_id;
    uint64_t checksum;
    uint32_t *by[3]; /* [ORDER_BY_COUNT], [ORDER_BY_MAX]: d_sae ids; NULL until asked for */
} sorted_order;

typedef struct feature_vtab {
    sqlite3_vtab base;
    sqlite3 *db;
    sl_ctx *ctx;
    table_kind kind;
    sqlite3_stmt *label_stmt;    /* features.label, prepared on first use */
    sqlite3_stmt *labeled_stmt;  /* whether the extraction has any label, prepared on first use */
    sqlite3_stmt *settings_stmt; /* the extraction's thresholds and options, prepared on first use */
    int settings_columns;        /* what settings_stmt selects: 3, or 1 (options only) on an old table */
    sorted_order order;
} feature_vtab;

typedef struct range_test {
    int key, op;
    double bound;
} range_test;

/* What an extraction's row in `extractions` says about browsing it. */
typedef struct browse_settings {
    double dead_threshold, dense_threshold;
    uint32_t intervals, interval_examples, random_examples;
} browse_settings;

typedef struct feature_cursor {
    sqlite3_vtab_cursor base;
    sl_open_extraction *x;
    browse_settings set;
    int64_t *ids; /* explicit feature ids (sorted, unique), or NULL for all */
    int64_t n_ids, at;
    const uint32_t *perm; /* features in the ORDER BY's order (ascending), or NULL */
    int desc;
    range_test ranges[N_RANGE_KEYS * N_OPS];
    int n_ranges;
    /* top_examples: the row within the current feature */
    int kind_mask; /* 1 << K_* */
    int stage;     /* K_* */
    uint32_t rank; /* index into the stage's examples */
    int64_t sampled_feature; /* the feature `sample` holds, or -1 */
    sl_sample sample;
    sl_rowstore *rows; /* opened on the first sampled example */
    int walk_key;      /* the range key the sorted walk is monotone in (RK_MAX or RK_N_ACTIVE) */
    int has_index;     /* the store has index.sli (looked up once per query) */
    int labels;        /* feature_labels has rows of this extraction: 0 not asked yet, 1 yes, -1 no */
    int eof;
} feature_cursor;

/* The feature's label from feature_labels (NULL when none, or no such table).
 * Whether the extraction has any label is asked once per filter, so a list
 * with no labels costs no lookup per row. */
static void column_label(feature_vtab *vt, feature_cursor *c, sqlite3_context *ctx, int64_t feature_id) {
    if (c->labels == 0) {
        c->labels = -1;
        if (vt->labeled_stmt ||
            sqlite3_prepare_v2(vt->db, "SELECT 1 FROM main.feature_labels WHERE extraction_id = ?1 LIMIT 1", -1,
                               &vt->labeled_stmt, NULL) == SQLITE_OK) {
            sqlite3_bind_int64(vt->labeled_stmt, 1, c->x->id);
            if (sqlite3_step(vt->labeled_stmt) == SQLITE_ROW) c->labels = 1;
            sqlite3_reset(vt->labeled_stmt);
        }
    }
    if (c->labels < 0) return;
    if (!vt->label_stmt &&
        sqlite3_prepare_v2(vt->db, "SELECT label FROM main.feature_labels WHERE extraction_id = ?1 AND feature_id = ?2",
                           -1, &vt->label_stmt, NULL) != SQLITE_OK)
        return;
    sqlite3_bind_int64(vt->label_stmt, 1, c->x->id);
    sqlite3_bind_int64(vt->label_stmt, 2, feature_id);
    if (sqlite3_step(vt->label_stmt) == SQLITE_ROW) sqlite3_result_value(ctx, sqlite3_column_value(vt->label_stmt, 0));
    sqlite3_reset(vt->label_stmt);
}

static int vt_connect(sqlite3 *db, void *aux, int argc, const char *const *argv, sqlite3_vtab **out, char **err,
                      table_kind kind) {
    (void)argc, (void)argv, (void)err;
    int rc = sqlite3_declare_vtab(db, tables[kind].schema);
    if (rc != SQLITE_OK) return rc;
    feature_vtab *vt = sqlite3_malloc(sizeof *vt);
    if (!vt) return SQLITE_NOMEM;
    memset(vt, 0, sizeof *vt);
    vt->db = db;
    vt->ctx = aux;
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

static void order_clear(sorted_order *o) {
    for (int i = 0; i < 3; i++) free(o->by[i]);
    memset(o, 0, sizeof *o);
}

static int vt_disconnect(sqlite3_vtab *vtab) {
    feature_vtab *vt = (feature_vtab *)vtab;
    sqlite3_finalize(vt->label_stmt);
    sqlite3_finalize(vt->labeled_stmt);
    sqlite3_finalize(vt->settings_stmt);
    order_clear(&vt->order);
    sqlite3_free(vtab);
    return SQLITE_OK;
}

static int vt_best_index(sqlite3_vtab *vtab, sqlite3_index_info *info) {
    feature_vtab *vt = (feature_vtab *)vtab;
    int feature_c = -1, extraction_c = -1, kind_c = -1, feature_in = 0;
    int range_c[N_RANGE_KEYS * N_OPS];
    for (int i = 0; i < N_RANGE_KEYS * N_OPS; i++) range_c[i] = -1;
    for (int i = 0; i < info->nConstraint; i++) {
        const struct sqlite3_index_constraint *c = &info->aConstraint[i];
        /* extraction_id is the table's argument (features(2)): a plan that
         * cannot give it would read another extraction (series.c's rule). */
        if (!c->usable && c->op == SQLITE_INDEX_CONSTRAINT_EQ && c->iColumn == tables[vt->kind].extraction_col)
            return SQLITE_CONSTRAINT;
        if (!c->usable) continue;
        int op = c->op == SQLITE_INDEX_CONSTRAINT_GT   ? OP_GT
                 : c->op == SQLITE_INDEX_CONSTRAINT_GE ? OP_GE
                 : c->op == SQLITE_INDEX_CONSTRAINT_LT ? OP_LT
                 : c->op == SQLITE_INDEX_CONSTRAINT_LE ? OP_LE
                                                       : -1;
        int key = range_key(vt->kind, c->iColumn);
        if (op >= 0 && key >= 0) {
            if (range_c[key * N_OPS + op] < 0) range_c[key * N_OPS + op] = i;
            continue;
        }
        if (c->op != SQLITE_INDEX_CONSTRAINT_EQ) continue;
        if (c->iColumn == 0 && feature_c < 0) feature_c = i;
        else if (c->iColumn == tables[vt->kind].extraction_col && extraction_c < 0) extraction_c = i;
        else if (vt->kind == T_TOP_EXAMPLES && c->iColumn == E_KIND && kind_c < 0) kind_c = i;
    }
    int argv_i = 0, idx = 0;
    double rows = 100000.0; /* a scan: d_sae rows, unknown here */
    char *desc = sqlite3_mprintf("%s", "");
    if (feature_c >= 0) {
        feature_in = sqlite3_vtab_in(info, feature_c, 1);
        idx |= feature_in ? IDX_FEATURE_IN : IDX_FEATURE_EQ;
        info->aConstraintUsage[feature_c].argvIndex = ++argv_i;
        info->aConstraintUsage[feature_c].omit = 1;
        rows = feature_in ? 10.0 : 1.0;
        if (vt->kind == T_TOP_EXAMPLES) rows *= 20.0;
        desc = sqlite3_mprintf("%z%s", desc, feature_in ? "feature_id IN (...)" : "feature_id=?");
    }
    if (extraction_c >= 0) {
        idx |= IDX_EXTRACTION;
        info->aConstraintUsage[extraction_c].argvIndex = ++argv_i;
        info->aConstraintUsage[extraction_c].omit = 1;
    }
    if (kind_c >= 0) {
        idx |= IDX_KIND;
        info->aConstraintUsage[kind_c].argvIndex = ++argv_i;
        info->aConstraintUsage[kind_c].omit = 1;
        rows /= 2;
        desc = sqlite3_mprintf("%z%skind=?", desc, desc && *desc ? " " : "");
    }
    for (int r = 0; r < N_RANGE_KEYS * N_OPS; r++) {
        if (range_c[r] < 0) continue;
        idx |= IDX_RANGE0 << r;
        info->aConstraintUsage[range_c[r]].argvIndex = ++argv_i;
        rows /= 3; /* a guess: each bound keeps a third */
        desc = sqlite3_mprintf("%z%s%s%s?", desc, desc && *desc ? " " : "", range_key_names[r / N_OPS],
                               op_names[r % N_OPS]);
    }
    /* ORDER BY one sortable column: walk the sorted permutation (not with a
     * feature lookup, whose few rows SQLite sorts faster itself). */
    if (info->nOrderBy == 1 && feature_c < 0 && order_key(vt->kind, info->aOrderBy[0].iColumn)) {
        int by = order_key(vt->kind, info->aOrderBy[0].iColumn) | (info->aOrderBy[0].desc ? ORDER_DESC : 0);
        idx |= by << ORDER_SHIFT;
        info->orderByConsumed = 1;
        desc = sqlite3_mprintf("%z%sORDER BY %s%s", desc, desc && *desc ? " " : "",
                               (by & ORDER_BY_MAX) ? "max" : "n_active", (by & ORDER_DESC) ? " DESC" : "");
    } else if (info->nOrderBy == 1 && info->aOrderBy[0].iColumn == 0 && !info->aOrderBy[0].desc) {
        info->orderByConsumed = 1;
    }
    info->idxNum = idx;
    if (desc && *desc) {
        info->idxStr = desc;
        info->needToFreeIdxStr = 1;
    } else {
        sqlite3_free(desc);
    }
    info->estimatedRows = (sqlite3_int64)(rows < 1 ? 1 : rows);
    info->estimatedCost = rows < 1 ? 1 : rows;
    if (feature_c >= 0 && !feature_in) info->idxFlags = vt->kind == T_TOP_EXAMPLES ? 0 : SQLITE_INDEX_SCAN_UNIQUE;
    return SQLITE_OK;
}

static int vt_open(sqlite3_vtab *vtab, sqlite3_vtab_cursor **out) {
    (void)vtab;
    feature_cursor *c = sqlite3_malloc(sizeof *c);
    if (!c) return SQLITE_NOMEM;
    memset(c, 0, sizeof *c);
    c->sampled_feature = -1;
    *out = &c->base;
    return SQLITE_OK;
}

static void cursor_reset(feature_cursor *c) {
    feature_vtab *vt = (feature_vtab *)c->base.pVtab;
    sl_catalog_release(vt->ctx, c->x);
    sqlite3_free(c->ids);
    sl_sample_free(&c->sample);
    sl_rowstore_close(c->rows);
    memset(&c->x, 0, sizeof *c - offsetof(feature_cursor, x));
    c->sampled_feature = -1;
    c->eof = 1;
}

static int vt_close(sqlite3_vtab_cursor *cur) {
    cursor_reset((feature_cursor *)cur);
    sqlite3_free(cur);
    return SQLITE_OK;
}

static uint32_t d_sae_of(const feature_cursor *c) { return c->x->res.header->d_sae; }

static int64_t current_feature(const feature_cursor *c) {
    if (c->ids) return c->ids[c->at];
    if (c->perm) return c->perm[c->desc ? (int64_t)d_sae_of(c) - 1 - c->at : c->at];
    return c->at;
}

static double frequency_of(const sl_open_extraction *x, int64_t f) {
    uint64_t n_tokens = x->res.header->n_tokens;
    return n_tokens ? (double)x->res.features[f].n_active / (double)n_tokens : 0.0;
}

/* -1, 0, 1: the column's value (as the table shows it) against a bound. The
 * max column shows the shortest decimal of the f32 max, which differs from the
 * float by far less than 1e-6 relative, so it is formatted only when close. */
static int compare_key(const sl_open_extraction *x, int64_t f, int key, double bound) {
    double v;
    if (key == RK_FREQUENCY) {
        v = frequency_of(x, f);
    } else if (key == RK_N_ACTIVE) {
        v = (double)x->res.features[f].n_active;
    } else {
        v = (double)x->res.features[f].max;
        if (fabs(v - bound) <= 1e-6 * fabs(bound)) v = sl_f32_to_display(x->res.features[f].max);
    }
    return v < bound ? -1 : v > bound;
}

static int range_holds(int cmp, int op) {
    return op == OP_GT ? cmp > 0 : op == OP_GE ? cmp >= 0 : op == OP_LT ? cmp < 0 : cmp <= 0;
}

/* Whether feature f passes every range; *past is set when it fails a bound
 * that every later feature of the sorted walk fails too. */
static int passes_ranges(const feature_cursor *c, int64_t f, int *past) {
    int ok = 1;
    for (int i = 0; i < c->n_ranges; i++) {
        const range_test *r = &c->ranges[i];
        if (range_holds(compare_key(c->x, f, r->key, r->bound), r->op)) continue;
        ok = 0;
        if (c->perm && (r->key == RK_MAX) == (c->walk_key == RK_MAX)) {
            int upper = r->op == OP_LT || r->op == OP_LE;
            if (upper != c->desc) *past = 1; /* ascending past an upper bound, or descending past a lower one */
        }
    }
    return ok;
}

/* ---- sampled examples ------------------------------------------------- */

/* Whether the store has a feature index at all: stores written before it
 * existed have none, and show NULL quantiles and no sampled examples. A file
 * that is there but unreadable is an error, reported by sl_catalog_index. */
static int store_has_index(const sl_open_extraction *x) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", x->store, SL_FINDEX_FILE);
    return access(path, F_OK) == 0;
}

static uint32_t stage_count(const feature_cursor *c, int64_t f, int stage) {
    if (stage == K_TOP) return c->x->res.features[f].n_examples;
    if (c->sampled_feature != f) return 0;
    return stage == K_INTERVAL ? c->sample.n_interval : c->sample.n_random;
}

/* Draws the interval and random examples of feature f and reads their windows. */
static int load_sample(feature_cursor *c, int64_t f) {
    if (c->sampled_feature == f) return SQLITE_OK;
    sl_sample_free(&c->sample);
    c->sampled_feature = -1;
    sl_open_extraction *x = c->x;
    if (x->res.features[f].n_active == 0 || !c->has_index) { /* nothing to draw from */
        c->sampled_feature = f;
        return SQLITE_OK;
    }
    sl_err err;
    char *msg = NULL;
    const sl_findex *index = sl_catalog_index(x, &msg);
    if (!index) return sl_vtab_error(c->base.pVtab, "%z", msg);
    const sl_tokfile *tokens = sl_catalog_tokens(x, &msg); /* NULL for stored activations */
    if (msg) return sl_vtab_error(c->base.pVtab, "%z", msg);
    if (!c->rows && !(c->rows = sl_rowstore_open(x->store, &err)))
        return sl_vtab_error(c->base.pVtab, "saelite: extraction %lld: %s", (long long)x->id, err.msg);
    sl_sample_opts o = {.intervals = c->set.intervals,
                        .per_interval = c->set.interval_examples,
                        .n_random = c->set.random_examples,
                        .seed = sl_sample_seed(x->id, (uint32_t)f)};
    if (sl_sample_pick(index, (uint32_t)f, &o, &c->sample, &err) ||
        sl_sample_windows(&c->sample, c->rows, tokens, (uint32_t)f, x->res.header->context, &err)) {
        sl_sample_free(&c->sample);
        return sl_vtab_error(c->base.pVtab, "saelite: extraction %lld: feature %lld: %s", (long long)x->id,
                                            (long long)f, err.msg);
    }
    c->sampled_feature = f;
    return SQLITE_OK;
}

/* top_examples: moves (stage, rank) to the first row of feature f at or after
 * it. Returns SQLITE_OK with *found set, or an error. */
static int settle_examples(feature_cursor *c, int64_t f, int *found) {
    for (; c->stage < N_KINDS; c->stage++, c->rank = 0) {
        if (!(c->kind_mask & (1 << c->stage))) continue;
        if (c->stage != K_TOP) {
            int rc = load_sample(c, f);
            if (rc != SQLITE_OK) return rc;
        }
        if (c->rank < stage_count(c, f, c->stage)) {
            *found = 1;
            return SQLITE_OK;
        }
    }
    *found = 0;
    return SQLITE_OK;
}

/* Moves to the first valid row at or after the current position. */
static int settle(feature_cursor *c) {
    feature_vtab *vt = (feature_vtab *)c->base.pVtab;
    int64_t n = c->ids ? c->n_ids : (int64_t)d_sae_of(c);
    for (; c->at < n; c->at++, c->stage = 0, c->rank = 0) {
        int64_t f = current_feature(c);
        if (f < 0 || f >= (int64_t)d_sae_of(c)) continue;
        int past = 0;
        if (c->n_ranges && !passes_ranges(c, f, &past)) {
            if (past) break;
            continue;
        }
        if (vt->kind != T_TOP_EXAMPLES) return SQLITE_OK;
        int found, rc = settle_examples(c, f, &found);
        if (rc != SQLITE_OK) return rc;
        if (found) return SQLITE_OK;
    }
    c->eof = 1;
    return SQLITE_OK;
}

/* ---- settings of the extraction ---------------------------------------- */

static uint32_t option_u32(json_t *opts, const char *name, uint32_t def) {
    json_t *v = json_object_get(opts, name);
    return json_is_integer(v) && json_integer_value(v) >= 0 ? (uint32_t)json_integer_value(v) : def;
}

/* Thresholds and sampling options of extraction `id`, read on every query
 * (they change with UPDATE); defaults for what an older database lacks. The
 * options JSON is parsed for top_examples only. */
static void read_settings(feature_vtab *vt, int64_t id, browse_settings *s) {
    *s = (browse_settings){.dead_threshold = 0, .dense_threshold = 0.1, .intervals = 10, .interval_examples = 5,
                           .random_examples = 10};
    if (!vt->settings_stmt) {
        vt->settings_columns = 3;
        if (sqlite3_prepare_v2(vt->db,
                               "SELECT options, dead_threshold, dense_threshold FROM main.extractions WHERE id = ?1",
                               -1, &vt->settings_stmt, NULL) != SQLITE_OK) {
            vt->settings_columns = 1;
            if (sqlite3_prepare_v2(vt->db, "SELECT options FROM main.extractions WHERE id = ?1", -1,
                                   &vt->settings_stmt, NULL) != SQLITE_OK)
                return;
        }
    }
    sqlite3_stmt *q = vt->settings_stmt;
    sqlite3_bind_int64(q, 1, id);
    if (sqlite3_step(q) == SQLITE_ROW) {
        if (vt->kind == T_TOP_EXAMPLES) {
            const char *text = (const char *)sqlite3_column_text(q, 0);
            json_t *opts = text ? json_loads(text, 0, NULL) : NULL;
            s->intervals = option_u32(opts, "intervals", s->intervals);
            if (s->intervals == 0) s->intervals = 1;
            s->interval_examples = option_u32(opts, "interval_examples", s->interval_examples);
            s->random_examples = option_u32(opts, "random_examples", s->random_examples);
            json_decref(opts);
        }
        if (vt->settings_columns == 3) {
            if (sqlite3_column_type(q, 1) != SQLITE_NULL) s->dead_threshold = sqlite3_column_double(q, 1);
            if (sqlite3_column_type(q, 2) != SQLITE_NULL) s->dense_threshold = sqlite3_column_double(q, 2);
        }
    }
    sqlite3_reset(q);
}

/* ---- the sorted walk ---------------------------------------------------- */

typedef struct sort_item {
    double key; /* n_active (exact below 2^53) or max */
    uint32_t feature;
} sort_item;

static int by_key(const void *pa, const void *pb) {
    const sort_item *a = pa, *b = pb;
    if (a->key != b->key) return a->key < b->key ? -1 : 1;
    return a->feature < b->feature ? -1 : a->feature > b->feature;
}

/* The permutation for `by`, sorted on first use for this results file. */
static const uint32_t *sorted_features(feature_vtab *vt, const sl_open_extraction *x, int by) {
    sorted_order *o = &vt->order;
    if (o->extraction_id != x->id || o->checksum != x->res.header->checksum) {
        order_clear(o);
        o->extraction_id = x->id;
        o->checksum = x->res.header->checksum;
    }
    if (!o->by[by]) {
        uint32_t n = x->res.header->d_sae;
        uint32_t *p = malloc((size_t)(n ? n : 1) * sizeof *p);
        sort_item *items = malloc((size_t)(n ? n : 1) * sizeof *items);
        if (!p || !items) {
            free(p);
            free(items);
            return NULL;
        }
        for (uint32_t i = 0; i < n; i++)
            items[i] = (sort_item){by == ORDER_BY_MAX ? (double)x->res.features[i].max
                                                      : (double)x->res.features[i].n_active,
                                   i};
        qsort(items, n, sizeof *items, by_key);
        for (uint32_t i = 0; i < n; i++) p[i] = items[i].feature;
        free(items);
        o->by[by] = p;
    }
    return o->by[by];
}

static int kind_from_value(sqlite3_value *v) {
    const char *s = (const char *)sqlite3_value_text(v);
    if (sqlite3_value_type(v) != SQLITE_TEXT || !s) return 0;
    for (int k = 0; k < N_KINDS; k++)
        if (strcmp(s, kind_names[k]) == 0) return 1 << k;
    return 0; /* no such kind: no rows */
}

static int vt_filter(sqlite3_vtab_cursor *cur, int idx, const char *idx_str, int argc, sqlite3_value **argv) {
    (void)idx_str, (void)argc;
    feature_cursor *c = (feature_cursor *)cur;
    feature_vtab *vt = (feature_vtab *)cur->pVtab;
    cursor_reset(c);
    c->labels = 0;
    int a = 0;
    int want_ids = idx & (IDX_FEATURE_EQ | IDX_FEATURE_IN);
    if (want_ids) {
        int rc = sl_feature_ids(argv[a++], (idx & IDX_FEATURE_IN) != 0, &c->ids, &c->n_ids);
        if (rc != SQLITE_OK) return rc;
    }
    int has_x = (idx & IDX_EXTRACTION) != 0;
    int64_t xid = 0;
    if (has_x) {
        if (sqlite3_value_type(argv[a]) == SQLITE_NULL) return SQLITE_OK; /* = NULL matches nothing */
        xid = sqlite3_value_int64(argv[a++]);
    }
    c->kind_mask = (1 << N_KINDS) - 1;
    if (idx & IDX_KIND) c->kind_mask = kind_from_value(argv[a++]);
    for (int r = 0; r < N_RANGE_KEYS * N_OPS; r++) {
        if (!(idx & (IDX_RANGE0 << r))) continue;
        sqlite3_value *v = argv[a++];
        int t = sqlite3_value_type(v);
        if (t == SQLITE_NULL) return SQLITE_OK; /* a comparison with NULL matches nothing */
        if (t != SQLITE_INTEGER && t != SQLITE_FLOAT) continue; /* SQLite's own check decides */
        c->ranges[c->n_ranges++] = (range_test){.key = r / N_OPS, .op = r % N_OPS, .bound = sqlite3_value_double(v)};
    }
    if (!c->kind_mask) return SQLITE_OK;
    char *msg = NULL;
    c->x = sl_catalog_acquire(vt->ctx, vt->db, has_x, xid, table_names[vt->kind], &msg);
    if (!c->x) return sl_vtab_error(c->base.pVtab, "%z", msg);
    read_settings(vt, c->x->id, &c->set);
    c->has_index = vt->kind != T_FEATURES && store_has_index(c->x);
    int by = (idx >> ORDER_SHIFT) & (ORDER_BY_COUNT | ORDER_BY_MAX);
    if (by) {
        if (!(c->perm = sorted_features(vt, c->x, by))) return SQLITE_NOMEM;
        c->walk_key = by == ORDER_BY_MAX ? RK_MAX : RK_N_ACTIVE;
        c->desc = (idx >> ORDER_SHIFT & ORDER_DESC) != 0;
    }
    if (want_ids && c->n_ids == 0) return SQLITE_OK; /* eof */
    c->eof = 0;
    return settle(c);
}

static int vt_next(sqlite3_vtab_cursor *cur) {
    feature_cursor *c = (feature_cursor *)cur;
    feature_vtab *vt = (feature_vtab *)cur->pVtab;
    if (vt->kind == T_TOP_EXAMPLES) {
        c->rank++;
        int found, rc = settle_examples(c, current_feature(c), &found);
        if (rc != SQLITE_OK || found) return rc;
    }
    c->at++;
    c->stage = 0;
    c->rank = 0;
    return settle(c);
}

static int vt_eof(sqlite3_vtab_cursor *cur) { return ((feature_cursor *)cur)->eof; }

static int vt_rowid(sqlite3_vtab_cursor *cur, sqlite3_int64 *rowid) {
    feature_cursor *c = (feature_cursor *)cur;
    feature_vtab *vt = (feature_vtab *)cur->pVtab;
    if (vt->kind != T_TOP_EXAMPLES) {
        *rowid = current_feature(c);
        return SQLITE_OK;
    }
    /* Per feature: top_k top rows, then the interval rows, then the random ones. */
    int64_t n_top = c->x->res.header->top_k, n_interval = (int64_t)c->set.intervals * c->set.interval_examples;
    int64_t stride = n_top + n_interval + c->set.random_examples;
    int64_t base = c->stage == K_TOP ? 0 : c->stage == K_INTERVAL ? n_top : n_top + n_interval;
    *rowid = current_feature(c) * stride + base + c->rank;
    return SQLITE_OK;
}

/* Hands the buffer to SQLite (no copy); b is left empty. */
static void result_buf(sqlite3_context *ctx, sl_buf *b) {
    if (b->oom) {
        sqlite3_result_error_nomem(ctx);
        sl_buf_free(b);
        return;
    }
    sl_buf_str(b);
    if (!b->data) {
        sqlite3_result_text(ctx, "", 0, SQLITE_STATIC);
        return;
    }
    sqlite3_result_text64(ctx, b->data, b->len, free, SQLITE_UTF8);
    memset(b, 0, sizeof *b);
}

/* A token's text: straight from the extraction's decoded-token table when it is there. */
static void result_token(sqlite3_context *ctx, const sl_open_extraction *x, int32_t token) {
    size_t len;
    const char *text = sl_token_text_ref(x, token, &len);
    if (text) {
        sqlite3_result_text64(ctx, text, len, SQLITE_TRANSIENT, SQLITE_UTF8);
        return;
    }
    sl_buf b = {0};
    sl_token_text(x, token, &b);
    result_buf(ctx, &b);
}

static void result_quantile(sqlite3_context *ctx, const feature_cursor *c, int64_t f, int col) {
    sl_open_extraction *x = c->x;
    if (x->res.features[f].n_active == 0 || !c->has_index) return; /* NULL */
    char *msg = NULL;
    const sl_findex *index = sl_catalog_index(x, &msg);
    if (!index) {
        sqlite3_result_error(ctx, msg ? msg : "saelite: out of memory", -1);
        sqlite3_free(msg);
        return;
    }
    float q[3];
    sl_findex_quantiles(index, (uint32_t)f, &q[0], &q[1], &q[2]);
    float v = q[col - S_P50];
    if (!isnan(v)) sqlite3_result_double(ctx, sl_f32_to_display(v));
}

/* One top_examples row: a top example of the results file, or a sampled one
 * whose window lives in the cursor's sample. The renderers in catalog.c read
 * windows through x->res.windows, so a sampled row is shown through a copy of
 * x whose windows are the sample's. */
static void example_column(feature_cursor *c, sqlite3_context *ctx, int64_t f, int col) {
    const sl_open_extraction *x = c->x;
    const sl_result_example *e;
    const sl_sampled *s = NULL;
    sl_open_extraction view;
    if (c->stage == K_TOP) {
        e = x->res.examples + (size_t)f * x->res.header->top_k + c->rank;
    } else {
        s = &c->sample.examples[c->stage == K_INTERVAL ? c->rank : c->sample.n_interval + c->rank];
        e = &s->ex;
        view = *x;
        view.res.windows = c->sample.windows;
        x = &view;
    }
    sl_buf b = {0};
    switch (col) {
    case E_KIND: sqlite3_result_text(ctx, kind_names[c->stage], -1, SQLITE_STATIC); break;
    case E_RANK: sqlite3_result_int(ctx, (int)c->rank + 1); break;
    case E_ACTIVATION: sqlite3_result_double(ctx, sl_f32_to_display(e->act)); break;
    case E_SEQUENCE_ID: sqlite3_result_int64(ctx, (sqlite3_int64)e->sequence); break;
    case E_POSITION: sqlite3_result_int64(ctx, e->position); break;
    case E_TOKEN: result_token(ctx, x, x->res.windows[e->window_offset + e->max_index].token); break;
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
    case E_INTERVAL_LO:
    case E_INTERVAL_HI:
    case E_INTERVAL_SHARE:
        if (!s || s->kind != SL_SAMPLE_INTERVAL) break; /* NULL */
        sqlite3_result_double(ctx, col == E_INTERVAL_LO   ? s->interval_lo
                                   : col == E_INTERVAL_HI ? s->interval_hi
                                                          : s->interval_share);
        break;
    }
}

static int vt_column(sqlite3_vtab_cursor *cur, sqlite3_context *ctx, int col) {
    feature_cursor *c = (feature_cursor *)cur;
    feature_vtab *vt = (feature_vtab *)cur->pVtab;
    sl_open_extraction *x = c->x;
    int64_t f = current_feature(c);
    const sl_result_feature *rf = &x->res.features[f];
    const uint64_t n_tokens = x->res.header->n_tokens;
    const double freq = frequency_of(x, f);
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
        case F_IS_DEAD: sqlite3_result_int(ctx, freq <= c->set.dead_threshold); break;
        case F_IS_DENSE: sqlite3_result_int(ctx, freq > c->set.dense_threshold); break;
        case F_TOP_TOKEN:
            if (!rf->n_examples) break; /* NULL */
            result_token(ctx, x, x->res.windows[top->window_offset + top->max_index].token);
            break;
        case F_LABEL: column_label(vt, c, ctx, f); break;
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
        case S_P50:
        case S_P90:
        case S_P99: result_quantile(ctx, c, f, col); break;
        }
        break;
    case T_TOP_EXAMPLES: example_column(c, ctx, f, col); break;
    }
    return SQLITE_OK;
}

#define MODULE(connect)                                                                                      \
    {                                                                                                        \
        .iVersion = 0, .xCreate = NULL, .xConnect = connect, .xBestIndex = vt_best_index,                   \
        .xDisconnect = vt_disconnect, .xDestroy = NULL, .xOpen = vt_open, .xClose = vt_close,              \
        .xFilter = vt_filter, .xNext = vt_next, .xEof = vt_eof, .xColumn = vt_column, .xRowid = vt_rowid, \
    }

const sqlite3_module sl_features_module = MODULE(features_connect);
const sqlite3_module sl_feature_stats_module = MODULE(feature_stats_connect);
const sqlite3_module sl_top_examples_module = MODULE(top_examples_connect);
