"""tally as an application of the engine: the `App` the engine is handed (entry point `varro.apps: tally`)."""

from __future__ import annotations

import json
from typing import Any

import sqlite_utils

from varro.engine import store as dbm
from varro.engine.core.app import App

from . import task
from .ingest import ingest_file
from .settings import TallyConfig
from .store import MIGRATIONS


class Tally(App):
    name = "tally"
    title = ("tally: learns to write for your own groups of items (a JSONL or CSV file); the items that beat "
             "their authors' usual score it.")
    settings = TallyConfig
    migrations = MIGRATIONS
    reward_delay_days = 0
    prompt_settings = ("groups_per_day", "eval_every", "lookback_days", "curriculum_floor", "curriculum_days")
    run_dependent_prompts = True
    skips_table = "tally_rejects"
    sources = ("file", "sample")
    metric_columns = tuple(task.COLUMNS)
    plotted = ("kl", "clip_fraction", "transfer", "copy_rate", "words")
    main_components = ("transfer", "copy", "pen_echo", "words")
    echo_component = "pen_echo"
    demo_run = "tally-demo"
    metrics_note = ""
    examples = "the top prior item verbatim or with words dropped, the group's title, blank, another group's text"
    sample_at = "tally.sample"
    red_team_at = "tally.redteam:TALLY"

    def ingest(self, db, day, cfg, source, home, options, echo) -> int:
        if source == "sample":
            return self.load_sample_day(db, day)
        return ingest_file(db, cfg.tally.items, day, cfg.tally, echo)

    def skipped_records(self, db, days: list[str]) -> dict[str, int]:
        marks = ",".join("?" * len(days))
        return dict(db.execute(f"select substr(first_seen_utc, 1, 10) as day, count(*) from tally_rejects "
                               f"where substr(first_seen_utc, 1, 10) in ({marks}) group by day",
                               days).fetchall()) if days else {}

    def missing_data(self, db, day, cfg) -> str | None:
        if not self.has_data(db, day, cfg):
            days = cfg.tally.lookback_days
            window = f"in the {days} days before {day} (lookback_days = {days})" if days else f"before {day}"
            return f"no group has an item {window} that beat its author's usual; no checkpoint written"
        return None

    def has_data(self, db, day, cfg) -> bool:
        return bool(dbm.prompt_count(db, self.name, day) or task.candidate_groups(db, day, cfg))

    def choose_prompts(self, db, run, day, cfg, embedder, rng) -> list[dict]:
        return task.choose_prompts(db, run, day, cfg, rng, embedder)

    def score_texts(self, db, prompt, texts, embedder, cfg) -> list[dict]:
        return task.score_texts(db, prompt, texts, embedder, cfg)

    def targets(self, prompt: dict) -> str:
        return f"the group's items before {prompt['day']}"

    def day_metrics(self, comps: list[dict]) -> dict:
        return task.item_metrics(comps)

    def human_items(self, db: sqlite_utils.Database, day: str, cfg: Any) -> list[tuple[str, str]]:
        out = []
        for p in dbm.day_prompts(db, self.name, day):
            h = task.group_history(db, json.loads(p["source_json"])[task.KEY], day, cfg)
            out += [(i, t) for i, t, w in zip(h.ids, h.texts, h.weights) if w > 0]
        return out

    def demo_settings(self, cfg: Any, tiny: bool = False) -> Any:
        # the sample has 12 groups: 4 a day, one story in 4 held out, short posts
        cfg.tally.groups_per_day = 4
        cfg.tally.eval_every = 4
        cfg.sampling.max_tokens = 64
        return cfg


APP = Tally()
