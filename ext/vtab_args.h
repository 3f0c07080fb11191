/* vtab_args.h: arguments read the same way by every virtual table.
 *
 * Table-valued functions. An argument is an equality on a HIDDEN column, so
 * f(a, b) and WHERE hidden_a = a AND hidden_b = b (any order, the form GUIs and
 * ORMs write) are the same query. sl_tvf_best_index plans them as SQLite's
 * series.c does:
 *   - an argument whose constraint is not usable in this plan (its value comes
 *     from a table later in the join): SQLITE_CONSTRAINT, the plan is refused;
 *   - a required argument that no constraint gives: refused too. With no
 *     constraint on the table at all the refusal is an error that names the
 *     argument ("feature_histogram: the argument feature_id is missing: give it
 *     as in feature_histogram(42) or WHERE feature_id = ..."); otherwise SQLITE_CONSTRAINT, since the call may
 *     plan one branch of an OR (SQLite then says "no query solution" if no
 *     plan is left);
 *   - every given argument is consumed (omit) and passed to xFilter in the
 *     order of the spec; idxNum bit i says argument i is given, bit 16 + i
 *     that it is an IN list read whole (sqlite3_vtab_in; SL_ARG_IN only).
 *
 * Feature ids. SQL compares 3.0 = 3, so an integral REAL names feature 3; 3.5,
 * text or NULL name no feature (the row set is empty, as with a plain table). */
#ifndef SAELITE_VTAB_ARGS_H
#define SAELITE_VTAB_ARGS_H

#include <sqlite3ext.h>
#include <stdint.h>

enum { SL_ARG_REQUIRED = 1, SL_ARG_IN = 2 };

typedef struct sl_arg_spec {
    int column;       /* the HIDDEN column */
    const char *name; /* as the schema names it */
    int flags;        /* SL_ARG_* */
} sl_arg_spec;

typedef struct sl_tvf_spec {
    const char *name;  /* the function, for messages */
    const char *example; /* a call, e.g. "feature_histogram(42)" */
    const sl_arg_spec *args;
    int n_args;
} sl_tvf_spec;

#define SL_TVF_IN_BIT(i) (1 << (16 + (i)))

/* Plans the arguments (see above). Leaves estimatedCost, estimatedRows and the
 * order to the caller, which sets them after an SQLITE_OK. */
int sl_tvf_best_index(sqlite3_vtab *vtab, sqlite3_index_info *info, const sl_tvf_spec *spec);

/* xFilter's argv spread by argument: args[i] is argument i's value, NULL when
 * it was not given. */
void sl_tvf_args(const sl_tvf_spec *spec, int idx_num, sqlite3_value **argv, sqlite3_value **args);

/* 1 and *out when v is an integer (or an integral REAL); 0 otherwise. */
int sl_integer_arg(sqlite3_value *v, int64_t *out);

/* The ids of `feature_id = ?` (in_list 0: arg is the value) or `feature_id IN
 * (...)` (in_list 1: arg is read whole with sqlite3_vtab_in_first/next), sorted
 * and unique, values that name no feature dropped. *ids is sqlite3_malloc'd
 * (NULL when *n is 0); free it with sqlite3_free. Returns an SQLite code. */
int sl_feature_ids(sqlite3_value *arg, int in_list, int64_t **ids, int64_t *n);

#endif
