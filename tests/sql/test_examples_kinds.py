#!/usr/bin/env python3
"""test_examples_kinds.py: the interval and random examples of top_examples.

Planted dataset (feature j fires exactly on token j): every sampled example must be an
active token of its feature with its stored (fp16) value, inside its interval
(lo, hi] of [0, max] cut in equal widths, with the interval's share of the feature's
active tokens as counted here from the raw activations; as many examples per interval
and random ones as the options say (or all there are); the same rows on every query;
windows, tokens and activations as read from the planted data. kind = 'top' needs no
index; other kinds without one are an error naming it. A text dataset run checks the
documents and character spans of sampled examples against the top examples'.
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "fixtures"))
import harness as h  # noqa: E402
import safetensors_io as st  # noqa: E402
from harness import check, check_equal  # noqa: E402

CFG = h.setup(__doc__)
DB = CFG.db
EXP = h.load_expected("expected.json")
SEQ_LEN, CONTEXT, DEAD = EXP["seq_len"], EXP["context"], 15
STRINGS = EXP["token_strings"]
IDS = {}


def planted():
    t = st.read(h.planted("acts.safetensors"))
    tokens, acts = t["tokens"][2], t["activations"][2]
    d = t["activations"][1][2]
    active = [dict() for _ in range(d)]  # feature -> {row: stored value}
    for row in range(len(tokens)):
        for j in range(d):
            if acts[row * d + j] > 0:
                active[j][row] = st.f16(acts[row * d + j])
    return tokens, active


TOKENS, ACTIVE = planted()


def intervals_of(j, n):
    """Edges (max * i / n) and per-interval counts of feature j's stored values."""
    mx = max(ACTIVE[j].values())
    edges = [mx * i / n for i in range(n)] + [mx]
    counts = [0] * n
    for v in ACTIVE[j].values():
        counts[next(i for i in range(n) if v <= edges[i + 1])] += 1
    return edges, counts


def rows_of(eid, j, kind):
    return h.query(DB, "SELECT * FROM top_examples WHERE extraction_id = %d AND feature_id = %d AND kind = '%s' "
                       "ORDER BY rank;" % (eid, j, kind))


def window_problems(j, r):
    """What is wrong with an example's window, sequence and activation (a list)."""
    s, p = r["sequence_id"], r["position"]
    row = s * SEQ_LEN + p
    bad = []
    if row not in ACTIVE[j]:
        return ["(%d, %d) is not an active token of feature %d" % (s, p, j)]
    if not h.same_f32(r["activation"], ACTIVE[j][row]):
        bad.append("activation %r, stored %r" % (r["activation"], ACTIVE[j][row]))
    lo, hi = max(0, p - CONTEXT), min(SEQ_LEN - 1, p + CONTEXT)
    ids = TOKENS[s * SEQ_LEN + lo:s * SEQ_LEN + hi + 1]
    texts = [STRINGS[t] for t in ids]
    acts = [ACTIVE[j].get(s * SEQ_LEN + q, 0.0) for q in range(lo, hi + 1)]
    if h.as_json(r["tokens"]) != texts:
        bad.append("tokens %r, expected %r" % (r["tokens"], texts))
    got_acts = h.as_json(r["activations"])
    if not isinstance(got_acts, list) or len(got_acts) != len(acts) or \
            not all(h.same_f32(a, b) for a, b in zip(got_acts, acts)):
        bad.append("activations %r, expected %r" % (got_acts, acts))
    mi = p - lo
    if r["max_index"] != mi or r["token"] != texts[mi]:
        bad.append("max_index %r token %r, expected %r %r" % (r["max_index"], r["token"], mi, texts[mi]))
    if r["context"] != "".join(texts[:mi]) + "\u00ab" + texts[mi] + "\u00bb" + "".join(texts[mi + 1:]):
        bad.append("context %r" % r["context"])
    if (r["document"], r["char_start"], r["char_end"]) != (None, None, None):
        bad.append("stored activations have no document: %r" % ((r["document"], r["char_start"], r["char_end"]),))
    return bad


def test_extract():
    IDS["small"] = h.extract(DB, **h.planted_opts(h.tmp_path("s1"), intervals=4, interval_examples=3,
                                                  random_examples=5))
    IDS["default"] = h.extract(DB, **h.planted_opts(h.tmp_path("s2")))
    IDS["none"] = h.extract(DB, **h.planted_opts(h.tmp_path("s3"), interval_examples=0, random_examples=0))
    opts = h.as_json(h.extraction_row(DB, IDS["small"])["options"])
    check_equal((opts.get("intervals"), opts.get("interval_examples"), opts.get("random_examples")), (4, 3, 5),
                "options recorded in extractions.options")
    opts = h.as_json(h.extraction_row(DB, IDS["default"])["options"])
    check_equal((opts.get("intervals"), opts.get("interval_examples"), opts.get("random_examples")), (10, 5, 10),
                "default options recorded: 10 intervals, 5 examples each, 10 random")


def check_intervals(eid, n, per):
    bad = []
    for j in range(len(ACTIVE)):
        rows = rows_of(eid, j, "interval")
        if j == DEAD:
            if rows:
                bad.append("dead feature has interval rows")
            continue
        edges, counts = intervals_of(j, n)
        by_interval = {}
        for r in rows:
            problems = window_problems(j, r)
            v = ACTIVE[j].get(r["sequence_id"] * SEQ_LEN + r["position"])
            i = next((i for i in range(n) if h.close(r["interval_lo"], edges[i], 1e-12)), None)
            if i is None or not h.close(r["interval_hi"], edges[i + 1], 1e-12):
                problems.append("interval (%r, %r) not an interval of [0, %r]"
                                % (r["interval_lo"], r["interval_hi"], edges[-1]))
            elif v is not None and not (r["interval_lo"] < v <= r["interval_hi"]):
                problems.append("value %r outside its interval (%r, %r]" % (v, r["interval_lo"], r["interval_hi"]))
            elif not h.close(r["interval_share"], counts[i] / len(ACTIVE[j]), 1e-12):
                problems.append("share %r, expected %r" % (r["interval_share"], counts[i] / len(ACTIVE[j])))
            if problems:
                bad.append("feature %d rank %d: %s" % (j, r["rank"], "; ".join(problems)))
            if i is not None:
                by_interval.setdefault(i, []).append(r)
        for i in range(n):
            got = by_interval.get(i, [])
            if len(got) != min(per, counts[i]):
                bad.append("feature %d interval %d: %d examples, expected min(%d, %d)"
                           % (j, i, len(got), per, counts[i]))
            if len({(r["sequence_id"], r["position"]) for r in got}) != len(got):
                bad.append("feature %d interval %d: a token drawn twice" % (j, i))
        shares = {r["interval_lo"]: r["interval_share"] for r in rows}
        if per and abs(sum(shares.values()) - 1.0) > 1e-12:
            bad.append("feature %d: shares sum to %r" % (j, sum(shares.values())))
        order = [(-next(i for i in range(n) if h.close(r["interval_lo"], edges[i], 1e-12)), -r["activation"])
                 for r in rows]
        if order != sorted(order) or [r["rank"] for r in rows] != list(range(1, len(rows) + 1)):
            bad.append("feature %d: not ranked by interval then activation, descending" % j)
    return bad


def test_interval_examples():
    bad = check_intervals(IDS["small"], 4, 3)
    check(not bad, "4 intervals x 3: every example an active token inside its interval, shares and counts "
          "as counted from the data, windows as planted", "; ".join(bad[:5]))
    bad = check_intervals(IDS["default"], 10, 5)
    check(not bad, "defaults (10 intervals x 5): the same properties", "; ".join(bad[:5]))


def test_random_examples():
    positions = []
    for eid, n in ((IDS["small"], 5), (IDS["default"], 10)):
        bad = []
        for j in range(len(ACTIVE)):
            rows = rows_of(eid, j, "random")
            if len(rows) != min(n, len(ACTIVE[j])):
                bad.append("feature %d: %d random examples, expected %d" % (j, len(rows), min(n, len(ACTIVE[j]))))
            if len({(r["sequence_id"], r["position"]) for r in rows}) != len(rows):
                bad.append("feature %d: a token drawn twice" % j)
            for r in rows:
                problems = window_problems(j, r)
                if (r["interval_lo"], r["interval_hi"], r["interval_share"]) != (None, None, None):
                    problems.append("interval columns not NULL")
                if problems:
                    bad.append("feature %d rank %d: %s" % (j, r["rank"], "; ".join(problems)))
                else:
                    ordered = sorted(ACTIVE[j])
                    positions.append(ordered.index(r["sequence_id"] * SEQ_LEN + r["position"]) / len(ordered))
            if [r["activation"] for r in rows] != sorted((r["activation"] for r in rows), reverse=True):
                bad.append("feature %d: random examples not by activation descending" % j)
        check(not bad, "extraction %d: min(%d, n_active) random examples per feature, each an active token"
              % (eid, n), "; ".join(bad[:5]))
    mean = sum(positions) / len(positions)
    check(0.35 < mean < 0.65, "random examples spread over the active tokens (mean relative position %.3f "
          "over %d draws)" % (mean, len(positions)))


def test_deterministic_and_kinds():
    q = "SELECT * FROM top_examples WHERE extraction_id = %d ORDER BY feature_id;" % IDS["small"]
    first, second = h.query(DB, q), h.query(DB, q)
    check(first == second and len(first) > 0, "the same rows on two queries (%d rows)" % len(first))
    in_order = h.query(DB, "SELECT feature_id, kind, rank FROM top_examples WHERE extraction_id = %d;"
                       % IDS["small"])
    rank_of = {"top": 0, "interval": 1, "random": 2}
    keys = [(r["feature_id"], rank_of[r["kind"]], r["rank"]) for r in in_order]
    check(keys == sorted(keys), "without a kind constraint: feature, then top, interval, random, then rank")
    for kind in ("top", "interval", "random"):
        n = h.scalar(DB, "SELECT count(*) AS n FROM top_examples WHERE extraction_id = %d AND kind = '%s';"
                     % (IDS["small"], kind))
        check_equal(n, sum(r["kind"] == kind for r in in_order), "kind = '%s' gives that kind's rows" % kind)
    check_equal(h.query(DB, "SELECT * FROM top_examples WHERE kind = 'bogus';"), [], "unknown kind: no rows")
    n = h.scalar(DB, "SELECT count(*) AS n FROM top_examples WHERE extraction_id = %d AND kind <> 'top';"
                 % IDS["none"])
    check_equal(n, 0, "interval_examples 0 and random_examples 0: top examples only")
    plan = h.explain(DB, "SELECT * FROM top_examples WHERE feature_id = 3 AND kind = 'random'")
    check("feature_id=? kind=?" in plan, "plan: feature_id and kind handled by the table", plan.strip())


def test_top_needs_no_index():
    """kind = 'top' reads no index: it works with a damaged one. A store without
    any index (written before it existed) has no sampled examples and NULL
    quantiles; a damaged index is an error naming it."""
    store = h.tmp_path("s1")
    index = os.path.join(store, "index.sli")
    os.rename(index, index + ".away")
    try:
        with open(index, "wb") as f:
            f.write(b"not an index" * 100)
        q = "SELECT * FROM top_examples WHERE extraction_id = %d AND kind = 'top' ORDER BY feature_id, rank;"
        h.compare_top_examples("kind = 'top' with a damaged index.sli", h.query(DB, q % IDS["small"]), EXP)
        h.expect_error(DB, "SELECT * FROM top_examples WHERE extraction_id = %d AND kind = 'interval';"
                       % IDS["small"], "index.sli")
        h.expect_error(DB, "SELECT p50 FROM feature_stats WHERE extraction_id = %d;" % IDS["small"], "index.sli")
        os.remove(index)
        n = h.scalar(DB, "SELECT count(*) AS n FROM top_examples WHERE extraction_id = %d AND kind <> 'top';"
                     % IDS["small"])
        check_equal(n, 0, "a store without index.sli: no sampled examples")
        p = h.query(DB, "SELECT DISTINCT p50, p90, p99 FROM feature_stats WHERE extraction_id = %d;" % IDS["small"])
        check_equal(p, [{"p50": None, "p90": None, "p99": None}], "a store without index.sli: NULL quantiles")
    finally:
        if os.path.exists(index):
            os.remove(index)
        os.rename(index + ".away", index)


def test_option_errors():
    for name, value in (("intervals", 0), ("intervals", 1001), ("interval_examples", -1), ("random_examples", 10001),
                        ("random_examples", "many")):
        h.expect_error(DB, h.extract_sql(**h.planted_opts(h.tmp_path("bad"), **{name: value})),
                       "option '%s' must be an integer" % name, what="%s = %r" % (name, value))


def test_text_dataset_documents():
    """A model run over a text file: a sampled example that is also a top example has
    the same window, document and character span; every span holds its token."""
    lm_exp = h.load_expected(os.path.join("..", "lm", "expected.json"))
    lm = lambda name: h.fixture("lm", name)  # noqa: E731
    eid = h.extract(DB, sae=lm("sae"), model=lm("model"), tokenizer=lm("tokenizer.json"), dataset=lm("docs.txt"),
                    top_k=lm_exp["top_k"], context=lm_exp["context"], store=h.tmp_path("lm"), progress="off",
                    interval_examples=20, random_examples=20)
    rows = h.query(DB, "SELECT * FROM top_examples WHERE extraction_id = %d;" % eid)
    top = {(r["feature_id"], r["sequence_id"], r["position"]): r for r in rows if r["kind"] == "top"}
    docs = lm_exp["docs"]
    same, bad = 0, []
    for r in rows:
        if r["kind"] == "top":
            continue
        if r["document"] is None or not (0 <= r["document"] < len(docs)):
            bad.append("no document: %r" % r)
            continue
        span = docs[r["document"]][r["char_start"]:r["char_end"]]
        if r["token"] not in span:
            bad.append("span %r lacks token %r" % (span, r["token"]))
        t = top.get((r["feature_id"], r["sequence_id"], r["position"]))
        if t:
            same += 1
            for c in ("tokens", "max_index", "document", "char_start", "char_end", "context", "token"):
                if r[c] != t[c]:
                    bad.append("%s differs from the top example's: %r vs %r" % (c, r[c], t[c]))
    check(not bad and same > 0, "text run: sampled examples' documents and spans (%d also top examples, "
          "identical windows)" % same, "; ".join(bad[:4]))


if __name__ == "__main__":
    h.run_tests(test_extract, test_interval_examples, test_random_examples, test_deterministic_and_kinds,
                test_top_needs_no_index, test_option_errors, test_text_dataset_documents)
