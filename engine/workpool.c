/* workpool.c: a pthread pool running the items of one job at a time (workpool.h).
 *
 * Items are handed out one by one under the pool's mutex: the jobs it runs have
 * a few dozen items of tens of microseconds or more each (LZ4 blocks), so a lock
 * per item costs nothing measurable and keeps the code obvious. */
#include "workpool.h"

#include <pthread.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

typedef struct worker_arg {
    struct sl_workpool *pool;
    int id;
} worker_arg;

struct sl_workpool {
    pthread_mutex_t mu;
    pthread_cond_t work; /* a job was queued, or shutdown */
    pthread_cond_t idle; /* a job's last item finished */
    sl_workjob *job;     /* the job whose items are being handed out, or NULL */
    int shutdown;
    int low_priority;
    int n_threads, started;
    pthread_t *threads; /* [n_threads] */
    worker_arg *args;   /* [n_threads] */
};

int sl_workpool_default_threads(void) {
    const char *env = getenv("SAELITE_THREADS");
    if (env && *env) {
        char *end;
        long n = strtol(env, &end, 10);
        if (*end == '\0' && n >= 0) return n > SL_WORKPOOL_MAX_THREADS ? SL_WORKPOOL_MAX_THREADS : (int)n;
    }
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    long n = cpus - 1; /* the calling thread runs items too */
    if (n < 1) n = 1;  /* so that even one CPU overlaps compression with statistics */
    return n > SL_WORKPOOL_MAX_THREADS ? SL_WORKPOOL_MAX_THREADS : (int)n;
}

/* Takes the next item of the queued job; call with mu held. */
static int take_item(sl_workpool *p, sl_workjob **job, size_t *item) {
    sl_workjob *j = p->job;
    if (!j || j->next >= j->n) return 0;
    *job = j;
    *item = j->next++;
    if (j->next == j->n) p->job = NULL; /* all handed out: the pool may take the next job */
    return 1;
}

/* Call with mu held. */
static void finish_item(sl_workpool *p, sl_workjob *j) {
    if (++j->done == j->n) pthread_cond_broadcast(&p->idle);
}

static void *pool_thread(void *arg) {
    const worker_arg *a = arg;
    sl_workpool *p = a->pool;
    if (p->low_priority) /* Linux: a thread's nice value is its own; failing costs only speed */
        (void)setpriority(PRIO_PROCESS, (id_t)gettid(), 10);
    pthread_mutex_lock(&p->mu);
    for (;;) {
        sl_workjob *j = NULL;
        size_t item = 0;
        while (!p->shutdown && !take_item(p, &j, &item)) pthread_cond_wait(&p->work, &p->mu);
        if (!j) break; /* shutdown */
        pthread_mutex_unlock(&p->mu);
        j->fn(j->ctx, item, a->id);
        pthread_mutex_lock(&p->mu);
        finish_item(p, j);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

sl_workpool *sl_workpool_new(int n_threads, int low_priority, sl_err *err) {
    if (n_threads < 0) n_threads = 0;
    sl_workpool *p = calloc(1, sizeof *p);
    if (!p) return sl_errf(err, "out of memory"), NULL;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->idle, NULL);
    p->low_priority = low_priority;
    p->n_threads = n_threads;
    p->threads = calloc((size_t)n_threads + 1, sizeof *p->threads);
    p->args = calloc((size_t)n_threads + 1, sizeof *p->args);
    if (!p->threads || !p->args) {
        sl_workpool_free(p);
        return sl_errf(err, "out of memory"), NULL;
    }
    for (int i = 0; i < n_threads; i++) {
        p->args[i] = (worker_arg){p, i};
        if (pthread_create(&p->threads[i], NULL, pool_thread, &p->args[i]) != 0) {
            sl_workpool_free(p);
            return sl_errf(err, "cannot start worker thread %d of %d", i + 1, n_threads), NULL;
        }
        p->started = i + 1;
    }
    return p;
}

void sl_workpool_free(sl_workpool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->shutdown = 1; /* threads finish their current item; a started job is the caller's to wait */
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->started; i++) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->work);
    pthread_cond_destroy(&p->idle);
    free(p->threads);
    free(p->args);
    free(p);
}

int sl_workpool_threads(const sl_workpool *p) { return p ? p->n_threads : 0; }

void sl_workpool_start(sl_workpool *p, sl_workjob *job, size_t n, sl_work_fn fn, void *ctx) {
    *job = (sl_workjob){.fn = fn, .ctx = ctx, .n = n};
    if (!p || n == 0 || p->n_threads == 0) return; /* all of it runs in sl_workpool_wait */
    pthread_mutex_lock(&p->mu);
    p->job = job;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
}

void sl_workpool_wait(sl_workpool *p, sl_workjob *job) {
    const int me = sl_workpool_threads(p);
    if (!p || p->n_threads == 0) {
        for (; job->next < job->n; job->next++, job->done++) job->fn(job->ctx, job->next, me);
        return;
    }
    pthread_mutex_lock(&p->mu);
    for (;;) { /* help: the caller would only sleep otherwise */
        sl_workjob *j = NULL;
        size_t item = 0;
        if (p->job != job || !take_item(p, &j, &item)) break;
        pthread_mutex_unlock(&p->mu);
        j->fn(j->ctx, item, me);
        pthread_mutex_lock(&p->mu);
        finish_item(p, j);
    }
    while (job->done < job->n) pthread_cond_wait(&p->idle, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
