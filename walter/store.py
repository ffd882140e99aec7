"""Walter's tables: Bluesky posts, authors, cursors and the articles view (the curriculum's log is the
engine's now: varro.engine.store m014). Its migrations, append-only, run after the engine's."""

from __future__ import annotations

import sqlite_utils

from varro.engine.store import MigrationSet

MIGRATIONS = MigrationSet()
migration = MIGRATIONS.add


@migration
def m003_walter_bluesky(db: sqlite_utils.Database) -> None:
    db["bsky_posts"].create(
        {
            "uri": str,  # at://did/app.bsky.feed.post/rkey, the natural key
            "cid": str,
            "author_did": str,
            "author_handle": str,
            "text": str,
            "link": str,  # the article link as found (external embed, record-with-media, or facet)
            "url_norm": str,  # normalised article URL: the article's key
            "link_title": str,
            "link_description": str,
            "created_utc": str,
            "indexed_utc": str,
            "like_count": int,  # NULL when the API did not say
            "repost_count": int,
            "reply_count": int,
            "quote_count": int,
            "counts_read_utc": str,
            "counts_age_hours": float,  # post age when the counts were read
            "counts_final": int,  # 1 once refreshed at the fixed age (comparable across posts)
            "deleted": int,  # 1 when getPosts no longer returns it
            "day": str,  # local day of created_utc
            "first_seen_utc": str,
        },
        pk="uri",
    )
    db["bsky_posts"].create_index(["url_norm"])
    db["bsky_posts"].create_index(["author_did"])
    db["bsky_authors"].create(
        {
            "did": str,
            "handle": str,
            "posts_json": str,  # [[uri, engagement], ...] of their recent own posts
            "fetched_utc": str,
            "expires_utc": str,
        },
        pk="did",
    )
    db["bsky_cursors"].create(
        {"query": str, "day": str, "cursor": str, "finished": int, "pages": int, "updated_utc": str},
        pk=("query", "day"),
    )
    db.create_view(
        "articles",
        """
        select url_norm, max(link_title) as title, max(link_description) as description,
               count(*) as posts, min(created_utc) as first_post_utc, min(day) as day
        from bsky_posts where coalesce(deleted, 0) = 0 group by url_norm
        """,
    )


@migration
def m004_walter_curriculum(db: sqlite_utils.Database) -> None:
    # The curriculum moved into the engine (varro.engine.store m014, which runs first on a new database and
    # creates the same table): then this is a no-op. Databases that applied it before keep their table.
    if "curriculum" in db.table_names():
        return
    db["curriculum"].create(
        {
            "run": str,
            "day": str,
            "url_norm": str,
            "regret": float,  # best minus mean reward in the article's recent groups (NULL: never tried)
            "variance": float,
            "score": float,  # what the pick weight was built from
            "probability": float,  # chance of being picked in the first draw
            "chosen": int,
            "created_utc": str,
        },
        pk=("run", "day", "url_norm"),
    )


@migration
def m010_walter_baseline_stats(db: sqlite_utils.Database) -> None:
    # Walter: each cached baseline post's age when its counts were read ({uri: hours}; NULL for authors
    # cached before), so a baseline is compared at the scored post's age; and the curriculum's first-draw
    # chance beside `probability`, which from here on is the inclusion probability of the day's k-of-n draw.
    db["bsky_authors"].add_column("post_age_hours_json", str)
    if "first_draw_probability" not in db["curriculum"].columns_dict:  # the engine's m014 has it
        db["curriculum"].add_column("first_draw_probability", float)


@migration
def m017_walter_skips(db: sqlite_utils.Database) -> None:
    # What a night's ingest left out and why, one row a person can read: a post the API sent malformed
    # (kind 'post', key its at-uri, or where it sat when it had none) or an author whose feed could not be
    # read (kind 'author', key the did: no baseline that night).
    db["walter_skips"].create(
        {"day": str, "kind": str, "key": str, "reason": str, "created_utc": str},
        pk=("day", "kind", "key"),
    )
