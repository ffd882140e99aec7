"""Before and after: the same prompts, the same seed, two checkpoints, the same reward.

The mean reward difference (after minus before) comes with a paired bootstrap
confidence interval: prompts are resampled with replacement (the completions
of one prompt stay together, since they share the prompt's difficulty).
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Callable

import numpy as np
import sqlite_utils

from . import checkpoints
from .config import Config
from .embed import Embedder
from .policy import Policy

ScoreTexts = Callable[[sqlite_utils.Database, dict, list[str], Embedder, Config], list[dict]]


class CompareError(ValueError):
    pass


@dataclass
class Side:
    label: str  # "base" or a checkpoint day
    texts: list[list[str]]  # per prompt, per sample
    rewards: np.ndarray  # (prompts, samples)


def resolve_checkpoint(run_path: Path, which: str) -> str:
    """'base', 'latest' or a day that has a complete checkpoint; raises CompareError otherwise."""
    if which == "base":
        return "base"
    found = [p.name for p in checkpoints.list_checkpoints(run_path)]
    if which == "latest":
        if not found:
            raise CompareError(f"run {run_path.name} has no checkpoint yet")
        return found[-1]
    if which not in found:
        raise CompareError(f"run {run_path.name} has no checkpoint {which}; it has {found or 'none'}")
    return which


def open_at(run_path: Path, label: str, fallback: Config) -> Policy:
    """The policy exactly at checkpoint `label` (with the config it was trained with), or the base."""
    if label == "base":
        return Policy.open(fallback, run_path, before_day="0000-01-01")
    cfg = Config.from_dict(json.loads((checkpoints.checkpoints_dir(run_path) / label / "config.json").read_text()))
    after = (date.fromisoformat(label) + timedelta(days=1)).isoformat()
    policy = Policy.open(cfg, run_path, before_day=after)
    if policy.checkpoint != label:
        raise CompareError(f"checkpoint {label} could not be restored (got {policy.checkpoint})")
    return policy


def generate(policy: Policy, prompts: list[dict], samples: int, seed: int) -> list[list[str]]:
    policy.config.sampling.group_size = samples
    groups = policy.sample([(p["id"], p["text"]) for p in prompts], seed=seed)
    return [[r.text for r in g] for g in groups]


def bootstrap_ci(diffs: np.ndarray, seed: int, resamples: int = 2000, level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of the mean of per-prompt differences `diffs` (prompts, samples)."""
    per_prompt = diffs.mean(axis=1)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(per_prompt), size=(resamples, len(per_prompt)))
    means = per_prompt[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


@dataclass
class Comparison:
    prompts: list[dict]
    before: Side
    after: Side
    mean_diff: float
    ci: tuple[float, float]


def compare(
    db: sqlite_utils.Database,
    run_path: Path,
    prompts: list[dict],
    before: str,
    after: str,
    score_texts: ScoreTexts,
    embedder: Embedder,
    config: Config,
    samples: int = 4,
    seed: int = 0,
) -> Comparison:
    """Generate with both checkpoints from the same seed and score both with the same reward."""
    if not prompts:
        raise CompareError("no prompts to compare on")
    labels = (resolve_checkpoint(run_path, before), resolve_checkpoint(run_path, after))
    trained = [label for label in labels if label != "base"]
    if trained:  # the base side uses the model and LoRA settings the run was trained with
        config = Config.from_dict(json.loads(
            (checkpoints.checkpoints_dir(run_path) / trained[-1] / "config.json").read_text()))
    sides = []
    for label in labels:
        policy = open_at(run_path, label, config)
        texts = generate(policy, prompts, samples, seed)
        rewards = np.array([[c["reward"] for c in score_texts(db, p, t, embedder, config)]
                            for p, t in zip(prompts, texts)])
        sides.append(Side(label, texts, rewards))
    diffs = sides[1].rewards - sides[0].rewards
    return Comparison(prompts, sides[0], sides[1], float(diffs.mean()), bootstrap_ci(diffs, seed))


def default_prompts(db: sqlite_utils.Database, app: str, n: int, scorable: Callable[[str], bool]) -> list[dict]:
    """The held-out eval prompts of the latest day that can be scored, topped up with its training prompts to n."""
    days = [r["day"] for r in db.query("select distinct day from prompts where app = ? order by day desc", [app])]
    for day in days:
        if not scorable(day):
            continue
        rows = list(db.query("select * from prompts where app = ? and day = ? order by split = 'eval' desc, id",
                             [app, day]))
        evals = [r for r in rows if r["split"] == "eval"]
        return (evals + [r for r in rows if r["split"] != "eval"])[: max(n, len(evals))]
    raise CompareError(f"no {app} day with prompts that can be scored yet")


def side_by_side(c: Comparison):
    """Each prompt with its samples paired: (prompt, [(reward before, text before, reward after, text after)])."""
    for i, p in enumerate(c.prompts):
        yield p, [(c.before.rewards[i, k], tb, c.after.rewards[i, k], ta)
                  for k, (tb, ta) in enumerate(zip(c.before.texts[i], c.after.texts[i]))]


def format_comparison(c: Comparison, width: int = 60) -> str:
    def short(t: str) -> str:
        t = " ".join(t.split())
        return t if len(t) <= width else t[: width - 1] + "…"

    lines = []
    for p, samples in side_by_side(c):
        lines.append(f"== {p['id']}  {short(p['text'].splitlines()[0])}")
        for rb, tb, ra, ta in samples:
            lines.append(f"  {rb:+.3f} {short(tb):<{width}} | {ra:+.3f} {short(ta)}")
    lines.append("")
    lines.append(f"mean reward {c.before.label}: {c.before.rewards.mean():.3f}   "
                 f"{c.after.label}: {c.after.rewards.mean():.3f}")
    lines.append(f"difference (after - before): {c.mean_diff:+.3f}   95% bootstrap CI "
                 f"[{c.ci[0]:+.3f}, {c.ci[1]:+.3f}] over {len(c.prompts)} prompts")
    return "\n".join(lines)


def write_html(c: Comparison, path: Path) -> Path:
    esc = html.escape
    rows = []
    for p, samples in side_by_side(c):
        rows.append(f"<tr><th colspan=4>{esc(p['text'])}</th></tr>")
        for rb, tb, ra, ta in samples:
            rows.append(f"<tr><td>{rb:+.3f}</td><td>{esc(tb)}</td><td>{ra:+.3f}</td><td>{esc(ta)}</td></tr>")
    page = f"""<!doctype html><meta charset="utf-8"><title>compare {esc(c.before.label)} vs {esc(c.after.label)}</title>
<style>body{{font-family:sans-serif}} td,th{{border:1px solid #ccc;padding:4px;vertical-align:top;text-align:left}}
th{{background:#f4f4f4}} table{{border-collapse:collapse}}</style>
<h1>{esc(c.before.label)} vs {esc(c.after.label)}</h1>
<p>Mean reward {esc(c.before.label)}: {c.before.rewards.mean():.3f}; {esc(c.after.label)}: {c.after.rewards.mean():.3f}.
Difference {c.mean_diff:+.3f}, 95% bootstrap CI [{c.ci[0]:+.3f}, {c.ci[1]:+.3f}] over {len(c.prompts)} prompts.</p>
<table><tr><th>reward</th><th>{esc(c.before.label)}</th><th>reward</th><th>{esc(c.after.label)}</th></tr>
{''.join(rows)}</table>"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
