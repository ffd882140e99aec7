"""tally's settings: the [tally] section (the file and its columns, the prompt, the reward, the curriculum)."""

from __future__ import annotations

from dataclasses import dataclass

from varro.engine.core.config import AT_LEAST_ONE, COSINE, NON_NEGATIVE, POSITIVE, SHARE, opt


@dataclass
class TallyConfig:
    embedder: str = opt("all-MiniLM-L6-v2", "sentence-transformers model for the rewards ('hash': test fake)")
    items: str = opt("", "the items file for --source file: JSON lines (.jsonl) or CSV (.csv), one item a row")
    group_column: str = opt("group", "column of an item's group key (a URL, a topic): one prompt per group")
    author_column: str = opt("author", "column of an item's author: their other items are its baseline")
    text_column: str = opt("text", "column of the item's text (what the model learns to write)")
    time_column: str = opt("created", "column of the created time, ISO 8601 (a date alone is that day)")
    counts: str = opt("saves=1,shares=2", "engagement count columns and their weights: column=weight, ...")
    title_column: str = opt("title", "column of the group's title for the prompt (empty: the group key)")
    description_column: str = opt("description", "column of the group's description for the prompt (empty: none)")
    id_column: str = opt("", "column of the item's own id (empty: a hash of group, author, time and text)")
    age_column: str = opt("", "column of the item's age in hours when its counts were read (empty: final counts)")
    timezone: str = opt("UTC", "IANA timezone that decides an item's day (empty: the machine's)")
    prompt: str = opt("Write a short post about: {title}\n{description}",
                      "the prompt of a group; {title}, {description} and {group} are filled in")
    groups_per_day: int = opt(8, "groups turned into prompts each day (eval ones included)", AT_LEAST_ONE)
    eval_every: int = opt(8, "one in this many stories of groups is held out for eval, never trained on",
                          AT_LEAST_ONE)
    lookback_days: int = opt(7, "a group is a candidate while it has an item this many days before the day",
                             NON_NEGATIVE)
    weight_saturation: float = opt(4.0, "engagement / author baseline ratio that earns an item the full weight 1",
                                   POSITIVE)
    weight_pseudo_count: float = opt(2.0, "engagement added to an item and to its author's usual before their "
                                          "ratio, so a small author's one lucky item stays modest", NON_NEGATIVE)
    engagement_half_life_hours: float = opt(12.0, "assumed growth: by age t an item has 1 - 2^(-t/this) of its "
                                                  "final engagement (used with age_column)", POSITIVE)
    copy_cosine_start: float = opt(0.8, "cosine to a prior item where the copy penalty starts", COSINE)
    copy_cosine_full: float = opt(1.0, "cosine to a prior item where the copy penalty is full", COSINE)
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
    echo_penalty: float = opt(0.3, "penalty for repeating the prompt's instruction words", NON_NEGATIVE)
    curriculum_floor: float = opt(0.1, "minimum pick weight, so every group can be chosen", SHARE)
    curriculum_days: int = opt(7, "days of a group's past rollouts that its regret is read from", AT_LEAST_ONE)
