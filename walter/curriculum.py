"""Walter's curriculum: the engine's (varro.engine.prompts.curriculum) over articles, keyed by their normalised URL.

An article's score is the larger of its regret and its reward spread in its
recent groups; see the engine module for the draw and what is logged.
"""

from __future__ import annotations

import numpy as np
import sqlite_utils

from varro.engine.prompts.curriculum import (  # noqa: F401  (re-exported: Walter's callers and tests use these names)
    EXACT_MAX,
    MC_DRAWS,
    MC_SEED,
    ItemStats as ArticleStats,
    inclusion_probabilities,
    item_stats,
    pick_items,
)

APP = "walter"
KEY = "url_norm"  # the article key in Walter's prompts.source_json


def article_stats(db: sqlite_utils.Database, run: str, day: str, window_days: int) -> dict[str, ArticleStats]:
    """Regret and variance per article over its scored groups in the `window_days` before `day`."""
    return item_stats(db, APP, run, day, window_days, KEY)


def pick_articles(db: sqlite_utils.Database, run: str, day: str, candidates: list[str], k: int, floor: float,
                  window_days: int, rng: np.random.Generator) -> list[str]:
    """Choose up to `k` of `candidates` (normalised URLs) and log every candidate's odds (`pick_items`)."""
    return pick_items(db, APP, run, day, candidates, k, floor, window_days, rng, KEY)
