"""The shipped sample: made-up notes about a dozen topics by five authors over four days, with saves and
shares (data/sample/tally/items.jsonl), read by the same ingest as a file of your own."""

from __future__ import annotations

import sqlite_utils

from varro.engine.core.paths import SAMPLE_DIR
from varro.engine.prompts.sources import resolve_timezone

from .ingest import Columns, ingest_file, read_items
from .settings import TallyConfig

SAMPLE_FILE = SAMPLE_DIR / "tally" / "items.jsonl"
SAMPLE_HONEST = SAMPLE_DIR / "tally" / "honest.jsonl"


def sample_days() -> list[str]:
    """The days of the sample's items, in order."""
    s = TallyConfig()
    return sorted({r["day"] for r in read_items(SAMPLE_FILE, Columns.of(s), resolve_timezone(s.timezone)).rows})


def load_sample_day(db: sqlite_utils.Database, day: str) -> int:
    """The sample's items of `day` and before, stored as `tally ingest --source sample` would; returns new items."""
    return ingest_file(db, SAMPLE_FILE, day, TallyConfig())
