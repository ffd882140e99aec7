"""How far the sampler's distribution is from the trainer's pi_old, per token and per sequence.

The sampler draws from the policy at temperature T truncated to its top-k /
top-p candidates; the trainer's passes use the policy at T over the whole
vocabulary. This samples the demo's first day of Varro prompts with each
profile from the warm demo model (run `scripts/demo` once to build it) and
prints, per profile, the mean per-token gap log q - log pi_old (T), the same
gap against a temperature-1 pass (what the trainer used before), and the
truncated importance weight exp(-gap_i) across sequences.

Usage: scripts/env python bench/sampler_gap.py [--model DIR] [--prompts 16]
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def main() -> None:
    from varro.engine.loop.demo import demo_config, tiny_model_dir
    from varro.engine.core.paths import SAMPLE_DIR
    from varro.forecast.task import build_prompt
    from varro.engine.run.policy import Policy
    from varro.engine.train.batching import make_chunks

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(tiny_model_dir().with_name("tiny-qwen3-warm")))
    ap.add_argument("--prompts", type=int, default=16)
    args = ap.parse_args()
    rows = [json.loads(line) for line in open(SAMPLE_DIR / "headlines.jsonl", encoding="utf-8")]
    prompts = [(f"p{i}", build_prompt(r["title"], r["summary"])) for i, r in enumerate(rows[: args.prompts])]
    print(f"model {args.model}, {len(prompts)} prompts x 8 completions, up to 96 tokens")
    print(f"{'profile':>8} {'T':>4} {'gap/token':>10} {'gap vs T=1':>11} {'w mean':>7} {'w std':>7} {'w min':>7}")
    for profile in ("tight", "default", "loose"):
        cfg = demo_config(None)
        cfg.model.model = args.model
        cfg.sampling.profile = profile
        pol = Policy.open(cfg, "/nonexistent-run")
        groups = pol.sample(prompts, seed=0)
        rollouts = [r for g in groups for r in g]
        for r in rollouts:
            r.advantage = 0.0
        chunks = make_chunks(rollouts)
        per_seq, per_seq_t1 = [], []
        for temp, out in ((pol.trainer.temperature, per_seq), (1.0, per_seq_t1)):
            pol.trainer.temperature = temp
            for c, logp in zip(chunks, pol.trainer._pass_logprobs(chunks, chunks)):
                logp = np.array(logp)
                for i, r in enumerate(c.source):
                    n = len(r.completion_tokens)
                    out.append(float(np.mean(np.array(r.sampler_logprobs) - logp[i, :n])))
        gap = np.array(per_seq)
        w = np.exp(-gap)
        print(f"{profile:>8} {cfg.sampling.sampler_settings()['temp']:>4} {gap.mean():>10.4f} "
              f"{np.mean(per_seq_t1):>11.4f} {w.mean():>7.3f} {w.std():>7.3f} {w.min():>7.3f}")


if __name__ == "__main__":
    main()
