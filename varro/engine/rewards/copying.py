"""Copying is not writing: a graded copy score of a candidate against the human items it is rewarded by.

The score, in [0, 1], is the largest of ramped measures against one item: cosine, shared 3-grams, words in
order, `copy_ngram` words in a row, the rise above other authors' band; `restated` catches a paraphrase
point by point. The knobs: `CopySettings` (`ParaphraseSettings` for the band). In detail: docs/walter.md
("The modules, in detail").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from varro.engine.core.config import AT_LEAST_ONE, COSINE, NON_NEGATIVE, SHARE, opt
from varro.engine.rewards.text import longest_shared_ngram, ngrams, words

COPY_KEYS = ("copy", "copy_cosine", "copy_containment", "copy_order", "copy_run", "copy_idea", "max_cosine",
             "trigram_containment", "order_containment", "shared_run", "idea_margin")
# a post's points: its sentences, cut again at commas (and ', so'), dashes and the conjunctions that join two claims
CLAUSE_BREAK = re.compile(r"(?<=[.!?;:])\s+|,?\s+(?:but|and|while|because)\s+|,\s+(?:so\s+)?|\s+[-\u2013\u2014]\s+",
                          re.IGNORECASE)


@dataclass
class CopySettings:
    """The copy score's knobs, in the section of every app whose reward transfers from human items."""
    copy_cosine_start: float = opt(0.8, "cosine to a prior human item where the copy penalty starts", COSINE)
    copy_cosine_full: float = opt(1.0, "cosine to a prior human item where the copy penalty is full", COSINE)
    copy_containment_start: float = opt(0.3, "share of the candidate's word 3-grams found in one prior item "
                                             "where the copy penalty starts", SHARE)
    copy_containment_full: float = opt(0.7, "share of the candidate's word 3-grams found in one prior item "
                                            "where the copy penalty is full", SHARE)
    copy_order_start: float = opt(0.4, "share of the candidate's words found in order in one prior item "
                                       "where the copy penalty starts", SHARE)
    copy_order_full: float = opt(0.8, "share of the candidate's words found in order in one prior item "
                                      "where the copy penalty is full", SHARE)
    copy_ngram: int = opt(8, "shared words in a row with a prior item that make a full copy", AT_LEAST_ONE)
    copy_weight: float = opt(1.0, "penalty weight for copying a prior item (times the graded copy score)",
                             NON_NEGATIVE)


@dataclass
class ParaphraseSettings(CopySettings):
    """The copy score's knobs with its paraphrase part: the rise above other authors' independent band."""
    copy_band_start: float = opt(0.02, "cosine to one prior item above the closest any other author's "
                                       "independent item came to it, where the paraphrase penalty starts",
                                 NON_NEGATIVE)
    copy_band_full: float = opt(0.15, "the same margin where the paraphrase penalty is full", NON_NEGATIVE)
    copy_band_floor: float = opt(0.65, "the band is at least this (humans on the sample: half come this close to "
                                       "another author's independent post; a post nobody wrote close to is no trap)",
                                 COSINE)


def ramp(value: float, start: float, full: float) -> float:
    """0 at or below `start`, 1 at or above `full`, linear between. Raises ValueError unless start < full."""
    if not start < full:
        raise ValueError(f"a ramp needs start < full, got {start}, {full}")
    return float(np.clip((value - start) / (full - start), 0.0, 1.0))


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence of two token lists (bit-parallel, Hyyro 2004)."""
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, token in enumerate(a):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for token in b:
        u = v & masks.get(token, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - bin(v).count("1")


def copy_measures(text: str, posts: list[str], min_words: int) -> dict[str, float]:
    """Raw overlap of a candidate with its closest historical item, each a max over items.

    trigram_containment: share of the candidate's word 3-grams found in one item;
    order_containment: share of its words found in order in one item (LCS);
    shared_run: the longest run of words shared with one item. Shares are over at
    least `min_words` words (3-grams: min_words - 2), so a short candidate is
    not a copy for having its three words somewhere in a long item.
    """
    tokens = [w.lower() for w in words(text)]
    grams = set(ngrams(tokens, 3))
    gram_den = max(len(ngrams(tokens, 3)), min_words - 2, 1)
    word_den = max(len(tokens), min_words, 1)
    out = {"trigram_containment": 0.0, "order_containment": 0.0, "shared_run": 0.0}
    for post in posts:
        post_tokens = [w.lower() for w in words(post)]
        out["trigram_containment"] = max(out["trigram_containment"],
                                         len(grams & set(ngrams(post_tokens, 3))) / gram_den)
        out["order_containment"] = max(out["order_containment"], lcs_length(tokens, post_tokens) / word_den)
        out["shared_run"] = max(out["shared_run"], float(longest_shared_ngram(text, post)))
    return out


def independent_bands(vecs: np.ndarray, posts: list[str], authors: list[str], independent_run: int = 5) -> np.ndarray:
    """Per item, the highest cosine to it of another author's item that shares no `independent_run` words in a
    row with it (an independent take on the same article, not a quote or a share of the title); NaN when no
    other author wrote one."""
    vecs = np.asarray(vecs)
    return _closest_independent(vecs @ vecs.T if len(vecs) else np.zeros((0, 0)), posts, authors, independent_run)


def independent_point_bands(point_vecs: list[np.ndarray], posts: list[str], authors: list[str],
                            independent_run: int = 5) -> np.ndarray:
    """Per item, the largest `point_coverage` of its points by another author's independent item (as for
    `independent_bands`); NaN when no other author wrote one. `point_vecs[i]` embeds `points(posts[i])`."""
    n = len(posts)
    cover = np.array([[point_coverage(point_vecs[i], point_vecs[j]) for j in range(n)] for i in range(n)])
    return _closest_independent(cover.reshape(n, n), posts, authors, independent_run)


def _closest_independent(closeness: np.ndarray, posts: list[str], authors: list[str], run: int) -> np.ndarray:
    """Per item i, max of closeness[i, j] over other authors' items j sharing fewer than `run` words in a row."""
    out = np.full(len(posts), np.nan)
    for i in range(len(posts)):
        peers = [closeness[i, j] for j in range(len(posts)) if authors[j] != authors[i]
                 and longest_shared_ngram(posts[i], posts[j]) < run]
        if peers:
            out[i] = max(peers)
    return out


def points(text: str) -> list[str]:
    """The clauses of `text` with at least two words (CLAUSE_BREAK); the whole text when none has."""
    parts = [p.strip() for p in CLAUSE_BREAK.split(text) if len(words(p)) >= 2]
    return parts or [text]


def point_coverage(of: np.ndarray, by: np.ndarray) -> float:
    """The share of one text's points another restates: the mean over the rows of `of` (unit vectors of the
    first text's points) of the best cosine to a row of `by` (the second text's)."""
    return float((np.asarray(of) @ np.asarray(by).T).max(axis=1).mean())


def copy_components(text: str, cosines: np.ndarray, posts: list[str], cfg: CopySettings,
                    bands: np.ndarray | None = None) -> dict[str, float]:
    """The graded copy score ("copy", in [0, 1]) with the parts it is the largest of, and their raw measures.

    `cosines` are the candidate's cosines to `posts`, in the same order as `bands` (`independent_bands`,
    each floored at copy_band_floor; None: no paraphrase part, as for tally). With bands, `cfg` is
    `ParaphraseSettings`.
    """
    measures = copy_measures(text, posts, cfg.copy_ngram)
    max_cos = float(np.max(cosines)) if len(cosines) else 0.0
    need = min(cfg.copy_ngram, max(4, len(words(text))))  # a short candidate copied whole is still a copy
    parts = {
        "copy_cosine": ramp(max_cos, cfg.copy_cosine_start, cfg.copy_cosine_full),
        "copy_containment": ramp(measures["trigram_containment"], cfg.copy_containment_start,
                                 cfg.copy_containment_full),
        "copy_order": ramp(measures["order_containment"], cfg.copy_order_start, cfg.copy_order_full),
        "copy_run": 1.0 if measures["shared_run"] >= need else 0.0,
        "copy_idea": 0.0,
    }
    margin = 0.0
    if bands is not None and len(cosines):
        known = ~np.isnan(bands)
        if known.any():
            above = np.asarray(cosines)[known] - np.maximum(bands[known], cfg.copy_band_floor)
            margin = float(above.max())
            parts["copy_idea"] = ramp(margin, cfg.copy_band_start, cfg.copy_band_full)
    return {"copy": max(parts.values()), **parts, "max_cosine": max_cos, **measures, "idea_margin": margin}


def restated(coverage: np.ndarray, bands: np.ndarray, start: float, full: float) -> np.ndarray:
    """Per item, how far the candidate is a point-by-point restatement of it, in [0, 1]: its `point_coverage`
    of the item above the item's `independent_point_bands`, ramped from `start` to `full`; 0 where no other
    author wrote independently (NaN band)."""
    above = np.where(np.isnan(bands), -np.inf, np.asarray(coverage) - np.nan_to_num(bands))
    return np.array([ramp(a, start, full) for a in above])


def copy_score(text: str, cosines: np.ndarray, posts: list[str], cfg: CopySettings) -> float:
    """How much the candidate is a copy of some historical item, in [0, 1] (see the module docstring)."""
    return copy_components(text, cosines, posts, cfg)["copy"]


def no_copy() -> dict[str, float]:
    """The copy components of a blank candidate: all 0 (nothing to copy, and nothing written)."""
    return dict.fromkeys(COPY_KEYS, 0.0)
