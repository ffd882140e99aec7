"""The GSPO training loop over one day's scored rollout groups.

Objective (see varro.gspo for the exact formula): group-normalised advantages,
a length-normalised sequence-level importance ratio s_i = pi_theta(y_i|x) /
pi_old(y_i|x) ** (1/|y_i|), clipped to [1 - 3e-4, 1 + 4e-4], the loss averaged
per sequence, plus beta times the per-sequence k3 KL to the base model.

How a day's update runs:
1. Rewards -> advantages per group; groups whose rewards are all equal are dropped.
2. pi_old: one float32 forward pass over prompt+completion for every kept
   rollout, before any update, with the policy that sampled them (the latest
   checkpoint). The reference log-probs come from the same weights with the
   LoRA adapters switched off (scale 0), so no second model is held in memory.
   With full fine-tuning the base weights are read back from disk for that pass.
3. The shuffled rollouts are split into `minibatches` parts and each part takes
   one AdamW step, so every part after the first is off-policy: the ratio moves
   away from 1 and the clip acts (the clip fraction is logged per step).
4. A non-finite loss or gradient norm skips that step, keeps the weights, and is
   recorded in the step row.

Departures from the paper: the KL leash (the paper has none); the sequence
ratio is taken against log-probs from a full forward pass, not the sampler's.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from .config import TrainConfig
from .faults import failpoint
from .gspo import group_advantages, gspo_loss
from .models import adapters_off, lora_modules
from .distributed import SOLO, World
from .rollouts import Rollout

LossFn = Callable[..., tuple[mx.array, dict[str, mx.array]]]


class TrainingError(RuntimeError):
    pass


@dataclass
class Minibatch:
    inputs: mx.array  # (N, L) prompt+completion minus the last token, right-padded
    targets: mx.array  # (N, L) the next token at each position
    mask: mx.array  # (N, L) 1.0 on completion tokens
    advantages: mx.array  # (N,)
    rewards: np.ndarray  # (N,)
    old_logp: mx.array | None = None  # (N, L)
    ref_logp: mx.array | None = None  # (N, L)
    share: float = 1.0  # this rank's sequences x ranks / the minibatch's sequences (1 when alone)
    total: int = 0  # sequences in the whole minibatch, over all ranks


def make_minibatch(rollouts: list[Rollout], pad_id: int = 0) -> Minibatch:
    """Pack rollouts into right-padded (N, L) arrays; the mask covers completion tokens only."""
    seqs = [r.prompt_tokens + r.completion_tokens for r in rollouts]
    width = max(len(s) for s in seqs) - 1
    inputs = np.full((len(seqs), width), pad_id, dtype=np.int32)
    targets = np.full((len(seqs), width), pad_id, dtype=np.int32)
    mask = np.zeros((len(seqs), width), dtype=np.float32)
    for i, (r, s) in enumerate(zip(rollouts, seqs)):
        n = len(s) - 1
        inputs[i, :n] = s[:-1]
        targets[i, :n] = s[1:]
        mask[i, len(r.prompt_tokens) - 1 : n] = 1.0
    return Minibatch(
        inputs=mx.array(inputs),
        targets=mx.array(targets),
        mask=mx.array(mask),
        advantages=mx.array([r.advantage for r in rollouts], dtype=mx.float32),
        rewards=np.array([r.reward for r in rollouts], dtype=np.float64),
    )


def token_logprobs(model: nn.Module, inputs: mx.array, targets: mx.array) -> mx.array:
    """log pi(targets | inputs) per position in float32: (N, L) -> (N, L)."""
    logits = model(inputs).astype(mx.float32)  # (N, L, V)
    picked = mx.take_along_axis(logits, targets[..., None], axis=-1).squeeze(-1)  # (N, L)
    return picked - mx.logsumexp(logits, axis=-1)


@contextlib.contextmanager
def base_weights_from(model: nn.Module, model_id: str) -> Iterator[None]:
    """Full fine-tuning: swap the base weights in from disk for the reference pass."""
    from mlx_lm.utils import load_model
    from mlx_lm.utils import _download

    current = tree_flatten(model.parameters())
    base, _ = load_model(_download(model_id))
    base.set_dtype(mx.float32)
    try:
        model.update(base.parameters())
        yield
    finally:
        model.update(tree_unflatten(current))
        del base


class Trainer:
    """Holds the policy, its optimizer and the step counter; `train_day` runs steps 1-4 above."""

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        pad_id: int = 0,
        reference: Callable[[], contextlib.AbstractContextManager] | None = None,
        loss: LossFn = gspo_loss,
        world: World = SOLO,
    ):
        self.world = world
        self.model = model
        self.cfg = cfg
        self.pad_id = pad_id
        self.loss = loss
        if reference is None and lora_modules(model):
            reference = lambda: adapters_off(model)  # noqa: E731
        self.reference = reference
        self.optimizer = optim.AdamW(learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay)
        self.optimizer.init(model.trainable_parameters())
        self.step = 0
        self.rng = np.random.default_rng(cfg.seed)
        self._value_and_grad = nn.value_and_grad(model, self._loss_on)

    def _loss_on(self, mb: Minibatch):
        logp = token_logprobs(self.model, mb.inputs, mb.targets)
        loss, metrics = self.loss(
            logp,
            mb.old_logp,
            mb.ref_logp,
            mb.mask,
            mb.advantages,
            eps_low=self.cfg.eps_low,
            eps_high=self.cfg.eps_high,
            beta=self.cfg.beta,
        )
        # Each rank's mean is weighted by its share, so averaging over ranks gives the global mean.
        return loss * mb.share, metrics

    def prepare(self, groups: list[list[Rollout]]) -> list[Minibatch]:
        """Steps 1-2: advantages, drop flat groups, split, and the pi_old / reference passes."""
        if any(r.reward is None for g in groups for r in g):
            raise TrainingError("every rollout needs a reward before training")
        kept: list[Rollout] = []
        for g in groups:
            adv = group_advantages([r.reward for r in g], len(g))
            for r, a in zip(g, adv):
                r.advantage = float(a)
            if np.any(adv != 0.0):
                kept.extend(g)
        if not kept:
            return []
        order = self.rng.permutation(len(kept))
        w = self.world
        if len(kept) < w.size:
            raise TrainingError(f"{len(kept)} sequences cannot be shared by {w.size} ranks")
        parts = np.array_split(order, min(self.cfg.minibatches, len(kept) // w.size))
        batches = []
        for part in parts:
            mine = part[w.rank :: w.size]  # the same global minibatches as alone, split over the ranks
            mb = make_minibatch([kept[i] for i in mine], self.pad_id)
            mb.share, mb.total = len(mine) * w.size / len(part), len(part)
            batches.append(mb)
        for mb in batches:
            mb.old_logp = mx.stop_gradient(token_logprobs(self.model, mb.inputs, mb.targets))
            mx.eval(mb.old_logp)
        if self.cfg.beta != 0.0:
            if self.reference is None:
                raise TrainingError("beta > 0 needs a reference: LoRA layers or base weights")
            with self.reference():
                for mb in batches:
                    mb.ref_logp = mx.stop_gradient(token_logprobs(self.model, mb.inputs, mb.targets))
                    mx.eval(mb.ref_logp)
        return batches

    def train_day(self, groups: list[list[Rollout]], on_step: Callable[[int], None] | None = None,
                  kl_max: float | None = None) -> list[dict]:
        """Train on the day's scored groups; returns one row per optimizer step (see db `steps`).

        With `kl_max`, the day stops after the first step whose KL exceeds it (the
        caller then discards the day's weights: see varro.guards).
        """
        rows = []
        batches = self.prepare(groups)
        for k, mb in enumerate(batches):
            rows.append(self._update(mb, k))
            if on_step is not None:
                on_step(1)
            if kl_max is not None and rows[-1]["kl"] > kl_max:
                break
        return rows

    def _update(self, mb: Minibatch, k: int) -> dict:
        mx.reset_peak_memory()
        tic = time.perf_counter()
        (loss, metrics), grads = self._value_and_grad(mb)
        if self.world.distributed:
            from mlx.nn.utils import average_gradients

            grads = average_gradients(grads, group=self.world.group)
            n = mx.array(mb.inputs.shape[0] / mb.total, dtype=mx.float32)
            loss = self.world.all_sum(loss) / self.world.size
            metrics = {k: self.world.all_sum(v * n) for k, v in metrics.items()}
        grads, grad_norm = optim.clip_grad_norm(grads, self.cfg.grad_clip)
        mx.eval(loss, metrics, grad_norm)
        loss_v, norm_v = loss.item(), grad_norm.item()
        skip_reason = None
        if not math.isfinite(loss_v):
            skip_reason = f"non-finite loss {loss_v}"
        elif not math.isfinite(norm_v):
            skip_reason = f"non-finite gradient norm {norm_v}"
        else:
            self.optimizer.update(self.model, grads)
            mx.eval(self.model.trainable_parameters(), self.optimizer.state)
            failpoint("train.step")
        self.step += 1
        return {
            "step": self.step,
            "minibatch": k,
            "sequences": mb.total or int(mb.inputs.shape[0]),
            "loss": loss_v if math.isfinite(loss_v) else None,
            "kl": metrics["kl"].item(),
            "clip_fraction": metrics["clip_fraction"].item(),
            "ratio_mean": metrics["ratio_mean"].item(),
            "reward_mean": self._global_mean(mb.rewards),
            "reward_std": float(np.sqrt(max(0.0, self._global_mean(mb.rewards ** 2)
                                             - self._global_mean(mb.rewards) ** 2))),
            "grad_norm": norm_v if math.isfinite(norm_v) else None,
            "learning_rate": float(self.optimizer.learning_rate.item()),
            "duration_ms": (time.perf_counter() - tic) * 1000.0,
            "peak_memory_mb": mx.get_peak_memory() / 1e6,
            "skipped": int(skip_reason is not None),
            "skip_reason": skip_reason,
        }

    def _global_mean(self, values: np.ndarray) -> float:
        """The mean of `values` over the whole minibatch, across ranks."""
        local = mx.array([float(values.sum()), float(len(values))])
        total = np.array(self.world.all_sum(local))
        return float(total[0] / total[1])

