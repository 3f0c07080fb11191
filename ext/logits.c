/* logits.c: the logit lens of SAE features, the table-valued function feature_logits.
 *
 *   CREATE TABLE feature_logits(rank INTEGER, token TEXT, token_id INTEGER,
 *     logit REAL, feature_id HIDDEN, k HIDDEN, extraction_id HIDDEN)
 *
 * Examples:
 *   SELECT rank, token, logit FROM feature_logits(1459);
 *   SELECT feature_id, * FROM feature_logits WHERE feature_id IN (35, 1211) AND k = 5;
 *   SELECT f.feature_id, f.top_token, l.token AS promotes
 *     FROM features f JOIN feature_logits l ON l.feature_id = f.feature_id
 *     WHERE f.feature_id < 10 AND l.rank = 1;
 *
 * For feature f, logit[t] = W_dec[f] . W_U[:, t] over the whole vocabulary (one
 * OpenBLAS sgemv), with W_U the model's unembedding: GPT-2 ties it to wte, and
 * a checkpoint's own lm_head.weight is used when present. As SAELens and
 * Neuronpedia do, ln_final is not applied and nothing is centred: these are the
 * direct effects of the decoder direction on the logits. rank 1..k are the k
 * largest logits (descending), rank -1..-k the k smallest (ascending: -1 is the
 * most negative); ties by token_id ascending. k defaults to 10 (at most the
 * vocabulary size). The model and SAE come from the extraction (extraction_id,
 * else the latest done one), loaded through the connection's model cache
 * (context.h), shared with encode_text.
 *
 * xBestIndex: the hidden columns are the arguments (sl_tvf_best_index,
 * vtab_args.h): feature_id (required; = or IN (...)), k, extraction_id. Rows
 * come in feature_id order, then rank 1..k, -1..-k. */
#include <cblas.h>
#include <sqlite3ext.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "context.h"
#include "registry.h"
#include "sae.h"
#include "text.h"
#include "tokenizer.h"
#include "vtab_args.h"

SQLITE_EXTENSION_INIT3

enum { C_RANK, C_TOKEN, C_TOKEN_ID, C_LOGIT, C_FEATURE_ID, C_K, C_EXTRACTION };
enum { ARG_FEATURE, ARG_K, ARG_EXTRACTION, N_ARGS };

static const sl_arg_spec args_spec[N_ARGS] = {{C_FEATURE_ID, "feature_id", SL_ARG_REQUIRED | SL_ARG_IN},
                                              {C_K, "k", 0},
                                              {C_EXTRACTION, "extraction_id", 0}};
static const sl_tvf_spec spec = {"feature_logits", "feature_logits(1459)", args_spec, N_ARGS};

#define DEFAULT_K 10

typedef struct logit_row {
    int64_t feature;
    int rank;
    int32_t token;
    float logit;
} logit_row;

typedef struct logits_vtab {
    sqlite3_vtab base;
    sqlite3 *db;
    sl_ctx *ctx;
} logits_vtab;

typedef struct logits_cursor {
    sqlite3_vtab_cursor base;
    sl_cached_model *cp;
    int64_t k;
    logit_row *rows;
    size_t n_rows, at;
} logits_cursor;

static int lv_connect(sqlite3 *db, void *aux, int argc, const char *const *argv, sqlite3_vtab **out, char **err) {
    (void)argc, (void)argv, (void)err;
    int rc = sqlite3_declare_vtab(db, "CREATE TABLE x(rank INTEGER, token TEXT, token_id INTEGER, logit REAL, "
                                      "feature_id HIDDEN, k HIDDEN, extraction_id HIDDEN)");
    if (rc != SQLITE_OK) return rc;
    logits_vtab *vt = sqlite3_malloc(sizeof *vt);
    if (!vt) return SQLITE_NOMEM;
    memset(vt, 0, sizeof *vt);
    vt->db = db;
    vt->ctx = aux;
    sqlite3_vtab_config(db, SQLITE_VTAB_DIRECTONLY); /* it reads files named in the database */
    *out = &vt->base;
    return SQLITE_OK;
}

static int lv_disconnect(sqlite3_vtab *vtab) {
    sqlite3_free(vtab);
    return SQLITE_OK;
}

static int lv_best_index(sqlite3_vtab *vtab, sqlite3_index_info *info) {
    int rc = sl_tvf_best_index(vtab, info, &spec);
    if (rc != SQLITE_OK) return rc;
    info->estimatedCost = 100.0;
    info->estimatedRows = 20;
    if (info->nOrderBy == 1 && info->aOrderBy[0].iColumn == C_FEATURE_ID && !info->aOrderBy[0].desc)
        info->orderByConsumed = 1;
    return SQLITE_OK;
}

static int lv_open(sqlite3_vtab *vtab, sqlite3_vtab_cursor **out) {
    (void)vtab;
    logits_cursor *c = sqlite3_malloc(sizeof *c);
    if (!c) return SQLITE_NOMEM;
    memset(c, 0, sizeof *c);
    *out = &c->base;
    return SQLITE_OK;
}

static void cursor_reset(logits_cursor *c) {
    sl_model_release(((logits_vtab *)c->base.pVtab)->ctx, c->cp);
    c->cp = NULL;
    free(c->rows);
    c->rows = NULL;
    c->n_rows = c->at = 0;
}

static int lv_close(sqlite3_vtab_cursor *cur) {
    cursor_reset((logits_cursor *)cur);
    sqlite3_free(cur);
    return SQLITE_OK;
}

/* t ranks before u: a larger logit (smaller if ascending), then a smaller id. */
static inline int before(const float *logits, int ascending, int32_t t, int32_t u) {
    float x = logits[t], y = logits[u];
    if (x != y) return ascending ? x < y : x > y;
    return t < u;
}

/* The k first ids of [0, n) in that order, into out (sorted): one pass keeping a
 * sorted buffer of k, O(n) when most tokens fall short of the buffer's last. */
static void select_k(const float *logits, int32_t n, int32_t k, int ascending, int32_t *out) {
    int32_t have = 0;
    for (int32_t t = 0; t < n; t++) {
        if (have == k && !before(logits, ascending, t, out[k - 1])) continue;
        int32_t i = have < k ? have++ : k - 1;
        while (i > 0 && before(logits, ascending, t, out[i - 1])) {
            out[i] = out[i - 1];
            i--;
        }
        out[i] = t;
    }
}

static int lv_filter(sqlite3_vtab_cursor *cur, int idx, const char *idx_str, int argc, sqlite3_value **argv) {
    (void)idx_str, (void)argc;
    logits_cursor *c = (logits_cursor *)cur;
    logits_vtab *vt = (logits_vtab *)cur->pVtab;
    cursor_reset(c);
    sqlite3_value *arg[N_ARGS];
    sl_tvf_args(&spec, idx, argv, arg);
    int64_t k = DEFAULT_K;
    if (arg[ARG_K] && (!sl_integer_arg(arg[ARG_K], &k) || k < 1))
        return sl_vtab_error(&vt->base, "feature_logits: k must be a positive integer (got '%s')",
                             sqlite3_value_text(arg[ARG_K]));
    c->k = k;
    int64_t *ids = NULL, n_ids = 0; /* the requested features, sorted and unique */
    int rc = sl_feature_ids(arg[ARG_FEATURE], (idx & SL_TVF_IN_BIT(ARG_FEATURE)) != 0, &ids, &n_ids);
    if (rc != SQLITE_OK) return rc;
    sqlite3_value *xv = arg[ARG_EXTRACTION];
    if (n_ids == 0 || (xv && sqlite3_value_type(xv) == SQLITE_NULL)) {
        sqlite3_free(ids);
        return SQLITE_OK; /* nothing matches */
    }
    char *msg = NULL;
    if (!(c->cp = sl_model_acquire(vt->ctx, vt->db, xv != NULL, xv ? sqlite3_value_int64(xv) : 0, spec.name, &msg))) {
        sqlite3_free(ids);
        return sl_vtab_error(&vt->base, "%z", msg);
    }
    sl_err err;
    int vocab, d_model, untied;
    const float *W_U = sl_probe_unembed(c->cp->probe, &vocab, &d_model, &untied, &err); /* [vocab, d_model] */
    const sl_sae *sae = sl_probe_sae(c->cp->probe);
    if (!W_U) {
        sqlite3_free(ids);
        return sl_vtab_error(&vt->base, "feature_logits: extraction %lld: %s", (long long)c->cp->id, err.msg);
    }
    for (int64_t i = 0; i < n_ids; i++)
        if (ids[i] < 0 || ids[i] >= sae->d_sae) {
            char *m = sqlite3_mprintf("feature_logits: feature_id %lld is out of range (the SAE %s has %d features)",
                                      (long long)ids[i], sae->path, sae->d_sae);
            sqlite3_free(ids);
            return sl_vtab_error(&vt->base, "%z", m);
        }
    int32_t kk = k > vocab ? vocab : (int32_t)k;
    float *logits = malloc((size_t)vocab * sizeof *logits); /* [vocab] */
    int32_t *best = malloc((size_t)kk * sizeof *best);
    c->rows = malloc((size_t)n_ids * 2 * (size_t)kk * sizeof *c->rows);
    if (!logits || !best || !c->rows) {
        sqlite3_free(ids), free(logits), free(best);
        return SQLITE_NOMEM;
    }
    for (int64_t i = 0; i < n_ids; i++) {
        const float *dir = sae->W_dec + (size_t)ids[i] * (size_t)sae->d_in; /* [d_in] */
        cblas_sgemv(CblasRowMajor, CblasNoTrans, vocab, d_model, 1.0f, W_U, d_model, dir, 1, 0.0f, logits, 1);
        for (int side = 0; side < 2; side++) {
            select_k(logits, vocab, kk, side, best);
            for (int32_t r = 0; r < kk; r++)
                c->rows[c->n_rows++] = (logit_row){.feature = ids[i], .rank = side ? -(r + 1) : r + 1,
                                                   .token = best[r], .logit = logits[best[r]]};
        }
    }
    sqlite3_free(ids), free(logits), free(best);
    return SQLITE_OK;
}

static int lv_next(sqlite3_vtab_cursor *cur) {
    ((logits_cursor *)cur)->at++;
    return SQLITE_OK;
}

static int lv_eof(sqlite3_vtab_cursor *cur) {
    logits_cursor *c = (logits_cursor *)cur;
    return c->at >= c->n_rows;
}

static int lv_rowid(sqlite3_vtab_cursor *cur, sqlite3_int64 *rowid) {
    *rowid = (sqlite3_int64)((logits_cursor *)cur)->at;
    return SQLITE_OK;
}

static int lv_column(sqlite3_vtab_cursor *cur, sqlite3_context *ctx, int col) {
    logits_cursor *c = (logits_cursor *)cur;
    const logit_row *r = &c->rows[c->at];
    switch (col) {
    case C_FEATURE_ID: sqlite3_result_int64(ctx, r->feature); break;
    case C_RANK: sqlite3_result_int(ctx, r->rank); break;
    case C_TOKEN: {
        const sl_tokenizer *tok = sl_probe_tokenizer(c->cp->probe);
        size_t len;
        const char *bytes = tok ? sl_tokenizer_token_bytes(tok, r->token, &len) : NULL;
        sl_buf b = {0};
        if (bytes) {
            sl_utf8_sanitize(&b, bytes, len);
        } else {
            char num[16];
            snprintf(num, sizeof num, "%d", (int)r->token);
            sl_buf_puts(&b, num);
        }
        if (b.oom) sqlite3_result_error_nomem(ctx);
        else sqlite3_result_text(ctx, sl_buf_str(&b), (int)b.len, SQLITE_TRANSIENT);
        sl_buf_free(&b);
        break;
    }
    case C_TOKEN_ID: sqlite3_result_int(ctx, r->token); break;
    case C_LOGIT: sqlite3_result_double(ctx, sl_f32_to_display(r->logit)); break;
    case C_K: sqlite3_result_int64(ctx, c->k); break;
    case C_EXTRACTION: sqlite3_result_int64(ctx, c->cp->id); break;
    }
    return SQLITE_OK;
}

const sqlite3_module sl_feature_logits_module = {
    .iVersion = 0, .xCreate = NULL, .xConnect = lv_connect, .xBestIndex = lv_best_index,
    .xDisconnect = lv_disconnect, .xDestroy = NULL, .xOpen = lv_open, .xClose = lv_close,
    .xFilter = lv_filter, .xNext = lv_next, .xEof = lv_eof, .xColumn = lv_column, .xRowid = lv_rowid,
};
