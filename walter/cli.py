"""The `walter` command: the engine's commands for Walter, plus Walter's own (`score`)."""

from __future__ import annotations

import click

from varro.engine.app import get_app
from varro.engine.cli import HOME_OPTION, MissingTargets, app_cli, echo_scores, reading_db
from varro.engine.cli_options import config_options, resolve_config


@click.command("score")
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

    from .articles import score_texts
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


COMMANDS = [score_cmd]

cli = app_cli(get_app("walter"), "walter.cli")  # after COMMANDS: the app adds them to the engine's


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
