/* tokenizer.h: Hugging Face tokenizer.json: decoding ids to bytes, and encoding
 * text to ids for byte-level BPE tokenizers (GPT-2 style) and SentencePiece-style BPE
 * tokenizers (Llama-2, Mistral, Gemma).
 *
 * Decoding maps token ids to the bytes they stand for, token by token, as the
 * decoder would: for byte-level BPE (decoder "ByteLevel", or none with a ByteLevel
 * pre-tokenizer) each vocabulary character is mapped back through the GPT-2
 * byte-to-unicode table; otherwise the decoder's steps (alone or in a Sequence) apply
 * in order: Replace (String pattern) replaces, Metaspace turns its replacement
 * character (U+2581) into a space, ByteFallback turns "<0xAB>" into the byte 0xAB;
 * Fuse and Strip act on a whole text, not on one token, and are skipped (so the
 * space Strip or Metaspace removes at the start of a text is kept here). Added tokens
 * are taken verbatim, except a normalized one under a normalizer, which HF decodes
 * from its normalized form ("FIXME" after Prepend("▁") shows as " FIXME"). A token may
 * hold an incomplete UTF-8 sequence (a multi-byte character split over tokens, or one
 * byte-fallback byte): callers that need text pass the bytes through sl_utf8_sanitize.
 * Decoding works for any tokenizer.json with a model.vocab (BPE, WordPiece, Unigram as
 * saved by HF).
 *
 * Encoding reproduces HF `tokenizers` (Tokenizer.encode(text).ids, without the
 * post-processor: no BOS/EOS is added) for tokenizers with model "BPE" (merges as
 * "a b" strings or [a, b] arrays; ignore_merges; unk_token/fuse_unk; no dropout, no
 * subword prefix/suffix), of two kinds:
 *   - byte-level BPE: normalizer null; pre_tokenizer ByteLevel (GPT-2 regex when
 *     use_regex, add_prefix_space), or a Sequence of Split steps (Regex or String
 *     pattern, behavior Isolated or Removed, invert false) and Digits(individual_digits
 *     true) ending in one ByteLevel (Llama-3 / GPT-4o style);
 *   - SentencePiece-style BPE (no ByteLevel step; the model works on characters):
 *     normalizer null, Prepend, Replace (String pattern), or a Sequence of those
 *     (Llama-2 / Mistral: Sequence[Prepend("▁"), Replace(" ", "▁")]; Gemma:
 *     Replace(" ", "▁")); pre_tokenizer null, Metaspace (any one-character
 *     replacement, prepend_scheme always / first / never, split true / false),
 *     Split (Regex or String pattern, any behavior: Isolated, Removed,
 *     MergedWithPrevious, MergedWithNext, Contiguous; invert), Digits, or a Sequence of
 *     those; byte_fallback: a character not in the vocab becomes the "<0xAB>" tokens
 *     of its UTF-8 bytes when they all exist, else unk_token (fused with fuse_unk),
 *     else it is dropped, all as HF's BPE::merge_word does.
 * Split regexes are Oniguruma patterns in HF; they are compiled here with PCRE2
 * (UTF, UCP, JIT when available), after rewriting the escapes whose meaning differs
 * (\s \S \w \W \b \B \h \H) to Oniguruma's; patterns using constructs that would
 * still differ (POSIX bracket classes, \W or \H inside [...]) are refused.
 * Added tokens (special or not) found literally in the text are matched first,
 * leftmost-longest, honouring single_word, lstrip, rstrip and normalized; with a
 * normalizer, as HF's AddedVocabulary does: tokens with normalized false are matched
 * in the raw text, each stretch between them is normalized on its own (so Prepend
 * adds a "▁" after every such token, as HF does), and tokens with normalized true are
 * matched in the normalized stretch by their own normalized content.
 * A tokenizer that cannot encode (another model type, another normalizer: NFC,
 * Precompiled, Replace with a Regex pattern, ...; another pre-tokenizer, a normalizer
 * with ByteLevel, ...) still loads, so decoding keeps working; encoding then fails
 * with a message naming the file and the reason, e.g. "PATH: encoding unsupported:
 * unsupported normalizer NFC" or "...: model type WordPiece (only BPE)";
 * sl_tokenizer_can_encode gives the same answer right after loading, for callers that
 * want to fail early.
 *
 * Invalid UTF-8 in the text: HF only sees valid Unicode, so each invalid sequence
 * is first replaced by U+FFFD, exactly as Python's
 * bytes.decode("utf-8", errors="replace") does (one U+FFFD per maximal invalid
 * subpart: a truncated but well-begun sequence gives one U+FFFD, a stray byte one
 * each), and the result is encoded.
 *
 * Offsets: start/end are byte offsets into the original text, end exclusive.
 * Byte-level BPE: a token's range is exact at byte level: when a multi-byte character
 * is split over tokens, each token gets only the bytes it holds; the space added by
 * add_prefix_space maps to nothing (a token of only that space has start == end).
 * SentencePiece-style BPE: HF's own offsets (its NormalizedString alignments), in
 * bytes: a "▁" that replaced a space covers that space; a "▁" that Prepend or Metaspace
 * put in front covers the first character of the stretch (so a token of only that
 * "▁" covers that character too, and the next token starts at the same place); each
 * "<0xAB>" token of a byte-fallback character covers the whole character; a text a
 * normalizer removed belongs to no token. Both kinds: the bytes of a U+FFFD that
 * stands for an invalid sequence all map to that sequence's whole range; an added
 * token with lstrip/rstrip covers the whitespace it took; starts and ends never
 * decrease along the encoding and lie within [0, len]. */
#ifndef SAELITE_TOKENIZER_H
#define SAELITE_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

typedef struct sl_tokenizer sl_tokenizer;

sl_tokenizer *sl_tokenizer_load(const char *path, sl_err *err);
void sl_tokenizer_free(sl_tokenizer *tok);

const char *sl_tokenizer_path(const sl_tokenizer *tok);
/* One past the largest id. */
int32_t sl_tokenizer_vocab_size(const sl_tokenizer *tok);
/* Bytes of a token, or NULL when the id is not in the vocabulary. */
const char *sl_tokenizer_token_bytes(const sl_tokenizer *tok, int32_t id, size_t *len);
/* 1 for added tokens marked special (BOS, EOS, pad, ...). */
int sl_tokenizer_is_special(const sl_tokenizer *tok, int32_t id);

/* Token ids and where each token's bytes start and end in the input text. */
typedef struct sl_encoding {
    int32_t *ids;
    uint32_t *start, *end;
    size_t n, cap;
} sl_encoding;
void sl_encoding_free(sl_encoding *e);

/* 0 when sl_tokenizer_encode can work with this tokenizer, else -1 and the reason. */
int sl_tokenizer_can_encode(const sl_tokenizer *tok, sl_err *err);
/* Appends the tokens of text[0..len) to out. Added tokens (special or not) that
 * appear literally in the text are matched first, as HF does; the rest goes
 * through the normalizer, the pre-tokenizer, (byte-level BPE) the byte-to-unicode
 * map, and the BPE merges.
 * Returns 0, or -1 with err set and out as it was on entry. Text must be below
 * 4 GiB. Safe to call from several threads on one tokenizer (the word cache is
 * locked). */
int sl_tokenizer_encode(const sl_tokenizer *tok, const char *text, size_t len, sl_encoding *out,
                        sl_err *err);
/* Id of an added token's content (e.g. "<|endoftext|>"), or -1. */
int32_t sl_tokenizer_added_id(const sl_tokenizer *tok, const char *content);

#endif
