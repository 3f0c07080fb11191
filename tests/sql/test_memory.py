#!/usr/bin/env python3
"""test_memory.py: peak memory does not grow with the dataset.

An activations file several times larger than the memory bound of
docs/ARCHITECTURE.md (section Memory) is extracted in full, and the same input
capped at 32 sequences is extracted with the same options. Both allocate the same
buffers, so the peak resident set of the full run must stay within a few MiB of the
short one's, and far below the input's size: the input is streamed, consumed pages
are released, and nothing accumulates per token. (Meaningless under AddressSanitizer,
whose shadow memory dominates: skipped there, and said so.)
"""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from harness import check  # noqa: E402

CFG = h.setup(__doc__)
DB = CFG.db
D_IN, D_SAE, TOKENS, SEQ = 256, 2048, 262144, 128
# The feature index is built at the end holding at most a budget of postings (12 bytes
# each; 256 MiB by default, more than this whole input's). Both runs get the same small
# budget, so it, not the dataset, bounds the build.
INDEX_BUDGET = 4 << 20
os.environ["SAELITE_INDEX_BUDGET_BYTES"] = str(INDEX_BUDGET)


def bound_bytes():
    """docs/ARCHITECTURE.md's formula for this shape (batch 4096 tokens, top_k 20)."""
    batch_rows, top_k, context = 4096, 20, 10
    chunk_rows = min(1024, (16 << 20) // D_SAE)
    sae = 2 * 4 * D_IN * D_SAE                         # W_enc, and W_dec while loading
    batch = 2 * 4 * batch_rows * D_IN                  # input batch and the backend's copy
    dense = 4 * chunk_rows * D_SAE
    csr = 2 * (12 * batch_rows * 16 + 12 * batch_rows)  # about 16 active per token
    stats = D_SAE * (48 + 16 * top_k)
    results = 64 + 40 * D_SAE + 48 * D_SAE * top_k + 8 * D_SAE * top_k * (2 * context + 1)
    index = INDEX_BUDGET + 56 * D_SAE
    return sae + batch + dense + csr + stats + results + index


def peak_rss(sql):
    """Peak resident set (bytes) of a sqlite3 shell running sql."""
    p = subprocess.Popen([CFG.sqlite3, DB], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    p.stdin.write(('.load "%s"\n%s\n' % (CFG.ext, sql)).encode())
    p.stdin.close()
    _, status, usage = os.wait4(p.pid, 0)
    err = p.stderr.read().decode()
    check(status == 0, "extraction ran", err.strip())
    return usage.ru_maxrss * 1024


def test_rss():
    if "asan" in os.environ.get("LD_PRELOAD", ""):
        print("skipped: peak RSS is not meaningful under AddressSanitizer")
        h.check(True, "memory test skipped under ASan")
        return
    gen = os.path.join(os.path.dirname(CFG.ext), "gen_bench_input")
    data = h.tmp_path("input")
    subprocess.run([gen, data, "--tokens", str(TOKENS), "--seq-len", str(SEQ), "--d-in", str(D_IN),
                    "--d-sae", str(D_SAE), "--active", "16"], check=True, stdout=subprocess.DEVNULL)
    acts = os.path.join(data, "acts.safetensors")
    size = os.path.getsize(acts)
    bound = bound_bytes()

    def run(label, **more):
        opts = {"sae": os.path.join(data, "sae"), "activations": acts, "store": h.tmp_path("store_" + label),
                "progress": "off"}
        opts.update(more)
        return peak_rss(h.extract_sql(**opts))

    short = run("short", max_sequences=32)
    full = run("full")
    mib = 1 << 20
    print("input %.0f MiB, bound %.1f MiB; peak RSS: 32 sequences %.1f MiB, all %d sequences %.1f MiB"
          % (size / mib, bound / mib, short / mib, TOKENS // SEQ, full / mib))
    check(size > 3 * bound, "the input is several times the memory bound", "%d vs %d" % (size, bound))
    check(full <= short + 8 * mib, "peak RSS does not grow with the dataset",
          "%.1f MiB vs %.1f MiB" % (full / mib, short / mib))
    check(full < size / 2, "peak RSS far below the input size", "%.1f MiB" % (full / mib))
    rows = h.query(DB, "SELECT tokens_done, status FROM extractions ORDER BY id;")
    check(rows[-1] == {"tokens_done": TOKENS, "status": "done"}, "the full run is complete", repr(rows[-1]))


h.run_tests(test_rss)
