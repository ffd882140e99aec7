"""Walter's daily cycle: `walter step --date D`.

1. ingest (search posts linking to the news domains), refresh counts of posts
   that reached the fixed age, update the authors' baselines;
2. choose the day's articles: candidates are articles whose posts have final
   counts and at least one post that beat its author's usual; 1 in
   `eval_every` articles is held out for eval; the rest are picked by the
   curriculum;
3. sample G posts per article from the latest checkpoint before D;
4. score them against the article's history (the reward is immediate);
5. take the GSPO updates on the training groups and write checkpoint D.

Stages check what is done: a day with a checkpoint is not sampled or trained
again, and a day whose groups were sampled but not trained (a crash) trains on
the stored groups instead of sampling new ones.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Callable

import numpy as np
import sqlite_utils

from varro.engine import checkpoints
from varro.engine import store as dbm
from varro.engine.config import Config
from varro.engine.embed import Embedder
from varro.engine.policy import Policy
from varro.engine.rollouts import score_pending
from varro.engine.guards import guarded_training
from varro.engine.stories import Item, assign_stories, is_held_out, too_close
from varro.engine.voice import voice_stage
from varro.engine.metrics import day_metrics as shared_day_metrics, mean_or_none
from varro.engine.progress import NULL_PROGRESS, Progress

from .curriculum import pick_articles
from .ingest import baseline_stats
from .reward import engagement, fair_weight, score_post
from .task import build_prompt

APP = "walter"


@dataclass(eq=False)
class History:
    """An article's historical posts with final counts, and their baseline-normalised weights."""
    url_norm: str
    title: str
    description: str
    uris: list[str]
    texts: list[str]
    weights: np.ndarray


def count_weights(cfg: Config) -> dict[str, float]:
    w = cfg.walter
    return {"like": w.like_weight, "repost": w.repost_weight, "reply": w.reply_weight, "quote": w.quote_weight}


def article_history(db: sqlite_utils.Database, url_norm: str, cfg: Config) -> History:
    rows = list(db.query(
        "select uri, author_did, text, link_title, link_description, like_count, repost_count, reply_count, "
        "quote_count, counts_age_hours from bsky_posts where url_norm = ? and coalesce(deleted, 0) = 0 and counts_final = 1 "
        "order by uri", [url_norm]))
    uris, texts, weights = [], [], []
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
        weights.append(fair_weight(e, b, cfg.walter))
    return History(url_norm, title, description, uris, texts, np.array(weights, dtype=np.float64))


def _rank(key: str) -> str:
    return hashlib.sha1(key.encode()).hexdigest()


def article_stories(db: sqlite_utils.Database, day: str, embedder: Embedder, cfg: Config,
                    lookback_days: int = 7) -> dict[str, str]:
    """url_norm -> story id for the articles first posted before `day` within the lookback and the story
    window (varro.stories on title + description), linking the new ones."""
    from datetime import timedelta

    start = (date.fromisoformat(day) - timedelta(days=lookback_days + cfg.eval.story_window_days)).isoformat()
    items = [Item(r["url_norm"], r["day"], f"{r['title'] or ''} {r['description'] or ''}".strip())
             for r in db.query("select url_norm, day, title, description from articles where day >= ? and day < ? "
                               "order by day, url_norm", [start, day])]
    return assign_stories(db, APP, items, embedder, cfg.eval.story_threshold, cfg.eval.story_window_days)


def near_held_out(db: sqlite_utils.Database, day: str, cands: list[History], stories: dict[str, str],
                  embedder: Embedder, cfg: Config) -> list[bool]:
    """Per candidate article: is its card at least `leak_cosine` from a held-out article of the window or any
    run's Walter panel prompt? Such an article is never trained on (a story the linking split in two)."""
    texts = {r["url_norm"]: f"{r['title'] or ''} {r['description'] or ''}".strip()
             for r in db.query("select url_norm, title, description from articles")}
    held = [texts[u] for u, sid in stories.items() if u in texts and is_eval_article(sid, cfg.walter.eval_every)]
    held += [f"{s['title']} {s.get('description') or ''}".strip() for s in (json.loads(r[0]) for r in db.execute(
        "select p.source_json from panel n join prompts p on p.id = n.prompt_id where p.app = ?", [APP]))]
    if not held or not cands:
        return [False] * len(cands)
    mine = embedder.encode([f"{h.title} {h.description or ''}".strip() for h in cands])
    return too_close(mine, embedder.encode(held), cfg.eval.leak_cosine).tolist()


def is_eval_article(story_id: str, eval_every: int) -> bool:
    """A fixed 1 in `eval_every` of all stories (varro.stories), by hash: never trained on."""
    return is_held_out(story_id, eval_every)


def candidate_articles(db: sqlite_utils.Database, day: str, cfg: Config, lookback_days: int = 7) -> list[History]:
    """Articles first posted in the week before `day` whose history has at least one winner."""
    from datetime import timedelta

    start = (date.fromisoformat(day) - timedelta(days=lookback_days)).isoformat()
    urls = [r["url_norm"] for r in db.query(
        "select url_norm from articles where day >= ? and day < ? order by url_norm", [start, day])]
    out = []
    for u in urls:
        h = article_history(db, u, cfg)
        if h.title and len(h.uris) and float(h.weights.max()) > 0:
            out.append(h)
    return out


def choose_prompts(db: sqlite_utils.Database, run: str, day: str, cfg: Config, rng: np.random.Generator,
                   embedder: Embedder) -> list[dict]:
    """The day's article prompts (stored once per day; later calls return the stored set).

    The split is by story: articles about one story (linked by their link
    cards' similarity) are all held out or all trainable.
    """
    stored = list(db.query("select * from prompts where app = ? and day = ? order by id", [APP, day]))
    if stored:
        return stored
    cands = candidate_articles(db, day, cfg)
    stories = article_stories(db, day, embedder, cfg)
    held = {h.url_norm for h in cands if is_eval_article(stories[h.url_norm], cfg.walter.eval_every)}
    evals = [h for h in cands if h.url_norm in held]
    evals = sorted(evals, key=lambda h: _rank(day + h.url_norm))[: max(1, cfg.walter.articles_per_day
                                                                       // cfg.walter.eval_every)]
    eval_urls = {h.url_norm for h in evals}
    train_pool = [h for h, near in zip(cands, near_held_out(db, day, cands, stories, embedder, cfg))
                  if h.url_norm not in held and not near]
    k = cfg.walter.articles_per_day - len(evals)
    picked = set(pick_articles(db, run, day, [h.url_norm for h in train_pool], k, cfg.walter.curriculum_floor,
                               cfg.walter.curriculum_days, rng))
    rows = [
        {"id": f"{APP}:{day}:{_rank(h.url_norm)[:16]}", "app": APP, "day": day,
         "split": "eval" if h.url_norm in eval_urls else "train",
         "text": build_prompt(h.title, h.description),
         "source_json": {"url_norm": h.url_norm, "title": h.title, "description": h.description,
                         "posts": len(h.uris), "story_id": stories[h.url_norm]}}
        for h in cands if h.url_norm in eval_urls or h.url_norm in picked
    ]
    dbm.upsert_prompts(db, rows)
    return list(db.query("select * from prompts where app = ? and day = ? order by id", [APP, day]))


def score_groups(db: sqlite_utils.Database, groups: list[list], embedder: Embedder, cfg: Config) -> int:
    """Score unscored groups against their article's history; returns how many posts were scored."""
    prompts = {p["id"]: p for p in db.query("select * from prompts where app = ?", [APP])}
    return score_pending(db, groups, prompts, score_texts, embedder, cfg)


def score_texts(db: sqlite_utils.Database, prompt: dict, texts: list[str], embedder: Embedder,
                cfg: Config) -> list[dict]:
    """Components (with "reward") of `texts` written for `prompt`'s article, against its history."""
    h = article_history(db, json.loads(prompt["source_json"])["url_norm"], cfg)
    if not h.uris:
        raise LookupError(f"article {h.url_norm} has no scorable history")
    post_vecs = embedder.encode(h.texts)
    return [score_post(t, v, post_vecs, h.texts, h.weights, cfg.walter)
            for t, v in zip(texts, embedder.encode(texts))]


def walter_human_items(cfg: Config):
    """(db, day) -> the human text `day`'s posts are rewarded against: the winning posts (weight > 0) of the
    day's articles, as (uri, text)."""
    def items(db: sqlite_utils.Database, day: str) -> list[tuple[str, str]]:
        out = []
        for p in db.query("select source_json from prompts where app = ? and day = ? order by id", [APP, day]):
            h = article_history(db, json.loads(p["source_json"])["url_norm"], cfg)
            out += [(u, t) for u, t, w in zip(h.uris, h.texts, h.weights) if w > 0]
        return out

    return items


@dataclass
class StepResult:
    day: str
    ingested: int = 0
    sampled: int = 0
    scored: int = 0
    steps: int = 0
    checkpoint: str = ""
    skipped: bool = False  # a day with no data: nothing sampled, trained or checkpointed
    notes: list[str] = field(default_factory=list)


def step(
    db: sqlite_utils.Database,
    cfg: Config,
    run: str,
    run_path: Path,
    day: str,
    embedder: Embedder,
    ingest: Callable[[sqlite_utils.Database, str], int],
    progress: Progress = NULL_PROGRESS,
) -> StepResult:
    """Run Walter's whole cycle for `day`; `ingest(db, day)` stores posts, counts and baselines."""
    res = StepResult(day=day)
    with progress.stage("ingest") as advance:
        res.ingested = ingest(db, day)
        advance(res.ingested)
    if (checkpoints.checkpoints_dir(run_path) / day / checkpoints.METADATA).is_file():
        res.checkpoint = day
        res.notes.append(f"checkpoint {day} exists: not sampling or training again")
        return res
    stored = db.execute("select (select count(*) from bsky_posts where day = ?) + "
                        "(select count(*) from prompts where app = ? and day = ?)", [day, APP, day]).fetchone()[0]
    if not stored and not candidate_articles(db, day, cfg):
        res.skipped = True
        res.notes.append(f"skipped: no data for {day} (nothing ingested and no article with a scorable history; "
                         "no checkpoint written)")
        return res
    policy = Policy.open(cfg, run_path, before_day=day)
    prompts = choose_prompts(db, run, day, cfg, policy.trainer.rng, embedder)
    if not prompts:
        res.notes.append(f"no article with a scorable history on {day}: an empty day")
    have = {r["prompt_id"] for r in db.query(
        "select prompt_id from rollouts where run = ? and day = ? group by prompt_id having count(*) = ?",
        [run, day, cfg.sampling.group_size])}
    todo = [(p["id"], p["text"]) for p in prompts if p["id"] not in have]
    if todo:
        seed = cfg.train.seed * 1_000_003 + date.fromisoformat(day).toordinal()
        with progress.stage("sampling", total=len(todo) * cfg.sampling.group_size) as advance:
            groups = policy.sample(todo, seed=seed, on_done=advance)
        dbm.insert_rollouts(db, run, day, policy.checkpoint, groups, policy.sampling_settings())
        res.sampled = sum(len(g) for g in groups)
    groups = dbm.load_groups(db, run, day)
    with progress.stage("scoring") as advance:
        res.scored = score_groups(db, groups, embedder, cfg)
        advance(res.scored)
    with progress.stage("voice") as advance:  # the day's posts and the winners they are rewarded against
        advance(voice_stage(db, APP, run, day, policy, walter_human_items(cfg), embedder, [day])["completions"])
    train_ids = {p["id"] for p in prompts if p["split"] == "train"}
    train_groups = [g for g in groups if g[0].prompt_id in train_ids]
    policy, rows, notes = guarded_training(db, APP, run, day, policy, train_groups, cfg, progress,
                                           lambda: Policy.open(cfg, run_path, before_day=day))
    res.notes.extend(notes)
    dbm.insert_steps(db, run, day, rows)
    dbm.save_scores(db, groups)
    res.steps = len(rows)
    policy.save(day, extra={"run": run, "app": APP, "steps": len(rows)})
    res.checkpoint = day
    return res


def day_metrics(db: sqlite_utils.Database, run: str, day: str) -> dict:
    """Reward mean/std (train), eval reward, hashtag rate, copy rate, mean length, KL and clip fraction."""
    return shared_day_metrics(db, APP, run, day, day, lambda comps: {
        "transfer": mean_or_none([c["transfer"] for c in comps]),
        "hashtag_rate": mean_or_none([float(c["hashtags"] > 0) for c in comps]),
        "copy_rate": mean_or_none([c["copy"] for c in comps]),
        "graphemes": mean_or_none([c["graphemes"] for c in comps]),
    })
