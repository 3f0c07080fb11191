/* fsutil.h: small filesystem helpers for crash-safe writes. */
#ifndef SAELITE_FSUTIL_H
#define SAELITE_FSUTIL_H

#include "common.h"

/* fsync a directory so a rename inside it is durable; errors are ignored
 * (some filesystems refuse fsync on directories). */
void sl_fsync_dir(const char *dir);

/* Makes sure fd has `size` bytes of real storage before it is written through
 * mmap: a mapping over a sparse file on a full disk faults with SIGBUS, so
 * running out of space must show up here, as an error (errno set). */
int sl_reserve_file(int fd, size_t size);

/* Maps a regular file read-only. *map is NULL for an empty file. Errors name
 * the file ("cannot open ...: reason"; `what` says what the file is). */
int sl_map_readonly(const char *path, const char *what, void **map, size_t *size, sl_err *err);

/* mkdir -p. */
int sl_mkdirs(const char *path, sl_err *err);

/* 1 if path does not exist or is an empty directory, 0 otherwise. */
int sl_dir_is_absent_or_empty(const char *path);

#endif
