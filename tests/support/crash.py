"""The crash tests' harness: the nightly backfills they kill (Varro's and Walter's) and `state`, everything a
night writes (every table's rows and every file of the run's folder, less what names the time), compared with
`assert_same_state`. Used by tests/system/test_crash.py, test_kills.py and tests/walter/test_faults.py."""

import hashlib
import json
import os
import sqlite3
import sys
import tomllib
from pathlib import Path

import pytest

DAYS = ("2026-11-02", "2026-11-03")  # the nightly backfill of the crash tests: first and last day

# Columns that say when a row was written: a resumed night writes them later. Dropped from every table but
# those where they are the item's own time (a post's creation), which is data.
WRITE_TIMES = ("applied_utc", "created_utc", "sampled_utc", "scored_utc", "done_utc", "added_utc",
               "first_seen_utc")
ITEM_TIMES = {("bsky_posts", "created_utc"), ("tally_items", "created_utc")}
# Columns that measure this process: how long a step took, the process's peak memory (a resumed night's
# process loaded other things before it).
TIMINGS = ("duration_ms", "peak_memory_mb")
# Columns measured in pieces sized by the free memory (varro.engine.train.trainer's final_health): their last bits
# depend on how busy the machine is, so they are compared to a relative 1e-6, not exactly.
MEASURED = {"steps": ("kl_after", "kl_after_k3", "entropy_after")}
# Files under the run's folder that are not its state: the day logs (appended to by every attempt) and the
# lock (it holds the pid of the last nightly).
NOT_STATE = ("logs", "nightly.lock")


def varro_command(model, days=DAYS):
    """Varro's nightly backfill of `days` (first and last) on the sample, as run by the crash tests."""
    return [sys.executable, "-m", "varro.cli", "nightly", "--run", "c", "--source", "sample", "--quiet",
            "--from", days[0], "--to", days[-1], "--model", str(model), "--embedder", "hash", "--max-tokens", "10",
            "--prompts-per-day", "3", "--lora-layers", "2", "--group-size", "4"]


def walter_command(model, days=DAYS):
    """Walter's nightly backfill of `days` (first and last) on the sample, as run by the crash tests."""
    return [sys.executable, "-m", "walter.cli", "nightly", "--run", "c", "--source", "sample", "--quiet",
            "--from", days[0], "--to", days[-1], "--model", str(model), "--embedder", "hash", "--max-tokens", "8",
            "--articles-per-day", "2", "--lora-layers", "2", "--group-size", "4"]


def nightly_env(home, failpoint=None):
    env = {**os.environ, "VARRO_HOME": str(home)}
    env.pop("VARRO_FAILPOINT", None)
    if failpoint:
        env["VARRO_FAILPOINT"] = failpoint
    return env


def checkpoint_hashes(home):
    root = Path(home) / "runs" / "c" / "checkpoints"
    out = {}
    for d in sorted(root.glob("20*")):
        for f in sorted(d.iterdir()):
            out[f"{d.name}/{f.name}"] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def compared_columns(db, table):
    """The columns of `table` that a resumed night must write exactly as a clean one."""
    cols = [r[1] for r in db.execute(f"pragma table_info([{table}])")]
    return [c for c in cols if c not in TIMINGS and (c not in WRITE_TIMES or (table, c) in ITEM_TIMES)]


def tables(db):
    """Every table's rows (sorted), without the columns that name when or how long."""
    out = {}
    for (table,) in db.execute("select name from sqlite_master where type = 'table' order by name"):
        cols = compared_columns(db, table)
        rows = db.execute(f"select {', '.join(f'[{c}]' for c in cols)} from [{table}]").fetchall()
        out[table] = (cols, loosened(table, cols, sorted(rows, key=repr)))
    return out


def loosened(table, cols, rows):
    """`rows` with the MEASURED values of `table` wrapped to compare to a relative 1e-6."""
    loose = [cols.index(c) for c in MEASURED.get(table, ())]
    return [tuple(pytest.approx(v, rel=1e-6) if k in loose and v is not None else v for k, v in enumerate(row))
            for row in rows]


def untimed(value):
    """A parsed JSON or TOML value without its `*_utc` keys, at any depth."""
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if not k.endswith("_utc")}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


def files(run_path):
    """Every file under the run's folder but NOT_STATE: a link by its target, JSON and TOML by their content
    less timestamps, anything else (weights, optimizer state) by its sha256."""
    out = {}
    for path in sorted(run_path.rglob("*")):
        rel = path.relative_to(run_path).as_posix()
        if rel.split("/")[0] in NOT_STATE or (path.is_dir() and not path.is_symlink()):
            continue
        if path.is_symlink():
            out[rel] = f"-> {os.readlink(path)}"
        elif path.suffix == ".json":
            out[rel] = untimed(json.loads(path.read_text()))
        elif path.suffix == ".toml":
            out[rel] = untimed(tomllib.loads(path.read_text()))
        else:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def state(home, run="c"):
    """Everything a night writes: {"tables": every table's rows, "files": every file of the run's folder}."""
    db = sqlite3.connect(Path(home) / "data" / "varro.db")
    assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
    got = {"tables": tables(db), "files": files(Path(home) / "runs" / run)}
    db.close()
    return got


def assert_same_state(got, want):
    """Table by table and file by file, so a failure names what differs."""
    assert sorted(got["tables"]) == sorted(want["tables"])
    for name, (cols, rows) in want["tables"].items():
        assert got["tables"][name][0] == cols, name
        assert got["tables"][name][1] == rows, f"table {name} differs"
    assert sorted(got["files"]) == sorted(want["files"])
    for name, content in want["files"].items():
        assert got["files"][name] == content, f"file {name} differs"
