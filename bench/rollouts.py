"""Rollout throughput: completion tokens per second for 4 prompts x 8 completions x 128 tokens.

Contenders, in one process, on the same model, prompts, sampler and BLAS:
- loop: one `mlx_lm.stream_generate` call (what `mlx_lm.generate` wraps) per
  completion; each call prefills its prompt and decodes at batch 1. Every call
  is the same shape, so with --loop-calls below 32 the rate is taken over that
  many calls (2 per prompt for 8) and holds for all 32.
- batch_generate: `mlx_lm.batch_generate` on the 32 prompt copies, its defaults
  (decode batch 32, prefill batch 8).
- ours: `varro.engine.sampling.rollouts.sample_groups` (each prompt prefilled once, its cache
  copied 8 times, all 32 decoded together).
Rates count the tokens each contender returned (EOS is disabled, so every
completion is 128 tokens) over the wall time including prefill. Each contender
first runs a cheap warm-up (one 16-token prompt, 2 completions, 4 tokens).

    scripts/env python bench/rollouts.py
    VARRO_NO_OPENBLAS=1 scripts/env python bench/rollouts.py --loop-calls 8
"""

from __future__ import annotations

import argparse

import mlx.core as mx

from common import SAMPLER, Timer, emit, load_bench_model, prompt_tokens

BENCH = "rollouts"


def run_loop(model, tok, prompts, group, max_tokens, calls) -> tuple[int, float]:
    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_sampler

    per_prompt = max(1, calls // len(prompts))
    made = 0
    with Timer() as t:
        for p in prompts:
            for _ in range(min(per_prompt, group)):
                for r in stream_generate(model, tok, p, max_tokens=max_tokens, sampler=make_sampler(**SAMPLER)):
                    pass
                made += r.generation_tokens
    return made, t.s


def run_batch_generate(model, tok, prompts, group, max_tokens) -> tuple[int, float]:
    from mlx_lm import batch_generate
    from mlx_lm.sample_utils import make_sampler

    with Timer() as t:
        out = batch_generate(model, tok, [p for p in prompts for _ in range(group)], max_tokens=max_tokens,
                             sampler=make_sampler(**SAMPLER), return_token_ids=True)
    return sum(len(ids) for ids in out.token_ids), t.s


def run_ours(model, tok, prompts, group, max_tokens) -> tuple[int, float]:
    from varro.engine.sampling.rollouts import PromptInput, sample_groups

    inputs = [PromptInput(str(i), p) for i, p in enumerate(prompts)]
    with Timer() as t:
        groups = sample_groups(model, tok, inputs, group, max_tokens, seed=0, **SAMPLER)
    return sum(len(r.completion_tokens) for g in groups for r in g), t.s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--loop-calls", type=int, default=32, help="generate calls timed for the loop")
    a = ap.parse_args()

    model, tok = load_bench_model()
    prompts = prompt_tokens(tok, a.prompts)
    shape = f"{a.prompts} prompts x {a.group} x {a.max_tokens} tokens"
    rates = {}
    warm = [prompts[0][:16]]
    for name, run in [
        ("loop", lambda ps, g, n, calls=a.loop_calls: run_loop(model, tok, ps, g, n, calls)),
        ("batch_generate", lambda ps, g, n: run_batch_generate(model, tok, ps, g, n)),
        ("ours", lambda ps, g, n: run_ours(model, tok, ps, g, n)),
    ]:
        mx.random.seed(0)
        run(warm, 2, 4)
        mx.random.seed(0)
        made, seconds = run(prompts, a.group, a.max_tokens)
        rates[name] = made / seconds
        note = f"{shape}; {made} tokens in {seconds:.1f} s"
        if name == "loop" and a.loop_calls < a.prompts * a.group:
            note += f" ({a.loop_calls} of the {a.prompts * a.group} calls)"
        emit(BENCH, f"{name}_tok_s", rates[name], "tok/s", note)
    emit(BENCH, "ours_vs_batch_generate", rates["ours"] / rates["batch_generate"], "x", "target >= 1")
    emit(BENCH, "ours_vs_loop", rates["ours"] / rates["loop"], "x", "target >= 10 with OpenBLAS")
    emit(BENCH, "batch_generate_vs_loop", rates["batch_generate"] / rates["loop"], "x")


if __name__ == "__main__":
    main()
