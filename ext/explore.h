/* explore.h: registration of the functions for exploring features beyond the
 * three browsing tables: encode_text (probe.c), feature_logits (logits.c),
 * highlight (highlight.c), token_features and search_examples (search.c). */
#ifndef SAELITE_EXPLORE_H
#define SAELITE_EXPLORE_H

#include <sqlite3ext.h>

int sl_register_highlight(sqlite3 *db);
int sl_register_probe(sqlite3 *db);
int sl_register_logits(sqlite3 *db);
int sl_register_search(sqlite3 *db);

#endif
