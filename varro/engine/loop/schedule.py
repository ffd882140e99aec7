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
from varro.engine.core.paths import REPO_ROOT, home_dir


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
