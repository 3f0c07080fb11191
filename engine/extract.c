/* extract.c: the extraction pipeline (see extract.h). */
#include "extract.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/file.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "checkpoint.h"
#include "csr.h"
#include "findex.h"
#include "fsutil.h"
#include "results.h"
#include "sae.h"
#include "stats.h"
#include "store.h"
#include "tokenizer.h"
#include "workpool.h"

enum { BUF_FREE, BUF_READY, BUF_BUSY };

/* One batch on its way from the encoder to the writer thread. */
typedef struct batch_buf {
    int state;
    uint32_t segment_no;
    uint64_t first_row;
    sl_csr_builder csr;  /* f32 activations of the batch's rows */
    int32_t *tokens;     /* [batch_rows] */
    uint32_t n_counted;  /* rows that went to the SAE */
    sl_recon_sums recon; /* of this batch's rows (x_sum [d_in]) */
} batch_buf;

struct sl_extraction {
    sl_extract_opts opts;
    char *store_dir;
    sl_sae *sae;
    sl_source src;
    sl_extract_shape shape;

    sl_backend *backend;
    char device[128];
    sl_stats *stats;
    sl_workpool *pool;   /* compresses a segment's blocks while the writer updates statistics */
    sl_recon_sums recon; /* whole run, writer thread (x_sum [d_in]) */
    sl_segment_ref *segments;
    uint32_t n_segments;
    int lock_fd;            /* store/LOCK, flock'ed for the whole run */
    sl_checkpoint resumed;  /* where a resumed run starts (zero: from the beginning) */
    double last_checkpoint; /* writer thread */
    double checkpoint_every;

    /* pipeline */
    pthread_t writer;
    int writer_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    batch_buf bufs[2];
    int shutdown;
    int writer_failed;
    sl_err writer_err;
    uint64_t rows_committed, tokens_committed, nnz_committed, bytes_committed, batches_committed;
};

/* How often the writer saves a checkpoint: resuming redoes at most this much.
 * SAELITE_CHECKPOINT_SECONDS overrides it (0: after every batch; tests use it). */
static double checkpoint_interval(void) {
    const char *env = getenv("SAELITE_CHECKPOINT_SECONDS");
    return env && *env ? atof(env) : 2.0;
}

/* The committed state; call with x->mu held (or with the writer idle). */
static sl_checkpoint checkpoint_of(const sl_extraction *x) {
    return (sl_checkpoint){.batches_done = x->batches_committed, .batch_size = x->shape.batch_size,
                           .seq_len = x->shape.seq_len, .rows = x->rows_committed, .tokens = x->tokens_committed,
                           .nnz = x->nnz_committed, .bytes = x->bytes_committed};
}

/* Postings per index pass: SAELITE_INDEX_BUDGET_BYTES overrides the default
 * (tests use a small one to make the build take many passes). */
static size_t index_budget(void) {
    const char *env = getenv("SAELITE_INDEX_BUDGET_BYTES");
    return env && *env ? (size_t)strtoull(env, NULL, 10) : 0;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

sl_extract_shape sl_extraction_shape(const sl_extraction *x) { return x->shape; }

void sl_extraction_close(sl_extraction *x) {
    if (!x) return;
    if (x->writer_started) {
        pthread_mutex_lock(&x->mu);
        x->shutdown = 1;
        pthread_cond_broadcast(&x->cv);
        pthread_mutex_unlock(&x->mu);
        pthread_join(x->writer, NULL);
    }
    pthread_mutex_destroy(&x->mu);
    pthread_cond_destroy(&x->cv);
    for (int i = 0; i < 2; i++) {
        sl_csr_free(&x->bufs[i].csr);
        free(x->bufs[i].recon.x_sum);
        free(x->bufs[i].tokens);
    }
    sl_workpool_free(x->pool);
    if (x->backend) x->backend->ops->free(x->backend);
    if (x->lock_fd > 0) close(x->lock_fd); /* releases the flock */
    sl_stats_free(x->stats);
    free(x->recon.x_sum);
    free(x->segments);
    sl_source_close(&x->src);
    sl_sae_free(x->sae);
    free(x->store_dir);
    free(x);
}

/* One run per store at a time: a second one (or a second resume) gets an error. */
static int lock_store(sl_extraction *x, sl_err *err) {
    char path[4200];
    snprintf(path, sizeof path, "%s/LOCK", x->store_dir);
    x->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (x->lock_fd < 0) return sl_errf_path(err, path, "cannot create the store's lock file: %s", strerror(errno));
    if (flock(x->lock_fd, LOCK_EX | LOCK_NB) != 0)
        return sl_errf_path(err, x->store_dir, "store is in use by another running extraction (locked)");
    return 0;
}

sl_extraction *sl_extraction_open(const sl_extract_opts *opts, sl_err *err) {
    sl_extraction *x = calloc(1, sizeof *x);
    if (!x) return sl_errf(err, "out of memory"), NULL;
    pthread_mutex_init(&x->mu, NULL);
    pthread_cond_init(&x->cv, NULL);
    x->opts = *opts;
    if (!(x->store_dir = strdup(opts->store_dir))) {
        sl_errf(err, "out of memory");
        goto fail;
    }
    if (!(x->sae = sl_sae_load(opts->sae_path, err))) goto fail;
    if (!opts->resume && !sl_dir_is_absent_or_empty(opts->store_dir)) {
        sl_errf_path(err, opts->store_dir, "store directory exists and is not empty (choose another 'store')");
        goto fail;
    }
    if (sl_mkdirs(opts->store_dir, err) || lock_store(x, err)) goto fail;
    sl_source_opts so = opts->source;
    so.reuse_tokens = opts->resume;
    if (sl_source_open(&x->src, &so, x->sae, opts->store_dir, err)) goto fail;

    sl_extract_shape *s = &x->shape;
    s->d_in = x->sae->d_in;
    s->d_sae = x->sae->d_sae;
    s->from_model = x->src.from_model;
    s->prepend_bos = x->src.from_model ? x->src.run.prepend_bos : 0;
    snprintf(s->hook, sizeof s->hook, "%s", x->src.hook_name);
    s->seq_len = x->src.seq_len;
    s->sequences_total = x->src.n_seq;
    if (opts->max_sequences && opts->max_sequences < s->sequences_total) s->sequences_total = opts->max_sequences;
    s->tokens_total = s->sequences_total * s->seq_len; /* padding only ends the last sequence */
    if (s->tokens_total > x->src.n_tokens) s->tokens_total = x->src.n_tokens;
    s->batch_size = opts->batch_size ? opts->batch_size : (s->seq_len >= 4096 ? 1 : 4096 / s->seq_len);
    if ((uint64_t)s->batch_size * s->seq_len > UINT32_MAX / 2) {
        sl_errf(err, "batch_size %u x seq_len %u is too many tokens per batch", s->batch_size, s->seq_len);
        goto fail;
    }
    if (!(x->stats = sl_stats_new((uint32_t)s->d_sae, opts->top_k, err))) goto fail;
    if (opts->one_per_sequence && sl_stats_one_per_sequence(x->stats, s->seq_len, err)) goto fail;
    x->recon.x_sum = calloc((size_t)s->d_in, sizeof(double));
    for (int i = 0; i < 2; i++) x->bufs[i].recon.x_sum = calloc((size_t)s->d_in, sizeof(double));
    if (!x->recon.x_sum || !x->bufs[0].recon.x_sum || !x->bufs[1].recon.x_sum) {
        sl_errf(err, "out of memory");
        goto fail;
    }
    int auto_batch = opts->batch_size == 0; /* the backend may size batches (CUDA: free memory) */
    if (opts->resume) {
        int got = sl_checkpoint_load(opts->store_dir, x->stats, &x->recon, (uint32_t)s->d_in, &x->resumed, err);
        if (got < 0) goto fail;
        if (got == 0) {
            if (x->resumed.seq_len != s->seq_len) {
                sl_errf_path(err, opts->store_dir, "checkpoint has sequences of %u tokens, the input %u",
                             x->resumed.seq_len, s->seq_len);
                goto fail;
            }
            s->batch_size = x->resumed.batch_size; /* batches must line up with the segments kept */
            auto_batch = 0;
        }
    }
    sl_backend_setup setup = {.sae = x->sae, .model = x->src.model, .hook = x->src.hook, .center = x->src.center,
                              .max_seqs = s->batch_size, .seq_len = s->seq_len, .fast_math = opts->fast_math,
                              .auto_batch = auto_batch};
    if (!(x->backend = sl_backend_open(opts->device, &setup, err))) goto fail;
    if (x->backend->ops->batch_seqs) s->batch_size = x->backend->ops->batch_seqs(x->backend);
    x->backend->ops->describe(x->backend, x->device, sizeof x->device);
    snprintf(s->device, sizeof s->device, "%s", x->device);
    /* On the CPU the GEMMs of the next batch need every core: the compression
     * threads run at a lower priority and fill the gaps. On the GPU the main thread
     * mostly waits, so they run as usual. */
    int low_priority = strcmp(x->backend->ops->name, "cpu") == 0;
    if (!(x->pool = sl_workpool_new(sl_workpool_default_threads(), low_priority, err))) goto fail;
    return x;
fail:
    sl_extraction_close(x);
    return NULL;
}

/* Writer thread: statistics from the f32 CSR, then the segment file. */
static void *writer_main(void *arg) {
    sl_extraction *x = arg;
    int next = 0;
    pthread_mutex_lock(&x->mu);
    for (;;) {
        while (x->bufs[next].state != BUF_READY && !x->shutdown) pthread_cond_wait(&x->cv, &x->mu);
        if (x->bufs[next].state != BUF_READY) break;
        batch_buf *b = &x->bufs[next];
        b->state = BUF_BUSY;
        int failed = x->writer_failed;
        pthread_mutex_unlock(&x->mu);

        sl_segment_stats ss = {0};
        int rc = 0;
        sl_err e;
        if (!failed) {
            sl_csr csr = sl_csr_view(&b->csr, (uint32_t)x->shape.d_sae);
            char path[4200];
            sl_segment_name(path, sizeof path, x->store_dir, b->segment_no);
            /* The pool compresses the segment's blocks while this thread updates the
             * statistics from the same (read-only) CSR; finish writes the file. */
            sl_segment_job *job = NULL;
            rc = sl_segment_write_start(&job, path, b->first_row, x->shape.seq_len, &csr, b->tokens, 0, x->pool, &e);
            sl_stats_add(x->stats, &csr, b->first_row, b->n_counted);
            x->recon.rows += b->recon.rows;
            x->recon.err_sq += b->recon.err_sq;
            x->recon.x_sq += b->recon.x_sq;
            for (int i = 0; i < x->shape.d_in; i++) x->recon.x_sum[i] += b->recon.x_sum[i];
            if (rc == 0) rc = sl_segment_write_finish(job, &ss, &e);
        }

        pthread_mutex_lock(&x->mu);
        if (rc != 0 && !x->writer_failed) {
            x->writer_failed = 1;
            x->writer_err = e;
        }
        if (!failed && rc == 0) {
            x->rows_committed += b->csr.n_rows;
            x->tokens_committed += b->n_counted;
            x->nnz_committed += b->csr.row_ptr[b->csr.n_rows];
            x->bytes_committed += ss.file_bytes;
            x->batches_committed = b->segment_no + 1;
            double t = now_seconds();
            if (t - x->last_checkpoint >= x->checkpoint_every) {
                sl_checkpoint c = checkpoint_of(x);
                pthread_mutex_unlock(&x->mu);
                rc = sl_checkpoint_save(x->store_dir, x->stats, &x->recon, (uint32_t)x->shape.d_in, &c, &e);
                pthread_mutex_lock(&x->mu);
                x->last_checkpoint = t;
                if (rc != 0 && !x->writer_failed) {
                    x->writer_failed = 1;
                    x->writer_err = e;
                }
            }
        }
        b->state = BUF_FREE;
        next ^= 1;
        pthread_cond_broadcast(&x->cv);
    }
    pthread_mutex_unlock(&x->mu);
    return NULL;
}

static void fill_progress(sl_extraction *x, sl_extract_progress *p, double t0) {
    pthread_mutex_lock(&x->mu);
    uint64_t rows = x->rows_committed;
    p->tokens_done = rows < x->shape.tokens_total ? rows : x->shape.tokens_total; /* not counting padding */
    p->tokens_counted = x->tokens_committed;
    p->nnz = x->nnz_committed;
    p->store_bytes = x->bytes_committed;
    pthread_mutex_unlock(&x->mu);
    p->sequences_done = rows / x->shape.seq_len;
    p->sequences_total = x->shape.sequences_total;
    p->tokens_total = x->shape.tokens_total;
    p->seconds = now_seconds() - t0;
    if (x->backend->ops->status) x->backend->ops->status(x->backend, p->device_status, sizeof p->device_status);
}

/* The index build reports to the run's progress callback (a few times a
 * second, finalizing set), which can also stop it. */
typedef struct index_progress {
    sl_extraction *x;
    sl_progress_fn fn;
    void *ctx;
    sl_extract_progress *p;
    double t0, last;
} index_progress;

static int on_index_progress(void *arg, uint64_t done, uint64_t total) {
    index_progress *ip = arg;
    double t = now_seconds();
    if (!ip->fn || (t - ip->last < 0.25 && done < total)) return 0;
    ip->last = t;
    fill_progress(ip->x, ip->p, ip->t0);
    ip->p->finalizing = 1;
    return ip->fn(ip->ctx, ip->p);
}

/* index.sli from the segments, after results.slr: a crash in between resumes
 * into finalize again, which rewrites both. */
static int build_index(sl_extraction *x, sl_progress_fn progress, void *ctx, sl_extract_progress *p, double t0,
                       sl_err *err) {
    const uint32_t d_sae = x->stats->d_sae;
    uint64_t *n_active = malloc((size_t)d_sae * sizeof *n_active); /* [d_sae] */
    if (!n_active) return sl_errf(err, "out of memory");
    for (uint32_t f = 0; f < d_sae; f++) n_active[f] = x->stats->acc[f].n_active;
    index_progress ip = {.x = x, .fn = progress, .ctx = ctx, .p = p, .t0 = t0, .last = now_seconds()};
    int rc = sl_findex_build(x->store_dir, d_sae, n_active, x->segments, x->n_segments, index_budget(),
                             on_index_progress, &ip, err);
    free(n_active);
    return rc;
}

int sl_extraction_run(sl_extraction *x, sl_progress_fn progress, void *ctx, sl_err *err) {
    const sl_extract_shape *s = &x->shape;
    const uint32_t batch_rows = s->batch_size * s->seq_len;
    double t0 = now_seconds();
    /* Per batch: stored activations [batch_rows, d_in] or model ids [batch_rows]. */
    float *input = x->src.from_model ? NULL : malloc((size_t)batch_rows * (size_t)s->d_in * sizeof(float));
    int32_t *ids = x->src.from_model ? malloc((size_t)batch_rows * sizeof(int32_t)) : NULL;
    uint8_t *include = malloc(batch_rows); /* [batch_rows] */
    uint64_t n_batches = (s->sequences_total + s->batch_size - 1) / s->batch_size;
    x->segments = calloc(n_batches ? n_batches : 1, sizeof *x->segments);
    int rc = -1;
    if (!(input || ids) || !include || !x->segments) {
        sl_errf(err, "out of memory for a batch of %u tokens (lower batch_size)", batch_rows);
        goto done;
    }
    for (int i = 0; i < 2; i++) {
        x->bufs[i].tokens = malloc((size_t)batch_rows * sizeof(int32_t));
        if (!x->bufs[i].tokens) {
            sl_errf(err, "out of memory for a batch of %u tokens (lower batch_size)", batch_rows);
            goto done;
        }
    }
    /* A resumed run keeps the segments its checkpoint covers and redoes the rest. */
    const uint64_t start = x->resumed.batches_done;
    if (start > n_batches) {
        sl_errf_path(err, x->store_dir, "checkpoint covers %llu batches but the input has %llu",
                     (unsigned long long)start, (unsigned long long)n_batches);
        goto done;
    }
    for (uint64_t bi = 0; bi < start; bi++) {
        uint64_t first_seq = bi * s->batch_size;
        uint64_t n_seq = s->sequences_total - first_seq < s->batch_size ? s->sequences_total - first_seq : s->batch_size;
        x->segments[bi] = (sl_segment_ref){.first_row = first_seq * s->seq_len, .n_rows = (uint32_t)(n_seq * s->seq_len)};
    }
    x->n_segments = (uint32_t)start;
    x->rows_committed = x->resumed.rows;
    x->tokens_committed = x->resumed.tokens;
    x->nnz_committed = x->resumed.nnz;
    x->bytes_committed = x->resumed.bytes;
    x->batches_committed = start;
    if (x->opts.resume) {
        char path[4200];
        for (uint64_t bi = start; bi <= n_batches; bi++) { /* later segments, and half-written ones */
            sl_segment_name(path, sizeof path, x->store_dir, (uint32_t)bi);
            unlink(path);
            strncat(path, ".tmp", sizeof path - strlen(path) - 1);
            unlink(path);
        }
    }
    x->last_checkpoint = now_seconds();
    x->checkpoint_every = checkpoint_interval();
    if (pthread_create(&x->writer, NULL, writer_main, x) != 0) {
        sl_errf(err, "cannot start the writer thread");
        goto done;
    }
    x->writer_started = 1;

    sl_extract_progress p = {0};
    for (uint64_t bi = start; bi < n_batches; bi++) {
        uint64_t first_seq = bi * s->batch_size;
        uint32_t n_seq = (uint32_t)(s->sequences_total - first_seq < s->batch_size ? s->sequences_total - first_seq
                                                                                   : s->batch_size);
        batch_buf *b = &x->bufs[(bi - start) & 1]; /* the writer takes buffers 0, 1, 0, ... */
        pthread_mutex_lock(&x->mu);
        while (b->state != BUF_FREE) pthread_cond_wait(&x->cv, &x->mu);
        int failed = x->writer_failed;
        pthread_mutex_unlock(&x->mu);
        if (failed) break;

        uint32_t rows = n_seq * s->seq_len;
        if (sl_source_read(&x->src, first_seq, n_seq, input, ids, b->tokens, include, err)) goto done;
        b->first_row = first_seq * s->seq_len;
        b->segment_no = (uint32_t)bi;
        b->n_counted = 0;
        for (uint32_t r = 0; r < rows; r++) b->n_counted += include[r];
        if (sl_csr_reset(&b->csr, rows, err)) goto done;
        b->recon.rows = 0;
        b->recon.err_sq = b->recon.x_sq = 0;
        memset(b->recon.x_sum, 0, (size_t)s->d_in * sizeof(double));
        sl_batch_in in = {.n_seq = n_seq, .seq_len = s->seq_len, .x = input, .ids = ids, .include = include,
                          .recon = &b->recon};
        if (x->backend->ops->run(x->backend, &in, &b->csr, err)) goto done;
        x->segments[bi] = (sl_segment_ref){.first_row = b->first_row, .n_rows = rows};
        x->n_segments = (uint32_t)bi + 1;

        pthread_mutex_lock(&x->mu);
        b->state = BUF_READY;
        pthread_cond_broadcast(&x->cv);
        pthread_mutex_unlock(&x->mu);

        fill_progress(x, &p, t0);
        if (progress && progress(ctx, &p)) {
            sl_errf(err, "interrupted");
            goto done;
        }
    }
    /* Drain: wait for the writer to finish both buffers. */
    pthread_mutex_lock(&x->mu);
    while (x->bufs[0].state != BUF_FREE || x->bufs[1].state != BUF_FREE) pthread_cond_wait(&x->cv, &x->mu);
    int failed = x->writer_failed;
    if (failed) *err = x->writer_err;
    pthread_mutex_unlock(&x->mu);
    if (failed) goto done;

    sl_checkpoint done_all = checkpoint_of(x); /* a crash while finalizing resumes here */
    if (sl_checkpoint_save(x->store_dir, x->stats, &x->recon, (uint32_t)s->d_in, &done_all, err)) goto done;
    fill_progress(x, &p, t0);
    p.finalizing = 1;
    if (progress && progress(ctx, &p)) {
        sl_errf(err, "interrupted");
        goto done;
    }
    sl_stats_sort_examples(x->stats);
    if (sl_results_write(x->store_dir, x->stats, x->opts.context, s->seq_len, x->segments, x->n_segments, &x->src,
                         err))
        goto done;
    if (build_index(x, progress, ctx, &p, t0, err)) goto done;
    fill_progress(x, &p, t0);
    p.finalizing = 0;
    if (progress) progress(ctx, &p);
    rc = 0;
done:
    if (rc != 0 && x->writer_started) { /* let the writer drain before buffers go away */
        pthread_mutex_lock(&x->mu);
        while (x->bufs[0].state == BUF_BUSY || x->bufs[1].state == BUF_BUSY) pthread_cond_wait(&x->cv, &x->mu);
        pthread_mutex_unlock(&x->mu);
    }
    free(input);
    free(ids);
    free(include);
    return rc;
}

int sl_extraction_quality(const sl_extraction *x, double *explained_variance, double *mse) {
    const sl_recon_sums *q = &x->recon;
    if (q->rows == 0 || q->rows != x->stats->n_tokens) return -1; /* a backend that does not measure it */
    double mean_sq = 0;
    for (int i = 0; i < x->shape.d_in; i++) mean_sq += q->x_sum[i] * q->x_sum[i];
    double total = q->x_sq - mean_sq / (double)q->rows; /* sum |x - mean|^2 */
    *explained_variance = total > 0 ? 1.0 - q->err_sq / total : 0.0;
    *mse = q->err_sq / ((double)q->rows * x->shape.d_in);
    return 0;
}
