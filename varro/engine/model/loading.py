"""Models: loading through mlx-lm, LoRA and the chat prompt (the tiny offline model is varro.engine.model.tiny)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterator

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from varro.engine.core.config import ModelConfig
from varro.engine.core.errors import UserError


class ModelLoadError(RuntimeError, UserError):
    """The base model or an adapter could not be loaded."""


def check_model(model_id: str) -> None:
    """Fail fast, before any heavy work, on a --model that looks local but is not a model folder.

    Raises ModelLoadError for a local-looking path that does not exist, a folder without config.json, or,
    offline (HF_HUB_OFFLINE=1, as scripts/env sets it), a hub id ('owner/name') not in the Hugging Face cache.
    """
    import os

    from varro.engine.core.paths import caller_path, looks_local

    if not looks_local(model_id):
        if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
            from huggingface_hub import try_to_load_from_cache

            if not isinstance(try_to_load_from_cache(model_id, "config.json"), str):
                raise ModelLoadError(
                    f"cannot load model {model_id!r}: it is not a local folder and not in the Hugging Face "
                    f"cache (offline). Download it once with `{download_command(model_id)}` on a machine with "
                    "network access, or pass a local folder with --model.")
        return
    path = caller_path(model_id)
    if not path.exists():
        raise ModelLoadError(f"model folder {path} does not exist (from --model {model_id!r}); "
                             "pass a folder with config.json and weights, or a Hugging Face id like Qwen/Qwen3-0.6B")
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path} is not a model folder: it has no config.json "
                             "(make one with `varro tiny-model DIR` or download one with the Hugging Face CLI)")


def load_model(model_id: str, adapter_path: str | Path | None = None):
    """Load `model_id` (an mlx-lm id or local folder) with optional adapters.

    Returns (model, tokenizer). Raises ModelLoadError for a local path that is not a model folder, and
    with a hint on how to get the weights when the model is neither local nor in the Hugging Face cache.
    """
    from mlx_lm import load

    check_model(model_id)
    try:
        return load(model_id, adapter_path=str(adapter_path) if adapter_path else None)
    except OSError as e:  # FileNotFoundError, hub unreachable, repo not in the cache
        if Path(model_id).exists():
            raise ModelLoadError(f"cannot load model folder {model_id}: {e}") from e
        raise ModelLoadError(
            f"cannot load model {model_id!r}: it is not a local folder and not in the Hugging Face "
            f"cache ({e.__class__.__name__}). Download it once with `{download_command(model_id)}` on a "
            f"machine with network access, or pass a local folder with --model."
        ) from e


def download_command(model_id: str) -> str:
    """The download command of the installed huggingface_hub: `hf` where the venv has it, else huggingface-cli."""
    import sys

    hf = Path(sys.executable).parent / "hf"
    return f"hf download {model_id}" if hf.is_file() else f"huggingface-cli download {model_id}"


def apply_lora(model: nn.Module, cfg: ModelConfig) -> None:
    """Freeze the base and add float32 LoRA adapters to the last `cfg.lora_layers` blocks.

    The base keeps its own precision (float32, bf16, or quantized: mlx-lm wraps a QuantizedLinear
    in a LoRALinear over the quantized weights); the adapters, and so the optimizer state, are
    float32 whatever the base's dtype, so small updates are not rounded away."""
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model.freeze()
    linear_to_lora_layers(model, cfg.lora_layers, lora_parameters(cfg))
    model.update(tree_map(lambda a: a.astype(mx.float32), model.trainable_parameters()))


def quantized_modules(model: nn.Module) -> list[str]:
    """The names of the model's quantized layers (QuantizedLinear, QuantizedEmbedding, ...); [] when none."""
    from mlx_lm.models.switch_layers import QuantizedSwitchLinear

    kinds = (nn.QuantizedLinear, nn.QuantizedEmbedding, QuantizedSwitchLinear)
    return [name for name, m in model.named_modules() if isinstance(m, kinds)]


def base_dtype(model: nn.Module) -> mx.Dtype:
    """The dtype of the frozen base's floating weights (for a quantized base, its scales'): the
    most common floating dtype among the non-trainable parameters, or all of them when none is frozen."""
    from collections import Counter

    trainable = {k for k, _ in tree_flatten(model.trainable_parameters())}
    counts = Counter(a.dtype for k, a in tree_flatten(model.parameters())
                     if k not in trainable and mx.issubdtype(a.dtype, mx.floating))
    if not counts:
        counts = Counter(a.dtype for _, a in tree_flatten(model.parameters()) if mx.issubdtype(a.dtype, mx.floating))
    return counts.most_common(1)[0][0]


def lora_parameters(cfg: ModelConfig) -> dict:
    return {"rank": cfg.lora_rank, "scale": cfg.lora_scale, "dropout": 0.0}


def lora_modules(model: nn.Module) -> list[nn.Module]:
    from mlx_lm.tuner.lora import LoRAEmbedding, LoRALinear, LoRASwitchLinear

    kinds = (LoRALinear, LoRASwitchLinear, LoRAEmbedding)
    return [m for _, m in model.named_modules() if isinstance(m, kinds)]


@contextlib.contextmanager
def adapters_off(model: nn.Module) -> Iterator[None]:
    """Run the base model: LoRA layers with scale 0 compute exactly the frozen base."""
    layers = lora_modules(model)
    if not layers:
        raise ValueError("adapters_off needs a model with LoRA layers")
    scales = [m.scale for m in layers]
    try:
        for m in layers:
            m.scale = 0.0
        yield
    finally:
        for m, s in zip(layers, scales):
            m.scale = s


@contextlib.contextmanager
def base_weights_from(model: nn.Module, model_id: str) -> Iterator[None]:
    """Full fine-tuning: swap the base weights in from disk for the reference pass."""
    from mlx_lm.utils import load_model
    from mlx_lm.utils import _download

    current = tree_flatten(model.parameters())
    base, _ = load_model(_download(model_id))
    base.set_dtype(mx.float32)
    try:
        model.update(base.parameters())
        yield
    finally:
        model.update(tree_unflatten(current))
        del base


def chat_prompt_tokens(tokenizer, user_text: str, enable_thinking: bool = False) -> list[int]:
    """Token ids of the chat prompt for one user message, ready for generation."""
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": user_text}],
        tokenize=False,
        add_generation_prompt=True,
        enable_thinking=enable_thinking,
    )
    return list(tokenizer.encode(text, add_special_tokens=False))


def first_trainable_layer(model: nn.Module) -> int:
    """The index of the first layer whose keys and values depend on a trainable weight (0 when the
    embedding trains; the number of layers when none does)."""
    embed = getattr(getattr(model, "model", None), "embed_tokens", None)
    if embed is not None and tree_flatten(embed.trainable_parameters()):
        return 0
    for i, layer in enumerate(model.layers):
        if tree_flatten(layer.trainable_parameters()):
            return i
    return len(model.layers)


def attention_modules(model: nn.Module) -> list[ModuleType]:
    """The modules defining `model`'s layers that call attention by the name mlx-lm's models import it
    under, `scaled_dot_product_attention` (where varro.engine.sampling.attention routes the decode batch's
    attention); [] for a model that calls none."""
    names = {type(m).__module__ for m in model.modules()}
    found = [sys.modules.get(name) for name in sorted(names)]
    return [m for m in found if hasattr(m, "scaled_dot_product_attention")]


def attends_in_place(dtype_bytes: int) -> bool:
    """Whether the decode batch attends to each prompt's keys in place (sampling/attention.py) for a cache of
    `dtype_bytes`-byte entries: float32 only. Below it the in-place sums round apart from mlx-lm's attention
    by the dtype's precision, which would split the sampler's log-probs from the trainer's pass beyond GSPO's
    clip (docs/training.md), so the cache joins the arrays for mlx-lm's call instead."""
    return dtype_bytes == 4
