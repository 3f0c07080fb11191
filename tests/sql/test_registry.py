#!/usr/bin/env python3
"""test_registry.py: what the extension registers, and SQLite's conventions on all of it.

1. The functions and modules a connection gets (pragma_function_list and
   pragma_module_list, less those of a shell without the extension) are exactly the
   ones docs/SQL.md's table "What the extension registers" lists; each module's hidden
   columns are the arguments that table documents, in order.
2. saelite_version() is a version string (x.y.z).
3. Every module that has hidden columns, run on one extraction of the tiny GPT-2 and
   SAE (examples/tiny) with sample arguments: f(a, b, ...) gives
   the same rows as WHERE b_col = b AND a_col = a (reversed order) and as a join that
   supplies the arguments from another table, and its hidden columns show the
   arguments; the rows are not empty. A module without sample arguments here fails
   the test, so a new one cannot be left out.
4. A required argument that nothing gives is refused when the statement is prepared
   (the shell says "Parse error"), with a message naming the argument.
5. One session touching every table and function once maps results.slr once and
   opens results.slr and tokenizer.json once each (the connection's one context),
   read from /proc/PID/maps and, where strace exists, from the openat calls.
"""
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness as h  # noqa: E402
from harness import check, check_equal  # noqa: E402

CFG = h.setup(__doc__)
DB = CFG.db
ROOT = os.path.realpath(os.path.join(HERE, "..", ".."))

TINY = os.path.join(ROOT, "examples", "tiny")

# Sample arguments per module, in hidden-column order, for extraction x whose most
# frequent feature is f.
SAMPLES = {
    "features": lambda x, f: [x],
    "feature_stats": lambda x, f: [x],
    "top_examples": lambda x, f: [x],
    "activations": lambda x, f: [x],
    "feature_histogram": lambda x, f: [f, 7, "log", x],
    "density_histogram": lambda x, f: [9, x],
    "feature_cooccurrence": lambda x, f: [f, x],
    "encode_text": lambda x, f: ["def f(x):\n    return x == 1", x],
    "feature_logits": lambda x, f: [f, 3, x],
    "token_features": lambda x, f: ["(", x],
    "search_examples": lambda x, f: ["def", x],
}


def tiny_extraction():
    """The tiny GPT-2 and SAE over a few lines of this repository's Python: the id and
    its most frequent feature."""
    ds = h.tmp_path("dataset.txt")
    with open(os.path.join(HERE, "harness.py"), encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f if line.strip()][:120]
    with open(ds, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    eid = h.extract(DB, sae=os.path.join(TINY, "sae"), model=os.path.join(TINY, "model"),
                    tokenizer=os.path.join(TINY, "tokenizer.json"), dataset=ds, top_k=5, context=3,
                    store=h.tmp_path("store"), progress="off")
    f = h.scalar(DB, "SELECT feature_id FROM features(%d) ORDER BY n_active DESC LIMIT 1;" % eid)
    return eid, f


def documented():
    """{name: (kind, [(argument, required)])} from docs/SQL.md."""
    with open(os.path.join(ROOT, "docs", "SQL.md"), encoding="utf-8") as f:
        text = f.read()
    section = text.split("## What the extension registers", 1)[1].split("\n## ", 1)[0]
    out = {}
    for line in section.splitlines():
        m = re.match(r"\|\s*`(\w+)`\s*\|\s*([^|]+?)\s*\|\s*([^|]*?)\s*\|\s*$", line)
        if not m:
            continue
        name, kind, args = m.groups()
        hidden = [(a, star == "*") for a, star in re.findall(r"`(\w+)`(\*?)", args)]
        out[name] = (kind, hidden if kind != "function" else [])
    return out


def shell_names(with_ext):
    """Functions (name/narg) and modules a connection has, with or without the extension.
    pragma_* modules are SQLite's, registered when a pragma is first used as a table."""
    sql = ("SELECT 'f', name || '/' || narg FROM pragma_function_list UNION "
           "SELECT 'm', name FROM pragma_module_list WHERE name NOT LIKE 'pragma\\_%' ESCAPE '\\';\n")
    script = (".load %s\n" % CFG.ext if with_ext else "") + ".mode list\n" + sql
    p = subprocess.run([CFG.sqlite3, ":memory:"], input=script.encode(), capture_output=True)
    if p.returncode != 0:
        raise h.SqlError(h.clean_error(p.stderr), p.returncode)
    pairs = [line.split("|", 1) for line in p.stdout.decode().splitlines() if "|" in line]
    return {k: {n for kk, n in pairs if kk == k} for k in ("f", "m")}


def our_modules():
    return shell_names(True)["m"] - shell_names(False)["m"]


def hidden_columns(name):
    rows = h.query(DB, "SELECT name FROM pragma_table_xinfo(%s) WHERE hidden > 0 ORDER BY cid;" % h.sql_str(name))
    return [r["name"] for r in rows]


def test_registered_is_documented():
    docs = documented()
    base, ours = shell_names(False), shell_names(True)
    funcs, mods = {f.split("/")[0] for f in ours["f"] - base["f"]}, ours["m"] - base["m"]
    check_equal(sorted(funcs), sorted(n for n, (k, _) in docs.items() if k == "function"),
                "registered functions = docs/SQL.md's functions")
    check_equal(sorted(mods), sorted(n for n, (k, _) in docs.items() if k != "function"),
                "registered modules = docs/SQL.md's tables and table-valued functions")
    for name in sorted(mods):
        want = [a for a, _ in docs.get(name, ("", []))[1]]
        check_equal(hidden_columns(name), want, "%s: hidden columns are the documented arguments" % name)
    version = h.scalar(DB, "SELECT saelite_version() AS v;")
    check(isinstance(version, str) and re.fullmatch(r"\d+\.\d+\.\d+", version),
          "saelite_version() is x.y.z", repr(version))


def rows_of(sql):
    return h.query(DB, sql)


def test_both_forms():
    eid, top = tiny_extraction()
    docs = documented()
    mods = sorted(our_modules())
    for name in mods:
        cols = hidden_columns(name)
        if not cols:
            continue
        if name not in SAMPLES:
            check(False, "%s: has sample arguments in this test" % name, "add it to SAMPLES")
            continue
        vals = SAMPLES[name](eid, top)
        check_equal(len(vals), len(cols), "%s: one sample per argument" % name)
        lits = [h.sql_value(v) for v in vals]
        called = rows_of("SELECT * FROM %s(%s);" % (name, ", ".join(lits)))
        where = " AND ".join("%s = %s" % (c, v) for c, v in reversed(list(zip(cols, lits))))
        wrote = rows_of("SELECT * FROM %s WHERE %s;" % (name, where))
        supplier = ", ".join("%s AS a%d" % (v, i) for i, v in enumerate(lits))
        on = " AND ".join("t.%s = p.a%d" % (c, i) for i, c in enumerate(cols))
        joined = rows_of("SELECT t.* FROM (SELECT %s) p JOIN %s t ON %s;" % (supplier, name, on))
        check(len(called) > 0, "%s(%s): gives rows" % (name, ", ".join(lits)), "no rows")
        check_equal(wrote, called, "%s: WHERE form (reversed order) = call form" % name)
        check_equal(joined, called, "%s: arguments from a joined table = call form" % name)
        shown = rows_of("SELECT DISTINCT %s FROM %s(%s);" % (", ".join(cols), name, ", ".join(lits)))
        check_equal(shown, [dict(zip(cols, vals))], "%s: the hidden columns show the arguments" % name)
        required = [a for a, req in docs[name][1] if req]
        if required:  # only the required ones given: both forms again
            n = len(required)
            short = rows_of("SELECT * FROM %s(%s);" % (name, ", ".join(lits[:n])))
            short_w = rows_of("SELECT * FROM %s WHERE %s;" % (
                name, " AND ".join("%s = %s" % (c, v) for c, v in reversed(list(zip(cols[:n], lits[:n]))))))
            check_equal(short_w, short, "%s: required arguments only, both forms" % name)
        for arg in required:
            p = h.run_sql(DB, "SELECT * FROM %s;" % name)
            err = p.stderr.decode()
            check(p.returncode != 0 and "Parse error" in err and "the argument %s is missing" % arg in err,
                  "%s without %s: refused at prepare, naming it" % (name, arg), err.strip())


def test_one_context():
    """Every table and function touched once in one session."""
    x = h.scalar(DB, "SELECT max(id) AS x FROM extractions WHERE status = 'done';")
    top = h.scalar(DB, "SELECT feature_id FROM features(%d) ORDER BY n_active DESC LIMIT 1;" % x)
    store = h.scalar(DB, "SELECT store FROM extractions WHERE id = %d;" % x)
    results = os.path.realpath(os.path.join(store, "results.slr"))
    touch = ["SELECT count(*) FROM %s(%s);" % (n, ", ".join(h.sql_value(v) for v in f(x, top)))
             for n, f in sorted(SAMPLES.items())]
    touch.append("SELECT count(*) FROM activations WHERE feature_id = %d AND extraction_id = %d;" % (top, x))
    script = "\n".join(touch) + "\n.system grep -F %s /proc/$PPID/maps | wc -l\n" % results
    p = h.run_sql(DB, script, mode="list")
    out = p.stdout.decode().split()
    check(p.returncode == 0 and out and out[-1] == "1", "results.slr is mapped once in the session",
          "mappings: %r; stderr: %s" % (out[-1:], p.stderr.decode()[:300]))
    strace = shutil.which("strace")
    if not strace:
        print("skip  strace not found: the openat count is not checked")
        return
    log = h.tmp_path("strace.log")
    dot = '"' + CFG.ext + '"'
    full = ".load %s\n.mode list\n%s\n" % (dot, "\n".join(touch))
    subprocess.run([strace, "-f", "-qq", "-e", "trace=openat", "-o", log, CFG.sqlite3, "-bail", DB],
                   input=full.encode(), capture_output=True, check=False)
    with open(log, encoding="utf-8", errors="replace") as f:
        opens = [line for line in f if "openat(" in line and "= -1" not in line]
    tok = os.path.realpath(os.path.join(TINY, "tokenizer.json"))
    n_res = sum(1 for line in opens if '/results.slr"' in line)
    n_tok = sum(1 for line in opens if '"%s"' % tok in line)
    check_equal((n_res, n_tok), (1, 1), "results.slr and tokenizer.json opened once each")


h.run_tests(test_registered_is_documented, test_both_forms, test_one_context)
