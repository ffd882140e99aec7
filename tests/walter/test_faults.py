"""Walter's nightly under the crash harness (test_crash does the same for Varro): SIGKILL a backfill of
two sample days at a failpoint, re-run it, and compare with an uninterrupted run.

The kill points: inside the post upsert of each day's search, inside the count refresh and the
baselines (day 2 refreshes day 1's posts), then sampling, scoring, training, the checkpoint and the
voice of day 2, and between each of its stages' output and its record (day 1 has no scorable history,
so it only ingests, writes its checkpoint and its voice). The comparison is test_crash's (tests/support/crash.py):
every table and every file of the run, and so are the preloaded servers the nights are forked from.
"""

import sqlite3
import subprocess
from pathlib import Path

import pytest

from support.crash import DAYS, assert_same_state, checkpoint_hashes, nightly_env, state, walter_command
from support.preloaded import run as run_preloaded

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
    "step.sampled#2",  # day 2 sampled, not recorded
    "step.scored#2",  # day 2 scored, not recorded
    "step.checkpointed#2",  # checkpoint 2 done, the voice not written
    "voice.cadence#2",  # inside day 2's voice: the completions' cadence stored, the human text's not
    "step.voiced#2",  # day 2's voice stored, not recorded; the day not recorded as finished
]


def nightly(model, home, failpoint=None, days=DAYS, server=None):
    """As test_crash's `nightly`: forked from `server` (tests/support/preloaded.py) when given."""
    if server is not None:
        return run_preloaded(server, walter_command(model, days), nightly_env(home, failpoint), Path(f"{home}.out"))
    return subprocess.run(walter_command(model, days), env=nightly_env(home, failpoint), capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def reference(tiny_model_path, tmp_path_factory, preloaded):
    home = tmp_path_factory.mktemp("walter-ref")
    out = nightly(tiny_model_path, home, server=preloaded("reference"))
    assert out.returncode == 0, out.stderr
    return state(home)


@pytest.mark.slow
@pytest.mark.parametrize("point", KILL_POINTS)
def test_killed_walter_nightly_resumes_to_the_uninterrupted_state(point, tiny_model_path, tmp_path, reference,
                                                                  preloaded):
    killed = nightly(tiny_model_path, tmp_path, point, server=preloaded("killed"))
    assert killed.returncode == -9, f"{point} was never reached: {killed.stderr[-500:]}"
    before = checkpoint_hashes(tmp_path)
    again = nightly(tiny_model_path, tmp_path, server=preloaded("rerun"))
    assert again.returncode == 0, again.stderr
    assert {k: v for k, v in checkpoint_hashes(tmp_path).items() if k in before} == before
    assert_same_state(state(tmp_path), reference)


THREE_DAYS = ("2026-11-02", "2026-11-04")


@pytest.mark.slow
def test_voice_of_a_day_killed_after_its_checkpoint_is_not_lost(tiny_model_path, tmp_path, clean_nightly,
                                                                preloaded):
    """Issue 34: killed after checkpoint 2 of a three-day backfill, the re-run skipped day 2 as done, and its
    voice (voice_days, cadence) was lost for good. Now it resumes day 2 at the voice and says so."""
    clean, _ = clean_nightly(walter_command(tiny_model_path, THREE_DAYS))  # shared with tests/system/test_kills.py
    killed = nightly(tiny_model_path, tmp_path, "step.checkpointed#2", days=THREE_DAYS, server=preloaded("killed"))
    assert killed.returncode == -9, killed.stderr[-500:]
    again = nightly(tiny_model_path, tmp_path, days=THREE_DAYS, server=preloaded("rerun"))
    assert again.returncode == 0, again.stderr
    db = sqlite3.connect(tmp_path / "data" / "varro.db")
    assert [r[0] for r in db.execute("select day from voice_days order by day")] == [
        "2026-11-02", "2026-11-03", "2026-11-04"]
    assert_same_state(state(tmp_path), state(clean))
    last = again.stdout.strip().splitlines()[-1]
    assert last == "nightly c: ran 2026-11-02..04 (3 days); resumed 2026-11-03 at voice"
