"""Crash safety: SIGKILL the nightly at many points, re-run, and compare with an uninterrupted run.

Each kill point is a failpoint (varro/engine/core/faults.py) that SIGKILLs the process
mid-stage: during ingest, sampling, scoring, an optimizer step, the checkpoint
write, the voice, inside database transactions, and between every stage's output
and its record. The comparison (`state`, tests/support/crash.py) is everything the night writes:
every table's rows and every file under the run's folder, less what names the time. The nights run as
processes forked from preloaded servers (tests/support/preloaded.py: torch and transformers imported once), the
reference, the killed night and its re-run each from its own, with its own string hash seed.
"""

import subprocess
from pathlib import Path

import pytest

from support.crash import DAYS, assert_same_state, checkpoint_hashes, nightly_env, state, varro_command
from support.preloaded import run as run_preloaded

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


def nightly(model, home, failpoint=None, days=DAYS, server=None):
    """The nightly of `varro_command` on `home` as a finished process; forked from `server` (tests/support/preloaded.py)
    when given, its output kept in the folder beside `home`."""
    if server is not None:
        return run_preloaded(server, varro_command(model, days), nightly_env(home, failpoint), Path(f"{home}.out"))
    return subprocess.run(varro_command(model, days), env=nightly_env(home, failpoint), capture_output=True, text=True,
                          timeout=300)


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
