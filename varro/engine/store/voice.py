"""The voice bookkeeping (varro.engine.eval.voice): the cadence of completions and of human text, and each day's
template share. Tables `cadence`, `human_cadence` and `voice_days`."""

from __future__ import annotations

import json
from typing import Iterable

import sqlite_utils

from varro.engine.store.clock import utc_now

_CHUNK = 500  # under SQLite's variable limit


def cadence_keys(db: sqlite_utils.Database, model: str) -> set[tuple[int, str]]:
    """(rollout id, text sha1) of every completion cadence stored under base model `model`."""
    return {(r[0], r[1]) for r in db.execute("select rollout_id, text_sha1 from cadence where model = ?", [model])}


def upsert_cadence(db: sqlite_utils.Database, model: str, rows: Iterable[tuple[int, str, dict]]) -> None:
    """Store the cadence features of completions, given as (rollout id, text sha1, features), under `model`;
    a rollout's earlier row (a stale text) is replaced."""
    now = utc_now()
    with db.atomic():
        db["cadence"].upsert_all([{"rollout_id": rid, "text_sha1": sha1, "model": model,
                                   "features_json": json.dumps(f), "created_utc": now}
                                  for rid, sha1, f in rows], pk="rollout_id")


def human_cadence_ids(db: sqlite_utils.Database, model: str, app: str) -> set[str]:
    """The ids of `app`'s human items whose cadence is stored under `model`."""
    return {r[0] for r in db.execute("select item_id from human_cadence where model = ? and app = ?",
                                     [model, app])}


def insert_human_cadence(db: sqlite_utils.Database, model: str, app: str,
                         rows: Iterable[tuple[str, str, dict]]) -> None:
    """Store the cadence features of `app`'s human items, given as (item id, text sha1, features), under
    `model`; an item already stored is kept."""
    now = utc_now()
    with db.atomic():
        db["human_cadence"].insert_all([{"model": model, "app": app, "item_id": i, "text_sha1": sha1,
                                         "features_json": json.dumps(f), "created_utc": now}
                                        for i, sha1, f in rows],
                                       pk=("model", "app", "item_id"), ignore=True)


def day_cadence(db: sqlite_utils.Database, run: str, day: str) -> list[dict]:
    """The stored cadence features (parsed) of `run`'s completions of `day`, any base model, in rollout order."""
    return [json.loads(r[0]) for r in db.execute(
        "select c.features_json from cadence c join rollouts r on r.id = c.rollout_id "
        "where r.run = ? and r.day = ? order by r.id", [run, day])]


def cadence_model(db: sqlite_utils.Database, run: str) -> str | None:
    """The base model the cadence of `run`'s completions was scored under (the first row's); None before any."""
    row = db.execute("select c.model from cadence c join rollouts r on r.id = c.rollout_id "
                     "where r.run = ? limit 1", [run]).fetchone()
    return None if row is None else row[0]


def human_cadence(db: sqlite_utils.Database, model: str, app: str, item_ids: list[str]) -> list[dict]:
    """The stored cadence features (parsed) of those of `app`'s `item_ids` scored under `model`."""
    ids, out = list(dict.fromkeys(item_ids)), []
    for start in range(0, len(ids), _CHUNK):
        part = ids[start : start + _CHUNK]
        marks = ",".join("?" * len(part))
        out += [json.loads(r[0]) for r in db.execute(
            f"select features_json from human_cadence where model = ? and app = ? and item_id in ({marks})",
            [model, app, *part])]
    return out


def upsert_voice_day(db: sqlite_utils.Database, run: str, app: str, day: str, template_share: float | None,
                     completions: int) -> None:
    """Store (replacing) `day`'s template share of `run` over its `completions` completions."""
    with db.atomic():
        db["voice_days"].upsert({"run": run, "app": app, "day": day, "template_share": template_share,
                                 "completions": completions, "created_utc": utc_now()}, pk=("run", "app", "day"))


def day_template_share(db: sqlite_utils.Database, run: str, app: str, day: str) -> float | None:
    """`day`'s stored template share of `run`; None when not stored (or stored as unknown)."""
    row = db.execute("select template_share from voice_days where run = ? and app = ? and day = ?",
                     [run, app, day]).fetchone()
    return row[0] if row else None
