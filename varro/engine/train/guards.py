"""Training health: the collapse guards and the record of every time one acted.

The KL and entropy guards are `TrainingCallback`s handed to `train_day`: the KL guard stops the day after the
first step over `kl_max`, and both judge the day's final weights; `guarded_training` records their verdicts
(a row in `guards`) and reopens the previous checkpoint on a trip. The eval guard keeps a day from training
while the held-out panel's score has dropped; flat groups and checkpoint fallbacks are recorded too
(docs/training.md lists each guard).
"""

from __future__ import annotations

import math
from typing import Callable

import sqlite_utils

from varro.engine import store
from varro.engine.store import panel as panel_store
from varro.engine.store import first_day_entropy
from varro.engine.train.trainer import TrainingCallback


def eval_guard(db: sqlite_utils.Database, app: str, run: str, before_day: str, drop_max: float) -> str | None:
    """The reason not to train today, or None: the newest checkpoint scored on the run's fixed held-out
    panel (cached by `eval`) against the best scored before it, the base included, on the same prompts
    and seeds. Only checkpoints dated before `before_day` with every panel cell cached count; with fewer
    than two there is nothing to compare and the guard does not act. (The day's own eval rollouts are not
    used: their prompts change every day, which moved their mean by more than `drop_max` in the demo.)"""
    draw = panel_store.main_panel_draw(db, run)
    members = [m["id"] for m in store.panel_members(db, app, run)]
    if draw is None or not members:
        return None
    labels = [c for c in panel_store.complete_checkpoints(db, run, *draw, members)
              if c == "base" or c < before_day]
    means = panel_store.panel_means(db, run, *draw, members, labels)
    order = sorted(means, key=lambda c: "" if c == "base" else c)
    if len(order) < 2:
        return None
    best = max(order[:-1], key=means.get)
    last = order[-1]
    if means[last] < means[best] - drop_max:
        return (f"panel reward {means[last]:.3f} of checkpoint {last} is {means[best] - means[last]:.3f} below "
                f"the best {means[best]:.3f} ({best}) on the same {len(members)} held-out prompts, more than "
                f"eval_drop_max {drop_max}: not training today")
    return None


def kl_tripped(rows: list[dict], kl_max: float) -> str | None:
    """The reason to discard the day's updates, or None: the KL of weights the day made above `kl_max`,
    measured before a later step (a step's `kl`, the first step's excepted) or after the last one
    (`kl_after`). The first step's KL measures the weights the day started from, which a trip would keep:
    tripping on it would revert to the very weights it measured, day after day. A KL of None was not
    measured and passes; a NaN or infinite one trips (NaN > kl_max is False, so it is tested apart)."""
    for r in rows:
        if r.get("minibatch", 1) > 0 and _kl_over(r["kl"], kl_max):
            return (f"step {r['step']} KL {r['kl']:.3f} exceeded kl_max {kl_max}: "
                    "the day's updates were discarded and the previous weights kept")
        after = r.get("kl_after")
        if _kl_over(after, kl_max):
            return (f"KL {after:.3f} after the day's last step {r['step']} exceeded kl_max {kl_max}: "
                    "the day's updates were discarded and the previous weights kept")
    return None


def _kl_over(kl: float | None, kl_max: float) -> bool:
    """A measured KL that is not finite or above `kl_max`; None (not measured) never is."""
    return kl is not None and (not math.isfinite(kl) or kl > kl_max)


def entropy_collapsed(rows: list[dict], first: float | None, min_share: float) -> str | None:
    """The reason to discard the day's updates, or None: the entropy of the weights the day would keep
    (`entropy_after` of its last row; without it, the mean of its steps') below `min_share` of the first
    day's (the policy is collapsing onto fewer and fewer ways of writing)."""
    after = [r["entropy_after"] for r in rows if r.get("entropy_after") is not None]
    values = after[-1:] or [r["entropy"] for r in rows if r.get("entropy") is not None and not r.get("skipped")]
    if not values or first is None or min_share <= 0:
        return None
    today = sum(values) / len(values)
    if today < min_share * first:
        return (f"policy entropy {today:.3f} nats/token is below {min_share} of the first day's {first:.3f}: "
                "the day's updates were discarded and the previous weights kept")
    return None


class Guard(TrainingCallback):
    """A collapse guard on the trainer's callback: after the day, `reason` says why to discard the day's
    updates (None: keep them); `kind` names it in the `guards` table."""

    kind = ""

    def __init__(self):
        self.reason: str | None = None


class KLGuard(Guard):
    """Stops the day after the first step whose KL (measured before it) exceeds `kl_max`, recording that
    step as `stopped_at`; at the day's end `reason` is kl_tripped of the final rows, so it also fires when
    only the KL after the last step (`kl_after`) is over."""

    kind = "kl"

    def __init__(self, kl_max: float):
        super().__init__()
        self.kl_max = kl_max
        self.stopped_at: int | None = None

    def on_step(self, row: dict) -> bool:
        self.reason = kl_tripped([row], self.kl_max)
        if self.reason is not None:
            self.stopped_at = row["step"]
        return self.reason is not None

    def on_day_end(self, rows: list[dict]) -> None:
        self.reason = kl_tripped(rows, self.kl_max)


class EntropyGuard(Guard):
    """At the day's end, `reason` is entropy_collapsed of the day's rows against the run's first day's
    entropy `first` (None: nothing to compare with, never fires)."""

    kind = "entropy"

    def __init__(self, first: float | None, min_share: float):
        super().__init__()
        self.first, self.min_share = first, min_share

    def on_day_end(self, rows: list[dict]) -> None:
        self.reason = entropy_collapsed(rows, self.first, self.min_share)


class ProgressAdvance(TrainingCallback):
    """Moves a progress stage one tick per optimizer step."""

    def __init__(self, advance: Callable[[int], None]):
        self.advance = advance

    def on_step(self, row: dict) -> None:
        self.advance(1)


def guarded_training(db: sqlite_utils.Database | None, app: str, run: str, day: str, policy, groups: list[list],
                     cfg, progress, reopen, world=None, callbacks=()) -> tuple[object, list[dict], list[str]]:
    """Train the day's groups under the collapse guards; returns (policy to save, step rows, notes).
    `callbacks` (e.g. the swap watchdog, varro.engine.train.watchdog) see every step too and may stop the day.

    `reopen()` gives a fresh policy at the previous checkpoint, used when the KL
    guard discards the day's updates. With a distributed `world`, rank 0 reads
    and writes the database and tells the other ranks what it decided.
    """
    from varro.engine.model.distributed import SOLO

    world = world or SOLO
    notes = list(policy.notes)
    reason, done = None, 0
    if world.is_main:
        # after a fallback the restored counter is behind the steps already recorded: continue after them
        done = store.last_step_outside(db, run, day)
        if policy.notes:
            store.record_guard(db, run, day, app, "checkpoint", "; ".join(policy.notes))
        reason = eval_guard(db, app, run, day, cfg.train.eval_drop_max) if groups else None
        if reason:
            store.record_guard(db, run, day, app, "eval", reason)
    first_entropy = first_day_entropy(db, run, day) if world.is_main else None
    reason, done, first_entropy = world.broadcast_json([reason, done, first_entropy])
    policy.trainer.step = max(policy.trainer.step, done)
    if reason:
        notes.append(reason)
        groups = []
    # the KL guard first: when both would trip, the KL is what is recorded (as before the callbacks)
    guards = [KLGuard(cfg.train.kl_max), EntropyGuard(first_entropy, cfg.train.entropy_min_share)]
    with progress.stage("training", total=cfg.train.minibatches if groups else 0) as advance:
        rows = policy.trainer.train_day(groups, callbacks=[ProgressAdvance(advance), *guards, *callbacks])
    flat = policy.trainer.flat_groups if groups else 0
    if flat:
        note = (f"{flat} of {policy.trainer.groups} groups had a reward std at most flat_std "
                f"{cfg.train.flat_std}: dropped, no signal")
        notes.append(note)
        if world.is_main:
            store.record_guard(db, run, day, app, "flat", note)
    # the same on every rank: the metrics are all-reduced
    kind, tripped = next(((g.kind, g.reason) for g in guards if g.reason), (None, None))
    if tripped:
        for r in rows:  # their updates are thrown away with the day's weights
            r["skipped"], r["skip_reason"] = 1, r.get("skip_reason") or f"discarded by the {kind} guard"
        if world.is_main:
            again = store.guard_before(db, run, day, ("kl", "entropy"))
            if again is not None:
                tripped += (f"; a collapse guard also tripped on {again}: the run is stuck on checkpoint "
                            f"{policy.checkpoint}: lower the learning rate, or raise kl_max / lower entropy_min_share")
            store.record_guard(db, run, day, app, kind, tripped)
        tripped = world.broadcast_json(tripped)
        notes.append(tripped)
        step = policy.trainer.step
        policy = reopen()
        policy.trainer.step = step  # step numbers stay unique across the discarded updates
    return policy, rows, notes
