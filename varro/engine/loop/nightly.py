"""The nightly command: one app's daily step for a day or a range of days, safe under cron.

The machinery `run_nightly` runs a night's days under: a lock per run, a log
per day (the newest --keep-logs kept, the scheduler's logs rotated), each day
recorded as finished, and the catch-up plan from the run's last finished day
(runs/<run>/nightly.json). Why each holds: docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import sys
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Callable, Iterator

from varro.engine.core.dates import day_range, shift, span
from varro.engine.store import utc_now
from varro.engine.core.progress import Progress
from varro.engine.core.errors import UserError


LOCKED = 75  # the exit status of a nightly whose run another one holds (EX_TEMPFAIL: try again later)
INTERRUPTED = 130  # the shell's status for a process ended by Ctrl-C (128 + SIGINT)
DEFAULT_CATCH_UP = 7  # days a night runs at most when the run is behind
DEFAULT_KEEP_LOGS = 30  # day logs kept under runs/<run>/logs
SCHEDULER_LOGS = ("cron.log", "launchd.log")  # appended to by the shell or launchd, not by us
ROTATE_BYTES = 5 * 1024 * 1024  # a scheduler log over this is renamed to .1 at the start of a night
ROTATE_KEEP = 3  # cron.log.1 .. cron.log.3
STATE_FILE = "nightly.json"
DAY_LOG_RE = re.compile(r"^\d{4}-\d{2}-\d{2}\.log$")


class RunLocked(RuntimeError, UserError):
    """Another nightly run of the same run holds the lock."""


def today() -> str:
    """The local date, YYYY-MM-DD: the one clock the nightly reads for its default day (tests replace it)."""
    return date.today().isoformat()


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


# ---------------------------------------------------------------- which days a night runs


def last_finished(run_path: Path) -> str | None:
    """The newest day a nightly ran to its end (a checkpoint, or skipped for no data), or None."""
    try:
        return json.loads((run_path / STATE_FILE).read_text()).get("last_finished_day")
    except FileNotFoundError:
        return None


def record_finished(run_path: Path, day: str) -> None:
    """Record `day` as finished unless a later day already is (a backfill never moves it back)."""
    recorded = last_finished(run_path)
    if recorded is not None and recorded >= day:
        return
    tmp = run_path / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps({"last_finished_day": day, "updated_utc": utc_now()}) + "\n")
    os.replace(tmp, run_path / STATE_FILE)


def first_unfinished(newest_checkpoint: str | None, recorded: str | None) -> str | None:
    """The day a catch-up starts at: the one after the last finished day. A newest checkpoint that no nightly
    recorded as finished (killed after writing it, or made by `step`) is run again: a day is idempotent,
    and Varro still samples from it. None for a run with neither."""
    if newest_checkpoint is not None and (recorded is None or recorded < newest_checkpoint):
        return newest_checkpoint
    return shift(recorded, 1) if recorded is not None else None


@dataclass
class DayDone:
    """What a day's run may return to `run_nightly`: its log line, and the stage it resumed a half-finished
    day at (None for a day run from its start)."""

    summary: str
    resumed: str | None = None

    def __str__(self) -> str:
        return self.summary


@dataclass
class Plan:
    """The days a night runs, in order; `behind`: older unfinished days left out by --catch-up."""

    days: list[str]
    catch_up: int | None = None  # the limit, when the days came from catch-up (not --date or --from/--to)
    behind: list[str] = field(default_factory=list)

    def summary(self, ran: list[str]) -> str:
        """One line: which days ran and, when the run was too far behind, which were left out and why."""
        if not ran:
            line = "ran no day"
        elif self.catch_up is not None and len(ran) > 1:
            line = f"caught up {len(ran)} days ({span(ran)})"
        else:
            line = f"ran {span(ran)}" + (f" ({len(ran)} days)" if len(ran) > 1 else "")
        return line + (f"; {self.behind_note()}" if self.behind else "")

    def behind_note(self) -> str:
        return (f"skipped {span(self.behind)}: more than --catch-up {self.catch_up} behind; "
                "run them with --from/--to")


def plan_catch_up(start: str | None, today_: str, limit: int) -> Plan:
    """Every day from `start` to `today_`, at most the `limit` most recent; today alone when `start` is None
    (a new run) or later than today. Raises ValueError for a limit below 1."""
    if limit < 1:
        raise ValueError(f"--catch-up must be at least 1, got {limit}")
    days = [today_] if start is None or start > today_ else day_range(start, today_)
    return Plan(days[-limit:], limit, days[:-limit])


def catch_up_plan(run_path: Path, today_: str, limit: int) -> Plan:
    """`plan_catch_up` from the run's newest complete checkpoint and its recorded last finished day."""
    from varro.engine.run.checkpoints import find_latest

    newest = find_latest(run_path)
    return plan_catch_up(first_unfinished(newest.name if newest else None, last_finished(run_path)),
                         today_, limit)


def night_plan(days: list[str] | None, run_path: Path, catch_up: int = DEFAULT_CATCH_UP) -> Plan:
    """The night's days as a Plan: `days` (from --date or --from/--to) when given, else catch-up from the run's
    last finished day to today (`catch_up_plan`)."""
    return Plan(days) if days is not None else catch_up_plan(run_path, today(), catch_up)


# ---------------------------------------------------------------- logs


def rotate_log(path: Path, max_bytes: int = ROTATE_BYTES, keep: int = ROTATE_KEEP) -> bool:
    """Rename `path` to `path`.1 (.1 to .2, ..., dropping .`keep`) when it is over `max_bytes`; returns
    whether it did. Renaming is safe under `>>`: a writer keeps its open file, the next opens a new one."""
    if not path.is_file() or path.stat().st_size <= max_bytes:
        return False
    for k in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{k}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{k + 1}"))
    os.replace(path, path.with_name(f"{path.name}.1"))
    return True


def prune_day_logs(logs: Path, keep: int, spare: tuple[str, ...] = ()) -> list[str]:
    """Delete all but the newest `keep` day logs (by day), never those of the days in `spare`; returns
    the names removed. Raises ValueError for a keep below 1."""
    if keep < 1:
        raise ValueError(f"--keep-logs must be at least 1, got {keep}")
    if not logs.is_dir():
        return []
    names = sorted(p.name for p in logs.iterdir() if DAY_LOG_RE.match(p.name))
    doomed = [n for n in names[:-keep] if n[:10] not in spare]
    for name in doomed:
        (logs / name).unlink(missing_ok=True)
    return doomed


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
    days: list[str] | Plan,
    run_day: Callable[[str, Progress], object],
    quiet: bool,
    echo: Callable[[str], None],
    bars: bool | None = None,
    keep_logs: int = DEFAULT_KEEP_LOGS,
    night_note: Callable[[str], str | None] | None = None,
) -> None:
    """Run `run_day(day, progress)` for each day of the plan under the run's lock, logging to runs/<run>/logs;
    each day that returns is recorded as finished. Ends with the plan's summary line, echoed even when
    quiet (cron.log then shows one line a night), naming the stage each half-finished day resumed at (a
    `DayDone` result's); when every day ran, `night_note(newest day)` may add a note to it (the voice
    drift, say).

    Stops at the first failing day (its exception propagates, logged first).
    """
    plan = days if isinstance(days, Plan) else Plan(list(days))
    logs = run_path / "logs"
    ran: list[str] = []
    resumed: list[str] = []
    with run_lock(run_path):
        for name in SCHEDULER_LOGS:
            rotate_log(logs / name)
        try:
            for day in plan.days:
                log = DayLog(logs / f"{day}.log", None if quiet else echo)
                progress = Progress(log=log, bars=False if quiet else bars)
                log(f"nightly {run_path.name} {day}: start (pid {os.getpid()})")
                if plan.behind and day == plan.days[0]:
                    log(f"nightly {run_path.name}: {plan.behind_note()}")
                result = None
                try:
                    result = run_day(day, progress)
                finally:
                    failure = sys.exc_info()[1]
                    if isinstance(failure, KeyboardInterrupt):  # Ctrl-C: the night's one line below says it
                        DayLog(log.path, None)(f"nightly {run_path.name} {day}: interrupted")
                    elif failure is not None:  # logged here, raised on to the caller
                        log(f"nightly {run_path.name} {day}: FAILED: {failure.__class__.__name__}: {failure}")
                log(f"nightly {run_path.name} {day}: done: {result}")
                record_finished(run_path, day)
                ran.append(day)
                if isinstance(result, DayDone) and result.resumed:
                    resumed.append(f"resumed {day} at {result.resumed}")
        finally:
            prune_day_logs(logs, keep_logs, spare=tuple(plan.days))
            failed = [d for d in plan.days if d not in ran][:1]
            # never called after a failure: its own error would replace the day's
            note = night_note(ran[-1]) if night_note is not None and ran and not failed else None
            if isinstance(sys.exc_info()[1], KeyboardInterrupt):  # Ctrl-C: this line instead of the summary
                echo(f"nightly {run_path.name}: interrupted at {failed[0] if failed else 'the end'}; "
                     "re-running resumes")
                raise  # on to the caller, which exits 130
            echo(f"nightly {run_path.name}: {plan.summary(ran)}" + "".join(f"; {r}" for r in resumed)
                 + (f"; {failed[0]} FAILED" if failed else "") + (f"; {note}" if note else ""))
