"""Varro's own commands, added to the engine's on `varro` (see varro.forecast.app)."""

from __future__ import annotations

import click

from varro.engine.cli import HOME_OPTION, MissingTargets, check_day, echo_scores, reading_db
from varro.engine.cli_options import config_options, resolve_config


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

    from varro.engine.cycle import shift
    from varro.engine.embed import CachedEmbedder, load_embedder
    from varro.forecast.hacks import find_headline, varro_prompt
    from varro.forecast.prompts import score_texts

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


COMMANDS = [score_cmd]
