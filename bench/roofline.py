"""The limit: memory bandwidth, the BLAS's matmul rate, our decode throughput as a fraction of the
bound they imply (batch 1 and batched), and a profile of one decode step.

Bound for decoding B sequences one token each per step (the roofline):
    step time >= max(step_bytes / bandwidth, B * flops_per_token / matmul_rate)
step_bytes is every float32 parameter (the tied embedding is read whole as the
output head) plus the KV cache; flops_per_token is 2 per matmul parameter plus
attention over the context; the matmul rate is the better of 1024^3 and 2048^3.

Our decode rate is taken through `varro.engine.sampling.rollouts.sample_groups` with prefill
excluded: the same prompts decoded to two lengths, rate = extra tokens / extra
time. Prompts are cut to 64 tokens to keep the prefill cheap (decode cost
hardly depends on it at these lengths).

The step profile splits one batched decode step: the model's forward pass with
its KV cache, the same without the cache, the output head with its
log-softmax, mlx-lm's sampler at our settings (temp 0.7, top-p 0.9,
top-k 40) and ours (`make_group_sampler`, the one `sample_groups` uses); plus
MLX's CPU exp rate, which the log-softmax, the SiLU and the samplers all pay
per element.

    scripts/env python bench/roofline.py
    VARRO_NO_OPENBLAS=1 scripts/env python bench/roofline.py
"""

from __future__ import annotations

import argparse
import threading
import time

from common import SAMPLER, Timer, emit, load_bench_model, param_count, prompt_tokens

BENCH = "roofline"
PROMPT_TOKENS = 64


def bandwidth_gbs(mib: int = 256, repeats: int = 5) -> float:
    """Best triad-like a = 3c + b over `mib` MiB arrays, 1 and 2 threads; GB/s (1e9 bytes)."""
    import numpy as np

    n = mib * 2**20 // 8
    best = 0.0
    for threads in (1, 2):
        parts = [(np.zeros(n // threads), np.ones(n // threads), np.full(n // threads, 2.0))
                 for _ in range(threads)]

        def triad(a, b, c):
            np.multiply(c, 3.0, out=a)  # reads c, writes a
            np.add(a, b, out=a)  # reads a and b, writes a

        for _ in range(repeats):
            workers = [threading.Thread(target=triad, args=p) for p in parts]
            with Timer() as t:
                for w in workers:
                    w.start()
                for w in workers:
                    w.join()
            moved = sum(5 * a.nbytes for a, _, _ in parts)
            best = max(best, moved / t.s / 1e9)
    return best


def seconds_per_call(fn, min_s: float = 0.5) -> float:
    """Mean wall time of fn() (which evaluates its result) after one warm-up call."""
    fn()
    reps = 0
    t0 = time.perf_counter()
    while True:
        fn()
        reps += 1
        if time.perf_counter() - t0 >= min_s:
            return (time.perf_counter() - t0) / reps


def matmul_gflops(m: int, k: int, n: int, min_s: float = 1.0) -> float:
    """float32 mx.matmul (m, k) @ (k, n) on the CPU; GFLOP/s."""
    import mlx.core as mx

    a = mx.random.normal((m, k))
    b = mx.random.normal((k, n))
    mx.eval(a, b)
    return 2.0 * m * k * n / seconds_per_call(lambda: mx.eval(a @ b), min_s) / 1e9


def decode_rate(model, tokenizer, prompts: list[list[int]], group: int, short: int, long: int) -> float:
    """Decode tokens/s of sample_groups, prefill excluded (two lengths, difference of times)."""
    from varro.engine.sampling.rollouts import PromptInput, sample_groups

    inputs = [PromptInput(str(i), p) for i, p in enumerate(prompts)]

    def run(n):
        with Timer() as t:
            groups = sample_groups(model, tokenizer, inputs, group, n, seed=0, **SAMPLER)
        return sum(len(r.completion_tokens) for g in groups for r in g), t.s

    run(short)  # warm-up
    n1, t1 = run(short)
    n2, t2 = run(long)
    return (n2 - n1) / (t2 - t1)


def model_costs(model, context: int) -> tuple[float, float, float]:
    """(weight bytes read per decode step, flops per token, KV-cache bytes per sequence) at `context`."""
    from mlx.utils import tree_flatten

    args = model.args
    params = param_count(model)
    norms = sum(v.size for k, v in tree_flatten(model.parameters()) if "norm" in k)
    attn_flops = 4.0 * args.num_hidden_layers * args.num_attention_heads * args.head_dim * context
    kv_bytes = 4.0 * 2 * args.num_hidden_layers * args.num_key_value_heads * args.head_dim * context
    return 4.0 * params, 2.0 * (params - norms) + attn_flops, kv_bytes


def step_profile(model, batch: int, context: int) -> dict[str, float]:
    """Milliseconds of the parts of one decode step at `batch` sequences and `context` tokens of cache."""
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache
    from mlx_lm.sample_utils import make_sampler

    cache = make_prompt_cache(model)
    model(mx.zeros((batch, context), dtype=mx.uint32), cache=cache)
    mx.eval([c.state for c in cache])
    x = mx.zeros((batch, 1), dtype=mx.uint32)

    def forward():
        mx.eval(model(x, cache=cache))
        for c in cache:
            c.offset -= 1  # keep the context fixed

    hidden = mx.random.normal((batch, 1, model.args.hidden_size))
    logits = mx.random.normal((batch, model.args.vocab_size))
    mx.eval(hidden, logits)
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    from varro.engine.sampling.rollouts import make_group_sampler

    sampler = make_sampler(**SAMPLER)
    ours = make_group_sampler(**SAMPLER)
    head = model.model.embed_tokens.as_linear
    return {
        "forward": 1e3 * seconds_per_call(forward),
        "forward_no_cache": 1e3 * seconds_per_call(lambda: mx.eval(model.model(x))),
        "head_logsoftmax": 1e3 * seconds_per_call(
            lambda: mx.eval(mx.logsumexp(head(hidden), axis=-1))),
        "sampler": 1e3 * seconds_per_call(lambda: mx.eval(sampler(logprobs))),
        "our_sampler": 1e3 * seconds_per_call(lambda: mx.eval(ours(logprobs))),
    }


def exp_ns() -> float:
    """Nanoseconds per element of MLX's float32 exp on the CPU (4M elements)."""
    import mlx.core as mx

    a = mx.random.normal((4 * 2**20,))
    mx.eval(a)
    return 1e9 * seconds_per_call(lambda: mx.eval(mx.exp(a))) / a.size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--short", type=int, default=8, help="short decode length")
    ap.add_argument("--long", type=int, default=40, help="long decode length, batched")
    ap.add_argument("--long1", type=int, default=72, help="long decode length, batch 1")
    a = ap.parse_args()

    bw = bandwidth_gbs()
    emit(BENCH, "memory_bandwidth", bw, "GB/s", "numpy a = 3c + b, 256 MiB arrays, best of 1 and 2 threads")
    rates = {}
    for shape in [(1024, 1024, 1024), (2048, 2048, 2048), (32, 384, 3584), (1, 384, 3584)]:
        rates[shape] = matmul_gflops(*shape)
        emit(BENCH, "matmul_{}x{}x{}".format(*shape), rates[shape], "GFLOP/s", "float32 mx.matmul")
    peak = max(rates[(1024, 1024, 1024)], rates[(2048, 2048, 2048)])
    emit(BENCH, "exp_rate", exp_ns(), "ns/element", "float32 mx.exp, 4M elements")

    model, tok = load_bench_model()
    prompts = [p[:PROMPT_TOKENS] for p in prompt_tokens(tok, a.prompts)]
    for label, ps, group, long in [("batch1", prompts[:1], 1, a.long1),
                                   (f"batch{a.prompts * a.group}", prompts, a.group, a.long)]:
        b = len(ps) * group
        ctx = PROMPT_TOKENS + (a.short + long) // 2
        weight_bytes, flops, kv_bytes = model_costs(model, ctx)
        step_bytes = weight_bytes + b * kv_bytes
        t_bytes, t_flops = step_bytes / (bw * 1e9), b * flops / (peak * 1e9)
        bound = b / max(t_bytes, t_flops)
        limit = "bandwidth" if t_bytes >= t_flops else "matmul rate"
        emit(BENCH, f"{label}_bound", bound, "tok/s", f"{limit}-bound: {step_bytes / 1e6:.0f} MB/step, "
             f"{flops / 1e6:.0f} MFLOP/token at context {ctx}, {peak:.0f} GFLOP/s")
        rate = decode_rate(model, tok, ps, group, a.short, long)
        emit(BENCH, f"{label}_decode", rate, "tok/s", "sample_groups, prefill excluded")
        emit(BENCH, f"{label}_fraction", rate / bound, "x bound")
        prof = step_profile(model, b, ctx)
        for part, ms in prof.items():
            emit(BENCH, f"{label}_step_{part}", ms, "ms", f"one decode step, {b} sequences")
        emit(BENCH, f"{label}_step_sampler_share", prof["sampler"] / (prof["forward"] + prof["sampler"]), "x",
             "mlx-lm's sampler / (forward + sampler)")
        emit(BENCH, f"{label}_step_our_sampler_share", prof["our_sampler"] / (prof["forward"] + prof["our_sampler"]),
             "x", "our sampler / (forward + sampler)")


if __name__ == "__main__":
    main()
