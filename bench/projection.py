"""A PROJECTION, not a measurement: nightly minutes for Qwen3-0.6B on Apple M-series laptops.

The night: 32 prompts x 8 completions x 180 tokens sampled in one batch of 256,
then the updates (pi_old and reference forward passes and one forward+backward
per rollout, in float32 as Policy.open casts the model), then the reward.

Each phase's time on a chip is its roofline bound from the chip's published
memory bandwidth and float32 GPU rate, divided by the fraction of the bound
that we reached on this machine (results of roofline.py and gspo.py, with the
BLAS given). That assumes our code reaches the same share of the bound on
Metal as on this CPU, which is the weakest link; the "at the bound" column is
the floor. Reward scoring uses the cold rate measured here as is.

    scripts/env python bench/projection.py bench/results/results.jsonl
    scripts/env python bench/projection.py --real-shape RESULTS.jsonl   # from bench/real_shape.py's fractions

`--real-shape` takes the fractions bench/real_shape.py measured on the real
Qwen3-0.6B shape (float32 here) instead of the 30M bench model's, and projects
the night as it now runs: a bf16 base, its KV cache in bf16, as many prompts
decoding at a time as the default decode_cache_gb allows (4 since the shared-prefix cache; the table in docs/benchmarks.md was projected at 2). Training stays at
the chip's published float32 rate: bf16 is not assumed to compute faster, only to move half the bytes.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from common import QWEN3_06B, emit, qwen3_params

BENCH = "projection"

PROMPTS, GROUP, COMPLETION_TOKENS = 32, 8, 180
PROMPT_TOKENS = 200  # Varro's prompt (headline, summary, instruction) in Qwen3's chat template, about
# Apple's published figures: unified-memory bandwidth (GB/s) and GPU float32 TFLOPS.
CHIPS = {
    "M1 (8-core GPU)": (68.25, 2.6),
    "M2 (10-core GPU)": (100.0, 3.6),
    "M1 Pro (16-core GPU)": (200.0, 5.2),
    "M2 Pro (19-core GPU)": (200.0, 6.8),
    "M2 Max (38-core GPU)": (400.0, 13.6),
}


def load(path: Path, blas: str) -> dict[str, float]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {f"{r['bench']}.{r['name']}": r["value"] for r in rows if r["blas"] == blas}


def nightly_seconds(bw_gbs: float, tflops: float, f_decode: float, f_train: float,
                    score_rate: float | None, dtype_bytes: float = 4.0,
                    decode_prompts: int = PROMPTS) -> dict[str, float]:
    """Seconds per phase of one night on a chip, at the given fractions of its bound: weights and KV
    cache of `dtype_bytes` per value, `decode_prompts` prompts decoding together."""
    m, params = QWEN3_06B, qwen3_params(QWEN3_06B)
    n = PROMPTS * GROUP
    rows = decode_prompts * GROUP
    weight_bytes = dtype_bytes * params
    flops_token = 2.0 * params
    ctx = PROMPT_TOKENS + COMPLETION_TOKENS / 2
    kv_bytes = dtype_bytes * 2 * m["num_hidden_layers"] * m["num_key_value_heads"] * m["head_dim"] * ctx
    attn = 4.0 * m["num_hidden_layers"] * m["num_attention_heads"] * m["head_dim"] * ctx
    step = max((weight_bytes + rows * kv_bytes) / (bw_gbs * 1e9), rows * (flops_token + attn) / (tflops * 1e12))
    decode = math.ceil(PROMPTS / decode_prompts) * COMPLETION_TOKENS * step / f_decode
    prefill = PROMPTS * PROMPT_TOKENS * flops_token / (tflops * 1e12) / f_train
    # pi_old forward + reference forward + forward and backward through the activations (LoRA) = 4 forwards
    positions = n * (PROMPT_TOKENS + COMPLETION_TOKENS)
    train = positions * 4 * flops_token / (tflops * 1e12) / f_train
    score = n / score_rate if score_rate else 0.0
    return {"sampling": prefill + decode, "training": train, "scoring": score}


REAL = "real_shape.f32.b1.t180"


def default_decode_prompts() -> int:
    """How many prompts the default decode_cache_gb decodes together on a bf16 Qwen3-0.6B (the guard's own
    choice, varro.engine.model.memory.cache_decode_batch, at PROMPT_TOKENS + COMPLETION_TOKENS)."""
    from types import SimpleNamespace

    from varro.engine.core.config import Config
    from varro.engine.model.memory import ModelShape, cache_decode_batch

    shape = ModelShape.from_args(SimpleNamespace(**QWEN3_06B), 2 * qwen3_params(QWEN3_06B), dtype_bytes=2)
    return cache_decode_batch(shape, PROMPTS, GROUP, PROMPT_TOKENS, COMPLETION_TOKENS,
                              Config().train.decode_cache_gb)


def real_shape(path: Path, blas: str) -> None:
    """The projection from the fractions measured on the real shape (float32 on this CPU), for the
    night as it now runs: a bf16 base (bases keep their precision), as many prompts decoding at a time as
    the default decode_cache_gb allows."""
    r = load(path, blas)
    f_decode, f_train = r.get(f"{REAL}.ours_sampling_fraction"), r.get(f"{REAL}.ours_train_fraction")
    if not f_decode or not f_train:
        sys.exit(f"{path} lacks {REAL}.ours_sampling_fraction or .ours_train_fraction for {blas}")
    decode_prompts = default_decode_prompts()
    for chip, (bw, tf) in CHIPS.items():
        at_bound = nightly_seconds(bw, tf, 1.0, 1.0, None, 2.0, decode_prompts)
        ours = nightly_seconds(bw, tf, f_decode, f_train, None, 2.0, decode_prompts)
        name = chip.split(" (")[0].replace(" ", "_")
        emit(BENCH, f"real_shape.{name}.nightly_min", sum(ours.values()) / 60, "min",
             f"PROJECTION {chip}, {bw} GB/s, {tf} TFLOPS, bf16 base, {decode_prompts} prompts decoding at a "
             f"time: sampling {ours['sampling'] / 60:.1f}, "
             f"training {ours['training'] / 60:.1f} min at the real shape's fractions ({f_decode:.3f} decode, "
             f"{f_train:.3f} training, {blas}); at the bound {sum(at_bound.values()) / 60:.1f} min; scoring "
             "not included", tag=blas)


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--real-shape"]
    path = Path(args[0] if args else Path(__file__).parent / "results" / "results.jsonl")
    blas = args[1] if len(args) > 1 else "openblas"
    if "--real-shape" in sys.argv:
        real_shape(path, blas)
        return
    r = load(path, blas)
    f_decode = r.get("roofline.batch32_fraction")
    f_train = r.get("gspo.b1.ours_train_fraction")
    if not f_decode or not f_train:
        sys.exit(f"{path} lacks roofline.batch32_fraction or gspo.b1.ours_train_fraction for {blas}")
    score_rate = r.get("rewards.cold_completions_s")
    for chip, (bw, tf) in CHIPS.items():
        at_bound = nightly_seconds(bw, tf, 1.0, 1.0, None)
        ours = nightly_seconds(bw, tf, f_decode, f_train, score_rate)
        name = chip.split(" (")[0].replace(" ", "_")
        emit(BENCH, f"{name}.nightly_min", sum(ours.values()) / 60, "min",
             f"PROJECTION {chip}, {bw} GB/s, {tf} TFLOPS: sampling {ours['sampling'] / 60:.1f}, training "
             f"{ours['training'] / 60:.1f}, scoring {ours['scoring'] / 60:.1f} min at our measured fractions "
             f"({f_decode:.3f} decode, {f_train:.3f} training, {blas}); at the bound "
             f"{sum(at_bound.values()) / 60:.1f} min", tag=blas)


if __name__ == "__main__":
    main()
