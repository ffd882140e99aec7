"""Walter as an application of the engine: the `App` the engine is handed (entry point `varro.apps: walter`)."""

from __future__ import annotations

import json
from typing import Any

import sqlite_utils

from varro.engine.core.app import App

from .settings import WalterConfig
from .store import MIGRATIONS


def bluesky_ingest(db: sqlite_utils.Database, day: str, cfg: Any, home: Any, echo) -> int:
    """The day's ingest against the real Bluesky API (credentials from the environment): search the
    domains, refresh counts of posts at the fixed age, fetch the authors' baselines; prints a line per
    domain and a total (`walter.ingest.format_summary`) and returns the new posts.

    A failing domain, count refresh or baseline fetch costs that part only, printed beside it; an author
    whose feed cannot be read costs that author's baseline only (recorded in walter_skips, printed under
    the total); after an error of the account or host nothing more is asked. Raises the error (a UserError, one line) when
    nothing at all could be read: every domain's search failed, or nothing was searched and the
    refresh and the baselines failed too.
    """
    from .bsky import Bluesky, BlueskyError
    from .ingest import (HOST_ERRORS, day_skips, format_summary, ingest_search, one_line, refresh_counts,
                         update_baselines)

    domains = [d.strip() for d in cfg.walter.domains.split(",") if d.strip()]
    refreshed = authors = None
    failures: list[BlueskyError] = []
    notes: list[str] = []
    with Bluesky(home=home) as client:
        search = ingest_search(db, client, domains, day, tz=cfg.walter.timezone or None, keep_going=True)
        if search.stopped_at:
            notes.append(f"counts and baselines not asked for after {search.stopped_at}'s error")
        else:
            try:
                refreshed = refresh_counts(db, client, min_age_hours=cfg.walter.count_age_hours, day=day)
            except BlueskyError as e:
                failures.append(e)
                notes.append(f"refreshing counts failed: {one_line(e)}")
            if not (failures and isinstance(failures[0], HOST_ERRORS)):
                dids = [r["author_did"] for r in db.query(
                    "select distinct author_did from bsky_posts where counts_final = 1 or day = ?", [day])]
                try:
                    authors = update_baselines(db, client, dids, ttl_hours=cfg.walter.baseline_ttl_hours,
                                               day=day)
                except BlueskyError as e:
                    failures.append(e)
                    notes.append(f"fetching baselines failed: {one_line(e)}")
    if failures and not search.pages and refreshed is None and authors is None:
        raise failures[0]  # nothing at all was read
    echo(format_summary(search, "bluesky", refreshed, authors, notes, day_skips(db, day, "author")))
    return search.posts_new


class Walter(App):
    name = "walter"
    title = "Walter: writes a Bluesky post about an article; the posts that beat their authors' usual score it."
    settings = WalterConfig
    migrations = MIGRATIONS
    reward_delay_days = 0
    prompt_settings = ("articles_per_day", "eval_every", "curriculum_floor", "curriculum_days")
    run_dependent_prompts = True
    skips_table = "walter_skips"
    sources = ("bluesky", "sample")
    metric_columns = ("day", "scored", "reward_mean", "reward_std", "eval_reward", "transfer", "hashtag_rate",
                      "copy_rate", "graphemes", "kl", "clip_fraction")
    plotted = ("kl", "clip_fraction", "transfer", "hashtag_rate", "copy_rate", "graphemes")
    main_components = ("transfer", "copy", "hashtags", "graphemes")
    echo_component = "pen_echo"
    demo_run = "walter-demo"
    metrics_note = ""
    hack_margin = 0.05  # a post's reward spans less than a forecast's
    examples = ("the top historical post verbatim or lightly edited, the title, hashtag spam, emoji runs, "
                "a bare link, generic praise, reply bait")
    sample_at = "walter.sample"
    red_team_at = "walter.redteam:WALTER"
    commands_at = "walter.cli:COMMANDS"

    def ingest(self, db, day, cfg, source, home, options, echo) -> int:
        if source == "sample":
            from .sample import ingest_sample_day

            return ingest_sample_day(db, day, echo=echo)
        return bluesky_ingest(db, day, cfg, home, echo)

    def preflight(self, cfg, source: str, home) -> None:
        if source == "bluesky":
            from .bsky import check_credentials

            check_credentials(home)

    def skipped_records(self, db, days: list[str]) -> dict[str, int]:
        marks = ",".join("?" * len(days))
        return dict(db.execute(f"select day, count(*) from walter_skips where day in ({marks}) group by day",
                               days).fetchall()) if days else {}

    def missing_data(self, db, day, cfg) -> str | None:
        from varro.engine.store import prompt_count

        from . import task

        stored = (db.execute("select count(*) from bsky_posts where day = ?", [day]).fetchone()[0]
                  + prompt_count(db, self.name, day))
        if stored or task.candidate_articles(db, day, cfg):
            return None
        return "nothing ingested and no article with a scorable history; no checkpoint written"

    def choose_prompts(self, db, run, day, cfg, embedder, rng) -> list[dict]:
        from . import task

        return task.choose_prompts(db, run, day, cfg, rng, embedder)

    def score_texts(self, db, prompt, texts, embedder, cfg) -> list[dict]:
        from . import task

        return task.score_texts(db, prompt, texts, embedder, cfg)

    def targets(self, prompt: dict) -> str:
        return "the article's stored posts with final counts"

    def day_metrics(self, comps: list[dict]) -> dict:
        from . import task

        return task.post_metrics(comps)

    def human_items(self, db, day, cfg) -> list[tuple[str, str]]:
        from varro.engine.store import day_prompts

        from . import task

        out = []
        for p in day_prompts(db, self.name, day):
            h = task.article_history(db, json.loads(p["source_json"])["url_norm"], cfg)
            out += [(u, t) for u, t, w in zip(h.uris, h.texts, h.weights) if w > 0]
        return out

    def load_sample_day(self, db, day) -> int:
        from .sample import ingest_sample_day

        return ingest_sample_day(db, day)

    def demo_settings(self, cfg: Any, tiny: bool = False) -> Any:
        # fewer articles, shorter posts, one story in 4 held out (the sample has 21 stories: at 1 in 8 the
        # held-out panel would have two or three prompts)
        cfg.walter.articles_per_day = 8 if tiny else 3
        cfg.walter.eval_every = 4
        cfg.sampling.max_tokens = 64
        return cfg


APP = Walter()
