#!/usr/bin/env python3
"""make_example.py OUTDIR: the small example the demo runs on (standard library only).

Makes, from text this repository owns (its docs, SQL and C sources):
  OUTDIR/tokenizer.json     a byte-level tokenizer: 256 byte tokens + frequent words
  OUTDIR/acts.safetensors   activations [n_seq, 64, 96] F16 and tokens [n_seq, 64] I32
  OUTDIR/sae/               a SAELens-format standard SAE, 512 features

The activations are synthetic: each token has a random embedding, plus a share of the
previous token's, plus one direction per token class (digits, brackets, C keywords,
punctuation, newlines, capitalised words...). The SAE's features are planted to read
those directions, single tokens and token bigrams, so browsing shows recognisable
features; some are planted dead or dense on purpose. A trained model replaces this
example later; the file formats are the real ones.
"""
import array
import json
import math
import os
import random
import re
import struct
import sys

SEQ_LEN, D_IN, D_SAE, N_WORDS = 64, 96, 512, 700
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

KEYWORDS = {"if", "for", "while", "return", "int", "char", "const", "static", "void", "struct",
            "uint32_t", "uint64_t", "size_t", "float", "double", "else", "goto", "sizeof"}
CLASSES = [  # (name, predicate on the token's text)
    ("digit", lambda s: s.strip().isdigit()),
    ("open paren", lambda s: s.strip() == "("),
    ("close paren", lambda s: s.strip() in (")", ");", "))")),
    ("brace", lambda s: s.strip() in ("{", "}")),
    ("C keyword", lambda s: s.strip() in KEYWORDS),
    ("newline", lambda s: "\n" in s),
    ("comma/semicolon", lambda s: s.strip() in (",", ";")),
    ("capitalised word", lambda s: s.strip()[:1].isupper() and s.strip().isalpha()),
    ("markdown", lambda s: s.strip() in ("#", "##", "|", "`", "```", "**")),
    ("arrow/operator", lambda s: s.strip() in ("->", "==", "=", "!=", "<", ">", "+", "*", "&&")),
]


def bytes_to_unicode():
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def corpus():
    paths = []
    for sub in ("docs", "sql", "engine", "ext", "tests/unit"):
        d = os.path.join(ROOT, sub)
        if os.path.isdir(d):
            paths += sorted(os.path.join(d, f) for f in os.listdir(d)
                            if f.endswith((".md", ".sql", ".c", ".h")))
    readme = os.path.join(ROOT, "README.md")
    if os.path.exists(readme):
        paths.append(readme)
    return "\n".join(open(p, encoding="utf-8", errors="replace").read() for p in paths)


PRETOKEN = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z_][A-Za-z_0-9]*| ?[0-9]| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+""")


def build_tokenizer(text):
    pieces = PRETOKEN.findall(text)
    counts = {}
    for p in pieces:
        if len(p.encode()) > 1:
            counts[p] = counts.get(p, 0) + 1
    words = sorted(counts, key=lambda w: (-counts[w], w))[:N_WORDS]
    b2u = bytes_to_unicode()
    vocab = {b2u[b]: b for b in range(256)}
    for w in words:
        vocab["".join(b2u[b] for b in w.encode())] = len(vocab)
    eos = len(vocab)
    word_id = {w: 256 + i for i, w in enumerate(words)}
    ids = []
    for p in pieces:
        if p in word_id:
            ids.append(word_id[p])
        else:
            ids.extend(p.encode())
    tok = {"version": "1.0", "truncation": None, "padding": None,
           "added_tokens": [{"id": eos, "content": "<|endoftext|>", "single_word": False, "lstrip": False,
                             "rstrip": False, "normalized": False, "special": True}],
           "normalizer": None,
           "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
           "post_processor": None,
           "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
           "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                     "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "vocab": vocab,
                     "merges": []}}
    texts = [bytes([i]).decode("latin-1") for i in range(256)] + words
    return tok, ids, texts, eos


def unit(rng, d):
    v = [rng.gauss(0, 1) for _ in range(d)]
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def write_safetensors(path, tensors):
    """tensors: list of (name, dtype, shape, bytes)."""
    header, offset = {}, 0
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for _, _, _, data in tensors:
            f.write(data)


def main(outdir):
    rng = random.Random(1234)
    os.makedirs(os.path.join(outdir, "sae"), exist_ok=True)
    tok, ids, texts, eos = build_tokenizer(corpus())
    with open(os.path.join(outdir, "tokenizer.json"), "w") as f:
        json.dump(tok, f, ensure_ascii=False)
    n_vocab = eos + 1
    n_seq = len(ids) // SEQ_LEN
    ids = ids[: n_seq * SEQ_LEN]

    emb = [unit(rng, D_IN) for _ in range(n_vocab)]
    class_dir = [unit(rng, D_IN) for _ in CLASSES]
    token_classes = [[c for c, (_, pred) in enumerate(CLASSES) if t < len(texts) and pred(texts[t])]
                     for t in range(n_vocab)]

    # x = emb[t] + 0.5 emb[prev] + 1.5 * sum(class directions of t) + noise
    acts = bytearray()
    for s in range(n_seq):
        prev = None
        for p in range(SEQ_LEN):
            t = ids[s * SEQ_LEN + p]
            x = list(emb[t])
            if prev is not None:
                x = [a + 0.5 * b for a, b in zip(x, emb[prev])]
            for c in token_classes[t]:
                x = [a + 1.5 * b for a, b in zip(x, class_dir[c])]
            acts += struct.pack("<%de" % D_IN, *(a + rng.gauss(0, 0.05) for a in x))
            prev = t
    toks = array.array("i", ids)
    write_safetensors(os.path.join(outdir, "acts.safetensors"),
                      [("activations", "F16", [n_seq, SEQ_LEN, D_IN], bytes(acts)),
                       ("tokens", "I32", [n_seq, SEQ_LEN], toks.tobytes())])

    # SAE features, in order: class detectors, frequent-token detectors, bigram
    # (previous-token) detectors, random directions, planted dense and dead ones.
    freq = {}
    for t in ids:
        freq[t] = freq.get(t, 0) + 1
    common = [t for t in sorted(freq, key=lambda t: -freq[t])]
    cols, bias = [], []
    for c in range(len(CLASSES)):
        cols.append(class_dir[c]); bias.append(-0.9)
    for t in common[:300]:
        cols.append(emb[t]); bias.append(-0.7)
    for t in common[:120]:
        cols.append(emb[t]); bias.append(-0.35)      # fires when t is current or previous
    while len(cols) < D_SAE - 12:
        cols.append(unit(rng, D_IN)); bias.append(-0.45)
    for _ in range(4):                                # dense: fire almost everywhere
        cols.append(unit(rng, D_IN)); bias.append(1.5)
    while len(cols) < D_SAE:                          # dead: never reach the threshold
        cols.append(unit(rng, D_IN)); bias.append(-50.0)
    order = list(range(D_SAE))
    rng.shuffle(order)                                # feature ids carry no hint
    cols = [cols[i] for i in order]
    bias = [bias[i] for i in order]
    W_enc = array.array("f", (cols[f][i] for i in range(D_IN) for f in range(D_SAE)))
    W_dec = array.array("f", (cols[f][i] for f in range(D_SAE) for i in range(D_IN)))
    write_safetensors(os.path.join(outdir, "sae", "sae_weights.safetensors"),
                      [("W_enc", "F32", [D_IN, D_SAE], W_enc.tobytes()),
                       ("b_enc", "F32", [D_SAE], array.array("f", bias).tobytes()),
                       ("W_dec", "F32", [D_SAE, D_IN], W_dec.tobytes()),
                       ("b_dec", "F32", [D_IN], array.array("f", [0.0] * D_IN).tobytes())])
    cfg = {"architecture": "standard", "d_in": D_IN, "d_sae": D_SAE, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": True, "normalize_activations": "none", "reshape_activations": "none",
           "metadata": {"model_name": "saelite-example", "hook_name": "blocks.0.hook_resid_pre",
                        "context_size": SEQ_LEN, "prepend_bos": False}}
    with open(os.path.join(outdir, "sae", "cfg.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    print("example: %d sequences x %d tokens, vocab %d, d_in %d, d_sae %d -> %s"
          % (n_seq, SEQ_LEN, n_vocab, D_IN, D_SAE, outdir))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_example.py OUTDIR")
    main(sys.argv[1])
