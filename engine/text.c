#include "text.h"

#include <stdint.h>
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
