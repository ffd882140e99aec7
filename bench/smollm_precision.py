"""Decode speed of SmolLM2-135M-Instruct converted two ways: float32 (the default) and the GGUF's 4-bit
blocks kept (`varro real-model --quantized`), through our sampler, the same prompts and seed.

    scripts/env python bench/smollm_precision.py            # batch 8, 32 tokens each

The figure is generated tokens per second of wall time over one sample_groups call (prefill included),
after a short warm-up call; no row stops early (EOS is removed), so both do the same work.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, emit, no_eos  # noqa: E402

BENCH = "smollm_precision"


def decode_rate(folder: Path, prompts: int, group: int, tokens: int) -> float:
    from mlx_lm import load

    from varro.engine.model.loading import chat_prompt_tokens
    from varro.engine.core.rollout import PromptInput
    from varro.engine.sampling.rollouts import sample_groups

    model, tok = load(str(folder))
    no_eos(tok)
    inputs = [PromptInput(f"p{i}", chat_prompt_tokens(tok, f"Forecast what happens next: port strike, day {i}."))
              for i in range(prompts)]
    sample_groups(model, tok, inputs[:1], 1, 2, 0.7, 0.9, 40, seed=1)  # warm-up
    tic = time.perf_counter()
    groups = sample_groups(model, tok, inputs, group, tokens, 0.7, 0.9, 40, seed=0)
    made = sum(len(r.completion_tokens) for g in groups for r in g)
    return made / (time.perf_counter() - tic)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=32)
    a = ap.parse_args()
    from varro.engine.model.gguf import ensure_smollm

    models = REPO / "data" / "models"
    for label, quantized in (("float32", False), ("4bit", True)):
        rate = decode_rate(ensure_smollm(models, quantized=quantized), a.prompts, a.group, a.tokens)
        emit(BENCH, f"{label}_decode", rate, "tokens/s",
             f"{a.prompts} prompts x {a.group} x {a.tokens} tokens, one batch")


if __name__ == "__main__":
    main()
