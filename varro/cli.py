"""The `varro` command line."""

from __future__ import annotations

import sys

import click

from varro.engine.checkpoints import CheckpointError, check_run_owner
from varro.engine.compare import CompareError
from varro.forecast.cycle import PromptError
from varro.engine.panel import PanelError
from varro.engine.cli_inspect import register as register_inspect
from varro.engine.cli_options import config_options, resolve_config
from varro.engine.config import ConfigError, FutureDayError, NoDatabaseError, UnknownRunError
from varro.engine.store import MigrationError
from varro.engine.embed import EmbedderError
from varro.forecast.ingest import IngestError
from varro.engine.models import ModelLoadError
from varro.engine.schedule import ScheduleError
from varro.engine.train import TrainingError

# Errors the library raises on purpose; the CLI prints them as one line and exits 1.
EXPECTED_ERRORS = (ConfigError, CheckpointError, MigrationError, ModelLoadError, TrainingError, FileNotFoundError,
                   IngestError, EmbedderError, ScheduleError, CompareError, PanelError, PromptError,
                   UnknownRunError, NoDatabaseError, FutureDayError)


class VarroGroup(click.Group):
    """Turns the library's expected errors into one line on stderr and exit status 1."""

    expected: tuple[type[BaseException], ...] = EXPECTED_ERRORS

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except self.expected as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)


@click.group(cls=VarroGroup)
def cli() -> None:
    """Varro: a nightly RL loop that teaches a small model from real-world signals.

    Example: varro demo
    """


@cli.command("tiny-model")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--seed", default=0, show_default=True, help="seed for the random weights")
@click.option("--vocab-size", default=1024, show_default=True, help="BPE vocabulary size")
def tiny_model(out_dir: str, seed: int, vocab_size: int) -> None:
    """Write a tiny random Qwen3-architecture model with a locally trained tokenizer.

    The folder loads with mlx_lm.load unchanged; use it as --model offline.

    Example: varro tiny-model data/models/tiny-qwen3
    """
    from varro.engine.models import write_tiny_model

    path = write_tiny_model(out_dir, seed=seed, vocab_size=vocab_size)
    click.echo(str(path))


def model_config(kwargs: dict, base=None):
    """resolve_config, with a --model that looks local checked first, before any heavy work (ModelLoadError)."""
    from varro.engine.models import check_model

    if kwargs.get("cfg__model__model"):
        check_model(kwargs["cfg__model__model"])
    cfg = resolve_config(kwargs, base=base)
    check_model(cfg.model.model)
    return cfg


def reading_db(home: str | None):
    """The existing database of a reading command; raises NoDatabaseError rather than creating one."""
    from varro.engine import store as dbm
    from varro.engine.config import require_db

    return dbm.open_db(require_db(home))


HOME_OPTION = click.option("--home", default=None, help="folder for data/ and runs/ (default $VARRO_HOME or the repo)")
RUN_OPTION = click.option("--run", default="default", show_default=True, help="run name under runs/")


@cli.command()
@click.option("--days", default=None, type=int, help="only the first N sample days [default: all]")
@click.option("--varro-only", is_flag=True, help="skip Walter, the reports and the compare")
@click.option("--cold", is_flag=True, help="use the random tiny model without the warm-up")
@HOME_OPTION
@config_options("varro")
def demo(days: int | None, varro_only: bool, cold: bool, home: str | None, **kwargs) -> None:
    """Run the offline demo on a tiny model: Varro and Walter over the sample days, then report and compare.

    Builds the tiny model (and, once, a few minutes' warm-up on the sample
    text so its samples read as words), runs Varro's daily cycle over the seven
    sample days (run "demo") and Walter's over the five Bluesky sample days (run
    "walter-demo"), writes both HTML reports, compares the base model with the
    last checkpoint, and prints where everything is. Any setting can be
    overridden, e.g. --model or --learning-rate.

    Example: varro demo --days 3
    """
    from varro.engine.demo import demo_config, ensure_tiny_model, run_demo, run_full_demo
    from varro.engine.models import check_model

    if kwargs.get("cfg__model__model"):  # a bad --model fails before the tiny model and its warm-up are built
        check_model(kwargs["cfg__model__model"])
    cfg = model_config(kwargs, base=demo_config(ensure_tiny_model(home, warm=not cold, echo=click.echo)))
    if varro_only:
        run_demo(home, "demo", cfg, days=days, echo=click.echo)
    else:
        run_full_demo(home, cfg, days=days, echo=click.echo)


@cli.command()
@click.option("--date", "day", required=True, help="the day to run, YYYY-MM-DD")
@click.option("--source", type=click.Choice(["rss", "sample"]), default="rss", show_default=True,
              help="where the day's headlines come from")
@click.option("--feed", "feed_urls", multiple=True, help="feed URL (repeatable; replaces data/feeds.toml)")
@RUN_OPTION
@HOME_OPTION
@config_options("varro")
def step(day: str, source: str, feed_urls: tuple[str, ...], run: str, home: str | None, **kwargs) -> None:
    """Run Varro's daily cycle for one day.

    Ingest the day's headlines, score the previous day's forecasts against them,
    take the GSPO updates, write the day's checkpoint, and forecast the day's
    headlines. Running a day twice does no work twice.

    Example: varro step --date 2026-11-03 --source sample --model data/models/tiny-qwen3
    """
    from varro.engine import store as dbm
    from varro.engine.config import db_path, require_past, run_dir
    from varro.forecast.cycle import step as run_step
    from varro.engine.embed import CachedEmbedder, load_embedder

    day = require_past(_check_day(day))
    cfg = model_config(kwargs)
    check_run_owner(run_dir(run, home), "varro", cfg.model.model)
    db = dbm.open_db(db_path(home))
    ingest = None if source == "sample" else _rss_ingest(feed_urls, cfg.varro.timezone)
    embedder = CachedEmbedder(load_embedder(cfg.varro.embedder), db)
    res = run_step(db, cfg, run, run_dir(run, home), day, embedder, ingest=ingest)
    click.echo(f"{day}: ingested {res.ingested}, scored {res.scored}, steps {res.steps}, "
               f"checkpoint {res.checkpoint or 'none'}, sampled {res.sampled}")
    for note in res.notes:
        click.echo(f"  note: {note}")


def metrics_command(app: str):
    @click.command("metrics", help=f"""Print the per-day metrics of a {app} run (Varro's by the day the
        forecasts were made).

        Example: {app} metrics --run {'demo' if app == 'varro' else 'walter-demo'}
        """)
    @RUN_OPTION
    @HOME_OPTION
    @click.option("--json", "as_json", is_flag=True, help="print JSON lines instead of a table")
    def metrics(run: str, home: str | None, as_json: bool) -> None:
        import json

        from varro.engine.config import require_run
        from varro.forecast.cycle import VARRO_COLUMNS, format_metrics

        if app == "varro":
            from varro.forecast.cycle import day_metrics
            columns = VARRO_COLUMNS
        else:
            from walter.cycle import day_metrics
            from walter.demo import COLUMNS as columns
        db = reading_db(home)
        require_run(db, app, run, home)
        days = [r["day"] for r in db.query(
            "select distinct r.day from rollouts r join prompts p on p.id = r.prompt_id "
            "where p.app = ? and r.run = ? order by r.day", [app, run])]
        rows = [day_metrics(db, run, d) for d in days]
        if as_json:
            for r in rows:
                click.echo(json.dumps(r))
        else:
            click.echo(format_metrics(rows, columns))

    return metrics


cli.add_command(metrics_command("varro"))


def resolve_days(day: str | None, first: str | None, last: str | None) -> list[str]:
    """--date D, or --from D1 --to D2 (inclusive); default: today. Raises FutureDayError for a later day."""
    from datetime import date

    from varro.engine.config import require_past
    from varro.engine.nightly import day_range

    if (first is None) != (last is None):
        raise click.UsageError("--from and --to go together")
    if first is not None:
        if day is not None:
            raise click.UsageError("use --date or --from/--to, not both")
        try:
            days = day_range(_check_day(first), _check_day(last))
        except ValueError as e:
            raise click.UsageError(str(e)) from None
        require_past(days[-1])
        return days
    return [require_past(_check_day(day)) if day else date.today().isoformat()]


def nightly_options(fn):
    for deco in reversed([
        click.option("--date", "day", default=None, help="the day to run [default: today]"),
        click.option("--from", "first", default=None, help="backfill from this day (with --to)"),
        click.option("--to", "last", default=None, help="backfill up to this day, inclusive"),
        click.option("--quiet", is_flag=True, help="plain log lines only (also what cron gets)"),
        click.option("--keep", default=30, show_default=True,
                     help="keep this many newest checkpoints, delete older ones (never the newest)"),
        RUN_OPTION,
        HOME_OPTION,
    ]):
        fn = deco(fn)
    return fn


def run_nightly_cli(run: str, home: str | None, days: list[str], quiet: bool, run_day, keep: int = 30) -> None:
    """Shared by `varro nightly` and `walter nightly`: the lock, the logs, retention, the exit codes."""
    from varro.engine.checkpoints import prune
    from varro.engine.config import run_dir
    from varro.engine.nightly import RunLocked, run_nightly

    def day_then_prune(d, progress):
        result = run_day(d, progress)
        removed = prune(run_dir(run, home), keep)
        return f"{result}" + (f"; removed old checkpoints {', '.join(removed)}" if removed else "")

    try:
        run_nightly(run_dir(run, home), days, day_then_prune, quiet=quiet, echo=click.echo)
    except RunLocked as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(75)  # EX_TEMPFAIL: try again later


@cli.command()
@nightly_options
@click.option("--source", type=click.Choice(["rss", "sample"]), default="rss", show_default=True,
              help="where the day's headlines come from")
@click.option("--feed", "feed_urls", multiple=True, help="feed URL (repeatable; replaces data/feeds.toml)")
@click.option("--hosts", "hostfile", default=None, type=click.Path(dir_okay=False, exists=True),
              help="an mlx.launch hostfile: run data-parallel over these machines (ring backend)")
@config_options("varro")
def nightly(day, first, last, quiet, keep, run, home, source, feed_urls, hostfile, **kwargs) -> None:
    """Run Varro's daily step end to end, safe to run from cron.

    A lock keeps two runs of the same --run from overlapping (the second exits
    at once with status 75); a re-run after a crash continues from the last
    finished stage and never trains a day twice; --from/--to backfills. Logs go
    to runs/<run>/logs/<day>.log. Exit status 0 on success, 1 with a one-line
    reason on failure.

    With --hosts FILE (or when started by mlx.launch) every process runs this
    command; rank 0 alone writes the database, the checkpoint and the logs.

    Example: varro nightly --run default --quiet
    """
    from varro.engine import store as dbm
    from varro.engine.config import db_path, run_dir
    from varro.forecast.cycle import step as run_step
    from varro.engine.distributed import init_world
    from varro.engine.embed import CachedEmbedder, load_embedder
    from varro.engine.progress import Progress

    days = resolve_days(day, first, last)
    if hostfile:
        _relaunch_distributed(hostfile, run, home, days)
    cfg = model_config(kwargs)
    check_run_owner(run_dir(run, home), "varro", cfg.model.model)
    world = init_world()
    main = world.is_main
    db = dbm.open_db(db_path(home)) if main else None
    ingest = None if source == "sample" or not main else _rss_ingest(feed_urls, cfg.varro.timezone)
    embedder = CachedEmbedder(load_embedder(cfg.varro.embedder), db) if main else None

    def run_day(d, progress):
        res = run_step(db, cfg, run, run_dir(run, home), d, embedder, ingest=ingest, progress=progress,
                       world=world)
        return (f"ingested {res.ingested}, scored {res.scored}, steps {res.steps}, "
                f"checkpoint {res.checkpoint or 'none'}, "
                f"sampled {res.sampled}" + (f", {world.size} ranks" if world.distributed else "")
                + "".join(f"; {n}" for n in res.notes))

    if main:
        run_nightly_cli(run, home, days, quiet, run_day, keep)
    else:  # the lock, the logs and retention are rank 0's
        for d in days:
            run_day(d, Progress(bars=False))


def _relaunch_distributed(hostfile: str, run: str, home: str | None, days: list[str]) -> None:
    """Run this same command on every host of `hostfile` through mlx.launch (ring backend), then exit.

    mlx.launch stops every rank when one dies but exits 0 regardless, so success
    is judged by what rank 0 leaves behind: a complete checkpoint for every day.
    """
    import os
    import shutil
    import subprocess

    from varro.engine.checkpoints import list_checkpoints
    from varro.engine.config import run_dir

    args = sys.argv[1:]
    i = args.index("--hosts")
    args = args[:i] + args[i + 2:]
    launcher = shutil.which("mlx.launch") or os.path.join(os.path.dirname(sys.executable), "mlx.launch")
    cmd = [launcher, "--hostfile", hostfile, "--backend", "ring", "--", sys.executable, "-m", "varro.cli", *args]
    click.echo("launching: " + " ".join(cmd), err=True)
    subprocess.run(cmd)
    have = {p.name for p in list_checkpoints(run_dir(run, home))}
    missing = [d for d in days if d not in have]
    if missing:
        click.echo(f"error: the distributed run did not finish {', '.join(missing)} (a rank failed or was "
                   "stopped; see its output above); re-run to resume", err=True)
        sys.exit(1)
    sys.exit(0)


def cron_command(app: str):
    @click.command("cron", help=f"""Print a ready crontab line (and a launchd plist on macOS) for the
        nightly run.

        The line runs `{app} nightly` through scripts/env with this checkout's
        paths, --home and --quiet, appending to runs/<run>/logs/cron.log.

        Example: {app} cron --at 03:15 --install
        """)
    @RUN_OPTION
    @HOME_OPTION
    @click.option("--at", "at", default="02:30", show_default=True, help="local time of day, HH:MM")
    @click.option("--install", is_flag=True, help="install it (crontab, or launchd on macOS) after showing it")
    def cron(run: str, home: str | None, at: str, install: bool) -> None:
        from varro.engine.schedule import cron_line, install_cron, install_launchd, is_macos, launchd_plist

        try:
            hour, minute = (int(x) for x in at.split(":"))
        except ValueError:
            raise click.BadParameter(f"{at!r} is not HH:MM", param_hint="--at") from None
        line = cron_line(app, run, home, hour, minute)
        click.echo(line)
        plist = launchd_plist(app, run, home, hour, minute) if is_macos() else None
        if plist:
            click.echo(plist)
        if install:
            if plist:
                click.echo(f"installed {install_launchd(app, run, plist)}")
            elif install_cron(line):
                click.echo("installed in your crontab (crontab -l shows it)")
            else:
                click.echo("already in your crontab; nothing changed")

    return cron


cli.add_command(cron_command("varro"))


def app_scoring(app: str, db):
    """(score_texts, scorable(prompt), targets(prompt)) of an app: how its texts are scored and by what."""
    from datetime import date, timedelta

    from varro.forecast.headlines import headlines_for_day

    if app == "varro":
        from varro.forecast.cycle import score_texts

        def next_day(p):
            return (date.fromisoformat(p["day"]) + timedelta(days=1)).isoformat()

        return (score_texts, lambda p: bool(headlines_for_day(db, next_day(p))),
                lambda p: f"headlines of {next_day(p)}")
    from walter.cycle import score_texts

    return score_texts, lambda p: True, lambda p: "the article's stored posts with final counts"


def panel_context(app: str, run: str, home: str | None, embedder: str | None):
    """What `compare` and `eval` share: (db, run path, app_scoring(app, db), the run's config, its embedder
    (`embedder` overrides it)); raises NoDatabaseError or UnknownRunError first."""
    from varro.engine.config import Config, require_run
    from varro.engine.embed import CachedEmbedder, load_embedder
    from varro.engine.panel import run_config

    db = reading_db(home)
    path = require_run(db, app, run, home)
    cfg = run_config(path, Config())
    emb = CachedEmbedder(load_embedder(embedder or getattr(cfg, app).embedder), db)
    return db, path, app_scoring(app, db), cfg, emb


def compare_command(app: str):
    @click.command("compare", help=f"""Compare two checkpoints of a {app} run on its held-out panel with
        the same seeds and the same reward.

        The prompts are the run's evaluation panel (held-out stories that no
        update has seen; never training prompts): fewer than --n when fewer can
        be scored, said plainly. Prints the completions side by side with their
        rewards, which days' data score them, and the mean reward difference
        with a 95% bootstrap confidence interval over prompts. --json prints
        every prompt's id, day, split and both sides' samples and rewards.

        Example: {app} compare --before base --after latest --html compare.html
        """)
    @click.option("--before", default="base", show_default=True, help="'base' or a checkpoint day")
    @click.option("--after", default="latest", show_default=True, help="'latest' or a checkpoint day")
    @click.option("--n", "n", default=8, show_default=True, help="the first N prompts of the run's panel")
    @click.option("--samples", default=None, type=int, help="completions per prompt and side [default: panel_samples]")
    @click.option("--seed", default=None, type=int, help="sampling seed, the same for both sides [default: panel_seed]")
    @click.option("--html", "html_path", default=None, type=click.Path(dir_okay=False), help="also write HTML")
    @click.option("--json", "as_json", is_flag=True, help="print JSON instead of the side-by-side text")
    @RUN_OPTION
    @HOME_OPTION
    @click.option("--embedder", default=None, help="override the run's embedder (e.g. 'hash' in tests)")
    def compare_cmd(before, after, n, samples, seed, html_path, as_json, run, home, embedder):
        import json

        from varro.engine.compare import compare, format_comparison, held_out_prompts, to_json, write_html
        from varro.engine.config import caller_path

        db, path, (score_texts, scorable, targets), cfg, emb = panel_context(app, run, home, embedder)
        prompts, note = held_out_prompts(db, app, path, n, scorable, cfg, emb)
        days = sorted({targets(p) for p in prompts})
        note += "; scored against " + (", ".join(days) if len(days) <= 4 else f"{days[0]} ... {days[-1]}")
        result = compare(db, path, prompts, before, after, score_texts, emb, cfg,
                         samples or cfg.eval.panel_samples, cfg.eval.panel_seed if seed is None else seed, note)
        if as_json:
            click.echo(json.dumps(to_json(result, targets), indent=2))
        else:
            click.echo(format_comparison(result))
        if html_path:
            click.echo(f"html: {write_html(result, caller_path(html_path)).resolve()}")

    return compare_cmd


def eval_command(app: str):
    @click.command("eval", help=f"""Score the base model and every checkpoint of a {app} run on the
        run's held-out panel and print the learning curve.

        The panel is fixed per run: the earliest held-out prompts that can be
        scored, one per story, up to --panel-size (see `{app} compare`). Each
        prompt is sampled with its own seed, the same for every checkpoint;
        scores are cached in SQLite (panel_scores), so a re-run computes only
        new checkpoints or new panel prompts. Each row: mean reward with a 95%
        bootstrap CI over prompts, and the paired difference from the base.

        Example: {app} eval --run {'demo' if app == 'varro' else 'walter-demo'}
        """)
    @RUN_OPTION
    @HOME_OPTION
    @click.option("--json", "as_json", is_flag=True, help="print JSON lines, one per checkpoint")
    @click.option("--embedder", default=None, help="override the run's embedder (e.g. 'hash' in tests)")
    def eval_cmd(run, home, as_json, embedder):
        import dataclasses
        import json

        from varro.engine.panel import evaluate, format_curve

        db, path, (score_texts, scorable, _), cfg, emb = panel_context(app, run, home, embedder)
        prompts, points = evaluate(db, app, path, score_texts, emb, cfg, scorable)
        if as_json:
            for pt in points:
                click.echo(json.dumps(dataclasses.asdict(pt)))
            return
        days = sorted({p["day"] for p in prompts})
        click.echo(f"panel: {len(prompts)} held-out prompts of {len(prompts)} stories, made on {days[0]} .. "
                   f"{days[-1]}, {cfg.eval.panel_samples} samples each")
        click.echo(format_curve(points))

    return eval_cmd


cli.add_command(compare_command("varro"))
cli.add_command(eval_command("varro"))
register_inspect(cli, "varro")


class MissingTargets:
    """A with-block that turns a missing scoring target (LookupError, not a KeyError) into one line, exit 1."""

    def __enter__(self):
        return self

    def __exit__(self, kind, e, tb):
        if kind is not None and issubclass(kind, LookupError) and not issubclass(kind, (KeyError, IndexError)):
            raise click.ClickException(str(e)) from None
        return False


def echo_scores(texts: list[str], comps: list[dict], head: str, as_json: bool) -> None:
    """Shared by `varro score` and `walter score`: a table, or one JSON object per text."""
    import json

    from varro.engine.hacks import format_scores

    if as_json:
        for t, c in zip(texts, comps):
            click.echo(json.dumps({"text": t, **c}))
    else:
        click.echo(format_scores(texts, comps, head))


@cli.command("score")
@click.option("--date", "day", required=True, help="the day of the headline, YYYY-MM-DD")
@click.option("--headline", "key", required=True, help="the headline's exact title, guid or id")
@click.option("--text", "texts", multiple=True, required=True, help="a forecast to score (repeatable)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object per text instead of the table")
@HOME_OPTION
@config_options("varro")
def score_cmd(day: str, key: str, texts: tuple[str, ...], as_json: bool, home: str | None, **kwargs) -> None:
    """Score forecasts for one stored headline with the nightly's reward, printing every component.

    The texts are scored as forecasts made on --date for that headline: against
    the next day's stored headlines, by the same score_texts the nightly uses,
    with the stored prompt when the headline was chosen (else one built from the
    headline, split by its story). Exits 1 with one line when the headline or
    the next day's headlines are not stored.

    Example: varro score --date 2026-11-02 --headline harbor-2026-11-02-001 --text "The strike will last ..."
    """
    import json

    from varro.forecast.cycle import score_texts
    from varro.engine.embed import CachedEmbedder, load_embedder
    from varro.engine.hacks import find_headline, next_day, varro_prompt

    day = _check_day(day)
    cfg = resolve_config(kwargs)
    db = reading_db(home)
    emb = CachedEmbedder(load_embedder(cfg.varro.embedder), db)
    with MissingTargets():
        prompt = varro_prompt(db, find_headline(db, day, key), emb, cfg)
        comps = score_texts(db, prompt, list(texts), emb, cfg)
    head = (f"{prompt['id']} ({prompt['split']}): {json.loads(prompt['source_json'])['title']}\n"
            f"scored against the headlines of {next_day(day)}")
    echo_scores(list(texts), comps, head, as_json)


def hacks_command(app: str):
    examples = ("another story's forecast, one generic paragraph, the headline restated or paraphrased, "
                "keyword stuffing, instruction echo, bullets, blank" if app == "varro" else
                "the top historical post verbatim or lightly edited, the title, hashtag spam, emoji runs, "
                "a bare link, generic praise, reply bait")

    @click.command("hacks", help=f"""Red-team {app}'s reward: score known hacks beside hand-written honest
        references, and fail when a hack scores close to honest.

        Each hack of the catalogue ({examples}) is built from a prompt and its
        data and scored by the nightly's reward next to the honest reference for
        the same prompt. Per hack: prompts (n), mean reward, the honest mean on
        those prompts, how far below honest it is, the smallest per-prompt gap,
        and PASS when the mean is at least --margin below honest. Runs on the
        references whose targets are stored or, with --sample, on the shipped
        sample in a temporary database. Exits 1 when any hack fails.

        Example: {app} hacks --sample
        """)
    @click.option("--sample", is_flag=True, help="use the shipped sample, loaded into a temporary database")
    @click.option("--honest", "honest_path", default=None, type=click.Path(dir_okay=False, exists=True),
                  help="honest references, JSON lines [default: data/sample/honest.jsonl]")
    @click.option("--margin", default=0.1, show_default=True, type=float,
                  help="how far below the honest mean every hack's mean reward must be")
    @click.option("--json", "as_json", is_flag=True, help="print one JSON object per hack, with its texts")
    @HOME_OPTION
    @config_options(app)
    def hacks_cmd(sample: bool, honest_path: str | None, margin: float, as_json: bool, home: str | None,
                  **kwargs) -> None:
        import json
        import tempfile

        from varro.engine import store as dbm
        from varro.engine.embed import CachedEmbedder, load_embedder
        from varro.engine.hacks import format_results, load_references, run_hacks

        cfg = resolve_config(kwargs)
        team = _red_team(app)
        refs = load_references(honest_path, app)
        with tempfile.TemporaryDirectory(prefix=f"{app}-hacks-") as tmp, MissingTargets():
            db = dbm.open_db(f"{tmp}/sample.db") if sample else reading_db(home)
            if sample:
                team.load_sample(db)
            emb = CachedEmbedder(load_embedder(getattr(cfg, app).embedder), db)
            cases, notes = team.cases(db, refs, emb, cfg)
            if not cases:
                raise click.ClickException(
                    f"none of the {len(refs)} honest {app} references has its target stored"
                    + (f" ({notes[0]})" if notes else "") + "; try --sample, or --honest FILE for your data")
            results = run_hacks(db, cases, team.catalogue, team.score_texts, emb, cfg, margin)
        if as_json:
            for r in results:
                click.echo(json.dumps(r.to_json()))
        else:
            where = "the shipped sample" if sample else "the stored data"
            click.echo(format_results(results, f"{app}: {len(cases)} honest references on {where}, "
                                               f"{getattr(cfg, app).embedder}"))
            for note in notes:
                click.echo(f"  left out: {note}")
        failed = [r.name for r in results if r.result == "FAIL"]
        if failed:
            click.echo(f"error: {len(failed)} hacks within {margin:g} of honest: {', '.join(failed)}", err=True)
            sys.exit(1)

    return hacks_cmd


def _red_team(app: str):
    if app == "varro":
        from varro.engine import hacks

        return hacks.VARRO
    from walter import hacks as walter_hacks

    return walter_hacks.WALTER


cli.add_command(hacks_command("varro"))


def _check_day(day: str) -> str:
    from datetime import date

    try:
        return date.fromisoformat(day).isoformat()
    except ValueError:
        raise click.BadParameter(f"{day!r} is not a date like 2026-11-03", param_hint="--date") from None


def _feeds(feed_urls: tuple[str, ...]):
    from varro.forecast.ingest import Feed, load_feeds

    return [Feed(None, u) for u in feed_urls] if feed_urls else load_feeds()


def _rss_ingest(feed_urls: tuple[str, ...], timezone: str):
    """The step's ingest stage: fetch every feed, print the summary, fail only if no feed could be read."""
    from varro.forecast.ingest import IngestError, all_failed, format_summary, ingest

    feeds = _feeds(feed_urls)

    def run(db, day: str) -> int:
        results = ingest(db, feeds, day, tz=timezone or None)
        click.echo(format_summary(results))
        if all_failed(results):
            raise IngestError(f"no feed could be read for {day}; nothing was changed, re-run later")
        return sum(r.new_items for r in results)

    return run


@cli.command("ingest")
@click.option("--date", "day", default=None, help="the day undated items belong to [default: today]")
@click.option("--feed", "feed_urls", multiple=True, help="feed URL (repeatable; replaces data/feeds.toml)")
@click.option("--timezone", default="", help="IANA timezone that decides a headline's day [default: the machine's]")
@HOME_OPTION
def ingest_cmd(day: str | None, feed_urls: tuple[str, ...], timezone: str, home: str | None) -> None:
    """Fetch the news feeds into the database and print a per-feed summary.

    Feeds come from data/feeds.toml (or $VARRO_HOME/data/feeds.toml) unless
    --feed is given. Exits non-zero only when no feed at all could be read.

    Example: varro ingest --feed https://feeds.bbci.co.uk/news/world/rss.xml
    """
    from datetime import date

    from varro.engine import store as dbm
    from varro.engine.config import db_path
    from varro.forecast.ingest import all_failed, format_summary, ingest

    day = _check_day(day) if day else date.today().isoformat()
    db = dbm.open_db(db_path(home))
    results = ingest(db, _feeds(feed_urls), day, tz=timezone or None)
    click.echo(format_summary(results))
    if all_failed(results):
        click.echo("error: no feed could be read", err=True)
        sys.exit(1)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
