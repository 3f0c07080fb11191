#!/usr/bin/env python3
"""test_options.py: the two option forms, names, defaults and option limits.

A JSON-object call must give exactly the rows of the same options as name/value
pairs; `name` is stored; `options` is a JSON object of the effective options; the
default name and store follow docs/SQL.md; max_sequences, top_k 1 and context 0 do
what they say; out-of-range or misspelled options fail before anything is recorded.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from harness import check, check_equal  # noqa: E402

CFG = h.setup(__doc__)
DB = CFG.db
EXP = h.load_expected("expected.json")
IDS = {}


def options_of(eid):
    row = h.extraction_row(DB, eid)
    opts = h.as_json(row.get("options")) if row else None
    check(isinstance(opts, dict), "extraction %d: options is a JSON object" % eid,
          repr(row and row.get("options")))
    return row, opts if isinstance(opts, dict) else {}


def test_pairs_and_json_forms():
    pairs = h.planted_opts(h.tmp_path("store_pairs"), name="pairs run")
    IDS["pairs"] = h.extract(DB, **pairs)
    obj = h.planted_opts(h.tmp_path("store_json"), name="json run")
    rows = h.query(DB, "SELECT extract_features(%s) AS id;" % h.sql_str(json.dumps(obj)))
    IDS["json"] = rows[0]["id"]
    check(IDS["json"] == IDS["pairs"] + 1, "JSON form returns the next id", repr(rows))
    a, b = h.dump(DB, IDS["pairs"]), h.dump(DB, IDS["json"])
    for table in a:
        check(a[table] == b[table], "%s: JSON form == name/value pairs" % table)
    h.compare_extraction(DB, "JSON form", EXP, extraction_id=IDS["json"])
    for label, name in (("pairs", "pairs run"), ("json", "json run")):
        row, opts = options_of(IDS[label])
        check_equal(row["name"], name, "%s: name stored" % label)
        check_equal(opts.get("top_k"), 5, "%s: options.top_k" % label)
        check_equal(opts.get("context"), 3, "%s: options.context" % label)


def test_defaults():
    """No name, store, top_k or context: extraction-<id>, <db>-saelite/extraction-<id>."""
    opts = {"sae": h.planted("sae"), "activations": h.planted("acts.safetensors"),
            "tokenizer": h.planted("tokenizer.json")}
    eid = h.extract(DB, **opts)
    row, o = options_of(eid)
    check_equal(row["name"], "extraction-%d" % eid, "default name")
    store = DB + "-saelite/extraction-%d" % eid
    check_equal(row["store"], store, "default store")
    check(os.path.isdir(store) and os.listdir(store), "default store directory written")
    check_equal(o.get("top_k"), 20, "default top_k in options")
    check_equal(o.get("context"), 10, "default context in options")
    n = h.scalar(DB, "SELECT max(rank) AS n FROM top_examples WHERE extraction_id = %d AND kind = 'top';" % eid)
    check_equal(n, 20, "default top_k: 20 examples for a feature that fires > 20 times")
    width = h.scalar(DB, "SELECT max(json_array_length(tokens)) AS n FROM top_examples "
                         "WHERE extraction_id = %d;" % eid)
    check_equal(width, 21, "default context 10: windows of up to 21 tokens")


def test_max_sequences():
    exp = h.load_expected("expected_max10.json")
    eid = h.extract(DB, **h.planted_opts(h.tmp_path("store_max10"), max_sequences=10))
    row = h.extraction_row(DB, eid)
    check_equal(row["tokens_total"], 240, "max_sequences 10: tokens_total")
    check_equal(row["tokens_done"], 240, "max_sequences 10: tokens_done")
    check_equal(row["sequences_done"], 10, "max_sequences 10: sequences_done")
    stats = h.query(DB, "SELECT * FROM feature_stats WHERE extraction_id = %d "
                        "ORDER BY feature_id;" % eid)
    h.compare_stats("max_sequences 10", stats, exp)
    seqs = h.scalar(DB, "SELECT max(sequence_id) AS m FROM top_examples "
                        "WHERE extraction_id = %d;" % eid)
    check(seqs is not None and seqs < 10, "max_sequences 10: examples from sequences 0..9",
          repr(seqs))


def test_top_k_1_context_0():
    eid = h.extract(DB, **h.planted_opts(h.tmp_path("store_k1"), top_k=1, context=0))
    rows = h.query(DB, "SELECT * FROM top_examples WHERE extraction_id = %d AND kind = 'top' "
                       "ORDER BY feature_id, rank;" % eid)
    firsts = [e for e in EXP["top_examples"] if e["rank"] == 1]
    check_equal(len(rows), len(firsts), "top_k 1: one example per live feature")
    for r, e in zip(rows, firsts):
        tok = e["tokens"][e["max_index"]]
        good = (r["feature_id"] == e["feature_id"] and r["rank"] == 1
                and r["sequence_id"] == e["sequence_id"] and r["position"] == e["position"]
                and h.as_json(r["tokens"]) == [tok] and r["max_index"] == 0
                and r["context"] == "\u00ab" + tok + "\u00bb"
                and len(h.as_json(r["activations"])) == 1
                and h.same_f32(h.as_json(r["activations"])[0], e["activation"]))
        check(good, "top_k 1, context 0: feature %d" % e["feature_id"], repr(r))


def test_option_limits():
    """Bad values and misspelled names fail and record nothing."""
    good = h.planted_opts(h.tmp_path("store_bad"))
    cases = [("top_k 10001", dict(good, top_k=10001), "top_k"),
             ("top_k -1", dict(good, top_k=-1), "top_k"),
             ("context 1025", dict(good, context=1025), "context"),
             ("context -1", dict(good, context=-1), "context"),
             ("batch_size 0", dict(good, batch_size=0), "batch_size"),
             ("progress maybe", dict(good, progress="maybe"), "progress"),
             ("top_k as text", dict(good, top_k="many"), "top_k"),
             ("TOP_K (names are case-sensitive)", dict(good, TOP_K=5), "TOP_K")]
    for label, opts, needle in cases:
        n0 = h.count_extractions(DB)
        h.expect_error(DB, h.extract_sql(**opts), needle, what=label)
        check_equal(h.count_extractions(DB), n0, "%s: nothing recorded" % label)
    n0 = h.count_extractions(DB)
    h.expect_error(DB, "SELECT extract_features('sae');", what="odd number of arguments")
    h.expect_error(DB, "SELECT extract_features(%s);"
                   % h.sql_str(json.dumps(dict(good, bogus=1))), "bogus",
                   what="JSON form with an unknown option")
    h.expect_error(DB, "SELECT extract_features('{not json');", what="malformed JSON options")
    check_equal(h.count_extractions(DB), n0, "malformed calls: nothing recorded")


if __name__ == "__main__":
    h.run_tests(test_pairs_and_json_forms, test_defaults, test_max_sequences,
                test_top_k_1_context_0, test_option_limits)
