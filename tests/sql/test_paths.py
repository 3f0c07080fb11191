#!/usr/bin/env python3
"""test_paths.py: an extraction made with relative paths browses from anywhere.

The tiny GPT-2 and SAE (examples/tiny) over a small text dataset, started in a
project directory with every path relative (sae, model, tokenizer, dataset, and one
store given relative to that directory; the other store is the default, beside the
database). The expected rows are those of the session that made the extraction
(token texts, not ids). Then:
1. the same queries from another working directory give the same rows: token texts
   in top_examples.context, search_examples finds the text, token_features('(')
   resolves the token, encode_text runs, check_extraction says ok;
2. extractions.paths holds absolute inputs and the default store relative to the
   database's directory, while the columns keep the paths as given;
3. the database moved together with its stores (the directory renamed) still
   browses the same from a third directory, the store beside it found relative to
   it; resume_extraction there (the run marked failed) reopens its inputs and store;
4. a model directory with its own tokenizer.json needs no 'tokenizer' option;
5. a tokenizer that can no longer be found is an error naming the file, never ids;
   after UPDATE ... paths = json_set(paths, '$.tokenizer', ...) it browses again.
"""
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness as h  # noqa: E402
from harness import check, check_equal  # noqa: E402

CFG = h.setup(__doc__)
ROOT = os.path.realpath(os.path.join(HERE, "..", ".."))
TINY = os.path.join(ROOT, "examples", "tiny")


def sql_in(cwd, db, sql):
    """Rows of sql run by the shell in working directory cwd; raises SqlError."""
    script = '.load "%s"\n.mode json\n%s\n' % (CFG.ext, sql)
    p = subprocess.run([CFG.sqlite3, "-bail", db], input=script.encode(), cwd=cwd, capture_output=True,
                       timeout=600)
    if p.returncode != 0:
        raise h.SqlError(h.clean_error(p.stderr), p.returncode)
    return [r for rows in h.parse_json_arrays(p.stdout.decode()) for r in rows]


BROWSE = [
    "SELECT feature_id, rank, token, context FROM top_examples WHERE extraction_id = {x} AND kind = 'top' "
    "ORDER BY feature_id, rank LIMIT 300;",
    "SELECT feature_id, rank, context FROM search_examples('return', {x});",
    "SELECT feature_id, n_on_token FROM token_features('(', {x});",
    "SELECT position, token, feature_id, activation FROM encode_text('x = f(1)', {x});",
    "SELECT check_extraction({x}) AS check_result;",
]


def browse(cwd, db, x):
    return [sql_in(cwd, db, q.format(x=x)) for q in BROWSE]


def test_paths():
    proj = h.tmp_path("proj")
    os.makedirs(os.path.join(proj, "inputs"))
    for name in ("sae", "model"):
        shutil.copytree(os.path.join(TINY, name), os.path.join(proj, "inputs", name))
    shutil.copy(os.path.join(TINY, "tokenizer.json"), os.path.join(proj, "inputs", "tokenizer.json"))
    with open(os.path.join(HERE, "harness.py"), encoding="utf-8") as f:
        lines = [json.dumps({"text": line.rstrip("\n")}) for line in f if line.strip()][:150]
    with open(os.path.join(proj, "inputs", "docs.jsonl"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.makedirs(os.path.join(proj, "data"))
    db = os.path.join(proj, "data", "x.db")
    rel = dict(sae="inputs/sae", model="inputs/model", tokenizer="inputs/tokenizer.json",
               dataset="inputs/docs.jsonl", top_k=5, context=3, progress="off")
    x1 = sql_in(proj, "data/x.db", h.extract_sql(**rel))[0]["id"]
    x2 = sql_in(proj, "data/x.db", h.extract_sql(store="data/stores/second", **rel))[0]["id"]
    want1, want2 = browse(proj, "data/x.db", x1), browse(proj, "data/x.db", x2)
    check(len(want1[0]) > 20 and not all(r["context"].replace(" ", "").replace("«", "").replace("»", "").isdigit()
                                         for r in want1[0]),
          "made in the project directory: token texts in top_examples", repr(want1[0][:2]))
    check(len(want1[1]) > 0 and len(want1[2]) > 0 and len(want1[3]) > 0,
          "search_examples, token_features and encode_text give rows there")
    check_equal(want1[4], [{"check_result": "ok"}], "check_extraction: ok")

    other = h.tmp_path("elsewhere")
    os.makedirs(other)
    check_equal(browse(other, db, x1), want1, "extraction 1 (default store) from another directory: same rows")
    check_equal(browse(other, db, x2), want2, "extraction 2 (relative store) from another directory: same rows")

    row = sql_in(other, db, "SELECT sae, tokenizer, store, paths FROM extractions WHERE id = %d;" % x1)[0]
    paths = json.loads(row["paths"])
    check_equal((row["sae"], row["tokenizer"]), ("inputs/sae", "inputs/tokenizer.json"),
                "the columns keep the paths as given")
    check_equal(paths["sae"], os.path.realpath(os.path.join(proj, "inputs", "sae")), "paths.sae is absolute")
    check_equal(paths["dataset"], os.path.realpath(os.path.join(proj, "inputs", "docs.jsonl")),
                "paths.dataset is absolute")
    check_equal(paths["store"], "x.db-saelite/extraction-%d" % x1,
                "paths.store: the default store, relative to the database's directory")
    row2 = json.loads(sql_in(other, db, "SELECT paths FROM extractions WHERE id = %d;" % x2)[0]["paths"])
    check_equal(row2["store"], "stores/second", "paths.store: a relative store under the database's directory")

    moved = h.tmp_path("moved")
    os.rename(os.path.join(proj, "data"), moved)
    mdb = os.path.join(moved, "x.db")
    third = h.tmp_path("third")
    os.makedirs(third)
    check_equal(browse(third, mdb, x1), want1, "database and stores moved together: extraction 1 the same")
    check_equal(browse(third, mdb, x2), want2, "database and stores moved together: extraction 2 the same")

    # Marked failed, resumed from the moved database in yet another directory: the run
    # reopens its inputs by their recorded paths and its moved store, and finishes.
    sql_in(third, mdb, "UPDATE extractions SET status = 'failed' WHERE id = %d;" % x2)
    got = sql_in(h.tmp_path(), mdb, "SELECT resume_extraction(%d) AS id;" % x2)
    check_equal(got, [{"id": x2}], "resume_extraction from another directory after the move: done")
    check_equal(browse(third, mdb, x2), want2, "resumed extraction: the same rows")

    # A model directory with its own tokenizer.json: the run's tokenizer without the option.
    own = os.path.join(proj, "inputs", "model_with_tokenizer")
    shutil.copytree(os.path.join(TINY, "model"), own)
    shutil.copy(os.path.join(TINY, "tokenizer.json"), os.path.join(own, "tokenizer.json"))
    no_tok = {k: v for k, v in rel.items() if k != "tokenizer"}
    no_tok["model"] = "inputs/model_with_tokenizer"
    x4 = sql_in(proj, mdb, h.extract_sql(store=os.path.join(moved, "stores", "own"), **no_tok))[0]["id"]
    row4 = sql_in(third, mdb, "SELECT tokenizer, paths FROM extractions WHERE id = %d;" % x4)[0]
    check_equal((row4["tokenizer"], json.loads(row4["paths"])["tokenizer"]),
                ("inputs/model_with_tokenizer/tokenizer.json", os.path.realpath(os.path.join(own, "tokenizer.json"))),
                "no 'tokenizer' option: the model directory's tokenizer.json, recorded like a given one")
    check_equal(browse(third, mdb, x4)[0], want1[0], "and the rows are those of the same run with the option")

    os.rename(os.path.join(proj, "inputs", "tokenizer.json"), os.path.join(proj, "inputs", "tok-moved.json"))
    for q in ("SELECT context FROM top_examples WHERE extraction_id = %d LIMIT 1;" % x1,
              "SELECT * FROM encode_text('x = 1', %d);" % x1):
        try:
            rows = sql_in(third, mdb, q)
            check(False, "tokenizer gone: %s is an error" % q.split(" FROM ")[1][:30], "rows: %r" % rows[:1])
        except h.SqlError as e:
            check("tokenizer" in e.message and "tokenizer.json" in e.message,
                  "tokenizer gone: an error naming the file (%s)" % q.split(" FROM ")[1][:20], e.message)
    new_tok = os.path.join(proj, "inputs", "tok-moved.json")
    sql_in(third, mdb, "UPDATE extractions SET paths = json_set(paths, '$.tokenizer', %s) WHERE id = %d;"
           % (h.sql_str(new_tok), x1))
    check_equal(browse(third, mdb, x1), want1, "after recording the tokenizer's new path: the same rows again")


h.run_tests(test_paths)
