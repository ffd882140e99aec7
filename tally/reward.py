"""tally's reward: a completion against its group's items of earlier days.

    reward = max_i cos(text, item_i) * w_i - copy_weight * copy - echo
w_i is how far item i beat its author's usual (varro.engine.rewards.baselines), copy the graded copy score
against the group's items (varro.engine.rewards.copying), echo a penalty for repeating the prompt's words.
"""

from __future__ import annotations

import json
import math
import re
from typing import TYPE_CHECKING

import numpy as np

from varro.engine.rewards import baselines
from varro.engine.rewards.copying import copy_components, no_copy
from varro.engine.rewards.text import best_transfer, longest_shared_ngram, words

from .ingest import parse_counts
from .settings import TallyConfig

if TYPE_CHECKING:
    from .task import History

PLACEHOLDER_RE = re.compile(r"\{[^{}]*\}")


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


def instruction(template: str) -> str:
    """The prompt's own words: the template without its placeholders."""
    return PLACEHOLDER_RE.sub(" ", template)


def echoes(text: str, template: str) -> bool:
    """Whether `text` repeats four words in a row of the prompt's instruction (all of a shorter one of
    at least three words)."""
    own = len(words(instruction(template)))
    return own >= 3 and longest_shared_ngram(text, instruction(template)) >= min(4, own)


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
