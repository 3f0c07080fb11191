#!/usr/bin/env python3
"""test_distributions.py: quantiles, feature and density histograms, dead/dense thresholds,
and range/ORDER BY handling of `features`, against values computed here from the raw
planted activations (tests/fixtures/make_fixtures.py).

The planted SAE is the identity, so feature j's activations are the planted values on
token j's rows; the store and index keep them fp16-rounded, which is what quantiles
and histograms are computed from (numpy's default percentile, by hand). A second,
synthetic SAE of 100,000 features checks that a range + ORDER BY + LIMIT query on
`features` stays fast; its timings are printed.
"""
import math
import os
import random
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "fixtures"))
import harness as h  # noqa: E402
import safetensors_io as st  # noqa: E402
from harness import check, check_equal  # noqa: E402

CFG = h.setup(__doc__)
DB = CFG.db
DEAD = 15


def planted_values():
    """Per feature: the stored (fp16) values of its active tokens, and n_tokens
    (token 15 is special with the tokenizer: not counted)."""
    t = st.read(h.planted("acts.safetensors"))
    tokens, acts = t["tokens"][2], t["activations"][2]
    d = t["activations"][1][2]
    stored = [[] for _ in range(d)]
    for row, tok in enumerate(tokens):
        for j in range(d):
            v = acts[row * d + j]
            if v > 0:
                stored[j].append(st.f16(v))
    return stored, sum(1 for tok in tokens if tok != DEAD)


STORED, N_TOKENS = planted_values()
D_SAE = len(STORED)


def percentile(vals, q):
    """numpy.percentile(vals, q) with the default linear interpolation."""
    a = sorted(vals)
    pos = (len(a) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(a) - 1)
    return a[lo] + (a[hi] - a[lo]) * (pos - lo)


def bin_of(v, lo, hi, n):
    return min(n - 1, max(0, math.floor((v - lo) / (hi - lo) * n)))


def histogram(vals, n, log):
    """(bin_lo, bin_hi, count) rows as docs/SQL.md defines them."""
    lo, hi = min(vals), max(vals)
    if lo == hi:
        return [(lo, hi, len(vals))]
    f = math.log10 if log else (lambda v: v)
    a, z = f(lo), f(hi)
    counts = [0] * n
    for v in vals:
        counts[bin_of(f(v), a, z, n)] += 1
    edge = (lambda x: 10 ** x) if log else (lambda x: x)
    rows = []
    for i in range(n):
        b_lo = lo if i == 0 else edge(a + (z - a) * i / n)
        b_hi = hi if i == n - 1 else edge(a + (z - a) * (i + 1) / n)
        rows.append((b_lo, b_hi, counts[i]))
    return rows


def same_rows(got, want, label):
    ok = check_equal(len(got), len(want), "%s: row count" % label)
    bad = []
    for i, (r, w) in enumerate(zip(got, want)):
        if r["count"] != w[2] or not h.close(r["bin_lo"], w[0], 1e-9) or not h.close(r["bin_hi"], w[1], 1e-9):
            bad.append("bin %d: %r, expected %r" % (i, r, w))
    return check(ok and not bad, "%s: bins and counts" % label, "; ".join(bad[:3]))


def test_extract():
    h.extract(DB, **h.planted_opts(h.tmp_path("store1")))


def test_quantiles():
    rows = h.query(DB, "SELECT feature_id, p50, p90, p99 FROM feature_stats ORDER BY feature_id;")
    check_equal(len(rows), D_SAE, "feature_stats: one row per feature")
    bad = []
    for r in rows:
        j = r["feature_id"]
        if j == DEAD:
            if (r["p50"], r["p90"], r["p99"]) != (None, None, None):
                bad.append("dead feature %d: %r" % (j, r))
            continue
        for q in (50, 90, 99):
            want = percentile(STORED[j], q)
            if not h.close(r["p%d" % q], want, 1e-6):
                bad.append("feature %d p%d = %r, expected %r" % (j, q, r["p%d" % q], want))
    check(not bad, "p50/p90/p99 = numpy percentiles of the stored values; NULL for the dead feature",
          "; ".join(bad[:4]))


def test_feature_histogram():
    for j in (0, 3, 12):
        rows = h.query(DB, "SELECT bin_lo, bin_hi, count FROM feature_histogram(%d);" % j)
        same_rows(rows, histogram(STORED[j], 50, False), "feature %d, default 50 linear bins" % j)
        check_equal(sum(r["count"] for r in rows), len(STORED[j]), "feature %d: counts sum to n_active" % j)
        rows = h.query(DB, "SELECT * FROM feature_histogram(%d, 7);" % j)
        same_rows(rows, histogram(STORED[j], 7, False), "feature %d, 7 linear bins" % j)
        rows = h.query(DB, "SELECT * FROM feature_histogram(%d, 6, 'log');" % j)
        same_rows(rows, histogram(STORED[j], 6, True), "feature %d, 6 log bins" % j)
    rows = h.query(DB, "SELECT * FROM feature_histogram WHERE feature_id = 5 AND bins = 3 AND scale = 'linear';")
    same_rows(rows, histogram(STORED[5], 3, False), "WHERE form of the arguments")
    rows = h.query(DB, "SELECT feature_id, bins, scale, extraction_id FROM feature_histogram(5, 3, 'log') LIMIT 1;")
    check_equal(rows, [{"feature_id": 5, "bins": 3, "scale": "log", "extraction_id": 1}],
                "hidden argument columns read back")
    check_equal(h.query(DB, "SELECT * FROM feature_histogram(%d);" % DEAD), [], "dead feature: no bins")


def test_density_histogram():
    live = [math.log10(len(v) / N_TOKENS) for v in STORED if v]
    for n in (50, 4):
        rows = h.query(DB, "SELECT * FROM density_histogram(%d);" % n)
        check(rows and rows[0]["bin_lo"] is None and rows[0]["bin_hi"] is None and rows[0]["count"] == 1,
              "density_histogram(%d): first row is the dead feature (NULL bounds, count 1)" % n, repr(rows[:1]))
        same_rows(rows[1:], histogram(live, n, False), "density_histogram(%d) of log10 frequency" % n)
    rows = h.query(DB, "SELECT * FROM density_histogram WHERE extraction_id = 1;")
    check_equal(len(rows), 51, "density_histogram: default 50 bins plus the dead row")


def test_errors():
    h.expect_error(DB, "SELECT * FROM feature_histogram(99);", "feature_histogram", "no feature 99")
    h.expect_error(DB, "SELECT * FROM feature_histogram(-1);", "no feature -1")
    h.expect_error(DB, "SELECT * FROM feature_histogram(0, 0);", "bins must be an integer from 1")
    h.expect_error(DB, "SELECT * FROM feature_histogram(0, -3);", "bins must be an integer from 1")
    h.expect_error(DB, "SELECT * FROM feature_histogram(0, 2.5);", "bins must be an integer from 1")
    h.expect_error(DB, "SELECT * FROM feature_histogram(0, 10, 'cubic');", "scale must be 'linear' or 'log'",
                   "cubic")
    h.expect_error(DB, "SELECT * FROM feature_histogram;", "the argument feature_id is missing")
    h.expect_error(DB, "SELECT * FROM feature_histogram('x');", "feature_id must be an integer")
    h.expect_error(DB, "SELECT * FROM feature_histogram(0, 10, 'linear', 42);", "no extraction with id 42")
    h.expect_error(DB, "SELECT * FROM density_histogram(0);", "density_histogram", "bins must be an integer")
    h.expect_error(DB, "SELECT * FROM density_histogram(10, 42);", "no extraction with id 42")


def flags(eid):
    rows = h.query(DB, "SELECT feature_id, frequency, is_dead, is_dense FROM features WHERE extraction_id = %d "
                       "ORDER BY feature_id;" % eid)
    return ({r["feature_id"] for r in rows if r["is_dead"]}, {r["feature_id"] for r in rows if r["is_dense"]})


def test_thresholds():
    row = h.extraction_row(DB, 1)
    check_equal((row["dead_threshold"], row["dense_threshold"]), (0, 0.1), "default thresholds 0 and 0.1")
    check_equal(flags(1), ({DEAD}, set()), "defaults: only the never-firing feature is dead, none dense")
    freq = sorted(len(v) / N_TOKENS for v in STORED if v)
    dead_t, dense_t = freq[2], freq[-4]
    h.query(DB, "UPDATE extractions SET dead_threshold = %r, dense_threshold = %r WHERE id = 1;" % (dead_t, dense_t))
    want_dead = {j for j, v in enumerate(STORED) if len(v) / N_TOKENS <= dead_t}
    want_dense = {j for j, v in enumerate(STORED) if len(v) / N_TOKENS > dense_t}
    check(len(want_dead) >= 4 and len(want_dense) >= 1, "thresholds chosen inside the data",
          repr((want_dead, want_dense)))
    check_equal(flags(1), (want_dead, want_dense), "UPDATE thresholds: is_dead = frequency <= dead_threshold, "
                "is_dense = frequency > dense_threshold")
    two = h.extract(DB, **h.planted_opts(h.tmp_path("store2")))
    check_equal(flags(two), ({DEAD}, set()), "thresholds belong to one extraction")
    h.expect_error(DB, "UPDATE extractions SET dense_threshold = 2 WHERE id = 1;", "CHECK constraint")
    h.expect_error(DB, "UPDATE extractions SET dead_threshold = NULL WHERE id = 1;", "NOT NULL")
    h.query(DB, "UPDATE extractions SET dead_threshold = 0, dense_threshold = 0.1 WHERE id = 1;")


def test_old_database_gets_columns():
    """A database whose extractions table predates the thresholds gets them on load."""
    old = h.tmp_path("old.db")
    ddl = h.scalar(DB, "SELECT sql FROM sqlite_master WHERE name = 'extractions';")
    old_ddl = re.sub(r",\s*dead_threshold.*\)\s*$", ")", ddl, flags=re.S)
    check("dead_threshold" not in old_ddl and old_ddl.endswith(")"), "old DDL without the thresholds", old_ddl)
    p = subprocess.run([CFG.sqlite3, old], input=(old_ddl + ";\nINSERT INTO extractions(name, status) "
                                                  "VALUES ('old run', 'done');\n").encode(),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    check_equal(p.returncode, 0, "old database created without the extension")
    rows = h.query(old, "SELECT name, dead_threshold, dense_threshold FROM extractions;")
    check_equal(rows, [{"name": "old run", "dead_threshold": 0, "dense_threshold": 0.1}],
                "loading the extension adds dead_threshold and dense_threshold with their defaults")


def test_ranges_and_order():
    """Range constraints and ORDER BY handled by the table give exactly the rows and
    order that SQLite gives over a plain copy of the table."""
    h.query(DB, "DROP TABLE IF EXISTS fcopy; CREATE TABLE fcopy AS SELECT * FROM features WHERE extraction_id = 1;"
                "DROP TABLE IF EXISTS scopy; CREATE TABLE scopy AS SELECT * FROM feature_stats WHERE extraction_id = 1;")
    freq = sorted({len(v) / N_TOKENS for v in STORED if v})
    a, b = freq[3], freq[-3]
    some_max = h.scalar(DB, "SELECT max_activation FROM features WHERE feature_id = 4;")
    cases = [
        ("frequency BETWEEN %r AND %r" % (a, b), "frequency DESC", None),
        ("frequency > %r" % a, "frequency", None),
        ("frequency >= %r AND frequency < %r" % (a, b), "frequency", 3),
        ("max_activation >= %r" % some_max, "max_activation DESC", None),
        ("max_activation > %r" % some_max, "max_activation", None),
        ("max_activation <= %r" % some_max, "max_activation DESC", 2),
        ("n_active < 60", "n_active", None),
        ("n_active >= 60 AND max_activation < 10", None, None),
        ("frequency > '0.05'", "frequency", None),
        ("frequency > NULL", "frequency", None),
        ("frequency > 0", "frequency DESC", 4),
        ("1", "max_activation DESC", 5),
        ("n_active > 55 AND n_active <= 70", "frequency DESC", None),
    ]
    key_col = {"frequency": "frequency", "max_activation": "max_activation", "n_active": "n_active"}
    for where, order, limit in cases:
        tail = " WHERE %s%s%s" % (where, " ORDER BY " + order if order else "",
                                   " LIMIT %d" % limit if limit else "")
        got = h.query(DB, "SELECT feature_id, frequency, max_activation, n_active, is_dead FROM features" + tail)
        want = h.query(DB, "SELECT feature_id, frequency, max_activation, n_active, is_dead FROM fcopy" + tail)
        if order:  # ties may come in another order: compare the key sequence, then the rows as sets
            col = key_col[order.split()[0]]
            same = [r[col] for r in got] == [r[col] for r in want] and (
                limit or sorted(map(repr, got)) == sorted(map(repr, want)))
        else:
            same = sorted(map(repr, got)) == sorted(map(repr, want))
        check(same, "features%s: as over a plain table (%d rows)" % (tail, len(want)),
              "got %r, expected %r" % (got[:5], want[:5]))
    got = h.query(DB, "SELECT feature_id, max FROM feature_stats WHERE max > 9.9 ORDER BY log10_frequency DESC;")
    want = h.query(DB, "SELECT feature_id, max FROM scopy WHERE max > 9.9 ORDER BY log10_frequency DESC;")
    check(sorted(map(repr, got)) == sorted(map(repr, want)) and len(got) == len(want),
          "feature_stats: max range, ORDER BY log10_frequency", repr((got, want)))
    plan = h.explain(DB, "SELECT * FROM features WHERE frequency BETWEEN 0.01 AND 0.1 ORDER BY frequency DESC LIMIT 50")
    check("frequency>=?" in plan and "frequency<=?" in plan and "ORDER BY n_active DESC" in plan
          and "TEMP B-TREE" not in plan, "plan: ranges and ORDER BY handled by the table, no sorter", plan.strip())


# ---- 100,000 features ---------------------------------------------------------------
BIG_D_SAE, BIG_D_IN, BIG_SEQ, BIG_N_SEQ = 100000, 8, 32, 64


def write_big_inputs(d):
    """A standard SAE whose unit-norm encoder columns have biases from -4.6 to -2,
    so feature frequencies spread over three decades; random inputs."""
    rng = random.Random(11)
    sae = os.path.join(d, "sae")
    os.makedirs(sae)
    w = [rng.gauss(0, 1) for _ in range(BIG_D_IN * BIG_D_SAE)]
    norms = [math.sqrt(sum(w[i * BIG_D_SAE + f] ** 2 for i in range(BIG_D_IN))) for f in range(BIG_D_SAE)]
    w_enc = [w[i * BIG_D_SAE + f] / norms[f] for i in range(BIG_D_IN) for f in range(BIG_D_SAE)]
    bias = [-2.0 - 2.6 * rng.random() for _ in range(BIG_D_SAE)]
    st.write(os.path.join(sae, "sae_weights.safetensors"),
             [("W_enc", "F32", [BIG_D_IN, BIG_D_SAE], w_enc), ("b_enc", "F32", [BIG_D_SAE], bias),
              ("W_dec", "F32", [BIG_D_SAE, BIG_D_IN], [0.0] * (BIG_D_IN * BIG_D_SAE)),
              ("b_dec", "F32", [BIG_D_IN], [0.0] * BIG_D_IN)])
    with open(os.path.join(sae, "cfg.json"), "w") as f:
        f.write('{"architecture": "standard", "d_in": %d, "d_sae": %d, "apply_b_dec_to_input": true, '
                '"normalize_activations": "none", "metadata": {"hook_name": "blocks.0.hook_resid_pre", '
                '"context_size": %d}}' % (BIG_D_IN, BIG_D_SAE, BIG_SEQ))
    n = BIG_N_SEQ * BIG_SEQ
    acts = os.path.join(d, "acts.safetensors")
    st.write(acts, [("tokens", "I32", [BIG_N_SEQ, BIG_SEQ], [rng.randrange(1000) for _ in range(n)]),
                    ("activations", "F32", [BIG_N_SEQ, BIG_SEQ, BIG_D_IN],
                     [rng.gauss(0, 1) for _ in range(n * BIG_D_IN)])])
    return sae, acts


def timed(db, sql, repeat):
    """Runs sql `repeat` times in one shell with .timer on; the real seconds of each run."""
    p = h.run_sql(db, ".timer on\n" + (sql + "\n") * repeat, mode="list")
    if p.returncode != 0:
        raise h.SqlError(h.clean_error(p.stderr), p.returncode)
    out = p.stdout.decode()
    return [float(x) for x in re.findall(r"Run Time: real ([0-9.]+)", out)], out


def test_100k_features_fast():
    d = h.tmp_path("big")
    os.makedirs(d)
    sae, acts = write_big_inputs(d)
    db = h.tmp_path("big.db")
    eid = h.extract(db, sae=sae, activations=acts, top_k=1, context=0, progress="off", store=os.path.join(d, "store"))
    stats = h.query(db, "SELECT count(*) AS n, sum(n_active > 0) AS live, min(frequency) AS lo, max(frequency) AS hi "
                        "FROM features WHERE extraction_id = %d;" % eid)[0]
    print("100k SAE: %r" % stats)
    check(stats["n"] == BIG_D_SAE and stats["live"] > BIG_D_SAE // 2, "100k features, most of them live", repr(stats))
    lo, hi = 0.001, 0.02
    q = ("SELECT * FROM features WHERE frequency BETWEEN %r AND %r ORDER BY frequency DESC LIMIT 50;" % (lo, hi))
    got = h.query(db, q)
    ref = h.query(db, "SELECT feature_id, frequency FROM features WHERE extraction_id = %d;" % eid)
    want = sorted((r["frequency"] for r in ref if lo <= r["frequency"] <= hi), reverse=True)[:50]
    check(len(got) == 50 and [r["frequency"] for r in got] == want,
          "100k: BETWEEN + ORDER BY frequency DESC LIMIT 50 gives the 50 highest in range")
    times, _ = timed(db, q, 3)
    print("100k features, %s\n  first run (sorts the features once): %.1f ms, then %s ms"
          % (q, 1000 * times[0], ", ".join("%.1f" % (1000 * t) for t in times[1:])))
    check(len(times) == 3 and max(times[1:]) < 0.05, "100k: the query takes < 50 ms once sorted", repr(times))
    check(times[0] < 0.5, "100k: first query, sort included, < 500 ms", repr(times))
    times, _ = timed(db, "SELECT feature_id, frequency FROM features WHERE n_active BETWEEN 10 AND 20 "
                         "AND max_activation > 1.5;", 2)
    print("100k features, unordered range scan: %s ms" % ", ".join("%.1f" % (1000 * t) for t in times))
    check(max(times) < 0.2, "100k: unordered range scan < 200 ms", repr(times))


if __name__ == "__main__":
    h.run_tests(test_extract, test_quantiles, test_feature_histogram, test_density_histogram, test_errors,
                test_thresholds, test_old_database_gets_columns, test_ranges_and_order, test_100k_features_fast)
