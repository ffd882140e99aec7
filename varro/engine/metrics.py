"""Per-day metrics of a run's scored rollouts, shared by Varro and Walter."""

from __future__ import annotations

import json
from typing import Callable

import numpy as np
import sqlite_utils


def mean_or_none(xs: list[float]) -> float | None:
    return float(np.mean(xs)) if xs else None


def day_metrics(db: sqlite_utils.Database, app: str, run: str, day: str, steps_day: str,
                per_app: Callable[[list[dict]], dict]) -> dict:
    """The rollouts made on `day` by `run`: how many are scored, the train reward's mean and std, the
    eval reward, then `per_app(components of each scored rollout)`, then the KL and clip fraction of
    the updates made on `steps_day` (the day that trained on them)."""
    rows = list(db.query(
        "select r.reward, r.components_json, p.split from rollouts r join prompts p on p.id = r.prompt_id "
        "where p.app = ? and r.run = ? and r.day = ? and r.reward is not null", [app, run, day]))
    comps = [json.loads(r["components_json"]) for r in rows]
    train = [r["reward"] for r in rows if r["split"] == "train"]
    steps = list(db.query("select kl, clip_fraction from steps where run = ? and day = ? and skipped = 0",
                          [run, steps_day]))
    return {
        "day": day,
        "scored": len(rows),
        "reward_mean": mean_or_none(train),
        "reward_std": float(np.std(train)) if train else None,
        "eval_reward": mean_or_none([r["reward"] for r in rows if r["split"] == "eval"]),
        **per_app(comps),
        "kl": mean_or_none([s["kl"] for s in steps]),
        "clip_fraction": mean_or_none([s["clip_fraction"] for s in steps]),
    }
