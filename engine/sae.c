/* sae.c: loading SAELens SAEs (directory or bare safetensors) and the CPU encoder. */
#include "sae.h"

#include <cblas.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "safetensors.h"
#include "sae_math.h"
#include "workpool.h"

const char *sl_arch_name(sl_arch arch) {
    switch (arch) {
    case SL_ARCH_STANDARD: return "standard";
    case SL_ARCH_TOPK: return "topk";
    case SL_ARCH_JUMPRELU: return "jumprelu";
    case SL_ARCH_GATED: return "gated";
    }
    return "?";
}

void sl_sae_free(sl_sae *sae) {
    if (!sae) return;
    free(sae->W_enc);
    free(sae->b_enc);
    free(sae->b_dec);
    free(sae->threshold);
    free(sae->W_mag);
    free(sae->b_mag);
    free(sae->dec_norm);
    free(sae->W_dec);
    free(sae);
}

static void copy_str(char *dst, size_t size, const char *src) {
    snprintf(dst, size, "%s", src ? src : "");
}

/* An integer cfg value that may be missing (returns def) but must be an integer.
 * *out is set on every path (def on an error), so no caller reads an unset value. */
static int cfg_int(json_t *obj, const char *key, long long def, long long lo, long long hi,
                   long long *out, const char *cfg_path, sl_err *err) {
    *out = def;
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return sl_errf_path(err, cfg_path, "'%s' must be an integer in [%lld, %lld]", key, lo, hi);
    *out = json_integer_value(v);
    return 0;
}

static int cfg_bool(json_t *obj, const char *key, int def) {
    json_t *v = json_object_get(obj, key);
    return json_is_boolean(v) ? json_is_true(v) : def;
}

/* Reads cfg.json (SAELens >= 6 keys, falling back to the pre-6.0 spellings). */
static int parse_cfg(sl_sae *sae, const char *cfg_path, sl_err *err) {
    json_error_t jerr;
    json_t *cfg = json_load_file(cfg_path, 0, &jerr);
    if (!cfg) {
        FILE *f = fopen(cfg_path, "r");
        if (!f) return sl_errf_path(err, cfg_path, "cannot open: %s", strerror(errno));
        fclose(f);
        return sl_errf_path(err, cfg_path, "invalid JSON: %s (line %d)", jerr.text, jerr.line);
    }
    int rc = -1;
    if (!json_is_object(cfg)) {
        sl_errf_path(err, cfg_path, "expected a JSON object");
        goto done;
    }
    long long d_in, d_sae, k, ctx;
    if (cfg_int(cfg, "d_in", -1, 1, 1 << 24, &d_in, cfg_path, err) ||
        cfg_int(cfg, "d_sae", -1, 1, 1 << 26, &d_sae, cfg_path, err))
        goto done;
    if (d_in < 0 || d_sae < 0) {
        sl_errf_path(err, cfg_path, "missing '%s'", d_in < 0 ? "d_in" : "d_sae");
        goto done;
    }
    sae->d_in = (int)d_in;
    sae->d_sae = (int)d_sae;

    /* Architecture: v6 "architecture"; older releases "activation_fn_str". */
    const char *arch = json_string_value(json_object_get(cfg, "architecture"));
    const char *act_fn = json_string_value(json_object_get(cfg, "activation_fn_str"));
    json_t *act_kwargs = json_object_get(cfg, "activation_fn_kwargs");
    if (json_object_get(cfg, "architecture") && !arch) {
        sl_errf_path(err, cfg_path, "'architecture' must be a string");
        goto done;
    }
    if (!arch || strcmp(arch, "standard") == 0) {
        sae->arch = SL_ARCH_STANDARD;
        if (act_fn && strcmp(act_fn, "topk") == 0)
            sae->arch = SL_ARCH_TOPK;
        else if (act_fn && strcmp(act_fn, "relu") != 0) {
            sl_errf_path(err, cfg_path,
                         "unsupported activation_fn_str '%s' (supported: relu, topk)", act_fn);
            goto done;
        }
    } else if (strcmp(arch, "topk") == 0) {
        sae->arch = SL_ARCH_TOPK;
    } else if (strcmp(arch, "jumprelu") == 0) {
        sae->arch = SL_ARCH_JUMPRELU;
    } else if (strcmp(arch, "gated") == 0) {
        sae->arch = SL_ARCH_GATED;
    } else {
        sl_errf_path(err, cfg_path,
                     "unknown architecture '%s' (supported: standard, topk, jumprelu, gated)",
                     arch);
        goto done;
    }
    if (sae->arch == SL_ARCH_TOPK) {
        json_t *holder = json_object_get(cfg, "k") ? cfg : act_kwargs;
        if (cfg_int(json_is_object(holder) ? holder : cfg, "k", 100, 1, d_sae, &k, cfg_path, err))
            goto done;
        sae->k = (int)k;
        sae->rescale_acts_by_decoder_norm = cfg_bool(cfg, "rescale_acts_by_decoder_norm", 0);
    }
    sae->apply_b_dec_to_input = cfg_bool(cfg, "apply_b_dec_to_input", 1);

    json_t *norm = json_object_get(cfg, "normalize_activations");
    sae->norm = SL_NORM_NONE;
    if (json_is_string(norm)) {
        const char *s = json_string_value(norm);
        if (strcmp(s, "constant_norm_rescale") == 0)
            sae->norm = SL_NORM_CONSTANT_NORM_RESCALE;
        else if (strcmp(s, "layer_norm") == 0)
            sae->norm = SL_NORM_LAYER_NORM;
        else if (strcmp(s, "none") != 0 && strcmp(s, "expected_average_only_in") != 0) {
            sl_errf_path(err, cfg_path,
                         "unsupported normalize_activations '%s' (supported: none, "
                         "expected_average_only_in, constant_norm_rescale, layer_norm)",
                         s);
            goto done;
        }
    } else if (norm && !json_is_boolean(norm) && !json_is_null(norm)) {
        sl_errf_path(err, cfg_path, "'normalize_activations' must be a string or boolean");
        goto done;
    } /* boolean (pre-6.0): the scale was folded into the saved weights, as expected_average_only_in */

    json_t *meta = json_object_get(cfg, "metadata");
    if (!json_is_object(meta)) meta = cfg; /* pre-6.0: top level */
    const char *hook = json_string_value(json_object_get(meta, "hook_name"));
    if (!hook) hook = json_string_value(json_object_get(cfg, "hook_name"));
    if (!hook) hook = json_string_value(json_object_get(cfg, "hook_point"));
    copy_str(sae->hook_name, sizeof sae->hook_name, hook);
    copy_str(sae->model_name, sizeof sae->model_name,
             json_string_value(json_object_get(meta, "model_name")));
    if (cfg_int(meta, "context_size", -1, 1, 1 << 24, &ctx, cfg_path, err)) goto done;
    sae->context_size = (int)ctx;
    json_t *bos = json_object_get(meta, "prepend_bos");
    sae->prepend_bos = json_is_boolean(bos) ? json_is_true(bos) : -1;
    json_t *kw = json_object_get(meta, "model_from_pretrained_kwargs");
    if (!kw) kw = json_object_get(cfg, "model_from_pretrained_kwargs");
    json_t *center = json_object_get(kw, "center_writing_weights");
    sae->center_writing_weights = json_is_boolean(center) ? json_is_true(center) : -1;
    rc = 0;
done:
    json_decref(cfg);
    return rc;
}

/* Loads the weight tensors for sae->arch from st; shapes are checked against d_in/d_sae. */
static int load_weights(sl_sae *sae, const sl_st *st, sl_err *err) {
    int64_t enc[2] = {sae->d_in, sae->d_sae}, dec[2] = {sae->d_sae, sae->d_in};
    int64_t vin[1] = {sae->d_in}, vsae[1] = {sae->d_sae};
    if (!(sae->W_enc = sl_st_load_f32(st, "W_enc", 2, enc, err))) return -1;
    if (!(sae->b_dec = sl_st_load_f32(st, "b_dec", 1, vin, err))) return -1;
    float *W_dec = sae->W_dec = sl_st_load_f32(st, "W_dec", 2, dec, err);
    if (!W_dec) return -1;
    if (sae->arch == SL_ARCH_TOPK && sae->rescale_acts_by_decoder_norm) {
        if (!(sae->dec_norm = malloc((size_t)sae->d_sae * sizeof(float)))) return sl_errf(err, "out of memory");
        for (int f = 0; f < sae->d_sae; f++) {
            double s = 0;
            for (int i = 0; i < sae->d_in; i++) {
                double w = W_dec[(size_t)f * (size_t)sae->d_in + (size_t)i];
                s += w * w;
            }
            sae->dec_norm[f] = (float)sqrt(s);
        }
    }

    if (sae->arch == SL_ARCH_GATED) {
        if (!(sae->b_enc = sl_st_load_f32(st, "b_gate", 1, vsae, err))) return -1;
        if (!(sae->b_mag = sl_st_load_f32(st, "b_mag", 1, vsae, err))) return -1;
        float *r_mag = sl_st_load_f32(st, "r_mag", 1, vsae, err);
        if (!r_mag) return -1;
        size_t n = (size_t)sae->d_in * (size_t)sae->d_sae;
        if (!(sae->W_mag = malloc(n * sizeof(float)))) {
            free(r_mag);
            return sl_errf(err, "out of memory");
        }
        for (size_t i = 0; i < n; i++)
            sae->W_mag[i] = sae->W_enc[i] * expf(r_mag[i % (size_t)sae->d_sae]);
        free(r_mag);
        return 0;
    }
    if (!(sae->b_enc = sl_st_load_f32(st, "b_enc", 1, vsae, err))) return -1;
    if (sae->arch == SL_ARCH_JUMPRELU) {
        if (sl_st_get(st, "threshold")) {
            if (!(sae->threshold = sl_st_load_f32(st, "threshold", 1, vsae, err))) return -1;
        } else if (sl_st_get(st, "log_threshold")) {
            if (!(sae->threshold = sl_st_load_f32(st, "log_threshold", 1, vsae, err))) return -1;
            for (int f = 0; f < sae->d_sae; f++) sae->threshold[f] = expf(sae->threshold[f]);
        } else {
            return sl_errf_path(err, sl_st_path(st), "missing tensor 'threshold' (jumprelu SAE)");
        }
    }
    return 0;
}

/* A bare safetensors: shapes from W_enc, architecture from the tensors present. */
static int infer_bare(sl_sae *sae, const sl_st *st, sl_err *err) {
    const sl_tensor *w = sl_st_get(st, "W_enc");
    if (!w) return sl_errf_path(err, sl_st_path(st), "missing tensor 'W_enc'");
    if (w->ndim != 2 || w->shape[0] < 1 || w->shape[1] < 1 || w->shape[0] > (1 << 24) ||
        w->shape[1] > (1 << 26))
        return sl_errf_path(err, sl_st_path(st), "tensor 'W_enc' must be 2-D [d_in, d_sae]");
    sae->d_in = (int)w->shape[0];
    sae->d_sae = (int)w->shape[1];
    if (sl_st_get(st, "b_gate") || sl_st_get(st, "r_mag"))
        sae->arch = SL_ARCH_GATED;
    else if (sl_st_get(st, "threshold") || sl_st_get(st, "log_threshold"))
        sae->arch = SL_ARCH_JUMPRELU;
    else
        sae->arch = SL_ARCH_STANDARD;
    sae->apply_b_dec_to_input = 1;
    sae->norm = SL_NORM_NONE;
    sae->context_size = -1;
    sae->prepend_bos = -1;
    sae->center_writing_weights = 0; /* not from SAELens: no TransformerLens processing assumed */
    return 0;
}

sl_sae *sl_sae_load(const char *path, sl_err *err) {
    sl_sae *sae = calloc(1, sizeof *sae);
    if (!sae) return sl_errf(err, "out of memory"), NULL;
    copy_str(sae->path, sizeof sae->path, path);
    char cfg_path[4200], weights_path[4200];
    struct stat sb;
    if (stat(path, &sb) != 0) {
        sl_errf_path(err, path, "cannot open SAE: %s", strerror(errno));
        goto fail;
    }
    int has_cfg;
    if (S_ISDIR(sb.st_mode)) {
        snprintf(cfg_path, sizeof cfg_path, "%s/cfg.json", path);
        snprintf(weights_path, sizeof weights_path, "%s/sae_weights.safetensors", path);
        has_cfg = 1;
    } else {
        /* A weights file named sae_weights.safetensors with a cfg.json beside it is a SAELens SAE. */
        snprintf(weights_path, sizeof weights_path, "%s", path);
        const char *slash = strrchr(path, '/');
        size_t dir_len = slash ? (size_t)(slash - path) + 1 : 0;
        snprintf(cfg_path, sizeof cfg_path, "%.*scfg.json", (int)dir_len, path);
        has_cfg = strcmp(path + dir_len, "sae_weights.safetensors") == 0 && stat(cfg_path, &sb) == 0;
    }
    if (has_cfg && parse_cfg(sae, cfg_path, err) != 0) goto fail;
    sl_st *st = sl_st_open(weights_path, err);
    if (!st) goto fail;
    int rc = (has_cfg ? 0 : infer_bare(sae, st, err));
    if (rc == 0) rc = load_weights(sae, st, err);
    sl_st_close(st);
    if (rc != 0) goto fail;
    return sae;
fail:
    sl_sae_free(sae);
    return NULL;
}

/* Candidates a top-k row keeps before it cuts them back to k: more than k, and
 * enough that cuts are rare (each costs a quickselect over the buffer). */
static int topk_cap(int d_sae, int k) { return k < d_sae / 4 ? 4 * k : d_sae; }

/* Per worker: candidate values, a copy for the quickselect, candidate ids. */
static size_t topk_scratch_floats(const sl_sae *sae) { return 3 * (size_t)topk_cap(sae->d_sae, sae->k); }

size_t sl_sae_workspace_floats(const sl_sae *sae, int n) {
    size_t rows = (size_t)(n > 0 ? n : 0);
    size_t ws = rows * (size_t)sae->d_in;                                   /* normalized input */
    if (sae->arch == SL_ARCH_GATED) ws += rows * (size_t)sae->d_sae;        /* magnitude path */
    if (sae->arch == SL_ARCH_TOPK) ws += topk_scratch_floats(sae);          /* the caller's selection scratch */
    return ws;
}

/* Swap-free quickselect: returns the k-th largest (1-based) of v[0..n). Reorders v. */
static float kth_largest(float *v, int n, int k) {
    int lo = 0, hi = n - 1, target = k - 1;
    while (lo < hi) {
        float pivot = v[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (v[i] > pivot) i++;
            while (v[j] < pivot) j--;
            if (i <= j) {
                float t = v[i];
                v[i] = v[j];
                v[j] = t;
                i++;
                j--;
            }
        }
        if (target <= j)
            hi = j;
        else if (target >= i)
            lo = i;
        else
            return v[target];
    }
    return v[target];
}

/* Reduces the candidates (val, idx), in feature order, to the k that the tie rule
 * selects among them: all above the k-th largest value, then the ties at it with
 * the lowest feature ids. Order is kept. n > k. Returns the k-th largest value. */
static float topk_keep(float *val, int32_t *idx, float *sel, int n, int k, int *count) {
    memcpy(sel, val, (size_t)n * sizeof(float));
    float kth = kth_largest(sel, n, k);
    int above = 0;
    for (int i = 0; i < n; i++) above += val[i] > kth;
    int ties_left = k - above, m = 0;
    for (int i = 0; i < n; i++) {
        if (val[i] > kth || (val[i] == kth && ties_left-- > 0)) {
            val[m] = val[i];
            idx[m++] = idx[i];
        }
    }
    *count = m;
    return kth;
}

/* Keeps the k largest entries of row, each multiplied by scale[f] first when scale
 * is not NULL (ties: lower feature id first), relu'd; the rest become 0.
 *
 * Only positive values can survive the relu, and a value that is not among the k
 * largest of the positive ones is not among the k largest of the row, so one pass
 * collects the positive values above a running threshold into a buffer of cap > k
 * candidates. When it fills, it is cut to the k the tie rule selects and the
 * threshold rises to their smallest value: a later value equal to it cannot be
 * selected either, since k candidates with lower ids are at least as large. The row
 * is zeroed during the same pass and the survivors written back, so nothing sorts
 * or even copies the d_sae values. scratch: topk_scratch_floats. */
static void topk_row(float *row, const float *scale, int d_sae, int k, float *scratch) {
    if (k >= d_sae) {
        for (int f = 0; f < d_sae; f++) row[f] = sl_relu(scale ? row[f] * scale[f] : row[f]);
        return;
    }
    const int cap = topk_cap(d_sae, k);
    float *val = scratch, *sel = scratch + cap;
    int32_t *idx = (int32_t *)(scratch + 2 * (size_t)cap);
    float thr = 0.0f;
    int n = 0;
    enum { BLOCK = 16 };
    int f = 0;
    for (; f + BLOCK <= d_sae; f += BLOCK) {
        float v[BLOCK];
        int any = 0;
        if (scale) /* tested per block, not per value, so that each loop vectorizes */
            for (int j = 0; j < BLOCK; j++) v[j] = row[f + j] * scale[f + j];
        else
            for (int j = 0; j < BLOCK; j++) v[j] = row[f + j];
        for (int j = 0; j < BLOCK; j++) any |= v[j] > thr;
        memset(row + f, 0, sizeof v);
        if (!any) continue;
        for (int j = 0; j < BLOCK; j++) {
            if (v[j] > thr) {
                val[n] = v[j];
                idx[n++] = f + j;
                if (n == cap) thr = topk_keep(val, idx, sel, n, k, &n);
            }
        }
    }
    for (; f < d_sae; f++) {
        float v = scale ? row[f] * scale[f] : row[f];
        row[f] = 0.0f;
        if (v > thr) {
            val[n] = v;
            idx[n++] = f;
            if (n == cap) thr = topk_keep(val, idx, sel, n, k, &n);
        }
    }
    if (n > k) topk_keep(val, idx, sel, n, k, &n);
    for (int i = 0; i < n; i++) row[idx[i]] = val[i]; /* all > 0: relu is the identity */
}

/* The rows of a chunk are selected on a pool of threads: run on the caller alone,
 * the selection would leave idle the cores the GEMM before it kept busy. A pool per
 * call costs tens of microseconds against milliseconds of selection and holds no
 * threads between calls; small calls (encode_text) stay on the caller. */
enum { TOPK_ROWS_PER_ITEM = 4 };

typedef struct topk_job {
    const sl_sae *sae;
    float *acts;
    int n;
    float **scratch; /* per worker */
} topk_job;

static void topk_item(void *ctx, size_t item, int worker) {
    const topk_job *j = ctx;
    const int d_sae = j->sae->d_sae;
    int r0 = (int)item * TOPK_ROWS_PER_ITEM;
    int r1 = r0 + TOPK_ROWS_PER_ITEM < j->n ? r0 + TOPK_ROWS_PER_ITEM : j->n;
    for (int r = r0; r < r1; r++)
        topk_row(j->acts + (size_t)r * (size_t)d_sae, j->sae->dec_norm, d_sae, j->sae->k, j->scratch[worker]);
}

static void topk_rows(const sl_sae *sae, float *acts, int n, float *scratch) {
    const size_t per = topk_scratch_floats(sae);
    int threads = sl_workpool_default_threads();
    if ((size_t)n * (size_t)sae->d_sae < ((size_t)1 << 18)) threads = 0; /* too little to share */
    if (threads > n / TOPK_ROWS_PER_ITEM) threads = n / TOPK_ROWS_PER_ITEM;
    float *extra = NULL;
    float *per_worker[SL_WORKPOOL_MAX_THREADS + 1];
    sl_workpool *pool = NULL;
    if (threads > 0) {
        sl_err err = {{0}};
        extra = malloc((size_t)threads * per * sizeof(float));
        pool = extra ? sl_workpool_new(threads, 0, &err) : NULL;
        if (!pool) threads = 0; /* no memory or no thread: the caller does it all */
    }
    for (int w = 0; w < threads; w++) per_worker[w] = extra + (size_t)w * per;
    per_worker[threads] = scratch; /* the calling thread is worker `threads` */
    topk_job job = {sae, acts, n, per_worker};
    sl_workjob wj;
    size_t items = ((size_t)n + TOPK_ROWS_PER_ITEM - 1) / TOPK_ROWS_PER_ITEM;
    sl_workpool_start(pool, &wj, items, topk_item, &job);
    sl_workpool_wait(pool, &wj);
    sl_workpool_free(pool);
    free(extra);
}

void sl_sae_encode(const sl_sae *sae, const float *x, int n, float *acts, float *ws) {
    const int d_in = sae->d_in, d_sae = sae->d_sae;
    float *xin = ws; /* [n, d_in] normalized, b_dec-centred input */
    for (int r = 0; r < n; r++) {
        const float *src = x + (size_t)r * (size_t)d_in;
        float *dst = xin + (size_t)r * (size_t)d_in;
        float scale = 1.0f, shift = 0.0f;
        if (sae->norm == SL_NORM_CONSTANT_NORM_RESCALE) {
            double ss = 0;
            for (int i = 0; i < d_in; i++) ss += (double)src[i] * src[i];
            scale = sl_constant_norm_scale(ss, d_in);
        } else if (sae->norm == SL_NORM_LAYER_NORM) {
            double mean = 0, ss = 0;
            for (int i = 0; i < d_in; i++) mean += src[i];
            mean /= d_in;
            for (int i = 0; i < d_in; i++) ss += (src[i] - mean) * (src[i] - mean);
            shift = (float)mean;
            scale = sl_layer_norm_inv(ss, d_in);
        }
        for (int i = 0; i < d_in; i++) {
            float v = (src[i] - shift) * scale;
            dst[i] = sae->apply_b_dec_to_input ? v - sae->b_dec[i] : v;
        }
    }
    /* pre = xin W_enc + b_enc: bias broadcast first so the GEMM accumulates onto it. */
    for (int r = 0; r < n; r++)
        memcpy(acts + (size_t)r * (size_t)d_sae, sae->b_enc, (size_t)d_sae * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, d_sae, d_in, 1.0f, xin, d_in,
                sae->W_enc, d_sae, 1.0f, acts, d_sae);
    size_t total = (size_t)n * (size_t)d_sae;
    switch (sae->arch) {
    case SL_ARCH_STANDARD:
        for (size_t i = 0; i < total; i++) acts[i] = sl_relu(acts[i]);
        break;
    case SL_ARCH_JUMPRELU:
        for (size_t i = 0; i < total; i++) acts[i] = sl_jumprelu(acts[i], sae->threshold[i % (size_t)d_sae]);
        break;
    case SL_ARCH_TOPK: {
        topk_rows(sae, acts, n, ws + (size_t)n * (size_t)d_in); /* scaled by dec_norm in the same pass */
        break;
    }
    case SL_ARCH_GATED: {
        float *mag = ws + (size_t)n * (size_t)d_in; /* [n, d_sae] */
        for (int r = 0; r < n; r++)
            memcpy(mag + (size_t)r * (size_t)d_sae, sae->b_mag, (size_t)d_sae * sizeof(float));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, d_sae, d_in, 1.0f, xin, d_in,
                    sae->W_mag, d_sae, 1.0f, mag, d_sae);
        for (size_t i = 0; i < total; i++) acts[i] = sl_gated(acts[i], mag[i]);
        break;
    }
    }
}

void sl_sae_add_recon(const sl_sae *sae, const float *xp, const uint32_t *cols, const float *vals, size_t nnz,
                      float *r, sl_recon_sums *q) {
    const int d_in = sae->d_in;
    memset(r, 0, (size_t)d_in * sizeof *r); /* f32 reconstruction in x' space; sums in double */
    for (size_t k = 0; k < nnz; k++) {
        uint32_t f = cols[k];
        float c = sae->dec_norm ? vals[k] / sae->dec_norm[f] : vals[k];
        cblas_saxpy(d_in, c, sae->W_dec + (size_t)f * (size_t)d_in, 1, r, 1);
    }
    for (int i = 0; i < d_in; i++) {
        double b = sae->b_dec[i];
        double xn = (double)xp[i] + (sae->apply_b_dec_to_input ? b : 0.0); /* the normalized input */
        double e = (double)r[i] + b - xn;
        q->err_sq += e * e;
        q->x_sq += xn * xn;
        q->x_sum[i] += xn;
    }
    q->rows++;
}
