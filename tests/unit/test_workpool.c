/* test_workpool.c: the compression thread pool (engine/workpool.h): every item of
 * a job runs exactly once, on a worker id in range, with the caller helping; jobs
 * follow each other on one pool; a pool of 0 threads (or none) runs everything on
 * the caller; SAELITE_THREADS sets the default size. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "workpool.h"

enum { MAX_ITEMS = 5000 };

typedef struct count_job {
    atomic_int runs[MAX_ITEMS];
    atomic_int by_worker[SL_WORKPOOL_MAX_THREADS + 2];
    atomic_int bad_worker;
    int max_worker;
    pthread_t caller;
    atomic_int on_caller; /* items the calling thread ran */
} count_job;

static void count_item(void *ctx, size_t item, int worker) {
    count_job *j = ctx;
    atomic_fetch_add(&j->runs[item], 1);
    if (worker < 0 || worker > j->max_worker) atomic_fetch_add(&j->bad_worker, 1);
    else atomic_fetch_add(&j->by_worker[worker], 1);
    if (pthread_equal(pthread_self(), j->caller)) {
        atomic_fetch_add(&j->on_caller, 1);
        if (worker != j->max_worker) atomic_fetch_add(&j->bad_worker, 1); /* the caller's id is n */
    }
    if (item % 97 == 0) usleep(200); /* some slow items, so threads interleave */
}

static void run_job(sl_workpool *pool, size_t n, int expect_threads) {
    count_job *j = calloc(1, sizeof *j);
    j->max_worker = expect_threads;
    j->caller = pthread_self();
    sl_workjob job;
    sl_workpool_start(pool, &job, n, count_item, j);
    sl_workpool_wait(pool, &job);
    int once = 1;
    for (size_t i = 0; i < n; i++) once &= atomic_load(&j->runs[i]) == 1;
    for (size_t i = n; i < MAX_ITEMS; i++) once &= atomic_load(&j->runs[i]) == 0;
    CHECK(once);
    CHECK(atomic_load(&j->bad_worker) == 0);
    CHECK(job.done == n && job.next == n);
    int sum = 0;
    for (int w = 0; w <= expect_threads; w++) sum += atomic_load(&j->by_worker[w]);
    CHECK(sum == (int)n);
    if (expect_threads == 0) CHECK(atomic_load(&j->on_caller) == (int)n);
    free(j);
}

int main(int argc, char **argv) {
    (void)argc, (void)argv;
    sl_err err = {{0}};
    run_job(NULL, 100, 0); /* no pool: serial on the caller */
    int sizes[] = {0, 1, 3, 8};
    for (int s = 0; s < 4; s++) {
        sl_workpool *pool = sl_workpool_new(sizes[s], s == 2, &err);
        CHECK(pool != NULL);
        CHECK(sl_workpool_threads(pool) == sizes[s]);
        size_t ns[] = {0, 1, 2, 17, MAX_ITEMS};
        for (int rep = 0; rep < 20; rep++) /* jobs back to back on one pool */
            run_job(pool, ns[rep % 5], sizes[s]);
        sl_workpool_free(pool);
    }
    sl_workpool_free(NULL);
    CHECK(sl_workpool_threads(NULL) == 0);

    setenv("SAELITE_THREADS", "3", 1);
    CHECK(sl_workpool_default_threads() == 3);
    setenv("SAELITE_THREADS", "0", 1);
    CHECK(sl_workpool_default_threads() == 0);
    setenv("SAELITE_THREADS", "999", 1);
    CHECK(sl_workpool_default_threads() == SL_WORKPOOL_MAX_THREADS);
    setenv("SAELITE_THREADS", "x2", 1); /* not a number: the machine's size */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int want = cpus - 1 < 1 ? 1 : cpus - 1 > SL_WORKPOOL_MAX_THREADS ? SL_WORKPOOL_MAX_THREADS : (int)cpus - 1;
    CHECK(sl_workpool_default_threads() == want);
    unsetenv("SAELITE_THREADS");
    CHECK(sl_workpool_default_threads() == want);
    printf("workpool: items once each on pools of 0, 1, 3, 8 threads; default %d threads on %ld CPUs\n", want, cpus);
    CHECK_DONE();
}
