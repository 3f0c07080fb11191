#!/usr/bin/env python3
"""test_search.py: token_features and search_examples against independent values.

1. Planted model (tests/fixtures/make_lm_fixtures.py): byte b fires only feature
   b mod 32 with strength s(b). token_features('a') must give exactly feature 1
   with n_on_token = occurrences = the count of 'a' tokens in the documents,
   fraction_of_feature = that count / the count of all tokens = 1 mod 32, and
   mean s('a'); the same by id; BOS (special, never encoded) has occurrences but
   no features.
2. search_examples over the planted run: the (feature, rank) pairs whose window
   bytes contain the substring, from the fixture's own top-example windows.
3. The tiny GPT-2 + SAE on a one-sequence dataset: token_features of a token that
   occurs several times, against the per-token activations of that sequence
   (every feature's rank-1 window covers it) -- the segments against the results
   file's windows.
4. Errors: several tokens (listed), an empty substring, no argument, a text that
   encodes to no token (a tokenizer without 'q') and an empty text.
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "fixtures"))
import harness as h  # noqa: E402
from harness import check, check_equal  # noqa: E402
import make_lm_fixtures as lmfix  # noqa: E402

CFG = h.setup(__doc__)
DB = CFG.db
ROOT = os.path.realpath(os.path.join(HERE, "..", ".."))
TINY = os.path.join(ROOT, "examples", "tiny")
EXP = h.load_expected(os.path.join("..", "lm", "expected.json"))


def planted_tokens():
    """Every dataset token of docs.txt (the documents' encodings; BOS not included)."""
    ids = []
    for doc in lmfix.DOCS:
        ids += [t for t, s in zip(*[lmfix.encode(doc)[i] for i in (0, 2)]) if not s]
    return ids


def test_planted_token_features():
    eid = h.extract(DB, sae=h.fixture("lm", "sae"), model=h.fixture("lm", "model"),
                    tokenizer=h.fixture("lm", "tokenizer.json"), dataset=h.fixture("lm", "docs.txt"),
                    top_k=EXP["top_k"], context=EXP["context"], store=h.tmp_path("store_planted"), progress="off")
    ids = planted_tokens()
    n_a, n_f1 = ids.count(97), sum(1 for t in ids if t % 32 == 1)
    want = [{"feature_id": 1, "n_on_token": n_a, "occurrences": n_a, "fraction_of_occurrences": 1.0,
             "fraction_of_feature": n_a / n_f1, "mean_activation": lmfix.strength(97)}]
    check(n_a > 3 and n_f1 > n_a, "planted: 'a' occurs %d times, feature 1 fires %d times" % (n_a, n_f1))
    got = h.query(DB, "SELECT * FROM token_features('a', %d);" % eid)
    check_equal(got, want, "token_features('a'): feature 1 only, with the counts of the documents")
    check_equal(h.query(DB, "SELECT * FROM token_features(97, %d);" % eid), want, "token_features(97): the same")
    rows = h.query(DB, "SELECT count(*) AS n FROM token_features(%d, %d);" % (EXP["bos"], eid))
    check_equal(rows, [{"n": 0}], "BOS (special, not encoded): no features")
    h.expect_error(DB, "SELECT * FROM token_features('ab', %d);" % eid, "'ab' is 2 tokens", "'a' (97)", "'b' (98)")
    h.expect_error(DB, "SELECT * FROM token_features;", "the argument token is missing")
    check_equal(h.query(DB, "SELECT count(*) AS n FROM token_features(-5, %d);" % eid), [{"n": 0}],
                "a token id that does not exist: no rows")
    return eid


def test_no_token():
    """A text the tokenizer encodes to no token at all: a copy of the planted tokenizer
    without 'q' in its vocabulary (no unk token, so HF drops the character)."""
    with open(h.fixture("lm", "tokenizer.json"), encoding="utf-8") as f:
        tok = json.load(f)
    del tok["model"]["vocab"]["q"]
    path = h.tmp_path("tokenizer_no_q.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(tok, f)
    eid = h.extract(DB, sae=h.fixture("lm", "sae"), model=h.fixture("lm", "model"), tokenizer=path,
                    dataset=h.fixture("lm", "docs.txt"), store=h.tmp_path("store_no_q"), progress="off")
    h.expect_error(DB, "SELECT * FROM token_features('qq', %d);" % eid, "'qq' encodes to no token",
                   "tokenizer_no_q.json")
    h.expect_error(DB, "SELECT * FROM token_features('', %d);" % eid, "the text is empty")


def window_bytes(ids):
    return b"".join(b"<|endoftext|>" if t == EXP["bos"] else bytes([t]) for t in ids)


def test_planted_search(eid):
    tops = EXP["txt"]["top_examples"]
    for needle in ("fox", "0", "; ", "<|endoftext|>n", "nt m"):
        want = sorted((e["feature_id"], e["rank"]) for e in tops if needle.encode() in window_bytes(e["token_ids"]))
        rows = h.query(DB, "SELECT feature_id, rank, activation, context FROM search_examples(%s, %d);"
                       % (h.sql_str(needle), eid))
        got = [(r["feature_id"], r["rank"]) for r in rows]
        check(got == want and want, "search_examples(%r): %d examples, in feature then rank order" % (needle, len(want)),
              "got %r, expected %r" % (got[:8], want[:8]))
        by_key = {(e["feature_id"], e["rank"]): e for e in tops}
        bad = [r for r in rows if not h.same_f32(r["activation"], by_key[(r["feature_id"], r["rank"])]["activation"])
               or "«" not in r["context"]]
        check(not bad, "search_examples(%r): activations and marked contexts" % needle, repr(bad[:2]))
    check_equal(h.query(DB, "SELECT count(*) AS n FROM search_examples('no such text', %d);" % eid), [{"n": 0}],
                "search_examples: no match, no rows")
    h.expect_error(DB, "SELECT * FROM search_examples('', %d);" % eid, "substring is empty")
    h.expect_error(DB, "SELECT * FROM search_examples;", "the argument substring is missing")


def test_tiny_token_features():
    doc = ("x = f(a) + f(b) * g(c)\nif f(x) > g(y): print(f(z))\n"
           "for i in range(10): total += f(i) - g(i)\n")
    ds = h.tmp_path("tiny.jsonl")
    with open(ds, "w") as f:
        f.write(json.dumps({"text": doc}) + "\n")
    eid = h.extract(DB, sae=os.path.join(TINY, "sae"), model=os.path.join(TINY, "model"),
                    tokenizer=os.path.join(TINY, "tokenizer.json"), dataset=ds, top_k=1, context=1024,
                    store=h.tmp_path("store_tiny"), progress="off")
    acts, tokens = {}, None
    for r in h.query(DB, "SELECT * FROM top_examples WHERE extraction_id = %d;" % eid):
        if r.get("kind", "top") != "top":
            continue
        tokens = h.as_json(r["tokens"])
        acts[r["feature_id"]] = h.as_json(r["activations"])
    paren = h.query(DB, "SELECT DISTINCT token_id FROM encode_text('(', %d);" % eid)
    positions = [i for i, t in enumerate(tokens) if t == "("]
    check(len(positions) >= 8 and len(paren) == 1, "tiny: '(' occurs %d times in the sequence" % len(positions))
    want = {}
    for f, a in acts.items():
        on = [a[i] for i in positions if a[i] > 0]
        if on:
            want[f] = (len(on), sum(on) / len(on))
    n_active = {r["feature_id"]: r["n_active"] for r in h.query(DB, "SELECT feature_id, n_active FROM features "
                                                                     "WHERE extraction_id = %d;" % eid)}
    got = h.query(DB, "SELECT * FROM token_features('(', %d);" % eid)
    check_equal(sorted(r["feature_id"] for r in got), sorted(want), "tiny '(': the features active on it")
    bad = [r for r in got if r["feature_id"] in want and not (
        r["n_on_token"] == want[r["feature_id"]][0] and r["occurrences"] == len(positions)
        and h.close(r["fraction_of_occurrences"], r["n_on_token"] / len(positions), 1e-12)
        and h.close(r["fraction_of_feature"], r["n_on_token"] / n_active[r["feature_id"]], 1e-12)
        and h.close(r["mean_activation"], want[r["feature_id"]][1], 2e-3))]
    check(got and not bad, "tiny '(': %d features' counts, fractions and means equal the windows'" % len(got),
          repr(bad[:3]))


if __name__ == "__main__":
    state = {}

    def token_features():
        state["eid"] = test_planted_token_features()

    def search():
        test_planted_search(state.get("eid", 1))

    token_features.__name__ = "test_planted_token_features"
    search.__name__ = "test_planted_search"
    h.run_tests(token_features, search, test_tiny_token_features, test_no_token)
