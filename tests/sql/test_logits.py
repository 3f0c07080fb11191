#!/usr/bin/env python3
"""test_logits.py: feature_logits (the logit lens W_dec[f] . W_U) against values computed here.

1. tests/data/gpt2_tiny (vocab 96, d_model 32, tied wte) with an SAE whose W_dec is
   drawn here: every row's logits are recomputed in Python from the raw
   safetensors (double accumulation of the f32 values), and the top k / bottom k
   with their ranks, tokens and values must match; k default 10, k = 3, k above
   the vocabulary, IN lists.
2. The same checkpoint with its own lm_head.weight (untied, drawn here): that
   matrix is used, not wte.
3. The planted model (wte[t] = s(t) e_(t mod 32), identity SAE): feature j's
   largest logits are the tokens t = j mod 32 by strength, with their text.
4. Errors: no feature_id, a feature out of range, k < 1, stored activations.
"""
import json
import os
import random
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "fixtures"))
import harness as h  # noqa: E402
from harness import check, check_equal  # noqa: E402
import safetensors_io as st  # noqa: E402
import make_lm_fixtures as lmfix  # noqa: E402

CFG = h.setup(__doc__)
DB = CFG.db
ROOT = os.path.realpath(os.path.join(HERE, "..", ".."))
GPT2 = os.path.join(ROOT, "tests", "data", "gpt2_tiny")
V, D, F = 96, 32, 12


def write_sae(d, W_dec):
    os.makedirs(d)
    rng = random.Random(3)
    st.write(os.path.join(d, "sae_weights.safetensors"),
             [("W_enc", "F32", [D, F], [st.f32(rng.gauss(0, 0.3)) for _ in range(D * F)]),
              ("b_enc", "F32", [F], [0.0] * F), ("W_dec", "F32", [F, D], W_dec), ("b_dec", "F32", [D], [0.0] * D)])
    with open(os.path.join(d, "cfg.json"), "w") as f:
        json.dump({"architecture": "standard", "d_in": D, "d_sae": F, "dtype": "float32",
                   "apply_b_dec_to_input": True, "normalize_activations": "none",
                   "metadata": {"hook_name": "blocks.2.hook_resid_post", "context_size": 8, "prepend_bos": True}}, f)


def token_dataset(path):
    """A raw uint16 token file of 40 ids below the vocabulary."""
    with open(path, "wb") as f:
        f.write(struct.pack("<40H", *[(7 * i + 3) % 90 for i in range(40)]))


def expected(W_dec, W_U, f, k):
    logits = [st.f32(sum(W_dec[f * D + c] * W_U[t * D + c] for c in range(D))) for t in range(V)]
    top = sorted(range(V), key=lambda t: (-logits[t], t))[:k]
    bottom = sorted(range(V), key=lambda t: (logits[t], t))[:k]
    return ([(f, r + 1, t, logits[t]) for r, t in enumerate(top)] +
            [(f, -(r + 1), t, logits[t]) for r, t in enumerate(bottom)])


def compare(label, rows, want):
    got = [(r["feature_id"], r["rank"], r["token_id"], r["logit"]) for r in rows]
    ok = len(got) == len(want) and all(
        g[:3] == w[:3] and h.close(g[3], w[3], 1e-5, 1e-6) for g, w in zip(got, want))
    check(ok, label, "got %r\nexpected %r" % (got[:6], want[:6]))


def extract_gpt2(model_dir, W_dec, label):
    sae = h.tmp_path("sae_" + label)
    write_sae(sae, W_dec)
    ds = h.tmp_path("tokens_%s.bin" % label)
    token_dataset(ds)
    return h.extract(DB, sae=sae, model=model_dir, dataset=ds, store=h.tmp_path("store_" + label), progress="off")


def test_tied_wte():
    rng = random.Random(11)
    W_dec = [st.f32(rng.gauss(0, 1)) for _ in range(F * D)]
    eid = extract_gpt2(GPT2, W_dec, "tied")
    wte = st.read(os.path.join(GPT2, "model.safetensors"))["transformer.wte.weight"][2]
    rows = h.query(DB, "SELECT feature_id, * FROM feature_logits WHERE feature_id = 4 AND extraction_id = %d;" % eid)
    compare("gpt2_tiny feature 4: top 10 and bottom 10 of W_dec[4] . wte (default k)", rows,
            expected(W_dec, wte, 4, 10))
    check_equal({r["token"] for r in rows}, {str(r["token_id"]) for r in rows},
                "without a tokenizer tokens show as their ids")
    rows = h.query(DB, "SELECT feature_id, * FROM feature_logits WHERE feature_id IN (11, 0, 11) AND k = 3 "
                       "AND extraction_id = %d;" % eid)
    compare("feature_id IN (11, 0, 11), k 3: features in order, once each", rows,
            expected(W_dec, wte, 0, 3) + expected(W_dec, wte, 11, 3))
    rows = h.query(DB, "SELECT feature_id, * FROM feature_logits(7, 1000, %d);" % eid)
    compare("k 1000 > vocabulary: the whole vocabulary both ways", rows, expected(W_dec, wte, 7, V))
    h.expect_error(DB, "SELECT feature_id, * FROM feature_logits WHERE extraction_id = %d;" % eid,
                   ("feature_logits: the argument feature_id is missing", "no query solution"))
    h.expect_error(DB, "SELECT * FROM feature_logits;", "feature_logits: the argument feature_id is missing",
                   "feature_logits(1459)")
    h.expect_error(DB, "SELECT feature_id, * FROM feature_logits WHERE feature_id = %d AND extraction_id = %d;" % (F, eid),
                   "feature_id %d is out of range" % F, "12 features")
    h.expect_error(DB, "SELECT feature_id, * FROM feature_logits WHERE feature_id = 1 AND k = 0 AND extraction_id = %d;" % eid,
                   "k must be a positive integer")


def test_untied_lm_head():
    tensors = st.read(os.path.join(GPT2, "model.safetensors"))
    rng = random.Random(5)
    lm_head = [st.f32(rng.gauss(0, 1)) for _ in range(V * D)]
    model = h.tmp_path("gpt2_untied")
    os.makedirs(model)
    with open(os.path.join(GPT2, "config.json")) as a, open(os.path.join(model, "config.json"), "w") as b:
        cfg = json.load(a)
        cfg["tie_word_embeddings"] = False
        json.dump(cfg, b)
    st.write(os.path.join(model, "model.safetensors"),
             [(n, dt, shape, vals) for n, (dt, shape, vals) in tensors.items()] +
             [("lm_head.weight", "F32", [V, D], lm_head)])
    rng = random.Random(12)
    W_dec = [st.f32(rng.gauss(0, 1)) for _ in range(F * D)]
    eid = extract_gpt2(model, W_dec, "untied")
    rows = h.query(DB, "SELECT feature_id, * FROM feature_logits WHERE feature_id = 2 AND k = 5 AND extraction_id = %d;" % eid)
    compare("a checkpoint with its own lm_head.weight: W_dec[2] . lm_head", rows, expected(W_dec, lm_head, 2, 5))


def test_planted_tokens():
    eid = h.extract(DB, sae=h.fixture("lm", "sae"), model=h.fixture("lm", "model"),
                    tokenizer=h.fixture("lm", "tokenizer.json"), dataset=h.fixture("lm", "docs.txt"),
                    store=h.tmp_path("store_planted"), progress="off")
    rows = h.query(DB, "SELECT rank, token, token_id, logit FROM feature_logits WHERE feature_id = 1 AND k = 4 "
                       "AND extraction_id = %d;" % eid)
    ids = sorted([t for t in range(256) if t % 32 == 1], key=lambda t: (-lmfix.strength(t), t))[:4]
    want = [{"rank": i + 1, "token": bytes([t]).decode("utf-8", "replace"), "token_id": t,
             "logit": lmfix.strength(t)} for i, t in enumerate(ids)]
    check_equal(rows[:4], want, "planted feature 1: the byte tokens t = 1 mod 32 by strength, with their text (a lone byte >= 0x80 "
                "shows as U+FFFD)")
    check_equal([(r["rank"], r["logit"]) for r in rows[4:]], [(-1, 0.0), (-2, 0.0), (-3, 0.0), (-4, 0.0)],
                "planted feature 1: the most negative logits are the zeros of the other tokens")
    check_equal([r["token_id"] for r in rows[4:]], [0, 2, 3, 4], "ties broken by token id")
    acts = h.extract(DB, sae=h.planted("sae"), activations=h.planted("acts.safetensors"),
                     store=h.tmp_path("store_acts"), progress="off")
    h.expect_error(DB, "SELECT feature_id, * FROM feature_logits WHERE feature_id = 0 AND extraction_id = %d;" % acts,
                   "feature_logits", "stored activations")


if __name__ == "__main__":
    h.run_tests(test_tied_wte, test_untied_lm_head, test_planted_tokens)
