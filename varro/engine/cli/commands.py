"""Every application's command line: the engine's commands for an `App`, plus the app's own.

`app_cli(app)` builds the click group `varro`, `walter` (or a third app's
command) runs: the verbs that run a day (step, nightly, ingest, cron, demo)
here, the reading ones in varro.engine.cli.reading and varro.engine.cli.inspect,
then `app.commands()`. Errors leave a command one way: the library raises a
`UserError` (varro.engine.core.errors) and `EngineGroup` prints it as one line, exit 1.
"""

from __future__ import annotations

import sys
from typing import Callable

import click

from varro.engine.core.app import App
from varro.engine.cli.inspect import register as register_inspect
from varro.engine.cli.options import (HOME_OPTION, check_day, command_settings, config_options, model_config,
                                      pop_ingest_options, resolve_config, run_option, source_option, with_options)
from varro.engine.cli.reading import compare_command, eval_command, hacks_command, metrics_command
from varro.engine.core.errors import UserError
from varro.engine.loop.nightly import INTERRUPTED


class EngineGroup(click.Group):
    """Turns the library's expected errors into one line on stderr and exit status 1, and Ctrl-C into one
    line and exit status 130 (click's own is "Aborted!" and 1)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (UserError, FileNotFoundError) as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted; re-running resumes", err=True)
            sys.exit(INTERRUPTED)


def echo_err(line: str) -> None:
    click.echo(line, err=True)


def step_command(app: App) -> click.Command:
    @click.command("step", help=f"""Run {app.name}'s daily cycle for one day.

        Ingest the day's data, score what can be scored, sample the day's
        prompts, take the GSPO updates and write the day's checkpoint (see
        varro.engine.loop.cycle for the order). Running a day twice does no work
        twice.

        Example: {app.name} step --date 2026-11-03 --source sample --model data/models/tiny-qwen3
        """)
    @click.option("--date", "day", required=True, help="the day to run, YYYY-MM-DD")
    @source_option(app)
    @with_options(app.ingest_options())
    @run_option(app)
    @HOME_OPTION
    @config_options(app.name)
    def step(day: str, source: str, run: str, home: str | None, **kwargs) -> None:
        from varro.engine.core.dates import require_past
        from varro.engine.loop.night import NightOptions, run_step

        options = NightOptions(run, home, source, pop_ingest_options(kwargs))
        day = require_past(check_day(day))
        res = run_step(app, day, options, *command_settings(kwargs), click.echo)
        click.echo(f"{day}: {res.summary()}")
        for note in res.notes:
            click.echo(f"  note: {note}")

    return step


def asked_days(day: str | None, first: str | None, last: str | None) -> list[str] | None:
    """The days --date D or --from D1 --to D2 (inclusive) ask for; None for neither (catch up). Raises
    click.UsageError for a bad combination and FutureDayError for a later day."""
    from varro.engine.core.dates import day_range, require_past

    if (first is None) != (last is None):
        raise click.UsageError("--from and --to go together")
    if first is not None:
        if day is not None:
            raise click.UsageError("use --date or --from/--to, not both")
        try:
            days = day_range(check_day(first, "--from"), check_day(last, "--to"))
        except ValueError as e:
            raise click.UsageError(str(e)) from None
        require_past(days[-1])
        return days
    if day is not None:
        return [require_past(check_day(day))]
    return None


def nightly_options(app: App) -> list[Callable]:
    return [
    click.option("--date", "day", default=None, help="the day to run [default: today]"),
    click.option("--from", "first", default=None, help="backfill from this day (with --to)"),
    click.option("--to", "last", default=None, help="backfill up to this day, inclusive"),
    click.option("--quiet", is_flag=True, help="plain log lines only (also what cron gets)"),
    click.option("--keep", default=30, show_default=True,
                 help="keep this many newest checkpoints, delete older ones (never the newest)"),
    click.option("--catch-up", "catch_up", type=click.IntRange(min=1), default=7, show_default=True,
                 help="without --date or --from/--to: run at most this many days since the last finished "
                      "one, the most recent"),
    click.option("--keep-logs", "keep_logs", type=click.IntRange(min=1), default=30, show_default=True,
                 help="keep this many newest day logs under runs/<run>/logs"),
    run_option(app),
    HOME_OPTION,
    ]


def nightly_command(app: App, module: str) -> click.Command:
    @click.command("nightly", help=f"""Run {app.name}'s daily step end to end, safe to run from cron.

        Without --date or --from/--to it catches up: every day from the one after
        the run's last finished day (its newest checkpoint, or a day skipped for no
        data) to today, at most --catch-up of them, the most recent; a new run runs
        today. A lock keeps two runs of the same --run from overlapping (the second
        exits at once with status 75); a re-run after a crash continues from the
        last finished stage and never trains a day twice; --from/--to backfills.
        Logs go to runs/<run>/logs/<day>.log (the newest --keep-logs kept); cron.log
        and launchd.log are rotated at 5 MB (.1 to .3). The last line says which
        days ran, which were left out, and the stage each half-finished day
        resumed at ("resumed 2026-11-03 at voice"). Exit status 0 on success (also when days
        were left out), 1 with a one-line reason on failure.

        With --hosts FILE (or when started by mlx.launch) every process runs this
        command; rank 0 alone writes the database, the checkpoint and the logs.

        Example: {app.name} nightly --run default --quiet
        """)
    @with_options(nightly_options(app))
    @source_option(app)
    @with_options(app.ingest_options())
    @click.option("--hosts", "hostfile", default=None, type=click.Path(dir_okay=False, exists=True),
                  help="an mlx.launch hostfile: run data-parallel over these machines (ring backend)")
    @config_options(app.name)
    def nightly(day, first, last, quiet, keep, catch_up, keep_logs, run, home, source, hostfile,
                **kwargs) -> None:
        from varro.engine.loop.night import NightOptions, relaunch, run_night

        options = NightOptions(run, home, source, pop_ingest_options(kwargs), asked_days(day, first, last),
                               catch_up, quiet, keep, keep_logs)
        if hostfile:  # every host runs this same command; this process waits for them and checks
            sys.exit(relaunch(module, hostfile, sys.argv[1:], options, echo_err))
        status = run_night(app, options, *command_settings(kwargs), click.echo, echo_err)
        if status:
            sys.exit(status)

    return nightly


def ingest_command(app: App) -> click.Command:
    @click.command("ingest", help=f"""Ingest one day of {app.name}'s data into the database, with no model.

        Prints what was read; exits non-zero only when nothing at all could be
        read (one bad record costs that record).

        Example: {app.name} ingest --date 2026-11-03 --source sample
        """)
    @click.option("--date", "day", default=None, help="the day the data belong to [default: today]")
    @source_option(app)
    @with_options(app.ingest_options())
    @HOME_OPTION
    @config_options(app.name)
    def ingest(day: str | None, source: str, home: str | None, **kwargs) -> None:
        from datetime import date

        from varro.engine import store
        from varro.engine.core.paths import db_path

        options = pop_ingest_options(kwargs)
        cfg = resolve_config(kwargs)
        day = check_day(day) if day else date.today().isoformat()
        db = store.open_db(db_path(home))
        app.ingest(db, day, cfg, source, home, options, click.echo)  # it prints its own summary

    return ingest


def cron_command(app: App) -> click.Command:
    @click.command("cron", help=f"""Print a ready crontab line (and a launchd plist on macOS) for the
        nightly run.

        The line runs `{app.name} nightly` through scripts/env with this checkout's
        paths, --home and --quiet, appending to runs/<run>/logs/cron.log; on a Mac
        under `caffeinate -i -s`, so the machine stays awake while it runs. A night
        the Mac slept through is caught up by the next nightly (--catch-up).

        Example: {app.name} cron --at 03:15 --install
        """)
    @run_option(app)
    @HOME_OPTION
    @click.option("--at", "at", default="02:30", show_default=True, help="local time of day, HH:MM")
    @click.option("--install", is_flag=True, help="install it (crontab, or launchd on macOS) after showing it")
    def cron(run: str, home: str | None, at: str, install: bool) -> None:
        from varro.engine.loop.schedule import schedule

        try:
            hour, minute = (int(x) for x in at.split(":"))
        except ValueError:
            raise click.BadParameter(f"{at!r} is not HH:MM", param_hint="--at") from None
        schedule(app.name, run, home, hour, minute, install, click.echo)

    return cron


def demo_configs(apps: list[App], kwargs: dict, home: str | None, tiny: bool, cold: bool) -> dict:
    """{app name: config}: each app's demo recipe on the demo model (varro.engine.loop.demo.demo_base), then
    what the command line says. A --model that is not there fails before any demo model is built."""
    from varro.engine.loop.demo import demo_base
    from varro.engine.model.loading import check_model

    given = kwargs.get("cfg__model__model")
    if given:  # a bad --model fails before any demo model is built
        check_model(given)
    return {app.name: model_config(dict(kwargs), base=demo_base(app, home, tiny, cold, bool(given), click.echo))
            for app in apps}


def demo_command(app: App) -> click.Command:
    @click.command("demo", help=f"""Run {app.name}'s daily cycle over its shipped sample on
        SmolLM2-135M-Instruct, offline.

        Converts the real model once from the wheel scripts/setup installs,
        runs every sample day as `step` would, and prints the per-day metrics.
        --tiny runs the tiny local model instead (a quick tour). Any setting can
        be overridden, e.g. --model or --learning-rate.

        Example: {app.name} demo --days 3
        """)
    @click.option("--days", default=None, type=int,
              help="only the first N sample days [default: 4 on the real model, all with --tiny]")
    @click.option("--run", default=app.demo_run_name(), show_default=True, help="run name under runs/")
    @click.option("--tiny", is_flag=True, help="the quick tour: the tiny local model instead of SmolLM2-135M-Instruct")
    @click.option("--cold", is_flag=True, help="with --tiny: the random tiny model without the warm-up")
    @HOME_OPTION
    @config_options(app.name)
    def demo(days: int | None, run: str, tiny: bool, cold: bool, home: str | None, **kwargs) -> None:
        from varro.engine.loop.demo import demo_days, run_demo

        cfg = demo_configs([app], kwargs, home, tiny, cold)[app.name]
        run_demo(app, home, run, cfg, days=demo_days(days, tiny), echo=click.echo)

    return demo


def app_cli(app: App, module: str, extra: list[click.Command] = ()) -> click.Group:
    """The command line of `app`: the engine's commands, then the app's own, then `extra` (which replace
    an engine command of the same name). `module` is what `python -m` runs (for --hosts)."""

    @click.group(app.name, cls=EngineGroup, help=f"{app.title}\n\nExample: {app.name} demo")
    def cli() -> None:
        pass

    for make in (step_command, ingest_command, cron_command, demo_command, metrics_command, compare_command,
                 eval_command):
        cli.add_command(make(app))
    cli.add_command(nightly_command(app, module))
    if app.red_team() is not None:
        cli.add_command(hacks_command(app))
    register_inspect(cli, app)
    for cmd in [*app.commands(), *extra]:
        cli.add_command(cmd)
    return cli
