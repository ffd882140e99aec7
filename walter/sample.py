"""The shipped Bluesky sample, served through the same ingest code as the real API.

`SampleBluesky` answers `search_posts`, `get_posts` and `get_author_feed` from
the JSON files under data/sample/bluesky (API-shaped pages), so the demo and
the tests run the real `ingest_search`, `refresh_counts` and
`update_baselines` offline.
"""

from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import sqlite_utils

from varro.engine.core.paths import SAMPLE_DIR

from .ingest import (
    day_skips,
    extract_link,
    format_summary,
    ingest_search,
    link_host,
    on_domain,
    refresh_counts,
    update_baselines,
)

BLUESKY_SAMPLE = SAMPLE_DIR / "bluesky"


class SampleBluesky:
    """A read-only stand-in for walter.bsky.Bluesky backed by the sample files."""

    def __init__(self, root: Path = BLUESKY_SAMPLE):
        self.root = Path(root)
        if not (self.root / "search").is_dir():
            raise FileNotFoundError(f"no Bluesky sample under {self.root}")
        self._day: str | None = None

    def for_day(self, day: str) -> "SampleBluesky":
        self._day = day
        return self

    def _pages(self, path: Path) -> list[dict[str, Any]]:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []

    # `on_invalid` as in walter.bsky.Bluesky: the sample's posts are valid, so it is never called.
    def search_posts(self, q=None, url=None, domain=None, since=None, until=None, cursor=None, limit=100,
                     sort="latest", on_invalid=None) -> tuple[list[dict], str | None]:
        pages = self._pages(self.root / "search" / f"{self._day}.json")
        index = int(cursor) if cursor else 0
        if index >= len(pages):
            return [], None
        posts = [p for p in pages[index]["posts"]
                 if domain is None or ((found := extract_link(p)) and on_domain(found[0], domain))]
        return posts, (str(index + 1) if index + 1 < len(pages) else None)

    def get_posts(self, uris: list[str], on_invalid=None) -> list[dict]:
        wanted = set(uris)
        return [p for p in self._pages(self.root / "refresh.json")["posts"] if p["uri"] in wanted] \
            if (self.root / "refresh.json").is_file() else []

    def get_author_feed(self, did: str, cursor=None, limit=100, on_invalid=None) -> tuple[list[dict], str | None]:
        pages = self._pages(self.root / "authors" / f"{did.replace(':', '_')}.json")
        index = int(cursor) if cursor else 0
        if index >= len(pages):
            return [], None
        items = [i for i in pages[index]["feed"] if "reason" not in i]
        return items, (str(index + 1) if index + 1 < len(pages) else None)


def sample_domains(root: Path = BLUESKY_SAMPLE) -> list[str]:
    """The news domains the sample's posts link to."""
    hosts = set()
    for f in sorted((root / "search").glob("*.json")):
        for page in json.loads(f.read_text(encoding="utf-8")):
            for p in page["posts"]:
                found = extract_link(p)
                if found:
                    hosts.add(link_host(found[0]))
    return sorted(hosts)


def sample_days(root: Path = BLUESKY_SAMPLE) -> list[str]:
    return sorted(p.stem for p in (root / "search").glob("*.json"))


def ingest_sample_day(db: sqlite_utils.Database, day: str, tz: str | None = "UTC",
                      root: Path = BLUESKY_SAMPLE, echo: Callable[[str], None] | None = None) -> int:
    """Day `day` of the sample as the nightly run would see it at the end of that day.

    Searches the day's posts, refreshes the counts of posts that are 24 hours old
    (the previous day's), and fetches the authors' baselines. Returns new posts.
    With `echo`, prints the same per-domain summary as the Bluesky ingest
    (`walter.ingest.format_summary`), except for a day outside the sample that
    refreshed and fetched nothing.
    """
    from zoneinfo import ZoneInfo

    client = SampleBluesky(root).for_day(day)
    now = datetime.combine(date.fromisoformat(day) + timedelta(days=1), time(0, 30), tzinfo=timezone.utc)
    zone = ZoneInfo(tz) if tz else None
    summary = ingest_search(db, client, sample_domains(root), day, tz=zone, now=now)
    refreshed = refresh_counts(db, client, min_age_hours=24.0, now=now, day=day)
    dids = [r["author_did"] for r in db.query("select distinct author_did from bsky_posts where day = ?", [day])]
    authors = update_baselines(db, client, dids, now=now, day=day)
    if echo is not None and (day in sample_days(root) or refreshed or authors):
        echo(format_summary(summary, "sample", refreshed, authors, skipped_authors=day_skips(db, day, "author")))
    return summary.posts_new
