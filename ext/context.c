/* context.c: the per-connection context (see context.h). */
#include "context.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "catalog.h"

SQLITE_EXTENSION_INIT3

struct sl_token_cache {
    struct shared_tokenizer {
        char *path;
        struct stat file;
        sl_tokenizer *tok;
        int refs;
        struct shared_tokenizer *next;
    } *head;
};

#define MODEL_SLOTS 2

struct sl_model_cache {
    sl_cached_model *slots[MODEL_SLOTS]; /* slot 0 most recently used */
};

static void model_free(sl_ctx *ctx, sl_cached_model *m);

sl_ctx *sl_ctx_new(void) {
    sl_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return NULL;
    ctx->refs = 1;
    ctx->catalog = sl_catalog_new(ctx);
    ctx->tokenizers = calloc(1, sizeof *ctx->tokenizers);
    ctx->models = calloc(1, sizeof *ctx->models);
    if (!ctx->catalog || !ctx->tokenizers || !ctx->models) {
        sl_ctx_unref(ctx);
        return NULL;
    }
    return ctx;
}

sl_ctx *sl_ctx_ref(sl_ctx *ctx) {
    ctx->refs++;
    return ctx;
}

void sl_ctx_unref(void *p) {
    sl_ctx *ctx = p;
    if (!ctx || --ctx->refs > 0) return;
    /* Models and catalog entries hold tokenizers: free them first. */
    if (ctx->models)
        for (int i = 0; i < MODEL_SLOTS; i++) model_free(ctx, ctx->models->slots[i]);
    sl_catalog_free(ctx->catalog);
    if (ctx->tokenizers) {
        for (struct shared_tokenizer *t = ctx->tokenizers->head, *next; t; t = next) {
            next = t->next;
            sl_tokenizer_free(t->tok);
            free(t->path);
            free(t);
        }
    }
    free(ctx->tokenizers);
    free(ctx->models);
    free(ctx);
}

int sl_vtab_error(sqlite3_vtab *vtab, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *msg = sqlite3_vmprintf(fmt, ap);
    va_end(ap);
    sqlite3_free(vtab->zErrMsg);
    vtab->zErrMsg = msg;
    return msg ? SQLITE_ERROR : SQLITE_NOMEM;
}

/* ---- paths -------------------------------------------------------------- */

/* realpath() of the longest existing prefix of the absolute path, the rest
 * appended (a store or file that does not exist yet). */
static char *real_prefix(const char *path) {
    char *copy = strdup(path), resolved[PATH_MAX], *out = NULL;
    if (!copy) return NULL;
    for (size_t end = strlen(path);;) {
        copy[end] = 0;
        if (realpath(end ? copy : "/", resolved)) {
            const char *rest = path + end;
            while (*rest == '/') rest++;
            int slash = *rest && resolved[strlen(resolved) - 1] != '/';
            out = sqlite3_mprintf("%s%s%s", resolved, slash ? "/" : "", rest);
            break;
        }
        if (end == 0) {
            out = sqlite3_mprintf("%s", path);
            break;
        }
        while (end > 0 && path[end - 1] != '/') end--; /* drop the last component */
        while (end > 0 && path[end - 1] == '/') end--;
    }
    free(copy);
    return out;
}

char *sl_absolute_path(const char *path) {
    if (!path) return NULL;
    if (path[0] == '/') return real_prefix(path);
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd)) return sqlite3_mprintf("%s", path);
    char *joined = sqlite3_mprintf("%s/%s", cwd, path);
    char *out = joined ? real_prefix(joined) : NULL;
    sqlite3_free(joined);
    return out;
}

/* The real directory of the main database file, or NULL (in-memory, temporary). */
static char *database_dir(sqlite3 *db) {
    const char *file = sqlite3_db_filename(db, "main");
    if (!file || !*file) return NULL;
    char *abs = sl_absolute_path(file);
    char *slash = abs ? strrchr(abs, '/') : NULL;
    if (!slash) {
        sqlite3_free(abs);
        return NULL;
    }
    if (slash == abs) slash[1] = 0;
    else *slash = 0;
    return abs;
}

char *sl_store_record(sqlite3 *db, const char *abs_store) {
    char *dir = database_dir(db);
    size_t n = dir ? strlen(dir) : 0;
    char *out;
    if (dir && n > 1 && strncmp(abs_store, dir, n) == 0 && abs_store[n] == '/' && abs_store[n + 1])
        out = sqlite3_mprintf("%s", abs_store + n + 1);
    else
        out = sqlite3_mprintf("%s", abs_store);
    sqlite3_free(dir);
    return out;
}

char *sl_store_resolve(sqlite3 *db, const char *recorded) {
    if (!recorded) return NULL;
    if (recorded[0] == '/') return sqlite3_mprintf("%s", recorded);
    char *dir = database_dir(db);
    char *out = dir ? sqlite3_mprintf("%s/%s", dir, recorded) : sqlite3_mprintf("%s", recorded);
    sqlite3_free(dir);
    return out;
}

/* ---- extractions -------------------------------------------------------- */

char *sl_extractions_error(sqlite3 *db, const char *fn) {
    const char *why = sqlite3_errmsg(db);
    if (strstr(why, "no such table"))
        return sqlite3_mprintf("%s: no extractions table in this database (run extract_features first)", fn);
    return sqlite3_mprintf("%s: cannot read the extractions table: %s", fn, why);
}

void sl_extraction_row_free(sl_extraction_row *row) {
    sqlite3_free(row->status);
    sqlite3_free(row->store);
    sqlite3_free(row->tokenizer);
    sqlite3_free(row->sae);
    sqlite3_free(row->model);
    sqlite3_free(row->hook);
    sqlite3_free(row->options);
    sqlite3_free(row->paths);
    memset(row, 0, sizeof *row);
}

static char *column_dup(sqlite3_stmt *q, int col) {
    const unsigned char *s = sqlite3_column_text(q, col);
    return s ? sqlite3_mprintf("%s", (const char *)s) : NULL;
}

/* paths[name] when the row has `paths`, else the column as given. */
static char *row_path(json_t *paths, const char *name, sqlite3_stmt *q, int col) {
    json_t *v = json_object_get(paths, name);
    if (paths) return json_is_string(v) ? sqlite3_mprintf("%s", json_string_value(v)) : NULL;
    return column_dup(q, col);
}

int sl_extraction_lookup(sqlite3 *db, int has_id, int64_t id, const char *fn, sl_extraction_row *row, char **msg) {
    memset(row, 0, sizeof *row);
    static const char *const sql[2][2] = {
        /* [has paths column][has id] */
        {"SELECT id, status, store, tokenizer, sae, model, hook, options, seq_len, NULL FROM main.extractions "
         "WHERE status = 'done' ORDER BY id DESC LIMIT 1",
         "SELECT id, status, store, tokenizer, sae, model, hook, options, seq_len, NULL FROM main.extractions "
         "WHERE id = ?1"},
        {"SELECT id, status, store, tokenizer, sae, model, hook, options, seq_len, paths FROM main.extractions "
         "WHERE status = 'done' ORDER BY id DESC LIMIT 1",
         "SELECT id, status, store, tokenizer, sae, model, hook, options, seq_len, paths FROM main.extractions "
         "WHERE id = ?1"},
    };
    sqlite3_stmt *q = NULL;
    /* A database from before `paths` opened read-only has no such column. */
    if (sqlite3_prepare_v2(db, sql[1][has_id != 0], -1, &q, NULL) != SQLITE_OK &&
        (!strstr(sqlite3_errmsg(db), "no such column") ||
         sqlite3_prepare_v2(db, sql[0][has_id != 0], -1, &q, NULL) != SQLITE_OK)) {
        *msg = sl_extractions_error(db, fn);
        return -1;
    }
    if (has_id) sqlite3_bind_int64(q, 1, id);
    int rc = sqlite3_step(q);
    if (rc != SQLITE_ROW) {
        *msg = rc != SQLITE_DONE ? sl_extractions_error(db, fn)
               : has_id          ? sqlite3_mprintf("%s: no extraction with id %lld", fn, (long long)id)
                                 : sqlite3_mprintf("%s: no finished extraction yet (run extract_features first)", fn);
        sqlite3_finalize(q);
        return -1;
    }
    const char *paths_text = (const char *)sqlite3_column_text(q, 9);
    json_t *paths = paths_text ? json_loads(paths_text, 0, NULL) : NULL;
    if (paths && !json_is_object(paths)) {
        json_decref(paths);
        paths = NULL;
    }
    row->id = sqlite3_column_int64(q, 0);
    row->status = column_dup(q, 1);
    char *store = row_path(paths, "store", q, 2);
    row->store = paths ? sl_store_resolve(db, store) : store;
    if (paths) sqlite3_free(store);
    row->tokenizer = row_path(paths, "tokenizer", q, 3);
    row->sae = row_path(paths, "sae", q, 4);
    row->model = row_path(paths, "model", q, 5);
    row->hook = column_dup(q, 6);
    row->options = column_dup(q, 7);
    row->seq_len = sqlite3_column_int64(q, 8);
    if (paths) row->paths = column_dup(q, 9);
    json_decref(paths);
    sqlite3_finalize(q);
    return 0;
}

/* ---- tokenizers --------------------------------------------------------- */

static int same_file(const struct stat *a, const struct stat *b) {
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

const sl_tokenizer *sl_tokenizer_acquire(sl_ctx *ctx, const char *path, sl_err *err) {
    struct stat now;
    if (stat(path, &now) != 0) return sl_errf_path(err, path, "cannot open: %s", strerror(errno)), NULL;
    for (struct shared_tokenizer *t = ctx->tokenizers->head; t; t = t->next)
        if (strcmp(t->path, path) == 0 && same_file(&t->file, &now)) {
            t->refs++;
            return t->tok;
        }
    struct shared_tokenizer *t = calloc(1, sizeof *t);
    if (!t || !(t->path = strdup(path))) {
        free(t);
        return sl_errf(err, "out of memory"), NULL;
    }
    if (!(t->tok = sl_tokenizer_load(path, err))) {
        free(t->path);
        free(t);
        return NULL;
    }
    t->file = now;
    t->refs = 1;
    t->next = ctx->tokenizers->head;
    ctx->tokenizers->head = t;
    return t->tok;
}

void sl_tokenizer_release(sl_ctx *ctx, const sl_tokenizer *tok) {
    if (!tok) return;
    for (struct shared_tokenizer **p = &ctx->tokenizers->head; *p; p = &(*p)->next) {
        struct shared_tokenizer *t = *p;
        if (t->tok != tok) continue;
        if (--t->refs == 0) {
            *p = t->next;
            sl_tokenizer_free(t->tok);
            free(t->path);
            free(t);
        }
        return;
    }
}

/* ---- models ------------------------------------------------------------- */

static void model_free(sl_ctx *ctx, sl_cached_model *m) {
    if (!m) return;
    sl_probe_free(m->probe);
    sl_tokenizer_release(ctx, m->tok);
    free(m);
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

/* Identity of what a model entry loads: the SAE (a directory's cfg.json and
 * weights, or the file), the model's config.json and model.safetensors, the
 * tokenizer. */
static uint64_t files_identity(const char *sae, const char *model, const char *tokenizer) {
    XXH64_state_t *h = XXH64_createState();
    if (!h) return 0;
    XXH64_reset(h, 0);
    char path[PATH_MAX + 64];
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

sl_cached_model *sl_model_acquire(sl_ctx *ctx, sqlite3 *db, int has_id, int64_t id, const char *fn, char **msg) {
    sl_model_cache *mc = ctx->models;
    sl_extraction_row row;
    if (sl_extraction_lookup(db, has_id, id, fn, &row, msg)) return NULL;
    sl_cached_model *m = NULL;
    if (!row.model) {
        *msg = sqlite3_mprintf("%s: extraction %lld ran on stored activations: it has no model", fn,
                               (long long)row.id);
        goto done;
    }
    uint64_t ident = files_identity(row.sae, row.model, row.tokenizer);
    for (int i = 0; i < MODEL_SLOTS; i++) {
        sl_cached_model *s = mc->slots[i];
        if (s && s->id == row.id && s->files == ident) {
            memmove(&mc->slots[1], &mc->slots[0], (size_t)i * sizeof mc->slots[0]);
            mc->slots[0] = s;
            s->refs++;
            m = s;
            goto done;
        }
    }
    if (!(m = calloc(1, sizeof *m))) {
        *msg = sqlite3_mprintf("%s: out of memory", fn);
        goto done;
    }
    sl_err err;
    if (row.tokenizer && !(m->tok = sl_tokenizer_acquire(ctx, row.tokenizer, &err))) {
        *msg = sqlite3_mprintf("%s: extraction %lld: its tokenizer cannot be loaded: %s", fn, (long long)row.id,
                               err.msg);
        free(m);
        m = NULL;
        goto done;
    }
    json_t *opts = row.options ? json_loads(row.options, 0, NULL) : NULL;
    sl_probe_opts po = {.sae_path = row.sae, .model_path = row.model, .tokenizer = m->tok, .hook = row.hook,
                        .seq_len = (uint32_t)row.seq_len,
                        .prepend_bos = (int)json_opt_int(opts, "prepend_bos", -1),
                        .center = (int)json_opt_int(opts, "center_writing_weights", -1),
                        .include_special = (int)json_opt_int(opts, "include_special", 0)};
    if (!po.seq_len) po.seq_len = (uint32_t)json_opt_int(opts, "context_size", 0);
    json_decref(opts);
    if (!(m->probe = sl_probe_open(&po, &err))) {
        *msg = sqlite3_mprintf("%s: extraction %lld: %s", fn, (long long)row.id, err.msg);
        model_free(ctx, m);
        m = NULL;
        goto done;
    }
    m->id = row.id, m->files = ident;
    int victim = MODEL_SLOTS - 1; /* the least recently used one nobody is reading */
    while (victim >= 0 && mc->slots[victim] && mc->slots[victim]->refs) victim--;
    if (victim >= 0) {
        model_free(ctx, mc->slots[victim]);
        memmove(&mc->slots[1], &mc->slots[0], (size_t)victim * sizeof mc->slots[0]);
        mc->slots[0] = m;
    }
    m->refs = victim >= 0 ? 1 : -1;
done:
    sl_extraction_row_free(&row);
    return m;
}

void sl_model_release(sl_ctx *ctx, sl_cached_model *m) {
    if (!m) return;
    if (m->refs < 0) model_free(ctx, m);
    else m->refs--;
}
