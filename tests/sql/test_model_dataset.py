#!/usr/bin/env python3
"""test_model_dataset.py: text and token datasets through a model and an SAE.

The fixtures (tests/fixtures/make_lm_fixtures.py) plant a GPT-2 whose blocks are
zero, so the residual stream at every layer is the token's embedding, and an
identity SAE: feature j fires exactly on byte tokens b with b mod 32 == j, with a
known strength. Every statistic and top example of the .txt run is compared with
values computed independently in the fixture script (packing, BOS, special tokens,
padding, documents and character spans included); .jsonl and a SQL query must give
the same rows; token files, hook and centering options and bad input are checked.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from harness import check, check_equal  # noqa: E402

CFG = h.setup(__doc__)
DB = CFG.db
EXP = h.load_expected(os.path.join("..", "lm", "expected.json"))


def lm(name):
    return h.fixture("lm", name)


def base(label, **more):
    opts = {"sae": lm("sae"), "model": lm("model"), "tokenizer": lm("tokenizer.json"),
            "top_k": EXP["top_k"], "context": EXP["context"], "store": h.tmp_path("store_" + label),
            "progress": "off"}
    opts.update(more)
    return opts


def token_text(t):
    return "<|endoftext|>" if t == EXP["bos"] else chr(t)


def compare(label, eid, exp):
    d = h.dump(DB, eid)
    h.compare_rows(label + " feature_stats", d["feature_stats"], exp["feature_stats"],
                   ("feature_id", "n_tokens", "n_active"), ("frequency", "mean", "std", "min_active", "max"))
    rows, want = d["top_examples"], exp["top_examples"]
    ok = check_equal(len(rows), len(want), "%s top_examples: row count" % label)
    for row, e in zip(rows, want):
        bad = []
        for c in ("feature_id", "rank", "sequence_id", "position", "max_index", "document", "char_start", "char_end"):
            if row.get(c) != e[c]:
                bad.append("%s=%r (expected %r)" % (c, row.get(c), e[c]))
        if not h.same_f32(row.get("activation"), e["activation"]):
            bad.append("activation=%r (expected %r)" % (row.get("activation"), e["activation"]))
        texts = [token_text(t) for t in e["token_ids"]]
        if h.as_json(row.get("tokens")) != texts:
            bad.append("tokens=%r (expected %r)" % (row.get("tokens"), texts))
        acts = h.as_json(row.get("activations")) or []
        if len(acts) != len(e["activations"]) or any(
                not h.close(a, x, 1e-3, 1e-6) for a, x in zip(acts, e["activations"])):
            bad.append("activations=%r (expected %r)" % (acts, e["activations"]))
        ok &= check(not bad, "%s top_examples: feature %d rank %d" % (label, e["feature_id"], e["rank"]),
                    "; ".join(bad), quiet=True)
    if ok:
        print("ok    %s top_examples: all %d rows match" % (label, len(rows)))
    return d


def test_txt():
    eid = h.extract(DB, **base("txt", dataset=lm("docs.txt")))
    row = h.extraction_row(DB, eid)
    exp = EXP["txt"]
    for col, val in (("status", "done"), ("hook", "blocks.1.hook_resid_pre"), ("model", lm("model")),
                     ("source", lm("docs.txt")), ("seq_len", EXP["seq_len"]), ("sequences_total", exp["n_seq"]),
                     ("sequences_done", exp["n_seq"]), ("tokens_total", exp["n_positions"]),
                     ("tokens_done", exp["n_positions"]), ("d_in", 32), ("d_sae", 32)):
        check_equal(row.get(col), val, "txt: extractions.%s" % col)
    check_equal((row.get("explained_variance"), row.get("mse")), (1.0, 0.0),
                "txt: the identity SAE reconstructs every row exactly")
    d = compare("txt", eid, exp)
    # The window's characters, cut from the document, hold the max token's text.
    for r in d["top_examples"][:40]:
        doc = EXP["docs"][r["document"]]
        span = doc[r["char_start"]:r["char_end"]]
        check(r["token"] in span and span in doc, "txt: span of feature %d rank %d holds its token"
              % (r["feature_id"], r["rank"]), repr((span, r["token"])), quiet=True)
    specials = h.query(DB, "SELECT count(*) AS n FROM top_examples WHERE extraction_id = %d AND token = '<|endoftext|>';"
                       % eid)
    check_equal(specials[0]["n"], 0, "txt: special tokens are never top examples")
    return eid


def test_jsonl_and_query_match_txt():
    txt = h.dump(DB, 1)
    eid = h.extract(DB, **base("jsonl", dataset=lm("docs.jsonl"), text_field="body"))
    check(h.dump(DB, eid) == txt, "jsonl (field body): the same rows as the .txt run")
    with open(lm("docs.sql")) as f:
        h.run_sql(DB, f.read())
    eid = h.extract(DB, **base("query", query="SELECT body FROM docs ORDER BY id"))
    check(h.dump(DB, eid) == txt, "query: the same rows as the .txt run")
    check_equal(h.extraction_row(DB, eid)["source"], "SELECT body FROM docs ORDER BY id", "query: source")


def test_options():
    eid = h.extract(DB, **base("centered", dataset=lm("docs.txt"), center_writing_weights=1))
    compare("centered", eid, EXP["centered"])
    eid = h.extract(DB, **base("mlp_out", dataset=lm("docs.txt"), hook="blocks.0.hook_mlp_out"))
    dead = h.query(DB, "SELECT count(*) AS n FROM features WHERE extraction_id = %d AND is_dead;" % eid)
    check_equal(dead[0]["n"], 32, "hook blocks.0.hook_mlp_out (zero MLP): every feature dead")
    check_equal(h.extraction_row(DB, eid)["hook"], "blocks.0.hook_mlp_out", "hook option recorded")
    eid = h.extract(DB, **base("max_tokens", dataset=lm("docs.txt"), max_tokens=50))
    check_equal(h.extraction_row(DB, eid)["tokens_total"], 50, "max_tokens 50: tokens_total")
    eid = h.extract(DB, **base("file", dataset=lm("docs.txt"), text_mode="file"))
    docs = h.query(DB, "SELECT DISTINCT document FROM top_examples WHERE extraction_id = %d;" % eid)
    check_equal(docs, [{"document": 0}], "text_mode file: the whole file is document 0")
    eid = h.extract(DB, **base("special", dataset=lm("docs.txt"), include_special=1))
    n = h.query(DB, "SELECT n_tokens FROM feature_stats WHERE extraction_id = %d AND feature_id = 0;" % eid)
    check_equal(n[0]["n_tokens"], EXP["txt"]["n_positions"], "include_special: BOS counts as a token")


def test_token_files():
    stream = EXP["stream_tokens"]
    for name, more in (("tokens_1d.npy", {}), ("tokens_1d.bin", {"token_dtype": "uint16"})):
        eid = h.extract(DB, **base(name, dataset=lm(name)))
        row = h.extraction_row(DB, eid)
        check_equal(row["status"], "done", "%s: done" % name)
        n = h.query(DB, "SELECT n_tokens FROM feature_stats WHERE extraction_id = %d AND feature_id = 0;" % eid)
        # one document: every sequence's BOS is special; the one <|endoftext|> in the text is too
        check_equal(n[0]["n_tokens"], stream - 1, "%s: n_tokens counts every non-special id" % name)
    eid = h.extract(DB, **base("2d", dataset=lm("tokens_2d.safetensors")))
    row = h.extraction_row(DB, eid)
    check_equal((row["sequences_total"], row["seq_len"]), (EXP["rows_2d"], EXP["seq_len"]),
                "2-D token file: each row is one sequence")


def test_errors():
    before = h.dump(DB, 1)
    h.expect_error(DB, h.extract_sql(**base("e1", dataset=lm("docs.txt"), hook="blocks.7.hook_resid_pre")),
                   "config.json", "beyond")
    h.expect_error(DB, h.extract_sql(**base("e2", dataset=lm("docs.txt"), sae=h.planted("sae"))), "d_model")
    opts = base("e3", dataset=lm("docs.txt"))
    del opts["tokenizer"]
    h.expect_error(DB, h.extract_sql(**opts), "tokenizer")
    h.expect_error(DB, h.extract_sql(**base("e4", dataset=lm("docs.txt"), activations=h.planted("acts.safetensors"))),
                   "either")
    h.expect_error(DB, h.extract_sql(**base("e5", dataset=lm("missing.txt"))), "missing.txt", "No such file")
    h.expect_error(DB, h.extract_sql(**base("e6", dataset=lm("docs.txt"), context_size=100)), "n_positions")
    check(h.dump(DB, 1) == before, "earlier extraction unchanged after the errors")


h.run_tests(test_txt, test_jsonl_and_query_match_txt, test_options, test_token_files, test_errors)
