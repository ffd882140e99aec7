"""GSPO as pure functions on arrays (Zheng et al., 2025, arXiv 2507.18071).

For a group of G completions y_i of one prompt x with rewards r_i:

    A_i   = (r_i - mean_j r_j) / std_j r_j                       (group-normalised)
    s_i   = exp( (1/|y_i|) * sum_t [log pi_theta(y_it) - log pi_old(y_it)] )
    L_i   = min( s_i A_i, clip(s_i, 1 - eps_low, 1 + eps_high) A_i )
    kl_i  = (1/|y_i|) * sum_t [ exp(d_t) - d_t - 1 ],  d_t = log pi_ref(y_it) - log pi_theta(y_it)
    loss  = -(1/N) sum_i L_i  +  beta * (1/N) sum_i kl_i

Departures from the paper: the paper has no KL term; we add the per-token k3
estimator, averaged per sequence, as an optional leash (beta=0 removes it).
The std uses the population formula and a group whose rewards are all equal
gets advantage 0 (the trainer drops such groups rather than stepping on them).
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np


def sequence_mean(x: mx.array, mask: mx.array) -> mx.array:
    """Mean over each row's masked tokens: (N, T) -> (N,)."""
    return (x * mask).sum(axis=1) / mx.maximum(mask.sum(axis=1), 1)


def gspo_loss(
    logp: mx.array,
    old_logp: mx.array,
    ref_logp: mx.array | None,
    mask: mx.array,
    advantages: mx.array,
    eps_low: float = 3e-4,
    eps_high: float = 4e-4,
    beta: float = 0.02,
) -> tuple[mx.array, dict[str, mx.array]]:
    """The GSPO objective above. Arrays: logp, old_logp, ref_logp, mask (N, T); advantages (N,).

    Returns (loss, metrics) with metrics clip_fraction, ratio_mean, kl, pg_loss.
    """
    mask = mask.astype(logp.dtype)
    on = mask > 0  # padding may hold anything (0, or the log-prob of a pad token): keep it out of exp
    log_ratio = sequence_mean(mx.where(on, logp - old_logp, 0.0), mask)  # (N,)
    ratio = mx.exp(log_ratio)  # (N,)
    clipped = mx.clip(ratio, 1.0 - eps_low, 1.0 + eps_high)  # (N,)
    surrogate = mx.minimum(ratio * advantages, clipped * advantages)  # (N,)
    pg_loss = -surrogate.mean()
    # The clip binds where the clipped branch is the smaller one and differs.
    is_clipped = ((advantages > 0) & (ratio > 1.0 + eps_high)) | ((advantages < 0) & (ratio < 1.0 - eps_low))
    if ref_logp is not None and beta != 0.0:
        d = mx.where(on, ref_logp - logp, 0.0)  # (N, T)
        kl = sequence_mean(mx.exp(d) - d - 1.0, mask)  # (N,)
        kl_mean = kl.mean()
        loss = pg_loss + beta * kl_mean
    else:
        kl_mean = mx.array(0.0)
        loss = pg_loss
    metrics = {
        "pg_loss": pg_loss,
        "kl": kl_mean,
        "clip_fraction": is_clipped.astype(mx.float32).mean(),
        "ratio_mean": mx.stop_gradient(ratio).mean(),
    }
    return loss, metrics


def group_advantages(rewards, group_size: int, eps: float = 1e-6) -> np.ndarray:
    """(r - group mean) / group std for consecutive groups of `group_size`; flat groups get 0.

    Raises ValueError when len(rewards) is not a multiple of group_size or a reward is not finite.
    """
    r = np.asarray(rewards, dtype=np.float64)
    if group_size < 1 or r.size % group_size:
        raise ValueError(f"{r.size} rewards do not split into groups of {group_size}")
    if not np.all(np.isfinite(r)):
        raise ValueError(f"rewards must be finite, got {r[~np.isfinite(r)][:5].tolist()}")
    g = r.reshape(-1, group_size)
    std = g.std(axis=1, keepdims=True)
    adv = np.where(std > eps, (g - g.mean(axis=1, keepdims=True)) / np.maximum(std, eps), 0.0)
    return adv.reshape(-1)


def informative_groups(rewards, group_size: int, eps: float = 1e-6) -> np.ndarray:
    """Boolean per group: True where the rewards are not all equal (the group carries signal)."""
    g = np.asarray(rewards, dtype=np.float64).reshape(-1, group_size)
    return g.std(axis=1) > eps
