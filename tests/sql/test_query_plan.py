#!/usr/bin/env python3
"""test_query_plan.py: feature_id lookups are index lookups, and give the right rows.

EXPLAIN QUERY PLAN of `WHERE feature_id = ?` and `feature_id IN (...)` on each virtual
table must show the index the extension chose (its idxStr names feature_id), while a
plain `SELECT *` shows a scan without it. Then the rows those queries return (and a
few other filters, which SQLite applies on top) are compared with expected.json.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from harness import check, check_equal  # noqa: E402

CFG = h.setup(__doc__)
DB = CFG.db
EXP = h.load_expected("expected.json")
TABLES = ("top_examples", "features", "feature_stats")


def plan_uses_index(sql):
    plan = h.explain(DB, sql)
    return "VIRTUAL TABLE INDEX" in plan and "feature_id" in plan, plan.strip()


def test_extract():
    h.extract(DB, **h.planted_opts(h.tmp_path("store1")))


def test_plans():
    for t in TABLES:
        for cond in ("feature_id = 3", "feature_id IN (1, 2)", "extraction_id = 1 AND feature_id = 3",
                     "feature_id = ?1"):
            used, plan = plan_uses_index("SELECT * FROM %s WHERE %s" % (t, cond))
            check(used, "%s WHERE %s: index lookup" % (t, cond), plan)
        plan = h.explain(DB, "SELECT * FROM %s" % t)
        check("VIRTUAL TABLE INDEX" in plan and "feature_id" not in plan,
              "%s without WHERE: plain scan" % t, plan.strip())
    used, plan = plan_uses_index("SELECT f.feature_id, t.rank FROM features f "
                                 "JOIN top_examples t ON t.feature_id = f.feature_id")
    check(used, "join on feature_id: lookups into the inner table", plan)


def expected_examples(ids):
    return [(e["feature_id"], e["rank"], e["sequence_id"], e["position"])
            for e in EXP["top_examples"] if e["feature_id"] in ids]


def examples(where):
    rows = h.query(DB, "SELECT feature_id, rank, sequence_id, position FROM top_examples "
                       "WHERE kind = 'top' AND %s ORDER BY feature_id, rank;" % where)
    return [(r["feature_id"], r["rank"], r["sequence_id"], r["position"]) for r in rows]


def feature_ids(table, where):
    rows = h.query(DB, "SELECT feature_id FROM %s WHERE %s ORDER BY feature_id;" % (table, where))
    return [r["feature_id"] for r in rows]


def test_lookup_results():
    check_equal(examples("feature_id = 3"), expected_examples({3}), "top_examples feature_id = 3")
    check_equal(examples("feature_id IN (1, 2)"), expected_examples({1, 2}),
                "top_examples feature_id IN (1, 2)")
    check_equal(examples("feature_id IN (2, 1, 2)"), expected_examples({1, 2}),
                "top_examples IN with a duplicate")
    check_equal(examples("feature_id IN (SELECT 4 UNION SELECT 9)"), expected_examples({4, 9}),
                "top_examples IN (subquery)")
    check_equal(examples("feature_id = 3 AND rank = 2"),
                [x for x in expected_examples({3}) if x[1] == 2], "feature_id = 3 AND rank = 2")
    check_equal(examples("feature_id = 15"), [], "dead feature: no examples")
    check_equal(examples("feature_id = -1"), [], "feature_id -1: nothing")
    check_equal(examples("feature_id = 16"), [], "feature_id = d_sae: nothing")
    check_equal(examples("feature_id IN (0, 99, 14)"), expected_examples({0, 14}),
                "IN with an id out of range")
    for t in ("features", "feature_stats"):
        check_equal(feature_ids(t, "feature_id = 7"), [7], "%s feature_id = 7" % t)
        check_equal(feature_ids(t, "feature_id IN (1, 14, 15)"), [1, 14, 15],
                    "%s feature_id IN (1, 14, 15)" % t)
        check_equal(feature_ids(t, "feature_id IN (0, 99)"), [0], "%s IN with 99" % t)
        check_equal(feature_ids(t, "feature_id > 12"), [13, 14, 15], "%s feature_id > 12 (scan)" % t)
        check_equal(feature_ids(t, "feature_id = 1000000"), [], "%s feature_id = 1000000" % t)
    stats = h.query(DB, "SELECT * FROM feature_stats WHERE feature_id IN (5, 6) ORDER BY feature_id;")
    h.compare_rows("IN (5, 6)", stats, [EXP["feature_stats"][5], EXP["feature_stats"][6]],
                   ("feature_id", "n_tokens", "n_active"), h.STAT_FLOATS)
    n = h.scalar(DB, "SELECT count(*) AS n FROM features f JOIN top_examples t "
                     "ON t.feature_id = f.feature_id WHERE f.is_dead = 0 AND t.kind = 'top';")
    check_equal(n, len(EXP["top_examples"]), "join features x top_examples row count")


if __name__ == "__main__":
    h.run_tests(test_extract, test_plans, test_lookup_results)
