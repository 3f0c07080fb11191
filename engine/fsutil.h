/* fsutil.h: small filesystem helpers for crash-safe writes. */
#ifndef SAELITE_FSUTIL_H
#define SAELITE_FSUTIL_H

#include "common.h"

/* fsync a directory so a rename inside it is durable; errors are ignored
 * (some filesystems refuse fsync on directories). */
void sl_fsync_dir(const char *dir);

/* mkdir -p. */
int sl_mkdirs(const char *path, sl_err *err);

/* 1 if path does not exist or is an empty directory, 0 otherwise. */
int sl_dir_is_absent_or_empty(const char *path);

#endif
