"""The `walter` command: the engine's commands for Walter, plus Walter's own (`score`)."""

from __future__ import annotations

import click

from varro.engine.core.app import get_app
from varro.engine.cli.commands import app_cli
from varro.engine.cli.options import HOME_OPTION, config_options, resolve_config, with_options
from varro.engine.cli.reading import MissingTargets, draft_options, draft_setup, echo_scores, reading_db


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
    from varro.engine.embed.embedders import CachedEmbedder, load_embedder

    from .redteam import find_article
    from .task import score_texts, walter_prompt

    cfg = resolve_config(kwargs)
    db = reading_db(home)
    emb = CachedEmbedder(load_embedder(cfg.walter.embedder), db)
    with MissingTargets():
        h = find_article(db, url, cfg)
        prompt = walter_prompt(db, h, emb, cfg)
        comps = score_texts(db, prompt, list(texts), emb, cfg)
    head = f"{h.url_norm} ({prompt['split']}): {h.title}\nscored against its {len(h.uris)} historical posts"
    echo_scores(list(texts), comps, head, as_json)


@click.command("draft")
@click.option("--url", required=True, help="the article's link")
@with_options(draft_options(get_app("walter"), 8, "post", "posts", "draft"))
def draft_cmd(url: str, n: int, seed: int, run: str, as_json: bool, home: str | None, **kwargs) -> None:
    """Draft N posts for an article with the run's latest checkpoint, best first when they can be scored.

    The article's title and description come from the link card of a stored
    post linking to it, else from the page's og:title and og:description. The
    run's base model and settings come from runs/<run>/run.toml (the base
    model alone when the run has no checkpoint yet, said in one line). When the
    article has stored history the posts are ranked by the nightly's reward
    with every component; otherwise they are printed as drawn, with why.

    Example: walter draft --url https://harborwire.example/world/2026/11/02/dockworkers-walk-out-calderra-valdorias-biggest-port --n 4
    """
    from varro.engine.eval.draft import draft, echo_drafts
    from varro.engine.embed.embedders import CachedEmbedder, load_embedder
    from varro.engine.prompts.split import stable_rank

    from .card import fetch_card, stored_card
    from .ingest import article_key
    from .redteam import find_article
    from .task import build_prompt, score_texts, walter_prompt

    path, cfg, db = draft_setup("walter", run, home, kwargs)
    url_norm = article_key(url)
    title, description = stored_card(db, url_norm) or fetch_card(url)
    pid = f"walter:draft:{stable_rank(url_norm)[:16]}"
    texts, label, notes = draft(cfg, path, pid, build_prompt(title, description), n, seed)
    for note in notes:
        click.echo(note, err=as_json)
    def ranked():
        if db is None:
            raise LookupError("no database yet")
        emb = CachedEmbedder(load_embedder(cfg.walter.embedder), db)
        h = find_article(db, url, cfg)
        head = (f"{n} drafts for {h.url_norm}: {title}\nfrom run {run} at {label}, best first by the reward "
                f"against its {len(h.uris)} historical posts")
        return score_texts(db, walter_prompt(db, h, emb, cfg), texts, emb, cfg), head

    echo_drafts(texts, ranked, "so there is nothing to score these against", as_json)


COMMANDS = [score_cmd, draft_cmd]

cli = app_cli(get_app("walter"), "walter.cli")  # after COMMANDS: the app adds them to the engine's


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
