"""Varro's settings: the [varro] section (prompts, the forecast reward)."""

from __future__ import annotations

from dataclasses import dataclass

from varro.engine.core.config import AT_LEAST_ONE, COSINE, NON_NEGATIVE, POSITIVE, SHARE, opt
from varro.engine.embed.embedders import EmbedderSettings


@dataclass
class VarroConfig(EmbedderSettings):
    """Varro's own settings; the embedder is the engine's (its base)."""
    prompts_per_day: int = opt(32, "headlines turned into prompts each day (eval ones included)", AT_LEAST_ONE)
    eval_every: int = opt(8, "one in this many stories is held out for eval: never a prompt or target in training",
                          AT_LEAST_ONE)
    dedup_threshold: float = opt(0.8, "headlines at least this similar to a chosen one are near-duplicates", COSINE)
    timezone: str = opt("", "IANA timezone that decides a headline's day (empty: the machine's)")
    semantic_weight: float = opt(0.75, "weight of on_topic: the gain in similarity to the next-day headlines of "
                                       "the prompt's own story over the source headline's own similarity",
                                 NON_NEGATIVE)
    gain_full: float = opt(0.15, "cosine gain over the source headline that earns the full on_topic score of 1",
                           POSITIVE)
    loss_full: float = opt(0.75, "cosine loss under the source headline's own similarity that costs gain_floor "
                                 "(wide, so poor forecasts still differ from one another)", POSITIVE)
    gain_floor: float = opt(-1.0, "lowest on_topic score (a loss is charged down to this; an empty forecast gets it)")
    fallback_threshold: float = opt(0.5, "when a prompt's story has no next-day headline: next-day headlines at "
                                         "least this similar to the source are its targets (flagged); none: NULL",
                                    COSINE)
    topic_weight: float = opt(0.25, "weight of staying on the source's story (cosine to it), paid only when the "
                                    "story has no next-day target", NON_NEGATIVE)
    topic_full: float = opt(0.5, "cosine to the source that earns the full stay-on-story score", POSITIVE)
    format_weight: float = opt(0.25, "weight of the five-beat format score", NON_NEGATIVE)
    min_words: int = opt(60, "length band: fewest words with the full length score", NON_NEGATIVE)
    max_words: int = opt(180, "length band: most words with the full length score (0 at twice this)", AT_LEAST_ONE)
    min_sentences: int = opt(3, "length band: fewest sentences with the full length score", NON_NEGATIVE)
    max_sentences: int = opt(5, "length band: most sentences with the full length score", AT_LEAST_ONE)
    prose_min_words: int = opt(4, "a prose sentence has at least this many words", NON_NEGATIVE)
    prose_max_words: int = opt(40, "a sentence up to this many words counts fully as prose; longer ones count "
                                   "less, down to nothing at twice this", AT_LEAST_ONE)
    prose_function_share: float = opt(0.2, "a prose sentence has at least this share of function words", SHARE)
    leak_weight: float = opt(0.25, "penalty weight for instruction echo and meta-talk", NON_NEGATIVE)
    echo_weight: float = opt(0.5, "penalty weight for restating the source headline", NON_NEGATIVE)
    echo_cosine_floor: float = opt(0.9, "cosine to the source headline above which the echo penalty starts "
                                        "(an on-topic forecast sits at 0.7-0.9)", COSINE)
    echo_overlap_floor: float = opt(0.6, "share of words taken from the source above which the echo penalty starts",
                                    SHARE)
    containment_start: float = opt(0.5, "share of a source sentence's word pairs found in the forecast above which "
                                        "the echo penalty starts (honest forecasts on the sample: at most 0.45)",
                                   SHARE)
    containment_full: float = opt(0.8, "share of a source sentence's word pairs in the forecast that counts as a "
                                       "full echo (the title appended or embedded)", SHARE)
    stance_weight: float = opt(0.25, "weight of the stance: +1 when every claim that meets the next day's "
                                     "headlines came true, -1 when they were the opposite or hedged", NON_NEGATIVE)
