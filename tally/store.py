"""tally's tables: the items read from the user's file, the rows that could not be read, and a view per group.
Its migrations, append-only, run after the engine's (varro.engine.store)."""

from __future__ import annotations

import sqlite_utils

from varro.engine.store import MigrationSet

MIGRATIONS = MigrationSet()
migration = MIGRATIONS.add


@migration
def m015_tally_items(db: sqlite_utils.Database) -> None:
    db["tally_items"].create(
        {
            "id": str,  # the file's id column, or a hash of group, author, created time and text: the natural key
            "group_key": str,  # what one prompt is made from (a URL, a topic)
            "author": str,
            "text": str,
            "title": str,
            "description": str,
            "created_utc": str,
            "day": str,  # the local day of created_utc (tally.timezone)
            "counts_json": str,  # {count column: value}, null where the file gave none (never a silent zero)
            "counts_age_hours": float,  # the item's age when its counts were read; NULL: final counts
            "file": str,  # where it was read from when first stored or last changed, and on which line
            "line": int,
            "first_seen_utc": str,
            "updated_utc": str,  # when its counts (or title, description) last changed
        },
        pk="id",
    )
    db["tally_items"].create_index(["group_key"])
    db["tally_items"].create_index(["author"])
    db["tally_items"].create_index(["day"])
    # Rows of the last read of each file that could not be read as an item, and why.
    db["tally_rejects"].create(
        {"file": str, "line": int, "reason": str, "raw": str, "first_seen_utc": str},
        pk=("file", "line"),
    )
    db.create_view(
        "tally_groups",
        """
        select g.group_key,
               (select t.title from tally_items t where t.group_key = g.group_key and coalesce(t.title, '') != ''
                order by t.created_utc, t.id limit 1) as title,
               count(*) as items, count(distinct g.author) as authors, min(g.day) as first_day,
               max(g.day) as last_day
        from tally_items g group by g.group_key
        """,
    )
