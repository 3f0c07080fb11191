#!/usr/bin/env python3
"""Self-contained tests for convert_gguf.py on tiny synthetic GGUF files.

    python tools/gguf/test_convert_gguf.py      (or: pytest tools/gguf)

Needs gguf, numpy, tokenizers, safetensors; the end-to-end forward check also
needs torch and transformers and is skipped without them. No model download:
the GGUFs are written here with gguf.GGUFWriter, q/k rows permuted the way
llama.cpp's convert_hf_to_gguf.py does it.
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

try:
    import numpy as np
    import gguf
    import safetensors  # noqa: F401
    import tokenizers  # noqa: F401
except ImportError as exc:  # run without the tool's dependencies
    if __name__ == "__main__":
        sys.exit(f"cannot run: needs numpy, gguf, safetensors, tokenizers: {exc}")
    raise unittest.SkipTest(f"needs numpy, gguf, safetensors, tokenizers: "
                            f"{exc}")
from gguf import GGMLQuantizationType as QT  # noqa: E402

import convert_gguf as cg  # noqa: E402

N_LAYER, N_EMBD, N_FF, N_HEAD, N_KV, EPS, THETA = 2, 64, 96, 4, 2, 1e-5, 10000.0
HEAD_DIM = N_EMBD // N_HEAD
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGE_LIST = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d",
              "Ġwor ld", "Ġ t", "Ġt he"]


def llamacpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF -> GGUF row order, as described for convert_hf_to_gguf.py: within a
    head, row a*(hd/2)+j goes to row 2*j+a."""
    hd = w.shape[0] // n_head
    out = np.empty_like(w)
    for h in range(n_head):
        for a in range(2):
            for j in range(hd // 2):
                out[h * hd + 2 * j + a] = w[h * hd + a * (hd // 2) + j]
    return out


def tiny_vocab():
    from tokenizers import pre_tokenizers
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = SPECIALS + alphabet + [m.replace(" ", "") for m in MERGE_LIST]
    types = [3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS))
    return tokens, types


def hf_weights(seed: int, vocab: int, tied: bool) -> dict:
    rng = np.random.default_rng(seed)

    def r(*shape, scale=0.08):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    w = {"model.embed_tokens.weight": r(vocab, N_EMBD, scale=0.5),
         "model.norm.weight": 1 + r(N_EMBD, scale=0.1)}
    if not tied:
        w["lm_head.weight"] = r(vocab, N_EMBD, scale=0.3)
    for b in range(N_LAYER):
        p = f"model.layers.{b}."
        w[p + "input_layernorm.weight"] = 1 + r(N_EMBD, scale=0.1)
        w[p + "post_attention_layernorm.weight"] = 1 + r(N_EMBD, scale=0.1)
        w[p + "self_attn.q_proj.weight"] = r(N_HEAD * HEAD_DIM, N_EMBD, scale=0.3)
        w[p + "self_attn.k_proj.weight"] = r(N_KV * HEAD_DIM, N_EMBD, scale=0.3)
        w[p + "self_attn.v_proj.weight"] = r(N_KV * HEAD_DIM, N_EMBD)
        w[p + "self_attn.o_proj.weight"] = r(N_EMBD, N_HEAD * HEAD_DIM)
        w[p + "mlp.gate_proj.weight"] = r(N_FF, N_EMBD)
        w[p + "mlp.up_proj.weight"] = r(N_FF, N_EMBD)
        w[p + "mlp.down_proj.weight"] = r(N_EMBD, N_FF)
    return w


GGUF_NAME = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def to_gguf_name(hf: str) -> str:
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    if hf == "lm_head.weight":
        return "output.weight"
    _, _, b, rest = hf.split(".", 3)
    return f"blk.{b}.{GGUF_NAME[rest[:-len('.weight')]]}.weight"


def write_gguf(path: Path, weights: dict, qtype=QT.F32, arch="llama",
               tok_model="gpt2", pre="smollm") -> dict:
    """Writes a GGUF; returns the HF-layout weights the converter should give
    back (quantization round trip applied)."""
    tokens, types = tiny_vocab()
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(N_LAYER)
    w.add_context_length(256)
    w.add_embedding_length(N_EMBD)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_KV)
    w.add_layer_norm_rms_eps(EPS)
    w.add_rope_freq_base(THETA)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model(tok_model)
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(MERGE_LIST)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)
    w.add_chat_template("{{ messages[0]['content'] }}")
    expected = {}
    for hf, arr in weights.items():
        g = to_gguf_name(hf)
        data = arr
        if ".q_proj." in hf:
            data = llamacpp_permute(arr, N_HEAD)
        elif ".k_proj." in hf:
            data = llamacpp_permute(arr, N_KV)
        if arr.ndim == 2 and qtype != QT.F32:
            q = gguf.quants.quantize(data, qtype)
            w.add_tensor(g, q, raw_dtype=qtype)
            back = gguf.quants.dequantize(q, qtype)
            if ".q_proj." in hf:
                back = cg.unpermute_rope_rows(back, N_HEAD)
            elif ".k_proj." in hf:
                back = cg.unpermute_rope_rows(back, N_KV)
            expected[hf] = back
        else:
            w.add_tensor(g, np.ascontiguousarray(data))
            expected[hf] = arr
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return expected


def rope_interleaved(x, pos, theta):      # llama.cpp "normal" RoPE
    hd = x.shape[-1]
    inv = theta ** (-np.arange(0, hd, 2) / hd)
    ang = pos[:, None] * inv[None, :]
    c, s = np.cos(ang), np.sin(ang)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * c - x1 * s
    out[..., 1::2] = x0 * s + x1 * c
    return out


def rope_half(x, pos, theta):             # transformers' rotate_half RoPE
    hd = x.shape[-1]
    inv = theta ** (-np.arange(0, hd, 2) / hd)
    ang = pos[:, None] * inv[None, :]
    c = np.concatenate([np.cos(ang)] * 2, -1)
    s = np.concatenate([np.sin(ang)] * 2, -1)
    rot = np.concatenate([-x[..., hd // 2:], x[..., :hd // 2]], -1)
    return x * c + rot * s


def reference_logits(gguf_path: Path, ids: list) -> np.ndarray:
    """Llama forward pass in numpy on the GGUF's own (permuted) q/k layout
    with llama.cpp's interleaved RoPE: what llama.cpp computes."""
    r = gguf.GGUFReader(str(gguf_path))
    t = {x.name: gguf.quants.dequantize(x.data, x.tensor_type)
         .astype(np.float64).reshape([int(n) for n in reversed(x.shape)])
         for x in r.tensors}

    def norm(x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + EPS) * w

    n = len(ids)
    pos = np.arange(n, dtype=np.float64)
    x = t["token_embd.weight"][ids]
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for b in range(N_LAYER):
        p = f"blk.{b}."
        h = norm(x, t[p + "attn_norm.weight"])
        q = (h @ t[p + "attn_q.weight"].T).reshape(n, N_HEAD, HEAD_DIM)
        k = (h @ t[p + "attn_k.weight"].T).reshape(n, N_KV, HEAD_DIM)
        v = (h @ t[p + "attn_v.weight"].T).reshape(n, N_KV, HEAD_DIM)
        q = np.stack([rope_interleaved(q[:, i], pos, THETA)
                      for i in range(N_HEAD)], 1)
        k = np.stack([rope_interleaved(k[:, i], pos, THETA)
                      for i in range(N_KV)], 1)
        outs = []
        for i in range(N_HEAD):
            j = i // (N_HEAD // N_KV)
            s = q[:, i] @ k[:, j].T / np.sqrt(HEAD_DIM) + mask
            a = np.exp(s - s.max(-1, keepdims=True))
            a /= a.sum(-1, keepdims=True)
            outs.append(a @ v[:, j])
        x = x + np.concatenate(outs, -1) @ t[p + "attn_output.weight"].T
        h = norm(x, t[p + "ffn_norm.weight"])
        g = h @ t[p + "ffn_gate.weight"].T
        u = h @ t[p + "ffn_up.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ t[p + "ffn_down.weight"].T
    x = norm(x, t["output_norm.weight"])
    out = t.get("output.weight", t["token_embd.weight"])
    return x @ out.T


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class ConvertTests(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.tmp = Path(self._tmp.name)
        self.vocab = len(tiny_vocab()[0])

    def tearDown(self):
        self._tmp.cleanup()

    def convert(self, gg, name="out", **kw):
        out = self.tmp / name
        cg.convert(str(gg), str(out), log=lambda *_: None, **kw)
        return out

    def test_unpermute_inverts_llamacpp_permute(self):
        w = np.random.default_rng(1).standard_normal((N_KV * HEAD_DIM, 8))
        np.testing.assert_array_equal(
            cg.unpermute_rope_rows(llamacpp_permute(w, N_KV), N_KV), w)

    def test_rope_conventions_agree_after_unpermute(self):
        # Attention scores from GGUF rows + interleaved RoPE equal those from
        # unpermuted rows + rotate-half RoPE: the inverse is the right one.
        rng = np.random.default_rng(2)
        wq, wk = rng.standard_normal((2, HEAD_DIM, N_EMBD))
        x = rng.standard_normal((7, N_EMBD))
        pos = np.arange(7, dtype=np.float64)
        qg, kg = rope_interleaved(x @ wq.T, pos, THETA), \
            rope_interleaved(x @ wk.T, pos, THETA)
        uq, uk = cg.unpermute_rope_rows(wq, 1), cg.unpermute_rope_rows(wk, 1)
        qh, kh = rope_half(x @ uq.T, pos, THETA), rope_half(x @ uk.T, pos, THETA)
        np.testing.assert_allclose(qg @ kg.T, qh @ kh.T, rtol=1e-10, atol=1e-10)
        # ...and without the inverse they do not.
        bad = rope_half(x @ wq.T, pos, THETA) @ rope_half(x @ wk.T, pos, THETA).T
        self.assertGreater(np.abs(bad - qg @ kg.T).max(), 1e-3)

    def check_weights(self, out: Path, expected: dict, exact: bool):
        from safetensors.numpy import load_file
        got = load_file(str(out / "model.safetensors"))
        self.assertEqual(sorted(got), sorted(expected))
        for k, v in expected.items():
            self.assertEqual(got[k].shape, v.shape, k)
            if exact:
                np.testing.assert_array_equal(got[k], v, err_msg=k)
            else:
                np.testing.assert_allclose(got[k], v, rtol=0, atol=1e-6,
                                           err_msg=k)

    def test_f32_tied(self):
        gg = self.tmp / "m.gguf"
        exp = write_gguf(gg, hf_weights(0, self.vocab, tied=True))
        out = self.convert(gg)
        self.check_weights(out, exp, exact=True)
        import json
        cfg = json.loads((out / "config.json").read_text())
        self.assertEqual(cfg["model_type"], "llama")
        self.assertTrue(cfg["tie_word_embeddings"])
        for key, val in (("num_hidden_layers", N_LAYER),
                         ("hidden_size", N_EMBD),
                         ("intermediate_size", N_FF),
                         ("num_attention_heads", N_HEAD),
                         ("num_key_value_heads", N_KV),
                         ("head_dim", HEAD_DIM), ("rms_norm_eps", EPS),
                         ("rope_theta", THETA), ("vocab_size", self.vocab),
                         ("bos_token_id", 1), ("eos_token_id", 2),
                         ("torch_dtype", "float32")):
            self.assertEqual(cfg[key], val, key)
        tc = json.loads((out / "tokenizer_config.json").read_text())
        self.assertEqual(tc["bos_token"], "<|im_start|>")
        self.assertEqual(tc["eos_token"], "<|im_end|>")
        self.assertIn("chat_template", tc)

    def test_q8_0_untied(self):
        gg = self.tmp / "m.gguf"
        exp = write_gguf(gg, hf_weights(3, self.vocab, tied=False), QT.Q8_0)
        out = self.convert(gg)
        self.check_weights(out, exp, exact=False)
        import json
        self.assertFalse(json.loads((out / "config.json").read_text())
                         ["tie_word_embeddings"])

    def test_q4_1_matches_dequantize(self):
        gg = self.tmp / "m.gguf"
        try:
            exp = write_gguf(gg, hf_weights(4, self.vocab, tied=True), QT.Q4_1)
        except NotImplementedError:
            self.skipTest("this gguf cannot quantize Q4_1")
        self.check_weights(self.convert(gg), exp, exact=False)

    def test_tokenizer(self):
        from tokenizers import Tokenizer
        gg = self.tmp / "m.gguf"
        write_gguf(gg, hf_weights(0, self.vocab, tied=True))
        tk = Tokenizer.from_file(str(self.convert(gg) / "tokenizer.json"))
        tokens, _ = tiny_vocab()
        text = "hello world 42<|im_end|>"
        enc = tk.encode(text)
        self.assertEqual(enc.tokens, ["hello", "Ġworld", "Ġ", "4", "2",
                                      "<|im_end|>"])
        self.assertEqual(enc.ids[-1], 2)
        self.assertEqual(enc.ids[0], tokens.index("hello"))
        self.assertEqual(tk.decode(enc.ids, skip_special_tokens=False), text)
        self.assertEqual(tk.decode(enc.ids, skip_special_tokens=True),
                         "hello world 42")

    def test_bf16(self):
        gg = self.tmp / "m.gguf"
        exp = write_gguf(gg, hf_weights(5, self.vocab, tied=True))
        out = self.convert(gg, dtype="bf16")
        data = (out / "model.safetensors").read_bytes()
        import json
        n = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + n])
        body = data[8 + n:]
        for k, v in exp.items():
            info = header[k]
            self.assertEqual(info["dtype"], "BF16")
            a, b = info["data_offsets"]
            bits = np.frombuffer(body[a:b], dtype="<u2").astype(np.uint32)
            got = (bits << 16).view(np.float32).reshape(info["shape"])
            np.testing.assert_allclose(got, v, rtol=2 ** -8, atol=0,
                                       err_msg=k)

    def test_deterministic(self):
        gg = self.tmp / "m.gguf"
        write_gguf(gg, hf_weights(0, self.vocab, tied=True), QT.Q8_0)
        a, b = self.convert(gg, "a"), self.convert(gg, "b")
        names = sorted(p.name for p in a.iterdir())
        self.assertEqual(names, sorted(p.name for p in b.iterdir()))
        for name in names:
            self.assertEqual(sha(a / name), sha(b / name), name)

    def test_refusals(self):
        cases = [({"arch": "gpt2"}, "general.architecture"),
                 ({"tok_model": "llama"}, "tokenizer.ggml.model"),
                 ({"pre": "no-such-pre"}, "tokenizer.ggml.pre")]
        for i, (kw, key) in enumerate(cases):
            gg = self.tmp / f"bad{i}.gguf"
            write_gguf(gg, hf_weights(0, self.vocab, tied=True), **kw)
            with self.assertRaises(cg.ConversionError) as cm:
                self.convert(gg, f"bad{i}")
            self.assertIn(key, str(cm.exception))
            self.assertFalse((self.tmp / f"bad{i}").exists(),
                             "nothing is written for a refused GGUF")

    def test_transformers_matches_llamacpp_semantics(self):
        try:
            import torch
            from transformers import AutoModelForCausalLM
        except ImportError:
            self.skipTest("torch/transformers not installed")
        gg = self.tmp / "m.gguf"
        write_gguf(gg, hf_weights(6, self.vocab, tied=True))
        out = self.convert(gg)
        ids = [5, 77, 200, 3, 260, 9, 140, 31, 1, 12]
        ref = reference_logits(gg, ids)
        model = AutoModelForCausalLM.from_pretrained(str(out),
                                                     dtype=torch.float64)
        with torch.no_grad():
            got = model(torch.tensor([ids])).logits[0].numpy()
        # HF builds inv_freq in float32, hence ~1e-6 differences; a wrong q/k
        # permutation gives differences of order 1.
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


if __name__ == "__main__":
    unittest.main(verbosity=2)
