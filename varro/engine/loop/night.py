"""One night of an app's run, as the `nightly` and `step` verbs run it.

`run_night` is the nightly's stages in order: the plan of days, the ranks, the
run opened for its first day (varro.engine.run.open), then `run_nightly` (lock,
logs, retention) calling `Night.run_day`, which runs varro.engine.loop.cycle.step.
`relaunch` runs the same command on every host of an mlx.launch hostfile;
`run_step` is `step`'s one day.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from varro.engine.core.app import App
from varro.engine.core.config import Config
from varro.engine.core.paths import run_dir
from varro.engine.core.progress import Progress
from varro.engine.eval.voice import drift_note, voice_data
from varro.engine.loop import cycle
from varro.engine.loop.nightly import (DEFAULT_CATCH_UP, DEFAULT_KEEP_LOGS, INTERRUPTED, LOCKED, DayDone, RunLocked,
                                       night_plan, run_nightly)
from varro.engine.model.distributed import SOLO, World, init_world
from varro.engine.run.checkpoints import list_checkpoints, prune
from varro.engine.run.open import open_run


@dataclass
class NightOptions:
    """What the command line asks of a night (or of `step`'s one day) besides the settings."""

    run: str
    home: str | None
    source: str
    ingest: dict[str, Any]  # the app's own ingest options (App.ingest_options)
    days: list[str] | None = None  # from --date or --from/--to; None: catch up
    catch_up: int = DEFAULT_CATCH_UP
    quiet: bool = False
    keep: int = 30  # newest checkpoints kept
    keep_logs: int = DEFAULT_KEEP_LOGS


@dataclass
class Night:
    """What every day of a night shares: the app, the options, the run's settled config and notices, the
    database and the embedder (None on a rank other than 0), the first day (its notes carry the notices)
    and the ranks."""

    app: App
    options: NightOptions
    cfg: Config
    notices: list[str]
    db: Any
    embedder: Any
    first_day: str
    echo: Callable[[str], None]
    world: World

    @property
    def run_path(self) -> Path:
        return run_dir(self.options.run, self.options.home)

    def ingest(self, db, day: str) -> int:
        """The cycle's ingest stage: the app's data of `day` from the night's source; returns the new items."""
        o = self.options
        return self.app.ingest(db, day, self.cfg, o.source, o.home, o.ingest, self.echo)

    def run_day(self, day: str, progress: Progress) -> DayDone:
        """`day`'s cycle, then (rank 0) the checkpoints beyond --keep removed and named in the day's line."""
        res = cycle.step(self.app, self.db, self.cfg, self.options.run, self.run_path, day, self.embedder,
                         ingest=self.ingest if self.world.is_main else None, progress=progress, world=self.world,
                         notices=self.notices if day == self.first_day else [])
        done = DayDone(res.summary() + (f", {self.world.size} ranks" if self.world.distributed else "")
                       + "".join(f"; {n}" for n in res.notes), res.resumed)
        if self.world.is_main:
            removed = prune(self.run_path, self.options.keep)
            if removed:
                done.summary += f"; removed old checkpoints {', '.join(removed)}"
        return done

    def human_items(self, db, day: str) -> list:
        return self.app.human_items(db, day, self.cfg)

    def voice_note(self, newest: str) -> str | None:
        """The voice drift up to `newest` for the night's last line, or None."""
        rows = voice_data(self.db, self.app.name, self.options.run, self.human_items)
        return drift_note(rows, self.cfg.eval.voice_drift_max, newest)


def run_night(app: App, options: NightOptions, cfg: Config, named: dict[str, set[str]],
              echo: Callable[[str], None], echo_err: Callable[[str], None]) -> int:
    """The nightly of `app`'s run; `cfg` and `named` are the command line's settings (run.open.open_run).
    Returns the exit status: 0 (also when days were left out), LOCKED when another nightly holds the run's
    lock, INTERRUPTED after Ctrl-C (the night's last line said where). A failing day's error propagates."""
    plan = night_plan(options.days, run_dir(options.run, options.home), options.catch_up)
    world = init_world()
    days = plan.days = world.broadcast_json(plan.days)  # rank 0's run folder decides a catch-up
    cfg, notices, db, embedder = open_run(app, cfg, named, options.run, options.home, days[0], world,
                                          options.source)
    night = Night(app, options, cfg, notices, db, embedder, days[0], echo, world)
    if not world.is_main:  # the lock, the logs and retention are rank 0's
        for d in days:
            night.run_day(d, Progress(bars=False))
        return 0
    try:
        run_nightly(night.run_path, plan, night.run_day, quiet=options.quiet, echo=echo,
                    keep_logs=options.keep_logs, night_note=night.voice_note)
    except RunLocked as e:
        echo_err(f"error: {e}")
        return LOCKED
    except KeyboardInterrupt:  # run_nightly has said where in one line
        return INTERRUPTED
    return 0


def run_step(app: App, day: str, options: NightOptions, cfg: Config, named: dict[str, set[str]],
             echo: Callable[[str], None]) -> cycle.StepResult:
    """`step`: `day`'s cycle alone (no lock, logs or retention), on the run opened for it."""
    cfg, notices, db, embedder = open_run(app, cfg, named, options.run, options.home, day, source=options.source)
    night = Night(app, options, cfg, notices, db, embedder, day, echo, SOLO)
    return cycle.step(app, db, cfg, options.run, night.run_path, day, embedder, ingest=night.ingest,
                      notices=notices)


def relaunch(module: str, hostfile: str, args: list[str], options: NightOptions,
             echo_err: Callable[[str], None]) -> int:
    """Run the command `args` (without its --hosts) as `python -m module` on every host of `hostfile` through
    mlx.launch (ring backend); returns the exit status.

    mlx.launch stops every rank when one dies but exits 0 regardless, so success
    is judged by what rank 0 leaves behind: a complete checkpoint for every day.
    """
    run_path = run_dir(options.run, options.home)
    days = night_plan(options.days, run_path, options.catch_up).days
    i = args.index("--hosts")
    args = args[:i] + args[i + 2:]
    launcher = shutil.which("mlx.launch") or os.path.join(os.path.dirname(sys.executable), "mlx.launch")
    cmd = [launcher, "--hostfile", hostfile, "--backend", "ring", "--", sys.executable, "-m", module, *args]
    echo_err("launching: " + " ".join(cmd))
    subprocess.run(cmd)
    have = {p.name for p in list_checkpoints(run_path)}
    missing = [d for d in days if d not in have]
    if missing:
        echo_err(f"error: the distributed run did not finish {', '.join(missing)} (a rank failed or was "
                 "stopped; see its output above); re-run to resume")
        return 1
    return 0
