"""Every application's command line: the engine's commands for an `App`, plus the app's own.

`app_cli(app)` builds the click group `varro`, `walter` (or a third app's
command) runs: step, nightly, ingest, cron, demo, metrics, rollouts, report,
compare, eval, hacks (when the app has a red team) and `app.commands()`.
Errors leave a command one way: the library raises a `UserError`
(varro.engine.core.errors) and `EngineGroup` prints it as one line, exit 1.
"""

from __future__ import annotations

import shutil
import sys
from typing import TYPE_CHECKING, Callable

import click

from varro.engine.core.app import App
from varro.engine.cli.inspect import register as register_inspect, require_app_run, run_owner
from varro.engine.cli.options import config_options, resolve_config
from varro.engine.core.errors import UserError

if TYPE_CHECKING:
    from pathlib import Path

    from varro.engine.loop.nightly import Plan


INTERRUPTED = 130  # the shell's status for a process ended by Ctrl-C (128 + SIGINT)


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


HOME_OPTION = click.option("--home", default=None, help="folder for data/ and runs/ (default $VARRO_HOME or the repo)")
def run_option(app: App):
    """--run, defaulting to the app's own run (`varro`, `walter`, ...): two apps never share a run by default."""
    return click.option("--run", default=app.default_run, show_default=True, help="run name under runs/")


def check_day(day: str, param: str = "--date") -> str:
    """`day` as YYYY-MM-DD; a click BadParameter for anything else."""
    from datetime import date

    try:
        return date.fromisoformat(day).isoformat()
    except ValueError:
        raise click.BadParameter(f"{day!r} is not a date like 2026-11-03", param_hint=param) from None


def model_config(kwargs: dict, base=None):
    """resolve_config, with a --model that looks local checked first, before any heavy work (ModelLoadError)."""
    from varro.engine.model.loading import check_model

    if kwargs.get("cfg__model__model"):
        check_model(kwargs["cfg__model__model"])
    cfg = resolve_config(kwargs, base=base)
    check_model(cfg.model.model)
    return cfg


def reading_db(home: str | None):
    """The existing database of a reading command; raises NoDatabaseError rather than creating one."""
    from varro.engine import store
    from varro.engine.core.paths import require_db

    return store.open_db(require_db(home))


def with_options(options: list[Callable]) -> Callable[[Callable], Callable]:
    def decorate(fn: Callable) -> Callable:
        for deco in reversed(options):
            fn = deco(fn)
        return fn

    return decorate


def source_option(app: App):
    return click.option("--source", type=click.Choice(list(app.sources)), default=app.sources[0],
                        show_default=True, help="where the day's data come from")


class MissingTargets:
    """A with-block that turns a missing scoring target (LookupError, not a KeyError) into one line, exit 1."""

    def __enter__(self):
        return self

    def __exit__(self, kind, e, tb):
        if kind is not None and issubclass(kind, LookupError) and not issubclass(kind, (KeyError, IndexError)):
            raise click.ClickException(str(e)) from None
        return False


def echo_scores(texts: list[str], comps: list[dict], head: str, as_json: bool) -> None:
    """Shared by the apps' `score` commands: a table, or one JSON object per text."""
    import json

    from varro.engine.rewards.redteam import format_scores

    if as_json:
        for t, c in zip(texts, comps):
            click.echo(json.dumps({"text": t, **c}))
    else:
        click.echo(format_scores(texts, comps, head))


def open_step(app: App, kwargs: dict, run: str, home: str | None, day: str, world=None, source: str = ""):
    """What step and nightly share before any work: the run's config (run.toml, see varro.engine.run.identity, with
    the command line's changes), its notices, the owner check, the database and the embedder. Under
    mlx.launch rank 0 settles the run and the other ranks receive its config (they get no database)."""
    from varro.engine import store
    from varro.engine.run.checkpoints import check_run_owner, list_checkpoints
    from varro.engine.cli.options import named_settings
    from varro.engine.core.config import Config
    from varro.engine.embed.embedders import CachedEmbedder, load_embedder
    from varro.engine.eval.panel import run_config
    from varro.engine.core.paths import db_path
    from varro.engine.run.identity import read_run, settle
    from varro.engine.core.paths import run_dir

    from varro.engine.model.loading import check_model

    main = world is None or world.is_main
    named = named_settings(kwargs)
    if kwargs.get("cfg__model__model"):  # a --model that is not there: one line before anything else
        check_model(kwargs["cfg__model__model"])
    cfg = resolve_config(kwargs)
    path = run_dir(run, home)
    notices: list[str] = []
    if main:
        app.preflight(cfg, source, home)  # credentials and the like, before the model
    if main:
        check_run_owner(path, app.name, None)  # another app's checkpoints, before run.toml is written or read
        stored = read_run(path)
        legacy = run_config(path, Config()) if stored is None and list_checkpoints(path) else None  # before run.toml
        # the model the night will load, checked before a first night writes it into run.toml
        if "model" in named.get("model", set()):
            check_model(cfg.model.model)
        else:
            check_model(stored["model"] if stored else legacy.model.model if legacy else cfg.model.model)
        cfg, notices = settle(app.name, run, path, cfg, named_values(cfg, named), day, store.utc_now(), legacy)
        check_run_owner(path, app.name, cfg.model.model)
    if world is not None and world.distributed:
        cfg = Config.from_dict(world.broadcast_json(cfg.to_dict() if main else None))
        notices = world.broadcast_json(notices if main else None)
    if not main:
        return cfg, notices, None, None
    db = store.open_db(db_path(home))
    return cfg, notices, db, CachedEmbedder(load_embedder(getattr(cfg, app.name).embedder), db)


def named_values(cfg, named: dict[str, set[str]]) -> dict[str, dict]:
    """{section: {name: resolved value}} of the settings the command line or --config named."""
    sections = cfg.sections()
    return {s: {n: getattr(sections[s], n) for n in names} for s, names in named.items()}


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
        from varro.engine.loop.cycle import step as run_step
        from varro.engine.core.dates import require_past
        from varro.engine.core.paths import run_dir

        options = {k: kwargs.pop(k) for k in list(kwargs) if not k.startswith("cfg__") and k != "config_file"}
        day = require_past(check_day(day))
        cfg, notices, db, embedder = open_step(app, kwargs, run, home, day, source=source)
        res = run_step(app, db, cfg, run, run_dir(run, home), day, embedder,
                       ingest=day_ingest(app, cfg, source, home, options), notices=notices)
        click.echo(f"{day}: {res.summary()}")
        for note in res.notes:
            click.echo(f"  note: {note}")

    return step


def day_ingest(app: App, cfg, source: str, home: str | None, options: dict):
    """The cycle's ingest stage for `source`: (db, day) -> new items."""
    return lambda db, day: app.ingest(db, day, cfg, source, home, options, click.echo)


def resolve_days(day: str | None, first: str | None, last: str | None, run_path: Path | None = None,
                 catch_up: int = 7) -> Plan:
    """The nightly's days as a `varro.engine.loop.nightly.Plan`: --date D, or --from D1 --to D2 (inclusive);
    default: catch-up from the run's last finished day to today (`catch_up_plan`), today alone without
    `run_path`. Raises FutureDayError for a later day."""
    from varro.engine.core.dates import day_range, require_past
    from varro.engine.loop.nightly import Plan, catch_up_plan, today

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
        return Plan(days)
    if day is not None:
        return Plan([require_past(check_day(day))])
    return catch_up_plan(run_path, today(), catch_up) if run_path is not None else Plan([today()])


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


def run_nightly_cli(run: str, home: str | None, days, quiet: bool, run_day, keep: int = 30,
                    keep_logs: int = 30, night_note=None) -> None:
    """The lock, the logs, retention and the exit codes of every app's nightly (`days`: a list or a Plan);
    `night_note(newest day)` may add a note to the last line (see `run_nightly`)."""
    from varro.engine.run.checkpoints import prune
    from varro.engine.loop.nightly import RunLocked, run_nightly
    from varro.engine.core.paths import run_dir

    def day_then_prune(d, progress):
        done = run_day(d, progress)
        removed = prune(run_dir(run, home), keep)
        if removed:
            done.summary += f"; removed old checkpoints {', '.join(removed)}"
        return done

    try:
        run_nightly(run_dir(run, home), days, day_then_prune, quiet=quiet, echo=click.echo, keep_logs=keep_logs,
                    night_note=night_note)
    except RunLocked as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(75)  # EX_TEMPFAIL: try again later
    except KeyboardInterrupt:  # run_nightly has said where in one line
        sys.exit(INTERRUPTED)


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
        from varro.engine.loop.cycle import step as run_step
        from varro.engine.model.distributed import init_world
        from varro.engine.loop.nightly import DayDone
        from varro.engine.core.progress import Progress
        from varro.engine.core.paths import run_dir
        from varro.engine.eval.voice import drift_note, voice_data

        options = {k: kwargs.pop(k) for k in list(kwargs) if not k.startswith("cfg__") and k != "config_file"}
        plan = resolve_days(day, first, last, run_dir(run, home), catch_up)
        if hostfile:
            relaunch_distributed(module, hostfile, run, home, plan.days)
        world = init_world()
        days = plan.days = world.broadcast_json(plan.days)  # rank 0's run folder decides a catch-up
        cfg, notices, db, embedder = open_step(app, kwargs, run, home, days[0], world, source)
        ingest = day_ingest(app, cfg, source, home, options) if world.is_main else None

        def run_day(d, progress):
            res = run_step(app, db, cfg, run, run_dir(run, home), d, embedder, ingest=ingest, progress=progress,
                           world=world, notices=notices if d == days[0] else [])
            return DayDone(res.summary() + (f", {world.size} ranks" if world.distributed else "")
                           + "".join(f"; {n}" for n in res.notes), res.resumed)

        def voice_note(newest):
            rows = voice_data(db, app.name, run, lambda db_, d: app.human_items(db_, d, cfg))
            return drift_note(rows, cfg.eval.voice_drift_max, newest)

        if world.is_main:
            run_nightly_cli(run, home, plan, quiet, run_day, keep, keep_logs, voice_note)
        else:  # the lock, the logs and retention are rank 0's
            for d in days:
                run_day(d, Progress(bars=False))

    return nightly


def relaunch_distributed(module: str, hostfile: str, run: str, home: str | None, days: list[str]) -> None:
    """Run this same command on every host of `hostfile` through mlx.launch (ring backend), then exit.

    mlx.launch stops every rank when one dies but exits 0 regardless, so success
    is judged by what rank 0 leaves behind: a complete checkpoint for every day.
    """
    import os
    import shutil
    import subprocess

    from varro.engine.run.checkpoints import list_checkpoints
    from varro.engine.core.paths import run_dir

    args = sys.argv[1:]
    i = args.index("--hosts")
    args = args[:i] + args[i + 2:]
    launcher = shutil.which("mlx.launch") or os.path.join(os.path.dirname(sys.executable), "mlx.launch")
    cmd = [launcher, "--hostfile", hostfile, "--backend", "ring", "--", sys.executable, "-m", module, *args]
    click.echo("launching: " + " ".join(cmd), err=True)
    subprocess.run(cmd)
    have = {p.name for p in list_checkpoints(run_dir(run, home))}
    missing = [d for d in days if d not in have]
    if missing:
        click.echo(f"error: the distributed run did not finish {', '.join(missing)} (a rank failed or was "
                   "stopped; see its output above); re-run to resume", err=True)
        sys.exit(1)
    sys.exit(0)


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

        options = {k: kwargs.pop(k) for k in list(kwargs) if not k.startswith("cfg__") and k != "config_file"}
        cfg = resolve_config(kwargs)
        day = check_day(day) if day else date.today().isoformat()
        db = store.open_db(db_path(home))
        app.ingest(db, day, cfg, source, home, options, click.echo)  # it prints its own summary

    return ingest


def metrics_command(app: App) -> click.Command:
    @click.command("metrics", help=f"""Print the per-day metrics of a {app.name} run.

        {app.metrics_note or 'By the day the completions were made.'}

        Example: {app.name} metrics --run {app.demo_run_name()}
        """)
    @run_option(app)
    @HOME_OPTION
    @click.option("--json", "as_json", is_flag=True, help="print JSON lines instead of a table")
    def metrics(run: str, home: str | None, as_json: bool) -> None:
        import json

        from varro.engine import store
        from varro.engine.eval.metrics import app_day_metrics, format_metrics

        db = reading_db(home)
        require_app_run(db, app, run, home)
        rows = [app_day_metrics(db, app, run, d) for d in store.rollout_days(db, app.name, run)]
        if as_json:
            for r in rows:
                click.echo(json.dumps(r))
        else:
            click.echo(format_metrics(rows, list(app.metric_columns)))

    return metrics


def cron_run_note(app: App, run: str, home: str | None) -> str:
    """The comment under the crontab line: the run it schedules, its app, its home and what settings its
    nightly will use."""
    from varro.engine.run.checkpoints import list_checkpoints
    from varro.engine.core.paths import home_dir
    from varro.engine.run.identity import read_run, run_file
    from varro.engine.core.paths import run_dir

    path = run_dir(run, home)
    stored = read_run(path)
    if stored is not None:
        return (f"# run {run} exists: {app.name} on {stored['model']}; the nightly uses its settings from "
                f"{run_file(path)} ({len(stored.get('changes', []))} changed since {stored['created_utc'][:10]})")
    where = f"# run {run} ({app.name}) in {home_dir(home)}"
    found = list_checkpoints(path)
    if found:
        return (f"{where}: {len(found)} checkpoints (latest {found[-1].name}) and no run.toml yet; the first "
                f"nightly writes {run_file(path)} from the latest checkpoint's settings")
    return f"{where}: a new run; its first nightly writes {run_file(path)}"


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
        from varro.engine.loop.schedule import cron_line, install_cron, install_launchd, is_macos, launchd_plist

        try:
            hour, minute = (int(x) for x in at.split(":"))
        except ValueError:
            raise click.BadParameter(f"{at!r} is not HH:MM", param_hint="--at") from None
        from varro.engine.run.identity import RunIdentityError
        from varro.engine.core.paths import run_dir

        owner = run_owner(run_dir(run, home))
        if owner is not None and owner != app.name:
            raise RunIdentityError(f"run {run!r} belongs to {owner}: use `{owner} cron --run {run}`, or another "
                                   f"--run for {app.name}")
        line = cron_line(app.name, run, home, hour, minute)
        click.echo(line)
        click.echo(cron_run_note(app, run, home))
        plist = launchd_plist(app.name, run, home, hour, minute) if is_macos() else None
        if plist:
            click.echo(plist)
        if install:
            if plist:
                click.echo(f"installed {install_launchd(app.name, run, plist)}")
            elif shutil.which("crontab") is None:
                raise UserError("there is no `crontab` program on this machine: install cron (Debian: apt install "
                                "cron), or give the line above to your scheduler")
            elif install_cron(line):
                click.echo("installed in your crontab (crontab -l shows it)")
            else:
                click.echo("already in your crontab; nothing changed")

    return cron


def panel_context(app: App, run: str, home: str | None, embedder: str | None):
    """What `compare` and `eval` share: (db, run path, the run's config, its embedder (`embedder` overrides
    it)); raises NoDatabaseError or UnknownRunError first."""
    from varro.engine.core.config import Config
    from varro.engine.embed.embedders import CachedEmbedder, load_embedder
    from varro.engine.eval.panel import run_config

    db = reading_db(home)
    path = require_app_run(db, app, run, home)
    cfg = run_config(path, Config())
    emb = CachedEmbedder(load_embedder(embedder or getattr(cfg, app.name).embedder), db)
    return db, path, cfg, emb


def compare_command(app: App) -> click.Command:
    @click.command("compare", help=f"""Compare two checkpoints of a {app.name} run on its held-out panel with
        the same seeds and the same reward.

        The prompts are the run's evaluation panel (held-out stories that no
        update has seen; never training prompts): fewer than --n when fewer can
        be scored, said plainly. Prints the completions side by side with their
        rewards, which days' data score them, and the mean reward difference
        with a 95% t-interval over prompts (a panel under 10 prompts is
        labelled too small to conclude from). --json prints
        every prompt's id, day, split and both sides' samples and rewards.

        Example: {app.name} compare --before base --after latest --html compare.html
        """)
    @click.option("--before", default="base", show_default=True, help="'base' or a checkpoint day")
    @click.option("--after", default="latest", show_default=True, help="'latest' or a checkpoint day")
    @click.option("--n", "n", default=8, show_default=True, help="the first N prompts of the run's panel")
    @click.option("--samples", default=None, type=int, help="completions per prompt and side [default: panel_samples]")
    @click.option("--seed", default=None, type=int, help="sampling seed, the same for both sides [default: panel_seed]")
    @click.option("--html", "html_path", default=None, type=click.Path(dir_okay=False), help="also write HTML")
    @click.option("--json", "as_json", is_flag=True, help="print JSON instead of the side-by-side text")
    @run_option(app)
    @HOME_OPTION
    @click.option("--embedder", default=None, help="override the run's embedder (e.g. 'hash' in tests)")
    def compare_cmd(before, after, n, samples, seed, html_path, as_json, run, home, embedder):
        import json

        from varro.engine.eval.compare import compare, format_comparison, held_out_prompts, to_json, write_html
        from varro.engine.core.paths import caller_path

        db, path, cfg, emb = panel_context(app, run, home, embedder)
        scorable = lambda p: app.scorable(db, p)  # noqa: E731
        prompts, note = held_out_prompts(db, app.name, path, n, scorable, cfg, emb)
        days = sorted({app.targets(p) for p in prompts})
        note += "; scored against " + (", ".join(days) if len(days) <= 4 else f"{days[0]} ... {days[-1]}")
        result = compare(db, path, prompts, before, after, app.score_texts, emb, cfg,
                         samples or cfg.eval.panel_samples, cfg.eval.panel_seed if seed is None else seed, note)
        if as_json:
            click.echo(json.dumps(to_json(result, app.targets), indent=2))
        else:
            click.echo(format_comparison(result))
        if html_path:
            click.echo(f"html: {write_html(result, caller_path(html_path)).resolve()}")

    return compare_cmd


def eval_command(app: App) -> click.Command:
    @click.command("eval", help=f"""Score the base model and every checkpoint of a {app.name} run on the
        run's held-out panel and print the learning curve.

        The panel is fixed per run: the earliest held-out prompts that can be
        scored, one per story, up to --panel-size (see `{app.name} compare`). Each
        prompt is sampled with its own seed, the same for every checkpoint;
        scores are cached in SQLite (panel_scores), so a re-run computes only
        new checkpoints or new panel prompts. Each row: mean reward with a 95%
        t-interval over prompts, and the paired difference from the base.

        Example: {app.name} eval --run {app.demo_run_name()}
        """)
    @run_option(app)
    @HOME_OPTION
    @click.option("--json", "as_json", is_flag=True, help="print JSON lines, one per checkpoint")
    @click.option("--embedder", default=None, help="override the run's embedder (e.g. 'hash' in tests)")
    def eval_cmd(run, home, as_json, embedder):
        import dataclasses
        import json

        from varro.engine.eval.panel import evaluate, format_curve

        db, path, cfg, emb = panel_context(app, run, home, embedder)
        prompts, points = evaluate(db, app.name, path, app.score_texts, emb, cfg, lambda p: app.scorable(db, p))
        if as_json:
            for pt in points:
                click.echo(json.dumps(dataclasses.asdict(pt)))
            return
        days = sorted({p["day"] for p in prompts})
        click.echo(f"panel: {len(prompts)} held-out prompts of {len(prompts)} stories, made on {days[0]} .. "
                   f"{days[-1]}, {cfg.eval.panel_samples} samples each")
        click.echo(format_curve(points))

    return eval_cmd


def hacks_command(app: App) -> click.Command:
    @click.command("hacks", help=f"""Red-team {app.name}'s reward: score known hacks beside hand-written honest
        references, and fail when a hack scores close to honest.

        Each hack of the catalogue ({app.examples}) is built from a prompt and its
        data and scored by the nightly's reward next to the honest reference for
        the same prompt. Per hack: prompts (n), mean reward, the honest mean on
        those prompts, how far below honest it is, the smallest per-prompt gap
        and the prompt where it was smallest, and PASS when the hack is at least
        --margin below honest on every prompt (default {app.hack_margin:g}). Runs on the
        references whose targets are stored or, with --sample, on the shipped
        sample in a temporary database. Exits 1 when any hack fails.

        Example: {app.name} hacks --sample
        """)
    @click.option("--sample", is_flag=True, help="use the shipped sample, loaded into a temporary database")
    @click.option("--honest", "honest_path", default=None, type=click.Path(dir_okay=False, exists=True),
                  help="honest references, JSON lines [default: data/sample/honest.jsonl]")
    @click.option("--margin", default=app.hack_margin, show_default=True, type=float,
                  help="how far below the honest reward a hack must score on every prompt")
    @click.option("--json", "as_json", is_flag=True, help="print one JSON object per hack, with its texts")
    @HOME_OPTION
    @config_options(app.name)
    def hacks_cmd(sample: bool, honest_path: str | None, margin: float, as_json: bool, home: str | None,
                  **kwargs) -> None:
        import json
        import tempfile

        from varro.engine import store
        from varro.engine.embed.embedders import CachedEmbedder, load_embedder
        from varro.engine.rewards.redteam import format_results, load_references, run_hacks

        cfg = resolve_config(kwargs)
        team = app.red_team()
        refs = load_references(honest_path, app.name)
        section = getattr(cfg, app.name)
        with tempfile.TemporaryDirectory(prefix=f"{app.name}-hacks-") as tmp, MissingTargets():
            db = store.open_db(f"{tmp}/sample.db") if sample else reading_db(home)
            if sample:
                team.load_sample(db)
            emb = CachedEmbedder(load_embedder(section.embedder), db)
            cases, notes = team.cases(db, refs, emb, cfg)
            if not cases:
                raise click.ClickException(
                    f"none of the {len(refs)} honest {app.name} references has its target stored"
                    + (f" ({notes[0]})" if notes else "") + "; try --sample, or --honest FILE for your data")
            results = run_hacks(db, cases, team.catalogue, team.score_texts, emb, cfg, margin)
        if as_json:
            for r in results:
                click.echo(json.dumps(r.to_json()))
        else:
            where = "the shipped sample" if sample else "the stored data"
            click.echo(format_results(results, f"{app.name}: {len(cases)} honest references on {where}, "
                                               f"{section.embedder}"))
            for note in notes:
                click.echo(f"  left out: {note}")
        failed = [r.name for r in results if r.result == "FAIL"]
        if failed:
            click.echo(f"error: {len(failed)} hacks within {margin:g} of honest: {', '.join(failed)}", err=True)
            sys.exit(1)

    return hacks_cmd


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
        from varro.engine.loop.demo import demo_base, demo_days, run_demo
        from varro.engine.model.loading import check_model

        given = kwargs.get("cfg__model__model")
        if given:  # a bad --model fails before any demo model is built
            check_model(given)
        base = demo_base(app, home, tiny, cold, bool(given), click.echo)
        run_demo(app, home, run, model_config(kwargs, base=base), days=demo_days(days, tiny), echo=click.echo)

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
