/* progress.h: the live progress bar an extraction draws on stderr. */
#ifndef SAELITE_PROGRESS_H
#define SAELITE_PROGRESS_H

#include <stdio.h>

#include "extract.h"

/* Redraws one line: bar, percent, tokens done/total, sequences, tokens/s, ETA.
 * `label` names the run; `device` the backend (e.g. "cpu"), followed by the
 * backend's live status in brackets when it has one (GPU memory in use). */
void sl_progress_draw(FILE *out, const char *label, const char *device, const sl_extract_progress *p);
/* Ends the line after the last draw. */
void sl_progress_end(FILE *out);

#endif
