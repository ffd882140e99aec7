"""SQLite storage through sqlite-utils: the connection, the migrations, and every query on the engine's tables.

Schema changes only through numbered, append-only migrations (`schema`, and each app's `App.migrations`),
recorded in `_migrations`. Each query is a named function in the module of its concern (`runs`, `stories`,
`panel`, `voice`, `embeddings`), re-exported here; an app queries its own tables itself.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import sqlite_utils

from varro.engine.core.errors import UserError
from varro.engine.store.clock import utc_now
from varro.engine.store.embeddings import cached_vectors, insert_vectors
from varro.engine.store.panel import (add_panel_members, complete_checkpoints, main_panel_draw, panel_cells,
                                      panel_means, panel_members, panel_sources, scored_panel_prompts,
                                      upsert_panel_scores)
from varro.engine.store.runs import (ROLLOUT_SORT_KEYS, add_run_notice, checkpointed_days, complete_groups,
                                     day_completions, day_entropy, day_prompts, day_rollouts, done_stages,
                                     first_day_entropy, first_prompt_with_source, guard_before, insert_rollouts,
                                     insert_steps, last_step_outside, load_groups, prompt_count, prompt_ids,
                                     prompts_by_id, record_guard, record_prompt_choice, record_stage, rollout_days,
                                     rollout_group, rollout_runs, rollout_with_prompt, run_guards, run_rollouts,
                                     save_scores, scored_rewards_with_source, scored_rollouts, split_prompts,
                                     trained_steps, upsert_curriculum, upsert_prompts)
from varro.engine.store.schema import MIGRATIONS, Migration, MigrationSet, migration
from varro.engine.store.stories import insert_story_links, stored_stories
from varro.engine.store.voice import (cadence_keys, cadence_model, day_cadence, day_template_share, human_cadence,
                                      human_cadence_ids, insert_human_cadence, upsert_cadence, upsert_voice_day)

__all__ = [
    "MigrationSet",
    "add_run_notice", "record_prompt_choice",
    "scored_rewards_with_source", "upsert_curriculum",
    "MIGRATIONS", "Migration", "MigrationError", "StoreError", "all_migrations", "backup", "checkpointed_days",
    "migrate", "migration", "open_db",
    "utc_now",
    # runs
    "ROLLOUT_SORT_KEYS", "complete_groups", "day_completions", "day_entropy", "day_prompts", "day_rollouts",
    "first_day_entropy", "first_prompt_with_source", "guard_before", "insert_rollouts",
    "insert_steps", "done_stages", "record_stage",
    "last_step_outside", "load_groups", "prompt_count", "prompt_ids", "prompts_by_id", "record_guard",
    "rollout_days", "rollout_group", "rollout_runs", "rollout_with_prompt", "run_guards", "run_rollouts",
    "save_scores", "scored_rollouts", "split_prompts", "trained_steps", "upsert_prompts",
    # stories, panel, voice, embeddings
    "insert_story_links", "stored_stories",
    "add_panel_members", "complete_checkpoints", "main_panel_draw", "panel_cells", "panel_means", "panel_members",
    "panel_sources", "scored_panel_prompts", "upsert_panel_scores",
    "cadence_keys", "cadence_model", "day_cadence", "day_template_share", "human_cadence", "human_cadence_ids",
    "insert_human_cadence", "upsert_cadence", "upsert_voice_day",
    "cached_vectors", "insert_vectors",
]


class MigrationError(RuntimeError, UserError):
    pass


def all_migrations() -> list[tuple[str, Migration]]:
    """The engine's migrations, then each registered application's (varro.engine.core.app), in that order.

    Names are unique across concerns (they are what `_migrations` records);
    raises MigrationError when two share one.
    """
    from varro.engine.core.app import apps

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


class StoreError(RuntimeError, UserError):
    """The database is locked, read-only, damaged or on a full disk; what it stored is intact."""


BUSY_TIMEOUT_S = 30.0  # how long a write waits for another process's write (a nightly) before giving up

# SQLite's primary result codes (the low byte of an extended one) that mean the file, not the query, failed
SQLITE_BUSY, SQLITE_LOCKED, SQLITE_READONLY, SQLITE_IOERR, SQLITE_CORRUPT, SQLITE_FULL, SQLITE_CANTOPEN = (
    5, 6, 8, 10, 11, 13, 14)
SQLITE_NOTADB = 26


def store_error(e: sqlite3.DatabaseError, path: Path) -> StoreError | None:
    """The one-line StoreError of a failure of the database file itself (locked, read-only, damaged, disk
    full), or None for any other error (a bad query, a constraint), which stays what it is."""
    code = (getattr(e, "sqlite_errorcode", None) or 0) & 0xFF
    if code in (SQLITE_BUSY, SQLITE_LOCKED):
        return StoreError(f"database {path} is locked by another process (another nightly?); nothing was "
                          "changed; try again when it finishes")
    if code in (SQLITE_READONLY, SQLITE_CANTOPEN):
        return StoreError(f"database {path} cannot be written ({e}): its file or folder is read-only; nothing "
                          "stored was changed; make the folder writable or use a writable --home")
    if code in (SQLITE_CORRUPT, SQLITE_NOTADB):
        return StoreError(f"database {path} is damaged or not a varro database ({e}); nothing was changed; "
                          f"move it away and restore a backup (its {path.name}.bak-* copies) or start a new one")
    if code == SQLITE_FULL:
        free = shutil.disk_usage(path.parent).free / 1e6
        return StoreError(f"database {path}: the disk is full ({free:.1f} MB free); the write was rolled back and "
                          "nothing stored was lost; free some space and run again")
    if code == SQLITE_IOERR:
        return StoreError(f"database {path} could not be read or written ({e}); the write was rolled back and "
                          "nothing stored was lost")
    return None


class StoreConnection(sqlite3.Connection):
    """A connection whose statements raise StoreError when the database file fails (see `store_error`), so a
    command ends in one line instead of a sqlite3 traceback."""

    path: Path

    def execute(self, *args):  # type: ignore[override]
        return self._guarded(super().execute, *args)

    def executemany(self, *args):  # type: ignore[override]
        return self._guarded(super().executemany, *args)

    def executescript(self, *args):  # type: ignore[override]
        return self._guarded(super().executescript, *args)

    def commit(self) -> None:
        self._guarded(super().commit)

    def _guarded(self, fn, *args):
        try:
            return fn(*args)
        except sqlite3.DatabaseError as e:
            err = store_error(e, self.path)
            if err is None:
                raise
            raise err from e


def open_db(path: str | Path) -> sqlite_utils.Database:
    """Open (creating if needed) the database at `path` and apply pending migrations.

    A database in a read-only folder is opened read-only, for the reading commands; raises StoreError when
    the file is locked, damaged or read-only where it must be written (see `store_error`)."""
    path = Path(path)
    if path.is_file() and not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)):
        return _open_read_only(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError(f"cannot create the data folder {path.parent} for database {path.name}: {e.strerror}; "
                         "use a writable --home") from e
    db = _connect(path, str(path), uri=False)
    with _closed_if_raised(db):
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        db.execute("PRAGMA foreign_keys=ON")
        migrate(db)
    return db


@contextlib.contextmanager
def _closed_if_raised(db: sqlite_utils.Database) -> Iterator[None]:
    """Closes `db`'s connection when the block raises, whatever it raises (Ctrl-C too), and lets the error go
    on: a failed open holds no file open. Nothing is caught."""
    done = False
    try:
        yield
        done = True
    finally:
        if not done:
            db.conn.close()


def _connect(path: Path, target: str, uri: bool) -> sqlite_utils.Database:
    """A Database on a StoreConnection to `target` (a path, or a file: URI), whose errors name `path`."""
    try:
        conn = sqlite3.connect(target, timeout=BUSY_TIMEOUT_S, uri=uri, factory=StoreConnection)
    except sqlite3.DatabaseError as e:
        err = store_error(e, path)
        if err is None:
            raise
        raise err from e
    conn.path = path
    return sqlite_utils.Database(conn)


def _open_read_only(path: Path) -> sqlite_utils.Database:
    """The database of a read-only folder or file, for reading; raises StoreError when it needs migrating.

    WAL reading needs a -shm file beside the database, which a read-only folder cannot get: there, with no
    unmerged -wal file, the database is opened as immutable (everything is in the main file, and nothing
    can write into that folder). A -wal file left without its -shm cannot be read that way (StoreError)."""
    wal = path.with_name(path.name + "-wal")
    unmerged = wal.is_file() and wal.stat().st_size > 0
    if os.access(path.parent, os.W_OK) or path.with_name(path.name + "-shm").is_file():
        mode = "mode=ro"
    elif not unmerged:
        mode = "immutable=1"
    else:
        raise StoreError(f"database {path} is in a read-only folder with unmerged writes in {wal.name} and no "
                         f"{path.name}-shm: SQLite cannot read it there; nothing was changed; make the folder "
                         "writable once (any varro command merges them)")
    db = _connect(path, f"{path.resolve().as_uri()}?{mode}", uri=True)
    with _closed_if_raised(db):
        names = db.table_names()
        done = {row["name"] for row in db["_migrations"].rows} if "_migrations" in names else set()
    pending = [name for name, _ in all_migrations() if name not in done]
    if pending:
        db.conn.close()
        raise StoreError(f"database {path} is read-only and needs {len(pending)} migrations this version "
                         f"applies (first {pending[0]}); nothing was changed; run once where it is writable")
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
