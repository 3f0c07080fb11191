#!/usr/bin/env python3
"""write_training_log.py WORKDIR TOKENIZER.json OUT.json: merges the model and SAE logs
(WORKDIR/model_log.json, WORKDIR/sae_log.json) into the bundled training log."""
import json
import os
import platform
import sys


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    work, tokp, out = sys.argv[1:]
    with open(os.path.join(work, "model_log.json")) as fh:
        model = json.load(fh)
    with open(os.path.join(work, "sae_log.json")) as fh:
        sae = json.load(fh)
    with open(tokp, encoding="utf-8") as fh:
        tok = json.load(fh)
    corpus = {}
    cp = os.path.join(work, "corpus_stats.json")
    if os.path.exists(cp):
        with open(cp) as fh:
            corpus = json.load(fh)
    log = {
        "about": "Training of examples/tiny (tools/demo/train_all.sh). Losses are mean token "
                 "cross-entropy in nats; 'heldout' is 1 document in 50 of the corpus, never trained on; "
                 "'demo_dataset' is tools/demo/make_demo_dataset.py's output (this repository's own text) "
                 "at training time. L0 = mean active features per token; explained variance = "
                 "1 - SSE / total sum of squares about the mean; dead = never active on that data.",
        "machine": {"cpu_threads": 2, "python": platform.python_version()},
        "corpus": corpus,
        "tokenizer": {"type": "byte-level BPE (HF tokenizers)", "vocab_size": len(tok["model"]["vocab"]) +
                      sum(1 for t in tok["added_tokens"] if t["content"] not in tok["model"]["vocab"]),
                      "special": [t["content"] for t in tok["added_tokens"]]},
        "model": model,
        "sae": sae,
        "summary": {
            "model_final_heldout_loss": model["final_heldout_loss"],
            "sae_l0": sae["heldout"]["l0"],
            "sae_explained_variance": sae["heldout"]["explained_variance"],
            "sae_dead_fraction": sae["heldout"]["dead_fraction"],
        },
    }
    if "demo_dataset" in sae:
        log["summary"]["demo_dataset"] = sae["demo_dataset"]
    with open(out, "w") as fh:
        json.dump(log, fh, indent=1)
        fh.write("\n")
    print(json.dumps(log["summary"], indent=1))


if __name__ == "__main__":
    main()
