/* saelite.c: the loadable extension's entry point.
 *
 *   .load build/saelite
 *   SELECT extract_features('sae', 'examples/tiny/sae', 'activations', 'acts.safetensors',
 *                           'tokenizer', 'examples/tiny/tokenizer.json');
 *   SELECT * FROM features ORDER BY frequency DESC LIMIT 5;
 *   SELECT rank, activation, context FROM top_examples WHERE feature_id = 7;
 *   SELECT * FROM feature_stats WHERE feature_id IN (1, 2);   -- see docs/SQL.md
 *   SELECT saelite_version();
 *
 * Registers the modules and functions of the two tables below (docs/SQL.md
 * lists the same ones, and tests/sql/test_registry.py holds the two to each
 * other), each with a reference to the connection's context (context.h), and
 * creates the extractions table when the database is writable
 * (extract_features creates it otherwise on first use). Needs SQLite 3.38 or
 * later (sqlite3_vtab_in). */
#include <sqlite3ext.h>

#include "catalog.h"
#include "context.h"
#include "registry.h"

SQLITE_EXTENSION_INIT1

#define SAELITE_VERSION "0.11.0"
#define MIN_SQLITE 3038000

static void version_fn(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
    (void)argc, (void)argv;
    sqlite3_result_text(ctx, SAELITE_VERSION, -1, SQLITE_STATIC);
}

static const struct {
    const char *name;
    const sqlite3_module *module;
} modules[] = {
    {"features", &sl_features_module},
    {"feature_stats", &sl_feature_stats_module},
    {"top_examples", &sl_top_examples_module},
    {"activations", &sl_activations_module},
    {"feature_histogram", &sl_feature_histogram_module},
    {"density_histogram", &sl_density_histogram_module},
    {"feature_cooccurrence", &sl_feature_cooccurrence_module},
    {"token_features", &sl_token_features_module},
    {"search_examples", &sl_search_examples_module},
    {"encode_text", &sl_encode_text_module},
    {"feature_logits", &sl_feature_logits_module},
};

/* Pure functions are deterministic and innocuous; the others read and write
 * files, so SQL in a schema (triggers, views) may not call them. */
#define PURE (SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS)
#define FILES (SQLITE_UTF8 | SQLITE_DIRECTONLY)

static const struct {
    const char *name;
    int n_arg, flags;
    void (*fn)(sqlite3_context *, int, sqlite3_value **);
} functions[] = {
    {"extract_features", -1, FILES, sl_extract_features_fn},
    {"resume_extraction", 1, FILES, sl_resume_extraction_fn},
    {"check_extraction", 1, FILES, sl_check_extraction_fn},
    {"highlight", 2, PURE, sl_highlight_fn},
    {"highlight", 3, PURE, sl_highlight_fn},
    {"saelite_version", 0, PURE, version_fn},
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

#ifdef _WIN32
__declspec(dllexport)
#endif
int sqlite3_saelite_init(sqlite3 *db, char **errmsg, const sqlite3_api_routines *api) {
    SQLITE_EXTENSION_INIT2(api);
    if (sqlite3_libversion_number() < MIN_SQLITE) {
        *errmsg = sqlite3_mprintf("saelite needs SQLite 3.38.0 or later (sqlite3_vtab_in); this is SQLite %s",
                                  sqlite3_libversion());
        return SQLITE_ERROR;
    }
    sl_ctx *ctx = sl_ctx_new();
    if (!ctx) return SQLITE_NOMEM;
    int rc = SQLITE_OK;
    /* Each registration holds its own reference: SQLite drops it when the
     * connection closes, or at once when the registration fails. */
    for (size_t i = 0; rc == SQLITE_OK && i < COUNT(modules); i++) {
        rc = sqlite3_create_module_v2(db, modules[i].name, modules[i].module, sl_ctx_ref(ctx), sl_ctx_unref);
        if (rc != SQLITE_OK)
            *errmsg = sqlite3_mprintf("saelite: cannot register the module %s: %s", modules[i].name,
                                      sqlite3_errmsg(db));
    }
    for (size_t i = 0; rc == SQLITE_OK && i < COUNT(functions); i++) {
        rc = sqlite3_create_function_v2(db, functions[i].name, functions[i].n_arg, functions[i].flags,
                                        sl_ctx_ref(ctx), functions[i].fn, NULL, NULL, sl_ctx_unref);
        if (rc != SQLITE_OK)
            *errmsg = sqlite3_mprintf("saelite: cannot register the function %s/%d: %s", functions[i].name,
                                      functions[i].n_arg, sqlite3_errmsg(db));
    }
    sl_ctx_unref(ctx);
    if (rc != SQLITE_OK) return rc;
    /* Best effort: a read-only database can still be browsed if it has the table. */
    char *ignored = NULL;
    sl_extractions_ensure(db, &ignored);
    sqlite3_free(ignored);
    return SQLITE_OK;
}
