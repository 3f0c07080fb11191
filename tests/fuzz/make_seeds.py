#!/usr/bin/env python3
"""make_seeds.py: writes the seed corpora of the libFuzzer harnesses.

Usage: tests/fuzz/make_seeds.py [OUTDIR]   (default: tests/fuzz/corpus next to this file)

One directory per harness, OUTDIR/<harness>/, of small valid inputs (so the fuzzer
starts past the format checks) and a few invalid ones (each a different refusal).
The input layouts are described at the top of each tests/fuzz/fuzz_*.c; several
start with a selector or mode byte. The seeds are committed; rerun this script
after changing it or a harness's input layout. Standard library only; the output is
deterministic.
"""
import json
import math
import os
import random
import shutil
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# ---------------------------------------------------------------------------------------
# XXH64 (seed 0), as libxxhash computes it: the checksum of segments, results, tokens.
# ---------------------------------------------------------------------------------------
M64 = (1 << 64) - 1
P1, P2, P3, P4, P5 = (0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9,
                      0x85EBCA77C2B2AE63, 0x27D4EB2F165667C5)


def _rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & M64


def _round(acc, lane):
    acc = (acc + lane * P2) & M64
    return (_rotl(acc, 31) * P1) & M64


def _merge(acc, val):
    acc ^= _round(0, val)
    return (acc * P1 + P4) & M64


def xxh64(data, seed=0):
    n, i = len(data), 0
    if n >= 32:
        v = [(seed + P1 + P2) & M64, (seed + P2) & M64, seed, (seed - P1) & M64]
        while i + 32 <= n:
            for k in range(4):
                v[k] = _round(v[k], struct.unpack_from("<Q", data, i + 8 * k)[0])
            i += 32
        h = (_rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)) & M64
        for k in range(4):
            h = _merge(h, v[k])
    else:
        h = (seed + P5) & M64
    h = (h + n) & M64
    while i + 8 <= n:
        h ^= _round(0, struct.unpack_from("<Q", data, i)[0])
        h = (_rotl(h, 27) * P1 + P4) & M64
        i += 8
    if i + 4 <= n:
        h ^= (struct.unpack_from("<I", data, i)[0] * P1) & M64
        h = (_rotl(h, 23) * P2 + P3) & M64
        i += 4
    while i < n:
        h ^= (data[i] * P5) & M64
        h = (_rotl(h, 11) * P1) & M64
        i += 1
    h ^= h >> 33
    h = (h * P2) & M64
    h ^= h >> 29
    h = (h * P3) & M64
    h ^= h >> 32
    return h


# ---------------------------------------------------------------------------------------
# LZ4 block format (what LZ4_decompress_safe reads): a greedy compressor.
# ---------------------------------------------------------------------------------------
def _lz4_len(n):
    out = bytearray()
    while n >= 255:
        out.append(255)
        n -= 255
    out.append(n)
    return out


def lz4_compress(src):
    n, out, anchor, i, table = len(src), bytearray(), 0, 0, {}
    # the format's end rules: the last 5 bytes are literals, no match starts in the last 12
    while i + 12 <= n:
        key = src[i:i + 4]
        cand = table.get(key)
        table[key] = i
        if cand is None or i - cand > 65535:
            i += 1
            continue
        mlen = 4
        while i + mlen < n - 5 and src[cand + mlen] == src[i + mlen]:
            mlen += 1
        lit = src[anchor:i]
        tok = (min(len(lit), 15) << 4) | min(mlen - 4, 15)
        out.append(tok)
        if len(lit) >= 15:
            out += _lz4_len(len(lit) - 15)
        out += lit
        out += struct.pack("<H", i - cand)
        if mlen - 4 >= 15:
            out += _lz4_len(mlen - 4 - 15)
        i += mlen
        anchor = i
    lit = src[anchor:]
    out.append(min(len(lit), 15) << 4)
    if len(lit) >= 15:
        out += _lz4_len(len(lit) - 15)
    out += lit
    return bytes(out)


# ---------------------------------------------------------------------------------------
# safetensors
# ---------------------------------------------------------------------------------------
DT_SIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
           "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1}


def pack_values(dtype, values):
    if dtype == "F32":
        return struct.pack("<%df" % len(values), *values)
    if dtype == "F64":
        return struct.pack("<%dd" % len(values), *values)
    if dtype == "F16":
        return struct.pack("<%de" % len(values), *values)
    if dtype == "BF16":
        return b"".join(struct.pack("<H", struct.unpack("<I", struct.pack("<f", v))[0] >> 16)
                        for v in values)
    code = {"I64": "q", "I32": "i", "I16": "h", "I8": "b", "U64": "Q", "U32": "I", "U16": "H",
            "U8": "B", "BOOL": "B"}[dtype]
    return struct.pack("<%d%s" % (len(values), code), *[int(abs(v) * 3) % 2 for v in values])


def safetensors(tensors, metadata=None, rng=None):
    """tensors: [(name, dtype, shape)], values drawn from rng."""
    rng = rng or random.Random(1)
    header, data = {}, bytearray()
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape in tensors:
        numel = 1
        for d in shape:
            numel *= d
        blob = pack_values(dtype, [round(rng.uniform(-1, 1), 3) for _ in range(numel)])
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [len(data), len(data) + len(blob)]}
        data += blob
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + bytes(data)


def raw_safetensors(header_bytes, data=b""):
    return struct.pack("<Q", len(header_bytes)) + header_bytes + data


def seeds_safetensors():
    s = {}
    s["f32_metadata"] = safetensors([("a", "F32", [2, 3]), ("b", "F32", [3])],
                                    {"format": "pt", "note": "x"})
    s["all_dtypes"] = safetensors([(dt.lower(), dt, [2]) for dt in DT_SIZE])
    s["scalar_and_empty"] = safetensors([("s", "F32", []), ("z", "F16", [0, 4]), ("y", "BF16", [3, 0]),
                                         ("w", "F16", [1, 1, 1, 1, 1, 1, 1, 2])])
    s["sae_f16"] = safetensors([("W_enc", "F16", [3, 4]), ("b_enc", "F16", [4]),
                                ("W_dec", "F16", [4, 3]), ("b_dec", "F16", [3])])
    s["empty_header"] = raw_safetensors(b"{}      ")
    s["unordered_offsets"] = raw_safetensors(
        b'{"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},'
        b'"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', bytes(8))
    s["bad_overlap"] = raw_safetensors(
        b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
        b'"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', bytes(8))
    s["bad_offsets"] = raw_safetensors(b'{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}',
                                       bytes(8))
    s["bad_shape"] = raw_safetensors(b'{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}',
                                     bytes(4))
    s["bad_dtype"] = raw_safetensors(b'{"a":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}}',
                                     bytes(1))
    s["bad_dims"] = raw_safetensors(
        b'{"a":{"dtype":"U8","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,1]}}', bytes(1))
    s["bad_metadata"] = raw_safetensors(b'{"__metadata__":[1]}')
    s["bad_json"] = raw_safetensors(b'{"a":{"dtype":"F32",')
    s["bad_header_len"] = struct.pack("<Q", 1 << 40) + b"{}"
    s["bad_text"] = b"hello, not a safetensors file\n"
    return s


# ---------------------------------------------------------------------------------------
# SAE cfg.json (fuzz_sae: selector byte, then cfg.json or a bare safetensors)
# ---------------------------------------------------------------------------------------
def js(obj):
    return json.dumps(obj, separators=(", ", ": ")).encode()


def v6(arch, d_in=4, d_sae=8, **kw):
    cfg = {"architecture": arch, "d_in": d_in, "d_sae": d_sae, "dtype": "float32",
           "device": "cpu", "apply_b_dec_to_input": True, "normalize_activations": "none",
           "metadata": {"model_name": "tiny", "hook_name": "blocks.0.hook_resid_pre",
                        "context_size": 16, "prepend_bos": True,
                        "model_from_pretrained_kwargs": {"center_writing_weights": False}}}
    cfg.update(kw)
    return cfg


def seeds_sae():
    s = {}
    s["standard"] = b"0" + js(v6("standard"))
    s["topk_rescale"] = b"0" + js(v6("topk", k=3, rescale_acts_by_decoder_norm=True,
                                      normalize_activations="constant_norm_rescale"))
    s["jumprelu_layer_norm"] = b"0" + js(v6("jumprelu", normalize_activations="layer_norm",
                                            apply_b_dec_to_input=False))
    s["gated"] = b"0" + js(v6("gated"))
    s["jumprelu_log_threshold_f16"] = b"1" + js(v6("jumprelu"))
    s["legacy_topk"] = b"1" + js({"d_in": 4, "d_sae": 8, "model_name": "tiny",
                                  "hook_point": "blocks.0.hook_resid_pre",
                                  "activation_fn_str": "topk", "activation_fn_kwargs": {"k": 2},
                                  "apply_b_dec_to_input": True, "normalize_activations": False,
                                  "context_size": 16, "prepend_bos": False})
    s["legacy_relu"] = b"1" + js({"architecture": "standard", "d_in": 4, "d_sae": 8,
                                  "activation_fn_str": "relu", "hook_name": "blocks.1.hook_mlp_out",
                                  "normalize_activations": None})
    s["gated_missing_tensors"] = b"2" + js(v6("gated"))
    s["small_expected_average"] = b"3" + js(v6("standard", 2, 3,
                                               normalize_activations="expected_average_only_in"))
    s["via_weights_file"] = b"4" + js(v6("topk", k=8))
    s["bad_shape"] = b"0" + js(v6("standard", 8, 4))
    s["bad_arch"] = b"0" + js(v6("sparse"))
    s["bad_missing_d_sae"] = b"0" + js({"d_in": 4})
    s["bad_k"] = b"0" + js(v6("topk", k=0))
    s["bad_json"] = b'0{"d_in": 4, '
    s["bad_not_object"] = b"0[1, 2]"
    rng = random.Random(7)
    s["bare_standard"] = b"\x80" + safetensors(
        [("W_enc", "F32", [3, 4]), ("b_enc", "F32", [4]), ("W_dec", "F32", [4, 3]),
         ("b_dec", "F32", [3])], rng=rng)
    s["bare_jumprelu_named"] = b"\x81" + safetensors(
        [("W_enc", "BF16", [3, 4]), ("b_enc", "BF16", [4]), ("W_dec", "BF16", [4, 3]),
         ("b_dec", "BF16", [3]), ("threshold", "BF16", [4])], rng=rng)
    s["bare_gated"] = b"\x82" + safetensors(
        [("W_enc", "F16", [3, 4]), ("b_gate", "F16", [4]), ("b_mag", "F16", [4]),
         ("r_mag", "F16", [4]), ("W_dec", "F16", [4, 3]), ("b_dec", "F16", [3])], rng=rng)
    s["bare_log_threshold"] = b"\x80" + safetensors(
        [("W_enc", "F32", [2, 2]), ("b_enc", "F32", [2]), ("W_dec", "F32", [2, 2]),
         ("b_dec", "F32", [2]), ("log_threshold", "F32", [2])], rng=rng)
    return s


# ---------------------------------------------------------------------------------------
# GPT-2 config.json (fuzz_model: selector byte, then config.json, a bare model or a hook)
# ---------------------------------------------------------------------------------------
def gpt2(vocab, pos, embd, layers, heads, **kw):
    cfg = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": vocab,
           "n_positions": pos, "n_embd": embd, "n_layer": layers, "n_head": heads,
           "n_inner": None, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-05,
           "bos_token_id": vocab - 1, "eos_token_id": vocab - 1, "scale_attn_weights": True,
           "scale_attn_by_inverse_layer_idx": False}
    cfg.update(kw)
    return cfg


def tiny_model(vocab, pos, c, layers, f, dtype, prefix=""):
    t = [(prefix + "wte.weight", dtype, [vocab, c]), (prefix + "wpe.weight", dtype, [pos, c])]
    for l in range(layers):
        p = "%sh.%d." % (prefix, l)
        t += [(p + "ln_1.weight", dtype, [c]), (p + "ln_1.bias", dtype, [c]),
              (p + "attn.c_attn.weight", dtype, [c, 3 * c]), (p + "attn.c_attn.bias", dtype, [3 * c]),
              (p + "attn.c_proj.weight", dtype, [c, c]), (p + "attn.c_proj.bias", dtype, [c]),
              (p + "ln_2.weight", dtype, [c]), (p + "ln_2.bias", dtype, [c]),
              (p + "mlp.c_fc.weight", dtype, [c, f]), (p + "mlp.c_fc.bias", dtype, [f]),
              (p + "mlp.c_proj.weight", dtype, [f, c]), (p + "mlp.c_proj.bias", dtype, [c])]
    return safetensors(t, {"format": "pt"}, random.Random(3))


def seeds_model():
    s = {}
    s["prefixed_2_layers"] = b"0" + js(gpt2(8, 4, 4, 2, 2))
    s["f16_gelu_erf"] = b"1" + js(gpt2(8, 4, 4, 1, 1, n_inner=8, activation_function="gelu",
                                       layer_norm_epsilon=1e-6, scale_attn_by_inverse_layer_idx=True,
                                       scale_attn_weights=False))
    s["bf16_n_ctx"] = b"2" + js({"model_type": "gpt2", "vocab_size": 5, "n_ctx": 3, "n_embd": 6,
                                 "n_layer": 1, "n_head": 3, "n_inner": 24,
                                 "activation_function": "gelu_pytorch_tanh", "eos_token_id": [2, 3],
                                 "bos_token_id": None})
    s["missing_tensor"] = b"3" + js(gpt2(8, 4, 4, 2, 4, activation_function="gelu_fast"))
    s["bad_model_type"] = b"0" + js({"model_type": "llama", "vocab_size": 8})
    s["bad_heads"] = b"0" + js(gpt2(8, 4, 4, 2, 3))
    s["bad_eps"] = b"0" + js(gpt2(8, 4, 4, 2, 2, layer_norm_epsilon=0))
    s["bad_token"] = b"0" + js(gpt2(8, 4, 4, 2, 2, bos_token_id=8))
    s["bad_shape"] = b"1" + js(gpt2(8, 4, 4, 2, 2))
    s["bad_json"] = b"0{\"model_type\": \"gpt2\""
    s["bare_f16"] = b"\x80" + tiny_model(8, 4, 4, 1, 16, "F16")
    s["bare_f32_prefixed"] = b"\x80" + tiny_model(8, 4, 4, 1, 16, "F32", "transformer.")
    s["hook_resid_pre"] = b"#blocks.0.hook_resid_pre"
    s["hook_mlp_out"] = b"#blocks.11.hook_mlp_out"
    s["hook_resid_post"] = b"#blocks.7.hook_resid_post"
    s["hook_bad_zero"] = b"#blocks.01.hook_attn_out"
    s["hook_bad_name"] = b"#blocks.3.hook_z"
    return s


# ---------------------------------------------------------------------------------------
# tokenizer.json (fuzz_tokenizer_json)
# ---------------------------------------------------------------------------------------
def byte_chars():
    out, nxt = [], 256
    for b in range(256):
        if 33 <= b <= 126 or 0xA1 <= b <= 0xAC or 0xAE <= b <= 0xFF:
            out.append(chr(b))
        else:
            out.append(chr(nxt))
            nxt += 1
    return out


GPT2_RE = ("'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+")


def bpe_tokenizer(pre=None, merges_as_arrays=False, drop=(), added=None, **model_kw):
    vocab = {}
    for ch in byte_chars():
        if not any(d in ch for d in drop):
            vocab[ch] = len(vocab)
    merges = []
    for a, b in [("\u0120", "t"), ("h", "e"), ("\u0120t", "he"), ("i", "n"), ("o", "r"),
                 ("\u0120", "a"), ("e", "r"), ("l", "d"), ("\u0120", "w"), ("or", "ld")]:
        if a + b not in vocab:
            vocab[a + b] = len(vocab)
        merges.append([a, b] if merges_as_arrays else a + " " + b)
    vocab["<|endoftext|>"] = len(vocab)
    if added is None:
        added = [{"id": vocab["<|endoftext|>"], "content": "<|endoftext|>", "single_word": False,
                  "lstrip": False, "rstrip": False, "normalized": False, "special": True}]
    model = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
             "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False,
             "ignore_merges": False, "vocab": vocab, "merges": merges}
    model.update(model_kw)
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
            "normalizer": None,
            "pre_tokenizer": pre or {"type": "ByteLevel", "add_prefix_space": False,
                                     "trim_offsets": True, "use_regex": True},
            "post_processor": None, "decoder": {"type": "ByteLevel"}, "model": model}


def split(pattern, behavior="Isolated", literal=False, prefix=False):
    return {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"String" if literal else "Regex": pattern},
         "behavior": behavior, "invert": False},
        {"type": "ByteLevel", "add_prefix_space": prefix, "trim_offsets": True,
         "use_regex": False}]}


def seeds_tokenizer_json():
    s = {}
    s["bytelevel"] = bpe_tokenizer()
    s["prefix_space_added_options"] = bpe_tokenizer(
        pre={"type": "ByteLevel", "add_prefix_space": True, "use_regex": True},
        added=[{"id": 0, "content": "<|endoftext|>", "special": True, "normalized": False},
               {"id": 300, "content": "<mask>", "lstrip": True, "special": True, "normalized": False},
               {"id": 301, "content": "TODO", "single_word": True, "normalized": True},
               {"id": 302, "content": "FIX", "rstrip": True, "special": False}])
    s["split_o200k_style"] = bpe_tokenizer(pre=split(
        "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+"
        "(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+"
        "|\\s+(?!\\S)|\\s+"))
    s["split_onig_escapes"] = bpe_tokenizer(pre=split("\\b\\w+\\b|\\W|\\h+|\\H|\\s|\\S|\\Q.*\\E|[\\w\\s]"),
                                            merges_as_arrays=True)
    s["split_removed_string"] = bpe_tokenizer(pre=split(" ", "Removed", literal=True, prefix=True))
    s["two_splits_gpt2"] = bpe_tokenizer(pre={"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "\\p{N}{1,3}"}, "behavior": "Isolated"},
        {"type": "Split", "pattern": {"Regex": "\\n"}, "behavior": "Removed"},
        {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}]})
    s["unk_fuse_ignore_merges"] = bpe_tokenizer(drop=("q", "z", "\u00c3"), unk_token="<|endoftext|>",
                                                fuse_unk=True, ignore_merges=True)
    s["unsupported_byte_fallback"] = bpe_tokenizer(drop=("q",), byte_fallback=True)
    s["unsupported_posix_class"] = bpe_tokenizer(pre=split("[[:alpha:]]+"))
    s["unsupported_W_in_class"] = bpe_tokenizer(pre=split("[\\W\\d]"))
    s["unsupported_bad_regex"] = bpe_tokenizer(pre=split("(unclosed"))
    s["unsupported_normalizer"] = dict(bpe_tokenizer(), normalizer={"type": "NFC"})
    s["unsupported_dropout"] = bpe_tokenizer(dropout=0.1)
    s["unsupported_merge"] = bpe_tokenizer(merges=["a b c", ["x", "nope"]])
    s["wordpiece_metaspace"] = {
        "version": "1.0", "added_tokens": [{"id": 0, "content": "[UNK]", "special": True}],
        "normalizer": {"type": "BertNormalizer"}, "pre_tokenizer": {"type": "Metaspace"},
        "decoder": {"type": "Metaspace", "replacement": "\u2581"},
        "model": {"type": "WordPiece", "unk_token": "[UNK]",
                  "vocab": {"[UNK]": 0, "\u2581the": 1, "##s": 2, "a\u2581b": 3, "caf\u00e9": 4}}}
    s["unigram_no_decoder"] = {"model": {"type": "Unigram", "vocab": {"a": 5, "b": 2}}}
    s["bad_vocab_id"] = {"model": {"vocab": {"a": -1}}}
    s["bad_big_id"] = {"model": {"vocab": {"a": 1 << 24}}}
    s["bad_added"] = {"model": {"vocab": {"a": 0}}, "added_tokens": [{"id": "x", "content": "y"}]}
    s["bad_added_not_array"] = {"model": {"vocab": {"a": 0}}, "added_tokens": {}}
    s["bad_no_vocab"] = {"model": {"type": "BPE"}}
    out = {k: json.dumps(v, ensure_ascii=False, separators=(",", ":")).encode()
           for k, v in s.items()}
    out["bad_json"] = b'{"model": {"vocab": {"a": 0,'
    return out


# ---------------------------------------------------------------------------------------
# texts for fuzz_tokenizer_encode: selector byte (tokenizer index), then the text
# ---------------------------------------------------------------------------------------
def seeds_tokenizer_encode():
    path = os.path.join(REPO, "tests", "data", "tokenizer", "variants.json")
    with open(path, encoding="utf-8") as f:
        variants = json.load(f)
    n_tok = 4 + len(variants["variants"]) + 3  # see LLVMFuzzerInitialize
    cases = [c.encode("utf-8") for c in variants["cases"]]
    extra = [b"<mask> FIX  ab\xc3\xa9t\xc3\xa9 x <|endoftext|>x ab  <mask>\t FIX",
             b"\xff\xfe\xc3(\xe2\x82 \xf0\x9f\x98 \xed\xa0\x80 ok\xc0\xaf",
             b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n\n\n    \t\t  x",
             b"", b" ", b"the the the world world"]
    s = {}
    texts = cases[:24] + extra
    for t in range(n_tok):
        for j in range(3):
            text = texts[(3 * t + j) % len(texts)]
            s["tok%02d_%d" % (t, j)] = bytes([t]) + text
    invalid = os.path.join(REPO, "tests", "data", "tokenizer", "corpus_invalid.bin")
    with open(invalid, "rb") as f:
        s["invalid_utf8"] = bytes([0]) + f.read()
    return s


# ---------------------------------------------------------------------------------------
# segments (docs/STORE_FORMAT.md); fuzz_segment: mode byte (1 = fix checksums), then the file
# ---------------------------------------------------------------------------------------
def varint(v):
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def segment(rows, tokens, n_cols, seq_len=4, first_row=0, block_rows=4, f32_blocks=(),
            compress=True):
    """rows: per row a list of (col, value) with ascending cols."""
    n_rows = len(rows)
    n_blocks = (n_rows + block_rows - 1) // block_rows
    out, index = bytearray(b"SAELSEG1" + struct.pack("<II", 1, 0)), bytearray()
    nnz_total = 0
    for b in range(n_blocks):
        rs = rows[b * block_rows:(b + 1) * block_rows]
        raw = bytearray()
        for r in rs:
            raw += varint(len(r))
        vals = []
        for r in rs:
            prev = None
            for c, v in r:
                raw += varint(c if prev is None else c - prev - 1)
                prev = c
                vals.append(v)
        f16 = b not in f32_blocks
        if f16:
            halves = [struct.unpack("<H", struct.pack("<e", v))[0] for v in vals]
            raw += bytes(h & 0xFF for h in halves) + bytes(h >> 8 for h in halves)
        else:
            raw += b"".join(struct.pack("<f", v) for v in vals)
        flags = 1 if f16 else 0
        stored = bytes(raw)
        comp = lz4_compress(stored) if compress else stored
        if compress and len(comp) < len(stored):
            stored, flags = comp, flags | 2
        index += struct.pack("<QIIIIQII", len(out), len(stored), len(raw), b * block_rows,
                             len(rs), len(vals), flags, 0)
        index += struct.pack("<Q", xxh64(stored))
        out += stored
        nnz_total += len(vals)
    planes = bytearray(4 * n_rows)
    for i, t in enumerate(tokens):
        for j in range(4):
            planes[j * n_rows + i] = (t >> (8 * j)) & 0xFF
    tok_stored, tok_flags = bytes(planes), 0
    if n_rows and compress:
        comp = lz4_compress(tok_stored)
        if len(comp) < len(tok_stored):
            tok_stored, tok_flags = comp, 2
    tok_off = len(out)
    out += tok_stored
    index_off = len(out)
    out += index
    footer = b"SAELSEG1" + struct.pack("<IIQIIIIQQQQII", 1, n_rows, first_row, n_cols, seq_len,
                                       block_rows, n_blocks, nnz_total, index_off, tok_off,
                                       len(tok_stored), tok_flags, 0)
    footer += struct.pack("<QQ", xxh64(tok_stored), xxh64(bytes(index)))
    footer += struct.pack("<Q", xxh64(footer))
    return bytes(out + footer)


def seeds_segment():
    rng = random.Random(11)
    s = {}

    def rand_rows(n, n_cols, density):
        rows = []
        for _ in range(n):
            cols = sorted(rng.sample(range(n_cols), rng.randint(0, min(n_cols, density))))
            rows.append([(c, round(rng.expovariate(0.5), 2)) for c in cols])
        return rows

    small = rand_rows(10, 50, 6)
    s["small_mixed"] = b"\x01" + segment(small, [rng.randrange(300) for _ in small], 50,
                                         seq_len=5, first_row=15, f32_blocks=(1,))
    s["small_unfixed"] = b"\x00" + segment(small, list(range(10)), 50, seq_len=5)
    repeat = [[(1, 1.0), (2, 1.0), (3, 1.0), (40, 2.0)]] * 12
    s["lz4_blocks"] = b"\x01" + segment(repeat, [7] * 12, 64, seq_len=3, block_rows=6)
    wide = rand_rows(24, 3000, 5)
    s["wide_varints"] = b"\x01" + segment(wide, [rng.randrange(1 << 20) for _ in wide], 3000,
                                          seq_len=8, first_row=8, block_rows=8,
                                          f32_blocks=(2,), compress=False)
    s["one_row_huge_value"] = b"\x01" + segment([[(0, 1e30), (1, -3.0)]], [-5], 2, seq_len=1,
                                                block_rows=256, f32_blocks=(0,))
    s["empty"] = b"\x01" + segment([], [], 10, seq_len=7, first_row=14, block_rows=256)
    good = segment(small, list(range(10)), 50, seq_len=5)
    s["bad_truncated"] = b"\x01" + good[:-20]
    s["bad_magic"] = b"\x01" + b"SAELSEG2" + good[8:]
    s["bad_block_byte"] = b"\x00" + good[:20] + bytes([good[20] ^ 0xFF]) + good[21:]
    return s


# ---------------------------------------------------------------------------------------
# results.slr and tokens.slt; fuzz_store_files: mode byte (1 = token file, 2 = fix checksum)
# ---------------------------------------------------------------------------------------
def results_file(d_sae=3, top_k=2):
    features, examples, windows = bytearray(), bytearray(), bytearray()
    n_win = 0
    for f in range(d_sae):
        n_ex = min(top_k, f)
        features += struct.pack("<QddffII", 5 * f, 0.5, 0.25, 0.1, 2.0, n_ex, 0)
        for j in range(top_k):
            if j < n_ex:
                wl = 2 + j
                examples += struct.pack("<fIQQIIQII", 2.0 - j, 3, f, n_win, wl, 1, j, 0, 9)
                for k in range(wl):
                    windows += struct.pack("<if", 10 * f + k, 0.5 * k)
                n_win += wl
            else:
                examples += bytes(48)
    body = bytes(features + examples + windows)
    header = b"SAELRES1" + struct.pack("<IIIIIIQQQ", 2, d_sae, top_k, 4, 8, 0, 100, 12, n_win)
    return header + struct.pack("<Q", xxh64(body)) + body


def tokfile(n_seq=2, seq_len=3):
    recs = bytearray()
    for i in range(n_seq * seq_len):
        last = i == n_seq * seq_len - 1
        recs += struct.pack("<iIIB3xQ", -1 if last else i, i, i + 1, 1 if i == 0 else 0, i // 4)
    body = bytes(recs)
    header = b"SAELTOK1" + struct.pack("<IIQQQQ", 1, seq_len, n_seq, max(n_seq * seq_len - 1, 0), 1, 2)
    return header + struct.pack("<QQ", xxh64(body), 0) + body


def seeds_store_files():
    s = {}
    s["results"] = b"\x02" + results_file()
    s["results_unfixed"] = b"\x00" + results_file(4, 3)
    s["results_empty"] = b"\x02" + results_file(0, 0)
    s["tokens"] = b"\x03" + tokfile()
    s["tokens_unfixed"] = b"\x01" + tokfile(1, 5)
    s["tokens_empty"] = b"\x03" + tokfile(0, 4)
    bad = bytearray(results_file())
    struct.pack_into("<Q", bad, 64 + 3 * 40 + 2 * 48 + 16, 1000)  # feature 1, example 0: window_offset
    s["bad_results_window"] = b"\x02" + bytes(bad)
    s["bad_results_version"] = b"\x02" + results_file()[:8] + struct.pack("<I", 1) + results_file()[12:]
    s["bad_tokens_size"] = b"\x03" + tokfile()[:-24]
    return s


# ---------------------------------------------------------------------------------------
# index.sli (docs/STORE_FORMAT.md, feature index); fuzz_findex: mode byte (bit 0: the
# harness recomputes the checksums first), then the file
# ---------------------------------------------------------------------------------------
def varint64(v):
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _f16_exact(v):
    return struct.unpack("<e", struct.pack("<e", v))[0] == v


def _percentile(sorted_vals, q):
    h = q * (len(sorted_vals) - 1)
    i = int(math.floor(h))
    if i >= len(sorted_vals) - 1:
        return sorted_vals[-1]
    t, a, b = h - i, sorted_vals[i], sorted_vals[i + 1]
    return b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t


def findex_file(postings, n_rows, lz4_features=()):
    """postings: per feature a list of (row, value), rows ascending."""
    data, entries, off, nnz = bytearray(), bytearray(), 64, 0
    for f, ps in enumerate(postings):
        if not ps:
            entries += struct.pack("<QQQQIfffQ", off, 0, 0, 0, 0, math.nan, math.nan, math.nan, xxh64(b""))
            continue
        raw, nxt = bytearray(), 0
        for row, _ in ps:
            raw += varint64(row - nxt)
            nxt = row + 1
        vals = [v for _, v in ps]
        fp16 = all(_f16_exact(v) for v in vals)
        if fp16:
            halves = [struct.unpack("<H", struct.pack("<e", v))[0] for v in vals]
            raw += bytes(h & 0xFF for h in halves) + bytes(h >> 8 for h in halves)
        else:
            raw += struct.pack("<%df" % len(vals), *vals)
        stored, flags = bytes(raw), 1 if fp16 else 0
        if f in lz4_features:
            c = lz4_compress(bytes(raw))
            if len(c) < len(raw):
                stored, flags = c, flags | 2
        sv = sorted(vals)
        entries += struct.pack("<QQQQIfffQ", off, len(ps), len(stored), len(raw), flags, _percentile(sv, 0.5),
                               _percentile(sv, 0.9), _percentile(sv, 0.99), xxh64(stored))
        data += stored
        off += len(stored)
        nnz += len(ps)
    head = b"SAELIDX1" + struct.pack("<IIQQQQQ", 1, len(postings), n_rows, nnz, 64 + len(data), xxh64(bytes(entries)), 0)
    return head + struct.pack("<Q", xxh64(head)) + bytes(data) + bytes(entries)


def seeds_findex():
    rng = random.Random(11)
    s = {}
    n_rows = 300
    post = [[] for _ in range(6)]
    for row in range(n_rows):
        post[1].append((row, 1.5))  # dense: LZ4 pays
        if rng.random() < 0.2:
            post[2].append((row, struct.unpack("<e", struct.pack("<e", rng.uniform(0.1, 9)))[0]))
        if rng.random() < 0.05:
            post[4].append((row, struct.unpack("<f", struct.pack("<f", rng.uniform(0.1, 9) * 1e-6))[0]))
    post[5] = [(0, 1.0), (1, 2.0), (2, 3.0), (297, 4.0)]
    good = findex_file(post, n_rows, lz4_features=(1,))
    s["index"] = b"\x00" + good
    s["index_raw"] = b"\x01" + findex_file(post, n_rows)
    s["index_one_dead"] = b"\x00" + findex_file([[]], 0)
    s["index_big_row"] = b"\x01" + findex_file([[(0, 1.0), (2 ** 40, 2.0)]], 2 ** 40 + 1)
    bad = bytearray(good)
    bad[70] ^= 0x20
    s["bad_index_feature"] = b"\x00" + bytes(bad)
    s["bad_index_truncated"] = b"\x00" + good[:-20]
    s["bad_index_rows"] = b"\x01" + findex_file([[(5, 1.0), (9, 2.0)]], 8)
    return s


# ---------------------------------------------------------------------------------------
# datasets; fuzz_dataset: mode byte (0 .npy, 1 .safetensors, 2 .bin u16, 3 .bin u32,
# 4 .jsonl, 5 .txt lines, 6 .txt whole file, 7 .jsonl with field "t"), then the file
# ---------------------------------------------------------------------------------------
def npy(descr, shape, values, version=1, fortran=False):
    shape_s = "(%d,)" % shape[0] if len(shape) == 1 else "(%s)" % ", ".join(str(d) for d in shape)
    hdr = "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (descr, "True" if fortran else "False",
                                                                 shape_s)
    lead = 10 if version == 1 else 12
    hdr += " " * (-(lead + len(hdr) + 1) % 64) + "\n"
    code = {"<i4": "i", "<i8": "q", "<u2": "H", "<u4": "I", "|u1": "B", "<i2": "h", ">i4": "i"}[descr]
    endian = ">" if descr[0] == ">" else "<"
    head = b"\x93NUMPY" + bytes([version, 0])
    head += struct.pack("<H" if version == 1 else "<I", len(hdr))
    return head + hdr.encode() + struct.pack(endian + "%d%s" % (len(values), code), *values)


def seeds_dataset():
    s = {}
    s["npy_i32_1d"] = b"\x00" + npy("<i4", [12], list(range(1, 13)))
    s["npy_u16_2d"] = b"\x00" + npy("<u2", [3, 4], [7 * i % 1000 for i in range(12)])
    s["npy_i64_v2"] = b"\x00" + npy("<i8", [5], [0, 999, 5, 0, 3], version=2)
    s["npy_u1_i2"] = b"\x00" + npy("|u1", [2, 2], [1, 2, 3, 4])
    s["npy_i2"] = b"\x00" + npy("<i2", [3], [5, 6, 7])
    s["npy_u4_2d"] = b"\x00" + npy("<u4", [2, 3], [1, 2, 3, 4, 5, 6])
    s["bad_npy_fortran"] = b"\x00" + npy("<i4", [2, 2], [1, 2, 3, 4], fortran=True)
    s["bad_npy_big_endian"] = b"\x00" + npy(">i4", [2], [1, 2])
    s["bad_npy_out_of_vocab"] = b"\x00" + npy("<i4", [3], [1, 1000, 2])
    s["bad_npy_truncated"] = b"\x00" + npy("<i4", [30], list(range(30)))[:-8]
    s["st_tokens_2d"] = b"\x01" + safetensors([("tokens", "I32", [2, 3])], rng=random.Random(2))
    s["st_only_tensor_1d"] = b"\x01" + safetensors([("ids", "U16", [6])])
    s["st_i64"] = b"\x01" + safetensors([("tokens", "I64", [4]), ("mask", "U8", [4])])
    s["bad_st_float"] = b"\x01" + safetensors([("tokens", "F32", [4])])
    s["bin_u16"] = b"\x02" + struct.pack("<10H", *range(10))
    s["bin_u32"] = b"\x03" + struct.pack("<6I", 1, 2, 3, 999, 0, 4)
    s["bad_bin_odd"] = b"\x02" + b"\x01\x00\x02"
    s["jsonl"] = b"\x04" + (b'{"text": "Hello world"}\n{"text": null}\n\n{"other": 1}\r\n'
                            b'{"text": "caf\\u00e9 \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80"}\n'
                            b'{"text": "<|endoftext|> and more"}')
    s["bad_jsonl"] = b"\x04" + b'{"text": "ok"}\n{"text": \n'
    s["txt_lines"] = b"\x05" + (b"first line\n\nsecond \xff\xfe line\r\nthird\xe4\xb8 cut\n"
                                b"the the the the the the the the the the the the the the the\n")
    s["txt_file"] = b"\x06" + b"one document\nover several lines\n\n\xe2\x82\xac end"
    s["jsonl_field_t"] = b"\x07" + b'{"t": "x y z"}\n{"text": "skipped"}\n{"t": ""}\n{"t": "\\u00e9t\\u00e9"}\n'
    return s


HARNESSES = {
    "fuzz_safetensors": seeds_safetensors,
    "fuzz_sae": seeds_sae,
    "fuzz_model": seeds_model,
    "fuzz_tokenizer_json": seeds_tokenizer_json,
    "fuzz_tokenizer_encode": seeds_tokenizer_encode,
    "fuzz_segment": seeds_segment,
    "fuzz_store_files": seeds_store_files,
    "fuzz_dataset": seeds_dataset,
    "fuzz_findex": seeds_findex,
}


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "corpus")
    total = 0
    for harness, make in HARNESSES.items():
        d = os.path.join(outdir, harness)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        seeds = make()
        for name, data in sorted(seeds.items()):
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
            total += len(data)
        print("%-24s %3d seeds" % (harness, len(seeds)))
    print("%d bytes in all" % total)


if __name__ == "__main__":
    main()
