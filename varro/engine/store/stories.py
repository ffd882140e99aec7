"""Story links (varro.engine.prompts.stories): which story each item of an app belongs to. Table `stories`."""

from __future__ import annotations

from typing import Iterable

import sqlite_utils

_CHUNK = 500  # under SQLite's variable limit


def stored_stories(db: sqlite_utils.Database, app: str, item_ids: Iterable[str]) -> dict[str, str]:
    """item id -> story id of those of `item_ids` already linked for `app` (the others are missing)."""
    ids = list(item_ids)
    out: dict[str, str] = {}
    for start in range(0, len(ids), _CHUNK):
        part = ids[start : start + _CHUNK]
        marks = ",".join("?" * len(part))
        out.update({r["item_id"]: r["story_id"] for r in db.query(
            f"select item_id, story_id from stories where app = ? and item_id in ({marks})", [app, *part])})
    return out


def insert_story_links(db: sqlite_utils.Database, rows: list[dict]) -> None:
    """Store new links ({"app", "item_id", "story_id", "day", "linked_to", "cosine", "created_utc"}); a link
    already stored for (app, item_id) is kept as it is: a story's split never changes."""
    with db.atomic():
        db["stories"].insert_all(rows, pk=("app", "item_id"), ignore=True)
