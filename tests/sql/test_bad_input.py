#!/usr/bin/env python3
"""test_bad_input.py: bad inputs give clear SQL errors and leave earlier runs alone.

A good planted extraction runs first. Then each bad input must fail with an SQL error
whose message names the file and the problem. File errors record a new extractions
row with status 'failed' and the message; option errors (unknown name, bad value,
missing required option) record nothing. At the end the good extraction must read
back unchanged, and still be the default one.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from harness import check, check_equal  # noqa: E402

CFG = h.setup(__doc__)
DB = CFG.db
P = h.planted
STATE = {}


def test_good_extraction():
    STATE["good"] = h.extract(DB, **h.planted_opts(h.tmp_path("store_good")))
    STATE["before"] = h.dump(DB)
    STATE["before_explicit"] = h.dump(DB, STATE["good"])
    h.compare_stats("good", STATE["before"]["feature_stats"], h.load_expected())


def file_error(label, needles, **opts):
    """extract_features with opts (over the good planted ones) must fail with a message
    holding every needle, and leave exactly one new 'failed' row carrying it."""
    base = h.planted_opts(h.tmp_path("store_" + label))
    base.update(opts)
    n0 = h.count_extractions(DB)
    last = h.scalar(DB, "SELECT coalesce(max(id), 0) AS id FROM extractions;")
    msg = h.expect_error(DB, h.extract_sql(**base), *needles, what=label)
    rows = h.query(DB, "SELECT id, status, error FROM extractions WHERE id > %d;" % last)
    if not check(len(rows) == 1 and h.count_extractions(DB) == n0 + 1,
                 "%s: one new extractions row" % label, repr(rows)):
        return
    r = rows[0]
    check_equal(r["status"], "failed", "%s: status" % label)
    err = r["error"] or ""
    check(err and (err in msg or msg in err),
          "%s: extractions.error holds the message" % label, "error %r, message %r" % (err, msg))


def option_error(label, sql, *needles):
    """sql must fail with the needles in its message and record no extractions row."""
    n0 = h.count_extractions(DB)
    h.expect_error(DB, sql, *needles, what=label)
    check_equal(h.count_extractions(DB), n0, "%s: no extractions row recorded" % label)


NO_FILE = ("No such file", "cannot open")


def test_sae_errors():
    missing = h.tmp_path("no", "such", "sae")
    file_error("missing SAE", (missing, NO_FILE), sae=missing)
    file_error("unknown architecture", (P("sae_badarch"), "architecture"), sae=P("sae_badarch"))
    file_error("SAE without W_enc", (P("sae_noWenc"), "W_enc"), sae=P("sae_noWenc"))


def test_activation_errors():
    def acts(name, *needles, **more):
        file_error(name, (P(name),) + needles, activations=P(name), **more)

    missing = P("no_such_acts.safetensors")
    file_error("missing activations", (missing, NO_FILE), activations=missing)
    acts("acts_i32.safetensors", "dtype")
    acts("acts_notokens.safetensors", "tokens")
    acts("acts_empty.safetensors", "empty")
    din12 = P("acts_din12.safetensors")
    file_error("d_in mismatch", ((din12, P("sae")), "d_in"), activations=din12)
    badtok = P("acts_badtok.safetensors")
    file_error("token id out of range", ((badtok, P("tokenizer.json")), "out of range"),
               activations=badtok)


def bad_files():
    """(file, keyword) pairs from bad/README (file <TAB> keyword <TAB> what)."""
    out = []
    with open(h.fixture("bad", "README"), encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 3 and parts[0].endswith(".safetensors"):
                out.append((parts[0], parts[1]))
    return out


def test_malformed_safetensors():
    files = bad_files()
    check(len(files) >= 9, "bad/README lists the malformed files", repr(files))
    for name, keyword in files:
        path = h.fixture("bad", name)
        file_error("bad/" + name, (path, keyword), activations=path)


def test_tokenizer_errors():
    missing = h.tmp_path("no_tokenizer.json")
    file_error("missing tokenizer", (missing, NO_FILE), tokenizer=missing)
    junk = h.tmp_path("junk_tokenizer.json")
    with open(junk, "w") as f:
        f.write("{ this is not json")
    file_error("tokenizer not JSON", (junk,), tokenizer=junk)


def test_store_not_empty():
    """The store must not exist yet or be empty: reusing the good run's store fails."""
    store = h.tmp_path("store_good")
    opts = h.planted_opts(store)
    h.expect_error(DB, h.extract_sql(**opts), store, what="non-empty store")


def test_option_errors():
    good = h.planted_opts(h.tmp_path("store_opt"))
    option_error("unknown option", h.extract_sql(**dict(good, bogus_option=1)),
                 "unknown option", "bogus_option", "top_k")
    option_error("top_k 0", h.extract_sql(**dict(good, top_k=0)), "top_k")
    no_acts = {k: v for k, v in good.items() if k != "activations"}
    option_error("missing activations", h.extract_sql(**no_acts), "activations")
    no_sae = {k: v for k, v in good.items() if k != "sae"}
    option_error("missing sae", h.extract_sql(**no_sae), "sae")
    check(not os.path.exists(h.tmp_path("store_opt")) or not os.listdir(h.tmp_path("store_opt")),
          "option errors write no store")


def test_read_only_connection():
    """A read-only connection cannot start or resume a run (they write files and rows)."""
    ro = "file:%s?mode=ro" % DB
    n_before = h.scalar(DB, "SELECT count(*) FROM extractions")
    store = h.tmp_path("store_ro")
    h.expect_error(ro, h.extract_sql(**h.planted_opts(store)), "read-only", "extract_features",
                   what="extract_features on a read-only connection")
    h.expect_error(ro, "SELECT resume_extraction(%d)" % STATE["good"], "read-only", "resume_extraction",
                   what="resume_extraction on a read-only connection")
    check(not os.path.exists(store), "read-only refusal writes no store")
    check_equal(h.scalar(DB, "SELECT count(*) FROM extractions"), n_before,
                "read-only refusal adds no extractions row")
    check_equal(len(h.query(ro, "SELECT * FROM top_examples WHERE kind = 'top'")) > 0, True,
                "a read-only connection still browses")


def test_locked_database():
    """A database locked by another writer: SQLite's reason, not "no extractions table"."""
    import sqlite3
    con = sqlite3.connect(DB, isolation_level=None)
    con.execute("BEGIN EXCLUSIVE")
    try:
        for fn in ("check_extraction", "resume_extraction"):
            h.expect_error(DB, "SELECT %s(%d)" % (fn, STATE["good"]), fn, "database is locked",
                           what="%s on a locked database" % fn)
        h.expect_error(DB, "SELECT * FROM features", "database is locked", what="features on a locked database")
    finally:
        con.execute("ROLLBACK")
        con.close()


def test_good_extraction_unchanged():
    check(h.dump(DB) == STATE["before"], "default tables unchanged after the failures")
    check(h.dump(DB, STATE["good"]) == STATE["before_explicit"],
          "extraction_id = %d unchanged after the failures" % STATE["good"])
    row = h.extraction_row(DB, STATE["good"])
    check_equal(row and row["status"], "done", "good extraction still 'done'")
    h.compare_extraction(DB, "good (after failures)", h.load_expected())


if __name__ == "__main__":
    h.run_tests(test_good_extraction, test_sae_errors, test_activation_errors,
                test_malformed_safetensors, test_tokenizer_errors, test_store_not_empty,
                test_option_errors, test_read_only_connection, test_locked_database,
                test_good_extraction_unchanged)
