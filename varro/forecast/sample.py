"""The shipped sample: made-up headlines of a made-up week (data/sample/headlines.jsonl), stored as an
ingest would store them."""

from __future__ import annotations

import json
from pathlib import Path

import sqlite_utils

from varro.engine.core.paths import SAMPLE_DIR
from varro.forecast.headlines import store_headlines

SAMPLE_FILE = SAMPLE_DIR / "headlines.jsonl"


def sample_days() -> list[str]:
    """The days of the sample's headlines, in order."""
    with open(SAMPLE_FILE, encoding="utf-8") as f:
        return sorted({json.loads(line)["day"] for line in f if line.strip()})


def load_sample_day(db: sqlite_utils.Database, day: str, path=None) -> int:
    """Store the shipped sample headlines of `day` (data/sample/headlines.jsonl); returns how many were new."""
    path = Path(path) if path else SAMPLE_FILE
    items = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON: {e}") from None
            if item.get("day") == day:
                items.append({**item, "feed_url": f"sample:{path.name}"})
    return store_headlines(db, items)
