"""Stories: items (headlines, articles) linked by embedding similarity, and the held-out split by story.

A story is a chain of items: each new item joins the story of the most similar
earlier item within `window_days` (same day included) when their cosine is at
least `threshold`, else it opens a story of its own, named by its own id.
Items are linked in (day, id) order and a link, once stored, never changes, so
a story's split is fixed the day it opens. The split is by story, never by
item: the same story told by two outlets, or developing over a week, sits on
one side only.

On the shipped sample (headline title + summary, all-MiniLM-L6-v2) 0.55 with a
7-day window gives coherent stories (the Calderra port strike over the week,
the Sarnova drought and its wheat export cap) without chaining unrelated ones;
at 0.5 a country's unrelated news starts to merge, at 0.6 developments of one
story split apart.

Linking is not perfect: a development worded differently (cosine 0.5-0.55 to
its story) opens a story of its own, which may land on the other side of the
split. So the split has a guard band, `too_close`: a training prompt whose
cosine to a held-out item is at least `leak_cosine` (0.5) is left out of
training (`in_guard_band`), and a held-out prompt that close to a training
prompt stays out of the evaluation panel (varro.panel).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date

import numpy as np
import sqlite_utils

from varro.engine import store
from varro.engine.embed.embedders import Embedder


@dataclass(frozen=True)
class Item:
    id: str
    day: str
    text: str


def is_held_out(story_id: str, every: int) -> bool:
    """A fixed 1 in `every` of all stories, by hash: their items are never trained on or rewarded against."""
    if every < 1:
        raise ValueError(f"eval_every must be at least 1, got {every}")
    return int(hashlib.sha1(("eval:" + story_id).encode()).hexdigest()[:8], 16) % every == 0


def split_of(story_id: str, every: int) -> str:
    """A story's side of the split: "eval" when it `is_held_out`, else "train"."""
    return "eval" if is_held_out(story_id, every) else "train"


def stable_rank(key: str) -> str:
    """`key`'s sha1 in hex: a sort key giving the same pseudo-random order on every run and machine, and
    (its first 16 characters) a short id that stays the same."""
    return hashlib.sha1(key.encode()).hexdigest()


def too_close(candidates: np.ndarray, held: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean per candidate row: its cosine to some `held` row is at least `threshold` (unit rows)."""
    if not len(candidates) or not len(held):
        return np.zeros(len(candidates), dtype=bool)
    return (candidates @ held.T).max(axis=1) >= threshold


def near_any(embedder: Embedder, texts: list[str], held: list[str], threshold: float) -> list[bool]:
    """Per text: is its cosine to some `held` text at least `threshold`? (Encodes nothing when either is empty.)
    What every app's guard band asks of its training candidates against the held-out items."""
    if not texts or not held:
        return [False] * len(texts)
    return too_close(embedder.encode(texts), embedder.encode(held), threshold).tolist()


def in_guard_band(db: sqlite_utils.Database, app: str, embedder: Embedder, texts: list[str],
                  items: list[tuple[str, str]], every: int, threshold: float, detail: str) -> list[bool]:
    """Per text of `texts` (an app's training candidates): is its cosine at least `threshold` to a held-out
    item, or to any run's panel prompt of `app`? `items` are (story id, text) pairs, held out when their
    story `is_held_out` of `every`; a panel prompt's text is its source's title and `detail` field
    ("summary", "description"). Such a candidate is never trained on: a story the linking split in two."""
    held = [text for story, text in items if is_held_out(story, every)]
    held += [f"{s['title']} {s.get(detail) or ''}".strip() for s in store.panel_sources(db, app)]
    return near_any(embedder, texts, held, threshold)


def split_candidates(keys: list[str], stories: dict[str, str], every: int, per_day: int, day: str,
                     near: list[bool]) -> tuple[list[str], list[str]]:
    """(held out, trainable) of a day's candidates, by key. Held out: of the `keys` whose story (`stories`,
    key -> story id) `is_held_out`, the first max(1, per_day // every) by `stable_rank(day + key)`.
    Trainable: the others that are not `near` (per key, `in_guard_band`) a held-out item, in `keys`' order."""
    held = [k for k in keys if is_held_out(stories[k], every)]
    evals = sorted(held, key=lambda k: stable_rank(day + k))[: max(1, per_day // every)]
    held_keys = set(held)
    return evals, [k for k, n in zip(keys, near) if k not in held_keys and not n]


def assign_stories(db: sqlite_utils.Database, app: str, items: list[Item], embedder: Embedder,
                   threshold: float, window_days: int) -> dict[str, str]:
    """Link the new ones of `items` into stories (stored in `stories`); returns item id -> story id for all.

    `items` should hold every item of the window before the new ones too, so they can be linked to.
    """
    if not items:
        return {}
    stored = store.stored_stories(db, app, [it.id for it in items])
    ordered = sorted({it.id: it for it in items}.values(), key=lambda it: (it.day, it.id))
    new = [i for i, it in enumerate(ordered) if it.id not in stored]
    if not new:
        return stored
    vecs = embedder.encode([it.text for it in ordered])  # (n, d) unit rows
    days = np.array([date.fromisoformat(it.day).toordinal() for it in ordered])
    rows = []
    for i in new:
        it = ordered[i]
        earlier = np.flatnonzero((np.arange(len(ordered)) < i) & (days >= days[i] - window_days)
                                 & (days <= days[i]))
        earlier = np.array([j for j in earlier if ordered[j].id in stored], dtype=int)
        best, cos = None, None
        if earlier.size:
            sims = vecs[earlier] @ vecs[i]
            k = int(np.argmax(sims))
            best, cos = ordered[earlier[k]].id, float(sims[k])
        story = stored[best] if best is not None and cos >= threshold else it.id
        stored[it.id] = story
        rows.append({"app": app, "item_id": it.id, "story_id": story, "day": it.day,
                     "linked_to": best if story != it.id else None, "cosine": cos, "created_utc": store.utc_now()})
    store.insert_story_links(db, rows)
    return stored
