/* probe.c: the table-valued function encode_text: which features fire on a text.
 *
 *   CREATE TABLE encode_text(position INTEGER, token TEXT, token_id INTEGER,
 *     feature_id INTEGER, activation REAL, text HIDDEN, extraction_id HIDDEN)
 *
 * Examples:
 *   SELECT * FROM encode_text('def main():');                -- latest done extraction
 *   SELECT position, token, feature_id, activation FROM encode_text('x = f(1)', 2)
 *     ORDER BY activation DESC LIMIT 10;
 *   SELECT feature_id, max(activation) FROM encode_text('if (a == b) {') GROUP BY 1;
 *
 * One row per (token, active feature): the snippet runs through the extraction's
 * model to its hook and its SAE on the CPU exactly as the extraction ran its
 * dataset (tokenizer, BOS, context size, centring, normalization, special
 * tokens; engine/probe.h): the same tokens at the start of a sequence get the
 * same activations. `position` is the token's 0-based index in the snippet's
 * tokenization (the BOS the model is given first is not a row). A snippet longer
 * than context_size is cut into windows of context_size tokens, each starting
 * with BOS, as a long document of the dataset is packed. Rows come in position
 * order, features ascending within a token.
 *
 * The loaded model, SAE and tokenizer come from the connection's model cache
 * (context.h; two extractions, shared with feature_logits), keyed by the
 * extraction id and the identity (device, inode, size, mtime) of their files,
 * so a second call on the same extraction only runs the forward pass, and a
 * rewritten file is reloaded.
 *
 * xBestIndex: the hidden columns are the arguments (sl_tvf_best_index,
 * vtab_args.h): text required, extraction_id optional. */
#include <sqlite3ext.h>
#include <stdlib.h>
#include <string.h>

#include "context.h"
#include "registry.h"
#include "probe.h"
#include "text.h"
#include "tokenizer.h"
#include "vtab_args.h"

SQLITE_EXTENSION_INIT3

enum { C_POSITION, C_TOKEN, C_TOKEN_ID, C_FEATURE_ID, C_ACTIVATION, C_TEXT, C_EXTRACTION };
enum { ARG_TEXT, ARG_EXTRACTION, N_ARGS };

static const sl_arg_spec args_spec[N_ARGS] = {{C_TEXT, "text", SL_ARG_REQUIRED}, {C_EXTRACTION, "extraction_id", 0}};
static const sl_tvf_spec spec = {"encode_text", "encode_text('some text')", args_spec, N_ARGS};

typedef struct probe_vtab {
    sqlite3_vtab base;
    sqlite3 *db;
    sl_ctx *ctx;
} probe_vtab;

typedef struct probe_cursor {
    sqlite3_vtab_cursor base;
    sl_cached_model *cp;
    sqlite3_value *text; /* the argument, shown in its hidden column */
    sl_probe_result res;
    size_t tok;  /* current token */
    uint64_t at; /* current nonzero */
} probe_cursor;

static int pv_connect(sqlite3 *db, void *aux, int argc, const char *const *argv, sqlite3_vtab **out, char **err) {
    (void)argc, (void)argv, (void)err;
    int rc = sqlite3_declare_vtab(db, "CREATE TABLE x(position INTEGER, token TEXT, token_id INTEGER, "
                                      "feature_id INTEGER, activation REAL, text HIDDEN, extraction_id HIDDEN)");
    if (rc != SQLITE_OK) return rc;
    probe_vtab *vt = sqlite3_malloc(sizeof *vt);
    if (!vt) return SQLITE_NOMEM;
    memset(vt, 0, sizeof *vt);
    vt->db = db;
    vt->ctx = aux;
    sqlite3_vtab_config(db, SQLITE_VTAB_DIRECTONLY); /* it reads files named in the database */
    *out = &vt->base;
    return SQLITE_OK;
}

static int pv_disconnect(sqlite3_vtab *vtab) {
    sqlite3_free(vtab);
    return SQLITE_OK;
}

static int pv_best_index(sqlite3_vtab *vtab, sqlite3_index_info *info) {
    int rc = sl_tvf_best_index(vtab, info, &spec);
    if (rc != SQLITE_OK) return rc;
    info->estimatedCost = 1000.0;
    info->estimatedRows = 1000;
    return SQLITE_OK;
}

static int pv_open(sqlite3_vtab *vtab, sqlite3_vtab_cursor **out) {
    (void)vtab;
    probe_cursor *c = sqlite3_malloc(sizeof *c);
    if (!c) return SQLITE_NOMEM;
    memset(c, 0, sizeof *c);
    *out = &c->base;
    return SQLITE_OK;
}

static void cursor_reset(probe_cursor *c) {
    sl_probe_result_free(&c->res);
    sl_model_release(((probe_vtab *)c->base.pVtab)->ctx, c->cp);
    sqlite3_value_free(c->text);
    c->text = NULL;
    c->cp = NULL;
    c->tok = 0;
    c->at = 0;
}

static int pv_close(sqlite3_vtab_cursor *cur) {
    cursor_reset((probe_cursor *)cur);
    sqlite3_free(cur);
    return SQLITE_OK;
}

/* Moves to the first token at or after tok that has a nonzero at or after at. */
static void settle(probe_cursor *c) {
    while (c->tok < c->res.n_tokens && c->at >= c->res.row_ptr[c->tok + 1]) c->tok++;
}

static int pv_filter(sqlite3_vtab_cursor *cur, int idx, const char *idx_str, int argc, sqlite3_value **argv) {
    (void)idx_str, (void)argc;
    probe_cursor *c = (probe_cursor *)cur;
    probe_vtab *vt = (probe_vtab *)cur->pVtab;
    cursor_reset(c);
    sqlite3_value *arg[N_ARGS];
    sl_tvf_args(&spec, idx, argv, arg);
    sqlite3_value *text = arg[ARG_TEXT], *xv = arg[ARG_EXTRACTION];
    if (sqlite3_value_type(text) == SQLITE_NULL || (xv && sqlite3_value_type(xv) == SQLITE_NULL))
        return SQLITE_OK; /* no rows */
    char *msg = NULL;
    c->cp = sl_model_acquire(vt->ctx, vt->db, xv != NULL, xv ? sqlite3_value_int64(xv) : 0, spec.name, &msg);
    if (!c->cp) return sl_vtab_error(&vt->base, "%z", msg);
    if (!(c->text = sqlite3_value_dup(text))) return SQLITE_NOMEM;
    const char *s = (const char *)sqlite3_value_text(text);
    sl_err err;
    if (sl_probe_encode(c->cp->probe, s ? s : "", (size_t)sqlite3_value_bytes(text), &c->res, &err))
        return sl_vtab_error(&vt->base, "encode_text: extraction %lld: %s", (long long)c->cp->id, err.msg);
    settle(c);
    return SQLITE_OK;
}

static int pv_next(sqlite3_vtab_cursor *cur) {
    probe_cursor *c = (probe_cursor *)cur;
    c->at++;
    settle(c);
    return SQLITE_OK;
}

static int pv_eof(sqlite3_vtab_cursor *cur) {
    probe_cursor *c = (probe_cursor *)cur;
    return c->tok >= c->res.n_tokens;
}

static int pv_rowid(sqlite3_vtab_cursor *cur, sqlite3_int64 *rowid) {
    *rowid = (sqlite3_int64)((probe_cursor *)cur)->at;
    return SQLITE_OK;
}

static int pv_column(sqlite3_vtab_cursor *cur, sqlite3_context *ctx, int col) {
    probe_cursor *c = (probe_cursor *)cur;
    int32_t id = c->res.tokens[c->tok];
    switch (col) {
    case C_POSITION: sqlite3_result_int64(ctx, (sqlite3_int64)c->tok); break;
    case C_TOKEN: {
        size_t len;
        const char *bytes = sl_tokenizer_token_bytes(sl_probe_tokenizer(c->cp->probe), id, &len);
        sl_buf b = {0};
        sl_utf8_sanitize(&b, bytes ? bytes : "", bytes ? len : 0);
        if (b.oom) sqlite3_result_error_nomem(ctx);
        else sqlite3_result_text(ctx, sl_buf_str(&b), (int)b.len, SQLITE_TRANSIENT);
        sl_buf_free(&b);
        break;
    }
    case C_TOKEN_ID: sqlite3_result_int(ctx, id); break;
    case C_FEATURE_ID: sqlite3_result_int64(ctx, c->res.col[c->at]); break;
    case C_ACTIVATION: sqlite3_result_double(ctx, sl_f32_to_display(c->res.val[c->at])); break;
    case C_EXTRACTION: sqlite3_result_int64(ctx, c->cp->id); break;
    case C_TEXT: sqlite3_result_value(ctx, c->text); break;
    }
    return SQLITE_OK;
}

const sqlite3_module sl_encode_text_module = {
    .iVersion = 0, .xCreate = NULL, .xConnect = pv_connect, .xBestIndex = pv_best_index,
    .xDisconnect = pv_disconnect, .xDestroy = NULL, .xOpen = pv_open, .xClose = pv_close,
    .xFilter = pv_filter, .xNext = pv_next, .xEof = pv_eof, .xColumn = pv_column, .xRowid = pv_rowid,
};
