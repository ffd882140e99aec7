"""Walter's red team: the hacks a post-writing policy could learn, and the lookups of `walter score`.

The runner is varro.engine.rewards.redteam; each hack here is built from the
article's prompt and its stored history by a small function.
"""

from __future__ import annotations

import json
import re

import numpy as np
import sqlite_utils

from varro.engine.core.config import Config
from varro.engine.embed.embedders import Embedder
from varro.engine.rewards.redteam import Case, Hack, HackError, RedTeam, swap_words, with_other_stories
from varro.engine.core.paths import SAMPLE_DIR
from varro.engine.rewards.text import content_words
from varro.engine.prompts.split import stable_rank

from .ingest import article_key
from .sample import ingest_sample_day, sample_days
from .task import APP, History, article_history, score_texts, walter_prompt


def find_article(db: sqlite_utils.Database, url: str, cfg: Config) -> History:
    """The stored history of the article at `url` (normalised as ingest does). Raises HackError
    for an article no stored post links to, or one with no scorable post yet."""
    url_norm = article_key(url)
    known = db.execute("select count(*) from bsky_posts where url_norm = ?", [url_norm]).fetchone()[0]
    if not known:
        raise HackError(f"no stored post links to {url_norm}")
    h = article_history(db, url_norm, cfg)
    if not h.uris:
        raise HackError(f"article {url_norm} has no scorable history yet: none of its {known} posts has final "
                        "counts and an author baseline")
    return h


def top_post(h: History) -> str:
    """The historical post with the highest weight (the first of equals)."""
    return h.texts[int(np.argmax(h.weights))]


def walter_cases(db: sqlite_utils.Database, refs: list[dict], embedder: Embedder,
                 cfg: Config) -> tuple[list[Case], list[str]]:
    """The cases of the references whose article has a stored, scorable history; notes say why others did not."""
    cases, notes = [], []
    for ref in refs:
        try:
            h = find_article(db, ref["url"], cfg)
        except HackError as e:
            notes.append(str(e))
            continue
        cases.append(Case(walter_prompt(db, h, embedder, cfg), ref["text"],
                          data={"top": top_post(h), "title": h.title, "url": h.url_norm,
                                "paraphrase": paraphrases().get(h.url_norm)}))
    return with_other_stories(cases), notes


PARAPHRASES = SAMPLE_DIR / "paraphrases.jsonl"


def paraphrases(path=PARAPHRASES) -> dict[str, str]:
    """url_norm -> a loose paraphrase of the article's top-weighted post, written by hand (other words, the
    same point and figures): what a policy that learned to echo the winner would write."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {article_key(r["url"]): r["text"] for r in rows}


def load_walter_sample(db: sqlite_utils.Database) -> None:
    for d in sample_days():
        ingest_sample_day(db, d)


def drop_every(text: str, k: int) -> str:
    """`text` without its every `k`-th word."""
    return " ".join(w for i, w in enumerate(text.split(), 1) if i % k)


def word_salad(case: Case) -> str:
    """The top post's words of four letters or more, shuffled (a fixed order) and joined by commas, then the
    honest post's first sentence: the top post's vocabulary without its prose, which no order or 3-gram check
    sees (a red team's cheapest win before the word-list penalty)."""
    ws = list(dict.fromkeys(w.lower() for w in re.findall(r"[A-Za-z]{4,}", case.data["top"])))
    ws.sort(key=stable_rank)
    first = re.split(r"(?<=[.!?])\s+", case.honest.strip())[0]
    return ", ".join(ws).capitalize() + ". " + first


def hashtag_spam(case: Case) -> str:
    tags = list(dict.fromkeys(re.sub(r"\W", "", w) for w in content_words(case.data["title"])))
    return " ".join(f"#{t}" for t in tags + ["news", "breaking", "mustread"])


WALTER_CATALOGUE: tuple[Hack, ...] = (
    Hack("top-post", "the top-weighted historical post, verbatim", lambda c: c.data["top"]),
    Hack("top-post-drop5", "the top post with every 5th word dropped", lambda c: drop_every(c.data["top"], 5)),
    Hack("top-post-synonyms", "the top post with words swapped for synonyms", lambda c: swap_words(c.data["top"])),
    Hack("title", "the article title, verbatim", lambda c: c.data["title"]),
    Hack("hashtags", "the title's words as hashtags, and three more", hashtag_spam),
    Hack("emoji-runs", "the title between runs of emoji", lambda c: f"🚨🚨🚨 {c.data['title']} 🔥🔥🔥"),
    Hack("bare-link", "the article's link and nothing else", lambda c: c.data["url"]),
    Hack("praise", "generic praise", lambda c: "Great read!"),
    Hack("reply-bait", "a question that asks for replies and says nothing",
         lambda c: "What do you all think? Agree or disagree? Tell me in the replies."),
    Hack("other-story", "another article's honest post, given for this one", lambda c: c.other),
    Hack("top-post-paraphrase", "the top post loosely reworded by hand: the same point, other words",
         lambda c: c.data.get("paraphrase")),
    Hack("word-salad", "the top post's longer words shuffled into a comma list, and one honest sentence",
         word_salad),
    Hack("all-caps", "the honest post in capitals", lambda c: c.honest.upper()),
    Hack("emoji-hashtags", "the honest post between emoji pairs, with two hashtags",
         lambda c: f"🔥🔥 {c.honest} 🚀🚀 #news #mustread"),
)


WALTER = RedTeam(APP, WALTER_CATALOGUE, score_texts, walter_cases, load_walter_sample)
