/* text.h: small text buffers and UTF-8 repair, for turning token bytes into SQL text. */
#ifndef SAELITE_TEXT_H
#define SAELITE_TEXT_H

#include <stddef.h>

typedef struct sl_buf {
    char *data;
    size_t len, cap;
    int oom; /* set once an allocation failed; later appends are ignored */
} sl_buf;

void sl_buf_append(sl_buf *b, const char *s, size_t n);
void sl_buf_puts(sl_buf *b, const char *s);
void sl_buf_free(sl_buf *b);
/* NUL-terminates and returns data ("" if empty). */
const char *sl_buf_str(sl_buf *b);

/* Appends s[0..n) to out, replacing every invalid UTF-8 sequence by U+FFFD. */
void sl_utf8_sanitize(sl_buf *out, const char *s, size_t n);

/* The double whose shortest decimal form round-trips the float (0.6f -> 0.6):
 * the value of the shortest %.6g..%.9g that strtof reads back as v. */
double sl_f32_to_display(float v);
/* The same value computed the slow way (up to four snprintf and strtof): the
 * reference the unit test compares sl_f32_to_display with. */
double sl_f32_to_display_reference(float v);

#endif
