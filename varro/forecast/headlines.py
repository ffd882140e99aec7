"""Headline rows: the natural key, link normalisation and the idempotent writer."""

from __future__ import annotations

import hashlib
from typing import Any, Iterable

import sqlite_utils

from varro.engine.store import utc_now
from varro.engine.core.faults import failpoint
from varro.engine.prompts.sources import normalise_link

def headline_id(feed_key: str, guid: str | None, link: str | None) -> str:
    """The natural key: the feed's identity (its name, else its URL; see `ingest.feed_key`) plus guid,
    falling back to the normalised link."""
    key = (guid or "").strip() or normalise_link(link or "")
    if not key:
        raise ValueError(f"a headline from {feed_key!r} has neither a guid nor a link")
    return hashlib.sha1(f"{feed_key}\x1f{key}".encode()).hexdigest()


def _seen_under_legacy_key(db: sqlite_utils.Database, item: dict[str, Any], legacy_key: str) -> bool:
    """Whether the same feed stored this headline when an unnamed feed's ids were keyed by its title."""
    old = headline_id(legacy_key, item.get("guid"), item.get("link"))
    return db.execute("select 1 from headlines where id = ? and feed_url is ?",
                      [old, item.get("feed_url")]).fetchone() is not None


def store_headlines(db: sqlite_utils.Database, items: Iterable[dict[str, Any]], legacy_key: str | None = None) -> int:
    """Insert headlines not seen before; returns how many were new. Existing rows are never changed.

    Each item needs source, title, day and guid or link; key (the feed's identity in the
    id, default: source), feed_url, summary, published_utc optional. With `legacy_key`
    (an unnamed feed's title), a headline its feed stored under the title-keyed id of
    earlier versions is not stored again.
    """
    new = 0
    now = utc_now()
    with db.atomic():
        for item in items:
            if legacy_key is not None and _seen_under_legacy_key(db, item, legacy_key):
                continue
            hid = headline_id(item.get("key") or item["source"], item.get("guid"), item.get("link"))
            row = {
                "id": hid,
                "source": item["source"],
                "feed_url": item.get("feed_url"),
                "guid": item.get("guid"),
                "link": item.get("link"),
                "title": item["title"],
                "summary": item.get("summary") or "",
                "published_utc": item.get("published_utc"),
                "day": item["day"],
                "first_seen_utc": now,
            }
            cur = db.execute(
                "insert or ignore into headlines (id, source, feed_url, guid, link, title, summary, "
                "published_utc, day, first_seen_utc) values (:id, :source, :feed_url, :guid, :link, :title, "
                ":summary, :published_utc, :day, :first_seen_utc)",
                row,
            )
            new += cur.rowcount
            failpoint("ingest.row")
    return new


def headlines_for_day(db: sqlite_utils.Database, day: str) -> list[dict[str, Any]]:
    return list(db.query("select * from headlines where day = ? order by published_utc, id", [day]))
