"""`varro cron`: a ready crontab line (and a launchd plist on macOS) for the nightly run.

On a Mac the nightly runs under `caffeinate -i -s`, so the machine does not
idle-sleep (nor, on AC power, system-sleep) in the middle of a night; a Mac
already asleep at the hour runs nothing then (launchd runs the missed job
once at wake, cron not at all) and the next nightly catches up.
"""

from __future__ import annotations

import platform
import shlex
import shutil
import subprocess
from pathlib import Path
from xml.sax.saxutils import escape

from varro.engine.core.errors import UserError
from varro.engine.core.paths import REPO_ROOT, home_dir, run_dir


class ScheduleError(RuntimeError, UserError):
    pass


def keep_awake() -> list[str]:
    """`caffeinate -i -s` (its full path: cron's PATH is short) on a Mac that has it, else nothing."""
    found = shutil.which("caffeinate") if is_macos() else None
    return [found, "-i", "-s"] if found else []


def nightly_command(app: str, run: str, home: str | Path | None) -> list[str]:
    """The argv cron runs: the project's env wrapper, so .venv and OpenBLAS are used as by hand; on a Mac
    under caffeinate (`keep_awake`)."""
    return [*keep_awake(), str(REPO_ROOT / "scripts" / "env"), app, "nightly", "--run", run,
            "--home", str(home_dir(home)), "--quiet"]


def cron_line(app: str, run: str, home: str | Path | None, hour: int, minute: int) -> str:
    if not (0 <= hour < 24 and 0 <= minute < 60):
        raise ScheduleError(f"--at must be a time of day like 02:30, got {hour:02d}:{minute:02d}")
    log = home_dir(home) / "runs" / run / "logs" / "cron.log"
    cmd = " ".join(shlex.quote(a) for a in nightly_command(app, run, home))
    return (f"{minute} {hour} * * * mkdir -p {shlex.quote(str(log.parent))} && {cmd} "
            f">> {shlex.quote(str(log))} 2>&1  # {app} nightly {run}")


def launchd_label(app: str, run: str) -> str:
    return f"org.varro.{app}.{run}"


def launchd_plist(app: str, run: str, home: str | Path | None, hour: int, minute: int) -> str:
    log = home_dir(home) / "runs" / run / "logs" / "launchd.log"
    args = "".join(f"\n    <string>{escape(a)}</string>" for a in nightly_command(app, run, home))
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>Label</key><string>{launchd_label(app, run)}</string>
  <key>ProgramArguments</key>
  <array>{args}
  </array>
  <key>StartCalendarInterval</key>
  <dict><key>Hour</key><integer>{hour}</integer><key>Minute</key><integer>{minute}</integer></dict>
  <key>StandardOutPath</key><string>{escape(str(log))}</string>
  <key>StandardErrorPath</key><string>{escape(str(log))}</string>
</dict>
</plist>
"""


def install_cron(line: str) -> bool:
    """Append `line` to the user's crontab unless it is there; returns False when it already was."""
    current = subprocess.run(["crontab", "-l"], capture_output=True, text=True)
    if current.returncode != 0 and "no crontab" not in current.stderr.lower():
        raise ScheduleError(f"crontab -l failed: {current.stderr.strip()}")
    existing = current.stdout if current.returncode == 0 else ""
    if line in existing.splitlines():
        return False
    new = existing + ("" if existing.endswith("\n") or not existing else "\n") + line + "\n"
    done = subprocess.run(["crontab", "-"], input=new, capture_output=True, text=True)
    if done.returncode != 0:
        raise ScheduleError(f"crontab - failed: {done.stderr.strip()}")
    return True


def install_launchd(app: str, run: str, plist: str) -> Path:
    path = Path.home() / "Library" / "LaunchAgents" / f"{launchd_label(app, run)}.plist"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(plist)
    done = subprocess.run(["launchctl", "load", "-w", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        raise ScheduleError(f"launchctl load failed: {done.stderr.strip()}")
    return path


def is_macos() -> bool:
    return platform.system() == "Darwin"


def run_note(app: str, run: str, home: str | Path | None) -> str:
    """The comment under the crontab line: the run it schedules, its app, its home and what settings its
    nightly will use."""
    from varro.engine.run.checkpoints import list_checkpoints
    from varro.engine.run.identity import read_run, run_file

    path = run_dir(run, home)
    stored = read_run(path)
    if stored is not None:
        return (f"# run {run} exists: {app} on {stored['model']}; the nightly uses its settings from "
                f"{run_file(path)} ({len(stored.get('changes', []))} changed since {stored['created_utc'][:10]})")
    where = f"# run {run} ({app}) in {home_dir(home)}"
    found = list_checkpoints(path)
    if found:
        return (f"{where}: {len(found)} checkpoints (latest {found[-1].name}) and no run.toml yet; the first "
                f"nightly writes {run_file(path)} from the latest checkpoint's settings")
    return f"{where}: a new run; its first nightly writes {run_file(path)}"


def schedule(app: str, run: str, home: str | Path | None, hour: int, minute: int, install: bool, echo) -> None:
    """`<app> cron`: echo the crontab line, the run it schedules and (on macOS) the launchd plist, then with
    `install` install it. Raises RunIdentityError for another app's run, ScheduleError or UserError when it
    cannot be installed."""
    from varro.engine.run.identity import RunIdentityError, run_owner

    owner = run_owner(run_dir(run, home))
    if owner is not None and owner != app:
        raise RunIdentityError(f"run {run!r} belongs to {owner}: use `{owner} cron --run {run}`, or another "
                               f"--run for {app}")
    line = cron_line(app, run, home, hour, minute)
    echo(line)
    echo(run_note(app, run, home))
    plist = launchd_plist(app, run, home, hour, minute) if is_macos() else None
    if plist:
        echo(plist)
    if install:
        if plist:
            echo(f"installed {install_launchd(app, run, plist)}")
        elif shutil.which("crontab") is None:
            raise UserError("there is no `crontab` program on this machine: install cron (Debian: apt install "
                            "cron), or give the line above to your scheduler")
        elif install_cron(line):
            echo("installed in your crontab (crontab -l shows it)")
        else:
            echo("already in your crontab; nothing changed")
