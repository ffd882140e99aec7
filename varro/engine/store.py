"""SQLite storage through sqlite-utils: connection settings, migrations, and row writers.

The schema changes only through the numbered, append-only functions in
MIGRATIONS; each applied one is recorded in `_migrations`. Never edit an
applied migration: add a new one.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import sqlite_utils

from varro.engine.faults import failpoint

Migration = Callable[[sqlite_utils.Database], None]
MIGRATIONS: list[tuple[str, Migration]] = []


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append((fn.__name__, fn))
    return fn


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@migration
def m001_engine(db: sqlite_utils.Database) -> None:
    db["prompts"].create(
        {
            "id": str,  # the application's stable id, e.g. "varro:2026-11-02:<guid>"
            "app": str,
            "day": str,
            "split": str,  # "train" or "eval"
            "text": str,  # the user message given to the model
            "source_json": str,  # what the prompt was built from
            "created_utc": str,
        },
        pk="id",
    )
    db["prompts"].create_index(["app", "day"])
    db["rollouts"].create(
        {
            "id": int,
            "run": str,
            "day": str,  # the day the completion was sampled for
            "prompt_id": str,
            "checkpoint": str,  # "base" or the checkpoint day that sampled it
            "group_index": int,  # position of the completion within its group
            "completion": str,
            "finish_reason": str,
            "prompt_tokens": int,
            "completion_tokens": int,
            "prompt_token_ids_json": str,
            "completion_token_ids_json": str,  # exact sampled ids, EOS included when it stopped
            "sampling_json": str,
            "reward": float,  # NULL until scored
            "components_json": str,
            "advantage": float,  # NULL until the group is normalised
            "sampled_utc": str,
            "scored_utc": str,
        },
        pk="id",
        foreign_keys=[("prompt_id", "prompts", "id")],
    )
    db["rollouts"].create_index(["run", "day", "prompt_id", "group_index"], unique=True)
    db["steps"].create(
        {
            "id": int,
            "run": str,
            "day": str,
            "step": int,  # global optimizer step counter of the run
            "minibatch": int,
            "sequences": int,
            "loss": float,
            "kl": float,
            "clip_fraction": float,
            "ratio_mean": float,
            "reward_mean": float,
            "reward_std": float,
            "grad_norm": float,
            "learning_rate": float,
            "duration_ms": float,
            "peak_memory_mb": float,
            "skipped": int,
            "skip_reason": str,
            "created_utc": str,
        },
        pk="id",
    )
    db["steps"].create_index(["run", "step"], unique=True)
    db.create_view(
        "rollouts_readable",
        """
        select r.id, r.run, r.day, r.checkpoint, p.split, r.prompt_id, p.text as prompt,
               r.group_index, r.completion, r.reward, r.advantage, r.components_json,
               r.completion_tokens, r.finish_reason
        from rollouts r join prompts p on p.id = r.prompt_id
        """,
    )


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
    db["embeddings"].create(
        {"model": str, "content_sha1": str, "dim": int, "vector": bytes, "created_utc": str},
        pk=("model", "content_sha1"),
    )


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
def m005_reading_views(db: sqlite_utils.Database) -> None:
    # Views for reading a run in Datasette; components are pulled out of components_json
    # (NULL where the app does not have that component or the rollout is not scored yet).
    db.create_view(
        "rollouts_by_day",
        """
        select r.id, r.run, p.app, r.day, p.split, r.prompt_id, p.text as prompt, r.group_index,
               r.checkpoint, r.completion, r.reward, r.advantage,
               json_extract(r.components_json, '$.semantic') as semantic,
               json_extract(r.components_json, '$.format') as format,
               json_extract(r.components_json, '$.leak') as leak,
               json_extract(r.components_json, '$.echo') as echo,
               json_extract(r.components_json, '$.transfer') as transfer,
               json_extract(r.components_json, '$.copy') as copy,
               json_extract(r.components_json, '$.hashtags') as hashtags,
               json_extract(r.components_json, '$.words') as words,
               r.completion_tokens, r.finish_reason
        from rollouts r join prompts p on p.id = r.prompt_id
        order by r.run, r.day, r.prompt_id, r.group_index
        """,
    )
    db.create_view(
        "day_summary",
        """
        select r.run, p.app, r.day, count(*) as rollouts, count(distinct r.prompt_id) as prompts,
               sum(r.reward is not null) as scored,
               avg(case when p.split = 'train' then r.reward end) as train_reward_mean,
               avg(case when p.split = 'eval' then r.reward end) as eval_reward_mean,
               min(r.reward) as reward_min, max(r.reward) as reward_max,
               avg(r.completion_tokens) as completion_tokens_mean
        from rollouts r join prompts p on p.id = r.prompt_id
        group by r.run, p.app, r.day
        order by r.run, p.app, r.day
        """,
    )
    db.create_view(
        "steps_by_day",
        """
        select run, day, count(*) as steps, sum(skipped) as skipped, avg(loss) as loss_mean,
               avg(case when skipped = 0 then kl end) as kl_mean,
               avg(case when skipped = 0 then clip_fraction end) as clip_fraction_mean,
               avg(reward_mean) as reward_mean, max(grad_norm) as grad_norm_max,
               sum(duration_ms) as duration_ms, max(peak_memory_mb) as peak_memory_mb
        from steps group by run, day order by run, day
        """,
    )


@migration
def m006_guards(db: sqlite_utils.Database) -> None:
    db["guards"].create(
        {"run": str, "day": str, "app": str, "kind": str, "reason": str, "created_utc": str},
        pk=("run", "day", "kind"),
    )


@migration
def m007_sampler_logprobs(db: sqlite_utils.Database) -> None:
    # log q(token) per completion token under the distribution the sampler drew it from
    # (temperature, top-k / top-p renormalised); NULL for rows sampled before this migration
    db["rollouts"].add_column("sampler_logprobs_json", str)
    db["steps"].add_column("sampler_gap", float)  # mean log q_sampler - log pi_old per token
    db["steps"].add_column("kl_after", float)  # KL to the base after the step's update (the day's last)
    db["steps"].add_column("flat_groups", int)  # groups dropped that day: reward std below the tolerance
    db["steps"].add_column("groups", int)  # groups the day's scored rollouts formed


@migration
def m008_stories(db: sqlite_utils.Database) -> None:
    # Items (Varro's headlines, Walter's articles) linked into stories by embedding similarity,
    # so a held-out story never sits on both sides of the split.
    db["stories"].create(
        {
            "app": str,
            "item_id": str,  # headline id, or an article's url_norm
            "story_id": str,  # the item id of the story's first item
            "day": str,
            "linked_to": str,  # the earlier item it was most similar to (NULL: it opened the story)
            "cosine": float,
            "created_utc": str,
        },
        pk=("app", "item_id"),
    )
    db["stories"].create_index(["app", "story_id"])
    db["stories"].create_index(["app", "day"])


@migration
def m009_panel(db: sqlite_utils.Database) -> None:
    # A run's fixed evaluation panel (held-out prompts, one per story, appended until full) and its
    # scores: every checkpoint of the run (and the base) on the same prompts with the same seeds,
    # computed once.
    db["panel"].create(
        {"run": str, "position": int, "prompt_id": str, "story_id": str, "added_utc": str},
        pk=("run", "prompt_id"),
        foreign_keys=[("prompt_id", "prompts", "id")],
    )
    db["panel"].create_index(["run", "position"], unique=True)
    db["panel_scores"].create(
        {
            "run": str,
            "checkpoint": str,  # "base" or a checkpoint day
            "prompt_id": str,
            "seed": int,
            "samples": int,  # completions drawn per prompt in that draw
            "sample_index": int,
            "completion": str,
            "reward": float,
            "components_json": str,
            "created_utc": str,
        },
        pk=("run", "checkpoint", "prompt_id", "seed", "samples", "sample_index"),
        foreign_keys=[("prompt_id", "prompts", "id")],
    )


@migration
def m010_walter_baseline_stats(db: sqlite_utils.Database) -> None:
    # Walter: each cached baseline post's age when its counts were read ({uri: hours}; NULL for authors
    # cached before), so a baseline is compared at the scored post's age; and the curriculum's first-draw
    # chance beside `probability`, which from here on is the inclusion probability of the day's k-of-n draw.
    db["bsky_authors"].add_column("post_age_hours_json", str)
    db["curriculum"].add_column("first_draw_probability", float)


@migration
def m011_step_entropy(db: sqlite_utils.Database) -> None:
    db["steps"].add_column("entropy", float)  # the policy's mean per-token entropy at T on the step's rows



@migration
def m012_voice(db: sqlite_utils.Database) -> None:
    # The cadence (varro.cadence) of each completion and of the human text it is rewarded against,
    # under the run's base model, and each day's cross-prompt template share (varro.voice).
    # keyed by rollout id with the completion's sha1: a row whose text no longer matches is stale
    db["cadence"].create({"rollout_id": int, "text_sha1": str, "model": str, "features_json": str,
                          "created_utc": str}, pk="rollout_id")
    db["human_cadence"].create({"model": str, "app": str, "item_id": str, "text_sha1": str, "features_json": str,
                                "created_utc": str}, pk=("model", "app", "item_id"))
    db["voice_days"].create({"run": str, "app": str, "day": str, "template_share": float, "completions": int,
                             "created_utc": str}, pk=("run", "app", "day"))


class MigrationError(RuntimeError):
    pass


def open_db(path: str | Path) -> sqlite_utils.Database:
    """Open (creating if needed) the database at `path` and apply pending migrations."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=30.0)
    db = sqlite_utils.Database(conn)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA busy_timeout=30000")
    db.execute("PRAGMA foreign_keys=ON")
    migrate(db)
    return db


def migrate(db: sqlite_utils.Database) -> list[str]:
    """Apply pending migrations in order; return the names applied."""
    if "_migrations" not in db.table_names():
        db["_migrations"].create({"name": str, "applied_utc": str}, pk="name")
    done = {row["name"] for row in db["_migrations"].rows}
    known = [name for name, _ in MIGRATIONS]
    unknown = done - set(known)
    if unknown:
        raise MigrationError(
            f"database has migrations this version does not know: {sorted(unknown)}; "
            "it was written by a newer version of varro"
        )
    pending = [name for name, _ in MIGRATIONS if name not in done]
    if pending and done:
        backup(db, f"before-{pending[0]}")
    applied = []
    for name, fn in MIGRATIONS:
        if name in done:
            continue
        with db.atomic():
            fn(db)
            db["_migrations"].insert({"name": name, "applied_utc": utc_now()})
        applied.append(name)
    return applied


def backup(db: sqlite_utils.Database, label: str) -> Path | None:
    """Copy the database file next to itself (SQLite's online backup); returns the copy, None in memory."""
    path = next((row[2] for row in db.execute("pragma database_list") if row[1] == "main"), "")
    if not path:
        return None
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    target = Path(f"{path}.bak-{stamp}-{label}")
    dest = sqlite3.connect(str(target))
    try:
        db.conn.backup(dest)
        dest.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
    finally:
        dest.close()
    return target


def upsert_prompts(db: sqlite_utils.Database, prompts: Iterable[dict[str, Any]]) -> None:
    rows = []
    for p in prompts:
        row = dict(p)
        row.setdefault("created_utc", utc_now())
        if isinstance(row.get("source_json"), (dict, list)):
            row["source_json"] = json.dumps(row["source_json"], sort_keys=True)
        rows.append(row)
    # created_utc of an existing prompt is kept: upsert only rewrites given columns.
    existing = {r["id"] for r in db.query("select id from prompts")} if rows else set()
    for row in rows:
        if row["id"] in existing:
            row.pop("created_utc")
    db["prompts"].upsert_all(rows, pk="id")


def insert_rollouts(
    db: sqlite_utils.Database,
    run: str,
    day: str,
    checkpoint: str,
    groups: list,
    sampling: dict[str, Any],
) -> None:
    """Store freshly sampled groups (reward NULL) and set each Rollout's `id`.

    A row that already exists for (run, day, prompt, group_index) is kept as it
    is, so re-running a day never duplicates or rewrites a sample.
    """
    now = utc_now()
    sampling_json = json.dumps(sampling, sort_keys=True)
    with db.atomic():
        for group in groups:
            for r in group:
                key = [run, day, r.prompt_id, r.group_index]
                found = list(
                    db.query(
                        "select id from rollouts where run=? and day=? and prompt_id=? and group_index=?",
                        key,
                    )
                )
                if found:
                    r.id = found[0]["id"]
                    continue
                failpoint("db.insert_rollouts")
                r.id = db["rollouts"].insert(
                    {
                        "run": run,
                        "day": day,
                        "prompt_id": r.prompt_id,
                        "checkpoint": checkpoint,
                        "group_index": r.group_index,
                        "completion": r.text,
                        "finish_reason": r.finish_reason,
                        "prompt_tokens": len(r.prompt_tokens),
                        "completion_tokens": len(r.completion_tokens),
                        "prompt_token_ids_json": json.dumps(r.prompt_tokens),
                        "completion_token_ids_json": json.dumps(r.completion_tokens),
                        "sampling_json": sampling_json,
                        "sampler_logprobs_json": (None if r.sampler_logprobs is None
                                                  else json.dumps(r.sampler_logprobs)),
                        "sampled_utc": now,
                    }
                ).last_pk


def save_scores(db: sqlite_utils.Database, groups: list) -> None:
    """Write reward, components and advantage of already-stored rollouts."""
    now = utc_now()
    with db.atomic():
        for group in groups:
            for r in group:
                if r.id is None:
                    raise ValueError(f"rollout {r.prompt_id}/{r.group_index} was never stored")
                failpoint("db.save_scores")
                db["rollouts"].update(
                    r.id,
                    {
                        "reward": r.reward,
                        "components_json": json.dumps(r.components, sort_keys=True),
                        "advantage": r.advantage,
                        "scored_utc": now,
                    },
                )


def load_groups(db: sqlite_utils.Database, run: str, day: str) -> list[list]:
    """The stored groups of `day`, as Rollouts with their exact token ids, in prompt order."""
    from varro.engine.rollouts import Rollout

    groups: dict[str, list] = {}
    for row in db.query(
        "select * from rollouts where run=? and day=? order by prompt_id, group_index", [run, day]
    ):
        groups.setdefault(row["prompt_id"], []).append(
            Rollout(
                id=row["id"],
                prompt_id=row["prompt_id"],
                group_index=row["group_index"],
                prompt_tokens=json.loads(row["prompt_token_ids_json"]),
                completion_tokens=json.loads(row["completion_token_ids_json"]),
                text=row["completion"],
                finish_reason=row["finish_reason"],
                reward=row["reward"],
                components=json.loads(row["components_json"]) if row["components_json"] else {},
                advantage=row["advantage"],
                sampler_logprobs=(json.loads(row["sampler_logprobs_json"])
                                  if row.get("sampler_logprobs_json") else None),
            )
        )
    return list(groups.values())


def insert_steps(db: sqlite_utils.Database, run: str, day: str, rows: list[dict]) -> None:
    """Record the day's optimizer steps, replacing any rows of an earlier attempt at the day.

    A day is trained only while it has no checkpoint, so rows already there come
    from an attempt that died before its checkpoint: they describe updates that
    were thrown away.
    """
    now = utc_now()
    with db.atomic():
        db.execute("delete from steps where run = ? and day = ?", [run, day])
        db["steps"].insert_all(
            [{"run": run, "day": day, "created_utc": now, **row} for row in rows],
        )
        failpoint("db.insert_steps")
