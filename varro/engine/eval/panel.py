"""The held-out evaluation panel: a run's learning curve on prompts no update has seen.

A run's panel is a fixed list of held-out prompts, one per story, frozen once it holds `panel_size`. Every
checkpoint (and the base as day 0) samples each panel prompt with the same seeds, its scores cached in
`panel_scores`; the curve is each checkpoint's mean with an interval over prompts (eval/intervals.py).
How the panel is chosen and why: docs/evaluation.md.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import sqlite_utils

from varro.engine import store
from varro.engine.run import checkpoints
from varro.engine.run.checkpoints import run_config
from varro.engine.core.config import Config
from varro.engine.embed.embedders import Embedder
from varro.engine.prompts.split import too_close
from varro.engine.core.errors import UserError
from varro.engine.eval.intervals import format_ci, mean_ci, small_panel_warning

ScoreTexts = Callable[[sqlite_utils.Database, dict, list[str], Embedder, Config], list[dict]]


class PanelError(ValueError, UserError):
    pass


def story_of(prompt: dict) -> str:
    return json.loads(prompt["source_json"] or "{}").get("story_id") or prompt["id"]


def prompt_text(prompt: dict) -> str:
    """What a prompt is about, from its source: the title and the summary (or the description)."""
    src = json.loads(prompt["source_json"] or "{}")
    return f"{src.get('title') or ''} {src.get('summary') or src.get('description') or ''}".strip()


def panel_prompts(db: sqlite_utils.Database, app: str, run: str, size: int, scorable: Callable[[dict], bool],
                  embedder: Embedder | None = None, leak_cosine: float | None = None) -> list[dict]:
    """The run's panel, in order: the stored members, topped up (never reordered) with the earliest
    scorable held-out prompts of stories not yet in it, up to `size`. With an embedder, a held-out prompt
    at least `leak_cosine` from any training prompt of the app is passed over (a split story)."""
    members = store.panel_members(db, app, run)
    if len(members) < size:
        stories = {m["story_id"] for m in members}
        added = []
        trained = None
        if embedder is not None and leak_cosine is not None:
            texts = [prompt_text(p) for p in store.split_prompts(db, app, "train")]
            trained = embedder.encode(texts) if texts else None
        for p in store.split_prompts(db, app, "eval"):
            if len(members) + len(added) >= size:
                break
            story = story_of(p)
            if story in stories or any(a["prompt_id"] == p["id"] for a in added) or not scorable(p):
                continue
            if trained is not None and too_close(embedder.encode([prompt_text(p)]), trained, leak_cosine)[0]:
                continue
            stories.add(story)
            added.append({"run": run, "position": len(members) + len(added), "prompt_id": p["id"],
                          "story_id": story, "added_utc": store.utc_now()})
        if added:
            store.add_panel_members(db, added)
            return panel_prompts(db, app, run, size, lambda p: False)
    return members


def prompt_seed(seed: int, prompt_id: str) -> int:
    """The sampling seed of one panel prompt: the same for every checkpoint."""
    return (seed * 1_000_003 + int(hashlib.sha1(prompt_id.encode()).hexdigest()[:8], 16)) % 2**31


def ensure_scores(db: sqlite_utils.Database, run_path: Path, label: str, prompts: list[dict],
                  score_texts: ScoreTexts, embedder: Embedder, config: Config, samples: int, seed: int,
                  on_prompt: Callable[[int], None] | None = None) -> int:
    """Sample and score `label`'s missing panel cells; returns how many prompts were computed.

    `config` scores every checkpoint alike (the run's config); each checkpoint
    samples with the settings it was trained with.
    """
    run = Path(run_path).name
    have = store.scored_panel_prompts(db, run, label, seed, samples)
    todo = [p for p in prompts if p["id"] not in have]
    if not todo:
        return 0
    from varro.engine.run.policy import Policy

    policy = Policy.at_checkpoint(run_path, label, config)
    policy.config.sampling.group_size = samples
    for p in todo:
        group = policy.sample([(p["id"], p["text"])], seed=prompt_seed(seed, p["id"]))[0]
        comps = score_texts(db, p, [r.text for r in group], embedder, config)
        now = store.utc_now()
        rows = [{"run": run, "checkpoint": label, "prompt_id": p["id"], "seed": seed, "samples": samples,
                 "sample_index": k, "completion": r.text, "reward": c["reward"],
                 "components_json": json.dumps({k2: v for k2, v in c.items() if k2 != "reward"}, sort_keys=True),
                 "created_utc": now} for k, (r, c) in enumerate(zip(group, comps))]
        store.upsert_panel_scores(db, rows)
        if on_prompt is not None:
            on_prompt(1)
    return len(todo)


@dataclass
class Cells:
    label: str
    texts: list[list[str]]  # per prompt, per sample
    rewards: np.ndarray  # (prompts, samples)


def read_scores(db: sqlite_utils.Database, run: str, label: str, prompts: list[dict], samples: int,
                seed: int) -> Cells:
    """The cached cells of `label` for `prompts`; raises PanelError when one is missing."""
    texts, rewards = [], []
    for p in prompts:
        rows = store.panel_cells(db, run, label, p["id"], seed, samples)
        if len(rows) != samples:
            raise PanelError(f"panel prompt {p['id']} has no scores for {label} yet (run `eval`)")
        texts.append([r["completion"] for r in rows])
        rewards.append([r["reward"] for r in rows])
    return Cells(label, texts, np.array(rewards, dtype=np.float64).reshape(len(prompts), samples))


@dataclass
class CurvePoint:
    label: str  # "base" or a checkpoint day
    mean: float
    ci: tuple[float, float]
    diff: float  # mean minus the base's, paired by prompt and sample
    diff_ci: tuple[float, float]
    prompts: int


def curve(db: sqlite_utils.Database, run: str, labels: list[str], prompts: list[dict], samples: int,
          seed: int) -> list[CurvePoint]:
    """Each label's mean panel reward with CIs; `labels[0]` is the baseline of the differences."""
    cells = [read_scores(db, run, label, prompts, samples, seed) for label in labels]
    base = cells[0].rewards
    return [CurvePoint(c.label, float(c.rewards.mean()), mean_ci(c.rewards),
                       float((c.rewards - base).mean()), mean_ci(c.rewards - base), len(prompts))
            for c in cells]


def format_curve(points: list[CurvePoint]) -> str:
    """The curve as a table, one checkpoint a row, then a warning line when the panel is under MIN_PANEL."""
    lines = [f"{'checkpoint':>12}  {'reward':>7}  {'95% CI':>17}  {'vs base':>8}  {'95% CI':>17}"]
    for p in points:
        lines.append(f"{p.label:>12}  {p.mean:>7.3f}  {format_ci(p.ci):>17}  {p.diff:>+8.3f}  "
                     f"{format_ci(p.diff_ci):>17}")
    warning = small_panel_warning(points[0].prompts) if points else None
    return "\n".join(lines + ([warning] if warning else []))


def evaluate(db: sqlite_utils.Database, app: str, run_path: Path, score_texts: ScoreTexts, embedder: Embedder,
             fallback: Config, scorable: Callable[[dict], bool], on_prompt=None) -> tuple[list[dict], list[CurvePoint]]:
    """Score the base and every checkpoint of the run on its panel (what is cached is reused); returns the
    panel and the curve. Raises PanelError when the run has no held-out prompt that can be scored."""
    cfg = run_config(run_path, fallback)
    run = Path(run_path).name
    prompts = panel_prompts(db, app, run, cfg.eval.panel_size, scorable, embedder, cfg.eval.leak_cosine)
    if not prompts:
        raise PanelError(f"no held-out {app} prompt can be scored yet: the panel of run {run} is empty")
    labels = ["base"] + [p.name for p in checkpoints.list_checkpoints(run_path)]
    for label in labels:
        ensure_scores(db, run_path, label, prompts, score_texts, embedder, cfg, cfg.eval.panel_samples,
                      cfg.eval.panel_seed, on_prompt)
    return prompts, curve(db, run, labels, prompts, cfg.eval.panel_samples, cfg.eval.panel_seed)
