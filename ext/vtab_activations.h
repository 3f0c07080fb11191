/* vtab_activations.h: registration of the `activations` virtual table. */
#ifndef SAELITE_VTAB_ACTIVATIONS_H
#define SAELITE_VTAB_ACTIVATIONS_H

#include <sqlite3ext.h>

int sl_register_activations(sqlite3 *db);

#endif
