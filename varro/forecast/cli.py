"""Varro's own commands, added to the engine's on `varro` (see varro.forecast.app)."""

from __future__ import annotations

import click

from varro.engine.core.app import get_app
from varro.engine.cli.options import HOME_OPTION, check_day, config_options, resolve_config, with_options
from varro.engine.cli.reading import MissingTargets, draft_options, draft_setup, echo_scores, reading_db


@click.command("score")
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

    from varro.engine.core.dates import shift
    from varro.engine.embed.embedders import CachedEmbedder, load_embedder
    from varro.forecast.redteam import find_headline
    from varro.forecast.task import score_texts, varro_prompt

    day = check_day(day)
    cfg = resolve_config(kwargs)
    db = reading_db(home)
    emb = CachedEmbedder(load_embedder(cfg.varro.embedder), db)
    with MissingTargets():
        prompt = varro_prompt(db, find_headline(db, day, key), emb, cfg)
        comps = score_texts(db, prompt, list(texts), emb, cfg)
    head = (f"{prompt['id']} ({prompt['split']}): {json.loads(prompt['source_json'])['title']}\n"
            f"scored against the headlines of {shift(day, 1)}")
    echo_scores(list(texts), comps, head, as_json)


def stored_headline(db, key: str, day: str | None) -> dict:
    """The stored headline whose id, guid or exact title is `key` (of `day`, else of the latest day that has
    it). Raises LookupError (HackError) when there is none."""
    from varro.engine.rewards.redteam import HackError
    from varro.forecast.redteam import find_headline

    if db is None or "headlines" not in db.table_names():
        raise HackError("the headline is not stored (no database yet)")
    if day is None:
        row = db.execute("select max(day) from headlines where id = ? or guid = ? or title = ?",
                         [key, key, key]).fetchone()
        if row[0] is None:
            raise HackError("the headline is not stored")
        day = row[0]
    return find_headline(db, day, key)


@click.command("forecast")
@click.option("--headline", "key", required=True, help="the headline (or a stored headline's guid or id)")
@click.option("--summary", default=None, help="the headline's summary [default: the stored one, if any]")
@click.option("--date", "day", default=None, help="the headline's day, YYYY-MM-DD [default: the latest storing it]")
@with_options(draft_options(get_app("varro"), 4, "forecast", "forecasts", "draw"))
def forecast_cmd(key: str, summary: str | None, day: str | None, n: int, seed: int, run: str, as_json: bool,
                 home: str | None, **kwargs) -> None:
    """Forecast a headline N times with the run's latest checkpoint, best first when they can be scored.

    The prompt is the nightly's, built from the headline and --summary. The
    run's base model and settings come from runs/<run>/run.toml (the base model
    alone when the run has no checkpoint yet, said in one line). When the
    headline is stored and the next day's headlines are too, the forecasts are
    ranked by the nightly's reward with every component; otherwise they are
    printed as drawn, with one line saying why.

    Example: varro forecast --headline "Dockworkers walk out at Calderra as Valdoria's biggest port grinds to a halt" --n 4
    """
    import json

    from varro.engine.core.dates import shift
    from varro.engine.eval.draft import draft, echo_drafts
    from varro.engine.embed.embedders import CachedEmbedder, load_embedder
    from varro.engine.prompts.split import stable_rank
    from varro.forecast.task import build_prompt, score_texts, varro_prompt

    day = check_day(day) if day else None
    path, cfg, db = draft_setup("varro", run, home, kwargs)
    headline, why = None, ""
    try:
        headline = stored_headline(db, key, day)
    except LookupError as e:
        why = str(e)
    title = headline["title"] if headline else key
    if summary is None and headline:
        summary = headline["summary"]
    pid = (f"varro:{headline['day']}:{headline['id']}" if headline
           else f"varro:forecast:{stable_rank(key)[:16]}")
    texts, label, notes = draft(cfg, path, pid, build_prompt(title, summary), n, seed)
    for note in notes:
        click.echo(note, err=as_json)

    def ranked():
        if headline is None:
            raise LookupError(why)
        emb = CachedEmbedder(load_embedder(cfg.varro.embedder), db)
        prompt = varro_prompt(db, headline, emb, cfg)
        head = (f"{n} forecasts for {prompt['id']} ({prompt['split']}): {json.loads(prompt['source_json'])['title']}"
                f"\nfrom run {run} at {label}, best first by the reward against the headlines of "
                f"{shift(headline['day'], 1)}")
        return score_texts(db, prompt, texts, emb, cfg), head

    echo_drafts(texts, ranked, "so there is nothing to score these forecasts against yet", as_json)


COMMANDS = [score_cmd, forecast_cmd]
