#!/usr/bin/env python3
"""Convert a Llama-architecture GGUF file into a Hugging Face checkpoint.

    convert_gguf.py GGUF_FILE OUT_DIR [--dtype f32|bf16]

Writes into OUT_DIR:
  config.json            LlamaConfig fields, as transformers saves them
  generation_config.json bos/eos/pad ids
  model.safetensors      dequantized weights under Hugging Face tensor names
  tokenizer.json         a `tokenizers` byte-level BPE tokenizer rebuilt from
                         the GGUF's tokenizer.ggml.* metadata
  tokenizer_config.json  special tokens and the chat template

Needs the PyPI packages gguf, numpy and tokenizers (not torch, not
transformers). The output is deterministic: the same GGUF and options give
byte-identical files.

Two things about how llama.cpp writes Llama models matter here:

* Tensor layout. A GGUF tensor with dims [ne0, ne1] (ne0 = the contiguous
  dimension) is read by GGUFReader as a numpy array of shape (ne1, ne0), which
  for a weight matrix is already torch's nn.Linear layout (out_features,
  in_features).

* RoPE layout. llama.cpp rotates adjacent pairs of a head's dimensions
  (x[2i], x[2i+1]); transformers' LlamaAttention rotates halves
  (x[i], x[i + head_dim/2]). convert_hf_to_gguf.py therefore permutes the rows
  of q_proj (grouped by num_attention_heads) and k_proj (grouped by
  num_key_value_heads): within each head, HF row  a*(head_dim/2) + j  becomes
  GGUF row  2*j + a  (a in {0, 1}). `unpermute_rope_rows` applies the inverse.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

try:
    import gguf
    from gguf import GGUFReader, GGUFValueType
    from gguf.constants import (MODEL_ARCH, MODEL_TENSOR, MODEL_TENSORS,
                                TENSOR_NAMES, TokenType)
    from gguf.quants import dequantize
    from gguf.tensor_mapping import get_tensor_name_map
except ImportError as exc:  # pragma: no cover - environment problem
    sys.exit(f"convert_gguf.py: error: the 'gguf' package is required "
             f"(pip install gguf): {exc}")


class ConversionError(Exception):
    """The GGUF cannot be converted; the message names the offending key."""


# --------------------------------------------------------------------------
# GGUF metadata access
# --------------------------------------------------------------------------

def _field_value(field):
    """Decode a ReaderField into Python values using only its parts/data/types
    (stable across gguf versions; ReaderField.contents() is newer)."""
    main = field.types[0]
    if main == GGUFValueType.ARRAY:
        sub = field.types[-1]
        if sub == GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8") for i in field.data]
        if sub == GGUFValueType.ARRAY:
            raise ConversionError(f"nested arrays are not supported "
                                  f"(key {field.name})")
        return [field.parts[i][0].item() for i in field.data]
    if main == GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8")
    value = field.parts[field.data[0]][0]
    if main == GGUFValueType.FLOAT32:
        # Shortest decimal that round-trips the float32: 1e-05, not
        # 9.999999747378752e-06.
        return float(str(np.float32(value)))
    return value.item()


class Meta:
    def __init__(self, reader: GGUFReader):
        self._fields = reader.fields

    def has(self, key: str) -> bool:
        return key in self._fields

    def get(self, key: str, default=None):
        field = self._fields.get(key)
        if field is None:
            return default
        return _field_value(field)

    def require(self, key: str):
        field = self._fields.get(key)
        if field is None:
            raise ConversionError(f"required GGUF metadata key '{key}' "
                                  f"is missing")
        return _field_value(field)


# --------------------------------------------------------------------------
# Model hyper-parameters -> config.json
# --------------------------------------------------------------------------

ARCH = "llama"
_ARCH_ENUM = MODEL_ARCH.LLAMA


@dataclass
class Hparams:
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    rms_eps: float
    rope_theta: float
    rope_scaling: dict | None
    n_ctx: int
    vocab_size: int


def read_hparams(meta: Meta, n_tokens: int) -> Hparams:
    key_arch = gguf.Keys.General.ARCHITECTURE
    arch = meta.require(key_arch)
    if arch != ARCH:
        raise ConversionError(f"'{key_arch}' is '{arch}'; only '{ARCH}' "
                              f"GGUFs are supported")

    def k(name):
        return f"{ARCH}.{name}"

    n_expert = meta.get(k("expert_count"), 0)
    if n_expert:
        raise ConversionError(f"'{k('expert_count')}' is {n_expert}: "
                              f"mixture-of-experts llama GGUFs are not "
                              f"supported")

    n_embd = meta.require(k("embedding_length"))
    n_head = meta.require(k("attention.head_count"))
    n_head_kv = meta.get(k("attention.head_count_kv"), n_head)
    if isinstance(n_head, list) or isinstance(n_head_kv, list):
        raise ConversionError(f"per-layer head counts in "
                              f"'{k('attention.head_count')}' / "
                              f"'{k('attention.head_count_kv')}' are not "
                              f"supported")
    head_dim = meta.get(k("attention.key_length"), n_embd // n_head)
    v_dim = meta.get(k("attention.value_length"), head_dim)
    if v_dim != head_dim:
        raise ConversionError(f"'{k('attention.value_length')}' ({v_dim}) "
                              f"differs from the key length ({head_dim})")
    rope_dims = meta.get(k("rope.dimension_count"), head_dim)
    if rope_dims != head_dim:
        raise ConversionError(f"'{k('rope.dimension_count')}' is {rope_dims} "
                              f"but head_dim is {head_dim}: partial rotary "
                              f"embeddings are not supported")
    if n_head % n_head_kv:
        raise ConversionError(f"'{k('attention.head_count')}' ({n_head}) is "
                              f"not a multiple of "
                              f"'{k('attention.head_count_kv')}' ({n_head_kv})")

    rope_scaling = None
    stype = meta.get(k("rope.scaling.type"), "none")
    sfactor = meta.get(k("rope.scaling.factor"))
    if stype == "linear" and sfactor and sfactor != 1.0:
        rope_scaling = {"rope_type": "linear", "factor": sfactor}
    elif stype not in ("none", "linear"):
        raise ConversionError(f"'{k('rope.scaling.type')}' is '{stype}'; "
                              f"only none/linear RoPE scaling is supported")
    elif meta.has(k("rope.scale_linear")):
        f = meta.get(k("rope.scale_linear"))
        if f and f != 1.0:
            rope_scaling = {"rope_type": "linear", "factor": f}

    vocab_size = meta.get(k("vocab_size"), n_tokens)
    if vocab_size != n_tokens:
        raise ConversionError(f"'{k('vocab_size')}' is {vocab_size} but "
                              f"'tokenizer.ggml.tokens' has {n_tokens} "
                              f"entries")

    return Hparams(
        n_layer=meta.require(k("block_count")),
        n_embd=n_embd,
        n_ff=meta.require(k("feed_forward_length")),
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim=head_dim,
        rms_eps=meta.require(k("attention.layer_norm_rms_epsilon")),
        rope_theta=float(meta.get(k("rope.freq_base"), 10000.0)),
        rope_scaling=rope_scaling,
        n_ctx=meta.require(k("context_length")),
        vocab_size=vocab_size,
    )


def build_config(hp: Hparams, tied: bool, special_ids: dict, dtype: str) -> dict:
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "head_dim": hp.head_dim,
        "hidden_act": "silu",
        "hidden_size": hp.n_embd,
        "initializer_range": 0.02,
        "intermediate_size": hp.n_ff,
        "max_position_embeddings": hp.n_ctx,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": hp.n_head,
        "num_hidden_layers": hp.n_layer,
        "num_key_value_heads": hp.n_head_kv,
        "pretraining_tp": 1,
        "rms_norm_eps": hp.rms_eps,
        "rope_scaling": hp.rope_scaling,
        "rope_theta": hp.rope_theta,
        "tie_word_embeddings": tied,
        "torch_dtype": {"f32": "float32", "bf16": "bfloat16"}[dtype],
        "use_cache": True,
        "vocab_size": hp.vocab_size,
    }
    for name in ("bos", "eos", "pad"):
        if special_ids.get(name) is not None:
            cfg[f"{name}_token_id"] = special_ids[name]
    return cfg


# --------------------------------------------------------------------------
# Tensors
# --------------------------------------------------------------------------

# GGUF tensor kind -> Hugging Face name (per block ones take {bid}).
_GLOBAL = {
    MODEL_TENSOR.TOKEN_EMBD: "model.embed_tokens",
    MODEL_TENSOR.OUTPUT_NORM: "model.norm",
    MODEL_TENSOR.OUTPUT: "lm_head",
}
_BLOCK = {
    MODEL_TENSOR.ATTN_NORM: "model.layers.{bid}.input_layernorm",
    MODEL_TENSOR.ATTN_Q: "model.layers.{bid}.self_attn.q_proj",
    MODEL_TENSOR.ATTN_K: "model.layers.{bid}.self_attn.k_proj",
    MODEL_TENSOR.ATTN_V: "model.layers.{bid}.self_attn.v_proj",
    MODEL_TENSOR.ATTN_OUT: "model.layers.{bid}.self_attn.o_proj",
    MODEL_TENSOR.FFN_NORM: "model.layers.{bid}.post_attention_layernorm",
    MODEL_TENSOR.FFN_GATE: "model.layers.{bid}.mlp.gate_proj",
    MODEL_TENSOR.FFN_UP: "model.layers.{bid}.mlp.up_proj",
    MODEL_TENSOR.FFN_DOWN: "model.layers.{bid}.mlp.down_proj",
}


@dataclass
class TensorPlan:
    hf_name: str
    src: object            # gguf ReaderTensor
    shape: tuple           # HF shape
    rope_heads: int = 0    # >0: undo llama.cpp's RoPE row permutation


def unpermute_rope_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of convert_hf_to_gguf's q/k permutation (see module doc)."""
    rows = w.shape[0]
    if rows % n_head or (rows // n_head) % 2:
        raise ConversionError(f"cannot split {rows} rows into {n_head} heads "
                              f"of even size")
    hd = rows // n_head
    return (w.reshape(n_head, hd // 2, 2, *w.shape[1:])
             .swapaxes(1, 2)
             .reshape(w.shape))


def plan_tensors(reader: GGUFReader, hp: Hparams) -> tuple[list, bool]:
    name_map = get_tensor_name_map(_ARCH_ENUM, hp.n_layer)
    allowed = set(MODEL_TENSORS[_ARCH_ENUM])
    by_name = {t.name: t for t in reader.tensors}
    gguf_to_hf = {}
    for kind, hf in _GLOBAL.items():
        gguf_to_hf[TENSOR_NAMES[kind] + ".weight"] = (kind, hf + ".weight")
    for bid in range(hp.n_layer):
        for kind, hf in _BLOCK.items():
            gguf_to_hf[TENSOR_NAMES[kind].format(bid=bid) + ".weight"] = (
                kind, hf.format(bid=bid) + ".weight")
    # Cross-check the table against gguf-py's own HF -> GGUF name map.
    for g, (kind, hf) in gguf_to_hf.items():
        assert kind in allowed, kind
        mapped = name_map.get_name(hf, try_suffixes=(".weight",))
        assert mapped == g, (hf, mapped, g)

    unknown = sorted(set(by_name) - set(gguf_to_hf))
    if unknown:
        hint = ""
        if "rope_freqs.weight" in unknown:
            hint = (" ('rope_freqs.weight' holds llama3-style RoPE scaling "
                    "factors, which this tool does not convert)")
        raise ConversionError(f"GGUF tensors with no Hugging Face Llama "
                              f"counterpart: {', '.join(unknown[:8])}"
                              f"{' ...' if len(unknown) > 8 else ''}{hint}")
    tied = "output.weight" not in by_name

    d, f, v = hp.n_embd, hp.n_ff, hp.vocab_size
    q, kv = hp.n_head * hp.head_dim, hp.n_head_kv * hp.head_dim
    expect = {
        MODEL_TENSOR.TOKEN_EMBD: (v, d), MODEL_TENSOR.OUTPUT: (v, d),
        MODEL_TENSOR.OUTPUT_NORM: (d,), MODEL_TENSOR.ATTN_NORM: (d,),
        MODEL_TENSOR.FFN_NORM: (d,), MODEL_TENSOR.ATTN_Q: (q, d),
        MODEL_TENSOR.ATTN_K: (kv, d), MODEL_TENSOR.ATTN_V: (kv, d),
        MODEL_TENSOR.ATTN_OUT: (d, q), MODEL_TENSOR.FFN_GATE: (f, d),
        MODEL_TENSOR.FFN_UP: (f, d), MODEL_TENSOR.FFN_DOWN: (d, f),
    }
    plans = []
    for g, (kind, hf) in gguf_to_hf.items():   # insertion order: deterministic
        t = by_name.get(g)
        if t is None:
            if kind == MODEL_TENSOR.OUTPUT:
                continue
            raise ConversionError(f"required GGUF tensor '{g}' is missing")
        shape = tuple(int(x) for x in reversed([int(n) for n in t.shape]))
        if shape != expect[kind]:
            raise ConversionError(f"GGUF tensor '{g}' has shape {shape} "
                                  f"(HF order); expected {expect[kind]}")
        heads = {MODEL_TENSOR.ATTN_Q: hp.n_head,
                 MODEL_TENSOR.ATTN_K: hp.n_head_kv}.get(kind, 0)
        plans.append(TensorPlan(hf, t, shape, heads))
    return plans, tied


def load_tensor(plan: TensorPlan) -> np.ndarray:
    t = plan.src
    try:
        w = dequantize(t.data, t.tensor_type)
    except NotImplementedError as exc:
        raise ConversionError(f"tensor '{t.name}': cannot dequantize type "
                              f"{t.tensor_type.name} with this gguf "
                              f"version: {exc}") from exc
    w = np.asarray(w, dtype=np.float32).reshape(plan.shape)
    if plan.rope_heads:
        w = unpermute_rope_rows(w, plan.rope_heads)
    return np.ascontiguousarray(w)


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), round to nearest even."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    nan = np.isnan(x)
    rounded = bits + (np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1)))
    out = (rounded >> 16).astype(np.uint16)
    if nan.any():
        out[nan] = np.uint16(0x7FC0)
    return out


def write_safetensors(path: Path, plans: list, dtype: str) -> None:
    """Stream the tensors into a .safetensors file (format: 8-byte LE header
    size, JSON header, raw little-endian data), one tensor in memory at a
    time."""
    st_dtype, itemsize = {"f32": ("F32", 4), "bf16": ("BF16", 2)}[dtype]
    header = {"__metadata__": {"format": "pt"}}
    offset = 0
    for p in plans:
        n = int(np.prod(p.shape)) * itemsize
        header[p.hf_name] = {"dtype": st_dtype, "shape": list(p.shape),
                             "data_offsets": [offset, offset + n]}
        offset += n
    hbytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hbytes += b" " * (-len(hbytes) % 8)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(len(hbytes).to_bytes(8, "little"))
        fh.write(hbytes)
        for p in plans:
            w = load_tensor(p)
            if not np.isfinite(w).all():
                raise ConversionError(f"tensor '{p.src.name}' dequantizes to "
                                      f"non-finite values")
            data = f32_to_bf16_bits(w) if dtype == "bf16" else w
            fh.write(data.astype(data.dtype.newbyteorder("<"),
                                 copy=False).tobytes())
    os.replace(tmp, path)


# --------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------

# tokenizer.ggml.pre -> how Hugging Face `tokenizers` splits text before BPE.
#   "gpt2": ByteLevel's built-in GPT-2 regex only.
#   "gpt2+digits": each digit split off first (\p{N}), then the GPT-2 regex;
#       llama.cpp uses exactly these two regexes for these names.
#   "llama3": the Llama-3 split regex, ByteLevel without its own regex,
#       ignore_merges as Meta's tokenizer.json has it.
_LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|"
                 r"\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
                 r"\s+(?!\S)|\s+")
PRE_TOKENIZERS = {
    "gpt2": "gpt2", "gpt-2": "gpt2", "mpt": "gpt2", "olmo": "gpt2",
    "jais": "gpt2",
    "smollm": "gpt2+digits", "starcoder": "gpt2+digits",
    "refact": "gpt2+digits", "codeshell": "gpt2+digits",
    "command-r": "gpt2+digits", "exaone": "gpt2+digits",
    "minerva-7b": "gpt2+digits",
    "llama-bpe": "llama3", "llama3": "llama3",
}


def build_tokenizer(meta: Meta):
    from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models,
                            pre_tokenizers, processors)

    key_model = gguf.Keys.Tokenizer.MODEL
    tok_model = meta.require(key_model)
    if tok_model != "gpt2":
        raise ConversionError(f"'{key_model}' is '{tok_model}'; only 'gpt2' "
                              f"(byte-level BPE) tokenizers are supported")
    key_pre = gguf.Keys.Tokenizer.PRE
    pre = meta.get(key_pre, "default")
    style = PRE_TOKENIZERS.get(pre)
    if style is None:
        raise ConversionError(f"'{key_pre}' is '{pre}', which this tool "
                              f"cannot map to a Hugging Face pre-tokenizer; "
                              f"known: {', '.join(sorted(PRE_TOKENIZERS))}")

    key_tokens = gguf.Keys.Tokenizer.LIST
    tokens = meta.require(key_tokens)
    key_types = gguf.Keys.Tokenizer.TOKEN_TYPE
    types = meta.get(key_types, [int(TokenType.NORMAL)] * len(tokens))
    if len(types) != len(tokens):
        raise ConversionError(f"'{key_types}' has {len(types)} entries, "
                              f"'{key_tokens}' {len(tokens)}")
    vocab = {}
    for i, t in enumerate(tokens):
        if t in vocab:
            raise ConversionError(f"'{key_tokens}' holds '{t}' twice (ids "
                                  f"{vocab[t]} and {i}); ids would not "
                                  f"round-trip")
        vocab[t] = i
    key_merges = gguf.Keys.Tokenizer.MERGES
    merges = []
    for m in meta.require(key_merges):
        parts = m.split(" ")
        if len(parts) != 2:
            raise ConversionError(f"'{key_merges}' entry {m!r} is not two "
                                  f"space-separated tokens")
        merges.append((parts[0], parts[1]))

    special, user = [], []
    for i, (t, ty) in enumerate(zip(tokens, types)):
        if ty in (TokenType.CONTROL, TokenType.UNKNOWN):
            special.append(t)
        elif ty == TokenType.USER_DEFINED:
            user.append(t)
        elif ty == TokenType.BYTE:
            raise ConversionError(f"'{key_types}' marks token {i} ({t!r}) as "
                                  f"BYTE, which byte-level BPE does not use")

    byte_level = pre_tokenizers.ByteLevel(
        add_prefix_space=bool(meta.get(gguf.Keys.Tokenizer.ADD_PREFIX, False)),
        use_regex=style != "llama3")
    if style == "gpt2":
        pre_tok = byte_level
    elif style == "gpt2+digits":
        pre_tok = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        pre_tok = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(_LLAMA3_REGEX), behavior="isolated",
                                  invert=False), byte_level])

    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=None,
                              fuse_unk=False, byte_fallback=False,
                              ignore_merges=style == "llama3"))
    tk.pre_tokenizer = pre_tok
    tk.decoder = decoders.ByteLevel()
    # Added tokens match the raw text before pre-tokenization; GGUF stores
    # control / user-defined tokens as raw text (convert_hf_to_gguf decodes
    # non-normalized added tokens), so normalized=False.
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False)
                           for t in special])
    if user:
        tk.add_tokens([AddedToken(t, special=False, normalized=False)
                       for t in user])

    ids = special_token_ids(meta)
    add_bos = bool(meta.get(gguf.Keys.Tokenizer.ADD_BOS, False))
    add_eos = bool(meta.get(gguf.Keys.Tokenizer.ADD_EOS, False))
    steps = [processors.ByteLevel(trim_offsets=False)]
    if add_bos or add_eos:
        for flag, name in ((add_bos, "bos"), (add_eos, "eos")):
            if flag and ids.get(name) is None:
                raise ConversionError(f"'tokenizer.ggml.add_{name}_token' is "
                                      f"true but "
                                      f"'tokenizer.ggml.{name}_token_id' is "
                                      f"missing")
        b = [tokens[ids["bos"]]] if add_bos else []
        e = [tokens[ids["eos"]]] if add_eos else []
        single = " ".join(b + ["$A:0"] + e)
        pair = " ".join(b + ["$A:0"] + e + [x + ":1" for x in b] + ["$B:1"]
                        + [x + ":1" for x in e])
        sp = [(t, vocab[t]) for t in dict.fromkeys(b + e)]
        steps.append(processors.TemplateProcessing(single=single, pair=pair,
                                                   special_tokens=sp))
    tk.post_processor = steps[0] if len(steps) == 1 else \
        processors.Sequence(steps)

    if tk.get_vocab_size(with_added_tokens=True) != len(tokens):
        raise ConversionError("rebuilt tokenizer size differs from "
                              f"'{key_tokens}'")
    for i in sorted({0, len(tokens) - 1, *[vocab[t] for t in special + user]}):
        if tk.token_to_id(tokens[i]) != i:
            raise ConversionError(f"token {tokens[i]!r} does not keep id {i}")

    tok_cfg = {
        "add_bos_token": add_bos,
        "add_eos_token": add_eos,
        "added_tokens_decoder": {
            str(vocab[t]): {"content": t, "lstrip": False,
                            "normalized": False, "rstrip": False,
                            "single_word": False, "special": t in special}
            for t in sorted(special + user, key=vocab.get)},
        "clean_up_tokenization_spaces": False,
        "model_max_length": None,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    for name in ("bos", "eos", "unk", "pad"):
        if ids.get(name) is not None:
            tok_cfg[f"{name}_token"] = tokens[ids[name]]
    tmpl = meta.get(gguf.Keys.Tokenizer.CHAT_TEMPLATE)
    if tmpl is not None:
        tok_cfg["chat_template"] = tmpl
    return tk, tok_cfg, ids


def special_token_ids(meta: Meta) -> dict:
    n = len(meta.require(gguf.Keys.Tokenizer.LIST))
    out = {}
    for name, key in (("bos", gguf.Keys.Tokenizer.BOS_ID),
                      ("eos", gguf.Keys.Tokenizer.EOS_ID),
                      ("unk", gguf.Keys.Tokenizer.UNK_ID),
                      ("pad", gguf.Keys.Tokenizer.PAD_ID)):
        v = meta.get(key)
        if v is not None:
            if not 0 <= v < n:
                raise ConversionError(f"'{key}' is {v}, outside the "
                                      f"vocabulary of {n}")
            out[name] = v
    return out


# --------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------

def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, ensure_ascii=False)
        fh.write("\n")
    os.replace(tmp, path)


def convert(gguf_path: str, out_dir: str, dtype: str = "f32",
            log=print) -> dict:
    t0 = time.perf_counter()
    reader = GGUFReader(gguf_path)
    meta = Meta(reader)
    # Check everything before writing anything.
    n_tokens = len(meta.require(gguf.Keys.Tokenizer.LIST))
    hp = read_hparams(meta, n_tokens)
    tk, tok_cfg, ids = build_tokenizer(meta)
    tok_cfg["model_max_length"] = hp.n_ctx
    plans, tied = plan_tensors(reader, hp)
    config = build_config(hp, tied, ids, dtype)
    gen_cfg = {k: config[k] for k in ("bos_token_id", "eos_token_id",
                                      "pad_token_id") if k in config}

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "config.json", config)
    _write_json(out / "generation_config.json", gen_cfg)
    _write_json(out / "tokenizer_config.json", tok_cfg)
    tmp = out / "tokenizer.json.tmp"
    tk.save(str(tmp), pretty=True)
    os.replace(tmp, out / "tokenizer.json")
    write_safetensors(out / "model.safetensors", plans, dtype)

    types = {}
    for p in plans:
        types[p.src.tensor_type.name] = types.get(p.src.tensor_type.name, 0) + 1
    n_params = sum(int(np.prod(p.shape)) for p in plans)
    summary = {
        "tensors": len(plans), "parameters": n_params,
        "gguf_tensor_types": dict(sorted(types.items())),
        "tied_embeddings": tied, "dtype": dtype,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    log(f"converted {gguf_path} -> {out_dir}: {len(plans)} tensors, "
        f"{n_params:,} parameters ({', '.join(f'{k} x{v}' for k, v in summary['gguf_tensor_types'].items())}), "
        f"{hp.n_layer} layers, {hp.n_head}/{hp.n_head_kv} heads, "
        f"tied={tied}, dtype={dtype}, tokenizer.ggml.pre="
        f"{meta.get(gguf.Keys.Tokenizer.PRE)!r}, {summary['seconds']} s")
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description="Convert a llama GGUF (any quantization gguf-py can "
                    "dequantize) into a Hugging Face checkpoint directory.")
    ap.add_argument("gguf_file")
    ap.add_argument("out_dir")
    ap.add_argument("--dtype", choices=("f32", "bf16"), default="f32",
                    help="dtype of model.safetensors (default f32: the "
                         "dequantized values exactly)")
    args = ap.parse_args(argv)
    try:
        convert(args.gguf_file, args.out_dir, args.dtype)
    except ConversionError as exc:
        print(f"convert_gguf.py: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
