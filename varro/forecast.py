"""Varro's task: the forecast prompt and its reward, every component kept.

reward = semantic_weight * semantic + format_weight * format
         - leak_weight * leak - echo_weight * echo

- semantic: max cosine between the forecast and the next day's headlines.
- format: the five beats (object, direction with magnitude, timeframe,
  drivers, verification; word-boundary rules) times a length band
  (3-5 sentences, 60-180 words).
- leak: instruction echo and meta-talk (labels like "Note:", "As an AI",
  the instruction's own phrases, bullet lists, markdown), 0..1.
- echo: how much the forecast merely restates its own source headline,
  semantically or word for word, 0..1.
"""

from __future__ import annotations

import re
import numpy as np

from .config import VarroConfig
from .rewards import (
    BULLET_RE,
    MARKDOWN_RE,
    META_RE,
    band,
    content_words,
    longest_shared_ngram,
    max_cosine,
    sentence_count,
    words,
)

INSTRUCTION = (
    "Forecast what happens next in this story. "
    "Write one short paragraph of three to five sentences. "
    "Say what will change, in which direction and by roughly how much, and by when. "
    "Name what is driving it and how we will know it happened."
)

_DAYS = r"monday|tuesday|wednesday|thursday|friday|saturday|sunday"
_MONTHS = r"january|february|march|april|may|june|july|august|september|october|november|december"
_NUM = r"\d+|one|two|three|four|five|six|seven|ten|a few|several|48|24|72"

BEATS = {
    "direction": re.compile(
        r"\b(?:rise[sn]?|rising|rose|fall(?:s|ing|en)?|fell|increase[sd]?|decrease[sd]?|climb(?:s|ed)?|"
        r"drop(?:s|ped)?|decline[sd]?|gain(?:s|ed)?|slip(?:s|ped)?|grow(?:s|n)?|shrink(?:s)?|ease[sd]?|"
        r"widen(?:s|ed)?|narrow(?:s|ed)?|higher|lower|up|down|extend(?:s|ed)?|raise[sd]?|hike[sd]?|"
        r"surge[sd]?|jump(?:s|ed)?|rebound(?:s|ed)?|recover(?:s|ed)?|tighten(?:s|ed)?|slow(?:s|ed)?)\b",
        re.IGNORECASE,
    ),
    "magnitude": re.compile(
        r"\d+(?:\.\d+)?\s?(?:%|percent\b|per cent\b|points?\b|basis points\b|bps\b)|[$€£]\s?\d|"
        r"\b\d+(?:\.\d+)?\s?(?:million|billion|thousand|tonnes|barrels|ships|jobs|seats|votes|people)\b|"
        r"\b(?:slightly|modestly|marginally|narrowly|a little|a small)\b",
        re.IGNORECASE,
    ),
    "timeframe": re.compile(
        rf"\b(?:within (?:the next )?(?:{_NUM})? ?(?:hours?|days?|weeks?)|"
        rf"(?:over|in) the (?:next|coming) (?:(?:{_NUM}) )?(?:hours|days|weeks|month)|"
        rf"by (?:the end of )?(?:the )?(?:{_DAYS}|week|month|tomorrow|tonight|{_MONTHS})|"
        rf"tomorrow|tonight|this week|next week|(?:on|before|by) (?:{_DAYS})|{_DAYS}|"
        rf"(?:{_MONTHS}) \d{{1,2}}|\d{{1,2}} (?:{_MONTHS}))\b",
        re.IGNORECASE,
    ),
    "drivers": re.compile(
        r"\b(?:because|driven by|due to|amid|owing to|thanks to|on the back of|fuell?ed by|pushed by|"
        r"pressure from|following|led by|spurred by|weighed (?:down )?by|supported by|boosted by|hit by|"
        r"as a result of|caused by|helped by)\b",
        re.IGNORECASE,
    ),
    "verification": re.compile(
        r"\b(?:verif(?:y|ied|iable)|confirm(?:s|ed)?|check(?:ed)?|watch for|will show|would show|"
        r"official (?:data|figures|results|statement|count)|data|figures|report(?:s|ed)?|announce(?:s|d|ment)?|"
        r"statement|filing|release[sd]?|publish(?:es|ed)?|tally|close[sd]? (?:above|below)|"
        r"settle[sd]? (?:above|below)|according to)\b",
        re.IGNORECASE,
    ),
}

# Phrases of the instruction itself; writing them back is instruction echo.
INSTRUCTION_PHRASES = re.compile(
    r"\b(?:five beats|the object|a direction|tight timeframe|named drivers|way to verify|"
    r"short paragraph|three to five sentences|what happens next|how we will know|by roughly how much|"
    r"forecast\s*:|headline\s*:|summary\s*:)",
    re.IGNORECASE,
)


def build_prompt(title: str, summary: str | None = None) -> str:
    """The user message: the headline, its summary when present, then the short instruction."""
    parts = [f"Headline: {title.strip()}"]
    if summary and summary.strip():
        parts.append(f"Summary: {summary.strip()}")
    parts.append("")
    parts.append(INSTRUCTION)
    return "\n".join(parts)


def beat_scores(text: str, source_title: str) -> dict[str, float]:
    """Each of the five beats in [0, 1] by word-boundary rules."""
    source_words = set(content_words(source_title))
    mentioned = bool(source_words & set(content_words(text)))
    proper = bool(re.search(r"(?<=[a-z,;] )[A-Z][a-z]+", text))
    if not BEATS["direction"].search(text):
        direction = 0.0
    else:  # half a beat for a direction, the full beat with a small magnitude
        direction = 1.0 if BEATS["magnitude"].search(text) else 0.5
    return {
        "object": 1.0 if (mentioned or proper) else 0.0,
        "direction": direction,
        "timeframe": 1.0 if BEATS["timeframe"].search(text) else 0.0,
        "drivers": 1.0 if BEATS["drivers"].search(text) else 0.0,
        "verification": 1.0 if BEATS["verification"].search(text) else 0.0,
    }


def length_score(text: str) -> float:
    return band(len(words(text)), 60, 180) * band(sentence_count(text), 3, 5)


def leak_kinds(text: str) -> list[str]:
    """Which kinds of leak the text shows: meta-talk, instruction echo, bullets, markdown."""
    kinds = []
    if META_RE.search(text):
        kinds.append("meta")
    if INSTRUCTION_PHRASES.search(text) or longest_shared_ngram(text, INSTRUCTION) >= 5:
        kinds.append("instruction")
    if BULLET_RE.search(text):
        kinds.append("bullets")
    if MARKDOWN_RE.search(text):
        kinds.append("markdown")
    return kinds


def echo_score(text: str, source_text: str, cosine_to_source: float, w: VarroConfig) -> float:
    """0 for a forecast that adds to its headline, up to 1 for one that only restates it."""
    mine = content_words(text)
    if not mine:
        return 0.0
    source = set(content_words(source_text))
    overlap = sum(1 for x in mine if x in source) / len(mine)
    by_overlap = (overlap - w.echo_overlap_floor) / (1.0 - w.echo_overlap_floor)
    by_cosine = (cosine_to_source - w.echo_cosine_floor) / (1.0 - w.echo_cosine_floor)
    return float(np.clip(max(by_overlap, by_cosine), 0.0, 1.0))


def score_forecast(
    text: str,
    source_title: str,
    source_summary: str,
    text_vec: np.ndarray,
    source_vec: np.ndarray,
    next_day_vecs: np.ndarray,
    w: VarroConfig,
) -> dict[str, float]:
    """All components and the combined reward of one forecast (vectors are unit rows)."""
    empty = not text.strip()
    semantic, best = (0.0, -1) if empty else max_cosine(text_vec, next_day_vecs)
    beats = {k: 0.0 for k in BEATS} if empty else beat_scores(text, source_title)
    length = length_score(text)
    fmt = sum(beats.values()) / len(beats) * length
    kinds = leak_kinds(text)
    leak = min(1.0, len(kinds) / 2)
    cos_src = 0.0 if empty else float(np.dot(text_vec, source_vec))
    echo = echo_score(text, f"{source_title} {source_summary}", cos_src, w)
    reward = w.semantic_weight * semantic + w.format_weight * fmt - w.leak_weight * leak - w.echo_weight * echo
    return {
        "reward": reward,
        "semantic": semantic,
        "best_match": float(best),
        "format": fmt,
        **{f"beat_{k}": v for k, v in beats.items()},
        "length": length,
        "words": float(len(words(text))),
        "sentences": float(sentence_count(text)),
        "leak": leak,
        "leak_meta": float("meta" in kinds),
        "leak_instruction": float("instruction" in kinds),
        "leak_bullets": float("bullets" in kinds),
        "leak_markdown": float("markdown" in kinds),
        "echo": echo,
        "cosine_to_source": cos_src,
    }
