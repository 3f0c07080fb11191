#!/usr/bin/env python3
"""test_planted.py: extraction of the planted dataset, checked row by row.

The planted SAE is the identity and feature j fires exactly on token j with a known
strength (feature 15 is dead), so every row of feature_stats, features and
top_examples is known in advance (planted/expected*.json, computed in Python by
tests/fixtures/make_fixtures.py). Also: F16/BF16 activations and I64 tokens, batch
sizes 1 and 7 giving identical results, no tokenizer, and which extraction the tables
read by default.
"""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from harness import check, check_equal  # noqa: E402

CFG = h.setup(__doc__)
DB = CFG.db
EXP = h.load_expected("expected.json")
IDS = {}  # label -> extraction id
TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")


def run(label, acts="acts.safetensors", tokenizer=True, **more):
    store = h.tmp_path("store_" + label)
    IDS[label] = h.extract(DB, **h.planted_opts(store, acts, tokenizer, **more))
    print("extraction %s -> id %d" % (label, IDS[label]))
    return IDS[label]


def check_extractions_row(label, exp, acts, tokenizer=True):
    """The extractions row of a finished planted run."""
    eid = IDS[label]
    row = h.extraction_row(DB, eid)
    if not check(row is not None, "%s: extractions row %d exists" % (label, eid)):
        return
    want = {"status": "done", "d_in": 16, "d_sae": 16, "seq_len": 24,
            "sequences_total": exp["n_seq"], "sequences_done": exp["n_seq"],
            "tokens_total": exp["n_tokens"], "tokens_done": exp["n_tokens"],
            "nnz": exp["nnz"], "sae": h.planted("sae"), "source": h.planted(acts),
            "store": h.tmp_path("store_" + label)}
    for col, val in want.items():
        check_equal(row.get(col), val, "%s: extractions.%s" % (label, col))
    if tokenizer:
        check_equal(row.get("tokenizer"), h.planted("tokenizer.json"),
                    "%s: extractions.tokenizer" % label)
    else:
        check(row.get("tokenizer") in (None, ""), "%s: extractions.tokenizer empty" % label,
              repr(row.get("tokenizer")))
    check(row.get("error") in (None, ""), "%s: no error" % label, repr(row.get("error")))
    check(isinstance(row.get("store_bytes"), int) and row["store_bytes"] > 0,
          "%s: store_bytes > 0" % label, repr(row.get("store_bytes")))
    check(os.path.isdir(want["store"]) and os.listdir(want["store"]),
          "%s: store directory holds segment files" % label)
    for col in ("started_at", "finished_at"):
        check(isinstance(row.get(col), str) and TIME.match(row[col]),
              "%s: %s is YYYY-MM-DD HH:MM:SS" % (label, col), repr(row.get(col)))
    opts = h.as_json(row.get("options"))
    check(isinstance(opts, dict) and opts.get("top_k") == 5 and opts.get("context") == 3,
          "%s: options JSON has top_k 5, context 3" % label, repr(row.get("options")))


def test_f32_with_tokenizer():
    eid = run("f32")
    check_equal(eid, 1, "first extraction has id 1")
    check_extractions_row("f32", EXP, "acts.safetensors")
    h.compare_extraction(DB, "f32", EXP, extraction_id=eid)
    h.compare_extraction(DB, "f32 (default)", EXP)


def test_dead_feature():
    f = h.query(DB, "SELECT * FROM features WHERE feature_id = 15;")
    check(len(f) == 1 and f[0]["is_dead"] == 1 and f[0]["n_active"] == 0
          and f[0]["top_token"] is None and f[0]["example"] is None,
          "feature 15 is dead with NULL top_token/example", repr(f))
    s = h.query(DB, "SELECT * FROM feature_stats WHERE feature_id = 15;")
    check(len(s) == 1 and all(s[0][c] == 0 for c in ("n_active", "frequency", "mean", "std",
                                                     "min_active", "max")),
          "feature 15 stats are zero", repr(s))
    check_equal(h.query(DB, "SELECT * FROM top_examples WHERE feature_id = 15;"), [],
                "feature 15 has no top_examples")
    live = h.scalar(DB, "SELECT count(*) AS n FROM features WHERE is_dead = 0;")
    check_equal(live, 15, "15 live features")


def test_context_marks():
    """context = the window's token texts concatenated, the max one in « »."""
    rows = h.query(DB, "SELECT * FROM top_examples WHERE extraction_id = 1 "
                       "ORDER BY feature_id, rank;")
    bad = []
    for r in rows:
        toks, mi = h.as_json(r["tokens"]), r["max_index"]
        want = "".join(toks[:mi]) + "\u00ab" + toks[mi] + "\u00bb" + "".join(toks[mi + 1:])
        if r["context"] != want or r["token"] != toks[mi]:
            bad.append("feature %d rank %d: context %r, tokens %r, max_index %r"
                       % (r["feature_id"], r["rank"], r["context"], toks, mi))
    check(rows and not bad, "context = tokens joined, tokens[max_index] in \u00ab \u00bb "
          "(%d rows)" % len(rows), "; ".join(bad))
    feats = h.query(DB, "SELECT * FROM features WHERE extraction_id = 1 AND is_dead = 0 "
                        "ORDER BY feature_id;")
    top1 = {r["feature_id"]: r for r in rows if r["rank"] == 1 and r["kind"] == "top"}
    bad = [f["feature_id"] for f in feats
           if (f["example"], f["top_token"]) != (top1.get(f["feature_id"], {}).get("context"),
                                                 top1.get(f["feature_id"], {}).get("token"))]
    check(len(feats) == 15 and not bad, "features.example/top_token come from rank 1",
          "features %r differ" % bad)


def test_f16_bf16():
    run("f16", acts="acts_f16.safetensors")
    exp16 = h.load_expected("expected_f16.json")
    check_extractions_row("f16", exp16, "acts_f16.safetensors")
    h.compare_extraction(DB, "f16 (default = newest)", exp16)
    h.compare_extraction(DB, "f32 (extraction_id = 1)", EXP, extraction_id=1)
    run("bf16", acts="acts_bf16.safetensors")  # and I64 tokens
    expbf = h.load_expected("expected_bf16.json")
    check_extractions_row("bf16", expbf, "acts_bf16.safetensors")
    h.compare_extraction(DB, "bf16", expbf, extraction_id=IDS["bf16"])
    h.compare_extraction(DB, "f16 (extraction_id)", exp16, extraction_id=IDS["f16"])


def test_batch_sizes():
    """batch_size 1 and 7 (7 does not divide 40) give exactly the rows of the default."""
    ref = h.dump(DB, IDS["f32"])
    for bs in (1, 7):
        label = "batch%d" % bs
        run(label, batch_size=bs)
        check_extractions_row(label, EXP, "acts.safetensors")
        got = h.dump(DB, IDS[label])
        for table in ref:
            check(got[table] == ref[table], "%s: %s identical to the default batch size"
                  % (label, table), first_difference(got[table], ref[table]))


def first_difference(a, b):
    if len(a) != len(b):
        return "%d rows vs %d" % (len(a), len(b))
    for x, y in zip(a, b):
        if x != y:
            return "%r vs %r" % (x, y)
    return ""


def test_without_tokenizer():
    run("noTokenizer", tokenizer=False)
    check_extractions_row("noTokenizer", EXP, "acts.safetensors", tokenizer=False)
    h.compare_extraction(DB, "no tokenizer", EXP, extraction_id=IDS["noTokenizer"],
                         tokenizer=False)


def test_default_is_newest_done():
    newest = h.scalar(DB, "SELECT max(id) AS id FROM extractions WHERE status = 'done';")
    check_equal(newest, IDS["noTokenizer"], "newest done extraction")
    check(h.dump(DB) == h.dump(DB, newest), "tables without extraction_id read the newest")
    h.compare_extraction(DB, "f32 (extraction_id = 1, at the end)", EXP, extraction_id=1)


if __name__ == "__main__":
    h.run_tests(test_f32_with_tokenizer, test_dead_feature, test_context_marks, test_f16_bf16,
                test_batch_sizes, test_without_tokenizer, test_default_is_newest_done)
