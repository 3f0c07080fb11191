#!/usr/bin/env python3
"""test_labels.py: feature_labels is a plain table written with INSERT/UPDATE; its
label shows in `features.label`, survives re-opening the database (every query here
is a new process) and belongs to one extraction."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from harness import check_equal  # noqa: E402

CFG = h.setup(__doc__)
DB = CFG.db


def labels(eid):
    return {r["feature_id"]: r["label"] for r in
            h.query(DB, "SELECT feature_id, label FROM features WHERE extraction_id = %d AND label IS NOT NULL;" % eid)}


def test_labels():
    one = h.extract(DB, **h.planted_opts(h.tmp_path("s1")))
    two = h.extract(DB, **h.planted_opts(h.tmp_path("s2")))
    h.run_sql(DB, "INSERT INTO feature_labels(extraction_id, feature_id, label, description, favorite) "
                  "VALUES (%d, 3, 'closing paren', 'fires on )', 1), (%d, 5, 'digit zero', NULL, 0);" % (one, one))
    check_equal(labels(one), {3: "closing paren", 5: "digit zero"}, "labels show in features.label")
    check_equal(labels(two), {}, "labels belong to their extraction")
    h.run_sql(DB, "UPDATE feature_labels SET label = 'right paren' WHERE extraction_id = %d AND feature_id = 3;" % one)
    check_equal(labels(one)[3], "right paren", "UPDATE changes the label")
    fav = h.query(DB, "SELECT f.feature_id FROM features f JOIN feature_labels l ON l.feature_id = f.feature_id "
                      "AND l.extraction_id = %d WHERE f.extraction_id = %d AND l.favorite;" % (one, one))
    check_equal(fav, [{"feature_id": 3}], "favorites join back to features")


h.run_tests(test_labels)
