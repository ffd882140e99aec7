"""tally's task: groups as prompts, split by story, and the completions' scoring against their history.

Everything a day D sees was created before D. The candidates of D are the groups with an item in the
`lookback_days` before D and one that beat its author's usual; one story of groups in `eval_every` is held
out, the rest are picked by the curriculum. The reward (tally.reward) is paid at once. In detail:
docs/tally.md ("The modules, in detail").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import sqlite_utils

from varro.engine import store as dbm
from varro.engine.core.config import Config
from varro.engine.prompts.curriculum import pick_items
from varro.engine.embed.embedders import Embedder
from varro.engine.eval.metrics import mean_or_none
from varro.engine.prompts.split import near_held_out, split_candidates, split_of, stable_rank
from varro.engine.prompts.stories import Item, assign_stories

from .ingest import TallySettingsError
from .reward import fair_weights, score_item
from .settings import TallyConfig

APP = "tally"
KEY = "group"  # the item key of tally's prompts in source_json (the curriculum reads it)


@dataclass(eq=False)
class History:
    """A group's items before a day that can teach, with their fair weights."""
    group: str
    day: str
    title: str
    description: str
    ids: list[str]
    texts: list[str]
    weights: np.ndarray


def group_history(db: sqlite_utils.Database, group: str, day: str, cfg: Config) -> History:
    """`group`'s items before `day` weighted against their authors' other items before `day`."""
    s = cfg.tally
    items = list(db.query(
        "select * from tally_items where day < ? and author in "
        "(select author from tally_items where group_key = ? and day < ?) order by created_utc, id",
        [day, group, day]))
    weights = fair_weights(items, s)
    mine = [it for it in items if it["group_key"] == group]
    title = next((it["title"] for it in mine if it["title"]), "") or group
    description = next((it["description"] for it in mine if it["description"]), "")
    teach = [it for it in mine if it["id"] in weights]
    return History(group, day, title, description, [it["id"] for it in teach], [it["text"] for it in teach],
                   np.array([weights[it["id"]] for it in teach], dtype=np.float64))


def build_prompt(template: str, h: History) -> str:
    """The prompt template with the group's title, description and key filled in, blank lines trimmed.
    Raises TallySettingsError for a placeholder other than {title}, {description} and {group}."""
    try:
        text = template.format(title=h.title, description=h.description, group=h.group)
    except (KeyError, IndexError, ValueError) as e:
        raise TallySettingsError(f"the prompt {template!r} can use {{title}}, {{description}} and {{group}} "
                                 f"only: {e!r}") from None
    return "\n".join(line.rstrip() for line in text.strip().splitlines() if line.strip())


def candidate_groups(db: sqlite_utils.Database, day: str, cfg: Config) -> list[History]:
    """Groups with an item in the `lookback_days` before `day` whose history has a winner (weight > 0)."""
    s = cfg.tally
    start = (date.fromisoformat(day) - timedelta(days=s.lookback_days)).isoformat() if s.lookback_days else ""
    groups = [r["group_key"] for r in db.query(
        "select distinct group_key from tally_items where day >= ? and day < ? order by group_key", [start, day])]
    out = []
    for g in groups:
        h = group_history(db, g, day, cfg)
        if len(h.ids) and float(h.weights.max()) > 0:
            out.append(h)
    return out


def group_cards(db: sqlite_utils.Database, day: str) -> dict[str, tuple[str, str]]:
    """group -> (its first day, its card: title and description, else its key) for groups begun before `day`."""
    out = {}
    for r in db.query(
        "select group_key, min(day) as first_day, "
        "(select t.title from tally_items t where t.group_key = g.group_key and t.day < ? "
        " and coalesce(t.title, '') != '' order by t.created_utc, t.id limit 1) as title, "
        "(select t.description from tally_items t where t.group_key = g.group_key and t.day < ? "
        " and coalesce(t.description, '') != '' order by t.created_utc, t.id limit 1) as description "
        "from tally_items g where day < ? group by group_key order by group_key", [day, day, day]):
        out[r["group_key"]] = (r["first_day"], f"{r['title'] or ''} {r['description'] or ''}".strip()
                               or r["group_key"])
    return out


def group_stories(db: sqlite_utils.Database, day: str, embedder: Embedder, cfg: Config) -> dict[str, str]:
    """group -> story id for the groups begun before `day` (varro.engine.prompts.stories on their cards)."""
    cards = group_cards(db, day)
    items = [Item(g, first, card) for g, (first, card) in cards.items()]
    return assign_stories(db, APP, items, embedder, cfg.eval.story_threshold, cfg.eval.story_window_days)


def prompt_row(h: History, day: str, story_id: str, split: str, s: TallyConfig) -> dict[str, Any]:
    return {"id": f"{APP}:{day}:{stable_rank(h.group)[:16]}", "app": APP, "day": day, "split": split,
            "text": build_prompt(s.prompt, h),
            "source_json": {KEY: h.group, "title": h.title, "description": h.description, "items": len(h.ids),
                            "story_id": story_id}}


def choose_prompts(db: sqlite_utils.Database, run: str, day: str, cfg: Config, rng: np.random.Generator,
                   embedder: Embedder) -> list[dict]:
    """The day's group prompts (stored once per day; later calls return the stored set).

    The split is by story: groups linked by their cards' similarity are all
    held out or all trainable, and a trainable one whose card is within
    `leak_cosine` of a held-out group's or a panel prompt's is left out (a
    story the linking split in two); the training ones are the curriculum's picks.
    """
    s = cfg.tally
    stored = dbm.day_prompts(db, APP, day)
    if stored:
        return stored
    cands = candidate_groups(db, day, cfg)
    stories = group_stories(db, day, embedder, cfg)
    cards = {g: card for g, (_, card) in group_cards(db, day).items()}
    near = near_held_out(db, APP, embedder, [cards.get(h.group, h.group) for h in cands],
                         [(g, cards[g]) for g in stories if g in cards], stories, s.eval_every,
                         cfg.eval.leak_cosine, "description")
    evals, train_pool = split_candidates([h.group for h in cands], stories, s.eval_every, s.groups_per_day, day,
                                         near)
    picked = set(pick_items(db, APP, run, day, train_pool, s.groups_per_day - len(evals),
                            s.curriculum_floor, s.curriculum_days, rng, KEY))
    by_group = {h.group: h for h in cands}
    rows = [prompt_row(by_group[g], day, stories[g], "eval", s) for g in evals]
    rows += [prompt_row(by_group[g], day, stories[g], "train", s) for g in train_pool if g in picked]
    dbm.upsert_prompts(db, rows)
    return dbm.day_prompts(db, APP, day)


def tally_prompt(db: sqlite_utils.Database, h: History, embedder: Embedder, cfg: Config) -> dict:
    """The group's earliest stored prompt, else the one choose_prompts would build on `h.day`."""
    stored = dbm.first_prompt_with_source(db, APP, KEY, h.group)
    if stored:
        return stored
    story = group_stories(db, h.day, embedder, cfg).get(h.group, h.group)
    row = prompt_row(h, h.day, story, split_of(story, cfg.tally.eval_every), cfg.tally)
    return {**row, "source_json": json.dumps(row["source_json"])}


def score_texts(db: sqlite_utils.Database, prompt: dict, texts: list[str], embedder: Embedder,
                cfg: Config) -> list[dict]:
    """Components (with "reward") of `texts` written for `prompt`'s group, against its items before the
    prompt's day. Raises LookupError when the group has no item that can teach."""
    group = json.loads(prompt["source_json"])[KEY]
    h = group_history(db, group, prompt["day"], cfg)
    if not h.ids:
        raise LookupError(f"group {group!r} has no item before {prompt['day']} with known counts and an "
                          "author baseline")
    item_vecs = embedder.encode(h.texts)
    return [score_item(t, v, item_vecs, h, cfg.tally) for t, v in zip(texts, embedder.encode(texts))]


def item_metrics(comps: list[dict]) -> dict:
    """tally's per-day metrics: transfer, copy rate (mean copy score), echo rate, mean words."""
    return {
        "transfer": mean_or_none([c["transfer"] for c in comps]),
        "copy_rate": mean_or_none([c["copy"] for c in comps]),
        "echo_rate": mean_or_none([float(c["pen_echo"] > 0) for c in comps]),
        "words": mean_or_none([c["words"] for c in comps]),
    }


COLUMNS = ["day", "scored", "reward_mean", "reward_std", "eval_reward", "transfer", "copy_rate", "echo_rate",
           "words", "kl", "clip_fraction"]
