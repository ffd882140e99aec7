"""Walter's settings: the [walter] section (search, engagement weights, the post reward, the curriculum)."""

from __future__ import annotations

from dataclasses import dataclass

from varro.engine.core.config import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, SHARE, opt
from varro.engine.embed.embedders import EmbedderSettings
from varro.engine.prompts.curriculum import CurriculumSettings
from varro.engine.rewards.baselines import FairWeightSettings
from varro.engine.rewards.copying import ParaphraseSettings


@dataclass
class WalterConfig(EmbedderSettings, FairWeightSettings, ParaphraseSettings, CurriculumSettings):
    """Walter's own settings; the embedder, the fair weight, the copy score and the curriculum are the
    engine's (their bases)."""
    timezone: str = opt("", "IANA timezone that decides a post's day (empty: the machine's)")
    domains: str = opt(
        "apnews.com,reuters.com,bbc.co.uk,bbc.com,theguardian.com,nytimes.com,npr.org,arstechnica.com",
        "comma-separated news domains whose links are searched on Bluesky",
    )
    articles_per_day: int = opt(16, "articles turned into prompts each day (eval ones included)", AT_LEAST_ONE)
    eval_every: int = opt(8, "one in this many articles is held out for eval, never trained on", AT_LEAST_ONE)
    like_weight: float = opt(1.0, "engagement weight of a like", NON_NEGATIVE)
    repost_weight: float = opt(2.0, "engagement weight of a repost", NON_NEGATIVE)
    reply_weight: float = opt(1.0, "engagement weight of a reply", NON_NEGATIVE)
    quote_weight: float = opt(2.0, "engagement weight of a quote", NON_NEGATIVE)
    engagement_half_life_hours: float = opt(12.0, "assumed growth: by age t a post has 1 - 2^(-t/this) of its "
                                                  "final engagement; brings baseline posts to the scored post's age",
                                            POSITIVE)
    count_age_hours: float = opt(24.0, "posts are compared on counts read at this age", NON_NEGATIVE)
    baseline_ttl_hours: float = opt(168.0, "how long an author's baseline is cached", NON_NEGATIVE)
    copy_points_start: float = opt(0.05, "share of a winning post's points (clauses) the candidate restates, above "
                                          "the most any other author's independent post restated, where that "
                                          "post's credit in the transfer starts to go (sample: honest posts reach "
                                          "0.03 above against a winner they draw on, hand paraphrases 0.11 to 0.44)",
                                   NON_NEGATIVE)
    copy_points_full: float = opt(0.15, "the same margin where that post's credit is gone", NON_NEGATIVE)
    word_list_start: float = opt(0.35, "share of the words in fragments of one or two words (between commas, "
                                        "sentence ends, dashes) where the word-list penalty starts (humans on the "
                                        "sample: at most 0.32)", SHARE)
    word_list_full: float = opt(0.5, "that share where the word-list penalty is full (a red team's shuffled word "
                                     "salads: 0.45 and up)", SHARE)
    word_list_penalty: float = opt(0.5, "penalty for a list of words in place of prose, at word_list_full",
                                   NON_NEGATIVE)
    hashtag_limit: int = opt(2, "hashtags allowed before each extra one costs", NON_NEGATIVE)
    hashtag_penalty: float = opt(0.1, "penalty per hashtag past the limit", NON_NEGATIVE)
    repeated_hashtag_penalty: float = opt(0.2, "penalty for using a hashtag twice", NON_NEGATIVE)
    emoji_run_penalty: float = opt(0.2, "penalty for a run of three or more emoji", NON_NEGATIVE)
    emoji_free: int = opt(1, "emoji a post may carry before each further one costs (humans on the sample: 93% use "
                             "none, and every post with two or more is 'BREAKING' spam)", NON_NEGATIVE)
    emoji_penalty: float = opt(0.05, "penalty per emoji past emoji_free", NON_NEGATIVE)
    caps_start: float = opt(0.3, "share of upper-case letters (of 20 or more) where the shouting penalty starts "
                                 "(humans on the sample: at most 0.15, bar one all-caps spam post)", SHARE)
    caps_full: float = opt(0.6, "share of upper-case letters where the shouting penalty is full", SHARE)
    caps_penalty: float = opt(0.3, "penalty for a post in capitals, at caps_full and above", NON_NEGATIVE)
    bare_url_penalty: float = opt(0.2, "penalty for a bare URL in the text", NON_NEGATIVE)
    too_long_penalty: float = opt(0.5, "penalty for a post over Bluesky's 300 graphemes", NON_NEGATIVE)
    repeated_ngram_penalty: float = opt(0.5, "penalty weight of the share of word 3-grams that repeat", NON_NEGATIVE)
    echo_penalty: float = opt(0.3, "penalty for echoing the instruction ('here is a post', 'as an AI')", NON_NEGATIVE)
