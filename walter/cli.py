"""The `walter` command line."""

from __future__ import annotations


import click

from varro.cli import (EXPECTED_ERRORS, HOME_OPTION, RUN_OPTION, VarroGroup, _check_day, compare_command,
                       cron_command, eval_command, metrics_command, nightly_options, resolve_days, run_nightly_cli)
from varro.cli import MissingTargets, echo_scores, hacks_command, model_config, reading_db
from varro.engine.checkpoints import check_run_owner
from varro.engine.cli_inspect import register as register_inspect
from varro.engine.cli_options import config_options, resolve_config

from .bsky import BlueskyError
from .ingest import WalterIngestError


class WalterGroup(VarroGroup):
    expected = EXPECTED_ERRORS + (BlueskyError, WalterIngestError)


@click.group(cls=WalterGroup)
def cli() -> None:
    """Walter: a nightly RL loop that learns to write Bluesky posts from what worked.

    Example: walter demo
    """


def _bluesky_ingest(cfg, home):
    """The step's ingest stage against the real Bluesky API (credentials from the environment)."""
    from .bsky import Bluesky
    from .ingest import ingest_search, refresh_counts, update_baselines

    domains = [d.strip() for d in cfg.walter.domains.split(",") if d.strip()]

    def run(db, day: str) -> int:
        with Bluesky(home=home) as client:
            summary = ingest_search(db, client, domains, day, tz=cfg.varro.timezone or None)
            refreshed = refresh_counts(db, client, min_age_hours=cfg.walter.count_age_hours)
            dids = [r["author_did"] for r in db.query(
                "select distinct author_did from bsky_posts where counts_final = 1 or day = ?", [day])]
            authors = update_baselines(db, client, dids, ttl_hours=cfg.walter.baseline_ttl_hours)
        click.echo(f"bluesky: {summary.posts_new} new posts, {refreshed} counts refreshed, "
                   f"{authors} author baselines fetched")
        return summary.posts_new

    return run


def _sample_ingest(db, day: str) -> int:
    from .sample import ingest_sample_day

    return ingest_sample_day(db, day)


@cli.command()
@click.option("--date", "day", required=True, help="the day to run, YYYY-MM-DD")
@click.option("--source", type=click.Choice(["bluesky", "sample"]), default="bluesky", show_default=True,
              help="where the day's posts come from")
@RUN_OPTION
@HOME_OPTION
@config_options("walter")
def step(day: str, source: str, run: str, home: str | None, **kwargs) -> None:
    """Run Walter's daily cycle for one day.

    Ingest posts linking to the news domains, refresh counts and author
    baselines, choose articles by the curriculum, sample posts, score them
    against what worked, take the GSPO updates and write the day's checkpoint.
    Needs BSKY_HANDLE and BSKY_APP_PASSWORD for --source bluesky.

    Example: walter step --date 2026-11-03 --source sample --model data/models/tiny-qwen3
    """
    from varro.engine import store as dbm
    from varro.engine.config import db_path, run_dir
    from varro.engine.embed import CachedEmbedder, load_embedder

    from .cycle import step as run_step

    from varro.engine.config import require_past

    day = require_past(_check_day(day))
    cfg = model_config(kwargs)
    check_run_owner(run_dir(run, home), "walter", cfg.model.model)
    db = dbm.open_db(db_path(home))
    ingest = _sample_ingest if source == "sample" else _bluesky_ingest(cfg, home)
    embedder = CachedEmbedder(load_embedder(cfg.walter.embedder), db)
    res = run_step(db, cfg, run, run_dir(run, home), day, embedder, ingest)
    click.echo(f"{day}: ingested {res.ingested}, sampled {res.sampled}, scored {res.scored}, "
               f"steps {res.steps}, checkpoint {res.checkpoint or 'none'}")
    for note in res.notes:
        click.echo(f"  note: {note}")


@cli.command()
@nightly_options
@click.option("--source", type=click.Choice(["bluesky", "sample"]), default="bluesky", show_default=True,
              help="where the day's posts come from")
@config_options("walter")
def nightly(day, first, last, quiet, keep, run, home, source, **kwargs) -> None:
    """Run Walter's daily step end to end, safe to run from cron.

    A lock keeps two runs of the same --run from overlapping (the second exits
    at once with status 75); a re-run after a crash continues from the last
    finished stage and never trains a day twice; --from/--to backfills. Logs go
    to runs/<run>/logs/<day>.log. Needs BSKY_HANDLE and BSKY_APP_PASSWORD for
    --source bluesky.

    Example: walter nightly --run default --quiet
    """
    from varro.engine import store as dbm
    from varro.engine.config import db_path, run_dir
    from varro.engine.embed import CachedEmbedder, load_embedder

    from .cycle import step as run_step

    from varro.engine.distributed import init_world

    if init_world().distributed:
        raise click.UsageError("walter nightly runs in one process; data-parallel runs are Varro's for now")
    days = resolve_days(day, first, last)
    cfg = model_config(kwargs)
    check_run_owner(run_dir(run, home), "walter", cfg.model.model)
    db = dbm.open_db(db_path(home))
    ingest = _sample_ingest if source == "sample" else _bluesky_ingest(cfg, home)
    embedder = CachedEmbedder(load_embedder(cfg.walter.embedder), db)

    def run_day(d, progress):
        res = run_step(db, cfg, run, run_dir(run, home), d, embedder, ingest, progress=progress)
        return (f"ingested {res.ingested}, sampled {res.sampled}, scored {res.scored}, steps {res.steps}, "
                f"checkpoint {res.checkpoint or 'none'}" + "".join(f"; {n}" for n in res.notes))

    run_nightly_cli(run, home, days, quiet, run_day, keep)


cli.add_command(cron_command("walter"))
cli.add_command(compare_command("walter"))
cli.add_command(eval_command("walter"))
register_inspect(cli, "walter")
cli.add_command(hacks_command("walter"))


@cli.command("score")
@click.option("--url", required=True, help="the article's link (normalised as ingest does)")
@click.option("--text", "texts", multiple=True, required=True, help="a post to score (repeatable)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object per text instead of the table")
@HOME_OPTION
@config_options("walter")
def score_cmd(url: str, texts: tuple[str, ...], as_json: bool, home: str | None, **kwargs) -> None:
    """Score posts for one stored article with the nightly's reward, printing every component.

    The texts are scored against the article's stored history (its posts with
    final counts, weighted by how far each beat its author's usual) by the same
    score_texts the nightly uses. Exits 1 with one line when no stored post
    links to the article or none of them can be scored yet.

    Example: walter score --url https://harborwire.example/world/2026/11/02/dockworkers-walk-out-calderra-valdorias-biggest-port --text "Both sides are dug in."
    """
    from varro.engine.embed import CachedEmbedder, load_embedder

    from .cycle import score_texts
    from .hacks import find_article, walter_prompt

    cfg = resolve_config(kwargs)
    db = reading_db(home)
    emb = CachedEmbedder(load_embedder(cfg.walter.embedder), db)
    with MissingTargets():
        h = find_article(db, url, cfg)
        prompt = walter_prompt(db, h, emb, cfg)
        comps = score_texts(db, prompt, list(texts), emb, cfg)
    head = f"{h.url_norm} ({prompt['split']}): {h.title}\nscored against its {len(h.uris)} historical posts"
    echo_scores(list(texts), comps, head, as_json)


@cli.command()
@click.option("--days", default=None, type=int, help="only the first N sample days [default: all]")
@click.option("--run", default="walter-demo", show_default=True, help="run name under runs/")
@click.option("--cold", is_flag=True, help="use the random tiny model without the warm-up")
@HOME_OPTION
@config_options("walter")
def demo(days: int | None, run: str, cold: bool, home: str | None, **kwargs) -> None:
    """Run Walter's daily cycle over the shipped Bluesky sample on the tiny model, offline.

    Example: walter demo --days 3
    """
    from varro.engine.demo import demo_config, ensure_tiny_model, walter_demo_config
    from varro.engine.models import check_model

    from .demo import run_demo

    if kwargs.get("cfg__model__model"):  # a bad --model fails before the tiny model and its warm-up are built
        check_model(kwargs["cfg__model__model"])
    cfg = model_config(kwargs, base=walter_demo_config(demo_config(ensure_tiny_model(home, warm=not cold, echo=click.echo))))
    run_demo(home, run, cfg, days=days, echo=click.echo)


cli.add_command(metrics_command("walter"))


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
