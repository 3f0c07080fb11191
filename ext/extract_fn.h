/* extract_fn.h: registration of extract_features(). */
#ifndef SAELITE_EXTRACT_FN_H
#define SAELITE_EXTRACT_FN_H

#include <sqlite3ext.h>

int sl_register_extract(sqlite3 *db);

#endif
