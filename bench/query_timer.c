/* query_timer: times SQL queries inside one process (no shell start-up in the figure).
 *
 *   query_timer DB EXTENSION [--runs N] [--seconds S] LABEL SQL [LABEL SQL ...]
 *
 * Opens DB, loads EXTENSION, then for each query: one cold run (the first in the
 * connection: it includes opening the extraction's files), then up to N warm runs
 * (default 50) within about S seconds (default 3), each stepping through every row.
 * One line per query on stdout, tab-separated:
 *   LABEL  ok  median_ms  min_ms  max_ms  cold_ms  runs  rows
 *   LABEL  na  <SQLite's error message>      (the query does not prepare or run: a table or
 *                                             function that does not exist in this build)
 * Built by bench/bench.sh with the system's sqlite3 library (not part of the CMake build:
 * tools/ executables link the engine only). */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return 1e3 * (double)ts.tv_sec + 1e-6 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Runs sql to completion; returns the number of rows, or -1 with *err set. */
static long run_once(sqlite3 *db, const char *sql, const char **err) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        *err = sqlite3_errmsg(db);
        return -1;
    }
    long rows = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        /* Fetch every column as a client would, in its own type: text and blobs with their
         * bytes (so lazily built JSON arrays and context strings are produced), numbers as
         * numbers (asking a REAL for its bytes would time SQLite's double-to-text instead). */
        int n = sqlite3_column_count(st);
        for (int i = 0; i < n; i++) {
            switch (sqlite3_column_type(st, i)) {
            case SQLITE_INTEGER: (void)sqlite3_column_int64(st, i); break;
            case SQLITE_FLOAT: (void)sqlite3_column_double(st, i); break;
            case SQLITE_NULL: break;
            default: (void)sqlite3_column_bytes(st, i); break;
            }
        }
        rows++;
    }
    if (rc != SQLITE_DONE) {
        *err = sqlite3_errmsg(db);
        sqlite3_finalize(st);
        return -1;
    }
    sqlite3_finalize(st);
    return rows;
}

static void usage(void) {
    fprintf(stderr, "usage: query_timer DB EXTENSION [--runs N] [--seconds S] LABEL SQL [LABEL SQL ...]\n");
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 3) usage();
    const char *db_path = argv[1], *ext = argv[2];
    int runs = 50;
    double budget_ms = 3000;
    int i = 3;
    for (; i + 1 < argc && argv[i][0] == '-' && argv[i][1] == '-'; i += 2) {
        if (!strcmp(argv[i], "--runs")) runs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--seconds")) budget_ms = 1e3 * atof(argv[i + 1]);
        else usage();
    }
    if (runs < 1 || (argc - i) % 2 != 0 || i >= argc) usage();

    sqlite3 *db;
    if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        fprintf(stderr, "query_timer: cannot open %s: %s\n", db_path, sqlite3_errmsg(db));
        return 1;
    }
    char *msg = NULL;
    sqlite3_enable_load_extension(db, 1);
    if (sqlite3_load_extension(db, ext, NULL, &msg) != SQLITE_OK) {
        fprintf(stderr, "query_timer: cannot load %s: %s\n", ext, msg ? msg : "?");
        sqlite3_free(msg);
        sqlite3_close(db);
        return 1;
    }
    double *t = malloc((size_t)runs * sizeof *t);
    if (!t) return 1;
    for (; i + 1 < argc; i += 2) {
        const char *label = argv[i], *sql = argv[i + 1], *err = NULL;
        double t0 = now_ms();
        long rows = run_once(db, sql, &err);
        double cold = now_ms() - t0;
        if (rows < 0) {
            printf("%s\tna\t%s\n", label, err ? err : "error");
            fflush(stdout);
            continue;
        }
        int n = 0;
        double start = now_ms();
        while (n < runs && (n < 5 || now_ms() - start < budget_ms)) {
            t0 = now_ms();
            if (run_once(db, sql, &err) != rows) {
                printf("%s\tna\tthe row count changed between runs\n", label);
                n = 0;
                break;
            }
            t[n++] = now_ms() - t0;
        }
        if (n == 0) continue;
        qsort(t, (size_t)n, sizeof *t, cmp_double);
        double med = n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
        printf("%s\tok\t%.4f\t%.4f\t%.4f\t%.4f\t%d\t%ld\n", label, med, t[0], t[n - 1], cold, n, rows);
        fflush(stdout);
    }
    free(t);
    sqlite3_close(db);
    return 0;
}
