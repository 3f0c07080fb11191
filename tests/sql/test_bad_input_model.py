#!/usr/bin/env python3
"""test_bad_input_model.py: bad input on the model + dataset path, one check per row
of docs/BAD_INPUT.md that test_bad_input.py does not cover.

Each bad input gives a clear SQL error naming the file and the problem (and a
'failed' extractions row), or a documented skip; the good extraction made first reads
the same afterwards.
"""
import json
import os
import shutil
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from harness import check, check_equal  # noqa: E402

CFG = h.setup(__doc__)
DB = CFG.db


def lm(name):
    return h.fixture("lm", name)


def base(label, **more):
    o = {"sae": lm("sae"), "model": lm("model"), "tokenizer": lm("tokenizer.json"), "dataset": lm("docs.txt"),
         "store": h.tmp_path("store_" + label), "progress": "off"}
    o.update(more)
    return {k: v for k, v in o.items() if v is not None}


def write(name, data):
    path = h.tmp_path(name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    return path


def copy_dir(src, name):
    dst = h.tmp_path(name)
    shutil.copytree(src, dst)
    return dst


def failed(label, needles, **more):
    """The run fails naming the problem; its row is 'failed' with the message."""
    msg = h.expect_error(DB, h.extract_sql(**base(label, **more)), *needles, what=label)
    last = h.query(DB, "SELECT status, error FROM extractions ORDER BY id DESC LIMIT 1;")[0]
    check(last["status"] == "failed" and last["error"] and last["error"] in msg,
          "%s: the row is failed with the message" % label, repr(last))


def test_good():
    eid = h.extract(DB, **base("good"))
    check_equal(eid, 1, "good extraction first")


def test_config_files():
    sae = copy_dir(lm("sae"), "sae_badcfg")
    write("sae_badcfg/cfg.json", "{ not json")
    failed("cfg.json not JSON", (os.path.join(sae, "cfg.json"), "invalid JSON"), sae=sae)
    sae = copy_dir(lm("sae"), "sae_nodin")
    write("sae_nodin/cfg.json", json.dumps({"architecture": "standard", "d_sae": 32}))
    failed("cfg.json without d_in", (os.path.join(sae, "cfg.json"), "d_in"), sae=sae)
    model = copy_dir(lm("model"), "model_badjson")
    write("model_badjson/config.json", "[1, 2")
    failed("config.json not JSON", (os.path.join(model, "config.json"),), model=model)
    model = copy_dir(lm("model"), "model_llama")
    cfg = json.load(open(lm("model/config.json")))
    cfg["model_type"] = "llama"
    write("model_llama/config.json", json.dumps(cfg))
    failed("config.json of another architecture", (os.path.join(model, "config.json"), "llama"), model=model)
    model = copy_dir(lm("model"), "model_noweights")
    os.remove(os.path.join(model, "model.safetensors"))
    failed("model without model.safetensors", (os.path.join(model, "model.safetensors"),), model=model)
    model = copy_dir(lm("model"), "model_truncated")
    path = os.path.join(model, "model.safetensors")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    failed("truncated model.safetensors", (path, "truncated"), model=model)
    tok = write("tok_novocab.json", json.dumps({"model": {"type": "BPE"}}))
    failed("tokenizer.json without a vocabulary", (tok, "vocab"), tokenizer=tok)
    tok = write("tok_wordpiece.json", json.dumps({"model": {"type": "WordPiece", "vocab": {"a": 0, "[UNK]": 1},
                                                             "unk_token": "[UNK]"}, "added_tokens": []}))
    failed("a tokenizer that cannot encode", (tok, "unsupported"), tokenizer=tok)


def test_dataset_rows():
    # NULL, empty, missing and non-text fields are skipped; one bad JSON line is an error.
    rows = [{"body": "int x = 1;"}, {"body": None}, {"body": ""}, {"other": "no body"}, {"body": 42},
            {"body": "y" * 1_000_000}, {"body": "caf\u00e9 \u2603 ok"}]
    path = write("rows.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    eid = h.extract(DB, **base("rows", dataset=path, text_field="body"))
    r = h.extraction_row(DB, eid)
    # documents 0, 5 (a 1 MB row) and 6 count: 10 + 1_000_000 + 12 bytes, BOS per sequence and separators
    check(r["status"] == "done" and r["tokens_total"] > 1_000_000, "NULL/empty/non-text rows skipped, a 1 MB row read",
          repr((r["status"], r["tokens_total"])))
    docs = {x["document"] for x in h.query(DB, "SELECT DISTINCT document FROM top_examples WHERE extraction_id = %d;"
                                           % eid)}
    check(docs <= {0, 5, 6}, "only documents 0, 5 and 6 reach the SAE", repr(docs))
    bad = write("badline.jsonl", '{"body": "fine"}\n{"body": "broken\n')
    failed("a JSON line that is not JSON", (bad, "line 2", "invalid JSON"), dataset=bad, text_field="body")
    raw = write("latin1.txt", b"caf\xe9 au lait\nok\n")
    eid = h.extract(DB, **base("latin1", dataset=raw))
    check_equal(h.extraction_row(DB, eid)["status"], "done", "a non-UTF-8 line is read (invalid bytes as U+FFFD)")


def test_token_files():
    bad = write("ids_big.bin", struct.pack("<4H", 1, 2, 3, 999))
    failed("token id beyond the vocabulary", (bad, "999", "out of range"), dataset=bad)
    npy = write("floats.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", 118) +
                ("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }".ljust(117) + "\n").encode() +
                struct.pack("<4f", 1, 2, 3, 4))
    failed("float .npy", (npy, "integer"), dataset=npy)
    odd = write("odd.bin", b"\x01\x02\x03")
    failed("raw ids of odd size", (odd, "multiple"), dataset=odd)


def test_query_errors():
    h.expect_error(DB, h.extract_sql(**base("q1", dataset=None, query="SELEC body FROM nowhere")), "query", "syntax")
    h.expect_error(DB, h.extract_sql(**base("q2", dataset=None, query="SELECT 1 WHERE 0")), "empty")


def test_store_paths():
    blocker = write("a_file", "x")
    failed("store under a regular file", (blocker, "directory"), store=os.path.join(blocker, "store"))
    mnt = h.tmp_path("tiny_fs")
    os.makedirs(mnt, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", mnt],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
    if not mounted:
        print("skipped: full-disk check needs a tmpfs mount, which is not permitted here")
        return
    try:
        failed("store on a full disk", ("No space left on device",), store=os.path.join(mnt, "store"),
               dataset=lm("tokens_1d.npy"), top_k=64, context=8)
    finally:
        subprocess.run(["umount", mnt])


def test_good_unchanged():
    check_equal(h.scalar(DB, "SELECT check_extraction(1);"), "ok", "the good extraction is intact")
    check_equal(h.query(DB, "SELECT status FROM extractions WHERE id = 1;")[0]["status"], "done",
                "the good extraction is still done")


h.run_tests(test_good, test_config_files, test_dataset_rows, test_token_files, test_query_errors, test_store_paths,
            test_good_unchanged)
