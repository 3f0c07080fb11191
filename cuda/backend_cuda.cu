/* backend_cuda.cu: the CUDA backend (engine/backend.h), built as saelite_cuda.so
 * and loaded on demand by engine/backend.c. docs/CUDA.md describes the design.
 *
 * At creation: pick device 0, upload the model's weights (up to the hook's layer)
 * and the SAE's once, size the batch (from free memory when the user gave no
 * batch_size), allocate every batch buffer. Per batch:
 *   model runs: ids -> pinned -> device, forward to the hook (pipeline.cuh:
 *   kernels.cuh + cuBLAS), centring, compaction of the included rows (their
 *   indices, computed on the host), all on the compute stream;
 *   then sl_encode_batch (pipeline.cuh), chunks of K rows on three streams: the
 *   compute stream encodes chunk j (cuBLAS GEMM + activation kernels), turns it
 *   into a CSR (top-k: k_topk_csr straight from the selection; others: cuSPARSE
 *   DenseToSparse) and computes its reconstruction sums, while the D2H stream
 *   copies chunk j - 1's CSR into pinned memory and the host appends chunk j - 2
 *   to the caller's sl_csr_builder; stored activations are gathered on the host
 *   into pinned memory chunk by chunk and go up on the H2D stream ahead of use.
 * run() returns when the batch's CSR is on the host; the engine's writer thread
 * meanwhile compresses and writes the previous batch (engine/extract.c).
 *
 * Math is FP32 (CUBLAS_DEFAULT_MATH) unless the run asked for tf32. This file
 * calls no SQLite and no engine function; errors go through cuda_check.h. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "backend.h"
#include "csr.h"
#include "model.h"
#include "sae.h"
}

#include "cuda_check.h"
#include "pipeline.cuh"

enum { ROW_THREADS = 256, EW_THREADS = 256, EW_BLOCKS = 8192 };
/* A batch chosen automatically holds at most this many tokens (the host CSR
 * buffers and the writer's work grow with it). */
static const size_t AUTO_MAX_TOKENS = 16384;
/* Device memory kept out of the automatic batch: cuBLAS/cuSPARSE workspaces,
 * the CUDA context's own growth, fragmentation. */
static const size_t RESERVE_BYTES = (size_t)512 << 20;

typedef struct cuda_backend {
    sl_backend base; /* first: the engine sees an sl_backend */
    sl_backend_setup s;
    sl_cuda_where where;
    int device;
    char name[256];
    size_t total_mem;
    cudaStream_t stream;               /* compute: kernels, cuBLAS, cuSPARSE */
    cudaStream_t streams[SL_N_STREAMS]; /* [SL_S_COMPUTE] = stream, then D2H and H2D */
    cudaEvent_t events[SL_N_EVENTS];
    cublasHandle_t blas;
    cusparseHandle_t sparse;
    cudaEvent_t ev_start, ev_end;
    float last_ms; /* GPU time of the last batch */
    sl_pipe pipe;

    /* weights: one device allocation each for the model and the SAE */
    float *d_model_w, *d_sae_w;
    sl_dev_layer *layers; /* host [n_layer] of device pointers */
    sl_dev_model m;
    sl_dev_sae sae;
    int has_model;

    /* batch buffers (device) */
    uint32_t max_seqs, seq_len;
    size_t max_rows;
    float *d_ws;          /* sl_dev_model_ws_floats(max_seqs, T) */
    sl_dev_model_ws ws;   /* ws.ids [max_rows] */
    int32_t *d_rows;      /* [max_rows] rows that go to the SAE (model runs) */
    sl_batch_bufs bb;     /* the SAE's: compacted rows, chunk buffers, the two CSR slots */
    void *d_sp_buf;       /* cuSPARSE DenseToSparse workspace */
    size_t sp_buf_bytes;

    /* pinned host buffers (and bb's) */
    int32_t *h_ids;       /* [max_rows] model input */
    int32_t *h_rows;      /* [max_rows] */
} cuda_backend;

/* ---- the includer's half of pipeline.cuh ------------------------------------- */

static int sl_gemm(sl_pipe *p, int ta, int tb, int m, int n, int k, float alpha, const float *A, int lda,
                   long long sA, const float *B, int ldb, long long sB, float beta, float *C, int ldc, long long sC,
                   int batch) {
    cuda_backend *b = (cuda_backend *)p->ctx;
    CUBLAS_CHECK(&b->where, cublasSgemmStridedBatched(b->blas, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                                                      tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k, &alpha, A, lda, sA, B,
                                                      ldb, sB, &beta, C, ldc, sC, batch));
    return 0;
}

static int sl_launched(sl_pipe *p, const char *kernel, const char *file, int line) {
    cuda_backend *b = (cuda_backend *)p->ctx;
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess) return 0;
    char call[128];
    snprintf(call, sizeof call, "launch of %s", kernel);
    return sl_cuda_fail(&b->where, 0, call, cudaGetErrorString(e), file, line);
}

static int sl_copy(sl_pipe *p, void *dst, const void *src, size_t bytes, int stream) {
    cuda_backend *b = (cuda_backend *)p->ctx;
    CUDA_CHECK(&b->where, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, b->streams[stream]));
    return 0;
}

static int sl_record(sl_pipe *p, int event, int stream) {
    cuda_backend *b = (cuda_backend *)p->ctx;
    CUDA_CHECK(&b->where, cudaEventRecord(b->events[event], b->streams[stream]));
    return 0;
}

static int sl_wait(sl_pipe *p, int stream, int event) {
    cuda_backend *b = (cuda_backend *)p->ctx;
    CUDA_CHECK(&b->where, cudaStreamWaitEvent(b->streams[stream], b->events[event], 0));
    return 0;
}

static int sl_host_wait(sl_pipe *p, int event) {
    cuda_backend *b = (cuda_backend *)p->ctx;
    CUDA_CHECK(&b->where, cudaEventSynchronize(b->events[event]));
    return 0;
}

static int dev_alloc(cuda_backend *b, void **p, size_t bytes, int batch);

/* Dense rows [n, S] -> the slot's device CSR with cuSPARSE's DenseToSparse on the
 * compute stream. The nonzero count comes back to the host from the analysis
 * (cusparseSpMatGetSize), so this waits for the chunk's encode. */
static int sl_dense_to_csr(sl_pipe *p, const float *dense, size_t n, int S, sl_chunk_slot *slot) {
    cuda_backend *b = (cuda_backend *)p->ctx;
    sl_cuda_where *w = &b->where;
    cusparseDnMatDescr_t dn;
    cusparseSpMatDescr_t sp;
    CUSPARSE_CHECK(w, cusparseCreateDnMat(&dn, (int64_t)n, (int64_t)S, (int64_t)S, (void *)dense, CUDA_R_32F,
                                          CUSPARSE_ORDER_ROW));
    cusparseStatus_t st = cusparseCreateCsr(&sp, (int64_t)n, (int64_t)S, 0, slot->d_off, NULL, NULL,
                                            CUSPARSE_INDEX_32I, CUSPARSE_INDEX_32I, CUSPARSE_INDEX_BASE_ZERO,
                                            CUDA_R_32F);
    if (st != CUSPARSE_STATUS_SUCCESS) {
        cusparseDestroyDnMat(dn);
        CUSPARSE_CHECK(w, st);
    }
    int64_t rows = 0, cols = 0, nnz = 0;
    size_t need = 0;
    int rc = -1;
    /* One exit so that the descriptors are destroyed: the checks jump to done. */
#define STEP(call)                                                                                               \
    do {                                                                                                         \
        cusparseStatus_t s_ = (call);                                                                            \
        if (s_ != CUSPARSE_STATUS_SUCCESS) {                                                                     \
            sl_cuda_fail(w, s_ == CUSPARSE_STATUS_ALLOC_FAILED, #call, cusparseGetErrorString(s_), __FILE__,     \
                         __LINE__);                                                                              \
            goto done;                                                                                           \
        }                                                                                                        \
    } while (0)
    STEP(cusparseDenseToSparse_bufferSize(b->sparse, dn, sp, CUSPARSE_DENSETOSPARSE_ALG_DEFAULT, &need));
    if (need > b->sp_buf_bytes) {
        if (cudaStreamSynchronize(b->stream) != cudaSuccess) { /* the old workspace may be in use */
            sl_cuda_fail(w, 0, "cudaStreamSynchronize", cudaGetErrorString(cudaGetLastError()), __FILE__, __LINE__);
            goto done;
        }
        cudaFree(b->d_sp_buf);
        b->d_sp_buf = NULL;
        b->sp_buf_bytes = 0;
        if (dev_alloc(b, &b->d_sp_buf, need, 1)) goto done;
        b->sp_buf_bytes = need;
    }
    STEP(cusparseDenseToSparse_analysis(b->sparse, dn, sp, CUSPARSE_DENSETOSPARSE_ALG_DEFAULT, b->d_sp_buf));
    STEP(cusparseSpMatGetSize(sp, &rows, &cols, &nnz)); /* nnz from the analysis */
    STEP(cusparseCsrSetPointers(sp, slot->d_off, slot->d_col, slot->d_val));
    STEP(cusparseDenseToSparse_convert(b->sparse, dn, sp, CUSPARSE_DENSETOSPARSE_ALG_DEFAULT, b->d_sp_buf));
#undef STEP
    slot->nnz = (size_t)nnz;
    rc = 0;
done:
    cusparseDestroySpMat(sp);
    cusparseDestroyDnMat(dn);
    return rc;
}

/* Pinned CSR buffers of a slot for nnz entries (grown as chunks need; the slot's
 * last copy has been consumed by the host, so nothing reads the old ones). */
static int sl_slot_reserve(sl_pipe *p, sl_chunk_slot *slot, size_t nnz) {
    cuda_backend *b = (cuda_backend *)p->ctx;
    if (nnz <= slot->h_cap) return 0;
    size_t cap = slot->h_cap ? slot->h_cap : (size_t)1 << 16;
    while (cap < nnz) cap += cap / 2;
    cudaFreeHost(slot->h_col);
    cudaFreeHost(slot->h_val);
    slot->h_col = NULL;
    slot->h_val = NULL;
    slot->h_cap = 0;
    CUDA_CHECK(&b->where, cudaHostAlloc((void **)&slot->h_col, cap * sizeof(int32_t), cudaHostAllocDefault));
    CUDA_CHECK(&b->where, cudaHostAlloc((void **)&slot->h_val, cap * sizeof(float), cudaHostAllocDefault));
    slot->h_cap = cap;
    return 0;
}

/* ---- sizes ---------------------------------------------------------------------- */

/* Rows per chunk of sl_encode_batch: big enough for full-speed GEMMs, small
 * enough that the chunk buffers (dense activations, two CSR slots) stay a fixed
 * few hundred MB whatever the batch; DenseToSparse's 32-bit indices need a chunk
 * under 2^31 values. */
static const size_t CHUNK_ROWS = 1024;

/* Width of a CSR slot row: every feature for DenseToSparse's worst case, k for top-k. */
static size_t slot_width(const cuda_backend *b) {
    return sl_topk_direct(&b->sae) ? (size_t)sl_topk_width(&b->sae) : (size_t)b->sae.S;
}

/* Device bytes one sequence of T tokens needs in the batch buffers (docs/CUDA.md):
 *   model:  4 (6TC + T max(3C, F) + NH T^2) + 8T    workspace, ids, row indices
 *   always: 4 T D                                    the included rows, compacted */
static size_t bytes_per_seq(const cuda_backend *b, size_t T) {
    const size_t D = (size_t)b->sae.D;
    size_t bytes = 4 * T * D;
    if (b->has_model) bytes += 4 * sl_dev_model_ws_floats(b->m.C, b->m.NH, b->m.F, 1, T) + 8 * T;
    return bytes;
}

/* Device bytes of the chunk buffers, whatever the batch (K rows a chunk, W the slot width):
 *   4 K D + 4 K S (x2 gated) + 8 D                   SAE input, activations, x_sum
 *   2 (4 (K + 1) + 8 K W + 16 K)                     two CSR slots: offsets, col + val, recon sums */
static size_t chunk_bytes(const cuda_backend *b, size_t K) {
    const size_t D = (size_t)b->sae.D, S = (size_t)b->sae.S, W = slot_width(b);
    return 4 * K * D + 4 * K * S * (b->sae.arch == SL_ARCH_GATED ? 2 : 1) + 8 * D + 2 * (4 * (K + 1) + 8 * K * W + 16 * K);
}

/* ---- upload ----------------------------------------------------------------------- */

static int dev_alloc(cuda_backend *b, void **p, size_t bytes, int batch) {
    *p = NULL;
    CUDA_CHECK(&b->where, cudaMalloc(p, bytes ? bytes : 1));
    if (batch) b->where.batch_bytes_held += bytes;
    return 0;
}

/* Copies n floats to dst (device) and returns dst + n, rounded up to 64 floats. */
static float *put(cuda_backend *b, float *dst, const float *src, size_t n, int *rc) {
    cudaError_t e = *rc ? cudaSuccess : cudaMemcpy(dst, src, n * sizeof(float), cudaMemcpyHostToDevice);
    if (e != cudaSuccess)
        *rc = sl_cuda_fail(&b->where, 0, "cudaMemcpy(weights)", cudaGetErrorString(e), __FILE__, __LINE__);
    return dst + ((n + 63) / 64) * 64;
}

static size_t padded(size_t n) { return ((n + 63) / 64) * 64; }

/* The layers the hook needs (0..hook.layer) plus the embeddings, in one allocation. */
static int upload_model(cuda_backend *b, const sl_model_view *v) {
    const sl_model_config *c = &v->cfg;
    const size_t C = (size_t)c->d_model, F = (size_t)c->d_mlp;
    const int n_layers = b->s.hook.layer + 1;
    size_t per_layer = 2 * padded(C) + padded(C * 3 * C) + padded(3 * C) + padded(C * C) + padded(C) +
                       2 * padded(C) + padded(C * F) + padded(F) + padded(F * C) + padded(C);
    size_t total = padded((size_t)c->vocab_size * C) + padded((size_t)c->n_positions * C) + per_layer * n_layers;
    if (dev_alloc(b, (void **)&b->d_model_w, total * sizeof(float), 0)) return -1;
    if (!(b->layers = (sl_dev_layer *)calloc((size_t)n_layers, sizeof *b->layers)))
        return sl_cuda_errf(b->where.err, "out of memory");
    int rc = 0;
    float *p = b->d_model_w;
    b->m.wte = p;
    p = put(b, p, v->wte, (size_t)c->vocab_size * C, &rc);
    b->m.wpe = p;
    p = put(b, p, v->wpe, (size_t)c->n_positions * C, &rc);
    for (int l = 0; l < n_layers; l++) {
        const sl_model_layer_view *L = &v->layers[l];
        sl_dev_layer *d = &b->layers[l];
        d->ln1_w = p, p = put(b, p, L->ln1_w, C, &rc);
        d->ln1_b = p, p = put(b, p, L->ln1_b, C, &rc);
        d->attn_w = p, p = put(b, p, L->attn_w, C * 3 * C, &rc);
        d->attn_b = p, p = put(b, p, L->attn_b, 3 * C, &rc);
        d->attn_proj_w = p, p = put(b, p, L->attn_proj_w, C * C, &rc);
        d->attn_proj_b = p, p = put(b, p, L->attn_proj_b, C, &rc);
        d->ln2_w = p, p = put(b, p, L->ln2_w, C, &rc);
        d->ln2_b = p, p = put(b, p, L->ln2_b, C, &rc);
        d->fc_w = p, p = put(b, p, L->fc_w, C * F, &rc);
        d->fc_b = p, p = put(b, p, L->fc_b, F, &rc);
        d->mlp_proj_w = p, p = put(b, p, L->mlp_proj_w, F * C, &rc);
        d->mlp_proj_b = p, p = put(b, p, L->mlp_proj_b, C, &rc);
    }
    b->m.C = c->d_model;
    b->m.NH = c->n_head;
    b->m.F = c->d_mlp;
    b->m.eps = c->layer_norm_eps;
    b->m.gelu_erf = v->gelu_erf;
    b->m.scale_attn_weights = v->scale_attn_weights;
    b->m.scale_attn_by_inverse_layer_idx = v->scale_attn_by_inverse_layer_idx;
    b->m.layers = b->layers;
    return rc;
}

static int upload_sae(cuda_backend *b, const sl_sae *s) {
    const size_t D = (size_t)s->d_in, S = (size_t)s->d_sae;
    const int gated = s->arch == SL_ARCH_GATED;
    size_t total = padded(D * S) + padded(S) + padded(D) + (s->threshold ? padded(S) : 0) +
                   (gated ? padded(D * S) + padded(S) : 0) + (s->dec_norm ? padded(S) : 0) + padded(S * D);
    if (dev_alloc(b, (void **)&b->d_sae_w, total * sizeof(float), 0)) return -1;
    int rc = 0;
    float *p = b->d_sae_w;
    sl_dev_sae *d = &b->sae;
    memset(d, 0, sizeof *d);
    d->D = s->d_in;
    d->S = s->d_sae;
    d->arch = s->arch;
    d->k = s->k;
    d->norm = s->norm;
    d->W_enc = p, p = put(b, p, s->W_enc, D * S, &rc);
    d->b_enc = p, p = put(b, p, s->b_enc, S, &rc);
    const float *b_dec = p;
    p = put(b, p, s->b_dec, D, &rc);
    d->b_dec = s->apply_b_dec_to_input ? b_dec : NULL;
    if (s->threshold) d->threshold = p, p = put(b, p, s->threshold, S, &rc);
    if (gated) {
        d->W_mag = p, p = put(b, p, s->W_mag, D * S, &rc);
        d->b_mag = p, p = put(b, p, s->b_mag, S, &rc);
    }
    if (s->dec_norm) d->dec_norm = p, p = put(b, p, s->dec_norm, S, &rc);
    d->W_dec = p, p = put(b, p, s->W_dec, S * D, &rc);
    d->b_dec_out = b_dec;
    return rc;
}

/* ---- batch buffers ----------------------------------------------------------------- */

static int alloc_batch(cuda_backend *b) {
    const size_t D = (size_t)b->sae.D, S = (size_t)b->sae.S, R = b->max_rows, K = b->bb.chunk_rows;
    const size_t W = slot_width(b);
    sl_cuda_where *w = &b->where;
    sl_batch_bufs *bb = &b->bb;
    w->batch_seqs = b->max_seqs;
    w->bytes_per_seq = bytes_per_seq(b, b->seq_len);
    if (b->has_model) {
        size_t nf = sl_dev_model_ws_floats(b->m.C, b->m.NH, b->m.F, b->max_seqs, b->seq_len);
        if (dev_alloc(b, (void **)&b->d_ws, nf * sizeof(float), 1) ||
            dev_alloc(b, (void **)&b->ws.ids, R * sizeof(int32_t), 1) ||
            dev_alloc(b, (void **)&b->d_rows, R * sizeof(int32_t), 1))
            return -1;
        const size_t NC = R * (size_t)b->m.C, wide = (size_t)(3 * b->m.C > b->m.F ? 3 * b->m.C : b->m.F);
        b->ws.x = b->d_ws;         /* [N, C] */
        b->ws.buf = b->ws.x + NC;  /* [N, C] */
        b->ws.y = b->ws.buf + NC;  /* [N, C] */
        b->ws.big = b->ws.y + NC;  /* [N, max(3C, F)] */
        b->ws.q = b->ws.big + R * wide; /* [B*NH, T, HS] */
        b->ws.k = b->ws.q + NC;
        b->ws.v = b->ws.k + NC;
        b->ws.att = b->ws.v + NC;  /* [B*NH, T, T] */
        CUDA_CHECK(w, cudaHostAlloc((void **)&b->h_ids, R * sizeof(int32_t), cudaHostAllocDefault));
        CUDA_CHECK(w, cudaHostAlloc((void **)&b->h_rows, R * sizeof(int32_t), cudaHostAllocDefault));
    } else {
        CUDA_CHECK(w, cudaHostAlloc((void **)&bb->h_xc, R * D * sizeof(float), cudaHostAllocDefault));
    }
    if (dev_alloc(b, (void **)&bb->d_xc, R * D * sizeof(float), 1) ||
        dev_alloc(b, (void **)&bb->d_xin, K * D * sizeof(float), 1) ||
        dev_alloc(b, (void **)&bb->d_dense, K * S * sizeof(float), 1) ||
        (b->sae.arch == SL_ARCH_GATED && dev_alloc(b, (void **)&bb->d_mag, K * S * sizeof(float), 1)) ||
        dev_alloc(b, (void **)&bb->d_x_sum, D * sizeof(double), 1))
        return -1;
    CUDA_CHECK(w, cudaHostAlloc((void **)&bb->h_x_sum, D * sizeof(double), cudaHostAllocDefault));
    for (int i = 0; i < 2; i++) {
        sl_chunk_slot *cs = &bb->slot[i];
        if (dev_alloc(b, (void **)&cs->d_off, (K + 1) * sizeof(int32_t), 1) ||
            dev_alloc(b, (void **)&cs->d_col, K * W * sizeof(int32_t), 1) ||
            dev_alloc(b, (void **)&cs->d_val, K * W * sizeof(float), 1) ||
            dev_alloc(b, (void **)&cs->d_sums, 2 * K * sizeof(double), 1))
            return -1;
        CUDA_CHECK(w, cudaHostAlloc((void **)&cs->h_off, (K + 1) * sizeof(int32_t), cudaHostAllocDefault));
        CUDA_CHECK(w, cudaHostAlloc((void **)&cs->h_sums, 2 * K * sizeof(double), cudaHostAllocDefault));
        /* top-k chunks always copy K * k entries; DenseToSparse's grow as chunks need */
        if (sl_topk_direct(&b->sae) && sl_slot_reserve(&b->pipe, cs, K * W)) return -1;
    }

    if (sl_topk_direct(&b->sae)) return 0; /* no DenseToSparse */
    /* cuSPARSE workspace for the largest chunk. */
    cusparseDnMatDescr_t dn;
    cusparseSpMatDescr_t sp;
    CUSPARSE_CHECK(w, cusparseCreateDnMat(&dn, (int64_t)K, (int64_t)S, (int64_t)S, bb->d_dense, CUDA_R_32F,
                                          CUSPARSE_ORDER_ROW));
    cusparseStatus_t st = cusparseCreateCsr(&sp, (int64_t)K, (int64_t)S, 0, bb->slot[0].d_off, NULL, NULL,
                                            CUSPARSE_INDEX_32I, CUSPARSE_INDEX_32I, CUSPARSE_INDEX_BASE_ZERO,
                                            CUDA_R_32F);
    if (st == CUSPARSE_STATUS_SUCCESS)
        st = cusparseDenseToSparse_bufferSize(b->sparse, dn, sp, CUSPARSE_DENSETOSPARSE_ALG_DEFAULT, &b->sp_buf_bytes);
    if (st == CUSPARSE_STATUS_SUCCESS) cusparseDestroySpMat(sp);
    cusparseDestroyDnMat(dn);
    CUSPARSE_CHECK(w, st);
    return dev_alloc(b, &b->d_sp_buf, b->sp_buf_bytes, 1);
}

/* ---- ops ------------------------------------------------------------------------------ */

static void cuda_free(sl_backend *base) {
    cuda_backend *b = (cuda_backend *)base;
    if (!b) return;
    for (int i = 0; i < SL_N_STREAMS; i++)
        if (b->streams[i]) cudaStreamSynchronize(b->streams[i]);
    sl_batch_bufs *bb = &b->bb;
    void *dev[] = {b->d_model_w, b->d_sae_w,  b->d_ws,          b->ws.ids,          b->d_rows,
                   bb->d_xc,     bb->d_xin,   bb->d_dense,      bb->d_mag,          bb->d_x_sum,
                   b->d_sp_buf,  bb->slot[0].d_off, bb->slot[0].d_col, bb->slot[0].d_val, bb->slot[0].d_sums,
                   bb->slot[1].d_off, bb->slot[1].d_col, bb->slot[1].d_val, bb->slot[1].d_sums};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        if (dev[i]) cudaFree(dev[i]);
    void *host[] = {b->h_ids,          b->h_rows,         bb->h_xc,           bb->h_x_sum,
                    bb->slot[0].h_off, bb->slot[0].h_col, bb->slot[0].h_val,  bb->slot[0].h_sums,
                    bb->slot[1].h_off, bb->slot[1].h_col, bb->slot[1].h_val,  bb->slot[1].h_sums};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++)
        if (host[i]) cudaFreeHost(host[i]);
    if (b->blas) cublasDestroy(b->blas);
    if (b->sparse) cusparseDestroy(b->sparse);
    if (b->ev_start) cudaEventDestroy(b->ev_start);
    if (b->ev_end) cudaEventDestroy(b->ev_end);
    for (int i = 0; i < SL_N_EVENTS; i++)
        if (b->events[i]) cudaEventDestroy(b->events[i]);
    for (int i = 1; i < SL_N_STREAMS; i++)
        if (b->streams[i]) cudaStreamDestroy(b->streams[i]);
    if (b->stream) cudaStreamDestroy(b->stream);
    free(b->layers);
    free(b);
}

static void cuda_describe(const sl_backend *base, char *buf, size_t size) {
    const cuda_backend *b = (const cuda_backend *)base;
    snprintf(buf, size, "cuda:%d %s (%.1f GiB, %s)", b->device, b->name, (double)b->total_mem / (1 << 30),
             b->s.fast_math ? "tf32" : "fp32");
}

static void cuda_status(const sl_backend *base, char *buf, size_t size) {
    const cuda_backend *b = (const cuda_backend *)base;
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) {
        (void)cudaGetLastError();
        snprintf(buf, size, "GPU memory ?");
        return;
    }
    snprintf(buf, size, "GPU %.1f/%.1f GiB, %.0f ms/batch", (double)(total_b - free_b) / (1 << 30),
             (double)total_b / (1 << 30), (double)b->last_ms);
}

static uint32_t cuda_batch_seqs(const sl_backend *base) { return ((const cuda_backend *)base)->max_seqs; }

static int cuda_run(sl_backend *base, const sl_batch_in *in, sl_csr_builder *out, sl_err *err) {
    cuda_backend *b = (cuda_backend *)base;
    sl_cuda_where *w = &b->where;
    w->err = err;
    w->batch_seqs = in->n_seq;
    const size_t D = (size_t)b->sae.D, rows = (size_t)in->n_seq * in->seq_len;
    if (in->n_seq > b->max_seqs || in->seq_len != b->seq_len)
        return sl_cuda_errf(err, "batch of %u x %u tokens exceeds the CUDA backend's %u x %u", in->n_seq, in->seq_len,
                            b->max_seqs, b->seq_len);
    if (!in->ids && !b->bb.h_xc) return sl_cuda_errf(err, "CUDA backend: stored activations to a model backend");
    CUDA_CHECK(w, cudaEventRecord(b->ev_start, b->stream));

    size_t n_inc = 0;
    if (in->ids) {
        /* ids -> pinned -> device, forward to the hook, then the rows that go to the
         * SAE, centred and compacted into bb.d_xc, all on the compute stream. */
        for (size_t r = 0; r < rows; r++)
            if (in->include[r]) b->h_rows[n_inc++] = (int32_t)r;
        memcpy(b->h_ids, in->ids, rows * sizeof(int32_t));
        CUDA_CHECK(w, cudaMemcpyAsync(b->ws.ids, b->h_ids, rows * sizeof(int32_t), cudaMemcpyHostToDevice, b->stream));
        float *act;
        if (sl_forward(&b->pipe, &b->m, &b->ws, (int)in->n_seq, (int)in->seq_len, b->s.hook, &act)) return -1;
        if (n_inc)
            CUDA_CHECK(w, cudaMemcpyAsync(b->d_rows, b->h_rows, n_inc * sizeof(int32_t), cudaMemcpyHostToDevice,
                                          b->stream));
        if (sl_prepare_rows(&b->pipe, act, (int)rows, (int)D, b->s.center, b->d_rows, n_inc, b->bb.d_xc)) return -1;
    } else {
        for (size_t r = 0; r < rows; r++) n_inc += in->include[r] != 0;
    }
    /* Stored activations are gathered, sent and centred chunk by chunk in there. */
    if (sl_encode_batch(&b->pipe, &b->sae, &b->bb, in->ids ? NULL : in->x, in->include, rows, n_inc, b->s.center,
                        out, in->recon, err))
        return -1;
    CUDA_CHECK(w, cudaEventRecord(b->ev_end, b->stream));
    CUDA_CHECK(w, cudaEventSynchronize(b->ev_end));
    CUDA_CHECK(w, cudaEventElapsedTime(&b->last_ms, b->ev_start, b->ev_end));
    return 0;
}

static const sl_backend_ops cuda_ops = {"cuda", cuda_run, cuda_describe, cuda_free, cuda_status, cuda_batch_seqs};

/* ---- creation ---------------------------------------------------------------------------- */

static int cuda_init(cuda_backend *b, const sl_model_view *model) {
    sl_cuda_where *w = &b->where;
    cudaDeviceProp prop;
    /* The host thread sleeps in cudaEventSynchronize instead of spinning, leaving
     * its core to the writer's compression threads. Only possible before the
     * device's context starts; if something started it already, keep its flags. */
    cudaError_t fe = cudaSetDeviceFlags(cudaDeviceScheduleBlockingSync);
    if (fe == cudaErrorSetOnActiveProcess) (void)cudaGetLastError();
    else CUDA_CHECK(w, fe);
    CUDA_CHECK(w, cudaSetDevice(b->device));
    CUDA_CHECK(w, cudaGetDeviceProperties(&prop, b->device));
    snprintf(b->name, sizeof b->name, "%s", prop.name);
    b->total_mem = prop.totalGlobalMem;
    CUDA_CHECK(w, cudaStreamCreateWithFlags(&b->stream, cudaStreamNonBlocking));
    b->streams[SL_S_COMPUTE] = b->stream;
    CUDA_CHECK(w, cudaStreamCreateWithFlags(&b->streams[SL_S_D2H], cudaStreamNonBlocking));
    CUDA_CHECK(w, cudaStreamCreateWithFlags(&b->streams[SL_S_H2D], cudaStreamNonBlocking));
    for (int i = 0; i < SL_N_EVENTS; i++) CUDA_CHECK(w, cudaEventCreateWithFlags(&b->events[i], cudaEventDisableTiming));
    CUDA_CHECK(w, cudaEventCreate(&b->ev_start));
    CUDA_CHECK(w, cudaEventCreate(&b->ev_end));
    CUBLAS_CHECK(w, cublasCreate(&b->blas));
    CUBLAS_CHECK(w, cublasSetStream(b->blas, b->stream));
    CUBLAS_CHECK(w, cublasSetMathMode(b->blas, b->s.fast_math ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
    CUSPARSE_CHECK(w, cusparseCreate(&b->sparse));
    CUSPARSE_CHECK(w, cusparseSetStream(b->sparse, b->stream));
    b->pipe.stream = b->stream;
    b->pipe.ctx = b;
    b->pipe.row_threads = ROW_THREADS;
    b->pipe.ew_threads = EW_THREADS;
    b->pipe.ew_blocks = EW_BLOCKS;

    b->has_model = model != NULL;
    if (model && upload_model(b, model)) return -1;
    if (upload_sae(b, b->s.sae)) return -1;

    /* Batch size: the user's, or what free memory allows (docs/CUDA.md). */
    b->seq_len = b->s.seq_len;
    b->max_seqs = b->s.max_seqs;
    if (b->s.auto_batch) {
        size_t free_b = 0, total_b = 0;
        CUDA_CHECK(w, cudaMemGetInfo(&free_b, &total_b));
        size_t avail = free_b > RESERVE_BYTES ? free_b - RESERVE_BYTES : 0;
        size_t fixed = chunk_bytes(b, CHUNK_ROWS);
        avail = avail > fixed ? avail - fixed : 0;
        uint32_t fit = sl_cuda_fit_seqs(avail, bytes_per_seq(b, b->seq_len));
        size_t cap = AUTO_MAX_TOKENS / b->seq_len;
        if (cap < 1) cap = 1;
        b->max_seqs = fit < 1 ? 1 : fit > cap ? (uint32_t)cap : fit;
    }
    b->max_rows = (size_t)b->max_seqs * b->seq_len;
    /* DenseToSparse with 32-bit indices: a chunk holds fewer than 2^31 values. */
    size_t by_index = (size_t)INT32_MAX / (size_t)b->sae.S, K = CHUNK_ROWS;
    if (K > by_index) K = by_index;
    if (K > b->max_rows) K = b->max_rows;
    b->bb.chunk_rows = K < 1 ? 1 : K;
    return alloc_batch(b);
}

extern "C" __attribute__((visibility("default"))) sl_backend *
sl_cuda_backend_new(int abi_version, const sl_backend_setup *setup, const sl_model_view *model, int *no_device,
                    sl_err *err) {
    *no_device = 0;
    if (abi_version != SL_CUDA_ABI_VERSION)
        return sl_cuda_errf(err, "saelite_cuda.so is from another build (interface %d, expected %d): rebuild it",
                            SL_CUDA_ABI_VERSION, abi_version),
               (sl_backend *)NULL;
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        *no_device = 1;
        sl_cuda_errf(err, "no usable CUDA device (cudaGetDeviceCount: %s)",
                     e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        (void)cudaGetLastError();
        return NULL;
    }
    if (setup->model && !model) return sl_cuda_errf(err, "CUDA backend: no model view"), (sl_backend *)NULL;
    cuda_backend *b = (cuda_backend *)calloc(1, sizeof *b);
    if (!b) return sl_cuda_errf(err, "out of memory"), (sl_backend *)NULL;
    b->base.ops = &cuda_ops;
    b->s = *setup;
    b->where.err = err;
    b->where.batch_seqs = setup->max_seqs;
    b->device = 0;
    if (cuda_init(b, model)) {
        cuda_free(&b->base);
        return NULL;
    }
    return &b->base;
}
