/* common.h: error reporting shared by every engine module.
 *
 * Every fallible engine call takes an sl_err* and, on failure, fills it with a
 * message that names the file and the problem, then returns -1 (or NULL).
 * The SQL layer copies err->msg into sqlite3_result_error / zErrMsg verbatim. */
#ifndef SAELITE_COMMON_H
#define SAELITE_COMMON_H

#include <stddef.h>
#include <stdint.h>

#define SL_ERR_MAX 1024

typedef struct sl_err {
    char msg[SL_ERR_MAX];
} sl_err;

/* printf-style: sets err->msg (if err != NULL) and returns -1. */
int sl_errf(sl_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Like sl_errf, but prepends "PATH: " so every message names its file. */
int sl_errf_path(sl_err *err, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
