"""The nightly command: one app's daily step for a day or a range of days, safe under cron.

- A lock per run (flock on runs/<run>/nightly.lock): a second nightly of the
  same run exits at once with a clear message; the OS drops the lock when a
  process dies, so a crash never leaves a stale lock.
- Idempotent per day: each stage of the step checks what is already done, so
  a re-run after a crash continues from the last finished stage.
- A log per day under runs/<run>/logs/<day>.log, appended to on every run.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Callable, Iterator

from varro.engine.store import utc_now
from varro.engine.progress import Progress
from varro.engine.errors import UserError


class RunLocked(RuntimeError, UserError):
    """Another nightly run of the same run holds the lock."""


@contextlib.contextmanager
def run_lock(run_path: Path) -> Iterator[None]:
    """Hold runs/<run>/nightly.lock for the duration; raises RunLocked if another process holds it."""
    run_path.mkdir(parents=True, exist_ok=True)
    path = run_path / "nightly.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise RunLocked(
                f"another nightly run of {run_path.name} is in progress (pid {holder}, lock {path}); "
                "this one exits without doing anything"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def day_range(first: str, last: str) -> list[str]:
    """Every day from `first` to `last` inclusive; raises ValueError when last < first."""
    a, b = date.fromisoformat(first), date.fromisoformat(last)
    if b < a:
        raise ValueError(f"--to {last} is before --from {first}")
    return [(a + timedelta(days=k)).isoformat() for k in range((b - a).days + 1)]


@dataclass
class DayLog:
    """Writes timestamped lines to the day's log file and, unless quiet, to the console."""

    path: Path
    echo: Callable[[str], None] | None

    def __call__(self, line: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(f"{utc_now()} {line}\n")
        if self.echo is not None:
            self.echo(line)


def run_nightly(
    run_path: Path,
    days: list[str],
    run_day: Callable[[str, Progress], object],
    quiet: bool,
    echo: Callable[[str], None],
    bars: bool | None = None,
) -> None:
    """Run `run_day(day, progress)` for each day under the run's lock, logging to runs/<run>/logs.

    Stops at the first failing day (its exception propagates, logged first).
    """
    with run_lock(run_path):
        for day in days:
            log = DayLog(run_path / "logs" / f"{day}.log", None if quiet else echo)
            progress = Progress(log=log, bars=False if quiet else bars)
            log(f"nightly {run_path.name} {day}: start (pid {os.getpid()})")
            result = None
            try:
                result = run_day(day, progress)
            finally:
                failure = sys.exc_info()[1]
                if failure is not None:  # logged here, raised on to the caller
                    log(f"nightly {run_path.name} {day}: FAILED: {failure.__class__.__name__}: {failure}")
            log(f"nightly {run_path.name} {day}: done: {result}")
