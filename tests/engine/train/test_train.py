"""The GSPO trainer on the tiny model: what moves, what stays, and what gets skipped."""

import math

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from support.helpers import open_policy, scored_groups


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
    # the first step is on-policy: no pi_old pass, its own forward stands in
    assert all(c.old_logp is None for c in batches[0].chunks)
    for c in (c for mb in batches[1:] for c in mb.chunks):  # adapters start at zero: the policy is the reference
        # (up to float32 rounding: the two passes batch different sets of rows)
        np.testing.assert_allclose(np.array(c.old_logp), np.array(c.ref_logp), atol=1e-5)
    rows = [pol.trainer._update(mb, k) for k, mb in enumerate(batches)]
    # the first step is on-policy: its own forward is pi_old; the reference pass batches rows
    # unlike the update, so the KL is 0 up to float32 rounding
    assert rows[0]["ratio_mean"] == 1.0
    assert rows[0]["kl"] < 1e-9
    assert rows[0]["clip_fraction"] == 0.0
    # later minibatches are off-policy: the ratio moved and the clip acted
    assert max(r["clip_fraction"] for r in rows[1:]) > 0
    assert any(abs(r["ratio_mean"] - 1.0) > 1e-3 for r in rows[1:])
    assert rows[-1]["kl"] > 0
    assert [r["step"] for r in rows] == [1, 2, 3, 4]


def test_non_finite_loss_skips_the_update_and_keeps_weights(tiny_model_path, tmp_path):
    pol = open_policy(tiny_model_path, tmp_path / "run", minibatches=2)
    bound = pol.trainer.loss  # the Policy's GSPO objective, knobs bound

    def nan_loss(*args):
        loss, metrics = bound(*args)
        return loss * mx.array(float("nan")), metrics

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
    kept = sum(mb.rows for mb in batches)
    assert kept == len(groups[2])
    assert all(r.advantage == 0.0 for r in groups[0])
    for g in groups:
        for r in g:
            r.reward = 0.5
    assert pol.trainer.train_day(groups) == []


def test_advantage_std_off_gives_the_trainer_centred_rewards(tiny_model_path, tmp_path):
    pol = open_policy(tiny_model_path, tmp_path / "run")
    groups = scored_groups(pol, seed=4)
    pol.trainer.cfg.advantage_std = False
    pol.trainer.prepare(groups)
    rewards = np.array([r.reward for r in groups[0]])
    np.testing.assert_allclose([r.advantage for r in groups[0]], rewards - rewards.mean(), atol=1e-12)


def test_chunk_mask_covers_exactly_the_completion(tiny_model_path, tmp_path):
    from varro.engine.train.batching import make_chunks

    pol = open_policy(tiny_model_path, tmp_path / "run")
    groups = scored_groups(pol, seed=5)
    rs = groups[0][:3] + groups[1][:2]
    for r in rs:
        r.advantage = 0.0
    chunks = make_chunks(rs, pad_id=0)
    assert [c.rows for c in chunks] == [3, 2]  # one chunk per prompt
    for c, rows in zip(chunks, (rs[:3], rs[3:])):
        mask, targets, inputs = np.array(c.mask), np.array(c.targets), np.array(c.inputs)
        assert np.array(c.head)[0].tolist() == rows[0].prompt_tokens[:-1]
        for i, r in enumerate(rows):
            assert mask[i].sum() == len(r.completion_tokens)
            assert targets[i][mask[i] > 0].tolist() == r.completion_tokens
            assert inputs[i][0] == r.prompt_tokens[-1]
        assert math.isclose(float(mask.sum()), sum(len(r.completion_tokens) for r in rows))
    pieces = list(chunks[0].pieces(2))
    assert [p.rows for p in pieces] == [2, 1]
    assert [r.group_index for p in pieces for r in p.source] == [r.group_index for r in rs[:3]]
    np.testing.assert_array_equal(np.array(pieces[1].targets), np.array(chunks[0].targets)[2:])


def full_pass(model, chunk):
    """The independent reference: every row's whole prompt+completion in one plain forward pass;
    the completion log-probs as (n, T) like chunk_logprobs, 0 on padding."""
    from varro.engine.train.logprobs import token_logprobs

    prompt = np.array(chunk.head)[0].tolist() + [int(np.array(chunk.inputs)[0, 0])]
    comps = [np.array(chunk.targets)[i][np.array(chunk.mask)[i] > 0].tolist() for i in range(chunk.rows)]
    seqs = [prompt + c for c in comps]
    width = max(len(s) for s in seqs) - 1
    inputs = np.zeros((len(seqs), width), dtype=np.int32)
    targets = np.zeros((len(seqs), width), dtype=np.int32)
    for i, s in enumerate(seqs):
        inputs[i, : len(s) - 1], targets[i, : len(s) - 1] = s[:-1], s[1:]
    full = token_logprobs(model, mx.array(inputs), mx.array(targets))
    return full[:, len(prompt) - 1 :] * chunk.mask


def test_shared_prompt_logprobs_equal_the_full_pass(tiny_model_path, tmp_path):
    from varro.engine.train.batching import make_chunks
    from varro.engine.train.logprobs import chunk_logprobs

    pol = open_policy(tiny_model_path, tmp_path / "run")
    groups = scored_groups(pol, seed=11)
    rows = groups[0]
    for i, r in enumerate(rows):  # completions of different lengths, so the padding is exercised
        r.completion_tokens = r.completion_tokens[: 3 + i]
        r.advantage = 0.0
    (chunk,) = make_chunks(rows)
    mask = np.array(chunk.mask)
    got = np.array(chunk_logprobs(pol.model, chunk))
    np.testing.assert_allclose(got * mask, np.array(full_pass(pol.model, chunk)), atol=2e-5)
    # a one-token prompt has no prefix to share
    for r in rows:
        r.prompt_tokens = r.prompt_tokens[-1:]
    (short,) = make_chunks(rows)
    assert short.head.shape == (1, 0)
    np.testing.assert_allclose(np.array(chunk_logprobs(pol.model, short)) * mask,
                               np.array(full_pass(pol.model, short)), atol=2e-5)


@pytest.mark.parametrize("micro_batch,lora_layers", [(1, 2), (3, 2), (0, 2), (1, 1)])
def test_micro_batched_step_equals_the_whole_minibatch_gradient(tiny_model_path, tmp_path, micro_batch, lora_layers):
    """Prompt once, rows a few at a time, the prompt's backward once: the gradient of one plain pass
    over the whole minibatch, whatever the micro-batch size."""
    import mlx.nn as nn
    from mlx.utils import tree_flatten
    from varro.engine.train.gspo import gspo_loss

    from support.helpers import tiny_config
    from varro.engine.run.policy import Policy
    from varro.engine.model.loading import first_trainable_layer

    cfg = tiny_config(tiny_model_path, minibatches=1, micro_batch=micro_batch, beta=0.05)
    cfg.model.lora_layers = lora_layers  # 1 of 2: the first layer's keys and values are constants
    pol = Policy.open(cfg, tmp_path / "run")
    assert first_trainable_layer(pol.model) == 2 - lora_layers
    tr = pol.trainer
    groups = scored_groups(pol, seed=12)
    for g in groups:
        for i, r in enumerate(g):
            r.reward = float((i * 5) % 7)
    (mb,) = tr.prepare(groups)
    assert [c.rows for c in mb.chunks] == [8, 8, 8] and mb.rows == 24
    # the reference: every row's full sequence in one padded batch, one loss, one gradient
    prompts = {tuple(np.array(c.head)[0].tolist()) for c in mb.chunks}
    assert len(prompts) == len({tuple(r.prompt_tokens) for g in groups for r in g})
    olds, refs, masks, advs = [], [], [], []
    width = max(c.mask.shape[1] for c in mb.chunks)
    pad = lambda a: np.pad(np.array(a), ((0, 0), (0, width - a.shape[1])))  # noqa: E731
    for c in mb.chunks:
        olds.append(pad(full_pass(pol.model, c)))
        refs.append(pad(c.ref_logp))
        masks.append(pad(c.mask))
        advs.append(np.array(c.advantages))
    chunks = mb.chunks

    def whole_loss(model):
        rows = [mx.pad(lp, [(0, 0), (0, width - lp.shape[1])]) for lp in (full_pass(model, c) for c in chunks)]
        logp = mx.concatenate(rows)
        loss, _ = gspo_loss(logp, mx.array(np.concatenate(olds)), mx.array(np.concatenate(refs)),
                            mx.array(np.concatenate(masks)), mx.array(np.concatenate(advs)),
                            eps_low=tr.cfg.eps_low, eps_high=tr.cfg.eps_high, beta=tr.cfg.beta)
        return loss

    want_loss, want = nn.value_and_grad(pol.model, whole_loss)(pol.model)
    seen = {}
    tr.optimizer.update = lambda model, grads: seen.setdefault("grads", grads)
    row = tr._update(mb, 0)
    np.testing.assert_allclose(row["loss"], want_loss.item(), rtol=1e-4, atol=1e-6)
    got = dict(tree_flatten(seen["grads"]))
    want = dict(tree_flatten(want))
    assert got.keys() == want.keys()
    norm = np.sqrt(sum(float((np.array(v) ** 2).sum()) for v in want.values()))
    scale = min(1.0, tr.cfg.grad_clip / norm)  # the step clips the summed gradient
    for k in want:
        np.testing.assert_allclose(np.array(got[k]), np.array(want[k]) * scale, atol=1e-5, rtol=1e-3)


def test_full_fine_tune_reference_is_the_base_read_from_disk(tiny_model_path, tmp_path):
    from support.helpers import tiny_config
    from varro.engine.run.policy import Policy

    cfg = tiny_config(tiny_model_path, learning_rate=1e-2, beta=0.05, minibatches=2)
    cfg.model.fine_tune = "full"
    pol = Policy.open(cfg, tmp_path / "run")
    groups = scored_groups(pol, seed=6)
    first = pol.trainer.prepare(groups)
    np.testing.assert_allclose(np.array(first[1].chunks[0].old_logp), np.array(first[1].chunks[0].ref_logp),
                               atol=1e-5)
    before = params(pol.model)
    pol.trainer.train_day(groups)
    after = params(pol.model)
    assert any(not np.array_equal(before[k], after[k]) for k in before if "lora" not in k)
    # After training the policy differs from the base, but the reference pass still sees the base.
    again = pol.trainer.prepare(groups)
    c = again[1].chunks[0]
    assert np.abs(np.array(c.old_logp) - np.array(c.ref_logp)).max() > 1e-3
    with pol.trainer.reference():
        pass
    assert all(np.array_equal(after[k], v) for k, v in params(pol.model).items())  # swapped back
    from mlx_lm import load
    base, _ = load(str(tiny_model_path))
    np.testing.assert_allclose(np.array(c.ref_logp) * np.array(c.mask), np.array(full_pass(base, c)), atol=2e-5)


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_accumulator_keeps_a_metric_only_some_pieces_report_at_their_weight(order):
    """A metric one piece leaves out is the mean over the pieces that reported it: neither dropped (when
    the last piece lacks it) nor halved (when the first one does)."""
    from varro.engine.train.trainer import Accumulator

    pieces = [({"kl": mx.array(1.0), "clip_fraction": mx.array(0.4)}, 0.25),
              ({"kl": mx.array(3.0)}, 0.75)]
    acc = Accumulator()
    for i in order:
        metrics, frac = pieces[i]
        acc.add(mx.array(0.0), metrics, frac, {"w": mx.zeros(1)})
    got = {k: v.item() for k, v in acc.metrics.items()}
    assert got == pytest.approx({"kl": 0.25 * 1.0 + 0.75 * 3.0, "clip_fraction": 0.4})
