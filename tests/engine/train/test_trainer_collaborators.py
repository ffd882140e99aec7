"""The trainer takes its collaborators: a loss of six arrays, the optimizer it is handed, step callbacks
that can stop the day, and the collapse guards hung on those callbacks."""

import contextlib

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
from mlx.utils import tree_flatten

from support.helpers import PROMPTS, open_policy, scored_groups, tiny_config
from varro.engine.train.guards import KLGuard, kl_tripped
from varro.engine.train.errors import TrainingError
from varro.engine.train.logprobs import token_logprobs
from varro.engine.train.trainer import Trainer, TrainingCallback


def reinforce(logp, old_logp, ref_logp, mask, advantages, sampler_logp):
    """Plain REINFORCE on the sequence-mean log-prob: nothing GSPO about it."""
    seq = (mx.where(mask > 0, logp, 0.0)).sum(axis=1) / mask.sum(axis=1)  # (n,)
    return -(advantages * seq).mean(), {"kl": mx.array(0.0)}


def seq_mean_logp(model, r) -> mx.array:
    """The independent reference: one row's whole prompt + completion in a plain forward pass (batch 1,
    no shared prefix, no padding), its completion tokens' mean log-prob at T = 1."""
    tokens = mx.array([r.prompt_tokens + r.completion_tokens[:-1]])
    targets = mx.array([r.prompt_tokens[1:] + r.completion_tokens])
    return token_logprobs(model, tokens, targets)[0, -len(r.completion_tokens):].mean()


def one_group(pol, seed=1):
    """One prompt's 8 completions; the first alone is rewarded, so it alone has a positive advantage."""
    (group,) = pol.sample(PROMPTS[:1], seed=seed)
    for i, r in enumerate(group):
        r.reward = 1.0 if i == 0 else 0.0
    return group


def np_advantages(rewards):
    r = np.asarray(rewards, dtype=np.float64)
    return (r - r.mean()) / r.std()


def reinforce_reference(pol, group):
    """The REINFORCE loss and its gradient over the trainable weights, from plain per-row passes."""
    adv = mx.array(np_advantages([r.reward for r in group]), dtype=mx.float32)

    def loss(model):
        seq = mx.stack([seq_mean_logp(model, r) for r in group])
        return -(adv * seq).mean()

    value, grads = nn.value_and_grad(pol.model, loss)(pol.model)
    return value.item(), {k: np.array(v, dtype=np.float64) for k, v in tree_flatten(grads)}


def trainable(model):
    return {k: np.array(v, dtype=np.float64) for k, v in tree_flatten(model.trainable_parameters())}


def sgd_trainer(pol, lr):
    opt = optim.SGD(learning_rate=lr)
    return Trainer(pol.model, pol.config.train, opt, reinforce, pad_id=pol.trainer.pad_id), opt


def test_a_custom_loss_plugs_in_and_raises_the_rewarded_completions_logprob(tiny_model_path, tmp_path):
    pol = open_policy(tiny_model_path, tmp_path / "run", minibatches=1)
    group = one_group(pol)
    lr = 2e-2
    trainer, _ = sgd_trainer(pol, lr)
    adv = np_advantages([r.reward for r in group])
    assert adv[0] > 0 and np.all(adv[1:] < 0)
    before = np.array([seq_mean_logp(pol.model, r).item() for r in group])
    want_loss, grads = reinforce_reference(pol, group)
    norm = np.sqrt(sum(float((g ** 2).sum()) for g in grads.values()))
    assert norm > 1e-4  # the case has a gradient
    (row,) = trainer.train_day([group])
    # the trainer's loss is REINFORCE's, computed with its shared prompt and micro-batches
    assert row["loss"] == pytest.approx(want_loss, rel=1e-4, abs=1e-6)
    assert row["kl"] == 0.0 and row["clip_fraction"] is None and row["ratio_mean"] is None
    after = np.array([seq_mean_logp(pol.model, r).item() for r in group])
    assert after[0] > before[0]  # the rewarded completion became more likely
    # the objective rose by the first-order amount: lr times the clipped gradient norm times the norm
    gain = float(np.dot(adv, after - before) / len(group))
    scale = min(1.0, pol.config.train.grad_clip / norm)
    assert gain == pytest.approx(lr * scale * norm ** 2, rel=0.1)


def test_the_optimizer_passed_in_is_the_one_that_steps(tiny_model_path, tmp_path):
    pol = open_policy(tiny_model_path, tmp_path / "run", minibatches=1)
    group = one_group(pol, seed=2)
    lr = 0.1
    trainer, opt = sgd_trainer(pol, lr)
    assert trainer.optimizer is opt
    w0 = trainable(pol.model)
    _, grads = reinforce_reference(pol, group)
    norm = np.sqrt(sum(float((g ** 2).sum()) for g in grads.values()))
    scale = min(1.0, pol.config.train.grad_clip / norm)
    trainer.train_day([group])
    w1 = trainable(pol.model)
    assert w0.keys() == grads.keys()
    moved = 0
    for k in w0:  # plain SGD: w1 = w0 - lr * clipped gradient, exactly (AdamW would move ~lr * sign)
        np.testing.assert_allclose(w1[k] - w0[k], -lr * scale * grads[k], rtol=1e-3, atol=1e-7)
        moved += int(np.abs(w1[k] - w0[k]).max() > 1e-6)
    assert moved > 0
    assert opt.state["step"].item() == 1
    assert not any(k.endswith(".m") for k, _ in tree_flatten(opt.state))  # no Adam moment: SGD's state
    assert pol.trainer.optimizer.state["step"].item() == 0  # the Policy's own AdamW never stepped
    with pytest.raises(TrainingError, match="mlx Optimizer"):
        Trainer(pol.model, pol.config.train, None, reinforce)


def test_a_loss_without_the_kl_metric_fails_before_any_weight_moves(tiny_model_path, tmp_path):
    pol = open_policy(tiny_model_path, tmp_path / "run", minibatches=1)
    group = one_group(pol, seed=3)

    def no_kl(*arrays):
        loss, _ = reinforce(*arrays)
        return loss, {"pg_loss": loss}

    trainer, opt = sgd_trainer(pol, 0.1)
    trainer.loss = no_kl
    w0 = trainable(pol.model)
    with pytest.raises(TrainingError, match=r"no_kl .*without \['kl'\]"):
        trainer.train_day([group])
    assert all(np.array_equal(w0[k], v) for k, v in trainable(pol.model).items())
    assert opt.state["step"].item() == 0


class Recorder(TrainingCallback):
    def __init__(self, stop_after: int | None = None):
        self.steps, self.day_end, self.stop_after = [], None, stop_after

    def on_step(self, row):
        self.steps.append(dict(row))
        return self.stop_after is not None and len(self.steps) >= self.stop_after

    def on_day_end(self, rows):
        self.day_end = rows


def test_a_callback_returning_true_after_step_one_stops_the_day(tiny_model_path, tmp_path):
    pol = open_policy(tiny_model_path, tmp_path / "run", minibatches=4)
    stopper, watcher = Recorder(stop_after=1), Recorder()
    rows = pol.trainer.train_day(scored_groups(pol, seed=4), callbacks=[stopper, watcher])
    assert len(rows) == 1 and rows[0]["step"] == 1 and pol.trainer.step == 1
    assert pol.trainer.optimizer.state["step"].item() == 1  # one optimizer step, not four
    assert len(watcher.steps) == 1  # a later callback still saw the stopping step
    assert watcher.steps[0]["kl_after"] is None and watcher.steps[0]["groups"] == 3  # counts known, KL not yet
    assert watcher.day_end is rows and rows[0]["kl_after"] is not None  # the day's end saw the final KL


def old_inline_stop(kls, kl_max):
    """How many steps the loop ran before the callbacks: it broke after the first step over kl_max."""
    ran = 0
    for kl in kls:
        ran += 1
        if kl > kl_max:
            break
    return ran


@pytest.mark.parametrize("kl_max", [0.05, 0.4, 1.5, 10.0])
def test_the_kl_guard_stops_where_the_inline_check_did_on_given_rows(kl_max):
    kls = [0.0, 0.1, 0.5, 2.0]
    guard = KLGuard(kl_max)
    seen = []
    for step, kl in enumerate(kls, start=1):
        seen.append({"step": step, "kl": kl, "kl_after": None})
        if guard.on_step(seen[-1]):
            break
    assert len(seen) == old_inline_stop(kls, kl_max)
    guard.on_day_end(seen)
    if kl_max < 2.0:
        assert guard.stopped_at == len(seen)
        assert guard.reason == kl_tripped(seen, kl_max) and f"step {len(seen)} KL" in guard.reason
    else:
        assert guard.stopped_at is None and guard.reason is None
    # the KL after the last step alone trips it at the day's end, without a stop
    guard = KLGuard(1.0)
    rows = [{"step": 1, "kl": 0.0, "kl_after": None}]
    assert not guard.on_step(rows[0])
    rows[0]["kl_after"] = 1.5
    guard.on_day_end(rows)
    assert guard.stopped_at is None and "after the day's last step 1" in guard.reason


def test_the_kl_guard_stops_a_real_day_at_the_step_an_unguarded_day_first_crosses(tiny_model_path, tmp_path):
    train = dict(minibatches=4, learning_rate=5e-2, beta=0.05)
    free = open_policy(tiny_model_path, tmp_path / "a", **train)
    groups = scored_groups(free, seed=5)
    full = free.trainer.train_day(groups, callbacks=[Recorder()])
    kls = [r["kl"] for r in full]
    assert len(full) == 4 and kls[0] < kls[1]
    kl_max = kls[1] / 2  # step 1 (KL ~ 0) passes, step 2 crosses: the inline check stopped after 2
    assert old_inline_stop(kls, kl_max) == 2
    guarded = open_policy(tiny_model_path, tmp_path / "b", **train)
    guard = KLGuard(kl_max)
    rows = guarded.trainer.train_day(groups, callbacks=[guard])
    assert len(rows) == 2 and guard.stopped_at == 2
    np.testing.assert_allclose([r["kl"] for r in rows], kls[:2], rtol=1e-5, atol=1e-9)
    assert rows[-1]["kl_after"] is not None
    assert guard.reason == kl_tripped(rows, kl_max) and guard.reason.startswith("step 2 KL")


class CountingProgress:
    def __init__(self):
        self.ticks = {}

    @contextlib.contextmanager
    def stage(self, name, total=None):
        self.ticks[name] = 0

        def advance(k):
            self.ticks[name] += k

        yield advance


def test_guarded_training_trips_the_kl_guard_records_it_and_reopens(tiny_model_path, tmp_path):
    from varro.engine import store as dbm
    from varro.engine.train.guards import guarded_training

    db = dbm.open_db(tmp_path / "v.db")
    run = tmp_path / "runs" / "r"
    cfg = tiny_config(tiny_model_path, minibatches=4, learning_rate=5e-2, beta=0.05, kl_max=1e-9)
    pol = open_policy(tiny_model_path, run, minibatches=4, learning_rate=5e-2, beta=0.05, kl_max=1e-9)
    reopened = []

    def reopen():
        reopened.append(open_policy(tiny_model_path, run))
        return reopened[-1]

    progress = CountingProgress()
    new, rows, notes = guarded_training(db, "varro", "r", "2026-11-03", pol, scored_groups(pol, seed=6), cfg,
                                        progress, reopen)
    kls = [r["kl"] for r in rows]
    assert 1 < len(rows) < 4 and all(k <= 1e-9 for k in kls[:-1]) and kls[-1] > 1e-9  # the first crossing
    assert progress.ticks["training"] == len(rows)
    reason = kl_tripped(rows, 1e-9)
    assert reason in notes and reason.startswith(f"step {rows[-1]['step']} KL")
    assert db.execute("select kind, reason from guards where day = '2026-11-03' and kind != 'flat'").fetchall() \
        == [("kl", reason)]
    assert reopened and new is reopened[0] and new.trainer.step == rows[-1]["step"]
