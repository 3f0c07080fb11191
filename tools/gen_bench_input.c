/* gen_bench_input: writes a synthetic SAE and a stored-activations file for the
 * benchmark (bench/run_bench.sh).
 *
 *   gen_bench_input OUTDIR [--tokens N] [--seq-len L] [--d-in D] [--d-sae S]
 *                          [--active A] [--dtype f16|f32|bf16] [--density uniform|lognormal]
 *                          [--arch standard|topk] [--seed S]
 *
 * Output:
 *   OUTDIR/sae/cfg.json                 SAELens v6 config
 *   OUTDIR/sae/sae_weights.safetensors  W_enc [D,S], b_enc [S], W_dec [S,D], b_dec [D], F32
 *   OUTDIR/acts.safetensors             activations [N/L, L, D] (dtype), tokens [N/L, L] I32
 *
 * How about A features fire per token (standard arch): activations are iid
 * N(0,1) per component, every W_enc column is iid Gaussian scaled to unit norm,
 * b_dec = 0, so each pre-activation x . W_enc[:,f] is exactly N(0,1) over tokens.
 * b_enc[f] = -z where P(Z > z) = A / S, so each feature fires with probability
 * A / S and a token has A active features on average (binomial, std ~ sqrt(A)).
 * For topk, b_enc = 0 and cfg "k" = A: exactly A per token.
 * --density lognormal (standard arch): feature f fires with its own probability p_f,
 * log10 p_f ~ N(mu, 0.75) with mu set so that the mean of p_f is still A / S (capped
 * at 0.5), b_enc[f] = -z_f with P(Z > z_f) = p_f. Like a trained SAE's density
 * histogram: most features rare, a few firing on a large share of tokens, so one
 * feature can hold a large part of the store's nonzeros.
 *
 * Everything is streamed to disk in chunks; only W_enc (D*S floats) is held in
 * memory, to normalise its columns. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#include "dtype.h"

/* ---- PRNG: splitmix64 seeding a xoshiro256+ ---- */

typedef struct rng {
    uint64_t s[4];
    int has_spare;
    double spare;
} rng;

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void rng_seed(rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
    r->has_spare = 0;
}

static inline uint64_t rotl64(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t rng_next(rng *r) {
    uint64_t *s = r->s;
    uint64_t result = s[0] + s[3];
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return result;
}

/* Uniform in (0, 1]: never 0, so log() is safe. */
static inline double rng_uniform(rng *r) { return ((double)(rng_next(r) >> 11) + 1.0) * (1.0 / 9007199254740992.0); }

/* Standard normal by Box-Muller, two per pair of uniforms. */
static inline double rng_normal(rng *r) {
    if (r->has_spare) {
        r->has_spare = 0;
        return r->spare;
    }
    double u1 = rng_uniform(r), u2 = rng_uniform(r);
    double rad = sqrt(-2.0 * log(u1));
    double th = 6.283185307179586476925 * u2;
    r->spare = rad * sin(th);
    r->has_spare = 1;
    return rad * cos(th);
}

/* z with P(Z > z) = p for a standard normal Z: bisection on 0.5 * erfc(z / sqrt 2). */
static double normal_upper_quantile(double p) {
    double lo = -40.0, hi = 40.0;
    for (int i = 0; i < 200; i++) {
        double mid = 0.5 * (lo + hi);
        double tail = 0.5 * erfc(mid / sqrt(2.0));
        if (tail > p)
            lo = mid;
        else
            hi = mid;
    }
    return 0.5 * (lo + hi);
}

/* ---- output helpers ---- */

static void die(const char *what, const char *path) {
    fprintf(stderr, "gen_bench_input: %s %s: %s\n", what, path, strerror(errno));
    exit(1);
}

static void xwrite(const void *p, size_t n, FILE *f, const char *path) {
    if (n && fwrite(p, 1, n, f) != n) die("cannot write", path);
}

static void xmkdir(const char *path) {
    if (mkdir(path, 0777) != 0 && errno != EEXIST) die("cannot create directory", path);
}

typedef struct st_entry {
    const char *name;
    const char *dtype;
    int ndim;
    uint64_t shape[4];
    uint64_t nbytes;
} st_entry;

/* Writes the safetensors header: u64 LE length, then the JSON padded with spaces
 * to a multiple of 8. Tensors are laid out in the given order. */
static void write_st_header(FILE *f, const char *path, const st_entry *e, int n) {
    char json[4096];
    size_t len = 0;
    uint64_t off = 0;
    len += (size_t)snprintf(json + len, sizeof json - len, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < n; i++) {
        len += (size_t)snprintf(json + len, sizeof json - len, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", e[i].name,
                                e[i].dtype);
        for (int d = 0; d < e[i].ndim; d++)
            len += (size_t)snprintf(json + len, sizeof json - len, "%s%" PRIu64, d ? "," : "", e[i].shape[d]);
        len += (size_t)snprintf(json + len, sizeof json - len, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", off,
                                off + e[i].nbytes);
        off += e[i].nbytes;
    }
    len += (size_t)snprintf(json + len, sizeof json - len, "}");
    if (len + 8 >= sizeof json) {
        fprintf(stderr, "gen_bench_input: header too long\n");
        exit(1);
    }
    while (len % 8) json[len++] = ' ';
    unsigned char hl[8];
    for (int i = 0; i < 8; i++) hl[i] = (unsigned char)((uint64_t)len >> (8 * i));
    xwrite(hl, 8, f, path);
    xwrite(json, len, f, path);
}

static uint64_t parse_u64(const char *opt, const char *s) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || !*s || s[0] == '-') {
        fprintf(stderr, "gen_bench_input: bad value for %s: '%s'\n", opt, s);
        exit(2);
    }
    return (uint64_t)v;
}

static void usage(void) {
    fprintf(stderr,
            "usage: gen_bench_input OUTDIR [--tokens N] [--seq-len L] [--d-in D] [--d-sae S]\n"
            "                       [--active A] [--dtype f16|f32|bf16] [--arch standard|topk] [--seed S]\n"
            "                       [--density uniform|lognormal]\n");
    exit(2);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    const char *outdir = NULL, *dtype = "f16", *arch = "standard", *density = "uniform";
    uint64_t tokens = 1048576, seq_len = 128, d_in = 768, d_sae = 24576, active = 64, seed = 1234;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || a[1] != '-') {
            if (outdir) usage();
            outdir = a;
            continue;
        }
        if (i + 1 >= argc) usage();
        const char *v = argv[++i];
        if (!strcmp(a, "--tokens")) tokens = parse_u64(a, v);
        else if (!strcmp(a, "--seq-len")) seq_len = parse_u64(a, v);
        else if (!strcmp(a, "--d-in")) d_in = parse_u64(a, v);
        else if (!strcmp(a, "--d-sae")) d_sae = parse_u64(a, v);
        else if (!strcmp(a, "--active")) active = parse_u64(a, v);
        else if (!strcmp(a, "--seed")) seed = parse_u64(a, v);
        else if (!strcmp(a, "--dtype")) dtype = v;
        else if (!strcmp(a, "--arch")) arch = v;
        else if (!strcmp(a, "--density")) density = v;
        else usage();
    }
    if (!outdir) usage();
    const char *st_dtype;
    size_t esz;
    if (!strcmp(dtype, "f16")) st_dtype = "F16", esz = 2;
    else if (!strcmp(dtype, "bf16")) st_dtype = "BF16", esz = 2;
    else if (!strcmp(dtype, "f32")) st_dtype = "F32", esz = 4;
    else {
        fprintf(stderr, "gen_bench_input: --dtype must be f16, f32 or bf16\n");
        return 2;
    }
    int lognormal = 0;
    if (!strcmp(density, "lognormal")) lognormal = 1;
    else if (strcmp(density, "uniform") != 0) {
        fprintf(stderr, "gen_bench_input: --density must be uniform or lognormal\n");
        return 2;
    }
    int topk = 0;
    if (!strcmp(arch, "topk")) topk = 1;
    else if (strcmp(arch, "standard") != 0) {
        fprintf(stderr, "gen_bench_input: --arch must be standard or topk\n");
        return 2;
    }
    if (!seq_len || !d_in || !d_sae || !tokens || tokens % seq_len || d_in > 65536 || d_sae > (1u << 24) ||
        !active || active >= d_sae) {
        fprintf(stderr, "gen_bench_input: need tokens a positive multiple of seq-len, 0 < active < d-sae, "
                        "d-in <= 65536, d-sae <= 16777216\n");
        return 2;
    }
    uint64_t n_seq = tokens / seq_len;
    double t0 = now_s();

    char path[8192], sae_dir[4096];
    if (strlen(outdir) > 4000) {
        fprintf(stderr, "gen_bench_input: OUTDIR is too long\n");
        return 2;
    }
    xmkdir(outdir);
    snprintf(sae_dir, sizeof sae_dir, "%s/sae", outdir);
    xmkdir(sae_dir);

    /* ---- cfg.json ---- */
    double z = normal_upper_quantile((double)active / (double)d_sae);
    snprintf(path, sizeof path, "%s/cfg.json", sae_dir);
    FILE *f = fopen(path, "w");
    if (!f) die("cannot create", path);
    fprintf(f,
            "{\n  \"architecture\": \"%s\",\n  \"d_in\": %" PRIu64 ",\n  \"d_sae\": %" PRIu64 ",\n"
            "  \"dtype\": \"float32\",\n  \"device\": \"cpu\",\n  \"apply_b_dec_to_input\": true,\n"
            "  \"normalize_activations\": \"none\",\n",
            topk ? "topk" : "standard", d_in, d_sae);
    if (topk) fprintf(f, "  \"k\": %" PRIu64 ",\n  \"rescale_acts_by_decoder_norm\": false,\n", active);
    fprintf(f,
            "  \"metadata\": {\"model_name\": \"synthetic\", \"hook_name\": \"blocks.6.hook_resid_pre\", "
            "\"context_size\": %" PRIu64 ", \"prepend_bos\": true}\n}\n",
            seq_len);
    if (fclose(f) != 0) die("cannot write", path);

    /* ---- SAE weights ---- */
    rng r;
    rng_seed(&r, seed);
    size_t n_enc = (size_t)d_in * (size_t)d_sae;
    float *w = malloc(n_enc * sizeof(float));
    double *colss = calloc((size_t)d_sae, sizeof(double));
    float *row = malloc((size_t)(d_in > d_sae ? d_in : d_sae) * sizeof(float));
    if (!w || !colss || !row) {
        fprintf(stderr, "gen_bench_input: out of memory for W_enc (%zu floats)\n", n_enc);
        return 1;
    }
    for (size_t i = 0; i < n_enc; i++) {
        float v = (float)rng_normal(&r);
        w[i] = v;
        colss[i % d_sae] += (double)v * v;
    }
    for (uint64_t fi = 0; fi < d_sae; fi++) colss[fi] = 1.0 / sqrt(colss[fi]); /* now the column scale */
    for (size_t i = 0; i < n_enc; i++) w[i] = (float)(w[i] * colss[i % d_sae]);

    snprintf(path, sizeof path, "%s/sae_weights.safetensors", sae_dir);
    f = fopen(path, "wb");
    if (!f) die("cannot create", path);
    st_entry we[4] = {
        {"W_enc", "F32", 2, {d_in, d_sae}, n_enc * 4},
        {"b_enc", "F32", 1, {d_sae}, d_sae * 4},
        {"W_dec", "F32", 2, {d_sae, d_in}, n_enc * 4},
        {"b_dec", "F32", 1, {d_in}, d_in * 4},
    };
    write_st_header(f, path, we, 4);
    xwrite(w, n_enc * sizeof(float), f, path);
    if (lognormal && !topk) {
        /* log10 p ~ N(mu, sigma): E[p] = 10^mu * exp((sigma ln 10)^2 / 2) = A / S. */
        const double sigma = 0.75, ln10 = 2.302585092994046;
        double mu = log10((double)active / (double)d_sae) - sigma * sigma * ln10 / 2;
        rng dr;
        rng_seed(&dr, seed ^ 0x5eed5eedull);
        for (uint64_t fi = 0; fi < d_sae; fi++) {
            double p = pow(10.0, mu + sigma * rng_normal(&dr));
            row[fi] = (float)-normal_upper_quantile(p > 0.5 ? 0.5 : p);
        }
    } else {
        for (uint64_t fi = 0; fi < d_sae; fi++) row[fi] = topk ? 0.0f : (float)-z;
    }
    xwrite(row, d_sae * sizeof(float), f, path);
    /* W_dec: unit-norm rows (the decoder does not enter the encode path). */
    double dscale = 1.0 / sqrt((double)d_in);
    for (uint64_t fi = 0; fi < d_sae; fi++) {
        for (uint64_t i = 0; i < d_in; i++) row[i] = (float)(rng_normal(&r) * dscale);
        xwrite(row, d_in * sizeof(float), f, path);
    }
    for (uint64_t i = 0; i < d_in; i++) row[i] = 0.0f;
    xwrite(row, d_in * sizeof(float), f, path);
    long sae_bytes = ftell(f);
    if (fclose(f) != 0) die("cannot write", path);
    free(w);
    free(colss);
    free(row);

    /* ---- activations + tokens ---- */
    snprintf(path, sizeof path, "%s/acts.safetensors", outdir);
    f = fopen(path, "wb");
    if (!f) die("cannot create", path);
    uint64_t act_bytes = tokens * d_in * esz, tok_bytes = tokens * 4;
    st_entry ae[2] = {
        {"activations", st_dtype, 3, {n_seq, seq_len, d_in}, act_bytes},
        {"tokens", "I32", 2, {n_seq, seq_len}, tok_bytes},
    };
    write_st_header(f, path, ae, 2);
    const uint64_t chunk_tokens = 4096;
    unsigned char *buf = malloc((size_t)(chunk_tokens * d_in * 4));
    if (!buf) {
        fprintf(stderr, "gen_bench_input: out of memory\n");
        return 1;
    }
    for (uint64_t t0k = 0; t0k < tokens; t0k += chunk_tokens) {
        uint64_t nt = tokens - t0k < chunk_tokens ? tokens - t0k : chunk_tokens;
        size_t n = (size_t)(nt * d_in);
        if (esz == 4) {
            float *p = (float *)buf;
            for (size_t i = 0; i < n; i++) p[i] = (float)rng_normal(&r);
        } else {
            uint16_t *p = (uint16_t *)buf;
            if (!strcmp(st_dtype, "F16"))
                for (size_t i = 0; i < n; i++) p[i] = sl_f32_to_f16((float)rng_normal(&r));
            else
                for (size_t i = 0; i < n; i++) p[i] = sl_f32_to_bf16((float)rng_normal(&r));
        }
        xwrite(buf, n * esz, f, path);
    }
    for (uint64_t t0k = 0; t0k < tokens; t0k += chunk_tokens) {
        uint64_t nt = tokens - t0k < chunk_tokens ? tokens - t0k : chunk_tokens;
        int32_t *p = (int32_t *)buf;
        for (uint64_t i = 0; i < nt; i++) p[i] = (int32_t)((rng_next(&r) >> 32) % 50257u);
        xwrite(buf, (size_t)nt * 4, f, path);
    }
    long acts_file = ftell(f);
    if (fclose(f) != 0) die("cannot write", path);
    free(buf);

    printf("gen_bench_input: %s arch, d_in %" PRIu64 ", d_sae %" PRIu64 ", %" PRIu64 " tokens (%" PRIu64
           " x %" PRIu64 "), %s activations\n",
           topk ? "topk" : "standard", d_in, d_sae, tokens, n_seq, seq_len, st_dtype);
    if (topk)
        printf("  k = %" PRIu64 " active features per token\n", active);
    else if (lognormal)
        printf("  b_enc[f] = -z_f, log10 P(feature f fires) ~ N(mu, 0.75), mean %" PRIu64 "/%" PRIu64
               " (about %" PRIu64 " active per token)\n",
               active, d_sae, active);
    else
        printf("  b_enc = -%.6f (P(N(0,1) > z) = %" PRIu64 "/%" PRIu64 "): expected %.2f active per token\n", z,
               active, d_sae, (double)d_sae * 0.5 * erfc(z / sqrt(2.0)));
    printf("  %s/sae/sae_weights.safetensors  %ld bytes (%.1f MiB)\n", outdir, sae_bytes, sae_bytes / 1048576.0);
    printf("  %s/acts.safetensors  %ld bytes (%.1f MiB)\n", outdir, acts_file, acts_file / 1048576.0);
    printf("  generated in %.1f s\n", now_s() - t0);
    return 0;
}
