"""Inspection commands of every application: `rollouts [list|show]` and `report`.

`register(cli, app)` adds them to an application's click group; the same
commands then read that application's prompts only.
"""

from __future__ import annotations

import json
import shutil
from datetime import date
from typing import Any, Callable

import click

from varro.engine.core.app import App
from varro.engine.cli.options import with_options
from varro.engine.cli.reading import reading_db, require_app_run
from varro.engine.core.errors import UserError
from varro.engine.eval.rollout_log import SORT_KEYS

def _for_app(app: App) -> Callable[[Callable], Callable]:
    """Fill `{app}` into a command's docstring (its help) before click reads it."""

    def decorate(fn: Callable) -> Callable:
        fn.__doc__ = (fn.__doc__ or "").format(app=app.name)
        return fn

    return decorate


def _check_day(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date like 2026-11-03") from None


HOME_HELP = "folder for data/ and runs/ (default $VARRO_HOME or the repo)"
LIST_OPTIONS = [
    click.option("--date", "day", default=None, callback=_check_day, help="only this day, YYYY-MM-DD"),
    click.option("--prompt", default=None, help="only prompts whose id starts with this"),
    click.option("--sort", type=click.Choice(SORT_KEYS), default=None, help="sort key, highest first "
                 "[default: reward]"),
    click.option("--best", type=click.IntRange(min=1), default=None, help="only the N highest by the sort key"),
    click.option("--worst", type=click.IntRange(min=1), default=None, help="only the N lowest, lowest first"),
    click.option("--json", "as_json", is_flag=True, default=False, help="print a JSON array instead of a table"),
]


def _run_options(app: App) -> list[Callable]:
    """--run and --home, taken before or after the `rollouts` subcommand alike."""
    return [click.option("--run", default=None, help=f"run name under runs/ [default: {app.default_run}]"),
            click.option("--home", default=None, help=HOME_HELP)]


def _with_group_options(ctx: click.Context, own: dict[str, Any]) -> dict[str, Any]:
    """Options given to this subcommand, else those given to the `rollouts` group before it."""
    parent = ctx.parent.params if ctx.parent is not None else {}
    return {k: v if v not in (None, False) else parent.get(k, v) for k, v in own.items()}


def _list(app: App, day: str | None, prompt: str | None, sort: str | None, best: int | None,
          worst: int | None, run: str | None, home: str | None, as_json: bool) -> None:
    from varro.engine.eval.rollout_log import format_table, list_rollouts

    if best is not None and worst is not None:
        raise click.UsageError("give --best or --worst, not both")
    run = run or app.default_run
    db = reading_db(home)
    require_app_run(db, app, run, home)
    rows = list_rollouts(db, app.name, run, day=day, prompt=prompt, sort=sort or "reward", best=best,
                         worst=worst)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    elif not rows:
        where = "".join(f", {k} {v}" for k, v in (("day", day), ("prompt", prompt)) if v)
        click.echo(f"no {app.name} rollouts for run {run}{where}")
    else:
        click.echo(format_table(rows, width=max(80, shutil.get_terminal_size((120, 24)).columns),
                                components=app.main_components))


def rollouts_group(app: App) -> click.Group:
    """The `rollouts` group for `app`: lists when called without a subcommand."""

    @click.group("rollouts", invoke_without_command=True)
    @with_options(LIST_OPTIONS + _run_options(app))
    @click.pass_context
    @_for_app(app)
    def rollouts(ctx: click.Context, **opts: Any) -> None:
        """List a run's completions with their rewards; `show ID` prints one with its group.

        Without a subcommand this is `rollouts list`. Sorted by reward (or
        advantage), highest first; --best N / --worst N keep the N highest / lowest.

        Example: {app} rollouts --date 2026-11-03 --best 5
        """
        if ctx.invoked_subcommand is None:
            _list(app, **opts)

    @rollouts.command("list")
    @with_options(LIST_OPTIONS + _run_options(app))
    @click.pass_context
    @_for_app(app)
    def list_cmd(ctx: click.Context, **opts: Any) -> None:
        """List a run's completions: id, day, prompt, completion, reward, main components, advantage.

        Example: {app} rollouts list --date 2026-11-03 --sort advantage --worst 3
        """
        _list(app, **_with_group_options(ctx, opts))

    @rollouts.command("show")
    @click.argument("rollout_id", type=int)
    @with_options(_run_options(app))
    @click.option("--json", "as_json", is_flag=True, default=False, help="print JSON instead of text")
    @click.pass_context
    @_for_app(app)
    def show(ctx: click.Context, rollout_id: int, run: str | None, home: str | None, as_json: bool) -> None:
        """Show one completion: prompt, text, every reward component, and its whole group.

        With --run, a completion of another run is refused.

        Example: {app} rollouts show 42 --run demo
        """
        from varro.engine.eval.rollout_log import format_detail, rollout_detail

        opts = _with_group_options(ctx, {"run": run, "home": home, "as_json": as_json})
        d = rollout_detail(reading_db(opts["home"]), rollout_id)
        if opts["run"] and d["run"] != opts["run"]:
            raise UserError(f"rollout {rollout_id} is of run {d['run']!r}, not {opts['run']!r}")
        if opts["as_json"]:
            click.echo(json.dumps(d, indent=2))
        else:
            click.echo(format_detail(d, width=max(80, shutil.get_terminal_size((120, 24)).columns)))

    return rollouts


def report_command(app: App) -> click.Command:
    """The `report` command for `app`."""

    @click.command("report")
    @click.option("--run", default=app.default_run, show_default=True, help="run name under runs/")
    @click.option("--home", default=None, help=HOME_HELP)
    @click.option("--html", "html_path", type=click.Path(dir_okay=False), default=None,
                  help="where to write the page [default: runs/<run>/report.html]")
    @click.option("--json", "as_json", is_flag=True, default=False, help="print the report's numbers as JSON")
    @_for_app(app)
    def report(run: str, home: str | None, html_path: str | None, as_json: bool) -> None:
        """Write a run's HTML report and print its per-day summary and flags.

        Per day: reward mean and std, eval reward, KL, clip fraction, the
        application's metrics, reward-hacking monitors (length, repeated
        3-grams, hashtags, emoji, instruction echo, distinct 2-grams), plots and
        the best and worst sample. A day whose training reward rose while its
        eval reward fell is flagged, and so is a day whose cadence distance from
        the humans grew more than --voice-drift-max over the first measured
        day's (the run's own, as its latest checkpoint was trained with). The
        page embeds its plots; the PNGs are also written to <name>_files/
        beside it.

        Example: {app} report --run demo
        """
        from varro.engine.core.config import Config
        from varro.engine.run.checkpoints import run_config
        from varro.engine.core.paths import caller_path
        from varro.engine.eval.report import format_summary, report_data, write_report

        db = reading_db(home)
        path = require_app_run(db, app, run, home)
        # the run's own limit: the config its latest checkpoint was trained with
        data = report_data(db, app, run, run_config(path, Config()).eval.voice_drift_max)
        out = caller_path(html_path) if html_path else path / "report.html"
        write_report(data, out)
        if as_json:
            click.echo(json.dumps({**data, "html": str(out)}, indent=2))
        else:
            click.echo(format_summary(data))
            click.echo(f"\nreport: {out}")
            click.echo(f"plots: {out.parent / (out.stem + '_files')}")

    return report


def register(group: click.Group, app: App) -> None:
    """Add `rollouts` (list, show) and `report` for `app` to `group`."""
    group.add_command(rollouts_group(app))
    group.add_command(report_command(app))
