#!/usr/bin/env python3
"""train_sae.py MODEL_DIR TOKENIZER.json WORKDIR OUT_SAE_DIR [options]

Trains a top-k SAE with SAELens (TopKTrainingSAE + SAETrainer, CPU) on the residual
stream at blocks.L.hook_resid_pre of the bundled model, as saelite computes it: plain
Hugging Face GPT2 semantics (the input of block L = HF hidden_states[L]), the model's
F16 weights read as f32, no centring (metadata.model_from_pretrained_kwargs
.center_writing_weights = false), BOS tokens left out (saelite never encodes special
tokens). Activations come from WORKDIR/train_tokens.npy (made by train_model.py); the
held-out WORKDIR/val_tokens.npy and, when given, the demo dataset (--demo, packed the way
saelite packs it) measure L0, explained variance and dead features.

After training the decoder norms are folded into the encoder (rows of W_dec of unit
norm, rescale_acts_by_decoder_norm false: the same activations) and the SAE is saved in
the SAELens 6 inference format: OUT_SAE_DIR/{cfg.json,sae_weights.safetensors}.
WORKDIR/sae_log.json gets the numbers.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import GPT2LMHeadModel

from sae_lens.saes.sae import SAEMetadata
from sae_lens.config import SAETrainerConfig
from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
from sae_lens.training.sae_trainer import SAETrainer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import CONTEXT, encode_docs, pack, read_docs  # noqa: E402


@torch.no_grad()
def activations(model, layer, seqs, bos, batch=64):
    """hidden_states[layer] (= input of block `layer`) at every non-BOS position, f32 [n, d]."""
    out = []
    for i in range(0, len(seqs), batch):
        chunk = seqs[i:i + batch]
        if isinstance(chunk, np.ndarray):
            x = torch.from_numpy(chunk.astype(np.int64))
            hs = model.transformer(x, output_hidden_states=True).hidden_states[layer]
            out.append(hs[x != bos])
        else:  # ragged (the demo dataset's last sequence)
            for s in chunk:
                x = torch.tensor([s], dtype=torch.long)
                hs = model.transformer(x, output_hidden_states=True).hidden_states[layer]
                out.append(hs[x != bos])
    return torch.cat(out)


@torch.no_grad()
def evaluate(sae, x, batch=8192):
    """L0, explained variance (1 - SSE / total sum of squares about the mean), MSE, and
    per-feature firing counts, over the rows of x."""
    d_sae = sae.cfg.d_sae
    fired = torch.zeros(d_sae, dtype=torch.long)
    sse, l0 = 0.0, 0.0
    mean = x.mean(0)
    sst = float(((x - mean) ** 2).sum())
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        f = sae.encode(xb)
        r = sae.decode(f)
        sse += float(((xb - r) ** 2).sum())
        act = f > 0
        l0 += float(act.sum())
        fired += act.sum(0)
    n = len(x)
    return {"tokens": n, "l0": round(l0 / n, 4), "explained_variance": round(1 - sse / sst, 4),
            "mse": round(sse / (n * x.shape[1]), 6),
            "dead_fraction": round(float((fired == 0).float().mean()), 4),
            "dead_features": int((fired == 0).sum())}, fired


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("tokenizer")
    ap.add_argument("workdir")
    ap.add_argument("out")
    ap.add_argument("--layer", type=int, default=2)
    ap.add_argument("--expansion", type=int, default=16)
    ap.add_argument("--k", type=int, default=24)
    ap.add_argument("--pool-tokens", type=int, default=1_000_000, help="activations kept in memory")
    ap.add_argument("--samples", type=int, default=3_000_000, help="training samples (tokens) seen")
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--demo", help="the demo dataset (.jsonl) to measure on as well")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1234)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    hook = "blocks.%d.hook_resid_pre" % a.layer
    tok = Tokenizer.from_file(a.tokenizer)
    bos = tok.token_to_id("<|endoftext|>")

    model = GPT2LMHeadModel.from_pretrained(a.model_dir, torch_dtype=torch.float32)
    model.eval()
    model.transformer.h = model.transformer.h[:a.layer + 1]  # blocks after the hook are never needed
    d_in = model.config.n_embd

    t0 = time.time()
    train = np.load(os.path.join(a.workdir, "train_tokens.npy"))
    val = np.load(os.path.join(a.workdir, "val_tokens.npy"))
    rng = np.random.default_rng(a.seed)
    n_seq = min(len(train), a.pool_tokens // CONTEXT + 1)
    pick = np.sort(rng.choice(len(train), size=n_seq, replace=False))
    pool = activations(model, a.layer, train[pick], bos)
    held = activations(model, a.layer, val, bos)
    print(f"activations at {hook}: pool {tuple(pool.shape)}, held-out {tuple(held.shape)}; "
          f"{time.time() - t0:.0f}s", flush=True)

    def provider():
        g = torch.Generator().manual_seed(a.seed)
        while True:
            perm = torch.randperm(len(pool), generator=g)
            for i in range(0, len(perm) - a.batch + 1, a.batch):
                yield pool[perm[i:i + a.batch]]

    meta = SAEMetadata(model_name="saelite-tiny-gpt2", hook_name=hook, hook_head_index=None,
                       context_size=CONTEXT, prepend_bos=True, seqpos_slice=[None],
                       model_from_pretrained_kwargs={"center_writing_weights": False},
                       dataset_path="local corpus: C headers, Python stdlib, licenses (tools/demo/gather_corpus.py)",
                       exclude_special_tokens=True)
    cfg = TopKTrainingSAEConfig(d_in=d_in, d_sae=a.expansion * d_in, k=a.k, dtype="float32", device="cpu",
                                apply_b_dec_to_input=True, normalize_activations="none",
                                rescale_acts_by_decoder_norm=True, aux_loss_coefficient=1.0,
                                decoder_init_norm=0.1, metadata=meta)
    sae = TopKTrainingSAE(cfg)
    steps = a.samples // a.batch
    tcfg = SAETrainerConfig(total_training_samples=steps * a.batch, train_batch_size_samples=a.batch,
                            lr=a.lr, lr_end=a.lr / 10, lr_scheduler_name="constant", lr_warm_up_steps=steps // 20,
                            lr_decay_steps=steps // 5, device="cpu", autocast=True,
                            dead_feature_window=steps // 4, feature_sampling_window=steps // 4)
    trainer = SAETrainer(tcfg, sae, provider())

    curve = []
    orig_step = trainer.step

    def step_and_log(batch):
        out = orig_step(batch)
        n = trainer.n_training_steps
        if n % 25 == 0 or n == steps - 1:
            with torch.no_grad():
                x = out.sae_in.float()
                r = out.sae_out.float()
                ev = 1 - float(((x - r) ** 2).sum()) / float(((x - x.mean(0)) ** 2).sum())
                l0 = float((out.feature_acts > 0).float().sum(-1).mean())
            curve.append({"step": n, "samples": (n + 1) * a.batch, "mse": round(float(out.losses["mse_loss"]), 5),
                          "explained_variance": round(ev, 4), "l0": round(l0, 2)})
            if n % 100 == 0:
                print(f"step {n}/{steps} mse {curve[-1]['mse']} ev {ev:.3f} l0 {l0:.1f} "
                      f"dead {int(trainer.dead_neurons.sum())} {time.time() - t0:.0f}s", flush=True)
        return out

    trainer.step = step_and_log
    t1 = time.time()
    sae = trainer.fit()
    train_min = (time.time() - t1) / 60
    dead_window = int(trainer.dead_neurons.sum())

    sae.fold_W_dec_norm()
    sae.cfg.rescale_acts_by_decoder_norm = False
    sae.eval()
    held_stats, _ = evaluate(sae, held)
    print("held-out:", held_stats, flush=True)
    log = {"hook": hook, "architecture": "topk", "k": a.k, "d_in": d_in, "d_sae": cfg.d_sae,
           "trainer": "SAELens %s TopKTrainingSAE + SAETrainer (CPU, bf16 autocast)" % __import__("sae_lens").__version__,
           "training_samples": steps * a.batch, "activation_pool_tokens": len(pool), "batch": a.batch,
           "lr": a.lr, "seed": a.seed, "minutes": round(train_min, 1),
           "dead_in_last_training_window": dead_window,
           "curve": curve, "heldout": held_stats}
    if a.demo:
        docs = list(read_docs(a.demo))
        seqs = pack(encode_docs(tok, docs), bos, keep_partial=True)
        full = np.asarray([s for s in seqs if len(s) == CONTEXT], dtype=np.int32)
        rest = [s for s in seqs if len(s) != CONTEXT]
        x = torch.cat([activations(model, a.layer, full, bos)] +
                      ([activations(model, a.layer, rest, bos)] if rest else []))
        demo_stats, fired = evaluate(sae, x)
        demo_stats["documents"] = len(docs)
        demo_stats["sequences"] = len(seqs)
        print("demo dataset:", demo_stats, flush=True)
        log["demo_dataset"] = demo_stats

    os.makedirs(a.out, exist_ok=True)
    sae.save_inference_model(a.out)
    # keep cfg.json small and free of machine-specific values
    cfgp = os.path.join(a.out, "cfg.json")
    with open(cfgp) as fh:
        c = json.load(fh)
    c["device"] = "cpu"
    with open(cfgp, "w") as fh:
        json.dump(c, fh, indent=1)
    with open(os.path.join(a.workdir, "sae_log.json"), "w") as fh:
        json.dump(log, fh, indent=1)


if __name__ == "__main__":
    main()
