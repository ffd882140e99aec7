"""The toy task as an application of the engine (`ToyApp`), for the engine's own tests of the daily cycle.

It imports no real application: a day's items are TOY_PROMPTS (stored in its own table through its own
migration), each prompt one story, one story in `eval_every` held out by the engine's split
(varro.engine.prompts.split), and the reward, paid at once, is `toy_reward`. `use_toy_app(monkeypatch)`
makes it the only registered application for one test, so Config() has its [toy] section and open_db
applies its migration.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from varro.engine import store
from varro.engine.core.app import App
from varro.engine.core.config import AT_LEAST_ONE, opt
from varro.engine.eval.metrics import mean_or_none
from varro.engine.prompts.split import split_candidates, stable_rank
from varro.engine.store import MigrationSet

from support.toy import TOY_PROMPTS, TOY_TARGET, WORD_RE, toy_reward

NAME = "toy"
TOY_DAYS = ["2026-03-02", "2026-03-03", "2026-03-04"]


@dataclass
class ToyConfig:
    embedder: str = opt("hash", "embedder of the day ('hash': the deterministic test fake)")
    prompts_per_day: int = opt(4, "prompts each day (the held-out ones included)", AT_LEAST_ONE)
    eval_every: int = opt(3, "one story (prompt) in this many is held out, never trained on", AT_LEAST_ONE)
    target: str = opt(",".join(sorted(TOY_TARGET)), "the words that score, comma-separated (toy_reward's target)")


def target_words(cfg: Any) -> frozenset[str]:
    """The [toy] section's target words."""
    return frozenset(w.strip() for w in getattr(cfg, NAME).target.split(",") if w.strip())


MIGRATIONS = MigrationSet()


@MIGRATIONS.add
def toy_m001_items(db: sqlite_utils.Database) -> None:
    db["toy_items"].create({"id": str, "day": str, "story": str, "text": str}, pk="id")
    db["toy_items"].create_index(["day"])


def toy_items(db: sqlite_utils.Database, day: str) -> list[dict]:
    """The stored items of `day`, in id order."""
    return list(db.query("select * from toy_items where day = ? order by id", [day]))


class ToyApp(App):
    name = NAME
    title = "toy: writes sentences full of the target words (tests only)"
    settings = ToyConfig
    migrations = MIGRATIONS
    reward_delay_days = 0
    prompt_settings = ("prompts_per_day", "eval_every")
    metric_columns = ("day", "scored", "reward_mean", "eval_reward", "target_words", "words")
    main_components = ("target_words", "words")

    def sample_days(self) -> list[str]:
        return list(TOY_DAYS)

    def load_sample_day(self, db: sqlite_utils.Database, day: str) -> int:
        """Store TOY_PROMPTS as `day`'s items (story "toy-<k>" for the k-th); returns how many are new."""
        rows = [{"id": f"{day}:{k}", "day": day, "story": f"toy-{k}", "text": text}
                for k, text in enumerate(TOY_PROMPTS)]
        before = db["toy_items"].count
        db["toy_items"].insert_all(rows, pk="id", ignore=True)
        return db["toy_items"].count - before

    def ingest(self, db, day, cfg, source, home, options, echo) -> int:
        return self.load_sample_day(db, day)

    def missing_data(self, db, day, cfg) -> str | None:
        return None if toy_items(db, day) else f"no toy item is stored for {day}"

    def choose_prompts(self, db, run, day, cfg, embedder, rng) -> list[dict]:
        """The day's prompts (stored once): the held-out stories' first by the engine's split, then the
        first trainable ones by stable rank up to `prompts_per_day`."""
        stored = store.day_prompts(db, NAME, day)
        if stored:
            return stored
        s = getattr(cfg, NAME)
        items = {it["story"]: it for it in toy_items(db, day)}
        stories = {k: k for k in items}  # each prompt is its own story
        # no guard band (split.near_held_out): a story here is one fixed prompt, never linked in two
        evals, pool = split_candidates(list(items), stories, s.eval_every, s.prompts_per_day, day,
                                       [False] * len(items))
        train = sorted(pool, key=lambda k: stable_rank(day + k))[: max(0, s.prompts_per_day - len(evals))]
        rows = [{"id": f"{NAME}:{day}:{k}", "app": NAME, "day": day, "split": split, "text": items[k]["text"],
                 "source_json": {"item": items[k]["id"], "story_id": k}}
                for split, keys in (("eval", evals), ("train", train)) for k in keys]
        store.upsert_prompts(db, rows)
        return store.day_prompts(db, NAME, day)

    def scorable(self, db, prompt: dict) -> bool:
        """Its item is stored (the toy reward itself needs nothing else)."""
        item = json.loads(prompt["source_json"])["item"]
        return db.execute("select count(*) from toy_items where id = ?", [item]).fetchone()[0] > 0

    def score_texts(self, db, prompt, texts, embedder, cfg) -> list[dict]:
        """Per text: reward = target_words = toy_reward(text, the section's target), and its word count.
        Raises LookupError when the prompt's item is not stored."""
        if not self.scorable(db, prompt):
            raise LookupError(f"the item of prompt {prompt['id']!r} is not stored")
        target = target_words(cfg)
        return [{"reward": toy_reward(t, target), "target_words": toy_reward(t, target),
                 "words": float(len(WORD_RE.findall(t.lower())))} for t in texts]

    def targets(self, prompt: dict) -> str:
        return "the toy's target words"

    def day_metrics(self, comps: list[dict]) -> dict:
        return {"target_words": mean_or_none([c["target_words"] for c in comps]),
                "words": mean_or_none([c["words"] for c in comps])}

    def human_items(self, db, day, cfg) -> list[tuple[str, str]]:
        return [(it["id"], it["text"]) for it in toy_items(db, day)]


TOY_APP = ToyApp()


def use_toy_app(monkeypatch) -> ToyApp:
    """Make the toy the only registered application until the test ends (no entry point is loaded, so no
    real application is imported): Config() gets its [toy] section, open_db its migration."""
    import varro.engine.core.app as registry

    monkeypatch.setattr(registry, "_REGISTERED", {NAME: TOY_APP})
    monkeypatch.setattr(registry, "_LOADED", True)
    return TOY_APP
