#!/usr/bin/env python3
"""peer_pipeline.py: the benchmark's peer, the same job done the way Python users do it
today: transformers + sae-lens on torch (CPU), a delphi-style cache of every nonzero
feature activation, sae_vis-style per-feature statistics and top-k examples.

    peer_pipeline.py --model DIR --sae DIR --dataset DATA.jsonl --sequences N --out DIR
                     [--batch 32] [--top-k 20] [--threads NCPU] [--splits 5]

Steps, each timed (OUT/peer.json):
  tokenize  `tokenizers` on every document, packed like SAELens packs a text dataset (and
            like saelite does): documents back to back, BOS between two documents that
            share a sequence, every sequence of 128 starting with BOS; the first N sequences.
  load      GPT2Model.from_pretrained, SAE.load_from_disk.
  run       batches of 32 sequences: the model up to blocks.L.hook_resid_pre (a forward
            pre-hook on block L captures its input and stops the forward, as
            TransformerLens's stop_at_layer does), sae.encode, special tokens zeroed
            (sae-lens's exclude_special_tokens); per batch:
              delphi: nonzero() -> locations (sequence, position, latent) and fp16 values,
                      kept in memory until the end (as delphi's LatentCache does);
              sae_vis: per-feature n_active, sum, sum of squares, max over the dense
                      batch; top-k (activation, token row) per feature merged by topk().
  save      delphi's split files: latents cut into --splits ranges, each a safetensors
            file {locations [n, 3], activations [n] fp16, tokens [n_seq, 128]}.
Outputs for the comparison: OUT/stats.npz (n_active, sum, sum_sq, max [d_sae]; top_vals,
top_rows [k, d_sae]) and OUT/peer.json (timings, sizes, shapes).
"""
import argparse
import json
import os
import resource
import time


class StopForward(Exception):
    pass


def pack_sequences(tokenizer_path, dataset, n_seq, T, bos):
    """[n_seq, T] int64 token ids, saelite's (and SAELens's) packing of a JSON-lines dataset."""
    from tokenizers import Tokenizer
    import numpy as np

    tok = Tokenizer.from_file(tokenizer_path)
    out, cur = [], []

    def put(t):
        cur.append(t)
        if len(cur) == T:
            out.append(list(cur))
            cur.clear()

    with open(dataset, encoding="utf-8") as f:
        for line in f:
            if len(out) >= n_seq:
                break
            if not line.strip():
                continue
            text = json.loads(line).get("text")
            if not isinstance(text, str) or not text:
                continue
            ids = tok.encode(text).ids
            if not ids:
                continue
            if cur:
                put(bos)  # separates two documents that share a sequence
            for t in ids:
                if not cur:
                    put(bos)
                put(t)
                if len(out) >= n_seq:
                    break
    if len(out) < n_seq:
        raise SystemExit("peer_pipeline.py: %s has only %d full sequences of %d tokens, %d asked"
                         % (dataset, len(out), T, n_seq))
    return np.array(out[:n_seq], dtype=np.int64)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--sae", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--tokenizer")
    ap.add_argument("--sequences", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--top-k", type=int, default=20)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--splits", type=int, default=5)
    a = ap.parse_args()

    t_start = time.perf_counter()
    import numpy as np
    import torch
    from safetensors.numpy import save_file
    from sae_lens import SAE
    from transformers import GPT2Model

    torch.set_num_threads(a.threads)
    t_import = time.perf_counter()
    os.makedirs(a.out, exist_ok=True)
    times = {"import": t_import - t_start}

    # ---- load ----
    t0 = time.perf_counter()
    model = GPT2Model.from_pretrained(a.model, dtype=torch.float32).eval()
    sae = SAE.load_from_disk(a.sae, device="cpu")
    sae.eval()
    hook = sae.cfg.metadata.hook_name  # blocks.L.hook_resid_pre
    layer = int(hook.split(".")[1])
    T = sae.cfg.metadata.context_size or 128
    bos = model.config.bos_token_id
    d_sae = sae.cfg.d_sae
    captured = {}

    def grab_resid_pre(module, args, kwargs):
        captured["x"] = args[0] if args else kwargs["hidden_states"]
        raise StopForward

    model.h[layer].register_forward_pre_hook(grab_resid_pre, with_kwargs=True)
    times["load"] = time.perf_counter() - t0

    # ---- tokenize ----
    t0 = time.perf_counter()
    tokens = pack_sequences(a.tokenizer or os.path.join(a.model, "tokenizer.json"), a.dataset, a.sequences, T, bos)
    times["tokenize"] = time.perf_counter() - t0

    # ---- run: model to the hook, encode, cache nonzeros, statistics, top-k ----
    t0 = time.perf_counter()
    k = a.top_k
    n_active = torch.zeros(d_sae, dtype=torch.int64)
    act_sum = torch.zeros(d_sae, dtype=torch.float64)
    act_sq = torch.zeros(d_sae, dtype=torch.float64)
    act_max = torch.zeros(d_sae, dtype=torch.float32)
    top_vals = torch.full((k, d_sae), -1.0)  # [k, d_sae]
    top_rows = torch.full((k, d_sae), -1, dtype=torch.int64)
    locations, values = [], []
    t_model = t_encode = t_cache = t_stats = 0.0
    tok_t = torch.from_numpy(tokens)
    with torch.inference_mode():
        for b0 in range(0, len(tokens), a.batch):
            batch = tok_t[b0:b0 + a.batch]  # [B, T]
            B = batch.shape[0]
            ta = time.perf_counter()
            try:
                model(input_ids=batch)
            except StopForward:
                pass
            x = captured.pop("x")  # [B, T, d_in]
            tb = time.perf_counter()
            acts = sae.encode(x)  # [B, T, d_sae]
            acts[batch == bos] = 0.0  # special tokens are not encoded
            tc = time.perf_counter()
            nz = acts.nonzero()  # [n, 3] (batch, pos, latent)
            vals = acts[nz[:, 0], nz[:, 1], nz[:, 2]].half()
            nz[:, 0] += b0
            locations.append(nz.to(torch.int32))
            values.append(vals)
            td = time.perf_counter()
            flat = acts.reshape(B * T, d_sae)  # [B*T, d_sae]
            active = flat > 0
            n_active += active.sum(0)
            act_sum += flat.sum(0).double()  # f32 within a batch, f64 across batches
            act_sq += (flat * flat).sum(0).double()
            act_max = torch.maximum(act_max, flat.max(0).values)
            kk = min(k, B * T)
            bv, bi = flat.topk(kk, dim=0)  # [kk, d_sae]
            rows = torch.arange(b0 * T, (b0 + B) * T)[bi]
            cat_v, cat_r = torch.cat([top_vals, bv]), torch.cat([top_rows, rows])
            top_vals, sel = cat_v.topk(k, dim=0)
            top_rows = cat_r.gather(0, sel)
            te = time.perf_counter()
            t_model += tb - ta
            t_encode += tc - tb
            t_cache += td - tc
            t_stats += te - td
    times["run"] = time.perf_counter() - t0
    times.update({"run_model": t_model, "run_encode": t_encode, "run_cache": t_cache, "run_stats": t_stats})

    # ---- save: delphi's split files ----
    t0 = time.perf_counter()
    loc = torch.cat(locations).numpy()  # [N, 3] (sequence, position, latent)
    val = torch.cat(values).numpy()  # [N] fp16
    bounds = np.linspace(0, d_sae, a.splits + 1).astype(np.int64)
    cache_bytes = 0
    files = []
    for s in range(a.splits):
        lo, hi = bounds[s], bounds[s + 1]
        m = (loc[:, 2] >= lo) & (loc[:, 2] < hi)
        l = loc[m].copy()
        l[:, 2] -= lo
        ldt = np.uint16 if l.size == 0 or l.max() < 65536 else np.uint32
        path = os.path.join(a.out, "%d_%d.safetensors" % (lo, hi - 1))
        save_file({"locations": l.astype(ldt), "activations": val[m], "tokens": tokens.astype(np.int32)}, path)
        cache_bytes += os.path.getsize(path)
        files.append(path)
    times["save"] = time.perf_counter() - t0
    times["total"] = time.perf_counter() - t_start

    sel_rows = top_rows.numpy()
    np.savez(os.path.join(a.out, "stats.npz"), n_active=n_active.numpy(), sum=act_sum.numpy(),
             sum_sq=act_sq.numpy(), max=act_max.numpy(), top_vals=top_vals.numpy(), top_rows=sel_rows,
             tokens=tokens)
    n_special = int((tokens == bos).sum())
    report = {
        "times": times, "sequences": int(len(tokens)), "tokens": int(tokens.size),
        "encoded_tokens": int(tokens.size - n_special), "nnz": int(len(val)), "d_sae": d_sae,
        "cache_bytes": cache_bytes, "cache_files": len(files), "threads": a.threads, "batch": a.batch,
        "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__,
                     "sae_lens": __import__("sae_lens").__version__},
    }
    with open(os.path.join(a.out, "peer.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps({"total_s": round(times["total"], 2), "tokens": report["tokens"], "nnz": report["nnz"],
                      "cache_bytes": cache_bytes}))


if __name__ == "__main__":
    main()
