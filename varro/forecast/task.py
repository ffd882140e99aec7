"""Varro's task: the day's headlines as prompts, split by story, and the forecasts' scoring.

The day's headlines become prompts, a diverse set split by story (one story in
`eval_every` is held out); a forecast made on day D is scored against D+1's
headlines of its own story (`forecast_targets`), so it can only be scored once
D+1 is ingested: Varro's reward delay is one day.
"""

from __future__ import annotations

import json
from datetime import date, timedelta

import numpy as np
import sqlite_utils

from varro.engine import store as dbm
from varro.engine.core.config import Config
from varro.engine.core.dates import shift
from varro.engine.embed.embedders import Embedder
from varro.engine.eval.metrics import mean_or_none
from varro.engine.eval.panel import prompt_text
from varro.engine.prompts.split import near_held_out, split_of, stable_rank
from varro.engine.prompts.stories import Item, assign_stories
from varro.forecast.headlines import headlines_for_day
from varro.forecast.reward import INSTRUCTION, score_forecast
from varro.engine.core.errors import UserError


APP = "varro"


def headline_text(h: dict) -> str:
    return f"{h['title']} {h['summary'] or ''}".strip()


def story_window(db: sqlite_utils.Database, day: str, cfg: Config) -> list[dict]:
    """The headlines of `day` and of the story window before it, oldest day first."""
    start = date.fromisoformat(day) - timedelta(days=cfg.eval.story_window_days)
    return [h for k in range(cfg.eval.story_window_days + 1)
            for h in headlines_for_day(db, (start + timedelta(days=k)).isoformat())]


def headline_stories(db: sqlite_utils.Database, day: str, embedder: Embedder, cfg: Config) -> dict[str, str]:
    """Headline id -> story id for `day` and the window before it, linking `day`'s new headlines."""
    items = [Item(h["id"], h["day"], headline_text(h)) for h in story_window(db, day, cfg)]
    return assign_stories(db, APP, items, embedder, cfg.eval.story_threshold, cfg.eval.story_window_days)


def varro_human_items(db: sqlite_utils.Database, day: str) -> list[tuple[str, str]]:
    """The human text `day`'s forecasts are rewarded against: the next day's headlines (title and summary)."""
    return [(h["id"], headline_text(h)) for h in headlines_for_day(db, shift(day, 1))]


def story_split(story_id: str, cfg: Config) -> str:
    return split_of(story_id, cfg.varro.eval_every)


def build_prompt(title: str, summary: str | None = None) -> str:
    """The user message: the headline, its summary when present, then the short instruction."""
    parts = [f"Headline: {title.strip()}"]
    if summary and summary.strip():
        parts.append(f"Summary: {summary.strip()}")
    parts.append("")
    parts.append(INSTRUCTION)
    return "\n".join(parts)


def prompt_row(h: dict, story_id: str, cfg: Config) -> dict:
    """The prompt of headline `h` of story `story_id`, its source (with the story) as a dict."""
    return {
        "id": f"{APP}:{h['day']}:{h['id']}",
        "app": APP,
        "day": h["day"],
        "split": story_split(story_id, cfg),
        "text": build_prompt(h["title"], h["summary"]),
        "source_json": {"headline_id": h["id"], "title": h["title"], "summary": h["summary"],
                        "source": h["source"], "link": h["link"], "story_id": story_id},
    }


def choose_prompts(db: sqlite_utils.Database, day: str, embedder: Embedder, cfg: Config) -> list[dict]:
    """The day's prompts: a diverse set of headlines, near-duplicates dropped, split by story.

    A headline's story (varro.engine.prompts.stories) decides its split: one in `eval_every`
    stories is held out, so no story is both trained on and evaluated, and a
    training headline within `leak_cosine` of a held-out item is left out (a
    story the linking split in two). Chosen once per day and stored; later
    calls return the stored set.
    """
    stored = dbm.day_prompts(db, APP, day)
    if stored:
        return stored
    heads = sorted(headlines_for_day(db, day), key=lambda h: stable_rank(h["id"]))
    if not heads:
        return []
    stories = headline_stories(db, day, embedder, cfg)
    near = near_held_out(db, APP, embedder, [headline_text(h) for h in heads],
                         [(h["id"], headline_text(h)) for h in story_window(db, day, cfg)], stories,
                         cfg.varro.eval_every, cfg.eval.leak_cosine, "summary")
    heads = [h for h, n in zip(heads, near) if not (n and story_split(stories[h["id"]], cfg) == "train")]
    vecs = embedder.encode([h["title"] for h in heads])
    chosen: list[int] = []
    for i in range(len(heads)):
        if all(float(vecs[i] @ vecs[j]) < cfg.varro.dedup_threshold for j in chosen):
            chosen.append(i)
        if len(chosen) == cfg.varro.prompts_per_day:
            break
    dbm.upsert_prompts(db, [prompt_row(heads[i], stories[heads[i]["id"]], cfg) for i in chosen])
    return dbm.day_prompts(db, APP, day)


def varro_prompt(db: sqlite_utils.Database, headline: dict, embedder: Embedder, cfg: Config) -> dict:
    """The stored prompt of `headline` if it was chosen, else one built as choose_prompts would build it."""
    pid = f"{APP}:{headline['day']}:{headline['id']}"
    stored = dbm.prompts_by_id(db, [pid]).get(pid)
    if stored is not None:
        return stored
    row = prompt_row(headline, headline_stories(db, headline["day"], embedder, cfg)[headline["id"]], cfg)
    return {**row, "source_json": json.dumps(row["source_json"])}


class PromptError(ValueError, UserError):
    """A prompt row lacks what scoring needs (its source's story id)."""


def forecast_targets(db: sqlite_utils.Database, prompt: dict, embedder: Embedder,
                     cfg: Config) -> tuple[list[dict], bool]:
    """(targets, fallback): the next-day headlines a forecast for `prompt` is scored against.

    Only headlines of the prompt's side of the split count, and of those only
    the ones at least `leak_cosine` from every next-day headline and every
    prompt of the other side in the story window: a held-out prompt is never scored on what
    training may reward or was prompted with, nor a training prompt on what a
    held-out one is scored by or asked about. Of what is left,
    the next day's headlines of the prompt's own story; when the story did not
    develop, those at cosine >= `fallback_threshold` to the source, with
    fallback True; possibly none. Raises LookupError when the next day has no
    headlines yet, PromptError when the prompt has no story id.
    """
    nxt = shift(prompt["day"], 1)
    heads = headlines_for_day(db, nxt)
    if not heads:
        raise LookupError(f"no headlines for {nxt}: forecasts made on {prompt['day']} cannot be scored yet")
    s = json.loads(prompt["source_json"]) if isinstance(prompt["source_json"], str) else prompt["source_json"]
    if not s.get("story_id") or prompt.get("split") not in ("train", "eval"):
        raise PromptError(f"prompt {prompt.get('id')!r} needs a story_id and a split to be scored, "
                          f"has story_id={s.get('story_id')!r}, split={prompt.get('split')!r}")
    stories = headline_stories(db, nxt, embedder, cfg)
    mine = [story_split(stories[h["id"]], cfg) == prompt["split"] for h in heads]
    vecs = embedder.encode([headline_text(h) for h in heads])
    other = "train" if prompt["split"] == "eval" else "eval"
    since = (date.fromisoformat(prompt["day"]) - timedelta(days=cfg.eval.story_window_days)).isoformat()
    asked = [prompt_text(p) for p in dbm.split_prompts(db, APP, other)
             if since <= p["day"] <= nxt]  # a later prompt is kept from held-out items when it is chosen
    theirs = np.concatenate([vecs[[not m for m in mine]], embedder.encode(asked) if asked else vecs[:0]])
    clear = [h for h, m, v in zip(heads, mine, vecs) if m and not (len(theirs) and
                                                                 float(np.max(theirs @ v)) >= cfg.eval.leak_cosine)]
    own = [h for h in clear if stories[h["id"]] == s["story_id"]]
    if own or not clear:
        return own, not own
    sims = embedder.encode([headline_text(h) for h in clear]) @ embedder.encode([headline_text(s)])[0]
    return [h for h, c in zip(clear, sims) if c >= cfg.varro.fallback_threshold], True


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
    said = [x for h in targets for x in (h["title"], h["summary"] or "") if x.strip()]
    return [score_forecast(t, s["title"], s["summary"], v, src_vec, target_vecs, cfg.varro, fallback, said)
            for t, v in zip(texts, vecs)]


def forecast_metrics(comps: list[dict]) -> dict:
    """Varro's per-day metrics from the components of the forecasts made on a day (scored with the next
    day's headlines): semantic, quality (mean format score), zeros (share with format 0), leak (share with
    any leak), echo, words (mean length)."""
    return {
        "semantic": mean_or_none([c["semantic"] for c in comps if c["semantic"] is not None]),
        "quality": mean_or_none([c["format"] for c in comps]),
        "zeros": mean_or_none([float(c["format"] == 0.0) for c in comps]),
        "leak": mean_or_none([float(c["leak"] > 0) for c in comps]),
        "echo": mean_or_none([c["echo"] for c in comps]),
        "words": mean_or_none([c["words"] for c in comps]),
    }


VARRO_COLUMNS = ["day", "scored", "reward_mean", "reward_std", "eval_reward", "semantic", "quality", "zeros",
                 "leak", "echo", "words", "kl", "clip_fraction"]
