"""Walter's reward (RLNVR): transfer what worked for an article, with the author's usual taken out.

reward = max_i cos(candidate, post_i) * w_i * (1 - r_i) - copy_weight * copy - sum(pen_*): w_i is how far
post i beat its author's usual, r_i how far the candidate restates it. Step by step: docs/walter.md
("The modules, in detail"). The engine's pieces are re-exported here under their old names
(`max_similarity_reward`, `ramp`, `copy_components`, ...).
"""

from __future__ import annotations

import re
import unicodedata
from typing import TYPE_CHECKING

import numpy as np

from walter.settings import WalterConfig
from varro.engine.rewards import baselines
from varro.engine.rewards.baselines import post_weight, reliability, trigamma  # noqa: F401  (re-exported)
from varro.engine.rewards.copying import (  # noqa: F401  (re-exported)
    copy_components,
    copy_measures,
    copy_score,
    independent_bands,
    independent_point_bands,
    lcs_length,
    no_copy,
    point_coverage,
    points,
    ramp,
    restated,
)
from varro.engine.rewards.text import (  # noqa: F401  (re-exported)
    EMOJI_CHAR,
    EMOJI_RE,
    HASHTAG_RE,
    best_transfer,
    fragment_share,
    max_similarity_reward,
    repeated_ngram_rate,
    words,
)

if TYPE_CHECKING:
    from varro.engine.rewards.baselines import BaselineStats

GRAPHEME_LIMIT = 300
URL_RE = re.compile(r"\bhttps?://\S+|\bwww\.\S+", re.IGNORECASE)
EMOJI_RUN_RE = re.compile(rf"(?:{EMOJI_CHAR}[\uFE0F\u200D\U0001F3FB-\U0001F3FF]*){{3,}}")
ASK = "Write a Bluesky post about this article."
ECHO_RE = re.compile(r"\b(?:bluesky post|write a post|about this article|here(?:'s| is) (?:a|my|the) post|"
                     r"as an ai|article\s*:)", re.IGNORECASE)


def engagement(likes: int | None, reposts: int | None, replies: int | None, quotes: int | None,
               cfg: WalterConfig) -> float | None:
    """The weighted engagement of a post; None when any count is unknown (never a silent zero)."""
    return baselines.weighted_engagement((likes, reposts, replies, quotes),
                                         (cfg.like_weight, cfg.repost_weight, cfg.reply_weight, cfg.quote_weight))


def fair_weight(engagement_: float, baseline: BaselineStats, cfg: WalterConfig) -> float:
    """`post_weight` of a post against its author's age-matched baseline, shrunk by its evidence."""
    return baselines.fair_weight(engagement_, baseline, cfg.weight_saturation, cfg.weight_pseudo_count)


def graphemes(text: str) -> int:
    """User-perceived characters, approximately: combining marks, ZWJ sequences, variation
    selectors and skin-tone modifiers join the character before them."""
    n = 0
    joined = False
    for ch in text:
        if unicodedata.combining(ch) or ch in "\uFE0E\uFE0F" or "\U0001F3FB" <= ch <= "\U0001F3FF":
            continue
        if ch == "\u200d":
            joined = True
            continue
        if joined:
            joined = False
            continue
        n += 1
    return n


def caps_share(text: str) -> float:
    """The share of upper-case letters, 0 for a text of under 20 letters (an acronym or two is not shouting)."""
    letters = [c for c in text if c.isalpha()]
    return sum(c.isupper() for c in letters) / len(letters) if len(letters) >= 20 else 0.0


def emoji_count(text: str) -> int:
    """Emoji as a person sees them: a ZWJ sequence or a skin-toned emoji counts once."""
    return len(EMOJI_RE.findall(text))


def penalties(text: str, cfg: WalterConfig) -> dict[str, float]:
    """The small penalties, each a legible number of its own (weights from `cfg`)."""
    tags = [t.lower() for t in HASHTAG_RE.findall(text)]
    return {
        "pen_caps": round(cfg.caps_penalty * ramp(caps_share(text), cfg.caps_start, cfg.caps_full), 6),
        "pen_emoji": round(cfg.emoji_penalty * max(0, emoji_count(text) - cfg.emoji_free), 6),
        "pen_hashtags": cfg.hashtag_penalty * max(0, len(tags) - cfg.hashtag_limit),
        "pen_repeated_hashtags": cfg.repeated_hashtag_penalty if len(tags) != len(set(tags)) else 0.0,
        "pen_emoji_run": cfg.emoji_run_penalty if EMOJI_RUN_RE.search(text) else 0.0,
        "pen_bare_url": cfg.bare_url_penalty if URL_RE.search(text) else 0.0,
        "pen_too_long": cfg.too_long_penalty if graphemes(text) > GRAPHEME_LIMIT else 0.0,
        "pen_repeated_ngrams": round(cfg.repeated_ngram_penalty * repeated_ngram_rate(text, 3), 6),
        "pen_echo": cfg.echo_penalty if ECHO_RE.search(text) else 0.0,
        "pen_word_list": round(cfg.word_list_penalty * ramp(fragment_share(text), cfg.word_list_start,
                                                            cfg.word_list_full), 6),
    }


def winner_bands(post_vecs: np.ndarray, post_texts: list[str], authors: list[str],
                 weights: np.ndarray) -> np.ndarray:
    """`independent_bands` of the posts that beat their author's usual (weight > 0); NaN for the rest: a post
    that earned nothing teaches nothing, so writing close to it (a quote of the article, say) copies no winner."""
    return _winners_only(independent_bands(post_vecs, post_texts, authors), weights)


def winner_point_bands(point_vecs: list[np.ndarray], post_texts: list[str], authors: list[str],
                       weights: np.ndarray) -> np.ndarray:
    """`independent_point_bands` of the posts that beat their author's usual and make at least two points; NaN
    for the rest (as winner_bands). A one-point post is restated by anything that makes its point, so the
    whole-text band judges it alone."""
    bands = _winners_only(independent_point_bands(point_vecs, post_texts, authors), weights)
    bands[np.array([len(p) < 2 for p in point_vecs], dtype=bool)] = np.nan
    return bands


def _winners_only(bands: np.ndarray, weights: np.ndarray) -> np.ndarray:
    bands[np.asarray(weights) <= 0] = np.nan
    return bands


def point_vectors(texts: list[str], embedder) -> list[np.ndarray]:
    """Each text's `points`, embedded in one call: one (points, dim) array per text."""
    split = [points(t) for t in texts]
    vecs = np.asarray(embedder.encode([p for ps in split for p in ps]))
    ends = np.cumsum([len(ps) for ps in split])
    return [vecs[e - len(ps):e] for e, ps in zip(ends, split)]


def score_post(text: str, text_vec: np.ndarray, post_vecs: np.ndarray, post_texts: list[str],
               weights: np.ndarray, cfg: WalterConfig, bands: np.ndarray | None = None,
               points: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, float]:
    """All components and the reward of one candidate post against its article's history.

    `bands`: the copy score's paraphrase part (varro.engine.rewards.copying.copy_components); `points`: (the share of
    each post's points the text restates, `winner_point_bands`), which takes a restated post's credit out of
    the transfer. None leaves either out.

    reward = transfer - copy_weight * copy - sum(pen_*); the copy parts and their raw
    measures are stored beside it.
    """
    gone = np.zeros(len(weights)) if points is None else restated(*points, cfg.copy_points_start,
                                                                      cfg.copy_points_full)
    if not text.strip():
        transfer, best, cos = 0.0, -1, 0.0
        copy = no_copy()
    else:
        transfer, best, cos = best_transfer(text_vec, post_vecs, np.asarray(weights) * (1.0 - gone))
        copy = copy_components(text, np.asarray(post_vecs) @ np.asarray(text_vec), post_texts, cfg, bands)
    pens = penalties(text, cfg)
    reward = transfer - cfg.copy_weight * copy["copy"] - sum(pens.values())
    return {
        "reward": reward,
        "transfer": transfer,
        "teacher": float(best),
        "teacher_cosine": cos,
        "teacher_weight": float(weights[best]) if best >= 0 else 0.0,
        "restated": float(gone.max()) if len(gone) else 0.0,
        **copy,
        **pens,
        "hashtags": float(len(HASHTAG_RE.findall(text))),
        "graphemes": float(graphemes(text)),
        "words": float(len(words(text))),
    }
