"""Shared helpers for the demo training scripts: packing text the way saelite packs it."""
import json

import numpy as np

CONTEXT = 128


def read_docs(path, field="text"):
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if line:
                t = json.loads(line).get(field)
                if isinstance(t, str) and t:
                    yield t


def encode_docs(tokenizer, docs, batch=256):
    out, buf = [], []
    for d in docs:
        buf.append(d)
        if len(buf) == batch:
            out += [e.ids for e in tokenizer.encode_batch(buf)]
            buf = []
    if buf:
        out += [e.ids for e in tokenizer.encode_batch(buf)]
    return out


def pack(doc_ids, bos, context=CONTEXT, keep_partial=False):
    """saelite's packing: documents back to back, a BOS between two documents that share a
    sequence, every sequence of `context` tokens starts with BOS. The last partial sequence
    is dropped (int32 array [n_seq, context]) unless keep_partial (then a list of lists,
    the last one shorter)."""
    seqs, cur = [], [bos]
    for ids in doc_ids:
        if len(cur) > 1:
            cur.append(bos)
            if len(cur) == context:
                seqs.append(cur)
                cur = [bos]
        i = 0
        while i < len(ids):
            take = min(context - len(cur), len(ids) - i)
            cur += ids[i:i + take]
            i += take
            if len(cur) == context:
                seqs.append(cur)
                cur = [bos]
    if keep_partial:
        return seqs + [cur] if len(cur) > 1 else seqs
    return np.asarray(seqs, dtype=np.int32).reshape(-1, context)
