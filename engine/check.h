/* check.h: integrity check of an extraction's store (check_extraction()). */
#ifndef SAELITE_CHECK_H
#define SAELITE_CHECK_H

#include "text.h"

/* Verifies every file of the store: each segment's footer, index, token
 * section and every block (checksums and decoding), the numbering of the
 * segments, results.slr, index.sli (every feature's postings, and its counts
 * against results.slr), tokens.slt and checkpoint.slc when present. Appends
 * one line per problem to report (file: block: problem) and returns how many
 * there were (0: intact). */
int sl_check_store(const char *store_dir, sl_buf *report);

#endif
