"""Varro's tables: feeds and headlines. Its migrations, append-only, run after the engine's (varro.engine.store)."""

from __future__ import annotations

import sqlite_utils

from varro.engine.store import MigrationSet

MIGRATIONS = MigrationSet()
migration = MIGRATIONS.add


@migration
def m002_varro_headlines(db: sqlite_utils.Database) -> None:
    db["feeds"].create(
        {
            "url": str,
            "name": str,
            "last_status": int,  # HTTP status of the last fetch (304 = nothing new)
            "last_error": str,  # NULL when the last fetch worked
            "etag": str,
            "last_modified": str,
            "bozo": int,  # 1 when feedparser flagged the last body as malformed
            "bozo_message": str,
            "new_items": int,  # headlines first seen in the last fetch
            "last_fetched_utc": str,
        },
        pk="url",
    )
    db["headlines"].create(
        {
            "id": str,  # sha1 of source + (guid or normalised link)
            "source": str,  # the outlet / feed title
            "feed_url": str,
            "guid": str,
            "link": str,
            "title": str,
            "summary": str,
            "published_utc": str,
            "day": str,  # the local day the headline belongs to
            "first_seen_utc": str,
        },
        pk="id",
    )
    db["headlines"].create_index(["day"])
