"""Weights from weak, messy signals (RLNVR): how far an item beat its author's usual.

w = clip(rho * ln((k + e) / (k + b)) / ln(saturation), 0, 1): e the item's engagement, b its author's
usual at the same age, k a pseudo-count, rho the reliability of the log ratio. Plain numbers only; each
application reads its own tables. The derivation: docs/walter.md ("The modules, in detail").
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from varro.engine.core.config import NON_NEGATIVE, POSITIVE, opt
from varro.engine.core.errors import UserError


class BaselineError(ValueError, UserError):
    """An age or half-life that no baseline can be brought to; the message names it."""


def weighted_engagement(counts: Sequence[float | None], weights: Sequence[float]) -> float | None:
    """sum_i weights[i] * counts[i]; None when any count is unknown (never a silent zero)."""
    if len(counts) != len(weights):
        raise ValueError(f"{len(counts)} counts for {len(weights)} weights")
    if any(c is None for c in counts):
        return None
    return sum(w * c for w, c in zip(weights, counts))


def trigamma(x: float) -> float:
    """The trigamma function psi'(x) for x > 0: the variance of ln q for q ~ Gamma(x, x).

    Recurrence psi'(x) = psi'(x + 1) + 1/x^2 up to x >= 10, then the asymptotic series
    to 1/x^9 (error below 1e-12 there). Raises ValueError for x <= 0.
    """
    if not x > 0:
        raise ValueError(f"trigamma needs x > 0, got {x}")
    acc = 0.0
    while x < 10.0:
        acc += 1.0 / (x * x)
        x += 1.0
    inv = 1.0 / x
    inv2 = inv * inv
    return acc + inv + inv2 / 2 + inv * inv2 * (1 / 6 - inv2 * (1 / 30 - inv2 * (1 / 42 - inv2 / 30)))


def post_weight(engagement_: float, baseline: float, saturation: float, *, pseudo_count: float = 1.0,
                n_baseline: int | None = None, spread: float | None = None) -> float:
    """How much better than its author's usual an item did, in [0, 1] (see the module docstring).

    Without `n_baseline`: clip(ln((c + e)/(c + b)) / ln(saturation), 0, 1) with c =
    `pseudo_count` (1: the unshrunk formula). With `n_baseline` (the items the
    baseline rests on) and `spread` (their standard deviation, None for one item),
    the log ratio is also shrunk by its reliability rho. Raises ValueError for a
    saturation <= 1, negative counts, pseudo_count <= 0 or n_baseline < 1.
    """
    if saturation <= 1.0:
        raise ValueError(f"saturation must be above 1, got {saturation}")
    if engagement_ < 0 or baseline < 0:
        raise ValueError(f"engagement and baseline must be non-negative, got {engagement_}, {baseline}")
    if pseudo_count <= 0:
        raise ValueError(f"pseudo_count must be positive, got {pseudo_count}")
    k = pseudo_count
    log_ratio = math.log((k + engagement_) / (k + baseline))
    if n_baseline is not None:
        log_ratio *= reliability(baseline, n_baseline, spread, k)
    return float(np.clip(log_ratio / math.log(saturation), 0.0, 1.0))


def reliability(baseline: float, n_baseline: int, spread: float | None, pseudo_count: float) -> float:
    """rho in (0, 1]: the share of an item's log ratio to its author's usual that the evidence supports.

    rho = trigamma(k) / (trigamma(k) + se2), se2 = (s^2 + k + b) / (n (k + b)^2), where a
    lone item (n = 1, or spread None) takes the prior's spread s^2 = (k + b)^2 / k.
    """
    if n_baseline < 1:
        raise ValueError(f"a baseline rests on at least one post, got n_baseline={n_baseline}")
    if spread is not None and spread < 0:
        raise ValueError(f"spread must be non-negative, got {spread}")
    level = pseudo_count + baseline
    var = level * level / pseudo_count if n_baseline == 1 or spread is None else spread * spread
    se2 = (var + level) / (n_baseline * level * level)
    prior = trigamma(pseudo_count)
    return prior / (prior + se2)


@dataclass(frozen=True)
class BaselineStats:
    """An author's usual engagement at one item age, and the evidence it rests on."""
    usual: float  # mean weighted engagement of their other items, each brought to `age_hours`
    n: int  # how many items
    spread: float | None  # their standard deviation (n - 1 in the denominator); None for one item
    age_hours: float  # the age it is the usual at (math.inf: final counts)


@dataclass
class FairWeightSettings:
    """The fair weight's knobs, in the section of every app that weighs items against their author's usual."""
    weight_saturation: float = opt(4.0, "engagement / author baseline ratio that earns an item the full weight 1",
                                   POSITIVE)
    weight_pseudo_count: float = opt(2.0, "engagement added to an item and to its author's usual before their "
                                          "ratio (the prior's shape), so a small author's one lucky item stays "
                                          "modest", NON_NEGATIVE)


def fair_weight(engagement_: float, baseline: BaselineStats, saturation: float, pseudo_count: float) -> float:
    """`post_weight` of an item against its author's age-matched baseline, shrunk by its evidence."""
    return post_weight(engagement_, baseline.usual, saturation, pseudo_count=pseudo_count,
                       n_baseline=baseline.n, spread=baseline.spread)


def grown_fraction(age_hours: float, half_life_hours: float) -> float:
    """The share of its final engagement an item has by `age_hours`: 1 - 2^(-age / half_life).

    The stated growth assumption (not measured): attention to an item decays
    exponentially, as in a cascade with an exponential kernel, so its counts
    saturate. With a half-life of 12 h an item has 82% at 30 h, 93% at 45 h and
    all of it at 289 h; math.inf (counts known to be final) gives 1.
    Raises BaselineError for a negative age or a half-life <= 0.
    """
    if age_hours < 0 or half_life_hours <= 0:
        raise BaselineError(f"need age >= 0 and half-life > 0 hours, got {age_hours}, {half_life_hours}")
    return 1.0 - 2.0 ** (-age_hours / half_life_hours)


def age_matched_baseline(values: Sequence[float], read_ages: Sequence[float | None], age_hours: float,
                         half_life_hours: float) -> BaselineStats | None:
    """The usual of an author's other items at `age_hours` (the scored item's counts age) and its evidence.

    An item read at age a with engagement x counts as x * g(age_hours) / g(a),
    g = `grown_fraction`: what the author's items had at the age the scored item
    was read at. A reading age of None is taken as fully grown, g(a) = 1. None when
    `values` is empty (no number is invented). Raises BaselineError for an
    `age_hours` <= 0, a reading age <= 0 or mismatched lengths.
    """
    if not age_hours > 0:
        raise BaselineError(f"a scored item's counts age must be positive, got {age_hours}")
    if len(values) != len(read_ages):
        raise BaselineError(f"{len(values)} engagements for {len(read_ages)} reading ages")
    if any(a is not None and a <= 0 for a in read_ages):
        raise BaselineError(f"a baseline item was read at age <= 0: {list(read_ages)}")
    if not values:
        return None
    target = grown_fraction(age_hours, half_life_hours)
    grown = [x * target / (grown_fraction(a, half_life_hours) if a is not None else 1.0)
             for x, a in zip(values, read_ages)]
    return BaselineStats(usual=statistics.fmean(grown), n=len(grown),
                         spread=statistics.stdev(grown) if len(grown) > 1 else None, age_hours=age_hours)
