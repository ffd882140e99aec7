"""The memory guard's estimate (varro.engine.model.memory) against mx.get_peak_memory() on a Qwen3-0.6B shape.

A randomly initialised model with Qwen3-0.6B's hidden size, heads, head dim,
MLP and vocabulary (bench/common.py's config) and `--layers` blocks (fewer
than 28 keeps it quick on a CPU; every term but the weights scales with the
layers), sampled through `rollouts.sample_groups` and trained one day (LoRA on
every block or the top `--lora-layers`, one minibatch) through the Trainer, on
random tokens. The base is
float32 (`--dtype f32`), bfloat16 (`bf16`), quantized to 4 bits in groups of
64 with bf16 scales as mlx_lm.convert -q makes it (`4bit`), or the same with
float32 scales (`4bit-f32`: the same packed weights, about 10x faster on a
CPU; its activations and KV cache are float32, so it checks the quantized
weights and their matmuls, not the bf16 activations of a `4bit` base). Prints measured peak, estimate and their ratio for each case.

Usage: scripts/env python bench/memory_estimate.py [--layers 2] [--dtype f32|bf16|4bit|4bit-f32]
       [--lora-layers N] [--only sampling|training] [--cases N | --case n,P,M,G] [--eos-share 0.01]
       [--kv shared|sized|mlx-lm]

A sampling case also prints its time; `--kv` picks the decode batch's cache (varro.engine.sampling.kvcache:
ours, mlx-lm's grown once to the work, or mlx-lm's as it comes) to compare them.

bf16 and 4-bit matmuls are slow on a CPU (MLX has no BLAS path for them): a 4-bit training case
at this vocabulary takes tens of minutes here.
"""

from __future__ import annotations

import argparse
import time

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from common import QWEN3_06B
from mlx_lm.models.qwen3 import Model, ModelArgs

from varro.engine.core.config import Config
from varro.engine.train.gspo import gspo_objective
from varro.engine.model.memory import ModelShape, sampling_bytes, training_bytes
from varro.engine.model.loading import apply_lora
from varro.engine.core.rollout import PromptInput, Rollout
from varro.engine.sampling import rollouts
from varro.engine.sampling.rollouts import sample_groups
from varro.engine.train.trainer import Trainer, make_optimizer

VOCAB = QWEN3_06B["vocab_size"]
# --dtype: the dtype the model is cast to, and whether it is then quantized (its scales keep that dtype)
DTYPES = {"f32": (mx.float32, False), "bf16": (mx.bfloat16, False), "4bit": (mx.bfloat16, True),
          "4bit-f32": (mx.float32, True)}
DTYPE, QUANTIZED = DTYPES["f32"]
LORA_LAYERS = 0  # --lora-layers: adapters on the last N blocks (0: every block)
KV = "shared"  # --kv: the decode batch's cache (see main)
SECONDS: list[float] = []  # each sampling case's time


def qwen3_06b(layers: int):
    args = ModelArgs.from_dict({**QWEN3_06B, "num_hidden_layers": layers})
    mx.random.seed(0)
    model = Model(args)
    model.set_dtype(DTYPE)
    if QUANTIZED:
        nn.quantize(model, group_size=64, bits=4)
    mx.eval(model.parameters())
    return model


class Tokenizer:
    eos_token_ids = [VOCAB - 1]  # --eos-share makes the lowest ids EOS too, so rows finish at random

    @staticmethod
    def decode(ids):
        return ""


def sampling_case(layers: int, prompts: int, prompt_tokens: int, max_tokens: int, group: int) -> tuple[int, int]:
    model = qwen3_06b(layers)
    rng = np.random.default_rng(0)
    eos = Tokenizer.eos_token_ids
    low = 0 if eos == [VOCAB - 1] else max(eos) + 1  # the prompts hold no EOS id
    inputs = [PromptInput(str(i), rng.integers(low, VOCAB - 1, prompt_tokens).tolist()) for i in range(prompts)]
    mx.reset_peak_memory()
    plain = rollouts.prompt_caches
    if KV == "mlx-lm":  # the prefills as mlx-lm merges them: a row's own prompt copy, 256-position steps
        rollouts.prompt_caches = lambda cache, *args: cache
    try:
        start = time.perf_counter()
        sample_groups(model, Tokenizer(), inputs, group, max_tokens, temp=0.7, top_p=0.9, top_k=40, seed=0,
                      share_prefix=KV == "shared")
        SECONDS.append(time.perf_counter() - start)
    finally:
        rollouts.prompt_caches = plain
    return mx.get_peak_memory(), sampling_bytes(ModelShape.from_model(model), prompts, group, prompt_tokens,
                                                 max_tokens)


def training_case(layers: int, micro_batch: int, prompt_tokens: int, max_tokens: int, group: int) -> tuple[int, int]:
    model = qwen3_06b(layers)
    cfg = Config()
    cfg.model.lora_layers = LORA_LAYERS or layers
    apply_lora(model, cfg.model)
    cfg.train.micro_batch, cfg.train.minibatches = micro_batch, 1
    trainer = Trainer(model, cfg.train, make_optimizer(cfg.train), gspo_objective(cfg.train), temperature=0.7)
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, VOCAB - 1, prompt_tokens).tolist()
    groups = [[Rollout("p", i, prompt, rng.integers(0, VOCAB - 1, max_tokens).tolist(), "", "length",
                       reward=float(i)) for i in range(group)]]
    mx.reset_peak_memory()
    trainer.train_day(groups)
    return mx.get_peak_memory(), training_bytes(ModelShape.from_model(model), micro_batch or group, group,
                                                prompt_tokens, max_tokens)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--dtype", choices=list(DTYPES), default="f32",
                    help="the base's precision (4bit-f32: 4-bit with float32 scales, 10x the speed of bf16 scales "
                         "on a CPU)")
    ap.add_argument("--lora-layers", type=int, default=0, help="adapters on the last N blocks (default: all)")
    ap.add_argument("--only", choices=["sampling", "training"], help="one of the two phases")
    ap.add_argument("--cases", type=int, default=4, help="the first N cases of each phase")
    ap.add_argument("--case", help="one case instead of the list: 'prompts,P,M,G' or 'micro-batch,P,M,G'")
    ap.add_argument("--kv", choices=["shared", "sized", "mlx-lm"], default="shared",
                    help="the decode batch's cache: each prompt once and completions sized to M (ours), "
                         "mlx-lm's BatchKVCache grown once by M, or mlx-lm's as it comes (256-position steps)")
    ap.add_argument("--eos-share", type=float, default=0.0,
                    help="share of the vocabulary that ends a completion (0: only one id, which a random model "
                         "almost never samples): rows then finish at random and leave the decode batch")
    a = ap.parse_args()
    if a.eos_share > 0:
        Tokenizer.eos_token_ids = list(range(int(VOCAB * a.eos_share)))
    global DTYPE, QUANTIZED, LORA_LAYERS, KV
    DTYPE, QUANTIZED = DTYPES[a.dtype]
    LORA_LAYERS = a.lora_layers
    KV = a.kv
    for what, fn, cases in [
        ("sampling (prompts, P, M, G)", sampling_case, [(2, 100, 40, 8), (4, 100, 40, 8), (1, 400, 40, 4),
                                                        (2, 191, 180, 8)]),
        ("training (micro-batch, P, M, G)", training_case, [(1, 100, 150, 2), (2, 100, 150, 2), (1, 300, 150, 2)]),
    ]:
        if a.only and not what.startswith(a.only):
            continue
        for case in [tuple(int(x) for x in a.case.split(","))] if a.case else cases[: a.cases]:
            SECONDS.clear()
            peak, est = fn(a.layers, *case)
            took = f", {SECONDS[0]:.1f} s, cache {a.kv}" if SECONDS else ""
            lora = f", LoRA on {a.lora_layers}" if a.lora_layers and what.startswith("training") else ""
            print(f"{a.dtype} {what} {case}, {a.layers} layers{lora}: peak {peak / 1e6:.0f} MB, estimate {est / 1e6:.0f} MB "
                  f"({est / peak:.2f}x){took}", flush=True)


if __name__ == "__main__":
    main()
