"""Voice: does training move the model's writing toward the people it learns from, or toward sameness?

`voice_stage` stores each night's cadence of the completions and of the day's human text and the template
share; `voice_data` reads them back per day as a distance from the human band; `voice_drift` flags a day
that drifted too far. What each number is: docs/evaluation.md.
"""

from __future__ import annotations

import hashlib
from typing import Callable

import numpy as np
import sqlite_utils

from varro.engine.eval.cadence import FEATURES, cadence_distance, mean_features, score_cadence, template_share
from varro.engine import store
from varro.engine.core.errors import ConfigError
from varro.engine.embed.embedders import Embedder
from varro.engine.core.faults import failpoint

HumanItems = Callable[[sqlite_utils.Database, str], list[tuple[str, str]]]  # (db, day) -> [(item id, text)]
TEMPLATE_COSINE = 0.9


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def store_rollout_cadence(db: sqlite_utils.Database, model, tokenizer, model_id: str,
                          rollouts: list[tuple[int, str]]) -> int:
    """Score and store the cadence of the given (rollout id, text) that have none yet; returns how many."""
    have = store.cadence_keys(db, model_id) if rollouts else set()
    todo = [(rid, t) for rid, t in rollouts if (rid, _sha1(t)) not in have]
    if not todo:
        return 0
    feats = score_cadence(model, tokenizer, [t for _, t in todo])
    # upsert: a stale row (the rollout id now holds another text) is replaced
    store.upsert_cadence(db, model_id, [(rid, _sha1(t), f) for (rid, t), f in zip(todo, feats)])
    return len(todo)


def store_human_cadence(db: sqlite_utils.Database, app: str, model, tokenizer, model_id: str,
                        items: list[tuple[str, str]]) -> int:
    """Score and store, once per base model, the cadence of human (item id, text); returns how many were new."""
    have = store.human_cadence_ids(db, model_id, app) if items else set()
    todo = list({i: (i, t) for i, t in items if i not in have}.values())
    if not todo:
        return 0
    feats = score_cadence(model, tokenizer, [t for _, t in todo])
    store.insert_human_cadence(db, model_id, app, [(i, _sha1(t), f) for (i, t), f in zip(todo, feats)])
    return len(todo)


def voice_stage(db: sqlite_utils.Database, app: str, run: str, day: str, policy, human_items: HumanItems,
                embedder: Embedder, human_days: list[str]) -> dict[str, int]:
    """The night's voice bookkeeping for `day`: cadence of the run's completions of `day`, of the human
    items of `human_days` (each day's items as `human_items` lists them) and `day`'s template share."""
    model_id = policy.config.model.model
    rows = store.day_completions(db, run, day)
    n = store_rollout_cadence(db, policy.model, policy.tokenizer, model_id, [(r["id"], r["completion"] or "")
                                                                            for r in rows])
    failpoint("voice.cadence")  # the completions' cadence stored, the human text's and the day's share not
    h = sum(store_human_cadence(db, app, policy.model, policy.tokenizer, model_id, human_items(db, d))
            for d in human_days)
    texts = [r["completion"] or "" for r in rows]
    share = template_share(embedder.encode(texts), [r["prompt_id"] for r in rows], TEMPLATE_COSINE) if rows else None
    store.upsert_voice_day(db, run, app, day, share, len(rows))
    return {"completions": n, "human": h}


def _band(features: list[dict]) -> dict[str, tuple[float, float] | None]:
    out = {}
    for k in FEATURES:
        xs = [f[k] for f in features if f.get(k) is not None]
        out[k] = (float(np.mean(xs)), float(np.std(xs))) if xs else None
    return out


def voice_data(db: sqlite_utils.Database, app: str, run: str, human_items: HumanItems) -> list[dict]:
    """Per day of the run's rollouts: {"day", "model": mean features, "human": {feature: (mean, std)},
    "humans": how many human texts, "distance", "template_share", "entropy" (of the updates made that
    day)}; only what is stored."""
    out = []
    model_id = store.cadence_model(db, run)
    for day in store.rollout_days(db, app, run):
        model_rows = store.day_cadence(db, run, day)
        ids = [i for i, _ in human_items(db, day)] if model_id else []
        humans = store.human_cadence(db, model_id, app, ids) if ids else []
        mine = mean_features(model_rows) if model_rows else None
        out.append({
            "day": day,
            "model": mine,
            "human": _band(humans) if humans else None,
            "humans": len(humans),
            "distance": cadence_distance(mine, humans) if mine and humans else None,
            "template_share": store.day_template_share(db, run, app, day),
            "entropy": store.day_entropy(db, run, day),
        })
    return out


def voice_drift(rows: list[dict], max_growth: float) -> list[dict]:
    """The days of `rows` (voice_data's, in day order) whose cadence distance exceeds the first measured
    day's by more than the share `max_growth` (eval.voice_drift_max; 0 turns the flag off).

    The reference is the first day with a positive distance (a zero one has no share to grow by); days
    without a distance are skipped. Each flag: {"day", "first_day", "distance", "first_distance", "growth"
    (the share, 0.667 for +67%), "reason"}. Raises ConfigError for a negative `max_growth`.
    """
    if max_growth < 0:
        raise ConfigError(f"eval.voice_drift_max must be 0 (off) or a positive share, got {max_growth}")
    measured = [r for r in rows if r["distance"] is not None]
    first = next((r for r in measured if r["distance"] > 0), None)
    if max_growth == 0 or first is None:
        return []
    ref, flags = first["distance"], []
    for r in measured:
        if r["day"] <= first["day"] or r["distance"] <= ref * (1 + max_growth):
            continue
        growth = r["distance"] / ref - 1
        flags.append({"day": r["day"], "first_day": first["day"], "distance": r["distance"], "first_distance": ref,
                      "growth": growth,
                      "reason": (f"voice drift: cadence distance from the humans {r['distance']:.2f} is {growth:+.0%} "
                                 f"over {ref:.2f} on {first['day']} (limit {max_growth:+.0%})")})
    return flags


def drift_note(rows: list[dict], max_growth: float, day: str) -> str | None:
    """'voice drift +67% since 2026-11-02' when the newest day up to `day` with a distance is flagged by
    `voice_drift`, else None: the nightly's last line. The newest measured day, not `day` itself, because a
    day's distance can wait for later human text (Varro's forecasts are compared with the next day's
    headlines)."""
    measured = [r for r in rows if r["day"] <= day and r["distance"] is not None]
    flags = voice_drift(measured, max_growth)
    if not flags or flags[-1]["day"] != measured[-1]["day"]:
        return None
    return f"voice drift {flags[-1]['growth']:+.0%} since {flags[-1]['first_day']}"
