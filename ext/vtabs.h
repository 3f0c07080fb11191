/* vtabs.h: registration of the browsing virtual tables. */
#ifndef SAELITE_VTABS_H
#define SAELITE_VTABS_H

#include <sqlite3ext.h>

#include "catalog.h"

/* features, feature_stats, top_examples and the table-valued functions below,
 * sharing one catalog of opened extractions. */
int sl_register_vtabs(sqlite3 *db);

/* feature_histogram, density_histogram (vtab_histogram.c). */
int sl_register_histograms(sqlite3 *db, sl_catalog *cat);

/* feature_cooccurrence (vtab_cooccurrence.c). */
int sl_register_cooccurrence(sqlite3 *db, sl_catalog *cat);

#endif
