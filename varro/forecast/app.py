"""Varro as an application of the engine: the `App` the engine is handed (entry point `varro.apps: varro`)."""

from __future__ import annotations

from typing import Any, Callable

import click
import sqlite_utils

from varro.engine.core.app import App
from varro.engine.core.dates import shift
from varro.forecast import task
from varro.forecast.headlines import headlines_for_day
from varro.forecast.ingest import Feed, IngestError, all_failed, format_summary, ingest, load_feeds
from varro.forecast.settings import VarroConfig
from varro.forecast.store import MIGRATIONS


class Varro(App):
    name = "varro"
    title = "Varro: reads today's headlines and forecasts what happens next; tomorrow's headlines score it."
    settings = VarroConfig
    migrations = MIGRATIONS
    reward_delay_days = 1
    prompt_settings = ("prompts_per_day", "eval_every", "dedup_threshold")
    sources = ("rss", "sample")
    metric_columns = tuple(task.VARRO_COLUMNS)
    plotted = ("kl", "clip_fraction", "semantic", "quality", "zeros", "leak", "echo", "words")
    main_components = ("semantic", "format", "leak", "echo")
    echo_component = "leak_instruction"
    demo_run = "demo"
    metrics_note = "forecasts by the day they were made (scored with the next day's headlines):"
    examples = ("another story's forecast, one generic paragraph, the headline restated or paraphrased, "
                "keyword stuffing, instruction echo, bullets, blank")
    sample_at = "varro.forecast.sample"
    red_team_at = "varro.forecast.redteam:VARRO"
    commands_at = "varro.forecast.cli:COMMANDS"

    def ingest_options(self) -> list[Callable]:
        return [click.option("--feed", "feed_urls", multiple=True,
                             help="feed URL (repeatable; replaces data/feeds.toml)")]

    def ingest(self, db, day, cfg, source, home, options, echo) -> int:
        if source == "sample":
            return self.load_sample_day(db, day)
        urls = options.get("feed_urls") or ()
        feeds = [Feed(None, u) for u in urls] if urls else load_feeds(home=home)
        results = ingest(db, feeds, day, tz=cfg.varro.timezone or None)
        echo(format_summary(results))
        if all_failed(results):
            raise IngestError(f"no feed could be read for {day}; nothing was changed, re-run later")
        return sum(r.new_items for r in results)

    def missing_data(self, db, day, cfg) -> str | None:
        if headlines_for_day(db, day):
            return None
        return f"no headlines; no checkpoint written, {shift(day, -1)}'s forecasts stay unscored"

    def choose_prompts(self, db, run, day, cfg, embedder, rng) -> list[dict]:
        return task.choose_prompts(db, day, embedder, cfg)

    def score_texts(self, db, prompt, texts, embedder, cfg) -> list[dict]:
        return task.score_texts(db, prompt, texts, embedder, cfg)

    def scorable(self, db: sqlite_utils.Database, prompt: dict) -> bool:
        return bool(headlines_for_day(db, shift(prompt["day"], 1)))

    def targets(self, prompt: dict) -> str:
        return f"headlines of {shift(prompt['day'], 1)}"

    def day_metrics(self, comps: list[dict]) -> dict:
        return task.forecast_metrics(comps)

    def human_items(self, db, day, cfg) -> list[tuple[str, str]]:
        return task.varro_human_items(db, day)

    def demo_settings(self, cfg: Any, tiny: bool = False) -> Any:
        # the real model: 4 headlines a day (one story in 3 held out) keeps the demo's seven days in minutes
        cfg.varro.prompts_per_day = 16 if tiny else 4
        cfg.varro.eval_every = 4 if tiny else 3
        return cfg


APP = Varro()
