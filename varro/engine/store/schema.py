"""The engine's migrations, in order: numbered, append-only, each recorded by name in `_migrations`.

Never edit or rename one that has been applied (databases record the names): add a new one at the end.
An application keeps its own set (`App.migrations`) in its own store module; they run after these.
"""

from __future__ import annotations

from typing import Callable

import sqlite_utils

Migration = Callable[[sqlite_utils.Database], None]


class MigrationSet(list):
    """One concern's migrations, in order, as (name, function); `@set.add` appends a function under its name.
    The engine has one (MIGRATIONS, here), each app another (its `App.migrations`)."""

    def add(self, fn: Migration) -> Migration:
        self.append((fn.__name__, fn))
        return fn


MIGRATIONS = MigrationSet()
migration = MIGRATIONS.add


@migration
def m001_engine(db: sqlite_utils.Database) -> None:
    db["prompts"].create(
        {
            "id": str,  # the application's stable id, e.g. "varro:2026-11-02:<guid>"
            "app": str,
            "day": str,
            "split": str,  # "train" or "eval"
            "text": str,  # the user message given to the model
            "source_json": str,  # what the prompt was built from
            "created_utc": str,
        },
        pk="id",
    )
    db["prompts"].create_index(["app", "day"])
    db["rollouts"].create(
        {
            "id": int,
            "run": str,
            "day": str,  # the day the completion was sampled for
            "prompt_id": str,
            "checkpoint": str,  # "base" or the checkpoint day that sampled it
            "group_index": int,  # position of the completion within its group
            "completion": str,
            "finish_reason": str,
            "prompt_tokens": int,
            "completion_tokens": int,
            "prompt_token_ids_json": str,
            "completion_token_ids_json": str,  # exact sampled ids, EOS included when it stopped
            "sampling_json": str,
            "reward": float,  # NULL until scored
            "components_json": str,
            "advantage": float,  # NULL until the group is normalised
            "sampled_utc": str,
            "scored_utc": str,
        },
        pk="id",
        foreign_keys=[("prompt_id", "prompts", "id")],
    )
    db["rollouts"].create_index(["run", "day", "prompt_id", "group_index"], unique=True)
    db["steps"].create(
        {
            "id": int,
            "run": str,
            "day": str,
            "step": int,  # global optimizer step counter of the run
            "minibatch": int,
            "sequences": int,
            "loss": float,
            "kl": float,
            "clip_fraction": float,
            "ratio_mean": float,
            "reward_mean": float,
            "reward_std": float,
            "grad_norm": float,
            "learning_rate": float,
            "duration_ms": float,
            "peak_memory_mb": float,
            "skipped": int,
            "skip_reason": str,
            "created_utc": str,
        },
        pk="id",
    )
    db["steps"].create_index(["run", "step"], unique=True)
    db.create_view(
        "rollouts_readable",
        """
        select r.id, r.run, r.day, r.checkpoint, p.split, r.prompt_id, p.text as prompt,
               r.group_index, r.completion, r.reward, r.advantage, r.components_json,
               r.completion_tokens, r.finish_reason
        from rollouts r join prompts p on p.id = r.prompt_id
        """,
    )


@migration
def m005_reading_views(db: sqlite_utils.Database) -> None:
    # Views for reading a run in Datasette; components are pulled out of components_json
    # (NULL where the app does not have that component or the rollout is not scored yet).
    db.create_view(
        "rollouts_by_day",
        """
        select r.id, r.run, p.app, r.day, p.split, r.prompt_id, p.text as prompt, r.group_index,
               r.checkpoint, r.completion, r.reward, r.advantage,
               json_extract(r.components_json, '$.semantic') as semantic,
               json_extract(r.components_json, '$.format') as format,
               json_extract(r.components_json, '$.leak') as leak,
               json_extract(r.components_json, '$.echo') as echo,
               json_extract(r.components_json, '$.transfer') as transfer,
               json_extract(r.components_json, '$.copy') as copy,
               json_extract(r.components_json, '$.hashtags') as hashtags,
               json_extract(r.components_json, '$.words') as words,
               r.completion_tokens, r.finish_reason
        from rollouts r join prompts p on p.id = r.prompt_id
        order by r.run, r.day, r.prompt_id, r.group_index
        """,
    )
    db.create_view(
        "day_summary",
        """
        select r.run, p.app, r.day, count(*) as rollouts, count(distinct r.prompt_id) as prompts,
               sum(r.reward is not null) as scored,
               avg(case when p.split = 'train' then r.reward end) as train_reward_mean,
               avg(case when p.split = 'eval' then r.reward end) as eval_reward_mean,
               min(r.reward) as reward_min, max(r.reward) as reward_max,
               avg(r.completion_tokens) as completion_tokens_mean
        from rollouts r join prompts p on p.id = r.prompt_id
        group by r.run, p.app, r.day
        order by r.run, p.app, r.day
        """,
    )
    db.create_view(
        "steps_by_day",
        """
        select run, day, count(*) as steps, sum(skipped) as skipped, avg(loss) as loss_mean,
               avg(case when skipped = 0 then kl end) as kl_mean,
               avg(case when skipped = 0 then clip_fraction end) as clip_fraction_mean,
               avg(reward_mean) as reward_mean, max(grad_norm) as grad_norm_max,
               sum(duration_ms) as duration_ms, max(peak_memory_mb) as peak_memory_mb
        from steps group by run, day order by run, day
        """,
    )


@migration
def m006_guards(db: sqlite_utils.Database) -> None:
    db["guards"].create(
        {"run": str, "day": str, "app": str, "kind": str, "reason": str, "created_utc": str},
        pk=("run", "day", "kind"),
    )


@migration
def m007_sampler_logprobs(db: sqlite_utils.Database) -> None:
    # log q(token) per completion token under the distribution the sampler drew it from
    # (temperature, top-k / top-p renormalised); NULL for rows sampled before this migration
    db["rollouts"].add_column("sampler_logprobs_json", str)
    db["steps"].add_column("sampler_gap", float)  # mean log q_sampler - log pi_old per token
    db["steps"].add_column("kl_after", float)  # KL to the base after the step's update (the day's last)
    db["steps"].add_column("flat_groups", int)  # groups dropped that day: reward std below the tolerance
    db["steps"].add_column("groups", int)  # groups the day's scored rollouts formed


@migration
def m008_stories(db: sqlite_utils.Database) -> None:
    # Items (Varro's headlines, Walter's articles) linked into stories by embedding similarity,
    # so a held-out story never sits on both sides of the split.
    db["stories"].create(
        {
            "app": str,
            "item_id": str,  # headline id, or an article's url_norm
            "story_id": str,  # the item id of the story's first item
            "day": str,
            "linked_to": str,  # the earlier item it was most similar to (NULL: it opened the story)
            "cosine": float,
            "created_utc": str,
        },
        pk=("app", "item_id"),
    )
    db["stories"].create_index(["app", "story_id"])
    db["stories"].create_index(["app", "day"])


@migration
def m009_panel(db: sqlite_utils.Database) -> None:
    # A run's fixed evaluation panel (held-out prompts, one per story, appended until full) and its
    # scores: every checkpoint of the run (and the base) on the same prompts with the same seeds,
    # computed once.
    db["panel"].create(
        {"run": str, "position": int, "prompt_id": str, "story_id": str, "added_utc": str},
        pk=("run", "prompt_id"),
        foreign_keys=[("prompt_id", "prompts", "id")],
    )
    db["panel"].create_index(["run", "position"], unique=True)
    db["panel_scores"].create(
        {
            "run": str,
            "checkpoint": str,  # "base" or a checkpoint day
            "prompt_id": str,
            "seed": int,
            "samples": int,  # completions drawn per prompt in that draw
            "sample_index": int,
            "completion": str,
            "reward": float,
            "components_json": str,
            "created_utc": str,
        },
        pk=("run", "checkpoint", "prompt_id", "seed", "samples", "sample_index"),
        foreign_keys=[("prompt_id", "prompts", "id")],
    )


@migration
def m011_step_entropy(db: sqlite_utils.Database) -> None:
    db["steps"].add_column("entropy", float)  # the policy's mean per-token entropy at T on the step's rows


@migration
def m012_voice(db: sqlite_utils.Database) -> None:
    # The cadence (varro.engine.eval.cadence) of each completion and of the human text it is rewarded against,
    # under the run's base model, and each day's cross-prompt template share (varro.engine.eval.voice).
    # keyed by rollout id with the completion's sha1: a row whose text no longer matches is stale
    db["cadence"].create({"rollout_id": int, "text_sha1": str, "model": str, "features_json": str,
                          "created_utc": str}, pk="rollout_id")
    db["human_cadence"].create({"model": str, "app": str, "item_id": str, "text_sha1": str, "features_json": str,
                                "created_utc": str}, pk=("model", "app", "item_id"))
    db["voice_days"].create({"run": str, "app": str, "day": str, "template_share": float, "completions": int,
                             "created_utc": str}, pk=("run", "app", "day"))


@migration
def m013_embeddings(db: sqlite_utils.Database) -> None:
    # The embedding cache (varro.engine.embed.embedders). Created by Varro's m002 before migrations were split by
    # concern; databases from then already have it.
    if "embeddings" not in db.table_names():
        db["embeddings"].create(
            {"model": str, "content_sha1": str, "dim": int, "vector": bytes, "created_utc": str},
            pk=("model", "content_sha1"),
        )


@migration
def m014_engine_curriculum(db: sqlite_utils.Database) -> None:
    # The curriculum's log (varro.engine.prompts.curriculum), any app's. Created by Walter's m004 (+ m010) before the
    # curriculum moved into the engine; databases from then already have it, with this same schema. The item
    # key's column keeps Walter's name, url_norm, so those databases and their readers need no change.
    if "curriculum" not in db.table_names():
        db["curriculum"].create(
            {
                "run": str,
                "day": str,
                "url_norm": str,  # the item's key: Walter's normalised article URL, tally's group, ...
                "regret": float,  # best minus mean reward in the item's recent groups (NULL: never tried)
                "variance": float,
                "score": float,  # what the pick weight was built from
                "probability": float,  # chance of being among the day's k picks (inclusion probability)
                "chosen": int,
                "created_utc": str,
                "first_draw_probability": float,  # chance of being picked in the first draw
            },
            pk=("run", "day", "url_norm"),
        )


@migration
def m016_prompt_choices(db: sqlite_utils.Database) -> None:
    # Prompts are chosen once per app and day in a data folder. Which run chose a day's prompts, with which
    # of the settings that decide the choice; and the notices a run was given once (kind: what it is about).
    db["prompt_choices"].create({"app": str, "day": str, "run": str, "settings_json": str, "created_utc": str},
                                pk=("app", "day"))
    db["run_notices"].create({"run": str, "kind": str, "day": str, "text": str, "created_utc": str},
                             pk=("run", "kind"))


@migration
def m017_end_of_day_health(db: sqlite_utils.Database) -> None:
    # The weights a day keeps, measured after its last step on every row of the day: kl_after is now the
    # exact per-token KL (summed over the vocabulary); its k3 estimate and the policy entropy beside it.
    db["steps"].add_column("kl_after_k3", float)
    db["steps"].add_column("entropy_after", float)


@migration
def m018_stages(db: sqlite_utils.Database) -> None:
    # Each stage of a run's day that finished (varro.engine.loop.cycle: sample, score, voice; training's record is
    # its checkpoint), written after the stage's output: a re-run resumes the day at its first unfinished stage.
    db["stages"].create({"run": str, "day": str, "stage": str, "done_utc": str}, pk=("run", "day", "stage"))


@migration
def m019_pi_old_from_sampler(db: sqlite_utils.Database) -> None:
    # log pi_T(token) per completion token, the untruncated policy at the sampling temperature as the sampler
    # computed it (the trainer's pi_old when a check agrees); NULL for rows sampled before this migration or
    # greedily. Per step, where that day's pi_old came from ("sampler" or "pass"; NULL: no step needed one)
    # and the largest per-sequence gap in mean log-prob between the sampler and the trainer's pass it measured.
    db["rollouts"].add_column("policy_logprobs_json", str)
    db["steps"].add_column("pi_old_source", str)
    db["steps"].add_column("pi_old_gap", float)
