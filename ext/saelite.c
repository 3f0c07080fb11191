/* saelite.c: the loadable extension's entry point.
 *
 *   .load build/saelite
 *   SELECT extract_features('sae', 'examples/tiny/sae', 'activations', 'acts.safetensors',
 *                           'tokenizer', 'examples/tiny/tokenizer.json');
 *   SELECT * FROM features ORDER BY frequency DESC LIMIT 5;
 *   SELECT rank, activation, context FROM top_examples WHERE feature_id = 7;
 *   SELECT * FROM feature_stats WHERE is_dead;      -- see docs/SQL.md
 *
 * Registers extract_features() and the eponymous virtual tables features,
 * feature_stats and top_examples, and creates the extractions table when the
 * database is writable (extract_features creates it otherwise on first use). */
#include <sqlite3ext.h>

#include "catalog.h"
#include "explore.h"
#include "extract_fn.h"
#include "vtab_activations.h"
#include "vtabs.h"

SQLITE_EXTENSION_INIT1

/* Columns added to the extractions table after its first release: a database
 * made by an older version gets them here (best effort, as the DDL). */
static void add_missing_columns(sqlite3 *db) {
    static const struct {
        const char *name, *definition;
    } added[] = {{"dead_threshold", SL_DEAD_THRESHOLD_COLUMN}, {"dense_threshold", SL_DENSE_THRESHOLD_COLUMN}};
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(db, "SELECT 1 FROM pragma_table_info('extractions', 'main') WHERE name = ?1", -1, &q,
                           NULL) != SQLITE_OK)
        return;
    for (size_t i = 0; i < sizeof added / sizeof added[0]; i++) {
        sqlite3_bind_text(q, 1, added[i].name, -1, SQLITE_STATIC);
        int present = sqlite3_step(q) == SQLITE_ROW;
        sqlite3_reset(q);
        if (present) continue;
        char *sql = sqlite3_mprintf("ALTER TABLE main.extractions ADD COLUMN %s", added[i].definition);
        if (sql) sqlite3_exec(db, sql, NULL, NULL, NULL);
        sqlite3_free(sql);
    }
    sqlite3_finalize(q);
}

#ifdef _WIN32
__declspec(dllexport)
#endif
int sqlite3_saelite_init(sqlite3 *db, char **errmsg, const sqlite3_api_routines *api) {
    SQLITE_EXTENSION_INIT2(api);
    int rc = sl_register_extract(db);
    if (rc == SQLITE_OK) rc = sl_register_vtabs(db);
    if (rc == SQLITE_OK) rc = sl_register_activations(db);
    if (rc == SQLITE_OK) rc = sl_register_highlight(db);
    if (rc == SQLITE_OK) rc = sl_register_probe(db);
    if (rc == SQLITE_OK) rc = sl_register_search(db);
    if (rc != SQLITE_OK) {
        *errmsg = sqlite3_mprintf("saelite: registration failed: %s", sqlite3_errstr(rc));
        return rc;
    }
    /* Best effort: a read-only database can still be browsed if it has the table. */
    sqlite3_exec(db, SL_EXTRACTIONS_DDL ";" SL_LABELS_DDL, NULL, NULL, NULL);
    add_missing_columns(db);
    return SQLITE_OK;
}
