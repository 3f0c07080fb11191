/* tokenizer_variant.h: builds a tokenizer.json variant of tests/data/tokenizer (variants.json),
 * shared by the tokenizer unit test and its fuzz harness so both test the same tokenizers.
 *
 * A variant may replace the pre_tokenizer, drop every vocab entry and merge holding one of the
 * characters of drop_chars (to exercise unknown bytes), and override fields of the model. */
#ifndef SAELITE_TEST_TOKENIZER_VARIANT_H
#define SAELITE_TEST_TOKENIZER_VARIANT_H

#include <jansson.h>
#include <string.h>

/* Applies variant v to root (a loaded bytelevel.json, modified in place). Returns drop_chars
 * or NULL: a variant that drops characters cannot round-trip every text. */
static const char *apply_tokenizer_variant(json_t *root, json_t *v) {
    json_t *model = json_object_get(root, "model");
    json_t *pre = json_object_get(v, "pre_tokenizer");
    if (pre) json_object_set(root, "pre_tokenizer", pre);
    const char *drop = json_string_value(json_object_get(v, "drop_chars"));
    if (drop) {
        json_t *vocab = json_object_get(model, "vocab"), *merges = json_array(), *m;
        const char *key;
        void *tmp;
        json_t *val;
        for (const char *c = drop; *c;) {
            char ch[5] = {0};
            unsigned char c0 = (unsigned char)*c;
            size_t l = c0 < 0x80 ? 1 : c0 < 0xE0 ? 2 : c0 < 0xF0 ? 3 : 4;
            memcpy(ch, c, l);
            c += l;
            json_object_foreach_safe(vocab, tmp, key, val) {
                if (strstr(key, ch)) json_object_del(vocab, key);
            }
            size_t i;
            json_array_clear(merges);
            json_array_foreach(json_object_get(model, "merges"), i, m) {
                if (!strstr(json_string_value(m), ch)) json_array_append(merges, m);
            }
            json_object_set_new(model, "merges", json_deep_copy(merges));
        }
        json_decref(merges);
    }
    if (json_object_get(v, "model")) json_object_update(model, json_object_get(v, "model"));
    return drop;
}

#endif
