/* vtab_activations.c: the eponymous virtual table `activations`, every stored
 * nonzero feature activation of an extraction, one row per (token, feature).
 *
 *   CREATE TABLE activations(sequence_id INTEGER, position INTEGER, token TEXT,
 *     feature_id INTEGER, activation REAL, document INTEGER, token_id INTEGER,
 *     extraction_id HIDDEN)
 *
 * Examples:
 *   SELECT sequence_id, position, token, activation FROM activations
 *    WHERE feature_id = 42 ORDER BY activation DESC LIMIT 20;
 *   SELECT count(*), sum(activation) FROM activations WHERE feature_id IN (1, 2);
 *   SELECT feature_id, activation FROM activations WHERE sequence_id = 7 AND position = 3;
 *   SELECT * FROM activations WHERE extraction_id = 2 AND sequence_id = 0;
 *
 * activation is the value as stored (fp16-rounded unless its block was f32),
 * exact as a double. token is the token's text (as top_examples.token),
 * token_id its id. document is the token's document in a text dataset (from
 * the store's tokens.slt), NULL for a run over stored activations.
 *
 * Feature lookups read the feature's postings from the index (index.sli,
 * findex.h) in chunks; sequence lookups read the sequence's rows from the
 * segments (rowstore.h). An extraction without index.sli can still be looked
 * up by sequence; anything that needs the index is an error naming the file.
 *
 * xBestIndex. idxNum bits, with argv filled in this order:
 *   1  feature_id = ?        argv: the id
 *   2  feature_id IN (...)   argv: the list, read whole with sqlite3_vtab_in
 *   4  sequence_id = ?       argv: the sequence
 *   8  position = ?          argv: the position (only with sequence_id)
 *   16 extraction_id = ?     argv: the id
 * With sequence_id the plan walks that sequence's rows (or the one position)
 * and keeps the features asked for, if any: rows ordered by (position,
 * feature_id). Otherwise with feature_id it walks the postings of the features
 * in ascending id: rows ordered by (feature_id, sequence_id, position).
 * Without either it is a full scan of the index (every stored nonzero, same
 * order), costed far above any lookup. ORDER BY is consumed when it follows
 * the plan's order (columns fixed by = skipped). idxStr names the plan so
 * EXPLAIN QUERY PLAN shows it. */
#include <math.h>
#include <sqlite3ext.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "catalog.h"
#include "rowstore.h"
#include "registry.h"
#include "vtab_args.h"

SQLITE_EXTENSION_INIT3

enum { C_SEQUENCE, C_POSITION, C_TOKEN, C_FEATURE, C_ACTIVATION, C_DOCUMENT, C_TOKEN_ID, C_EXTRACTION };
enum { IDX_FEATURE_EQ = 1, IDX_FEATURE_IN = 2, IDX_SEQUENCE = 4, IDX_POSITION = 8, IDX_EXTRACTION = 16 };

#define CHUNK 1024 /* postings decoded at a time */

typedef struct act_vtab {
    sqlite3_vtab base;
    sqlite3 *db;
    sl_ctx *ctx;
} act_vtab;

typedef struct act_cursor {
    sqlite3_vtab_cursor base;
    sl_open_extraction *x;
    const sl_findex *index;
    const sl_tokfile *tokens; /* NULL: no token file (stored activations) */
    int64_t *ids;             /* features asked for (sorted, unique), or NULL for all */
    int64_t n_ids;
    int by_sequence;
    int eof;
    /* feature plan */
    int64_t at;           /* index into ids, or the feature itself when ids is NULL */
    sl_findex_iter it;    /* postings of the current feature */
    int iter_open;
    uint64_t rows[CHUNK]; /* [n_chunk] */
    float vals[CHUNK];    /* [n_chunk] */
    size_t n_chunk, at_chunk;
    /* sequence plan */
    sl_rowstore *rs;        /* also gives tokens when there is no token file */
    char *rs_store;         /* the store rs reads, its extraction and results file: */
    int64_t rs_xid;         /* rs is reused across filters while they are the same */
    struct stat rs_results; /* (a store rebuilt under the same name gets a new rs) */
    uint64_t next_row, end_row;
    sl_row row;
    uint32_t at_nnz;
    /* the current output row */
    uint64_t cur_row;
    uint32_t cur_feature;
    float cur_val;
    int32_t cur_token;
    int have_token;
} act_cursor;

static int act_connect(sqlite3 *db, void *aux, int argc, const char *const *argv, sqlite3_vtab **out, char **err) {
    (void)argc, (void)argv, (void)err;
    int rc = sqlite3_declare_vtab(db, "CREATE TABLE x(sequence_id INTEGER, position INTEGER, token TEXT, "
                                      "feature_id INTEGER, activation REAL, document INTEGER, token_id INTEGER, "
                                      "extraction_id HIDDEN)");
    if (rc != SQLITE_OK) return rc;
    act_vtab *vt = sqlite3_malloc(sizeof *vt);
    if (!vt) return SQLITE_NOMEM;
    memset(vt, 0, sizeof *vt);
    vt->db = db;
    vt->ctx = aux;
    /* It reads files named in the database: never from a schema's triggers or views. */
    sqlite3_vtab_config(db, SQLITE_VTAB_DIRECTONLY);
    *out = &vt->base;
    return SQLITE_OK;
}

static int act_disconnect(sqlite3_vtab *vtab) {
    sqlite3_free(vtab);
    return SQLITE_OK;
}

/* ORDER BY follows `order` (ascending), skipping columns fixed by equality. */
static int order_consumed(const sqlite3_index_info *info, const int *order, int n_order, unsigned fixed_cols) {
    int k = 0;
    for (int i = 0; i < info->nOrderBy; i++) {
        const struct sqlite3_index_orderby *o = &info->aOrderBy[i];
        if (o->desc) return 0;
        while (k < n_order && (fixed_cols >> order[k] & 1) && order[k] != o->iColumn) k++;
        if (k == n_order || order[k] != o->iColumn) {
            if (fixed_cols >> o->iColumn & 1) continue; /* a fixed column anywhere is in order */
            return 0;
        }
        k++;
    }
    return 1;
}

static int act_best_index(sqlite3_vtab *vtab, sqlite3_index_info *info) {
    (void)vtab;
    int con[C_EXTRACTION + 1];
    for (int i = 0; i <= C_EXTRACTION; i++) con[i] = -1;
    for (int i = 0; i < info->nConstraint; i++) {
        const struct sqlite3_index_constraint *c = &info->aConstraint[i];
        /* The table's argument, as in vtabs.c: a plan without it would read another extraction. */
        if (c->op == SQLITE_INDEX_CONSTRAINT_EQ && !c->usable && c->iColumn == C_EXTRACTION) return SQLITE_CONSTRAINT;
        if (c->op != SQLITE_INDEX_CONSTRAINT_EQ || !c->usable || c->iColumn < 0) continue;
        if ((c->iColumn == C_FEATURE || c->iColumn == C_SEQUENCE || c->iColumn == C_POSITION ||
             c->iColumn == C_EXTRACTION) &&
            con[c->iColumn] < 0)
            con[c->iColumn] = i;
    }
    int argv_i = 0, idx = 0, feature_in = 0;
    unsigned fixed = 0;
    double rows;
    if (con[C_FEATURE] >= 0) {
        feature_in = sqlite3_vtab_in(info, con[C_FEATURE], 1);
        idx |= feature_in ? IDX_FEATURE_IN : IDX_FEATURE_EQ;
        info->aConstraintUsage[con[C_FEATURE]].argvIndex = ++argv_i;
        info->aConstraintUsage[con[C_FEATURE]].omit = 1;
        if (!feature_in) fixed |= 1u << C_FEATURE;
    }
    if (con[C_SEQUENCE] >= 0) {
        idx |= IDX_SEQUENCE;
        info->aConstraintUsage[con[C_SEQUENCE]].argvIndex = ++argv_i;
        info->aConstraintUsage[con[C_SEQUENCE]].omit = 1;
        fixed |= 1u << C_SEQUENCE;
        if (con[C_POSITION] >= 0) {
            idx |= IDX_POSITION;
            info->aConstraintUsage[con[C_POSITION]].argvIndex = ++argv_i;
            info->aConstraintUsage[con[C_POSITION]].omit = 1;
            fixed |= 1u << C_POSITION;
        }
    }
    if (con[C_EXTRACTION] >= 0) {
        idx |= IDX_EXTRACTION;
        info->aConstraintUsage[con[C_EXTRACTION]].argvIndex = ++argv_i;
        info->aConstraintUsage[con[C_EXTRACTION]].omit = 1;
    }
    /* Rough sizes: a sequence of ~128 tokens x ~64 features; a feature's
     * postings ~1e4; everything ~1e10. */
    if (idx & IDX_SEQUENCE) {
        rows = idx & IDX_POSITION ? 64.0 : 8192.0;
        if (idx & (IDX_FEATURE_EQ | IDX_FEATURE_IN)) rows /= 64.0;
        static const int order[] = {C_SEQUENCE, C_POSITION, C_FEATURE};
        info->orderByConsumed = order_consumed(info, order, 3, fixed);
        info->idxStr = idx & IDX_POSITION ? "sequence_id=? AND position=?" : "sequence_id=?";
    } else {
        rows = idx & IDX_FEATURE_EQ ? 1e4 : idx & IDX_FEATURE_IN ? 1e5 : 1e10;
        static const int order[] = {C_FEATURE, C_SEQUENCE, C_POSITION};
        info->orderByConsumed = order_consumed(info, order, 3, fixed);
        info->idxStr = idx & IDX_FEATURE_EQ ? "feature_id=?" : idx & IDX_FEATURE_IN ? "feature_id IN (...)" : NULL;
    }
    info->idxNum = idx;
    info->estimatedRows = (sqlite3_int64)rows;
    info->estimatedCost = rows;
    return SQLITE_OK;
}

static int act_open(sqlite3_vtab *vtab, sqlite3_vtab_cursor **out) {
    (void)vtab;
    act_cursor *c = sqlite3_malloc(sizeof *c);
    if (!c) return SQLITE_NOMEM;
    memset(c, 0, sizeof *c);
    c->eof = 1;
    *out = &c->base;
    return SQLITE_OK;
}

/* Drops what belongs to one filter; the rowstore stays for the next one. */
static void cursor_reset(act_cursor *c) {
    act_vtab *vt = (act_vtab *)c->base.pVtab;
    if (c->iter_open) sl_findex_iter_end(&c->it);
    c->iter_open = 0;
    sl_catalog_release(vt->ctx, c->x);
    c->x = NULL;
    c->index = NULL;
    c->tokens = NULL;
    sqlite3_free(c->ids);
    c->ids = NULL;
    c->n_ids = c->at = 0;
    c->n_chunk = c->at_chunk = 0;
    c->eof = 1;
}

static int act_close(sqlite3_vtab_cursor *cur) {
    act_cursor *c = (act_cursor *)cur;
    cursor_reset(c);
    sl_rowstore_close(c->rs);
    free(c->rs_store);
    sqlite3_free(c);
    return SQLITE_OK;
}

/* Ends the scan with msg (sqlite3_malloc'd; NULL: out of memory). */
static int fail(act_cursor *c, char *msg) {
    c->eof = 1;
    return msg ? sl_vtab_error(c->base.pVtab, "%z", msg) : SQLITE_NOMEM;
}

static int fail_err(act_cursor *c, const sl_err *err) {
    c->eof = 1;
    return sl_vtab_error(c->base.pVtab, "activations: extraction %lld: %s", (long long)c->x->id, err->msg);
}

static int wanted(const act_cursor *c, uint32_t feature) {
    if (!c->ids) return 1;
    int64_t lo = 0, hi = c->n_ids;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (c->ids[mid] < (int64_t)feature) lo = mid + 1;
        else hi = mid;
    }
    return lo < c->n_ids && c->ids[lo] == (int64_t)feature;
}

/* The rowstore of the current extraction's store, kept across filters. */
static int need_rowstore(act_cursor *c) {
    const struct stat *a = &c->rs_results, *b = &c->x->file;
    if (c->rs && c->rs_xid == c->x->id && strcmp(c->rs_store, c->x->store) == 0 && a->st_dev == b->st_dev &&
        a->st_ino == b->st_ino && a->st_size == b->st_size && a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
        a->st_mtim.tv_nsec == b->st_mtim.tv_nsec)
        return SQLITE_OK;
    sl_rowstore_close(c->rs);
    free(c->rs_store);
    c->rs_store = NULL;
    sl_err err;
    if (!(c->rs = sl_rowstore_open(c->x->store, &err))) return fail_err(c, &err);
    if (!(c->rs_store = strdup(c->x->store))) return fail(c, NULL);
    c->rs_xid = c->x->id;
    c->rs_results = c->x->file;
    return SQLITE_OK;
}

/* Feature plan: the next posting of the wanted features. */
static int next_posting(act_cursor *c) {
    const uint32_t d_sae = sl_findex_d_sae(c->index);
    for (;;) {
        if (c->at_chunk < c->n_chunk) {
            c->cur_row = c->rows[c->at_chunk];
            c->cur_val = c->vals[c->at_chunk++];
            c->have_token = 0;
            return SQLITE_OK;
        }
        sl_err err;
        if (c->iter_open) {
            int64_t n = sl_findex_iter_next(&c->it, c->rows, c->vals, CHUNK, &err);
            if (n < 0) return fail_err(c, &err);
            c->n_chunk = (size_t)n;
            c->at_chunk = 0;
            if (n > 0) continue;
            sl_findex_iter_end(&c->it);
            c->iter_open = 0;
            c->at++;
        }
        int64_t n_features = c->ids ? c->n_ids : (int64_t)d_sae;
        while (c->at < n_features) {
            int64_t f = c->ids ? c->ids[c->at] : c->at;
            if (f >= 0 && f < (int64_t)d_sae && sl_findex_count(c->index, (uint32_t)f) > 0) break;
            c->at++;
        }
        if (c->at >= n_features) {
            c->eof = 1;
            return SQLITE_OK;
        }
        c->cur_feature = (uint32_t)(c->ids ? c->ids[c->at] : c->at);
        if (sl_findex_iter_begin(c->index, c->cur_feature, &c->it, &err)) return fail_err(c, &err);
        c->iter_open = 1;
    }
}

/* Sequence plan: the next nonzero of the sequence's rows, wanted features only. */
static int next_in_sequence(act_cursor *c) {
    for (;;) {
        while (c->at_nnz < c->row.nnz) {
            uint32_t k = c->at_nnz++;
            if (!wanted(c, c->row.col[k])) continue;
            c->cur_feature = c->row.col[k];
            c->cur_val = c->row.val[k];
            return SQLITE_OK;
        }
        if (c->next_row >= c->end_row) {
            c->eof = 1;
            return SQLITE_OK;
        }
        sl_err err;
        c->cur_row = c->next_row++;
        if (sl_rowstore_row(c->rs, c->cur_row, &c->row, &err)) return fail_err(c, &err);
        c->cur_token = c->row.token;
        c->have_token = 1;
        c->at_nnz = 0;
    }
}

static int act_next(sqlite3_vtab_cursor *cur) {
    act_cursor *c = (act_cursor *)cur;
    return c->by_sequence ? next_in_sequence(c) : next_posting(c);
}

static int act_filter(sqlite3_vtab_cursor *cur, int idx, const char *idx_str, int argc, sqlite3_value **argv) {
    (void)idx_str, (void)argc;
    act_cursor *c = (act_cursor *)cur;
    act_vtab *vt = (act_vtab *)cur->pVtab;
    cursor_reset(c);
    int a = 0;
    int64_t seq = -1, pos = -1;
    int want_ids = (idx & (IDX_FEATURE_EQ | IDX_FEATURE_IN)) != 0, matches = 1;
    if (want_ids) {
        int rc = sl_feature_ids(argv[a++], (idx & IDX_FEATURE_IN) != 0, &c->ids, &c->n_ids);
        if (rc != SQLITE_OK) return rc;
    }
    if (idx & IDX_SEQUENCE) matches &= sl_integer_arg(argv[a++], &seq) && seq >= 0;
    if (idx & IDX_POSITION) matches &= sl_integer_arg(argv[a++], &pos) && pos >= 0;
    int64_t xid = 0;
    if (idx & IDX_EXTRACTION) {
        if (sqlite3_value_type(argv[a]) == SQLITE_NULL) return SQLITE_OK; /* = NULL matches nothing */
        xid = sqlite3_value_int64(argv[a]);
    }
    char *msg = NULL;
    if (!(c->x = sl_catalog_acquire(vt->ctx, vt->db, (idx & IDX_EXTRACTION) != 0, xid, "activations", &msg))) return fail(c, msg);
    if (!(c->tokens = sl_catalog_tokens(c->x, &msg)) && msg) return fail(c, msg);
    if (want_ids && c->n_ids == 0) return SQLITE_OK; /* eof */
    if (!matches) return SQLITE_OK; /* eof: a sequence or position no row has */
    c->eof = 0;
    c->by_sequence = (idx & IDX_SEQUENCE) != 0;
    if (c->by_sequence) {
        int rc = need_rowstore(c);
        if (rc != SQLITE_OK) return rc;
        const uint64_t seq_len = sl_rowstore_seq_len(c->rs), n_rows = sl_rowstore_n_rows(c->rs);
        uint64_t first = (uint64_t)seq * seq_len, last = first + seq_len;
        if (pos >= 0) {
            first += (uint64_t)pos;
            last = (uint64_t)pos < seq_len ? first + 1 : first;
        }
        if ((uint64_t)seq > n_rows / seq_len) first = last = 0; /* no such sequence (and no overflow) */
        c->next_row = first;
        c->end_row = last < n_rows ? last : n_rows;
        c->row.nnz = c->at_nnz = 0;
        return next_in_sequence(c);
    }
    if (!(c->index = sl_catalog_index(c->x, &msg))) return fail(c, msg);
    return next_posting(c);
}

static int act_eof(sqlite3_vtab_cursor *cur) { return ((act_cursor *)cur)->eof; }

static int act_rowid(sqlite3_vtab_cursor *cur, sqlite3_int64 *rowid) {
    act_cursor *c = (act_cursor *)cur;
    *rowid = (sqlite3_int64)(c->cur_row * c->x->res.header->d_sae + c->cur_feature);
    return SQLITE_OK;
}

/* The current row's token id: from the token file, else the segment. */
static int current_token(act_cursor *c, int32_t *token) {
    if (!c->have_token) {
        if (c->tokens && c->cur_row < c->tokens->header->n_seq * c->tokens->header->seq_len) {
            c->cur_token = c->tokens->records[c->cur_row].token;
        } else {
            sl_err err;
            int rc = need_rowstore(c);
            if (rc != SQLITE_OK) return rc;
            if (sl_rowstore_token(c->rs, c->cur_row, &c->cur_token, &err)) return fail_err(c, &err);
        }
        c->have_token = 1;
    }
    *token = c->cur_token;
    return SQLITE_OK;
}

static int act_column(sqlite3_vtab_cursor *cur, sqlite3_context *ctx, int col) {
    act_cursor *c = (act_cursor *)cur;
    const uint32_t seq_len = c->x->res.header->seq_len;
    int32_t token;
    int rc;
    switch (col) {
    case C_SEQUENCE: sqlite3_result_int64(ctx, (sqlite3_int64)(c->cur_row / seq_len)); break;
    case C_POSITION: sqlite3_result_int64(ctx, (sqlite3_int64)(c->cur_row % seq_len)); break;
    case C_FEATURE: sqlite3_result_int64(ctx, c->cur_feature); break;
    case C_ACTIVATION: sqlite3_result_double(ctx, (double)c->cur_val); break;
    case C_EXTRACTION: sqlite3_result_int64(ctx, c->x->id); break;
    case C_DOCUMENT:
        if (c->tokens && c->cur_row < c->tokens->header->n_seq * c->tokens->header->seq_len)
            sqlite3_result_int64(ctx, (sqlite3_int64)c->tokens->records[c->cur_row].doc);
        break; /* else NULL */
    case C_TOKEN_ID:
    case C_TOKEN:
        if ((rc = current_token(c, &token)) != SQLITE_OK) {
            act_vtab *vt = (act_vtab *)cur->pVtab;
            if (vt->base.zErrMsg) sqlite3_result_error(ctx, vt->base.zErrMsg, -1);
            else sqlite3_result_error_nomem(ctx);
            return rc;
        }
        if (col == C_TOKEN_ID) {
            sqlite3_result_int(ctx, token);
        } else {
            sl_buf b = {0};
            sl_token_text(c->x, token, &b);
            if (b.oom) sqlite3_result_error_nomem(ctx);
            else sqlite3_result_text(ctx, sl_buf_str(&b), (int)b.len, SQLITE_TRANSIENT);
            sl_buf_free(&b);
        }
        break;
    }
    return SQLITE_OK;
}

const sqlite3_module sl_activations_module = {
    .iVersion = 0, .xCreate = NULL, .xConnect = act_connect, .xBestIndex = act_best_index,
    .xDisconnect = act_disconnect, .xDestroy = NULL, .xOpen = act_open, .xClose = act_close,
    .xFilter = act_filter, .xNext = act_next, .xEof = act_eof, .xColumn = act_column, .xRowid = act_rowid,
};
