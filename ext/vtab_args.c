/* vtab_args.c: see vtab_args.h. */
#include "vtab_args.h"

#include <math.h>
#include <stdlib.h>

#include "context.h"

SQLITE_EXTENSION_INIT3

int sl_tvf_best_index(sqlite3_vtab *vtab, sqlite3_index_info *info, const sl_tvf_spec *spec) {
    int use[16], unusable = 0, constrained = 0;
    for (int a = 0; a < spec->n_args; a++) use[a] = -1;
    for (int i = 0; i < info->nConstraint; i++) {
        const struct sqlite3_index_constraint *c = &info->aConstraint[i];
        if (c->op != SQLITE_INDEX_CONSTRAINT_LIMIT && c->op != SQLITE_INDEX_CONSTRAINT_OFFSET) constrained = 1;
        if (c->op != SQLITE_INDEX_CONSTRAINT_EQ) continue;
        for (int a = 0; a < spec->n_args; a++) {
            if (c->iColumn != spec->args[a].column) continue;
            if (!c->usable) unusable = 1;
            else if (use[a] < 0) use[a] = i;
        }
    }
    if (unusable) return SQLITE_CONSTRAINT; /* a plan where the argument is known will come */
    for (int a = 0; a < spec->n_args; a++) {
        if (use[a] >= 0 || !(spec->args[a].flags & SL_ARG_REQUIRED)) continue;
        if (constrained) return SQLITE_CONSTRAINT;
        return sl_vtab_error(vtab, "%s: the argument %s is missing: give it as in %s or WHERE %s = ...", spec->name,
                             spec->args[a].name, spec->example, spec->args[a].name);
    }
    int idx = 0, argv_i = 0;
    for (int a = 0; a < spec->n_args; a++) {
        if (use[a] < 0) continue;
        idx |= 1 << a;
        if ((spec->args[a].flags & SL_ARG_IN) && sqlite3_vtab_in(info, use[a], 1)) idx |= SL_TVF_IN_BIT(a);
        info->aConstraintUsage[use[a]].argvIndex = ++argv_i;
        info->aConstraintUsage[use[a]].omit = 1;
    }
    info->idxNum = idx;
    return SQLITE_OK;
}

void sl_tvf_args(const sl_tvf_spec *spec, int idx_num, sqlite3_value **argv, sqlite3_value **args) {
    for (int a = 0, i = 0; a < spec->n_args; a++) args[a] = idx_num & (1 << a) ? argv[i++] : NULL;
}

int sl_integer_arg(sqlite3_value *v, int64_t *out) {
    int t = sqlite3_value_type(v);
    if (t == SQLITE_INTEGER) {
        *out = sqlite3_value_int64(v);
        return 1;
    }
    double d = sqlite3_value_double(v);
    if (t != SQLITE_FLOAT || d != floor(d) || fabs(d) > 9e15) return 0;
    *out = (int64_t)d;
    return 1;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int push(int64_t **ids, int64_t *n, int64_t *cap, sqlite3_value *v) {
    int64_t id;
    if (!sl_integer_arg(v, &id)) return SQLITE_OK;
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 16;
        int64_t *p = sqlite3_realloc64(*ids, (sqlite3_uint64)*cap * sizeof *p);
        if (!p) return SQLITE_NOMEM;
        *ids = p;
    }
    (*ids)[(*n)++] = id;
    return SQLITE_OK;
}

int sl_feature_ids(sqlite3_value *arg, int in_list, int64_t **ids, int64_t *n) {
    int64_t cap = 0;
    int rc = SQLITE_OK;
    *ids = NULL;
    *n = 0;
    if (!in_list) {
        rc = push(ids, n, &cap, arg);
    } else {
        sqlite3_value *v;
        for (rc = sqlite3_vtab_in_first(arg, &v); rc == SQLITE_OK && v; rc = sqlite3_vtab_in_next(arg, &v))
            if ((rc = push(ids, n, &cap, v)) != SQLITE_OK) break;
        if (rc == SQLITE_DONE) rc = SQLITE_OK;
    }
    if (rc != SQLITE_OK) {
        sqlite3_free(*ids);
        *ids = NULL;
        *n = 0;
        return rc;
    }
    if (*n == 0) return SQLITE_OK; /* no id: no rows (and no qsort of NULL) */
    qsort(*ids, (size_t)*n, sizeof **ids, cmp_i64);
    int64_t u = 0;
    for (int64_t i = 0; i < *n; i++)
        if (i == 0 || (*ids)[i] != (*ids)[u - 1]) (*ids)[u++] = (*ids)[i];
    *n = u;
    return SQLITE_OK;
}
