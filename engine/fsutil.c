#include "fsutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

void sl_fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

int sl_reserve_file(int fd, size_t size) {
    int rc = size ? posix_fallocate(fd, 0, (off_t)size) : 0;
    if (rc == 0) return 0;
    if (rc != EOPNOTSUPP && rc != EINVAL) {
        errno = rc;
        return -1;
    }
    /* The filesystem cannot fallocate: write the zeros. */
    static const char zeros[65536];
    if (ftruncate(fd, 0) != 0) return -1;
    for (size_t done = 0; done < size;) {
        size_t n = size - done < sizeof zeros ? size - done : sizeof zeros;
        ssize_t w = pwrite(fd, zeros, n, (off_t)done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        done += (size_t)w;
    }
    return 0;
}

int sl_map_readonly(const char *path, const char *what, void **map, size_t *size, sl_err *err) {
    *map = NULL;
    *size = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return sl_errf_path(err, path, "cannot open %s: %s", what, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return sl_errf_path(err, path, "not a regular file");
    }
    *size = (size_t)sb.st_size;
    void *m = *size ? mmap(NULL, *size, PROT_READ, MAP_PRIVATE, fd, 0) : NULL;
    close(fd);
    if (m == MAP_FAILED) return sl_errf_path(err, path, "cannot mmap: %s", strerror(errno));
    *map = m;
    return 0;
}

int sl_mkdirs(const char *path, sl_err *err) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return sl_errf_path(err, path, "path too long");
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                return sl_errf_path(err, buf, "cannot create directory: %s", strerror(errno));
            *p = c;
            if (!c) break;
        }
    }
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return sl_errf_path(err, path, "exists and is not a directory");
    return 0;
}

int sl_dir_is_absent_or_empty(const char *path) {
    DIR *d = opendir(path);
    if (!d) return errno == ENOENT;
    struct dirent *e;
    int empty = 1;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            empty = 0;
            break;
        }
    closedir(d);
    return empty;
}
