"""The shipped sample: made-up headlines of a made-up week (data/sample/headlines.jsonl), stored as an
ingest would store them."""

from __future__ import annotations

from pathlib import Path

import sqlite_utils

from varro.engine.core.jsonl import read_jsonl
from varro.engine.core.paths import SAMPLE_DIR
from varro.forecast.headlines import store_headlines

SAMPLE_FILE = SAMPLE_DIR / "headlines.jsonl"


def sample_days() -> list[str]:
    """The days of the sample's headlines, in order."""
    return sorted({item["day"] for _, item in read_jsonl(SAMPLE_FILE)})


def load_sample_day(db: sqlite_utils.Database, day: str, path=None) -> int:
    """Store the shipped sample headlines of `day` (data/sample/headlines.jsonl); returns how many were new."""
    path = Path(path) if path else SAMPLE_FILE
    items = [{**item, "feed_url": f"sample:{path.name}"} for _, item in read_jsonl(path) if item.get("day") == day]
    return store_headlines(db, items)
