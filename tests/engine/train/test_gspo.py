"""GSPO loss and advantages against an independent float64 NumPy implementation."""

import mlx.core as mx
import numpy as np
import pytest

from varro.engine.train.gspo import group_advantages, gspo_loss, informative_groups


def np_gspo(logp, old, ref, mask, adv, eps_low, eps_high, beta, sampler=None, cap=0.0):
    """The objective written out directly, row by row: the paper's clipped sequence ratio, an optional
    truncated importance weight for the sampler, and the k2 leash; returns (loss, k3 KL, clip share)."""
    losses, kls, k2s, clipped = [], [], [], []
    for i in range(logp.shape[0]):
        m = mask[i] > 0
        s = np.exp(np.mean(logp[i, m] - old[i, m]))
        c = min(max(s, 1 - eps_low), 1 + eps_high)
        w = min(np.exp(np.mean(old[i, m] - sampler[i, m])), cap) if cap > 0 else 1.0
        losses.append(-w * min(s * adv[i], c * adv[i]))
        d = ref[i, m] - logp[i, m]
        kls.append(np.mean(np.exp(d) - d - 1))
        k2s.append(np.mean(0.5 * d * d))
        clipped.append((adv[i] > 0 and s > 1 + eps_high) or (adv[i] < 0 and s < 1 - eps_low))
    return np.mean(losses) + beta * np.mean(k2s), np.mean(kls), np.mean(clipped)


def make_case(seed, spread):
    rng = np.random.default_rng(seed)
    n, t = 6, 7
    old = -rng.uniform(0.5, 3.0, (n, t))
    logp = old + rng.normal(0, spread, (n, t))
    ref = old + rng.normal(0, 0.3, (n, t))
    mask = np.ones((n, t))
    for i, length in enumerate([7, 5, 3, 6, 1, 4]):
        mask[i, length:] = 0
    adv = np.array([1.2, -0.7, 0.4, -1.5, 0.9, -0.3])
    return logp, old, ref, mask, adv


@pytest.mark.parametrize("spread,beta", [(1e-5, 0.0), (1e-5, 0.05), (0.05, 0.0), (0.05, 0.05)])
def test_loss_value_matches_numpy(spread, beta):
    logp, old, ref, mask, adv = make_case(0, spread)
    loss, metrics = gspo_loss(*(mx.array(a, dtype=mx.float32) for a in (logp, old, ref, mask, adv)),
                              eps_low=3e-4, eps_high=4e-4, beta=beta)
    want, want_kl, want_clip = np_gspo(logp, old, ref, mask, adv, 3e-4, 4e-4, beta)
    assert loss.item() == pytest.approx(want, rel=1e-4, abs=1e-6)
    assert metrics["kl"].item() == pytest.approx(want_kl, rel=1e-4, abs=1e-7)  # measured at beta 0 too
    assert metrics["clip_fraction"].item() == pytest.approx(want_clip)


def test_clip_band_cases_are_both_exercised():
    # Small spread keeps every ratio inside the band, large spread pushes most outside.
    for spread, lo, hi in [(1e-5, 0.0, 0.0), (0.05, 0.3, 1.0)]:
        logp, old, ref, mask, adv = make_case(0, spread)
        _, _, clip = np_gspo(logp, old, ref, mask, adv, 3e-4, 4e-4, 0.0)
        assert lo <= clip <= hi


@pytest.mark.parametrize("spread,beta", [(1e-5, 0.0), (1e-5, 0.05), (0.05, 0.05)])
def test_gradient_matches_finite_differences(spread, beta):
    logp, old, ref, mask, adv = make_case(1, spread)
    fixed = [mx.array(a, dtype=mx.float32) for a in (old, ref, mask, adv)]

    def f(x):
        return gspo_loss(x, *fixed, eps_low=3e-4, eps_high=4e-4, beta=beta)[0]

    grad = np.array(mx.grad(f)(mx.array(logp, dtype=mx.float32)))
    h = 1e-7
    num = np.zeros_like(logp)
    for idx in np.ndindex(logp.shape):
        up, down = logp.copy(), logp.copy()
        up[idx] += h
        down[idx] -= h
        num[idx] = (np_gspo(up, old, ref, mask, adv, 3e-4, 4e-4, beta)[0]
                    - np_gspo(down, old, ref, mask, adv, 3e-4, 4e-4, beta)[0]) / (2 * h)
    assert np.abs(num).max() > 1e-3  # the case really has a gradient
    np.testing.assert_allclose(grad, num, rtol=2e-3, atol=2e-5)
    assert np.all(grad[mask == 0] == 0)  # padding gets no gradient


def test_clipped_sequences_get_no_policy_gradient():
    # Row 0: A > 0 and ratio far above 1 + eps_high -> clipped, zero gradient without KL.
    old = np.full((2, 3), -1.0)
    logp = old.copy()
    logp[0] += 0.1
    mask = np.ones((2, 3))
    adv = np.array([1.0, -1.0])
    g = mx.grad(lambda x: gspo_loss(x, mx.array(old), None, mx.array(mask), mx.array(adv), beta=0.0)[0])(
        mx.array(logp, dtype=mx.float32))
    g = np.array(g)
    assert np.all(g[0] == 0)
    assert np.all(g[1] != 0)


def test_group_advantages_reference():
    r = [1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0, 5.0]
    adv = group_advantages(r, 4)
    g = np.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(adv[:4], (g - g.mean()) / g.std())
    assert np.all(adv[4:] == 0)
    assert informative_groups(r, 4).tolist() == [True, False]


def test_group_advantages_without_std_scaling_are_centred_rewards():
    """advantage_std = false (Turtel et al. 2025): r - group mean, a flat group still 0."""
    r = [0.1, 0.2, 0.3, 0.6, 5.0, 5.0, 5.0, 5.0]
    adv = group_advantages(r, 4, scale_std=False)
    np.testing.assert_allclose(adv[:4], [-0.2, -0.1, 0.0, 0.3], atol=1e-12)
    assert np.all(adv[4:] == 0)


def test_group_advantages_rejects_bad_input():
    with pytest.raises(ValueError, match="groups of 3"):
        group_advantages([1, 2, 3, 4], 3)
    with pytest.raises(ValueError, match="finite"):
        group_advantages([1, float("nan")], 2)


def test_padding_values_cannot_reach_the_loss():
    """Padded positions hold whatever the batch put there (0 for pi_old and the reference, a pad
    token's log-prob for the policy); exp of a large difference there must not turn the loss into NaN."""
    logp, old, ref, mask, adv = make_case(seed=3, spread=0.01)
    padded = [np.pad(a, ((0, 0), (0, 4))) for a in (logp, old, ref, mask)]
    padded[0][:, -4:] = -200.0  # the policy's log-prob of padding: exp(0 - (-200)) overflows float32
    got, metrics = gspo_loss(*(mx.array(a, dtype=mx.float32) for a in padded), mx.array(adv, dtype=mx.float32),
                             beta=0.05)
    want, kl, _ = np_gspo(logp, old, ref, mask, adv, 3e-4, 4e-4, 0.05)
    assert np.isfinite(got.item()) and np.isfinite(metrics["kl"].item())
    np.testing.assert_allclose(got.item(), want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(metrics["kl"].item(), kl, rtol=1e-4, atol=1e-7)


def test_truncated_importance_weight_matches_numpy():
    logp, old, ref, mask, adv = make_case(4, 0.01)
    sampler = old + np.abs(np.random.default_rng(5).normal(0.05, 0.03, old.shape))  # q >= pi_old: truncation
    arrays = [mx.array(a, dtype=mx.float32) for a in (logp, old, ref, mask, adv)]
    for cap in (0.0, 2.0, 0.96):
        loss, metrics = gspo_loss(*arrays, beta=0.05, sampler_logp=mx.array(sampler, dtype=mx.float32), is_cap=cap)
        want, _, _ = np_gspo(logp, old, ref, mask, adv, 3e-4, 4e-4, 0.05, sampler, cap)
        assert loss.item() == pytest.approx(want, rel=1e-4, abs=1e-6)
    gap = np.mean([np.mean((sampler - old)[i, mask[i] > 0]) for i in range(len(adv))])
    assert metrics["sampler_gap"].item() == pytest.approx(gap, rel=1e-4)


def test_the_leash_follows_the_reverse_kl_that_is_logged():
    """Over the exact on-policy expectation (every token weighted by pi, as sampling from pi weights it),
    the leash's gradient is the gradient of KL(pi || ref), the divergence `kl` estimates, and not that
    of KL(ref || pi), which differentiating k3 would follow."""
    rng = np.random.default_rng(0)
    v = 7
    theta = mx.array(rng.normal(0, 1, v), dtype=mx.float32)
    ref = mx.array(rng.normal(0, 1, v), dtype=mx.float32)
    ref = ref - mx.logsumexp(ref)
    tokens = mx.arange(v)[None, :]  # (1, V): every token is "sampled" once, weighted by pi below

    def expected_leash(t):
        logp = (t - mx.logsumexp(t))[None, :]  # (1, V)
        weight = mx.stop_gradient(mx.exp(logp))  # the sampling distribution carries no gradient
        d = ref[None, :] - logp
        return (weight * 0.5 * d * d).sum()

    def reverse_kl(t):
        logp = t - mx.logsumexp(t)
        return (mx.exp(logp) * (logp - ref)).sum()

    def forward_kl(t):
        logp = t - mx.logsumexp(t)
        return (mx.exp(ref) * (ref - logp)).sum()

    got = np.array(mx.grad(expected_leash)(theta))
    np.testing.assert_allclose(got, np.array(mx.grad(reverse_kl)(theta)), rtol=1e-4, atol=1e-6)
    assert np.abs(got - np.array(mx.grad(forward_kl)(theta))).max() > 1e-2
    # the leash inside gspo_loss is that same per-token term
    logp = (theta - mx.logsumexp(theta))[None, :]
    _, m = gspo_loss(logp, logp, ref[None, :], mx.ones((1, v)), mx.zeros((1,)), beta=1.0)
    d = np.array(ref - logp[0])
    assert m["kl_penalty"].item() == pytest.approx(np.mean(0.5 * d * d), rel=1e-5)
    assert m["kl"].item() == pytest.approx(np.mean(np.exp(d) - d - 1), rel=1e-5)


def test_near_flat_groups_get_no_advantage():
    """Regression: rewards [0.5]*7 + [0.5 + 1e-5] gave advantages -0.378 and +2.646 (std floor 1e-6)."""
    r = [0.5] * 7 + [0.5 + 1e-5] + [0.1, 0.9, 0.5, 0.5, 0.2, 0.8, 0.4, 0.6]
    adv = group_advantages(r, 8)
    assert np.all(adv[:8] == 0)
    assert informative_groups(r, 8).tolist() == [False, True]
    assert group_advantages(r, 8, tol=0.0)[7] == pytest.approx(2.6458, abs=1e-3)  # what the old floor did
    g = np.array(r[8:])
    np.testing.assert_allclose(adv[8:], (g - g.mean()) / g.std())


def test_gspo_objective_binds_the_configs_knobs_once():
    """The trainer's loss: six arrays in, the config's eps_low / eps_high / beta / is_cap bound, against the
    NumPy objective with those same non-default knobs; a later config change does not reach it."""
    from varro.engine.core.config import TrainConfig
    from varro.engine.train.gspo import gspo_objective

    cfg = TrainConfig(eps_low=0.01, eps_high=0.015, beta=0.3, is_cap=0.97)
    objective = gspo_objective(cfg)
    cfg.beta, cfg.eps_high = 0.0, 4e-4  # bound already: must not change what the objective computes
    logp, old, ref, mask, adv = make_case(6, 0.05)
    sampler = old + np.abs(np.random.default_rng(7).normal(0.05, 0.03, old.shape))
    arrays = [mx.array(a, dtype=mx.float32) for a in (logp, old, ref, mask, adv, sampler)]
    loss, metrics = objective(*arrays)
    want, want_kl, want_clip = np_gspo(logp, old, ref, mask, adv, 0.01, 0.015, 0.3, sampler, 0.97)
    assert loss.item() == pytest.approx(want, rel=1e-4, abs=1e-6)
    assert metrics["kl"].item() == pytest.approx(want_kl, rel=1e-4, abs=1e-7)
    assert metrics["clip_fraction"].item() == pytest.approx(want_clip)
    assert 0 < want_clip < 1  # the bound band, not the default one, decides what is clipped
    # the default knobs would give another value: the binding is what made it match
    default, _, _ = np_gspo(logp, old, ref, mask, adv, 3e-4, 4e-4, 0.02, sampler, 0.0)
    assert abs(default - want) > 1e-3
    # without a sampler log q, no importance weight
    loss, metrics = objective(*arrays[:5], None)
    assert "is_weight" not in metrics
    assert loss.item() == pytest.approx(np_gspo(logp, old, ref, mask, adv, 0.01, 0.015, 0.3)[0], rel=1e-4, abs=1e-6)
