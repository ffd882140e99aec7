"""Crash safety: SIGKILL the nightly at many points, re-run, and compare with an uninterrupted run.

Each kill point is a failpoint (varro/faults.py) that SIGKILLs the process
mid-stage: during ingest, sampling, scoring, an optimizer step, the checkpoint
write, and inside database transactions.
"""

import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

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
]


def nightly(model, home, failpoint=None):
    env = {**os.environ, "VARRO_HOME": str(home)}
    env.pop("VARRO_FAILPOINT", None)
    if failpoint:
        env["VARRO_FAILPOINT"] = failpoint
    cmd = [sys.executable, "-m", "varro.cli", "nightly", "--run", "c", "--source", "sample", "--quiet",
           "--from", DAYS[0], "--to", DAYS[-1], "--model", str(model), "--embedder", "hash", "--max-tokens", "10",
           "--prompts-per-day", "3", "--lora-layers", "2", "--group-size", "4"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def checkpoint_hashes(home):
    root = Path(home) / "runs" / "c" / "checkpoints"
    out = {}
    for d in sorted(root.glob("20*")):
        for f in sorted(d.iterdir()):
            out[f"{d.name}/{f.name}"] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def state(home):
    db = sqlite3.connect(Path(home) / "data" / "varro.db")
    assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
    dups = db.execute("select count(*) from (select run, day, prompt_id, group_index, count(*) c from rollouts "
                      "group by 1, 2, 3, 4 having c > 1)").fetchone()[0]
    assert dups == 0
    rollouts = db.execute("select day, prompt_id, group_index, checkpoint, completion, "
                          "round(reward, 6), round(advantage, 6) from rollouts order by 1, 2, 3").fetchall()
    steps = db.execute("select day, step, minibatch, sequences, round(loss, 5), round(kl, 6) from steps "
                       "order by step").fetchall()
    heads = db.execute("select count(*), count(distinct id) from headlines").fetchone()
    db.close()
    import mlx.core as mx

    root = Path(home) / "runs" / "c" / "checkpoints"
    days = sorted(p.name for p in root.iterdir() if not p.name.startswith(".tmp-") and p.name != "latest")
    weights = {d: {k: np.array(v) for k, v in mx.load(str(root / d / "adapters.safetensors")).items()}
               for d in days}
    return {"rollouts": rollouts, "steps": steps, "headlines": heads, "days": days, "weights": weights}


@pytest.fixture(scope="module")
def reference(tiny_model_path, tmp_path_factory):
    home = tmp_path_factory.mktemp("ref")
    out = nightly(tiny_model_path, home)
    assert out.returncode == 0, out.stderr
    return state(home)


@pytest.mark.parametrize("point", KILL_POINTS)
def test_killed_nightly_resumes_to_the_uninterrupted_state(point, tiny_model_path, tmp_path, reference):
    killed = nightly(tiny_model_path, tmp_path, point)
    assert killed.returncode == -9, f"{point} was never reached: {killed.stderr[-500:]}"
    before = checkpoint_hashes(tmp_path)
    again = nightly(tiny_model_path, tmp_path)
    assert again.returncode == 0, again.stderr
    after = checkpoint_hashes(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before  # finished checkpoints untouched
    got = state(tmp_path)
    assert got["days"] == list(DAYS)  # exactly one complete checkpoint per day
    assert got["rollouts"] == reference["rollouts"]
    assert got["steps"] == reference["steps"]
    assert got["headlines"] == reference["headlines"]
    for day in DAYS:
        for k, v in reference["weights"][day].items():
            np.testing.assert_allclose(got["weights"][day][k], v, atol=1e-6)
