"""One GRPO iteration of mlx-rl (the second peer), run inside bench/.venv-mlxrl by bench/real_shape.py.

Set up the way `mlx_rl.train` runs a step: `load_policy` (the base frozen,
LoRA on the last `lora_layers` blocks, its reference being the same weights
with the adapters' scales zeroed), `rollout_groups` with its defaults (each
group's prompt prefilled once and its KV cache cloned per member, sampling at
temperature 1 without top-k / top-p: its rule for training rollouts), the
rewards, `group_advantages` and `active_groups`, then `update_policy` (old and
reference log-probs recomputed teacher-forced, the clipped objective
micro-batched at its default of 4 sequences, one Adam step). LoRA rank, scale,
layers and the wrapped projections (every linear layer of a block) are ours.
EOS is removed from the tokenizer so completions run to max_tokens (mlx-rl
falls back to the tokenizer's own EOS id; `completion_tokens` says how many
were made).

The reward is the one our side of bench/real_shape.py uses (the share of the
digit 7 in the text): mlx-rl skips the update of a group whose rewards are all
equal, and a random model's distinct-word share is 1.0 for every completion.

Input: a JSON spec file (argv[1]); output: one JSON object on the last stdout line.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402
import mlx.optimizers as optim  # noqa: E402
import numpy as np  # noqa: E402
from mlx_rl.config import LoraConfig, TrainConfig  # noqa: E402
from mlx_rl.engine import rollout_groups  # noqa: E402
from mlx_rl.grpo import active_groups, group_advantages, grpo_objective, token_logprobs  # noqa: E402
from mlx_rl.models import load_policy  # noqa: E402
from mlx_rl.rollout import Rollout  # noqa: E402
from mlx_rl.train import update_policy  # noqa: E402

from common import blas, no_eos  # noqa: E402

BLOCK_LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                 "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def digit_share(text: str) -> float:
    return text.count("7") / max(len(text), 1)


def run(spec: dict) -> dict:
    cfg = TrainConfig(model=spec["model"], group_size=spec["group"], max_new_tokens=spec["max_tokens"],
                      lora=LoraConfig(rank=spec["lora_rank"], scale=spec["lora_scale"],
                                      num_layers=spec["lora_layers"], keys=BLOCK_LINEARS))
    mx.random.seed(cfg.seed)
    model, tokenizer, _ = load_policy(cfg.model, cfg.lora, cfg.activation_headroom_gb)
    no_eos(tokenizer)
    pad_id = tokenizer.eos_token_id
    optimizer = optim.Adam(learning_rate=cfg.lr)

    def loss_fn(model, inp, tgt, mask, old_lp, ref_lp, adv, denom):
        return grpo_objective(token_logprobs(model(inp), tgt), old_lp, ref_lp, adv, mask, denom, cfg.clip_eps,
                              cfg.kl_coef)

    loss_and_grad = nn.value_and_grad(model, loss_fn)

    def iteration(prompts: list[list[int]], max_tokens: int) -> dict:
        tic = time.perf_counter()
        groups, _ = rollout_groups(model, tokenizer, prompts, cfg.group_size, max_tokens, cfg.temperature)
        sampled = time.perf_counter()
        rollouts = []
        for prompt, group in zip(prompts, groups):
            for comp in group:
                text = tokenizer.decode(comp.tokens)
                rollouts.append(Rollout(prompt_tokens=list(prompt), completion_tokens=comp.tokens,
                                        sampling_logprobs=comp.logprobs, text=text, reward=digit_share(text)))
        rewards = np.array([r.reward for r in rollouts], dtype=np.float32).reshape(-1, cfg.group_size)
        advantages = np.array(group_advantages(mx.array(rewards), cfg.normalize_std)).reshape(-1)
        active = np.repeat(np.array(active_groups(mx.array(rewards))), cfg.group_size)
        keep = np.flatnonzero(active)
        if len(keep):
            update_policy(model, optimizer, loss_and_grad, [rollouts[i] for i in keep], advantages[keep], cfg,
                          pad_id)
        done = time.perf_counter()
        return {"iteration_s": done - tic, "sampling_s": sampled - tic, "updated_rows": int(len(keep)),
                "completion_tokens": sum(len(r.completion_tokens) for r in rollouts)}

    iteration([p[:16] for p in spec["prompts"]], 4)  # warm-up: short prompts, 4 tokens
    mx.clear_cache()
    mx.reset_peak_memory()
    out = iteration(spec["prompts"], spec["max_tokens"])
    out["peak_memory_gb"] = mx.get_peak_memory() / 1e9
    out["blas"] = blas()
    out["trainer"] = f"mlx-rl {spec['mlxrl_commit'][:7]}, micro-batch {cfg.micro_batch}, temperature {cfg.temperature}"
    return out


if __name__ == "__main__":
    result = run(json.loads(Path(sys.argv[1]).read_text()))
    print(json.dumps(result))
