"""A real-shape decode step with the shared-prefix cache against mlx-lm's own (issue 28, sampling speed).

`sample_groups` on the float32 Qwen3-0.6B-shape model of bench/real_shape.py (built there), `--prompts`
prompts x 8 rows, greedy (so the sampler's cost is left out), three ways: `cascade` (the default: each
prompt's keys and values held once and attended in place, sampling/attention.py), `joined` (held once,
but every row's prompt and completion joined for mlx-lm's attention call, the default before 2026-12-07)
and `mlx_lm` (its BatchKVCache, a copy of the prompt per row). A decode step's time is the difference of
a `--tokens` run and a 2-token run (the same prefill) over the extra steps. Then what the joined path does
each step and layer, alone: concatenating every row's prefix and completion, and a plain copy of an array
that size (MLX's CPU copy rate).

Usage: scripts/env python bench/decode_cache.py [--prompts 4] [--tokens 12]
"""

from __future__ import annotations

import argparse
import time

import mlx.core as mx
from common import emit, no_eos, prompt_tokens
from real_shape import build
from varro.engine.core.rollout import PromptInput
from varro.engine.sampling import rollouts
from varro.engine.sampling.attention import use_cascade
from varro.engine.sampling.rollouts import sample_groups

GROUP = 8


def seconds(fn, repeats: int = 10) -> float:
    mx.eval(fn())
    start = time.perf_counter()
    for _ in range(repeats):
        mx.eval(fn())
    return (time.perf_counter() - start) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=12)
    args = ap.parse_args()
    from mlx_lm import load

    model, tok = load(str(build("f32")))
    no_eos(tok)
    prompts = [PromptInput(f"p{i}", t) for i, t in enumerate(prompt_tokens(tok, args.prompts))]
    rows = args.prompts * GROUP
    for path in ("cascade", "joined", "mlx_lm"):
        # the joined path: the same cache, its model's attention call left alone
        rollouts.use_cascade = use_cascade if path == "cascade" else (lambda model: False)

        def run(tokens: int) -> float:
            start = time.perf_counter()
            sample_groups(model, tok, prompts, GROUP, tokens, temp=0.0, share_prefix=path != "mlx_lm")
            return time.perf_counter() - start

        run(2)  # warm-up
        step = (run(args.tokens) - run(2)) / (args.tokens - 2)
        emit("decode_cache", f"step_s.{path}", step, "s",
             f"{rows} rows, greedy, a decode step at {args.tokens} tokens (prefill left out)")
    rollouts.use_cascade = use_cascade
    a = model.args
    width = len(prompts[0].tokens) + args.tokens
    prefix = mx.random.normal((args.prompts, a.num_key_value_heads, len(prompts[0].tokens), a.head_dim))
    own = mx.random.normal((rows, a.num_key_value_heads, args.tokens, a.head_dim))
    of_row = mx.array([j for j in range(args.prompts) for _ in range(GROUP)])
    joined = mx.random.normal((rows, a.num_key_value_heads, width, a.head_dim))
    mx.eval(prefix, own, joined)
    concat = seconds(lambda: mx.concatenate([prefix[of_row], own], axis=2))
    copy = seconds(lambda: joined + 0)
    emit("decode_cache", "concat_ms", concat * 1e3, "ms",
         f"one layer's keys (or values) of {rows} rows x {width} positions, as the joined path hands attention")
    emit("decode_cache", "copy_gbs", 2 * joined.nbytes / copy / 1e9, "GB/s",
         f"MLX elementwise copy of that array ({joined.nbytes / 1e6:.0f} MB read and written)")
    emit("decode_cache", "concat_per_step_s", concat * 2 * a.num_hidden_layers, "s",
         "keys and values, every layer: what the joined path adds to a decode step")


if __name__ == "__main__":
    main()
