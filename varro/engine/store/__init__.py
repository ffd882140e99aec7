"""SQLite storage through sqlite-utils: the connection, the migrations, and every query on the engine's tables.

The schema changes only through numbered, append-only migration functions:
the engine's own (`MIGRATIONS`, in `schema`) and each application's
(`App.migrations`, kept in the app's own store module); each applied one is
recorded by name in `_migrations`. Never edit an applied migration: add a new one.

This package is the only place with SQL on the engine's tables; each query is
a named function in the module of its concern, re-exported here:
`runs` (prompts, rollouts, steps, guards), `stories`, `panel` (the panel and
its scores), `voice` (cadence, human cadence, voice days) and `embeddings`.
An application queries its own tables itself and the engine's through these.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import sqlite_utils

from varro.engine.errors import UserError
from varro.engine.store.clock import utc_now
from varro.engine.store.embeddings import cached_vectors, insert_vectors
from varro.engine.store.panel import (add_panel_members, complete_checkpoints, main_panel_draw, panel_cells,
                                      panel_members, panel_sources, scored_panel_prompts, upsert_panel_scores)
from varro.engine.store.runs import (ROLLOUT_SORT_KEYS, add_run_notice, record_prompt_choice, complete_groups, day_completions, day_entropy,
                                     day_prompts, day_rollouts, eval_reward_by_day, first_day_entropy,
                                     first_prompt_with_source, guard_before, insert_rollouts, insert_steps, last_step_outside,
                                     load_groups, prompt_count, prompt_ids, prompts_by_id, record_guard,
                                     rollout_days, rollout_group, rollout_runs, rollout_with_prompt, run_guards,
                                     run_rollouts, save_scores, scored_rewards_with_source, scored_rollouts,
                                     split_prompts, trained_steps, upsert_curriculum, upsert_prompts)
from varro.engine.store.schema import MIGRATIONS, Migration, MigrationSet, migration
from varro.engine.store.stories import insert_story_links, stored_stories
from varro.engine.store.voice import (cadence_keys, cadence_model, day_cadence, day_template_share, human_cadence,
                                      human_cadence_ids, insert_human_cadence, upsert_cadence, upsert_voice_day)

__all__ = [
    "MigrationSet",
    "add_run_notice", "record_prompt_choice",
    "scored_rewards_with_source", "upsert_curriculum",
    "MIGRATIONS", "Migration", "MigrationError", "all_migrations", "backup", "migrate", "migration", "open_db",
    "utc_now",
    # runs
    "ROLLOUT_SORT_KEYS", "complete_groups", "day_completions", "day_entropy", "day_prompts", "day_rollouts",
    "eval_reward_by_day", "first_day_entropy", "first_prompt_with_source", "insert_rollouts", "insert_steps",
    "last_step_outside", "load_groups", "prompt_count", "prompt_ids", "prompts_by_id", "record_guard",
    "rollout_days", "rollout_group", "rollout_runs", "rollout_with_prompt", "run_guards", "run_rollouts",
    "save_scores", "scored_rollouts", "split_prompts", "trained_steps", "upsert_prompts",
    # stories, panel, voice, embeddings
    "insert_story_links", "stored_stories",
    "add_panel_members", "complete_checkpoints", "main_panel_draw", "panel_cells", "panel_members",
    "panel_sources", "scored_panel_prompts", "upsert_panel_scores",
    "cadence_keys", "cadence_model", "day_cadence", "day_template_share", "human_cadence", "human_cadence_ids",
    "insert_human_cadence", "upsert_cadence", "upsert_voice_day",
    "cached_vectors", "insert_vectors",
]


class MigrationError(RuntimeError, UserError):
    pass


def all_migrations() -> list[tuple[str, Migration]]:
    """The engine's migrations, then each registered application's (varro.engine.app), in that order.

    Names are unique across concerns (they are what `_migrations` records);
    raises MigrationError when two share one.
    """
    from varro.engine.app import apps

    out = list(MIGRATIONS)  # this package's attribute, read now: a test may replace it
    for app in apps().values():
        out += list(app.migrations)
    seen: dict[str, int] = {}
    for name, _ in out:
        seen[name] = seen.get(name, 0) + 1
    dup = sorted(n for n, k in seen.items() if k > 1)
    if dup:
        raise MigrationError(f"two migrations share a name: {dup}; name an app's migrations after the app")
    return out


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
    migrations = all_migrations()
    known = [name for name, _ in migrations]
    unknown = done - set(known)
    if unknown:
        raise MigrationError(
            f"database has migrations this version does not know: {sorted(unknown)}; "
            "it was written by a newer version of varro"
        )
    pending = [name for name, _ in migrations if name not in done]
    if pending and done:
        backup(db, f"before-{pending[0]}")
    applied = []
    for name, fn in migrations:
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
