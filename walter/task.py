"""Walter's task: articles as prompts, split by story, and the posts' scoring against their history.

The candidates of a day are articles first posted in the week before it whose
posts have final counts and at least one post that beat its author's usual;
one story in `eval_every` is held out for eval, the rest are picked by the
curriculum (varro.engine.prompts.curriculum, keyed by the article's URL). A
post is scored at once against its article's history (the reward delay is 0).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import sqlite_utils

from varro.engine import store as dbm
from varro.engine.core.config import Config
from varro.engine.embed.embedders import Embedder
from varro.engine.eval.metrics import mean_or_none
from varro.engine.prompts.curriculum import ItemStats, item_stats, pick_items
from varro.engine.prompts.split import near_held_out, split_candidates, split_of, stable_rank
from varro.engine.prompts.stories import Item, assign_stories

from .ingest import baseline_stats
from .reward import (ASK, engagement, fair_weight, point_coverage, point_vectors, score_post, winner_bands,
                     winner_point_bands)

APP = "walter"
KEY = "url_norm"  # the article key in Walter's prompts.source_json (the curriculum reads it)


@dataclass(eq=False)
class History:
    """An article's historical posts with final counts, and their baseline-normalised weights."""
    url_norm: str
    title: str
    description: str
    uris: list[str]
    texts: list[str]
    weights: np.ndarray
    authors: list[str] = field(default_factory=list)  # author DIDs, for the paraphrase band


def count_weights(cfg: Config) -> dict[str, float]:
    w = cfg.walter
    return {"like": w.like_weight, "repost": w.repost_weight, "reply": w.reply_weight, "quote": w.quote_weight}


def article_history(db: sqlite_utils.Database, url_norm: str, cfg: Config) -> History:
    rows = list(db.query(
        "select uri, author_did, text, link_title, link_description, like_count, repost_count, reply_count, "
        "quote_count, counts_age_hours from bsky_posts where url_norm = ? and coalesce(deleted, 0) = 0 and counts_final = 1 "
        "order by uri", [url_norm]))
    uris, texts, weights, authors = [], [], [], []
    title = next((r["link_title"] for r in rows if r["link_title"]), "")
    description = next((r["link_description"] for r in rows if r["link_description"]), "")
    for r in rows:
        e = engagement(r["like_count"], r["repost_count"], r["reply_count"], r["quote_count"], cfg.walter)
        b = baseline_stats(db, r["author_did"], r["uri"], count_weights(cfg),
                           r["counts_age_hours"] or cfg.walter.count_age_hours, cfg.walter.engagement_half_life_hours)
        if e is None or b is None:
            continue  # unknown counts or no baseline: the post cannot teach
        uris.append(r["uri"])
        texts.append(r["text"])
        authors.append(r["author_did"])
        weights.append(fair_weight(e, b, cfg.walter))
    return History(url_norm, title, description, uris, texts, np.array(weights, dtype=np.float64), authors)


def article_stories(db: sqlite_utils.Database, day: str, embedder: Embedder, cfg: Config,
                    lookback_days: int = 7) -> dict[str, str]:
    """url_norm -> story id for the articles first posted before `day` within the lookback and the story
    window (varro.engine.prompts.stories on title + description), linking the new ones."""
    start = (date.fromisoformat(day) - timedelta(days=lookback_days + cfg.eval.story_window_days)).isoformat()
    items = [Item(r["url_norm"], r["day"], f"{r['title'] or ''} {r['description'] or ''}".strip())
             for r in db.query("select url_norm, day, title, description from articles where day >= ? and day < ? "
                               "order by day, url_norm", [start, day])]
    return assign_stories(db, APP, items, embedder, cfg.eval.story_threshold, cfg.eval.story_window_days)


def candidate_articles(db: sqlite_utils.Database, day: str, cfg: Config, lookback_days: int = 7) -> list[History]:
    """Articles first posted in the week before `day` whose history has at least one winner."""
    start = (date.fromisoformat(day) - timedelta(days=lookback_days)).isoformat()
    urls = [r["url_norm"] for r in db.query(
        "select url_norm from articles where day >= ? and day < ? order by url_norm", [start, day])]
    out = []
    for u in urls:
        h = article_history(db, u, cfg)
        if h.title and len(h.uris) and float(h.weights.max()) > 0:
            out.append(h)
    return out


def build_prompt(title: str, description: str | None = None) -> str:
    """The article's title and description from its link card, then a one-line ask."""
    parts = [f"Article: {title.strip()}"]
    if description and description.strip():
        parts.append(description.strip())
    parts.append("")
    parts.append(ASK)
    return "\n".join(parts)


def prompt_row(h: History, day: str, story_id: str, split: str) -> dict:
    """The prompt of article `h` on `day`, its source (with the story) as a dict."""
    return {"id": f"{APP}:{day}:{stable_rank(h.url_norm)[:16]}", "app": APP, "day": day, "split": split,
            "text": build_prompt(h.title, h.description),
            "source_json": {KEY: h.url_norm, "title": h.title, "description": h.description, "posts": len(h.uris),
                            "story_id": story_id}}


def article_stats(db: sqlite_utils.Database, run: str, day: str, window_days: int) -> dict[str, ItemStats]:
    """Regret and variance per article over its scored groups in the `window_days` before `day`."""
    return item_stats(db, APP, run, day, window_days, KEY)


def pick_articles(db: sqlite_utils.Database, run: str, day: str, candidates: list[str], k: int, floor: float,
                  window_days: int, rng: np.random.Generator) -> list[str]:
    """Choose up to `k` of `candidates` (normalised URLs) and log every candidate's odds (`pick_items`)."""
    return pick_items(db, APP, run, day, candidates, k, floor, window_days, rng, KEY)


def choose_prompts(db: sqlite_utils.Database, run: str, day: str, cfg: Config, rng: np.random.Generator,
                   embedder: Embedder) -> list[dict]:
    """The day's article prompts (stored once per day; later calls return the stored set).

    The split is by story: articles about one story (linked by their link
    cards' similarity) are all held out or all trainable, and a trainable one
    whose card is within `leak_cosine` of a held-out article's or a panel
    prompt's is left out (a story the linking split in two).
    """
    stored = dbm.day_prompts(db, APP, day)
    if stored:
        return stored
    w = cfg.walter
    cands = candidate_articles(db, day, cfg)
    stories = article_stories(db, day, embedder, cfg)
    cards = {r["url_norm"]: f"{r['title'] or ''} {r['description'] or ''}".strip()
             for r in db.query("select url_norm, title, description from articles")}
    near = near_held_out(db, APP, embedder, [f"{h.title} {h.description or ''}".strip() for h in cands],
                         [(u, cards[u]) for u in stories if u in cards], stories, w.eval_every,
                         cfg.eval.leak_cosine, "description")
    evals, train_pool = split_candidates([h.url_norm for h in cands], stories, w.eval_every, w.articles_per_day,
                                         day, near)
    eval_urls = set(evals)
    picked = set(pick_articles(db, run, day, train_pool, w.articles_per_day - len(evals), w.curriculum_floor,
                               w.curriculum_days, rng))
    rows = [prompt_row(h, day, stories[h.url_norm], "eval" if h.url_norm in eval_urls else "train")
            for h in cands if h.url_norm in eval_urls or h.url_norm in picked]
    dbm.upsert_prompts(db, rows)
    return dbm.day_prompts(db, APP, day)


def walter_prompt(db: sqlite_utils.Database, h: History, embedder: Embedder, cfg: Config) -> dict:
    """The article's earliest stored prompt, else one built as choose_prompts would on the day after its
    first post (the split from its story)."""
    stored = dbm.first_prompt_with_source(db, APP, KEY, h.url_norm)
    if stored is not None:
        return stored
    first = db.execute("select min(day) from articles where url_norm = ?", [h.url_norm]).fetchone()[0]
    first = first or db.execute("select min(day) from bsky_posts where url_norm = ?", [h.url_norm]).fetchone()[0]
    day = (date.fromisoformat(first) + timedelta(days=1)).isoformat()
    story = article_stories(db, day, embedder, cfg).get(h.url_norm, h.url_norm)
    row = prompt_row(h, day, story, split_of(story, cfg.walter.eval_every))
    return {**row, "source_json": json.dumps(row["source_json"])}


def score_texts(db: sqlite_utils.Database, prompt: dict, texts: list[str], embedder: Embedder,
                cfg: Config) -> list[dict]:
    """Components (with "reward") of `texts` written for `prompt`'s article, against its history."""
    h = article_history(db, json.loads(prompt["source_json"])["url_norm"], cfg)
    if not h.uris:
        raise LookupError(f"article {h.url_norm} has no scorable history")
    post_vecs = embedder.encode(h.texts)
    bands = winner_bands(post_vecs, h.texts, h.authors, h.weights)
    post_points = point_vectors(h.texts, embedder)
    point_bands = winner_point_bands(post_points, h.texts, h.authors, h.weights)
    scored = []
    for t, v, own in zip(texts, embedder.encode(texts), point_vectors(texts, embedder)):
        restated = np.array([point_coverage(p, own) for p in post_points])
        scored.append(score_post(t, v, post_vecs, h.texts, h.weights, cfg.walter, bands, (restated, point_bands)))
    return scored


def post_metrics(comps: list[dict]) -> dict:
    """Walter's per-day metrics from the components of a day's scored posts: transfer, hashtag rate, copy
    rate, mean length in graphemes."""
    return {
        "transfer": mean_or_none([c["transfer"] for c in comps]),
        "hashtag_rate": mean_or_none([float(c["hashtags"] > 0) for c in comps]),
        "copy_rate": mean_or_none([c["copy"] for c in comps]),
        "graphemes": mean_or_none([c["graphemes"] for c in comps]),
    }
