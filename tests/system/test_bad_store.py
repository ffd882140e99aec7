"""A database that cannot be used costs one line, never a traceback, and loses nothing (issue 30).

Locked by another writer, damaged (truncated, a garbage header), a full disk
during a write, and a read-only folder: each is a StoreError (a UserError, so
the CLI prints it as one line) saying what happened and that nothing stored
was lost; reading still works in a read-only folder.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from varro.cli import cli as varro_cli
from varro.engine import store
from varro.engine.core.errors import UserError
from varro.engine.core.paths import db_path
from varro.engine.store import StoreError

DAY = "2026-11-02"


def stored_db(path: Path) -> Path:
    """A migrated database at `path` holding one row of its own table, closed (its -wal merged)."""
    db = store.open_db(path)
    db.execute("CREATE TABLE kept (x INTEGER)")
    db.execute("INSERT INTO kept VALUES (1)")
    db.conn.close()
    return path


def test_store_error_is_a_user_error():
    assert issubclass(StoreError, UserError)


def test_locked_database_write_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "BUSY_TIMEOUT_S", 0.1)
    path = stored_db(tmp_path / "varro.db")
    other = sqlite3.connect(path)
    other.execute("BEGIN IMMEDIATE")  # another nightly in the middle of a write
    other.execute("INSERT INTO kept VALUES (2)")
    db = store.open_db(path)  # reading still works beside the writer (WAL)
    assert [r["x"] for r in db.query("SELECT x FROM kept")] == [1]
    with pytest.raises(StoreError, match=rf"database {path} is locked by another process .*nothing was changed"):
        db.execute("INSERT INTO kept VALUES (3)")
    other.commit()
    db.execute("INSERT INTO kept VALUES (3)")  # once it finishes, the same connection writes
    assert [r["x"] for r in db.query("SELECT x FROM kept ORDER BY x")] == [1, 2, 3]


@pytest.mark.parametrize("damage", ["truncated", "garbage header"])
def test_damaged_database_is_one_line_and_untouched(varro_home, damage):
    path = stored_db(db_path(varro_home))
    data = path.read_bytes()
    page = int.from_bytes(data[16:18], "big")
    bad = data[: len(data) // page // 2 * page] if damage == "truncated" else b"garbage!" * 16 + data[128:]
    path.write_bytes(bad)
    with pytest.raises(StoreError, match=rf"database {path} is damaged or not a varro database"):
        store.open_db(path)
    out = CliRunner().invoke(varro_cli, ["ingest", "--date", DAY, "--source", "sample", "--home", str(varro_home)])
    assert out.exit_code == 1 and out.output.startswith(f"error: database {path} is damaged"), out.output
    assert out.output.count("\n") == 1 and "Traceback" not in out.output
    assert path.read_bytes() == bad  # nothing written over what was there


def test_full_disk_during_a_write_rolls_back(tmp_path):
    """SQLite's page ceiling stands in for the disk: it fails the write with the same SQLITE_FULL."""
    path = stored_db(tmp_path / "varro.db")
    db = store.open_db(path)
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(StoreError, match=rf"database {path}: the disk is full .*nothing stored was lost"):
        with db.atomic():
            db.execute("INSERT INTO kept VALUES (2)")
            db.execute("CREATE TABLE big (blob BLOB)")
            db.execute("INSERT INTO big VALUES (zeroblob(1000000))")
    assert [r["x"] for r in db.query("SELECT x FROM kept")] == [1]
    assert "big" not in db.table_names()


def test_other_errors_keep_their_type(tmp_path):
    """Only a failing file becomes a StoreError: a bad query is a bug and keeps its sqlite3 error."""
    db = store.open_db(tmp_path / "varro.db")
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        db.execute("SELECT * FROM nothing_here")


@pytest.fixture
def read_only(tmp_path):
    """Make a folder read-only for this process: chmod for a normal user, a read-only bind mount for root
    (which ignores permissions); skips where neither is possible. Yields the function that does it."""
    undo = []

    def make(folder: Path) -> Path:
        if os.geteuid() != 0:
            folder.chmod(0o555)
            undo.append(lambda: folder.chmod(0o755))
            return folder
        view = tmp_path / f"{folder.name}-ro"
        view.mkdir()
        for cmd in (["mount", "--bind", str(folder), str(view)], ["mount", "-o", "remount,ro,bind", str(view)]):
            if shutil.which("mount") is None or subprocess.run(cmd, capture_output=True).returncode != 0:
                pytest.skip("root cannot make a read-only folder here (no bind mount)")
            if cmd[1] == "--bind":
                undo.append(lambda: subprocess.run(["umount", "--lazy", str(view)], check=True))
        return view

    yield make
    for fn in reversed(undo):
        fn()


def test_read_only_folder_still_reads(tmp_path, read_only):
    path = stored_db(tmp_path / "data" / "varro.db")
    before = path.read_bytes()
    folder = read_only(path.parent)
    db = store.open_db(folder / "varro.db")
    try:
        assert [r["x"] for r in db.query("SELECT x FROM kept")] == [1]
        with pytest.raises(StoreError, match="cannot be written .*read-only; nothing stored was changed"):
            db.execute("INSERT INTO kept VALUES (2)")
    finally:
        db.conn.close()  # before the folder is unmounted
    assert path.read_bytes() == before


def open_files(path: Path) -> list[str]:
    """This process's open file descriptors on `path` or its -wal / -shm files (Linux's /proc)."""
    fds = Path("/proc/self/fd")
    out = []
    for fd in fds.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed while listing
            continue
        if target.startswith(str(path)):
            out.append(target)
    return out


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads the open files from Linux's /proc")
def test_a_failed_open_leaves_no_file_open(tmp_path):
    """A file that is not a database fails in open_db after the connection is made; the connection is
    closed before the error goes on (store._closed_if_raised), so nothing holds the file."""
    path = tmp_path / "garbage.db"
    path.write_bytes(b"not a database" * 400)
    with pytest.raises(StoreError, match="not a varro database"):
        store.open_db(path)
    assert open_files(path) == []
