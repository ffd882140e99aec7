"""Per-day metrics of a run's scored rollouts, shared by Varro and Walter."""

from __future__ import annotations

import json
import math
from typing import Callable

import numpy as np
import sqlite_utils

from varro.engine import store


def mean_or_none(xs: list[float]) -> float | None:
    return float(np.mean(xs)) if xs else None


def app_day_metrics(db: sqlite_utils.Database, app, run: str, day: str) -> dict:
    """`day_metrics` of an App (varro.engine.core.app): its own metrics, and the KL and clip fraction of the
    updates that trained on the day's completions (`reward_delay_days` later)."""
    from datetime import date, timedelta

    steps_day = (date.fromisoformat(day) + timedelta(days=app.reward_delay_days)).isoformat()
    return day_metrics(db, app.name, run, day, steps_day, app.day_metrics)


def day_metrics(db: sqlite_utils.Database, app: str, run: str, day: str, steps_day: str,
                per_app: Callable[[list[dict]], dict]) -> dict:
    """The rollouts made on `day` by `run`: how many are scored, the train reward's mean and std, the
    eval reward, then `per_app(components of each scored rollout)`, then the KL and clip fraction of
    the updates made on `steps_day` (the day that trained on them)."""
    rows = store.scored_rollouts(db, app, run, day)
    comps = [json.loads(r["components_json"]) for r in rows]
    train = [r["reward"] for r in rows if r["split"] == "train"]
    steps = store.trained_steps(db, run, steps_day)
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


def format_metrics(rows: list[dict], cols: list[str]) -> str:
    """A fixed-width table of per-day metrics; '-' where a value is unknown."""
    head = "  ".join(f"{c:>11}" for c in cols)
    lines = [head]
    for m in rows:
        cells = []
        for c in cols:
            v = m.get(c)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                cells.append(f"{'-':>11}")
            elif isinstance(v, float):
                cells.append(f"{v:>11.3f}")
            else:
                cells.append(f"{v!s:>11}")
        lines.append("  ".join(cells))
    return "\n".join(lines)
