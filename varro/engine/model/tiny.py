"""The tiny offline model: a randomly initialised Qwen3-architecture model with a byte-level BPE tokenizer
trained locally on the shipped sample text, written in a Hugging Face checkpoint's folder layout, so the real
`mlx_lm.load` path loads it unchanged (the code path for `Qwen/Qwen3-0.6B` and for the tiny model is the same).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import mlx.core as mx
from mlx.utils import tree_flatten

from varro.engine.core.paths import SAMPLE_DIR

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]

# A Qwen3-style ChatML template, written for this project. With
# enable_thinking=false it appends an empty think block, as Qwen3's does.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)


def sample_corpus(paths: Iterable[Path] | None = None) -> list[str]:
    """Lines of the shipped sample text (every *.jsonl/*.txt directly in data/sample), in a fixed order.

    An app's own sample folder (data/sample/tally/, ...) is not read, so adding an app's sample does not
    change the tiny model every test and the demo are built on."""
    if paths is None:
        paths = sorted(p for p in SAMPLE_DIR.glob("*") if p.suffix in {".jsonl", ".txt"})
    lines: list[str] = []
    for p in paths:
        for line in Path(p).read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if not line:
                continue
            if p.suffix == ".jsonl":
                record = json.loads(line)
                lines.extend(str(v) for v in record.values() if isinstance(v, str) and " " in v)
            else:
                lines.append(line)
    if not lines:
        raise FileNotFoundError(f"no sample text found under {SAMPLE_DIR}")
    return lines


def train_tokenizer(lines: list[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on `lines` (deterministic for the same lines)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(lines, trainer)
    return tok


def write_tiny_model(
    out_dir: str | Path,
    seed: int = 0,
    vocab_size: int = 1024,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    corpus: list[str] | None = None,
) -> Path:
    """Write a random Qwen3-architecture model and a local tokenizer that `mlx_lm.load` loads.

    Deterministic for a given seed and corpus. Returns the folder.
    """
    from mlx_lm.models.qwen3 import Model, ModelArgs

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(corpus if corpus is not None else sample_corpus(), vocab_size)
    tok.save(str(out / "tokenizer.json"))
    eos_id = tok.token_to_id("<|im_end|>")
    pad_id = tok.token_to_id("<|endoftext|>")
    config = {
        "model_type": "qwen3",
        "architectures": ["Qwen3ForCausalLM"],
        "hidden_size": hidden_size,
        "num_hidden_layers": num_layers,
        "intermediate_size": intermediate_size,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads,
        "head_dim": hidden_size // num_heads,
        "rms_norm_eps": 1e-6,
        "vocab_size": tok.get_vocab_size(),
        "max_position_embeddings": 2048,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
        "eos_token_id": eos_id,
        "bos_token_id": None,
        "torch_dtype": "float32",
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "eos_token": "<|im_end|>",
                "pad_token": "<|endoftext|>",
                "bos_token": None,
                "unk_token": None,
                "model_max_length": 2048,
                "chat_template": CHAT_TEMPLATE,
                "added_tokens_decoder": {
                    str(tok.token_to_id(t)): {"content": t, "special": True} for t in SPECIAL_TOKENS
                },
            },
            indent=2,
        )
    )
    (out / "special_tokens_map.json").write_text(
        json.dumps({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"})
    )
    mx.random.seed(seed)
    args = ModelArgs(**{k: config[k] for k in ModelArgs.__dataclass_fields__ if k in config})
    model = Model(args)
    weights = dict(tree_flatten(model.parameters()))
    mx.eval(weights)
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "mlx"})
    assert pad_id is not None and eos_id is not None
    return out
