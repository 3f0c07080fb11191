/* sgemm_flops: measures OpenBLAS cblas_sgemm throughput for the SAE encoder's
 * GEMM shape (engine/sae.c: pre[M, N] += x[M, K] W_enc[K, N], row-major,
 * no transposes, beta = 1).
 *
 *   sgemm_flops [--m M] [--k K] [--n N] [--seconds S]
 *
 * M defaults to 682, the rows per GEMM chunk engine/extract.c uses for
 * d_sae 24576 ((16 << 20) / d_sae, clamped to [1, 1024]); K = d_in 768,
 * N = d_sae 24576. After a warm-up, calls are repeated for about S seconds
 * (default 3). The last line of stdout is `sgemm_gflops <value>` (2*M*N*K FLOP
 * per call); the lines before it give the shape, thread count and call count. */
#include <cblas.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static long parse_pos(const char *opt, const char *s) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || !*s || v <= 0 || v > (1L << 26)) {
        fprintf(stderr, "sgemm_flops: bad value for %s: '%s'\n", opt, s);
        exit(2);
    }
    return v;
}

static void fill(float *p, size_t n, uint64_t seed) {
    uint64_t x = seed;
    for (size_t i = 0; i < n; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        p[i] = (float)((double)(x >> 40) / (double)(1u << 24) - 0.5); /* uniform [-0.5, 0.5) */
    }
}

int main(int argc, char **argv) {
    long m = 682, k = 768, n = 24576;
    double seconds = 3.0;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc) goto usage;
        const char *a = argv[i], *v = argv[++i];
        if (!strcmp(a, "--m")) m = parse_pos(a, v);
        else if (!strcmp(a, "--k")) k = parse_pos(a, v);
        else if (!strcmp(a, "--n")) n = parse_pos(a, v);
        else if (!strcmp(a, "--seconds")) {
            seconds = strtod(v, NULL);
            if (!(seconds > 0 && seconds < 3600)) goto usage;
        } else
            goto usage;
    }

    float *A = malloc((size_t)m * (size_t)k * sizeof(float));
    float *B = malloc((size_t)k * (size_t)n * sizeof(float));
    float *C = malloc((size_t)m * (size_t)n * sizeof(float));
    if (!A || !B || !C) {
        fprintf(stderr, "sgemm_flops: out of memory\n");
        return 1;
    }
    fill(A, (size_t)m * (size_t)k, 1);
    fill(B, (size_t)k * (size_t)n, 2);
    memset(C, 0, (size_t)m * (size_t)n * sizeof(float));

    const double flop = 2.0 * (double)m * (double)n * (double)k;
    /* Warm-up: thread pool start, page faults, caches. */
    double tw = now_s();
    int warm = 0;
    do {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)n, (int)k, 1.0f, A, (int)k, B, (int)n,
                    1.0f, C, (int)n);
        warm++;
    } while (warm < 2 || (now_s() - tw < 0.5 && warm < 1000));

    long calls = 0;
    double t0 = now_s(), t;
    do {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)n, (int)k, 1.0f, A, (int)k, B, (int)n,
                    1.0f, C, (int)n);
        calls++;
        t = now_s() - t0;
    } while (t < seconds);

    double gflops = flop * (double)calls / t / 1e9;
    volatile float sink = C[(size_t)(m - 1) * (size_t)n + (size_t)(n - 1)];
    (void)sink;
    printf("sgemm_shape M=%ld K=%ld N=%ld (RowMajor NoTrans/NoTrans, beta=1)\n", m, k, n);
    printf("sgemm_threads %d\n", openblas_get_num_threads());
    printf("sgemm_config %s\n", openblas_get_config());
    printf("sgemm_calls %ld in %.3f s (%.3f ms/call)\n", calls, t, 1e3 * t / (double)calls);
    printf("sgemm_gflops %.2f\n", gflops);
    free(A);
    free(B);
    free(C);
    return 0;
usage:
    fprintf(stderr, "usage: sgemm_flops [--m M] [--k K] [--n N] [--seconds S]\n");
    return 2;
}
