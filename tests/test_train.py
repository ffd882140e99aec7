"""The GSPO trainer on the tiny model: what moves, what stays, and what gets skipped."""

import math

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from helpers import open_policy, scored_groups


def params(model):
    return {k: np.array(v) for k, v in tree_flatten(model.parameters())}


def test_one_step_changes_adapters_and_leaves_base_unchanged(tiny_model_path, tmp_path):
    pol = open_policy(tiny_model_path, tmp_path / "run", minibatches=1)
    before = params(pol.model)
    rows = pol.trainer.train_day(scored_groups(pol, seed=1))
    assert len(rows) == 1 and rows[0]["skipped"] == 0
    after = params(pol.model)
    lora = [k for k in before if k.endswith(("lora_a", "lora_b"))]
    base = [k for k in before if k not in lora]
    assert lora and base
    assert any(not np.array_equal(before[k], after[k]) for k in lora if k.endswith("lora_b"))
    assert all(np.array_equal(before[k], after[k]) for k in base)


def test_kl_is_zero_before_any_step_and_ratio_starts_at_one(tiny_model_path, tmp_path):
    pol = open_policy(tiny_model_path, tmp_path / "run", minibatches=4, learning_rate=2e-2, beta=0.05)
    batches = pol.trainer.prepare(scored_groups(pol, seed=2))
    for mb in batches:  # adapters start at zero: the policy is exactly the reference
        np.testing.assert_array_equal(np.array(mb.old_logp), np.array(mb.ref_logp))
    rows = [pol.trainer._update(mb, k) for k, mb in enumerate(batches)]
    assert rows[0]["kl"] == 0.0
    assert rows[0]["ratio_mean"] == 1.0
    assert rows[0]["clip_fraction"] == 0.0
    # later minibatches are off-policy: the ratio moved and the clip acted
    assert max(r["clip_fraction"] for r in rows[1:]) > 0
    assert any(abs(r["ratio_mean"] - 1.0) > 1e-3 for r in rows[1:])
    assert rows[-1]["kl"] > 0
    assert [r["step"] for r in rows] == [1, 2, 3, 4]


def test_non_finite_loss_skips_the_update_and_keeps_weights(tiny_model_path, tmp_path):
    from varro.gspo import gspo_loss

    def nan_loss(*args, **kwargs):
        loss, metrics = gspo_loss(*args, **kwargs)
        return loss * mx.array(float("nan")), metrics

    pol = open_policy(tiny_model_path, tmp_path / "run", minibatches=2)
    pol.trainer.loss = nan_loss
    before = params(pol.model)
    rows = pol.trainer.train_day(scored_groups(pol, seed=3))
    assert [r["skipped"] for r in rows] == [1, 1]
    assert all("non-finite" in r["skip_reason"] for r in rows)
    assert rows[0]["loss"] is None
    after = params(pol.model)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_flat_groups_carry_no_signal_and_are_dropped(tiny_model_path, tmp_path):
    pol = open_policy(tiny_model_path, tmp_path / "run")
    groups = scored_groups(pol, seed=4)
    for r in groups[0] + groups[1]:
        r.reward = 1.0
    batches = pol.trainer.prepare(groups)
    kept = sum(int(mb.inputs.shape[0]) for mb in batches)
    assert kept == len(groups[2])
    assert all(r.advantage == 0.0 for r in groups[0])
    for g in groups:
        for r in g:
            r.reward = 0.5
    assert pol.trainer.train_day(groups) == []


def test_minibatch_mask_covers_exactly_the_completion(tiny_model_path, tmp_path):
    from varro.train import make_minibatch

    pol = open_policy(tiny_model_path, tmp_path / "run")
    groups = scored_groups(pol, seed=5)
    rs = groups[0][:3]
    for r in rs:
        r.advantage = 0.0
    mb = make_minibatch(rs, pad_id=0)
    mask = np.array(mb.mask)
    targets = np.array(mb.targets)
    for i, r in enumerate(rs):
        assert mask[i].sum() == len(r.completion_tokens)
        assert targets[i][mask[i] > 0].tolist() == r.completion_tokens
    assert math.isclose(float(mask.sum()), sum(len(r.completion_tokens) for r in rs))


def test_full_fine_tune_reference_is_the_base_read_from_disk(tiny_model_path, tmp_path):
    from helpers import tiny_config
    from varro.policy import Policy

    cfg = tiny_config(tiny_model_path, learning_rate=1e-2, beta=0.05, minibatches=2)
    cfg.model.fine_tune = "full"
    pol = Policy.open(cfg, tmp_path / "run")
    groups = scored_groups(pol, seed=6)
    first = pol.trainer.prepare(groups)
    np.testing.assert_array_equal(np.array(first[0].old_logp), np.array(first[0].ref_logp))
    before = params(pol.model)
    pol.trainer.train_day(groups)
    after = params(pol.model)
    assert any(not np.array_equal(before[k], after[k]) for k in before if "lora" not in k)
    # After training the policy differs from the base, but the reference pass still sees the base.
    again = pol.trainer.prepare(groups)
    assert np.abs(np.array(again[0].old_logp) - np.array(again[0].ref_logp)).max() > 1e-3
    mb = again[0]
    with pol.trainer.reference():
        pass
    assert all(np.array_equal(after[k], v) for k, v in params(pol.model).items())  # swapped back
    from mlx_lm import load
    from varro.train import token_logprobs
    base, _ = load(str(tiny_model_path))
    np.testing.assert_allclose(np.array(mb.ref_logp), np.array(token_logprobs(base, mb.inputs, mb.targets)),
                               atol=1e-5)
