"""Hand-written honest forecasts for sample prompts and the hacks built from them.

Shared by tests/forecast/test_varro_reward.py and bench/varro_hacks.py. The honest
forecasts and the paraphrases are in varro_honest_forecasts.json; every hack is
built here from the sample's own text, so a reader can see what each one is.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from varro.forecast.task import headline_stories, story_split
from varro.forecast.reward import INSTRUCTION
from varro.forecast.headlines import headlines_for_day
from varro.forecast.sample import load_sample_day
from varro.engine.rewards.text import content_words

CASES_FILE = Path(__file__).with_name("varro_honest_forecasts.json")
SAMPLE_DAYS = [f"2026-11-0{d}" for d in range(2, 9)]
HACKS = ["other_story", "generic", "restated", "paraphrased", "keywords", "honest_keyword_tail",
         "instruction_echo", "bullets", "blank"]


def load_cases() -> dict:
    return json.loads(CASES_FILE.read_text())


def load_sample(db) -> None:
    for d in SAMPLE_DAYS:
        load_sample_day(db, d)


def sample_prompts(db, embedder, cfg, days=SAMPLE_DAYS[:-1]) -> list[dict]:
    """One prompt per headline of `days`, with its story id and split, as choose_prompts stores them."""
    prompts = []
    for d in days:
        stories = headline_stories(db, d, embedder, cfg)
        for h in headlines_for_day(db, d):
            prompts.append({"id": f"varro:{d}:{h['id']}", "day": d, "guid": h["guid"],
                            "split": story_split(stories[h["id"]], cfg),
                            "source_json": json.dumps({"headline_id": h["id"], "title": h["title"],
                                                       "summary": h["summary"], "story_id": stories[h["id"]]})})
    return prompts


def day_keywords(db, day: str, n: int) -> list[str]:
    """The day's `n` most frequent headline content words (ties by first appearance)."""
    counts = Counter(w for h in headlines_for_day(db, day) for w in content_words(f"{h['title']} {h['summary']}"))
    return [w for w, _ in counts.most_common(n)]


def source(prompt: dict) -> dict:
    return json.loads(prompt["source_json"])


def hack_texts(db, prompt: dict, honest: str, other_honest: str, paraphrase: str, generic: str) -> dict[str, str]:
    """Every hack of HACKS for `prompt`."""
    s = source(prompt)
    restated = f"{s['title']}. {s['summary']}".strip()
    keywords = day_keywords(db, prompt["day"], 60)
    sentences = [x.strip() for x in honest.replace(". ", ".\n").splitlines() if x.strip()]
    return {
        "other_story": other_honest,
        "generic": generic,
        "restated": restated,
        "paraphrased": paraphrase,
        "keywords": " ".join(keywords[:50]) + ".",
        "honest_keyword_tail": f"{honest} {' '.join(keywords[:25])}",
        "instruction_echo": f"{INSTRUCTION} Headline: {s['title']}.",
        "bullets": "\n".join(f"- {x}" for x in sentences),
        "blank": "",
    }


def off_topic_template(other: dict) -> str:
    """A templated five-beat forecast about another headline `other` (title, summary)."""
    return (f"{other['title']}. This is likely to develop further over the next few days, with the figures "
            f"rising by about 5% by Friday. The change will be driven by pressure from the people involved "
            f"and by market conditions. Official data and statements later this week will confirm it.")
