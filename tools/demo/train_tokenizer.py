#!/usr/bin/env python3
"""train_tokenizer.py CORPUS.jsonl OUT/tokenizer.json [--vocab 4096]

A GPT-2-style byte-level BPE tokenizer (HF tokenizers): no normalizer, ByteLevel
pre-tokenizer (GPT-2 regex, no prefix space), ByteLevel decoder, and <|endoftext|> as a
special added token with id 0. Deterministic for a given corpus.
"""
import argparse
import json

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers


def docs(path):
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)["text"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus")
    ap.add_argument("out")
    ap.add_argument("--vocab", type=int, default=4096)
    a = ap.parse_args()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=a.vocab, min_frequency=2, show_progress=False,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(docs(a.corpus), trainer=trainer)
    tok.save(a.out)
    print(f"vocab {tok.get_vocab_size()} -> {a.out}; <|endoftext|> = {tok.token_to_id('<|endoftext|>')}")


if __name__ == "__main__":
    main()
