"""The memory guard: a night that does not fit is refused (the swap watchdog is varro.engine.train.watchdog).

The peaks of sampling (the decode batch's KV cache, a decode step's logits, a prefill chunk) and of training
(the step state, the saved activations, the output head's chunks, the no-gradient passes) are estimated, as
an upper bound, from the loaded model's shape (`ModelShape.from_model`). Within `memory_fraction` of what the
machine has free, the guard picks how many prompts decode together and the micro-batch, or refuses the night.
The formula, where each factor comes from, and the measurements: docs/training.md.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten
from mlx_lm.models.cache import KVCache
from mlx_lm.tuner.lora import LoRALinear, LoRASwitchLinear

from varro.engine.core.errors import UserError
from varro.engine.model.loading import (attends_in_place, attention_modules, base_dtype, first_trainable_layer,
                                        lora_modules)
from varro.engine.model.head import GRAD_COPIES, HEAD_CHUNK, KL_COPIES, SWEEP_COPIES, output_head

GB = 1e9
PREFILL_STEP = 512  # rollouts.prefill's chunk
KV_STEP = 256  # mlx-lm's KVCache / BatchKVCache allocation step
PASS_BYTES = 512 * 2**20  # a no-gradient pass takes as many of a prompt's rows as keep its transients under this
HEALTH_COPIES = 6  # (rows, T, V) arrays the health pass holds without a chunked head: both log-softmaxes, exp, ...
KV_COPIES = 2  # mlx-lm's batch cache: a finished row's filter builds it again beside the old one
FETCH_COPIES = 2  # a shared-prefix layer's joined attention inputs: the rows' gathered prompts and the concatenation
CASCADE_COPIES = 3  # a shared-prefix layer's cascade attention: both score blocks, joined, and their softmax
DECODE_LOGIT_COPIES = 4  # logits, log-softmax, stacked rows, pi_T's scaled (each row's log q: from its draw's k)
ACTIVATION_FACTOR = 32  # saved values per position, per hidden unit, per layer, for the backward (docs/training.md)
LOGIT_COPIES = 3  # logits, log-softmax and their gradient at completion positions, without vocabulary chunks
TRAINABLE_COPIES = 8  # beyond the parameters: gradient, running sum, clipped, Adam's m, v, the update's new m, v, p


class MemoryGuardError(UserError):
    """The night would not fit in the memory the machine has; the message says what would."""


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs of a model: its `args` and the bytes of its parameters."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    intermediate: int
    weight_bytes: int
    trainable_bytes: int = 0
    dtype_bytes: int = 4  # activations and KV cache
    trained_layers: int | None = None  # blocks the backward runs through (None or 0: all of them)
    adapter_inputs: int = 0  # per trained block: the summed input widths of its LoRA-adapted linears
    head_chunk: int = HEAD_CHUNK  # vocabulary rows the trainer's output head takes at a time (0: all of them)
    shared_prefix: bool = True  # the decode batch holds each prompt once (plain KVCache layers, kvcache.py)
    cascade: bool = True  # ... and attends to it in place (sampling.attention), not through joined arrays

    @classmethod
    def from_args(cls, args, weight_bytes: int, trainable_bytes: int = 0, dtype_bytes: int = 4,
                  trained_layers: int | None = None, adapter_inputs: int = 0,
                  head_chunk: int = HEAD_CHUNK, shared_prefix: bool = True, cascade: bool = True) -> "ModelShape":
        heads = args.num_attention_heads
        return cls(hidden=args.hidden_size, layers=args.num_hidden_layers, heads=heads,
                   kv_heads=getattr(args, "num_key_value_heads", None) or heads,
                   head_dim=getattr(args, "head_dim", None) or args.hidden_size // heads,
                   vocab=args.vocab_size, intermediate=args.intermediate_size, weight_bytes=weight_bytes,
                   trainable_bytes=trainable_bytes, dtype_bytes=dtype_bytes, trained_layers=trained_layers,
                   adapter_inputs=adapter_inputs, head_chunk=head_chunk, shared_prefix=shared_prefix,
                   cascade=cascade)

    @classmethod
    def from_model(cls, model: nn.Module) -> "ModelShape":
        """The shape of a loaded mlx-lm model, with the bytes its parameters actually take, the blocks
        holding trainable parameters (the backward starts at the lowest of them) and its adapters' inputs."""
        params = [v for _, v in tree_flatten(model.parameters())]
        trainable = tree_flatten(model.trainable_parameters())
        layers = model.args.num_hidden_layers
        trained = layers - first_trainable_layer(model)  # all of them when the embedding trains
        inputs = sum(m.lora_a.shape[0] if isinstance(m, LoRALinear) else m.lora_a.shape[-1]
                     for m in lora_modules(model) if isinstance(m, (LoRALinear, LoRASwitchLinear)))
        # activations and the KV cache run in the base's dtype (a quantized base's scales')
        return cls.from_args(model.args, sum(v.nbytes for v in params), sum(v.nbytes for _, v in trainable),
                             base_dtype(model).size, trained, inputs // (trained or layers),
                             HEAD_CHUNK if output_head(model) is not None else 0, plain_kv_cache(model),
                             bool(attention_modules(model)))

    def kv_bytes_per_token(self) -> int:
        """One row's keys and values of one position, over all layers."""
        return self.layers * 2 * self.kv_heads * self.head_dim * self.dtype_bytes


def pass_position_bytes(hidden: int, intermediate: int, heads: int, vocab: int, context: int, dtype_bytes: int,
                        head_chunk: int, health: bool = False) -> int:
    """The bytes a no-gradient pass holds per completion position at its peak (an upper bound, checked in
    bench/passes.py): the output head's float32 logits, SWEEP_COPIES chunks of `head_chunk` vocabulary rows
    (KL_COPIES for the `health` pass, which sweeps the policy's and the reference's heads together; without
    chunks, 2 or HEALTH_COPIES x the whole vocabulary), with the base's own logits beside them below
    float32; and one block's transients, the MLP's and norms' (3 x intermediate + 4 x hidden) values in
    the base's dtype and the float32 attention scores of each head over `context` positions."""
    if head_chunk > 0:
        rows, copies = min(head_chunk, vocab), KL_COPIES if health else SWEEP_COPIES
    else:
        rows, copies = vocab, HEALTH_COPIES if health else 2
    head = rows * (4 * copies + (2 * dtype_bytes if dtype_bytes < 4 else 0))
    return head + (3 * intermediate + 4 * hidden) * dtype_bytes + heads * context * 4


def pass_rows(position_bytes: int, width: int, rows: int) -> int:
    """How many of a prompt's `rows` (each `width` completion positions) one no-gradient pass takes: all of
    them when their transients fit PASS_BYTES, and at least one."""
    return max(1, min(rows, PASS_BYTES // (width * position_bytes)))


def plain_kv_cache(model: nn.Module) -> bool:
    """Whether every layer of `model`'s cache is mlx-lm's plain KVCache, which sampling shares across a
    group (varro.engine.sampling.kvcache); a model without `make_cache` gets mlx-lm's default, plain layers."""
    make = getattr(model, "make_cache", None)
    return make is None or all(type(c) is KVCache for c in make())


def kv_cache_bytes(shape: ModelShape, prompts: int, group_size: int, prompt_tokens: int, max_tokens: int) -> int:
    """The estimated KV cache of one decode batch at its largest, with the prompts' own prefills
    (docs/training.md): each prompt once, the rows' completions, one layer's attention inputs and the last prompt's
    prefill; or, for a model that decodes as mlx-lm merges it, the batch cache, the copy a finished row's
    filter makes of it and every prompt's prefill."""
    per_position = shape.kv_bytes_per_token()
    rows = prompts * group_size
    prefill = math.ceil(prompt_tokens / KV_STEP) * KV_STEP * per_position
    if shape.shared_prefix:
        held = (prompts * prompt_tokens + rows * (max_tokens + 1)) * per_position  # one step ahead: M + 1
        if shape.cascade and attends_in_place(shape.dtype_bytes):  # one layer's scores over every position and its
            # rows' completions copied whole for the products (sampling/attention.py)
            layer = (CASCADE_COPIES * rows * shape.heads * (prompt_tokens + max_tokens + 1) * 4
                     + 2 * rows * (max_tokens + 1) * per_position // shape.layers)
        else:
            layer = FETCH_COPIES * rows * (prompt_tokens + max_tokens + 1) * per_position // shape.layers
        return held + layer + prefill
    prefills = prompts * prefill
    positions = prompt_tokens + math.ceil(max_tokens / KV_STEP) * KV_STEP
    return KV_COPIES * rows * positions * per_position + prefills


def sampling_bytes(shape: ModelShape, prompts: int, group_size: int, prompt_tokens: int, max_tokens: int) -> int:
    """The estimated peak of one decode batch of `prompts` prompts x `group_size` (docs/training.md)."""
    rows = prompts * group_size
    kv = kv_cache_bytes(shape, prompts, group_size, prompt_tokens, max_tokens)
    cast = 4 if shape.dtype_bytes < 4 else 0  # Float32Logits' copy over a bf16 or quantized base
    logits = rows * shape.vocab * (4 * DECODE_LOGIT_COPIES + shape.dtype_bytes + cast)
    prefill = min(prompt_tokens, PREFILL_STEP) * (3 * shape.intermediate + 4 * shape.hidden) * shape.dtype_bytes
    return shape.weight_bytes + kv + logits + prefill


def training_bytes(shape: ModelShape, micro_batch: int, group_size: int, prompt_tokens: int,
                   max_tokens: int, day_rows: int = 0) -> int:
    """The estimated peak of one training step differentiating `micro_batch` rows of a day of `day_rows`
    (docs/training.md), with what the trainer keeps for the whole day (day_states_bytes)."""
    s = shape
    seq = prompt_tokens + max_tokens
    trained = s.trained_layers or s.layers
    base = s.weight_bytes + TRAINABLE_COPIES * s.trainable_bytes + day_states_bytes(s, day_rows, group_size,
                                                                                    prompt_tokens, max_tokens)
    below = s.dtype_bytes < 4  # a bf16 or quantized base: the adapters' float32 copies, the logits' casts
    per_position = s.hidden * ACTIVATION_FACTOR * s.dtype_bytes + (s.adapter_inputs * 4 if below else 0)
    head_rows, copies = (min(s.head_chunk, s.vocab), GRAD_COPIES) if s.head_chunk > 0 else (s.vocab, LOGIT_COPIES)
    grad = ((micro_batch * max_tokens + prompt_tokens) * trained * per_position
            + micro_batch * s.heads * max_tokens * seq * trained * 4
            + micro_batch * max_tokens * head_rows * (4 * copies + (2 * s.dtype_bytes if below else 0))
            + 2 * prompt_tokens * s.layers * 2 * s.kv_heads * s.head_dim * 4)
    return base + max(grad, pass_bytes(shape, group_size, prompt_tokens, max_tokens))


def day_states_bytes(shape: ModelShape, rows: int, group_size: int, prompt_tokens: int, max_tokens: int) -> int:
    """What the trainer keeps for a day of `rows` (varro.engine.train.trunk), in the base's dtype: with blocks
    frozen below the trained ones, the first trained block's input at every completion and prompt position;
    with a chunked head, the reference pass's final hidden states at every completion position (at most
    every row)."""
    if rows <= 0:
        return 0
    per_row = max_tokens * shape.hidden * shape.dtype_bytes
    held = rows * per_row if shape.head_chunk > 0 else 0
    if shape.trained_layers and shape.trained_layers < shape.layers:
        prompts = math.ceil(rows / max(group_size, 1))
        held += rows * per_row + prompts * prompt_tokens * shape.hidden * shape.dtype_bytes
    return held


def pass_bytes(shape: ModelShape, group_size: int, prompt_tokens: int, max_tokens: int) -> int:
    """The estimated peak of the no-gradient passes above the weights and the step state: a pi_old /
    reference pass or the end-of-day health pass, whichever is larger, each over as many of a group's rows
    as the trainer takes at once (docs/training.md)."""
    s = shape

    def one(health: bool) -> int:
        per = pass_position_bytes(s.hidden, s.intermediate, s.heads, s.vocab, prompt_tokens + max_tokens,
                                  s.dtype_bytes, s.head_chunk, health)
        return pass_rows(per, max_tokens, group_size) * max_tokens * per

    return max(one(False), one(True))


def os_reading(linux_file: str, field: str, mac_command: list[str], mac_bytes) -> int | None:
    """A byte count the OS reports, or None where there is no reading: the `field` line (kB) of the Linux
    file, else on macOS `mac_bytes(output)` of `mac_command`. When that command cannot run, the reading is
    None and a warning on stderr (the night's log under cron) names the command and what went wrong: the
    guard that asked goes without, rather than stopping the night."""
    path = Path(linux_file)
    if path.is_file():
        m = re.search(rf"^{field}:\s+(\d+) kB", path.read_text(), re.M)
        return int(m.group(1)) * 1024 if m else None
    if sys.platform != "darwin":
        return None
    try:
        text = subprocess.run(mac_command, capture_output=True, text=True, timeout=5, check=True).stdout
    except (OSError, subprocess.SubprocessError) as e:
        warnings.warn(f"no memory reading: `{' '.join(mac_command)}` failed ({e}); the guard that reads it is "
                      "off for this night", RuntimeWarning, stacklevel=2)
        return None
    return mac_bytes(text)


def _vm_stat_free(text: str) -> int | None:
    page = re.search(r"page size of (\d+) bytes", text)
    pages = {k: int(v) for k, v in re.findall(r"^Pages (\w+):\s+(\d+)\.", text, re.M)}
    return int(page.group(1)) * sum(pages.get(k, 0) for k in ("free", "inactive", "speculative")) if page else None


def available_bytes() -> int | None:
    """The memory the machine can give without swapping, in bytes (None where there is no reading):
    Linux MemAvailable; macOS free + inactive + speculative pages (vm_stat)."""
    return os_reading("/proc/meminfo", "MemAvailable", ["vm_stat"], _vm_stat_free)


def budget_bytes(fraction: float) -> int | None:
    """What the night may use: `fraction` of the free memory plus what MLX already holds (the loaded
    weights, which the estimates count); None without a reading."""
    free = available_bytes()
    return None if free is None else int(fraction * free) + mx.get_active_memory()


def _gb(n: float) -> str:
    return f"{n / GB:.1f} GB"


def _largest(fits, hi: int) -> int:
    """The largest k in 1..hi with fits(k) (fits is monotone: true below some k), or 0."""
    return max((k for k in range(1, hi + 1) if fits(k)), default=0)


def plan_decode_batch(shape: ModelShape, prompts: int, group_size: int, prompt_tokens: int, max_tokens: int,
                      budget: int | None) -> int:
    """How many prompts to decode together (at most `prompts`): all of them when they fit `budget` (or
    there is no reading). Raises MemoryGuardError when not even one prompt's group fits, naming a
    group size or max_tokens that would."""
    if budget is None or prompts < 1:
        return max(prompts, 1)
    n = _largest(lambda k: sampling_bytes(shape, k, group_size, prompt_tokens, max_tokens) <= budget, prompts)
    if n:
        return n
    need = sampling_bytes(shape, 1, group_size, prompt_tokens, max_tokens)
    g = _largest(lambda k: sampling_bytes(shape, 1, k, prompt_tokens, max_tokens) <= budget, group_size - 1)
    m = _largest(lambda k: sampling_bytes(shape, 1, group_size, prompt_tokens, k) <= budget, max_tokens - 1)
    raise MemoryGuardError(f"sampling needs ~{_gb(need)}, {_gb(budget)} available: "
                           f"{_would_fit(f'--group-size {g}' if g else '', f'--max-tokens {m}' if m else '')}")


def plan_micro_batch(shape: ModelShape, micro_batch: int, group_size: int, prompt_tokens: int, max_tokens: int,
                     budget: int | None, day_rows: int = 0) -> int:
    """The training micro-batch to use: the configured one (0: the whole group) or the largest smaller one
    that fits `budget`. Raises MemoryGuardError when one row does not fit, naming a max_tokens that would."""
    wanted = micro_batch if micro_batch > 0 else group_size
    if budget is None:
        return micro_batch
    def fits(rows: int, tokens: int) -> bool:
        return training_bytes(shape, rows, group_size, prompt_tokens, tokens, day_rows) <= budget

    if fits(wanted, max_tokens):
        return micro_batch
    n = _largest(lambda k: fits(k, max_tokens), wanted - 1)
    if n:
        return n
    need = training_bytes(shape, 1, group_size, prompt_tokens, max_tokens, day_rows)
    m = _largest(lambda k: fits(1, k), max_tokens - 1)
    raise MemoryGuardError(f"training needs ~{_gb(need)}, {_gb(budget)} available: "
                           f"{_would_fit(f'--max-tokens {m}' if m else '')}")


def _would_fit(*options: str) -> str:
    options = [o for o in options if o]
    if not options:
        return "no smaller group or completion fits; close other programs or use a smaller model"
    return " or ".join(options) + " would fit"


def cache_decode_batch(shape: ModelShape, prompts: int, group_size: int, prompt_tokens: int, max_tokens: int,
                       cache_gb: float) -> int:
    """How many of `prompts` prompts decode together with their KV cache within `cache_gb` (at least one;
    all of them when `cache_gb` is 0)."""
    if cache_gb <= 0:
        return prompts
    fits = _largest(lambda k: kv_cache_bytes(shape, k, group_size, prompt_tokens, max_tokens) <= cache_gb * GB,
                    prompts)
    return max(fits, 1)


def sampling_plan(model: nn.Module, prompt_lengths: list[int], group_size: int, max_tokens: int,
                  fraction: float, cache_gb: float = 0.0) -> tuple[int, str | None]:
    """(decode batch for `Policy.sample`, a note when free memory made it smaller than all the prompts)
    under `fraction` of the free memory, with the decode batch's KV cache at most `cache_gb` (0: no
    ceiling; at least one prompt always decodes); 0 decodes all at once. Raises MemoryGuardError when
    nothing fits."""
    if not prompt_lengths:
        return 0, None
    shape, prompts, longest = ModelShape.from_model(model), len(prompt_lengths), max(prompt_lengths)
    n, note = cache_decode_batch(shape, prompts, group_size, longest, max_tokens, cache_gb), None
    if fraction > 0:
        budget = budget_bytes(fraction)
        fits = plan_decode_batch(shape, n, group_size, longest, max_tokens, budget)
        if fits < n:
            n, note = fits, (f"memory guard: {prompts} prompts x {group_size} do not fit in {_gb(budget)} at "
                             f"once: decoding {fits} prompts at a time")
    return (0, None) if n >= prompts else (n, note)


def training_plan(model: nn.Module, groups: list[list], micro_batch: int, max_tokens: int,
                  fraction: float) -> tuple[int, str | None]:
    """(micro-batch for the trainer, a note when it is smaller than configured) for the day's `groups` under
    `fraction` of the free memory. Raises MemoryGuardError when one row does not fit."""
    if fraction <= 0 or not groups:
        return micro_batch, None
    group_size = max(len(g) for g in groups)
    prompt = max(len(r.prompt_tokens) for g in groups for r in g)
    longest = max(len(r.completion_tokens) for g in groups for r in g)
    budget = budget_bytes(fraction)
    n = plan_micro_batch(ModelShape.from_model(model), micro_batch, group_size, prompt, max(longest, 1), budget,
                         sum(len(g) for g in groups))
    if n == micro_batch:
        return n, None
    return n, f"memory guard: micro-batch {micro_batch} does not fit in {_gb(budget)}: training {n} rows at a time"

