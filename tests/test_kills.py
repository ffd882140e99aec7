"""Randomized kills (issue 34): SIGKILL a three-day backfill of each app at moments spread over a clean run's
duration, re-run it, and compare everything it wrote with the clean run (test_crash's `state`: every table,
every file of the run). The suite kills twice per app; bench/kills.py kills more and counts the survivors.
"""

import subprocess
import time

import numpy as np
import pytest

import test_crash
import test_walter_faults
from test_crash import assert_same_state, nightly_env, state

THREE_DAYS = ("2026-11-02", "2026-11-04")
APPS = {"varro": test_crash.command, "walter": test_walter_faults.command}
KILLS = 2  # per app in the suite
SEED = 34


def run(cmd, home, kill_after=None, timeout=300):
    """Run `cmd` on data folder `home`, SIGKILLed after `kill_after` seconds if still running; its return
    code (-9 when killed). Output goes to home's sibling file, so a full pipe never stalls the run."""
    with open(f"{home}.out", "ab") as out:
        proc = subprocess.Popen(cmd, env=nightly_env(home), stdout=out, stderr=out)
        try:
            return proc.wait(timeout=timeout if kill_after is None else kill_after)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
            if kill_after is None:
                raise
            return code


def clean_run(cmd, home):
    """(state, seconds) of an uninterrupted run of `cmd` on a new data folder `home`."""
    start = time.monotonic()
    code = run(cmd, home)
    assert code == 0, f"the clean run failed ({code}); see {home}.out"
    return state(home), time.monotonic() - start


def kill_delays(duration: float, n: int, seed: int) -> list[float]:
    """`n` moments within `duration`, one drawn uniformly in each of `n` equal slices (spread, not bunched)."""
    rng = np.random.default_rng(seed)
    return [(k + rng.uniform()) * duration / n for k in range(n)]


def kill_and_resume(cmd, home, delay: float) -> bool:
    """Run `cmd` on new data folder `home`, SIGKILL it after `delay` seconds, run it again to its end; whether
    the kill landed (False: the run had finished before it). Raises AssertionError when the re-run fails."""
    killed = run(cmd, home, kill_after=delay) == -9
    code = run(cmd, home)
    assert code == 0, f"the re-run after a kill at {delay:.1f}s failed ({code}); see {home}.out"
    return killed


@pytest.fixture(scope="module", params=sorted(APPS))
def clean(request, tiny_model_path, tmp_path_factory):
    """(app, its command, the clean run's state and duration)."""
    cmd = APPS[request.param](tiny_model_path, THREE_DAYS)
    return (request.param, cmd, *clean_run(cmd, tmp_path_factory.mktemp(f"clean-{request.param}") / "home"))


@pytest.mark.slow
@pytest.mark.parametrize("k", range(KILLS))
def test_random_kill_resumes_to_the_clean_state(k, clean, tmp_path):
    app, cmd, want, duration = clean
    delay = kill_delays(duration, KILLS, SEED)[k]
    kill_and_resume(cmd, tmp_path / "home", delay)
    assert_same_state(state(tmp_path / "home"), want)
