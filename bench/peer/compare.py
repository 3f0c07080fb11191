#!/usr/bin/env python3
"""compare.py: checks that saelite and the peer pipeline (peer_pipeline.py) found the same
statistics and top examples on the same model, SAE and data.

    compare.py --db BENCH.db --ext build/saelite --extraction-id N --peer OUT [--sqlite3 sqlite3]

saelite's side is read through SQL (the sqlite3 shell, -json), the peer's from OUT/stats.npz.
Prints one JSON object; exits 1 when a check fails.

Checks (the two sides compute in different orders, OpenBLAS vs torch, so values agree to
float32 rounding at the scale of the pre-activations (order 1), and a pre-activation within
rounding of 0 may be active on one side only). Differences below are relative to
max(|value|, 1):
  n_tokens    saelite's n_tokens equals the peer's encoded tokens (same packing, same BOS);
  n_active    per feature; total |difference| at most 1e-3 of all nonzeros;
  max, mean   relative difference at most 1e-4 (max, where both are active) and 1e-3 (mean,
              where n_active is equal);
  top k       per feature, no example listed twice, the same example has the same activation
              (within 1e-4 x max(feature's max, 1)), and the (sequence, position) sets are equal,
              except for examples whose activation is that close to the k-th one (ties at the
              cut); rank 1 is the same example unless the top two are that close.
"""
import argparse
import json
import subprocess
import sys

import numpy as np


def sql_json(sqlite3, db, ext, query):
    out = subprocess.run([sqlite3, "-json", db, ".load " + ext, query], check=True, capture_output=True, text=True)
    return json.loads(out.stdout) if out.stdout.strip() else []


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", required=True)
    ap.add_argument("--ext", required=True)
    ap.add_argument("--extraction-id", type=int, required=True)
    ap.add_argument("--peer", required=True)
    ap.add_argument("--sqlite3", default="sqlite3")
    ap.add_argument("--seq-len", type=int, default=128)
    a = ap.parse_args()

    peer = np.load(a.peer + "/stats.npz")
    with open(a.peer + "/peer.json") as f:
        pj = json.load(f)
    d_sae = pj["d_sae"]
    eid = a.extraction_id
    stats = sql_json(a.sqlite3, a.db, a.ext,
                     "SELECT feature_id, n_tokens, n_active, mean, max FROM feature_stats WHERE extraction_id = %d "
                     "ORDER BY feature_id" % eid)
    if len(stats) != d_sae:
        sys.exit("compare.py: feature_stats has %d rows, the peer %d features" % (len(stats), d_sae))
    s_n = np.array([r["n_active"] for r in stats], dtype=np.int64)
    s_mean = np.array([r["mean"] for r in stats])
    s_max = np.array([r["max"] for r in stats])
    n_tokens = stats[0]["n_tokens"]

    p_n = peer["n_active"].astype(np.int64)
    p_max = peer["max"].astype(np.float64)
    p_mean = np.where(p_n > 0, peer["sum"] / np.maximum(p_n, 1), 0.0)
    res = {"features": d_sae, "n_tokens_saelite": n_tokens, "n_tokens_peer": pj["encoded_tokens"]}
    ok = n_tokens == pj["encoded_tokens"]

    dn = np.abs(s_n - p_n)
    res["n_active_features_differing"] = int((dn > 0).sum())
    res["n_active_total_abs_diff"] = int(dn.sum())
    res["nnz_saelite"], res["nnz_peer"] = int(s_n.sum()), int(p_n.sum())
    ok &= dn.sum() <= max(1, 1e-3 * s_n.sum())
    both = (s_n > 0) & (p_n > 0)
    # relative to the value, with a floor of 1 (the pre-activations' scale: tiny activations
    # of rare features carry the absolute rounding of a pre-activation of order 1)
    rel = lambda x, y: np.abs(x - y) / np.maximum(np.abs(y), 1.0)
    res["max_rel_diff"] = float(rel(s_max[both], p_max[both]).max()) if both.any() else 0.0
    same = both & (s_n == p_n)  # a near-zero activation on one side only moves the mean of a rare feature
    res["mean_rel_diff"] = float(rel(s_mean[same], p_mean[same]).max()) if same.any() else 0.0
    ok &= res["max_rel_diff"] <= 1e-4 and res["mean_rel_diff"] <= 1e-3

    rows = sql_json(a.sqlite3, a.db, a.ext,
                    "SELECT feature_id, rank, activation, sequence_id, position FROM top_examples "
                    "WHERE extraction_id = %d AND kind = 'top' ORDER BY feature_id, rank" % eid)
    s_top = [[] for _ in range(d_sae)]
    for r in rows:
        s_top[r["feature_id"]].append((r["activation"], r["sequence_id"] * a.seq_len + r["position"]))
    tv, tr = peer["top_vals"], peer["top_rows"]  # [k, d_sae]
    set_equal = set_tie = rank1_equal = rank1_tie = rank1_differ = differ = 0
    examples = []
    for f in range(d_sae):
        p = [(float(v), int(r)) for v, r in zip(tv[:, f], tr[:, f]) if v > 0]
        s = s_top[f]
        if not p and not s:
            set_equal += 1
            rank1_equal += 1
            continue
        if not p or not s:
            differ += 1
            continue
        cut = min(s[-1][0], p[-1][0])
        tol = 1e-4 * max(s[0][0], p[0][0], 1.0)  # float32 rounding at the pre-activations' scale
        ss, ps = {r for _, r in s}, {r for _, r in p}
        pv = dict((r, v) for v, r in p)
        if len(ss) != len(s) or len(ps) != len(p) or any(abs(v - pv[r]) > tol for v, r in s if r in pv):
            differ += 1  # a row listed twice, or the same example with a different activation
            if len(examples) < 5:
                examples.append({"feature": f, "saelite": s[:3], "peer": p[:3]})
        elif ss == ps:
            set_equal += 1
        elif all(abs(v - cut) <= tol for v, r in s + p if (r in ss) != (r in ps)):
            set_tie += 1
        else:
            differ += 1
            if len(examples) < 5:
                examples.append({"feature": f, "saelite": s[:3], "peer": p[:3]})
        if s[0][1] == p[0][1]:
            rank1_equal += 1
        elif len(p) > 1 and abs(p[0][0] - p[1][0]) <= tol:
            rank1_tie += 1
        else:
            rank1_differ += 1
    res.update({"top_sets_equal": set_equal, "top_sets_equal_but_ties": set_tie, "top_sets_differ": differ,
                "rank1_equal": rank1_equal, "rank1_tie": rank1_tie, "rank1_differ": rank1_differ,
                "differing_examples": examples})
    ok &= differ == 0 and rank1_differ == 0
    res["ok"] = bool(ok)
    print(json.dumps(res))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
