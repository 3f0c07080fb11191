#!/usr/bin/env python3
"""test_cooccurrence.py: feature_cooccurrence against a brute force over the raw activations.

The input is written here: an identity SAE over 12 features and activations whose
values are multiples of 1/8 (exact in f32 and fp16, so stored values equal the input),
with planted dependencies: feature 1 mostly fires with feature 0, feature 3 only
without it, feature 4 fires on every token with the same value (variance 0, so its
correlations are NULL), feature 5 never. n_both, jaccard and the Pearson correlation
over all tokens are computed in plain Python from the activations and compared for
every feature; then ordering, joins, the extraction argument and errors.
"""
import math
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "fixtures"))
import harness as h  # noqa: E402
import safetensors_io as st  # noqa: E402
from harness import check, check_equal  # noqa: E402

CFG = h.setup(__doc__)
DB = CFG.db
D, N_SEQ, SEQ = 12, 30, 16
IDS = {}


def draw():
    """rows[t][j]: activation of feature j on token t."""
    rng = random.Random(5)
    p = [0.3, None, 0.2, None, 1.0, 0.0] + [rng.uniform(0.05, 0.4) for _ in range(D - 6)]
    rows = []
    for _ in range(N_SEQ * SEQ):
        r = [0.0] * D
        for j in range(D):
            if j == 1:
                fire = rng.random() < (0.8 if r[0] else 0.1)
            elif j == 3:
                fire = not r[0] and rng.random() < 0.5
            else:
                fire = rng.random() < p[j]
            if fire:
                r[j] = 1.0 if j == 4 else rng.randint(1, 40) / 8
        rows.append(r)
    return rows


ROWS = draw()


def write_inputs():
    d = h.tmp_path("inputs")
    sae = os.path.join(d, "sae")
    os.makedirs(sae)
    eye = [1.0 if i == j else 0.0 for i in range(D) for j in range(D)]
    st.write(os.path.join(sae, "sae_weights.safetensors"),
             [("W_enc", "F32", [D, D], eye), ("b_enc", "F32", [D], [0.0] * D),
              ("W_dec", "F32", [D, D], eye), ("b_dec", "F32", [D], [0.0] * D)])
    with open(os.path.join(sae, "cfg.json"), "w") as f:
        f.write('{"architecture": "standard", "d_in": %d, "d_sae": %d, "apply_b_dec_to_input": true, '
                '"normalize_activations": "none", "metadata": {"hook_name": "blocks.0.hook_resid_pre", '
                '"context_size": %d}}' % (D, D, SEQ))
    acts = os.path.join(d, "acts.safetensors")
    st.write(acts, [("tokens", "I32", [N_SEQ, SEQ], [t % 50 for t in range(N_SEQ * SEQ)]),
                    ("activations", "F32", [N_SEQ, SEQ, D], [v for r in ROWS for v in r])])
    return sae, acts


def brute_force(f):
    """Rows (other_id, n_both, jaccard, correlation) as docs/SQL.md defines them."""
    n = len(ROWS)
    col = [[r[j] for r in ROWS] for j in range(D)]
    out = []
    for o in range(D):
        if o == f:
            continue
        both = sum(1 for t in range(n) if col[f][t] > 0 and col[o][t] > 0)
        if not both:
            continue
        nf = sum(1 for v in col[f] if v > 0)
        no = sum(1 for v in col[o] if v > 0)
        mf, mo = sum(col[f]) / n, sum(col[o]) / n
        cov = sum((a - mf) * (b - mo) for a, b in zip(col[f], col[o])) / n
        vf = sum((a - mf) ** 2 for a in col[f]) / n
        vo = sum((b - mo) ** 2 for b in col[o]) / n
        corr = cov / math.sqrt(vf * vo) if vf > 0 and vo > 0 else None
        out.append((o, both, both / (nf + no - both), corr))
    out.sort(key=lambda r: (-r[1], r[0]))
    return out


def test_extract():
    sae, acts = write_inputs()
    IDS["one"] = h.extract(DB, sae=sae, activations=acts, top_k=3, context=2, progress="off",
                           store=h.tmp_path("store1"))
    IDS["two"] = h.extract(DB, sae=sae, activations=acts, top_k=3, context=2, progress="off",
                           store=h.tmp_path("store2"), max_sequences=10)


def test_against_brute_force():
    bad = []
    for f in range(D):
        got = h.query(DB, "SELECT other_id, n_both, jaccard, correlation FROM feature_cooccurrence(%d, %d);"
                      % (f, IDS["one"]))
        want = brute_force(f)
        if len(got) != len(want):
            bad.append("feature %d: %d rows, expected %d" % (f, len(got), len(want)))
            continue
        for g, (o, both, jac, corr) in zip(got, want):
            ok = (g["other_id"], g["n_both"]) == (o, both) and h.close(g["jaccard"], jac, 1e-12) and (
                g["correlation"] is None if corr is None else h.close(g["correlation"], corr, 1e-9, 1e-12))
            if not ok:
                bad.append("feature %d: %r, expected %r" % (f, g, (o, both, jac, corr)))
    check(not bad, "every feature: n_both, jaccard, correlation and order as the brute force", "; ".join(bad[:4]))
    corr0 = {r[0]: r[3] for r in brute_force(0)}
    check(corr0.get(1, 0) > 0.4, "planted: feature 1 correlates with feature 0 (%r)" % corr0.get(1))
    check(all(r[0] != 3 for r in brute_force(0)), "planted: feature 3 never fires with feature 0")
    rows = h.query(DB, "SELECT * FROM feature_cooccurrence(4);")
    check(rows and all(r["correlation"] is None for r in rows),
          "a feature with variance 0: correlation NULL", repr(rows[:2]))
    check_equal(h.query(DB, "SELECT * FROM feature_cooccurrence(5);"), [], "a dead feature: no rows")


def test_sql_forms():
    rows = h.query(DB, "SELECT feature_id, extraction_id, other_id FROM feature_cooccurrence "
                       "WHERE feature_id = 0 AND extraction_id = %d LIMIT 1;" % IDS["one"])
    check_equal(rows, [{"feature_id": 0, "extraction_id": IDS["one"], "other_id": brute_force(0)[0][0]}],
                "WHERE form; hidden columns read back")
    rows = h.query(DB, "SELECT c.other_id, f.n_active FROM feature_cooccurrence(0, %d) c JOIN features f "
                       "ON f.feature_id = c.other_id AND f.extraction_id = %d ORDER BY c.correlation DESC LIMIT 1;"
                       % (IDS["one"], IDS["one"]))
    best = max((r for r in brute_force(0) if r[3] is not None), key=lambda r: r[3])
    check_equal(rows[0]["other_id"], best[0], "join with features, ORDER BY correlation")
    rows = h.query(DB, "SELECT f.feature_id, c.n_both FROM features f, "
                       "feature_cooccurrence(f.feature_id, f.extraction_id) c WHERE f.extraction_id = %d "
                       "AND f.feature_id IN (0, 2) AND c.other_id = 1 ORDER BY f.feature_id;" % IDS["one"])
    want = [{"feature_id": f, "n_both": dict((r[0], r[1]) for r in brute_force(f))[1]} for f in (0, 2)]
    check_equal(rows, want, "lateral join: the argument from another table")
    n2 = h.scalar(DB, "SELECT n_both FROM feature_cooccurrence(0, %d) WHERE other_id = 1;" % IDS["two"])
    want2 = sum(1 for r in ROWS[:10 * SEQ] if r[0] > 0 and r[1] > 0)
    check_equal(n2, want2, "extraction_id argument: the 10-sequence run's counts")


def test_errors():
    h.expect_error(DB, "SELECT * FROM feature_cooccurrence(99);", "feature_cooccurrence", "no feature 99")
    h.expect_error(DB, "SELECT * FROM feature_cooccurrence(-1);", "no feature -1")
    h.expect_error(DB, "SELECT * FROM feature_cooccurrence;", "the argument feature_id is missing")
    h.expect_error(DB, "SELECT * FROM feature_cooccurrence('x');", "feature_id must be an integer")
    h.expect_error(DB, "SELECT * FROM feature_cooccurrence(0, 77);", "no extraction with id 77")


if __name__ == "__main__":
    h.run_tests(test_extract, test_against_brute_force, test_sql_forms, test_errors)
