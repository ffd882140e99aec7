"""tally's red team: the cheapest ways to score without writing, beside honest references.

The runner is varro.engine.rewards.redteam. An honest reference names its group:
    {"app": "tally", "group": "<group key>", "text": "..."}
The shipped sample's are in data/sample/tally/honest.jsonl, used when the
references given (by default data/sample/honest.jsonl) have none for tally.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import sqlite_utils

from varro.engine.core.config import Config
from varro.engine.embed.embedders import Embedder
from varro.engine.rewards.redteam import Case, Hack, HackError, RedTeam, load_references, with_other_stories

from .ingest import ingest_file
from .sample import SAMPLE_FILE, SAMPLE_HONEST, sample_days
from .settings import TallyConfig
from .task import APP, KEY, History, group_history, score_texts, tally_prompt


def find_group(db: sqlite_utils.Database, group: str, cfg: Config) -> History:
    """The history of `group` as the day after its last item sees it. Raises HackError for a group with no
    stored item, or none that can teach."""
    last = db.execute("select max(day) from tally_items where group_key = ?", [group]).fetchone()[0]
    if last is None:
        raise HackError(f"no stored item of the group {group!r}")
    h = group_history(db, group, (date.fromisoformat(last) + timedelta(days=1)).isoformat(), cfg)
    if not h.ids:
        raise HackError(f"the group {group!r} has no item with known counts and an author baseline")
    return h


def tally_cases(db: sqlite_utils.Database, refs: list[dict], embedder: Embedder,
                cfg: Config) -> tuple[list[Case], list[str]]:
    """The cases of the references whose group has a stored history; notes say why others did not."""
    refs = refs or load_references(SAMPLE_HONEST, APP)
    cases, notes = [], []
    for ref in refs:
        try:
            h = find_group(db, ref.get(KEY, ""), cfg)
        except HackError as e:
            notes.append(str(e))
            continue
        cases.append(Case(tally_prompt(db, h, embedder, cfg), ref["text"],
                          data={"top": h.texts[int(np.argmax(h.weights))], "title": h.title}))
    return with_other_stories(cases), notes


def load_tally_sample(db: sqlite_utils.Database) -> None:
    ingest_file(db, SAMPLE_FILE, sample_days()[-1], TallyConfig())


TALLY_CATALOGUE: tuple[Hack, ...] = (
    Hack("top-item", "the group's top-weighted prior item, verbatim", lambda c: c.data["top"]),
    Hack("top-item-drop5", "the top item with every 5th word dropped",
         lambda c: " ".join(w for i, w in enumerate(c.data["top"].split(), 1) if i % 5)),
    Hack("title", "the group's title, verbatim", lambda c: c.data["title"]),
    Hack("blank", "nothing at all", lambda c: ""),
    Hack("other-story", "another group's honest text, given for this one", lambda c: c.other),
)

TALLY = RedTeam(APP, TALLY_CATALOGUE, score_texts, tally_cases, load_tally_sample)
