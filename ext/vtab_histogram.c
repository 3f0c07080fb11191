/* vtab_histogram.c: the table-valued functions feature_histogram and density_histogram.
 *
 *   CREATE TABLE feature_histogram(bin_lo REAL, bin_hi REAL, count INTEGER,
 *     feature_id HIDDEN, bins HIDDEN, scale HIDDEN, extraction_id HIDDEN)
 *   CREATE TABLE density_histogram(bin_lo REAL, bin_hi REAL, count INTEGER,
 *     bins HIDDEN, extraction_id HIDDEN)
 *
 * Examples:
 *   SELECT * FROM feature_histogram(42);              -- 50 linear bins
 *   SELECT * FROM feature_histogram(42, 20, 'log');   -- 20 bins of log10(value)
 *   SELECT * FROM density_histogram(40) WHERE extraction_id = 2;
 *
 * feature_histogram: the distribution of one feature's active values, as
 * stored (the index's postings, fp16-rounded), in `bins` bins (default 50, as
 * sae_vis) spanning [min, max] of those values: equal widths for 'linear'
 * (default), equal widths of log10(value) for 'log'. Value v goes to bin
 * floor((v - min) / (max - min) * bins) (of log10 v, log10 min, log10 max for
 * 'log'), the maximum to the last bin. Every bin is a row, empty ones with
 * count 0; when all values are equal there is one row [v, v]; a dead feature
 * has none. Two streaming passes over the postings (range, then counts): a
 * feature with millions of postings needs no memory of its size.
 *
 * density_histogram: log10 of every feature's frequency (n_active / n_tokens)
 * in `bins` equal-width bins (default 50) spanning [min, max] over the features
 * that fire; dead features (frequency 0, log10 undefined) are the first row,
 * with bin_lo and bin_hi NULL (count 0 when there are none). From the results
 * file alone.
 *
 * xBestIndex: the hidden columns are the arguments, in the order above
 * (sl_tvf_best_index, vtab_args.h); feature_histogram needs feature_id. */
#include <math.h>
#include <sqlite3ext.h>
#include <stdlib.h>
#include <string.h>

#include "catalog.h"
#include "findex.h"
#include "vtab_args.h"
#include "registry.h"

SQLITE_EXTENSION_INIT3

typedef enum { H_FEATURE, H_DENSITY } histogram_kind;

enum { C_BIN_LO, C_BIN_HI, C_COUNT, C_FIRST_HIDDEN };
/* Hidden columns, in argument order. */
enum { FH_FEATURE = C_FIRST_HIDDEN, FH_BINS, FH_SCALE, FH_EXTRACTION, FH_N };
enum { DH_BINS = C_FIRST_HIDDEN, DH_EXTRACTION, DH_N };

#define DEFAULT_BINS 50
#define MAX_BINS 100000

static const sl_arg_spec feature_args[] = {{FH_FEATURE, "feature_id", SL_ARG_REQUIRED},
                                           {FH_BINS, "bins", 0},
                                           {FH_SCALE, "scale", 0},
                                           {FH_EXTRACTION, "extraction_id", 0}};
static const sl_arg_spec density_args[] = {{DH_BINS, "bins", 0}, {DH_EXTRACTION, "extraction_id", 0}};
static const sl_tvf_spec specs[] = {
    [H_FEATURE] = {"feature_histogram", "feature_histogram(42)", feature_args, 4},
    [H_DENSITY] = {"density_histogram", "density_histogram(40)", density_args, 2},
};

typedef struct histogram_vtab {
    sqlite3_vtab base;
    sqlite3 *db;
    sl_ctx *ctx;
    histogram_kind kind;
} histogram_vtab;

typedef struct bin {
    double lo, hi;
    int bounds_null; /* density_histogram's dead-feature row */
    uint64_t count;
} bin;

typedef struct histogram_cursor {
    sqlite3_vtab_cursor base;
    bin *bins;
    int64_t n, at;
    int64_t extraction_id;
    /* feature_histogram's arguments, shown in their hidden columns */
    int64_t feature, n_bins;
    int log_scale;
} histogram_cursor;

static int hist_connect(sqlite3 *db, void *aux, int argc, const char *const *argv, sqlite3_vtab **out, char **err,
                        histogram_kind kind) {
    (void)argc, (void)argv, (void)err;
    int rc = sqlite3_declare_vtab(db, kind == H_FEATURE ? "CREATE TABLE x(bin_lo REAL, bin_hi REAL, count INTEGER, "
                                                          "feature_id HIDDEN, bins HIDDEN, scale HIDDEN, "
                                                          "extraction_id HIDDEN)"
                                                        : "CREATE TABLE x(bin_lo REAL, bin_hi REAL, count INTEGER, "
                                                          "bins HIDDEN, extraction_id HIDDEN)");
    if (rc != SQLITE_OK) return rc;
    histogram_vtab *vt = sqlite3_malloc(sizeof *vt);
    if (!vt) return SQLITE_NOMEM;
    memset(vt, 0, sizeof *vt);
    vt->db = db;
    vt->ctx = aux;
    vt->kind = kind;
    sqlite3_vtab_config(db, SQLITE_VTAB_DIRECTONLY); /* reads files named in the database */
    *out = &vt->base;
    return SQLITE_OK;
}

static int feature_histogram_connect(sqlite3 *db, void *aux, int argc, const char *const *argv, sqlite3_vtab **out,
                                     char **err) {
    return hist_connect(db, aux, argc, argv, out, err, H_FEATURE);
}

static int density_histogram_connect(sqlite3 *db, void *aux, int argc, const char *const *argv, sqlite3_vtab **out,
                                     char **err) {
    return hist_connect(db, aux, argc, argv, out, err, H_DENSITY);
}

static int hist_disconnect(sqlite3_vtab *vtab) {
    sqlite3_free(vtab);
    return SQLITE_OK;
}

static int hist_best_index(sqlite3_vtab *vtab, sqlite3_index_info *info) {
    histogram_vtab *vt = (histogram_vtab *)vtab;
    int rc = sl_tvf_best_index(vtab, info, &specs[vt->kind]);
    if (rc != SQLITE_OK) return rc;
    info->estimatedRows = DEFAULT_BINS;
    info->estimatedCost = 1000.0;
    return SQLITE_OK;
}

static int hist_open(sqlite3_vtab *vtab, sqlite3_vtab_cursor **out) {
    (void)vtab;
    histogram_cursor *c = sqlite3_malloc(sizeof *c);
    if (!c) return SQLITE_NOMEM;
    memset(c, 0, sizeof *c);
    *out = &c->base;
    return SQLITE_OK;
}

static int hist_close(sqlite3_vtab_cursor *cur) {
    histogram_cursor *c = (histogram_cursor *)cur;
    sqlite3_free(c->bins);
    sqlite3_free(c);
    return SQLITE_OK;
}

static int alloc_bins(histogram_cursor *c, int64_t n) {
    c->bins = sqlite3_malloc64((sqlite3_uint64)(n ? n : 1) * sizeof *c->bins);
    if (!c->bins) return SQLITE_NOMEM;
    memset(c->bins, 0, (size_t)(n ? n : 1) * sizeof *c->bins);
    c->n = n;
    return SQLITE_OK;
}

/* Equal-width bins over [lo, hi] (of whatever the caller maps values to). */
static void set_edges(bin *b, int64_t n, double lo, double hi, int exp10) {
    for (int64_t i = 0; i < n; i++) {
        double a = lo + (hi - lo) * (double)i / (double)n, z = i + 1 == n ? hi : lo + (hi - lo) * (double)(i + 1) / (double)n;
        b[i].lo = exp10 ? pow(10, a) : a;
        b[i].hi = exp10 ? pow(10, z) : z;
    }
}

static int64_t bin_of(double v, double lo, double hi, int64_t n) {
    double t = floor((v - lo) / (hi - lo) * (double)n);
    return t < 0 ? 0 : t >= (double)n ? n - 1 : (int64_t)t;
}

#define CHUNK 8192

/* Two passes over the feature's postings: min and max, then the counts. */
static int fill_feature_histogram(histogram_cursor *c, const sl_findex *index, uint32_t f, sl_err *err) {
    uint64_t *rows = malloc(CHUNK * sizeof *rows);
    float *vals = malloc(CHUNK * sizeof *vals);
    if (!rows || !vals) {
        free(rows);
        free(vals);
        return sl_errf(err, "out of memory");
    }
    sl_findex_iter it;
    int64_t got;
    float lo = INFINITY, hi = -INFINITY;
    uint64_t total = 0;
    int rc = -1;
    if (sl_findex_iter_begin(index, f, &it, err)) goto done;
    while ((got = sl_findex_iter_next(&it, rows, vals, CHUNK, err)) > 0) {
        for (int64_t k = 0; k < got; k++) {
            if (vals[k] < lo) lo = vals[k];
            if (vals[k] > hi) hi = vals[k];
        }
        total += (uint64_t)got;
    }
    sl_findex_iter_end(&it);
    if (got < 0) goto done;
    if (total == 0) { /* dead: no rows */
        rc = 0;
        goto done;
    }
    if (lo == hi) { /* one value: one bin [v, v] */
        if (alloc_bins(c, 1) != SQLITE_OK) {
            sl_errf(err, "out of memory");
            goto done;
        }
        c->bins[0] = (bin){.lo = lo, .hi = hi, .count = total};
        rc = 0;
        goto done;
    }
    double a = c->log_scale ? log10(lo) : lo, z = c->log_scale ? log10(hi) : hi;
    if (alloc_bins(c, c->n_bins) != SQLITE_OK) {
        sl_errf(err, "out of memory");
        goto done;
    }
    set_edges(c->bins, c->n, a, z, c->log_scale);
    c->bins[0].lo = lo; /* exact ends, whatever pow() rounds to */
    c->bins[c->n - 1].hi = hi;
    if (sl_findex_iter_begin(index, f, &it, err)) goto done;
    while ((got = sl_findex_iter_next(&it, rows, vals, CHUNK, err)) > 0)
        for (int64_t k = 0; k < got; k++)
            c->bins[bin_of(c->log_scale ? log10(vals[k]) : vals[k], a, z, c->n)].count++;
    sl_findex_iter_end(&it);
    rc = got < 0 ? -1 : 0;
done:
    free(rows);
    free(vals);
    return rc;
}

static int fill_density_histogram(histogram_cursor *c, const sl_open_extraction *x, int64_t n_bins) {
    const uint32_t d_sae = x->res.header->d_sae;
    const double n_tokens = (double)x->res.header->n_tokens;
    double lo = INFINITY, hi = -INFINITY;
    uint64_t dead = 0;
    for (uint32_t f = 0; f < d_sae; f++) {
        uint64_t n = x->res.features[f].n_active;
        if (!n) {
            dead++;
            continue;
        }
        double l = log10((double)n / n_tokens);
        if (l < lo) lo = l;
        if (l > hi) hi = l;
    }
    int64_t live_bins = dead == d_sae ? 0 : lo == hi ? 1 : n_bins;
    if (alloc_bins(c, 1 + live_bins) != SQLITE_OK) return SQLITE_NOMEM;
    c->bins[0] = (bin){.bounds_null = 1, .count = dead};
    if (live_bins == 1) c->bins[1] = (bin){.lo = lo, .hi = hi};
    else if (live_bins > 1) set_edges(c->bins + 1, live_bins, lo, hi, 0);
    if (live_bins)
        for (uint32_t f = 0; f < d_sae; f++) {
            uint64_t n = x->res.features[f].n_active;
            if (n) c->bins[1 + (live_bins == 1 ? 0 : bin_of(log10((double)n / n_tokens), lo, hi, live_bins))].count++;
        }
    return SQLITE_OK;
}

static int hist_filter(sqlite3_vtab_cursor *cur, int idx, const char *idx_str, int argc, sqlite3_value **argv) {
    (void)idx_str, (void)argc;
    histogram_cursor *c = (histogram_cursor *)cur;
    histogram_vtab *vt = (histogram_vtab *)cur->pVtab;
    const char *fn = specs[vt->kind].name;
    sqlite3_free(c->bins);
    c->bins = NULL;
    c->n = c->at = 0;
    sqlite3_value *given[4], *arg[FH_N] = {0}; /* by column */
    sl_tvf_args(&specs[vt->kind], idx, argv, given);
    for (int a = 0; a < specs[vt->kind].n_args; a++) arg[specs[vt->kind].args[a].column] = given[a];
    int bins_col = vt->kind == H_FEATURE ? FH_BINS : DH_BINS;
    int extraction_col = vt->kind == H_FEATURE ? FH_EXTRACTION : DH_EXTRACTION;
    sqlite3_vtab *tab = cur->pVtab;

    c->n_bins = DEFAULT_BINS;
    if (arg[bins_col] && sqlite3_value_type(arg[bins_col]) != SQLITE_NULL &&
        (!sl_integer_arg(arg[bins_col], &c->n_bins) || c->n_bins < 1 || c->n_bins > MAX_BINS))
        return sl_vtab_error(tab, "%s: bins must be an integer from 1 to %d (got '%s')", fn, MAX_BINS,
                                       sqlite3_value_text(arg[bins_col]));
    c->log_scale = 0;
    if (vt->kind == H_FEATURE && arg[FH_SCALE] && sqlite3_value_type(arg[FH_SCALE]) != SQLITE_NULL) {
        const char *s = (const char *)sqlite3_value_text(arg[FH_SCALE]);
        if (s && strcmp(s, "log") == 0) c->log_scale = 1;
        else if (!s || strcmp(s, "linear") != 0)
            return sl_vtab_error(tab, "%s: scale must be 'linear' or 'log' (got '%s')", fn, s ? s : "");
    }
    if (vt->kind == H_FEATURE) {
        if (sqlite3_value_type(arg[FH_FEATURE]) == SQLITE_NULL) return SQLITE_OK; /* = NULL: no rows */
        if (!sl_integer_arg(arg[FH_FEATURE], &c->feature))
            return sl_vtab_error(tab, "%s: feature_id must be an integer (got '%s')", fn,
                                           sqlite3_value_text(arg[FH_FEATURE]));
    }
    int has_x = arg[extraction_col] != NULL;
    if (has_x && sqlite3_value_type(arg[extraction_col]) == SQLITE_NULL) return SQLITE_OK;
    char *msg = NULL;
    sl_open_extraction *x =
        sl_catalog_acquire(vt->ctx, vt->db, has_x, has_x ? sqlite3_value_int64(arg[extraction_col]) : 0, fn, &msg);
    if (!x) return sl_vtab_error(tab, "%z", msg);
    c->extraction_id = x->id;
    int rc = SQLITE_OK;
    if (vt->kind == H_DENSITY) {
        rc = fill_density_histogram(c, x, c->n_bins);
    } else if (c->feature < 0 || c->feature >= (int64_t)x->res.header->d_sae) {
        rc = sl_vtab_error(tab, "%s: no feature %lld (extraction %lld has features 0 to %u)", fn,
                                     (long long)c->feature, (long long)x->id, x->res.header->d_sae - 1);
    } else if (x->res.features[c->feature].n_active) {
        const sl_findex *index = sl_catalog_index(x, &msg);
        sl_err err;
        if (!index) rc = sl_vtab_error(tab, "%z", msg);
        else if (fill_feature_histogram(c, index, (uint32_t)c->feature, &err))
            rc = sl_vtab_error(tab, "%s: extraction %lld: %s", fn, (long long)x->id, err.msg);
    }
    sl_catalog_release(vt->ctx, x);
    return rc;
}

static int hist_next(sqlite3_vtab_cursor *cur) {
    ((histogram_cursor *)cur)->at++;
    return SQLITE_OK;
}

static int hist_eof(sqlite3_vtab_cursor *cur) {
    histogram_cursor *c = (histogram_cursor *)cur;
    return c->at >= c->n;
}

static int hist_rowid(sqlite3_vtab_cursor *cur, sqlite3_int64 *rowid) {
    *rowid = ((histogram_cursor *)cur)->at;
    return SQLITE_OK;
}

static int hist_column(sqlite3_vtab_cursor *cur, sqlite3_context *ctx, int col) {
    histogram_cursor *c = (histogram_cursor *)cur;
    histogram_vtab *vt = (histogram_vtab *)cur->pVtab;
    const bin *b = &c->bins[c->at];
    if (vt->kind == H_DENSITY && col >= C_FIRST_HIDDEN) col = col == DH_BINS ? FH_BINS : FH_EXTRACTION;
    switch (col) {
    case C_BIN_LO:
        if (!b->bounds_null) sqlite3_result_double(ctx, b->lo);
        break;
    case C_BIN_HI:
        if (!b->bounds_null) sqlite3_result_double(ctx, b->hi);
        break;
    case C_COUNT: sqlite3_result_int64(ctx, (sqlite3_int64)b->count); break;
    case FH_FEATURE: sqlite3_result_int64(ctx, c->feature); break;
    case FH_BINS: sqlite3_result_int64(ctx, c->n_bins); break;
    case FH_SCALE: sqlite3_result_text(ctx, c->log_scale ? "log" : "linear", -1, SQLITE_STATIC); break;
    case FH_EXTRACTION: sqlite3_result_int64(ctx, c->extraction_id); break;
    }
    return SQLITE_OK;
}

#define MODULE(connect)                                                                                        \
    {                                                                                                          \
        .iVersion = 0, .xCreate = NULL, .xConnect = connect, .xBestIndex = hist_best_index,                   \
        .xDisconnect = hist_disconnect, .xDestroy = NULL, .xOpen = hist_open, .xClose = hist_close,          \
        .xFilter = hist_filter, .xNext = hist_next, .xEof = hist_eof, .xColumn = hist_column,                \
        .xRowid = hist_rowid,                                                                                  \
    }

const sqlite3_module sl_feature_histogram_module = MODULE(feature_histogram_connect);
const sqlite3_module sl_density_histogram_module = MODULE(density_histogram_connect);
