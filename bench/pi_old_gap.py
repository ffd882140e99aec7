"""How far the sampler's stored pi_old (`Rollout.policy_logprobs`) is from the trainer's own pass, per
sequence mean and per token, beside the pass against itself at two batchings (its float32 floor).

Samples the first `--prompts` sample headlines (the Varro prompt), `--group` completions each of up to
`--tokens` tokens with the tight profile, from a float32 model (default SmolLM2-135M-Instruct as
scripts/setup converts it), then runs the pi_old pass (`Trainer._pass_logprobs`) over them once with
each prompt's rows together and once a row at a time. `--plain-lse` makes the sampler take its
normaliser as it did before: one float32 log-sum-exp over the whole row (mx.logsumexp), which on the
CPU adds the row's exps in order (see logprob_head.chunked_logsumexp).

Usage: scripts/env python bench/pi_old_gap.py [--model DIR] [--prompts 4] [--group 8] [--tokens 60]
       [--plain-lse]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, SAMPLE_HEADLINES  # noqa: E402


def gaps(a: list[np.ndarray], b: list[np.ndarray]) -> str:
    seq = np.array([abs(np.float64(x).mean() - np.float64(y).mean()) for x, y in zip(a, b)])
    tok = max(float(np.abs(np.float64(x) - np.float64(y)).max()) for x, y in zip(a, b))
    return f"seq max {seq.max():.2e} median {np.median(seq):.2e}, token max {tok:.2e}"


def main() -> None:
    import mlx.core as mx

    from varro.engine.sampling import rollouts
    from varro.engine.core.config import Config
    from varro.engine.run.policy import Policy
    from varro.engine.train.batching import make_chunks
    from varro.forecast.task import build_prompt

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(REPO / "data" / "models" / "smollm2-135m-instruct"))
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=60)
    ap.add_argument("--plain-lse", action="store_true", help="the sampler's normaliser before the fix")
    args = ap.parse_args()
    if args.plain_lse:
        rollouts.chunked_logsumexp = lambda z: mx.logsumexp(z, axis=-1)
    cfg = Config()
    cfg.model.model = args.model
    cfg.sampling.profile, cfg.sampling.group_size, cfg.sampling.max_tokens = "tight", args.group, args.tokens
    lines = SAMPLE_HEADLINES.read_text(encoding="utf-8").splitlines()[: args.prompts]
    heads = [json.loads(line) for line in lines]
    prompts = [(f"p{i}", build_prompt(h["title"], h.get("summary"))) for i, h in enumerate(heads)]
    with tempfile.TemporaryDirectory() as run:
        pol = Policy.open(cfg, Path(run) / "run")
        tic = time.perf_counter()
        rows = [r for g in pol.sample(prompts, seed=0) for r in g]
        sampled = time.perf_counter() - tic
        for r in rows:
            r.advantage = 0.0
        chunks = make_chunks(rows)
        rows = [r for c in chunks for r in c.source]
        stored = [np.array(r.policy_logprobs) for r in rows]
        batched = [np.array(lp[i, : len(r.completion_tokens)])
                   for c, lp in zip(chunks, pol.trainer._pass_logprobs(chunks, chunks)) for i, r in enumerate(c.source)]
        alone = []
        for r in rows:
            one = make_chunks([r])
            alone.append(np.array(pol.trainer._pass_logprobs(one, one)[0][0]))
    lengths = [len(s) for s in stored]
    print(f"{Path(args.model).name}: {len(rows)} rows of {min(lengths)}-{max(lengths)} tokens (mean "
          f"{np.mean(lengths):.0f}), sampled in {sampled:.0f} s; sampler normaliser "
          f"{'mx.logsumexp (before)' if args.plain_lse else 'chunked_logsumexp'}")
    print(f"sampler vs pass:             {gaps(stored, batched)}")
    print(f"pass vs pass a row at a time: {gaps(batched, alone)}")


if __name__ == "__main__":
    main()
