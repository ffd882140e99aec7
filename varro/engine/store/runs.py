"""A run's rows: the prompts it samples for, its rollouts, its optimizer steps and its guard events.

Tables `prompts`, `rollouts`, `steps` and `guards` (schema: varro.engine.store.schema).
"""

from __future__ import annotations

import json
from typing import Any, Iterable

import sqlite_utils

from varro.engine.core.faults import failpoint
from varro.engine.core.rollout import Rollout
from varro.engine.store.clock import utc_now

# --- prompts ----------------------------------------------------------------------------------------------


def upsert_prompts(db: sqlite_utils.Database, prompts: Iterable[dict[str, Any]]) -> None:
    """Store prompt rows by id (a dict or list `source_json` is written as JSON); an existing prompt keeps its
    `created_utc`."""
    rows = []
    for p in prompts:
        row = dict(p)
        row.setdefault("created_utc", utc_now())
        if isinstance(row.get("source_json"), (dict, list)):
            row["source_json"] = json.dumps(row["source_json"], sort_keys=True)
        rows.append(row)
    # created_utc of an existing prompt is kept: upsert only rewrites given columns.
    existing = {r["id"] for r in db.query("select id from prompts")} if rows else set()
    for row in rows:
        if row["id"] in existing:
            row.pop("created_utc")
    db["prompts"].upsert_all(rows, pk="id")


def prompts_by_id(db: sqlite_utils.Database, ids: Iterable[str]) -> dict[str, dict]:
    """The prompt rows of `ids`, by id (ids not stored are missing from the result)."""
    ids = sorted(set(ids))
    if not ids:
        return {}
    marks = ",".join("?" * len(ids))
    return {r["id"]: r for r in db.query(f"select * from prompts where id in ({marks})", ids)}


def day_prompts(db: sqlite_utils.Database, app: str, day: str) -> list[dict]:
    """`app`'s stored prompts of `day`, in id order."""
    return list(db.query("select * from prompts where app = ? and day = ? order by id", [app, day]))


def prompt_ids(db: sqlite_utils.Database, app: str, day: str, split: str | None = None) -> set[str]:
    """The ids of `app`'s prompts of `day` (of one split when `split` is given)."""
    return {p["id"] for p in day_prompts(db, app, day) if split is None or p["split"] == split}


def prompt_count(db: sqlite_utils.Database, app: str, day: str) -> int:
    """How many prompts `app` has stored for `day`."""
    return db.execute("select count(*) from prompts where app = ? and day = ?", [app, day]).fetchone()[0]


def split_prompts(db: sqlite_utils.Database, app: str, split: str) -> list[dict]:
    """`app`'s prompts of every day in `split` ('train' or 'eval'), in (day, id) order."""
    return list(db.query("select * from prompts where app = ? and split = ? order by day, id", [app, split]))


def first_prompt_with_source(db: sqlite_utils.Database, app: str, key: str, value: Any) -> dict | None:
    """`app`'s earliest prompt (by day, then id) whose source_json has `value` at `key`; None when none has."""
    found = list(db.query("select * from prompts where app = ? and json_extract(source_json, ?) = ? "
                          "order by day, id limit 1", [app, f"$.{key}", value]))
    return found[0] if found else None


# --- rollouts ---------------------------------------------------------------------------------------------


def insert_rollouts(
    db: sqlite_utils.Database,
    run: str,
    day: str,
    checkpoint: str,
    groups: list,
    sampling: dict[str, Any],
) -> None:
    """Store freshly sampled groups (reward NULL) and set each Rollout's `id`.

    A row that already exists for (run, day, prompt, group_index) is kept as it
    is, so re-running a day never duplicates or rewrites a sample.
    """
    now = utc_now()
    sampling_json = json.dumps(sampling, sort_keys=True)
    with db.atomic():
        for group in groups:
            for r in group:
                key = [run, day, r.prompt_id, r.group_index]
                found = list(
                    db.query(
                        "select id from rollouts where run=? and day=? and prompt_id=? and group_index=?",
                        key,
                    )
                )
                if found:
                    r.id = found[0]["id"]
                    continue
                failpoint("db.insert_rollouts")
                r.id = db["rollouts"].insert(
                    {
                        "run": run,
                        "day": day,
                        "prompt_id": r.prompt_id,
                        "checkpoint": checkpoint,
                        "group_index": r.group_index,
                        "completion": r.text,
                        "finish_reason": r.finish_reason,
                        "prompt_tokens": len(r.prompt_tokens),
                        "completion_tokens": len(r.completion_tokens),
                        "prompt_token_ids_json": json.dumps(r.prompt_tokens),
                        "completion_token_ids_json": json.dumps(r.completion_tokens),
                        "sampling_json": sampling_json,
                        "sampler_logprobs_json": (None if r.sampler_logprobs is None
                                                  else json.dumps(r.sampler_logprobs)),
                        "policy_logprobs_json": (None if r.policy_logprobs is None
                                                 else json.dumps(r.policy_logprobs)),
                        "sampled_utc": now,
                    }
                ).last_pk


def save_scores(db: sqlite_utils.Database, groups: list) -> None:
    """Write reward, components and advantage of already-stored rollouts; raises ValueError for one never
    stored (no `id`)."""
    now = utc_now()
    with db.atomic():
        for group in groups:
            for r in group:
                if r.id is None:
                    raise ValueError(f"rollout {r.prompt_id}/{r.group_index} was never stored")
                failpoint("db.save_scores")
                db["rollouts"].update(
                    r.id,
                    {
                        "reward": r.reward,
                        "components_json": json.dumps(r.components, sort_keys=True),
                        "advantage": r.advantage,
                        "scored_utc": now,
                    },
                )


def load_groups(db: sqlite_utils.Database, run: str, day: str) -> list[list]:
    """The stored groups of `day`, as Rollouts with their exact token ids, in prompt order."""
    groups: dict[str, list] = {}
    for row in db.query(
        "select * from rollouts where run=? and day=? order by prompt_id, group_index", [run, day]
    ):
        groups.setdefault(row["prompt_id"], []).append(
            Rollout(
                id=row["id"],
                prompt_id=row["prompt_id"],
                group_index=row["group_index"],
                prompt_tokens=json.loads(row["prompt_token_ids_json"]),
                completion_tokens=json.loads(row["completion_token_ids_json"]),
                text=row["completion"],
                finish_reason=row["finish_reason"],
                reward=row["reward"],
                components=json.loads(row["components_json"]) if row["components_json"] else {},
                advantage=row["advantage"],
                sampler_logprobs=(json.loads(row["sampler_logprobs_json"])
                                  if row.get("sampler_logprobs_json") else None),
                policy_logprobs=(json.loads(row["policy_logprobs_json"])
                                 if row.get("policy_logprobs_json") else None),
                checkpoint=row["checkpoint"],
            )
        )
    return list(groups.values())


def complete_groups(db: sqlite_utils.Database, run: str, day: str, group_size: int) -> set[str]:
    """The prompts of `day` that already have all `group_size` completions stored for `run`."""
    return {r["prompt_id"] for r in db.query(
        "select prompt_id from rollouts where run = ? and day = ? group by prompt_id having count(*) = ?",
        [run, day, group_size])}


def rollout_days(db: sqlite_utils.Database, app: str, run: str) -> list[str]:
    """The days on which `run` sampled completions for `app`'s prompts, in order."""
    return [r["day"] for r in db.query(
        "select distinct r.day from rollouts r join prompts p on p.id = r.prompt_id "
        "where p.app = ? and r.run = ? order by r.day", [app, run])]


def rollout_runs(db: sqlite_utils.Database, app: str) -> set[str]:
    """The runs that have rollouts of `app`'s prompts."""
    return {r["run"] for r in db.query(
        "select distinct r.run from rollouts r join prompts p on p.id = r.prompt_id where p.app = ?", [app])}


def day_completions(db: sqlite_utils.Database, run: str, day: str) -> list[dict]:
    """`run`'s rollouts of `day` as {"id", "prompt_id", "completion"}, in id order."""
    return list(db.query("select id, prompt_id, completion from rollouts where run = ? and day = ? order by id",
                         [run, day]))


def day_rollouts(db: sqlite_utils.Database, app: str, run: str, day: str) -> list[dict]:
    """`run`'s rollouts of `app`'s prompts on `day`, in id order: {"id", "split", "prompt_id", "prompt" (its
    text), "completion", "reward", "advantage", "components_json"}."""
    return list(db.query(
        "select r.id, p.split, r.prompt_id, p.text as prompt, r.completion, r.reward, r.advantage, "
        "r.components_json from rollouts r join prompts p on p.id = r.prompt_id "
        "where p.app = ? and r.run = ? and r.day = ? order by r.id", [app, run, day]))


def scored_rollouts(db: sqlite_utils.Database, app: str, run: str, day: str) -> list[dict]:
    """`run`'s scored rollouts of `app`'s prompts on `day` as {"reward", "components_json", "split"}, in id
    order."""
    return list(db.query(
        "select r.reward, r.components_json, p.split from rollouts r join prompts p on p.id = r.prompt_id "
        "where p.app = ? and r.run = ? and r.day = ? and r.reward is not null order by r.id", [app, run, day]))


ROLLOUT_SORT_KEYS = ("reward", "advantage")
_WITH_PROMPT = """r.id, r.run, p.app, r.day, p.split, r.prompt_id, p.text as prompt, r.checkpoint, r.group_index,
    r.completion, r.finish_reason, r.completion_tokens, r.reward, r.advantage, r.components_json"""


def run_rollouts(db: sqlite_utils.Database, app: str, run: str, day: str | None = None,
                 prompt_prefix: str | None = None, sort: str = "reward", ascending: bool = False,
                 limit: int | None = None) -> list[dict]:
    """`run`'s rollouts of `app`'s prompts with their prompt's app, split and text (`prompt`), sorted by
    `sort` (unscored last, then id). `day` keeps one day, `prompt_prefix` the prompt ids starting with it;
    with `limit`, only rollouts whose `sort` key is set, at most `limit`. Raises ValueError for a sort key
    not in ROLLOUT_SORT_KEYS."""
    if sort not in ROLLOUT_SORT_KEYS:
        raise ValueError(f"cannot sort rollouts by {sort!r}; allowed keys: {', '.join(ROLLOUT_SORT_KEYS)}")
    where, args = ["p.app = ?", "r.run = ?"], [app, run]
    if day is not None:
        where.append("r.day = ?")
        args.append(day)
    if prompt_prefix is not None:
        where.append("substr(r.prompt_id, 1, length(?)) = ?")
        args += [prompt_prefix, prompt_prefix]
    if limit is not None:
        where.append(f"r.{sort} is not null")
    sql = (f"select {_WITH_PROMPT} from rollouts r join prompts p on p.id = r.prompt_id "
           f"where {' and '.join(where)} order by r.{sort} is null, r.{sort} {'asc' if ascending else 'desc'}, r.id")
    if limit is not None:
        sql += f" limit {int(limit)}"
    return list(db.query(sql, args))


def rollout_with_prompt(db: sqlite_utils.Database, rollout_id: int) -> dict | None:
    """Rollout `rollout_id` with its sampling_json and its prompt's app, split and text (`prompt`); None when
    no rollout has that id."""
    found = list(db.query(
        f"select {_WITH_PROMPT}, r.sampling_json from rollouts r join prompts p on p.id = r.prompt_id "
        "where r.id = ?", [rollout_id]))
    return found[0] if found else None


def rollout_group(db: sqlite_utils.Database, run: str, day: str, prompt_id: str) -> list[dict]:
    """Every completion of one group (`run`, `day`, `prompt_id`) as {"id", "group_index", "reward",
    "advantage", "completion_tokens", "finish_reason", "completion"}, by group index."""
    return list(db.query(
        "select id, group_index, reward, advantage, completion_tokens, finish_reason, completion from rollouts "
        "where run = ? and day = ? and prompt_id = ? order by group_index", [run, day, prompt_id]))


# --- steps ------------------------------------------------------------------------------------------------


def insert_steps(db: sqlite_utils.Database, run: str, day: str, rows: list[dict]) -> None:
    """Record the day's optimizer steps, replacing any rows of an earlier attempt at the day.

    A day is trained only while it has no checkpoint, so rows already there come
    from an attempt that died before its checkpoint: they describe updates that
    were thrown away.
    """
    now = utc_now()
    with db.atomic():
        db.execute("delete from steps where run = ? and day = ?", [run, day])
        db["steps"].insert_all(
            [{"run": run, "day": day, "created_utc": now, **row} for row in rows],
        )
        failpoint("db.insert_steps")


def checkpointed_days(db: sqlite_utils.Database, run: str, before_day: str) -> list[str]:
    """The days before `before_day` whose checkpoint `run`'s history proves was written, in order: days
    it trained on (a step row; the checkpoint is saved right after) and checkpoints that sampled its
    rollouts."""
    return [r[0] for r in db.execute(
        "select day from steps where run = ? and day < ? union "
        "select checkpoint from rollouts where run = ? and checkpoint != 'base' and checkpoint < ? order by 1",
        [run, before_day, run, before_day])]


def last_step_outside(db: sqlite_utils.Database, run: str, day: str) -> int:
    """The highest step number `run` recorded on days other than `day`; 0 when none."""
    return db.execute("select max(step) from steps where run = ? and day != ?", [run, day]).fetchone()[0] or 0


def trained_steps(db: sqlite_utils.Database, run: str, day: str) -> list[dict]:
    """The {"kl", "clip_fraction"} of `run`'s steps of `day` that were not skipped, in step order."""
    return list(db.query("select kl, clip_fraction from steps where run = ? and day = ? and skipped = 0 "
                         "order by step", [run, day]))


def day_entropy(db: sqlite_utils.Database, run: str, day: str) -> float | None:
    """The mean policy entropy of `run`'s steps of `day` that were not skipped; None when none recorded one."""
    return db.execute("select avg(entropy) from steps where run = ? and day = ? and skipped = 0",
                      [run, day]).fetchone()[0]


def first_day_entropy(db: sqlite_utils.Database, run: str, before_day: str) -> float | None:
    """The mean step entropy of the run's first day that recorded one, before `before_day`; None if none."""
    row = db.execute("select day, avg(entropy) from steps where run = ? and day < ? and skipped = 0 and "
                     "entropy is not null group by day order by day limit 1", [run, before_day]).fetchone()
    return None if row is None else float(row[1])


# --- guards -----------------------------------------------------------------------------------------------


def record_guard(db: sqlite_utils.Database, run: str, day: str, app: str, kind: str, reason: str) -> None:
    """Record that guard `kind` acted on `run`'s `day`, and why (one row per run, day and kind: the last
    reason is kept)."""
    with db.atomic():
        db["guards"].upsert({"run": run, "day": day, "app": app, "kind": kind, "reason": reason,
                             "created_utc": utc_now()}, pk=("run", "day", "kind"))


def guard_before(db: sqlite_utils.Database, run: str, day: str, kinds: tuple[str, ...]) -> str | None:
    """The day `run` last took steps before `day` when a guard of one of `kinds` acted on it, else None."""
    prev = db.execute("select max(day) from steps where run = ? and day < ?", [run, day]).fetchone()[0]
    if prev is None:
        return None
    marks = ",".join("?" * len(kinds))
    hit = db.execute(f"select 1 from guards where run = ? and day = ? and kind in ({marks})",
                     [run, prev, *kinds]).fetchone()
    return prev if hit else None


def run_guards(db: sqlite_utils.Database, app: str, run: str) -> list[dict]:
    """Every guard event of `app`'s `run` as {"day", "kind", "reason"}, by day then kind."""
    return [dict(r) for r in db.query(
        "select day, kind, reason from guards where run = ? and app = ? order by day, kind", [run, app])]


def scored_rewards_with_source(db: sqlite_utils.Database, app: str, run: str, start: str, before: str) -> list[dict]:
    """(day, reward, source_json) of `app`'s scored rollouts of `run` made on days `start` <= day < `before`."""
    return list(db.query(
        "select r.day, r.reward, p.source_json from rollouts r join prompts p on p.id = r.prompt_id "
        "where p.app = ? and r.run = ? and r.day >= ? and r.day < ? and r.reward is not null order by r.id",
        [app, run, start, before]))


def upsert_curriculum(db: sqlite_utils.Database, rows: list[dict[str, Any]]) -> None:
    """Record a day's curriculum draw (one row per candidate item, keyed by run, day and item)."""
    now = utc_now()
    with db.atomic():
        db["curriculum"].upsert_all([{**r, "created_utc": now} for r in rows], pk=("run", "day", "url_norm"))


def record_prompt_choice(db: sqlite_utils.Database, app: str, day: str, run: str,
                         settings: dict[str, Any]) -> dict[str, Any]:
    """The run and settings that chose `app`'s prompts of `day`: those stored, else (`run`, `settings`),
    stored now. Returns {"run", "settings"}."""
    db["prompt_choices"].insert({"app": app, "day": day, "run": run, "settings_json": json.dumps(settings,
                                 sort_keys=True), "created_utc": utc_now()}, pk=("app", "day"), ignore=True)
    row = next(db.query("select run, settings_json from prompt_choices where app = ? and day = ?", [app, day]))
    return {"run": row["run"], "settings": json.loads(row["settings_json"])}


def add_run_notice(db: sqlite_utils.Database, run: str, kind: str, day: str, text: str) -> bool:
    """Record a notice of `kind` for `run`, once: True when it is new (say it), False when it was given before."""
    if db.execute("select 1 from run_notices where run = ? and kind = ?", [run, kind]).fetchone():
        return False
    db["run_notices"].insert({"run": run, "kind": kind, "day": day, "text": text, "created_utc": utc_now()})
    return True


# --- stages -----------------------------------------------------------------------------------------------


def record_stage(db: sqlite_utils.Database, run: str, day: str, stage: str) -> None:
    """Record that `stage` of `run`'s `day` finished (varro.engine.loop.cycle); call it after the stage's output
    is committed. Recording a stage again keeps its first time."""
    with db.atomic():
        db["stages"].insert({"run": run, "day": day, "stage": stage, "done_utc": utc_now()},
                            pk=("run", "day", "stage"), ignore=True)


def done_stages(db: sqlite_utils.Database, run: str, day: str) -> set[str]:
    """The stages of `run`'s `day` recorded as finished."""
    return {r[0] for r in db.execute("select stage from stages where run = ? and day = ?", [run, day])}
