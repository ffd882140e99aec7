"""The policy of a run: the base model, its adapters, the trainer, resumed from the latest checkpoint.

`Policy.open` is how every application gets a model for day D: the base through
mlx-lm in its own precision, float32 LoRA layers, the newest complete checkpoint
dated before D restored, and the trainer handed AdamW and the GSPO loss. Its
precision and the sampler's truncation: docs/reliability.md, "The policy".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from varro.engine.run import checkpoints
from varro.engine.core.config import Config
from varro.engine.model.loading import apply_lora, base_weights_from, chat_prompt_tokens, load_model, quantized_modules
from varro.engine.model.distributed import World
from varro.engine.core.rollout import PromptInput, Rollout
from varro.engine.sampling.rollouts import sample_groups
from varro.engine.train.gspo import gspo_objective
from varro.engine.train.errors import TrainingError
from varro.engine.train.trainer import Trainer, make_optimizer


@dataclass
class Policy:
    model: nn.Module
    tokenizer: object
    trainer: Trainer
    config: Config
    run_path: Path
    checkpoint: str  # "base" or the day of the checkpoint it was restored from
    notes: list[str] = field(default_factory=list)  # checkpoints skipped as corrupt

    @classmethod
    def at_checkpoint(cls, run_path: Path, label: str, fallback: Config) -> "Policy":
        """The policy exactly at checkpoint `label` (with the config it was trained with), or the base with
        `fallback`. Raises CheckpointError when that checkpoint cannot be restored."""
        if label == "base":
            return cls.open(fallback, run_path, before_day="0000-01-01")
        cfg = checkpoints.trained_config(checkpoints.checkpoints_dir(run_path) / label)
        policy = cls.open(cfg, run_path, before_day=(date.fromisoformat(label) + timedelta(days=1)).isoformat())
        if policy.checkpoint != label:
            raise checkpoints.CheckpointError(f"checkpoint {label} could not be restored (got {policy.checkpoint})")
        return policy

    @classmethod
    def open(cls, config: Config, run_path: Path, before_day: str | None = None) -> "Policy":
        """Load the base model and restore the latest checkpoint dated before `before_day`. Raises
        LostCheckpointsError when there is none but the run's history says it wrote some."""
        import random

        checkpoints.require_not_lost(run_path, before_day)  # before the model loads: a deleted folder is no new run
        mx.random.seed(config.train.seed)
        np.random.seed(config.train.seed)
        random.seed(config.train.seed)
        model, tokenizer = load_model(config.model.model)
        reference = None
        if config.model.fine_tune == "lora":
            apply_lora(model, config.model)  # the base keeps its dtype; the adapters are float32
        elif config.model.fine_tune == "full":
            model_id = config.model.model
            refuse_quantized_full(model, model_id)
            model.set_dtype(mx.float32)
            reference = lambda: base_weights_from(model, model_id)  # noqa: E731
        else:
            raise ValueError(f"fine_tune must be 'lora' or 'full', got {config.model.fine_tune!r}")
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        trainer = Trainer(model, config.train, make_optimizer(config.train), gspo_objective(config.train),
                          pad_id=pad_id, reference=reference,
                          temperature=float(config.sampling.sampler_settings()["temp"]))
        label = "base"
        notes = []
        candidates = [p for p in checkpoints.list_checkpoints(run_path) if before_day is None or p.name < before_day]
        for latest in reversed(candidates):
            try:
                state = checkpoints.load_into(latest, model, trainer.optimizer)
            except checkpoints.CheckpointError as e:
                notes.append(f"WARNING: checkpoint {latest.name} is unusable ({e}); falling back to an older one")
                continue
            trainer.step = state.step
            trainer.rng.bit_generator.state = state.numpy_rng
            trainer.obey_config()
            label = latest.name
            break
        if notes:
            notes.append(f"resumed from {label}")
        return cls(model, tokenizer, trainer, config, Path(run_path), label, notes)

    def prompt_tokens(self, text: str) -> list[int]:
        return chat_prompt_tokens(self.tokenizer, text, self.config.model.enable_thinking)

    def sampling_settings(self) -> dict:
        s = self.config.sampling
        return {"profile": s.profile, "group_size": s.group_size, "max_tokens": s.max_tokens,
                **s.sampler_settings()}

    def sample(self, prompts: list[tuple[str, str]], seed: int | None = None, on_done=None,
               decode_batch: int = 0) -> list[list[Rollout]]:
        """G completions for each (prompt_id, text), with the run's sampler profile; `decode_batch` prompts'
        groups decode together (0: all; see rollouts.sample_groups)."""
        s = self.config.sampling
        knobs = s.sampler_settings()
        inputs = [PromptInput(pid, self.prompt_tokens(text)) for pid, text in prompts]
        return sample_groups(
            self.model,
            self.tokenizer,
            inputs,
            group_size=s.group_size,
            max_tokens=s.max_tokens,
            temp=float(knobs["temp"]),
            top_p=float(knobs["top_p"]),
            top_k=int(knobs["top_k"]),
            seed=seed,
            on_done=on_done,
            decode_batch=decode_batch,
        )

    def save(self, day: str, extra: dict | None = None) -> Path:
        """Write checkpoint `day`; from now on this policy is that checkpoint."""
        path = checkpoints.save_checkpoint(
            self.run_path,
            day,
            self.model,
            self.trainer.optimizer,
            self.trainer.step,
            self.trainer.rng,
            self.config,
            extra=extra,
        )
        self.checkpoint = day
        return path


def refuse_quantized_full(model: nn.Module, model_id: str) -> None:
    """Raise TrainingError when full fine-tuning is asked of a quantized base."""
    quantized = quantized_modules(model)
    if quantized:
        raise TrainingError(f"full fine-tuning cannot train the quantized model {model_id!r} ({len(quantized)} "
                            "quantized layers): use --fine-tune lora (QLoRA over the quantized base), or a "
                            "non-quantized (bf16 or float32) base")


def open_policy(cfg, run_path, before_day: str | None, world: World):
    """Rank 0 resumes from its checkpoints; every other rank receives rank 0's weights and state."""
    policy = Policy.open(cfg, run_path, before_day=before_day if world.is_main else "0000-01-01")
    if world.distributed:
        policy.model.update(world.broadcast_tree(policy.model.trainable_parameters()))
        policy.trainer.optimizer.state = world.broadcast_tree(policy.trainer.optimizer.state)
        meta = world.broadcast_json({"step": policy.trainer.step, "rng": policy.trainer.rng.bit_generator.state,
                                     "checkpoint": policy.checkpoint, "notes": policy.notes})
        policy.trainer.step = meta["step"]
        policy.trainer.rng.bit_generator.state = meta["rng"]
        policy.checkpoint, policy.notes = meta["checkpoint"], meta["notes"]
        mx.eval(policy.model.parameters(), policy.trainer.optimizer.state)
    policy.trainer.world = world
    return policy
