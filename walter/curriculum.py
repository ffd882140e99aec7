"""The curriculum (UED): pick articles where the policy still has something to learn.

An article's score is the larger of its regret (best minus mean reward in its
recent groups) and its reward spread (std); an article never tried gets the
highest score seen, so it is explored. Pick weights are `floor + score`, so
every article can be picked; the draw uses the run's seeded RNG and every
candidate's score, probability and outcome is logged in `curriculum`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import sqlite_utils

from varro.db import utc_now


@dataclass
class ArticleStats:
    regret: float
    variance: float
    groups: int


def article_stats(db: sqlite_utils.Database, run: str, day: str, window_days: int) -> dict[str, ArticleStats]:
    """Regret and variance per article over its scored groups in the `window_days` before `day`."""
    start = (date.fromisoformat(day) - timedelta(days=window_days)).isoformat()
    by_group: dict[tuple[str, str], list[float]] = {}
    for row in db.query(
        "select r.day, r.reward, p.source_json from rollouts r join prompts p on p.id = r.prompt_id "
        "where p.app = 'walter' and r.run = ? and r.day >= ? and r.day < ? and r.reward is not null",
        [run, start, day],
    ):
        url = json.loads(row["source_json"])["url_norm"]
        by_group.setdefault((url, row["day"]), []).append(row["reward"])
    per_article: dict[str, list[tuple[float, float]]] = {}
    for (url, _), rewards in by_group.items():
        r = np.array(rewards)
        per_article.setdefault(url, []).append((float(r.max() - r.mean()), float(r.var())))
    return {
        url: ArticleStats(float(np.mean([g[0] for g in gs])), float(np.mean([g[1] for g in gs])), len(gs))
        for url, gs in per_article.items()
    }


def pick_articles(
    db: sqlite_utils.Database,
    run: str,
    day: str,
    candidates: list[str],
    k: int,
    floor: float,
    window_days: int,
    rng: np.random.Generator,
) -> list[str]:
    """Choose up to `k` of `candidates` (normalised URLs) and log every candidate's odds."""
    if floor <= 0:
        raise ValueError(f"the curriculum floor must be positive, got {floor}")
    if not candidates:
        return []
    stats = article_stats(db, run, day, window_days)
    known = [max(s.regret, s.variance ** 0.5) for u, s in stats.items() if u in candidates]
    optimistic = max(known) if known else 1.0
    scores = np.array([max(stats[u].regret, stats[u].variance ** 0.5) if u in stats else optimistic
                       for u in candidates])
    weights = floor + scores
    p = weights / weights.sum()
    chosen_idx = rng.choice(len(candidates), size=min(k, len(candidates)), replace=False, p=p)
    chosen = [candidates[i] for i in sorted(chosen_idx)]
    now = utc_now()
    with db.atomic():
        db["curriculum"].upsert_all(
            [
                {"run": run, "day": day, "url_norm": u,
                 "regret": stats[u].regret if u in stats else None,
                 "variance": stats[u].variance if u in stats else None,
                 "score": float(s), "probability": float(pi), "chosen": int(u in chosen), "created_utc": now}
                for u, s, pi in zip(candidates, scores, p)
            ],
            pk=("run", "day", "url_norm"),
        )
    return chosen
