#!/usr/bin/env bash
# train_all.sh [WORKDIR]: regenerates examples/tiny from scratch on the CPU (about 30-40
# minutes on 2 cores): corpus -> tokenizer -> GPT-2 -> SAE -> training log.
# Needs Python 3.10+ with: torch (CPU), transformers, tokenizers, safetensors, sae-lens
# (pip install torch transformers tokenizers safetensors sae-lens). PYTHON picks the
# interpreter. The corpus and the packed tokens stay in WORKDIR (default build/demo-train),
# never in the repository.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
WORK=${1:-build/demo-train}
OUT=examples/tiny
mkdir -p "$WORK" "$OUT"
export PYTHONHASHSEED=0 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

"$PY" tools/demo/gather_corpus.py "$WORK/corpus.jsonl" --mb 40
"$PY" tools/demo/train_tokenizer.py "$WORK/corpus.jsonl" "$OUT/tokenizer.json" --vocab 4096
rm -f "$WORK/train_tokens.npy" "$WORK/val_tokens.npy"
"$PY" tools/demo/train_model.py "$WORK/corpus.jsonl" "$OUT/tokenizer.json" "$WORK" "$OUT/model" \
      --steps 1600 --batch 32 --n-embd 128 --n-layer 4 --n-head 4
rm -f "$OUT/model/generation_config.json"
"$PY" tools/demo/make_demo_dataset.py "$WORK/demo_dataset.jsonl"
"$PY" tools/demo/train_sae.py "$OUT/model" "$OUT/tokenizer.json" "$WORK" "$OUT/sae" \
      --layer 2 --expansion 16 --k 24 --demo "$WORK/demo_dataset.jsonl"
"$PY" tools/demo/write_training_log.py "$WORK" "$OUT/tokenizer.json" "$OUT/training_log.json"
du -ch "$OUT"/tokenizer.json "$OUT"/model/* "$OUT"/sae/* | tail -1
