"""The rollout log: query a run's stored completions and format them for reading.

`list_rollouts` answers "which completions scored best / worst on day D",
`rollout_detail` shows one completion with every reward component and the rest
of its group (the completions it was normalised against), and the two
formatters turn those into text for the terminal.
"""

from __future__ import annotations

import json
import re
from typing import Any

import sqlite_utils

from varro.engine import store
from varro.engine.core.errors import UserError

SORT_KEYS = store.ROLLOUT_SORT_KEYS


class RolloutNotFound(LookupError, UserError):
    """No rollout has the requested id."""

    def __init__(self, rollout_id: int):
        super().__init__(f"no rollout with id {rollout_id}")
        self.rollout_id = rollout_id


class SortKeyError(ValueError, UserError):
    """The sort key is not one of SORT_KEYS."""

    def __init__(self, key: str):
        super().__init__(f"cannot sort rollouts by {key!r}; allowed keys: {', '.join(SORT_KEYS)}")
        self.key = key


def _row(raw: dict[str, Any]) -> dict[str, Any]:
    row = dict(raw)
    row["components"] = json.loads(row.pop("components_json") or "{}")
    return row


def list_rollouts(
    db: sqlite_utils.Database,
    app: str,
    run: str,
    day: str | None = None,
    prompt: str | None = None,
    sort: str = "reward",
    best: int | None = None,
    worst: int | None = None,
) -> list[dict[str, Any]]:
    """The rollouts of `app`'s run `run`, highest `sort` key first (unscored ones last).

    `day` keeps one day; `prompt` keeps the prompts whose id starts with it.
    `best=N` keeps the N highest by the sort key, `worst=N` the N lowest (lowest
    first); both skip rollouts whose key is NULL. Each row carries its prompt
    text and a `components` dict. Raises SortKeyError for an unknown key and
    ValueError when both `best` and `worst` are given or either is below 1.
    """
    if sort not in SORT_KEYS:
        raise SortKeyError(sort)
    if best is not None and worst is not None:
        raise ValueError(f"give best or worst, not both (got best={best}, worst={worst})")
    limit = best if best is not None else worst
    if limit is not None and limit < 1:
        raise ValueError(f"best/worst must be at least 1, got {limit}")
    return [_row(r) for r in store.run_rollouts(db, app, run, day, prompt, sort, ascending=worst is not None,
                                                limit=limit)]


def rollout_detail(db: sqlite_utils.Database, rollout_id: int) -> dict[str, Any]:
    """One rollout with all its components, sampling settings, prompt text and its whole group.

    `group` lists every completion of the same run, day and prompt (this one
    included, `this: True`) by group index, with reward and advantage.
    Raises RolloutNotFound for an unknown id.
    """
    found = store.rollout_with_prompt(db, rollout_id)
    if found is None:
        raise RolloutNotFound(rollout_id)
    d = _row(found)
    d["sampling"] = json.loads(d.pop("sampling_json") or "{}")
    d["group"] = [{**g, "this": g["id"] == d["id"]}
                  for g in store.rollout_group(db, d["run"], d["day"], d["prompt_id"])]
    return d


_NEWLINES = re.compile(r"\r\n|\r|\n")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str | None) -> str:
    """`text` with control characters (but newline and tab) written as \\xNN: model output is
    untrusted and must not drive the terminal through escape sequences."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text or "")


def flatten(text: str | None) -> str:
    """One line: newlines shown as ↵, tabs as spaces, control characters escaped."""
    return printable(_NEWLINES.sub(" ↵ ", text or "").replace("\t", " "))


def shorten(text: str | None, width: int) -> str:
    """`text` flattened to one line and cut to `width` characters, ending in … when cut."""
    flat = flatten(text)
    if width <= 0:
        return ""
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _num(value: Any, width: int = 7) -> str:
    if value is None:
        return f"{'-':>{width}}"
    return f"{value:>{width}.3f}"


def format_table(rows: list[dict[str, Any]], width: int = 120, components: tuple[str, ...] = ()) -> str:
    """A fixed-width table, one line per rollout, at most `width` characters wide.

    Columns: id, day, prompt and completion (shortened, newlines flattened),
    reward, `components` (the app's main ones, App.main_components), advantage.
    """
    if not rows:
        return "(no rollouts)"
    comps = components
    id_w = max(2, max(len(str(r["id"])) for r in rows))
    fixed = [("reward", 7), *((c[:9], max(7, len(c[:9]))) for c in comps), ("advantage", 9)]
    used = id_w + 1 + 10 + 1 + sum(w + 1 for _, w in fixed) + 1
    free = max(20, width - used)
    prompt_w = free // 3
    completion_w = free - prompt_w
    head = (f"{'id':>{id_w}} {'day':<10} {'prompt':<{prompt_w}} {'completion':<{completion_w}} "
            + " ".join(f"{name:>{w}}" for name, w in fixed))
    lines = [head]
    for r in rows:
        values = [r["reward"], *(r["components"].get(c) for c in comps), r["advantage"]]
        lines.append(
            f"{r['id']:>{id_w}} {r['day']:<10} {shorten(r['prompt'], prompt_w):<{prompt_w}} "
            f"{shorten(r['completion'], completion_w):<{completion_w}} "
            + " ".join(_num(v, w) for v, (_, w) in zip(values, fixed)))
    return "\n".join(lines)


def format_detail(d: dict[str, Any], width: int = 120) -> str:
    """A rollout_detail() as text: header, prompt, completion, every component, sampling, the group."""
    lines = [
        f"rollout {d['id']}  {d['app']}  run {d['run']}  day {d['day']}  split {d['split']}  "
        f"checkpoint {d['checkpoint']}  group index {d['group_index']}",
        f"reward {_num(d['reward'], 0)}  advantage {_num(d['advantage'], 0)}  "
        f"tokens {d['completion_tokens']}  finish {d['finish_reason']}",
        f"prompt {d['prompt_id']}:",
        *("  " + printable(line) for line in _NEWLINES.split(d["prompt"] or "")),
        "completion:",
        *("  " + printable(line) for line in _NEWLINES.split(d["completion"] or "")),
        "components:",
    ]
    if not d["components"]:
        lines.append("  (not scored yet)")
    name_w = max((len(k) for k in d["components"]), default=0)
    lines += [f"  {k:<{name_w}}  {_num(v, 0)}" for k, v in sorted(d["components"].items())]
    lines.append("sampling: " + json.dumps(d["sampling"], sort_keys=True))
    lines.append(f"group ({len(d['group'])} completions of this prompt on {d['day']}):")
    text_w = max(20, width - 40)
    lines.append(f"  {'idx':>3} {'id':>8} {'reward':>7} {'advantage':>9}  completion")
    for g in d["group"]:
        mark = "*" if g["this"] else " "
        lines.append(f" {mark}{g['group_index']:>3} {g['id']:>8} {_num(g['reward'])} {_num(g['advantage'], 9)}  "
                     f"{shorten(g['completion'], text_w)}")
    return "\n".join(lines)
