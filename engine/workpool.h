/* workpool.h: a small pool of pthreads that runs the items of one job in parallel.
 *
 * The writer thread of an extraction uses it to LZ4-compress the blocks of a
 * segment while it updates the statistics of the same batch itself
 * (engine/store.c, engine/extract.c). A job is n independent items, fn(ctx, item,
 * worker) each; sl_workpool_start queues them and returns at once, and
 * sl_workpool_wait runs whatever is still queued on the calling thread before it
 * waits for the rest, so a pool of 0 threads is simply serial and a caller never
 * idles while there is work. One job at a time per pool.
 *
 * worker is in [0, sl_workpool_threads(pool)]: the pool's threads are 0..n-1 and
 * the calling thread is n, so a job can keep one scratch buffer per worker. */
#ifndef SAELITE_WORKPOOL_H
#define SAELITE_WORKPOOL_H

#include <stddef.h>

#include "common.h"

typedef struct sl_workpool sl_workpool;

typedef void (*sl_work_fn)(void *ctx, size_t item, int worker);

/* One job: owned by the caller, alive from sl_workpool_start to sl_workpool_wait. */
typedef struct sl_workjob {
    sl_work_fn fn;
    void *ctx;
    size_t n, next, done; /* items; the next to hand out; those finished */
} sl_workjob;

/* Threads a pool should have on this machine: $SAELITE_THREADS if set (0: none,
 * everything on the caller), else the online CPUs minus one (the caller works
 * too), at most SL_WORKPOOL_MAX_THREADS. */
#define SL_WORKPOOL_MAX_THREADS 16
int sl_workpool_default_threads(void);

/* n_threads may be 0. low_priority: the threads run at nice +10 (Linux nice is
 * per thread), so they take only CPU that the other threads leave idle; the CPU
 * backend asks for it so compression never slows its GEMMs. */
sl_workpool *sl_workpool_new(int n_threads, int low_priority, sl_err *err);
void sl_workpool_free(sl_workpool *pool); /* after sl_workpool_wait of any started job; NULL is fine */
int sl_workpool_threads(const sl_workpool *pool); /* 0 for NULL */

/* Queues items 0..n-1 of fn. pool may be NULL: the items then all run in
 * sl_workpool_wait. */
void sl_workpool_start(sl_workpool *pool, sl_workjob *job, size_t n, sl_work_fn fn, void *ctx);
/* Runs the job's remaining items on the caller (as worker sl_workpool_threads(pool)),
 * then returns once every item has finished. */
void sl_workpool_wait(sl_workpool *pool, sl_workjob *job);

#endif
