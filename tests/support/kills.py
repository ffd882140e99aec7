"""The kill harness of tests/system/test_kills.py and bench/kills.py: run a nightly command, SIGKILL it at a
moment, re-run it, and the moments spread over a clean run's duration."""

import subprocess
import time
from pathlib import Path

import numpy as np

from support.crash import nightly_env, state, varro_command, walter_command

THREE_DAYS = ("2026-11-02", "2026-11-04")
APPS = {"varro": varro_command, "walter": walter_command}
SEED = 34


def run(cmd, home, kill_after=None, timeout=300, server=None):
    """Run `cmd` on data folder `home`, SIGKILLed after `kill_after` seconds if still running; its return
    code (-9 when killed). Output goes to home's sibling file, so a full pipe never stalls the run. With
    `server` (tests/support/preloaded.py) the process is forked from it, as the suite's are; bench/kills.py's
    are not."""
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
