"""Varro's reward: one forecast against the next day's headlines of its story, every component kept.

reward = semantic_weight * on_topic_paid (or topic_weight * source_topic_paid without targets)
         + stance_weight * stance_paid + format_weight * format - leak_weight * leak - echo_weight * echo
Each component: docs/varro.md ("The modules, in detail").
"""

from __future__ import annotations

import re
import numpy as np

from varro.forecast.settings import VarroConfig
from varro.forecast.stance import committed_text, stance
from varro.engine.rewards.copying import ramp
from varro.engine.rewards.text import (
    BULLET_RE,
    MARKDOWN_RE,
    META_RE,
    STOPWORDS,
    band,
    content_words,
    function_word_share,
    longest_shared_ngram,
    max_cosine,
    ngrams,
    sentence_count,
    split_sentences,
    words,
)

# The prompt's instruction (varro.forecast.task.build_prompt): written back, it is a leak.
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

BEAT_NAMES = ("object", "direction", "timeframe", "drivers", "verification")

# Phrases of the instruction itself; writing them back is instruction echo.
INSTRUCTION_PHRASES = re.compile(
    r"\b(?:five beats|the object|a direction|tight timeframe|named drivers|way to verify|"
    r"short paragraph|three to five sentences|what happens next|how we will know|by roughly how much|"
    r"forecast\s*:|headline\s*:|summary\s*:)(?!\w)",  # whole phrases: "the objections" is no echo
    re.IGNORECASE,
)


_CALENDAR = frozenset(f"{_DAYS}|{_MONTHS}".split("|"))


def _name_key(word: str) -> str:
    return word.lower().removesuffix("'s").removesuffix("’s")


def source_entities(source_text: str) -> set[str]:
    """The source's own names, lower-cased: capitalised words of its title and summary that do not
    open a sentence (the title's first word does count), hyphen parts included, stopwords, day and
    month names and words under 3 letters left out; all its content words when it names nothing."""
    names = set()
    for k, part in enumerate(re.split(r"(?<=[.!?])\s+|\n", source_text.strip())):
        for i, w in enumerate(words(part)):
            if i == 0 and k > 0:
                continue
            for piece in w.split("-"):
                key = _name_key(piece)
                if piece[:1].isupper() and len(key) >= 3 and key not in STOPWORDS and key not in _CALENDAR:
                    names.add(key)
    return names or set(content_words(source_text))


def sentence_weight(n_words: int, w: VarroConfig) -> float:
    """How fully a sentence of `n_words` counts as prose by its length: 1 up to prose_max_words, falling
    linearly to 0 at twice that (one long sentence costs a little, a wall of text everything)."""
    if n_words < w.prose_min_words:
        return 0.0
    return float(np.clip(2.0 - n_words / w.prose_max_words, 0.0, 1.0))


def weighted_prose(text: str, w: VarroConfig) -> list[tuple[str, float]]:
    """(sentence, weight) for the sentences that read as prose: end in . ! or ?, at least prose_min_words
    words, at least prose_function_share function words, not on a bullet line; weighted by length."""
    keep = []
    for sent, bullet in split_sentences(text):
        weight = sentence_weight(len(words(sent)), w)
        if (weight > 0 and not bullet and re.search(r"[.!?][\"'’”)\]]*$", sent)
                and function_word_share(sent) >= w.prose_function_share):
            keep.append((sent, weight))
    return keep


def prose_sentences(text: str, w: VarroConfig) -> list[str]:
    """The sentences that count as prose at all (see `weighted_prose`)."""
    return [s for s, _ in weighted_prose(text, w)]


def prose_score(text: str, w: VarroConfig) -> float:
    """Share of the text's words in prose sentences, each weighted by its length (0 for an empty text)."""
    total = len(words(text))
    return sum(len(words(s)) * k for s, k in weighted_prose(text, w)) / total if total else 0.0


# A driver that names nothing: "driven by pressure from markets, officials and the public".
GENERIC_DRIVERS = frozenset("""market markets official officials public people pressure pressures news situation
    factor factors event events thing things uncertainty development developments concern concerns reaction
    reactions sentiment investor investors trader traders demand forces force shift change changes issue
    issues circumstance circumstances conditions condition headwinds tailwinds dynamics trend trends""".split())


def specific_driver(text: str) -> bool:
    """A driver phrase followed, within six words, by a content word that names something specific."""
    for m in BEATS["drivers"].finditer(text):
        after = [x.lower() for x in words(text[m.end():])[:6]]
        if any(x not in STOPWORDS and x not in GENERIC_DRIVERS and len(x) > 2 for x in after):
            return True
    return False


def beat_scores(text: str, source_text: str) -> dict[str, float]:
    """Each of the five beats in [0, 1] by word-boundary rules; the object beat needs one of the
    source's own names (`source_entities`), not any capitalised word, and the drivers beat a named driver.
    Callers pass the committed prose (`committed_text`): a hedging clause earns no beat."""
    mine = {_name_key(p) for x in words(text) for p in x.split("-")}
    if not BEATS["direction"].search(text):
        direction = 0.0
    else:  # half a beat for a direction, the full beat with a small magnitude
        direction = 1.0 if BEATS["magnitude"].search(text) else 0.5
    return {
        "object": 1.0 if source_entities(source_text) & mine else 0.0,
        "direction": direction,
        "timeframe": 1.0 if BEATS["timeframe"].search(text) else 0.0,
        "drivers": 1.0 if specific_driver(text) else 0.0,
        "verification": 1.0 if BEATS["verification"].search(text) else 0.0,
    }


def length_score(text: str, w: VarroConfig) -> float:
    """The word band times the sentence band (1 inside both; see `band`)."""
    return (band(len(words(text)), w.min_words, w.max_words)
            * band(sentence_count(text), w.min_sentences, w.max_sentences))


def over_length(text: str, w: VarroConfig) -> float:
    """1 up to max_words, then falling linearly to 0 at twice max_words."""
    n = len(words(text))
    return 1.0 if n <= w.max_words else band(n, 0, w.max_words)


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


def _pairs(text: str) -> set[tuple[str, ...]]:
    return set(ngrams([x.lower() for x in words(text)], 2))


def source_containment(text: str, source_title: str, source_summary: str | None) -> float:
    """The largest share of one source sentence's word pairs (its title, or a summary sentence of at least
    four words) found in the forecast: 1 when the title is appended or embedded whole."""
    mine = _pairs(text)
    parts = [source_title] + [p for p, _ in split_sentences(source_summary or "") if len(words(p)) >= 4]
    shares = [len(_pairs(p) & mine) / len(_pairs(p)) for p in parts if _pairs(p)]
    return max(shares, default=0.0)


def echo_score(text: str, source_text: str, cosine_to_source: float, w: VarroConfig,
               containment: float = 0.0) -> float:
    """0 for a forecast that adds to its headline, up to 1 for one that only restates it or carries it whole
    (`containment`, see `source_containment`)."""
    mine = content_words(text)
    if not mine:
        return 0.0
    source = set(content_words(source_text))
    overlap = sum(1 for x in mine if x in source) / len(mine)
    by_overlap = (overlap - w.echo_overlap_floor) / (1.0 - w.echo_overlap_floor)
    by_cosine = (cosine_to_source - w.echo_cosine_floor) / (1.0 - w.echo_cosine_floor)
    by_containment = ramp(containment, w.containment_start, w.containment_full)
    return float(np.clip(max(by_overlap, by_cosine, by_containment), 0.0, 1.0))


def on_topic_components(empty: bool, text_vec: np.ndarray, source_vec: np.ndarray, target_vecs: np.ndarray,
                        w: VarroConfig) -> dict[str, float | None]:
    """semantic, its baseline (the source itself), the gain and on_topic; all None without targets."""
    if len(target_vecs) == 0:
        return {"semantic": None, "semantic_baseline": None, "semantic_gain": None, "on_topic": None,
                "best_match": None}
    baseline, _ = max_cosine(source_vec, target_vecs)
    if empty:  # nothing to embed: no similarity, and the floor, so silence never beats a wrong guess
        return {"semantic": None, "semantic_baseline": baseline, "semantic_gain": None,
                "on_topic": w.gain_floor, "best_match": None}
    semantic, best = max_cosine(text_vec, target_vecs)
    gain = semantic - baseline
    # a gain earns 1 at gain_full; a loss is charged on a wider scale, so it does not saturate at once
    on_topic = min(1.0, gain / w.gain_full) if gain >= 0 else max(w.gain_floor, w.gain_floor * -gain / w.loss_full)
    return {"semantic": semantic, "semantic_baseline": baseline, "semantic_gain": gain,
            "on_topic": float(on_topic), "best_match": float(best)}


def paid_score(score: float, prose: float, over: float) -> float:
    """A positive score scaled by the prose share and the over-length factor (a keyword dump or a padded
    text cannot buy it); a negative one charged in full."""
    return score * prose * over if score > 0 else score


def score_forecast(
    text: str,
    source_title: str,
    source_summary: str,
    text_vec: np.ndarray,
    source_vec: np.ndarray,
    target_vecs: np.ndarray,
    w: VarroConfig,
    target_fallback: bool = False,
    target_texts: list[str] = (),
) -> dict[str, float | None]:
    """All components and the combined reward of one forecast (vectors are unit rows).

    `target_vecs` are the next-day headlines of the prompt's own story, (n, d)
    with n = 0 when it has none: semantic and on_topic are then NULL and
    source_topic (staying on the source's story) takes their place.
    `target_texts` are those headlines' titles and summaries, one string each,
    for the stance. `target_fallback` only records how the targets were chosen.
    """
    empty = not text.strip()
    source_text = f"{source_title} {source_summary or ''}".strip()
    source_lines = f"{source_title}\n{source_summary or ''}"  # title and summary as separate sentences
    topic = on_topic_components(empty, text_vec, source_vec, np.asarray(target_vecs).reshape(-1, len(source_vec)), w)
    prose = prose_score(text, w)
    prose_text = committed_text(" ".join(prose_sentences(text, w)))
    beats = beat_scores(prose_text, source_lines) if prose_text else dict.fromkeys(BEAT_NAMES, 0.0)
    length = length_score(text, w)
    fmt = sum(beats.values()) / len(beats) * length * prose
    kinds = leak_kinds(text)
    leak = min(1.0, len(kinds) / 2)
    cos_src = 0.0 if empty else float(np.dot(text_vec, source_vec))
    containment = source_containment(text, source_title, source_summary)
    echo = echo_score(text, source_text, cos_src, w, containment)
    # what happened, where the story has targets; without them only hedging about the story is charged
    st = stance(text, list(target_texts) if len(target_vecs) else [], about=frozenset(source_entities(source_text)))
    # Without targets nothing can say whether the forecast came true; it can still stay on its own story.
    stay = None if topic["on_topic"] is not None else (
        w.gain_floor if empty else max(w.gain_floor, min(1.0, cos_src / w.topic_full)))
    over = over_length(text, w)
    paid, stay_paid = (None if x is None else paid_score(x, prose, over) for x in (topic["on_topic"], stay))
    stance_paid = paid_score(st.score, prose, over)
    reward = ((w.semantic_weight * paid if paid is not None else 0.0)
              + (w.topic_weight * stay_paid if stay_paid is not None else 0.0)
              + w.stance_weight * stance_paid
              + w.format_weight * fmt - w.leak_weight * leak - w.echo_weight * echo)
    return {
        "reward": reward,
        **topic,
        "on_topic_paid": paid,
        "source_topic": stay,
        "source_topic_paid": stay_paid,
        "targets": float(len(target_vecs)),
        "target_fallback": float(target_fallback),
        "format": fmt,
        **{f"beat_{k}": v for k, v in beats.items()},
        "prose": prose,
        "length": length,
        "words": float(len(words(text))),
        "sentences": float(sentence_count(text)),
        "leak": leak,
        "leak_meta": float("meta" in kinds),
        "leak_instruction": float("instruction" in kinds),
        "leak_bullets": float("bullets" in kinds),
        "leak_markdown": float("markdown" in kinds),
        "echo": echo,
        "source_containment": containment,
        "cosine_to_source": cos_src,
        "stance": st.score,
        "stance_paid": stance_paid,
        "stance_agree": float(st.agree),
        "stance_contradict": float(st.contradict),
        "stance_hedge": float(st.hedge),
    }
