"""harness.py: drives the real sqlite3 shell with the saelite extension for the SQL tests.

Every test is run by ctest as
    python3 test_X.py --sqlite3 SHELL --ext BUILD/saelite --fixtures BUILD/fixtures --tmp DIR
Each SQL batch runs in a fresh `sqlite3 -bail DB` process fed `.load EXT`, `.mode json`
and the SQL on stdin; the shell prints one JSON array per statement that returns rows
(nothing for an empty result), and on error exits nonzero with the message on stderr.

Helpers: query(db, sql) -> rows (list of dicts), expect_error(db, sql, *needles),
check(cond, what) records one check and prints one line, run_tests(...) runs the test
functions and exits 1 if any check failed. The second half holds what several tests
share about the planted dataset (tests/fixtures/make_fixtures.py): extraction calls,
table dumps and comparisons with planted/expected*.json.
"""
import argparse
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import traceback

CFG = None  # set by setup(): sqlite3, ext, fixtures, tmp, db
_counts = {"checks": 0, "failed": 0}


class SqlError(Exception):
    """The shell exited nonzero; .message is the error text without the shell's prefix."""

    def __init__(self, message, returncode):
        super().__init__(message)
        self.message = message
        self.returncode = returncode


# -------------------------------------------------------------------------------------
# Setup
# -------------------------------------------------------------------------------------
def fail_setup(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def setup(doc):
    """Parses the ctest arguments, checks the inputs exist, recreates --tmp. Returns CFG."""
    global CFG
    ap = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0])
    ap.add_argument("--sqlite3", default="sqlite3")
    ap.add_argument("--ext", required=True, help="the extension, without .so")
    ap.add_argument("--fixtures", required=True)
    ap.add_argument("--tmp", required=True)
    a = ap.parse_args()
    shell = shutil.which(a.sqlite3) or a.sqlite3
    if not os.access(shell, os.X_OK):
        fail_setup("sqlite3 shell not found: %s" % a.sqlite3)
    ext = os.path.realpath(a.ext)
    if not any(os.path.isfile(ext + sfx) for sfx in ("", ".so", ".dylib", ".dll")):
        fail_setup("the saelite extension was not found at %s(.so): build it first "
                   "(cmake --build build)" % ext)
    fixtures = os.path.realpath(a.fixtures)
    if not os.path.isfile(os.path.join(fixtures, "planted", "expected.json")):
        fail_setup("fixtures missing in %s: run tests/fixtures/make_fixtures.py %s "
                   "(the ctest 'fixtures' test) first" % (fixtures, fixtures))
    tmp = os.path.abspath(a.tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    tmp = os.path.realpath(tmp)
    CFG = argparse.Namespace(sqlite3=shell, ext=ext, fixtures=fixtures, tmp=tmp,
                             db=os.path.join(tmp, "test.db"))
    # Fail early and clearly when the extension does not load.
    p = run_sql(CFG.db, "SELECT 1 AS one;")
    if p.returncode != 0:
        fail_setup("cannot load the extension %s: %s" % (ext, clean_error(p.stderr)))
    return CFG


def fixture(*parts):
    return os.path.join(CFG.fixtures, *parts)


def tmp_path(*parts):
    return os.path.join(CFG.tmp, *parts)


# -------------------------------------------------------------------------------------
# Running SQL
# -------------------------------------------------------------------------------------
def sql_str(s):
    """An SQL string literal."""
    return "'" + str(s).replace("'", "''") + "'"


def sql_value(v):
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (dict, list)):
        return sql_str(json.dumps(v))
    return sql_str(v)


def run_sql(db, sql, mode="json"):
    """Runs SQL in a fresh shell process on db. Returns the CompletedProcess."""
    dot_path = '"' + CFG.ext.replace("\\", "\\\\").replace('"', '\\"') + '"'
    script = ".load %s\n.mode %s\n%s\n" % (dot_path, mode, sql)
    return subprocess.run([CFG.sqlite3, "-bail", db], input=script.encode("utf-8"),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600)


_PREFIX = re.compile(r"^(Runtime error|Parse error|Error)( near line \d+)?: ?")


def clean_error(stderr):
    text = stderr.decode("utf-8", errors="replace") if isinstance(stderr, bytes) else stderr
    return "\n".join(_PREFIX.sub("", line) for line in text.strip().splitlines())


def parse_json_arrays(text):
    """The JSON arrays the shell printed, one per statement that returned rows."""
    dec, out, i = json.JSONDecoder(), [], 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return out
        value, i = dec.raw_decode(text, i)
        out.append(value)


def query_sets(db, sql):
    """Result sets (list of row lists) of the statements in sql; raises SqlError."""
    p = run_sql(db, sql)
    if p.returncode != 0:
        raise SqlError(clean_error(p.stderr), p.returncode)
    return parse_json_arrays(p.stdout.decode("utf-8"))


def query(db, sql):
    """Rows (dicts) of all statements in sql, concatenated; raises SqlError."""
    return [row for rows in query_sets(db, sql) for row in rows]


def scalar(db, sql):
    rows = query(db, sql)
    return next(iter(rows[0].values())) if rows else None


def explain(db, sql):
    """The EXPLAIN QUERY PLAN text of sql (the shell prints plans as a tree, not JSON)."""
    p = run_sql(db, "EXPLAIN QUERY PLAN " + sql, mode="list")
    if p.returncode != 0:
        raise SqlError(clean_error(p.stderr), p.returncode)
    return p.stdout.decode("utf-8")


def expect_error(db, sql, *needles, what=None):
    """Checks that sql fails with a message containing every needle (a needle that is a
    tuple matches when any of its strings does). Returns the message ('' if none)."""
    label = what or sql.strip().splitlines()[0][:100]
    try:
        rows = query(db, sql)
    except SqlError as e:
        missing = [n for n in needles
                   if not any(s in e.message for s in (n if isinstance(n, tuple) else (n,)))]
        check(not missing, "error for %s" % label,
              "message %r lacks %s" % (e.message, " and ".join(map(repr, missing))))
        return e.message
    check(False, "error for %s" % label, "no error; rows: %r" % (rows[:3],))
    return ""


# -------------------------------------------------------------------------------------
# Checks
# -------------------------------------------------------------------------------------
def check(cond, what, detail="", quiet=False):
    """Records one check and prints one line (none for a quiet pass). Returns cond."""
    _counts["checks"] += 1
    if cond:
        if not quiet:
            print("ok    " + what)
    else:
        _counts["failed"] += 1
        print("FAIL  " + what + (": " + detail if detail else ""))
    return bool(cond)


def check_equal(actual, expected, what):
    return check(actual == expected, what, "got %r, expected %r" % (actual, expected))


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def same_f32(a, b):
    """a and b are the same single-precision value (a may be printed as a double)."""
    return isinstance(a, (int, float)) and f32(a) == f32(b)


def close(a, b, rel, abs_tol=1e-9):
    return isinstance(a, (int, float)) and math.isclose(a, b, rel_tol=rel, abs_tol=abs_tol)


def run_tests(*tests):
    """Runs each test function (an exception counts as a failed check), prints a
    summary and exits 1 if anything failed."""
    for t in tests:
        print("== %s" % t.__name__)
        try:
            t()
        except SqlError as e:
            check(False, t.__name__, "unexpected SQL error: %s" % e.message)
        except Exception:  # a broken test is a failure, not a crash without summary
            check(False, t.__name__, "exception:\n" + traceback.format_exc())
    n, f = _counts["checks"], _counts["failed"]
    print("%d checks, %d failed" % (n, f))
    sys.exit(1 if f or not n else 0)


# -------------------------------------------------------------------------------------
# The planted dataset
# -------------------------------------------------------------------------------------
def planted(name):
    return fixture("planted", name)


def load_expected(name="expected.json"):
    with open(planted(name), encoding="utf-8") as f:
        return json.load(f)


def extract_sql(**opts):
    """SELECT extract_features(name, value, ...) AS id; in keyword order."""
    args = ", ".join("%s, %s" % (sql_str(k), sql_value(v)) for k, v in opts.items())
    return "SELECT extract_features(%s) AS id;" % args


def planted_opts(store, acts="acts.safetensors", tokenizer=True, **more):
    """Options of a planted extraction (top_k 5, context 3, as expected.json)."""
    opts = {"sae": planted("sae"), "activations": planted(acts)}
    if tokenizer:
        opts["tokenizer"] = planted("tokenizer.json")
    opts.update({"top_k": 5, "context": 3, "store": store, "progress": "off"})
    opts.update(more)
    return opts


def extract(db, **opts):
    """Runs extract_features with these options; returns the new extraction's id."""
    rows = query(db, extract_sql(**opts))
    if len(rows) != 1 or not isinstance(rows[0].get("id"), int):
        raise SqlError("extract_features returned %r, expected one integer id" % rows, 0)
    return rows[0]["id"]


def where(extraction_id):
    return "" if extraction_id is None else " WHERE extraction_id = %d" % extraction_id


def dump(db, extraction_id=None):
    """All rows of the three virtual tables (the top kind of top_examples), in a fixed order."""
    w = where(extraction_id)
    top = (w + " AND" if w else " WHERE") + " kind = 'top'"
    return {
        "feature_stats": query(db, "SELECT * FROM feature_stats%s ORDER BY feature_id;" % w),
        "features": query(db, "SELECT * FROM features%s ORDER BY feature_id;" % w),
        "top_examples": query(db, "SELECT * FROM top_examples%s ORDER BY feature_id, rank;" % top),
    }


def extraction_row(db, extraction_id):
    rows = query(db, "SELECT * FROM extractions WHERE id = %d;" % extraction_id)
    return rows[0] if rows else None


def count_extractions(db):
    return scalar(db, "SELECT count(*) AS n FROM extractions;")


def as_json(v):
    """A JSON column's value: the shell prints TEXT as a string holding the JSON."""
    if isinstance(v, str):
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


STAT_FLOATS = ("frequency", "log10_frequency", "mean", "std", "min_active", "max")
FEATURE_FLOATS = ("frequency", "max_activation", "mean_activation")


def compare_rows(label, rows, expected, ints, floats, exact=(), rel=1e-5):
    """rows vs expected dicts in the same order: a check per row, a line per failed row
    and one line when all match."""
    ok = check_equal(len(rows), len(expected), "%s: row count" % label)
    for row, exp in zip(rows, expected):
        bad = []
        for c in ints + exact:
            if row.get(c) != exp[c]:
                bad.append("%s=%r (expected %r)" % (c, row.get(c), exp[c]))
        for c in floats:
            if not close(row.get(c), exp[c], rel):
                bad.append("%s=%r (expected %r)" % (c, row.get(c), exp[c]))
        ok &= check(not bad, "%s: feature %s" % (label, exp["feature_id"]), "; ".join(bad),
                    quiet=True)
    if ok:
        print("ok    %s: all %d rows match" % (label, len(rows)))
    return ok


def id_context(ids, mi):
    return "".join(ids[:mi]) + "\u00ab" + ids[mi] + "\u00bb" + "".join(ids[mi + 1:])


def without_tokenizer(stats, exp):
    """Without a tokenizer no token is known to be special: every position counts."""
    n = exp["n_tokens"]
    out = []
    for s in stats:
        s = dict(s)
        if "n_tokens" in s:
            s["n_tokens"] = n
        s["frequency"] = s["n_active"] / n
        if "log10_frequency" in s:
            s["log10_frequency"] = math.log10(s["frequency"] + 1e-10)
        out.append(s)
    return out


def compare_stats(label, rows, exp, tokenizer=True):
    stats = exp["feature_stats"] if tokenizer else without_tokenizer(exp["feature_stats"], exp)
    return compare_rows(label + " feature_stats", rows, stats,
                        ("feature_id", "n_tokens", "n_active"), STAT_FLOATS)


def compare_features(label, rows, exp, tokenizer=True):
    expected = []
    by_id = {(e["feature_id"], e["rank"]): e for e in exp["top_examples"]}
    for f in (exp["features"] if tokenizer else without_tokenizer(exp["features"], exp)):
        f = dict(f)
        top = by_id.get((f["feature_id"], 1))
        if not tokenizer and top:  # ids as text; separators between ids ignored
            ids = [str(t) for t in top["token_ids"]]
            f["top_token"] = ids[top["max_index"]]
            f["example"] = id_context(ids, top["max_index"])
        expected.append(f)
    if not tokenizer:
        rows = [dict(r, example=strip_ws(r.get("example"))) for r in rows]
    return compare_rows(label + " features", rows, expected,
                        ("feature_id", "n_active", "is_dead", "top_token", "example"),
                        FEATURE_FLOATS)


def strip_ws(s):
    return re.sub(r"\s+", "", s) if isinstance(s, str) else s


def compare_top_examples(label, rows, exp, tokenizer=True):
    """Every top_examples row: positions exact, the max activation exact f32, window
    activations within fp16 rounding, token texts exact (ids without a tokenizer)."""
    expected = exp["top_examples"]
    ok = check_equal(len(rows), len(expected), "%s top_examples: row count" % label)
    for row, e in zip(rows, expected):
        bad = []
        for c in ("feature_id", "rank", "sequence_id", "position", "max_index"):
            if row.get(c) != e[c]:
                bad.append("%s=%r (expected %r)" % (c, row.get(c), e[c]))
        if not same_f32(row.get("activation"), e["activation"]):
            bad.append("activation=%r (expected f32 %r)" % (row.get("activation"), e["activation"]))
        if tokenizer:
            texts, context, got_context = e["tokens"], e["context"], row.get("context")
        else:
            texts = [str(t) for t in e["token_ids"]]
            context, got_context = id_context(texts, e["max_index"]), strip_ws(row.get("context"))
        if row.get("token") != texts[e["max_index"]]:
            bad.append("token=%r (expected %r)" % (row.get("token"), texts[e["max_index"]]))
        if got_context != context:
            bad.append("context=%r (expected %r)" % (row.get("context"), context))
        toks = as_json(row.get("tokens"))
        if toks != texts:
            bad.append("tokens=%r (expected %r)" % (toks, texts))
        acts = as_json(row.get("activations"))
        if not isinstance(acts, list) or len(acts) != len(e["activations"]):
            bad.append("activations=%r (expected %r)" % (acts, e["activations"]))
        else:
            for i, (a, x) in enumerate(zip(acts, e["activations"])):
                good = same_f32(a, x) if i == e["max_index"] else close(a, x, 1e-3, 1e-6)
                if not good:
                    bad.append("activations[%d]=%r (expected %r)" % (i, a, x))
        ok &= check(not bad, "%s top_examples: feature %d rank %d"
                    % (label, e["feature_id"], e["rank"]), "; ".join(bad), quiet=True)
    if ok:
        print("ok    %s top_examples: all %d rows match" % (label, len(rows)))
    return ok


def compare_extraction(db, label, exp, extraction_id=None, tokenizer=True):
    """All three tables of one extraction (the default one if extraction_id is None)."""
    d = dump(db, extraction_id)
    ok = compare_stats(label, d["feature_stats"], exp, tokenizer)
    ok &= compare_features(label, d["features"], exp, tokenizer)
    ok &= compare_top_examples(label, d["top_examples"], exp, tokenizer)
    return ok
