/* sample.c: interval and random examples of a feature (see sample.h). */
#include "sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

/* splitmix64: small, fast, and good enough to draw examples. */
static uint64_t next_u64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [0, bound) by multiply-shift (bias below 2^-40 for any count here). */
static uint64_t uniform_below(uint64_t *state, uint64_t bound) {
    return (uint64_t)(((unsigned __int128)next_u64(state) * bound) >> 64);
}

uint64_t sl_sample_seed(int64_t extraction_id, uint32_t feature) {
    unsigned char key[12];
    for (int i = 0; i < 8; i++) key[i] = (unsigned char)((uint64_t)extraction_id >> (8 * i));
    for (int i = 0; i < 4; i++) key[8 + i] = (unsigned char)(feature >> (8 * i));
    return XXH64(key, sizeof key, 0x5341454C);
}

typedef struct pick {
    uint64_t row;
    float act;
} pick;

/* One reservoir (Algorithm R): after `seen` items each is held with equal probability. */
typedef struct reservoir {
    pick *slots; /* [cap] */
    uint32_t cap;
    uint64_t seen;
} reservoir;

static void reservoir_add(reservoir *r, uint64_t *rng, uint64_t row, float act) {
    uint64_t at = r->seen < r->cap ? r->seen : uniform_below(rng, r->seen + 1);
    if (at < r->cap) r->slots[at] = (pick){row, act};
    r->seen++;
}

static uint32_t reservoir_len(const reservoir *r) { return r->seen < r->cap ? (uint32_t)r->seen : r->cap; }

struct sl_sampler {
    sl_sample_opts o;
    double *edges;         /* [intervals + 1]: edges[i] = max * i / intervals, the last = max */
    reservoir *by_interval; /* [intervals] */
    reservoir random;
    pick *storage; /* the slots of every reservoir */
    uint64_t total;
    uint64_t rng_interval, rng_random; /* two streams: changing one option leaves the other's picks */
};

void sl_sampler_free(sl_sampler *s) {
    if (!s) return;
    free(s->edges);
    free(s->by_interval);
    free(s->storage);
    free(s);
}

sl_sampler *sl_sampler_new(const sl_sample_opts *o, float max_value, sl_err *err) {
    if (o->intervals == 0) {
        sl_errf(err, "sampled examples: intervals must be at least 1");
        return NULL;
    }
    sl_sampler *s = calloc(1, sizeof *s);
    size_t n_slots = (size_t)o->intervals * o->per_interval + o->n_random;
    if (s) {
        s->o = *o;
        s->edges = malloc(((size_t)o->intervals + 1) * sizeof *s->edges);
        s->by_interval = calloc(o->intervals, sizeof *s->by_interval);
        s->storage = malloc((n_slots ? n_slots : 1) * sizeof *s->storage);
    }
    if (!s || !s->edges || !s->by_interval || !s->storage) {
        sl_sampler_free(s);
        sl_errf(err, "out of memory");
        return NULL;
    }
    for (uint32_t i = 0; i < o->intervals; i++) {
        s->edges[i] = (double)max_value * i / o->intervals;
        s->by_interval[i] = (reservoir){.slots = s->storage + (size_t)i * o->per_interval, .cap = o->per_interval};
    }
    s->edges[o->intervals] = (double)max_value;
    s->random = (reservoir){.slots = s->storage + (size_t)o->intervals * o->per_interval, .cap = o->n_random};
    s->rng_interval = o->seed;
    s->rng_random = o->seed ^ 0xA5A5A5A5A5A5A5A5ull;
    return s;
}

/* The interval (edges[i], edges[i + 1]] holding v; the same doubles are
 * reported as interval_lo/hi, so the test lo < v <= hi holds exactly. */
static uint32_t interval_of(const sl_sampler *s, double v) {
    const uint32_t n = s->o.intervals;
    double max = s->edges[n];
    uint32_t i = 0;
    if (max > 0 && v > 0) {
        double guess = ceil(v / max * n) - 1;
        i = guess < 0 ? 0 : guess >= n ? n - 1 : (uint32_t)guess;
    }
    while (i > 0 && v <= s->edges[i]) i--;
    while (i + 1 < n && v > s->edges[i + 1]) i++;
    return i;
}

void sl_sampler_add(sl_sampler *s, const uint64_t *rows, const float *vals, size_t n) {
    for (size_t k = 0; k < n; k++) {
        if (s->o.per_interval) reservoir_add(&s->by_interval[interval_of(s, vals[k])], &s->rng_interval, rows[k], vals[k]);
        else s->by_interval[interval_of(s, vals[k])].seen++;
        if (s->o.n_random) reservoir_add(&s->random, &s->rng_random, rows[k], vals[k]);
        s->total++;
    }
}

static int by_act_desc(const void *pa, const void *pb) {
    const sl_sampled *a = pa, *b = pb;
    if (a->act != b->act) return a->act > b->act ? -1 : 1;
    return a->row < b->row ? -1 : a->row > b->row;
}

int sl_sampler_finish(sl_sampler *s, sl_sample *out, sl_err *err) {
    memset(out, 0, sizeof *out);
    uint64_t n = 0;
    for (uint32_t i = 0; i < s->o.intervals; i++) n += reservoir_len(&s->by_interval[i]);
    n += reservoir_len(&s->random);
    out->examples = calloc(n ? n : 1, sizeof *out->examples);
    if (!out->examples) {
        sl_sampler_free(s);
        return sl_errf(err, "out of memory");
    }
    sl_sampled *e = out->examples;
    for (uint32_t i = s->o.intervals; i-- > 0;) {
        const reservoir *r = &s->by_interval[i];
        sl_sampled *first = e;
        for (uint32_t j = 0; j < reservoir_len(r); j++, e++)
            *e = (sl_sampled){.row = r->slots[j].row,
                              .act = r->slots[j].act,
                              .kind = SL_SAMPLE_INTERVAL,
                              .interval = i,
                              .interval_lo = s->edges[i],
                              .interval_hi = s->edges[i + 1],
                              .interval_share = (double)r->seen / (double)s->total};
        qsort(first, (size_t)(e - first), sizeof *e, by_act_desc);
    }
    out->n_interval = (uint32_t)(e - out->examples);
    sl_sampled *first = e;
    for (uint32_t j = 0; j < reservoir_len(&s->random); j++, e++)
        *e = (sl_sampled){.row = s->random.slots[j].row, .act = s->random.slots[j].act, .kind = SL_SAMPLE_RANDOM};
    qsort(first, (size_t)(e - first), sizeof *e, by_act_desc);
    out->n_random = (uint32_t)(e - first);
    sl_sampler_free(s);
    return 0;
}

#define CHUNK 4096

int sl_sample_pick(const sl_findex *idx, uint32_t feature, const sl_sample_opts *o, sl_sample *out, sl_err *err) {
    memset(out, 0, sizeof *out);
    uint64_t *rows = malloc(CHUNK * sizeof *rows);
    float *vals = malloc(CHUNK * sizeof *vals);
    sl_findex_iter it;
    sl_sampler *s = NULL;
    int rc = -1, open = 0;
    if (!rows || !vals) {
        sl_errf(err, "out of memory");
        goto done;
    }
    /* Pass 1: the largest stored value. */
    float max_value = 0;
    int64_t got;
    if (sl_findex_iter_begin(idx, feature, &it, err)) goto done;
    open = 1;
    while ((got = sl_findex_iter_next(&it, rows, vals, CHUNK, err)) > 0)
        for (int64_t k = 0; k < got; k++)
            if (vals[k] > max_value) max_value = vals[k];
    if (got < 0) goto done;
    sl_findex_iter_end(&it);
    open = 0;
    if (max_value <= 0) { /* a dead feature: nothing to draw */
        rc = 0;
        goto done;
    }
    /* Pass 2: intervals and draws. */
    if (!(s = sl_sampler_new(o, max_value, err))) goto done;
    if (sl_findex_iter_begin(idx, feature, &it, err)) goto done;
    open = 1;
    while ((got = sl_findex_iter_next(&it, rows, vals, CHUNK, err)) > 0) sl_sampler_add(s, rows, vals, (size_t)got);
    if (got < 0) goto done;
    rc = sl_sampler_finish(s, out, err);
    s = NULL;
done:
    if (open) sl_findex_iter_end(&it);
    sl_sampler_free(s);
    free(rows);
    free(vals);
    return rc;
}

typedef struct pending {
    uint64_t lo;
    uint32_t example;
} pending;

static int by_lo(const void *pa, const void *pb) {
    const pending *a = pa, *b = pb;
    return a->lo < b->lo ? -1 : a->lo > b->lo;
}

static const sl_tok_record *record_of(const sl_tokfile *tf, uint64_t row) {
    if (!tf) return NULL;
    uint64_t n = tf->header->n_seq * tf->header->seq_len;
    return row < n ? &tf->records[row] : NULL;
}

/* The feature's value in a row (cols ascending), 0 when inactive. */
static float value_in_row(const sl_row *r, uint32_t feature) {
    uint32_t lo = 0, hi = r->nnz;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (r->col[mid] < feature) lo = mid + 1;
        else hi = mid;
    }
    return lo < r->nnz && r->col[lo] == feature ? r->val[lo] : 0.0f;
}

int sl_sample_windows(sl_sample *s, sl_rowstore *rs, const sl_tokfile *tf, uint32_t feature, uint32_t context,
                      sl_err *err) {
    const uint32_t n = s->n_interval + s->n_random, seq_len = sl_rowstore_seq_len(rs);
    if (n == 0) return 0;
    if (seq_len == 0) return sl_errf(err, "sampled examples: the store has no sequence length");
    pending *order = malloc((size_t)n * sizeof *order);
    if (!order) return sl_errf(err, "out of memory");
    /* Bounds first (as the top examples': [pos - context, pos + context] in the
     * sequence, stopping before padding), so windows[] is allocated once. */
    uint64_t total = 0;
    for (uint32_t i = 0; i < n; i++) {
        sl_sampled *e = &s->examples[i];
        uint64_t pos = e->row % seq_len, first = e->row - pos;
        uint64_t lo = first + (pos > context ? pos - context : 0);
        uint64_t hi = first + (pos + context < seq_len - 1 ? pos + context : seq_len - 1);
        const sl_tok_record *rec;
        while (hi > e->row && (rec = record_of(tf, hi)) && rec->token < 0) hi--;
        e->ex = (sl_result_example){.act = e->act,
                                    .position = (uint32_t)pos,
                                    .sequence = e->row / seq_len,
                                    .window_offset = total,
                                    .window_len = (uint32_t)(hi - lo + 1),
                                    .max_index = (uint32_t)(e->row - lo),
                                    .document = SL_NO_DOCUMENT};
        total += hi - lo + 1;
        order[i] = (pending){lo, i};
    }
    free(s->windows);
    s->windows = malloc((size_t)(total ? total : 1) * sizeof *s->windows);
    if (!s->windows) {
        free(order);
        return sl_errf(err, "out of memory");
    }
    s->n_window_tokens = total;
    qsort(order, n, sizeof *order, by_lo);
    for (uint32_t k = 0; k < n; k++) {
        sl_sampled *e = &s->examples[order[k].example];
        sl_window_token *w = s->windows + e->ex.window_offset;
        for (uint32_t t = 0; t < e->ex.window_len; t++) {
            sl_row r;
            if (sl_rowstore_row(rs, order[k].lo + t, &r, err)) {
                free(order);
                return -1;
            }
            w[t].token = r.token;
            w[t].act = t == e->ex.max_index ? e->act : value_in_row(&r, feature);
        }
        /* The example token's document, and the characters the window covers in it. */
        const sl_tok_record *at = record_of(tf, e->row);
        if (!at) continue;
        e->ex.document = at->doc;
        uint32_t cs = UINT32_MAX, ce = 0;
        for (uint32_t t = 0; t < e->ex.window_len; t++) {
            const sl_tok_record *r = record_of(tf, order[k].lo + t);
            if (!r || r->doc != at->doc || r->token < 0 || r->char_start == r->char_end) continue;
            if (r->char_start < cs) cs = r->char_start;
            if (r->char_end > ce) ce = r->char_end;
        }
        e->ex.char_start = cs > ce ? 0 : cs;
        e->ex.char_end = cs > ce ? 0 : ce;
    }
    free(order);
    return 0;
}

void sl_sample_free(sl_sample *s) {
    free(s->examples);
    free(s->windows);
    memset(s, 0, sizeof *s);
}
