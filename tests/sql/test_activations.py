#!/usr/bin/env python3
"""test_activations.py: the `activations` table (every stored nonzero) and its index.

Expected rows are computed here from the raw inputs, not from the extension: for the
planted dataset (tests/fixtures/make_fixtures.py) from the token matrix read out of
acts.safetensors (feature j fires on token j with strength 0.5 + ((31 s + 7 p) % 97) / 10,
stored as fp16); for the text dataset (tests/fixtures/make_lm_fixtures.py) from its own
packing of the documents (each row's token, document and special flag), where feature
t mod 32 fires on byte token t with strength 1 + (7 t mod 13) / 4.

Checks: feature lookups (=, IN, dead and unknown ids) give exactly the feature's rows in
(sequence, position) order with exact fp16 values, token text and id; per-feature
count/sum over a full scan; sequence and position lookups, alone and with a feature;
the document column (NULL for stored activations); EXPLAIN QUERY PLAN shows the index
and ORDER BY consumed; the index is the same file whatever the build's memory budget; a store without index.sli or with a damaged one is an error
naming the file (check_extraction names it too), while sequence lookups still work.
"""
import json
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
import harness as h  # noqa: E402
from harness import check, check_equal  # noqa: E402
import make_lm_fixtures as lm  # noqa: E402

CFG = h.setup(__doc__)
DB = CFG.db
EXP = h.load_expected("expected.json")
DEAD = 15


def f16(x):
    return struct.unpack("<e", struct.pack("<e", x))[0]


def planted_tokens():
    """The tokens [n_seq, seq_len] of planted/acts.safetensors, read from the file."""
    with open(h.planted("acts.safetensors"), "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    t = header["tokens"]
    assert t["dtype"] == "I32"
    a, b = t["data_offsets"]
    flat = struct.unpack("<%di" % ((b - a) // 4), data[8 + n + a:8 + n + b])
    n_seq, seq_len = t["shape"]
    return [list(flat[s * seq_len:(s + 1) * seq_len]) for s in range(n_seq)]


TOKENS = planted_tokens()
N_SEQ, SEQ_LEN = len(TOKENS), len(TOKENS[0])


def strength(s, p):
    return f16(struct.unpack("<f", struct.pack("<f", 0.5 + ((s * 31 + p * 7) % 97) / 10))[0])


def planted_rows(feature):
    """(sequence_id, position, activation) where the feature fires, in row order."""
    if feature == DEAD or not 0 <= feature < 16:
        return []
    return [(s, p, strength(s, p)) for s in range(N_SEQ) for p in range(SEQ_LEN) if TOKENS[s][p] == feature]


def rows_of(sql):
    return [(r["sequence_id"], r["position"], r["activation"]) for r in h.query(DB, sql)]


def test_extract():
    check_equal(h.extract(DB, **h.planted_opts(h.tmp_path("store1"))), 1, "planted extraction 1")
    check(os.path.isfile(h.tmp_path("store1", "index.sli")), "the run wrote index.sli")


def test_feature_lookup():
    strings = EXP["token_strings"]
    for j in (0, 3, 7, 14):
        want = planted_rows(j)
        got = h.query(DB, "SELECT sequence_id, position, token, token_id, feature_id, activation, document "
                          "FROM activations WHERE feature_id = %d;" % j)
        check(len(want) > 10, "feature %d: planted on %d tokens" % (j, len(want)))
        check_equal([(r["sequence_id"], r["position"], r["activation"]) for r in got], want,
                    "feature %d: every (sequence, position, fp16 value), in order" % j)
        check(all(r["token"] == strings[j] and r["token_id"] == j and r["feature_id"] == j for r in got),
              "feature %d: token text %r and id" % (j, strings[j]))
        check(all(r["document"] is None for r in got), "feature %d: document NULL for stored activations" % j)
    check_equal(rows_of("SELECT * FROM activations WHERE feature_id = 15;"), [], "dead feature: no rows")
    check_equal(rows_of("SELECT * FROM activations WHERE feature_id = 16;"), [], "feature past d_sae: no rows")
    check_equal(rows_of("SELECT * FROM activations WHERE feature_id = -1;"), [], "negative feature: no rows")
    got = h.query(DB, "SELECT feature_id, sequence_id, position, activation FROM activations "
                      "WHERE feature_id IN (9, 2, 9, 99);")
    want = [(2,) + r for r in planted_rows(2)] + [(9,) + r for r in planted_rows(9)]
    check_equal([(r["feature_id"], r["sequence_id"], r["position"], r["activation"]) for r in got], want,
                "feature_id IN (9, 2, 9, 99): features 2 then 9, each once, rows in order")
    got = h.query(DB, "SELECT sequence_id, position FROM activations WHERE feature_id = 5 AND extraction_id = 1 "
                      "ORDER BY activation DESC LIMIT 5;")
    top = [(e["sequence_id"], e["position"]) for e in EXP["top_examples"] if e["feature_id"] == 5][:5]
    check_equal([(r["sequence_id"], r["position"]) for r in got], top,
                "ORDER BY activation DESC LIMIT 5 = the planted top 5 of feature 5")


def test_full_scan():
    got = h.query(DB, "SELECT feature_id, count(*) AS n, sum(activation) AS total FROM activations "
                      "GROUP BY feature_id ORDER BY feature_id;")
    want = [(j, len(planted_rows(j)), sum(a for _, _, a in planted_rows(j))) for j in range(16) if planted_rows(j)]
    check_equal([(r["feature_id"], r["n"]) for r in got], [(j, n) for j, n, _ in want],
                "full scan: count per feature")
    check(all(h.close(r["total"], t, 1e-12) for r, (_, _, t) in zip(got, want)), "full scan: sum per feature")
    check_equal(h.scalar(DB, "SELECT count(*) FROM activations;"), EXP["nnz"], "full scan: nnz rows")


def test_sequence_lookup():
    for s in (0, 5, 39):
        got = h.query(DB, "SELECT position, feature_id, activation, token_id FROM activations WHERE sequence_id = %d;"
                      % s)
        want = [(p, TOKENS[s][p], strength(s, p), TOKENS[s][p]) for p in range(SEQ_LEN) if TOKENS[s][p] != DEAD]
        check_equal([(r["position"], r["feature_id"], r["activation"], r["token_id"]) for r in got], want,
                    "sequence %d: one row per non-dead token, by position" % s)
    s, p = 7, next(p for p in range(SEQ_LEN) if TOKENS[7][p] != DEAD)
    got = rows_of("SELECT * FROM activations WHERE sequence_id = %d AND position = %d;" % (s, p))
    check_equal(got, [(s, p, strength(s, p))], "sequence %d position %d: its one nonzero" % (s, p))
    q = next(p for p in range(SEQ_LEN) if TOKENS[7][p] == DEAD)
    check_equal(rows_of("SELECT * FROM activations WHERE sequence_id = 7 AND position = %d;" % q), [],
                "a position holding the special token: no rows")
    f = TOKENS[3][4]
    got = rows_of("SELECT * FROM activations WHERE sequence_id = 3 AND feature_id = %d;" % f)
    want = [(3, p, strength(3, p)) for p in range(SEQ_LEN) if TOKENS[3][p] == f]
    check_equal(got, want, "sequence 3 and feature %d" % f)
    for cond in ("sequence_id = 40", "sequence_id = -1", "sequence_id = 2 AND position = 24",
                 "sequence_id = 2.5", "sequence_id = 99999999999999"):
        check_equal(rows_of("SELECT * FROM activations WHERE %s;" % cond), [], "%s: no rows" % cond)
    check_equal(rows_of("SELECT * FROM activations WHERE sequence_id = 2.0 AND position = %d;" % p),
                rows_of("SELECT * FROM activations WHERE sequence_id = 2 AND position = %d;" % p),
                "sequence_id = 2.0 is sequence 2")
    # a join: the top examples' max tokens looked up by (sequence, position)
    got = h.query(DB, "SELECT t.feature_id AS f, max(a.activation) AS a FROM top_examples t JOIN activations a "
                      "ON a.sequence_id = t.sequence_id AND a.position = t.position AND a.feature_id = t.feature_id "
                      "GROUP BY t.feature_id ORDER BY t.feature_id;")
    want = [(j, planted_rows(j) and max(a for _, _, a in planted_rows(j))) for j in range(16) if planted_rows(j)]
    check_equal([(r["f"], r["a"]) for r in got], want, "join with top_examples: each feature's max, fp16")


def plan(sql):
    return h.explain(DB, sql)


def test_query_plan():
    for cond, needle in (("feature_id = 3", "feature_id=?"), ("feature_id IN (1, 2)", "feature_id IN (...)"),
                         ("extraction_id = 1 AND feature_id = 3", "feature_id=?"),
                         ("sequence_id = 4", "sequence_id=?"),
                         ("sequence_id = 4 AND position = 2", "sequence_id=? AND position=?"),
                         ("sequence_id = 4 AND feature_id = 2", "sequence_id=?")):
        p = plan("SELECT * FROM activations WHERE %s" % cond)
        check("VIRTUAL TABLE INDEX" in p and needle in p, "WHERE %s: plan %s" % (cond, needle), p.strip())
    p = plan("SELECT * FROM activations")
    check("VIRTUAL TABLE INDEX" in p and "=?" not in p and "IN (" not in p, "no WHERE: a plain scan", p.strip())
    for sql in ("SELECT * FROM activations WHERE feature_id = 3 ORDER BY sequence_id, position",
                "SELECT * FROM activations WHERE feature_id IN (1, 2) ORDER BY feature_id, sequence_id",
                "SELECT * FROM activations WHERE sequence_id = 3 ORDER BY position, feature_id"):
        p = plan(sql)
        check("TEMP B-TREE" not in p, "ORDER BY consumed: %s" % sql[35:], p.strip())
    p = plan("SELECT * FROM activations WHERE feature_id = 3 ORDER BY activation DESC")
    check("TEMP B-TREE" in p, "ORDER BY activation is sorted by SQLite", p.strip())
    p = plan("SELECT * FROM features f JOIN activations a ON a.feature_id = f.feature_id WHERE f.is_dead = 0")
    check("feature_id=?" in p, "join on feature_id: lookups into activations", p.strip())


def test_text_dataset():
    """The document of every row, against the fixture script's own packing."""
    eid = h.extract(DB, sae=lm_path("sae"), model=lm_path("model"), tokenizer=lm_path("tokenizer.json"),
                    dataset=lm_path("docs.txt"), store=h.tmp_path("store_txt"), progress="off")
    recs = lm.pack(lm.DOCS)
    got = h.query(DB, "SELECT sequence_id, position, feature_id, activation, document, token_id FROM activations "
                      "WHERE extraction_id = %d ORDER BY sequence_id, position;" % eid)
    want = []
    for row, (t, doc, _, _, special) in enumerate(recs):
        if t >= 0 and not special:
            want.append((row // lm.SEQ, row % lm.SEQ, t % lm.D, struct.unpack("<f", struct.pack("<f", lm.strength(t)))[0],
                         doc, t))
    check(len(want) > 100 and len({w[4] for w in want}) >= 3, "text run: %d rows over several documents" % len(want))
    check_equal([(r["sequence_id"], r["position"], r["feature_id"], r["activation"], r["document"], r["token_id"])
                 for r in got], want, "text run: every row's feature, value, document and token")
    j = want[0][2]
    got = h.query(DB, "SELECT sequence_id, position, document, token FROM activations WHERE extraction_id = %d "
                      "AND feature_id = %d;" % (eid, j))
    mine = [(w[0], w[1], w[4], chr(w[5])) for w in want if w[2] == j]
    check_equal([(r["sequence_id"], r["position"], r["document"], r["token"]) for r in got], mine,
                "text run, feature %d: rows, documents and token text" % j)


def test_budget():
    """A run whose index build holds 10 postings at a time (a pass per feature or
    two) writes the same index.sli, byte for byte, as one with the default budget."""
    os.environ["SAELITE_INDEX_BUDGET_BYTES"] = "120"
    try:
        h.extract(DB, **h.planted_opts(h.tmp_path("store_budget")))
    finally:
        del os.environ["SAELITE_INDEX_BUDGET_BYTES"]
    with open(h.tmp_path("store_budget", "index.sli"), "rb") as f:
        small = f.read()
    with open(h.tmp_path("store1", "index.sli"), "rb") as f:
        default = f.read()
    check(len(default) > 64 and small == default, "index.sli identical with a 120-byte budget")


def lm_path(name):
    return h.fixture("lm", name)


def test_damaged_index():
    eid = h.extract(DB, **h.planted_opts(h.tmp_path("store2")))
    path = h.tmp_path("store2", "index.sli")
    with open(path, "rb") as f:
        good = f.read()
    check_equal(rows_of("SELECT * FROM activations WHERE extraction_id = %d AND feature_id = 4;" % eid),
                planted_rows(4), "second extraction, feature 4")
    # a flipped byte in feature 4's postings (directory entry 4: offset at byte 0)
    d_sae = struct.unpack("<I", good[12:16])[0]
    dir_off = len(good) - 56 * d_sae
    off4 = struct.unpack("<Q", good[dir_off + 4 * 56:dir_off + 4 * 56 + 8])[0]
    bad = bytearray(good)
    bad[off4] ^= 0x04
    with open(path, "wb") as f:
        f.write(bad)
    # a new connection (the shell is a new process per query) maps the damaged file
    h.expect_error(DB, "SELECT * FROM activations WHERE extraction_id = %d AND feature_id = 4;" % eid,
                   path, "feature 4: checksum mismatch")
    check_equal(rows_of("SELECT * FROM activations WHERE extraction_id = %d AND feature_id = 5;" % eid),
                planted_rows(5), "the other features still read")
    report = h.scalar(DB, "SELECT check_extraction(%d);" % eid)
    check(isinstance(report, str) and path in report and "feature 4" in report,
          "check_extraction names the damaged index", repr(report))
    with open(path, "wb") as f:
        f.write(good[:-10])
    h.expect_error(DB, "SELECT count(*) FROM activations WHERE extraction_id = %d AND feature_id = 1;" % eid,
                   path, "damaged index")
    report = h.scalar(DB, "SELECT check_extraction(%d);" % eid)
    check(isinstance(report, str) and path in report, "check_extraction names the truncated index", repr(report))
    os.remove(path)
    h.expect_error(DB, "SELECT * FROM activations WHERE extraction_id = %d AND feature_id = 4;" % eid,
                   path, "cannot open the feature index")
    h.expect_error(DB, "SELECT count(*) FROM activations WHERE extraction_id = %d;" % eid, path)
    check_equal(rows_of("SELECT * FROM activations WHERE extraction_id = %d AND sequence_id = 1 AND position = 0;"
                        % eid),
                rows_of("SELECT * FROM activations WHERE extraction_id = 1 AND sequence_id = 1 AND position = 0;"),
                "sequence lookups need no index")
    with open(path, "wb") as f:
        f.write(good)
    check_equal(h.scalar(DB, "SELECT check_extraction(%d);" % eid), "ok", "restored: check_extraction ok")


h.run_tests(test_extract, test_feature_lookup, test_full_scan, test_sequence_lookup, test_query_plan,
            test_text_dataset, test_budget, test_damaged_index)
