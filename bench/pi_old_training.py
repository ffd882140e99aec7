"""What an error in pi_old does to one day's training, against a harmless float32 reordering of it.

Samples `--prompts` sample headlines x 8 completions (tight profile, up to `--tokens` tokens) from a
float32 model (default SmolLM2-135M-Instruct), scores them with the tests' toy reward, then trains one
day (`train_day`, the default recipe: 4 minibatches, LoRA on 16 blocks, learning rate 1e-5) from the same
weights and shuffle once per pi_old:

  pass         the trainer's own pass over every row (the reference run)
  reordered    the same pass a row at a time (PASS_BYTES 1): a harmless float32 reordering
  sampler      the sampler's stored values on every row (`auto` with no prompt checked)
  sampler-old  the same from a second sampling with the sampler's normaliser as it was before
               logprob_head.chunked_logsumexp (one float32 mx.logsumexp over the row)
  offset-1e-5  the pass's values with every sequence shifted by +-1e-5 per token (random sign): the
               worst the 1e-5 tolerance lets through
  offset-1e-4  the same at +-1e-4, the worst a 1e-4 tolerance would let through

and prints each run's per-step differences from the reference (loss, clip fraction, ratio mean, grad
norm) and the distance of its final adapters from the reference's, relative to the reference's own
update from the start (|theta - theta_pass| / |theta_pass - theta_0|).

Usage: scripts/env python bench/pi_old_training.py [--model DIR] [--prompts 4] [--tokens 40]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, SAMPLE_HEADLINES  # noqa: E402

COMMON = frozenset({"the", "of", "to", "in", "and", "for", "on", "a"})
METRICS = ("loss", "clip_fraction", "ratio_mean", "grad_norm")


def adapters(model) -> np.ndarray:
    from mlx.utils import tree_flatten

    params = tree_flatten(model.trainable_parameters())
    return np.concatenate([np.array(v, dtype=np.float64).ravel() for _, v in params])


def train(cfg, run: Path, groups, pi_old: str, reorder: bool = False):
    """One day from the checkpoint's weights: (step rows, final adapters, start adapters)."""
    from varro.engine.model import memory as memory_module
    from varro.engine.run.policy import Policy

    cfg = copy.deepcopy(cfg)
    cfg.train.pi_old = pi_old
    cfg.train.pi_old_check_prompts = 0  # "auto" takes the stored values on every row, unchecked
    pol = Policy.open(cfg, run)
    start = adapters(pol.model)
    if reorder:
        inner = pol.trainer._rows_logprobs

        def one_row_at_a_time(passes):
            saved, memory_module.PASS_BYTES = memory_module.PASS_BYTES, 1
            try:
                return inner(passes)
            finally:
                memory_module.PASS_BYTES = saved

        pol.trainer._rows_logprobs = one_row_at_a_time
    rows = pol.trainer.train_day(copy.deepcopy(groups))
    return rows, adapters(pol.model), start


def main() -> None:
    import mlx.core as mx

    from varro.engine.sampling import rollouts
    from varro.engine.core.config import Config
    from varro.engine.run.policy import Policy
    from support.toy import toy_reward
    from varro.engine.train.batching import make_chunks
    from varro.forecast.task import build_prompt

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(REPO / "data" / "models" / "smollm2-135m-instruct"))
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=40)
    args = ap.parse_args()
    cfg = Config()
    cfg.model.model = args.model
    cfg.sampling.max_tokens = args.tokens
    cfg.train.kl_max, cfg.train.entropy_min_share = 1e9, 0.0  # measure, never stop the day
    heads = [json.loads(line) for line in SAMPLE_HEADLINES.read_text(encoding="utf-8").splitlines()[: args.prompts]]
    prompts = [(f"p{i}", build_prompt(h["title"], h.get("summary"))) for i, h in enumerate(heads)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pol = Policy.open(cfg, tmp / "sample")
        groups = pol.sample(prompts, seed=0)
        for g in groups:
            for r in g:
                r.reward = toy_reward(r.text, COMMON) + 0.01 * len(r.completion_tokens)
        plain = rollouts.chunked_logsumexp
        rollouts.chunked_logsumexp = lambda z: mx.logsumexp(z, axis=-1)
        old = [r for g in pol.sample(prompts, seed=0) for r in g]
        rollouts.chunked_logsumexp = plain
        rows = [r for g in groups for r in g]
        assert [r.completion_tokens for r in rows] == [r.completion_tokens for r in old]
        for r in rows:
            r.advantage = 0.0
        passes = make_chunks(rows)
        by_row = pol.trainer._rows_logprobs(passes)
        del pol

        def variant(values):
            out = copy.deepcopy(groups)
            for g in out:
                for r in g:
                    r.policy_logprobs = values(r)
            return out

        key = lambda r: (r.prompt_id, r.group_index)  # noqa: E731

        def seq_gap(values):
            return max(abs(np.mean(np.float64(values[key(r)])) - np.mean(np.float64(pass_values[key(r)])))
                       for r in rows)

        rng = np.random.default_rng(0)
        sign = {(r.prompt_id, r.group_index): float(rng.choice([-1.0, 1.0])) for r in rows}
        pass_values = {(r.prompt_id, r.group_index): np.array(by_row[id(r)]).tolist() for r in rows}
        old_values = {(r.prompt_id, r.group_index): r.policy_logprobs for r in old}
        runs = {
            "pass": train(cfg, tmp / "a", groups, "pass"),
            "reordered": train(cfg, tmp / "b", groups, "pass", reorder=True),
            "sampler": train(cfg, tmp / "c", groups, "auto"),
            "sampler-old": train(cfg, tmp / "d", variant(lambda r: old_values[key(r)]), "auto"),
            "offset-1e-5": train(cfg, tmp / "f", variant(
                lambda r: [v + 1e-5 * sign[key(r)] for v in pass_values[key(r)]]), "auto"),
            "offset-1e-4": train(cfg, tmp / "e", variant(
                lambda r: [v + 1e-4 * sign[key(r)] for v in pass_values[key(r)]]), "auto"),
        }
    ref_rows, ref_final, start = runs["pass"]
    print(f"{Path(args.model).name}: {len(rows)} rows, {len(ref_rows)} steps; reference run per step:")
    for k in METRICS:
        print(f"  {k:14s} " + " ".join(f"{r[k]:+.6e}" for r in ref_rows))
    update = np.linalg.norm(ref_final - start)
    print(f"  |theta_pass - theta_0| = {update:.3e}")
    print(f"{'run':12s} {'source':8s} {'gap':>8s} " + " ".join(f"{'max d ' + k:>16s}" for k in METRICS)
          + f" {'weights':>9s}")
    gaps = {"reordered": float("nan"), "sampler": seq_gap({key(r): r.policy_logprobs for r in rows}),
            "sampler-old": seq_gap(old_values), "offset-1e-5": 1e-5, "offset-1e-4": 1e-4}
    for name, (rs, final, _) in runs.items():
        if name == "pass":
            continue
        d = {k: max(abs((a[k] or 0.0) - (b[k] or 0.0)) for a, b in zip(rs, ref_rows)) for k in METRICS}
        print(f"{name:12s} {rs[0]['pi_old_source'] or '-':8s} {gaps[name]:8.1e} "
              + " ".join(f"{d[k]:16.2e}" for k in METRICS) + f" {np.linalg.norm(final - ref_final) / update:9.2e}")
        print(f"{'':12s} ratio_mean per step: " + " ".join(f"{r['ratio_mean']:.7f}" for r in rs)
              + "  clip: " + " ".join(f"{r['clip_fraction']:.3f}" for r in rs))


if __name__ == "__main__":
    main()
