"""The offline demo: the engine's daily cycle on the tiny model and the toy reward.

Each simulated day opens the policy from the previous day's checkpoint, samples
groups for the day's prompts, scores them, takes the GSPO updates, and writes
that day's checkpoint. Held-out eval prompts are sampled and scored but never
trained on. A day whose checkpoint exists is skipped, so a re-run does no work
twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import sqlite_utils

from . import checkpoints, db as dbm
from .config import Config, home_dir
from .models import write_tiny_model
from .policy import Policy
from .toy import TOY_PROMPTS, toy_reward


def tiny_model_dir(home: str | Path | None = None) -> Path:
    return home_dir(home) / "data" / "models" / "tiny-qwen3"


def ensure_tiny_model(home: str | Path | None = None, seed: int = 0) -> Path:
    """The tiny model under <home>/data/models, written on first use."""
    path = tiny_model_dir(home)
    if not (path / "model.safetensors").is_file():
        write_tiny_model(path, seed=seed)
    return path


def demo_config(model_path: Path | None) -> Config:
    """The demo's recipe: short completions and a high learning rate so the tiny model moves."""
    cfg = Config()
    if model_path is not None:
        cfg.model.model = str(model_path)
    cfg.model.lora_layers = 2
    cfg.model.lora_rank = 8
    cfg.sampling.group_size = 8
    cfg.sampling.max_tokens = 24
    cfg.sampling.profile = "default"
    cfg.train.learning_rate = 5e-3
    return cfg


@dataclass
class DayResult:
    day: str
    reward_mean: float
    eval_reward_mean: float
    steps: int
    clip_fraction: float
    skipped: bool


def toy_day(db: sqlite_utils.Database, cfg: Config, run: str, run_path: Path, day: str) -> DayResult:
    """One toy day: sample, score, train, checkpoint. Skips a day that already has its checkpoint."""
    if (checkpoints.checkpoints_dir(run_path) / day / checkpoints.METADATA).is_file():
        return DayResult(day, float("nan"), float("nan"), 0, float("nan"), skipped=True)
    prompts = [
        {"id": f"toy:{i}", "app": "toy", "day": day, "split": "eval" if i == len(TOY_PROMPTS) - 1 else "train",
         "text": text, "source_json": {"toy": True}}
        for i, text in enumerate(TOY_PROMPTS)
    ]
    dbm.upsert_prompts(db, prompts)
    policy = Policy.open(cfg, run_path, before_day=day)
    seed = cfg.train.seed * 100_003 + date.fromisoformat(day).toordinal()
    groups = policy.sample([(p["id"], p["text"]) for p in prompts], seed=seed)
    dbm.insert_rollouts(db, run, day, policy.checkpoint, groups, policy.sampling_settings())
    for g in groups:
        for r in g:
            r.reward = toy_reward(r.text)
            r.components = {"target_words": r.reward}
    eval_ids = {p["id"] for p in prompts if p["split"] == "eval"}
    train_groups = [g for g in groups if g[0].prompt_id not in eval_ids]
    eval_groups = [g for g in groups if g[0].prompt_id in eval_ids]
    rows = policy.trainer.train_day(train_groups)
    dbm.save_scores(db, groups)
    dbm.insert_steps(db, run, day, rows)
    policy.save(day, extra={"run": run, "app": "toy"})
    return DayResult(
        day=day,
        reward_mean=float(np.mean([r.reward for g in train_groups for r in g])),
        eval_reward_mean=float(np.mean([r.reward for g in eval_groups for r in g])),
        steps=len(rows),
        clip_fraction=float(np.mean([r["clip_fraction"] for r in rows])) if rows else 0.0,
        skipped=False,
    )


def run_demo(home: str | Path | None, run: str, days: int, start: str, cfg: Config | None = None,
             echo=print) -> list[DayResult]:
    """Run `days` toy days from `start` (on the tiny model, built if needed, unless `cfg` says otherwise)."""
    from .config import db_path, run_dir

    if cfg is None:
        cfg = demo_config(ensure_tiny_model(home))
    db = dbm.open_db(db_path(home))
    run_path = run_dir(run, home)
    results = []
    first = date.fromisoformat(start)
    for k in range(days):
        day = (first + timedelta(days=k)).isoformat()
        res = toy_day(db, cfg, run, run_path, day)
        results.append(res)
        if res.skipped:
            echo(f"{day}: checkpoint exists, skipped")
        else:
            echo(
                f"{day}: reward {res.reward_mean:.3f}  eval {res.eval_reward_mean:.3f}  "
                f"steps {res.steps}  clip {res.clip_fraction:.2f}"
            )
    echo(f"checkpoints: {checkpoints.checkpoints_dir(run_path)}")
    echo(f"database:    {db_path(home)}  (view rollouts_readable)")
    return results
