#!/usr/bin/env python3
"""train_model.py CORPUS.jsonl TOKENIZER.json WORKDIR OUTDIR [options]

Trains a small GPT-2 (Hugging Face GPT2LMHeadModel: 4 layers, d_model 128, 4 heads,
context 128, vocab from the tokenizer) on the CPU. The corpus is tokenized and packed
the way saelite packs a dataset (BOS = <|endoftext|> starts every 128-token sequence and
separates documents); 1 document in 50 (by a hash of its index) is held out.

Writes WORKDIR/{train,val}_tokens.npy (reused by train_sae.py), WORKDIR/model_log.json
(loss curve) and OUTDIR/{config.json,model.safetensors} in F16.
Deterministic: fixed seeds, a fixed number of steps, bf16 autocast on 2 threads.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import GPT2Config, GPT2LMHeadModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import CONTEXT, encode_docs, pack, read_docs  # noqa: E402


def tokenize(corpus, tok, workdir):
    tr_p, va_p = os.path.join(workdir, "train_tokens.npy"), os.path.join(workdir, "val_tokens.npy")
    if os.path.exists(tr_p) and os.path.exists(va_p):
        return np.load(tr_p), np.load(va_p)
    bos = tok.token_to_id("<|endoftext|>")
    docs = list(read_docs(corpus))
    ids = encode_docs(tok, docs)
    val = [d for i, d in enumerate(ids) if (i * 2654435761) % 50 == 7]
    train = [d for i, d in enumerate(ids) if (i * 2654435761) % 50 != 7]
    tr, va = pack(train, bos), pack(val, bos)
    np.save(tr_p, tr)
    np.save(va_p, va)
    return tr, va


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus")
    ap.add_argument("tokenizer")
    ap.add_argument("workdir")
    ap.add_argument("outdir")
    ap.add_argument("--steps", type=int, default=1600)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--n-embd", type=int, default=128)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1234)
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    os.makedirs(a.outdir, exist_ok=True)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    tok = Tokenizer.from_file(a.tokenizer)
    bos = tok.token_to_id("<|endoftext|>")
    t0 = time.time()
    train, val = tokenize(a.corpus, tok, a.workdir)
    print(f"tokens: train {train.size:,} ({train.shape[0]} seqs), val {val.size:,}; {time.time() - t0:.0f}s", flush=True)

    cfg = GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=CONTEXT, n_embd=a.n_embd,
                     n_layer=a.n_layer, n_head=a.n_head, n_inner=4 * a.n_embd,
                     activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0,
                     attn_pdrop=0.0, bos_token_id=bos, eos_token_id=bos, tie_word_embeddings=True)
    model = GPT2LMHeadModel(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params:,} parameters", flush=True)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95))

    def lr_at(step):
        if step < a.warmup:
            return a.lr * (step + 1) / a.warmup
        p = (step - a.warmup) / max(1, a.steps - a.warmup)
        return a.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))

    def labels_of(x):
        y = x.clone()
        y[:, 0] = -100  # the first BOS is never a target (HF shifts labels itself)
        return y

    @torch.no_grad()
    def val_loss(n=256):
        model.eval()
        losses = []
        for i in range(0, min(n, len(val)), 64):
            x = torch.from_numpy(val[i:i + 64].astype(np.int64))
            with torch.autocast("cpu", dtype=torch.bfloat16):
                losses.append(model(x, labels=labels_of(x)).loss.float().item())
        model.train()
        return float(np.mean(losses))

    rng = np.random.default_rng(a.seed)
    order = rng.permutation(len(train))
    pos = 0
    curve, val_curve = [], []
    smooth = None
    t0 = time.time()
    model.train()
    for step in range(a.steps):
        if pos + a.batch > len(order):
            order, pos = rng.permutation(len(train)), 0
        x = torch.from_numpy(train[order[pos:pos + a.batch]].astype(np.int64))
        pos += a.batch
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(x, labels=labels_of(x)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        lv = loss.item()
        smooth = lv if smooth is None else 0.98 * smooth + 0.02 * lv
        if step % 50 == 0 or step == a.steps - 1:
            curve.append({"step": step, "tokens": (step + 1) * a.batch * CONTEXT, "loss": round(smooth, 4)})
        if step % 500 == 0 or step == a.steps - 1:
            vl = val_loss()
            val_curve.append({"step": step, "val_loss": round(vl, 4)})
            el = time.time() - t0
            print(f"step {step}/{a.steps} loss {smooth:.3f} val {vl:.3f} lr {lr_at(step):.2e} "
                  f"{(step + 1) * a.batch * CONTEXT / el:,.0f} tok/s {el / 60:.1f} min", flush=True)
    elapsed = time.time() - t0
    final_val = val_loss(n=len(val))
    print(f"final held-out loss {final_val:.4f} ({elapsed / 60:.1f} min)", flush=True)

    model.to(torch.float16).save_pretrained(a.outdir, safe_serialization=True)
    log = {"parameters": n_params, "config": {"n_layer": a.n_layer, "n_embd": a.n_embd, "n_head": a.n_head,
                                               "n_positions": CONTEXT, "vocab_size": cfg.vocab_size},
           "optimizer": {"name": "AdamW", "lr": a.lr, "warmup": a.warmup, "schedule": "cosine to 10%",
                         "betas": [0.9, 0.95], "weight_decay": 0.1, "batch_seqs": a.batch,
                         "steps": a.steps, "seed": a.seed, "autocast": "bf16"},
           "train_tokens_seen": a.steps * a.batch * CONTEXT, "corpus_tokens": int(train.size),
           "heldout_tokens": int(val.size), "minutes": round(elapsed / 60, 1),
           "loss_curve": curve, "val_curve": val_curve, "final_heldout_loss": round(final_val, 4)}
    with open(os.path.join(a.workdir, "model_log.json"), "w") as fh:
        json.dump(log, fh, indent=1)


if __name__ == "__main__":
    main()
