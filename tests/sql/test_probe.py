#!/usr/bin/env python3
"""test_probe.py: encode_text(text [, extraction_id]) against independent values.

1. The planted language model (tests/fixtures/make_lm_fixtures.py: zero blocks,
   wte[t] = s(t) e_(t mod 32), identity SAE): every byte token b of a snippet must
   give exactly one row, feature b mod 32 with activation s(b); special tokens give
   none; a snippet longer than context_size (windows) too; and the values equal
   the extraction's own top examples of the same document.
2. The bundled tiny GPT-2 + top-k SAE (examples/tiny, context-dependent): a
   one-document dataset is extracted; encode_text of that document must give
   every (token, feature) the store holds, with the stored values (exact f32 at
   each feature's max, the fp16 the store keeps elsewhere).
3. An independent reference: tests/data/gpt2_tiny (whose hook activations were
   computed by Hugging Face transformers, expected.safetensors) with an SAE drawn
   here and encoded in pure Python (tests/fixtures/sae_reference.py), through a
   tokenizer that maps letters to the reference's token ids.
4. A 2-D token file (rows run as they are, no BOS): encode_text of a row's text gives
   that row's stored activations.
5. The per-connection cache is dropped when the SAE file is rewritten; errors.
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
import sae_reference  # noqa: E402
import make_lm_fixtures as lmfix  # noqa: E402

CFG = h.setup(__doc__)
DB = CFG.db
ROOT = os.path.realpath(os.path.join(HERE, "..", ".."))
TINY = os.path.join(ROOT, "examples", "tiny")


def lm(name):
    return h.fixture("lm", name)


def f16(x):
    return struct.unpack("<e", struct.pack("<e", h.f32(x)))[0]


def encode_rows(db, text, eid):
    return h.query(db, "SELECT position, token, token_id, feature_id, activation FROM encode_text(%s, %d);"
                   % (h.sql_str(text), eid))


def test_planted():
    eid = h.extract(DB, sae=lm("sae"), model=lm("model"), tokenizer=lm("tokenizer.json"), dataset=lm("docs.txt"),
                    top_k=4, context=3, store=h.tmp_path("store_planted"), progress="off")
    for label, doc in (("doc 0", lmfix.DOCS[0]), ("doc 1 (55 tokens, 4 windows of 15)", lmfix.DOCS[1]),
                       ("doc 5 (a special token inside)", lmfix.DOCS[5])):
        ids, _, special = lmfix.encode(doc)
        want = [{"position": i, "token": chr(t), "token_id": t, "feature_id": t % 32,
                 "activation": lmfix.strength(t)} for i, (t, s) in enumerate(zip(ids, special)) if not s]
        got = encode_rows(DB, doc, eid)
        check_equal(got, want, "planted %s: one row per byte token, feature b mod 32, activation s(b)" % label)
    # The extraction's own top examples of document 0 agree: it fills sequences 0 and 1,
    # each BOS + 15 of its tokens, so sequence s position p is snippet token 15 s + p - 1.
    tops = [r for r in h.query(DB, "SELECT * FROM top_examples WHERE extraction_id = %d AND document = 0;" % eid)
            if r.get("kind", "top") == "top"]
    got = {(r["position"], r["feature_id"]): r["activation"] for r in encode_rows(DB, lmfix.DOCS[0], eid)}
    bad = [t for t in tops
           if got.get((15 * t["sequence_id"] + t["position"] - 1, t["feature_id"])) != t["activation"]]
    check(tops and not bad, "planted: %d top examples of document 0 equal encode_text's values" % len(tops),
          repr(bad[:3]))
    check_equal(h.query(DB, "SELECT count(*) AS n FROM encode_text('');"), [{"n": 0}], "empty text: no rows")
    check_equal(h.query(DB, "SELECT count(*) AS n FROM encode_text(NULL);"), [{"n": 0}], "NULL text: no rows")
    with_special = h.extract(DB, sae=lm("sae"), model=lm("model"), tokenizer=lm("tokenizer.json"),
                             dataset=lm("docs.txt"), include_special=1, store=h.tmp_path("store_special"),
                             progress="off")
    rows = h.query(DB, "SELECT position, token_id FROM encode_text('a<|endoftext|>b', %d) ORDER BY position;"
                   % with_special)
    check_equal([(r["position"], r["token_id"]) for r in rows], [(0, 97), (1, 256), (2, 98)],
                "include_special 1: the special token in the text is encoded (BOS strength s(256))")
    return eid


def test_tiny_matches_store():
    doc = ("def encode(text, sae):\n    tokens = tokenizer(text)  # a comment\n"
           "    if len(tokens) > 0 and tokens[0] == 1:\n        return sae.encode(model(tokens))\n")
    ds = h.tmp_path("tiny_doc.jsonl")
    with open(ds, "w") as f:
        f.write(json.dumps({"text": doc}) + "\n")
    eid = h.extract(DB, sae=os.path.join(TINY, "sae"), model=os.path.join(TINY, "model"),
                    tokenizer=os.path.join(TINY, "tokenizer.json"), dataset=ds, top_k=1, context=1024,
                    store=h.tmp_path("store_tiny"), progress="off")
    seq_len = h.extraction_row(DB, eid)["seq_len"]
    # Each feature's rank-1 window covers the whole (only) sequence: BOS + the document.
    stored = {}
    tokens = None
    for r in h.query(DB, "SELECT * FROM top_examples WHERE extraction_id = %d;" % eid):
        if r.get("kind", "top") != "top":  # sampled examples hold no exact maximum
            continue
        acts, tokens = h.as_json(r["activations"]), h.as_json(r["tokens"])
        for i, a in enumerate(acts):
            if i and a > 0:
                stored[(i - 1, r["feature_id"])] = (a, i == r["max_index"])
    got = encode_rows(DB, doc, eid)
    n_tok = len(tokens) - 1
    check(n_tok + 1 <= seq_len, "tiny: the document (%d tokens) fits one sequence of %d" % (n_tok, seq_len))
    check_equal(sorted({r["position"] for r in got}), list(range(n_tok)), "tiny: every token has active features")
    check_equal([r["token"] for r in sorted(got, key=lambda r: r["position"]) if r["feature_id"] ==
                 min(x["feature_id"] for x in got if x["position"] == r["position"])], tokens[1:],
                "tiny: token texts are the stored window's")
    mine = {(r["position"], r["feature_id"]): r["activation"] for r in got}
    check_equal(sorted(mine), sorted(stored), "tiny: the same %d (token, feature) pairs as the store" % len(stored))
    bad = []
    for k, (a, exact) in stored.items():
        v = mine.get(k)
        if v is None or not (h.same_f32(v, a) if exact else (h.same_f32(f16(v), a) or h.same_f32(v, a))):
            bad.append((k, v, a, exact))
    check(not bad, "tiny: activations equal the store's (exact f32 at maxima, fp16 elsewhere)", repr(bad[:5]))
    return eid


def test_token_rows_no_bos():
    """A 2-D token file is run row by row with no BOS, whatever the options: the
    extraction records that (options.prepend_bos = 0), so encode_text of the row's
    text packs it the same way and gives the stored activations of that row."""
    text = "for i in range(3):\n    print(i * 2)\n"
    ref = h.query(DB, "SELECT DISTINCT position, token_id FROM encode_text(%s, %d) ORDER BY position;"
                  % (h.sql_str(text), h.scalar(DB, "SELECT max(id) AS x FROM extractions WHERE model IS NOT NULL "
                                                   "AND tokenizer IS NOT NULL AND status = 'done';")))
    ids = [r["token_id"] for r in ref]
    path = h.tmp_path("rows_2d.safetensors")
    st.write(path, [("tokens", "I32", [1, len(ids)], ids)])
    eid = h.extract(DB, sae=os.path.join(TINY, "sae"), model=os.path.join(TINY, "model"),
                    tokenizer=os.path.join(TINY, "tokenizer.json"), dataset=path, prepend_bos=1,
                    store=h.tmp_path("store_rows_2d"), progress="off")
    opts = h.as_json(h.extraction_row(DB, eid)["options"])
    check_equal(opts.get("prepend_bos"), 0, "2-D token rows: options.prepend_bos records that no BOS was packed")
    stored = {(r["position"], r["feature_id"]): r["activation"] for r in h.query(
        DB, "SELECT position, feature_id, activation FROM activations WHERE sequence_id = 0 AND extraction_id = %d;"
        % eid)}
    got = {(r["position"], r["feature_id"]): r["activation"] for r in encode_rows(DB, text, eid)}
    check(len(stored) > 0 and sorted(got) == sorted(stored),
          "2-D token rows: encode_text gives the row's (position, feature) pairs", "%d vs %d" % (len(got), len(stored)))
    bad = [(k, v, stored.get(k)) for k, v in got.items() if not (h.same_f32(f16(v), stored.get(k, -1.0))
                                                                 or h.same_f32(v, stored.get(k, -1.0)))]
    check(not bad, "2-D token rows: encode_text's activations equal the stored ones", repr(bad[:4]))


def write_letter_tokenizer(path, ids):
    """Byte-level BPE without merges whose vocabulary maps one ASCII letter per reference id."""
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    distinct = sorted(set(ids))
    assert len(distinct) <= len(letters)
    letter_of = {t: letters[i] for i, t in enumerate(distinct)}
    tok = lmfix.tokenizer_json()
    tok["added_tokens"] = []
    tok["model"]["vocab"] = {letter_of[t]: t for t in distinct}
    with open(path, "w") as f:
        json.dump(tok, f)
    return "".join(letter_of[t] for t in ids)


def test_reference_gpt2_tiny():
    ref = st.read(os.path.join(ROOT, "tests", "data", "gpt2_tiny", "expected.safetensors"))
    _, (n_seq, T), tok_vals = ref["tokens"]
    ids = tok_vals[:T]  # sequence 0
    _, _, hook_vals = ref["blocks.1.hook_resid_post"]
    D, F = 32, 24
    rows = [hook_vals[p * D:(p + 1) * D] for p in range(T)]
    rng = random.Random(7)
    w = {"W_enc": [st.f32(rng.gauss(0, 0.4)) for _ in range(D * F)],
         "b_enc": [st.f32(rng.gauss(-0.3, 0.2)) for _ in range(F)],
         "W_dec": [st.f32(rng.gauss(0, 0.2)) for _ in range(F * D)],
         "b_dec": [st.f32(rng.gauss(0, 0.05)) for _ in range(D)]}
    sae_dir = h.tmp_path("ref_sae")
    os.makedirs(sae_dir)
    st.write(os.path.join(sae_dir, "sae_weights.safetensors"),
             [("W_enc", "F32", [D, F], w["W_enc"]), ("b_enc", "F32", [F], w["b_enc"]),
              ("W_dec", "F32", [F, D], w["W_dec"]), ("b_dec", "F32", [D], w["b_dec"])])
    with open(os.path.join(sae_dir, "cfg.json"), "w") as f:
        json.dump({"architecture": "standard", "d_in": D, "d_sae": F, "dtype": "float32",
                   "apply_b_dec_to_input": True, "normalize_activations": "none",
                   "metadata": {"hook_name": "blocks.1.hook_resid_post", "context_size": T, "prepend_bos": False,
                                "model_from_pretrained_kwargs": {"center_writing_weights": False}}}, f)
    tok_path = h.tmp_path("letters.json")
    text = write_letter_tokenizer(tok_path, ids)
    ds = h.tmp_path("letters.txt")
    with open(ds, "w") as f:
        f.write(text + "\n")
    eid = h.extract(DB, sae=sae_dir, model=os.path.join(ROOT, "tests", "data", "gpt2_tiny"), tokenizer=tok_path,
                    dataset=ds, store=h.tmp_path("store_ref"), progress="off")
    sae = sae_reference.Sae(D, F, "standard", w)
    want = {}
    for p, x in enumerate(rows):
        pre = sae.pre_acts(x)
        for fid, v in enumerate(pre):
            if abs(v) > 1e-3:  # clear of the ReLU's corner: both sides agree which side
                want[(p, fid)] = max(v, 0.0)
    got = {(r["position"], r["feature_id"]): r["activation"] for r in encode_rows(DB, text, eid)}
    check_equal([r["token_id"] for r in h.query(DB, "SELECT DISTINCT position, token_id FROM encode_text(%s, %d) "
                                                  "ORDER BY position;" % (h.sql_str(text), eid))],
                [t for p, t in enumerate(ids) if any(k[0] == p for k in got)],
                "reference: the letters encode to the reference token ids")
    bad = [(k, got.get(k, 0.0), v) for k, v in want.items() if not h.close(got.get(k, 0.0), v, 1e-4, 2e-5)]
    extra = [k for k in got if k not in want and got[k] > 1e-3]
    n_active = sum(1 for v in want.values() if v > 0)
    check(not bad and not extra and n_active > 20,
          "reference: %d activations of %d tokens x %d features match HF hook values + Python SAE"
          % (n_active, T, F), repr((bad[:4], extra[:4])))


def test_cache_invalidation_and_errors(planted_id):
    # Same extraction, SAE weights rewritten between two statements of one connection.
    sae_dir = h.tmp_path("swap_sae")
    os.makedirs(sae_dir)
    for n in ("cfg.json", "sae_weights.safetensors"):
        with open(lm(os.path.join("sae", n)), "rb") as a, open(os.path.join(sae_dir, n), "wb") as b:
            b.write(a.read())
    eid = h.extract(DB, sae=sae_dir, model=lm("model"), tokenizer=lm("tokenizer.json"), dataset=lm("docs.txt"),
                    store=h.tmp_path("store_swap"), progress="off")
    doubled = h.tmp_path("doubled.safetensors")
    D = 32
    eye2 = [2.0 if i == j else 0.0 for i in range(D) for j in range(D)]
    eye = [1.0 if i == j else 0.0 for i in range(D) for j in range(D)]
    st.write(doubled, [("W_enc", "F32", [D, D], eye2), ("b_enc", "F32", [D], [0.0] * D),
                       ("W_dec", "F32", [D, D], eye), ("b_dec", "F32", [D], [0.0] * D)])
    sets = h.query_sets(DB, "SELECT activation FROM encode_text('a', %d);\n"
                            ".shell cp %s %s\n"
                            "SELECT activation FROM encode_text('a', %d);"
                        % (eid, doubled, os.path.join(sae_dir, "sae_weights.safetensors"), eid))
    s = lmfix.strength(ord("a"))
    check_equal(sets, [[{"activation": s}], [{"activation": 2 * s}]],
                "a rewritten SAE file is reloaded within the connection (s, then 2 s)")
    acts = h.extract(DB, sae=h.planted("sae"), activations=h.planted("acts.safetensors"),
                     store=h.tmp_path("store_acts"), progress="off")
    h.expect_error(DB, "SELECT * FROM encode_text('x', %d);" % acts, "encode_text", "stored activations",
                   "extraction %d" % acts)
    h.expect_error(DB, "SELECT * FROM encode_text('x', 999);", "no extraction with id 999")
    h.expect_error(DB, "SELECT * FROM encode_text;", "the argument text is missing")
    os.rename(os.path.join(sae_dir, "cfg.json"), os.path.join(sae_dir, "cfg.moved"))
    h.expect_error(DB, "SELECT * FROM encode_text('x', %d);" % eid, "encode_text", sae_dir)
    rows = h.query(DB, "SELECT count(*) AS n FROM encode_text('ab', %d);" % planted_id)
    check_equal(rows, [{"n": 2}], "the planted extraction still answers")


def main():
    state = {}

    def planted():
        state["planted"] = test_planted()

    def cache_and_errors():
        test_cache_invalidation_and_errors(state.get("planted", 1))

    planted.__name__ = "test_planted"
    cache_and_errors.__name__ = "test_cache_invalidation_and_errors"
    h.run_tests(planted, test_tiny_matches_store, test_token_rows_no_bos, test_reference_gpt2_tiny, cache_and_errors)


if __name__ == "__main__":
    main()
