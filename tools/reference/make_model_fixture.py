#!/usr/bin/env python3
"""Regenerates the committed GPT-2 fixtures of tests/unit/test_model.c.

Needs torch, transformers and safetensors (CI does not: the C test reads only the
committed files); the committed files were made with torch 2.15.0 and
transformers 5.23.0 (`pip install torch transformers safetensors` in a venv; the
PyPI torch wheel brings about 3 GB of CUDA libraries, but only the CPU is used).
Run from anywhere:

    python3 tools/reference/make_model_fixture.py [OUT_ROOT]   # default: tests/data

Writes two tiny random GPT-2 checkpoints, each with config.json, model.safetensors
and expected.safetensors:

  gpt2_tiny/      GPT2LMHeadModel (names "transformer.*"), F32 weights,
                  activation gelu_new, default attention scaling.
  gpt2_tiny_f16/  GPT2Model (names without prefix), F16 weights, activation
                  "gelu" (erf), scale_attn_by_inverse_layer_idx = true. Its
                  expected values come from the F16 weights widened to f32, so
                  they are exact for a correct F16 -> f32 conversion.

Every parameter (LayerNorm weights and all biases included) is drawn at random,
so a bias or LayerNorm parameter applied in the wrong place shows up.

expected.safetensors holds "tokens" (I32 [B, T]) and, for every layer L and every
hook, "blocks.L.hook_resid_pre|hook_attn_out|hook_mlp_out|hook_resid_post"
(F32 [B*T, n_embd]), taken with forward hooks on Hugging Face's modules (block
input, attn output, mlp output, block output): no ln_f, unlike hidden_states[-1].
"""
import json
import os
import sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel, GPT2Model

HOOKS = ("hook_resid_pre", "hook_attn_out", "hook_mlp_out", "hook_resid_post")


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if ".ln_" in name or name.startswith(("ln_f", "transformer.ln_f")):
                p.copy_(1.0 + 0.2 * noise if name.endswith("weight") else 0.2 * noise)
            elif name.endswith("wte.weight"):
                p.copy_(noise)
            elif name.endswith("wpe.weight"):
                p.copy_(0.5 * noise)
            elif name.endswith("bias"):
                p.copy_(0.1 * noise)
            else:
                p.copy_(0.2 * noise)


def capture(model, blocks, tokens):
    acts = {}

    def first(o):
        return o[0] if isinstance(o, tuple) else o

    handles = []
    for i, blk in enumerate(blocks):
        def pre(mod, args, kwargs, i=i):
            x = args[0] if args else kwargs["hidden_states"]
            acts[f"blocks.{i}.hook_resid_pre"] = x
        handles.append(blk.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(blk.attn.register_forward_hook(
            lambda m, a, o, i=i: acts.__setitem__(f"blocks.{i}.hook_attn_out", first(o))))
        handles.append(blk.mlp.register_forward_hook(
            lambda m, a, o, i=i: acts.__setitem__(f"blocks.{i}.hook_mlp_out", first(o))))
        handles.append(blk.register_forward_hook(
            lambda m, a, o, i=i: acts.__setitem__(f"blocks.{i}.hook_resid_post", first(o))))
    with torch.no_grad():
        model(input_ids=tokens, use_cache=False)
    for h in handles:
        h.remove()
    n = tokens.numel()
    out = {"tokens": tokens.to(torch.int32).contiguous()}
    for i in range(len(blocks)):
        for k in HOOKS:
            a = acts[f"blocks.{i}.{k}"]
            out[f"blocks.{i}.{k}"] = a.reshape(n, -1).to(torch.float32).clone()
    # Self-check: the pieces add up (resid_post = resid_pre + attn_out + mlp_out).
    for i in range(len(blocks)):
        s = out[f"blocks.{i}.hook_resid_pre"] + out[f"blocks.{i}.hook_attn_out"] + out[f"blocks.{i}.hook_mlp_out"]
        assert torch.allclose(s, out[f"blocks.{i}.hook_resid_post"], atol=1e-4), i
    return out


def make_tokens(seed, n_seq, seq_len, vocab):
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, vocab, (n_seq, seq_len), generator=g)
    t[0, 0] = 0              # the edges of the vocabulary
    t[0, 1] = vocab - 1
    t[1, :4] = t[0, :4]      # a shared prefix across sequences
    return t


def tidy(out_dir):
    gen = os.path.join(out_dir, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "data")
    meta = {"generator": "tools/reference/make_model_fixture.py",
            "torch": torch.__version__, "transformers": transformers.__version__}
    base = dict(vocab_size=96, n_positions=32, n_embd=32, n_layer=3, n_head=4,
                bos_token_id=95, eos_token_id=95, attn_pdrop=0.0, embd_pdrop=0.0, resid_pdrop=0.0)

    # 1. gpt2_tiny: GPT2LMHeadModel, F32.
    torch.manual_seed(1234)
    cfg = GPT2Config(**base, activation_function="gelu_new", attn_implementation="eager")
    model = GPT2LMHeadModel(cfg).eval()
    assert model.config._attn_implementation == "eager"
    randomize(model, 1)
    out_dir = os.path.join(root, "gpt2_tiny")
    model.save_pretrained(out_dir, safe_serialization=True)
    tidy(out_dir)
    tokens = make_tokens(2, 3, 20, cfg.vocab_size)
    save_file(capture(model, model.transformer.h, tokens), os.path.join(out_dir, "expected.safetensors"),
              metadata=meta)

    # 2. gpt2_tiny_f16: GPT2Model (no prefix), F16 weights, erf gelu, layer-index scaling.
    torch.manual_seed(5678)
    cfg = GPT2Config(**base, activation_function="gelu", scale_attn_by_inverse_layer_idx=True,
                     attn_implementation="eager")
    model = GPT2Model(cfg).eval()
    randomize(model, 3)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())
    tokens = make_tokens(4, 2, cfg.n_positions, cfg.vocab_size)
    expected = capture(model, model.h, tokens)
    out_dir = os.path.join(root, "gpt2_tiny_f16")
    model.half().save_pretrained(out_dir, safe_serialization=True)
    tidy(out_dir)
    save_file(expected, os.path.join(out_dir, "expected.safetensors"), metadata=meta)

    for d in ("gpt2_tiny", "gpt2_tiny_f16"):
        p = os.path.join(root, d)
        print(d, {f: os.path.getsize(os.path.join(p, f)) for f in sorted(os.listdir(p))})
        print(" ", json.load(open(os.path.join(p, "config.json"))).get("activation_function"))


if __name__ == "__main__":
    main()
