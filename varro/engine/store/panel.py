"""A run's evaluation panel (varro.engine.eval.panel) and its cached scores. Tables `panel` and `panel_scores`."""

from __future__ import annotations

import json

import sqlite_utils

PANEL_SCORES_KEY = ("run", "checkpoint", "prompt_id", "seed", "samples", "sample_index")


def panel_members(db: sqlite_utils.Database, app: str, run: str) -> list[dict]:
    """The prompt rows of `run`'s panel of `app`'s prompts, each with its `position` and `story_id`, in
    panel order."""
    return list(db.query(
        "select p.*, n.position, n.story_id from panel n join prompts p on p.id = n.prompt_id "
        "where n.run = ? and p.app = ? order by n.position", [run, app]))


def add_panel_members(db: sqlite_utils.Database, rows: list[dict]) -> None:
    """Append members ({"run", "position", "prompt_id", "story_id", "added_utc"}) to their runs' panels."""
    with db.atomic():
        db["panel"].insert_all(rows, pk=("run", "prompt_id"))


def panel_sources(db: sqlite_utils.Database, app: str) -> list[dict]:
    """The parsed source_json of every panel prompt of `app`, any run's (one per panel row), by run and
    position: what no training prompt of the app may come close to."""
    return [json.loads(r[0] or "{}") for r in db.execute(
        "select p.source_json from panel n join prompts p on p.id = n.prompt_id where p.app = ? "
        "order by n.run, n.position", [app])]


def scored_panel_prompts(db: sqlite_utils.Database, run: str, checkpoint: str, seed: int,
                         samples: int) -> set[str]:
    """The prompt ids whose `samples` cells of (`run`, `checkpoint`, `seed`, `samples`) are all cached."""
    return {r["prompt_id"] for r in db.query(
        "select prompt_id from panel_scores where run = ? and checkpoint = ? and seed = ? and samples = ? "
        "group by prompt_id having count(*) = ?", [run, checkpoint, seed, samples, samples])}


def upsert_panel_scores(db: sqlite_utils.Database, rows: list[dict]) -> None:
    """Cache panel cells ({"run", "checkpoint", "prompt_id", "seed", "samples", "sample_index", "completion",
    "reward", "components_json", "created_utc"}), replacing a cell with the same key."""
    with db.atomic():
        db["panel_scores"].upsert_all(rows, pk=PANEL_SCORES_KEY)


def panel_cells(db: sqlite_utils.Database, run: str, checkpoint: str, prompt_id: str, seed: int,
                samples: int) -> list[dict]:
    """The cached {"completion", "reward"} of one panel prompt under (`checkpoint`, `seed`, `samples`), by
    sample index ([] before it is scored)."""
    return list(db.query(
        "select completion, reward from panel_scores where run = ? and checkpoint = ? and prompt_id = ? "
        "and seed = ? and samples = ? order by sample_index", [run, checkpoint, prompt_id, seed, samples]))


def main_panel_draw(db: sqlite_utils.Database, run: str) -> tuple[int, int] | None:
    """(seed, samples) of `run`'s most cached panel draw (the one with the most cells); None before any."""
    row = db.execute("select seed, samples from panel_scores where run = ? group by seed, samples "
                     "order by count(*) desc limit 1", [run]).fetchone()
    return None if row is None else (row[0], row[1])


def complete_checkpoints(db: sqlite_utils.Database, run: str, seed: int, samples: int,
                         prompt_ids: list[str]) -> list[str]:
    """The checkpoints of `run` with every cell of `prompt_ids` cached under (`seed`, `samples`), unordered."""
    if not prompt_ids:
        return []
    marks = ",".join("?" * len(prompt_ids))
    return [r[0] for r in db.execute(
        f"select checkpoint from panel_scores where run = ? and seed = ? and samples = ? and prompt_id in "
        f"({marks}) group by checkpoint having count(*) = ?",
        [run, seed, samples, *prompt_ids, len(prompt_ids) * samples])]


def panel_means(db: sqlite_utils.Database, run: str, seed: int, samples: int, prompt_ids: list[str],
                checkpoints: list[str]) -> dict[str, float]:
    """Each of `checkpoints`' mean cached reward over the cells of `prompt_ids` under (`seed`, `samples`)."""
    if not prompt_ids or not checkpoints:
        return {}
    p_marks, c_marks = ",".join("?" * len(prompt_ids)), ",".join("?" * len(checkpoints))
    return {r[0]: r[1] for r in db.execute(
        f"select checkpoint, avg(reward) from panel_scores where run = ? and seed = ? and samples = ? and "
        f"prompt_id in ({p_marks}) and checkpoint in ({c_marks}) group by checkpoint",
        [run, seed, samples, *prompt_ids, *checkpoints])}
