"""The trainer's no-gradient passes and update step, before and after the chunked output head.

Before: the pi_old pass cut each prompt's group into pieces of as many rows as
keep their float32 logits over the whole vocabulary under 256 MiB (2 rows at
151,936 ids and 180 tokens), and every pass and step took the whole
vocabulary's logits (`head_chunk` 0, the plain head). After: the blocks run
over the whole group at once (`train.pass_rows`) and the head takes
`HEAD_CHUNK` vocabulary rows at a time (varro.engine.logprob_head).

The model is bench/memory_estimate.py's: randomly initialised, Qwen3-0.6B's
widths and vocabulary (hidden 1024, 16 query and 8 key-value heads, MLP 3072,
151,936 ids, tied embeddings), float32, with `--layers` blocks and LoRA on all
of them; one prompt's group of random tokens (a random model's rows are as
good as any for timing). Per variant and repeat, in turn, so a busy machine
slows both alike:

- pi_old: `Trainer._pass_logprobs` over the group, per completion position;
- health: `Trainer.final_health` (policy and reference) over the group;
- update: one `Trainer._update` over the first `--update-rows` rows
  (micro-batch 1, the default), per completion position.

Each figure is the best of `--repeats` (the median beside it), with the peak
of mx.get_peak_memory() above what was held before it (reset in between), and
for the after variant the memory guard's pass estimate (`memory.pass_bytes`)
against the larger measured pass peak.

    scripts/env python bench/passes.py                     # 2 blocks, 8 x 96 tokens, 2 repeats: ~3 min of CPU
    scripts/env python bench/passes.py --layers 4 --tokens 180 --repeats 3
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

import mlx.core as mx
import numpy as np
from common import emit
from memory_estimate import VOCAB, qwen3_06b

from varro.engine.config import Config
from varro.engine.gspo import gspo_objective
from varro.engine.logprob_head import HEAD_CHUNK
from varro.engine.memory import ModelShape, pass_bytes
from varro.engine.models import apply_lora
from varro.engine.records import Rollout
from varro.engine.train import Trainer, make_chunks, make_optimizer

BENCH = "passes"
OLD_PASS_LOGITS_BYTES = 256 * 2**20  # before: a pass's piece took the rows whose float32 logits fit this
NEW_PASS_ROWS = Trainer._pass_rows


def old_pass_rows(self: Trainer, p, dtype_bytes: int, health: bool = False) -> int:
    """The rows per piece of the passes before this change, from the whole vocabulary's logits alone (the
    health pass a third of them, for its 6 whole-vocabulary arrays)."""
    rows = max(1, min(p.rows, OLD_PASS_LOGITS_BYTES // (4 * VOCAB * int(p.inputs.shape[1]))))
    return max(1, rows * 2 // 6) if health else rows


def trainer_for(layers: int) -> Trainer:
    model = qwen3_06b(layers)
    cfg = Config()
    cfg.model.lora_layers = layers
    apply_lora(model, cfg.model)
    cfg.train.minibatches = 1
    return Trainer(model, cfg.train, make_optimizer(cfg.train), gspo_objective(cfg.train), temperature=0.7)


def group(size: int, prompt_tokens: int, tokens: int, seed: int = 0) -> list[Rollout]:
    rng = np.random.default_rng(seed)
    prompt = rng.integers(0, VOCAB, prompt_tokens).tolist()
    return [Rollout("p", i, prompt, rng.integers(0, VOCAB, tokens).tolist(), "", "length", reward=float(i % 3))
            for i in range(size)]


RESET_PEAK = mx.reset_peak_memory  # the update's own reset is stubbed out while it is measured


def measure(fn) -> tuple[float, int]:
    """(seconds, peak bytes above what MLX held before) of one call."""
    gc.collect()
    before = mx.get_active_memory()
    RESET_PEAK()
    tic = time.perf_counter()
    fn()
    return time.perf_counter() - tic, mx.get_peak_memory() - before


def run_variant(trainer: Trainer, rows: list[Rollout], update_rows: int, after: bool) -> dict[str, tuple[float, int]]:
    """The three measurements of one variant: {name: (seconds, peak bytes)}."""
    trainer.head_chunk = HEAD_CHUNK if after else 0
    Trainer._pass_rows = NEW_PASS_ROWS if after else old_pass_rows
    try:
        batches = trainer.prepare([rows])  # advantages and the reference pass
        chunks = batches[0].chunks
        out = {"pi_old": measure(lambda: trainer._pass_logprobs(chunks, chunks)),
               "health": measure(lambda: trainer.final_health(batches))}
        (small,) = trainer.prepare([rows[:update_rows]])
        mx.reset_peak_memory = lambda: None  # _update resets the peak itself, after its setup
        try:
            out["update"] = measure(lambda: trainer._update(small, 0))
        finally:
            mx.reset_peak_memory = RESET_PEAK
        return out
    finally:
        Trainer._pass_rows = NEW_PASS_ROWS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--group", type=int, default=8, help="rows of the prompt's group")
    ap.add_argument("--prompt-tokens", type=int, default=100)
    ap.add_argument("--tokens", type=int, default=96, help="completion tokens per row")
    ap.add_argument("--update-rows", type=int, default=2, help="rows of the timed update step")
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    trainer = trainer_for(a.layers)
    rows = group(a.group, a.prompt_tokens, a.tokens)
    run_variant(trainer, rows[:3], 2, True)  # warm-up: first-call costs out of the figures
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    for _ in range(a.repeats):
        for name in runs:
            runs[name].append(run_variant(trainer, rows, a.update_rows, name == "after"))
    positions = {"pi_old": a.group * a.tokens, "health": a.group * a.tokens, "update": a.update_rows * a.tokens}
    setup = (f"{a.layers} blocks of Qwen3-0.6B's widths, vocabulary {VOCAB}, float32, LoRA on every block; "
             f"prompt {a.prompt_tokens} tokens, group {a.group} x {a.tokens}; best of {a.repeats}")
    for what, n in positions.items():
        for name, rs in runs.items():
            secs = [r[what][0] for r in rs]
            peak = max(r[what][1] for r in rs)
            emit(BENCH, f"{what}.{name}_ms_per_position", min(secs) / n * 1e3, "ms",
                 f"median {statistics.median(secs) / n * 1e3:.2f} ms; {setup}")
            emit(BENCH, f"{what}.{name}_peak", peak / 1e6, "MB", "above what was held before the call")
        best = {name: min(r[what][0] for r in rs) for name, rs in runs.items()}
        emit(BENCH, f"{what}.speedup", best["before"] / best["after"], "x", "before / after, best of each")
    shape = ModelShape.from_model(trainer.model)
    estimate = pass_bytes(shape, a.group, a.prompt_tokens, a.tokens)
    measured = max(r[w][1] for r in runs["after"] for w in ("pi_old", "health"))
    emit(BENCH, "after.pass_estimate", estimate / 1e6, "MB",
         f"memory.pass_bytes; measured {measured / 1e6:.0f} MB, estimate {estimate / measured:.2f}x")


if __name__ == "__main__":
    main()
