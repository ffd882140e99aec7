"""The daily cycle of any application: `<app> step --date D`, and each day of `<app> nightly`.

`step` ingests D's data, scores what can be scored, samples D's prompts, trains
on the scored groups of D minus the reward's delay and writes checkpoint D, then
measures the voice. Each stage is recorded when it finishes, so a re-run resumes
a day at its first unfinished stage; under mlx.launch rank 0 decides and every
rank trains and samples its share. The stages in detail: docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import mlx.core as mx
import numpy as np
import sqlite_utils

from varro.engine.run import checkpoints
from varro.engine import store
from varro.engine.core.app import App
from varro.engine.core.config import Config
from varro.engine.core.dates import shift
from varro.engine.model.distributed import SOLO, World, rollouts_from_json, rollouts_to_json
from varro.engine.embed.embedders import Embedder
from varro.engine.core.faults import failpoint
from varro.engine.train.gspo import group_advantages
from varro.engine.train.guards import guarded_training
from varro.engine.model.memory import sampling_plan, training_plan
from varro.engine.run.policy import Policy, open_policy
from varro.engine.core.progress import NULL_PROGRESS, Progress
from varro.engine.core.rollout import Rollout
from varro.engine.eval.voice import voice_stage
from varro.engine.train.watchdog import SwapWatchdog


def sample_seed(cfg: Config, day: str) -> int:
    """The day's sampling seed: each prompt's group draws with keys from it and the prompt's id
    (rollouts.row_key), so the day's rollouts are the same whichever rank samples a prompt."""
    return cfg.train.seed * 1_000_003 + date.fromisoformat(day).toordinal()


def prompt_rng(cfg: Config, day: str) -> np.random.Generator:
    """The generator a day's prompt choice draws from (Walter's and tally's curriculum): its own, seeded by
    the run's seed and the day. Not the trainer's: a re-run after a crash finds the prompts stored and draws
    nothing, and the trainer's minibatch order must not depend on whether it did."""
    return np.random.default_rng([cfg.train.seed, date.fromisoformat(day).toordinal()])


def set_scores(group: list[Rollout], components: list[dict[str, float]]) -> None:
    """Give each rollout of a group its reward (popped from its components) and the group's advantages."""
    for r, comps in zip(group, components, strict=True):
        comps = dict(comps)
        r.reward = comps.pop("reward")
        r.components = comps
    for r, a in zip(group, group_advantages([r.reward for r in group], len(group))):
        r.advantage = float(a)


def score_groups(app: App, db: sqlite_utils.Database, groups: list[list[Rollout]], embedder: Embedder,
                 cfg: Config) -> int:
    """Score the groups that still have unscored rollouts and can be scored now, save them, and return
    how many rollouts were scored."""
    prompts = store.prompts_by_id(db, [g[0].prompt_id for g in groups])
    pending = [g for g in groups if any(r.reward is None for r in g) and app.scorable(db, prompts[g[0].prompt_id])]
    for g in pending:
        set_scores(g, app.score_texts(db, prompts[g[0].prompt_id], [r.text for r in g], embedder, cfg))
    if pending:
        store.save_scores(db, pending)
    return sum(len(g) for g in pending)


def training_groups(db: sqlite_utils.Database, app: App, run: str, day: str) -> list[list[Rollout]]:
    """The fully scored groups of `day` whose prompt is in the training split."""
    train = store.prompt_ids(db, app.name, day, split="train")
    return [g for g in store.load_groups(db, run, day)
            if g[0].prompt_id in train and all(r.reward is not None for r in g)]


def sampled_elsewhere(groups: list[list[Rollout]], checkpoint: str, day: str) -> str | None:
    """Why not to train on `groups`, or None: some rollout was not sampled by `checkpoint`, the weights the
    day's training starts from (GSPO's importance ratio and its clip assume it was)."""
    others = sorted({str(r.checkpoint) for g in groups for r in g if r.checkpoint != checkpoint})
    if not others:
        return None
    return (f"not training on {day}'s rollouts: they were sampled by checkpoint {', '.join(others)}, but "
            f"training would start from {checkpoint} (a checkpoint removed, or skipped as corrupt); the day "
            "keeps these weights")


@dataclass
class StepResult:
    day: str
    delay: int = 0
    ingested: int = 0
    scored: int = 0
    steps: int = 0
    trained: bool = False
    checkpoint: str = ""
    sampled: int = 0
    skipped: bool = False  # a day with no data: nothing trained, sampled or checkpointed
    resumed: str | None = None  # the stage a half-finished day was resumed at
    notices: list[str] = field(default_factory=list)  # settings the command line changed (the checkpoint's)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """The stages' counts in the order they ran."""
        done = f"steps {self.steps}, checkpoint {self.checkpoint or 'none'}"
        if self.delay:
            return f"ingested {self.ingested}, scored {self.scored}, {done}, sampled {self.sampled}"
        return f"ingested {self.ingested}, sampled {self.sampled}, scored {self.scored}, {done}"


def _sample(app: App, db, cfg: Config, run: str, day: str, policy: Policy, embedder, progress: Progress,
            world: World, seed: int | None, notes: list[str]) -> int:
    """Sample the groups `day`'s prompts still lack (each rank its share, every one with the day's seed: a
    prompt's group does not depend on the rank or the batch that samples it); returns the completions stored."""
    todo = []
    if world.is_main:
        prompts = app.choose_prompts(db, run, day, cfg, embedder, prompt_rng(cfg, day))
        if not prompts:
            notes.append(f"no prompt could be made for {day} (nothing scorable yet): an empty day")
        else:
            notes.extend(shared_prompts_notice(app, db, cfg, run, day))
        have = store.complete_groups(db, run, day, cfg.sampling.group_size)
        todo = [(p["id"], p["text"]) for p in prompts if p["id"] not in have]
    todo = world.broadcast_json(todo)
    if not todo:
        return 0
    seed = sample_seed(cfg, day) if seed is None else seed
    mine = todo[world.rank :: world.size]
    decode_batch, note = sampling_plan(policy.model, [len(policy.prompt_tokens(text)) for _, text in mine],
                                       cfg.sampling.group_size, cfg.sampling.max_tokens, cfg.train.memory_fraction,
                                       cfg.train.decode_cache_gb)
    notes.extend([note] if note else [])
    with progress.stage("sampling", total=len(mine) * cfg.sampling.group_size) as advance:
        groups = policy.sample(mine, seed=seed, on_done=advance, decode_batch=decode_batch) if mine else []
    gathered = world.gather_json(rollouts_to_json(groups))
    if not world.is_main:
        return 0
    order = {pid: i for i, (pid, _) in enumerate(todo)}  # the ranks' shares back in the order one process samples
    groups = sorted((g for part in gathered for g in rollouts_from_json(part)), key=lambda g: order[g[0].prompt_id])
    store.insert_rollouts(db, run, day, policy.checkpoint, groups, policy.sampling_settings())
    return sum(len(g) for g in groups)


def _fitting_micro_batch(policy: Policy, groups: list[list[Rollout]], cfg: Config):
    """(the trainer's config with the micro-batch that fits the day's groups, a note or None)."""
    micro_batch, note = training_plan(policy.model, groups, cfg.train.micro_batch, cfg.sampling.max_tokens,
                                      cfg.train.memory_fraction)
    return dataclasses.replace(policy.trainer.cfg, micro_batch=micro_batch), note


STORY_SETTINGS = ("story_threshold", "story_window_days", "leak_cosine")


def prompt_settings(app: App, cfg: Config) -> dict:
    """The settings that decide `app`'s prompts of a day: the app's `prompt_settings` and the story split's."""
    section = getattr(cfg, app.name)
    return {**{f"{app.name}.{k}": getattr(section, k) for k in app.prompt_settings},
            **{f"eval.{k}": getattr(cfg.eval, k) for k in STORY_SETTINGS}}


def shared_prompts_notice(app: App, db, cfg: Config, run: str, day: str) -> list[str]:
    """Prompts are chosen once per app and day in a data folder (so runs compare on the same prompts). When
    another run chose `day`'s with other settings (or the app's choice follows each run's history), this
    run samples them anyway: say so, once per run, with how to get its own."""
    mine = prompt_settings(app, cfg)
    chosen = store.record_prompt_choice(db, app.name, day, run, mine)
    if chosen["run"] == run:
        return []
    diffs = [f"{k}={v!r} (this run: {mine.get(k)!r})" for k, v in sorted(chosen["settings"].items())
             if mine.get(k) != v]
    if not diffs and not app.run_dependent_prompts:
        return []
    why = ", ".join(diffs) if diffs else "its own history (the curriculum)"
    text = (f"the prompts of {day} were chosen by run {chosen['run']} with {why}; prompts are chosen once per "
            f"app and day in a data folder, so this run samples those (and later days' likewise): give it its "
            f"own data folder (--home or VARRO_HOME) to have its own")
    return [text] if store.add_run_notice(db, run, "shared-prompts", day, text) else []


def _score(app: App, db, run: str, days: list[str], embedder, cfg: Config, progress: Progress) -> int:
    with progress.stage("scoring") as advance:
        n = sum(score_groups(app, db, store.load_groups(db, run, d), embedder, cfg) for d in days)
        advance(n)
    return n


def step(
    app: App,
    db: sqlite_utils.Database | None,
    cfg: Config,
    run: str,
    run_path: Path,
    day: str,
    embedder: Embedder | None,
    ingest=None,
    sample_seed: int | None = None,
    progress: Progress = NULL_PROGRESS,
    world: World = SOLO,
    notices: list[str] = (),
) -> StepResult:
    """Run `app`'s whole cycle for `day`. `ingest(db, day) -> new items` stores the day's data (default: the
    app's shipped sample). `notices` (settings the command line changed, varro.engine.run.identity) join the
    day's notes and the checkpoint's metadata. Raises MemoryGuardError when the day cannot fit in memory and
    SwapError when the machine starts swapping (varro.engine.train.watchdog): then no checkpoint of the day is written.
    The swap watchdog runs alone only: ranks would have to agree on when to stop."""
    swap_max = 0 if world.distributed else cfg.train.swap_max_mb * 2**20
    with SwapWatchdog(swap_max) as swap:
        return _step(app, db, cfg, run, run_path, day, embedder, ingest, sample_seed, progress, world, notices, swap)


@contextlib.contextmanager
def kept_random_state():
    """Leave MLX's global generator as it was whatever sampling draws from it (with a seed, nothing: each
    completion draws with its own key, rollouts.row_key): the trainer draws the checkpoint's seed from it, so a
    day resumed after its sampling must checkpoint exactly as one that sampled in the same process."""
    hi, lo = (int(x) for x in mx.random.state[0].tolist())
    try:
        yield
    finally:
        mx.random.seed((hi << 32) | lo)


AT_ONCE_STAGES = ("sample", "score", "train", "voice")  # reward_delay_days 0: the day's own samples train it
DELAYED_STAGES = ("train", "sample", "voice")  # a late reward: train on D minus the delay, sample from checkpoint D
STAGE_POINTS = {"sample": "step.sampled", "score": "step.scored", "train": "step.checkpointed",
                "voice": "step.voiced"}  # the failpoint after each stage's output, before its record


def day_stages(app: App) -> tuple[str, ...]:
    """The stages after ingest of one of `app`'s days, in order."""
    return DELAYED_STAGES if app.reward_delay_days else AT_ONCE_STAGES


def finished_stages(app: App, db, cfg: Config, run: str, run_path: Path, day: str) -> set[str]:
    """The stages of `day` that are done: recorded (store.record_stage), sampling and scoring only while their
    rows still say so (every prompt's group stored, every rollout scored), and training exactly when the day's
    checkpoint is complete (its own output, the metadata written last)."""
    done = store.done_stages(db, run, day)
    if not store.prompt_ids(db, app.name, day) <= store.complete_groups(db, run, day, cfg.sampling.group_size):
        done.discard("sample")
    if any(r.reward is None for g in store.load_groups(db, run, day) for r in g):
        done.discard("score")
    return done | ({"train"} if checkpoints.is_complete(run_path, day) else set())


def stages_to_run(stages: tuple[str, ...], done: set[str]) -> list[str]:
    """The stages to run: from the first unfinished one on (a later stage reads an earlier one's output), but
    none up to and including a finished training: a day is never trained twice, nor sampled again for it."""
    first = next((k for k, s in enumerate(stages) if s not in done), len(stages))
    after = stages.index("train") + 1 if "train" in done else 0
    return list(stages[max(first, after):]) if first < len(stages) else []


@dataclass
class DayStages:
    """What the stages of one day after ingest share: the policy (opened once, before the first stage; training
    replaces it with its own), and the result they fill in."""

    app: App
    db: sqlite_utils.Database | None
    cfg: Config
    run: str
    run_path: Path
    day: str
    embedder: Embedder | None
    progress: Progress
    world: World
    seed: int | None
    swap: SwapWatchdog
    res: StepResult
    policy: Policy

    def run_stage(self, stage: str) -> None:
        """Run `stage`, then record it (rank 0, after the stage's output is committed); training's record is
        its checkpoint, written last."""
        {"sample": self.sample, "score": self.score, "train": self.train, "voice": self.voice}[stage]()
        failpoint(STAGE_POINTS[stage])
        if self.world.is_main and stage != "train":
            store.record_stage(self.db, self.run, self.day, stage)

    def sample(self) -> None:
        self.swap.check("before sampling")
        with kept_random_state():
            self.res.sampled = _sample(self.app, self.db, self.cfg, self.run, self.day, self.policy, self.embedder,
                                       self.progress, self.world, self.seed, self.res.notes)

    def score(self) -> None:
        if self.world.is_main:
            self.res.scored += _score(self.app, self.db, self.run, [self.day], self.embedder, self.cfg, self.progress)

    def train(self) -> None:
        """GSPO on the day's scored training groups (the day minus the reward's delay), then checkpoint `day`."""
        app, db, cfg, world, day, res = self.app, self.db, self.cfg, self.world, self.day, self.res
        main, trained_day = world.is_main, shift(day, -app.reward_delay_days)
        groups = rollouts_from_json(world.broadcast_json(
            rollouts_to_json(training_groups(db, app, self.run, trained_day)) if main else None))
        elsewhere = world.broadcast_json(sampled_elsewhere(groups, self.policy.checkpoint, trained_day)
                                         if main else None)
        if elsewhere:
            groups = []
            res.notes.append(elsewhere)
            if main:
                store.record_guard(db, self.run, day, app.name, "sampled", elsewhere)
        self.swap.check("before training")
        self.policy.trainer.cfg, note = _fitting_micro_batch(self.policy, groups, cfg)
        res.notes.extend([note] if note else [])
        self.policy, rows, notes = guarded_training(db, app.name, self.run, day, self.policy, groups, cfg,
                                                    self.progress, lambda: open_policy(cfg, self.run_path, day, world),
                                                    world, callbacks=[self.swap])
        self.swap.check(f"after training step {rows[-1]['step'] if rows else 0}, before the checkpoint")
        res.notes.extend(notes)
        res.steps, res.trained = len(rows), bool(rows)
        if main:
            store.insert_steps(db, self.run, day, rows)
            self.policy.save(day, extra={"run": self.run, "app": app.name, "trained_on": trained_day,
                                         "steps": len(rows), "notices": list(res.notices)})
        self.policy.checkpoint = res.checkpoint = day

    def voice(self) -> None:
        """The voice (rank 0): the day's completions and the human text they are (or will be) rewarded against."""
        if not self.world.is_main:
            return
        human = shift(self.day, -self.app.reward_delay_days)
        with self.progress.stage("voice") as advance:
            advance(voice_stage(self.db, self.app.name, self.run, self.day, self.policy,
                                lambda db_, d: self.app.human_items(db_, d, self.cfg), self.embedder, [human])
                    ["completions"])


def _step(app: App, db, cfg: Config, run: str, run_path: Path, day: str, embedder, ingest, sample_seed,
          progress: Progress, world: World, notices, swap: SwapWatchdog) -> StepResult:
    delay = app.reward_delay_days
    res = StepResult(day=day, delay=delay, notes=list(notices), notices=list(notices))
    main = world.is_main
    if main:
        with progress.stage("ingest") as advance:
            res.ingested = (ingest or app.load_sample_day)(db, day)
            advance(res.ingested)
        failpoint("step.ingested")
        if delay:  # yesterday's forecasts meet today's data
            res.scored = _score(app, db, run, [shift(day, -delay)], embedder, cfg, progress)
    why = app.missing_data(db, day, cfg) if main else None
    if world.broadcast_json(why):
        res.skipped = True
        res.notes.append(f"skipped: no data for {day} ({why})")
        return res

    stages = day_stages(app)
    done = set(world.broadcast_json(sorted(finished_stages(app, db, cfg, run, run_path, day)) if main else None))
    todo = stages_to_run(stages, done)
    res.resumed = todo[0] if todo and done else None
    if "train" in done:
        res.checkpoint = day
        res.notes.append(f"checkpoint {day} exists: not training again")
    if not todo:
        res.notes.append(f"every stage of {day} is done: nothing to run again")
        return res
    policy = open_policy(cfg, run_path, shift(day, 1) if "train" in done else day, world)
    day_run = DayStages(app, db, cfg, run, run_path, day, embedder, progress, world, sample_seed, swap, res,
                        policy)
    for stage in todo:
        day_run.run_stage(stage)
    return res
