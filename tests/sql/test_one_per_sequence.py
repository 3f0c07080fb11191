#!/usr/bin/env python3
"""test_one_per_sequence.py: extract_features option one_per_sequence on planted data.

The planted language model (tests/fixtures/make_lm_fixtures.py) fires feature j
on byte tokens b = j mod 32 with strength s(b). From the fixture's own packing
(pack(): BOS per sequence, BOS between documents) each feature's expected top
examples are computed here: every sequence's best row (activation descending,
then row), ranked the same way, top_k of them. The run with the option must give
exactly those, whatever the batch size, and the same data without the option
must differ (it keeps several rows of one sequence), so the check can fail.
A run on the medium fixture cancelled by SIGINT and one SIGKILLed several times,
each resumed, must end byte-identical to an uninterrupted run (the pending best
example of each feature's current sequence is part of the checkpoint).
"""
import glob
import hashlib
import os
import random
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "fixtures"))
import harness as h  # noqa: E402
from harness import check, check_equal  # noqa: E402
import make_lm_fixtures as lmfix  # noqa: E402

CFG = h.setup(__doc__)
DB = CFG.db
TOP_K = 3
os.environ["SAELITE_CHECKPOINT_SECONDS"] = "0"  # a checkpoint after every batch


def expected():
    recs = lmfix.pack(lmfix.DOCS)
    seq = lmfix.SEQ
    out = []
    for j in range(lmfix.D):
        best = {}
        for row, (t, _, _, _, sp) in enumerate(recs):
            if t < 0 or sp or t % lmfix.D != j:
                continue
            a = lmfix.strength(t)
            s = row // seq
            if s not in best or (-a, row) < (-best[s][0], best[s][1]):
                best[s] = (a, row)
        ranked = sorted(best.values(), key=lambda x: (-x[0], x[1]))[:TOP_K]
        out += [(j, r + 1, row // seq, row % seq, a) for r, (a, row) in enumerate(ranked)]
    return out


def run(label, **more):
    eid = h.extract(DB, sae=h.fixture("lm", "sae"), model=h.fixture("lm", "model"),
                    tokenizer=h.fixture("lm", "tokenizer.json"), dataset=h.fixture("lm", "docs.txt"), top_k=TOP_K,
                    context=2, store=h.tmp_path("store_" + label), progress="off", **more)
    rows = h.query(DB, "SELECT * FROM top_examples WHERE extraction_id = %d;" % eid)
    return eid, [(r["feature_id"], r["rank"], r["sequence_id"], r["position"], r["activation"])
                 for r in rows if r.get("kind", "top") == "top"]


def test_one_per_sequence():
    want = expected()
    for batch in (1, 2, 64):
        eid, got = run("b%d" % batch, one_per_sequence=1, batch_size=batch)
        check_equal(got, want, "one_per_sequence, batch_size %d: each sequence's best, ranked (%d rows)"
                    % (batch, len(want)))
        seqs = {}
        for f, _, s, _, _ in got:
            seqs.setdefault(f, []).append(s)
        check(all(len(v) == len(set(v)) for v in seqs.values()), "batch_size %d: no sequence twice per feature"
              % batch)
        opts = h.as_json(h.extraction_row(DB, eid)["options"])
        check_equal(opts.get("one_per_sequence"), 1, "the option is recorded in extractions.options")
    _, plain = run("plain")
    repeats = sum(1 for f in range(lmfix.D)
                  if len([s for g, _, s, _, _ in plain if g == f]) != len({s for g, _, s, _, _ in plain if g == f}))
    check(plain != want and repeats > 0, "without the option %d features repeat a sequence" % repeats)
    h.expect_error(DB, h.extract_sql(sae=h.fixture("lm", "sae"), model=h.fixture("lm", "model"),
                                     tokenizer=h.fixture("lm", "tokenizer.json"), dataset=h.fixture("lm", "docs.txt"),
                                     one_per_sequence=2), "one_per_sequence", "must be 0 or 1")


def medium_opts(label, **more):
    o = {"sae": h.fixture("medium", "sae"), "activations": h.fixture("medium", "acts.safetensors"),
         "batch_size": 1, "top_k": 8, "context": 4, "one_per_sequence": 1, "store": h.tmp_path("store_" + label),
         "progress": "off"}
    o.update(more)
    return o


def start(sql):
    p = subprocess.Popen([CFG.sqlite3, DB], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    p.stdin.write(('.load "%s"\n.timeout 10000\n%s\n' % (CFG.ext, sql)).encode())
    p.stdin.close()
    return p


def digest(store):
    out = {}
    for path in sorted(glob.glob(os.path.join(store, "seg-*.sls")) + [os.path.join(store, "results.slr")]):
        with open(path, "rb") as f:
            out[os.path.basename(path)] = hashlib.sha256(f.read()).hexdigest()
    return out


def status(eid):
    return h.query(DB, ".timeout 10000\nSELECT status FROM extractions WHERE id = %d;" % eid)[0]["status"]


def test_resume_is_exact():
    ref = h.extract(DB, **medium_opts("m_ref"))
    plain = h.extract(DB, **medium_opts("m_plain", one_per_sequence=0))
    check(h.dump(DB, ref) != h.dump(DB, plain), "medium: one_per_sequence changes the top examples")
    # SIGINT while it runs, then resume
    p = start(h.extract_sql(**medium_opts("cancel")))
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    p.wait(timeout=60)
    eid = ref + 2
    check_equal(status(eid), "cancelled", "SIGINT: cancelled")
    check_equal(h.scalar(DB, "SELECT resume_extraction(%d);" % eid), eid, "resumed")
    check(h.dump(DB, eid) == h.dump(DB, ref), "after cancel + resume: the same rows as the uninterrupted run")
    check(digest(h.tmp_path("store_cancel")) == digest(h.tmp_path("store_m_ref")),
          "after cancel + resume: the same segment and results files")
    # SIGKILLs at random moments, each followed by a resume
    rng = random.Random(7)
    sql, eid, kills = h.extract_sql(**medium_opts("kill")), ref + 3, 0
    for _ in range(12):
        p = start(sql)
        deadline = time.time() + rng.uniform(0.05, 0.25)
        while p.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            kills += 1
        p.wait()
        sql = "SELECT resume_extraction(%d);" % eid
        if status(eid) == "done":
            break
    if status(eid) != "done":
        h.scalar(DB, sql)
    check(kills >= 3, "one run SIGKILLed %d times" % kills)
    check(h.dump(DB, eid) == h.dump(DB, ref), "after SIGKILLs + resumes: the same rows as the uninterrupted run")
    check(digest(h.tmp_path("store_kill")) == digest(h.tmp_path("store_m_ref")),
          "after SIGKILLs + resumes: the same segment and results files")


if __name__ == "__main__":
    h.run_tests(test_one_per_sequence, test_resume_is_exact)
