"""Learning you can trust: the trainer's log-probs are the sampler's policy, the optimizer obeys the
config, the KL guard sees the day's end, and near-flat groups carry no signal."""

import json

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from support.helpers import open_policy, scored_groups, tiny_config
from varro.engine.train.guards import KLGuard, kl_tripped
from varro.engine.run.policy import Policy
from varro.engine.train.logprobs import token_logprobs
from varro.engine.train.trainer import make_optimizer


def np_log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def np_candidates(logprobs, top_p, top_k):
    """Boolean mask of mlx-lm's candidate set, written out: top-p (keep a token while the mass ranked
    above it is below top_p, ties of the last kept included), then the top_k largest of those."""
    order = np.argsort(-logprobs, kind="stable")
    p = np.exp(logprobs[order])
    above = np.concatenate([[0.0], np.cumsum(p)[:-1]])
    keep = np.zeros(len(logprobs), dtype=bool)
    keep[order[above < top_p]] = True
    threshold = logprobs[keep].min()
    keep |= logprobs == threshold
    if top_k:
        ranked = [i for i in order if keep[i]][:top_k]
        keep = np.zeros(len(logprobs), dtype=bool)
        keep[ranked] = True
    return keep


def test_logprobs_at_temperature_equal_an_independent_pass(tiny_model_path, tmp_path):
    pol = open_policy(tiny_model_path, tmp_path / "run")
    rng = np.random.default_rng(0)
    inputs = mx.array(rng.integers(0, 500, (2, 9)), dtype=mx.int32)
    targets = mx.array(rng.integers(0, 500, (2, 9)), dtype=mx.int32)
    logits = np.array(pol.model(inputs).astype(mx.float32))  # (2, 9, V)
    for temp in (0.7, 1.0, 1.3):
        want = np.take_along_axis(np_log_softmax(logits / temp), np.array(targets)[..., None], -1)[..., 0]
        got = np.array(token_logprobs(pol.model, inputs, targets, temp))
        np.testing.assert_allclose(got, want, atol=2e-5)
    assert pol.trainer.temperature == 1.0  # the helper's profile is "default"


def test_trainer_passes_run_at_the_sampling_temperature(tiny_model_path, tmp_path):
    cfg = tiny_config(tiny_model_path)
    cfg.sampling.profile = "tight"
    pol = Policy.open(cfg, tmp_path / "run")
    assert pol.trainer.temperature == 0.7
    groups = scored_groups(pol, seed=3)
    for g in groups:
        for k, r in enumerate(g):
            r.reward = 0.1 * k  # every group informative: four minibatches
    batches = pol.trainer.prepare(groups)
    assert len(batches) == 4
    c = batches[1].chunks[0]
    r = c.source[0]
    tokens = r.prompt_tokens + r.completion_tokens
    logits = np.array(pol.model(mx.array([tokens[:-1]])).astype(mx.float32))[0]  # (L, V)
    tail = logits[len(r.prompt_tokens) - 1 :]
    want = np_log_softmax(tail / 0.7)[np.arange(len(r.completion_tokens)), r.completion_tokens]
    np.testing.assert_allclose(np.array(c.old_logp)[0, : len(want)], want, atol=5e-5)


@pytest.mark.parametrize("profile", ["tight", "default"])
def test_sampler_logprobs_are_the_trainers_renormalised_over_the_candidates(tiny_model_path, tmp_path, profile):
    """Tolerance 1e-4 nats per token: the sampler's batched decode and the full pass differ in float32
    rounding only."""
    cfg = tiny_config(tiny_model_path)
    cfg.sampling.profile = profile
    knobs = cfg.sampling.sampler_settings()
    pol = Policy.open(cfg, tmp_path / "run")
    groups = pol.sample([("a", "Write about the port strike."), ("b", "Prices.")], seed=1)
    checked, gap = 0, []
    for r in (r for g in groups for r in g):
        assert len(r.sampler_logprobs) == len(r.completion_tokens)
        tokens = r.prompt_tokens + r.completion_tokens
        logits = np.array(pol.model(mx.array([tokens[:-1]])).astype(mx.float32))[0]
        for t, tok in enumerate(r.completion_tokens):
            row = logits[len(r.prompt_tokens) - 1 + t]
            lp1 = np_log_softmax(row)
            keep = np_candidates(lp1, knobs["top_p"], knobs["top_k"])
            assert keep[tok]  # the sampler never draws outside its candidate set
            scaled = np.where(keep, lp1 / knobs["temp"], -np.inf)
            want = np_log_softmax(scaled)[tok]
            assert r.sampler_logprobs[t] == pytest.approx(want, abs=1e-4)
            gap.append(want - np_log_softmax(row / knobs["temp"])[tok])
            checked += 1
    assert checked > 50
    assert min(gap) >= -1e-6  # renormalising over a subset can only raise a token's log-prob
    assert np.mean(gap) > 1e-3  # both profiles truncate: the untruncated policy is not the sampler


def test_sampler_logprobs_are_stored_and_reach_the_loss(tiny_model_path, tmp_path):
    from varro.engine import store as dbm

    cfg = tiny_config(tiny_model_path)
    cfg.sampling.profile = "tight"
    pol = Policy.open(cfg, tmp_path / "run")
    db = dbm.open_db(tmp_path / "t.db")
    groups = scored_groups(pol, seed=2)
    dbm.upsert_prompts(db, [{"id": g[0].prompt_id, "app": "t", "day": "2026-11-02", "split": "train",
                             "text": "x", "source_json": {}} for g in groups])
    dbm.insert_rollouts(db, "r", "2026-11-02", "base", groups, {})
    loaded = dbm.load_groups(db, "r", "2026-11-02")
    assert [r.sampler_logprobs for g in loaded for r in g] == \
        [r.sampler_logprobs for g in sorted(groups, key=lambda g: g[0].prompt_id) for r in g]
    for g, src in zip(loaded, sorted(groups, key=lambda g: g[0].prompt_id)):
        for r, s in zip(g, src):
            r.reward = s.reward
    rows = pol.trainer.train_day(loaded)
    # the first step is on-policy: pi_old is the policy at T, so the gap is the truncation alone
    assert all(r["sampler_gap"] is not None and r["sampler_gap"] > 0 for r in rows)


def np_adamw(p, g, lr, wd, b1=0.9, b2=0.999, eps=1e-8, steps=1):
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t in range(1, steps + 1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p * (1 - lr * wd) - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    return p


def test_first_adamw_step_matches_numpy_with_bias_correction():
    from varro.engine.core.config import TrainConfig

    cfg = TrainConfig(learning_rate=1e-3, weight_decay=0.01)
    rng = np.random.default_rng(0)
    p0 = rng.normal(0, 1, (4, 5)).astype(np.float32)
    g = rng.normal(0, 0.01, (4, 5)).astype(np.float32)
    layer = nn.Linear(5, 4, bias=False)
    layer.weight = mx.array(p0)
    opt = make_optimizer(cfg)
    opt.init(layer.trainable_parameters())
    for steps in (1, 2):
        opt.update(layer, {"weight": mx.array(g)})
        mx.eval(layer.parameters())
        np.testing.assert_allclose(np.array(layer.weight), np_adamw(p0, g, 1e-3, 0.01, steps=steps), rtol=1e-5,
                                   atol=1e-7)
    # the first step moves each weight by about the configured rate (MLX's default moved it ~3.2x)
    first = np.abs(np_adamw(p0, g, 1e-3, 0.0) - p0)
    assert np.allclose(first, 1e-3, rtol=1e-3)


def test_configured_learning_rate_wins_after_a_resume(tiny_model_path, tmp_path):
    run = tmp_path / "run"
    pol = open_policy(tiny_model_path, run, learning_rate=5e-3, minibatches=1)
    pol.trainer.train_day(scored_groups(pol, seed=1))
    pol.save("2026-11-02")
    again = open_policy(tiny_model_path, run, learning_rate=1e-4, minibatches=1)
    assert again.checkpoint == "2026-11-02"
    assert again.trainer.optimizer.learning_rate.item() == pytest.approx(1e-4)
    assert again.trainer.optimizer.state["step"].item() == 1  # Adam's own counter is restored
    rows = again.trainer.train_day(scored_groups(again, seed=2))
    assert rows[0]["learning_rate"] == pytest.approx(1e-4)
    path = again.save("2026-11-03")
    assert json.loads((path / "config.json").read_text())["train"]["learning_rate"] == pytest.approx(1e-4)
    from varro.engine.run.checkpoints import load_into

    fresh = open_policy(tiny_model_path, tmp_path / "other", learning_rate=1e-4)
    load_into(path, fresh.model, fresh.trainer.optimizer)
    assert fresh.trainer.optimizer.state["learning_rate"].item() == pytest.approx(1e-4)


def test_kl_guard_fires_when_only_the_last_update_crosses(tiny_model_path, tmp_path):
    # one step from zero adapters: the KL measured before it is 0, after it the policy has moved
    pol = open_policy(tiny_model_path, tmp_path / "run", minibatches=1, learning_rate=5e-2, beta=0.0)
    rows = pol.trainer.train_day(scored_groups(pol, seed=5), callbacks=[KLGuard(1e-4)])
    assert len(rows) == 1 and rows[0]["kl"] < 1e-6
    assert rows[0]["kl_after"] > 1e-4
    reason = kl_tripped(rows, 1e-4)
    assert reason and "after the day's last step" in reason
    assert kl_tripped(rows, 2 * rows[0]["kl_after"]) is None


def test_end_of_day_health_is_the_exact_kl_and_entropy_of_the_final_weights(tiny_model_path, tmp_path):
    """kl_after is sum_v pi(v) (log pi(v) - log ref(v)) at each completion position (the full vocabulary,
    not the sampled token), averaged per sequence then over the kept rows; kl_after_k3 its k3 estimate on the
    completion tokens; entropy_after the final policy's entropy. Reference: plain full passes in NumPy."""
    pol = open_policy(tiny_model_path, tmp_path / "run", minibatches=2, learning_rate=2e-2)
    groups = scored_groups(pol, seed=6)
    rows = pol.trainer.train_day(groups)
    temp = pol.trainer.temperature
    exact, k3, ent = [], [], []
    for g in (g for g in groups if any(r.advantage != 0.0 for r in g)):  # the kept groups
        for r in g:
            tokens = mx.array([r.prompt_tokens + r.completion_tokens[:-1]])
            n = len(r.completion_tokens)
            logits = np.array(pol.model(tokens).astype(mx.float32), dtype=np.float64)[0, -n:] / temp
            with pol.trainer.reference():
                ref = np.array(pol.model(tokens).astype(mx.float32), dtype=np.float64)[0, -n:] / temp
            lp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
            lr = ref - np.log(np.exp(ref).sum(-1, keepdims=True))
            exact.append(np.mean((np.exp(lp) * (lp - lr)).sum(-1)))
            idx = np.arange(n), np.array(r.completion_tokens)
            d = lr[idx] - lp[idx]
            k3.append(np.mean(np.exp(d) - d - 1))
            ent.append(np.mean(-(np.exp(lp) * lp).sum(-1)))
    last = rows[-1]
    assert last["kl_after"] == pytest.approx(np.mean(exact), rel=1e-3, abs=1e-7)
    assert last["kl_after_k3"] == pytest.approx(np.mean(k3), rel=1e-3, abs=1e-7)
    assert last["entropy_after"] == pytest.approx(np.mean(ent), rel=1e-4)
    assert abs(last["kl_after"] - last["kl_after_k3"]) > 1e-3 * last["kl_after"]  # two different measures


def test_near_flat_groups_are_dropped_and_counted(tiny_model_path, tmp_path):
    pol = open_policy(tiny_model_path, tmp_path / "run", minibatches=1)
    groups = scored_groups(pol, seed=4)
    for k, r in enumerate(groups[0]):
        r.reward = 0.5 + (1e-5 if k == 7 else 0.0)  # noise, not signal
    for g in groups[1:]:
        for k, r in enumerate(g):
            r.reward = 0.1 * k
    rows = pol.trainer.train_day(groups)
    assert rows[0]["flat_groups"] == 1 and rows[0]["groups"] == 3
    assert rows[0]["sequences"] == 16
    assert all(r.advantage == 0.0 for r in groups[0])


def test_beta_zero_still_measures_the_kl(tiny_model_path, tmp_path):
    pol = open_policy(tiny_model_path, tmp_path / "run", minibatches=2, learning_rate=2e-2, beta=0.0)
    rows = pol.trainer.train_day(scored_groups(pol, seed=7))
    assert rows[1]["kl"] > 0 and rows[-1]["kl_after"] > 0
    assert not any(k.endswith("lora_a") and not np.isfinite(np.array(v)).all()
                   for k, v in tree_flatten(pol.model.parameters()))
