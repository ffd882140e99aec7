"""Inspection commands of every application: `rollouts [list|show]` and `report`.

`register(cli, app)` adds them to an application's click group; the same
commands then read that application's prompts only.
"""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path
from typing import Any, Callable

import click

from varro.engine.core.app import App
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


def _open(home: str | None):
    """The existing database; raises NoDatabaseError (a ConfigError) rather than creating one."""
    from varro.engine.core.paths import require_db
    from varro.engine.store import open_db

    return open_db(require_db(home))


def run_owner(run_path: Path) -> str | None:
    """The app a run belongs to, as `nightly` reads it: run.toml's app, else its latest checkpoint's (see
    varro.engine.run.checkpoints.check_run_owner); None for a run that has neither."""
    from varro.engine.run.checkpoints import METADATA, list_checkpoints
    from varro.engine.run.identity import read_run

    stored = read_run(run_path)
    if stored is not None:
        return stored.get("app")
    found = list_checkpoints(run_path)
    return json.loads((found[-1] / METADATA).read_text()).get("app") if found else None


def require_app_run(db, app: App, run: str, home: str | None) -> Path:
    """runs/<run> of an existing `app` run (varro.engine.run.identity.require_run). A run of another app is refused
    naming that app and the command to use instead (RunIdentityError), not reported as missing."""
    from varro.engine.run.identity import RunIdentityError, UnknownRunError, require_run
    from varro.engine.core.paths import run_dir

    try:
        return require_run(db, app.name, run, home)
    except UnknownRunError:
        owner = run_owner(run_dir(run, home))
        if owner is None or owner == app.name:
            raise
        raise RunIdentityError(f"run {run!r} is a {owner} run, not a {app.name} one: use "
                               f"`{owner} {subcommand_path()} --run {run}`") from None


def subcommand_path() -> str:
    """The running command's words after the program's name ("rollouts list"), however it was started
    (`varro`, `scripts/env varro` or `python -m varro.cli`)."""
    ctx, names = click.get_current_context(), []
    while ctx.parent is not None:
        names.append(ctx.info_name)
        ctx = ctx.parent
    return " ".join(reversed(names))


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


def _options(options: list[Callable]) -> Callable[[Callable], Callable]:
    """Apply click `options` in order, the first shown first in --help."""

    def decorate(fn: Callable) -> Callable:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


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
    db = _open(home)
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
    @_options(LIST_OPTIONS + _run_options(app))
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
    @_options(LIST_OPTIONS + _run_options(app))
    @click.pass_context
    @_for_app(app)
    def list_cmd(ctx: click.Context, **opts: Any) -> None:
        """List a run's completions: id, day, prompt, completion, reward, main components, advantage.

        Example: {app} rollouts list --date 2026-11-03 --sort advantage --worst 3
        """
        _list(app, **_with_group_options(ctx, opts))

    @rollouts.command("show")
    @click.argument("rollout_id", type=int)
    @_options(_run_options(app))
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
        d = rollout_detail(_open(opts["home"]), rollout_id)
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
        from varro.engine.eval.panel import run_config
        from varro.engine.core.paths import caller_path
        from varro.engine.eval.report import format_summary, report_data, write_report

        db = _open(home)
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
