#!/usr/bin/env python3
"""Regenerates tests/data/tokenizer/: small byte-level BPE tokenizers trained with
Hugging Face `tokenizers` (pip install tokenizers) on this repository's own text,
a test corpus, and the ids HF gives for it, which test_tokenizer.c must reproduce.

    python3 tools/reference/make_tokenizer_fixture.py [OUT_DIR]

Files written (OUT_DIR defaults to tests/data/tokenizer):
  bytelevel.json     ByteLevel(add_prefix_space=false, use_regex=true), GPT-2 regex,
                     merges saved in the legacy "a b" string form
  split_regex.json   Sequence[Split(GPT-4 style regex, Isolated), ByteLevel(use_regex=false)],
                     ignore_merges=true (Llama-3 style), merges as [a, b] arrays,
                     extra added tokens (special and single_word non-special)
  split_o200k.json   Sequence[Split(GPT-4o style regex), ByteLevel(use_regex=false)]
  prefix_space.json  ByteLevel(add_prefix_space=true), added tokens with lstrip/rstrip
  wordpiece.json     a tiny WordPiece tokenizer: loads for decoding, cannot encode
  nfc.json           bytelevel.json with an NFC normalizer: loads, cannot encode
  variants.json      pre-tokenizer / unk variants of bytelevel.json and HF's ids for them
  corpus.txt         UTF-8 test text
  corpus_invalid.bin byte strings with invalid UTF-8
  expected.json      {"tokenizers": [names], "cases": [[offset, len], ...] into corpus.txt,
                      "invalid_cases": [[offset, len], ...] into corpus_invalid.bin,
                      "ids": {name: [[ids of case 0], ...]},
                      "invalid_ids": {name: [[ids], ...]}}   (HF on the bytes decoded
                      with errors='replace'; no post-processor)
The training text depends on the repository's state, so a rerun after docs/, engine/
or ext/ changed gives different (equally valid) fixtures.
"""
import json
import os
import random
import sys

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests", "data", "tokenizer")

GPT4_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
              r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# GPT-4o (o200k) style: case classes, marks, contractions attached to words.
O200K_REGEX = "|".join([
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"\p{N}{1,3}", r" ?[^\s\p{L}\p{N}]+[\r\n/]*", r"\s*[\r\n]+", r"\s+(?!\S)", r"\s+"])


def training_text():
    texts = []
    for sub in ("docs", "engine", "ext"):
        d = os.path.join(ROOT, sub)
        for name in sorted(os.listdir(d)):
            if name.endswith((".md", ".c", ".h")) and name != "tokenizer.c":
                with open(os.path.join(d, name), encoding="utf-8", errors="replace") as f:
                    texts.append(f.read())
    return texts


def train(pre, vocab_size, special, texts):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return tok


def save(tok, name, edit=None):
    """Saves tok as name.json after edit(dict); returns HF's tokenizer reloaded from that file."""
    d = json.loads(tok.to_str())
    if edit:
        edit(d)
    path = os.path.join(OUT, name + ".json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(d, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    return Tokenizer.from_file(path)


def legacy_merges(d):
    d["model"]["merges"] = [m if isinstance(m, str) else " ".join(m) for m in d["model"]["merges"]]


def array_merges(d):
    d["model"]["merges"] = [m.split(" ") if isinstance(m, str) else m for m in d["model"]["merges"]]


CORPUS = r"""The quick brown fox jumps over the lazy dog.
Hello, world! This is a test of the tokenizer; it should match Hugging Face exactly.
don't won't I'LL we've They'RE she'd it's He'S O'Neill rock'n'roll 'quoted'
Café, naïve, façade, Straße, ÆØÅ æøå, Ĳssel, ﬁne ligature, Ǆ digraph, ſ long s, Kelvin K.
Ж Привет, мир! Съешь же ещё этих мягких французских булок.
中文分词测试：我们今天去北京。日本語のテキスト、カタカナ。한국어 텍스트입니다.
Ελληνικά: Καλημέρα κόσμε. العربية: مرحبا بالعالم. עברית: שלום עולם.
हिन्दी पाठ, ไทยภาษา, ქართული, Հայերեն.
Emoji: 😀 😃 🎉 👍🏽 family 👨‍👩‍👧‍👦 flags 🇫🇷🇯🇵🇺🇸 keycap 1️⃣ heart ❤️ rainbow 🏳️‍🌈
Numbers: 0 7 42 1234 12345 3.14159 1,000,000 2024-01-31 0xDEADBEEF 1e-9 123456789012345678901234567890
Mixed: abc123def ４５６ ½ ² Ⅻ ٣٤٥ ๓๔ 中文English混合text日本語123
	Tab	separated	values	
Trailing spaces here   
   Leading spaces here
Many     inner      spaces       and	tabs		mixed 	 in.



Three blank lines above; CRLF line next.
Windows line ending here
Special <|endoftext|> token in the middle, and at the end <|endoftext|>
<|endoftext|>at the start and twice <|endoftext|><|endoftext|> in a row, <|endoftext| not quite, <|endoftext|>>.
Added tokens: <mask> masked, before   <mask> after, TODO: fix, FIXME  now, xTODO TODOx TODO_y (TODO) FIXMEFIXME.
#include <stdio.h>
int main(int argc, char **argv) {
    for (int i = 0; i < argc; i++) printf("%s\n", argv[i]);
    return 0; /* done */
}
def fib(n):
    if n < 2:
        return n
    return fib(n - 1) + fib(n - 2)  # recursion


class Foo(Bar):
	def __init__(self, x=1, *args, **kwargs):
		super().__init__()
		self.x = x ** 2 // 3 != 4 and x >= 5 or not x <= 6
SELECT sae_feature, max(act) FROM acts WHERE act > 0.5 GROUP BY 1 ORDER BY 2 DESC LIMIT 10;
URL https://huggingface.co/docs/tokenizers?x=1&y=2#frag e-mail a.b@c.org path /usr/local/lib/
Punctuation!!! ??? ... --- ___ *** ((())) [[]] {{}} <<>> ~~~ ``` ''' \"\"\" \\ // || && ;;
Mixedscriptsnospaces:HelloМирΚόσμος世界مرحبا🙂end
aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis
ends with spaces and newline   
x
"""


def corpus_bytes():
    text = CORPUS.replace("Windows line ending here\n", "Windows line ending here\r\n")
    text += ("Unicode spaces: a\u00a0b\u3000c\u2009d\u2028e\u2029f\u0085g\u180eh\u202fi\u205fj"
             "\u1680k\u000bl\u000cm \u00a0 n\n")
    text += ("Zero width: a\u200bb c\u200cd e\u200df g\ufeffh soft\u00adhyphen combining "
             "e\u0301 n\u0303\u0303 a\u0308\u0301 \u0301 lone mark\n")
    # where Oniguruma / Rust regex and PCRE2 differ by default (U+180E is not \s; \w
    # takes marks and Other_Alphabetic) and single_word / lstrip / rstrip around them
    text += ("Edge: \u180e's x\u180e y  TODO\u00bd e\u0301TODO \u203fTODO TODO\u200d \u24b6TODO "
             "\u00bdTODO <mask>\u3000<mask> FIXME\u3000\u3000x \u2028<mask>\u2029\n")
    # a line of only spaces, one of only tabs, one with trailing "\n\n\n" inside a chunk
    text += "        \n\t\t\t\n \n\n\nlast line without newline   "
    return text.encode("utf-8")


INVALID = [
    b"plain ascii",
    b"lone continuation \x80 byte",
    b"truncated \xe4\xb8 three-byte",
    b"truncated at end \xf0\x9f\x98",
    b"overlong \xc0\xaf and \xe0\x80\xaf",
    b"surrogate \xed\xa0\x80 half",
    b"too big \xf4\x90\x80\x80 and \xf5\x80",
    b"\xff\xfe\xfd bad bytes",
    b"mixed \xe4\xb8\xad\xe6 \xe6\x96\x87 <|endoftext|>\xff<|endoftext|>",
    b"\xc3",
    b"caf\xe9 latin-1 \xe9t\xe9",
    b"\xe2\x82\xac\xe2\x82 euro and half",
]


def seq(*steps):
    return {"type": "Sequence", "pretokenizers": list(steps)}


def split(pat, behavior="Isolated", kind="Regex"):
    return {"type": "Split", "pattern": {kind: pat}, "behavior": behavior, "invert": False}


def byte_level(prefix=False, regex=False):
    return {"type": "ByteLevel", "add_prefix_space": prefix, "trim_offsets": True, "use_regex": regex}


# Variants of bytelevel.json checked on VARIANT_CASES: other pre-tokenizer shapes and
# Oniguruma escapes, and a model without some byte characters (unk_token, fuse_unk).
VARIANTS = [
    ("removed_ws", {"pre_tokenizer": seq(split(r"\s+", "Removed"), byte_level())}),
    ("string_split", {"pre_tokenizer": seq(split(" ", "Isolated", "String"), byte_level())}),
    ("word_boundary", {"pre_tokenizer": seq(split(r"\b\w+\b|\W"), byte_level())}),
    ("hex_escape", {"pre_tokenizer": seq(split(r"\h+|\H"), byte_level())}),
    ("two_splits", {"pre_tokenizer": seq(split(r"\p{N}{1,3}"), split(r"[^\r\n\p{L}\p{N}]?\p{L}+"), byte_level())}),
    ("prefix_per_piece", {"pre_tokenizer": seq(split(r"\s+|\S+"), byte_level(prefix=True))}),
    ("split_then_gpt2", {"pre_tokenizer": seq(split(r"\n"), byte_level(regex=True))}),
    ("empty_matches", {"pre_tokenizer": seq(split(r"x*"), byte_level())}),
    ("lookaround", {"pre_tokenizer": seq(split(r"(?<=[a-z])(?=[A-Z])|\s"), byte_level())}),
    ("unk_fuse", {"drop_chars": "qzÃ", "model": {"unk_token": "<|endoftext|>", "fuse_unk": True}}),
    ("unk_nofuse", {"drop_chars": "qzÃ", "model": {"unk_token": "<|endoftext|>", "fuse_unk": False}}),
    ("no_unk", {"drop_chars": "qzÃ", "model": {"unk_token": None}}),
]
VARIANT_PIECES = ["a", "the", " the", "The", "camelCase", "ABCdef", "0x1F", "quiz", "zzz", "é", "e\u0301",
                  "<|endoftext|>", " ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "\u180e", "'s", "1",
                  "1234", "\u00bd", "\u4e2d", "\U0001F600", "(", ";", "_", "x", "xx", "\u24b6", "\u203f"]


def apply_variant(base, v):
    d = json.loads(json.dumps(base))
    if "pre_tokenizer" in v:
        d["pre_tokenizer"] = v["pre_tokenizer"]
    drop = set(v.get("drop_chars", ""))
    if drop:
        d["model"]["vocab"] = {k: i for k, i in d["model"]["vocab"].items() if not set(k) & drop}
        d["model"]["merges"] = [m for m in d["model"]["merges"] if not set(m) & drop]
    d["model"].update(v.get("model", {}))
    return d


def variant_cases():
    rng = random.Random(5)
    out = ["Quiz: puzzle the camelCase ABCdef\n\n  0x1F \u00e9t\u00e9 zzz", "xxaxx", "", " ", "q"]
    while len(out) < 40:
        out.append("".join(rng.choice(VARIANT_PIECES) for _ in range(rng.randint(1, 25))))
    return out


def cases(data):
    """[offset, len] of: every line (without its newline), every chunk of 6 lines
    (with newlines), and the whole text."""
    out, lines, off = [], data.split(b"\n"), 0
    starts = []
    for line in lines:
        starts.append(off)
        out.append([off, len(line)])
        off += len(line) + 1
    for i in range(0, len(lines), 6):
        end = starts[i + 6] if i + 6 < len(lines) else len(data)
        out.append([starts[i], end - starts[i]])
    out.append([0, len(data)])
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    texts = training_text()
    eot = ["<|endoftext|>"]
    toks = {}

    t = train(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True), 1500, eot, texts)
    toks["bytelevel"] = save(t, "bytelevel", legacy_merges)

    split = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(GPT4_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    t = train(split, 1000, eot + ["<|fim_middle|>"], texts)
    t.add_tokens([AddedToken("TODO", single_word=True, normalized=True, special=False)])

    def edit_split(d):
        d["model"]["ignore_merges"] = True
        array_merges(d)
    toks["split_regex"] = save(t, "split_regex", edit_split)

    split = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(O200K_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    t = train(split, 800, eot, texts)
    toks["split_o200k"] = save(t, "split_o200k", legacy_merges)

    t = train(pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True), 1000, eot, texts)
    t.add_special_tokens([AddedToken("<mask>", lstrip=True, normalized=False, special=True)])
    t.add_tokens([AddedToken("FIXME", rstrip=True, normalized=True, special=False)])
    toks["prefix_space"] = save(t, "prefix_space", legacy_merges)

    # Decode-only fixtures: a WordPiece model, and a BPE with a normalizer we do not implement.
    wp = {"version": "1.0", "truncation": None, "padding": None,
          "added_tokens": [{"id": 0, "content": "[UNK]", "single_word": False, "lstrip": False,
                            "rstrip": False, "normalized": False, "special": True}],
          "normalizer": None, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None,
          "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
          "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                    "max_input_chars_per_word": 100,
                    "vocab": {"[UNK]": 0, "hello": 1, "world": 2, "##s": 3}}}
    with open(os.path.join(OUT, "wordpiece.json"), "w", encoding="utf-8") as f:
        json.dump(wp, f, indent=1)
        f.write("\n")
    with open(os.path.join(OUT, "bytelevel.json"), encoding="utf-8") as f:
        d = json.load(f)
    d["normalizer"] = {"type": "NFC"}
    d["model"]["vocab"] = {k: v for k, v in d["model"]["vocab"].items() if v < 300}
    d["model"]["merges"] = [m for m in d["model"]["merges"]
                            if all(p in d["model"]["vocab"] for p in m.split(" ") + [m.replace(" ", "")])]
    with open(os.path.join(OUT, "nfc.json"), "w", encoding="utf-8") as f:
        json.dump(d, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")

    data = corpus_bytes()
    with open(os.path.join(OUT, "corpus.txt"), "wb") as f:
        f.write(data)
    inv = b"".join(INVALID)
    inv_cases, off = [], 0
    for s in INVALID:
        inv_cases.append([off, len(s)])
        off += len(s)
    with open(os.path.join(OUT, "corpus_invalid.bin"), "wb") as f:
        f.write(inv)

    cs = cases(data)
    names = list(toks)
    exp = {"tokenizers": names, "cases": cs, "invalid_cases": inv_cases, "ids": {}, "invalid_ids": {}}
    for name, tok in toks.items():
        assert tok.post_processor is None
        exp["ids"][name] = [tok.encode(data[o:o + n].decode("utf-8")).ids for o, n in cs]
        exp["invalid_ids"][name] = [tok.encode(inv[o:o + n].decode("utf-8", errors="replace")).ids
                                    for o, n in inv_cases]
    with open(os.path.join(OUT, "expected.json"), "w", encoding="utf-8") as f:
        f.write("{\n")
        f.write('"tokenizers": %s,\n' % json.dumps(names))
        f.write('"cases": %s,\n' % json.dumps(cs, separators=(",", ":")))
        f.write('"invalid_cases": %s,\n' % json.dumps(inv_cases, separators=(",", ":")))
        for key in ("ids", "invalid_ids"):
            f.write('"%s": {\n' % key)
            for j, name in enumerate(names):
                f.write('"%s": [\n' % name)
                rows = exp[key][name]
                f.write(",\n".join(json.dumps(r, separators=(",", ":")) for r in rows))
                f.write("\n]%s\n" % ("," if j + 1 < len(names) else ""))
            f.write("}%s\n" % ("," if key == "ids" else ""))
        f.write("}\n")
    # variants.json: {"cases": [text, ...], "variants": [{"name", "pre_tokenizer"?, "model"?
    # (fields to override), "drop_chars"? (vocab entries and merges holding one of these
    # characters are removed), "ids": [[ids of case 0], ...]}]}, applied to bytelevel.json
    with open(os.path.join(OUT, "bytelevel.json"), encoding="utf-8") as f:
        base = json.load(f)
    vcases = variant_cases()
    vout = {"cases": vcases, "variants": []}
    for name, v in VARIANTS:
        tok = Tokenizer.from_str(json.dumps(apply_variant(base, v)))
        entry = {"name": name}
        entry.update(v)
        entry["ids"] = [tok.encode(t).ids for t in vcases]
        vout["variants"].append(entry)
    with open(os.path.join(OUT, "variants.json"), "w", encoding="utf-8") as f:
        f.write('{"cases": %s,\n"variants": [\n' % json.dumps(vcases, ensure_ascii=False))
        f.write(",\n".join(json.dumps(e, ensure_ascii=False, separators=(",", ":")) for e in vout["variants"]))
        f.write("\n]}\n")

    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print("wrote %s (%d files, %d bytes)" % (OUT, len(os.listdir(OUT)), total))


if __name__ == "__main__":
    main()
