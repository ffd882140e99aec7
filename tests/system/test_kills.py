"""Randomized kills (issue 34): SIGKILL a three-day backfill of each app at moments spread over a clean run's
duration, re-run it, and compare everything it wrote with the clean run (`state` of tests/support/crash.py:
every table, every file of the run). The suite kills twice per app; bench/kills.py kills more and counts the survivors.
"""

import pytest

from support.crash import assert_same_state, state
from support.kills import APPS, SEED, THREE_DAYS, kill_and_resume, kill_delays

KILLS = 2  # per app in the suite


@pytest.fixture(scope="module", params=sorted(APPS))
def clean(request, tiny_model_path, clean_nightly):
    """(app, its command, the clean run's state and duration). The clean run is conftest's, once per session
    on the "reference" preloaded server (so its duration is that of the runs killed here, forked alike):
    tests/walter/test_faults.py compares against the same three-day Walter run."""
    cmd = APPS[request.param](tiny_model_path, THREE_DAYS)
    home, seconds = clean_nightly(cmd)
    return (request.param, cmd, state(home), seconds)


@pytest.mark.slow
@pytest.mark.parametrize("k", range(KILLS))
def test_random_kill_resumes_to_the_clean_state(k, clean, tmp_path, preloaded):
    app, cmd, want, duration = clean
    delay = kill_delays(duration, KILLS, SEED)[k]
    kill_and_resume(cmd, tmp_path / "home", delay, (preloaded("killed"), preloaded("rerun")))
    assert_same_state(state(tmp_path / "home"), want)
