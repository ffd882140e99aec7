"""The curriculum (UED): pick the items where the policy still has something to learn.

An item scores the larger of its regret and its reward spread in its recent groups; pick weights are
`floor + score`, drawn without replacement with the run's RNG, and every candidate's odds are logged in the
table `curriculum`. The draw and its inclusion probabilities: docs/walter.md ("The modules, in detail").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import sqlite_utils

from varro.engine import store
from varro.engine.core.config import AT_LEAST_ONE, SHARE, opt

KEY_COLUMN = "url_norm"  # the item key's column in `curriculum` (see the module docstring)


@dataclass
class CurriculumSettings:
    """The curriculum's knobs, in the section of every app that picks its prompts by regret."""
    curriculum_floor: float = opt(0.1, "minimum pick weight, so every item can be chosen", SHARE)
    curriculum_days: int = opt(7, "days of an item's past groups that its regret is read from", AT_LEAST_ONE)


@dataclass
class ItemStats:
    regret: float
    variance: float
    groups: int


def item_stats(db: sqlite_utils.Database, app: str, run: str, day: str, window_days: int,
               key: str) -> dict[str, ItemStats]:
    """Regret and variance per item over `app`'s scored groups of `run` in the `window_days` before `day`;
    an item is its prompts' `source_json[key]`."""
    start = (date.fromisoformat(day) - timedelta(days=window_days)).isoformat()
    by_group: dict[tuple[str, str], list[float]] = {}
    for row in store.scored_rewards_with_source(db, app, run, start, day):
        item = json.loads(row["source_json"])[key]
        by_group.setdefault((item, row["day"]), []).append(row["reward"])
    per_item: dict[str, list[tuple[float, float]]] = {}
    for (item, _), rewards in by_group.items():
        r = np.array(rewards)
        per_item.setdefault(item, []).append((float(r.max() - r.mean()), float(r.var())))
    return {
        item: ItemStats(float(np.mean([g[0] for g in gs])), float(np.mean([g[1] for g in gs])), len(gs))
        for item, gs in per_item.items()
    }


EXACT_MAX = 12  # up to this many candidates the inclusion probabilities are computed exactly
MC_DRAWS = 40_000  # Monte-Carlo draws beyond that: standard error at most 0.5 / sqrt(draws) = 0.0025
MC_SEED = 0  # its own generator, so logging never moves the run's RNG


def inclusion_probabilities(p: np.ndarray, k: int, exact_max: int = EXACT_MAX, draws: int = MC_DRAWS,
                            seed: int = MC_SEED) -> np.ndarray:
    """P(item i is among k drawn by successive sampling without replacement with first-draw odds p).

    Exact for len(p) <= `exact_max`: a dynamic programme over the drawn sets (2^n
    states; the chance of a set is summed over the item drawn last). Beyond that a
    Monte-Carlo estimate from `draws` seeded draws by the exponential race
    (Efraimidis and Spirakis 2006: the k smallest of E_i / p_i, E_i ~ Exp(1), are a
    successive sample), standard error sqrt(pi (1 - pi) / draws) <= 0.5 / sqrt(draws).
    The result sums to k. Raises ValueError for p that is not a positive distribution
    or k outside [0, len(p)].
    """
    p = np.asarray(p, dtype=np.float64)
    n = len(p)
    if p.ndim != 1 or n == 0 or np.any(p <= 0) or not np.isclose(p.sum(), 1.0):
        raise ValueError(f"p must be positive first-draw probabilities summing to 1, got {p}")
    if not 0 <= k <= n:
        raise ValueError(f"cannot draw k={k} of {n}")
    if k == n:
        return np.ones(n)
    if n <= exact_max:
        return _exact_inclusion(p, k)
    rng = np.random.default_rng(seed)
    inside = np.zeros(n)
    for start in range(0, draws, 4096):
        keys = rng.exponential(size=(min(4096, draws - start), n)) / p  # (B, n)
        chosen = np.argpartition(keys, k - 1, axis=1)[:, :k]  # (B, k)
        inside += np.bincount(chosen.ravel(), minlength=n)
    return inside / draws


def _exact_inclusion(p: np.ndarray, k: int) -> np.ndarray:
    n = len(p)
    chance = {0: 1.0}  # drawn set (bitmask) -> probability it is the set of the first |set| draws
    for _ in range(k):
        nxt: dict[int, float] = {}
        for mask, pr in chance.items():
            rest = 1.0 - sum(p[i] for i in range(n) if mask >> i & 1)
            for i in range(n):
                if not mask >> i & 1:
                    nxt[mask | 1 << i] = nxt.get(mask | 1 << i, 0.0) + pr * p[i] / rest
        chance = nxt
    out = np.zeros(n)
    for mask, pr in chance.items():
        for i in range(n):
            if mask >> i & 1:
                out[i] += pr
    return out


def pick_items(
    db: sqlite_utils.Database,
    app: str,
    run: str,
    day: str,
    candidates: list[str],
    k: int,
    floor: float,
    window_days: int,
    rng: np.random.Generator,
    key: str,
) -> list[str]:
    """Choose up to `k` of `candidates` (item keys, `source_json[key]` of `app`'s prompts) and log every
    candidate's odds in `curriculum`; returns the chosen keys in `candidates` order.

    Logged per candidate: score, `probability` (of being among the chosen),
    `first_draw_probability` and whether it was chosen. Raises ValueError for a
    floor <= 0.
    """
    if floor <= 0:
        raise ValueError(f"the curriculum floor must be positive, got {floor}")
    if not candidates:
        return []
    stats = item_stats(db, app, run, day, window_days, key)
    known = [max(s.regret, s.variance ** 0.5) for u, s in stats.items() if u in candidates]
    optimistic = max(known) if known else 1.0
    scores = np.array([max(stats[u].regret, stats[u].variance ** 0.5) if u in stats else optimistic
                       for u in candidates])
    weights = floor + scores
    p = weights / weights.sum()
    size = min(k, len(candidates))
    chosen_idx = rng.choice(len(candidates), size=size, replace=False, p=p)
    chosen = [candidates[i] for i in sorted(chosen_idx)]
    included = inclusion_probabilities(p, size)
    store.upsert_curriculum(db, [
        {"run": run, "day": day, KEY_COLUMN: u,
         "regret": stats[u].regret if u in stats else None,
         "variance": stats[u].variance if u in stats else None,
         "score": float(s), "probability": float(pi), "first_draw_probability": float(p1),
         "chosen": int(u in chosen)}
        for u, s, pi, p1 in zip(candidates, scores, included, p)
    ])
    return chosen
