#!/usr/bin/env python3
"""test_families.py: extract_features on a tiny checkpoint of every model family, against Python.

Each case of tests/data/families (random checkpoints made with transformers' own
classes; expected.safetensors holds each hook as transformers computed it) is
extracted through SQL with an SAE drawn here: its tokens as a 2-D token file (rows
as they are, no BOS), the SAE on one hook. The expected statistics come from the
reference hook values through the pure-Python SAE (tests/fixtures/sae_reference.py):
per feature n_active and the max (rows of the model's BOS id left out: a special
token never reaches the SAE), over the features whose pre-activations all stay
clear of the ReLU's corner (|pre| > 1e-3, so both sides agree which side each is on).
attn.hook_z is TransformerLens's, without the value bias (model.h), so its reference
is transformers' o_proj input minus that bias.
"""
import json
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "fixtures"))
import harness as h  # noqa: E402
from harness import check  # noqa: E402
import safetensors_io as st  # noqa: E402
import sae_reference  # noqa: E402

CFG = h.setup(__doc__)
DB = CFG.db
DATA = os.path.realpath(os.path.join(HERE, "..", "data", "families"))

# case -> the hook its SAE reads
CASES = {
    "gpt2": "blocks.1.ln2.hook_normalized",
    "llama": "blocks.2.hook_resid_post",
    "llama_bf16": "blocks.1.hook_mlp_out",
    "llama_sharded": "blocks.1.hook_resid_mid",
    "mistral": "blocks.1.hook_resid_post",
    "qwen2": "blocks.0.attn.hook_z",
    "qwen3": "blocks.1.hook_resid_post",
    "gemma": "blocks.1.hook_resid_post",
    "gemma2": "blocks.1.hook_attn_out",
    "gemma3_text": "blocks.2.hook_resid_post",
    "gpt_neox": "blocks.1.hook_resid_post",
    "gpt_neox_seq": "blocks.1.attn.hook_z",
}
F = 24


def reference_rows(case, hook):
    ref = st.read(os.path.join(DATA, case, "expected.safetensors"))
    _, (n_seq, T), tokens = ref["tokens"]
    _, (n, d), vals = ref[hook]
    rows = [vals[i * d:(i + 1) * d] for i in range(n)]
    if hook.endswith("attn.hook_z"):
        with open(os.path.join(DATA, case, "config.json")) as f:
            cfg = json.load(f)
        w = st.read(os.path.join(DATA, case, "model.safetensors"))
        layer = int(hook.split(".")[1])
        heads = cfg["num_attention_heads"]
        hd = cfg.get("head_dim") or cfg["hidden_size"] // heads
        if cfg["model_type"] == "gpt_neox":
            qkv = w["gpt_neox.layers.%d.attention.query_key_value.bias" % layer][2]
            bias = [v for h_ in range(heads) for v in qkv[h_ * 3 * hd + 2 * hd:h_ * 3 * hd + 3 * hd]]
        else:
            vb = w["model.layers.%d.self_attn.v_proj.bias" % layer][2]
            group = heads // cfg.get("num_key_value_heads", heads)
            bias = [vb[(h_ // group) * hd + k] for h_ in range(heads) for k in range(hd)]
        rows = [[x - b for x, b in zip(r, bias)] for r in rows]
    return (n_seq, T, tokens), rows, d


def write_sae(path, d, hook, rng):
    w = {"W_enc": [st.f32(rng.gauss(0, 1.0 / d ** 0.5)) for _ in range(d * F)],
         "b_enc": [st.f32(rng.gauss(0.0, 0.2)) for _ in range(F)],
         "W_dec": [st.f32(rng.gauss(0, 0.2)) for _ in range(F * d)],
         "b_dec": [st.f32(rng.gauss(0, 0.05)) for _ in range(d)]}
    os.makedirs(path)
    st.write(os.path.join(path, "sae_weights.safetensors"),
             [("W_enc", "F32", [d, F], w["W_enc"]), ("b_enc", "F32", [F], w["b_enc"]),
              ("W_dec", "F32", [F, d], w["W_dec"]), ("b_dec", "F32", [d], w["b_dec"])])
    with open(os.path.join(path, "cfg.json"), "w") as f:
        json.dump({"architecture": "standard", "d_in": d, "d_sae": F, "dtype": "float32",
                   "apply_b_dec_to_input": True, "normalize_activations": "none",
                   "metadata": {"hook_name": hook, "prepend_bos": False,
                                "model_from_pretrained_kwargs": {"center_writing_weights": False}}}, f)
    return sae_reference.Sae(d, F, "standard", w)


def test_families():
    rng = random.Random(13)
    for case, hook in CASES.items():
        (n_seq, T, tokens), rows, d = reference_rows(case, hook)
        ds = h.tmp_path("%s_tokens.safetensors" % case)
        st.write(ds, [("tokens", "I32", [n_seq, T], tokens)])
        sae = write_sae(h.tmp_path("%s_sae" % case), d, hook, rng)
        eid = h.extract(DB, sae=h.tmp_path("%s_sae" % case), model=os.path.join(DATA, case), dataset=ds,
                        store=h.tmp_path("%s_store" % case), progress="off")
        with open(os.path.join(DATA, case, "config.json")) as f:
            bos = json.load(f).get("bos_token_id")
        # A token file's BOS is a special token: it never reaches the SAE (docs/SQL.md).
        pre = [sae.pre_acts(x) for x, t in zip(rows, tokens) if t != bos]
        clear = [f for f in range(F) if all(abs(p[f]) > 1e-3 for p in pre)]
        want = {f: (sum(1 for p in pre if p[f] > 0), max(max(p[f] for p in pre), 0.0)) for f in clear}
        got = {r["feature_id"]: (r["n_active"], r["max"]) for r in h.query(
            DB, "SELECT feature_id, n_active, max FROM feature_stats WHERE extraction_id = %d;" % eid)}
        bad = [(f, got.get(f), want[f]) for f in clear
               if got.get(f, (None,))[0] != want[f][0] or not h.close(got[f][1] or 0.0, want[f][1], 1e-4, 2e-5)]
        active = sum(want[f][0] for f in clear)
        check(not bad and len(clear) >= F // 2 and active > 0,
              "%-13s %-29s %d tokens: n_active and max of %d features (%d activations) match transformers + "
              "Python SAE" % (case, hook, n_seq * T, len(clear), active), repr(bad[:4]))


h.run_tests(test_families)
