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
 * Per connection the loaded model, SAE and tokenizer are cached (two
 * extractions, shared with feature_logits), keyed by the extraction id and the
 * identity (device, inode, size, mtime) of their files, so a second call on the
 * same extraction only runs the forward pass, and a rewritten file is reloaded.
 *
 * xBestIndex: text = ? is required (argv 1), extraction_id = ? optional
 * (argv 2); both are consumed. Without the text the call is an error. */
#include <jansson.h>
#include <sqlite3ext.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>

#include "catalog.h"
#include "explore.h"
#include "probe.h"
#include "text.h"
#include "tokenizer.h"

SQLITE_EXTENSION_INIT3

enum { C_POSITION, C_TOKEN, C_TOKEN_ID, C_FEATURE_ID, C_ACTIVATION, C_TEXT, C_EXTRACTION };
enum { IDX_TEXT = 1, IDX_EXTRACTION = 2 };

#define PROBE_SLOTS 2

struct sl_probe_cache {
    sl_cached_probe *slots[PROBE_SLOTS]; /* slot 0 most recently used */
};

static void cached_free(sl_cached_probe *c) {
    if (!c) return;
    sl_probe_free(c->probe);
    free(c);
}

static void cache_free(void *p) {
    sl_probe_cache *pc = p;
    if (!pc) return;
    for (int i = 0; i < PROBE_SLOTS; i++) cached_free(pc->slots[i]);
    free(pc);
}

static void hash_stat(XXH64_state_t *h, const char *path) {
    struct stat sb;
    uint64_t v[5] = {0};
    if (path && stat(path, &sb) == 0) {
        v[0] = (uint64_t)sb.st_dev, v[1] = (uint64_t)sb.st_ino, v[2] = (uint64_t)sb.st_size;
        v[3] = (uint64_t)sb.st_mtim.tv_sec, v[4] = (uint64_t)sb.st_mtim.tv_nsec;
    }
    XXH64_update(h, v, sizeof v);
}

/* Identity of what the probe loads: the SAE (a directory's cfg.json and weights,
 * or the file), the model's config.json and model.safetensors, the tokenizer. */
static uint64_t files_identity(const char *sae, const char *model, const char *tokenizer) {
    XXH64_state_t *h = XXH64_createState();
    if (!h) return 0;
    XXH64_reset(h, 0);
    char path[4200];
    const char *sae_files[] = {"cfg.json", "sae_weights.safetensors"}, *model_files[] = {"config.json", "model.safetensors"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s", sae, sae_files[i]);
        hash_stat(h, path);
        snprintf(path, sizeof path, "%s/%s", model, model_files[i]);
        hash_stat(h, path);
    }
    hash_stat(h, sae);
    hash_stat(h, tokenizer);
    uint64_t d = XXH64_digest(h);
    XXH64_freeState(h);
    return d;
}

static int64_t json_opt_int(json_t *o, const char *name, int64_t def) {
    json_t *v = json_object_get(o, name);
    return json_is_integer(v) ? json_integer_value(v) : json_is_boolean(v) ? json_is_true(v) : def;
}

sl_cached_probe *sl_probe_cache_acquire(sl_probe_cache *pc, sqlite3 *db, int has_id, int64_t id, const char *fn,
                                        char **msg) {
    sqlite3_stmt *q = NULL;
    const char *sql = has_id ? "SELECT id, sae, model, tokenizer, hook, options, seq_len FROM main.extractions "
                               "WHERE id = ?1"
                             : "SELECT id, sae, model, tokenizer, hook, options, seq_len FROM main.extractions "
                               "WHERE status = 'done' ORDER BY id DESC LIMIT 1";
    if (sqlite3_prepare_v2(db, sql, -1, &q, NULL) != SQLITE_OK) {
        *msg = sl_extractions_error(db, fn);
        return NULL;
    }
    if (has_id) sqlite3_bind_int64(q, 1, id);
    int rc = sqlite3_step(q);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        *msg = sl_extractions_error(db, fn);
        sqlite3_finalize(q);
        return NULL;
    }
    if (rc != SQLITE_ROW) {
        *msg = has_id ? sqlite3_mprintf("%s: no extraction with id %lld", fn, (long long)id)
                      : sqlite3_mprintf("%s: no finished extraction yet (run extract_features first)", fn);
        sqlite3_finalize(q);
        return NULL;
    }
    int64_t xid = sqlite3_column_int64(q, 0);
    const char *sae = (const char *)sqlite3_column_text(q, 1), *model = (const char *)sqlite3_column_text(q, 2);
    const char *tok = (const char *)sqlite3_column_text(q, 3), *hook = (const char *)sqlite3_column_text(q, 4);
    sl_cached_probe *c = NULL;
    if (!model) {
        *msg = sqlite3_mprintf("%s: extraction %lld ran on stored activations: it has no model", fn, (long long)xid);
        goto done;
    }
    uint64_t ident = files_identity(sae, model, tok);
    for (int i = 0; i < PROBE_SLOTS; i++) {
        sl_cached_probe *s = pc->slots[i];
        if (s && s->id == xid && s->files == ident) {
            memmove(&pc->slots[1], &pc->slots[0], (size_t)i * sizeof pc->slots[0]);
            pc->slots[0] = s;
            s->refs++;
            c = s;
            goto done;
        }
    }
    json_error_t jerr;
    const char *opts_text = (const char *)sqlite3_column_text(q, 5);
    json_t *opts = opts_text ? json_loads(opts_text, 0, &jerr) : NULL;
    sl_probe_opts po = {.sae_path = sae, .model_path = model, .tokenizer_path = tok, .hook = hook,
                        .seq_len = (uint32_t)sqlite3_column_int64(q, 6),
                        .prepend_bos = (int)json_opt_int(opts, "prepend_bos", -1),
                        .center = (int)json_opt_int(opts, "center_writing_weights", -1),
                        .include_special = (int)json_opt_int(opts, "include_special", 0)};
    if (!po.seq_len) po.seq_len = (uint32_t)json_opt_int(opts, "context_size", 0);
    json_decref(opts);
    sl_err err;
    sl_probe *p = sl_probe_open(&po, &err);
    if (!p) {
        *msg = sqlite3_mprintf("%s: extraction %lld: %s", fn, (long long)xid, err.msg);
        goto done;
    }
    if (!(c = calloc(1, sizeof *c))) {
        sl_probe_free(p);
        *msg = sqlite3_mprintf("%s: out of memory", fn);
        goto done;
    }
    c->id = xid, c->files = ident, c->probe = p;
    int victim = PROBE_SLOTS - 1; /* the least recently used one nobody is reading */
    while (victim >= 0 && pc->slots[victim] && pc->slots[victim]->refs) victim--;
    if (victim >= 0) {
        cached_free(pc->slots[victim]);
        memmove(&pc->slots[1], &pc->slots[0], (size_t)victim * sizeof pc->slots[0]);
        pc->slots[0] = c;
    }
    c->refs = victim >= 0 ? 1 : -1; /* -1: not cached, freed on release */
done:
    sqlite3_finalize(q);
    return c;
}

void sl_probe_cache_release(sl_cached_probe *c) {
    if (!c) return;
    if (c->refs < 0) cached_free(c);
    else c->refs--;
}

typedef struct probe_vtab {
    sqlite3_vtab base;
    sqlite3 *db;
    sl_probe_cache *cache;
} probe_vtab;

typedef struct probe_cursor {
    sqlite3_vtab_cursor base;
    sl_cached_probe *cp;
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
    vt->cache = aux;
    sqlite3_vtab_config(db, SQLITE_VTAB_DIRECTONLY); /* it reads files named in the database */
    *out = &vt->base;
    return SQLITE_OK;
}

static int pv_disconnect(sqlite3_vtab *vtab) {
    sqlite3_free(vtab);
    return SQLITE_OK;
}

static int pv_best_index(sqlite3_vtab *vtab, sqlite3_index_info *info) {
    (void)vtab;
    int text_c = -1, x_c = -1;
    for (int i = 0; i < info->nConstraint; i++) {
        const struct sqlite3_index_constraint *c = &info->aConstraint[i];
        if (c->op != SQLITE_INDEX_CONSTRAINT_EQ) continue;
        if (c->iColumn == C_TEXT) {
            if (!c->usable) return SQLITE_CONSTRAINT; /* another plan must supply the text */
            text_c = i;
        } else if (c->iColumn == C_EXTRACTION && c->usable) {
            x_c = i;
        }
    }
    int argv_i = 0;
    info->idxNum = 0;
    if (text_c >= 0) {
        info->idxNum |= IDX_TEXT;
        info->aConstraintUsage[text_c].argvIndex = ++argv_i;
        info->aConstraintUsage[text_c].omit = 1;
    }
    if (x_c >= 0) {
        info->idxNum |= IDX_EXTRACTION;
        info->aConstraintUsage[x_c].argvIndex = ++argv_i;
        info->aConstraintUsage[x_c].omit = 1;
    }
    info->estimatedCost = text_c >= 0 ? 1000.0 : 1e12;
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
    sl_probe_cache_release(c->cp);
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
    if (!(idx & IDX_TEXT)) {
        sqlite3_free(vt->base.zErrMsg);
        vt->base.zErrMsg = sqlite3_mprintf("encode_text: give the text, e.g. SELECT * FROM encode_text('some text')");
        return SQLITE_ERROR;
    }
    sqlite3_value *text = argv[0];
    int has_x = (idx & IDX_EXTRACTION) != 0;
    if (sqlite3_value_type(text) == SQLITE_NULL || (has_x && sqlite3_value_type(argv[1]) == SQLITE_NULL))
        return SQLITE_OK; /* no rows */
    char *msg = NULL;
    c->cp = sl_probe_cache_acquire(vt->cache, vt->db, has_x, has_x ? sqlite3_value_int64(argv[1]) : 0, "encode_text",
                                   &msg);
    if (!c->cp) {
        sqlite3_free(vt->base.zErrMsg);
        vt->base.zErrMsg = msg;
        return SQLITE_ERROR;
    }
    const char *s = (const char *)sqlite3_value_text(text);
    sl_err err;
    if (sl_probe_encode(c->cp->probe, s ? s : "", (size_t)sqlite3_value_bytes(text), &c->res, &err)) {
        sqlite3_free(vt->base.zErrMsg);
        vt->base.zErrMsg = sqlite3_mprintf("encode_text: extraction %lld: %s", (long long)c->cp->id, err.msg);
        return SQLITE_ERROR;
    }
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
    default: break; /* text: not kept */
    }
    return SQLITE_OK;
}

static sqlite3_module probe_module = {
    .iVersion = 0, .xCreate = NULL, .xConnect = pv_connect, .xBestIndex = pv_best_index,
    .xDisconnect = pv_disconnect, .xDestroy = NULL, .xOpen = pv_open, .xClose = pv_close,
    .xFilter = pv_filter, .xNext = pv_next, .xEof = pv_eof, .xColumn = pv_column, .xRowid = pv_rowid,
};

/* encode_text and feature_logits share one cache of loaded models; the module
 * registered last owns it. */
int sl_register_probe(sqlite3 *db) {
    sl_probe_cache *pc = calloc(1, sizeof *pc);
    if (!pc) return SQLITE_NOMEM;
    int rc = sqlite3_create_module_v2(db, "encode_text", &probe_module, pc, NULL);
    if (rc == SQLITE_OK) return sl_register_logits(db, pc, cache_free);
    cache_free(pc);
    return rc;
}
