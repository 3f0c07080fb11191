#include "text.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sl_buf_append(sl_buf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->data, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = 0;
}

void sl_buf_puts(sl_buf *b, const char *s) { sl_buf_append(b, s, strlen(s)); }

void sl_buf_free(sl_buf *b) {
    free(b->data);
    memset(b, 0, sizeof *b);
}

const char *sl_buf_str(sl_buf *b) {
    if (!b->data) sl_buf_append(b, "", 0);
    return b->data ? b->data : "";
}

/* Length of the valid UTF-8 sequence at s (1-4), or 0 if invalid (RFC 3629). */
static size_t utf8_valid_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    uint32_t cp, min;
    if ((c & 0xe0) == 0xc0) len = 2, cp = c & 0x1f, min = 0x80;
    else if ((c & 0xf0) == 0xe0) len = 3, cp = c & 0x0f, min = 0x800;
    else if ((c & 0xf8) == 0xf0) len = 4, cp = c & 0x07, min = 0x10000;
    else return 0;
    if (len > n) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return len;
}

void sl_utf8_sanitize(sl_buf *out, const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, run = 0; /* run: start of the pending valid span */
    while (i < n) {
        size_t len = utf8_valid_len(p + i, n - i);
        if (len) {
            i += len;
            continue;
        }
        sl_buf_append(out, s + run, i - run);
        sl_buf_append(out, "\xEF\xBF\xBD", 3);
        i++;
        run = i;
    }
    sl_buf_append(out, s + run, n - run);
}

/* Shortest %g form that reads back as the same float. */
static void format_f32_ref(float v, char *buf, size_t size) {
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, size, "%.*g", prec, (double)v);
        if (strtof(buf, NULL) == v) return;
    }
}

double sl_f32_to_display_reference(float v) {
    char buf[32];
    format_f32_ref(v, buf, sizeof buf);
    return strtod(buf, NULL);
}

/* The slow way for one precision: the value of %.*g when it reads back as v. */
static int display_at(float v, int prec, double *out) {
    char buf[32];
    snprintf(buf, sizeof buf, "%.*g", prec, (double)v);
    if (strtof(buf, NULL) != v) return 0;
    *out = strtod(buf, NULL);
    return 1;
}

/* Same result as the reference with one snprintf instead of up to four plus
 * strtof/strtod: the 9 correctly rounded digits of v give its 6-8 digit
 * roundings except at an exact tie (where the 9-digit rounding may hide which
 * side v was on: done the slow way), and m * 10^k with m < 2^53 and |k| <= 22
 * is one correctly rounded operation on exact operands, so equals strtod. Its
 * float is strtof's unless it lies exactly between two floats (double
 * rounding: done the slow way). */
double sl_f32_to_display(float v) {
    static const double pow10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                     1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    if (!isfinite(v) || v == 0) return sl_f32_to_display_reference(v);
    char e9[32];
    snprintf(e9, sizeof e9, "%.8e", (double)v); /* [-]d.dddddddde[+-]X */
    const char *p = e9;
    int neg = *p == '-';
    if (neg) p++;
    char dig[9];
    dig[0] = p[0];
    memcpy(dig + 1, p + 2, 8);
    int x10 = atoi(p + 11); /* decimal exponent of the first digit */
    for (int prec = 6; prec <= 9; prec++) {
        uint64_t m = 0;
        for (int i = 0; i < prec; i++) m = m * 10 + (uint64_t)(dig[i] - '0');
        int exp10 = x10;
        if (prec < 9) {
            /* Rounding the dropped digits: above half up, below down, a tie unknown. */
            int cmp = dig[prec] > '5' ? 1 : dig[prec] < '5' ? -1 : 0;
            for (int i = prec + 1; i < 9 && cmp == 0; i++) cmp = dig[i] != '0';
            if (cmp == 0) {
                double d;
                if (display_at(v, prec, &d)) return d;
                continue;
            }
            if (cmp > 0 && ++m == (uint64_t)pow10[prec]) m /= 10, exp10++;
        }
        int k = exp10 - (prec - 1); /* value m * 10^k */
        double d;
        if (k < -22 || k > 22) {
            if (display_at(v, prec, &d)) return d;
            continue;
        }
        d = k >= 0 ? (double)m * pow10[k] : (double)m / pow10[-k];
        if (neg) d = -d;
        float f = (float)d;
        if ((double)f != d) {
            float g = nextafterf(f, d > (double)f ? INFINITY : -INFINITY);
            if (isfinite(g) && d == ((double)f + (double)g) / 2) {
                if (display_at(v, prec, &d)) return d;
                continue;
            }
        }
        if (f == v) return d;
    }
    return sl_f32_to_display_reference(v); /* not reached: 9 digits always read back */
}
