"""Varro's daily cycle: `varro step --date D`.

1. ingest D's headlines (RSS feeds, or the shipped sample);
2. score the forecasts made on D-1 against D's headlines;
3. take the GSPO updates on D-1's scored training groups;
4. write checkpoint D;
5. sample forecasts for D's prompts from checkpoint D (scored tomorrow).

Every stage checks what is already done, so running a day twice does no work
twice: headlines are keyed, only unscored rollouts are scored, a day with a
checkpoint is never trained again, and prompts that already have their group
are not sampled again.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Callable

import numpy as np
import sqlite_utils

from varro.engine import checkpoints
from varro.engine import store as dbm
from varro.engine.config import Config
from varro.engine.embed import Embedder
from varro.forecast.reward import build_prompt, score_forecast
from varro.forecast.headlines import headlines_for_day, load_sample_day
from varro.engine.rollouts import score_pending
from varro.engine.stories import Item, assign_stories, is_held_out, too_close
from varro.engine.voice import voice_stage
from varro.engine.distributed import SOLO, World, open_policy, rollouts_from_json, rollouts_to_json
from varro.engine.faults import failpoint
from varro.engine.guards import guarded_training
from varro.engine.metrics import day_metrics as shared_day_metrics, mean_or_none
from varro.engine.progress import NULL_PROGRESS, Progress

APP = "varro"


def previous_day(day: str) -> str:
    return (date.fromisoformat(day) - timedelta(days=1)).isoformat()


def _rank(key: str) -> str:
    return hashlib.sha1(key.encode()).hexdigest()


def headline_text(h: dict) -> str:
    return f"{h['title']} {h['summary'] or ''}".strip()


def headline_stories(db: sqlite_utils.Database, day: str, embedder: Embedder, cfg: Config) -> dict[str, str]:
    """Headline id -> story id for `day` and the window before it, linking `day`'s new headlines."""
    start = date.fromisoformat(day) - timedelta(days=cfg.eval.story_window_days)
    days = [(start + timedelta(days=k)).isoformat() for k in range(cfg.eval.story_window_days + 1)]
    items = [Item(h["id"], d, headline_text(h)) for d in days for h in headlines_for_day(db, d)]
    return assign_stories(db, APP, items, embedder, cfg.eval.story_threshold, cfg.eval.story_window_days)


def varro_human_items(db: sqlite_utils.Database, day: str) -> list[tuple[str, str]]:
    """The human text `day`'s forecasts are rewarded against: the next day's headlines (title and summary)."""
    return [(h["id"], headline_text(h)) for h in headlines_for_day(db, next_day(day))]


def near_held_out(db: sqlite_utils.Database, day: str, heads: list[dict], stories: dict[str, str],
                  embedder: Embedder, cfg: Config) -> list[bool]:
    """Per headline of `heads`: is it at least `leak_cosine` from a held-out item (a headline of a held-out
    story in the story window, or any run's panel prompt)? Such a headline is never trained on."""
    start = date.fromisoformat(day) - timedelta(days=cfg.eval.story_window_days)
    window = [h for k in range(cfg.eval.story_window_days + 1)
              for h in headlines_for_day(db, (start + timedelta(days=k)).isoformat())]
    held = [headline_text(h) for h in window if h["id"] in stories and story_split(stories[h["id"]], cfg) == "eval"]
    held += [f"{s['title']} {s.get('summary') or ''}".strip() for s in (json.loads(r[0]) for r in db.execute(
        "select p.source_json from panel n join prompts p on p.id = n.prompt_id where p.app = ?", [APP]))]
    if not held or not heads:
        return [False] * len(heads)
    return too_close(embedder.encode([headline_text(h) for h in heads]), embedder.encode(held),
                     cfg.eval.leak_cosine).tolist()


def story_split(story_id: str, cfg: Config) -> str:
    return "eval" if is_held_out(story_id, cfg.varro.eval_every) else "train"


def choose_prompts(db: sqlite_utils.Database, day: str, embedder: Embedder, cfg: Config) -> list[dict]:
    """The day's prompts: a diverse set of headlines, near-duplicates dropped, split by story.

    A headline's story (varro.stories) decides its split: one in `eval_every`
    stories is held out, so no story is both trained on and evaluated, and a
    training headline within `leak_cosine` of a held-out item is left out (a
    story the linking split in two). Chosen once per day and stored; later
    calls return the stored set.
    """
    stored = list(db.query("select * from prompts where app = ? and day = ? order by id", [APP, day]))
    if stored:
        return stored
    heads = sorted(headlines_for_day(db, day), key=lambda h: _rank(h["id"]))
    if not heads:
        return []
    stories = headline_stories(db, day, embedder, cfg)
    heads = [h for h, near in zip(heads, near_held_out(db, day, heads, stories, embedder, cfg))
             if not (near and story_split(stories[h["id"]], cfg) == "train")]
    vecs = embedder.encode([h["title"] for h in heads])
    chosen: list[int] = []
    for i in range(len(heads)):
        if all(float(vecs[i] @ vecs[j]) < cfg.varro.dedup_threshold for j in chosen):
            chosen.append(i)
        if len(chosen) == cfg.varro.prompts_per_day:
            break
    picked = [heads[i] for i in chosen]
    rows = [
        {
            "id": f"{APP}:{day}:{h['id']}",
            "app": APP,
            "day": day,
            "split": story_split(stories[h["id"]], cfg),
            "text": build_prompt(h["title"], h["summary"]),
            "source_json": {"headline_id": h["id"], "title": h["title"], "summary": h["summary"],
                            "source": h["source"], "link": h["link"], "story_id": stories[h["id"]]},
        }
        for h in picked
    ]
    dbm.upsert_prompts(db, rows)
    return list(db.query("select * from prompts where app = ? and day = ? order by id", [APP, day]))


def score_forecasts(db: sqlite_utils.Database, run: str, day: str, next_day: str, embedder: Embedder,
                    cfg: Config) -> int:
    """Score the unscored forecasts of `day` against `next_day`'s headlines; returns how many were scored.

    Forecasts stay unscored (NULL) when `next_day` has no headlines yet.
    """
    if not headlines_for_day(db, next_day):
        return 0
    prompts = {p["id"]: p for p in db.query("select * from prompts where app = ? and day = ?", [APP, day])}
    return score_pending(db, dbm.load_groups(db, run, day), prompts, score_texts, embedder, cfg)


class PromptError(ValueError):
    """A prompt row lacks what scoring needs (its source's story id)."""


def next_day(day: str) -> str:
    return (date.fromisoformat(day) + timedelta(days=1)).isoformat()


def forecast_targets(db: sqlite_utils.Database, prompt: dict, embedder: Embedder,
                     cfg: Config) -> tuple[list[dict], bool]:
    """(targets, fallback): the next-day headlines a forecast for `prompt` is scored against.

    The next day's headlines of the prompt's own story (its split's by
    construction, so a training prompt never targets a held-out story). When
    the story did not develop: the next-day headlines of the prompt's split at
    cosine >= `fallback_threshold` to the source, with fallback True; possibly
    none. Raises LookupError when the next day has no headlines yet, PromptError
    when the prompt has no story id.
    """
    nxt = next_day(prompt["day"])
    heads = headlines_for_day(db, nxt)
    if not heads:
        raise LookupError(f"no headlines for {nxt}: forecasts made on {prompt['day']} cannot be scored yet")
    s = json.loads(prompt["source_json"]) if isinstance(prompt["source_json"], str) else prompt["source_json"]
    if not s.get("story_id") or prompt.get("split") not in ("train", "eval"):
        raise PromptError(f"prompt {prompt.get('id')!r} needs a story_id and a split to be scored, "
                          f"has story_id={s.get('story_id')!r}, split={prompt.get('split')!r}")
    stories = headline_stories(db, nxt, embedder, cfg)
    own = [h for h in heads if stories[h["id"]] == s["story_id"]]
    if own:
        return own, False
    # a training prompt may only fall back on training stories; a held-out one on any
    same_side = [h for h in heads if prompt["split"] == "eval" or story_split(stories[h["id"]], cfg) == "train"]
    if not same_side:
        return [], True
    sims = embedder.encode([headline_text(h) for h in same_side]) @ embedder.encode([headline_text(s)])[0]
    return [h for h, c in zip(same_side, sims) if c >= cfg.varro.fallback_threshold], True


def score_texts(db: sqlite_utils.Database, prompt: dict, texts: list[str], embedder: Embedder,
                cfg: Config) -> list[dict]:
    """Components (with "reward") of `texts` written for `prompt`, against the next-day headlines of
    its own story (`forecast_targets`; semantic is NULL when there are none and the forecast is paid
    for staying on its story instead, see varro.forecast).

    Raises LookupError when the next day has no headlines yet (the forecasts
    cannot be scored), PromptError for a prompt without a story id.
    """
    targets, fallback = forecast_targets(db, prompt, embedder, cfg)
    s = json.loads(prompt["source_json"]) if isinstance(prompt["source_json"], str) else prompt["source_json"]
    src_vec = embedder.encode([headline_text(s)])[0]
    none = np.zeros((0, len(src_vec)), dtype=np.float32)
    target_vecs = embedder.encode([headline_text(h) for h in targets]) if targets else none
    vecs = embedder.encode(texts) if texts else none
    return [score_forecast(t, s["title"], s["summary"], v, src_vec, target_vecs, cfg.varro, fallback)
            for t, v in zip(texts, vecs)]


def training_groups(db: sqlite_utils.Database, run: str, day: str) -> list[list]:
    """The scored groups of `day` whose prompt is in the training split."""
    train = {p["id"] for p in db.query("select id from prompts where app = ? and day = ? and split = 'train'",
                                       [APP, day])}
    return [g for g in dbm.load_groups(db, run, day)
            if g[0].prompt_id in train and all(r.reward is not None for r in g)]


@dataclass
class StepResult:
    day: str
    ingested: int = 0
    scored: int = 0
    steps: int = 0
    trained: bool = False
    checkpoint: str = ""
    sampled: int = 0
    skipped: bool = False  # a day with no data: nothing trained, sampled or checkpointed
    notes: list[str] = field(default_factory=list)


def step(
    db: sqlite_utils.Database | None,
    cfg: Config,
    run: str,
    run_path: Path,
    day: str,
    embedder: Embedder | None,
    ingest: Callable[[sqlite_utils.Database, str], int] | None = None,
    sample_seed: int | None = None,
    progress: Progress = NULL_PROGRESS,
    world: World = SOLO,
) -> StepResult:
    """Run the whole cycle for `day`. `ingest(db, day)` stores the day's headlines (default: the sample).

    Under `mlx.launch` every rank calls this; only rank 0 has `db` and `embedder`
    (see varro.distributed): the others train on their share of each minibatch
    and sample their share of the prompts.
    """
    res = StepResult(day=day)
    main = world.is_main
    prev = previous_day(day)
    if main:
        with progress.stage("ingest") as advance:
            res.ingested = (ingest or load_sample_day)(db, day)
            advance(res.ingested)
        failpoint("step.ingested")
        with progress.stage("scoring") as advance:
            res.scored = score_forecasts(db, run, prev, day, embedder, cfg)
            advance(res.scored)
    # no headlines for the day: nothing to score yesterday's forecasts with, no prompts, so no checkpoint
    if world.broadcast_json(main and not headlines_for_day(db, day)):
        res.skipped = True
        res.notes.append(f"skipped: no data for {day} (no headlines; no checkpoint written, {prev}'s forecasts "
                         "stay unscored)")
        return res

    done = world.broadcast_json(main and (checkpoints.checkpoints_dir(run_path) / day / checkpoints.METADATA).is_file())
    if done:
        after = (date.fromisoformat(day) + timedelta(days=1)).isoformat()
        policy = open_policy(cfg, run_path, after, world)
        res.notes.append(f"checkpoint {day} exists: not training again")
    else:
        policy = open_policy(cfg, run_path, day, world)
        groups = rollouts_from_json(world.broadcast_json(
            rollouts_to_json(training_groups(db, run, prev)) if main else None))
        policy, rows, notes = guarded_training(db, APP, run, day, policy, groups, cfg, progress,
                                               lambda: open_policy(cfg, run_path, day, world), world)
        res.notes.extend(notes)
        res.steps = len(rows)
        res.trained = bool(rows)
        if main:
            dbm.insert_steps(db, run, day, rows)
            policy.save(day, extra={"run": run, "app": APP, "trained_on": prev, "steps": len(rows)})
    res.checkpoint = day
    failpoint("step.checkpointed")

    todo = []
    if main:
        prompts = choose_prompts(db, day, embedder, cfg)
        have = {r["prompt_id"] for r in db.query(
            "select prompt_id from rollouts where run = ? and day = ? group by prompt_id having count(*) = ?",
            [run, day, cfg.sampling.group_size])}
        todo = [(p["id"], p["text"]) for p in prompts if p["id"] not in have]
    todo = world.broadcast_json(todo)
    if todo:
        seed = sample_seed if sample_seed is not None else (
            cfg.train.seed * 1_000_003 + date.fromisoformat(day).toordinal())
        mine = todo[world.rank :: world.size]  # each rank samples its share of the groups
        with progress.stage("sampling", total=len(mine) * cfg.sampling.group_size) as advance:
            groups = policy.sample(mine, seed=seed + world.rank, on_done=advance) if mine else []
        gathered = world.gather_json(rollouts_to_json(groups))
        if main:
            groups = [g for part in gathered for g in rollouts_from_json(part)]
            dbm.insert_rollouts(db, run, day, day, groups, policy.sampling_settings())
            res.sampled = sum(len(g) for g in groups)
    if main:  # the voice: the day's completions and yesterday's targets (today's headlines), once each
        with progress.stage("voice") as advance:
            advance(voice_stage(db, APP, run, day, policy, varro_human_items, embedder, [prev])["completions"])
    return res


def day_metrics(db: sqlite_utils.Database, run: str, day: str) -> dict:
    """The metrics of the forecasts made on `day` (scored with the next day's headlines).

    quality: mean format score; zeros: share with format 0; leak: share with any
    leak; words: mean length; eval_reward: mean reward of held-out prompts.
    KL and clip fraction come from the updates that trained on these forecasts.
    """
    return shared_day_metrics(db, APP, run, day, (date.fromisoformat(day) + timedelta(days=1)).isoformat(),
                              lambda comps: {
                                  "semantic": mean_or_none([c["semantic"] for c in comps if c["semantic"] is not None]),
                                  "quality": mean_or_none([c["format"] for c in comps]),
                                  "zeros": mean_or_none([float(c["format"] == 0.0) for c in comps]),
                                  "leak": mean_or_none([float(c["leak"] > 0) for c in comps]),
                                  "echo": mean_or_none([c["echo"] for c in comps]),
                                  "words": mean_or_none([c["words"] for c in comps]),
                              })


VARRO_COLUMNS = ["day", "scored", "reward_mean", "reward_std", "eval_reward", "semantic", "quality", "zeros",
                 "leak", "echo", "words", "kl", "clip_fraction"]


def format_metrics(rows: list[dict], cols: list[str] = VARRO_COLUMNS) -> str:
    """A fixed-width table of per-day metrics; '-' where a value is unknown."""
    head = "  ".join(f"{c:>11}" for c in cols)
    lines = [head]
    for m in rows:
        cells = []
        for c in cols:
            v = m.get(c)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                cells.append(f"{'-':>11}")
            elif isinstance(v, float):
                cells.append(f"{v:>11.3f}")
            else:
                cells.append(f"{v!s:>11}")
        lines.append("  ".join(cells))
    return "\n".join(lines)
