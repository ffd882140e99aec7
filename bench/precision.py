"""Step 0 of a day on a float32, a bf16 and a 4-bit base: is the update still on-policy and faithful?

Writes the tiny model (`write_tiny_model(dir, seed=0, vocab_size=512)`, the
tests' fixture), a bf16 copy and a 4-bit copy (bf16 scales, group size 32)
through `mlx_lm.convert`, opens each with LoRA through `Policy.open`, samples
3 prompts x 8 completions and trains one step (one minibatch, so the step is
on-policy), then prints that step's sequence ratio (exactly 1 on-policy), its
KL to the reference (the adapters off; 0 at step 0, the adapters start at zero),
`sampler_gap` (mean log q - log pi_old per token), the KL after the step, and
the weights' size. With the `loose` profile (no truncation) the gap is the
sampler/trainer numerics alone; with `tight` it adds -log(candidate mass).

Usage: scripts/env python bench/precision.py [--profiles loose,tight]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tests/support: the toy task

PROMPTS = [("a", "Write about the port strike."), ("b", "Write about the central bank."),
           ("c", "Write about prices.")]
COMMON = frozenset({"the", "of", "to", "in", "and", "for", "on", "a"})


def copies(root: Path) -> dict[str, Path]:
    """The tiny model and its bf16 and 4-bit copies under `root`."""
    from mlx_lm import convert

    from varro.engine.model.tiny import write_tiny_model

    tiny = write_tiny_model(root / "float32", seed=0, vocab_size=512)
    convert(hf_path=str(tiny), mlx_path=str(root / "bf16"), dtype="bfloat16")
    convert(hf_path=str(tiny), mlx_path=str(root / "4bit"), dtype="bfloat16", quantize=True, q_bits=4,
            q_group_size=32)
    return {"float32": tiny, "bf16": root / "bf16", "4-bit": root / "4bit"}


def step_zero(model_path: Path, profile: str, run: Path) -> dict:
    """One on-policy step on `model_path`; returns its row and the base's size."""
    from mlx.utils import tree_flatten

    from varro.engine.core.config import Config
    from varro.engine.model.loading import base_dtype
    from varro.engine.run.policy import Policy
    from support.toy import toy_reward

    cfg = Config()
    cfg.model.model = str(model_path)
    cfg.model.lora_layers = 2
    cfg.sampling.group_size = 8
    cfg.sampling.max_tokens = 24
    cfg.sampling.profile = profile
    cfg.train.minibatches = 1
    cfg.train.learning_rate = 5e-3
    policy = Policy.open(cfg, run)
    groups = policy.sample(PROMPTS, seed=0)
    for g in groups:
        for r in g:
            r.reward = toy_reward(r.text, COMMON) + 0.01 * len(r.completion_tokens)
    (row,) = policy.trainer.train_day(groups)
    size = sum(a.nbytes for _, a in tree_flatten(policy.model.parameters()))
    return {**row, "dtype": str(base_dtype(policy.model)).removeprefix("mlx.core."), "weights_kb": size / 1e3}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profiles", default="loose,tight")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        models = copies(Path(tmp))
        print(f"{'base':>8} {'dtype':>9} {'profile':>8} {'ratio':>10} {'kl':>10} {'gap/token':>10} "
              f"{'kl_after':>10} {'weights':>9}")
        for profile in args.profiles.split(","):
            for name, path in models.items():
                r = step_zero(path, profile, Path(tmp) / f"run-{name}-{profile}")
                print(f"{name:>8} {r['dtype']:>9} {profile:>8} {r['ratio_mean']:>10.7f} {r['kl']:>10.2e} "
                      f"{r['sampler_gap']:>10.2e} {r['kl_after']:>10.2e} {r['weights_kb']:>7.0f}kB")


if __name__ == "__main__":
    main()
