"""Randomized kills (issue 34): SIGKILL a three-day backfill of each app at moments spread over a clean run's
duration, re-run it, and compare everything it wrote with the clean run (test_crash's `state`: every table,
every file of the run). The suite kills twice per app; bench/kills.py kills more and counts the survivors.
"""

import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

import test_crash
import test_faults as test_walter_faults
from test_crash import assert_same_state, nightly_env, state

THREE_DAYS = ("2026-11-02", "2026-11-04")
APPS = {"varro": test_crash.command, "walter": test_walter_faults.command}
KILLS = 2  # per app in the suite
SEED = 34


def run(cmd, home, kill_after=None, timeout=300, server=None):
    """Run `cmd` on data folder `home`, SIGKILLed after `kill_after` seconds if still running; its return
    code (-9 when killed). Output goes to home's sibling file, so a full pipe never stalls the run. With
    `server` (tests/preloaded.py) the process is forked from it, as the suite's are; bench/kills.py's are not."""
    with open(f"{home}.out", "ab") as out:
        if server is not None:
            proc = server.start(cmd, nightly_env(home), Path(f"{home}.out"), Path(f"{home}.out"))
        else:
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
    """(state, seconds) of an uninterrupted run of `cmd` on a new data folder `home` (bench/kills.py's; the
    suite's clean runs are conftest's `clean_nightly`, once per session)."""
    start = time.monotonic()
    code = run(cmd, home)
    assert code == 0, f"the clean run failed ({code}); see {home}.out"
    return state(home), time.monotonic() - start


def kill_delays(duration: float, n: int, seed: int) -> list[float]:
    """`n` moments within `duration`, one drawn uniformly in each of `n` equal slices (spread, not bunched)."""
    rng = np.random.default_rng(seed)
    return [(k + rng.uniform()) * duration / n for k in range(n)]


def kill_and_resume(cmd, home, delay: float, servers=(None, None)) -> bool:
    """Run `cmd` on new data folder `home`, SIGKILL it after `delay` seconds, run it again to its end; whether
    the kill landed (False: the run had finished before it). Raises AssertionError when the re-run fails.
    `servers`: the preloaded servers to fork the killed run and the re-run from (None: plain processes)."""
    killed = run(cmd, home, kill_after=delay, server=servers[0]) == -9
    code = run(cmd, home, server=servers[1])
    assert code == 0, f"the re-run after a kill at {delay:.1f}s failed ({code}); see {home}.out"
    return killed


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
