"""Walter's nightly under the crash harness (test_crash does the same for Varro): SIGKILL a backfill of
two sample days at a failpoint, re-run it, and compare with an uninterrupted run.

The kill points: inside the post upsert of each day's search, inside the count refresh and the
baselines (day 2 refreshes day 1's posts), then sampling, scoring, training and the checkpoint of
day 2 (day 1 has no scorable history, so it only ingests and writes its checkpoint).
"""

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from test_crash import checkpoint_hashes, state as engine_state

DAYS = ("2026-11-02", "2026-11-03")
KILL_POINTS = [
    "walter.ingest.row#10",  # inside day 1's search transaction
    "walter.ingest.row#90",  # inside day 2's
    "walter.refresh.row#5",  # inside day 2's count refresh of day 1's posts
    "walter.baseline.author#3",  # inside the baseline transaction of day 1's third author
    "step.ingested#2",  # day 2 ingested, nothing sampled
    "sample.finished#3",  # three completions into day 2's sampling
    "db.save_scores#2",  # inside the score update transaction
    "train.step#1",  # after day 2's first optimizer step
    "checkpoint.weights#2",  # adapters written, optimizer state not
    "step.checkpointed#2",  # checkpoint 2 done, the voice not written
]


def nightly(model, home, failpoint=None):
    env = {**os.environ, "VARRO_HOME": str(home)}
    env.pop("VARRO_FAILPOINT", None)
    if failpoint:
        env["VARRO_FAILPOINT"] = failpoint
    cmd = [sys.executable, "-m", "walter.cli", "nightly", "--run", "c", "--source", "sample", "--quiet",
           "--from", DAYS[0], "--to", DAYS[-1], "--model", str(model), "--embedder", "hash", "--max-tokens", "8",
           "--articles-per-day", "2", "--lora-layers", "2", "--group-size", "4"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def state(home):
    got = engine_state(home)  # rollouts, steps, checkpoint days and weights; integrity and no duplicates
    db = sqlite3.connect(Path(home) / "data" / "varro.db")
    got["posts"] = db.execute("select uri, like_count, repost_count, reply_count, quote_count, counts_final, "
                              "deleted, day from bsky_posts order by uri").fetchall()
    got["authors"] = db.execute("select did, handle, posts_json, post_age_hours_json from bsky_authors "
                                "order by did").fetchall()
    got["cursors"] = db.execute("select query, day, cursor, finished, pages from bsky_cursors order by 1, 2").fetchall()
    got["skips"] = db.execute("select day, kind, key from walter_skips order by 1, 2, 3").fetchall()
    db.close()
    return got


@pytest.fixture(scope="module")
def reference(tiny_model_path, tmp_path_factory):
    home = tmp_path_factory.mktemp("walter-ref")
    out = nightly(tiny_model_path, home)
    assert out.returncode == 0, out.stderr
    return state(home)


@pytest.mark.slow
@pytest.mark.parametrize("point", KILL_POINTS)
def test_killed_walter_nightly_resumes_to_the_uninterrupted_state(point, tiny_model_path, tmp_path, reference):
    killed = nightly(tiny_model_path, tmp_path, point)
    assert killed.returncode == -9, f"{point} was never reached: {killed.stderr[-500:]}"
    before = checkpoint_hashes(tmp_path)
    again = nightly(tiny_model_path, tmp_path)
    assert again.returncode == 0, again.stderr
    assert {k: v for k, v in checkpoint_hashes(tmp_path).items() if k in before} == before
    got = state(tmp_path)
    assert got["days"] == list(DAYS)
    for name in ("rollouts", "steps", "posts", "authors", "cursors", "skips"):
        assert got[name] == reference[name], name
    import numpy as np

    for day in DAYS:
        for k, v in reference["weights"][day].items():
            np.testing.assert_allclose(got["weights"][day][k], v, atol=1e-6)
