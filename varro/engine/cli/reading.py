"""The reading commands of every application: metrics, compare, eval and hacks.

They read what the nightly stored (or, for `hacks --sample`, the shipped
sample in a temporary database); `rollouts` and `report` are in
varro.engine.cli.inspect. `reading_db` and `require_app_run` open what every
reading command reads; `MissingTargets` and `echo_scores` serve the apps' own
`score` commands.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import click

from varro.engine.core.app import App
from varro.engine.cli.options import HOME_OPTION, config_options, named_settings, resolve_config, run_option


def reading_db(home: str | None):
    """The existing database of a reading command; raises NoDatabaseError rather than creating one."""
    from varro.engine import store
    from varro.engine.core.paths import require_db

    return store.open_db(require_db(home))


def require_app_run(db, app: App, run: str, home: str | None) -> Path:
    """runs/<run> of an existing `app` run (varro.engine.run.identity.require_run). A run of another app is refused
    naming that app and the command to use instead (RunIdentityError), not reported as missing."""
    from varro.engine.run.identity import RunIdentityError, UnknownRunError, require_run, run_owner
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

    from varro.engine.eval.draft import format_scores

    if as_json:
        for t, c in zip(texts, comps):
            click.echo(json.dumps({"text": t, **c}))
    else:
        click.echo(format_scores(texts, comps, head))


def draft_options(app: App, n: int, thing: str, things: str, verb: str) -> list[Callable]:
    """The options of an app's drafting command after its own: how many `things` to `verb`, the seed, the
    run, --json, --home and the settings."""
    return [
        click.option("--n", "n", default=n, show_default=True, help=f"how many {things} to {verb}"),
        click.option("--draft-seed", "seed", default=0, show_default=True, help="the sampling seed of the drafts"),
        run_option(app),
        click.option("--json", "as_json", is_flag=True, help=f"print one JSON object per {thing} instead of the table"),
        HOME_OPTION,
        config_options(app.name),
    ]


def draft_setup(app: str, run: str, home: str | None, kwargs: dict):
    """What an app's drafting command (`walter draft`, `varro forecast`) starts from: the run's folder, its
    config with the command line's settings, and the database (None when there is none yet)."""
    from varro.engine.core.paths import run_dir
    from varro.engine.eval.draft import draft_config, existing_db

    path = run_dir(run, home)
    return path, draft_config(app, path, resolve_config(kwargs), named_settings(kwargs)), existing_db(home)


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


def panel_context(app: App, run: str, home: str | None, embedder: str | None):
    """What `compare` and `eval` share: (db, run path, the run's config, its embedder (`embedder` overrides
    it)); raises NoDatabaseError or UnknownRunError first."""
    from varro.engine.core.config import Config
    from varro.engine.embed.embedders import CachedEmbedder, load_embedder
    from varro.engine.run.checkpoints import run_config

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
