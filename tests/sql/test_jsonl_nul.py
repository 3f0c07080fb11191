#!/usr/bin/env python3
"""test_jsonl_nul.py: a JSON-lines document holding "\\u0000" is read, NUL and all.

A .jsonl line such as {"text": "ab\\u0000cd"} is valid JSON; its text has a NUL
character, which must reach the tokenizer like any other (byte-level BPE maps the
byte 0 to the vocabulary character U+0100), not end the text or fail the run.

The bundled tiny GPT-2, its top-k SAE and tokenizer (examples/tiny) extract a
.jsonl dataset of four documents, three of them with NULs. The stored tokens (the
`activations` table, every non-special position of the one sequence: top-k fires
on every token) must be, position by position, what an independent encoder gives:
a pure-Python GPT-2 byte-level BPE written here (the GPT-2 pre-tokenizer regex for
ASCII text, bytes_to_unicode, the merges of tokenizer.json by rank) — the Python
`tokenizers` library is not installed here — packed as documented (BOS first,
documents separated by BOS). By hand: the NUL byte is vocabulary entry U+0100.
The NUL tokens' text is the byte 0 (hex 00), and the windows of top_examples show
it ("\\u0000" in the tokens JSON).

The same documents as raw lines of a .txt file (a line may hold a NUL byte too)
give the same tokens, and no crash; check_extraction says 'ok' for both runs.
"""
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "fixtures"))
import harness as h  # noqa: E402
from make_fixtures import bytes_to_unicode  # noqa: E402
from harness import check, check_equal  # noqa: E402

CFG = h.setup(__doc__)
DB = CFG.db
ROOT = os.path.realpath(os.path.join(HERE, "..", ".."))
TINY = os.path.join(ROOT, "examples", "tiny")

DOCS = ["plain words here", "ab\u0000cd", "\u0000", "x\u0000\u0000 y \u0000z"]


# -------------------------------------------------------------------------------------
# An independent GPT-2 byte-level BPE encoder (ASCII text)
# -------------------------------------------------------------------------------------
# GPT-2's pattern, 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+,
# spelled for ASCII text (letters, digits, the rest; NUL is neither space nor letter)
PRE = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+")


class Reference:
    def __init__(self, path):
        with open(path, encoding="utf-8") as f:
            t = json.load(f)
        pre, model = t["pre_tokenizer"], t["model"]
        assert t["normalizer"] is None and model["type"] == "BPE", "the reference covers plain byte-level BPE"
        assert pre["type"] == "ByteLevel" and pre["use_regex"] and not pre["add_prefix_space"]
        self.vocab = model["vocab"]
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.b2u = bytes_to_unicode()
        self.added = [a["content"] for a in t["added_tokens"]]

    def bpe(self, word):
        parts = list(word)
        while len(parts) > 1:
            pairs = [(self.ranks.get((a, b), None), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            pairs = [p for p in pairs if p[0] is not None]
            if not pairs:
                break
            rank, i = min(pairs)
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        return [self.vocab[p] for p in parts]

    def encode(self, text):
        assert all(ord(c) < 128 for c in text), "the pre-tokenizer regex above is for ASCII text"
        assert not any(a in text for a in self.added)
        ids = []
        for m in PRE.finditer(text):
            ids += self.bpe("".join(self.b2u[b] for b in m.group(0).encode("utf-8")))
        return ids


REF = Reference(os.path.join(TINY, "tokenizer.json"))
NUL_ID = REF.vocab["\u0100"]  # by hand: bytes_to_unicode maps byte 0 to U+0100
BOS = 0  # examples/tiny/model/config.json: bos_token_id 0 (<|endoftext|>)


def expected_rows():
    """(position, token_id, document) of every non-special token: one sequence of 128
    (the SAE's context_size) starting with BOS, documents separated by BOS."""
    rows, pos = [], 1  # position 0: BOS
    for doc, text in enumerate(DOCS):
        if doc:
            pos += 1  # the separator
        for t in REF.encode(text):
            rows.append((pos, t, doc))
            pos += 1
    assert pos <= 128
    return rows


def opts(label, dataset):
    return {"sae": os.path.join(TINY, "sae"), "model": os.path.join(TINY, "model"),
            "tokenizer": os.path.join(TINY, "tokenizer.json"), "dataset": dataset,
            "store": h.tmp_path("store_" + label), "progress": "off"}


def stored_rows(eid):
    rows = h.query(DB, "SELECT position, token_id, document, hex(token) AS hex, count(*) AS n FROM activations "
                       "WHERE extraction_id = %d AND sequence_id = 0 GROUP BY position ORDER BY position;" % eid)
    return rows


def check_run(label, eid):
    row = h.extraction_row(DB, eid)
    check_equal(row["status"], "done", "%s: the run is done" % label)
    want = expected_rows()
    check_equal((row["sequences_total"], row["tokens_total"]), (1, len(want) + len(DOCS)),
                "%s: one sequence of the documents' tokens, BOS and separators" % label)
    rows = stored_rows(eid)
    got = [(r["position"], r["token_id"], r["document"]) for r in rows]
    check_equal(got, want, "%s: every stored token is the independent encoding's, at its position" % label)
    for doc, text in enumerate(DOCS):
        ids = [t for _, t, d in got if d == doc]
        check_equal(ids, REF.encode(text), "%s: document %d %r" % (label, doc, text))
    nul = [r for r in rows if r["token_id"] == NUL_ID]
    check_equal(len(nul), sum(d.count("\u0000") for d in DOCS), "%s: one U+0100 token per NUL" % label)
    check(all(r["hex"] == "00" for r in nul), "%s: a NUL token's text is the byte 0" % label,
          repr([r["hex"] for r in nul]))
    check(all(r["n"] == 24 for r in rows), "%s: top-k (k 24) fires on every token" % label)
    # the windows of the top examples show the NUL: "\u0000" in the tokens JSON
    tops = h.query(DB, "SELECT tokens FROM top_examples WHERE extraction_id = %d AND kind = 'top';" % eid)
    with_nul = [r for r in tops if "\u0000" in (h.as_json(r["tokens"]) or [])]
    check(len(with_nul) > 0, "%s: top_examples windows hold the NUL token" % label)
    check_equal(h.scalar(DB, "SELECT check_extraction(%d) AS c;" % eid), "ok", "%s: check_extraction" % label)


def test_reference():
    check_equal(REF.encode("\u0000"), [NUL_ID], "reference: a lone NUL is the token U+0100 (id %d)" % NUL_ID)
    check_equal(REF.encode("ab\u0000cd")[len(REF.encode("ab"))], NUL_ID,
                "reference: in 'ab\\u0000cd' the NUL is its own token")


def test_jsonl():
    path = h.tmp_path("nul.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for d in DOCS:
            f.write(json.dumps({"text": d}) + "\n")  # json.dumps writes NUL as \u0000
    with open(path, encoding="utf-8") as f:
        check("\\u0000" in f.read(), "the .jsonl file spells the NULs \\u0000")
    check_run("jsonl", h.extract(DB, **opts("jsonl", path)))


def test_txt():
    path = h.tmp_path("nul.txt")
    with open(path, "wb") as f:
        f.write(b"".join(d.encode("utf-8") + b"\n" for d in DOCS))  # raw NUL bytes in the lines
    check_run("txt", h.extract(DB, **opts("txt", path)))


h.run_tests(test_reference, test_jsonl, test_txt)
