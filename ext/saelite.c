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
#include "extract_fn.h"
#include "vtabs.h"

SQLITE_EXTENSION_INIT1

#ifdef _WIN32
__declspec(dllexport)
#endif
int sqlite3_saelite_init(sqlite3 *db, char **errmsg, const sqlite3_api_routines *api) {
    SQLITE_EXTENSION_INIT2(api);
    int rc = sl_register_extract(db);
    if (rc == SQLITE_OK) rc = sl_register_vtabs(db);
    if (rc != SQLITE_OK) {
        *errmsg = sqlite3_mprintf("saelite: registration failed: %s", sqlite3_errstr(rc));
        return rc;
    }
    /* Best effort: a read-only database can still be browsed if it has the table. */
    sqlite3_exec(db, SL_EXTRACTIONS_DDL ";" SL_LABELS_DDL, NULL, NULL, NULL);
    return SQLITE_OK;
}
