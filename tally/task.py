"""tally's prompts and their scoring: what the engine's daily cycle asks tally for.

Everything a day D sees was created before D. A group's history on D is its
items of earlier days, each weighted by how far it beat its author's usual
(varro.engine.rewards.baselines: the author's other items before D are the baseline,
a fair weight in [0, 1]; an item with an unknown count, or an author with no
other item, cannot teach). The candidates of D are the groups with an item in
the `lookback_days` before D and at least one item of weight above 0; one
story of groups in `eval_every` is held out (varro.engine.prompts.stories), the rest
are picked by the curriculum (varro.engine.prompts.curriculum). A completion is scored
at once (the reward delay is 0):
    reward = max_i cos(text, item_i) * w_i - copy_weight * copy - echo
the best-matching prior winner's similarity times its weight
(varro.engine.rewards.text.best_transfer), minus the graded copy score against the
group's items (varro.engine.rewards.copying) and a penalty for repeating the prompt's
instruction.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import sqlite_utils

from varro.engine.rewards import baselines
from varro.engine import store as dbm
from varro.engine.core.config import Config
from varro.engine.rewards.copying import copy_components, no_copy
from varro.engine.prompts.curriculum import pick_items
from varro.engine.embed.embedders import Embedder
from varro.engine.eval.metrics import mean_or_none
from varro.engine.rewards.text import best_transfer, longest_shared_ngram, words
from varro.engine.prompts.stories import Item, assign_stories, in_guard_band, split_candidates, stable_rank

from .items import TallySettingsError, parse_counts
from .settings import TallyConfig

APP = "tally"
KEY = "group"  # the item key of tally's prompts in source_json (the curriculum reads it)
PLACEHOLDER_RE = re.compile(r"\{[^{}]*\}")


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


def item_engagement(counts_json: str, s: TallyConfig) -> float | None:
    """The weighted engagement of a stored item; None when a count is unknown."""
    counts = json.loads(counts_json)
    spec = parse_counts(s.counts)
    return baselines.weighted_engagement([counts.get(name) for name, _ in spec], [w for _, w in spec])


def fair_weights(items: list[dict], s: TallyConfig) -> dict[str, float]:
    """Item id -> its fair weight against its author's other `items`, for the items that have one."""
    by_author: dict[str, list[tuple[str, float, float | None]]] = {}
    for it in items:
        e = item_engagement(it["counts_json"], s)
        if e is not None:
            by_author.setdefault(it["author"], []).append((it["id"], e, it["counts_age_hours"]))
    out = {}
    for mine in by_author.values():
        for i, (item_id, e, age) in enumerate(mine):
            others = mine[:i] + mine[i + 1:]
            b = baselines.age_matched_baseline([x for _, x, _ in others], [a for _, _, a in others],
                                               math.inf if age is None else age, s.engagement_half_life_hours)
            if b is not None:
                out[item_id] = baselines.fair_weight(e, b, s.weight_saturation, s.weight_pseudo_count)
    return out


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


def instruction(template: str) -> str:
    """The prompt's own words: the template without its placeholders."""
    return PLACEHOLDER_RE.sub(" ", template)


def echoes(text: str, template: str) -> bool:
    """Whether `text` repeats four words in a row of the prompt's instruction (all of a shorter one of
    at least three words)."""
    own = len(words(instruction(template)))
    return own >= 3 and longest_shared_ngram(text, instruction(template)) >= min(4, own)


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


def near_held_out(db: sqlite_utils.Database, day: str, cands: list[History], stories: dict[str, str],
                  embedder: Embedder, cfg: Config) -> list[bool]:
    """Per candidate: is its card at least `leak_cosine` from a held-out group's or a tally panel prompt's
    (varro.engine.prompts.stories.in_guard_band)? Such a group is never trained on (a story the linking split in two)."""
    cards = {g: card for g, (_, card) in group_cards(db, day).items()}
    items = [(sid, cards[g]) for g, sid in stories.items() if g in cards]
    return in_guard_band(db, APP, embedder, [cards.get(h.group, h.group) for h in cands], items,
                         cfg.tally.eval_every, cfg.eval.leak_cosine, "description")


def prompt_row(h: History, day: str, story_id: str, split: str, s: TallyConfig) -> dict[str, Any]:
    return {"id": f"{APP}:{day}:{stable_rank(h.group)[:16]}", "app": APP, "day": day, "split": split,
            "text": build_prompt(s.prompt, h),
            "source_json": {KEY: h.group, "title": h.title, "description": h.description, "items": len(h.ids),
                            "story_id": story_id}}


def choose_prompts(db: sqlite_utils.Database, run: str, day: str, cfg: Config, rng: np.random.Generator,
                   embedder: Embedder) -> list[dict]:
    """The day's group prompts (stored once per day; later calls return the stored set).

    The split is by story: groups linked by their cards' similarity are all
    held out or all trainable; the training ones are the curriculum's picks.
    """
    s = cfg.tally
    stored = dbm.day_prompts(db, APP, day)
    if stored:
        return stored
    cands = candidate_groups(db, day, cfg)
    stories = group_stories(db, day, embedder, cfg)
    near = near_held_out(db, day, cands, stories, embedder, cfg)
    evals, train_pool = split_candidates([h.group for h in cands], stories, s.eval_every, s.groups_per_day, day,
                                         near)
    picked = set(pick_items(db, APP, run, day, train_pool, s.groups_per_day - len(evals),
                            s.curriculum_floor, s.curriculum_days, rng, KEY))
    by_group = {h.group: h for h in cands}
    rows = [prompt_row(by_group[g], day, stories[g], "eval", s) for g in evals]
    rows += [prompt_row(by_group[g], day, stories[g], "train", s) for g in train_pool if g in picked]
    dbm.upsert_prompts(db, rows)
    return dbm.day_prompts(db, APP, day)


def score_item(text: str, text_vec: np.ndarray, item_vecs: np.ndarray, h: History, s: TallyConfig) -> dict:
    """All components and the reward of one completion against its group's history (module docstring)."""
    if not text.strip():
        transfer, best, cos, copy = 0.0, -1, 0.0, no_copy()
    else:
        transfer, best, cos = best_transfer(text_vec, item_vecs, h.weights)
        copy = copy_components(text, np.asarray(item_vecs) @ np.asarray(text_vec), h.texts, s)
    echo = s.echo_penalty if echoes(text, s.prompt) else 0.0
    return {
        "reward": transfer - s.copy_weight * copy["copy"] - echo,
        "transfer": transfer,
        "teacher": float(best),
        "teacher_cosine": cos,
        "teacher_weight": float(h.weights[best]) if best >= 0 else 0.0,
        **copy,
        "pen_echo": echo,
        "words": float(len(words(text))),
    }


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
