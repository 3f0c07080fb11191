#!/usr/bin/env python3
"""test_robustness.py: cancel, crash and resume, the store lock, concurrent readers,
and check_extraction on damaged stores.

- Ctrl-C (SIGINT to the sqlite3 shell, which calls sqlite3_interrupt) stops a run
  within a second; it is marked cancelled and resume_extraction finishes it.
- SIGKILL at random moments, during batches and while finalizing, at least 20 times,
  each followed by resume_extraction: the final statistics, top examples, segment
  files and results file are identical to an uninterrupted run's.
- A second writer on a running store gets a clear "locked" error.
- Other processes read a finished extraction and the progress of a running one.
- check_extraction reports a flipped byte, a truncated and a missing segment, and a
  damaged results file, each by name.
"""
import glob
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from harness import check, check_equal  # noqa: E402

CFG = h.setup(__doc__)
DB = CFG.db
os.environ["SAELITE_CHECKPOINT_SECONDS"] = "0"  # a checkpoint after every batch
os.environ["SAELITE_INDEX_BUDGET_BYTES"] = "16384"  # an index build of many passes, so kills land in it
RNG = random.Random(20261123)


def opts(label, **more):
    o = {"sae": h.fixture("medium", "sae"), "activations": h.fixture("medium", "acts.safetensors"),
         "batch_size": 1, "top_k": 8, "context": 4, "store": h.tmp_path("store_" + label), "progress": "off"}
    o.update(more)
    return o


def start(sql, db=DB):
    """A sqlite3 shell running sql in the background."""
    p = subprocess.Popen([CFG.sqlite3, db], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    p.stdin.write(('.load "%s"\n.timeout 10000\n%s\n' % (CFG.ext, sql)).encode())
    p.stdin.close()
    return p


def row(eid):
    return h.query(DB, ".timeout 10000\nSELECT * FROM extractions WHERE id = %d;" % eid)[0]


def digest(store):
    """Hashes of the segment files, the results file and the feature index of a store."""
    out = {}
    for path in sorted(glob.glob(os.path.join(store, "seg-*.sls")) +
                       [os.path.join(store, "results.slr"), os.path.join(store, "index.sli")]):
        with open(path, "rb") as f:
            out[os.path.basename(path)] = hashlib.sha256(f.read()).hexdigest()
    return out


def test_reference():
    eid = h.extract(DB, **opts("ref"))
    check_equal(eid, 1, "reference run is extraction 1")
    check_equal(row(1)["status"], "done", "reference run done")
    check_equal(h.scalar(DB, "SELECT check_extraction(1);"), "ok", "check_extraction(1) is ok")


def test_cancel():
    p = start(h.extract_sql(**opts("cancel")))
    time.sleep(0.6)
    t0 = time.time()
    p.send_signal(signal.SIGINT)
    p.wait(timeout=30)
    took = time.time() - t0
    r = row(2)
    check_equal(r["status"], "cancelled", "SIGINT: the run is marked cancelled")
    check(took < 1.5, "SIGINT: the shell stops within a second", "%.2f s" % took)
    check("resume_extraction(2)" in (r["error"] or ""), "cancelled row says how to resume", repr(r["error"]))
    check(0 < r["tokens_done"] < r["tokens_total"], "cancelled run kept what it committed",
          "%r of %r" % (r["tokens_done"], r["tokens_total"]))
    check_equal(h.scalar(DB, "SELECT resume_extraction(2);"), 2, "resume_extraction(2) returns the id")
    check_equal(row(2)["status"], "done", "resumed run is done")
    check(h.dump(DB, 2) == h.dump(DB, 1), "resumed after cancel: same rows as the uninterrupted run")
    check(digest(h.tmp_path("store_cancel")) == digest(h.tmp_path("store_ref")),
          "resumed after cancel: same segment and results files")


def test_kill_and_resume():
    """SIGKILL one run at random moments (20 times or more), then while it writes its
    results file and its feature index (finalizing), resuming after each kill."""
    store = h.tmp_path("store_kill")
    results_tmp = os.path.join(store, "results.slr.tmp")
    index_tmp = os.path.join(store, "index.sli.tmp")
    kills = finalize_kills = index_kills = 0
    sql = h.extract_sql(**opts("kill"))
    eid = 3
    for _ in range(400):
        p = start(sql)
        finalizing = kills >= 20
        deadline = time.time() + (RNG.uniform(0.04, 0.15) if kills < 20 else 1e9)
        watch = results_tmp if finalize_kills < 3 else index_tmp
        if finalize_kills >= 3 and index_kills >= 3:
            finalizing = False  # enough: let it finish
        killed = False
        while p.poll() is None:
            if (os.path.exists(watch) if finalizing else time.time() >= deadline):
                os.kill(p.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.0005 if finalizing else 0.005)
        p.wait()
        status = row(eid)["status"]
        kills += killed and not finalizing
        finalize_kills += killed and finalizing and status != "done" and watch == results_tmp
        index_kills += killed and finalizing and status != "done" and watch == index_tmp
        if status == "done":
            if kills >= 20 and finalize_kills >= 3 and index_kills >= 3:
                break
            # finished too early: start over, so that one run takes every kill
            kills = finalize_kills = index_kills = 0
            h.run_sql(DB, "DELETE FROM extractions WHERE id = %d;" % eid)
            shutil.rmtree(store, ignore_errors=True)
            sql = h.extract_sql(**opts("kill"))
            continue
        sql = "SELECT resume_extraction(%d);" % eid
    print("one run, SIGKILLed %d times during its batches, %d times while writing its results and %d times "
          "while building its index" % (kills, finalize_kills, index_kills))
    check(kills >= 20, "at least 20 SIGKILLs of one run during its batches", str(kills))
    check(finalize_kills >= 3, "SIGKILLs while finalizing", str(finalize_kills))
    check(index_kills >= 3, "SIGKILLs while building the index", str(index_kills))
    check_equal(row(eid)["status"], "done", "killed run resumed to done")
    check(h.dump(DB, eid) == h.dump(DB, 1), "after SIGKILLs: same statistics and top examples")
    check(digest(store) == digest(h.tmp_path("store_ref")),
          "after SIGKILLs: same segment, results and index files, byte for byte")
    check_equal(h.scalar(DB, "SELECT check_extraction(%d);" % eid), "ok", "after SIGKILLs: check_extraction ok")


def test_lock_and_readers():
    p = start(h.extract_sql(**opts("lock")))
    time.sleep(0.4)
    eid = h.scalar(DB, ".timeout 10000\nSELECT max(id) FROM extractions;")
    reads, progress = 0, []
    while p.poll() is None and reads < 20:
        out = h.query(DB, ".timeout 10000\nSELECT count(*) AS n FROM features WHERE extraction_id = 1;")
        reads += out == [{"n": 512}]
        progress.append(row(eid)["tokens_done"])
        time.sleep(0.02)
    try:
        h.scalar(DB, ".timeout 10000\nSELECT resume_extraction(%d);" % eid)
        locked = False
    except h.SqlError as e:
        locked = "locked" in e.message or "in use" in e.message or "done" in e.message
        print("second writer: %s" % e.message)
    p.wait()
    check(reads >= 5, "another process reads features while a run goes on", "%d reads" % reads)
    check(len(progress) > 2 and progress == sorted(progress) and progress[-1] > progress[0],
          "another process sees progress grow", repr(progress[:8]))
    check(locked, "a second writer on the same store gets a clear error")
    check_equal(row(eid)["status"], "done", "the first run finished undisturbed")


def test_check_extraction():
    store = h.tmp_path("store_damaged")
    shutil.copytree(h.tmp_path("store_ref"), store)
    h.run_sql(DB, "INSERT INTO extractions(name, store, status) VALUES ('damaged', '%s', 'done');" % store)
    eid = h.scalar(DB, "SELECT max(id) FROM extractions;")
    segs = sorted(glob.glob(os.path.join(store, "seg-*.sls")))
    with open(segs[3], "r+b") as f:
        f.seek(40)
        b = f.read(1)
        f.seek(40)
        f.write(bytes([b[0] ^ 0xFF]))
    with open(segs[5], "r+b") as f:
        f.truncate(os.path.getsize(segs[5]) // 2)
    os.remove(segs[7])
    report = h.scalar(DB, "SELECT check_extraction(%d);" % eid)
    print(report)
    lines = report.splitlines()
    check(any(os.path.basename(segs[3]) in l and "block" in l and "checksum" in l for l in lines),
          "flipped byte: named with its block")
    check(any(os.path.basename(segs[5]) in l and "truncated" in l for l in lines), "truncated segment: named")
    check(any(os.path.basename(segs[7]) in l and "missing" in l for l in lines), "missing segment: named")
    check_equal(len(lines), 3, "exactly the three problems")
    res = os.path.join(store, "results.slr")
    with open(res, "r+b") as f:
        f.seek(200)
        b = f.read(1)
        f.seek(200)
        f.write(bytes([b[0] ^ 0x01]))
    h.expect_error(DB, "SELECT * FROM features WHERE extraction_id = %d;" % eid, "results.slr", "damaged")
    check("results.slr" in h.scalar(DB, "SELECT check_extraction(%d);" % eid), "damaged results file reported")
    check(h.dump(DB, 1)["feature_stats"], "the original extraction still reads")


h.run_tests(test_reference, test_cancel, test_kill_and_resume, test_lock_and_readers, test_check_extraction)
