#include "common.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int sl_errf(sl_err *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int sl_errf_path(sl_err *err, const char *path, const char *fmt, ...) {
    if (err) {
        int n = snprintf(err->msg, sizeof err->msg, "%s: ", path ? path : "(null)");
        if (n < 0 || (size_t)n >= sizeof err->msg) return -1;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg + n, sizeof err->msg - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -1;
}
