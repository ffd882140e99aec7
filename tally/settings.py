"""tally's settings: the [tally] section (the file and its columns, the prompt, the reward, the curriculum)."""

from __future__ import annotations

from dataclasses import dataclass

from varro.engine.core.config import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, opt
from varro.engine.embed.embedders import EmbedderSettings
from varro.engine.prompts.curriculum import CurriculumSettings
from varro.engine.rewards.baselines import FairWeightSettings
from varro.engine.rewards.copying import CopySettings


@dataclass
class TallyConfig(EmbedderSettings, FairWeightSettings, CopySettings, CurriculumSettings):
    """tally's own settings; the embedder, the fair weight, the copy score and the curriculum are the
    engine's (their bases)."""
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
    engagement_half_life_hours: float = opt(12.0, "assumed growth: by age t an item has 1 - 2^(-t/this) of its "
                                                  "final engagement (used with age_column)", POSITIVE)
    echo_penalty: float = opt(0.3, "penalty for repeating the prompt's instruction words", NON_NEGATIVE)
