"""Crash safety: SIGKILL the nightly at many points, re-run, and compare with an uninterrupted run.

Each kill point is a failpoint (varro/engine/core/faults.py) that SIGKILLs the process
mid-stage: during ingest, sampling, scoring, an optimizer step, the checkpoint
write, the voice, inside database transactions, and between every stage's output
and its record. The comparison (`state`) is everything the night writes: every
table's rows and every file under the run's folder, less what names the time. The nights run as
processes forked from preloaded servers (tests/preloaded.py: torch and transformers imported once), the
reference, the killed night and its re-run each from its own, with its own string hash seed.
"""

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from preloaded import run as run_preloaded

DAYS = ("2026-11-02", "2026-11-03")
# (failpoint, the day it fires on); "#k" = the k-th time the point is reached
KILL_POINTS = [
    "ingest.row#25",  # inside the headline insert transaction of day 1
    "ingest.row#60",  # inside day 2's
    "sample.finished#3",  # three completions into day 1's sampling
    "db.insert_rollouts#10",  # inside the rollout insert transaction
    "step.ingested#2",  # day 2 ingested, nothing scored
    "db.save_scores#5",  # inside the score update transaction
    "train.step#1",  # after the first optimizer step of day 2
    "train.step#3",
    "db.insert_steps",  # steps written, transaction not committed
    "checkpoint.weights#2",  # adapters written, optimizer state not
    "checkpoint.rename#2",  # complete temp folder, not renamed
    "checkpoint.renamed#2",  # renamed, directory not fsynced, nothing after
    "step.checkpointed#2",  # checkpoint 2 done, day 2 not sampled
    "sample.finished#20",  # during day 2's sampling
    "step.sampled#2",  # day 2's delayed sampling stored, not recorded; the voice not run
    "voice.cadence#2",  # inside day 2's voice: the completions' cadence stored, the human text's not
    "step.voiced#2",  # day 2's voice stored, not recorded; the day not recorded as finished
]

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


def command(model, days=DAYS):
    """Varro's nightly backfill of `days` (first and last) on the sample, as run by the crash tests."""
    return [sys.executable, "-m", "varro.cli", "nightly", "--run", "c", "--source", "sample", "--quiet",
            "--from", days[0], "--to", days[-1], "--model", str(model), "--embedder", "hash", "--max-tokens", "10",
            "--prompts-per-day", "3", "--lora-layers", "2", "--group-size", "4"]


def nightly_env(home, failpoint=None):
    env = {**os.environ, "VARRO_HOME": str(home)}
    env.pop("VARRO_FAILPOINT", None)
    if failpoint:
        env["VARRO_FAILPOINT"] = failpoint
    return env


def nightly(model, home, failpoint=None, days=DAYS, server=None):
    """The nightly of `command` on `home` as a finished process; forked from `server` (tests/preloaded.py)
    when given, its output kept in the folder beside `home`."""
    if server is not None:
        return run_preloaded(server, command(model, days), nightly_env(home, failpoint), Path(f"{home}.out"))
    return subprocess.run(command(model, days), env=nightly_env(home, failpoint), capture_output=True, text=True,
                          timeout=300)


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


@pytest.fixture(scope="module")
def reference(tiny_model_path, tmp_path_factory, preloaded):
    home = tmp_path_factory.mktemp("ref")
    out = nightly(tiny_model_path, home, server=preloaded("reference"))
    assert out.returncode == 0, out.stderr
    return state(home)


@pytest.mark.parametrize("point", KILL_POINTS)
def test_killed_nightly_resumes_to_the_uninterrupted_state(point, tiny_model_path, tmp_path, reference, preloaded):
    killed = nightly(tiny_model_path, tmp_path, point, server=preloaded("killed"))
    assert killed.returncode == -9, f"{point} was never reached: {killed.stderr[-500:]}"
    before = checkpoint_hashes(tmp_path)
    again = nightly(tiny_model_path, tmp_path, server=preloaded("rerun"))
    assert again.returncode == 0, again.stderr
    after = checkpoint_hashes(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before  # finished checkpoints untouched
    assert_same_state(state(tmp_path), reference)
