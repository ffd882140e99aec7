"""The held-out split by story: which stories are held out, the guard band around them, a day's candidates.

One story in `eval_every` is held out, by hash, for good (`is_held_out`).
Linking stories is not perfect, so a training candidate at least `leak_cosine`
from a held-out item or a panel prompt is left out too (`near_held_out`); a
held-out prompt that close to a training prompt stays out of the evaluation
panel (varro.engine.eval.panel). See docs/varro.md ("The modules, in detail").
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Mapping

import numpy as np
import sqlite_utils

from varro.engine import store
from varro.engine.embed.embedders import Embedder


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


def near_held_out(db: sqlite_utils.Database, app: str, embedder: Embedder, texts: list[str],
                  cards: Iterable[tuple[str, str]], stories: Mapping[str, str], every: int, threshold: float,
                  detail: str) -> list[bool]:
    """Per text of `texts` (a day's candidates): `in_guard_band` of the story window's items, given as
    `cards`, (item key, text) pairs in the order they are compared, each held out with its story
    (`stories`: key -> story id; a key without a story is left out)."""
    items = [(stories[key], text) for key, text in cards if key in stories]
    return in_guard_band(db, app, embedder, texts, items, every, threshold, detail)


def split_candidates(keys: list[str], stories: dict[str, str], every: int, per_day: int, day: str,
                     near: list[bool]) -> tuple[list[str], list[str]]:
    """(held out, trainable) of a day's candidates, by key. Held out: of the `keys` whose story (`stories`,
    key -> story id) `is_held_out`, the first max(1, per_day // every) by `stable_rank(day + key)`.
    Trainable: the others that are not `near` (per key, `near_held_out`) a held-out item, in `keys`' order."""
    held = [k for k in keys if is_held_out(stories[k], every)]
    evals = sorted(held, key=lambda k: stable_rank(day + k))[: max(1, per_day // every)]
    held_keys = set(held)
    return evals, [k for k, n in zip(keys, near) if k not in held_keys and not n]
