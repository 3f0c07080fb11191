#!/usr/bin/env python3
"""make_bench_model.py: the benchmark's model and SAEs (numpy only).

    make_bench_model.py OUTDIR --tokenizer TOKENIZER.json [--calib-text DATA.jsonl]
                        [--sae standard:24576] [--sae topk:24576] ... [--active 64]
                        [--layers 12] [--d-model 768] [--hook-layer 8] [--seed 1234]
                        [--snippet SNIPPET.txt]

Writes
    OUTDIR/model/{config.json, model.safetensors, tokenizer.json}
        a randomly initialised GPT-2-small-shaped Hugging Face checkpoint (F32): 12 layers,
        d_model 768, 12 heads, d_mlp 3072, n_positions 1024, the vocabulary of the given
        tokenizer; GPT-2's initialisation (N(0, 0.02), output projections N(0, 0.02 /
        sqrt(2 n_layer)), zero biases, unit layer norms).
    OUTDIR/sae-<arch>-<d_sae>/{cfg.json, sae_weights.safetensors}
        SAELens v6 SAEs on blocks.<hook_layer>.hook_resid_pre with about --active
        features firing per token.

Calibration: a random model's residual stream has no unit scale, so random encoder
directions would fire arbitrarily often. The model is run here (a numpy GPT-2 forward)
over calibration tokens (the first sequences of --calib-text when the `tokenizers`
package is present, else random ids) up to the hook; each encoder column w_f (random,
unit norm) is divided by the spread of x . w_f over those tokens and b_enc centres it, so
every pre-activation is standardised. standard: b_enc also subtracts the (1 - p_f)
quantile, so feature f fires on a fraction p_f of tokens, about --active a token in all;
topk: k = active. Per-feature densities follow a log-normal (log10 p ~ N(mu, 0.75),
mean active/d_sae) as a trained SAE's do. center_writing_weights is off in the metadata
(the model is random).
"""
import argparse
import json
import math
import os
import shutil
import struct
import sys
from statistics import NormalDist

import numpy as np


def write_safetensors(path, tensors):
    """tensors: list of (name, float32 array). Row-major little-endian F32."""
    header, offset = {}, 0
    for name, arr in tensors:
        n = arr.size * 4
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for _, arr in tensors:
            f.write(np.ascontiguousarray(arr, dtype="<f4").tobytes())
    os.replace(tmp, path)


def gelu_new(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def layer_norm(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def make_model(rng, vocab, n_layer, d, n_head, n_ctx):
    std, proj_std = 0.02, 0.02 / math.sqrt(2 * n_layer)
    w = {"wte.weight": rng.normal(0, std, (vocab, d)), "wpe.weight": rng.normal(0, std, (n_ctx, d))}
    for i in range(n_layer):
        p = "h.%d." % i
        w[p + "ln_1.weight"] = np.ones(d)
        w[p + "ln_1.bias"] = np.zeros(d)
        w[p + "attn.c_attn.weight"] = rng.normal(0, std, (d, 3 * d))  # Conv1D [in, out], Q|K|V
        w[p + "attn.c_attn.bias"] = np.zeros(3 * d)
        w[p + "attn.c_proj.weight"] = rng.normal(0, proj_std, (d, d))
        w[p + "attn.c_proj.bias"] = np.zeros(d)
        w[p + "ln_2.weight"] = np.ones(d)
        w[p + "ln_2.bias"] = np.zeros(d)
        w[p + "mlp.c_fc.weight"] = rng.normal(0, std, (d, 4 * d))
        w[p + "mlp.c_fc.bias"] = np.zeros(4 * d)
        w[p + "mlp.c_proj.weight"] = rng.normal(0, proj_std, (4 * d, d))
        w[p + "mlp.c_proj.bias"] = np.zeros(d)
    w["ln_f.weight"] = np.ones(d)
    w["ln_f.bias"] = np.zeros(d)
    return {k: v.astype(np.float32) for k, v in w.items()}


def resid_pre(w, tokens, layer, n_head):
    """blocks.<layer>.hook_resid_pre for tokens [n_seq, T]: x [n_seq, T, d]."""
    n_seq, T = tokens.shape
    x = w["wte.weight"][tokens] + w["wpe.weight"][:T][None]
    d = x.shape[-1]
    hd = d // n_head
    mask = np.triu(np.full((T, T), -np.inf, dtype=np.float32), 1)
    for i in range(layer):
        p = "h.%d." % i
        h = layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"])
        qkv = h @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]  # [n_seq, T, 3d]
        q, k, v = (qkv[..., j * d:(j + 1) * d].reshape(n_seq, T, n_head, hd).transpose(0, 2, 1, 3) for j in range(3))
        s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd) + mask  # [n_seq, H, T, T]
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        a = (s @ v).transpose(0, 2, 1, 3).reshape(n_seq, T, d)
        x = x + a @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
        h = layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"])
        x = x + gelu_new(h @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"]) @ w[p + "mlp.c_proj.weight"] \
            + w[p + "mlp.c_proj.bias"]
    return x


def write_snippet(tok, calib_text, path, n_tokens=100):
    """The first n_tokens tokens of the first long enough document, as text (for encode_text)."""
    with open(calib_text, encoding="utf-8") as f:
        for line in f:
            text = json.loads(line).get("text") if line.strip() else None
            if not text or "<|" in text[:2000]:
                continue
            enc = tok.encode(text[:4000])
            if len(enc.ids) > n_tokens + 1:
                with open(path, "w", encoding="utf-8") as out:
                    out.write(text[: enc.offsets[n_tokens - 1][1]])
                return


def calibration_tokens(tokenizer_path, calib_text, vocab, bos, n_seq, T, rng, snippet=None):
    """The first n_seq sequences of the calibration text (BOS + T-1 tokens), else random ids."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        Tokenizer = None
    if Tokenizer is not None and calib_text:
        tok = Tokenizer.from_file(tokenizer_path)
        stream = []
        with open(calib_text, encoding="utf-8") as f:
            for line in f:
                text = json.loads(line).get("text") if line.strip() else None
                if text:
                    stream += tok.encode(text).ids + [bos]
                if len(stream) >= n_seq * (T - 1):
                    break
        if snippet:
            write_snippet(tok, calib_text, snippet)
        if len(stream) >= n_seq * (T - 1):
            body = np.array(stream[: n_seq * (T - 1)], dtype=np.int64).reshape(n_seq, T - 1)
            return np.concatenate([np.full((n_seq, 1), bos), body], axis=1), "text"
    ids = rng.integers(0, vocab, (n_seq, T))
    ids[:, 0] = bos
    return ids, "random ids"


def make_sae(rng, x, arch, d_sae, active, hook, T):
    """x: calibration activations [n, d_in] (BOS rows removed)."""
    n, d_in = x.shape
    w_enc = rng.normal(0, 1, (d_in, d_sae)).astype(np.float32)
    w_enc /= np.linalg.norm(w_enc, axis=0, keepdims=True)
    b_enc = np.empty(d_sae, dtype=np.float32)
    # Per-feature firing probability: log10 p ~ N(mu, 0.75) with mean p = active / d_sae
    # (a trained SAE's density histogram: most features rare, a few dense), capped at 0.5.
    sigma = 0.75
    mu = math.log10(active / d_sae) - sigma * sigma * math.log(10) / 2
    p = np.minimum(10.0 ** (mu + sigma * rng.standard_normal(d_sae)), 0.5)
    gauss = np.array([NormalDist().inv_cdf(1.0 - pf) for pf in p])
    for lo in range(0, d_sae, 4096):  # [n, 4096] at a time: bounded memory at d_sae 64k
        hi = min(lo + 4096, d_sae)
        pre = x @ w_enc[:, lo:hi]
        mean, std = pre.mean(0), pre.std(0) + 1e-12
        w_enc[:, lo:hi] /= std
        if arch == "standard":
            # the (1 - p) quantile of the standardised pre-activation: empirical where the
            # calibration tokens hold at least 20 above it, else the Gaussian tail
            z = np.sort((pre - mean) / std, axis=0)
            # midway between two order statistics: a threshold equal to a calibration token's
            # value would put that token (which the benchmark data contains) exactly at 0
            idx = np.clip(np.floor((1.0 - p[lo:hi]) * (n - 1)).astype(np.int64), 0, n - 2)
            cols = np.arange(hi - lo)
            emp = 0.5 * (z[idx, cols] + z[idx + 1, cols])
            thr = np.where(p[lo:hi] * n >= 20, emp, gauss[lo:hi])
        else:
            thr = 0.0
        b_enc[lo:hi] = -mean / std - thr
    w_dec = rng.normal(0, 1, (d_sae, d_in)).astype(np.float32)
    w_dec /= np.linalg.norm(w_dec, axis=1, keepdims=True)
    cfg = {
        "architecture": arch, "d_in": d_in, "d_sae": d_sae, "dtype": "float32", "device": "cpu",
        "apply_b_dec_to_input": True, "normalize_activations": "none", "reshape_activations": "none",
        "metadata": {
            "sae_lens_version": "6.54.12", "sae_lens_training_version": "6.54.12",
            "model_name": "bench-gpt2-small-random", "hook_name": hook, "hook_head_index": None,
            "context_size": T, "prepend_bos": True, "seqpos_slice": [None], "exclude_special_tokens": True,
            "model_from_pretrained_kwargs": {"center_writing_weights": False},
        },
    }
    if arch == "topk":
        cfg["k"] = active
        cfg["rescale_acts_by_decoder_norm"] = False
    tensors = [("W_enc", w_enc), ("b_enc", b_enc), ("W_dec", w_dec), ("b_dec", np.zeros(d_in, np.float32))]
    return cfg, tensors


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir")
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--calib-text")
    ap.add_argument("--sae", action="append", default=[], help="arch:d_sae, e.g. standard:24576")
    ap.add_argument("--active", type=int, default=64)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--d-model", type=int, default=768)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--n-ctx", type=int, default=1024)
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--hook-layer", type=int, default=8)
    ap.add_argument("--calib-seqs", type=int, default=32)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--snippet", help="also write the first 100 tokens of the calibration text here")
    a = ap.parse_args()

    with open(a.tokenizer, encoding="utf-8") as f:
        tj = json.load(f)
    vocab = max([*tj["model"]["vocab"].values(), *(t["id"] for t in tj.get("added_tokens", []))]) + 1
    bos = next((t["id"] for t in tj.get("added_tokens", []) if t["content"] == "<|endoftext|>"), None)
    if bos is None:
        sys.exit("make_bench_model.py: %s has no <|endoftext|> token" % a.tokenizer)

    rng = np.random.default_rng(a.seed)
    mdir = os.path.join(a.outdir, "model")
    os.makedirs(mdir, exist_ok=True)
    w = make_model(rng, vocab, a.layers, a.d_model, a.heads, a.n_ctx)
    write_safetensors(os.path.join(mdir, "model.safetensors"), list(w.items()))
    config = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "activation_function": "gelu_new",
        "vocab_size": vocab, "n_positions": a.n_ctx, "n_embd": a.d_model, "n_layer": a.layers,
        "n_head": a.heads, "n_inner": None, "layer_norm_epsilon": 1e-5, "initializer_range": 0.02,
        "bos_token_id": bos, "eos_token_id": bos, "attn_pdrop": 0.0, "embd_pdrop": 0.0, "resid_pdrop": 0.0,
        "scale_attn_weights": True, "tie_word_embeddings": True, "use_cache": False, "dtype": "float32",
    }
    with open(os.path.join(mdir, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    shutil.copyfile(a.tokenizer, os.path.join(mdir, "tokenizer.json"))
    n_params = sum(v.size for v in w.values())
    print("model: %d layers, d_model %d, vocab %d, %.1fM parameters -> %s" % (
        a.layers, a.d_model, vocab, n_params / 1e6, mdir))

    if not a.sae:
        return
    tokens, source = calibration_tokens(a.tokenizer, a.calib_text, vocab, bos, a.calib_seqs, a.context, rng,
                                        a.snippet)
    x = resid_pre(w, tokens, a.hook_layer, a.heads)[:, 1:].reshape(-1, a.d_model)  # BOS is never encoded
    hook = "blocks.%d.hook_resid_pre" % a.hook_layer
    print("calibration: %d tokens (%s), |resid_pre| mean %.3f" % (x.shape[0], source, np.linalg.norm(x, axis=1).mean()))
    for spec in a.sae:
        arch, _, size = spec.partition(":")
        if arch not in ("standard", "topk") or not size.isdigit():
            sys.exit("make_bench_model.py: --sae wants standard:N or topk:N, got '%s'" % spec)
        d_sae = int(size)
        cfg, tensors = make_sae(rng, x, arch, d_sae, a.active, hook, a.context)
        sdir = os.path.join(a.outdir, "sae-%s-%d" % (arch, d_sae))
        os.makedirs(sdir, exist_ok=True)
        write_safetensors(os.path.join(sdir, "sae_weights.safetensors"), tensors)
        with open(os.path.join(sdir, "cfg.json"), "w") as f:
            json.dump(cfg, f, indent=1)
        print("sae: %s d_sae %d on %s -> %s" % (arch, d_sae, hook, sdir))


if __name__ == "__main__":
    main()
