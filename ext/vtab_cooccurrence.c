/* vtab_cooccurrence.c: the table-valued function feature_cooccurrence.
 *
 *   CREATE TABLE feature_cooccurrence(other_id INTEGER, n_both INTEGER,
 *     jaccard REAL, correlation REAL, feature_id HIDDEN, extraction_id HIDDEN)
 *
 * Examples:
 *   SELECT * FROM feature_cooccurrence(42) LIMIT 10;
 *   SELECT c.other_id, c.jaccard, f.top_token FROM feature_cooccurrence(42) c
 *     JOIN features f ON f.feature_id = c.other_id ORDER BY c.correlation DESC LIMIT 10;
 *
 * One feature f against every other feature o that is active on at least one
 * of f's tokens (n_both > 0), ordered by n_both descending, then other_id:
 *   n_both       tokens where both are active
 *   jaccard      n_both / (n_f + n_o - n_both)
 *   correlation  Pearson correlation of the two features' activations over all
 *                n_tokens counted tokens (zeros included):
 *                (N Sxy - Sx Sy) / sqrt((N Sxx - Sx^2) (N Syy - Sy^2)),
 *                with each feature's sum Sx and sum of squares Sxx from its
 *                statistics (n_active * mean, n_active * (std^2 + mean^2), f32
 *                activations) and the cross term Sxy summed over the co-active
 *                tokens from the stored (fp16-rounded) values; NULL when a
 *                feature is constant (variance 0).
 * f's rows come from the feature-major index; those rows are then read from
 * the segments in ascending order (each block decoded once) and every other
 * feature on them counted: the cost is f's postings times the features per
 * token, with 16 bytes per feature of memory.
 *
 * xBestIndex: the hidden columns feature_id (required) and extraction_id are
 * the arguments (sl_tvf_best_index, vtab_args.h). */
#include <math.h>
#include <sqlite3ext.h>
#include <stdlib.h>
#include <string.h>

#include "catalog.h"
#include "findex.h"
#include "rowstore.h"
#include "vtab_args.h"
#include "registry.h"

SQLITE_EXTENSION_INIT3

enum { C_OTHER, C_N_BOTH, C_JACCARD, C_CORRELATION, C_FEATURE, C_EXTRACTION };
enum { ARG_FEATURE, ARG_EXTRACTION, N_ARGS };

static const sl_arg_spec args_spec[N_ARGS] = {{C_FEATURE, "feature_id", SL_ARG_REQUIRED},
                                              {C_EXTRACTION, "extraction_id", 0}};
static const sl_tvf_spec spec = {"feature_cooccurrence", "feature_cooccurrence(42)", args_spec, N_ARGS};

typedef struct cooc_vtab {
    sqlite3_vtab base;
    sqlite3 *db;
    sl_ctx *ctx;
} cooc_vtab;

typedef struct cooc_row {
    uint32_t other;
    uint64_t n_both;
    double jaccard, correlation;
    int has_correlation;
} cooc_row;

typedef struct cooc_cursor {
    sqlite3_vtab_cursor base;
    cooc_row *rows;
    int64_t n, at;
    int64_t feature, extraction_id;
} cooc_cursor;

static int cooc_connect(sqlite3 *db, void *aux, int argc, const char *const *argv, sqlite3_vtab **out, char **err) {
    (void)argc, (void)argv, (void)err;
    int rc = sqlite3_declare_vtab(db, "CREATE TABLE x(other_id INTEGER, n_both INTEGER, jaccard REAL, "
                                      "correlation REAL, feature_id HIDDEN, extraction_id HIDDEN)");
    if (rc != SQLITE_OK) return rc;
    cooc_vtab *vt = sqlite3_malloc(sizeof *vt);
    if (!vt) return SQLITE_NOMEM;
    memset(vt, 0, sizeof *vt);
    vt->db = db;
    vt->ctx = aux;
    sqlite3_vtab_config(db, SQLITE_VTAB_DIRECTONLY); /* reads files named in the database */
    *out = &vt->base;
    return SQLITE_OK;
}

static int cooc_disconnect(sqlite3_vtab *vtab) {
    sqlite3_free(vtab);
    return SQLITE_OK;
}

static int cooc_best_index(sqlite3_vtab *vtab, sqlite3_index_info *info) {
    int rc = sl_tvf_best_index(vtab, info, &spec);
    if (rc != SQLITE_OK) return rc;
    info->estimatedRows = 1000;
    info->estimatedCost = 1e5;
    if (info->nOrderBy == 1 && info->aOrderBy[0].iColumn == C_N_BOTH && info->aOrderBy[0].desc)
        info->orderByConsumed = 1;
    return SQLITE_OK;
}

static int cooc_open(sqlite3_vtab *vtab, sqlite3_vtab_cursor **out) {
    (void)vtab;
    cooc_cursor *c = sqlite3_malloc(sizeof *c);
    if (!c) return SQLITE_NOMEM;
    memset(c, 0, sizeof *c);
    *out = &c->base;
    return SQLITE_OK;
}

static int cooc_close(sqlite3_vtab_cursor *cur) {
    cooc_cursor *c = (cooc_cursor *)cur;
    free(c->rows);
    sqlite3_free(c);
    return SQLITE_OK;
}

static int by_n_both(const void *pa, const void *pb) {
    const cooc_row *a = pa, *b = pb;
    if (a->n_both != b->n_both) return a->n_both > b->n_both ? -1 : 1;
    return a->other < b->other ? -1 : a->other > b->other;
}

/* A feature's sum and sum of squares over all tokens, from its statistics. */
static void sums_of(const sl_result_feature *rf, double *sum, double *sum_sq) {
    double n = (double)rf->n_active;
    *sum = n * rf->mean;
    *sum_sq = n * (rf->std * rf->std + rf->mean * rf->mean);
}

#define CHUNK 4096

/* Counts the features active on f's rows and turns the counts into rows. */
static int compute(cooc_cursor *c, const sl_open_extraction *x, const sl_findex *index, uint32_t f, sl_err *err) {
    const uint32_t d_sae = x->res.header->d_sae;
    uint64_t *n_both = calloc(d_sae, sizeof *n_both);  /* [d_sae] */
    double *cross = calloc(d_sae, sizeof *cross);        /* [d_sae]: sum of v_f * v_o on co-active rows */
    uint64_t *rows = malloc(CHUNK * sizeof *rows);
    float *vals = malloc(CHUNK * sizeof *vals);
    sl_rowstore *rs = NULL;
    sl_findex_iter it;
    int rc = -1, open = 0;
    if (!n_both || !cross || !rows || !vals) {
        sl_errf(err, "out of memory");
        goto done;
    }
    if (!(rs = sl_rowstore_open(x->store, err))) goto done;
    if (sl_findex_iter_begin(index, f, &it, err)) goto done;
    open = 1;
    int64_t got;
    while ((got = sl_findex_iter_next(&it, rows, vals, CHUNK, err)) > 0) {
        for (int64_t k = 0; k < got; k++) {
            sl_row r;
            if (sl_rowstore_row(rs, rows[k], &r, err)) goto done;
            for (uint32_t j = 0; j < r.nnz; j++) {
                n_both[r.col[j]]++;
                cross[r.col[j]] += (double)vals[k] * (double)r.val[j];
            }
        }
    }
    if (got < 0) goto done;
    int64_t n_rows = 0;
    for (uint32_t o = 0; o < d_sae; o++) n_rows += o != f && n_both[o] > 0;
    if (!(c->rows = malloc((size_t)(n_rows ? n_rows : 1) * sizeof *c->rows))) {
        sl_errf(err, "out of memory");
        goto done;
    }
    const double n_tokens = (double)x->res.header->n_tokens;
    const sl_result_feature *ff = &x->res.features[f];
    double sf, sff;
    sums_of(ff, &sf, &sff);
    const double var_f = n_tokens * sff - sf * sf; /* N^2 times the variance */
    for (uint32_t o = 0; o < d_sae; o++) {
        if (o == f || n_both[o] == 0) continue;
        const sl_result_feature *fo = &x->res.features[o];
        double so, soo;
        sums_of(fo, &so, &soo);
        const double var_o = n_tokens * soo - so * so;
        cooc_row *row = &c->rows[c->n++];
        *row = (cooc_row){.other = o,
                          .n_both = n_both[o],
                          .jaccard = (double)n_both[o] / (double)(ff->n_active + fo->n_active - n_both[o])};
        if (var_f > 0 && var_o > 0) {
            row->correlation = (n_tokens * cross[o] - sf * so) / sqrt(var_f * var_o);
            row->has_correlation = 1;
        }
    }
    qsort(c->rows, (size_t)c->n, sizeof *c->rows, by_n_both);
    rc = 0;
done:
    if (open) sl_findex_iter_end(&it);
    sl_rowstore_close(rs);
    free(n_both);
    free(cross);
    free(rows);
    free(vals);
    return rc;
}

static int cooc_filter(sqlite3_vtab_cursor *cur, int idx, const char *idx_str, int argc, sqlite3_value **argv) {
    (void)idx_str, (void)argc;
    cooc_cursor *c = (cooc_cursor *)cur;
    cooc_vtab *vt = (cooc_vtab *)cur->pVtab;
    free(c->rows);
    c->rows = NULL;
    c->n = c->at = 0;
    sqlite3_vtab *tab = cur->pVtab;
    sqlite3_value *arg[N_ARGS];
    sl_tvf_args(&spec, idx, argv, arg);
    sqlite3_value *fv = arg[ARG_FEATURE], *xv = arg[ARG_EXTRACTION];
    if (sqlite3_value_type(fv) == SQLITE_NULL) return SQLITE_OK; /* = NULL: no rows */
    if (!sl_integer_arg(fv, &c->feature))
        return sl_vtab_error(tab, "feature_cooccurrence: feature_id must be an integer (got '%s')",
                             sqlite3_value_text(fv));
    if (xv && sqlite3_value_type(xv) == SQLITE_NULL) return SQLITE_OK;
    char *msg = NULL;
    sl_open_extraction *x = sl_catalog_acquire(vt->ctx, vt->db, xv != NULL, xv ? sqlite3_value_int64(xv) : 0,
                                               spec.name, &msg);
    if (!x) return sl_vtab_error(tab, "%z", msg);
    c->extraction_id = x->id;
    int rc = SQLITE_OK;
    if (c->feature < 0 || c->feature >= (int64_t)x->res.header->d_sae) {
        rc = sl_vtab_error(tab, "feature_cooccurrence: no feature %lld (extraction %lld has features 0 to %u)",
                                     (long long)c->feature, (long long)x->id, x->res.header->d_sae - 1);
    } else if (x->res.features[c->feature].n_active) {
        const sl_findex *index = sl_catalog_index(x, &msg);
        sl_err err;
        if (!index) rc = sl_vtab_error(tab, "%z", msg);
        else if (compute(c, x, index, (uint32_t)c->feature, &err))
            rc = sl_vtab_error(tab, "feature_cooccurrence: extraction %lld: %s", (long long)x->id, err.msg);
    }
    sl_catalog_release(vt->ctx, x);
    return rc;
}

static int cooc_next(sqlite3_vtab_cursor *cur) {
    ((cooc_cursor *)cur)->at++;
    return SQLITE_OK;
}

static int cooc_eof(sqlite3_vtab_cursor *cur) {
    cooc_cursor *c = (cooc_cursor *)cur;
    return c->at >= c->n;
}

static int cooc_rowid(sqlite3_vtab_cursor *cur, sqlite3_int64 *rowid) {
    cooc_cursor *c = (cooc_cursor *)cur;
    *rowid = c->rows[c->at].other;
    return SQLITE_OK;
}

static int cooc_column(sqlite3_vtab_cursor *cur, sqlite3_context *ctx, int col) {
    cooc_cursor *c = (cooc_cursor *)cur;
    const cooc_row *r = &c->rows[c->at];
    switch (col) {
    case C_OTHER: sqlite3_result_int64(ctx, r->other); break;
    case C_N_BOTH: sqlite3_result_int64(ctx, (sqlite3_int64)r->n_both); break;
    case C_JACCARD: sqlite3_result_double(ctx, r->jaccard); break;
    case C_CORRELATION:
        if (r->has_correlation) sqlite3_result_double(ctx, r->correlation);
        break;
    case C_FEATURE: sqlite3_result_int64(ctx, c->feature); break;
    case C_EXTRACTION: sqlite3_result_int64(ctx, c->extraction_id); break;
    }
    return SQLITE_OK;
}

const sqlite3_module sl_feature_cooccurrence_module = {
    .iVersion = 0, .xCreate = NULL, .xConnect = cooc_connect, .xBestIndex = cooc_best_index,
    .xDisconnect = cooc_disconnect, .xDestroy = NULL, .xOpen = cooc_open, .xClose = cooc_close,
    .xFilter = cooc_filter, .xNext = cooc_next, .xEof = cooc_eof, .xColumn = cooc_column, .xRowid = cooc_rowid,
};
