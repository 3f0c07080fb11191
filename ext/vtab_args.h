/* vtab_args.h: xFilter arguments read the same way by every virtual table.
 *
 * SQL compares 3.0 = 3, so an integral REAL names feature 3; 3.5, text or
 * NULL name no feature (the row set is empty, as with a plain table). */
#ifndef SAELITE_VTAB_ARGS_H
#define SAELITE_VTAB_ARGS_H

#include <sqlite3ext.h>
#include <stdint.h>

/* 1 and *out when v is an integer (or an integral REAL); 0 otherwise. */
int sl_integer_arg(sqlite3_value *v, int64_t *out);

/* The ids of `feature_id = ?` (in_list 0: arg is the value) or `feature_id IN
 * (...)` (in_list 1: arg is read whole with sqlite3_vtab_in_first/next), sorted
 * and unique, values that name no feature dropped. *ids is sqlite3_malloc'd
 * (NULL when *n is 0); free it with sqlite3_free. Returns an SQLite code. */
int sl_feature_ids(sqlite3_value *arg, int in_list, int64_t **ids, int64_t *n);

#endif
