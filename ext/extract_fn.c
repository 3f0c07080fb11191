/* extract_fn.c: the SQL function extract_features(...).
 *
 *   SELECT extract_features('sae', 'sae_dir', 'activations', 'acts.safetensors');
 *   SELECT extract_features('{"sae": "sae_dir", "activations": "acts.safetensors"}');
 *
 * Validates options, records the run in `extractions`, runs the engine with a
 * progress callback that commits progress (so other connections see it) and
 * draws the bar, and returns the new extraction id. docs/SQL.md lists options. */
#include <jansson.h>
#include <sqlite3ext.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "catalog.h"
#include "check.h"
#include "context.h"
#include "extract.h"
#include "registry.h"
#include "fsutil.h"
#include "progress.h"
#include "vtab_args.h"

SQLITE_EXTENSION_INIT3

typedef enum { OPT_PATH, OPT_TEXT, OPT_INT, OPT_BOOL, OPT_CHOICE } opt_type;

typedef struct opt_spec {
    const char *name;
    opt_type type;
    int64_t min, max;
    const char *choices; /* OPT_CHOICE: space-separated */
} opt_spec;

static const opt_spec opt_specs[] = {
    {"sae", OPT_PATH, 0, 0, NULL},
    {"activations", OPT_PATH, 0, 0, NULL},
    {"model", OPT_PATH, 0, 0, NULL},
    {"dataset", OPT_PATH, 0, 0, NULL},
    {"query", OPT_TEXT, 0, 0, NULL},
    {"tokenizer", OPT_PATH, 0, 0, NULL},
    {"store", OPT_PATH, 0, 0, NULL},
    {"name", OPT_TEXT, 0, 0, NULL},
    {"hook", OPT_TEXT, 0, 0, NULL},
    {"format", OPT_CHOICE, 0, 0, "txt jsonl"},
    {"text_mode", OPT_CHOICE, 0, 0, "lines file"},
    {"text_field", OPT_TEXT, 0, 0, NULL},
    {"token_dtype", OPT_CHOICE, 0, 0, "uint16 uint32"},
    {"context_size", OPT_INT, 1, 1 << 20, NULL},
    {"prepend_bos", OPT_BOOL, 0, 1, NULL},
    {"include_special", OPT_BOOL, 0, 1, NULL},
    {"center_writing_weights", OPT_BOOL, 0, 1, NULL},
    {"top_k", OPT_INT, 1, 10000, NULL},
    {"context", OPT_INT, 0, 1024, NULL},
    {"one_per_sequence", OPT_BOOL, 0, 1, NULL},
    {"batch_size", OPT_INT, 1, 1 << 20, NULL},
    {"max_sequences", OPT_INT, 1, INT64_MAX, NULL},
    {"max_tokens", OPT_INT, 1, INT64_MAX, NULL},
    {"progress", OPT_CHOICE, 0, 0, "auto on off"},
    {"device", OPT_CHOICE, 0, 0, "auto cpu cuda"},
    {"precision", OPT_CHOICE, 0, 0, "fp32 tf32"},
    /* sampled examples of top_examples, read at query time (docs/SQL.md) */
    {"intervals", OPT_INT, 1, 1000, NULL},
    {"interval_examples", OPT_INT, 0, 1000, NULL},
    {"random_examples", OPT_INT, 0, 10000, NULL},
};
#define N_OPTS (int)(sizeof opt_specs / sizeof opt_specs[0])

/* The options as given, validated. A JSON object (jansson) holds them so the
 * effective options can be stored verbatim in extractions.options. */
static int set_option(json_t *opts, const char *name, json_t *value, char **msg) {
    const opt_spec *spec = NULL;
    for (int i = 0; i < N_OPTS; i++)
        if (strcmp(opt_specs[i].name, name) == 0) spec = &opt_specs[i];
    if (!spec) {
        char known[512] = "";
        for (int i = 0; i < N_OPTS; i++) {
            strcat(known, i ? ", " : "");
            strcat(known, opt_specs[i].name);
        }
        *msg = sqlite3_mprintf("extract_features: unknown option '%s' (known: %s)", name, known);
        json_decref(value);
        return -1;
    }
    if (json_is_null(value)) { /* NULL: use the default */
        json_decref(value);
        return 0;
    }
    switch (spec->type) {
    case OPT_PATH:
    case OPT_TEXT:
        if (!json_is_string(value) || json_string_length(value) == 0) {
            *msg = sqlite3_mprintf("extract_features: option '%s' must be a non-empty text", name);
            json_decref(value);
            return -1;
        }
        break;
    case OPT_INT:
        if (!json_is_integer(value) || json_integer_value(value) < spec->min ||
            json_integer_value(value) > spec->max) {
            *msg = sqlite3_mprintf("extract_features: option '%s' must be an integer in [%lld, %lld]", name,
                                   (long long)spec->min, (long long)spec->max);
            json_decref(value);
            return -1;
        }
        break;
    case OPT_BOOL:
        if (json_is_boolean(value)) { /* JSON true/false, or SQL 0/1 */
            json_t *b = json_integer(json_is_true(value));
            json_decref(value);
            value = b;
        }
        if (!json_is_integer(value) || json_integer_value(value) < 0 || json_integer_value(value) > 1) {
            *msg = sqlite3_mprintf("extract_features: option '%s' must be 0 or 1 (or true/false)", name);
            json_decref(value);
            return -1;
        }
        break;
    case OPT_CHOICE: {
        const char *s = json_string_value(value);
        size_t n = s ? strlen(s) : 0;
        const char *hit = s && n ? strstr(spec->choices, s) : NULL;
        while (hit && ((hit != spec->choices && hit[-1] != ' ') || (hit[n] != ' ' && hit[n] != 0)))
            hit = strstr(hit + 1, s);
        if (!hit) {
            *msg = sqlite3_mprintf("extract_features: option '%s' must be one of: %s", name, spec->choices);
            json_decref(value);
            return -1;
        }
        break;
    }
    }
    json_object_set_new(opts, name, value);
    return 0;
}

static json_t *sql_value_to_json(sqlite3_value *v) {
    switch (sqlite3_value_type(v)) {
    case SQLITE_INTEGER: return json_integer(sqlite3_value_int64(v));
    case SQLITE_FLOAT: {
        double d = sqlite3_value_double(v);
        return d == (double)(json_int_t)d ? json_integer((json_int_t)d) : json_real(d);
    }
    case SQLITE_NULL: return json_null();
    default: {
        const char *s = (const char *)sqlite3_value_text(v);
        json_t *j = json_stringn(s ? s : "", (size_t)sqlite3_value_bytes(v));
        return j ? j : json_string("\xEF\xBF\xBD"); /* invalid UTF-8: rejected by the path check */
    }
    }
}

/* Adds the options of a JSON object text to opts. */
static int add_json_options(json_t *opts, const char *text, char **msg) {
    json_error_t jerr;
    json_t *in = text ? json_loads(text, 0, &jerr) : NULL;
    if (!json_is_object(in)) {
        *msg = sqlite3_mprintf("extract_features: a single argument must be a JSON object of options%s%s",
                               in || !text ? "" : ": ", in || !text ? "" : jerr.text);
        json_decref(in);
        return -1;
    }
    const char *key;
    json_t *val;
    json_object_foreach(in, key, val) {
        if (set_option(opts, key, json_incref(val), msg)) {
            json_decref(in);
            return -1;
        }
    }
    json_decref(in);
    return 0;
}

static json_t *check_inputs(json_t *opts, char **msg);

/* Options stored in extractions.options, validated again. */
static json_t *parse_options_json(const char *text, char **msg) {
    json_t *opts = json_object();
    if (add_json_options(opts, text, msg)) {
        json_decref(opts);
        return NULL;
    }
    return check_inputs(opts, msg);
}

static json_t *parse_options(int argc, sqlite3_value **argv, char **msg) {
    json_t *opts = json_object();
    if (argc == 1) {
        if (add_json_options(opts, (const char *)sqlite3_value_text(argv[0]), msg)) {
            json_decref(opts);
            return NULL;
        }
    } else if (argc % 2 == 0 && argc > 0) {
        for (int i = 0; i < argc; i += 2) {
            const char *name = (const char *)sqlite3_value_text(argv[i]);
            if (sqlite3_value_type(argv[i]) != SQLITE_TEXT || !name) {
                *msg = sqlite3_mprintf("extract_features: argument %d must be an option name", i + 1);
                json_decref(opts);
                return NULL;
            }
            if (set_option(opts, name, sql_value_to_json(argv[i + 1]), msg)) {
                json_decref(opts);
                return NULL;
            }
        }
    } else {
        *msg = sqlite3_mprintf("extract_features: expected name/value pairs or one JSON object of options");
        json_decref(opts);
        return NULL;
    }
    return check_inputs(opts, msg);
}

/* The input: stored activations, or a model with a dataset file or a query.
 * Returns opts, or NULL (opts released) with *msg set. */
static json_t *check_inputs(json_t *opts, char **msg) {
    int acts = json_object_get(opts, "activations") != NULL, model = json_object_get(opts, "model") != NULL;
    int inputs = (json_object_get(opts, "dataset") != NULL) + (json_object_get(opts, "query") != NULL);
    const char *problem = !json_object_get(opts, "sae")  ? "option 'sae' is required"
                          : acts && (model || inputs)    ? "give either 'activations' or 'model' with a dataset, not both"
                          : !acts && !model              ? "give 'activations' (stored activations) or 'model' and 'dataset' or 'query'"
                          : model && inputs != 1         ? "with 'model', give exactly one of 'dataset' or 'query'"
                                                         : NULL;
    if (problem) {
        *msg = sqlite3_mprintf("extract_features: %s", problem);
        json_decref(opts);
        return NULL;
    }
    return opts;
}

static const char *opt_str(json_t *opts, const char *name) { return json_string_value(json_object_get(opts, name)); }

/* The input paths of a run, as `paths` records them (context.h). */
static const char *const path_options[] = {"sae", "model", "tokenizer", "dataset", "activations"};

/* The recorded paths of a new run: absolute inputs, and the store (absolute,
 * or relative to the database's directory when it lies there). */
static json_t *resolve_paths(sqlite3 *db, json_t *opts, const char *store) {
    json_t *paths = json_object();
    for (size_t i = 0; i < sizeof path_options / sizeof path_options[0]; i++) {
        const char *given = opt_str(opts, path_options[i]);
        if (!given) continue;
        char *abs = sl_absolute_path(given);
        if (abs) json_object_set_new(paths, path_options[i], json_string(abs));
        sqlite3_free(abs);
    }
    char *abs = sl_absolute_path(store), *rec = abs ? sl_store_record(db, abs) : NULL;
    if (rec) json_object_set_new(paths, "store", json_string(rec));
    sqlite3_free(abs);
    sqlite3_free(rec);
    return paths;
}

/* Without a 'tokenizer' option, a model directory's own tokenizer.json (as Hugging
 * Face checkpoints ship it) is the run's tokenizer, recorded like a given one. */
static void default_tokenizer(json_t *opts) {
    const char *model = opt_str(opts, "model");
    if (!model || json_object_get(opts, "tokenizer")) return;
    char *path = sqlite3_mprintf("%s/tokenizer.json", model);
    if (path && access(path, R_OK) == 0) json_object_set_new(opts, "tokenizer", json_string(path));
    sqlite3_free(path);
}

/* The path the run opens for an option: the recorded one when there is one. */
static const char *path_opt(json_t *opts, json_t *paths, const char *name) {
    const char *p = json_string_value(json_object_get(paths, name));
    return p ? p : opt_str(opts, name);
}
static int64_t opt_int(json_t *opts, const char *name, int64_t def) {
    json_t *v = json_object_get(opts, name);
    return v ? json_integer_value(v) : def;
}

/* Runs one statement on db with bindings described by `types` ('t' text, a
 * NULL pointer binding NULL; 'i' int64), committed on its own. */
static int exec_bound(sqlite3 *db, const char *sql, const char *types, ...) {
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK) return rc;
    va_list ap;
    va_start(ap, types);
    for (int i = 0; types[i]; i++) {
        if (types[i] == 't') {
            const char *s = va_arg(ap, const char *);
            sqlite3_bind_text(st, i + 1, s, -1, SQLITE_TRANSIENT);
        } else if (types[i] == 'i') {
            sqlite3_bind_int64(st, i + 1, va_arg(ap, int64_t));
        }
    }
    va_end(ap);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

typedef struct run_ctx {
    sqlite3 *db;   /* the caller's connection: only probed for an interrupt */
    sqlite3 *meta; /* bookkeeping writes */
    int64_t id;
    int cancelled;
    int draw;
    const char *label;
    const char *device;
    double last_commit;
} run_ctx;

static double wall_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Commits progress at most a few times a second (every commit is an fsync),
 * and always at the end of the batches. A failed UPDATE (e.g. the statement
 * was interrupted) stops the run. */
static int on_progress(void *arg, const sl_extract_progress *p) {
    run_ctx *r = arg;
    if (r->draw) sl_progress_draw(stderr, r->label, r->device, p);
    /* sqlite3_interrupt() (Ctrl-C in the shell) makes any statement on the
     * caller's connection fail with SQLITE_INTERRUPT while ours still runs. */
    if (sqlite3_exec(r->db, "SELECT 1", NULL, NULL, NULL) == SQLITE_INTERRUPT) {
        r->cancelled = 1;
        return 1;
    }
    double now = wall_seconds();
    if (now - r->last_commit < 0.25 && p->tokens_done < p->tokens_total) return 0;
    r->last_commit = now;
    int rc = exec_bound(r->meta,
                        "UPDATE main.extractions SET tokens_done = ?1, sequences_done = ?2, nnz = ?3, "
                        "store_bytes = ?4 WHERE id = ?5",
                        "iiiii", (int64_t)p->tokens_done, (int64_t)p->sequences_done, (int64_t)p->nnz,
                        (int64_t)p->store_bytes, r->id);
    if (rc == SQLITE_INTERRUPT) r->cancelled = 1;
    return rc != SQLITE_OK;
}

/* Default store: beside the database file, or in the working directory. A
 * directory left by an earlier database of the same name is never reused: the
 * name gets a suffix instead. */
static char *default_store(sqlite3 *db, int64_t id) {
    const char *file = sqlite3_db_filename(db, "main");
    char *root = file && *file ? sqlite3_mprintf("%s-saelite/extraction-%lld", file, (long long)id)
                               : sqlite3_mprintf("saelite-store/extraction-%lld", (long long)id);
    char *path = root ? sqlite3_mprintf("%s", root) : NULL;
    for (int n = 2; path && !sl_dir_is_absent_or_empty(path) && n < 1000; n++) {
        sqlite3_free(path);
        path = sqlite3_mprintf("%s-%d", root, n);
    }
    sqlite3_free(root);
    return path;
}

static void fail_run(sqlite3 *db, int64_t id, const char *msg) {
    exec_bound(db,
               "UPDATE main.extractions SET status = 'failed', error = ?1, "
               "finished_at = datetime('now') WHERE id = ?2",
               "ti", msg, id);
}

/* Documents from a SQL query on the same connection: the last column of each
 * row is the text (NULL and empty rows are skipped); the document number is
 * the row's 0-based index in the result. */
typedef struct query_docs {
    sqlite3 *db;
    const char *sql;
    sqlite3_stmt *stmt;
    uint64_t row;
} query_docs;

static int query_next(void *ctx, const char **text, size_t *len, uint64_t *doc, sl_err *err) {
    query_docs *q = ctx;
    if (!q->stmt) {
        if (sqlite3_prepare_v2(q->db, q->sql, -1, &q->stmt, NULL) != SQLITE_OK)
            return sl_errf(err, "query: %s", sqlite3_errmsg(q->db));
        if (sqlite3_column_count(q->stmt) == 0) return sl_errf(err, "query: returns no columns");
    }
    for (;;) {
        int rc = sqlite3_step(q->stmt);
        if (rc == SQLITE_DONE) return 0;
        if (rc != SQLITE_ROW) return sl_errf(err, "query: %s", sqlite3_errmsg(q->db));
        int col = sqlite3_column_count(q->stmt) - 1;
        uint64_t row = q->row++;
        const unsigned char *t = sqlite3_column_text(q->stmt, col);
        if (!t || sqlite3_column_bytes(q->stmt, col) == 0) continue;
        *text = (const char *)t;
        *len = (size_t)sqlite3_column_bytes(q->stmt, col);
        *doc = row;
        return 1;
    }
}

/* The bookkeeping connection: a second connection to the same database file,
 * so progress and the final status commit while the caller's statement runs,
 * and still after sqlite3_interrupt() (Ctrl-C in the shell) stopped the
 * caller's connection. An in-memory database has no second connection: its
 * bookkeeping goes through the caller's, and a cancelled run stays 'running'. */
static sqlite3 *open_meta(sqlite3 *db) {
    const char *file = sqlite3_db_filename(db, "main");
    sqlite3 *meta = NULL;
    if (!file || !*file) return db;
    if (sqlite3_open_v2(file, &meta, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        sqlite3_close(meta);
        return db;
    }
    sqlite3_busy_timeout(meta, 10000);
    return meta;
}

static void close_meta(sqlite3 *db, sqlite3 *meta) {
    if (meta && meta != db) sqlite3_close(meta);
}

/* Runs (or resumes) extraction `id` whose row exists; sets the SQL result. */
static void run_extraction(sqlite3_context *ctx, sqlite3 *db, sqlite3 *meta, json_t *opts, json_t *paths,
                           int64_t id, const char *store, int resume) {
    char *label = opt_str(opts, "name") ? sqlite3_mprintf("%s", opt_str(opts, "name"))
                                        : sqlite3_mprintf("extraction-%lld", (long long)id);
    query_docs qd = {.db = db, .sql = opt_str(opts, "query")};
    sl_extract_opts eo = {
        .sae_path = path_opt(opts, paths, "sae"),
        .source = {.activations_path = path_opt(opts, paths, "activations"),
                   .model_path = path_opt(opts, paths, "model"),
                   .dataset_path = path_opt(opts, paths, "dataset"),
                   .docs = qd.sql ? query_next : NULL,
                   .docs_ctx = &qd,
                   .dataset_kind = opt_str(opts, "format"),
                   .text_mode = opt_str(opts, "text_mode"),
                   .text_field = opt_str(opts, "text_field"),
                   .token_dtype = opt_str(opts, "token_dtype"),
                   .tokenizer_path = path_opt(opts, paths, "tokenizer"),
                   .hook = opt_str(opts, "hook"),
                   .context_size = (uint32_t)opt_int(opts, "context_size", 0),
                   .prepend_bos = (int)opt_int(opts, "prepend_bos", -1),
                   .include_special = (int)opt_int(opts, "include_special", 0),
                   .center = (int)opt_int(opts, "center_writing_weights", -1),
                   .max_tokens = (uint64_t)opt_int(opts, "max_tokens", 0)},
        .store_dir = store,
        .top_k = (uint32_t)opt_int(opts, "top_k", 20),
        .context = (uint32_t)opt_int(opts, "context", 10),
        .one_per_sequence = (int)opt_int(opts, "one_per_sequence", 0),
        .batch_size = (uint32_t)opt_int(opts, "batch_size", 0),
        .max_sequences = (uint64_t)opt_int(opts, "max_sequences", 0),
        .device = opt_str(opts, "device"),
        .fast_math = opt_str(opts, "precision") && strcmp(opt_str(opts, "precision"), "tf32") == 0,
        .resume = resume,
    };
    sl_err err = {{0}};
    sl_extraction *x = sl_extraction_open(&eo, &err);
    sqlite3_finalize(qd.stmt); /* the query is read whole while the extraction opens */
    if (!x) {
        fail_run(meta, id, err.msg);
        sqlite3_result_error(ctx, err.msg, -1);
        sqlite3_free(label);
        return;
    }
    sl_extract_shape s = sl_extraction_shape(x);
    exec_bound(meta,
               "UPDATE main.extractions SET status = 'running', error = NULL, d_in = ?1, d_sae = ?2, seq_len = ?3, "
               "sequences_total = ?4, tokens_total = ?5, hook = ?6, device = ?7 WHERE id = ?8",
               "iiiiitti", (int64_t)s.d_in, (int64_t)s.d_sae, (int64_t)s.seq_len, (int64_t)s.sequences_total,
               (int64_t)s.tokens_total, s.from_model ? s.hook : NULL, s.device, id);
    /* What the run decided about BOS, for encode_text to pack a snippet the same
     * way (a 2-D token file has none, whatever the options said). */
    if (s.from_model)
        exec_bound(meta, "UPDATE main.extractions SET options = json_set(options, '$.prepend_bos', ?1) WHERE id = ?2",
                   "ii", (int64_t)s.prepend_bos, id);
    const char *progress = opt_str(opts, "progress");
    run_ctx r = {.db = db, .meta = meta, .id = id, .label = label, .device = s.device};
    r.draw = progress && !strcmp(progress, "on") ? 1 : progress && !strcmp(progress, "off") ? 0 : isatty(2);
    int rc = sl_extraction_run(x, on_progress, &r, &err);
    if (r.draw) sl_progress_end(stderr);
    double ev = 0, mse = 0;
    int have_quality = rc == 0 && sl_extraction_quality(x, &ev, &mse) == 0;
    sl_extraction_close(x); /* releases the store's lock before the status says so */
    if (rc != 0 && r.cancelled) {
        char *msg = sqlite3_mprintf("extraction %lld cancelled; what it committed is kept: "
                                    "SELECT resume_extraction(%lld) continues it", (long long)id, (long long)id);
        exec_bound(meta,
                   "UPDATE main.extractions SET status = 'cancelled', error = ?1, finished_at = datetime('now') "
                   "WHERE id = ?2",
                   "ti", msg, id);
        sqlite3_result_error(ctx, msg, -1);
        sqlite3_free(msg);
    } else if (rc != 0) {
        fail_run(meta, id, err.msg);
        sqlite3_result_error(ctx, err.msg, -1);
    } else {
        exec_bound(meta, "UPDATE main.extractions SET status = 'done', finished_at = datetime('now') WHERE id = ?1",
                   "i", id);
        if (have_quality) {
            sqlite3_stmt *q = NULL;
            if (sqlite3_prepare_v2(meta, "UPDATE main.extractions SET explained_variance = ?1, mse = ?2 WHERE id = ?3",
                                   -1, &q, NULL) == SQLITE_OK) {
                sqlite3_bind_double(q, 1, ev);
                sqlite3_bind_double(q, 2, mse);
                sqlite3_bind_int64(q, 3, id);
                sqlite3_step(q);
            }
            sqlite3_finalize(q);
        }
        sqlite3_result_int64(ctx, id);
    }
    sqlite3_free(label);
}

/* A read-only connection must not start a run: the run writes files and its
 * bookkeeping goes through a second, read-write connection that the caller's
 * read-only mode would not cover. */
static int refuse_read_only(sqlite3_context *ctx, sqlite3 *db, const char *fn) {
    if (sqlite3_db_readonly(db, "main") != 1) return 0;
    char *msg = sqlite3_mprintf("%s: the database is open read-only; an extraction writes a store and "
                                "records it in extractions (open the database read-write)", fn);
    sqlite3_result_error(ctx, msg, -1);
    sqlite3_free(msg);
    return 1;
}

void sl_extract_features_fn(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
    sqlite3 *db = sqlite3_context_db_handle(ctx), *meta = NULL;
    char *msg = NULL, *store = NULL;
    if (refuse_read_only(ctx, db, "extract_features")) return;
    json_t *opts = parse_options(argc, argv, &msg);
    if (!opts) {
        sqlite3_result_error(ctx, msg, -1);
        sqlite3_free(msg);
        return;
    }
    default_tokenizer(opts);
    json_t *paths = NULL;
    if (sl_extractions_ensure(db, &msg) != SQLITE_OK) {
        sqlite3_result_error(ctx, msg ? msg : "extract_features: cannot create the extractions table", -1);
        goto done;
    }
    meta = open_meta(db);
    json_object_set_new(opts, "top_k", json_integer(opt_int(opts, "top_k", 20)));
    json_object_set_new(opts, "context", json_integer(opt_int(opts, "context", 10)));
    json_object_set_new(opts, "intervals", json_integer(opt_int(opts, "intervals", 10)));
    json_object_set_new(opts, "interval_examples", json_integer(opt_int(opts, "interval_examples", 5)));
    json_object_set_new(opts, "random_examples", json_integer(opt_int(opts, "random_examples", 10)));
    char *opts_text = json_dumps(opts, JSON_COMPACT | JSON_SORT_KEYS);
    int rc = exec_bound(meta,
                        "INSERT INTO main.extractions(name, sae, model, source, tokenizer, options, status, "
                        "started_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued', datetime('now'))",
                        "tttttt", opt_str(opts, "name"), opt_str(opts, "sae"), opt_str(opts, "model"),
                        opt_str(opts, "activations")   ? opt_str(opts, "activations")
                        : opt_str(opts, "dataset") ? opt_str(opts, "dataset")
                                                   : opt_str(opts, "query"),
                        opt_str(opts, "tokenizer"), opts_text);
    free(opts_text);
    if (rc != SQLITE_OK) {
        sqlite3_result_error(ctx, rc == SQLITE_BUSY ? "extract_features: the database is locked (run it outside a "
                                                      "transaction)"
                                                    : sqlite3_errmsg(meta),
                             -1);
        goto done;
    }
    int64_t id = sqlite3_last_insert_rowid(meta);
    store = opt_str(opts, "store") ? sqlite3_mprintf("%s", opt_str(opts, "store")) : default_store(db, id);
    paths = store ? resolve_paths(db, opts, store) : NULL;
    char *paths_text = paths ? json_dumps(paths, JSON_COMPACT) : NULL;
    if (!paths_text) {
        sqlite3_result_error_nomem(ctx);
        goto done;
    }
    exec_bound(meta, "UPDATE main.extractions SET store = ?1, name = coalesce(name, ?2), paths = ?3 WHERE id = ?4",
               "ttti", store, opt_str(opts, "name") ? opt_str(opts, "name") : "", paths_text, id);
    free(paths_text);
    exec_bound(meta, "UPDATE main.extractions SET name = 'extraction-' || id WHERE id = ?1 AND name = ''", "i", id);
    char *store_path = sl_store_resolve(db, json_string_value(json_object_get(paths, "store")));
    run_extraction(ctx, db, meta, opts, paths, id, store_path ? store_path : store, 0);
    sqlite3_free(store_path);
done:
    json_decref(paths);
    close_meta(db, meta);
    sqlite3_free(msg);
    sqlite3_free(store);
    json_decref(opts);
}

/* resume_extraction(id): continues a run that crashed, failed or was cancelled
 * from its last checkpoint, with the options and paths it was started with. */
void sl_resume_extraction_fn(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
    (void)argc;
    sqlite3 *db = sqlite3_context_db_handle(ctx), *meta = NULL;
    if (refuse_read_only(ctx, db, "resume_extraction")) return;
    if (sqlite3_value_type(argv[0]) != SQLITE_INTEGER) {
        sqlite3_result_error(ctx, "resume_extraction: expects an extraction id", -1);
        return;
    }
    int64_t id = sqlite3_value_int64(argv[0]);
    json_t *opts = NULL, *paths = NULL;
    char *msg = NULL;
    sl_extraction_row row;
    if (sl_extraction_lookup(db, 1, id, "resume_extraction", &row, &msg)) goto done;
    if (row.status && strcmp(row.status, "done") == 0)
        msg = sqlite3_mprintf("resume_extraction: extraction %lld is already done", (long long)id);
    else if (!row.store)
        msg = sqlite3_mprintf("resume_extraction: extraction %lld has no store", (long long)id);
    else if (!row.options || !(opts = parse_options_json(row.options, &msg))) {
        if (!msg) msg = sqlite3_mprintf("resume_extraction: extraction %lld has no options", (long long)id);
    }
    if (msg) goto done;
    paths = row.paths ? json_loads(row.paths, 0, NULL) : NULL;
    meta = open_meta(db);
    run_extraction(ctx, db, meta, opts, paths, id, row.store, 1);
done:
    if (msg) sqlite3_result_error(ctx, msg, -1);
    sl_extraction_row_free(&row);
    close_meta(db, meta);
    sqlite3_free(msg);
    json_decref(opts);
    json_decref(paths);
}

/* check_extraction(id): 'ok', or one line per damaged file or block. */
void sl_check_extraction_fn(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
    (void)argc;
    sqlite3 *db = sqlite3_context_db_handle(ctx);
    int64_t id;
    char *msg = NULL;
    sl_extraction_row row = {0};
    if (!sl_integer_arg(argv[0], &id))
        msg = sqlite3_mprintf("check_extraction: no extraction with id %s", sqlite3_value_text(argv[0]));
    else if (sl_extraction_lookup(db, 1, id, "check_extraction", &row, &msg) == 0 && !row.store)
        msg = sqlite3_mprintf("check_extraction: extraction %lld has no store", (long long)id);
    if (msg) {
        sqlite3_result_error(ctx, msg, -1);
    } else {
        sl_buf report = {0};
        if (sl_check_store(row.store, &report) == 0)
            sqlite3_result_text(ctx, "ok", -1, SQLITE_STATIC);
        else if (report.oom)
            sqlite3_result_error_nomem(ctx);
        else
            sqlite3_result_text(ctx, sl_buf_str(&report), (int)report.len - 1, SQLITE_TRANSIENT); /* no last \n */
        sl_buf_free(&report);
    }
    sqlite3_free(msg);
    sl_extraction_row_free(&row);
}
