"""GSPO as pure functions on arrays (Zheng et al., 2025, arXiv 2507.18071).

Every log-prob at the sampling temperature T; q is the sampler's truncated distribution; w_i only with C > 0:
    A_i  = (r_i - mean_j r_j) / std_j r_j
    s_i  = exp( (1/|y_i|) * sum_t [log pi_theta(y_it) - log pi_old(y_it)] )
    w_i  = min( exp( (1/|y_i|) * sum_t [log pi_old(y_it) - log q(y_it)] ), C )
    loss = -(1/N) sum_i w_i min( s_i A_i, clip(s_i, 1 - eps_low, 1 + eps_high) A_i ) + beta (1/N) sum_i k2_i
with k2_i = (1/|y_i|) sum_t 0.5 (log pi_theta(y_it) - log pi_ref(y_it))^2. Why k2, the `kl` it logs (k3) and
the departures from the paper: docs/training.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import mlx.core as mx
import numpy as np

if TYPE_CHECKING:
    from varro.engine.core.config import TrainConfig

FLAT_STD = 1e-3  # a group whose rewards spread less than this carries no signal


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
    sampler_logp: mx.array | None = None,
    is_cap: float = 0.0,
) -> tuple[mx.array, dict[str, mx.array]]:
    """The GSPO objective above. Arrays: logp, old_logp, ref_logp, sampler_logp, mask (N, T); advantages (N,).

    Returns (loss, metrics): pg_loss, kl (k3 estimate of KL(pi || ref), also when
    beta is 0), kl_penalty (the k2 term), clip_fraction, ratio_mean, and with
    `sampler_logp` sampler_gap (mean log q - log pi_old per token) and is_weight.
    """
    mask = mask.astype(logp.dtype)
    on = mask > 0  # padding may hold anything (0, or the log-prob of a pad token): keep it out of exp
    log_ratio = sequence_mean(mx.where(on, logp - old_logp, 0.0), mask)  # (N,)
    ratio = mx.exp(log_ratio)  # (N,)
    clipped = mx.clip(ratio, 1.0 - eps_low, 1.0 + eps_high)  # (N,)
    surrogate = mx.minimum(ratio * advantages, clipped * advantages)  # (N,)
    metrics: dict[str, mx.array] = {}
    if sampler_logp is not None:
        gap = sequence_mean(mx.where(on, sampler_logp - old_logp, 0.0), mask)  # (N,)
        metrics["sampler_gap"] = gap.mean()
        weight = mx.minimum(mx.exp(-gap), is_cap) if is_cap > 0 else mx.ones_like(gap)  # (N,)
        weight = mx.stop_gradient(weight)
        metrics["is_weight"] = weight.mean()
        surrogate = surrogate * weight
    pg_loss = -surrogate.mean()
    # The clip binds where the clipped branch is the smaller one and differs.
    is_clipped = ((advantages > 0) & (ratio > 1.0 + eps_high)) | ((advantages < 0) & (ratio < 1.0 - eps_low))
    if ref_logp is not None:
        d = mx.where(on, ref_logp - logp, 0.0)  # (N, T)
        kl_mean = mx.stop_gradient(sequence_mean(mx.exp(d) - d - 1.0, mask)).mean()
        k2 = sequence_mean(0.5 * d * d, mask).mean()
    else:
        kl_mean = k2 = mx.array(0.0)
    loss = pg_loss + beta * k2 if beta != 0.0 else pg_loss
    metrics.update({
        "pg_loss": pg_loss,
        "kl": kl_mean,
        "kl_penalty": mx.stop_gradient(k2),
        "clip_fraction": is_clipped.astype(mx.float32).mean(),
        "ratio_mean": mx.stop_gradient(ratio).mean(),
    })
    return loss, metrics


Objective = Callable[..., tuple[mx.array, dict[str, mx.array]]]


def gspo_objective(cfg: "TrainConfig") -> Objective:
    """gspo_loss with the config's eps_low, eps_high, beta and is_cap bound once (their values now, not
    the config's later ones): the loss the trainer takes, called as
    objective(logp, old_logp, ref_logp, mask, advantages, sampler_logp) -> (loss, metrics)."""
    knobs = {"eps_low": float(cfg.eps_low), "eps_high": float(cfg.eps_high), "beta": float(cfg.beta),
             "is_cap": float(cfg.is_cap)}

    def objective(logp: mx.array, old_logp: mx.array, ref_logp: mx.array | None, mask: mx.array,
                  advantages: mx.array, sampler_logp: mx.array | None = None):
        return gspo_loss(logp, old_logp, ref_logp, mask, advantages, sampler_logp=sampler_logp, **knobs)

    objective.__name__ = objective.__qualname__ = "gspo_objective"
    objective.knobs = knobs  # type: ignore[attr-defined]  # what was bound, for a reader or a test
    return objective


def group_advantages(rewards, group_size: int, eps: float = 1e-6, tol: float = FLAT_STD,
                     scale_std: bool = True) -> np.ndarray:
    """(r - group mean) / group std for consecutive groups of `group_size`; groups whose std is at most
    `tol` get 0 (flat, or so nearly flat that their spread is noise). With `scale_std` False the advantage
    is r - group mean alone (Turtel et al. 2025: on noisy outcomes, dividing by a small group's std
    blows a near-tie up to +-1 and the prompt's difficulty decides the step size).

    Raises ValueError when len(rewards) is not a multiple of group_size or a reward is not finite.
    """
    r = np.asarray(rewards, dtype=np.float64)
    if group_size < 1 or r.size % group_size:
        raise ValueError(f"{r.size} rewards do not split into groups of {group_size}")
    if not np.all(np.isfinite(r)):
        raise ValueError(f"rewards must be finite, got {r[~np.isfinite(r)][:5].tolist()}")
    g = r.reshape(-1, group_size)
    std = g.std(axis=1, keepdims=True)
    floor = max(eps, tol)
    centred = g - g.mean(axis=1, keepdims=True)
    adv = np.where(std > floor, centred / np.maximum(std, floor) if scale_std else centred, 0.0)
    return adv.reshape(-1)


def informative_groups(rewards, group_size: int, eps: float = 1e-6, tol: float = FLAT_STD) -> np.ndarray:
    """Boolean per group: True where the rewards spread more than `tol` (the group carries signal)."""
    g = np.asarray(rewards, dtype=np.float64).reshape(-1, group_size)
    return g.std(axis=1) > max(eps, tol)
