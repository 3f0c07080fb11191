/* cuda_check.h: every CUDA runtime, cuBLAS and cuSPARSE call of the backend goes
 * through one of these macros. A failure fills the sl_err of the context with
 * the call, file and line and returns -1 from the enclosing function. Running
 * out of device memory becomes a message that says how much is free and which
 * batch_size to try:
 *   "CUDA out of memory for a batch of N sequences (free X MiB of Y MiB); try
 *    batch_size M [cudaMalloc(...) at cuda/backend_cuda.cu:123]"
 * No SQLite here, and no engine function: the module links only CUDA. */
#ifndef SAELITE_CUDA_CUDA_CHECK_H
#define SAELITE_CUDA_CUDA_CHECK_H

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusparse.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common.h"

/* What an error message needs to know. */
typedef struct sl_cuda_where {
    sl_err *err;             /* where the message goes */
    uint32_t batch_seqs;     /* sequences per batch the buffers are (being) sized for */
    size_t bytes_per_seq;    /* device bytes one sequence of the batch needs */
    size_t batch_bytes_held; /* batch buffers allocated so far (freed on failure) */
} sl_cuda_where;

static inline int sl_cuda_errf(sl_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline int sl_cuda_errf(sl_err *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* The file name from the source root on (cuda/...), not the build's absolute path. */
static inline const char *sl_cuda_short_file(const char *file) {
    const char *p = strstr(file, "cuda/");
    return p ? p : file;
}

/* Largest batch (sequences) that fits in avail bytes, with 15% kept free. */
static inline uint32_t sl_cuda_fit_seqs(size_t avail, size_t bytes_per_seq) {
    if (!bytes_per_seq) return 1;
    double n = (double)avail * 0.85 / (double)bytes_per_seq;
    return n < 1 ? 0 : n > 1048576.0 ? 1048576u : (uint32_t)n;
}

static inline int sl_cuda_fail(const sl_cuda_where *w, int oom, const char *call, const char *why, const char *file,
                               int line) {
    file = sl_cuda_short_file(file);
    if (!oom) return sl_cuda_errf(w->err, "CUDA error: %s: %s (at %s:%d)", call, why, file, line);
    (void)cudaGetLastError(); /* an allocation failure is not sticky: clear it */
    size_t free_b = 0, total_b = 0;
    (void)cudaMemGetInfo(&free_b, &total_b);
    const double mib = 1024.0 * 1024.0;
    uint32_t fit = sl_cuda_fit_seqs(free_b + w->batch_bytes_held, w->bytes_per_seq);
    uint32_t halved = w->batch_seqs > 1 ? w->batch_seqs / 2 : 1;
    uint32_t suggest = fit >= 1 && fit < halved ? fit : halved;
    if (w->batch_seqs <= 1 || fit == 0)
        return sl_cuda_errf(w->err,
                            "CUDA out of memory for a batch of %u sequences (free %.0f MiB of %.0f MiB): the model "
                            "and SAE weights and one sequence do not fit; use device 'cpu' [%s at %s:%d]",
                            w->batch_seqs, (double)free_b / mib, (double)total_b / mib, call, file, line);
    return sl_cuda_errf(w->err, "CUDA out of memory for a batch of %u sequences (free %.0f MiB of %.0f MiB); try "
                                "batch_size %u [%s at %s:%d]",
                        w->batch_seqs, (double)free_b / mib, (double)total_b / mib, suggest, call, file, line);
}

#define CUDA_CHECK(w, call)                                                                                  \
    do {                                                                                                     \
        cudaError_t e_ = (call);                                                                             \
        if (e_ != cudaSuccess)                                                                               \
            return sl_cuda_fail((w), e_ == cudaErrorMemoryAllocation, #call, cudaGetErrorString(e_), __FILE__, \
                                __LINE__);                                                                   \
    } while (0)

#define CUBLAS_CHECK(w, call)                                                                                \
    do {                                                                                                     \
        cublasStatus_t s_ = (call);                                                                          \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                                     \
            return sl_cuda_fail((w), s_ == CUBLAS_STATUS_ALLOC_FAILED, #call, cublasGetStatusString(s_),     \
                                __FILE__, __LINE__);                                                         \
    } while (0)

#define CUSPARSE_CHECK(w, call)                                                                              \
    do {                                                                                                     \
        cusparseStatus_t s_ = (call);                                                                        \
        if (s_ != CUSPARSE_STATUS_SUCCESS)                                                                   \
            return sl_cuda_fail((w), s_ == CUSPARSE_STATUS_ALLOC_FAILED, #call, cusparseGetErrorString(s_),  \
                                __FILE__, __LINE__);                                                         \
    } while (0)

#endif
