/* vtabs.h: registration of the browsing virtual tables. */
#ifndef SAELITE_VTABS_H
#define SAELITE_VTABS_H

#include <sqlite3ext.h>

int sl_register_vtabs(sqlite3 *db);

#endif
