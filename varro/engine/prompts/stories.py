"""Stories: items (headlines, articles) linked by embedding similarity.

Each new item joins the story of the most similar earlier item within `window_days` when their cosine is
at least `threshold`, else it opens a story of its own; a link, once stored, never changes. The held-out
split is by story (varro.engine.prompts.split); why and how it was tuned:
docs/varro.md ("The modules, in detail").
"""

from __future__ import annotations

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
