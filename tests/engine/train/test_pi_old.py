"""pi_old from the sampler and the beta-0 reference subsample (issue 28): each saves a no-gradient pass
only where a measurement says it is as good as the pass."""

import copy

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_unflatten

from support.helpers import PROMPTS, open_policy, scored_groups, tiny_config
from varro.engine.run.policy import Policy
from varro.engine.train.batching import make_chunks
from varro.engine.train.errors import TrainingError
from varro.engine.train.trainer import Accumulator

MORE_PROMPTS = PROMPTS + [("d", "Write about the harvest."), ("e", "Write about the election.")]


def np_log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def copies(groups):
    return [[copy.copy(r) for r in g] for g in groups]


def counting(trainer):
    """Count the rows the pi_old pass takes (`_rows_logprobs` is pi_old's alone; the reference pass
    goes through `_pass_logprobs` directly)."""
    seen = []
    inner = trainer._rows_logprobs

    def rows_logprobs(passes):
        seen.append(sum(p.rows for p in passes))
        return inner(passes)

    trainer._rows_logprobs = rows_logprobs
    return seen


def later_rows(batches):
    return sum(mb.rows for mb in batches[1:])


def test_sampler_policy_logprobs_are_the_untruncated_policy_of_a_teacher_forced_pass(tiny_model_path, tmp_path):
    """Per token within 2e-5 nats (float32 rounding of a batched decode against one full pass), and not
    the truncated log q beside them."""
    cfg = tiny_config(tiny_model_path)
    cfg.sampling.profile = "tight"  # T 0.7, top-p 0.9, top-k 40: log q differs from log pi_T
    pol = Policy.open(cfg, tmp_path / "run")
    groups = pol.sample([("a", "Write about the port strike."), ("b", "Prices.")], seed=1)
    checked, truncated = 0, 0
    for r in (r for g in groups for r in g):
        assert len(r.policy_logprobs) == len(r.completion_tokens)
        tokens = r.prompt_tokens + r.completion_tokens
        logits = np.array(pol.model(mx.array([tokens[:-1]])).astype(mx.float32))[0]
        tail = np_log_softmax(logits[len(r.prompt_tokens) - 1 :] / 0.7)
        want = tail[np.arange(len(r.completion_tokens)), r.completion_tokens]
        np.testing.assert_allclose(r.policy_logprobs, want, atol=2e-5)
        truncated += int(np.sum(np.array(r.sampler_logprobs) - want > 1e-3))
        checked += len(want)
    assert checked > 50 and truncated > checked // 4


def test_greedy_sampling_stores_no_policy_logprobs(tiny_model_path, tmp_path):
    from varro.engine.core.rollout import PromptInput
    from varro.engine.sampling.rollouts import sample_groups

    pol = open_policy(tiny_model_path, tmp_path / "run")
    (group,) = sample_groups(pol.model, pol.tokenizer, [PromptInput("a", pol.prompt_tokens("Prices."))], 2, 6,
                             temp=0.0)
    assert all(r.policy_logprobs is None and r.sampler_logprobs for r in group)


def test_auto_skips_the_pass_and_trains_as_the_pass_does(tiny_model_path, tmp_path):
    auto = open_policy(tiny_model_path, tmp_path / "a", minibatches=4, pi_old_check_prompts=1)
    passed = open_policy(tiny_model_path, tmp_path / "b", minibatches=4, pi_old="pass")
    groups = scored_groups(auto, seed=3, prompts=MORE_PROMPTS)
    seen_auto, seen_pass = counting(auto.trainer), counting(passed.trainer)
    rows_auto = auto.trainer.train_day(copies(groups))
    rows_pass = passed.trainer.train_day(copies(groups))
    total = sum(r["sequences"] for r in rows_pass[1:])
    assert seen_pass == [total]  # the pass: every row of the later minibatches
    assert seen_auto == [2] and total > 2  # the check: pi_old_check_rows (2) of one prompt's rows
    assert [r["pi_old_source"] for r in rows_auto] == ["sampler"] * 4
    assert [r["pi_old_source"] for r in rows_pass] == ["pass"] * 4
    assert 0 <= rows_auto[0]["pi_old_gap"] < 1e-5 and 0 <= rows_pass[0]["pi_old_gap"] < 1e-5
    for a, p in zip(rows_auto, rows_pass):
        for k in ("loss", "ratio_mean", "kl", "clip_fraction", "grad_norm"):
            assert a[k] == pytest.approx(p[k], rel=1e-4, abs=1e-6), k
    assert any(abs(r["ratio_mean"] - 1) > 1e-4 for r in rows_auto[1:])  # the off-policy steps did compare


@pytest.mark.parametrize("rows, prompts", [(1, 2), (0, 1)])
def test_the_check_takes_its_rows_from_its_prompts(tiny_model_path, tmp_path, rows, prompts):
    pol = open_policy(tiny_model_path, tmp_path / "run", minibatches=4, pi_old_check_prompts=prompts,
                      pi_old_check_rows=rows)
    groups = scored_groups(pol, seed=3, prompts=MORE_PROMPTS)
    checked = []
    inner = pol.trainer._rows_logprobs
    pol.trainer._rows_logprobs = lambda passes: checked.append(passes) or inner(passes)
    batches = pol.trainer.prepare(groups)
    assert pol.trainer.pi_old_source == "sampler" and len(checked) == 1
    later = make_chunks([r for mb in batches[1:] for c in mb.chunks for r in c.source])
    want = [[id(r) for r in p.source[: rows or None]] for p in later[:prompts]]
    assert [[id(r) for r in p.source] for p in checked[0]] == want  # the first rows of the first prompts
    seen = {i for ids in want for i in ids}
    others = [(c, i, r) for mb in batches[1:] for c in mb.chunks for i, r in enumerate(c.source) if id(r) not in seen]
    assert others
    for c, i, r in others:  # every other row took the sampler's values
        np.testing.assert_array_equal(np.array(c.old_logp)[i, : len(r.policy_logprobs)],
                                      np.array(r.policy_logprobs, dtype=np.float32))


def change_weights(model):
    """Move every LoRA B (zero at the start) as if a step had been taken after sampling."""
    rng = np.random.default_rng(0)
    model.update(tree_unflatten([(k, mx.array(rng.normal(0, 0.05, v.shape).astype(np.float32)))
                                 for k, v in tree_flatten(model.trainable_parameters()) if k.endswith("lora_b")]))


@pytest.mark.parametrize("fault", ["perturbed", "weights_moved"])
def test_disagreeing_sampler_values_fall_back_to_the_pass_and_log_the_gap(tiny_model_path, tmp_path, fault):
    pol = open_policy(tiny_model_path, tmp_path / "run", minibatches=4, pi_old_check_prompts=1)
    groups = scored_groups(pol, seed=3, prompts=MORE_PROMPTS)
    if fault == "perturbed":  # a per-sequence mean off by 1e-4: a third of the clip's width
        for r in (r for g in groups for r in g):
            r.policy_logprobs = [v + 1e-4 for v in r.policy_logprobs]
    else:
        change_weights(pol.model)
    seen = counting(pol.trainer)
    batches = pol.trainer.prepare(groups)
    assert pol.trainer.pi_old_source == "pass"
    assert sum(seen) == later_rows(batches) and len(seen) == 2  # the check, then every other row
    if fault == "perturbed":
        assert pol.trainer.pi_old_gap == pytest.approx(1e-4, rel=0.02)
    else:
        assert pol.trainer.pi_old_gap > 1e-3
    for c in (c for mb in batches[1:] for c in mb.chunks):  # the pass's values, not the stored ones
        want = pol.trainer._pass_logprobs([c], [c])[0]
        np.testing.assert_allclose(np.array(c.old_logp), np.array(want), atol=1e-5)  # stored: 1e-4 off
    rows = [pol.trainer._update(mb, k) for k, mb in enumerate(batches)]
    rows[0].update(pi_old_source=pol.trainer.pi_old_source, pi_old_gap=pol.trainer.pi_old_gap)
    assert rows[0]["pi_old_gap"] > pol.trainer.cfg.pi_old_tolerance


def test_a_row_without_stored_policy_logprobs_makes_the_day_take_the_pass(tiny_model_path, tmp_path):
    pol = open_policy(tiny_model_path, tmp_path / "run", minibatches=4, pi_old_check_prompts=1)
    groups = scored_groups(pol, seed=3, prompts=MORE_PROMPTS)
    seen = counting(pol.trainer)
    pol.trainer.prepare(copies(groups))
    assert pol.trainer.pi_old_source == "sampler"
    for g in groups:  # rows sampled before they were stored, some of them in a later minibatch
        g[0].policy_logprobs = g[1].policy_logprobs = None
    pol.trainer.rng = np.random.default_rng(0)
    seen.clear()
    rows = pol.trainer.train_day(groups)
    assert seen == [sum(r["sequences"] for r in rows[1:])]
    assert rows[0]["pi_old_source"] == "pass" and rows[0]["pi_old_gap"] is None


def test_one_minibatch_needs_no_pi_old(tiny_model_path, tmp_path):
    pol = open_policy(tiny_model_path, tmp_path / "run", minibatches=1)
    rows = pol.trainer.train_day(scored_groups(pol, seed=1))
    assert rows[0]["pi_old_source"] is None and rows[0]["pi_old_gap"] is None


def test_an_unknown_pi_old_source_is_refused(tiny_model_path, tmp_path):
    with pytest.raises(TrainingError, match="pi_old must be one of"):
        open_policy(tiny_model_path, tmp_path / "run", pi_old="sampler")


def test_policy_logprobs_travel_between_ranks():
    from varro.engine.model.distributed import rollouts_from_json, rollouts_to_json
    from varro.engine.core.rollout import Rollout

    r = Rollout("p", 0, [1, 2], [3, 4], "x", "stop", reward=1.0, sampler_logprobs=[-0.1, -0.2],
                policy_logprobs=[-0.3, -0.4])
    (back,) = rollouts_from_json(rollouts_to_json([[r]]))
    assert back[0].policy_logprobs == [-0.3, -0.4] and back[0].sampler_logprobs == [-0.1, -0.2]


# --- beta 0: the reference pass on a subsample ---------------------------------------------------------


def step_metrics(trainer, mb):
    """One minibatch's loss and metrics as `_update` sums them, without a step."""
    acc = Accumulator()
    for c in mb.chunks:
        trainer._chunk_grads(c, c.rows / mb.rows, mb.share, acc)
    mx.eval(acc.loss, acc.metrics)
    return acc.loss.item(), {k: v.item() for k, v in acc.metrics.items()}


def k3_per_row(trainer, c):
    """Each row's mean k3 of the chunk from its own full-pass reference log-probs."""
    logp = trainer._pass_logprobs([c], [c])[0]
    with trainer.reference():
        ref = trainer._pass_logprobs([c], [c])[0]
    d = np.array(ref - logp, dtype=np.float64)
    m = np.array(c.mask, dtype=np.float64)
    return ((np.exp(d) - d - 1) * m).sum(1) / m.sum(1)


def trained_policy(tiny_model_path, run, **train):
    """A policy a day past the base, so its KL to the base is not zero."""
    pol = open_policy(tiny_model_path, run, minibatches=4, learning_rate=2e-2, beta=0.0, **train)
    pol.trainer.train_day(scored_groups(pol, seed=7, prompts=MORE_PROMPTS))
    return pol


def test_beta_zero_kl_from_a_subsample_of_prompts_with_the_loss_unchanged(tiny_model_path, tmp_path):
    pol = trained_policy(tiny_model_path, tmp_path / "run", kl_prompts=1)
    pol.trainer.cfg.minibatches = 2  # several prompts per minibatch, so the subsample leaves some out
    groups = scored_groups(pol, seed=8, prompts=MORE_PROMPTS)
    state = pol.trainer.rng.bit_generator.state
    sub = pol.trainer.prepare(copies(groups))
    pol.trainer.rng.bit_generator.state = state
    pol.trainer.cfg.kl_prompts = 0
    full = pol.trainer.prepare(copies(groups))
    assert all(any(c.ref_logp is None for c in mb.chunks) for mb in sub)
    for mb_sub, mb_full in zip(sub, full):
        measured = [c for c in mb_sub.chunks if c.ref_logp is not None]
        assert len(measured) == 1 and measured[0].rows == max(c.rows for c in mb_sub.chunks)
        assert all(c.ref_logp is not None for c in mb_full.chunks)
        loss_sub, m_sub = step_metrics(pol.trainer, mb_sub)
        loss_full, m_full = step_metrics(pol.trainer, mb_full)
        assert loss_sub == loss_full  # at beta 0 the reference log-probs are not in the loss
        # the step's kl is the mean over the measured rows alone, not diluted by the others
        want = np.mean(k3_per_row(pol.trainer, measured[0]))
        assert m_sub["kl"] == pytest.approx(want, rel=1e-3)
        everyone = np.concatenate([k3_per_row(pol.trainer, c) for c in mb_full.chunks])
        assert m_full["kl"] == pytest.approx(everyone.mean(), rel=1e-3)
        assert m_full["kl"] > 1e-4
        assert m_sub["kl"] == pytest.approx(m_full["kl"], rel=0.5)  # one prompt of two or three: see the docs
        assert m_sub["kl_penalty"] > 0


def test_beta_above_zero_takes_the_reference_on_every_row(tiny_model_path, tmp_path):
    pol = open_policy(tiny_model_path, tmp_path / "run", minibatches=4, beta=0.02, kl_prompts=1)
    batches = pol.trainer.prepare(scored_groups(pol, seed=8, prompts=MORE_PROMPTS))
    assert all(c.ref_logp is not None for mb in batches for c in mb.chunks)
    pol.trainer.cfg.beta = 0.0
    batches = pol.trainer.prepare(scored_groups(pol, seed=8, prompts=MORE_PROMPTS))
    assert any(c.ref_logp is None for mb in batches for c in mb.chunks)
    assert all(sum(c.ref_logp is not None for c in mb.chunks) == 1 for mb in batches)


# --- the sampler's normaliser on a real vocabulary (SmolLM2-135M, float32) -----------------------------


@pytest.fixture(scope="module")
def smollm_policy(smollm_f32, tmp_path_factory):
    cfg = tiny_config(smollm_f32)
    cfg.sampling.profile, cfg.sampling.group_size, cfg.sampling.max_tokens = "tight", 4, 40
    return Policy.open(cfg, tmp_path_factory.mktemp("smollm") / "run")


def test_sampler_normaliser_is_the_pass_heads_not_a_whole_row_float32_sum(smollm_policy):
    """Regression: the sampler took log pi_T's log-sum-exp with one float32 mx.logsumexp over the row,
    which on the CPU adds the exps in order and so drops each tail term's rounding against a total near
    the top token's: on SmolLM2 at T 0.7 its per-sequence mean log-prob was 2e-5 off the pass's, whose
    head folds the vocabulary 4096 ids at a time, and the pi_old check always failed. Checked on
    teacher-forced text, against the pass's head and a float64 log-softmax of the same logits."""
    from varro.engine.model.head import chunked_logprobs, output_head
    from varro.engine.sampling.rollouts import untruncated_logprobs

    pol = smollm_policy
    text = ("The port strike entered its third day as dock workers rejected the latest offer, and shipping "
            "firms warned that delays would spread to rail and road freight within the week.")
    tokens = pol.prompt_tokens("Write about the port strike.") + pol.tokenizer.encode(text, add_special_tokens=False)
    x, targets = mx.array([tokens[:-1]]), mx.array(tokens[1:])
    hidden = pol.model.model(x)
    logits = pol.model(x)[0].astype(mx.float32)  # (L, V)
    normalised = logits - mx.logsumexp(logits, axis=-1, keepdims=True)  # what BatchGenerator hands the sampler
    sampler = np.array(untruncated_logprobs(normalised, targets, 0.7), dtype=np.float64)
    pass_head = np.array(chunked_logprobs(hidden, output_head(pol.model), targets[None], 0.7)[0], dtype=np.float64)
    exact = np_log_softmax(np.array(logits, dtype=np.float64) / 0.7)[np.arange(len(tokens) - 1), tokens[1:]]
    assert len(exact) > 60
    assert abs(sampler.mean() - pass_head.mean()) < 1e-6  # was 2.7e-5
    assert np.abs(sampler - pass_head).max() < 1e-5  # was 1.3e-4
    # both 3.6e-6 from it, the 4096-id chunks' own float32 sums (was 3.1e-5)
    assert abs(sampler.mean() - exact.mean()) < 1e-5


def test_smollm2_sampler_pi_old_is_within_the_tolerance_of_the_pass(smollm_policy):
    """The check the trainer makes (`pi_old_gap`), on a real model's decode: within `pi_old_tolerance`,
    at the pass's own float32 floor (1.6e-6 between two batchings of it, bench/pi_old_gap.py)."""
    from varro.engine.train.batching import make_chunks
    from varro.engine.train.pi_old import pi_old_gap

    pol = smollm_policy
    prompts = [("a", "Write about the port strike and what it means for shipping."),
               ("b", "Write a short note about the central bank's decision on interest rates today.")]
    rows = [r for g in pol.sample(prompts, seed=0) for r in g]
    for r in rows:
        r.advantage = 0.0
    passes = make_chunks(rows)
    by_row = pol.trainer._rows_logprobs(passes)
    seq = [abs(float(np.mean(np.array(by_row[id(r)], dtype=np.float64))) - float(np.mean(r.policy_logprobs)))
           for r in rows]
    assert sum(len(r.completion_tokens) for r in rows) > 150
    assert np.median(seq) < 2e-6  # was 2e-5
    assert pi_old_gap(passes, by_row) < pol.trainer.cfg.pi_old_tolerance
